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
        let ws = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
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
