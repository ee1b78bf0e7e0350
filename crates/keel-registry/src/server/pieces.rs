//! The buffers downloads stream blob pieces through: 256 KiB each, mapped
//! from the kernel once and reused (a freed piece goes back to a pool),
//! and all given back when the server goes idle ([`release_idle`]). Plain
//! heap buffers of that size either cost a map and unmap per piece (with
//! malloc's thresholds fixed) or stay in the arenas of the threads that
//! read them after the load is gone (with glibc's moving thresholds);
//! these do neither.

use std::sync::Mutex;

use bytes::Bytes;

pub const PIECE: usize = 256 * 1024;
/// Pieces kept for reuse at most (the rest are unmapped when freed).
const POOL: usize = 64;

static FREE: Mutex<Vec<Region>> = Mutex::new(Vec::new());

/// One mapped piece.
struct Region(*mut u8);

// SAFETY: a private anonymous mapping owned by whoever holds the Region.
unsafe impl Send for Region {}

impl Region {
    fn new() -> Option<Region> {
        // SAFETY: a new private anonymous mapping of PIECE bytes.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PIECE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (address != libc::MAP_FAILED).then(|| Region(address.cast()))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping this Region owns.
        unsafe { libc::munmap(self.0.cast(), PIECE) };
    }
}

/// A piece being filled, then handed to the body as [`Bytes`].
pub struct Piece {
    region: Option<Region>,
    len: usize,
}

impl Piece {
    /// A piece from the pool (or a new mapping; None if none can be made).
    pub fn take() -> Option<Piece> {
        let pooled = FREE.lock().expect("the piece pool lock").pop();
        let region = match pooled {
            Some(region) => region,
            None => Region::new()?,
        };
        Some(Piece {
            region: Some(region),
            len: 0,
        })
    }

    /// The whole piece, to read into.
    pub fn buffer(&mut self) -> &mut [u8] {
        let region = self.region.as_ref().expect("a piece has its region");
        // SAFETY: PIECE bytes mapped for this piece alone.
        unsafe { std::slice::from_raw_parts_mut(region.0, PIECE) }
    }

    /// The first `len` bytes as a body chunk; the piece returns to the pool
    /// when the body is done with it.
    pub fn into_bytes(mut self, len: usize) -> Bytes {
        self.len = len.min(PIECE);
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        let region = self.region.as_ref().expect("a piece has its region");
        // SAFETY: the first `len` bytes of this piece's mapping, written.
        unsafe { std::slice::from_raw_parts(region.0, self.len) }
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if let Some(region) = self.region.take() {
            let mut free = FREE.lock().expect("the piece pool lock");
            if free.len() < POOL {
                free.push(region);
            }
        }
    }
}

/// Unmaps every pooled piece (the server is idle).
pub fn release_idle() {
    let freed = std::mem::take(&mut *FREE.lock().expect("the piece pool lock"));
    drop(freed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_reused_and_released() {
        let mut piece = Piece::take().unwrap();
        piece.buffer()[..5].copy_from_slice(b"hello");
        let bytes = piece.into_bytes(5);
        assert_eq!(&bytes[..], b"hello");
        drop(bytes);
        assert!(!FREE.lock().unwrap().is_empty());
        release_idle();
        assert!(FREE.lock().unwrap().is_empty());
    }
}
