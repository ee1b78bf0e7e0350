//! `inspect` of a container, typed: docker's shape for the fields keel
//! has. `keel inspect` and the API's `GET /containers/{id}/json` serialise
//! this one value.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keel_image::manifest::Healthcheck;
use serde::Serialize;

use crate::db::{Container, Status};
use crate::engine::Engine;
use crate::spec::ContainerSpec;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: Option<String>,
    pub args: Vec<String>,
    pub state: StateView,
    pub image: String,
    pub resolv_conf_path: PathBuf,
    pub hostname_path: PathBuf,
    pub hosts_path: PathBuf,
    pub log_path: PathBuf,
    pub name: String,
    pub restart_count: u32,
    pub driver: &'static str,
    pub platform: &'static str,
    pub host_config: HostConfigView,
    pub graph_driver: GraphDriver,
    pub mounts: Vec<MountView>,
    pub network_settings: serde_json::Value,
    pub config: ConfigView,
    /// Bytes in the writable layer, when asked for (`--size`, `size=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<u64>,
    /// A micro-VM's guest (`--isolation vm`): kernel, VMM, accelerator and
    /// size, as its last boot had them.
    #[serde(rename = "MicroVM", skip_serializing_if = "Option::is_none")]
    pub micro_vm: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StateView {
    pub status: &'static str,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    pub health: Option<HealthView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthView {
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<ProbeView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeView {
    pub start: String,
    pub end: String,
    pub exit_code: i32,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBindingView {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicyView {
    pub name: &'static str,
    pub maximum_retry_count: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UlimitView {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogConfigView {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    #[serde(rename = "Config")]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfigView {
    pub binds: Option<Vec<String>>,
    pub auto_remove: bool,
    pub privileged: bool,
    pub readonly_rootfs: bool,
    pub network_mode: String,
    pub port_bindings: BTreeMap<String, Vec<PortBindingView>>,
    pub publish_all_ports: bool,
    pub dns_search: Vec<String>,
    pub restart_policy: RestartPolicyView,
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    pub nano_cpus: i64,
    pub cpu_shares: u64,
    pub cpuset_cpus: String,
    pub pids_limit: Option<i64>,
    pub shm_size: u64,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub init: bool,
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub ulimits: Vec<UlimitView>,
    pub log_config: LogConfigView,
    /// `default` (the host's kernel) or `vm`.
    pub isolation: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    pub name: &'static str,
    pub data: GraphDriverData,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriverData {
    pub lower_dir: String,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
    pub merged_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountView {
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub name: Option<String>,
    pub source: String,
    pub destination: String,
    pub driver: &'static str,
    pub mode: &'static str,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigView {
    pub hostname: String,
    pub user: String,
    pub tty: bool,
    pub open_stdin: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub image: String,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
    pub stop_timeout: Option<u32>,
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    pub healthcheck: Option<Healthcheck>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}

/// `HostConfig.PortBindings`: the ports as asked for.
fn port_bindings(spec: &ContainerSpec) -> BTreeMap<String, Vec<PortBindingView>> {
    let mut map: BTreeMap<String, Vec<PortBindingView>> = BTreeMap::new();
    for p in &spec.publish {
        map.entry(format!("{}/{}", p.container_port, p.protocol))
            .or_default()
            .push(PortBindingView {
                host_ip: p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                host_port: match (p.host_port, p.host_port_end) {
                    (0, _) => String::new(),
                    (a, b) if b > a => format!("{a}-{b}"),
                    (a, _) => a.to_string(),
                },
            });
    }
    map
}

const NEVER: &str = "0001-01-01T00:00:00Z";

/// docker's `inspect` of a container; `size`: with `SizeRw`.
pub fn container(engine: &mut Engine, c: &Container, size: bool) -> ContainerInspect {
    let s = &c.state;
    let run = engine.run_config(&c.id).unwrap_or_default();
    let image_config = run.image_config.config.clone().unwrap_or_default();
    let spec = &c.spec;
    let hostname = crate::oci::hostname(spec, &c.id);
    let env = crate::oci::environment(&run.image_config, spec, &hostname, "/root")
        .into_iter()
        .filter(|e| !e.starts_with("HOME=") || spec.env.iter().any(|u| u.starts_with("HOME=")))
        .collect::<Vec<_>>();
    let r = &spec.resources;
    // docker: the image's EXPOSEd ports and the published ones.
    let mut exposed = image_config.exposed_ports.clone().unwrap_or_default();
    for port in &spec.publish {
        exposed
            .entry(format!("{}/{}", port.container_port, port.protocol))
            .or_insert_with(|| serde_json::json!({}));
    }
    let binds: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| m.volume_flag.clone())
        .collect();
    ContainerInspect {
        id: c.id.clone(),
        created: c.created.clone(),
        path: c.args.first().cloned(),
        args: c.args.get(1..).unwrap_or_default().to_vec(),
        state: StateView {
            status: s.status.as_str(),
            running: matches!(s.status, Status::Running | Status::Paused),
            paused: s.status == Status::Paused,
            restarting: s.status == Status::Restarting,
            oom_killed: s.oom_killed,
            dead: s.status == Status::Dead,
            pid: s.pid,
            exit_code: s.exit_code,
            error: s.error.clone(),
            started_at: s.started_at.clone().unwrap_or_else(|| NEVER.into()),
            finished_at: s.finished_at.clone().unwrap_or_else(|| NEVER.into()),
            health: s.health.as_ref().map(|h| HealthView {
                status: h.status.clone(),
                failing_streak: h.failing_streak,
                log: h
                    .log
                    .iter()
                    .map(|p| ProbeView {
                        start: p.start.clone(),
                        end: p.end.clone(),
                        exit_code: p.exit_code,
                        output: p.output.clone(),
                    })
                    .collect(),
            }),
        },
        micro_vm: (c.spec.isolation == crate::spec::Isolation::Vm).then(|| {
            std::fs::read(
                engine
                    .layout
                    .bundle(&c.id)
                    .join(keel_runtime::vm::GUEST_INFO),
            )
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(serde_json::Value::Null)
        }),
        image: c.image_id.clone(),
        resolv_conf_path: engine.layout.file(&c.id, "resolv.conf"),
        hostname_path: engine.layout.file(&c.id, "hostname"),
        hosts_path: engine.layout.file(&c.id, "hosts"),
        log_path: engine.layout.log(&c.id),
        name: format!("/{}", c.name),
        restart_count: s.restart_count,
        driver: "overlay",
        platform: "linux",
        host_config: HostConfigView {
            binds: (!binds.is_empty()).then_some(binds),
            auto_remove: spec.auto_remove,
            privileged: spec.privileged,
            readonly_rootfs: spec.read_only,
            network_mode: spec.network.name(&spec.networks),
            isolation: spec.isolation.as_str(),
            port_bindings: port_bindings(spec),
            publish_all_ports: spec.publish_all,
            dns_search: spec.dns_search.clone(),
            restart_policy: RestartPolicyView {
                name: spec.restart.name(),
                maximum_retry_count: spec.restart.max_retries(),
            },
            memory: r.memory.unwrap_or(0),
            memory_swap: r.memory_swap.unwrap_or(0),
            memory_reservation: r.memory_reservation.unwrap_or(0),
            nano_cpus: r.nano_cpus.unwrap_or(0),
            cpu_shares: r.cpu_shares.unwrap_or(0),
            cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
            pids_limit: r.pids_limit,
            shm_size: r.shm_size.unwrap_or(crate::oci::DEFAULT_SHM_SIZE),
            cap_add: spec.cap_add.clone(),
            cap_drop: spec.cap_drop.clone(),
            init: spec.init,
            extra_hosts: spec
                .extra_hosts
                .iter()
                .map(|(h, ip)| format!("{h}:{ip}"))
                .collect(),
            dns: spec.dns.clone(),
            ulimits: r
                .ulimits
                .iter()
                .map(|u| UlimitView {
                    name: u.name.clone(),
                    soft: u.soft,
                    hard: u.hard,
                })
                .collect(),
            log_config: LogConfigView {
                kind: "json-file",
                config: log_config(&spec.log),
            },
        },
        graph_driver: GraphDriver {
            name: "overlay",
            data: GraphDriverData {
                lower_dir: run
                    .layers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                upper_dir: engine.layout.diff(&c.id),
                work_dir: engine.layout.work(&c.id),
                merged_dir: engine.layout.rootfs(&c.id),
            },
        },
        mounts: c
            .mounts
            .iter()
            .map(|m| MountView {
                kind: m.kind.as_str(),
                name: m.name.clone(),
                source: m
                    .source
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                destination: m.target.clone(),
                driver: if m.name.is_some() { "local" } else { "" },
                mode: if m.read_only { "ro" } else { "" },
                rw: !m.read_only,
                propagation: m.propagation.clone().unwrap_or_default(),
            })
            .collect(),
        network_settings: super::network::settings(engine, c),
        config: ConfigView {
            hostname,
            user: spec
                .user
                .clone()
                .or(image_config.user.clone())
                .unwrap_or_default(),
            tty: spec.tty,
            open_stdin: spec.interactive,
            env,
            cmd: if spec.command.is_empty() && spec.entrypoint.is_none() {
                image_config.cmd.clone()
            } else {
                Some(spec.command.clone())
            },
            entrypoint: spec.entrypoint.clone().or(image_config.entrypoint.clone()),
            image: c.image.clone(),
            working_dir: spec
                .workdir
                .clone()
                .or(image_config.working_dir.clone())
                .unwrap_or_default(),
            labels: spec.labels.clone(),
            stop_signal: crate::oci::stop_signal(&run.image_config, spec),
            stop_timeout: spec.stop_timeout,
            exposed_ports: exposed,
            healthcheck: crate::health::config_of(&run.image_config, spec),
            volumes: image_config.volumes.clone(),
        },
        size_rw: size.then(|| crate::copy::tree_size(&engine.layout.diff(&c.id))),
    }
}

/// The log options as docker shows them (`max-size`, `max-file`).
fn log_config(log: &crate::spec::LogOptions) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    if let Some(size) = log.max_size {
        let text = match size {
            0 => "-1".to_string(),
            s if s % (1 << 30) == 0 => format!("{}g", s >> 30),
            s if s % (1 << 20) == 0 => format!("{}m", s >> 20),
            s if s % (1 << 10) == 0 => format!("{}k", s >> 10),
            s => s.to_string(),
        };
        config.insert("max-size".to_string(), text);
    }
    if let Some(files) = log.max_file {
        config.insert("max-file".to_string(), files.to_string());
    }
    config
}
