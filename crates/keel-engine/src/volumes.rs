//! Volumes (`keel volume create/ls/inspect/rm/prune`): a directory
//! `<root>/volumes/<name>/_data` and a record; a volume a container
//! mounts is "in use" and is not removed.

use std::collections::BTreeMap;

use crate::db::Volume;
use crate::engine::{Engine, random_id};
use crate::error::{Error, Result};

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
        let dir = self.layout.volume(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("remove {}", dir.display()), e))?;
        }
        self.db.delete_volume(name)?;
        crate::events::record(
            &self.layout.root,
            "volume",
            "destroy",
            name,
            &[("driver", "local")],
        );
        Ok(())
    }

    /// `volume prune`: unused anonymous volumes, or with `all` every unused
    /// volume. Returns their names and the bytes freed.
    pub fn prune_volumes(&mut self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut freed = 0;
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

    /// docker's `volume inspect` shape.
    pub fn volume_value(&self, volume: &Volume) -> serde_json::Value {
        serde_json::json!({
            "CreatedAt": volume.created,
            "Driver": "local",
            "Labels": volume.labels,
            "Mountpoint": self.layout.volume_data(&volume.name),
            "Name": volume.name,
            "Options": {},
            "Scope": "local",
        })
    }
}
