//! The container commands, with docker's flags, output and exit codes:
//! `run`, `create`, `start`, `stop`, `restart`, `kill`, `rm`, `ps`, `logs`,
//! `exec`, `inspect`, `wait`, `attach`, `rename`, `pause`, `unpause`,
//! `top`, `container prune`; and the hidden `container-monitor` that holds
//! a running container.
//!
//! One file per command or family; what they share (where keel keeps
//! things, the exit codes of engine errors) is here.

mod create;
mod exec;
mod inspect;
mod lifecycle;
mod logs;
mod prune;
mod ps;
mod top;

pub use create::*;
pub use exec::*;
pub use inspect::*;
pub use lifecycle::*;
pub use logs::*;
pub use prune::*;
pub use ps::*;
pub use top::*;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use keel_engine::paths::Layout;
use keel_engine::{Engine, Options};

/// Where keel keeps things, from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub cgroup_parent: String,
}

impl Context {
    pub fn engine(&self) -> Result<Engine> {
        Engine::open(
            Layout::new(&self.root, &self.runroot),
            self.engine_options(),
        )
        .with_context(|| format!("open keel's state at {}", self.root.display()))
    }

    /// How this keel's engine runs containers: its cgroup parent and the
    /// helpers found beside it.
    pub fn engine_options(&self) -> Options {
        Options {
            cgroup_parent: self.cgroup_parent.clone(),
            init_binary: helper_binary("KEEL_INIT", "keel-init"),
            monitor_binary: helper_binary("KEEL_MONITOR", "keel-monitor"),
            vm_shim: helper_binary("KEEL_VM_SHIM", "keel-vm-shim"),
            guest_agent: helper_binary("KEEL_GUEST", "keel-guest"),
        }
    }
}

/// A helper of keel's (`keel-init` for `--init`, `keel-monitor` for the
/// monitors): `$VAR` if set; else the static build `scripts/setup` makes
/// (`<target>/<arch>-unknown-linux-gnu/<profile>/NAME` beside
/// `<target>/<profile>/keel`); else `NAME` beside the keel binary.
pub fn helper_binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let static_build = dir.parent().zip(dir.file_name()).map(|(target, profile)| {
        target
            .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
            .join(profile)
            .join(name)
    });
    [static_build, Some(dir.join(name))]
        .into_iter()
        .flatten()
        .find(|p| p.exists())
}

/// docker's exit code for an engine error: 126/127 for a start that
/// failed on the command, 125 otherwise.
fn error_code(e: &keel_engine::Error) -> i32 {
    match e {
        keel_engine::Error::Start(message) => keel_engine::error::start_exit_code(message),
        _ => 125,
    }
}

/// Reports an engine error of `run`/`create` and returns the exit code.
fn fail(e: keel_engine::Error) -> Result<i32> {
    let code = error_code(&e);
    eprintln!("Error: {e}");
    Ok(code)
}

/// Reports an engine error of any other command: docker's CLI exits 1
/// (126/127 still tell a command in the container that could not start).
fn fail_command(e: keel_engine::Error) -> Result<i32> {
    let code = match error_code(&e) {
        125 => 1,
        code => code,
    };
    eprintln!("Error: {e}");
    Ok(code)
}

/// Runs `op` on each container, printing its name (docker's `stop`,
/// `kill`, `rm`, ...); 1 if any failed.
fn each(containers: &[String], mut op: impl FnMut(&str) -> keel_engine::Result<()>) -> Result<i32> {
    let mut code = 0;
    for name in containers {
        match op(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

// ---------------------------------------------------------------------------
// the monitor

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// The fd to report to
    #[arg(long = "report-fd")]
    pub report_fd: Option<i32>,
    /// Start only when an attach client asks
    #[arg(long = "wait-for-attach")]
    pub wait_for_attach: bool,
    pub id: String,
}

pub fn monitor(ctx: &Context, args: &MonitorArgs) -> i32 {
    keel_engine::monitor::main(keel_engine::monitor::Options {
        layout: Layout::new(&ctx.root, &ctx.runroot),
        id: args.id.clone(),
        report_fd: args.report_fd,
        wait_for_attach: args.wait_for_attach,
    })
}
