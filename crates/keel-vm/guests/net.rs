//! The test guest's `net` mode: a virtio-net driver (two polled queues)
//! with just enough of ARP, IPv4 and ICMP to ping and be pinged.
//!
//! Its address comes from the command line in the kernel's own form,
//! `ip=ADDRESS::GATEWAY:NETMASK:...` (keel vm run --network adds it);
//! `peer=ADDRESS` names a host to ping first. It prints its MAC and
//! address, `reply from PEER` when the peer answers its echo request (the
//! payload checked), then answers ARP and echo requests for ever, printing
//! `echo request from X` for the first few.

use super::rings::{Buffers, EMPTY, N, Ring, addresses, next_used, offer, post, send};
use super::{BootInfo, mmio_read, power_off, print, print_number};

const BUFFER: usize = 2048;
const HEADER: usize = 12;

static mut RX: Ring = EMPTY;
static mut TX: Ring = EMPTY;
static mut RX_BUFFERS: Buffers<BUFFER> = Buffers([[0; BUFFER]; N]);
static mut TX_BUFFER: Buffers<BUFFER> = Buffers([[0; BUFFER]; N]);

struct Nic {
    base: u64,
    mac: [u8; 6],
    ip: [u8; 4],
    /// The next used entry of the receive ring to read.
    seen: u16,
}

impl Nic {
    fn send(&mut self, frame: &[u8]) {
        // SAFETY: our transmit buffer, used by one vCPU.
        let buffer = unsafe { &mut (*core::ptr::addr_of_mut!(TX_BUFFER)).0[0] };
        buffer[..HEADER].fill(0);
        buffer[HEADER..HEADER + frame.len()].copy_from_slice(frame);
        send(
            self.base,
            1,
            core::ptr::addr_of_mut!(TX),
            buffer.as_ptr() as u64,
            HEADER + frame.len(),
        );
    }

    /// The next frame received, if one came (its buffer is offered again
    /// by the caller with [`Nic::give_back`]).
    fn receive(&mut self) -> Option<(u16, &'static [u8])> {
        let (id, length) = next_used(core::ptr::addr_of!(RX), &mut self.seen)?;
        // SAFETY: the buffer the device wrote.
        let buffer = unsafe { &(*core::ptr::addr_of!(RX_BUFFERS)).0[id as usize % N] };
        Some((id, &buffer[HEADER.min(length)..length.min(BUFFER)]))
    }

    fn give_back(&mut self, id: u16) {
        offer(self.base, 0, core::ptr::addr_of_mut!(RX), id);
    }
}

fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reads the time-stamp counter.
    unsafe { core::arch::asm!("rdtsc", out("eax") low, out("edx") high) };
    u64::from(high) << 32 | u64::from(low)
}

fn parse_ip(text: &[u8]) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for byte in &mut ip {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 {
            return None;
        }
        let mut n: u32 = 0;
        for &d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(d - b'0');
        }
        *byte = u8::try_from(n).ok()?;
    }
    parts.next().is_none().then_some(ip)
}

fn word<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    cmdline
        .split(|&b| b == b' ')
        .find_map(|w| w.strip_prefix(key))
}

fn print_ip(ip: &[u8]) {
    for (i, b) in ip.iter().enumerate() {
        if i > 0 {
            print(b".");
        }
        print_number(u64::from(*b));
    }
}

