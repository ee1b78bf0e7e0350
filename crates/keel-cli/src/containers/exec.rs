//! `keel exec`.

use anyhow::{Result, bail};
use clap::Args;
use keel_engine::spec;

use super::*;

// ---------------------------------------------------------------------------
// exec

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

pub fn exec(ctx: &Context, args: &ExecArgs) -> Result<i32> {
    // The process enters the container: this binary must be one that a
    // process inside cannot write through (CVE-2019-5736).
    keel_runtime::sealed::reexec()?;
    // docker refuses only -it from a non-terminal; -t alone gives the command
    // a terminal and reads nothing.
    if args.tty
        && args.interactive
        && !args.detach
        && !nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
    {
        bail!("the input device is not a TTY");
    }
    let mut engine = ctx.engine()?;
    let lookup = |key: &str| std::env::var(key).ok();
    let mut env = Vec::new();
    for entry in &args.env {
        if let Some(entry) = spec::resolve_env(entry, lookup)? {
            env.push(entry);
        }
    }
    let request = keel_engine::engine::ExecRequest {
        args: args.command.clone(),
        tty: args.tty,
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        privileged: args.privileged,
    };
    let (container, process) = match engine.exec_process(&args.container, &request) {
        Ok(found) => found,
        Err(e) => return fail_command(e),
    };
    if !args.interactive {
        // Without -i the command reads nothing.
        // SAFETY: open and dup2 onto our own stdin.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null >= 0 {
                libc::dup2(null, 0);
                libc::close(null);
            }
        }
    }
    let options = keel_runtime::exec::ExecOptions {
        id: container.id.clone(),
        process,
        console_socket: None,
        pid_file: None,
        detach: args.detach,
        preserve_fds: 0,
        ignore_paused: false,
    };
    match keel_runtime::exec::exec(&engine.runtime_root(), &options) {
        Ok(code) => Ok(code),
        Err(e) => {
            let message = e.to_string();
            eprintln!("Error: {message}");
            Ok(match keel_engine::error::start_exit_code(&message) {
                125 => 126,
                code => code,
            })
        }
    }
}
