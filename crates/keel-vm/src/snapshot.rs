//! VM snapshots: a directory with
//!
//! - `memory`: guest RAM, region after region, sparse (pages of zeros are
//!   holes), so a restore can map it copy-on-write and load pages as the
//!   guest touches them;
//! - `vcpus.json`: each vCPU's registers, FPU/SSE state, control
//!   registers, MSRs, pending events, debug registers, local APIC and run
//!   state; and the VM's interrupt controllers (PICs, I/O APIC), timer
//!   (PIT) and clock;
//! - `snapshot.json`, written last: the format, the keel version, a digest
//!   of the CPU features KVM offered, the VM's size, where each memory
//!   region lies in `memory`, and the checksum of `vcpus.json`.
//!
//! A snapshot is written to a temporary directory beside the target and
//! renamed into place once every file is on disk, so a directory that
//! exists is whole. A restore refuses a snapshot of another format or keel
//! version, of other CPU features, with a `vcpus.json` that does not match
//! its checksum or a `memory` of the wrong size; it never half-restores.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Error, Result};
use crate::memory::Memory;

/// 2: the interrupt controllers' state is kept.
pub const FORMAT: u32 = 2;

/// One guest memory region and where its bytes are in `memory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub guest_address: u64,
    pub size: u64,
    pub offset: u64,
}

/// `snapshot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub keel_version: String,
    /// sha256 of the CPUID entries KVM offered where it was made.
    pub cpu_features: String,
    pub vcpus: u32,
    pub memory: u64,
    pub cmdline: String,
    pub regions: Vec<Region>,
    /// The devices to make again on restore, in the VM's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    /// sha256 of `vcpus.json` (set when written).
    #[serde(default)]
    pub vcpus_sha256: String,
    #[serde(default)]
    pub created: String,
}

impl Meta {
    pub fn new(kvm: &Kvm, vcpus: u32, memory: &Memory, cmdline: &str) -> Result<Meta> {
        let mut offset = 0;
        let regions = memory
            .iter()
            .map(|r| {
                let region = Region {
                    guest_address: r.start_addr().0,
                    size: r.len(),
                    offset,
                };
                offset += r.len();
                region
            })
            .collect();
        Ok(Meta {
            format: FORMAT,
            keel_version: env!("CARGO_PKG_VERSION").to_string(),
            cpu_features: cpu_features(kvm)?,
            vcpus,
            memory: offset,
            cmdline: cmdline.to_string(),
            regions,
            devices: Vec::new(),
            vcpus_sha256: String::new(),
            created: String::new(),
        })
    }
}

