//! The registry's filesystem storage, content-addressed, laid out like
//! distribution's so a person can read it:
//!
//! ```text
//! blobs/sha256/ab/<hex>                      every blob and manifest, once
//! uploads/<uuid>/{data,repo}                 uploads in progress
//! repositories/<name>/_layers/sha256/<hex>   the blobs this repository has
//! repositories/<name>/_manifests/revisions/sha256/<hex>   its manifests (holds the media type)
//! repositories/<name>/_manifests/tags/<tag>  tag → digest
//! repositories/<name>/_referrers/sha256/<subject hex>/<hex>  descriptors of manifests with a subject
//! ```
//!
//! An upload is streamed into `uploads/<uuid>/data` with a running sha256;
//! it becomes a blob only once its digest is verified, by a rename after an
//! fsync, so a crash at any point leaves no partial blob where clients look.
//! A repository sees only the blobs linked into it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use keel_image::digest::{Algorithm, Digest};
use keel_image::manifest::{
    Descriptor, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_SCHEMA1, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::errors::{ApiError, ApiResult, Code};

/// The largest manifest accepted (the spec's SHOULD: 4 MiB).
pub const MANIFEST_SIZE_LIMIT: usize = 4 * 1024 * 1024;

/// Writes to disk go in pieces of this size, off the async threads.
const WRITE_BUFFER: usize = 1024 * 1024;

/// A repository name by the spec's grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`,
/// at most 255 bytes. It also keeps names from leaving `repositories/`:
/// no `..`, no empty or absolute components, nothing starting with `_`.
pub fn validate_name(name: &str) -> ApiResult<()> {
    let invalid = |why: &str| {
        ApiError::new(
            Code::NameInvalid,
            format!("invalid repository name {name:?}: {why}"),
        )
        .with_detail(json!({ "name": name }))
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 255 {
        return Err(invalid("longer than 255 characters"));
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(invalid(
                "each /-separated part must be lowercase letters and digits, \
                 separated by '.', '_', '__' or dashes",
            ));
        }
    }
    Ok(())
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let separator = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let ok = match &bytes[separator..i] {
            b"." | b"_" | b"__" => true,
            dashes => dashes.iter().all(|&b| b == b'-'),
        };
        if !ok || i == bytes.len() {
            return false;
        }
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The `<reference>` of a manifest URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(text: &str) -> ApiResult<Reference> {
        if text.contains(':') {
            return parse_digest(text).map(Reference::Digest);
        }
        if valid_tag(text) {
            return Ok(Reference::Tag(text.to_string()));
        }
        Err(ApiError::new(
            Code::ManifestInvalid,
            format!("invalid tag {text:?}: tags are up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"),
        )
        .with_status(400))
    }
}

pub fn parse_digest(text: &str) -> ApiResult<Digest> {
    text.parse::<Digest>().map_err(|_| {
        ApiError::new(
            Code::DigestInvalid,
            format!("invalid digest {text:?}: expected sha256:<64 lowercase hex digits>"),
        )
    })
}

/// An upload id we made: 32 hex digits in UUID form. Anything else is not
/// ours (and never becomes a path).
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

fn new_upload_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    // A version 4 UUID.
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// An upload in progress. Its lock is held by the request writing to it, so
/// chunks of one upload are applied one at a time, in order.
#[derive(Debug)]
pub struct Upload {
    pub id: String,
    pub repo: String,
    hasher: Sha256,
    size: u64,
    /// Finished or cancelled: a request that waited for the lock must not
    /// write to it.
    gone: bool,
}

impl Upload {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The `Range` header value of the bytes received: `0-<last>`
    /// (`0-0` when empty, as distribution sends).
    pub fn range(&self) -> String {
        format!("0-{}", self.size.saturating_sub(1))
    }
}

pub type UploadHandle = Arc<tokio::sync::Mutex<Upload>>;

/// What a stored manifest is, for GET/HEAD.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub path: PathBuf,
    pub size: u64,
}

/// What a manifest PUT did.
#[derive(Debug)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    uploads: Mutex<HashMap<String, UploadHandle>>,
    counter: AtomicU64,
}

