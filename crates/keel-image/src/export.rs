//! `keel save`: images as one tar stream that is both a docker archive
//! (`manifest.json`, `repositories`) and an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`), as `docker save` of docker ≥ 25
//! writes it. `docker load`, `podman load`, `skopeo` (`docker-archive:` and
//! `oci-archive:`) and `keel load` all take it.
//!
//! Blobs go into the archive as the content store holds them (a layer
//! compressed or not): the OCI manifest names them by digest, and docker's
//! and podman's loaders decompress a compressed layer of a docker archive.
//! Every blob streams from its file; none is held in memory.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};

use serde_json::json;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Document, MEDIA_TYPE_OCI_INDEX, Manifest};
use crate::reference::Reference;
use crate::store::ImageStore;

/// The annotation containerd (and podman's `load`) read for an image's name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for the tag.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image to save, with the names it is saved under.
struct Entry {
    id: Digest,
    manifest: Digest,
    manifest_media_type: String,
    manifest_size: u64,
    layers: Vec<Digest>,
    /// Full references ("docker.io/library/busybox:latest").
    tags: Vec<Reference>,
}

/// Writes `names` (tags, `name@digest` or image ids) to `out` as one tar
/// stream. An unknown name, or a blob missing from the store, is an error
/// before anything is written.
pub fn save(store: &ImageStore, names: &[String], out: impl Write) -> Result<()> {
    let entries = plan(store, names)?;
    write_archive(store, &entries, out)
}

/// Resolves every name and reads every manifest; checks every blob is there.
fn plan(store: &ImageStore, names: &[String]) -> Result<Vec<Entry>> {
    if names.is_empty() {
        return Err(Error::msg("no image to save"));
    }
    let mut entries: Vec<Entry> = Vec::new();
    for name in names {
        let record = store.resolve(name)?;
        // A name that resolved as a tag is saved under it; an id or a
        // digest reference is saved untagged, as docker does.
        let tag = Reference::parse(name)
            .ok()
            .filter(|r| r.digest().is_none())
            .filter(|r| {
                matches!(store.metadata.resolve_tag(&r.full()), Ok(Some(found)) if found.id == record.id)
            });
        if let Some(entry) = entries.iter_mut().find(|e| e.id == record.id) {
            if let Some(tag) = tag
                && !entry.tags.iter().any(|t| t.full() == tag.full())
            {
                entry.tags.push(tag);
            }
            continue;
        }
        let bytes = store.content.read(&record.manifest)?;
        let Document::Manifest(manifest) =
            Document::parse(Some(&record.manifest_media_type), &bytes)?
        else {
            return Err(Error::msg(format!(
                "image {}: its manifest {} is an index",
                record.id, record.manifest
            )));
        };
        check_blobs(store, &record.id, &manifest)?;
        entries.push(Entry {
            id: record.id.clone(),
            manifest: record.manifest.clone(),
            manifest_media_type: record.manifest_media_type.clone(),
            manifest_size: bytes.len() as u64,
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            tags: tag.into_iter().collect(),
        });
    }
    Ok(entries)
}

fn check_blobs(store: &ImageStore, id: &Digest, manifest: &Manifest) -> Result<()> {
    for digest in
        std::iter::once(&manifest.config.digest).chain(manifest.layers.iter().map(|l| &l.digest))
    {
        if !store.content.contains(digest) {
            return Err(Error::msg(format!(
                "image {id}: blob {digest} is not in the content store"
            )));
        }
    }
    Ok(())
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}", digest.to_string().replacen(':', "/", 1))
}

/// "busybox:latest", as docker's `RepoTags` and `repositories` name images.
fn familiar(reference: &Reference) -> (String, String) {
    (
        reference.familiar_name(),
        reference.tag().unwrap_or("latest").to_string(),
    )
}

fn write_archive(store: &ImageStore, entries: &[Entry], out: impl Write) -> Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let err = |e: io::Error| Error::io("write the image archive", e);

    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        tar.append_data(&mut header, dir, io::empty())
            .map_err(err)?;
    }

    // Blobs, each once: manifests, configs, layers.
    let mut written = HashSet::new();
    for entry in entries {
        let blobs = [&entry.manifest, &entry.id]
            .into_iter()
            .chain(&entry.layers);
        for digest in blobs {
            if !written.insert(digest.clone()) {
                continue;
            }
            let file = store.content.open_blob(digest)?;
            let size = file
                .metadata()
                .map_err(|e| Error::io(format!("stat blob {digest}"), e))?
                .len();
            let mut header = file_header(size);
            tar.append_data(
                &mut header,
                blob_path(digest),
                io::BufReader::with_capacity(256 * 1024, file),
            )
            .map_err(|e| Error::io(format!("write blob {digest} to the image archive"), e))?;
        }
    }

    append_document(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    // index.json: one descriptor per name (one unnamed if the image has none).
    let mut manifests = Vec::new();
    for entry in entries {
        let descriptor = |annotations: Option<serde_json::Value>| {
            let mut d = json!({
                "mediaType": entry.manifest_media_type,
                "digest": entry.manifest.to_string(),
                "size": entry.manifest_size,
            });
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        if entry.tags.is_empty() {
            manifests.push(descriptor(None));
        }
        for tag in &entry.tags {
            manifests.push(descriptor(Some(json!({
                ANNOTATION_CONTAINERD_NAME: tag.full(),
                ANNOTATION_REF_NAME: tag.tag().unwrap_or("latest"),
            }))));
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": manifests,
    });
    append_document(&mut tar, "index.json", &to_vec(&index))?;

    // manifest.json: docker's list of images.
    let docker: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            // Full names, as `podman save` writes them: docker takes them,
            // and podman would put a familiar name under `localhost/`.
            let repo_tags: Vec<String> = entry.tags.iter().map(Reference::full).collect();
            json!({
                "Config": blob_path(&entry.id),
                "RepoTags": if repo_tags.is_empty() { serde_json::Value::Null } else { json!(repo_tags) },
                "Layers": entry.layers.iter().map(blob_path).collect::<Vec<_>>(),
            })
        })
        .collect();
    append_document(&mut tar, "manifest.json", &to_vec(&docker))?;

    // repositories: docker's legacy {repo: {tag: id hex}}; docker writes the
    // top layer's v1 id there, the image id is what loaders accept today.
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for entry in entries {
        for t in &entry.tags {
            let (name, tag) = familiar(t);
            repositories
                .entry(name)
                .or_default()
                .insert(tag, entry.id.hex().to_string());
        }
    }
    if !repositories.is_empty() {
        append_document(&mut tar, "repositories", &to_vec(&repositories))?;
    }

    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(err)?;
    Ok(())
}

fn to_vec(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(size);
    header.set_mtime(0);
    header
}

fn append_document<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    let mut header = file_header(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .map_err(|e| Error::io(format!("write {path} to the image archive"), e))
}
