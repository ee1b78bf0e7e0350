//! `keel-vm-shim`: a container's micro-VM, as keel-runtime records it (the
//! container's init; see keel-runtime's `vm` module for the contract).
//!
//! It boots the guest under the VMM [`super::vmm::choose`] picks (keel's
//! own where KVM can boot Linux, QEMU's `microvm` elsewhere), with the
//! container's root filesystem and bind mounts shared over 9p and the
//! agent reached over virtio-vsock (keel's vsock device either way). Once the agent answers it
//! tells `create`; on `start` it sends the agent the container's config
//! as the guest sees it, carries the process's stdio and signals, and
//! exits with its code once the VM has powered off.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_runtime::spec::{Mount, NamespaceType, Spec};
use keel_runtime::vm::proto::{AGENT_PORT, Frame, Request, Share};
use keel_runtime::vm::{AGENT, CACHE, KERNEL};

use super::Kernel;
use crate::error::{Error, Result};

/// Where the guest mounts the container's root filesystem.
const GUEST_ROOTFS: &str = "/run/keel/rootfs";
/// Where the guest mounts the other shares (`<dir>/<tag>`).
const GUEST_SHARES: &str = "/run/keel/shares";
/// The VM's memory when the container has no memory limit.
const DEFAULT_MEMORY_MIB: u64 = 512;
/// The least memory the guest kernel and agent come up in.
const MIN_MEMORY_MIB: u64 = 128;

/// A host directory the guest mounts.
#[derive(Debug, Clone, PartialEq)]
pub struct HostShare {
    pub tag: String,
    pub host: PathBuf,
    pub guest: String,
}

/// The container's config as the guest's runtime runs it, and the host
/// directories it needs: the root and each bind mount's source (a file's
/// directory for a file) become 9p shares; namespaces the host made
/// (the network sandbox, a joined one) are the VM's own; hooks are the
/// host's; host devices stay on the host; the VM's size is the memory
/// limit.
pub fn for_guest(spec: &Spec, rootfs: &Path) -> (Spec, Vec<HostShare>) {
    let mut guest = spec.clone();
    guest.annotations.remove(keel_runtime::vm::ISOLATION);
    guest.annotations.remove(keel_runtime::vm::SHIM);
    guest.hooks = None;
    if let Some(root) = guest.root.as_mut() {
        root.path = GUEST_ROOTFS.to_string();
    }
    let mut shares = vec![HostShare {
        tag: "rootfs".into(),
        host: rootfs.to_path_buf(),
        guest: GUEST_ROOTFS.into(),
    }];
    let mut by_dir: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut mounts = Vec::new();
    for mount in &spec.mounts {
        let bind = mount.kind.as_deref() == Some("bind")
            || mount.options.iter().any(|o| o == "bind" || o == "rbind");
        let Some(source) = mount.source.as_deref().filter(|_| bind) else {
            mounts.push(mount.clone());
            continue;
        };
        let source = Path::new(source);
        let meta = std::fs::metadata(source).ok();
        let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
        let is_file = meta.as_ref().is_some_and(|m| m.is_file());
        let (dir, file) = if is_dir {
            (source.to_path_buf(), None)
        } else if is_file && let Some(parent) = source.parent() {
            (parent.to_path_buf(), source.file_name())
        } else {
            // A device node or a socket: the host's, not the guest's.
            continue;
        };
        let next = by_dir.len();
        let tag = by_dir
            .entry(dir.clone())
            .or_insert_with(|| format!("s{next}"))
            .clone();
        if !shares.iter().any(|s| s.tag == tag) {
            shares.push(HostShare {
                tag: tag.clone(),
                host: dir,
                guest: format!("{GUEST_SHARES}/{tag}"),
            });
        }
        let mut guest_source = format!("{GUEST_SHARES}/{tag}");
        if let Some(file) = file {
            guest_source = format!("{guest_source}/{}", file.to_string_lossy());
        }
        mounts.push(Mount {
            source: Some(guest_source),
            ..mount.clone()
        });
    }
    guest.mounts = mounts;
    if let Some(linux) = guest.linux.as_mut() {
        linux.namespaces.retain(|n| n.path.is_none());
        linux.devices.retain(|d| {
            // The standard devices the runtime makes are kept; others are
            // the host's.
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty",
            ]
            .contains(&d.path.as_str())
        });
        if let Some(resources) = linux.resources.as_mut() {
            resources.memory = None;
        }
    }
    (guest, shares)
}

