//! The guest of a container's micro-VM: a Linux kernel from Debian's
//! packages (installed by keel's setup under `/usr/lib/keel/guest`), and an
//! initramfs keel writes itself (cached per kernel and agent): the modules
//! the kernel needs to reach the host (virtio-mmio, 9p, vsock, virtio-net)
//! and `keel-guest`, the agent, as `/init`.

pub mod cpio;
pub mod net;
pub mod shim;
pub mod vmm;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Where keel's setup installs guest kernels: `<version>/vmlinuz`, the
/// ELF inside it as `<version>/vmlinux` (booted through its PVH entry: an
/// emulated guest decompresses a bzImage for seconds), and
/// `<version>/modules/` (the kernel's `lib/modules/<version>`).
pub const KERNEL_DIR: &str = "/usr/lib/keel/guest";

/// The modules the initramfs loads, in this order (their dependencies
/// first): the virtio-mmio transport, 9p over virtio, vsock, virtio-net.
const MODULES: &[&str] = &[
    "virtio_mmio",
    "9pnet_virtio",
    "9pnet_fd",
    "9p",
    "vmw_vsock_virtio_transport",
    "virtio_net",
];

/// Bumped when the initramfs's layout changes (cached ones are rebuilt).
const INITRAMFS_FORMAT: u32 = 2;

/// One installed guest kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub version: String,
    /// The kernel image booted: vmlinux where there is one, else vmlinuz.
    pub image: PathBuf,
    /// Its modules (`lib/modules/<version>`); none for keel's own minimal
    /// kernel, which has everything built in and is booted without ACPI
    /// (its virtio-mmio devices named on its command line).
    pub modules: Option<PathBuf>,
}

impl Kernel {
    /// The kernel in `dir` (a `<version>` directory), or the one to use
    /// under [`KERNEL_DIR`]: keel's minimal kernel (`<version>-keel`, the
    /// faster to boot) where setup built one, else the newest.
    pub fn find(dir: Option<&Path>) -> Result<Kernel> {
        let at = |dir: &Path| -> Option<Kernel> {
            let image = Some(dir.join("vmlinux"))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| dir.join("vmlinuz"));
            let modules = Some(dir.join("modules")).filter(|m| m.join("modules.dep").is_file());
            let builtin = dir.join("keel-minimal").is_file();
            (image.is_file() && (modules.is_some() || builtin)).then(|| Kernel {
                version: dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                image,
                modules,
            })
        };
        if let Some(dir) = dir {
            return at(dir).ok_or_else(|| {
                Error::Msg(format!(
                    "no guest kernel in {} (it needs vmlinux or vmlinuz, and modules/modules.dep \
                     or a keel-minimal marker)",
                    dir.display()
                ))
            });
        }
        let mut found: Vec<Kernel> = std::fs::read_dir(KERNEL_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| at(&entry.path()))
            .collect();
        found.sort_by_key(|k| (k.modules.is_none(), version_key(&k.version)));
        found.pop().ok_or_else(|| {
            Error::Msg(format!(
                "no guest kernel installed in {KERNEL_DIR}: keel's scripts/setup installs \
                 Debian's (linux-image-amd64) there"
            ))
        })
    }

    /// The modules to load for [`MODULES`], dependencies first, as files
    /// in [`Kernel::modules`]; built-in ones are left out (all of them for
    /// a kernel without modules).
    pub fn module_order(&self) -> Result<Vec<PathBuf>> {
        let Some(modules) = &self.modules else {
            return Ok(Vec::new());
        };
        let read = |name: &str| {
            std::fs::read_to_string(modules.join(name)).map_err(|e| Error::Io {
                what: format!("read {}", modules.join(name).display()),
                source: e,
            })
        };
        let deps = parse_modules_dep(&read("modules.dep")?);
        let builtin: BTreeSet<String> = read("modules.builtin")
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect();
        let by_name: BTreeMap<String, &String> = deps.keys().map(|p| (module_name(p), p)).collect();
        let mut order = Vec::new();
        for wanted in MODULES {
            if builtin.contains(*wanted) {
                continue;
            }
            let path = by_name.get(*wanted).ok_or_else(|| {
                Error::Msg(format!(
                    "the guest kernel {} has no module {wanted}",
                    self.version
                ))
            })?;
            add_with_deps(path, &deps, &mut order);
        }
        Ok(order.iter().map(|m| modules.join(m)).collect())
    }
}