/// The digest of what KVM offers this host's guests.
fn cpu_features(kvm: &Kvm) -> Result<String> {
    let cpuid = crate::vm::supported_cpuid(kvm)?;
    let mut hasher = Sha256::new();
    for e in cpuid.as_slice() {
        // The APIC id of the CPU the ioctl ran on is no feature.
        let (ebx, edx) = match e.function {
            1 => (e.ebx & 0x00ff_ffff, e.edx),
            0xb | 0x1f => (e.ebx, 0),
            _ => (e.ebx, e.edx),
        };
        for word in [e.function, e.index, e.flags, e.eax, ebx, e.ecx, edx] {
            hasher.update(word.to_le_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// One vCPU's state.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
}

/// The VM's own devices in KVM: the two PICs and the I/O APIC, the PIT,
/// the clock the guest reads (kvmclock).
#[derive(Serialize, Deserialize)]
pub struct Chips {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

/// What a snapshot keeps besides memory (`vcpus.json`).
#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub vcpus: Vec<VcpuState>,
    pub chips: Chips,
    /// The virtio devices' transports, queues and state.
    #[serde(default)]
    pub devices: Vec<crate::devices::virtio::mmio::State>,
}

/// A virtio device a restore makes again (a disk is opened again at its
/// path: the snapshot holds the VM, not its disks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum DeviceSpec {
    Disk {
        path: std::path::PathBuf,
        read_only: bool,
    },
    Balloon,
    Rng,
    /// A NIC on a keel network, at its address there: a restore joins the
    /// same network at the same address (refused while another VM has it).
    Net {
        network: String,
        #[serde(default)]
        ipv4: Option<std::net::IpAddr>,
        mac: [u8; 6],
    },
    /// A vsock device with the guest's CID; its host socket is the new
    /// VM's (connections open at the snapshot are reset).
    Vsock {
        cid: u64,
    },
}

pub fn get_chips(fd: &VmFd) -> Result<Chips> {
    let chip = |id: u32| {
        let mut chip = kvm_irqchip {
            chip_id: id,
            ..Default::default()
        };
        fd.get_irqchip(&mut chip)
            .map(|()| chip)
            .map_err(Error::kvm("read the interrupt controllers"))
    };
    let mut clock = fd.get_clock().map_err(Error::kvm("read the clock"))?;
    // Only the time is given back (KVM refuses other flags on set).
    clock.flags = 0;
    Ok(Chips {
        pic_master: chip(0)?,
        pic_slave: chip(1)?,
        ioapic: chip(2)?,
        pit: fd.get_pit2().map_err(Error::kvm("read the PIT"))?,
        clock,
    })
}

pub fn set_chips(fd: &VmFd, chips: &Chips) -> Result<()> {
    for chip in [&chips.pic_master, &chips.pic_slave, &chips.ioapic] {
        fd.set_irqchip(chip)
            .map_err(Error::kvm("set the interrupt controllers"))?;
    }
    fd.set_pit2(&chips.pit).map_err(Error::kvm("set the PIT"))?;
    fd.set_clock(&chips.clock)
        .map_err(Error::kvm("set the clock"))
}

/// The MSRs a 64-bit guest's state lives in beyond the registers: the
/// system-call entry points and masks, swapgs's base, the PAT, the TSC.
const MSRS: [u32; 11] = [
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x277,       // IA32_PAT
    0x1a0,       // IA32_MISC_ENABLE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
    0x10,        // TSC
];

pub fn get_vcpu(vcpu: &VcpuFd) -> Result<VcpuState> {
    let kvm = |what: &'static str| Error::kvm(what);
    let entries: Vec<kvm_msr_entry> = MSRS
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = kvm_bindings::Msrs::from_entries(&entries)
        .map_err(|e| Error::Msg(format!("an MSR list: {e:?}")))?;
    // KVM reads them in order and stops at the first it cannot: the ones
    // before it are kept.
    let read = vcpu.get_msrs(&mut msrs).map_err(kvm("read MSRs"))?;
    Ok(VcpuState {
        regs: vcpu.get_regs().map_err(kvm("read registers"))?,
        sregs: vcpu.get_sregs().map_err(kvm("read segment registers"))?,
        xsave: vcpu.get_xsave().map_err(kvm("read the FPU state"))?,
        xcrs: vcpu.get_xcrs().map_err(kvm("read XCRs"))?,
        msrs: msrs.as_slice()[..read].to_vec(),
        events: vcpu.get_vcpu_events().map_err(kvm("read pending events"))?,
        debugregs: vcpu.get_debug_regs().map_err(kvm("read debug registers"))?,
        lapic: vcpu.get_lapic().map_err(kvm("read the local APIC"))?,
        mp_state: vcpu.get_mp_state().map_err(kvm("read the run state"))?,
    })
}

pub fn set_vcpu(vcpu: &VcpuFd, state: &VcpuState) -> Result<()> {
    let kvm = |what: &'static str| Error::kvm(what);
    vcpu.set_sregs(&state.sregs)
        .map_err(kvm("set segment registers"))?;
    vcpu.set_lapic(&state.lapic)
        .map_err(kvm("set the local APIC"))?;
    vcpu.set_regs(&state.regs).map_err(kvm("set registers"))?;
    // SAFETY: a kvm_xsave read from KVM (checked by the snapshot's
    // checksum), of the size the ioctl takes.
    unsafe { vcpu.set_xsave(&state.xsave) }.map_err(kvm("set the FPU state"))?;
    vcpu.set_xcrs(&state.xcrs).map_err(kvm("set XCRs"))?;
    let msrs = kvm_bindings::Msrs::from_entries(&state.msrs)
        .map_err(|e| Error::Msg(format!("an MSR list: {e:?}")))?;
    let written = vcpu.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
    if written != state.msrs.len() {
        return Err(Error::Msg(format!(
            "KVM took {written} of the snapshot's {} MSRs",
            state.msrs.len()
        )));
    }
    vcpu.set_vcpu_events(&state.events)
        .map_err(kvm("set pending events"))?;
    vcpu.set_debug_regs(&state.debugregs)
        .map_err(kvm("set debug registers"))?;
    vcpu.set_mp_state(state.mp_state)
        .map_err(kvm("set the run state"))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Writes a snapshot to `dir` (a new directory): see the module's text.
pub fn write(dir: &Path, meta: &Meta, saved: &Saved, memory: &Memory) -> Result<()> {
    if dir.exists() {
        return Err(Error::invalid(format!(
            "{} exists: a snapshot goes to a new directory",
            dir.display()
        )));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} names no directory", dir.display())))?;
    let temp = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&temp);
    fs::create_dir(&temp).map_err(Error::path("create", &temp))?;
    let result = (|| {
        write_memory(&temp.join("memory"), meta, memory)?;
        write_parts(&temp, meta, saved)?;
        fs::rename(&temp, dir).map_err(io(format!("rename the snapshot to {}", dir.display())))?;
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result
}

/// Writes `vcpus.json` and then `snapshot.json` into `dir` (whose
/// `memory` is written), and syncs the directory.
pub fn write_parts(dir: &Path, meta: &Meta, saved: &Saved) -> Result<()> {
    let states = serde_json::to_vec(saved).expect("vCPU states serialize");
    write_file(&dir.join("vcpus.json"), &states)?;
    let mut meta = meta.clone();
    meta.vcpus_sha256 = hex::encode(Sha256::digest(&states));
    meta.created = crate::store::now();
    let text = serde_json::to_vec_pretty(&meta).expect("the snapshot's meta serializes");
    write_file(&dir.join("snapshot.json"), &text)?;
    sync_dir(dir)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(Error::path("create", path))?;
    file.write_all(data).map_err(Error::path("write", path))?;
    file.sync_all().map_err(Error::path("sync", path))
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(Error::path("sync", path))
}

/// Guest RAM to `path`, holes for chunks of zeros.
fn write_memory(path: &Path, meta: &Meta, memory: &Memory) -> Result<()> {
    const CHUNK: usize = 64 << 10;
    let file = File::create(path).map_err(Error::path("create", path))?;
    file.set_len(meta.memory)
        .map_err(Error::path("size", path))?;
    for region in &meta.regions {
        let host = memory
            .get_host_address(GuestAddress(region.guest_address))
            .map_err(|e| Error::Msg(format!("guest memory: {e}")))?;
        // SAFETY: the region's mapping, `size` bytes long, stays mapped
        // (the caller holds `memory`); the vCPUs are paused, so nothing
        // writes it while it is read.
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, region.size as usize) };
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            if chunk.iter().all(|&b| b == 0) {
                continue;
            }
            file.write_all_at(chunk, region.offset + (i * CHUNK) as u64)
                .map_err(Error::path("write", path))?;
        }
    }
    file.sync_all().map_err(Error::path("sync", path))
}

/// A snapshot read back and checked, its memory mapped.
pub struct Loaded {
    pub meta: Meta,
    pub saved: Saved,
    pub memory: Memory,
}

fn refuse(dir: &Path, why: String) -> Error {
    Error::invalid(format!("{} cannot be restored: {why}", dir.display()))
}

/// A snapshot's `snapshot.json` (what it is of; nothing checked beyond
/// that it parses).
pub fn read_meta(dir: &Path) -> Result<Meta> {
    let text = fs::read(dir.join("snapshot.json")).map_err(|e| {
        refuse(
            dir,
            format!("no snapshot.json ({e}); is it a keel VM snapshot?"),
        )
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| refuse(dir, format!("snapshot.json is corrupt ({e})")))
}

pub fn read(dir: &Path, kvm: &Kvm) -> Result<Loaded> {
    let refuse = |why: String| refuse(dir, why);
    let meta = read_meta(dir)?;
    if meta.format != FORMAT {
        return Err(refuse(format!(
            "it is in snapshot format {}; this keel reads format {FORMAT}",
            meta.format
        )));
    }
    let ours = env!("CARGO_PKG_VERSION");
    if meta.keel_version != ours {
        return Err(refuse(format!(
            "it was made by keel {}; this is keel {ours}",
            meta.keel_version
        )));
    }
    if meta.cpu_features != cpu_features(kvm)? {
        return Err(refuse(
            "it was made where KVM offered other CPU features than here".into(),
        ));
    }
    let states =
        fs::read(dir.join("vcpus.json")).map_err(|e| refuse(format!("vcpus.json: {e}")))?;
    if hex::encode(Sha256::digest(&states)) != meta.vcpus_sha256 {
        return Err(refuse(
            "vcpus.json does not match its checksum (it is corrupt)".into(),
        ));
    }
    let saved: Saved = serde_json::from_slice(&states)
        .map_err(|e| refuse(format!("vcpus.json is corrupt ({e})")))?;
    if saved.vcpus.len() != meta.vcpus as usize {
        return Err(refuse(format!(
            "it has {} vCPU states for {} vCPUs",
            saved.vcpus.len(),
            meta.vcpus
        )));
    }
    let path = dir.join("memory");
    let file = File::open(&path).map_err(|e| refuse(format!("memory: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| refuse(format!("memory: {e}")))?
        .len();
    let expected: u64 = meta.regions.iter().map(|r| r.size).sum();
    if size != expected || expected != meta.memory {
        return Err(refuse(format!(
            "its memory file is {size} bytes; {expected} were written (truncated?)"
        )));
    }
    let file = std::sync::Arc::new(file);
    let regions = meta
        .regions
        .iter()
        .map(|r| {
            let offset = vm_memory::FileOffset::from_arc(file.clone(), r.offset);
            let mapping = vm_memory::MmapRegion::build(
                Some(offset),
                r.size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            )
            .map_err(|e| Error::Msg(format!("map the snapshot's memory: {e}")))?;
            vm_memory::GuestRegionMmap::new(mapping, GuestAddress(r.guest_address))
                .ok_or_else(|| Error::Msg("a snapshot memory region overflows".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    let memory = vm_memory::GuestMemoryMmap::from_regions(regions)
        .map_err(|e| refuse(format!("its memory regions overlap ({e})")))?;
    Ok(Loaded {
        meta,
        saved,
        memory,
    })
}
