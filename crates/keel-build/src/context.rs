//! The build context: a directory on the host (a tar from stdin is
//! unpacked into one first), filtered by `.dockerignore`, and the content
//! digests the cache keys of COPY, ADD and `RUN --mount=type=bind` are made
//! of. File digests are remembered by path and stat (inode, size, mtime,
//! ctime) in the state database, so an unchanged 50 MB file is not read
//! again on the next build.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::fsops::Pick;
use crate::ignore::Matcher;

/// A file's digest is kept only once its mtime is this far in the past:
/// a write within the same clock tick could otherwise go unseen.
const SETTLED_NANOS: i128 = 2_000_000_000;

pub struct Context {
    pub root: PathBuf,
    ignore: Option<Matcher>,
    hashes: Mutex<HashCache>,
}

#[derive(Default)]
struct HashCache {
    known: HashMap<String, (String, String)>,
    new: Vec<(String, String, String)>,
    db: Option<rusqlite::Connection>,
    /// The context's directory, with a trailing `/`: what it remembered of
    /// it is read in one query, on first need.
    prefix: String,
    remembered: Option<HashMap<String, (String, String)>>,
}

/// One source of a COPY: its path relative to the root it came from, and
/// where it is on the host.
#[derive(Debug, Clone)]
pub struct Source {
    pub relative: String,
    pub path: PathBuf,
}

/// Whether a pattern holds glob characters (then it may match many).
pub fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

impl Context {
    /// `ignore` is the text of `.dockerignore` (or `<Dockerfile>.dockerignore`).
    /// `state_db` is keel's database, where file digests are remembered.
    pub fn open(root: &Path, ignore: Option<&str>, state_db: Option<&Path>) -> Result<Context> {
        let root = root
            .canonicalize()
            .map_err(|e| Error::path("open the build context", root, e))?;
        if !root.is_dir() {
            return Err(Error::msg(format!(
                "the build context {} is not a directory",
                root.display()
            )));
        }
        let ignore = ignore
            .map(Matcher::parse)
            .transpose()
            .map_err(|e| Error::msg(format!(".dockerignore: {e}")))?;
        let mut cache = HashCache {
            prefix: format!("{}/", root.display()),
            ..HashCache::default()
        };
        if let Some(db) = state_db {
            cache.db = open_hash_db(db)?;
        }
        Ok(Context {
            root,
            ignore,
            hashes: Mutex::new(cache),
        })
    }

    /// Whether `.dockerignore` leaves `relative` (slash-separated, from the
    /// context root) out.
    pub fn ignored(&self, relative: &str) -> bool {
        self.ignore.as_ref().is_some_and(|m| m.matches(relative))
    }

    /// The walk filter for a source at `top` (relative to the context root),
    /// with `.dockerignore` and the step's `--exclude` patterns.
    pub fn pick(
        &self,
        top: &str,
        excludes: Option<&Matcher>,
        relative: &str,
        is_dir: bool,
    ) -> Pick {
        let full = if top.is_empty() || top == "." {
            relative.to_string()
        } else {
            format!("{}/{relative}", top.trim_end_matches('/'))
        };
        let mut pick = Pick::Take;
        for (matcher, path) in [(self.ignore.as_ref(), full.as_str()), (excludes, relative)] {
            let Some(matcher) = matcher else { continue };
            if matcher.matches(path) {
                if is_dir && matcher.dir_may_contain_included(path) {
                    pick = Pick::Descend;
                } else {
                    return Pick::Skip;
                }
            }
        }
        pick
    }

    /// The sources a COPY word names in the context: one path, or what a
    /// glob matches (docker's rule: sorted, at least one). An error names
    /// a path that is not there or leads outside the context.
    pub fn select(&self, word: &str) -> Result<Vec<Source>> {
        select_under(
            &self.root,
            word,
            &|rel| self.ignored(rel),
            "the build context",
        )
    }

