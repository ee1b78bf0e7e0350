//! Containers as a user drives them: `keel run`, `ps`, `logs`, `exec`,
//! `stop`, `rm` and the rest, on a busybox image made offline, each test
//! in its own root, runroot and cgroup parent. What is checked is what a
//! user sees: output, exit codes, `ps` and `inspect`, and what is left on
//! the machine afterwards (mounts, cgroups, processes).

mod common;

use common::{Keel, stderr, stdout};

#[test]
fn foreground_output_exit_codes_and_cleanup() {
    let keel = Keel::new();
    let out = keel.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    // --rm: nothing left of it.
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    assert!(keel.mounts().is_empty(), "{:?}", keel.mounts());

    // docker's codes: 127 command not found, 126 cannot run, 125 keel's own.
    let out = keel.run(&["run", "--name", "missing", "busybox", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{}",
        stderr(&out)
    );
    assert_eq!(keel.inspect("missing", "{{.State.Status}}"), "created");
    let out = keel.run(&["run", "--rm", "busybox", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    let out = keel.run(&["run", "--rm", "no-such-image"]);
    assert_eq!(out.status.code(), Some(125));
    let out = keel.run(&["run", "--rm", "--memory", "1m", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("Minimum memory limit allowed is 6MB"),
        "{}",
        stderr(&out)
    );
    let out = keel.run(&["run", "--rm", "-v", "/no/such/dir:/x", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("bind source path does not exist: /no/such/dir"),
        "{}",
        stderr(&out)
    );
    // Refused requests made nothing.
    assert_eq!(keel.ok(&["ps", "-aq"]).lines().count(), 1);

    // stdin with -i; a killed process's code is 128 + signal.
    let mut child = keel
        .command(&[
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "read line; echo got $line",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "got hello\n");
}

#[test]
fn detached_lifecycle_with_ps_logs_exec_stop_start_rm() {
    let keel = Keel::new();
    let id = keel
        .ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--label",
            "tier=front",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo started; while true; do sleep 0.1; done",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    keel.eventually("the container's first line in its log", || {
        keel.ok(&["logs", "web"]).contains("started")
    });
    let ps = keel.ok(&["ps"]);
    let row = ps.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(&id[..12]), "{ps}");
    assert!(row.contains("Up "), "{ps}");
    assert!(row.ends_with("web"), "{ps}");
    assert_eq!(
        keel.ok(&["ps", "-q", "--filter", "label=tier=front"])
            .trim(),
        &id[..12]
    );
    assert_eq!(
        keel.ok(&["ps", "-q", "--filter", "status=exited"]).trim(),
        ""
    );
    assert_eq!(
        keel.ok(&["ps", "--format", "{{.Names}} {{.State}}"]).trim(),
        "web running"
    );

    // exec runs in the container: its hostname, its processes.
    let out = keel.run(&[
        "exec",
        "web",
        "sh",
        "-c",
        "hostname; ps -o comm | grep -c sleep; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines[0], &id[..12]);
    assert!(
        keel.ok(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "web",
            "sh",
            "-c",
            "echo $X; pwd"
        ]) == "1\n/tmp\n"
    );
    let top = keel.ok(&["top", "web"]);
    assert!(top.lines().next().unwrap().starts_with("UID"), "{top}");
    assert!(top.contains("sleep") || top.contains("sh -c"), "{top}");

    // inspect, docker's shape.
    let inspect: serde_json::Value = serde_json::from_str(&keel.ok(&["inspect", "web"])).unwrap();
    let c = &inspect[0];
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/web");
    assert_eq!(c["State"]["Running"], true);
    assert!(c["State"]["Pid"].as_i64().unwrap() > 0);
    assert_eq!(c["Config"]["Labels"]["tier"], "front");
    assert_eq!(c["Path"], "sh");
    let (procs, _) = keel.cgroup_file(&id, "pids", "cgroup.procs", "cgroup.procs");
    assert!(procs.exists(), "{} exists while it runs", procs.display());

    // stop: the trap runs, the code is the program's.
    keel.ok(&["stop", "web"]);
    assert_eq!(
        keel.inspect("web", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    assert!(keel.ok(&["logs", "web"]).ends_with("bye\n"));
    assert!(keel.ok(&["ps", "-a"]).contains("Exited (0)"));
    assert!(
        keel.mounts().is_empty(),
        "a stopped container holds no mount: {:?}",
        keel.mounts()
    );
    assert!(!procs.exists(), "the cgroup goes with the process");

    // start again: the same container, its log grows.
    keel.ok(&["start", "web"]);
    assert_eq!(keel.inspect("web", "{{.State.Status}}"), "running");
    keel.eventually("a second start line", || {
        keel.ok(&["logs", "web"]).matches("started").count() == 2
    });
    let out = keel.run(&["rm", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("You cannot remove a running container"),
        "{}",
        stderr(&out)
    );
    keel.ok(&["kill", "web"]);
    assert_eq!(keel.ok(&["wait", "web"]).trim(), "137");
    keel.ok(&["rm", "web"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    let out = keel.run(&["logs", "web"]);
    assert!(
        stderr(&out).contains("No such container: web"),
        "{}",
        stderr(&out)
    );
    assert!(keel.mounts().is_empty());
    assert!(!keel.root().join("containers").join(&id).exists());
}

#[test]
fn names_conflicts_rename_and_force_remove() {
    let keel = Keel::new();
    keel.ok(&["create", "--name", "one", "busybox", "true"]);
    let out = keel.run(&["create", "--name", "one", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("The container name \"/one\" is already in use"),
        "{}",
        stderr(&out)
    );
    keel.ok(&["rename", "one", "two"]);
    assert_eq!(
        keel.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
            .trim(),
        "two Created"
    );
    keel.ok(&["start", "-a", "two"]);
    assert_eq!(keel.inspect("two", "{{.State.ExitCode}}"), "0");
    // A generated name, then rm -f of a running one.
    let id = keel
        .ok(&["run", "-d", "busybox", "sleep", "60"])
        .trim()
        .to_string();
    let name = keel.inspect(&id, "{{.Name}}");
    assert!(name.len() > 3 && name.contains('_'), "{name}");
    keel.ok(&["rm", "-f", &id]);
    assert!(keel.run(&["inspect", &id]).status.code() != Some(0));
    // rm -f of something absent is not an error, as docker.
    keel.ok(&["rm", "-f", "never-existed"]);
}

#[test]
fn volumes_binds_and_tmpfs() {
    let keel = Keel::new();
    // A named volume outlives its containers.
    keel.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/file",
    ]);
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "-v",
            "data:/data:ro",
            "busybox",
            "cat",
            "/data/file"
        ]),
        "kept\n"
    );
    let out = keel.run(&[
        "run",
        "--rm",
        "-v",
        "data:/data:ro",
        "busybox",
        "touch",
        "/data/x",
    ]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a read-only volume refuses writes"
    );
    // A new volume over a directory of the image gets its content.
    assert!(
        keel.ok(&[
            "run",
            "--rm",
            "-v",
            "etc-copy:/etc",
            "busybox",
            "cat",
            "/etc/passwd"
        ])
        .contains("root:x:0:0")
    );
    // A bind mount, read-write and read-only.
    let host = keel.temp.subdir("host-dir");
    std::fs::write(host.join("from-host"), b"hello from the host\n").unwrap();
    let bind = format!("{}:/mnt", host.display());
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "-v",
            &bind,
            "busybox",
            "cat",
            "/mnt/from-host"
        ]),
        "hello from the host\n"
    );
    keel.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "echo back > /mnt/from-container",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("from-container")).unwrap(),
        "back\n"
    );
    let ro = format!("type=bind,source={},target=/mnt,readonly", host.display());
    let out = keel.run(&[
        "run",
        "--rm",
        "--mount",
        &ro,
        "busybox",
        "touch",
        "/mnt/nope",
    ]);
    assert_ne!(out.status.code(), Some(0));
    // tmpfs with its size and mode.
    let out = keel.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/scratch:size=1m,mode=700",
        "busybox",
        "sh",
        "-c",
        "stat -c %a /scratch; df -k /scratch | tail -1",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("700"), "{out}");
    assert!(lines.next().unwrap().contains(" 1024 "), "{out}");
    // An anonymous volume goes with rm -v.
    keel.ok(&[
        "create", "--name", "anon", "-v", "/cache", "busybox", "true",
    ]);
    let source = keel.inspect("anon", "{{json .Mounts}}");
    let mounts: serde_json::Value = serde_json::from_str(&source).unwrap();
    let dir = std::path::PathBuf::from(mounts[0]["Source"].as_str().unwrap());
    assert!(dir.exists());
    keel.ok(&["rm", "-v", "anon"]);
    assert!(!dir.exists(), "rm -v removes the anonymous volume");
    assert!(
        keel.root().join("volumes/data/_data/file").exists(),
        "named volumes stay"
    );
}

