//! The container commands, with docker's flags, output and exit codes:
//! `run`, `create`, `start`, `stop`, `restart`, `kill`, `rm`, `ps`, `logs`,
//! `exec`, `inspect`, `wait`, `attach`, `rename`, `pause`, `unpause`,
//! `top`, `container prune`; and the hidden `container-monitor` that holds
//! a running container.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use keel_engine::attach::Hello;
use keel_engine::db::{Container, Status};
use keel_engine::paths::Layout;
use keel_engine::spec::{self, ContainerSpec, NetworkMode, SeccompChoice};
use keel_engine::{Engine, Options};

use crate::attach_client::{self, Ended, Session};

/// Where keel keeps things, from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub cgroup_parent: String,
}

impl Context {
    pub fn engine(&self) -> Result<Engine> {
        let options = Options {
            cgroup_parent: self.cgroup_parent.clone(),
            init_binary: helper_binary("KEEL_INIT", "keel-init"),
            monitor_binary: helper_binary("KEEL_MONITOR", "keel-monitor"),
        };
        Engine::open(Layout::new(&self.root, &self.runroot), options)
            .with_context(|| format!("open keel's state at {}", self.root.display()))
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

// ---------------------------------------------------------------------------
// create / run flags

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Print help (-h is --hostname, as docker)
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Set environment variables (KEY=VALUE, or KEY to take it from here)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount a volume: [SOURCE:]TARGET[:ro|rw|nocopy]
    #[arg(short, long = "volume", value_name = "VOLUME")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=...,target=...[,readonly]
    #[arg(long = "mount", value_name = "MOUNT")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory: PATH[:size=64m,mode=1777]
    #[arg(long = "tmpfs", value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Add additional groups to join
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Set meta data on a container (KEY=VALUE)
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Memory limit (e.g. 512m)
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 for unlimited
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Number of CPUs (e.g. 1.5)
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (-1 for unlimited)
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// Ulimit options (e.g. nofile=1024:2048)
    #[arg(long = "ulimit", value_name = "ULIMIT")]
    pub ulimit: Vec<String>,
    /// Add Linux capabilities
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Security options: seccomp=unconfined|PROFILE.json, no-new-privileges
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opt: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u32>,
    /// Connect to a network: bridge (default), NAME, host, none, container:NAME|ID
    #[arg(long, alias = "net", value_name = "NETWORK")]
    pub network: Vec<String>,
    /// Add a network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g. 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address (e.g. 2001:db8::33)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Publish a container's port(s) to the host ([IP:][HOSTPORT:]CONTAINERPORT[/PROTO])
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Size of /dev/shm (e.g. 64m)
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Add a host device to the container
    #[arg(long = "device", value_name = "DEVICE")]
    pub device: Vec<String>,
    /// Sysctl options
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Log driver options: max-size=10m, max-file=3
    #[arg(long = "log-opt", value_name = "OPTION")]
    pub log_opt: Vec<String>,
    /// Log driver (json-file only)
    #[arg(long = "log-driver", default_value = "json-file")]
    pub log_driver: String,
    /// Pull image before running: missing, always, never
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Platform of the image to pull (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    /// Command to run when checking health
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between running the check (e.g. 30s)
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Start period for the container to initialize before starting health-retries countdown
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// The image
    pub image: String,
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short, long)]
    pub detach: bool,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", default_value = "ctrl-p,ctrl-q")]
    pub detach_keys: String,
    #[command(flatten)]
    pub create: CreateArgs,
}

