//! Networks as a user drives them: `keel network ...`, `run --network`,
//! `-p`, `--network-alias`, `--ip`, `network connect/disconnect`.
//!
//! Each test's keel runs in a network namespace the test made (see
//! common::Keel): bridges, veths and nftables rules live there, and all
//! traffic stays between the test's containers and that namespace (the
//! "host" side). What is checked is what a user checks: busybox ping, nc
//! and nslookup in containers, connections from the host side to published
//! ports at 127.0.0.1 and at the bridge address, and what `ip` and `nft`
//! show afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use common::{Keel, stderr, stdout};

/// The static echo server the tests bind into containers (busybox's nc
/// has no UDP); scripts/setup builds it.
fn echo_server() -> PathBuf {
    let keel = PathBuf::from(env!("CARGO_BIN_EXE_keel"));
    let target = keel
        .parent()
        .and_then(|p| p.parent())
        .expect("the target dir");
    let path = target
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("debug")
        .join("keel-test-echo");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup --debug (it builds the static test echo server)",
        path.display()
    );
    path
}

/// `ip`/`nft` output in the test's namespace.
fn host(keel: &Keel, program: &str, args: &[&str]) -> String {
    let out = keel.netns.run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// A TCP exchange from the host side: sends a line, returns the answer.
fn tcp_from_host(keel: &Keel, address: SocketAddr, line: &str) -> std::io::Result<String> {
    keel.netns.within(|| {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(line.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

/// A UDP exchange from the host side (a few tries: the first datagram may
/// race the server's start).
fn udp_from_host(keel: &Keel, address: SocketAddr, data: &str) -> Option<String> {
    keel.netns.within(|| {
        let local = if address.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let mut buffer = [0u8; 512];
        for _ in 0..10 {
            socket.send_to(data.as_bytes(), address).ok()?;
            if let Ok((n, _)) = socket.recv_from(&mut buffer) {
                return Some(String::from_utf8_lossy(&buffer[..n]).into_owned());
            }
        }
        None
    })
}

fn ip_of(keel: &Keel, container: &str) -> String {
    keel.inspect(container, "{{.NetworkSettings.IPAddress}}")
}

/// What keel left in the namespace besides what a network keeps while
/// it exists: links other than lo, the test's `outside*` and the default
/// network's keel0; addresses of containers; published ports (map
/// elements) or rules naming a user-defined network's bridge.
fn leftovers(keel: &Keel) -> Vec<String> {
    let kept = |name: &str| name == "lo" || name == "keel0" || name.starts_with("outside");
    let mut found = Vec::new();
    for line in host(keel, "ip", &["-o", "link"]).lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        let name = name.split('@').next().unwrap_or(name);
        if !kept(name) {
            found.push(format!("link {name}"));
        }
    }
    for line in host(keel, "ip", &["-o", "addr"]).lines() {
        let name = line.split_whitespace().nth(1).unwrap_or("");
        if !kept(name) {
            found.push(format!("address {line}"));
        }
    }
    let rules = host(keel, "nft", &["list", "ruleset"]);
    if rules.contains("elements") || rules.contains("\"br-") || rules.contains("keeltest") {
        found.push(format!("nft {rules}"));
    }
    found
}

/// Waits until keel left nothing (the kernel removes a stopped
/// container's veths with its namespace, in the background).
fn assert_nothing_left(keel: &Keel) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = leftovers(keel);
        if found.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {found:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn names_aliases_and_ids_resolve_on_a_user_network() {
    let keel = Keel::new();
    keel.ok(&["network", "create", "appnet"]);
    let id = keel
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "appnet",
            "--network-alias",
            "www",
            "busybox",
            "sh",
            "-c",
            "echo hello > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
        ])
        .trim()
        .to_string();
    let web_ip = ip_of(&keel, "web");
    assert!(web_ip.starts_with("172."), "{web_ip}");
    let client = |script: &str| -> (i32, String) {
        let out = keel.run(&[
            "run",
            "--rm",
            "--network",
            "appnet",
            "busybox",
            "sh",
            "-c",
            script,
        ]);
        (
            out.status.code().unwrap_or(-1),
            stdout(&out) + &stderr(&out),
        )
    };
    // By name, by alias, by short id; HTTP through the name.
    let (code, out) = client(&format!(
        "ping -c1 -W2 web && ping -c1 -W2 www && ping -c1 -W2 {} && wget -qO- http://www/index.html",
        &id[..12]
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("PING web ({web_ip})")), "{out}");
    assert!(out.contains(&format!("PING www ({web_ip})")), "{out}");
    assert!(out.ends_with("hello\n"), "{out}");
    // nslookup asks keel's server in the container.
    let (code, out) = client("cat /etc/resolv.conf; nslookup web");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nameserver 127.0.0.11"), "{out}");
    assert!(out.contains(&format!("Address: {web_ip}")), "{out}");
    // A container that may manage netfilter gets NAT for the name server's
    // port (its own rules may track connections): names resolve there too.
    let out = keel.run(&[
        "run",
        "--rm",
        "--cap-add",
        "NET_ADMIN",
        "--network",
        "appnet",
        "busybox",
        "nslookup",
        "web",
    ]);
    let text = stdout(&out) + &stderr(&out);
    assert!(
        out.status.success() && text.contains(&format!("Address: {web_ip}")),
        "{text}"
    );
    // nc between containers by name.
    let (code, out) = client("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("200 OK") && out.ends_with("hello\n"), "{out}");
    // An unknown name fails (no upstream reachable from the namespace).
    let (code, _) = client("ping -c1 -W1 no-such-container");
    assert_ne!(code, 0);

    // /etc/hosts has the container's address with its hostname.
    let hosts = keel.ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&format!("{web_ip}\t{}", &id[..12])),
        "{hosts}"
    );

    // Another network can neither resolve nor reach it.
    keel.ok(&["network", "create", "othernet"]);
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "othernet",
        "busybox",
        "sh",
        "-c",
        &format!("ping -c1 -W1 web; ping -c1 -W1 {web_ip}"),
    ]);
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("bad address 'web'"), "{text}");
    assert!(text.contains("100% packet loss"), "{text}");

    // A rename is seen by the name server at once.
    keel.ok(&["rename", "web", "web2"]);
    let (code, out) = client("ping -c1 -W2 web2");
    assert_eq!(code, 0, "{out}");

    // Connected to a second network while it runs: reachable there by
    // its alias; disconnected: gone from there.
    keel.ok(&["network", "connect", "--alias", "w2", "othernet", "web2"]);
    let links = keel.ok(&["exec", "web2", "ls", "/sys/class/net"]);
    assert_eq!(links, "eth0\neth1\nlo\n");
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "othernet",
        "busybox",
        "ping",
        "-c1",
        "-W2",
        "w2",
    ]);
    assert!(out.status.success(), "{}", stdout(&out) + &stderr(&out));
    keel.ok(&["network", "disconnect", "othernet", "web2"]);
    assert_eq!(
        keel.ok(&["exec", "web2", "ls", "/sys/class/net"]),
        "eth0\nlo\n"
    );
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "othernet",
        "busybox",
        "ping",
        "-c1",
        "-W1",
        "w2",
    ]);
    assert!(!out.status.success());

    // A network in use cannot be removed; once its containers are gone
    // it can, and nothing is left in the namespace.
    let out = keel.run(&["network", "rm", "appnet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has active endpoints"),
        "{}",
        stderr(&out)
    );
    keel.ok(&["rm", "-f", "web2"]);
    assert_eq!(
        keel.ok(&["network", "rm", "appnet", "othernet"]),
        "appnet\nothernet\n"
    );
    assert_nothing_left(&keel);
}

