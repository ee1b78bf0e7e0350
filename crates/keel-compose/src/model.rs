//! The compose model, typed: what a project's services, networks, volumes,
//! secrets and configs are once the files are read, merged, interpolated
//! and checked. It serialises as `keel compose config` prints it (docker
//! compose's canonical forms: long port and volume syntax, mappings for
//! environment and labels).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::read::At;
use crate::yaml::{Node, Value};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Project {
    pub name: String,
    #[serde(skip)]
    pub working_dir: PathBuf,
    #[serde(skip)]
    pub config_files: Vec<PathBuf>,
    pub services: BTreeMap<String, Service>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, Network>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, FileObject>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, FileObject>,
    /// Services left out by their profiles.
    #[serde(skip)]
    pub disabled: BTreeMap<String, Service>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A duration as docker compose prints one (Go's form: `1m30s`, `500ms`,
/// `1.5s`).
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1000) && ms < 60_000 {
        return format!("{}s", ms as f64 / 1000.0);
    }
    let (h, m, s) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        (ms % 60_000) as f64 / 1000.0,
    );
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

fn millis_text<S: serde::Serializer>(
    ms: &Option<u64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&duration_text(*ms)),
        None => s.serialize_none(),
    }
}

fn seconds_text<S: serde::Serializer>(
    secs: &Option<u32>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    millis_text(&secs.map(|v| u64::from(v) * 1000), s)
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Service {
    #[serde(skip)]
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<Build>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// After `env_file`s and interpolation; None: the variable is unset.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, Option<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServiceVolume>,
    /// The networks by name (with their settings); empty with a
    /// `network_mode`, else at least `default`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// `deploy.replicas` or `scale` (1 unless set).
    #[serde(skip)]
    pub replicas: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Deploy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// `name=soft:hard`, as `--ulimit` takes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    pub shm_size: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub init: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `vm`: the service's containers are micro-VMs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Seconds.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "seconds_text"
    )]
    pub stop_grace_period: Option<u32>,
    #[serde(skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// `name:ip` (docker's `--add-host` form).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<FileRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<FileRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Build {
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_contexts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub no_cache: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Port {
    /// The container's port (or the first of a range).
    pub target: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    pub protocol: String,
    /// Range of container ports: `target..=target_end`.
    #[serde(skip)]
    pub target_end: u16,
}

impl Port {
    /// As `-p` takes it.
    pub fn flag(&self) -> String {
        let ip = match &self.host_ip {
            Some(ip) if ip.contains(':') => format!("[{ip}]:"),
            Some(ip) => format!("{ip}:"),
            None => String::new(),
        };
        let target = if self.target_end > self.target {
            format!("{}-{}", self.target, self.target_end)
        } else {
            self.target.to_string()
        };
        match &self.published {
            Some(p) => format!("{ip}{p}:{target}/{}", self.protocol),
            None if ip.is_empty() => format!("{target}/{}", self.protocol),
            None => format!("{ip}:{target}/{}", self.protocol),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceVolume {
    /// `volume`, `bind` or `tmpfs`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The project's volume name (before the project prefix), an absolute
    /// host path, or empty (an anonymous volume, a tmpfs).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub target: String,
    #[serde(skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub nocopy: bool,
    /// A bind's source created when missing (docker compose's default for
    /// the short syntax).
    #[serde(skip_serializing_if = "is_false")]
    pub create_host_path: bool,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceNetwork {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// Higher first (docker compose's order of attachment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dependency {
    pub condition: Condition,
    pub restart: bool,
    pub required: bool,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Healthcheck {
    /// docker's `Healthcheck.Test`: `["CMD", ...]`, `["CMD-SHELL", cmd]`
    /// or `["NONE"]` (`disable: true`).
    pub test: Vec<String>,
    #[serde(
        rename = "interval",
        skip_serializing_if = "Option::is_none",
        serialize_with = "millis_text"
    )]
    pub interval_ms: Option<u64>,
    #[serde(
        rename = "timeout",
        skip_serializing_if = "Option::is_none",
        serialize_with = "millis_text"
    )]
    pub timeout_ms: Option<u64>,
    #[serde(
        rename = "start_period",
        skip_serializing_if = "Option::is_none",
        serialize_with = "millis_text"
    )]
    pub start_period_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Deploy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    #[serde(skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resources {
    #[serde(skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    #[serde(skip_serializing_if = "Limits::is_empty")]
    pub reservations: Limits,
}

