//! The bridge's fast path: frames between the endpoints of one bridge
//! network skip the bridge.
//!
//! A frame from container A to container B on a Linux bridge crosses A's
//! veth, the bridge (forwarding database, port), then B's veth: three
//! devices where a veth pair between two namespaces crosses one. keel
//! attaches two small tc programs that take known unicast frames past the
//! bridge, as Cilium does:
//!
//! - on the ingress of every endpoint's host-side veth, a frame for the
//!   MAC of another endpoint of the same network goes straight into that
//!   endpoint's namespace (`bpf_redirect_peer`: no bridge, no second veth
//!   transmit, no backlog queue);
//! - on the egress of the bridge device (what the host itself sends into
//!   the network: published ports, the gateway's replies), a frame for an
//!   endpoint's MAC goes to its veth without the bridge's forwarding.
//!
//! Everything else (ARP, broadcast, multicast, frames for the gateway or
//! for a MAC keel does not know) passes to the bridge as before, so the
//! network behaves as a bridge does; only known unicast takes the short
//! way. Each network has its own map (MAC → host-side veth index): a
//! container can only reach the endpoints of the networks it is on, as on
//! the bridge. The programs live as long as their devices (tc filters), and
//! the map as long as a program refers to it; nothing outlives a reboot.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

// From linux/bpf.h.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_REDIRECT: i32 = 23;
const HELPER_GET_SOCKET_COOKIE: i32 = 46;
const HELPER_REDIRECT_PEER: i32 = 155;
// struct __sk_buff: data and data_end.
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
const TC_ACT_OK: i32 = 0;

/// Entries of one network's map: a network has at most this many
/// endpoints on the fast path (the rest use the bridge).
const MAX_ENDPOINTS: u32 = 65536;
const KEY_SIZE: u32 = 6;
const VALUE_SIZE: u32 = 8;
const BPF_F_INGRESS: u32 = 1;

/// One eBPF instruction (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes (class | size/op | mode/source).
const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
const STX_H: u8 = 0x6b;
const LD_IMM64: u8 = 0x18;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const JGT_X: u8 = 0x2d;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

/// Where a program is attached, which decides how it redirects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// The ingress of an endpoint's host-side veth: into the peer's
    /// namespace directly.
    VethIngress,
    /// The egress of the bridge device: out of the endpoint's veth.
    BridgeEgress,
}

/// Where frames for one MAC go (a map value: the device's index and
/// whether the frame enters it rather than its peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// An endpoint: the host end of its veth (frames go into its peer, the
    /// container's interface).
    Veth(u32),
    /// The host: the bridge device, whose own MAC this is (frames enter
    /// the host's stack as the bridge would pass them up, without the
    /// bridge's forwarding and its netfilter pass).
    Host(u32),
}

impl Target {
    fn value(self) -> [u8; 8] {
        let (index, flags) = match self {
            Target::Veth(index) => (index, 0u32),
            Target::Host(index) => (index, BPF_F_INGRESS),
        };
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&index.to_ne_bytes());
        value[4..].copy_from_slice(&flags.to_ne_bytes());
        value
    }
}

