//! The monitor's socket (`<runroot>/containers/<id>/attach`) and what goes
//! over it: frames of `[kind: u8][length: u32 big-endian][payload]`.
//!
//! A client says [`Hello`] first: which streams it wants, and whether the
//! monitor should start the container now (`keel run` and `start -a`
//! attach before the start, so no output is missed). The monitor sends the
//! container's output, `Started` (or `Error`) and, when the container
//! exits, `Exit`; then it closes the connection. `keel wait` is a client
//! that wants no stream. Clients send stdin, its end, and terminal sizes.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest frame accepted (output comes in pieces of at most 32 KiB).
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hello {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Start the container (it was created waiting for this client).
    pub start: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Stdin(Vec<u8>),
    StdinClose,
    Resize { rows: u16, cols: u16 },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Started,
    Error(String),
    Exit(ExitInfo),
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Hello(hello) => (b'H', serde_json::to_vec(hello).expect("hello serializes")),
            Frame::Stdin(data) => (b'0', data.clone()),
            Frame::StdinClose => (b'c', Vec::new()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend(cols.to_be_bytes());
                (b'r', p)
            }
            Frame::Stdout(data) => (b'1', data.clone()),
            Frame::Stderr(data) => (b'2', data.clone()),
            Frame::Started => (b's', Vec::new()),
            Frame::Error(message) => (b'e', message.as_bytes().to_vec()),
            Frame::Exit(info) => (b'x', serde_json::to_vec(info).expect("exit serializes")),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend((payload.len() as u32).to_be_bytes());
        out.extend(payload);
        out
    }

    /// Decodes one frame from the front of `buffer`: the frame and its
    /// length in bytes, or None if the buffer does not hold it all yet.
    pub fn decode(buffer: &[u8]) -> Result<Option<(Frame, usize)>> {
        if buffer.len() < 5 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if length > MAX_FRAME {
            return Err(Error::msg(format!(
                "attach: a frame of {length} bytes is too large"
            )));
        }
        if buffer.len() < 5 + length {
            return Ok(None);
        }
        let payload = &buffer[5..5 + length];
        let bad = |what: &str| Error::msg(format!("attach: a bad {what} frame"));
        let frame = match buffer[0] {
            b'H' => Frame::Hello(serde_json::from_slice(payload).map_err(|_| bad("hello"))?),
            b'0' => Frame::Stdin(payload.to_vec()),
            b'c' => Frame::StdinClose,
            b'r' if length == 4 => Frame::Resize {
                rows: u16::from_be_bytes([payload[0], payload[1]]),
                cols: u16::from_be_bytes([payload[2], payload[3]]),
            },
            b'1' => Frame::Stdout(payload.to_vec()),
            b'2' => Frame::Stderr(payload.to_vec()),
            b's' => Frame::Started,
            b'e' => Frame::Error(String::from_utf8_lossy(payload).into_owned()),
            b'x' => Frame::Exit(serde_json::from_slice(payload).map_err(|_| bad("exit"))?),
            other => return Err(Error::msg(format!("attach: unknown frame kind {other}"))),
        };
        Ok(Some((frame, 5 + length)))
    }
}

/// Reads one whole frame from a blocking stream; None at a clean end.
pub fn read_frame(stream: &mut impl Read) -> Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match stream.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("read from the container's monitor", e)),
    }
    let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if length > MAX_FRAME {
        return Err(Error::msg(format!(
            "attach: a frame of {length} bytes is too large"
        )));
    }
    let mut frame = head.to_vec();
    frame.resize(5 + length, 0);
    stream
        .read_exact(&mut frame[5..])
        .map_err(|e| Error::io("read from the container's monitor", e))?;
    Frame::decode(&frame).map(|f| f.map(|(frame, _)| frame))
}

pub fn write_frame(stream: &mut impl Write, frame: &Frame) -> Result<()> {
    stream
        .write_all(&frame.encode())
        .map_err(|e| Error::io("write to the container's monitor", e))
}