impl CreateArgs {
    /// `--network` (several for several networks), `--network-alias`,
    /// `--ip`, `--ip6` (on the first network).
    fn networks(&self) -> Result<(NetworkMode, Vec<spec::NetworkAttachment>)> {
        let names: Vec<&str> = if self.network.is_empty() {
            vec!["bridge"]
        } else {
            self.network.iter().map(String::as_str).collect()
        };
        let special = |n: &str| n == "host" || n == "none" || n.starts_with("container:");
        if names.len() > 1 && names.iter().any(|n| special(n)) {
            bail!(
                "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
            );
        }
        let mode = match names[0] {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => match other.strip_prefix("container:") {
                Some("") => bail!("--network container: needs a container's name or id"),
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Bridge,
            },
        };
        if mode != NetworkMode::Bridge {
            if !self.network_alias.is_empty() || self.ip.is_some() || self.ip6.is_some() {
                bail!("--network-alias, --ip and --ip6 need a bridge network");
            }
            if !self.publish.is_empty() || self.publish_all {
                eprintln!(
                    "WARNING: Published ports are discarded when using host, none or container network mode"
                );
            }
            return Ok((mode, Vec::new()));
        }
        let mut networks: Vec<spec::NetworkAttachment> = names
            .iter()
            .map(|n| spec::NetworkAttachment {
                name: if *n == "default" {
                    "bridge".into()
                } else {
                    n.to_string()
                },
                ..Default::default()
            })
            .collect();
        let first = &mut networks[0];
        first.aliases = self.network_alias.clone();
        first.ipv4 = self
            .ip
            .as_deref()
            .map(|ip| crate::networks::parse_ip(ip, true))
            .transpose()?;
        first.ipv6 = self
            .ip6
            .as_deref()
            .map(|ip| crate::networks::parse_ip(ip, false))
            .transpose()?;
        Ok((mode, networks))
    }

    /// The request, every flag value parsed (by keel-engine's parsers).
    pub fn to_spec(&self) -> Result<ContainerSpec> {
        let lookup = |key: &str| std::env::var(key).ok();
        let mut env = Vec::new();
        for file in &self.env_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("open {}", file.display()))?;
            env.extend(spec::parse_env_file(&text, lookup)?);
        }
        for entry in &self.env {
            if let Some(entry) = spec::resolve_env(entry, lookup)? {
                env.push(entry);
            }
        }
        let mut mounts = Vec::new();
        for v in &self.volume {
            let mut mount = spec::parse_volume_flag(v)?;
            if mount.kind == spec::MountKind::Bind && mount.source.starts_with('.') {
                mount.source = std::path::absolute(&mount.source)?.display().to_string();
            }
            mounts.push(mount);
        }
        for m in &self.mount {
            mounts.push(spec::parse_mount_flag(m)?);
        }
        for t in &self.tmpfs {
            mounts.push(spec::parse_tmpfs_flag(t)?);
        }
        let mut labels = BTreeMap::new();
        for label in &self.label {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            labels.insert(key.to_string(), value.to_string());
        }
        let mut seccomp = SeccompChoice::Default;
        let mut no_new_privileges = false;
        for option in &self.security_opt {
            let (key, value) = option
                .split_once(['=', ':'])
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((option, None));
            match (key, value) {
                ("seccomp", Some("unconfined")) => seccomp = SeccompChoice::Unconfined,
                ("seccomp", Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("opening seccomp profile ({path}) failed"))?;
                    seccomp = SeccompChoice::Profile(text);
                }
                ("no-new-privileges", None | Some("true")) => no_new_privileges = true,
                ("no-new-privileges", Some("false")) => no_new_privileges = false,
                ("apparmor" | "label", _) => {}
                _ => bail!("invalid --security-opt: {option:?}"),
            }
        }
        let (network, networks) = self.networks()?;
        let mut log = spec::LogOptions::default();
        if self.log_driver != "json-file" {
            bail!(
                "log driver {:?} is not supported: keel writes json-file logs",
                self.log_driver
            );
        }
        for option in &self.log_opt {
            match option.split_once('=') {
                Some(("max-size", "-1")) => log.max_size = Some(0),
                Some(("max-size", v)) => log.max_size = Some(spec::parse_size(v)?),
                Some(("max-file", v)) => {
                    log.max_file = Some(
                        v.parse()
                            .with_context(|| format!("invalid max-file: {v}"))?,
                    )
                }
                _ => bail!("unknown log opt '{option}' for json-file log driver"),
            }
        }
        let mut sysctls = BTreeMap::new();
        for s in &self.sysctl {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("invalid sysctl: {s:?} (KEY=VALUE)"))?;
            sysctls.insert(k.to_string(), v.to_string());
        }
        let health = if self.no_healthcheck {
            Some(spec::HealthSpec {
                test: vec!["NONE".into()],
                interval_ms: None,
                timeout_ms: None,
                start_period_ms: None,
                retries: None,
            })
        } else if self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_start_period.is_some()
            || self.health_retries.is_some()
        {
            Some(spec::HealthSpec {
                test: self
                    .health_cmd
                    .as_ref()
                    .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
                    .unwrap_or_default(),
                interval_ms: self
                    .health_interval
                    .as_deref()
                    .map(spec::parse_duration_ms)
                    .transpose()?,
                timeout_ms: self
                    .health_timeout
                    .as_deref()
                    .map(spec::parse_duration_ms)
                    .transpose()?,
                start_period_ms: self
                    .health_start_period
                    .as_deref()
                    .map(spec::parse_duration_ms)
                    .transpose()?,
                retries: self.health_retries,
            })
        } else {
            None
        };
        if self.rm && self.restart != "no" {
            bail!("Conflicting options: --restart and --rm");
        }
        Ok(ContainerSpec {
            image: self.image.clone(),
            name: self.name.clone(),
            command: self.command.clone(),
            entrypoint: self.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    Vec::new()
                } else {
                    vec![e.clone()]
                }
            }),
            env,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            group_add: self.group_add.clone(),
            hostname: self.hostname.clone(),
            labels,
            tty: self.tty,
            interactive: self.interactive,
            auto_remove: self.rm,
            mounts,
            resources: spec::ResourceSpec {
                memory: self
                    .memory
                    .as_deref()
                    .map(spec::parse_size)
                    .transpose()?
                    .map(|v| v as i64),
                memory_swap: self
                    .memory_swap
                    .as_deref()
                    .map(spec::parse_swap)
                    .transpose()?,
                memory_reservation: self
                    .memory_reservation
                    .as_deref()
                    .map(spec::parse_size)
                    .transpose()?
                    .map(|v| v as i64),
                nano_cpus: self.cpus.as_deref().map(spec::parse_cpus).transpose()?,
                cpu_shares: self.cpu_shares,
                cpuset_cpus: self.cpuset_cpus.clone(),
                pids_limit: self.pids_limit,
                ulimits: self
                    .ulimit
                    .iter()
                    .map(|u| spec::parse_ulimit(u))
                    .collect::<keel_engine::Result<_>>()?,
                shm_size: self.shm_size.as_deref().map(spec::parse_size).transpose()?,
            },
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            seccomp,
            no_new_privileges,
            read_only: self.read_only,
            init: self.init,
            restart: spec::parse_restart(&self.restart)?,
            stop_signal: self.stop_signal.clone(),
            stop_timeout: self.stop_timeout,
            health,
            network,
            networks,
            publish: self
                .publish
                .iter()
                .map(|p| spec::parse_publish(p))
                .collect::<keel_engine::Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect(),
            publish_all: self.publish_all,
            extra_hosts: self
                .add_host
                .iter()
                .map(|h| spec::parse_add_host(h))
                .collect::<keel_engine::Result<_>>()?,
            dns: self.dns.clone(),
            dns_search: self.dns_search.clone(),
            devices: self
                .device
                .iter()
                .map(|d| spec::parse_device(d))
                .collect::<keel_engine::Result<_>>()?,
            sysctls,
            log,
        })
    }
}

