//! Booting Linux: a bzImage or an ELF vmlinux, entered at its 64-bit entry
//! point with the x86 boot protocol's zero page (`boot_params`), as
//! Firecracker does:
//!
//! - the kernel loaded by linux-loader (a bzImage at its `code32_start`,
//!   1 MiB; an ELF at its physical addresses), an initrd at the top of
//!   low memory, the command line at [`boot::CMDLINE`];
//! - the zero page at [`ZERO_PAGE`]: the bzImage's setup header (or one
//!   made for an ELF), the command line and initrd, the e820 map (RAM
//!   below the EBDA, from 1 MiB to the MMIO hole, above 4 GiB), the RSDP;
//! - ACPI tables describing the vCPUs and devices ([`crate::acpi`]), and
//!   an MP table for a kernel without ACPI ([`crate::mptable`]);
//! - vCPU 0 in long mode on keel's identity page tables with `rsi` the
//!   zero page; the others wait for the INIT/SIPI Linux sends them.
//!
//! What is Linux: a bzImage (`HdrS` at 0x202), or an ELF with a note of
//! owner `Linux` (every vmlinux has them). Any other ELF is keel's own
//! guest format ([`crate::boot`]).

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::KernelLoader;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::boot;
use crate::error::{Error, Result};
use crate::memory::{self, Memory};

/// Where the zero page goes (Firecracker's place).
pub const ZERO_PAGE: u64 = 0x7000;
/// The start of the EBDA: RAM below it is the guest's.
const EBDA_START: u64 = 0x9_fc00;
const HIGH_MEMORY: u64 = 0x10_0000;
const E820_RAM: u32 = 1;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// `loadflags`: the kernel is loaded high; the heap end is valid.
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;

/// Whether `image` is a Linux kernel (rather than keel's guest format).
pub fn is_linux(image: &[u8]) -> bool {
    if image.len() > 0x206 && image[0x202..0x206] == *b"HdrS" {
        return true;
    }
    image.starts_with(b"\x7fELF") && elf_has_linux_note(image)
}

/// An ELF note whose owner is `Linux` (vmlinux's build salt, its version).
fn elf_has_linux_note(image: &[u8]) -> bool {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        image
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    for i in 0..phnum as usize {
        let at = phoff as usize + i * phentsize as usize;
        // PT_NOTE
        if u32_at(at) != Some(4) {
            continue;
        }
        let (Some(offset), Some(size)) = (u64_at(at + 8), u64_at(at + 32)) else {
            continue;
        };
        let (mut p, end) = (offset as usize, (offset + size) as usize);
        while p + 12 <= end {
            let (Some(namesz), Some(descsz)) = (u32_at(p), u32_at(p + 4)) else {
                break;
            };
            let name = image.get(p + 12..p + 12 + namesz as usize);
            if name.is_some_and(|n| n.starts_with(b"Linux")) {
                return true;
            }
            p += 12 + (namesz as usize).next_multiple_of(4) + (descsz as usize).next_multiple_of(4);
        }
    }
    false
}

/// Loads `image` (and `initrd`) into `memory` and writes the zero page
/// and ACPI tables; the kernel's 64-bit entry point.
pub fn load(
    memory: &Memory,
    image: &[u8],
    initrd: Option<&[u8]>,
    cmdline: &str,
    vcpus: u32,
    devices: &[crate::acpi::MmioDevice],
    what: &str,
) -> Result<u64> {
    let bad = |why: String| Error::invalid(format!("{what} is not a kernel keel can boot: {why}"));
    let mut file = std::io::Cursor::new(image);
    let bzimage = image.len() > 0x206 && image[0x202..0x206] == *b"HdrS";
    let (entry, header) = if bzimage {
        let loaded = linux_loader::loader::bzimage::BzImage::load(
            memory,
            None,
            &mut file,
            Some(GuestAddress(HIGH_MEMORY)),
        )
        .map_err(|e| bad(e.to_string()))?;
        let header = loaded
            .setup_header
            .ok_or_else(|| bad("no setup header".into()))?;
        if header.version < 0x020c || header.xloadflags & 1 == 0 {
            return Err(bad(format!(
                "boot protocol {}.{:02} without a 64-bit entry (keel needs 2.12 and XLF_KERNEL_64)",
                header.version >> 8,
                header.version & 0xff
            )));
        }
        // The 64-bit entry is 0x200 past the start of the protected-mode
        // kernel.
        (loaded.kernel_load.raw_value() + 0x200, header)
    } else {
        let loaded = linux_loader::loader::elf::Elf::load(
            memory,
            None,
            &mut file,
            Some(GuestAddress(HIGH_MEMORY)),
        )
        .map_err(|e| bad(e.to_string()))?;
        let header = setup_header {
            boot_flag: KERNEL_BOOT_FLAG_MAGIC,
            header: KERNEL_HDR_MAGIC,
            kernel_alignment: KERNEL_MIN_ALIGNMENT,
            ..Default::default()
        };
        (loaded.kernel_load.raw_value(), header)
    };
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = boot::CMDLINE as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;
    if cmdline.len() >= boot::CMDLINE_MAX {
        return Err(Error::invalid(format!(
            "a command line of {} bytes: keel passes at most {}",
            cmdline.len(),
            boot::CMDLINE_MAX - 1
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    memory
        .write_slice(&bytes, GuestAddress(boot::CMDLINE))
        .map_err(|e| Error::Msg(format!("write the command line: {e}")))?;
    let (low_end, high_end) = memory::ends(memory);
    if let Some(initrd) = initrd {
        let limit = match params.hdr.initrd_addr_max {
            0 => 0x37ff_ffff,
            max => u64::from(max),
        };
        let top = low_end.min(limit + 1);
        let size = initrd.len() as u64;
        let at = top
            .checked_sub(size)
            .map(|a| a & !0xfff)
            .filter(|&a| a >= HIGH_MEMORY + 0x100_0000)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "an initrd of {} MiB does not fit in the VM's low memory",
                    size >> 20
                ))
            })?;
        memory
            .write_slice(initrd, GuestAddress(at))
            .map_err(|e| Error::Msg(format!("write the initrd: {e}")))?;
        params.hdr.ramdisk_image = at as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let mut map = vec![(0, EBDA_START), (HIGH_MEMORY, low_end - HIGH_MEMORY)];
    if high_end > 0 {
        map.push((memory::HIGH_START, high_end - memory::HIGH_START));
    }
    for (i, &(addr, size)) in map.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        };
    }
    params.e820_entries = map.len() as u8;
    params.acpi_rsdp_addr = crate::acpi::write(memory, vcpus, devices)?;
    crate::mptable::write(memory, vcpus)?;
    memory
        .write_obj(params, GuestAddress(ZERO_PAGE))
        .map_err(|e| Error::Msg(format!("write the zero page: {e}")))?;
    if entry >= memory.last_addr().raw_value() {
        return Err(bad(format!(
            "its entry point {entry:#x} is outside the VM's memory"
        )));
    }
    Ok(entry)
}
