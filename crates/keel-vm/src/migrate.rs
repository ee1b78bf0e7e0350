//! Live migration over TCP. The sender copies guest memory while the guest
//! runs (pre-copy: KVM logs the pages the guest writes, and each round
//! sends those again), then pauses it, sends the last dirty pages and the
//! vCPU states, and waits for the receiver to say the VM runs there; only
//! then does the source VM end. Where KVM keeps no dirty log, it pauses
//! first and copies once (stop-and-copy), and says so.
//!
//! The receiver writes what comes into a snapshot directory (see
//! [`crate::snapshot`]) and the VMM restores from it, so a migration is
//! checked as a snapshot is: version, CPU features, sizes.
//!
//! The stream: `KEELMIG1\n`, then frames of a kind byte, a little-endian
//! u64 length and the payload: 1 meta (`snapshot.json`'s JSON), 2 pages
//! (a u64 guest address, then whole pages), 3 vCPU states (JSON), 4 end.
//! The receiver answers one line: `ok` once the VM runs, or `error: WHY`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::error::{Error, Result};
use crate::snapshot::{Meta, Saved};

const MAGIC: &[u8] = b"KEELMIG1\n";
const PAGE: usize = 4096;
const META: u8 = 1;
const PAGES: u8 = 2;
const VCPUS: u8 = 3;
const END: u8 = 4;
/// Pre-copy ends when a round leaves less than this to send, or after
/// this many rounds.
const SMALL_ENOUGH: u64 = 4 << 20;
const MAX_ROUNDS: u32 = 10;

/// What a migration did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// "pre-copy" or "stop-and-copy".
    pub method: String,
    pub rounds: u32,
    pub bytes_sent: u64,
    pub total_ms: u64,
    /// From the pause to the receiver's "running".
    pub downtime_ms: u64,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: what.to_string(),
        source,
    }
}

fn frame(stream: &mut impl Write, kind: u8, parts: &[&[u8]]) -> Result<u64> {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    stream
        .write_all(&[kind])
        .and_then(|()| stream.write_all(&(length as u64).to_le_bytes()))
        .map_err(io("send to the receiver"))?;
    for part in parts {
        stream.write_all(part).map_err(io("send to the receiver"))?;
    }
    Ok(length as u64 + 9)
}

/// The operations a migration needs of a running VM.
pub trait Source {
    fn meta(&self) -> Meta;
    fn memory(&self) -> &crate::memory::Memory;
    /// Turns KVM's dirty page log on; false if KVM has none.
    fn start_dirty_log(&self) -> bool;
    /// The guest pages written since the last call (guest addresses).
    fn dirty_pages(&self) -> Result<Vec<u64>>;
    fn pause(&self) -> Result<()>;
    fn resume(&self);
    /// The vCPUs' and the interrupt controllers' state (paused).
    fn saved_state(&self) -> Result<Saved>;
    /// Lets go of the disks' locks for the receiver to take.
    fn let_go(&self);
    /// Takes them back (the migration failed).
    fn take_back(&self) -> Result<()>;
}

