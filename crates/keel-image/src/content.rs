//! The content store: blobs named by their digest under
//! `<root>/content/blobs/sha256/<hex>`.
//!
//! A blob becomes visible only once it is complete and its digest verified:
//! it is streamed to `<root>/content/ingest/`, hashed on the way, fsynced,
//! and renamed into place. No reader looks in `ingest/`.
//!
//! Downloads go through [`ContentStore::resume_ingest`]: the partial blob is
//! `ingest/<hex>.partial`, held under an exclusive `flock` by the process
//! writing it. A pull that is killed (or loses its connection) leaves it
//! there, and the next pull of the same blob carries on from its end after
//! hashing what is already there; the digest is checked over the whole blob
//! at the end as always. [`ContentStore::clean_ingest`] removes what no
//! process is writing: private temp files of dead processes, partials of
//! blobs already stored, and partials untouched for [`PARTIAL_MAX_AGE`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A partial download nobody has resumed for this long is removed by
/// [`ContentStore::clean_ingest`] (containerd expires its ingests too).
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

const PARTIAL_SUFFIX: &str = ".partial";

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

    /// Opens the download of `expected` (`size` bytes): the partial blob a
    /// killed or cut-off download left, if any, to carry on from its end
    /// ([`Ingest::offset`]), else a new one. Returns None if the blob is in
    /// the store already (another process may just have finished it).
    ///
    /// The partial is locked for as long as the [`Ingest`] lives; if another
    /// process holds it, this one downloads into a private temp file
    /// instead (from the start, and removed if it does not finish).
    pub fn resume_ingest(&self, expected: &Digest, size: u64) -> Result<Option<Ingest>> {
        let path = self
            .ingest
            .join(format!("{}{PARTIAL_SUFFIX}", expected.hex()));
        let (path, file, shared) = match open_locked(&path)? {
            Some(file) => (path, file, true),
            None => {
                let temp = self.temp_path(expected.hex());
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&temp)
                    .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
                (temp, file, false)
            }
        };
        if self.contains(expected) {
            // Finished by another process meanwhile: what is left is useless.
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        let mut ingest = Ingest {
            store: self.clone(),
            expected: expected.clone(),
            expected_size: size,
            path,
            writer: Some(new_writer(file)),
            shared,
            resumed_from: 0,
        };
        ingest.rehash()?;
        Ok(Some(ingest))
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.ingest
            .join(format!("{name}.{}.{}", std::process::id(), unique_suffix()))
    }

    /// Writes `reader` to a new file in `ingest/` (named so that
    /// [`ContentStore::clean_ingest`] knows its owner), hashing it on the
    /// way, and fsyncs it. Nothing is left behind on failure.
    fn stream_to_temp(&self, name: &str, reader: impl Read) -> Result<(PathBuf, Digest, u64)> {
        let temp = self.temp_path(name);
        let result = (|| -> Result<(Digest, u64)> {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&temp)
                .map_err(|e| Error::io(format!("create {}", temp.display()), e))?;
            let mut reader = Digester::new(reader);
            let mut writer = BufWriter::with_capacity(256 * 1024, file);
            // Read and write apart, so that the error says which failed (a
            // full disk names the file).
            let written = |e| Error::io(format!("write {}", temp.display()), e);
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                let n = match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::io(format!("read the data of {name}"), e)),
                };
                writer.write_all(&buffer[..n]).map_err(written)?;
            }
            let file = writer.into_inner().map_err(|e| written(e.into_error()))?;
            file.sync_all()
                .map_err(|e| Error::io(format!("sync {}", temp.display()), e))?;
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

    /// Removes what no process is writing in `ingest/`: temp files of
    /// processes that no longer run, and partial downloads (not locked) of
    /// blobs already stored or untouched for [`PARTIAL_MAX_AGE`].
    pub fn clean_ingest(&self) -> Result<usize> {
        self.clean_ingest_older_than(PARTIAL_MAX_AGE)
    }

    /// [`ContentStore::clean_ingest`] with another age for partials.
    pub fn clean_ingest_older_than(&self, age: Duration) -> Result<usize> {
        self.clean_ingest_counting(age).map(|(files, _)| files)
    }

    /// [`ContentStore::clean_ingest_older_than`]: the files removed and
    /// their bytes.
    pub fn clean_ingest_counting(&self, age: Duration) -> Result<(usize, u64)> {
        let entries = fs::read_dir(&self.ingest)
            .map_err(|e| Error::io(format!("list {}", self.ingest.display()), e))?;
        let (mut files, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let gone = match name.strip_suffix(PARTIAL_SUFFIX) {
                Some(hex) => self.remove_stale_partial(&entry.path(), hex, age),
                None => owner_is_gone(&name) && fs::remove_file(entry.path()).is_ok(),
            };
            if gone {
                files += 1;
                bytes += size;
            }
        }
        Ok((files, bytes))
    }

    /// Removes a partial nobody holds whose blob is stored, or that is
    /// older than `age`; whether it did. The file is removed under our
    /// lock: an opener that gets the lock next finds the path gone (or
    /// new) and starts anew.
    fn remove_stale_partial(&self, path: &Path, hex: &str, age: Duration) -> bool {
        let Ok(Some(file)) = open_locked(path) else {
            return false;
        };
        let stored = format!("sha256:{hex}")
            .parse::<Digest>()
            .is_ok_and(|digest| self.contains(&digest));
        let old = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        (stored || old) && fs::remove_file(path).is_ok()
    }
}

