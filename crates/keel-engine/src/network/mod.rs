//! Networks: their records, the endpoints of running containers on them,
//! and what is made on the machine for both.
//!
//! - A network ([`Network`]) is a record in the state database: a bridge
//!   device name, its subnets with gateways, options. The device itself
//!   is made when the first container on it starts (again after a reboot)
//!   and removed by `network rm`, as docker's: a bridge made and removed
//!   with every container would cost each start and stop tens of ms.
//! - An endpoint ([`Endpoint`]) is a running container's place on a
//!   network: addresses, MAC, interface, published ports. It is recorded
//!   when the container starts (or is connected) and forgotten when it
//!   stops; addresses are picked in the same IMMEDIATE transaction that
//!   records them, so two keel processes never hand out one address, and
//!   an endpoint whose container is gone (a killed monitor, a reboot) is
//!   reclaimed by the next allocation.
//! - [`sandbox`] makes a container's network namespace, veths, addresses
//!   and routes; [`sync`] renders keel's nftables table and the per-network
//!   name records (for [`dns`]) from the database, under one lock.
//!
//! The default network `bridge` (device `keel0`) is recorded on first use.

pub mod dns;
pub mod fastpath;
pub mod sandbox;
pub mod vm;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use keel_net::ipam::{self, Subnet};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::db::{Container, Db};
use crate::error::{Error, Result};
use crate::paths::Layout;

/// The default network's name and bridge device.
pub const DEFAULT_NETWORK: &str = "bridge";
pub const DEFAULT_BRIDGE: &str = "keel0";
/// keel's default root (`--root`), whose table is plain `keel`.
pub const DEFAULT_ROOT: &str = "/var/lib/keel";
/// Names `network create` refuses (docker's predefined networks).
const PREDEFINED: [&str; 4] = ["bridge", "host", "none", "default"];

/// A network as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    /// `bridge` (the only driver).
    pub driver: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The bridge device.
    pub bridge: String,
    pub internal: bool,
    pub ipv6: bool,
    pub pools: Vec<Pool>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: Subnet,
    pub gateway: IpAddr,
    /// `--ip-range`: where dynamic addresses come from.
    #[serde(default)]
    pub ip_range: Option<Subnet>,
}

impl Network {
    /// The default network, and names docker users give it.
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_NETWORK
    }

    /// Container names resolve through keel's DNS on user-defined
    /// networks only (as docker's).
    pub fn has_dns(&self) -> bool {
        !self.is_default()
    }

    pub fn pool(&self, v4: bool) -> Option<&Pool> {
        self.pools.iter().find(|p| p.subnet.is_ipv4() == v4)
    }
}

/// A published port as made: the host port picked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Published on `[::]` too (`host_ip` None on a host with IPv6): the
    /// monitor relays it ([`keel_net::relay`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
}

impl PortBinding {
    /// The host addresses it is published at: its own, or 0.0.0.0 and,
    /// with IPv6, `::` (as `ps`, `port` and `inspect` list them).
    pub fn host_addresses(&self) -> Vec<IpAddr> {
        match self.host_ip {
            Some(ip) => vec![ip],
            None if self.ipv6 => vec![
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            ],
            None => vec![IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)],
        }
    }
}

/// A running container's place on a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub container: String,
    /// The container's name (for DNS; kept up to date by rename).
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ipv4: Option<IpAddr>,
    #[serde(default)]
    pub ipv6: Option<IpAddr>,
    pub prefix4: u8,
    pub prefix6: u8,
    pub mac: String,
    /// The interface in the container (`eth0`).
    pub ifname: String,
    /// The host end of the veth pair.
    pub veth: String,
    /// Published ports (on the container's first network only).
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    #[serde(default)]
    pub gateway4: Option<IpAddr>,
    #[serde(default)]
    pub gateway6: Option<IpAddr>,
    /// A VM's endpoint (`keel vm run --network`): `container` is the VM's
    /// id, `veth` its tap device, held open by its VMM. It is live while
    /// the tap exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vm: bool,
}

impl Endpoint {
    /// Whether whoever holds the endpoint still runs: a container's
    /// monitor or init (`container_record`), a VM's tap.
    fn alive(&self, container_record: Option<&str>) -> bool {
        if self.vm {
            return keel_net::tap::exists(&self.veth);
        }
        container_alive(container_record)
    }
}

/// `network create`'s request.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub driver: Option<String>,
    pub subnets: Vec<String>,
    pub gateways: Vec<String>,
    pub ip_ranges: Vec<String>,
    pub internal: bool,
    pub ipv6: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

fn err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::db(format!("state database: {what}"), e)
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::msg(format!("state database: a bad record: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialize")
}

/// The host end of a container's veth on a network: stable for the pair,
/// so leftovers are found by name.
pub fn veth_name(container: &str, network: &str) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in container.bytes().chain([b'/']).chain(network.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("veth{:08x}", hash as u32)
}

fn bridge_name_for(id: &str) -> String {
    format!("br-{}", &id[..12])
}

// ----------------------------------------------------------------------
// records

pub fn list(db: &mut Db) -> Result<Vec<Network>> {
    let conn = db.connection();
    let mut statement = conn
        .prepare_cached("SELECT record FROM networks ORDER BY name")
        .map_err(err("list networks"))?;
    let records: Vec<String> = statement
        .query_map([], |r| r.get(0))
        .map_err(err("list networks"))?
        .collect::<rusqlite::Result<_>>()
        .map_err(err("list networks"))?;
    records.iter().map(|r| from_json(r)).collect()
}

