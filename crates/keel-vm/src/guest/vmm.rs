//! The VMMs a container's micro-VM runs under, behind one trait: keel's
//! own ([`Keel`]: this crate's VM, in the shim's process) wherever the
//! host's KVM can boot Linux, and QEMU's `microvm` machine ([`Qemu`]) where
//! it cannot — with TCG, as on a host whose KVM is PVM. The shim asks
//! [`choose`] once; everything else (the guest, its agent, the network,
//! the relay) is the same for both.
//!
//! `KEEL_VMM=keel|qemu` overrides the choice. The shares are served by
//! keel's 9P2000.L server ([`crate::p9`]) under keel's VMM (virtio-9p) and
//! by QEMU's own under QEMU, or — `KEEL_VM_9P=keel` — by keel's server
//! over vsock (Linux's `trans=fd`), which is how Linux's 9p client is
//! tested against keel's server on a host where keel's VMM cannot boot it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Kernel;
use super::net::Nic;
use super::shim::HostShare;
use crate::error::{Error, Result};

/// The guest's vsock context id (each VM has its own vsock device).
pub const GUEST_CID: u64 = 3;
/// The first host vsock port keel's 9p server listens on (one per share).
const SHARE_PORT: u32 = 5640;

/// What a VMM is asked to run: the same for every VMM.
pub struct Plan<'a> {
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    pub memory_mib: u64,
    pub cpus: u32,
    pub shares: &'a [HostShare],
    pub nics: &'a [Nic],
    /// The host side of the VM's vsock (Firecracker's convention: the
    /// guest's connections to port P arrive at `<vsock>_P`).
    pub vsock: &'a Path,
    /// Where the guest's serial console goes.
    pub console: &'a Path,
    /// Where the VMM's own messages go.
    pub log: &'a Path,
}

/// A VM that was started.
pub struct Launched {
    pub machine: Box<dyn Machine>,
    /// How the guest mounts each share: over a virtio-9p device (`None`)
    /// or from keel's server on this vsock port.
    pub ports: Vec<Option<u32>>,
}

/// One way of running the guest.
pub trait Vmm {
    /// What `inspect` and `info` call it.
    fn name(&self) -> &'static str;
    /// `kvm` or `tcg`.
    fn accelerator(&self) -> &'static str;
    fn launch(&self, plan: &Plan) -> Result<Launched>;
}

/// A running VM.
pub trait Machine: Send {
    /// How it ended, once it has.
    fn ended(&mut self) -> Option<String>;
    /// Ends it: the guest gets `grace` to power off first.
    fn stop(&mut self, grace: Duration);
}

/// Hardware KVM that can boot Linux: /dev/kvm opens and is not PVM
/// (software KVM, which cannot run an unmodified Linux kernel).
pub fn hardware_kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
        && !Path::new("/sys/module/kvm_pvm").exists()
}

/// The VMM for this host: keel's own where KVM can boot Linux, QEMU
/// otherwise (`KEEL_VMM` overrides).
pub fn choose() -> Result<Box<dyn Vmm>> {
    match std::env::var("KEEL_VMM").ok().as_deref() {
        Some("keel") => Ok(Box::new(Keel)),
        Some("qemu") => Ok(Box::new(Qemu {
            kvm: hardware_kvm(),
        })),
        Some(other) => Err(Error::invalid(format!(
            "KEEL_VMM={other}: the VMMs are keel and qemu"
        ))),
        None if hardware_kvm() => Ok(Box::new(Keel)),
        None => Ok(Box::new(Qemu { kvm: false })),
    }
}

/// What `keel info` says runs micro-VMs here.
pub fn describe() -> String {
    match choose() {
        Ok(vmm) if vmm.accelerator() == "kvm" => format!("{} with KVM", vmm.name()),
        Ok(vmm) => format!(
            "{} under TCG (emulated: this host's KVM cannot boot Linux)",
            vmm.name()
        ),
        Err(e) => format!("none: {e}"),
    }
}

