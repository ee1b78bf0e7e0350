//! keel-runtime: a runc-compatible OCI runtime, as a library with a thin CLI.
//!
//! Syscall-heavy code sits in small modules with one job each; the lifecycle
//! operations (`create`, `start`, `kill`, `delete`, `exec`, ...) live in
//! [`container`], and the command line in [`cli`].

pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod console;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec;
pub mod features;
pub mod hooks;
pub mod logging;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod sealed;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;
pub mod util;
pub mod vm;

pub use error::{Error, Result};

/// The version callers parse (`keel-runtime version X`, `commit:`, `spec:`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";
