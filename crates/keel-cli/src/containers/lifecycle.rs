//! `start`, `stop`, `restart`, `kill`, `rm`, `wait`, `attach`, `rename`,
//! `pause` and `unpause`.

use anyhow::{Result, bail};
use clap::Args;
use keel_engine::attach::Hello;

use super::*;

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn start(ctx: &Context, args: &StartArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    if args.attach || args.interactive {
        if args.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let hello = Hello {
            stdin: args.interactive,
            stdout: true,
            stderr: true,
            start: true,
        };
        let (container, stream) = match engine.start_attached(&args.containers[0], hello) {
            Ok(started) => started,
            Err(e) => return fail_command(e),
        };
        let tty = container.spec.tty;
        return session(
            &mut engine,
            &container,
            stream,
            args.interactive,
            !tty,
            &args.detach_keys,
        );
    }
    let mut code = 0;
    for name in &args.containers {
        match engine.start(name) {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = match error_code(&e) {
                    125 => 1,
                    code => code,
                };
            }
        }
    }
    if code != 0 {
        eprintln!(
            "Error: failed to start containers: {}",
            args.containers.join(", ")
        );
    }
    Ok(code)
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short, long, alias = "time")]
    pub timeout: Option<u32>,
    /// Signal to send to the container
    #[arg(short, long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn stop(ctx: &Context, args: &StopArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    if let Some(signal) = &args.signal {
        keel_runtime::container::parse_signal(signal)?;
    }
    each(&args.containers, |name| {
        engine.stop(name, args.timeout).map(|_| ())
    })
}

pub fn restart(ctx: &Context, args: &StopArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    each(&args.containers, |name| {
        engine.stop(name, args.timeout)?;
        engine.start(name).map(|_| ())
    })
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn kill(ctx: &Context, args: &KillArgs) -> Result<i32> {
    let signal = keel_runtime::container::parse_signal(&args.signal)?;
    let mut engine = ctx.engine()?;
    each(&args.containers, |name| {
        engine.kill(name, signal).map(|_| ())
    })
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn rm(ctx: &Context, args: &RmArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    each(&args.containers, |name| {
        match engine.remove(name, args.force, args.volumes) {
            Err(keel_engine::Error::NotFound { .. }) if args.force => Ok(()),
            other => other.map(|_| ()),
        }
    })
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn wait(ctx: &Context, args: &WaitArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut code = 0;
    for name in &args.containers {
        match engine.wait(name) {
            Ok(exit) => println!("{exit}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    pub container: String,
}

pub fn attach(ctx: &Context, args: &AttachArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let container = engine.find(&args.container)?;
    let stdin = container.spec.interactive && !args.no_stdin;
    let hello = Hello {
        stdin,
        stdout: true,
        stderr: true,
        start: false,
    };
    let (container, stream) = match engine.attach(&args.container, hello) {
        Ok(attached) => attached,
        Err(e) => return fail_command(e),
    };
    let sig_proxy = args.sig_proxy && !container.spec.tty;
    session(
        &mut engine,
        &container,
        stream,
        stdin,
        sig_proxy,
        &args.detach_keys,
    )
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

pub fn rename(ctx: &Context, args: &RenameArgs) -> Result<i32> {
    ctx.engine()?.rename(&args.container, &args.new_name)?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn pause(ctx: &Context, args: &NamesArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    each(&args.containers, |name| engine.pause(name).map(|_| ()))
}

pub fn unpause(ctx: &Context, args: &NamesArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    each(&args.containers, |name| engine.unpause(name).map(|_| ()))
}
