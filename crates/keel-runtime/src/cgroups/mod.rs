//! Control groups: where a container's cgroup lives, creating it, applying
//! `linux.resources`, moving processes in, freezing, signalling, stats and
//! removal.
//!
//! Three host layouts are handled, all found by parsing
//! `/proc/self/mountinfo` (no hard-coded paths):
//! - **v1**: one hierarchy per controller set (plus named ones such as
//!   `name=systemd`); the container gets a directory in each.
//! - **hybrid**: v1 hierarchies plus a cgroup2 mount (usually
//!   `/sys/fs/cgroup/unified`). Like runc we also join the v2 hierarchy (so
//!   `cgroup.kill` works) but apply limits only through v1; controllers the
//!   v2 side happens to offer are ignored.
//! - **v2**: one unified hierarchy.
//!
//! The layout-specific work sits in [`v1`] and [`v2`]; this file holds the
//! layout detection, path resolution and the operations common to both.

pub mod bpf_devices;
pub mod stats;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::spec::{DeviceCgroup, Resources};

pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryStats, PidsStats,
    Stats, Throttling,
};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The v1 controllers the kernel has (v1 is frozen; no new ones will come).
/// Used to tell controllers from other super options such as `xattr`.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// How the host mounts its cgroup hierarchies.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    V1,
    Hybrid,
    V2,
}

/// One v1 hierarchy the container's cgroup occupies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hierarchy {
    /// Controllers bound to the hierarchy, e.g. `["cpu", "cpuacct"]` or
    /// `["name=systemd"]`.
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    /// The container's directory in this hierarchy.
    pub dir: PathBuf,
}

/// A container's cgroup, as recorded in its state.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cgroup {
    pub mode: Mode,
    /// The cleaned cgroup path inside every hierarchy, e.g. "/keel/abc".
    pub path: String,
    /// v1 hierarchies (v1 and hybrid modes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub v1: Vec<Hierarchy>,
    /// The v2 hierarchy's mountpoint and the container's directory in it
    /// (v2 and hybrid modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unified: Option<UnifiedDir>,
    /// Directories `create` made, in creation order; `None` until `create`
    /// has run, in which case `remove` removes the container's own
    /// directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Vec<PathBuf>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UnifiedDir {
    pub mountpoint: PathBuf,
    pub dir: PathBuf,
}

/// A cgroup mount found in mountinfo.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CgroupMount {
    pub mountpoint: PathBuf,
    /// The mount's root inside its hierarchy (field 4 of mountinfo).
    pub root: String,
    pub v2: bool,
    /// v1 only: controllers and `name=` from the super options.
    pub controllers: Vec<String>,
}

/// The hierarchies to use, chosen from the mounts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    pub mode: Mode,
    /// (controllers, mountpoint) per v1 hierarchy.
    pub v1: Vec<(Vec<String>, PathBuf)>,
    pub unified: Option<PathBuf>,
}

impl Cgroup {
    /// Resolves where the container's cgroup lives. `cgroups_path` is
    /// linux.cgroupsPath: absolute ("/default/abc") or relative ("abc",
    /// joined under "/"); None means "/keel/<id>". The systemd form
    /// "slice:prefix:name" is refused: keel has no systemd driver.
    pub fn resolve(id: &str, cgroups_path: Option<&str>) -> Result<Cgroup> {
        let mountinfo = fs::read_to_string(MOUNTINFO).context(|| format!("read {MOUNTINFO}"))?;
        Cgroup::resolve_from(id, cgroups_path, &mountinfo)
    }

    /// [`Cgroup::resolve`] on a given mountinfo text.
    pub(crate) fn resolve_from(
        id: &str,
        cgroups_path: Option<&str>,
        mountinfo: &str,
    ) -> Result<Cgroup> {
        let path = cgroup_path(id, cgroups_path)?;
        let layout = choose_layout(&parse_mountinfo(mountinfo))?;
        let relative = path.trim_start_matches('/');
        let v1 = layout
            .v1
            .into_iter()
            .map(|(controllers, mountpoint)| Hierarchy {
                controllers,
                dir: mountpoint.join(relative),
                mountpoint,
            })
            .collect();
        let unified = layout.unified.map(|mountpoint| UnifiedDir {
            dir: mountpoint.join(relative),
            mountpoint,
        });
        Ok(Cgroup {
            mode: layout.mode,
            path,
            v1,
            unified,
            created: None,
        })
    }

    /// Creates the container's directory in every hierarchy (mkdir -p) and
    /// records which directories it made.
    pub fn create(&mut self) -> Result<()> {
        let mut created = self.created.take().unwrap_or_default();
        let result = self.create_dirs(&mut created);
        self.created = Some(created);
        result
    }

