//! The ACPI tables a Linux guest reads to find its CPUs and devices:
//! RSDP → XSDT → FADT (hardware-reduced, with the sleep registers that
//! power the VM off), MADT (a local APIC per vCPU, the I/O APIC) and a
//! DSDT that lists the virtio-mmio devices (`LNRO0005`, as Firecracker and
//! QEMU's microvm describe them: Debian's kernel ignores
//! `virtio_mmio.device=`), the serial port and the `_S5_` sleep state.
//!
//! The tables sit in the BIOS area at [`RSDP`] (where Linux also looks for
//! the RSDP by itself), outside the RAM the e820 map gives the guest.

use vm_memory::{Bytes, GuestAddress};

use crate::error::{Error, Result};
use crate::memory::Memory;

/// Where the RSDP goes; the other tables follow.
pub const RSDP: u64 = 0xe_0000;
const XSDT: u64 = RSDP + 0x40;
const FADT: u64 = RSDP + 0x100;
const MADT: u64 = RSDP + 0x300;
const DSDT: u64 = RSDP + 0x1000;
/// The end of the area the tables may fill.
pub const END: u64 = 0x10_0000;

/// The I/O port of the sleep control register: SLP_EN with SLP_TYP 5
/// (`_S5_`) powers the VM off.
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// The sleep status register (reads 0: never asleep).
pub const SLEEP_STATUS_PORT: u16 = 0x3c1;
/// The reset register: writing [`RESET_VALUE`] ends the VM (a reboot
/// ends a keel VM, as Firecracker's).
pub const RESET_PORT: u16 = 0x3c2;
pub const RESET_VALUE: u8 = 1;
/// The sleep type `_S5_` names.
pub const S5_TYPE: u8 = 5;

const LOCAL_APIC: u32 = 0xfee0_0000;
const IO_APIC: u32 = 0xfec0_0000;

/// A virtio-mmio device to describe: its window and its GSI.
#[derive(Debug, Clone, Copy)]
pub struct MmioDevice {
    pub base: u64,
    pub size: u64,
    pub gsi: u32,
}

/// Writes the tables for `vcpus` vCPUs and `devices` into `memory`;
/// the RSDP's address.
pub fn write(memory: &Memory, vcpus: u32, devices: &[MmioDevice]) -> Result<u64> {
    for (at, table) in &placed(vcpus, devices) {
        if at + table.len() as u64 > END {
            return Err(Error::invalid(format!(
                "the ACPI tables do not fit below 1 MiB ({} devices)",
                devices.len()
            )));
        }
        memory
            .write_slice(table, GuestAddress(*at))
            .map_err(|e| Error::Msg(format!("write the ACPI tables: {e}")))?;
    }
    Ok(RSDP)
}

/// Each table and where it goes.
fn placed(vcpus: u32, devices: &[MmioDevice]) -> [(u64, Vec<u8>); 5] {
    [
        (FADT, fadt(DSDT)),
        (MADT, madt(vcpus)),
        (DSDT, dsdt(devices)),
        (XSDT, xsdt(&[FADT, MADT])),
        (RSDP, rsdp(XSDT)),
    ]
}

/// The tables a VM with `vcpus` and `devices` gets, by signature (the
/// RSDP's is `RSD `): for checking them with ACPICA's tools.
pub fn tables(vcpus: u32, devices: &[MmioDevice]) -> Vec<(String, Vec<u8>)> {
    placed(vcpus, devices)
        .into_iter()
        .map(|(_, t)| (String::from_utf8_lossy(&t[..4]).into_owned(), t))
        .collect()
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

fn rsdp(xsdt: u64) -> Vec<u8> {
    let mut t = Vec::with_capacity(36);
    t.extend_from_slice(b"RSD PTR ");
    t.push(0); // checksum of the first 20 bytes
    t.extend_from_slice(b"KEEL  ");
    t.push(2); // revision: ACPI 2.0+, the XSDT
    t.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    t.extend_from_slice(&36u32.to_le_bytes());
    t.extend_from_slice(&xsdt.to_le_bytes());
    t.push(0); // extended checksum
    t.extend_from_slice(&[0; 3]);
    t[8] = checksum(&t[..20]);
    t[32] = checksum(&t);
    t
}

/// A table: the 36-byte header, then `body`, the checksum set.
fn table(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum
    t.extend_from_slice(b"KEEL  ");
    t.extend_from_slice(b"KEELVM  ");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"KEEL");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    table(b"XSDT", 1, &body)
}