/// The program: look the frame's destination MAC up in the map (`map_fd`);
/// found, redirect as its [`Target`] says; else let the frame pass.
///
/// On an endpoint veth's ingress: an endpoint's MAC goes into that
/// container (`bpf_redirect_peer`), the bridge's MAC into the bridge
/// device's ingress (`bpf_redirect` with BPF_F_INGRESS). On the bridge's
/// egress only frames the host's own sockets send to an endpoint are
/// redirected (`bpf_redirect` to its veth): a frame the host forwards (a
/// container reaching a published port on its own bridge, say) may still
/// need the bridge's netfilter steps (br_netfilter masquerades such
/// hairpin frames while the bridge forwards them), so it takes the bridge.
pub fn program(map_fd: i32, hook: Hook) -> Vec<Insn> {
    // Jumps to "pass" are patched once its place is known.
    const PASS: i16 = i16::MAX;
    let mut program = Vec::new();
    if hook == Hook::BridgeEgress {
        // if the frame has no socket of this host (it is forwarded): pass
        program.push(insn(MOV64_X, 6, 1, 0, 0));
        program.push(insn(CALL, 0, 0, 0, HELPER_GET_SOCKET_COOKIE));
        program.push(insn(JEQ_K, 0, 0, PASS, 0));
        program.push(insn(MOV64_X, 1, 6, 0, 0));
    }
    program.extend([
        // r2 = skb->data, r3 = skb->data_end
        insn(LDX_W, 2, 1, SKB_DATA, 0),
        insn(LDX_W, 3, 1, SKB_DATA_END, 0),
        // if data + 6 > data_end: pass
        insn(MOV64_X, 4, 2, 0, 0),
        insn(ADD64_K, 4, 0, 0, KEY_SIZE as i32),
        insn(JGT_X, 4, 3, PASS, 0),
        // the key (destination MAC) at fp-8, in 2-byte loads (the MAC
        // sits 2 bytes off a 4-byte boundary in the verifier's model)
        insn(LDX_H, 5, 2, 0, 0),
        insn(STX_H, 10, 5, -8, 0),
        insn(LDX_H, 5, 2, 2, 0),
        insn(STX_H, 10, 5, -6, 0),
        insn(LDX_H, 5, 2, 4, 0),
        insn(STX_H, 10, 5, -4, 0),
        // r0 = lookup(map, fp-8)
        insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_X, 2, 10, 0, 0),
        insn(ADD64_K, 2, 0, 0, -8),
        insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),
        insn(JEQ_K, 0, 0, PASS, 0),
        // r1 = index, r2 = flags
        insn(LDX_W, 1, 0, 0, 0),
        insn(LDX_W, 2, 0, 4, 0),
    ]);
    match hook {
        Hook::VethIngress => program.extend([
            // flags: into the bridge device; none: into the peer
            insn(JNE_K, 2, 0, 2, 0),
            insn(CALL, 0, 0, 0, HELPER_REDIRECT_PEER),
            insn(EXIT, 0, 0, 0, 0),
            insn(CALL, 0, 0, 0, HELPER_REDIRECT),
            insn(EXIT, 0, 0, 0, 0),
        ]),
        Hook::BridgeEgress => program.extend([
            // the host's own MAC: nothing to do here
            insn(JNE_K, 2, 0, PASS, 0),
            insn(CALL, 0, 0, 0, HELPER_REDIRECT),
            insn(EXIT, 0, 0, 0, 0),
        ]),
    }
    let pass = program.len();
    for (at, i) in program.iter_mut().enumerate() {
        if i.off == PASS {
            i.off = (pass - at - 1) as i16;
        }
    }
    program.push(insn(MOV64_K, 0, 0, 0, TC_ACT_OK));
    program.push(insn(EXIT, 0, 0, 0, 0));
    program
}