/// A network by full id, name, or unique id prefix.
pub fn find(db: &mut Db, name_or_id: &str) -> Result<Network> {
    if name_or_id == DEFAULT_NETWORK || name_or_id == "default" {
        return default_network(db);
    }
    let conn = db.connection();
    for query in [
        "SELECT record FROM networks WHERE id = ?1",
        "SELECT record FROM networks WHERE name = ?1",
    ] {
        if let Some(record) = conn
            .query_row(query, [name_or_id], |r| r.get::<_, String>(0))
            .optional()
            .map_err(err("look up a network"))?
        {
            return from_json(&record);
        }
    }
    if !name_or_id.is_empty() && name_or_id.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut statement = conn
            .prepare_cached("SELECT record FROM networks WHERE id LIKE ?1 || '%' LIMIT 2")
            .map_err(err("look up a network"))?;
        let found: Vec<String> = statement
            .query_map([name_or_id.to_ascii_lowercase()], |r| r.get(0))
            .map_err(err("look up a network"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("look up a network"))?;
        match found.as_slice() {
            [one] => return from_json(one),
            [] => {}
            _ => {
                return Err(Error::invalid(format!(
                    "network {name_or_id} is ambiguous ({} matches found based on ID prefix)",
                    found.len()
                )));
            }
        }
    }
    Err(Error::invalid(format!("network {name_or_id} not found")))
}

