//! `keel build` and `keel builder prune`: flags to a [`keel_build::build::Request`],
//! a worker that pulls FROM images and runs RUN steps as containers through
//! the engine, and progress as docker's BuildKit shows it (a line per step
//! with its state and time on a terminal; `#N` lines with the output when
//! not, or with `--progress plain`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use keel_build::build::{Event, Progress, RunMount, RunRequest, Worker};
use keel_engine::attach::{Frame, Hello};
use keel_engine::spec::{ContainerSpec, MountKind, MountSpec, NetworkMode};
use keel_image::metadata::ImageRecord;
use keel_image::reference::Reference;
use keel_image::store::ImageStore;

use crate::containers::Context;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (NAME[:TAG]); repeatable
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; - for stdin)
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// A build-time variable (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last)
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the cache
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Pull the FROM images even when they are present
    #[arg(long)]
    pub pull: bool,
    /// Set metadata on the image (KEY=VALUE)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Write the image id to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// How to show progress: auto (tty on a terminal), plain (every line of every step) or tty
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Print only the image id
    #[arg(short, long)]
    pub quiet: bool,
    /// A secret for RUN --mount=type=secret: id=ID,src=PATH
    #[arg(long)]
    pub secret: Vec<String>,
    /// The network of RUN steps: default, none or host
    #[arg(long)]
    pub network: Option<String>,
    /// Add a custom host-to-IP mapping to RUN steps (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// The platform to build for (only this machine's)
    #[arg(long)]
    pub platform: Option<String>,
    /// The build context: a directory, or - for a tar (or a Dockerfile) on stdin
    pub context: String,
}

#[derive(clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache
    Prune(BuilderPruneArgs),
}

