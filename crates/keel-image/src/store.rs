//! The image store: the content store, the layer snapshots and the
//! metadata together, and the operations on whole images that work without
//! a registry: commit a pulled image, `load` an archive, `import` a rootfs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::content::{ContentStore, MAX_DOCUMENT_SIZE};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layer::UnpackOptions;
use crate::manifest::{
    self, Descriptor, Document, History, ImageConfig, Manifest, Platform, RootFs,
};
use crate::metadata::{ImageRecord, Metadata};
use crate::reference::Reference;
use crate::snapshot::Snapshots;

pub struct ImageStore {
    pub content: ContentStore,
    pub snapshots: Snapshots,
    pub metadata: Metadata,
    root: PathBuf,
}

const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

impl ImageStore {
    /// Opens the store under keel's root (`/var/lib/keel` by default).
    pub fn open(root: &Path) -> Result<ImageStore> {
        Ok(ImageStore {
            content: ContentStore::open(root)?,
            snapshots: Snapshots::open(root)?,
            metadata: Metadata::open(root)?,
            root: root.to_path_buf(),
        })
    }

    /// keel's root the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn unpack_options() -> Result<UnpackOptions> {
        let root = nix::unistd::geteuid().is_root();
        Ok(UnpackOptions {
            keep_ownership: root,
            allow_devices: root,
            parents: Vec::new(),
            expansion: crate::layer::ExpansionLimit::from_env()?,
        })
    }

    /// Makes an image whose manifest, config and layers are already in the
    /// content store usable: unpacks missing snapshots, then records it and
    /// its tags in one transaction. Nothing is tagged if any step fails.
    pub fn commit(
        &mut self,
        manifest_digest: &Digest,
        manifest_media_type: &str,
        manifest: &Manifest,
        tags: &[Reference],
    ) -> Result<ImageRecord> {
        let config_bytes = self.content.read(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::msg(format!("image config {}: {e}", manifest.config.digest)))?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::msg(format!(
                "image {}: the manifest lists {} layers but the config {} diff ids",
                manifest_digest,
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let chain_ids = manifest::chain_ids(diff_ids);
        let mut options = Self::unpack_options()?;
        let mut size = 0;
        let layers = manifest.layers.iter().zip(diff_ids).zip(&chain_ids);
        for (i, ((layer, diff_id), chain_id)) in layers.enumerate() {
            if !self.snapshots.contains(chain_id) {
                let blob = self.content.open_blob(&layer.digest)?;
                let reader = std::io::BufReader::with_capacity(256 * 1024, blob);
                // Each layer is unpacked over the ones below it (topmost
                // first), so its paths resolve through their symlinks.
                options.parents = self.snapshots.lower_dirs(&chain_ids[..i])?;
                self.snapshots.unpack(chain_id, diff_id, reader, &options)?;
            }
            size += self.snapshots.size(chain_id);
        }
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            manifest: manifest_digest.clone(),
            manifest_media_type: manifest_media_type.to_string(),
            created: config.created.clone().unwrap_or_default(),
            size,
            platform: config.platform().to_string(),
            chain_ids,
        };
        let tags: Vec<String> = tags.iter().map(Reference::full).collect();
        self.metadata.put_image(&record, &tags)?;
        Ok(record)
    }

    /// `keel load`: a docker archive (`manifest.json`) or an OCI layout
    /// (`index.json`), as a tar file or a directory. Returns the images
    /// with the tags they got.
    pub fn load(&mut self, path: &Path) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let archive = if path.is_dir() {
            Archive::from_dir(path, &self.content)?
        } else {
            let file = fs::File::open(path)
                .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
            // `docker save | gzip` archives load as they are.
            Archive::from_tar(crate::layer::decompressed(file)?, &self.content)?
        };
        self.load_archive(&archive)
    }

    /// `keel load` from a stream (stdin).
    pub fn load_stream(&mut self, reader: impl Read) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let archive = Archive::from_tar(crate::layer::decompressed(reader)?, &self.content)?;
        self.load_archive(&archive)
    }

    fn load_archive(&mut self, archive: &Archive) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        if let Some(manifest_json) = archive.documents.get("manifest.json") {
            return self.load_docker_archive(archive, manifest_json);
        }
        if let Some(index_json) = archive.documents.get("index.json") {
            return self.load_oci_layout(index_json);
        }
        Err(Error::msg(
            "not an image archive: neither manifest.json (docker save) nor index.json (OCI layout) found",
        ))
    }

    fn load_docker_archive(
        &mut self,
        archive: &Archive,
        manifest_json: &[u8],
    ) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(manifest_json)
            .map_err(|e| Error::msg(format!("manifest.json in the archive: {e}")))?;
        let mut loaded = Vec::new();
        for entry in entries {
            let config_digest = archive.digest_of(&entry.config)?;
            let config_size = self
                .content
                .open_blob(&config_digest)?
                .metadata()
                .map(|m| m.len())
                .unwrap_or(0);
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let digest = archive.digest_of(layer)?;
                let size = fs::metadata(self.content.path(&digest))
                    .map(|m| m.len())
                    .unwrap_or(0);
                let mut prefix = [0u8; 4];
                let n = self
                    .content
                    .open_blob(&digest)?
                    .read(&mut prefix)
                    .unwrap_or(0);
                let media_type = match crate::layer::detect(&prefix[..n]) {
                    crate::layer::Compression::Gzip => manifest::MEDIA_TYPE_DOCKER_LAYER_GZIP,
                    crate::layer::Compression::Zstd => manifest::MEDIA_TYPE_DOCKER_LAYER_ZSTD,
                    crate::layer::Compression::None => manifest::MEDIA_TYPE_DOCKER_LAYER,
                };
                layers.push(descriptor(media_type, digest, size));
            }
            // A docker archive has no manifest: make the schema2 one
            // `docker push` would.
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(manifest::MEDIA_TYPE_DOCKER_MANIFEST.to_string()),
                artifact_type: None,
                config: descriptor(
                    manifest::MEDIA_TYPE_DOCKER_CONFIG,
                    config_digest,
                    config_size,
                ),
                layers,
                subject: None,
                annotations: BTreeMap::new(),
            };
            let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
            let manifest_digest = self.content.write(&manifest_bytes)?;
            let tags = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>>>()?;
            let record = self.commit(
                &manifest_digest,
                manifest::MEDIA_TYPE_DOCKER_MANIFEST,
                &manifest,
                &tags,
            )?;
            let tags = self.metadata.tags_of(&record.id)?;
            loaded.push((record, tags));
        }
        Ok(loaded)
    }

    fn load_oci_layout(&mut self, index_json: &[u8]) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let Document::Index(index) = Document::parse(None, index_json)? else {
            return Err(Error::msg(
                "index.json of the OCI layout is not an image index",
            ));
        };
        let mut loaded = Vec::new();
        for entry in &index.manifests {
            // containerd's full name when there is one (`docker save` and
            // `keel save` put it beside a ref.name holding just the tag).
            let tag = entry
                .annotations
                .get(crate::export::ANNOTATION_CONTAINERD_NAME)
                .or_else(|| entry.annotations.get(ANNOTATION_REF_NAME))
                .map(|name| ref_name_to_reference(name))
                .transpose()?;
            let (digest, media_type, manifest) = self.resolve_manifest(entry)?;
            let tags: Vec<Reference> = tag.into_iter().collect();
            let record = self.commit(&digest, &media_type, &manifest, &tags)?;
            let tags = self.metadata.tags_of(&record.id)?;
            loaded.push((record, tags));
        }
        Ok(loaded)
    }

    /// A descriptor to an image manifest, going through an index for this
    /// machine's platform when it points at one.
    fn resolve_manifest(&self, descriptor: &Descriptor) -> Result<(Digest, String, Manifest)> {
        let bytes = self.content.read(&descriptor.digest)?;
        match Document::parse(Some(&descriptor.media_type), &bytes)? {
            Document::Manifest(manifest) => Ok((
                descriptor.digest.clone(),
                descriptor.media_type.clone(),
                manifest,
            )),
            Document::Index(index) => {
                let chosen = index.select(&Platform::current())?;
                self.resolve_manifest(chosen)
            }
        }
    }

    /// `keel import`: a root filesystem tarball (plain, gzip or zstd) as a
    /// one-layer image, tagged `reference`.
    pub fn import(&mut self, tarball: impl Read, reference: &Reference) -> Result<ImageRecord> {
        self.import_with(tarball, Some(reference), |_| {})
    }

    /// [`ImageStore::import`], untagged if `reference` is None, with
    /// `change` applied to the new config (`import -c`, `-m`) before it
    /// is stored.
    pub fn import_with(
        &mut self,
        tarball: impl Read,
        reference: Option<&Reference>,
        change: impl FnOnce(&mut ImageConfig),
    ) -> Result<ImageRecord> {
        let (layer_digest, layer_size) = self.content.ingest_any(tarball)?;
        let mut prefix = [0u8; 4];
        let n = self
            .content
            .open_blob(&layer_digest)?
            .read(&mut prefix)
            .unwrap_or(0);
        let compression = crate::layer::detect(&prefix[..n]);
        // The diff id is the digest of the uncompressed tar: unpack once to
        // learn it, into the snapshot it will be anyway.
        let blob = self.content.open_blob(&layer_digest)?;
        let diff_id = self.snapshots.unpack_base(blob, &Self::unpack_options()?)?;
        let now = now_rfc3339();
        let platform = Platform::current();
        let config = ImageConfig {
            created: Some(now.clone()),
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            variant: platform.variant.clone(),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: vec![diff_id],
            },
            history: vec![History {
                created: Some(now),
                created_by: Some("keel import".to_string()),
                comment: Some("Imported from tarball".to_string()),
                ..History::default()
            }],
            ..ImageConfig::default()
        };
        let mut config = config;
        change(&mut config);
        let layer_media_type = match compression {
            crate::layer::Compression::Gzip => manifest::MEDIA_TYPE_OCI_LAYER_GZIP,
            crate::layer::Compression::Zstd => manifest::MEDIA_TYPE_OCI_LAYER_ZSTD,
            crate::layer::Compression::None => manifest::MEDIA_TYPE_OCI_LAYER,
        };
        let references: Vec<Reference> = reference.into_iter().cloned().collect();
        self.put_image(
            &config,
            &[descriptor(layer_media_type, layer_digest, layer_size)],
            &references,
        )
    }

    /// A new image: `base` with one more layer on top (`keel commit`, and
    /// the steps of a build). `layer` is an uncompressed tar in the image
    /// format (whiteouts as `.wh.` files); `change` edits the new config
    /// (its `config`, `author`, ...); a history entry is added. Tagged
    /// `reference` when given. Nothing is recorded if any step fails.
    pub fn add_layer(
        &mut self,
        base: &ImageRecord,
        layer: impl Read,
        history: History,
        change: impl FnOnce(&mut ImageConfig),
        reference: Option<&Reference>,
    ) -> Result<ImageRecord> {
        let mut layers = self.layers(base)?;
        let mut config = self.config(base)?;
        let (layer_digest, layer_size) = self.content.ingest_any(layer)?;
        // Uncompressed: the diff id is the blob's digest.
        config.rootfs.diff_ids.push(layer_digest.clone());
        let now = now_rfc3339();
        config.created = Some(now.clone());
        config.history.push(History {
            created: Some(now),
            ..history
        });
        change(&mut config);
        layers.push(descriptor(
            manifest::MEDIA_TYPE_OCI_LAYER,
            layer_digest,
            layer_size,
        ));
        let tags: Vec<Reference> = reference.into_iter().cloned().collect();
        self.put_image(&config, &layers, &tags)
    }

    /// The layer descriptors of an image's manifest, bottom first.
    pub fn layers(&self, record: &ImageRecord) -> Result<Vec<Descriptor>> {
        match Document::parse(
            Some(&record.manifest_media_type),
            &self.content.read(&record.manifest)?,
        )? {
            Document::Manifest(manifest) => Ok(manifest.layers),
            Document::Index(_) => Err(Error::msg(format!(
                "image {}: its manifest is an index",
                record.id
            ))),
        }
    }

    /// Records an image made of `config` and `layers` (already in the
    /// content store, their snapshots made or to be made from them), tagged
    /// `tags`: the end of a build. Docker layer media types become OCI's.
    pub fn put_image(
        &mut self,
        config: &ImageConfig,
        layers: &[Descriptor],
        tags: &[Reference],
    ) -> Result<ImageRecord> {
        let config_bytes = serde_json::to_vec(config).expect("config serializes");
        let config_digest = self.content.write(&config_bytes)?;
        let mut layers = layers.to_vec();
        for layer in layers.iter_mut() {
            layer.media_type = match layer.media_type.as_str() {
                manifest::MEDIA_TYPE_DOCKER_LAYER => manifest::MEDIA_TYPE_OCI_LAYER.to_string(),
                manifest::MEDIA_TYPE_DOCKER_LAYER_GZIP => {
                    manifest::MEDIA_TYPE_OCI_LAYER_GZIP.to_string()
                }
                manifest::MEDIA_TYPE_DOCKER_LAYER_ZSTD => {
                    manifest::MEDIA_TYPE_OCI_LAYER_ZSTD.to_string()
                }
                other => other.to_string(),
            };
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest::MEDIA_TYPE_OCI_MANIFEST.to_string()),
            artifact_type: None,
            config: descriptor(
                manifest::MEDIA_TYPE_OCI_CONFIG,
                config_digest,
                config_bytes.len() as u64,
            ),
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        let manifest_digest = self.content.write(&manifest_bytes)?;
        self.commit(
            &manifest_digest,
            manifest::MEDIA_TYPE_OCI_MANIFEST,
            &manifest,
            tags,
        )
    }

    /// A new layer from an overlay upper directory (a build step's changes):
    /// packed into the content store, and the directory itself moved to be
    /// its snapshot on `parents` (no second unpack). Returns the layer's
    /// descriptor and chain id.
    pub fn add_layer_from_dir(
        &mut self,
        upper: &Path,
        parents: &[Digest],
    ) -> Result<(Descriptor, Digest)> {
        let (digest, size) = std::thread::scope(|scope| {
            let (reader, writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
            let packer = scope.spawn(move || {
                crate::pack::pack(
                    upper,
                    std::io::BufWriter::with_capacity(256 * 1024, writer),
                    &crate::pack::PackOptions {
                        overlay_diff: true,
                        ..Default::default()
                    },
                )
            });
            let ingested = self
                .content
                .ingest_any(std::io::BufReader::with_capacity(256 * 1024, reader));
            let packed = packer
                .join()
                .map_err(|_| Error::msg("the layer packer failed"))?;
            // A store that failed (a full disk) closes the pipe, and the
            // packer then fails too: the store's error is the cause.
            let ingested = ingested?;
            packed?;
            Ok::<_, Error>(ingested)
        })?;
        let chain_id = match parents.last() {
            None => digest.clone(),
            Some(parent) => Digest::of(format!("{parent} {digest}").as_bytes()),
        };
        self.snapshots.adopt(&chain_id, upper, size)?;
        Ok((
            descriptor(manifest::MEDIA_TYPE_OCI_LAYER, digest, size),
            chain_id,
        ))
    }

    /// Makes the snapshot `chain_id` from the uncompressed layer blob
    /// `diff_id` on `parents` unless it is there.
    pub fn ensure_snapshot(
        &mut self,
        chain_id: &Digest,
        diff_id: &Digest,
        parents: &[Digest],
    ) -> Result<()> {
        if self.snapshots.contains(chain_id) {
            return Ok(());
        }
        let mut options = Self::unpack_options()?;
        options.parents = self.snapshots.lower_dirs(parents)?;
        let blob = self.content.open_blob(diff_id)?;
        let reader = std::io::BufReader::with_capacity(256 * 1024, blob);
        self.snapshots.unpack(chain_id, diff_id, reader, &options)?;
        Ok(())
    }

    /// Now, RFC 3339 in UTC to the second (as image configs carry it).
    pub fn now() -> String {
        now_rfc3339()
    }

    /// An image by what a user types: a name (`busybox`, normalized), a
    /// full reference, `name@sha256:...` or an id (prefix).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        if let Ok(reference) = Reference::parse(name) {
            if let Some(digest) = reference.digest() {
                for (record, _) in self.metadata.images()? {
                    if &record.manifest == digest {
                        return Ok(record);
                    }
                }
            } else if let Some(record) = self.metadata.resolve_tag(&reference.full())? {
                return Ok(record);
            }
        }
        if let Some(record) = self.metadata.find_by_id_prefix(name)? {
            return Ok(record);
        }
        Err(Error::msg(format!("No such image: {name}")))
    }
}

