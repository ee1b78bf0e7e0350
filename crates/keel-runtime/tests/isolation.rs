//! Isolation as a user sees it: each test runs a busybox container in the
//! foreground with a shell command and checks, from INSIDE the container, one
//! feature of the OCI runtime spec (namespaces, rootfs, mounts, /dev, process,
//! seccomp, cgroups, terminal) plus the CVE-2019-5736 protection.
//!
//! Every test has its own temp root, bundle and container id, and guards that
//! delete the container and its cgroup even when the test fails.

use std::fs;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use keel_testutil::{
    BusyboxBundle, CgroupGuard, ContainerGuard, MountGuard, NetnsGuard, Runtime, TempRoot,
    mountinfo, output_via_files, require_root, runtime_bin,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// helpers

/// One container's world. Fields drop in order: the container first, then its
/// cgroup, then the temp dir holding the bundle.
struct Ctx {
    container: ContainerGuard,
    _cgroup: CgroupGuard,
    bundle: BusyboxBundle,
    runtime: Runtime,
    temp: TempRoot,
}

impl Ctx {
    fn new() -> Ctx {
        require_root();
        let temp = TempRoot::new();
        let bundle = BusyboxBundle::create(temp.subdir("bundle"));
        let runtime =
            Runtime::with_temp_root(runtime_bin(env!("CARGO_BIN_EXE_keel-runtime")), &temp);
        let cgroup = bundle.cgroup_guard();
        let container = runtime.guard(bundle.unique());
        Ctx {
            container,
            _cgroup: cgroup,
            bundle,
            runtime,
            temp,
        }
    }

    fn id(&self) -> &str {
        &self.container.id
    }

    fn dir(&self) -> &str {
        self.bundle.dir().to_str().expect("bundle path is UTF-8")
    }

    fn rootfs(&self) -> &Path {
        self.bundle.rootfs()
    }

    fn config(&self) -> Value {
        self.bundle.config_json()
    }

    /// Writes `config` with args `sh -c script`.
    fn write_script(&self, config: &Value, script: &str) {
        let mut config = config.clone();
        config["process"]["args"] = json!(["sh", "-c", script]);
        self.bundle.write_config(&config);
    }

    /// The args for `run [flags] --bundle B ID`.
    fn run_args(&self, flags: &[&str]) -> Vec<String> {
        let mut args = vec!["run".to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend(["--bundle".into(), self.dir().into(), self.id().into()]);
        args
    }

    /// `run [flags]` of `sh -c script` in the foreground.
    fn run_with(&self, config: &Value, script: &str, flags: &[&str]) -> Output {
        self.write_script(config, script);
        self.runtime.run(self.run_args(flags))
    }

    fn run(&self, config: &Value, script: &str) -> Output {
        self.run_with(config, script, &[])
    }

    /// Like [`Self::run`] but the container must exit 0; returns its stdout.
    fn run_ok(&self, config: &Value, script: &str) -> String {
        let out = self.run(config, script);
        assert!(
            out.status.success(),
            "container `{script}` failed: {}",
            show(&out)
        );
        stdout(&out)
    }

    /// `create` (init waits for `start`); returns the init's host pid.
    fn create(&self, config: &Value, script: &str, flags: &[&str]) -> i32 {
        self.write_script(config, script);
        let mut args = vec!["create".to_string()];
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend(["--bundle".into(), self.dir().into(), self.id().into()]);
        let out = self.runtime.run(&args);
        assert!(out.status.success(), "create failed: {}", show(&out));
        let state = self
            .runtime
            .state(self.id())
            .expect("state of a created container");
        assert_eq!(state["status"], "created", "state: {state}");
        state["pid"].as_i64().expect("state has a pid") as i32
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `/proc/self/ns/<kind>` of the test process, e.g. `net:[4026531840]`.
fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{kind}: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn push(config: &mut Value, pointer: &str, item: Value) {
    config
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("config has no array at {pointer}"))
        .push(item);
}

/// The value of the `Name:` line in a /proc/<pid>/status text.
fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .unwrap_or_else(|| panic!("no {name}: line in\n{status}"))
        .trim()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "SCMP_ARCH_X86_64",
        "aarch64" => "SCMP_ARCH_AARCH64",
        other => panic!("no seccomp arch name for {other} in this test"),
    }
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Waits until `path` contains `needle` (a container's output file).
fn wait_for_text(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} did not appear in {} within {timeout:?}; it has: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a spawned child, killing it after `timeout`.
fn wait_child(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the runtime") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the runtime did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// namespaces

#[test]
fn pid_namespace_shell_is_pid_1_and_sees_only_its_processes() {
    let ctx = Ctx::new();
    let out = ctx.run_ok(&ctx.config(), "echo $$; ps -o pid,comm");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "output: {out}");
    assert!(
        lines.next().is_some_and(|h| h.contains("PID")),
        "ps header: {out}"
    );
    let rows: Vec<(u32, &str)> = lines
        .map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next().and_then(|p| p.parse().ok());
            (
                pid.unwrap_or_else(|| panic!("ps row {l:?}")),
                f.next().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        rows.len() <= 2 && rows.iter().any(|(_, c)| *c == "ps"),
        "ps shows more than the container's processes: {out}"
    );
    for (pid, comm) in &rows {
        assert!(*pid < 10 && ["sh", "ps"].contains(comm), "ps: {out}");
    }
    assert_ne!(
        ctx.run_ok(&ctx.config(), "readlink /proc/self/ns/pid")
            .trim(),
        host_ns("pid")
    );
}

#[test]
fn uts_namespace_has_hostname_and_domainname_from_config() {
    let ctx = Ctx::new();
    let host_name = nix::unistd::gethostname().unwrap();
    let mut config = ctx.config();
    config["hostname"] = json!("keel-iso");
    config["domainname"] = json!("iso.keel.example");
    let out = ctx.run_ok(
        &config,
        "hostname; cat /proc/sys/kernel/domainname; readlink /proc/self/ns/uts",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..2],
        ["keel-iso", "iso.keel.example"],
        "output: {out}"
    );
    assert_ne!(lines[2], host_ns("uts"));
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name);
}

/// A pod's containers join the sandbox's UTS namespace by path and name
/// the pod's hostname: it is set in the joined namespace (runc's way).
#[test]
fn a_joined_uts_namespace_takes_the_hostname() {
    let ctx = Ctx::new();
    let host_name = nix::unistd::gethostname().unwrap();
    let mut holder = std::process::Command::new("unshare")
        .args(["--uts", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let path = format!("/proc/{}/ns/uts", holder.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_link(&path).is_ok_and(|l| l.to_string_lossy() == host_ns("uts"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut config = ctx.config();
    config["hostname"] = json!("pod-host");
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "uts" {
            ns["path"] = json!(path);
        }
    }
    let out = ctx.run_ok(&config, "hostname; readlink /proc/self/ns/uts");
    let inside = fs::read_link(&path).unwrap();
    assert_eq!(
        out,
        format!("pod-host\n{}\n", inside.to_string_lossy()),
        "output: {out}"
    );
    let holder_sees = std::process::Command::new("nsenter")
        .args(["--uts", "-t", &holder.id().to_string(), "hostname"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&holder_sees.stdout), "pod-host\n");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(nix::unistd::gethostname().unwrap(), host_name);
    // Without a UTS namespace of its own, a hostname is still refused.
    let mut config = ctx.config();
    config["hostname"] = json!("pod-host");
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|ns| ns["type"] != "uts");
    let out = ctx.run(&config, "hostname");
    assert!(!out.status.success());
    assert!(
        show(&out).contains("unable to set hostname without a private UTS namespace"),
        "{}",
        show(&out)
    );
}

/// A SysV shared memory segment removed on drop.
struct Shm(i32);

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID on a segment this test made.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

#[test]
fn ipc_namespace_hides_the_hosts_sysv_objects() {
    let ctx = Ctx::new();
    let key = 0x6b65_0000 | (std::process::id() as i32 & 0xffff);
    // SAFETY: shmget with plain integer arguments.
    let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
    let _shm = Shm(id);
    let script = "cat /proc/sysvipc/shm; readlink /proc/self/ns/ipc";
    let key_field = key.to_string();
    let has_key = |text: &str| {
        text.lines()
            .any(|l| l.split_whitespace().next() == Some(key_field.as_str()))
    };

    let inside = ctx.run_ok(&ctx.config(), script);
    assert!(!has_key(&inside), "the host's segment is visible: {inside}");
    assert_ne!(inside.lines().last().unwrap(), host_ns("ipc"));

    // Without an ipc namespace the container shares the host's.
    let mut config = ctx.config();
    config["linux"]["namespaces"] = json!([{ "type": "pid" }, { "type": "mount" }]);
    config.as_object_mut().unwrap().remove("hostname");
    let shared = ctx.run_ok(&config, script);
    assert!(has_key(&shared), "no host segment {key} in: {shared}");
    assert_eq!(shared.lines().last().unwrap(), host_ns("ipc"));
}

#[test]
fn network_namespace_has_only_lo() {
    let ctx = Ctx::new();
    let out = ctx.run_ok(&ctx.config(), "cat /proc/net/dev");
    let interfaces: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .collect();
    assert_eq!(interfaces, ["lo"], "/proc/net/dev: {out}");
    assert_ne!(
        ctx.run_ok(&ctx.config(), "readlink /proc/self/ns/net")
            .trim(),
        host_ns("net")
    );
}

#[test]
fn mount_namespace_keeps_container_mounts_off_the_host() {
    let ctx = Ctx::new();
    fs::create_dir_all(ctx.rootfs().join("mnt")).unwrap();
    let mut config = ctx.config();
    push(
        &mut config,
        "/process/capabilities/bounding",
        json!("CAP_SYS_ADMIN"),
    );
    push(
        &mut config,
        "/process/capabilities/effective",
        json!("CAP_SYS_ADMIN"),
    );
    push(
        &mut config,
        "/process/capabilities/permitted",
        json!("CAP_SYS_ADMIN"),
    );
    let out = ctx.run_ok(
        &config,
        "mount -t tmpfs keel-inside /mnt && touch /mnt/x && grep -c keel-inside /proc/self/mountinfo; \
         readlink /proc/self/ns/mnt",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "output: {out}");
    assert_ne!(lines[1], host_ns("mnt"));
    let host = mountinfo::read_self().unwrap();
    assert!(
        !host
            .iter()
            .any(|m| m.source == "keel-inside" || m.mount_point.starts_with(ctx.rootfs())),
        "a container mount reached the host: {host:?}"
    );
    assert!(!ctx.rootfs().join("mnt/x").exists());
}

#[test]
fn cgroup_namespace_shows_root_paths() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    push(
        &mut config,
        "/linux/namespaces",
        json!({ "type": "cgroup" }),
    );
    let out = ctx.run_ok(
        &config,
        "cat /proc/self/cgroup; readlink /proc/self/ns/cgroup",
    );
    let mut lines: Vec<&str> = out.lines().collect();
    let ns = lines.pop().unwrap();
    assert_ne!(ns, host_ns("cgroup"));
    assert!(!lines.is_empty(), "output: {out}");
    for line in lines {
        assert!(line.ends_with(":/"), "not a root path: {line:?} in\n{out}");
    }
    // Without a cgroup namespace the container sees its real path.
    let plain = ctx.run_ok(&ctx.config(), "cat /proc/self/cgroup");
    assert!(
        plain.contains(&ctx.bundle.cgroups_path()),
        "no {} in {plain}",
        ctx.bundle.cgroups_path()
    );
}

#[test]
fn time_namespace_applies_boottime_offset() {
    let ctx = Ctx::new();
    assert!(
        Path::new("/proc/self/ns/time").exists(),
        "this kernel has no time namespaces (CONFIG_TIME_NS); keel supports them"
    );
    let mut config = ctx.config();
    push(&mut config, "/linux/namespaces", json!({ "type": "time" }));
    config["linux"]["timeOffsets"] = json!({
        "boottime": { "secs": 1_000_000, "nanosecs": 0 },
        "monotonic": { "secs": 2_000_000, "nanosecs": 0 }
    });
    let out = ctx.run_ok(&config, "cat /proc/uptime; readlink /proc/self/ns/time");
    let mut lines = out.lines();
    let uptime: f64 = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in {out}"));
    let host_uptime: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uptime > 1_000_000.0 && uptime < host_uptime + 1_000_000.0 + 600.0,
        "uptime inside {uptime}, host {host_uptime}"
    );
    assert_ne!(lines.next().unwrap(), host_ns("time"));
}

#[test]
fn user_namespace_maps_root_to_100000() {
    let ctx = Ctx::new();
    // The container's root is host uid 100000: it must reach and own its files.
    chmod(ctx.temp.path(), 0o755);
    let status = std::process::Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(ctx.rootfs())
        .status()
        .unwrap();
    assert!(status.success(), "chown the rootfs copy");
    let shared = ctx.temp.subdir("shared");
    std::os::unix::fs::chown(&shared, Some(100_000), Some(100_000)).unwrap();

    let mut config = ctx.config();
    push(&mut config, "/linux/namespaces", json!({ "type": "user" }));
    let map = json!([{ "containerID": 0, "hostID": 100_000, "size": 65_536 }]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    push(
        &mut config,
        "/mounts",
        json!({ "destination": "/shared", "type": "bind", "source": shared, "options": ["rbind", "rw"] }),
    );
    let out = ctx.run_ok(
        &config,
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u:%g /bin/busybox; \
         touch /shared/made-inside && echo touched; readlink /proc/self/ns/user",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "output: {out}");
    for map in &lines[..2] {
        let fields: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(fields, ["0", "100000", "65536"], "map line {map:?}");
    }
    assert_eq!(lines[2..5], ["0", "0:0", "touched"], "output: {out}");
    assert_ne!(lines[5], host_ns("user"));
    let meta = fs::metadata(shared.join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000));
}

#[test]
fn joins_an_existing_network_namespace_by_path() {
    let ctx = Ctx::new();
    let netns = NetnsGuard::new();
    let add = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns.name(),
            "ip",
            "link",
            "add",
            "keel0",
            "type",
            "bridge",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "add a marker link in the netns: {}",
        show(&add)
    );
    let mut config = ctx.config();
    let path = netns.path();
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = json!(path);
        }
    }
    let out = ctx.run_ok(&config, "cat /proc/net/dev; readlink /proc/self/ns/net");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("keel0:")),
        "keel0 not seen: {out}"
    );
    let target = fs::metadata(&path).unwrap();
    let inside = out.lines().last().unwrap();
    assert_eq!(inside, format!("net:[{}]", target.ino()), "output: {out}");
}

