//! Networks as docker shows them: `network inspect`, a container's
//! `NetworkSettings`, and the ports `ps` lists.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::db::Container;
use crate::engine::Engine;
use crate::error::Result;
use crate::network::{self, Endpoint, Network};
use crate::spec::NetworkMode;

pub fn endpoint_id(e: &Endpoint) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!(
        "{}/{}",
        e.network, e.container
    )))
}

/// `0.0.0.0:8080->80/tcp, ...` as `ps` shows them.
pub fn ports_text(endpoints: &[Endpoint]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for port in endpoints.iter().flat_map(|e| e.ports.iter()) {
        // docker writes IPv6 addresses bare here: `:::8080->80/tcp`.
        for ip in port.host_addresses() {
            parts.push(format!(
                "{ip}:{}->{}/{}",
                port.host_port, port.container_port, port.protocol
            ));
        }
    }
    parts.join(", ")
}

/// A container's network settings as docker's inspect shows them.
pub fn settings(engine: &mut Engine, container: &Container) -> serde_json::Value {
    let endpoints = network::endpoints_of(&mut engine.db, container).unwrap_or_default();
    settings_from(container, &endpoints)
}

/// [`settings`] from the container's endpoints, already read.
pub fn settings_from(container: &Container, endpoints: &[Endpoint]) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for port in endpoints.iter().flat_map(|e| e.ports.iter()) {
        let key = format!("{}/{}", port.container_port, port.protocol);
        let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(list) = entry.as_array_mut() {
            for ip in port.host_addresses() {
                list.push(serde_json::json!({
                    "HostIp": ip.to_string(),
                    "HostPort": port.host_port.to_string(),
                }));
            }
        }
    }
    let mut networks = serde_json::Map::new();
    let names: Vec<(String, String, Vec<String>)> = match &container.spec.network {
        NetworkMode::Bridge => container
            .spec
            .networks
            .iter()
            .map(|n| (n.id.clone(), n.name.clone(), n.aliases.clone()))
            .collect(),
        other => vec![(String::new(), other.name(&[]), Vec::new())],
    };
    for (id, name, aliases) in names {
        let e = endpoints.iter().find(|e| e.network == id);
        networks.insert(
            name,
            serde_json::json!({
                "Aliases": aliases,
                "NetworkID": id,
                "EndpointID": e.map(endpoint_id).unwrap_or_default(),
                "Gateway": e.and_then(|e| e.gateway4).map(|ip| ip.to_string()).unwrap_or_default(),
                "IPAddress": e.and_then(|e| e.ipv4).map(|ip| ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": e.map(|e| e.prefix4).unwrap_or(0),
                "IPv6Gateway": e.and_then(|e| e.gateway6).map(|ip| ip.to_string()).unwrap_or_default(),
                "GlobalIPv6Address": e.and_then(|e| e.ipv6).map(|ip| ip.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": e.map(|e| e.prefix6).unwrap_or(0),
                "MacAddress": e.map(|e| e.mac.clone()).unwrap_or_default(),
            }),
        );
    }
    let first = endpoints.first();
    serde_json::json!({
        "Ports": ports,
        "IPAddress": first.and_then(|e| e.ipv4).map(|ip| ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": first.map(|e| e.prefix4).unwrap_or(0),
        "Gateway": first.and_then(|e| e.gateway4).map(|ip| ip.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": first.and_then(|e| e.ipv6).map(|ip| ip.to_string()).unwrap_or_default(),
        "MacAddress": first.map(|e| e.mac.clone()).unwrap_or_default(),
        "Networks": networks,
    })
}

/// docker's `network inspect` object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: &'static str,
    pub driver: String,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub containers: BTreeMap<String, EndpointView>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: &'static str,
    pub options: BTreeMap<String, String>,
    pub config: Vec<IpamPool>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamPool {
    pub subnet: String,
    pub gateway: String,
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointView {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// [`NetworkInspect`] of a network, as JSON (`keel network inspect`, the
/// API's `GET /networks/{id}`).
pub fn inspect(engine: &mut Engine, network: &Network) -> Result<serde_json::Value> {
    Ok(serde_json::to_value(inspect_typed(engine, network)?).unwrap_or_default())
}

pub fn inspect_typed(engine: &mut Engine, network: &Network) -> Result<NetworkInspect> {
    let endpoints = network::endpoints(&mut engine.db, Some(&network.id))?;
    let containers = endpoints
        .iter()
        .map(|e| {
            (
                e.container.clone(),
                EndpointView {
                    name: e.name.clone(),
                    endpoint_id: endpoint_id(e),
                    mac_address: e.mac.clone(),
                    ipv4_address: e
                        .ipv4
                        .map(|ip| format!("{ip}/{}", e.prefix4))
                        .unwrap_or_default(),
                    ipv6_address: e
                        .ipv6
                        .map(|ip| format!("{ip}/{}", e.prefix6))
                        .unwrap_or_default(),
                },
            )
        })
        .collect();
    let mut options = network.options.clone();
    options.insert(
        "com.docker.network.bridge.name".to_string(),
        network.bridge.clone(),
    );
    Ok(NetworkInspect {
        name: network.name.clone(),
        id: network.id.clone(),
        created: network.created.clone(),
        scope: "local",
        driver: network.driver.clone(),
        enable_ipv6: network.ipv6,
        ipam: Ipam {
            driver: "default",
            options: BTreeMap::new(),
            config: network
                .pools
                .iter()
                .map(|p| IpamPool {
                    subnet: p.subnet.to_string(),
                    gateway: p.gateway.to_string(),
                    ip_range: p.ip_range.as_ref().map(|r| r.to_string()),
                })
                .collect(),
        },
        internal: network.internal,
        attachable: false,
        ingress: false,
        containers,
        options,
        labels: network.labels.clone(),
    })
}

/// A stable id for the pseudo-networks host and none.
pub fn pseudo_id(name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("keel pseudo-network {name}")))
}
