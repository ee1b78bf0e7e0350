//! A service's container as keel's engine takes it: the [`ContainerSpec`]
//! for replica `number` of a service, with docker compose's names and
//! labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_engine::options::{self, HealthFlags};
use keel_engine::spec::{
    self, ContainerSpec, HealthSpec, MountKind, MountSpec, NetworkAttachment, NetworkMode,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::interpolate::Vars;
use crate::model::{Project, Service};

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const NUMBER: &str = "com.docker.compose.container-number";
pub const ONEOFF: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
pub const IMAGE: &str = "com.docker.compose.image";
pub const VERSION: &str = "com.docker.compose.version";
pub const NETWORK: &str = "com.docker.compose.network";
pub const VOLUME: &str = "com.docker.compose.volume";

/// The compose version keel's labels say (docker compose v2's format).
pub const COMPOSE_VERSION: &str = "2.29.0";

/// `PROJECT-SERVICE-N`, or the service's `container_name`.
pub fn container_name(project: &str, service: &Service, number: u64) -> String {
    match &service.container_name {
        Some(name) => name.clone(),
        None => format!("{project}-{}-{number}", service.name),
    }
}

/// The image a service runs: its `image`, else the one its build makes
/// (`PROJECT-SERVICE`, as docker compose v2 names it).
pub fn image_name(project: &str, service: &Service) -> String {
    match &service.image {
        Some(image) => image.clone(),
        None => format!("{project}-{}", service.name),
    }
}

/// The service's configuration hash: a change recreates its containers.
/// Replicas are not part of it (a scale changes how many, not which).
pub fn config_hash(service: &Service) -> String {
    let mut copy = service.clone();
    if let Some(deploy) = &mut copy.deploy {
        deploy.replicas = None;
    }
    let json = serde_json::to_vec(&copy).expect("a service serialises");
    hex::encode(Sha256::digest(&json))
}

/// The labels of the project's objects.
pub fn project_labels(project: &Project) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(PROJECT.to_string(), project.name.clone());
    labels.insert(VERSION.to_string(), COMPOSE_VERSION.to_string());
    labels
}

/// Where secrets and configs given as content are written for the
/// containers to mount.
pub fn files_dir(runroot: &Path, project: &str) -> PathBuf {
    runroot.join("compose").join(project)
}

/// What the container for replica `number` of `service` is.
pub struct Request<'a> {
    pub project: &'a Project,
    pub vars: &'a Vars,
    pub service: &'a Service,
    pub number: u64,
    /// A one-off (`run`): its own name; ports only when asked.
    pub oneoff: Option<String>,
    pub publish_ports: bool,
    /// The containers other services run in, for `network_mode: service:X`.
    pub container_of: &'a dyn Fn(&str) -> Option<String>,
    /// The runroot (secret and config files).
    pub runroot: &'a Path,
    /// The image's id (a label).
    pub image_id: String,
}

