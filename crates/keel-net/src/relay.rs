//! The IPv6 side of published ports, relayed in user space as docker's
//! proxy relays it.
//!
//! A port published on all addresses is published on `[::]` too when the
//! host has IPv6. Traffic there cannot always be rewritten to the
//! container in the kernel: the container may have no IPv6 address, and
//! a packet from `::1` is never routed out of the host. So the container's
//! monitor listens on the IPv6 address itself (`IPV6_V6ONLY`, beside the
//! IPv4 socket that [`crate::ports::hold`] keeps) and copies each TCP
//! connection, and each UDP client's datagrams, to the container's
//! address. It runs from the monitor's poll loop: [`Relay::interests`]
//! says what to wait for, [`Relay::pump`] moves what is ready.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What each direction of a connection may hold before its reader waits.
const BUFFER: usize = 64 * 1024;
/// A UDP client silent this long is forgotten (docker's proxy: 90 s).
pub const UDP_IDLE: Duration = Duration::from_secs(90);
/// UDP clients remembered at once; the longest silent goes first.
const MAX_FLOWS: usize = 1024;
/// TCP connections at once; more wait in the listen queue.
const MAX_STREAMS: usize = 4096;

/// The published ports a container's monitor relays.
#[derive(Default)]
pub struct Relay {
    listeners: Vec<Listener>,
    streams: Vec<Stream>,
    flows: Vec<Flow>,
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Listener {
    socket: Socket,
    target: SocketAddr,
}

/// One TCP connection: the client's socket and ours to the container.
struct Stream {
    client: TcpStream,
    upstream: TcpStream,
    connecting: bool,
    /// Client to container.
    up: Half,
    /// Container to client.
    down: Half,
    /// The peer closed both ways (POLLHUP): it is not written to again.
    client_gone: bool,
    upstream_gone: bool,
}

#[derive(Default)]
struct Half {
    buffer: Vec<u8>,
    /// The reading side ended.
    eof: bool,
    /// The writing side was shut after the last byte.
    shut: bool,
}

impl Half {
    fn wants_read(&self) -> bool {
        !self.eof && self.buffer.len() < BUFFER
    }

    fn done(&self) -> bool {
        self.shut
    }
}

/// One UDP client: its address and our socket to the container.
struct Flow {
    listener: usize,
    client: SocketAddr,
    socket: UdpSocket,
    last: Instant,
}

impl Relay {
    pub fn new() -> Relay {
        Relay::default()
    }

