//! The devices on the VM's I/O port bus: a 16550 serial console, the i8042
//! (only its reset line, which powers the VM off, as Firecracker's), and
//! pvpanic (a guest that panics says so). Ports no device claims read as
//! all ones and ignore writes, as on a PC.

pub mod virtio;

use std::io::Write;
use std::sync::Mutex;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

pub const SERIAL_PORT: u16 = 0x3f8;
pub const I8042_DATA: u16 = 0x60;
pub const I8042_COMMAND: u16 = 0x64;
pub const PVPANIC_PORT: u16 = 0x505;

/// What a device asks of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The guest powered off (i8042 reset).
    PowerOff,
    /// The guest says it panicked (pvpanic).
    Panic,
}

/// The serial port's interrupt line (GSI 4, as on a PC).
pub const SERIAL_GSI: u32 = 4;
/// The event device (ACPI's Generic Event Device): one byte of pending
/// events at this address, cleared as it is read; its line is
/// [`EVENT_GSI`]. Event 1 is the power button.
pub const EVENT_BASE: u64 = 0xfeb0_0000;
pub const EVENT_GSI: u32 = 23;
pub const EVENT_POWER_BUTTON: u8 = 1;
/// The first virtio device's interrupt line; the next ones follow.
pub const VIRTIO_GSI: u32 = 5;

/// An interrupt line: an eventfd KVM turns into an edge on a GSI (an
/// irqfd) once [`Devices::connect_interrupts`] has registered it.
pub struct Interrupt(EventFd);

impl Interrupt {
    fn new() -> Interrupt {
        Interrupt(
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .expect("an eventfd (the kernel has them since 2.6.27)"),
        )
    }

    /// Raises the line (a guest with the line masked, or a VM without an
    /// irqchip, sees nothing: it polls).
    pub fn raise(&self) {
        let _ = self.0.write(1);
    }
}

impl Trigger for Interrupt {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.raise();
        Ok(())
    }
}

/// Where the console's bytes go.
pub type Console = Box<dyn Write + Send>;

pub struct Devices {
    serial: Mutex<Serial<Interrupt, NoEvents, Console>>,
    /// virtio devices, one MMIO window each from `virtio::MMIO_BASE`.
    virtio: Vec<Mutex<virtio::mmio::Transport>>,
    /// Written when the guest notifies or sets up a device with an I/O
    /// file: the I/O thread watches its file again.
    pub wake: EventFd,
    /// The event device's pending events and line.
    events: Mutex<u8>,
    event_line: Interrupt,
}

impl Devices {
    pub fn new(console: Console) -> Devices {
        Devices::with_virtio(console, Vec::new())
    }

    pub fn with_virtio(console: Console, devices: Vec<Box<dyn virtio::Device>>) -> Devices {
        Devices {
            serial: Mutex::new(Serial::new(Interrupt::new(), console)),
            virtio: devices
                .into_iter()
                .map(|d| Mutex::new(virtio::mmio::Transport::new(d, Interrupt::new())))
                .collect(),
            wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .expect("an eventfd (the kernel has them since 2.6.27)"),
            events: Mutex::new(0),
            event_line: Interrupt::new(),
        }
    }

    /// Presses the power button: the guest sees event 1 on the event
    /// device and its interrupt (a guest that ignores it goes on).
    pub fn power_button(&self) {
        *self
            .events
            .lock()
            .expect("the event lock is never poisoned") |= EVENT_POWER_BUTTON;
        self.event_line.raise();
    }

    /// Wires each device's interrupt line to its GSI in KVM's irqchip
    /// (the serial port at 4, virtio device `i` at 5 + `i`).
    pub fn connect_interrupts(&self, fd: &kvm_ioctls::VmFd) -> crate::error::Result<()> {
        let serial = self
            .serial
            .lock()
            .expect("the serial lock is never poisoned");
        fd.register_irqfd(&serial.interrupt_evt().0, SERIAL_GSI)
            .map_err(crate::error::Error::kvm(
                "connect the serial port's interrupt",
            ))?;
        fd.register_irqfd(&self.event_line.0, EVENT_GSI)
            .map_err(crate::error::Error::kvm(
                "connect the event device's interrupt",
            ))?;
        for (i, device) in self.virtio.iter().enumerate() {
            let device = device.lock().expect("a device lock is never poisoned");
            fd.register_irqfd(&device.interrupt().0, VIRTIO_GSI + i as u32)
                .map_err(crate::error::Error::kvm(
                    "connect a virtio device's interrupt",
                ))?;
        }
        Ok(())
    }

