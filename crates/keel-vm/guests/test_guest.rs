//! keel's test guest: a freestanding x86-64 program in keel's own guest
//! format (a static ELF at 1 MiB, entered in 64-bit mode; see keel-vm's
//! `boot.rs`). It runs under KVM with no operating system and exercises
//! the VMM: the serial port, every vCPU, the whole of guest memory, the
//! power-off, a panic and a triple fault. What it does is the first word
//! of its command line:
//!
//! - `hello`: prints a line and powers off;
//! - `cpus`: every vCPU reports in; the first powers off once all have;
//! - `memory`: writes a pattern to every page above 2 MiB, reads it
//!   back, prints the size checked, powers off;
//! - `count`: counts up for ever, a line every million loops;
//! - `fill-count`: writes every page, then counts;
//! - `idle`: prints a line and halts (no CPU used);
//! - `exits`: takes 100000 exits to the VMM (port I/O), then powers off;
//! - `rng`: reads entropy from its virtio-rng device twice;
//! - `balloon`: writes all of its memory, then gives the host the pages
//!   its virtio-balloon asks for (polling the device's config);
//! - `blk`: drives the first virtio-blk disk (virtio-mmio, polled): prints
//!   its capacity, id and first sector, writes its second sector, flushes;
//! - `net`: pings (`peer=`) and answers pings over its virtio-net NIC
//!   (`guests/net.rs`);
//! - `vsock`: connects to a host port and echoes on a guest port over its
//!   virtio-vsock (`guests/vsock.rs`);
//! - `irq`: takes its devices' interrupts (IDT, local APIC, I/O APIC):
//!   the rng's used-buffer interrupt, then the balloon's config change;
//! - `echo`: reads lines typed at the serial console, prints each back
//!   (`echo: LINE`), powers off at `poweroff`;
//! - `power`: sleeps until the power button (ACPI's event device, GSI 23:
//!   `keel vm stop`), then powers off through ACPI's sleep register;
//! - `spin`: loops for ever, printing nothing;
//! - `panic`: prints a message and signals a panic (pvpanic, port 0x505);
//! - `triple-fault`: takes an exception with no IDT (the CPU resets).
//!
//! Built by keel-vm's build.rs with the host's rustc (no other target
//! needed): `#![no_std]`, panic=abort, static, linked with `link.ld`.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

core::arch::global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    // rdi: this vCPU's index; rsi: the boot info. A 16 KiB stack each.
    "lea rsp, [rip + {stacks}]",
    "mov rax, rdi",
    "inc rax",
    "shl rax, 14",
    "add rsp, rax",
    "and rsp, -16",
    "call {main}",
    "2:",
    "hlt",
    "jmp 2b",
    stacks = sym STACKS,
    main = sym guest_main,
);

// PVH: the entry other VMMs (QEMU's microvm, Firecracker, cloud-hypervisor)
// use for an ELF kernel: 32-bit protected mode, paging off, ebx pointing at
// an `hvm_start_info`. It builds identity page tables for the first 4 GiB,
// enters long mode and hands the start info to `pvh_main`, which makes a
// keel boot info of it. Only the first vCPU starts this way.
core::arch::global_asm!(
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",  // name size
    ".long 4",  // desc size
    ".long 18", // XEN_ELFNOTE_PHYS32_ENTRY
    ".asciz \"Xen\"",
    ".balign 4",
    ".long pvh_start",
    ".balign 4",
    ".popsection",
    ".section .text.pvh, \"ax\"",
    ".code32",
    ".global pvh_start",
    "pvh_start:",
    "cli",
    "mov esi, ebx",
    // Four page directories of 2 MiB pages: 0..4 GiB.
    "mov edi, offset {pd}",
    "mov eax, 0x83",
    "mov ecx, 2048",
    "2:",
    "mov dword ptr [edi], eax",
    "mov dword ptr [edi + 4], 0",
    "add eax, 0x200000",
    "add edi, 8",
    "dec ecx",
    "jnz 2b",
    "mov edi, offset {pdpt}",
    "mov eax, offset {pd}",
    "or eax, 3",
    "mov ecx, 4",
    "3:",
    "mov dword ptr [edi], eax",
    "mov dword ptr [edi + 4], 0",
    "add eax, 4096",
    "add edi, 8",
    "dec ecx",
    "jnz 3b",
    "mov eax, offset {pdpt}",
    "or eax, 3",
    "mov dword ptr [{pml4}], eax",
    "mov dword ptr [{pml4} + 4], 0",
    "mov eax, offset {pml4}",
    "mov cr3, eax",
    "mov eax, cr4",
    "or eax, 0x620", // PAE, OSFXSR, OSXMMEXCPT
    "mov cr4, eax",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "or eax, 0x100", // EFER.LME
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80000001", // PG, PE
    "mov cr0, eax",
    "lgdt [pvh_gdtr]",
    ".att_syntax prefix",
    "ljmpl $0x08, $pvh_long",
    ".intel_syntax noprefix",
    ".code64",
    "pvh_long:",
    "mov ax, 0x10",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "lea rsp, [rip + {stacks}]",
    "add rsp, 16384",
    "mov edi, esi",
    "call {main}",
    "5:",
    "hlt",
    "jmp 5b",
    pd = sym PVH_PD,
    pdpt = sym PVH_PDPT,
    pml4 = sym PVH_PML4,
    stacks = sym STACKS,
    main = sym pvh_main,
);

