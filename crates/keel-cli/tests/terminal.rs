//! `-it` under a real pseudo-terminal, as a user's shell gives it: the
//! container's shell on a tty of its own, the window size passed in, the
//! detach keys leaving it running, `attach` getting back to it.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Keel;

/// keel on a new pty of `rows` x `cols`, as the controlling terminal of
/// its own session; returns the child and the master.
fn spawn_on_pty(keel: &Keel, args: &[&str], rows: u16, cols: u16) -> (Child, std::fs::File) {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut command = keel.command(args);
    command
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and TIOCSCTTY in the child before exec, on its stdin.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = command.spawn().expect("start keel on a pty");
    (child, std::fs::File::from(pty.master))
}

/// Reads from the master until `want` shows up (or fails after 60 s: a
/// micro-VM boots under an emulator here).
fn read_until(master: &mut std::fs::File, want: &str) -> String {
    let fd = master.as_raw_fd();
    // SAFETY: fcntl on the master fd we own.
    unsafe {
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(&seen).contains(want) {
            return String::from_utf8_lossy(&seen).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {want:?} on the terminal; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        match master.read(&mut buffer) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buffer[..n]),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The shell's prompt, then what it says of its terminal: a tty of its
/// own, TERM=xterm, the 30x100 window keel was started in.
fn shell_on_its_terminal(master: &mut std::fs::File) {
    read_until(master, "# ");
    master
        .write_all(b"tty; echo term=$TERM; stty size\n")
        .unwrap();
    let seen = read_until(master, "30 100");
    assert!(seen.contains("/dev/pts/0"), "{seen}");
    assert!(seen.contains("term=xterm"), "{seen}");
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "keel did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_micro_vm_gets_a_terminal_too() {
    let keel = Keel::new();
    let (mut child, mut master) = spawn_on_pty(
        &keel,
        &["run", "-it", "--rm", "--isolation", "vm", "busybox", "sh"],
        30,
        100,
    );
    shell_on_its_terminal(&mut master);
    // The window grows: the guest's terminal follows.
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ on the master we own, from a winsize.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    std::thread::sleep(Duration::from_millis(500));
    master.write_all(b"stty size\n").unwrap();
    read_until(&mut master, "40 120");
    master.write_all(b"exit 5\n").unwrap();
    assert_eq!(wait_exit(&mut child), 5);
}

#[test]
fn interactive_terminal_detach_and_attach() {
    let keel = Keel::new();
    let (mut child, mut master) = spawn_on_pty(
        &keel,
        &["run", "-it", "--name", "shell", "busybox", "sh"],
        30,
        100,
    );
    shell_on_its_terminal(&mut master);
    // Typed input comes back through the container's tty (its echo).
    master.write_all(b"echo typed-$((6*7))\n").unwrap();
    read_until(&mut master, "typed-42");

    // ctrl-p ctrl-q: keel leaves, the container stays.
    master.write_all(&[0x10, 0x11]).unwrap();
    assert_eq!(wait_exit(&mut child), 0);
    assert_eq!(keel.inspect("shell", "{{.State.Status}}"), "running");

    // attach gets the same shell back; its exit is attach's.
    let (mut child, mut master) = spawn_on_pty(&keel, &["attach", "shell"], 30, 100);
    // What is typed before attach has connected waits in its terminal.
    master.write_all(b"echo back-$((1+1))\n").unwrap();
    read_until(&mut master, "back-2");
    master.write_all(b"exit 5\n").unwrap();
    assert_eq!(wait_exit(&mut child), 5);
    assert_eq!(
        keel.inspect("shell", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 5"
    );
    // What the shell printed is in its log, as one stream.
    let logs = keel.ok(&["logs", "shell"]);
    assert!(
        logs.contains("typed-42") && logs.contains("back-2"),
        "{logs}"
    );
}

#[test]
fn exec_with_a_terminal() {
    let keel = Keel::new();
    keel.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "60"]);
    let (mut child, mut master) = spawn_on_pty(&keel, &["exec", "-it", "box", "sh"], 24, 80);
    read_until(&mut master, "# ");
    master.write_all(b"tty; stty size; exit 3\n").unwrap();
    let seen = read_until(&mut master, "24 80");
    assert!(seen.contains("/dev/pts/"), "{seen}");
    assert_eq!(wait_exit(&mut child), 3);

    // docker's exec -t sets TERM=xterm (a shell falls back to "dumb" without
    // it); without -t there is none, and -e TERM=... wins.
    let out = keel.ok(&["exec", "-t", "box", "sh", "-c", "echo term=$TERM"]);
    assert_eq!(out.trim_end(), "term=xterm");
    let out = keel.ok(&["exec", "box", "sh", "-c", "echo term=$TERM"]);
    assert_eq!(out.trim_end(), "term=");
    let out = keel.ok(&[
        "exec",
        "-t",
        "-e",
        "TERM=vt100",
        "box",
        "sh",
        "-c",
        "echo $TERM",
    ]);
    assert_eq!(out.trim_end(), "vt100");
}
