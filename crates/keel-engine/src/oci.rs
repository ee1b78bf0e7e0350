//! The OCI `config.json` of a container, from its image config and the
//! request, as docker would run it. A pure function: everything that needs
//! the machine (the user resolved in the image's files, the host paths of
//! volumes, device numbers) is resolved before and passed in [`Inputs`].
//!
//! Docker's rules, kept here:
//! - args: `--entrypoint` replaces the image's ENTRYPOINT and drops its
//!   CMD; arguments after the image replace CMD; nothing at all is an error
//! - env: PATH (docker's default unless the image sets one), HOSTNAME, TERM
//!   for a terminal, then the image's, then the user's, a later key
//!   replacing an earlier one; HOME from the user's passwd entry if unset
//! - cwd: `-w`, else the image's WorkingDir, else `/`
//! - capabilities: docker's 14 defaults, then `--cap-drop`, `--cap-add`
//!   (`ALL` works in both); `--privileged` gets them all, every host
//!   device, no seccomp, no masked paths, and a writable /sys
//! - mounts: proc, /dev (tmpfs), devpts, sysfs (ro), cgroup (ro), mqueue,
//!   /dev/shm (64 MiB), /etc/{hostname,hosts,resolv.conf} from the
//!   container's directory, then the user's, parents before children
//! - docker's masked and read-only /proc and /sys paths

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keel_image::manifest::ImageConfig;
use keel_runtime::spec::{
    Capabilities, Cpu, Device, DeviceCgroup, Linux, Memory, Mount, Namespace, NamespaceType, Pids,
    Process, Resources, Rlimit, Root, Spec, User,
};

use crate::error::{Error, Result};
use crate::spec::{ContainerSpec, Isolation, MountKind, NetworkMode, SeccompChoice};
use crate::users::ExecUser;

/// docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// docker's default capabilities.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows by name (through CAP_CHECKPOINT_RESTORE).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// docker's masked paths (an empty read-only view instead).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// docker's /dev/shm size.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// A mount of the request with its host side resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    pub kind: MountKind,
    /// The host path (a bind's source, a volume's `_data`); none for tmpfs.
    pub source: Option<PathBuf>,
    pub target: String,
    pub read_only: bool,
    pub tmpfs_size: Option<u64>,
    pub tmpfs_mode: Option<u32>,
    pub propagation: Option<String>,
}

/// The helpers of `--isolation vm` (keel-runtime runs the shim; the shim
/// boots the agent), and where the guest's initramfs is cached.
#[derive(Debug, Clone)]
pub struct VmInputs<'a> {
    pub shim: Option<&'a Path>,
    pub agent: Option<&'a Path>,
    pub cache: &'a Path,
}

/// keel-runtime's annotations for a micro-VM.
fn vm_annotations(vm: &VmInputs, annotations: &mut BTreeMap<String, String>) -> Result<()> {
    let (Some(shim), Some(agent)) = (vm.shim, vm.agent) else {
        return Err(Error::invalid(format!(
            "--isolation vm: {} was not found (install keel's VM helpers, or set {})",
            if vm.shim.is_none() {
                "keel-vm-shim"
            } else {
                "keel-guest"
            },
            if vm.shim.is_none() {
                "KEEL_VM_SHIM"
            } else {
                "KEEL_GUEST"
            },
        )));
    };
    annotations.insert(keel_runtime::vm::ISOLATION.into(), "vm".into());
    annotations.insert(keel_runtime::vm::SHIM.into(), shim.display().to_string());
    annotations.insert(keel_runtime::vm::AGENT.into(), agent.display().to_string());
    annotations.insert(
        keel_runtime::vm::CACHE.into(),
        vm.cache.display().to_string(),
    );
    Ok(())
}