// ---------------------------------------------------------------------------
// rootfs and mounts

fn check_root_is_the_bundle(ctx: &Ctx, flags: &[&str]) {
    let marker = ctx.temp.path().join("host-marker");
    fs::write(&marker, "host").unwrap();
    let host_hostname = fs::read_to_string("/etc/hostname").unwrap_or_default();
    let script = format!(
        "cat /etc/hostname; readlink /proc/1/root; ls /; test -e {m} && echo HOST-VISIBLE; \
         test -e /proc/1/root{m} && echo HOST-VISIBLE; cat /proc/self/mountinfo",
        m = marker.display()
    );
    let out = ctx.run_with(&ctx.config(), &script, flags);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("keel"), "output: {text}");
    assert_ne!(host_hostname.trim(), "keel");
    assert_eq!(lines.next(), Some("/"), "output: {text}");
    assert!(!text.contains("HOST-VISIBLE"), "output: {text}");
    let listing: Vec<&str> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.contains(" - "))
        .collect();
    let mut expected: Vec<String> = fs::read_dir(ctx.rootfs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(
        listing, expected,
        "ls / shows something else than the rootfs"
    );
    let mounts = mountinfo::parse(&text);
    let roots: Vec<_> = mounts
        .iter()
        .filter(|m| m.mount_point == Path::new("/"))
        .collect();
    assert_eq!(roots.len(), 1, "mounts on /: {roots:?}");
    assert!(
        roots[0].root.ends_with("bundle/rootfs"),
        "/ is not the rootfs: {:?}",
        roots[0]
    );
}