core::arch::global_asm!(
    ".pushsection .data.pvh, \"aw\"",
    ".balign 8",
    "pvh_gdt:",
    ".quad 0",
    ".quad 0x00af9b000000ffff",
    ".quad 0x00cf93000000ffff",
    "pvh_gdtr:",
    ".word 23",
    ".long pvh_gdt",
    ".popsection",
);

#[repr(C, align(4096))]
struct Page([u64; 512]);
#[unsafe(no_mangle)]
static mut PVH_PD: [Page; 4] = [const { Page([0; 512]) }; 4];
#[unsafe(no_mangle)]
static mut PVH_PDPT: Page = Page([0; 512]);
#[unsafe(no_mangle)]
static mut PVH_PML4: Page = Page([0; 512]);
static mut PVH_INFO: BootInfo = BootInfo {
    magic: 0,
    memory_size: 0,
    vcpus: 1,
    cmdline_len: 0,
    cmdline: 0,
    low_end: 0,
    high_end: 0,
    mmio_base: 0,
    mmio_count: 0,
    reserved: 0,
};

/// `hvm_start_info` (Xen's PVH ABI, version 1).
#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

#[unsafe(no_mangle)]
extern "C" fn pvh_main(start: u64) -> ! {
    // SAFETY: the VMM passed its start info (checked by its magic); this
    // runs on the one vCPU PVH starts, before anything else.
    unsafe {
        let start = &*(start as *const StartInfo);
        if start.magic != 0x336e_c578 {
            print(b"bad PVH start info\n");
            power_off();
        }
        let info = &mut *core::ptr::addr_of_mut!(PVH_INFO);
        info.magic = MAGIC;
        let mut end = 0;
        if start.version >= 1 {
            let map = start.memmap_paddr as *const MemmapEntry;
            for i in 0..start.memmap_entries as usize {
                let entry = &*map.add(i);
                if entry.kind == 1 {
                    end = end.max(entry.addr + entry.size);
                }
            }
        }
        info.memory_size = end;
        if start.cmdline_paddr != 0 {
            let line = start.cmdline_paddr as *const u8;
            let mut n = 0;
            while *line.add(n) != 0 {
                n += 1;
            }
            info.cmdline = start.cmdline_paddr;
            info.cmdline_len = n as u32;
        }
        guest_main(0, info)
    }
}

const MAX_CPUS: usize = 32;
#[unsafe(no_mangle)]
static mut STACKS: [u8; MAX_CPUS * 16384] = [0; MAX_CPUS * 16384];

/// What the VMM leaves for the guest (keel-vm's `boot::BootInfo`).
#[repr(C)]
struct BootInfo {
    magic: u64,
    memory_size: u64,
    vcpus: u32,
    cmdline_len: u32,
    cmdline: u64,
    low_end: u64,
    high_end: u64,
    mmio_base: u64,
    mmio_count: u32,
    reserved: u32,
}

const MAGIC: u64 = u64::from_le_bytes(*b"KEELVM01");

static LOCK: AtomicBool = AtomicBool::new(false);
static UP: AtomicU32 = AtomicU32::new(0);

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O; the VMM decides what it does.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value) };
}

fn print(text: &[u8]) {
    for &b in text {
        outb(0x3f8, b);
    }
}

fn print_number(mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    print(&digits[i..]);
}

fn print_hex(n: u64) {
    print(b"0x");
    for shift in (0..16).rev() {
        let digit = ((n >> (shift * 4)) & 0xf) as u8;
        outb(0x3f8, if digit < 10 { b'0' + digit } else { b'a' + digit - 10 });
    }
}

fn lock() {
    while LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
}

fn unlock() {
    LOCK.store(false, Ordering::Release);
}

