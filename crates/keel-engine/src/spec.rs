//! What a user asks for when creating a container: one request type that
//! every face (the CLI today, the API server later) fills, and the parsers
//! of the values docker's flags take (`-v`, `--mount`, `-m 512m`, `--cpus
//! 1.5`, `--ulimit`, `--restart`, ...). A flag value is parsed here and
//! nowhere else, so it means the same everywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A container to create: `keel create/run` flags and arguments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerSpec {
    /// The image as the user named it.
    pub image: String,
    pub name: Option<String>,
    /// Arguments after the image: they replace the image's CMD.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the image's ENTRYPOINT (and drops its CMD);
    /// `Some(vec![])` for `--entrypoint ""`.
    pub entrypoint: Option<Vec<String>>,
    /// `-e`/`--env-file` entries, `KEY=VALUE`, in order (later wins).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `-u`: `user`, `uid`, `user:group`, `uid:gid`.
    pub user: Option<String>,
    pub group_add: Vec<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `-t`: a terminal.
    pub tty: bool,
    /// `-i`: stdin kept open.
    pub interactive: bool,
    /// `--rm`.
    pub auto_remove: bool,
    pub mounts: Vec<MountSpec>,
    pub resources: ResourceSpec,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub seccomp: SeccompChoice,
    pub no_new_privileges: bool,
    pub read_only: bool,
    /// `--init`: keel's init as PID 1, reaping and forwarding signals.
    pub init: bool,
    pub restart: RestartPolicy,
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: Option<u32>,
    pub health: Option<HealthSpec>,
    pub network: NetworkMode,
    /// The networks of [`NetworkMode::Bridge`], in order (the first one is
    /// the container's `eth0` and where its ports are published); `run`
    /// fills in the default network `bridge` when none is named.
    pub networks: Vec<NetworkAttachment>,
    /// `-p`, one entry per port.
    pub publish: Vec<PortSpec>,
    /// `-P`: the image's EXPOSEd ports on random host ports.
    pub publish_all: bool,
    /// `--add-host name:ip`.
    pub extra_hosts: Vec<(String, String)>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub devices: Vec<DeviceSpec>,
    pub sysctls: BTreeMap<String, String>,
    pub log: LogOptions,
    /// `--isolation`: the host's kernel, or a micro-VM of its own.
    pub isolation: Isolation,
}

/// How a container is isolated from the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Namespaces and cgroups on the host's kernel.
    #[default]
    Container,
    /// A micro-VM with a kernel of its own (`--isolation vm`).
    Vm,
}

impl Isolation {
    /// `--isolation VALUE`: `vm`, or docker's `default`/`process` (and
    /// `container`) for the host's kernel.
    pub fn parse(value: &str) -> Result<Isolation> {
        match value {
            "" | "default" | "process" | "container" => Ok(Isolation::Container),
            "vm" => Ok(Isolation::Vm),
            other => Err(Error::invalid(format!(
                "invalid isolation {other:?}: keel runs containers (default) or micro-VMs (vm)"
            ))),
        }
    }

    /// As `inspect` and `ps --format {{.Isolation}}` show it (docker shows
    /// `default` for a container on the host's kernel).
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Container => "default",
            Isolation::Vm => "vm",
        }
    }
}

/// A `-v`, `--mount` or `--tmpfs` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Host path (bind), volume name (volume; empty for an anonymous one),
    /// unused for tmpfs.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
    /// tmpfs `size=` in bytes.
    pub tmpfs_size: Option<u64>,
    /// tmpfs `mode=` (octal).
    pub tmpfs_mode: Option<u32>,
    /// volume-nocopy: do not copy the image's content into a new volume.
    pub no_copy: bool,
    /// Bind propagation (`rprivate` unless given).
    pub propagation: Option<String>,
    /// The `-v` text a bind or named volume came from (docker's
    /// `HostConfig.Binds`; `--mount` entries have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_flag: Option<String>,
}

