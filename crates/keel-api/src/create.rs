//! `POST /containers/create`: docker's body (`Config` at the top level,
//! `HostConfig`, `NetworkingConfig`) as keel's request, through the same
//! option parsers as the CLI's flags (keel-engine's `spec` and `options`).
//!
//! Unknown fields are ignored, as docker does (clients newer than the
//! server send them); fields docker has and keel does not honour, when set
//! to something other than their default, are refused by name.

use std::collections::BTreeMap;

use keel_engine::options::{self, HealthFlags, NetworkChoice};
use keel_engine::spec::{self, ContainerSpec, HealthSpec, MountKind, MountSpec};
use serde::Deserialize;

use crate::http::{ApiError, ApiResult};

/// A string, or a list of them (`Cmd`, `Entrypoint`, `Healthcheck.Test`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub user: Option<String>,
    pub attach_stdin: Option<bool>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<StringOrList>,
    pub healthcheck: Option<Healthcheck>,
    pub image: Option<String>,
    pub working_dir: Option<String>,
    pub entrypoint: Option<StringOrList>,
    pub network_disabled: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    pub test: Option<StringOrList>,
    /// Nanoseconds, as docker's API has them.
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub log_config: Option<LogConfig>,
    pub network_mode: Option<String>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub restart_policy: Option<RestartPolicy>,
    pub auto_remove: Option<bool>,
    pub volumes_from: Option<Vec<String>>,
    pub mounts: Option<Vec<Mount>>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub dns: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub extra_hosts: Option<Vec<String>>,
    pub group_add: Option<Vec<String>>,
    pub links: Option<Vec<String>>,
    pub privileged: Option<bool>,
    pub publish_all_ports: Option<bool>,
    pub readonly_rootfs: Option<bool>,
    pub security_opt: Option<Vec<String>>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub shm_size: Option<u64>,
    pub sysctls: Option<BTreeMap<String, String>>,
    pub isolation: Option<String>,
    pub cpu_shares: Option<u64>,
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub devices: Option<Vec<Device>>,
    pub init: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub config: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: Option<String>,
    pub maximum_retry_count: Option<u32>,
}