impl ImageStore {
    /// The image's config.
    pub fn config(&self, record: &ImageRecord) -> Result<ImageConfig> {
        let bytes = self.content.read(&record.id)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::msg(format!("image config {}: {e}", record.id)))
    }

    /// Unpacked size of each layer, bottom first.
    pub fn layer_sizes(&self, record: &ImageRecord) -> Vec<u64> {
        record
            .chain_ids
            .iter()
            .map(|c| self.snapshots.size(c))
            .collect()
    }

    /// `rmi`: untags `name`; deletes the image when no tag is left (or when
    /// `name` is an id: then only if it has at most one tag, or `force`).
    /// `holders` are what outside the store uses the image (containers):
    /// while any exists the image is kept (untagged with `force`), as
    /// docker does. Returns docker's lines (`Untagged: ...`, `Deleted: ...`).
    pub fn remove(&mut self, name: &str, force: bool, holders: &[Holder]) -> Result<Vec<String>> {
        let record = self.resolve(name)?;
        let tags = self.metadata.tags_of(&record.id)?;
        let by_tag = Reference::parse(name)
            .ok()
            .filter(|r| r.digest().is_none() && tags.contains(&r.full()));
        let mut lines = Vec::new();
        match by_tag {
            Some(reference) if tags.len() > 1 => {
                self.metadata.untag(&reference.full())?;
                lines.push(format!("Untagged: {}", familiar(&reference)));
                return Ok(lines);
            }
            Some(reference) => {
                if let Some(holder) = holders.first() {
                    if !force {
                        return Err(Error::msg(format!(
                            "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                            short_id(&holder.id),
                            record.id.short()
                        )));
                    }
                    // Forced: the name goes, the image stays for its containers.
                    self.metadata.untag(&reference.full())?;
                    lines.push(format!("Untagged: {}", familiar(&reference)));
                    return Ok(lines);
                }
                self.metadata.untag(&reference.full())?;
                lines.push(format!("Untagged: {}", familiar(&reference)));
            }
            None => {
                if let Some(holder) = holders.iter().find(|h| h.active) {
                    return Err(Error::msg(format!(
                        "conflict: unable to delete {} (cannot be forced) - image is being used by running container {}",
                        record.id.short(),
                        short_id(&holder.id)
                    )));
                }
                if let Some(holder) = holders.first()
                    && !force
                {
                    return Err(Error::msg(format!(
                        "conflict: unable to delete {} (must be forced) - image is being used by stopped container {}",
                        record.id.short(),
                        short_id(&holder.id)
                    )));
                }
                if tags.len() > 1 && !force {
                    return Err(Error::msg(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        record.id.short()
                    )));
                }
                for tag in &tags {
                    self.metadata.untag(tag)?;
                    if let Ok(reference) = Reference::parse(tag) {
                        lines.push(format!("Untagged: {}", familiar(&reference)));
                    }
                }
                if !holders.is_empty() {
                    return Ok(lines);
                }
            }
        }
        self.metadata.delete_image(&record.id)?;
        lines.push(format!("Deleted: {}", record.id));
        self.collect_garbage()?;
        Ok(lines)
    }

    /// Removes blobs and snapshots no image references (DESIGN: the garbage
    /// collector). An image a container uses is never deleted (see
    /// [`ImageStore::remove`]), so its layers stay.
    /// Returns the bytes freed.
    pub fn collect_garbage(&mut self) -> Result<u64> {
        let mut blobs = std::collections::BTreeSet::new();
        let mut snapshots = std::collections::BTreeSet::new();
        for (record, _) in self.metadata.images()? {
            blobs.insert(record.manifest.clone());
            blobs.insert(record.id.clone());
            if let Ok(bytes) = self.content.read(&record.manifest)
                && let Ok(Document::Manifest(manifest)) =
                    Document::parse(Some(&record.manifest_media_type), &bytes)
            {
                blobs.extend(manifest.layers.into_iter().map(|l| l.digest));
            }
            snapshots.extend(record.chain_ids.iter().cloned());
        }
        // The build cache's layers, and the snapshots below them (a cached
        // step's parents are what it needs to be used again).
        for entry in self.metadata.cache_list()? {
            blobs.extend(entry.layer);
            snapshots.extend(entry.chain_id);
        }
        let mut freed = 0;
        for (digest, size) in self.content.list()? {
            if !blobs.contains(&digest) {
                self.content.delete(&digest)?;
                freed += size;
            }
        }
        for chain_id in self.snapshots.list()? {
            if !snapshots.contains(&chain_id) {
                freed += self.snapshots.size(&chain_id);
                self.snapshots.remove(&chain_id)?;
            }
        }
        self.content.clean_ingest()?;
        self.snapshots.clean_ingest()?;
        Ok(freed)
    }

    /// What a prune reclaims beyond images: every partial download no pull
    /// holds, however recent (a pull keeps the one it writes locked; a
    /// later pull of that blob then starts over), and what killed unpacks
    /// and imports left. The bytes freed.
    pub fn reclaim_ingest(&self) -> Result<u64> {
        let (_, bytes) = self
            .content
            .clean_ingest_counting(std::time::Duration::ZERO)?;
        self.snapshots.clean_ingest()?;
        Ok(bytes)
    }

    /// `image inspect`: docker's fields that keel knows.
    pub fn inspect(&self, name: &str) -> Result<ImageInspect> {
        let record = self.resolve(name)?;
        let config = self.config(&record)?;
        let tags = self.metadata.tags_of(&record.id)?;
        let repo_digests: Vec<String> = tags
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .map(|r| format!("{}@{}", r.familiar_name(), record.manifest))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let repo_tags: Vec<String> = tags
            .iter()
            .filter_map(|t| Reference::parse(t).ok())
            .map(|r| familiar(&r))
            .collect();
        Ok(ImageInspect {
            id: record.id.to_string(),
            repo_tags,
            repo_digests,
            created: record.created.clone(),
            author: config.author.clone().unwrap_or_default(),
            config: config.config.clone(),
            container_config: None,
            architecture: config.architecture.clone(),
            variant: config.variant.clone(),
            os: config.os.clone(),
            size: record.size,
            rootfs: ImageRootFs {
                kind: config.rootfs.kind.clone(),
                layers: config
                    .rootfs
                    .diff_ids
                    .iter()
                    .map(|d| d.to_string())
                    .collect(),
            },
            graph_driver: self.graph_driver(&record),
            metadata: ImageMetadata {
                last_tag_time: None,
            },
            descriptor: ImageDescriptor {
                media_type: record.manifest_media_type.clone(),
                digest: record.manifest.to_string(),
            },
        })
    }
}

