//! Volumes (`keel volume create/ls/inspect/rm/prune`): a directory
//! `<root>/volumes/<name>/_data` and a record; a volume a container
//! mounts is "in use" and is not removed.

use std::collections::BTreeMap;

use crate::db::Volume;
use crate::engine::{Engine, random_id};
use crate::error::{Error, Result};

/// docker's `volume inspect` object (`keel volume inspect`, the API's
/// volume list and inspect).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInspect {
    pub created_at: String,
    pub driver: &'static str,
    pub labels: BTreeMap<String, String>,
    pub mountpoint: std::path::PathBuf,
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub scope: &'static str,
}

impl Engine {
    /// `volume create [NAME]`: a new volume (a random name if none), or
    /// the existing one of that name.
    pub fn create_volume(
        &mut self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let name = match name {
            Some(name) => name.to_string(),
            None => random_id()?,
        };
        crate::spec::validate_volume_name(&name)?;
        if let Some(existing) = self.db.volume(&name)? {
            return Ok(existing);
        }
        let data = self.layout.volume_data(&name);
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("create {}", data.display()), e))?;
        let volume = Volume {
            name: name.clone(),
            created: jiff::Timestamp::now().to_string(),
            labels,
            anonymous: false,
        };
        self.db.insert_volume(&volume)?;
        crate::events::record(
            &self.layout.root,
            "volume",
            "create",
            &name,
            &[("driver", "local")],
        );
        Ok(self.db.volume(&name)?.unwrap_or(volume))
    }

    pub fn volume(&self, name: &str) -> Result<Volume> {
        self.db
            .volume(name)?
            .ok_or_else(|| Error::no_such_volume(name))
    }

    /// The containers (ids) that mount the volume.
    pub fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .db
            .list()?
            .into_iter()
            .filter(|c| c.mounts.iter().any(|m| m.name.as_deref() == Some(name)))
            .map(|c| c.id)
            .collect())
    }

    /// `volume rm`: refused while a container mounts it (docker's words).
    pub fn remove_volume(&mut self, name: &str, force: bool) -> Result<()> {
        let Some(_) = self.db.volume(name)? else {
            if force {
                return Ok(());
            }
            return Err(Error::no_such_volume(name));
        };
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        // Renamed away first, in one step: a removal killed half way never
        // leaves a half-emptied volume under its name; what it left behind
        // (`.removing-*`) goes with the next removal or prune.
        let dir = self.layout.volume(name);
        let trash = self
            .layout
            .volumes()
            .join(format!(".removing-{name}-{}", &random_id()?[..12]));
        if dir.exists() {
            std::fs::rename(&dir, &trash)
                .map_err(|e| Error::io(format!("move {} aside", dir.display()), e))?;
        }
        crate::fault::point("volume-rm-moved");
        self.db.delete_volume(name)?;
        self.sweep_removed_volumes();
        crate::events::record(
            &self.layout.root,
            "volume",
            "destroy",
            name,
            &[("driver", "local")],
        );
        Ok(())
    }

    /// Removes what volume removals left behind (`.removing-*`); the bytes
    /// freed.
    pub fn sweep_removed_volumes(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(self.layout.volumes()) else {
            return 0;
        };
        let mut freed = 0;
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .to_string_lossy()
                .starts_with(".removing-")
            {
                continue;
            }
            let size = crate::copy::tree_size(&entry.path());
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => freed += size,
                Err(e) => tracing::warn!("remove {}: {e}", entry.path().display()),
            }
        }
        freed
    }

    /// `volume prune`: unused anonymous volumes, or with `all` every unused
    /// volume. Returns their names and the bytes freed.
    pub fn prune_volumes(&mut self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut freed = self.sweep_removed_volumes();
        for volume in self.db.volumes()? {
            if !(all || volume.anonymous) || !self.volume_users(&volume.name)?.is_empty() {
                continue;
            }
            let size = crate::copy::tree_size(&self.layout.volume_data(&volume.name));
            self.remove_volume(&volume.name, false)?;
            removed.push(volume.name);
            freed += size;
        }
        Ok((removed, freed))
    }

    /// docker's `volume inspect`, as JSON.
    pub fn volume_value(&self, volume: &Volume) -> serde_json::Value {
        serde_json::to_value(self.volume_view(volume)).unwrap_or_default()
    }

    /// docker's `volume inspect`, typed.
    pub fn volume_view(&self, volume: &Volume) -> VolumeInspect {
        VolumeInspect {
            created_at: volume.created.clone(),
            driver: "local",
            labels: volume.labels.clone(),
            mountpoint: self.layout.volume_data(&volume.name),
            name: volume.name.clone(),
            options: BTreeMap::new(),
            scope: "local",
        }
    }
}
