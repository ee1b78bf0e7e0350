//! keel-runtime driven the way containerd's shim and podman drive runc: the
//! lifecycle (create, start, state, kill, delete), foreground and detached
//! `run`, `exec`, `ps`, `list`, pause/resume, update, events, hooks, and the
//! errors callers string-match. Root only: every test makes real containers,
//! each with its own temp root, bundle, cgroup and id, and guards that remove
//! them even when the test fails.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use keel_testutil::{
    BusyboxBundle, CgroupGuard, ContainerGuard, Runtime, TempRoot, cgroup_dirs, mountinfo,
    require_root, runtime_bin,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers

fn bin() -> PathBuf {
    runtime_bin(env!("CARGO_BIN_EXE_keel-runtime"))
}

/// One container's world. Fields drop in order: the container (delete
/// --force), then its cgroup, then the temp dir.
struct Fixture {
    _container: ContainerGuard,
    _cgroup: CgroupGuard,
    runtime: Runtime,
    bundle: BusyboxBundle,
    temp: TempRoot,
}

impl Fixture {
    fn new() -> Fixture {
        require_root();
        let temp = TempRoot::new();
        let bundle = BusyboxBundle::create(temp.subdir("bundle"));
        let cgroup = bundle.cgroup_guard();
        let runtime = Runtime::with_temp_root(bin(), &temp);
        let container = runtime.guard(bundle.unique());
        Fixture {
            _container: container,
            _cgroup: cgroup,
            runtime,
            bundle,
            temp,
        }
    }

    fn id(&self) -> &str {
        self.bundle.unique()
    }

    fn bundle_dir(&self) -> &str {
        self.bundle.dir().to_str().expect("utf-8 bundle path")
    }

    /// The default config with these process args.
    fn config_with_args(&self, args: &[&str]) -> Value {
        let mut config = self.bundle.config_json();
        config["process"]["args"] = json!(args);
        config
    }

    fn set_args(&self, args: &[&str]) {
        self.bundle.write_config(&self.config_with_args(args));
    }

    fn set_script(&self, script: &str) {
        self.set_args(&["sh", "-c", script]);
    }

    /// A file in the container's rootfs, as the host sees it.
    fn rootfs_file(&self, path: &str) -> PathBuf {
        self.bundle.rootfs().join(path.trim_start_matches('/'))
    }

    fn rt<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.runtime.run(args)
    }

    fn rt_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.runtime.run_ok(args)
    }

    /// `create`; returns the init pid from `state`.
    fn create(&self) -> i32 {
        self.rt_ok(["create", "--bundle", self.bundle_dir(), self.id()]);
        let state = self.state();
        assert_eq!(state["status"], "created", "{state}");
        state["pid"].as_i64().expect("pid in state") as i32
    }

    /// `create` + `start`; returns the init pid.
    fn create_and_start(&self) -> i32 {
        let pid = self.create();
        self.rt_ok(["start", self.id()]);
        pid
    }

    fn state(&self) -> Value {
        let out = self.rt_ok(["state", self.id()]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("state is not JSON ({e}): {out}"))
    }

    fn status(&self) -> String {
        self.state()["status"]
            .as_str()
            .expect("status string")
            .to_string()
    }

    fn wait_status(&self, want: &str) {
        wait_until(&format!("container {} to be {want}", self.id()), || {
            self.runtime
                .state(self.id())
                .is_some_and(|s| s["status"] == want)
        });
    }

    /// `state` says the container does not exist, exit 1, as runc says it.
    fn assert_gone(&self) {
        let out = self.rt(["state", self.id()]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "state of a deleted container: {}",
            show(&out)
        );
        assert!(
            stderr(&out).contains("container does not exist"),
            "{}",
            show(&out)
        );
        assert!(
            !self.temp.root().join(self.id()).exists(),
            "state dir left in the runtime root"
        );
    }

    /// The container's cgroup directory in a controller's hierarchy (v1), or
    /// in the unified hierarchy on a pure v2 host.
    fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let relative = self.bundle.cgroups_path();
        let relative = relative.trim_start_matches('/');
        if cgroup_v2_only() {
            Path::new("/sys/fs/cgroup").join(relative)
        } else {
            Path::new("/sys/fs/cgroup").join(controller).join(relative)
        }
    }

    /// After a failure: no state dir, no cgroup, no process, no mounts.
    fn assert_nothing_left(&self) {
        let left: Vec<PathBuf> = fs::read_dir(self.temp.root())
            .expect("read runtime root")
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left in the runtime root: {left:?}");
        let cgroups = cgroup_dirs(Path::new(&self.bundle.cgroups_path()));
        assert!(cgroups.is_empty(), "cgroup dirs left: {cgroups:?}");
        let processes = leftover_processes(self.temp.path(), self.id());
        assert!(processes.is_empty(), "processes left: {processes:?}");
        let mounts = mountinfo::unmount_order(
            &mountinfo::read_self().expect("read mountinfo"),
            self.temp.path(),
        );
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

fn cgroup_v2_only() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// Asserts a failed command (non-zero exit) whose stderr contains `needle`.
#[track_caller]
fn assert_fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure: {}", show(out));
    assert!(
        stderr(out).contains(needle),
        "stderr should contain {needle:?}: {}",
        show(out)
    );
}

/// Polls `cond` every 20 ms for up to 60 s (a generous bound for a loaded
/// machine; it only matters when the test fails).
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live (non-zombie) process.
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
        .split_whitespace()
        .next()
        .unwrap_or("");
    !matches!(state, "Z" | "X")
}

/// Live processes whose exe, cwd or cmdline name `dir`, or whose cgroup
/// names `id`.
fn leftover_processes(dir: &Path, id: &str) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me || !alive(pid) {
            continue;
        }
        let p = entry.path();
        let link = |name: &str| {
            fs::read_link(p.join(name))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let cmdline = fs::read(p.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let cgroup = fs::read_to_string(p.join("cgroup")).unwrap_or_default();
        if link("exe").contains(&dir)
            || link("cwd").contains(&dir)
            || cmdline.contains(&dir)
            || cgroup.contains(id)
        {
            out.push(format!("{pid}: {cmdline}"));
        }
    }
    out
}