impl RestartPolicy {
    /// The policy docker's `RestartPolicy` names; None when it names none.
    pub fn parse(self) -> ApiResult<Option<spec::RestartPolicy>> {
        let Some(name) = self.name.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let text = match self.maximum_retry_count {
            Some(n) if n > 0 && name == "on-failure" => format!("on-failure:{n}"),
            _ => name,
        };
        spec::parse_restart(&text).map(Some).map_err(invalid)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<bool>,
    pub bind_options: Option<BindOptions>,
    pub volume_options: Option<VolumeOptions>,
    pub tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct BindOptions {
    pub propagation: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeOptions {
    pub no_copy: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    pub size_bytes: Option<u64>,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Device {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, Option<EndpointConfig>>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<IpamConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: Option<String>,
}

fn invalid(e: keel_engine::Error) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// The request, and docker's warnings about it.
pub fn to_spec(body: CreateBody, name: Option<String>) -> ApiResult<(ContainerSpec, Vec<String>)> {
    let host = body.host_config.unwrap_or_default();
    let image = body.image.filter(|i| !i.is_empty()).ok_or_else(|| {
        ApiError::bad_request("config cannot be empty in order to create a container")
    })?;
    if host.volumes_from.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request(
            "HostConfig.VolumesFrom is not supported by keel",
        ));
    }
    if host.links.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::bad_request(
            "HostConfig.Links is not supported by keel: containers on a user network reach each other by name",
        ));
    }
    let mut warnings = Vec::new();
    let mut mounts = Vec::new();
    for bind in host.binds.unwrap_or_default() {
        mounts.push(spec::parse_volume_flag(&bind).map_err(invalid)?);
    }
    for m in host.mounts.unwrap_or_default() {
        mounts.push(mount(m)?);
    }
    for (target, opts) in host.tmpfs.unwrap_or_default() {
        let flag = if opts.is_empty() {
            target
        } else {
            format!("{target}:{opts}")
        };
        mounts.push(spec::parse_tmpfs_flag(&flag).map_err(invalid)?);
    }
    // An image's anonymous volumes come from the image; `Volumes` in the
    // request adds more.
    for target in body.volumes.unwrap_or_default().into_keys() {
        if !mounts.iter().any(|m| m.target == target) {
            mounts.push(spec::parse_volume_flag(&target).map_err(invalid)?);
        }
    }
    let mut publish = Vec::new();
    for (port, bindings) in host.port_bindings.unwrap_or_default() {
        for b in bindings.unwrap_or_default() {
            let ip = b.host_ip.unwrap_or_default();
            let host_port = b.host_port.unwrap_or_default();
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            let flag = match (ip.is_empty(), host_port.is_empty()) {
                (true, true) => port.clone(),
                (true, false) => format!("{host_port}:{port}"),
                (false, _) => format!("{ip}:{host_port}:{port}"),
            };
            publish.extend(spec::parse_publish(&flag).map_err(invalid)?);
        }
    }
    let publish_all = host.publish_all_ports.unwrap_or(false);
    // The networks: NetworkMode first, then the other endpoints named.
    let mode = host
        .network_mode
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "default".into());
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default();
    let mut names = vec![if mode == "default" {
        "bridge".to_string()
    } else {
        mode.clone()
    }];
    for key in endpoints.keys() {
        if key != &mode && !(mode == "default" && key == "bridge") {
            names.push(key.clone());
        }
    }
    let first = endpoints
        .get(&mode)
        .or_else(|| endpoints.values().next())
        .cloned()
        .flatten()
        .unwrap_or_default();
    let ipam = first.ipam_config.unwrap_or_default();
    let special = mode == "host" || mode == "none" || mode.starts_with("container:");
    let choice = NetworkChoice {
        names: if body.network_disabled == Some(true) {
            vec!["none".into()]
        } else {
            names
        },
        // docker's CLI repeats the container's short id as an alias; keel's
        // DNS answers for names and ids already.
        aliases: if special {
            Vec::new()
        } else {
            first.aliases.unwrap_or_default()
        },
        ipv4: ipam.ipv4_address.filter(|a| !a.is_empty()),
        ipv6: ipam.ipv6_address.filter(|a| !a.is_empty()),
    };
    let networks = choice
        .resolve(!publish.is_empty() || publish_all)
        .map_err(invalid)?;
    if networks.ports_discarded {
        warnings.push(options::PORTS_DISCARDED.to_string());
    }
    let (seccomp, no_new_privileges) =
        options::security_options(&host.security_opt.unwrap_or_default()).map_err(invalid)?;
    let log_config = host.log_config.unwrap_or_default();
    let log_opts = log_config.config.unwrap_or_default();
    let log = options::log_options(
        log_config.kind.as_deref().unwrap_or(""),
        log_opts.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(invalid)?;
    let health = match body.healthcheck {
        None => None,
        Some(h) => health(h)?,
    };
    let restart = host
        .restart_policy
        .map(RestartPolicy::parse)
        .transpose()?
        .flatten()
        .unwrap_or(spec::RestartPolicy::No);
    let entrypoint = body.entrypoint.map(|e| {
        let v = e.into_vec();
        if v.len() == 1 && v[0].is_empty() {
            Vec::new()
        } else {
            v
        }
    });
    let spec = ContainerSpec {
        image,
        name: name.filter(|n| !n.is_empty()),
        command: body.cmd.map(StringOrList::into_vec).unwrap_or_default(),
        entrypoint,
        env: body.env.unwrap_or_default(),
        workdir: body.working_dir.filter(|w| !w.is_empty()),
        user: body.user.filter(|u| !u.is_empty()),
        group_add: host.group_add.unwrap_or_default(),
        hostname: body.hostname.filter(|h| !h.is_empty()),
        labels: body.labels.unwrap_or_default(),
        tty: body.tty.unwrap_or(false),
        interactive: body.open_stdin.unwrap_or(false),
        auto_remove: host.auto_remove.unwrap_or(false),
        mounts,
        resources: spec::ResourceSpec {
            memory: host.memory.filter(|m| *m > 0),
            memory_swap: host.memory_swap.filter(|m| *m != 0),
            memory_reservation: host.memory_reservation.filter(|m| *m > 0),
            nano_cpus: host.nano_cpus.filter(|n| *n > 0),
            cpu_shares: host.cpu_shares.filter(|n| *n > 0),
            cpuset_cpus: host.cpuset_cpus.filter(|c| !c.is_empty()),
            pids_limit: host.pids_limit.filter(|p| *p != 0),
            ulimits: host
                .ulimits
                .unwrap_or_default()
                .into_iter()
                .map(|u| spec::parse_ulimit(&format!("{}={}:{}", u.name, u.soft, u.hard)))
                .collect::<keel_engine::Result<_>>()
                .map_err(invalid)?,
            shm_size: host.shm_size.filter(|s| *s > 0),
        },
        cap_add: host.cap_add.unwrap_or_default(),
        cap_drop: host.cap_drop.unwrap_or_default(),
        privileged: host.privileged.unwrap_or(false),
        seccomp,
        no_new_privileges,
        read_only: host.readonly_rootfs.unwrap_or(false),
        init: host.init.unwrap_or(false),
        restart,
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout,
        health,
        network: networks.mode,
        networks: networks.attachments,
        publish,
        publish_all,
        extra_hosts: host
            .extra_hosts
            .unwrap_or_default()
            .iter()
            .map(|h| spec::parse_add_host(h))
            .collect::<keel_engine::Result<_>>()
            .map_err(invalid)?,
        dns: host.dns.unwrap_or_default(),
        dns_search: host.dns_search.unwrap_or_default(),
        devices: host
            .devices
            .unwrap_or_default()
            .iter()
            .map(|d| {
                let perms = if d.cgroup_permissions.is_empty() {
                    "rwm"
                } else {
                    &d.cgroup_permissions
                };
                let inside = if d.path_in_container.is_empty() {
                    &d.path_on_host
                } else {
                    &d.path_in_container
                };
                spec::parse_device(&format!("{}:{inside}:{perms}", d.path_on_host))
            })
            .collect::<keel_engine::Result<_>>()
            .map_err(invalid)?,
        sysctls: host.sysctls.unwrap_or_default(),
        isolation: spec::Isolation::parse(host.isolation.as_deref().unwrap_or(""))?,
        log,
    };
    let _ = body.domainname;
    let _ = body.attach_stdin;
    let _ = body.exposed_ports;
    options::check(&spec).map_err(invalid)?;
    Ok((spec, warnings))
}

