//! Container logs in docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-12-01T07:03:34.123456789Z"}`,
//! in `<id>-json.log`, rotated to `<id>-json.log.1`, `.2`, ... at
//! `max-size` keeping `max-file` files in all (docker's options and names).
//!
//! The monitor writes; `keel logs` reads, and with `-f` follows the file
//! across rotations (a new inode at the path, or a shorter file).
//!
//! Logs are capped by default at [`DEFAULT_MAX_SIZE`] × [`DEFAULT_MAX_FILE`]
//! (docker's `local` driver's 20 MB × 5); `--log-opt max-size=-1` lifts
//! the cap. When the disk is full the writer cuts off a half-written line
//! and the monitor stops reading the container's output (the container
//! waits on its pipe) until the filesystem has [`RESUME_FREE`] bytes free;
//! what it gets meanwhile (after the container's exit) is dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A line is cut into messages of at most this many bytes (docker's 16 KiB).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// The size a log is rotated at unless `--log-opt max-size` says otherwise.
pub const DEFAULT_MAX_SIZE: u64 = 20 << 20;
/// The files kept (the log and its rotations) unless `max-file` says.
pub const DEFAULT_MAX_FILE: u32 = 5;
/// After a full disk, output is written again once this much is free (more
/// than keel's reserve for recording removals: the log must not eat it).
pub const RESUME_FREE: u64 = 16 << 20;

/// The rotation a container's log gets: `(max_size, max_file)`, where
/// `None` is no cap (`max-size=-1`, recorded as 0). Without options, the
/// default cap; `max-size` alone keeps one file (docker's json-file).
pub fn limits(options: &crate::spec::LogOptions) -> (Option<u64>, u32) {
    match (options.max_size, options.max_file) {
        (Some(0), _) => (None, 1),
        (Some(size), files) => (Some(size), files.unwrap_or(1).max(1)),
        (None, files) => (
            Some(DEFAULT_MAX_SIZE),
            files.unwrap_or(DEFAULT_MAX_FILE).max(1),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: Stream,
    pub time: String,
}

/// Now in RFC 3339 with nanoseconds (Go's RFC3339Nano: trailing zeros of
/// the fraction dropped).
pub fn now_nanos() -> String {
    jiff::Timestamp::now().to_string()
}

/// Appends a container's output to its json log, rotating it.
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_file: u32,
    /// What a stream wrote since its last newline.
    pending: [Vec<u8>; 2],
    /// Set while the disk is full: output is dropped until then, when the
    /// free space is looked at again.
    full_until: Option<std::time::Instant>,
    /// Bytes of output dropped since the disk became full.
    dropped: u64,
}

impl Writer {
    pub fn open(path: &Path, max_size: Option<u64>, max_file: u32) -> Result<Writer> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("open the log {}", path.display()), e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_size: max_size.filter(|s| *s > 0),
            max_file: max_file.max(1),
            pending: [Vec::new(), Vec::new()],
            full_until: None,
            dropped: 0,
        })
    }

    /// While the disk is full: how long until the free space is looked at
    /// again. The monitor does not read the container's output until then,
    /// so the container waits on its pipe (nothing is lost, nothing spins);
    /// None when the log is being written.
    pub fn full_wait(&mut self) -> Option<Duration> {
        self.full_until?;
        if !self.dropping() {
            return None;
        }
        let now = std::time::Instant::now();
        self.full_until
            .map(|until| until.saturating_duration_since(now))
    }

    /// Whether output is being dropped for want of space: checks the free
    /// space again once a second, and resumes when there is enough.
    fn dropping(&mut self) -> bool {
        let Some(until) = self.full_until else {
            return false;
        };
        let now = std::time::Instant::now();
        if now < until {
            return true;
        }
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let free = keel_image::sqlite::free_bytes(dir).unwrap_or(0);
        if free < RESUME_FREE {
            self.full_until = Some(now + Duration::from_secs(1));
            return true;
        }
        tracing::warn!(
            "{}: writing again; {} bytes of output were dropped while the disk was full",
            self.path.display(),
            self.dropped
        );
        self.full_until = None;
        self.dropped = 0;
        false
    }

    /// Records what `stream` wrote; complete lines become entries at once,
    /// the rest waits for its newline (or for [`Writer::flush`]).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        if self.dropping() {
            self.dropped += data.len() as u64;
            return Ok(());
        }
        let index = stream as usize;
        let mut pending = std::mem::take(&mut self.pending[index]);
        pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(offset) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset + 1;
            self.emit_pieces(stream, &pending[start..end])?;
            start = end;
        }
        let rest = pending.split_off(start);
        if rest.len() >= MAX_MESSAGE {
            self.emit_pieces(stream, &rest)?;
        } else {
            self.pending[index] = rest;
        }
        Ok(())
    }

    /// Writes out what waits for a newline (at the container's exit).
    pub fn flush(&mut self) -> Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.emit_pieces(stream, &rest)?;
            }
        }
        self.file
            .flush()
            .map_err(|e| Error::io(format!("write the log {}", self.path.display()), e))
    }

    fn emit_pieces(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        for piece in data.chunks(MAX_MESSAGE) {
            self.emit(stream, piece)?;
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, data: &[u8]) -> Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(data).into_owned(),
            stream,
            time: now_nanos(),
        };
        let mut line = serde_json::to_vec(&entry).expect("log entries serialize");
        line.push(b'\n');
        if let Some(max) = self.max_size
            && self.size > 0
            && self.size + line.len() as u64 > max
        {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&line) {
            if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                // No half line stays behind to merge with the next one.
                let _ = self.file.set_len(self.size);
                self.pending = [Vec::new(), Vec::new()];
                self.full_until = Some(std::time::Instant::now() + Duration::from_secs(1));
                self.dropped += line.len() as u64;
                tracing::warn!(
                    "{}: the disk is full: dropping output until there is room",
                    self.path.display()
                );
            }
            return Err(Error::io(
                format!("write the log {}", self.path.display()),
                e,
            ));
        }
        self.size += line.len() as u64;
        Ok(())
    }

    /// `log` → `log.1` → `log.2` ..., dropping the oldest beyond max-file.
    fn rotate(&mut self) -> Result<()> {
        let context = |e| Error::io(format!("rotate the log {}", self.path.display()), e);
        if self.max_file <= 1 {
            self.file.set_len(0).map_err(context)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.max_file - 1));
        for n in (1..self.max_file - 1).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1)).map_err(context)?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1)).map_err(context)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(context)?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// What `keel logs` shows.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The last N lines only.
    pub tail: Option<usize>,
    /// RFC 3339 bounds (inclusive since, exclusive until), as seconds.
    pub since: Option<f64>,
    pub until: Option<f64>,
}

