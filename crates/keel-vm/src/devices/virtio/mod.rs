//! virtio devices over the MMIO transport (virtio 1.x, `virtio-mmio`
//! version 2), as Firecracker offers them: each device has a 4 KiB window
//! in the MMIO hole from [`MMIO_BASE`]; the driver writes the queue's
//! addresses there and notifies by writing the queue's index; the device
//! serves the queue at once, on the vCPU thread that notified.
//!
//! What comes from outside the guest (a frame on a tap, a host's
//! connection) is served by the VMM's I/O thread: a device names a file to
//! watch ([`Device::io_fd`]) and fills its receive queue when it is
//! readable, or the guest notified it ([`Device::serve_io`]).
//!
//! Each device raises its own line (GSI 5 + its index, through an irqfd
//! into KVM's I/O APIC) when it used buffers or its configuration
//! changed; a driver may also poll the used ring, as most of keel's test
//! guest's modes do.

pub mod balloon;
pub mod blk;
pub mod mmio;
pub mod net;
pub mod p9;
pub mod rng;
pub mod vsock;

use std::os::fd::RawFd;

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
    /// The features the driver accepted (before it uses the queues).
    fn ack_features(&mut self, _features: u64) {}
    /// The device's own state for a snapshot (beyond its queues).
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Puts back what [`Device::save`] returned.
    fn restore(&mut self, _state: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
    /// Lets go of what another host's VMM must take over (a disk's lock)
    /// as a migration hands the VM over.
    fn let_go(&mut self) {}
    /// Takes it back (the migration failed).
    fn take_back(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Why a VM with this device cannot be snapshotted or migrated (what
    /// it holds outside the VM), if so.
    fn unsaveable(&self) -> Option<&'static str> {
        None
    }
    /// Serves what waits in queue `index`; whether it used any buffer.
    fn serve(&mut self, index: usize, queue: &mut Queue, memory: &Memory) -> bool;
    /// A file whose readiness means work for the guest (a tap, the
    /// device's own epoll), if the device has one.
    fn io_fd(&self) -> Option<RawFd> {
        None
    }
    /// The queue [`Device::serve_io`] fills (a receive queue).
    fn io_queue(&self) -> usize {
        0
    }
    /// Fills queue [`Device::io_queue`] with what came from outside: what
    /// `io_fd` has, and what the device owes the guest (answers to what it
    /// sent). Called when `io_fd` is readable and after each notification.
    fn serve_io(&mut self, _queue: &mut Queue, _memory: &Memory) -> Io {
        Io::default()
    }
}

/// What [`Device::serve_io`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    /// It used buffers of the guest's.
    pub used: bool,
    /// It has more for the guest than the guest gave buffers for: the I/O
    /// thread stops watching the device until the guest notifies it.
    pub starved: bool,
}

/// Reads what the driver put in the chain's readable buffers into
/// `buffer` (as much as fits); 0 if a buffer is outside guest memory.
pub fn gather(
    chain: virtio_queue::DescriptorChain<&Memory>,
    memory: &Memory,
    buffer: &mut [u8],
) -> usize {
    use vm_memory::Bytes;
    let mut length = 0usize;
    for descriptor in chain.readable() {
        let n = (descriptor.len() as usize).min(buffer.len() - length);
        if memory
            .read_slice(&mut buffer[length..length + n], descriptor.addr())
            .is_err()
        {
            return 0;
        }
        length += n;
    }
    length
}

/// Copies a device's config space from `offset` into `data` (zeros past
/// its end).
pub fn read_from(config: &[u8], offset: u64, data: &mut [u8]) {
    let start = offset as usize;
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = start
            .checked_add(i)
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}