fn print_mac(mac: &[u8; 6]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            print(b":");
        }
        print(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

const PAYLOAD: &[u8] = b"keel's test guest pings you";

fn arp(nic: &mut Nic, op: u16, to_mac: [u8; 6], to_ip: [u8; 4]) {
    let mut f = [0u8; 42];
    let dest = if op == 1 { [0xff; 6] } else { to_mac };
    f[..6].copy_from_slice(&dest);
    f[6..12].copy_from_slice(&nic.mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
    f[22..28].copy_from_slice(&nic.mac);
    f[28..32].copy_from_slice(&nic.ip);
    f[32..38].copy_from_slice(if op == 1 { &[0; 6] } else { &to_mac });
    f[38..42].copy_from_slice(&to_ip);
    nic.send(&f);
}

/// An IPv4 ICMP message of `kind` (8: request, 0: reply) with `rest`
/// (identifier, sequence, payload).
fn icmp(nic: &mut Nic, to_mac: [u8; 6], to_ip: [u8; 4], kind: u8, rest: &[u8]) {
    let mut f = [0u8; 1514];
    let length = 20 + 4 + rest.len();
    if 14 + length > f.len() {
        return;
    }
    f[..6].copy_from_slice(&to_mac);
    f[6..12].copy_from_slice(&nic.mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..14 + 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&nic.ip);
    ip[16..20].copy_from_slice(&to_ip);
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let message = &mut f[34..34 + 4 + rest.len()];
    message[0] = kind;
    message[4..].copy_from_slice(rest);
    let sum = checksum(message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    nic.send(&f[..14 + length]);
}

/// What a frame was, as far as this guest cares.
enum Seen {
    ArpReply([u8; 6], [u8; 4]),
    EchoReply([u8; 4]),
    Other,
}

/// Answers ARP and echo requests for our address; reports replies.
fn handle(nic: &mut Nic, frame: &[u8], echoes: &mut u32) -> Seen {
    if frame.len() < 42 {
        return Seen::Other;
    }
    let mut source = [0u8; 6];
    source.copy_from_slice(&frame[6..12]);
    match (frame[12], frame[13]) {
        (0x08, 0x06) => {
            let op = u16::from_be_bytes([frame[20], frame[21]]);
            let mut sender_mac = [0u8; 6];
            sender_mac.copy_from_slice(&frame[22..28]);
            let mut sender_ip = [0u8; 4];
            sender_ip.copy_from_slice(&frame[28..32]);
            if frame[38..42] != nic.ip {
                return Seen::Other;
            }
            match op {
                1 => {
                    arp(nic, 2, sender_mac, sender_ip);
                    Seen::Other
                }
                2 => Seen::ArpReply(sender_mac, sender_ip),
                _ => Seen::Other,
            }
        }
        (0x08, 0x00) => {
            let ip = &frame[14..];
            let header = usize::from(ip[0] & 15) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[0] >> 4 != 4 || ip[9] != 1 || ip[16..20] != nic.ip || total > ip.len() {
                return Seen::Other;
            }
            let mut from = [0u8; 4];
            from.copy_from_slice(&ip[12..16]);
            let message = &ip[header..total];
            if message.len() < 8 || checksum(message) != 0 {
                return Seen::Other;
            }
            match message[0] {
                8 => {
                    if *echoes < 3 {
                        print(b"echo request from ");
                        print_ip(&from);
                        print(b"\n");
                    }
                    *echoes += 1;
                    icmp(nic, source, from, 0, &message[4..]);
                    Seen::Other
                }
                0 if &message[8..] == PAYLOAD => Seen::EchoReply(from),
                _ => Seen::Other,
            }
        }
        _ => Seen::Other,
    }
}

pub fn run(info: &BootInfo, cmdline: &[u8]) -> ! {
    let Some(ip) = word(cmdline, b"ip=").and_then(|w| parse_ip(w.split(|&b| b == b':').next()?))
    else {
        print(b"net: no ip= on the command line\n");
        power_off();
    };
    let peer = word(cmdline, b"peer=").and_then(parse_ip);
    let rings = [
        addresses(core::ptr::addr_of!(RX)),
        addresses(core::ptr::addr_of!(TX)),
    ];
    // MAC only.
    let Some((base, low)) = super::virtio_setup_queues(info, 1, 1 << 5, &rings) else {
        power_off();
    };
    if low & (1 << 5) == 0 {
        print(b"net: the device has no MAC\n");
        power_off();
    }
    let config = [mmio_read(base, 0x100), mmio_read(base, 0x104)];
    let mut mac = [0u8; 6];
    mac[..4].copy_from_slice(&config[0].to_le_bytes());
    mac[4..].copy_from_slice(&config[1].to_le_bytes()[..2]);
    let mut nic = Nic {
        base,
        mac,
        ip,
        seen: 0,
    };
    // Every receive buffer to the device.
    post(base, 0, core::ptr::addr_of_mut!(RX), core::ptr::addr_of!(RX_BUFFERS));
    print(b"net: mac ");
    print_mac(&mac);
    print(b" ip ");
    print_ip(&ip);
    print(b"\n");
    let mut echoes = 0;
    if let Some(peer) = peer {
        let mut peer_mac = None;
        // Asked again every 2^27 TSC cycles (tens of milliseconds).
        let mut last: Option<u64> = None;
        let mut sequence = 0u16;
        'ping: loop {
            let now = rdtsc();
            if last.is_none_or(|last| now.wrapping_sub(last) > 1 << 27) {
                last = Some(now);
                match peer_mac {
                    None => arp(&mut nic, 1, [0; 6], peer),
                    Some(to) => {
                        sequence += 1;
                        let mut rest = [0u8; 4 + PAYLOAD.len()];
                        rest[..2].copy_from_slice(&0x6b65u16.to_be_bytes());
                        rest[2..4].copy_from_slice(&sequence.to_be_bytes());
                        rest[4..].copy_from_slice(PAYLOAD);
                        icmp(&mut nic, to, peer, 8, &rest);
                    }
                }
            }
            while let Some((id, frame)) = nic.receive() {
                let seen = handle(&mut nic, frame, &mut echoes);
                nic.give_back(id);
                match seen {
                    Seen::ArpReply(mac, from) if from == peer && peer_mac.is_none() => {
                        peer_mac = Some(mac);
                        last = None;
                    }
                    Seen::EchoReply(from) if from == peer => {
                        print(b"reply from ");
                        print_ip(&peer);
                        print(b"\n");
                        break 'ping;
                    }
                    _ => {}
                }
            }
            core::hint::spin_loop();
        }
    }
    print(b"net: answering\n");
    loop {
        while let Some((id, frame)) = nic.receive() {
            handle(&mut nic, frame, &mut echoes);
            nic.give_back(id);
        }
        core::hint::spin_loop();
    }
}
