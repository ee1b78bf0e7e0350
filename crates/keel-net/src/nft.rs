//! keel's nftables table, `inet keel`: outbound masquerade per bridge,
//! published ports (DNAT from the host's addresses and 127.0.0.1), hairpin
//! NAT, isolation between bridges and for `--internal` networks.
//!
//! The table is rendered whole from a [`Firewall`] (the caller builds it
//! from its state) and applied with `nft -f -` as one transaction that
//! replaces the table: readers never see half a table, another keel
//! process that applies after us sees our changes in the state it renders
//! from, and no other table is touched.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::ipam::Subnet;

/// keel's table (family inet).
pub const TABLE: &str = "keel";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    pub subnets: Vec<Subnet>,
    /// No traffic in or out but between its own ports.
    pub internal: bool,
}

/// A published port: traffic to `host_ip` (any local address if None)
/// at `host_port` goes to `target:target_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub target: IpAddr,
    pub target_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewall {
    pub bridges: Vec<Bridge>,
    pub forwards: Vec<Forward>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace(['"', '\\'], ""))
}

fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

fn socket(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The nft script that replaces keel's table with `firewall` (or removes
/// it when there is nothing to hold).
pub fn render(firewall: &Firewall) -> String {
    // Adding then deleting makes the delete safe when there is no table.
    let mut out = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    if firewall.bridges.is_empty() && firewall.forwards.is_empty() {
        return out;
    }
    out.push_str(&format!("table inet {TABLE} {{\n"));

    out.push_str("\tchain published {\n");
    for f in &firewall.forwards {
        let family = family_of(&f.target);
        let nfproto = if f.target.is_ipv4() { "ipv4" } else { "ipv6" };
        let destination = match &f.host_ip {
            Some(ip) if ip.is_ipv4() == f.target.is_ipv4() => {
                format!("{} daddr {ip} ", family_of(ip))
            }
            // A host address of the other family cannot reach this target.
            Some(_) => continue,
            None => String::new(),
        };
        out.push_str(&format!(
            "\t\tmeta nfproto {nfproto} {destination}{proto} dport {port} dnat {family} to {to}\n",
            proto = f.protocol.as_str(),
            port = f.host_port,
            to = socket(&f.target, f.target_port),
        ));
    }
    out.push_str("\t}\n");

    out.push_str(
        "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local jump published\n\t}\n",
    );
    out.push_str(
        "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\
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
    if !firewall.forwards.is_empty() {
        out.push_str("\t\tct status dnat accept\n");
    }
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
pub fn dns_redirect(port: u16) -> String {
    format!(
        "table ip keel-dns {{\n\
         \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:{port}\n\t}}\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr 127.0.0.11 udp sport {port} snat to 127.0.0.11:53\n\t}}\n}}\n"
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

    #[test]
    fn nothing_to_hold_removes_the_table() {
        let script = render(&Firewall::default());
        assert_eq!(script, "add table inet keel\ndelete table inet keel\n");
    }

    #[test]
    fn renders_masquerade_ports_and_isolation() {
        let firewall = Firewall {
            bridges: vec![
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
            ],
            forwards: vec![
                Forward {
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    target: "172.17.0.2".parse().unwrap(),
                    target_port: 80,
                },
                Forward {
                    protocol: Protocol::Udp,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 5353,
                    target: "172.17.0.2".parse().unwrap(),
                    target_port: 53,
                },
                Forward {
                    protocol: Protocol::Tcp,
                    host_ip: Some("::1".parse().unwrap()),
                    host_port: 1,
                    target: "172.17.0.2".parse().unwrap(),
                    target_port: 1,
                },
            ],
        };
        let script = render(&firewall);
        assert!(script.contains("meta nfproto ipv4 tcp dport 8080 dnat ip to 172.17.0.2:80\n"));
        assert!(script.contains(
            "meta nfproto ipv4 ip daddr 127.0.0.1 udp dport 5353 dnat ip to 172.17.0.2:53\n"
        ));
        assert!(!script.contains("::1"), "{script}");
        assert!(script.contains("ip saddr 172.17.0.0/16 oifname != \"keel0\" masquerade"));
        assert!(!script.contains("ip saddr 10.5.0.0/24 oifname != \"br-int\" masquerade"));
        assert!(script.contains("iifname \"br-int\" oifname != \"br-int\" drop"));
        assert!(script.contains("iifname \"keel0\" oifname { \"br-int\" } drop"));
    }
}