/// Kills and reaps a child of the test on drop, unless it has already been
/// reaped (so a reused pid is never signalled).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for a child with a deadline (killing it then), returning its status.
fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("reap killed child");
            panic!("child did not finish in {timeout:?} (killed: {status})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_file(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn lines_in(path: &Path) -> usize {
    fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

// ---------------------------------------------------------------------------
// The lifecycle

#[test]
fn create_start_kill_delete_with_pid_file_and_bind_mount() {
    let f = Fixture::new();
    let out_dir = f.temp.subdir("out");
    let mut config = f.config_with_args(&[
        "sh",
        "-c",
        "trap 'echo term > /out/term; exit 0' TERM; echo $$ > /out/started; \
         while :; do sleep 0.1; done",
    ]);
    config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/out", "type": "bind",
        "source": out_dir.to_str().unwrap(), "options": ["rbind", "rw"]
    }));
    f.bundle.write_config(&config);

    let pid_dir = f.temp.subdir("piddir");
    let pid_file = pid_dir.join("init.pid");
    f.rt_ok([
        "create",
        "--bundle",
        f.bundle_dir(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        f.id(),
    ]);

    // Created: the init exists, inside its cgroup, and has not run the program.
    let state = f.state();
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["id"], f.id());
    assert_eq!(state["bundle"], f.bundle_dir());
    assert_eq!(state["rootfs"], f.bundle.rootfs().to_str().unwrap());
    assert!(state["ociVersion"].is_string(), "{state}");
    assert!(
        state["created"].as_str().is_some_and(|c| c.contains('T')),
        "{state}"
    );
    let pid = state["pid"].as_i64().expect("pid") as i32;
    assert!(pid > 0 && alive(pid), "init {pid} is not alive");
    assert_eq!(read_file(&pid_file).trim(), pid.to_string());
    let in_pid_dir: Vec<_> = fs::read_dir(&pid_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        in_pid_dir,
        [std::ffi::OsString::from("init.pid")],
        "temp files left beside the pid file"
    );
    let cgroup = read_file(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(
        cgroup.contains(&f.bundle.cgroups_path()),
        "init is not in its cgroup at create:\n{cgroup}"
    );
    assert!(
        !out_dir.join("started").exists(),
        "the program ran before start"
    );

    // Started: the program runs and writes through the bind mount.
    f.rt_ok(["start", f.id()]);
    wait_until("the container to write /out/started", || {
        out_dir.join("started").exists() && !read_file(&out_dir.join("started")).trim().is_empty()
    });
    // In its own pid namespace the program is pid 1.
    assert_eq!(read_file(&out_dir.join("started")).trim(), "1");
    let state = f.state();
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["pid"], pid);
    let again = f.rt(["start", f.id()]);
    assert!(
        !again.status.success(),
        "a second start succeeded: {}",
        show(&again)
    );

    // kill by bare name: the program's trap runs.
    f.rt_ok(["kill", f.id(), "TERM"]);
    f.wait_status("stopped");
    assert_eq!(read_file(&out_dir.join("term")).trim(), "term");
    let state = f.state();
    assert_eq!(state["pid"], 0, "a stopped container's pid is 0: {state}");
    assert!(!alive(pid));
    let out = f.rt(["kill", f.id(), "KILL"]);
    assert_fails_with(&out, "container not running");

    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

fn kill_stops_the_container(signal: &str) {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let pid = f.create_and_start();
    assert_eq!(f.status(), "running");
    f.rt_ok(["kill", f.id(), signal]);
    f.wait_status("stopped");
    assert_eq!(f.state()["pid"], 0);
    wait_until("init to die", || !alive(pid));
    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
    assert!(!f.cgroup_dir("memory").exists());
}

#[test]
fn kill_by_number() {
    kill_stops_the_container("9");
}

#[test]
fn kill_by_sig_name() {
    kill_stops_the_container("SIGKILL");
}

#[test]
fn container_that_exits_is_stopped_and_deletable() {
    let f = Fixture::new();
    f.set_script("echo done > /tmp/done");
    f.create_and_start();
    wait_until("the program to finish", || {
        f.rootfs_file("/tmp/done").exists()
    });
    f.wait_status("stopped");
    let out = f.rt(["exec", f.id(), "true"]);
    assert_fails_with(&out, "stopped");
    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
}

// ---------------------------------------------------------------------------
// run

#[test]
fn run_passes_stdout_and_stderr_through() {
    let f = Fixture::new();
    f.set_script("echo out; echo err >&2");
    let out = f.rt(["run", "--bundle", f.bundle_dir(), f.id()]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    f.assert_gone();
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

#[test]
fn run_passes_the_callers_stdin_pipe_itself() {
    let f = Fixture::new();
    f.set_script("cat; readlink /proc/self/fd/0");
    let stdout_file = tempfile::tempfile().unwrap();
    let child = f
        .runtime
        .command(["run", "--bundle", f.bundle_dir(), f.id()])
        .stdin(Stdio::piped())
        .stdout(stdout_file.try_clone().unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keel-runtime run");
    let mut child = ChildGuard(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let pipe_inode = fs::metadata(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        stdin.as_raw_fd()
    }))
    .unwrap()
    .ino();
    stdin.write_all(b"hi\n").unwrap();
    drop(stdin);
    let status = wait_child(&mut child.0, Duration::from_secs(60));
    assert!(status.success(), "run: {status}");
    let text = read_file(Path::new(&format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        stdout_file.as_raw_fd()
    })));
    assert_eq!(
        text,
        format!("hi\npipe:[{pipe_inode}]\n"),
        "the container's stdin is not the caller's pipe"
    );
    f.assert_gone();
}

