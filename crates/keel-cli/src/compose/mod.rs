//! `keel compose`: docker compose v2's commands on keel's engine, with no
//! daemon. The files are read by keel-compose ([`keel_compose::load`]); the
//! project is brought up and down by [`keel_compose::apply`]; this module is
//! the face: flags, progress lines, tables, logs.

mod logs;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use keel_compose::apply::{self, Compose, Host, UpOptions};
use keel_compose::load::{self, Loaded};
use keel_compose::model::{Project, Service};

use crate::containers::Context;

#[derive(Args, Debug)]
pub struct ComposeArgs {
    /// Compose configuration files (default: compose.yaml or
    /// docker-compose.yml here or above)
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// Project name
    #[arg(short = 'p', long = "project-name")]
    pub project_name: Option<String>,
    /// Alternate working directory (default: the first file's directory)
    #[arg(long = "project-directory")]
    pub project_directory: Option<PathBuf>,
    /// Alternate environment files (default: .env in the project directory)
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Enable services of this profile
    #[arg(long = "profile")]
    pub profile: Vec<String>,
    #[command(subcommand)]
    pub command: ComposeCommand,
}

#[derive(Subcommand, Debug)]
pub enum ComposeCommand {
    /// Create and start containers
    Up(UpArgs),
    /// Stop and remove containers, networks
    Down(DownArgs),
    /// List containers
    Ps(PsArgs),
    /// View output from containers
    Logs(logs::LogsArgs),
    /// Parse, resolve and render the compose file in canonical format
    Config(ConfigArgs),
    /// Build or rebuild services
    Build(ServicesArgs),
    /// Pull service images
    Pull(ServicesArgs),
    /// Creates containers for a service
    Create(CreateArgs),
    /// Start services
    Start(ServicesArgs),
    /// Stop services
    Stop(StopArgs),
    /// Restart service containers
    Restart(StopArgs),
    /// Force stop service containers
    Kill(KillArgs),
    /// Removes stopped service containers
    Rm(RmArgs),
    /// Pause services
    Pause(ServicesArgs),
    /// Unpause services
    Unpause(ServicesArgs),
    /// Execute a command in a running container
    Exec(run::ExecArgs),
    /// Run a one-off command on a service
    Run(run::RunArgs),
    /// List running compose projects
    Ls(LsArgs),
    /// List images used by the created containers
    Images(ServicesArgs),
    /// Print the public port for a port binding
    Port(PortArgs),
    /// Display the running processes
    Top(ServicesArgs),
    /// Block until the first service container stops
    Wait(ServicesArgs),
    /// Receive real time events from containers
    Events(EventsArgs),
    /// Copy files/folders between a service container and the local filesystem
    Cp(CpArgs),
    /// Push the images of the services that build one and name it
    Push(ServicesArgs),
    /// Show the keel compose version information
    Version,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Output events as a stream of json objects
    #[arg(long)]
    pub json: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u64,
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// SERVICE:SRC_PATH or SRC_PATH
    pub source: String,
    /// SERVICE:DEST_PATH or DEST_PATH
    pub destination: String,
}