/// The i8042 reset line: keel's VMM (as Firecracker's) powers off. First
/// QEMU's isa-debug-exit port (0xf4), which keel's VMM ignores: under
/// QEMU's microvm (no i8042) the benchmark gives the guest that device.
fn power_off() -> ! {
    outb(0xf4, 0);
    outb(0x64, 0xfe);
    loop {
        // SAFETY: halting until the VMM stops us.
        unsafe { core::arch::asm!("hlt") };
    }
}

fn halt() -> ! {
    loop {
        // SAFETY: as above.
        unsafe { core::arch::asm!("hlt") };
    }
}

#[unsafe(no_mangle)]
extern "C" fn guest_main(cpu: u64, info: *const BootInfo) -> ! {
    // SAFETY: the VMM put the boot info there (checked by its magic).
    let info = unsafe { &*info };
    if info.magic != MAGIC {
        print(b"bad boot info\n");
        power_off();
    }
    // SAFETY: the VMM put the command line in guest memory.
    let cmdline = unsafe {
        core::slice::from_raw_parts(info.cmdline as *const u8, info.cmdline_len as usize)
    };
    let mode = cmdline.split(|&b| b == b' ').next().unwrap_or(b"");
    match mode {
        b"cpus" => cpus(cpu, info),
        _ if cpu != 0 => halt(),
        b"hello" | b"" => {
            print(b"hello from keel's test guest\n");
            power_off()
        }
        b"memory" => memory(info),
        b"count" => count(),
        b"idle" => {
            print(b"idle\n");
            halt()
        }
        b"exits" => {
            // 100000 exits to the VMM (port 0x80 belongs to no device).
            for _ in 0..100_000 {
                outb(0x80, 0);
            }
            print(b"100000 exits\n");
            power_off()
        }
        b"blk" => blk(info),
        b"balloon" => balloon(info),
        b"rng" => rng(info),
        b"p9" => p9(info),
        b"net" => net::run(info, cmdline),
        b"vsock" => vsock::run(info, cmdline),
        b"irq" => irq(info),
        b"echo" => echo(),
        b"power" => power(),
        b"fill-count" => {
            fill(info);
            count()
        }
        b"spin" => loop {
            core::hint::spin_loop();
        },
        b"panic" => {
            print(b"the test guest panics on purpose\n");
            outb(0x505, 1);
            halt()
        }
        b"triple-fault" => triple_fault(),
        _ => {
            print(b"unknown mode: ");
            print(mode);
            print(b"\n");
            power_off()
        }
    }
}

fn cpus(cpu: u64, info: &BootInfo) -> ! {
    lock();
    print(b"cpu ");
    print_number(cpu);
    print(b" of ");
    print_number(u64::from(info.vcpus));
    print(b" up\n");
    unlock();
    UP.fetch_add(1, Ordering::SeqCst);
    if cpu != 0 {
        halt();
    }
    while UP.load(Ordering::SeqCst) < info.vcpus {
        core::hint::spin_loop();
    }
    lock();
    print(b"all ");
    print_number(u64::from(info.vcpus));
    print(b" cpus up\n");
    unlock();
    power_off()
}

fn memory(info: &BootInfo) -> ! {
    const START: u64 = 2 << 20;
    const PAGE: u64 = 4096;
    let pattern = |address: u64| address.rotate_left(17) ^ 0x6b65_656c_766d_2121;
    let mut address = START;
    while address + 8 <= info.memory_size {
        // SAFETY: identity-mapped guest RAM above this program.
        unsafe { core::ptr::write_volatile(address as *mut u64, pattern(address)) };
        address += PAGE;
    }
    let mut address = START;
    while address + 8 <= info.memory_size {
        // SAFETY: as above.
        let found = unsafe { core::ptr::read_volatile(address as *const u64) };
        if found != pattern(address) {
            print(b"memory bad at ");
            print_hex(address);
            print(b"\n");
            power_off();
        }
        address += PAGE;
    }
    print(b"memory ok: ");
    print_number(info.memory_size >> 20);
    print(b" MiB\n");
    power_off()
}

/// Writes every page above 2 MiB (so all of the memory is the guest's).
fn fill(info: &BootInfo) {
    let mut address: u64 = 2 << 20;
    while address + 8 <= info.memory_size {
        // SAFETY: identity-mapped guest RAM above this program.
        unsafe { core::ptr::write_volatile(address as *mut u64, address) };
        address += 4096;
    }
    print(b"filled\n");
}

fn count() -> ! {
    let mut n: u64 = 0;
    loop {
        for _ in 0..(1 << 20) {
            core::hint::spin_loop();
        }
        n += 1;
        print(b"count ");
        print_number(n);
        print(b"\n");
    }
}