#[test]
fn run_returns_the_exit_status() {
    let f = Fixture::new();
    f.set_script("exit 3");
    let out = f.rt(["run", "--bundle", f.bundle_dir(), f.id()]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    f.assert_gone();
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

#[test]
fn run_returns_128_plus_signal_when_the_program_kills_itself() {
    // Without a pid namespace the shell is not a pid 1, so SIGKILL from
    // itself takes effect.
    let f = Fixture::new();
    let mut config = f.config_with_args(&["sh", "-c", "kill -9 $$; echo survived"]);
    config["linux"]["namespaces"] = json!([
        { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
    ]);
    f.bundle.write_config(&config);
    let out = f.rt(["run", "--bundle", f.bundle_dir(), f.id()]);
    assert_eq!(out.status.code(), Some(137), "{}", show(&out));
    assert_eq!(stdout(&out), "");
    f.assert_gone();
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

#[test]
fn run_returns_137_when_the_container_is_killed_from_outside() {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let child = f
        .runtime
        .command(["run", "--bundle", f.bundle_dir(), f.id()])
        .stdin(Stdio::null())
        .stdout(tempfile::tempfile().unwrap())
        .stderr(tempfile::tempfile().unwrap())
        .spawn()
        .expect("spawn keel-runtime run");
    let mut child = ChildGuard(child);
    f.wait_status("running");
    f.rt_ok(["kill", f.id(), "KILL"]);
    let status = wait_child(&mut child.0, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(137),
        "run: {status} (signal {:?})",
        status.signal()
    );
    f.assert_gone();
}

#[test]
fn run_forwards_signals_to_the_container() {
    let f = Fixture::new();
    f.set_script("trap 'exit 42' TERM; touch /tmp/ready; while :; do sleep 0.1; done");
    let child = f
        .runtime
        .command(["run", "--bundle", f.bundle_dir(), f.id()])
        .stdin(Stdio::null())
        .stdout(tempfile::tempfile().unwrap())
        .stderr(tempfile::tempfile().unwrap())
        .spawn()
        .expect("spawn keel-runtime run");
    let mut child = ChildGuard(child);
    wait_until("the trap to be set", || {
        f.rootfs_file("/tmp/ready").exists()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_child(&mut child.0, Duration::from_secs(60));
    assert_eq!(status.code(), Some(42), "run: {status}");
    f.assert_gone();
}

#[test]
fn run_detach_returns_and_the_container_keeps_running() {
    let f = Fixture::new();
    f.set_script("while :; do date >> /tmp/alive; sleep 0.1; done");
    let out = f.rt(["run", "--detach", "--bundle", f.bundle_dir(), f.id()]);
    assert!(out.status.success(), "{}", show(&out));
    let state = f.state();
    assert_eq!(state["status"], "running", "{state}");
    let pid = state["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
    let before = lines_in(&f.rootfs_file("/tmp/alive"));
    wait_until("the detached container to keep working", || {
        lines_in(&f.rootfs_file("/tmp/alive")) > before + 1
    });
    f.rt_ok(["delete", "--force", f.id()]);
    f.assert_gone();
}

// ---------------------------------------------------------------------------
// delete

#[test]
fn delete_of_a_running_container_needs_force() {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let pid = f.create_and_start();
    let memory = f.cgroup_dir("memory");
    assert!(memory.is_dir(), "no memory cgroup {}", memory.display());

    let out = f.rt(["delete", f.id()]);
    assert_fails_with(&out, "not stopped");
    assert_eq!(f.status(), "running");
    assert!(alive(pid));

    f.rt_ok(["delete", "--force", f.id()]);
    f.assert_gone();
    assert!(!memory.exists(), "{} still exists", memory.display());
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
    assert!(!alive(pid), "init {pid} survived delete --force");
    assert!(leftover_processes(f.temp.path(), f.id()).is_empty());
}

#[test]
fn delete_force_of_a_missing_container_succeeds() {
    let f = Fixture::new();
    let out = f.rt(["delete", "--force", f.id()]);
    assert!(out.status.success(), "{}", show(&out));
    let out = f.rt(["delete", f.id()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("container does not exist"),
        "{}",
        show(&out)
    );
}

#[test]
fn delete_of_a_created_container_kills_it() {
    let f = Fixture::new();
    f.set_script("touch /tmp/ran");
    let pid = f.create();
    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
    assert!(!alive(pid), "init {pid} survived delete");
    assert!(!f.rootfs_file("/tmp/ran").exists(), "the program ran");
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

#[test]
fn duplicate_id_fails_and_leaves_the_first_container() {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let pid = f.create();
    let other = BusyboxBundle::create(f.temp.subdir("other"));
    let out = f.rt(["create", "--bundle", other.dir().to_str().unwrap(), f.id()]);
    assert_fails_with(&out, "container with given ID already exists");
    let out = f.rt(["create", "--bundle", f.bundle_dir(), f.id()]);
    assert_fails_with(&out, "container with given ID already exists");
    let state = f.state();
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["bundle"], f.bundle_dir());
    assert!(alive(pid));
    assert!(f.cgroup_dir("memory").is_dir());
    // The first container still starts.
    f.rt_ok(["start", f.id()]);
    assert_eq!(f.status(), "running");
}

// ---------------------------------------------------------------------------
// Errors leave nothing behind

fn create_fails(f: &Fixture, bundle: &str, needle: &str) -> Output {
    let out = f.rt(["create", "--bundle", bundle, f.id()]);
    assert_fails_with(&out, needle);
    f.assert_nothing_left();
    out
}

#[test]
fn missing_bundle_dir() {
    let f = Fixture::new();
    let missing = f.temp.path().join("no-such-bundle");
    create_fails(&f, missing.to_str().unwrap(), missing.to_str().unwrap());
}

#[test]
fn missing_config_json() {
    let f = Fixture::new();
    fs::remove_file(f.bundle.dir().join("config.json")).unwrap();
    create_fails(&f, f.bundle_dir(), "config.json");
}

#[test]
fn invalid_config_json() {
    let f = Fixture::new();
    fs::write(f.bundle.dir().join("config.json"), "{ \"ociVersion\": ").unwrap();
    create_fails(&f, f.bundle_dir(), "config.json");
}

#[test]
fn unknown_namespace_type() {
    let f = Fixture::new();
    let mut config = f.bundle.config_json();
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "type": "bogus" }));
    f.bundle.write_config(&config);
    create_fails(&f, f.bundle_dir(), "bogus");
}

#[test]
fn unknown_capability() {
    let f = Fixture::new();
    let mut config = f.bundle.config_json();
    config["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_BOGUS"));
    f.bundle.write_config(&config);
    create_fails(&f, f.bundle_dir(), "CAP_BOGUS");
}

#[test]
fn missing_rootfs() {
    let f = Fixture::new();
    let mut config = f.bundle.config_json();
    let missing = f.bundle.dir().join("no-rootfs");
    config["root"]["path"] = json!(missing.to_str().unwrap());
    f.bundle.write_config(&config);
    let out = create_fails(&f, f.bundle_dir(), ") does not exist");
    let err = stderr(&out);
    assert!(err.contains("rootfs ("), "{err}");
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

#[test]
fn missing_executable_fails_create() {
    let f = Fixture::new();
    f.set_args(&["no-such-binary-here"]);
    create_fails(&f, f.bundle_dir(), "executable file not found in $PATH");
}

#[test]
fn missing_executable_fails_run() {
    let f = Fixture::new();
    f.set_args(&["no-such-binary-here", "arg"]);
    let out = f.rt(["run", "--bundle", f.bundle_dir(), f.id()]);
    assert_fails_with(&out, "executable file not found in $PATH");
    assert!(
        stderr(&out).contains("no-such-binary-here"),
        "{}",
        show(&out)
    );
    f.assert_nothing_left();
}

// ---------------------------------------------------------------------------
// --log

#[test]
fn json_log_on_failure_is_one_error_object() {
    let f = Fixture::new();
    let log = f.temp.path().join("log.json");
    let mut config = f.bundle.config_json();
    config["root"]["path"] = json!("no-rootfs");
    f.bundle.write_config(&config);
    let out = f.rt([
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        f.bundle_dir(),
        f.id(),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let text = read_file(&log);
    assert_eq!(text.lines().count(), 1, "want exactly one line: {text:?}");
    // podman unmarshals the whole file as one object.
    let value = parse_json(&text);
    assert!(value.is_object(), "{value}");
    assert_eq!(value["level"], "error");
    let msg = value["msg"].as_str().expect("msg");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(
        value["time"].as_str().is_some_and(|t| !t.is_empty()),
        "{value}"
    );
    f.assert_nothing_left();

    // The podman spelling (--flag=value) on a missing container.
    let log2 = f.temp.path().join("log2.json");
    let out = f.rt([
        format!("--log={}", log2.display()).as_str(),
        "--log-format=json",
        "state",
        f.id(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let value = parse_json(&read_file(&log2));
    assert_eq!(value["level"], "error");
    assert_eq!(value["msg"], "container does not exist");
}

#[test]
fn json_log_on_success_is_empty() {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let log = f.temp.path().join("log.json");
    let log_args = ["--log", log.to_str().unwrap(), "--log-format", "json"];
    let with_log = |args: &[&str]| {
        let mut all: Vec<&str> = log_args.to_vec();
        all.extend_from_slice(args);
        f.rt_ok(all)
    };
    with_log(&["create", "--bundle", f.bundle_dir(), f.id()]);
    with_log(&["start", f.id()]);
    with_log(&["state", f.id()]);
    with_log(&["kill", f.id(), "9"]);
    f.wait_status("stopped");
    with_log(&["delete", f.id()]);
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text, "", "the log of successful commands is not empty");
}

// ---------------------------------------------------------------------------
// list, ps

#[test]
fn list_shows_containers_in_table_json_and_quiet_forms() {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let running_pid = f.create_and_start();

    let second = BusyboxBundle::create(f.temp.subdir("second"));
    let _second_container = f.runtime.guard(second.unique());
    let _second_cgroup = second.cgroup_guard();
    let mut config = second.config_json();
    config["process"]["args"] = json!(["sleep", "1000"]);
    second.write_config(&config);
    f.rt_ok([
        "create",
        "--bundle",
        second.dir().to_str().unwrap(),
        second.unique(),
    ]);
    let created_pid = f.runtime.state(second.unique()).unwrap()["pid"].clone();

    let table = f.rt_ok(["list"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{table}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{table}");
    let row = |id: &str| {
        rows.iter()
            .find(|r| r[0] == id)
            .unwrap_or_else(|| panic!("{id} not in\n{table}"))
            .clone()
    };
    let first = row(f.id());
    assert_eq!(first[1], running_pid.to_string());
    assert_eq!(first[2], "running");
    assert_eq!(first[3], f.bundle_dir());
    let other = row(second.unique());
    assert_eq!(other[1], created_pid.to_string());
    assert_eq!(other[2], "created");
    assert_eq!(other[3], second.dir().to_str().unwrap());

    let json = parse_json(&f.rt_ok(["list", "--format", "json"]));
    let array = json.as_array().expect("list --format json is an array");
    assert_eq!(array.len(), 2, "{json}");
    let entry = |id: &str| {
        array
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {json}"))
    };
    assert_eq!(entry(f.id())["status"], "running");
    assert_eq!(entry(f.id())["pid"], running_pid);
    assert_eq!(entry(f.id())["bundle"], f.bundle_dir());
    assert_eq!(entry(second.unique())["status"], "created");
    assert_eq!(entry(second.unique())["pid"], created_pid);

    let quiet = f.rt_ok(["list", "-q"]);
    let mut ids: Vec<&str> = quiet.lines().collect();
    ids.sort_unstable();
    let mut want = [f.id(), second.unique()];
    want.sort_unstable();
    assert_eq!(ids, want, "{quiet}");
}

/// A running container whose init (`sleep 2000`) has a child (`sleep 1000`);
/// returns the init pid once both exist.
fn container_with_a_child(f: &Fixture) -> i32 {
    f.set_script("sleep 1000 & exec sleep 2000");
    let pid = f.create_and_start();
    // Until the shell has exec'd, the init's cmdline is still `sh -c ...`.
    wait_until("sleep 1000 and sleep 2000 in the container", || {
        let out = f.rt_ok(["ps", "--format", "json", f.id()]);
        let mut commands: Vec<String> = parse_json(&out)
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).map(cmdline).collect())
            .unwrap_or_default();
        commands.sort();
        commands == ["sleep 1000", "sleep 2000"]
    });
    pid
}

fn cmdline(pid: i64) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

#[test]
fn ps_json_lists_the_containers_pids() {
    let f = Fixture::new();
    let init = container_with_a_child(&f);
    let pids = parse_json(&f.rt_ok(["ps", "--format", "json", f.id()]));
    let pids: Vec<i64> = pids
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().expect("pid numbers"))
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&(init as i64)), "init {init} not in {pids:?}");
    let mut commands: Vec<String> = pids.iter().map(|p| cmdline(*p)).collect();
    commands.sort();
    assert_eq!(commands, ["sleep 1000", "sleep 2000"]);
    assert!(!pids.contains(&(std::process::id() as i64)));
}

#[test]
fn ps_table_shows_only_the_containers_processes() {
    let f = Fixture::new();
    let init = container_with_a_child(&f);
    let table = f.rt_ok(["ps", f.id()]);
    let mut lines = table.lines();
    let header = lines.next().expect("a header");
    let pid_col = header
        .split_whitespace()
        .position(|c| c == "PID")
        .unwrap_or_else(|| panic!("no PID column: {table}"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{table}");
    let mut pids: Vec<i32> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(pid_col).unwrap().parse().unwrap())
        .collect();
    pids.sort_unstable();
    assert!(pids.contains(&init), "{table}");
    assert!(rows.iter().any(|r| r.contains("sleep 1000")), "{table}");
    assert!(rows.iter().any(|r| r.contains("sleep 2000")), "{table}");
    let json: Vec<i32> =
        serde_json::from_str(&f.rt_ok(["ps", "--format", "json", f.id()])).unwrap();
    assert_eq!(pids, json);
}

// ---------------------------------------------------------------------------
// exec

fn running_sleeper(f: &Fixture) -> i32 {
    f.set_args(&["sleep", "1000"]);
    let pid = f.create_and_start();
    assert_eq!(f.status(), "running");
    pid
}

#[test]
fn exec_args_with_env_cwd_and_user() {
    let f = Fixture::new();
    running_sleeper(&f);
    let out = f.rt_ok(["exec", "--env", "X=1", f.id(), "sh", "-c", "echo $X"]);
    assert_eq!(out, "1\n");
    // Flags after the command belong to the command.
    let out = f.rt_ok(["exec", f.id(), "echo", "--env", "Y"]);
    assert_eq!(out, "--env Y\n");
    let out = f.rt_ok(["exec", "--cwd", "/tmp", f.id(), "pwd"]);
    assert_eq!(out, "/tmp\n");
    // --no-new-privs: the exec'd process has the flag, the container's
    // own processes keep what the config said.
    let status = "grep NoNewPrivs /proc/self/status";
    let out = f.rt_ok(["exec", "--no-new-privs", f.id(), "sh", "-c", status]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
    let out = f.rt_ok([
        "exec",
        "--user",
        "1000:1000",
        f.id(),
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(out, "1000\n1000\n");
    // Runs inside the container: its hostname and its pid namespace.
    let out = f.rt_ok(["exec", f.id(), "hostname"]);
    assert_eq!(out, "keel\n");
    let out = f.rt_ok(["exec", f.id(), "cat", "/proc/1/cmdline"]);
    assert_eq!(out, "sleep\x001000\x00");
}

/// An exec'd process gets the container's OOM score, not its caller's (a
/// containerd shim runs at its daemon's + 1), as runc gives it.
#[test]
fn exec_takes_the_container_s_oom_score() {
    let f = Fixture::new();
    let mut config = f.config_with_args(&["sleep", "1000"]);
    config["process"]["oomScoreAdj"] = json!(7);
    f.bundle.write_config(&config);
    f.create_and_start();
    let mut exec = std::process::Command::new(bin());
    exec.args(["--root"]).arg(f.runtime.root()).args([
        "exec",
        f.id(),
        "cat",
        "/proc/self/oom_score_adj",
    ]);
    // The caller's own score is 9 (only ever raised: no capability needed).
    // SAFETY: in the child before exec, writing our own /proc file.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut exec, || {
            std::fs::write("/proc/self/oom_score_adj", "9")
        });
    }
    let out = exec.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "7\n");
}

/// Its state directory wiped while it runs: called from its bundle (as
/// containerd's shim calls the runtime), keel still kills the container
/// through the cgroup config.json names, and `delete` removes that cgroup
/// while answering runc's "container does not exist".
#[test]
fn a_container_whose_state_was_wiped_is_still_killed_from_its_bundle() {
    let f = Fixture::new();
    let pid = running_sleeper(&f);
    fs::remove_dir_all(f.runtime.root().join(f.id())).unwrap();
    let rt = |args: &[&str], dir: &Path| {
        std::process::Command::new(bin())
            .arg("--root")
            .arg(f.runtime.root())
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    // From anywhere else there is nothing to go by.
    let out = rt(&["kill", f.id(), "KILL"], f.temp.path());
    assert!(!out.status.success());
    assert!(
        show(&out).contains("container does not exist"),
        "{}",
        show(&out)
    );
    assert!(alive(pid));
    let out = rt(&["kill", f.id(), "KILL"], f.bundle.dir());
    assert!(out.status.success(), "{}", show(&out));
    wait_until("the container's process is gone", || !alive(pid));
    let out = rt(&["delete", f.id()], f.bundle.dir());
    assert!(
        show(&out).contains("container does not exist"),
        "{}",
        show(&out)
    );
    let controller = if cgroup_v2_only() { "" } else { "freezer" };
    assert!(!f.cgroup_dir(controller).exists());
}

#[test]
fn exec_with_a_process_json() {
    let f = Fixture::new();
    running_sleeper(&f);
    let process = json!({
        "terminal": false,
        "user": { "uid": 1000, "gid": 1000 },
        "args": ["sh", "-c", "echo from-process $FOO; id -u; pwd"],
        "env": ["PATH=/bin:/usr/bin", "FOO=bar"],
        "cwd": "/home/keel"
    });
    let path = f.temp.path().join("process.json");
    fs::write(&path, process.to_string()).unwrap();
    let out = f.rt_ok(["exec", "--process", path.to_str().unwrap(), f.id()]);
    assert_eq!(out, "from-process bar\n1000\n/home/keel\n");
}

#[test]
fn exec_returns_the_exit_status() {
    let f = Fixture::new();
    running_sleeper(&f);
    let out = f.rt(["exec", f.id(), "sh", "-c", "echo x; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert_eq!(stdout(&out), "x\n");
    assert_eq!(f.status(), "running");
}

#[test]
fn exec_detach_writes_the_pid_file() {
    let f = Fixture::new();
    let init = running_sleeper(&f);
    let pid_file = f.temp.path().join("exec.pid");
    let out = f.rt([
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        f.id(),
        "sleep",
        "999",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let pid: i32 = read_file(&pid_file)
        .trim()
        .parse()
        .expect("a pid in the pid file");
    assert!(alive(pid), "exec'd process {pid} is not alive");
    assert_eq!(cmdline(pid as i64), "sleep 999");
    let ns = |p: i32| fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_eq!(ns(pid), ns(init), "not in the container's pid namespace");
    let mnt = |p: i32| fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_eq!(
        mnt(pid),
        mnt(init),
        "not in the container's mount namespace"
    );
    let cgroup = read_file(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(cgroup.contains(&f.bundle.cgroups_path()), "{cgroup}");
    let pids: Vec<i32> =
        serde_json::from_str(&f.rt_ok(["ps", "--format", "json", f.id()])).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");
    f.rt_ok(["delete", "--force", f.id()]);
    assert!(!alive(pid), "the exec'd process survived delete --force");
}

fn cap_eff(output: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {output}"));
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap()
}

#[test]
fn exec_cap_adds_a_capability() {
    const CAP_NET_ADMIN: u64 = 1 << 12;
    let f = Fixture::new();
    running_sleeper(&f);
    let plain = f.rt_ok(["exec", f.id(), "cat", "/proc/self/status"]);
    assert_eq!(cap_eff(&plain) & CAP_NET_ADMIN, 0, "{plain}");
    let with = f.rt_ok([
        "exec",
        "--cap",
        "CAP_NET_ADMIN",
        f.id(),
        "cat",
        "/proc/self/status",
    ]);
    assert_ne!(cap_eff(&with) & CAP_NET_ADMIN, 0, "{with}");
}

#[test]
fn exec_of_a_missing_binary_fails_and_the_container_keeps_running() {
    let f = Fixture::new();
    let init = running_sleeper(&f);
    let out = f.rt(["exec", f.id(), "no-such-binary-here"]);
    assert_fails_with(&out, "executable file not found in $PATH");
    assert_eq!(f.status(), "running");
    assert!(alive(init));
    let pids: Vec<i32> =
        serde_json::from_str(&f.rt_ok(["ps", "--format", "json", f.id()])).unwrap();
    assert_eq!(pids, [init], "a failed exec left a process");
}

#[test]
fn exec_in_a_missing_container_fails() {
    let f = Fixture::new();
    let out = f.rt(["exec", f.id(), "true"]);
    assert_fails_with(&out, "container does not exist");
}

// ---------------------------------------------------------------------------
// pause, resume

#[test]
fn pause_freezes_and_resume_thaws() {
    let f = Fixture::new();
    f.set_script("i=0; while :; do i=$((i+1)); echo $i >> /tmp/counter; sleep 0.05; done");
    f.create_and_start();
    let counter = f.rootfs_file("/tmp/counter");
    wait_until("the counter to start", || lines_in(&counter) > 2);

    f.rt_ok(["pause", f.id()]);
    assert_eq!(f.status(), "paused");
    let frozen = lines_in(&counter);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            lines_in(&counter),
            frozen,
            "the counter advanced while paused"
        );
    }
    let out = f.rt(["pause", f.id()]);
    assert!(
        !out.status.success(),
        "pause of a paused container: {}",
        show(&out)
    );
    let out = f.rt(["exec", f.id(), "true"]);
    assert_fails_with(&out, "paused");

    f.rt_ok(["resume", f.id()]);
    assert_eq!(f.status(), "running");
    wait_until("the counter to advance after resume", || {
        lines_in(&counter) > frozen + 2
    });
    let out = f.rt(["resume", f.id()]);
    assert!(
        !out.status.success(),
        "resume of a running container: {}",
        show(&out)
    );
    assert_eq!(f.status(), "running");
}

#[test]
fn a_paused_container_can_be_deleted_with_force() {
    let f = Fixture::new();
    let pid = running_sleeper(&f);
    f.rt_ok(["pause", f.id()]);
    assert_eq!(f.status(), "paused");
    f.rt_ok(["delete", "--force", f.id()]);
    f.assert_gone();
    assert!(!alive(pid));
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

// ---------------------------------------------------------------------------
// update, events

fn memory_limit(f: &Fixture) -> String {
    let file = if cgroup_v2_only() {
        f.cgroup_dir("memory").join("memory.max")
    } else {
        f.cgroup_dir("memory").join("memory.limit_in_bytes")
    };
    read_file(&file).trim().to_string()
}

fn pids_max(f: &Fixture) -> String {
    read_file(&f.cgroup_dir("pids").join("pids.max"))
        .trim()
        .to_string()
}

#[test]
fn update_memory_and_pids() {
    let f = Fixture::new();
    running_sleeper(&f);

    f.rt_ok(["update", "--memory", "64m", f.id()]);
    assert_eq!(memory_limit(&f), "67108864");

    let file = f.temp.path().join("resources.json");
    fs::write(&file, r#"{"pids":{"limit":42}}"#).unwrap();
    f.rt_ok(["update", "-r", file.to_str().unwrap(), f.id()]);
    assert_eq!(pids_max(&f), "42");
    // The earlier update is kept.
    assert_eq!(memory_limit(&f), "67108864");

    // containerd's form: LinuxResources JSON on stdin.
    let child = f
        .runtime
        .command(["update", "--resources=-", f.id()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(tempfile::tempfile().unwrap())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    child
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"memory":{"limit":33554432},"pids":{"limit":17}}"#)
        .unwrap();
    let status = wait_child(&mut child.0, Duration::from_secs(60));
    assert!(status.success(), "update --resources=-: {status}");
    assert_eq!(memory_limit(&f), "33554432");
    assert_eq!(pids_max(&f), "17");

    let out = f.rt(["update", "--memory", "64m", "no-such-container"]);
    assert_fails_with(&out, "container does not exist");
}

#[test]
fn events_stats_prints_one_stats_object() {
    let f = Fixture::new();
    running_sleeper(&f);
    let out = f.rt_ok(["events", "--stats", f.id()]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let event = parse_json(&out);
    assert_eq!(event["type"], "stats", "{event}");
    assert_eq!(event["id"], f.id());
    let usage = event["data"]["memory"]["usage"]["usage"]
        .as_u64()
        .unwrap_or(0);
    assert!(usage > 0, "memory usage: {event}");
    let current = event["data"]["pids"]["current"].as_u64().unwrap_or(0);
    assert!(current >= 1, "pids.current: {event}");
}

// ---------------------------------------------------------------------------
// features, spec, --version

#[test]
fn features_lists_versions_and_all_namespaces() {
    require_root();
    let temp = TempRoot::new();
    let runtime = Runtime::with_temp_root(bin(), &temp);
    let features = parse_json(&runtime.run_ok(["features"]));
    assert!(
        features["ociVersionMin"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{features}"
    );
    assert!(
        features["ociVersionMax"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{features}"
    );
    let namespaces: Vec<&str> = features["linux"]["namespaces"]
        .as_array()
        .expect("linux.namespaces")
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for ns in [
        "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
    ] {
        assert!(namespaces.contains(&ns), "{ns} missing from {namespaces:?}");
    }
}

#[test]
fn spec_writes_a_config_and_refuses_to_overwrite() {
    require_root();
    let temp = TempRoot::new();
    let runtime = Runtime::with_temp_root(bin(), &temp);
    let dir = temp.subdir("spec");
    let out = runtime.run(["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let written = read_file(&dir.join("config.json"));
    let config = parse_json(&written);
    assert!(config["ociVersion"].is_string(), "{config}");
    assert!(config["process"]["args"].is_array(), "{config}");
    assert!(config["root"]["path"].is_string(), "{config}");

    let out = runtime.run(["spec", "--bundle", dir.to_str().unwrap()]);
    assert_fails_with(&out, "config.json");
    assert_eq!(read_file(&dir.join("config.json")), written);

    // In the current directory, as `runc spec` is used.
    let cwd = temp.subdir("cwd");
    let out = runtime
        .command(["spec"])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(cwd.join("config.json").is_file());
}

#[test]
fn version_has_runc_style_lines() {
    let out = Command::new(bin())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .next()
            .unwrap_or("")
            .starts_with("keel-runtime version"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("spec: ")), "{text}");
}

// ---------------------------------------------------------------------------
// hooks

/// A hook that saves the state JSON from stdin to `dir/<name>.json`.
fn saving_hook(dir: &Path, name: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {}/{name}.json", dir.display())],
        "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    })
}

#[test]
fn hooks_run_at_their_times_with_the_state() {
    let f = Fixture::new();
    let hooks = f.temp.subdir("hooks");
    let mut config = f.config_with_args(&["sh", "-c", "touch /tmp/ran; exec sleep 1000"]);
    config["hooks"] = json!({
        "createRuntime": [saving_hook(&hooks, "createRuntime")],
        "prestart": [saving_hook(&hooks, "prestart")],
        "poststart": [saving_hook(&hooks, "poststart")],
        "poststop": [saving_hook(&hooks, "poststop")]
    });
    f.bundle.write_config(&config);
    let saved = |name: &str| parse_json(&read_file(&hooks.join(format!("{name}.json"))));

    let pid = f.create();
    for name in ["createRuntime", "prestart"] {
        let state = saved(name);
        assert_eq!(state["status"], "creating", "{name}: {state}");
        assert_eq!(state["pid"], pid, "{name}: {state}");
        assert_eq!(state["id"], f.id(), "{name}: {state}");
        assert_eq!(state["bundle"], f.bundle_dir(), "{name}: {state}");
    }
    assert!(
        !hooks.join("poststart.json").exists(),
        "poststart ran at create"
    );
    assert!(
        !hooks.join("poststop.json").exists(),
        "poststop ran at create"
    );
    assert!(!f.rootfs_file("/tmp/ran").exists());

    f.rt_ok(["start", f.id()]);
    let state = saved("poststart");
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["pid"], pid, "{state}");
    assert_eq!(state["id"], f.id());
    assert!(
        !hooks.join("poststop.json").exists(),
        "poststop ran at start"
    );
    wait_until("the program to run", || f.rootfs_file("/tmp/ran").exists());

    f.rt_ok(["kill", f.id(), "KILL"]);
    f.wait_status("stopped");
    assert!(
        !hooks.join("poststop.json").exists(),
        "poststop ran before delete"
    );
    f.rt_ok(["delete", f.id()]);
    let state = saved("poststop");
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["id"], f.id());
    assert_eq!(state["bundle"], f.bundle_dir());
    f.assert_gone();
}

#[test]
fn failing_prestart_hook_fails_create_and_leaves_nothing() {
    let f = Fixture::new();
    let mut config = f.config_with_args(&["sleep", "1000"]);
    config["hooks"] = json!({
        "prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", "echo hook-said-no >&2; exit 7"]
        }]
    });
    f.bundle.write_config(&config);
    let out = create_fails(&f, f.bundle_dir(), "prestart");
    // Which hook, how it ended and what it said.
    assert!(
        stderr(&out).contains("prestart hook /bin/sh failed: exit status 7: hook-said-no"),
        "{}",
        show(&out)
    );
}

#[test]
fn hook_timeout_fails_create() {
    let f = Fixture::new();
    let mut config = f.config_with_args(&["sleep", "1000"]);
    // The bundle's own busybox, so that a leaked hook would show up as a
    // process whose exe is in the temp dir.
    config["hooks"] = json!({
        "createRuntime": [{
            "path": f.rootfs_file("/bin/busybox").to_str().unwrap(),
            "args": ["sleep", "30"],
            "timeout": 1
        }]
    });
    f.bundle.write_config(&config);
    create_fails(&f, f.bundle_dir(), "timed out");
}

// ---------------------------------------------------------------------------
// More of what callers rely on

#[test]
fn exec_env_overrides_the_containers_env() {
    // podman exec -e / docker exec -e with a variable the image already sets:
    // the exec's value wins (runc sets the variables in order, later wins).
    let f = Fixture::new();
    running_sleeper(&f);
    let out = f.rt_ok([
        "exec",
        "--env",
        "TERM=dumb",
        f.id(),
        "sh",
        "-c",
        "echo $TERM; env | grep -c '^TERM='",
    ]);
    assert_eq!(out, "dumb\n1\n");
}

#[test]
fn exec_sets_home_from_passwd() {
    let f = Fixture::new();
    running_sleeper(&f);
    let out = f.rt_ok([
        "exec",
        "--user",
        "1000:1000",
        f.id(),
        "sh",
        "-c",
        "echo $HOME",
    ]);
    assert_eq!(out, "/home/keel\n");
    let out = f.rt_ok(["exec", f.id(), "sh", "-c", "echo $HOME"]);
    assert_eq!(out, "/root\n");
}

#[test]
fn exec_passes_stdin_through() {
    let f = Fixture::new();
    running_sleeper(&f);
    let stdout_file = tempfile::tempfile().unwrap();
    let child = f
        .runtime
        .command(["exec", f.id(), "sh", "-c", "cat; echo end"])
        .stdin(Stdio::piped())
        .stdout(stdout_file.try_clone().unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keel-runtime exec");
    let mut child = ChildGuard(child);
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(b"line one\nline two\n").unwrap();
    drop(stdin);
    let status = wait_child(&mut child.0, Duration::from_secs(60));
    assert!(status.success(), "exec: {status}");
    let text = read_file(Path::new(&format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        stdout_file.as_raw_fd()
    })));
    assert_eq!(text, "line one\nline two\nend\n");
}

#[test]
fn exec_returns_137_when_its_process_is_killed() {
    let f = Fixture::new();
    running_sleeper(&f);
    let out = f.rt(["exec", f.id(), "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{}", show(&out));
    assert_eq!(f.status(), "running");
}

#[test]
fn kill_all_kills_every_process() {
    let f = Fixture::new();
    let init = container_with_a_child(&f);
    let pids: Vec<i32> =
        serde_json::from_str(&f.rt_ok(["ps", "--format", "json", f.id()])).unwrap();
    assert_eq!(pids.len(), 2);
    f.rt_ok(["kill", "--all", f.id(), "9"]);
    f.wait_status("stopped");
    for pid in pids {
        wait_until(&format!("pid {pid} to die"), || !alive(pid));
    }
    assert!(!alive(init));
    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
}

#[test]
fn delete_kills_what_outlived_init_without_a_pid_namespace() {
    // Without a pid namespace, init's children survive it; delete must not
    // leave them (or the cgroup) behind.
    let f = Fixture::new();
    let mut config = f.config_with_args(&[
        "sh",
        "-c",
        "sleep 1000 & echo $! > /tmp/child; exec sleep 2000",
    ]);
    config["linux"]["namespaces"] = json!([
        { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
    ]);
    f.bundle.write_config(&config);
    let init = f.create_and_start();
    wait_until("the child pid", || {
        fs::read_to_string(f.rootfs_file("/tmp/child")).is_ok_and(|t| t.ends_with('\n'))
    });
    let child: i32 = read_file(&f.rootfs_file("/tmp/child"))
        .trim()
        .parse()
        .unwrap();
    assert!(alive(child));
    // TERM reaches the init: it is not a pid 1 here.
    f.rt_ok(["kill", f.id(), "TERM"]);
    f.wait_status("stopped");
    assert!(!alive(init));
    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
    wait_until("the orphaned child to be killed", || !alive(child));
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let f = Fixture::new();
    f.set_script("exit 4");
    let out = f.rt(["run", "--keep", "--bundle", f.bundle_dir(), f.id()]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let state = f.state();
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["pid"], 0);
    f.rt_ok(["delete", f.id()]);
    f.assert_gone();
    assert!(cgroup_dirs(Path::new(&f.bundle.cgroups_path())).is_empty());
}

#[test]
fn run_detach_writes_the_pid_file() {
    let f = Fixture::new();
    f.set_args(&["sleep", "1000"]);
    let pid_file = f.temp.path().join("run.pid");
    f.rt_ok([
        "run",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--bundle",
        f.bundle_dir(),
        f.id(),
    ]);
    let state = f.state();
    assert_eq!(state["status"], "running");
    assert_eq!(read_file(&pid_file).trim(), state["pid"].to_string());
}

#[test]
fn commands_on_a_stopped_container() {
    let f = Fixture::new();
    let pid = running_sleeper(&f);
    f.rt_ok(["kill", f.id(), "KILL"]);
    f.wait_status("stopped");
    assert!(!alive(pid));
    let out = f.rt(["start", f.id()]);
    assert_fails_with(&out, "stopped");
    let out = f.rt(["pause", f.id()]);
    assert!(
        !out.status.success(),
        "pause of a stopped container: {}",
        show(&out)
    );
    let out = f.rt(["events", "--stats", f.id()]);
    assert!(
        !out.status.success(),
        "events of a stopped container: {}",
        show(&out)
    );
    let out = f.rt(["update", "--memory", "64m", f.id()]);
    assert!(
        !out.status.success(),
        "update of a stopped container: {}",
        show(&out)
    );
    let listed = parse_json(&f.rt_ok(["list", "--format", "json"]));
    assert_eq!(listed[0]["status"], "stopped", "{listed}");
    assert_eq!(listed[0]["pid"], 0, "{listed}");
}

#[test]
fn user_from_config_with_home_and_groups() {
    let f = Fixture::new();
    let mut config = f.config_with_args(&["sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    config["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [5, 7] });
    f.bundle.write_config(&config);
    let out = f.rt_ok(["run", "--bundle", f.bundle_dir(), f.id()]);
    assert_eq!(out, "1000\n1000\n1000 5 7\n/home/keel\n");
}

#[test]
fn ps_takes_ps_options() {
    let f = Fixture::new();
    let init = container_with_a_child(&f);
    let table = f.rt_ok(["ps", f.id(), "-o", "pid,args"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["PID", "COMMAND"], "{table}");
    let mut rows: Vec<String> = lines.map(|l| l.trim().to_string()).collect();
    rows.sort();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows.iter().any(|r| *r == format!("{init} sleep 2000")),
        "{table}"
    );
    assert!(rows.iter().any(|r| r.ends_with(" sleep 1000")), "{table}");
}

#[test]
fn events_streams_stats_until_the_container_stops() {
    let f = Fixture::new();
    running_sleeper(&f);
    let out_file = tempfile::NamedTempFile::new_in(f.temp.path()).unwrap();
    let child = f
        .runtime
        .command(["events", "--interval", "100ms", f.id()])
        .stdin(Stdio::null())
        .stdout(out_file.reopen().unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keel-runtime events");
    let mut child = ChildGuard(child);
    wait_until("two stats events", || lines_in(out_file.path()) >= 2);
    f.rt_ok(["kill", f.id(), "KILL"]);
    let status = wait_child(&mut child.0, Duration::from_secs(60));
    assert!(
        status.success(),
        "events after the container stopped: {status}"
    );
    for line in read_file(out_file.path()).lines() {
        let event = parse_json(line);
        assert_eq!(event["type"], "stats", "{event}");
        assert_eq!(event["id"], f.id(), "{event}");
    }
}

#[test]
fn preserve_fds_passes_extra_fds() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let f = Fixture::new();
    f.set_script("echo via-fd3 >&3");
    let target = f.temp.path().join("fd3.txt");
    let file = fs::File::create(&target).unwrap();
    let raw = file.as_raw_fd();
    let mut command = f.runtime.command([
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        f.bundle_dir(),
        f.id(),
    ]);
    command.stdin(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; it only touches fds of the child.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it then.
            let ok = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if ok < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = keel_testutil::output_via_files(&mut command, Duration::from_secs(60)).unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(read_file(&target), "via-fd3\n");
    f.assert_gone();
}

#[test]
fn container_mounts_stay_out_of_the_host() {
    let f = Fixture::new();
    let before: Vec<String> = mountinfo::read_self()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    let out_dir = f.temp.subdir("out");
    let mut config = f.config_with_args(&["sleep", "1000"]);
    config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/out", "type": "bind",
        "source": out_dir.to_str().unwrap(), "options": ["rbind", "rw"]
    }));
    f.bundle.write_config(&config);
    f.create_and_start();
    let after = mountinfo::read_self().unwrap();
    let new: Vec<String> = after
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .filter(|m| !before.contains(m))
        .filter(|m| m.contains(f.temp.path().to_str().unwrap()))
        .collect();
    assert!(
        new.is_empty(),
        "container mounts visible on the host: {new:?}"
    );
    // The container sees its own.
    let inside = f.rt_ok(["exec", f.id(), "cat", "/proc/self/mountinfo"]);
    assert!(inside.contains(" /out "), "{inside}");
    assert!(inside.contains(" /proc "), "{inside}");
}

#[test]
fn foreground_run_runs_poststop() {
    let f = Fixture::new();
    let hooks = f.temp.subdir("hooks");
    let mut config = f.config_with_args(&["true"]);
    config["hooks"] = json!({ "poststop": [saving_hook(&hooks, "poststop")] });
    f.bundle.write_config(&config);
    f.rt_ok(["run", "--bundle", f.bundle_dir(), f.id()]);
    let state = parse_json(&read_file(&hooks.join("poststop.json")));
    assert_eq!(state["status"], "stopped", "{state}");
    assert_eq!(state["id"], f.id());
    f.assert_gone();
}

#[test]
fn delete_force_cleans_up_after_a_killed_create() {
    // containerd kills a `create` that hangs (here: in a prestart hook) and
    // then runs `delete --force`: that must leave no state, cgroup or init.
    let f = Fixture::new();
    let hook_pid_file = f.temp.path().join("hook.pid");
    let mut config = f.config_with_args(&["sleep", "1000"]);
    config["hooks"] = json!({
        "prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo $$ > {}; exec sleep 1000", hook_pid_file.display())],
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
        }]
    });
    f.bundle.write_config(&config);
    let child = f
        .runtime
        .command(["create", "--bundle", f.bundle_dir(), f.id()])
        .stdin(Stdio::null())
        .stdout(tempfile::tempfile().unwrap())
        .stderr(tempfile::tempfile().unwrap())
        .spawn()
        .expect("spawn keel-runtime create");
    let mut child = ChildGuard(child);
    wait_until("the prestart hook to run", || {
        fs::read_to_string(&hook_pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let hook: i32 = read_file(&hook_pid_file).trim().parse().unwrap();
    // The hook outlives the runtime (as with runc); the test started it, so
    // the test kills it.
    let _hook = keel_testutil::ProcessGuard(hook);
    // The init is in the cgroup by the time prestart hooks run.
    let init_pids = cgroup_pids(&f);
    assert!(
        !init_pids.is_empty(),
        "no init in the cgroup during prestart"
    );
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let out = f.rt(["delete", "--force", f.id()]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!f.temp.root().join(f.id()).exists(), "state dir left");
    for pid in init_pids {
        wait_until(&format!("init {pid} to die"), || !alive(pid));
    }
    let cgroups = cgroup_dirs(Path::new(&f.bundle.cgroups_path()));
    assert!(cgroups.is_empty(), "cgroup dirs left: {cgroups:?}");
}

/// The pids in the container's cgroup, read from the host's cgroupfs.
fn cgroup_pids(f: &Fixture) -> Vec<i32> {
    let procs = f.cgroup_dir("pids").join("cgroup.procs");
    fs::read_to_string(procs)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[test]
fn console_socket_without_terminal_is_refused() {
    let f = Fixture::new();
    let socket = f.temp.path().join("console.sock");
    let out = f.rt([
        "create",
        "--console-socket",
        socket.to_str().unwrap(),
        "--bundle",
        f.bundle_dir(),
        f.id(),
    ]);
    assert_fails_with(&out, "console socket");
    f.assert_nothing_left();
}

#[test]
fn invalid_container_id_is_refused() {
    let f = Fixture::new();
    let out = f.rt(["create", "--bundle", f.bundle_dir(), "../escape"]);
    assert_fails_with(&out, "invalid container id");
    assert!(!f.temp.path().join("escape").exists());
    f.assert_nothing_left();
}

#[test]
fn state_carries_the_annotations() {
    let f = Fixture::new();
    let mut config = f.config_with_args(&["sleep", "1000"]);
    config["annotations"] = json!({ "io.keel.test": "yes", "org.example/x": "1" });
    f.bundle.write_config(&config);
    f.create();
    let state = f.state();
    assert_eq!(state["annotations"]["io.keel.test"], "yes", "{state}");
    assert_eq!(state["annotations"]["org.example/x"], "1", "{state}");
}

#[test]
fn update_cpu_and_pids_flags() {
    let f = Fixture::new();
    running_sleeper(&f);
    f.rt_ok([
        "update",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "50000",
        "--pids-limit",
        "23",
        f.id(),
    ]);
    assert_eq!(pids_max(&f), "23");
    if cgroup_v2_only() {
        let max = read_file(&f.cgroup_dir("cpu").join("cpu.max"));
        assert_eq!(max.trim(), "50000 100000");
    } else {
        let dir = f.cgroup_dir("cpu");
        assert_eq!(read_file(&dir.join("cpu.cfs_period_us")).trim(), "100000");
        assert_eq!(read_file(&dir.join("cpu.cfs_quota_us")).trim(), "50000");
    }
}
