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
    node.client.stop_pod(pod).unwrap();
    node.client.remove_pod(pod).unwrap();
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
