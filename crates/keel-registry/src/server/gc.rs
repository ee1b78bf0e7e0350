//! `keel registry gc`: mark every blob a manifest of any repository
//! references (the manifests themselves, configs, layers, index children,
//! subjects), then delete the others and the repository links to them.
//!
//! A running server may be between a blob upload and the manifest that
//! references it, so gc refuses storage whose lock a live server holds,
//! unless forced.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use keel_image::digest::Digest;
use serde_json::Value;

use super::StorageLock;
use super::storage::blob_path;
use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct GcReport {
    /// Blobs deleted (or that would be, with `dry_run`), with their sizes.
    pub removed: Vec<(Digest, u64)>,
    pub kept: usize,
    pub bytes_freed: u64,
    /// Repository links to deleted blobs, removed too.
    pub links_removed: usize,
    /// Uploads no server was finishing (with the storage's lock held, none
    /// can be), removed with their bytes.
    pub uploads_removed: usize,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Run even though a server holds the storage.
    pub force: bool,
    /// Report, delete nothing.
    pub dry_run: bool,
}

pub fn gc(storage: &Path, options: GcOptions) -> Result<GcReport> {
    if !storage.join("blobs").is_dir() {
        return Err(Error::msg(format!(
            "{} is not a registry storage (it has no blobs/ directory)",
            storage.display()
        )));
    }
    let lock = match StorageLock::acquire(storage)? {
        Ok(lock) => Some(lock),
        Err(held) if options.force => {
            tracing::warn!(
                "storage is held by a server{}; going on (--force)",
                held.pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
            None
        }
        Err(held) => {
            let who = match held.pid {
                Some(pid) if held.alive => format!("keel registry serve (pid {pid}, running)"),
                Some(pid) => format!("a process (pid {pid})"),
                None => "another process".to_string(),
            };
            return Err(Error::msg(format!(
                "storage {} is in use by {who}: stop the server first, or pass --force \
                 (blobs of pushes in progress may then be deleted)",
                storage.display()
            )));
        }
    };

    let repositories = repositories(&storage.join("repositories"));
    let mut marked: HashSet<Digest> = HashSet::new();
    for repo in &repositories {
        let revisions = repo.join("_manifests/revisions/sha256");
        for hex in file_names(&revisions) {
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            mark_manifest(storage, &digest, &mut marked);
        }
    }

    let mut report = GcReport::default();
    let sha256 = storage.join("blobs/sha256");
    for prefix in file_names(&sha256) {
        for hex in file_names(&sha256.join(&prefix)) {
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            if marked.contains(&digest) {
                report.kept += 1;
                continue;
            }
            let path = blob_path(storage, &digest);
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !options.dry_run {
                fs::remove_file(&path)
                    .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
            }
            report.bytes_freed += size;
            report.removed.push((digest, size));
        }
        if !options.dry_run {
            // Empty prefix directories go too; a full one stays.
            let _ = fs::remove_dir(sha256.join(&prefix));
        }
    }
    let removed: HashSet<&Digest> = report.removed.iter().map(|(d, _)| d).collect();
    for repo in &repositories {
        let layers = repo.join("_layers/sha256");
        for hex in file_names(&layers) {
            let Ok(digest) = format!("sha256:{hex}").parse::<Digest>() else {
                continue;
            };
            if removed.contains(&digest) {
                report.links_removed += 1;
                if !options.dry_run {
                    let _ = fs::remove_file(layers.join(&hex));
                }
            }
        }
    }
    // Uploads: a server that held them is gone (we hold the lock), so
    // nothing will finish them. With --force a live server may be writing
    // them: left alone then (it expires its own).
    if lock.is_some() {
        let uploads = storage.join("uploads");
        for name in file_names(&uploads) {
            let path = uploads.join(&name);
            report.bytes_freed += dir_size(&path);
            report.uploads_removed += 1;
            if !options.dry_run {
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
            }
        }
    }
    drop(lock);
    report.removed.sort();
    Ok(report)
}

/// Bytes of the files below `path` (or of the file).
fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Marks a manifest and everything it references.
fn mark_manifest(storage: &Path, digest: &Digest, marked: &mut HashSet<Digest>) {
    if !marked.insert(digest.clone()) {
        return;
    }
    let path = blob_path(storage, digest);
    let Ok(body) = fs::read(&path) else {
        tracing::warn!("manifest {digest} is referenced but its blob is missing");
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        tracing::warn!("manifest {digest} is not JSON; keeping it, marking nothing of it");
        return;
    };
    let digest_of = |descriptor: &Value| {
        descriptor
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Digest>().ok())
    };
    if let Some(config) = value.get("config").and_then(digest_of) {
        marked.insert(config);
    }
    for layer in value
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(layer) = digest_of(layer) {
            marked.insert(layer);
        }
    }
    for child in value
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(child) = digest_of(child) {
            mark_manifest(storage, &child, marked);
        }
    }
    if let Some(subject) = value.get("subject").and_then(digest_of) {
        marked.insert(subject);
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every repository directory (one with `_manifests` or `_layers`).
fn repositories(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('_') || !path.is_dir() {
            continue;
        }
        if path.join("_manifests").is_dir() || path.join("_layers").is_dir() {
            found.push(path.clone());
        }
        found.extend(repositories(&path));
    }
    found
}