#[derive(Args, Debug, Default)]
pub struct UpArgs {
    /// Detached mode: run containers in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Build images before starting containers
    #[arg(long)]
    pub build: bool,
    /// Don't build an image, even if it's missing
    #[arg(long = "no-build")]
    pub no_build: bool,
    /// Wait for services to be running|healthy (implies detached mode)
    #[arg(long)]
    pub wait: bool,
    /// Maximum duration to wait for the project to be running|healthy (seconds)
    #[arg(long = "wait-timeout")]
    pub wait_timeout: Option<u64>,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long = "force-recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    /// Don't start linked services
    #[arg(long = "no-deps")]
    pub no_deps: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Scale SERVICE to NUM instances (SERVICE=NUM)
    #[arg(long)]
    pub scale: Vec<String>,
    /// Stops all containers if any container was stopped
    #[arg(long = "abort-on-container-exit")]
    pub abort_on_container_exit: bool,
    /// Return the exit code of the selected service container (implies --abort-on-container-exit)
    #[arg(long = "exit-code-from")]
    pub exit_code_from: Option<String>,
    /// Pull image before running ("always"|"missing"|"never")
    #[arg(long)]
    pub pull: Option<String>,
    /// Use this timeout in seconds for container shutdown
    #[arg(short, long)]
    pub timeout: Option<u32>,
    /// Produce monochrome output
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Don't print prefix in logs
    #[arg(long = "no-log-prefix")]
    pub no_log_prefix: bool,
    /// Show timestamps
    #[arg(long)]
    pub timestamps: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Build images before starting containers
    #[arg(long)]
    pub build: bool,
    /// Don't build an image, even if it's missing
    #[arg(long = "no-build")]
    pub no_build: bool,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long = "force-recreate")]
    pub force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long = "no-recreate")]
    pub no_recreate: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Scale SERVICE to NUM instances (SERVICE=NUM)
    #[arg(long)]
    pub scale: Vec<String>,
    /// Pull image before running ("always"|"missing"|"never")
    #[arg(long)]
    pub pull: Option<String>,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// Remove named volumes declared in the "volumes" section of the Compose file and anonymous volumes attached to containers
    #[arg(short, long)]
    pub volumes: bool,
    /// Remove images used by services: "local" removes only images that don't have a custom tag ("local"|"all")
    #[arg(long)]
    pub rmi: Option<String>,
    /// Remove containers for services not defined in the Compose file
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Specify a shutdown timeout in seconds
    #[arg(short, long)]
    pub timeout: Option<u32>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all stopped containers (including those created by the run command)
    #[arg(short, long)]
    pub all: bool,
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Display services
    #[arg(long)]
    pub services: bool,
    /// Format the output: table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Filter services by a property (status=running)
    #[arg(long)]
    pub filter: Option<String>,
    pub service: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Print the service names, one per line
    #[arg(long)]
    pub services: bool,
    /// Print the volume names, one per line
    #[arg(long)]
    pub volumes: bool,
    /// Print the network names, one per line
    #[arg(long)]
    pub networks: bool,
    /// Print the profile names, one per line
    #[arg(long)]
    pub profiles: bool,
    /// Print the image names, one per line
    #[arg(long)]
    pub images: bool,
    /// Print the service config hash, one per line (SERVICE or "*")
    #[arg(long)]
    pub hash: Option<String>,
    /// Only validate the configuration, don't print anything
    #[arg(short, long)]
    pub quiet: bool,
    /// Format the output: yaml or json
    #[arg(long, default_value = "yaml")]
    pub format: String,
    /// Save to file (default: stdout)
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Specify a shutdown timeout in seconds
    #[arg(short, long)]
    pub timeout: Option<u32>,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// SIGNAL to send to the container
    #[arg(short, long, default_value = "SIGKILL")]
    pub signal: String,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Don't ask to confirm removal
    #[arg(short, long)]
    pub force: bool,
    /// Stop the containers, if required, before removing
    #[arg(short, long)]
    pub stop: bool,
    /// Remove any anonymous volumes attached to containers
    #[arg(short, long)]
    pub volumes: bool,
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Show all stopped Compose projects
    #[arg(short, long)]
    pub all: bool,
    /// Only display project names
    #[arg(short, long)]
    pub quiet: bool,
    /// Format the output: table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    /// tcp or udp
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// Index of the container if service has multiple replicas
    #[arg(long, default_value_t = 1)]
    pub index: u64,
    pub service: String,
    pub private_port: u16,
}

/// How docker compose prints progress without a terminal: ` Container
/// NAME  Started`, on stderr.
pub struct Printer {
    pub ctx: Context,
    pub quiet_pull: bool,
}