/// Opens (creating) `path` and takes an exclusive `flock` on it without
/// waiting; None if another process holds it. Retries when the file it
/// locked is no longer the one at `path` (removed or published meanwhile).
fn open_locked(path: &Path) -> Result<Option<File>> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Ok(None);
            }
            return Err(Error::io(format!("lock {}", path.display()), e));
        }
        let ours = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        match fs::metadata(path) {
            Ok(there) if there.ino() == ours.ino() && there.dev() == ours.dev() => {
                return Ok(Some(file));
            }
            // Replaced or removed between our open and our lock.
            _ => continue,
        }
    }
}

/// A blob being downloaded into `ingest/` (see [`ContentStore::resume_ingest`]).
/// Written in order with [`Ingest::write`], made visible by
/// [`Ingest::commit`] once size and digest check out. Dropped unfinished,
/// a shared partial stays for the next download to resume; a private one
/// is removed.
pub struct Ingest {
    store: ContentStore,
    expected: Digest,
    expected_size: u64,
    path: PathBuf,
    /// None only once committed or discarded.
    writer: Option<Digester<BufWriter<File>>>,
    /// `ingest/<hex>.partial`, locked by us (else a private temp file).
    shared: bool,
    resumed_from: u64,
}

fn new_writer(file: File) -> Digester<BufWriter<File>> {
    Digester::new(BufWriter::with_capacity(256 * 1024, file))
}

impl Ingest {
    fn writer(&mut self) -> &mut Digester<BufWriter<File>> {
        self.writer
            .as_mut()
            .expect("an ingest is used only until commit or discard")
    }

    /// Where the download carries on: the bytes already there.
    pub fn offset(&self) -> u64 {
        self.writer.as_ref().map_or(0, Digester::byte_count)
    }

