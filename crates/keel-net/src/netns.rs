//! Network namespaces held by an fd.
//!
//! keel does not bind-mount namespaces (as `ip netns` does): the monitor
//! of a container holds the fd of the namespace it made for it, and the
//! runtime joins it through `/proc/<monitor>/fd/<n>`. The namespace lives
//! as long as its holder or a process inside it, so a killed monitor or a
//! reboot leaves no namespace (and, with it, no veth) behind.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};

/// Makes a new network namespace (loopback down, as the kernel makes it)
/// and returns its fd; this thread stays where it is.
pub fn create() -> Result<OwnedFd> {
    std::thread::scope(|scope| {
        small_thread()
            .spawn_scoped(scope, || {
                // SAFETY: unshare of this short-lived thread's network
                // namespace only (CLONE_NEWNET is allowed per thread).
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::io(
                        "make a network namespace",
                        std::io::Error::last_os_error(),
                    ));
                }
                crate::netlink::current_namespace()
            })
            .map_err(|e| Error::io("start a thread for the namespace", e))?
            .join()
            .map_err(|_| Error::msg("the namespace thread failed"))?
    })
}

/// A thread with a small stack: these do a few syscalls and netlink
/// messages, and a default 2 MiB stack stays mapped (cached by libc) in
/// every container's monitor after the thread ends.
fn small_thread() -> std::thread::Builder {
    std::thread::Builder::new().stack_size(256 << 10)
}

/// Runs `f` on a thread that has entered the network namespace
/// `namespace`; this thread's namespace never changes.
pub fn run_in<T: Send>(
    namespace: BorrowedFd<'_>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let raw = namespace.as_raw_fd();
    std::thread::scope(|scope| {
        small_thread()
            .spawn_scoped(scope, move || {
                // SAFETY: setns of this (new, short-lived) thread only.
                if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::io(
                        "enter the network namespace",
                        std::io::Error::last_os_error(),
                    ));
                }
                f()
            })
            .map_err(|e| Error::io("start a thread for the namespace", e))?
            .join()
            .map_err(|_| Error::msg("the namespace thread failed"))?
    })
}

/// Writes a sysctl under `/proc/sys/net` of the calling thread's network
/// namespace (`ipv4/ip_forward`, `ipv4/conf/<link>/route_localnet`).
pub fn sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/net/{key}");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| Error::io(format!("write {path}"), e))
}

/// Reads a sysctl under `/proc/sys/net` (None if there is no such key).
pub fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/net/{key}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The inode of a namespace fd: two fds name the same namespace if their
/// inodes are equal.
pub fn inode(namespace: BorrowedFd<'_>) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/self/fd/{}", namespace.as_raw_fd());
    std::fs::metadata(&path)
        .map(|m| m.ino())
        .map_err(|e| Error::io(format!("stat {path}"), e))
}