impl Host for Printer {
    fn pull(&mut self, image: &str, platform: Option<&str>) -> keel_compose::Result<()> {
        eprintln!(" Image {image}  Pulling");
        let args = crate::pull::PullArgs {
            platform: platform.map(str::to_string),
            quiet: self.quiet_pull,
            all_tags: false,
            name: image.to_string(),
        };
        crate::containers::with_stdout_on_stderr(|| crate::pull::pull(&self.ctx.root, &args))
            .map_err(|e| keel_compose::Error::project(format!("pull {image}: {e:#}")))?;
        eprintln!(" Image {image}  Pulled");
        Ok(())
    }

    fn build(
        &mut self,
        _project: &Project,
        service: &Service,
        tag: &str,
    ) -> keel_compose::Result<()> {
        let build = service.build.clone().unwrap_or_default();
        eprintln!(" Service {}  Building", service.name);
        let context = PathBuf::from(&build.context);
        let mut labels: Vec<String> = build
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let mut tags = vec![tag.to_string()];
        tags.extend(build.tags.iter().cloned());
        let args = crate::build::BuildArgs {
            tags,
            file: build
                .dockerfile
                .as_ref()
                .map(|f| context.join(f).display().to_string()),
            build_args: build
                .args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect(),
            target: build.target.clone(),
            no_cache: build.no_cache,
            pull: false,
            labels,
            iidfile: None,
            progress: "plain".into(),
            quiet: false,
            secret: Vec::new(),
            network: build.network.clone(),
            add_host: Vec::new(),
            platform: None,
            context: build.context.clone(),
        };
        if !build.additional_contexts.is_empty() {
            return Err(keel_compose::Error::project(format!(
                "service {:?}: build.additional_contexts is not supported by keel build yet",
                service.name
            )));
        }
        let code =
            crate::containers::with_stdout_on_stderr(|| crate::build::build(&self.ctx, &args))
                .map_err(|e| {
                    keel_compose::Error::project(format!(
                        "service {:?}: build: {e:#}",
                        service.name
                    ))
                })?;
        if code != 0 {
            return Err(keel_compose::Error::project(format!(
                "service {:?}: the build failed (exit {code})",
                service.name
            )));
        }
        eprintln!(" Service {}  Built", service.name);
        Ok(())
    }

    fn progress(&mut self, kind: &str, name: &str, what: &str) {
        eprintln!(" {kind} {name}  {what}");
    }

    fn warn(&mut self, message: &str) {
        eprintln!("WARN[0000] {message}");
    }
}

/// Reads the project the global flags point at.
fn load_project(args: &ComposeArgs, services: &[String]) -> Result<Loaded> {
    let options = load::Options {
        files: args.files.clone(),
        project_name: args.project_name.clone(),
        project_directory: args.project_directory.clone(),
        env_files: args.env_file.clone(),
        profiles: args.profile.clone(),
        services: services.to_vec(),
        environment: std::env::vars().collect(),
        cwd: std::env::current_dir()?,
    };
    match load::load(&options) {
        Ok(loaded) => Ok(loaded),
        // `-p NAME` with no file: the project as keel's state knows it
        // (docker compose's `-p NAME down` works so).
        Err(keel_compose::Error::NoFile(_))
            if args.project_name.is_some() && args.files.is_empty() =>
        {
            let name = args.project_name.as_deref().unwrap_or_default();
            if !keel_compose::model::valid_name(name) {
                bail!("{name:?} is not a valid project name");
            }
            Ok(Loaded::named(name))
        }
        Err(e) => Err(e.into()),
    }
}

fn compose<'a>(ctx: &Context, loaded: &'a Loaded) -> Result<Compose<'a>> {
    Ok(Compose {
        engine: ctx.engine()?,
        images: crate::images::open(&ctx.root)?,
        project: &loaded.project,
        vars: &loaded.vars,
        runroot: ctx.runroot.clone(),
    })
}

fn scales(list: &[String]) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for entry in list {
        let Some((service, n)) = entry.split_once('=') else {
            bail!("invalid --scale {entry:?}: SERVICE=NUM");
        };
        let n: u64 = n
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid --scale {entry:?}: SERVICE=NUM"))?;
        out.insert(service.to_string(), n);
    }
    Ok(out)
}

