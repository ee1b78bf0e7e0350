//! What the host and `keel-guest` (the agent that is PID 1 in a container's
//! micro-VM) say to each other over one vsock connection per process: the
//! host's request first, then frames both ways until the process's exit.
//!
//! A frame is a kind byte, a little-endian u32 length and that many bytes.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::spec::{Process, Spec};

/// The vsock port the agent listens on.
pub const AGENT_PORT: u32 = 1024;
/// The largest frame either side accepts (a request carries a whole OCI
/// config; data frames are at most [`DATA_CHUNK`]).
pub const MAX_FRAME: usize = 8 << 20;
/// How much process output or input one data frame carries at most.
pub const DATA_CHUNK: usize = 32 * 1024;

/// One unit of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// host → guest, first: a JSON [`Request`].
    Request(Vec<u8>),
    /// host → guest: bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// host → guest: the process's stdin is closed.
    StdinEof,
    /// host → guest: the terminal's new size.
    Resize { rows: u16, cols: u16 },
    /// host → guest: a signal for the process.
    Signal(i32),
    /// guest → host: the process's stdout (or its terminal's output).
    Stdout(Vec<u8>),
    /// guest → host: the process's stderr.
    Stderr(Vec<u8>),
    /// guest → host, last: the process's exit code.
    Exit(i32),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Request(_) => 1,
            Frame::Stdin(_) => 2,
            Frame::StdinEof => 3,
            Frame::Resize { .. } => 4,
            Frame::Signal(_) => 5,
            Frame::Stdout(_) => 6,
            Frame::Stderr(_) => 7,
            Frame::Exit(_) => 8,
        }
    }

    /// The frame as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Request(b) | Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.clone(),
            Frame::StdinEof => Vec::new(),
            Frame::Resize { rows, cols } => [rows.to_le_bytes(), cols.to_le_bytes()].concat(),
            Frame::Signal(n) | Frame::Exit(n) => n.to_le_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Takes one whole frame off the front of `buffer`, if it holds one.
    pub fn decode(buffer: &mut Vec<u8>) -> io::Result<Option<Frame>> {
        if buffer.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
        if len > MAX_FRAME {
            return Err(invalid(format!("a frame of {len} bytes is too large")));
        }
        if buffer.len() < 5 + len {
            return Ok(None);
        }
        let kind = buffer[0];
        let payload: Vec<u8> = buffer.drain(..5 + len).skip(5).collect();
        let int = |p: &[u8]| -> io::Result<i32> {
            p.try_into()
                .map(i32::from_le_bytes)
                .map_err(|_| invalid(format!("frame {kind}: {} bytes, not 4", p.len())))
        };
        Ok(Some(match kind {
            1 => Frame::Request(payload),
            2 => Frame::Stdin(payload),
            3 => Frame::StdinEof,
            4 if payload.len() == 4 => Frame::Resize {
                rows: u16::from_le_bytes([payload[0], payload[1]]),
                cols: u16::from_le_bytes([payload[2], payload[3]]),
            },
            5 => Frame::Signal(int(&payload)?),
            6 => Frame::Stdout(payload),
            7 => Frame::Stderr(payload),
            8 => Frame::Exit(int(&payload)?),
            _ => return Err(invalid(format!("unknown frame kind {kind}"))),
        }))
    }

    /// Reads one frame, blocking; `None` at a clean end of the stream.
    pub fn read_from(reader: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(invalid(format!("a frame of {len} bytes is too large")));
        }
        let mut buffer = head.to_vec();
        buffer.resize(5 + len, 0);
        reader.read_exact(&mut buffer[5..])?;
        Frame::decode(&mut buffer)
    }

    pub fn write_to(&self, writer: &mut impl Write) -> io::Result<()> {
        writer.write_all(&self.encode())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// What the host asks of the agent, the first frame of a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Request {
    /// The container's process: `config` is its OCI config as the guest
    /// sees it (root and bind sources under the shares' mount points).
    Run {
        id: String,
        config: Box<Spec>,
        shares: Vec<Share>,
        /// The container's interfaces, which the VM's NICs take over.
        #[serde(default)]
        interfaces: Vec<Interface>,
        /// The IPv4 default gateway.
        #[serde(default)]
        gateway: Option<String>,
        /// The IPv6 default gateway.
        #[serde(default)]
        gateway6: Option<String>,
    },
    /// Another process in the running container (`exec`).
    Exec {
        id: String,
        process: Box<Process>,
        detach: bool,
    },
}

/// The vsock port on the host (CID 2) where the guest's resolver at
/// 127.0.0.11 sends its questions (keel's name server for user networks).
pub const DNS_PORT: u32 = 53;

/// One of the container's network interfaces, as the guest takes it over
/// (its NIC has the same MAC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// The name the container knew it by (`eth0`).
    pub name: String,
    pub mac: String,
    /// IPv4 addresses with their prefix (`10.88.0.2/16`).
    pub addresses: Vec<String>,
    /// Global IPv6 addresses with their prefix (`fd00::2/64`).
    #[serde(default)]
    pub addresses6: Vec<String>,
    pub mtu: u32,
}

/// A host directory shared with the guest over virtio-9p.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    /// The device's mount tag.
    pub tag: String,
    /// Where the guest mounts it.
    pub path: String,
    #[serde(default)]
    pub readonly: bool,
    /// Served by keel's 9p server on this host vsock port (mounted with
    /// `trans=fd` over the connection), not by a virtio-9p device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_whole_and_in_pieces() {
        let frames = vec![
            Frame::Request(b"{}".to_vec()),
            Frame::Stdin(b"hello".to_vec()),
            Frame::StdinEof,
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::Signal(15),
            Frame::Stdout(vec![0; 70000]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut reader = &wire[..];
        for frame in &frames {
            assert_eq!(Frame::read_from(&mut reader).unwrap().as_ref(), Some(frame));
        }
        assert_eq!(Frame::read_from(&mut reader).unwrap(), None);
        // Fed a byte at a time, decode waits for whole frames.
        let mut buffer = Vec::new();
        let mut seen = Vec::new();
        for byte in wire {
            buffer.push(byte);
            while let Some(frame) = Frame::decode(&mut buffer).unwrap() {
                seen.push(frame);
            }
        }
        assert_eq!(seen, frames);
    }

    #[test]
    fn bad_frames_are_refused() {
        let mut huge = vec![6];
        huge.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(Frame::decode(&mut huge).is_err());
        let mut unknown = vec![99, 0, 0, 0, 0];
        assert!(Frame::decode(&mut unknown).is_err());
        let mut short_exit = vec![8, 2, 0, 0, 0, 1, 2];
        assert!(Frame::decode(&mut short_exit).is_err());
    }
}