/// Everything [`build`] needs beyond the image and the request.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub id: &'a str,
    pub spec: &'a ContainerSpec,
    pub image: &'a ImageConfig,
    pub user: &'a ExecUser,
    /// The container's root filesystem (the overlay mount point).
    pub rootfs: &'a Path,
    /// `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` on the host, to
    /// bind into the container.
    pub hostname_file: &'a Path,
    pub hosts_file: &'a Path,
    pub resolv_conf: &'a Path,
    pub mounts: &'a [ResolvedMount],
    /// `linux.devices` for `--device` (and every host device when
    /// privileged), read from the host.
    pub devices: &'a [Device],
    pub cgroups_path: &'a str,
    /// The network namespace to join (the one keel made for it, or
    /// another container's); None with a network namespace of its own
    /// makes the runtime create a new one.
    pub network_namespace: Option<&'a str>,
    /// keel's init on the host, for `--init`.
    pub init_binary: Option<&'a Path>,
    /// What `--isolation vm` needs.
    pub vm: VmInputs<'a>,
    /// The capabilities "all" means (the bounding set keel runs with);
    /// None: every capability the kernel knows.
    pub available_capabilities: Option<&'a [String]>,
}

/// The names of the capabilities in this process's bounding set.
pub fn bounding_capabilities() -> Vec<String> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapBnd:"))
                .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1u64 << bit) != 0)
        .map(|(_, name)| name.to_string())
        .collect()
}

/// Where `--init` puts keel's init in the container (docker's path).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The process's arguments: entrypoint and cmd by docker's rules.
pub fn command(image: &ImageConfig, spec: &ContainerSpec) -> Result<Vec<String>> {
    let config = image.config.clone().unwrap_or_default();
    let (entrypoint, cmd) = match &spec.entrypoint {
        Some(entrypoint) => (entrypoint.clone(), spec.command.clone()),
        None => (
            config.entrypoint.unwrap_or_default(),
            if spec.command.is_empty() {
                config.cmd.unwrap_or_default()
            } else {
                spec.command.clone()
            },
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::invalid("no command specified"));
    }
    Ok(args)
}

/// `KEY=VALUE` entries with later keys replacing earlier ones in place.
pub fn merge_env(base: &mut Vec<String>, entries: impl IntoIterator<Item = String>) {
    for entry in entries {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        match base
            .iter_mut()
            .find(|e| e.split('=').next().unwrap_or_default() == key)
        {
            Some(existing) => *existing = entry,
            None => base.push(entry),
        }
    }
}

/// The container's environment by docker's rules.
pub fn environment(
    image: &ImageConfig,
    spec: &ContainerSpec,
    hostname: &str,
    home: &str,
) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")];
    if spec.tty {
        env.push("TERM=xterm".into());
    }
    let image_env = image
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    merge_env(&mut env, image_env);
    merge_env(&mut env, spec.env.iter().cloned());
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

/// The hostname: `-h`, else the first 12 characters of the id.
pub fn hostname(spec: &ContainerSpec, id: &str) -> String {
    spec.hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect())
}

/// Normalizes a capability name as docker does (`net_admin` →
/// `CAP_NET_ADMIN`), refusing unknown ones.
pub fn capability_name(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::invalid(format!("unknown capability: \"{name}\"")))
    }
}

/// The capability set: docker's defaults, `--cap-drop` then `--cap-add`.
/// "All" (`--privileged`, `--cap-add ALL`) means all of `available` (what
/// this process can hand on: its bounding set).
pub fn capabilities(spec: &ContainerSpec, available: &[String]) -> Result<Vec<String>> {
    if spec.privileged {
        return Ok(available.to_vec());
    }
    let adds = spec
        .cap_add
        .iter()
        .map(|c| capability_name(c))
        .collect::<Result<Vec<_>>>()?;
    let drops = spec
        .cap_drop
        .iter()
        .map(|c| capability_name(c))
        .collect::<Result<Vec<_>>>()?;
    let mut caps: Vec<String> = if drops.iter().any(|d| d == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drops.contains(c))
            .collect()
    };
    if adds.iter().any(|a| a == "ALL") {
        caps = available
            .iter()
            .filter(|c| !drops.contains(c) || adds.contains(c))
            .cloned()
            .collect();
    }
    for add in adds.into_iter().filter(|a| a != "ALL") {
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    Ok(caps)
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: destination.to_string(),
        kind: Some(kind.to_string()),
        source: Some(source.to_string()),
        options: options.iter().map(|o| o.to_string()).collect(),
        ..Mount::default()
    }
}

