//! The checks the parser fuzz targets run on each input, shared with the
//! tests that run them over the seed corpus and its mutations on stable
//! (`tests/parsers.rs`); the cargo-fuzz targets include this file by path.
//!
//! - [`check_document`]: a manifest, index or config as a registry may
//!   send it, under each media type keel knows and none; references and
//!   platform strings from the same bytes.
//! - [`check_archive`]: a `docker save`/`podman save`/OCI archive loaded
//!   into a fresh store: no panic, and whatever the outcome, every stored
//!   blob matches its digest, no ingest leftovers, and a failed load tags
//!   nothing.

#![allow(dead_code)]

use std::fs;
use std::path::Path;

use keel_image::digest::Digest;
use keel_image::manifest::{self, Document, ImageConfig, Platform};
use keel_image::reference::Reference;
use keel_image::store::ImageStore;

/// Media types the first byte of a document input picks from (the last
/// index means no Content-Type at all).
pub const MEDIA_TYPES: &[&str] = &[
    manifest::MEDIA_TYPE_OCI_MANIFEST,
    manifest::MEDIA_TYPE_OCI_INDEX,
    manifest::MEDIA_TYPE_DOCKER_MANIFEST,
    manifest::MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    manifest::MEDIA_TYPE_DOCKER_SCHEMA1,
    "application/json",
    "text/plain; charset=utf-8",
    "application/x-unknown",
];

/// Parses `data[1..]` as a manifest response (media type from `data[0]`)
/// and everything that follows from it; must never panic.
pub fn check_document(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let media_type = MEDIA_TYPES.get(selector as usize % (MEDIA_TYPES.len() + 1));
    if let Ok(document) = Document::parse(media_type.copied(), body) {
        // What was parsed serializes and parses back the same.
        let media_type = document.media_type().to_string();
        assert!(!media_type.is_empty(), "a parsed document has a media type");
        match &document {
            Document::Manifest(manifest) => {
                let again = serde_json::to_vec(manifest).expect("a manifest serializes");
                let back = Document::parse(Some(&media_type), &again)
                    .expect("a serialized manifest parses again");
                assert_eq!(back, document, "a manifest survives a round trip");
                for layer in &manifest.layers {
                    let _ = layer.compression();
                    let _ = layer.is_non_distributable();
                }
                let digests: Vec<Digest> =
                    manifest.layers.iter().map(|l| l.digest.clone()).collect();
                assert_eq!(manifest::chain_ids(&digests).len(), digests.len());
            }
            Document::Index(index) => {
                for platform in [
                    "linux/amd64",
                    "linux/arm64/v8",
                    "linux/arm/v7",
                    "windows/amd64",
                ] {
                    let platform = Platform::parse(platform).expect("a valid platform");
                    if let Ok(descriptor) = index.select(&platform) {
                        assert!(index.manifests.contains(descriptor));
                    }
                }
                let _ = index.available();
            }
        }
    }
    if let Ok(config) = serde_json::from_slice::<ImageConfig>(body) {
        let _ = config.platform();
        let again = serde_json::to_vec(&config).expect("a config serializes");
        let back: ImageConfig = serde_json::from_slice(&again).expect("a config parses again");
        assert_eq!(back, config, "a config survives a round trip");
    }
    if let Ok(text) = std::str::from_utf8(body) {
        for line in text.lines().take(8) {
            if let Ok(reference) = Reference::parse(line) {
                // Normalized forms parse back to the same reference.
                let again = Reference::parse(&reference.full()).expect("a full reference parses");
                assert_eq!(again.full(), reference.full());
                let _ = reference.familiar_name();
                let _ = reference.api_reference();
            }
            if let Ok(platform) = Platform::parse(line) {
                let _ = platform.to_string();
            }
            let _ = line.parse::<Digest>();
        }
    }
}

/// Loads `data` as an image archive into a fresh store under `dir`; must
/// never panic or leave a half-done state.
pub fn check_archive(data: &[u8], dir: &Path) {
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    let mut store = ImageStore::open(&root).expect("open a fresh store");
    let result = store.load_stream(data);
    let images = store.metadata.images().expect("list the images");
    match &result {
        Ok(loaded) => {
            for (record, _) in loaded {
                assert!(
                    images.iter().any(|(r, _)| r.id == record.id),
                    "a loaded image is recorded"
                );
                for chain_id in &record.chain_ids {
                    assert!(store.snapshots.contains(chain_id), "its snapshots exist");
                }
            }
        }
        Err(_) => {
            for (_, tags) in &images {
                assert!(tags.is_empty(), "a failed load tags nothing: {tags:?}");
            }
        }
    }
    for (digest, _) in store.content.list().expect("list the blobs") {
        let bytes = fs::read(store.content.path(&digest)).expect("read a blob");
        assert_eq!(Digest::of(&bytes), digest, "a stored blob matches its name");
    }
    let leftovers: Vec<_> = fs::read_dir(root.join("content/ingest"))
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "ingest leftovers: {leftovers:?}");
    drop(store);
    let _ = fs::remove_dir_all(&root);
}
