//! Pulling an image into the content store: resolve the manifest (an
//! index → the manifest for the platform), then download the config and
//! the layers in parallel (bounded), each streamed into a
//! [`ContentStore::resume_ingest`] download, which verifies digest and size
//! before anything becomes visible. Blobs already in the store are skipped.
//!
//! Downloads resume: a connection that drops mid-blob is retried (up to
//! [`PullOptions::attempts`] times, as docker does) with a `Range` request
//! from the last byte received, and a pull that was killed leaves its
//! partial blobs for the next pull to carry on from. A server that ignores
//! the range sends the whole blob, which then replaces the partial; a
//! resumed blob that fails its digest check is downloaded again whole, once.
//!
//! Progress goes to a callback as [`ProgressEvent`]s, so the CLI can draw a
//! bar per layer as docker does.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use keel_image::content::ContentStore;
use keel_image::digest::Digest;
pub use keel_image::manifest::Platform;
use keel_image::manifest::{Descriptor, Index, Manifest};
use keel_image::reference::Reference;
use tokio::sync::mpsc;

use crate::client::{
    BlobStream, Client, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST, ManifestResponse,
};
use crate::error::{Error, Result};

/// How many blobs download at once (docker's default is 3).
pub const DEFAULT_CONCURRENCY: usize = 3;

/// Tries per blob before a pull gives up (docker's `max-download-attempts`).
pub const DEFAULT_ATTEMPTS: u32 = 5;

/// The wait before the first retry; each further one waits this much more.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// What kind of blob an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    Config,
    Layer,
}

/// Where one blob's download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    Waiting,
    Downloading,
    /// All bytes arrived; the digest is being checked and the blob synced.
    Verifying,
    Done,
    AlreadyExists,
    /// The connection failed; trying again (from where it stopped) after
    /// this many seconds.
    Retrying(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    pub digest: Digest,
    pub kind: BlobKind,
    pub current: u64,
    pub total: u64,
    pub state: ProgressState,
}

pub type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

#[derive(Clone)]
pub struct PullOptions {
    pub platform: Platform,
    /// Blobs downloaded at once (at least 1).
    pub concurrency: usize,
    pub progress: Option<ProgressFn>,
    /// Tries per blob when the connection fails (at least 1).
    pub attempts: u32,
    /// The wait before the first retry, growing by as much each time.
    pub retry_delay: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::current(),
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
            attempts: DEFAULT_ATTEMPTS,
            retry_delay: DEFAULT_RETRY_DELAY,
        }
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field("concurrency", &self.concurrency)
            .field("attempts", &self.attempts)
            .field("retry_delay", &self.retry_delay)
            .finish_non_exhaustive()
    }
}

/// A layer of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    /// The image manifest (for the chosen platform).
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index or manifest list, when the reference named one; it is the
    /// digest `docker images --digests` shows (the "repo digest").
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub layers: Vec<LayerInfo>,
}

impl PullResult {
    /// The digest the reference resolved to (index if any, else manifest).
    pub fn repo_digest(&self) -> &Digest {
        self.index_digest.as_ref().unwrap_or(&self.manifest_digest)
    }
}

/// Pulls `reference` for `platform` into `store` with default options.
pub async fn pull(
    client: &Client,
    store: &ContentStore,
    reference: &Reference,
    platform: &Platform,
) -> Result<PullResult> {
    let options = PullOptions {
        platform: platform.clone(),
        ..PullOptions::default()
    };
    pull_with(client, store, reference, &options).await
}

