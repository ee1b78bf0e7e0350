//! Pods on keel-runtime as a Kubernetes node runs them: the CRI calls
//! kubelet makes, to containerd's CRI plugin, whose `keel` handler is
//! keel-runtime — and each test does the same on the `runc` handler in the
//! same node, so keel is held to runc's behaviour, not to a guess of it.

use std::path::{Path, PathBuf};

use keel_cri::{HANDLERS, Node, v1 as cri};
use keel_testutil::TempRoot;

/// The node, dropped before its temp dir.
struct Test {
    node: Node,
    _temp: TempRoot,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn keel_runtime() -> PathBuf {
    keel_testutil::runtime_bin(target_dir().join("debug/keel-runtime"))
}

fn node() -> Test {
    keel_testutil::require_root();
    let temp = TempRoot::new();
    let node = Node::start(&temp, &keel_runtime());
    Test { node, _temp: temp }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `script` with `sh -c` in the container: (exit code, stdout, stderr).
fn sh(node: &Node, id: &str, script: &str) -> (i32, String, String) {
    let out = node
        .client
        .exec_sync(id, &["sh", "-c", script])
        .unwrap_or_else(|e| panic!("exec {script:?}: {e}"));
    (out.exit_code, text(&out.stdout), text(&out.stderr))
}

/// Runs `script`, which must succeed: its stdout.
fn sh_ok(node: &Node, id: &str, script: &str) -> String {
    let (code, out, err) = sh(node, id, script);
    assert_eq!(code, 0, "{script:?}: {out}{err}");
    out
}

/// A running pod with one running app container: (pod, container).
fn pod_with(
    node: &Node,
    handler: &str,
    name: &str,
    container: cri::ContainerConfig,
) -> (String, String, cri::PodSandboxConfig) {
    let config = node.pod_config(name);
    let pod = node
        .client
        .run_pod(&config, handler)
        .unwrap_or_else(|e| panic!("{handler}: RunPodSandbox: {e}\n{}", node.log_tail()));
    let id = node
        .client
        .create_container(&pod, &container, &config)
        .unwrap_or_else(|e| panic!("{handler}: CreateContainer: {e}\n{}", node.log_tail()));
    node.client
        .start_container(&id)
        .unwrap_or_else(|e| panic!("{handler}: StartContainer: {e}\n{}", node.log_tail()));
    (pod, id, config)
}

fn remove_pod(node: &Node, pod: &str) {
    node.client
        .stop_pod(pod)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", node.log_tail()));
    node.client
        .remove_pod(pod)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", node.log_tail()));
}

fn state(node: &Node, id: &str) -> i32 {
    node.client.container_status(id).unwrap().state
}

#[test]
fn a_pod_runs_with_its_hostname_dns_env_mounts_and_logs() {
    let t = node();
    let node = &t.node;
    let shared = node.dir().join("host-dir");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("file"), "from the host\n").unwrap();
    for handler in HANDLERS {
        let name = format!("web-{handler}");
        let mut container = node.container_config(
            "app",
            &[
                "sh",
                "-c",
                "echo started; echo to-stderr >&2; exec sleep 1000",
            ],
        );
        container.envs = vec![cri::KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }];
        container.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: shared.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        let (pod, id, config) = pod_with(node, handler, &name, container);
        let status = node.client.pod_status(&pod).unwrap();
        assert_eq!(
            status.state,
            cri::PodSandboxState::SandboxReady as i32,
            "{handler}"
        );
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        assert!(ip.starts_with("10.89.0."), "{handler}: pod IP {ip:?}");
        assert_eq!(
            state(node, &id),
            cri::ContainerState::ContainerRunning as i32
        );

        assert_eq!(
            sh_ok(node, &id, "hostname"),
            format!("{name}\n"),
            "{handler}"
        );
        let resolv = sh_ok(node, &id, "cat /etc/resolv.conf");
        for line in [
            "nameserver 10.89.0.53",
            "search default.svc.cluster.local",
            "options ndots:5",
        ] {
            assert!(resolv.contains(line), "{handler}: {resolv}");
        }
        assert_eq!(sh_ok(node, &id, "echo $GREETING"), "hello\n");
        assert_eq!(sh_ok(node, &id, "cat /data/file"), "from the host\n");
        let (code, _, _) = sh(node, &id, "touch /data/new");
        assert_ne!(code, 0, "{handler}: a read-only mount was written");
        assert_eq!(sh(node, &id, "exit 7").0, 7, "{handler}");
        // The app container is in the pod's network: the pod's address.
        assert!(
            sh_ok(node, &id, "ip -4 addr show eth0").contains(&format!("inet {ip}/")),
            "{handler}"
        );

        // The log, in the CRI format kubelet reads.
        let log = Path::new(&config.log_directory).join("app.log");
        node.eventually("both lines logged", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.lines().count() >= 2)
        });
        let log = std::fs::read_to_string(&log).unwrap();
        let mut streams: Vec<(String, String)> = log
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.splitn(4, ' ').collect();
                assert_eq!(fields.len(), 4, "{handler}: log line {line:?}");
                assert!(
                    fields[0].contains('T') && fields[2] == "F",
                    "{handler}: log line {line:?}"
                );
                (fields[1].to_string(), fields[3].to_string())
            })
            .collect();
        streams.sort();
        assert_eq!(
            streams,
            [
                ("stderr".to_string(), "to-stderr".to_string()),
                ("stdout".to_string(), "started".to_string())
            ],
            "{handler}"
        );

        // Stop with a grace period: sleep as PID 1 ignores SIGTERM, so
        // it is killed when the grace runs out.
        node.client.stop_container(&id, 1).unwrap();
        let status = node.client.container_status(&id).unwrap();
        assert_eq!(
            (status.state, status.exit_code, status.reason.as_str()),
            (cri::ContainerState::ContainerExited as i32, 137, "Error"),
            "{handler}"
        );
        node.client.remove_container(&id).unwrap();

        // A container that ends by itself: Completed.
        let done = node
            .client
            .create_container(&pod, &node.container_config("done", &["true"]), &config)
            .unwrap();
        node.client.start_container(&done).unwrap();
        node.eventually("the container exits", || {
            state(node, &done) == cri::ContainerState::ContainerExited as i32
        });
        let status = node.client.container_status(&done).unwrap();
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (0, "Completed"),
            "{handler}"
        );
        remove_pod(node, &pod);
        assert!(
            node.client.list_pods().unwrap().is_empty(),
            "{handler}: pods left"
        );
        assert!(node.client.list_containers().unwrap().is_empty());
    }
}