fn by_id(db: &mut Db, id: &str) -> Result<Option<Network>> {
    db.connection()
        .query_row("SELECT record FROM networks WHERE id = ?1", [id], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(err("look up a network"))?
        .map(|r| from_json(&r))
        .transpose()
}

/// The subnets this namespace's interfaces already have (outside keel's
/// own bridges), so that a new network does not shadow them.
fn host_subnets(own_bridges: &[String]) -> Vec<Subnet> {
    let Ok(mut netlink) = keel_net::netlink::Netlink::open() else {
        return Vec::new();
    };
    let links = netlink.links().unwrap_or_default();
    let ours: Vec<i32> = links
        .iter()
        .filter(|l| own_bridges.contains(&l.name))
        .map(|l| l.index)
        .collect();
    netlink
        .addresses()
        .unwrap_or_default()
        .into_iter()
        .filter(|(index, ip, _)| !ours.contains(index) && !ip.is_loopback())
        .filter_map(|(_, ip, prefix)| format!("{ip}/{prefix}").parse().ok())
        .collect()
}

/// The default network, recorded now if it is not yet.
pub fn default_network(db: &mut Db) -> Result<Network> {
    if let Some(record) = db
        .connection()
        .query_row(
            "SELECT record FROM networks WHERE name = ?1",
            [DEFAULT_NETWORK],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(err("look up a network"))?
    {
        return from_json(&record);
    }
    let result = insert(
        db,
        CreateRequest {
            name: DEFAULT_NETWORK.into(),
            ..CreateRequest::default()
        },
        true,
    );
    match result {
        // Another process recorded it first.
        Err(Error::Conflict(_)) => default_network(db),
        other => other,
    }
}

/// Records a new network (`network create`); nothing is made on the
/// machine until a container starts on it.
pub fn create(db: &mut Db, request: CreateRequest) -> Result<Network> {
    if PREDEFINED.contains(&request.name.as_str()) {
        return Err(Error::invalid(format!(
            "{} is a pre-defined network and cannot be created",
            request.name
        )));
    }
    crate::spec::validate_container_name(&request.name).map_err(|_| {
        Error::invalid(format!(
            "invalid network name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
            request.name
        ))
    })?;
    insert(db, request, false)
}

fn insert(db: &mut Db, request: CreateRequest, default: bool) -> Result<Network> {
    let driver = request.driver.clone().unwrap_or_else(|| "bridge".into());
    if driver != "bridge" {
        return Err(Error::invalid(format!(
            "network driver {driver:?} is not supported: keel makes bridge networks"
        )));
    }
    let mut options = request.options.clone();
    let mut bridge = None;
    let mut mtu = None;
    for (key, value) in &request.options {
        match key.as_str() {
            "com.docker.network.bridge.name" => {
                if value.is_empty() || value.len() > 15 || value.contains(['/', ' ']) {
                    return Err(Error::invalid(format!(
                        "invalid bridge name {value:?}: at most 15 characters, no '/' or spaces"
                    )));
                }
                bridge = Some(value.clone());
            }
            "com.docker.network.driver.mtu" | "mtu" => {
                let value: u32 = value
                    .parse()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| Error::invalid(format!("invalid MTU {value:?}: 68 to 65535")))?;
                mtu = Some(value);
            }
            fastpath::OPTION => {
                if !matches!(
                    value.as_str(),
                    "true" | "false" | "1" | "0" | "yes" | "no" | "on" | "off"
                ) {
                    return Err(Error::invalid(format!(
                        "invalid {key} {value:?}: true or false"
                    )));
                }
            }
            // Accepted as docker does, with keel's fixed behaviour.
            "com.docker.network.bridge.enable_ip_masquerade"
            | "com.docker.network.bridge.enable_icc"
            | "com.docker.network.bridge.host_binding_ipv4" => {}
            other => {
                return Err(Error::invalid(format!(
                    "network option {other:?} is not supported"
                )));
            }
        }
    }
    options.retain(|k, _| k != "mtu");
    if let Some(m) = mtu {
        options.insert("com.docker.network.driver.mtu".into(), m.to_string());
    }

    let id = crate::engine::random_id()?;
    let links: Vec<String> = keel_net::netlink::Netlink::open()
        .and_then(|mut n| n.links())
        .map(|links| links.into_iter().map(|l| l.name).collect())
        .unwrap_or_default();
    if let Some(name) = &bridge
        && links.contains(name)
    {
        return Err(Error::Conflict(format!(
            "bridge {name} already exists (another keel root's, or not keel's): choose another com.docker.network.bridge.name"
        )));
    }
    let bridge = bridge.unwrap_or_else(|| {
        if default {
            // keel0 unless it is there already: then it is another keel
            // root's (or another program's), and sharing it would mix two
            // roots' addresses on one bridge.
            let name = (0..)
                .map(|i| format!("keel{i}"))
                .find(|name| !links.contains(name))
                .expect("a free name");
            if name != DEFAULT_BRIDGE {
                tracing::warn!(
                    "{DEFAULT_BRIDGE} is another keel root's (or another program's): this root's default network uses {name}"
                );
            }
            name
        } else {
            bridge_name_for(&id)
        }
    });

    let mut subnets: Vec<Subnet> = Vec::new();
    for text in &request.subnets {
        subnets.push(text.parse()?);
    }

    let tx = db
        .connection()
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    let existing: Vec<Network> = {
        let mut statement = tx
            .prepare("SELECT record FROM networks")
            .map_err(err("list networks"))?;
        let records: Vec<String> = statement
            .query_map([], |r| r.get(0))
            .map_err(err("list networks"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list networks"))?;
        records
            .iter()
            .map(|r| from_json(r))
            .collect::<Result<_>>()?
    };
    if let Some(other) = existing.iter().find(|n| n.name == request.name) {
        return Err(Error::Conflict(format!(
            "network with name {} already exists",
            other.name
        )));
    }
    if let Some(other) = existing.iter().find(|n| n.bridge == bridge) {
        return Err(Error::Conflict(format!(
            "bridge {bridge} is already network {}'s",
            other.name
        )));
    }
    let taken: Vec<Subnet> = existing
        .iter()
        .flat_map(|n| n.pools.iter().map(|p| p.subnet))
        .collect();
    let own_bridges: Vec<String> = existing.iter().map(|n| n.bridge.clone()).collect();
    let host = host_subnets(&own_bridges);

    if !subnets.iter().any(Subnet::is_ipv4) {
        let mut avoid = taken.clone();
        avoid.extend(host.iter().copied());
        let pool = ipam::free_pool(&avoid).ok_or_else(|| {
            Error::msg("all predefined address pools have been fully subnetted: give --subnet")
        })?;
        subnets.insert(0, pool);
    }
    if request.ipv6 && !subnets.iter().any(|s| !s.is_ipv4()) {
        return Err(Error::invalid(
            "--ipv6 needs an IPv6 --subnet (keel picks no IPv6 pool by itself)",
        ));
    }
    if !request.ipv6 && subnets.iter().any(|s| !s.is_ipv4()) {
        return Err(Error::invalid("an IPv6 --subnet needs --ipv6"));
    }
    let mut gateways: Vec<IpAddr> = Vec::new();
    for text in &request.gateways {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| Error::invalid(format!("invalid gateway {text:?}")))?;
        if !subnets.iter().any(|s| s.contains(&ip)) {
            return Err(Error::invalid(format!(
                "no matching subnet for gateway {ip}"
            )));
        }
        gateways.push(ip);
    }
    let mut ranges: Vec<Subnet> = Vec::new();
    for text in &request.ip_ranges {
        let range: Subnet = text.parse()?;
        if !subnets
            .iter()
            .any(|s| s.contains(&range.address) && range.prefix >= s.prefix)
        {
            return Err(Error::invalid(format!(
                "no matching subnet for range {range}"
            )));
        }
        ranges.push(range);
    }
    let mut pools = Vec::new();
    for (i, subnet) in subnets.iter().enumerate() {
        if subnets[..i].iter().any(|s| s.is_ipv4() == subnet.is_ipv4()) {
            return Err(Error::invalid(format!(
                "more than one {} subnet: keel gives a network one of each family",
                if subnet.is_ipv4() { "IPv4" } else { "IPv6" }
            )));
        }
        if let Some(other) = existing
            .iter()
            .find(|n| n.pools.iter().any(|p| p.subnet.overlaps(subnet)))
        {
            return Err(Error::Conflict(format!(
                "invalid pool request: Pool overlaps with other one on this address space (network {})",
                other.name
            )));
        }
        let max_prefix = if subnet.is_ipv4() { 30 } else { 126 };
        if subnet.prefix > max_prefix {
            return Err(Error::invalid(format!(
                "subnet {subnet} is too small for a network"
            )));
        }
        // A --gateway or --ip-range belongs to the subnet that holds it.
        let gateway = match gateways.iter().find(|ip| subnet.contains(ip)) {
            Some(ip) => {
                if *ip == subnet.address || (subnet.is_ipv4() && *ip == subnet.last()) {
                    return Err(Error::invalid(format!(
                        "gateway {ip} is not a host address of subnet {subnet}"
                    )));
                }
                *ip
            }
            None => subnet
                .first_host()
                .ok_or_else(|| Error::invalid(format!("subnet {subnet} has no host address")))?,
        };
        let ip_range = ranges
            .iter()
            .find(|r| subnet.contains(&r.address) && r.prefix >= subnet.prefix)
            .copied();
        pools.push(Pool {
            subnet: *subnet,
            gateway,
            ip_range,
        });
    }
    let network = Network {
        id,
        name: request.name.clone(),
        driver,
        created: jiff::Timestamp::now().to_string(),
        bridge,
        internal: request.internal,
        ipv6: request.ipv6,
        pools,
        labels: request.labels.clone(),
        options,
        mtu,
    };
    tx.execute(
        "INSERT INTO networks (id, name, record) VALUES (?1, ?2, ?3)",
        params![network.id, network.name, to_json(&network)],
    )
    .map_err(err("insert a network"))?;
    tx.commit().map_err(err("commit"))?;
    Ok(network)
}

/// The endpoints on a network (or all of them).
pub fn endpoints(db: &mut Db, network: Option<&str>) -> Result<Vec<Endpoint>> {
    let conn = db.connection();
    let records: Vec<String> = match network {
        Some(id) => {
            let mut statement = conn
                .prepare_cached("SELECT record FROM endpoints WHERE network = ?1 ORDER BY ipv4")
                .map_err(err("list endpoints"))?;
            statement
                .query_map([id], |r| r.get(0))
                .map_err(err("list endpoints"))?
                .collect::<rusqlite::Result<_>>()
                .map_err(err("list endpoints"))?
        }
        None => {
            let mut statement = conn
                .prepare_cached("SELECT record FROM endpoints ORDER BY network, ipv4")
                .map_err(err("list endpoints"))?;
            statement
                .query_map([], |r| r.get(0))
                .map_err(err("list endpoints"))?
                .collect::<rusqlite::Result<_>>()
                .map_err(err("list endpoints"))?
        }
    };
    records.iter().map(|r| from_json(r)).collect()
}

/// The endpoints of the container with id `container`.
pub fn endpoints_of_id(db: &mut Db, container: &str) -> Result<Vec<Endpoint>> {
    let conn = db.connection();
    let mut statement = conn
        .prepare_cached("SELECT record FROM endpoints WHERE container = ?1")
        .map_err(err("list endpoints"))?;
    let records: Vec<String> = statement
        .query_map([container], |r| r.get(0))
        .map_err(err("list endpoints"))?
        .collect::<rusqlite::Result<_>>()
        .map_err(err("list endpoints"))?;
    records.iter().map(|r| from_json(r)).collect()
}

/// A container's endpoints, in the order of its networks.
pub fn endpoints_of(db: &mut Db, container: &Container) -> Result<Vec<Endpoint>> {
    let mut found = endpoints_of_id(db, &container.id)?;
    let order = |e: &Endpoint| {
        container
            .spec
            .networks
            .iter()
            .position(|n| n.id == e.network)
            .unwrap_or(usize::MAX)
    };
    found.sort_by_key(order);
    Ok(found)
}

/// Whether a container's endpoints are still held: its monitor or its
/// init runs.
fn container_alive(record: Option<&str>) -> bool {
    let Some(record) = record else { return false };
    let Ok(container) = from_json::<Container>(record) else {
        return false;
    };
    let s = &container.state;
    (s.monitor_pid > 0 && keel_runtime::util::process_alive(s.monitor_pid, s.monitor_start))
        || (s.pid > 0 && keel_runtime::util::process_alive(s.pid, s.pid_start))
}

/// What [`allocate`] needs besides the network.
pub struct Allocation<'a> {
    /// The container's (or VM's) id and name.
    pub id: &'a str,
    pub name: &'a str,
    /// For a VM: its endpoint's `veth` is its tap.
    pub vm: bool,
    pub attachment: &'a crate::spec::NetworkAttachment,
    pub ifname: String,
    /// The container's ports to publish here (its first network).
    pub publish: &'a [crate::spec::PortSpec],
}

/// Records a container's endpoint on `network`, picking its addresses
/// and host ports in the same transaction; reclaims the endpoints of
/// containers that are gone (their veths are returned, to delete).
pub fn allocate(
    db: &mut Db,
    network: &Network,
    request: Allocation<'_>,
) -> Result<(Endpoint, Vec<String>)> {
    let tx = db
        .connection()
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    let rows: Vec<(String, String, String, Option<String>)> = {
        let mut statement = tx
            .prepare(
                "SELECT e.network, e.container, e.record, c.record
                 FROM endpoints e LEFT JOIN containers c ON c.id = e.container",
            )
            .map_err(err("list endpoints"))?;
        statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(err("list endpoints"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list endpoints"))?
    };
    let mut live: Vec<Endpoint> = Vec::new();
    let mut stale_veths = Vec::new();
    for (net, container, record, container_record) in rows {
        let endpoint: Endpoint = from_json(&record)?;
        if container == request.id {
            if net == network.id {
                return Err(Error::Conflict(format!(
                    "endpoint with name {} already exists in network {}",
                    request.name, network.name
                )));
            }
            live.push(endpoint);
        } else if endpoint.alive(container_record.as_deref()) {
            live.push(endpoint);
        } else {
            tx.execute(
                "DELETE FROM endpoints WHERE network = ?1 AND container = ?2",
                params![net, container],
            )
            .map_err(err("reclaim an endpoint"))?;
            stale_veths.push(endpoint.veth);
        }
    }

    let on_network: Vec<&Endpoint> = live.iter().filter(|e| e.network == network.id).collect();
    let mut endpoint = Endpoint {
        network: network.id.clone(),
        container: request.id.to_string(),
        name: request.name.to_string(),
        aliases: request.attachment.aliases.clone(),
        ipv4: None,
        ipv6: None,
        prefix4: 0,
        prefix6: 0,
        mac: String::new(),
        ifname: request.ifname.clone(),
        veth: veth_name(request.id, &network.id),
        ports: Vec::new(),
        gateway4: None,
        gateway6: None,
        vm: request.vm,
    };
    for pool in &network.pools {
        let v4 = pool.subnet.is_ipv4();
        let used: Vec<IpAddr> = on_network
            .iter()
            .filter_map(|e| if v4 { e.ipv4 } else { e.ipv6 })
            .collect();
        let fixed = if v4 {
            request.attachment.ipv4
        } else {
            request.attachment.ipv6
        };
        let ip = match fixed {
            Some(ip) => {
                if !pool.subnet.contains(&ip)
                    || ip == pool.subnet.address
                    || (v4 && ip == pool.subnet.last())
                {
                    return Err(Error::invalid(format!(
                        "address {ip} is not in network {}'s subnet {}",
                        network.name, pool.subnet
                    )));
                }
                if ip == pool.gateway || used.contains(&ip) {
                    return Err(Error::Conflict(format!(
                        "address {ip} is already in use on network {}",
                        network.name
                    )));
                }
                ip
            }
            None => ipam::allocate(
                &pool.subnet,
                pool.ip_range.as_ref(),
                Some(pool.gateway),
                &used,
            )
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "no available IPv{} addresses on network {}",
                    if v4 { 4 } else { 6 },
                    network.name
                ))
            })?,
        };
        if v4 {
            endpoint.ipv4 = Some(ip);
            endpoint.prefix4 = pool.subnet.prefix;
            endpoint.gateway4 = Some(pool.gateway);
        } else {
            endpoint.ipv6 = Some(ip);
            endpoint.prefix6 = pool.subnet.prefix;
            endpoint.gateway6 = Some(pool.gateway);
        }
    }
    let mac_source = endpoint
        .ipv4
        .or(endpoint.ipv6)
        .expect("a network has a pool");
    endpoint.mac = ipam::format_mac(ipam::mac_for(&mac_source));
    endpoint.ports = pick_ports(request.publish, &live)?;
    tx.execute(
        "INSERT INTO endpoints (network, container, ipv4, ipv6, record) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            endpoint.network,
            endpoint.container,
            endpoint.ipv4.map(|ip| ip.to_string()),
            endpoint.ipv6.map(|ip| ip.to_string()),
            to_json(&endpoint)
        ],
    )
    .map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Error::Conflict(format!("an address on network {} is already in use", network.name))
        }
        other => Error::db("state database: record an endpoint", other),
    })?;
    tx.commit().map_err(err("commit"))?;
    Ok((endpoint, stale_veths))
}