fn triple_fault() -> ! {
    print(b"the test guest triple-faults on purpose\n");
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let empty = Pointer { limit: 0, base: 0 };
    // SAFETY: an empty IDT, then an exception: the CPU shuts down.
    unsafe {
        core::arch::asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn));
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    print(b"test guest: internal panic\n");
    outb(0x505, 1);
    halt()
}

// What the compiler may call; there is no libc.
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(s: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's buffer of n bytes.
        unsafe { core::ptr::write_volatile(s.add(i), c as u8) };
    }
    s
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller's buffers of n bytes.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
    d
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    if (d as usize) < (s as usize) {
        // SAFETY: forward copy is safe when the destination is below.
        unsafe { memcpy(d, s, n) }
    } else {
        for i in (0..n).rev() {
            // SAFETY: the caller's buffers of n bytes.
            unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
        }
        d
    }
}

#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller's buffers of n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// The precompiled `core` refers to it; with panic=abort it is never
/// called.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller's NUL-terminated string.
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

// --- a virtio-blk driver over virtio-mmio, polling the used ring ---

fn mmio_read(base: u64, offset: u64) -> u32 {
    // SAFETY: the device's register window (identity-mapped).
    unsafe { core::ptr::read_volatile((base + offset) as *const u32) }
}

fn mmio_write(base: u64, offset: u64, value: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile((base + offset) as *mut u32, value) }
}

#[repr(C, align(16))]
struct Descriptors([[u64; 2]; 8]);
#[repr(C, align(2))]
struct Avail {
    flags: u16,
    idx: u16,
    ring: [u16; 8],
    used_event: u16,
}
#[repr(C, align(4))]
struct Used {
    flags: u16,
    idx: u16,
    ring: [[u32; 2]; 8],
    avail_event: u16,
}
static mut DESCRIPTORS: Descriptors = Descriptors([[0; 2]; 8]);
static mut AVAIL: Avail = Avail { flags: 0, idx: 0, ring: [0; 8], used_event: 0 };
static mut USED: Used = Used { flags: 0, idx: 0, ring: [[0; 2]; 8], avail_event: 0 };
#[repr(C, align(512))]
struct Sector([u8; 512]);
static mut HEADER: [u64; 2] = [0; 2];
static mut STATUS: u8 = 0xff;
static mut BUFFER: Sector = Sector([0; 512]);

/// Descriptor `i`: address, length, flags (1: next, 2: device writes), next.
fn describe(i: usize, address: u64, length: u32, flags: u16, next: u16) {
    // SAFETY: our descriptor table, used by one vCPU.
    unsafe {
        let d = core::ptr::addr_of_mut!(DESCRIPTORS.0[i]);
        core::ptr::write_volatile(&raw mut (*d)[0], address);
        core::ptr::write_volatile(
            &raw mut (*d)[1],
            u64::from(length) | (u64::from(flags) << 32) | (u64::from(next) << 48),
        );
    }
}

/// One request (type, sector, the buffer if any); the status byte.
fn request(base: u64, kind: u32, sector: u64, with_buffer: bool, device_writes: bool) -> u8 {
    // SAFETY: our request structures, used by one vCPU.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!(HEADER[0]), u64::from(kind));
        core::ptr::write_volatile(core::ptr::addr_of_mut!(HEADER[1]), sector);
        core::ptr::write_volatile(core::ptr::addr_of_mut!(STATUS), 0xff);
        let header = core::ptr::addr_of!(HEADER) as u64;
        let status = core::ptr::addr_of!(STATUS) as u64;
        let buffer = core::ptr::addr_of!(BUFFER) as u64;
        if with_buffer {
            describe(0, header, 16, 1, 1);
            describe(1, buffer, 512, 1 | if device_writes { 2 } else { 0 }, 2);
            describe(2, status, 1, 2, 0);
        } else {
            describe(0, header, 16, 1, 2);
            describe(2, status, 1, 2, 0);
        }
        submit(base);
        core::ptr::read_volatile(core::ptr::addr_of!(STATUS))
    }
}

/// Offers the chain at descriptor 0 on queue 0, notifies the device and
/// waits until it is used.
fn submit(base: u64) {
    // SAFETY: our rings, used by one vCPU.
    unsafe {
        let avail = core::ptr::addr_of_mut!(AVAIL);
        let idx = core::ptr::read_volatile(&raw const (*avail).idx);
        core::ptr::write_volatile(&raw mut (*avail).ring[(idx % 8) as usize], 0);
        core::sync::atomic::fence(Ordering::SeqCst);
        core::ptr::write_volatile(&raw mut (*avail).idx, idx.wrapping_add(1));
        core::sync::atomic::fence(Ordering::SeqCst);
        mmio_write(base, 0x050, 0);
        let used = core::ptr::addr_of!(USED);
        while core::ptr::read_volatile(&raw const (*used).idx) != idx.wrapping_add(1) {
            core::hint::spin_loop();
        }
    }
}

