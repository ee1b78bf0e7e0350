//! Image and tag metadata in keel's state database (`<root>/keel.db`,
//! SQLite in WAL mode). Every change runs in an IMMEDIATE transaction, so
//! several keel processes can pull, tag and remove at once: writers queue on
//! SQLite's lock (with a long busy timeout, as podman does) instead of
//! failing.
//!
//! An image is keyed by its id, the digest of its config (as docker does);
//! tags map full references (`docker.io/library/busybox:latest`) to ids.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// One image in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The config digest: docker's image id.
    pub id: Digest,
    /// The manifest it was pulled or loaded with (its digest is the repo
    /// digest `docker images --digests` shows).
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// The image's creation time (from its config), RFC 3339.
    pub created: String,
    /// Uncompressed size of its layers, in bytes.
    pub size: u64,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Chain ids of its layers, bottom first (the snapshot keys).
    pub chain_ids: Vec<Digest>,
}

pub struct Metadata {
    conn: Connection,
}

const SCHEMA_VERSION: i64 = 2;

fn db_error(what: &str, error: rusqlite::Error) -> Error {
    Error::msg(crate::sqlite::describe(
        &format!("state database: {what}"),
        &error,
    ))
}

impl Metadata {
    /// Opens (creating or migrating) `<root>/keel.db`.
    pub fn open(root: &Path) -> Result<Metadata> {
        let conn = crate::sqlite::open(root, crate::sqlite::Sync::Full)
            .map_err(|e| Error::msg(format!("state database: {e}")))?;
        let mut metadata = Metadata { conn };
        metadata.migrate()?;
        Ok(metadata)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("begin", e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| db_error("read schema version", e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::msg(format!(
                "state database schema {version} is newer than this keel understands ({SCHEMA_VERSION}): upgrade keel"
            )));
        }
        if version < 1 {
            tx.execute_batch(
                "CREATE TABLE images (
                    id TEXT PRIMARY KEY,
                    manifest TEXT NOT NULL,
                    manifest_media_type TEXT NOT NULL,
                    created TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    platform TEXT NOT NULL,
                    chain_ids TEXT NOT NULL
                 );
                 CREATE TABLE tags (
                    reference TEXT PRIMARY KEY,
                    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
                 );
                 CREATE INDEX tags_by_image ON tags(image_id);
                 PRAGMA user_version = 1;",
            )
            .map_err(|e| db_error("create schema", e))?;
        }
        if version < 2 {
            // The build cache: a step's key to the layer it made (none for
            // a step that changed no file), and a whole build's key to the
            // image it made. Its layers are roots for the garbage collector.
            tx.execute_batch(
                "CREATE TABLE build_cache (
                    key TEXT PRIMARY KEY,
                    layer TEXT,
                    size INTEGER NOT NULL,
                    chain_id TEXT,
                    image_id TEXT,
                    created TEXT NOT NULL,
                    description TEXT NOT NULL
                 );
                 PRAGMA user_version = 2;",
            )
            .map_err(|e| db_error("create the build cache schema", e))?;
        }
        tx.commit().map_err(|e| db_error("commit schema", e))
    }

    /// Records an image (replacing a record with the same id) and points
    /// `tags` at it, in one transaction: either all of it is visible or none.
    pub fn put_image(&mut self, image: &ImageRecord, tags: &[String]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("begin", e))?;
        let chain_ids: Vec<String> = image.chain_ids.iter().map(Digest::to_string).collect();
        tx.execute(
            "INSERT INTO images (id, manifest, manifest_media_type, created, size, platform, chain_ids)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET manifest = ?2, manifest_media_type = ?3,
                created = ?4, size = ?5, platform = ?6, chain_ids = ?7",
            params![
                image.id.to_string(),
                image.manifest.to_string(),
                image.manifest_media_type,
                image.created,
                image.size as i64,
                image.platform,
                chain_ids.join(" "),
            ],
        )
        .map_err(|e| db_error(&format!("record image {}", image.id), e))?;
        for tag in tags {
            tx.execute(
                "INSERT INTO tags (reference, image_id) VALUES (?1, ?2)
                 ON CONFLICT(reference) DO UPDATE SET image_id = ?2",
                params![tag, image.id.to_string()],
            )
            .map_err(|e| db_error(&format!("tag {tag}"), e))?;
        }
        tx.commit().map_err(|e| db_error("commit", e))
    }

    /// Points `reference` at an existing image; returns the image it pointed
    /// at before, if another.
    pub fn tag(&mut self, reference: &str, id: &Digest) -> Result<Option<Digest>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("begin", e))?;
        let previous = lookup_tag(&tx, reference)?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM images WHERE id = ?1",
                [id.to_string()],
                |_| Ok(true),
            )
            .optional()
            .map_err(|e| db_error("look up image", e))?
            .unwrap_or(false);
        if !exists {
            return Err(Error::msg(format!("No such image: {id}")));
        }
        tx.execute(
            "INSERT INTO tags (reference, image_id) VALUES (?1, ?2)
             ON CONFLICT(reference) DO UPDATE SET image_id = ?2",
            params![reference, id.to_string()],
        )
        .map_err(|e| db_error(&format!("tag {reference}"), e))?;
        tx.commit().map_err(|e| db_error("commit", e))?;
        Ok(previous.filter(|p| p != id))
    }

    /// Removes a tag; returns the image it named.
    pub fn untag(&mut self, reference: &str) -> Result<Option<Digest>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("begin", e))?;
        let previous = lookup_tag(&tx, reference)?;
        tx.execute("DELETE FROM tags WHERE reference = ?1", [reference])
            .map_err(|e| db_error(&format!("untag {reference}"), e))?;
        tx.commit().map_err(|e| db_error("commit", e))?;
        Ok(previous)
    }

    /// The image a tag names.
    pub fn resolve_tag(&self, reference: &str) -> Result<Option<ImageRecord>> {
        match lookup_tag(&self.conn, reference)? {
            Some(id) => self.image(&id),
            None => Ok(None),
        }
    }

    /// An image by id, or by a unique prefix of its hex (docker accepts
    /// `docker rmi 3f57` when only one id starts so). Ambiguity is an error.
    pub fn find_by_id_prefix(&self, prefix: &str) -> Result<Option<ImageRecord>> {
        let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM images WHERE id LIKE ?1 LIMIT 2")
            .map_err(|e| db_error("look up image", e))?;
        let ids: Vec<String> = stmt
            .query_map([format!("sha256:{}%", hex.to_ascii_lowercase())], |row| {
                row.get(0)
            })
            .map_err(|e| db_error("look up image", e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| db_error("look up image", e))?;
        match ids.as_slice() {
            [] => Ok(None),
            [id] => self.image(&parse_digest(id)?),
            _ => Err(Error::msg(format!(
                "image id prefix {prefix:?} is ambiguous: give more digits"
            ))),
        }
    }

    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, manifest, manifest_media_type, created, size, platform, chain_ids
                 FROM images WHERE id = ?1",
            )
            .map_err(|e| db_error("read image", e))?;
        let row = stmt
            .query_row([id.to_string()], read_row)
            .optional()
            .map_err(|e| db_error(&format!("read image {id}"), e))?;
        row.map(into_record).transpose()
    }

    /// Every image with its tags, newest first (as `docker images` lists).
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, manifest, manifest_media_type, created, size, platform, chain_ids
                 FROM images ORDER BY created DESC, id",
            )
            .map_err(|e| db_error("list images", e))?;
        let rows: Vec<Row> = stmt
            .query_map([], read_row)
            .map_err(|e| db_error("list images", e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| db_error("list images", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let record = into_record(row)?;
            let tags = self.tags_of(&record.id)?;
            out.push((record, tags));
        }
        Ok(out)
    }

    pub fn tags_of(&self, id: &Digest) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT reference FROM tags WHERE image_id = ?1 ORDER BY reference")
            .map_err(|e| db_error("list tags", e))?;
        stmt.query_map([id.to_string()], |row| row.get(0))
            .map_err(|e| db_error("list tags", e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| db_error("list tags", e))
    }

    /// Removes an image record and its tags (the blobs and snapshots are the
    /// garbage collector's).
    pub fn delete_image(&mut self, id: &Digest) -> Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("begin", e))?;
        let removed = tx
            .execute("DELETE FROM images WHERE id = ?1", [id.to_string()])
            .map_err(|e| db_error(&format!("delete image {id}"), e))?;
        tx.commit().map_err(|e| db_error("commit", e))?;
        Ok(removed > 0)
    }
}

