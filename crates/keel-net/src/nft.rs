//! keel's nftables table, `inet keel`: outbound masquerade per bridge,
//! published ports (DNAT from the host's addresses and 127.0.0.1), hairpin
//! NAT, isolation between bridges and for `--internal` networks.
//!
//! Published ports are elements of four maps (per family, any local
//! address or one), so that a container starting or stopping changes
//! elements, not rules: [`update`] turns the difference between what was
//! applied and what is wanted into element additions and deletions. The
//! table itself is rendered whole ([`render`]) when the bridges change,
//! and applied with `nft -f -` as one transaction that replaces it:
//! readers never see half a table, and no other table is touched.
//!
//! (Removing anything from nf_tables costs an RCU grace period when the
//! nft process closes its socket; adding does not. On a nested-virt host
//! that is 10-20 ms, so the start of a container adds only.)

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ipam::Subnet;

/// keel's table (family inet) for the default root; other roots name
/// their own ([`Firewall::table`]), so that several keel roots in one
/// namespace never rewrite each other's rules.
pub const TABLE: &str = "keel";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A bridge keel owns and the subnets behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    pub subnets: Vec<Subnet>,
    /// No traffic in or out but between its own ports.
    pub internal: bool,
}

/// A published port: traffic to `host_ip` (any local address if None)
/// at `host_port` goes to `target:target_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub target: IpAddr,
    pub target_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// The table's name ([`TABLE`] if empty).
    #[serde(default)]
    pub table: String,
    pub bridges: Vec<Bridge>,
    pub forwards: Vec<Forward>,
}

impl Firewall {
    pub fn table(&self) -> &str {
        if self.table.is_empty() {
            TABLE
        } else {
            &self.table
        }
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace(['"', '\\'], ""))
}

fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

fn address(ip: &IpAddr) -> String {
    ip.to_string()
}

impl Forward {
    /// A forward whose host address cannot reach its target's family is
    /// never rendered.
    fn usable(&self) -> bool {
        self.host_ip
            .is_none_or(|ip| ip.is_ipv4() == self.target.is_ipv4())
    }

    /// The map it goes in.
    fn map(&self) -> &'static str {
        match (self.target.is_ipv4(), self.host_ip.is_some()) {
            (true, false) => "published4",
            (true, true) => "published4_at",
            (false, false) => "published6",
            (false, true) => "published6_at",
        }
    }

    fn key(&self) -> String {
        let port = format!("{} . {}", self.protocol.as_str(), self.host_port);
        match &self.host_ip {
            Some(ip) => format!("{} . {port}", address(ip)),
            None => port,
        }
    }

    fn element(&self) -> String {
        format!(
            "{} : {} . {}",
            self.key(),
            address(&self.target),
            self.target_port
        )
    }
}

const MAPS: [(&str, &str); 4] = [
    (
        "published4",
        "inet_proto . inet_service : ipv4_addr . inet_service",
    ),
    (
        "published4_at",
        "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
    ),
    (
        "published6",
        "inet_proto . inet_service : ipv6_addr . inet_service",
    ),
    (
        "published6_at",
        "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
    ),
];