impl Resources {
    fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.reservations.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Limits {
    /// CPUs (`0.5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory.is_none() && self.pids.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Logging {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A service's use of a secret or a config.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FileRef {
    pub source: String,
    /// Absolute in the container (`/run/secrets/NAME` for a secret unless
    /// given; `/NAME` for a config).
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Network {
    /// The network's real name (`PROJECT_KEY` unless `name:` or external).
    pub name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_ranges: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub enable_ipv6: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Volume {
    /// The volume's real name (`PROJECT_KEY` unless `name:` or external).
    pub name: String,
    #[serde(skip_serializing_if = "is_false")]
    pub external: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A top-level secret or config: a file (absolute), or inline content, or
/// an environment variable's value.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FileObject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

// ---------------------------------------------------------------------------
// From the merged tree

const SERVICE_KEYS: &[&str] = &[
    "build",
    "cap_add",
    "cap_drop",
    "command",
    "configs",
    "container_name",
    "cpus",
    "depends_on",
    "deploy",
    "devices",
    "dns",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "extra_hosts",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "isolation",
    "labels",
    "logging",
    "mem_limit",
    "mem_reservation",
    "network_mode",
    "networks",
    "pids_limit",
    "platform",
    "ports",
    "privileged",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "volumes",
    "working_dir",
];

/// The typed project from the merged, interpolated tree. `dir` is the
/// project's directory (relative paths were made absolute already).
pub fn project(root: &Node, name: &str, files: &[String]) -> Result<Project> {
    let top = At::new(root, "", files);
    let fields = top.fields(&[
        "version", "name", "services", "networks", "volumes", "secrets", "configs", "include",
    ])?;
    let mut project = Project {
        name: name.to_string(),
        ..Default::default()
    };
    for (key, node) in fields {
        match key {
            "services" => {
                for (path, name, node) in At::new(node, "services", files).entries()? {
                    let service = service(At::new(node, &path, files), name)?;
                    project.services.insert(name.to_string(), service);
                }
            }
            "networks" => {
                for (path, key, node) in At::new(node, "networks", files).entries()? {
                    let network = network(At::new(node, &path, files), &project.name, key)?;
                    project.networks.insert(key.to_string(), network);
                }
            }
            "volumes" => {
                for (path, key, node) in At::new(node, "volumes", files).entries()? {
                    let volume = volume(At::new(node, &path, files), &project.name, key)?;
                    project.volumes.insert(key.to_string(), volume);
                }
            }
            "secrets" | "configs" => {
                for (path, name, node) in At::new(node, key, files).entries()? {
                    let object = file_object(At::new(node, &path, files))?;
                    if key == "secrets" {
                        project.secrets.insert(name.to_string(), object);
                    } else {
                        project.configs.insert(name.to_string(), object);
                    }
                }
            }
            _ => {}
        }
    }
    // The implicit `default` network, as docker compose adds it.
    let uses_default = project
        .services
        .values()
        .any(|s| s.networks.contains_key("default"));
    if uses_default && !project.networks.contains_key("default") {
        project.networks.insert(
            "default".into(),
            Network {
                name: format!("{}_default", project.name),
                ..Default::default()
            },
        );
    }
    Ok(project)
}

fn service(at: At, name: &str) -> Result<Service> {
    let mut s = Service {
        name: name.to_string(),
        replicas: 1,
        ..Default::default()
    };
    let files = at.files;
    let mut replicas = None;
    for (key, node) in at.fields(SERVICE_KEYS)? {
        let path = format!("{}.{key}", at.path);
        let f = At::new(node, &path, files);
        match key {
            "build" => s.build = Some(build(f)?),
            "cap_add" => s.cap_add = f.strings()?,
            "cap_drop" => s.cap_drop = f.strings()?,
            "command" => s.command = f.command()?,
            "entrypoint" => s.entrypoint = f.command()?,
            "configs" => s.configs = file_refs(f, false)?,
            "secrets" => s.secrets = file_refs(f, true)?,
            "container_name" => s.container_name = f.opt_string()?,
            "cpus" => {
                let d = s.deploy.get_or_insert_with(Deploy::default);
                d.resources.limits.cpus = Some(f.float()?);
            }
            "mem_limit" => {
                let d = s.deploy.get_or_insert_with(Deploy::default);
                d.resources.limits.memory = Some(f.size()?);
            }
            "mem_reservation" => {
                let d = s.deploy.get_or_insert_with(Deploy::default);
                d.resources.reservations.memory = Some(f.size()?);
            }
            "pids_limit" => {
                let d = s.deploy.get_or_insert_with(Deploy::default);
                d.resources.limits.pids = Some(f.int()?);
            }
            "depends_on" => s.depends_on = depends_on(f)?,
            "deploy" => {
                let d = deploy(f, s.deploy.take().unwrap_or_default())?;
                if d.replicas.is_some() {
                    replicas = d.replicas;
                }
                s.deploy = Some(d);
            }
            "scale" => replicas = Some(f.uint()?),
            "devices" => {
                s.devices = f
                    .items()?
                    .into_iter()
                    .map(|(p, n)| device(At::new(n, &p, files)))
                    .collect::<Result<_>>()?
            }
            "dns" => s.dns = f.string_or_strings()?,
            "dns_search" => s.dns_search = f.string_or_strings()?,
            "domainname" => s.domainname = f.opt_string()?,
            "environment" => {
                for (k, v) in f.dict()? {
                    s.environment.insert(k, v);
                }
            }
            // Read by the loader into `environment`.
            "env_file" | "extends" => {}
            "expose" => s.expose = f.strings()?,
            "extra_hosts" => s.extra_hosts = extra_hosts(f)?,
            "group_add" => s.group_add = f.strings()?,
            "healthcheck" => s.healthcheck = healthcheck(f)?,
            "hostname" => s.hostname = f.opt_string()?,
            "image" => s.image = f.opt_string()?,
            "init" => s.init = f.bool()?,
            "labels" => s.labels = strings_dict(f)?,
            "logging" => s.logging = Some(logging(f)?),
            "network_mode" => s.network_mode = f.opt_string()?,
            "networks" => s.networks = service_networks(f)?,
            "platform" => s.platform = f.opt_string()?,
            "ports" => {
                for (p, n) in f.items()? {
                    s.ports.extend(port(At::new(n, &p, files))?);
                }
            }
            "privileged" => s.privileged = f.bool()?,
            "profiles" => s.profiles = f.strings()?,
            "pull_policy" => {
                let policy = f.string()?;
                if ![
                    "always",
                    "never",
                    "missing",
                    "if_not_present",
                    "build",
                    "daily",
                    "weekly",
                ]
                .contains(&policy.as_str())
                {
                    return Err(f.err(format!("invalid pull policy {policy:?}: always, never, missing, if_not_present or build")));
                }
                s.pull_policy = Some(policy);
            }
            "read_only" => s.read_only = f.bool()?,
            "isolation" => {
                let text = f.string()?;
                keel_engine::spec::Isolation::parse(&text).map_err(|e| f.err(e.to_string()))?;
                s.isolation = Some(text);
            }
            "restart" => {
                let text = f.string()?;
                keel_engine::spec::parse_restart(&text).map_err(|e| f.err(e.to_string()))?;
                s.restart = Some(text);
            }
            "security_opt" => s.security_opt = f.strings()?,
            "shm_size" => s.shm_size = f.size()?,
            "stdin_open" => s.stdin_open = f.bool()?,
            "stop_grace_period" => s.stop_grace_period = Some((f.duration_ms()? / 1000) as u32),
            "stop_signal" => s.stop_signal = f.opt_string()?,
            "sysctls" => s.sysctls = strings_dict(f)?,
            "tmpfs" => s.tmpfs = f.string_or_strings()?,
            "tty" => s.tty = f.bool()?,
            "ulimits" => s.ulimits = ulimits(f)?,
            "user" => s.user = f.opt_string()?,
            "volumes" => {
                for (p, n) in f.items()? {
                    s.volumes.push(service_volume(At::new(n, &p, files))?);
                }
            }
            "working_dir" => s.working_dir = f.opt_string()?,
            _ => {}
        }
    }
    if let Some(n) = replicas {
        s.replicas = n;
    }
    if s.image.is_none() && s.build.is_none() {
        return Err(at.err(
            "has neither an image nor a build context specified: at least one must be provided",
        ));
    }
    match &s.network_mode {
        Some(_) if !s.networks.is_empty() => {
            return Err(at.err("network_mode and networks cannot be combined"));
        }
        Some(_) => {}
        None if s.networks.is_empty() => {
            s.networks
                .insert("default".into(), ServiceNetwork::default());
        }
        None => {}
    }
    if s.container_name.is_some() && s.replicas > 1 {
        return Err(at.err(format!(
            "container_name {:?} is set and {} replicas are asked for: a container name must be unique",
            s.container_name.as_deref().unwrap_or(""),
            s.replicas
        )));
    }
    Ok(s)
}

fn strings_dict(at: At) -> Result<BTreeMap<String, String>> {
    Ok(at
        .dict()?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

fn build(at: At) -> Result<Build> {
    if let Value::Str(context) = &at.node.value {
        return Ok(Build {
            context: context.clone(),
            ..Default::default()
        });
    }
    let mut b = Build {
        context: ".".into(),
        ..Default::default()
    };
    for (key, node) in at.fields(&[
        "context",
        "dockerfile",
        "args",
        "target",
        "labels",
        "additional_contexts",
        "network",
        "tags",
        "no_cache",
        "pull",
        "cache_from",
        "dockerfile_inline",
    ])? {
        let path = format!("{}.{key}", at.path);
        let f = At::new(node, &path, at.files);
        match key {
            "context" => b.context = f.string()?,
            "dockerfile" => b.dockerfile = f.opt_string()?,
            "args" => b.args = f.dict()?,
            "target" => b.target = f.opt_string()?,
            "labels" => b.labels = strings_dict(f)?,
            "additional_contexts" => b.additional_contexts = strings_dict(f)?,
            "network" => b.network = f.opt_string()?,
            "tags" => b.tags = f.strings()?,
            "no_cache" => b.no_cache = f.bool()?,
            "pull" | "cache_from" => {}
            "dockerfile_inline" => {
                return Err(f.err(
                    "dockerfile_inline is not supported by keel: write the Dockerfile to a file",
                ));
            }
            _ => {}
        }
    }
    Ok(b)
}

fn depends_on(at: At) -> Result<BTreeMap<String, Dependency>> {
    let mut out = BTreeMap::new();
    match &at.node.value {
        Value::Seq(_) => {
            for name in at.strings()? {
                out.insert(
                    name,
                    Dependency {
                        condition: Condition::ServiceStarted,
                        restart: false,
                        required: true,
                    },
                );
            }
        }
        _ => {
            for (path, name, node) in at.entries()? {
                let f = At::new(node, &path, at.files);
                let mut d = Dependency {
                    condition: Condition::ServiceStarted,
                    restart: false,
                    required: true,
                };
                for (key, value) in f.fields(&["condition", "restart", "required"])? {
                    let p = format!("{path}.{key}");
                    let v = At::new(value, &p, at.files);
                    match key {
                        "condition" => {
                            d.condition = match v.string()?.as_str() {
                                "service_started" => Condition::ServiceStarted,
                                "service_healthy" => Condition::ServiceHealthy,
                                "service_completed_successfully" => {
                                    Condition::ServiceCompletedSuccessfully
                                }
                                other => {
                                    return Err(v.err(format!("invalid condition {other:?}: service_started, service_healthy or service_completed_successfully")));
                                }
                            }
                        }
                        "restart" => d.restart = v.bool()?,
                        "required" => d.required = v.bool()?,
                        _ => {}
                    }
                }
                out.insert(name.to_string(), d);
            }
        }
    }
    Ok(out)
}

fn deploy(at: At, mut d: Deploy) -> Result<Deploy> {
    for (key, node) in at.fields(&[
        "replicas",
        "resources",
        "mode",
        "restart_policy",
        "labels",
        "placement",
        "update_config",
        "rollback_config",
        "endpoint_mode",
    ])? {
        let path = format!("{}.{key}", at.path);
        let f = At::new(node, &path, at.files);
        match key {
            "replicas" => d.replicas = Some(f.uint()?),
            "resources" => {
                for (key, node) in f.fields(&["limits", "reservations"])? {
                    let path = format!("{path}.{key}");
                    let l = At::new(node, &path, at.files);
                    let limits = if key == "limits" {
                        &mut d.resources.limits
                    } else {
                        &mut d.resources.reservations
                    };
                    for (key, node) in
                        l.fields(&["cpus", "memory", "pids", "devices", "generic_resources"])?
                    {
                        let path = format!("{path}.{key}");
                        let v = At::new(node, &path, at.files);
                        match key {
                            "cpus" => limits.cpus = Some(v.float()?),
                            "memory" => limits.memory = Some(v.size()?),
                            "pids" => limits.pids = Some(v.int()?),
                            _ => return Err(v.err("is not supported by keel")),
                        }
                    }
                }
            }
            "mode" => {
                let mode = f.string()?;
                if mode != "replicated" {
                    return Err(f.err(format!(
                        "mode {mode:?} is not supported by keel: replicated only"
                    )));
                }
            }
            // Swarm's; docker compose ignores them too.
            _ => {}
        }
    }
    Ok(d)
}

fn device(at: At) -> Result<String> {
    match &at.node.value {
        Value::Map(_) => {
            let mut source = None;
            let mut target = None;
            let mut perms = "rwm".to_string();
            for (key, node) in at.fields(&["source", "target", "permissions"])? {
                let path = format!("{}.{key}", at.path);
                let v = At::new(node, &path, at.files).string()?;
                match key {
                    "source" => source = Some(v),
                    "target" => target = Some(v),
                    _ => perms = v,
                }
            }
            let source = source.ok_or_else(|| at.err("a device needs a source"))?;
            let target = target.unwrap_or_else(|| source.clone());
            Ok(format!("{source}:{target}:{perms}"))
        }
        _ => at.string(),
    }
}

fn extra_hosts(at: At) -> Result<Vec<String>> {
    let mut out = Vec::new();
    match &at.node.value {
        Value::Map(_) => {
            for (k, v) in at.dict()? {
                out.push(format!("{k}:{}", v.unwrap_or_default()));
            }
        }
        _ => {
            for entry in at.strings()? {
                // docker compose also takes `name=ip`.
                let entry = match entry.split_once('=') {
                    Some((name, ip)) if !entry.contains(':') || ip.contains(':') => {
                        format!("{name}:{ip}")
                    }
                    _ => entry,
                };
                out.push(entry);
            }
        }
    }
    for entry in &out {
        keel_engine::spec::parse_add_host(entry).map_err(|e| at.err(e.to_string()))?;
    }
    Ok(out)
}

fn healthcheck(at: At) -> Result<Option<Healthcheck>> {
    let mut h = Healthcheck::default();
    let mut disable = false;
    for (key, node) in at.fields(&[
        "test",
        "interval",
        "timeout",
        "start_period",
        "start_interval",
        "retries",
        "disable",
    ])? {
        let path = format!("{}.{key}", at.path);
        let f = At::new(node, &path, at.files);
        match key {
            "test" => {
                h.test = match &node.value {
                    Value::Seq(_) => f.strings()?,
                    _ => vec!["CMD-SHELL".into(), f.string()?],
                };
                if let Some(first) = h.test.first()
                    && !["CMD", "CMD-SHELL", "NONE"].contains(&first.as_str())
                {
                    return Err(f.err(format!(
                        "a list must start with CMD, CMD-SHELL or NONE, not {first:?}"
                    )));
                }
            }
            "interval" => h.interval_ms = Some(f.duration_ms()?),
            "timeout" => h.timeout_ms = Some(f.duration_ms()?),
            "start_period" => h.start_period_ms = Some(f.duration_ms()?),
            "start_interval" => {}
            "retries" => h.retries = Some(f.uint()? as u32),
            "disable" => disable = f.bool()?,
            _ => {}
        }
    }
    if disable {
        return Ok(Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    Ok(Some(h))
}

fn logging(at: At) -> Result<Logging> {
    let mut l = Logging::default();
    for (key, node) in at.fields(&["driver", "options"])? {
        let path = format!("{}.{key}", at.path);
        let f = At::new(node, &path, at.files);
        match key {
            "driver" => l.driver = f.opt_string()?,
            _ => l.options = strings_dict(f)?,
        }
    }
    keel_engine::options::log_options(
        l.driver.as_deref().unwrap_or(""),
        l.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| at.err(e.to_string()))?;
    Ok(l)
}

fn service_networks(at: At) -> Result<BTreeMap<String, ServiceNetwork>> {
    let mut out = BTreeMap::new();
    match &at.node.value {
        Value::Seq(_) => {
            for name in at.strings()? {
                out.insert(name, ServiceNetwork::default());
            }
        }
        _ => {
            for (path, name, node) in at.entries()? {
                let f = At::new(node, &path, at.files);
                let mut n = ServiceNetwork::default();
                for (key, node) in f.fields(&[
                    "aliases",
                    "ipv4_address",
                    "ipv6_address",
                    "priority",
                    "link_local_ips",
                    "mac_address",
                    "driver_opts",
                    "gw_priority",
                ])? {
                    let path = format!("{path}.{key}");
                    let v = At::new(node, &path, at.files);
                    match key {
                        "aliases" => n.aliases = v.strings()?,
                        "ipv4_address" => n.ipv4_address = v.opt_string()?,
                        "ipv6_address" => n.ipv6_address = v.opt_string()?,
                        "priority" | "gw_priority" => n.priority = Some(v.int()?),
                        _ => return Err(v.err("is not supported by keel")),
                    }
                }
                out.insert(name.to_string(), n);
            }
        }
    }
    Ok(out)
}

/// One `ports` entry: short syntax (`[IP:][HOST:]CONTAINER[/PROTO]`, with
/// ranges) or long (`target`, `published`, `host_ip`, `protocol`).
fn port(at: At) -> Result<Vec<Port>> {
    if let Value::Map(_) = &at.node.value {
        let mut p = Port {
            protocol: "tcp".into(),
            ..Default::default()
        };
        let mut target = None;
        for (key, node) in at.fields(&[
            "target",
            "published",
            "host_ip",
            "protocol",
            "mode",
            "name",
            "app_protocol",
        ])? {
            let path = format!("{}.{key}", at.path);
            let f = At::new(node, &path, at.files);
            match key {
                "target" => target = Some(f.uint()?),
                "published" => p.published = f.opt_string()?,
                "host_ip" => p.host_ip = f.opt_string()?,
                "protocol" => p.protocol = f.string()?,
                "mode" => {
                    let mode = f.string()?;
                    if mode != "host" && mode != "ingress" {
                        return Err(f.err(format!("invalid mode {mode:?}")));
                    }
                }
                _ => {}
            }
        }
        let target = target.ok_or_else(|| at.err("a port needs a target"))?;
        p.target = u16::try_from(target).map_err(|_| at.err(format!("invalid port {target}")))?;
        p.target_end = p.target;
        keel_engine::spec::parse_publish(&p.flag()).map_err(|e| at.err(e.to_string()))?;
        return Ok(vec![p]);
    }
    let text = at.string()?;
    let specs = keel_engine::spec::parse_publish(&text).map_err(|e| at.err(e.to_string()))?;
    // The short form, kept as written for the container's flags.
    let (rest, protocol) = match text.rsplit_once('/') {
        Some((rest, proto)) => (rest.to_string(), proto.to_string()),
        None => (text.clone(), "tcp".to_string()),
    };
    let (host, container) = match rest.rfind(':') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest.as_str()),
    };
    let (host_ip, published) = match host {
        None => (None, None),
        Some(h) => match h.rfind(':') {
            Some(i) if h.starts_with('[') || h[..i].contains('.') || h[..i].contains(':') => {
                let ip = h[..i].trim_start_matches('[').trim_end_matches(']');
                (Some(ip.to_string()), Some(h[i + 1..].to_string()))
            }
            _ if h.contains('.') => (Some(h.to_string()), None),
            _ => (None, Some(h.to_string())),
        },
    };
    let (target, target_end) = match container.split_once('-') {
        Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
        None => {
            let p = container.parse().unwrap_or(0);
            (p, p)
        }
    };
    let _ = specs;
    Ok(vec![Port {
        target,
        target_end,
        published: published.filter(|p| !p.is_empty()),
        host_ip: host_ip.filter(|ip| !ip.is_empty()),
        protocol,
    }])
}

fn ulimits(at: At) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (path, name, node) in at.entries()? {
        let f = At::new(node, &path, at.files);
        let text = match &node.value {
            Value::Map(_) => {
                let mut soft = None;
                let mut hard = None;
                for (key, node) in f.fields(&["soft", "hard"])? {
                    let p = format!("{path}.{key}");
                    let v = At::new(node, &p, at.files).int()?;
                    if key == "soft" {
                        soft = Some(v);
                    } else {
                        hard = Some(v);
                    }
                }
                let (Some(soft), Some(hard)) = (soft, hard) else {
                    return Err(f.err("needs both soft and hard"));
                };
                format!("{name}={soft}:{hard}")
            }
            _ => format!("{name}={}", f.int()?),
        };
        keel_engine::spec::parse_ulimit(&text).map_err(|e| f.err(e.to_string()))?;
        out.push(text);
    }
    Ok(out)
}

/// One `volumes` entry of a service. Bind sources were made absolute by
/// the loader; a source that is not a path names a project volume.
fn service_volume(at: At) -> Result<ServiceVolume> {
    if let Value::Map(_) = &at.node.value {
        let mut v = ServiceVolume::default();
        for (key, node) in at.fields(&[
            "type",
            "source",
            "target",
            "read_only",
            "bind",
            "volume",
            "tmpfs",
            "consistency",
        ])? {
            let path = format!("{}.{key}", at.path);
            let f = At::new(node, &path, at.files);
            match key {
                "type" => v.kind = f.string()?,
                "source" => v.source = f.string()?,
                "target" => v.target = f.string()?,
                "read_only" => v.read_only = f.bool()?,
                "bind" => {
                    for (key, node) in f.fields(&["create_host_path", "propagation", "selinux"])? {
                        let p = format!("{path}.{key}");
                        if key == "create_host_path" {
                            v.create_host_path = At::new(node, &p, at.files).bool()?;
                        }
                    }
                }
                "volume" => {
                    for (key, node) in f.fields(&["nocopy", "subpath"])? {
                        let p = format!("{path}.{key}");
                        let s = At::new(node, &p, at.files);
                        match key {
                            "nocopy" => v.nocopy = s.bool()?,
                            _ => return Err(s.err("is not supported by keel")),
                        }
                    }
                }
                "tmpfs" => {
                    for (key, node) in f.fields(&["size", "mode"])? {
                        let p = format!("{path}.{key}");
                        if key == "size" {
                            v.tmpfs_size = Some(At::new(node, &p, at.files).size()?);
                        }
                    }
                }
                _ => {}
            }
        }
        if !["volume", "bind", "tmpfs"].contains(&v.kind.as_str()) {
            return Err(at.err(format!(
                "invalid volume type {:?}: volume, bind or tmpfs",
                v.kind
            )));
        }
        if v.target.is_empty() {
            return Err(at.err("a volume needs a target"));
        }
        if v.kind == "bind" && !v.source.starts_with('/') {
            return Err(at.err(format!("a bind's source must be a path: {:?}", v.source)));
        }
        return Ok(v);
    }
    let text = at.string()?;
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(at.err(format!("invalid volume specification: {text:?}"))),
    };
    if !target.starts_with('/') {
        return Err(at.err(format!(
            "invalid volume specification: {text:?}: the target must be an absolute path"
        )));
    }
    let mut v = ServiceVolume {
        kind: if source.is_empty() || !source.starts_with('/') {
            "volume".into()
        } else {
            "bind".into()
        },
        source: source.to_string(),
        target: target.to_string(),
        create_host_path: source.starts_with('/'),
        ..Default::default()
    };
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => v.read_only = true,
            "rw" => v.read_only = false,
            "nocopy" => v.nocopy = true,
            "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "rshared" | "shared"
            | "cached" | "delegated" | "consistent" => {}
            other => {
                return Err(at.err(format!("invalid volume option {other:?} in {text:?}")));
            }
        }
    }
    Ok(v)
}

fn file_refs(at: At, secret: bool) -> Result<Vec<FileRef>> {
    let mut out = Vec::new();
    for (path, node) in at.items()? {
        let f = At::new(node, &path, at.files);
        let mut r = FileRef::default();
        match &node.value {
            Value::Map(_) => {
                for (key, node) in f.fields(&["source", "target", "uid", "gid", "mode"])? {
                    let p = format!("{path}.{key}");
                    let v = At::new(node, &p, at.files);
                    match key {
                        "source" => r.source = v.string()?,
                        "target" => r.target = v.string()?,
                        "mode" => {
                            r.mode = Some(match &node.value {
                                Value::Str(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                                    .map_err(|_| v.err(format!("invalid mode {s:?}")))?,
                                _ => v.uint()? as u32,
                            })
                        }
                        _ => {}
                    }
                }
            }
            _ => r.source = f.string()?,
        }
        if r.source.is_empty() {
            return Err(f.err("needs a source"));
        }
        if r.target.is_empty() {
            r.target = r.source.clone();
        }
        if !r.target.starts_with('/') {
            r.target = if secret {
                format!("/run/secrets/{}", r.target)
            } else {
                format!("/{}", r.target)
            };
        }
        out.push(r);
    }
    Ok(out)
}

fn network(at: At, project: &str, key: &str) -> Result<Network> {
    let mut n = Network {
        name: format!("{project}_{key}"),
        ..Default::default()
    };
    let mut named = None;
    for (k, node) in at.fields(&[
        "name",
        "external",
        "internal",
        "driver",
        "driver_opts",
        "ipam",
        "labels",
        "enable_ipv6",
        "attachable",
    ])? {
        let path = format!("{}.{k}", at.path);
        let f = At::new(node, &path, at.files);
        match k {
            "name" => named = f.opt_string()?,
            "external" => n.external = external(f)?,
            "internal" => n.internal = f.bool()?,
            "driver" => {
                let driver = f.string()?;
                if driver != "bridge" {
                    return Err(f.err(format!(
                        "driver {driver:?} is not supported by keel: bridge only"
                    )));
                }
                n.driver = Some(driver);
            }
            "driver_opts" => n.driver_opts = strings_dict(f)?,
            "labels" => n.labels = strings_dict(f)?,
            "enable_ipv6" => n.enable_ipv6 = f.bool()?,
            "attachable" => {}
            "ipam" => {
                for (k, node) in f.fields(&["driver", "config", "options"])? {
                    let path = format!("{path}.{k}");
                    let i = At::new(node, &path, at.files);
                    if k != "config" {
                        continue;
                    }
                    for (p, node) in i.items()? {
                        let c = At::new(node, &p, at.files);
                        for (k, node) in
                            c.fields(&["subnet", "gateway", "ip_range", "aux_addresses"])?
                        {
                            let path = format!("{p}.{k}");
                            let v = At::new(node, &path, at.files);
                            match k {
                                "subnet" => n.subnets.push(v.string()?),
                                "gateway" => n.gateways.push(v.string()?),
                                "ip_range" => n.ip_ranges.push(v.string()?),
                                _ => return Err(v.err("is not supported by keel")),
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(name) = named {
        n.name = name;
    } else if n.external {
        n.name = key.to_string();
    }
    Ok(n)
}

fn external(at: At) -> Result<bool> {
    match &at.node.value {
        // The old `external: {name: x}` form.
        Value::Map(_) => Ok(true),
        _ => at.bool(),
    }
}

fn volume(at: At, project: &str, key: &str) -> Result<Volume> {
    let mut v = Volume {
        name: format!("{project}_{key}"),
        ..Default::default()
    };
    let mut named = None;
    for (k, node) in at.fields(&["name", "external", "labels", "driver", "driver_opts"])? {
        let path = format!("{}.{k}", at.path);
        let f = At::new(node, &path, at.files);
        match k {
            "name" => named = f.opt_string()?,
            "external" => v.external = external(f)?,
            "labels" => v.labels = strings_dict(f)?,
            "driver" => {
                let driver = f.string()?;
                if driver != "local" {
                    return Err(f.err(format!(
                        "driver {driver:?} is not supported by keel: local only"
                    )));
                }
            }
            _ => {
                if !strings_dict(f)?.is_empty() {
                    return Err(f.err("volume driver options are not supported by keel"));
                }
            }
        }
    }
    if let Some(name) = named {
        v.name = name;
    } else if v.external {
        v.name = key.to_string();
    }
    keel_engine::spec::validate_volume_name(&v.name).map_err(|e| at.err(e.to_string()))?;
    Ok(v)
}

fn file_object(at: At) -> Result<FileObject> {
    let mut o = FileObject::default();
    for (k, node) in at.fields(&["file", "content", "environment", "external", "name"])? {
        let path = format!("{}.{k}", at.path);
        let f = At::new(node, &path, at.files);
        match k {
            "file" => o.file = Some(PathBuf::from(f.string()?)),
            "content" => o.content = Some(f.string()?),
            "environment" => o.environment = Some(f.string()?),
            "external" if f.bool()? => {
                return Err(f.err(
                    "external secrets and configs are swarm's: keel takes file, content or environment",
                ));
            }
            _ => {}
        }
    }
    if o.file.is_none() && o.content.is_none() && o.environment.is_none() {
        return Err(at.err("needs one of file, content or environment"));
    }
    Ok(o)
}

/// Docker compose's normalised project name: lower case; letters, digits,
/// `-` and `_`; starting with a letter or a digit.
pub fn normalize_name(name: &str) -> String {
    let lower: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    lower
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Whether `name` is a valid project name as given (`-p`, `name:`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Project {
    /// The secret's or config's content, as the service will see it.
    pub fn file_content(
        &self,
        object: &FileObject,
        vars: &crate::interpolate::Vars,
    ) -> Result<Vec<u8>> {
        if let Some(content) = &object.content {
            return Ok(content.clone().into_bytes());
        }
        if let Some(name) = &object.environment {
            return Ok(vars.get(name).unwrap_or("").as_bytes().to_vec());
        }
        let file = object.file.as_deref().unwrap_or(Path::new(""));
        std::fs::read(file)
            .map_err(|e| crate::error::Error::io(format!("read {}", file.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_docker_compose_prints_them() {
        assert_eq!(duration_text(500), "500ms");
        assert_eq!(duration_text(1000), "1s");
        assert_eq!(duration_text(1500), "1.5s");
        assert_eq!(duration_text(90_000), "1m30s");
        assert_eq!(duration_text(3_600_000), "1h0m0s");
    }

    #[test]
    fn project_names_as_docker_compose_makes_them() {
        assert_eq!(normalize_name("My Shop"), "myshop");
        assert_eq!(normalize_name("_x.y-Z"), "xy-z");
        assert!(valid_name("shop_1-a"));
        assert!(!valid_name("Shop"));
        assert!(!valid_name("-shop"));
    }
}