/// Sends the VM to `address`; on success the caller ends the source VM.
pub fn send(source: &dyn Source, address: &str) -> Result<Report> {
    let started = Instant::now();
    let stream = TcpStream::connect(address)
        .map_err(|e| Error::Msg(format!("connect to {address}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let mut writer = std::io::BufWriter::with_capacity(
        1 << 20,
        stream.try_clone().map_err(io("clone the connection"))?,
    );
    writer
        .write_all(MAGIC)
        .map_err(io("send to the receiver"))?;
    let meta = source.meta();
    let mut report = Report::default();
    report.bytes_sent += frame(
        &mut writer,
        META,
        &[&serde_json::to_vec(&meta).expect("meta serializes")],
    )?;
    let logging = source.start_dirty_log();
    report.method = if logging { "pre-copy" } else { "stop-and-copy" }.into();
    let mut paused = false;
    let mut let_go = false;
    let result = (|| {
        if !logging {
            source.pause()?;
            paused = true;
        }
        // Everything once (pages of zeros need no sending: the receiver's
        // memory starts as zeros).
        // Page by page, region by region (not listed first: that list
        // would be 2 MB per GiB of guest).
        let all = meta.regions.iter().flat_map(|r| {
            (0..r.size / PAGE as u64).map(move |i| r.guest_address + i * PAGE as u64)
        });
        report.bytes_sent += send_pages(&mut writer, source.memory(), all, true)?;
        report.rounds = 1;
        let mut pause_at = None;
        if logging {
            loop {
                let dirty = source.dirty_pages()?;
                let bytes = dirty.len() as u64 * PAGE as u64;
                if bytes < SMALL_ENOUGH || report.rounds >= MAX_ROUNDS {
                    // The last round with the guest paused.
                    writer.flush().map_err(io("send to the receiver"))?;
                    pause_at = Some(Instant::now());
                    source.pause()?;
                    paused = true;
                    let mut last = dirty;
                    last.extend(source.dirty_pages()?);
                    last.sort_unstable();
                    last.dedup();
                    report.bytes_sent += send_pages(&mut writer, source.memory(), last, false)?;
                    break;
                }
                report.bytes_sent += send_pages(&mut writer, source.memory(), dirty, false)?;
                report.rounds += 1;
            }
        }
        let pause_at = pause_at.unwrap_or(started);
        let states = source.saved_state()?;
        // The receiver opens the disks as it makes the VM.
        source.let_go();
        let_go = true;
        report.bytes_sent += frame(
            &mut writer,
            VCPUS,
            &[&serde_json::to_vec(&states).expect("vCPU states serialize")],
        )?;
        report.bytes_sent += frame(&mut writer, END, &[])?;
        writer.flush().map_err(io("send to the receiver"))?;
        let mut answer = String::new();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io("set a timeout"))?;
        BufReader::new(&stream)
            .read_line(&mut answer)
            .map_err(io("read the receiver's answer"))?;
        match answer.trim_end() {
            "ok" => {}
            "" => {
                return Err(Error::Msg(
                    "the receiver went away before the VM ran there".into(),
                ));
            }
            other => {
                return Err(Error::Msg(format!(
                    "the receiver refused the VM: {}",
                    other.strip_prefix("error: ").unwrap_or(other)
                )));
            }
        }
        report.downtime_ms = pause_at.elapsed().as_millis() as u64;
        report.total_ms = started.elapsed().as_millis() as u64;
        Ok(())
    })();
    if let Err(e) = result {
        // The source goes on as it was (its disks taken back first).
        if let_go && let Err(back) = source.take_back() {
            return Err(Error::Msg(format!(
                "{e}; and the VM here stays paused: {back}"
            )));
        }
        if paused {
            source.resume();
        }
        return Err(e);
    }
    Ok(report)
}

/// Sends `pages` (guest addresses, sorted), in runs of adjacent pages;
/// with `skip_zero`, pages of zeros are left out.
fn send_pages(
    writer: &mut impl Write,
    memory: &crate::memory::Memory,
    pages: impl IntoIterator<Item = u64>,
    skip_zero: bool,
) -> Result<u64> {
    let mut sent = 0;
    let mut buffer = vec![0u8; PAGE];
    let mut run: Vec<u8> = Vec::new();
    let mut run_start = 0;
    let flush = |writer: &mut dyn Write, start: u64, run: &mut Vec<u8>| -> Result<u64> {
        if run.is_empty() {
            return Ok(0);
        }
        let n = frame(&mut &mut *writer, PAGES, &[&start.to_le_bytes(), run])?;
        run.clear();
        Ok(n)
    };
    for address in pages {
        let host = memory
            .get_host_address(GuestAddress(address))
            .map_err(|e| Error::Msg(format!("guest memory at {address:#x}: {e}")))?;
        // SAFETY: one page of the guest's mapping (regions are page
        // multiples); the guest may write it meanwhile: the dirty log
        // sends it again then.
        unsafe { std::ptr::copy_nonoverlapping(host as *const u8, buffer.as_mut_ptr(), PAGE) };
        let zero = skip_zero && buffer.iter().all(|&b| b == 0);
        let adjacent = !run.is_empty() && run_start + run.len() as u64 == address;
        if zero || !adjacent || run.len() >= 1 << 20 {
            sent += flush(writer, run_start, &mut run)?;
        }
        if !zero {
            if run.is_empty() {
                run_start = address;
            }
            run.extend_from_slice(&buffer);
        }
    }
    sent += flush(writer, run_start, &mut run)?;
    Ok(sent)
}

fn read_frame(reader: &mut impl Read) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    reader
        .read_exact(&mut head)
        .map_err(|e| Error::Msg(format!("the sender went away mid-migration ({e})")))?;
    let length = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    if length > 64 << 20 {
        return Err(Error::Msg(format!(
            "a frame of {length} bytes: not a keel migration"
        )));
    }
    let mut payload = vec![0u8; length as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|e| Error::Msg(format!("the sender went away mid-migration ({e})")))?;
    Ok((head[0], payload))
}

