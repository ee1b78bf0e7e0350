//! The virtio-mmio transport (version 2): the registers a driver reads
//! and writes to find a device, agree on features, set up its queues and
//! notify it.

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{Device, F_VERSION_1, Io};
use crate::memory::Memory;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VENDOR: u32 = 0x4b45_454c; // "KEEL"

const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 128;

/// What a snapshot keeps of a device: the transport's registers, each
/// queue's place, and the device's own state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub device_type: u32,
    pub status: u32,
    pub driver_features: u64,
    pub device_features_select: u32,
    pub driver_features_select: u32,
    pub queue_select: u32,
    pub interrupt_status: u32,
    pub queues: Vec<QueueSaved>,
    #[serde(default)]
    pub device: serde_json::Value,
}

/// A queue's state (`virtio_queue::QueueState`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueSaved {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

pub struct Transport {
    device: Box<dyn Device>,
    interrupt: crate::devices::Interrupt,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
}

impl Transport {
    pub fn new(device: Box<dyn Device>, interrupt: crate::devices::Interrupt) -> Transport {
        let queues = device
            .queue_sizes()
            .into_iter()
            .map(|size| Queue::new(size).expect("a queue size that is a power of two"))
            .collect();
        Transport {
            device,
            interrupt,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
        }
    }