/// The local port range random host ports come from.
fn ephemeral_range() -> (u16, u16) {
    keel_net::netns::read_sysctl("ipv4/ip_local_port_range")
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .filter(|(a, b)| a <= b && *a > 0)
        .unwrap_or((32768, 60999))
}

/// Whether a port can be bound here now (nobody listens on it, on IPv4
/// nor, when it is to be published there, on IPv6).
fn port_free(protocol: &str, port: u16, ipv6: bool) -> bool {
    let free = |ip: IpAddr| keel_net::ports::bind(ip, port, protocol, true).is_ok();
    free(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        && (!ipv6 || free(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)))
}

fn overlapping(a: &Option<IpAddr>, b: &Option<IpAddr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Host ports for `publish`, none taken by another endpoint.
fn pick_ports(publish: &[crate::spec::PortSpec], live: &[Endpoint]) -> Result<Vec<PortBinding>> {
    let mut taken: Vec<PortBinding> = live.iter().flat_map(|e| e.ports.iter().cloned()).collect();
    let mut out = Vec::new();
    let (low, high) = ephemeral_range();
    let mut seed = crate::engine::random_u64()?;
    let host_has_ipv6 = keel_net::ports::ipv6_available();
    for spec in publish {
        let ipv6 = spec.host_ip.is_none() && host_has_ipv6;
        let in_use = |taken: &[PortBinding], port: u16| {
            taken.iter().any(|t| {
                t.protocol == spec.protocol
                    && t.host_port == port
                    && overlapping(&t.host_ip, &spec.host_ip)
            })
        };
        let port = if spec.host_port == 0 {
            let span = u32::from(high - low) + 1;
            let start = (seed % u64::from(span)) as u32;
            seed = seed.rotate_left(17) ^ 0x9e3779b97f4a7c15;
            (0..span)
                .map(|i| low + ((start + i) % span) as u16)
                .find(|p| !in_use(&taken, *p) && port_free(&spec.protocol, *p, ipv6))
                .ok_or_else(|| Error::Conflict("no free host port left to publish on".into()))?
        } else if spec.host_port_end > spec.host_port {
            (spec.host_port..=spec.host_port_end)
                .find(|p| !in_use(&taken, *p))
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "Bind for {}:{}-{} failed: every port of the range is already allocated",
                        host_ip_text(&spec.host_ip),
                        spec.host_port,
                        spec.host_port_end
                    ))
                })?
        } else {
            if in_use(&taken, spec.host_port) {
                return Err(Error::Conflict(format!(
                    "Bind for {}:{} failed: port is already allocated",
                    host_ip_text(&spec.host_ip),
                    spec.host_port
                )));
            }
            spec.host_port
        };
        let binding = PortBinding {
            host_ip: spec.host_ip,
            host_port: port,
            container_port: spec.container_port,
            protocol: spec.protocol.clone(),
            ipv6,
        };
        taken.push(binding.clone());
        out.push(binding);
    }
    Ok(out)
}