/// A generic address structure for a byte-wide I/O port.
fn io_port(port: u16) -> [u8; 12] {
    let mut gas = [0u8; 12];
    gas[0] = 1; // system I/O
    gas[1] = 8; // bits
    gas[3] = 1; // byte access
    gas[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    gas
}

fn fadt(dsdt: u64) -> Vec<u8> {
    // The body after the header: 276 - 36 bytes, offsets below are the
    // table's own minus 36.
    let mut b = vec![0u8; 276 - 36];
    let at = |offset: usize| offset - 36;
    b[at(40)..at(44)].copy_from_slice(&(dsdt as u32).to_le_bytes());
    // IAPC_BOOT_ARCH: no VGA, no MSI, no CMOS RTC.
    b[at(109)..at(111)].copy_from_slice(&((1u16 << 2) | (1 << 3) | (1 << 5)).to_le_bytes());
    // Flags: WBINVD, the power button is not fixed hardware, reset
    // register supported, hardware-reduced ACPI.
    let flags: u32 = 1 | (1 << 4) | (1 << 10) | (1 << 20);
    b[at(112)..at(116)].copy_from_slice(&flags.to_le_bytes());
    b[at(116)..at(128)].copy_from_slice(&io_port(RESET_PORT));
    b[at(128)] = RESET_VALUE;
    b[at(131)] = 5; // FADT minor version (ACPI 6.5)
    b[at(140)..at(148)].copy_from_slice(&dsdt.to_le_bytes());
    b[at(244)..at(256)].copy_from_slice(&io_port(SLEEP_CONTROL_PORT));
    b[at(256)..at(268)].copy_from_slice(&io_port(SLEEP_STATUS_PORT));
    b[at(268)..at(276)].copy_from_slice(b"KEELVMM\0");
    table(b"FACP", 6, &b)
}

fn madt(vcpus: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&LOCAL_APIC.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: there are 8259s
    for cpu in 0..vcpus {
        // A processor's local APIC: its id, enabled.
        b.extend_from_slice(&[0, 8, cpu as u8, cpu as u8]);
        b.extend_from_slice(&1u32.to_le_bytes());
    }
    // The I/O APIC: id, its registers, GSIs from 0.
    b.extend_from_slice(&[1, 12, vcpus as u8, 0]);
    b.extend_from_slice(&IO_APIC.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    table(b"APIC", 6, &b)
}

fn dsdt(devices: &[MmioDevice]) -> Vec<u8> {
    let mut sb = Vec::new();
    sb.extend(aml::device(
        b"COM1",
        &[
            aml::name(b"_HID", &aml::eisa_id("PNP0501")),
            aml::name(b"_UID", &aml::integer(0)),
            aml::name(b"_CRS", &aml::resources(&[aml::io(0x3f8, 8), aml::irq(4)])),
        ],
    ));
    // The event device: its interrupt says "read GDAT"; event 1 is the
    // power button, which Linux's button driver hears.
    sb.extend(aml::device(
        b"GED0",
        &[
            aml::name(b"_HID", &aml::string("ACPI0013")),
            aml::name(b"_UID", &aml::integer(0)),
            aml::name(
                b"_CRS",
                &aml::resources(&[aml::interrupt(crate::devices::EVENT_GSI)]),
            ),
            aml::region(b"GDST", crate::devices::EVENT_BASE, 1),
            aml::byte_field(b"GDST", b"GDAT"),
            aml::method(
                b"_EVT",
                1,
                &aml::if_bit_notify(
                    b"GDAT",
                    u64::from(crate::devices::EVENT_POWER_BUTTON),
                    b"PWRB",
                    0x80,
                ),
            ),
        ],
    ));
    sb.extend(aml::device(
        b"PWRB",
        &[
            aml::name(b"_HID", &aml::eisa_id("PNP0C0C")),
            aml::name(b"_UID", &aml::integer(0)),
        ],
    ));
    for (i, device) in devices.iter().enumerate() {
        let name = format!("V{i:03X}");
        sb.extend(aml::device(
            name.as_bytes().try_into().expect("four characters"),
            &[
                aml::name(b"_HID", &aml::string("LNRO0005")),
                aml::name(b"_UID", &aml::integer(i as u64)),
                aml::name(b"_CCA", &aml::integer(1)),
                aml::name(
                    b"_CRS",
                    &aml::resources(&[
                        aml::memory32(device.base as u32, device.size as u32),
                        aml::interrupt(device.gsi),
                    ]),
                ),
            ],
        ));
    }
    let mut body = aml::scope(b"\\_SB_", &sb);
    // The sleep type of S5 (soft off) for the sleep control register.
    body.extend(aml::name(
        b"_S5_",
        &aml::package(&[aml::integer(u64::from(S5_TYPE)), aml::integer(0)]),
    ));
    table(b"DSDT", 2, &body)
}

/// Just enough AML (ACPI's bytecode) for names, devices and resources.
mod aml {
    /// A package length: one to four bytes, counting themselves.
    fn pkg_length(content: usize) -> Vec<u8> {
        for extra in 0..4usize {
            let total = content + 1 + extra;
            let fits = match extra {
                0 => total < 0x40,
                1 => total < 0x1000,
                2 => total < 0x10_0000,
                _ => total < 0x1000_0000,
            };
            if fits {
                if extra == 0 {
                    return vec![total as u8];
                }
                let mut out = vec![((extra as u8) << 6) | (total & 0xf) as u8];
                for i in 0..extra {
                    out.push((total >> (4 + 8 * i)) as u8);
                }
                return out;
            }
        }
        unreachable!("an AML object of 256 MiB")
    }

    fn with_length(op: &[u8], content: &[u8]) -> Vec<u8> {
        let mut out = op.to_vec();
        out.extend(pkg_length(content.len()));
        out.extend_from_slice(content);
        out
    }

    /// `\_SB_` or a plain four-character name.
    fn name_string(name: &[u8]) -> Vec<u8> {
        name.to_vec()
    }

    pub fn integer(value: u64) -> Vec<u8> {
        match value {
            0 => vec![0x00],
            1 => vec![0x01],
            v if v <= 0xff => vec![0x0a, v as u8],
            v if v <= 0xffff => {
                let mut out = vec![0x0b];
                out.extend((v as u16).to_le_bytes());
                out
            }
            v if v <= 0xffff_ffff => {
                let mut out = vec![0x0c];
                out.extend((v as u32).to_le_bytes());
                out
            }
            v => {
                let mut out = vec![0x0e];
                out.extend(v.to_le_bytes());
                out
            }
        }
    }

    pub fn string(text: &str) -> Vec<u8> {
        let mut out = vec![0x0d];
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        out
    }

    /// A compressed EISA id (`PNP0501`) as an integer.
    pub fn eisa_id(id: &str) -> Vec<u8> {
        let b = id.as_bytes();
        let letter = |c: u8| u32::from(c - b'@') & 0x1f;
        let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0);
        let value: u32 = (letter(b[0]) << 26)
            | (letter(b[1]) << 21)
            | (letter(b[2]) << 16)
            | (hex(b[3]) << 12)
            | (hex(b[4]) << 8)
            | (hex(b[5]) << 4)
            | hex(b[6]);
        let mut out = vec![0x0c];
        out.extend(value.swap_bytes().to_le_bytes());
        out
    }

    pub fn name(name: &[u8; 4], value: &[u8]) -> Vec<u8> {
        let mut out = vec![0x08];
        out.extend(name_string(name));
        out.extend_from_slice(value);
        out
    }

    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut content = vec![elements.len() as u8];
        for e in elements {
            content.extend_from_slice(e);
        }
        with_length(&[0x12], &content)
    }

    pub fn device(name: &[u8; 4], body: &[Vec<u8>]) -> Vec<u8> {
        let mut content = name_string(name);
        for b in body {
            content.extend_from_slice(b);
        }
        with_length(&[0x5b, 0x82], &content)
    }

    pub fn scope(name: &[u8], body: &[u8]) -> Vec<u8> {
        let mut content = name_string(name);
        content.extend_from_slice(body);
        with_length(&[0x10], &content)
    }

    /// `OperationRegion (NAME, SystemMemory, base, length)`.
    pub fn region(name: &[u8; 4], base: u64, length: u64) -> Vec<u8> {
        let mut out = vec![0x5b, 0x80];
        out.extend(name_string(name));
        out.push(0x00); // SystemMemory
        out.extend(integer(base));
        out.extend(integer(length));
        out
    }

    /// `Field (REGION, ByteAcc, NoLock, WriteAsZeros) { NAME, 8 }`.
    pub fn byte_field(region: &[u8; 4], name: &[u8; 4]) -> Vec<u8> {
        let mut content = name_string(region);
        content.push(0x01 | (2 << 5));
        content.extend(name_string(name));
        content.push(8); // bits
        with_length(&[0x5b, 0x81], &content)
    }

    /// `Method (NAME, args, Serialized) { body }`.
    pub fn method(name: &[u8; 4], args: u8, body: &[u8]) -> Vec<u8> {
        let mut content = name_string(name);
        content.push((args & 7) | (1 << 3));
        content.extend_from_slice(body);
        with_length(&[0x14], &content)
    }

    /// `If (And (FIELD, bit)) { Notify (DEVICE, value) }`.
    pub fn if_bit_notify(field: &[u8; 4], bit: u64, device: &[u8; 4], value: u8) -> Vec<u8> {
        let mut content = vec![0x7b]; // And
        content.extend(name_string(field));
        content.extend(integer(bit));
        content.push(0x00); // no target
        content.push(0x86); // Notify
        content.extend(name_string(device));
        content.extend(integer(u64::from(value)));
        with_length(&[0xa0], &content)
    }

    /// A buffer holding resource descriptors and the end tag.
    pub fn resources(descriptors: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes: Vec<u8> = descriptors.concat();
        bytes.extend_from_slice(&[0x79, 0]);
        let mut content = integer(bytes.len() as u64);
        content.extend(bytes);
        with_length(&[0x11], &content)
    }

    pub fn memory32(base: u32, length: u32) -> Vec<u8> {
        let mut out = vec![0x86, 9, 0, 1]; // read-write
        out.extend(base.to_le_bytes());
        out.extend(length.to_le_bytes());
        out
    }

    /// An extended interrupt: consumer, edge-triggered, active high,
    /// exclusive.
    pub fn interrupt(gsi: u32) -> Vec<u8> {
        let mut out = vec![0x89, 6, 0, 0b0011, 1];
        out.extend(gsi.to_le_bytes());
        out
    }

    /// A 16-bit decoded I/O range of `length` ports at `base`.
    pub fn io(base: u16, length: u8) -> Vec<u8> {
        let mut out = vec![0x47, 1];
        out.extend(base.to_le_bytes());
        out.extend(base.to_le_bytes());
        out.extend([1, length]);
        out
    }

    /// A legacy IRQ.
    pub fn irq(irq: u8) -> Vec<u8> {
        let mut out = vec![0x22];
        out.extend((1u16 << irq).to_le_bytes());
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn package_lengths_count_themselves() {
            assert_eq!(pkg_length(10), vec![11]);
            // 0x40 and more: two bytes, the low nibble first.
            assert_eq!(pkg_length(0x40), vec![0x40 | 0x2, 0x04]);
            assert_eq!(pkg_length(0x1000), vec![0x80 | 0x3, 0x00, 0x01]);
        }

        #[test]
        fn eisa_ids_compress_as_acpi_says() {
            // PNP0501 is 0x0105D041 in the table (bytes 41 d0 05 01).
            assert_eq!(eisa_id("PNP0501"), vec![0x0c, 0x41, 0xd0, 0x05, 0x01]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_sums_to_zero_and_names_its_length() {
        let devices = [MmioDevice {
            base: 0xd000_0000,
            size: 0x1000,
            gsi: 5,
        }];
        for t in [fadt(DSDT), madt(2), dsdt(&devices), xsdt(&[FADT, MADT])] {
            assert_eq!(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
            assert_eq!(
                u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
                t.len()
            );
        }
        assert_eq!(fadt(DSDT).len(), 276);
        let r = rsdp(XSDT);
        assert_eq!(r[..20].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(r.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let d = dsdt(&devices);
        assert!(d.windows(8).any(|w| w == b"LNRO0005"));
        assert!(d.windows(4).any(|w| w == b"_S5_"));
        assert!(d.windows(8).any(|w| w == b"ACPI0013"));
        assert!(d.windows(4).any(|w| w == b"_EVT"));
    }
}
