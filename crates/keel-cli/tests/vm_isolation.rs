//! `keel run --isolation vm`: the busybox image as a micro-VM with a kernel
//! of its own (Debian's, from keel's setup; QEMU's microvm under TCG on
//! this machine, whose KVM cannot boot Linux), through the commands a user
//! types: output and exit codes, env/user/workdir, volumes, logs, exec,
//! stop, --rm, networks shared with containers, a built image.

mod common;

use std::path::Path;

use common::{Keel, stderr, stdout};

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}

/// Debian's generic guest kernel, which setup installs beside keel's
/// minimal one (the default).
fn debian_kernel() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib/keel/guest")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("modules").is_dir())
        .expect("setup installs Debian's guest kernel")
}

/// The processes left in this keel's cgroups (a VM's shim and VMM live in
/// the container's).
fn processes_left(keel: &Keel) -> Vec<String> {
    let mut left = Vec::new();
    for hierarchy in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(hierarchy).join(keel.cgroup_parent.trim_start_matches('/'));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let procs =
                std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
            left.extend(procs.lines().map(str::to_string));
        }
    }
    left
}

#[test]
fn a_vm_runs_the_image_on_a_kernel_of_its_own() {
    let keel = Keel::new();
    let out = keel.run(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "-e",
        "GREETING=hello",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo kernel=$(uname -r); echo $GREETING; id -u; pwd; echo to-stderr >&2; exit 3",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    let kernel = text
        .lines()
        .find_map(|l| l.strip_prefix("kernel="))
        .expect("the guest said its kernel");
    assert_ne!(kernel, host_kernel(), "the VM runs the host's kernel");
    assert!(
        kernel.starts_with("6."),
        "a guest kernel from setup: {kernel}"
    );
    assert!(text.contains("hello\n1000\n/tmp\n"), "{text}");
    assert!(stderr(&out).contains("to-stderr"), "{}", stderr(&out));
    assert_eq!(keel.ok(&["ps", "-aq"]), "", "--rm removed it");
    assert_eq!(processes_left(&keel), Vec::<String>::new());

    // Debian's generic kernel (modules, ACPI) works too, where keel's
    // minimal one is the default.
    let debian = debian_kernel();
    let out = keel
        .command(&["run", "--rm", "--isolation", "vm", "busybox", "uname", "-r"])
        .env("KEEL_GUEST_KERNEL", &debian)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).trim().ends_with("-amd64"), "{}", stdout(&out));

    // A command the image lacks: 127, as for a container.
    let out = keel.run(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "busybox",
        "no-such-command",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-such-command"), "{}", stderr(&out));

    // What a micro-VM cannot share with the host is refused up front.
    let out = keel.run(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "--network",
        "host",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("--isolation vm"), "{}", stderr(&out));
    let out = keel.run(&["run", "--rm", "--isolation", "vmm", "busybox", "true"]);
    assert!(
        stderr(&out).contains("invalid isolation"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn volumes_written_in_the_vm_are_on_the_host() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("shared");
    std::fs::write(dir.join("from-host"), "host wrote this\n").unwrap();
    let bind = format!("{}:/data", dir.display());
    let out = keel.ok(&[
        "run",
        "--rm",
        "--isolation",
        "vm",
        "-v",
        &bind,
        "-v",
        "named:/vol",
        "busybox",
        "sh",
        "-c",
        "cat /data/from-host; echo vm wrote this > /data/from-vm; echo kept > /vol/file",
    ]);
    assert_eq!(out, "host wrote this\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("from-vm")).unwrap(),
        "vm wrote this\n"
    );
    // The named volume, read by an ordinary container.
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "-v",
            "named:/vol",
            "busybox",
            "cat",
            "/vol/file"
        ]),
        "kept\n"
    );
}

