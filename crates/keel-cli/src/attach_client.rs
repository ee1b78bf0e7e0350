//! The CLI's end of an attach connection (`run` without `-d`, `start -a`,
//! `attach`): the container's stdout and stderr to ours, our stdin to it,
//! and, with a terminal, raw mode, the window size (and its changes) and
//! the detach keys (ctrl-p ctrl-q, as docker). Signals sent to us go to
//! the container (`--sig-proxy`, on by default without a terminal).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use keel_engine::attach::{self, Frame};

/// How the session ended.
pub enum Ended {
    /// The container exited with this code.
    Exited(i32),
    /// The user typed the detach keys.
    Detached,
    /// The monitor hung up without saying how the container ended.
    Lost,
}

pub struct Session {
    pub stream: UnixStream,
    pub stdin: bool,
    pub tty: bool,
    pub sig_proxy: bool,
    /// For `--sig-proxy`: where the runtime's state is, and the id.
    pub runtime_root: PathBuf,
    pub id: String,
    /// docker's `--detach-keys` as bytes (ctrl-p ctrl-q by default).
    pub detach_keys: Vec<u8>,
}

/// `ctrl-p,ctrl-q` → [0x10, 0x11] (keel-engine reads docker's spelling).
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>> {
    Ok(keel_engine::attach::parse_detach_keys(text)?)
}

/// Puts the terminal on stdin in raw mode until dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable() -> RawMode {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        RawMode(saved)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

fn window_size() -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ on our stdout fills the winsize.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Blocks the signals a session forwards to the container. Done before the
/// container starts (and again by [`run`]), so that one sent between the
/// start and the session's signal thread waits for that thread instead of
/// ending keel; blocked before any thread exists, so that only that thread
/// takes them. Processes keel starts get an empty mask from the runtime.
pub fn block_forwarded_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    set.thread_block().context("block signals")?;
    Ok(set)
}

/// Runs the session until the container exits or the user detaches.
pub fn run(session: Session) -> Result<Ended> {
    use nix::sys::signal::Signal;
    let set = block_forwarded_signals()?;
    let raw = (session.tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false))
        .then(RawMode::enable);

    let writer = Arc::new(Mutex::new(
        session
            .stream
            .try_clone()
            .context("clone the attach connection")?,
    ));
    let send = {
        let writer = writer.clone();
        move |frame: Frame| {
            if let Ok(mut w) = writer.lock() {
                let _ = attach::write_frame(&mut *w, &frame);
            }
        }
    };
    if session.tty
        && let Some((rows, cols)) = window_size()
    {
        send(Frame::Resize { rows, cols });
    }
    let (done_tx, done_rx) = mpsc::channel::<Ended>();

    // Output.
    {
        let mut stream = session
            .stream
            .try_clone()
            .context("clone the attach connection")?;
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            loop {
                match attach::read_frame(&mut stream) {
                    Ok(Some(Frame::Stdout(data))) => {
                        let mut out = stdout.lock();
                        let _ = out.write_all(&data);
                        let _ = out.flush();
                    }
                    Ok(Some(Frame::Stderr(data))) => {
                        let mut err = stderr.lock();
                        let _ = err.write_all(&data);
                        let _ = err.flush();
                    }
                    Ok(Some(Frame::Exit(info))) => {
                        let _ = done.send(Ended::Exited(info.exit_code));
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        let _ = done.send(Ended::Lost);
                        return;
                    }
                }
            }
        });
    }

    // Input.
    if session.stdin {
        let send = send.clone();
        let done = done_tx.clone();
        let keys = session.detach_keys.clone();
        let watch_keys = session.tty && !keys.is_empty();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0u8; 32 * 1024];
            let mut scanner = attach::DetachScanner::new(keys);
            loop {
                let n = match stdin.read(&mut buffer) {
                    Ok(0) | Err(_) => {
                        send(Frame::StdinClose);
                        return;
                    }
                    Ok(n) => n,
                };
                let mut data = &buffer[..n];
                if watch_keys {
                    let (forward, detached) = scanner.feed(data);
                    if !forward.is_empty() {
                        send(Frame::Stdin(forward));
                    }
                    if detached {
                        let _ = done.send(Ended::Detached);
                        return;
                    }
                    continue;
                }
                while !data.is_empty() {
                    let piece = &data[..data.len().min(32 * 1024)];
                    send(Frame::Stdin(piece.to_vec()));
                    data = &data[piece.len()..];
                }
            }
        });
    }

    // Signals.
    {
        let send = send.clone();
        let tty = session.tty;
        let proxy = session.sig_proxy;
        let runtime_root = session.runtime_root.clone();
        let id = session.id.clone();
        std::thread::spawn(move || {
            loop {
                let Ok(signal) = set.wait() else { return };
                if signal == Signal::SIGWINCH {
                    if tty && let Some((rows, cols)) = window_size() {
                        send(Frame::Resize { rows, cols });
                    }
                } else if proxy {
                    let _ = keel_runtime::container::kill(&runtime_root, &id, signal as i32, false);
                }
            }
        });
    }
    drop(done_tx);
    let ended = done_rx.recv().unwrap_or(Ended::Lost);
    drop(raw);
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_as_docker_reads_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [0x10, 0x11]);
        assert_eq!(parse_detach_keys("a,ctrl-b").unwrap(), [b'a', 0x02]);
        assert!(parse_detach_keys("ctrl-").is_err());
        assert!(parse_detach_keys("shift-a").is_err());
    }
}
