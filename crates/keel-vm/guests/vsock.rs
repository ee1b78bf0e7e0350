//! The test guest's `vsock` mode: a virtio-vsock driver (three polled
//! queues) and two stream sockets over it.
//!
//! `connect=PORT`: connects to the host's PORT, sends `hello from the
//! guest\n`, prints what the host sends back until it shuts the
//! connection (`vsock: host port PORT says: ...`), or that it was refused.
//! `listen=PORT`: then accepts the host's connections to PORT (others are
//! refused) and echoes every byte back, printing `vsock: port PORT echoed
//! N bytes` as each closes.

use super::rings::{Buffers, EMPTY, N, Ring, addresses, next_used, offer, post, send};
use super::{BootInfo, mmio_read, power_off, print, print_number};

const BUFFER: usize = 4096;
const HEADER: usize = 44;
/// The receive buffer the guest says it has on each connection.
const GUEST_BUF: u32 = 64 * 1024;
const GUEST_PORT: u32 = 1024;
const HOST_CID: u64 = 2;

const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;

static mut RX: Ring = EMPTY;
static mut TX: Ring = EMPTY;
static mut EVENTS: Ring = EMPTY;
static mut RX_BUFFERS: Buffers<BUFFER> = Buffers([[0; BUFFER]; N]);
static mut TX_BUFFER: Buffers<BUFFER> = Buffers([[0; BUFFER]; N]);

#[derive(Clone, Copy, Default)]
struct Packet {
    src_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    op: u16,
    flags: u32,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[derive(Clone, Copy)]
struct Connection {
    open: bool,
    host_port: u32,
    guest_port: u32,
    /// Bytes taken from the receive buffer (echoed or read).
    fwd_cnt: u32,
}

const CLOSED: Connection = Connection {
    open: false,
    host_port: 0,
    guest_port: 0,
    fwd_cnt: 0,
};

struct Vsock {
    base: u64,
    cid: u64,
    seen: u16,
    connections: [Connection; 4],
}

impl Vsock {
    fn send(&mut self, op: u16, host_port: u32, guest_port: u32, flags: u32, payload: &[u8]) {
        let fwd_cnt = self
            .connections
            .iter()
            .find(|c| c.open && c.host_port == host_port && c.guest_port == guest_port)
            .map_or(0, |c| c.fwd_cnt);
        // SAFETY: our transmit buffer and ring, used by one vCPU.
        unsafe {
            let buffer = &mut (*core::ptr::addr_of_mut!(TX_BUFFER)).0[0];
            let length = HEADER + payload.len();
            buffer[..HEADER].fill(0);
            buffer[0..8].copy_from_slice(&self.cid.to_le_bytes());
            buffer[8..16].copy_from_slice(&HOST_CID.to_le_bytes());
            buffer[16..20].copy_from_slice(&guest_port.to_le_bytes());
            buffer[20..24].copy_from_slice(&host_port.to_le_bytes());
            buffer[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer[28..30].copy_from_slice(&1u16.to_le_bytes());
            buffer[30..32].copy_from_slice(&op.to_le_bytes());
            buffer[32..36].copy_from_slice(&flags.to_le_bytes());
            buffer[36..40].copy_from_slice(&GUEST_BUF.to_le_bytes());
            buffer[40..44].copy_from_slice(&fwd_cnt.to_le_bytes());
            buffer[HEADER..length].copy_from_slice(payload);
            send(self.base, 1, core::ptr::addr_of_mut!(TX), buffer.as_ptr() as u64, length);
        }
    }

    /// The next packet, and its payload (the buffer is offered again by
    /// [`Vsock::give_back`]).
    fn receive(&mut self) -> Option<(u16, Packet, &'static [u8])> {
        let (id, length) = next_used(core::ptr::addr_of!(RX), &mut self.seen)?;
        let length = length.min(BUFFER);
        // SAFETY: the buffer the device wrote.
        let b = unsafe { &(*core::ptr::addr_of!(RX_BUFFERS)).0[id as usize % N] };
        if length < HEADER {
            return Some((id, Packet::default(), &[]));
        }
        let packet = Packet {
            src_cid: u64::from(u32_at(b, 0)) | u64::from(u32_at(b, 4)) << 32,
            src_port: u32_at(b, 16),
            dst_port: u32_at(b, 20),
            len: u32_at(b, 24),
            op: u16::from_le_bytes([b[30], b[31]]),
            flags: u32_at(b, 32),
        };
        let end = (HEADER + packet.len as usize).min(length);
        Some((id, packet, &b[HEADER..end]))
    }

    fn give_back(&mut self, id: u16) {
        offer(self.base, 0, core::ptr::addr_of_mut!(RX), id);
    }

    fn connection(&mut self, host_port: u32, guest_port: u32) -> Option<&mut Connection> {
        self.connections
            .iter_mut()
            .find(|c| c.open && c.host_port == host_port && c.guest_port == guest_port)
    }
}

fn number(word: &[u8]) -> Option<u32> {
    if word.is_empty() {
        return None;
    }
    word.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u32::from(d - b'0')))
            .flatten()
    })
}

fn word<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    cmdline
        .split(|&b| b == b' ')
        .find_map(|w| w.strip_prefix(key))
}