#[test]
fn pivot_root_hides_the_host() {
    let ctx = Ctx::new();
    check_root_is_the_bundle(&ctx, &[]);
}

#[test]
fn no_pivot_also_hides_the_host() {
    let ctx = Ctx::new();
    check_root_is_the_bundle(&ctx, &["--no-pivot"]);
}

#[test]
fn readonly_root_rejects_writes() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["root"]["readonly"] = json!(true);
    let out = ctx.run_ok(
        &config,
        "touch /x 2>&1 || echo failed; touch /dev/shm/ok && echo dev-shm-writable; \
         awk '$5 == \"/\"' /proc/self/mountinfo",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("Read-only file system") && lines[1] == "failed",
        "output: {out}"
    );
    assert_eq!(lines[2], "dev-shm-writable");
    let root = mountinfo::parse_line(lines[3]).expect("mountinfo line of /");
    assert!(
        root.options.split(',').any(|o| o == "ro"),
        "/ is not ro: {root:?}"
    );
    assert!(!ctx.rootfs().join("x").exists());
}

fn root_mount_tags(ctx: &Ctx, propagation: &str) -> String {
    let mut config = ctx.config();
    config["linux"]["rootfsPropagation"] = json!(propagation);
    let out = ctx.run_ok(&config, "awk '$5 == \"/\"' /proc/self/mountinfo");
    // Optional fields sit between the options and " - ".
    let (left, _) = out.split_once(" - ").unwrap_or_else(|| panic!("{out}"));
    left.split(' ').skip(6).collect::<Vec<_>>().join(" ")
}

#[test]
fn rootfs_propagation_is_applied_to_the_root_mount() {
    let ctx = Ctx::new();
    let shared = root_mount_tags(&ctx, "rshared");
    assert!(
        shared.contains("shared:"),
        "rootfsPropagation rshared: / has tags {shared:?}"
    );
    let private = root_mount_tags(&ctx, "private");
    assert!(
        !private.contains("shared:") && !private.contains("master:"),
        "rootfsPropagation private: / has tags {private:?}"
    );
}

