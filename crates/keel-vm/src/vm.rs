//! A VM: KVM's VM and vCPU fds, guest memory and devices, run with one
//! thread per vCPU until the guest powers off, panics, crashes or is
//! stopped from outside. While it runs, a [`Controller`] (from any
//! thread) pauses and resumes it, snapshots it ([`crate::snapshot`]) and
//! stops it.

use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::boot;
use crate::devices::{Console, Devices, Request};
use crate::error::{Error, Result};
use crate::memory::{self, Memory};
use crate::snapshot::{self, VcpuState};

/// What to boot and with what.
#[derive(Debug, Clone)]
pub struct Config {
    pub vcpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// A guest in keel's own format (see [`crate::boot`]).
    pub kernel: PathBuf,
    pub cmdline: String,
    /// Disks (virtio-blk), in the order the guest finds them.
    pub disks: Vec<Disk>,
    /// A virtio-balloon device (after the disks), for `update --memory-target`.
    pub balloon: bool,
    /// A virtio-rng device (after the balloon).
    pub rng: bool,
    /// NICs (virtio-net, after the disks), each on a tap device.
    pub nets: Vec<Nic>,
    /// A virtio-vsock device (after the NIC).
    pub vsock: Option<VsockConfig>,
    /// An initrd, for a Linux kernel.
    pub initrd: Option<PathBuf>,
    /// Host directories shared with the guest (virtio-9p, after the rest;
    /// a VM with one cannot be snapshotted).
    pub shares: Vec<Share>,
}

impl Config {
    /// How many virtio-mmio devices the VM gets (one window each, from
    /// [`crate::devices::virtio::MMIO_BASE`]).
    pub fn device_count(&self) -> usize {
        self.disks.len()
            + self.nets.len()
            + usize::from(self.vsock.is_some())
            + usize::from(self.balloon)
            + usize::from(self.rng)
            + self.shares.len()
    }
}

/// A host directory a guest mounts with `mount -t 9p -o trans=virtio TAG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: PathBuf,
}

/// A VM's vsock: its context id, and the unix socket host programs use
/// (see [`crate::devices::virtio::vsock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u64,
    pub path: PathBuf,
}

/// A VM's network interface: the tap its frames go through, its MAC.
#[derive(Debug, Clone)]
pub struct Nic {
    pub tap: Arc<std::os::fd::OwnedFd>,
    pub mac: [u8; 6],
    /// The network it is on and its address there (kept in snapshots, so
    /// a restore joins the same network at the same address).
    pub network: String,
    pub ipv4: Option<std::net::IpAddr>,
}

/// A raw disk image attached to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub read_only: bool,
}

/// How a VM's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest powered off.
    PowerOff,
    /// The guest said it panicked (pvpanic).
    Panic,
    /// The guest took an exception it could not handle (the CPU shut down).
    TripleFault,
    /// Stopped from outside ([`Controller::stop`]).
    Stopped,
    /// Stopped after a snapshot (`snapshot --stop`).
    Snapshotted,
    /// Moved to another host (the receiver's address).
    Migrated(String),
    /// KVM could not go on with the guest; what it said.
    Failed(String),
}

impl Ending {
    /// A word for `keel vm ls` and the like.
    pub fn reason(&self) -> String {
        match self {
            Ending::PowerOff => "powered off".into(),
            Ending::Panic => "guest panicked".into(),
            Ending::TripleFault => "triple fault".into(),
            Ending::Stopped => "stopped".into(),
            Ending::Snapshotted => "stopped after a snapshot".into(),
            Ending::Migrated(to) => format!("migrated to {to}"),
            Ending::Failed(why) => why.clone(),
        }
    }
}

/// What the vCPU threads and the controller share, under one lock.
#[derive(Default)]
struct State {
    ending: Option<Ending>,
    /// The vCPUs are to stop at their next exit and wait.
    pause: bool,
    /// How many are stopped (paused, or halted with nothing to wake them).
    parked: usize,
    /// A snapshot wants each parked vCPU's state here.
    save: Option<Vec<Option<Result<VcpuState, String>>>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// The vCPU threads, to kick out of KVM_RUN.
    threads: Mutex<Vec<libc::pthread_t>>,
    vcpus: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the VM state lock is never poisoned")
    }

    /// Records the first ending; later ones are dropped.
    fn end(&self, ending: Ending) {
        let mut state = self.lock();
        if state.ending.is_none() {
            state.ending = Some(ending);
            self.changed.notify_all();
        }
    }

    fn kick_all(&self) {
        for &thread in self
            .threads
            .lock()
            .expect("the thread list lock is never poisoned")
            .iter()
        {
            // SAFETY: signalling a vCPU thread of ours; the list is
            // emptied before the threads are joined.
            unsafe { libc::pthread_kill(thread, kick_signal()) };
        }
    }

    /// Waits (kicking the vCPUs meanwhile: a kick just before a thread
    /// enters KVM_RUN is lost) until `done` holds or `timeout` passes.
    fn wait_kicking(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&State) -> bool,
    ) -> Option<MutexGuard<'_, State>> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&state) {
                return Some(state);
            }
            if Instant::now() >= deadline {
                return None;
            }
            drop(state);
            self.kick_all();
            state = self.lock();
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(2))
                .expect("the VM state lock is never poisoned")
                .0;
        }
    }
}

