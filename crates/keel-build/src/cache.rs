//! The build cache as a whole: `builder prune` (and `system prune`, the
//! API's `/build/prune`).

use std::path::Path;

use crate::error::Result;

/// Forgets the build cache and removes what only it held (with `all`,
/// the `RUN --mount=type=cache` directories and the remembered digests of
/// context files too); the entries' ids and the bytes freed.
pub fn prune(
    root: &Path,
    store: &mut keel_image::store::ImageStore,
    all: bool,
) -> Result<(Vec<String>, u64)> {
    let records = store.metadata.cache_list()?;
    let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
    store.metadata.cache_remove(&keys)?;
    let mut freed = store.reclaim_ingest()?;
    freed += store.collect_garbage()?;
    if all {
        let mounts = root.join("build").join("cache-mounts");
        freed += dir_size(&mounts);
        let _ = std::fs::remove_dir_all(&mounts);
        crate::context::forget_file_digests(root)?;
    }
    let tmp = root.join("build").join("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let ids = keys.iter().map(|k| k.chars().take(25).collect()).collect();
    Ok((ids, freed))
}

pub fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}
