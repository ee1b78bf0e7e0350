//! `/dev`: the default device nodes and symlinks every container gets, and
//! `linux.devices`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, Result};
use crate::mounts::{self, Leaf};
use crate::spec::Device;

/// The nodes runc creates in every container.
pub fn default_devices() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        kind: "c".into(),
        path: format!("/dev/{name}"),
        major,
        minor,
        file_mode: Some(0o666),
        uid: Some(0),
        gid: Some(0),
    })
    .collect()
}

fn split(path: &str) -> (&str, &str) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    }
}

/// Creates one device node inside the rootfs. In a user namespace mknod is
/// not allowed, so the host's node is bind-mounted instead (as runc does).
pub fn create(root: &OwnedFd, device: &Device, bind: bool) -> Result<()> {
    let (dir, name) = split(&device.path);
    if name.is_empty() || name == ".." {
        return Err(Error::msg(format!("invalid device path {:?}", device.path)));
    }
    let parent = mounts::mkdir_all_in_root(root, dir, Leaf::Dir)?;
    let c_name = CString::new(name).map_err(|_| Error::msg("invalid device name"))?;
    if bind {
        let target = mounts::mkdir_all_in_root(root, &device.path, Leaf::File)?;
        return mounts::mount(
            Some(&device.path),
            &mounts::fd_path(&target),
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(|e| Error::io(format!("bind-mount device {}", device.path), e));
    }
    let file_type = match device.kind.as_str() {
        "c" | "u" => libc::S_IFCHR,
        "b" => libc::S_IFBLK,
        "p" => libc::S_IFIFO,
        other => {
            return Err(Error::msg(format!(
                "device {}: unknown type {other:?} (want c, u, b or p)",
                device.path
            )));
        }
    };
    let mode = file_type | (device.file_mode.unwrap_or(0o666) & 0o7777);
    let dev = libc::makedev(device.major as u32, device.minor as u32);
    // SAFETY: mknodat/fchownat with a valid dirfd and NUL-terminated name.
    unsafe {
        // A stale node (from a previous run in a rootfs without a /dev
        // tmpfs) is replaced.
        libc::unlinkat(parent.as_raw_fd(), c_name.as_ptr(), 0);
        if libc::mknodat(parent.as_raw_fd(), c_name.as_ptr(), mode, dev) != 0 {
            return Err(Error::io(
                format!("mknod {}", device.path),
                std::io::Error::last_os_error(),
            ));
        }
        // mknod is subject to the umask; set the mode exactly.
        libc::fchmodat(parent.as_raw_fd(), c_name.as_ptr(), mode & 0o7777, 0);
        if libc::fchownat(
            parent.as_raw_fd(),
            c_name.as_ptr(),
            device.uid.unwrap_or(0),
            device.gid.unwrap_or(0),
            libc::AT_SYMLINK_NOFOLLOW,
        ) != 0
        {
            return Err(Error::io(
                format!("chown {}", device.path),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/ptmx and /dev/core.
pub fn create_symlinks(root: &OwnedFd) -> Result<()> {
    let dev = mounts::mkdir_all_in_root(root, "/dev", Leaf::Dir)?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if std::path::Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let c_target = CString::new(target).expect("static string");
        let c_name = CString::new(name).expect("static string");
        // SAFETY: symlinkat with a valid dirfd and NUL-terminated strings.
        unsafe {
            if name == "ptmx" {
                libc::unlinkat(dev.as_raw_fd(), c_name.as_ptr(), 0);
            }
            if libc::symlinkat(c_target.as_ptr(), dev.as_raw_fd(), c_name.as_ptr()) != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EEXIST) {
                    return Err(Error::io(format!("symlink /dev/{name}"), err));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_devices_are_the_usual_six() {
        let names: Vec<String> = default_devices().into_iter().map(|d| d.path).collect();
        assert_eq!(
            names,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
    }

    #[test]
    fn split_paths() {
        assert_eq!(split("/dev/net/tun"), ("/dev/net", "tun"));
        assert_eq!(split("/dev/null"), ("/dev", "null"));
    }
}