/// `HostConfig.Mounts`: docker's long form.
fn mount(m: Mount) -> ApiResult<MountSpec> {
    let target = m
        .target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("invalid mount config: Target must not be empty"))?;
    let kind = match m.kind.as_deref().unwrap_or("volume") {
        "bind" => MountKind::Bind,
        "volume" => MountKind::Volume,
        "tmpfs" => MountKind::Tmpfs,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid mount config: mount type {other:?} is not supported by keel"
            )));
        }
    };
    let source = m.source.unwrap_or_default();
    if kind == MountKind::Bind && !source.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "invalid mount config for type \"bind\": invalid mount path: '{source}' mount path must be absolute"
        )));
    }
    if kind == MountKind::Bind && !std::path::Path::new(&source).exists() {
        return Err(ApiError::bad_request(format!(
            "invalid mount config for type \"bind\": bind source path does not exist: {source}"
        )));
    }
    let tmpfs = m.tmpfs_options.unwrap_or_default();
    Ok(MountSpec {
        kind,
        source,
        target,
        read_only: m.read_only.unwrap_or(false),
        tmpfs_size: tmpfs.size_bytes.filter(|s| *s > 0),
        tmpfs_mode: tmpfs.mode.filter(|m| *m > 0),
        no_copy: m.volume_options.and_then(|v| v.no_copy).unwrap_or(false),
        propagation: m
            .bind_options
            .and_then(|b| b.propagation)
            .filter(|p| !p.is_empty()),
        volume_flag: None,
    })
}

