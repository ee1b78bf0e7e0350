//! File operations of COPY, ADD and WORKDIR inside an image's root
//! filesystem that no symlink in it can lead outside: every path is
//! resolved by openat2 with RESOLVE_IN_ROOT (as if the root were `/`), and
//! entries are made relative to a directory fd found that way. Sources
//! (the build context, another stage) are resolved the same way under
//! their own root.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// A root filesystem being written.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// How new entries are owned and moded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Owner {
    /// uid:gid for every entry made (docker's default: 0:0).
    pub ids: (u32, u32),
    /// `--chmod`: the permission bits of every entry made.
    pub mode: Option<u32>,
}

fn cstring(text: &[u8]) -> Result<CString> {
    CString::new(text).map_err(|_| {
        Error::msg(format!(
            "path {:?} holds a NUL byte",
            String::from_utf8_lossy(text)
        ))
    })
}

fn open_path(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open with a valid C string; returns a new fd or -1.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2(dir, path, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
fn openat2_in_root(dir: &OwnedFd, path: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    keel_image::inroot::open(dir.as_fd(), path, flags, mode)
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Splits an absolute in-root path into its parent and last name.
fn split(path: &str) -> (String, String) {
    let clean = clean_path(path);
    match clean.rsplit_once('/') {
        Some((parent, name)) => (
            if parent.is_empty() {
                "/".to_string()
            } else {
                parent.to_string()
            },
            name.to_string(),
        ),
        None => ("/".to_string(), clean),
    }
}

/// `path` made absolute and cleaned lexically (`.`, `..` and repeated
/// slashes gone; `..` stops at `/`), as docker cleans a destination.
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What a copy does with an entry below its source (path relative to the
/// source, slash-separated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Take,
    Skip,
    /// An excluded directory that may hold included entries: made only as
    /// their parent.
    Descend,
}

pub type Filter<'a> = &'a dyn Fn(&str, bool) -> Pick;

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Other,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let fd = open_path(path, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| Error::path("open", path, e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What `path` is (following symlinks within the root), if anything.
    pub fn kind(&self, path: &str) -> Result<Option<Kind>> {
        match openat2_in_root(&self.fd, path, libc::O_PATH, 0) {
            Ok(fd) => {
                let file = File::from(fd);
                let meta = file
                    .metadata()
                    .map_err(|e| Error::io(format!("stat {path}"), e))?;
                Ok(Some(if meta.is_dir() {
                    Kind::Dir
                } else {
                    Kind::Other
                }))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(Error::io(format!("look up {path}"), e)),
        }
    }

    /// Opens the directory `path`, making it and its missing parents
    /// (mode 0755, or `owner`'s mode, owned by `owner`) as `mkdir -p` would.
    pub fn mkdir_all(&self, path: &str, owner: Option<&Owner>) -> Result<OwnedFd> {
        let clean = clean_path(path);
        let mut dir = openat2_in_root(&self.fd, "/", libc::O_DIRECTORY | libc::O_RDONLY, 0)
            .map_err(|e| Error::path("open", &self.path, e))?;
        let mut so_far = String::new();
        for name in clean.split('/').filter(|n| !n.is_empty()) {
            so_far.push('/');
            so_far.push_str(name);
            match openat2_in_root(&self.fd, &so_far, libc::O_DIRECTORY | libc::O_RDONLY, 0) {
                Ok(next) => dir = next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cstring(name.as_bytes())?;
                    let mode = owner.and_then(|o| o.mode).unwrap_or(0o755);
                    // SAFETY: mkdirat with a valid dir fd and C string.
                    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
                        .or_else(|e| {
                            if e.raw_os_error() == Some(libc::EEXIST) {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        })
                        .map_err(|e| Error::io(format!("make directory {so_far}"), e))?;
                    let next =
                        openat2_in_root(&self.fd, &so_far, libc::O_DIRECTORY | libc::O_RDONLY, 0)
                            .map_err(|e| Error::io(format!("open {so_far}"), e))?;
                    if let Some(owner) = owner {
                        set_owner_mode(&next, owner.ids, owner.mode.unwrap_or(0o755))
                            .map_err(|e| Error::io(format!("chown {so_far}"), e))?;
                    } else {
                        // Not masked by the umask.
                        set_mode(&next, 0o755)
                            .map_err(|e| Error::io(format!("chmod {so_far}"), e))?;
                    }
                    dir = next;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(Error::msg(format!(
                        "{so_far} is not a directory in the image"
                    )));
                }
                Err(e) => return Err(Error::io(format!("open {so_far}"), e)),
            }
        }
        Ok(dir)
    }

    /// Copies the host tree `source` (a file, symlink or directory; never
    /// followed below its top) to `dest` in the root. A directory's
    /// contents go into `dest` (made if missing). Entries keep their mode
    /// and mtime; they are owned by `owner`.
    pub fn copy_in(
        &self,
        source: &Path,
        dest: &str,
        owner: &Owner,
        filter: Filter<'_>,
    ) -> Result<()> {
        let meta = std::fs::symlink_metadata(source).map_err(|e| Error::path("stat", source, e))?;
        if meta.is_dir() {
            let dir = self.mkdir_all(dest, Some(owner))?;
            self.copy_children(source, "", &dir, dest, owner, filter)
        } else {
            let (parent, name) = split(dest);
            let dir = self.mkdir_all(&parent, Some(owner))?;
            copy_entry(source, &meta, &dir, &name, dest, owner)
        }
    }

    fn copy_children(
        &self,
        source: &Path,
        relative: &str,
        dir: &OwnedFd,
        dest: &str,
        owner: &Owner,
        filter: Filter<'_>,
    ) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(source)
            .map_err(|e| Error::path("list", source, e))?
            .collect::<io::Result<_>>()
            .map_err(|e| Error::path("list", source, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let target = format!("{}/{}", dest.trim_end_matches('/'), name);
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::path("stat", &path, e))?;
            let rel = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            let pick = filter(&rel, meta.is_dir());
            if pick == Pick::Skip || (pick == Pick::Descend && !meta.is_dir()) {
                continue;
            }
            if meta.is_dir() {
                let sub = make_dir_at(dir, &name, &meta, owner, &target)?;
                self.copy_children(&path, &rel, &sub, &target, owner, filter)?;
                set_times(&sub, &meta)
                    .map_err(|e| Error::io(format!("set times of {target}"), e))?;
            } else {
                copy_entry(&path, &meta, dir, &name, &target, owner)?;
            }
        }
        Ok(())
    }

    /// Writes `data` as the file `dest` (a heredoc of COPY).
    pub fn write_file(&self, dest: &str, data: &[u8], owner: &Owner, mode: u32) -> Result<()> {
        let (parent, name) = split(dest);
        let dir = self.mkdir_all(&parent, Some(owner))?;
        let file = create_file_at(&dir, &name, dest)?;
        let mut file = File::from(file);
        io::Write::write_all(&mut file, data).map_err(|e| Error::io(format!("write {dest}"), e))?;
        set_owner_mode(&file, owner.ids, owner.mode.unwrap_or(mode))
            .map_err(|e| Error::io(format!("chown {dest}"), e))
    }
}

fn make_dir_at(
    dir: &OwnedFd,
    name: &str,
    meta: &std::fs::Metadata,
    owner: &Owner,
    shown: &str,
) -> Result<OwnedFd> {
    let c = cstring(name.as_bytes())?;
    let mode = owner.mode.unwrap_or(meta.permissions().mode() & 0o7777);
    // SAFETY: mkdirat with a valid dir fd and C string.
    let made = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) };
    let created = if made < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(Error::io(format!("make directory {shown}"), e));
        }
        false
    } else {
        true
    };
    // SAFETY: openat with a valid dir fd and C string; O_NOFOLLOW keeps a
    // symlink in the image from redirecting the copy.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::ELOOP) => Error::msg(format!(
                "cannot copy to {shown}: it is not a directory in the image"
            )),
            _ => Error::io(format!("open {shown}"), e),
        });
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if created {
        set_owner_mode(&fd, owner.ids, mode).map_err(|e| Error::io(format!("chown {shown}"), e))?;
    }
    Ok(fd)
}

