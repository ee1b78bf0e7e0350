//! A VM on a bridge network (`keel vm run --network NAME`): a tap device
//! on the network's bridge where a container would have a veth, and an
//! endpoint record with the addresses the network hands out, so VMs and
//! containers share a network's addresses, its firewall and its fast path.
//!
//! The tap is not persistent: its VMM holds the only fd on it, and the
//! kernel removes it when the VMM goes. The endpoint is live while the tap
//! exists ([`super::Endpoint::alive`]); [`detach_vm`] forgets it, and an
//! allocation reclaims it anyway once the tap is gone.

use std::os::fd::OwnedFd;

use keel_net::netlink::Netlink;

use super::{Allocation, Endpoint};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::paths::Layout;
use crate::spec::NetworkAttachment;

/// What a VM gets on a network.
pub struct VmEndpoint {
    pub endpoint: Endpoint,
    /// The tap on the bridge: the VMM's end of the guest's interface.
    pub tap: OwnedFd,
    pub mtu: Option<u32>,
}

/// Puts VM `id` (named `name`) on `network`: its tap on the bridge, its
/// addresses recorded (`ipv4`: that address, as a restored VM keeps the
/// one its guest has).
pub fn attach_vm(
    layout: &Layout,
    db: &mut Db,
    network: &str,
    id: &str,
    name: &str,
    ipv4: Option<std::net::IpAddr>,
) -> Result<VmEndpoint> {
    let attachment = NetworkAttachment {
        id: String::new(),
        name: network.to_string(),
        aliases: Vec::new(),
        ipv4,
        ipv6: None,
    };
    let network = super::of_attachment(db, &attachment)?;
    if network.driver != "bridge" {
        return Err(Error::invalid(format!(
            "network {} has the {} driver: a VM joins bridge networks",
            network.name, network.driver
        )));
    }
    let _lock = super::lock(layout)?;
    super::sandbox::ensure_bridge(&network)?;
    // Made first: while it exists, the endpoint below is live.
    let tap_name = super::veth_name(id, &network.id);
    let tap = keel_net::tap::create(&tap_name)?;
    let (endpoint, stale) = super::allocate(
        db,
        &network,
        Allocation {
            id,
            name,
            vm: true,
            attachment: &attachment,
            ifname: "eth0".into(),
            publish: &[],
        },
    )?;
    let mut netlink = Netlink::open()?;
    for veth in &stale {
        let _ = netlink.delete_link(veth);
    }
    let wired = (|| -> Result<()> {
        if let Some(mtu) = network.mtu {
            netlink.set_mtu(&tap_name, mtu)?;
        }
        netlink.set_master(&tap_name, &network.bridge)?;
        netlink.set_up(&tap_name)?;
        super::sync_locked(layout, db)
    })();
    if let Err(e) = wired {
        let _ = super::release(db, &network.id, id);
        return Err(e);
    }
    Ok(VmEndpoint {
        endpoint,
        tap,
        mtu: network.mtu,
    })
}

/// Forgets VM `id`'s endpoints (its taps go with its VMM).
pub fn detach_vm(layout: &Layout, db: &mut Db, id: &str) -> Result<()> {
    let endpoints = super::endpoints_of_id(db, id)?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let _lock = super::lock(layout)?;
    for endpoint in &endpoints {
        super::release(db, &endpoint.network, id)?;
    }
    super::sync_locked(layout, db)
}