    /// Listens on `[address]:port` for `protocol` (`tcp` or `udp`) and
    /// relays what comes to `target`. The error names the address as
    /// docker's does when the port is taken.
    pub fn listen(
        &mut self,
        address: Ipv6Addr,
        port: u16,
        protocol: &str,
        target: SocketAddr,
    ) -> Result<()> {
        let fd = crate::ports::bind(address.into(), port, protocol, true)?;
        let socket = if protocol == "udp" {
            let socket = UdpSocket::from(fd);
            socket
                .set_nonblocking(true)
                .map_err(|e| Error::io("set a relay socket non-blocking", e))?;
            Socket::Udp(socket)
        } else {
            // SAFETY: listen on the socket we own.
            if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
                return Err(Error::io(
                    format!("listen on [{address}]:{port}"),
                    std::io::Error::last_os_error(),
                ));
            }
            let listener = TcpListener::from(fd);
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::io("set a relay socket non-blocking", e))?;
            Socket::Tcp(listener)
        };
        self.listeners.push(Listener { socket, target });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The connections being relayed now (TCP connections and UDP
    /// clients).
    pub fn active(&self) -> usize {
        self.streams.len() + self.flows.len()
    }

    /// The fds to poll, with the events wanted.
    pub fn interests(&self) -> Vec<(RawFd, i16)> {
        let mut out = Vec::new();
        for listener in &self.listeners {
            match &listener.socket {
                Socket::Tcp(l) if self.streams.len() < MAX_STREAMS => {
                    out.push((l.as_raw_fd(), libc::POLLIN))
                }
                Socket::Tcp(_) => {}
                Socket::Udp(s) => out.push((s.as_raw_fd(), libc::POLLIN)),
            }
        }
        for stream in &self.streams {
            if stream.connecting {
                out.push((stream.upstream.as_raw_fd(), libc::POLLOUT));
                continue;
            }
            for (fd, reading, writing, gone) in [
                (
                    stream.client.as_raw_fd(),
                    &stream.up,
                    &stream.down,
                    stream.client_gone,
                ),
                (
                    stream.upstream.as_raw_fd(),
                    &stream.down,
                    &stream.up,
                    stream.upstream_gone,
                ),
            ] {
                let mut events = 0;
                if reading.wants_read() {
                    events |= libc::POLLIN;
                }
                if !writing.buffer.is_empty() && !gone {
                    events |= libc::POLLOUT;
                }
                // A closed peer reports POLLHUP whatever is asked: it is
                // left out until there is something to read.
                if events != 0 || !gone {
                    out.push((fd, events));
                }
            }
        }
        for flow in &self.flows {
            out.push((flow.socket.as_raw_fd(), libc::POLLIN));
        }
        out
    }

    /// When a silent UDP client is to be forgotten.
    pub fn deadline(&self) -> Option<Instant> {
        self.flows.iter().map(|f| f.last + UDP_IDLE).min()
    }

    /// Moves what is ready. `ready` are the fds poll reported, with their
    /// events (fds of this relay that are not in it are not touched).
    pub fn pump(&mut self, ready: &[(RawFd, i16)]) {
        if ready.is_empty() {
            let now = Instant::now();
            self.flows.retain(|f| now.duration_since(f.last) < UDP_IDLE);
            return;
        }
        let events: HashMap<RawFd, i16> = ready.iter().copied().collect();
        let mut buffer = vec![0u8; BUFFER];
        for i in 0..self.listeners.len() {
            let fd = match &self.listeners[i].socket {
                Socket::Tcp(l) => l.as_raw_fd(),
                Socket::Udp(s) => s.as_raw_fd(),
            };
            if events.contains_key(&fd) {
                self.accept(i, &mut buffer);
            }
        }
        let mut flows = std::mem::take(&mut self.flows);
        for flow in &mut flows {
            if !events.contains_key(&flow.socket.as_raw_fd()) {
                continue;
            }
            let Socket::Udp(listener) = &self.listeners[flow.listener].socket else {
                continue;
            };
            while let Ok(n) = flow.socket.recv(&mut buffer) {
                let _ = listener.send_to(&buffer[..n], flow.client);
                flow.last = Instant::now();
            }
        }
        let now = Instant::now();
        flows.retain(|f| now.duration_since(f.last) < UDP_IDLE);
        self.flows = flows;
        self.streams.retain_mut(|stream| {
            let client = events.get(&stream.client.as_raw_fd()).copied().unwrap_or(0);
            let upstream = events
                .get(&stream.upstream.as_raw_fd())
                .copied()
                .unwrap_or(0);
            if client == 0 && upstream == 0 {
                return true;
            }
            stream.pump(client, upstream)
        });
    }

    /// Takes what waits on listener `i`.
    fn accept(&mut self, i: usize, buffer: &mut [u8]) {
        let target = self.listeners[i].target;
        match &self.listeners[i].socket {
            Socket::Tcp(listener) => {
                while self.streams.len() < MAX_STREAMS {
                    let Ok((client, _)) = listener.accept() else {
                        break;
                    };
                    // A container that cannot be reached: the client's
                    // connection is closed at once.
                    let Ok(upstream) = connect(target) else {
                        continue;
                    };
                    if client.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = client.set_nodelay(true);
                    let _ = upstream.set_nodelay(true);
                    self.streams.push(Stream {
                        client,
                        upstream,
                        connecting: true,
                        up: Half::default(),
                        down: Half::default(),
                        client_gone: false,
                        upstream_gone: false,
                    });
                }
            }
            Socket::Udp(listener) => {
                while let Ok((n, client)) = listener.recv_from(buffer) {
                    let now = Instant::now();
                    let found = self
                        .flows
                        .iter()
                        .position(|f| f.listener == i && f.client == client);
                    let index = match found {
                        Some(index) => index,
                        None => {
                            let Ok(socket) = udp_to(target) else {
                                continue;
                            };
                            if self.flows.len() >= MAX_FLOWS
                                && let Some(oldest) = self
                                    .flows
                                    .iter()
                                    .enumerate()
                                    .min_by_key(|(_, f)| f.last)
                                    .map(|(i, _)| i)
                            {
                                self.flows.swap_remove(oldest);
                            }
                            self.flows.push(Flow {
                                listener: i,
                                client,
                                socket,
                                last: now,
                            });
                            self.flows.len() - 1
                        }
                    };
                    let flow = &mut self.flows[index];
                    flow.last = now;
                    let _ = flow.socket.send(&buffer[..n]);
                }
            }
        }
    }
}

impl Stream {
    /// Moves what it can; false when the connection is over.
    fn pump(&mut self, client_events: i16, upstream_events: i16) -> bool {
        if self.connecting {
            if upstream_events == 0 {
                return true;
            }
            match self.upstream.take_error() {
                Ok(None) if self.upstream.peer_addr().is_ok() => self.connecting = false,
                Ok(None) => return true,
                // Refused or unreachable: the client is closed.
                _ => return false,
            }
        }
        if (client_events | upstream_events) & libc::POLLERR != 0 {
            let client = self.client.take_error().ok().flatten();
            let upstream = self.upstream.take_error().ok().flatten();
            if client.is_some() || upstream.is_some() {
                return false;
            }
        }
        self.client_gone |= client_events & libc::POLLHUP != 0;
        self.upstream_gone |= upstream_events & libc::POLLHUP != 0;
        let ok = move_bytes(
            &mut self.client,
            &mut self.up,
            &mut self.upstream,
            self.upstream_gone,
        ) && move_bytes(
            &mut self.upstream,
            &mut self.down,
            &mut self.client,
            self.client_gone,
        );
        ok && !(self.up.done() && self.down.done())
    }
}

/// Reads from `from` into `half` and writes it to `to` until either would
/// wait; false on an error that ends the connection.
fn move_bytes(from: &mut TcpStream, half: &mut Half, to: &mut TcpStream, to_gone: bool) -> bool {
    loop {
        let mut progress = false;
        if half.wants_read() {
            let start = half.buffer.len();
            half.buffer.resize(BUFFER, 0);
            match from.read(&mut half.buffer[start..]) {
                Ok(0) => {
                    half.buffer.truncate(start);
                    half.eof = true;
                }
                Ok(n) => {
                    half.buffer.truncate(start + n);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => half.buffer.truncate(start),
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    half.buffer.truncate(start);
                    continue;
                }
                Err(_) => return false,
            }
        }
        if to_gone {
            // Nobody to write to: what is read is dropped.
            half.buffer.clear();
            if half.eof {
                half.shut = true;
            }
            if !progress {
                return true;
            }
            continue;
        }
        if !half.buffer.is_empty() {
            match to.write(&half.buffer) {
                Ok(n) => {
                    half.buffer.drain(..n);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        if half.eof && half.buffer.is_empty() && !half.shut {
            let _ = to.shutdown(Shutdown::Write);
            half.shut = true;
        }
        if !progress {
            return true;
        }
    }
}

/// A non-blocking TCP socket connecting to `target`.
fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let family = if target.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket returns a new fd (or -1), which we then own.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (address, length) = crate::ports::sockaddr(target);
    // SAFETY: connect with a sockaddr of the length given.
    let result = unsafe { libc::connect(fd.as_raw_fd(), (&raw const address).cast(), length) };
    if result != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from(fd))
}

/// A non-blocking UDP socket connected to `target`.
fn udp_to(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Runs the relay's loop until `done` says so (or 10 s pass).
    fn run_until(relay: &mut Relay, mut done: impl FnMut(&Relay) -> bool) {
        let start = Instant::now();
        while !done(relay) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the relay stalled"
            );
            let interests = relay.interests();
            let mut fds: Vec<libc::pollfd> = interests
                .iter()
                .map(|(fd, events)| libc::pollfd {
                    fd: *fd,
                    events: *events,
                    revents: 0,
                })
                .collect();
            // SAFETY: poll on our array.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            let ready: Vec<(RawFd, i16)> = fds
                .iter()
                .filter(|p| p.revents != 0)
                .map(|p| (p.fd, p.revents))
                .collect();
            relay.pump(&ready);
        }
    }