fn bind(destination: &str, source: &Path, read_only: bool, propagation: &str) -> Mount {
    let mut options = vec!["rbind", propagation];
    if read_only {
        options.push("ro");
    }
    mount(destination, "bind", &source.display().to_string(), &options)
}

/// docker's `linux.devices` cgroup rule for a device it adds.
fn device_rule(device: &Device, permissions: &str) -> DeviceCgroup {
    DeviceCgroup {
        allow: true,
        kind: Some(device.kind.clone()),
        major: Some(device.major),
        minor: Some(device.minor),
        access: Some(permissions.to_string()),
    }
}

fn rlimit_type(name: &str) -> String {
    format!("RLIMIT_{}", name.to_ascii_uppercase())
}

/// The OCI config.
pub fn build(inputs: &Inputs<'_>) -> Result<Spec> {
    let spec = inputs.spec;
    let hostname = hostname(spec, inputs.id);
    let mut args = command(inputs.image, spec)?;
    if spec.init {
        let Some(_) = inputs.init_binary else {
            return Err(Error::invalid("--init: keel's init binary was not found"));
        };
        let mut with_init = vec![INIT_PATH.to_string(), "--".to_string()];
        with_init.append(&mut args);
        args = with_init;
    }
    let image_config = inputs.image.config.clone().unwrap_or_default();
    let cwd = spec
        .workdir
        .clone()
        .or(image_config.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(Error::invalid(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let all: Vec<String>;
    let available = match inputs.available_capabilities {
        Some(available) => available,
        None => {
            all = ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
            &all
        }
    };
    let caps = capabilities(spec, available)?;
    let rlimits = spec
        .resources
        .ulimits
        .iter()
        .map(|u| Rlimit {
            kind: rlimit_type(&u.name),
            hard: u.hard,
            soft: u.soft,
        })
        .collect();
    let process = Process {
        terminal: spec.tty,
        console_size: None,
        user: User {
            uid: inputs.user.uid,
            gid: inputs.user.gid,
            umask: None,
            additional_gids: inputs.user.additional_gids.clone(),
            username: None,
        },
        args,
        env: environment(inputs.image, spec, &hostname, &inputs.user.home),
        cwd,
        capabilities: Some(Capabilities {
            bounding: Some(caps.clone()),
            effective: Some(caps.clone()),
            inheritable: Some(Vec::new()),
            permitted: Some(caps.clone()),
            ambient: None,
        }),
        rlimits,
        no_new_privileges: spec.no_new_privileges,
        apparmor_profile: None,
        oom_score_adj: None,
        selinux_label: None,
    };

    // Mounts: docker's defaults, the container's files, the user's.
    let shm_size = spec.resources.shm_size.unwrap_or(DEFAULT_SHM_SIZE);
    let sys_options: &[&str] = if spec.privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
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
        mount("/sys", "sysfs", "sysfs", sys_options),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                &format!("size={shm_size}"),
            ],
        ),
    ];
    let user_targets: Vec<&str> = inputs.mounts.iter().map(|m| m.target.as_str()).collect();
    for (destination, source) in [
        ("/etc/resolv.conf", inputs.resolv_conf),
        ("/etc/hostname", inputs.hostname_file),
        ("/etc/hosts", inputs.hosts_file),
    ] {
        // A user's mount of the same file wins, as docker lets it.
        if !user_targets.contains(&destination) {
            mounts.push(bind(destination, source, spec.read_only, "rprivate"));
        }
    }
    if let Some(init) = inputs.init_binary.filter(|_| spec.init) {
        mounts.push(bind(INIT_PATH, init, true, "rprivate"));
    }
    let mut user_mounts: Vec<&ResolvedMount> = inputs.mounts.iter().collect();
    // Parents before children: by the number of path components.
    user_mounts.sort_by_key(|m| m.target.split('/').filter(|p| !p.is_empty()).count());
    for m in user_mounts {
        match m.kind {
            MountKind::Bind | MountKind::Volume => {
                let source = m.source.as_ref().ok_or_else(|| {
                    Error::msg(format!("mount {}: no host path resolved", m.target))
                })?;
                let propagation = m.propagation.as_deref().unwrap_or("rprivate");
                mounts.push(bind(&m.target, source, m.read_only, propagation));
            }
            MountKind::Tmpfs => {
                let mut options = vec![
                    "nosuid".to_string(),
                    "nodev".to_string(),
                    "noexec".to_string(),
                ];
                if let Some(size) = m.tmpfs_size {
                    options.push(format!("size={size}"));
                }
                options.push(format!("mode={:o}", m.tmpfs_mode.unwrap_or(0o1777)));
                if m.read_only {
                    options.push("ro".into());
                }
                mounts.push(Mount {
                    destination: m.target.clone(),
                    kind: Some("tmpfs".into()),
                    source: Some("tmpfs".into()),
                    options,
                    ..Mount::default()
                });
            }
        }
    }

    let mut namespaces = vec![
        Namespace {
            kind: NamespaceType::Pid,
            path: None,
        },
        Namespace {
            kind: NamespaceType::Ipc,
            path: None,
        },
        Namespace {
            kind: NamespaceType::Uts,
            path: None,
        },
        Namespace {
            kind: NamespaceType::Mount,
            path: None,
        },
    ];
    if spec.network != NetworkMode::Host {
        namespaces.push(Namespace {
            kind: NamespaceType::Network,
            path: inputs.network_namespace.map(str::to_string),
        });
    }

    let resources = resources(inputs)?;
    let seccomp = match (&spec.seccomp, spec.privileged) {
        (_, true) | (SeccompChoice::Unconfined, _) => None,
        (SeccompChoice::Default, false) => Some(crate::seccomp::default_profile(&caps)),
        (SeccompChoice::Profile(json), false) => Some(serde_json::from_str(json).map_err(|e| {
            Error::invalid(format!(
                "--security-opt seccomp: the profile is not valid: {e}"
            ))
        })?),
    };
    let linux = Linux {
        sysctl: spec.sysctls.clone(),
        resources: Some(resources),
        cgroups_path: Some(inputs.cgroups_path.to_string()),
        namespaces,
        devices: inputs.devices.to_vec(),
        seccomp,
        masked_paths: if spec.privileged {
            Vec::new()
        } else {
            MASKED_PATHS.iter().map(|p| p.to_string()).collect()
        },
        readonly_paths: if spec.privileged {
            Vec::new()
        } else {
            READONLY_PATHS.iter().map(|p| p.to_string()).collect()
        },
        ..Linux::default()
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.stopSignal".to_string(),
        stop_signal(inputs.image, spec),
    );
    if spec.isolation == Isolation::Vm {
        vm_annotations(&inputs.vm, &mut annotations)?;
    }
    Ok(Spec {
        oci_version: keel_runtime::OCI_VERSION.to_string(),
        process: Some(process),
        root: Some(Root {
            path: inputs.rootfs.display().to_string(),
            readonly: spec.read_only,
        }),
        hostname: Some(hostname),
        domainname: None,
        mounts,
        hooks: None,
        annotations,
        linux: Some(linux),
    })
}

