//! One connection: the host's request, the process run by keel-runtime in
//! a child of ours (the "runner": `run` or `exec` in the foreground, as a
//! user would type them) with its stdio on pipes or a terminal of ours,
//! and the frames both ways until its exit code.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use keel_runtime::container::CreateOptions;
use keel_runtime::exec::ExecOptions;
use keel_runtime::vm::proto::{DATA_CHUNK, Frame, Request, Share};
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// keel-runtime's state in the guest.
const RUNTIME_ROOT: &str = "/run/keel/runtime";
/// The container's bundle in the guest (its root is a share).
const BUNDLE: &str = "/run/keel/bundle";
/// Made once the container's process has ended.
const EXITED: &str = "/run/keel/exited";

pub fn handle(connection: OwnedFd) -> i32 {
    let mut stream = File::from(connection);
    let request = match Frame::read_from(&mut stream) {
        Ok(Some(Frame::Request(json))) => serde_json::from_slice::<Request>(&json)
            .map_err(|e| format!("a request the agent cannot read: {e}")),
        Ok(other) => Err(format!("expected a request, got {other:?}")),
        Err(e) => Err(format!("read the request: {e}")),
    };
    let result = request.and_then(|request| match request {
        Request::Run {
            id,
            config,
            shares,
            interfaces,
            gateway,
            gateway6,
        } => {
            mount_shares(&shares)?;
            if !interfaces.is_empty() {
                crate::net::configure(&interfaces, gateway.as_deref(), gateway6.as_deref())?;
                if let Ok(None) = keel_runtime::process::fork() {
                    crate::net::serve_dns();
                }
            }
            let terminal = config.process().terminal;
            let bundle = PathBuf::from(BUNDLE);
            std::fs::create_dir_all(&bundle).map_err(|e| format!("create {BUNDLE}: {e}"))?;
            std::fs::write(
                bundle.join("config.json"),
                serde_json::to_vec(&config).expect("configs serialize"),
            )
            .map_err(|e| format!("write the config: {e}"))?;
            let options = CreateOptions {
                id,
                bundle,
                // The guest's root is the initramfs, which pivot_root
                // cannot leave (runc's --no-pivot case): the container's
                // root is moved over it and chrooted into instead.
                no_pivot: true,
                ..CreateOptions::default()
            };
            let code = run(&mut stream, terminal, false, move || {
                keel_runtime::container::run(Path::new(RUNTIME_ROOT), &options, false, false, true)
            });
            let _ = std::fs::write(EXITED, "");
            Ok(code)
        }
        Request::Exec {
            id,
            process,
            detach,
        } => {
            wait_for_container(&id);
            let options = ExecOptions {
                id,
                process: *process,
                detach,
                ..ExecOptions::default()
            };
            let terminal = options.process.terminal && !detach;
            Ok(run(&mut stream, terminal, detach, move || {
                keel_runtime::exec::exec(Path::new(RUNTIME_ROOT), &options)
            }))
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            let _ = Frame::Stderr(format!("keel-guest: {message}\n").into_bytes())
                .write_to(&mut stream);
            let _ = Frame::Exit(125).write_to(&mut stream);
            125
        }
    }
}

/// An exec may come as soon as the host's `start` returned, before the
/// guest's runtime has made the container: it waits for it (a while).
fn wait_for_container(id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline && !Path::new(EXITED).exists() {
        let ready = keel_runtime::state::ContainerDir::new(Path::new(RUNTIME_ROOT), id)
            .and_then(|dir| dir.load().map(|state| (dir, state)))
            .is_ok_and(|(dir, state)| dir.status(&state) != keel_runtime::state::Status::Created);
        if ready {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The 9p shares mounted where the config expects them.
fn mount_shares(shares: &[Share]) -> Result<(), String> {
    for share in shares {
        std::fs::create_dir_all(&share.path).map_err(|e| format!("create {}: {e}", share.path))?;
        let mut flags = MsFlags::empty();
        if share.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        // Over vsock: the kernel takes its own hold of the connection.
        let (connection, transport) = match share.port {
            Some(port) => {
                let connection = crate::net::vsock_connect(port).ok_or_else(|| {
                    format!(
                        "connect to the host's 9p server for {} (vsock port {port}): {}",
                        share.tag,
                        std::io::Error::last_os_error()
                    )
                })?;
                let fd = connection.as_raw_fd();
                (Some(connection), format!("trans=fd,rfdno={fd},wfdno={fd}"))
            }
            None => (None, "trans=virtio".to_string()),
        };
        mount(
            Some(share.tag.as_str()),
            share.path.as_str(),
            Some("9p"),
            flags,
            Some(
                format!("{transport},version=9p2000.L,msize=524288,cache=mmap,access=client")
                    .as_str(),
            ),
        )
        .map_err(|e| format!("mount the host's {} on {}: {e}", share.tag, share.path))?;
        drop(connection);
    }
    Ok(())
}

/// The stdio the runner gets, and our ends of it.
enum Stdio {
    /// Pipes: our write end of its stdin, our read ends of its output.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
        theirs: [OwnedFd; 3],
    },
    /// A terminal: our master, its slave.
    Terminal { master: OwnedFd, slave: OwnedFd },
    /// Nothing (a detached exec).
    Null,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn stdio(terminal: bool, detach: bool) -> Result<Stdio, String> {
    if detach {
        return Ok(Stdio::Null);
    }
    if terminal {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("open a pty: {e}"))?;
        return Ok(Stdio::Terminal {
            master: pty.master,
            slave: pty.slave,
        });
    }
    let (in_read, in_write) = pipe()?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    Ok(Stdio::Pipes {
        stdin: Some(in_write),
        stdout: out_read,
        stderr: err_read,
        theirs: [in_read, out_write, err_write],
    })
}

/// Runs `work` in a child with the connection's stdio; returns once the
/// host has the exit code.
fn run(
    stream: &mut File,
    terminal: bool,
    detach: bool,
    work: impl FnOnce() -> keel_runtime::Result<i32>,
) -> i32 {
    let io = match stdio(terminal, detach) {
        Ok(io) => io,
        Err(e) => return fail(stream, &e),
    };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&chld), None);
    let children = match SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
    {
        Ok(fd) => fd,
        Err(e) => return fail(stream, &format!("signalfd: {e}")),
    };
    let runner = match keel_runtime::process::fork() {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None);
            let terminal = match &io {
                Stdio::Terminal { slave, .. } => Some(slave),
                _ => None,
            };
            keel_runtime::vm::session_on(terminal);
            // SAFETY: our own fds placed as the runner's stdio.
            unsafe {
                match &io {
                    Stdio::Terminal { .. } => {}
                    Stdio::Pipes { theirs, .. } => {
                        for (n, fd) in theirs.iter().enumerate() {
                            libc::dup2(fd.as_raw_fd(), n as RawFd);
                        }
                    }
                    Stdio::Null => {
                        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                        for n in 0..3 {
                            libc::dup2(null, n);
                        }
                    }
                }
            }
            drop(io);
            let code = match work() {
                Ok(code) => code,
                Err(e) => {
                    let message = e.to_string();
                    eprintln!("{message}");
                    keel_runtime::error::start_exit_code(&message)
                }
            };
            keel_runtime::process::exit_child(code);
        }
        Err(e) => return fail(stream, &format!("fork: {e}")),
    };
    relay(stream, runner, io, children)
}

