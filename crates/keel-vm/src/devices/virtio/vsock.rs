//! virtio-vsock, host ↔ guest stream sockets, with the host's end of each
//! connection a unix socket (as Firecracker does it):
//!
//! - host → guest: a program connects to the VM's socket `PATH` and writes
//!   `CONNECT PORT\n`; keel asks the guest for a connection to its PORT
//!   and, once the guest accepts, answers `OK HOSTPORT\n` (the host-side
//!   port it picked). Bytes flow both ways from then on. A guest that
//!   refuses closes the unix socket without an answer.
//! - guest → host: a guest connecting to the host (CID 2) at port PORT
//!   reaches the program listening on the unix socket `PATH_PORT`; none
//!   there, the guest's connection is refused (reset).
//!
//! Flow control is virtio-vsock's credit: each side says how much buffer
//! it has (`buf_alloc`) and how much it has consumed (`fwd_cnt`); keel
//! sends the guest no more than its free credit, and the guest sends keel
//! no more than keel's ([`BUF_ALLOC`]), which bounds what keel holds for a
//! slow host program.
//!
//! A snapshot keeps the device, not its connections: after a restore the
//! host side knows none, and a guest's packet on one it had is answered
//! with a reset.
//!
//! The guest's packets (queue 1) are handled on the vCPU that notifies;
//! what goes to the guest (queue 0: answers, data from the host) is put
//! there by [`Device::serve_io`], which the VMM's I/O thread calls when the
//! device's epoll (the listening socket, each connection) is readable.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::{Device, Io};
use crate::error::{Error, Result};
use crate::memory::Memory;

/// The host's context id.
pub const HOST_CID: u64 = 2;
/// The credit keel gives the guest on each connection.
pub const BUF_ALLOC: u32 = 256 * 1024;

const HEADER: usize = 44;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN's flags: the sender will receive no more / send no more.
const SHUTDOWN_RECEIVE: u32 = 1;
const SHUTDOWN_SEND: u32 = 2;
/// The most data in one packet keel sends.
const MAX_PAYLOAD: usize = 64 * 1024;
/// The host-side ports keel picks for host-initiated connections.
const FIRST_HOST_PORT: u32 = 1 << 30;
/// The epoll token of the listening socket.
const LISTENER: u64 = u64::MAX;

/// A packet's header (`struct virtio_vsock_hdr`, little-endian).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Header {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Header {
    fn parse(b: &[u8]) -> Header {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().expect("2 bytes"));
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    fn bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Asked the guest (host-initiated); waiting for its answer.
    Connecting,
    Open,
}

/// One connection: (host port, guest port).
type Key = (u32, u32);

struct Connection {
    stream: UnixStream,
    state: State,
    /// The guest's credit: its buffer and what it has consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest.
    tx_cnt: u32,
    /// Bytes the guest sent that reached the host program, and the count
    /// last told to the guest.
    fwd_cnt: u32,
    fwd_told: u32,
    /// What the guest sent that the host program has not taken yet.
    to_host: VecDeque<u8>,
    /// What the host program sent that the guest has not had yet.
    from_host: Vec<u8>,
    /// The guest will send no more (write side shut once `to_host` drains).
    guest_done: bool,
    /// The host program will send no more (keel told the guest).
    host_done: bool,
    /// The events the connection is watched for.
    events: EventSet,
}