#[test]
fn a_detached_vm_logs_execs_and_stops() {
    let keel = Keel::new();
    keel.ok(&[
        "run", "-d", "--name", "ticker", "--isolation", "vm", "--health-cmd",
        "grep -q tick /proc/1/cmdline", "--health-interval", "500ms", "busybox", "sh", "-c",
        "trap 'echo got TERM; exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
    ]);
    assert_eq!(keel.inspect("ticker", "{{.HostConfig.Isolation}}"), "vm");
    let kernel = keel.inspect("ticker", "{{.MicroVM.Kernel}}");
    assert!(
        kernel.starts_with("6."),
        "inspect names the guest kernel: {kernel}"
    );
    assert_eq!(
        keel.ok(&["ps", "--format", "{{.Names}} {{.Isolation}}"]),
        "ticker vm\n"
    );
    keel.eventually("ticks in the log", || {
        stdout(&keel.run(&["logs", "ticker"])).contains("tick 2")
    });
    // The health check runs in the guest (its pid 1 is the container's).
    keel.eventually("healthy", || {
        keel.inspect("ticker", "{{.State.Health.Status}}") == "healthy"
    });
    let out = keel.run(&["exec", "ticker", "sh", "-c", "uname -r; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_ne!(stdout(&out).trim(), host_kernel(), "exec ran in the VM");
    // exec sees the container's processes, not the host's.
    let ps = keel.ok(&["exec", "ticker", "ps"]);
    assert!(ps.contains("while true"), "{ps}");
    assert!(!ps.contains("qemu"), "{ps}");
    // cp goes into the container's files (never the host's, where the
    // VM's shim runs), both ways, and the guest sees it.
    let name = format!("keel-cp-{}", std::process::id());
    let file = keel.temp.path().join(&name);
    std::fs::write(&file, "copied in\n").unwrap();
    // Looked for first: the guest must not keep "not there" in mind.
    let out = keel.run(&["exec", "ticker", "cat", &format!("/{name}")]);
    assert_ne!(out.status.code(), Some(0));
    keel.ok(&["cp", file.to_str().unwrap(), "ticker:/"]);
    assert!(
        !Path::new("/").join(&name).exists(),
        "cp wrote the host's /"
    );
    assert_eq!(
        keel.ok(&["exec", "ticker", "cat", &format!("/{name}")]),
        "copied in\n"
    );
    keel.ok(&["exec", "ticker", "sh", "-c", "echo made in the vm > /made"]);
    let out = keel.temp.path().join("made");
    keel.ok(&["cp", "ticker:/made", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "made in the vm\n");
    // What a VM's network cannot do.
    let out = keel.run(&[
        "run",
        "--rm",
        "--network",
        "container:ticker",
        "busybox",
        "true",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("micro-VM"), "{}", stderr(&out));
    keel.ok(&["network", "create", "later"]);
    let out = keel.run(&["network", "connect", "later", "ticker"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("micro-VM"), "{}", stderr(&out));

    keel.ok(&["stop", "ticker"]);
    assert_eq!(
        keel.inspect("ticker", "{{.State.Status}} {{.State.ExitCode}}"),
        "exited 0"
    );
    assert!(
        keel.ok(&["logs", "ticker"]).contains("got TERM"),
        "SIGTERM reached the process"
    );
    assert_eq!(processes_left(&keel), Vec::<String>::new());
    // Started again, it boots again.
    keel.ok(&["start", "ticker"]);
    keel.eventually("running again", || {
        keel.inspect("ticker", "{{.State.Status}}") == "running"
    });
    keel.ok(&["rm", "-f", "ticker"]);
    assert_eq!(processes_left(&keel), Vec::<String>::new());
}

#[test]
fn a_vm_and_a_container_reach_each_other_by_name() {
    let keel = Keel::new();
    keel.ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.77.0.0/24",
        "--subnet",
        "fd77::/64",
        "mixed",
    ]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "mixed",
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo from-container > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "vmweb",
        "--isolation",
        "vm",
        "--network",
        "mixed",
        "-p",
        "127.0.0.1:18080:80",
        "busybox",
        "sh",
        "-c",
        "mkdir /www && echo from-vm > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    // The VM asks for the container by name.
    let out = keel.ok(&[
        "exec",
        "vmweb",
        "sh",
        "-c",
        "ping -c 1 web >/dev/null && wget -qO- http://web/",
    ]);
    assert_eq!(out, "from-container\n");
    // A container asks for the VM by name.
    let out = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "mixed",
        "busybox",
        "sh",
        "-c",
        "ping -c 1 vmweb >/dev/null && wget -qO- http://vmweb/",
    ]);
    assert_eq!(out, "from-vm\n");
    // The VM's address is the one keel's IPAM gave it.
    let address = keel.inspect("vmweb", "{{.NetworkSettings.Networks.mixed.IPAddress}}");
    let inside = keel.ok(&["exec", "vmweb", "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(
        inside.contains(&format!("{address}/")),
        "{address} vs {inside}"
    );
    // IPv6 too: its address, and the container reached over it.
    let address6 = keel.inspect(
        "vmweb",
        "{{.NetworkSettings.Networks.mixed.GlobalIPv6Address}}",
    );
    let inside = keel.ok(&["exec", "vmweb", "ip", "-6", "-o", "addr", "show", "eth0"]);
    assert!(
        inside.contains(&format!("{address6}/64")),
        "{address6} vs {inside}"
    );
    let web6 = keel.inspect(
        "web",
        "{{.NetworkSettings.Networks.mixed.GlobalIPv6Address}}",
    );
    let out = keel.ok(&[
        "exec",
        "vmweb",
        "wget",
        "-qO-",
        &format!("http://[{web6}]/"),
    ]);
    assert_eq!(out, "from-container\n");
    // Its published port, from keel's side.
    let out = keel
        .netns
        .run("busybox", &["wget", "-qO-", "http://127.0.0.1:18080/"]);
    assert_eq!(stdout(&out), "from-vm\n", "{}", stderr(&out));
    keel.ok(&["rm", "-f", "vmweb", "web"]);
    keel.ok(&["network", "rm", "mixed"]);
}

#[test]
fn an_image_keel_built_runs_as_a_vm() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("context");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox\nRUN echo built-by-keel > /built\nCMD [\"cat\", \"/built\"]\n",
    )
    .unwrap();
    keel.ok(&["build", "-t", "made", dir.to_str().unwrap()]);
    assert_eq!(
        keel.ok(&["run", "--rm", "--isolation", "vm", "made"]),
        "built-by-keel\n"
    );
}

#[test]
fn no_guest_kernel_is_a_clear_error_and_leaves_nothing_running() {
    let keel = Keel::new();
    let empty = keel.temp.subdir("no-kernel");
    let out = keel
        .command(&[
            "run",
            "--name",
            "nokernel",
            "--isolation",
            "vm",
            "busybox",
            "true",
        ])
        .env("KEEL_GUEST_KERNEL", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("no guest kernel"), "{}", stderr(&out));
    assert_ne!(keel.inspect("nokernel", "{{.State.Status}}"), "running");
    assert_eq!(processes_left(&keel), Vec::<String>::new());

    // No VMM to run it.
    let out = keel
        .command(&["run", "--rm", "--isolation", "vm", "busybox", "true"])
        .env("KEEL_QEMU", "/nonexistent/qemu-system-x86_64")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/qemu"),
        "{}",
        stderr(&out)
    );

    // A guest that does not come up in time: the error shows its console.
    let out = keel
        .command(&["run", "--rm", "--isolation", "vm", "busybox", "true"])
        .env("KEEL_VM_BOOT_TIMEOUT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not answer within 0 s") && stderr(&out).contains("console"),
        "{}",
        stderr(&out)
    );
    assert_eq!(processes_left(&keel), Vec::<String>::new());

    // keel's own VMM, asked for on a host whose KVM cannot boot Linux
    // (PVM here): the same path up to the guest, whose failure is told.
    let out = keel
        .command(&[
            "run",
            "--name",
            "keelvmm",
            "--isolation",
            "vm",
            "-v",
            "vol:/vol",
            "busybox",
            "true",
        ])
        .env("KEEL_VMM", "keel")
        .env("KEEL_VM_BOOT_TIMEOUT", "20")
        .output()
        .unwrap();
    if Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("the VM ended while booting (KVM internal error"),
            "{}",
            stderr(&out)
        );
    } else {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(keel.inspect("keelvmm", "{{.MicroVM.VMM}}"), "keel-vm");
    assert_eq!(processes_left(&keel), Vec::<String>::new());
    keel.ok(&["rm", "keelvmm"]);
    // The --rm ones are gone; the one without --rm is there, not running.
    assert_eq!(
        keel.ok(&["ps", "-a", "--format", "{{.Names}}"]),
        "nokernel\n"
    );
}