    fn create_dirs(&self, created: &mut Vec<PathBuf>) -> Result<()> {
        for hierarchy in &self.v1 {
            mkdir_all(&hierarchy.mountpoint, &hierarchy.dir, created, |_| {})?;
            if hierarchy.has("cpuset") {
                v1::fill_cpuset(&hierarchy.mountpoint, &hierarchy.dir)?;
            }
        }
        if let Some(unified) = &self.unified {
            let enable = self.mode == Mode::V2;
            mkdir_all(&unified.mountpoint, &unified.dir, created, |parent| {
                if enable {
                    v2::enable_controllers(parent);
                }
            })?;
        }
        Ok(())
    }

    /// Writes the resource limits.
    pub fn apply(&self, resources: &Resources) -> Result<()> {
        match self.mode {
            Mode::V2 => {
                let unified = self.unified_dir().ok_or_else(|| {
                    Error::msg("cgroup v2 mode without a unified directory (corrupt state)")
                })?;
                v2::apply(unified, resources)
            }
            Mode::V1 | Mode::Hybrid => {
                v1::apply(self, resources)?;
                v1::apply_unified_keys(self, resources)
            }
        }
    }

    /// Moves a process in: writes its pid to cgroup.procs of every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(Error::msg(format!(
                "cannot add pid {pid} to cgroup {}: not a process id",
                self.path
            )));
        }
        for dir in self.all_dirs() {
            write_file(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Every pid in the container's cgroup, including nested cgroups.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = match self
            .v1_dir("freezer")
            .or_else(|| self.v1.first().map(|h| h.dir.as_path()))
        {
            Some(dir) => dir,
            None => match self.unified_dir() {
                Some(dir) => dir,
                None => return Ok(Vec::new()),
            },
        };
        let mut pids = Vec::new();
        collect_pids(dir, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Pauses every process (v1 freezer, else v2 cgroup.freeze).
    pub fn freeze(&self) -> Result<()> {
        match self.freezer()? {
            Freezer::V1(dir) => v1::freeze(dir),
            Freezer::V2(dir) => v2::freeze(dir),
        }
    }

    pub fn thaw(&self) -> Result<()> {
        match self.freezer()? {
            Freezer::V1(dir) => v1::thaw(dir),
            Freezer::V2(dir) => v2::thaw(dir),
        }
    }

    pub fn is_frozen(&self) -> Result<bool> {
        match self.freezer()? {
            Freezer::V1(dir) => v1::is_frozen(dir),
            Freezer::V2(dir) => v2::is_frozen(dir),
        }
    }

    /// Sends `signal` to every process in the cgroup. SIGKILL goes through
    /// cgroup.kill when the v2 directory has it; otherwise the cgroup is
    /// frozen around the signalling so no process forks past us.
    pub fn signal_all(&self, signal: i32) -> Result<()> {
        if signal == libc::SIGKILL
            && let Some(dir) = self.unified_dir()
            && dir.join("cgroup.kill").exists()
        {
            write_file(dir, "cgroup.kill", "1")?;
            if self.mode == Mode::V2 {
                return Ok(());
            }
            // Hybrid: anything that entered only the v1 hierarchies (moved
            // there by someone else) is killed below; the rest is already
            // dying and a second SIGKILL is harmless.
            for pid in self.pids()? {
                send_signal(pid, signal)?;
            }
            return Ok(());
        }

        let freezer = self.freezer().ok();
        let mut thaw_after = false;
        if freezer.is_some() {
            let was_frozen = self.is_frozen().unwrap_or(false);
            match self.freeze() {
                // A paused container stays paused unless it is being killed.
                Ok(()) => thaw_after = !was_frozen || signal == libc::SIGKILL,
                Err(error) => {
                    tracing::warn!(cgroup = %self.path, %error, "cannot freeze before signalling");
                    thaw_after = signal == libc::SIGKILL;
                }
            }
        }
        let result = self.pids().and_then(|pids| {
            pids.into_iter()
                .try_for_each(|pid| send_signal(pid, signal))
        });
        if thaw_after && let Err(error) = self.thaw() {
            tracing::warn!(cgroup = %self.path, %error, "cannot thaw after signalling");
        }
        result
    }

    /// Removes the container's own directory in every hierarchy (with
    /// anything nested in it), if `create` made it or never ran. Ancestors
    /// such as `/keel` stay, as with runc (`/default`) and docker (`/docker`):
    /// the next container needs them again. A missing directory is not an
    /// error; a busy one is retried for about a second.
    pub fn remove(&self) -> Result<()> {
        let mut first_error = None;
        for dir in self.all_dirs() {
            let ours = match &self.created {
                Some(created) => created.iter().any(|c| c == dir),
                None => true,
            };
            if !ours {
                continue;
            }
            if let Err(error) = remove_tree(dir) {
                tracing::debug!(dir = %dir.display(), %error, "cgroup removal failed");
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Resource usage in the shape of runc's `events --stats`.
    pub fn stats(&self) -> Result<Stats> {
        match self.mode {
            Mode::V2 => match self.unified_dir() {
                Some(dir) => v2::stats(dir),
                None => Ok(Stats::default()),
            },
            Mode::V1 | Mode::Hybrid => v1::stats(self),
        }
    }

    /// OOM kills so far in the container's cgroup; 0 if unknown.
    pub fn oom_kill_count(&self) -> u64 {
        let (dir, file) = match (self.v1_dir("memory"), self.mode) {
            (Some(dir), _) => (dir, "memory.oom_control"),
            (None, Mode::V2) => match self.unified_dir() {
                Some(dir) => (dir, "memory.events"),
                None => return 0,
            },
            (None, _) => return 0,
        };
        fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| stats::parse_flat_keyed(&text).get("oom_kill").copied())
            .unwrap_or(0)
    }

    /// True on a pure cgroup v2 host.
    pub fn is_unified(&self) -> bool {
        self.mode == Mode::V2
    }

    /// What to show inside the container at /sys/fs/cgroup: (name, the
    /// container's directory) per hierarchy, the name being the host
    /// mountpoint's base name ("cpu,cpuacct", "memory", "systemd", and
    /// "unified" on hybrid hosts), as runc does. On v2, the one directory.
    pub fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        let name = |mountpoint: &Path| {
            mountpoint
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        self.v1
            .iter()
            .map(|h| (name(&h.mountpoint), h.dir.clone()))
            .chain(
                self.unified
                    .iter()
                    .map(|u| (name(&u.mountpoint), u.dir.clone())),
            )
            .collect()
    }

    /// The container's directory in the v1 hierarchy holding `controller`.
    pub(crate) fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.has(controller))
            .map(|h| h.dir.as_path())
    }

    pub(crate) fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.dir.as_path())
    }

    fn all_dirs(&self) -> impl Iterator<Item = &Path> {
        self.v1
            .iter()
            .map(|h| h.dir.as_path())
            .chain(self.unified_dir())
    }

    fn freezer(&self) -> Result<Freezer<'_>> {
        if let Some(dir) = self.v1_dir("freezer") {
            return Ok(Freezer::V1(dir));
        }
        if let Some(dir) = self.unified_dir()
            && (self.mode == Mode::V2 || dir.join("cgroup.freeze").exists())
        {
            return Ok(Freezer::V2(dir));
        }
        Err(Error::msg(format!(
            "cgroup {}: no freezer (no v1 freezer hierarchy and no cgroup v2 cgroup.freeze)",
            self.path
        )))
    }
}