#[test]
fn what_the_process_sees_user_env_caps_limits() {
    let keel = Keel::new();
    let run = |args: &[&str]| -> String {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        keel.ok(&all)
    };
    // No supplementary groups but what /etc/group gives (none here).
    assert_eq!(
        run(&["-u", "keel", "busybox", "id"]),
        "uid=1000(keel) gid=1000(keel)\n"
    );
    assert_eq!(
        run(&["-u", "keel", "--group-add", "0", "busybox", "id", "-G"]),
        "1000 0\n"
    );
    assert_eq!(run(&["-u", "1000:0", "busybox", "id", "-g"]), "0\n");
    let out = keel.run(&["run", "--rm", "-u", "nobody-here", "busybox", "id"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("unable to find user nobody-here"),
        "{}",
        stderr(&out)
    );
    let env = run(&[
        "-e",
        "A=1",
        "-h",
        "box",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo $A $HOSTNAME $HOME; pwd; hostname",
    ]);
    assert_eq!(env, "1 box /root\n/tmp\nbox\n");
    assert_eq!(
        run(&["--entrypoint", "echo", "busybox", "from", "entrypoint"]),
        "from entrypoint\n"
    );
    // docker's default capabilities, and --cap-drop.
    let caps = |extra: &[&str]| -> u64 {
        let mut args = extra.to_vec();
        args.extend(["busybox", "sh", "-c", "grep CapEff /proc/self/status"]);
        let line = run(&args);
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(
        caps(&[]),
        0x00000000a80425fb,
        "docker's 14 default capabilities"
    );
    assert_eq!(caps(&["--cap-drop", "ALL"]), 0);
    assert_eq!(
        caps(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"]),
        1 << 12
    );
    // The default seccomp profile refuses what containers must not do,
    // whatever their capabilities: swapon is refused (EPERM) even with
    // all of them; without the profile the kernel gets to say EINVAL.
    let swapon = |seccomp: &[&str]| -> String {
        let mut args = vec!["run", "--rm", "--cap-add", "ALL"];
        args.extend_from_slice(seccomp);
        args.extend(["busybox", "swapon", "/dev/null"]);
        stderr(&keel.run(&args))
    };
    assert!(
        swapon(&[]).contains("Operation not permitted"),
        "{}",
        swapon(&[])
    );
    let unconfined = swapon(&["--security-opt", "seccomp=unconfined"]);
    assert!(
        !unconfined.contains("Operation not permitted"),
        "{unconfined}"
    );
    assert_eq!(
        run(&[
            "--read-only",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>/dev/null || echo read-only"
        ]),
        "read-only\n"
    );
    // Limits land in the container's cgroup.
    let limits = run(&[
        "-m",
        "64m",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        "busybox",
        "sh",
        "-c",
        // What the container sees at /sys/fs/cgroup follows the host's
        // layout: a directory per v1 controller, or cgroup2's files.
        &format!(
            "cat {} {} {}",
            if keel.v1("memory") {
                "/sys/fs/cgroup/memory/memory.limit_in_bytes"
            } else {
                "/sys/fs/cgroup/memory.max"
            },
            if keel.v1("pids") {
                "/sys/fs/cgroup/pids/pids.max"
            } else {
                "/sys/fs/cgroup/pids.max"
            },
            if keel.v1("cpu") {
                "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"
            } else {
                "/sys/fs/cgroup/cpu.max"
            },
        ),
    ]);
    let cpu = if keel.v1("cpu") {
        "50000"
    } else {
        "50000 100000"
    };
    assert_eq!(limits, format!("67108864\n50\n{cpu}\n"));
    assert_eq!(
        run(&[
            "--ulimit",
            "nofile=100:200",
            "busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn"
        ]),
        "100\n200\n"
    );
    assert!(
        run(&["--add-host", "db:10.1.2.3", "busybox", "cat", "/etc/hosts"])
            .contains("10.1.2.3\tdb")
    );
    // --network none: loopback only (and up); the default network: eth0 too.
    let links = run(&["--network", "none", "busybox", "ls", "/sys/class/net"]);
    assert_eq!(links, "lo\n");
    let lo = run(&[
        "--network",
        "none",
        "busybox",
        "cat",
        "/sys/class/net/lo/operstate",
    ]);
    assert_eq!(lo, "unknown\n", "loopback is up");
    let links = run(&["busybox", "ls", "/sys/class/net"]);
    assert_eq!(links, "eth0\nlo\n");
}

#[test]
fn restart_policy_and_oom() {
    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    keel.eventually("two restarts, then exited", || {
        keel.inspect("flaky", "{{.State.Status}} {{.RestartCount}}") == "exited 2"
    });
    assert_eq!(keel.ok(&["logs", "flaky"]).matches("try").count(), 3);
    assert_eq!(keel.inspect("flaky", "{{.State.ExitCode}}"), "1");

    // The OOM killer's victim: 137 and OOMKilled.
    let out = keel.run(&[
        "run",
        "--name",
        "hog",
        "-m",
        "16m",
        "--memory-swap",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert_eq!(
        keel.inspect("hog", "{{.State.OOMKilled}} {{.State.ExitCode}}"),
        "true 137"
    );
}

#[test]
fn a_killed_monitor_leaves_the_truth() {
    let keel = Keel::new();
    let id = keel
        .ok(&["run", "-d", "--name", "orphan", "busybox", "sleep", "300"])
        .trim()
        .to_string();
    let pid: i32 = keel.inspect("orphan", "{{.State.Pid}}").parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let monitor: i32 = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{monitor}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with("keel-monitor") || cmdline.contains("container-monitor"),
        "{cmdline}"
    );
    // SAFETY: killing the monitor this test started, by its pid.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    keel.eventually("the monitor is gone", || {
        !std::path::Path::new(&format!("/proc/{monitor}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{monitor}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
    });
    // The container still runs: ps says so.
    assert_eq!(keel.inspect("orphan", "{{.State.Status}}"), "running");
    // And it can still be stopped and removed, leaving nothing.
    keel.ok(&["stop", "-t", "1", "orphan"]);
    assert_eq!(
        keel.inspect("orphan", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 137"
    );
    keel.ok(&["rm", "orphan"]);
    assert!(keel.mounts().is_empty(), "{:?}", keel.mounts());
    let (procs, _) = keel.cgroup_file(&id, "pids", "cgroup.procs", "cgroup.procs");
    assert!(!procs.exists(), "{} is gone", procs.display());
}

#[test]
fn concurrent_runs_and_removes_lose_nothing() {
    let keel = std::sync::Arc::new(Keel::new());
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let keel = keel.clone();
            std::thread::spawn(move || {
                let name = format!("c{i}");
                keel.ok(&["run", "-d", "--name", &name, "busybox", "sleep", "60"]);
                name
            })
        })
        .collect();
    let names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let listed = keel.ok(&["ps", "--format", "{{.Names}}"]);
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    let removers: Vec<_> = names
        .into_iter()
        .map(|name| {
            let keel = keel.clone();
            std::thread::spawn(move || keel.ok(&["rm", "-f", &name]))
        })
        .collect();
    for remover in removers {
        remover.join().unwrap();
    }
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    assert!(keel.mounts().is_empty(), "{:?}", keel.mounts());
}

#[test]
fn images_containers_use_are_kept() {
    let keel = Keel::new();
    let id = keel
        .ok(&["create", "--name", "user", "busybox", "true"])
        .trim()
        .to_string();
    let out = keel.run(&["rmi", "busybox"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "conflict: unable to remove repository reference \"busybox\" (must force) - container {} is using its referenced image",
            &id[..12]
        )),
        "{}",
        stderr(&out)
    );
    keel.ok(&["image", "prune", "-a", "-f"]);
    assert!(
        keel.ok(&["images"]).contains("busybox"),
        "prune -a keeps a used image"
    );
    let df = keel.ok(&["system", "df"]);
    let images_row = df.lines().find(|l| l.starts_with("Images")).unwrap();
    assert_eq!(images_row.split_whitespace().nth(2), Some("1"), "{df}");
    let containers_row = df.lines().find(|l| l.starts_with("Containers")).unwrap();
    assert_eq!(containers_row.split_whitespace().nth(1), Some("1"), "{df}");
    // Forced: the name goes, the image stays for its container.
    let out = keel.ok(&["rmi", "-f", "busybox"]);
    assert_eq!(out, "Untagged: busybox:latest\n");
    assert!(keel.ok(&["images"]).contains("<none>"));
    keel.ok(&["start", "-a", "user"]);
    assert_eq!(keel.inspect("user", "{{.State.ExitCode}}"), "0");
    keel.ok(&["rm", "user"]);
    keel.ok(&["image", "prune", "-f"]);
    assert_eq!(keel.ok(&["images", "-q"]), "");
}

#[test]
fn volume_commands() {
    let keel = Keel::new();
    assert_eq!(
        keel.ok(&["volume", "create", "--label", "app=db", "pgdata"]),
        "pgdata\n"
    );
    let anonymous = keel.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(anonymous.len(), 64);
    let listed = keel.ok(&["volume", "ls"]);
    assert!(listed.starts_with("DRIVER"), "{listed}");
    assert!(
        listed.contains("local") && listed.contains("pgdata"),
        "{listed}"
    );
    assert_eq!(
        keel.ok(&["volume", "ls", "-q", "--filter", "label=app=db"]),
        "pgdata\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&keel.ok(&["volume", "inspect", "pgdata"])).unwrap();
    assert_eq!(inspect[0]["Driver"], "local");
    assert_eq!(inspect[0]["Labels"]["app"], "db");
    let mountpoint = inspect[0]["Mountpoint"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&mountpoint).is_dir());

    // In use: not removed, and not pruned.
    keel.ok(&[
        "create",
        "--name",
        "db",
        "-v",
        "pgdata:/var/lib/data",
        "busybox",
        "true",
    ]);
    let out = keel.run(&["volume", "rm", "pgdata"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("remove pgdata: volume is in use"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        keel.ok(&["volume", "ls", "-q", "--filter", "dangling=false"]),
        "pgdata\n"
    );
    keel.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(
        keel.ok(&["volume", "ls", "-q"]),
        "pgdata\n",
        "the unused one went, the used one stayed"
    );
    keel.ok(&["rm", "db"]);
    keel.ok(&["volume", "rm", "pgdata"]);
    assert!(!std::path::Path::new(&mountpoint).exists());
    assert_eq!(keel.ok(&["volume", "ls", "-q"]), "");
    let out = keel.run(&["volume", "inspect", "nope"]);
    assert!(
        stderr(&out).contains("No such volume: nope"),
        "{}",
        stderr(&out)
    );
    keel.ok(&["volume", "rm", "-f", "nope"]);
}

#[test]
fn init_forwards_signals_and_reaps() {
    let keel = Keel::new();
    // Without --init, sleep is PID 1 and SIGTERM does nothing to it: stop
    // has to SIGKILL it. With keel's init it gets the SIGTERM.
    keel.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "with-init",
        "busybox",
        "sleep",
        "300",
    ]);
    let ps = keel.ok(&["exec", "with-init", "ps", "-o", "pid,comm"]);
    assert!(ps.contains("1 docker-init"), "{ps}");
    keel.ok(&["stop", "-t", "60", "with-init"]);
    assert_eq!(keel.inspect("with-init", "{{.State.ExitCode}}"), "143");
    // Orphans are reaped: no zombie stays behind a command that exits.
    let out = keel.ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "sh -c 'sleep 0.1 &' ; sleep 0.5; ps -o stat | grep -c Z || true",
    ]);
    assert_eq!(out.trim(), "0");
    assert_eq!(
        keel.run(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 9"])
            .status
            .code(),
        Some(9)
    );
}

#[test]
fn health_checks() {
    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "checked",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "300",
    ]);
    assert!(
        keel.ok(&["ps"]).contains("(health: starting)"),
        "{}",
        keel.ok(&["ps"])
    );
    keel.eventually("unhealthy after two failures", || {
        keel.inspect("checked", "{{.State.Health.Status}}") == "unhealthy"
    });
    assert!(keel.ok(&["ps"]).contains("(unhealthy)"));
    keel.ok(&["exec", "checked", "touch", "/tmp/ok"]);
    keel.eventually("healthy once the check passes", || {
        keel.inspect("checked", "{{.State.Health.Status}}") == "healthy"
    });
    assert!(keel.ok(&["ps"]).contains("(healthy)"));
    let log: serde_json::Value =
        serde_json::from_str(&keel.inspect("checked", "{{json .State.Health.Log}}")).unwrap();
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 0, "{log}");
    assert!(
        log.as_array().unwrap().iter().any(|p| p["ExitCode"] == 1),
        "{log}"
    );

    // A probe that hangs is killed at its timeout and counts as failed.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "hanging",
        "--health-cmd",
        "sleep 60",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "100ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ]);
    keel.eventually("unhealthy from a timeout", || {
        keel.inspect("hanging", "{{.State.Health.Status}}") == "unhealthy"
    });
    let log = keel.inspect("hanging", "{{json .State.Health.Log}}");
    assert!(log.contains("Health check exceeded timeout"), "{log}");
    // The hung probes did not pile up in the container.
    let sleeps = keel.ok(&[
        "exec",
        "hanging",
        "sh",
        "-c",
        "ps -o args | grep -c '^sleep 60' || true",
    ]);
    assert!(sleeps.trim().parse::<u32>().unwrap() <= 1, "{sleeps}");
}