#[test]
fn pods_reach_each_other_by_ip_across_runtimes() {
    let t = node();
    let node = &t.node;
    let sleeper = || node.container_config("app", &["sleep", "1000"]);
    let (a, a_app, _) = pod_with(node, "keel", "a", sleeper());
    let (b, b_app, _) = pod_with(node, "runc", "b", sleeper());
    let ip = |pod: &str| {
        node.client
            .pod_status(pod)
            .unwrap()
            .network
            .map(|n| n.ip)
            .unwrap()
    };
    let (a_ip, b_ip) = (ip(&a), ip(&b));
    assert_ne!(a_ip, b_ip);
    sh_ok(node, &a_app, &format!("ping -c 1 -W 5 {b_ip}"));
    sh_ok(node, &b_app, &format!("ping -c 1 -W 5 {a_ip}"));
    remove_pod(node, &a);
    remove_pod(node, &b);
}

/// What the container sees of its security context and resources: the
/// same lines on keel-runtime as on runc.
#[test]
fn security_contexts_and_resources_are_applied_as_runc_applies_them() {
    let t = node();
    let node = &t.node;
    let probe = "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                 cat /proc/self/oom_score_adj; touch /rootfs-write 2>/dev/null && echo rw || echo ro; \
                 cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; \
                 cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null; \
                 cat /sys/fs/cgroup/cpu.max 2>/dev/null; true";
    type Change = Box<dyn Fn(&mut cri::LinuxContainerConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        ("default", Box::new(|_| {})),
        (
            "user-readonly-nonewprivs",
            Box::new(|l| {
                let s = l.security_context.as_mut().unwrap();
                s.run_as_user = Some(cri::Int64Value { value: 1000 });
                s.run_as_group = Some(cri::Int64Value { value: 1001 });
                s.readonly_rootfs = true;
                s.no_new_privs = true;
            }),
        ),
        (
            "capabilities",
            Box::new(|l| {
                l.security_context.as_mut().unwrap().capabilities = Some(cri::Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                });
            }),
        ),
        (
            "privileged",
            Box::new(|l| l.security_context.as_mut().unwrap().privileged = true),
        ),
        (
            "seccomp-runtime-default",
            Box::new(|l| {
                l.security_context.as_mut().unwrap().seccomp = Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                });
            }),
        ),
        (
            "resources",
            Box::new(|l| {
                l.resources = Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    cpu_shares: 512,
                    memory_limit_in_bytes: 64 << 20,
                    oom_score_adj: 500,
                    ..Default::default()
                });
            }),
        ),
    ];
    for (case, change) in &cases {
        let mut seen = Vec::new();
        for handler in HANDLERS {
            let mut container = node.container_config("probe", &["sleep", "1000"]);
            change(container.linux.as_mut().unwrap());
            let mut config = node.pod_config(&format!("{case}-{handler}"));
            // A privileged container needs a privileged sandbox.
            config
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap()
                .privileged = *case == "privileged";
            let pod = node.client.run_pod(&config, handler).unwrap();
            let id = node
                .client
                .create_container(&pod, &container, &config)
                .unwrap_or_else(|e| panic!("{case} on {handler}: {e}"));
            node.client
                .start_container(&id)
                .unwrap_or_else(|e| panic!("{case} on {handler}: {e}"));
            seen.push(sh_ok(node, &id, probe));
            if *case == "resources" {
                // Changed live, as `kubectl` resizing a pod does.
                node.client
                    .update_resources(
                        &id,
                        cri::LinuxContainerResources {
                            cpu_period: 100_000,
                            cpu_quota: 20_000,
                            cpu_shares: 256,
                            memory_limit_in_bytes: 96 << 20,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                seen.push(sh_ok(node, &id, probe));
                let stats = node.client.container_stats(&id).unwrap();
                assert!(
                    stats
                        .memory
                        .and_then(|m| m.working_set_bytes)
                        .is_some_and(|w| w.value > 0),
                    "{handler}: no memory figure"
                );
            }
            remove_pod(node, &pod);
        }
        let (keel, runc) = seen.split_at(seen.len() / 2);
        assert_eq!(
            keel, runc,
            "{case}: keel-runtime (left) and runc (right) differ"
        );
    }
}

#[test]
fn the_oom_killer_and_a_missing_command_are_reported_as_kubelet_expects() {
    let t = node();
    let node = &t.node;
    for handler in HANDLERS {
        let name = format!("faults-{handler}");
        let config = node.pod_config(&name);
        let pod = node.client.run_pod(&config, handler).unwrap();
        let mut hog = node.container_config(
            "hog",
            &[
                "sh",
                "-c",
                "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
            ],
        );
        hog.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        });
        let id = node.client.create_container(&pod, &hog, &config).unwrap();
        node.client.start_container(&id).unwrap();
        node.eventually("the hog is killed", || {
            state(node, &id) == cri::ContainerState::ContainerExited as i32
        });
        let status = node.client.container_status(&id).unwrap();
        assert_eq!(status.reason, "OOMKilled", "{handler}: {status:?}");

        let missing = node.container_config("missing", &["/no/such/command"]);
        let id = node
            .client
            .create_container(&pod, &missing, &config)
            .unwrap();
        let error = node.client.start_container(&id).unwrap_err();
        assert!(
            error.message().contains("/no/such/command"),
            "{handler}: {error}"
        );
        let status = node.client.container_status(&id).unwrap();
        assert_eq!(
            (status.state, status.reason.as_str()),
            (cri::ContainerState::ContainerExited as i32, "StartError"),
            "{handler}: {status:?}"
        );
        assert!(
            status.message.contains("/no/such/command"),
            "{handler}: {status:?}"
        );
        remove_pod(node, &pod);
    }
}