/// One build-cache record: what a build step (or a whole build) made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRecord {
    pub key: String,
    /// The layer blob the step made (uncompressed tar: also its diff id);
    /// None for a step that changed no file.
    pub layer: Option<Digest>,
    /// The layer's size in bytes.
    pub size: u64,
    /// The chain id of the layer on its parents (its snapshot's key).
    pub chain_id: Option<Digest>,
    /// For a whole build's record: the image it made.
    pub image_id: Option<Digest>,
    /// When the step first ran, RFC 3339 (its history entry's time).
    pub created: String,
    /// The step as `keel builder ls`-like listings show it.
    pub description: String,
}

impl Metadata {
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, layer, size, chain_id, image_id, created, description
                 FROM build_cache WHERE key = ?1",
            )
            .map_err(|e| db_error("read the build cache", e))?;
        let row = stmt
            .query_row([key], read_cache_row)
            .optional()
            .map_err(|e| db_error("read the build cache", e))?;
        row.map(into_cache_record).transpose()
    }

    pub fn cache_put(&mut self, record: &CacheRecord) -> Result<()> {
        let digest = |d: &Option<Digest>| d.as_ref().map(Digest::to_string);
        self.conn
            .execute(
                "INSERT INTO build_cache (key, layer, size, chain_id, image_id, created, description)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(key) DO UPDATE SET layer = ?2, size = ?3, chain_id = ?4,
                    image_id = ?5, created = ?6, description = ?7",
                params![
                    record.key,
                    digest(&record.layer),
                    record.size as i64,
                    digest(&record.chain_id),
                    digest(&record.image_id),
                    record.created,
                    record.description,
                ],
            )
            .map_err(|e| db_error("record a build cache entry", e))?;
        Ok(())
    }

    pub fn cache_list(&self) -> Result<Vec<CacheRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, layer, size, chain_id, image_id, created, description
                 FROM build_cache ORDER BY created",
            )
            .map_err(|e| db_error("list the build cache", e))?;
        let rows = stmt
            .query_map([], read_cache_row)
            .map_err(|e| db_error("list the build cache", e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| db_error("list the build cache", e))?;
        rows.into_iter().map(into_cache_record).collect()
    }

    /// Deletes these records (`keel builder prune`).
    pub fn cache_remove(&mut self, keys: &[String]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error("begin", e))?;
        for key in keys {
            tx.execute("DELETE FROM build_cache WHERE key = ?1", [key])
                .map_err(|e| db_error("delete a build cache entry", e))?;
        }
        tx.commit().map_err(|e| db_error("commit", e))
    }
}

