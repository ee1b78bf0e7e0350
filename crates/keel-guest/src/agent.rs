//! The guest's init: the system mounted, the modules loaded, connections
//! accepted and handed to a child each, orphans reaped, power off at the
//! end.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use keel_runtime::vm::proto::AGENT_PORT;
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub fn main() -> ! {
    let up = uptime();
    if let Err(e) = system() {
        eprintln!("keel-guest: {e}");
        power_off();
    }
    // One line on the console: when the kernel ran us and when we were
    // ready (seconds since the kernel started), for keel's timings.
    eprintln!("keel-guest: init at {up:.3} s, ready at {:.3} s", uptime());
    if let Err(e) = serve() {
        eprintln!("keel-guest: {e}");
    }
    power_off()
}

/// Seconds since the kernel started (0 before /proc is mounted).
fn uptime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Ends the VM. A reset, not a power-off: keel's minimal kernel has no
/// ACPI, and its power-off only halts the CPU; the VMM runs with
/// `-no-reboot` (and keel's own treats a reset as the end), so a reset is
/// how every guest kernel ends the VM at once.
fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        std::thread::park();
    }
}

fn system() -> Result<(), String> {
    let fs = |source: &str, target: &str, kind: &str, flags: MsFlags, data: Option<&str>| {
        let _ = std::fs::create_dir_all(target);
        mount(Some(source), target, Some(kind), flags, data)
            .map_err(|e| format!("mount {kind} on {target}: {e}"))
    };
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    fs("proc", "/proc", "proc", quiet, None)?;
    fs("sysfs", "/sys", "sysfs", quiet, None)?;
    fs("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, None)?;
    fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620"),
    )?;
    fs("shm", "/dev/shm", "tmpfs", quiet, None)?;
    fs("run", "/run", "tmpfs", MsFlags::MS_NOSUID, Some("mode=755"))?;
    fs(
        "tmp",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=1777"),
    )?;
    fs("cgroup2", "/sys/fs/cgroup", "cgroup2", quiet, None)?;
    // Every controller for the containers' cgroups.
    if let Ok(controllers) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        let enable: Vec<String> = controllers
            .split_whitespace()
            .map(|c| format!("+{c}"))
            .collect();
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", enable.join(" "));
    }
    load_modules()?;
    loopback_up();
    Ok(())
}

fn load_modules() -> Result<(), String> {
    let order = std::fs::read_to_string("/modules/order").unwrap_or_default();
    for name in order.lines().filter(|l| !l.is_empty()) {
        let path = format!("/modules/{name}");
        let file = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        // SAFETY: finit_module on an open module file with empty params.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("load the module {name}: {e}"));
            }
        }
    }
    Ok(())
}

/// `lo` up, as on any Linux system.
fn loopback_up() {
    // SAFETY: an ioctl socket and SIOC[GS]IFFLAGS on a zeroed ifreq
    // naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            request.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) == 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &request);
        }
        libc::close(fd);
    }
}

fn vsock_listener() -> Result<OwnedFd, String> {
    // SAFETY: socket/bind/listen on a sockaddr_vm we fill.
    unsafe {
        let fd = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("vsock socket: {}", std::io::Error::last_os_error()));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_vm = std::mem::zeroed();
        address.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        address.svm_cid = libc::VMADDR_CID_ANY;
        address.svm_port = AGENT_PORT;
        if libc::bind(
            fd.as_raw_fd(),
            &address as *const libc::sockaddr_vm as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        ) != 0
        {
            return Err(format!(
                "bind vsock port {AGENT_PORT}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if libc::listen(fd.as_raw_fd(), 16) != 0 {
            return Err(format!("listen: {}", std::io::Error::last_os_error()));
        }
        Ok(fd)
    }
}

/// Accepts connections until the container's process (the first
/// connection's) has ended.
fn serve() -> Result<(), String> {
    let listener = vsock_listener()?;
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("block SIGCHLD: {e}"))?;
    let children = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let mut container: Option<i32> = None;
    let mut container_done = false;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: children.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on our two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            continue;
        }
        if fds[1].revents != 0 {
            while let Ok(Some(_)) = children.read_signal() {}
            loop {
                let mut status = 0;
                // SAFETY: waitpid into a valid int.
                let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if Some(pid) == container {
                    container_done = true;
                }
            }
            if container_done {
                return Ok(());
            }
        }
        if fds[0].revents != 0 {
            // SAFETY: accept4 on our listener; no address wanted.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                continue;
            }
            // SAFETY: a new connection we own.
            let connection = unsafe { OwnedFd::from_raw_fd(fd) };
            match keel_runtime::process::fork() {
                Ok(None) => {
                    drop(listener);
                    drop(children);
                    let _ = nix::sys::signal::pthread_sigmask(
                        SigmaskHow::SIG_UNBLOCK,
                        Some(&set),
                        None,
                    );
                    let code = crate::process::handle(connection);
                    keel_runtime::process::exit_child(code);
                }
                Ok(Some(pid)) => {
                    // The host's first connection is the container's.
                    container.get_or_insert(pid);
                }
                Err(e) => eprintln!("keel-guest: fork: {e}"),
            }
        }
    }
}
