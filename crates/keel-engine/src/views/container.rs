//! A container as docker shows it: `ps` rows and their filters, the
//! API's list entries, and `inspect`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{human_duration, human_size, seconds_since};
use crate::db::{Container, Status};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::spec::NetworkMode;

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

pub fn command_text(container: &Container, no_trunc: bool) -> String {
    let command = container.args.join(" ");
    if no_trunc || command.chars().count() <= 20 {
        format!("\"{command}\"")
    } else {
        format!("\"{}…\"", command.chars().take(19).collect::<String>())
    }
}

pub fn short_image(container: &Container) -> String {
    keel_image::reference::Reference::parse(&container.image)
        .map(|r| match r.tag() {
            Some("latest") | None if !container.image.contains(':') => r.familiar_name(),
            Some(tag) => format!("{}:{tag}", r.familiar_name()),
            None => r.familiar_name(),
        })
        .unwrap_or_else(|_| container.image.clone())
}

/// One row of `ps`: the object docker's `--format` templates see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PsRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub image: String,
    pub command: String,
    pub created_at: String,
    pub running_for: String,
    pub status: String,
    pub state: String,
    pub ports: String,
    pub names: String,
    pub labels: String,
    pub mounts: String,
    pub networks: String,
    pub size: String,
    /// `default` or `vm`.
    pub isolation: String,
}

/// The `ps` row of `container`: `size` is its writable layer's bytes and
/// its image's (`-s`), `ports` the text of its published ports.
pub fn ps_row(
    container: &Container,
    no_trunc: bool,
    size: Option<(u64, u64)>,
    ports: String,
) -> PsRow {
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
    PsRow {
        id: if no_trunc {
            container.id.clone()
        } else {
            container.id[..12].to_string()
        },
        image: short_image(container),
        command: command_text(container, no_trunc),
        created_at: container.created.clone(),
        running_for: format!(
            "{} ago",
            human_duration(seconds_since(Some(&container.created)))
        ),
        status: status_text(container),
        state: container.state.status.as_str().to_string(),
        ports,
        names: container.name.clone(),
        labels,
        mounts,
        networks: network_names(container).join(","),
        isolation: container.spec.isolation.as_str().to_string(),
        size: size
            .map(|(own, image)| {
                format!("{} (virtual {})", human_size(own), human_size(own + image))
            })
            .unwrap_or_default(),
    }
}

/// The names of the networks a container is on (`host`, `none`,
/// `container:ID` for the modes without networks of their own).
pub fn network_names(container: &Container) -> Vec<String> {
    match &container.spec.network {
        NetworkMode::Bridge => container
            .spec
            .networks
            .iter()
            .map(|n| n.name.clone())
            .collect(),
        other => vec![other.name(&[])],
    }
}

pub fn matches_filters(container: &Container, filters: &[String]) -> Result<bool> {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for filter in filters {
        let (key, value) = filter.split_once('=').ok_or_else(|| {
            Error::invalid(format!(
                "bad format of filter (expected name=value): {filter:?}"
            ))
        })?;
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
                        return Err(Error::invalid(format!("invalid filter 'status={v}'")));
                    }
                }
                any(&|v| v == container.state.status.as_str())
            }
            "name" => any(&|v| container.name.contains(v.trim_start_matches('/'))),
            "id" => any(&|v| container.id.starts_with(v)),
            // Every label asked for must be there (docker's AND).
            "label" => values.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => container.spec.labels.get(k).is_some_and(|x| x == val),
                None => container.spec.labels.contains_key(*v),
            }),
            "network" => any(&|v| {
                network_names(container).iter().any(|n| n == v)
                    || container.spec.networks.iter().any(|n| n.id.starts_with(v))
            }),
            "volume" => any(&|v| {
                container.mounts.iter().any(|m| {
                    m.name.as_deref() == Some(v)
                        || m.target == v
                        || m.source.as_ref().is_some_and(|s| s.to_str() == Some(v))
                })
            }),
            "health" => any(&|v| {
                let status = container
                    .state
                    .health
                    .as_ref()
                    .map(|h| h.status.as_str())
                    .unwrap_or("none");
                status == v
            }),
            "is-task" => any(&|v| v == "false"),
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
            other => return Err(Error::invalid(format!("invalid filter '{other}'"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// docker's `inspect` of a container as JSON (see [`super::inspect`] for
/// its typed form); `size`: with `SizeRw`.
pub fn inspect_sized(engine: &mut Engine, c: &Container, size: bool) -> serde_json::Value {
    serde_json::to_value(super::inspect::container(engine, c, size)).unwrap_or_default()
}

/// A published port as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortSummary {
    #[serde(rename = "IP", skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub private_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    #[serde(rename = "Type")]
    pub kind: String,
}

/// A mount as the API's container list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountSummary {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub source: String,
    pub destination: String,
    pub driver: String,
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    pub propagation: String,
}

/// One entry of the API's container list (`GET /containers/json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<PortSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_rw: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_root_fs: Option<u64>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: serde_json::Value,
    pub network_settings: serde_json::Value,
    pub mounts: Vec<MountSummary>,
}

