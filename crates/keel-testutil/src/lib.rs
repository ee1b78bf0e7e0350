//! keel's shared test helpers (dev-only).
//!
//! Every integration test gets from here: a private temp root ([`TempRoot`]), an
//! offline busybox OCI bundle ([`BusyboxBundle`]), a way to drive a runtime
//! binary ([`Runtime`]) and guards that kill, delete, unmount and remove what the
//! test made even when it panics ([`ProcessGuard`], [`ContainerGuard`],
//! [`CgroupGuard`], [`MountGuard`], [`NetnsGuard`]). [`leaks`] is what the
//! `keel-leakcheck` binary runs after the suite.
//!
//! Everything that names a host object uses the prefix `keel-test`, so that the
//! leak check can find what a test left behind.
//!
//! Helpers panic with the reason when they cannot do their job: a test that
//! cannot set up its subject must fail, never pass without checking anything.
//!
//! A test in keel-runtime's `tests/`:
//!
//! ```ignore
//! use keel_testutil::{BusyboxBundle, Runtime, TempRoot, require_root, runtime_bin};
//!
//! #[test]
//! fn echo_runs() {
//!     require_root();
//!     let temp = TempRoot::new();
//!     let bundle = BusyboxBundle::create(temp.subdir("bundle"));
//!     let _cgroup = bundle.cgroup_guard(); // dropped after the container guard below
//!     let runtime = Runtime::with_temp_root(runtime_bin(env!("CARGO_BIN_EXE_keel-runtime")), &temp);
//!     let _container = runtime.guard(bundle.unique());
//!     let mut config = bundle.config_json();
//!     config["process"]["args"] = serde_json::json!(["echo", "hi"]);
//!     bundle.write_config(&config);
//!     let out = runtime.run_ok(["run", "--bundle", bundle.dir().to_str().unwrap(), bundle.unique()]);
//!     assert_eq!(out, "hi\n");
//! }
//! ```

use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The prefix of every host object (temp dir, cgroup, netns, container id) a test makes.
pub const PREFIX: &str = "keel-test";

/// Where Debian's busybox-static puts its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// A name unique on this machine for the life of the test process:
/// `keel-test-<pid>-<counter>-<micros>`.
pub fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000)
        .unwrap_or(0);
    format!("{PREFIX}-{}-{n}-{micros}", std::process::id())
}

/// A static helper binary scripts/setup builds for tests (`keel-init`,
/// `keel-test-echo`, ...): `<target>/<arch>-unknown-linux-gnu/debug/NAME`,
/// the target dir being `$CARGO_TARGET_DIR` or the one this test binary
/// was built in.
pub fn static_helper(name: &str) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // <target>/debug/deps/<test binary>
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })?;
    let path = target
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("debug")
        .join(name);
    path.is_file().then_some(path)
}

/// The runtime binary tests should drive: `$KEEL_RUNTIME_BIN` if set, else `default`
/// (inside keel-runtime's own tests: `env!("CARGO_BIN_EXE_keel-runtime")`).
pub fn runtime_bin(default: impl AsRef<Path>) -> PathBuf {
    match std::env::var_os("KEEL_RUNTIME_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => default.as_ref().to_path_buf(),
    }
}

/// True when the process runs as root; root tests call [`require_root`] instead of skipping.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Panics with a clear reason unless running as root (integration tests need it).
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (namespaces, mounts, cgroups); run the suite as root: ./scripts/test"
    );
}

// ---------------------------------------------------------------------------
// mountinfo

/// Parsing of `/proc/<pid>/mountinfo` and the order in which to unmount.
pub mod mountinfo {
    use std::path::{Path, PathBuf};