#[test]
fn published_ports_tcp_and_udp_from_the_host_and_from_containers() {
    let keel = Keel::new();
    let echo = echo_server();
    let volume = format!("{}:/echo:ro", echo.display());
    keel.ok(&["network", "create", "--subnet", "10.123.0.0/24", "pubnet"]);
    keel.ok(&[
        "run", "-d", "--name", "svc", "--network", "pubnet", "-v", &volume,
        "-p", "18080:80", "-p", "15353:53/udp", "-p", "127.0.0.1::81", "-p", "82",
        "busybox", "sh", "-c",
        "echo hello > /tmp/index.html; httpd -p 80 -h /tmp; /echo tcp 81 & /echo tcp 82 & exec /echo udp 53",
    ]);
    keel.eventually("the services listen", || {
        keel.ok(&["exec", "svc", "netstat", "-ln"])
            .matches(":8")
            .count()
            >= 3
    });
    let gateway: std::net::IpAddr = "10.123.0.1".parse().unwrap();
    let localhost: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    // TCP at 127.0.0.1 and at the bridge address.
    for ip in [localhost, gateway] {
        let answer = tcp_from_host(
            &keel,
            SocketAddr::new(ip, 18080),
            "GET /index.html HTTP/1.0\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("TCP to {ip}:18080: {e}"));
        assert!(answer.ends_with("hello\n"), "{answer}");
        // UDP too.
        assert_eq!(
            udp_from_host(&keel, SocketAddr::new(ip, 15353), "ping").as_deref(),
            Some("udp:ping"),
            "UDP to {ip}:15353"
        );
    }
    // IPv6 too, as docker's proxy: [::1] reaches the container (which has
    // no IPv6 address) through the monitor's relay.
    let ipv6_localhost: std::net::IpAddr = "::1".parse().unwrap();
    let answer = tcp_from_host(
        &keel,
        SocketAddr::new(ipv6_localhost, 18080),
        "GET /index.html HTTP/1.0\r\n\r\n",
    )
    .unwrap_or_else(|e| panic!("TCP to [::1]:18080: {e}"));
    assert!(answer.ends_with("hello\n"), "{answer}");
    assert_eq!(
        udp_from_host(&keel, SocketAddr::new(ipv6_localhost, 15353), "ping6").as_deref(),
        Some("udp:ping6"),
        "UDP to [::1]:15353"
    );
    // `keel port`: the random ports keel picked, and where they are bound.
    let ports = keel.ok(&["port", "svc"]);
    assert!(
        ports.contains("80/tcp -> 0.0.0.0:18080\n80/tcp -> [::]:18080\n"),
        "{ports}"
    );
    assert!(
        ports.contains("53/udp -> 0.0.0.0:15353\n53/udp -> [::]:15353\n"),
        "{ports}"
    );
    assert_eq!(
        keel.inspect("svc", "{{json (index .NetworkSettings.Ports \"80/tcp\")}}"),
        r#"[{"HostIp":"0.0.0.0","HostPort":"18080"},{"HostIp":"::","HostPort":"18080"}]"#
    );
    let local: u16 = keel
        .ok(&["port", "svc", "81"])
        .trim()
        .strip_prefix("127.0.0.1:")
        .expect("bound to 127.0.0.1")
        .parse()
        .unwrap();
    let both = keel.ok(&["port", "svc", "82/tcp"]);
    let any: u16 = both
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("0.0.0.0:"))
        .expect("bound to all")
        .parse()
        .unwrap();
    assert_eq!(both, format!("0.0.0.0:{any}\n[::]:{any}\n"));
    assert_eq!(
        tcp_from_host(&keel, SocketAddr::new(ipv6_localhost, any), "v6\n").unwrap(),
        "tcp:v6\n"
    );
    // 127.0.0.1 only: nothing on IPv6.
    assert!(tcp_from_host(&keel, SocketAddr::new(ipv6_localhost, local), "d\n").is_err());
    assert!(local >= 1024 && any >= 1024 && local != any);
    assert_eq!(
        tcp_from_host(&keel, SocketAddr::new(localhost, local), "a\n").unwrap(),
        "tcp:a\n"
    );
    assert_eq!(
        tcp_from_host(&keel, SocketAddr::new(gateway, any), "b\n").unwrap(),
        "tcp:b\n"
    );
    // 127.0.0.1:PORT is published at 127.0.0.1 only.
    assert!(tcp_from_host(&keel, SocketAddr::new(gateway, local), "c\n").is_err());
    let out = keel.run(&["port", "svc", "9999"]);
    assert_eq!(out.status.code(), Some(1));
    let ps = keel.ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(
        ps.contains("0.0.0.0:18080->80/tcp, :::18080->80/tcp")
            && ps.contains("0.0.0.0:15353->53/udp, :::15353->53/udp"),
        "{ps}"
    );

    // From a container: hairpin on the same network, and from the
    // default network through the host's address.
    let fetch =
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 3 10.123.0.1 18080 | tail -1";
    for network in ["pubnet", "bridge"] {
        let out = keel.run(&[
            "run",
            "--rm",
            "--network",
            network,
            "busybox",
            "sh",
            "-c",
            fetch,
        ]);
        assert_eq!(stdout(&out), "hello\n", "from {network}: {}", stderr(&out));
    }

    // -P publishes the image's EXPOSEd ports on random host ports.
    keel.ok(&[
        "commit",
        "--change",
        "EXPOSE 80",
        "svc",
        "keel-test/exposed",
    ]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "exposed",
        "-P",
        "keel-test/exposed",
        "sh",
        "-c",
        "echo exposed > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ]);
    let published: u16 = keel
        .ok(&["port", "exposed", "80"])
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("0.0.0.0:"))
        .expect("published on all addresses")
        .parse()
        .unwrap();
    keel.eventually("the exposed port answers", || {
        tcp_from_host(
            &keel,
            SocketAddr::new(localhost, published),
            "GET /index.html HTTP/1.0\r\n\r\n",
        )
        .is_ok_and(|a| a.ends_with("exposed\n"))
    });
    keel.ok(&["rm", "-f", "exposed"]);

    // The port is taken while svc runs.
    let out = keel.run(&["run", "--rm", "-p", "18080:80", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("port is already allocated"),
        "{}",
        stderr(&out)
    );

    // Stopped: the ports are gone; started again: back.
    keel.ok(&["stop", "-t", "1", "svc"]);
    assert!(tcp_from_host(&keel, SocketAddr::new(localhost, 18080), "x").is_err());
    assert!(tcp_from_host(&keel, SocketAddr::new(ipv6_localhost, 18080), "x").is_err());
    assert!(!host(&keel, "nft", &["list", "ruleset"]).contains("18080"));
    keel.ok(&["start", "svc"]);
    keel.eventually("svc serves again", || {
        tcp_from_host(
            &keel,
            SocketAddr::new(gateway, 18080),
            "GET /index.html HTTP/1.0\r\n\r\n",
        )
        .is_ok_and(|a| a.ends_with("hello\n"))
    });
    keel.ok(&["rm", "-f", "svc"]);
    keel.ok(&["network", "rm", "pubnet"]);
    assert_nothing_left(&keel);
}

#[test]
fn internal_none_host_and_container_networks() {
    let keel = Keel::new();
    // An address outside every keel network, on the "host".
    host(&keel, "ip", &["link", "add", "outside0", "type", "bridge"]);
    host(
        &keel,
        "ip",
        &["addr", "add", "10.99.0.1/24", "dev", "outside0"],
    );
    host(&keel, "ip", &["link", "set", "outside0", "up"]);

    // The default network gets out (to the host's other address).
    let out = keel.run(&["run", "--rm", "busybox", "ping", "-c1", "-W2", "10.99.0.1"]);
    assert!(out.status.success(), "{}", stdout(&out) + &stderr(&out));

    // --internal: containers reach each other, nothing else.
    keel.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.124.0.0/24",
        "sealed",
    ]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "sealed",
        "busybox",
        "sleep",
        "600",
    ]);
    let out = keel.run(&[
        "run", "--rm", "--network", "sealed", "busybox", "sh", "-c",
        "ping -c1 -W2 peer >/dev/null && echo peer-ok; ip route; ping -c1 -W1 10.99.0.1 || echo no-way-out",
    ]);
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("peer-ok"), "{text}");
    assert!(!text.contains("default"), "no default route: {text}");
    assert!(text.contains("no-way-out"), "{text}");
    keel.ok(&["rm", "-f", "peer"]);

    // none: only loopback.
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "addr",
    ]);
    assert!(out.lines().all(|l| l.contains(" lo ")), "{out}");

    // container:NAME shares the other's interfaces and address.
    keel.ok(&["run", "-d", "--name", "holder", "busybox", "sleep", "600"]);
    let holder_ip = ip_of(&keel, "holder");
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "container:holder",
        "busybox",
        "ip",
        "-o",
        "-4",
        "addr",
    ]);
    assert!(out.contains(&holder_ip), "{out}");
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "container:absent",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));

    // host: the host's interfaces.
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "addr",
    ]);
    assert!(out.contains("10.99.0.1"), "{out}");

    // --hostname, --add-host, --dns-search in the generated files.
    let out = keel.ok(&[
        "run",
        "--rm",
        "--hostname",
        "box",
        "--add-host",
        "db:10.1.2.3",
        "--network",
        "bridge",
        "busybox",
        "sh",
        "-c",
        "hostname; cat /etc/hosts",
    ]);
    assert!(
        out.starts_with("box\n") && out.contains("\tbox\n") && out.contains("10.1.2.3\tdb"),
        "{out}"
    );
    keel.ok(&["network", "create", "named"]);
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "named",
        "--dns-search",
        "example.test",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(
        out,
        "nameserver 127.0.0.11\nsearch example.test\noptions ndots:0\n"
    );
    keel.ok(&["rm", "-f", "holder"]);
}

