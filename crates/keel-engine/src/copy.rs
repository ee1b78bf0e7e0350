//! Copies a directory tree keeping what a volume's copy-up must keep:
//! files, directories and symlinks with their mode, owner and mtime
//! (symlinks are copied as links, never followed), FIFOs and device nodes
//! recreated.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Copies the contents of `from` into the existing directory `to`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::metadata(from).map_err(|e| Error::io(format!("stat {}", from.display()), e))?;
    copy_dir_contents(from, to)?;
    apply_metadata(to, &meta, false)
}

fn copy_dir_contents(from: &Path, to: &Path) -> Result<()> {
    let entries =
        fs::read_dir(from).map_err(|e| Error::io(format!("list {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("list {}", from.display()), e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&source)
            .map_err(|e| Error::io(format!("stat {}", source.display()), e))?;
        let kind = meta.file_type();
        let context = |what: &str, e| Error::io(format!("{what} {}", target.display()), e);
        if kind.is_dir() {
            fs::create_dir(&target).map_err(|e| context("create", e))?;
            copy_dir_contents(&source, &target)?;
            apply_metadata(&target, &meta, false)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(|e| context("read link for", e))?;
            std::os::unix::fs::symlink(&link, &target).map_err(|e| context("create", e))?;
            apply_metadata(&target, &meta, true)?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(|e| context("copy to", e))?;
            apply_metadata(&target, &meta, false)?;
        } else if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
            let c = CString::new(target.as_os_str().as_bytes()).map_err(|_| {
                Error::invalid(format!("path {} holds a NUL byte", target.display()))
            })?;
            // SAFETY: mknod with a valid C string and the source's mode/rdev.
            if unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) } != 0 {
                return Err(context("create", std::io::Error::last_os_error()));
            }
            apply_metadata(&target, &meta, false)?;
        }
        // Sockets are not copied (they mean nothing without their server).
    }
    Ok(())
}

fn apply_metadata(path: &Path, meta: &fs::Metadata, symlink: bool) -> Result<()> {
    let context = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| context("chown", e))?;
    if !symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| context("chmod", e))?;
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} holds a NUL byte", path.display())))?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: utimensat with a valid C string and two timespecs.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    Ok(())
}

/// Bytes in the files below `path` (not following symlinks).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.size();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_dirs_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::write(from.join("sub/file"), b"data").unwrap();
        fs::set_permissions(from.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        copy_tree(&from, &to).unwrap();
        assert_eq!(fs::read(to.join("sub/file")).unwrap(), b"data");
        assert_eq!(
            fs::metadata(to.join("sub/file")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_link(to.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
    }
}