#[test]
fn bind_mounts_of_files_and_dirs_with_options() {
    let ctx = Ctx::new();
    let file = ctx.temp.path().join("data.txt");
    fs::write(&file, "file-data\n").unwrap();
    let ro_dir = ctx.temp.subdir("rodir");
    fs::write(ro_dir.join("in-ro"), "ro-data\n").unwrap();
    let rw_dir = ctx.temp.subdir("rwdir");
    let opt_dir = ctx.temp.subdir("optdir");
    fs::copy(ctx.rootfs().join("bin/busybox"), opt_dir.join("busybox")).unwrap();
    chmod(&opt_dir.join("busybox"), 0o4755);

    let mut config = ctx.config();
    for mount in [
        json!({ "destination": "/etc/bound.txt", "type": "bind", "source": file, "options": ["bind", "ro"] }),
        json!({ "destination": "/mnt/ro", "type": "bind", "source": ro_dir, "options": ["bind", "ro"] }),
        json!({ "destination": "/mnt/rw", "type": "bind", "source": rw_dir, "options": ["bind"] }),
        json!({ "destination": "/mnt/opts", "type": "bind", "source": opt_dir,
                "options": ["bind", "nosuid", "nodev", "noexec"] }),
    ] {
        push(&mut config, "/mounts", mount);
    }
    let out = ctx.run_ok(
        &config,
        "cat /etc/bound.txt /mnt/ro/in-ro; \
         echo x >> /etc/bound.txt || echo file-write-failed; \
         touch /mnt/ro/new || echo dir-write-failed; \
         touch /mnt/rw/from-container && echo rw-ok; \
         /mnt/opts/busybox true || echo exec-failed; \
         echo ---; cat /proc/self/mountinfo",
    );
    let (head, table) = out.split_once("---\n").unwrap();
    assert_eq!(
        head, "file-data\nro-data\nfile-write-failed\ndir-write-failed\nrw-ok\nexec-failed\n",
        "full output: {out}"
    );
    assert_eq!(fs::read_to_string(&file).unwrap(), "file-data\n");
    assert!(!ro_dir.join("new").exists());
    assert!(rw_dir.join("from-container").exists());
    let mounts = mountinfo::parse(table);
    let options = |point: &str| -> Vec<String> {
        let m = mounts
            .iter()
            .rfind(|m| m.mount_point == Path::new(point))
            .unwrap_or_else(|| panic!("no mount on {point} in {table}"));
        m.options.split(',').map(String::from).collect()
    };
    for point in ["/etc/bound.txt", "/mnt/ro"] {
        assert!(
            options(point).contains(&"ro".into()),
            "{point}: {:?}",
            options(point)
        );
    }
    assert!(options("/mnt/rw").contains(&"rw".into()));
    let opts = options("/mnt/opts");
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(opts.contains(&flag.to_string()), "/mnt/opts: {opts:?}");
    }
}

#[test]
fn rbind_brings_submounts_and_bind_does_not() {
    let ctx = Ctx::new();
    let tree = ctx.temp.subdir("tree");
    let sub = tree.join("sub");
    fs::create_dir_all(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _sub = MountGuard(sub.clone());
    fs::write(sub.join("deep"), "deep-data\n").unwrap();
    let mut config = ctx.config();
    push(
        &mut config,
        "/mounts",
        json!({ "destination": "/mnt/rbind", "type": "bind", "source": tree, "options": ["rbind"] }),
    );
    push(
        &mut config,
        "/mounts",
        json!({ "destination": "/mnt/bind", "type": "bind", "source": tree, "options": ["bind"] }),
    );
    let out = ctx.run_ok(
        &config,
        "cat /mnt/rbind/sub/deep; ls -A /mnt/bind/sub | wc -l",
    );
    assert_eq!(out, "deep-data\n0\n");
}

#[test]
fn tmpfs_mount_with_size_and_mode() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    push(
        &mut config,
        "/mounts",
        json!({ "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m", "mode=1777"] }),
    );
    let out = ctx.run_ok(
        &config,
        "stat -c %a /scratch; df -k /scratch | tail -n 1; grep ' /scratch ' /proc/self/mountinfo",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1777", "output: {out}");
    let total = lines[1].split_whitespace().nth(1);
    assert_eq!(total, Some("1024"), "df: {}", lines[1]);
    let m = mountinfo::parse_line(lines[2]).unwrap();
    assert_eq!(m.fs_type, "tmpfs");
    assert!(
        m.options.contains("nosuid") && m.options.contains("nodev"),
        "{m:?}"
    );
}

#[test]
fn mount_through_a_symlink_to_a_host_path_stays_in_the_rootfs() {
    let ctx = Ctx::new();
    // rootfs/escape -> /tmp/keel-test-xxx/hostdir, a path that exists on the
    // host; the same path exists inside the rootfs too.
    let hostdir = ctx.temp.subdir("hostdir");
    symlink(&hostdir, ctx.rootfs().join("escape")).unwrap();
    let inside = ctx.rootfs().join(hostdir.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    let mut config = ctx.config();
    push(
        &mut config,
        "/mounts",
        json!({ "destination": "/escape/sub", "type": "tmpfs", "source": "keel-escape",
                "options": ["size=1m"] }),
    );
    let out = ctx.run_ok(
        &config,
        "touch /escape/sub/inside && echo touched; grep keel-escape /proc/self/mountinfo",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"touched"), "output: {out}");
    let m = mountinfo::parse_line(lines[1]).expect("the tmpfs in mountinfo");
    assert_eq!(m.mount_point, hostdir.join("sub"), "inside the container");
    assert!(inside.join("sub").is_dir(), "{} missing", inside.display());
    // On the host: nothing created or mounted at the link's target.
    let left: Vec<_> = fs::read_dir(&hostdir).unwrap().collect();
    assert!(left.is_empty(), "created on the host: {left:?}");
    let host = mountinfo::read_self().unwrap();
    assert!(!host.iter().any(|m| m.mount_point.starts_with(&hostdir)));

    // A dangling link (its target is missing in the rootfs): the runtime may
    // create the target inside the rootfs or refuse, but never touch the host.
    fs::remove_dir_all(
        ctx.rootfs()
            .join("tmp")
            .join(hostdir.strip_prefix("/tmp").unwrap()),
    )
    .unwrap();
    let out = ctx.run(&config, "touch /escape/sub/inside && echo touched");
    if out.status.success() {
        assert_eq!(stdout(&out), "touched\n");
        assert!(inside.join("sub").is_dir(), "{} missing", inside.display());
    } else {
        // A refusal names the mount it could not make.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("/escape/sub"),
            "the error does not say which mount failed: {}",
            show(&out)
        );
    }
    let left: Vec<_> = fs::read_dir(&hostdir).unwrap().collect();
    assert!(
        left.is_empty(),
        "created on the host: {left:?} ({})",
        show(&out)
    );
    let host = mountinfo::read_self().unwrap();
    assert!(!host.iter().any(|m| m.mount_point.starts_with(&hostdir)));
}

// ---------------------------------------------------------------------------
// /dev