type CacheRow = (
    String,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    String,
    String,
);

fn read_cache_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CacheRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn into_cache_record(row: CacheRow) -> Result<CacheRecord> {
    let (key, layer, size, chain_id, image_id, created, description) = row;
    let digest = |d: Option<String>| d.as_deref().map(parse_digest).transpose();
    Ok(CacheRecord {
        key,
        layer: digest(layer)?,
        size: size.max(0) as u64,
        chain_id: digest(chain_id)?,
        image_id: digest(image_id)?,
        created,
        description,
    })
}

type Row = (String, String, String, String, i64, String, String);

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn parse_digest(text: &str) -> Result<Digest> {
    text.parse()
        .map_err(|_| Error::msg(format!("state database holds an invalid digest {text:?}")))
}

fn into_record(row: Row) -> Result<ImageRecord> {
    let (id, manifest, manifest_media_type, created, size, platform, chain_ids) = row;
    Ok(ImageRecord {
        id: parse_digest(&id)?,
        manifest: parse_digest(&manifest)?,
        manifest_media_type,
        created,
        size: size.max(0) as u64,
        platform,
        chain_ids: chain_ids
            .split_whitespace()
            .map(parse_digest)
            .collect::<Result<_>>()?,
    })
}

fn lookup_tag(conn: &Connection, reference: &str) -> Result<Option<Digest>> {
    let id: Option<String> = conn
        .query_row(
            "SELECT image_id FROM tags WHERE reference = ?1",
            [reference],
            |row| row.get(0),
        )
        .optional()
        .map_err(|e| db_error(&format!("look up tag {reference}"), e))?;
    id.map(|id| parse_digest(&id)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, created: &str) -> ImageRecord {
        ImageRecord {
            id: Digest::of(&[n]),
            manifest: Digest::of(&[n, n]),
            manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            created: created.into(),
            size: 1000 + n as u64,
            platform: "linux/amd64".into(),
            chain_ids: vec![Digest::of(b"l0"), Digest::of(b"l1")],
        }
    }

    #[test]
    fn images_tags_and_lookups() {
        let temp = tempfile::tempdir().unwrap();
        let mut db = Metadata::open(temp.path()).unwrap();
        let a = record(1, "2026-01-01T00:00:00Z");
        let b = record(2, "2026-02-01T00:00:00Z");
        db.put_image(&a, &["docker.io/library/a:latest".into()])
            .unwrap();
        db.put_image(&b, &[]).unwrap();
        assert_eq!(
            db.resolve_tag("docker.io/library/a:latest").unwrap(),
            Some(a.clone())
        );
        // Re-tagging moves the tag and reports where it pointed.
        assert_eq!(
            db.tag("docker.io/library/a:latest", &b.id).unwrap(),
            Some(a.id.clone())
        );
        let listed = db.images().unwrap();
        assert_eq!(listed[0].0, b, "newest first");
        assert_eq!(listed[0].1, vec!["docker.io/library/a:latest".to_string()]);
        assert!(listed[1].1.is_empty());
        assert_eq!(
            db.find_by_id_prefix(&b.id.hex()[..6]).unwrap(),
            Some(b.clone())
        );
        assert!(
            db.tag("x:y", &Digest::of(b"missing"))
                .unwrap_err()
                .to_string()
                .contains("No such image")
        );
        assert!(db.delete_image(&b.id).unwrap());
        assert_eq!(
            db.resolve_tag("docker.io/library/a:latest").unwrap(),
            None,
            "tags go with the image"
        );
        // Reopening keeps what was committed.
        drop(db);
        let db = Metadata::open(temp.path()).unwrap();
        assert_eq!(db.image(&a.id).unwrap(), Some(a));
    }

    #[test]
    fn concurrent_writers_queue_instead_of_failing() {
        let temp = tempfile::tempdir().unwrap();
        Metadata::open(temp.path()).unwrap();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let root = temp.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut db = Metadata::open(&root).unwrap();
                    for i in 0..25u8 {
                        let image = record(t * 50 + i, "2026-01-01T00:00:00Z");
                        db.put_image(&image, &[format!("r/t{t}:{i}")]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            Metadata::open(temp.path()).unwrap().images().unwrap().len(),
            100
        );
    }
}