/// The VM's memory (MiB) and vCPUs for a container's limits.
pub fn size(spec: &Spec) -> (u64, u32) {
    let resources = spec.linux.as_ref().and_then(|l| l.resources.as_ref());
    let memory = resources
        .and_then(|r| r.memory.as_ref())
        .and_then(|m| m.limit)
        .filter(|l| *l > 0)
        .map(|l| (l as u64).div_ceil(1 << 20).max(MIN_MEMORY_MIB))
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let cpus = resources
        .and_then(|r| r.cpu.as_ref())
        .and_then(|c| Some((c.quota?, c.period?)))
        .filter(|(q, p)| *q > 0 && *p > 0)
        .map(|(q, p)| (q as u64).div_ceil(p).max(1) as u32)
        .unwrap_or(1);
    (memory, cpus)
}

/// The shim's arguments (see keel-runtime's `vm::create`).
pub struct Args {
    pub bundle: PathBuf,
    pub state: PathBuf,
    pub id: String,
}

/// The shim: returns the exit code to exit with.
pub fn main(args: Args) -> i32 {
    let begin = Instant::now();
    // Signals wait for the relay (threads started later inherit the mask;
    // the VMM, spawned by std, starts with none blocked).
    let _ = keel_runtime::vm::relay::forwarded().thread_block();
    // The VMM must not inherit them: `create` waits for fd 5's end.
    for fd in 3..=5 {
        // SAFETY: setting FD_CLOEXEC on fds the runtime gave us.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: fds 3, 4 and 5 are ours by the runtime's contract.
    let mut ready = Some(unsafe { File::from_raw_fd(5) });
    let start = unsafe { File::from_raw_fd(3) };
    let start_writer = unsafe { File::from_raw_fd(4) };
    let mut vm = match boot(&args) {
        Ok(vm) => vm,
        Err(e) => {
            if let Some(mut ready) = ready.take() {
                let _ = writeln!(ready, "{e}");
            }
            return 125;
        }
    };
    if let Some(mut ready) = ready.take() {
        let _ = writeln!(ready, "ok");
    }
    // `start` writes a byte to the exec FIFO; `delete` kills us instead.
    let mut byte = [0u8; 1];
    let started = (&start).read(&mut byte).is_ok_and(|n| n == 1);
    drop((start, start_writer));
    let _ = std::fs::remove_file(args.state.join("exec.fifo"));
    if !started {
        vm.stop();
        return 125;
    }
    let started = Instant::now();
    let code = match vm.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keel: {e}");
            255
        }
    };
    let exited = Instant::now();
    vm.stop();
    if std::env::var_os("KEEL_VM_TIMING").is_some() {
        eprintln!("{}", vm.timing(begin, started, exited));
    }
    code
}

/// A booted VM whose agent answered.
struct Vm {
    /// When the VMM was started and when the agent first answered.
    spawned: Instant,
    answered: Instant,
    machine: Box<dyn super::vmm::Machine>,
    stream: std::os::unix::net::UnixStream,
    request: Request,
    terminal: bool,
    state: PathBuf,
}