/// The kernel's command line (both VMMs).
fn cmdline(kvm: bool) -> String {
    // reboot=t: the agent ends the VM with a reset, and a triple fault is
    // the one way every kernel resets at once (without ACPI the kernel
    // first pokes a keyboard controller microvm does not have, for seconds
    // under an emulator); the VMMs end the VM on it.
    let mut line = "console=ttyS0 rdinit=/init panic=-1 reboot=t quiet loglevel=3".to_string();
    if !kvm && let Some(khz) = tsc_khz() {
        // HZ=250 in Debian's kernel: loops per jiffy = kHz * 1000 / 250.
        line.push_str(&format!(" tsc_early_khz={khz} lpj={}", khz * 4));
    }
    line
}

/// The host CPU's rate (kHz) under TCG, where the guest's TSC is the
/// host's: given to the kernel so that it does not measure it against a
/// PIT that under an emulator's load sometimes fails it.
fn tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64).filter(|k| *k > 0)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Serves each share with keel's 9p server on its own vsock port, from
/// threads of this process; the ports.
fn serve_shares(shares: &[HostShare], vsock: &Path) -> Result<Vec<Option<u32>>> {
    let mut ports = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        let port = SHARE_PORT + i as u32;
        let path = format!("{}_{port}", vsock.display());
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io(format!("listen on {path}")))?;
        let dir = share.host.clone();
        crate::p9::Server::new(&dir).map_err(io(format!("share {}", dir.display())))?;
        std::thread::Builder::new()
            .name(format!("9p-{}", share.tag))
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let dir = dir.clone();
                    std::thread::spawn(move || {
                        if let Ok(mut server) = crate::p9::Server::new(&dir) {
                            let _ = server.serve_stream(stream);
                        }
                    });
                }
            })
            .map_err(io("start a 9p server thread"))?;
        ports.push(Some(port));
    }
    Ok(ports)
}

/// QEMU's `microvm` machine, with keel's vsock device served to it over
/// vhost-user from a thread of this process.
pub struct Qemu {
    kvm: bool,
}

