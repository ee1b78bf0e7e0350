//! Containers and volumes in the state database (`<root>/keel.db`, the
//! file the image metadata lives in; SQLite in WAL mode). Every change is
//! one IMMEDIATE transaction, so several keel processes (CLIs, monitors)
//! read and write it at once without losing an update: a state change is
//! a read-modify-write inside the transaction ([`Db::update_state`]).
//!
//! The engine's tables carry their own schema version (in `engine_schema`,
//! as `PRAGMA user_version` belongs to the image tables).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::ContainerSpec;

const SCHEMA_VERSION: i64 = 2;

/// A container as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub created: String,
    pub spec: ContainerSpec,
    /// The process as it runs: entrypoint and command resolved.
    pub args: Vec<String>,
    /// Volumes, binds and tmpfs, their host side resolved.
    #[serde(default)]
    pub mounts: Vec<ContainerMount>,
    pub state: ContainerState,
}

/// A mount of a container as recorded (docker's `Mounts` in inspect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMount {
    pub kind: crate::spec::MountKind,
    /// The volume's name (volumes only).
    #[serde(default)]
    pub name: Option<String>,
    /// The host path (a bind's source, a volume's `_data`).
    #[serde(default)]
    pub source: Option<std::path::PathBuf>,
    pub target: String,
    pub read_only: bool,
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    #[serde(default)]
    pub tmpfs_mode: Option<u32>,
    #[serde(default)]
    pub propagation: Option<String>,
    /// A new volume that gets the image's content at `target` on the
    /// first start.
    #[serde(default)]
    pub copy_up: bool,
}

/// docker's states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a monitor holds the container (it runs, is paused, or
    /// waits to be restarted).
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    pub status: Status,
    /// The container's init, on the host (0 when not running).
    pub pid: i32,
    pub pid_start: u64,
    /// The monitor holding the container (0 when none).
    pub monitor_pid: i32,
    pub monitor_start: u64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Why the last start failed, for inspect.
    pub error: String,
    pub restart_count: u32,
    /// `stop` or `kill` by a user: the restart policy leaves it stopped.
    pub stopped_by_user: bool,
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Health {
    /// `starting`, `healthy`, `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthProbe>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthProbe {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

/// A named (or anonymous) volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub created: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Made for a container's `-v /path` or the image's VOLUME.
    pub anonymous: bool,
}

pub struct Db {
    conn: Connection,
}

fn err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::db(format!("state database: {what}"), e)
}