/// Pulls `reference` into `store`. The manifest (and index) are stored
/// too; recording the image in the metadata database is the caller's job.
pub async fn pull_with(
    client: &Client,
    store: &ContentStore,
    reference: &Reference,
    options: &PullOptions,
) -> Result<PullResult> {
    let registry = reference.registry();
    let repository = reference.repository();
    let top = client.get_manifest(reference).await?;
    let (index, manifest) = match top.media_type.as_str() {
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST => {
            let chosen = select_manifest(&top.data, &options.platform)
                .map_err(|e| Error::msg(format!("{reference}: {e}")))?;
            let manifest = client
                .get_manifest_in(registry, repository, &chosen.to_string())
                .await?;
            (Some(top), manifest)
        }
        _ => (None, top),
    };
    if !matches!(
        manifest.media_type.as_str(),
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST
    ) {
        return Err(Error::msg(format!(
            "{reference}: the index points to a {}, not an image manifest",
            manifest.media_type
        )));
    }
    let parsed: Manifest = serde_json::from_slice(&manifest.data).map_err(|e| {
        Error::msg(format!(
            "{reference}: invalid image manifest {}: {e}",
            manifest.digest
        ))
    })?;
    if parsed.schema_version != 2 {
        return Err(Error::msg(format!(
            "{reference}: manifest {} has schemaVersion {}, only 2 is supported",
            manifest.digest, parsed.schema_version
        )));
    }

    let mut blobs = vec![(BlobKind::Config, parsed.config.clone())];
    blobs.extend(parsed.layers.iter().map(|l| (BlobKind::Layer, l.clone())));
    // The same layer twice in one image is downloaded once.
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|(_, descriptor)| seen.insert(descriptor.digest.clone()));
    for (kind, descriptor) in &blobs {
        emit(options, descriptor, *kind, 0, ProgressState::Waiting);
    }
    stream::iter(blobs.into_iter().map(|(kind, descriptor)| async move {
        fetch_blob(
            client,
            store,
            registry,
            repository,
            &descriptor,
            kind,
            options,
        )
        .await
    }))
    .buffer_unordered(options.concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;

    // Manifests last: a stored manifest means its blobs are all there.
    store_document(store, &manifest)?;
    if let Some(index) = &index {
        store_document(store, index)?;
    }
    Ok(PullResult {
        manifest_digest: manifest.digest.clone(),
        manifest_media_type: manifest.media_type.clone(),
        index_digest: index.map(|i| i.digest),
        config_digest: parsed.config.digest.clone(),
        layers: parsed
            .layers
            .into_iter()
            .map(|l| LayerInfo {
                digest: l.digest,
                size: l.size,
                media_type: l.media_type,
            })
            .collect(),
    })
}

fn store_document(store: &ContentStore, document: &ManifestResponse) -> Result<()> {
    if store.contains(&document.digest) {
        return Ok(());
    }
    store
        .ingest(
            &document.digest,
            Some(document.data.len() as u64),
            &document.data[..],
        )
        .map(|_| ())
        .map_err(|e| Error::image(format!("store manifest {}", document.digest), e))
}

/// The digest of the index entry for `platform` (keel-image's selection:
/// attestations skipped, docker's error text when none fits).
fn select_manifest(index: &[u8], platform: &Platform) -> Result<Digest> {
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| Error::msg(format!("invalid manifest list: {e}")))?;
    if index.schema_version != 2 {
        return Err(Error::msg(format!(
            "manifest list has schemaVersion {}, only 2 is supported",
            index.schema_version
        )));
    }
    index
        .select(platform)
        .map(|descriptor| descriptor.digest.clone())
        .map_err(|e| Error::msg(e.to_string()))
}

fn emit(
    options: &PullOptions,
    descriptor: &Descriptor,
    kind: BlobKind,
    current: u64,
    state: ProgressState,
) {
    if let Some(progress) = &options.progress {
        progress(ProgressEvent {
            digest: descriptor.digest.clone(),
            kind,
            current,
            total: descriptor.size,
            state,
        });
    }
}

/// Non-distributable ("foreign") layers: docker fetches them from `urls`.
fn is_foreign(descriptor: &Descriptor) -> bool {
    descriptor.media_type.contains("foreign") || descriptor.media_type.contains("nondistributable")
}

async fn fetch_blob(
    client: &Client,
    store: &ContentStore,
    registry: &str,
    repository: &str,
    descriptor: &Descriptor,
    kind: BlobKind,
    options: &PullOptions,
) -> Result<()> {
    let blob = Blob {
        client,
        store,
        registry,
        repository,
        descriptor,
        kind,
        options,
    };
    if store.contains(&descriptor.digest) {
        blob.emit(descriptor.size, ProgressState::AlreadyExists);
        return Ok(());
    }
    match blob.download().await {
        // What an earlier download left was not the start of this blob
        // (a crash before its bytes reached the disk, say): once more, whole.
        Err(Failure::ResumedMismatch(e)) => {
            tracing::warn!(digest = %descriptor.digest, error = %e,
                "a resumed download failed its digest check; downloading it again whole");
            blob.download().await.map_err(Failure::into_error)
        }
        other => other.map_err(Failure::into_error),
    }
}