#[test]
fn pods_survive_a_containerd_restart() {
    let mut t = node();
    let mut pods = Vec::new();
    for handler in HANDLERS {
        let (pod, id, _) = pod_with(
            &t.node,
            handler,
            &format!("survivor-{handler}"),
            t.node.container_config("app", &["sleep", "1000"]),
        );
        pods.push((handler, pod, id));
    }
    t.node.restart();
    let node = &t.node;
    let listed: Vec<String> = node
        .client
        .list_pods()
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    for (handler, pod, id) in &pods {
        assert!(
            listed.contains(pod),
            "{handler}: the pod is not listed again"
        );
        assert_eq!(
            state(node, id),
            cri::ContainerState::ContainerRunning as i32,
            "{handler}"
        );
        assert_eq!(sh_ok(node, id, "echo alive"), "alive\n", "{handler}");
        remove_pod(node, pod);
    }
}

/// What a pod is besides its containers: a cgroup of its own under the
/// parent kubelet names, one PID namespace for all when asked, and its
/// ports published on the node.
#[test]
fn pods_have_their_cgroup_a_shared_pid_namespace_on_request_and_host_ports() {
    let t = node();
    let node = &t.node;
    for (i, handler) in HANDLERS.into_iter().enumerate() {
        let name = format!("shared-{handler}");
        let mut config = node.pod_config(&name);
        let shared = cri::NamespaceOption {
            pid: cri::NamespaceMode::Pod as i32,
            ..keel_cri::kubelet_namespaces()
        };
        let host_port = 18080 + i as i32;
        config.port_mappings = vec![cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 8080,
            host_port,
            host_ip: String::new(),
        }];
        let linux = config.linux.as_mut().unwrap();
        linux.security_context.as_mut().unwrap().namespace_options = Some(shared.clone());
        let parent = linux.cgroup_parent.clone();
        let pod = node.client.run_pod(&config, handler).unwrap();
        let mut web = node.container_config(
            "web",
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo served by the pod > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
        );
        web.linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap()
            .namespace_options = Some(shared);
        let id = node.client.create_container(&pod, &web, &config).unwrap();
        node.client.start_container(&id).unwrap();

        // One PID namespace: the pause process is its PID 1.
        assert_eq!(
            sh_ok(node, &id, "cat /proc/1/cmdline | tr '\\0' ' '"),
            "/pause ",
            "{handler}"
        );
        // The container's cgroup is below the pod's.
        let cgroups = sh_ok(node, &id, "cat /proc/self/cgroup");
        assert!(
            cgroups.lines().any(|l| l.contains(&format!("{parent}/"))),
            "{handler}: {parent} not in {cgroups}"
        );
        // The published port, from the node (its side of the bridge).
        let answer = node.netns.within(|| {
            use std::io::{Read, Write};
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let attempt = std::net::TcpStream::connect(("10.89.0.1", host_port as u16))
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
                        let mut answer = String::new();
                        s.read_to_string(&mut answer)?;
                        Ok(answer)
                    });
                match attempt {
                    Ok(answer) => break answer,
                    Err(e) if std::time::Instant::now() > deadline => {
                        panic!("{handler}: port {host_port}: {e}")
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
                }
            }
        });
        assert!(
            answer.ends_with("served by the pod\n"),
            "{handler}: {answer}"
        );
        remove_pod(node, &pod);
    }
}

