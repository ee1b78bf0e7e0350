//! virtio-balloon: the host asks the guest for memory back. The host sets
//! how many 4 KiB pages it wants (`num_pages` in the config); the guest
//! hands page frame numbers over on the inflate queue, and the VMM drops
//! those pages (`MADV_DONTNEED`): they leave the host's resident memory
//! and read as zeros if the guest touches them again. Deflating needs
//! nothing from the host: a page comes back when touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::Device;
use crate::memory::Memory;

const PAGE: u64 = 4096;

/// What the host and the device share: the target and what the guest
/// says it gave.
#[derive(Default)]
pub struct Control {
    pub target_pages: AtomicU32,
    pub actual_pages: AtomicU32,
    /// Pages dropped from the host's memory so far.
    pub released_pages: AtomicU32,
}

pub struct Balloon {
    control: Arc<Control>,
}

impl Balloon {
    pub fn new() -> (Balloon, Arc<Control>) {
        let control = Arc::new(Control::default());
        (
            Balloon {
                control: control.clone(),
            },
            control,
        )
    }
}

impl Device for Balloon {
    fn device_type(&self) -> u32 {
        5
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_sizes(&self) -> Vec<u16> {
        // inflate, deflate
        vec![256, 256]
    }

    fn save(&self) -> serde_json::Value {
        serde_json::json!({
            "target_pages": self.control.target_pages.load(Ordering::SeqCst),
            "actual_pages": self.control.actual_pages.load(Ordering::SeqCst),
            "released_pages": self.control.released_pages.load(Ordering::SeqCst),
        })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        let field = |name: &str| {
            state[name]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| format!("the balloon's saved {name} is missing"))
        };
        self.control
            .target_pages
            .store(field("target_pages")?, Ordering::SeqCst);
        self.control
            .actual_pages
            .store(field("actual_pages")?, Ordering::SeqCst);
        self.control
            .released_pages
            .store(field("released_pages")?, Ordering::SeqCst);
        Ok(())
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 8];
        config[..4].copy_from_slice(
            &self
                .control
                .target_pages
                .load(Ordering::SeqCst)
                .to_le_bytes(),
        );
        config[4..].copy_from_slice(
            &self
                .control
                .actual_pages
                .load(Ordering::SeqCst)
                .to_le_bytes(),
        );
        super::read_from(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // The driver writes `actual`.
        if offset == 4 && data.len() == 4 {
            let value = u32::from_le_bytes(data.try_into().expect("4 bytes"));
            self.control.actual_pages.store(value, Ordering::SeqCst);
        }
    }

    fn serve(&mut self, index: usize, queue: &mut Queue, memory: &Memory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            if index == 0 {
                for descriptor in chain {
                    if descriptor.is_write_only() {
                        continue;
                    }
                    for i in 0..descriptor.len() as u64 / 4 {
                        let Ok(frame) =
                            memory.read_obj::<u32>(GuestAddress(descriptor.addr().0 + i * 4))
                        else {
                            continue;
                        };
                        if release(memory, u64::from(frame) * PAGE) {
                            self.control.released_pages.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
            let _ = queue.add_used(memory, head, 0);
            used = true;
        }
        used
    }
}

/// Gives the page at `address` back to the host.
fn release(memory: &Memory, address: u64) -> bool {
    let Ok(host) = memory.get_host_address(GuestAddress(address)) else {
        return false;
    };
    // SAFETY: one page of the guest's mapping, which the guest gave up;
    // the mapping stays valid (a later touch gets a zero page).
    unsafe { libc::madvise(host.cast(), PAGE as usize, libc::MADV_DONTNEED) == 0 }
}
