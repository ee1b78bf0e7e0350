//! What keel's objects take on disk (`keel system df`, the API's
//! `/system/df`): images with the part they share, containers' writable
//! layers, volumes and the build cache, each with what is in use and what
//! could go.

use std::collections::{BTreeMap, BTreeSet};

use keel_image::digest::Digest;
use keel_image::metadata::{CacheRecord, ImageRecord};
use keel_image::store::ImageStore;

use crate::db::{Container, Volume};
use crate::engine::Engine;
use crate::error::Result;

/// One image: its size, the part it shares with other images (snapshots
/// more than one image uses), and the containers that use it.
#[derive(Debug, Clone)]
pub struct ImageUsage {
    pub record: ImageRecord,
    pub tags: Vec<String>,
    pub size: u64,
    pub shared: u64,
    pub containers: usize,
}

#[derive(Debug, Clone)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    /// Every blob and snapshot once.
    pub images_total: u64,
    pub images_active: usize,
    /// What the images no container uses hold alone.
    pub images_reclaimable: u64,
    /// Each container with the bytes of its writable layer.
    pub containers: Vec<(Container, u64)>,
    /// Each volume with its bytes and how many containers mount it.
    pub volumes: Vec<(Volume, u64, usize)>,
    /// The build cache's layer records.
    pub cache: Vec<CacheRecord>,
    /// The cache's layers once each, and those no image uses.
    pub cache_total: u64,
    pub cache_reclaimable: u64,
}

impl DiskUsage {
    pub fn containers_total(&self) -> u64 {
        self.containers.iter().map(|(_, s)| s).sum()
    }
    pub fn containers_active(&self) -> usize {
        self.containers
            .iter()
            .filter(|(c, _)| c.state.status.is_active())
            .count()
    }
    pub fn containers_reclaimable(&self) -> u64 {
        self.containers
            .iter()
            .filter(|(c, _)| !c.state.status.is_active())
            .map(|(_, s)| s)
            .sum()
    }
    pub fn volumes_total(&self) -> u64 {
        self.volumes.iter().map(|(_, s, _)| s).sum()
    }
    pub fn volumes_active(&self) -> usize {
        self.volumes
            .iter()
            .filter(|(_, _, links)| *links > 0)
            .count()
    }
    pub fn volumes_reclaimable(&self) -> u64 {
        self.volumes
            .iter()
            .filter(|(_, _, links)| *links == 0)
            .map(|(_, s, _)| s)
            .sum()
    }