#[test]
fn default_devices_and_dev_symlinks() {
    let ctx = Ctx::new();
    let out = ctx.run_ok(
        &ctx.config(),
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         for l in fd stdin stdout stderr ptmx; do echo \"$l -> $(readlink /dev/$l)\"; done; \
         test -c /dev/pts/ptmx && echo pts-ptmx; \
         echo x > /dev/null && head -c 4 /dev/zero | wc -c; \
         echo x 2>&1 > /dev/full || echo full-failed; \
         head -c 8 /dev/urandom | wc -c",
    );
    let expected = "\
/dev/null character special file 1:3 666
/dev/zero character special file 1:5 666
/dev/full character special file 1:7 666
/dev/random character special file 1:8 666
/dev/urandom character special file 1:9 666
/dev/tty character special file 5:0 666
fd -> /proc/self/fd
stdin -> /proc/self/fd/0
stdout -> /proc/self/fd/1
stderr -> /proc/self/fd/2
ptmx -> pts/ptmx
pts-ptmx
4
";
    assert!(out.starts_with(expected), "output:\n{out}");
    let rest: Vec<&str> = out[expected.len()..].lines().collect();
    assert_eq!(rest.len(), 3, "output:\n{out}");
    assert!(rest[0].contains("No space left on device"), "{out}");
    assert_eq!(rest[1..], ["full-failed", "8"]);
}

#[test]
fn linux_devices_are_created_with_mode_and_owner() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["linux"]["devices"] = json!([{
        "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
        "fileMode": 0o600, "uid": 1000, "gid": 1000
    }]);
    // Opened by its owner (root has no CAP_DAC_OVERRIDE in this config).
    config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    let out = ctx.run_ok(
        &config,
        "stat -c '%F %a %u %g %t:%T' /dev/fuse; exec 3<>/dev/fuse && echo opened",
    );
    assert_eq!(out, "character special file 600 1000 1000 a:e5\nopened\n");
}

#[test]
fn fifo_devices_are_made_as_runc_makes_them() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["linux"]["devices"] = json!([{
        "path": "/dev/queue", "type": "p", "major": 0, "minor": 0, "fileMode": 0o620
    }]);
    let out = ctx.run_ok(
        &config,
        "stat -c '%F %a' /dev/queue; (echo through > /dev/queue &); cat /dev/queue",
    );
    assert_eq!(out, "fifo 620\nthrough\n");
}

#[test]
fn masked_paths_are_empty() {
    let ctx = Ctx::new();
    fs::write(ctx.rootfs().join("home/keel/secret"), "secret").unwrap();
    let mut config = ctx.config();
    push(&mut config, "/linux/maskedPaths", json!("/home/keel"));
    push(&mut config, "/linux/maskedPaths", json!("/etc/hostname"));
    // The default masked files of /proc that this kernel has.
    let proc_files: Vec<&str> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|f| Path::new(f).exists())
    .collect();
    assert!(
        !proc_files.is_empty(),
        "none of the masked /proc files exists here"
    );
    let script = format!(
        "for f in {}; do wc -c < $f; done; ls -A /sys/firmware | wc -l; ls -A /home/keel | wc -l; \
         wc -c < /etc/hostname; echo x > /home/keel/new 2>&1 || echo write-failed",
        proc_files.join(" ")
    );
    let out = ctx.run_ok(&config, &script);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let zeros = proc_files.len() + 3;
    assert_eq!(lines.len(), zeros + 1, "output: {out}");
    assert!(lines[..zeros].iter().all(|l| *l == "0"), "output: {out}");
    assert_eq!(lines.last(), Some(&"write-failed"), "output: {out}");
    assert!(Path::new("/sys/firmware").is_dir());
}

#[test]
fn readonly_paths_reject_writes() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    push(&mut config, "/linux/readonlyPaths", json!("/home/keel"));
    let out = ctx.run_ok(
        &config,
        "echo 1 > /proc/sys/net/ipv4/ip_forward || echo sysctl-write-failed; \
         touch /home/keel/x || echo home-write-failed; touch /tmp/x && echo tmp-ok",
    );
    assert_eq!(
        out, "sysctl-write-failed\nhome-write-failed\ntmp-ok\n",
        "output: {out}"
    );
    let out = ctx.run(&config, "echo 1 > /proc/sys/net/ipv4/ip_forward");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        show(&out)
    );
}

#[test]
fn sysctl_is_set_in_the_containers_network_namespace() {
    let ctx = Ctx::new();
    let host_before = read_trimmed(Path::new("/proc/sys/net/ipv4/ip_forward"));
    let mut config = ctx.config();
    config["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" });
    let out = ctx.run_ok(&config, "cat /proc/sys/net/ipv4/ip_forward");
    assert_eq!(out, "1\n");
    assert_eq!(
        read_trimmed(Path::new("/proc/sys/net/ipv4/ip_forward")),
        host_before,
        "the host's sysctl changed"
    );
}

// ---------------------------------------------------------------------------
// process

#[test]
fn args_env_and_cwd() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["process"]["args"] = json!([
        "sh",
        "-c",
        "printf '%s|' \"$0\" \"$1\"; echo \"$FOO|$(pwd)|$HOME\"",
        "a b",
        "c"
    ]);
    push(&mut config, "/process/env", json!("FOO=bar baz"));
    config["process"]["cwd"] = json!("/home/keel");
    ctx.bundle.write_config(&config);
    let out = ctx.runtime.run_ok(ctx.run_args(&[]));
    assert_eq!(out, "a b|c|bar baz|/home/keel|/root\n");
}

#[test]
fn missing_cwd_is_created_like_runc() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["process"]["cwd"] = json!("/work/dir");
    let out = ctx.run_ok(&config, "pwd");
    assert_eq!(out, "/work/dir\n");
    assert!(ctx.rootfs().join("work/dir").is_dir());
}

#[test]
fn user_groups_and_umask() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["process"]["user"] =
        json!({ "uid": 1000, "gid": 1000, "additionalGids": [10, 65534], "umask": 0o027 });
    let out = ctx.run_ok(
        &config,
        "id; grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask; echo $HOME",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("uid=1000(keel) gid=1000(keel)"),
        "id: {}",
        lines[0]
    );
    let fields = |l: &str| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    assert_eq!(fields(lines[1]), "1000 1000 1000 1000");
    assert_eq!(fields(lines[2]), "1000 1000 1000 1000");
    assert_eq!(fields(lines[3]), "10 65534");
    assert_eq!(lines[4..], ["0027", "/home/keel"]);
}

