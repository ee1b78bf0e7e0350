//! `keel`: the command-line face. It offers the container commands (`run`,
//! `ps`, `logs`, `exec`, `stop`, `rm`, ...), the image commands (`pull`,
//! `push`, `load`, `save`, `import`, `images`, `tag`, `rmi`, `image ...`),
//! the OCI runtime (`keel runtime ...`, the commands of `keel-runtime`/runc)
//! and its version.

mod attach_client;
mod build;
mod compose;
mod containers;
mod events;
mod files;
mod images;
mod login;
mod netio;
mod networks;
mod progress;
mod pull;
mod push;
mod registry;
mod save;
mod service;
mod stats;
mod system;
mod template;
mod vm;
mod volumes;

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
    /// Where keel keeps runtime state (sockets, locks, the runtime's state)
    #[arg(long, global = true, env = "KEEL_RUNROOT", default_value = "/run/keel")]
    runroot: PathBuf,
    /// The cgroup containers' cgroups are made under
    #[arg(
        long = "cgroup-parent",
        global = true,
        env = "KEEL_CGROUP_PARENT",
        default_value = "/keel"
    )]
    cgroup_parent: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(containers::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(containers::CreateArgs),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// List containers
    Ps(containers::PsArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Execute a command in a running container
    Exec(containers::ExecArgs),
    /// Return low-level information on containers or images
    Inspect(containers::InspectArgs),
    /// Block until containers stop, then print their exit codes
    Wait(containers::WaitArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(containers::AttachArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Pause all processes within one or more containers
    Pause(containers::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(containers::NamesArgs),
    /// Display the running processes of a container
    Top(containers::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Update configuration of one or more containers
    Update(stats::UpdateArgs),
    /// List port mappings or a specific mapping for the container
    Port(stats::PortArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(files::ExportArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(files::CpArgs),
    /// Create a new image from a container's changes
    Commit(files::CommitArgs),
    /// Get real time events from containers, images and volumes
    Events(events::EventsArgs),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// The monitor that holds a running container (started by keel itself)
    #[command(name = "container-monitor", hide = true)]
    ContainerMonitor(containers::MonitorArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(build::BuilderCommand),
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
    /// Show the history of an image
    History(images::HistoryArgs),
    /// Remove images
    Rmi(images::RmiArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Log in to a registry (credentials in docker's config.json)
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Run keel's own image registry (serve, gc)
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Manage micro-VMs (keel's hypervisor: run, ls, inspect, logs, stop, kill, rm)
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Define and run multi-container applications (docker compose v2's commands, no daemon)
    Compose(compose::ComposeArgs),
    /// Manage keel
    #[command(subcommand)]
    System(SystemCommand),
    /// Show keel's version and the OCI runtime-spec version it implements
    Version(VersionArgs),
    /// Display system-wide information (containers, images, storage, logging, cgroups)
    Info(system::InfoArgs),
    /// The OCI runtime (runc-compatible): `keel runtime run --bundle DIR ID`, `keel runtime --help`
    #[command(disable_help_flag = true)]
    Runtime {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct VersionArgs {
    /// Format the output using a Go template ({{.Server.Version}}, {{json .}})
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
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
enum ContainerCommand {
    /// List containers
    #[command(alias = "ps", alias = "list")]
    Ls(containers::PsArgs),
    /// Create and run a new container from an image
    #[command(disable_help_flag = true)]
    Run(containers::RunArgs),
    /// Create a new container
    #[command(disable_help_flag = true)]
    Create(containers::CreateArgs),
    /// Start one or more stopped containers
    Start(containers::StartArgs),
    /// Stop one or more running containers
    Stop(containers::StopArgs),
    /// Restart one or more containers
    Restart(containers::StopArgs),
    /// Kill one or more running containers
    Kill(containers::KillArgs),
    /// Remove one or more containers
    Rm(containers::RmArgs),
    /// Fetch the logs of a container
    Logs(containers::LogsArgs),
    /// Execute a command in a running container
    Exec(containers::ExecArgs),
    /// Display detailed information on one or more containers
    Inspect(containers::InspectArgs),
    /// Block until containers stop, then print their exit codes
    Wait(containers::WaitArgs),
    /// Attach to a running container
    Attach(containers::AttachArgs),
    /// Rename a container
    Rename(containers::RenameArgs),
    /// Pause all processes within one or more containers
    Pause(containers::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(containers::NamesArgs),
    /// Display the running processes of a container
    Top(containers::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Update configuration of one or more containers
    Update(stats::UpdateArgs),
    /// List port mappings or a specific mapping for the container
    Port(stats::PortArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(files::DiffArgs),
    /// Export a container's filesystem as a tar archive
    Export(files::ExportArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(files::CpArgs),
    /// Create a new image from a container's changes
    Commit(files::CommitArgs),
    /// Remove all stopped containers
    Prune(containers::PruneArgs),
}

#[derive(Subcommand)]
enum SystemCommand {
    /// Display system-wide information
    Info(system::InfoArgs),
    /// Remove unused data: stopped containers, unused networks, dangling
    /// (with -a unused) images, build cache (with --volumes anonymous volumes)
    Prune(system::SystemPruneArgs),
    /// Show disk usage
    Df(system::DfArgs),
    /// Get real time events from containers, images and volumes
    Events(events::EventsArgs),
    /// Serve the Docker Engine API (docker, docker-py, docker-compose) on a socket
    Service(service::ServiceArgs),
}

/// `keel inspect NAME...`: each name is a container, else an image, else a
/// network, else a volume (docker's order); "No such object" otherwise.
fn inspect_any(ctx: &containers::Context, args: &containers::InspectArgs) -> anyhow::Result<i32> {
    let mut engine = ctx.engine()?;
    let store = images::open(&ctx.root)?;
    let mut values = Vec::new();
    let mut code = 0;
    for name in &args.containers {
        let value = if let Ok(container) = engine.find(name) {
            Some(keel_engine::views::container::inspect_sized(
                &mut engine,
                &container,
                args.size,
            ))
        } else if let Ok(image) = store.inspect(name) {
            serde_json::to_value(image).ok()
        } else if let Some(network) = networks::inspect_value(&mut engine, name) {
            Some(network)
        } else {
            engine
                .volume(name)
                .ok()
                .map(|volume| engine.volume_value(&volume))
        };
        match value {
            Some(value) => values.push(value),
            None => {
                eprintln!("Error: No such object: {name}");
                code = 1;
            }
        }
    }
    template::print_values(&values, args.format.as_deref())?;
    Ok(code)
}

fn main() {
    quiet_on_closed_stdout();
    let args = end_flags_after_image(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => std::process::exit(usage_error(&e, &args)),
    };
    // What the libraries warn about reaches the user (KEEL_LOG=info|debug
    // for more); the registry server and the monitor log their own way.
    if !matches!(
        cli.command,
        Command::Registry(_) | Command::ContainerMonitor(_)
    ) {
        let level = std::env::var("KEEL_LOG")
            .ok()
            .and_then(|l| l.parse::<tracing::Level>().ok())
            .unwrap_or(tracing::Level::WARN);
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .without_time()
            .with_target(false)
            .with_writer(std::io::stderr)
            .try_init();
    }
    // docker: `run` and `create` exit 125 on an error of their own (the
    // container's code otherwise); every other command exits 1.
    let own_error = match &cli.command {
        Command::Run(_)
        | Command::Create(_)
        | Command::Container(ContainerCommand::Run(_) | ContainerCommand::Create(_))
        | Command::Vm(vm::VmCommand::Run(_) | vm::VmCommand::Restore(_)) => 125,
        _ => 1,
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if stdout_closed() {
                die_of_sigpipe();
            }
            eprintln!("Error: {}", error_text(&e));
            own_error
        }
    };
    std::process::exit(code);
}

/// Like any Unix filter, `keel images | head` ends quietly (as killed by
/// SIGPIPE) when what reads its output goes away. SIGPIPE itself stays
/// ignored: keel's own pipes (a layer packed in one thread and stored in
/// another) must fail with an error that says why, not kill the process.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            die_of_sigpipe();
        }
        default_hook(info);
    }));
}

/// An error and its causes, `: `-separated, each said once (an error's
/// text often holds its cause's already).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Whether standard output is a pipe whose reader has gone.
fn stdout_closed() -> bool {
    let mut pfd = libc::pollfd {
        fd: 1,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one pollfd of ours, without waiting.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready == 1 && pfd.revents & libc::POLLERR != 0
}

fn die_of_sigpipe() {
    // SAFETY: the default disposition back, then the signal to self.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
}

/// A command line that does not parse, told as docker's CLI tells it:
///
/// ```text
/// unknown flag: --badflag
///
/// Usage:  keel logs [OPTIONS] <CONTAINER>
///
/// Run 'keel logs --help' for more information
/// ```
///
/// and exit 125 (`--help` and `--version` print and exit 0).
fn usage_error(e: &clap::Error, args: &[std::ffi::OsString]) -> i32 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return 0;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return 125;
        }
        _ => {}
    }
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let invalid = context(ContextKind::InvalidArg);
    let (command, usage) = command_usage(args);
    let first_line = match (e.kind(), &invalid) {
        (ErrorKind::InvalidSubcommand, _) => {
            let word = context(ContextKind::InvalidSubcommand).unwrap_or_default();
            eprintln!("{command}: '{word}' is not a {command} command.");
            eprintln!("See '{command} --help'");
            return 1;
        }
        (ErrorKind::UnknownArgument, Some(arg)) if arg.starts_with("--") => {
            format!("unknown flag: {}", arg.split('=').next().unwrap_or(arg))
        }
        (ErrorKind::UnknownArgument, Some(arg)) if arg.starts_with('-') => {
            let letter = arg.chars().nth(1).unwrap_or('-');
            format!("unknown shorthand flag: '{letter}' in {arg}")
        }
        (ErrorKind::InvalidValue, Some(arg))
            if context(ContextKind::InvalidValue).is_some_and(|v| v.is_empty()) =>
        {
            format!(
                "flag needs an argument: {}",
                arg.split_whitespace().next().unwrap_or(arg)
            )
        }
        (ErrorKind::MissingRequiredArgument, _) => {
            format!("\"{command}\" requires at least 1 argument.")
        }
        _ => {
            // clap's own sentence, without its "error: " and tips.
            let rendered = e.render().to_string();
            let line = rendered.lines().next().unwrap_or("").trim();
            line.trim_start_matches("error: ").to_string()
        }
    };
    eprintln!("{first_line}");
    eprintln!("\nUsage:  {usage}");
    eprintln!("\nRun '{command} --help' for more information");
    125
}

/// The command that `args` names (`keel network create`) and its usage
/// line, found in clap's command tree.
fn command_usage(args: &[std::ffi::OsString]) -> (String, String) {
    use clap::CommandFactory;
    let mut root = Cli::command();
    root.build();
    let mut command = &root;
    for arg in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if arg == "--" {
            break;
        }
        if arg.starts_with('-') {
            continue;
        }
        match command.find_subcommand(arg) {
            Some(sub) => command = sub,
            None => break,
        }
    }
    let name = command
        .get_bin_name()
        .unwrap_or(command.get_name())
        .to_string();
    let usage = command.clone().render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim().to_string();
    (name, usage)
}

/// docker stops reading its own flags at the image of `run`/`create` and
/// at the container of `exec`: `keel run IMAGE -c 1` passes `-c 1` to the
/// container. clap would take `-c` as `--cpu-shares`, so a `--` goes in
/// after that positional.
fn end_flags_after_image(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    // Building clap's command tree costs time on every start: only when
    // there can be something to do.
    if !args
        .iter()
        .any(|a| matches!(a.to_str(), Some("run" | "create" | "exec")))
    {
        return args;
    }
    let root = Cli::command();
    let takes_value = |command: &clap::Command, arg: &str| -> bool {
        let found = if let Some(long) = arg.strip_prefix("--") {
            command.get_arguments().find(|a| {
                a.get_long() == Some(long)
                    || a.get_all_aliases()
                        .is_some_and(|aliases| aliases.contains(&long))
            })
        } else {
            let short = arg.chars().nth(1);
            command
                .get_arguments()
                .find(|a| a.get_short().is_some() && a.get_short() == short)
        };
        found.is_some_and(|a| a.get_action().takes_values())
    };
    let mut command = &root;
    let mut i = 1;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            return args;
        };
        if arg == "--" {
            return args;
        }
        if arg.starts_with('-') && arg.len() > 1 {
            let attached = arg.contains('=') || (!arg.starts_with("--") && arg.len() > 2);
            let name = arg.split('=').next().unwrap_or(arg);
            if !attached && takes_value(command, name) {
                i += 1;
            }
            i += 1;
            continue;
        }
        match command.find_subcommand(arg) {
            Some(sub) if command.get_name() == "keel" || command.get_name() == "container" => {
                command = sub;
                i += 1;
                continue;
            }
            _ => {}
        }
        if matches!(command.get_name(), "run" | "create" | "exec") {
            let mut out = args;
            out.insert(i + 1, "--".into());
            return out;
        }
        return args;
    }
    args
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let ctx = containers::Context {
        root: cli.root.clone(),
        runroot: cli.runroot.clone(),
        cgroup_parent: cli.cgroup_parent.clone(),
    };
    let root = cli.root;
    match cli.command {
        Command::ContainerMonitor(args) => Ok(containers::monitor(&ctx, &args)),
        Command::Run(args) | Command::Container(ContainerCommand::Run(args)) => {
            containers::run(&ctx, &args)
        }
        Command::Create(args) | Command::Container(ContainerCommand::Create(args)) => {
            containers::create(&ctx, &args)
        }
        Command::Start(args) | Command::Container(ContainerCommand::Start(args)) => {
            containers::start(&ctx, &args)
        }
        Command::Stop(args) | Command::Container(ContainerCommand::Stop(args)) => {
            containers::stop(&ctx, &args)
        }
        Command::Restart(args) | Command::Container(ContainerCommand::Restart(args)) => {
            containers::restart(&ctx, &args)
        }
        Command::Kill(args) | Command::Container(ContainerCommand::Kill(args)) => {
            containers::kill(&ctx, &args)
        }
        Command::Rm(args) | Command::Container(ContainerCommand::Rm(args)) => {
            containers::rm(&ctx, &args)
        }
        Command::Ps(args) | Command::Container(ContainerCommand::Ls(args)) => {
            containers::ps(&ctx, &args)
        }
        Command::Logs(args) | Command::Container(ContainerCommand::Logs(args)) => {
            containers::logs(&ctx, &args)
        }
        Command::Exec(args) | Command::Container(ContainerCommand::Exec(args)) => {
            containers::exec(&ctx, &args)
        }
        Command::Inspect(args) => inspect_any(&ctx, &args),
        Command::Container(ContainerCommand::Inspect(args)) => containers::inspect(&ctx, &args),
        Command::Wait(args) | Command::Container(ContainerCommand::Wait(args)) => {
            containers::wait(&ctx, &args)
        }
        Command::Attach(args) | Command::Container(ContainerCommand::Attach(args)) => {
            containers::attach(&ctx, &args)
        }
        Command::Rename(args) | Command::Container(ContainerCommand::Rename(args)) => {
            containers::rename(&ctx, &args)
        }
        Command::Pause(args) | Command::Container(ContainerCommand::Pause(args)) => {
            containers::pause(&ctx, &args)
        }
        Command::Unpause(args) | Command::Container(ContainerCommand::Unpause(args)) => {
            containers::unpause(&ctx, &args)
        }
        Command::Top(args) | Command::Container(ContainerCommand::Top(args)) => {
            containers::top(&ctx, &args)
        }
        Command::Container(ContainerCommand::Prune(args)) => containers::prune(&ctx, &args),
        Command::Stats(args) | Command::Container(ContainerCommand::Stats(args)) => {
            stats::stats(&ctx, &args)
        }
        Command::Update(args) | Command::Container(ContainerCommand::Update(args)) => {
            stats::update(&ctx, &args)
        }
        Command::Port(args) | Command::Container(ContainerCommand::Port(args)) => {
            stats::port(&ctx, &args)
        }
        Command::Diff(args) | Command::Container(ContainerCommand::Diff(args)) => {
            files::diff(&ctx, &args)
        }
        Command::Export(args) | Command::Container(ContainerCommand::Export(args)) => {
            files::export(&ctx, &args)
        }
        Command::Cp(args) | Command::Container(ContainerCommand::Cp(args)) => {
            files::cp(&ctx, &args)
        }
        Command::Commit(args) | Command::Container(ContainerCommand::Commit(args)) => {
            files::commit(&ctx, &args)
        }
        Command::Events(args) | Command::System(SystemCommand::Events(args)) => {
            events::run(&ctx, &args)
        }
        Command::Volume(command) => volumes::run(&ctx, &command),
        Command::Network(command) => networks::run(&ctx, &command),
        Command::Build(args) | Command::Image(ImageCommand::Build(args)) => {
            build::build(&ctx, &args)
        }
        Command::Builder(command) => build::builder(&ctx, &command),
        Command::Version(args) => {
            if let Some(format) = &args.format {
                let side = serde_json::json!({
                    "Version": keel_runtime::VERSION,
                    "Os": std::env::consts::OS,
                    "Arch": keel_image::manifest::Platform::current().architecture,
                    "OCIRuntimeSpec": keel_runtime::OCI_VERSION,
                });
                let value = serde_json::json!({"Client": side, "Server": side});
                template::print_values(std::slice::from_ref(&value), Some(format))?;
                return Ok(0);
            }
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
        Command::History(args) | Command::Image(ImageCommand::History(args)) => {
            images::history(&images::open(&root)?, &args).map(|_| 0)
        }
        Command::Image(ImageCommand::Prune(args)) => {
            system::prune(&ctx, &mut images::open(&root)?, &args)
        }
        Command::Login(args) => login::login(&root, &args),
        Command::Logout(args) => login::logout(&args),
        Command::Registry(command) => registry::run(&command),
        Command::Vm(command) => vm::run(&ctx, &command),
        Command::Compose(args) => compose::run(&ctx, &args),
        Command::System(SystemCommand::Prune(args)) => system::system_prune(&ctx, &args),
        Command::Info(args) | Command::System(SystemCommand::Info(args)) => {
            system::info(&ctx, &args)
        }
        Command::System(SystemCommand::Service(args)) => service::run(&ctx, &args),
        Command::System(SystemCommand::Df(args)) => {
            system::df(&ctx, &images::open(&root)?, &args).map(|_| 0)
        }
    }
}

#[cfg(test)]
mod cli_tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