/// One blob of a pull, and what it needs.
struct Blob<'a> {
    client: &'a Client,
    store: &'a ContentStore,
    registry: &'a str,
    repository: &'a str,
    descriptor: &'a Descriptor,
    kind: BlobKind,
    options: &'a PullOptions,
}

/// Why a download failed.
enum Failure {
    /// A blob resumed from an earlier download's bytes failed its digest
    /// check (the partial is gone now; the next try starts from zero).
    ResumedMismatch(Error),
    Other(Error),
}

impl Failure {
    fn into_error(self) -> Error {
        match self {
            Failure::ResumedMismatch(e) | Failure::Other(e) => e,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Other(e)
    }
}

/// What the writer thread is told, in order.
enum Chunk {
    Data(Bytes),
    /// Throw away what is there: the server sends the blob from byte 0.
    Restart,
    /// Complete: verify and publish.
    End,
    /// What arrived is wrong (the server sent too much): remove it.
    Discard,
}

/// Whether a failure is worth another try from where the download is: the
/// connection failed or broke, or the server had a passing problem.
fn is_transient(e: &Error) -> bool {
    match e {
        Error::Http { .. } => true,
        Error::Registry { status, .. } => status.0 >= 500 || status.0 == 429,
        _ => false,
    }
}

impl Blob<'_> {
    fn emit(&self, current: u64, state: ProgressState) {
        emit(self.options, self.descriptor, self.kind, current, state);
    }

    fn context(&self) -> String {
        format!(
            "blob {} of {}/{}",
            self.descriptor.digest, self.registry, self.repository
        )
    }

    /// Downloads the blob into the store, resuming a partial one, retrying
    /// transient failures from the last byte received.
    async fn download(&self) -> Result<(), Failure> {
        let digest = self.descriptor.digest.clone();
        let size = self.descriptor.size;

        // The store's writes are synchronous: a blocking thread owns the
        // download and takes chunks from a channel, a few ahead at most.
        let (sender, mut receiver) = mpsc::channel::<Chunk>(8);
        let (opened, offset) = tokio::sync::oneshot::channel::<Option<u64>>();
        let writer = {
            let store = self.store.clone();
            let digest = digest.clone();
            tokio::task::spawn_blocking(move || -> keel_image::Result<()> {
                let Some(mut ingest) = store.resume_ingest(&digest, size)? else {
                    let _ = opened.send(None);
                    return Ok(());
                };
                let _ = opened.send(Some(ingest.offset()));
                loop {
                    match receiver.blocking_recv() {
                        Some(Chunk::Data(bytes)) => ingest.write(&bytes)?,
                        Some(Chunk::Restart) => ingest.restart()?,
                        Some(Chunk::End) => return ingest.commit().map(|_| ()),
                        Some(Chunk::Discard) => {
                            ingest.discard();
                            return Ok(());
                        }
                        // Given up: what arrived stays for the next pull.
                        None => return Ok(()),
                    }
                }
            })
        };
        let written = |writer: tokio::task::JoinHandle<keel_image::Result<()>>| async move {
            writer
                .await
                .map_err(|e| Error::msg(format!("blob {digest}: the writer thread failed: {e}")))?
                .map_err(|e| Error::image(format!("pull {}", self.context()), e))
        };
        let resumed = match offset.await {
            Ok(Some(offset)) => offset,
            // Another process stored it meanwhile.
            Ok(None) => {
                written(writer).await?;
                self.emit(size, ProgressState::AlreadyExists);
                return Ok(());
            }
            // The writer could not open the download; its error says why.
            Err(_) => {
                written(writer).await?;
                return Err(
                    Error::msg(format!("{}: the download did not open", self.context())).into(),
                );
            }
        };

        let fed = self.feed(&sender, resumed).await;
        drop(sender);
        let stored = written(writer).await;
        match (fed, stored) {
            (Err(e), _) => Err(e.into()),
            (Ok(()), Err(e)) if resumed > 0 && is_mismatch(&e) => Err(Failure::ResumedMismatch(e)),
            (Ok(()), Err(e)) => Err(e.into()),
            (Ok(()), Ok(())) => {
                self.emit(size, ProgressState::Done);
                Ok(())
            }
        }
    }