impl MountSpec {
    /// A mount with a source, a target and a mode, and every option at its
    /// default.
    pub fn plain(
        kind: MountKind,
        source: impl Into<String>,
        target: impl Into<String>,
        read_only: bool,
    ) -> MountSpec {
        MountSpec {
            kind,
            source: source.into(),
            target: target.into(),
            read_only,
            tmpfs_size: None,
            tmpfs_mode: None,
            no_copy: false,
            propagation: None,
            volume_flag: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceSpec {
    /// `-m`, bytes.
    pub memory: Option<i64>,
    /// `--memory-swap`, bytes of memory + swap; -1 for unlimited.
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    /// `--cpus`, in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size`, bytes (docker's default 64 MiB).
    pub shm_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// `nofile`, `nproc`, ... (docker's names).
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompChoice {
    #[default]
    Default,
    Unconfined,
    /// A profile's JSON, read when the container was created.
    Profile(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure {
        /// Restarts at most this many times (0: no limit).
        max_retries: u32,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// docker's name of the policy (`HostConfig.RestartPolicy.Name`).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => *max_retries,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// `CMD-SHELL cmd` or `CMD arg...`, as docker's Healthcheck.Test; an
    /// empty test means the image's.
    pub test: Vec<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub start_period_ms: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// A network namespace of its own on bridge networks (the spec's
    /// `networks`).
    #[default]
    Bridge,
    /// The network namespace of another container (its id).
    Container(String),
}

impl NetworkMode {
    /// docker's `HostConfig.NetworkMode` for it (`default` for bridge
    /// networks, as docker shows a container on `bridge`).
    pub fn name(&self, networks: &[NetworkAttachment]) -> String {
        match self {
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Bridge => networks
                .first()
                .map(|n| n.name.clone())
                .unwrap_or_else(|| "bridge".into()),
            NetworkMode::Container(id) => format!("container:{id}"),
        }
    }

    /// Whether the container has a network namespace of its own that keel
    /// makes (not the host's, not another container's).
    pub fn owns_namespace(&self) -> bool {
        matches!(self, NetworkMode::None | NetworkMode::Bridge)
    }
}

/// A container's place on a network, as asked for (`--network`,
/// `--network-alias`, `--ip`, `network connect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkAttachment {
    /// The network's id.
    pub id: String,
    /// Its name when attached (for display; the id is what counts).
    pub name: String,
    pub aliases: Vec<String>,
    /// `--ip`: a fixed IPv4 address.
    pub ipv4: Option<std::net::IpAddr>,
    /// `--ip6`: a fixed IPv6 address.
    pub ipv6: Option<std::net::IpAddr>,
}

/// One published port (`-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// The host address to publish on; None: all of them.
    pub host_ip: Option<std::net::IpAddr>,
    /// 0: a random free port; else the first port of `host_port..=host_port_end`
    /// (one is picked for `-p 8000-8010:80`).
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub host_path: String,
    pub container_path: String,
    /// `rwm` or a subset.
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogOptions {
    /// Rotate the json log at this size (bytes); 0: never (`max-size=-1`);
    /// none: the default cap (see `logs::limits`).
    pub max_size: Option<u64>,
    /// Files kept with rotation.
    pub max_file: Option<u32>,
}

// ---------------------------------------------------------------------------
// Flag values

/// docker's sizes: `512`, `512b`, `64k`, `1.5m`, `2g` (binary units).
pub fn parse_size(text: &str) -> Result<u64> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (number, scale) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1u64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        Some((i, 't')) => (&lower[..i], 1 << 40),
        Some((i, 'p')) => (&lower[..i], 1 << 50),
        _ => (lower, 1),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| Error::invalid(format!("invalid size: '{trimmed}'")))?;
    let bytes = value * scale as f64;
    if bytes >= u64::MAX as f64 {
        return Err(Error::invalid(format!("invalid size: '{trimmed}'")));
    }
    Ok(bytes as u64)
}

/// `--memory-swap`: a size, or -1 for unlimited.
pub fn parse_swap(text: &str) -> Result<i64> {
    if text.trim() == "-1" {
        return Ok(-1);
    }
    Ok(parse_size(text)? as i64)
}

/// `--cpus 1.5` → 1_500_000_000 nano CPUs.
pub fn parse_cpus(text: &str) -> Result<i64> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("invalid argument \"{text}\" for \"--cpus\" flag")))?;
    if !(0.0..=1e6).contains(&value) {
        return Err(Error::invalid(format!(
            "invalid argument \"{text}\" for \"--cpus\" flag: out of range"
        )));
    }
    Ok((value * 1e9).round() as i64)
}