/// `kubectl exec` and `kubectl attach`: the URL containerd's streaming
/// server returns, spoken to over a websocket as kubectl does.
#[test]
fn streaming_exec_and_attach_through_containerd_s_streaming_server() {
    let t = node();
    let node = &t.node;
    for handler in HANDLERS {
        let mut reader = node.container_config(
            "reader",
            &[
                "sh",
                "-c",
                "read line; echo got $line; echo bye >&2; sleep 1000",
            ],
        );
        reader.stdin = true;
        let (pod, id, _) = pod_with(node, handler, &format!("stream-{handler}"), reader);

        let url = node
            .client
            .exec(cri::ExecRequest {
                container_id: id.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "head -n 1; echo to-stderr >&2; exit 3".into(),
                ],
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            })
            .unwrap();
        let out = node
            .netns
            .within(|| keel_cri::stream(&url, Some(b"typed line\n")))
            .unwrap_or_else(|e| panic!("{handler}: exec: {e}"));
        assert_eq!(
            (text(&out.stdout), text(&out.stderr), out.exit_code()),
            ("typed line\n".into(), "to-stderr\n".into(), Some(3)),
            "{handler}: {out:?}"
        );

        let url = node
            .client
            .attach(cri::AttachRequest {
                container_id: id.clone(),
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            })
            .unwrap();
        // The attach ends when the stream does: read until both lines came.
        let out = node.netns.within(|| {
            attach_until(&url, b"hello\n", |o| {
                text(&o.stdout).contains("got hello") && text(&o.stderr).contains("bye")
            })
        });
        assert!(
            text(&out.stdout).contains("got hello\n"),
            "{handler}: {out:?}"
        );
        assert!(text(&out.stderr).contains("bye\n"), "{handler}: {out:?}");
        remove_pod(node, &pod);
    }
}

