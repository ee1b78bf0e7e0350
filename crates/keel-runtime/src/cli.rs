//! The `keel-runtime` command line: runc's, flag for flag, as containerd's
//! shim (go-runc), dockerd and podman/conmon call it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::container::{self, CreateOptions};
use crate::error::{Error, Result};
use crate::exec::{self, ExecOptions};
use crate::logging::{Format, Logger};
use crate::spec::{Process, Resources};
use crate::state::{self, OciState};

const DEFAULT_ROOT: &str = "/run/keel-runtime";

#[derive(Parser, Debug)]
#[command(
    name = "keel-runtime",
    about = "keel's OCI runtime: creates and runs containers from OCI bundles (runc-compatible)",
    long_about = "keel-runtime runs containers from OCI runtime bundles (a directory with a \
config.json and a root filesystem). It takes the same commands and flags as runc, so \
containerd, dockerd and podman can use it in runc's place.",
    disable_version_flag = true
)]
pub struct Cli {
    /// Directory for the state of containers
    #[arg(long, global = true, default_value = DEFAULT_ROOT, env = "KEEL_RUNTIME_ROOT")]
    pub root: PathBuf,
    /// Also write errors (and with --debug, debug lines) to this file
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Format of the --log file
    #[arg(long = "log-format", global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log debug lines
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd for cgroups (not supported: keel manages cgroupfs itself)
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto (only root is supported for now)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub rootless: Option<String>,
    /// Accepted for compatibility with runc (checkpointing is not supported)
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    /// Print the version
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container: set it up and leave it waiting for `start`
    Create(CreateArgs),
    /// Start a created container: run its process
    Start { id: String },
    /// Create and start a container, and in the foreground wait for it
    Run(RunArgs),
    /// Print the state of a container as JSON
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's init or, with --all, to all its processes
    Kill {
        /// Send the signal to every process in the container
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a container and everything the runtime made for it
    Delete {
        /// Kill a running container first; succeed if it does not exist
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a new process inside a running container
    Exec(ExecArgs),
    /// List the processes of a container
    Ps {
        #[arg(short, long, value_enum, default_value = "table")]
        format: OutputFormat,
        id: String,
        /// Options passed to ps(1) (default -ef)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List the containers under --root
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Print only the container ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze all processes of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Change the resource limits of a container
    Update(UpdateArgs),
    /// Print container events: resource stats, OOM kills
    Events {
        /// Print one stats event and exit
        #[arg(long)]
        stats: bool,
        /// Interval between stats events (e.g. 5s, 500ms)
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// Print the features this runtime supports, as JSON
    Features,
    /// Write a starting config.json for a bundle
    Spec {
        /// Bundle directory to write config.json into
        #[arg(short, long)]
        bundle: Option<PathBuf>,
        /// A config for running without root
        #[arg(long)]
        rootless: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory (default: the current directory)
    #[arg(short, long, default_value = "")]
    pub bundle: PathBuf,
    /// Unix socket to receive the pty master of a terminal container
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Not supported; accepted so callers that pass it get a clear error
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    /// Write the init process's pid to this file
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Use chroot instead of pivot_root (for a rootfs on ramfs)
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (3, 4, ...) into the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Ignored (go-runc may pass it)
    #[arg(short = 'd', long, hide = true)]
    pub detach: bool,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Keep the container's state after it exits
    #[arg(long)]
    pub keep: bool,
    /// Do not become a subreaper for the container's orphans
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Unix socket to receive the pty master when --tty is set
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pidfd-socket", hide = true)]
    pub pidfd_socket: Option<PathBuf>,
    /// Working directory of the process
    #[arg(long)]
    pub cwd: Option<String>,
    /// Environment variables (KEY=VALUE), added to the container's
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// User as UID[:GID]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// A process.json (runtime-spec process object) to run instead of args
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once the process has started
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid to this file
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Accepted for compatibility (no SELinux here)
    #[arg(long = "process-label", hide = true)]
    pub process_label: Option<String>,
    /// Accepted for compatibility (no AppArmor here)
    #[arg(long, hide = true)]
    pub apparmor: Option<String>,
    /// Set no_new_privs for the process
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Add a capability to the process's sets
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Pass this many extra fds into the process
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Not supported: run in a sub-cgroup
    #[arg(long, hide = true)]
    pub cgroup: Vec<String>,
    /// Allow exec in a paused container
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    pub id: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Resources as LinuxResources JSON, from a file or - for stdin
    #[arg(short, long)]
    pub resources: Option<String>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    #[arg(long = "cpu-rt-runtime")]
    pub cpu_rt_runtime: Option<i64>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a unit: 512k, 100m, 2g; -1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    #[arg(long = "kernel-memory", hide = true)]
    pub kernel_memory: Option<String>,
    #[arg(long = "kernel-memory-tcp", hide = true)]
    pub kernel_memory_tcp: Option<String>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    #[arg(long = "l3-cache-schema", hide = true)]
    pub l3_cache_schema: Option<String>,
    #[arg(long = "mem-bw-schema", hide = true)]
    pub mem_bw_schema: Option<String>,
    pub id: String,
}

/// Entry point of the binary.
pub fn main() {
    run_with_args(std::env::args().collect())
}

/// Runs the runtime CLI on `args` (argv\[0\] first) and exits.
pub fn run_with_args(args: Vec<String>) -> ! {
    let cli = match Cli::try_parse_from(normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let format = match cli.log_format {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
    };
    let logger = Logger::new(cli.log.as_deref(), format);
    if cli.debug {
        logger.install_debug();
    }
    if matches!(
        cli.command,
        Some(Command::Create(_) | Command::Run(_) | Command::Exec(_))
    ) && let Err(e) = crate::sealed::reexec()
    {
        logger.error(&e.to_string());
        std::process::exit(1);
    }
    match dispatch(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            logger.error(&e.to_string());
            std::process::exit(1);
        }
    }
}

/// go-runc and urfave/cli accept `-flag` for long flags (go-runc sends
/// `-no-subreaper`); clap does not. Known long flags written with one dash
/// are rewritten, except in `exec` and `ps`, whose trailing arguments belong
/// to the container's command.
fn normalize_args(args: Vec<String>) -> Vec<String> {
    const LONG: &[&str] = &[
        "-root",
        "-log",
        "-log-format",
        "-debug",
        "-systemd-cgroup",
        "-no-subreaper",
        "-no-pivot",
        "-bundle",
        "-pid-file",
        "-console-socket",
        "-detach",
        "-keep",
        "-force",
        "-no-new-keyring",
        "-preserve-fds",
    ];
    let mut out = Vec::with_capacity(args.len());
    let mut trailing = false;
    for arg in args {
        if arg == "exec" || arg == "ps" {
            trailing = true;
        }
        let name = arg.split('=').next().unwrap_or("");
        if !trailing && LONG.contains(&name) {
            out.push(format!("-{arg}"));
        } else {
            out.push(arg);
        }
    }
    out
}

fn dispatch(cli: Cli) -> Result<i32> {
    if cli.version {
        print!("{}", version_text());
        return Ok(0);
    }
    if cli.systemd_cgroup {
        return Err(Error::msg(
            "--systemd-cgroup is not supported: keel-runtime manages cgroups through cgroupfs; drop the flag (containerd: SystemdCgroup = false)",
        ));
    }
    if matches!(cli.rootless.as_deref(), Some("true")) && !nix::unistd::geteuid().is_root() {
        return Err(Error::msg(
            "rootless mode is not supported yet: run keel-runtime as root",
        ));
    }
    let root = cli.root.as_path();
    let Some(command) = cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return Ok(0);
    };
    match command {
        Command::Create(args) => {
            container::create(root, &create_options(&args)?)?;
            Ok(0)
        }
        Command::Start { id } => container::start(root, &id).map(|_| 0),
        Command::Run(args) => {
            let opts = create_options(&args.create)?;
            container::run(
                root,
                &opts,
                args.create.detach,
                args.keep,
                !args.no_subreaper,
            )
        }
        Command::State { id } => {
            let st = container::state(root, &id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&st).expect("state serializes")
            );
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let signal = container::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill(root, &id, signal, all).map(|_| 0)
        }
        Command::Delete { force, id } => container::delete(root, &id, force).map(|_| 0),
        Command::Exec(args) => exec::exec(root, &exec_options(root, args)?),
        Command::Ps {
            format,
            id,
            ps_args,
        } => ps(root, &id, format, &ps_args),
        Command::List { format, quiet } => list(root, format, quiet),
        Command::Pause { id } => container::pause(root, &id).map(|_| 0),
        Command::Resume { id } => container::resume(root, &id).map(|_| 0),
        Command::Update(args) => {
            let resources = update_resources(&args)?;
            container::update(root, &args.id, &resources).map(|_| 0)
        }
        Command::Events {
            stats,
            interval,
            id,
        } => events(root, &id, stats, &interval),
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::features::features())
                    .expect("features serialize")
            );
            Ok(0)
        }
        Command::Spec { bundle, rootless } => {
            let dir = bundle.unwrap_or_else(|| PathBuf::from("."));
            let path = dir.join("config.json");
            if path.exists() {
                return Err(Error::msg("File config.json exists. Remove it first."));
            }
            let spec = crate::features::default_spec(rootless);
            let text = serde_json::to_string_pretty(&spec).expect("spec serializes");
            std::fs::write(&path, text + "\n")
                .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
            Ok(0)
        }
    }
}

