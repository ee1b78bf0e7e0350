//! What a container's files and config are made from: users resolved in
//! the image, mounts, devices, `/etc/hosts` and `resolv.conf`.

use super::*;

/// The container's user resolved in the image's layers.
pub(super) fn resolve_user_in_layers(
    layers: &[PathBuf],
    spec: &ContainerSpec,
    image: &ImageConfig,
) -> Result<users::ExecUser> {
    let user = spec
        .user
        .clone()
        .or_else(|| image.config.as_ref().and_then(|c| c.user.clone()))
        .unwrap_or_default();
    let passwd =
        crate::rootfs::read_image_file(layers, "/etc/passwd", 1 << 20)?.unwrap_or_default();
    let group = crate::rootfs::read_image_file(layers, "/etc/group", 1 << 20)?.unwrap_or_default();
    users::resolve(
        &user,
        &spec.group_add,
        &users::parse_passwd(&String::from_utf8_lossy(&passwd)),
        &users::parse_group(&String::from_utf8_lossy(&group)),
    )
}

/// The container's user resolved in its mounted root filesystem.
pub fn resolve_user_in_rootfs(
    rootfs: &Path,
    spec: &ContainerSpec,
    image: &ImageConfig,
) -> Result<users::ExecUser> {
    let user = spec
        .user
        .clone()
        .or_else(|| image.config.as_ref().and_then(|c| c.user.clone()))
        .unwrap_or_default();
    let passwd = crate::rootfs::read_in_root(rootfs, "/etc/passwd", 1 << 20)?.unwrap_or_default();
    let group = crate::rootfs::read_in_root(rootfs, "/etc/group", 1 << 20)?.unwrap_or_default();
    users::resolve(
        &user,
        &spec.group_add,
        &users::parse_passwd(&String::from_utf8_lossy(&passwd)),
        &users::parse_group(&String::from_utf8_lossy(&group)),
    )
}

pub fn resolved_mount(mount: &ContainerMount) -> ResolvedMount {
    ResolvedMount {
        kind: mount.kind,
        source: mount
            .source
            .clone()
            .or_else(|| (mount.kind != MountKind::Tmpfs).then(|| PathBuf::from("/nonexistent"))),
        target: mount.target.clone(),
        read_only: mount.read_only,
        tmpfs_size: mount.tmpfs_size,
        tmpfs_mode: mount.tmpfs_mode,
        propagation: mount.propagation.clone(),
    }
}

/// The container's OCI config.
#[allow(clippy::too_many_arguments)]
pub fn build_config(
    layout: &Layout,
    id: &str,
    spec: &ContainerSpec,
    run: &RunConfig,
    user: &users::ExecUser,
    mounts: &[ResolvedMount],
    devices: &[keel_runtime::spec::Device],
    network_namespace: Option<&str>,
) -> Result<keel_runtime::spec::Spec> {
    let rootfs = layout.rootfs(id);
    let hostname_file = layout.file(id, "hostname");
    let hosts_file = layout.file(id, "hosts");
    let resolv_conf = layout.file(id, "resolv.conf");
    let cgroups_path = format!("{}/{id}", run.cgroup_parent.trim_end_matches('/'));
    oci::build(&oci::Inputs {
        id,
        spec,
        image: &run.image_config,
        user,
        rootfs: &rootfs,
        hostname_file: &hostname_file,
        hosts_file: &hosts_file,
        resolv_conf: &resolv_conf,
        mounts,
        devices,
        cgroups_path: &cgroups_path,
        network_namespace,
        init_binary: run.init_binary.as_deref(),
        available_capabilities: Some(&oci::bounding_capabilities()),
        vm: oci::VmInputs {
            shim: run.vm_shim.as_deref(),
            agent: run.guest_agent.as_deref(),
            cache: &layout.root.join("vm-guest"),
        },
    })
}

