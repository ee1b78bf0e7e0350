//! Layers unpacked safely into snapshot directories.
//!
//! A layer is a tar stream (plain, gzip or zstd) of changes. [`unpack`]
//! writes it into an empty snapshot directory that becomes an overlayfs
//! lower directory, so OCI whiteouts are turned into overlay's forms: a
//! `.wh.<name>` entry becomes a character device 0:0 named `<name>`, and
//! `.wh..wh..opq` in a directory sets `trusted.overlay.opaque=y` on it.
//!
//! Nothing is ever written outside the snapshot: entry paths are cleaned
//! lexically (a leading `/` is dropped, `..` that climbs above the root is
//! refused, as docker's `pkg/archive` does), parent directories are opened
//! with `openat2(RESOLVE_IN_ROOT)` so a symlink met on the way resolves as
//! if the snapshot were `/` (containerd's `fs.RootPath` semantics), and
//! every entry is created with an `*at` syscall relative to that parent,
//! never following a symlink in its last component.
//!
//! A layer above others is unpacked with their snapshots as
//! [`UnpackOptions::parents`]: an entry's parent path is then resolved
//! through the merged view overlayfs will show (containerd applies a layer
//! on the mounted stack for the same reason), so `lib/x` over a base with
//! `lib -> usr/lib` lands at `usr/lib/x` instead of making a `lib/`
//! directory that would hide the symlink and all of usr/lib behind it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::digest::{Digest, Digester};
use crate::error::{Error, Result};

/// Bytes read from the source and the decompressor at a time.
const BUFFER_SIZE: usize = 256 * 1024;
/// At most this many bytes of headers (PAX records, GNU long names) are
/// read for one entry: the tar parser holds them in memory.
const METADATA_LIMIT: u64 = 16 * 1024 * 1024;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Detects the compression from the first bytes (gzip `1f 8b`, zstd
/// `28 b5 2f fd`, else none).
pub fn detect(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// What [`unpack`] made of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream, trailing bytes included.
    pub diff_id: Digest,
    /// Bytes of regular file data written.
    pub size: u64,
}

/// How far one layer may expand when decompressed: a small blob that
/// unpacks to gigabytes (a decompression bomb) is refused once it passes
/// `max_ratio` times its compressed size (and `ratio_floor`), or
/// `max_bytes` in all. 0 turns a bound off. The defaults can be changed
/// with `KEEL_LAYER_MAX_RATIO` and `KEEL_LAYER_MAX_SIZE` (see
/// [`ExpansionLimit::from_env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpansionLimit {
    pub max_bytes: u64,
    pub max_ratio: u64,
    /// Expansion up to this many bytes is allowed whatever the ratio.
    pub ratio_floor: u64,
}

impl Default for ExpansionLimit {
    fn default() -> Self {
        ExpansionLimit {
            max_bytes: 64 << 30,
            max_ratio: 100,
            ratio_floor: 1 << 30,
        }
    }
}

impl ExpansionLimit {
    /// The defaults, with `KEEL_LAYER_MAX_RATIO` (a number) and
    /// `KEEL_LAYER_MAX_SIZE` (bytes, or with a k/m/g/t suffix) over them.
    pub fn from_env() -> Result<ExpansionLimit> {
        let mut limit = ExpansionLimit::default();
        if let Ok(text) = std::env::var("KEEL_LAYER_MAX_RATIO") {
            limit.max_ratio = text.trim().parse().map_err(|_| {
                Error::msg(format!(
                    "KEEL_LAYER_MAX_RATIO={text:?} is not a whole number"
                ))
            })?;
        }
        if let Ok(text) = std::env::var("KEEL_LAYER_MAX_SIZE") {
            limit.max_bytes = parse_bytes(&text).ok_or_else(|| {
                Error::msg(format!(
                    "KEEL_LAYER_MAX_SIZE={text:?} is not a size (e.g. 20g, 512m, 0 for none)"
                ))
            })?;
        }
        Ok(limit)
    }

    /// The error for a stream that expanded to `expanded` bytes from
    /// `compressed`, if that is too far.
    fn check(&self, compressed: u64, expanded: u64) -> io::Result<()> {
        let over_size = self.max_bytes > 0 && expanded > self.max_bytes;
        let over_ratio = self.max_ratio > 0
            && expanded > self.ratio_floor
            && expanded > compressed.saturating_mul(self.max_ratio);
        if !(over_size || over_ratio) {
            return Ok(());
        }
        let why = if over_size {
            format!("more than {} bytes (KEEL_LAYER_MAX_SIZE)", self.max_bytes)
        } else {
            format!(
                "more than {} times its compressed size of {compressed} bytes (KEEL_LAYER_MAX_RATIO)",
                self.max_ratio
            )
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the layer expands to {why}: refused as a possible decompression bomb \
                 (set the limit higher, or 0 for none, if the image is trusted)"
            ),
        ))
    }
}

/// `1048576`, `512k`, `20m`, `2g`, `1t` (binary units).
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let text = text.strip_suffix('b').unwrap_or(&text);
    let (number, shift) = match text.char_indices().last()? {
        (i, 'k') => (&text[..i], 10),
        (i, 'm') => (&text[..i], 20),
        (i, 'g') => (&text[..i], 30),
        (i, 't') => (&text[..i], 40),
        _ => (text, 0),
    };
    number.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Counts what passes through it into a shared cell.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed stream, failing once it expands past the limit.