/// What `--isolation vm` runs on this host, for `keel info`: the guest
/// kernel (or why there is none) and the VMM with its accelerator.
pub fn describe() -> (String, String) {
    let kernel = match Kernel::find(
        std::env::var_os("KEEL_GUEST_KERNEL")
            .map(PathBuf::from)
            .as_deref(),
    ) {
        Ok(k) => format!("{} ({})", k.version, k.image.display()),
        Err(e) => format!("none: {e}"),
    };
    (kernel, vmm::describe())
}

/// `6.1.0-57-amd64` → numbers to compare versions by.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `kernel/fs/9p/9p.ko` → `9p`; dashes and underscores are one to modprobe.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// modules.dep: `path: dep dep...`, each line's dependencies listed so
/// that loading them in reverse works.
fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((
                module.trim().to_string(),
                deps.split_whitespace().map(str::to_string).collect(),
            ))
        })
        .collect()
}

fn add_with_deps(path: &str, deps: &BTreeMap<String, Vec<String>>, order: &mut Vec<String>) {
    if order.iter().any(|p| p == path) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten().rev() {
        add_with_deps(dep, deps, order);
    }
    if !order.iter().any(|p| p == path) {
        order.push(path.to_string());
    }
}

/// The initramfs for `kernel` with `agent` as /init, from `cache` or
/// written there (atomically: a half-written one is never used).
pub fn initramfs(kernel: &Kernel, agent: &Path, cache: &Path) -> Result<PathBuf> {
    let io = |what: String| move |e: std::io::Error| Error::Io { what, source: e };
    let meta = std::fs::metadata(agent).map_err(io(format!("the agent {}", agent.display())))?;
    let mut key = Sha256::new();
    key.update(format!(
        "{INITRAMFS_FORMAT}\0{}\0{}\0{}\0{}\0{}",
        kernel.image.display(),
        kernel.version,
        agent.display(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
    ));
    let key = hex::encode(&key.finalize()[..8]);
    let path = cache.join(format!("initramfs-{}-{key}.cpio", kernel.version));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(cache).map_err(io(format!("create {}", cache.display())))?;
    let order = kernel.module_order()?;
    let mut archive = cpio::Writer::new(Vec::with_capacity(8 << 20));
    for dir in ["dev", "proc", "sys", "run", "tmp", "modules"] {
        archive.dir(dir, 0o755)?;
    }
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.char_device("dev/null", 0o666, 1, 3)?;
    let mut list = String::new();
    for (n, from) in order.iter().enumerate() {
        let data = std::fs::read(from).map_err(io(format!("read {}", from.display())))?;
        let file = from.file_name().unwrap_or_default().to_string_lossy();
        let name = format!("{n:02}-{file}");
        archive.file(&format!("modules/{name}"), 0o644, &data)?;
        list.push_str(&name);
        list.push('\n');
    }
    archive.file("modules/order", 0o644, list.as_bytes())?;
    let agent_bytes = std::fs::read(agent).map_err(io(format!("read {}", agent.display())))?;
    archive.file("init", 0o755, &agent_bytes)?;
    let bytes = archive.finish()?;
    let tmp = cache.join(format!(".initramfs-{key}.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(io(format!("create {}", tmp.display())))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(io(format!("rename to {}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_after_what_they_need() {
        let deps = parse_modules_dep(
            "kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n\
             kernel/net/9p/9pnet.ko:\n\
             kernel/fs/netfs/netfs.ko:\n",
        );
        let mut order = Vec::new();
        add_with_deps("kernel/drivers/virtio/virtio_mmio.ko", &deps, &mut order);
        add_with_deps("kernel/fs/9p/9p.ko", &deps, &mut order);
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/net/9p/9pnet.ko",
                "kernel/fs/9p/9p.ko",
            ]
        );
        assert_eq!(
            module_name("kernel/net/vmw_vsock/vmw-vsock.ko.xz"),
            "vmw_vsock"
        );
        assert!(version_key("6.1.0-57-amd64") > version_key("6.1.0-9-amd64"));
    }
}
