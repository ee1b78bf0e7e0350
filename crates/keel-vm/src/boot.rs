//! Booting keel's own guest format: a static x86-64 ELF whose loadable
//! segments lie in guest RAM, entered directly in 64-bit mode. The
//! contract a guest may rely on, on every vCPU at its first instruction:
//!
//! - long mode, paging on, all guest RAM and the first 4 GiB (the device
//!   window included) identity-mapped with 2 MiB pages, writable and
//!   executable; interrupts off, an empty IDT (a guest that wants
//!   interrupts loads its own: KVM's local APIC at 0xfee00000 and I/O APIC
//!   at 0xfec00000 are there, as on a PC); SSE enabled in CR0/CR4 (but
//!   under this machine's PVM an SSE instruction stops the guest: see the
//!   README);
//! - `rip` the ELF's entry point, `rdi` the vCPU's index (0..N), `rsi`
//!   the address of a [`BootInfo`], `rsp` 0 (the guest sets its own);
//! - every vCPU starts at once (there is no INIT/SIPI dance);
//! - devices: the serial port at 0x3f8, the i8042 at 0x60/0x64 (writing
//!   0xfe to 0x64 powers the VM off), pvpanic at 0x505 (writing 1 marks
//!   the guest as panicked), and virtio-mmio devices (the boot info's
//!   `mmio_base`, `mmio_count` windows of 4 KiB); the serial port's
//!   interrupt is GSI 4, virtio device `i`'s GSI 5 + `i` (edge-triggered
//!   I/O APIC pins; a guest may poll instead); the event device at
//!   0xfeb00000 (a byte of pending events, cleared as it is read; event 1:
//!   the power button, `keel vm stop`) raises GSI 23.
//!
//! Firecracker's x86-64 layout is kept where it names a place: GDT at
//! 0x500, page tables from 0x9000, the command line at 0x20000, the
//! program at 1 MiB.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::error::{Error, Result};
use crate::memory::{self, Memory};

pub const GDT: u64 = 0x500;
pub const IDT: u64 = 0x520;
pub const BOOT_INFO: u64 = 0x7000;
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
/// Page directories fit below this (one per GiB mapped).
const PD_END: u64 = 0x80000;
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 4096;
/// The lowest address a guest's segments may use.
pub const LOAD_START: u64 = 0x100000;

/// `KEELVM01`, little-endian.
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"KEELVM01");

/// What the VMM leaves for the guest at [`BOOT_INFO`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootInfo {
    pub magic: u64,
    /// RAM in bytes.
    pub memory_size: u64,
    pub vcpus: u32,
    pub cmdline_len: u32,
    pub cmdline: u64,
    /// Where RAM ends below the MMIO hole, and above it (0: none).
    pub low_end: u64,
    pub high_end: u64,
    /// The virtio-mmio devices: the first window and how many (4 KiB each).
    pub mmio_base: u64,
    pub mmio_count: u32,
}

impl BootInfo {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&self.memory_size.to_le_bytes());
        out.extend_from_slice(&self.vcpus.to_le_bytes());
        out.extend_from_slice(&self.cmdline_len.to_le_bytes());
        out.extend_from_slice(&self.cmdline.to_le_bytes());
        out.extend_from_slice(&self.low_end.to_le_bytes());
        out.extend_from_slice(&self.high_end.to_le_bytes());
        out.extend_from_slice(&self.mmio_base.to_le_bytes());
        out.extend_from_slice(&self.mmio_count.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out
    }
}

/// The most RAM keel's guest format maps (the page directories must fit
/// below 512 KiB).
pub const MAX_MEMORY: u64 = ((PD_END - PD) / 4096 - 4) << 30;

