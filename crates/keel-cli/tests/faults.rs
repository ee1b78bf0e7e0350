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