fn blk(info: &BootInfo) -> ! {
    // Flush and read-only, if offered.
    let Some((base, low)) = virtio_setup(info, 2, (1 << 9) | (1 << 5)) else {
        power_off();
    };
    let read_only = low & (1 << 5) != 0;
    let capacity = u64::from(mmio_read(base, 0x100)) | (u64::from(mmio_read(base, 0x104)) << 32);
    print(b"capacity ");
    print_number(capacity);
    print(b" sectors\n");
    // The disk's id.
    if request(base, 8, 0, true, true) == 0 {
        // SAFETY: the buffer the device wrote.
        let id = unsafe { &*core::ptr::addr_of!(BUFFER.0) };
        let n = id.iter().take(20).position(|&b| b == 0).unwrap_or(20);
        print(b"id ");
        print(&id[..n]);
        print(b"\n");
    }
    // Sector 0: the first line the host wrote there.
    if request(base, 0, 0, true, true) != 0 {
        print(b"read failed\n");
        power_off();
    }
    // SAFETY: the buffer the device wrote.
    let data = unsafe { &*core::ptr::addr_of!(BUFFER.0) };
    let n = data.iter().position(|&b| b == b'\n' || b == 0).unwrap_or(0);
    print(b"sector 0: ");
    print(&data[..n]);
    print(b"\n");
    // Sector 1: written by the guest.
    // SAFETY: our buffer.
    unsafe {
        let buffer = &mut *core::ptr::addr_of_mut!(BUFFER.0);
        let text = b"written by keel's test guest\n";
        for (i, b) in buffer.iter_mut().enumerate() {
            *b = text.get(i).copied().unwrap_or(0);
        }
    }
    match request(base, 1, 1, true, false) {
        0 => print(b"sector 1 written\n"),
        _ if read_only => print(b"write refused: the disk is read-only\n"),
        _ => print(b"write failed\n"),
    }
    if !read_only {
        let status = request(base, 4, 0, false, false);
        print(if status == 0 { b"flushed\n" as &[u8] } else { b"flush failed\n" });
    }
    // Past the end: an error.
    if request(base, 0, capacity, true, true) != 0 {
        print(b"read past the end refused\n");
    }
    power_off()
}

// --- virtio-balloon: inflate only, polled ---

static mut FRAMES: [u32; 256] = [0; 256];

/// Sets a device of `device_type` up (VERSION_1 and the low feature bits
/// in `accept` that it offers), with queue 0 on the static rings: its
/// window and the low feature bits it offered, or None (with a line
/// saying why).
fn virtio_setup(info: &BootInfo, device_type: u32, accept: u32) -> Option<(u64, u32)> {
    let rings = [(
        core::ptr::addr_of!(DESCRIPTORS) as u64,
        core::ptr::addr_of!(AVAIL) as u64,
        core::ptr::addr_of!(USED) as u64,
    )];
    virtio_setup_queues(info, device_type, accept, &rings)
}

/// As [`virtio_setup`], with queue i on `rings[i]` (descriptors, avail,
/// used; 8 entries each).
fn virtio_setup_queues(
    info: &BootInfo,
    device_type: u32,
    accept: u32,
    rings: &[(u64, u64, u64)],
) -> Option<(u64, u32)> {
    let Some(base) = (0..info.mmio_count as u64)
        .map(|i| info.mmio_base + i * 0x1000)
        .find(|&b| mmio_read(b, 0) == 0x7472_6976 && mmio_read(b, 8) == device_type)
    else {
        print(b"no such virtio device\n");
        return None;
    };
    if mmio_read(base, 4) != 2 {
        print(b"not a virtio-mmio version 2 device\n");
        return None;
    }
    mmio_write(base, 0x070, 0); // reset
    mmio_write(base, 0x070, 1 | 2); // acknowledge, driver
    mmio_write(base, 0x014, 0);
    let low = mmio_read(base, 0x010);
    mmio_write(base, 0x014, 1);
    let high = mmio_read(base, 0x010);
    mmio_write(base, 0x024, 0);
    mmio_write(base, 0x020, low & accept);
    mmio_write(base, 0x024, 1);
    mmio_write(base, 0x020, high & 1); // VERSION_1
    mmio_write(base, 0x070, 1 | 2 | 8);
    if mmio_read(base, 0x070) & 8 == 0 {
        print(b"the device refused the features\n");
        return None;
    }
    for (index, &(desc, avail, used)) in rings.iter().enumerate() {
        mmio_write(base, 0x030, index as u32);
        if mmio_read(base, 0x034) < 8 {
            print(b"queue too small\n");
            return None;
        }
        mmio_write(base, 0x038, 8);
        mmio_write(base, 0x080, desc as u32);
        mmio_write(base, 0x084, (desc >> 32) as u32);
        mmio_write(base, 0x090, avail as u32);
        mmio_write(base, 0x094, (avail >> 32) as u32);
        mmio_write(base, 0x0a0, used as u32);
        mmio_write(base, 0x0a4, (used >> 32) as u32);
        mmio_write(base, 0x044, 1);
    }
    mmio_write(base, 0x070, 1 | 2 | 8 | 4); // driver ok
    Some((base, low))
}

