//! `keel compose exec` and `keel compose run`: a command in a service's
//! container, or in a one-off container of the service.

use anyhow::{Result, bail};
use clap::Args;
use keel_compose::apply::{self, Host, UpOptions};
use keel_engine::attach::Hello;

use super::{ComposeArgs, Printer, compose, load_project};
use crate::containers::Context;

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: Run command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Disable pseudo-TTY allocation (by default a TTY is allocated when stdin is one)
    #[arg(short = 'T', long = "no-TTY")]
    pub no_tty: bool,
    /// Run the command as this user
    #[arg(short, long)]
    pub user: Option<String>,
    /// Path to workdir directory for this command
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u64,
    /// Give extended privileges to the process
    #[arg(long)]
    pub privileged: bool,
    pub service: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Override the entrypoint of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Add or override a label
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    /// Bind mount a volume
    #[arg(short, long = "volume")]
    pub volumes: Vec<String>,
    /// Run as specified username or uid
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Don't start linked services
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Run command with all service's ports enabled and mapped to the host
    #[arg(long = "service-ports")]
    pub service_ports: bool,
    /// Disable pseudo-TTY allocation (by default a TTY is allocated when stdin is one)
    #[arg(short = 'T', long = "no-TTY")]
    pub no_tty: bool,
    /// Build image before starting container
    #[arg(long)]
    pub build: bool,
    pub service: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn stdin_is_tty() -> bool {
    nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
}

pub fn exec(ctx: &Context, args: &ComposeArgs, e: &ExecArgs) -> Result<i32> {
    let loaded = load_project(args, std::slice::from_ref(&e.service))?;
    let mut compose = compose(ctx, &loaded)?;
    compose.selected(std::slice::from_ref(&e.service))?;
    let containers = compose.service_containers(&e.service)?;
    let Some(c) = containers.iter().find(|c| apply::number(c) == e.index) else {
        bail!("service {:?} is not running", e.service);
    };
    let c = compose.engine.find(&c.id)?;
    if !c.state.status.is_active() {
        bail!("service {:?} is not running", e.service);
    }
    let exec_args = crate::containers::ExecArgs {
        detach: e.detach,
        interactive: !e.detach,
        tty: !e.no_tty && !e.detach && stdin_is_tty(),
        env: e.env.clone(),
        user: e.user.clone(),
        workdir: e.workdir.clone(),
        privileged: e.privileged,
        container: c.id.clone(),
        command: e.command.clone(),
    };
    drop(compose);
    crate::containers::exec(ctx, &exec_args)
}

/// A one-off container's name: `PROJECT-SERVICE-run-` and 12 hex digits.
fn oneoff_name(project: &str, service: &str) -> Result<String> {
    let id = keel_engine::engine::random_id()?;
    Ok(format!("{project}-{service}-run-{}", &id[..12]))
}

pub fn run(ctx: &Context, args: &ComposeArgs, r: &RunArgs) -> Result<i32> {
    let loaded = load_project(args, std::slice::from_ref(&r.service))?;
    let mut compose = compose(ctx, &loaded)?;
    compose.selected(std::slice::from_ref(&r.service))?;
    let project = &loaded.project;
    let service = &project.services[&r.service];
    let mut printer = Printer {
        ctx: ctx.clone(),
        quiet_pull: false,
    };
    // What it depends on runs first (as up would start it).
    if !r.no_deps {
        let deps =
            keel_compose::order::dependency_order(project, std::slice::from_ref(&r.service))?;
        let deps: Vec<String> = deps.into_iter().filter(|d| *d != r.service).collect();
        if !deps.is_empty() {
            compose.up(
                &mut printer,
                &UpOptions {
                    services: deps,
                    ..Default::default()
                },
            )?;
        }
        for (dep, d) in &service.depends_on {
            if project.services.contains_key(dep) {
                compose.wait_condition(&mut printer, dep, d.condition, None)?;
            }
        }
    }
    compose.ensure_resources(&mut printer)?;
    compose.ensure_images(
        &mut printer,
        std::slice::from_ref(&r.service),
        r.build,
        false,
        None,
    )?;
    let image = keel_compose::spec::image_name(&project.name, service);
    let image_id = compose
        .images
        .resolve(&image)
        .map(|i| i.id.to_string())
        .unwrap_or_default();
    let name = match &r.name {
        Some(name) => name.clone(),
        None => oneoff_name(&project.name, &r.service)?,
    };
    let mut spec = compose.spec_for(service, 1, Some(name), r.service_ports, &image_id)?;
    if !r.command.is_empty() {
        spec.command = r.command.clone();
    }
    if let Some(entrypoint) = &r.entrypoint {
        spec.entrypoint = Some(if entrypoint.is_empty() {
            Vec::new()
        } else {
            keel_compose::read::shell_words(entrypoint).map_err(anyhow::Error::msg)?
        });
        if r.command.is_empty() {
            spec.command.clear();
        }
    }
    spec.env.extend(r.env.iter().cloned());
    for label in &r.labels {
        let (k, v) = label.split_once('=').unwrap_or((label, ""));
        spec.labels.insert(k.to_string(), v.to_string());
    }
    for volume in &r.volumes {
        spec.mounts
            .push(keel_engine::spec::parse_volume_flag(volume)?);
    }
    if r.user.is_some() {
        spec.user = r.user.clone();
    }
    if r.workdir.is_some() {
        spec.workdir = r.workdir.clone();
    }
    spec.tty = !r.no_tty && !r.detach && stdin_is_tty();
    spec.interactive = !r.detach;
    spec.auto_remove = r.rm;
    let container = compose.engine.create(&compose.images, spec)?;
    if r.detach {
        compose.engine.start(&container.id)?;
        println!("{}", container.name);
        return Ok(0);
    }
    let hello = Hello {
        stdin: true,
        stdout: true,
        stderr: true,
        start: true,
    };
    let (container, stream) = match compose.engine.start_attached(&container.id, hello) {
        Ok(started) => started,
        Err(e) => {
            if r.rm {
                let _ = compose.engine.remove(&container.id, true, true);
            }
            return Err(e.into());
        }
    };
    printer.progress("Container", &container.name, "Started");
    crate::containers::session(
        &mut compose.engine,
        &container,
        stream,
        true,
        !container.spec.tty,
        "ctrl-p,ctrl-q",
    )
}