/// Controls a running VM from another thread (a signal's, a control
/// socket's).
#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
    memory: Memory,
    meta: snapshot::Meta,
    fd: Arc<VmFd>,
    /// Its devices (virtio ones, whose state a snapshot does not carry
    /// yet, refuse snapshots).
    devices: Arc<Devices>,
    balloon: Option<Arc<crate::devices::virtio::balloon::Control>>,
}

impl Controller {
    pub fn stop(&self) {
        self.shared.end(Ending::Stopped);
    }

    /// Asks the guest to power off (the power button of ACPI's event
    /// device); it may take its time, or ignore it.
    pub fn power_button(&self) -> Result<()> {
        if self.shared.lock().ending.is_some() {
            return Err(Error::invalid("the VM is not running"));
        }
        self.devices.power_button();
        Ok(())
    }

    /// Stops every vCPU at its next exit; returns once all have.
    pub fn pause(&self) -> Result<()> {
        {
            let mut state = self.shared.lock();
            if state.ending.is_some() {
                return Err(Error::invalid("the VM is not running"));
            }
            state.pause = true;
        }
        let vcpus = self.shared.vcpus;
        match self.shared.wait_kicking(Duration::from_secs(5), |s| {
            s.parked == vcpus || s.ending.is_some()
        }) {
            Some(state) if state.ending.is_none() => Ok(()),
            Some(_) => Err(Error::invalid("the VM ended")),
            None => {
                self.resume();
                Err(Error::Msg("the vCPUs did not stop within 5 seconds".into()))
            }
        }
    }

    pub fn resume(&self) {
        let mut state = self.shared.lock();
        state.pause = false;
        self.shared.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.shared.lock().pause
    }

    /// Writes a snapshot of the VM to `dir` (which must not exist): the
    /// VM is paused for it and then resumed, or ended with `stop`.
    pub fn snapshot(&self, dir: &std::path::Path, stop: bool) -> Result<()> {
        self.refuse_devices("snapshotted")?;
        let was_paused = self.is_paused();
        if !was_paused {
            self.pause()?;
        }
        let result = self.snapshot_paused(dir);
        if stop && result.is_ok() {
            self.shared.end(Ending::Snapshotted);
        }
        if !was_paused {
            self.resume();
        }
        result
    }

    /// Moves the VM to the receiver at `address` (see [`crate::migrate`]).
    /// On success the VM here stays paused: the caller reports, then ends
    /// it with [`Controller::end_migrated`]. On failure it goes on as it
    /// was.
    pub fn migrate(&self, address: &str) -> Result<crate::migrate::Report> {
        if self.shared.lock().ending.is_some() {
            return Err(Error::invalid("the VM is not running"));
        }
        self.refuse_devices("migrated")?;
        crate::migrate::send(self, address)
    }

    /// Refuses what the VM's devices do not allow (none does today: the
    /// check stays for a device that cannot be carried over).
    fn refuse_devices(&self, what: &str) -> Result<()> {
        if let Err(why) = self.devices.save() {
            return Err(Error::invalid(format!("the VM cannot be {what}: {why}")));
        }
        Ok(())
    }

    /// Asks the guest (through its balloon) to keep `target` bytes of its
    /// memory and give the rest back to the host.
    pub fn set_memory_target(&self, target: u64) -> Result<()> {
        let balloon = self
            .balloon
            .as_ref()
            .ok_or_else(|| Error::invalid("the VM has no balloon (start it with --balloon)"))?;
        let pages = self.meta.memory.saturating_sub(target) / 4096;
        let pages = u32::try_from(pages)
            .map_err(|_| Error::invalid("a memory target that far below the VM's memory"))?;
        balloon
            .target_pages
            .store(pages, std::sync::atomic::Ordering::SeqCst);
        // A driver waiting on its interrupt rereads the target.
        self.devices.config_changed(5);
        Ok(())
    }