pub fn version_text() -> String {
    format!(
        "keel-runtime version {}\ncommit: {}\nspec: {}\n",
        crate::VERSION,
        option_env!("KEEL_COMMIT").unwrap_or("unknown"),
        crate::OCI_VERSION
    )
}

fn create_options(args: &CreateArgs) -> Result<CreateOptions> {
    if args.pidfd_socket.is_some() {
        return Err(Error::msg("--pidfd-socket is not supported yet"));
    }
    Ok(CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.as_ref().map(|p| absolute(p)),
        console_socket: args.console_socket.clone(),
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: args.preserve_fds,
        foreground: false,
    })
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

fn exec_options(root: &Path, args: ExecArgs) -> Result<ExecOptions> {
    if args.pidfd_socket.is_some() {
        return Err(Error::msg("--pidfd-socket is not supported yet"));
    }
    if !args.cgroup.is_empty() {
        return Err(Error::msg("exec --cgroup is not supported yet"));
    }
    let process = match &args.process {
        Some(path) => {
            let data = if path.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map_err(|e| Error::io("read process from stdin", e))?;
                buf
            } else {
                std::fs::read(path)
                    .map_err(|e| Error::io(format!("read process file {}", path.display()), e))?
            };
            let process: Process = serde_json::from_slice(&data)
                .map_err(|e| Error::msg(format!("invalid process file {}: {e}", path.display())))?;
            for name in process.capabilities.iter().flat_map(|c| {
                [
                    &c.bounding,
                    &c.effective,
                    &c.inheritable,
                    &c.permitted,
                    &c.ambient,
                ]
                .into_iter()
                .flatten()
                .flatten()
            }) {
                crate::capabilities::parse(name)?;
            }
            process
        }
        None => {
            if args.command.is_empty() {
                return Err(Error::msg(
                    "exec: no command given (pass COMMAND or --process)",
                ));
            }
            // Based on the container's own process, as runc does.
            let dir = state::ContainerDir::new(root, &args.id)?;
            dir.load()?;
            let spec = dir.load_config()?;
            let mut process = spec.process().clone();
            process.args = args.command.clone();
            process.terminal = args.tty;
            process.env.extend(args.env.iter().cloned());
            if let Some(cwd) = &args.cwd {
                process.cwd = cwd.clone();
            }
            if let Some(user) = &args.user {
                let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
                process.user.uid = uid
                    .parse()
                    .map_err(|_| Error::msg(format!("invalid --user {user:?}: want UID[:GID]")))?;
                if !gid.is_empty() {
                    process.user.gid = gid.parse().map_err(|_| {
                        Error::msg(format!("invalid --user {user:?}: want UID[:GID]"))
                    })?;
                }
            }
            if !args.additional_gids.is_empty() {
                process.user.additional_gids = args.additional_gids.clone();
            }
            if args.no_new_privs {
                process.no_new_privileges = true;
            }
            if !args.cap.is_empty() {
                let caps = process.capabilities.get_or_insert_with(Default::default);
                for cap in &args.cap {
                    crate::capabilities::parse(cap)?;
                    for set in [&mut caps.bounding, &mut caps.effective, &mut caps.permitted] {
                        set.get_or_insert_with(Vec::new).push(cap.clone());
                    }
                }
            }
            process
        }
    };
    Ok(ExecOptions {
        id: args.id,
        process,
        console_socket: args.console_socket,
        pid_file: args.pid_file.as_ref().map(|p| absolute(p)),
        detach: args.detach,
        preserve_fds: args.preserve_fds,
        ignore_paused: args.ignore_paused,
    })
}