impl ImageStore {
    /// docker's `GraphDriver` of an image: its top snapshot as `UpperDir`,
    /// the ones below as `LowerDir` (topmost first, `:` between), the
    /// order overlayfs takes them in.
    fn graph_driver(&self, record: &ImageRecord) -> serde_json::Value {
        let dirs: Vec<String> = self
            .snapshots
            .lower_dirs(&record.chain_ids)
            .unwrap_or_default()
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        let mut data = serde_json::Map::new();
        if let Some((upper, lower)) = dirs.split_first() {
            data.insert("UpperDir".into(), upper.clone().into());
            if !lower.is_empty() {
                data.insert("LowerDir".into(), lower.join(":").into());
            }
        }
        serde_json::json!({"Name": "overlay", "Data": data})
    }
}

/// docker's `image inspect` object (`keel image inspect`, the API's
/// `GET /images/{name}/json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: String,
    pub author: String,
    pub config: Option<crate::manifest::ContainerConfig>,
    /// The config again, for API clients of 1.44 and older (docker-compose
    /// 1.x reads it); the API sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_config: Option<crate::manifest::ContainerConfig>,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: u64,
    #[serde(rename = "RootFS")]
    pub rootfs: ImageRootFs,
    pub graph_driver: serde_json::Value,
    pub metadata: ImageMetadata,
    pub descriptor: ImageDescriptor,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageRootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageMetadata {
    #[serde(rename = "LastTagTime")]
    pub last_tag_time: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageDescriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
}

