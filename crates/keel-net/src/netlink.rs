//! A small synchronous rtnetlink client: what keel needs to wire a
//! container to a bridge, and nothing else. Links (bridge and veth
//! creation, up, MTU, master, move to a namespace, delete, lookup by
//! name), addresses and routes. Requests are built by hand (nlmsghdr,
//! ifinfomsg/ifaddrmsg/rtmsg, rtattrs) and every one is acknowledged;
//! a refusal comes back as the kernel's errno.
//!
//! A socket works in the network namespace it was made in:
//! [`Netlink::in_namespace`] opens one inside another (through a thread
//! that enters it), so a container's interfaces are set up from outside.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEIGH: u16 = 28;
const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_F_NODAD: u8 = 0x02;

const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const IFF_UP: u32 = 0x1;

const NDA_LLADDR: u16 = 2;
const NUD_NOARP: u16 = 0x40;
const NTF_MASTER: u8 = 0x04;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const NLM_F_REPLACE: u16 = 0x100;
/// TC_H_CLSACT, and its ingress and egress minors.
const TC_H_CLSACT: u32 = 0xffff_fff1;
const TC_H_CLSACT_INGRESS: u32 = 0xffff_fff2;
const TC_H_CLSACT_EGRESS: u32 = 0xffff_fff3;
const ETH_P_ALL: u16 = 0x0003;

