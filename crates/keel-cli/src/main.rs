//! `keel`: the command-line face. It offers the image commands (`pull`,
//! `load`, `import`, `images`, `tag`, `rmi`, `image inspect|history`), the OCI runtime (`keel runtime ...`, the commands of
//! `keel-runtime`/runc) and its version.

mod filter;
mod images;
mod login;
mod progress;
mod pull;
mod push;
mod save;
mod system;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keel",
    about = "keel: containers, images and micro-VMs on one machine",
    version = keel_runtime::VERSION
)]
struct Cli {
    /// Where keel keeps images and containers
    #[arg(
        long,
        global = true,
        env = "KEEL_ROOT",
        default_value = "/var/lib/keel"
    )]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List images
    Images(images::ImagesArgs),
    /// Download an image from a registry
    Pull(pull::PullArgs),
    /// Load images from a tar archive (docker save, podman save, OCI layout) or stdin
    Load(images::LoadArgs),
    /// Make an image from a root filesystem tarball
    Import(images::ImportArgs),
    /// Save images to a tar archive (docker archive and OCI layout in one)
    Save(save::SaveArgs),
    /// Upload an image to a registry
    Push(push::PushArgs),
    /// Give an image another name: keel tag SOURCE TARGET
    Tag(images::TagArgs),
    /// Remove images
    Rmi(images::RmiArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Log in to a registry (credentials in docker's config.json)
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Manage keel
    #[command(subcommand)]
    System(SystemCommand),
    /// Show keel's version and the OCI runtime-spec version it implements
    Version,
    /// The OCI runtime (runc-compatible): `keel runtime run --bundle DIR ID`, `keel runtime --help`
    #[command(disable_help_flag = true)]
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(images::ImagesArgs),
    /// Show images' details as JSON
    Inspect(images::InspectArgs),
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Remove images
    Rm(images::RmiArgs),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Download an image from a registry
    Pull(pull::PullArgs),
    /// Load images from an archive
    Load(images::LoadArgs),
    /// Make an image from a root filesystem tarball
    Import(images::ImportArgs),
    /// Save images to a tar archive
    Save(save::SaveArgs),
    /// Upload an image to a registry
    Push(push::PushArgs),
    /// Remove unused images (dangling ones; all unused with -a), then blobs and layers no image uses
    Prune(system::PruneArgs),
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Show disk usage
    Df(system::DfArgs),
}

fn main() {
    // Like any Unix filter: `keel images | head` ends quietly on a closed
    // pipe instead of failing to print (Rust ignores SIGPIPE by default).
    // SAFETY: restoring the default disposition of one signal at startup.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // docker: keel's own errors exit 125.
            eprintln!("Error: {e:#}");
            125
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let root = cli.root;
    match cli.command {
        Command::Version => {
            println!("keel version {}", keel_runtime::VERSION);
            println!("OCI runtime-spec: {}", keel_runtime::OCI_VERSION);
            Ok(0)
        }
        Command::Runtime { args } => {
            let argv = std::iter::once("keel runtime".to_string())
                .chain(args)
                .collect();
            keel_runtime::cli::run_with_args(argv)
        }
        Command::Images(args) | Command::Image(ImageCommand::Ls(args)) => {
            images::images(&images::open(&root)?, &args).map(|_| 0)
        }
        Command::Pull(args) | Command::Image(ImageCommand::Pull(args)) => {
            pull::pull(&root, &args).map(|_| 0)
        }
        Command::Load(args) | Command::Image(ImageCommand::Load(args)) => {
            images::load(&mut images::open(&root)?, &args).map(|_| 0)
        }
        Command::Import(args) | Command::Image(ImageCommand::Import(args)) => {
            images::import(&mut images::open(&root)?, &args).map(|_| 0)
        }
        Command::Save(args) | Command::Image(ImageCommand::Save(args)) => {
            save::save(&images::open(&root)?, &args).map(|_| 0)
        }
        Command::Push(args) | Command::Image(ImageCommand::Push(args)) => {
            push::push(&root, &args).map(|_| 0)
        }
        Command::Tag(args) | Command::Image(ImageCommand::Tag(args)) => {
            images::tag(&mut images::open(&root)?, &args).map(|_| 0)
        }
        Command::Rmi(args) | Command::Image(ImageCommand::Rm(args)) => {
            images::rmi(&mut images::open(&root)?, &args)
        }
        Command::Image(ImageCommand::Inspect(args)) => {
            images::inspect(&images::open(&root)?, &args)
        }
        Command::Image(ImageCommand::History(args)) => {
            images::history(&images::open(&root)?, &args).map(|_| 0)
        }
        Command::Image(ImageCommand::Prune(args)) => {
            system::prune(&mut images::open(&root)?, &args)
        }
        Command::Login(args) => login::login(&root, &args),
        Command::Logout(args) => login::logout(&args),
        Command::System(SystemCommand::Df(args)) => {
            system::df(&images::open(&root)?, &args).map(|_| 0)
        }
    }
}