/// The signal `stop` sends: `--stop-signal`, else the image's, else SIGTERM.
pub fn stop_signal(image: &ImageConfig, spec: &ContainerSpec) -> String {
    spec.stop_signal
        .clone()
        .or_else(|| image.config.as_ref().and_then(|c| c.stop_signal.clone()))
        .unwrap_or_else(|| "SIGTERM".to_string())
}

fn resources(inputs: &Inputs<'_>) -> Result<Resources> {
    let r = &inputs.spec.resources;
    // The kernel refuses memory limits this low (docker's minimum, 6 MiB).
    const MIN_MEMORY: i64 = 6 << 20;
    if let Some(memory) = r.memory
        && memory < MIN_MEMORY
    {
        return Err(Error::invalid(
            "Minimum memory limit allowed is 6MB".to_string(),
        ));
    }
    if let (Some(swap), Some(memory)) = (r.memory_swap, r.memory)
        && swap != -1
        && swap < memory
    {
        return Err(Error::invalid(
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ));
    }
    if r.memory_swap.is_some() && r.memory.is_none() {
        return Err(Error::invalid(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ));
    }
    if let (Some(reservation), Some(memory)) = (r.memory_reservation, r.memory)
        && reservation > memory
    {
        return Err(Error::invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ));
    }
    let memory = (r.memory.is_some() || r.memory_reservation.is_some()).then(|| Memory {
        limit: r.memory,
        reservation: r.memory_reservation,
        // docker: no --memory-swap means twice the memory.
        swap: r.memory.map(|m| r.memory_swap.unwrap_or(m * 2)),
        ..Memory::default()
    });
    let cpu = if r.nano_cpus.is_some() || r.cpu_shares.is_some() || r.cpuset_cpus.is_some() {
        let period = 100_000u64;
        Some(Cpu {
            shares: r.cpu_shares,
            quota: r
                .nano_cpus
                .map(|n| (n as i128 * period as i128 / 1_000_000_000) as i64),
            period: r.nano_cpus.map(|_| period),
            cpus: r.cpuset_cpus.clone(),
            ..Cpu::default()
        })
    } else {
        None
    };
    let pids = r.pids_limit.filter(|l| *l > 0).map(|limit| Pids { limit });
    // Devices: none but docker's defaults (which the runtime adds), and
    // the ones given; everything for a privileged container.
    let mut devices = vec![DeviceCgroup {
        allow: inputs.spec.privileged,
        kind: None,
        major: None,
        minor: None,
        access: Some("rwm".into()),
    }];
    if !inputs.spec.privileged {
        for (device, requested) in inputs.devices.iter().zip(&inputs.spec.devices) {
            devices.push(device_rule(device, &requested.permissions));
        }
    }
    Ok(Resources {
        devices,
        memory,
        cpu,
        pids,
        ..Resources::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{MountSpec, ResourceSpec};
    use keel_image::manifest::ContainerConfig;

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>, env: &[&str]) -> ImageConfig {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ImageConfig {
            config: Some(ContainerConfig {
                entrypoint: entrypoint.map(strings),
                cmd: cmd.map(strings),
                env: (!env.is_empty()).then(|| strings(env)),
                working_dir: Some("/srv".into()),
                ..ContainerConfig::default()
            }),
            ..ImageConfig::default()
        }
    }

    fn root() -> ExecUser {
        ExecUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/root".into(),
        }
    }

    fn build_with(
        spec: &ContainerSpec,
        image: &ImageConfig,
        mounts: &[ResolvedMount],
    ) -> Result<Spec> {
        let user = root();
        build(&Inputs {
            id: "0123456789abcdef0123",
            spec,
            image,
            user: &user,
            rootfs: Path::new("/var/lib/keel/containers/x/rootfs"),
            hostname_file: Path::new("/c/hostname"),
            hosts_file: Path::new("/c/hosts"),
            resolv_conf: Path::new("/c/resolv.conf"),
            mounts,
            devices: &[],
            cgroups_path: "/keel/x",
            network_namespace: None,
            init_binary: Some(Path::new("/usr/libexec/keel/keel-init")),
            available_capabilities: None,
            vm: VmInputs {
                shim: Some(Path::new("/usr/libexec/keel/keel-vm-shim")),
                agent: Some(Path::new("/usr/libexec/keel/keel-guest")),
                cache: Path::new("/var/lib/keel/vm-guest"),
            },
        })
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_and_cmd_rules() {
        let both = image(Some(&["/entry"]), Some(&["default"]), &[]);
        let mut spec = ContainerSpec::default();
        assert_eq!(command(&both, &spec).unwrap(), ["/entry", "default"]);
        spec.command = strings(&["given"]);
        assert_eq!(command(&both, &spec).unwrap(), ["/entry", "given"]);
        // --entrypoint drops the image's CMD.
        spec.entrypoint = Some(strings(&["/other"]));
        spec.command = Vec::new();
        assert_eq!(command(&both, &spec).unwrap(), ["/other"]);
        spec.entrypoint = Some(Vec::new());
        spec.command = strings(&["sh"]);
        assert_eq!(command(&both, &spec).unwrap(), ["sh"]);
        let cmd_only = image(None, Some(&["sh", "-c", "x"]), &[]);
        assert_eq!(
            command(&cmd_only, &ContainerSpec::default()).unwrap(),
            ["sh", "-c", "x"]
        );
        let nothing = image(None, None, &[]);
        assert_eq!(
            command(&nothing, &ContainerSpec::default())
                .unwrap_err()
                .to_string(),
            "no command specified"
        );
    }

    #[test]
    fn environment_as_docker_merges_it() {
        let img = image(None, Some(&["sh"]), &["PATH=/opt/bin", "LANG=C", "A=image"]);
        let spec = ContainerSpec {
            env: strings(&["A=user", "B=2"]),
            tty: true,
            ..ContainerSpec::default()
        };
        assert_eq!(
            environment(&img, &spec, "web", "/root"),
            [
                "PATH=/opt/bin",
                "HOSTNAME=web",
                "TERM=xterm",
                "LANG=C",
                "A=user",
                "B=2",
                "HOME=/root"
            ]
        );
        let bare = image(None, Some(&["sh"]), &[]);
        let spec = ContainerSpec {
            env: strings(&["HOME=/x"]),
            ..ContainerSpec::default()
        };
        assert_eq!(
            environment(&bare, &spec, "h", "/root"),
            [DEFAULT_PATH, "HOSTNAME=h", "HOME=/x"]
        );
    }

    fn all() -> Vec<String> {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn capabilities_add_drop_privileged() {
        let mut spec = ContainerSpec::default();
        assert_eq!(capabilities(&spec, &all()).unwrap().len(), 14);
        spec.cap_add = strings(&["net_admin", "CAP_SYS_TIME"]);
        spec.cap_drop = strings(&["chown", "MKNOD"]);
        let caps = capabilities(&spec, &all()).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(caps.contains(&"CAP_SYS_TIME".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_MKNOD".to_string()));
        spec.cap_drop = strings(&["ALL"]);
        spec.cap_add = strings(&["kill"]);
        assert_eq!(capabilities(&spec, &all()).unwrap(), ["CAP_KILL"]);
        spec.cap_add = strings(&["ALL"]);
        spec.cap_drop = strings(&["SYS_ADMIN"]);
        let caps = capabilities(&spec, &all()).unwrap();
        assert_eq!(caps.len(), ALL_CAPABILITIES.len() - 1);
        spec.cap_add = strings(&["BOGUS"]);
        assert_eq!(
            capabilities(&spec, &all()).unwrap_err().to_string(),
            "unknown capability: \"BOGUS\""
        );
        let privileged = ContainerSpec {
            privileged: true,
            ..ContainerSpec::default()
        };
        assert_eq!(
            capabilities(&privileged, &all()).unwrap().len(),
            ALL_CAPABILITIES.len()
        );
    }

    #[test]
    fn the_config_docker_would_run() {
        let img = image(None, Some(&["sh"]), &[]);
        let spec = ContainerSpec {
            image: "busybox".into(),
            read_only: true,
            ..ContainerSpec::default()
        };
        let config = build_with(&spec, &img, &[]).unwrap();
        let process = config.process.as_ref().unwrap();
        assert_eq!(process.args, ["sh"]);
        assert_eq!(process.cwd, "/srv");
        assert!(!process.terminal);
        assert_eq!(config.hostname.as_deref(), Some("0123456789ab"));
        assert!(config.root.as_ref().unwrap().readonly);
        let destinations: Vec<&str> = config
            .mounts
            .iter()
            .map(|m| m.destination.as_str())
            .collect();
        assert_eq!(
            destinations,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm",
                "/etc/resolv.conf",
                "/etc/hostname",
                "/etc/hosts"
            ]
        );
        let shm = &config.mounts[6];
        assert!(shm.options.contains(&"size=67108864".to_string()));
        let sys = &config.mounts[3];
        assert!(sys.options.contains(&"ro".to_string()));
        // Read-only root: the container's files are bound read-only too.
        assert!(config.mounts[8].options.contains(&"ro".to_string()));
        let linux = config.linux.as_ref().unwrap();
        assert_eq!(linux.masked_paths.len(), MASKED_PATHS.len());
        assert_eq!(linux.readonly_paths.len(), READONLY_PATHS.len());
        assert!(linux.seccomp.is_some());
        let kinds: Vec<NamespaceType> = linux.namespaces.iter().map(|n| n.kind).collect();
        assert!(kinds.contains(&NamespaceType::Network));
        assert_eq!(linux.cgroups_path.as_deref(), Some("/keel/x"));
        let resources = linux.resources.as_ref().unwrap();
        assert_eq!(resources.devices.len(), 1);
        assert!(!resources.devices[0].allow);
        assert_eq!(
            config
                .annotations
                .get("org.opencontainers.image.stopSignal")
                .map(String::as_str),
            Some("SIGTERM")
        );
    }

    #[test]
    fn privileged_host_network_init_and_limits() {
        let img = image(Some(&["/app"]), None, &[]);
        let spec = ContainerSpec {
            privileged: true,
            network: NetworkMode::Host,
            init: true,
            tty: true,
            stop_signal: Some("SIGINT".into()),
            resources: ResourceSpec {
                memory: Some(64 << 20),
                nano_cpus: Some(1_500_000_000),
                cpu_shares: Some(512),
                pids_limit: Some(100),
                shm_size: Some(1 << 20),
                ulimits: vec![crate::spec::Ulimit {
                    name: "nofile".into(),
                    soft: 100,
                    hard: 200,
                }],
                ..ResourceSpec::default()
            },
            ..ContainerSpec::default()
        };
        let config = build_with(&spec, &img, &[]).unwrap();
        let process = config.process.as_ref().unwrap();
        assert_eq!(process.args, [INIT_PATH, "--", "/app"]);
        assert!(process.terminal);
        assert_eq!(process.rlimits[0].kind, "RLIMIT_NOFILE");
        let linux = config.linux.as_ref().unwrap();
        assert!(linux.seccomp.is_none());
        assert!(linux.masked_paths.is_empty());
        assert!(
            !linux
                .namespaces
                .iter()
                .any(|n| n.kind == NamespaceType::Network)
        );
        let resources = linux.resources.as_ref().unwrap();
        assert_eq!(resources.memory.as_ref().unwrap().limit, Some(64 << 20));
        assert_eq!(resources.memory.as_ref().unwrap().swap, Some(128 << 20));
        let cpu = resources.cpu.as_ref().unwrap();
        assert_eq!(
            (cpu.quota, cpu.period, cpu.shares),
            (Some(150_000), Some(100_000), Some(512))
        );
        assert_eq!(resources.pids.as_ref().unwrap().limit, 100);
        assert!(resources.devices[0].allow);
        assert!(config.mounts.iter().any(|m| m.destination == INIT_PATH));
        assert!(!config.mounts[3].options.contains(&"ro".to_string()));
        assert!(
            config.mounts[6]
                .options
                .contains(&"size=1048576".to_string())
        );
        assert_eq!(
            config
                .annotations
                .get("org.opencontainers.image.stopSignal")
                .map(String::as_str),
            Some("SIGINT")
        );
    }

    #[test]
    fn user_mounts_sorted_and_overriding() {
        let img = image(None, Some(&["sh"]), &[]);
        let mounts = vec![
            ResolvedMount {
                kind: MountKind::Bind,
                source: Some("/host/deep".into()),
                target: "/data/deep".into(),
                read_only: true,
                tmpfs_size: None,
                tmpfs_mode: None,
                propagation: None,
            },
            ResolvedMount {
                kind: MountKind::Volume,
                source: Some("/var/lib/keel/volumes/v/_data".into()),
                target: "/data".into(),
                read_only: false,
                tmpfs_size: None,
                tmpfs_mode: None,
                propagation: None,
            },
            ResolvedMount {
                kind: MountKind::Tmpfs,
                source: None,
                target: "/run".into(),
                read_only: false,
                tmpfs_size: Some(1 << 20),
                tmpfs_mode: Some(0o755),
                propagation: None,
            },
            ResolvedMount {
                kind: MountKind::Bind,
                source: Some("/host/hosts".into()),
                target: "/etc/hosts".into(),
                read_only: true,
                tmpfs_size: None,
                tmpfs_mode: None,
                propagation: None,
            },
        ];
        let spec = ContainerSpec {
            mounts: vec![MountSpec {
                kind: MountKind::Bind,
                source: "/host/deep".into(),
                target: "/data/deep".into(),
                read_only: true,
                tmpfs_size: None,
                tmpfs_mode: None,
                no_copy: false,
                propagation: None,
                volume_flag: None,
            }],
            ..ContainerSpec::default()
        };
        let config = build_with(&spec, &img, &mounts).unwrap();
        let tail: Vec<&str> = config.mounts[7..]
            .iter()
            .map(|m| m.destination.as_str())
            .collect();
        assert_eq!(
            tail,
            [
                "/etc/resolv.conf",
                "/etc/hostname",
                "/data",
                "/run",
                "/data/deep",
                "/etc/hosts"
            ]
        );
        let deep = config
            .mounts
            .iter()
            .find(|m| m.destination == "/data/deep")
            .unwrap();
        assert_eq!(deep.options, ["rbind", "rprivate", "ro"]);
        let run = config
            .mounts
            .iter()
            .find(|m| m.destination == "/run")
            .unwrap();
        assert!(run.options.contains(&"mode=755".to_string()));
        assert!(run.options.contains(&"size=1048576".to_string()));
    }

    #[test]
    fn bad_requests_are_refused() {
        let img = image(None, Some(&["sh"]), &[]);
        let mut spec = ContainerSpec {
            workdir: Some("relative".into()),
            ..ContainerSpec::default()
        };
        assert!(
            build_with(&spec, &img, &[])
                .unwrap_err()
                .to_string()
                .contains("absolute path")
        );
        spec.workdir = None;
        spec.resources.memory = Some(1 << 20);
        assert_eq!(
            build_with(&spec, &img, &[]).unwrap_err().to_string(),
            "Minimum memory limit allowed is 6MB"
        );
        spec.resources.memory = Some(64 << 20);
        spec.resources.memory_swap = Some(32 << 20);
        assert!(build_with(&spec, &img, &[]).is_err());
        spec.resources.memory_swap = Some(-1);
        let config = build_with(&spec, &img, &[]).unwrap();
        let memory = config.linux.unwrap().resources.unwrap().memory.unwrap();
        assert_eq!(memory.swap, Some(-1));
        spec.seccomp = SeccompChoice::Profile("{not json".into());
        assert!(build_with(&spec, &img, &[]).is_err());
    }
}