/// Makes sure the image is in the store, pulling it as `--pull` says,
/// with the pull's lines on stderr (stdout is the container's).
fn ensure_image(ctx: &Context, args: &CreateArgs) -> Result<()> {
    let present = crate::images::open(&ctx.root)?.resolve(&args.image).is_ok();
    let pull = match args.pull.as_str() {
        "missing" => !present,
        "always" => true,
        "never" => {
            if !present {
                bail!("No such image: {}", args.image);
            }
            false
        }
        other => bail!(
            "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
        ),
    };
    if !pull {
        return Ok(());
    }
    if !present {
        let shown = keel_image::reference::Reference::parse(&args.image)
            .map(|r| match r.tag() {
                Some(tag) => format!("{}:{tag}", r.familiar_name()),
                None => r.familiar_name(),
            })
            .unwrap_or_else(|_| args.image.clone());
        eprintln!("Unable to find image '{shown}' locally");
    }
    let pull_args = crate::pull::PullArgs {
        platform: args.platform.clone(),
        quiet: false,
        all_tags: false,
        name: args.image.clone(),
    };
    with_stdout_on_stderr(|| crate::pull::pull(&ctx.root, &pull_args))
}

/// Runs `f` with fd 1 pointing at stderr.
fn with_stdout_on_stderr<T>(f: impl FnOnce() -> T) -> T {
    let _ = std::io::stdout().flush();
    // SAFETY: dup/dup2/close on our own standard fds; restored below.
    unsafe {
        let saved = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        libc::dup2(2, 1);
        let out = f();
        let _ = std::io::stdout().flush();
        if saved >= 0 {
            libc::dup2(saved, 1);
            libc::close(saved);
        }
        out
    }
}

