//! Guest memory: anonymous, private, reserved lazily (`MAP_NORESERVE`): the
//! host commits a page only when the guest first touches it, so VMs may be
//! assigned more memory in total than the host has. Below 4 GiB the space
//! from 3 GiB up is left for devices (the MMIO hole); memory past 3 GiB
//! continues at 4 GiB.

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::error::{Error, Result};

/// Where the MMIO hole below 4 GiB starts (devices live there).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// Where memory resumes above the hole.
pub const HIGH_START: u64 = 1 << 32;

pub type Memory = GuestMemoryMmap<()>;

/// The guest-physical ranges of `size` bytes of RAM: below the hole, then
/// from 4 GiB.
pub fn layout(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_HOLE_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START),
            (GuestAddress(HIGH_START), size - MMIO_HOLE_START),
        ]
    }
}

/// Maps `size` bytes of guest RAM (lazily committed).
pub fn create(size: u64) -> Result<Memory> {
    let regions = layout(size)
        .into_iter()
        .map(|(start, length)| {
            let length = usize::try_from(length)
                .map_err(|_| Error::invalid("guest memory too large for this host"))?;
            let mapping = vm_memory::MmapRegion::new(length).map_err(|e| Error::Io {
                what: format!("map {} MiB of guest memory", length >> 20),
                source: std::io::Error::other(e.to_string()),
            })?;
            vm_memory::GuestRegionMmap::new(mapping, start)
                .ok_or_else(|| Error::Msg("guest memory region overflows".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    GuestMemoryMmap::from_regions(regions)
        .map_err(|e| Error::Msg(format!("guest memory layout: {e}")))
}

/// Registers every region of `memory` with the VM as a memory slot.
pub fn register(vm: &kvm_ioctls::VmFd, memory: &Memory) -> Result<()> {
    register_with(vm, memory, 0)
}

/// Registers the slots again with KVM's dirty page log on.
pub fn log_dirty_pages(vm: &kvm_ioctls::VmFd, memory: &Memory) -> Result<()> {
    register_with(vm, memory, kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES)
}

/// The guest addresses of the pages written since the last call (with
/// the log on), region (slot) by region.
pub fn dirty_pages(vm: &kvm_ioctls::VmFd, memory: &Memory) -> Result<Vec<u64>> {
    let mut pages = Vec::new();
    for (slot, region) in memory.iter().enumerate() {
        let bitmap = vm
            .get_dirty_log(slot as u32, region.len() as usize)
            .map_err(Error::kvm("read KVM's dirty page log"))?;
        for (word_index, word) in bitmap.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                let page = word_index as u64 * 64 + bit;
                pages.push(region.start_addr().0 + page * 4096);
            }
        }
    }
    Ok(pages)
}

fn register_with(vm: &kvm_ioctls::VmFd, memory: &Memory, flags: u32) -> Result<()> {
    for (slot, region) in memory.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| Error::Msg(format!("guest memory: {e}")))?;
        let entry = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region stays mapped for the VM's life (the VM holds
        // `memory`), and the slots do not overlap.
        unsafe { vm.set_user_memory_region(entry) }
            .map_err(Error::kvm("register guest memory with KVM"))?;
    }
    Ok(())
}

/// The guest's end of RAM below the hole and above it (0 when none).
pub fn ends(memory: &Memory) -> (u64, u64) {
    let mut low = 0;
    let mut high = 0;
    for region in memory.iter() {
        let end = region.start_addr().0 + region.len();
        if region.start_addr().0 < MMIO_HOLE_START {
            low = end;
        } else {
            high = end;
        }
    }
    (low, high)
}

/// The bytes of guest memory the host really holds now (resident pages).
pub fn resident(memory: &Memory) -> u64 {
    let page = page_size();
    let mut total = 0u64;
    for region in memory.iter() {
        let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        let length = region.len() as usize;
        let pages = length.div_ceil(page);
        let mut vector = vec![0u8; pages];
        // SAFETY: mincore on our own mapping of `length` bytes, into a
        // vector of one byte per page.
        let result = unsafe { libc::mincore(host.cast(), length, vector.as_mut_ptr()) };
        if result == 0 {
            total += vector.iter().filter(|b| **b & 1 != 0).count() as u64 * page as u64;
        }
    }
    total
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_above_three_gib_continues_at_four() {
        assert_eq!(layout(1 << 30), vec![(GuestAddress(0), 1 << 30)]);
        assert_eq!(
            layout(5 << 30),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 2 << 30)]
        );
    }

    #[test]
    fn memory_is_committed_only_when_touched() {
        use vm_memory::Bytes;
        // 8 GiB assigned: nothing resident until written.
        let memory = create(8 << 30).unwrap();
        assert!(resident(&memory) < 1 << 20);
        memory
            .write_slice(&[1u8; 4096 * 4], GuestAddress(1 << 20))
            .unwrap();
        let now = resident(&memory);
        assert!((4 * 4096..1 << 20).contains(&now), "{now}");
        assert_eq!(ends(&memory), (3 << 30, (4 << 30) + (5 << 30)));
    }
}