pub fn run(ctx: &Context, args: &ComposeArgs) -> Result<i32> {
    match &args.command {
        ComposeCommand::Version => {
            println!("keel compose version {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        ComposeCommand::Ls(ls_args) => ls(ctx, ls_args),
        ComposeCommand::Config(config_args) => config(args, config_args),
        ComposeCommand::Up(up_args) => up(ctx, args, up_args),
        ComposeCommand::Create(c) => {
            let loaded = load_project(args, &c.services)?;
            let mut compose = compose(ctx, &loaded)?;
            let mut printer = Printer {
                ctx: ctx.clone(),
                quiet_pull: false,
            };
            compose.up(
                &mut printer,
                &UpOptions {
                    services: c.services.clone(),
                    build: c.build,
                    no_build: c.no_build,
                    force_recreate: c.force_recreate,
                    no_recreate: c.no_recreate,
                    remove_orphans: c.remove_orphans,
                    scale: scales(&c.scale)?,
                    pull: c.pull.clone(),
                    no_start: true,
                    ..Default::default()
                },
            )?;
            Ok(0)
        }
        ComposeCommand::Down(d) => {
            if let Some(rmi) = &d.rmi
                && rmi != "local"
                && rmi != "all"
            {
                bail!("invalid --rmi {rmi:?}: local or all");
            }
            let loaded = load_project(args, &[])?;
            let mut compose = compose(ctx, &loaded)?;
            let mut printer = Printer {
                ctx: ctx.clone(),
                quiet_pull: false,
            };
            compose.down(
                &mut printer,
                d.volumes,
                d.remove_orphans,
                d.timeout,
                d.rmi.as_deref(),
            )?;
            Ok(0)
        }
        ComposeCommand::Ps(p) => ps(ctx, args, p),
        ComposeCommand::Logs(l) => {
            let loaded = load_project(args, &l.services)?;
            let mut compose = compose(ctx, &loaded)?;
            logs::logs(&mut compose, l)
        }
        ComposeCommand::Build(s) => {
            let loaded = load_project(args, &s.services)?;
            let mut compose = compose(ctx, &loaded)?;
            let mut printer = Printer {
                ctx: ctx.clone(),
                quiet_pull: false,
            };
            let services = compose.selected(&s.services)?;
            let project = &loaded.project;
            for name in services {
                let service = &project.services[&name];
                if service.build.is_some() {
                    let tag = keel_compose::spec::image_name(&project.name, service);
                    printer.build(project, service, &tag)?;
                }
            }
            Ok(0)
        }
        ComposeCommand::Pull(s) => {
            let loaded = load_project(args, &s.services)?;
            let mut compose = compose(ctx, &loaded)?;
            let mut printer = Printer {
                ctx: ctx.clone(),
                quiet_pull: true,
            };
            let project = &loaded.project;
            for name in compose.selected(&s.services)? {
                let service = &project.services[&name];
                if let Some(image) = &service.image {
                    if service.build.is_some() && compose.images.resolve(image).is_ok() {
                        continue;
                    }
                    printer.pull(image, service.platform.as_deref())?;
                }
            }
            Ok(0)
        }
        ComposeCommand::Start(s) => {
            with_compose(ctx, args, &s.services, |c, p| c.start(p, &s.services))
        }
        ComposeCommand::Stop(s) => with_compose(ctx, args, &s.services, |c, p| {
            c.stop(p, &s.services, s.timeout)
        }),
        ComposeCommand::Restart(s) => with_compose(ctx, args, &s.services, |c, p| {
            c.restart(p, &s.services, s.timeout)
        }),
        ComposeCommand::Kill(k) => {
            let signal = keel_runtime::container::parse_signal(&k.signal)?;
            with_compose(ctx, args, &k.services, |c, p| {
                c.kill(p, &k.services, signal)
            })
        }
        ComposeCommand::Pause(s) => {
            with_compose(ctx, args, &s.services, |c, p| c.pause(p, &s.services, true))
        }
        ComposeCommand::Unpause(s) => with_compose(ctx, args, &s.services, |c, p| {
            c.pause(p, &s.services, false)
        }),
        ComposeCommand::Rm(r) => {
            let loaded = load_project(args, &r.services)?;
            let mut compose = compose(ctx, &loaded)?;
            let mut printer = Printer {
                ctx: ctx.clone(),
                quiet_pull: false,
            };
            let n = compose.rm(&mut printer, &r.services, r.stop, r.volumes)?;
            if n == 0 {
                eprintln!("No stopped containers");
            }
            let _ = r.force;
            Ok(0)
        }
        ComposeCommand::Exec(e) => run::exec(ctx, args, e),
        ComposeCommand::Run(r) => run::run(ctx, args, r),
        ComposeCommand::Images(s) => images(ctx, args, s),
        ComposeCommand::Port(p) => port(ctx, args, p),
        ComposeCommand::Top(s) => top(ctx, args, s),
        ComposeCommand::Wait(s) => wait(ctx, args, s),
        ComposeCommand::Events(e) => events(ctx, args, e),
        ComposeCommand::Cp(c) => cp(ctx, args, c),
        ComposeCommand::Push(s) => {
            let loaded = load_project(args, &s.services)?;
            let mut compose = compose(ctx, &loaded)?;
            let project = &loaded.project;
            for name in compose.selected(&s.services)? {
                let service = &project.services[&name];
                // What the project builds and names (docker compose's push).
                let (Some(image), Some(_)) = (&service.image, &service.build) else {
                    continue;
                };
                eprintln!(" Image {image}  Pushing");
                crate::containers::with_stdout_on_stderr(|| {
                    crate::push::push(
                        &ctx.root,
                        &crate::push::PushArgs {
                            quiet: true,
                            name: image.clone(),
                        },
                    )
                })?;
                eprintln!(" Image {image}  Pushed");
            }
            Ok(0)
        }
    }
}

fn with_compose(
    ctx: &Context,
    args: &ComposeArgs,
    services: &[String],
    f: impl FnOnce(&mut Compose, &mut Printer) -> keel_compose::Result<()>,
) -> Result<i32> {
    let loaded = load_project(args, services)?;
    let mut compose = compose(ctx, &loaded)?;
    let mut printer = Printer {
        ctx: ctx.clone(),
        quiet_pull: false,
    };
    f(&mut compose, &mut printer)?;
    Ok(0)
}

fn config(args: &ComposeArgs, c: &ConfigArgs) -> Result<i32> {
    let loaded = load_project(args, &[])?;
    let project = &loaded.project;
    let mut out = String::new();
    if c.services {
        for name in project.services.keys() {
            out.push_str(name);
            out.push('\n');
        }
    } else if c.volumes {
        for name in project.volumes.keys() {
            out.push_str(name);
            out.push('\n');
        }
    } else if c.networks {
        for name in project.networks.keys() {
            out.push_str(name);
            out.push('\n');
        }
    } else if c.profiles {
        let mut profiles: Vec<&String> = project
            .services
            .values()
            .chain(project.disabled.values())
            .flat_map(|s| &s.profiles)
            .collect();
        profiles.sort();
        profiles.dedup();
        for p in profiles {
            out.push_str(p);
            out.push('\n');
        }
    } else if c.images {
        for service in project.services.values() {
            out.push_str(&keel_compose::spec::image_name(&project.name, service));
            out.push('\n');
        }
    } else if let Some(which) = &c.hash {
        for (name, service) in &project.services {
            if which == "*" || which.split(',').any(|w| w == name) {
                out.push_str(&format!(
                    "{name} {}\n",
                    keel_compose::spec::config_hash(service)
                ));
            }
        }
    } else {
        out = match c.format.as_str() {
            "json" => serde_json::to_string_pretty(project)? + "\n",
            "yaml" => serde_saphyr::to_string(project)
                .map_err(|e| anyhow::anyhow!("render the project: {e}"))?,
            other => bail!("unsupported format {other:?}: yaml or json"),
        };
    }
    if c.quiet {
        return Ok(0);
    }
    match &c.output {
        Some(path) => std::fs::write(path, out)?,
        None => print!("{out}"),
    }
    Ok(0)
}

fn up(ctx: &Context, args: &ComposeArgs, u: &UpArgs) -> Result<i32> {
    if u.detach && (u.abort_on_container_exit || u.exit_code_from.is_some()) {
        bail!("--abort-on-container-exit and --exit-code-from cannot be combined with --detach");
    }
    let loaded = load_project(args, &u.services)?;
    if let Some(from) = &u.exit_code_from
        && !loaded.project.services.contains_key(from)
    {
        bail!("no such service: {from}");
    }
    let mut compose = compose(ctx, &loaded)?;
    let mut printer = Printer {
        ctx: ctx.clone(),
        quiet_pull: false,
    };
    let options = UpOptions {
        services: u.services.clone(),
        build: u.build,
        no_build: u.no_build,
        force_recreate: u.force_recreate,
        no_recreate: u.no_recreate,
        no_deps: u.no_deps,
        remove_orphans: u.remove_orphans,
        scale: scales(&u.scale)?,
        pull: u.pull.clone(),
        no_start: false,
        wait: u.wait,
        wait_timeout: u.wait_timeout.map(Duration::from_secs),
        timeout: u.timeout,
    };
    let containers = compose.up(&mut printer, &options)?;
    if u.detach || u.wait {
        return Ok(0);
    }
    logs::attach_all(&mut compose, &mut printer, &containers, u)
}

fn ps(ctx: &Context, args: &ComposeArgs, p: &PsArgs) -> Result<i32> {
    let loaded = load_project(args, &p.service)?;
    let mut compose = compose(ctx, &loaded)?;
    let services = compose.selected(&p.service)?;
    let mut rows = Vec::new();
    for c in apply::project_containers(&mut compose.engine, &loaded.project.name)? {
        if !services.iter().any(|s| s == apply::service_of(&c)) {
            continue;
        }
        if !p.all && !c.state.status.is_active() {
            continue;
        }
        if apply::is_oneoff(&c) && !p.all {
            continue;
        }
        if let Some(filter) = &p.filter {
            match filter.split_once('=') {
                Some(("status", status)) if c.state.status.as_str() != status => continue,
                Some(("status", _)) => {}
                _ => bail!("invalid filter {filter:?}: status=STATUS"),
            }
        }
        rows.push(c);
    }
    if p.services {
        let mut names: Vec<&str> = rows.iter().map(apply::service_of).collect();
        names.dedup();
        for n in names {
            println!("{n}");
        }
        return Ok(0);
    }
    if p.quiet {
        for c in rows {
            println!("{}", c.id);
        }
        return Ok(0);
    }
    let views: Vec<keel_engine::views::container::PsRow> = rows
        .iter()
        .map(|c| {
            let endpoints =
                keel_engine::network::endpoints_of(&mut compose.engine.db, c).unwrap_or_default();
            keel_engine::views::container::ps_row(
                c,
                true,
                None,
                keel_engine::views::network::ports_text(&endpoints),
            )
        })
        .collect();
    if p.format == "json" {
        for (c, v) in rows.iter().zip(&views) {
            let mut value = serde_json::to_value(v)?;
            value["Service"] = apply::service_of(c).into();
            value["Project"] = loaded.project.name.clone().into();
            println!("{value}");
        }
        return Ok(0);
    }
    if p.format != "table" {
        bail!("unsupported format {:?}: table or json", p.format);
    }
    let mut table = vec![
        [
            "NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (c, v) in rows.iter().zip(&views) {
        table.push(vec![
            c.name.clone(),
            v.image.clone(),
            v.command.clone(),
            apply::service_of(c).to_string(),
            v.running_for.clone(),
            v.status.clone(),
            v.ports.clone(),
        ]);
    }
    print!("{}", crate::images::render_table(&table));
    Ok(0)
}

fn ls(ctx: &Context, l: &LsArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut projects: BTreeMap<String, (Vec<String>, BTreeMap<String, usize>)> = BTreeMap::new();
    for c in engine.list()? {
        let Some(project) = c.spec.labels.get(keel_compose::spec::PROJECT).cloned() else {
            continue;
        };
        let entry = projects.entry(project).or_default();
        if let Some(files) = c.spec.labels.get(keel_compose::spec::CONFIG_FILES)
            && !entry.0.contains(files)
        {
            entry.0.push(files.clone());
        }
        *entry
            .1
            .entry(c.state.status.as_str().to_string())
            .or_default() += 1;
    }
    let status = |counts: &BTreeMap<String, usize>| {
        counts
            .iter()
            .map(|(s, n)| format!("{s}({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let shown: Vec<_> = projects
        .iter()
        .filter(|(_, (_, counts))| l.all || counts.contains_key("running"))
        .collect();
    if l.quiet {
        for (name, _) in shown {
            println!("{name}");
        }
        return Ok(0);
    }
    if l.format == "json" {
        let list: Vec<serde_json::Value> = shown
            .iter()
            .map(|(name, (files, counts))| {
                serde_json::json!({"Name": name, "Status": status(counts), "ConfigFiles": files.join(",")})
            })
            .collect();
        println!("{}", serde_json::to_string(&list)?);
        return Ok(0);
    }
    let mut table = vec![
        ["NAME", "STATUS", "CONFIG FILES"]
            .map(String::from)
            .to_vec(),
    ];
    for (name, (files, counts)) in shown {
        table.push(vec![name.clone(), status(counts), files.join(",")]);
    }
    print!("{}", crate::images::render_table(&table));
    Ok(0)
}

fn images(ctx: &Context, args: &ComposeArgs, s: &ServicesArgs) -> Result<i32> {
    let loaded = load_project(args, &s.services)?;
    let mut compose = compose(ctx, &loaded)?;
    let services = compose.selected(&s.services)?;
    let mut table = vec![
        ["CONTAINER", "REPOSITORY", "TAG", "IMAGE ID", "SIZE"]
            .map(String::from)
            .to_vec(),
    ];
    for c in apply::project_containers(&mut compose.engine, &loaded.project.name)? {
        if !services.iter().any(|n| n == apply::service_of(&c)) {
            continue;
        }
        let (repo, tag) = match keel_image::reference::Reference::parse(&c.image) {
            Ok(r) => (r.familiar_name(), r.tag().unwrap_or("latest").to_string()),
            Err(_) => (c.image.clone(), String::new()),
        };
        let size = compose
            .images
            .resolve(&c.image)
            .map(|r| keel_engine::views::human_size(r.size))
            .unwrap_or_default();
        let id = c.image_id.trim_start_matches("sha256:");
        table.push(vec![
            c.name.clone(),
            repo,
            tag,
            id[..id.len().min(12)].to_string(),
            size,
        ]);
    }
    print!("{}", crate::images::render_table(&table));
    Ok(0)
}

fn port(ctx: &Context, args: &ComposeArgs, p: &PortArgs) -> Result<i32> {
    let loaded = load_project(args, std::slice::from_ref(&p.service))?;
    let mut compose = compose(ctx, &loaded)?;
    compose.selected(std::slice::from_ref(&p.service))?;
    let containers = compose.service_containers(&p.service)?;
    let Some(c) = containers.iter().find(|c| apply::number(c) == p.index) else {
        bail!(
            "service {:?} has no container number {}",
            p.service,
            p.index
        );
    };
    for endpoint in keel_engine::network::endpoints_of(&mut compose.engine.db, c)? {
        for port in &endpoint.ports {
            if port.container_port == p.private_port && port.protocol == p.protocol {
                println!(
                    "{}:{}",
                    keel_engine::network::host_ip_text(&port.host_ip),
                    port.host_port
                );
                return Ok(0);
            }
        }
    }
    bail!(
        "no port {}/{} is published for {}",
        p.private_port,
        p.protocol,
        c.name
    );
}

fn top(ctx: &Context, args: &ComposeArgs, s: &ServicesArgs) -> Result<i32> {
    let loaded = load_project(args, &s.services)?;
    let mut compose = compose(ctx, &loaded)?;
    for c in compose.ordered_containers(&s.services, false)? {
        if !c.state.status.is_active() {
            continue;
        }
        println!("{}", c.name);
        let pids = compose.engine.pids(&c.id)?;
        let (titles, rows) = keel_engine::views::container::top_of(&pids, &[])?;
        let mut table = vec![titles];
        table.extend(rows);
        print!("{}", crate::images::render_table(&table));
        println!();
    }
    Ok(0)
}

fn wait(ctx: &Context, args: &ComposeArgs, s: &ServicesArgs) -> Result<i32> {
    let loaded = load_project(args, &s.services)?;
    let mut compose = compose(ctx, &loaded)?;
    let containers = compose.ordered_containers(&s.services, false)?;
    if containers.is_empty() {
        bail!("no containers for project {:?}", loaded.project.name);
    }
    // The first to stop decides.
    loop {
        for c in &containers {
            let now = compose.engine.find(&c.id)?;
            if !now.state.status.is_active() {
                return Ok(now.state.exit_code);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(ctx: &Context, args: &ComposeArgs, e: &EventsArgs) -> Result<i32> {
    let loaded = load_project(args, &e.services)?;
    let mut compose = compose(ctx, &loaded)?;
    let services = compose.selected(&e.services)?;
    let filter = keel_engine::events::Filter::parse(
        None,
        None,
        &[
            "type=container".to_string(),
            format!(
                "label={}={}",
                keel_compose::spec::PROJECT,
                loaded.project.name
            ),
        ],
    )?;
    let emit = |event: &keel_engine::events::Event| -> std::io::Result<()> {
        let service = event
            .actor
            .attributes
            .get(keel_compose::spec::SERVICE)
            .cloned()
            .unwrap_or_default();
        if !services.contains(&service) {
            return Ok(());
        }
        let time = jiff::Timestamp::from_nanosecond(event.time_nano)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let text = if e.json {
            serde_json::json!({
                "time": time,
                "type": "container",
                "action": event.action,
                "id": event.actor.id,
                "service": service,
                "attributes": {
                    "name": event.actor.attributes.get("name"),
                    "image": event.actor.attributes.get("image"),
                },
            })
            .to_string()
        } else {
            format!(
                "{time} container {} {} (image={}, name={})",
                event.action,
                event.actor.id,
                event
                    .actor
                    .attributes
                    .get("image")
                    .map(String::as_str)
                    .unwrap_or(""),
                event
                    .actor
                    .attributes
                    .get("name")
                    .map(String::as_str)
                    .unwrap_or("")
            )
        };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    };
    drop(compose);
    keel_engine::events::stream(&ctx.root, &filter, emit)?;
    Ok(0)
}

fn cp(ctx: &Context, args: &ComposeArgs, c: &CpArgs) -> Result<i32> {
    let loaded = load_project(args, &[])?;
    let mut compose = compose(ctx, &loaded)?;
    // SERVICE:PATH names the service's container number --index.
    let mut resolve = |text: &str| -> Result<String> {
        let Some((service, path)) = text.split_once(':') else {
            return Ok(text.to_string());
        };
        if service.is_empty() || service.contains('/') {
            return Ok(text.to_string());
        }
        compose.selected(&[service.to_string()])?;
        let containers = compose.service_containers(service)?;
        let Some(container) = containers.iter().find(|x| apply::number(x) == c.index) else {
            bail!("service {service:?} has no container number {}", c.index);
        };
        Ok(format!("{}:{path}", container.id))
    };
    let source = resolve(&c.source)?;
    let destination = resolve(&c.destination)?;
    drop(compose);
    crate::files::cp(
        ctx,
        &crate::files::CpArgs {
            archive: c.archive,
            follow_link: c.follow_link,
            quiet: true,
            source,
            destination,
        },
    )
}
