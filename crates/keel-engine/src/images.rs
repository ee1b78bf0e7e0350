//! The image operations every face shares, with their events: tag and
//! remove (the store does the work; the engine knows which containers
//! hold an image and records what happened).

use std::collections::BTreeSet;

use keel_image::reference::Reference;
use keel_image::store::ImageStore;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::events;

/// Tags the image `source` as `target`.
pub fn tag(store: &mut ImageStore, source: &str, target: &str) -> Result<()> {
    let record = store.resolve(source)?;
    let target = Reference::parse(target)?;
    if target.digest().is_some() {
        return Err(Error::invalid(
            "refusing to create a tag with a digest reference",
        ));
    }
    store.metadata.tag(&target.full(), &record.id)?;
    let root = store.root().to_path_buf();
    events::record(
        &root,
        "image",
        "tag",
        &record.id.to_string(),
        &[("name", &target.full())],
    );
    Ok(())
}

/// Removes a tag or an image (`rmi`): docker's lines, `Untagged: NAME` and
/// `Deleted: ID`. An image a container uses stays unless `force` (and a
/// running container's always stays).
pub fn remove(store: &mut ImageStore, name: &str, force: bool) -> Result<Vec<String>> {
    let root = store.root().to_path_buf();
    let holders = match store.resolve(name) {
        Ok(record) => Db::open(&root)?.image_holders(&record.id.to_string())?,
        Err(_) => Vec::new(),
    };
    let lines = store.remove(name, force, &holders)?;
    for line in &lines {
        if let Some(what) = line.strip_prefix("Untagged: ") {
            events::record(&root, "image", "untag", what, &[("name", what)]);
        } else if let Some(id) = line.strip_prefix("Deleted: ") {
            events::record(&root, "image", "delete", id, &[("name", name)]);
        }
    }
    Ok(lines)
}

/// `image prune`: dangling images (no tag), or with `all` every image no
/// container uses, as `flags` (`until=`, `label=`, `label!=`) narrow them;
/// then the blobs and snapshots nothing references. docker's
/// `untagged:`/`deleted:` lines and the bytes freed.
pub fn prune(store: &mut ImageStore, all: bool, flags: &[String]) -> Result<(Vec<String>, u64)> {
    let mut flags = flags.to_vec();
    crate::filter::Filters::parse(&flags, crate::filter::PRUNE_KEYS)?;
    if !all {
        flags.push("dangling=true".into());
    }
    let filters = crate::filter::Filters::parse(&flags, crate::filter::IMAGES_KEYS)?;
    let used: BTreeSet<String> = Db::open(store.root())?
        .list()?
        .into_iter()
        .map(|c| c.image_id)
        .collect();
    prune_selected(store, &used, &filters)
}

/// Removes the images `filters` select that no container in `used` runs,
/// then what nothing references; docker's `untagged:`/`deleted:` lines and
/// the bytes freed.
pub fn prune_selected(
    store: &mut ImageStore,
    used: &BTreeSet<String>,
    filters: &crate::filter::Filters,
) -> Result<(Vec<String>, u64)> {
    let mut lines = Vec::new();
    let mut digests = BTreeSet::new();
    for (record, tags) in crate::filter::select(store, filters)? {
        if used.contains(&record.id.to_string()) {
            continue;
        }
        for tag in &tags {
            store.metadata.untag(tag)?;
            if let Ok(reference) = Reference::parse(tag) {
                let name = reference.familiar_name();
                lines.push(format!(
                    "untagged: {name}:{}",
                    reference.tag().unwrap_or("latest")
                ));
                let by_digest = format!("untagged: {name}@{}", record.manifest);
                if digests.insert(by_digest.clone()) {
                    lines.push(by_digest);
                }
            }
        }
        if store.metadata.delete_image(&record.id)? {
            lines.push(format!("deleted: {}", record.id));
        }
    }
    // Ingest first: the collector also removes what dead processes left,
    // without counting it.
    let reclaimed = store.reclaim_ingest()?;
    let freed = store.collect_garbage()? + reclaimed;
    Ok((lines, freed))
}