/// docker's detach keys: `ctrl-p,ctrl-q` → [0x10, 0x11]; `a,ctrl-b` →
/// [b'a', 0x02].
pub fn parse_detach_keys(text: &str) -> Result<Vec<u8>> {
    let mut keys = Vec::new();
    for key in text.split(',') {
        let key = key.trim();
        let unknown = || Error::invalid(format!("invalid detach keys: unknown key {key:?}"));
        if let Some(letter) = key.strip_prefix("ctrl-") {
            let c = letter.chars().next().filter(|_| letter.len() == 1);
            let code = match c {
                Some(c @ 'a'..='z') => c as u8 - b'a' + 1,
                Some('@') => 0,
                Some('[') => 27,
                Some('\\') => 28,
                Some(']') => 29,
                Some('^') => 30,
                Some('_') => 31,
                _ => return Err(unknown()),
            };
            keys.push(code);
        } else if key.len() == 1 {
            keys.push(key.as_bytes()[0]);
        } else {
            return Err(unknown());
        }
    }
    Ok(keys)
}

/// Watches a client's input for the detach keys: what to pass on, and
/// whether the whole sequence was typed (a partial one was ordinary input
/// and is passed on once it breaks off).
#[derive(Debug, Clone)]
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    pub fn feed(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut forward = Vec::with_capacity(data.len());
        if self.keys.is_empty() {
            forward.extend_from_slice(data);
            return (forward, false);
        }
        for &byte in data {
            if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (forward, true);
                }
            } else {
                forward.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if byte == self.keys[0] {
                    self.matched = 1;
                } else {
                    forward.push(byte);
                }
            }
        }
        (forward, false)
    }
}

/// Unix socket paths are limited to 107 bytes: a longer one is reached
/// through `/proc/self/fd/<dir fd>/<name>`, with the directory held open.
fn short_path(path: &Path) -> Result<(Option<OwnedFd>, std::path::PathBuf)> {
    if path.as_os_str().len() < 100 {
        return Ok((None, path.to_path_buf()));
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::msg(format!("socket path {} has no directory", path.display())))?;
    let name = path
        .file_name()
        .ok_or_else(|| Error::msg(format!("socket path {} has no name", path.display())))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(format!("path {} holds a NUL byte", dir.display())))?;
    // SAFETY: open with a valid C string; returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("open {}", dir.display()),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let short = Path::new("/proc/self/fd")
        .join(fd.as_raw_fd().to_string())
        .join(name);
    Ok((Some(fd), short))
}

pub fn bind(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let (_dir, short) = short_path(path)?;
    UnixListener::bind(&short).map_err(|e| Error::io(format!("listen on {}", path.display()), e))
}

pub fn connect(path: &Path) -> Result<UnixStream> {
    let (_dir, short) = short_path(path)?;
    UnixStream::connect(&short).map_err(|e| Error::io(format!("connect to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello(Hello {
                stdin: true,
                stdout: true,
                stderr: false,
                start: true,
            }),
            Frame::Stdin(b"input".to_vec()),
            Frame::StdinClose,
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Started,
            Frame::Error("no such file".into()),
            Frame::Exit(ExitInfo {
                exit_code: 137,
                oom_killed: true,
            }),
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            wire.extend(frame.encode());
        }
        let mut at = 0;
        let mut back = Vec::new();
        while let Some((frame, used)) = Frame::decode(&wire[at..]).unwrap() {
            back.push(frame);
            at += used;
        }
        assert_eq!(back, frames);
        assert_eq!(Frame::decode(&wire[..3]).unwrap(), None);
        let mut reader = &wire[..];
        assert_eq!(read_frame(&mut reader).unwrap(), Some(frames[0].clone()));
        let huge = [b'1', 0xff, 0xff, 0xff, 0xff];
        assert!(Frame::decode(&huge).is_err());
        assert!(Frame::decode(&[b'?', 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn long_socket_paths_work() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("attach");
        let listener = bind(&path).unwrap();
        let mut client = connect(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        write_frame(&mut client, &Frame::Started).unwrap();
        assert_eq!(read_frame(&mut server).unwrap(), Some(Frame::Started));
    }
}
