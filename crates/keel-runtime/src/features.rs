//! What `keel-runtime features` and `keel-runtime spec` print.
//!
//! `features` follows runtime-spec's `specs-go/features/features.go`; engines
//! (containerd's runc shim) read it to learn what the runtime supports.
//! `spec` writes the same starting config.json as `runc spec`
//! (runc's `libcontainer/specconv/example.go`, and `ToRootless` for
//! `--rootless`).

use serde_json::{Value, json};

use crate::spec::{
    Capabilities, DeviceCgroup, IdMapping, Linux, Mount, Namespace, NamespaceType, Process,
    Resources, Rlimit, Root, Spec, User,
};

/// The mount options our mount code understands, sorted as runc lists them.
/// Recursive (`rro`, `rnosuid`, ...) and `tmpcopyup` are not supported.
pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "lazytime",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// The hooks the runtime runs, in lifecycle order.
pub const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The JSON `keel-runtime features` prints.
pub fn features() -> Value {
    let mut namespaces: Vec<&str> = NamespaceType::ALL.iter().map(|ns| ns.name()).collect();
    namespaces.sort_unstable();

    let mut capabilities: Vec<caps::Capability> = caps::all().into_iter().collect();
    capabilities.sort_by_key(|cap| cap.index());
    let capabilities: Vec<String> = capabilities.iter().map(|cap| cap.to_string()).collect();

    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "io.github.keel.runtime.version".into(),
        Value::from(crate::VERSION),
    );
    if let Some(version) = crate::seccomp::library_version() {
        annotations.insert(
            "io.github.seccomp.libseccomp.version".into(),
            Value::from(version),
        );
    }

    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": namespaces,
            "capabilities": capabilities,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false,
            },
            "seccomp": {
                "enabled": true,
                "actions": crate::seccomp::ACTIONS,
                "operators": crate::seccomp::OPERATORS,
                "archs": crate::seccomp::supported_architectures(),
                "knownFlags": crate::seccomp::KNOWN_FLAGS,
                "supportedFlags": crate::seccomp::supported_flags(),
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } },
        },
        "annotations": annotations,
        "potentiallyUnsafeConfigAnnotations": [],
    })
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.into(),
        kind: Some(kind.into()),
        source: Some(source.into()),
        options: strings(options),
        ..Mount::default()
    }
}