#[test]
fn rlimits_are_applied() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["process"]["rlimits"] = json!([
        { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512 },
        { "type": "RLIMIT_NPROC", "hard": 3000, "soft": 2000 }
    ]);
    let out = ctx.run_ok(
        &config,
        "ulimit -n; grep -E 'Max (open files|processes)' /proc/self/limits",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "512");
    let limits = |l: &str| -> Vec<String> {
        l.split_whitespace()
            .filter(|w| w.parse::<u64>().is_ok())
            .map(String::from)
            .collect()
    };
    assert_eq!(limits(lines[1]), ["2000", "3000"], "{out}");
    assert_eq!(limits(lines[2]), ["512", "1024"], "{out}");
    let mut config = ctx.config();
    config["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }]);
    assert_eq!(ctx.run_ok(&config, "ulimit -n"), "1024\n");
}

#[test]
fn reduced_capability_sets_are_exact() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    let caps = json!(["CAP_CHOWN", "CAP_KILL"]);
    config["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": [], "ambient": []
    });
    let status = ctx.run_ok(&config, "cat /proc/self/status");
    // CAP_CHOWN is bit 0, CAP_KILL bit 5.
    assert_eq!(status_field(&status, "CapEff"), "0000000000000021");
    assert_eq!(status_field(&status, "CapPrm"), "0000000000000021");
    assert_eq!(status_field(&status, "CapBnd"), "0000000000000021");
    assert_eq!(status_field(&status, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&status, "CapAmb"), "0000000000000000");
    // What is not in the set is refused.
    let out = ctx.run_ok(
        &config,
        "chown 1000 /tmp && echo chown-ok; hostname other 2>&1 || echo hostname-denied",
    );
    assert!(
        out.starts_with("chown-ok\n") && out.ends_with("hostname-denied\n"),
        "{out}"
    );
}

#[test]
fn ambient_capabilities_for_a_non_root_user() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    let caps = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    config["process"]["user"] = json!({ "uid": 1000, "gid": 1000 });
    config["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
        "inheritable": caps, "ambient": caps
    });
    let status = ctx.run_ok(&config, "cat /proc/self/status");
    // CAP_KILL is bit 5, CAP_NET_BIND_SERVICE bit 10.
    assert_eq!(status_field(&status, "Uid"), "1000\t1000\t1000\t1000");
    for field in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(
            status_field(&status, field),
            "0000000000000420",
            "{field} in\n{status}"
        );
    }
}

#[test]
fn no_new_privileges_and_oom_score_adj() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["process"]["oomScoreAdj"] = json!(500);
    let out = ctx.run_ok(
        &config,
        "grep NoNewPrivs /proc/self/status; cat /proc/self/oom_score_adj",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    assert_eq!(lines[1], "500");
    config["process"]["noNewPrivileges"] = json!(false);
    let out = ctx.run_ok(&config, "grep NoNewPrivs /proc/self/status");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "0"]
    );
}

/// Runs `run [flags]` with extra fds (files) at 3, 4, ... of the runtime.
fn run_with_fds(ctx: &Ctx, flags: &[&str], files: &[&fs::File]) -> Output {
    let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
    let mut command = ctx.runtime.command(ctx.run_args(flags));
    // SAFETY: only async-signal-safe dup2/fcntl between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Move them out of the way first, so that dup2 onto 3.. cannot clobber one.
            let mut high = Vec::new();
            for fd in &raw {
                let h = libc::fcntl(*fd, libc::F_DUPFD, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*h);
            }
            Ok(())
        });
    }
    output_via_files(&mut command, Duration::from_secs(60)).expect("run the runtime")
}

#[test]
fn preserve_fds_passes_fd_3() {
    let ctx = Ctx::new();
    let path = ctx.temp.path().join("fd3.txt");
    let file = fs::File::create(&path).unwrap();
    ctx.write_script(
        &ctx.config(),
        "echo via-fd3 > /proc/self/fd/3 && echo written; ls /proc/self/fd | tr '\\n' ' '",
    );
    let out = run_with_fds(&ctx, &["--preserve-fds", "1"], &[&file]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "written\n0 1 2 3 4 ");
    assert_eq!(fs::read_to_string(&path).unwrap(), "via-fd3\n");
}

#[test]
fn no_host_fds_leak_into_the_container() {
    let ctx = Ctx::new();
    let a = fs::File::create(ctx.temp.path().join("a")).unwrap();
    let b = fs::File::create(ctx.temp.path().join("b")).unwrap();
    ctx.write_script(&ctx.config(), "ls /proc/self/fd | tr '\\n' ' '");
    let out = run_with_fds(&ctx, &[], &[&a, &b]);
    assert!(out.status.success(), "{}", show(&out));
    // 3 is ls's own directory fd.
    assert_eq!(stdout(&out), "0 1 2 3 ");
}

#[test]
fn exit_status_is_the_containers() {
    let ctx = Ctx::new();
    let out = ctx.run(&ctx.config(), "echo bye; exit 42");
    assert_eq!(out.status.code(), Some(42), "{}", show(&out));
    assert_eq!(stdout(&out), "bye\n");
    let out = ctx.run(&ctx.config(), "exec false");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

#[test]
fn signals_reach_the_container_and_kill_gives_128_plus_signal() {
    let ctx = Ctx::new();
    let log = ctx.temp.path().join("out.txt");
    // SIGTERM to the foreground runtime is forwarded to the container.
    ctx.write_script(
        &ctx.config(),
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
    );
    let spawn = || {
        let file = fs::File::create(&log).unwrap();
        ctx.runtime
            .command(ctx.run_args(&[]))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn the runtime")
    };
    let mut child = spawn();
    wait_for_text(&log, "ready", Duration::from_secs(30));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_child(&mut child, Duration::from_secs(30));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(7), "{status:?}: {text}");
    assert!(text.contains("got-term"), "{text}");

    // `kill ID KILL` from outside: the runtime exits 128+9.
    ctx.write_script(&ctx.config(), "echo ready; while :; do sleep 0.1; done");
    let mut child = spawn();
    wait_for_text(&log, "ready", Duration::from_secs(30));
    ctx.runtime.run_ok(["kill", ctx.id(), "KILL"]);
    let status = wait_child(&mut child, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(137),
        "{status:?} (signal {:?})",
        status.signal()
    );
}

// ---------------------------------------------------------------------------
// seccomp

fn seccomp_profile(syscalls: Value) -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [arch()],
        "syscalls": syscalls
    })
}

