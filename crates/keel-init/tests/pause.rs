//! keel-init as a pod's pause process: it stays up until SIGTERM or
//! SIGINT and then exits 0, whether run as `pause` or with `--pause`.

use std::process::{Command, Stdio};
use std::time::Duration;

fn stays_up_then_exits_zero_on(mut command: Command, signal: libc::c_int) {
    let mut child = command.stdin(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "pause ended by itself");
    // Signals it does not stop for.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.try_wait().unwrap().is_none(), "pause ended on SIGHUP");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn pause_waits_for_sigterm_or_sigint_and_exits_zero() {
    let init = env!("CARGO_BIN_EXE_keel-init");
    let mut flag = Command::new(init);
    flag.arg("--pause");
    stays_up_then_exits_zero_on(flag, libc::SIGTERM);

    let dir = tempfile::tempdir().unwrap();
    let pause = dir.path().join("pause");
    std::os::unix::fs::symlink(init, &pause).unwrap();
    stays_up_then_exits_zero_on(Command::new(&pause), libc::SIGINT);
}