pub fn host_ip_text(ip: &Option<IpAddr>) -> String {
    match ip {
        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
        Some(ip) => ip.to_string(),
        None => "0.0.0.0".into(),
    }
}

/// Forgets an endpoint.
pub fn release(db: &mut Db, network: &str, container: &str) -> Result<()> {
    db.connection()
        .execute(
            "DELETE FROM endpoints WHERE network = ?1 AND container = ?2",
            params![network, container],
        )
        .map_err(err("forget an endpoint"))?;
    Ok(())
}

/// Keeps the name in a container's endpoints (after a rename).
pub fn rename(db: &mut Db, container: &str, name: &str) -> Result<()> {
    let tx = db
        .connection()
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    let rows: Vec<(String, String)> = {
        let mut statement = tx
            .prepare("SELECT network, record FROM endpoints WHERE container = ?1")
            .map_err(err("list endpoints"))?;
        statement
            .query_map([container], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err("list endpoints"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list endpoints"))?
    };
    for (network, record) in rows {
        let mut endpoint: Endpoint = from_json(&record)?;
        endpoint.name = name.to_string();
        tx.execute(
            "UPDATE endpoints SET record = ?3 WHERE network = ?1 AND container = ?2",
            params![network, container, to_json(&endpoint)],
        )
        .map_err(err("update an endpoint"))?;
    }
    tx.commit().map_err(err("commit"))
}

/// `network rm`: refused while a running container is on it.
pub fn remove(layout: &Layout, db: &mut Db, name_or_id: &str) -> Result<Network> {
    if PREDEFINED.contains(&name_or_id) {
        return Err(Error::invalid(format!(
            "{name_or_id} is a pre-defined network and cannot be removed"
        )));
    }
    let network = find(db, name_or_id)?;
    let _lock = lock(layout)?;
    let tx = db
        .connection()
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    let rows: Vec<(String, String, Option<String>)> = {
        let mut statement = tx
            .prepare(
                "SELECT e.container, e.record, c.record FROM endpoints e
                 LEFT JOIN containers c ON c.id = e.container WHERE e.network = ?1",
            )
            .map_err(err("list endpoints"))?;
        statement
            .query_map([&network.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(err("list endpoints"))?
            .collect::<rusqlite::Result<_>>()
            .map_err(err("list endpoints"))?
    };
    let active: Vec<&String> = rows
        .iter()
        .filter(|(_, endpoint, record)| {
            from_json::<Endpoint>(endpoint).is_ok_and(|e| e.alive(record.as_deref()))
        })
        .map(|(id, _, _)| id)
        .collect();
    if !active.is_empty() {
        return Err(Error::Conflict(format!(
            "error while removing network: network {} id {} has active endpoints ({})",
            network.name,
            network.id,
            active
                .iter()
                .map(|id| &id[..12])
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    tx.execute("DELETE FROM endpoints WHERE network = ?1", [&network.id])
        .map_err(err("forget endpoints"))?;
    tx.execute("DELETE FROM networks WHERE id = ?1", [&network.id])
        .map_err(err("forget a network"))?;
    tx.commit().map_err(err("commit"))?;
    let deleted =
        keel_net::netlink::Netlink::open().and_then(|mut n| n.delete_link(&network.bridge));
    sync_locked(layout, db)?;
    deleted.map_err(|e| {
        Error::msg(format!(
            "network {} is removed, but its bridge {} is not: {e}",
            network.name, network.bridge
        ))
    })?;
    Ok(network)
}

/// The networks no container names (`network prune`), removed; the
/// default network stays.
pub fn prune(
    layout: &Layout,
    db: &mut Db,
    keep: impl Fn(&Network) -> bool,
) -> Result<Vec<Network>> {
    let containers = db.list()?;
    let mut removed = Vec::new();
    for network in list(db)? {
        if network.is_default() || keep(&network) {
            continue;
        }
        let used = containers
            .iter()
            .any(|c| c.spec.networks.iter().any(|n| n.id == network.id));
        if used {
            continue;
        }
        if remove(layout, db, &network.id).is_ok() {
            removed.push(network);
        }
    }
    Ok(removed)
}

// ----------------------------------------------------------------------
// the lock, the firewall and the name records

/// keel's network lock (`<runroot>/network.lock`): bridges are made and
/// removed, and the nftables table and name records rendered, under it.
pub fn lock(layout: &Layout) -> Result<File> {
    std::fs::create_dir_all(&layout.runroot)
        .map_err(|e| Error::io(format!("create {}", layout.runroot.display()), e))?;
    let path = layout.runroot.join("network.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    file.lock()
        .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
    Ok(file)
}

/// Where the name records of a network are (read by the monitors' DNS).
pub fn records_dir(layout: &Layout) -> PathBuf {
    layout.runroot.join("networks")
}

/// One name of a network's records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameRecord {
    pub container: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ipv4: Option<IpAddr>,
    #[serde(default)]
    pub ipv6: Option<IpAddr>,
}

/// Renders keel's nftables table and every network's name records from
/// the database. The caller holds [`lock`].
///
/// The table holds the bridges that exist (a network's bridge lives from
/// its first container to `network rm`, as docker's) and the published
/// ports of running containers. What was applied last is kept in
/// `<runroot>/firewall.json`: when only ports changed, the table gets
/// element updates; otherwise (or if an update fails: someone flushed the
/// ruleset) it is rendered whole.
pub fn sync_locked(layout: &Layout, db: &mut Db) -> Result<()> {
    let networks = list(db)?;
    let all = endpoints(db, None)?;
    let links = keel_net::netlink::Netlink::open()
        .and_then(|mut n| n.links())
        .unwrap_or_default();
    let existing: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let mut firewall = keel_net::nft::Firewall {
        table: table_name(&layout.root),
        ..Default::default()
    };
    let dir = records_dir(layout);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let mut kept = Vec::new();
    for network in &networks {
        let on: Vec<&Endpoint> = all.iter().filter(|e| e.network == network.id).collect();
        if existing.contains(&network.bridge.as_str()) {
            firewall.bridges.push(keel_net::nft::Bridge {
                name: network.bridge.clone(),
                subnets: network.pools.iter().map(|p| p.subnet).collect(),
                internal: network.internal,
            });
        }
        // docker publishes no ports of an internal network.
        for endpoint in on.iter().filter(|_| !network.internal) {
            for port in &endpoint.ports {
                let protocol = if port.protocol == "udp" {
                    keel_net::nft::Protocol::Udp
                } else {
                    keel_net::nft::Protocol::Tcp
                };
                for target in [endpoint.ipv4, endpoint.ipv6].into_iter().flatten() {
                    firewall.forwards.push(keel_net::nft::Forward {
                        protocol,
                        host_ip: port.host_ip,
                        host_port: port.host_port,
                        target,
                        target_port: port.container_port,
                    });
                }
            }
        }
        if network.has_dns() && !on.is_empty() {
            let records: Vec<NameRecord> = on
                .iter()
                .map(|e| NameRecord {
                    container: e.container.clone(),
                    name: e.name.clone(),
                    aliases: e.aliases.clone(),
                    ipv4: e.ipv4,
                    ipv6: e.ipv6,
                })
                .collect();
            let path = dir.join(format!("{}.json", network.id));
            keel_runtime::util::write_atomic(
                &path,
                &serde_json::to_vec(&records).expect("records serialize"),
            )
            .map_err(|e| Error::runtime(format!("write {}", path.display()), e))?;
            kept.push(format!("{}.json", network.id));
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !kept.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    fastpath::sync(layout, &networks, &all, &links);
    apply_firewall(layout, &firewall)
}

/// The nftables table of the keel whose root is `root`: `keel` for the
/// default root, `keel-<8 hex digits of the root's hash>` for any other, so
/// that two roots in one namespace (a second user's, a test's) each own
/// their own rules.
pub fn table_name(root: &Path) -> String {
    use sha2::Digest;
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    if root == Path::new(DEFAULT_ROOT) {
        return keel_net::nft::TABLE.to_string();
    }
    let hash = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("{}-{}", keel_net::nft::TABLE, &hex::encode(hash)[..8])
}

fn apply_firewall(layout: &Layout, desired: &keel_net::nft::Firewall) -> Result<()> {
    let state = layout.runroot.join("firewall.json");
    let applied: Option<keel_net::nft::Firewall> = std::fs::read(&state)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if applied.as_ref() == Some(desired) {
        return Ok(());
    }
    if applied.is_none() && desired.bridges.is_empty() && desired.forwards.is_empty() {
        // Nothing applied that we know of, nothing to hold: no nft needed
        // (a host without nftables runs --network none and host fine),
        // unless a table of ours survived a lost runroot.
        if keel_net::nft::nft_binary().is_none() {
            return Ok(());
        }
    }
    let incremental = applied
        .as_ref()
        .and_then(|applied| keel_net::nft::update(applied, desired));
    let done = match incremental {
        Some(script) if script.is_empty() => Ok(()),
        Some(script) => keel_net::nft::apply(&script).or_else(|e| {
            tracing::info!("update the firewall: {e}; rendering it whole");
            keel_net::nft::apply(&keel_net::nft::render(desired))
        }),
        None => keel_net::nft::apply(&keel_net::nft::render(desired)),
    };
    if let Err(e) = done {
        let _ = std::fs::remove_file(&state);
        return Err(e.into());
    }
    keel_runtime::util::write_atomic(
        &state,
        &serde_json::to_vec(desired).expect("firewalls serialize"),
    )
    .map_err(|e| Error::runtime(format!("write {}", state.display()), e))
}

/// [`sync_locked`] under the lock.
pub fn sync(layout: &Layout, db: &mut Db) -> Result<()> {
    let _lock = lock(layout)?;
    sync_locked(layout, db)
}

/// A container's networks for `create`: the named ones resolved (the
/// default network when none is named).
pub fn resolve_attachments(db: &mut Db, spec: &mut crate::spec::ContainerSpec) -> Result<()> {
    if spec.network != crate::spec::NetworkMode::Bridge {
        if !spec.networks.is_empty() {
            return Err(Error::invalid(
                "a container on the host's network, none, or another container's cannot be on other networks",
            ));
        }
        return Ok(());
    }
    if spec.networks.is_empty() {
        spec.networks.push(crate::spec::NetworkAttachment {
            name: DEFAULT_NETWORK.into(),
            ..Default::default()
        });
    }
    let mut seen = Vec::new();
    for attachment in spec.networks.iter_mut() {
        let lookup = if attachment.id.is_empty() {
            attachment.name.clone()
        } else {
            attachment.id.clone()
        };
        let network = find(db, &lookup)?;
        if seen.contains(&network.id) {
            return Err(Error::invalid(format!(
                "network {} is named twice",
                network.name
            )));
        }
        if network.is_default() && !attachment.aliases.is_empty() {
            return Err(Error::invalid(
                "network-scoped aliases are supported only for containers on user-defined networks",
            ));
        }
        for (ip, v4) in [(attachment.ipv4, true), (attachment.ipv6, false)] {
            if let Some(ip) = ip {
                if network.is_default() {
                    return Err(Error::invalid(
                        "user specified IP address is supported on user defined networks only",
                    ));
                }
                let pool = network.pool(v4).ok_or_else(|| {
                    Error::invalid(format!("network {} has no subnet for {ip}", network.name))
                })?;
                if !pool.subnet.contains(&ip) {
                    return Err(Error::invalid(format!(
                        "address {ip} is not in network {}'s subnet {}",
                        network.name, pool.subnet
                    )));
                }
            }
        }
        seen.push(network.id.clone());
        attachment.id = network.id.clone();
        attachment.name = network.name.clone();
    }
    Ok(())
}

/// The network of an attachment (None if it was removed meanwhile).
pub fn of_attachment(db: &mut Db, attachment: &crate::spec::NetworkAttachment) -> Result<Network> {
    if attachment.id.is_empty() || attachment.name == DEFAULT_NETWORK {
        if attachment.name == DEFAULT_NETWORK {
            return default_network(db);
        }
        return find(db, &attachment.name);
    }
    by_id(db, &attachment.id)?.ok_or_else(|| {
        Error::invalid(format!(
            "network {} not found (it was removed)",
            attachment.name
        ))
    })
}

impl crate::engine::Engine {
    /// `network create`, with its event.
    pub fn create_network(&mut self, request: CreateRequest) -> Result<Network> {
        let network = create(&mut self.db, request)?;
        crate::events::record(
            &self.layout.root,
            "network",
            "create",
            &network.id,
            &[("name", network.name.as_str()), ("type", "bridge")],
        );
        Ok(network)
    }

    /// `network rm`, with its event.
    pub fn remove_network(&mut self, name_or_id: &str) -> Result<Network> {
        let layout = self.layout.clone();
        let network = remove(&layout, &mut self.db, name_or_id)?;
        crate::events::record(
            &self.layout.root,
            "network",
            "destroy",
            &network.id,
            &[("name", network.name.as_str()), ("type", "bridge")],
        );
        Ok(network)
    }

    /// `network connect`: the container is on the network from now on
    /// (at once if it runs).
    pub fn connect(
        &mut self,
        container: &str,
        network: &str,
        mut attachment: crate::spec::NetworkAttachment,
    ) -> Result<Container> {
        let container = self.find(container)?;
        if container.spec.network != crate::spec::NetworkMode::Bridge {
            return Err(Error::invalid(format!(
                "container {} is on the network {}: it cannot be connected to other networks",
                container.name,
                container.spec.network.name(&container.spec.networks)
            )));
        }
        let network = find(&mut self.db, network)?;
        if container.spec.networks.iter().any(|n| n.id == network.id) {
            return Err(Error::Conflict(format!(
                "endpoint with name {} already exists in network {}",
                container.name, network.name
            )));
        }
        attachment.id = network.id.clone();
        attachment.name = network.name.clone();
        let mut check = container.spec.clone();
        check.networks = vec![attachment.clone()];
        resolve_attachments(&mut self.db, &mut check)?;
        if container.state.status.is_active() && container.state.pid > 0 {
            if container.spec.isolation == crate::spec::Isolation::Vm {
                // The VM's NICs are made when it boots.
                return Err(Error::Conflict(format!(
                    "{} is a running micro-VM: connect it to {} while it is stopped (it gets \
                     the interface when it starts)",
                    container.name, network.name
                )));
            }
            sandbox::connect(&self.layout, &mut self.db, &container, &attachment)?;
        }
        self.db.update_state(&container.id, |c| {
            c.spec.networks.push(attachment);
            Ok(())
        })?;
        self.network_event(&network, "connect", &container);
        self.db.find(&container.id)
    }

    /// `network disconnect`.
    pub fn disconnect(&mut self, container: &str, network: &str) -> Result<Container> {
        let container = self.find(container)?;
        let network = find(&mut self.db, network)?;
        if !container.spec.networks.iter().any(|n| n.id == network.id) {
            return Err(Error::invalid(format!(
                "container {} is not connected to network {}",
                container.name, network.name
            )));
        }
        if container.state.status.is_active() {
            sandbox::disconnect(&self.layout, &mut self.db, &container, &network)?;
        }
        self.db.update_state(&container.id, |c| {
            c.spec.networks.retain(|n| n.id != network.id);
            Ok(())
        })?;
        self.network_event(&network, "disconnect", &container);
        self.db.find(&container.id)
    }

    pub fn network_event(&self, network: &Network, action: &str, container: &Container) {
        crate::events::record(
            &self.layout.root,
            "network",
            action,
            &network.id,
            &[
                ("name", network.name.as_str()),
                ("type", network.driver.as_str()),
                ("container", container.id.as_str()),
            ],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_and_short() {
        let a = veth_name("c1", "n1");
        assert_eq!(a, veth_name("c1", "n1"));
        assert_ne!(a, veth_name("c1", "n2"));
        assert!(a.len() <= 15);
    }
}
