//! The finished stage as an image in the store.

use super::*;

impl Shared<'_, '_> {
    /// The image: the target stage's config and layers, with `--label`s;
    /// the same image again when nothing changed.
    pub(super) fn export(&self, store: &mut ImageStore, mut state: State) -> Result<ImageRecord> {
        let (id, started) = self.begin("exporting to image");
        if !self.request.labels.is_empty() {
            let labels = state
                .container_config()
                .labels
                .get_or_insert_with(BTreeMap::new);
            labels.extend(self.request.labels.clone());
        }
        let mut config = state.config.clone();
        let mut shape = config.clone();
        shape.created = None;
        for h in shape.history.iter_mut() {
            h.created = None;
        }
        let image_key = format!(
            "image:{}",
            key_of(&[
                &state.key,
                &serde_json::to_string(&shape).unwrap_or_default()
            ])
        );
        let reused = self
            .cached(store, &image_key)
            .and_then(|hit| hit.image_id)
            .and_then(|image_id| store.metadata.image(&image_id).ok().flatten());
        let result = (|| {
            let record = match reused {
                Some(record) => {
                    for tag in &self.request.tags {
                        let full = tag.full();
                        if store.metadata.resolve_tag(&full)?.map(|r| r.id)
                            != Some(record.id.clone())
                        {
                            store.metadata.tag(&full, &record.id)?;
                        }
                    }
                    record
                }
                None => {
                    config.created = Some(ImageStore::now());
                    let record = store.put_image(&config, &state.layers, &self.request.tags)?;
                    store.metadata.cache_put(&CacheRecord {
                        key: image_key.clone(),
                        layer: None,
                        size: 0,
                        chain_id: None,
                        image_id: Some(record.id.clone()),
                        created: ImageStore::now(),
                        description: "exporting to image".into(),
                    })?;
                    record
                }
            };
            Ok::<_, Error>(record)
        })();
        match result {
            Ok(record) => {
                for tag in &self.request.tags {
                    let id2 = self.next_id.lock().map(|n| *n).unwrap_or(id);
                    let _ = id2;
                    self.event(Event::Output {
                        id,
                        data: format!("naming to {}\n", tag.full()).as_bytes(),
                    });
                }
                self.event(Event::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
                Ok(record)
            }
            Err(e) => {
                self.fail(id, &e);
                Err(e)
            }
        }
    }
}