/// Puts one readable buffer on queue 0 and waits until it is used.
fn send_buffer(base: u64, address: u64, length: u32) {
    describe(0, address, length, 0, 0);
    submit(base);
}

fn balloon(info: &BootInfo) -> ! {
    fill(info);
    let Some((base, _)) = virtio_setup(info, 5, 0) else {
        power_off();
    };
    let mut given: u32 = 0;
    // Pages from the top of memory down (the program is below 2 MiB).
    let mut next = info.memory_size / 4096;
    let lowest = (2u64 << 20) / 4096;
    loop {
        let target = mmio_read(base, 0x100);
        if target <= given || next <= lowest {
            core::hint::spin_loop();
            continue;
        }
        let mut n = 0;
        while n < 256 && given + (n as u32) < target && next > lowest {
            next -= 1;
            // SAFETY: our frame list.
            unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(FRAMES[n]), next as u32) };
            n += 1;
        }
        send_buffer(base, core::ptr::addr_of!(FRAMES) as u64, (n * 4) as u32);
        given += n as u32;
        mmio_write(base, 0x104, given);
        if given >= target {
            print(b"balloon ");
            print_number(u64::from(given));
            print(b" pages\n");
        }
    }
}

fn rng(info: &BootInfo) -> ! {
    let Some((base, _)) = virtio_setup(info, 4, 0) else {
        power_off();
    };
    let buffer = core::ptr::addr_of!(BUFFER) as u64;
    let mut first = [0u8; 32];
    for round in 0..2 {
        describe(0, buffer, 32, 2, 0);
        submit(base);
        // SAFETY: the buffer the device wrote.
        let got = unsafe { &(&*core::ptr::addr_of!(BUFFER.0))[..32] };
        if got.iter().all(|&b| b == 0) {
            print(b"rng: all zero\n");
            power_off();
        }
        if round == 0 {
            first.copy_from_slice(got);
        } else if got == first {
            print(b"rng: the same bytes twice\n");
            power_off();
        }
    }
    print(b"rng: 32 bytes, not all zero, twice different\n");
    power_off()
}

// --- virtio-9p: a few 9P2000.L requests, polled ---

static mut P9_REQUEST: [u8; 512] = [0; 512];
static mut P9_REPLY: [u8; 4096] = [0; 4096];

/// A 9P message being written into P9_REQUEST.
struct Message {
    at: usize,
}

impl Message {
    fn new(kind: u8) -> Message {
        let mut m = Message { at: 0 };
        m.u32(0);
        m.u8(kind);
        m.u16(1);
        m
    }
    fn u8(&mut self, v: u8) {
        // SAFETY: our request buffer, used by one vCPU.
        unsafe { (*core::ptr::addr_of_mut!(P9_REQUEST))[self.at] = v };
        self.at += 1;
    }
    fn u16(&mut self, v: u16) {
        for b in v.to_le_bytes() {
            self.u8(b);
        }
    }
    fn u32(&mut self, v: u32) {
        for b in v.to_le_bytes() {
            self.u8(b);
        }
    }
    fn u64(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.u8(b);
        }
    }
    fn s(&mut self, v: &[u8]) {
        self.u16(v.len() as u16);
        for &b in v {
            self.u8(b);
        }
    }
    /// Sends it; the answer's type and body.
    fn send(mut self, base: u64) -> (u8, &'static [u8]) {
        let size = self.at as u32;
        self.at = 0;
        self.u32(size);
        describe(0, core::ptr::addr_of!(P9_REQUEST) as u64, size, 1, 1);
        describe(1, core::ptr::addr_of!(P9_REPLY) as u64, 4096, 2, 0);
        submit(base);
        // SAFETY: the reply the device wrote.
        let reply = unsafe { &*core::ptr::addr_of!(P9_REPLY) };
        let n = u32::from_le_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
        (reply[4], &reply[7..n.clamp(7, 4096)])
    }
}

