//! virtio devices over the MMIO transport (virtio 1.x, `virtio-mmio`
//! version 2), as Firecracker offers them: each device has a 4 KiB window
//! in the MMIO hole from [`MMIO_BASE`]; the driver writes the queue's
//! addresses there and notifies by writing the queue's index; the device
//! serves the queue at once, on the vCPU thread that notified.
//!
//! Interrupts are not delivered yet (the VM has no interrupt controller):
//! a driver polls the used ring, as keel's test guest does.

pub mod balloon;
pub mod blk;
pub mod mmio;
pub mod rng;

use virtio_queue::Queue;

use crate::memory::Memory;

/// Where the first device's window is; the next ones follow, 4 KiB apart.
pub const MMIO_BASE: u64 = 0xd000_0000;
pub const MMIO_SIZE: u64 = 0x1000;

/// `VIRTIO_F_VERSION_1`: a modern (1.x) device.
pub const F_VERSION_1: u64 = 1 << 32;

/// A device behind the MMIO transport.
pub trait Device: Send {
    /// The virtio device type (2: block).
    fn device_type(&self) -> u32;
    fn features(&self) -> u64;
    /// The most descriptors each queue takes.
    fn queue_sizes(&self) -> Vec<u16>;
    /// Reads from its configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver's write to its configuration space (most ignore it).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Serves what waits in queue `index`; whether it used any buffer.
    fn serve(&mut self, index: usize, queue: &mut Queue, memory: &Memory) -> bool;
}