struct Bounded<R> {
    inner: R,
    compressed: Rc<Cell<u64>>,
    expanded: u64,
    limit: ExpansionLimit,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.expanded += n as u64;
        self.limit.check(self.compressed.get(), self.expanded)?;
        Ok(n)
    }
}

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Keep uid/gid from the tar (root), or leave everything owned by the
    /// caller.
    pub keep_ownership: bool,
    /// Create device nodes (root), or skip them with a warning.
    pub allow_devices: bool,
    /// The snapshots of the layers below this one, topmost first (empty
    /// for a base layer). Entry paths are resolved through the merged view
    /// of `dest` over them, as overlayfs will show it: a symlink in a lower
    /// layer is followed (`lib -> usr/lib` then `lib/x` lands at
    /// `usr/lib/x`), and a directory met only below is created in `dest`
    /// with its mode and owner (a copy-up). Nothing is written into them.
    pub parents: Vec<PathBuf>,
    /// How far the layer may expand (the defaults unless set).
    pub expansion: ExpansionLimit,
}

/// Unpacks one layer (compressed or not, detected) from `reader` into
/// `dest` (an existing, empty directory: the snapshot), streaming, and
/// returns the diff id computed while reading.
///
/// On error `dest` may hold a partial tree: the caller removes it. Nothing
/// is ever written outside `dest`.
pub fn unpack(reader: impl Read, dest: &Path, options: &UnpackOptions) -> Result<Unpacked> {
    let compressed = Rc::new(Cell::new(0));
    let source = Counted {
        inner: reader,
        count: Rc::clone(&compressed),
    };
    let decoded = decompressed(source)?;
    let decoded = Bounded {
        inner: decoded,
        compressed,
        expanded: 0,
        limit: options.expansion,
    };
    let limit = Rc::new(Cell::new(u64::MAX));
    let limited = Limited {
        inner: BufReader::with_capacity(BUFFER_SIZE, Digester::new(decoded)),
        remaining: Rc::clone(&limit),
    };
    let mut archive = tar::Archive::new(limited);
    let mut unpacker = Unpacker::new(dest, options)?;
    {
        let mut entries = archive
            .entries()
            .map_err(|e| Error::io("reading the layer's tar stream", e))?;
        loop {
            limit.set(METADATA_LIMIT);
            let next = entries.next();
            limit.set(u64::MAX);
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| Error::io("reading the layer's tar stream", e))?;
            unpacker.entry(&mut entry)?;
            // Read what the entry's handler left (data of entries that carry
            // none for us) here, so the parser's skip stays under the limit.
            io::copy(&mut entry, &mut io::sink())
                .map_err(|e| Error::io("reading the layer's tar stream", e))?;
        }
    }
    unpacker.finish()?;
    // The diff id covers the whole decompressed stream, including what
    // follows the end-of-archive blocks.
    let mut rest = archive.into_inner().inner;
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| Error::io("reading the end of the layer", e))?;
    let (diff_id, _) = rest.into_inner().finish();
    Ok(Unpacked {
        diff_id,
        size: unpacker.size,
    })
}

/// `reader`'s data, decompressed if its first bytes say gzip or zstd
/// ([`detect`]), as it is otherwise.
pub fn decompressed<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut reader = reader;
    let mut prefix = [0u8; 4];
    let prefix_len =
        read_prefix(&mut reader, &mut prefix).map_err(|e| Error::io("reading the stream", e))?;
    let source = io::Cursor::new(prefix[..prefix_len].to_vec()).chain(reader);
    Ok(match detect(&prefix[..prefix_len]) {
        Compression::None => Box::new(source),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(
            BufReader::with_capacity(BUFFER_SIZE, source),
        )),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(BUFFER_SIZE, source))
                .map_err(|e| Error::io("starting the zstd decoder", e))?,
        ),
    })
}

/// Reads up to `prefix.len()` bytes, fewer only at the end of the stream.
fn read_prefix(reader: &mut impl Read, prefix: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A reader that fails once `remaining` bytes were read: it bounds what the
/// tar parser reads (and buffers) between two entries.
struct Limited<R> {
    inner: R,
    remaining: Rc<Cell<u64>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.remaining.get();
        if remaining == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tar entry headers longer than {METADATA_LIMIT} bytes"),
            ));
        }
        let len = buf
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        if remaining != u64::MAX {
            self.remaining.set(remaining - n as u64);
        }
        Ok(n)
    }
}

/// The metadata of an entry that is applied after it is created.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// A directory whose times are set once everything in it is written.
struct DirTimes {
    components: Vec<Vec<u8>>,
    mtime: libc::timespec,
}

struct Unpacker<'a> {
    root: Rc<OwnedFd>,
    /// The roots of the snapshots below, topmost first (O_PATH).
    parents: Vec<Rc<OwnedFd>>,
    options: &'a UnpackOptions,
    /// The last parent directory opened, by its cleaned components: entries
    /// of one directory usually follow each other. Dropped whenever
    /// something is removed, since that may change what a path resolves to.
    parent_cache: Option<(Vec<Vec<u8>>, Dir)>,
    dirs: Vec<DirTimes>,
    buffer: Vec<u8>,
    size: u64,
}

