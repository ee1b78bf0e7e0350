//! virtio-blk over a raw image file: read, write, flush and the disk's id.
//! A disk attached read-write is locked (`flock`) for its VM alone, so a
//! second VM cannot write it at the same time; read-only disks share a
//! lock and refuse writes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::Device;
use crate::error::{Error, Result};
use crate::memory::Memory;

const SECTOR: u64 = 512;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Takes the disk's lock: shared to read, exclusive to write.
fn lock_disk(file: &File, read_only: bool) -> bool {
    let lock = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on a file we own.
    unsafe { libc::flock(file.as_raw_fd(), lock | libc::LOCK_NB) == 0 }
}

pub struct Block {
    file: File,
    path: std::path::PathBuf,
    read_only: bool,
    sectors: u64,
    id: [u8; 20],
}

impl Block {
    /// Opens `path` for a VM; a disk another VM has read-write (or that
    /// one wants read-write while others read it) is refused.
    pub fn open(path: &Path, read_only: bool) -> Result<Block> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(Error::path("open the disk", path))?;
        if !lock_disk(&file, read_only) {
            return Err(Error::invalid(format!(
                "the disk {} is in use by another VM{}",
                path.display(),
                if read_only { " (read-write)" } else { "" }
            )));
        }
        let size = file
            .metadata()
            .map_err(Error::path("read the size of the disk", path))?
            .len();
        let mut id = [0u8; 20];
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let n = name.len().min(20);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Block {
            file,
            path: path.to_path_buf(),
            read_only,
            sectors: size / SECTOR,
            id,
        })
    }

    /// One request: its status and the bytes written into the driver's
    /// buffers.
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: &[(GuestAddress, u32, bool)],
        memory: &Memory,
    ) -> (u8, u32) {
        let mut offset = sector.saturating_mul(SECTOR);
        let mut written = 0u32;
        match kind {
            T_IN | T_OUT => {
                for &(address, length, device_writes) in data {
                    let end = offset + u64::from(length);
                    if end > self.sectors * SECTOR {
                        return (S_IOERR, written);
                    }
                    let mut buffer = vec![0u8; length as usize];
                    if kind == T_IN {
                        if !device_writes
                            || self.file.read_exact_at(&mut buffer, offset).is_err()
                            || memory.write_slice(&buffer, address).is_err()
                        {
                            return (S_IOERR, written);
                        }
                        written += length;
                    } else {
                        if self.read_only {
                            return (S_IOERR, written);
                        }
                        if memory.read_slice(&mut buffer, address).is_err()
                            || self.file.write_all_at(&buffer, offset).is_err()
                        {
                            return (S_IOERR, written);
                        }
                    }
                    offset = end;
                }
                (S_OK, written)
            }
            T_FLUSH => {
                if self.read_only || self.file.sync_data().is_ok() {
                    (S_OK, 0)
                } else {
                    (S_IOERR, 0)
                }
            }
            T_GET_ID => match data.first() {
                Some(&(address, length, true)) => {
                    let n = (length as usize).min(self.id.len());
                    if memory.write_slice(&self.id[..n], address).is_err() {
                        return (S_IOERR, 0);
                    }
                    (S_OK, n as u32)
                }
                _ => (S_IOERR, 0),
            },
            _ => (S_UNSUPP, 0),
        }
    }
}

impl Device for Block {
    fn device_type(&self) -> u32 {
        2
    }

    fn features(&self) -> u64 {
        F_FLUSH | if self.read_only { F_RO } else { 0 }
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![256]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // capacity (u64, sectors), then zeros.
        let mut config = [0u8; 64];
        config[..8].copy_from_slice(&self.sectors.to_le_bytes());
        super::read_from(&config, offset, data);
    }

    fn let_go(&mut self) {
        // SAFETY: unlocking a file we own.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }

    fn take_back(&mut self) -> std::result::Result<(), String> {
        if lock_disk(&self.file, self.read_only) {
            Ok(())
        } else {
            Err(format!(
                "the disk {} was taken by another VM meanwhile",
                self.path.display()
            ))
        }
    }

    fn serve(&mut self, _index: usize, queue: &mut Queue, memory: &Memory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.collect();
            let mut length = 0;
            // header (driver's), data..., status (one byte, device's).
            if let (Some(header), Some(status)) = (descriptors.first(), descriptors.last())
                && descriptors.len() >= 2
                && header.len() >= 16
                && status.is_write_only()
            {
                let kind: u32 = memory.read_obj(header.addr()).unwrap_or(u32::MAX);
                let sector: u64 = memory
                    .read_obj(header.addr().unchecked_add(8))
                    .unwrap_or(u64::MAX);
                let data: Vec<(GuestAddress, u32, bool)> = descriptors[1..descriptors.len() - 1]
                    .iter()
                    .map(|d| (d.addr(), d.len(), d.is_write_only()))
                    .collect();
                let (code, written) = self.request(kind, sector, &data, memory);
                let _ = memory.write_obj(code, status.addr());
                length = written + 1;
            }
            let _ = queue.add_used(memory, head, length);
            used = true;
        }
        used
    }
}
