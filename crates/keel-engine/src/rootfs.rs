//! A container's root filesystem: an overlay of the image's snapshots
//! (read-only, topmost first) under the container's writable layer, and
//! reads of files inside it that cannot be led out of it by symlinks.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mounts the overlay at `target`: `lower` (topmost first) under `upper`.
pub fn mount_overlay(lower: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    if lower.is_empty() {
        return Err(Error::msg("an image without layers has no root filesystem"));
    }
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let lowerdir = lower
        .iter()
        .map(|p| escape_overlay_path(p))
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        escape_overlay_path(upper),
        escape_overlay_path(work)
    );
    if data.len() >= 4096 {
        return Err(Error::msg(format!(
            "the image has too many layers for one overlay mount ({} layers)",
            lower.len()
        )));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        Error::io(
            format!("mount the overlay at {}", target.display()),
            e.into(),
        )
    })
}

/// Overlay option values may not hold `:` or `,` unescaped.
fn escape_overlay_path(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Unmounts `target` if it is mounted (detaching it if busy).
pub fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io(format!("unmount {}", target.display()), e.into())),
    }
}

/// Reads `path` (absolute, in the container) from the root filesystem at
/// `root`, resolving symlinks as if `root` were `/` (openat2
/// RESOLVE_IN_ROOT). None if it does not exist; at most `limit` bytes.
pub fn read_in_root(root: &Path, path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let Some(fd) = open_in_root(root, path, libc::O_RDONLY)? else {
        return Ok(None);
    };
    let file = std::fs::File::from(fd);
    let mut data = Vec::new();
    file.take(limit)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("read {path} in {}", root.display()), e))?;
    Ok(Some(data))
}

/// Opens the directory `path` of the root filesystem at `root` (O_PATH),
/// resolving symlinks as if `root` were `/`; None if there is none.
pub fn open_dir_in_root(root: &Path, path: &str) -> Result<Option<OwnedFd>> {
    match open_in_root(root, path, libc::O_PATH | libc::O_DIRECTORY) {
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        other => other,
    }
}

fn open_in_root(root: &Path, path: &str, flags: i32) -> Result<Option<OwnedFd>> {
    let root_fd = open_dir(root)?;
    if path.contains('\0') {
        return Err(Error::invalid(format!("path {path:?} holds a NUL byte")));
    }
    match keel_image::inroot::open(root_fd.as_fd(), path, flags, 0) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            Some(libc::ENOTDIR) if flags & libc::O_DIRECTORY == 0 => Ok(None),
            _ => Err(Error::io(format!("open {path} in {}", root.display()), e)),
        },
    }
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} holds a NUL byte", path.display())))?;
    // SAFETY: open with a valid C string; returns a new fd or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("open {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a file of an image without mounting it: the topmost snapshot of
/// `layers` (topmost first) that has `path` decides; a whiteout there, or
/// an opaque or whited-out directory on the way, means it is not there.
/// Symlinks in the image are followed only within the layer stack's
/// notion of `/` by re-resolving from the top (at most 8 hops).
pub fn read_image_file(layers: &[PathBuf], path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let mut wanted = crate::spec::clean_path(path);
    for _ in 0..8 {
        match find_in_layers(layers, &wanted)? {
            Found::Missing => return Ok(None),
            Found::File(layer) => return read_in_root(&layer, &wanted, limit),
            Found::Symlink(target) => {
                let parent = Path::new(&wanted)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/".into());
                wanted = if target.starts_with('/') {
                    crate::spec::clean_path(&target)
                } else {
                    crate::spec::clean_path(&format!("{parent}/{target}"))
                };
            }
        }
    }
    Ok(None)
}

enum Found {
    Missing,
    File(PathBuf),
    Symlink(String),
}

fn find_in_layers(layers: &[PathBuf], path: &str) -> Result<Found> {
    use std::os::unix::fs::FileTypeExt;
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for layer in layers {
        let mut dir = layer.clone();
        let mut opaque = false;
        for (i, component) in components.iter().enumerate() {
            let here = dir.join(component);
            let Ok(meta) = std::fs::symlink_metadata(&here) else {
                // Not in this layer; an opaque directory above hides the
                // layers below.
                if opaque {
                    return Ok(Found::Missing);
                }
                break;
            };
            if meta.file_type().is_char_device() && meta_rdev(&meta) == 0 {
                return Ok(Found::Missing);
            }
            if i + 1 == components.len() {
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&here)
                        .map_err(|e| Error::io(format!("read link {}", here.display()), e))?;
                    return Ok(Found::Symlink(target.display().to_string()));
                }
                return Ok(if meta.is_file() {
                    Found::File(layer.clone())
                } else {
                    Found::Missing
                });
            }
            if !meta.is_dir() {
                // A file (or a link) where a directory should be hides
                // everything below it.
                return Ok(Found::Missing);
            }
            opaque |= is_opaque(&here);
            dir = here;
        }
    }
    Ok(Found::Missing)
}

fn meta_rdev(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.rdev()
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 2];
    // SAFETY: lgetxattr with valid C strings and a buffer of its size.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stay_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("etc/link")).unwrap();
        std::os::unix::fs::symlink("../../../../../../etc/shadow", root.join("etc/escape"))
            .unwrap();
        assert_eq!(
            read_in_root(&root, "/etc/link", 1 << 20).unwrap().unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        // Climbing out lands on the root's own /etc/shadow: not there.
        assert_eq!(read_in_root(&root, "/etc/escape", 1 << 20).unwrap(), None);
        assert_eq!(read_in_root(&root, "/etc/group", 1 << 20).unwrap(), None);
        assert_eq!(
            read_in_root(&root, "/etc/passwd", 4).unwrap().unwrap(),
            b"root"
        );
    }

    #[test]
    fn reads_image_files_through_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(lower.join("etc/passwd"), b"old").unwrap();
        std::fs::write(lower.join("etc/group"), b"groups").unwrap();
        std::fs::write(upper.join("etc/passwd"), b"new").unwrap();
        std::os::unix::fs::symlink("group", upper.join("etc/group-link")).unwrap();
        let layers = [upper.clone(), lower.clone()];
        assert_eq!(
            read_image_file(&layers, "/etc/passwd", 100)
                .unwrap()
                .unwrap(),
            b"new"
        );
        assert_eq!(
            read_image_file(&layers, "/etc/group", 100)
                .unwrap()
                .unwrap(),
            b"groups"
        );
        assert_eq!(
            read_image_file(&layers, "/etc/group-link", 100)
                .unwrap()
                .unwrap(),
            b"groups"
        );
        assert_eq!(read_image_file(&layers, "/etc/none", 100).unwrap(), None);
    }
}