    /// The digest of what copying `source` would copy (names, types, modes,
    /// link targets and file contents, in order).
    pub fn digest(&self, source: &Source, excludes: Option<&Matcher>) -> Result<String> {
        let mut hasher = Sha256::new();
        let filter = |rel: &str, is_dir: bool| self.pick(&source.relative, excludes, rel, is_dir);
        self.digest_entry(&source.path, "", &mut hasher, &filter)?;
        Ok(hex::encode(hasher.finalize()))
    }

    fn digest_entry(
        &self,
        path: &Path,
        relative: &str,
        hasher: &mut Sha256,
        filter: &dyn Fn(&str, bool) -> Pick,
    ) -> Result<()> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| Error::path("stat", path, e))?;
        let kind = meta.file_type();
        hasher.update(relative.as_bytes());
        hasher.update([0]);
        hasher.update(format!("{:o}", meta.permissions().mode()).as_bytes());
        hasher.update([0]);
        if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| Error::path("read link", path, e))?;
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else if kind.is_file() {
            hasher.update(self.file_digest(path, &meta)?.as_bytes());
        } else if kind.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Error::path("list", path, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for name in names {
                let name = name.to_string_lossy().into_owned();
                let rel = if relative.is_empty() {
                    name.clone()
                } else {
                    format!("{relative}/{name}")
                };
                let child = path.join(&name);
                let is_dir = std::fs::symlink_metadata(&child)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                match filter(&rel, is_dir) {
                    Pick::Skip => continue,
                    Pick::Descend if !is_dir => continue,
                    _ => self.digest_entry(&child, &rel, hasher, filter)?,
                }
            }
        } else {
            hasher.update(meta.rdev().to_string().as_bytes());
        }
        hasher.update([1]);
        Ok(())
    }

    /// A file's sha256, from the cache when its stat has not changed.
    pub fn file_digest(&self, path: &Path, meta: &std::fs::Metadata) -> Result<String> {
        let key = path.to_string_lossy().into_owned();
        let stat = format!(
            "{}:{}:{}:{}.{}:{}.{}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        {
            let mut cache = self
                .hashes
                .lock()
                .expect("the hash cache lock is never poisoned");
            if let Some((known_stat, digest)) = cache.known.get(&key)
                && *known_stat == stat
            {
                return Ok(digest.clone());
            }
            if let Some(digest) = cache.lookup(&key, &stat) {
                return Ok(digest);
            }
        }
        let digest = sha256_file(path)?;
        let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let mut cache = self
            .hashes
            .lock()
            .expect("the hash cache lock is never poisoned");
        cache
            .known
            .insert(key.clone(), (stat.clone(), digest.clone()));
        if now - mtime > SETTLED_NANOS {
            cache.new.push((key, stat, digest.clone()));
        }
        Ok(digest)
    }

    /// Writes the digests learnt in this build to the state database.
    pub fn save(&self) {
        let mut cache = self
            .hashes
            .lock()
            .expect("the hash cache lock is never poisoned");
        let new = std::mem::take(&mut cache.new);
        if new.is_empty() {
            return;
        }
        if let Some(db) = cache.db.as_mut() {
            let saved = (|| -> rusqlite::Result<()> {
                let tx = db.transaction()?;
                for (path, stat, digest) in &new {
                    tx.execute(
                        "INSERT INTO build_file_hashes (path, stat, digest) VALUES (?1, ?2, ?3)
                         ON CONFLICT(path) DO UPDATE SET stat = ?2, digest = ?3",
                        rusqlite::params![path, stat, digest],
                    )?;
                }
                tx.commit()
            })();
            if let Err(e) = saved {
                tracing::warn!("could not remember the context's file digests: {e}");
            }
        }
    }
}

impl HashCache {
    fn lookup(&mut self, path: &str, stat: &str) -> Option<String> {
        if self.remembered.is_none() {
            let db = self.db.as_ref()?;
            // Every path under the prefix: `/` + 1 is `0`.
            let end = format!("{}0", self.prefix.trim_end_matches('/'));
            let rows = db
                .prepare("SELECT path, stat, digest FROM build_file_hashes WHERE path >= ?1 AND path < ?2")
                .and_then(|mut stmt| {
                    stmt.query_map([self.prefix.as_str(), end.as_str()], |row| {
                        Ok((row.get::<_, String>(0)?, (row.get(1)?, row.get(2)?)))
                    })?
                    .collect::<rusqlite::Result<HashMap<_, _>>>()
                })
                .unwrap_or_default();
            self.remembered = Some(rows);
        }
        let (known, digest) = self.remembered.as_ref()?.get(path)?.clone();
        (known == stat).then(|| {
            self.known.insert(path.to_string(), (known, digest.clone()));
            digest
        })
    }
}