#[derive(clap::Args)]
pub struct BuilderPruneArgs {
    /// Also remove the cache mounts of RUN --mount=type=cache and forget the
    /// context files' digests (the next build hashes its whole context)
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub fn builder(ctx: &Context, command: &BuilderCommand) -> Result<i32> {
    match command {
        BuilderCommand::Prune(args) => {
            let mut store = crate::images::open(&ctx.root)?;
            let (removed, freed) = keel_build::cache::prune(&ctx.root, &mut store, args.all)?;
            println!("Deleted build cache objects: {}", removed.len());
            println!(
                "Total reclaimed space: {}",
                keel_engine::views::human_size(freed)
            );
            Ok(0)
        }
    }
}

/// Holds a context unpacked from stdin; removes it when the build ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn build(ctx: &Context, args: &BuildArgs) -> Result<i32> {
    if let Some(platform) = &args.platform {
        let current = keel_image::manifest::Platform::current();
        let wanted = keel_image::manifest::Platform::parse(platform)?;
        if wanted.os != current.os || wanted.architecture != current.architecture {
            bail!(
                "keel builds for this machine's platform only ({}/{}), not {platform}",
                current.os,
                current.architecture
            );
        }
    }
    let extra_hosts = args
        .add_host
        .iter()
        .map(|h| keel_engine::spec::parse_add_host(h))
        .collect::<keel_engine::Result<Vec<_>>>()?;
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| Reference::parse(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<Result<_>>()?;
    let mut build_args = BTreeMap::new();
    for arg in &args.build_args {
        match arg.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(arg) {
                    build_args.insert(arg.clone(), v);
                }
            }
        }
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        labels.insert(k.to_string(), v.to_string());
    }
    let mut secrets = BTreeMap::new();
    for secret in &args.secret {
        let mut id = None;
        let mut src = None;
        for part in secret.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                _ => bail!("--secret {secret:?}: give id=ID,src=PATH"),
            }
        }
        match (id, src) {
            (Some(id), Some(src)) => {
                if !src.is_file() {
                    bail!("--secret {secret:?}: {} is not a file", src.display());
                }
                secrets.insert(id, src.canonicalize()?);
            }
            _ => bail!("--secret {secret:?}: give id=ID,src=PATH"),
        }
    }
    let progress_mode = match args.progress.as_str() {
        "auto" => {
            if std::io::stderr().is_terminal() {
                "tty"
            } else {
                "plain"
            }
        }
        "plain" | "tty" => args.progress.as_str(),
        other => bail!("invalid --progress {other:?}: use auto, plain or tty"),
    };

    // The context and the Dockerfile.
    let mut temp = None;
    let mut dockerfile_text = None;
    let context_dir = if args.context == "-" {
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .context("read the context from stdin")?;
        let dir = ctx
            .root
            .join("build")
            .join("tmp")
            .join(format!("context-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        temp = Some(TempDir(dir.clone()));
        if keel_build::build::looks_like_archive(&data) {
            unpack_context(&data, &dir)?;
        } else {
            dockerfile_text =
                Some(String::from_utf8(data).context("the Dockerfile on stdin is not UTF-8")?);
        }
        dir
    } else {
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            bail!(
                "unable to prepare context: path {:?} not found",
                args.context
            );
        }
        dir
    };
    let (dockerfile_path, dockerfile_name) = match args.file.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the Dockerfile from stdin")?;
            dockerfile_text = Some(text);
            (None, "Dockerfile".to_string())
        }
        Some(file) => {
            let path = PathBuf::from(file);
            let path = if path.is_absolute() || path.exists() {
                path
            } else {
                context_dir.join(file)
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into());
            (Some(path), name)
        }
        None if dockerfile_text.is_some() => (None, "Dockerfile".to_string()),
        None => (
            Some(context_dir.join("Dockerfile")),
            "Dockerfile".to_string(),
        ),
    };
    let dockerfile = match (&dockerfile_text, &dockerfile_path) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("failed to read dockerfile: open {}: {e}", path.display())
        })?,
        (None, None) => unreachable!("a Dockerfile comes from stdin or a path"),
    };
    let dockerignore = dockerfile_path
        .as_ref()
        .map(|p| PathBuf::from(format!("{}.dockerignore", p.display())))
        .filter(|p| p.is_file())
        .or_else(|| Some(context_dir.join(".dockerignore")).filter(|p| p.is_file()))
        .map(|p| std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display())))
        .transpose()?;

    let request = keel_build::build::Request {
        context: context_dir,
        dockerfile_name,
        dockerfile,
        dockerignore,
        tags,
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        labels,
        secrets,
        network: args.network.clone(),
    };

    // Mounts made by the build die with it, even if it is killed.
    private_mount_namespace()?;
    remove_orphaned_steps(ctx);

    let mut shown: Box<dyn Progress> = if args.quiet {
        Box::new(keel_build::build::Quiet)
    } else if progress_mode == "tty" {
        Box::new(TtyProgress::default())
    } else {
        Box::new(PlainProgress::default())
    };
    let started = Instant::now();
    let outcome = {
        let progress: Mutex<&mut dyn Progress> = Mutex::new(shown.as_mut());
        let open = || -> keel_build::Result<(ImageStore, Box<dyn Worker>)> {
            let store = ImageStore::open(&ctx.root)?;
            let engine = ctx
                .engine()
                .map_err(|e| keel_build::Error::msg(format!("{e:#}")))?;
            Ok((
                store,
                Box::new(EngineWorker {
                    root: ctx.root.clone(),
                    engine,
                    extra_hosts: extra_hosts.clone(),
                }),
            ))
        };
        keel_build::build::build(&ctx.root, &request, &open, &progress)
    };
    drop(temp);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            if let Some(line) = e.line() {
                show_lines(&request.dockerfile_name, &request.dockerfile, line);
            }
            return Err(anyhow::Error::new(e).context("failed to solve"));
        }
    };
    for warning in &outcome.warnings {
        shown.event(Event::Warning(warning));
    }
    let id = outcome.image.id.to_string();
    if !args.quiet {
        shown.event(Event::Finished {
            seconds: started.elapsed().as_secs_f64(),
            image: &id,
        });
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("write {}", path.display()))?;
    }
    if args.quiet {
        println!("{id}");
    }
    Ok(0)
}

/// The label on a RUN step's container: the build's pid and start time.
const OWNER_LABEL: &str = "io.keel.build.owner";

fn owner() -> String {
    let pid = std::process::id() as i32;
    format!(
        "{pid}:{}",
        keel_runtime::util::proc_start_time(pid).unwrap_or(0)
    )
}

/// Removes RUN step containers whose build is gone (killed mid-step).
fn remove_orphaned_steps(ctx: &Context) {
    let Ok(mut engine) = ctx.engine() else { return };
    let Ok(containers) = engine.list() else {
        return;
    };
    for container in containers {
        let Some(owner) = container.spec.labels.get(OWNER_LABEL) else {
            continue;
        };
        let alive = owner
            .split_once(':')
            .and_then(|(pid, start)| Some((pid.parse::<i32>().ok()?, start.parse::<u64>().ok()?)))
            .is_some_and(|(pid, start)| keel_runtime::util::proc_start_time(pid) == Some(start));
        if !alive {
            let _ = engine.remove(&container.id, true, true);
        }
    }
}

/// The failing instruction in its place, as BuildKit shows it.
fn show_lines(name: &str, text: &str, line: usize) {
    let lines: Vec<&str> = text.lines().collect();
    if line == 0 || line > lines.len() {
        return;
    }
    eprintln!("{name}:{line}");
    eprintln!("--------------------");
    for n in line.saturating_sub(2).max(1)..=(line + 1).min(lines.len()) {
        let marker = if n == line { ">>>" } else { "   " };
        eprintln!("{n:>4} | {marker} {}", lines[n - 1]);
    }
    eprintln!("--------------------");
}