/// `--ulimit nofile=1024:2048` (or `nofile=1024` for both).
pub fn parse_ulimit(text: &str) -> Result<Ulimit> {
    let bad = || Error::invalid(format!("invalid ulimit argument: {text}"));
    let (name, values) = text.split_once('=').ok_or_else(bad)?;
    if !RLIMIT_NAMES.contains(&name) {
        return Err(Error::invalid(format!("invalid ulimit type: {name}")));
    }
    let number = |v: &str| -> Result<u64> {
        if v == "-1" || v == "unlimited" {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| bad())
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((soft, hard)) => (number(soft)?, number(hard)?),
        None => {
            let v = number(values)?;
            (v, v)
        }
    };
    if soft > hard {
        return Err(Error::invalid(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// docker's `--ulimit` names.
pub const RLIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
    "as",
];

/// `--restart no|on-failure[:N]|always|unless-stopped`.
pub fn parse_restart(text: &str) -> Result<RestartPolicy> {
    let (name, count) = match text.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (text, None),
    };
    let policy = match name {
        "" | "no" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => {
            let max_retries = match count {
                Some(count) => count.parse().map_err(|_| {
                    Error::invalid(format!("invalid restart policy format: maximum retry count must be an integer: {text}"))
                })?,
                None => 0,
            };
            return Ok(RestartPolicy::OnFailure { max_retries });
        }
        _ => return Err(Error::invalid(format!("invalid restart policy: {text}"))),
    };
    if count.is_some() {
        return Err(Error::invalid(format!(
            "invalid restart policy format: maximum retry count can only be used with 'on-failure': {text}"
        )));
    }
    Ok(policy)
}

/// `-v SOURCE:TARGET[:OPTIONS]` or `-v TARGET` (an anonymous volume).
/// SOURCE is a bind if it is a path (starts with `/` or `.`), else a
/// volume name. Options: `ro`, `rw`, `nocopy`, propagation (`rshared`...),
/// `z`/`Z` (accepted, no SELinux here).
pub fn parse_volume_flag(text: &str) -> Result<MountSpec> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, options] => (*source, *target, *options),
        _ => {
            return Err(Error::invalid(format!(
                "invalid volume specification: '{text}'"
            )));
        }
    };
    if target.is_empty() || !target.starts_with('/') {
        return Err(Error::invalid(format!(
            "invalid volume specification: '{text}': invalid mount config: the container path must be absolute"
        )));
    }
    if target == "/" {
        return Err(Error::invalid(format!(
            "invalid volume specification: '{text}': invalid mount config: the container path must not be '/'"
        )));
    }
    let kind = if source.starts_with('/') || source.starts_with('.') {
        MountKind::Bind
    } else {
        if !source.is_empty() {
            validate_volume_name(source)?;
        }
        MountKind::Volume
    };
    let mut mount = MountSpec {
        kind,
        source: source.to_string(),
        target: clean_path(target),
        read_only: false,
        tmpfs_size: None,
        tmpfs_mode: None,
        no_copy: false,
        propagation: None,
        volume_flag: (!source.is_empty()).then(|| text.to_string()),
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => mount.read_only = true,
            "rw" => mount.read_only = false,
            "nocopy" if kind == MountKind::Volume => mount.no_copy = true,
            "z" | "Z" => {}
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
                if kind == MountKind::Bind =>
            {
                mount.propagation = Some(option.to_string());
            }
            _ => {
                return Err(Error::invalid(format!(
                    "invalid volume specification: '{text}': invalid mode: {option}"
                )));
            }
        }
    }
    Ok(mount)
}

