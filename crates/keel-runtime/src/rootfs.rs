//! The container's root filesystem, built inside its new mount namespace:
//! propagation, the rootfs bind, the configured mounts, /dev, pivot_root
//! (or move + chroot with --no-pivot), then masked and read-only paths.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::cgroups::Cgroup;
use crate::devices;
use crate::error::{Context, Error, Result};
use crate::mounts::{self, Leaf};
use crate::spec::{Mount, Spec};

pub struct Rootfs<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup: &'a Cgroup,
    /// In a user namespace: devices are bind-mounted, not made.
    pub user_ns: bool,
    pub new_cgroup_ns: bool,
}

impl Rootfs<'_> {
    /// Everything up to (not including) pivot_root.
    pub fn prepare(&self) -> Result<()> {
        let linux = self.spec.linux();
        let propagation = match &linux.rootfs_propagation {
            Some(p) => mounts::propagation_flag(p)?,
            None => libc::MS_SLAVE | libc::MS_REC,
        };
        mounts::mount(None, "/", None, propagation, None)
            .map_err(|e| Error::io("set propagation of / in the container's mount namespace", e))?;
        let rootfs = path_str(self.rootfs)?;
        if linux.rootfs_propagation.is_some() {
            // pivot_root fails (EINVAL) if the new root, its parent mount or
            // the current root is shared: make those private (as runc does);
            // the configured propagation is applied to the new / after it.
            if let Some(parent) = mount_point_containing(self.rootfs) {
                let _ = mounts::mount(None, path_str(&parent)?, None, libc::MS_PRIVATE, None);
            }
            let _ = mounts::mount(None, "/", None, libc::MS_PRIVATE, None);
        }
        mounts::mount(
            Some(rootfs),
            rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| Error::io(format!("bind-mount rootfs {rootfs}"), e))?;
        // A shared rootfs would propagate our mounts back to the host.
        if linux.rootfs_propagation.is_none() {
            let _ = mounts::mount(None, rootfs, None, libc::MS_PRIVATE, None);
        }
        let root = open_dir(self.rootfs)?;
        let mut dev_bound = false;
        for mount in &self.spec.mounts {
            self.mount_one(&root, mount).map_err(|e| {
                Error::msg(format!(
                    "mount {} to {}: {e}",
                    mount.source.as_deref().unwrap_or("none"),
                    mount.destination
                ))
            })?;
            if mount.destination.trim_end_matches('/') == "/dev" && is_bind(mount) {
                dev_bound = true;
            }
        }
        if !dev_bound {
            for device in devices::default_devices().iter().chain(&linux.devices) {
                devices::create(&root, device, self.user_ns)?;
            }
            devices::create_symlinks(&root)?;
        }
        // As runc: a missing process.cwd is created (inside the rootfs).
        let cwd = &self.spec.process().cwd;
        if !cwd.is_empty() {
            mounts::mkdir_all_in_root(&root, cwd, Leaf::Dir)
                .map_err(|e| Error::msg(format!("create cwd {cwd:?}: {e}")))?;
        }
        Ok(())
    }

    fn mount_one(&self, root: &OwnedFd, mount: &Mount) -> Result<()> {
        let options = mounts::parse_options(&mount.options)?;
        let kind = mount.kind.as_deref().unwrap_or("");
        if kind == "cgroup" || kind == "cgroup2" {
            return self.mount_cgroup(root, mount, options.flags);
        }
        let target_fd;
        if options.is_bind() || kind == "bind" {
            let source = self.source_path(mount)?;
            let meta = std::fs::metadata(&source)
                .context(|| format!("bind source {}", source.display()))?;
            let leaf = if meta.is_dir() { Leaf::Dir } else { Leaf::File };
            target_fd = mounts::mkdir_all_in_root(root, &mount.destination, leaf)?;
            let source = path_str(&source)?;
            let rec = options.flags & libc::MS_REC;
            mounts::mount(
                Some(source),
                &mounts::fd_path(&target_fd),
                None,
                libc::MS_BIND | rec,
                None,
            )
            .map_err(|e| Error::io("bind", e))?;
            let extra = options.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
            if extra != 0 {
                let mounted = mounts::open_in_root(root, &mount.destination)
                    .map_err(|e| Error::io("reopen", e))?;
                mounts::remount_bind(&mounts::fd_path(&mounted), extra | rec)
                    .map_err(|e| Error::io("remount with options", e))?;
            }
        } else {
            target_fd = mounts::mkdir_all_in_root(root, &mount.destination, Leaf::Dir)?;
            let source = mount.source.as_deref().unwrap_or(kind);
            let data = options.data_string();
            let result = mounts::mount(
                Some(source),
                &mounts::fd_path(&target_fd),
                Some(kind),
                options.flags & !libc::MS_REMOUNT,
                Some(&data),
            );
            match result {
                Ok(()) => {}
                // sysfs cannot be mounted in a user namespace that does not
                // own the network namespace: bind the host's, as runc does.
                Err(e) if kind == "sysfs" && e.raw_os_error() == Some(libc::EPERM) => {
                    mounts::mount(
                        Some("/sys"),
                        &mounts::fd_path(&target_fd),
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )
                    .map_err(|e| Error::io("bind /sys", e))?;
                    let mounted = mounts::open_in_root(root, &mount.destination)
                        .map_err(|e| Error::io("reopen", e))?;
                    mounts::remount_bind(&mounts::fd_path(&mounted), options.flags | libc::MS_REC)
                        .map_err(|e| Error::io("remount /sys", e))?;
                }
                Err(e) => return Err(Error::io(format!("mount type {kind:?}"), e)),
            }
        }
        drop(target_fd);
        for flag in &options.propagation {
            let mounted = mounts::open_in_root(root, &mount.destination)
                .map_err(|e| Error::io("reopen", e))?;
            mounts::mount(None, &mounts::fd_path(&mounted), None, *flag, None)
                .map_err(|e| Error::io("set propagation", e))?;
        }
        Ok(())
    }

    /// /sys/fs/cgroup: on cgroup v2 with a cgroup namespace, a fresh cgroup2
    /// mount; otherwise a tmpfs with the container's own cgroup directory
    /// of each hierarchy bound in, so the container sees only itself.
    fn mount_cgroup(&self, root: &OwnedFd, mount: &Mount, flags: u64) -> Result<()> {
        let readonly = flags & libc::MS_RDONLY;
        let base = flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
        let target = mounts::mkdir_all_in_root(root, &mount.destination, Leaf::Dir)?;
        if self.cgroup.is_unified() {
            if self.new_cgroup_ns {
                return mounts::mount(
                    Some("cgroup2"),
                    &mounts::fd_path(&target),
                    Some("cgroup2"),
                    base | readonly,
                    None,
                )
                .map_err(|e| Error::io("mount cgroup2", e));
            }
            let sources = self.cgroup.mount_sources();
            if let Some((_, dir)) = sources.first() {
                mounts::mount(
                    Some(path_str(dir)?),
                    &mounts::fd_path(&target),
                    None,
                    libc::MS_BIND,
                    None,
                )
                .map_err(|e| Error::io("bind cgroup2 dir", e))?;
                let mounted = mounts::open_in_root(root, &mount.destination)
                    .map_err(|e| Error::io("reopen", e))?;
                mounts::remount_bind(&mounts::fd_path(&mounted), base | readonly)
                    .map_err(|e| Error::io("remount cgroup2 dir", e))?;
            }
            return Ok(());
        }
        mounts::mount(
            Some("tmpfs"),
            &mounts::fd_path(&target),
            Some("tmpfs"),
            base,
            Some("mode=755"),
        )
        .map_err(|e| Error::io("mount tmpfs for cgroups", e))?;
        let dest = mount.destination.trim_end_matches('/');
        for (name, dir) in self.cgroup.mount_sources() {
            let sub = format!("{dest}/{name}");
            let fd = mounts::mkdir_all_in_root(root, &sub, Leaf::Dir)?;
            mounts::mount(
                Some(path_str(&dir)?),
                &mounts::fd_path(&fd),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| Error::io(format!("bind cgroup {name}"), e))?;
            let mounted = mounts::open_in_root(root, &sub).map_err(|e| Error::io("reopen", e))?;
            mounts::remount_bind(&mounts::fd_path(&mounted), base | readonly)
                .map_err(|e| Error::io(format!("remount cgroup {name}"), e))?;
            // "cpu,cpuacct" is also reachable as "cpu" and "cpuacct".
            if name.contains(',') {
                let parent =
                    mounts::open_in_root(root, dest).map_err(|e| Error::io("reopen", e))?;
                for alias in name.split(',') {
                    let c_alias = CString::new(alias).map_err(|_| Error::msg("bad cgroup name"))?;
                    let c_target =
                        CString::new(name.as_str()).map_err(|_| Error::msg("bad cgroup name"))?;
                    // SAFETY: symlinkat with valid NUL-terminated strings and dirfd.
                    unsafe {
                        libc::symlinkat(
                            c_target.as_ptr(),
                            std::os::fd::AsRawFd::as_raw_fd(&parent),
                            c_alias.as_ptr(),
                        )
                    };
                }
            }
        }
        if readonly != 0 {
            let mounted = mounts::open_in_root(root, dest).map_err(|e| Error::io("reopen", e))?;
            mounts::mount(
                None,
                &mounts::fd_path(&mounted),
                None,
                libc::MS_REMOUNT | base | readonly,
                Some("mode=755"),
            )
            .map_err(|e| Error::io("remount cgroup tmpfs read-only", e))?;
        }
        Ok(())
    }

    fn source_path(&self, mount: &Mount) -> Result<PathBuf> {
        let source = mount
            .source
            .as_deref()
            .ok_or_else(|| Error::msg("bind mount without a source"))?;
        let path = Path::new(source);
        Ok(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.bundle.join(path)
        })
    }
}