/// The API's list entry of `container`; `sizes` are its writable layer's
/// bytes and its image's, when asked for.
pub fn summary(
    engine: &mut Engine,
    container: &Container,
    sizes: Option<(u64, u64)>,
) -> ContainerSummary {
    let endpoints = crate::network::endpoints_of(&mut engine.db, container).unwrap_or_default();
    let mut ports = Vec::new();
    for port in endpoints.iter().flat_map(|e| e.ports.iter()) {
        for ip in port.host_addresses() {
            ports.push(PortSummary {
                ip: Some(ip.to_string()),
                private_port: port.container_port,
                public_port: Some(port.host_port),
                kind: port.protocol.clone(),
            });
        }
    }
    let settings = super::network::settings_from(container, &endpoints);
    ContainerSummary {
        id: container.id.clone(),
        names: vec![format!("/{}", container.name)],
        image: container.image.clone(),
        image_id: container.image_id.clone(),
        command: container.args.join(" "),
        created: super::unix_seconds(&container.created).unwrap_or(0),
        ports,
        size_rw: sizes.map(|(own, _)| own),
        size_root_fs: sizes.map(|(own, image)| own + image),
        labels: container.spec.labels.clone(),
        state: container.state.status.as_str().to_string(),
        status: status_text(container),
        host_config: serde_json::json!({
            "NetworkMode": container.spec.network.name(&container.spec.networks),
        }),
        network_settings: serde_json::json!({ "Networks": settings["Networks"] }),
        mounts: container
            .mounts
            .iter()
            .map(|m| MountSummary {
                kind: m.kind.as_str().to_string(),
                name: m.name.clone(),
                source: m
                    .source
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                destination: m.target.clone(),
                driver: if m.name.is_some() { "local" } else { "" }.to_string(),
                mode: if m.read_only { "ro" } else { "" }.to_string(),
                rw: !m.read_only,
                propagation: m.propagation.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// `top`: the rows of the host's `ps` output whose PID is one of `pids`,
/// cut into the header's columns (the last takes the rest of the line).
pub fn top(text: &str, pids: &[i32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let Some(pid_column) = titles.iter().position(|t| t == "PID") else {
        return Err(Error::msg("Couldn't find PID field in ps output"));
    };
    let mut rows = Vec::new();
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
            rows.push(cells);
        }
    }
    Ok((titles, rows))
}

/// Runs the host's `ps` with docker's options (`-ef` by default) and keeps
/// the rows of `pids` (`keel top`, the API's `/top`).
pub fn top_of(pids: &[i32], ps_options: &[String]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let options: Vec<String> = if ps_options.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_options
            .iter()
            .flat_map(|o| o.split_whitespace().map(str::to_string))
            .collect()
    };
    let output = std::process::Command::new("ps")
        .args(&options)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::io("run ps (top uses the host's ps: apt install procps)", e))?;
    if !output.status.success() {
        return Err(Error::msg(format!(
            "ps {}: {}",
            options.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    top(&String::from_utf8_lossy(&output.stdout), pids)
}
