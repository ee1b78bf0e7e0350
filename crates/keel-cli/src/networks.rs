//! `keel network create/ls/inspect/rm/prune/connect/disconnect`, with
//! docker's output; and what containers show of their networks (inspect's
//! `NetworkSettings`, `ps`'s ports, `keel port`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use keel_engine::Engine;
use keel_engine::db::Container;
use keel_engine::network::{self, PortBinding};

use crate::containers::Context;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver to manage the network (bridge only)
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format (one IPv4, one IPv6)
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Gateway for the subnet of the same position
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Allocate container addresses from a sub-range
    #[arg(long = "ip-range")]
    pub ip_range: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Enable IPv6 (needs an IPv6 --subnet)
    #[arg(long)]
    pub ipv6: bool,
    /// Driver options (com.docker.network.bridge.name=NAME, com.docker.network.driver.mtu=N,
    /// io.keel.bridge.fastpath=false: every frame crosses the bridge)
    #[arg(short = 'o', long = "opt")]
    pub opt: Vec<String>,
    /// Set metadata on a network (KEY=VALUE)
    #[arg(long)]
    pub label: Vec<String>,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only display network IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter: name=..., id=..., driver=..., label=KEY[=VALUE]
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format: table, json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not fail on a network that does not exist
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub networks: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Add a network-scoped alias for the container
    #[arg(long)]
    pub alias: Vec<String>,
    /// IPv4 address
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address
    #[arg(long)]
    pub ip6: Option<String>,
    pub network: String,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

fn key_values(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub fn parse_ip(text: &str, v4: bool) -> Result<std::net::IpAddr> {
    Ok(keel_engine::options::parse_ip(text, v4)?)
}

pub fn run(ctx: &Context, command: &NetworkCommand) -> Result<i32> {
    let mut engine = ctx.engine()?;
    match command {
        NetworkCommand::Create(args) => {
            let network = engine.create_network(network::CreateRequest {
                name: args.name.clone(),
                driver: Some(args.driver.clone()),
                subnets: args.subnet.clone(),
                gateways: args.gateway.clone(),
                ip_ranges: args.ip_range.clone(),
                internal: args.internal,
                ipv6: args.ipv6,
                options: key_values(&args.opt),
                labels: key_values(&args.label),
            })?;
            println!("{}", network.id);
            Ok(0)
        }
        NetworkCommand::Ls(args) => ls(&mut engine, args),
        NetworkCommand::Inspect(args) => {
            let mut values = Vec::new();
            let mut code = 0;
            for name in &args.networks {
                match network::find(&mut engine.db, name) {
                    Ok(network) => {
                        values.push(keel_engine::views::network::inspect(&mut engine, &network)?)
                    }
                    Err(_) => {
                        eprintln!("Error: No such network: {name}");
                        code = 1;
                    }
                }
            }
            crate::template::print_values(&values, args.format.as_deref())?;
            Ok(code)
        }
        NetworkCommand::Rm(args) => {
            let mut code = 0;
            for name in &args.networks {
                match engine.remove_network(name) {
                    Ok(_) => {
                        println!("{name}");
                    }
                    Err(keel_engine::Error::Invalid(m))
                        if args.force && m.ends_with("not found") => {}
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCommand::Prune(args) => {
            let mut keep_rules: Vec<(bool, String, Option<String>)> = Vec::new();
            for filter in &args.filter {
                let (key, value) = filter.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("bad format of filter (expected name=value): {filter:?}")
                })?;
                let (k, v) = value
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), Some(v.to_string())))
                    .unwrap_or((value.to_string(), None));
                match key {
                    "label" => keep_rules.push((true, k, v)),
                    "label!" => keep_rules.push((false, k, v)),
                    other => bail!("invalid filter '{other}'"),
                }
            }
            let layout = engine.layout.clone();
            let removed = network::prune(&layout, &mut engine.db, |n| {
                keep_rules.iter().any(|(wanted, k, v)| {
                    let has = n
                        .labels
                        .get(k)
                        .is_some_and(|x| v.as_ref().is_none_or(|v| v == x));
                    has != *wanted
                })
            })?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for network in &removed {
                    println!("{}", network.name);
                }
            }
            Ok(0)
        }
        NetworkCommand::Connect(args) => {
            let attachment = keel_engine::spec::NetworkAttachment {
                aliases: args.alias.clone(),
                ipv4: args
                    .ip
                    .as_deref()
                    .map(|ip| parse_ip(ip, true))
                    .transpose()?,
                ipv6: args
                    .ip6
                    .as_deref()
                    .map(|ip| parse_ip(ip, false))
                    .transpose()?,
                ..Default::default()
            };
            engine.connect(&args.container, &args.network, attachment)?;
            Ok(0)
        }
        NetworkCommand::Disconnect(args) => {
            engine.disconnect(&args.container, &args.network)?;
            Ok(0)
        }
    }
}