pub fn run(info: &BootInfo, cmdline: &[u8]) -> ! {
    let rings = [
        addresses(core::ptr::addr_of!(RX)),
        addresses(core::ptr::addr_of!(TX)),
        addresses(core::ptr::addr_of!(EVENTS)),
    ];
    let Some((base, _)) = super::virtio_setup_queues(info, 19, 0, &rings) else {
        power_off();
    };
    let cid = u64::from(mmio_read(base, 0x100)) | u64::from(mmio_read(base, 0x104)) << 32;
    let mut vsock = Vsock {
        base,
        cid,
        seen: 0,
        connections: [CLOSED; 4],
    };
    post(base, 0, core::ptr::addr_of_mut!(RX), core::ptr::addr_of!(RX_BUFFERS));
    print(b"vsock: cid ");
    print_number(cid);
    print(b"\n");
    if let Some(port) = word(cmdline, b"connect=").and_then(number) {
        connect(&mut vsock, port);
    }
    let Some(listen) = word(cmdline, b"listen=").and_then(number) else {
        power_off();
    };
    print(b"vsock: listening on port ");
    print_number(u64::from(listen));
    print(b"\n");
    let mut echoed = [0u64; 4];
    loop {
        let Some((id, packet, payload)) = vsock.receive() else {
            core::hint::spin_loop();
            continue;
        };
        let (host, guest) = (packet.src_port, packet.dst_port);
        match packet.op {
            OP_REQUEST if packet.src_cid == HOST_CID && guest == listen => {
                match vsock.connections.iter().position(|c| !c.open) {
                    Some(slot) => {
                        vsock.connections[slot] = Connection {
                            open: true,
                            host_port: host,
                            guest_port: guest,
                            fwd_cnt: 0,
                        };
                        echoed[slot] = 0;
                        vsock.send(OP_RESPONSE, host, guest, 0, &[]);
                    }
                    None => vsock.send(OP_RST, host, guest, 0, &[]),
                }
            }
            OP_REQUEST => vsock.send(OP_RST, host, guest, 0, &[]),
            OP_RW => {
                let slot = vsock
                    .connections
                    .iter()
                    .position(|c| c.open && c.host_port == host && c.guest_port == guest);
                match slot {
                    Some(slot) => {
                        let c = &mut vsock.connections[slot];
                        c.fwd_cnt = c.fwd_cnt.wrapping_add(payload.len() as u32);
                        echoed[slot] += payload.len() as u64;
                        // Copied out: the receive buffer goes back first.
                        let mut copy = [0u8; BUFFER];
                        let n = payload.len();
                        copy[..n].copy_from_slice(payload);
                        vsock.give_back(id);
                        vsock.send(OP_RW, host, guest, 0, &copy[..n]);
                        continue;
                    }
                    None => vsock.send(OP_RST, host, guest, 0, &[]),
                }
            }
            OP_SHUTDOWN => {
                if let Some(slot) = vsock
                    .connections
                    .iter()
                    .position(|c| c.open && c.host_port == host && c.guest_port == guest)
                {
                    vsock.send(OP_RST, host, guest, 0, &[]);
                    vsock.connections[slot].open = false;
                    print(b"vsock: port ");
                    print_number(u64::from(guest));
                    print(b" echoed ");
                    print_number(echoed[slot]);
                    print(b" bytes\n");
                }
            }
            OP_RST => {
                if let Some(c) = vsock.connection(host, guest) {
                    c.open = false;
                }
            }
            OP_CREDIT_REQUEST => vsock.send(OP_CREDIT_UPDATE, host, guest, 0, &[]),
            _ => {}
        }
        vsock.give_back(id);
    }
}

/// Connects to the host's `port`, says hello, prints the answer.
fn connect(vsock: &mut Vsock, port: u32) {
    vsock.send(OP_REQUEST, port, GUEST_PORT, 0, &[]);
    let mut answer = [0u8; 256];
    let mut got = 0usize;
    loop {
        let Some((id, packet, payload)) = vsock.receive() else {
            core::hint::spin_loop();
            continue;
        };
        let ours = packet.src_port == port && packet.dst_port == GUEST_PORT;
        let op = packet.op;
        if ours && op == OP_RW {
            let n = payload.len().min(answer.len() - got);
            answer[got..got + n].copy_from_slice(&payload[..n]);
            got += n;
            if let Some(c) = vsock.connection(port, GUEST_PORT) {
                c.fwd_cnt = c.fwd_cnt.wrapping_add(payload.len() as u32);
            }
        }
        vsock.give_back(id);
        if !ours {
            continue;
        }
        match op {
            OP_RESPONSE => {
                vsock.connections[0] = Connection {
                    open: true,
                    host_port: port,
                    guest_port: GUEST_PORT,
                    fwd_cnt: 0,
                };
                vsock.send(OP_RW, port, GUEST_PORT, 0, b"hello from the guest\n");
            }
            OP_RST if vsock.connection(port, GUEST_PORT).is_none() => {
                print(b"vsock: host port ");
                print_number(u64::from(port));
                print(b" refused\n");
                return;
            }
            OP_SHUTDOWN | OP_RST => {
                print(b"vsock: host port ");
                print_number(u64::from(port));
                print(b" says: ");
                print(&answer[..got]);
                if op == OP_SHUTDOWN {
                    vsock.send(OP_SHUTDOWN, port, GUEST_PORT, 3, &[]);
                }
                vsock.connections[0].open = false;
                return;
            }
            OP_CREDIT_REQUEST => vsock.send(OP_CREDIT_UPDATE, port, GUEST_PORT, 0, &[]),
            _ => {}
        }
    }
}
