//! Real container engines drive keel-runtime in runc's place: containerd (through
//! `ctr` and the `io.containerd.runc.v2` shim), dockerd 20.10 (through its own
//! containerd and the same shim) and podman 4.3 (through conmon). Each test starts
//! its own engine with all its state in the test's temp dir, loads a busybox image
//! made offline, and runs, execs into, stops and removes a container, checking from
//! the host that keel-runtime made it and cleaned up after it.
//!
//! Root only. `cargo test -p keel-runtime --test engines -- --test-threads=1 --nocapture`

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_testutil::peers::{
    BUSYBOX_IMAGE, Containerd, Dockerd, Podman, busybox_image_archive, describe, pids_mentioning,
};
use keel_testutil::{
    CgroupGuard, Runtime, TempRoot, cgroup_dirs, mountinfo, require_root, runtime_bin, unique_name,
};
use serde_json::Value;

/// keel-runtime, absolute (engines run it from other working directories).
fn keel() -> PathBuf {
    let bin = runtime_bin(env!("CARGO_BIN_EXE_keel-runtime"));
    fs::canonicalize(&bin).unwrap_or_else(|e| panic!("keel-runtime at {}: {e}", bin.display()))
}

/// Polls `done` every 50 ms; panics with `what` and the last `detail()` after `timeout`.
fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            panic!("{what}: not within {timeout:?}\n{}", detail());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of `/proc/<pid>/status`, e.g. `Seccomp`.
fn proc_status(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim_end()
                .to_string()
        })
        .unwrap_or_default()
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .is_some_and(|state| state != 'Z')
}

/// Checks that keel-runtime made container `id` with init `pid` under state dir `root`:
/// its `state.json` is keel's (runc's has `init_process_pid`, keel's `pid_start`) and
/// `keel-runtime --root <root> state <id>` says running with that pid.
fn assert_made_by_keel(root: &Path, id: &str, pid: i32) {
    let state_file = root.join(id).join("state.json");
    let text = fs::read_to_string(&state_file).unwrap_or_else(|e| {
        panic!(
            "keel-runtime's state {} for the engine's container: {e}",
            state_file.display()
        )
    });
    let on_disk: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("parse {}: {e}\n{text}", state_file.display()));
    let head: String = text.chars().take(300).collect();
    assert!(
        on_disk.get("pid_start").is_some() && on_disk.get("init_process_pid").is_none(),
        "{} is not keel-runtime's state file (was the engine told to use keel-runtime?):\n{head}...",
        state_file.display()
    );
    assert_eq!(on_disk["pid"], pid, "{}:\n{head}...", state_file.display());
    let state = Runtime::new(keel(), root)
        .state(id)
        .unwrap_or_else(|| panic!("keel-runtime --root {} state {id} failed", root.display()));
    assert_eq!(state["status"], "running", "keel state: {state}");
    assert_eq!(state["pid"], pid, "keel state: {state}");
}

/// The container has its own network namespace with nothing but loopback in it.
fn assert_no_network(pid: i32) {
    let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/net")).unwrap_or_default();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "pid {pid} is in the host's network namespace"
    );
    let dev = fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let interfaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(interfaces, ["lo"], "interfaces of pid {pid}");
}

/// Mount points below `dir`.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    mountinfo::unmount_order(&mountinfo::read_self().unwrap_or_default(), dir)
}

/// Network namespaces (nsfs mounts) kept below `dir`.
fn netns_mounts_below(dir: &Path) -> Vec<PathBuf> {
    mountinfo::read_self()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.fs_type == "nsfs" && m.mount_point.starts_with(dir))
        .map(|m| m.mount_point)
        .collect()
}

/// A directory named `id` holding a `state.json`, anywhere below `dir`.
fn find_state_dir(dir: &Path, id: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).ok()?.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path();
            if entry.file_name() == id && path.join("state.json").is_file() {
                return Some(path);
            }
            stack.push(path);
        }
    }
    None
}

/// Docker 20.10's default capability set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
/// SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP), which
/// podman 4.3's default set equals too.
const ENGINE_DEFAULT_CAPS: &str = "00000000a80425fb";

// ---------------------------------------------------------------------------

