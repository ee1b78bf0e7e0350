//! `keel`: the command-line face. At this stage it offers the OCI runtime
//! (`keel runtime ...`, the same commands as `keel-runtime`/runc) and its
//! version; images, containers and the rest arrive with their crates.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keel",
    about = "keel: containers, images and micro-VMs on one machine",
    version = keel_runtime::VERSION
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show keel's version and the OCI runtime-spec version it implements
    Version,
    /// The OCI runtime (runc-compatible): `keel runtime run --bundle DIR ID`, `keel runtime --help`
    #[command(disable_help_flag = true)]
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("keel version {}", keel_runtime::VERSION);
            println!("OCI runtime-spec: {}", keel_runtime::OCI_VERSION);
        }
        Command::Runtime { args } => {
            let argv = std::iter::once("keel runtime".to_string())
                .chain(args)
                .collect();
            keel_runtime::cli::run_with_args(argv)
        }
    }
}
