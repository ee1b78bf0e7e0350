//! Split virtqueues of eight entries, as the test guest's multi-queue
//! drivers (net, vsock) keep them: the rings in one static each, buffers
//! offered on the avail ring, used entries read back by index.

use core::sync::atomic::{Ordering, fence};

use super::mmio_write;

pub const N: usize = 8;

#[repr(C, align(4096))]
pub struct Ring {
    desc: [[u64; 2]; N],
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; N],
    used_event: u16,
    _pad: u16,
    used_flags: u16,
    used_idx: u16,
    used_ring: [[u32; 2]; N],
    avail_event: u16,
}

pub const EMPTY: Ring = Ring {
    desc: [[0; 2]; N],
    avail_flags: 0,
    avail_idx: 0,
    avail_ring: [0; N],
    used_event: 0,
    _pad: 0,
    used_flags: 0,
    used_idx: 0,
    used_ring: [[0; 2]; N],
    avail_event: 0,
};

/// `N` buffers of `B` bytes.
#[repr(C, align(16))]
pub struct Buffers<const B: usize>(pub [[u8; B]; N]);

/// The descriptor table's, avail ring's and used ring's addresses.
pub fn addresses(ring: *const Ring) -> (u64, u64, u64) {
    // SAFETY: field addresses only.
    unsafe {
        (
            core::ptr::addr_of!((*ring).desc) as u64,
            core::ptr::addr_of!((*ring).avail_flags) as u64,
            core::ptr::addr_of!((*ring).used_flags) as u64,
        )
    }
}

/// Offers descriptor `id` on `ring` (avail ring) and notifies `queue`.
pub fn offer(base: u64, queue: u32, ring: *mut Ring, id: u16) {
    // SAFETY: our rings, used by one vCPU.
    unsafe {
        let idx = core::ptr::read_volatile(&raw const (*ring).avail_idx);
        core::ptr::write_volatile(&raw mut (*ring).avail_ring[(idx as usize) % N], id);
        fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut (*ring).avail_idx, idx.wrapping_add(1));
        fence(Ordering::SeqCst);
    }
    mmio_write(base, 0x050, queue);
}

/// Describes every buffer of `buffers` (device-writable) on `ring` and
/// offers them all on `queue`.
pub fn post<const B: usize>(base: u64, queue: u32, ring: *mut Ring, buffers: *const Buffers<B>) {
    for id in 0..N {
        // SAFETY: our ring and buffers.
        unsafe {
            let buffer = (*buffers).0[id].as_ptr() as u64;
            core::ptr::write_volatile(&raw mut (*ring).desc[id][0], buffer);
            core::ptr::write_volatile(&raw mut (*ring).desc[id][1], B as u64 | (2 << 32));
        }
        offer(base, queue, ring, id as u16);
    }
}

/// The next used entry after `seen` (its descriptor and length), if the
/// device has used one.
pub fn next_used(ring: *const Ring, seen: &mut u16) -> Option<(u16, usize)> {
    // SAFETY: our ring; the device wrote the entry before the index.
    unsafe {
        if core::ptr::read_volatile(&raw const (*ring).used_idx) == *seen {
            return None;
        }
        fence(Ordering::SeqCst);
        let entry = core::ptr::read_volatile(&raw const (*ring).used_ring[(*seen as usize) % N]);
        *seen = seen.wrapping_add(1);
        Some((entry[0] as u16, entry[1] as usize))
    }
}

/// Sends `length` bytes at `address` as descriptor 0 of `ring` on
/// `queue`, and waits until the device has used it.
pub fn send(base: u64, queue: u32, ring: *mut Ring, address: u64, length: usize) {
    // SAFETY: our ring, used by one vCPU.
    unsafe {
        core::ptr::write_volatile(&raw mut (*ring).desc[0][0], address);
        core::ptr::write_volatile(&raw mut (*ring).desc[0][1], length as u64);
        let before = core::ptr::read_volatile(&raw const (*ring).used_idx);
        offer(base, queue, ring, 0);
        while core::ptr::read_volatile(&raw const (*ring).used_idx) == before {
            core::hint::spin_loop();
        }
    }
}