/// An attach: sends `input`, reads until `done` holds (or 30 s).
fn attach_until(
    url: &str,
    input: &[u8],
    done: impl Fn(&keel_cri::Streamed) -> bool,
) -> keel_cri::Streamed {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;
    let mut request = keel_cri::websocket_url(url).into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let uri = request.uri().clone();
    let tcp = std::net::TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap())).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let (mut socket, _) = tungstenite::client::client(request, tcp).unwrap();
    let mut message = vec![0u8];
    message.extend_from_slice(input);
    socket.send(Message::binary(message)).unwrap();
    let mut out = keel_cri::Streamed::default();
    while !done(&out) {
        match socket.read() {
            Ok(Message::Binary(data)) => match data.split_first() {
                Some((1, rest)) => out.stdout.extend_from_slice(rest),
                Some((2, rest)) => out.stderr.extend_from_slice(rest),
                _ => {}
            },
            Ok(_) => {}
            Err(e) => panic!("attach: {e}; so far {out:?}"),
        }
    }
    let _ = socket.close(None);
    out
}

/// What the node holds for a pod (shims, mounts, network namespaces),
/// found by its sandbox id.
fn held_for(node: &Node, pod: &str) -> Vec<String> {
    let mut held: Vec<String> = keel_testutil::peers::pids_mentioning(pod)
        .into_iter()
        .map(|pid| format!("process {pid}"))
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    held.extend(
        mounts
            .lines()
            .filter(|l| l.contains(pod) || (l.contains("/run/netns/cni-") && l.contains(pod)))
            .map(|l| format!("mount {l}")),
    );
    let _ = node;
    held
}

/// A sandbox whose pause process was killed under it, and a container
/// whose runtime state was wiped while containerd ran: kubelet sees what
/// happened and can remove both pods, and nothing of theirs is left.
#[test]
fn a_killed_sandbox_and_wiped_runtime_state_are_told_and_cleaned_up() {
    let t = node();
    let node = &t.node;
    for handler in HANDLERS {
        let sleeper = || node.container_config("app", &["sleep", "1000"]);
        // The sandbox's pause process killed.
        let (pod, id, _) = pod_with(node, handler, &format!("killed-{handler}"), sleeper());
        let pause = node.client.pod_pid(&pod).unwrap();
        // SAFETY: killing the pause process this test's pod runs.
        assert_eq!(unsafe { libc::kill(pause, libc::SIGKILL) }, 0);
        node.eventually("the sandbox is not ready", || {
            node.client.pod_status(&pod).unwrap().state
                == cri::PodSandboxState::SandboxNotready as i32
        });
        // Its app container lived in namespaces the pause held; kubelet
        // stops it and the pod.
        eprintln!("{handler}: stopping the app of the killed sandbox");
        node.client.stop_container(&id, 2).unwrap();
        eprintln!("{handler}: removing the killed sandbox");
        remove_pod(node, &pod);
        node.eventually("nothing held for the killed pod", || {
            held_for(node, &pod).is_empty()
        });

        // The runtime's state directory wiped while the container runs.
        // runc cannot stop such a container (its kill finds no state, the
        // shim says "not found" and containerd waits for an exit that never
        // comes: StopContainer hangs), so only keel-runtime is held to it:
        // it finds the container's cgroup from the bundle's config.json.
        if handler == "runc" {
            continue;
        }
        let (pod, id, _) = pod_with(node, handler, &format!("wiped-{handler}"), sleeper());
        let state = node.dir().join(format!("{handler}-state/k8s.io/{id}"));
        assert!(state.is_dir(), "{handler}: no {}", state.display());
        std::fs::remove_dir_all(&state).unwrap();
        // The status still answers; stopping and removing still work.
        node.client.container_status(&id).unwrap();
        node.client
            .stop_container(&id, 2)
            .unwrap_or_else(|e| panic!("{handler}: StopContainer: {e}\n{}", node.log_tail()));
        let status = node.client.container_status(&id).unwrap();
        assert_eq!(
            status.state,
            cri::ContainerState::ContainerExited as i32,
            "{handler}: {status:?}"
        );
        remove_pod(node, &pod);
        node.eventually("nothing held for the wiped pod", || {
            held_for(node, &pod).is_empty() && held_for(node, &id).is_empty()
        });
        // Its cgroup went with it (keel found it from the bundle).
        let cgroup = format!("{}/pod-wiped-{handler}/{id}", node.cgroup_parent);
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let dir = hierarchy.path().join(cgroup.trim_start_matches('/'));
            assert!(!dir.exists(), "{handler}: {} is left", dir.display());
        }
    }
    assert!(node.client.list_pods().unwrap().is_empty());
}
