//! Containers in micro-VMs (`io.keel.isolation: vm` in the config's
//! annotations): the container's init, as this runtime records it, is the
//! VM shim (`keel-vm-shim`, keel-vm's) running on the host in the
//! container's cgroup. The shim boots the VM and waits for its agent
//! before `create` returns, starts the process when `start` writes the
//! exec FIFO, carries its stdio, forwards the signals it receives and
//! exits with the process's code. So `kill`, `pause`/`resume` (the cgroup
//! freezer stops the VMM), `delete`, `state`, `ps` and `update` work
//! unchanged; `exec` asks the agent over the VM's vsock socket.
//!
//! What the shim is given: the bundle, this runtime's directory of the
//! container (where the VM's sockets and console log live), and three fds:
//! 3 the exec FIFO's read end, 4 a write end of it held so the read blocks
//! until `start`, 5 a pipe on which it says `ok` once the agent answers
//! (or why the VM did not come up).

pub mod proto;
pub mod relay;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::cgroups::Cgroup;
use crate::container::{Cleanup, CreateOptions};
use crate::error::{Context, Error, Result};
use crate::spec::{Resources, Spec};
use crate::state::{ContainerDir, State};
use crate::util;

/// The annotation that asks for a micro-VM: `io.keel.isolation=vm`.
pub const ISOLATION: &str = "io.keel.isolation";
/// The shim's path (default: `keel-vm-shim` beside this executable).
pub const SHIM: &str = "io.keel.vm.shim";
/// The guest kernel's directory (a `<version>` directory with `vmlinuz`
/// and `modules/`); default: the newest keel's setup installed.
pub const KERNEL: &str = "io.keel.vm.kernel";
/// The agent binary (static); default: `keel-guest` beside the shim.
pub const AGENT: &str = "io.keel.vm.agent";
/// Where the guest's initramfs images are cached; default
/// `/var/cache/keel/vm`.
pub const CACHE: &str = "io.keel.vm.cache";
/// The unix socket, in the container's runtime directory, that reaches the
/// guest's vsock ports (Firecracker's convention: `CONNECT PORT\n`).
pub const VSOCK_SOCKET: &str = "vsock.sock";
/// The guest's serial console, in the container's runtime directory.
pub const CONSOLE_LOG: &str = "console.log";
/// What the shim booted (kernel, VMM, accelerator, size), as JSON in the
/// bundle, kept after the VM ends (`inspect` shows it).
pub const GUEST_INFO: &str = "guest.json";

/// Whether a config asks for a micro-VM.
pub fn wants_vm(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations.get(ISOLATION).is_some_and(|v| v == "vm")
}

fn shim_path(spec: &Spec) -> Result<PathBuf> {
    if let Some(path) = spec.annotations.get(SHIM) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context(|| "find this executable".to_string())?;
    let path = exe
        .parent()
        .map(|dir| dir.join("keel-vm-shim"))
        .filter(|p| p.exists())
        .ok_or_else(|| {
            Error::msg(format!(
                "no keel-vm-shim beside {} (set the {SHIM} annotation to its path)",
                exe.display()
            ))
        })?;
    Ok(path)
}

/// What the host's cgroup limits for a VM: its CPU and I/O. Memory, pids
/// and devices are the guest's business (the VM's memory is its size; the
/// VMM needs threads and device files of its own).
fn host_resources(spec: &Spec) -> Resources {
    let ours = spec
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    Resources {
        cpu: ours.cpu,
        block_io: ours.block_io,
        ..Resources::default()
    }
}

/// A pty for a process carried to a guest: its master (sized) sent over
/// `socket` as a container's would be; its slave, raw (the guest's own
/// terminal does the line discipline), returned for the relay.
fn terminal_for(socket: &OwnedFd, size: Option<crate::spec::ConsoleSize>) -> Result<OwnedFd> {
    let pty = nix::pty::openpty(None, None).context(|| "open a pty".to_string())?;
    let mut raw = nix::sys::termios::tcgetattr(&pty.slave)
        .context(|| "read the pty's settings".to_string())?;
    nix::sys::termios::cfmakeraw(&mut raw);
    let _ = nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &raw);
    if let Some(size) = size {
        crate::console::set_size(pty.master.as_raw_fd(), size.height, size.width);
    }
    crate::console::send_fd(socket, "vm", pty.master.as_raw_fd())?;
    Ok(pty.slave)
}

/// In a forked child: a session of its own, and with `terminal` that
/// terminal as its controlling one and its stdio (so the terminal's
/// resizes reach it as SIGWINCH).
pub fn session_on(terminal: Option<&OwnedFd>) {
    // SAFETY: setsid, and ioctl/dup2 on an fd the caller holds.
    unsafe {
        libc::setsid();
        if let Some(fd) = terminal {
            libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0);
            for n in 0..3 {
                libc::dup2(fd.as_raw_fd(), n);
            }
        }
    }
}

