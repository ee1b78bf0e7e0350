//! Layer steps: the cache key, a cache hit, committing a new layer.

use super::*;

impl Shared<'_, '_> {
    /// A step that may change files: from the cache, or by `make` on the
    /// stage's root filesystem (an overlay of its snapshots).
    pub(super) fn layer_step(
        &self,
        store: &mut ImageStore,
        state: &mut State,
        name: &str,
        line: usize,
        text: &str,
        make: impl FnOnce(&Root) -> Result<()>,
    ) -> Result<()> {
        let key = key_of(&[&state.key, text]);
        let (id, started) = self.begin(name);
        if let Some(hit) = self.cached(store, &key) {
            self.event(Event::Cached { id });
            self.take_cached(state, &hit, text);
            state.key = key;
            return Ok(());
        }
        let result = (|| {
            let scratch = Scratch::new(&self.root)?;
            let lowers = self.lowers(store, state)?;
            let root = scratch.mount(&lowers)?;
            make(&root)?;
            drop(root);
            scratch.unmount()?;
            self.commit_layer(store, state, &key, text, scratch.upper())
        })();
        match result {
            Ok(()) => {
                state.key = key;
                self.event(Event::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
                Ok(())
            }
            Err(e) => {
                self.fail(id, &e);
                Err(match e {
                    Error::Msg(m) => self.step_error(line, m),
                    other => other,
                })
            }
        }
    }

    /// The stage's snapshots (made from their blobs if missing), topmost first.
    pub(super) fn lowers(&self, store: &mut ImageStore, state: &State) -> Result<Vec<PathBuf>> {
        for (i, chain_id) in state.chain_ids.iter().enumerate() {
            if !store.snapshots.contains(chain_id) {
                let diff_id = state
                    .config
                    .rootfs
                    .diff_ids
                    .get(i)
                    .cloned()
                    .ok_or_else(|| {
                        Error::msg("the stage's config lists fewer layers than it has")
                    })?;
                store.ensure_snapshot(chain_id, &diff_id, &state.chain_ids[..i])?;
            }
        }
        Ok(store.snapshots.lower_dirs(&state.chain_ids)?)
    }

    pub(super) fn cached(&self, store: &ImageStore, key: &str) -> Option<CacheRecord> {
        if self.request.no_cache {
            return None;
        }
        let hit = store.metadata.cache_get(key).ok().flatten()?;
        match &hit.layer {
            Some(layer) if !store.content.contains(layer) => None,
            _ => Some(hit),
        }
    }

    pub(super) fn take_cached(&self, state: &mut State, hit: &CacheRecord, text: &str) {
        let empty = hit.layer.is_none();
        if let (Some(layer), Some(chain_id)) = (&hit.layer, &hit.chain_id) {
            state.layers.push(Descriptor {
                media_type: keel_image::manifest::MEDIA_TYPE_OCI_LAYER.to_string(),
                digest: layer.clone(),
                size: hit.size,
                urls: Vec::new(),
                annotations: BTreeMap::new(),
                platform: None,
                artifact_type: None,
            });
            state.config.rootfs.diff_ids.push(layer.clone());
            state.chain_ids.push(chain_id.clone());
        }
        state.config.history.push(History {
            created: Some(hit.created.clone()),
            created_by: Some(text.to_string()),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: empty,
            ..History::default()
        });
    }

    /// The upper directory `upper` as the step's layer (none if empty),
    /// recorded in the cache under `key`.
    pub(super) fn commit_layer(
        &self,
        store: &mut ImageStore,
        state: &mut State,
        key: &str,
        text: &str,
        upper: &Path,
    ) -> Result<()> {
        let empty = std::fs::read_dir(upper)
            .map_err(|e| Error::path("list", upper, e))?
            .next()
            .is_none();
        let mut record = CacheRecord {
            key: key.to_string(),
            layer: None,
            size: 0,
            chain_id: None,
            image_id: None,
            created: ImageStore::now(),
            description: text.to_string(),
        };
        if !empty {
            let (descriptor, chain_id) = store.add_layer_from_dir(upper, &state.chain_ids)?;
            record.layer = Some(descriptor.digest.clone());
            record.size = descriptor.size;
            record.chain_id = Some(chain_id);
        }
        store.metadata.cache_put(&record)?;
        self.take_cached(state, &record, text);
        Ok(())
    }
}