fn p9(info: &BootInfo) -> ! {
    let Some((base, _)) = virtio_setup(info, 9, 1) else {
        power_off();
    };
    let length = mmio_read(base, 0x100) & 0xffff;
    print(b"tag ");
    for i in 0..length.min(32) as u64 {
        // SAFETY: the config space, read a byte at a time.
        let byte = unsafe { core::ptr::read_volatile((base + 0x102 + i) as *const u8) };
        print(&[byte]);
    }
    print(b"\n");
    let mut m = Message::new(100);
    m.u32(8192);
    m.s(b"9P2000.L");
    let (_, body) = m.send(base);
    print(b"version ");
    print(&body[6..]);
    print(b"\n");
    let mut m = Message::new(104);
    m.u32(0);
    m.u32(u32::MAX);
    m.s(b"");
    m.s(b"");
    m.u32(0);
    m.send(base);
    let mut m = Message::new(110);
    m.u32(0);
    m.u32(1);
    m.u16(1);
    m.s(b"hello.txt");
    m.send(base);
    let mut m = Message::new(12);
    m.u32(1);
    m.u32(0);
    m.send(base);
    let mut m = Message::new(116);
    m.u32(1);
    m.u64(0);
    m.u32(100);
    let (_, body) = m.send(base);
    let n = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    print(b"read: ");
    print(&body[4..4 + n.min(body.len() - 4)]);
    // A file of the guest's, in the walked-to directory (fid 2 becomes it).
    let mut m = Message::new(110);
    m.u32(0);
    m.u32(2);
    m.u16(0);
    m.send(base);
    let mut m = Message::new(14);
    m.u32(2);
    m.s(b"from-guest");
    m.u32(1);
    m.u32(0o644);
    m.u32(0);
    m.send(base);
    let text = b"written over virtio-9p\n";
    let mut m = Message::new(118);
    m.u32(2);
    m.u64(0);
    m.u32(text.len() as u32);
    for &b in text {
        m.u8(b);
    }
    let (kind, body) = m.send(base);
    if kind == 119 {
        print(b"wrote ");
        print_number(u64::from(u32::from_le_bytes([body[0], body[1], body[2], body[3]])));
        print(b" bytes\n");
    }
    // Through a link to the host's /etc: the walk stops at the link.
    let mut m = Message::new(110);
    m.u32(0);
    m.u32(3);
    m.u16(2);
    m.s(b"escape");
    m.s(b"passwd");
    let (kind, body) = m.send(base);
    print(b"walk through a link: ");
    if kind == 111 {
        print_number(u64::from(u16::from_le_bytes([body[0], body[1]])));
        print(b" of 2 names\n");
    } else {
        print(b"error\n");
    }
    power_off()
}

mod net;
mod rings;
mod vsock;

#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's buffers of n bytes.
    unsafe { memcmp(a, b, n) }
}

// --- interrupts: an IDT, the local APIC, the I/O APIC ---

core::arch::global_asm!(
    ".global irq_entry",
    "irq_entry:",
    "push rax",
    "lock inc qword ptr [rip + {count}]",
    // End of interrupt, to the local APIC.
    "mov rax, 0xfee000b0",
    "mov dword ptr [rax], 0",
    "pop rax",
    "iretq",
    count = sym IRQ_COUNT,
);
static mut IRQ_COUNT: u64 = 0;
#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT_TABLE: Idt = Idt([[0; 2]; 256]);
unsafe extern "C" {
    fn irq_entry();
}

fn irq_count() -> u64 {
    // SAFETY: a counter the handler increments.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(IRQ_COUNT)) }
}

/// One handler for every vector; the local APIC on; I/O APIC pins
/// `pins` edge-triggered to vectors 0x40 + pin on CPU 0.
fn interrupts_on(pins: core::ops::Range<u32>) {
    let handler = irq_entry as *const () as u64;
    // SAFETY: our IDT; the APICs' registers (identity-mapped).
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT_TABLE);
        for e in idt.0.iter_mut() {
            // A present 64-bit interrupt gate in the code segment (0x08).
            e[0] = (handler & 0xffff)
                | (0x08 << 16)
                | (0x8e << 40)
                | (((handler >> 16) & 0xffff) << 48);
            e[1] = handler >> 32;
        }
        let base = core::ptr::addr_of!(IDT_TABLE) as u64;
        let pointer: [u16; 5] = [
            4095,
            base as u16,
            (base >> 16) as u16,
            (base >> 32) as u16,
            (base >> 48) as u16,
        ];
        core::arch::asm!("lidt [{}]", in(reg) pointer.as_ptr());
        // Spurious vector 0xff, software-enabled.
        core::ptr::write_volatile(0xfee0_00f0 as *mut u32, 0x1ff);
        for pin in pins {
            core::ptr::write_volatile(0xfec0_0000 as *mut u32, 0x10 + 2 * pin);
            core::ptr::write_volatile(0xfec0_0010 as *mut u32, 0x40 + pin);
            core::ptr::write_volatile(0xfec0_0000 as *mut u32, 0x11 + 2 * pin);
            core::ptr::write_volatile(0xfec0_0010 as *mut u32, 0);
        }
    }
}