    /// docker's `/system/df` object.
    pub fn api_value(&self, engine: &mut Engine) -> serde_json::Value {
        let sizes: BTreeMap<String, u64> = self
            .images
            .iter()
            .map(|i| (i.record.id.to_string(), i.size))
            .collect();
        serde_json::json!({
            "LayersSize": self.images_total,
            "Images": self.images.iter().map(|i| serde_json::json!({
                "Id": i.record.id.to_string(),
                "ParentId": "",
                "RepoTags": i.tags,
                "RepoDigests": [],
                "Created": super::unix_seconds(&i.record.created).unwrap_or(0),
                "Size": i.size,
                "SharedSize": i.shared,
                "Labels": {},
                "Containers": i.containers,
            })).collect::<Vec<_>>(),
            "Containers": self.containers.iter().map(|(c, own)| {
                let image = sizes.get(&c.image_id).copied().unwrap_or(0);
                serde_json::to_value(super::container::summary(engine, c, Some((*own, image))))
                    .unwrap_or_default()
            }).collect::<Vec<_>>(),
            "Volumes": self.volumes.iter().map(|(v, size, links)| {
                let mut value = engine.volume_value(v);
                value["UsageData"] = serde_json::json!({"Size": size, "RefCount": links});
                value
            }).collect::<Vec<_>>(),
            "BuildCache": self.cache.iter().map(|r| serde_json::json!({
                "ID": r.key,
                "Type": "regular",
                "Description": r.description.lines().next().unwrap_or(""),
                "InUse": false,
                "Shared": false,
                "Size": r.size,
                "CreatedAt": r.created,
                "UsageCount": 0,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Per image: its size and the part it shares with other images.
fn image_sizes(store: &ImageStore, chains: &[Vec<Digest>]) -> Vec<(u64, u64)> {
    let mut users: BTreeMap<&Digest, usize> = BTreeMap::new();
    for chain_ids in chains {
        for chain_id in chain_ids.iter().collect::<BTreeSet<_>>() {
            *users.entry(chain_id).or_default() += 1;
        }
    }
    chains
        .iter()
        .map(|chain_ids| {
            let unique: BTreeSet<&Digest> = chain_ids.iter().collect();
            let size = unique.iter().map(|c| store.snapshots.size(c)).sum();
            let shared = unique
                .iter()
                .filter(|c| users.get(*c).copied().unwrap_or(0) > 1)
                .map(|c| store.snapshots.size(c))
                .sum();
            (size, shared)
        })
        .collect()
}

/// Measures it all.
pub fn disk_usage(engine: &mut Engine, store: &ImageStore) -> Result<DiskUsage> {
    let images = store.metadata.images()?;
    let containers = engine.list()?;
    let used_images: BTreeSet<String> = containers.iter().map(|c| c.image_id.clone()).collect();
    let chains: Vec<Vec<Digest>> = images.iter().map(|(r, _)| r.chain_ids.clone()).collect();
    let sizes = image_sizes(store, &chains);
    // What the images take on disk: each blob and each snapshot once.
    let content = store.content.list()?;
    let blobs: u64 = content.iter().map(|(_, size)| size).sum();
    let snapshots: u64 = store
        .snapshots
        .list()?
        .iter()
        .map(|c| store.snapshots.size(c))
        .sum();
    let images_total = blobs + snapshots;
    // What images no container uses hold alone can go: all of it but the
    // blobs and snapshots of the images containers use.
    let mut kept_blobs = BTreeSet::new();
    let mut kept_snapshots = BTreeSet::new();
    for (record, _) in images
        .iter()
        .filter(|(r, _)| used_images.contains(&r.id.to_string()))
    {
        kept_blobs.insert(record.manifest.clone());
        kept_blobs.insert(record.id.clone());
        if let Ok(bytes) = store.content.read(&record.manifest)
            && let Ok(keel_image::manifest::Document::Manifest(manifest)) =
                keel_image::manifest::Document::parse(Some(&record.manifest_media_type), &bytes)
        {
            kept_blobs.extend(manifest.layers.into_iter().map(|l| l.digest));
        }
        kept_snapshots.extend(record.chain_ids.iter().cloned());
    }
    let kept: u64 = content
        .iter()
        .filter(|(d, _)| kept_blobs.contains(d))
        .map(|(_, size)| size)
        .sum::<u64>()
        + kept_snapshots
            .iter()
            .map(|c| store.snapshots.size(c))
            .sum::<u64>();
    let images_active = images
        .iter()
        .filter(|(r, _)| used_images.contains(&r.id.to_string()))
        .count();
    let images = images
        .into_iter()
        .zip(sizes)
        .map(|((record, tags), (size, shared))| ImageUsage {
            containers: containers
                .iter()
                .filter(|c| c.image_id == record.id.to_string())
                .count(),
            record,
            tags,
            size,
            shared,
        })
        .collect();
    let links = |name: &str| {
        containers
            .iter()
            .filter(|c| c.mounts.iter().any(|m| m.name.as_deref() == Some(name)))
            .count()
    };
    let volumes = engine
        .db
        .volumes()?
        .into_iter()
        .map(|v| {
            let size = crate::copy::tree_size(&engine.layout.volume_data(&v.name));
            let links = links(&v.name);
            (v, size, links)
        })
        .collect();
    let containers = containers
        .into_iter()
        .map(|c| {
            let size = crate::copy::tree_size(&engine.layout.diff(&c.id));
            (c, size)
        })
        .collect();
    // The build cache: its layers once each; reclaimable, those no image uses.
    let mut image_layers = BTreeSet::new();
    for (record, _) in store.metadata.images()? {
        if let Ok(layers) = store.layers(&record) {
            image_layers.extend(layers.into_iter().map(|l| l.digest));
        }
    }
    let cache: Vec<CacheRecord> = store
        .metadata
        .cache_list()?
        .into_iter()
        .filter(|r| r.layer.is_some())
        .collect();
    let mut seen = BTreeSet::new();
    let (mut cache_total, mut cache_reclaimable) = (0u64, 0u64);
    for record in &cache {
        let Some(layer) = &record.layer else { continue };
        if seen.insert(layer.clone()) {
            cache_total += record.size;
            if !image_layers.contains(layer) {
                cache_reclaimable += record.size;
            }
        }
    }
    Ok(DiskUsage {
        images,
        images_total,
        images_active,
        images_reclaimable: images_total.saturating_sub(kept),
        containers,
        volumes,
        cache,
        cache_total,
        cache_reclaimable,
    })
}