    /// The balloon's (target, given by the guest, released by the host)
    /// in pages, if the VM has one.
    pub fn balloon_pages(&self) -> Option<(u32, u32, u32)> {
        use std::sync::atomic::Ordering::SeqCst;
        self.balloon.as_ref().map(|b| {
            (
                b.target_pages.load(SeqCst),
                b.actual_pages.load(SeqCst),
                b.released_pages.load(SeqCst),
            )
        })
    }

    /// Ends a VM that now runs at `address`.
    pub fn end_migrated(&self, address: &str) {
        self.shared.end(Ending::Migrated(address.to_string()));
    }

    fn snapshot_paused(&self, dir: &std::path::Path) -> Result<()> {
        snapshot::write(dir, &self.meta, &self.saved()?, &self.memory)
    }

    /// The paused VM's vCPUs and interrupt controllers.
    fn saved(&self) -> Result<snapshot::Saved> {
        Ok(snapshot::Saved {
            vcpus: self.save_states()?,
            chips: snapshot::get_chips(&self.fd)?,
            devices: self
                .devices
                .save()
                .map_err(|why| Error::invalid(format!("the VM cannot be saved: {why}")))?,
        })
    }

    /// Each (parked) vCPU's state, read by its own thread.
    fn save_states(&self) -> Result<Vec<VcpuState>> {
        let vcpus = self.shared.vcpus;
        {
            let mut state = self.shared.lock();
            state.save = Some((0..vcpus).map(|_| None).collect());
            self.shared.changed.notify_all();
        }
        let state = self.shared.wait_kicking(Duration::from_secs(5), |s| {
            s.save
                .as_ref()
                .is_some_and(|saved| saved.iter().all(Option::is_some))
                || s.ending.is_some()
        });
        let saved = match state {
            Some(mut state) => state.save.take(),
            None => {
                self.shared.lock().save = None;
                return Err(Error::Msg(
                    "the vCPUs did not give their state within 5 seconds".into(),
                ));
            }
        };
        let Some(saved) = saved.filter(|s| s.iter().all(Option::is_some)) else {
            return Err(Error::invalid("the VM ended during the snapshot"));
        };
        let vcpus = saved
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.expect("every vCPU saved")
                    .map_err(|e| Error::Msg(format!("read vCPU {i}'s state: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(vcpus)
    }
}

impl crate::migrate::Source for Controller {
    fn meta(&self) -> snapshot::Meta {
        self.meta.clone()
    }

    fn memory(&self) -> &Memory {
        &self.memory
    }

    fn start_dirty_log(&self) -> bool {
        memory::log_dirty_pages(&self.fd, &self.memory).is_ok()
            && memory::dirty_pages(&self.fd, &self.memory).is_ok()
    }

    fn dirty_pages(&self) -> Result<Vec<u64>> {
        memory::dirty_pages(&self.fd, &self.memory)
    }

    fn pause(&self) -> Result<()> {
        Controller::pause(self)
    }

    fn resume(&self) {
        Controller::resume(self)
    }

    fn saved_state(&self) -> Result<snapshot::Saved> {
        self.saved()
    }

    fn let_go(&self) {
        self.devices.let_go();
    }

    fn take_back(&self) -> Result<()> {
        self.devices.take_back().map_err(Error::Msg)
    }
}

pub struct Vm {
    _kvm: Kvm,
    fd: Arc<VmFd>,
    memory: Memory,
    vcpus: Vec<VcpuFd>,
    devices: Arc<Devices>,
    shared: Arc<Shared>,
    meta: snapshot::Meta,
    balloon: Option<Arc<crate::devices::virtio::balloon::Control>>,
}

/// Opens /dev/kvm, with the error a user can act on.
pub fn open_kvm() -> Result<Kvm> {
    Kvm::new().map_err(|e| {
        let why = match e.errno() {
            libc::ENOENT => {
                "there is no /dev/kvm (load the kvm module, or run where virtualization is offered)"
                    .to_string()
            }
            libc::EACCES | libc::EPERM => "/dev/kvm is not open to this user".to_string(),
            _ => format!("/dev/kvm: {e}"),
        };
        Error::NoKvm(format!("cannot run VMs here: {why}"))
    })
}

/// What a new VM is made of before its guest is loaded.
struct Parts {
    kvm: Kvm,
    fd: VmFd,
    vcpus: Vec<VcpuFd>,
}

/// Whether KVM and the boot format allow `vcpus` and `memory` bytes
/// (`linux`: a Linux kernel, which sets its own page tables and starts
/// its own CPUs).
fn check_size(vcpus: u32, memory: u64, linux: bool, kvm: &Kvm) -> Result<()> {
    let max_vcpus = kvm.get_max_vcpus() as u32;
    if vcpus == 0 || vcpus > max_vcpus {
        return Err(Error::invalid(format!(
            "{vcpus} vCPUs: KVM here allows 1 to {max_vcpus}"
        )));
    }
    if vcpus > 32 && !linux {
        return Err(Error::invalid(format!(
            "{vcpus} vCPUs: keel's guest format starts at most 32"
        )));
    }
    if vcpus > 254 {
        return Err(Error::invalid(format!(
            "{vcpus} vCPUs: keel describes at most 254 (one APIC id each)"
        )));
    }
    if memory < 4 << 20 {
        return Err(Error::invalid(format!(
            "{memory} bytes of memory: a VM needs at least 4 MiB"
        )));
    }
    if memory > boot::MAX_MEMORY && !linux {
        return Err(Error::invalid(format!(
            "{} MiB of memory: keel's guest format maps at most {} GiB",
            memory >> 20,
            boot::MAX_MEMORY >> 30
        )));
    }
    Ok(())
}

/// A VM fd with `memory` registered and `vcpus` vCPUs carrying CPUID.
fn make(kvm: Kvm, memory: &Memory, vcpus: u32) -> Result<Parts> {
    let fd = kvm.create_vm().map_err(Error::kvm("create a VM"))?;
    memory::register(&fd, memory)?;
    // KVM's interrupt controllers (PICs, I/O APIC, a local APIC per vCPU)
    // and PIT, as on a PC: devices raise GSIs through irqfds, and a
    // halted vCPU sleeps in KVM until an interrupt wakes it.
    fd.create_irq_chip()
        .map_err(Error::kvm("create the interrupt controllers"))?;
    let pit = kvm_bindings::kvm_pit_config {
        flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    fd.create_pit2(pit).map_err(Error::kvm("create the PIT"))?;
    // Intel's VMX needs a TSS area below 4 GiB outside RAM; harmless
    // elsewhere.
    let _ = fd.set_tss_address(0xfffb_d000);
    let cpuid = supported_cpuid(&kvm)?;
    let mut fds = Vec::new();
    for index in 0..vcpus {
        let vcpu = fd
            .create_vcpu(u64::from(index))
            .map_err(Error::kvm(format!("create vCPU {index}")))?;
        let mut cpuid = cpuid.clone();
        for entry in cpuid.as_mut_slice() {
            match entry.function {
                // The initial APIC id.
                1 => entry.ebx = (entry.ebx & 0x00ff_ffff) | (index << 24),
                0xb | 0x1f => entry.edx = index,
                _ => {}
            }
        }
        vcpu.set_cpuid2(&cpuid)
            .map_err(Error::kvm(format!("set vCPU {index}'s CPUID")))?;
        fds.push(vcpu);
    }
    Ok(Parts {
        kvm,
        fd,
        vcpus: fds,
    })
}

pub(crate) fn supported_cpuid(kvm: &Kvm) -> Result<kvm_bindings::CpuId> {
    kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("read the CPUID KVM supports"))
}

impl Vm {
    /// Makes the VM: memory, the guest loaded, vCPUs set at its entry.
    pub fn create(config: &Config, console: Console) -> Result<Vm> {
        let kvm = open_kvm()?;
        let image = std::fs::read(&config.kernel)
            .map_err(Error::path("read the kernel", &config.kernel))?;
        let disks = config
            .disks
            .iter()
            .map(|d| {
                crate::devices::virtio::blk::Block::open(&d.path, d.read_only)
                    .map(|b| Box::new(b) as Box<dyn crate::devices::virtio::Device>)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut devices = disks;
        for nic in &config.nets {
            let tap = nic
                .tap
                .try_clone()
                .and_then(|tap| crate::devices::virtio::net::Net::new(tap, nic.mac))
                .map_err(|e| Error::Io {
                    what: "take the tap device".into(),
                    source: e,
                })?;
            devices.push(Box::new(tap));
        }
        if let Some(vsock) = &config.vsock {
            devices.push(Box::new(crate::devices::virtio::vsock::Vsock::new(
                vsock.cid,
                &vsock.path,
            )?));
        }
        let mut balloon = None;
        if config.balloon {
            let (device, control) = crate::devices::virtio::balloon::Balloon::new();
            devices.push(Box::new(device));
            balloon = Some(control);
        }
        if config.rng {
            devices.push(Box::new(crate::devices::virtio::rng::Rng));
        }
        for share in &config.shares {
            devices.push(Box::new(crate::devices::virtio::p9::P9::new(
                &share.tag,
                &share.path,
            )?));
        }
        let linux = crate::linux::is_linux(&image);
        check_size(config.vcpus, config.memory, linux, &kvm)?;
        let initrd = match &config.initrd {
            Some(_) if !linux => {
                return Err(Error::invalid(format!(
                    "an initrd goes with a Linux kernel; {} is in keel's own guest format",
                    config.kernel.display()
                )));
            }
            Some(path) => Some(std::fs::read(path).map_err(Error::path("read the initrd", path))?),
            None => None,
        };
        let memory = memory::create(config.memory)?;
        let what = config.kernel.display().to_string();
        let entry = if linux {
            let windows: Vec<crate::acpi::MmioDevice> = (0..devices.len())
                .map(|i| crate::acpi::MmioDevice {
                    base: crate::devices::virtio::MMIO_BASE
                        + i as u64 * crate::devices::virtio::MMIO_SIZE,
                    size: crate::devices::virtio::MMIO_SIZE,
                    gsi: crate::devices::VIRTIO_GSI + i as u32,
                })
                .collect();
            let entry = crate::linux::load(
                &memory,
                &image,
                initrd.as_deref(),
                &config.cmdline,
                config.vcpus,
                &windows,
                &what,
            )?;
            boot::write_low_page_tables(&memory)?;
            entry
        } else {
            let entry = boot::load_elf(&memory, &image, &what)?;
            boot::write_page_tables(&memory)?;
            boot::write_boot_info(&memory, config.vcpus, &config.cmdline, devices.len() as u32)?;
            entry
        };
        boot::write_gdt(&memory)?;
        let mut meta = snapshot::Meta::new(&kvm, config.vcpus, &memory, &config.cmdline)?;
        meta.devices = config
            .disks
            .iter()
            .map(|d| snapshot::DeviceSpec::Disk {
                path: d.path.clone(),
                read_only: d.read_only,
            })
            .chain(config.nets.iter().map(|n| snapshot::DeviceSpec::Net {
                network: n.network.clone(),
                ipv4: n.ipv4,
                mac: n.mac,
            }))
            .chain(
                config
                    .vsock
                    .as_ref()
                    .map(|v| snapshot::DeviceSpec::Vsock { cid: v.cid }),
            )
            .chain(config.balloon.then_some(snapshot::DeviceSpec::Balloon))
            .chain(config.rng.then_some(snapshot::DeviceSpec::Rng))
            .collect();
        let parts = make(kvm, &memory, config.vcpus)?;
        for (index, vcpu) in parts.vcpus.iter().enumerate() {
            if linux {
                // The boot vCPU at the kernel's 64-bit entry; the others
                // wait (KVM's local APIC) for Linux's INIT/SIPI.
                if index == 0 {
                    boot::enter_long_mode(vcpu, entry, 0, crate::linux::ZERO_PAGE)?;
                }
                continue;
            }
            boot::configure_vcpu(vcpu, index as u32, entry)?;
            // Every vCPU runs from the entry at once (with a local APIC,
            // KVM would hold all but the first for an INIT/SIPI).
            vcpu.set_mp_state(kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
            })
            .map_err(Error::kvm(format!("start vCPU {index}")))?;
        }
        let devices = Devices::with_virtio(console, devices);
        devices.connect_interrupts(&parts.fd)?;
        let mut vm = Vm::assemble(parts, memory, devices, meta);
        vm.balloon = balloon;
        Ok(vm)
    }

    /// A VM that goes on from a snapshot (see [`crate::snapshot`]): its
    /// memory mapped from the snapshot's file, copy-on-write, loaded as
    /// the guest touches it.
    pub fn restore(dir: &std::path::Path, console: Console) -> Result<Vm> {
        Vm::restore_with(dir, console, None, None)
    }

    /// [`Vm::restore`], the new VM's vsock listening at `vsock`, its NIC
    /// on the tap of `nic` (a snapshot of a VM with either needs it).
    pub fn restore_with(
        dir: &std::path::Path,
        console: Console,
        vsock: Option<&std::path::Path>,
        nic: Option<&Nic>,
    ) -> Result<Vm> {
        let kvm = open_kvm()?;
        let loaded = snapshot::read(dir, &kvm)?;
        check_size(loaded.meta.vcpus, loaded.meta.memory, true, &kvm)?;
        // The devices again (disks reopened at their paths), before
        // anything of KVM's.
        let mut virtio: Vec<Box<dyn crate::devices::virtio::Device>> = Vec::new();
        let mut balloon = None;
        for device in &loaded.meta.devices {
            match device {
                snapshot::DeviceSpec::Disk { path, read_only } => virtio.push(Box::new(
                    crate::devices::virtio::blk::Block::open(path, *read_only)?,
                )),
                snapshot::DeviceSpec::Balloon => {
                    let (device, control) = crate::devices::virtio::balloon::Balloon::new();
                    virtio.push(Box::new(device));
                    balloon = Some(control);
                }
                snapshot::DeviceSpec::Rng => {
                    virtio.push(Box::new(crate::devices::virtio::rng::Rng))
                }
                snapshot::DeviceSpec::Net { mac, .. } => {
                    let nic = nic.ok_or_else(|| {
                        Error::invalid(format!(
                            "{} is of a VM with a NIC: the restored one needs a tap",
                            dir.display()
                        ))
                    })?;
                    let tap = nic
                        .tap
                        .try_clone()
                        .and_then(|tap| crate::devices::virtio::net::Net::new(tap, *mac))
                        .map_err(|e| Error::Io {
                            what: "take the tap device".into(),
                            source: e,
                        })?;
                    virtio.push(Box::new(tap));
                }
                snapshot::DeviceSpec::Vsock { cid } => {
                    let path = vsock.ok_or_else(|| {
                        Error::invalid(format!(
                            "{} is of a VM with vsock: the restored one needs a socket path",
                            dir.display()
                        ))
                    })?;
                    virtio.push(Box::new(crate::devices::virtio::vsock::Vsock::new(
                        *cid, path,
                    )?));
                }
            }
        }
        let devices = Devices::with_virtio(console, virtio);
        devices
            .restore(&loaded.saved.devices)
            .map_err(|e| Error::invalid(format!("{} cannot be restored: {e}", dir.display())))?;
        let parts = make(kvm, &loaded.memory, loaded.meta.vcpus)?;
        snapshot::set_chips(&parts.fd, &loaded.saved.chips)?;
        for (index, (vcpu, state)) in parts.vcpus.iter().zip(&loaded.saved.vcpus).enumerate() {
            snapshot::set_vcpu(vcpu, state)
                .map_err(|e| Error::Msg(format!("restore vCPU {index}: {e}")))?;
        }
        devices.connect_interrupts(&parts.fd)?;
        let mut vm = Vm::assemble(parts, loaded.memory, devices, loaded.meta);
        vm.balloon = balloon;
        Ok(vm)
    }

    fn assemble(parts: Parts, memory: Memory, devices: Devices, meta: snapshot::Meta) -> Vm {
        let vcpus = parts.vcpus.len();
        Vm {
            _kvm: parts.kvm,
            fd: Arc::new(parts.fd),
            memory,
            vcpus: parts.vcpus,
            devices: Arc::new(devices),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                threads: Mutex::new(Vec::new()),
                vcpus,
            }),
            meta,
            balloon: None,
        }
    }

    pub fn controller(&self) -> Controller {
        Controller {
            shared: self.shared.clone(),
            memory: self.memory.clone(),
            meta: self.meta.clone(),
            fd: self.fd.clone(),
            devices: self.devices.clone(),
            balloon: self.balloon.clone(),
        }
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Lets go of the devices' files, locks, taps and sockets (after
    /// [`Vm::run`]): what is left is KVM's VM, whose teardown takes a
    /// while (its interrupt controllers wait for RCU grace periods).
    pub fn release_devices(&self) {
        self.devices.release();
    }

    /// Feeds what `input` reads to the guest's serial port, from a thread
    /// of its own, until it ends; Ctrl-] (0x1d) stops the VM, as a
    /// console's escape.
    pub fn attach_input(&self, mut input: impl std::io::Read + Send + 'static) -> Result<()> {
        let devices = self.devices.clone();
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                let mut buffer = [0u8; 256];
                loop {
                    let n = match input.read(&mut buffer) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let mut bytes = &buffer[..n];
                    if let Some(escape) = bytes.iter().position(|&b| b == 0x1d) {
                        bytes = &bytes[..escape];
                        feed(&devices, &shared, bytes);
                        shared.end(Ending::Stopped);
                        return;
                    }
                    if !feed(&devices, &shared, bytes) {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Io {
                what: "start the console thread".into(),
                source: e,
            })?;
        Ok(())
    }

    /// Runs the guest until it ends; how it ended.
    pub fn run(&mut self) -> Result<Ending> {
        install_kick_handler()?;
        let mut threads = Vec::new();
        for (index, vcpu) in std::mem::take(&mut self.vcpus).into_iter().enumerate() {
            let devices = self.devices.clone();
            let shared = self.shared.clone();
            let memory = self.memory.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    // An embedding process may block signals for its own
                    // threads; the kick must reach this one.
                    // SAFETY: pthread_sigmask with a set we made.
                    unsafe {
                        let mut kick: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut kick);
                        libc::sigaddset(&mut kick, kick_signal());
                        libc::pthread_sigmask(libc::SIG_UNBLOCK, &kick, std::ptr::null_mut());
                    }
                    run_vcpu(index, vcpu, &memory, &devices, &shared)
                })
                .map_err(|e| Error::Io {
                    what: format!("start vCPU {index}'s thread"),
                    source: e,
                })?;
            self.shared
                .threads
                .lock()
                .expect("the thread list lock is never poisoned")
                .push(thread.as_pthread_t());
            threads.push(thread);
        }
        let quit =
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_CLOEXEC).map_err(|e| Error::Io {
                what: "make an eventfd".into(),
                source: e,
            })?;
        let io = if self.devices.io_fds().is_empty() {
            None
        } else {
            let (devices, shared, memory) = (
                self.devices.clone(),
                self.shared.clone(),
                self.memory.clone(),
            );
            let quit = quit.try_clone().map_err(|e| Error::Io {
                what: "share an eventfd".into(),
                source: e,
            })?;
            Some(
                std::thread::Builder::new()
                    .name("io".into())
                    .spawn(move || run_io(&devices, &memory, &shared, &quit))
                    .map_err(|e| Error::Io {
                        what: "start the I/O thread".into(),
                        source: e,
                    })?,
            )
        };
        let ending = {
            let state = self.shared.lock();
            let state = self
                .shared
                .changed
                .wait_while(state, |s| s.ending.is_none())
                .expect("the VM state lock is never poisoned");
            state.ending.clone().expect("an ending")
        };
        // Every vCPU out of the guest: a signal makes KVM_RUN return; one
        // sent just before a thread enters it is lost, so send until all
        // are out.
        while threads.iter().any(|t| !t.is_finished()) {
            self.shared.kick_all();
            std::thread::sleep(Duration::from_micros(100));
        }
        self.shared
            .threads
            .lock()
            .expect("the thread list lock is never poisoned")
            .clear();
        for thread in threads {
            let _ = thread.join();
        }
        if let Some(io) = io {
            let _ = quit.write(1);
            let _ = io.join();
        }
        self.devices.flush();
        Ok(ending)
    }
}