/// The config.json `keel-runtime spec` writes: `runc spec`'s, with hostname
/// "keel". With `rootless`, adjusted as runc's `ToRootless` does.
pub fn default_spec(rootless: bool) -> Spec {
    let default_caps = strings(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let mut spec = Spec {
        oci_version: crate::OCI_VERSION.into(),
        process: Some(Process {
            terminal: true,
            user: User::default(),
            args: strings(&["sh"]),
            env: strings(&[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ]),
            cwd: "/".into(),
            // runc sets no inheritable or ambient capabilities.
            capabilities: Some(Capabilities {
                bounding: Some(default_caps.clone()),
                effective: Some(default_caps.clone()),
                permitted: Some(default_caps),
                inheritable: None,
                ambient: None,
            }),
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                hard: 1024,
                soft: 1024,
            }],
            no_new_privileges: true,
            ..Process::default()
        }),
        root: Some(Root {
            path: "rootfs".into(),
            readonly: true,
        }),
        hostname: Some("keel".into()),
        mounts: vec![
            mount("/proc", "proc", "proc", &[]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            mount(
                "/dev/mqueue",
                "mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
            mount(
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                &["nosuid", "noexec", "nodev", "relatime", "ro"],
            ),
        ],
        linux: Some(Linux {
            masked_paths: strings(&[
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
                "/sys/devices/virtual/tpm",
            ]),
            readonly_paths: strings(&[
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]),
            resources: Some(Resources {
                devices: vec![DeviceCgroup {
                    allow: false,
                    access: Some("rwm".into()),
                    ..DeviceCgroup::default()
                }],
                ..Resources::default()
            }),
            namespaces: [
                NamespaceType::Pid,
                NamespaceType::Network,
                NamespaceType::Ipc,
                NamespaceType::Uts,
                NamespaceType::Mount,
                NamespaceType::Cgroup,
            ]
            .into_iter()
            .map(|kind| Namespace { kind, path: None })
            .collect(),
            ..Linux::default()
        }),
        ..Spec::default()
    };
    if rootless {
        to_rootless(&mut spec);
    }
    spec
}

/// runc's `ToRootless`: a user namespace mapping root to the current user,
/// no network namespace, /sys bind-mounted from the host, no uid=/gid=
/// mount options, no resources.
fn to_rootless(spec: &mut Spec) {
    let linux = spec.linux.get_or_insert_with(Linux::default);
    linux
        .namespaces
        .retain(|ns| !matches!(ns.kind, NamespaceType::Network | NamespaceType::User));
    linux.namespaces.push(Namespace {
        kind: NamespaceType::User,
        path: None,
    });
    linux.uid_mappings = vec![IdMapping {
        container_id: 0,
        host_id: nix::unistd::geteuid().as_raw(),
        size: 1,
    }];
    linux.gid_mappings = vec![IdMapping {
        container_id: 0,
        host_id: nix::unistd::getegid().as_raw(),
        size: 1,
    }];
    linux.resources = None;

    for mount in &mut spec.mounts {
        if std::path::Path::new(&mount.destination) == std::path::Path::new("/sys") {
            *mount = Mount {
                destination: "/sys".into(),
                kind: Some("none".into()),
                source: Some("/sys".into()),
                options: strings(&["rbind", "nosuid", "noexec", "nodev", "ro"]),
                ..Mount::default()
            };
            continue;
        }
        mount
            .options
            .retain(|option| !option.starts_with("gid=") && !option.starts_with("uid="));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_lists_namespaces_capabilities_and_seccomp() {
        let features = features();
        let namespaces: Vec<&str> = features["linux"]["namespaces"]
            .as_array()
            .expect("namespaces is an array")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for ns in [
            "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
        ] {
            assert!(namespaces.contains(&ns), "{ns} missing from {namespaces:?}");
        }
        assert_eq!(namespaces.len(), 8);
        let capabilities = features["linux"]["capabilities"]
            .as_array()
            .expect("capabilities is an array");
        assert!(capabilities.contains(&Value::from("CAP_SYS_ADMIN")));
        assert_eq!(capabilities[0], "CAP_CHOWN");
        assert_eq!(features["ociVersionMin"], "1.0.0");
        assert_eq!(features["ociVersionMax"], crate::OCI_VERSION);
        assert_eq!(features["hooks"].as_array().map(Vec::len), Some(6));
        assert_eq!(features["linux"]["seccomp"]["enabled"], true);
        assert!(
            features["linux"]["seccomp"]["archs"]
                .as_array()
                .is_some_and(|a| a.contains(&Value::from("SCMP_ARCH_X86_64"))
                    || a.contains(&Value::from("SCMP_ARCH_AARCH64")))
        );
        assert_eq!(
            features["annotations"]["io.github.keel.runtime.version"],
            crate::VERSION
        );
        assert_eq!(
            features["potentiallyUnsafeConfigAnnotations"],
            Value::Array(Vec::new())
        );
    }

    #[test]
    fn default_spec_round_trips_and_validates() {
        for rootless in [false, true] {
            let spec = default_spec(rootless);
            let json = serde_json::to_string_pretty(&spec).expect("serialize spec");
            let back: Spec = serde_json::from_str(&json).expect("parse spec back");
            assert_eq!(back, spec);
            spec.validate()
                .unwrap_or_else(|e| panic!("rootless={rootless}: {e}"));
        }
    }

    #[test]
    fn default_spec_matches_runc() {
        let spec = default_spec(false);
        let value = serde_json::to_value(&spec).expect("serialize spec");
        assert_eq!(value["process"]["terminal"], true);
        assert_eq!(value["process"]["args"], json!(["sh"]));
        assert_eq!(value["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(value["hostname"], "keel");
        assert_eq!(
            value["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
        );
        assert_eq!(
            value["linux"]["resources"]["devices"],
            json!([{"allow": false, "access": "rwm"}])
        );
        let namespaces: Vec<&str> = spec
            .linux()
            .namespaces
            .iter()
            .map(|ns| ns.kind.name())
            .collect();
        assert_eq!(
            namespaces,
            ["pid", "network", "ipc", "uts", "mount", "cgroup"]
        );
    }

    #[test]
    fn rootless_spec_follows_runc_to_rootless() {
        let spec = default_spec(true);
        let linux = spec.linux();
        assert!(spec.namespace(NamespaceType::Network).is_none());
        assert!(spec.namespace(NamespaceType::User).is_some());
        assert_eq!(linux.uid_mappings.len(), 1);
        assert_eq!(
            linux.uid_mappings[0].host_id,
            nix::unistd::geteuid().as_raw()
        );
        assert_eq!(
            linux.gid_mappings[0].host_id,
            nix::unistd::getegid().as_raw()
        );
        assert!(linux.resources.is_none());
        let sys = spec
            .mounts
            .iter()
            .find(|m| m.destination == "/sys")
            .expect("/sys mount");
        assert_eq!(sys.kind.as_deref(), Some("none"));
        assert!(sys.options.contains(&"rbind".to_string()));
        assert!(
            spec.mounts
                .iter()
                .all(|m| m.options.iter().all(|o| !o.starts_with("gid=")))
        );
    }
}