/// `--mount type=bind|volume|tmpfs,source=...,target=...,readonly,...`.
pub fn parse_mount_flag(text: &str) -> Result<MountSpec> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "invalid argument \"{text}\" for \"--mount\" flag: {why}"
        ))
    };
    let mut kind = MountKind::Volume;
    let mut source = String::new();
    let mut target = String::new();
    let mut mount = MountSpec {
        kind,
        source: String::new(),
        target: String::new(),
        read_only: false,
        tmpfs_size: None,
        tmpfs_mode: None,
        no_copy: false,
        propagation: None,
        volume_flag: None,
    };
    for field in text.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let truthy = |v: Option<&str>| -> Result<bool> {
            match v.map(str::to_ascii_lowercase).as_deref() {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(other) => Err(bad(&format!("invalid value for {key}: {other}"))),
            }
        };
        match key.as_str() {
            "type" => {
                kind = match value {
                    Some("bind") => MountKind::Bind,
                    Some("volume") => MountKind::Volume,
                    Some("tmpfs") => MountKind::Tmpfs,
                    Some(other) => return Err(bad(&format!("unsupported mount type: {other}"))),
                    None => return Err(bad("type needs a value")),
                }
            }
            "source" | "src" => source = value.unwrap_or_default().to_string(),
            "target" | "destination" | "dst" => target = value.unwrap_or_default().to_string(),
            "readonly" | "ro" => mount.read_only = truthy(value)?,
            "volume-nocopy" => mount.no_copy = truthy(value)?,
            "bind-propagation" => mount.propagation = value.map(str::to_string),
            "tmpfs-size" => mount.tmpfs_size = Some(parse_size(value.unwrap_or_default())?),
            "tmpfs-mode" => {
                let mode = u32::from_str_radix(value.unwrap_or_default(), 8)
                    .map_err(|_| bad("tmpfs-mode must be octal"))?;
                mount.tmpfs_mode = Some(mode);
            }
            "consistency" | "bind-nonrecursive" | "volume-driver" | "volume-label" => {}
            other => return Err(bad(&format!("unexpected key '{other}' in '{field}'"))),
        }
    }
    if target.is_empty() {
        return Err(bad("target is required"));
    }
    if !target.starts_with('/') {
        return Err(bad("the target must be an absolute path"));
    }
    match kind {
        MountKind::Bind if source.is_empty() => {
            return Err(bad("source is required for a bind mount"));
        }
        MountKind::Tmpfs if !source.is_empty() => {
            return Err(bad("a tmpfs mount takes no source"));
        }
        MountKind::Volume if !source.is_empty() => validate_volume_name(&source)?,
        _ => {}
    }
    mount.kind = kind;
    mount.source = source;
    mount.target = clean_path(&target);
    Ok(mount)
}

/// `--tmpfs /run[:size=64m,mode=1777,...]`.
pub fn parse_tmpfs_flag(text: &str) -> Result<MountSpec> {
    let (target, options) = text.split_once(':').unwrap_or((text, ""));
    if !target.starts_with('/') {
        return Err(Error::invalid(format!(
            "invalid tmpfs mount: '{text}': the path must be absolute"
        )));
    }
    let mut mount = MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: clean_path(target),
        read_only: false,
        tmpfs_size: None,
        tmpfs_mode: None,
        no_copy: false,
        propagation: None,
        volume_flag: None,
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", v)) => mount.tmpfs_size = Some(parse_size(v)?),
            Some(("mode", v)) => {
                mount.tmpfs_mode = Some(u32::from_str_radix(v, 8).map_err(|_| {
                    Error::invalid(format!("invalid tmpfs mount: '{text}': mode must be octal"))
                })?)
            }
            None if option == "ro" => mount.read_only = true,
            None if option == "rw" => mount.read_only = false,
            // Mount options tmpfs takes as they are (noexec, nosuid, ...).
            _ if TMPFS_FLAGS.contains(&option) => {}
            _ => {
                return Err(Error::invalid(format!(
                    "invalid tmpfs mount: '{text}': unknown option {option}"
                )));
            }
        }
    }
    Ok(mount)
}

const TMPFS_FLAGS: &[&str] = &[
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
];

/// Volume names as docker accepts them: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.len() < 2 || !first_ok || !rest_ok {
        return Err(Error::invalid(format!(
            "\"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
        )));
    }
    Ok(())
}