/// Forgets every remembered file digest (`builder prune -a`: the next
/// build reads and hashes its whole context again, as a first one does).
/// `state_db` is keel's root, as for [`Context::open`].
pub fn forget_file_digests(state_db: &Path) -> Result<()> {
    if let Some(db) = open_hash_db(state_db)? {
        db.execute("DELETE FROM build_file_hashes", [])
            .map_err(|e| Error::msg(format!("forget the build context's file digests: {e}")))?;
    }
    Ok(())
}

fn open_hash_db(root: &Path) -> Result<Option<rusqlite::Connection>> {
    let path = root.join("keel.db");
    let db = rusqlite::Connection::open(&path)
        .map_err(|e| Error::msg(format!("state database {}: {e}", path.display())))?;
    let setup = db
        .busy_timeout(std::time::Duration::from_secs(100))
        .and_then(|_| {
            db.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS build_file_hashes (
                    path TEXT PRIMARY KEY,
                    stat TEXT NOT NULL,
                    digest TEXT NOT NULL
                 );",
            )
        });
    match setup {
        Ok(()) => Ok(Some(db)),
        Err(e) => {
            tracing::warn!("no file digest cache: {e}");
            Ok(None)
        }
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::path("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| Error::path("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Cleans a source word the way docker does and refuses one that leads out
/// of its root (`../x`).
pub fn clean_source(word: &str, what: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in word.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(Error::msg(format!("forbidden path outside {what}: {word}")));
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// The sources `word` names under `root`: a path (symlinks resolved within
/// `root`) or a glob matched component by component. `skip` leaves out
/// ignored paths.
pub fn select_under(
    root: &Path,
    word: &str,
    skip: &dyn Fn(&str) -> bool,
    what: &str,
) -> Result<Vec<Source>> {
    let clean = clean_source(word, what)?;
    if !has_glob(&clean) {
        if !clean.is_empty() && skip(&clean) {
            return Err(Error::msg(format!(
                "\"/{clean}\" not found: it is excluded by .dockerignore"
            )));
        }
        return match crate::fsops::resolve_under(root, &clean)? {
            Some(path) if path.symlink_metadata().is_ok() => Ok(vec![Source {
                relative: clean,
                path,
            }]),
            _ => Err(Error::msg(format!("\"/{clean}\" not found in {what}"))),
        };
    }
    let mut found: Vec<(String, PathBuf)> = vec![(String::new(), root.to_path_buf())];
    for part in clean.split('/') {
        let mut next = Vec::new();
        for (relative, dir) in &found {
            if has_glob(part) {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                for name in names {
                    let matched = crate::ignore::path_match(part, &name)
                        .map_err(|e| Error::msg(format!("bad pattern {word:?}: {e}")))?;
                    if matched {
                        next.push((join(relative, &name), dir.join(&name)));
                    }
                }
            } else {
                let path = dir.join(part);
                if path.symlink_metadata().is_ok() {
                    next.push((join(relative, part), path));
                }
            }
        }
        found = next;
    }
    let sources: Vec<Source> = found
        .into_iter()
        .filter(|(relative, _)| !skip(relative))
        .map(|(relative, path)| Source { relative, path })
        .collect();
    if sources.is_empty() {
        return Err(Error::msg(format!(
            "no source files were specified: {word:?} matches nothing in {what}"
        )));
    }
    Ok(sources)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let file = dir.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        dir
    }

    #[test]
    fn sources_paths_globs_and_escapes() {
        let dir = tree(&[
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("src/x.rs", "x"),
            ("src/y.rs", "y"),
        ]);
        let context = Context::open(dir.path(), Some("b.txt\n"), None).unwrap();
        let names = |word: &str| -> Vec<String> {
            context
                .select(word)
                .unwrap()
                .into_iter()
                .map(|s| s.relative)
                .collect()
        };
        assert_eq!(names("./a.txt"), ["a.txt"]);
        assert_eq!(names("*.txt"), ["a.txt"], "an ignored file matches no glob");
        assert_eq!(names("src/*.rs"), ["src/x.rs", "src/y.rs"]);
        assert_eq!(names("."), [""]);
        let outside = context.select("../etc/passwd").unwrap_err().to_string();
        assert!(outside.contains("outside"), "{outside}");
        let missing = context.select("nope").unwrap_err().to_string();
        assert!(missing.contains("\"/nope\" not found"), "{missing}");
        let ignored = context.select("b.txt").unwrap_err().to_string();
        assert!(ignored.contains(".dockerignore"), "{ignored}");
        assert!(
            context.select("*.md").is_err(),
            "a glob must match something"
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_context() {
        let dir = tree(&[("real/file", "inside")]);
        std::os::unix::fs::symlink("/real", dir.path().join("absolute")).unwrap();
        std::os::unix::fs::symlink("../../real", dir.path().join("real/up")).unwrap();
        let resolved = crate::fsops::resolve_under(dir.path(), "absolute/file")
            .unwrap()
            .unwrap();
        assert_eq!(resolved, dir.path().join("real/file"));
        let resolved = crate::fsops::resolve_under(dir.path(), "real/up/file")
            .unwrap()
            .unwrap();
        assert_eq!(
            resolved,
            dir.path().join("real/file"),
            "`..` stops at the root"
        );
    }

    #[test]
    fn digests_follow_content_modes_and_filters() {
        let dir = tree(&[("d/a", "1"), ("d/skip.log", "x")]);
        let context = Context::open(dir.path(), None, None).unwrap();
        let source = context.select("d").unwrap().remove(0);
        let first = context.digest(&source, None).unwrap();
        assert_eq!(first, context.digest(&source, None).unwrap());
        let excludes = Matcher::new(&["*.log".to_string()]).unwrap();
        let filtered = context.digest(&source, Some(&excludes)).unwrap();
        assert_ne!(first, filtered);
        std::fs::write(dir.path().join("d/skip.log"), "changed").unwrap();
        assert_eq!(
            filtered,
            context.digest(&source, Some(&excludes)).unwrap(),
            "an excluded file does not count"
        );
        std::fs::set_permissions(
            dir.path().join("d/a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_ne!(
            filtered,
            context.digest(&source, Some(&excludes)).unwrap(),
            "modes count"
        );
    }

    #[test]
    fn file_digests_are_remembered_across_builds_by_stat() {
        let dir = tree(&[("big.bin", "content")]);
        let state = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.bin");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let context = Context::open(dir.path(), None, Some(state.path())).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let real = context.file_digest(&file, &meta).unwrap();
        assert_eq!(real, sha256_file(&file).unwrap());
        context.save();
        // What the next build finds is the remembered digest, not a new read:
        // tampered with here, it shows.
        let db = rusqlite::Connection::open(state.path().join("keel.db")).unwrap();
        db.execute("UPDATE build_file_hashes SET digest = 'remembered'", [])
            .unwrap();
        let next = Context::open(dir.path(), None, Some(state.path())).unwrap();
        assert_eq!(next.file_digest(&file, &meta).unwrap(), "remembered");
        // `builder prune -a` forgets them: the file is read again.
        forget_file_digests(state.path()).unwrap();
        let pruned = Context::open(dir.path(), None, Some(state.path())).unwrap();
        assert_eq!(pruned.file_digest(&file, &meta).unwrap(), real);
        // A changed file (its stat changes) is read again.
        std::fs::write(&file, "changed").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let again = Context::open(dir.path(), None, Some(state.path())).unwrap();
        assert_eq!(
            again.file_digest(&file, &meta).unwrap(),
            sha256_file(&file).unwrap()
        );
    }
}
