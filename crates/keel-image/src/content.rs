//! The content store: blobs named by their digest under
//! `<root>/content/blobs/sha256/<hex>`.
//!
//! A blob becomes visible only once it is complete and its digest verified:
//! it is streamed to `<root>/content/ingest/`, hashed on the way, fsynced,
//! and renamed into place. A pull that is killed leaves at most a partial
//! file in `ingest/`, which no reader looks at and the next ingest of the
//! same digest (or [`ContentStore::clean_ingest`]) removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Digester};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

/// JSON documents (manifests, configs, indexes) are read whole; anything
/// larger than this is refused rather than loaded.
pub const MAX_DOCUMENT_SIZE: u64 = 8 << 20;

impl ContentStore {
    /// Opens (creating if needed) the store under `root` (keel's root).
    pub fn open(root: &Path) -> Result<ContentStore> {
        let content = root.join("content");
        let store = ContentStore {
            blobs: content.join("blobs").join("sha256"),
            ingest: content.join("ingest"),
        };
        for dir in [&store.blobs, &store.ingest] {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        Ok(store)
    }

    /// Where a blob lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::msg(format!("blob {digest} is not in the content store"))
            } else {
                Error::io(format!("open blob {}", path.display()), e)
            }
        })
    }

    /// A whole small blob (a manifest or config), size-checked.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let file = self.open_blob(digest)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > MAX_DOCUMENT_SIZE {
            return Err(Error::msg(format!(
                "blob {digest} is {len} bytes, too large for a JSON document"
            )));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::io(format!("read blob {digest}"), e))?;
        Ok(data)
    }

    /// Streams `reader` into the store as `expected`. On a digest or size
    /// mismatch nothing becomes visible and the error names both digests.
    /// Returns the number of bytes stored.
    pub fn ingest(
        &self,
        expected: &Digest,
        expected_size: Option<u64>,
        reader: impl Read,
    ) -> Result<u64> {
        let (temp, actual, size) = self.stream_to_temp(expected.hex(), reader)?;
        let checked = match expected_size {
            Some(want) if want != size => Err(Error::msg(format!(
                "blob {expected}: expected {want} bytes, got {size}"
            ))),
            _ if &actual != expected => Err(Error::DigestMismatch {
                what: format!("blob {expected}"),
                expected: expected.to_string(),
                actual: actual.to_string(),
            }),
            _ => Ok(()),
        };
        match checked {
            Ok(()) => self.publish(&temp, &actual).map(|()| size),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Streams content whose digest is not known in advance (a layer in a
    /// docker archive) into the store; returns its digest and size.
    pub fn ingest_any(&self, reader: impl Read) -> Result<(Digest, u64)> {
        let (temp, digest, size) = self.stream_to_temp("unknown", reader)?;
        self.publish(&temp, &digest)?;
        Ok((digest, size))
    }

    /// Writes `reader` to a new file in `ingest/` (named so that
    /// [`ContentStore::clean_ingest`] knows its owner), hashing it on the
    /// way, and fsyncs it. Nothing is left behind on failure.
    fn stream_to_temp(&self, name: &str, reader: impl Read) -> Result<(PathBuf, Digest, u64)> {
        let temp = self
            .ingest
            .join(format!("{name}.{}.{}", std::process::id(), unique_suffix()));
        let result = (|| -> Result<(Digest, u64)> {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp)
                .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
            let mut reader = Digester::new(reader);
            let mut writer = BufWriter::with_capacity(256 * 1024, file);
            io::copy(&mut reader, &mut writer).map_err(|e| Error::io("write blob", e))?;
            let file = writer
                .into_inner()
                .map_err(|e| Error::io("write blob", e.into_error()))?;
            file.sync_all().map_err(|e| Error::io("sync blob", e))?;
            let size = reader.byte_count();
            Ok((reader.finish().0, size))
        })();
        match result {
            Ok((digest, size)) => Ok((temp, digest, size)),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Makes a verified temp file the blob `digest`.
    fn publish(&self, temp: &Path, digest: &Digest) -> Result<()> {
        if let Err(e) = fs::rename(temp, self.path(digest)) {
            let _ = fs::remove_file(temp);
            return Err(Error::io(format!("store blob {digest}"), e));
        }
        sync_dir(&self.blobs);
        Ok(())
    }

    /// Stores bytes we made ourselves (a manifest or config we build) and
    /// returns their digest.
    pub fn write(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of(data);
        if !self.contains(&digest) {
            self.ingest(&digest, Some(data.len() as u64), data)?;
        }
        Ok(digest)
    }

    pub fn delete(&self, digest: &Digest) -> Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(Error::io(format!("delete blob {digest}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Every blob in the store (for the garbage collector and `system df`).
    pub fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let entries = fs::read_dir(&self.blobs)
            .map_err(|e| Error::io(format!("list {}", self.blobs.display()), e))?;
        let mut blobs = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str() else { continue };
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            blobs.push((digest, size));
        }
        blobs.sort();
        Ok(blobs)
    }

    /// Removes partial ingests left by processes that no longer run.
    pub fn clean_ingest(&self) -> Result<usize> {
        let entries = fs::read_dir(&self.ingest)
            .map_err(|e| Error::io(format!("list {}", self.ingest.display()), e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            if owner_is_gone(&entry.file_name().to_string_lossy())
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Work files are named `<what>.<pid>.<unique>`: whether the process that
/// made one has exited (so the file is a leftover of a killed operation).
pub(crate) fn owner_is_gone(name: &str) -> bool {
    let pid = name.split('.').nth(1).and_then(|p| p.parse::<i32>().ok());
    !pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (COUNTER.fetch_add(1, Ordering::Relaxed) << 32) | nanos
}

/// Makes a rename durable (best effort: not every filesystem supports it).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies_and_publishes_atomically() {
        let temp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(temp.path()).unwrap();
        let data = b"layer bytes".repeat(100_000);
        let digest = Digest::of(&data);
        assert!(!store.contains(&digest));
        assert_eq!(
            store
                .ingest(&digest, Some(data.len() as u64), &data[..])
                .unwrap(),
            data.len() as u64
        );
        assert!(store.contains(&digest));
        let mut back = Vec::new();
        store
            .open_blob(&digest)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        assert_eq!(store.list().unwrap(), vec![(digest, data.len() as u64)]);
    }

    #[test]
    fn a_lying_source_leaves_nothing_visible() {
        let temp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(temp.path()).unwrap();
        let claimed = Digest::of(b"what the manifest says");
        let err = store
            .ingest(&claimed, None, &b"what the registry sent"[..])
            .unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!store.contains(&claimed));
        assert!(store.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(temp.path().join("content/ingest"))
                .unwrap()
                .count(),
            0
        );
        let err = store
            .ingest(&Digest::of(b"abc"), Some(4), &b"abc"[..])
            .unwrap_err();
        assert!(err.to_string().contains("expected 4 bytes, got 3"), "{err}");
    }

    #[test]
    fn stale_partials_are_cleaned_and_documents_are_size_checked() {
        let temp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(temp.path()).unwrap();
        // A partial left by a killed process (pid 0 never names one).
        fs::write(temp.path().join("content/ingest/abc.0.1"), b"partial").unwrap();
        assert_eq!(store.clean_ingest().unwrap(), 1);
        let digest = store.write(br#"{"schemaVersion":2}"#).unwrap();
        assert_eq!(store.read(&digest).unwrap(), br#"{"schemaVersion":2}"#);
        let missing = Digest::of(b"nope");
        assert!(
            store
                .read(&missing)
                .unwrap_err()
                .to_string()
                .contains("not in the content store")
        );
    }
}