impl Request<'_> {
    pub fn spec(&self) -> Result<ContainerSpec> {
        let s = self.service;
        let p = self.project;
        let bad = |e: keel_engine::Error| Error::project(format!("service {:?}: {e}", s.name));
        let name = match &self.oneoff {
            Some(name) => name.clone(),
            None => container_name(&p.name, s, self.number),
        };
        let mut labels = s.labels.clone();
        labels.extend(project_labels(p));
        labels.insert(SERVICE.into(), s.name.clone());
        labels.insert(NUMBER.into(), self.number.to_string());
        labels.insert(
            ONEOFF.into(),
            if self.oneoff.is_some() {
                "True"
            } else {
                "False"
            }
            .into(),
        );
        labels.insert(CONFIG_HASH.into(), config_hash(s));
        labels.insert(
            CONFIG_FILES.into(),
            p.config_files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        labels.insert(WORKING_DIR.into(), p.working_dir.display().to_string());
        labels.insert(
            DEPENDS_ON.into(),
            s.depends_on
                .iter()
                .map(|(n, d)| format!("{n}:{}:{}", d.condition.as_str(), d.restart))
                .collect::<Vec<_>>()
                .join(","),
        );
        labels.insert(IMAGE.into(), self.image_id.clone());

        let mut mounts = Vec::new();
        for v in &s.volumes {
            let mount = match v.kind.as_str() {
                "bind" => {
                    let source = Path::new(&v.source);
                    if !source.exists() {
                        if !v.create_host_path {
                            return Err(Error::project(format!(
                                "service {:?}: bind source path does not exist: {}",
                                s.name, v.source
                            )));
                        }
                        std::fs::create_dir_all(source)
                            .map_err(|e| Error::io(format!("create {}", v.source), e))?;
                    }
                    MountSpec::plain(MountKind::Bind, &v.source, &v.target, v.read_only)
                }
                "tmpfs" => MountSpec {
                    tmpfs_size: v.tmpfs_size,
                    ..MountSpec::plain(MountKind::Tmpfs, "", &v.target, v.read_only)
                },
                _ => MountSpec {
                    no_copy: v.nocopy,
                    // A project volume's real name; empty: anonymous.
                    ..MountSpec::plain(
                        MountKind::Volume,
                        p.volumes
                            .get(&v.source)
                            .map(|vol| vol.name.clone())
                            .unwrap_or_default(),
                        &v.target,
                        v.read_only,
                    )
                },
            };
            mounts.push(mount);
        }
        for t in &s.tmpfs {
            mounts.push(spec::parse_tmpfs_flag(t).map_err(bad)?);
        }
        for (refs, objects, kind) in [
            (&s.secrets, &p.secrets, "secrets"),
            (&s.configs, &p.configs, "configs"),
        ] {
            for r in refs {
                let object = &objects[&r.source];
                let source = match (&object.file, r.mode) {
                    (Some(file), None) => file.clone(),
                    _ => {
                        // Content, an environment variable, or a file with
                        // a mode of its own: a copy the container mounts.
                        let dir = files_dir(self.runroot, &p.name).join(kind);
                        std::fs::create_dir_all(&dir)
                            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
                        let path = dir.join(&r.source);
                        let content = p.file_content(object, self.vars)?;
                        std::fs::write(&path, content)
                            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
                        let mode = r.mode.unwrap_or(0o444);
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
                        path
                    }
                };
                if !source.exists() {
                    return Err(Error::project(format!(
                        "service {:?}: {kind} {:?}: {} does not exist",
                        s.name,
                        r.source,
                        source.display()
                    )));
                }
                mounts.push(MountSpec::plain(
                    MountKind::Bind,
                    source.display().to_string(),
                    &r.target,
                    true,
                ));
            }
        }

        let limits = s
            .deploy
            .as_ref()
            .map(|d| d.resources.clone())
            .unwrap_or_default();
        let resources = spec::ResourceSpec {
            memory: limits.limits.memory.map(|m| m as i64),
            memory_swap: None,
            memory_reservation: limits.reservations.memory.map(|m| m as i64),
            nano_cpus: limits
                .limits
                .cpus
                .map(|c| spec::parse_cpus(&c.to_string()))
                .transpose()
                .map_err(bad)?,
            cpu_shares: None,
            cpuset_cpus: None,
            pids_limit: limits.limits.pids,
            ulimits: s
                .ulimits
                .iter()
                .map(|u| spec::parse_ulimit(u))
                .collect::<keel_engine::Result<_>>()
                .map_err(bad)?,
            shm_size: (s.shm_size > 0).then_some(s.shm_size),
        };

        // Networks: the mode, or the project's networks by their real names,
        // higher priority first, each with the service's name as an alias.
        let (network, networks) = match s.network_mode.as_deref() {
            Some("none") => (NetworkMode::None, Vec::new()),
            Some("host") => (NetworkMode::Host, Vec::new()),
            Some(mode) if mode.starts_with("service:") => {
                let other = &mode["service:".len()..];
                let id = (self.container_of)(other).ok_or_else(|| {
                    Error::project(format!(
                        "service {:?} uses the network of service {other:?}, which has no container",
                        s.name
                    ))
                })?;
                (NetworkMode::Container(id), Vec::new())
            }
            Some(mode) if mode.starts_with("container:") => (
                NetworkMode::Container(mode["container:".len()..].to_string()),
                Vec::new(),
            ),
            Some("bridge") | Some("default") => (
                NetworkMode::Bridge,
                vec![NetworkAttachment {
                    name: "bridge".into(),
                    ..Default::default()
                }],
            ),
            Some(other) => {
                return Err(Error::project(format!(
                    "service {:?}: network_mode {other:?} is not supported by keel: none, host, bridge, service:NAME or container:NAME",
                    s.name
                )));
            }
            None => {
                let mut ordered: Vec<(&String, &crate::model::ServiceNetwork)> =
                    s.networks.iter().collect();
                ordered.sort_by_key(|(name, n)| (-n.priority.unwrap_or(0), (*name).clone()));
                let mut out = Vec::new();
                for (key, n) in ordered {
                    let real = match p.networks.get(key) {
                        Some(net) => net.name.clone(),
                        None => format!("{}_{key}", p.name),
                    };
                    let mut aliases = vec![s.name.clone()];
                    aliases.extend(n.aliases.iter().cloned());
                    out.push(NetworkAttachment {
                        id: String::new(),
                        name: real,
                        aliases,
                        ipv4: n
                            .ipv4_address
                            .as_deref()
                            .map(|ip| options::parse_ip(ip, true))
                            .transpose()
                            .map_err(bad)?,
                        ipv6: n
                            .ipv6_address
                            .as_deref()
                            .map(|ip| options::parse_ip(ip, false))
                            .transpose()
                            .map_err(bad)?,
                    });
                }
                (NetworkMode::Bridge, out)
            }
        };
        let publish = if self.oneoff.is_none() || self.publish_ports {
            if network == NetworkMode::Bridge {
                s.ports
                    .iter()
                    .map(|port| spec::parse_publish(&port.flag()))
                    .collect::<keel_engine::Result<Vec<_>>>()
                    .map_err(bad)?
                    .into_iter()
                    .flatten()
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        let (seccomp, no_new_privileges) =
            options::security_options(&s.security_opt).map_err(bad)?;
        let log = match &s.logging {
            Some(l) => options::log_options(
                l.driver.as_deref().unwrap_or(""),
                l.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(bad)?,
            None => Default::default(),
        };
        let health = match &s.healthcheck {
            None => None,
            Some(h) if h.test.first().map(String::as_str) == Some("NONE") => HealthFlags {
                none: true,
                ..Default::default()
            }
            .to_spec()
            .map_err(bad)?,
            Some(h) => Some(HealthSpec {
                test: h.test.clone(),
                interval_ms: h.interval_ms,
                timeout_ms: h.timeout_ms,
                start_period_ms: h.start_period_ms,
                retries: h.retries,
            }),
        };
        let restart = match (&self.oneoff, &s.restart) {
            (None, Some(text)) => spec::parse_restart(text).map_err(bad)?,
            _ => spec::RestartPolicy::No,
        };
        let spec = ContainerSpec {
            image: image_name(&p.name, s),
            name: Some(name),
            command: s.command.clone().unwrap_or_default(),
            entrypoint: s.entrypoint.clone(),
            env: s
                .environment
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect(),
            workdir: s.working_dir.clone(),
            user: s.user.clone(),
            group_add: s.group_add.clone(),
            hostname: s.hostname.clone(),
            labels,
            tty: s.tty,
            interactive: s.stdin_open,
            auto_remove: false,
            mounts,
            resources,
            cap_add: s.cap_add.clone(),
            cap_drop: s.cap_drop.clone(),
            privileged: s.privileged,
            seccomp,
            no_new_privileges,
            read_only: s.read_only,
            init: s.init,
            restart,
            stop_signal: s.stop_signal.clone(),
            stop_timeout: s.stop_grace_period,
            health,
            network,
            networks,
            publish,
            publish_all: false,
            extra_hosts: s
                .extra_hosts
                .iter()
                .map(|h| spec::parse_add_host(h))
                .collect::<keel_engine::Result<_>>()
                .map_err(bad)?,
            dns: s.dns.clone(),
            dns_search: s.dns_search.clone(),
            devices: s
                .devices
                .iter()
                .map(|d| spec::parse_device(d))
                .collect::<keel_engine::Result<_>>()
                .map_err(bad)?,
            sysctls: s.sysctls.clone(),
            isolation: s
                .isolation
                .as_deref()
                .map(spec::Isolation::parse)
                .transpose()
                .map_err(bad)?
                .unwrap_or_default(),
            log,
        };
        options::check(&spec).map_err(bad)?;
        Ok(spec)
    }
}
