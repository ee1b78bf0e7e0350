//! Pushing an image from the content store: the config and the layers
//! (in parallel, bounded as pulls are), each skipped when the repository
//! already has it, mounted from another repository of the same registry
//! when one the caller names has it, else uploaded streaming from its file;
//! then the manifest, byte for byte as stored, under the tag.
//!
//! Progress goes to a callback as [`PushEvent`]s, in the states docker
//! prints (`Preparing`, `Waiting`, `Pushing`, `Pushed`, `Layer already
//! exists`, `Mounted from ...`).

use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use keel_image::content::ContentStore;
use keel_image::digest::Digest;
use keel_image::manifest::{Descriptor, Document};
use keel_image::reference::Reference;
use tokio::io::AsyncReadExt;

use crate::client::{Client, UploadMode};
use crate::error::{Error, Result};
pub use crate::pull::BlobKind;

/// How many blobs upload at once (docker's default is 5; pulls use 3).
pub const DEFAULT_PUSH_CONCURRENCY: usize = 3;

/// Blobs up to this size go in one PUT; larger ones in PATCH chunks.
pub const MONOLITHIC_LIMIT: u64 = 64 << 20;

/// The chunk size of a chunked upload.
pub const CHUNK_SIZE: usize = 16 << 20;

/// Where one blob's upload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushState {
    Preparing,
    Waiting,
    Pushing,
    Pushed,
    AlreadyExists,
    /// Mounted from this repository of the same registry.
    Mounted(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub digest: Digest,
    pub kind: BlobKind,
    pub current: u64,
    pub total: u64,
    pub state: PushState,
}

pub type PushProgressFn = Arc<dyn Fn(PushEvent) + Send + Sync>;

#[derive(Clone)]
pub struct PushOptions {
    /// Blobs uploaded at once (at least 1).
    pub concurrency: usize,
    pub progress: Option<PushProgressFn>,
    /// Other repositories of the same registry that may hold the blobs
    /// (the image's other names there): tried as cross-repository mounts
    /// before uploading.
    pub mount_from: Vec<String>,
    /// Per blob, more repositories of the same registry that should hold
    /// it (other images with that layer, tagged there): tried first.
    pub blob_sources: std::collections::HashMap<Digest, Vec<String>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            concurrency: DEFAULT_PUSH_CONCURRENCY,
            progress: None,
            mount_from: Vec::new(),
            blob_sources: Default::default(),
        }
    }
}

impl fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushOptions")
            .field("concurrency", &self.concurrency)
            .field("mount_from", &self.mount_from)
            .finish_non_exhaustive()
    }
}

/// Pushes the image whose manifest is `manifest_digest` in `store` to
/// `reference` (its tag, or its digest, or `latest`). Returns the digest
/// of the manifest as the registry now serves it.
pub async fn push(
    client: &Client,
    store: &ContentStore,
    reference: &Reference,
    manifest_digest: &Digest,
    manifest_media_type: &str,
    options: &PushOptions,
) -> Result<Digest> {
    let registry = reference.registry();
    let repository = reference.repository();
    let data = store
        .read(manifest_digest)
        .map_err(|e| Error::image(format!("read manifest {manifest_digest}"), e))?;
    let manifest = match Document::parse(Some(manifest_media_type), &data) {
        Ok(Document::Manifest(manifest)) => manifest,
        Ok(Document::Index(_)) => {
            return Err(Error::msg(format!(
                "push {reference}: {manifest_digest} is an index; only image manifests are pushed"
            )));
        }
        Err(e) => {
            return Err(Error::image(
                format!("push {reference}: manifest {manifest_digest}"),
                e,
            ));
        }
    };

    // Layers bottom first, then the config, as docker does; each once.
    let mut blobs: Vec<(BlobKind, Descriptor)> = manifest
        .layers
        .iter()
        .map(|l| (BlobKind::Layer, l.clone()))
        .collect();
    blobs.push((BlobKind::Config, manifest.config.clone()));
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|(_, d)| seen.insert(d.digest.clone()));
    // Non-distributable layers stay where their URLs point: docker does
    // not push them either, and registries take manifests without them.
    blobs.retain(|(_, d)| !is_foreign(d) || d.urls.is_empty());
    for (kind, descriptor) in &blobs {
        emit(options, descriptor, *kind, 0, PushState::Preparing);
    }
    for (kind, descriptor) in &blobs {
        emit(options, descriptor, *kind, 0, PushState::Waiting);
    }
    stream::iter(blobs.into_iter().map(|(kind, descriptor)| async move {
        push_blob(
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

    let tag = match (reference.tag(), reference.digest()) {
        (Some(tag), _) => tag.to_string(),
        (None, Some(digest)) => {
            if digest != manifest_digest {
                return Err(Error::msg(format!(
                    "push {reference}: the image's manifest is {manifest_digest}, not {digest}"
                )));
            }
            digest.to_string()
        }
        (None, None) => "latest".to_string(),
    };
    client
        .put_manifest(
            registry,
            repository,
            &tag,
            manifest_media_type,
            Bytes::from(data),
        )
        .await
}

fn is_foreign(descriptor: &Descriptor) -> bool {
    descriptor.media_type.contains("foreign") || descriptor.media_type.contains("nondistributable")
}

fn emit(
    options: &PushOptions,
    descriptor: &Descriptor,
    kind: BlobKind,
    current: u64,
    state: PushState,
) {
    if let Some(progress) = &options.progress {
        progress(PushEvent {
            digest: descriptor.digest.clone(),
            kind,
            current,
            total: descriptor.size,
            state,
        });
    }
}

async fn push_blob(
    client: &Client,
    store: &ContentStore,
    registry: &str,
    repository: &str,
    descriptor: &Descriptor,
    kind: BlobKind,
    options: &PushOptions,
) -> Result<()> {
    let digest = &descriptor.digest;
    if client
        .head_blob(registry, repository, digest)
        .await?
        .is_some()
    {
        emit(
            options,
            descriptor,
            kind,
            descriptor.size,
            PushState::AlreadyExists,
        );
        return Ok(());
    }
    let mut sources: Vec<&String> = options
        .blob_sources
        .get(digest)
        .into_iter()
        .flatten()
        .chain(&options.mount_from)
        .filter(|r| *r != repository)
        .collect();
    sources.dedup();
    for from in sources {
        match client.mount_blob(registry, repository, digest, from).await {
            Ok(true) => {
                emit(
                    options,
                    descriptor,
                    kind,
                    descriptor.size,
                    PushState::Mounted(from.clone()),
                );
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(%digest, %from, error = %e, "cross-repository mount failed");
            }
        }
    }

    let path = store.path(digest);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::io(format!("open blob {digest} ({})", path.display()), e))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Error::io(format!("stat blob {digest}"), e))?
        .len();
    if size != descriptor.size {
        return Err(Error::msg(format!(
            "blob {digest} is {size} bytes in the content store, the manifest says {}",
            descriptor.size
        )));
    }
    emit(options, descriptor, kind, 0, PushState::Pushing);
    let report = {
        let options = options.clone();
        let descriptor = descriptor.clone();
        move |done: u64| emit(&options, &descriptor, kind, done, PushState::Pushing)
    };
    let mode = if size <= MONOLITHIC_LIMIT {
        UploadMode::Monolithic
    } else {
        UploadMode::Chunked(CHUNK_SIZE)
    };
    client
        .upload_blob(
            registry,
            repository,
            digest,
            size,
            file_stream(file, report),
            mode,
        )
        .await?;
    emit(options, descriptor, kind, size, PushState::Pushed);
    Ok(())
}

/// A file as a stream of chunks, `report`ing the bytes read about every
/// 512 KiB; memory stays at one chunk.
fn file_stream(
    file: tokio::fs::File,
    report: impl Fn(u64) + Send + Sync + 'static,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    const READ_SIZE: usize = 256 * 1024;
    let report = Arc::new(report);
    stream::unfold(
        (file, 0u64, 0u64, false),
        move |(mut file, done, reported, failed)| {
            let report = report.clone();
            async move {
                if failed {
                    return None;
                }
                let mut buffer = BytesMut::with_capacity(READ_SIZE);
                match file.read_buf(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        let done = done + n as u64;
                        let reported = if done - reported >= 512 * 1024 {
                            report(done);
                            done
                        } else {
                            reported
                        };
                        Some((Ok(buffer.freeze()), (file, done, reported, false)))
                    }
                    Err(e) => Some((Err(e), (file, done, reported, true))),
                }
            }
        },
    )
}
fn image_error(source: keel_image::Error) -> Error {
    Error::Image {
        context: "the image store".into(),
        source,
    }
}

