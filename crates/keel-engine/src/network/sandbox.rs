//! A container's network namespace and its wiring.
//!
//! At each start the monitor makes the namespace (held by its own fd: see
//! `keel_net::netns`), brings loopback up, and for each of the container's
//! networks: the bridge (if this is its first container), an endpoint
//! record with its addresses and ports, a veth pair with one end on the
//! bridge and the other in the namespace (`eth0`, `eth1`, ...), addresses,
//! MAC and the default route. When the container stops its endpoint
//! records and published ports go, and its namespace (with the veths)
//! goes with the monitor's fd.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use keel_net::netlink::{self, Netlink};
use keel_net::netns;

use super::{Allocation, Endpoint, Network};
use crate::db::{Container, Db};
use crate::error::{Error, Result};
use crate::paths::Layout;
use crate::spec::{NetworkAttachment, NetworkMode, PortSpec};

/// What a container's network is while it runs.
pub struct Sandbox {
    /// The namespace keel made (None: the host's or another container's).
    namespace: Option<OwnedFd>,
    /// What the runtime joins (None: stay in the host's namespace).
    pub path: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// The name server in the namespace (user-defined networks).
    pub dns: Option<keel_net::dns::Server>,
    /// The published host ports, held while the container runs.
    held_ports: Vec<OwnedFd>,
    /// The IPv6 side of the published ports, relayed by the monitor.
    pub relay: keel_net::relay::Relay,
}

impl Sandbox {
    /// The sandbox of `--network host`.
    pub fn host() -> Sandbox {
        Sandbox {
            namespace: None,
            path: None,
            endpoints: Vec::new(),
            dns: None,
            held_ports: Vec::new(),
            relay: Default::default(),
        }
    }
}

/// Makes a container's network for a start. `publish` are the ports to
/// publish (on its first network); `owner` holds the namespace fd (the
/// monitor, whose pid is in the path the runtime joins).
pub fn setup(
    layout: &Layout,
    db: &mut Db,
    container: &Container,
    publish: &[PortSpec],
) -> Result<Sandbox> {
    match &container.spec.network {
        NetworkMode::Host => Ok(Sandbox::host()),
        NetworkMode::Container(other) => {
            let other = db.find(other).map_err(|_| {
                Error::invalid(format!(
                    "cannot join the network of container {other}: it was removed"
                ))
            })?;
            let s = &other.state;
            if other.spec.isolation == crate::spec::Isolation::Vm {
                return Err(Error::invalid(format!(
                    "cannot join the network of {}: it is a micro-VM (its network is the VM's)",
                    other.name
                )));
            }
            if !(s.status.is_active()
                && s.pid > 0
                && keel_runtime::util::process_alive(s.pid, s.pid_start))
            {
                return Err(Error::Conflict(format!(
                    "cannot join network of a non running container: {}",
                    other.name
                )));
            }
            Ok(Sandbox {
                namespace: None,
                path: Some(format!("/proc/{}/ns/net", s.pid)),
                endpoints: Vec::new(),
                dns: None,
                held_ports: Vec::new(),
                relay: Default::default(),
            })
        }
        NetworkMode::None | NetworkMode::Bridge => {
            let namespace = netns::create()?;
            netns::run_in(namespace.as_fd(), || Netlink::open()?.set_up("lo"))?;
            let path = format!("/proc/{}/fd/{}", std::process::id(), namespace.as_raw_fd());
            let mut sandbox = Sandbox {
                namespace: Some(namespace),
                path: Some(path),
                endpoints: Vec::new(),
                dns: None,
                held_ports: Vec::new(),
                relay: Default::default(),
            };
            if container.spec.network == NetworkMode::None {
                return Ok(sandbox);
            }
            if let Err(e) = wire_all(layout, db, container, publish, &mut sandbox) {
                teardown(layout, db, &container.id, sandbox);
                return Err(e);
            }
            Ok(sandbox)
        }
    }
}

