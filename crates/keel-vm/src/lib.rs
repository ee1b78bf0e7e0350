//! keel's hypervisor: micro-VMs over the KVM API, in the style of
//! Firecracker (one small VMM per VM, a minimal device model).
//!
//! - [`memory`]: guest RAM, reserved lazily (overprovisioning), and how
//!   much of it the host really holds;
//! - [`boot`]: keel's own guest format (a static x86-64 ELF entered in
//!   64-bit mode) and the vCPU state for it;
//! - [`linux`]: Linux kernels (bzImage, vmlinux) with the x86 boot
//!   protocol's zero page, an initrd, and [`acpi`] tables;
//! - [`devices`]: the port-I/O devices (serial console, i8042 reset,
//!   pvpanic);
//! - [`fdpass`]: file descriptors over unix sockets (SCM_RIGHTS);
//! - [`disk`]: raw disk images (sparse, or ext4 of a container image);
//! - [`vhost_user`]: keel's virtio devices served to another VMM over
//!   vhost-user (how Linux's own drivers are tested against them here);
//! - [`vm`]: a VM with one thread per vCPU, run until the guest ends;
//! - [`snapshot`]: a VM's memory and vCPU state written to a directory,
//!   and restored from one (memory mapped lazily, copy-on-write);
//! - [`mptable`]: the MP table, for a Linux kernel without ACPI;
//! - [`p9`]: keel's 9P2000.L file server (virtio-9p's, and over any
//!   stream);
//! - [`migrate`]: live migration over TCP (pre-copy with KVM's dirty
//!   page log, or stop-and-copy), received as a snapshot;
//! - [`seccomp`]: the filter keel-vmm confines itself with once the VM
//!   is made;
//! - [`store`]: VM records under keel's root (what `keel vm ls` reads);
//! - [`guest`]: a container's micro-VM (`keel run --isolation vm`): the
//!   guest kernel, the initramfs keel writes, and `keel-vm-shim`.
//!
//! The VMM process itself is `keel-vmm` (`src/bin/keel-vmm.rs`): one per
//! VM, started by `keel vm run`, holding the VM after the CLI exits.
//!
//! This machine's /dev/kvm is PVM (software KVM): keel's own guests run
//! under it, unmodified Linux does not (see the README's VM section).

pub mod acpi;
pub mod boot;
pub mod devices;
pub mod disk;
pub mod error;
pub mod fdpass;
pub mod guest;
pub mod linux;
pub mod memory;
pub mod migrate;
pub mod mptable;
pub mod p9;
pub mod seccomp;
pub mod snapshot;
pub mod store;
pub mod vhost_user;
pub mod vm;

pub use error::{Error, Result};

/// keel's test guest, built with the crate (see `guests/test_guest.rs`):
/// empty where the host is not x86-64.
pub const TEST_GUEST: &str = env!("KEEL_TEST_GUEST");