/// Something outside the image store that uses an image (a container):
/// its id, and whether it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub active: bool,
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `busybox:latest`, `localhost:5000/app:1`, as docker prints names.
fn familiar(reference: &Reference) -> String {
    match reference.tag() {
        Some(tag) => format!("{}:{tag}", reference.familiar_name()),
        None => reference.familiar_name(),
    }
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        urls: Vec::new(),
        annotations: BTreeMap::new(),
        platform: None,
        artifact_type: None,
    }
}

/// OCI layouts name images with a bare tag ("latest") or a full reference.
fn ref_name_to_reference(name: &str) -> Result<Reference> {
    Reference::parse(name).or_else(|_| Reference::parse(&format!("localhost/{name}")))
}

/// Now, RFC 3339 in UTC to the second (as image configs carry it).
fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// An image archive's files: blobs went straight into the content store
/// (verified against their names where they have one); small JSON files
/// are kept here by their path in the archive.
struct Archive {
    documents: BTreeMap<String, Vec<u8>>,
    /// Archive path → digest, for blobs that are not named by digest
    /// (`<id>/layer.tar`, `<id>.json` in older docker archives).
    blobs: BTreeMap<String, Digest>,
}

impl Archive {
    fn from_tar(reader: impl Read, content: &ContentStore) -> Result<Archive> {
        let mut archive = Archive {
            documents: BTreeMap::new(),
            blobs: BTreeMap::new(),
        };
        let mut tar = tar::Archive::new(reader);
        let entries = tar
            .entries()
            .map_err(|e| Error::io("read image archive", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read image archive", e))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| Error::io("read image archive entry name", e))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            archive.add(&path, entry.header().size().unwrap_or(0), entry, content)?;
        }
        Ok(archive)
    }

    fn from_dir(dir: &Path, content: &ContentStore) -> Result<Archive> {
        let mut archive = Archive {
            documents: BTreeMap::new(),
            blobs: BTreeMap::new(),
        };
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let full = dir.join(&rel);
            let entries = fs::read_dir(&full)
                .map_err(|e| Error::io(format!("read {}", full.display()), e))?;
            for entry in entries.flatten() {
                let rel_path = rel.join(entry.file_name());
                let file_type = entry.file_type().map_err(|e| Error::io("stat", e))?;
                if file_type.is_dir() {
                    stack.push(rel_path);
                } else if file_type.is_file() {
                    let file = fs::File::open(entry.path())
                        .map_err(|e| Error::io(format!("open {}", entry.path().display()), e))?;
                    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    archive.add(&rel_path.to_string_lossy(), size, file, content)?;
                }
            }
        }
        Ok(archive)
    }