impl Storage {
    /// Opens (and creates the layout of) the storage at `root`.
    pub fn open(root: &Path) -> io::Result<Storage> {
        for sub in ["blobs/sha256", "uploads", "repositories"] {
            fs::create_dir_all(root.join(sub))?;
        }
        Ok(Storage {
            root: root.to_path_buf(),
            uploads: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.root, digest)
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    fn layer_link(&self, repo: &str, digest: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_layers/sha256")
            .join(digest.hex())
    }

    fn revision_link(&self, repo: &str, digest: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions/sha256")
            .join(digest.hex())
    }

    fn tag_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags").join(tag)
    }

    fn referrers_dir(&self, repo: &str, subject: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_referrers/sha256")
            .join(subject.hex())
    }

    /// A temp name in `uploads/` (same filesystem as the blobs, so the
    /// rename is atomic).
    fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("uploads")
            .join(format!(".{what}-{}-{n}", std::process::id()))
    }

    /// Writes `data` to `path` by temp name, fsync and rename.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let temp = self.temp_path("write");
        let result = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(data)?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    pub fn repo_exists(&self, repo: &str) -> bool {
        let dir = self.repo_dir(repo);
        dir.join("_manifests").is_dir() || dir.join("_layers").is_dir()
    }

    /// The blob's path and size, if `repo` has it (a layer or config pushed
    /// or mounted there, or one of its manifests).
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Option<(PathBuf, u64)> {
        let linked =
            self.layer_link(repo, digest).is_file() || self.revision_link(repo, digest).is_file();
        if !linked {
            return None;
        }
        let path = self.blob_path(digest);
        let size = fs::metadata(&path).ok()?.len();
        Some((path, size))
    }

    fn link_layer(&self, repo: &str, digest: &Digest) -> io::Result<()> {
        let link = self.layer_link(repo, digest);
        if link.is_file() {
            return Ok(());
        }
        self.write_atomic(&link, digest.to_string().as_bytes())
    }

    /// Cross-repository mount: links `from`'s blob into `repo`. False if
    /// `from` does not have it.
    pub fn mount(&self, repo: &str, from: &str, digest: &Digest) -> ApiResult<bool> {
        if validate_name(from).is_err() || self.blob_in_repo(from, digest).is_none() {
            return Ok(false);
        }
        self.link_layer(repo, digest)
            .map_err(|e| ApiError::internal(format!("link {digest} into {repo}"), e))?;
        Ok(true)
    }

    /// Removes `repo`'s link to a blob (the blob itself goes with `gc`).
    pub fn delete_blob(&self, repo: &str, digest: &Digest) -> ApiResult<()> {
        match fs::remove_file(self.layer_link(repo, digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ApiError::new(
                Code::BlobUnknown,
                format!("blob {digest} is unknown to repository {repo}"),
            )),
            Err(e) => Err(ApiError::internal(format!("delete blob {digest}"), e)),
        }
    }

    // -- uploads ---------------------------------------------------------

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    pub fn start_upload(&self, repo: &str) -> ApiResult<UploadHandle> {
        let fail = |e| ApiError::internal("start an upload", e);
        let id = new_upload_id().map_err(fail)?;
        let dir = self.upload_dir(&id);
        fs::create_dir_all(&dir).map_err(fail)?;
        File::create(dir.join("data")).map_err(fail)?;
        fs::write(dir.join("repo"), repo).map_err(fail)?;
        let upload = Arc::new(tokio::sync::Mutex::new(Upload {
            id: id.clone(),
            repo: repo.to_string(),
            hasher: Sha256::new(),
            size: 0,
            gone: false,
        }));
        self.lock_uploads().insert(id, upload.clone());
        Ok(upload)
    }

