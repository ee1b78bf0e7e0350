//! The name server of a container on a user-defined network: a UDP socket
//! on 127.0.0.11 inside the container's network namespace, served by the
//! container's monitor from its poll loop (docker's embedded DNS). It
//! listens on a random port that a small nftables table in the namespace
//! ([`crate::nft::dns_redirect`]) maps 127.0.0.11:53 to, so that port 53
//! stays free for the container's own servers.
//!
//! Names keel knows (containers, aliases, id prefixes on the container's
//! networks: the caller's [`Lookup`]) are answered at once; everything
//! else is forwarded from the monitor's own namespace to the upstream
//! resolvers, and the answer relayed back. An upstream that does not
//! answer in time gets the client a SERVFAIL rather than silence.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// docker's address for the embedded server.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
/// docker's TTL for container names.
const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_PENDING: usize = 256;

/// What a query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// A name (lower case, without the final dot).
    Name(String),
    /// A reverse lookup (`4.3.2.1.in-addr.arpa`).
    Address(IpAddr),
}

/// What the caller knows of a [`Question`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A name of ours, with its addresses (of both families).
    Addresses(Vec<IpAddr>),
    /// An address of ours, with its name.
    Name(String),
    /// Not ours: ask upstream.
    Unknown,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the (first) question ends in the packet.
    question_end: usize,
}

/// Parses a query with one question; None for anything else.
pub fn parse_query(packet: &[u8]) -> Option<Query> {
    if packet.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let questions = u16::from_be_bytes([packet[4], packet[5]]);
    if flags & 0x8000 != 0 || questions != 1 {
        return None;
    }
    let mut at = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let length = *packet.get(at)? as usize;
        at += 1;
        if length == 0 {
            break;
        }
        // Compression pointers have no place in a question.
        if length > 63 {
            return None;
        }
        let label = packet.get(at..at + length)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += length;
        if at > 12 + 255 {
            return None;
        }
    }
    let fixed = packet.get(at..at + 4)?;
    Some(Query {
        id,
        flags,
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        question_end: at + 4,
    })
}

impl Query {
    /// What the question is about.
    pub fn question(&self) -> Question {
        if self.qtype == TYPE_PTR
            && let Some(ip) = reverse_address(&self.name)
        {
            return Question::Address(ip);
        }
        Question::Name(self.name.clone())
    }
}

/// `4.3.2.1.in-addr.arpa` → 1.2.3.4; the ip6.arpa nibble form too.
pub fn reverse_address(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 1))
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles
        .iter()
        .rev()
        .collect::<Vec<_>>()
        .chunks(2)
        .enumerate()
    {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::from(bytes))
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