fn create_container(ctx: &Context, args: &CreateArgs) -> Result<(Engine, Container)> {
    let spec = args.to_spec()?;
    ensure_image(ctx, args)?;
    let images = crate::images::open(&ctx.root)?;
    let mut engine = ctx.engine()?;
    let container = engine.create(&images, spec)?;
    Ok((engine, container))
}

pub fn create(ctx: &Context, args: &CreateArgs) -> Result<i32> {
    let (_, container) = create_container(ctx, args)?;
    println!("{}", container.id);
    Ok(0)
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

pub fn run(ctx: &Context, args: &RunArgs) -> Result<i32> {
    let (mut engine, container) = create_container(ctx, &args.create)?;
    if args.detach {
        return match engine.start(&container.id) {
            Ok(_) => {
                println!("{}", container.id);
                Ok(0)
            }
            Err(e) => {
                if container.spec.auto_remove {
                    let _ = engine.remove(&container.id, true, true);
                }
                fail(e)
            }
        };
    }
    let hello = Hello {
        stdin: args.create.interactive,
        stdout: true,
        stderr: true,
        start: true,
    };
    // A signal sent once the container runs goes to it, even one that comes
    // before the session is set up.
    if args.sig_proxy && !args.create.tty {
        attach_client::block_forwarded_signals()?;
    }
    let (container, stream) = match engine.start_attached(&container.id, hello) {
        Ok(started) => started,
        Err(e) => {
            if container.spec.auto_remove {
                let _ = engine.remove(&container.id, true, true);
            }
            return fail(e);
        }
    };
    session(
        &mut engine,
        &container,
        stream,
        args.create.interactive,
        args.sig_proxy && !args.create.tty,
        &args.detach_keys,
    )
}

fn session(
    engine: &mut Engine,
    container: &Container,
    stream: std::os::unix::net::UnixStream,
    stdin: bool,
    sig_proxy: bool,
    detach_keys: &str,
) -> Result<i32> {
    let ended = attach_client::run(Session {
        stream,
        stdin,
        tty: container.spec.tty,
        sig_proxy,
        runtime_root: engine.runtime_root(),
        id: container.id.clone(),
        detach_keys: attach_client::parse_detach_keys(detach_keys)?,
    })?;
    match ended {
        Ended::Exited(code) => Ok(code),
        Ended::Detached => Ok(0),
        Ended::Lost => Ok(engine.wait(&container.id).unwrap_or(125)),
    }
}

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

// ---------------------------------------------------------------------------
// ps

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long)]
    pub last: Option<usize>,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    pub latest: bool,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter: status=, name=, id=, label=, ancestor=, exited=
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format: table (default), json, or a Go template ({{.Names}} ...)
    #[arg(long)]
    pub format: Option<String>,
}

/// docker's HumanDuration: "Less than a second", "5 seconds", "About a
/// minute", "3 hours", "2 weeks".
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let minutes = s / 60;
    let hours = minutes / 60;
    match () {
        _ if s < 1 => "Less than a second".into(),
        _ if s == 1 => "1 second".into(),
        _ if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    }
}

pub fn seconds_since(time: Option<&str>) -> i64 {
    let Some(t) = time.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return 0;
    };
    jiff::Timestamp::now().as_second() - t.as_second()
}

/// docker's STATUS column.
pub fn status_text(container: &Container) -> String {
    let state = &container.state;
    let health = state
        .health
        .as_ref()
        .map(|h| match h.status.as_str() {
            "starting" => " (health: starting)".to_string(),
            other => format!(" ({other})"),
        })
        .unwrap_or_default();
    match state.status {
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}{health}",
            human_duration(seconds_since(state.started_at.as_deref()))
        ),
        Status::Paused => format!(
            "Up {} (Paused)",
            human_duration(seconds_since(state.started_at.as_deref()))
        ),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            state.exit_code,
            human_duration(seconds_since(state.finished_at.as_deref()))
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            human_duration(seconds_since(state.finished_at.as_deref()))
        ),
        Status::Dead => "Dead".into(),
    }
}

fn command_text(container: &Container, no_trunc: bool) -> String {
    let command = container.args.join(" ");
    if no_trunc || command.chars().count() <= 20 {
        format!("\"{command}\"")
    } else {
        format!("\"{}…\"", command.chars().take(19).collect::<String>())
    }
}

