//! The image operations every face shares, with their events: tag and
//! remove (the store does the work; the engine knows which containers
//! hold an image and records what happened).

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