impl<'a> Unpacker<'a> {
    fn new(dest: &Path, options: &'a UnpackOptions) -> Result<Unpacker<'a>> {
        let path = CString::new(dest.as_os_str().as_bytes())
            .map_err(|_| Error::msg(format!("snapshot path {dest:?} contains a NUL byte")))?;
        let root = sys::open(&path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .map_err(|e| Error::io(format!("opening snapshot directory {}", dest.display()), e))?;
        let mut parents = Vec::with_capacity(options.parents.len());
        for parent in &options.parents {
            let path = CString::new(parent.as_os_str().as_bytes())
                .map_err(|_| Error::msg(format!("snapshot path {parent:?} contains a NUL byte")))?;
            let fd = sys::open(&path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC).map_err(
                |e| {
                    Error::io(
                        format!("opening parent snapshot directory {}", parent.display()),
                        e,
                    )
                },
            )?;
            parents.push(Rc::new(fd));
        }
        Ok(Unpacker {
            root: Rc::new(root),
            parents,
            options,
            parent_cache: None,
            dirs: Vec::new(),
            buffer: vec![0; BUFFER_SIZE],
            size: 0,
        })
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let refuse = |reason: &str| Error::UnsafeEntry {
            entry: shown.clone(),
            reason: reason.to_string(),
        };
        let mut kind = entry.header().entry_type();
        // A v7 regular file ('\0' type) whose name ends in '/' is a
        // directory (as Go's archive/tar reads it).
        if entry.header().as_bytes()[156] == 0 && raw_path.ends_with(b"/") {
            kind = tar::EntryType::Directory;
        }
        if kind == tar::EntryType::XGlobalHeader {
            tracing::debug!("ignoring a PAX global header in the layer");
            return Ok(());
        }
        let components = clean(&raw_path).map_err(refuse)?;
        let Some((name, parents)) = components.split_last() else {
            tracing::debug!(entry = %shown, "ignoring the layer's root entry");
            return Ok(());
        };
        if components[0].starts_with(WHITEOUT_META_PREFIX) && components[..] != [WHITEOUT_OPAQUE] {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the tree.
            tracing::debug!(entry = %shown, "ignoring aufs metadata");
            return Ok(());
        }
        let context = |what: &str| format!("layer entry {shown:?}: {what}");

        if name.starts_with(WHITEOUT_PREFIX) {
            let parent = self
                .parent(parents)
                .map_err(|e| Error::io(context("opening its parent directory"), e))?;
            if name == WHITEOUT_OPAQUE {
                return sys::set_xattr(&sys::proc_path(parent.as_fd(), None), OPAQUE_XATTR, b"y")
                    .map_err(|e| Error::io(context("marking the directory opaque"), e));
            }
            let target = &name[WHITEOUT_PREFIX.len()..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err(refuse("invalid whiteout name"));
            }
            let target = cstring(target).map_err(refuse)?;
            self.remove_all(parent.as_fd(), &target)
                .map_err(|e| Error::io(context("removing the whited-out path"), e))?;
            sys::mknodat(parent.as_fd(), &target, libc::S_IFCHR, 0)
                .map_err(|e| Error::io(context("creating the overlay whiteout"), e))?;
            if self.options.keep_ownership {
                let (uid, gid) = ownership(entry).map_err(refuse)?;
                sys::fchownat(parent.as_fd(), &target, uid, gid)
                    .map_err(|e| Error::io(context("changing the whiteout's owner"), e))?;
            }
            return Ok(());
        }

        let cname = cstring(name).map_err(refuse)?;
        let meta = metadata(entry).map_err(refuse)?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let parent = self
                    .parent(parents)
                    .map_err(|e| Error::io(context("opening its parent directory"), e))?;
                self.replace(parent.as_fd(), &cname, false)
                    .map_err(|e| Error::io(context("replacing what was there"), e))?;
                let fd = sys::openat(
                    parent.as_fd(),
                    &cname,
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600,
                )
                .map_err(|e| Error::io(context("creating the file"), e))?;
                let mut file = File::from(fd);
                let expected = entry.size();
                let written = copy(entry, &mut file, &mut self.buffer)
                    .map_err(|e| Error::io(context("writing the file"), e))?;
                if written != expected {
                    return Err(Error::io(
                        context("reading the file's data"),
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the tar stream ends after {written} of {expected} bytes"),
                        ),
                    ));
                }
                self.size += written;
                self.apply(Node::Fd(file.as_fd()), &meta)
                    .map_err(|e| Error::io(context("setting its metadata"), e))?;
                sys::futimens(file.as_fd(), meta.mtime)
                    .map_err(|e| Error::io(context("setting its times"), e))?;
            }
            tar::EntryType::Directory => {
                let parent = self
                    .parent(parents)
                    .map_err(|e| Error::io(context("opening its parent directory"), e))?;
                self.replace(parent.as_fd(), &cname, true)
                    .map_err(|e| Error::io(context("replacing what was there"), e))?;
                match sys::mkdirat(parent.as_fd(), &cname, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(Error::io(context("creating the directory"), e)),
                }
                let dir = sys::openat(
                    parent.as_fd(),
                    &cname,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0,
                )
                .map_err(|e| Error::io(context("opening the directory"), e))?;
                self.apply(Node::Fd(dir.as_fd()), &meta)
                    .map_err(|e| Error::io(context("setting its metadata"), e))?;
                // Where it is in the snapshot (not where the entry's path
                // names it, when that leads through a lower layer's symlink).
                let mut at = parent.path.to_vec();
                at.push(name.clone());
                self.dirs.push(DirTimes {
                    components: at,
                    mtime: meta.mtime,
                });
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|target| target.into_owned())
                    .ok_or_else(|| refuse("symlink without a target"))?;
                let target = cstring(&target).map_err(refuse)?;
                let parent = self
                    .parent(parents)
                    .map_err(|e| Error::io(context("opening its parent directory"), e))?;
                self.replace(parent.as_fd(), &cname, false)
                    .map_err(|e| Error::io(context("replacing what was there"), e))?;
                sys::symlinkat(&target, parent.as_fd(), &cname)
                    .map_err(|e| Error::io(context("creating the symlink"), e))?;
                self.finish_at(parent.as_fd(), &cname, &meta, true)
                    .map_err(|e| Error::io(context("setting its metadata"), e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|target| target.into_owned())
                    .ok_or_else(|| refuse("hard link without a target"))?;
                let target_components = clean(&target).map_err(|reason| {
                    refuse(&format!(
                        "hard link target {:?} {reason}",
                        String::from_utf8_lossy(&target)
                    ))
                })?;
                let Some((target_name, target_parents)) = target_components.split_last() else {
                    return Err(refuse("hard link to the root directory"));
                };
                let target_name = cstring(target_name).map_err(refuse)?;
                let parent = self
                    .parent(parents)
                    .map_err(|e| Error::io(context("opening its parent directory"), e))?;
                self.replace(parent.as_fd(), &cname, false)
                    .map_err(|e| Error::io(context("replacing what was there"), e))?;
                let target_parent = self
                    .resolve_dir(target_parents, false)
                    .map_err(|e| Error::io(context("opening the link target's directory"), e))?;
                // linkat without AT_SYMLINK_FOLLOW links a symlink itself,
                // never what it points to.
                sys::linkat(target_parent.as_fd(), &target_name, parent.as_fd(), &cname)
                    .map_err(|e| Error::io(context("creating the hard link"), e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let device = if kind == tar::EntryType::Fifo {
                    0
                } else {
                    if !self.options.allow_devices {
                        tracing::warn!(entry = %shown, "skipping a device node");
                        return Ok(());
                    }
                    let header = entry.header();
                    let major = header.device_major().ok().flatten();
                    let minor = header.device_minor().ok().flatten();
                    let (Some(major), Some(minor)) = (major, minor) else {
                        return Err(refuse("device without valid numbers"));
                    };
                    libc::makedev(major, minor)
                };
                let parent = self
                    .parent(parents)
                    .map_err(|e| Error::io(context("opening its parent directory"), e))?;
                self.replace(parent.as_fd(), &cname, false)
                    .map_err(|e| Error::io(context("replacing what was there"), e))?;
                sys::mknodat(parent.as_fd(), &cname, file_type | 0o600, device)
                    .map_err(|e| Error::io(context("creating the node"), e))?;
                self.finish_at(parent.as_fd(), &cname, &meta, false)
                    .map_err(|e| Error::io(context("setting its metadata"), e))?;
            }
            other => {
                return Err(refuse(&format!(
                    "unsupported tar entry type {:?}",
                    char::from(other.as_byte())
                )));
            }
        }
        Ok(())
    }

    /// Sets directory times, deepest first, once nothing more is written
    /// into them.
    fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components.len()));
        for dir in &dirs {
            let Some((name, parents)) = dir.components.split_last() else {
                continue;
            };
            let shown = String::from_utf8_lossy(&dir.components.join(&b'/')).into_owned();
            // A later entry may have removed or replaced it: skip those.
            let parent = match self.resolve_in_dest(parents, false) {
                Ok(parent) => parent,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    continue;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("layer entry {shown:?}: opening its parent directory"),
                        e,
                    ));
                }
            };
            let name = CString::new(name.clone()).expect("checked for NUL when unpacked");
            match sys::utimensat(parent.as_fd(), &name, dir.mtime) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("layer entry {shown:?}: setting its times"),
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Ownership, xattrs and mode (in that order: chown clears setuid bits
    /// and file capabilities).
    fn apply(&self, node: Node<'_>, meta: &Meta) -> io::Result<()> {
        if self.options.keep_ownership {
            match node {
                Node::Fd(fd) => sys::fchown(fd, meta.uid, meta.gid)?,
                Node::At { parent, name, .. } => sys::fchownat(parent, name, meta.uid, meta.gid)?,
            }
        }
        for (key, value) in &meta.xattrs {
            let result = match node {
                Node::Fd(fd) => sys::fsetxattr(fd, key, value),
                Node::At { parent, name, .. } => {
                    sys::lsetxattr(&sys::proc_path(parent, Some(name)), key, value)
                }
            };
            if let Err(e) = result {
                let privileged = key.as_bytes().starts_with(b"security.")
                    || key.as_bytes().starts_with(b"trusted.");
                match e.raw_os_error() {
                    Some(libc::ENOTSUP) => {
                        tracing::warn!(xattr = ?key, "ignoring an xattr the filesystem does not support");
                    }
                    Some(libc::EPERM) if privileged => {
                        tracing::warn!(xattr = ?key, "ignoring an xattr we may not set");
                    }
                    _ => return Err(e),
                }
            }
        }
        match node {
            Node::Fd(fd) => sys::fchmod(fd, meta.mode)?,
            Node::At { symlink: true, .. } => {}
            Node::At { parent, name, .. } => sys::fchmodat(parent, name, meta.mode)?,
        }
        Ok(())
    }

    fn finish_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        symlink: bool,
    ) -> io::Result<()> {
        self.apply(
            Node::At {
                parent,
                name,
                symlink,
            },
            meta,
        )?;
        sys::utimensat(parent, name, meta.mtime)
    }

    /// The parent directory of an entry, created (0755) where missing.
    fn parent(&mut self, components: &[Vec<u8>]) -> io::Result<Dir> {
        if let Some((cached, dir)) = &self.parent_cache
            && cached[..] == *components
        {
            return Ok(dir.clone());
        }
        let dir = self.resolve_dir(components, true)?;
        self.parent_cache = Some((components.to_vec(), dir.clone()));
        Ok(dir)
    }

    /// Opens a directory by its cleaned components: in the snapshot alone
    /// for a base layer, else through the merged view over the parents.
    fn resolve_dir(&mut self, components: &[Vec<u8>], create: bool) -> io::Result<Dir> {
        if self.parents.is_empty() {
            let fd = self.resolve_in_dest(components, create)?;
            Ok(Dir {
                fd,
                path: components.into(),
            })
        } else {
            self.resolve_merged(components, create)
        }
    }

    /// Opens a directory by its cleaned components, resolving symlinks on
    /// the way as if the snapshot were the root, and creating missing ones
    /// when `create`.
    fn resolve_in_dest(&self, components: &[Vec<u8>], create: bool) -> io::Result<Rc<OwnedFd>> {
        if components.is_empty() {
            return Ok(Rc::clone(&self.root));
        }
        let path = join(components);
        match sys::open_in_root(self.root.as_fd(), &path) {
            Ok(fd) => return Ok(Rc::new(fd)),
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut current = Rc::clone(&self.root);
        for end in 1..=components.len() {
            let prefix = join(&components[..end]);
            match sys::open_in_root(self.root.as_fd(), &prefix) {
                Ok(fd) => current = Rc::new(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = CString::new(components[end - 1].clone())
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                    match sys::mkdirat(current.as_fd(), &name, 0o755) {
                        Ok(()) => sys::fchmodat(current.as_fd(), &name, 0o755)?,
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            // A symlink whose target (inside the snapshot)
                            // does not exist: refused, not created.
                            return Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!(
                                    "{:?} is a symlink to a missing directory",
                                    String::from_utf8_lossy(prefix.to_bytes())
                                ),
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                    current = Rc::new(sys::open_in_root(self.root.as_fd(), &prefix)?);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(current)
    }

    /// Resolves a directory path through the merged view of the snapshot
    /// over its parents, the way overlayfs will look it up once they are
    /// stacked: each component is looked up in the snapshot, then in each
    /// parent in order, and the first layer that has the name decides (a
    /// whiteout there means it does not exist). A symlink, in whichever
    /// layer, is followed (absolute targets from the root, `..` clamped at
    /// the root); a directory only a parent has is copied up (created in
    /// the snapshot with its mode and owner) when `create`, else the lookup
    /// fails with ENOENT; a missing one is created (0755) when `create`.
    ///
    /// Parents are only ever read, one name at a time without following
    /// symlinks; the directory returned is reopened with RESOLVE_IN_ROOT.
    fn resolve_merged(&mut self, components: &[Vec<u8>], create: bool) -> io::Result<Dir> {
        let root_lower = if is_opaque(self.root.as_fd()) {
            Vec::new()
        } else {
            self.parents.clone()
        };
        let mut levels = vec![Level {
            name: Vec::new(),
            dest: Rc::clone(&self.root),
            lower: root_lower,
        }];
        let mut pending: VecDeque<Vec<u8>> = components.iter().cloned().collect();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            match &name[..] {
                b"" | b"." => continue,
                b".." => {
                    if levels.len() > 1 {
                        levels.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cname = CString::new(name.clone())
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let level = levels.last().expect("the root level is never popped");
            let next = match lookup(level, &cname)? {
                Found::Symlink(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    if target.starts_with(b"/") {
                        levels.truncate(1);
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        pending.push_front(part.to_vec());
                    }
                    continue;
                }
                Found::Other => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                Found::Dir {
                    dest: Some(dest),
                    lower,
                    ..
                } => Level {
                    name,
                    dest: Rc::new(dest),
                    lower,
                },
                Found::Dir { .. } | Found::Missing if !create => {
                    return Err(io::Error::from_raw_os_error(libc::ENOENT));
                }
                Found::Dir {
                    dest: None,
                    stat,
                    lower,
                } => {
                    let dest = sys::mkdir_open(level.dest.as_fd(), &cname, 0o700)?;
                    if self.options.keep_ownership {
                        sys::fchown(dest.as_fd(), stat.st_uid, stat.st_gid)?;
                    }
                    sys::fchmod(dest.as_fd(), stat.st_mode & 0o7777)?;
                    let mut at: Vec<Vec<u8>> = levels[1..].iter().map(|l| l.name.clone()).collect();
                    at.push(name.clone());
                    self.dirs.push(DirTimes {
                        components: at,
                        mtime: libc::timespec {
                            tv_sec: stat.st_mtime,
                            tv_nsec: stat.st_mtime_nsec,
                        },
                    });
                    Level {
                        name,
                        dest: Rc::new(dest),
                        lower,
                    }
                }
                Found::Missing => {
                    let dest = sys::mkdir_open(level.dest.as_fd(), &cname, 0o755)?;
                    sys::fchmod(dest.as_fd(), 0o755)?;
                    Level {
                        name,
                        dest: Rc::new(dest),
                        lower: Vec::new(),
                    }
                }
            };
            levels.push(next);
        }
        let path: Vec<Vec<u8>> = levels[1..].iter().map(|l| l.name.clone()).collect();
        let fd = if path.is_empty() {
            Rc::clone(&self.root)
        } else {
            // The path holds no symlink in the snapshot: this reopens what
            // the walk reached, and stays inside it whatever happens.
            Rc::new(sys::open_in_root(self.root.as_fd(), &join(&path))?)
        };
        Ok(Dir {
            fd,
            path: path.into(),
        })
    }

    /// Removes what is at `name` unless it is a directory and `keep_dir`.
    fn replace(&mut self, parent: BorrowedFd<'_>, name: &CStr, keep_dir: bool) -> io::Result<()> {
        match sys::file_type_at(parent, name)? {
            None => Ok(()),
            Some(libc::S_IFDIR) if keep_dir => Ok(()),
            Some(_) => self.remove_all(parent, name),
        }
    }

    /// Removes `name` in `parent` and, for a directory, all it holds,
    /// without following symlinks and without recursion.
    fn remove_all(&mut self, parent: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        self.parent_cache = None;
        match sys::unlinkat(parent, name, 0) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            Err(e) => return Err(e),
        }
        // (directory fd, its name in the directory below it on the stack)
        let mut stack: Vec<(OwnedFd, CString)> = vec![(sys::open_dir(parent, name)?, name.into())];
        while let Some((dir, _)) = stack.last() {
            let mut subdir = None;
            for child in sys::read_dir(dir.as_fd())? {
                match sys::unlinkat(dir.as_fd(), &child, 0) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                        subdir = Some(child);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            match subdir {
                Some(child) => {
                    let fd = sys::open_dir(dir.as_fd(), &child)?;
                    stack.push((fd, child));
                }
                None => {
                    let (_, name) = stack.pop().expect("the loop saw an element");
                    let above = stack.last().map_or(parent, |(fd, _)| fd.as_fd());
                    sys::unlinkat(above, &name, libc::AT_REMOVEDIR)?;
                }
            }
        }
        Ok(())
    }
}

/// A directory an entry goes into: open, and where it is in the snapshot.
#[derive(Clone)]
struct Dir {
    fd: Rc<OwnedFd>,
    /// Its components from the snapshot's root, symlinks resolved when the
    /// layer has parents (as given, for a base layer).
    path: Rc<[Vec<u8>]>,
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Symlinks followed at most while resolving one path (Linux's limit).
const MAX_SYMLINKS: u32 = 40;

/// One directory of a merged-view walk: its name, its fd in the snapshot
/// and the fds of the same directory in the parents that show through it
/// (topmost first).
struct Level {
    name: Vec<u8>,
    dest: Rc<OwnedFd>,
    lower: Vec<Rc<OwnedFd>>,
}

/// What a name in a merged directory is.
enum Found {
    /// No layer has it, or the first that does has a whiteout.
    Missing,
    /// A directory: open in the snapshot if it is there, the metadata of
    /// the topmost one, and the parents' directories that merge under it.
    Dir {
        dest: Option<OwnedFd>,
        stat: libc::stat,
        lower: Vec<Rc<OwnedFd>>,
    },
    /// A symlink, with its target.
    Symlink(Vec<u8>),
    /// Anything else: not a directory.
    Other,
}

/// Looks `name` up in a merged directory: the snapshot first, then each
/// parent that shows through, the first that has the name deciding.
fn lookup(level: &Level, name: &CStr) -> io::Result<Found> {
    if let Some(stat) = sys::stat_at(level.dest.as_fd(), name)? {
        return Ok(match stat.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let dest = sys::open_path_dir(level.dest.as_fd(), name)?;
                let lower = if is_opaque(dest.as_fd()) {
                    Vec::new()
                } else {
                    descend(&level.lower, name)?
                };
                Found::Dir {
                    dest: Some(dest),
                    stat,
                    lower,
                }
            }
            libc::S_IFLNK => Found::Symlink(sys::readlinkat(level.dest.as_fd(), name)?),
            _ => Found::Other,
        });
    }
    for (i, layer) in level.lower.iter().enumerate() {
        let Some(stat) = sys::stat_at(layer.as_fd(), name)? else {
            continue;
        };
        return Ok(match stat.st_mode & libc::S_IFMT {
            _ if is_whiteout(&stat) => Found::Missing,
            libc::S_IFDIR => Found::Dir {
                dest: None,
                stat,
                lower: descend(&level.lower[i..], name)?,
            },
            libc::S_IFLNK => Found::Symlink(sys::readlinkat(layer.as_fd(), name)?),
            _ => Found::Other,
        });
    }
    Ok(Found::Missing)
}

/// The directories named `name` in `lower` (topmost first) that merge:
/// those before the first non-directory (a whiteout, say), up to and
/// including the first opaque one; layers without the name are skipped.
fn descend(lower: &[Rc<OwnedFd>], name: &CStr) -> io::Result<Vec<Rc<OwnedFd>>> {
    let mut dirs = Vec::new();
    for layer in lower {
        match sys::stat_at(layer.as_fd(), name)? {
            None => continue,
            Some(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                let dir = sys::open_path_dir(layer.as_fd(), name)?;
                let opaque = is_opaque(dir.as_fd());
                dirs.push(Rc::new(dir));
                if opaque {
                    break;
                }
            }
            Some(_) => break,
        }
    }
    Ok(dirs)
}

/// An overlay whiteout: a character device 0:0.
fn is_whiteout(stat: &libc::stat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFCHR && stat.st_rdev == 0
}

/// Whether a directory is marked opaque (its lower layers hidden). An
/// xattr that cannot be read (not root) counts as not set.
fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    let mut value = [0u8; 2];
    matches!(
        sys::get_xattr(&sys::proc_path(dir, None), OPAQUE_XATTR, &mut value),
        Ok(1) if value[0] == b'y'
    )
}

#[derive(Clone, Copy)]
enum Node<'f> {
    /// An open (not O_PATH) regular file or directory.
    Fd(BorrowedFd<'f>),
    At {
        parent: BorrowedFd<'f>,
        name: &'f CStr,
        symlink: bool,
    },
}

/// Splits a tar path into components: empty and `.` ones dropped (so a
/// leading `/` is), `..` applied lexically. `..` above the root and NUL
/// bytes are refused.
fn clean(path: &[u8]) -> std::result::Result<Vec<Vec<u8>>, &'static str> {
    let mut components: Vec<Vec<u8>> = Vec::new();
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                if components.pop().is_none() {
                    return Err("climbs above the root with \"..\"");
                }
            }
            name if name.contains(&0) => return Err("contains a NUL byte"),
            name => components.push(name.to_vec()),
        }
    }
    Ok(components)
}

fn join(components: &[Vec<u8>]) -> CString {
    CString::new(components.join(&b'/')).expect("components are checked for NUL bytes")
}

fn cstring(bytes: &[u8]) -> std::result::Result<CString, &'static str> {
    CString::new(bytes).map_err(|_| "contains a NUL byte")
}

