//! Faults that once left keel stuck, kept fixed: a command killed at a
//! point where it holds something, many CLIs at once, a full disk.

mod common;

use std::time::{Duration, Instant};

use common::{Keel, stderr};

#[test]
fn a_commit_killed_while_the_container_is_paused_leaves_it_running() {
    let keel = Keel::new();
    // Enough in the writable layer that the commit takes a while.
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/big bs=1M count=200 2>/dev/null; touch /ready; sleep 600",
    ]);
    keel.eventually("the container has written its data", || {
        keel.run(&["exec", "box", "test", "-e", "/ready"])
            .status
            .success()
    });
    let mut commit = keel
        .command(&["commit", "box", "keel-test/big"])
        .spawn()
        .unwrap();
    // While the commit reads the layer, the container is paused (docker's
    // default): exec refuses.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = keel.run(&["exec", "box", "true"]);
        if stderr(&out).contains("paused") {
            break;
        }
        assert!(
            commit.try_wait().unwrap().is_none(),
            "the commit ended before the pause was seen"
        );
        assert!(Instant::now() < deadline, "never saw the pause");
        std::thread::sleep(Duration::from_millis(20));
    }
    commit.kill().unwrap();
    commit.wait().unwrap();

    // The next command finds the pause nobody will undo and undoes it:
    // every command agrees that the container runs.
    assert_eq!(
        keel.inspect("box", "{{.State.Status}} {{.State.Paused}}"),
        "running false"
    );
    let out = keel.run(&["exec", "box", "echo", "alive"]);
    assert!(out.status.success(), "{}", stderr(&out));
    keel.ok(&["pause", "box"]);
    assert_eq!(keel.inspect("box", "{{.State.Paused}}"), "true");
    keel.ok(&["unpause", "box"]);
    keel.ok(&["exec", "box", "true"]);
    // And a commit goes through.
    keel.ok(&["exec", "box", "rm", "/big"]);
    keel.ok(&["commit", "box", "keel-test/small"]);
    keel.ok(&["image", "inspect", "keel-test/small"]);
}

#[test]
fn many_foreground_rm_runs_at_once_each_see_their_output_and_code() {
    let keel = Keel::new();
    // `run --rm` of a short command: the monitor may remove the container
    // before the CLI has read that it started; the CLI must still report
    // the output and the exit code, never "No such container".
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let keel = &keel;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for round in 0..12 {
                        let code = (worker + round) % 5;
                        let script = format!("echo hi-{worker}-{round}; exit {code}");
                        let out = keel.run(&[
                            "run",
                            "--rm",
                            "--network",
                            "none",
                            "busybox",
                            "sh",
                            "-c",
                            &script,
                        ]);
                        let want = format!("hi-{worker}-{round}\n");
                        if out.status.code() != Some(code)
                            || String::from_utf8_lossy(&out.stdout) != want
                        {
                            failures.push(format!(
                                "{script}: exit {:?}, stdout {:?}, stderr {:?}",
                                out.status.code(),
                                String::from_utf8_lossy(&out.stdout),
                                stderr(&out)
                            ));
                        }
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
    // The same, with the window held open: the CLI waits after reading that
    // the container started, and the monitor removes it meanwhile.
    let out = keel
        .command(&["run", "--rm", "busybox", "sh", "-c", "echo late; exit 3"])
        .env("KEEL_FAULT_DELAY", "run-started=500")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "late\n");
    assert_eq!(keel.ok(&["ps", "-aq"]), "", "--rm left containers");
    assert!(keel.mounts().is_empty(), "{:?}", keel.mounts());
}

/// Bytes free on the filesystem of `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().unwrap());
    words.next().unwrap() * words.next().unwrap()
}