/// Bytes with docker's units (`512k`, `100m`, `1g`, `-1`).
pub fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let value: f64 = digits
        .parse()
        .map_err(|_| Error::msg(format!("invalid size {text:?}")))?;
    if value < 0.0 {
        return Err(Error::msg(format!("invalid size {text:?}")));
    }
    Ok((value * mult as f64) as i64)
}

fn update_resources(args: &UpdateArgs) -> Result<Resources> {
    let mut r = match &args.resources {
        Some(source) => {
            let data = if source == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map_err(|e| Error::io("read resources from stdin", e))?;
                buf
            } else {
                std::fs::read(source).map_err(|e| Error::io(format!("read {source}"), e))?
            };
            serde_json::from_slice::<Resources>(&data)
                .map_err(|e| Error::msg(format!("invalid resources JSON: {e}")))?
        }
        None => Resources::default(),
    };
    if args.kernel_memory.is_some()
        || args.kernel_memory_tcp.is_some()
        || args.l3_cache_schema.is_some()
        || args.mem_bw_schema.is_some()
    {
        return Err(Error::msg(
            "kernel memory and Intel RDT limits are not supported",
        ));
    }
    if let Some(w) = args.blkio_weight {
        r.block_io.get_or_insert_with(Default::default).weight = Some(w);
    }
    let cpu_given = args.cpu_period.is_some()
        || args.cpu_quota.is_some()
        || args.cpu_rt_period.is_some()
        || args.cpu_rt_runtime.is_some()
        || args.cpu_share.is_some()
        || args.cpuset_cpus.is_some()
        || args.cpuset_mems.is_some();
    if cpu_given {
        let cpu = r.cpu.get_or_insert_with(Default::default);
        cpu.period = args.cpu_period.or(cpu.period);
        cpu.quota = args.cpu_quota.or(cpu.quota);
        cpu.realtime_period = args.cpu_rt_period.or(cpu.realtime_period);
        cpu.realtime_runtime = args.cpu_rt_runtime.or(cpu.realtime_runtime);
        cpu.shares = args.cpu_share.or(cpu.shares);
        cpu.cpus = args.cpuset_cpus.clone().or(cpu.cpus.take());
        cpu.mems = args.cpuset_mems.clone().or(cpu.mems.take());
    }
    if args.memory.is_some() || args.memory_reservation.is_some() || args.memory_swap.is_some() {
        let memory = r.memory.get_or_insert_with(Default::default);
        if let Some(m) = &args.memory {
            memory.limit = Some(parse_bytes(m)?);
        }
        if let Some(m) = &args.memory_reservation {
            memory.reservation = Some(parse_bytes(m)?);
        }
        if let Some(m) = &args.memory_swap {
            memory.swap = Some(parse_bytes(m)?);
        }
    }
    if let Some(p) = args.pids_limit {
        r.pids = Some(crate::spec::Pids { limit: p });
    }
    Ok(r)
}