fn boot(args: &Args) -> Result<Vm> {
    let spec = Spec::load(&args.bundle).map_err(|e| Error::Msg(e.to_string()))?;
    std::env::set_current_dir(&args.state).map_err(|e| Error::Io {
        what: format!("enter {}", args.state.display()),
        source: e,
    })?;
    // The container's network, taken over before any thread starts (a
    // thread and the VMM start in the namespace this thread is in).
    let network_namespace = spec
        .linux
        .as_ref()
        .and_then(|l| {
            l.namespaces
                .iter()
                .find(|n| n.kind == NamespaceType::Network)
        })
        .and_then(|n| n.path.clone());
    let (nics, gateway, gateway6) = match &network_namespace {
        Some(path) => super::net::take_over(Path::new(path))?,
        None => (Vec::new(), None, None),
    };
    if !nics.is_empty() {
        super::net::serve_dns(Path::new(keel_runtime::vm::VSOCK_SOCKET))?;
    }
    let annotation = |key: &str| spec.annotations.get(key).map(PathBuf::from);
    let kernel = Kernel::find(
        annotation(KERNEL)
            .or_else(|| std::env::var_os("KEEL_GUEST_KERNEL").map(PathBuf::from))
            .as_deref(),
    )?;
    let agent = annotation(AGENT)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.join("keel-guest"))
        })
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            Error::Msg(format!(
                "no keel-guest agent (set the {AGENT} annotation or install it beside keel-vm-shim)"
            ))
        })?;
    let cache = annotation(CACHE).unwrap_or_else(|| PathBuf::from("/var/cache/keel/vm"));
    let initramfs = super::initramfs(&kernel, &agent, &cache)?;
    let rootfs = args
        .bundle
        .join(spec.root.as_ref().map(|r| r.path.as_str()).unwrap_or(""));
    let (guest, shares) = for_guest(&spec, &rootfs);
    let (memory, cpus) = size(&spec);

    let vmm = super::vmm::choose()?;
    let launched = vmm.launch(&super::vmm::Plan {
        kernel: &kernel,
        initramfs: &initramfs,
        memory_mib: memory,
        cpus,
        shares: &shares,
        nics: &nics,
        vsock: Path::new(keel_runtime::vm::VSOCK_SOCKET),
        console: Path::new(keel_runtime::vm::CONSOLE_LOG),
        log: Path::new("vmm.log"),
    })?;
    let mut machine = launched.machine;
    let spawned = Instant::now();
    let info = serde_json::json!({
        "Kernel": kernel.version,
        "KernelImage": kernel.image,
        "VMM": vmm.name(),
        "Accelerator": vmm.accelerator(),
        "MemoryMiB": memory,
        "CPUs": cpus,
    });
    let _ = keel_runtime::util::write_atomic(
        &args.bundle.join(keel_runtime::vm::GUEST_INFO),
        info.to_string().as_bytes(),
    );
    let state = args.state.clone();
    let timeout = boot_timeout();
    let deadline = Instant::now() + timeout;
    let stream = loop {
        if let Some(how) = machine.ended() {
            return Err(Error::Msg(format!(
                "the VM ended while booting ({how}){}",
                console_tail(&state)
            )));
        }
        match keel_runtime::vm::connect(&state, AGENT_PORT, Duration::from_millis(500)) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                machine.stop(Duration::ZERO);
                return Err(Error::Msg(format!(
                    "the VM's agent did not answer within {} s ({e}){}",
                    timeout.as_secs(),
                    console_tail(&state)
                )));
            }
        }
    };
    let request = Request::Run {
        id: args.id.clone(),
        config: Box::new(guest),
        shares: shares
            .iter()
            .zip(&launched.ports)
            .map(|(s, port)| Share {
                tag: s.tag.clone(),
                path: s.guest.clone(),
                readonly: false,
                port: *port,
            })
            .collect(),
        interfaces: nics.iter().map(|n| n.interface.clone()).collect(),
        gateway,
        gateway6,
    };
    drop(nics);
    Ok(Vm {
        spawned,
        answered: Instant::now(),
        machine,
        stream,
        request,
        terminal: spec.process().terminal,
        state,
    })
}

impl Vm {
    fn run(&mut self) -> Result<i32> {
        let mut stream = self.stream.try_clone().map_err(|e| Error::Io {
            what: "dup the agent's connection".into(),
            source: e,
        })?;
        Frame::Request(serde_json::to_vec(&self.request).expect("requests serialize"))
            .write_to(&mut stream)
            .map_err(|e| Error::Io {
                what: "send the container to the VM's agent".into(),
                source: e,
            })?;
        let machine = &mut self.machine;
        let state = self.state.clone();
        keel_runtime::vm::relay::relay_stdio(stream, self.terminal, || {
            machine.ended().map(|how| {
                format!(
                    "the VM ended before the process did ({how}){}",
                    console_tail(&state)
                )
            })
        })
        .map_err(|e| Error::Msg(e.to_string()))
    }

    /// `KEEL_VM_TIMING`: where the time went, in one line (milliseconds
    /// from the shim's start; the guest's own times from its console).
    fn timing(&self, begin: Instant, started: Instant, exited: Instant) -> String {
        let ms = |t: Instant| t.duration_since(begin).as_millis();
        let console = std::fs::read_to_string(self.state.join(keel_runtime::vm::CONSOLE_LOG))
            .unwrap_or_default();
        let guest = console
            .lines()
            .find_map(|l| l.strip_prefix("keel-guest: "))
            .unwrap_or("no times from the guest");
        format!(
            "keel-vm timing: vmm started {} ms, agent answered {} ms, process started {} ms, \
             exited {} ms (guest: {guest})",
            ms(self.spawned),
            ms(self.answered),
            ms(started),
            ms(exited),
        )
    }