    fn lock_uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, UploadHandle>> {
        // A panic while holding this lock leaves a map that is still valid.
        self.uploads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The upload `id` of `repo`: from memory, or from disk after a restart
    /// (its data re-hashed).
    pub fn upload(&self, repo: &str, id: &str) -> ApiResult<UploadHandle> {
        let unknown = || {
            ApiError::new(
                Code::BlobUploadUnknown,
                format!("upload {id} is unknown to repository {repo}"),
            )
        };
        if !valid_upload_id(id) {
            return Err(unknown());
        }
        if let Some(upload) = self.lock_uploads().get(id).cloned() {
            return Ok(upload);
        }
        let dir = self.upload_dir(id);
        let owner = fs::read_to_string(dir.join("repo")).map_err(|_| unknown())?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut file = File::open(dir.join("data")).map_err(|_| unknown())?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| ApiError::internal(format!("read upload {id}"), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let upload = Arc::new(tokio::sync::Mutex::new(Upload {
            id: id.to_string(),
            repo: owner,
            hasher,
            size,
            gone: false,
        }));
        Ok(self
            .lock_uploads()
            .entry(id.to_string())
            .or_insert(upload)
            .clone())
    }

    /// Checks that a locked upload is still there and belongs to `repo`.
    pub fn check_upload(upload: &Upload, repo: &str) -> ApiResult<()> {
        if upload.gone || upload.repo != repo {
            return Err(ApiError::new(
                Code::BlobUploadUnknown,
                format!("upload {} is unknown to repository {repo}", upload.id),
            ));
        }
        Ok(())
    }

    /// Streams `body` onto the end of the upload. With `range` (from
    /// `Content-Range`), the chunk must start where the upload ends and be
    /// exactly that long. A chunk that fails in any way is taken back
    /// whole: the upload is as it was before.
    pub async fn append<B>(
        &self,
        upload: &mut Upload,
        mut body: B,
        range: Option<(u64, u64)>,
        content_length: Option<u64>,
    ) -> ApiResult<()>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let start = upload.size;
        let mut limit = None;
        if let Some((first, last)) = range {
            if first != start || last < first {
                return Err(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!(
                        "chunk {first}-{last} is out of order: the upload has {start} bytes, the next chunk starts at {start}"
                    ),
                )
                .with_status(416));
            }
            let length = last - first + 1;
            if content_length.is_some_and(|declared| declared != length) {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    format!(
                        "Content-Length {} does not match Content-Range {first}-{last}",
                        content_length.unwrap_or_default()
                    ),
                ));
            }
            limit = Some(length);
        }
        let limit = limit.or(content_length);
        let path = self.upload_dir(&upload.id).join("data");
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| ApiError::internal(format!("open upload {}", upload.id), e))?;
        let mut writer = ChunkWriter::new(file);
        let mut hasher = upload.hasher.clone();
        let mut received = 0u64;
        let result: ApiResult<()> = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    ApiError::new(
                        Code::BlobUploadInvalid,
                        format!("reading the request body failed after {received} bytes: {e}"),
                    )
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                received += data.len() as u64;
                if limit.is_some_and(|limit| received > limit) {
                    return Err(ApiError::new(
                        Code::SizeInvalid,
                        format!(
                            "the body is larger than the {} bytes declared",
                            limit.unwrap_or_default()
                        ),
                    ));
                }
                hasher.update(&data);
                writer.write(data).await?;
            }
            if limit.is_some_and(|limit| received < limit) {
                return Err(ApiError::new(
                    Code::SizeInvalid,
                    format!(
                        "the body has {received} bytes, {} were declared",
                        limit.unwrap_or_default()
                    ),
                ));
            }
            writer.flush().await
        }
        .await;
        match result {
            Ok(()) => {
                upload.hasher = hasher;
                upload.size = start + received;
                Ok(())
            }
            Err(error) => {
                // Take the chunk back: the upload stays at `start`.
                let file = writer.into_file().await;
                let truncated = match file {
                    Some(file) => file.set_len(start),
                    None => OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(start)),
                };
                if let Err(e) = truncated {
                    tracing::warn!("take back a failed chunk of upload {}: {e}", upload.id);
                }
                Err(error)
            }
        }
    }

    /// Verifies the upload against `expected` and makes it a blob of its
    /// repository. A mismatch throws the upload away: nothing is stored.
    pub fn finish(&self, upload: &mut Upload, expected: &Digest) -> ApiResult<()> {
        if expected.algorithm() != Algorithm::Sha256 {
            self.remove_upload(upload);
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("digest {expected}: only sha256 is supported"),
            ));
        }
        let actual = Digest::of_hasher(upload.hasher.clone());
        if &actual != expected {
            self.remove_upload(upload);
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!(
                    "the content uploaded ({} bytes) has digest {actual}, not {expected}; nothing was stored",
                    upload.size
                ),
            )
            .with_detail(json!({ "expected": expected.to_string(), "actual": actual.to_string() })));
        }
        let data = self.upload_dir(&upload.id).join("data");
        let target = self.blob_path(expected);
        let commit = || -> io::Result<()> {
            if !target.is_file() {
                File::open(&data)?.sync_all()?;
                let parent = target.parent().unwrap_or(&self.root);
                fs::create_dir_all(parent)?;
                fs::rename(&data, &target)?;
                File::open(parent)?.sync_all()?;
            }
            self.link_layer(&upload.repo, expected)
        };
        let result = commit().map_err(|e| ApiError::internal(format!("store blob {expected}"), e));
        self.remove_upload(upload);
        result
    }

    /// Cancels (or cleans up after) an upload.
    pub fn remove_upload(&self, upload: &mut Upload) {
        upload.gone = true;
        self.lock_uploads().remove(&upload.id);
        let _ = fs::remove_dir_all(self.upload_dir(&upload.id));
    }

    /// Removes uploads untouched for `ttl` (and temp files a crash left);
    /// returns how many. An upload a request holds is never removed.
    pub fn purge_uploads(&self, ttl: Duration) -> usize {
        let Ok(entries) = fs::read_dir(self.root.join("uploads")) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let touched = fs::metadata(path.join("data"))
                .or_else(|_| entry.metadata())
                .and_then(|m| m.modified())
                .unwrap_or(now);
            let old = now.duration_since(touched).unwrap_or_default() >= ttl;
            if !old {
                continue;
            }
            if name.starts_with('.') {
                let _ = fs::remove_file(&path);
                continue;
            }
            let handle = self.lock_uploads().get(&name).cloned();
            match handle {
                Some(handle) => {
                    let Ok(mut upload) = handle.try_lock() else {
                        continue;
                    };
                    self.remove_upload(&mut upload);
                }
                None => {
                    let _ = fs::remove_dir_all(&path);
                }
            }
            tracing::info!("removed upload {name}, abandoned for over {ttl:?}");
            removed += 1;
        }
        removed
    }

    // -- manifests -------------------------------------------------------

    fn resolve(&self, repo: &str, reference: &Reference) -> ApiResult<Digest> {
        let unknown = || {
            ApiError::new(
                Code::ManifestUnknown,
                format!(
                    "manifest {} is unknown to repository {repo}",
                    show(reference)
                ),
            )
        };
        let digest = match reference {
            Reference::Digest(digest) => digest.clone(),
            Reference::Tag(tag) => {
                let text = fs::read_to_string(self.tag_path(repo, tag)).map_err(|_| unknown())?;
                text.trim().parse().map_err(|_| unknown())?
            }
        };
        Ok(digest)
    }

    pub fn get_manifest(&self, repo: &str, reference: &Reference) -> ApiResult<StoredManifest> {
        if !self.repo_exists(repo) {
            return Err(ApiError::new(
                Code::NameUnknown,
                format!("repository {repo} is not known to this registry"),
            ));
        }
        let digest = self.resolve(repo, reference)?;
        let unknown = || {
            ApiError::new(
                Code::ManifestUnknown,
                format!(
                    "manifest {} is unknown to repository {repo}",
                    show(reference)
                ),
            )
        };
        let media_type =
            fs::read_to_string(self.revision_link(repo, &digest)).map_err(|_| unknown())?;
        let path = self.blob_path(&digest);
        let size = fs::metadata(&path).map_err(|_| unknown())?.len();
        Ok(StoredManifest {
            digest,
            media_type: media_type.trim().to_string(),
            path,
            size,
        })
    }

    /// Validates and stores a manifest: JSON of a known media type, its
    /// config and layers (or, for an index, its manifests) present in the
    /// repository; tagged if `reference` is a tag; recorded as a referrer
    /// of its subject.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        body: &[u8],
    ) -> ApiResult<PutManifest> {
        let digest = Digest::of(body);
        if let Reference::Digest(expected) = reference
            && expected != &digest
        {
            return Err(ApiError::new(
                Code::DigestInvalid,
                format!("the manifest's digest is {digest}, not {expected}"),
            ));
        }
        let parsed = parse_manifest(content_type, body)?;
        for descriptor in &parsed.blobs {
            if descriptor.is_non_distributable() && !descriptor.urls.is_empty() {
                continue;
            }
            let Some((_, size)) = self.blob_in_repo(repo, &descriptor.digest) else {
                return Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!(
                        "blob {} ({}) is not in repository {repo}: push it first",
                        descriptor.digest, descriptor.media_type
                    ),
                )
                .with_detail(json!({ "digest": descriptor.digest.to_string() })));
            };
            if size != descriptor.size {
                return Err(ApiError::new(
                    Code::ManifestInvalid,
                    format!(
                        "blob {} has {size} bytes, the manifest says {}",
                        descriptor.digest, descriptor.size
                    ),
                ));
            }
        }
        for child in &parsed.children {
            if !self.revision_link(repo, &child.digest).is_file() {
                return Err(ApiError::new(
                    Code::ManifestBlobUnknown,
                    format!(
                        "manifest {} listed in the index is not in repository {repo}: push it first",
                        child.digest
                    ),
                )
                .with_detail(json!({ "digest": child.digest.to_string() })));
            }
        }
        let fail = |e| ApiError::internal(format!("store manifest {digest}"), e);
        let target = self.blob_path(&digest);
        if !target.is_file() {
            self.write_atomic(&target, body).map_err(fail)?;
        }
        self.write_atomic(
            &self.revision_link(repo, &digest),
            parsed.media_type.as_bytes(),
        )
        .map_err(fail)?;
        if let Reference::Tag(tag) = reference {
            self.write_atomic(&self.tag_path(repo, tag), digest.to_string().as_bytes())
                .map_err(fail)?;
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        if let Some(subject) = &subject {
            let mut descriptor = json!({
                "mediaType": parsed.media_type,
                "digest": digest.to_string(),
                "size": body.len(),
            });
            if let Some(artifact_type) = &parsed.artifact_type {
                descriptor["artifactType"] = json!(artifact_type);
            }
            if !parsed.annotations.is_empty() {
                descriptor["annotations"] = json!(parsed.annotations);
            }
            let path = self.referrers_dir(repo, subject).join(digest.hex());
            self.write_atomic(&path, descriptor.to_string().as_bytes())
                .map_err(fail)?;
        }
        Ok(PutManifest { digest, subject })
    }

    /// Deletes a tag, or a manifest by digest (with the tags pointing to it
    /// and its referrer entry).
    pub fn delete_manifest(&self, repo: &str, reference: &Reference) -> ApiResult<()> {
        let unknown = || {
            ApiError::new(
                Code::ManifestUnknown,
                format!(
                    "manifest {} is unknown to repository {repo}",
                    show(reference)
                ),
            )
        };
        match reference {
            Reference::Tag(tag) => fs::remove_file(self.tag_path(repo, tag)).map_err(|_| unknown()),
            Reference::Digest(digest) => {
                let link = self.revision_link(repo, digest);
                if !link.is_file() {
                    return Err(unknown());
                }
                // Its referrer entry, if it has a subject.
                if let Ok(body) = fs::read(self.blob_path(digest))
                    && let Ok(value) = serde_json::from_slice::<Value>(&body)
                    && let Some(subject) = value
                        .pointer("/subject/digest")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<Digest>().ok())
                {
                    let _ = fs::remove_file(self.referrers_dir(repo, &subject).join(digest.hex()));
                }
                for tag in self.tags(repo).unwrap_or_default() {
                    if self
                        .resolve(repo, &Reference::Tag(tag.clone()))
                        .ok()
                        .as_ref()
                        == Some(digest)
                    {
                        let _ = fs::remove_file(self.tag_path(repo, &tag));
                    }
                }
                fs::remove_file(link)
                    .map_err(|e| ApiError::internal(format!("delete manifest {digest}"), e))
            }
        }
    }

    /// The repository's tags, sorted.
    pub fn tags(&self, repo: &str) -> ApiResult<Vec<String>> {
        if !self.repo_exists(repo) {
            return Err(ApiError::new(
                Code::NameUnknown,
                format!("repository {repo} is not known to this registry"),
            ));
        }
        let mut tags: Vec<String> = match fs::read_dir(self.repo_dir(repo).join("_manifests/tags"))
        {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|t| valid_tag(t))
                .collect(),
            Err(_) => Vec::new(),
        };
        tags.sort();
        Ok(tags)
    }

    /// Every repository with manifests, sorted.
    pub fn catalog(&self) -> Vec<String> {
        let mut names = Vec::new();
        walk_repositories(&self.root.join("repositories"), "", &mut names);
        names.sort();
        names
    }

    /// The descriptors of the manifests whose subject is `subject`, those
    /// of `artifact_type` only if given.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Vec<Value> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir(self.referrers_dir(repo, subject)) else {
            return found;
        };
        for entry in entries.flatten() {
            let Ok(digest) =
                format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>()
            else {
                continue;
            };
            if !self.revision_link(repo, &digest).is_file() {
                continue;
            }
            let Ok(text) = fs::read(entry.path()) else {
                continue;
            };
            let Ok(descriptor) = serde_json::from_slice::<Value>(&text) else {
                continue;
            };
            let kind = descriptor.get("artifactType").and_then(Value::as_str);
            if artifact_type.is_some_and(|wanted| kind != Some(wanted)) {
                continue;
            }
            found.push(descriptor);
        }
        found.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        found
    }
}

