//! Pulling an image into the content store: resolve the manifest (an
//! index → the manifest for the platform), then download the config and
//! the layers in parallel (bounded), each streamed through
//! [`ContentStore::ingest`], which verifies digest and size before anything
//! becomes visible. Blobs already in the store are skipped.
//!
//! Progress goes to a callback as [`ProgressEvent`]s, so the CLI can draw a
//! bar per layer as docker does.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

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
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::current(),
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
        }
    }
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field("concurrency", &self.concurrency)
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
    let digest = &descriptor.digest;
    if store.contains(digest) {
        emit(
            options,
            descriptor,
            kind,
            descriptor.size,
            ProgressState::AlreadyExists,
        );
        return Ok(());
    }
    let blob = open_blob(client, registry, repository, descriptor).await?;
    if let Some(size) = blob.size
        && size != descriptor.size
    {
        return Err(Error::msg(format!(
            "blob {digest} of {registry}/{repository}: the registry serves {size} bytes, the manifest says {}",
            descriptor.size
        )));
    }
    emit(options, descriptor, kind, 0, ProgressState::Downloading);

    // The store's ingest is synchronous: it reads from a channel on a
    // blocking thread while this task feeds it, a few chunks ahead at most.
    let (sender, receiver) = mpsc::channel::<Chunk>(8);
    let ingest = {
        let store = store.clone();
        let digest = digest.clone();
        let size = descriptor.size;
        tokio::task::spawn_blocking(move || {
            store.ingest(&digest, Some(size), ChannelReader::new(receiver))
        })
    };
    let feed = async {
        let mut stream = blob.stream;
        let mut done = 0u64;
        let mut last_report = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = sender.send(Chunk::Failed(e.to_string())).await;
                    return Err(e);
                }
            };
            done += chunk.len() as u64;
            if done > descriptor.size {
                let _ = sender.send(Chunk::Failed("too many bytes".into())).await;
                return Err(Error::msg(format!(
                    "blob {digest} of {registry}/{repository}: the registry sent more than the {} bytes the manifest says",
                    descriptor.size
                )));
            }
            if sender.send(Chunk::Data(chunk)).await.is_err() {
                // The ingest stopped early; its error says why.
                return Ok(());
            }
            // Report about every 512 KiB, not every chunk.
            if done - last_report >= 512 * 1024 {
                last_report = done;
                emit(options, descriptor, kind, done, ProgressState::Downloading);
            }
        }
        emit(options, descriptor, kind, done, ProgressState::Verifying);
        let _ = sender.send(Chunk::End).await;
        Ok(())
    };
    let fed = feed.await;
    drop(sender);
    let ingested = ingest
        .await
        .map_err(|e| Error::msg(format!("blob {digest}: the ingest task failed: {e}")))?;
    fed?;
    ingested.map_err(|e| {
        Error::image(
            format!("pull blob {digest} from {registry}/{repository}"),
            e,
        )
    })?;
    emit(
        options,
        descriptor,
        kind,
        descriptor.size,
        ProgressState::Done,
    );
    Ok(())
}

async fn open_blob(
    client: &Client,
    registry: &str,
    repository: &str,
    descriptor: &Descriptor,
) -> Result<BlobStream> {
    if is_foreign(descriptor) && !descriptor.urls.is_empty() {
        let mut last = None;
        for url in &descriptor.urls {
            match client.get_url(url).await {
                Ok(blob) => return Ok(blob),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "foreign layer URL failed");
                    last = Some(e);
                }
            }
        }
        // As docker does, fall back to the registry itself.
        return match client
            .get_blob(registry, repository, &descriptor.digest)
            .await
        {
            Ok(blob) => Ok(blob),
            Err(e) => Err(last.unwrap_or(e)),
        };
    }
    client
        .get_blob(registry, repository, &descriptor.digest)
        .await
}

enum Chunk {
    Data(Bytes),
    End,
    Failed(String),
}

/// A `Read` over chunks sent from async code; an end without `End` is an
/// error, so a cut download never passes for a short blob.
struct ChannelReader {
    receiver: mpsc::Receiver<Chunk>,
    current: Bytes,
    finished: bool,
}

impl ChannelReader {
    fn new(receiver: mpsc::Receiver<Chunk>) -> ChannelReader {
        ChannelReader {
            receiver,
            current: Bytes::new(),
            finished: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.finished {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.finished = true,
                Some(Chunk::Failed(reason)) => {
                    return Err(io::Error::other(format!("download failed: {reason}")));
                }
                None => return Err(io::Error::other("download interrupted")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
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

    #[test]
    fn channel_reader_needs_an_explicit_end() {
        let (sender, receiver) = mpsc::channel(4);
        sender
            .try_send(Chunk::Data(Bytes::from_static(b"abc")))
            .unwrap();
        sender.try_send(Chunk::End).unwrap();
        let mut out = Vec::new();
        ChannelReader::new(receiver).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");

        let (sender, receiver) = mpsc::channel(4);
        sender
            .try_send(Chunk::Data(Bytes::from_static(b"abc")))
            .unwrap();
        drop(sender);
        let err = ChannelReader::new(receiver)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
    }
}