fn ls(engine: &mut Engine, args: &LsArgs) -> Result<i32> {
    // The default network is there from the first look, as docker's is.
    network::default_network(&mut engine.db)?;
    let mut rows = Vec::new();
    let mut all: Vec<Listed> = network::list(&mut engine.db)?
        .into_iter()
        .map(|n| Listed {
            id: n.id,
            name: n.name,
            driver: n.driver,
            labels: n.labels,
            created: n.created,
            ipv6: n.ipv6,
            internal: n.internal,
        })
        .collect();
    // docker's pseudo-networks.
    for (name, driver) in [("host", "host"), ("none", "null")] {
        all.push(Listed {
            id: keel_engine::views::network::pseudo_id(name),
            name: name.into(),
            driver: driver.into(),
            labels: BTreeMap::new(),
            created: String::new(),
            ipv6: false,
            internal: false,
        });
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    for Listed {
        id,
        name,
        driver,
        labels,
        created,
        ipv6,
        internal,
    } in all
    {
        let mut keep = true;
        for filter in &args.filter {
            let Some((key, value)) = filter.split_once('=') else {
                bail!("bad format of filter (expected name=value): {filter:?}");
            };
            keep &= match key {
                "name" => name.contains(value),
                "id" => id.starts_with(value),
                "driver" => driver == value,
                "label" => match value.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                    None => labels.contains_key(value),
                },
                "scope" => value == "local",
                "type" => match value {
                    "builtin" => ["bridge", "host", "none"].contains(&name.as_str()),
                    "custom" => !["bridge", "host", "none"].contains(&name.as_str()),
                    _ => bail!("invalid filter: 'type'='{value}'"),
                },
                other => bail!("invalid filter '{other}'"),
            };
        }
        if !keep {
            continue;
        }
        rows.push(serde_json::json!({
            "ID": if args.no_trunc { id.clone() } else { id[..12].to_string() },
            "Name": name,
            "Driver": driver,
            "Scope": "local",
            "IPv6": ipv6,
            "Internal": internal,
            "CreatedAt": created,
            "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        }));
    }
    if args.quiet {
        for row in &rows {
            println!("{}", row["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let listed =
        crate::template::render_list(&rows, args.format.as_deref(), &[("ID", "NETWORK ID")])?;
    match listed {
        Some(text) => print!("{text}"),
        None => {
            println!("NETWORK ID    NAME                DRIVER    SCOPE");
            for row in &rows {
                println!(
                    "{:<14}{:<20}{:<10}local",
                    row["ID"].as_str().unwrap_or_default(),
                    row["Name"].as_str().unwrap_or_default(),
                    row["Driver"].as_str().unwrap_or_default(),
                );
            }
        }
    }
    Ok(0)
}

/// A row of `network ls`.
struct Listed {
    id: String,
    name: String,
    driver: String,
    labels: BTreeMap<String, String>,
    created: String,
    ipv6: bool,
    internal: bool,
}

/// `inspect NAME` of a network, if there is one by that name or id.
pub fn inspect_value(engine: &mut Engine, name: &str) -> Option<serde_json::Value> {
    let network = network::find(&mut engine.db, name).ok()?;
    keel_engine::views::network::inspect(engine, &network).ok()
}

/// `keel port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub fn port(engine: &mut Engine, container: &Container, wanted: Option<&str>) -> Result<i32> {
    let endpoints = network::endpoints_of(&mut engine.db, container)?;
    let bindings: Vec<&PortBinding> = endpoints.iter().flat_map(|e| e.ports.iter()).collect();
    let show = |b: &PortBinding| {
        b.host_addresses()
            .into_iter()
            .map(|ip| format!("{}:{}", network::host_ip_text(&Some(ip)), b.host_port))
            .collect::<Vec<_>>()
    };
    match wanted {
        Some(port) => {
            let key = if port.contains('/') {
                port.to_string()
            } else {
                format!("{port}/tcp")
            };
            let found: Vec<&&PortBinding> = bindings
                .iter()
                .filter(|b| format!("{}/{}", b.container_port, b.protocol) == key)
                .collect();
            if found.is_empty() {
                eprintln!(
                    "Error: No public port '{key}' published for {}",
                    container.name
                );
                return Ok(1);
            }
            for line in found.into_iter().flat_map(|b| show(b)) {
                println!("{line}");
            }
        }
        None => {
            for b in bindings {
                for at in show(b) {
                    println!("{}/{} -> {at}", b.container_port, b.protocol);
                }
            }
        }
    }
    Ok(0)
}
