//! The build: a Dockerfile's stages as a graph (only what the target needs,
//! independent stages at once), each instruction applied to the stage's
//! state (its image config and layers), layer-making steps looked up in
//! the build cache first. RUN goes to a [`Worker`] (keel-engine runs it as
//! a container with `keel run`'s defaults); COPY, ADD and WORKDIR are done
//! here on an overlay of the stage's snapshots. The image is recorded and
//! tagged only when every step succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use keel_image::digest::Digest;
use keel_image::manifest::{ContainerConfig, Descriptor, History, ImageConfig, Platform};
use keel_image::metadata::{CacheRecord, ImageRecord};
use keel_image::reference::Reference;
use keel_image::store::ImageStore;
use sha2::{Digest as _, Sha256};

use crate::ast::{self, Command, Dockerfile, Heredoc, Instruction, Kind};
use crate::context::{Context, Source};
use crate::error::{Error, Result};
use crate::fsops::{self, Owner, Pick, Root};
use crate::ignore::Matcher;
use crate::overlay::Scratch;

mod copy;
mod export;
mod instructions;
mod layers;
mod run;
mod stages;

/// The PATH docker gives a stage that has none (and RUN on scratch).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What `keel build` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The context directory.
    pub context: PathBuf,
    /// The Dockerfile's name as messages show it (`Dockerfile`).
    pub dockerfile_name: String,
    pub dockerfile: String,
    /// The text of the `.dockerignore` that applies, if any.
    pub dockerignore: Option<String>,
    pub tags: Vec<Reference>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// Pull FROM images even when present.
    pub pull: bool,
    pub labels: BTreeMap<String, String>,
    /// `--secret id=ID,src=PATH`.
    pub secrets: BTreeMap<String, PathBuf>,
    /// RUN's network when a step does not say (`default` = keel run's).
    pub network: Option<String>,
}

/// The end of a build.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub image: ImageRecord,
    pub warnings: Vec<String>,
}

/// A RUN step for the worker: a container with `keel run`'s defaults on
/// the stage's layers, whose changes become the step's layer.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The stage's snapshot directories, topmost first (none for scratch).
    pub layers: Vec<PathBuf>,
    /// The stage's image config; its env is the step's whole environment
    /// (ENV, then the ARGs in scope).
    pub config: ImageConfig,
    pub args: Vec<String>,
    /// `default`, `none` or `host`.
    pub network: String,
    pub mounts: Vec<RunMount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// What the build needs from the rest of keel.