/// The nft script that replaces keel's table with `firewall` (or removes
/// it when there is nothing to hold).
pub fn render(firewall: &Firewall) -> String {
    // Adding then deleting makes the delete safe when there is no table.
    let table = firewall.table();
    let mut out = format!("add table inet {table}\ndelete table inet {table}\n");
    if firewall.bridges.is_empty() && firewall.forwards.is_empty() {
        return out;
    }
    out.push_str(&format!("table inet {table} {{\n"));
    for (name, kind) in MAPS {
        out.push_str(&format!("\tmap {name} {{\n\t\ttype {kind}\n"));
        let elements: Vec<String> = firewall
            .forwards
            .iter()
            .filter(|f| f.usable() && f.map() == name)
            .map(Forward::element)
            .collect();
        if !elements.is_empty() {
            out.push_str(&format!("\t\telements = {{ {} }}\n", elements.join(", ")));
        }
        out.push_str("\t}\n");
    }
    // Specific host addresses first, then any local address.
    out.push_str(
        "\tchain published {\n\
         \t\tmeta nfproto ipv4 meta l4proto { tcp, udp } dnat ip to ip daddr . meta l4proto . th dport map @published4_at\n\
         \t\tmeta nfproto ipv4 meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @published4\n\
         \t\tmeta nfproto ipv6 meta l4proto { tcp, udp } dnat ip6 to ip6 daddr . meta l4proto . th dport map @published6_at\n\
         \t\tmeta nfproto ipv6 meta l4proto { tcp, udp } dnat ip6 to meta l4proto . th dport map @published6\n\
         \t}\n",
    );
    out.push_str(
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local jump published\n\t}\n",
    );
    out.push_str(
        // ::1 is never routed out of the host: the monitor's relay takes
        // it (keel_net::relay).
        "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip6 daddr ::1 return\n\
         \t\tfib daddr type local jump published\n\t}\n",
    );

    out.push_str(
        "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n",
    );
    for bridge in &firewall.bridges {
        let name = quote(&bridge.name);
        // Published ports reached at 127.0.0.1 (needs route_localnet).
        out.push_str(&format!(
            "\t\toifname {name} ip saddr 127.0.0.0/8 masquerade\n"
        ));
        for subnet in &bridge.subnets {
            let family = family_of(&subnet.address);
            // Hairpin: a container reaching a published port of its own
            // bridge must see the answer come from the host.
            out.push_str(&format!(
                "\t\toifname {name} ct status dnat {family} saddr {subnet} masquerade\n"
            ));
            if !bridge.internal {
                out.push_str(&format!(
                    "\t\t{family} saddr {subnet} oifname != {name} masquerade\n"
                ));
            }
        }
    }
    out.push_str("\t}\n");

    out.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n",
    );
    // A published port is for everyone who reaches the host, containers
    // of other networks too (the isolation below is for direct traffic).
    out.push_str("\t\tct status dnat accept\n");
    for bridge in &firewall.bridges {
        let name = quote(&bridge.name);
        if bridge.internal {
            out.push_str(&format!("\t\tiifname {name} oifname != {name} drop\n"));
            out.push_str(&format!("\t\toifname {name} iifname != {name} drop\n"));
        }
        let others: Vec<String> = firewall
            .bridges
            .iter()
            .filter(|b| b.name != bridge.name)
            .map(|b| quote(&b.name))
            .collect();
        if !others.is_empty() {
            out.push_str(&format!(
                "\t\tiifname {name} oifname {{ {} }} drop\n",
                others.join(", ")
            ));
        }
    }
    out.push_str("\t}\n}\n");
    out
}

/// The element changes that take the table from `applied` to `desired`,
/// when only published ports differ (None: the bridges changed, render
/// the table whole). Deletions come first, so that a port that moves from
/// one container to another is never in a map twice.
pub fn update(applied: &Firewall, desired: &Firewall) -> Option<String> {
    if applied.bridges != desired.bridges
        || desired.bridges.is_empty()
        || applied.table() != desired.table()
    {
        return None;
    }
    let table = desired.table();
    let mut out = String::new();
    for gone in applied
        .forwards
        .iter()
        .filter(|f| f.usable() && !desired.forwards.contains(f))
    {
        out.push_str(&format!(
            "delete element inet {table} {} {{ {} }}\n",
            gone.map(),
            gone.key()
        ));
    }
    for new in desired
        .forwards
        .iter()
        .filter(|f| f.usable() && !applied.forwards.contains(f))
    {
        out.push_str(&format!(
            "add element inet {table} {} {{ {} }}\n",
            new.map(),
            new.element()
        ));
    }
    Some(out)
}

/// The `nft` binary (PATH, then the sbin directories root's PATH may lack).
pub fn nft_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nft"))
        .find(|candidate| candidate.is_file())
}

/// The table a container's own namespace gets so that its name server
/// answers at 127.0.0.11:53 while listening on `port` (as docker's: port
/// 53 stays free for the container's own servers).
///
/// Docker does this with NAT, which needs connection tracking, and then
/// every packet of the namespace pays for netfilter hooks and tracking.
/// keel rewrites the port statelessly instead, on loopback's ingress only
/// (the one device the queries and the answers cross): queries for port 53
/// get `port`, answers from `port` get 53 back. Traffic on the container's
/// other interfaces meets no netfilter hook at all.
///
/// Not for a container that may manage netfilter itself (`nat`: one with
/// CAP_NET_ADMIN): if its own rules turn tracking on, a stateless rewrite
/// makes the answer a new, unrelated flow that an "established, related
/// accept" policy drops; such a container gets docker's NAT.
pub fn dns_redirect(port: u16, nat: bool) -> String {
    if nat {
        return format!(
            "table ip keel-dns {{\n\
             \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n\
             \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:{port}\n\t}}\n\
             \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr 127.0.0.11 udp sport {port} snat to 127.0.0.11:53\n\t}}\n}}\n"
        );
    }
    format!(
        "table netdev keel-dns {{\n\
         \tchain lo {{\n\t\ttype filter hook ingress device \"lo\" priority 0; policy accept;\n\
         \t\tip daddr 127.0.0.11 udp dport 53 udp dport set {port}\n\
         \t\tip saddr 127.0.0.11 udp sport {port} udp sport set 53\n\t}}\n}}\n"
    )
}

/// Applies a script with `nft -f -` (one kernel transaction).
pub fn apply(script: &str) -> Result<()> {
    apply_in(None, script)
}

