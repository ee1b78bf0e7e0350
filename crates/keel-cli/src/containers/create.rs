//! `keel create` and `keel run`: the flags, the request they make, the
//! image pulled as `--pull` says, and `run`'s attached session.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use keel_engine::Engine;
use keel_engine::attach::Hello;
use keel_engine::db::Container;
use keel_engine::options;
use keel_engine::spec::{self, ContainerSpec};

use crate::attach_client::{self, Ended, Session};

use super::*;

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
    /// Isolation: default (the host's kernel) or vm (a micro-VM with a kernel of its own)
    #[arg(long, value_name = "ISOLATION", default_value = "default")]
    pub isolation: String,
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
    /// The request, every flag value parsed by keel-engine (the CLI only
    /// reads the files flags name and makes bind sources absolute).
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
        // A seccomp profile is a file here and its JSON to the engine, as
        // docker's CLI sends it.
        let mut security_opt = Vec::new();
        for option in &self.security_opt {
            match option.split_once(['=', ':']) {
                Some(("seccomp", path)) if !["unconfined", "builtin"].contains(&path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("opening seccomp profile ({path}) failed"))?;
                    security_opt.push(format!("seccomp={text}"));
                }
                _ => security_opt.push(option.clone()),
            }
        }
        let (seccomp, no_new_privileges) = options::security_options(&security_opt)?;
        let networks = options::NetworkChoice {
            names: self.network.clone(),
            aliases: self.network_alias.clone(),
            ipv4: self.ip.clone(),
            ipv6: self.ip6.clone(),
        }
        .resolve(!self.publish.is_empty() || self.publish_all)?;
        if networks.ports_discarded {
            eprintln!("WARNING: {}", options::PORTS_DISCARDED);
        }
        let log = options::log_options(
            &self.log_driver,
            self.log_opt
                .iter()
                .map(|o| o.split_once('=').unwrap_or((o.as_str(), ""))),
        )?;
        let health = options::HealthFlags {
            none: self.no_healthcheck,
            cmd: self.health_cmd.clone(),
            interval: self.health_interval.clone(),
            timeout: self.health_timeout.clone(),
            start_period: self.health_start_period.clone(),
            retries: self.health_retries,
        }
        .to_spec()?;
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
            labels: options::labels(&self.label),
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
            network: networks.mode,
            networks: networks.attachments,
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
            sysctls: options::sysctls(&self.sysctl)?,
            log,
            isolation: spec::Isolation::parse(&self.isolation)?,
        })
    }
}

/// Makes sure the image is in the store, pulling it as `--pull` says,
/// with the pull's lines on stderr (stdout is the container's).
pub(super) fn ensure_image(ctx: &Context, args: &CreateArgs) -> Result<()> {
    let present = crate::images::open(&ctx.root)?.resolve(&args.image).is_ok();
    let pull = options::PullPolicy::parse(&args.pull)?.needs_pull(&args.image, present)?;
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
pub(crate) fn with_stdout_on_stderr<T>(f: impl FnOnce() -> T) -> T {
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

/// Said once per root: where KVM cannot boot Linux, micro-VMs run under
/// QEMU's emulator (slow, but the same guest and the same behaviour).
fn emulation_notice(ctx: &Context) {
    if keel_vm::guest::vmm::choose().is_ok_and(|vmm| vmm.accelerator() == "kvm") {
        return;
    }
    let marker = ctx.root.join("vm-guest").join("emulation-notice");
    if marker.exists() {
        return;
    }
    eprintln!(
        "keel: this host's KVM cannot boot Linux (no /dev/kvm, or software KVM): micro-VMs run \
         under QEMU's TCG emulator, slower to boot but otherwise the same (said once)"
    );
    let _ = std::fs::create_dir_all(marker.parent().expect("a parent"));
    let _ = std::fs::write(&marker, "");
}

pub(super) fn create_container(ctx: &Context, args: &CreateArgs) -> Result<(Engine, Container)> {
    let spec = args.to_spec()?;
    // The whole request is checked before anything is pulled.
    options::check(&spec)?;
    if spec.isolation == spec::Isolation::Vm {
        emulation_notice(ctx);
    }
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

pub(crate) fn session(
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
