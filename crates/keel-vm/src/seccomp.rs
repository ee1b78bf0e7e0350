//! The VMM's seccomp filter. Once the VM is made (memory mapped, guest
//! loaded, KVM fds open, sockets bound), keel-vmm needs few system calls:
//! KVM's ioctls, memory management for its heap, threads and signals, the
//! files of its state and of snapshots, and the sockets of its control
//! channel and of a migration. Everything else fails with EPERM: no
//! `execve`, no new processes (`clone` only with `CLONE_THREAD`, `clone3`
//! answers ENOSYS so the C library falls back to `clone`), no mounts, no
//! namespaces, no ptrace, no new KVM VMs (opening `/dev/kvm` is not needed
//! again, and `openat` alone cannot make one).
//!
//! The filter is loaded by the main thread before it starts the others
//! (control, signals, vCPUs), which inherit it.

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use crate::error::{Error, Result};

/// What keel-vmm calls after the VM is made.
const ALLOWED: &[&str] = &[
    // KVM and files
    "ioctl",
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "lseek",
    "close",
    "fstat",
    "newfstatat",
    "statx",
    "openat",
    "mkdir",
    "mkdirat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "getdents64",
    "fsync",
    "fdatasync",
    "flock",
    "ftruncate",
    "fcntl",
    "dup",
    "dup3",
    // memory
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "brk",
    // threads, time and signals
    "futex",
    "rt_sigreturn",
    "rt_sigprocmask",
    "rt_sigaction",
    "rt_sigtimedwait",
    "sigaltstack",
    "tgkill",
    "tkill",
    "getpid",
    "gettid",
    "exit",
    "exit_group",
    "sched_yield",
    "sched_getaffinity",
    "nanosleep",
    "clock_nanosleep",
    "clock_gettime",
    "restart_syscall",
    "set_robust_list",
    "rseq",
    "prctl",
    "getrandom",
    // the control socket and migrations
    "socket",
    "connect",
    "accept",
    "accept4",
    "listen",
    "bind",
    "setsockopt",
    "getsockopt",
    "getsockname",
    "getpeername",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "shutdown",
    "poll",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "eventfd2",
    "ppoll",
];

/// What the 9p server of a VM's shared directories calls besides
/// ([`crate::p9`]), allowed only for a VM with shares.
const SHARES: &[&str] = &[
    "fchownat",
    "fchmodat",
    "chmod",
    "symlinkat",
    "linkat",
    "mknodat",
    "readlinkat",
    "fstatfs",
    "statfs",
    "truncate",
    "utimensat",
    "getxattr",
    "listxattr",
    "setxattr",
];

fn error(what: &str) -> impl FnOnce(libseccomp::error::SeccompError) -> Error + '_ {
    move |e| Error::Msg(format!("the VMM's seccomp filter: {what}: {e}"))
}

/// Loads the filter on this thread (and so on the threads it starts);
/// `shares`: the VM shares directories with its guest.
pub fn confine(shares: bool) -> Result<()> {
    let mut context =
        ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM)).map_err(error("make it"))?;
    let extra = if shares { SHARES } else { &[] };
    for name in ALLOWED.iter().chain(extra) {
        let syscall = ScmpSyscall::from_name(name).map_err(error(name))?;
        context
            .add_rule(ScmpAction::Allow, syscall)
            .map_err(error(name))?;
    }
    // Threads, not processes.
    let clone = ScmpSyscall::from_name("clone").map_err(error("clone"))?;
    context
        .add_rule_conditional(
            ScmpAction::Allow,
            clone,
            &[ScmpArgCompare::new(
                0,
                ScmpCompareOp::MaskedEqual(libc::CLONE_THREAD as u64),
                libc::CLONE_THREAD as u64,
            )],
        )
        .map_err(error("clone"))?;
    let clone3 = ScmpSyscall::from_name("clone3").map_err(error("clone3"))?;
    context
        .add_rule(ScmpAction::Errno(libc::ENOSYS), clone3)
        .map_err(error("clone3"))?;
    context.load().map_err(error("load it"))
}
