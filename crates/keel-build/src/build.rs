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

impl Shared<'_, '_> {
    fn file(&self) -> &str {
        &self.request.dockerfile_name
    }

    fn step_error(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Step {
            file: self.file().to_string(),
            line,
            message: message.into(),
        }
    }

    fn event(&self, event: Event<'_>) {
        if let Ok(mut progress) = self.progress.lock() {
            progress.event(event);
        }
    }

    fn begin(&self, name: &str) -> (usize, Instant) {
        let id = {
            let mut next = self.next_id.lock().expect("not poisoned");
            *next += 1;
            *next
        };
        self.event(Event::Step { id, name });
        (id, Instant::now())
    }

    fn escape(&self) -> char {
        self.dockerfile.directives.escape
    }

    fn expand_global(&self, word: &str, line: usize) -> Result<String> {
        let lookup = |name: &str| {
            let v = lookup_in(&self.globals, name);
            if v.is_some() {
                self.used_args
                    .lock()
                    .expect("not poisoned")
                    .insert(name.to_string());
            }
            v
        };
        crate::shell::expand(word, &lookup, self.escape())
            .map_err(|e| self.step_error(line, e.to_string()))
    }

    fn stage_name(&self, index: usize) -> String {
        self.dockerfile.stages[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    /// A stage named by `name` (its `AS` name or its index) before `before`.
    fn find_stage(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self.dockerfile.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    fn target_index(&self) -> Result<usize> {
        match &self.request.target {
            None => Ok(self.dockerfile.stages.len() - 1),
            Some(target) => {
                let lower = target.to_ascii_lowercase();
                self.dockerfile
                    .stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "failed to reach build target {target} in Dockerfile: no stage is named so"
                        ))
                    })
            }
        }
    }

    /// The stages stage `index` reads: its base, `COPY --from` and
    /// `RUN --mount=from=`.
    fn dependencies(&self, index: usize) -> Result<Vec<usize>> {
        let stage = &self.dockerfile.stages[index];
        let mut deps = Vec::new();
        let base = self.expand_global(&stage.base, stage.line)?;
        if let Some(i) = self.find_stage(&base, index) {
            deps.push(i);
        }
        let mut refer = |word: &str, line: usize| -> Result<()> {
            let name = self.expand_global(word, line)?;
            if let Some(i) = self.find_stage(&name, index) {
                deps.push(i);
            } else if name.parse::<usize>().is_ok() {
                return Err(self.step_error(
                    line,
                    format!("invalid stage reference {name}: no earlier stage has that index"),
                ));
            }
            Ok(())
        };
        for instruction in &stage.instructions {
            match &instruction.kind {
                Kind::Copy(copy) | Kind::Add(copy) => {
                    if let Some(from) = &copy.from {
                        refer(from, instruction.line)?;
                    }
                }
                Kind::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(from) = mount_options(mount).get("from") {
                            refer(from, instruction.line)?;
                        }
                    }
                }
                _ => {}
            }
        }
        deps.sort_unstable();
        deps.dedup();
        Ok(deps)
    }

    /// The target and the stages it needs, in an order that puts each
    /// after what it needs.
    fn needed_stages(&self, target: usize) -> Result<Vec<usize>> {
        let mut needed = BTreeSet::new();
        let mut pending = vec![target];
        while let Some(i) = pending.pop() {
            if needed.insert(i) {
                pending.extend(self.dependencies(i)?);
            }
        }
        Ok(needed.into_iter().collect())
    }

    fn build_stage(
        &self,
        index: usize,
        done: &HashMap<usize, State>,
        open: &(dyn Fn() -> Result<(ImageStore, Box<dyn Worker>)> + Sync),
    ) -> Result<State> {
        let (mut store, mut worker) = open()?;
        let stage = &self.dockerfile.stages[index];
        let steps = 1 + stage
            .instructions
            .iter()
            .filter(|i| is_layer_step(&i.kind))
            .count();
        let label = |n: usize| {
            if self.dockerfile.stages.len() == 1 {
                format!("[{n}/{steps}]")
            } else {
                format!("[{} {n}/{steps}]", self.stage_name(index))
            }
        };
        let base = self.expand_global(&stage.base, stage.line)?;
        if base.trim().is_empty() {
            return Err(self.step_error(
                stage.line,
                format!("base name ({}) should not be blank", stage.base),
            ));
        }
        if let Some(platform) = &stage.platform {
            let platform = self.expand_global(platform, stage.line)?;
            let wanted = Platform::parse(&platform).map_err(|e| {
                self.step_error(stage.line, format!("FROM --platform={platform}: {e}"))
            })?;
            let current = Platform::current();
            if wanted.os != current.os || wanted.architecture != current.architecture {
                return Err(self.step_error(
                    stage.line,
                    format!(
                        "FROM --platform={platform}: keel builds for this machine's platform only ({}/{})",
                        current.os, current.architecture
                    ),
                ));
            }
        }
        let (id, started) = self.begin(&format!("{} FROM {base}", label(1)));
        let mut state = match self.find_stage(&base, index) {
            Some(i) => {
                let mut state = done
                    .get(&i)
                    .cloned()
                    .ok_or_else(|| Error::msg(format!("stage {i} was not built")))?;
                state.args.clear();
                state.unset_args.clear();
                state
            }
            None if base.eq_ignore_ascii_case("scratch") => {
                let platform = Platform::current();
                State {
                    config: ImageConfig {
                        architecture: platform.architecture.clone(),
                        os: platform.os.clone(),
                        variant: platform.variant.clone(),
                        config: Some(ContainerConfig {
                            env: Some(vec![DEFAULT_PATH.to_string()]),
                            ..ContainerConfig::default()
                        }),
                        ..ImageConfig::default()
                    },
                    layers: Vec::new(),
                    chain_ids: Vec::new(),
                    key: key_of(&["scratch"]),
                    args: Vec::new(),
                    unset_args: BTreeSet::new(),
                }
            }
            None => {
                let record = worker
                    .image(&mut store, &base, self.request.pull)
                    .map_err(|e| {
                        self.fail(id, &e);
                        self.step_error(stage.line, format!("FROM {base}: {e}"))
                    })?;
                let mut config = store.config(&record)?;
                let layers = store.layers(&record)?;
                let c = config.config.get_or_insert_with(ContainerConfig::default);
                if c.env.as_ref().is_none_or(|e| e.is_empty()) {
                    c.env = Some(vec![DEFAULT_PATH.to_string()]);
                }
                State {
                    config,
                    layers,
                    chain_ids: record.chain_ids.clone(),
                    key: key_of(&["image", &record.id.to_string()]),
                    args: Vec::new(),
                    unset_args: BTreeSet::new(),
                }
            }
        };
        self.event(Event::Done {
            id,
            seconds: started.elapsed().as_secs_f64(),
        });
        // The base's ONBUILD triggers run first, and are not passed on.
        let triggers = state
            .config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        let mut step = 1;
        for trigger in triggers {
            let instruction =
                crate::parser::parse_instruction(&trigger, self.escape()).map_err(|e| {
                    self.step_error(
                        stage.line,
                        format!("ONBUILD trigger {trigger:?} of {base}: {e}"),
                    )
                })?;
            let instruction = Instruction {
                line: stage.line,
                ..instruction
            };
            let name = format!("{} ONBUILD {}", label(1), instruction.original);
            self.apply(
                &mut store,
                worker.as_mut(),
                &mut state,
                &instruction,
                &name,
                done,
                index,
            )?;
        }
        for instruction in &stage.instructions {
            let name = if is_layer_step(&instruction.kind) {
                step += 1;
                format!("{} {}", label(step), instruction.original)
            } else {
                String::new()
            };
            self.apply(
                &mut store,
                worker.as_mut(),
                &mut state,
                instruction,
                &name,
                done,
                index,
            )?;
        }
        Ok(state)
    }

    fn fail(&self, id: usize, error: &Error) {
        self.event(Event::Failed {
            id,
            message: &error.to_string(),
        });
    }

    fn expand(&self, state: &State, word: &str, line: usize) -> Result<String> {
        let lookup = |name: &str| {
            let v = state.lookup(name);
            if state.unset_args.contains(name)
                && !state
                    .env()
                    .iter()
                    .any(|e| e.starts_with(&format!("{name}=")))
            {
                self.unset_used
                    .lock()
                    .expect("not poisoned")
                    .insert(format!("{name} (line {line})"));
            }
            if v.is_some() {
                self.used_args
                    .lock()
                    .expect("not poisoned")
                    .insert(name.to_string());
            }
            v
        };
        crate::shell::expand(word, &lookup, self.escape())
            .map_err(|e| self.step_error(line, e.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        store: &mut ImageStore,
        worker: &mut dyn Worker,
        state: &mut State,
        instruction: &Instruction,
        name: &str,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<()> {
        let line = instruction.line;
        // A config-only instruction: part of the key, an empty-layer history entry.
        let record = |state: &mut State, created_by: String| {
            state.extend_key(&[&created_by]);
            state.config.history.push(History {
                created: Some(self.started.clone()),
                created_by: Some(created_by),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: true,
                ..History::default()
            });
        };
        match &instruction.kind {
            Kind::Env(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(state, k, line)?;
                    let v = self.expand(state, v, line)?;
                    let mut env = state.env();
                    crate_merge_env(&mut env, &k, &v);
                    state.container_config().env = Some(env);
                    shown.push(format!("{k}={v}"));
                }
                let text = format!("ENV {}", shown.join(" "));
                record(state, text);
            }
            Kind::Arg(decls) => {
                let mut shown = Vec::new();
                for decl in decls {
                    let value = match self.request.build_args.get(&decl.name) {
                        Some(v) => {
                            self.used_args
                                .lock()
                                .expect("not poisoned")
                                .insert(decl.name.clone());
                            v.clone()
                        }
                        None => match &decl.default {
                            Some(d) => self.expand(state, d, line)?,
                            None => match lookup_in(&self.globals, &decl.name) {
                                Some(v) => v,
                                None => {
                                    state.unset_args.insert(decl.name.clone());
                                    String::new()
                                }
                            },
                        },
                    };
                    shown.push(format!("{}={value}", decl.name));
                    state.args.push((decl.name.clone(), value));
                }
                let text = format!("ARG {}", shown.join(" "));
                record(state, text);
            }
            Kind::Label(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(state, k, line)?;
                    let v = self.expand(state, v, line)?;
                    shown.push(format!("{k}={v}"));
                    state
                        .container_config()
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
                let text = format!("LABEL {}", shown.join(" "));
                record(state, text);
            }
            Kind::User(user) => {
                let user = self.expand(state, user, line)?;
                state.container_config().user = Some(user.clone());
                let text = format!("USER {user}");
                record(state, text);
            }
            Kind::Cmd(command) => {
                let args = self.command_args(state, command);
                state.container_config().cmd = Some(args.clone());
                let text = format!("CMD {}", json(&args));
                record(state, text);
            }
            Kind::Entrypoint(command) => {
                let args = self.command_args(state, command);
                let c = state.container_config();
                c.entrypoint = Some(args.clone());
                // An ENTRYPOINT resets the CMD inherited from the base.
                c.cmd = None;
                let text = format!("ENTRYPOINT {}", json(&args));
                record(state, text);
            }
            Kind::Expose(ports) => {
                let mut shown = Vec::new();
                for port in ports {
                    let port = self.expand(state, port, line)?;
                    for port in expand_ports(&port).map_err(|e| self.step_error(line, e))? {
                        shown.push(port.clone());
                        state
                            .container_config()
                            .exposed_ports
                            .get_or_insert_with(BTreeMap::new)
                            .insert(port, serde_json::json!({}));
                    }
                }
                let text = format!("EXPOSE map[{}]", shown.join(" "));
                record(state, text);
            }
            Kind::Volume(paths) => {
                let mut shown = Vec::new();
                for path in paths {
                    let path = self.expand(state, path, line)?;
                    if path.trim().is_empty() {
                        return Err(
                            self.step_error(line, "VOLUME specified can not be an empty string")
                        );
                    }
                    shown.push(path.clone());
                    state
                        .container_config()
                        .volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(path, serde_json::json!({}));
                }
                let text = format!("VOLUME {}", json(&shown));
                record(state, text);
            }
            Kind::Shell(shell) => {
                state.container_config().shell = Some(shell.clone());
                let text = format!("SHELL {}", json(shell));
                record(state, text);
            }
            Kind::StopSignal(signal) => {
                let signal = self.expand(state, signal, line)?;
                state.container_config().stop_signal = Some(signal.clone());
                let text = format!("STOPSIGNAL {signal}");
                record(state, text);
            }
            Kind::Maintainer(who) => {
                state.config.author = Some(who.clone());
                let text = format!("MAINTAINER {who}");
                record(state, text);
            }
            Kind::Onbuild(trigger) => {
                state
                    .container_config()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(trigger.original.clone());
                let text = format!("ONBUILD {}", trigger.original);
                record(state, text);
            }
            Kind::Healthcheck(check) => {
                let health = match check {
                    ast::Healthcheck::None => keel_image::manifest::Healthcheck {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    },
                    ast::Healthcheck::Check {
                        test,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let duration = |d: &Option<String>, what: &str| -> Result<Option<i64>> {
                            d.as_deref()
                                .map(|d| {
                                    crate::parser::parse_go_duration(d).map_err(|_| {
                                        self.step_error(
                                            line,
                                            format!("HEALTHCHECK --{what}: bad duration {d:?}"),
                                        )
                                    })
                                })
                                .transpose()
                        };
                        let test = match test {
                            Command::Exec(args) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(args.iter().cloned());
                                t
                            }
                            Command::Shell(text) => vec!["CMD-SHELL".into(), text.clone()],
                        };
                        keel_image::manifest::Healthcheck {
                            test: Some(test),
                            interval: duration(interval, "interval")?,
                            timeout: duration(timeout, "timeout")?,
                            start_period: duration(start_period, "start-period")?,
                            start_interval: duration(start_interval, "start-interval")?,
                            retries: retries.map(i64::from),
                            ..Default::default()
                        }
                    }
                };
                let text = format!(
                    "HEALTHCHECK {}",
                    serde_json::to_string(&health).unwrap_or_default()
                );
                state.container_config().healthcheck = Some(health);
                record(state, text);
            }
            Kind::Workdir(dir) => {
                let dir = self.expand(state, dir, line)?;
                let path = if dir.starts_with('/') {
                    fsops::clean_path(&dir)
                } else {
                    fsops::clean_path(&format!("{}/{dir}", state.workdir()))
                };
                state.container_config().working_dir = Some(path.clone());
                let text = format!("WORKDIR {path}");
                self.layer_step(store, state, name, line, &text, |root| {
                    root.mkdir_all(&path, None).map(|_| ())
                })?;
            }
            Kind::Run(run) => {
                self.run(store, worker, state, instruction, run, name, done, stage)?
            }
            Kind::Copy(copy) => self.copy(
                store,
                worker,
                state,
                instruction,
                copy,
                false,
                name,
                done,
                stage,
            )?,
            Kind::Add(copy) => self.copy(
                store,
                worker,
                state,
                instruction,
                copy,
                true,
                name,
                done,
                stage,
            )?,
        }
        Ok(())
    }

    fn command_args(&self, state: &State, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(args) => args.clone(),
            Command::Shell(text) => {
                let mut args = state.shell();
                args.push(text.clone());
                args
            }
        }
    }

    /// A step that may change files: from the cache, or by `make` on the
    /// stage's root filesystem (an overlay of its snapshots).
    fn layer_step(
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
    fn lowers(&self, store: &mut ImageStore, state: &State) -> Result<Vec<PathBuf>> {
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

    fn cached(&self, store: &ImageStore, key: &str) -> Option<CacheRecord> {
        if self.request.no_cache {
            return None;
        }
        let hit = store.metadata.cache_get(key).ok().flatten()?;
        match &hit.layer {
            Some(layer) if !store.content.contains(layer) => None,
            _ => Some(hit),
        }
    }

    fn take_cached(&self, state: &mut State, hit: &CacheRecord, text: &str) {
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
    fn commit_layer(
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

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        store: &mut ImageStore,
        worker: &mut dyn Worker,
        state: &mut State,
        instruction: &Instruction,
        run: &ast::Run,
        name: &str,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<()> {
        let line = instruction.line;
        let args = self.run_args(state, run);
        let network = run
            .network
            .clone()
            .or_else(|| self.request.network.clone())
            .unwrap_or_else(|| "default".into());
        if !matches!(network.as_str(), "default" | "none" | "host") {
            return Err(self.step_error(
                line,
                format!("RUN --network={network}: use default, none or host"),
            ));
        }
        // The ARGs in scope are the step's environment too (under ENV).
        let mut env = state.env();
        for (k, v) in &state.args {
            if !env
                .iter()
                .any(|e| e.split_once('=').is_some_and(|(ek, _)| ek == k))
            {
                env.push(format!("{k}={v}"));
            }
        }
        let mut key_parts: Vec<String> = vec![
            format!("RUN {}", json(&args)),
            format!("network={network}"),
            format!(
                "args={}",
                json(
                    &state
                        .args
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                )
            ),
        ];
        let mut mounts = Vec::new();
        let mut scratches = Vec::new();
        for spec in &run.mounts {
            let (mount, key) = self
                .run_mount(store, state, spec, line, done, stage, &mut scratches)
                .map_err(|e| match e {
                    Error::Msg(m) => self.step_error(line, format!("--mount={spec}: {m}")),
                    other => other,
                })?;
            mounts.push(mount);
            key_parts.push(key);
        }
        let text = format!("RUN {} # buildkit", shown_command(&args));
        let parts: Vec<&str> = key_parts.iter().map(String::as_str).collect();
        let mut all = vec![state.key.as_str()];
        all.extend(parts);
        let key = key_of(&all);
        let (id, started) = self.begin(name);
        if let Some(hit) = self.cached(store, &key) {
            self.event(Event::Cached { id });
            self.take_cached(state, &hit, &text);
            state.key = key;
            return Ok(());
        }
        if state.chain_ids.is_empty() {
            let e = self.step_error(
                line,
                "RUN needs a shell or a program, and a stage FROM scratch has no files yet",
            );
            self.fail(id, &e);
            return Err(e);
        }
        let mut config = state.config.clone();
        config
            .config
            .get_or_insert_with(ContainerConfig::default)
            .env = Some(env);
        let layers = self.lowers(store, state)?;
        let stubs = self.mount_stubs(&layers, &mounts)?;
        let request = RunRequest {
            layers,
            config,
            args: args.clone(),
            network,
            mounts,
        };
        let mut layer_result: Option<Result<()>> = None;
        let exit = {
            let mut output = |data: &[u8]| self.event(Event::Output { id, data });
            let mut diff = |upper: &Path| -> Result<()> {
                remove_stubs(upper, &stubs);
                let result = self.commit_layer(store, state, &key, &text, upper);
                let ok = result.is_ok();
                layer_result = Some(result);
                if ok {
                    Ok(())
                } else {
                    Err(Error::msg("the step's layer could not be made"))
                }
            };
            worker.run(&request, &mut output, &mut diff)
        };
        drop(scratches);
        let outcome = match exit {
            Ok(0) => match layer_result {
                Some(result) => result,
                None => Err(Error::msg(
                    "the worker did not hand over the step's changes",
                )),
            },
            Ok(code) => Err(Error::RunFailed {
                file: self.file().to_string(),
                line,
                command: shown_command(&args),
                code,
            }),
            Err(e) => Err(match layer_result {
                Some(Err(layer)) => layer,
                _ => e,
            }),
        };
        match outcome {
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
                Err(e)
            }
        }
    }

    /// The mount targets of a RUN (its `--mount`s and the container's own:
    /// /proc, /dev, /etc/hosts, ...) that the stage does not have, with
    /// their missing parents: the runtime makes them as mount points, and
    /// they are taken out of the step's layer again, as BuildKit does.
    fn mount_stubs(&self, layers: &[PathBuf], mounts: &[RunMount]) -> Result<Vec<String>> {
        let mut targets: Vec<String> = [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        for mount in mounts {
            let target = match mount {
                RunMount::Bind { target, .. } | RunMount::Tmpfs { target, .. } => target,
            };
            targets.push(fsops::clean_path(target));
        }
        let scratch = Scratch::new(&self.root)?;
        let root = scratch.mount_read_only(layers)?;
        let mut stubs = Vec::new();
        for target in targets {
            let mut path = target.clone();
            // The target and each parent that is not there either.
            while path != "/" && root.kind(&path)?.is_none() {
                if !stubs.contains(&path) {
                    stubs.push(path.clone());
                }
                path = match path.rsplit_once('/') {
                    Some(("", _)) | None => "/".to_string(),
                    Some((parent, _)) => parent.to_string(),
                };
            }
        }
        // Deepest first, so a parent is empty when its turn comes.
        stubs.sort_by_key(|s| std::cmp::Reverse(s.matches('/').count()));
        Ok(stubs)
    }

    /// RUN's argv: the exec form as is; the shell form through SHELL; a
    /// heredoc as the script (or, after a command, the command's input).
    fn run_args(&self, state: &State, run: &ast::Run) -> Vec<String> {
        let mut shell = state.shell();
        match &run.command {
            Some(Command::Exec(args)) => args.clone(),
            Some(Command::Shell(text)) if run.heredocs.is_empty() => {
                shell.push(text.clone());
                shell
            }
            command => {
                let text = match command {
                    Some(Command::Shell(text)) => text.clone(),
                    _ => String::new(),
                };
                let only_heredoc = run.heredocs.len() == 1 && is_bare_heredoc(&text);
                if only_heredoc {
                    let body = &run.heredocs[0].content;
                    if let Some(first) = body.lines().next()
                        && let Some(interpreter) = first.strip_prefix("#!")
                    {
                        // A script with its own interpreter.
                        let mut args: Vec<String> =
                            interpreter.split_whitespace().map(str::to_string).collect();
                        args.push("-c".into());
                        args.push(body.clone());
                        return args;
                    }
                    shell.push(body.clone());
                    return shell;
                }
                let mut script = text;
                for heredoc in &run.heredocs {
                    script.push('\n');
                    script.push_str(&heredoc_body(heredoc));
                    script.push_str(&heredoc.name);
                }
                shell.push(script);
                shell
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_mount(
        &self,
        store: &mut ImageStore,
        state: &State,
        spec: &str,
        line: usize,
        done: &HashMap<usize, State>,
        stage: usize,
        scratches: &mut Vec<Scratch>,
    ) -> Result<(RunMount, String)> {
        let options = mount_options(spec);
        let kind = options.get("type").map(String::as_str).unwrap_or("bind");
        let target = options
            .get("target")
            .or_else(|| options.get("dst"))
            .or_else(|| options.get("destination"))
            .cloned();
        let expand = |w: &str| self.expand(state, w, line);
        match kind {
            "tmpfs" => {
                let target = target.ok_or_else(|| Error::msg("a tmpfs mount needs target="))?;
                let size = options
                    .get("size")
                    .map(|s| {
                        s.parse::<u64>()
                            .map_err(|_| Error::msg(format!("bad size {s:?}")))
                    })
                    .transpose()?;
                Ok((
                    RunMount::Tmpfs {
                        target: expand(&target)?,
                        size,
                    },
                    format!("tmpfs {spec}"),
                ))
            }
            "cache" => {
                let target =
                    expand(&target.ok_or_else(|| Error::msg("a cache mount needs target="))?)?;
                let id = options.get("id").cloned().unwrap_or_else(|| target.clone());
                let dir = self
                    .root
                    .join("build")
                    .join("cache-mounts")
                    .join(key_of(&[&id]));
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(|e| Error::path("create", &dir, e))?;
                    let mode = options
                        .get("mode")
                        .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
                        .unwrap_or(0o755);
                    let uid = options.get("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
                    let gid = options.get("gid").and_then(|g| g.parse().ok()).unwrap_or(0);
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .map_err(|e| Error::path("chown", &dir, e))?;
                    std::fs::set_permissions(
                        &dir,
                        std::os::unix::fs::PermissionsExt::from_mode(mode),
                    )
                    .map_err(|e| Error::path("chmod", &dir, e))?;
                }
                Ok((
                    RunMount::Bind {
                        source: dir,
                        target,
                        read_only: false,
                    },
                    format!("cache {spec}"),
                ))
            }
            "secret" => {
                let id = options
                    .get("id")
                    .cloned()
                    .or_else(|| {
                        target
                            .as_ref()
                            .and_then(|t| t.rsplit('/').next().map(str::to_string))
                    })
                    .ok_or_else(|| Error::msg("a secret mount needs id="))?;
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                let Some(source) = self.request.secrets.get(&id) else {
                    if options.get("required").is_some_and(|r| r != "false") {
                        return Err(Error::msg(format!(
                            "secret {id} is required but was not given (--secret id={id},src=FILE)"
                        )));
                    }
                    return Ok((
                        RunMount::Tmpfs {
                            target: "/dev/shm/.keel-no-secret".into(),
                            size: Some(4096),
                        },
                        format!("secret {spec} absent"),
                    ));
                };
                Ok((
                    RunMount::Bind {
                        source: source.clone(),
                        target: expand(&target)?,
                        read_only: true,
                    },
                    format!("secret {spec}"),
                ))
            }
            "bind" => {
                let target =
                    expand(&target.ok_or_else(|| Error::msg("a bind mount needs target="))?)?;
                let source_word = options
                    .get("source")
                    .or_else(|| options.get("src"))
                    .cloned()
                    .unwrap_or_else(|| ".".into());
                let source_word = expand(&source_word)?;
                let read_only = !options.contains_key("rw") && !options.contains_key("readwrite");
                let (path, key) = match options.get("from") {
                    None => {
                        let sources = self.context.select(&source_word)?;
                        let source = sources
                            .into_iter()
                            .next()
                            .ok_or_else(|| Error::msg("the bind source is not there"))?;
                        let digest = self.context.digest(&source, None)?;
                        (source.path, format!("bind {spec} {digest}"))
                    }
                    Some(from) => {
                        let from = self.source_stage(store, &expand(from)?, line, done, stage)?;
                        let From::Layers { key, chain, .. } = from else {
                            return Err(Error::msg("no such stage or image"));
                        };
                        let lowers = store.snapshots.lower_dirs(&chain)?;
                        let scratch = Scratch::new(&self.root)?;
                        let root = scratch.mount_read_only(&lowers)?;
                        let path =
                            fsops::resolve_under(root.path(), &source_word)?.ok_or_else(|| {
                                Error::msg(format!("{source_word} is not in the stage"))
                            })?;
                        drop(root);
                        scratches.push(scratch);
                        (path, format!("bind {spec} {key}"))
                    }
                };
                if read_only {
                    Ok((
                        RunMount::Bind {
                            source: path,
                            target,
                            read_only: true,
                        },
                        key,
                    ))
                } else {
                    // Writes to a rw bind mount are thrown away, as docker does.
                    let scratch = Scratch::new(&self.root)?;
                    let root = scratch.mount(&[path])?;
                    let merged = root.path().to_path_buf();
                    drop(root);
                    scratches.push(scratch);
                    Ok((
                        RunMount::Bind {
                            source: merged,
                            target,
                            read_only: false,
                        },
                        key,
                    ))
                }
            }
            other => Err(Error::msg(format!(
                "unknown mount type {other:?}: use bind, cache, tmpfs or secret"
            ))),
        }
    }

    /// `--from=NAME`: an earlier stage (its state) or an image.
    fn source_stage(
        &self,
        store: &mut ImageStore,
        name: &str,
        line: usize,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<From> {
        if let Some(i) = self.find_stage(name, stage) {
            let state = done
                .get(&i)
                .ok_or_else(|| self.step_error(line, format!("stage {name} was not built")))?;
            self.lowers(store, state)?;
            return Ok(From::Layers {
                key: state.key.clone(),
                chain: state.chain_ids.clone(),
            });
        }
        Err(self.step_error(
            line,
            format!("--from={name}: no stage of that name before this one"),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        store: &mut ImageStore,
        worker: &mut dyn Worker,
        state: &mut State,
        instruction: &Instruction,
        copy: &ast::Copy,
        add: bool,
        name: &str,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<()> {
        let line = instruction.line;
        let verb = if add { "ADD" } else { "COPY" };
        let fail_early = |e: Error| match e {
            Error::Msg(m) => self.step_error(line, format!("{verb}: {m}")),
            other => other,
        };
        // Where the sources come from.
        let mut from = From::Context;
        let mut image_chain: Option<(Vec<Digest>, Vec<Digest>)> = None;
        if let Some(word) = &copy.from {
            let name = self.expand_global(word, line)?;
            match self.find_stage(&name, stage) {
                Some(_) => from = self.source_stage(store, &name, line, done, stage)?,
                None => {
                    let record = worker
                        .image(store, &name, false)
                        .map_err(|e| self.step_error(line, format!("{verb} --from={name}: {e}")))?;
                    let diff_ids = store.config(&record)?.rootfs.diff_ids;
                    image_chain = Some((record.chain_ids.clone(), diff_ids));
                    from = From::Layers {
                        key: key_of(&["image", &record.id.to_string()]),
                        chain: record.chain_ids.clone(),
                    };
                }
            }
        }
        if let Some((chain, diff_ids)) = &image_chain {
            for (i, chain_id) in chain.iter().enumerate() {
                if let Some(diff_id) = diff_ids.get(i) {
                    store.ensure_snapshot(chain_id, diff_id, &chain[..i])?;
                }
            }
        }
        let dest_word = self.expand(state, &copy.dest, line)?;
        let owner_ids = match &copy.chown {
            Some(chown) => {
                let chown = self.expand(state, chown, line)?;
                self.resolve_owner(store, state, &chown)
                    .map_err(fail_early)?
            }
            None => (0, 0),
        };
        let mode = match &copy.chmod {
            Some(chmod) => {
                let chmod = self.expand(state, chmod, line)?;
                Some(u32::from_str_radix(&chmod, 8).map_err(|_| {
                    self.step_error(
                        line,
                        format!("{verb} --chmod={chmod}: give the mode in octal (e.g. 755)"),
                    )
                })?)
            }
            None => None,
        };
        let owner = Owner {
            ids: owner_ids,
            mode,
        };
        let excludes = if copy.excludes.is_empty() {
            None
        } else {
            let patterns: Vec<String> = copy
                .excludes
                .iter()
                .map(|p| self.expand(state, p, line))
                .collect::<Result<_>>()?;
            Some(
                Matcher::new(&patterns)
                    .map_err(|e| self.step_error(line, format!("--exclude: {e}")))?,
            )
        };
        // The destination: relative to WORKDIR; a directory when it ends
        // with `/` (or is one already).
        let dest_is_dir_word =
            dest_word.ends_with('/') || dest_word == "." || dest_word.ends_with("/.");
        let dest = if dest_word.starts_with('/') {
            fsops::clean_path(&dest_word)
        } else {
            fsops::clean_path(&format!("{}/{dest_word}", state.workdir()))
        };

        // Sources: heredocs, URLs (ADD), paths and globs.
        let mut key_parts = vec![format!(
            "{verb} dest={dest_word} dir={dest_is_dir_word} workdir={}",
            state.workdir()
        )];
        key_parts.push(format!(
            "owner={owner_ids:?} mode={mode:?} parents={} excludes={:?}",
            copy.parents, copy.excludes
        ));
        let mut plans: Vec<Plan> = Vec::new();
        // Scratch space only to view another stage or image.
        let stage_root_scratch = match &from {
            From::Context => None,
            From::Layers { .. } => Some(Scratch::new(&self.root)?),
        };
        let stage_root = match (&from, &stage_root_scratch) {
            (From::Layers { chain, .. }, Some(scratch)) => {
                let lowers = store.snapshots.lower_dirs(chain)?;
                Some(scratch.mount_read_only(&lowers)?)
            }
            _ => None,
        };
        let source_count = copy.sources.len();
        for word in &copy.sources {
            if let Some(heredoc) = copy
                .heredocs
                .iter()
                .find(|h| is_heredoc_word(word, &h.name))
            {
                let body = if heredoc.expand {
                    self.expand_heredoc(state, heredoc, line)?
                } else {
                    heredoc.content.clone()
                };
                key_parts.push(format!("heredoc {} {}", heredoc.name, key_of(&[&body])));
                plans.push(Plan::Data {
                    name: heredoc.name.clone(),
                    data: body.into_bytes(),
                });
                continue;
            }
            let word = self.expand(state, word, line)?;
            if add && (word.starts_with("http://") || word.starts_with("https://")) {
                plans.push(Plan::Url(word.clone()));
                key_parts.push(format!("url {word} {:?}", copy.checksum));
                continue;
            }
            if add && word.starts_with("git@") {
                return Err(
                    self.step_error(line, "ADD of a git repository is not supported by keel yet")
                );
            }
            let sources = match (&from, &stage_root) {
                (From::Context, _) => self.context.select(&word).map_err(fail_early)?,
                (_, Some(root)) => {
                    crate::context::select_under(root.path(), &word, &|_| false, "the stage")
                        .map_err(fail_early)?
                }
                _ => unreachable!("a stage source has a root"),
            };
            for source in sources {
                let digest = match &from {
                    From::Context => self.context.digest(&source, excludes.as_ref())?,
                    From::Layers { key, .. } => format!("{key}:{}", source.relative),
                };
                key_parts.push(format!("source {} {digest}", source.relative));
                plans.push(Plan::Path(source));
            }
        }
        let many = plans.len() > 1
            || source_count > 1
            || copy.sources.iter().any(|s| crate::context::has_glob(s));
        if many && !dest_is_dir_word {
            return Err(self.step_error(
                line,
                format!("When using {verb} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        let text = format!("{} # buildkit", instruction.original.trim());
        let parts: Vec<&str> = key_parts.iter().map(String::as_str).collect();
        let step_key_text = key_of(&parts);
        // For URLs without --checksum the content decides: fetched first.
        let mut fetched: Vec<(String, tempfile_path::TempFile)> = Vec::new();
        let mut url_digests = Vec::new();
        for plan in &plans {
            if let Plan::Url(url) = plan {
                let file = tempfile_path::TempFile::new(&self.root)?;
                let modified = worker
                    .fetch(url, file.path())
                    .map_err(|e| self.step_error(line, format!("ADD {url}: {e}")))?;
                let digest = crate::context::sha256_file(file.path())?;
                if let Some(expected) = &copy.checksum
                    && expected.trim_start_matches("sha256:") != digest
                {
                    return Err(self.step_error(
                        line,
                        format!(
                            "ADD {url}: digest mismatch: expected {expected}, got sha256:{digest}"
                        ),
                    ));
                }
                if let Some(modified) = modified {
                    file.set_mtime(modified);
                }
                url_digests.push(digest);
                fetched.push((url.clone(), file));
            }
        }
        let step_text = format!("{step_key_text} {}", url_digests.join(" "));
        let stage_root_path = stage_root.as_ref().map(|r| r.path().to_path_buf());
        drop(stage_root);
        let result = self.layer_step(
            store,
            state,
            name,
            line,
            &format!("{text}\n{step_text}"),
            |root| {
                for plan in &plans {
                    match plan {
                        Plan::Data { name, data } => {
                            let target = if dest_is_dir_word
                                || matches!(root.kind(&dest)?, Some(fsops::Kind::Dir))
                            {
                                format!("{}/{name}", dest.trim_end_matches('/'))
                            } else {
                                dest.clone()
                            };
                            root.write_file(&target, data, &owner, 0o644)?;
                        }
                        Plan::Url(url) => {
                            let file = &fetched
                                .iter()
                                .find(|(u, _)| u == url)
                                .expect("every URL was fetched")
                                .1;
                            let base = url_file_name(url);
                            let target = if dest_is_dir_word
                                || matches!(root.kind(&dest)?, Some(fsops::Kind::Dir))
                            {
                                format!("{}/{base}", dest.trim_end_matches('/'))
                            } else {
                                dest.clone()
                            };
                            let owner = Owner {
                                ids: owner.ids,
                                mode: Some(owner.mode.unwrap_or(0o600)),
                            };
                            root.copy_in(file.path(), &target, &owner, &|_, _| Pick::Take)?;
                        }
                        Plan::Path(source) => {
                            let meta = std::fs::symlink_metadata(&source.path)
                                .map_err(|e| Error::path("stat", &source.path, e))?;
                            let in_context = stage_root_path.is_none();
                            let filter = |rel: &str, is_dir: bool| {
                                if in_context {
                                    self.context.pick(
                                        &source.relative,
                                        excludes.as_ref(),
                                        rel,
                                        is_dir,
                                    )
                                } else {
                                    match &excludes {
                                        Some(m) if m.matches(rel) => {
                                            if is_dir && m.dir_may_contain_included(rel) {
                                                Pick::Descend
                                            } else {
                                                Pick::Skip
                                            }
                                        }
                                        _ => Pick::Take,
                                    }
                                }
                            };
                            let base_dest = if copy.parents {
                                let parent = Path::new(&source.relative)
                                    .parent()
                                    .map(|p| p.to_string_lossy().into_owned())
                                    .unwrap_or_default();
                                format!("{}/{parent}", dest.trim_end_matches('/'))
                            } else {
                                dest.clone()
                            };
                            if meta.is_dir() {
                                let target = if copy.parents {
                                    format!("{}/{}", dest.trim_end_matches('/'), source.relative)
                                } else {
                                    base_dest.clone()
                                };
                                root.copy_in(&source.path, &target, &owner, &filter)?;
                            } else if add && is_archive(&source.path) {
                                let dir = root.mkdir_all(&base_dest, Some(&owner))?;
                                drop(dir);
                                extract_archive(&source.path, root, &base_dest)?;
                            } else {
                                let file_name = Path::new(&source.relative)
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_else(|| "file".into());
                                let target = if dest_is_dir_word
                                    || copy.parents
                                    || matches!(root.kind(&base_dest)?, Some(fsops::Kind::Dir))
                                {
                                    format!("{}/{file_name}", base_dest.trim_end_matches('/'))
                                } else {
                                    base_dest.clone()
                                };
                                // A symlink named on the command line is copied
                                // as what it points to (docker follows it).
                                let followed = std::fs::metadata(&source.path).ok();
                                let path = if meta.file_type().is_symlink() && followed.is_some() {
                                    match &stage_root_path {
                                        Some(r) => fsops::resolve_under(r, &source.relative)?
                                            .unwrap_or(source.path.clone()),
                                        None => fsops::resolve_under(
                                            &self.context.root,
                                            &source.relative,
                                        )?
                                        .unwrap_or(source.path.clone()),
                                    }
                                } else {
                                    source.path.clone()
                                };
                                root.copy_in(&path, &target, &owner, &filter)?;
                            }
                        }
                    }
                }
                Ok(())
            },
        );
        drop(stage_root_scratch);
        result.map(|_| {
            // The history shows the instruction, not the key's inputs.
            if let Some(last) = state.config.history.last_mut() {
                last.created_by = Some(text.clone());
            }
        })
    }

    fn expand_heredoc(&self, state: &State, heredoc: &Heredoc, line: usize) -> Result<String> {
        // Expansion applies to the body; quotes in it are kept.
        crate::shell::expand_raw(&heredoc.content, &|n| state.lookup(n))
            .map_err(|e| self.step_error(line, e.to_string()))
    }

    /// `--chown=USER[:GROUP]`: numbers, or names in the stage's
    /// /etc/passwd and /etc/group.
    fn resolve_owner(
        &self,
        store: &mut ImageStore,
        state: &State,
        chown: &str,
    ) -> Result<(u32, u32)> {
        let (user, group) = match chown.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (chown, None),
        };
        let lowers = self.lowers(store, state)?;
        let read = |path: &str| -> String {
            for layer in &lowers {
                let file = layer.join(path.trim_start_matches('/'));
                if let Ok(text) = std::fs::read_to_string(&file) {
                    return text;
                }
            }
            String::new()
        };
        use keel_image::users::{parse_group, parse_passwd};
        let (uid, user_gid) = match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => {
                let entry = parse_passwd(&read("/etc/passwd"))
                    .into_iter()
                    .find(|e| e.name == user)
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "--chown={chown}: no user {user} in the image's /etc/passwd"
                        ))
                    })?;
                (entry.uid, Some(entry.gid))
            }
        };
        let gid = match group {
            None => user_gid.unwrap_or(uid),
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    parse_group(&read("/etc/group"))
                        .into_iter()
                        .find(|e| e.name == group)
                        .ok_or_else(|| {
                            Error::msg(format!(
                                "--chown={chown}: no group {group} in the image's /etc/group"
                            ))
                        })?
                        .gid
                }
            },
        };
        Ok((uid, gid))
    }

    /// The image: the target stage's config and layers, with `--label`s;
    /// the same image again when nothing changed.
    fn export(&self, store: &mut ImageStore, mut state: State) -> Result<ImageRecord> {
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
