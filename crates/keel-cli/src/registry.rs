//! `keel registry serve` and `keel registry gc`: keel's own OCI registry
//! (keel-registry's server half), with docker-registry's behaviour.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use keel_registry::server::gc::{GcOptions, gc};
use keel_registry::server::{Config, Settings, serve};

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Run an OCI distribution registry on a storage directory
    Serve(ServeArgs),
    /// Delete blobs that no manifest references (stop the server first)
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (IP:PORT)
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<String>,
    /// Directory to keep blobs, manifests and uploads in
    #[arg(long, value_name = "DIR")]
    pub storage: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert
    #[arg(long = "tls-key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require basic auth against this htpasswd file (bcrypt, htpasswd -B)
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,
    /// With --htpasswd: allow pulls without credentials
    #[arg(long = "anonymous-pull")]
    pub anonymous_pull: bool,
    /// Refuse pushes and deletes (405 UNSUPPORTED)
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Read settings from a JSON file; flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// The registry's storage directory
    #[arg(long, value_name = "DIR")]
    pub storage: PathBuf,
    /// Run even while a server uses the storage (blobs of pushes in progress may go)
    #[arg(long)]
    pub force: bool,
    /// Show what would be deleted; delete nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,
}

pub fn run(command: &RegistryCommand) -> Result<i32> {
    match command {
        RegistryCommand::Serve(args) => serve_command(args),
        RegistryCommand::Gc(args) => gc_command(args),
    }
}

fn serve_command(args: &ServeArgs) -> Result<i32> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(addr) = &args.addr {
        config.addr = Some(addr.clone());
    }
    if let Some(storage) = &args.storage {
        config.storage = Some(storage.clone());
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        config.tls_cert = args.tls_cert.clone();
        config.tls_key = args.tls_key.clone();
    }
    if let Some(htpasswd) = &args.htpasswd {
        config.htpasswd = Some(htpasswd.clone());
    }
    if args.anonymous_pull {
        config.anonymous_pull = Some(true);
    }
    if args.read_only {
        config.read_only = Some(true);
    }
    let settings = Settings::from_config(&config)?;
    if settings.anonymous_pull && settings.htpasswd.is_none() {
        bail!("--anonymous-pull only means something with --htpasswd");
    }
    // The server's startup, access and shutdown lines go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let runtime = crate::netio::runtime(Some(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ))?;
    crate::netio::block_on(&runtime, serve(settings))?;
    Ok(0)
}

fn gc_command(args: &GcArgs) -> Result<i32> {
    let report = gc(
        &args.storage,
        GcOptions {
            force: args.force,
            dry_run: args.dry_run,
        },
    )?;
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for (digest, size) in &report.removed {
        println!("{verb} blob {digest} ({size} bytes)");
    }
    println!(
        "{} {} blobs and {} abandoned uploads, {} freed; {} blobs kept",
        if args.dry_run {
            "Would delete"
        } else {
            "Deleted"
        },
        report.removed.len(),
        report.uploads_removed,
        keel_engine::views::human_size(report.bytes_freed),
        report.kept
    );
    Ok(0)
}