impl Hierarchy {
    pub(crate) fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

// ---------------------------------------------------------------------------
// Pure helpers

/// The cgroup path for a container: cleaned, absolute, never the root.
pub(crate) fn cgroup_path(id: &str, cgroups_path: Option<&str>) -> Result<String> {
    let raw = match cgroups_path {
        None => return Ok(clean_path(&format!("/keel/{id}"))),
        Some(raw) => raw,
    };
    if raw.split(':').count() == 3 {
        return Err(Error::msg(format!(
            "cgroupsPath {raw:?} is in the systemd form \"slice:prefix:name\", but the systemd \
             cgroup driver is not supported by keel-runtime; use a path such as \"/keel/{id}\""
        )));
    }
    let path = clean_path(raw);
    if path == "/" {
        return Err(Error::msg(format!(
            "cgroupsPath {raw:?} is the root cgroup; a container needs a cgroup of its own"
        )));
    }
    Ok(path)
}

/// Lexically cleans a cgroup path into an absolute one: "." and empty
/// parts dropped, ".." never climbs above "/".
pub(crate) fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Undoes mountinfo's octal escapes (`\040` for space and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup and cgroup2 mounts in a mountinfo text, in order.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        if left.len() < 6 {
            continue;
        }
        let mut right = right.split(' ');
        let (Some(fstype), Some(_source)) = (right.next(), right.next()) else {
            continue;
        };
        let super_options = right.next().unwrap_or("");
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            super_options
                .split(',')
                .filter(|option| option.starts_with("name=") || V1_CONTROLLERS.contains(option))
                .map(str::to_string)
                .collect()
        };
        mounts.push(CgroupMount {
            mountpoint: PathBuf::from(unescape_mountinfo(left[4])),
            root: unescape_mountinfo(left[3]),
            v2,
            controllers,
        });
    }
    mounts
}

/// How this host mounts its cgroups (`keel info`).
pub fn host_mode() -> Result<Mode> {
    let mountinfo = std::fs::read_to_string(MOUNTINFO)
        .map_err(|e| Error::msg(format!("read {MOUNTINFO}: {e}")))?;
    Ok(choose_layout(&parse_mountinfo(&mountinfo))?.mode)
}

