//! Networks as docker shows them: `network inspect`, a container's
//! `NetworkSettings`, and the ports `ps` lists.

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
pub fn inspect(engine: &mut Engine, network: &Network) -> Result<serde_json::Value> {
    let endpoints = network::endpoints(&mut engine.db, Some(&network.id))?;
    let mut containers = serde_json::Map::new();
    for e in &endpoints {
        containers.insert(
            e.container.clone(),
            serde_json::json!({
                "Name": e.name,
                "EndpointID": endpoint_id(e),
                "MacAddress": e.mac,
                "IPv4Address": e.ipv4.map(|ip| format!("{ip}/{}", e.prefix4)).unwrap_or_default(),
                "IPv6Address": e.ipv6.map(|ip| format!("{ip}/{}", e.prefix6)).unwrap_or_default(),
            }),
        );
    }
    Ok(serde_json::json!({
        "Name": network.name,
        "Id": network.id,
        "Created": network.created,
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv6": network.ipv6,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": network.pools.iter().map(|p| {
                let mut config = serde_json::json!({
                    "Subnet": p.subnet.to_string(),
                    "Gateway": p.gateway.to_string(),
                });
                if let Some(range) = &p.ip_range {
                    config["IPRange"] = range.to_string().into();
                }
                config
            }).collect::<Vec<_>>(),
        },
        "Internal": network.internal,
        "Attachable": false,
        "Ingress": false,
        "Containers": containers,
        "Options": network.options.iter().chain(std::iter::once((&"com.docker.network.bridge.name".to_string(), &network.bridge))).map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "Labels": network.labels,
    }))
}

/// A stable id for the pseudo-networks host and none.
pub fn pseudo_id(name: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("keel pseudo-network {name}")))
}
