//! keel's ACPI tables through ACPICA (the interpreter Linux runs), as
//! its `iasl` sees them: each table disassembles, the DSDT compiles back
//! without an error, and says what a guest's Linux is to find in it.

use std::process::Command;

use keel_vm::acpi::{MmioDevice, tables};

#[test]
fn acpica_reads_every_table_and_compiles_the_dsdt_back() {
    let iasl = std::path::Path::new("/usr/bin/iasl");
    assert!(
        iasl.exists(),
        "iasl is missing: run scripts/setup (acpica-tools)"
    );
    let dir = tempfile::tempdir().unwrap();
    let devices = [
        MmioDevice {
            base: 0xd000_0000,
            size: 0x1000,
            gsi: 5,
        },
        MmioDevice {
            base: 0xd000_1000,
            size: 0x1000,
            gsi: 6,
        },
    ];
    for (signature, table) in tables(2, &devices) {
        if signature == "RSD " {
            continue;
        }
        let name = signature.to_lowercase();
        let aml = dir.path().join(format!("{name}.aml"));
        std::fs::write(&aml, &table).unwrap();
        let out = Command::new(iasl)
            .args(["-d"])
            .arg(&aml)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iasl -d {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dsl = std::fs::read_to_string(dir.path().join(format!("{name}.dsl"))).unwrap();
        let expected: &[&str] = match name.as_str() {
            "dsdt" => &[
                "Device (V000)",
                "Name (_HID, \"LNRO0005\")",
                "Memory32Fixed (ReadWrite,\n                    0xD0001000,",
                "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000006,",
                "0x00000017,",
                "Device (GED0)",
                "Name (_HID, \"ACPI0013\"",
                "OperationRegion (GDST, SystemMemory, 0xFEB00000, One)",
                "Method (_EVT, 1, Serialized)",
                "Notify (PWRB, 0x80)",
                "Name (_HID, EisaId (\"PNP0C0C\")",
                "Name (_HID, EisaId (\"PNP0501\")",
                "If ((GDAT & One))",
                "IO (Decode16,\n                    0x03F8,",
                "Name (_S5, Package (0x02)",
            ],
            "apic" => &[
                "Local Apic Address : FEE00000",
                "Processor ID : 01",
                "Address : FEC00000",
            ],
            "facp" => &[
                "Hardware Reduced (V5) : 1",
                "Space ID : 01 [SystemIO]",
                "Address : 00000000000003C0",
            ],
            _ => &[],
        };
        for line in expected {
            assert!(dsl.contains(line), "{name}.dsl lacks {line:?}:\n{dsl}");
        }
        if name == "dsdt" {
            // And back: ASL that compiles (errors fail; warnings pass).
            let out = Command::new(iasl)
                .arg("dsdt.dsl")
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "iasl dsdt.dsl: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