fn list(root: &Path, format: OutputFormat, quiet: bool) -> Result<i32> {
    let containers = state::list(root)?;
    let states: Vec<OciState> = containers
        .iter()
        .map(|(dir, st)| OciState::new(st, dir.status(st)))
        .collect();
    let mut out = std::io::stdout().lock();
    if quiet {
        for s in &states {
            let _ = writeln!(out, "{}", s.id);
        }
    } else if format == OutputFormat::Json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&states).expect("states serialize")
        );
    } else {
        let rows: Vec<[String; 6]> = std::iter::once(
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from),
        )
        .chain(states.iter().map(|s| {
            [
                s.id.clone(),
                s.pid.to_string(),
                s.status.clone(),
                s.bundle.clone(),
                s.created.clone(),
                s.owner.clone(),
            ]
        }))
        .collect();
        let _ = out.write_all(table(&rows).as_bytes());
    }
    Ok(0)
}

/// Columns padded like Go's tabwriter (minwidth 12, padding 1).
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}", width = widths[i].max(11) + 1));
            }
        }
        out.push('\n');
    }
    out
}

fn ps(root: &Path, id: &str, format: OutputFormat, ps_args: &[String]) -> Result<i32> {
    let pids = container::pids(root, id)?;
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string(&pids).expect("pids serialize"));
        return Ok(0);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::msg(format!("run ps: {e}")))?;
    if !output.status.success() {
        return Err(Error::msg(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let pid_col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| Error::msg("couldn't find PID field in ps output"))?;
    let mut out = String::from(header);
    out.push('\n');
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(0)
}

/// Go-style durations: `5s`, `500ms`, `1m`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| Error::msg(format!("invalid duration {text:?}")))?;
    let secs = match unit {
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(Error::msg(format!("invalid duration {text:?}"))),
    };
    if secs <= 0.0 {
        return Err(Error::msg(format!(
            "duration must be greater than 0: {text:?}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn events(root: &Path, id: &str, stats_only: bool, interval: &str) -> Result<i32> {
    let dir = state::ContainerDir::new(root, id)?;
    let st = dir.load()?;
    let interval = parse_duration(interval)?;
    let event = |kind: &str, data: serde_json::Value| {
        serde_json::json!({"type": kind, "id": id, "data": data}).to_string()
    };
    if stats_only {
        if dir.status(&st) == state::Status::Stopped {
            return Err(Error::NotRunning);
        }
        let stats = st.cgroup.stats()?;
        println!(
            "{}",
            event(
                "stats",
                serde_json::to_value(stats).expect("stats serialize")
            )
        );
        return Ok(0);
    }
    let mut ooms = st.cgroup.oom_kill_count();
    let mut next_stats = std::time::Instant::now();
    loop {
        if dir.status(&st) == state::Status::Stopped {
            return Ok(0);
        }
        let now_ooms = st.cgroup.oom_kill_count();
        if now_ooms > ooms {
            ooms = now_ooms;
            println!("{}", event("oom", serde_json::Value::Null));
        }
        if std::time::Instant::now() >= next_stats {
            if let Ok(stats) = st.cgroup.stats() {
                println!(
                    "{}",
                    event(
                        "stats",
                        serde_json::to_value(stats).expect("stats serialize")
                    )
                );
            }
            next_stats += interval;
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(interval.min(std::time::Duration::from_millis(200)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_style_single_dash_flags_are_accepted() {
        let args = normalize_args(
            ["keel-runtime", "-root", "/x", "run", "-bundle", "/b", "id"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let cli = Cli::try_parse_from(args).unwrap();
        assert_eq!(cli.root, PathBuf::from("/x"));
        match cli.command {
            Some(Command::Run(r)) => assert_eq!(r.create.bundle, PathBuf::from("/b")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exec_keeps_the_commands_own_flags() {
        let cli = Cli::try_parse_from([
            "keel-runtime",
            "exec",
            "--tty",
            "c1",
            "sh",
            "-c",
            "echo -n hi",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Exec(e)) => {
                assert!(e.tty);
                assert_eq!(e.command, ["sh", "-c", "echo -n hi"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_with_equals_as_podman_passes_them() {
        let cli = Cli::try_parse_from([
            "keel-runtime",
            "--log-format=json",
            "--log=/tmp/l",
            "kill",
            "c1",
            "9",
        ])
        .unwrap();
        assert!(matches!(cli.log_format, LogFormat::Json));
        assert!(matches!(cli.command, Some(Command::Kill { .. })));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("512k").unwrap(), 512 * 1024);
        assert_eq!(parse_bytes("100M").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(
            parse_duration("500ms").unwrap(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("5s").unwrap(),
            std::time::Duration::from_secs(5)
        );
        assert!(parse_duration("0s").is_err());
    }
}