/// An fd moved above the low numbers the child places its fds at.
fn high(fd: &OwnedFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(Error::io("dup", std::io::Error::last_os_error()));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `create` of a VM container: the shim started in the container's cgroup,
/// its terminal (if the process has one) sent over `console`; returns once
/// the guest's agent answers, with the shim's pid.
pub(crate) fn create(
    root: &Path,
    opts: &CreateOptions,
    spec: &Spec,
    bundle: &Path,
    rootfs: &Path,
    console: Option<OwnedFd>,
) -> Result<i32> {
    let shim = shim_path(spec)?;
    let dir = ContainerDir::create(root, &opts.id)?;
    let mut cleanup = Cleanup::new(dir.clone());
    dir.save_config(spec)?;
    let mut cgroup = Cgroup::resolve(&opts.id, spec.linux().cgroups_path.as_deref())?;
    let created = cgroup.create();
    cleanup.cgroup = Some(cgroup.clone());
    created?;
    cgroup.apply(&host_resources(spec))?;

    let fifo_path = dir.fifo();
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .context(|| format!("mkfifo {}", fifo_path.display()))?;
    let open_fifo = |write: bool| -> Result<OwnedFd> {
        let file = std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&fifo_path)
            .context(|| format!("open {}", fifo_path.display()))?;
        Ok(file.into())
    };
    let fifo_read = high(&open_fifo(false)?)?;
    let fifo_write = high(&open_fifo(true)?)?;
    // SAFETY: clearing O_NONBLOCK on our own fd: the shim's read blocks.
    unsafe { libc::fcntl(fifo_read.as_raw_fd(), libc::F_SETFL, 0) };
    let (ready_read, low_ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context(|| "pipe".to_string())?;
    // Only the child may hold the write end: `create` reads to its EOF.
    let ready_write = high(&low_ready_write)?;
    drop(low_ready_write);

    let terminal = spec.process().terminal;
    let slave = match (&console, terminal) {
        (Some(socket), true) => Some(high(&terminal_for(socket, spec.process().console_size)?)?),
        _ => None,
    };
    drop(console);

    let args: Vec<CString> = [
        shim.as_os_str(),
        "--bundle".as_ref(),
        bundle.as_os_str(),
        "--state".as_ref(),
        dir.path.as_os_str(),
        "--id".as_ref(),
        opts.id.as_ref(),
    ]
    .iter()
    .map(|a| CString::new(a.as_encoded_bytes()).map_err(|_| Error::msg("a path holds a NUL byte")))
    .collect::<Result<_>>()?;
    let Some(pid) = crate::process::fork()? else {
        // The child: its own session (and terminal), the fds in place, in
        // the container's cgroup, then the shim.
        session_on(slave.as_ref());
        // SAFETY: plain calls on fds we hold; the child exits on failure.
        unsafe {
            libc::dup2(fifo_read.as_raw_fd(), 3);
            libc::dup2(fifo_write.as_raw_fd(), 4);
            libc::dup2(ready_write.as_raw_fd(), 5);
        }
        let mut ready = std::mem::ManuallyDrop::new(
            // SAFETY: fd 5, just placed.
            unsafe { std::fs::File::from_raw_fd(5) },
        );
        if let Err(e) = cgroup.add_pid(std::process::id() as i32) {
            let _ = writeln!(ready, "{e}");
            crate::process::exit_child(125);
        }
        let argv: Vec<*const libc::c_char> = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        // SAFETY: argv is a NULL-terminated array of C strings that outlive the call.
        unsafe { libc::execv(args[0].as_ptr(), argv.as_ptr()) };
        let _ = writeln!(
            ready,
            "exec {}: {}",
            shim.display(),
            std::io::Error::last_os_error()
        );
        crate::process::exit_child(127);
    };
    cleanup.pid = Some(pid);
    drop((slave, fifo_read, fifo_write, ready_write));

    let mut answer = String::new();
    let _ = std::fs::File::from(ready_read).read_to_string(&mut answer);
    let answer = answer.trim();
    if answer != "ok" {
        return Err(Error::msg(if answer.is_empty() {
            "the VM shim exited before the VM came up".to_string()
        } else {
            answer.to_string()
        }));
    }
    let state = State {
        id: opts.id.clone(),
        pid,
        pid_start: util::proc_start_time(pid)
            .ok_or_else(|| Error::msg("the VM shim exited before it was ready"))?,
        bundle: bundle.to_path_buf(),
        rootfs: rootfs.to_path_buf(),
        created: util::now_rfc3339(),
        owner: String::new(),
        annotations: spec.annotations.clone(),
        cgroup,
        // A SIGKILL goes to the whole cgroup: the shim and the VMM.
        own_pid_ns: false,
    };
    dir.save(&state)?;
    if let Some(pid_file) = &opts.pid_file {
        util::write_atomic(pid_file, pid.to_string().as_bytes())?;
    }
    cleanup.armed = false;
    Ok(pid)
}

/// Connects to a port of the guest through the VM's vsock socket in
/// `state_dir` (reached through an O_PATH fd, so a long directory name does
/// not overflow a socket address); `timeout` bounds the wait for the
/// guest's answer.
pub fn connect(state_dir: &Path, port: u32, timeout: std::time::Duration) -> Result<UnixStream> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(state_dir)
        .context(|| format!("open {}", state_dir.display()))?;
    let path = format!("/proc/self/fd/{}/{VSOCK_SOCKET}", dir.as_raw_fd());
    let mut stream = UnixStream::connect(&path).context(|| {
        format!(
            "connect to the VM's vsock socket in {}",
            state_dir.display()
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .context(|| "set a timeout".to_string())?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .context(|| "connect to the VM's agent".to_string())?;
    // The answer, a byte at a time: what follows it is the agent's.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(Error::io("read the VM's vsock answer", e)),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(Error::msg(format!(
            "the VM's port {port} does not answer ({:?})",
            String::from_utf8_lossy(&line)
        )));
    }
    stream
        .set_read_timeout(None)
        .context(|| "clear the timeout".to_string())?;
    Ok(stream)
}