fn seconds_of(time: &str) -> Option<f64> {
    let t: jiff::Timestamp = time.parse().ok()?;
    Some(t.as_second() as f64 + f64::from(t.subsec_nanosecond()) / 1e9)
}

fn wanted(entry: &Entry, options: &ReadOptions) -> bool {
    if options.since.is_none() && options.until.is_none() {
        return true;
    }
    let Some(at) = seconds_of(&entry.time) else {
        return false;
    };
    options.since.is_none_or(|s| at >= s) && options.until.is_none_or(|u| at < u)
}

fn parse_line(line: &str) -> Option<Entry> {
    serde_json::from_str(line.trim_end_matches('\n')).ok()
}

/// Where a read of the log ended: the live file (by inode) and how far
/// into it the whole lines went. A follow that starts there misses
/// nothing written in between, even across a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    inode: u64,
    offset: u64,
}

/// The entries of the log and its rotations, oldest first, as `options`
/// select them.
pub fn read(path: &Path, options: &ReadOptions) -> Result<Vec<Entry>> {
    read_to(path, options).map(|(entries, _)| entries)
}

/// [`read`], and where it ended (None: there is no log yet).
pub fn read_to(path: &Path, options: &ReadOptions) -> Result<(Vec<Entry>, Option<Position>)> {
    let mut files: Vec<PathBuf> = (1..=64)
        .map(|n| rotated(path, n))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    let mut entries = Vec::new();
    let mut position = None;
    for file in files {
        let Ok(handle) = File::open(&file) else {
            continue;
        };
        let inode = handle
            .metadata()
            .map_err(|e| Error::io(format!("read the log {}", file.display()), e))?
            .ino();
        let mut reader = BufReader::new(handle);
        let mut offset = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .map_err(|e| Error::io(format!("read the log {}", file.display()), e))?;
            // The end, or a line still being written (a follow reads it).
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            offset += n as u64;
            if let Some(entry) = parse_line(&line)
                && wanted(&entry, options)
            {
                entries.push(entry);
            }
        }
        if file == path {
            position = Some(Position { inode, offset });
        }
    }
    if let Some(tail) = options.tail
        && entries.len() > tail
    {
        entries.drain(..entries.len() - tail);
    }
    Ok((entries, position))
}

