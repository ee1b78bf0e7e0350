//! CVE-2019-5736: a process in the container could open the runtime's
//! binary through /proc/<pid>/exe while the runtime is inside the container
//! (or re-execute it with `#!/proc/self/exe`) and overwrite it on the host.
//!
//! Before `create`, `run` and `exec`, keel-runtime re-executes itself from a
//! private, detached, read-only bind mount of its own binary (open_tree +
//! mount_setattr + execveat): /proc/self/exe then points at a read-only
//! mount, so opening it for writing fails with EROFS, and no copy of the
//! binary is made (runc's memfd copy is charged to the container's memory).
//! Where that is impossible (old kernels), a sealed memfd copy is the
//! fallback.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Whether this process already runs from a read-only or sealed binary.
pub fn is_sealed() -> bool {
    if std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().starts_with("/memfd:"))
        .unwrap_or(false)
    {
        return true;
    }
    crate::mounts::locked_flags("/proc/self/exe") & libc::MS_RDONLY != 0
}

/// Re-executes the current binary from a read-only view of itself, with the
/// same arguments and environment. Returns only if that is impossible.
pub fn reexec() -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()).unwrap_or_default())
        .collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).unwrap_or_default()
        })
        .collect();
    let fd = sealed_binary()?;
    Err(exec_fd(&fd, &args, &env))
}

/// An fd of this process's binary that cannot be written through: a
/// read-only detached bind mount of it, else a sealed memfd copy. Exec it
/// with [`exec_fd`] to start a process that is safe to enter a container.
pub fn sealed_binary() -> Result<OwnedFd> {
    sealed_binary_at(c"/proc/self/exe")
}

/// [`sealed_binary`] of another binary (a helper beside this one).
pub fn sealed_binary_at(path: &std::ffi::CStr) -> Result<OwnedFd> {
    match readonly_bind(path) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            tracing::debug!("read-only bind of own binary failed ({e}); using a sealed copy");
            sealed_copy(path)
        }
    }
}

/// execveat of `fd` (from [`sealed_binary`]) with `args` and `env`; returns
/// only on failure.
pub fn exec_fd(fd: &OwnedFd, args: &[CString], env: &[CString]) -> Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv/envp are NUL-terminated arrays of valid C strings that
    // outlive the call; execveat only returns on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Error::io(
        "execute a read-only copy of this binary",
        std::io::Error::last_os_error(),
    )
}

fn readonly_bind(path: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: open_tree on a valid path; returns a new O_PATH fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached mount with a valid attr struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn sealed_copy(path: &std::ffi::CStr) -> Result<OwnedFd> {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    let mut source =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    // SAFETY: memfd_create with a valid name; returns a new fd.
    let fd = unsafe {
        libc::memfd_create(
            c"keel-runtime".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is new and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd.try_clone().map_err(|e| Error::io("dup memfd", e))?);
    std::io::copy(&mut source, &mut file).map_err(|e| Error::io("copy own binary", e))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(Error::io("seal memfd", std::io::Error::last_os_error()));
    }
    Ok(fd)
}