/// `exec` in a VM container: the agent runs the process; our stdio is
/// carried to it (foreground) or the call returns once it started
/// (detached).
pub(crate) fn exec(dir: &ContainerDir, opts: &crate::exec::ExecOptions) -> Result<i32> {
    // containerd's contract (`exec --detach --pid-file`, `--console-socket`):
    // the pid file names a process that lives as long as the one in the
    // guest, with its stdio or a terminal whose master went to the socket.
    // A relay of ours is that process.
    let held = opts.console_socket.is_some() || (opts.detach && opts.pid_file.is_some());
    let mut stream = connect(
        &dir.path,
        proto::AGENT_PORT,
        std::time::Duration::from_secs(10),
    )?;
    let request = proto::Request::Exec {
        id: opts.id.clone(),
        process: Box::new(opts.process.clone()),
        detach: opts.detach && !held,
    };
    proto::Frame::Request(serde_json::to_vec(&request).expect("requests serialize"))
        .write_to(&mut stream)
        .context(|| "send the exec to the VM's agent".to_string())?;
    if held {
        return exec_held(stream, opts);
    }
    if let Some(pid_file) = &opts.pid_file {
        util::write_atomic(pid_file, std::process::id().to_string().as_bytes())?;
    }
    if opts.detach {
        let mut reader = std::io::BufReader::new(stream);
        loop {
            match proto::Frame::read_from(&mut reader) {
                Ok(Some(proto::Frame::Exit(code))) => return Ok(code),
                Ok(Some(proto::Frame::Stderr(data))) => {
                    let _ = std::io::stderr().write_all(&data);
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(Error::msg("the VM's agent hung up")),
                Err(e) => return Err(Error::io("read from the VM's agent", e)),
            }
        }
    }
    relay::relay_stdio(stream, opts.process.terminal, || None)
}

/// An exec whose guest process a relay process of ours stands for.
fn exec_held(stream: UnixStream, opts: &crate::exec::ExecOptions) -> Result<i32> {
    let terminal = opts.process.terminal;
    let slave = match &opts.console_socket {
        Some(path) if terminal => Some(terminal_for(
            &crate::console::connect(path)?,
            opts.process.console_size,
        )?),
        _ => None,
    };
    let Some(relay) = crate::process::fork()? else {
        session_on(slave.as_ref());
        drop(slave);
        let code = relay::relay_stdio(stream, terminal, || None).unwrap_or_else(|e| {
            eprintln!("{e}");
            255
        });
        crate::process::exit_child(code);
    };
    drop((slave, stream));
    if let Some(pid_file) = &opts.pid_file {
        util::write_atomic(pid_file, relay.to_string().as_bytes())?;
    }
    if opts.detach {
        return Ok(0);
    }
    Ok(crate::process::exit_code(crate::process::wait_child(
        relay,
    )?))
}

/// Whether a recorded container is a VM.
pub fn is_vm(state: &State) -> bool {
    wants_vm(&state.annotations)
}