/// Follows the log from `from` (where a [`read_to`] ended; None: from its
/// current end), calling `emit` with each new entry, until `done` says so
/// (checked whenever nothing new arrived). A rotation (a new file at the
/// path, or a shorter one) is followed, also one between the read and the
/// follow.
pub fn follow(
    path: &Path,
    from: Option<Position>,
    options: &ReadOptions,
    mut emit: impl FnMut(&Entry) -> io::Result<()>,
    mut done: impl FnMut() -> bool,
) -> Result<()> {
    let context = |e| Error::io(format!("read the log {}", path.display()), e);
    let open = || -> Option<(BufReader<File>, u64)> {
        let file = File::open(path).ok()?;
        let inode = file.metadata().ok()?.ino();
        Some((BufReader::new(file), inode))
    };
    let Some((mut reader, mut inode)) = open() else {
        return Ok(());
    };
    match from {
        None => {
            reader.seek(SeekFrom::End(0)).map_err(context)?;
        }
        Some(at) if at.inode == inode => {
            reader.seek(SeekFrom::Start(at.offset)).map_err(context)?;
        }
        Some(at) => {
            // Rotated since the read: the rest of the file it read (now a
            // rotation), then the new one from its start.
            let old = (1..=64).map(|n| rotated(path, n)).find_map(|p| {
                let file = File::open(p).ok()?;
                (file.metadata().ok()?.ino() == at.inode).then_some(file)
            });
            if let Some(mut old) = old {
                old.seek(SeekFrom::Start(at.offset)).map_err(context)?;
                for line in BufReader::new(old).lines() {
                    let line = line.map_err(context)?;
                    if let Some(entry) = parse_line(&line)
                        && wanted(&entry, options)
                        && emit(&entry).is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
    let mut line = String::new();
    let mut finishing = false;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::io(format!("read the log {}", path.display()), e))?;
        if n > 0 && line.ends_with('\n') {
            if let Some(entry) = parse_line(&line)
                && wanted(&entry, options)
                && emit(&entry).is_err()
            {
                // The reader went away (a closed pipe): stop quietly.
                return Ok(());
            }
            continue;
        }
        if n > 0 {
            // A line still being written: read it again whole.
            let back = -(n as i64);
            let _ = reader.seek_relative(back);
        }
        // Nothing new: rotated? finished?
        let rotated = match std::fs::metadata(path) {
            Ok(meta) => meta.ino() != inode || meta.len() < reader.stream_position().unwrap_or(0),
            Err(_) => false,
        };
        if rotated && let Some((new_reader, new_inode)) = open() {
            // What reached the old file after our last read, then the new.
            let mut old = std::mem::replace(&mut reader, new_reader);
            inode = new_inode;
            let mut rest = String::new();
            while old.read_line(&mut rest).unwrap_or(0) > 0 {
                if let Some(entry) = parse_line(&rest)
                    && wanted(&entry, options)
                    && emit(&entry).is_err()
                {
                    return Ok(());
                }
                rest.clear();
            }
            continue;
        }
        if finishing {
            return Ok(());
        }
        if done() {
            // One more pass for what was written just before the end.
            finishing = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_streams_partial_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut writer = Writer::open(&path, None, 1).unwrap();
        writer.write(Stream::Stdout, b"hello\nwor").unwrap();
        writer.write(Stream::Stderr, b"oops\n").unwrap();
        writer.write(Stream::Stdout, b"ld\nno newline").unwrap();
        writer
            .write(Stream::Stdout, &vec![b'x'; MAX_MESSAGE + 10])
            .unwrap();
        writer.flush().unwrap();
        let entries = read(&path, &ReadOptions::default()).unwrap();
        let logs: Vec<(&str, Stream)> =
            entries.iter().map(|e| (e.log.as_str(), e.stream)).collect();
        assert_eq!(logs[0], ("hello\n", Stream::Stdout));
        assert_eq!(logs[1], ("oops\n", Stream::Stderr));
        assert_eq!(logs[2], ("world\n", Stream::Stdout));
        assert_eq!(logs[3].0.len(), MAX_MESSAGE);
        assert!(logs[3].0.starts_with("no newline"));
        assert_eq!(logs[4].0.len(), 10 + "no newline".len());
        let raw = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
        assert_eq!(first["stream"], "stdout");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        let tail = read(
            &path,
            &ReadOptions {
                tail: Some(2),
                ..ReadOptions::default()
            },
        )
        .unwrap();
        assert_eq!(tail.len(), 2);
    }

    #[test]
    fn rotates_and_reads_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut writer = Writer::open(&path, Some(300), 3).unwrap();
        for i in 0..30 {
            writer
                .write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
        }
        writer.flush().unwrap();
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        for file in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(std::fs::metadata(&file).unwrap().len() <= 300);
        }
        let entries = read(&path, &ReadOptions::default()).unwrap();
        // The newest lines, in order, the oldest gone with the files.
        assert_eq!(entries.last().unwrap().log, "line 29\n");
        let numbers: Vec<u32> = entries
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert!(numbers[0] > 0);
    }

    #[test]
    fn follows_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        // About 12 lines a file: the 20 lines rotate it once.
        let mut writer = Writer::open(&path, Some(900), 2).unwrap();
        writer.write(Stream::Stdout, b"before\n").unwrap();
        writer.flush().unwrap();
        // Followed from where a read ended (as `logs -f` does): whenever the
        // follower gets going, it starts after "before".
        let (_, end) = read_to(&path, &ReadOptions::default()).unwrap();
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let path = path.clone();
            let finished = finished.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                follow(
                    &path,
                    end,
                    &ReadOptions::default(),
                    |e| {
                        seen.push(e.log.clone());
                        Ok(())
                    },
                    || finished.load(std::sync::atomic::Ordering::SeqCst),
                )
                .unwrap();
                seen
            })
        };
        for i in 0..20 {
            writer
                .write(Stream::Stdout, format!("after {i}\n").as_bytes())
                .unwrap();
            // Paced: at most one rotation between two of the follower's
            // looks (two files are kept).
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.flush().unwrap();
        // The follower makes one more pass once told to finish.
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        let seen = reader.join().unwrap();
        assert!(rotated(&path, 1).exists(), "the log rotated");
        assert!(!seen.contains(&"before\n".to_string()));
        let expected: Vec<String> = (0..20).map(|i| format!("after {i}\n")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_follow_from_a_read_misses_nothing_written_in_between_even_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut writer = Writer::open(&path, Some(900), 3).unwrap();
        writer.write(Stream::Stdout, b"read 0\n").unwrap();
        writer.flush().unwrap();
        let (entries, end) = read_to(&path, &ReadOptions::default()).unwrap();
        assert_eq!(entries.len(), 1);
        // Between the read and the follow: enough lines to rotate.
        for i in 0..20 {
            writer
                .write(Stream::Stderr, format!("between {i}\n").as_bytes())
                .unwrap();
        }
        writer.flush().unwrap();
        assert!(rotated(&path, 1).exists(), "the log rotated");
        let mut seen = Vec::new();
        follow(
            &path,
            end,
            &ReadOptions::default(),
            |e| {
                seen.push(e.log.clone());
                Ok(())
            },
            || true,
        )
        .unwrap();
        let expected: Vec<String> = (0..20).map(|i| format!("between {i}\n")).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn limits_default_to_docker_local_drivers_cap() {
        use crate::spec::LogOptions;
        let limits = |max_size, max_file| limits(&LogOptions { max_size, max_file });
        assert_eq!(limits(None, None), (Some(20 << 20), 5));
        assert_eq!(limits(None, Some(2)), (Some(20 << 20), 2));
        assert_eq!(limits(Some(1000), None), (Some(1000), 1));
        assert_eq!(limits(Some(1000), Some(3)), (Some(1000), 3));
        assert_eq!(limits(Some(0), None), (None, 1), "max-size=-1: no cap");
    }
}