    /// How many bytes an earlier download had left when this one began.
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Hashes what a previous download left (all of it; none if it is
    /// longer than the blob or cannot be read) and positions after it.
    fn rehash(&mut self) -> Result<()> {
        let path = self.path.clone();
        let file = self.writer().get_mut().get_mut();
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        if len == 0 {
            return Ok(());
        }
        if len > self.expected_size {
            return self.restart();
        }
        let mut buffer = vec![0u8; 256 * 1024];
        let writer = self.writer();
        let read = (|| -> io::Result<()> {
            let reader = writer.get_ref().get_ref().try_clone()?;
            let mut at = 0;
            while at < len {
                let want = buffer.len().min((len - at) as usize);
                let n = reader.read_at(&mut buffer[..want], at)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                writer.update(&buffer[..n]);
                at += n as u64;
            }
            writer.get_mut().get_mut().seek(SeekFrom::Start(len))?;
            Ok(())
        })();
        if read.is_err() {
            return self.restart();
        }
        self.resumed_from = len;
        tracing::debug!(digest = %self.expected, offset = len, "resuming a partial download");
        Ok(())
    }

    /// Appends the next bytes of the blob; more than its size is an error.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.offset() + data.len() as u64 > self.expected_size {
            return Err(Error::msg(format!(
                "blob {}: more than the {} bytes expected",
                self.expected, self.expected_size
            )));
        }
        let path = self.path.clone();
        self.writer()
            .write_all(data)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    /// Throws away what is there and starts from byte 0 (the server would
    /// not resume where we are).
    pub fn restart(&mut self) -> Result<()> {
        let path = self.path.clone();
        let context = |e| Error::io(format!("truncate {}", path.display()), e);
        let writer = self
            .writer
            .take()
            .expect("an ingest is used only until commit or discard");
        // What is still buffered belongs to the bytes thrown away.
        let (mut file, _) = writer.finish().1.into_parts();
        let reset = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0)));
        self.writer = Some(new_writer(file));
        reset.map_err(context)?;
        self.resumed_from = 0;
        Ok(())
    }

    /// Checks size and digest of the whole blob and publishes it. On a
    /// mismatch the download is removed (a later one starts from zero) and
    /// the error says so. Returns the blob's size.
    pub fn commit(mut self) -> Result<u64> {
        let size = self.offset();
        let path = self.path.clone();
        let writer = self.writer.take().expect("an ingest is committed once");
        let (actual, writer) = writer.finish();
        let checked = (|| {
            let file = writer
                .into_inner()
                .map_err(|e| Error::io(format!("write {}", path.display()), e.into_error()))?;
            file.sync_all()
                .map_err(|e| Error::io(format!("sync {}", path.display()), e))?;
            if size != self.expected_size {
                return Err(Error::msg(format!(
                    "blob {}: expected {} bytes, got {size}",
                    self.expected, self.expected_size
                )));
            }
            if actual != self.expected {
                return Err(Error::DigestMismatch {
                    what: format!("blob {}", self.expected),
                    expected: self.expected.to_string(),
                    actual: actual.to_string(),
                });
            }
            // Renamed while our lock is held (the fd lives until here).
            let published = self.store.publish(&path, &actual);
            drop(file);
            published
        })();
        if checked.is_err() {
            let _ = fs::remove_file(&path);
        }
        checked.map(|()| size)
    }

    /// Removes the download: what it holds is known to be wrong.
    pub fn discard(mut self) {
        self.writer = None;
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        if self.shared {
            // What arrived stays for the next download to carry on from.
            let _ = writer.flush();
        } else {
            let _ = fs::remove_file(&self.path);
        }
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

    fn ingest_dir(temp: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(temp.join("content/ingest"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dropped_download_is_resumed_by_the_next() {
        let temp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(temp.path()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&data);
        let size = data.len() as u64;

        let mut first = store.resume_ingest(&digest, size).unwrap().unwrap();
        assert_eq!(first.offset(), 0);
        first.write(&data[..1_234_567]).unwrap();
        // A second downloader meanwhile gets a private file, from zero.
        let second = store.resume_ingest(&digest, size).unwrap().unwrap();
        assert_eq!(second.offset(), 0);
        assert_eq!(ingest_dir(temp.path()).len(), 2);
        drop(second);
        assert_eq!(
            ingest_dir(temp.path()),
            [format!("{}.partial", digest.hex())]
        );
        // Killed (dropped unfinished): the bytes stay, nothing is visible.
        drop(first);
        assert!(!store.contains(&digest));

        let mut again = store.resume_ingest(&digest, size).unwrap().unwrap();
        assert_eq!(again.offset(), 1_234_567);
        assert_eq!(again.resumed_from(), 1_234_567);
        again.write(&data[1_234_567..]).unwrap();
        assert!(again.write(b"x").is_err(), "more than the blob's size");
        assert_eq!(again.commit().unwrap(), size);
        assert!(store.contains(&digest));
        assert!(ingest_dir(temp.path()).is_empty());
        // Once stored, there is nothing to download.
        assert!(store.resume_ingest(&digest, size).unwrap().is_none());
        assert!(ingest_dir(temp.path()).is_empty());
    }

    #[test]
    fn a_bad_partial_is_caught_and_removed() {
        let temp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(temp.path()).unwrap();
        let data = b"the real blob".repeat(1000);
        let digest = Digest::of(&data);
        let partial = temp
            .path()
            .join(format!("content/ingest/{}.partial", digest.hex()));
        // Garbage where the first bytes should be: the digest check at the
        // end catches it, and the partial goes.
        fs::write(&partial, vec![0u8; 100]).unwrap();
        let mut ingest = store
            .resume_ingest(&digest, data.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(ingest.offset(), 100);
        ingest.write(&data[100..]).unwrap();
        let err = ingest.commit().unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert!(!store.contains(&digest));
        assert!(!partial.exists());

        // Longer than the blob: started over.
        fs::write(&partial, vec![0u8; data.len() + 1]).unwrap();
        let mut ingest = store
            .resume_ingest(&digest, data.len() as u64)
            .unwrap()
            .unwrap();
        assert_eq!(ingest.offset(), 0);
        ingest.write(&data[..10]).unwrap();
        // A server that will not resume: thrown away, from zero again.
        ingest.restart().unwrap();
        assert_eq!(ingest.offset(), 0);
        ingest.write(&data).unwrap();
        ingest.commit().unwrap();
        assert!(store.contains(&digest));

        // Discarded: nothing stays.
        let other = Digest::of(b"other");
        let mut ingest = store.resume_ingest(&other, 5).unwrap().unwrap();
        ingest.write(b"oth").unwrap();
        ingest.discard();
        assert!(ingest_dir(temp.path()).is_empty());
    }

    #[test]
    fn cleaning_keeps_partials_in_use_and_recent_ones() {
        let temp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(temp.path()).unwrap();
        let digest = Digest::of(b"some blob");
        let mut ingest = store.resume_ingest(&digest, 9).unwrap().unwrap();
        ingest.write(b"some").unwrap();
        // Locked: kept whatever its age.
        assert_eq!(store.clean_ingest_older_than(Duration::ZERO).unwrap(), 0);
        drop(ingest);
        // Recent and not stored: kept for a resume.
        assert_eq!(store.clean_ingest().unwrap(), 0);
        // Old: removed.
        assert_eq!(store.clean_ingest_older_than(Duration::ZERO).unwrap(), 1);
        assert!(ingest_dir(temp.path()).is_empty());
        // A partial of a blob stored meanwhile is removed at once.
        let mut ingest = store.resume_ingest(&digest, 9).unwrap().unwrap();
        ingest.write(b"some").unwrap();
        drop(ingest);
        store.write(b"some blob").unwrap();
        assert_eq!(store.clean_ingest().unwrap(), 1);
        assert!(ingest_dir(temp.path()).is_empty());
    }
}