    /// One line of mountinfo (proc(5)).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Mount {
        pub id: u32,
        pub parent_id: u32,
        /// Path inside the filesystem that is mounted (the bind source).
        pub root: PathBuf,
        pub mount_point: PathBuf,
        pub options: String,
        pub fs_type: String,
        pub source: String,
        pub super_options: String,
    }

    /// Undoes the octal escapes (`\040` for space, `\011`, `\012`, `\134`) mountinfo uses.
    pub fn unescape(field: &str) -> String {
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

    /// Parses one mountinfo line; `None` if it is malformed.
    pub fn parse_line(line: &str) -> Option<Mount> {
        let (left, right) = line.split_once(" - ")?;
        let mut left = left.split(' ');
        let id = left.next()?.parse().ok()?;
        let parent_id = left.next()?.parse().ok()?;
        let _major_minor = left.next()?;
        let root = PathBuf::from(unescape(left.next()?));
        let mount_point = PathBuf::from(unescape(left.next()?));
        let options = left.next()?.to_string();
        // The rest of `left` are optional fields (shared:N, master:N, ...).
        let mut right = right.split(' ');
        let fs_type = right.next()?.to_string();
        let source = unescape(right.next()?);
        let super_options = right.next().unwrap_or("").to_string();
        Some(Mount {
            id,
            parent_id,
            root,
            mount_point,
            options,
            fs_type,
            source,
            super_options,
        })
    }

    /// Parses a whole mountinfo text, skipping malformed lines.
    pub fn parse(text: &str) -> Vec<Mount> {
        text.lines().filter_map(parse_line).collect()
    }

    /// Reads and parses `/proc/self/mountinfo`.
    pub fn read_self() -> std::io::Result<Vec<Mount>> {
        Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
    }

    /// Mount points at or below `dir`, in the order to unmount them: deepest path
    /// first, and among mounts stacked on the same path the most recent first.
    pub fn unmount_order(mounts: &[Mount], dir: &Path) -> Vec<PathBuf> {
        let mut below: Vec<(usize, usize, &PathBuf)> = mounts
            .iter()
            .enumerate()
            .filter(|(_, m)| m.mount_point.starts_with(dir))
            .map(|(index, m)| (m.mount_point.components().count(), index, &m.mount_point))
            .collect();
        // Deeper first; for equal depth, later lines (mounted later, on top) first.
        below.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        below.into_iter().map(|(_, _, p)| p.clone()).collect()
    }

    /// Mount points of every cgroup (v1) and cgroup2 hierarchy, without duplicates.
    pub fn cgroup_hierarchies(mounts: &[Mount]) -> Vec<&Mount> {
        let mut seen: Vec<&Path> = Vec::new();
        let mut out = Vec::new();
        for m in mounts {
            if (m.fs_type == "cgroup" || m.fs_type == "cgroup2")
                && !seen.contains(&m.mount_point.as_path())
            {
                seen.push(&m.mount_point);
                out.push(m);
            }
        }
        out
    }
}

/// Where the cgroup file of `controller` for `cgroups_path` is on this host:
/// in the v1 hierarchy of that controller if one is mounted (v1 and hybrid
/// hosts), else in cgroup2 (`v2` names the file there). Returns the path
/// and whether it is v1, so a test asserts the right file on every layout.
pub fn cgroup_file(cgroups_path: &str, controller: &str, v1: &str, v2: &str) -> (PathBuf, bool) {
    let mounts = mountinfo::read_self().expect("read mountinfo");
    let relative = cgroups_path.trim_start_matches('/');
    let hierarchies = mountinfo::cgroup_hierarchies(&mounts);
    for m in &hierarchies {
        if m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller) {
            return (m.mount_point.join(relative).join(v1), true);
        }
    }
    for m in &hierarchies {
        let controllers =
            fs::read_to_string(m.mount_point.join("cgroup.controllers")).unwrap_or_default();
        if m.fs_type == "cgroup2" && controllers.split_whitespace().any(|c| c == controller) {
            return (m.mount_point.join(relative).join(v2), false);
        }
    }
    panic!("no cgroup hierarchy with the {controller} controller is mounted")
}

/// Unmounts (lazily, `MNT_DETACH`) everything mounted at or below `dir` in this
/// mount namespace, deepest first. Returns the mount points it could not unmount.
pub fn unmount_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(mounts) = mountinfo::read_self() else {
        return Vec::new();
    };
    for mount_point in mountinfo::unmount_order(&mounts, dir) {
        // EINVAL when a detach of a parent already took it away: fine.
        let _ = nix::mount::umount2(&mount_point, nix::mount::MntFlags::MNT_DETACH);
    }
    match mountinfo::read_self() {
        Ok(after) => mountinfo::unmount_order(&after, dir),
        Err(_) => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// TempRoot

/// A private temp dir `/tmp/keel-test-XXXX` with `root/` (runtime state, `--root`)
/// and `runroot/`. On drop it unmounts anything below it, then removes it.
#[derive(Debug)]
pub struct TempRoot {
    path: PathBuf,
}

impl TempRoot {
    pub fn new() -> TempRoot {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}-"))
            .tempdir_in("/tmp")
            .expect("create a temp dir under /tmp");
        let path = dir.keep();
        for sub in ["root", "runroot"] {
            fs::create_dir_all(path.join(sub))
                .unwrap_or_else(|e| panic!("create {}: {e}", path.join(sub).display()));
        }
        TempRoot { path }
    }

    /// The temp dir itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The runtime's state dir (`--root`).
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// keel's runroot (sockets, locks, netns mounts).
    pub fn runroot(&self) -> PathBuf {
        self.path.join("runroot")
    }

    /// A fresh sub-directory (created) for e.g. a bundle.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        dir
    }
}