/// Removes a non-directory entry `name` in `dir` if there is one (a COPY
/// replaces files and symlinks).
fn remove_existing(dir: &OwnedFd, c: &CString, shown: &str) -> Result<()> {
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat with a valid dir fd, C string and stat buffer.
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut stat,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Ok(());
    }
    if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(Error::msg(format!(
            "cannot copy a file to {shown}: it is a directory in the image"
        )));
    }
    // SAFETY: unlinkat with a valid dir fd and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
        .map_err(|e| Error::io(format!("replace {shown}"), e))
}

fn create_file_at(dir: &OwnedFd, name: &str, shown: &str) -> Result<OwnedFd> {
    let c = cstring(name.as_bytes())?;
    remove_existing(dir, &c, shown)?;
    // SAFETY: openat with a valid dir fd and C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("create {shown}"),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn copy_entry(
    source: &Path,
    meta: &std::fs::Metadata,
    dir: &OwnedFd,
    name: &str,
    shown: &str,
    owner: &Owner,
) -> Result<()> {
    let file_type = meta.file_type();
    let c = cstring(name.as_bytes())?;
    if file_type.is_symlink() {
        let target = std::fs::read_link(source).map_err(|e| Error::path("read link", source, e))?;
        let target = cstring(target.as_os_str().as_bytes())?;
        remove_existing(dir, &c, shown)?;
        // SAFETY: symlinkat with valid C strings and dir fd.
        check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
            .map_err(|e| Error::io(format!("make symlink {shown}"), e))?;
        // SAFETY: fchownat on the link itself.
        check(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                c.as_ptr(),
                owner.ids.0,
                owner.ids.1,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| Error::io(format!("chown {shown}"), e))?;
        let times = timespecs(meta);
        // SAFETY: utimensat on the link itself with two timespecs.
        check(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(|e| Error::io(format!("set times of {shown}"), e))?;
        return Ok(());
    }
    if file_type.is_file() {
        let mut input = File::open(source).map_err(|e| Error::path("open", source, e))?;
        let out = create_file_at(dir, name, shown)?;
        let mut out = File::from(out);
        io::copy(&mut input, &mut out)
            .map_err(|e| Error::io(format!("copy {} to {shown}", source.display()), e))?;
        let mode = owner.mode.unwrap_or(meta.mode() & 0o7777);
        set_owner_mode(&out, owner.ids, mode)
            .map_err(|e| Error::io(format!("chown {shown}"), e))?;
        set_times(&out, meta).map_err(|e| Error::io(format!("set times of {shown}"), e))?;
        return Ok(());
    }
    // Device nodes, fifos and sockets: made as they are (root only).
    remove_existing(dir, &c, shown)?;
    // SAFETY: mknodat with a valid dir fd and C string.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            meta.mode() as libc::mode_t,
            meta.rdev() as libc::dev_t,
        )
    })
    .map_err(|e| Error::io(format!("make {shown}"), e))?;
    // SAFETY: fchownat on the new node.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            owner.ids.0,
            owner.ids.1,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map_err(|e| Error::io(format!("chown {shown}"), e))
}