#[test]
fn stats_update_and_port() {
    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "while true; do :; done",
    ]);
    let stats = keel.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.CPUPerc}}|{{.MemUsage}}|{{.PIDs}}",
        "busy",
    ]);
    let fields: Vec<&str> = stats.trim().split('|').collect();
    assert_eq!(fields[0], "busy", "{stats}");
    let cpu: f64 = fields[1].trim_end_matches('%').parse().unwrap();
    assert!(cpu > 10.0, "a busy loop uses a CPU: {stats}");
    assert!(fields[2].ends_with("/ 64MiB"), "{stats}");
    assert_eq!(fields[3], "1", "{stats}");
    let table = keel.ok(&["stats", "--no-stream"]);
    assert!(table.starts_with("CONTAINER ID"), "{table}");
    // update: the new limits reach the cgroup now and stay for later.
    keel.ok(&[
        "update",
        "--memory",
        "128m",
        "--pids-limit",
        "20",
        "--cpus",
        "0.5",
        "busy",
    ]);
    let id = keel.inspect("busy", "{{.Id}}");
    let read = |controller: &str, v1: &str, v2: &str| {
        let (path, _) = keel.cgroup_file(&id, controller, v1, v2);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string()
    };
    let memory = || read("memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(memory(), "134217728");
    assert_eq!(read("pids", "pids.max", "pids.max"), "20");
    let cpu = read("cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == "50000" || cpu == "50000 100000", "{cpu}");
    assert_eq!(keel.inspect("busy", "{{.HostConfig.Memory}}"), "134217728");
    let out = keel.run(&["update", "--memory", "1m", "busy"]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(memory(), "134217728", "a refused update changes nothing");
    // port: nothing published.
    assert_eq!(keel.ok(&["port", "busy"]), "");
    let out = keel.run(&["port", "busy", "80"]);
    assert!(
        stderr(&out).contains("No public port '80/tcp' published for busy"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn diff_cp_export_and_commit() {
    let keel = Keel::new();
    keel.ok(&[
        "run", "-d", "--name", "files", "busybox", "sh", "-c",
        "mkdir /data && echo x > /data/f && rm /bin/ls && echo more >> /etc/passwd && ln -s / /evil && sleep 300",
    ]);
    keel.eventually("the changes are made", || {
        keel.ok(&["diff", "files"]).contains("/evil")
    });
    let diff = keel.ok(&["diff", "files"]);
    for line in [
        "A /data",
        "A /data/f",
        "D /bin/ls",
        "C /bin",
        "C /etc",
        "C /etc/passwd",
        "A /evil",
    ] {
        assert!(diff.lines().any(|l| l == line), "{line} in:\n{diff}");
    }

    // Out of the container: a file, a directory, a tar stream.
    let host = keel.temp.subdir("host");
    keel.ok(&[
        "cp",
        "files:/data/f",
        host.join("out.txt").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "x\n"
    );
    keel.ok(&["cp", "files:/data", host.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(host.join("data/f")).unwrap(), "x\n");
    let out = keel.run(&["cp", "files:/etc/passwd", "-"]);
    assert!(out.status.success());
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["passwd"]);
    let missing = keel.run(&["cp", "files:/no/such", host.to_str().unwrap()]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        stderr(&missing).contains("Could not find the file /no/such in container"),
        "{}",
        stderr(&missing)
    );

    // Into it: a file into a directory, a directory under a new name.
    std::fs::write(host.join("in.txt"), b"from the host\n").unwrap();
    std::fs::create_dir_all(host.join("tree/sub")).unwrap();
    std::fs::write(host.join("tree/sub/leaf"), b"leaf\n").unwrap();
    keel.ok(&["cp", host.join("in.txt").to_str().unwrap(), "files:/tmp/"]);
    assert_eq!(
        keel.ok(&["exec", "files", "cat", "/tmp/in.txt"]),
        "from the host\n"
    );
    keel.ok(&["cp", host.join("tree").to_str().unwrap(), "files:/copied"]);
    assert_eq!(
        keel.ok(&["exec", "files", "cat", "/copied/sub/leaf"]),
        "leaf\n"
    );
    // A symlink in the container resolves in the container, never on the host.
    keel.ok(&[
        "cp",
        host.join("in.txt").to_str().unwrap(),
        "files:/evil/keel-test-escape",
    ]);
    assert!(
        !std::path::Path::new("/keel-test-escape").exists(),
        "cp followed a container symlink onto the host"
    );
    assert_eq!(
        keel.ok(&["exec", "files", "cat", "/keel-test-escape"]),
        "from the host\n"
    );

    // A stopped container takes files too.
    keel.ok(&["stop", "-t", "1", "files"]);
    keel.ok(&[
        "cp",
        host.join("in.txt").to_str().unwrap(),
        "files:/while-stopped",
    ]);
    assert!(
        keel.mounts().is_empty(),
        "cp of a stopped container leaves no mount: {:?}",
        keel.mounts()
    );

    // export: the root filesystem as it is now.
    let exported = keel.temp.path().join("f.tar");
    keel.ok(&["export", "-o", exported.to_str().unwrap(), "files"]);
    let mut archive = tar::Archive::new(std::fs::File::open(&exported).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(names.iter().any(|n| n == "data/f"), "{names:?}");
    assert!(names.iter().any(|n| n == "while-stopped"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "bin/ls"),
        "deleted files are not exported"
    );

    // commit: the changes as an image, with a new CMD.
    let id = keel.ok(&[
        "commit",
        "-m",
        "made by a test",
        "-c",
        "CMD [\"cat\", \"/data/f\"]",
        "files",
        "keel-test/committed:1",
    ]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(keel.ok(&["run", "--rm", "keel-test/committed:1"]), "x\n");
    assert_eq!(
        keel.run(&["run", "--rm", "keel-test/committed:1", "ls"])
            .status
            .code(),
        Some(127),
        "the whiteout of /bin/ls is in the new layer"
    );
    assert!(
        keel.ok(&["run", "--rm", "keel-test/committed:1", "cat", "/etc/passwd"])
            .ends_with("more\n")
    );
    let history = keel.ok(&["image", "history", "keel-test/committed:1"]);
    assert!(history.contains("made by a test"), "{history}");
}

#[test]
fn events_as_they_happen() {
    let keel = Keel::new();
    let since = jiff::Timestamp::now().to_string();
    let out = keel.run(&["run", "--name", "ev", "busybox", "sh", "-c", "exit 2"]);
    assert_eq!(out.status.code(), Some(2));
    keel.ok(&["rm", "ev"]);
    keel.ok(&["volume", "create", "evvol"]);
    let until = jiff::Timestamp::now().to_string();
    let lines = keel.ok(&["events", "--since", &since, "--until", &until]);
    let actions: Vec<&str> = lines
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default())
        .collect();
    assert_eq!(
        actions,
        ["create", "start", "die", "destroy", "create"],
        "{lines}"
    );
    assert!(lines.contains("exitCode=2"), "{lines}");
    assert!(lines.contains("name=ev"), "{lines}");
    let filtered = keel.ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "event=die",
        "--format",
        "{{.Actor.Attributes.exitCode}}",
    ]);
    assert_eq!(filtered, "2\n");
    let json = keel.ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=volume",
        "--format",
        "json",
    ]);
    let event: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(event["Actor"]["ID"], "evvol");
    // Streaming: an event that happens while `events` runs shows up. The
    // first run's event may be read back (--since) or streamed; the second
    // comes after `events` has printed the first, so it is streamed.
    let since = jiff::Timestamp::now().to_string();
    let mut child = keel
        .command(&["events", "--since", &since, "--filter", "event=start"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Lines come through a thread, so a missing event fails with a deadline
    // instead of a read that never returns.
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            if lines.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let next = || {
        received
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("an event line within 30 s")
    };
    keel.ok(&["run", "--rm", "--name", "streamed-first", "busybox", "true"]);
    let first = next();
    assert!(
        first.contains("container start") && first.contains("name=streamed-first"),
        "{first}"
    );
    keel.ok(&[
        "run",
        "--rm",
        "--name",
        "streamed-second",
        "busybox",
        "true",
    ]);
    let second = next();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        second.contains("container start") && second.contains("name=streamed-second"),
        "{second}"
    );
}

#[test]
fn logs_follow_tail_timestamps_and_rotation() {
    let keel = Keel::new();
    keel.ok(&[
        "run", "-d", "--name", "talker", "--log-opt", "max-size=2k", "--log-opt", "max-file=2",
        "busybox", "sh", "-c",
        // A pause between pairs: each line reaches the log in the order it was
        // written (read in one gulp, a pipe's lines would not), so the last
        // files hold both streams' last lines.
        "i=0; while [ $i -lt 100 ]; do echo line $i; echo err $i >&2; usleep 2000; i=$((i+1)); done; sleep 1; echo last",
    ]);
    // -f follows until the container exits, across rotations.
    let out = keel.run(&["logs", "-f", "talker"]);
    assert!(out.status.success());
    let stdout = stdout(&out);
    assert!(stdout.ends_with("last\n"), "{stdout}");
    assert!(!stdout.contains("err "), "stderr stays on stderr");
    assert!(stderr(&out).contains("err 99"), "{}", stderr(&out));
    // Rotation kept two files of at most 2 kB; the oldest lines are gone.
    let id = keel.inspect("talker", "{{.Id}}");
    let log = keel
        .root()
        .join("containers")
        .join(&id)
        .join(format!("{id}-json.log"));
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048);
    assert!(log.with_extension("log.1").exists());
    assert!(!log.with_extension("log.2").exists());
    assert!(!keel.ok(&["logs", "talker"]).contains("line 0\n"));
    // --tail, -t.
    assert_eq!(keel.ok(&["logs", "--tail", "1", "talker"]), "last\n");
    let stamped = keel.ok(&["logs", "-t", "--tail", "1", "talker"]);
    let (time, text) = stamped.split_once(' ').unwrap();
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "{stamped}");
    assert_eq!(text, "last\n");
    // --since in the future shows nothing.
    assert_eq!(
        keel.ok(&["logs", "--since", "2099-01-01T00:00:00Z", "talker"]),
        ""
    );
}

#[test]
fn a_killed_cli_leaves_the_container_running() {
    let keel = Keel::new();
    let mut child = keel
        .command(&[
            "run",
            "--name",
            "outlives",
            "busybox",
            "sh",
            "-c",
            "sleep 2; echo done",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    keel.eventually("it runs", || {
        keel.run(&["inspect", "-f", "{{.State.Status}}", "outlives"])
            .stdout
            .starts_with(b"running")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(keel.inspect("outlives", "{{.State.Status}}"), "running");
    assert_eq!(keel.ok(&["wait", "outlives"]), "0\n");
    assert_eq!(keel.ok(&["logs", "outlives"]), "done\n");
}

#[test]
fn more_run_flags() {
    let keel = Keel::new();
    let run = |args: &[&str]| -> String {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        keel.ok(&all)
    };
    // --env-file, later -e wins.
    let env_file = keel.temp.path().join("env");
    std::fs::write(&env_file, "# settings\nA=from-file\nB=b\n").unwrap();
    assert_eq!(
        run(&[
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "A=flag",
            "busybox",
            "sh",
            "-c",
            "echo $A $B"
        ]),
        "flag b\n"
    );
    // A seccomp profile of one's own, and unconfined.
    let profile = keel.temp.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let seccomp = format!("seccomp={}", profile.display());
    let out = keel.run(&[
        "run",
        "--rm",
        "--security-opt",
        &seccomp,
        "busybox",
        "mkdir",
        "/x",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        run(&[
            "--security-opt",
            "no-new-privileges",
            "busybox",
            "sh",
            "-c",
            "grep NoNewPrivs /proc/self/status"
        ]),
        "NoNewPrivs:\t1\n"
    );
    // --privileged: every capability, writable /sys, host devices.
    let caps = run(&[
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "grep CapEff /proc/self/status",
    ]);
    // All that keel itself may hand on: its bounding set.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = ours
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    assert_eq!(
        caps.split_whitespace().nth(1),
        Some(bounding.as_str()),
        "{caps}"
    );
    assert_eq!(
        run(&[
            "--privileged",
            "busybox",
            "sh",
            "-c",
            "mount -t tmpfs none /tmp && echo mounted"
        ]),
        "mounted\n"
    );
    // --device, --shm-size, --sysctl, --dns, --network host.
    assert_eq!(
        run(&[
            "--device",
            "/dev/null:/dev/other-null",
            "busybox",
            "sh",
            "-c",
            "echo x > /dev/other-null && echo ok"
        ]),
        "ok\n"
    );
    let shm = run(&[
        "--shm-size",
        "8m",
        "busybox",
        "sh",
        "-c",
        "df -k /dev/shm | tail -1",
    ]);
    assert!(shm.contains(" 8192 "), "{shm}");
    assert_eq!(
        run(&[
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "busybox",
            "cat",
            "/proc/sys/net/ipv4/ip_forward"
        ]),
        "1\n"
    );
    assert!(
        run(&["--dns", "10.9.8.7", "busybox", "cat", "/etc/resolv.conf"])
            .contains("nameserver 10.9.8.7")
    );
    // The "host" is the test's network namespace (the veths of stopped
    // containers go in the background: not counted).
    let host_links: Vec<String> = stdout(&keel.netns.run("ip", &["-o", "link"]))
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .filter(|n| !n.starts_with("veth"))
        .collect();
    let mut seen: Vec<String> = run(&["--network", "host", "busybox", "ls", "/sys/class/net"])
        .lines()
        .filter(|n| !n.starts_with("veth"))
        .map(str::to_string)
        .collect();
    seen.sort();
    let mut expected = host_links;
    expected.sort();
    assert_eq!(seen, expected, "--network host shows the host's interfaces");
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "keel-test-absent",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("network keel-test-absent not found"),
        "{}",
        stderr(&out)
    );
    // --pull never with a missing image; --stop-signal is what stop sends.
    let out = keel.run(&["run", "--rm", "--pull", "never", "keel-test/absent", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("No such image"), "{}", stderr(&out));
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 42' USR1; while true; do sleep 0.1; done",
    ]);
    keel.ok(&["stop", "usr1"]);
    assert_eq!(keel.inspect("usr1", "{{.State.ExitCode}}"), "42");
    // Conflicting options are refused before anything is made.
    let out = keel.run(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("Conflicting options: --restart and --rm"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pause_restart_prune_signals_and_image_volumes() {
    let keel = Keel::new();
    // pause freezes every process; unpause thaws them.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "frozen",
        "busybox",
        "sh",
        "-c",
        "while true; do date +%s%N > /tmp/t; sleep 0.05; done",
    ]);
    keel.ok(&["pause", "frozen"]);
    assert!(keel.ok(&["ps"]).contains("(Paused)"));
    assert_eq!(
        keel.inspect("frozen", "{{.State.Status}} {{.State.Paused}}"),
        "paused true"
    );
    let out = keel.run(&["exec", "frozen", "true"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "no exec into a paused container"
    );
    keel.ok(&["unpause", "frozen"]);
    assert_eq!(keel.inspect("frozen", "{{.State.Status}}"), "running");
    // restart: a new start of the same container.
    let started = keel.inspect("frozen", "{{.State.StartedAt}}");
    keel.ok(&["restart", "-t", "1", "frozen"]);
    assert_eq!(keel.inspect("frozen", "{{.State.Status}}"), "running");
    assert_ne!(keel.inspect("frozen", "{{.State.StartedAt}}"), started);

    // Signals sent to `keel run` go to the container (--sig-proxy), even one
    // sent as soon as it runs, before the CLI has set its session up (the
    // fault point holds that window open).
    let child = keel
        .command(&[
            "run",
            "--name",
            "proxied",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done",
        ])
        .env("KEEL_FAULT_DELAY", "run-started=1000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    keel.eventually("it runs", || {
        keel.run(&["inspect", "-f", "{{.State.Status}}", "proxied"])
            .stdout
            .starts_with(b"running")
    });
    // SAFETY: signalling the keel this test started, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "got-term\n");

    // An image's VOLUME becomes an anonymous volume with the image's content.
    keel.ok(&[
        "run",
        "--name",
        "maker",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /srv/data && echo seeded > /srv/data/file",
    ]);
    keel.ok(&[
        "commit",
        "-c",
        "VOLUME /srv/data",
        "maker",
        "keel-test/with-volume",
    ]);
    keel.ok(&[
        "run",
        "--name",
        "user",
        "keel-test/with-volume",
        "sh",
        "-c",
        "cat /srv/data/file; echo more >> /srv/data/file",
    ]);
    assert_eq!(keel.ok(&["logs", "user"]), "seeded\n");
    let mounts: serde_json::Value =
        serde_json::from_str(&keel.inspect("user", "{{json .Mounts}}")).unwrap();
    assert_eq!(mounts[0]["Destination"], "/srv/data");
    let source = std::path::PathBuf::from(mounts[0]["Source"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(source.join("file")).unwrap(),
        "seeded\nmore\n"
    );

    // ps -n / -l; container prune removes what is stopped and keeps the rest.
    assert_eq!(keel.ok(&["ps", "-l", "--format", "{{.Names}}"]), "user\n");
    assert_eq!(keel.ok(&["ps", "-n", "2", "-q"]).lines().count(), 2);
    let pruned = keel.ok(&["container", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:"), "{pruned}");
    assert_eq!(keel.ok(&["ps", "-a", "--format", "{{.Names}}"]), "frozen\n");
    assert!(source.exists(), "prune keeps volumes, as docker");
}

#[test]
fn run_pulls_a_missing_image() {
    use keel_testutil::peers::Registry;
    let keel = Keel::new();
    let registry = Registry::start_in(&keel.temp, "registry", None, Some(&keel.netns));
    let remote = format!("{}/keel-test/busybox:1", registry.host());
    keel.ok(&["tag", "busybox", &remote]);
    keel.ok(&["push", "-q", &remote]);
    keel.ok(&["rmi", &remote]);
    keel.ok(&["rmi", "busybox"]);
    assert_eq!(keel.ok(&["images", "-q"]), "");
    let out = keel.run(&["run", "--rm", &remote, "echo", "pulled and ran"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The container's output alone on stdout; the pull's lines on stderr.
    assert_eq!(stdout(&out), "pulled and ran\n");
    assert!(
        stderr(&out).contains(&format!("Unable to find image '{remote}' locally")),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("Pull complete"), "{}", stderr(&out));
    // Present now: no second pull.
    let again = keel.run(&["run", "--rm", &remote, "true"]);
    assert!(stderr(&again).is_empty(), "{}", stderr(&again));
}

#[test]
fn detached_exec_and_a_tar_stream_in() {
    let keel = Keel::new();
    keel.ok(&["run", "-d", "--name", "target", "busybox", "sleep", "300"]);
    keel.ok(&[
        "exec",
        "-d",
        "target",
        "sh",
        "-c",
        "sleep 0.2; echo later > /tmp/from-exec",
    ]);
    keel.eventually("the detached exec ran", || {
        keel.run(&["exec", "target", "cat", "/tmp/from-exec"])
            .stdout
            == b"later\n"
    });
    // `cp - CONTAINER:DIR` takes a tar stream on stdin.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(6);
    builder
        .append_data(&mut header, "streamed.txt", &b"bytes\n"[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let mut child = keel
        .command(&["cp", "-", "target:/tmp"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&tar).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        keel.ok(&["exec", "target", "cat", "/tmp/streamed.txt"]),
        "bytes\n"
    );
}

#[test]
fn resource_flags_reach_the_cgroup_on_any_layout() {
    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "res",
        "--cpu-shares",
        "512",
        "--cpuset-cpus",
        "0",
        "--memory-reservation",
        "32m",
        "--stop-timeout",
        "1",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 1; done",
    ]);
    let id = keel.inspect("res", "{{.Id}}");
    let read = |controller: &str, v1: &str, v2: &str| {
        let (path, is_v1) = keel.cgroup_file(&id, controller, v1, v2);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        (text.trim().to_string(), is_v1)
    };
    // --cpu-shares: v1's cpu.shares, or cgroup2's cpu.weight by runc's formula.
    match read("cpu", "cpu.shares", "cpu.weight") {
        (shares, true) => assert_eq!(shares, "512"),
        (weight, false) => assert_eq!(weight, (1 + (512 - 2) * 9999 / 262142).to_string()),
    }
    assert_eq!(read("cpuset", "cpuset.cpus", "cpuset.cpus").0, "0");
    assert_eq!(
        read("memory", "memory.soft_limit_in_bytes", "memory.low").0,
        "33554432"
    );
    assert_eq!(
        keel.inspect("res", "{{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}} {{.HostConfig.MemoryReservation}} {{.Config.StopTimeout}}"),
        "512 0 33554432 1"
    );
    // --stop-timeout: a process that ignores SIGTERM is killed when it runs out.
    keel.ok(&["stop", "res"]);
    assert_eq!(keel.inspect("res", "{{.State.ExitCode}}"), "137");
    // keel version says what it is and which runtime spec it implements.
    let version = keel.ok(&["version"]);
    assert!(version.starts_with("keel version "), "{version}");
    assert!(version.contains("OCI runtime-spec: 1."), "{version}");
    let server = keel.ok(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(
        server.trim(),
        version
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("keel version ")
    );
}