/// Receives a migration from `stream` into `dir` (a new directory) as a
/// snapshot; the caller restores from it and then answers the sender.
pub fn receive(stream: &TcpStream, dir: &Path) -> Result<()> {
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut magic = [0u8; 9];
    reader
        .read_exact(&mut magic)
        .map_err(|e| Error::Msg(format!("the sender went away ({e})")))?;
    if magic != MAGIC {
        return Err(Error::invalid("the sender does not speak keel's migration"));
    }
    let (kind, payload) = read_frame(&mut reader)?;
    if kind != META {
        return Err(Error::invalid(
            "the migration did not start with the VM's description",
        ));
    }
    let meta: Meta = serde_json::from_slice(&payload)
        .map_err(|e| Error::invalid(format!("the VM's description: {e}")))?;
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(Error::path("create", &partial))?;
    let result = (|| {
        let memory_path = partial.join("memory");
        let memory = File::create(&memory_path).map_err(Error::path("create", &memory_path))?;
        memory
            .set_len(meta.memory)
            .map_err(Error::path("size", &memory_path))?;
        let states = loop {
            let (kind, payload) = read_frame(&mut reader)?;
            match kind {
                PAGES => {
                    if payload.len() < 8 {
                        return Err(Error::invalid("a page frame without an address"));
                    }
                    let address = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                    let data = &payload[8..];
                    let region = meta
                        .regions
                        .iter()
                        .find(|r| {
                            address >= r.guest_address
                                && address + data.len() as u64 <= r.guest_address + r.size
                        })
                        .ok_or_else(|| {
                            Error::invalid(format!("pages at {address:#x} outside the VM's memory"))
                        })?;
                    memory
                        .write_all_at(data, region.offset + (address - region.guest_address))
                        .map_err(Error::path("write", &memory_path))?;
                }
                VCPUS => break payload,
                other => {
                    return Err(Error::invalid(format!(
                        "an unexpected frame of kind {other}"
                    )));
                }
            }
        };
        let (kind, _) = read_frame(&mut reader)?;
        if kind != END {
            return Err(Error::invalid("the migration did not end where it should"));
        }
        // Not synced: the VM runs from these pages (page cache) at once,
        // and a receiver that crashes loses the VM either way.
        let saved: Saved = serde_json::from_slice(&states)
            .map_err(|e| Error::invalid(format!("the vCPU states: {e}")))?;
        crate::snapshot::write_parts(&partial, &meta, &saved)?;
        std::fs::rename(&partial, dir).map_err(Error::path("rename into", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// Tells the sender how it went.
pub fn answer(stream: &mut TcpStream, result: &Result<()>) {
    let line = match result {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    let _ = stream.write_all(line.as_bytes());
}
