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
//! - `count`: counts up for ever, a line every few million loops;
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

/// The i8042 reset line: keel's VMM (as Firecracker's) powers off.
fn power_off() -> ! {
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