    /// Tells the driver of the first device of `device_type` that its
    /// configuration changed (a balloon's new target).
    pub fn config_changed(&self, device_type: u32) {
        for device in &self.virtio {
            let mut device = device.lock().expect("a device lock is never poisoned");
            if device.device_type() == device_type {
                device.config_changed();
                return;
            }
        }
    }

    /// Each virtio device's state, for a snapshot; or why the VM cannot
    /// be snapshotted.
    pub fn save(&self) -> Result<Vec<virtio::mmio::State>, &'static str> {
        self.virtio
            .iter()
            .map(|d| {
                let d = d.lock().expect("a device lock is never poisoned");
                match d.unsaveable() {
                    Some(why) => Err(why),
                    None => Ok(d.save()),
                }
            })
            .collect()
    }

    /// Lets go of what a migration hands over (the disks' locks).
    pub fn let_go(&self) {
        for device in &self.virtio {
            device
                .lock()
                .expect("a device lock is never poisoned")
                .let_go();
        }
    }

    /// Takes back what [`Devices::let_go`] let go.
    pub fn take_back(&self) -> Result<(), String> {
        for device in &self.virtio {
            device
                .lock()
                .expect("a device lock is never poisoned")
                .take_back()?;
        }
        Ok(())
    }

    /// Puts back the devices' states (the same devices, in order).
    pub fn restore(&self, states: &[virtio::mmio::State]) -> Result<(), String> {
        if states.len() != self.virtio.len() {
            return Err(format!(
                "{} saved devices for {}",
                states.len(),
                self.virtio.len()
            ));
        }
        for (device, state) in self.virtio.iter().zip(states) {
            device
                .lock()
                .expect("a device lock is never poisoned")
                .restore(state)?;
        }
        Ok(())
    }

    /// The devices with an I/O file: (index, file).
    pub fn io_fds(&self) -> Vec<(usize, std::os::fd::RawFd)> {
        self.virtio
            .iter()
            .enumerate()
            .filter_map(|(i, d)| Some((i, d.lock().expect("a device lock").io_fd()?)))
            .collect()
    }

    /// Serves device `index`'s I/O file (see [`virtio::Device::serve_io`]).
    pub fn serve_io(&self, index: usize, memory: &crate::memory::Memory) -> virtio::Io {
        match self.virtio.get(index) {
            Some(device) => device
                .lock()
                .expect("a device lock is never poisoned")
                .serve_io(memory),
            None => virtio::Io::default(),
        }
    }

    pub fn virtio_count(&self) -> usize {
        self.virtio.len()
    }

    fn window(&self, address: u64) -> Option<(&Mutex<virtio::mmio::Transport>, u64)> {
        let offset = address.checked_sub(virtio::MMIO_BASE)?;
        let device = self.virtio.get((offset / virtio::MMIO_SIZE) as usize)?;
        Some((device, offset % virtio::MMIO_SIZE))
    }

    /// A guest's read from device memory (all ones where no device is).
    pub fn mmio_read(&self, address: u64, data: &mut [u8]) {
        if address == EVENT_BASE && !data.is_empty() {
            let mut events = self
                .events
                .lock()
                .expect("the event lock is never poisoned");
            data.fill(0);
            data[0] = std::mem::take(&mut *events);
            return;
        }
        match self.window(address) {
            Some((device, offset)) => device
                .lock()
                .expect("a device lock is never poisoned")
                .read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A guest's write to device memory.
    pub fn mmio_write(&self, address: u64, data: &[u8], memory: &crate::memory::Memory) {
        if let Some((device, offset)) = self.window(address) {
            let mut device = device.lock().expect("a device lock is never poisoned");
            device.write(offset, data, memory);
            // A notification or a status change: new buffers, or a driver
            // now ready.
            if matches!(offset, 0x050 | 0x070) && device.io_fd().is_some() {
                let _ = self.wake.write(1);
            }
        }
    }

    /// A guest's `in` from `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        data.fill(0xff);
        match port {
            p if (SERIAL_PORT..SERIAL_PORT + 8).contains(&p) && data.len() == 1 => {
                data[0] = self
                    .serial
                    .lock()
                    .expect("the serial lock is never poisoned")
                    .read((p - SERIAL_PORT) as u8);
            }
            // i8042 status: nothing to read, ready for a command.
            I8042_COMMAND | I8042_DATA => data.fill(0),
            // pvpanic: "panicked" is the one event it reports.
            PVPANIC_PORT => data.fill(0),
            _ => {}
        }
        if port == PVPANIC_PORT && !data.is_empty() {
            data[0] = 1;
        }
    }

    /// A guest's `out` to `port`.
    pub fn write(&self, port: u16, data: &[u8]) -> Option<Request> {
        let value = *data.first()?;
        match port {
            p if (SERIAL_PORT..SERIAL_PORT + 8).contains(&p) => {
                let mut serial = self
                    .serial
                    .lock()
                    .expect("the serial lock is never poisoned");
                // A console that cannot be written (a full disk, a closed
                // terminal) does not stop the guest.
                let _ = serial.write((p - SERIAL_PORT) as u8, value);
                if p == SERIAL_PORT {
                    let _ = serial.writer_mut().flush();
                }
                None
            }
            I8042_COMMAND if value == 0xfe => Some(Request::PowerOff),
            // ACPI's sleep control register: SLP_EN with the S5 type
            // (`_S5_`) is soft-off; the reset register ends the VM too.
            crate::acpi::SLEEP_CONTROL_PORT
                if value & 0x20 != 0 && (value >> 2) & 7 == crate::acpi::S5_TYPE =>
            {
                Some(Request::PowerOff)
            }
            crate::acpi::RESET_PORT if value == crate::acpi::RESET_VALUE => Some(Request::PowerOff),
            PVPANIC_PORT if value & 1 != 0 => Some(Request::Panic),
            _ => None,
        }
    }

    /// Bytes typed at the console for the guest: as many as the serial
    /// port's receive FIFO takes now (it raises its interrupt).
    pub fn input(&self, bytes: &[u8]) -> usize {
        self.serial
            .lock()
            .expect("the serial lock is never poisoned")
            .enqueue_raw_bytes(bytes)
            .unwrap_or(0)
    }

    /// Lets go of what the devices hold on the host (files, locks, taps,
    /// sockets) once the VM has ended, and flushes the console.
    pub fn release(&self) {
        for device in &self.virtio {
            device
                .lock()
                .expect("a device lock is never poisoned")
                .release();
        }
        self.flush();
    }

    /// Flushes the console.
    pub fn flush(&self) {
        let _ = self
            .serial
            .lock()
            .expect("the serial lock is never poisoned")
            .writer_mut()
            .flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn serial_bytes_reach_the_console_and_the_reset_line_powers_off() {
        let console = Shared::default();
        let devices = Devices::new(Box::new(console.clone()));
        for b in b"hi\n" {
            assert_eq!(devices.write(SERIAL_PORT, &[*b]), None);
        }
        assert_eq!(&console.0.lock().unwrap()[..], b"hi\n");
        // The line status register says the transmitter is empty.
        let mut lsr = [0u8];
        devices.read(SERIAL_PORT + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        assert_eq!(
            devices.write(I8042_COMMAND, &[0xfe]),
            Some(Request::PowerOff)
        );
        assert_eq!(devices.write(I8042_COMMAND, &[0x20]), None);
        assert_eq!(devices.write(PVPANIC_PORT, &[1]), Some(Request::Panic));
        // ACPI: S5 through the sleep control register, and the reset.
        assert_eq!(
            devices.write(0x3c0, &[(5 << 2) | 0x20]),
            Some(Request::PowerOff)
        );
        assert_eq!(devices.write(0x3c0, &[5 << 2]), None);
        assert_eq!(devices.write(0x3c0, &[(3 << 2) | 0x20]), None);
        assert_eq!(devices.write(0x3c2, &[1]), Some(Request::PowerOff));
        let mut nothing = [0u8; 2];
        devices.read(0x1234, &mut nothing);
        assert_eq!(nothing, [0xff, 0xff]);
    }
}