/// Loads an ELF of keel's guest format into `memory`; its entry point.
/// `what` names the file in errors.
pub fn load_elf(memory: &Memory, image: &[u8], what: &str) -> Result<u64> {
    let bad = |why: &str| Error::invalid(format!("{what} is not a guest keel can boot: {why}"));
    if image.len() < 64 || &image[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    if image[4] != 2 || image[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().expect("8 bytes"));
    let kind = u16_at(16);
    let machine = u16_at(18);
    if machine != 62 {
        return Err(bad("not an x86-64 program"));
    }
    if kind != 2 {
        return Err(bad("not a static executable (ET_EXEC)"));
    }
    let entry = u64_at(24);
    let phoff = u64_at(32) as usize;
    let phentsize = u16_at(54) as usize;
    let phnum = u16_at(56) as usize;
    if phentsize < 56 || phoff.saturating_add(phentsize.saturating_mul(phnum)) > image.len() {
        return Err(bad("its program headers are cut short"));
    }
    let mut loaded = false;
    let mut entry_inside = false;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if u32_at(at) != 1 {
            continue; // not PT_LOAD
        }
        let offset = u64_at(at + 8) as usize;
        let address = u64_at(at + 24); // p_paddr
        let file_size = u64_at(at + 32) as usize;
        let memory_size = u64_at(at + 40);
        if offset.saturating_add(file_size) > image.len() || file_size as u64 > memory_size {
            return Err(bad("a segment lies outside the file"));
        }
        let end = address
            .checked_add(memory_size)
            .ok_or_else(|| bad("a segment's address overflows"))?;
        if address < LOAD_START || end > memory::ends(memory).0 {
            return Err(bad(&format!(
                "a segment at {address:#x}..{end:#x} is outside guest RAM ({LOAD_START:#x}..{:#x})",
                memory::ends(memory).0
            )));
        }
        memory
            .write_slice(&image[offset..offset + file_size], GuestAddress(address))
            .map_err(|e| Error::Msg(format!("load {what}: {e}")))?;
        entry_inside |= (address..end).contains(&entry);
        loaded = true;
    }
    if !loaded {
        return Err(bad("it has nothing to load"));
    }
    if !entry_inside {
        return Err(bad(&format!(
            "its entry point {entry:#x} is in none of its segments"
        )));
    }
    Ok(entry)
}

/// Writes the boot info and the command line.
pub fn write_boot_info(memory: &Memory, vcpus: u32, cmdline: &str, devices: u32) -> Result<()> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(Error::invalid(format!(
            "the command line is {} bytes; at most {} fit",
            cmdline.len(),
            CMDLINE_MAX - 1
        )));
    }
    let (low_end, high_end) = memory::ends(memory);
    let info = BootInfo {
        magic: BOOT_MAGIC,
        memory_size: memory.iter().map(vm_memory::GuestMemoryRegion::len).sum(),
        vcpus,
        cmdline_len: cmdline.len() as u32,
        cmdline: CMDLINE,
        low_end,
        high_end,
        mmio_base: crate::devices::virtio::MMIO_BASE,
        mmio_count: devices,
    };
    let write = |bytes: &[u8], at: u64| {
        memory
            .write_slice(bytes, GuestAddress(at))
            .map_err(|e| Error::Msg(format!("write the boot info: {e}")))
    };
    write(cmdline.as_bytes(), CMDLINE)?;
    write(&[0], CMDLINE + cmdline.len() as u64)?;
    write(&info.bytes(), BOOT_INFO)
}

/// Identity-maps the first `max(4 GiB, end of RAM)` with 2 MiB pages.
pub fn write_page_tables(memory: &Memory) -> Result<()> {
    let (_, high_end) = memory::ends(memory);
    map_first_gib(memory, high_end.max(1 << 32).div_ceil(1 << 30))
}

/// Identity-maps the first 4 GiB (a Linux kernel makes its own tables
/// for the rest).
pub fn write_low_page_tables(memory: &Memory) -> Result<()> {
    map_first_gib(memory, 4)
}

fn map_first_gib(memory: &Memory, gib: u64) -> Result<()> {
    if PD + gib * 4096 > PD_END {
        return Err(Error::invalid(format!(
            "keel's guest format maps at most {} GiB of memory",
            MAX_MEMORY >> 30
        )));
    }
    let write = |value: u64, at: u64| {
        memory
            .write_obj(value, GuestAddress(at))
            .map_err(|e| Error::Msg(format!("write the page tables: {e}")))
    };
    // Present, writable.
    write(PDPT | 0b11, PML4)?;
    for g in 0..gib {
        write((PD + g * 4096) | 0b11, PDPT + g * 8)?;
        for m in 0..512u64 {
            // Present, writable, 2 MiB page.
            write(((g << 30) | (m << 21)) | 0x83, PD + g * 4096 + m * 8)?;
        }
    }
    Ok(())
}