/// `keel runtime ARGS` on this keel's runtime state, which must succeed.
fn runtime_ok(keel: &Keel, args: &[&str]) {
    let mut command = keel.command(&[&["runtime"], args].concat());
    command.env("KEEL_RUNTIME_ROOT", keel.runroot().join("runtime"));
    let out =
        keel_testutil::output_via_files(&mut command, std::time::Duration::from_secs(60)).unwrap();
    assert!(
        out.status.success(),
        "keel runtime {args:?}: {}",
        stderr(&out)
    );
}

/// Whether `pid` runs (and is not a zombie waiting for its parent).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// containerd drives keel-runtime's exec with `--detach --pid-file` (and
/// `--console-socket` for a terminal): the pid file must name a process
/// that lives as long as the one in the guest.
#[test]
fn containerd_s_exec_contract_holds_for_a_vm() {
    use std::io::{IoSliceMut, Read};
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};

    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "held",
        "--isolation",
        "vm",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = keel.inspect("held", "{{.Id}}");
    let pid_file = keel.temp.path().join("exec.pid");
    runtime_ok(
        &keel,
        &[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
            "sh",
            "-c",
            "sleep 2; echo done > /made-by-exec",
        ],
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        alive(pid),
        "the pid file's process runs while the guest's does"
    );
    keel.eventually("the exec's process to end", || !alive(pid));
    assert_eq!(keel.ok(&["exec", "held", "cat", "/made-by-exec"]), "done\n");

    // A terminal: its master comes over the console socket.
    let socket = keel.temp.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    runtime_ok(
        &keel,
        &[
            "exec",
            "--detach",
            "--tty",
            "--console-socket",
            socket.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            &id,
            "sh",
            "-c",
            "tty; sleep 1",
        ],
    );
    let (stream, _) = listener.accept().unwrap();
    let mut payload = [0u8; 256];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut payload)];
    let message = nix::sys::socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let master = message
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("a pty master on the console socket");
    // SAFETY: the fd just received is ours.
    let mut master = unsafe { std::fs::File::from_raw_fd(master) };
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("/dev/pts/") {
        match master.read(&mut buffer) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buffer[..n]),
            _ => panic!(
                "the terminal ended with {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

/// Linux's 9p client (the guest kernel's) against keel's own 9P2000.L
/// server — the one keel's VMM serves its virtio-9p devices with. Here it
/// is reached over vsock (`KEEL_VM_9P=keel`, Linux's `trans=fd`), as
/// keel's VMM cannot boot Linux on this host's KVM.
#[test]
fn linux_s_9p_client_works_against_keel_s_9p_server() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("shared");
    std::fs::write(dir.join("from-host"), "host wrote this\n").unwrap();
    let bind = format!("{}:/data", dir.display());
    let script = "set -e
grep ' /data 9p ' /proc/mounts | grep -o trans=fd
cat /data/from-host
mkdir -p /data/d/e
echo one > /data/d/e/f
ln -s e/f /data/d/link
cat /data/d/link
ln /data/d/e/f /data/d/hard
mv /data/d/e/f /data/d/moved
chmod 640 /data/d/moved
chown 1000:1001 /data/d/moved
rmdir /data/d/e
dd if=/dev/urandom of=/data/big bs=64k count=16 2>/dev/null
md5sum /data/big | cut -d' ' -f1 > /data/big.md5
touch -d '2001-02-03 04:05:06' /data/d/hard
mkfifo /data/fifo
ls /data/d | tr '\\n' ' '; echo
ls -l /data/d/moved | cut -c1-10
echo written in the vm > /etc/vm-file
for i in $(seq 1 300); do echo $i > /data/many-$i; done
ls /data | grep -c many-
rm /data/many-*
echo done";
    let out = keel
        .command(&[
            "run",
            "--name",
            "shares",
            "--isolation",
            "vm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            script,
        ])
        .env("KEEL_VM_9P", "keel")
        .env("KEEL_VMM", "qemu")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "trans=fd\nhost wrote this\none\nhard link moved \n-rw-r-----\n300\ndone\n"
    );
    use std::os::unix::fs::MetadataExt;
    let moved = std::fs::metadata(dir.join("d/moved")).unwrap();
    assert_eq!(
        (
            moved.mode() & 0o7777,
            moved.uid(),
            moved.gid(),
            moved.nlink()
        ),
        (0o640, 1000, 1001, 2)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("d/moved")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_link(dir.join("d/link")).unwrap(),
        Path::new("e/f")
    );
    let stamp = std::fs::metadata(dir.join("d/hard")).unwrap().mtime();
    assert_eq!(stamp, 981173106, "touch -d's time, UTC");
    // What the guest wrote is what the host reads, byte for byte.
    let big = std::fs::read(dir.join("big")).unwrap();
    assert_eq!(big.len(), 1 << 20);
    let md5 = std::process::Command::new("md5sum")
        .arg(dir.join("big"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&md5.stdout)
            .split(' ')
            .next()
            .unwrap(),
        std::fs::read_to_string(dir.join("big.md5")).unwrap().trim()
    );
    assert!(!dir.join("many-1").exists());
    // The root file system is the container's too: its diff on the host.
    let diff = keel.ok(&["diff", "shares"]);
    assert!(diff.contains("A /etc/vm-file"), "{diff}");
    assert_eq!(
        keel.inspect("shares", "{{.MicroVM.VMM}}"),
        "qemu-system-x86_64 -M microvm"
    );
    keel.ok(&["rm", "shares"]);

    // Debian's kernel too (its 9p fd transport is a module).
    let debian = debian_kernel();
    let out = keel
        .command(&[
            "run",
            "--rm",
            "--isolation",
            "vm",
            "-v",
            &bind,
            "busybox",
            "sh",
            "-c",
            "grep ' /data 9p ' /proc/mounts | grep -o trans=fd; cat /data/d/moved",
        ])
        .env("KEEL_VM_9P", "keel")
        .env("KEEL_VMM", "qemu")
        .env("KEEL_GUEST_KERNEL", &debian)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "trans=fd\none\n", "{}", stderr(&out));
}