fn wire_all(
    layout: &Layout,
    db: &mut Db,
    container: &Container,
    publish: &[PortSpec],
    sandbox: &mut Sandbox,
) -> Result<()> {
    let namespace = sandbox.namespace.as_ref().expect("a namespace of its own");
    let mut dns = false;
    {
        let _lock = super::lock(layout)?;
        for (i, attachment) in container.spec.networks.iter().enumerate() {
            let network = super::of_attachment(db, attachment)?;
            dns |= network.has_dns();
            let endpoint = attach_locked(
                db,
                container,
                attachment,
                &network,
                namespace,
                &format!("eth{i}"),
                if i == 0 { publish } else { &[] },
                i == 0,
            )?;
            // Pushed first: a port that cannot be held tears it down too.
            sandbox.endpoints.push(endpoint.clone());
            for port in &endpoint.ports {
                if port.host_ip.is_none_or(|ip| ip.is_ipv4()) {
                    sandbox.held_ports.push(keel_net::ports::hold(
                        port.host_ip,
                        port.host_port,
                        &port.protocol,
                    )?);
                }
                let v6 = match port.host_ip {
                    Some(IpAddr::V6(v6)) => Some(v6),
                    None if port.ipv6 => Some(std::net::Ipv6Addr::UNSPECIFIED),
                    _ => None,
                };
                // docker publishes no ports of an internal network.
                let target = endpoint
                    .ipv6
                    .or(endpoint.ipv4)
                    .filter(|_| !network.internal);
                if let (Some(address), Some(target)) = (v6, target) {
                    sandbox.relay.listen(
                        address,
                        port.host_port,
                        &port.protocol,
                        SocketAddr::new(target, port.container_port),
                    )?;
                }
            }
        }
        super::sync_locked(layout, db)?;
    }
    if dns {
        let server = keel_net::dns::Server::bind(
            namespace.as_fd(),
            SocketAddr::from((keel_net::dns::ADDRESS, 0)),
            upstreams(container),
        )?;
        let port = server.local_address()?.port();
        let nat = manages_netfilter(&container.spec);
        keel_net::nft::apply_in(
            Some(namespace.as_fd()),
            &keel_net::nft::dns_redirect(port, nat),
        )?;
        sandbox.dns = Some(server);
    }
    Ok(())
}

/// Whether the container may change netfilter in its namespace (and so
/// may turn connection tracking on there).
fn manages_netfilter(spec: &crate::spec::ContainerSpec) -> bool {
    let named = |c: &String| {
        let c = c.to_ascii_uppercase();
        c == "ALL" || c == "NET_ADMIN" || c == "CAP_NET_ADMIN"
    };
    spec.privileged || spec.cap_add.iter().any(named)
}