/// A DNS server on the host side answering every A question with
/// 10.99.0.99: what keel's server forwards to.
fn upstream_dns(socket: UdpSocket) {
    let mut buffer = [0u8; 512];
    while let Ok((n, from)) = socket.recv_from(&mut buffer) {
        if n < 12 {
            continue;
        }
        let mut reply = buffer[..n].to_vec();
        reply[2] |= 0x80; // a response
        reply[3] = 0x80; // recursion available, NOERROR
        reply[6..8].copy_from_slice(&1u16.to_be_bytes());
        reply[8..12].fill(0);
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 99, 0, 99]);
        let _ = socket.send_to(&reply, from);
    }
}

#[test]
fn other_names_are_forwarded_to_the_upstream_resolver() {
    let keel = Keel::new();
    host(&keel, "ip", &["link", "add", "outside0", "type", "bridge"]);
    host(
        &keel,
        "ip",
        &["addr", "add", "10.99.0.1/24", "dev", "outside0"],
    );
    host(&keel, "ip", &["link", "set", "outside0", "up"]);
    let socket = keel
        .netns
        .within(|| UdpSocket::bind("10.99.0.1:53").expect("bind the upstream"));
    std::thread::spawn(move || upstream_dns(socket));
    keel.ok(&["network", "create", "fwd"]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "local",
        "--network",
        "fwd",
        "busybox",
        "sleep",
        "600",
    ]);
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "fwd",
        "--dns",
        "10.99.0.1",
        "busybox",
        "sh",
        "-c",
        "nslookup somewhere.example 127.0.0.11; nslookup local 127.0.0.11",
    ]);
    assert!(out.contains("Address: 10.99.0.99"), "forwarded: {out}");
    assert!(
        out.contains(&format!("Address: {}", ip_of(&keel, "local"))),
        "{out}"
    );
    keel.ok(&["rm", "-f", "local"]);
}