#[test]
fn seccomp_errno_rules() {
    let ctx = Ctx::new();
    let mut config = ctx.config();
    config["linux"]["seccomp"] = seccomp_profile(json!([
        { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }
    ]));
    let out = ctx.run_ok(
        &config,
        "mkdir /tmp/d 2>&1 || echo mkdir-failed; touch /tmp/f && echo touch-ok; \
         grep Seccomp: /proc/self/status",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Operation not permitted"), "{out}");
    assert_eq!(lines[1..3], ["mkdir-failed", "touch-ok"], "{out}");
    assert_eq!(lines[3].split_whitespace().nth(1), Some("2"), "{out}");

    config["linux"]["seccomp"] = seccomp_profile(json!([
        { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
    ]));
    let out = ctx.run_ok(&config, "mkdir /tmp/d 2>&1 || echo mkdir-failed");
    assert!(
        out.contains("Function not implemented") && out.ends_with("mkdir-failed\n"),
        "{out}"
    );
}

#[test]
fn seccomp_argument_condition() {
    let ctx = Ctx::new();
    // busybox chmod calls chmod(path, mode): deny world-writable modes only.
    let mut config = ctx.config();
    config["linux"]["seccomp"] = seccomp_profile(json!([{
        "names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
        "args": [{ "index": 1, "value": 0o002, "valueTwo": 0o002, "op": "SCMP_CMP_MASKED_EQ" }]
    }]));
    let out = ctx.run_ok(
        &config,
        "touch /tmp/f; chmod 775 /tmp/f && echo 775-ok; chmod 777 /tmp/f 2>&1 || echo 777-denied; \
         chmod 666 /tmp/f || echo 666-denied; stat -c %a /tmp/f",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "775-ok", "{out}");
    assert!(lines[1].contains("Operation not permitted"), "{out}");
    assert_eq!(lines[2..], ["777-denied", "666-denied", "775"], "{out}");
}

#[test]
fn seccomp_docker_default_profile() {
    let ctx = Ctx::new();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/docker-default-seccomp.json");
    let profile: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let mut config = ctx.config();
    config["linux"]["seccomp"] = profile;
    let out = ctx.run_ok(
        &config,
        "echo shell-ok; ls / > /dev/null && echo ls-ok; mkdir /tmp/d && echo mkdir-ok; \
         (sleep 0 &); wait; unshare -U true 2>&1 || echo unshare-denied; \
         grep Seccomp: /proc/self/status",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["shell-ok", "ls-ok", "mkdir-ok"], "{out}");
    assert!(lines[3].contains("Operation not permitted"), "{out}");
    assert_eq!(lines[4], "unshare-denied", "{out}");
    assert_eq!(lines[5].split_whitespace().nth(1), Some("2"), "{out}");
}

// ---------------------------------------------------------------------------
// cgroups

fn limited_config(ctx: &Ctx) -> Value {
    let mut config = ctx.config();
    config["linux"]["resources"] = json!({
        "devices": [{ "allow": false, "access": "rwm" }],
        "memory": { "limit": 67_108_864 },
        "pids": { "limit": 20 },
        "cpu": { "shares": 512, "quota": 50_000, "period": 100_000 },
        "hugepageLimits": [{ "pageSize": "2MB", "limit": 4_194_304 }]
    });
    config
}

#[test]
fn cgroup_limits_are_written_to_the_containers_cgroup() {
    let ctx = Ctx::new();
    let pid = ctx.create(&limited_config(&ctx), "true", &[]);
    let path = ctx.bundle.cgroups_path();
    let (memory, v1) =
        keel_testutil::cgroup_file(&path, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(read_trimmed(&memory), "67108864", "{}", memory.display());
    let (pids, _) = keel_testutil::cgroup_file(&path, "pids", "pids.max", "pids.max");
    assert_eq!(read_trimmed(&pids), "20");
    // hugetlb: in its v1 hierarchy, or on a pure cgroup2 host. A hybrid
    // host whose hugetlb is only in cgroup2 (this one) gets no limit and a
    // warning: enabling hugetlb there would keep a v1 hugetlb hierarchy from
    // being mounted later (crun needs one here).
    let (huge, huge_v1) = keel_testutil::cgroup_file(
        &path,
        "hugetlb",
        "hugetlb.2MB.limit_in_bytes",
        "hugetlb.2MB.max",
    );
    if huge_v1 || !v1 {
        assert_eq!(read_trimmed(&huge), "4194304", "{}", huge.display());
    } else {
        // (Present, at its default, if another test enabled hugetlb in the
        // cgroup2 root meanwhile.)
        let value = std::fs::read_to_string(&huge).unwrap_or_default();
        assert_ne!(
            value.trim(),
            "4194304",
            "{} was written on a hybrid host",
            huge.display()
        );
    }
    let (procs, _) = keel_testutil::cgroup_file(&path, "pids", "cgroup.procs", "cgroup.procs");
    assert!(
        read_trimmed(&procs).lines().any(|p| p == pid.to_string()),
        "init {pid} not in {}",
        procs.display()
    );
    if v1 {
        let (shares, _) = keel_testutil::cgroup_file(&path, "cpu", "cpu.shares", "");
        assert_eq!(read_trimmed(&shares), "512");
        let (quota, _) = keel_testutil::cgroup_file(&path, "cpu", "cpu.cfs_quota_us", "");
        assert_eq!(read_trimmed(&quota), "50000");
        let (period, _) = keel_testutil::cgroup_file(&path, "cpu", "cpu.cfs_period_us", "");
        assert_eq!(read_trimmed(&period), "100000");
    } else {
        let (max, _) = keel_testutil::cgroup_file(&path, "cpu", "", "cpu.max");
        assert_eq!(read_trimmed(&max), "50000 100000");
        // runc's conversion of shares 512 to a weight.
        let (weight, _) = keel_testutil::cgroup_file(&path, "cpu", "", "cpu.weight");
        assert_eq!(read_trimmed(&weight), "20");
    }
}

#[test]
fn container_sees_its_own_cgroup_under_sys_fs_cgroup() {
    let ctx = Ctx::new();
    let (_, v1) = keel_testutil::cgroup_file(&ctx.bundle.cgroups_path(), "memory", "", "");
    let script = if v1 {
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max"
    } else {
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max"
    };
    let out = ctx.run_ok(&limited_config(&ctx), script);
    assert_eq!(out, "67108864\n20\n");
}

#[test]
fn pids_limit_bounds_a_fork_bomb() {
    let ctx = Ctx::new();
    let out = ctx.run(
        &limited_config(&ctx),
        "for i in $(seq 40); do sleep 2 & done; echo started-all",
    );
    let all = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("can't fork"), "{}", show(&out));
    assert!(!all.contains("started-all"), "{}", show(&out));
}

#[test]
fn devices_cgroup_denies_what_is_not_allowed() {
    let ctx = Ctx::new();
    let caps = json!(["CAP_MKNOD", "CAP_KILL"]);
    let mut config = ctx.config();
    config["process"]["capabilities"] =
        json!({ "bounding": caps, "effective": caps, "permitted": caps });
    let script = "head -c1 /dev/urandom | wc -c; mknod /dev/keel-fuse c 10 229 && echo made; \
                  (exec 3<>/dev/keel-fuse) && echo opened || echo open-denied";

    // The default: deny all, plus runc's default allows.
    let out = ctx.run_ok(&config, script);
    assert_eq!(out, "1\nmade\nopen-denied\n");

    // An explicit allow.
    config["linux"]["resources"]["devices"] = json!([
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw" }
    ]);
    let out = ctx.run_ok(&config, script);
    assert_eq!(out, "1\nmade\nopened\n");

    // Allow all, then an explicit deny.
    config["linux"]["resources"]["devices"] = json!([
        { "allow": true, "access": "rwm" },
        { "allow": false, "type": "c", "major": 10, "minor": 229, "access": "rw" }
    ]);
    let out = ctx.run_ok(&config, script);
    assert_eq!(out, "1\nmade\nopen-denied\n");

    // As in runc, the default allows come after the config's rules: an
    // explicit deny of a default device (c 1:9, /dev/urandom) is overridden.
    config["linux"]["resources"]["devices"] = json!([
        { "allow": false, "access": "rwm" },
        { "allow": false, "type": "c", "major": 1, "minor": 9, "access": "rwm" }
    ]);
    let out = ctx.run_ok(&config, "head -c1 /dev/urandom | wc -c");
    assert_eq!(out, "1\n");
}

// ---------------------------------------------------------------------------
// terminal

#[test]
fn terminal_through_the_console_socket() {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

    let ctx = Ctx::new();
    let socket_path = ctx.temp.path().join("console.sock");
    let listener = UnixListener::bind(&socket_path).unwrap();
    let mut config = ctx.config();
    config["process"]["terminal"] = json!(true);
    config["process"]["consoleSize"] = json!({ "height": 40, "width": 100 });
    ctx.create(
        &config,
        "tty; stty size",
        &["--console-socket", socket_path.to_str().unwrap()],
    );
    // create has connected and the init has sent the master before create returned.
    listener.set_nonblocking(true).unwrap();
    let (mut stream, _) = listener
        .accept()
        .expect("create connected to the console socket");
    stream.set_nonblocking(false).unwrap();
    let mut payload = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let (bytes, fds, messages) = {
        let mut iov = [IoSliceMut::new(&mut payload)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .expect("recvmsg on the console socket");
        let mut fds = Vec::new();
        let mut messages = 0;
        for c in msg.cmsgs().expect("control messages") {
            messages += 1;
            match c {
                ControlMessageOwned::ScmRights(f) => fds.extend(f),
                other => panic!("unexpected control message {other:?}"),
            }
        }
        (msg.bytes, fds, messages)
    };
    assert!(bytes > 0, "the message has an empty payload");
    assert_eq!((messages, fds.len()), (1, 1), "one SCM_RIGHTS with one fd");
    // SAFETY: the fd just received is ours.
    let master = unsafe { OwnedFd::from_raw_fd(fds[0]) };

    ctx.runtime.run_ok(["start", ctx.id()]);
    let mut output = Vec::new();
    let mut master = fs::File::from(master);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&master),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(1000u16)).unwrap();
        if ready == 0 {
            assert!(Instant::now() < deadline, "no EOF from the pty: {output:?}");
            continue;
        }
        let mut buf = [0u8; 1024];
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
            // EIO: every slave fd is closed, the container has exited.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("read the pty master: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&output).replace('\r', "");
    assert_eq!(text, "/dev/pts/0\n40 100\n");
    // Exactly one message: after the container exited the socket is at EOF.
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "more data on the console socket: {rest:?}");
}

