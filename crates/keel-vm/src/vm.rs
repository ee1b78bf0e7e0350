//! A VM: KVM's VM and vCPU fds, guest memory and devices, run with one
//! thread per vCPU until the guest powers off, panics, crashes or is
//! stopped from outside.

use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::boot;
use crate::devices::{Console, Devices, Request};
use crate::error::{Error, Result};
use crate::memory::{self, Memory};

/// What to boot and with what.
#[derive(Debug, Clone)]
pub struct Config {
    pub vcpus: u32,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// A guest in keel's own format (see [`crate::boot`]).
    pub kernel: PathBuf,
    pub cmdline: String,
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
    /// Stopped from outside ([`Stopper::stop`]).
    Stopped,
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
            Ending::Failed(why) => why.clone(),
        }
    }
}

/// What the vCPU threads and the stopper share.
struct Shared {
    ending: Mutex<Option<Ending>>,
    ended: Condvar,
}

impl Shared {
    /// Records the first ending; later ones are dropped.
    fn end(&self, ending: Ending) {
        let mut current = self
            .ending
            .lock()
            .expect("the ending lock is never poisoned");
        if current.is_none() {
            *current = Some(ending);
            self.ended.notify_all();
        }
    }

    fn is_over(&self) -> bool {
        self.ending
            .lock()
            .expect("the ending lock is never poisoned")
            .is_some()
    }
}

/// Stops a running VM from another thread (a signal handler's thread, a
/// control socket's).
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    pub fn stop(&self) {
        self.0.end(Ending::Stopped);
    }
}

pub struct Vm {
    _kvm: Kvm,
    _fd: VmFd,
    memory: Memory,
    vcpus: Vec<VcpuFd>,
    devices: Arc<Devices>,
    shared: Arc<Shared>,
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

impl Vm {
    /// Makes the VM: memory, the guest loaded, vCPUs set at its entry.
    pub fn create(config: &Config, console: Console) -> Result<Vm> {
        let kvm = open_kvm()?;
        let max_vcpus = kvm.get_max_vcpus() as u32;
        if config.vcpus == 0 || config.vcpus > max_vcpus {
            return Err(Error::invalid(format!(
                "{} vCPUs: KVM here allows 1 to {max_vcpus}",
                config.vcpus
            )));
        }
        if config.vcpus > 32 {
            return Err(Error::invalid(format!(
                "{} vCPUs: keel's guest format starts at most 32",
                config.vcpus
            )));
        }
        if config.memory < 4 << 20 {
            return Err(Error::invalid(format!(
                "{} bytes of memory: a VM needs at least 4 MiB",
                config.memory
            )));
        }
        if config.memory > boot::MAX_MEMORY {
            return Err(Error::invalid(format!(
                "{} MiB of memory: keel's guest format maps at most {} GiB",
                config.memory >> 20,
                boot::MAX_MEMORY >> 30
            )));
        }
        let image = std::fs::read(&config.kernel)
            .map_err(Error::path("read the kernel", &config.kernel))?;
        let fd = kvm.create_vm().map_err(Error::kvm("create a VM"))?;
        let memory = memory::create(config.memory)?;
        let what = config.kernel.display().to_string();
        let entry = boot::load_elf(&memory, &image, &what)?;
        boot::write_page_tables(&memory)?;
        boot::write_gdt(&memory)?;
        boot::write_boot_info(&memory, config.vcpus, &config.cmdline)?;
        memory::register(&fd, &memory)?;
        // Intel's VMX needs a TSS area below 4 GiB outside RAM; harmless
        // elsewhere.
        let _ = fd.set_tss_address(0xfffb_d000);
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("read the CPUID KVM supports"))?;
        let mut vcpus = Vec::new();
        for index in 0..config.vcpus {
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
            boot::configure_vcpu(&vcpu, index, entry)?;
            vcpus.push(vcpu);
        }
        Ok(Vm {
            _kvm: kvm,
            _fd: fd,
            memory,
            vcpus,
            devices: Arc::new(Devices::new(console)),
            shared: Arc::new(Shared {
                ending: Mutex::new(None),
                ended: Condvar::new(),
            }),
        })
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.shared.clone())
    }

    pub fn memory(&self) -> &Memory {
        &self.memory
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
                .spawn(move || run_vcpu(index, vcpu, &memory, &devices, &shared))
                .map_err(|e| Error::Io {
                    what: format!("start vCPU {index}'s thread"),
                    source: e,
                })?;
            threads.push(thread);
        }
        let ending = {
            let mut ending = self
                .shared
                .ending
                .lock()
                .expect("the ending lock is never poisoned");
            while ending.is_none() {
                ending = self
                    .shared
                    .ended
                    .wait(ending)
                    .expect("the ending lock is never poisoned");
            }
            ending.clone().expect("an ending")
        };
        // Every vCPU out of the guest: a signal makes KVM_RUN return; one
        // sent just before a thread enters it is lost, so send until all
        // are out.
        while threads.iter().any(|t| !t.is_finished()) {
            for thread in &threads {
                if !thread.is_finished() {
                    // SAFETY: signalling a thread of ours that is alive
                    // (joined only below).
                    unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for thread in threads {
            let _ = thread.join();
        }
        self.devices.flush();
        Ok(ending)
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

fn run_vcpu(index: usize, mut vcpu: VcpuFd, memory: &Memory, devices: &Devices, shared: &Shared) {
    let mut halted = false;
    while !shared.is_over() {
        if halted {
            // No interrupt can wake it: it waits for the VM's end.
            let ending = shared
                .ending
                .lock()
                .expect("the ending lock is never poisoned");
            drop(
                shared
                    .ended
                    .wait_while(ending, |e| e.is_none())
                    .expect("the ending lock is never poisoned"),
            );
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
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0xff);
                None
            }
            Ok(VcpuExit::MmioWrite(..)) | Ok(VcpuExit::Intr) => None,
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
                let code = code_at(memory, rip);
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

/// The 16 bytes of guest code at `rip` (identity-mapped), in hex: what a
/// report of an instruction KVM could not run shows.
fn code_at(memory: &Memory, rip: u64) -> String {
    use vm_memory::Bytes;
    let mut bytes = [0u8; 16];
    match memory.read_slice(&mut bytes, vm_memory::GuestAddress(rip)) {
        Ok(()) => bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "unreadable".into(),
    }
}