/// `Healthcheck` (durations in nanoseconds); `["NONE"]` turns the image's off.
fn health(h: Healthcheck) -> ApiResult<Option<HealthSpec>> {
    let test = h.test.map(StringOrList::into_vec).unwrap_or_default();
    if test.first().map(String::as_str) == Some("NONE") {
        return HealthFlags {
            none: true,
            ..Default::default()
        }
        .to_spec()
        .map_err(invalid);
    }
    let ms = |ns: Option<u64>| ns.filter(|n| *n > 0).map(|n| n / 1_000_000);
    if test.is_empty()
        && h.interval.unwrap_or(0) == 0
        && h.timeout.unwrap_or(0) == 0
        && h.start_period.unwrap_or(0) == 0
        && h.retries.unwrap_or(0) == 0
    {
        return Ok(None);
    }
    Ok(Some(HealthSpec {
        test,
        interval_ms: ms(h.interval),
        timeout_ms: ms(h.timeout),
        start_period_ms: ms(h.start_period),
        retries: h.retries.filter(|r| *r > 0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> CreateBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn what_the_docker_cli_sends_for_run() {
        let (spec, warnings) = to_spec(
            body(
                r#"{"Image":"busybox","Cmd":["echo","hi"],"Env":["A=1"],"Labels":{"k":"v"},
                "HostConfig":{"AutoRemove":true,"Binds":["/tmp:/data:ro"],
                  "PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},
                  "RestartPolicy":{"Name":"no","MaximumRetryCount":0},
                  "LogConfig":{"Type":"","Config":{}},"NetworkMode":"default",
                  "Tmpfs":{"/run":"size=1m"},"Unknown":1},
                "NetworkingConfig":{"EndpointsConfig":{}}}"#,
            ),
            Some("web".into()),
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(spec.image, "busybox");
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(spec.command, vec!["echo", "hi"]);
        assert!(spec.auto_remove);
        assert_eq!(spec.mounts.len(), 2);
        assert!(spec.mounts[0].read_only);
        assert_eq!(spec.publish[0].host_port, 8080);
        assert_eq!(spec.networks[0].name, "bridge");
    }

    #[test]
    fn user_networks_with_aliases_and_addresses() {
        let (spec, _) = to_spec(
            body(
                r#"{"Image":"busybox","HostConfig":{"NetworkMode":"app"},
                "NetworkingConfig":{"EndpointsConfig":{"app":{"Aliases":["db"],
                  "IPAMConfig":{"IPv4Address":"10.5.0.9"}}}}}"#,
            ),
            None,
        )
        .unwrap();
        assert_eq!(spec.networks.len(), 1);
        assert_eq!(spec.networks[0].name, "app");
        assert_eq!(spec.networks[0].aliases, vec!["db"]);
        assert_eq!(spec.networks[0].ipv4.unwrap().to_string(), "10.5.0.9");
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = to_spec(body(r#"{"Cmd":["x"]}"#), None).unwrap_err();
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        let e = to_spec(
            body(r#"{"Image":"b","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("--restart and --rm"), "{}", e.message);
        let e = to_spec(
            body(r#"{"Image":"b","HostConfig":{"LogConfig":{"Type":"syslog"}}}"#),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("syslog"));
        let e = to_spec(
            body(r#"{"Image":"b","HostConfig":{"Mounts":[{"Type":"bind","Source":"rel","Target":"/x"}]}}"#),
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("must be absolute"));
    }

    #[test]
    fn healthchecks_in_nanoseconds() {
        let (spec, _) = to_spec(
            body(
                r#"{"Image":"b","Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":2000000000,"Retries":3}}"#,
            ),
            None,
        )
        .unwrap();
        let h = spec.health.unwrap();
        assert_eq!(h.interval_ms, Some(2000));
        assert_eq!(h.retries, Some(3));
        let (spec, _) = to_spec(
            body(r#"{"Image":"b","Healthcheck":{"Test":["NONE"]}}"#),
            None,
        )
        .unwrap();
        assert_eq!(spec.health.unwrap().test, vec!["NONE"]);
    }
}