fn ownership<R: Read>(entry: &tar::Entry<'_, R>) -> std::result::Result<(u32, u32), &'static str> {
    // PAX uid/gid records were already folded into the header by the parser.
    let header = entry.header();
    // A field of NULs or spaces only is 0, as Go's archive/tar (docker's)
    // reads it: some writers leave unset owners that way.
    let blank = |field: &[u8]| field.iter().all(|&b| b == 0 || b == b' ');
    let old = header.as_old();
    let uid = if blank(&old.uid) {
        0
    } else {
        header.uid().map_err(|_| "invalid uid")?
    };
    let gid = if blank(&old.gid) {
        0
    } else {
        header.gid().map_err(|_| "invalid gid")?
    };
    let uid = u32::try_from(uid).map_err(|_| "uid out of range")?;
    let gid = u32::try_from(gid).map_err(|_| "gid out of range")?;
    Ok((uid, gid))
}

fn metadata<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::result::Result<Meta, &'static str> {
    let (uid, gid) = ownership(entry)?;
    let header = entry.header();
    let mode = header.mode().map_err(|_| "invalid mode")? & 0o7777;
    let mtime = header.mtime().map_err(|_| "invalid mtime")?;
    let mut mtime = libc::timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(|_| "invalid PAX records")? {
        for extension in extensions {
            let extension = extension.map_err(|_| "invalid PAX record")?;
            let key = extension.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(extension.value_bytes()).ok_or("invalid PAX mtime")?;
            } else if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                    // Overlay metadata comes only from our own whiteout
                    // conversion, never from the layer.
                    tracing::warn!(xattr = %String::from_utf8_lossy(name), "ignoring an overlay xattr in the layer");
                    continue;
                }
                let name = CString::new(name).map_err(|_| "xattr name contains a NUL byte")?;
                xattrs.push((name, extension.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs,
    })
}