    /// Streams the blob from `offset` into the writer: retries transient
    /// failures from the byte reached; sends `End` once all bytes are in.
    /// Returns Ok early if the writer stopped (its error is the one to show).
    async fn feed(&self, sender: &mpsc::Sender<Chunk>, offset: u64) -> Result<()> {
        let attempts = self.options.attempts.max(1);
        let mut position = offset;
        let mut attempt = 0;
        let mut restarted = false;
        loop {
            attempt += 1;
            let (e, transient) = match self.feed_once(sender, &mut position).await {
                Ok(Fed::Complete) => {
                    self.emit(position, ProgressState::Verifying);
                    let _ = sender.send(Chunk::End).await;
                    return Ok(());
                }
                Ok(Fed::WriterStopped) => return Ok(()),
                Err(FeedError::Wrong(e)) => {
                    let _ = sender.send(Chunk::Discard).await;
                    return Err(e);
                }
                Err(FeedError::Failed(e)) => {
                    let transient = is_transient(&e);
                    (e, transient)
                }
                Err(FeedError::Cut(e)) => (e, true),
            };
            if position > 0 && !transient && !restarted {
                // Not the answer to our Range we expect (a 416, or a part
                // starting elsewhere): from byte 0, at once.
                tracing::debug!(digest = %self.descriptor.digest, error = %e,
                    "the server would not resume; downloading from the start");
                restarted = true;
                if sender.send(Chunk::Restart).await.is_err() {
                    return Ok(());
                }
                position = 0;
                continue;
            }
            if !transient || attempt >= attempts {
                return Err(e);
            }
            let delay = self.options.retry_delay * attempt;
            tracing::warn!(digest = %self.descriptor.digest, error = %e, attempt, position,
                "download failed; retrying");
            self.emit(position, ProgressState::Retrying(delay.as_secs().max(1)));
            tokio::time::sleep(delay).await;
        }
    }

    /// One request: from `position` (updated as bytes go to the writer).
    async fn feed_once(
        &self,
        sender: &mpsc::Sender<Chunk>,
        position: &mut u64,
    ) -> Result<Fed, FeedError> {
        let size = self.descriptor.size;
        let blob = open_blob(
            self.client,
            self.registry,
            self.repository,
            self.descriptor,
            *position,
        )
        .await
        .map_err(FeedError::Failed)?;
        if blob.offset != *position {
            // The server sent the whole blob instead of the rest.
            if sender.send(Chunk::Restart).await.is_err() {
                return Ok(Fed::WriterStopped);
            }
            *position = blob.offset;
        }
        if let Some(length) = blob.size
            && blob.offset + length != size
        {
            return Err(FeedError::Wrong(Error::msg(format!(
                "{}: the registry serves {} bytes, the manifest says {size}",
                self.context(),
                blob.offset + length,
            ))));
        }
        self.emit(*position, ProgressState::Downloading);
        let mut stream = blob.stream;
        let mut last_report = *position;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(FeedError::Failed)?;
            if *position + chunk.len() as u64 > size {
                return Err(FeedError::Wrong(Error::msg(format!(
                    "{}: the registry sent more than the {size} bytes the manifest says",
                    self.context()
                ))));
            }
            *position += chunk.len() as u64;
            if sender.send(Chunk::Data(chunk)).await.is_err() {
                return Ok(Fed::WriterStopped);
            }
            // Report about every 512 KiB, not every chunk.
            if *position - last_report >= 512 * 1024 {
                last_report = *position;
                self.emit(*position, ProgressState::Downloading);
            }
        }
        if *position < size {
            // The connection ended early: as good as broken.
            return Err(FeedError::Cut(Error::msg(format!(
                "{}: the connection ended after {} of {size} bytes",
                self.context(),
                *position
            ))));
        }
        Ok(Fed::Complete)
    }
}

enum Fed {
    Complete,
    WriterStopped,
}