fn unpack_context(data: &[u8], into: &Path) -> Result<()> {
    let reader: Box<dyn Read + '_> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(data))
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(data)?)
    } else {
        Box::new(data)
    };
    keel_engine::files::unpack_on_host(reader, into).context("unpack the context from stdin")
}

fn private_mount_namespace() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("make the build's mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make the build's mounts private")?;
    Ok(())
}

/// RUN steps as containers, through the engine, with `keel run`'s defaults.
struct EngineWorker {
    root: PathBuf,
    engine: keel_engine::engine::Engine,
    /// `--add-host`: in each RUN's /etc/hosts.
    extra_hosts: Vec<(String, String)>,
}

impl Worker for EngineWorker {
    fn image(
        &mut self,
        store: &mut ImageStore,
        name: &str,
        pull: bool,
    ) -> keel_build::Result<ImageRecord> {
        if !pull && let Ok(record) = store.resolve(name) {
            return Ok(record);
        }
        let pull_args = crate::pull::PullArgs {
            platform: None,
            quiet: true,
            all_tags: false,
            name: name.to_string(),
        };
        crate::pull::pull(&self.root, &pull_args)
            .map_err(|e| keel_build::Error::msg(format!("{e:#}")))?;
        // The pull wrote through its own connection.
        let fresh = ImageStore::open(&self.root)?;
        Ok(fresh.resolve(name)?)
    }

    fn run(
        &mut self,
        request: &RunRequest,
        output: &mut dyn FnMut(&[u8]),
        diff: &mut dyn FnMut(&Path) -> keel_build::Result<()>,
    ) -> keel_build::Result<i32> {
        let err = |e: keel_engine::Error| keel_build::Error::msg(e.to_string());
        let network = match request.network.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            _ => NetworkMode::Bridge,
        };
        let mounts = request
            .mounts
            .iter()
            .map(|m| match m {
                RunMount::Bind {
                    source,
                    target,
                    read_only,
                } => MountSpec {
                    kind: MountKind::Bind,
                    source: source.display().to_string(),
                    target: target.clone(),
                    read_only: *read_only,
                    tmpfs_size: None,
                    tmpfs_mode: None,
                    no_copy: false,
                    propagation: None,
                    volume_flag: None,
                },
                RunMount::Tmpfs { target, size } => MountSpec {
                    kind: MountKind::Tmpfs,
                    source: String::new(),
                    target: target.clone(),
                    read_only: false,
                    tmpfs_size: *size,
                    tmpfs_mode: None,
                    no_copy: false,
                    propagation: None,
                    volume_flag: None,
                },
            })
            .collect();
        let mut config = request.config.clone();
        // The image's VOLUMEs are not volumes while building (docker keeps
        // what RUN writes there in the layer).
        if let Some(c) = config.config.as_mut() {
            c.volumes = None;
            c.healthcheck = None;
        }
        let spec = ContainerSpec {
            image: "keel-build".to_string(),
            command: request.args.clone(),
            entrypoint: Some(Vec::new()),
            network,
            mounts,
            extra_hosts: self.extra_hosts.clone(),
            labels: BTreeMap::from([(OWNER_LABEL.to_string(), owner())]),
            ..ContainerSpec::default()
        };
        let container = self
            .engine
            .create_on_layers("keel-build", config, request.layers.clone(), spec)
            .map_err(err)?;
        let id = container.id.clone();
        let result = (|| {
            let (_, mut stream) = self
                .engine
                .start_attached(
                    &id,
                    Hello {
                        stdout: true,
                        stderr: true,
                        ..Hello::default()
                    },
                )
                .map_err(err)?;
            let mut code = None;
            loop {
                match keel_engine::attach::read_frame(&mut stream).map_err(err)? {
                    Some(Frame::Stdout(data)) | Some(Frame::Stderr(data)) => output(&data),
                    Some(Frame::Exit(info)) => {
                        code = Some(info.exit_code);
                        break;
                    }
                    Some(Frame::Error(message)) => return Err(keel_build::Error::msg(message)),
                    Some(_) => {}
                    None => break,
                }
            }
            let code = match code {
                Some(code) => code,
                None => self.engine.wait(&id).map_err(err)?,
            };
            if code == 0 {
                diff(&self.engine.layout.diff(&id))?;
            }
            Ok(code)
        })();
        let _ = self.engine.remove(&id, true, true);
        result
    }

    fn fetch(&mut self, url: &str, into: &Path) -> keel_build::Result<Option<i64>> {
        let runtime =
            crate::netio::runtime(None).map_err(|e| keel_build::Error::msg(format!("{e:#}")))?;
        let into = into.to_path_buf();
        let url = url.to_string();
        crate::netio::block_on(&runtime, async move {
            use futures_util::StreamExt;
            let fail = |e: reqwest::Error| keel_build::Error::msg(format!("download {url}: {e}"));
            let response = reqwest::Client::builder()
                .build()
                .map_err(fail)?
                .get(&url)
                .send()
                .await
                .map_err(fail)?;
            if !response.status().is_success() {
                return Err(keel_build::Error::msg(format!(
                    "download {url}: the server answered {}",
                    response.status()
                )));
            }
            let modified = response
                .headers()
                .get("last-modified")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| jiff::fmt::rfc2822::parse(v).ok())
                .map(|t| t.timestamp().as_second());
            let mut file = std::fs::File::create(&into)
                .map_err(|e| keel_build::Error::path("create", &into, e))?;
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(fail)?;
                file.write_all(&chunk)
                    .map_err(|e| keel_build::Error::path("write", &into, e))?;
            }
            Ok(modified)
        })
    }
}