#[test]
fn containerd_runs_execs_stops_and_removes_a_container_through_keel() {
    require_root();
    let keel = keel();
    let temp = TempRoot::new();
    let image = busybox_image_archive(&temp.subdir("image"));
    let id = unique_name();
    let namespace = "keel-test";
    let cgroup = format!("/{}/{id}", unique_name());
    let _cgroup = CgroupGuard(PathBuf::from(&cgroup));
    let runc_root = temp.subdir("runc-root");
    let fifo_dir = temp.subdir("fifo");
    let containerd = Containerd::start(&temp.path().join("containerd"));
    let ctr = |args: &[&str]| {
        let mut all = vec!["--namespace", namespace];
        all.extend_from_slice(args);
        containerd.ctr_ok(all)
    };

    ctr(&[
        "images",
        "import",
        "--all-platforms",
        image.to_str().unwrap(),
    ]);
    assert!(
        ctr(&["images", "ls", "-q"])
            .lines()
            .any(|l| l == BUSYBOX_IMAGE),
        "{BUSYBOX_IMAGE} not imported"
    );

    let started = Instant::now();
    ctr(&[
        "run",
        "--detach",
        "--runc-binary",
        keel.to_str().unwrap(),
        "--runc-root",
        runc_root.to_str().unwrap(),
        "--fifo-dir",
        fifo_dir.to_str().unwrap(),
        "--cgroup",
        &cgroup,
        BUSYBOX_IMAGE,
        &id,
        "sleep",
        "1000",
    ]);
    eprintln!("ctr run -d: {:?}", started.elapsed());

    // The task as containerd sees it: `TASK PID STATUS`.
    let task = |id: &str| -> Option<(i32, String)> {
        let list = containerd.ctr(["--namespace", namespace, "tasks", "ls"]);
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() == 3 && fields[0] == id)
                    .then(|| (fields[1].parse().unwrap_or(0), fields[2].to_string()))
            })
    };
    let (pid, status) = task(&id).expect("ctr tasks ls lists the container");
    assert_eq!(status, "RUNNING");
    assert!(pid > 1, "task pid {pid}");
    assert_eq!(cmdline(pid), "sleep 1000");

    // keel-runtime made it: the shim was told to use keel (options.json), and keel's
    // state for it is under --runc-root/<namespace>.
    let bundle = containerd
        .state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(namespace)
        .join(&id);
    let options = fs::read_to_string(bundle.join("options.json")).unwrap_or_default();
    assert!(
        options.contains(keel.to_str().unwrap()),
        "the shim's options.json does not name keel-runtime: {options}"
    );
    // containerd 1.6 puts the shim's socket in /run/containerd/s: it must go with the shim.
    let shim_address = fs::read_to_string(bundle.join("address")).unwrap_or_default();
    let shim_socket = PathBuf::from(shim_address.trim().trim_start_matches("unix://"));
    assert!(shim_socket.exists(), "shim socket {shim_address:?}");
    let keel_root = runc_root.join(namespace);
    assert_made_by_keel(&keel_root, &id, pid);
    assert_no_network(pid);
    // In the cgroup ctr asked for.
    let in_cgroup = cgroup_dirs(Path::new(&cgroup)).iter().any(|dir| {
        fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|p| p.lines().any(|l| l == pid.to_string()))
    });
    assert!(in_cgroup, "pid {pid} is not in cgroup {cgroup}");

    // exec: through keel-runtime exec, output back through the shim's fifos.
    let out = ctr(&[
        "tasks",
        "exec",
        "--fifo-dir",
        fifo_dir.to_str().unwrap(),
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in-container; cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert_eq!(out, "in-container\nsleep 1000 ");
    // A failing exec: the shim reads keel-runtime's error from its JSON log.
    let missing = containerd.ctr([
        "--namespace",
        namespace,
        "tasks",
        "exec",
        "--fifo-dir",
        fifo_dir.to_str().unwrap(),
        "--exec-id",
        "e2",
        &id,
        "/no/such/binary",
    ]);
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr)
                .contains("stat /no/such/binary: no such file or directory"),
        "ctr tasks exec of a missing binary: {}",
        describe(&missing)
    );
    // ps (keel-runtime ps --format json), pause and resume (keel-runtime pause/resume).
    let ps = ctr(&["tasks", "ps", &id]);
    assert!(
        ps.lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "ctr tasks ps does not list {pid}: {ps}"
    );
    ctr(&["tasks", "pause", &id]);
    assert_eq!(task(&id).map(|t| t.1).as_deref(), Some("PAUSED"));
    ctr(&["tasks", "resume", &id]);
    assert_eq!(task(&id).map(|t| t.1).as_deref(), Some("RUNNING"));

    // stop: SIGKILL through keel-runtime kill; the shim sees init exit.
    ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
    wait_for(
        "the task stops after SIGKILL",
        Duration::from_secs(10),
        || task(&id).is_some_and(|(_, status)| status == "STOPPED"),
        || {
            format!(
                "task: {:?}\ncontainerd log:\n{}",
                task(&id),
                containerd.daemon().log_tail()
            )
        },
    );
    assert!(!alive(pid), "init {pid} still alive after the task stopped");
    let state = Runtime::new(&keel, &keel_root).state(&id);
    assert_eq!(
        state.as_ref().map(|s| s["status"].clone()),
        Some(Value::from("stopped")),
        "keel state after the kill: {state:?}"
    );

    // remove: task delete runs keel-runtime delete; then the container record.
    let task_delete = containerd.ctr(["--namespace", namespace, "tasks", "delete", &id]);
    assert!(
        task_delete.status.success(),
        "ctr tasks delete: {}",
        describe(&task_delete)
    );
    ctr(&["containers", "delete", &id]);
    assert!(task(&id).is_none(), "task still listed after delete");
    assert!(
        !ctr(&["containers", "ls", "-q"]).lines().any(|l| l == id),
        "container still listed after delete"
    );
    assert!(
        !keel_root.join(&id).exists(),
        "keel-runtime's state dir {} is left after delete",
        keel_root.join(&id).display()
    );
    assert!(
        cgroup_dirs(Path::new(&cgroup)).is_empty(),
        "cgroup {cgroup} is left: {:?}",
        cgroup_dirs(Path::new(&cgroup))
    );
    assert!(
        mounts_below(&bundle).is_empty(),
        "mounts left: {:?}",
        mounts_below(&bundle)
    );
    // The shim exits once its last task is deleted.
    wait_for(
        "the shim exits after the delete",
        Duration::from_secs(10),
        || pids_mentioning(&format!("-id {id} ")).is_empty(),
        || format!("left: {:?}", pids_mentioning(&format!("-id {id} "))),
    );
    assert!(!shim_socket.exists(), "{} is left", shim_socket.display());
    eprintln!("containerd: whole cycle {:?}", started.elapsed());
}