impl Db {
    /// Opens (creating or migrating) the engine's tables in `<root>/keel.db`.
    pub fn open(root: &Path) -> Result<Db> {
        // WAL with NORMAL: a commit is durable once the WAL is synced at the
        // next checkpoint; a power cut may lose the last state changes but
        // never corrupts the file, and `ps` reconciles what it finds.
        let conn = keel_image::sqlite::open(root, keel_image::sqlite::Sync::Normal)
            .map_err(|e| Error::msg(format!("state database: {e}")))?;
        let mut db = Db { conn };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        tx.execute_batch("CREATE TABLE IF NOT EXISTS engine_schema (version INTEGER NOT NULL);")
            .map_err(err("create the schema table"))?;
        let version: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM engine_schema",
                [],
                |r| r.get(0),
            )
            .map_err(err("read the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(Error::msg(format!(
                "state database: the container tables are at schema {version}, newer than this keel understands ({SCHEMA_VERSION}): upgrade keel"
            )));
        }
        if version < 1 {
            tx.execute_batch(
                "CREATE TABLE containers (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    image_id TEXT NOT NULL,
                    created TEXT NOT NULL,
                    record TEXT NOT NULL
                 );
                 CREATE INDEX containers_by_image ON containers(image_id);
                 CREATE TABLE volumes (
                    name TEXT PRIMARY KEY,
                    created TEXT NOT NULL,
                    record TEXT NOT NULL
                 );
                 INSERT INTO engine_schema (version) VALUES (1);",
            )
            .map_err(err("create the container tables"))?;
        }
        if version < 2 {
            // Networks and the endpoints of running containers on them
            // (see crate::network). One address is never handed out twice:
            // the unique indexes hold even against a buggy allocator.
            tx.execute_batch(
                "CREATE TABLE networks (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    record TEXT NOT NULL
                 );
                 CREATE TABLE endpoints (
                    network TEXT NOT NULL,
                    container TEXT NOT NULL,
                    ipv4 TEXT,
                    ipv6 TEXT,
                    record TEXT NOT NULL,
                    PRIMARY KEY (network, container)
                 );
                 CREATE UNIQUE INDEX endpoints_ipv4 ON endpoints(network, ipv4);
                 CREATE UNIQUE INDEX endpoints_ipv6 ON endpoints(network, ipv6);
                 CREATE INDEX endpoints_of_container ON endpoints(container);
                 INSERT INTO engine_schema (version) VALUES (2);",
            )
            .map_err(err("create the network tables"))?;
        }
        tx.commit().map_err(err("commit the schema"))
    }

    /// The connection, for the network tables' queries (crate::network).
    pub(crate) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Records a new container; its name must be free.
    pub fn insert(&mut self, container: &Container) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        let holder: Option<String> = tx
            .query_row(
                "SELECT id FROM containers WHERE name = ?1",
                [&container.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("look up a name"))?;
        if let Some(holder) = holder {
            return Err(name_in_use(&container.name, &holder));
        }
        tx.execute(
            "INSERT INTO containers (id, name, image_id, created, record) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                container.id,
                container.name,
                container.image_id,
                container.created,
                to_json(container)
            ],
        )
        .map_err(err("insert a container"))?;
        tx.commit().map_err(err("commit"))
    }

    /// A container by full id, unique id prefix, or name (docker's order).
    pub fn find(&self, name_or_id: &str) -> Result<Container> {
        let name = name_or_id.strip_prefix('/').unwrap_or(name_or_id);
        if name.is_empty() {
            return Err(Error::no_such_container(name_or_id));
        }
        if let Some(record) = self
            .conn
            .query_row("SELECT record FROM containers WHERE id = ?1", [name], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(err("look up a container"))?
        {
            return from_json(&record);
        }
        if let Some(record) = self
            .conn
            .query_row(
                "SELECT record FROM containers WHERE name = ?1",
                [name],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(err("look up a container"))?
        {
            return from_json(&record);
        }
        if name.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut statement = self
                .conn
                .prepare_cached("SELECT record FROM containers WHERE id LIKE ?1 || '%' LIMIT 2")
                .map_err(err("look up a container"))?;
            let found: Vec<String> = statement
                .query_map([name.to_ascii_lowercase()], |r| r.get(0))
                .map_err(err("look up a container"))?
                .collect::<rusqlite::Result<_>>()
                .map_err(err("look up a container"))?;
            match found.as_slice() {
                [one] => return from_json(one),
                [] => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "multiple IDs found with provided prefix: {name}"
                    )));
                }
            }
        }
        Err(Error::no_such_container(name_or_id))
    }

    /// Every container, newest first.
    pub fn list(&self) -> Result<Vec<Container>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT record FROM containers ORDER BY created DESC, id")
            .map_err(err("list containers"))?;
        let records: Vec<String> = statement
            .query_map([], |r| r.get(0))
            .map_err(err("list containers"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list containers"))?;
        records.iter().map(|r| from_json(r)).collect()
    }

    /// Changes a container's state in one transaction: `change` sees the
    /// state as it is now (another process may have changed it) and
    /// returns what to keep, or an error to leave it as it is.
    pub fn update_state<T>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Container) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        let record: Option<String> = tx
            .query_row("SELECT record FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err("read a container"))?;
        let Some(record) = record else {
            return Err(Error::no_such_container(id));
        };
        let mut container: Container = from_json(&record)?;
        let out = change(&mut container)?;
        tx.execute(
            "UPDATE containers SET record = ?2 WHERE id = ?1",
            params![id, to_json(&container)],
        )
        .map_err(err("update a container"))?;
        tx.commit().map_err(err("commit"))?;
        Ok(out)
    }

    /// Gives a container another name; the new one must be free.
    pub fn rename(&mut self, id: &str, new_name: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err("begin"))?;
        let holder: Option<String> = tx
            .query_row(
                "SELECT id FROM containers WHERE name = ?1",
                [new_name],
                |r| r.get(0),
            )
            .optional()
            .map_err(err("look up a name"))?;
        if let Some(holder) = holder {
            return Err(name_in_use(new_name, &holder));
        }
        let record: String = tx
            .query_row("SELECT record FROM containers WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err("read a container"))?
            .ok_or_else(|| Error::no_such_container(id))?;
        let mut container: Container = from_json(&record)?;
        container.name = new_name.to_string();
        tx.execute(
            "UPDATE containers SET name = ?2, record = ?3 WHERE id = ?1",
            params![id, new_name, to_json(&container)],
        )
        .map_err(err("rename a container"))?;
        tx.commit().map_err(err("commit"))
    }

    /// Forgets a container; true if it was there.
    pub fn delete(&mut self, id: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM containers WHERE id = ?1", [id])
            .map_err(err("delete a container"))?;
        Ok(n > 0)
    }

    /// The ids of the containers made from `image_id`.
    /// The containers that use an image, as the image store's `remove`
    /// and prune take them (what a container needs is kept).
    pub fn image_holders(&self, image_id: &str) -> Result<Vec<keel_image::store::Holder>> {
        Ok(self
            .containers_of_image(image_id)?
            .into_iter()
            .map(|c| keel_image::store::Holder {
                id: c.id,
                active: c.state.status.is_active(),
            })
            .collect())
    }

    pub fn containers_of_image(&self, image_id: &str) -> Result<Vec<Container>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT record FROM containers WHERE image_id = ?1")
            .map_err(err("list containers"))?;
        let records: Vec<String> = statement
            .query_map([image_id], |r| r.get(0))
            .map_err(err("list containers"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list containers"))?;
        records.iter().map(|r| from_json(r)).collect()
    }

    // --- volumes

    /// Records a volume unless one has the name; returns whether it is new.
    pub fn insert_volume(&mut self, volume: &Volume) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO volumes (name, created, record) VALUES (?1, ?2, ?3)",
                params![volume.name, volume.created, to_json(volume)],
            )
            .map_err(err("insert a volume"))?;
        Ok(n > 0)
    }

    pub fn volume(&self, name: &str) -> Result<Option<Volume>> {
        self.conn
            .query_row("SELECT record FROM volumes WHERE name = ?1", [name], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(err("look up a volume"))?
            .map(|r| from_json(&r))
            .transpose()
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT record FROM volumes ORDER BY name")
            .map_err(err("list volumes"))?;
        let records: Vec<String> = statement
            .query_map([], |r| r.get(0))
            .map_err(err("list volumes"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list volumes"))?;
        records.iter().map(|r| from_json(r)).collect()
    }

    pub fn delete_volume(&mut self, name: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .map_err(err("delete a volume"))?;
        Ok(n > 0)
    }
}

fn name_in_use(name: &str, holder: &str) -> Error {
    Error::Conflict(format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
    ))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize")
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| Error::msg(format!("state database: a record does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str) -> Container {
        Container {
            id: id.to_string(),
            name: name.to_string(),
            image: "busybox".into(),
            image_id: "sha256:abc".into(),
            created: format!("2026-01-01T00:00:00.{id}Z"),
            spec: ContainerSpec::default(),
            args: vec!["sh".into()],
            mounts: Vec::new(),
            state: ContainerState::default(),
        }
    }

    #[test]
    fn containers_by_id_prefix_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        db.insert(&container("aaaa1111", "web")).unwrap();
        db.insert(&container("aaaa2222", "db")).unwrap();
        assert_eq!(db.find("web").unwrap().id, "aaaa1111");
        assert_eq!(db.find("/db").unwrap().id, "aaaa2222");
        assert_eq!(db.find("aaaa2").unwrap().name, "db");
        assert!(
            db.find("aaaa")
                .unwrap_err()
                .to_string()
                .starts_with("multiple IDs found")
        );
        assert_eq!(
            db.find("nope").unwrap_err().to_string(),
            "No such container: nope"
        );
        let err = db
            .insert(&container("bbbb", "web"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("The container name \"/web\" is already in use by container \"aaaa1111\""),
            "{err}"
        );
        assert_eq!(db.list().unwrap().len(), 2);
        assert_eq!(db.containers_of_image("sha256:abc").unwrap().len(), 2);

        db.update_state("aaaa1111", |c| {
            c.state.status = Status::Running;
            c.state.pid = 42;
            Ok(())
        })
        .unwrap();
        assert_eq!(db.find("web").unwrap().state.pid, 42);
        // A refused change leaves it as it was.
        let refused: Result<()> = db.update_state("aaaa1111", |c| {
            c.state.pid = 7;
            Err(Error::Conflict("no".into()))
        });
        assert!(refused.is_err());
        assert_eq!(db.find("web").unwrap().state.pid, 42);

        assert!(db.rename("aaaa1111", "db").is_err());
        db.rename("aaaa1111", "front").unwrap();
        assert_eq!(db.find("front").unwrap().id, "aaaa1111");
        assert!(db.find("web").is_err());
        assert!(db.delete("aaaa1111").unwrap());
        assert!(!db.delete("aaaa1111").unwrap());
        // Reopening keeps everything.
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(db.list().unwrap().len(), 1);
    }

    #[test]
    fn lives_beside_the_image_tables() {
        let dir = tempfile::tempdir().unwrap();
        let images = keel_image::metadata::Metadata::open(dir.path()).unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        db.insert(&container("cccc", "one")).unwrap();
        drop(images);
        let _images = keel_image::metadata::Metadata::open(dir.path()).unwrap();
        assert_eq!(Db::open(dir.path()).unwrap().list().unwrap().len(), 1);
    }

    #[test]
    fn volumes() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path()).unwrap();
        let volume = Volume {
            name: "data".into(),
            created: "2026-01-01T00:00:00Z".into(),
            labels: Default::default(),
            anonymous: false,
        };
        assert!(db.insert_volume(&volume).unwrap());
        assert!(!db.insert_volume(&volume).unwrap());
        assert_eq!(db.volume("data").unwrap(), Some(volume));
        assert_eq!(db.volumes().unwrap().len(), 1);
        assert!(db.delete_volume("data").unwrap());
        assert_eq!(db.volume("data").unwrap(), None);
    }
}
