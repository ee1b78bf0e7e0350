//! virtio-rng (entropy): every buffer the driver offers is filled from the
//! host's `getrandom`.

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::Device;
use crate::memory::Memory;

pub struct Rng;

impl Device for Rng {
    fn device_type(&self) -> u32 {
        4
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![256]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn serve(&mut self, _index: usize, queue: &mut Queue, memory: &Memory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let mut written = 0u32;
            for descriptor in chain {
                if !descriptor.is_write_only() {
                    continue;
                }
                let mut bytes = vec![0u8; descriptor.len() as usize];
                if !fill(&mut bytes) || memory.write_slice(&bytes, descriptor.addr()).is_err() {
                    break;
                }
                written += descriptor.len();
            }
            let _ = queue.add_used(memory, head, written);
            used = true;
        }
        used
    }
}

/// Fills `bytes` from the kernel's random pool.
fn fill(bytes: &mut [u8]) -> bool {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: getrandom into the rest of our buffer.
        let n =
            unsafe { libc::getrandom(bytes[done..].as_mut_ptr().cast(), bytes.len() - done, 0) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}
