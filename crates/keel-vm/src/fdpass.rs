//! File descriptors passed over unix sockets (SCM_RIGHTS): what the
//! vhost-user relay carries from the VMM to the daemon, and how keel
//! hands a migrated VM's tap to its VMM.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Sends `bytes` with `fds`; how many bytes went (the fds go with the
/// first).
pub fn send(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    let iov = [std::io::IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(std::io::Error::from)
}

/// Receives into `buffer` (up to 8 fds with it, close-on-exec): how many
/// bytes, and the fds.
pub fn receive(stream: &UnixStream, buffer: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(buffer)];
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just gave us these fds.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((message.bytes, fds))
}

/// Hands `fd` over (with one byte).
pub fn send_fd(stream: &UnixStream, fd: &impl AsRawFd) -> std::io::Result<()> {
    send(stream, b"t", &[fd.as_raw_fd()]).map(|_| ())
}

/// Takes the fd [`send_fd`] handed over; None if none came.
pub fn receive_fd(stream: &UnixStream) -> std::io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    Ok(receive(stream, &mut byte)?.1.into_iter().next())
}

/// In a child between fork and exec: puts `fd` at number `at`, open
/// across exec (async-signal-safe: dup2 or fcntl only).
pub fn place(fd: RawFd, at: RawFd) -> std::io::Result<()> {
    // SAFETY: dup2/fcntl on descriptors the caller names.
    let moved = unsafe {
        if fd == at {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, at)
        }
    };
    if moved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Takes over the fd a parent handed at number `text` (`--tap-fd 3`),
/// close-on-exec from now on; None if `text` is not a number.
///
/// # Safety
/// The fd must be this process's to own, and nothing else may own it.
pub unsafe fn adopt(text: &str) -> Option<OwnedFd> {
    let fd = text.parse::<RawFd>().ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the caller vouches for the number.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fcntl on the fd we now own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(fd)
}
