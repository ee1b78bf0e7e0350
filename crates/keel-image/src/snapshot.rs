//! Layer snapshots: each layer unpacked once, keyed by its chain id (so
//! images that share a base share its snapshots), at
//! `<root>/snapshots/<chain hex>/`, ready to be an overlayfs lower dir.
//!
//! A snapshot is unpacked into `<root>/snapshots/ingest/<unique>/` and
//! renamed into place only when complete and its diff id verified: a
//! snapshot directory that exists is whole. Leftovers of a killed unpack
//! stay in `ingest/` and are removed by [`Snapshots::clean_ingest`].

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::{self, UnpackOptions};

#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    ingest: PathBuf,
}

impl Snapshots {
    pub fn open(root: &Path) -> Result<Snapshots> {
        let dir = root.join("snapshots");
        let snapshots = Snapshots {
            ingest: dir.join("ingest"),
            dir,
        };
        fs::create_dir_all(&snapshots.ingest)
            .map_err(|e| Error::io(format!("create {}", snapshots.ingest.display()), e))?;
        Ok(snapshots)
    }

    /// Where the snapshot of `chain_id` lives (whether or not it exists).
    pub fn path(&self, chain_id: &Digest) -> PathBuf {
        self.dir.join(chain_id.hex())
    }

    pub fn contains(&self, chain_id: &Digest) -> bool {
        self.path(chain_id).is_dir()
    }

    /// Unpacks a layer as the snapshot `chain_id` unless it exists. The
    /// layer's uncompressed content must hash to `diff_id`.
    ///
    /// `options.parents` are the snapshots of the layers below (topmost
    /// first, as [`Snapshots::lower_dirs`] of the chain's prefix gives
    /// them): the layer's paths resolve through them as overlayfs will
    /// show the stack. They are only read.
    pub fn unpack(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        layer: impl Read,
        options: &UnpackOptions,
    ) -> Result<PathBuf> {
        let target = self.path(chain_id);
        if target.is_dir() {
            return Ok(target);
        }
        self.unpack_with(layer, options, |unpacked| {
            if &unpacked.diff_id != diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("uncompressed layer of snapshot {chain_id}"),
                    expected: diff_id.to_string(),
                    actual: unpacked.diff_id.to_string(),
                });
            }
            Ok(chain_id.clone())
        })?;
        Ok(target)
    }

    /// Unpacks a bottom layer whose diff id is not known beforehand (an
    /// imported rootfs tarball); its chain id is its diff id, returned.
    pub fn unpack_base(&self, layer: impl Read, options: &UnpackOptions) -> Result<Digest> {
        self.unpack_with(layer, options, |unpacked| Ok(unpacked.diff_id.clone()))
    }

    /// Publishes the directory `dir` (an overlay upper directory: whiteouts
    /// and opaque directories already as overlayfs keeps them) as the
    /// snapshot `chain_id`, by rename; the layer made from it must be in
    /// the content store already. Leaves `dir` alone if the snapshot
    /// exists.
    pub fn adopt(&self, chain_id: &Digest, dir: &Path, size: u64) -> Result<()> {
        let target = self.path(chain_id);
        if target.is_dir() {
            return Ok(());
        }
        let size_file = self.dir.join(format!("{}.size", chain_id.hex()));
        fs::write(&size_file, size.to_string())
            .map_err(|e| Error::io(format!("write {}", size_file.display()), e))?;
        match fs::rename(dir, &target) {
            Ok(()) => Ok(()),
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(Error::io(
                format!("publish snapshot {}", target.display()),
                e,
            )),
        }
    }

    /// Unpacks into a work dir, lets `name` check the result and choose the
    /// chain id, records the size and publishes the snapshot by rename.
    fn unpack_with(
        &self,
        layer: impl Read,
        options: &UnpackOptions,
        name: impl FnOnce(&layer::Unpacked) -> Result<Digest>,
    ) -> Result<Digest> {
        let work = self.ingest.join(format!(
            "layer.{}.{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir(&work).map_err(|e| Error::io(format!("create {}", work.display()), e))?;
        let result = (|| -> Result<Digest> {
            let unpacked = layer::unpack(layer, &work, options)?;
            let chain_id = name(&unpacked)?;
            let target = self.path(&chain_id);
            // The size sits beside the snapshot, not in it: the snapshot is
            // a container's lower dir, byte for byte the layer.
            let size_file = self.dir.join(format!("{}.size", chain_id.hex()));
            fs::write(&size_file, unpacked.size.to_string())
                .map_err(|e| Error::io(format!("write {}", size_file.display()), e))?;
            match fs::rename(&work, &target) {
                Ok(()) => Ok(chain_id),
                // Another process finished the same snapshot first: theirs
                // is as good as ours.
                Err(_) if target.is_dir() => {
                    remove_tree(&work);
                    Ok(chain_id)
                }
                Err(e) => Err(Error::io(
                    format!("publish snapshot {}", target.display()),
                    e,
                )),
            }
        })();
        if result.is_err() {
            remove_tree(&work);
        }
        result
    }

    /// The bytes the snapshot's files take (as unpacked), 0 if unknown.
    pub fn size(&self, chain_id: &Digest) -> u64 {
        fs::read_to_string(self.dir.join(format!("{}.size", chain_id.hex())))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The overlayfs `lowerdir` list for an image (topmost layer first), or
    /// an error naming the first missing snapshot.
    pub fn lower_dirs(&self, chain_ids: &[Digest]) -> Result<Vec<PathBuf>> {
        chain_ids
            .iter()
            .rev()
            .map(|chain_id| {
                let path = self.path(chain_id);
                if path.is_dir() {
                    Ok(path)
                } else {
                    Err(Error::msg(format!(
                        "snapshot {chain_id} is missing: pull the image again"
                    )))
                }
            })
            .collect()
    }

    /// Every snapshot there is (for the garbage collector).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("list {}", self.dir.display()), e))?;
        let mut out: Vec<Digest> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                format!("sha256:{}", e.file_name().to_string_lossy())
                    .parse()
                    .ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    pub fn remove(&self, chain_id: &Digest) -> Result<()> {
        let path = self.path(chain_id);
        if !path.exists() {
            return Ok(());
        }
        // Move it out of sight first, so no reader sees a half-deleted tree.
        let doomed = self.ingest.join(format!(
            "{}.removing.{}",
            chain_id.hex(),
            std::process::id()
        ));
        fs::rename(&path, &doomed)
            .map_err(|e| Error::io(format!("remove snapshot {}", path.display()), e))?;
        remove_tree(&doomed);
        let _ = fs::remove_file(self.dir.join(format!("{}.size", chain_id.hex())));
        Ok(())
    }

    /// Removes what killed unpacks left behind.
    pub fn clean_ingest(&self) -> Result<usize> {
        let entries = fs::read_dir(&self.ingest)
            .map_err(|e| Error::io(format!("list {}", self.ingest.display()), e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('.').nth(1).and_then(|p| p.parse::<i32>().ok());
            let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                remove_tree(&entry.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Removes a tree that may hold read-only directories (layers do).
fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() {
        return;
    }
    // Make every directory writable, then try again.
    fn chmod_dirs(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::symlink_metadata(path)
            && meta.is_dir()
        {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            if let Ok(entries) = fs::read_dir(path) {
                for entry in entries.flatten() {
                    chmod_dirs(&entry.path());
                }
            }
        }
    }
    chmod_dirs(path);
    let _ = fs::remove_dir_all(path);
}