fn show(reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => tag.clone(),
        Reference::Digest(digest) => digest.to_string(),
    }
}

pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    let algorithm = match digest.algorithm() {
        Algorithm::Sha256 => "sha256",
        Algorithm::Sha512 => "sha512",
    };
    root.join("blobs")
        .join(algorithm)
        .join(&digest.hex()[..2])
        .join(digest.hex())
}

fn walk_repositories(dir: &Path, prefix: &str, names: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || !entry.path().is_dir() {
            continue;
        }
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.path().join("_manifests").is_dir() {
            names.push(full.clone());
        }
        walk_repositories(&entry.path(), &full, names);
    }
}

/// A manifest as the server needs it: what it references.
#[derive(Debug)]
pub struct ParsedManifest {
    pub media_type: String,
    /// Config and layers (image manifests).
    pub blobs: Vec<Descriptor>,
    /// Manifests (indexes).
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

fn is_generic(content_type: &str) -> bool {
    matches!(
        content_type,
        "" | "application/json" | "application/octet-stream"
    )
}

/// Parses a manifest for validation: its kind from `Content-Type` or its
/// `mediaType` (which must agree), its references, subject and artifact
/// type (an image manifest's falls back to its config's media type, as the
/// referrers API wants).
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> ApiResult<ParsedManifest> {
    let invalid = |why: String| ApiError::new(Code::ManifestInvalid, why);
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the manifest is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid("the manifest is not a JSON object".to_string()));
    }
    let declared = value.get("mediaType").and_then(Value::as_str);
    if let Some(declared) = declared
        && !is_generic(&content_type)
        && declared != content_type
    {
        return Err(invalid(format!(
            "the manifest's mediaType {declared} does not match its Content-Type {content_type}"
        )));
    }
    let media_type = match (declared, is_generic(&content_type)) {
        (_, false) => content_type.clone(),
        (Some(declared), true) => declared.to_string(),
        (None, true) if value.get("manifests").is_some() => MEDIA_TYPE_OCI_INDEX.to_string(),
        (None, true) => MEDIA_TYPE_OCI_MANIFEST.to_string(),
    };
    if matches!(
        media_type.as_str(),
        MEDIA_TYPE_DOCKER_SCHEMA1 | MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED
    ) || value.get("schemaVersion").and_then(Value::as_u64) == Some(1)
    {
        return Err(invalid(
            "Docker schema1 manifests are not supported: push schema2 or OCI".to_string(),
        ));
    }
    if value.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid(
            "the manifest's schemaVersion must be 2".to_string(),
        ));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fields {
        #[serde(default)]
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Vec<Descriptor>,
        #[serde(default)]
        subject: Option<Descriptor>,
        #[serde(default)]
        artifact_type: Option<String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let fields: Fields = serde_json::from_value(value)
        .map_err(|e| invalid(format!("the manifest is malformed: {e}")))?;
    let mut parsed = ParsedManifest {
        media_type: media_type.clone(),
        blobs: Vec::new(),
        children: Vec::new(),
        subject: fields.subject,
        artifact_type: fields.artifact_type,
        annotations: fields.annotations,
    };
    match media_type.as_str() {
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => {
            let Some(config) = fields.config else {
                return Err(invalid("an image manifest needs a config".to_string()));
            };
            if parsed.artifact_type.is_none() && media_type == MEDIA_TYPE_OCI_MANIFEST {
                parsed.artifact_type = Some(config.media_type.clone());
            }
            parsed.blobs.push(config);
            parsed.blobs.extend(fields.layers);
        }
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => {
            if fields.config.is_some() {
                return Err(invalid("an index has no config".to_string()));
            }
            parsed.children = fields.manifests;
        }
        other => {
            return Err(invalid(format!(
                "manifest media type {other:?} is not supported: use an OCI image manifest or index, or a Docker schema2 manifest or list"
            )));
        }
    }
    Ok(parsed)
}