#[test]
fn addresses_are_never_handed_out_twice_and_rm_leaves_nothing() {
    let keel = Keel::new();
    keel.ok(&[
        "network",
        "create",
        "--subnet",
        "10.125.0.0/26",
        "--ip-range",
        "10.125.0.0/27",
        "many",
    ]);
    // A fixed address, and a clash with it.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "many",
        "--ip",
        "10.125.0.40",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(ip_of(&keel, "fixed"), "10.125.0.40");
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "many",
        "--ip",
        "10.125.0.40",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "many",
        "--ip",
        "10.200.0.5",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));

    // 30 at once from 30 keel processes.
    let children: Vec<_> = (0..30)
        .map(|i| {
            keel.command(&[
                "run",
                "-d",
                "--name",
                &format!("p{i}"),
                "--network",
                "many",
                "busybox",
                "sleep",
                "600",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run keel")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut ips: Vec<String> = (0..30).map(|i| ip_of(&keel, &format!("p{i}"))).collect();
    // Dynamic addresses come from --ip-range (10.125.0.1-31, the gateway
    // .1 excepted).
    for ip in &ips {
        let last: u8 = ip
            .strip_prefix("10.125.0.")
            .expect("in the subnet")
            .parse()
            .unwrap();
        assert!((2..=31).contains(&last), "{ip}");
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 30, "every address once");
    // The pool is exhausted now: a clear error, nothing left half-made.
    let out = keel.run(&[
        "run",
        "-d",
        "--name",
        "one-too-many",
        "--network",
        "many",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no available IPv4 addresses"),
        "{}",
        stderr(&out)
    );
    keel.ok(&["rm", "-f", "one-too-many"]);
    // Each container talks to the others.
    let out = keel.run(&["exec", "p0", "ping", "-c1", "-W2", "p29"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let veths = host(&keel, "ip", &["-o", "link"]).matches("veth").count();
    assert_eq!(veths, 31);

    // A freed address is handed out again.
    let freed = ip_of(&keel, "p7");
    keel.ok(&["rm", "-f", "p7"]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "again",
        "--network",
        "many",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(ip_of(&keel, "again"), freed);

    let all = keel.ok(&["ps", "-aq"]);
    let mut args = vec!["rm", "-f"];
    args.extend(all.split_whitespace());
    keel.ok(&args);
    assert!(
        keel.ok(&["network", "inspect", "-f", "{{json .Containers}}", "many"])
            .starts_with("{}")
    );
    // The network keeps its bridge (and its address) until it is removed;
    // no container's veth, address or port is left.
    keel.eventually("the veths go with the namespaces", || {
        !host(&keel, "ip", &["-o", "link"]).contains("veth")
    });
    assert!(!host(&keel, "ip", &["-o", "addr"]).contains("10.125.0.2/"));
    assert!(!host(&keel, "nft", &["list", "ruleset"]).contains("elements"));
    keel.ok(&["network", "rm", "many"]);
    assert_nothing_left(&keel);
}

#[test]
fn a_killed_monitor_leaves_nothing_the_next_command_cannot_clean() {
    let keel = Keel::new();
    keel.ok(&["network", "create", "--subnet", "10.126.0.0/24", "crash"]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "--network",
        "crash",
        "-p",
        "18081:80",
        "busybox",
        "sleep",
        "600",
    ]);
    let ip = ip_of(&keel, "victim");
    let pid: i32 = keel.inspect("victim", "{{.State.Pid}}").parse().unwrap();
    let monitor: i32 = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: killing the monitor and container this test started, by pid.
    unsafe {
        libc::kill(monitor, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    keel.eventually("the container is gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    // The next command sees it exited and cleans up its endpoint and rule.
    assert!(
        keel.ok(&["ps", "-a", "--format", "{{.Status}}"])
            .starts_with("Exited")
    );
    assert!(!host(&keel, "nft", &["list", "ruleset"]).contains("18081"));
    keel.eventually("the veth is gone", || {
        !host(&keel, "ip", &["-o", "link"]).contains("veth")
    });
    // Its address and port are free again: it starts as before.
    keel.ok(&["start", "victim"]);
    assert_eq!(ip_of(&keel, "victim"), ip);
    keel.ok(&["rm", "-f", "victim"]);
    keel.ok(&["network", "rm", "crash"]);
    assert_nothing_left(&keel);
}

#[test]
fn network_commands_as_docker_users_know_them() {
    let keel = Keel::new();
    let id = keel.ok(&[
        "network",
        "create",
        "--subnet",
        "10.127.0.0/24",
        "--gateway",
        "10.127.0.254",
        "-o",
        "com.docker.network.bridge.name=keeltest0",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "team=a",
        "labelled",
    ]);
    assert_eq!(id.trim().len(), 64);
    let ls = keel.ok(&["network", "ls"]);
    for name in ["bridge", "host", "none", "labelled"] {
        assert!(
            ls.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name)),
            "{ls}"
        );
    }
    assert_eq!(
        keel.ok(&["network", "ls", "-q", "--filter", "label=team=a"])
            .trim(),
        &id.trim()[..12]
    );
    assert_eq!(
        keel.ok(&[
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            "name=label"
        ]),
        "labelled\n"
    );
    let inspect = keel.ok(&["network", "inspect", "labelled"]);
    let value: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(value[0]["IPAM"]["Config"][0]["Gateway"], "10.127.0.254");
    assert_eq!(
        value[0]["Options"]["com.docker.network.bridge.name"],
        "keeltest0"
    );

    // The bridge exists while a container is on it, with that name and MTU.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "labelled",
        "busybox",
        "sleep",
        "600",
    ]);
    let link = host(&keel, "ip", &["-o", "link", "show", "keeltest0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    assert_eq!(
        keel.ok(&["exec", "c1", "cat", "/sys/class/net/eth0/mtu"]),
        "1400\n"
    );
    assert!(host(&keel, "ip", &["-o", "addr", "show", "keeltest0"]).contains("10.127.0.254/24"));
    assert_eq!(
        keel.inspect("c1", "{{.NetworkSettings.Networks.labelled.Gateway}}"),
        "10.127.0.254"
    );

    // Refusals name the problem.
    for (args, message) in [
        (vec!["network", "create", "labelled"], "already exists"),
        (
            vec!["network", "create", "--subnet", "10.127.0.0/25", "overlap"],
            "overlaps",
        ),
        (
            vec!["network", "create", "--subnet", "nonsense", "bad"],
            "invalid subnet",
        ),
        (
            vec!["network", "create", "--ipv6", "v6-without-subnet"],
            "IPv6 --subnet",
        ),
        (
            vec!["network", "create", "-d", "overlay", "ov"],
            "not supported",
        ),
        (vec!["network", "create", "host"], "pre-defined"),
        (vec!["network", "rm", "bridge"], "pre-defined"),
    ] {
        let out = keel.run(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    // prune keeps networks that containers name.
    keel.ok(&["network", "create", "unused"]);
    let pruned = keel.ok(&["network", "prune", "-f"]);
    assert_eq!(pruned, "Deleted Networks:\nunused\n");
    keel.ok(&["rm", "-f", "c1"]);
    assert!(
        host(&keel, "ip", &["-o", "link"]).contains("keeltest0"),
        "the bridge stays with its network"
    );
    keel.ok(&["network", "rm", "labelled"]);
    assert!(
        !host(&keel, "ip", &["-o", "link"]).contains("keeltest0"),
        "network rm removes the bridge"
    );
    assert!(!host(&keel, "nft", &["list", "ruleset"]).contains("keeltest0"));
    assert!(
        !host(&keel, "ip", &["-o", "link"]).contains("keeltest0"),
        "the bridge goes with its last container"
    );

    // IPv6: a v6 subnet too; names resolve to both.
    keel.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "fd00:6::/64",
        "six",
    ]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "v6",
        "--network",
        "six",
        "busybox",
        "sleep",
        "600",
    ]);
    let v6 = keel.inspect("v6", "{{.NetworkSettings.GlobalIPv6Address}}");
    assert!(v6.starts_with("fd00:6::"), "{v6}");
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "six",
        "busybox",
        "sh",
        "-c",
        "ping6 -c1 -W2 v6 >/dev/null && echo ok",
    ]);
    assert_eq!(out, "ok\n");
    // --ip6: the address asked for.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "fixed6",
        "--network",
        "six",
        "--ip6",
        "fd00:6::42",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(
        keel.inspect("fixed6", "{{.NetworkSettings.GlobalIPv6Address}}"),
        "fd00:6::42"
    );
    let inside = keel.ok(&["exec", "fixed6", "ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(inside.contains("fd00:6::42/64"), "{inside}");
    // A published port of a container with IPv6: the kernel takes traffic
    // to a host address (here the gateway's) to the container's IPv6
    // address, the relay takes [::1]'s; 127.0.0.1 still goes to IPv4.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "six",
        "-p",
        "18086:80",
        "busybox",
        "sh",
        "-c",
        "echo six > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ]);
    for address in ["[::1]:18086", "[fd00:6::1]:18086", "127.0.0.1:18086"] {
        keel.eventually(&format!("web6 answers at {address}"), || {
            tcp_from_host(
                &keel,
                address.parse().unwrap(),
                "GET /index.html HTTP/1.0\r\n\r\n",
            )
            .is_ok_and(|a| a.ends_with("six\n"))
        });
    }
    keel.ok(&["rm", "-f", "v6", "fixed6", "web6"]);
}

/// Bytes each link keel's `ip -s link show ARGS` lists transmitted.
fn tx_bytes(keel: &Keel, args: &[&str]) -> Vec<(String, u64)> {
    let mut command = vec!["-j", "-s", "link", "show"];
    command.extend(args);
    let json = host(keel, "ip", &command);
    let links: serde_json::Value = serde_json::from_str(&json).expect("ip -j prints JSON");
    links
        .as_array()
        .expect("a list of links")
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or("").to_string(),
                l["stats64"]["tx"]["bytes"].as_u64().expect("tx bytes"),
            )
        })
        .collect()
}

/// Bytes the bridge device `bridge` received (passed up to the host).
fn rx_bytes(keel: &Keel, bridge: &str) -> u64 {
    let json = host(keel, "ip", &["-j", "-s", "link", "show", bridge]);
    let links: serde_json::Value = serde_json::from_str(&json).expect("ip -j prints JSON");
    links[0]["stats64"]["rx"]["bytes"]
        .as_u64()
        .expect("rx bytes")
}

/// What the links of `after` sent since `before` (links in both).
fn sent_since(before: &[(String, u64)], after: &[(String, u64)]) -> u64 {
    after
        .iter()
        .filter_map(|(name, bytes)| {
            let (_, earlier) = before.iter().find(|(n, _)| n == name)?;
            Some(bytes - earlier)
        })
        .sum()
}

/// The bridge fast path: frames between a network's containers go from
/// one veth into the other container (the bridge's ports, the host ends
/// of the veths, do not transmit them, as they would on a bridge), frames
/// the host sends to a container skip the bridge device (its transmit
/// counter stays), and frames a container sends to the host skip the
/// bridge's forwarding (its receive counter stays). Off by a network option, the bridge carries
/// them again. Hairpin to a published port still works (the published-port
/// test). Survives a restart (new veths), and leaves nothing behind.
#[test]
fn frames_skip_the_bridge_unless_the_network_turns_the_fast_path_off() {
    let keel = Keel::new();
    keel.ok(&["network", "create", "fast"]);
    keel.ok(&[
        "network",
        "create",
        "-o",
        "io.keel.bridge.fastpath=false",
        "slow",
    ]);
    let out = keel.run(&[
        "network",
        "create",
        "-o",
        "io.keel.bridge.fastpath=maybe",
        "bad",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("true or false"), "{}", stderr(&out));
    const SIZE: u64 = 4 << 20;
    let serve = format!(
        "dd if=/dev/zero of=/tmp/big bs=1M count={} 2>/dev/null; exec httpd -f -p 80 -h /tmp",
        SIZE >> 20
    );
    // The host side sends SIZE bytes to a container's nc.
    let upload = |keel: &Keel, ip: &str| {
        let address: SocketAddr = format!("{ip}:9000").parse().unwrap();
        keel.netns.within(|| {
            for _ in 0..50 {
                if let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2))
                {
                    let zeros = vec![0u8; 64 * 1024];
                    for _ in 0..SIZE / zeros.len() as u64 {
                        stream.write_all(&zeros).expect("upload");
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("nothing listens at {address}");
        })
    };
    for network in ["fast", "slow"] {
        let bridge = keel
            .ok(&[
                "network",
                "inspect",
                "-f",
                "{{index .Options \"com.docker.network.bridge.name\"}}",
                network,
            ])
            .trim()
            .to_string();
        let [web, sink, client] = ["web", "sink", "client"].map(|n| format!("{n}-{network}"));
        keel.ok(&[
            "run",
            "-d",
            "--name",
            &web,
            "--network",
            network,
            "busybox",
            "sh",
            "-c",
            &serve,
        ]);
        keel.ok(&[
            "run",
            "-d",
            "--name",
            &sink,
            "--network",
            network,
            "busybox",
            "sh",
            "-c",
            "nc -l -p 9000 > /tmp/up; exec sleep 1000",
        ]);
        keel.ok(&[
            "run",
            "-d",
            "--name",
            &client,
            "--network",
            network,
            "busybox",
            "sleep",
            "1000",
        ]);
        for round in ["first start", "after a restart"] {
            if round == "after a restart" {
                keel.ok(&["restart", "-t", "1", &web, &sink, &client]);
            }
            // Each container's MAC is a static entry of the bridge (frames
            // that skip the bridge teach it nothing; a learnt entry would
            // age out and the bridge would flood what it still forwards).
            if network == "fast" {
                let fdb = host(&keel, "bridge", &["fdb", "show", "br", &bridge]);
                for name in [&web, &sink, &client] {
                    let mac = keel.inspect(
                        name,
                        &format!("{{{{.NetworkSettings.Networks.{network}.MacAddress}}}}"),
                    );
                    assert_eq!(mac.len(), 17, "{name}: MacAddress {mac:?}");
                    assert!(
                        fdb.lines()
                            .any(|l| l.starts_with(&mac) && l.contains(" static")),
                        "{round}: no static entry for {mac}:\n{fdb}"
                    );
                }
            }
            // Container to container: a download of SIZE bytes.
            let ports = tx_bytes(&keel, &["master", &bridge]);
            let out = keel.run(&[
                "exec", &client, "sh", "-c",
                &format!("for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://{web}/big > /tmp/got && break; sleep 0.2; done; wc -c < /tmp/got"),
            ]);
            assert_eq!(
                stdout(&out).trim(),
                SIZE.to_string(),
                "{network}, {round}: {}",
                stderr(&out)
            );
            let by_ports = sent_since(&ports, &tx_bytes(&keel, &["master", &bridge]));
            // Host to container: an upload of SIZE bytes.
            let device = tx_bytes(&keel, &[&bridge]);
            upload(&keel, &ip_of(&keel, &sink));
            keel.eventually("the upload arrived", || {
                keel.ok(&["exec", &sink, "wc", "-c", "/tmp/up"])
                    .starts_with(&SIZE.to_string())
            });
            let by_bridge = sent_since(&device, &tx_bytes(&keel, &[&bridge]));
            // Container to host: the bridge passes what it takes up to the
            // host (and counts it as received); the fast path does not.
            let received = rx_bytes(&keel, &bridge);
            let gateway = keel.inspect(
                &client,
                &format!("{{{{.NetworkSettings.Networks.{network}.Gateway}}}}"),
            );
            let got = keel.netns.within(|| {
                let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
                let port = listener.local_addr().unwrap().port();
                let send = format!(
                    "dd if=/dev/zero bs=1M count={} 2>/dev/null | nc -w 2 {gateway} {port}",
                    SIZE >> 20
                );
                std::thread::scope(|scope| {
                    let sender = scope.spawn(|| keel.run(&["exec", &client, "sh", "-c", &send]));
                    let (mut stream, _) = listener.accept().expect("accept");
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut got = vec![0u8; SIZE as usize];
                    let whole = stream.read_exact(&mut got).is_ok();
                    // nc ends when the connection does.
                    drop(stream);
                    let _ = sender.join();
                    if whole { SIZE } else { 0 }
                })
            });
            assert_eq!(got, SIZE, "{network}, {round}: container to host");
            let by_host = rx_bytes(&keel, &bridge) - received;
            let what = format!(
                "{network}, {round}: the ports sent {by_ports} bytes, the bridge {by_bridge}, the bridge passed up {by_host}"
            );
            if network == "fast" {
                assert!(
                    by_ports < SIZE / 8 && by_bridge < SIZE / 8 && by_host < SIZE / 8,
                    "{what}"
                );
            } else {
                assert!(
                    by_ports > SIZE && by_bridge > SIZE && by_host > SIZE,
                    "{what}"
                );
            }
        }
        keel.ok(&["rm", "-f", &web, &sink, &client]);
    }
    let records = keel.runroot().join("fastpath");
    assert!(
        std::fs::read_dir(&records).is_ok_and(|d| d.count() == 1),
        "one record, of network fast, while it exists"
    );
    keel.ok(&["network", "rm", "fast", "slow"]);
    // The next sync drops the record of a removed network.
    keel.ok(&["run", "--rm", "--network", "none", "busybox", "true"]);
    assert!(std::fs::read_dir(&records).is_ok_and(|d| d.count() == 0));
    assert_nothing_left(&keel);
}

#[test]
fn a_published_port_is_held_like_docker_s_proxy_holds_it() {
    let keel = Keel::new();
    // A program already listening there: keel refuses to publish over it
    // and leaves nothing running.
    let theirs = keel
        .netns
        .within(|| std::net::TcpListener::bind("127.0.0.1:18082").unwrap());
    let out = keel.run(&[
        "run",
        "-d",
        "--name",
        "late",
        "-p",
        "127.0.0.1:18082:80",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Bind for 127.0.0.1:18082 failed: address already in use"),
        "{}",
        stderr(&out)
    );
    assert_eq!(keel.inspect("late", "{{.State.Status}}"), "created");
    drop(theirs);
    keel.ok(&["rm", "late"]);

    // Published first: a program cannot take the port while the container
    // runs (not even with SO_REUSEADDR, which std's listener sets), and can
    // once it stops. UDP too.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:18083:80",
        "-p",
        "18084:53/udp",
        "busybox",
        "sleep",
        "300",
    ]);
    let bind_tcp = || {
        keel.netns
            .within(|| std::net::TcpListener::bind("127.0.0.1:18083").map(drop))
    };
    let bind_udp = || {
        keel.netns
            .within(|| UdpSocket::bind("0.0.0.0:18084").map(drop))
    };
    assert_eq!(
        bind_tcp().unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );
    assert_eq!(
        bind_udp().unwrap_err().kind(),
        std::io::ErrorKind::AddrInUse
    );
    // keel's own registry is refused there too.
    let storage = keel.temp.subdir("registry");
    let out = keel.run(&[
        "registry",
        "serve",
        "--addr",
        "127.0.0.1:18083",
        "--storage",
        storage.to_str().unwrap(),
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    keel.ok(&["stop", "-t", "0", "web"]);
    bind_tcp().unwrap();
    bind_udp().unwrap();
    // Started again, held again.
    keel.ok(&["start", "web"]);
    assert!(bind_tcp().is_err());
    keel.ok(&["rm", "-f", "web"]);
    bind_tcp().unwrap();
}

#[test]
fn two_keel_roots_in_one_namespace_keep_to_their_own() {
    let keel = Keel::new();
    // A second keel (another user's, or a test's) beside the first: its own
    // root, runroot and cgroups, the same network namespace.
    let second = keel.temp.subdir("second");
    let second_cgroups = format!("{}/second", keel.cgroup_parent);
    let other = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .env("KEEL_ROOT", second.join("root"))
            .env("KEEL_RUNROOT", second.join("run"))
            .env("KEEL_CGROUP_PARENT", &second_cgroups)
            .args(args)
            .stdin(std::process::Stdio::null());
        keel.netns.enter(&mut command);
        command.output().unwrap()
    };
    let tarball = keel.temp.path().join("busybox-rootfs.tar");
    assert!(
        other(&["import", tarball.to_str().unwrap(), "busybox"])
            .status
            .success()
    );

    let serve = "echo $ROOT > /tmp/index.html; exec httpd -f -p 80 -h /tmp";
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "one",
        "-e",
        "ROOT=first",
        "-p",
        "127.0.0.1:18090:80",
        "busybox",
        "sh",
        "-c",
        serve,
    ]);
    let out = other(&[
        "run",
        "-d",
        "--name",
        "two",
        "-e",
        "ROOT=second",
        "-p",
        "127.0.0.1:18091:80",
        "busybox",
        "sh",
        "-c",
        serve,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Told that the default bridge is taken, and given one of its own.
    assert!(
        stderr(&out).contains("keel0 is another keel root's (or another program's): this root's default network uses keel1"),
        "{}",
        stderr(&out)
    );
    let get = |port: u16| {
        tcp_from_host(
            &keel,
            SocketAddr::from(([127, 0, 0, 1], port)),
            "GET /index.html HTTP/1.0\r\n\r\n",
        )
    };
    for (port, root) in [(18090, "first"), (18091, "second")] {
        keel.eventually("both answer", || {
            get(port).is_ok_and(|a| a.ends_with(&format!("{root}\n")))
        });
    }
    // Each root's rules in a table of its own; each bridge with one root's
    // addresses, on subnets that do not overlap.
    let tables = host(&keel, "nft", &["list", "tables"]);
    let ours: Vec<&str> = tables
        .lines()
        .filter(|l| l.starts_with("table inet keel"))
        .collect();
    assert_eq!(ours.len(), 2, "{tables}");
    let addresses = |bridge: &str| {
        host(&keel, "ip", &["-o", "-4", "addr", "show", "dev", bridge])
            .lines()
            .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let (first, second_addresses) = (addresses("keel0"), addresses("keel1"));
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(second_addresses.len(), 1, "{second_addresses:?}");
    assert_ne!(
        first[0].rsplit_once('.').map(|(net, _)| net.to_string()),
        second_addresses[0]
            .rsplit_once('.')
            .map(|(net, _)| net.to_string())
    );
    // One root's changes leave the other's ports alone.
    assert!(other(&["rm", "-f", "two"]).status.success());
    assert!(get(18090).unwrap().ends_with("first\n"));
    let out = other(&["run", "--rm", "busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(get(18090).unwrap().ends_with("first\n"));
    keel.ok(&["rm", "-f", "one"]);
}

#[test]
fn a_vm_and_a_container_on_one_network_reach_each_other() {
    let keel = Keel::new();
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "this test runs keel's test guest under KVM: /dev/kvm is missing"
    );
    keel.ok(&["network", "create", "--subnet", "10.77.0.0/24", "mixed"]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "mixed",
        "busybox",
        "sleep",
        "600",
    ]);
    let peer = keel.inspect("peer", "{{.NetworkSettings.Networks.mixed.IPAddress}}");
    let cmdline = format!("net peer={peer}");
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "guest",
        "--network",
        "mixed",
        "--kernel",
        keel_vm::TEST_GUEST,
        "--cmdline",
        &cmdline,
    ]);
    let inspect = |format: &str| {
        keel.ok(&["vm", "inspect", "-f", format, "guest"])
            .trim()
            .to_string()
    };
    let address = inspect("{{.NetworkSettings.IPAddress}}");
    assert!(address.starts_with("10.77.0."), "{address}");
    assert_ne!(address, peer);
    assert_eq!(inspect("{{.NetworkSettings.Gateway}}"), "10.77.0.1");
    let tap = inspect("{{.NetworkSettings.Networks.mixed.Tap}}");
    let mac = inspect("{{.NetworkSettings.MacAddress}}");
    // The guest finds its MAC on the device and its address on its
    // command line, and its echo request to the container is answered.
    keel.eventually("the container answers the guest's ping", || {
        keel.ok(&["vm", "logs", "guest"])
            .contains(&format!("reply from {peer}\n"))
    });
    let logs = keel.ok(&["vm", "logs", "guest"]);
    assert!(
        logs.contains(&format!("net: mac {mac} ip {address}\n")),
        "{logs}"
    );
    // The container pings the VM, and so does the host (the bridge).
    let out = keel.run(&["exec", "peer", "ping", "-c", "2", "-W", "5", &address]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("2 packets received"),
        "{}",
        stdout(&out)
    );
    assert!(
        keel.ok(&["vm", "logs", "guest"])
            .contains(&format!("echo request from {peer}\n"))
    );
    host(&keel, "busybox", &["ping", "-c", "1", "-W", "5", &address]);
    // The tap is a port of the network's bridge.
    let bridge = keel.ok(&["network", "inspect", "-f", "{{.Options}}", "mixed"]);
    let ports = host(&keel, "ip", &["-o", "link", "show", "type", "tun"]);
    assert!(
        ports.contains(&tap) && ports.contains("master br-"),
        "{ports} {bridge}"
    );
    // A network with a VM on it is in use.
    let out = keel.run(&["network", "rm", "mixed"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has active endpoints"),
        "{}",
        stderr(&out)
    );
    // The VM goes: its tap with its VMM, its address with its record.
    keel.ok(&["vm", "rm", "-f", "guest"]);
    assert!(!host(&keel, "ip", &["-o", "link"]).contains(&tap));
    keel.ok(&["rm", "-f", "peer"]);
    keel.ok(&["network", "rm", "mixed"]);
    assert_nothing_left(&keel);
}

#[test]
fn a_vm_on_a_network_that_is_not_there_is_refused_and_leaves_nothing() {
    let keel = Keel::new();
    let out = keel.run(&[
        "vm",
        "run",
        "-d",
        "--name",
        "lost",
        "--network",
        "nowhere",
        "--kernel",
        keel_vm::TEST_GUEST,
        "--cmdline",
        "net",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
    assert_eq!(keel.ok(&["vm", "ls", "-aq"]), "");
    assert_nothing_left(&keel);
}

#[test]
fn a_vm_restored_from_a_snapshot_is_back_on_its_network_at_its_address() {
    let keel = Keel::new();
    keel.ok(&["network", "create", "--subnet", "10.78.0.0/24", "snapnet"]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "snapnet",
        "busybox",
        "sleep",
        "600",
    ]);
    let peer = keel.inspect("peer", "{{.NetworkSettings.Networks.snapnet.IPAddress}}");
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "guest",
        "--network",
        "snapnet",
        "--kernel",
        keel_vm::TEST_GUEST,
        "--cmdline",
        "net",
    ]);
    let address = keel
        .ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            "guest",
        ])
        .trim()
        .to_string();
    keel.eventually("the guest answers", || {
        keel.ok(&["vm", "logs", "guest"])
            .contains("net: answering\n")
    });
    let snapshot = keel.temp.path().join("guest.snap");
    keel.ok(&["vm", "snapshot", "guest", snapshot.to_str().unwrap()]);
    // Its address is the running VM's: a restore beside it is refused,
    // and leaves nothing.
    let out = keel.run(&[
        "vm",
        "restore",
        "-d",
        "--name",
        "twin",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("address {address} is already in use")),
        "{}",
        stderr(&out)
    );
    assert!(!keel.ok(&["vm", "ls", "-a"]).contains("twin"));
    keel.ok(&["vm", "rm", "-f", "guest"]);
    keel.ok(&[
        "vm",
        "restore",
        "-d",
        "--name",
        "back",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(
        keel.ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            "back"
        ])
        .trim(),
        address
    );
    // The restored guest answers the container where the first one did.
    let out = keel.run(&["exec", "peer", "ping", "-c", "2", "-W", "5", &address]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        keel.ok(&["vm", "logs", "back"])
            .contains(&format!("echo request from {peer}\n"))
    );
    keel.ok(&["vm", "rm", "-f", "back"]);
    keel.ok(&["rm", "-f", "peer"]);
    keel.ok(&["network", "rm", "snapnet"]);
    assert_nothing_left(&keel);
}