    fn add(
        &mut self,
        path: &str,
        size: u64,
        reader: impl Read,
        content: &ContentStore,
    ) -> Result<()> {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            let digest: Digest = format!("sha256:{hex}").parse().map_err(|_| {
                Error::msg(format!(
                    "image archive: blob name {path:?} is not a sha256 digest"
                ))
            })?;
            if !content.contains(&digest) {
                content.ingest(&digest, Some(size), reader)?;
            }
            self.blobs.insert(path.to_string(), digest);
        } else if path.ends_with(".json") || path == "oci-layout" || path == "repositories" {
            if size > MAX_DOCUMENT_SIZE {
                return Err(Error::msg(format!(
                    "image archive: {path} is too large ({size} bytes)"
                )));
            }
            let mut data = Vec::with_capacity(size as usize);
            reader
                .take(MAX_DOCUMENT_SIZE)
                .read_to_end(&mut data)
                .map_err(|e| Error::io(format!("read {path} in the image archive"), e))?;
            // Old docker archives name configs <id>.json: they are blobs too.
            if path != "manifest.json" && path != "index.json" && !path.contains('/') {
                let digest = content.write(&data)?;
                self.blobs.insert(path.to_string(), digest);
            }
            self.documents.insert(path.to_string(), data);
        } else {
            // Layers: `<id>/layer.tar` (docker), `<hex>.tar` (podman), or
            // whatever manifest.json names; hashed as they stream in.
            let (digest, _) = content.ingest_any(reader)?;
            self.blobs.insert(path.to_string(), digest);
        }
        Ok(())
    }

    fn digest_of(&self, path: &str) -> Result<Digest> {
        let path = path.trim_start_matches("./");
        self.blobs.get(path).cloned().ok_or_else(|| {
            Error::msg(format!(
                "image archive: manifest.json names {path:?}, which the archive does not hold"
            ))
        })
    }
}
