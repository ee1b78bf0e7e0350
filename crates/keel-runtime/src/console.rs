//! `process.terminal`: a pty opened inside the container (its own devpts),
//! the master sent over `--console-socket` with SCM_RIGHTS exactly as go-runc
//! and conmon expect (one message, non-empty payload, one fd), the slave
//! made the controlling terminal and stdio, and bound over /dev/console.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::{Context, Error, Result};
use crate::mounts;
use crate::spec::ConsoleSize;

/// Connects to the caller's console socket (done by the runtime on the
/// host before it enters the container).
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let stream = UnixStream::connect(path)
        .context(|| format!("connect to console socket {}", path.display()))?;
    Ok(stream.into())
}

pub fn send_fd(socket: &OwnedFd, name: &str, fd: RawFd) -> Result<()> {
    let payload = name.as_bytes();
    let iov = [IoSlice::new(payload)];
    let fds = [fd];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context(|| "send pty master to console socket".to_string())?;
    Ok(())
}

/// Inside the container (after pivot_root): opens a pty, sends the master
/// to `socket`, and makes the slave our terminal and stdio.
pub fn setup(socket: &OwnedFd, size: Option<ConsoleSize>, bind_console: bool) -> Result<()> {
    // SAFETY: plain libc pty calls; fds are checked and owned below.
    let master = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Err(Error::io("open /dev/ptmx", std::io::Error::last_os_error()));
    }
    // SAFETY: master is a new fd we own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) } != 0 {
        return Err(Error::io("unlock pty", std::io::Error::last_os_error()));
    }
    // TIOCGPTPEER opens the slave through the master, with no path lookup.
    // SAFETY: ioctl returning a new fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY,
        )
    };
    if slave < 0 {
        return Err(Error::io("open pty slave", std::io::Error::last_os_error()));
    }
    // SAFETY: slave is a new fd we own.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/dev/ptmx".to_string());
    if let Some(size) = size {
        set_size(master.as_raw_fd(), size.height, size.width);
    }
    if bind_console {
        if !Path::new("/dev/console").exists() {
            let _ = std::fs::File::create("/dev/console");
        }
        mounts::mount(Some(&slave_path), "/dev/console", None, libc::MS_BIND, None)
            .map_err(|e| Error::io("bind pty to /dev/console", e))?;
    }
    send_fd(socket, &slave_path, master.as_raw_fd())?;
    drop(master);
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds, which we intend to replace.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::io(
                format!("dup pty to fd {target}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: TIOCSCTTY with arg 0 on our own session's tty.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::io(
            "set controlling terminal",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Foreground `run`/`exec` with a terminal and no `--console-socket`: the
/// runtime itself receives the pty master and copies between it and its own
/// stdio, with its terminal in raw mode, as runc does.
pub struct Proxy {
    ours: OwnedFd,
}

impl Proxy {
    /// Our end, and the end to hand to the container as its console socket.
    pub fn pair() -> Result<(Proxy, OwnedFd)> {
        let (a, b) = UnixStream::pair().context(|| "console socketpair".to_string())?;
        Ok((Proxy { ours: a.into() }, b.into()))
    }

    /// Receives the pty master the container sends.
    pub fn receive_master(&self) -> Result<OwnedFd> {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(RawFd);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            self.ours.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context(|| "receive pty master".to_string())?;
        for c in msg
            .cmsgs()
            .map_err(|e| Error::sys("receive pty master", e))?
        {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c
                && let Some(fd) = fds.first()
            {
                // SAFETY: the kernel installed this fd for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
        Err(Error::msg("the container sent no pty master"))
    }
}

/// Our stdio attached to a pty master until the container exits.
pub struct Attached {
    master: OwnedFd,
    saved: Option<nix::sys::termios::Termios>,
    output: Option<std::thread::JoinHandle<()>>,
}

pub fn attach(master: OwnedFd) -> Result<Attached> {
    use nix::sys::termios;
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).ok();
    if let Some(saved) = &saved {
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
    }
    let mut attached = Attached {
        master,
        saved,
        output: None,
    };
    attached.resize();
    let input_fd = attached
        .master
        .try_clone()
        .context(|| "dup pty master".to_string())?;
    std::thread::spawn(move || {
        let mut input = std::fs::File::from(input_fd);
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
    });
    let output_fd = attached
        .master
        .try_clone()
        .context(|| "dup pty master".to_string())?;
    let output = std::thread::spawn(move || {
        let mut output = std::fs::File::from(output_fd);
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match std::io::Read::read(&mut output, &mut buf) {
                // EIO: the last slave fd closed (the container exited).
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if std::io::Write::write_all(&mut stdout, &buf[..n]).is_err() {
                        break;
                    }
                    let _ = std::io::Write::flush(&mut stdout);
                }
            }
        }
    });
    attached.output = Some(output);
    Ok(attached)
}

/// Sets a terminal's window size (`rows` x `cols`) on its fd.
pub fn set_size(fd: std::os::fd::RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize we own.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

impl Attached {
    /// Copies our terminal's size to the pty (on start and on SIGWINCH).
    pub fn resize(&self) {
        // SAFETY: winsize is plain data; TIOCGWINSZ/TIOCSWINSZ read and
        // write one.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// Waits for the last output and restores the terminal.
    pub fn finish(mut self) {
        if let Some(output) = self.output.take() {
            let _ = output.join();
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}
