//! `keel diff`, `keel export`, `keel cp`, `keel commit`, with docker's
//! rules and output.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use keel_engine::files::{CommitOptions, Kind, Sink, Source};

use crate::containers::Context;

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub container: String,
}

pub fn diff(ctx: &Context, args: &DiffArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut out = std::io::stdout().lock();
    for (change, path) in engine.diff(&args.container)? {
        writeln!(out, "{} {path}", change.letter())?;
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    pub container: String,
}

pub fn export(ctx: &Context, args: &ExportArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    match &args.output {
        Some(path) => {
            let temp = path.with_extension("keel-export-partial");
            let mut file = std::fs::File::create(&temp)
                .with_context(|| format!("create {}", path.display()))?;
            let exported = engine.export(&args.container, &mut file);
            if let Err(e) = exported {
                let _ = std::fs::remove_file(&temp);
                return Err(e.into());
            }
            file.sync_all()?;
            std::fs::rename(&temp, path).with_context(|| format!("write {}", path.display()))?;
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut out = std::io::stdout().lock();
            engine.export(&args.container, &mut out)?;
            out.flush()?;
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information): keel always keeps them
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH or SRC_PATH, or - for a tar stream on stdin
    pub source: String,
    /// CONTAINER:DEST_PATH or DEST_PATH, or - for a tar stream on stdout
    pub destination: String,
}

/// `CONTAINER:PATH` → (container, path); a path alone (or `-`) → None.
fn split_container(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') || arg == "-" {
        return None;
    }
    arg.split_once(':')
}

fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    Path::new(if trimmed.is_empty() { "/" } else { trimmed })
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".to_string())
}

fn parent_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match Path::new(trimmed).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ if trimmed.starts_with('/') => "/".into(),
        _ => ".".into(),
    }
}

pub fn cp(ctx: &Context, args: &CpArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    match (
        split_container(&args.source),
        split_container(&args.destination),
    ) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
        // Out of a container.
        (Some((container, src)), None) => {
            let src = absolute_in_container(src);
            if args.destination == "-" {
                let mut out = std::io::stdout().lock();
                engine.copy_out(
                    container,
                    &src,
                    None,
                    args.follow_link,
                    Sink::Writer(&mut out),
                )?;
                out.flush()?;
                return Ok(0);
            }
            let dest = Path::new(&args.destination);
            let (into, top) = match std::fs::metadata(dest) {
                Ok(meta) if meta.is_dir() => {
                    if src.ends_with("/.") {
                        (dest.to_path_buf(), ".".to_string())
                    } else {
                        (dest.to_path_buf(), base_name(&src))
                    }
                }
                Ok(_) => {
                    if engine.stat_in(container, &src)? == Kind::Directory {
                        bail!("cannot copy a directory to a file: {}", dest.display());
                    }
                    (
                        PathBuf::from(parent_of(&args.destination)),
                        base_name(&args.destination),
                    )
                }
                Err(_) => {
                    if args.destination.ends_with('/') {
                        bail!("no such directory: {}", args.destination);
                    }
                    let parent = PathBuf::from(parent_of(&args.destination));
                    if !parent.is_dir() {
                        bail!("no such directory: {}", parent.display());
                    }
                    (parent, base_name(&args.destination))
                }
            };
            // The stream comes from the container: unpacked with tar's
            // guards (no `..`, no absolute names, nothing through links).
            let copied = engine.copy_out(
                container,
                &src,
                Some(top),
                args.follow_link,
                Sink::Directory(&into),
            )?;
            if !args.quiet {
                eprintln!(
                    "Successfully copied {} to {}",
                    keel_engine::views::human_size(copied),
                    args.destination
                );
            }
            Ok(0)
        }
        // Into a container.
        (None, Some((container, dest))) => {
            let dest = absolute_in_container(dest);
            if args.source == "-" {
                let mut input = std::io::stdin().lock();
                engine.copy_in(container, &dest, Source::Reader(&mut input))?;
                return Ok(0);
            }
            let followed;
            let source = if args.follow_link {
                followed = std::fs::canonicalize(&args.source)
                    .with_context(|| format!("no such file or directory: {}", args.source))?;
                followed.as_path()
            } else {
                Path::new(&args.source)
            };
            let meta = std::fs::symlink_metadata(source)
                .with_context(|| format!("no such file or directory: {}", args.source))?;
            let (into, top) = match engine.stat_in(container, &dest)? {
                Kind::Directory => {
                    if args.source.ends_with("/.") {
                        (dest.clone(), None)
                    } else {
                        (dest.clone(), Some(base_name(&args.source)))
                    }
                }
                Kind::Other => {
                    if meta.is_dir() {
                        bail!("cannot copy a directory to a file: {dest}");
                    }
                    (parent_of(&dest), Some(base_name(&dest)))
                }
                Kind::Missing => {
                    if dest.ends_with('/') {
                        bail!("no such directory: {dest}");
                    }
                    (parent_of(&dest), Some(base_name(&dest)))
                }
            };
            let copied = engine.copy_in(container, &into, Source::Path(source, top))?;
            if !args.quiet {
                eprintln!(
                    "Successfully copied {} to {container}:{dest}",
                    keel_engine::views::human_size(copied)
                );
            }
            Ok(0)
        }
    }
}

fn absolute_in_container(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long = "change")]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    pub container: String,
    /// REPOSITORY[:TAG]
    pub reference: Option<String>,
}

pub fn commit(ctx: &Context, args: &CommitArgs) -> Result<i32> {
    let reference = args
        .reference
        .as_deref()
        .map(keel_image::reference::Reference::parse)
        .transpose()?;
    let mut images = crate::images::open(&ctx.root)?;
    let mut engine = ctx.engine()?;
    let options = CommitOptions {
        author: args.author.clone(),
        message: args.message.clone(),
        changes: args.change.clone(),
        pause: args.pause,
    };
    let record = engine.commit(&mut images, &args.container, reference.as_ref(), &options)?;
    println!("{}", record.id);
    Ok(0)
}