pub trait Worker {
    /// The image `name` (a reference), pulled if missing or if `pull`.
    fn image(&mut self, store: &mut ImageStore, name: &str, pull: bool) -> Result<ImageRecord>;
    /// Runs `request`; its output goes to `output` as it comes. When the
    /// command succeeds, `diff` is called with the container's writable
    /// layer (an overlay upper directory) before the container goes.
    /// Returns the exit code.
    fn run(
        &mut self,
        request: &RunRequest,
        output: &mut dyn FnMut(&[u8]),
        diff: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<i32>;
    /// Downloads `url` to the file `into` (ADD); returns its Last-Modified
    /// time as seconds since the epoch, if the server said.
    fn fetch(&mut self, url: &str, into: &Path) -> Result<Option<i64>>;
}

/// What the user sees of a build.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step begins; `id`s number steps in the order they begin.
    Step {
        id: usize,
        name: &'a str,
    },
    Cached {
        id: usize,
    },
    Output {
        id: usize,
        data: &'a [u8],
    },
    Done {
        id: usize,
        seconds: f64,
    },
    Failed {
        id: usize,
        message: &'a str,
    },
    Warning(&'a str),
    /// The build's end (sent by the face that ran it).
    Finished {
        seconds: f64,
        image: &'a str,
    },
}

pub trait Progress: Send {
    fn event(&mut self, event: Event<'_>);
}

/// A progress that shows nothing (`-q`).
pub struct Quiet;

impl Progress for Quiet {
    fn event(&mut self, _event: Event<'_>) {}
}

/// A stage's state between steps: what its image would be now.
#[derive(Debug, Clone)]
struct State {
    config: ImageConfig,
    layers: Vec<Descriptor>,
    chain_ids: Vec<Digest>,
    /// The cache key of everything so far.
    key: String,
    /// ARGs in scope, in order, with their values.
    args: Vec<(String, String)>,
    /// ARGs declared without a default that no --build-arg gave.
    unset_args: BTreeSet<String>,
}

impl State {
    fn container_config(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    fn env(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// A variable as an instruction sees it: ENV first, then ARG.
    fn lookup(&self, name: &str) -> Option<String> {
        for entry in self.env().iter().rev() {
            if let Some((k, v)) = entry.split_once('=')
                && k == name
            {
                return Some(v.to_string());
            }
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn extend_key(&mut self, parts: &[&str]) {
        let mut all = vec![self.key.as_str()];
        all.extend_from_slice(parts);
        self.key = key_of(&all);
    }
}

fn key_of(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

struct Shared<'a, 'p> {
    request: &'a Request,
    root: PathBuf,
    dockerfile: Dockerfile,
    context: Context,
    progress: &'a Mutex<&'p mut dyn Progress>,
    next_id: Mutex<usize>,
    /// Global ARG values (meta args, build args, the platform ARGs).
    globals: Vec<(String, String)>,
    used_args: Mutex<BTreeSet<String>>,
    /// ARGs without a value that an instruction used (a warning).
    unset_used: Mutex<BTreeSet<String>>,
    started: String,
}

/// Builds `request` under keel's `root`. Each stage that runs gets its own
/// store and worker from `open` (stages without dependencies between them
/// build at once, on threads).
pub fn build(
    root: &Path,
    request: &Request,
    open: &(dyn Fn() -> Result<(ImageStore, Box<dyn Worker>)> + Sync),
    progress: &Mutex<&mut dyn Progress>,
) -> Result<Outcome> {
    crate::overlay::sweep(root);
    let dockerfile = crate::parser::parse(&request.dockerfile, &request.dockerfile_name)?;
    if dockerfile.stages.is_empty() {
        return Err(Error::msg(format!(
            "{}: the Dockerfile has no FROM instruction",
            request.dockerfile_name
        )));
    }
    let context = Context::open(
        &request.context,
        request.dockerignore.as_deref(),
        Some(root),
    )?;
    let platform = Platform::current();
    let platform_name = match &platform.variant {
        Some(v) => format!("{}/{}/{v}", platform.os, platform.architecture),
        None => format!("{}/{}", platform.os, platform.architecture),
    };
    let mut globals: Vec<(String, String)> = Vec::new();
    for (prefix, _) in [("TARGET", ()), ("BUILD", ())] {
        globals.push((format!("{prefix}PLATFORM"), platform_name.clone()));
        globals.push((format!("{prefix}OS"), platform.os.clone()));
        globals.push((format!("{prefix}ARCH"), platform.architecture.clone()));
        globals.push((
            format!("{prefix}VARIANT"),
            platform.variant.clone().unwrap_or_default(),
        ));
    }
    let shared_used = Mutex::new(BTreeSet::new());
    for arg in &dockerfile.meta_args {
        let lookup = |name: &str| lookup_in(&globals, name);
        let value = match request.build_args.get(&arg.name) {
            Some(v) => {
                shared_used
                    .lock()
                    .expect("not poisoned")
                    .insert(arg.name.clone());
                Some(v.clone())
            }
            None => arg
                .default
                .as_deref()
                .map(|d| crate::shell::expand(d, &lookup, dockerfile.directives.escape))
                .transpose()
                .map_err(|e| Error::msg(format!("ARG {}: {e}", arg.name)))?,
        };
        globals.push((arg.name.clone(), value.unwrap_or_default()));
    }
    let shared = Shared {
        request,
        root: root.to_path_buf(),
        dockerfile,
        context,
        progress,
        next_id: Mutex::new(0),
        globals,
        used_args: shared_used,
        unset_used: Mutex::new(BTreeSet::new()),
        started: ImageStore::now(),
    };
    let target = shared.target_index()?;
    let order = shared.needed_stages(target)?;
    let mut done: HashMap<usize, State> = HashMap::new();
    let mut remaining = order.clone();
    while !remaining.is_empty() {
        let ready: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|i| {
                shared
                    .dependencies(*i)
                    .map(|deps| deps.iter().all(|d| done.contains_key(d)))
                    .unwrap_or(true)
            })
            .collect();
        if ready.is_empty() {
            return Err(Error::msg("the stages depend on each other in a circle"));
        }
        remaining.retain(|i| !ready.contains(i));
        let results: Vec<(usize, Result<State>)> = if ready.len() == 1 {
            let i = ready[0];
            vec![(i, shared.build_stage(i, &done, open))]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = ready
                    .iter()
                    .map(|&i| {
                        let shared = &shared;
                        let done = &done;
                        (i, scope.spawn(move || shared.build_stage(i, done, open)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        (
                            i,
                            h.join()
                                .unwrap_or_else(|_| Err(Error::msg("a build thread failed"))),
                        )
                    })
                    .collect()
            })
        };
        for (i, result) in results {
            done.insert(i, result?);
        }
    }
    let state = done
        .remove(&target)
        .expect("the target stage was built last");
    let (mut store, _) = open()?;
    let image = shared.export(&mut store, state)?;
    shared.context.save();
    let mut warnings = Vec::new();
    let used = shared.used_args.lock().expect("not poisoned").clone();
    let unused: Vec<&String> = request
        .build_args
        .keys()
        .filter(|k| !used.contains(*k) && !is_proxy_arg(k))
        .collect();
    let unset = shared.unset_used.lock().expect("not poisoned").clone();
    if !unset.is_empty() {
        let names: Vec<&str> = unset.iter().map(String::as_str).collect();
        warnings.push(format!(
            "ARG without a value used (no default and no --build-arg; it expanded to \"\"): {}",
            names.join(", ")
        ));
    }
    if !unused.is_empty() {
        let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        warnings.push(format!(
            "one or more build-args [{}] were not consumed",
            names.join(" ")
        ));
    }
    Ok(Outcome { image, warnings })
}

/// The proxy ARGs docker passes through without a declaration.
fn is_proxy_arg(name: &str) -> bool {
    matches!(
        name.to_ascii_uppercase().as_str(),
        "HTTP_PROXY" | "HTTPS_PROXY" | "FTP_PROXY" | "NO_PROXY" | "ALL_PROXY"
    )
}

fn lookup_in(vars: &[(String, String)], name: &str) -> Option<String> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// How a COPY/ADD source is reached.
enum From {
    Context,
    /// Another stage's or an image's root filesystem (its layers).
    Layers {
        key: String,
        chain: Vec<Digest>,
    },
}

/// Takes the mount points a RUN's container needed out of its changes:
/// each empty file or empty directory at a stub's path in `upper`.
fn remove_stubs(upper: &Path, stubs: &[String]) {
    for stub in stubs {
        let path = upper.join(stub.trim_start_matches('/'));
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let _ = std::fs::remove_dir(&path);
        } else if meta.is_file() && meta.len() == 0 {
            let _ = std::fs::remove_file(&path);
        }
    }
}

enum Plan {
    Data { name: String, data: Vec<u8> },
    Url(String),
    Path(Source),
}

fn is_layer_step(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_)
    )
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`: the whole command is the heredoc.
fn is_bare_heredoc(text: &str) -> bool {
    let t = text.trim();
    t.starts_with("<<") && !t.contains(char::is_whitespace)
}

fn is_heredoc_word(word: &str, name: &str) -> bool {
    let w = word.trim_start_matches("<<").trim_start_matches('-');
    w.trim_matches(|c| c == '"' || c == '\'') == name
}

fn heredoc_body(heredoc: &Heredoc) -> String {
    let mut body = heredoc.content.clone();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    body
}

fn json(args: &[String]) -> String {
    serde_json::to_string(args).unwrap_or_default()
}

/// How docker's history shows a RUN: the shell form's text, else the argv.
fn shown_command(args: &[String]) -> String {
    args.join(" ")
}

fn crate_merge_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key) || e.as_str() == key)
    {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// `80`, `53/udp`, `8000-8002/tcp` as `PORT/PROTO` entries.
fn expand_ports(word: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {word}: invalid proto {proto:?}"));
    }
    let bad = || format!("EXPOSE {word}: invalid port");
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// A RUN --mount value's `key=value` options (a bare key is `key=`).
fn mount_options(spec: &str) -> BTreeMap<String, String> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
            None => (part.trim().to_ascii_lowercase(), "true".to_string()),
        })
        .collect()
}

fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || path.ends_with("//") || path.matches('/').count() <= 2 {
        "index.html".to_string()
    } else {
        name.to_string()
    }
}

/// ADD's local archives: tar, gzip- or zstd-compressed tar (by content).
fn is_archive(path: &Path) -> bool {
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    looks_like_archive(&head[..n])
}

/// A tar, or a gzip or zstd stream (of a tar), by its first 512 bytes.
pub fn looks_like_archive(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 262 && &head[257..262] == b"ustar")
}

/// Unpacks an ADD archive into `dest` of the root, with the guards of a
/// layer: no entry leaves the root.
fn extract_archive(path: &Path, root: &Root, dest: &str) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::path("open", path, e))?;
    let mut buffered = std::io::BufReader::new(file);
    let head = {
        use std::io::BufRead;
        buffered
            .fill_buf()
            .map_err(|e| Error::path("read", path, e))?
            .to_vec()
    };
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::new(buffered).map_err(|e| Error::path("read", path, e))?,
        )
    } else {
        Box::new(buffered)
    };
    let target = fsops::resolve_under(root.path(), dest)?
        .ok_or_else(|| Error::msg(format!("{dest} is not in the image")))?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    for entry in archive
        .entries()
        .map_err(|e| Error::path("read the archive", path, e))?
    {
        let mut entry = entry.map_err(|e| Error::path("read the archive", path, e))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // unpack_in refuses `..` and absolute names, and entries that
        // would be written through a symlink out of the directory.
        let inside = entry
            .unpack_in(&target)
            .map_err(|e| Error::msg(format!("ADD {}: entry {name:?}: {e}", path.display())))?;
        if !inside {
            return Err(Error::msg(format!(
                "ADD {}: entry {name:?} would be written outside {dest}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Temp files under keel's root (ADD downloads).
mod tempfile_path {
    use std::path::{Path, PathBuf};

    use crate::error::{Error, Result};

    pub struct TempFile {
        path: PathBuf,
    }

    impl TempFile {
        pub fn new(root: &Path) -> Result<TempFile> {
            let dir = root.join("build").join("tmp");
            std::fs::create_dir_all(&dir).map_err(|e| Error::path("create", &dir, e))?;
            let mut bytes = [0u8; 8];
            let _ = getrandom(&mut bytes);
            let path = dir.join(format!(
                "{}-download-{}",
                std::process::id(),
                hex::encode(bytes)
            ));
            std::fs::File::create(&path).map_err(|e| Error::path("create", &path, e))?;
            Ok(TempFile { path })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        pub fn set_mtime(&self, seconds: i64) {
            if let Ok(file) = std::fs::File::options().write(true).open(&self.path) {
                let time =
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
                let _ = file.set_modified(time);
            }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    pub fn getrandom(bytes: &mut [u8]) -> std::io::Result<()> {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(bytes)
    }
}

pub(crate) use tempfile_path::getrandom;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_docker_writes_them() {
        assert_eq!(expand_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expand_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            expand_ports("8000-8002/tcp").unwrap(),
            ["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(
            expand_ports("80/icmp")
                .unwrap_err()
                .contains("invalid proto")
        );
        assert!(expand_ports("x").is_err());
        assert!(expand_ports("9-1").is_err());
    }

    #[test]
    fn mount_option_lists() {
        let options = mount_options("type=cache,target=/root/.cache,ID=x,rw");
        assert_eq!(options["type"], "cache");
        assert_eq!(options["target"], "/root/.cache");
        assert_eq!(options["id"], "x", "keys are case-insensitive");
        assert_eq!(options["rw"], "true", "a bare key is a flag");
    }

    #[test]
    fn file_names_of_urls() {
        assert_eq!(
            url_file_name("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_file_name("https://example.com/"), "index.html");
        assert_eq!(url_file_name("https://example.com"), "index.html");
    }

    #[test]
    fn heredoc_forms() {
        assert!(is_bare_heredoc("<<EOF"));
        assert!(is_bare_heredoc(" <<-\"EOF\" "));
        assert!(!is_bare_heredoc("python3 <<EOF"));
        assert!(is_heredoc_word("<<EOF", "EOF"));
        assert!(is_heredoc_word("EOF", "EOF"));
        assert!(is_heredoc_word("<<-'EOF'", "EOF"));
        assert!(!is_heredoc_word("file.txt", "EOF"));
    }

    #[test]
    fn cache_keys_depend_on_every_part_in_order() {
        let a = key_of(&["parent", "RUN x"]);
        assert_eq!(a, key_of(&["parent", "RUN x"]));
        assert_ne!(a, key_of(&["parent", "RUN y"]));
        assert_ne!(a, key_of(&["RUN x", "parent"]));
        // Parts are separated: moving a byte between them changes the key.
        assert_ne!(key_of(&["ab", "c"]), key_of(&["a", "bc"]));
    }

    #[test]
    fn env_merge_replaces_in_place() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        crate_merge_env(&mut env, "A", "2");
        crate_merge_env(&mut env, "B", "x y");
        assert_eq!(env, ["PATH=/bin", "A=2", "B=x y"]);
    }

    #[test]
    fn stubs_go_only_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        std::fs::create_dir_all(upper.join("run/secrets")).unwrap();
        std::fs::write(upper.join("run/secrets/token"), "").unwrap();
        std::fs::create_dir_all(upper.join("mnt")).unwrap();
        std::fs::write(upper.join("mnt/kept"), "written by the step").unwrap();
        remove_stubs(
            upper,
            &[
                "/run/secrets/token".into(),
                "/run/secrets".into(),
                "/run".into(),
                "/mnt".into(),
            ],
        );
        assert!(
            !upper.join("run").exists(),
            "empty stubs and their parents go"
        );
        assert!(
            upper.join("mnt/kept").exists(),
            "a directory the step wrote into stays"
        );
    }
}
