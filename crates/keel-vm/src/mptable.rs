//! The Intel MultiProcessor table (MP spec 1.4), for a Linux kernel built
//! without ACPI (keel's minimal guest kernel): how it finds the vCPUs and
//! the I/O APIC, whose pins 0..=23 carry the ISA IRQs and the virtio
//! devices' lines. A kernel with ACPI reads the MADT instead
//! ([`crate::acpi`]); both are written, as Firecracker does.
//!
//! Linux looks for the floating pointer in the last KiB below 640 KiB,
//! which is where it goes (the EBDA, outside the RAM the e820 map gives);
//! the table itself, which for many vCPUs is larger than that KiB, goes
//! in the BIOS segment at 0xf0000 (past the ACPI tables, below 1 MiB).

use vm_memory::{Bytes, GuestAddress};

use crate::error::{Error, Result};
use crate::memory::Memory;

/// Where the floating pointer goes.
pub const START: u64 = 0x9_fc00;
/// Where the configuration table goes.
pub const CONFIG: u64 = 0xf_0000;
const LOCAL_APIC: u32 = 0xfee0_0000;
const IO_APIC: u32 = 0xfec0_0000;
/// The I/O APIC's pins (KVM's has 24).
const IO_APIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IO_APIC_VERSION: u8 = 0x11;
const BUS_ISA: u8 = 0;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The floating pointer and the configuration table for `vcpus` vCPUs.
pub fn table(vcpus: u32) -> ([u8; 16], Vec<u8>) {
    let mut entries = Vec::new();
    let mut count = 0u16;
    for id in 0..vcpus {
        // Processor: enabled, the first is the bootstrap processor.
        entries.extend_from_slice(&[0, id as u8, APIC_VERSION, 1 | u8::from(id == 0) << 1]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, BUS_ISA]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    let io_apic_id = vcpus as u8;
    entries.extend_from_slice(&[2, io_apic_id, IO_APIC_VERSION, 1]);
    entries.extend_from_slice(&IO_APIC.to_le_bytes());
    count += 1;
    for irq in 0..IO_APIC_PINS {
        // I/O interrupt: INT, conforming polarity and trigger, ISA IRQ
        // `irq` on pin `irq`.
        entries.extend_from_slice(&[3, 0, 0, 0, BUS_ISA, irq, io_apic_id, irq]);
        count += 1;
    }
    // Local interrupts: ExtINT on LINT0, NMI on LINT1 of every CPU.
    entries.extend_from_slice(&[4, 3, 0, 0, BUS_ISA, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, BUS_ISA, 0, 0xff, 1]);
    count += 2;

    let length = 44 + entries.len();
    let mut config = Vec::with_capacity(length);
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&(length as u16).to_le_bytes());
    config.push(4); // spec 1.4
    config.push(0); // checksum, below
    config.extend_from_slice(b"KEEL    ");
    config.extend_from_slice(b"KEEL-VM     ");
    config.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    config.extend_from_slice(&0u16.to_le_bytes());
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LOCAL_APIC.to_le_bytes());
    config.extend_from_slice(&[0, 0, 0, 0]); // no extended table
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut pointer = [0u8; 16];
    pointer[..4].copy_from_slice(b"_MP_");
    pointer[4..8].copy_from_slice(&(CONFIG as u32).to_le_bytes());
    pointer[8] = 1; // 16 bytes
    pointer[9] = 4; // spec 1.4
    pointer[10] = checksum(&pointer);
    (pointer, config)
}

/// Writes the table into guest memory at [`START`].
pub fn write(memory: &Memory, vcpus: u32) -> Result<()> {
    let (pointer, config) = table(vcpus);
    if CONFIG + config.len() as u64 > crate::acpi::END {
        return Err(Error::invalid(format!(
            "{vcpus} vCPUs do not fit in an MP table below 1 MiB"
        )));
    }
    memory
        .write_slice(&pointer, GuestAddress(START))
        .and_then(|()| memory.write_slice(&config, GuestAddress(CONFIG)))
        .map_err(|e| Error::Msg(format!("write the MP table: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux's `smp_scan_config` and `smp_read_mpc` check, and what
    /// they find.
    #[test]
    fn the_table_is_what_linux_reads() {
        let (pointer, config) = table(4);
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        assert_eq!(&pointer[..4], b"_MP_");
        assert_eq!(sum(&pointer), 0, "the floating pointer's checksum");
        assert_eq!(pointer[8], 1, "its length, in 16-byte units");
        assert_eq!(
            pointer[11], 0,
            "feature byte 1: a table, not a default configuration"
        );
        assert_eq!(
            u32::from_le_bytes(pointer[4..8].try_into().unwrap()) as u64,
            CONFIG
        );
        let config = &config[..];
        assert_eq!(&config[..4], b"PCMP");
        let length = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(length, config.len());
        assert_eq!(sum(config), 0, "the table's checksum");
        assert_eq!(
            u32::from_le_bytes(config[36..40].try_into().unwrap()),
            0xfee0_0000
        );
        let count = u16::from_le_bytes([config[34], config[35]]);
        let (mut cpus, mut bsp, mut io_apics, mut irqs, mut seen) = (0, 0, 0, 0, 0);
        let mut at = 44;
        while at < length {
            seen += 1;
            at += match config[at] {
                0 => {
                    cpus += 1;
                    bsp += usize::from(config[at + 3] & 2 != 0);
                    20
                }
                1 => {
                    assert_eq!(&config[at + 2..at + 8], b"ISA   ");
                    8
                }
                2 => {
                    io_apics += 1;
                    assert_eq!(config[at + 1], 4, "the I/O APIC's id follows the CPUs'");
                    assert_eq!(
                        u32::from_le_bytes(config[at + 4..at + 8].try_into().unwrap()),
                        0xfec0_0000
                    );
                    8
                }
                3 => {
                    assert_eq!(config[at + 5], config[at + 7], "IRQ n on pin n");
                    irqs += 1;
                    8
                }
                4 => 8,
                other => panic!("an entry of type {other}"),
            };
        }
        assert_eq!(at, length);
        assert_eq!(seen, count);
        assert_eq!((cpus, bsp, io_apics, irqs), (4, 1, 1, 24));
        // The most vCPUs keel describes still fit below 1 MiB.
        assert!(CONFIG + super::table(254).1.len() as u64 <= crate::acpi::END);
        // ... and the ACPI tables end before it, with many devices.
        let devices: Vec<crate::acpi::MmioDevice> = (0..64)
            .map(|i| crate::acpi::MmioDevice {
                base: 0xd000_0000 + i * 0x1000,
                size: 0x1000,
                gsi: 5 + i as u32,
            })
            .collect();
        let dsdt = crate::acpi::tables(254, &devices)
            .into_iter()
            .find(|(signature, _)| signature == "DSDT")
            .expect("a DSDT");
        assert!(crate::acpi::RSDP + 0x1000 + dsdt.1.len() as u64 <= CONFIG);
    }
}