fn bpf(command: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: the bpf syscall reads (and for some commands writes) `attr`,
    // a buffer of the size we pass; pointers inside it point at memory
    // that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: i64) -> OwnedFd {
    // SAFETY: the bpf commands we call this for return a new fd.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

fn put_u32(attr: &mut [u8], at: usize, value: u32) {
    attr[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, value: u64) {
    attr[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The map name of a network: `k` and the first 14 characters of its ID
/// (the kernel keeps 15).
pub fn map_name(network_id: &str) -> String {
    let id: String = network_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(14)
        .collect();
    format!("k{id}")
}

/// One network's map: destination MAC → [`Target`].
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    id: u32,
}

impl Map {
    /// A new, empty map named `name` (see [`map_name`]).
    pub fn create(name: &str) -> Result<Map> {
        let mut attr = [0u8; 48];
        put_u32(&mut attr, 0, BPF_MAP_TYPE_HASH);
        put_u32(&mut attr, 4, KEY_SIZE);
        put_u32(&mut attr, 8, VALUE_SIZE);
        put_u32(&mut attr, 12, MAX_ENDPOINTS);
        put_u32(&mut attr, 16, BPF_F_NO_PREALLOC);
        let bytes = name.as_bytes();
        let n = bytes.len().min(15);
        attr[28..28 + n].copy_from_slice(&bytes[..n]);
        let fd = bpf(BPF_MAP_CREATE, &mut attr)
            .map(fd_from)
            .map_err(|e| Error::io("create the fast path's BPF map", e))?;
        let id = info(fd.as_fd())
            .map_err(|e| Error::io("read the fast path map's ID", e))?
            .id;
        Ok(Map { fd, id })
    }

    /// The map with kernel ID `id`, if it is still there and is a keel
    /// fast-path map named `name` (an ID can be reused after a reboot).
    pub fn open(id: u32, name: &str) -> Option<Map> {
        let mut attr = [0u8; 12];
        put_u32(&mut attr, 0, id);
        let fd = bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).ok().map(fd_from)?;
        let info = info(fd.as_fd()).ok()?;
        let ours = info.kind == BPF_MAP_TYPE_HASH
            && info.key_size == KEY_SIZE
            && info.value_size == VALUE_SIZE
            && info.name == name.as_bytes()[..name.len().min(15)];
        ours.then_some(Map { fd, id })
    }

    /// The kernel's ID of the map (for [`Map::open`] by a later command).
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Frames for `mac` go to `target`.
    pub fn set(&self, mac: [u8; 6], target: Target) -> Result<()> {
        let value = target.value();
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, mac.as_ptr() as u64);
        put_u64(&mut attr, 16, value.as_ptr() as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(drop)
            .map_err(|e| Error::io("add an endpoint to the fast path", e))
    }

    /// Frames for `mac` go through the bridge again.
    pub fn remove(&self, mac: [u8; 6]) -> Result<()> {
        let mut attr = [0u8; 32];
        put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
        put_u64(&mut attr, 8, mac.as_ptr() as u64);
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::io("remove an endpoint from the fast path", e)),
        }
    }

    /// Every MAC in the map.
    pub fn keys(&self) -> Result<Vec<[u8; 6]>> {
        let mut keys = Vec::new();
        let mut previous: Option<[u8; 6]> = None;
        loop {
            let mut next = [0u8; 6];
            let mut attr = [0u8; 32];
            put_u32(&mut attr, 0, self.fd.as_raw_fd() as u32);
            if let Some(key) = previous.as_ref() {
                put_u64(&mut attr, 8, key.as_ptr() as u64);
            }
            put_u64(&mut attr, 16, next.as_mut_ptr() as u64);
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(_) => {
                    keys.push(next);
                    previous = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(e) => return Err(Error::io("list the fast path's endpoints", e)),
            }
        }
    }
}

struct MapInfo {
    kind: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    name: Vec<u8>,
}