fn is_bind(mount: &Mount) -> bool {
    mount.kind.as_deref() == Some("bind")
        || mount.options.iter().any(|o| o == "bind" || o == "rbind")
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| Error::msg(format!("path is not UTF-8: {}", path.display())))
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(path)
        .context(|| format!("open rootfs {}", path.display()))?;
    Ok(file.into())
}

use std::os::unix::fs::OpenOptionsExt;

/// Makes the rootfs the process's root. pivot_root(".", ".") stacks the old
/// root on top of the new one; detaching it (after making it a slave, so the
/// unmount does not propagate to the host) leaves only the rootfs.
pub fn pivot_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).context(|| format!("chdir to rootfs {}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").context(|| "pivot_root".to_string())?;
    mounts::mount(None, ".", None, libc::MS_SLAVE | libc::MS_REC, None)
        .map_err(|e| Error::io("make old root a slave", e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .context(|| "unmount old root".to_string())?;
    nix::unistd::chdir("/").context(|| "chdir /".to_string())?;
    Ok(())
}

/// The mount point of the mount that holds `path` (the longest mount point
/// in /proc/self/mountinfo that is `path` or one of its ancestors).
fn mount_point_containing(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(field.replace("\\040", " ")))
        .filter(|point| path.starts_with(point))
        .max_by_key(|point| point.components().count())
}

/// rootfsPropagation, applied to the container's / once it is the root.
pub fn apply_root_propagation(spec: &Spec) -> Result<()> {
    if let Some(name) = &spec.linux().rootfs_propagation {
        let flag = mounts::propagation_flag(name)?;
        mounts::mount(None, "/", None, flag, None)
            .map_err(|e| Error::io(format!("set rootfsPropagation {name} on /"), e))?;
    }
    Ok(())
}

/// --no-pivot: move the rootfs over / and chroot into it (for rootfs on
/// ramfs, where pivot_root fails).
pub fn move_root(rootfs: &Path) -> Result<()> {
    nix::unistd::chdir(rootfs).context(|| format!("chdir to rootfs {}", rootfs.display()))?;
    mounts::mount(Some("."), "/", None, libc::MS_MOVE, None)
        .map_err(|e| Error::io("move rootfs to /", e))?;
    nix::unistd::chroot(".").context(|| "chroot".to_string())?;
    nix::unistd::chdir("/").context(|| "chdir /".to_string())?;
    Ok(())
}

/// After pivot: hides `masked` paths (a read-only tmpfs over directories,
/// /dev/null over files) and makes `readonly` paths read-only. Paths that do
/// not exist are skipped.
pub fn mask_and_protect(masked: &[String], readonly: &[String]) -> Result<()> {
    for path in readonly {
        match mounts::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(Error::io(format!("bind readonly path {path}"), e)),
        }
        mounts::remount_bind(path, libc::MS_RDONLY | libc::MS_REC)
            .map_err(|e| Error::io(format!("make {path} read-only"), e))?;
    }
    for path in masked {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let result = if meta.is_dir() {
            mounts::mount(Some("tmpfs"), path, Some("tmpfs"), libc::MS_RDONLY, None)
        } else {
            mounts::mount(Some("/dev/null"), path, None, libc::MS_BIND, None)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::io(format!("mask {path}"), e)),
        }
    }
    Ok(())
}

/// root.readonly: remount / read-only (keeping its locked flags).
pub fn make_root_readonly() -> Result<()> {
    mounts::remount_bind("/", libc::MS_RDONLY).map_err(|e| Error::io("remount / read-only", e))
}

/// linux.sysctl: writes /proc/sys/<key with dots as slashes>.
pub fn apply_sysctl(sysctl: &std::collections::BTreeMap<String, String>) -> Result<()> {
    for (key, value) in sysctl {
        if key.contains("..") || key.contains('\0') {
            return Err(Error::msg(format!("invalid sysctl key {key:?}")));
        }
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).context(|| format!("set sysctl {key}={value}"))?;
    }
    Ok(())
}