fn set_owner_mode(fd: &impl AsRawFd, (uid, gid): (u32, u32), mode: u32) -> io::Result<()> {
    // SAFETY: fchown/fchmod on an fd we hold.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    // chown clears setuid bits: the mode goes after it.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

fn set_mode(fd: &impl AsRawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on an fd we hold.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

fn timespecs(meta: &std::fs::Metadata) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ]
}

fn set_times(fd: &impl AsRawFd, meta: &std::fs::Metadata) -> io::Result<()> {
    let times = timespecs(meta);
    // SAFETY: futimens on an fd we hold with two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

/// Resolves `relative` under the host directory `root` as if `root` were
/// `/`: symlinks followed within it (a source of COPY in the context or in
/// another stage). None if nothing is there.
pub fn resolve_under(root: &Path, relative: &str) -> Result<Option<PathBuf>> {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<String> = relative
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .rev()
        .map(str::to_string)
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(e) => return Err(Error::path("stat", &full, e)),
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(Error::msg(format!(
                    "too many levels of symbolic links in {relative}"
                )));
            }
            let target =
                std::fs::read_link(&full).map_err(|e| Error::path("read link", &full, e))?;
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            for component in target.components().rev() {
                match component {
                    Component::Normal(name) => pending.push(name.to_string_lossy().into_owned()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            resolved = candidate;
        }
    }
    Ok(Some(root.join(resolved)))
}