// ---------------------------------------------------------------------------
// CVE-2019-5736

#[test]
fn runtime_binary_cannot_be_overwritten_through_proc_exe() {
    let ctx = Ctx::new();
    // A private copy, so that no other test's runtime executes this inode
    // (a running binary gives ETXTBSY before the mount's EROFS is checked).
    let bin = ctx.temp.path().join("keel-runtime");
    fs::copy(ctx.runtime.bin(), &bin).unwrap();
    let runtime = Runtime::with_temp_root(&bin, &ctx.temp);
    let before = fs::read(&bin).unwrap();
    let mtime_before = fs::metadata(&bin).unwrap().modified().unwrap();

    ctx.write_script(&ctx.config(), "true");
    let out = runtime.run(["create", "--bundle", ctx.dir(), ctx.id()]);
    assert!(out.status.success(), "create failed: {}", show(&out));
    let pid = runtime.state(ctx.id()).expect("state")["pid"]
        .as_i64()
        .unwrap();
    let exe = format!("/proc/{pid}/exe");
    // While the init runs keel-runtime, writing is refused either way.
    let err = fs::OpenOptions::new()
        .write(true)
        .open(&exe)
        .expect_err("the init's binary opened for writing");
    assert!(
        [Some(libc::EROFS), Some(libc::ETXTBSY)].contains(&err.raw_os_error()),
        "open {exe} for writing: {err}"
    );
    // The attack: keep an O_PATH handle and reopen it for writing once the
    // binary no longer runs. It must point at a read-only mount.
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&exe)
        .unwrap();
    runtime.run_ok(["start", ctx.id()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while runtime
        .state(ctx.id())
        .is_some_and(|s| s["status"] != "stopped")
    {
        assert!(Instant::now() < deadline, "the container did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let err = fs::OpenOptions::new()
        .write(true)
        .open(&reopen)
        .expect_err("keel-runtime's binary reopened for writing through /proc/<init>/exe");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "reopen of /proc/<init>/exe for writing: {err} (expected EROFS: keel-runtime must run \
         from a read-only mount of itself)"
    );
    runtime.run_ok(["delete", ctx.id()]);
    assert_eq!(
        fs::metadata(&bin).unwrap().modified().unwrap(),
        mtime_before
    );
    assert!(
        fs::read(&bin).unwrap() == before,
        "the runtime binary changed"
    );
}