/// Picks one mount per hierarchy and decides the mode.
pub(crate) fn choose_layout(mounts: &[CgroupMount]) -> Result<Layout> {
    // The same hierarchy can be mounted several times (bind mounts); keep
    // one per controller set, preferring a mount of the hierarchy's root.
    let mut v1: Vec<(Vec<String>, PathBuf, bool)> = Vec::new();
    for mount in mounts.iter().filter(|m| !m.v2 && !m.controllers.is_empty()) {
        let mut key = mount.controllers.clone();
        key.sort();
        let at_root = mount.root == "/";
        match v1.iter_mut().find(|(controllers, _, _)| {
            let mut existing = controllers.clone();
            existing.sort();
            existing == key
        }) {
            Some(existing) => {
                if at_root && !existing.2 {
                    existing.1 = mount.mountpoint.clone();
                    existing.2 = true;
                }
            }
            None => v1.push((mount.controllers.clone(), mount.mountpoint.clone(), at_root)),
        }
    }
    let unified = mounts
        .iter()
        .filter(|m| m.v2)
        .find(|m| m.root == "/")
        .or_else(|| mounts.iter().find(|m| m.v2))
        .map(|m| m.mountpoint.clone());
    let has_v1_controllers = v1
        .iter()
        .any(|(controllers, _, _)| controllers.iter().any(|c| !c.starts_with("name=")));
    let mode = match (has_v1_controllers, unified.is_some(), v1.is_empty()) {
        (true, true, _) => Mode::Hybrid,
        (true, false, _) => Mode::V1,
        // Only named v1 hierarchies (e.g. name=systemd kept for old
        // containers) next to cgroup2: the limits live in v2.
        (false, true, _) => Mode::V2,
        (false, false, false) => Mode::V1,
        (false, false, true) => {
            return Err(Error::msg(format!(
                "no cgroup or cgroup2 filesystem is mounted (checked {MOUNTINFO})"
            )));
        }
    };
    let v1 = if mode == Mode::V2 {
        Vec::new()
    } else {
        v1.into_iter()
            .map(|(controllers, mountpoint, _)| (controllers, mountpoint))
            .collect()
    };
    Ok(Layout { mode, v1, unified })
}

/// One devices-cgroup rule as the v1 kernel reads it: "c 1:3 rwm", with
/// "*" for a missing major/minor and "a" for all device types.
pub(crate) fn device_rule(rule: &DeviceCgroup) -> Result<String> {
    let kind = rule.kind.as_deref().unwrap_or("a");
    if !matches!(kind, "a" | "b" | "c") {
        return Err(Error::msg(format!(
            "invalid device cgroup rule type {kind:?}: expected \"a\", \"b\" or \"c\""
        )));
    }
    let access = match rule.access.as_deref() {
        None | Some("") => "rwm",
        Some(access) => access,
    };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(Error::msg(format!(
            "invalid device cgroup access {access:?}: only 'r', 'w' and 'm' are allowed"
        )));
    }
    let number = |n: Option<i64>| match n {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    Ok(format!(
        "{kind} {}:{} {access}",
        number(rule.major),
        number(rule.minor)
    ))
}

/// True for a rule that denies every access to every device.
pub(crate) fn is_deny_all(rule: &DeviceCgroup) -> bool {
    let all_access = match rule.access.as_deref() {
        None | Some("") => true,
        Some(access) => ['r', 'w', 'm'].iter().all(|c| access.contains(*c)),
    };
    !rule.allow && matches!(rule.kind.as_deref(), None | Some("a")) && all_access
}

/// The writes that apply device rules on v1, in order: (file, line).
pub(crate) fn device_writes(rules: &[DeviceCgroup]) -> Result<Vec<(&'static str, String)>> {
    let mut writes = Vec::with_capacity(rules.len() + 1);
    let mut rest = rules;
    if let Some(first) = rules.first()
        && is_deny_all(first)
    {
        writes.push(("devices.deny", "a".to_string()));
        rest = &rules[1..];
    }
    for rule in rest {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        writes.push((file, device_rule(rule)?));
    }
    Ok(writes)
}

/// pids.max for an OCI pids limit: "max" (unlimited) for 0 or less.
pub(crate) fn pids_max(limit: i64) -> String {
    if limit <= 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// (major, minor, weight) of a `blockIO.weightDevice` entry.
pub(crate) fn weight_device(entry: &serde_json::Value) -> Result<(i64, i64, Option<u64>)> {
    let field = |name: &str| entry.get(name).and_then(serde_json::Value::as_i64);
    match (field("major"), field("minor")) {
        (Some(major), Some(minor)) => Ok((
            major,
            minor,
            entry.get("weight").and_then(serde_json::Value::as_u64),
        )),
        _ => Err(Error::msg(format!(
            "invalid blockIO.weightDevice entry {entry}: major and minor are required"
        ))),
    }
}

/// A hugepage size as it appears in file names ("2MB", "1GB"); refuses
/// anything that could leave the directory or is not a size.
pub(crate) fn check_page_size(size: &str) -> Result<&str> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    if digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
        || !matches!(unit, "B" | "KB" | "MB" | "GB" | "TB" | "PB")
    {
        return Err(Error::msg(format!(
            "invalid hugepage size {size:?} in linux.resources.hugepageLimits: expected e.g. \
             \"2MB\" or \"1GB\""
        )));
    }
    Ok(size)
}

