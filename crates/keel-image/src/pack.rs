//! Directory trees to tar streams: a container's writable layer as an
//! image layer (`keel commit`: overlay whiteouts back to `.wh.` files,
//! opaque directories to `.wh..wh..opq`), a root filesystem (`keel
//! export`), or one path of it (`keel cp`). Symlinks are stored, never
//! followed; hard links within the tree stay hard links; owners, modes,
//! mtimes and device numbers are kept.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// The tree is an overlay upper directory: whiteouts and opaque
    /// directories become the image format's `.wh.` entries.
    pub overlay_diff: bool,
    /// The name of the tree's top in the archive (`keel cp` of a file or
    /// a directory); None packs the top's contents at the archive's root.
    pub top_name: Option<String>,
    /// Paths in the tree (`etc/hosts`, relative to its top) left out of
    /// the stream, each with what is below it.
    pub exclude: Vec<PathBuf>,
}

/// Writes `source` (a file or a directory) as a tar stream to `out`.
pub fn pack(source: &Path, out: impl Write, options: &PackOptions) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut packer = Packer {
        builder,
        options,
        links: HashMap::new(),
    };
    let meta = fs::symlink_metadata(source)
        .map_err(|e| Error::io(format!("stat {}", source.display()), e))?;
    match &options.top_name {
        Some(name) => packer.entry(source, Path::new(name), &meta)?,
        None if meta.is_dir() => packer.children(source, Path::new(""))?,
        None => {
            let name = source
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("file"));
            packer.entry(source, &name, &meta)?
        }
    }
    packer
        .builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|e| Error::io("finish the tar stream", e))
}

struct Packer<'a, W: Write> {
    builder: tar::Builder<W>,
    options: &'a PackOptions,
    /// (dev, inode) of files with several links → their first name.
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> Packer<'_, W> {
    fn children(&mut self, dir: &Path, name: &Path) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?
            .collect::<io::Result<_>>()
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        if self.options.overlay_diff && is_opaque(dir) {
            self.empty_file(&name.join(".wh..wh..opq"))?;
        }
        for entry in entries {
            let path = entry.path();
            let entry_name = name.join(entry.file_name());
            if self.options.exclude.contains(&entry_name) {
                continue;
            }
            let meta = fs::symlink_metadata(&path)
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            self.entry(&path, &entry_name, &meta)?;
        }
        Ok(())
    }

    fn header(meta: &fs::Metadata) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(meta.mtime().max(0) as u64);
        header.set_size(0);
        header
    }

    fn empty_file(&mut self, name: &Path) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        self.builder
            .append_data(&mut header, name, io::empty())
            .map_err(|e| Error::io(format!("write {} to the tar stream", name.display()), e))
    }

    fn entry(&mut self, path: &Path, name: &Path, meta: &fs::Metadata) -> Result<()> {
        let kind = meta.file_type();
        let context = |e| Error::io(format!("write {} to the tar stream", name.display()), e);
        let mut header = Self::header(meta);
        if self.options.overlay_diff && kind.is_char_device() && meta.rdev() == 0 {
            // A whiteout: `.wh.<name>` beside where it was.
            let file_name = name
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let whiteout = name.with_file_name(format!(".wh.{file_name}"));
            return self.empty_file(&whiteout);
        }
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            if !name.as_os_str().is_empty() {
                let mut dir_name = name.as_os_str().to_owned();
                dir_name.push("/");
                self.builder
                    .append_data(&mut header, Path::new(&dir_name), io::empty())
                    .map_err(context)?;
            }
            return self.children(path, name);
        }
        if kind.is_symlink() {
            let target = fs::read_link(path)
                .map_err(|e| Error::io(format!("read link {}", path.display()), e))?;
            header.set_entry_type(tar::EntryType::Symlink);
            return self
                .builder
                .append_link(&mut header, name, &target)
                .map_err(context);
        }
        if meta.nlink() > 1 && !kind.is_dir() {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                header.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self
                    .builder
                    .append_link(&mut header, name, &first)
                    .map_err(context);
            }
            self.links.insert(key, name.to_path_buf());
        }
        if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            let file = fs::File::open(path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            return self
                .builder
                .append_data(
                    &mut header,
                    name,
                    io::BufReader::with_capacity(128 * 1024, file),
                )
                .map_err(context);
        }
        if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
            header.set_entry_type(if kind.is_char_device() {
                tar::EntryType::Char
            } else if kind.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let rdev = meta.rdev();
            header
                .set_device_major(libc::major(rdev))
                .map_err(context)?;
            header
                .set_device_minor(libc::minor(rdev))
                .map_err(context)?;
            return self
                .builder
                .append_data(&mut header, name, io::empty())
                .map_err(context);
        }
        // Sockets mean nothing without their server: left out.
        Ok(())
    }
}

/// An overlay upper directory marked opaque: it hides what the layers
/// below have there.
pub fn is_opaque(dir: &Path) -> bool {
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

    fn names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let kind = match e.header().entry_type() {
                    tar::EntryType::Directory => "d",
                    tar::EntryType::Symlink => "l",
                    tar::EntryType::Link => "h",
                    tar::EntryType::Char => "c",
                    _ => "f",
                };
                format!("{kind} {}", e.path().unwrap().display())
            })
            .collect()
    }

    #[test]
    fn packs_trees_files_links_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/a"), b"a").unwrap();
        fs::hard_link(root.join("etc/a"), root.join("etc/b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let mut out = Vec::new();
        pack(&root, &mut out, &PackOptions::default()).unwrap();
        assert_eq!(names(&out), ["d etc/", "f etc/a", "h etc/b", "l link"]);
        let mut out = Vec::new();
        pack(
            &root.join("etc"),
            &mut out,
            &PackOptions {
                top_name: Some("renamed".into()),
                ..PackOptions::default()
            },
        )
        .unwrap();
        assert_eq!(names(&out), ["d renamed/", "f renamed/a", "h renamed/b"]);
        let mut out = Vec::new();
        pack(&root.join("etc/a"), &mut out, &PackOptions::default()).unwrap();
        assert_eq!(names(&out), ["f a"]);
    }
}
