//! `keel save`: images to one tar archive that is both a docker archive and
//! an OCI layout (keel-image's `export`), to a file or to stdout.

use std::fs;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use keel_image::store::ImageStore;

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// IMAGE...: names, NAME@DIGEST or image ids
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn save(store: &ImageStore, args: &SaveArgs) -> Result<()> {
    let Some(path) = &args.output else {
        let stdout = io::stdout();
        if stdout.is_terminal() {
            bail!("Cowardly refusing to save to a terminal. Use the -o flag or redirect");
        }
        let mut out = BufWriter::with_capacity(256 * 1024, stdout.lock());
        keel_image::export::save(store, &args.images, &mut out)?;
        out.flush().context("write the archive to stdout")?;
        return Ok(());
    };
    // Check every name before a file appears.
    for name in &args.images {
        store.resolve(name)?;
    }
    // A regular file is written beside and renamed into place, so a failed
    // save leaves nothing half-written; a device or FIFO is written to.
    let special = fs::metadata(path).is_ok_and(|m| !m.is_file());
    if special {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        return write_to(store, args, file, path);
    }
    let temp = temp_name(path);
    let file = fs::File::create(&temp).with_context(|| format!("create {}", path.display()))?;
    let written = write_to(store, args, file, path).and_then(|()| {
        fs::rename(&temp, path).with_context(|| format!("rename into {}", path.display()))
    });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

fn write_to(store: &ImageStore, args: &SaveArgs, file: fs::File, path: &Path) -> Result<()> {
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    keel_image::export::save(store, &args.images, &mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("sync {}", path.display()))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".to_string());
    path.with_file_name(format!(".{name}.keel-save-{}", std::process::id()))
}