/// The reply to `query` (whose bytes are `packet`) with `rcode` and the
/// given answer records (type, rdata).
fn reply(packet: &[u8], query: &Query, rcode: u16, answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let opcode = query.flags & 0x7800;
    let recursion_desired = query.flags & 0x0100;
    // QR, the query's opcode, AA, RD as asked, RA, rcode.
    let flags = 0x8000 | opcode | 0x0400 | recursion_desired | 0x0080 | rcode;
    let mut out = Vec::with_capacity(query.question_end + answers.len() * 28);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&packet[12..query.question_end]);
    for (kind, data) in answers {
        // A pointer to the question's name.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The answer to a query from what the caller knows; None: forward it.
pub fn answer(packet: &[u8], query: &Query, lookup: &Lookup) -> Option<Vec<u8>> {
    if query.flags & 0x7800 != 0 {
        return Some(reply(packet, query, RCODE_NOTIMP, &[]));
    }
    match lookup {
        Lookup::Unknown => None,
        Lookup::Addresses(addresses) => {
            let records: Vec<(u16, Vec<u8>)> = addresses
                .iter()
                .filter_map(|ip| match (ip, query.qtype) {
                    (IpAddr::V4(v4), TYPE_A | TYPE_ANY) => Some((TYPE_A, v4.octets().to_vec())),
                    (IpAddr::V6(v6), TYPE_AAAA | TYPE_ANY) => {
                        Some((TYPE_AAAA, v6.octets().to_vec()))
                    }
                    _ => None,
                })
                .collect();
            // A name of ours without a record of the type asked: no data.
            Some(reply(packet, query, 0, &records))
        }
        Lookup::Name(name) => {
            let mut data = Vec::new();
            encode_name(name, &mut data);
            Some(reply(packet, query, 0, &[(TYPE_PTR, data)]))
        }
    }
}

/// A failure reply (for a query we could not get answered).
pub fn failure(packet: &[u8], query: &Query, nxdomain: bool) -> Vec<u8> {
    let rcode = if nxdomain {
        RCODE_NXDOMAIN
    } else {
        RCODE_SERVFAIL
    };
    reply(packet, query, rcode, &[])
}

/// A query sent upstream and not answered yet.
struct Pending {
    upstream_id: u16,
    client: SocketAddr,
    packet: Vec<u8>,
    query: Query,
    deadline: Instant,
}

/// The server: its socket in the container's namespace, one in ours for
/// the upstreams, the queries in flight.
pub struct Server {
    socket: UdpSocket,
    upstream: Option<UdpSocket>,
    upstreams: Vec<SocketAddr>,
    pending: Vec<Pending>,
    next_id: u16,
}

impl Server {
    /// Binds `address` inside `namespace` (its loopback must be up) and a
    /// socket here for the upstream resolvers.
    pub fn bind(
        namespace: BorrowedFd<'_>,
        address: SocketAddr,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Server> {
        let socket = crate::netns::run_in(namespace, || {
            UdpSocket::bind(address).map_err(|e| Error::io(format!("listen on {address}"), e))
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io("set the DNS socket non-blocking", e))?;
        // One family for the upstream socket: the first resolver's.
        let upstreams: Vec<SocketAddr> = match upstreams.first() {
            Some(first) => {
                let v4 = first.is_ipv4();
                upstreams
                    .into_iter()
                    .filter(|u| u.is_ipv4() == v4)
                    .collect()
            }
            None => Vec::new(),
        };
        let upstream = match upstreams.first() {
            Some(first) => {
                let local: SocketAddr = if first.is_ipv4() {
                    "0.0.0.0:0".parse().expect("an address")
                } else {
                    "[::]:0".parse().expect("an address")
                };
                let socket = UdpSocket::bind(local)
                    .map_err(|e| Error::io("open a socket for the upstream resolvers", e))?;
                socket
                    .set_nonblocking(true)
                    .map_err(|e| Error::io("set the DNS socket non-blocking", e))?;
                Some(socket)
            }
            None => None,
        };
        let seed = std::process::id() as u16 ^ (Instant::now().elapsed().subsec_nanos() as u16);
        Ok(Server {
            socket,
            upstream,
            upstreams,
            pending: Vec::new(),
            next_id: seed,
        })
    }

    /// Where the server listens (its port, when bound to port 0).
    pub fn local_address(&self) -> Result<SocketAddr> {
        self.socket
            .local_addr()
            .map_err(|e| Error::io("read the DNS socket's address", e))
    }

    /// The fds to poll for reading: the server's, then the upstream one.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.socket.as_raw_fd()];
        if let Some(upstream) = &self.upstream {
            fds.push(upstream.as_raw_fd());
        }
        fds
    }

    /// When [`Server::tick`] has something to expire.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Serves every query waiting on the server's socket.
    pub fn serve(&mut self, lookup: &mut dyn FnMut(&Question) -> Lookup) {
        let mut buffer = [0u8; 4096];
        while let Ok((n, client)) = self.socket.recv_from(&mut buffer) {
            let packet = &buffer[..n];
            let Some(query) = parse_query(packet) else {
                continue;
            };
            let known = if query.qclass == CLASS_IN || query.qclass == TYPE_ANY {
                lookup(&query.question())
            } else {
                Lookup::Unknown
            };
            match answer(packet, &query, &known) {
                Some(reply) => {
                    let _ = self.socket.send_to(&reply, client);
                }
                None => self.forward(packet, query, client),
            }
        }
        self.relay();
    }

    fn forward(&mut self, packet: &[u8], query: Query, client: SocketAddr) {
        let (Some(upstream), Some(server)) = (&self.upstream, self.upstreams.first()) else {
            let _ = self.socket.send_to(&failure(packet, &query, true), client);
            return;
        };
        if self.pending.len() >= MAX_PENDING {
            let _ = self.socket.send_to(&failure(packet, &query, false), client);
            return;
        }
        self.next_id = self.next_id.wrapping_add(1).wrapping_mul(0x9e37) ^ 0x5bd1;
        let upstream_id = self.next_id;
        let mut out = packet.to_vec();
        out[0..2].copy_from_slice(&upstream_id.to_be_bytes());
        if upstream.send_to(&out, server).is_err() {
            let _ = self.socket.send_to(&failure(packet, &query, false), client);
            return;
        }
        self.pending.push(Pending {
            upstream_id,
            client,
            packet: packet.to_vec(),
            query,
            deadline: Instant::now() + UPSTREAM_TIMEOUT,
        });
    }

    /// Relays every upstream answer waiting to its client.
    pub fn relay(&mut self) {
        let Some(upstream) = &self.upstream else {
            return;
        };
        let mut buffer = [0u8; 4096];
        while let Ok((n, from)) = upstream.recv_from(&mut buffer) {
            if n < 12 || !self.upstreams.contains(&from) {
                continue;
            }
            let id = u16::from_be_bytes([buffer[0], buffer[1]]);
            let Some(at) = self.pending.iter().position(|p| p.upstream_id == id) else {
                continue;
            };
            let pending = self.pending.swap_remove(at);
            buffer[0..2].copy_from_slice(&pending.query.id.to_be_bytes());
            let _ = self.socket.send_to(&buffer[..n], pending.client);
        }
    }

    /// Answers SERVFAIL for the queries upstream left unanswered.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let (expired, kept): (Vec<Pending>, Vec<Pending>) =
            self.pending.drain(..).partition(|p| p.deadline <= now);
        self.pending = kept;
        for p in expired {
            let _ = self
                .socket
                .send_to(&failure(&p.packet, &p.query, false), p.client);
        }
    }
}

/// The upstream resolvers of a resolv.conf text (port 53).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|ip| ip.split('%').next()?.parse::<IpAddr>().ok())
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut packet = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        encode_name(name, &mut packet);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&CLASS_IN.to_be_bytes());
        packet
    }

    #[test]
    fn parses_a_query_and_answers_it() {
        let packet = query("Web.", TYPE_A);
        let q = parse_query(&packet).unwrap();
        assert_eq!(q.name, "web");
        assert_eq!(q.id, 0x1234);
        let lookup = Lookup::Addresses(vec![
            "10.0.0.2".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        ]);
        let reply = answer(&packet, &q, &lookup).unwrap();
        // QR set, RD echoed, one answer, NOERROR.
        assert_eq!(reply[0..2], [0x12, 0x34]);
        assert_eq!(reply[2] & 0x80, 0x80);
        assert_eq!(reply[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1);
        assert_eq!(&reply[reply.len() - 4..], &[10, 0, 0, 2]);
        // AAAA asks get the v6 one only.
        let packet6 = query("web", TYPE_AAAA);
        let q6 = parse_query(&packet6).unwrap();
        let reply6 = answer(&packet6, &q6, &lookup).unwrap();
        assert_eq!(u16::from_be_bytes([reply6[6], reply6[7]]), 1);
        assert_eq!(reply6[reply6.len() - 1], 2);
        assert_eq!(answer(&packet, &q, &Lookup::Unknown), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_address("2.0.17.172.in-addr.arpa"),
            Some("172.17.0.2".parse().unwrap())
        );
        let v6: IpAddr = "fd00::1:2".parse().unwrap();
        let IpAddr::V6(a) = v6 else { unreachable!() };
        let name: Vec<String> = a
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)])
            .collect();
        assert_eq!(
            reverse_address(&format!("{}.ip6.arpa", name.join("."))),
            Some(v6)
        );
        assert_eq!(reverse_address("example.com"), None);
        let packet = query("2.0.17.172.in-addr.arpa", TYPE_PTR);
        let q = parse_query(&packet).unwrap();
        assert_eq!(
            q.question(),
            Question::Address("172.17.0.2".parse().unwrap())
        );
    }

    #[test]
    fn rejects_what_is_not_a_query() {
        assert_eq!(parse_query(&[0; 5]), None);
        let mut packet = query("a", TYPE_A);
        packet[2] |= 0x80;
        assert_eq!(parse_query(&packet), None);
        let mut pointer = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1];
        assert_eq!(parse_query(&pointer), None);
        pointer.truncate(13);
        assert_eq!(parse_query(&pointer), None);
    }

    #[test]
    fn reads_nameservers() {
        let text = "# x\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nsearch a\nnameserver bad\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }
}