/// Pushes the image `reference` names in `store` (`keel push`, the API's
/// `images/{name}/push`): its blobs are mounted from the registry's other
/// repositories that hold them where it can, else uploaded. The manifest's
/// digest and size.
pub async fn push_image(
    client: &Client,
    store: &keel_image::store::ImageStore,
    reference: &Reference,
    progress: Option<PushProgressFn>,
) -> Result<(Digest, u64)> {
    let record = match reference.digest() {
        Some(_) => store.resolve(&reference.full()).ok(),
        None => store
            .metadata
            .resolve_tag(&reference.full())
            .map_err(image_error)?,
    };
    let Some(record) = record else {
        return Err(Error::Msg(format!(
            "An image does not exist locally with the tag: {}",
            reference.name()
        )));
    };
    // The image's names in other repositories of the same registry: the
    // registry can mount their blobs instead of taking them again.
    let other_repositories = |tags: &[String]| -> Vec<String> {
        tags.iter()
            .filter_map(|t| Reference::parse(t).ok())
            .filter(|t| {
                t.registry() == reference.registry() && t.repository() != reference.repository()
            })
            .map(|t| t.repository().to_string())
            .collect()
    };
    let mount_from = other_repositories(&store.metadata.tags_of(&record.id).map_err(image_error)?);
    // Other images' names in other repositories of the registry: a layer
    // this image shares with one of them (a common base) is mounted from
    // there, as docker remembers where it pushed or pulled each layer.
    let mut blob_sources: std::collections::HashMap<keel_image::digest::Digest, Vec<String>> =
        Default::default();
    let wanted: std::collections::HashSet<keel_image::digest::Digest> = store
        .layers(&record)
        .map(|layers| layers.into_iter().map(|l| l.digest).collect())
        .unwrap_or_default();
    for (other, tags) in store.metadata.images().map_err(image_error)? {
        if other.id == record.id {
            continue;
        }
        let repositories = other_repositories(&tags);
        if repositories.is_empty() {
            continue;
        }
        for layer in store.layers(&other).unwrap_or_default() {
            if wanted.contains(&layer.digest) {
                let sources = blob_sources.entry(layer.digest).or_default();
                for repository in &repositories {
                    if !sources.contains(repository) {
                        sources.push(repository.clone());
                    }
                }
            }
        }
    }
    let manifest_size = std::fs::metadata(store.content.path(&record.manifest))
        .map(|m| m.len())
        .map_err(|e| Error::Io {
            context: format!("manifest {} of the image", record.manifest),
            source: e,
        })?;
    let options = PushOptions {
        progress,
        mount_from,
        blob_sources,
        ..PushOptions::default()
    };
    let digest = push(
        client,
        &store.content,
        reference,
        &record.manifest,
        &record.manifest_media_type,
        &options,
    )
    .await?;
    Ok((digest, manifest_size))
}