/// A netlink message being built: header, a fixed part, attributes.
struct Message {
    bytes: Vec<u8>,
    /// Where open nested attributes start.
    nests: Vec<usize>,
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut bytes = vec![0u8; 16];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        Message {
            bytes,
            nests: Vec::new(),
        }
    }

    fn raw(&mut self, data: &[u8]) -> &mut Message {
        self.bytes.extend_from_slice(data);
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
        self
    }

    /// ifinfomsg: family, type, index, flags, change.
    fn link_header(&mut self, index: i32, flags: u32, change: u32) -> &mut Message {
        let mut header = [0u8; 16];
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        header[8..12].copy_from_slice(&flags.to_ne_bytes());
        header[12..16].copy_from_slice(&change.to_ne_bytes());
        self.raw(&header)
    }

    /// tcmsg: family, padding, ifindex, handle, parent, info.
    fn tc_header(&mut self, index: i32, handle: u32, parent: u32, info: u32) -> &mut Message {
        let mut header = [0u8; 20];
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        header[8..12].copy_from_slice(&handle.to_ne_bytes());
        header[12..16].copy_from_slice(&parent.to_ne_bytes());
        header[16..20].copy_from_slice(&info.to_ne_bytes());
        self.raw(&header)
    }

    fn attribute(&mut self, kind: u16, data: &[u8]) -> &mut Message {
        let length = (4 + data.len()) as u16;
        self.bytes.extend_from_slice(&length.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.raw(data)
    }

    fn string(&mut self, kind: u16, text: &str) -> &mut Message {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        self.attribute(kind, &data)
    }

    fn u32(&mut self, kind: u16, value: u32) -> &mut Message {
        self.attribute(kind, &value.to_ne_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Message {
        self.nests.push(self.bytes.len());
        self.bytes.extend_from_slice(&[0, 0]);
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Message {
        let start = self.nests.pop().expect("nests are balanced");
        let length = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&length.to_ne_bytes());
        self
    }

    fn finish(&mut self, sequence: u32) -> &[u8] {
        let length = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&length.to_ne_bytes());
        self.bytes[8..12].copy_from_slice(&sequence.to_ne_bytes());
        &self.bytes
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

/// A link as `get_link` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    pub up: bool,
    pub mtu: u32,
    /// The hardware address (Ethernet links).
    pub mac: Option<[u8; 6]>,
}

/// An rtnetlink socket in one network namespace.
pub struct Netlink {
    socket: OwnedFd,
    sequence: u32,
}

impl Netlink {
    /// A socket in this thread's network namespace.
    pub fn open() -> Result<Netlink> {
        // SAFETY: socket() returns a new fd or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(Error::io(
                "open a netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a new fd we own.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; bind with our own struct.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: bind of our socket to a sockaddr_nl of the right size.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                &address as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(Error::io(
                "bind a netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Netlink {
            socket,
            sequence: 1,
        })
    }

    /// Runs `f` with a socket in the network namespace `namespace` (an fd
    /// of `/proc/PID/ns/net` or a bind mount of one), on a thread of its
    /// own so that this thread's namespace never changes.
    pub fn in_namespace<T: Send>(
        namespace: BorrowedFd<'_>,
        f: impl FnOnce(&mut Netlink) -> Result<T> + Send,
    ) -> Result<T> {
        let raw = namespace.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns of this (new, short-lived) thread only.
                    if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                        return Err(Error::io(
                            "enter the network namespace",
                            std::io::Error::last_os_error(),
                        ));
                    }
                    let mut netlink = Netlink::open()?;
                    f(&mut netlink)
                })
                .join()
                .map_err(|_| Error::msg("the netlink thread failed"))?
        })
    }

    /// Sends a request and waits for its acknowledgement.
    fn request(&mut self, message: &mut Message, context: &str) -> Result<()> {
        self.exchange(message, context, |_| {}).map(|_| ())
    }

    /// Sends a request; `each` sees every reply payload (for dumps and
    /// gets); returns on the ack or the end of a dump.
    fn exchange(
        &mut self,
        message: &mut Message,
        context: &str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let bytes = message.finish(sequence);
        // SAFETY: send of our buffer on our socket.
        let sent = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(Error::Netlink {
                context: context.to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: recv into our buffer from our socket.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(Error::Netlink {
                    context: context.to_string(),
                    source: e,
                });
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + 16 <= n {
                let length =
                    u32::from_ne_bytes(buffer[at..at + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(buffer[at + 4..at + 6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(buffer[at + 8..at + 12].try_into().expect("4 bytes"));
                if length < 16 || at + length > n {
                    return Err(Error::msg(format!("{context}: a malformed netlink reply")));
                }
                let payload = &buffer[at + 16..at + length];
                if seq == sequence {
                    match kind {
                        NLMSG_ERROR => {
                            let code =
                                i32::from_ne_bytes(payload[0..4].try_into().expect("4 bytes"));
                            if code == 0 {
                                return Ok(());
                            }
                            return Err(Error::Netlink {
                                context: context.to_string(),
                                source: std::io::Error::from_raw_os_error(-code),
                            });
                        }
                        NLMSG_DONE => return Ok(()),
                        _ => each(payload),
                    }
                }
                at += align(length);
            }
        }
    }

    /// The link named `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut message = Message::new(RTM_GETLINK, 0);
        message.link_header(0, 0, 0).string(IFLA_IFNAME, name);
        let mut found = None;
        let result = self.exchange(&mut message, &format!("look up link {name}"), |payload| {
            found = parse_link(payload);
        });
        match result {
            Ok(()) => Ok(found),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut message = Message::new(RTM_GETLINK, NLM_F_DUMP);
        message.link_header(0, 0, 0);
        let mut links = Vec::new();
        self.exchange(&mut message, "list links", |payload| {
            links.extend(parse_link(payload));
        })?;
        Ok(links)
    }

    /// Every address of the namespace: (link index, address, prefix).
    pub fn addresses(&mut self) -> Result<Vec<(i32, IpAddr, u8)>> {
        let mut message = Message::new(RTM_GETADDR, NLM_F_DUMP);
        message.raw(&[0u8; 8]);
        let mut found = Vec::new();
        self.exchange(&mut message, "list addresses", |payload| {
            found.extend(parse_address(payload));
        })?;
        Ok(found)
    }

    fn index(&mut self, name: &str) -> Result<i32> {
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| Error::msg(format!("no link named {name}")))
    }

    /// Creates a bridge (unless one of that name exists), with a random
    /// locally administered MAC of its own (as docker's): a bridge left to
    /// itself takes its lowest port's, which changes as ports come and go.
    pub fn add_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        if self.link(name)?.is_some() {
            return Ok(());
        }
        let mut mac = [0u8; 6];
        // SAFETY: getrandom writes at most mac.len() bytes into mac.
        let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
        if n != mac.len() as isize {
            return Err(Error::io(
                "pick a MAC for the bridge",
                std::io::Error::last_os_error(),
            ));
        }
        mac[0] = (mac[0] & 0xfe) | 0x02;
        let mut message = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        message
            .link_header(0, 0, 0)
            .string(IFLA_IFNAME, name)
            .attribute(IFLA_ADDRESS, &mac);
        if let Some(mtu) = mtu {
            message.u32(IFLA_MTU, mtu);
        }
        message
            .begin(IFLA_LINKINFO)
            .string(IFLA_INFO_KIND, "bridge")
            .end();
        match self.request(&mut message, &format!("create bridge {name}")) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Creates a veth pair: `host` here, `peer` named `peer_name` in the
    /// network namespace `peer_namespace`.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer_name: &str,
        peer_namespace: BorrowedFd<'_>,
        mtu: Option<u32>,
    ) -> Result<()> {
        let mut message = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        message.link_header(0, 0, 0).string(IFLA_IFNAME, host);
        if let Some(mtu) = mtu {
            message.u32(IFLA_MTU, mtu);
        }
        message
            .begin(IFLA_LINKINFO)
            .string(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER);
        message.link_header(0, 0, 0).string(IFLA_IFNAME, peer_name);
        if let Some(mtu) = mtu {
            message.u32(IFLA_MTU, mtu);
        }
        message.u32(IFLA_NET_NS_FD, peer_namespace.as_raw_fd() as u32);
        message.end().end().end();
        self.request(&mut message, &format!("create veth {host}"))
    }

    /// Brings a link up.
    pub fn set_up(&mut self, name: &str) -> Result<()> {
        let index = self.index(name)?;
        let mut message = Message::new(RTM_NEWLINK, 0);
        message.link_header(index, IFF_UP, IFF_UP);
        self.request(&mut message, &format!("bring {name} up"))
    }

    /// Makes `name` a port of the bridge `bridge`.
    pub fn set_master(&mut self, name: &str, bridge: &str) -> Result<()> {
        let index = self.index(name)?;
        let master = self.index(bridge)?;
        let mut message = Message::new(RTM_NEWLINK, 0);
        message
            .link_header(index, 0, 0)
            .u32(IFLA_MASTER, master as u32);
        self.request(&mut message, &format!("attach {name} to {bridge}"))
    }

    /// Sets a link's hardware address.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<()> {
        let index = self.index(name)?;
        let mut message = Message::new(RTM_NEWLINK, 0);
        message
            .link_header(index, 0, 0)
            .attribute(IFLA_ADDRESS, &mac);
        self.request(&mut message, &format!("set the address of {name}"))
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<()> {
        let index = self.index(name)?;
        let mut message = Message::new(RTM_NEWLINK, 0);
        message.link_header(index, 0, 0).u32(IFLA_MTU, mtu);
        self.request(&mut message, &format!("set the MTU of {name}"))
    }

    /// Deletes a link; a missing one is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        let Some(link) = self.link(name)? else {
            return Ok(());
        };
        let mut message = Message::new(RTM_DELLINK, 0);
        message.link_header(link.index, 0, 0);
        match self.request(&mut message, &format!("delete link {name}")) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Adds `ip/prefix` to a link (an existing one is not an error).
    pub fn add_address(&mut self, name: &str, ip: IpAddr, prefix: u8) -> Result<()> {
        let index = self.index(name)?;
        let mut message = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        // IPv6: no duplicate address detection (the address is ours and
        // must work at once).
        let flags = if ip.is_ipv6() { IFA_F_NODAD } else { 0 };
        let header = [family(&ip), prefix, flags, 0];
        message.raw(&header).raw(&(index as u32).to_ne_bytes());
        let bytes = ip_bytes(&ip);
        message
            .attribute(IFA_LOCAL, &bytes)
            .attribute(IFA_ADDRESS, &bytes);
        if let IpAddr::V4(v4) = ip {
            let host_bits = 32 - u32::from(prefix);
            let mask = if host_bits >= 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            let broadcast = u32::from(v4) | mask;
            message.attribute(IFA_BROADCAST, &broadcast.to_be_bytes());
        }
        match self.request(&mut message, &format!("add {ip}/{prefix} to {name}")) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Attaches the BPF program `program` (a SCHED_CLS program in
    /// direct-action mode) to the ingress or egress of link `index`, in
    /// place of the one attached there before; makes the link's clsact
    /// qdisc first if it has none. The attachment lives as long as the
    /// link.
    pub fn attach_tc_program(
        &mut self,
        index: i32,
        egress: bool,
        program: BorrowedFd<'_>,
        name: &str,
    ) -> Result<()> {
        let mut qdisc = Message::new(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL);
        qdisc
            .tc_header(index, 0xffff_0000, TC_H_CLSACT, 0)
            .string(TCA_KIND, "clsact");
        match self.request(&mut qdisc, &format!("add a clsact qdisc to link {index}")) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            other => other?,
        }
        let parent = if egress {
            TC_H_CLSACT_EGRESS
        } else {
            TC_H_CLSACT_INGRESS
        };
        // Priority 1, every protocol, handle 1: one filter of ours per hook.
        let info = (1u32 << 16) | u32::from(ETH_P_ALL.to_be());
        let mut filter = Message::new(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE);
        filter
            .tc_header(index, 1, parent, info)
            .string(TCA_KIND, "bpf")
            .begin(TCA_OPTIONS)
            .u32(TCA_BPF_FD, program.as_raw_fd() as u32)
            .string(TCA_BPF_NAME, name)
            .u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
            .end();
        self.request(&mut filter, &format!("attach a tc program to link {index}"))
    }

    /// A static entry in the forwarding database of the bridge that link
    /// `index` is a port of: frames for `mac` go out of that port, learnt
    /// or not (`bridge fdb replace MAC dev PORT master static`). It goes
    /// with the port.
    pub fn add_static_fdb(&mut self, index: i32, mac: [u8; 6]) -> Result<()> {
        let mut message = Message::new(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE);
        // ndmsg: family, pad, pad, ifindex, state, flags, type.
        let mut header = [0u8; 12];
        header[0] = libc::AF_BRIDGE as u8;
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        header[8..10].copy_from_slice(&NUD_NOARP.to_ne_bytes());
        header[10] = NTF_MASTER;
        message.raw(&header).attribute(NDA_LLADDR, &mac);
        self.request(
            &mut message,
            &format!("add a static bridge entry on link {index}"),
        )
    }

    /// Adds a default route through `gateway` on link `name`.
    pub fn add_default_route(&mut self, name: &str, gateway: IpAddr) -> Result<()> {
        let index = self.index(name)?;
        let mut message = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // rtmsg: family, dst_len, src_len, tos, table main, protocol boot,
        // scope universe, type unicast, flags.
        let header = [family(&gateway), 0, 0, 0, 254, 3, 0, 1];
        message.raw(&header).raw(&0u32.to_ne_bytes());
        message.attribute(RTA_GATEWAY, &ip_bytes(&gateway));
        message.u32(RTA_OIF, index as u32);
        match self.request(&mut message, &format!("route through {gateway} on {name}")) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }
}

/// A link from an RTM_NEWLINK payload (ifinfomsg + attributes).
fn parse_link(payload: &[u8]) -> Option<Link> {
    if payload.len() < 16 {
        return None;
    }
    let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let mut name = String::new();
    let mut mtu = 0;
    let mut mac = None;
    let mut at = 16;
    while at + 4 <= payload.len() {
        let length = u16::from_ne_bytes(payload[at..at + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(payload[at + 2..at + 4].try_into().ok()?);
        if length < 4 || at + length > payload.len() {
            break;
        }
        let data = &payload[at + 4..at + length];
        match kind {
            IFLA_IFNAME => {
                name = String::from_utf8_lossy(data.split(|&b| b == 0).next().unwrap_or(data))
                    .into_owned()
            }
            IFLA_MTU if data.len() >= 4 => mtu = u32::from_ne_bytes(data[0..4].try_into().ok()?),
            IFLA_ADDRESS if data.len() == 6 => mac = data.try_into().ok(),
            _ => {}
        }
        at += align(length);
    }
    Some(Link {
        index,
        name,
        up: flags & IFF_UP != 0,
        mtu,
        mac,
    })
}

/// An address from an RTM_NEWADDR payload (ifaddrmsg + attributes).
fn parse_address(payload: &[u8]) -> Option<(i32, IpAddr, u8)> {
    if payload.len() < 8 {
        return None;
    }
    let family = payload[0];
    let prefix = payload[1];
    let index = u32::from_ne_bytes(payload[4..8].try_into().ok()?) as i32;
    let mut address = None;
    let mut at = 8;
    while at + 4 <= payload.len() {
        let length = u16::from_ne_bytes(payload[at..at + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(payload[at + 2..at + 4].try_into().ok()?);
        if length < 4 || at + length > payload.len() {
            break;
        }
        let data = &payload[at + 4..at + length];
        if kind == IFA_ADDRESS || (kind == IFA_LOCAL && address.is_none()) {
            address = match (i32::from(family), data.len()) {
                (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
                (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
                _ => address,
            };
        }
        at += align(length);
    }
    address.map(|a| (index, a, prefix))
}

/// The network namespace of this thread, as an fd.
pub fn current_namespace() -> Result<OwnedFd> {
    open_namespace("/proc/thread-self/ns/net")
}

/// Opens a network namespace (a `/proc/PID/ns/net` or a bind mount).
pub fn open_namespace(path: &str) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(path).map_err(|_| Error::invalid("a path holds a NUL byte"))?;
    // SAFETY: open with a valid C string; a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io(
            format!("open {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Borrows a raw fd for the calls above.
pub fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_laid_out_as_the_kernel_reads_them() {
        let mut message = Message::new(RTM_NEWLINK, NLM_F_CREATE);
        message
            .link_header(7, IFF_UP, IFF_UP)
            .string(IFLA_IFNAME, "br0");
        message
            .begin(IFLA_LINKINFO)
            .string(IFLA_INFO_KIND, "bridge")
            .end();
        let bytes = message.finish(42).to_vec();
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(
            u16::from_ne_bytes(bytes[4..6].try_into().unwrap()),
            RTM_NEWLINK
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 42);
        assert_eq!(i32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 7);
        // IFLA_IFNAME "br0\0": 8 bytes, aligned.
        assert_eq!(&bytes[32..40], &[8, 0, 3, 0, b'b', b'r', b'0', 0]);
        // The nest's length covers its inner attribute (4 + 4 + "bridge\0" padded to 8).
        assert_eq!(
            u16::from_ne_bytes(bytes[40..42].try_into().unwrap()),
            4 + 4 + 8
        );
        assert_eq!(bytes.len() % 4, 0);
    }
}