impl Default for TempRoot {
    fn default() -> Self {
        TempRoot::new()
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let left = unmount_below(&self.path);
        if !left.is_empty() {
            // Never recurse into a mounted filesystem: it may be a bind of a host dir.
            eprintln!(
                "keel-testutil: not removing {}: still mounted below it: {left:?}",
                self.path.display()
            );
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("keel-testutil: remove {}: {e}", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------
// BusyboxBundle

/// An OCI bundle whose rootfs is Debian's static busybox, made offline.
#[derive(Debug, Clone)]
pub struct BusyboxBundle {
    dir: PathBuf,
    rootfs: PathBuf,
    unique: String,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
keel:x:1000:1000:keel:/home/keel:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nkeel:x:1000:\nnobody:x:65534:\n";

impl BusyboxBundle {
    /// Makes `dir/rootfs` (busybox, one symlink per applet, /etc files, empty
    /// mount points) and `dir/config.json` from [`Self::config_json`].
    pub fn create(dir: impl AsRef<Path>) -> BusyboxBundle {
        Self::try_create(dir.as_ref()).unwrap_or_else(|e| {
            panic!(
                "make a busybox bundle in {}: {e} (is busybox-static installed? ./scripts/setup)",
                dir.as_ref().display()
            )
        })
    }

    fn try_create(dir: &Path) -> io::Result<BusyboxBundle> {
        fs::create_dir_all(dir)?;
        let dir = fs::canonicalize(dir)?;
        let rootfs = dir.join("rootfs");
        for sub in [
            "bin",
            "etc",
            "proc",
            "sys",
            "dev",
            "tmp",
            "root",
            "home/keel",
            "usr/bin",
            "var",
            "run",
        ] {
            fs::create_dir_all(rootfs.join(sub))?;
        }
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
        fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(rootfs.join("home/keel"), Some(1000), Some(1000))?;

        let busybox = rootfs.join("bin/busybox");
        fs::copy(HOST_BUSYBOX, &busybox)?;
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))?;
        let list = Command::new(HOST_BUSYBOX)
            .arg("--list")
            .stdin(Stdio::null())
            .output()?;
        if !list.status.success() {
            return Err(io::Error::other(format!(
                "{HOST_BUSYBOX} --list failed: {}",
                String::from_utf8_lossy(&list.stderr)
            )));
        }
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        symlink("/bin/busybox", rootfs.join("usr/bin/env"))?;

        fs::write(rootfs.join("etc/passwd"), PASSWD)?;
        fs::write(rootfs.join("etc/group"), GROUP)?;
        fs::write(rootfs.join("etc/hostname"), "keel\n")?;
        fs::write(
            rootfs.join("etc/hosts"),
            "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
        )?;

        let bundle = BusyboxBundle {
            dir,
            rootfs,
            unique: unique_name(),
        };
        bundle.write_config(&bundle.config_json());
        Ok(bundle)
    }

    /// The bundle directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The rootfs (absolute, as written in config.json).
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// `keel-test-<pid>-<n>-<micros>`: unique per bundle; a good container id.
    pub fn unique(&self) -> &str {
        &self.unique
    }

    /// The bundle's cgroupsPath: `/keel-test/<unique>`.
    pub fn cgroups_path(&self) -> String {
        format!("/{PREFIX}/{}", self.unique)
    }

    /// A default config like `runc spec`'s, but: no terminal, args `["true"]`,
    /// writable absolute root, NOFILE 1024, its own cgroupsPath.
    pub fn config_json(&self) -> Value {
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        json!({
            "ociVersion": "1.0.2-dev",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": ["true"],
                "env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"
                ],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps,
                    "effective": caps,
                    "permitted": caps,
                    "ambient": caps
                },
                "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
                "noNewPrivileges": true
            },
            "root": { "path": self.rootfs.to_string_lossy(), "readonly": false },
            "hostname": "keel",
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                  "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
                { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                  "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
                { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                  "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
                { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                  "options": ["nosuid", "noexec", "nodev"] },
                { "destination": "/sys", "type": "sysfs", "source": "sysfs",
                  "options": ["nosuid", "noexec", "nodev", "ro"] },
                { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                  "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
            ],
            "linux": {
                "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
                "cgroupsPath": self.cgroups_path(),
                "namespaces": [
                    { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                    { "type": "uts" }, { "type": "mount" }
                ],
                "maskedPaths": [
                    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                    "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
                ],
                "readonlyPaths": [
                    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
                ]
            }
        })
    }

    /// Writes `config` as the bundle's config.json.
    pub fn write_config(&self, config: &Value) {
        let path = self.dir.join("config.json");
        let text = serde_json::to_string_pretty(config).expect("serialize a serde_json::Value");
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Reads the bundle's config.json back.
    pub fn read_config(&self) -> Value {
        let path = self.dir.join("config.json");
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
    }

    /// A guard that removes this bundle's cgroup from every hierarchy on drop.
    pub fn cgroup_guard(&self) -> CgroupGuard {
        CgroupGuard(PathBuf::from(self.cgroups_path()))
    }
}

// ---------------------------------------------------------------------------
// Runtime

/// Runs a runtime binary with `--root <state dir>`.
///
/// Output goes to anonymous temp files, not pipes, so a command that leaves a
/// process holding its stdio (`create`, `run -d`) does not hang the test.
#[derive(Debug, Clone)]
pub struct Runtime {
    bin: PathBuf,
    root: PathBuf,
    timeout: Duration,
}

impl Runtime {
    /// `bin` with `--root root`.
    pub fn new(bin: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            bin: bin.into(),
            root: root.into(),
            timeout: Duration::from_secs(60),
        }
    }

    /// `bin` with `--root temp.root()`.
    pub fn with_temp_root(bin: impl Into<PathBuf>, temp: &TempRoot) -> Runtime {
        Runtime::new(bin, temp.root())
    }

    /// Changes how long one invocation may take before it is killed (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Runtime {
        self.timeout = timeout;
        self
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A `Command` for `bin --root <root> args...`, for tests that need their own stdio.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(&self.bin);
        command.arg("--root").arg(&self.root).args(args);
        command
    }

    /// Runs `bin --root <root> args...` with stdin from /dev/null; never panics on
    /// the runtime's failure. Panics only if it cannot be started.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = self.command(args);
        output_via_files(&mut command, self.timeout)
            .unwrap_or_else(|e| panic!("run {:?}: {e}", command))
    }

    /// Like [`Self::run`] but panics (with stdout and stderr) unless it exits 0;
    /// returns stdout.
    pub fn run_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let output = self.run(&args);
        if !output.status.success() {
            panic!(
                "{} --root {} {:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
                self.bin.display(),
                self.root.display(),
                args,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `state <id>` parsed, or `None` if the runtime says it fails (e.g. no such container).
    pub fn state(&self, id: &str) -> Option<Value> {
        let output = self.run(["state", id]);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// A guard that runs `delete --force id` on drop.
    pub fn guard(&self, id: impl Into<String>) -> ContainerGuard {
        ContainerGuard {
            runtime: self.clone(),
            id: id.into(),
        }
    }
}

/// Runs `command` with stdin from /dev/null and stdout/stderr into temp files,
/// killing it after `timeout`.
pub fn output_via_files(command: &mut Command, timeout: Duration) -> io::Result<Output> {
    let mut stdout = tempfile::tempfile()?;
    let mut stderr = tempfile::tempfile()?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()?;
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait()?;
            let mut out = read_all(&mut stderr)?;
            out.extend_from_slice(
                format!("\nkeel-testutil: killed after {timeout:?} (timeout)\n").as_bytes(),
            );
            return Ok(Output {
                status: ExitStatus::from_raw(status.into_raw()),
                stdout: read_all(&mut stdout)?,
                stderr: out,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Output {
        status,
        stdout: read_all(&mut stdout)?,
        stderr: read_all(&mut stderr)?,
    })
}

fn read_all(file: &mut fs::File) -> io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    file.rewind()?;
    file.read_to_end(&mut buffer)?;
    Ok(buffer)
}

// ---------------------------------------------------------------------------
// Guards

/// Kills (SIGKILL) and reaps a pid on drop. Reaping only works for a child of
/// this process; for other pids the kill is enough.
#[derive(Debug)]
pub struct ProcessGuard(pub i32);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.0 <= 1 || self.0 == std::process::id() as i32 {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // ECHILD if it is not our child: nothing to reap.
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}

/// Runs `delete --force <id>` on drop.
#[derive(Debug)]
pub struct ContainerGuard {
    pub runtime: Runtime,
    pub id: String,
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let output = self.runtime.run(["delete", "--force", self.id.as_str()]);
        if !output.status.success() {
            eprintln!(
                "keel-testutil: delete --force {}: {}",
                self.id,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
}

/// Unmounts (lazily) a path on drop.
#[derive(Debug)]
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes a cgroup path (e.g. `/keel-test/<unique>`, relative to each hierarchy's
/// root) from every cgroup and cgroup2 hierarchy on drop: sub-cgroups deepest
/// first, killing the processes found in each first. Then removes the parent if
/// it is named `keel-test*` and empty (best effort: busy while other tests use it).
#[derive(Debug)]
pub struct CgroupGuard(pub PathBuf);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let Ok(mounts) = mountinfo::read_self() else {
            return;
        };
        let relative = self.0.strip_prefix("/").unwrap_or(&self.0);
        if relative.as_os_str().is_empty() {
            return;
        }
        for hierarchy in mountinfo::cgroup_hierarchies(&mounts) {
            let dir = hierarchy.mount_point.join(relative);
            remove_cgroup_tree(&dir);
            // A test's own `keel-test-<unique>` parents go with it. The shared parent
            // (`/keel-test`) stays: removing it when it looks empty races with a
            // runtime making another test's cgroup below it (mkdir of the parent, then
            // of the child, ENOENT in between). The leak check removes it after the
            // suite.
            let mut parent = relative.parent();
            while let Some(ancestor) = parent {
                let own = ancestor.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(PREFIX) && n != PREFIX
                });
                if !own || fs::remove_dir(hierarchy.mount_point.join(ancestor)).is_err() {
                    break;
                }
                parent = ancestor.parent();
            }
        }
    }
}

/// `path` (a cgroupsPath) resolved in every mounted cgroup hierarchy where it exists.
pub fn cgroup_dirs(path: &Path) -> Vec<PathBuf> {
    let Ok(mounts) = mountinfo::read_self() else {
        return Vec::new();
    };
    let relative = path.strip_prefix("/").unwrap_or(path);
    mountinfo::cgroup_hierarchies(&mounts)
        .into_iter()
        .map(|m| m.mount_point.join(relative))
        .filter(|dir| !relative.as_os_str().is_empty() && dir.is_dir())
        .collect()
}

/// Kills the processes in `dir` and its sub-cgroups and removes them, deepest first.
pub fn remove_cgroup_tree(dir: &Path) {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let me = std::process::id().to_string();
    for dir in dirs {
        for attempt in 0..200 {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<&str> = procs.lines().filter(|p| *p != me).collect();
            for pid in &pids {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            match fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => {
                    if attempt == 199 {
                        eprintln!("keel-testutil: rmdir {}: {e}", dir.display());
                    }
                    // A frozen cgroup must thaw for SIGKILL to land (v1 freezer).
                    let _ = fs::write(dir.join("freezer.state"), "THAWED");
                    let _ = fs::write(dir.join("cgroup.freeze"), "0");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

/// A network namespace `keel-test-<unique>` made with `ip netns add`; deleted on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    pub fn new() -> NetnsGuard {
        let name = unique_name();
        let output = Command::new("ip")
            .args(["netns", "add", &name])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run ip netns add {name}: {e} (is iproute2 installed?)"));
        assert!(
            output.status.success(),
            "ip netns add {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        NetnsGuard { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the path to put in a config's network namespace.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Makes `command` run inside the namespace (only its network
    /// namespace changes: mounts, /sys and cgroups stay the host's, unlike
    /// `ip netns exec`).
    pub fn enter<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let file = fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        // SAFETY: setns is async-signal-safe; the fd is kept open by the
        // closure (it is closed on exec: O_CLOEXEC).
        unsafe {
            command.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
    }

    /// Runs a program inside the namespace; its output (panics if it
    /// cannot be run).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null());
        self.enter(&mut command)
            .output()
            .unwrap_or_else(|e| panic!("run {program} in {}: {e}", self.name))
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens stay
    /// there).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let file = fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns of this new thread only.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("the thread in the namespace panicked")
        })
    }
}

impl Default for NetnsGuard {
    fn default() -> Self {
        NetnsGuard::new()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

// ---------------------------------------------------------------------------
// Leak check

/// What `keel-leakcheck` looks for after the suite.
pub mod leaks {
    use super::{PREFIX, mountinfo};
    use std::fs;
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// The marker of a test's temp paths.
    pub const PATH_MARKER: &str = "/keel-test-";

    /// One thing left behind.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Leak {
        pub kind: &'static str,
        pub what: String,
    }

    /// Mounts whose mount point contains `/keel-test-`.
    pub fn mounts(all: &[mountinfo::Mount]) -> Vec<Leak> {
        all.iter()
            .filter(|m| m.mount_point.to_string_lossy().contains(PATH_MARKER))
            .map(|m| Leak {
                kind: "mount",
                what: format!(
                    "{} ({} from {})",
                    m.mount_point.display(),
                    m.fs_type,
                    m.source
                ),
            })
            .collect()
    }

    /// Processes whose cwd, exe or cmdline mention `/keel-test-`, or whose comm is
    /// `keel-runtime`. Zombies are returned apart: they hold nothing but a pid
    /// and wait for their parent (PID 1 here reaps slowly).
    pub fn processes() -> (Vec<Leak>, Vec<Leak>) {
        let me = std::process::id();
        let mut live = Vec::new();
        let mut zombies = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return (live, zombies);
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let dir = entry.path();
            let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let comm = comm.trim_end();
            let cwd = link(&dir.join("cwd"));
            let exe = link(&dir.join("exe"));
            let cmdline = fs::read(dir.join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let cmdline = cmdline.trim_end();
            let reason = if comm == "keel-runtime" {
                Some("comm keel-runtime".to_string())
            } else if cwd.contains(PATH_MARKER) {
                Some(format!("cwd {cwd}"))
            } else if exe.contains(PATH_MARKER) {
                Some(format!("exe {exe}"))
            } else if cmdline.contains(PATH_MARKER) {
                Some("cmdline".to_string())
            } else {
                None
            };
            let Some(reason) = reason else { continue };
            // Our own ancestors (a shell running the leak check) are not leaks.
            if is_ancestor_of_self(pid) {
                continue;
            }
            let leak = Leak {
                kind: "process",
                what: format!("pid {pid} {comm} [{reason}]: {cmdline}"),
            };
            if state(&dir) == Some('Z') {
                zombies.push(leak);
            } else {
                live.push(leak);
            }
        }
        (live, zombies)
    }

    fn link(path: &Path) -> String {
        fs::read_link(path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn state(proc_dir: &Path) -> Option<char> {
        let stat = fs::read_to_string(proc_dir.join("stat")).ok()?;
        // "pid (comm) S ..." — comm may contain spaces and parentheses.
        let after = &stat[stat.rfind(')')? + 1..];
        after.trim_start().chars().next()
    }

    fn parent_of(pid: u32) -> Option<u32> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(1)?.parse().ok()
    }

    fn is_ancestor_of_self(pid: u32) -> bool {
        let mut current = std::process::id();
        for _ in 0..64 {
            match parent_of(current) {
                Some(parent) if parent == pid => return true,
                Some(parent) if parent > 1 => current = parent,
                _ => return false,
            }
        }
        false
    }

    /// Cgroup directories named `keel-test*` at the top of any hierarchy or one level below.
    pub fn cgroups(all: &[mountinfo::Mount]) -> Vec<Leak> {
        let mut out = Vec::new();
        for hierarchy in mountinfo::cgroup_hierarchies(all) {
            let Ok(top) = fs::read_dir(&hierarchy.mount_point) else {
                continue;
            };
            for entry in top.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let path = entry.path();
                // The tests' shared parent, empty: scaffolding, removed now.
                if entry.file_name().to_string_lossy() == PREFIX && fs::remove_dir(&path).is_ok() {
                    continue;
                }
                if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                    out.push(cgroup_leak(&path));
                    continue;
                }
                let Ok(below) = fs::read_dir(&path) else {
                    continue;
                };
                for entry in below.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir())
                        && entry.file_name().to_string_lossy().starts_with(PREFIX)
                    {
                        out.push(cgroup_leak(&entry.path()));
                    }
                }
            }
        }
        out
    }

    fn cgroup_leak(path: &Path) -> Leak {
        let mut children = Vec::new();
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    children.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        let procs: Vec<&str> = procs.lines().collect();
        Leak {
            kind: "cgroup",
            what: format!(
                "{} (sub-cgroups: {children:?}, pids: {procs:?})",
                path.display()
            ),
        }
    }

    /// Network namespaces from `ip netns list` whose name starts with
    /// `keel-test`, and the `cni-*` ones containerd's CRI plugin makes for
    /// pods (the CRI tests' pods; this machine runs no Kubernetes of its
    /// own).
    pub fn netns() -> Vec<Leak> {
        let Ok(output) = Command::new("ip")
            .args(["netns", "list"])
            .stdin(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with(PREFIX) || name.starts_with("cni-"))
            .map(|name| Leak {
                kind: "netns",
                what: name.to_string(),
            })
            .collect()
    }

    /// nftables tables in the host's namespace whose name starts with `keel` (if `nft` is installed).
    pub fn nftables() -> Vec<Leak> {
        let Ok(output) = Command::new("nft")
            .args(["list", "tables"])
            .stdin(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        parse_nft_tables(&String::from_utf8_lossy(&output.stdout))
    }

    /// `table <family> <name>` lines whose name starts with `keel`.
    pub fn parse_nft_tables(text: &str) -> Vec<Leak> {
        text.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next()? == "table").then_some(())?;
                let family = words.next()?;
                let name = words.next()?;
                name.starts_with("keel").then(|| Leak {
                    kind: "nftables",
                    what: format!("table {family} {name}"),
                })
            })
            .collect()
    }

    /// Links in the host's namespace that only keel makes (its default
    /// bridge `keel0`, the tests' `keeltest*` bridges): the network tests
    /// make theirs in namespaces of their own.
    pub fn links() -> Vec<Leak> {
        let Ok(entries) = fs::read_dir("/sys/class/net") else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name == "keel0" || name.starts_with("keeltest"))
            .map(|name| Leak {
                kind: "link",
                what: name,
            })
            .collect()
    }