/// Container names as docker accepts them: `/?[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_container_name(name: &str) -> Result<String> {
    let name = name.strip_prefix('/').unwrap_or(name);
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.len() < 2 || !first_ok || !rest_ok {
        return Err(Error::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(name.to_string())
}

/// `--device /dev/fuse[:/dev/fuse[:rwm]]`.
pub fn parse_device(text: &str) -> Result<DeviceSpec> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || Error::invalid(format!("invalid device specification: {text}"));
    let is_permissions = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let (host, container, permissions) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, p] if is_permissions(p) => (*host, *host, *p),
        [host, container] => (*host, *container, "rwm"),
        [host, container, p] if is_permissions(p) => (*host, *container, *p),
        _ => return Err(bad()),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(bad());
    }
    Ok(DeviceSpec {
        host_path: host.to_string(),
        container_path: container.to_string(),
        permissions: permissions.to_string(),
    })
}

/// `-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`, ranges too
/// (`8000-8001:80-81`, `8000-8010:80`, `127.0.0.1::80`, `[::1]:8080:80`).
pub fn parse_publish(text: &str) -> Result<Vec<PortSpec>> {
    let bad = |why: &str| Error::invalid(format!("invalid port specification: \"{text}\": {why}"));
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, p)) => (rest, p.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(bad("the protocol must be tcp or udp"));
    }
    // An IPv6 host address is in brackets.
    let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, rest) = after.split_once("]:").ok_or_else(|| bad("unclosed ["))?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| bad("bad host address"))?;
        (Some(ip), rest.to_string())
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.as_slice() {
            [ip, host, container] => {
                let ip = if ip.is_empty() {
                    None
                } else {
                    Some(ip.parse().map_err(|_| bad("bad host address"))?)
                };
                (ip, format!("{host}:{container}"))
            }
            [_, _] | [_] => (None, rest.to_string()),
            _ => return Err(bad("too many colons")),
        }
    };
    let host_ip = host_ip.filter(|ip: &std::net::IpAddr| !ip.is_unspecified());
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest.as_str()),
    };
    let range = |part: &str| -> Result<(u16, u16)> {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a
            .parse()
            .map_err(|_| bad("a port is a number from 1 to 65535"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| bad("a port is a number from 1 to 65535"))?;
        if a == 0 || b < a {
            return Err(bad("a port is a number from 1 to 65535, a range LOW-HIGH"));
        }
        Ok((a, b))
    };
    let (c_start, c_end) = range(container)?;
    let (h_start, h_end) = if host.is_empty() {
        (0, 0)
    } else {
        range(host)?
    };
    let count = c_end - c_start;
    let mut out = Vec::new();
    for i in 0..=count {
        let (host_port, host_port_end) = if host.is_empty() {
            (0, 0)
        } else if count == 0 {
            // One container port: a host port, or one picked from the range.
            (h_start, h_end)
        } else if h_end - h_start == count {
            (h_start + i, h_start + i)
        } else {
            return Err(bad("the host and container port ranges differ in size"));
        };
        out.push(PortSpec {
            host_ip,
            host_port,
            host_port_end,
            container_port: c_start + i,
            protocol: protocol.clone(),
        });
    }
    Ok(out)
}

/// The ports of an image's `ExposedPorts` (`80/tcp`), for `-P`.
pub fn exposed_ports(exposed: &[String]) -> Vec<PortSpec> {
    exposed
        .iter()
        .filter_map(|key| {
            let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
            let (start, end) = port.split_once('-').unwrap_or((port, port));
            let (start, end): (u16, u16) = (start.parse().ok()?, end.parse().ok()?);
            Some((start..=end).map(move |p| PortSpec {
                host_ip: None,
                host_port: 0,
                host_port_end: 0,
                container_port: p,
                protocol: protocol.to_ascii_lowercase(),
            }))
        })
        .flatten()
        .collect()
}

/// `--add-host name:ip` (also `name=ip`).
pub fn parse_add_host(text: &str) -> Result<(String, String)> {
    let (name, ip) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| Error::invalid(format!("bad format for add-host: \"{text}\"")))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
        return Err(Error::invalid(format!(
            "invalid IP address in add-host: \"{ip}\""
        )));
    }
    Ok((name.to_string(), ip.to_string()))
}