fn fail(stream: &mut File, message: &str) -> i32 {
    let _ = Frame::Stderr(format!("keel-guest: {message}\n").into_bytes()).write_to(stream);
    let _ = Frame::Exit(125).write_to(stream);
    125
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flags on our own fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// The process's output as frames to the host, the host's frames to it,
/// until the runner exits; then its code.
fn relay(stream: &mut File, runner: i32, io: Stdio, children: SignalFd) -> i32 {
    // Our ends: where input goes, where output comes from (and as what).
    let (mut input, mut outputs, master): (Option<OwnedFd>, Vec<(OwnedFd, bool)>, Option<RawFd>) =
        match io {
            Stdio::Pipes {
                stdin,
                stdout,
                stderr,
                theirs,
            } => {
                drop(theirs);
                (stdin, vec![(stdout, false), (stderr, true)], None)
            }
            Stdio::Terminal { master, slave } => {
                drop(slave);
                let input = master.try_clone().ok();
                let raw = master.as_raw_fd();
                (input, vec![(master, false)], Some(raw))
            }
            Stdio::Null => (None, Vec::new(), None),
        };
    for fd in input.iter().chain(outputs.iter().map(|(fd, _)| fd)) {
        set_nonblocking(fd.as_raw_fd());
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut close_input = false;
    let mut host_open = true;
    let mut incoming = Vec::new();
    let mut buffer = vec![0u8; DATA_CHUNK];
    let mut exit: Option<i32> = None;
    let mut drain_until = None;
    loop {
        if let Some(code) = exit {
            let drained = outputs.is_empty();
            let late =
                drain_until.is_some_and(|t: std::time::Instant| t <= std::time::Instant::now());
            if drained || late {
                let _ = Frame::Exit(code).write_to(stream);
                wait_for_hangup(stream);
                return code;
            }
        }
        let mut fds = Vec::new();
        if host_open && exit.is_none() && pending.len() < (1 << 20) {
            fds.push((stream.as_raw_fd(), libc::POLLIN, 0usize));
        }
        fds.push((children.as_raw_fd(), libc::POLLIN, 1));
        for (i, (fd, _)) in outputs.iter().enumerate() {
            fds.push((fd.as_raw_fd(), libc::POLLIN, 10 + i));
        }
        if let Some(fd) = &input
            && !pending.is_empty()
        {
            fds.push((fd.as_raw_fd(), libc::POLLOUT, 2));
        }
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .map(|(fd, events, _)| libc::pollfd {
                fd: *fd,
                events: *events,
                revents: 0,
            })
            .collect();
        let timeout = if exit.is_some() { 50 } else { -1 };
        // SAFETY: poll on our array.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        let mut closed = Vec::new();
        for (p, (_, _, what)) in polled.iter().zip(&fds) {
            if p.revents == 0 {
                continue;
            }
            match *what {
                0 => match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => host_open = false,
                    Ok(n) => {
                        incoming.extend_from_slice(&buffer[..n]);
                        while let Ok(Some(frame)) = Frame::decode(&mut incoming) {
                            match frame {
                                Frame::Stdin(data) => pending.extend_from_slice(&data),
                                Frame::StdinEof if master.is_none() => close_input = true,
                                Frame::Resize { rows, cols } => {
                                    if let Some(master) = master {
                                        keel_runtime::console::set_size(master, rows, cols);
                                    }
                                }
                                // SAFETY: a signal to our own child.
                                Frame::Signal(n) => unsafe {
                                    libc::kill(runner, n);
                                },
                                _ => {}
                            }
                        }
                    }
                },
                1 => {
                    while let Ok(Some(_)) = children.read_signal() {}
                    let mut status = 0;
                    // SAFETY: waitpid on our child into a valid int.
                    if unsafe { libc::waitpid(runner, &mut status, libc::WNOHANG) } == runner {
                        exit = Some(keel_runtime::process::exit_code(status));
                        drain_until =
                            Some(std::time::Instant::now() + std::time::Duration::from_millis(500));
                        input = None;
                    }
                }
                2 => {
                    if let Some(fd) = &input {
                        // SAFETY: a write from our buffer to our fd.
                        let n = unsafe {
                            libc::write(fd.as_raw_fd(), pending.as_ptr().cast(), pending.len())
                        };
                        if n > 0 {
                            pending.drain(..n as usize);
                        } else if n < 0
                            && std::io::Error::last_os_error().kind()
                                != std::io::ErrorKind::WouldBlock
                        {
                            pending.clear();
                            input = None;
                        }
                    }
                }
                i => {
                    let (fd, is_stderr) = &outputs[i - 10];
                    let mut file = std::mem::ManuallyDrop::new(
                        // SAFETY: borrowed for this read; ManuallyDrop keeps it open.
                        unsafe { File::from_raw_fd(fd.as_raw_fd()) },
                    );
                    match file.read(&mut buffer) {
                        Ok(0) => closed.push(i - 10),
                        Ok(n) => {
                            let data = buffer[..n].to_vec();
                            let frame = if *is_stderr {
                                Frame::Stderr(data)
                            } else {
                                Frame::Stdout(data)
                            };
                            if frame.write_to(stream).is_err() {
                                host_open = false;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // EIO: the terminal's last slave closed.
                        Err(_) => closed.push(i - 10),
                    }
                }
            }
        }
        closed.sort_unstable();
        for i in closed.into_iter().rev() {
            outputs.remove(i);
        }
        if close_input && pending.is_empty() {
            input = None;
            close_input = false;
        }
    }
}

/// Waits (a little) for the host to hang up after the exit code: until
/// then the code may still be in the guest's vsock queue, and the VM must
/// not power off under it.
fn wait_for_hangup(stream: &mut File) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut buffer = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        let mut fd = libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd of ours.
        if unsafe { libc::poll(&mut fd, 1, 100) } > 0 {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