/// A `linux.resources.unified` key must name a file of the cgroup
/// directory itself, like "memory.high".
pub(crate) fn check_unified_key(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
        return Err(Error::msg(format!(
            "invalid linux.resources.unified key {key:?}: expected a cgroup file name such as \
             \"memory.high\""
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Filesystem helpers

/// Writes `value` to `dir/name` in one write, without creating the file.
pub(crate) fn write_file(dir: &Path, name: &str, value: &str) -> Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .context(|| format!("write {value:?} to {}", path.display()))
}

/// Reads `dir/name`, trimmed.
pub(crate) fn read_file(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    fs::read_to_string(&path)
        .map(|text| text.trim().to_string())
        .context(|| format!("read {}", path.display()))
}

/// Reads `dir/name`, trimmed; None when it does not exist.
pub(crate) fn read_optional(dir: &Path, name: &str) -> Result<Option<String>> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// mkdir -p of `dir` below `mountpoint`, recording what it made.
/// `before_child` runs on each existing directory before its child is
/// made (v2 uses it to enable controllers). A parent removed under us by
/// another container's cleanup is retried.
fn mkdir_all(
    mountpoint: &Path,
    dir: &Path,
    created: &mut Vec<PathBuf>,
    before_child: impl Fn(&Path),
) -> Result<()> {
    let relative = dir.strip_prefix(mountpoint).map_err(|_| {
        Error::msg(format!(
            "cgroup directory {} is not below its hierarchy {}",
            dir.display(),
            mountpoint.display()
        ))
    })?;
    let mut attempt = 0;
    'retry: loop {
        let mut current = mountpoint.to_path_buf();
        for component in relative.components() {
            before_child(&current);
            current.push(component);
            match fs::create_dir(&current) {
                Ok(()) => created.push(current.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 5 => {
                    attempt += 1;
                    continue 'retry;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("create cgroup directory {}", current.display()),
                        e,
                    ));
                }
            }
        }
        return Ok(());
    }
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) -> Result<()> {
    let procs = match read_optional(dir, "cgroup.procs")? {
        Some(procs) => procs,
        None => return Ok(()),
    };
    pids.extend(
        procs
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok()),
    );
    for child in subdirectories(dir)? {
        collect_pids(&child, pids)?;
    }
    Ok(())
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.context(|| format!("list {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Removes a container's cgroup directory and any cgroups nested in it,
/// retrying while the kernel still counts exiting processes.
fn remove_tree(dir: &Path) -> Result<()> {
    for child in subdirectories(dir)? {
        remove_tree(&child)?;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut delay = Duration::from_millis(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => {
                let mut pids = Vec::new();
                let _ = collect_pids(dir, &mut pids);
                let context = if pids.is_empty() {
                    format!("remove cgroup {}", dir.display())
                } else {
                    format!(
                        "remove cgroup {} (processes still in it: {pids:?})",
                        dir.display()
                    )
                };
                return Err(Error::io(context, e));
            }
        }
    }
}

fn send_signal(pid: i32, signal: i32) -> Result<()> {
    if pid <= 0 {
        // kill(2) with 0 or a negative pid signals process groups.
        return Ok(());
    }
    // SAFETY: kill(2) takes two integers and touches none of our memory.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == -1 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(Error::io(
                format!("send signal {signal} to pid {pid}"),
                error,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
90 31 0:32 /docker /mnt/memory\\040bind rw,relatime - cgroup cgroup rw,memory
";

    const V2: &str = "\
25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn mountinfo_parses_cgroup_mounts() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 8);
        assert_eq!(mounts[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(mounts[1].controllers, vec!["cpuset"]);
        assert_eq!(mounts[5].controllers, vec!["name=systemd"]);
        assert!(mounts[6].v2);
        assert_eq!(mounts[7].mountpoint, PathBuf::from("/mnt/memory bind"));
        assert_eq!(mounts[7].root, "/docker");
    }

    #[test]
    fn layout_hybrid_keeps_one_mount_per_hierarchy() {
        let layout = choose_layout(&parse_mountinfo(HYBRID)).unwrap();
        assert_eq!(layout.mode, Mode::Hybrid);
        assert_eq!(layout.v1.len(), 6);
        let memory: Vec<_> = layout
            .v1
            .iter()
            .filter(|(c, _)| c.contains(&"memory".to_string()))
            .collect();
        assert_eq!(memory.len(), 1);
        assert_eq!(memory[0].1, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            layout.unified,
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn layout_v2_and_v1_and_none() {
        let layout = choose_layout(&parse_mountinfo(V2)).unwrap();
        assert_eq!(layout.mode, Mode::V2);
        assert!(layout.v1.is_empty());
        assert_eq!(layout.unified, Some(PathBuf::from("/sys/fs/cgroup")));

        let v1_only: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            choose_layout(&parse_mountinfo(&v1_only)).unwrap().mode,
            Mode::V1
        );

        // v2 host that also mounts a named v1 hierarchy for old systemd.
        let v2_named =
            format!("{V2}40 25 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n");
        let layout = choose_layout(&parse_mountinfo(&v2_named)).unwrap();
        assert_eq!(layout.mode, Mode::V2);
        assert!(layout.v1.is_empty());

        let error = choose_layout(&[]).unwrap_err().to_string();
        assert!(error.contains("no cgroup"), "{error}");
    }

    #[test]
    fn resolve_paths() {
        let cgroup = Cgroup::resolve_from("abc", None, HYBRID).unwrap();
        assert_eq!(cgroup.path, "/keel/abc");
        assert_eq!(cgroup.mode, Mode::Hybrid);
        assert_eq!(
            cgroup.v1_dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/keel/abc"))
        );
        assert_eq!(
            cgroup.v1_dir("name=systemd"),
            Some(Path::new("/sys/fs/cgroup/systemd/keel/abc"))
        );
        assert_eq!(
            cgroup.unified_dir(),
            Some(Path::new("/sys/fs/cgroup/unified/keel/abc"))
        );
        assert_eq!(cgroup.created, None);
        assert!(!cgroup.is_unified());
        let sources = cgroup.mount_sources();
        assert_eq!(sources[0].0, "cpu,cpuacct");
        assert_eq!(sources.last().unwrap().0, "unified");

        let cgroup = Cgroup::resolve_from("abc", Some("/default/abc"), V2).unwrap();
        assert_eq!(
            cgroup.unified_dir(),
            Some(Path::new("/sys/fs/cgroup/default/abc"))
        );
        assert!(cgroup.is_unified());

        let cgroup = Cgroup::resolve_from("abc", Some("pod/abc"), V2).unwrap();
        assert_eq!(cgroup.path, "/pod/abc");

        // Never escapes the hierarchy.
        let cgroup = Cgroup::resolve_from("abc", Some("../../etc/x"), V2).unwrap();
        assert_eq!(
            cgroup.unified_dir(),
            Some(Path::new("/sys/fs/cgroup/etc/x"))
        );

        let error = Cgroup::resolve_from("abc", Some("system.slice:keel:abc"), V2)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("systemd cgroup driver is not supported"),
            "{error}"
        );
        assert!(Cgroup::resolve_from("abc", Some("/"), V2).is_err());
        assert!(Cgroup::resolve_from("abc", Some("/a/.."), V2).is_err());
    }

    #[test]
    fn state_round_trips() {
        let mut cgroup = Cgroup::resolve_from("abc", None, HYBRID).unwrap();
        cgroup.created = Some(vec![PathBuf::from("/sys/fs/cgroup/memory/keel/abc")]);
        let json = serde_json::to_string(&cgroup).unwrap();
        assert!(json.contains("\"mode\":\"hybrid\""), "{json}");
        let back: Cgroup = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cgroup);
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("a//b/./c/"), "/a/b/c");
        assert_eq!(clean_path("/../a"), "/a");
        assert_eq!(clean_path(""), "/");
    }

    fn rule(
        allow: bool,
        kind: Option<&str>,
        major: Option<i64>,
        minor: Option<i64>,
        access: Option<&str>,
    ) -> DeviceCgroup {
        DeviceCgroup {
            allow,
            kind: kind.map(str::to_string),
            major,
            minor,
            access: access.map(str::to_string),
        }
    }

    #[test]
    fn device_rules_format() {
        assert_eq!(
            device_rule(&rule(true, Some("c"), Some(1), Some(3), Some("rwm"))).unwrap(),
            "c 1:3 rwm"
        );
        assert_eq!(
            device_rule(&rule(true, Some("c"), Some(136), None, Some("rw"))).unwrap(),
            "c 136:* rw"
        );
        assert_eq!(
            device_rule(&rule(false, None, None, None, None)).unwrap(),
            "a *:* rwm"
        );
        assert_eq!(
            device_rule(&rule(true, Some("b"), Some(-1), Some(-1), Some("m"))).unwrap(),
            "b *:* m"
        );
        assert!(device_rule(&rule(true, Some("x"), None, None, None)).is_err());
        assert!(device_rule(&rule(true, Some("c"), Some(1), Some(3), Some("rwx"))).is_err());
    }

    #[test]
    fn device_writes_deny_all_first() {
        let rules = [
            rule(false, None, None, None, Some("rwm")),
            rule(true, Some("c"), Some(1), Some(3), Some("rwm")),
            rule(false, Some("c"), Some(5), Some(1), Some("w")),
        ];
        assert_eq!(
            device_writes(&rules).unwrap(),
            vec![
                ("devices.deny", "a".to_string()),
                ("devices.allow", "c 1:3 rwm".to_string()),
                ("devices.deny", "c 5:1 w".to_string()),
            ]
        );
        // A first rule that denies only some access is written as is.
        let rules = [rule(false, Some("a"), None, None, Some("r"))];
        assert_eq!(
            device_writes(&rules).unwrap(),
            vec![("devices.deny", "a *:* r".to_string())]
        );
    }

    #[test]
    fn small_helpers() {
        assert_eq!(pids_max(-1), "max");
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(50), "50");
        assert_eq!(check_page_size("2MB").unwrap(), "2MB");
        assert!(check_page_size("../x").is_err());
        assert!(check_page_size("2MB.rsvd").is_err());
        assert!(check_unified_key("memory.high").is_ok());
        assert!(check_unified_key("../memory.high").is_err());
        assert!(check_unified_key("cgroup").is_err());
        let device = serde_json::json!({"major": 8, "minor": 0, "weight": 300});
        assert_eq!(weight_device(&device).unwrap(), (8, 0, Some(300)));
        assert!(weight_device(&serde_json::json!({"weight": 3})).is_err());
        assert_eq!(unescape_mountinfo("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape_mountinfo("trail\\04"), "trail\\04");
    }

    // -----------------------------------------------------------------------
    // Tests on this machine's real cgroup filesystem (need root).

    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// Kills the child and removes the test's cgroup directories even when
    /// the test fails half-way.
    struct Guard {
        cgroup: Cgroup,
        child: Option<Child>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = self.cgroup.thaw();
            let _ = self.cgroup.remove();
            // Whatever remove skipped (e.g. if created was lost).
            for dir in self.cgroup.all_dirs().collect::<Vec<_>>() {
                let _ = fs::remove_dir(dir);
            }
            let top = self.cgroup.path.split('/').nth(1).unwrap_or("").to_string();
            if top.starts_with("keel-test-cgroups-") {
                for mountpoint in self
                    .cgroup
                    .v1
                    .iter()
                    .map(|h| &h.mountpoint)
                    .chain(self.cgroup.unified.iter().map(|u| &u.mountpoint))
                {
                    let _ = fs::remove_dir(mountpoint.join(&top));
                }
            }
        }
    }

    fn test_path(suffix: &str) -> String {
        format!(
            "/keel-test-cgroups-{}-{}{suffix}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root to create cgroups"
        );
    }

    fn spawn_sleep() -> Child {
        Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep for the cgroup test")
    }

    #[test]
    fn real_cgroup_lifecycle() {
        require_root();
        let path = test_path("");
        let mut guard = Guard {
            cgroup: Cgroup::resolve("test", Some(&path)).expect("resolve"),
            child: None,
        };
        guard.cgroup.create().expect("create");
        let cgroup = guard.cgroup.clone();
        for dir in cgroup.all_dirs() {
            assert!(dir.is_dir(), "{} was not created", dir.display());
        }
        assert_eq!(
            cgroup.created.as_ref().map(Vec::len),
            Some(cgroup.all_dirs().count())
        );

        let child = spawn_sleep();
        let pid = child.id() as i32;
        guard.child = Some(child);
        cgroup.add_pid(pid).expect("add_pid");

        let resources: Resources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 64 * 1024 * 1024},
            "pids": {"limit": 50}
        }))
        .expect("resources parse");
        cgroup.apply(&resources).expect("apply");
        let (memory_dir, memory_file) = match cgroup.mode {
            Mode::V2 => (cgroup.unified_dir().unwrap(), "memory.max"),
            _ => (cgroup.v1_dir("memory").unwrap(), "memory.limit_in_bytes"),
        };
        assert_eq!(read_file(memory_dir, memory_file).unwrap(), "67108864");
        let pids_dir = cgroup
            .v1_dir("pids")
            .or(cgroup.unified_dir())
            .expect("a pids directory");
        assert_eq!(read_file(pids_dir, "pids.max").unwrap(), "50");

        let pids = cgroup.pids().expect("pids");
        assert!(pids.contains(&pid), "{pid} not in {pids:?}");

        assert!(!cgroup.is_frozen().unwrap());
        cgroup.freeze().expect("freeze");
        assert!(cgroup.is_frozen().unwrap());
        cgroup.thaw().expect("thaw");
        assert!(!cgroup.is_frozen().unwrap());

        let stats = cgroup.stats().expect("stats");
        assert_eq!(stats.memory.usage.limit, 64 * 1024 * 1024);
        assert_eq!(stats.pids.limit, 50);
        assert!(stats.pids.current >= 1);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["memory"]["usage"]["limit"], 64 * 1024 * 1024);
        assert_eq!(cgroup.oom_kill_count(), 0);

        cgroup.signal_all(libc::SIGKILL).expect("signal_all");
        let status = guard.child.as_mut().unwrap().wait().expect("wait child");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        guard.child = None;

        cgroup.remove().expect("remove");
        for dir in cgroup.all_dirs() {
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
        // Removing again is fine.
        cgroup.remove().expect("second remove");
    }

    #[test]
    fn real_signal_all_without_cgroup_kill_and_nested_removal() {
        require_root();
        let path = test_path("/inner");
        let mut guard = Guard {
            cgroup: Cgroup::resolve("test", Some(&path)).expect("resolve"),
            child: None,
        };
        guard.cgroup.create().expect("create");
        let cgroup = guard.cgroup.clone();
        // Both the test's top directory and /inner were made by us.
        assert_eq!(
            cgroup.created.as_ref().map(Vec::len),
            Some(2 * cgroup.all_dirs().count())
        );
        let child = spawn_sleep();
        let pid = child.id() as i32;
        guard.child = Some(child);
        cgroup.add_pid(pid).expect("add_pid");

        // SIGTERM takes the freeze/signal/thaw path.
        cgroup.signal_all(libc::SIGTERM).expect("signal_all");
        let status = guard.child.as_mut().unwrap().wait().expect("wait child");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        guard.child = None;
        assert!(!cgroup.is_frozen().unwrap(), "left frozen after signal_all");

        cgroup.remove().expect("remove");
        for dir in cgroup.all_dirs() {
            assert!(!dir.exists(), "{} still exists", dir.display());
            // The ancestor stays for the next container, as with runc.
            let parent = dir.parent().unwrap();
            assert!(parent.is_dir(), "{} was removed", parent.display());
            fs::remove_dir(parent).expect("remove the test's parent cgroup");
        }
    }

    #[test]
    fn real_apply_v1_knobs() {
        require_root();
        let mut guard = Guard {
            cgroup: Cgroup::resolve("test", Some(&test_path(""))).expect("resolve"),
            child: None,
        };
        guard.cgroup.create().expect("create");
        let cgroup = guard.cgroup.clone();
        if cgroup.mode == Mode::V2 {
            // Covered by the fake-directory test in v2.rs.
            return;
        }
        let hugetlb = cgroup
            .v1_dir("hugetlb")
            .map(|dir| v1::hugetlb_sizes(dir, ".limit_in_bytes").unwrap())
            .and_then(|sizes| sizes.into_iter().find(|size| size == "2MB"));
        let mut value = serde_json::json!({
            "devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
            ],
            "cpu": {"shares": 512, "quota": 20000, "period": 50000},
            "memory": {"limit": 32 * 1024 * 1024, "reservation": 16 * 1024 * 1024},
            "pids": {"limit": -1},
            // Requested on every layout: skipped with a warning when
            // no v1 hugetlb hierarchy exists.
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
        });
        if cgroup
            .v1_dir("memory")
            .unwrap()
            .join("memory.memsw.limit_in_bytes")
            .exists()
        {
            value["memory"]["swap"] = serde_json::json!(64 * 1024 * 1024);
        }
        let resources: Resources = serde_json::from_value(value).expect("resources parse");
        cgroup.apply(&resources).expect("apply");

        let devices = read_file(cgroup.v1_dir("devices").unwrap(), "devices.list").unwrap();
        assert_eq!(devices, "c 1:3 rwm");
        let cpu = cgroup.v1_dir("cpu").unwrap();
        assert_eq!(read_file(cpu, "cpu.shares").unwrap(), "512");
        assert_eq!(read_file(cpu, "cpu.cfs_period_us").unwrap(), "50000");
        assert_eq!(read_file(cpu, "cpu.cfs_quota_us").unwrap(), "20000");
        let memory = cgroup.v1_dir("memory").unwrap();
        assert_eq!(
            read_file(memory, "memory.soft_limit_in_bytes").unwrap(),
            "16777216"
        );
        assert_eq!(
            read_file(cgroup.v1_dir("pids").unwrap(), "pids.max").unwrap(),
            "max"
        );
        if let (Some(dir), Some(size)) = (cgroup.v1_dir("hugetlb"), hugetlb) {
            let file = format!("hugetlb.{size}.limit_in_bytes");
            assert_eq!(read_file(dir, &file).unwrap(), "4194304");
        }

        // Unified keys on v1/hybrid: only existing v2 files are accepted.
        let resources: Resources =
            serde_json::from_value(serde_json::json!({"unified": {"memory.high": "1000000"}}))
                .unwrap();
        let error = cgroup.apply(&resources).unwrap_err().to_string();
        assert!(error.contains("memory.high"), "{error}");

        // Every write error names the file and the value.
        let resources: Resources =
            serde_json::from_value(serde_json::json!({"cpu": {"cpus": "999999"}})).unwrap();
        let error = cgroup.apply(&resources).unwrap_err().to_string();
        assert!(
            error.contains("cpuset.cpus") && error.contains("999999"),
            "{error}"
        );

        cgroup.remove().expect("remove");
        for dir in cgroup.all_dirs() {
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
    }
}