/// BuildKit's plain progress: `#N` lines, output as it comes.
#[derive(Default)]
struct PlainProgress {
    started: BTreeMap<usize, Instant>,
    partial: BTreeMap<usize, Vec<u8>>,
}

impl PlainProgress {
    fn flush_line(&mut self, id: usize, line: &[u8]) {
        let at = self
            .started
            .get(&id)
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        eprintln!("#{id} {at:.3} {}", String::from_utf8_lossy(line));
    }
}

impl Progress for PlainProgress {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Step { id, name } => {
                self.started.insert(id, Instant::now());
                eprintln!("#{id} {name}");
            }
            Event::Cached { id } => eprintln!("#{id} CACHED"),
            Event::Output { id, data } => {
                let mut buffer = self.partial.remove(&id).unwrap_or_default();
                buffer.extend_from_slice(data);
                while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=at).collect();
                    self.flush_line(id, &line[..line.len() - 1]);
                }
                self.partial.insert(id, buffer);
            }
            Event::Done { id, seconds } => {
                if let Some(rest) = self.partial.remove(&id).filter(|r| !r.is_empty()) {
                    self.flush_line(id, &rest);
                }
                eprintln!("#{id} DONE {seconds:.1}s");
            }
            Event::Failed { id, message } => {
                if let Some(rest) = self.partial.remove(&id).filter(|r| !r.is_empty()) {
                    self.flush_line(id, &rest);
                }
                eprintln!("#{id} ERROR: {message}");
            }
            Event::Warning(text) => {
                if !text.is_empty() {
                    eprintln!("WARNING: {text}");
                }
            }
            Event::Finished { image, .. } => eprintln!("writing image {image} done"),
        }
    }
}

/// On a terminal: a line per step as it ends (` => [2/3] RUN ...  0.3s`),
/// the output of a step kept to show its tail if it fails.
#[derive(Default)]
struct TtyProgress {
    names: BTreeMap<usize, String>,
    output: BTreeMap<usize, Vec<u8>>,
    cached: BTreeMap<usize, bool>,
}

impl Progress for TtyProgress {
    fn event(&mut self, event: Event<'_>) {
        let mut err = std::io::stderr();
        match event {
            Event::Step { id, name } => {
                self.names.insert(id, name.to_string());
            }
            Event::Cached { id } => {
                self.cached.insert(id, true);
                let name = self.names.get(&id).cloned().unwrap_or_default();
                let _ = writeln!(err, " => CACHED {name}");
            }
            Event::Output { id, data } => {
                let buffer = self.output.entry(id).or_default();
                buffer.extend_from_slice(data);
                // Only the tail is ever shown.
                if buffer.len() > 64 * 1024 {
                    let cut = buffer.len() - 32 * 1024;
                    buffer.drain(..cut);
                }
            }
            Event::Done { id, seconds } => {
                let name = self.names.get(&id).cloned().unwrap_or_default();
                let _ = writeln!(err, " => {name:<60} {seconds:.1}s");
                self.output.remove(&id);
            }
            Event::Failed { id, message } => {
                let name = self.names.get(&id).cloned().unwrap_or_default();
                let _ = writeln!(err, " => ERROR {name}");
                if let Some(output) = self.output.remove(&id) {
                    let text = String::from_utf8_lossy(&output);
                    let lines: Vec<&str> = text.lines().collect();
                    let from = lines.len().saturating_sub(20);
                    let _ = writeln!(err, "------");
                    for line in &lines[from..] {
                        let _ = writeln!(err, " > {line}");
                    }
                    let _ = writeln!(err, "------");
                }
                let _ = writeln!(err, "{message}");
            }
            Event::Warning(text) => {
                if !text.is_empty() {
                    let _ = writeln!(err, "WARNING: {text}");
                }
            }
            Event::Finished { seconds, image } => {
                let _ = writeln!(
                    err,
                    "[+] Building {seconds:.1}s FINISHED\n => writing image {image}"
                );
            }
        }
    }
}