#[test]
fn dockerd_runs_execs_stops_and_removes_a_container_through_keel() {
    require_root();
    let keel = keel();
    let temp = TempRoot::new();
    let image = busybox_image_archive(&temp.subdir("image"));
    let cgroup_parent = format!("/{}", unique_name());
    let _cgroup = CgroupGuard(PathBuf::from(&cgroup_parent));
    let dockerd = Dockerd::start(temp.path(), &cgroup_parent, &[("keel", &keel)]);
    let name = unique_name();

    let loaded = dockerd.docker_ok(["load", "--input", image.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: keel-test/busybox:latest"),
        "docker load: {loaded}"
    );

    let started = Instant::now();
    let id = dockerd
        .docker_ok([
            "run",
            "--detach",
            "--name",
            &name,
            "--runtime",
            "keel",
            "--network",
            "none",
            "keel-test/busybox",
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    eprintln!("docker run -d: {:?}", started.elapsed());
    assert_eq!(id.len(), 64, "docker run printed {id:?}");

    let inspect = |format: &str| {
        dockerd
            .docker_ok(["inspect", "--format", format, &name])
            .trim()
            .to_string()
    };
    assert_eq!(
        inspect("{{.HostConfig.Runtime}} {{.State.Running}}"),
        "keel true"
    );
    let pid: i32 = inspect("{{.State.Pid}}")
        .parse()
        .expect("a pid from docker inspect");
    assert_eq!(cmdline(pid), "sleep 1000");
    let keel_dir = find_state_dir(&dockerd.exec_root(), &id).unwrap_or_else(|| {
        panic!(
            "no keel-runtime state dir for {id} under {}",
            dockerd.exec_root().display()
        )
    });
    assert_made_by_keel(keel_dir.parent().unwrap(), &id, pid);
    assert_no_network(pid);
    let in_cgroup = cgroup_dirs(&Path::new(&cgroup_parent).join(&id))
        .iter()
        .any(|dir| {
            fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|p| p.lines().any(|l| l == pid.to_string()))
        });
    assert!(in_cgroup, "pid {pid} is not in cgroup {cgroup_parent}/{id}");

    // Docker's default seccomp profile and capabilities reach the process through
    // config.json: keel loaded and applied them.
    let bundle = dockerd
        .containerd()
        .state_dir()
        .join("io.containerd.runtime.v2.task/moby")
        .join(&id);
    let config: Value =
        serde_json::from_str(&fs::read_to_string(bundle.join("config.json")).unwrap())
            .expect("the bundle's config.json");
    assert!(
        config["linux"]["seccomp"]["syscalls"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "docker gave no seccomp profile"
    );
    assert_eq!(proc_status(pid, "Seccomp"), "2", "seccomp filter mode");
    assert_eq!(proc_status(pid, "CapEff"), ENGINE_DEFAULT_CAPS);
    assert_eq!(proc_status(pid, "CapBnd"), ENGINE_DEFAULT_CAPS);

    let out = dockerd.docker_ok(["exec", &name, "sh", "-c", "echo in-container"]);
    assert_eq!(out, "in-container\n");
    // With a terminal: keel-runtime sends the pty master over the shim's console socket.
    let out = dockerd.docker_ok(["exec", "--tty", &name, "tty"]);
    assert_eq!(out, "/dev/pts/0\r\n");
    // The profile refuses unshare without CAP_SYS_ADMIN (the kernel alone would let
    // root in the container make a user namespace).
    let unshare = dockerd.docker(["exec", &name, "unshare", "--user", "true"]);
    assert!(
        !unshare.status.success()
            && String::from_utf8_lossy(&unshare.stderr).contains("Operation not permitted"),
        "unshare in the container was not refused by seccomp: {}",
        describe(&unshare)
    );
    // An exec of a missing binary fails as with runc: exit 126 and the reason from the
    // runtime (the shim reads it from keel-runtime's JSON log).
    let missing = dockerd.docker(["exec", &name, "/no/such/binary"]);
    assert!(
        missing.status.code() == Some(126)
            && String::from_utf8_lossy(&missing.stdout)
                .contains("stat /no/such/binary: no such file or directory"),
        "docker exec of a missing binary: {}",
        describe(&missing)
    );

    let stopping = Instant::now();
    dockerd.docker_ok(["stop", "--time", "1", &name]);
    eprintln!("docker stop -t 1: {:?}", stopping.elapsed());
    assert_eq!(
        inspect("{{.State.Running}} {{.State.ExitCode}}"),
        "false 137"
    );
    assert!(!alive(pid), "init {pid} still alive after docker stop");

    dockerd.docker_ok(["rm", &name]);
    assert!(
        dockerd
            .docker_ok(["ps", "--all", "--quiet", "--no-trunc"])
            .trim()
            .is_empty(),
        "containers left after docker rm"
    );
    assert!(
        !keel_dir.exists(),
        "keel-runtime's state {} is left after docker rm",
        keel_dir.display()
    );
    assert!(
        cgroup_dirs(&Path::new(&cgroup_parent).join(&id)).is_empty(),
        "the container's cgroup is left after docker rm"
    );
    assert!(
        mounts_below(&bundle).is_empty(),
        "mounts left: {:?}",
        mounts_below(&bundle)
    );
    assert!(
        netns_mounts_below(temp.path()).is_empty(),
        "network namespaces left: {:?}",
        netns_mounts_below(temp.path())
    );
    eprintln!("dockerd: whole cycle {:?}", started.elapsed());
}

#[test]
fn podman_runs_execs_stops_and_removes_a_container_through_keel() {
    require_root();
    let keel = keel();
    let temp = TempRoot::new();
    let image = busybox_image_archive(&temp.subdir("image"));
    let cgroup_parent = format!("/{}", unique_name());
    let _cgroup = CgroupGuard(PathBuf::from(&cgroup_parent));
    let podman = Podman::new(&temp.path().join("podman"), &keel);
    let name = unique_name();

    let loaded = podman.podman_ok(["load", "--input", image.to_str().unwrap()]);
    assert!(
        loaded.contains(&format!("Loaded image: {BUSYBOX_IMAGE}")),
        "podman load: {loaded}"
    );

    let started = Instant::now();
    let id = podman
        .podman_ok([
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "none",
            "--pull",
            "never",
            "--cgroup-parent",
            &cgroup_parent,
            BUSYBOX_IMAGE,
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    eprintln!("podman run -d: {:?}", started.elapsed());
    assert_eq!(id.len(), 64, "podman run printed {id:?}");

    let inspect = |format: &str| {
        podman
            .podman_ok(["inspect", "--format", format, &name])
            .trim()
            .to_string()
    };
    assert_eq!(inspect("{{.State.Status}}"), "running");
    let pid: i32 = inspect("{{.State.Pid}}")
        .parse()
        .expect("a pid from podman inspect");
    assert_eq!(cmdline(pid), "sleep 1000");
    assert_made_by_keel(podman.runtime_root(), &id, pid);
    assert_no_network(pid);
    assert_eq!(
        proc_status(pid, "Seccomp"),
        "2",
        "podman's default seccomp profile"
    );
    assert_eq!(proc_status(pid, "CapEff"), ENGINE_DEFAULT_CAPS);

    // exec (conmon runs keel-runtime exec); rlimits from containers.conf reach the process.
    let out = podman.podman_ok(["exec", &name, "sh", "-c", "echo in-container; ulimit -n"]);
    assert_eq!(out, "in-container\n1024\n");
    let out = podman.podman_ok(["exec", "--tty", &name, "tty"]);
    assert_eq!(out.trim_end(), "/dev/pts/0");
    // Errors surface. Podman passes `--log-format=json --log=<file>` only to runtimes
    // whose file name is in runtime_supports_json (runc, crun, ...): without it podman
    // shows keel-runtime's stderr (a logfmt line, as runc's would be); with it podman
    // takes the message from keel-runtime's one-object JSON log. Both map "no such
    // file" to exit 127.
    let reason = "stat /no/such/binary: no such file or directory";
    let missing = podman.podman(["exec", &name, "/no/such/binary"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        missing.status.code() == Some(127)
            && stderr.contains(reason)
            && stderr.contains("level=error"),
        "podman exec of a missing binary, text log: {}",
        describe(&missing)
    );
    podman.write_containers_conf(&format!(
        "runtime_supports_json = [\"crun\", \"runc\", \"{}\"]",
        keel.file_name().unwrap().to_string_lossy()
    ));
    let missing = podman.podman(["exec", &name, "/no/such/binary"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        missing.status.code() == Some(127) && stderr.contains(reason) && !stderr.contains("level="),
        "podman exec of a missing binary, JSON log: {}",
        describe(&missing)
    );

    let stopping = Instant::now();
    podman.podman_ok(["stop", "--time", "1", &name]);
    eprintln!("podman stop -t 1: {:?}", stopping.elapsed());
    assert_eq!(
        inspect("{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    assert!(!alive(pid), "init {pid} still alive after podman stop");

    podman.podman_ok(["rm", &name]);
    assert!(
        podman
            .podman_ok(["ps", "--all", "--quiet"])
            .trim()
            .is_empty(),
        "containers left after podman rm"
    );
    assert!(
        !podman.runtime_root().join(&id).exists(),
        "keel-runtime's state for {id} is left after podman rm"
    );
    assert!(
        cgroup_dirs(&Path::new(&cgroup_parent).join(format!("libpod-{id}"))).is_empty(),
        "the container's cgroup is left after podman rm"
    );
    assert!(
        pids_mentioning(&id).is_empty(),
        "processes left for {id}: {:?}",
        pids_mentioning(&id)
    );
    eprintln!("podman: whole cycle {:?}", started.elapsed());
}