fn short_image(container: &Container) -> String {
    keel_image::reference::Reference::parse(&container.image)
        .map(|r| match r.tag() {
            Some("latest") | None if !container.image.contains(':') => r.familiar_name(),
            Some(tag) => format!("{}:{tag}", r.familiar_name()),
            None => r.familiar_name(),
        })
        .unwrap_or_else(|_| container.image.clone())
}

/// One row of `ps` as the JSON object docker's `--format` sees.
fn ps_row(
    container: &Container,
    no_trunc: bool,
    size: Option<(u64, u64)>,
    ports: String,
) -> serde_json::Value {
    let labels = container
        .spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mounts = container
        .mounts
        .iter()
        .map(|m| m.name.clone().unwrap_or_else(|| m.target.clone()))
        .collect::<Vec<_>>()
        .join(",");
    serde_json::json!({
        "ID": if no_trunc { container.id.clone() } else { container.id[..12].to_string() },
        "Image": short_image(container),
        "Command": command_text(container, no_trunc),
        "CreatedAt": container.created,
        "RunningFor": format!("{} ago", human_duration(seconds_since(Some(&container.created)))),
        "Status": status_text(container),
        "State": container.state.status.as_str(),
        "Ports": ports,
        "Names": container.name,
        "Labels": labels,
        "Mounts": mounts,
        "Networks": match &container.spec.network {
            NetworkMode::Bridge => container.spec.networks.iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(","),
            other => other.name(&[]),
        },
        "Size": size.map(|(own, image)| format!(
            "{} (virtual {})",
            crate::images::human_size(own),
            crate::images::human_size(own + image)
        )).unwrap_or_default(),
    })
}

