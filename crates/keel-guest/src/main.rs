//! `keel-guest`: PID 1 of a container's micro-VM (`keel run --isolation
//! vm`), the `/init` of the initramfs keel writes.
//!
//! It mounts what a Linux system needs, loads the modules listed in
//! `/modules/order`, and listens on vsock port 1024. Each connection is one
//! process, handled by a child of its own: the first is the container's
//! (the host's `Run` request: the shares are mounted and keel-runtime runs
//! the config in the guest — user, capabilities, seccomp, rlimits and
//! mounts as for any container), later ones are `exec`s. The VM powers
//! off when the container's process has exited.

#[cfg(target_os = "linux")]
mod agent;
#[cfg(target_os = "linux")]
mod net;
#[cfg(target_os = "linux")]
mod process;

#[cfg(target_os = "linux")]
fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "keel-guest is the init of keel's micro-VMs (keel run --isolation vm), not a command"
        );
        std::process::exit(2);
    }
    agent::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("keel-guest runs only in a Linux guest");
    std::process::exit(2);
}