/// Where names keel does not know are asked: `--dns`, else the host's
/// resolvers.
fn upstreams(container: &Container) -> Vec<SocketAddr> {
    if !container.spec.dns.is_empty() {
        return container
            .spec
            .dns
            .iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
    }
    keel_net::dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// Makes the bridge of a network if it is not there: its gateway
/// addresses, up, forwarding on, 127.0.0.1 routable to it (for ports
/// published at 127.0.0.1).
pub(super) fn ensure_bridge(network: &Network) -> Result<()> {
    let mut netlink = Netlink::open()?;
    netlink.add_bridge(&network.bridge, network.mtu)?;
    for pool in &network.pools {
        netlink.add_address(&network.bridge, pool.gateway, pool.subnet.prefix)?;
    }
    netlink.set_up(&network.bridge)?;
    netns::sysctl("ipv4/ip_forward", "1")?;
    netns::sysctl(&format!("ipv4/conf/{}/route_localnet", network.bridge), "1")?;
    if network.ipv6 {
        netns::sysctl("ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn attach_locked(
    db: &mut Db,
    container: &Container,
    attachment: &NetworkAttachment,
    network: &Network,
    namespace: &OwnedFd,
    ifname: &str,
    publish: &[PortSpec],
    default_route: bool,
) -> Result<Endpoint> {
    ensure_bridge(network)?;
    let allocated = super::allocate(
        db,
        network,
        Allocation {
            id: &container.id,
            name: &container.name,
            vm: false,
            attachment,
            ifname: ifname.to_string(),
            publish,
        },
    );
    let (endpoint, stale) = allocated?;
    if let Ok(mut netlink) = Netlink::open() {
        for veth in &stale {
            let _ = netlink.delete_link(veth);
        }
    }
    match wire(network, &endpoint, namespace, default_route) {
        Ok(()) => Ok(endpoint),
        Err(e) => {
            if let Ok(mut netlink) = Netlink::open() {
                let _ = netlink.delete_link(&endpoint.veth);
            }
            let _ = super::release(db, &endpoint.network, &endpoint.container);
            Err(e)
        }
    }
}

/// The veth pair of an endpoint, and its addresses and routes inside.
fn wire(
    network: &Network,
    endpoint: &Endpoint,
    namespace: &OwnedFd,
    default_route: bool,
) -> Result<()> {
    let mut host = Netlink::open()?;
    // A leftover of a killed monitor whose namespace is still held.
    host.delete_link(&endpoint.veth)?;
    host.add_veth(
        &endpoint.veth,
        &endpoint.ifname,
        netlink::borrow(namespace),
        network.mtu,
    )?;
    host.set_master(&endpoint.veth, &network.bridge)?;
    host.set_up(&endpoint.veth)?;
    let routed = default_route && !network.internal;
    netns::run_in(namespace.as_fd(), || {
        let mut inside = Netlink::open()?;
        let ifname = &endpoint.ifname;
        let mac = keel_net::ipam::parse_mac(&endpoint.mac).ok_or_else(|| {
            keel_net::Error::invalid(format!(
                "endpoint MAC {:?} is not six hex bytes",
                endpoint.mac
            ))
        })?;
        inside.set_mac(ifname, mac)?;
        if let Some(ip) = endpoint.ipv4 {
            inside.add_address(ifname, ip, endpoint.prefix4)?;
        }
        if let Some(ip) = endpoint.ipv6 {
            inside.add_address(ifname, ip, endpoint.prefix6)?;
        }
        inside.set_up(ifname)?;
        if routed {
            if let Some(gateway) = endpoint.gateway4 {
                inside.add_default_route(ifname, gateway)?;
            }
            if let Some(gateway) = endpoint.gateway6 {
                inside.add_default_route(ifname, gateway)?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

/// Undoes [`setup`]: endpoint records, the firewall; the namespace goes
/// with the sandbox's fd, and the kernel removes its veths with it (in the
/// background: deleting a link waits for RCU grace periods, 20-50 ms on a
/// nested-virt host, for nothing the user waits on). A start that finds a
/// veth of the same name still there deletes it first.
pub fn teardown(layout: &Layout, db: &mut Db, container: &str, sandbox: Sandbox) {
    if release(db, container, sandbox)
        && let Err(e) = super::sync(layout, db)
    {
        tracing::warn!("render the firewall: {e}");
    }
}

/// The first half of [`teardown`]: the endpoint records go (their
/// addresses and ports are free for the next start) and the namespace is
/// dropped; true if the firewall must be made again ([`super::sync`]),
/// which the monitor does once it has reported the exit (removing ports
/// costs an RCU grace period nobody needs to wait for).
pub fn release(db: &mut Db, container: &str, sandbox: Sandbox) -> bool {
    let Sandbox {
        namespace,
        endpoints,
        dns,
        ..
    } = sandbox;
    drop(dns);
    // Those made at start and those `network connect` added since.
    let mut endpoints = endpoints;
    for endpoint in super::endpoints_of_id(db, container).unwrap_or_default() {
        if !endpoints.iter().any(|e| e.network == endpoint.network) {
            endpoints.push(endpoint);
        }
    }
    // Held by our fd, the namespace is about to go: its veths with it.
    let delete_links = namespace.is_none();
    forget(db, container, &endpoints, delete_links);
    drop(namespace);
    !endpoints.is_empty()
}

fn forget(db: &mut Db, container: &str, endpoints: &[Endpoint], delete_links: bool) {
    let mut netlink = if delete_links {
        Netlink::open().ok()
    } else {
        None
    };
    for endpoint in endpoints {
        if let Some(netlink) = netlink.as_mut() {
            let _ = netlink.delete_link(&endpoint.veth);
        }
        let _ = super::release(db, &endpoint.network, container);
    }
}

/// Cleans up after a container whose monitor is gone (reconcile, rm):
/// its endpoints, their veths, unused bridges, the firewall.
pub fn cleanup(layout: &Layout, db: &mut Db, container: &Container) -> Result<()> {
    let endpoints = super::endpoints_of(db, container)?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let _lock = super::lock(layout)?;
    forget(db, &container.id, &endpoints, true);
    super::sync_locked(layout, db)
}

/// `network connect` of a running container: a new interface in its
/// namespace (the next free `ethN`).
pub fn connect(
    layout: &Layout,
    db: &mut Db,
    container: &Container,
    attachment: &NetworkAttachment,
) -> Result<Endpoint> {
    let pid = container.state.pid;
    let namespace = netlink::open_namespace(&format!("/proc/{pid}/ns/net"))?;
    let network = super::of_attachment(db, attachment)?;
    let taken: Vec<String> = Netlink::in_namespace(namespace.as_fd(), |n| {
        Ok(n.links()?.into_iter().map(|l| l.name).collect())
    })?;
    let ifname = (0..)
        .map(|i| format!("eth{i}"))
        .find(|name| !taken.contains(name))
        .expect("a free name");
    let _lock = super::lock(layout)?;
    let endpoint = attach_locked(
        db,
        container,
        attachment,
        &network,
        &namespace,
        &ifname,
        &[],
        false,
    )?;
    super::sync_locked(layout, db)?;
    Ok(endpoint)
}

/// `network disconnect` of a running container.
pub fn disconnect(
    layout: &Layout,
    db: &mut Db,
    container: &Container,
    network: &Network,
) -> Result<()> {
    let endpoints: Vec<Endpoint> = super::endpoints_of(db, container)?
        .into_iter()
        .filter(|e| e.network == network.id)
        .collect();
    let _lock = super::lock(layout)?;
    forget(db, &container.id, &endpoints, true);
    super::sync_locked(layout, db)
}