/// `-e KEY=VALUE` stays as it is; `-e KEY` takes KEY from `lookup` (the
/// caller's environment) and is dropped if it is not set there, as docker.
pub fn resolve_env(entry: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>> {
    if entry.is_empty() || entry.starts_with('=') {
        return Err(Error::invalid(format!(
            "invalid environment variable: {entry}"
        )));
    }
    if entry.contains('=') {
        return Ok(Some(entry.to_string()));
    }
    Ok(lookup(entry).map(|value| format!("{entry}={value}")))
}

/// Lines of an `--env-file`: `KEY=VALUE` or `KEY`; `#` comments and
/// blank lines skipped; whitespace before the key trimmed.
pub fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default();
        if key.chars().any(char::is_whitespace) {
            return Err(Error::invalid(format!(
                "variable '{key}' contains whitespaces"
            )));
        }
        if let Some(entry) = resolve_env(line, &lookup)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Go durations as docker's `--health-interval 30s`: `1m30s`, `500ms`.
pub fn parse_duration_ms(text: &str) -> Result<u64> {
    let bad = || Error::invalid(format!("invalid duration: {text}"));
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Ok(total.round() as u64)
}

/// `a/./b//c/` → `/a/b/c` (paths in the container, `..` kept out of it).
pub fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_reads_them() {
        for (text, want) in [
            ("512", 512),
            ("512b", 512),
            ("64k", 65_536),
            ("64K", 65_536),
            ("1.5m", 1_572_864),
            ("2g", 2 << 30),
            ("2GB", 2 << 30),
            ("1t", 1 << 40),
        ] {
            assert_eq!(parse_size(text).unwrap(), want, "{text}");
        }
        for bad in ["", "x", "-1m", "1q", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_swap("-1").unwrap(), -1);
    }

    #[test]
    fn cpus_ulimits_restart() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("0.01").unwrap(), 10_000_000);
        assert!(parse_cpus("many").is_err());
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }
        );
        assert_eq!(parse_ulimit("nproc=64").unwrap().hard, 64);
        assert!(parse_ulimit("nofile=10:5").is_err());
        assert!(parse_ulimit("bogus=1").is_err());
        assert_eq!(
            parse_restart("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert_eq!(
            parse_restart("on-failure").unwrap(),
            RestartPolicy::OnFailure { max_retries: 0 }
        );
        assert_eq!(parse_restart("always").unwrap(), RestartPolicy::Always);
        assert_eq!(parse_restart("no").unwrap(), RestartPolicy::No);
        assert!(parse_restart("always:3").is_err());
        assert!(parse_restart("sometimes").is_err());
    }

    #[test]
    fn volume_flags() {
        let bind = parse_volume_flag("/srv/data:/data:ro").unwrap();
        assert_eq!(bind.kind, MountKind::Bind);
        assert_eq!(
            (bind.source.as_str(), bind.target.as_str()),
            ("/srv/data", "/data")
        );
        assert!(bind.read_only);
        let named = parse_volume_flag("cache:/var/cache/:nocopy").unwrap();
        assert_eq!(named.kind, MountKind::Volume);
        assert_eq!(named.target, "/var/cache");
        assert!(named.no_copy);
        let anonymous = parse_volume_flag("/scratch").unwrap();
        assert_eq!(
            (anonymous.kind, anonymous.source.as_str()),
            (MountKind::Volume, "")
        );
        assert!(parse_volume_flag("data:relative").is_err());
        assert!(parse_volume_flag("data:/").is_err());
        assert!(parse_volume_flag("a:/b:c:d").is_err());
        assert!(parse_volume_flag("x:/b:bogus").is_err());
        assert!(parse_volume_flag("bad name!:/b").is_err());
    }

    #[test]
    fn mount_and_tmpfs_flags() {
        let bind = parse_mount_flag("type=bind,source=/srv,target=/srv,readonly").unwrap();
        assert_eq!(bind.kind, MountKind::Bind);
        assert!(bind.read_only);
        let volume = parse_mount_flag("source=data,target=/data").unwrap();
        assert_eq!(volume.kind, MountKind::Volume);
        let tmpfs = parse_mount_flag("type=tmpfs,dst=/run,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(tmpfs.tmpfs_size, Some(64 << 20));
        assert_eq!(tmpfs.tmpfs_mode, Some(0o1770));
        assert!(parse_mount_flag("type=bind,target=/x").is_err());
        assert!(parse_mount_flag("type=nfs,target=/x").is_err());
        assert!(parse_mount_flag("type=bind,source=/a").is_err());
        assert!(parse_mount_flag("type=bind,source=/a,target=/b,colour=red").is_err());
        let tmpfs = parse_tmpfs_flag("/run:size=1m,mode=755,noexec").unwrap();
        assert_eq!(tmpfs.tmpfs_size, Some(1 << 20));
        assert_eq!(tmpfs.tmpfs_mode, Some(0o755));
        assert!(parse_tmpfs_flag("run").is_err());
        assert!(parse_tmpfs_flag("/run:bogus").is_err());
    }

    #[test]
    fn names_devices_hosts_env() {
        assert_eq!(validate_container_name("/web-1").unwrap(), "web-1");
        assert!(validate_container_name("-web").is_err());
        assert!(validate_container_name("a").is_err());
        assert!(validate_container_name("we b").is_err());
        assert_eq!(
            parse_device("/dev/fuse").unwrap(),
            DeviceSpec {
                host_path: "/dev/fuse".into(),
                container_path: "/dev/fuse".into(),
                permissions: "rwm".into()
            }
        );
        assert_eq!(parse_device("/dev/null:/dev/x:r").unwrap().permissions, "r");
        assert_eq!(
            parse_device("/dev/null:rw").unwrap().container_path,
            "/dev/null"
        );
        assert!(parse_device("null").is_err());
        assert_eq!(
            parse_add_host("db:10.0.0.2").unwrap(),
            ("db".to_string(), "10.0.0.2".to_string())
        );
        assert_eq!(parse_add_host("v6=[::1]").unwrap().1, "::1");
        assert!(parse_add_host("db:nope").is_err());
    }

    #[test]
    fn publish_specs() {
        let one = |t: &str| parse_publish(t).unwrap();
        let p = one("8080:80");
        assert_eq!(
            (p[0].host_port, p[0].container_port, p[0].protocol.as_str()),
            (8080, 80, "tcp")
        );
        assert_eq!(p[0].host_ip, None);
        let p = one("127.0.0.1:5353:53/udp");
        assert_eq!(p[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p[0].protocol, "udp");
        let p = one("80");
        assert_eq!((p[0].host_port, p[0].container_port), (0, 80));
        let p = one("127.0.0.1::80");
        assert_eq!((p[0].host_port, p[0].host_ip.is_some()), (0, true));
        let p = one("[::1]:8080:80");
        assert_eq!(p[0].host_ip, Some("::1".parse().unwrap()));
        let p = one("8000-8001:80-81");
        assert_eq!(p.len(), 2);
        assert_eq!((p[1].host_port, p[1].container_port), (8001, 81));
        let p = one("8000-8010:80");
        assert_eq!((p[0].host_port, p[0].host_port_end), (8000, 8010));
        let p = one("0.0.0.0:8080:80");
        assert_eq!(p[0].host_ip, None);
        for bad in [
            "8000-8002:80-81",
            "x:80",
            "80/sctp",
            "0",
            "70000",
            "1:2:3:4",
            "90-80",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
        let exposed = exposed_ports(&["80/tcp".into(), "53/udp".into()]);
        assert_eq!(exposed.len(), 2);
        assert_eq!(exposed[1].protocol, "udp");
        let lookup = |k: &str| (k == "HOME").then(|| "/root".to_string());
        assert_eq!(resolve_env("A=1", lookup).unwrap(), Some("A=1".into()));
        assert_eq!(
            resolve_env("HOME", lookup).unwrap(),
            Some("HOME=/root".into())
        );
        assert_eq!(resolve_env("UNSET", lookup).unwrap(), None);
        assert!(resolve_env("=x", lookup).is_err());
        let file = "# comment\n\nA=1\n  B=two words\nHOME\nUNSET\n";
        assert_eq!(
            parse_env_file(file, lookup).unwrap(),
            ["A=1", "B=two words", "HOME=/root"]
        );
        assert!(parse_env_file("BAD KEY=1\n", lookup).is_err());
    }

    #[test]
    fn durations_and_paths() {
        assert_eq!(parse_duration_ms("30s").unwrap(), 30_000);
        assert_eq!(parse_duration_ms("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert!(parse_duration_ms("30").is_err());
        assert!(parse_duration_ms("soon").is_err());
        assert_eq!(clean_path("a/./b//c/"), "/a/b/c");
        assert_eq!(clean_path("/../x"), "/x");
    }
}