/// `--device` entries read from the host (type, major, minor).
pub fn host_devices(spec: &ContainerSpec) -> Result<Vec<keel_runtime::spec::Device>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devices = Vec::new();
    for device in &spec.devices {
        let meta = std::fs::metadata(&device.host_path).map_err(|e| {
            Error::invalid(format!(
                "error gathering device information while adding custom device \"{}\": {e}",
                device.host_path
            ))
        })?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(Error::invalid(format!(
                "error gathering device information while adding custom device \"{}\": not a device node",
                device.host_path
            )));
        };
        let rdev = meta.rdev();
        devices.push(keel_runtime::spec::Device {
            kind: kind.to_string(),
            path: device.container_path.clone(),
            major: libc::major(rdev) as i64,
            minor: libc::minor(rdev) as i64,
            file_mode: Some(meta.mode() & 0o777),
            uid: Some(0),
            gid: Some(0),
        });
    }
    Ok(devices)
}

/// The container's `/etc/hosts` (docker's): loopback names, its
/// addresses (or 127.0.1.1) with its hostname, then `--add-host`.
pub(super) fn hosts_file(spec: &ContainerSpec, hostname: &str, addresses: &[IpAddr]) -> String {
    let mut text = if spec.network == NetworkMode::Host {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        let mut text = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n",
        );
        if addresses.is_empty() {
            text.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
        for ip in addresses {
            text.push_str(&format!("{ip}\t{hostname}\n"));
        }
        text
    };
    for (name, ip) in &spec.extra_hosts {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    text
}

/// The container's `/etc/resolv.conf`: the host's (without loopback
/// resolvers a container cannot reach) or `--dns`; on a user-defined
/// network, keel's name server in the container (which forwards to
/// those).
pub(super) fn resolv_conf(spec: &ContainerSpec, embedded_dns: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut text = String::new();
    if embedded_dns {
        text.push_str(&format!("nameserver {}\n", keel_net::dns::ADDRESS));
        let search: Vec<String> = if spec.dns_search.is_empty() {
            host.lines()
                .filter_map(|l| l.strip_prefix("search"))
                .flat_map(|l| l.split_whitespace().map(str::to_string))
                .collect()
        } else {
            spec.dns_search.clone()
        };
        if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        text.push_str("options ndots:0\n");
        return text;
    }
    if spec.dns.is_empty() {
        for line in host.lines() {
            let loopback = line
                .strip_prefix("nameserver")
                .map(str::trim)
                .is_some_and(|ns| ns.starts_with("127.") || ns == "::1");
            // A loopback resolver of the host is not reachable from a
            // container's own network namespace.
            if loopback && spec.network != NetworkMode::Host {
                continue;
            }
            if !spec.dns_search.is_empty() && line.starts_with("search") {
                continue;
            }
            text.push_str(line);
            text.push('\n');
        }
    } else {
        for line in host.lines() {
            let replaced_search = line.starts_with("search") && !spec.dns_search.is_empty();
            if !line.starts_with("nameserver") && !replaced_search {
                text.push_str(line);
                text.push('\n');
            }
        }
        for server in &spec.dns {
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    if !spec.dns_search.is_empty() {
        text.push_str(&format!("search {}\n", spec.dns_search.join(" ")));
    }
    text
}

/// Writes a container's `/etc/hosts` and `/etc/resolv.conf` for a start:
/// its addresses on its networks, keel's name server on user-defined
/// ones; with `container:ID`, the other container's files.
pub fn write_network_files(
    layout: &Layout,
    container: &Container,
    sandbox: &crate::network::sandbox::Sandbox,
) -> Result<()> {
    let id = &container.id;
    if let NetworkMode::Container(other) = &container.spec.network {
        for name in ["hosts", "resolv.conf", "hostname"] {
            let from = layout.file(other, name);
            if let Ok(data) = std::fs::read(&from) {
                write_file(&layout.file(id, name), &data)?;
            }
        }
        return Ok(());
    }
    let hostname = oci::hostname(&container.spec, id);
    let addresses: Vec<IpAddr> = sandbox
        .endpoints
        .iter()
        .flat_map(|e| [e.ipv4, e.ipv6])
        .flatten()
        .collect();
    write_file(
        &layout.file(id, "hosts"),
        hosts_file(&container.spec, &hostname, &addresses).as_bytes(),
    )?;
    write_file(
        &layout.file(id, "resolv.conf"),
        resolv_conf(&container.spec, sandbox.dns.is_some()).as_bytes(),
    )
}

pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::io(format!("write {}", path.display()), e))
}
