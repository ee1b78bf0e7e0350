//! virtio-net over a tap device: each frame the guest sends (queue 1) is
//! written to the tap, each frame the host has for the guest is read from
//! the tap into a buffer the guest offered (queue 0). The tap is on a
//! keel bridge network (`keel vm run --network`), so a VM and the
//! containers on that network reach each other as containers do.
//!
//! Frames arrive when they arrive: the VMM's I/O thread watches the tap
//! ([`Device::io_fd`]) and fills the receive queue; when the guest has no
//! buffer left, frames wait in the tap's queue (and past its length, the
//! kernel drops them, as a full NIC does) until the guest offers more.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;

use super::{Device, Io};
use crate::memory::Memory;

/// `VIRTIO_NET_F_MAC`: the device has a MAC address in its config.
const F_MAC: u64 = 1 << 5;
/// The header before each frame: `virtio_net_hdr_v1` (12 bytes) for a
/// modern driver; a legacy one without mergeable buffers has 10 (no
/// `num_buffers`). keel's own transport takes modern drivers only; QEMU's
/// legacy virtio-mmio reaches the vhost-user backend with either.
const HEADER: usize = 12;
const LEGACY_HEADER: usize = 10;
/// The largest frame: a 64 KiB packet and its Ethernet and VLAN headers.
const MAX_FRAME: usize = 65_536 + 18;

const RX: usize = 0;
const TX: usize = 1;

pub struct Net {
    tap: OwnedFd,
    mac: [u8; 6],
    /// One frame, its header in front.
    buffer: Vec<u8>,
    /// The header's length for the driver's features.
    header: usize,
}

impl Net {
    /// A NIC with address `mac` on `tap` (made non-blocking here).
    pub fn new(tap: OwnedFd, mac: [u8; 6]) -> std::io::Result<Net> {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(tap.as_raw_fd(), libc::F_GETFL);
            if flags < 0
                || libc::fcntl(tap.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(Net {
            tap,
            mac,
            buffer: vec![0; HEADER + MAX_FRAME],
            header: HEADER,
        })
    }

    /// Sends each frame the guest queued; whether any buffer was used.
    fn transmit(&mut self, queue: &mut Queue, memory: &Memory) -> bool {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let length = super::gather(chain, memory, &mut self.buffer);
            if length > self.header {
                // SAFETY: a write from our buffer to the tap. A frame the
                // tap cannot take now is dropped, as a NIC drops it.
                unsafe {
                    libc::write(
                        self.tap.as_raw_fd(),
                        self.buffer[self.header..].as_ptr().cast(),
                        length - self.header,
                    )
                };
            }
            let _ = queue.add_used(memory, head, 0);
            used = true;
        }
        used
    }

    /// Moves frames from the tap into the guest's receive buffers.
    fn receive(&mut self, queue: &mut Queue, memory: &Memory) -> Io {
        let mut io = Io::default();
        loop {
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                io.starved = true;
                return io;
            };
            // SAFETY: a read into our buffer, past the header.
            let n = unsafe {
                libc::read(
                    self.tap.as_raw_fd(),
                    self.buffer[self.header..].as_mut_ptr().cast(),
                    MAX_FRAME,
                )
            };
            if n <= 0 {
                // Nothing waits: the buffer stays the guest's.
                queue.go_to_previous_position();
                return io;
            }
            let length = self.header + n as usize;
            // No offloads; one buffer per frame (num_buffers = 1).
            self.buffer[..self.header].fill(0);
            if self.header == HEADER {
                self.buffer[10] = 1;
            }
            let head = chain.head_index();
            let mut written = 0usize;
            for descriptor in chain.writable() {
                if written == length {
                    break;
                }
                let n = (descriptor.len() as usize).min(length - written);
                if memory
                    .write_slice(&self.buffer[written..written + n], descriptor.addr())
                    .is_err()
                {
                    break;
                }
                written += n;
            }
            // A frame larger than the buffer is cut short, and the
            // driver drops it (it counts a length error).
            let _ = queue.add_used(memory, head, written as u32);
            io.used = true;
        }
    }
}

impl Device for Net {
    fn device_type(&self) -> u32 {
        1
    }

    fn features(&self) -> u64 {
        F_MAC
    }

    fn queue_sizes(&self) -> Vec<u16> {
        vec![256, 256]
    }

    fn ack_features(&mut self, features: u64) {
        self.header = if features & super::F_VERSION_1 != 0 {
            HEADER
        } else {
            LEGACY_HEADER
        };
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], then status (not offered: zero).
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        super::read_from(&config, offset, data);
    }

    fn serve(&mut self, index: usize, queue: &mut Queue, memory: &Memory) -> bool {
        match index {
            TX => self.transmit(queue, memory),
            RX => self.receive(queue, memory).used,
            _ => false,
        }
    }

    fn io_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }

    fn io_queue(&self) -> usize {
        RX
    }

    fn serve_io(&mut self, queue: &mut Queue, memory: &Memory) -> Io {
        self.receive(queue, memory)
    }
}
