//! How keel opens `<root>/keel.db`, the one SQLite file that holds both the
//! image tables (this crate) and the container tables (keel-engine), so
//! that the commands that list and remove things still work when the
//! filesystem under the root is full, and so that a lost database is
//! noticed instead of silently starting over:
//!
//! - The WAL and its index (`keel.db-wal`, `keel.db-shm`) are kept when the
//!   last connection closes (`SQLITE_FCNTL_PERSIST_WAL`): opening then needs
//!   no new blocks, and a WAL that was reset is written again in the space
//!   it already has.
//! - Should the index still be missing on a full disk, the database is
//!   opened in exclusive locking mode, which keeps the index in memory
//!   (other keel commands wait for this one).
//! - `<root>/space-reserve` (1 MiB) is made while there is room and removed
//!   when the filesystem is nearly full, so that a `rm`, `rmi` or prune
//!   can record what it removed.
//! - A missing or empty database over a store that holds images,
//!   containers or volumes is refused with how to recover.
//!
//! Errors come back as text ready for the user; each crate wraps it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

/// The space kept in reserve for recording removals on a full disk.
const RESERVE_BYTES: u64 = 1 << 20;
/// Below this much free space the reserve is given back.
const RELEASE_BELOW: u64 = 8 << 20;
/// Above this much free space a missing reserve is made again.
const REMAKE_ABOVE: u64 = 16 << 20;

/// The root of this process's database, for error messages.
static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// `PRAGMA synchronous`: FULL for the image tables (a tag must not point
/// at nothing after a power cut), NORMAL for the container tables.
#[derive(Debug, Clone, Copy)]
pub enum Sync {
    Full,
    Normal,
}

/// Opens `<root>/keel.db` (making the root if need be).
pub fn open(root: &Path, sync: Sync) -> Result<Connection, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let _ = ROOT.set(root.to_path_buf());
    let path = root.join("keel.db");
    refuse_lost_database(root, &path)?;
    settle_reserve(root);
    match connect(&path, sync, false) {
        Ok(conn) => Ok(conn),
        Err(e) if is_out_of_space(&e) || free_bytes(root) == Some(0) => {
            // No room for the WAL index: keep it in memory instead.
            tracing::info!("{}: opening in exclusive mode: {e}", path.display());
            connect(&path, sync, true)
                .map_err(|e| describe(&format!("open {}", path.display()), &e))
        }
        Err(e) => Err(describe(&format!("open {}", path.display()), &e)),
    }
}

fn connect(path: &Path, sync: Sync, exclusive: bool) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(100))?;
    if exclusive {
        // Before the first access in WAL mode: no shared-memory index.
        conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE;")?;
    }
    let mut persist = 1;
    conn.file_control(
        Some(rusqlite::MAIN_DB),
        rusqlite::FileControl::PersistWal(&mut persist),
    )?;
    let synchronous = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    // A short WAL: every command opens the database anew, and the first
    // connection of a process reads every frame since the last checkpoint
    // to rebuild its index (SQLite's default lets that grow to 1000 pages,
    // ~1000 reads and several ms per command).
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 64;"
    ))?;
    Ok(conn)
}

/// Whether SQLite failed for want of space (its "database or disk is
/// full", or an I/O error while the filesystem has no room left).
pub fn is_out_of_space(e: &rusqlite::Error) -> bool {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => true,
        Some(ErrorCode::SystemIoFailure) => ROOT
            .get()
            .and_then(|root| free_bytes(root))
            .is_some_and(|free| free < RELEASE_BELOW),
        _ => false,
    }
}

/// A database error as the user should read it: `what` failed, and when
/// the disk is full, that it is full and where.
pub fn describe(what: &str, e: &rusqlite::Error) -> String {
    if is_out_of_space(e) {
        let root = ROOT
            .get()
            .map(|r| r.display().to_string())
            .unwrap_or_else(|| "keel's root".into());
        format!(
            "{what}: no space left on the device holding {root}: free some space \
             (keel container prune, keel image prune -a, keel system prune) and try again"
        )
    } else {
        format!("{what}: {e}")
    }
}

