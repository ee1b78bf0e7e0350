//! The host's end of a process in a micro-VM: our stdin, stdout and stderr
//! carried over the agent's connection, signals sent to us forwarded to the
//! process, our terminal's size followed, and the process's exit code
//! returned. The VM shim runs it with the container's stdio (the monitor's
//! pipes, or a terminal); `exec` with the caller's.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios;

use super::proto::{DATA_CHUNK, Frame};
use crate::error::{Context, Error, Result};

/// Our terminal in raw mode until dropped.
struct RawTerminal(Option<termios::Termios>);

impl RawTerminal {
    fn new(terminal: bool) -> RawTerminal {
        if !terminal {
            return RawTerminal(None);
        }
        let stdin = std::io::stdin();
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, saved);
        }
    }
}

/// The size of the terminal on our stdin, if it is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes one winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0)
            .then_some((ws.ws_row, ws.ws_col))
    }
}

/// The signals forwarded to the process (see
/// [`crate::container::forwardable_signals`]). A process with threads
/// blocks them in every thread (before it starts any) so that they wait
/// for the relay's signalfd instead of ending it.
pub fn forwarded() -> SigSet {
    crate::container::forwardable_signals()
}

/// Carries the process's stdio over `stream` until its exit code arrives.
/// `child_exited` is asked on each SIGCHLD: a message there (the VMM
/// died) ends the relay with that error.
pub fn relay_stdio(
    mut stream: UnixStream,
    terminal: bool,
    mut child_exited: impl FnMut() -> Option<String>,
) -> Result<i32> {
    let set = forwarded();
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .context(|| "block signals".to_string())?;
    let result = (|| {
        let mut signals =
            SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .context(|| "signalfd".to_string())?;
        let _raw = RawTerminal::new(terminal);
        if terminal && let Some((rows, cols)) = terminal_size() {
            send(&mut stream, &Frame::Resize { rows, cols })?;
        }
        pump(&mut stream, &mut signals, &mut child_exited)
    })();
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    result
}

fn send(stream: &mut UnixStream, frame: &Frame) -> Result<()> {
    frame
        .write_to(stream)
        .context(|| "write to the VM's agent".to_string())
}

fn pump(
    stream: &mut UnixStream,
    signals: &mut SignalFd,
    child_exited: &mut impl FnMut() -> Option<String>,
) -> Result<i32> {
    let mut stdin_open = true;
    let mut incoming = Vec::new();
    let mut buffer = vec![0u8; DATA_CHUNK];
    // The VMM ended: what the guest sent before may still be on its way
    // (the exit code among it); it is waited for a moment.
    let mut ended: Option<(String, std::time::Instant)> = None;
    loop {
        if let Some((message, deadline)) = &ended
            && std::time::Instant::now() >= *deadline
        {
            return Err(Error::msg(message.clone()));
        }
        // SAFETY: fd 0 stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut fds = vec![
            libc::pollfd {
                fd: stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if stdin_open {
            fds.push(libc::pollfd {
                fd: stdin.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = if ended.is_some() { 50 } else { -1 };
        // SAFETY: poll on our array of valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("poll", e));
        }
        if fds[0].revents != 0 {
            let n = match stream.read(&mut buffer) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read from the VM's agent", e)),
            };
            if n == 0 {
                return Err(Error::msg(match ended {
                    Some((message, _)) => message,
                    None => "the VM's agent hung up before the process exited".into(),
                }));
            }
            incoming.extend_from_slice(&buffer[..n]);
            while let Some(frame) = Frame::decode(&mut incoming)
                .map_err(|e| Error::io("read from the VM's agent", e))?
            {
                match frame {
                    Frame::Stdout(data) => write_out(1, &data),
                    Frame::Stderr(data) => write_out(2, &data),
                    Frame::Exit(code) => return Ok(code),
                    _ => {}
                }
            }
        }
        if fds[1].revents != 0 {
            while let Ok(Some(info)) = signals.read_signal() {
                let signal = info.ssi_signo as i32;
                if signal == libc::SIGWINCH {
                    if let Some((rows, cols)) = terminal_size() {
                        send(stream, &Frame::Resize { rows, cols })?;
                    }
                } else if signal == libc::SIGCHLD {
                    if ended.is_none()
                        && let Some(message) = child_exited()
                    {
                        let wait = std::time::Duration::from_secs(2);
                        ended = Some((message, std::time::Instant::now() + wait));
                    }
                } else {
                    send(stream, &Frame::Signal(signal))?;
                }
            }
        }
        if stdin_open && fds[2].revents != 0 {
            let mut file = std::mem::ManuallyDrop::new(
                // SAFETY: fd 0, not closed: ManuallyDrop keeps it open.
                unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(0) },
            );
            match file.read(&mut buffer) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    send(stream, &Frame::StdinEof)?;
                }
                Ok(n) => send(stream, &Frame::Stdin(buffer[..n].to_vec()))?,
            }
        }
    }
}

/// Writes all of `data` to one of our own fds (a closed reader loses it).
fn write_out(fd: i32, data: &[u8]) {
    let mut file = std::mem::ManuallyDrop::new(
        // SAFETY: our stdout/stderr, kept open by ManuallyDrop.
        unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) },
    );
    let _ = file.write_all(data);
}