fn matches_filters(container: &Container, filters: &[String]) -> Result<bool> {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for filter in filters {
        let (key, value) = filter
            .split_once('=')
            .with_context(|| format!("bad format of filter (expected name=value): {filter:?}"))?;
        by_key.entry(key).or_default().push(value);
    }
    for (key, values) in by_key {
        let any = |f: &dyn Fn(&str) -> bool| values.iter().any(|v| f(v));
        let ok = match key {
            "status" => {
                for v in &values {
                    if ![
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ]
                    .contains(v)
                    {
                        bail!("invalid filter 'status={v}'");
                    }
                }
                any(&|v| v == container.state.status.as_str())
            }
            "name" => any(&|v| container.name.contains(v.trim_start_matches('/'))),
            "id" => any(&|v| container.id.starts_with(v)),
            "label" => any(&|v| match v.split_once('=') {
                Some((k, val)) => container.spec.labels.get(k).is_some_and(|x| x == val),
                None => container.spec.labels.contains_key(v),
            }),
            "ancestor" => any(&|v| {
                container.image == v
                    || short_image(container) == v
                    || container.image_id.contains(v)
            }),
            "exited" => any(&|v| {
                container.state.status == Status::Exited
                    && v.parse::<i32>()
                        .is_ok_and(|c| c == container.state.exit_code)
            }),
            other => bail!("invalid filter '{other}'"),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Bytes in a container's writable layer (or any tree).
pub fn dir_size(path: &Path) -> u64 {
    keel_engine::copy::tree_size(path)
}

pub fn ps(ctx: &Context, args: &PsArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut containers = engine.list()?;
    let show_all = args.all || args.last.is_some() || args.latest || !args.filter.is_empty();
    if !show_all {
        containers.retain(|c| c.state.status.is_active());
    }
    let mut kept = Vec::new();
    for container in containers {
        if matches_filters(&container, &args.filter)? {
            kept.push(container);
        }
    }
    let limit = if args.latest { Some(1) } else { args.last };
    if let Some(limit) = limit {
        kept.truncate(limit);
    }
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for c in &kept {
            writeln!(
                out,
                "{}",
                if args.no_trunc {
                    &c.id[..]
                } else {
                    &c.id[..12]
                }
            )?;
        }
        return Ok(0);
    }
    // -s: the writable layer, and with the image's size (docker's virtual).
    let image_sizes: BTreeMap<String, u64> = if args.size {
        crate::images::open(&ctx.root)?
            .metadata
            .images()?
            .into_iter()
            .map(|(record, _)| (record.id.to_string(), record.size))
            .collect()
    } else {
        BTreeMap::new()
    };
    let rows: Vec<serde_json::Value> = kept
        .iter()
        .map(|c| {
            let size = args.size.then(|| {
                (
                    dir_size(&engine.layout.diff(&c.id)),
                    image_sizes.get(&c.image_id).copied().unwrap_or(0),
                )
            });
            let endpoints =
                keel_engine::network::endpoints_of(&mut engine.db, c).unwrap_or_default();
            ps_row(
                c,
                args.no_trunc,
                size,
                crate::networks::ports_text(&endpoints),
            )
        })
        .collect();
    let listed = crate::template::render_list(
        &rows,
        args.format.as_deref(),
        &[
            ("ID", "CONTAINER ID"),
            ("RunningFor", "CREATED"),
            ("CreatedAt", "CREATED AT"),
        ],
    )?;
    match listed {
        Some(text) => out.write_all(text.as_bytes())?,
        None => {
            let mut table = vec![
                [
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ]
                .map(String::from)
                .to_vec(),
            ];
            if args.size {
                table[0].push("SIZE".into());
            }
            for row in &rows {
                let cell = |k: &str| row[k].as_str().unwrap_or_default().to_string();
                let mut line = vec![
                    cell("ID"),
                    cell("Image"),
                    cell("Command"),
                    cell("RunningFor"),
                    cell("Status"),
                    cell("Ports"),
                    cell("Names"),
                ];
                if args.size {
                    line.push(cell("Size"));
                }
                table.push(line);
            }
            out.write_all(crate::images::render_table(&table).as_bytes())?;
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------
// logs

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative (e.g. 42m)
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

fn time_bound(value: &str) -> Result<f64> {
    let now = jiff::Timestamp::now().as_second();
    let seconds = crate::filter::parse_until(value, now)?;
    Ok(seconds as f64)
}

pub fn logs(ctx: &Context, args: &LogsArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let container = engine.find(&args.container)?;
    let options = keel_engine::logs::ReadOptions {
        tail: match args.tail.as_str() {
            "all" | "-1" => None,
            n => Some(
                n.parse()
                    .with_context(|| format!("invalid value for --tail: {n}"))?,
            ),
        },
        since: args.since.as_deref().map(time_bound).transpose()?,
        until: args.until.as_deref().map(time_bound).transpose()?,
    };
    let path = engine.layout.log(&container.id);
    let timestamps = args.timestamps;
    let emit = move |entry: &keel_engine::logs::Entry| -> std::io::Result<()> {
        let mut line = Vec::new();
        if timestamps {
            line.extend_from_slice(entry.time.as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(entry.log.as_bytes());
        match entry.stream {
            keel_engine::logs::Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line)?;
                out.flush()
            }
            keel_engine::logs::Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(&line)?;
                err.flush()
            }
        }
    };
    let (entries, end) = keel_engine::logs::read_to(&path, &options)?;
    for entry in entries {
        if emit(&entry).is_err() {
            return Ok(0);
        }
    }
    if args.follow && container.state.status.is_active() {
        let id = container.id.clone();
        let follow_options = keel_engine::logs::ReadOptions {
            tail: None,
            ..options
        };
        keel_engine::logs::follow(&path, end, &follow_options, emit, || {
            engine
                .find(&id)
                .map(|c| !c.state.status.is_active())
                .unwrap_or(true)
        })?;
    }
    Ok(0)
}

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

// ---------------------------------------------------------------------------
// inspect, top

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// docker's `inspect` shape for the fields keel has.
/// `HostConfig.PortBindings`: the ports as asked for.
fn port_bindings(spec: &ContainerSpec) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for p in &spec.publish {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let entry = map.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(serde_json::json!({
                "HostIp": p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "HostPort": match (p.host_port, p.host_port_end) {
                    (0, _) => String::new(),
                    (a, b) if b > a => format!("{a}-{b}"),
                    (a, _) => a.to_string(),
                },
            }));
        }
    }
    serde_json::Value::Object(map)
}

pub fn inspect_value(engine: &mut Engine, c: &Container) -> serde_json::Value {
    let s = &c.state;
    let run = engine.run_config(&c.id).unwrap_or_default();
    let image_config = run.image_config.config.clone().unwrap_or_default();
    let spec = &c.spec;
    let env = keel_engine::oci::environment(
        &run.image_config,
        spec,
        &keel_engine::oci::hostname(spec, &c.id),
        "/root",
    )
    .into_iter()
    .filter(|e| !e.starts_with("HOME=") || spec.env.iter().any(|u| u.starts_with("HOME=")))
    .collect::<Vec<_>>();
    let mounts: Vec<serde_json::Value> = c
        .mounts
        .iter()
        .map(|m| {
            serde_json::json!({
                "Type": m.kind.as_str(),
                "Name": m.name,
                "Source": m.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "Destination": m.target,
                "Driver": if m.name.is_some() { "local" } else { "" },
                "Mode": if m.read_only { "ro" } else { "" },
                "RW": !m.read_only,
                "Propagation": m.propagation.clone().unwrap_or_default(),
            })
        })
        .collect();
    let r = &spec.resources;
    // docker: the image's EXPOSEd ports and the published ones.
    let mut exposed = image_config.exposed_ports.clone().unwrap_or_default();
    for port in &spec.publish {
        exposed
            .entry(format!("{}/{}", port.container_port, port.protocol))
            .or_insert_with(|| serde_json::json!({}));
    }
    let binds: Vec<&str> = spec
        .mounts
        .iter()
        .filter_map(|m| m.volume_flag.as_deref())
        .collect();
    let mut value = serde_json::json!({
        "Id": c.id,
        "Created": c.created,
        "Path": c.args.first(),
        "Args": c.args.get(1..).unwrap_or_default(),
        "State": {
            "Status": s.status.as_str(),
            "Running": matches!(s.status, Status::Running | Status::Paused),
            "Paused": s.status == Status::Paused,
            "Restarting": s.status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": s.status == Status::Dead,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": s.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": s.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "Health": s.health.as_ref().map(|h| serde_json::json!({
                "Status": h.status,
                "FailingStreak": h.failing_streak,
                "Log": h.log.iter().map(|p| serde_json::json!({
                    "Start": p.start, "End": p.end, "ExitCode": p.exit_code, "Output": p.output
                })).collect::<Vec<_>>(),
            })),
        },
        "Image": c.image_id,
        "ResolvConfPath": engine.layout.file(&c.id, "resolv.conf"),
        "HostnamePath": engine.layout.file(&c.id, "hostname"),
        "HostsPath": engine.layout.file(&c.id, "hosts"),
        "LogPath": engine.layout.log(&c.id),
        "Name": format!("/{}", c.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "AutoRemove": spec.auto_remove,
            "Privileged": spec.privileged,
            "ReadonlyRootfs": spec.read_only,
            "NetworkMode": spec.network.name(&spec.networks),
            "PortBindings": port_bindings(spec),
            "PublishAllPorts": spec.publish_all,
            "DnsSearch": spec.dns_search,
            "RestartPolicy": {"Name": spec.restart.name(), "MaximumRetryCount": spec.restart.max_retries()},
            "Memory": r.memory.unwrap_or(0),
            "MemorySwap": r.memory_swap.unwrap_or(0),
            "MemoryReservation": r.memory_reservation.unwrap_or(0),
            "NanoCpus": r.nano_cpus.unwrap_or(0),
            "CpuShares": r.cpu_shares.unwrap_or(0),
            "CpusetCpus": r.cpuset_cpus.clone().unwrap_or_default(),
            "PidsLimit": r.pids_limit,
            "ShmSize": r.shm_size.unwrap_or(keel_engine::oci::DEFAULT_SHM_SIZE),
            "CapAdd": spec.cap_add,
            "CapDrop": spec.cap_drop,
            "Init": spec.init,
            "ExtraHosts": spec.extra_hosts.iter().map(|(h, ip)| format!("{h}:{ip}")).collect::<Vec<_>>(),
            "Dns": spec.dns,
            "Ulimits": r.ulimits.iter().map(|u| serde_json::json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect::<Vec<_>>(),
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": run.layers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
                "UpperDir": engine.layout.diff(&c.id),
                "WorkDir": engine.layout.work(&c.id),
                "MergedDir": engine.layout.rootfs(&c.id),
            },
        },
        "Mounts": mounts,
        "NetworkSettings": crate::networks::settings_value(engine, c),
        "Config": {
            "Hostname": keel_engine::oci::hostname(spec, &c.id),
            "User": spec.user.clone().or(image_config.user.clone()).unwrap_or_default(),
            "Tty": spec.tty,
            "OpenStdin": spec.interactive,
            "Env": env,
            "Cmd": if spec.command.is_empty() && spec.entrypoint.is_none() { image_config.cmd.clone() } else { Some(spec.command.clone()) },
            "Entrypoint": spec.entrypoint.clone().or(image_config.entrypoint.clone()),
            "Image": c.image,
            "WorkingDir": spec.workdir.clone().or(image_config.working_dir.clone()).unwrap_or_default(),
            "Labels": spec.labels,
            "StopSignal": keel_engine::oci::stop_signal(&run.image_config, spec),
            "StopTimeout": spec.stop_timeout,
        },
    });
    value["HostConfig"]["Binds"] = serde_json::json!((!binds.is_empty()).then_some(binds));
    value["Config"]["ExposedPorts"] = serde_json::json!(exposed);
    value["Config"]["Healthcheck"] =
        serde_json::json!(keel_engine::health::config_of(&run.image_config, spec));
    value["Config"]["Volumes"] = serde_json::json!(image_config.volumes);
    value
}