/// Batches writes and makes them off the async threads, one piece at a
/// time (so memory stays at one buffer per upload).
struct ChunkWriter {
    file: Option<File>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn new(file: File) -> ChunkWriter {
        ChunkWriter {
            file: Some(file),
            buffer: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    async fn write(&mut self, data: Bytes) -> ApiResult<()> {
        self.buffer.extend_from_slice(&data);
        if self.buffer.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> ApiResult<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(mut file) = self.file.take() else {
            return Err(ApiError::internal(
                "write upload",
                "a previous write failed",
            ));
        };
        let buffer = std::mem::take(&mut self.buffer);
        let (file, buffer, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_all(&buffer);
            (file, buffer, result)
        })
        .await
        .map_err(|e| ApiError::internal("write upload", e))?;
        self.file = Some(file);
        self.buffer = buffer;
        self.buffer.clear();
        result.map_err(|e| ApiError::internal("write upload", e))
    }

    async fn into_file(self) -> Option<File> {
        self.file
    }
}

/// sha256 of a hasher's input, as a [`Digest`].
trait OfHasher {
    fn of_hasher(hasher: Sha256) -> Digest;
}

impl OfHasher for Digest {
    fn of_hasher(hasher: Sha256) -> Digest {
        format!("sha256:{}", hex::encode(hasher.finalize()))
            .parse()
            .expect("a sha256 digest printed as 64 hex digits parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for good in [
            "a",
            "busybox",
            "library/busybox",
            "a.b/c_d/e__f/g-h/i---j",
            "0/1/2",
        ] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "A",
            "../etc",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "a/_manifests",
            "a..b",
            "a._b",
            "-a",
            "a-",
            "a___b",
            "a/./b",
            "a%2F..",
        ] {
            let error = validate_name(bad).unwrap_err();
            assert_eq!(error.code, Code::NameInvalid, "{bad}");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags_and_references() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_x.1-2"));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a/b"));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        assert_eq!(
            Reference::parse("sha256:abc").unwrap_err().code,
            Code::DigestInvalid
        );
        assert!(valid_upload_id(&new_upload_id().unwrap()));
        assert!(!valid_upload_id("../../../../etc/passwd-aaaaaaaaaaaaaa"));
    }

    #[test]
    fn manifests_are_checked_for_kind_and_agreement() {
        let config = format!(
            r#"{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}}"#,
            Digest::of(b"{}")
        );
        let manifest = format!(r#"{{"schemaVersion":2,"config":{config},"layers":[]}}"#);
        let parsed = parse_manifest(Some(MEDIA_TYPE_OCI_MANIFEST), manifest.as_bytes()).unwrap();
        assert_eq!(parsed.blobs.len(), 1);
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let mismatch = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_INDEX}","config":{config}}}"#
        );
        let error = parse_manifest(Some(MEDIA_TYPE_OCI_MANIFEST), mismatch.as_bytes()).unwrap_err();
        assert_eq!(error.code, Code::ManifestInvalid);
        assert!(parse_manifest(None, b"not json").is_err());
        assert!(parse_manifest(None, br#"{"schemaVersion":1}"#).is_err());
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        let parsed = parse_manifest(None, index.as_bytes()).unwrap();
        assert_eq!(parsed.media_type, MEDIA_TYPE_OCI_INDEX);
    }
}