/// Halts until an interrupt comes.
fn wait_for_interrupt() {
    // SAFETY: sti's shadow covers hlt: an interrupt already pending wakes
    // it at once.
    unsafe { core::arch::asm!("sti", "hlt", "cli") };
}

/// `irq`: the devices' interrupts, no polling. The rng's used-buffer
/// interrupt (raised on the vCPU that notified), then, if the VM has a
/// balloon, its config-change interrupt (raised from another thread by
/// `vm update` while the vCPU sleeps).
fn irq(info: &BootInfo) -> ! {
    let pin_of = |device_type: u32| {
        (0..info.mmio_count)
            .find(|&i| mmio_read(info.mmio_base + u64::from(i) * 0x1000, 8) == device_type)
            .map(|i| (info.mmio_base + u64::from(i) * 0x1000, 5 + i))
    };
    interrupts_on(5..5 + info.mmio_count);
    print(b"irq: interrupts on\n");
    if let Some((_, pin)) = pin_of(4) {
        let Some((base, _)) = virtio_setup(info, 4, 0) else {
            power_off();
        };
        let before = irq_count();
        describe(0, core::ptr::addr_of!(BUFFER) as u64, 32, 2, 0);
        // SAFETY: our rings.
        unsafe {
            let avail = core::ptr::addr_of_mut!(AVAIL);
            let idx = core::ptr::read_volatile(&raw const (*avail).idx);
            core::ptr::write_volatile(&raw mut (*avail).ring[(idx % 8) as usize], 0);
            core::sync::atomic::fence(Ordering::SeqCst);
            core::ptr::write_volatile(&raw mut (*avail).idx, idx.wrapping_add(1));
        }
        mmio_write(base, 0x050, 0);
        while irq_count() == before {
            wait_for_interrupt();
        }
        let status = mmio_read(base, 0x060);
        mmio_write(base, 0x064, status);
        print(b"irq: rng used-buffer interrupt on GSI ");
        print_number(u64::from(pin));
        print(b", status ");
        print_number(u64::from(status));
        print(b"\n");
    }
    if pin_of(5).is_some() {
        let Some((base, _)) = virtio_setup(info, 5, 0) else {
            power_off();
        };
        print(b"irq: waiting for the balloon\n");
        loop {
            wait_for_interrupt();
            let status = mmio_read(base, 0x060);
            mmio_write(base, 0x064, status);
            if status & 2 != 0 {
                break;
            }
        }
        print(b"irq: balloon config interrupt, target ");
        print_number(u64::from(mmio_read(base, 0x100)));
        print(b" pages\n");
    }
    power_off()
}

/// The serial port's next received byte (polling its line status).
fn read_byte() -> u8 {
    loop {
        let status: u8;
        // SAFETY: port I/O on the serial port's registers.
        unsafe { core::arch::asm!("in al, dx", out("al") status, in("dx") 0x3fdu16) };
        if status & 1 != 0 {
            let byte: u8;
            // SAFETY: as above: the receive buffer.
            unsafe { core::arch::asm!("in al, dx", out("al") byte, in("dx") 0x3f8u16) };
            return byte;
        }
        core::hint::spin_loop();
    }
}

fn echo() -> ! {
    print(b"echo: type a line\n");
    let mut line = [0u8; 128];
    let mut n = 0;
    loop {
        let byte = read_byte();
        if byte == b'\n' || byte == b'\r' {
            if n == 0 {
                continue;
            }
            if &line[..n] == b"poweroff" {
                print(b"echo: bye\n");
                power_off();
            }
            print(b"echo: ");
            print(&line[..n]);
            print(b"\n");
            n = 0;
        } else if n < line.len() {
            line[n] = byte;
            n += 1;
        }
    }
}

/// `power`: waits (asleep) for the event device's power button.
fn power() -> ! {
    interrupts_on(23..24);
    print(b"power: waiting for the button\n");
    loop {
        wait_for_interrupt();
        // SAFETY: the event device's register (identity-mapped).
        let events = unsafe { core::ptr::read_volatile(0xfeb0_0000 as *const u8) };
        if events & 1 != 0 {
            break;
        }
    }
    print(b"power: the button was pressed\n");
    // S5 through ACPI's sleep control register (SLP_TYP 5, SLP_EN).
    outb(0x3c0, (5 << 2) | 0x20);
    halt()
}
