//! `/networks/...` and `/volumes/...`.

use std::collections::BTreeMap;

use http::StatusCode;
use hyper::body::Incoming;
use keel_engine::network;
use serde::Deserialize;

use crate::containers::with_engine;
use crate::http::{ApiError, ApiResult, Reply, json, json_status, status};
use crate::routes::Call;

/// `GET /networks?filters`: keel's networks and docker's `host` and `none`.
pub async fn networks(call: Call) -> ApiResult<Reply> {
    let filters = call.query.filters()?;
    let list = with_engine(&call, move |engine| {
        network::default_network(&mut engine.db)?;
        let mut out = Vec::new();
        for n in network::list(&mut engine.db)? {
            let value = keel_engine::views::network::inspect(engine, &n)?;
            if keep(&filters, &n.name, &n.id, &n.driver, &n.labels) {
                out.push(value);
            }
        }
        for (name, driver) in [("host", "host"), ("none", "null")] {
            let id = keel_engine::views::network::pseudo_id(name);
            if keep(&filters, name, &id, driver, &BTreeMap::new()) {
                out.push(serde_json::json!({
                    "Name": name, "Id": id, "Scope": "local", "Driver": driver,
                    "EnableIPv6": false, "Internal": false, "Attachable": false,
                    "Ingress": false, "IPAM": {"Driver": "default", "Options": null, "Config": []},
                    "Containers": {}, "Options": {}, "Labels": {},
                }));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(json(&list))
}

/// docker's network filters: `name` (substring), `id` (prefix), `driver`,
/// `label` (`KEY` or `KEY=VALUE`), `type` (`custom`/`builtin`).
fn keep(
    filters: &BTreeMap<String, Vec<String>>,
    name: &str,
    id: &str,
    driver: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    filters.iter().all(|(key, values)| {
        values.iter().any(|v| match key.as_str() {
            "name" => name.contains(v.as_str()),
            "id" => id.starts_with(v.as_str()),
            "driver" => driver == v,
            "label" => match v.split_once('=') {
                Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
                None => labels.contains_key(v.as_str()),
            },
            "type" => (v == "builtin") == ["bridge", "host", "none"].contains(&name),
            _ => false,
        })
    })
}

pub async fn network_inspect(call: Call, id: &str) -> ApiResult<Reply> {
    let name = id.to_string();
    let value = with_engine(&call, move |engine| {
        let n = network::find(&mut engine.db, &name)
            .map_err(|_| ApiError::not_found(format!("network {name} not found")))?;
        Ok(keel_engine::views::network::inspect(engine, &n)?)
    })
    .await?;
    Ok(json(&value))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkCreate {
    name: String,
    driver: Option<String>,
    internal: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    check_duplicate: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<IpamPool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamPool {
    subnet: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
}

/// `POST /networks/create`.
pub async fn network_create(call: Call, body: Incoming) -> ApiResult<Reply> {
    let request: NetworkCreate = crate::http::read_json(body).await?;
    if request.name.is_empty() {
        return Err(ApiError::bad_request("network name is required"));
    }
    let _ = request.check_duplicate;
    let pools = request.ipam.and_then(|i| i.config).unwrap_or_default();
    let create = network::CreateRequest {
        name: request.name,
        driver: request.driver.filter(|d| !d.is_empty()),
        subnets: pools.iter().filter_map(|p| p.subnet.clone()).collect(),
        gateways: pools.iter().filter_map(|p| p.gateway.clone()).collect(),
        ip_ranges: pools.iter().filter_map(|p| p.ip_range.clone()).collect(),
        internal: request.internal.unwrap_or(false),
        ipv6: request.enable_ipv6.unwrap_or(false),
        options: request.options.unwrap_or_default(),
        labels: request.labels.unwrap_or_default(),
    };
    let n = with_engine(&call, move |engine| Ok(engine.create_network(create)?)).await?;
    Ok(json_status(
        StatusCode::CREATED,
        &serde_json::json!({"Id": n.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn network_remove(call: Call, id: &str) -> ApiResult<Reply> {
    let name = id.to_string();
    with_engine(&call, move |engine| {
        if network::find(&mut engine.db, &name).is_err() {
            return Err(ApiError::not_found(format!("network {name} not found")));
        }
        engine.remove_network(&name).map_err(|e| match e {
            keel_engine::Error::Invalid(m) => ApiError::conflict(m),
            other => other.into(),
        })?;
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `GET /volumes?filters`.
pub async fn volumes(call: Call) -> ApiResult<Reply> {
    let filters = call.query.filters()?;
    let list = with_engine(&call, move |engine| {
        let mut out = Vec::new();
        for v in engine.db.volumes()? {
            let in_use = !engine.volume_users(&v.name)?.is_empty();
            let keep = filters.iter().all(|(key, values)| {
                values.iter().any(|val| match key.as_str() {
                    "name" => v.name.contains(val.as_str()),
                    "dangling" => (val == "true" || val == "1") != in_use,
                    "driver" => val == "local",
                    "label" => match val.split_once('=') {
                        Some((k, x)) => v.labels.get(k).is_some_and(|y| y == x),
                        None => v.labels.contains_key(val.as_str()),
                    },
                    _ => false,
                })
            });
            if keep {
                out.push(engine.volume_value(&v));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(json(&serde_json::json!({"Volumes": list, "Warnings": []})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeCreate {
    name: Option<String>,
    driver: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    driver_opts: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create`.
pub async fn volume_create(call: Call, body: Incoming) -> ApiResult<Reply> {
    let request: VolumeCreate = crate::http::read_json(body).await?;
    if let Some(driver) = request
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::bad_request(format!(
            "volume driver {driver:?} is not supported: keel has local volumes"
        )));
    }
    if request.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "volume driver options are not supported by keel's local volumes",
        ));
    }
    let value = with_engine(&call, move |engine| {
        let v = engine.create_volume(
            request.name.as_deref().filter(|n| !n.is_empty()),
            request.labels.unwrap_or_default(),
        )?;
        Ok(engine.volume_value(&v))
    })
    .await?;
    Ok(json_status(StatusCode::CREATED, &value))
}

pub async fn volume_inspect(call: Call, name: &str) -> ApiResult<Reply> {
    let name = name.to_string();
    let value = with_engine(&call, move |engine| {
        let v = engine.volume(&name)?;
        Ok(engine.volume_value(&v))
    })
    .await?;
    Ok(json(&value))
}

/// `DELETE /volumes/{name}?force`.
pub async fn volume_remove(call: Call, name: &str) -> ApiResult<Reply> {
    let force = call.query.bool("force");
    let name = name.to_string();
    with_engine(&call, move |engine| {
        engine.volume(&name)?;
        engine.remove_volume(&name, force).map_err(|e| match e {
            keel_engine::Error::Conflict(m) | keel_engine::Error::Invalid(m) => {
                ApiError::conflict(m)
            }
            other => other.into(),
        })?;
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectBody {
    container: String,
    endpoint_config: Option<crate::create::EndpointConfig>,
    force: bool,
}

/// `POST /networks/{id}/connect` and `/disconnect`.
pub async fn connect(call: Call, id: &str, body: Incoming, connect: bool) -> ApiResult<Reply> {
    let request: ConnectBody = crate::http::read_json(body).await?;
    if request.container.is_empty() {
        return Err(ApiError::bad_request("no container given (Container)"));
    }
    let network = id.to_string();
    with_engine(&call, move |engine| {
        if network::find(&mut engine.db, &network).is_err() {
            return Err(ApiError::not_found(format!("network {network} not found")));
        }
        engine.find(&request.container)?;
        if connect {
            let endpoint = request.endpoint_config.unwrap_or_default();
            let ipam = endpoint.ipam_config.unwrap_or_default();
            let parse = |ip: Option<String>, v4: bool| {
                ip.filter(|a| !a.is_empty())
                    .map(|a| keel_engine::options::parse_ip(&a, v4))
                    .transpose()
            };
            let attachment = keel_engine::spec::NetworkAttachment {
                aliases: endpoint.aliases.unwrap_or_default(),
                ipv4: parse(ipam.ipv4_address, true)?,
                ipv6: parse(ipam.ipv6_address, false)?,
                ..Default::default()
            };
            engine.connect(&request.container, &network, attachment)?;
        } else {
            let _ = request.force;
            engine.disconnect(&request.container, &network)?;
        }
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::OK))
}

/// Whether a labelled object passes `label=` / `label!=` filters.
fn labels_pass(filters: &BTreeMap<String, Vec<String>>, labels: &BTreeMap<String, String>) -> bool {
    let has = |wanted: &String| match wanted.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(wanted.as_str()),
    };
    filters.get("label").is_none_or(|w| w.iter().all(has))
        && !filters.get("label!").is_some_and(|w| w.iter().any(has))
}

/// `POST /networks/prune?filters`: unused networks (`label`, `label!`).
pub async fn network_prune(call: Call) -> ApiResult<Reply> {
    let filters = call.query.filters()?;
    let removed = with_engine(&call, move |engine| {
        let layout = engine.layout.clone();
        Ok(network::prune(&layout, &mut engine.db, |n| {
            !labels_pass(&filters, &n.labels)
        })?)
    })
    .await?;
    let names: Vec<String> = removed.into_iter().map(|n| n.name).collect();
    Ok(json(&serde_json::json!({"NetworksDeleted": names})))
}

/// `POST /volumes/prune?filters`: unused anonymous volumes, or every unused
/// one with `all=true` (docker's API ≥ 1.42).
pub async fn volume_prune(call: Call) -> ApiResult<Reply> {
    let filters = call.query.filters()?;
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|a| a == "true" || a == "1"));
    let (removed, freed) = with_engine(&call, move |engine| {
        if filters.contains_key("label") || filters.contains_key("label!") {
            let mut removed = Vec::new();
            let mut freed = 0;
            for v in engine.db.volumes()? {
                if (!all && !v.anonymous)
                    || !labels_pass(&filters, &v.labels)
                    || !engine.volume_users(&v.name)?.is_empty()
                {
                    continue;
                }
                freed += keel_engine::copy::tree_size(&engine.layout.volume_data(&v.name));
                engine.remove_volume(&v.name, false)?;
                removed.push(v.name);
            }
            return Ok((removed, freed));
        }
        Ok(engine.prune_volumes(all)?)
    })
    .await?;
    Ok(json(
        &serde_json::json!({"VolumesDeleted": removed, "SpaceReclaimed": freed}),
    ))
}
