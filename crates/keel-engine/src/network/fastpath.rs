//! Keeps each network's bridge fast path (`keel_net::fastpath`) in step
//! with its endpoints: a map per network (each endpoint's MAC → its
//! host-side veth, the bridge's own MAC → the bridge), a program on the
//! bridge's egress, one on each endpoint veth's ingress. VMs' taps take
//! the bridge.
//!
//! What was applied is kept in `<runroot>/fastpath/<network id>.json`
//! (the map's kernel ID, the bridge's index, the entries), read and
//! written under the network lock by [`super::sync_locked`]. The kernel's
//! objects die with their devices or a reboot; a record whose map is gone
//! or whose bridge was made again starts over. The fast path is an
//! optimisation: when the kernel refuses it (no tc BPF, an old kernel),
//! frames take the bridge, as before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::os::fd::AsFd;

use keel_net::fastpath::{self, Hook, Map, Target};
use keel_net::ipam::{format_mac, parse_mac};
use keel_net::netlink::{Link, Netlink};
use serde::{Deserialize, Serialize};

use super::{Endpoint, Network};
use crate::paths::Layout;

/// The network option that turns the fast path off (`-o
/// io.keel.bridge.fastpath=false`): every frame then crosses the bridge,
/// where `tcpdump -i BRIDGE` sees it.
pub const OPTION: &str = "io.keel.bridge.fastpath";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    map: u32,
    bridge: i32,
    /// MAC (text) → where its frames go.
    entries: BTreeMap<String, Target>,
}

fn dir(layout: &Layout) -> PathBuf {
    layout.runroot.join("fastpath")
}

fn enabled(network: &Network) -> bool {
    network
        .options
        .get(OPTION)
        .is_none_or(|v| !matches!(v.as_str(), "false" | "0" | "no" | "off"))
}

/// Brings every network's fast path in line with `endpoints` and the
/// links that exist (`links`, of this namespace). Errors are logged, not
/// returned: without the fast path the bridge carries the frames.
pub fn sync(layout: &Layout, networks: &[Network], endpoints: &[Endpoint], links: &[Link]) {
    let dir = dir(layout);
    let mut kept = Vec::new();
    for network in networks.iter().filter(|n| enabled(n)) {
        let Some(bridge) = links.iter().find(|l| l.name == network.bridge) else {
            continue;
        };
        let path = dir.join(format!("{}.json", network.id));
        // A VM's tap is left to the bridge: the veth program sends
        // frames into a peer, which a tap does not have (and a program
        // attached by an older keel would drop frames for a new kind of
        // target).
        let mut on: Vec<(String, Target)> = endpoints
            .iter()
            .filter(|e| e.network == network.id && !e.vm)
            .filter_map(|e| {
                let veth = links.iter().find(|l| l.name == e.veth)?;
                Some((e.mac.clone(), Target::Veth(veth.index as u32)))
            })
            .collect();
        if on.is_empty() && !path.exists() {
            continue;
        }
        if let Some(mac) = bridge.mac {
            on.push((format_mac(mac), Target::Host(bridge.index as u32)));
        }
        kept.push(format!("{}.json", network.id));
        if let Err(e) = sync_network(&path, network, bridge, &on) {
            tracing::info!(
                "network {}: the bridge fast path is off ({e}); frames take the bridge",
                network.name
            );
            let _ = std::fs::remove_file(&path);
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            if !kept.contains(&entry.file_name().to_string_lossy().into_owned()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn sync_network(
    path: &Path,
    network: &Network,
    bridge: &Link,
    on: &[(String, Target)],
) -> keel_net::Result<()> {
    let name = fastpath::map_name(&network.id);
    let record: Option<Record> = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let mut netlink = Netlink::open()?;
    let found = record.and_then(|r| {
        let map = (r.bridge == bridge.index)
            .then(|| Map::open(r.map, &name))
            .flatten()?;
        Some((map, r))
    });
    let fresh = found.is_none();
    let (map, mut record) = found.map_or_else(
        || {
            let record = Record {
                map: 0,
                bridge: bridge.index,
                entries: BTreeMap::new(),
            };
            Map::create(&name).map(|map| (map, record))
        },
        Ok,
    )?;
    record.map = map.id();
    // What the map holds, not only what the record says: a command killed
    // half way may have added entries it did not record, or recorded ones
    // it did not add.
    record
        .entries
        .retain(|mac, _| on.iter().any(|(m, _)| m == mac));
    let held = map.keys()?;
    for key in &held {
        let mac = format_mac(*key);
        if !on.iter().any(|(m, _)| *m == mac) {
            map.remove(*key)?;
        }
    }
    let pending: Vec<([u8; 6], &String, &Target)> = on
        .iter()
        .filter_map(|(mac, target)| Some((parse_mac(mac)?, mac, target)))
        .filter(|(key, mac, target)| {
            record.entries.get(*mac) != Some(*target) || !held.contains(key)
        })
        .collect();
    // The programs are loaded only when something is to be attached (not
    // at every start), and both before anything is: a kernel that refuses
    // one (no bpf_redirect_peer before 5.10) is left as it was.
    let veth_needed = fresh || pending.iter().any(|(_, _, t)| matches!(t, Target::Veth(_)));
    let veth_program = if veth_needed {
        Some(fastpath::load(&map, Hook::VethIngress)?)
    } else {
        None
    };
    if fresh {
        // The bridge's program refers to the map (and keeps it alive);
        // every veth gets a program on it below (the record is empty).
        let program = fastpath::load(&map, Hook::BridgeEgress)?;
        netlink.attach_tc_program(bridge.index, true, program.as_fd(), "keel")?;
    }
    for (key, mac, target) in pending {
        // One endpoint that cannot be put on the fast path (its veth gone
        // with a killed monitor, a filter of someone else's) stays on the
        // bridge; the others go on. Not recorded: the next sync tries again.
        let done = match target {
            Target::Veth(veth) => netlink
                .attach_tc_program(
                    *veth as i32,
                    false,
                    veth_program.as_ref().expect("loaded for veths").as_fd(),
                    "keel",
                )
                .and_then(|()| netlink.add_static_fdb(*veth as i32, key))
                .and_then(|()| map.set(key, *target)),
            Target::Host(_) => map.set(key, *target),
        };
        match done {
            Ok(()) => {
                record.entries.insert(mac.to_string(), *target);
            }
            Err(e) => {
                tracing::info!("network {}: {mac} stays on the bridge ({e})", network.name);
            }
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| keel_net::Error::io(format!("create {}", parent.display()), e))?;
    }
    keel_runtime::util::write_atomic(path, &serde_json::to_vec(&record).expect("serializes"))
        .map_err(|e| keel_net::Error::msg(format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(options: &[(&str, &str)]) -> Network {
        Network {
            id: "ab".repeat(32),
            name: "n".into(),
            driver: "bridge".into(),
            created: String::new(),
            bridge: "br-x".into(),
            internal: false,
            ipv6: false,
            pools: Vec::new(),
            labels: BTreeMap::new(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mtu: None,
        }
    }

    #[test]
    fn on_unless_the_network_says_off() {
        assert!(enabled(&network(&[])));
        assert!(enabled(&network(&[(OPTION, "true")])));
        assert!(!enabled(&network(&[(OPTION, "false")])));
        assert!(!enabled(&network(&[(OPTION, "0")])));
    }
}