/// Puts `bytes` into the serial port's FIFO as it empties (a guest reads
/// 16 bytes at a time); false once the VM has ended.
fn feed(devices: &Devices, shared: &Shared, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if shared.lock().ending.is_some() {
            return false;
        }
        let taken = devices.input(bytes);
        bytes = &bytes[taken..];
        if taken == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    true
}

/// The I/O thread: serves what the devices' files bring (frames on a
/// tap, connections) while the VM runs and is not paused. A device with
/// more than the guest has buffers for is not watched until the guest
/// notifies it ([`Devices::wake`]).
fn run_io(
    devices: &Devices,
    memory: &Memory,
    shared: &Shared,
    quit: &vmm_sys_util::eventfd::EventFd,
) {
    use std::os::fd::AsRawFd;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    const WAKE: u64 = u64::MAX;
    const QUIT: u64 = u64::MAX - 1;
    let Ok(epoll) = Epoll::new() else {
        shared.end(Ending::Failed(
            "the I/O thread could not make an epoll".into(),
        ));
        return;
    };
    let fds = devices.io_fds();
    let watch =
        |operation, fd, events, token| epoll.ctl(operation, fd, EpollEvent::new(events, token));
    let mut ok = watch(
        ControlOperation::Add,
        devices.wake.as_raw_fd(),
        EventSet::IN,
        WAKE,
    )
    .is_ok()
        && watch(ControlOperation::Add, quit.as_raw_fd(), EventSet::IN, QUIT).is_ok();
    for &(index, fd) in &fds {
        ok &= watch(ControlOperation::Add, fd, EventSet::IN, index as u64).is_ok();
    }
    if !ok {
        shared.end(Ending::Failed(
            "the I/O thread could not watch the devices".into(),
        ));
        return;
    }
    let mut idle: Vec<usize> = Vec::new();
    let mut events = vec![EpollEvent::default(); fds.len() + 2];
    loop {
        let n = match epoll.wait(100, &mut events) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(_) => return,
        };
        {
            let state = shared.lock();
            if state.ending.is_some() {
                return;
            }
            if state.pause {
                // The guest's memory is not to change: wait (the files
                // stay readable) until it resumes.
                drop(state);
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        }
        for event in &events[..n] {
            match event.data() {
                QUIT => return,
                WAKE => {
                    // The guest gave buffers or sent something: each
                    // device serves what waits and is watched again.
                    let _ = devices.wake.read();
                    for &(index, _) in &fds {
                        devices.serve_io(index, memory);
                    }
                    for index in idle.drain(..) {
                        if let Some(&(_, fd)) = fds.iter().find(|(i, _)| *i == index) {
                            let _ = watch(ControlOperation::Modify, fd, EventSet::IN, index as u64);
                        }
                    }
                }
                token => {
                    let index = token as usize;
                    if devices.serve_io(index, memory).starved && !idle.contains(&index) {
                        if let Some(&(_, fd)) = fds.iter().find(|(i, _)| *i == index) {
                            let _ = watch(ControlOperation::Modify, fd, EventSet::empty(), token);
                        }
                        idle.push(index);
                    }
                }
            }
        }
    }
}

fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int) {}

/// The signal that takes a vCPU thread out of KVM_RUN: a handler that
/// does nothing, without SA_RESTART (so the ioctl returns EINTR).
fn install_kick_handler() -> Result<()> {
    // SAFETY: a sigaction with a handler that touches nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_kick as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(Error::Io {
                what: "install the vCPU signal handler".into(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Waits while the VM is paused (saving this vCPU's state when a snapshot
/// asks) or, for a halted vCPU, until something changes. False when the
/// VM has ended.
fn wait_parked(index: usize, vcpu: &VcpuFd, shared: &Shared, halted: bool) -> bool {
    let mut state = shared.lock();
    if state.ending.is_some() {
        return false;
    }
    if !state.pause && !halted {
        return true;
    }
    state.parked += 1;
    shared.changed.notify_all();
    loop {
        if let Some(save) = state.save.as_mut()
            && save[index].is_none()
        {
            save[index] = Some(snapshot::get_vcpu(vcpu).map_err(|e| e.to_string()));
            shared.changed.notify_all();
        }
        if state.ending.is_some() {
            state.parked -= 1;
            return false;
        }
        if !state.pause && !halted {
            state.parked -= 1;
            return true;
        }
        // A halted vCPU stays parked until the VM ends (no interrupt can
        // wake it), but takes part in pauses and snapshots.
        state = shared
            .changed
            .wait(state)
            .expect("the VM state lock is never poisoned");
    }
}

fn run_vcpu(index: usize, mut vcpu: VcpuFd, memory: &Memory, devices: &Devices, shared: &Shared) {
    let mut halted = false;
    loop {
        if !wait_parked(index, &vcpu, shared, halted) {
            break;
        }
        let ending = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => devices.write(port, data).map(|r| match r {
                Request::PowerOff => Ending::PowerOff,
                Request::Panic => Ending::Panic,
            }),
            Ok(VcpuExit::IoIn(port, data)) => {
                devices.read(port, data);
                None
            }
            Ok(VcpuExit::MmioRead(address, data)) => {
                devices.mmio_read(address, data);
                None
            }
            Ok(VcpuExit::MmioWrite(address, data)) => {
                devices.mmio_write(address, data, memory);
                None
            }
            Ok(VcpuExit::Intr) => None,
            Ok(VcpuExit::Hlt) => {
                halted = true;
                None
            }
            Ok(VcpuExit::Shutdown) => Some(Ending::TripleFault),
            Ok(VcpuExit::SystemEvent(..)) => Some(Ending::PowerOff),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(Ending::Failed(format!(
                "KVM could not enter vCPU {index} (hardware reason {reason:#x}, cpu {cpu})"
            ))),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: after KVM_EXIT_INTERNAL_ERROR the union holds
                // the `internal` member.
                let suberror = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                let code = code_at(&vcpu, memory, rip);
                Some(Ending::Failed(format!(
                    "KVM internal error on vCPU {index} at rip {rip:#x} (code {code}): {}",
                    match suberror {
                        1 => "an instruction KVM could not emulate",
                        2 => "a fault while delivering an event",
                        3 => "an exit KVM does not handle",
                        _ => "see the kernel's KVM_INTERNAL_ERROR codes",
                    }
                )))
            }
            Ok(other) => Some(Ending::Failed(format!(
                "vCPU {index}: unexpected exit from KVM ({other:?})"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(Ending::Failed(format!("vCPU {index}: KVM_RUN: {e}"))),
        };
        if let Some(ending) = ending {
            shared.end(ending);
        }
    }
}

/// The 16 bytes of guest code at `rip`, in hex (found through the
/// guest's page tables): what a report of an instruction KVM could not
/// run shows.
fn code_at(vcpu: &VcpuFd, memory: &Memory, rip: u64) -> String {
    use vm_memory::Bytes;
    let physical = match vcpu.translate_gva(rip) {
        Ok(t) if t.valid != 0 => t.physical_address,
        _ => rip,
    };
    let mut bytes = [0u8; 16];
    match memory.read_slice(&mut bytes, vm_memory::GuestAddress(physical)) {
        Ok(()) => bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "unreadable".into(),
    }
}
