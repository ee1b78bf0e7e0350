//! virtio-9p: a host directory shared with the guest (Linux mounts it with
//! `mount -t 9p -o trans=virtio TAG DIR`). Each request is a chain: the
//! 9P message in its readable buffers, room for the answer in its
//! writable ones; keel's 9P2000.L server ([`crate::p9`]) answers it.

use std::path::Path;

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::{Device, F_VERSION_1};
use crate::memory::Memory;
use crate::p9::Server;
use crate::{Error, Result};

/// `VIRTIO_9P_MOUNT_TAG`: the configuration holds the tag.
const F_MOUNT_TAG: u64 = 1;

pub struct P9 {
    tag: String,
    server: Server,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl P9 {
    /// A device sharing `dir` under `tag` (at most 64 KiB, no NUL).
    pub fn new(tag: &str, dir: &Path) -> Result<P9> {
        if tag.is_empty() || tag.len() > u16::MAX as usize || tag.contains('\0') {
            return Err(Error::invalid(format!("{tag:?} is not a 9p mount tag")));
        }
        let server = Server::new(dir).map_err(|e| Error::Io {
            what: format!("share {}", dir.display()),
            source: e,
        })?;
        Ok(P9 {
            tag: tag.to_string(),
            server,
            request: Vec::new(),
            reply: Vec::new(),
        })
    }
}

impl Device for P9 {
    fn device_type(&self) -> u32 {
        9
    }

    fn features(&self) -> u64 {
        F_VERSION_1 | F_MOUNT_TAG
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![128]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = (self.tag.len() as u16).to_le_bytes().to_vec();
        config.extend_from_slice(self.tag.as_bytes());
        super::read_from(&config, offset, data);
    }

    fn unsaveable(&self) -> Option<&'static str> {
        Some("a shared directory (the files the guest has open on the host)")
    }

    fn serve(&mut self, _index: usize, queue: &mut Queue, memory: &Memory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let descriptors: Vec<_> = chain.collect();
            let readable: usize = descriptors
                .iter()
                .filter(|d| !d.is_write_only())
                .map(|d| d.len() as usize)
                .sum();
            let room: usize = descriptors
                .iter()
                .filter(|d| d.is_write_only())
                .map(|d| d.len() as usize)
                .sum();
            self.request.clear();
            self.request
                .resize(readable.min(crate::p9::MAX_MSIZE as usize), 0);
            let mut at = 0;
            let mut fault = false;
            for d in descriptors.iter().filter(|d| !d.is_write_only()) {
                let n = (d.len() as usize).min(self.request.len() - at);
                fault |= memory
                    .read_slice(&mut self.request[at..at + n], d.addr())
                    .is_err();
                at += n;
            }
            let mut written = 0u32;
            if !fault {
                self.server.handle(&self.request, &mut self.reply);
                if self.reply.len() <= room {
                    let mut from = 0;
                    for d in descriptors.iter().filter(|d| d.is_write_only()) {
                        if from == self.reply.len() {
                            break;
                        }
                        let n = (d.len() as usize).min(self.reply.len() - from);
                        if memory
                            .write_slice(&self.reply[from..from + n], d.addr())
                            .is_err()
                        {
                            break;
                        }
                        from += n;
                    }
                    written = from as u32;
                }
            }
            let _ = queue.add_used(memory, head, written);
            used = true;
        }
        used
    }
}
