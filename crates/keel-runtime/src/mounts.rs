//! Mount options and mounts whose targets are resolved inside the rootfs
//! without following symlinks out of it (openat2 RESOLVE_IN_ROOT), then
//! mounted through `/proc/self/fd/N` so the kernel mounts exactly the
//! inode we checked.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::{Error, Result};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// A mount's options, split the way mount(2) wants them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Options {
    /// MS_* flags to set.
    pub flags: u64,
    /// MS_* propagation changes, applied after the mount, in order.
    pub propagation: Vec<u64>,
    /// Filesystem-specific data (`mode=755,size=65536k`).
    pub data: Vec<String>,
}

impl Options {
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }
}

/// Maps a propagation name to its MS_* flags.
pub fn propagation_flag(name: &str) -> Result<u64> {
    Ok(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return Err(Error::msg(format!("unknown propagation mode {name:?}"))),
    })
}

/// Parses OCI mount options (the `mount(8)` vocabulary).
pub fn parse_options(options: &[String]) -> Result<Options> {
    let mut out = Options::default();
    for opt in options {
        let (set, clear): (u64, u64) = match opt.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            "silent" => (libc::MS_SILENT, 0),
            "loud" => (0, libc::MS_SILENT),
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                out.propagation.push(propagation_flag(opt)?);
                continue;
            }
            "idmap" | "ridmap" | "rro" | "rrw" | "rnosuid" | "rsuid" | "rnodev" | "rdev"
            | "rnoexec" | "rexec" | "tmpcopyup" => {
                return Err(Error::msg(format!("mount option {opt:?} is not supported")));
            }
            _ => {
                out.data.push(opt.clone());
                continue;
            }
        };
        out.flags = (out.flags | set) & !clear;
    }
    Ok(out)
}

fn openat2(dirfd: RawFd, path: &str, flags: i32, resolve: u64) -> std::io::Result<OwnedFd> {
    let c_path = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    loop {
        // SAFETY: openat2 with a valid path and open_how of the right size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new fd that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) && err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

/// Opens `path` (relative to the rootfs, `..` and symlinks clamped inside
/// it) as an O_PATH fd.
pub fn open_in_root(root: &OwnedFd, path: &str) -> std::io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        root.as_raw_fd(),
        rel,
        libc::O_PATH,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// What to create at a missing mount target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    Dir,
    File,
}

/// Opens `path` inside the rootfs, creating missing directories (and the
/// last component as `leaf`), never leaving the rootfs.
pub fn mkdir_all_in_root(root: &OwnedFd, path: &str, leaf: Leaf) -> Result<OwnedFd> {
    if let Ok(fd) = open_in_root(root, path) {
        return Ok(fd);
    }
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut parent: Option<OwnedFd> = None;
    for (i, name) in components.iter().enumerate() {
        let prefix = components[..=i].join("/");
        match open_in_root(root, &prefix) {
            Ok(fd) => {
                parent = Some(fd);
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::io(format!("resolve {path} in the rootfs"), e)),
        }
        let dirfd = parent.as_ref().map_or(root.as_raw_fd(), |f| f.as_raw_fd());
        let c_name =
            CString::new(*name).map_err(|_| Error::msg(format!("invalid path {path:?}")))?;
        let last = i + 1 == components.len();
        // SAFETY: *at calls with a valid dirfd and NUL-terminated name.
        let rc = unsafe {
            if last && leaf == Leaf::File {
                let fd = libc::openat(
                    dirfd,
                    c_name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                    0
                } else {
                    -1
                }
            } else {
                libc::mkdirat(dirfd, c_name.as_ptr(), 0o755)
            }
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EEXIST) {
                return Err(Error::msg(format!(
                    "mount target {path}: {prefix} is a symlink that points to nothing inside the rootfs"
                )));
            }
            return Err(Error::io(format!("create {prefix} in the rootfs"), err));
        }
        parent = Some(
            open_in_root(root, &prefix)
                .map_err(|e| Error::io(format!("open {prefix} in the rootfs"), e))?,
        );
    }
    match parent {
        Some(fd) => Ok(fd),
        None => open_in_root(root, ".").map_err(|e| Error::io("open rootfs", e)),
    }
}

/// `/proc/self/fd/N` for an fd, the path that mount(2) follows exactly.
pub fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
    let source = source.map(c).transpose()?;
    let target = c(target)?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.filter(|d| !d.is_empty()).map(c).transpose()?;
    // SAFETY: all pointers are NUL-terminated strings or null.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The MS_* flags that statfs reports for a mount: a bind remount in a user
/// namespace must keep them (they are locked), so they are added back.
pub fn locked_flags(path: &str) -> u64 {
    let Ok(c_path) = CString::new(path) else {
        return 0;
    };
    // SAFETY: statvfs fills a zeroed struct for a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

/// Remounts a bind mount with `flags`, retrying with the locked flags of
/// the mount when the kernel refuses to drop them.
pub fn remount_bind(target: &str, flags: u64) -> std::io::Result<()> {
    let base = libc::MS_BIND | libc::MS_REMOUNT;
    match mount(None, target, None, base | flags, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let locked = locked_flags(target) & !libc::MS_RDONLY;
            mount(None, target, None, base | flags | locked, None)
        }
        other => other,
    }
}

/// Unmounts, ignoring "not mounted".
pub fn umount_detach(target: &Path) {
    if let Ok(c) = CString::new(target.as_os_str().as_encoded_bytes()) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = [
            "nosuid",
            "noexec",
            "rbind",
            "rprivate",
            "mode=755",
            "size=65536k",
            "ro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let parsed = parse_options(&opts).unwrap();
        assert_eq!(
            parsed.flags,
            libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY
        );
        assert_eq!(parsed.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(parsed.data_string(), "mode=755,size=65536k");
        assert!(parsed.is_bind());
    }

    #[test]
    fn later_options_override_earlier_ones() {
        let parsed = parse_options(&["ro".into(), "rw".into()]).unwrap();
        assert_eq!(parsed.flags & libc::MS_RDONLY, 0);
    }

    #[test]
    fn unsupported_options_are_named() {
        let err = parse_options(&["idmap".into()]).unwrap_err().to_string();
        assert!(err.contains("idmap"), "{err}");
        assert!(propagation_flag("sideways").is_err());
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        let root_fd = std::fs::File::open(&root).unwrap().into();
        // An absolute symlink is resolved inside the root, so creating
        // through it lands in <root>/etc, not the host's /etc.
        let fd = mkdir_all_in_root(&root_fd, "/escape/keel-test-target", Leaf::Dir).unwrap();
        let real = std::fs::read_link(fd_path(&fd)).unwrap();
        assert_eq!(real, root.join("etc/keel-test-target"));
        assert!(!Path::new("/etc/keel-test-target").exists());
        let fd = mkdir_all_in_root(&root_fd, "/up/x/file", Leaf::File).unwrap();
        let real = std::fs::read_link(fd_path(&fd)).unwrap();
        assert_eq!(real, root.join("x/file"));
    }
}