fn qemu_binary() -> String {
    std::env::var("KEEL_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

impl Qemu {
    fn args(&self, plan: &Plan, keel_9p: bool) -> Vec<String> {
        // Debian's kernel finds the virtio-mmio devices in ACPI's DSDT;
        // keel's minimal one has no ACPI, and QEMU names them on its
        // command line.
        let machine = if plan.kernel.modules.is_some() {
            "microvm,memory-backend=mem"
        } else {
            "microvm,acpi=off,memory-backend=mem"
        };
        let memory = plan.memory_mib;
        let mut args: Vec<String> = vec![
            "-machine".into(),
            machine.into(),
            "-global".into(),
            "virtio-mmio.force-legacy=false".into(),
            "-cpu".into(),
            if self.kvm { "host" } else { "max" }.into(),
            "-accel".into(),
            if self.kvm { "kvm" } else { "tcg,thread=multi" }.into(),
            "-smp".into(),
            plan.cpus.to_string(),
            "-m".into(),
            format!("{memory}M"),
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={memory}M,share=on"),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-nodefaults".into(),
            "-serial".into(),
            format!("file:{}", plan.console.display()),
            "-kernel".into(),
            plan.kernel.image.display().to_string(),
            "-initrd".into(),
            plan.initramfs.display().to_string(),
            "-append".into(),
            cmdline(self.kvm),
            "-chardev".into(),
            "socket,id=vsock,path=vhost.sock".into(),
            "-device".into(),
            "vhost-user-vsock-device,chardev=vsock".into(),
        ];
        if !keel_9p {
            for share in plan.shares {
                args.push("-fsdev".into());
                args.push(format!(
                    "local,id={},path={},security_model=passthrough,multidevs=remap",
                    share.tag,
                    share.host.display().to_string().replace(',', ",,")
                ));
                args.push("-device".into());
                args.push(format!(
                    "virtio-9p-device,fsdev={0},mount_tag={0}",
                    share.tag
                ));
            }
        }
        for (i, nic) in plan.nics.iter().enumerate() {
            args.push("-netdev".into());
            args.push(format!("tap,id=n{i},fd={}", 100 + i));
            args.push("-device".into());
            args.push(format!(
                "virtio-net-device,netdev=n{i},mac={}",
                nic.interface.mac
            ));
        }
        args
    }
}

impl Vmm for Qemu {
    fn name(&self) -> &'static str {
        "qemu-system-x86_64 -M microvm"
    }

    fn accelerator(&self) -> &'static str {
        if self.kvm { "kvm" } else { "tcg" }
    }

    fn launch(&self, plan: &Plan) -> Result<Launched> {
        let keel_9p = std::env::var("KEEL_VM_9P").is_ok_and(|v| v == "keel");
        let ports = if keel_9p {
            serve_shares(plan.shares, plan.vsock)?
        } else {
            vec![None; plan.shares.len()]
        };
        // The vsock device, served to QEMU from a thread of ours.
        let _ = std::fs::remove_file("vhost.sock");
        let vsock = plan.vsock.to_path_buf();
        std::thread::Builder::new()
            .name("vsock".into())
            .spawn(move || {
                if let Err(e) =
                    crate::vhost_user::serve_vsock(Path::new("vhost.sock"), &vsock, GUEST_CID)
                {
                    eprintln!("keel: the VM's vsock device: {e}");
                }
            })
            .map_err(io("start the vsock thread"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Path::new("vhost.sock").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut command = Command::new(qemu_binary());
        command.args(self.args(plan, keel_9p));
        let taps: Vec<i32> = plan.nics.iter().map(|n| n.tap.as_raw_fd()).collect();
        // SAFETY: dup2 (async-signal-safe) of fds we hold, in the child
        // before exec: the taps at the numbers the arguments name.
        unsafe {
            command.pre_exec(move || {
                for (i, fd) in taps.iter().enumerate() {
                    if libc::dup2(*fd, 100 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let log = File::create(plan.log).map_err(io(format!("create {}", plan.log.display())))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("dup the VMM's log"))?)
            .stderr(log);
        let child = command
            .spawn()
            .map_err(io(format!("start {}", qemu_binary())))?;
        Ok(Launched {
            machine: Box::new(QemuMachine { child }),
            ports,
        })
    }
}

struct QemuMachine {
    child: Child,
}

impl Machine for QemuMachine {
    fn ended(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// keel's own VMM ([`crate::vm::Vm`]), run by threads of the shim: the
/// shares on virtio-9p devices served by keel's 9p server, the NICs on
/// the taps, vsock on the same host socket as under QEMU, virtio-rng.
pub struct Keel;

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

impl Keel {
    fn config(&self, plan: &Plan) -> Result<crate::vm::Config> {
        let nets = plan
            .nics
            .iter()
            .map(|nic| {
                let tap: OwnedFd = nic.tap.try_clone().map_err(io("dup a tap"))?;
                let mac = parse_mac(&nic.interface.mac).ok_or_else(|| {
                    Error::invalid(format!("{:?} is not a MAC address", nic.interface.mac))
                })?;
                Ok(crate::vm::Nic {
                    tap: Arc::new(tap),
                    mac,
                    network: String::new(),
                    ipv4: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shares: Vec<crate::vm::Share> = plan
            .shares
            .iter()
            .map(|s| crate::vm::Share {
                tag: s.tag.clone(),
                path: s.host.clone(),
            })
            .collect();
        let mut config = crate::vm::Config {
            vcpus: plan.cpus,
            memory: plan.memory_mib << 20,
            kernel: plan.kernel.image.clone(),
            cmdline: cmdline(true),
            disks: Vec::new(),
            balloon: false,
            rng: true,
            nets,
            vsock: Some(crate::vm::VsockConfig {
                cid: GUEST_CID,
                path: plan.vsock.to_path_buf(),
            }),
            initrd: Some(plan.initramfs.to_path_buf()),
            shares,
        };
        if plan.kernel.modules.is_none() {
            // keel's minimal kernel has no ACPI: its virtio-mmio devices
            // are named on its command line (each window is probed).
            for i in 0..config.device_count() as u64 {
                config.cmdline.push_str(&format!(
                    " virtio_mmio.device=4K@{:#x}:{}",
                    crate::devices::virtio::MMIO_BASE + i * crate::devices::virtio::MMIO_SIZE,
                    crate::devices::VIRTIO_GSI + i as u32
                ));
            }
        }
        Ok(config)
    }
}

impl Vmm for Keel {
    fn name(&self) -> &'static str {
        "keel-vm"
    }

    fn accelerator(&self) -> &'static str {
        "kvm"
    }

    fn launch(&self, plan: &Plan) -> Result<Launched> {
        let config = self.config(plan)?;
        let console =
            File::create(plan.console).map_err(io(format!("create {}", plan.console.display())))?;
        let mut vm = crate::vm::Vm::create(&config, Box::new(console))?;
        let controller = vm.controller();
        let ending = Arc::new(Mutex::new(None));
        let thread = {
            let ending = ending.clone();
            let log = PathBuf::from(plan.log);
            std::thread::Builder::new()
                .name("vm".into())
                .spawn(move || {
                    let how = match vm.run() {
                        Ok(end) => end.reason(),
                        Err(e) => {
                            let _ = std::fs::write(&log, format!("keel-vm: {e}\n"));
                            format!("keel-vm failed: {e}")
                        }
                    };
                    *ending.lock().expect("never poisoned") = Some(how);
                })
                .map_err(io("start the VM's thread"))?
        };
        Ok(Launched {
            machine: Box::new(KeelMachine {
                controller,
                ending,
                thread: Some(thread),
            }),
            ports: vec![None; plan.shares.len()],
        })
    }
}

struct KeelMachine {
    controller: crate::vm::Controller,
    ending: Arc<Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Machine for KeelMachine {
    fn ended(&mut self) -> Option<String> {
        self.ending.lock().expect("never poisoned").clone()
    }

    fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.ended().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.controller.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// keel's minimal kernel (no ACPI) finds every device keel-vm gives
    /// it on its command line; Debian's reads them from ACPI instead.
    #[test]
    fn a_kernel_without_acpi_is_told_every_device_window() {
        let share = |tag: &str| HostShare {
            tag: tag.into(),
            host: PathBuf::from("/tmp"),
            guest: format!("/{tag}"),
        };
        let shares = [share("root"), share("data")];
        let kernel = Kernel {
            version: "6.1-keel".into(),
            image: PathBuf::from("/vmlinux"),
            modules: None,
        };
        let plan = |kernel| Plan {
            kernel,
            initramfs: Path::new("/initramfs"),
            memory_mib: 256,
            cpus: 2,
            shares: &shares,
            nics: &[],
            vsock: Path::new("vsock.sock"),
            console: Path::new("console.log"),
            log: Path::new("vmm.log"),
        };
        let config = Keel.config(&plan(&kernel)).unwrap();
        // vsock, rng and the two shares.
        assert_eq!(config.device_count(), 4);
        let windows: Vec<&str> = config
            .cmdline
            .split(' ')
            .filter(|w| w.starts_with("virtio_mmio.device="))
            .collect();
        assert_eq!(
            windows,
            [
                "virtio_mmio.device=4K@0xd0000000:5",
                "virtio_mmio.device=4K@0xd0001000:6",
                "virtio_mmio.device=4K@0xd0002000:7",
                "virtio_mmio.device=4K@0xd0003000:8",
            ]
        );
        assert_eq!((config.vcpus, config.memory), (2, 256 << 20));
        let debian = Kernel {
            modules: Some(PathBuf::from("/modules")),
            ..kernel.clone()
        };
        assert!(
            !Keel
                .config(&plan(&debian))
                .unwrap()
                .cmdline
                .contains("virtio_mmio")
        );
    }

    #[test]
    fn macs_are_read() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:02"),
            Some([2, 0x42, 0xac, 0x11, 0, 2])
        );
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:02"), None);
    }
}