#[test]
fn on_a_full_disk_keel_lists_stops_and_removes_and_says_why() {
    // keel's root on a filesystem of its own, filled by a container's log
    // (no cap: max-size=-1).
    let keel = Keel::with_root_size(Some("100m"));
    let root = keel.root();
    keel.ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "600"]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "logger",
        "--log-opt",
        "max-size=-1",
        "busybox",
        "sh",
        "-c",
        "while true; do echo 0123456789012345678901234567890123456789012345678901234567890123456789; done",
    ]);
    keel.eventually("the disk is full", || free_bytes(&root) < 64 << 10);

    // Reading and listing work; so do stop and remove, which free space.
    let images = keel.ok(&["images", "--format", "table"]);
    assert!(images.contains("busybox"), "{images}");
    let ps = keel.ok(&["ps", "--format", "table"]);
    assert!(ps.contains("logger") && ps.contains("sleeper"), "{ps}");
    keel.ok(&["stop", "-t", "1", "sleeper"]);
    assert_eq!(keel.inspect("sleeper", "{{.State.Status}}"), "exited");
    // The log was cut at a whole line when the disk filled: every line
    // `logs` reads is a line the container wrote.
    let logs = keel.run(&["logs", "--tail", "3", "logger"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    for line in String::from_utf8_lossy(&logs.stdout).lines() {
        assert_eq!(
            line,
            "0123456789012345678901234567890123456789012345678901234567890123456789"
        );
    }
    keel.ok(&["rm", "-f", "logger"]);
    assert!(free_bytes(&root) > 50 << 20, "rm -f freed the log's space");
    keel.ok(&["rm", "sleeper"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");

    // Filled again to the last block by a file of ours: keel gives back its
    // reserve, so a change that must be recorded still is, and says why.
    let filler = root.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=200"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    assert!(free_bytes(&root) < 64 << 10, "the disk is full again");
    let out = keel.run(&["volume", "create", "--label", "x=1", "one-more"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is nearly full: released keel's 1024 KiB reserve"),
        "{}",
        stderr(&out)
    );
    assert_eq!(keel.ok(&["volume", "ls", "-q"]), "one-more\n");
    std::fs::remove_file(&filler).unwrap();
    keel.ok(&["run", "--rm", "busybox", "true"]);
}

#[test]
fn a_build_whose_layer_does_not_fit_says_so_and_leaves_nothing() {
    let keel = Keel::with_root_size(Some("60m"));
    let context = keel.temp.subdir("context");
    // The RUN's output fits in its writable layer; the layer blob (random
    // data does not compress) does not fit beside it.
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN dd if=/dev/urandom of=/big bs=1M count=32\n",
    )
    .unwrap();
    let out = keel.run(&["build", "-t", "big", context.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let root = keel.root().display().to_string();
    let error = stderr(&out);
    let last = error.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("Error: failed to solve: write {root}/"))
            && last.ends_with("No space left on device (os error 28)"),
        "{error}"
    );
    // Nothing tagged, no build container, mount or half-written blob.
    assert_eq!(
        keel.ok(&["images", "--format", "{{.Repository}}"]),
        "busybox\n"
    );
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    assert!(
        keel.mounts().iter().all(|m| m == &root),
        "{:?}",
        keel.mounts()
    );
    let ingest: Vec<_> = std::fs::read_dir(keel.root().join("content/ingest"))
        .unwrap()
        .collect();
    assert!(ingest.is_empty(), "{ingest:?}");
    // The space is back: a build that fits goes through.
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN echo small > /small\n",
    )
    .unwrap();
    keel.ok(&["build", "-q", "-t", "small", context.to_str().unwrap()]);
}

#[test]
fn a_layer_that_expands_past_its_bound_is_refused_and_leaves_nothing() {
    let keel = Keel::new();
    // 64 MiB of zeros in a gzip of a few kB.
    let dir = keel.temp.subdir("bomb");
    let script = format!(
        "cd {} && dd if=/dev/zero of=zeros bs=1M count=64 2>/dev/null && tar -cf - zeros | gzip -9 > bomb.tar.gz && rm zeros",
        dir.display()
    );
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(made.success());
    let bomb = dir.join("bomb.tar.gz");
    let snapshots = || {
        std::fs::read_dir(keel.root().join("snapshots"))
            .unwrap()
            .count()
    };
    let before = snapshots();
    let out = keel
        .command(&["import", bomb.to_str().unwrap(), "keel-test/bomb"])
        .env("KEEL_LAYER_MAX_RATIO", "100")
        .env("KEEL_LAYER_MAX_SIZE", "16m")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("the layer expands to more than 16777216 bytes (KEEL_LAYER_MAX_SIZE)")
            && stderr(&out).contains("decompression bomb"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        keel.ok(&["images", "--format", "{{.Repository}}"]),
        "busybox\n",
        "nothing tagged"
    );
    assert_eq!(snapshots(), before, "no snapshot left");
    // A bad setting is named.
    let out = keel
        .command(&["import", bomb.to_str().unwrap(), "keel-test/bomb"])
        .env("KEEL_LAYER_MAX_SIZE", "lots")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("KEEL_LAYER_MAX_SIZE=\"lots\" is not a size"),
        "{}",
        stderr(&out)
    );
    // The defaults let a 64 MiB layer through.
    keel.ok(&["import", bomb.to_str().unwrap(), "keel-test/bomb"]);
}

#[test]
fn a_lost_database_is_refused_not_started_over() {
    let keel = Keel::new();
    keel.ok(&["create", "--name", "kept", "busybox", "true"]);
    let root = keel.root();
    let saved = keel.temp.subdir("saved");
    for name in ["keel.db", "keel.db-wal", "keel.db-shm"] {
        let _ = std::fs::rename(root.join(name), saved.join(name));
    }
    for args in [
        &["ps", "-a"][..],
        &["images"],
        &["run", "--rm", "busybox", "true"],
    ] {
        let out = keel.run(args);
        assert_ne!(out.status.code(), Some(0), "keel {args:?}");
        let error = stderr(&out);
        assert!(
            error.contains("keel.db is missing")
                && error.contains("holds images, containers")
                && error.contains("Restore keel.db"),
            "keel {args:?}: {error}"
        );
    }
    assert!(!root.join("keel.db").exists(), "no empty database was made");
    // An emptied one too.
    std::fs::write(root.join("keel.db"), b"").unwrap();
    assert!(stderr(&keel.run(&["ps"])).contains("keel.db is empty"));
    // Put back, all is there again.
    for name in ["keel.db", "keel.db-wal", "keel.db-shm"] {
        let _ = std::fs::rename(saved.join(name), root.join(name));
    }
    assert_eq!(keel.ok(&["ps", "-a", "--format", "{{.Names}}"]), "kept\n");
}

#[test]
fn space_nothing_holds_is_reclaimed_by_prune() {
    let keel = Keel::new();
    let root = keel.root();
    // What killed pulls, builds and unpacks leave: a partial download
    // (recent: a plain `pull` would resume it), a private temp file of a
    // process that is gone, a half-unpacked snapshot.
    let ingest = root.join("content/ingest");
    std::fs::write(
        ingest.join(format!("{}.partial", "ab".repeat(32))),
        vec![7u8; 3 << 20],
    )
    .unwrap();
    std::fs::write(ingest.join("unknown.999999999.1"), vec![7u8; 1 << 20]).unwrap();
    std::fs::create_dir_all(root.join("snapshots/ingest/cd.999999999.2/usr")).unwrap();
    let out = keel.ok(&["image", "prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 4.19MB\n");
    assert_eq!(std::fs::read_dir(&ingest).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(root.join("snapshots/ingest"))
            .unwrap()
            .count(),
        0
    );

    // A `volume rm` killed after it moved the volume aside: still listed,
    // never half emptied; the next rm finishes, and prune sweeps the rest.
    keel.ok(&["volume", "create", "doomed"]);
    std::fs::write(root.join("volumes/doomed/_data/file"), vec![1u8; 1 << 20]).unwrap();
    let mut rm = keel
        .command(&["volume", "rm", "doomed"])
        .env("KEEL_FAULT_DELAY", "volume-rm-moved=5000")
        .spawn()
        .unwrap();
    keel.eventually("the volume is moved aside", || {
        !root.join("volumes/doomed").exists()
    });
    rm.kill().unwrap();
    rm.wait().unwrap();
    assert_eq!(keel.ok(&["volume", "ls", "-q"]), "doomed\n");
    keel.ok(&["volume", "rm", "doomed"]);
    assert_eq!(keel.ok(&["volume", "ls", "-q"]), "");
    let left: Vec<_> = std::fs::read_dir(root.join("volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // system prune: stopped containers, unused networks, dangling images,
    // build cache, and with --volumes anonymous volumes; running ones stay.
    keel.ok(&["run", "-d", "--name", "up", "busybox", "sleep", "300"]);
    keel.ok(&["create", "--name", "down", "-v", "/anon", "busybox", "true"]);
    keel.ok(&["network", "create", "unused"]);
    let out = keel.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.starts_with("Deleted Containers:\n"), "{out}");
    assert!(out.contains("\nDeleted Networks:\nunused\n"), "{out}");
    assert!(out.contains("\nDeleted Volumes:\n"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap_or_default()
            .starts_with("Total reclaimed space: "),
        "{out}"
    );
    assert_eq!(keel.ok(&["ps", "-a", "--format", "{{.Names}}"]), "up\n");
    assert_eq!(keel.ok(&["volume", "ls", "-q"]), "");
    let info = keel.ok(&[
        "info",
        "--format",
        "{{.ContainersRunning}} {{.Images}} {{.LoggingDriver}} {{index .LogOpts \"max-size\"}}",
    ]);
    assert_eq!(info, "1 1 json-file 20m\n");
}