/// [`apply`] in the network namespace `namespace` (this one if None).
pub fn apply_in(namespace: Option<std::os::fd::BorrowedFd<'_>>, script: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let nft = nft_binary().ok_or_else(|| {
        Error::msg("bridge networks need nftables' nft command: apt install nftables")
    })?;
    let mut command = Command::new(&nft);
    if let Some(namespace) = namespace {
        let fd = namespace.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd stays open in the
        // parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("run {}", nft.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::io("write the nftables rules", e))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::io("wait for nft", e))?;
    if !output.status.success() {
        return Err(Error::msg(format!(
            "nftables refused keel's rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(port: u16, host_ip: Option<&str>, target: &str) -> Forward {
        Forward {
            protocol: if port == 5353 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_port: port,
            target: target.parse().unwrap(),
            target_port: 80,
        }
    }

    fn bridges() -> Vec<Bridge> {
        vec![
            Bridge {
                name: "keel0".into(),
                subnets: vec!["172.17.0.0/16".parse().unwrap()],
                internal: false,
            },
            Bridge {
                name: "br-int".into(),
                subnets: vec!["10.5.0.0/24".parse().unwrap()],
                internal: true,
            },
        ]
    }

    #[test]
    fn nothing_to_hold_removes_the_table() {
        let script = render(&Firewall::default());
        assert_eq!(script, "add table inet keel\ndelete table inet keel\n");
    }

    #[test]
    fn the_dns_port_is_rewritten_on_loopback_or_natted_for_netfilter_managers() {
        let stateless = dns_redirect(40000, false);
        assert!(stateless.contains("table netdev keel-dns"), "{stateless}");
        assert!(stateless.contains("device \"lo\""), "{stateless}");
        assert!(
            stateless.contains("udp dport 53 udp dport set 40000"),
            "{stateless}"
        );
        assert!(
            stateless.contains("udp sport 40000 udp sport set 53"),
            "{stateless}"
        );
        assert!(!stateless.contains("nat"), "{stateless}");
        let nat = dns_redirect(40000, true);
        assert!(nat.contains("dnat to 127.0.0.11:40000"), "{nat}");
        assert!(nat.contains("snat to 127.0.0.11:53"), "{nat}");
    }

    #[test]
    fn renders_masquerade_ports_and_isolation() {
        let firewall = Firewall {
            table: String::new(),
            bridges: bridges(),
            forwards: vec![
                forward(8080, None, "172.17.0.2"),
                forward(5353, Some("127.0.0.1"), "172.17.0.2"),
                forward(1, Some("::1"), "172.17.0.2"),
                forward(8080, None, "fd00::2"),
            ],
        };
        let script = render(&firewall);
        assert!(
            script.contains("elements = { tcp . 8080 : 172.17.0.2 . 80 }"),
            "{script}"
        );
        assert!(
            script.contains("elements = { 127.0.0.1 . udp . 5353 : 172.17.0.2 . 80 }"),
            "{script}"
        );
        assert!(
            script.contains("elements = { tcp . 8080 : fd00::2 . 80 }"),
            "{script}"
        );
        assert!(!script.contains("::1 . "), "{script}");
        assert!(script.contains("ip6 daddr ::1 return"), "{script}");
        assert!(script.contains("ip saddr 172.17.0.0/16 oifname != \"keel0\" masquerade"));
        assert!(!script.contains("ip saddr 10.5.0.0/24 oifname != \"br-int\" masquerade"));
        assert!(script.contains("iifname \"br-int\" oifname != \"br-int\" drop"));
        assert!(script.contains("iifname \"keel0\" oifname { \"br-int\" } drop"));
    }

    #[test]
    fn port_changes_are_element_updates() {
        let before = Firewall {
            table: String::new(),
            bridges: bridges(),
            forwards: vec![
                forward(8080, None, "172.17.0.2"),
                forward(5353, Some("127.0.0.1"), "172.17.0.2"),
            ],
        };
        let after = Firewall {
            table: String::new(),
            bridges: bridges(),
            forwards: vec![
                forward(8080, None, "172.17.0.3"),
                forward(5353, Some("127.0.0.1"), "172.17.0.2"),
            ],
        };
        let script = update(&before, &after).unwrap();
        assert_eq!(
            script,
            "delete element inet keel published4 { tcp . 8080 }\n\
             add element inet keel published4 { tcp . 8080 : 172.17.0.3 . 80 }\n"
        );
        assert_eq!(update(&after, &after).unwrap(), "");
        // Another root's table: its own name everywhere, and a change of
        // name renders the table whole.
        let named = Firewall {
            table: "keel-0123abcd".into(),
            ..after.clone()
        };
        assert!(render(&named).contains("table inet keel-0123abcd {"));
        assert!(!render(&named).contains("inet keel {"));
        assert_eq!(update(&after, &named), None);
        let fewer = Firewall {
            table: String::new(),
            bridges: bridges()[..1].to_vec(),
            forwards: Vec::new(),
        };
        assert_eq!(update(&after, &fewer), None);
    }
}