/// Bytes available to an unprivileged writer on the filesystem of `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Gives the reserve back when the filesystem is nearly full; makes it
/// again once there is room.
fn settle_reserve(root: &Path) {
    let reserve = root.join("space-reserve");
    let Some(free) = free_bytes(root) else {
        return;
    };
    if free < RELEASE_BELOW {
        if std::fs::remove_file(&reserve).is_ok() {
            tracing::warn!(
                "the filesystem of {} is nearly full: released keel's {} KiB reserve",
                root.display(),
                RESERVE_BYTES >> 10
            );
        }
    } else if free > REMAKE_ABOVE && !reserve.exists() {
        let temp = root.join("space-reserve.tmp");
        let made = std::fs::File::create(&temp).and_then(|file| {
            // Written, not a hole: the blocks must be really allocated.
            use std::io::Write;
            let mut writer = std::io::BufWriter::new(&file);
            let zeros = [0u8; 64 << 10];
            for _ in 0..RESERVE_BYTES / zeros.len() as u64 {
                writer.write_all(&zeros)?;
            }
            writer.flush()?;
            drop(writer);
            file.sync_all()
        });
        match made.and_then(|()| std::fs::rename(&temp, &reserve)) {
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                tracing::debug!("make {}: {e}", reserve.display());
            }
        }
    }
}

/// A store with images, containers or volumes but no database (deleted,
/// or emptied) would start empty and orphan all of it: refuse.
fn refuse_lost_database(root: &Path, path: &Path) -> Result<(), String> {
    let present = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    if present {
        return Ok(());
    }
    let holds = |dir: &str, skip: &[&str]| {
        std::fs::read_dir(root.join(dir)).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                let name = entry.file_name();
                !skip.iter().any(|s| name == *s)
            })
        })
    };
    let blobs = std::fs::read_dir(root.join("content/blobs")).is_ok_and(|algorithms| {
        algorithms
            .flatten()
            .any(|dir| std::fs::read_dir(dir.path()).is_ok_and(|mut blobs| blobs.next().is_some()))
    });
    let found: Vec<&str> = [
        ("images", blobs || holds("snapshots", &["ingest"])),
        ("containers", holds("containers", &[])),
        ("volumes", holds("volumes", &[])),
    ]
    .into_iter()
    .filter(|(_, held)| *held)
    .map(|(what, _)| what)
    .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} is {} but {} holds {}: keel will not start over with an empty state and orphan them. \
         Restore keel.db (and keel.db-wal, if any) from a backup, or move {} aside to start afresh",
        path.display(),
        if path.exists() { "empty" } else { "missing" },
        root.display(),
        found.join(", "),
        root.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_database_over_a_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A fresh root, or one with only empty directories, opens.
        std::fs::create_dir_all(root.join("content/blobs/sha256")).unwrap();
        std::fs::create_dir_all(root.join("snapshots/ingest")).unwrap();
        drop(open(root, Sync::Normal).unwrap());
        // Emptied, with a blob in the store: refused, and it says why.
        std::fs::write(root.join("content/blobs/sha256/abc"), b"x").unwrap();
        std::fs::write(root.join("keel.db"), b"").unwrap();
        let _ = std::fs::remove_file(root.join("keel.db-wal"));
        let error = open(root, Sync::Normal).unwrap_err();
        assert!(error.contains("keel.db is empty"), "{error}");
        assert!(error.contains("holds images"), "{error}");
        assert!(error.contains("Restore keel.db"), "{error}");
        // Deleted, with a container directory: refused.
        std::fs::remove_file(root.join("content/blobs/sha256/abc")).unwrap();
        std::fs::remove_file(root.join("keel.db")).unwrap();
        std::fs::create_dir_all(root.join("containers/0123")).unwrap();
        let error = open(root, Sync::Normal).unwrap_err();
        assert!(error.contains("keel.db is missing"), "{error}");
        assert!(error.contains("holds containers"), "{error}");
    }

    #[test]
    fn a_full_disk_is_named_with_the_root() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert!(is_out_of_space(&full));
        let text = describe("state database: commit", &full);
        assert!(
            text.starts_with("state database: commit: no space left on the device holding ")
                && text.contains("keel system prune"),
            "{text}"
        );
        let other = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(!is_out_of_space(&other));
    }

    #[test]
    fn the_wal_and_its_index_outlive_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(dir.path(), Sync::Full).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(conn);
        assert!(dir.path().join("keel.db-shm").exists());
        assert!(dir.path().join("keel.db-wal").exists());
        let conn = open(dir.path(), Sync::Full).unwrap();
        let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 1);
    }
}