impl Connection {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

/// Watches connection `c` for `events` from now on.
fn rewatch(epoll: &Epoll, c: &mut Connection, events: EventSet) {
    c.events = events;
    let fd = c.stream.as_raw_fd();
    let _ = epoll.ctl(
        ControlOperation::Modify,
        fd,
        EpollEvent::new(events, fd as u64),
    );
}

/// A host program that connected and has not said `CONNECT PORT` yet.
struct Waiting {
    stream: UnixStream,
    line: Vec<u8>,
}

pub struct Vsock {
    cid: u64,
    path: PathBuf,
    listener: UnixListener,
    epoll: Epoll,
    waiting: HashMap<RawFd, Waiting>,
    connections: HashMap<Key, Connection>,
    by_fd: HashMap<RawFd, Key>,
    /// Packets without data for the guest, in order.
    backlog: VecDeque<Header>,
    next_port: u32,
    /// One packet's bytes.
    buffer: Vec<u8>,
}

impl Vsock {
    /// A device for guest `cid` whose host side listens at `path`.
    pub fn new(cid: u64, path: &Path) -> Result<Vsock> {
        if cid <= HOST_CID || cid > u64::from(u32::MAX) {
            return Err(Error::invalid(format!(
                "vsock CID {cid}: a guest's CID is 3 to 4294967295"
            )));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(Error::path("create", parent))?;
        }
        // A socket someone listens on is another VM's: not taken over.
        if UnixStream::connect(path).is_ok() {
            return Err(Error::invalid(format!(
                "the vsock socket {} is in use (another VM listens on it)",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(Error::path("listen on", path))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::path("set non-blocking", path))?;
        let epoll = Epoll::new().map_err(|e| Error::Io {
            what: "make the vsock epoll".into(),
            source: e,
        })?;
        epoll
            .ctl(
                ControlOperation::Add,
                listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER),
            )
            .map_err(|e| Error::Io {
                what: "watch the vsock socket".into(),
                source: e,
            })?;
        Ok(Vsock {
            cid,
            path: path.to_path_buf(),
            listener,
            epoll,
            waiting: HashMap::new(),
            connections: HashMap::new(),
            by_fd: HashMap::new(),
            backlog: VecDeque::new(),
            next_port: FIRST_HOST_PORT,
            buffer: vec![0; HEADER + MAX_PAYLOAD],
        })
    }

    fn watch(&self, fd: RawFd, events: EventSet, add: bool) {
        let operation = if add {
            ControlOperation::Add
        } else {
            ControlOperation::Modify
        };
        let _ = self
            .epoll
            .ctl(operation, fd, EpollEvent::new(events, fd as u64));
    }

    /// A packet to the guest about connection `key`.
    fn reply(&self, key: Key, op: u16, flags: u32) -> Header {
        let (buf_alloc, fwd_cnt) = self
            .connections
            .get(&key)
            .map_or((BUF_ALLOC, 0), |c| (BUF_ALLOC, c.fwd_cnt));
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    fn close(&mut self, key: Key) {
        if let Some(connection) = self.connections.remove(&key) {
            let fd = connection.stream.as_raw_fd();
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
            self.by_fd.remove(&fd);
        }
    }

    /// Resets connection `key` (telling the guest) and forgets it.
    fn reset(&mut self, key: Key) {
        self.backlog.push_back(self.reply(key, OP_RST, 0));
        self.close(key);
    }

    /// One packet from the guest.
    fn guest_packet(&mut self, header: Header, payload: &[u8]) {
        let key = (header.dst_port, header.src_port);
        if header.src_cid != self.cid || header.dst_cid != HOST_CID || header.kind != TYPE_STREAM {
            if header.op != OP_RST {
                let mut rst = self.reply(key, OP_RST, 0);
                rst.dst_cid = header.src_cid;
                self.backlog.push_back(rst);
            }
            return;
        }
        if let Some(c) = self.connections.get_mut(&key)
            && c.state == State::Open
        {
            c.peer_buf_alloc = header.buf_alloc;
            c.peer_fwd_cnt = header.fwd_cnt;
            // Credit again: the host program's socket is read again.
            if !c.host_done && c.credit() > 0 && !c.events.contains(EventSet::IN) {
                rewatch(&self.epoll, c, c.events | EventSet::IN);
            }
        }
        match header.op {
            OP_REQUEST => {
                if self.connections.contains_key(&key) {
                    self.reset(key);
                    return;
                }
                let target = format!("{}_{}", self.path.display(), header.dst_port);
                match UnixStream::connect(&target) {
                    Ok(stream) if stream.set_nonblocking(true).is_ok() => {
                        let fd = stream.as_raw_fd();
                        self.connections.insert(
                            key,
                            Connection {
                                stream,
                                state: State::Open,
                                peer_buf_alloc: header.buf_alloc,
                                peer_fwd_cnt: header.fwd_cnt,
                                tx_cnt: 0,
                                fwd_cnt: 0,
                                fwd_told: 0,
                                to_host: VecDeque::new(),
                                from_host: Vec::new(),
                                guest_done: false,
                                host_done: false,
                                events: EventSet::IN,
                            },
                        );
                        self.by_fd.insert(fd, key);
                        self.watch(fd, EventSet::IN, true);
                        self.backlog.push_back(self.reply(key, OP_RESPONSE, 0));
                    }
                    _ => self.reset(key),
                }
            }
            OP_RESPONSE => match self.connections.get_mut(&key) {
                Some(c) if c.state == State::Connecting => {
                    c.state = State::Open;
                    c.peer_buf_alloc = header.buf_alloc;
                    c.peer_fwd_cnt = header.fwd_cnt;
                    let answer = format!("OK {}\n", key.0);
                    // A few bytes into a fresh socket's empty buffer.
                    if (&c.stream).write_all(answer.as_bytes()).is_err() {
                        self.reset(key);
                        return;
                    }
                    rewatch(&self.epoll, c, EventSet::IN);
                }
                _ => self.reset(key),
            },
            OP_RST => self.close(key),
            OP_SHUTDOWN => {
                let Some(c) = self.connections.get_mut(&key) else {
                    self.reset(key);
                    return;
                };
                if header.flags & SHUTDOWN_SEND != 0 {
                    c.guest_done = true;
                }
                if header.flags & (SHUTDOWN_SEND | SHUTDOWN_RECEIVE)
                    == SHUTDOWN_SEND | SHUTDOWN_RECEIVE
                {
                    // Gone both ways: what keel still holds for the host
                    // program goes (if it can), then the connection.
                    self.flush(key);
                    self.reset(key);
                    return;
                }
                self.flush(key);
            }
            OP_RW => {
                let Some(c) = self.connections.get_mut(&key) else {
                    self.reset(key);
                    return;
                };
                if c.state != State::Open || c.guest_done {
                    self.reset(key);
                    return;
                }
                c.to_host.extend(payload);
                self.flush(key);
            }
            OP_CREDIT_UPDATE => {
                // The new credit is in (above).
                if !self.connections.contains_key(&key) {
                    self.reset(key);
                }
            }
            OP_CREDIT_REQUEST => {
                if self.connections.contains_key(&key) {
                    self.backlog.push_back(self.reply(key, OP_CREDIT_UPDATE, 0));
                }
            }
            _ => self.reset(key),
        }
    }

    /// Writes what the guest sent to the host program, as far as it takes
    /// it; tells the guest its new credit now and then.
    fn flush(&mut self, key: Key) {
        let Some(c) = self.connections.get_mut(&key) else {
            return;
        };
        while !c.to_host.is_empty() {
            let (front, _) = c.to_host.as_slices();
            match (&c.stream).write(front) {
                Ok(0) => break,
                Ok(n) => {
                    c.to_host.drain(..n);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The host program is gone.
                    self.reset(key);
                    return;
                }
            }
        }
        let mut events = c.events & !EventSet::OUT;
        if !c.to_host.is_empty() {
            events |= EventSet::OUT;
        } else if c.guest_done {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        if events != c.events {
            rewatch(&self.epoll, c, events);
        }
        let c = &self.connections[&key];
        if c.fwd_cnt.wrapping_sub(c.fwd_told) >= BUF_ALLOC / 4 {
            let update = self.reply(key, OP_CREDIT_UPDATE, 0);
            self.connections
                .get_mut(&key)
                .expect("the connection")
                .fwd_told = update.fwd_cnt;
            self.backlog.push_back(update);
        }
    }

    /// New host programs, their `CONNECT` lines, sockets ready to write.
    fn poll_host(&mut self) {
        let mut events = vec![EpollEvent::default(); 32];
        let Ok(n) = self.epoll.wait(0, &mut events) else {
            return;
        };
        for event in &events[..n] {
            let token = event.data();
            if token == LISTENER {
                while let Ok((stream, _)) = self.listener.accept() {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    self.watch(fd, EventSet::IN, true);
                    self.waiting.insert(
                        fd,
                        Waiting {
                            stream,
                            line: Vec::new(),
                        },
                    );
                }
                continue;
            }
            let fd = token as RawFd;
            if self.waiting.contains_key(&fd) {
                self.read_connect(fd);
            } else if let Some(&key) = self.by_fd.get(&fd)
                && event.event_set().contains(EventSet::OUT)
            {
                self.flush(key);
            }
        }
    }

    /// Reads a waiting program's `CONNECT PORT\n`; asks the guest.
    fn read_connect(&mut self, fd: RawFd) {
        let Some(waiting) = self.waiting.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 64];
        let n = match (&waiting.stream).read(&mut byte) {
            Ok(0) => {
                self.forget_waiting(fd);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.forget_waiting(fd);
                return;
            }
        };
        waiting.line.extend_from_slice(&byte[..n]);
        let Some(end) = waiting.line.iter().position(|&b| b == b'\n') else {
            if waiting.line.len() > 64 {
                self.forget_waiting(fd);
            }
            return;
        };
        let port = std::str::from_utf8(&waiting.line[..end])
            .ok()
            .and_then(|l| l.trim_end_matches('\r').strip_prefix("CONNECT "))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let rest: Vec<u8> = waiting.line[end + 1..].to_vec();
        let Some(port) = port else {
            self.forget_waiting(fd);
            return;
        };
        let waiting = self.waiting.remove(&fd).expect("waiting");
        let mut local = self.next_port;
        while self.connections.keys().any(|k| k.0 == local) {
            local = local.wrapping_add(1).max(FIRST_HOST_PORT);
        }
        self.next_port = local.wrapping_add(1).max(FIRST_HOST_PORT);
        let key = (local, port);
        // Not read until the guest accepts.
        self.watch(fd, EventSet::empty(), false);
        self.connections.insert(
            key,
            Connection {
                stream: waiting.stream,
                state: State::Connecting,
                peer_buf_alloc: 0,
                peer_fwd_cnt: 0,
                tx_cnt: 0,
                fwd_cnt: 0,
                fwd_told: 0,
                to_host: VecDeque::new(),
                from_host: Vec::new(),
                guest_done: false,
                host_done: false,
                events: EventSet::empty(),
            },
        );
        self.by_fd.insert(fd, key);
        let mut request = self.reply(key, OP_REQUEST, 0);
        request.fwd_cnt = 0;
        self.backlog.push_back(request);
        // Bytes after the line are the program's first data: they go
        // once the guest accepts.
        self.connections
            .get_mut(&key)
            .expect("just added")
            .from_host = rest;
    }

    fn forget_waiting(&mut self, fd: RawFd) {
        if self.waiting.remove(&fd).is_some() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }
}

/// Writes `parts` one after another into the chain's writable buffers;
/// how many bytes, or None if they do not fit.
fn put(chain: DescriptorChain<&Memory>, memory: &Memory, parts: &[&[u8]]) -> Option<u32> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut bytes = parts.iter().flat_map(|p| p.iter().copied());
    let mut written = 0usize;
    let mut scratch = Vec::new();
    for descriptor in chain.writable() {
        if written == total {
            break;
        }
        let n = (descriptor.len() as usize).min(total - written);
        scratch.clear();
        scratch.extend(bytes.by_ref().take(n));
        memory.write_slice(&scratch, descriptor.addr()).ok()?;
        written += n;
    }
    (written == total).then_some(written as u32)
}

/// How many bytes the chain's writable buffers hold.
fn room(chain: &DescriptorChain<&Memory>) -> usize {
    chain.clone().writable().map(|d| d.len() as usize).sum()
}

impl Vsock {
    /// Fills the guest's receive buffers: answers first, then data from
    /// the host programs as far as the guest's credit goes.
    fn deliver(&mut self, queue: &mut Queue, memory: &Memory) -> Io {
        let mut io = Io::default();
        if !self.deliver_backlog(queue, memory, &mut io) {
            return io;
        }
        let keys: Vec<Key> = self.connections.keys().copied().collect();
        for key in keys {
            while let Some(c) = self.connections.get_mut(&key) {
                if c.state != State::Open || c.host_done {
                    break;
                }
                let credit = c.credit() as usize;
                if credit == 0 {
                    // Not read until the guest says it has room (asked
                    // once).
                    if c.events.contains(EventSet::IN) {
                        rewatch(&self.epoll, c, c.events & !EventSet::IN);
                        let request = self.reply(key, OP_CREDIT_REQUEST, 0);
                        self.backlog.push_back(request);
                    }
                    break;
                }
                let Some(chain) = queue.pop_descriptor_chain(memory) else {
                    io.starved = true;
                    return io;
                };
                let room = room(&chain).saturating_sub(HEADER);
                let want = credit.min(room).min(MAX_PAYLOAD);
                if want == 0 {
                    // A buffer too small for any data: given back unused.
                    let _ = queue.add_used(memory, chain.head_index(), 0);
                    io.used = true;
                    continue;
                }
                let c = self.connections.get_mut(&key).expect("the connection");
                let n = if !c.from_host.is_empty() {
                    let n = c.from_host.len().min(want);
                    self.buffer[HEADER..HEADER + n].copy_from_slice(&c.from_host[..n]);
                    c.from_host.drain(..n);
                    n
                } else {
                    match (&c.stream).read(&mut self.buffer[HEADER..HEADER + want]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            queue.go_to_previous_position();
                            break;
                        }
                        Err(_) => 0,
                    }
                };
                if n == 0 {
                    // The host program sends no more: the guest is told.
                    queue.go_to_previous_position();
                    c.host_done = true;
                    rewatch(&self.epoll, c, c.events & !EventSet::IN);
                    let shutdown = self.reply(key, OP_SHUTDOWN, SHUTDOWN_SEND);
                    self.backlog.push_back(shutdown);
                    break;
                }
                c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
                let mut header = self.reply(key, OP_RW, 0);
                header.len = n as u32;
                let c = self.connections.get_mut(&key).expect("the connection");
                c.fwd_told = header.fwd_cnt;
                self.buffer[..HEADER].copy_from_slice(&header.bytes());
                let head = chain.head_index();
                let written = put(chain, memory, &[&self.buffer[..HEADER + n]]).unwrap_or(0);
                let _ = queue.add_used(memory, head, written);
                io.used = true;
            }
        }
        // Answers queued on the way (a shutdown, a credit request).
        self.deliver_backlog(queue, memory, &mut io);
        io
    }

    /// The packets without data, in order; false if the guest ran out of
    /// buffers first.
    fn deliver_backlog(&mut self, queue: &mut Queue, memory: &Memory, io: &mut Io) -> bool {
        while let Some(header) = self.backlog.front().copied() {
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                io.starved = true;
                return false;
            };
            let head = chain.head_index();
            let written = put(chain, memory, &[&header.bytes()]).unwrap_or(0);
            let _ = queue.add_used(memory, head, written);
            io.used = true;
            self.backlog.pop_front();
        }
        true
    }
}

impl Device for Vsock {
    fn device_type(&self) -> u32 {
        19
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_sizes(&self) -> Vec<u16> {
        // rx, tx, event
        vec![256, 256, 16]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_from(&self.cid.to_le_bytes(), offset, data);
    }

    fn serve(&mut self, index: usize, queue: &mut Queue, memory: &Memory) -> bool {
        if index != 1 {
            // rx buffers and events: taken when there is something to say
            return false;
        }
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let length = super::gather(chain, memory, &mut self.buffer);
            let _ = queue.add_used(memory, head, 0);
            used = true;
            if length < HEADER {
                continue;
            }
            let header = Header::parse(&self.buffer[..HEADER]);
            let end = HEADER + (header.len as usize).min(length - HEADER);
            let payload = self.buffer[HEADER..end].to_vec();
            self.guest_packet(header, &payload);
        }
        used
    }

    fn io_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn serve_io(&mut self, queue: &mut Queue, memory: &Memory) -> Io {
        self.poll_host();
        self.deliver(queue, memory)
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_as_written() {
        let header = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 5000,
            len: 7,
            kind: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: 99,
        };
        assert_eq!(Header::parse(&header.bytes()), header);
    }
}