    /// Everything above; zombies apart.
    pub fn find() -> (Vec<Leak>, Vec<Leak>) {
        let all = mountinfo::read_self().unwrap_or_default();
        let mut leaks = mounts(&all);
        let (live, zombies) = processes();
        leaks.extend(live);
        leaks.extend(cgroups(&all));
        leaks.extend(netns());
        leaks.extend(nftables());
        leaks.extend(links());
        (leaks, zombies)
    }
}

// ---------------------------------------------------------------------------
// Peers: real container engines (containerd, dockerd, podman) in a temp dir

pub mod peers;
pub mod proxy;

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw
40 22 0:40 / /tmp/keel-test-a rw - tmpfs tmpfs rw
41 40 0:41 / /tmp/keel-test-a/b/c rw - tmpfs tmpfs rw
42 40 0:42 / /tmp/keel-test-a/b rw - tmpfs tmpfs rw
43 42 0:43 / /tmp/keel-test-a/b rw - proc proc rw
44 22 0:44 /x /tmp/keel-test-ab rw - tmpfs tmpfs rw
45 22 0:45 / /tmp/with\\040space rw master:3 - tmpfs none rw
";

    #[test]
    fn parses_mountinfo_fields() {
        let mounts = mountinfo::parse(SAMPLE);
        assert_eq!(mounts.len(), 10);
        let cpu = &mounts[2];
        assert_eq!(cpu.id, 31);
        assert_eq!(cpu.parent_id, 30);
        assert_eq!(cpu.root, Path::new("/"));
        assert_eq!(cpu.mount_point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(cpu.fs_type, "cgroup");
        assert_eq!(cpu.source, "cgroup");
        assert_eq!(cpu.super_options, "rw,cpu");
        assert_eq!(mounts[8].root, Path::new("/x"));
    }

    #[test]
    fn unescapes_octal() {
        let mounts = mountinfo::parse(SAMPLE);
        assert_eq!(mounts[9].mount_point, Path::new("/tmp/with space"));
        assert_eq!(mountinfo::unescape("a\\011b\\134c\\012"), "a\tb\\c\n");
        assert_eq!(mountinfo::unescape("trailing\\04"), "trailing\\04");
        assert_eq!(mountinfo::unescape("\\999"), "\\999");
    }

    #[test]
    fn skips_malformed_lines() {
        assert!(mountinfo::parse_line("garbage").is_none());
        assert!(mountinfo::parse_line("1 2 3 / /x rw - tmpfs t").is_some());
        assert!(mountinfo::parse_line("x 2 3 / /x rw - tmpfs t rw").is_none());
        assert_eq!(mountinfo::parse("\n\ngarbage\n").len(), 0);
    }

    #[test]
    fn unmount_order_is_deepest_then_latest_first_and_only_below() {
        let mounts = mountinfo::parse(SAMPLE);
        let order = mountinfo::unmount_order(&mounts, Path::new("/tmp/keel-test-a"));
        let order: Vec<&str> = order.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            order,
            [
                "/tmp/keel-test-a/b/c",
                "/tmp/keel-test-a/b", // proc, stacked on top of the tmpfs
                "/tmp/keel-test-a/b",
                "/tmp/keel-test-a",
            ]
        );
        // /tmp/keel-test-ab is not below /tmp/keel-test-a (component-wise).
        assert!(!order.contains(&"/tmp/keel-test-ab"));
    }

    #[test]
    fn finds_cgroup_hierarchies_once() {
        let mut text = SAMPLE.to_string();
        text.push_str("50 31 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
        let mounts = mountinfo::parse(&text);
        let hierarchies: Vec<_> = mountinfo::cgroup_hierarchies(&mounts)
            .into_iter()
            .map(|m| m.mount_point.clone())
            .collect();
        assert_eq!(
            hierarchies,
            [
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    #[test]
    fn leak_check_reports_marked_mounts_only() {
        let mounts = mountinfo::parse(SAMPLE);
        let found = leaks::mounts(&mounts);
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|l| l.what.contains("/keel-test-")));
    }

    #[test]
    fn leak_check_reads_nft_tables() {
        let found =
            leaks::parse_nft_tables("table inet filter\ntable ip keel-test-1\ntable ip6 keel\n");
        let found: Vec<String> = found.into_iter().map(|l| l.what).collect();
        assert_eq!(found, ["table ip keel-test-1", "table ip6 keel"]);
    }

    #[test]
    fn unique_names_differ_and_carry_the_prefix() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with("keel-test-"));
    }

    #[test]
    fn config_has_absolute_rootfs_and_own_cgroup() {
        let bundle = BusyboxBundle {
            dir: PathBuf::from("/tmp/keel-test-x/bundle"),
            rootfs: PathBuf::from("/tmp/keel-test-x/bundle/rootfs"),
            unique: "keel-test-1-2-3".into(),
        };
        let config = bundle.config_json();
        assert_eq!(config["root"]["path"], "/tmp/keel-test-x/bundle/rootfs");
        assert_eq!(config["root"]["readonly"], false);
        assert_eq!(config["process"]["terminal"], false);
        assert_eq!(config["process"]["args"], json!(["true"]));
        assert_eq!(config["linux"]["cgroupsPath"], "/keel-test/keel-test-1-2-3");
        assert_eq!(config["process"]["rlimits"][0]["hard"], 1024);
        let namespaces: Vec<&str> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(namespaces, ["pid", "network", "ipc", "uts", "mount"]);
    }

    #[test]
    fn output_via_files_does_not_wait_for_detached_holders() {
        // The grandchild keeps stdout open; a pipe would block until it ends.
        // It is still alive when the output is back: nothing waited for it.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("holder");
        let output = output_via_files(
            Command::new("sh").args([
                "-c",
                &format!(
                    "echo hi; sleep 60 & echo $! > {}; exit 3",
                    pid_file.display()
                ),
            ]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n");
        let holder: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let alive = Path::new(&format!("/proc/{holder}")).exists();
        // SAFETY: killing the sleep this test started, by its pid.
        unsafe { libc::kill(holder, libc::SIGKILL) };
        assert!(alive, "the output came back only after the holder ended");
    }

    #[test]
    fn bundle_on_disk_as_root() {
        require_root();
        let temp = TempRoot::new();
        assert!(temp.path().starts_with("/tmp"));
        assert!(temp.root().is_dir() && temp.runroot().is_dir());
        let bundle = BusyboxBundle::create(temp.path().join("bundle"));
        let sh = bundle.rootfs().join("bin/sh");
        let meta = fs::symlink_metadata(&sh).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "{} is not a symlink",
            sh.display()
        );
        assert_eq!(fs::read_link(&sh).unwrap(), Path::new("busybox"));
        assert!(bundle.rootfs().join("bin/busybox").is_file());
        let config = bundle.read_config();
        assert_eq!(config["root"]["path"], bundle.rootfs().to_str().unwrap());
        assert!(Path::new(config["root"]["path"].as_str().unwrap()).is_absolute());
        let passwd = fs::read_to_string(bundle.rootfs().join("etc/passwd")).unwrap();
        assert!(passwd.contains("keel:x:1000:1000:"));
        assert!(passwd.contains("nobody:x:65534:65534:"));
        let path = temp.path().to_path_buf();
        drop(temp);
        assert!(!path.exists());
    }
}