    pub fn interrupt(&self) -> &crate::devices::Interrupt {
        &self.interrupt
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Marks `bit` in the interrupt status (1: used buffers, 2: the
    /// configuration changed) and raises the device's line.
    fn signal(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        self.interrupt.raise();
    }

    /// The device's configuration changed (the driver rereads it).
    pub fn config_changed(&mut self) {
        if self.status & STATUS_DRIVER_OK != 0 {
            self.signal(2);
        }
    }

    /// The transport's and the device's state, for a snapshot.
    pub fn save(&self) -> State {
        State {
            device_type: self.device.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            queue_select: self.queue_select,
            interrupt_status: self.interrupt_status,
            queues: self
                .queues
                .iter()
                .map(|q| {
                    let s = q.state();
                    QueueSaved {
                        max_size: s.max_size,
                        next_avail: s.next_avail,
                        next_used: s.next_used,
                        event_idx_enabled: s.event_idx_enabled,
                        size: s.size,
                        ready: s.ready,
                        desc_table: s.desc_table,
                        avail_ring: s.avail_ring,
                        used_ring: s.used_ring,
                    }
                })
                .collect(),
            device: self.device.save(),
        }
    }

    /// Puts back what [`Transport::save`] kept (a device of the same
    /// type, with as many queues).
    pub fn restore(&mut self, state: &State) -> Result<(), String> {
        if state.device_type != self.device.device_type() || state.queues.len() != self.queues.len()
        {
            return Err(format!(
                "a saved device of type {} with {} queues for one of type {} with {}",
                state.device_type,
                state.queues.len(),
                self.device.device_type(),
                self.queues.len()
            ));
        }
        let queues = state
            .queues
            .iter()
            .map(|q| {
                Queue::try_from(QueueState {
                    max_size: q.max_size,
                    next_avail: q.next_avail,
                    next_used: q.next_used,
                    event_idx_enabled: q.event_idx_enabled,
                    size: q.size,
                    ready: q.ready,
                    desc_table: q.desc_table,
                    avail_ring: q.avail_ring,
                    used_ring: q.used_ring,
                })
                .map_err(|e| format!("a saved queue: {e:?}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.device.restore(&state.device)?;
        if state.status & STATUS_FEATURES_OK != 0 {
            self.device.ack_features(state.driver_features);
        }
        self.queues = queues;
        self.status = state.status;
        self.driver_features = state.driver_features;
        self.device_features_select = state.device_features_select;
        self.driver_features_select = state.driver_features_select;
        self.queue_select = state.queue_select;
        self.interrupt_status = state.interrupt_status;
        Ok(())
    }

    /// Lets go of what the device holds on the host (a disk's file and
    /// lock, a tap, sockets) once the VM has ended.
    pub fn release(&mut self) {
        let device_type = self.device.device_type();
        self.device = Box::new(Released(device_type));
    }

    pub fn let_go(&mut self) {
        self.device.let_go();
    }

    pub fn take_back(&mut self) -> Result<(), String> {
        self.device.take_back()
    }

    /// Why the device cannot be snapshotted, if it cannot.
    pub fn unsaveable(&self) -> Option<&'static str> {
        self.device.unsaveable()
    }

    /// The file the device watches outside the guest's notifications.
    pub fn io_fd(&self) -> Option<RawFd> {
        self.device.io_fd()
    }

    /// Serves what came from outside (see [`Device::serve_io`]); a device
    /// whose driver is not ready waits for it.
    pub fn serve_io(&mut self, memory: &Memory) -> Io {
        if self.status & STATUS_DRIVER_OK == 0 {
            return Io {
                used: false,
                starved: true,
            };
        }
        let index = self.device.io_queue();
        let Some(queue) = self.queues.get_mut(index).filter(|q| q.ready()) else {
            return Io {
                used: false,
                starved: true,
            };
        };
        let io = self.device.serve_io(queue, memory);
        if io.used {
            self.signal(1);
        }
        io
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    /// A driver's read at `offset` in the device's window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.device.read_config(offset - 0x100, data);
            return;
        }
        let queue = self.queues.get(self.queue_select as usize);
        let features = self.device.features() | F_VERSION_1;
        let value: u32 = match offset {
            0x000 => MAGIC,
            0x004 => 2,
            0x008 => self.device.device_type(),
            0x00c => VENDOR,
            0x010 => match self.device_features_select {
                0 => features as u32,
                1 => (features >> 32) as u32,
                _ => 0,
            },
            0x034 => queue.map_or(0, |q| u32::from(q.max_size())),
            0x044 => queue.map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt_status,
            0x070 => self.status,
            0x0fc => 0, // config generation: the config never changes
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A driver's write at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8], memory: &Memory) {
        if offset >= 0x100 {
            self.device.write_config(offset - 0x100, data);
            return;
        }
        if data.len() != 4 {
            return;
        }
        let value = u32::from_le_bytes(data.try_into().expect("4 bytes"));
        match offset {
            0x014 => self.device_features_select = value,
            0x020 => match self.driver_features_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            0x024 => self.driver_features_select = value,
            0x030 => self.queue_select = value,
            0x038 => {
                if let Some(q) = self.queue() {
                    q.set_size(value as u16);
                }
            }
            0x044 => {
                if let Some(q) = self.queue() {
                    q.set_ready(value == 1);
                }
            }
            0x050 => self.notify(value as usize, memory),
            0x064 => self.interrupt_status &= !value,
            0x070 => self.set_status(value),
            0x080 => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            0x084 => self.with_queue(|q| q.set_desc_table_address(None, Some(value))),
            0x090 => self.with_queue(|q| q.set_avail_ring_address(Some(value), None)),
            0x094 => self.with_queue(|q| q.set_avail_ring_address(None, Some(value))),
            0x0a0 => self.with_queue(|q| q.set_used_ring_address(Some(value), None)),
            0x0a4 => self.with_queue(|q| q.set_used_ring_address(None, Some(value))),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.queue() {
            f(q);
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            // Reset.
            self.status = 0;
            self.driver_features = 0;
            self.interrupt_status = 0;
            for q in &mut self.queues {
                q.reset();
            }
            return;
        }
        let offered = self.device.features() | F_VERSION_1;
        if value & STATUS_FEATURES_OK != 0
            && (self.driver_features & !offered != 0 || self.driver_features & F_VERSION_1 == 0)
        {
            // Features the device does not have, or a legacy driver.
            self.status = value & !STATUS_FEATURES_OK | STATUS_FAILED;
            return;
        }
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            self.device.ack_features(self.driver_features);
        }
        self.status = value;
    }

    fn notify(&mut self, index: usize, memory: &Memory) {
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        if !queue.ready() || !queue.is_valid(memory) {
            return;
        }
        if self.device.serve(index, queue, memory) {
            // "Used buffer" (the driver may also poll the used ring).
            self.signal(1);
        }
    }
}

/// What a released device becomes: nothing.
struct Released(u32);

impl Device for Released {
    fn device_type(&self) -> u32 {
        self.0
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_sizes(&self) -> Vec<u16> {
        Vec::new()
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn serve(&mut self, _index: usize, _queue: &mut Queue, _memory: &Memory) -> bool {
        false
    }
}