fn info(fd: BorrowedFd<'_>) -> std::io::Result<MapInfo> {
    // struct bpf_map_info: type, id, key_size, value_size, max_entries,
    // map_flags, name[16], ...
    let mut buffer = [0u8; 80];
    let mut attr = [0u8; 16];
    put_u32(&mut attr, 0, fd.as_raw_fd() as u32);
    put_u32(&mut attr, 4, buffer.len() as u32);
    put_u64(&mut attr, 8, buffer.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name = &buffer[24..40];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(MapInfo {
        kind: get_u32(&buffer, 0),
        id: get_u32(&buffer, 4),
        key_size: get_u32(&buffer, 8),
        value_size: get_u32(&buffer, 12),
        name: name[..end].to_vec(),
    })
}

/// Loads the program for `hook` on `map`; the verifier's log in the error
/// if the kernel refuses it.
pub fn load(map: &Map, hook: Hook) -> Result<OwnedFd> {
    let program = program(map.fd.as_raw_fd(), hook);
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 8192];
    let mut attempt = |with_log: bool| {
        let mut attr = [0u8; 128];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_SCHED_CLS);
        put_u32(&mut attr, 4, program.len() as u32);
        put_u64(&mut attr, 8, program.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        if with_log {
            put_u32(&mut attr, 24, 1);
            put_u32(&mut attr, 28, log.len() as u32);
            put_u64(&mut attr, 32, log.as_mut_ptr() as u64);
        }
        let name = b"keel_fastpath";
        attr[48..48 + name.len()].copy_from_slice(name);
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    // Without a log first (a log too small for the verifier's output
    // fails the load); with one to explain a refusal.
    match attempt(false).or_else(|_| attempt(true)) {
        Ok(fd) => Ok(fd_from(fd)),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let log = String::from_utf8_lossy(&log[..end]);
            Err(Error::msg(format!(
                "load the bridge fast path program: {e}{}{}",
                if log.is_empty() { "" } else { ": " },
                log.trim()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_inside_the_program_and_pass_lets_the_frame_go() {
        for hook in [Hook::VethIngress, Hook::BridgeEgress] {
            let program = program(3, hook);
            let pass = program.len() - 2;
            assert_eq!(program[pass].imm, TC_ACT_OK);
            let mut to_pass = 0;
            for (at, i) in program.iter().enumerate() {
                if matches!(i.code, JGT_X | JEQ_K | JNE_K) {
                    let target = at as i64 + 1 + i.off as i64;
                    assert!(
                        target > at as i64 && target < program.len() as i64,
                        "jump at {at}"
                    );
                    to_pass += usize::from(target == pass as i64);
                }
            }
            // Short frame, unknown MAC; on the bridge also: no socket, the
            // host's MAC.
            assert_eq!(to_pass, if hook == Hook::BridgeEgress { 4 } else { 2 });
            let helpers: Vec<i32> = program
                .iter()
                .filter(|i| i.code == CALL && i.imm != HELPER_MAP_LOOKUP_ELEM)
                .map(|i| i.imm)
                .collect();
            match hook {
                Hook::VethIngress => assert_eq!(helpers, [HELPER_REDIRECT_PEER, HELPER_REDIRECT]),
                Hook::BridgeEgress => {
                    assert_eq!(helpers, [HELPER_GET_SOCKET_COOKIE, HELPER_REDIRECT])
                }
            }
        }
    }

    #[test]
    fn map_values_say_index_and_whether_into_the_host() {
        assert_eq!(Target::Veth(7).value(), [7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Target::Host(2).value(), [2, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn the_kernel_takes_the_map_and_both_programs() {
        keel_testutil::require_root();
        let map = Map::create("ktest").expect("create a map");
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x07];
        map.set(mac, Target::Veth(7)).unwrap();
        map.set([0x02, 0x42, 0xac, 0x11, 0x00, 0x08], Target::Host(8))
            .unwrap();
        let mut keys = map.keys().unwrap();
        keys.sort();
        assert_eq!(keys, [mac, [0x02, 0x42, 0xac, 0x11, 0x00, 0x08]]);
        map.remove(mac).unwrap();
        map.remove(mac).unwrap();
        assert_eq!(map.keys().unwrap().len(), 1);
        // Found again by its ID and name, not by another name.
        assert!(Map::open(map.id(), "ktest").is_some());
        assert!(Map::open(map.id(), "kother").is_none());
        for hook in [Hook::VethIngress, Hook::BridgeEgress] {
            load(&map, hook).unwrap_or_else(|e| panic!("{hook:?}: {e}"));
        }
    }

    #[test]
    fn map_names_fit_the_kernel() {
        assert_eq!(map_name("0123456789abcdef0123"), "k0123456789abcd");
        assert_eq!(map_name("0123456789abcdef0123").len(), 15);
        assert_eq!(map_name("ab"), "kab");
    }
}
