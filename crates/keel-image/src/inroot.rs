//! Opening a path of a root filesystem as if that root were `/`: the one
//! openat2(RESOLVE_IN_ROOT) wrapper that layer unpacking, `keel build`'s
//! COPY and the engine's reads of a container's files share. A symlink or
//! `..` met on the way resolves inside the root, never out of it; magic
//! links (`/proc/self/fd/N`) are refused.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// openat2(`root`, `path`, `flags` | O_CLOEXEC, `mode`,
/// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS). `path` (bytes: layer paths
/// need not be UTF-8) may start with `/`
/// (it is taken from the root); an empty one is the root itself. Retried
/// when the kernel cannot be sure of the lookup under a concurrent rename
/// (EAGAIN).
pub fn open(
    root: BorrowedFd<'_>,
    path: impl AsRef<[u8]>,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let path = path.as_ref();
    let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
    let relative = &path[start..];
    let relative = CString::new(if relative.is_empty() { b"." } else { relative })
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zeroed is its valid empty value (the
    // struct is non_exhaustive, so it cannot be built literally).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..8 {
        // SAFETY: a valid dir fd, C string and an open_how of the size
        // passed; returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                relative.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a new fd we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "inside\n").unwrap();
        std::fs::write(dir.path().join("hostname"), "outside\n").unwrap();
        std::os::unix::fs::symlink("../../hostname", root.join("etc/up")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("abs")).unwrap();
        let fd = OwnedFd::from(std::fs::File::open(&root).unwrap());
        let read = |path: &str| {
            let file = std::fs::File::from(open(fd.as_fd(), path, libc::O_RDONLY, 0).unwrap());
            std::io::read_to_string(file).unwrap()
        };
        assert_eq!(read("/etc/hostname"), "inside\n");
        // ../../hostname from /etc stops at the root: /hostname, absent.
        assert_eq!(
            open(fd.as_fd(), "etc/up", libc::O_RDONLY, 0)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ENOENT)
        );
        assert_eq!(read("abs"), "inside\n");
        assert_eq!(read("../../etc/hostname"), "inside\n");
        assert!(open(fd.as_fd(), "", libc::O_PATH | libc::O_DIRECTORY, 0).is_ok());
        assert!(open(fd.as_fd(), "a\0b", libc::O_RDONLY, 0).is_err());
    }
}