    fn free_port() -> u16 {
        let probe = TcpListener::bind("[::1]:0").unwrap();
        probe.local_addr().unwrap().port()
    }

    #[test]
    fn tcp_both_ways_with_half_close_and_more_than_a_buffer() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        // The "container": echoes everything back, then says it is done.
        let echo = std::thread::spawn(move || {
            let (mut connection, _) = server.accept().unwrap();
            let mut all = Vec::new();
            connection.read_to_end(&mut all).unwrap();
            connection.write_all(&all).unwrap();
            connection.write_all(b"end").unwrap();
        });
        let port = free_port();
        let mut relay = Relay::new();
        relay
            .listen(Ipv6Addr::LOCALHOST, port, "tcp", target)
            .unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("::1", port)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let writing = std::thread::spawn(move || {
                writer.write_all(&sent).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut back = Vec::new();
            stream.read_to_end(&mut back).unwrap();
            writing.join().unwrap();
            back
        });
        run_until(&mut relay, |_| client.is_finished());
        let back = client.join().unwrap();
        echo.join().unwrap();
        assert_eq!(back.len(), payload.len() + 3);
        assert!(back.starts_with(&payload) && back.ends_with(b"end"));
        run_until(&mut relay, |r| r.active() == 0);
    }

    #[test]
    fn a_container_that_refuses_closes_the_client() {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = closed.local_addr().unwrap();
        drop(closed);
        let port = free_port();
        let mut relay = Relay::new();
        relay
            .listen(Ipv6Addr::LOCALHOST, port, "tcp", target)
            .unwrap();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(("::1", port)).unwrap();
            let mut back = Vec::new();
            let _ = stream.read_to_end(&mut back);
            back
        });
        run_until(&mut relay, |_| client.is_finished());
        assert!(client.join().unwrap().is_empty());
        assert_eq!(relay.active(), 0);
    }

    #[test]
    fn udp_answers_go_back_to_each_client() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buffer = [0u8; 100];
            for _ in 0..2 {
                let (n, from) = server.recv_from(&mut buffer).unwrap();
                let mut answer = b"udp:".to_vec();
                answer.extend_from_slice(&buffer[..n]);
                server.send_to(&answer, from).unwrap();
            }
        });
        let port = UdpSocket::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut relay = Relay::new();
        relay
            .listen(Ipv6Addr::LOCALHOST, port, "udp", target)
            .unwrap();
        let clients: Vec<_> = ["one", "two"]
            .into_iter()
            .map(|word| {
                std::thread::spawn(move || {
                    let socket = UdpSocket::bind("[::1]:0").unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    socket.send_to(word.as_bytes(), ("::1", port)).unwrap();
                    let mut buffer = [0u8; 100];
                    let n = socket.recv(&mut buffer).unwrap();
                    String::from_utf8_lossy(&buffer[..n]).into_owned()
                })
            })
            .collect();
        run_until(&mut relay, |_| clients.iter().all(|c| c.is_finished()));
        let mut answers: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        answers.sort();
        assert_eq!(answers, ["udp:one", "udp:two"]);
        echo.join().unwrap();
        assert_eq!(relay.active(), 2);
        assert!(relay.deadline().is_some());
    }

    #[test]
    fn the_port_is_refused_when_taken_and_v4_stays_free() {
        let port = free_port();
        let taken = TcpListener::bind(("::1", port)).unwrap();
        let mut relay = Relay::new();
        let error = relay
            .listen(
                Ipv6Addr::LOCALHOST,
                port,
                "tcp",
                (Ipv4Addr::LOCALHOST, 1).into(),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!("Bind for [::1]:{port} failed: address already in use")
        );
        drop(taken);
        // [::] is IPv6 only: 0.0.0.0 on the same port is still free.
        let port = free_port();
        relay
            .listen(
                Ipv6Addr::UNSPECIFIED,
                port,
                "tcp",
                (Ipv4Addr::LOCALHOST, 1).into(),
            )
            .unwrap();
        TcpListener::bind(("0.0.0.0", port)).unwrap();
    }
}