/// Parses a PAX time, `[-]seconds[.fraction]`.
fn parse_pax_time(value: &[u8]) -> Option<libc::timespec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = seconds.parse().unwrap_or(i64::MAX);
    let mut nanos: i64 = 0;
    for (i, digit) in fraction.bytes().take(9).enumerate() {
        nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
    }
    let (tv_sec, tv_nsec) = match (negative, nanos) {
        (false, _) => (seconds, nanos),
        (true, 0) => (-seconds, 0),
        (true, _) => (-seconds - 1, 1_000_000_000 - nanos),
    };
    Some(libc::timespec { tv_sec, tv_nsec })
}

/// Copies with one large buffer (io::copy would use 8 KiB writes).
fn copy(reader: &mut impl Read, file: &mut File, buffer: &mut [u8]) -> io::Result<u64> {
    let mut written = 0u64;
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buffer[..n])?;
        written += n as u64;
    }
}

/// Thin wrappers around the syscalls, each returning `io::Result`.
mod sys {
    use super::*;

    fn check(result: libc::c_int) -> io::Result<()> {
        if result == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: a new fd the kernel just returned, owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    }

    pub fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
        // SAFETY: path is a valid C string.
        owned(unsafe { libc::open(path.as_ptr(), flags) })
    }

    pub fn openat(
        dir: BorrowedFd<'_>,
        name: &CStr,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> io::Result<OwnedFd> {
        // SAFETY: valid fd and C string.
        owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) })
    }

    /// Opens a directory (O_PATH) by a relative path resolved with `root`
    /// as `/`: no symlink or `..` can lead out of it.
    pub fn open_in_root(root: BorrowedFd<'_>, path: &CStr) -> io::Result<OwnedFd> {
        crate::inroot::open(root, path.to_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
    }

    pub fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
        openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
    }

    /// The names in a directory, without `.` and `..`.
    pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
        let fd = open_dir(dir, c".")?;
        // SAFETY: fdopendir takes ownership of the fd on success.
        let stream = unsafe { libc::fdopendir(fd.as_raw_fd()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(fd);
        let mut names = Vec::new();
        let result = loop {
            // SAFETY: stream is a valid DIR*; errno is cleared to tell the
            // end of the directory from an error.
            unsafe { *libc::__errno_location() = 0 };
            let entry = unsafe { libc::readdir64(stream) };
            if entry.is_null() {
                let error = io::Error::last_os_error();
                break match error.raw_os_error() {
                    Some(0) => Ok(()),
                    _ => Err(error),
                };
            }
            // SAFETY: d_name of a returned entry is a NUL-terminated string.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        };
        // SAFETY: stream is valid and closed once.
        unsafe { libc::closedir(stream) };
        result.map(|()| names)
    }

    /// The S_IFMT bits of what is at `name`, not following a symlink.
    pub fn file_type_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::mode_t>> {
        // SAFETY: stat is plain data filled by the kernel.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, C string and stat buffer.
        let result = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match check(result) {
            Ok(()) => Ok(Some(stat.st_mode & libc::S_IFMT)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What is at `name`, not following a symlink; None if nothing is.
    pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
        // SAFETY: stat is plain data filled by the kernel.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, C string and stat buffer.
        let result = unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match check(result) {
            Ok(()) => Ok(Some(stat)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the directory `name` (O_PATH), never through a symlink.
    pub fn open_path_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
        openat(
            dir,
            name,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        )
    }

    /// Creates the directory `name` and opens it.
    pub fn mkdir_open(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
        mkdirat(dir, name, mode)?;
        open_dir(dir, name)
    }

    /// The target of the symlink `name`.
    pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: valid fd, C string and a buffer of the length passed.
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n == buffer.len() {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buffer.truncate(n);
        Ok(buffer)
    }

    /// getxattr on what the path leads to; the value's length.
    pub fn get_xattr(path: &CStr, key: &CStr, value: &mut [u8]) -> io::Result<usize> {
        // SAFETY: valid C strings and a value buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: valid fd and C string.
        check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
    }

    pub fn mknodat(
        dir: BorrowedFd<'_>,
        name: &CStr,
        mode: libc::mode_t,
        device: libc::dev_t,
    ) -> io::Result<()> {
        // SAFETY: valid fd and C string.
        check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, device) })
    }

    pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
        // SAFETY: valid fd and C strings.
        check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    pub fn linkat(
        from_dir: BorrowedFd<'_>,
        from: &CStr,
        to_dir: BorrowedFd<'_>,
        to: &CStr,
    ) -> io::Result<()> {
        // SAFETY: valid fds and C strings.
        check(unsafe {
            libc::linkat(
                from_dir.as_raw_fd(),
                from.as_ptr(),
                to_dir.as_raw_fd(),
                to.as_ptr(),
                0,
            )
        })
    }

    pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: valid fd and C string.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
    }

    pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: valid fd.
        check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
    }

    pub fn fchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: valid fd and C string.
        check(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: valid fd.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
    }

    /// chmod of `name` itself (refused by the kernel for a symlink).
    pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
        // SAFETY: valid fd and C string.
        check(unsafe {
            libc::fchmodat(
                dir.as_raw_fd(),
                name.as_ptr(),
                mode,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    pub fn futimens(fd: BorrowedFd<'_>, mtime: libc::timespec) -> io::Result<()> {
        let times = [mtime, mtime];
        // SAFETY: valid fd and two timespecs.
        check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
    }

    pub fn utimensat(dir: BorrowedFd<'_>, name: &CStr, mtime: libc::timespec) -> io::Result<()> {
        let times = [mtime, mtime];
        // SAFETY: valid fd, C string and two timespecs.
        check(unsafe {
            libc::utimensat(
                dir.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// `/proc/self/fd/<fd>[/<name>]`: a path to an open fd (or to a name in
    /// an open directory) for the xattr calls, which have no *at form.
    pub fn proc_path(fd: BorrowedFd<'_>, name: Option<&CStr>) -> CString {
        let raw: RawFd = fd.as_raw_fd();
        let mut path = format!("/proc/self/fd/{raw}").into_bytes();
        if let Some(name) = name {
            path.push(b'/');
            path.extend_from_slice(name.to_bytes());
        }
        CString::new(path).expect("no NUL in an fd number or a checked name")
    }

    /// setxattr on what the path leads to: through the /proc link of an
    /// O_PATH fd, which fsetxattr does not accept.
    pub fn set_xattr(path: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: valid C strings and a value buffer of the given length.
        check(unsafe {
            libc::setxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
    }

    pub fn fsetxattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: valid fd, C string and a value buffer of the given length.
        check(unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
    }

    /// setxattr that does not follow a symlink in the last component.
    pub fn lsetxattr(path: &CStr, key: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: valid C strings and a value buffer of the given length.
        check(unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_compression() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f]), Compression::None);
        assert_eq!(detect(b"etc/"), Compression::None);
        assert_eq!(detect(b""), Compression::None);
    }

    fn cleaned(path: &str) -> std::result::Result<Vec<String>, &'static str> {
        clean(path.as_bytes()).map(|components| {
            components
                .into_iter()
                .map(|c| String::from_utf8(c).unwrap())
                .collect()
        })
    }

    #[test]
    fn cleans_paths_lexically() {
        assert_eq!(cleaned("etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(cleaned("/etc//./passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(cleaned("./usr/bin/").unwrap(), ["usr", "bin"]);
        assert_eq!(cleaned("a/b/../c").unwrap(), ["a", "c"]);
        assert!(cleaned("./").unwrap().is_empty());
        assert!(cleaned("/").unwrap().is_empty());
        assert!(cleaned("../evil").is_err());
        assert!(cleaned("a/../../evil").is_err());
        assert!(cleaned("/../etc").is_err());
        assert!(clean(b"a\0b/c").is_err());
        assert_eq!(cleaned(".wh..wh..opq").unwrap(), [".wh..wh..opq"]);
    }

    #[test]
    fn parses_pax_times() {
        let time = |text: &str| parse_pax_time(text.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(time("1234567890"), Some((1_234_567_890, 0)));
        assert_eq!(time("1234567890.5"), Some((1_234_567_890, 500_000_000)));
        assert_eq!(time("1.0000000019"), Some((1, 1)));
        assert_eq!(time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(time("99999999999999999999999"), Some((i64::MAX, 0)));
        assert_eq!(time(""), None);
        assert_eq!(time("1.2.3"), None);
        assert_eq!(time("x"), None);
        assert_eq!(time(".5"), None);
    }

    #[test]
    fn the_limit_stops_reads() {
        let remaining = Rc::new(Cell::new(10));
        let mut limited = Limited {
            inner: &[7u8; 100][..],
            remaining: Rc::clone(&remaining),
        };
        let mut buffer = [0u8; 64];
        assert_eq!(limited.read(&mut buffer).unwrap(), 10);
        assert!(limited.read(&mut buffer).is_err());
        remaining.set(u64::MAX);
        assert_eq!(limited.read(&mut buffer).unwrap(), 64);
    }
}