enum FeedError {
    /// Maybe worth another try (decided by [`is_transient`]).
    Failed(Error),
    /// The body ended before the blob did: worth another try.
    Cut(Error),
    /// The server sent something that is not this blob: no retry, and
    /// what arrived is removed.
    Wrong(Error),
}

fn is_mismatch(e: &Error) -> bool {
    matches!(
        e,
        Error::Image {
            source: keel_image::Error::DigestMismatch { .. },
            ..
        }
    )
}

async fn open_blob(
    client: &Client,
    registry: &str,
    repository: &str,
    descriptor: &Descriptor,
    offset: u64,
) -> Result<BlobStream> {
    if is_foreign(descriptor) && !descriptor.urls.is_empty() {
        let mut last = None;
        for url in &descriptor.urls {
            match client.get_url(url, offset).await {
                Ok(blob) => return Ok(blob),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "foreign layer URL failed");
                    last = Some(e);
                }
            }
        }
        // As docker does, fall back to the registry itself.
        return match client
            .get_blob_from(registry, repository, &descriptor.digest, offset)
            .await
        {
            Ok(blob) => Ok(blob),
            Err(e) => Err(last.unwrap_or(e)),
        };
    }
    client
        .get_blob_from(registry, repository, &descriptor.digest, offset)
        .await
}

/// What [`pull_image`] did.
pub struct Pulled {
    pub result: PullResult,
    pub manifest: Manifest,
    pub record: keel_image::metadata::ImageRecord,
    /// The tag now names a different image than before (or a new one).
    pub updated: bool,
}

/// Pulls `reference` and records it in `store` as an image, tagged unless
/// it was pulled by digest: `keel pull` and the API's `images/create`.
pub async fn pull_image(
    client: &Client,
    store: &mut keel_image::store::ImageStore,
    reference: &Reference,
    options: &PullOptions,
) -> Result<Pulled> {
    let image = |context: &str| {
        let context = context.to_string();
        move |source| Error::Image { context, source }
    };
    let before = store.resolve(&reference.full()).ok().map(|r| r.id);
    let result = pull_with(client, &store.content, reference, options).await?;
    let bytes = store
        .content
        .read(&result.manifest_digest)
        .map_err(image("read the pulled manifest"))?;
    let document = keel_image::manifest::Document::parse(Some(&result.manifest_media_type), &bytes)
        .map_err(image("parse the pulled manifest"))?;
    let keel_image::manifest::Document::Manifest(manifest) = document else {
        return Err(Error::Msg(format!(
            "the registry's manifest {} is an index",
            result.manifest_digest
        )));
    };
    let tags: Vec<Reference> = if reference.digest().is_some() {
        Vec::new()
    } else {
        vec![reference.clone()]
    };
    let record = store
        .commit(
            &result.manifest_digest,
            &result.manifest_media_type,
            &manifest,
            &tags,
        )
        .map_err(image("record the pulled image"))?;
    Ok(Pulled {
        updated: before.as_ref() != Some(&record.id),
        result,
        manifest,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex_of(n))
    }

    fn hex_of(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn index() -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_INDEX,
            "manifests": [
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(1), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(2), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(3), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(4), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(5), "size": 1,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
                {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest(6), "size": 1,
                 "platform": {"os": "windows", "architecture": "amd64"}}
            ]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn selects_the_platform_from_an_index() {
        let index = index();
        for (platform, want) in [
            ("linux/amd64", 1),
            ("linux/x86_64", 1),
            ("linux/arm/v6", 2),
            ("linux/arm/v7", 3),
            ("linux/arm64", 4),
            ("linux/arm64/v8", 4),
            ("linux/aarch64", 4),
            ("windows/amd64", 6),
        ] {
            let platform = Platform::parse(platform).unwrap();
            assert_eq!(
                select_manifest(&index, &platform).unwrap().to_string(),
                digest(want),
                "{platform}"
            );
        }
        let err = select_manifest(&index, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no matching manifest for linux/s390x in the manifest list entries"),
            "{err}"
        );
        assert!(select_manifest(b"[]", &Platform::current()).is_err());
        assert!(
            select_manifest(
                br#"{"schemaVersion":1,"manifests":[]}"#,
                &Platform::current()
            )
            .is_err()
        );
    }
}