    /// Waits a moment for the guest to power off, then ends the VMM.
    /// (The agent powers off once we hang up after its exit code.)
    fn stop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.machine.stop(Duration::from_secs(5));
        for name in ["vhost.sock", keel_runtime::vm::VSOCK_SOCKET] {
            let _ = std::fs::remove_file(self.state.join(name));
        }
    }
}

fn boot_timeout() -> Duration {
    std::env::var("KEEL_VM_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

/// What the VMM said and the end of the guest's console, for an error.
fn console_tail(state: &Path) -> String {
    let vmm = std::fs::read_to_string(state.join("vmm.log")).unwrap_or_default();
    let vmm = match vmm.trim() {
        "" => String::new(),
        said => format!("; the VMM said: {said}"),
    };
    let text =
        std::fs::read_to_string(state.join(keel_runtime::vm::CONSOLE_LOG)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return format!("{vmm}; the guest's console said nothing");
    }
    let tail = &lines[lines.len().saturating_sub(15)..];
    format!(
        "{vmm}; the guest's console ended with:\n{}",
        tail.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_runtime::spec::{Linux, Namespace, Root};

    #[test]
    fn the_guest_sees_shares_where_the_host_had_paths() {
        let dir = std::env::temp_dir().join(format!("keel-shim-{}", std::process::id()));
        let data = dir.join("volume");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(dir.join("hosts"), "").unwrap();
        std::fs::write(dir.join("resolv.conf"), "").unwrap();
        let bind = |source: &Path, destination: &str| Mount {
            destination: destination.into(),
            kind: Some("bind".into()),
            source: Some(source.display().to_string()),
            options: vec!["rbind".into(), "rw".into()],
            ..Mount::default()
        };
        let mut spec = Spec {
            root: Some(Root {
                path: "rootfs".into(),
                readonly: false,
            }),
            mounts: vec![
                Mount {
                    destination: "/proc".into(),
                    kind: Some("proc".into()),
                    source: Some("proc".into()),
                    ..Mount::default()
                },
                bind(&data, "/data"),
                bind(&dir.join("hosts"), "/etc/hosts"),
                bind(&dir.join("resolv.conf"), "/etc/resolv.conf"),
                bind(Path::new("/dev/null"), "/dev/nothing"),
            ],
            linux: Some(Linux {
                namespaces: vec![
                    Namespace {
                        kind: NamespaceType::Mount,
                        path: None,
                    },
                    Namespace {
                        kind: NamespaceType::Network,
                        path: Some("/run/netns/x".into()),
                    },
                ],
                ..Linux::default()
            }),
            ..Spec::default()
        };
        spec.annotations
            .insert(keel_runtime::vm::ISOLATION.into(), "vm".into());
        let (guest, shares) = for_guest(&spec, Path::new("/host/rootfs"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(guest.root.unwrap().path, GUEST_ROOTFS);
        assert!(
            guest.annotations.is_empty(),
            "the guest's runtime runs no VM"
        );
        let sources: Vec<_> = guest
            .mounts
            .iter()
            .map(|m| m.source.clone().unwrap())
            .collect();
        assert_eq!(
            sources,
            [
                "proc",
                "/run/keel/shares/s0",
                "/run/keel/shares/s1/hosts",
                "/run/keel/shares/s1/resolv.conf"
            ]
        );
        assert_eq!(
            shares
                .iter()
                .map(|s| (s.tag.as_str(), s.host.clone()))
                .collect::<Vec<_>>(),
            [
                ("rootfs", PathBuf::from("/host/rootfs")),
                ("s0", data),
                ("s1", dir.clone()),
            ]
        );
        let namespaces = &guest.linux.unwrap().namespaces;
        assert_eq!(
            namespaces.len(),
            1,
            "the host's network sandbox is the VM's NIC"
        );
    }

    #[test]
    fn limits_size_the_vm() {
        let mut spec = Spec::default();
        assert_eq!(size(&spec), (DEFAULT_MEMORY_MIB, 1));
        let resources = keel_runtime::spec::Resources {
            memory: Some(keel_runtime::spec::Memory {
                limit: Some(300 << 20),
                ..Default::default()
            }),
            cpu: Some(keel_runtime::spec::Cpu {
                quota: Some(150_000),
                period: Some(100_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        spec.linux = Some(Linux {
            resources: Some(resources),
            ..Linux::default()
        });
        assert_eq!(size(&spec), (300, 2));
    }
}