const CODE: u64 = 0x00af_9b00_0000_ffff;
const DATA: u64 = 0x00cf_9300_0000_ffff;
const TSS: u64 = 0x0080_8b00_0000_ffff;

/// The GDT (null, 64-bit code, data, TSS) and an empty IDT.
pub fn write_gdt(memory: &Memory) -> Result<()> {
    for (i, entry) in [0, CODE, DATA, TSS].into_iter().enumerate() {
        memory
            .write_obj(entry, GuestAddress(GDT + i as u64 * 8))
            .map_err(|e| Error::Msg(format!("write the GDT: {e}")))?;
    }
    memory
        .write_obj(0u64, GuestAddress(IDT))
        .map_err(|e| Error::Msg(format!("write the IDT: {e}")))
}

fn segment(entry: u64, index: u16) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xfffff,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Puts vCPU `index` at `entry` in 64-bit mode (the contract above).
pub fn configure_vcpu(vcpu: &VcpuFd, index: u32, entry: u64) -> Result<()> {
    enter_long_mode(vcpu, entry, u64::from(index), BOOT_INFO)
}

/// Puts a vCPU at `entry` in 64-bit mode on the identity page tables, with
/// `rdi` and `rsi` set (Linux's 64-bit boot protocol: `rsi` the zero page).
pub fn enter_long_mode(vcpu: &VcpuFd, entry: u64, rdi: u64, rsi: u64) -> Result<()> {
    let mut sregs: kvm_sregs = vcpu
        .get_sregs()
        .map_err(Error::kvm("read vCPU registers"))?;
    let code = segment(CODE, 1);
    let data = segment(DATA, 2);
    let mut tss = segment(TSS, 3);
    tss.limit = 0x67;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = IDT;
    sregs.idt.limit = 7;
    sregs.cr3 = PML4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(Error::kvm("set vCPU segment registers"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(Error::kvm("set vCPU FPU state"))?;
    let regs = kvm_regs {
        rip: entry,
        rdi,
        rsi,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(Error::kvm("set vCPU registers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Vec<u8> {
        std::fs::read(crate::TEST_GUEST).unwrap()
    }

    #[test]
    fn loads_the_test_guest_and_refuses_what_is_not_one() {
        let memory = memory::create(64 << 20).unwrap();
        let entry = load_elf(&memory, &guest(), "the test guest").unwrap();
        assert_eq!(entry, LOAD_START);
        let error = |image: &[u8]| load_elf(&memory, image, "F").unwrap_err().to_string();
        assert_eq!(
            error(b"#!/bin/sh\necho hi\n"),
            "F is not a guest keel can boot: not an ELF file"
        );
        let mut other = guest();
        other[18] = 183; // aarch64
        assert_eq!(
            error(&other),
            "F is not a guest keel can boot: not an x86-64 program"
        );
        let cut = &guest()[..100];
        assert!(error(cut).contains("cut short"), "{}", error(cut));
        // Too little memory for where it loads.
        let small = memory::create(1 << 20).unwrap();
        let message = load_elf(&small, &guest(), "F").unwrap_err().to_string();
        assert!(message.contains("outside guest RAM"), "{message}");
    }

    #[test]
    fn page_tables_map_four_gib_at_least() {
        let memory = memory::create(64 << 20).unwrap();
        write_page_tables(&memory).unwrap();
        let pdpt: u64 = memory.read_obj(GuestAddress(PML4)).unwrap();
        assert_eq!(pdpt, PDPT | 3);
        // The 4th GiB's last 2 MiB page (the device window).
        let last: u64 = memory
            .read_obj(GuestAddress(PD + 3 * 4096 + 511 * 8))
            .unwrap();
        assert_eq!(last, ((3u64 << 30) | (511 << 21)) | 0x83);
        let fifth: u64 = memory.read_obj(GuestAddress(PDPT + 4 * 8)).unwrap();
        assert_eq!(fifth, 0);
    }
}
