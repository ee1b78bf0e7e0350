//! A container VM's network: keel made the container's network namespace
//! (veths on its bridges, addresses from its IPAM, published ports, the
//! name server) as for any container; the VM takes each interface over.
//! In that namespace a tap is made per interface and tc moves every frame
//! from one to the other (the way Kata Containers joins a pod's network),
//! and the guest's NIC gets the interface's MAC and addresses — so the
//! bridge's forwarding entries, the firewall and the fast path keel set up
//! for the container apply to the VM unchanged.
//!
//! The guest's questions to 127.0.0.11 come over vsock port 53; they are
//! asked at 127.0.0.11:53 in the namespace, where keel's name server for
//! the container is.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use keel_runtime::vm::proto::{DNS_PORT, Interface};

use crate::error::{Error, Result};

/// A NIC of the VM: what the guest is told, and the tap the VMM uses.
pub struct Nic {
    pub interface: Interface,
    pub tap: OwnedFd,
}

/// Enters the network namespace at `path` (this thread, and what it
/// starts later) and bridges each of its interfaces to a new tap.
pub fn take_over(path: &Path) -> Result<(Vec<Nic>, Option<String>, Option<String>)> {
    let namespace = std::fs::File::open(path).map_err(|e| Error::Io {
        what: format!("open the network namespace {}", path.display()),
        source: e,
    })?;
    nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        Error::Msg(format!(
            "enter the network namespace {}: {e}",
            path.display()
        ))
    })?;
    let links: serde_json::Value = ip(&["-j", "addr", "show"])?;
    let mut nics = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        let name = link["ifname"].as_str().unwrap_or_default().to_string();
        if name == "lo" || link["link_type"].as_str() != Some("ether") || name.starts_with("tap") {
            continue;
        }
        let addresses = |family: &str| -> Vec<String> {
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"].as_str() == Some(family))
                .filter(|a| a["scope"].as_str() != Some("link"))
                .filter_map(|a| {
                    Some(format!(
                        "{}/{}",
                        a["local"].as_str()?,
                        a["prefixlen"].as_u64()?
                    ))
                })
                .collect()
        };
        let interface = Interface {
            mac: link["address"].as_str().unwrap_or_default().to_string(),
            mtu: link["mtu"].as_u64().unwrap_or(1500) as u32,
            addresses: addresses("inet"),
            addresses6: addresses("inet6"),
            name,
        };
        let tap_name = format!("tap{}", nics.len());
        let tap = keel_net::tap::create(&tap_name).map_err(|e| Error::Msg(e.to_string()))?;
        run(
            "ip",
            &[
                "link",
                "set",
                &tap_name,
                "mtu",
                &interface.mtu.to_string(),
                "up",
            ],
        )?;
        for (from, to) in [(&interface.name, &tap_name), (&tap_name, &interface.name)] {
            run("tc", &["qdisc", "add", "dev", from, "ingress"])?;
            run(
                "tc",
                &[
                    "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                    "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
                ],
            )?;
        }
        nics.push(Nic { interface, tap });
    }
    let gateway = |family: &str| -> Result<Option<String>> {
        let routes: serde_json::Value = ip(&["-j", family, "route", "show", "default"])?;
        Ok(routes
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["gateway"].as_str())
            .map(str::to_string))
    };
    Ok((nics, gateway("-4")?, gateway("-6")?))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| Error::Io {
            what: format!("run {program}"),
            source: e,
        })?;
    if !out.status.success() {
        return Err(Error::Msg(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Io {
            what: "run ip".into(),
            source: e,
        })?;
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Msg(format!("ip {}: {e}", args.join(" "))))
}

/// Relays the guest's name questions (vsock port [`DNS_PORT`]: a 2-byte
/// length before each message, both ways) to 127.0.0.11:53 here, from a
/// thread, for as long as the process lives.
pub fn serve_dns(vsock_socket: &Path) -> Result<()> {
    let path = format!("{}_{DNS_PORT}", vsock_socket.display());
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| Error::Io {
        what: format!("listen on {path}"),
        source: e,
    })?;
    std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || relay_dns(stream));
            }
        })
        .map_err(|e| Error::Io {
            what: "start the DNS relay".into(),
            source: e,
        })?;
    Ok(())
}

fn relay_dns(mut stream: UnixStream) {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
    let mut length = [0u8; 2];
    let mut answer = vec![0u8; 65536];
    while stream.read_exact(&mut length).is_ok() {
        let mut question = vec![0u8; u16::from_be_bytes(length) as usize];
        if stream.read_exact(&mut question).is_err() {
            return;
        }
        let _ = socket.send_to(&question, "127.0.0.11:53");
        // An unanswered question gets an empty answer: the guest's
        // resolver asks again.
        let n = socket.recv(&mut answer).unwrap_or(0);
        let mut reply = (n as u16).to_be_bytes().to_vec();
        reply.extend_from_slice(&answer[..n]);
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}