/// [`inspect_value`], with `SizeRw` when `size` asks for it.
pub fn inspect_value_sized(engine: &mut Engine, c: &Container, size: bool) -> serde_json::Value {
    let mut value = inspect_value(engine, c);
    if size {
        value["SizeRw"] = dir_size(&engine.layout.diff(&c.id)).into();
    }
    value
}

pub fn inspect(ctx: &Context, args: &InspectArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let mut values = Vec::new();
    let mut code = 0;
    for name in &args.containers {
        match engine.find(name) {
            Ok(c) => values.push(inspect_value_sized(&mut engine, &c, args.size)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    crate::template::print_values(&values, args.format.as_deref())?;
    Ok(code)
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// ps options (default -ef; e.g. aux, -o pid,user,args), as the host's ps takes them
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_options: Vec<String>,
}

pub fn top(ctx: &Context, args: &TopArgs) -> Result<i32> {
    let mut engine = ctx.engine()?;
    let pids = match engine.pids(&args.container) {
        Ok(pids) => pids,
        Err(e) => return fail_command(e),
    };
    // As docker: the host's `ps` with the options given (-ef by default),
    // keeping the rows of the container's processes.
    let options: Vec<String> = if args.ps_options.is_empty() {
        vec!["-ef".into()]
    } else {
        args.ps_options
            .iter()
            .flat_map(|o| o.split_whitespace().map(str::to_string))
            .collect()
    };
    let output = std::process::Command::new("ps")
        .args(&options)
        .stdin(std::process::Stdio::null())
        .output()
        .context("run ps (keel top uses the host's ps: apt install procps)")?;
    if !output.status.success() {
        bail!(
            "ps {}: {}",
            options.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    print!("{}", top_table(&text, &pids)?);
    Ok(0)
}

/// The rows of `ps` output whose PID is one of `pids`, cut into the
/// header's columns (the last one takes the rest of the line), aligned.
fn top_table(text: &str, pids: &[i32]) -> Result<String> {
    let mut lines = text.lines();
    let titles: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let Some(pid_column) = titles.iter().position(|t| *t == "PID") else {
        bail!("Couldn't find PID field in ps output");
    };
    let mut table = vec![titles.iter().map(|t| t.to_string()).collect::<Vec<_>>()];
    for line in lines {
        let mut cells: Vec<String> = Vec::new();
        let mut rest = line.trim_start();
        while cells.len() + 1 < titles.len() && !rest.is_empty() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            cells.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        cells.push(rest.to_string());
        let pid = cells.get(pid_column).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|pid| pids.contains(&pid)) {
            table.push(cells);
        }
    }
    Ok(crate::images::render_table(&table))
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub fn prune(ctx: &Context, args: &PruneArgs) -> Result<i32> {
    if !args.force && !crate::system::confirm("WARNING! This will remove all stopped containers.")?
    {
        return Ok(0);
    }
    let mut engine = ctx.engine()?;
    let (removed, freed) = prune_stopped(&mut engine)?;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        crate::images::human_size(freed)
    );
    Ok(0)
}

/// Removes every container that is not running: their ids and the bytes
/// of their writable layers.
pub fn prune_stopped(engine: &mut Engine) -> Result<(Vec<String>, u64)> {
    let mut removed = Vec::new();
    let mut freed = 0;
    for c in engine.list()? {
        if c.state.status.is_active() {
            continue;
        }
        let size = dir_size(&engine.layout.diff(&c.id));
        if engine.remove(&c.id, false, false).is_ok() {
            removed.push(c.id);
            freed += size;
        }
    }
    Ok((removed, freed))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_docker_prints_them() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
    }
}
