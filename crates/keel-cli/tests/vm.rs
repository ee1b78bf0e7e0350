//! `keel vm` as a user types it, with keel's test guest under this
//! machine's KVM: a VM in the foreground on the terminal, detached ones
//! held by their keel-vmm (ls, inspect, logs, stop, kill, rm), how guests
//! end, overprovisioning, and bad input refused with nothing left behind.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_testutil::{TempRoot, require_root};

struct Keel {
    temp: TempRoot,
}

impl Keel {
    fn new() -> Keel {
        require_root();
        assert!(
            Path::new("/dev/kvm").exists(),
            "keel vm tests run guests under KVM: /dev/kvm is missing"
        );
        Keel {
            temp: TempRoot::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .env("KEEL_ROOT", self.temp.root())
            .env("KEEL_RUNROOT", self.temp.runroot())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run keel")
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.run(args), args)
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "keel {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `vm ls -a` as (name, status) rows.
    fn statuses(&self) -> Vec<(String, String)> {
        self.ok(&["vm", "ls", "-a", "--format", "{{.Name}}|{{.Status}}"])
            .lines()
            .map(|l| {
                let (name, status) = l.split_once('|').unwrap();
                (name.to_string(), status.to_string())
            })
            .collect()
    }

    fn status(&self, name: &str) -> String {
        self.statuses()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no VM {name} in {:?}", self.statuses()))
    }
}

/// stdout of a keel that must have succeeded.
fn succeeded(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "keel {args:?} exited {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Drop for Keel {
    fn drop(&mut self) {
        // Any VMM left running is a leak: killed, and the test fails.
        let marker = self.temp.path().display().to_string();
        let killed = keel_testutil::peers::kill_processes_mentioning(&marker);
        if !killed.is_empty() && !std::thread::panicking() {
            panic!("VMMs were left running: {killed:?}");
        }
    }
}

const GUEST: &str = keel_vm::TEST_GUEST;

#[test]
fn a_vm_in_the_foreground_prints_on_the_terminal_and_ends_with_the_guest() {
    let keel = Keel::new();
    let out = keel.ok(&[
        "vm",
        "run",
        "--name",
        "hi",
        "--kernel",
        GUEST,
        "--cmdline",
        "hello",
    ]);
    assert_eq!(out, "hello from keel's test guest\n");
    assert!(keel.status("hi").starts_with("Exited (powered off) "));
    // Four vCPUs, each reporting in.
    let out = keel.ok(&[
        "vm",
        "run",
        "--cpus",
        "4",
        "--memory",
        "64m",
        "--kernel",
        GUEST,
        "--cmdline",
        "cpus",
    ]);
    assert!(out.ends_with("all 4 cpus up\n"), "{out}");
    // The whole of the memory asked for is there.
    let out = keel.ok(&[
        "vm",
        "run",
        "--memory",
        "512m",
        "--kernel",
        GUEST,
        "--cmdline",
        "memory",
    ]);
    assert_eq!(out, "memory ok: 512 MiB\n");
    // A guest that panics or triple-faults: exit 1, and ls says which.
    let out = keel.run(&[
        "vm",
        "run",
        "--name",
        "oops",
        "--kernel",
        GUEST,
        "--cmdline",
        "panic",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(keel.status("oops").starts_with("Exited (guest panicked) "));
    let out = keel.run(&[
        "vm",
        "run",
        "--name",
        "tf",
        "--kernel",
        GUEST,
        "--cmdline",
        "triple-fault",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(keel.status("tf").starts_with("Exited (triple fault) "));
    // Nothing runs now: ls shows nothing, ls -a everything.
    assert_eq!(keel.ok(&["vm", "ls", "-q"]), "");
    assert_eq!(keel.ok(&["vm", "ls", "-aq"]).lines().count(), 5);
    // --rm: gone with its guest.
    let out = keel.ok(&["vm", "run", "--rm", "--kernel", GUEST, "--cmdline", "hello"]);
    assert_eq!(out, "hello from keel's test guest\n");
    assert_eq!(keel.ok(&["vm", "ls", "-aq"]).lines().count(), 5);
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--rm",
        "--name",
        "brief",
        "--kernel",
        GUEST,
        "--cmdline",
        "idle",
    ]);
    assert!(keel.status("brief").starts_with("Up "));
    keel.ok(&["vm", "stop", "-t", "0", "brief"]);
    keel.eventually("brief is removed", || {
        !keel.statuses().iter().any(|(n, _)| n == "brief")
    });
}

#[test]
fn detached_vms_are_held_by_their_vmm_and_managed_by_name() {
    let keel = Keel::new();
    let id = keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "counter",
        "--cpus",
        "2",
        "--memory",
        "96m",
        "--kernel",
        GUEST,
        "--cmdline",
        "count",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    // The console goes to the log while the VM runs on.
    keel.eventually("the guest counts", || {
        keel.ok(&["vm", "logs", "counter"]).contains("count 3\n")
    });
    let table = keel.ok(&["vm", "ls"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["VM ID", "NAME", "STATUS", "CPUS", "MEMORY", "RESIDENT"]
    );
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id[..12]), "{table}");
    assert!(
        row.contains("counter") && row.contains("Up ") && row.contains("96MiB"),
        "{table}"
    );
    assert_eq!(
        keel.ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.State}} {{.CPUs}} {{.Memory}}",
            "counter"
        ]),
        "running 2 100663296\n"
    );
    // Its VMM confined itself with a seccomp filter once the VM was made.
    let pid = keel.ok(&["vm", "inspect", "-f", "{{.Pid}}", "counter"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert!(status.contains("\nSeccomp:\t2\n"), "{status}");
    assert!(status.contains("\nSeccomp_filters:\t1\n"), "{status}");
    // Lazily committed: the guest touched little of its 96 MiB.
    let resident: u64 = keel
        .ok(&["vm", "inspect", "-f", "{{.MemoryResident}}", id])
        .trim()
        .parse()
        .unwrap();
    assert!(resident > 0 && resident < 48 << 20, "resident {resident}");
    // A second VM may not take the name; an id prefix finds the first.
    let error = keel.fails(
        &["vm", "run", "-d", "--name", "counter", "--kernel", GUEST],
        125,
    );
    assert!(
        error.contains("the VM name \"counter\" is already in use"),
        "{error}"
    );
    assert_eq!(
        keel.ok(&["vm", "inspect", "-f", "{{.Name}}", &id[..8]]),
        "counter\n"
    );
    // rm refuses a running VM; stop ends it (the counting guest ignores
    // the power button: after -t the VMM stops it), and the log keeps what
    // the guest said.
    let error = keel.fails(&["vm", "rm", "counter"], 1);
    assert!(error.contains("it is running"), "{error}");
    assert_eq!(keel.ok(&["vm", "stop", "-t", "1", "counter"]), "counter\n");
    assert!(keel.status("counter").starts_with("Exited (stopped) "));
    assert!(
        keel.ok(&["vm", "logs", "counter"])
            .starts_with("count 1\ncount 2\n")
    );
    assert_eq!(keel.ok(&["vm", "rm", "counter"]), "counter\n");
    assert!(keel.statuses().is_empty());
    let error = keel.fails(&["vm", "rm", "counter"], 1);
    assert_eq!(error, "Error: No such VM: counter\n");

    // kill: the VMM goes at once; rm -f kills and removes.
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "spin",
        "--kernel",
        GUEST,
        "--cmdline",
        "spin",
    ]);
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "spin2",
        "--kernel",
        GUEST,
        "--cmdline",
        "spin",
    ]);
    assert_eq!(keel.ok(&["vm", "kill", "spin"]), "spin\n");
    assert!(keel.status("spin").starts_with("Exited (killed) "));
    assert_eq!(
        keel.ok(&["vm", "rm", "-f", "spin2", "spin"]),
        "spin2\nspin\n"
    );
    assert!(keel.statuses().is_empty());
}

#[test]
fn vms_may_be_assigned_more_memory_than_the_host_has() {
    let keel = Keel::new();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    let total = total_kb * 1024;
    // Three VMs of 40% of the host's RAM each: 120% in all.
    let each = total * 2 / 5;
    let each_mib = format!("{}m", each >> 20);
    for name in ["big1", "big2", "big3"] {
        keel.ok(&[
            "vm",
            "run",
            "-d",
            "--name",
            name,
            "--memory",
            &each_mib,
            "--kernel",
            GUEST,
            "--cmdline",
            "count",
        ]);
    }
    keel.eventually("all three count", || {
        ["big1", "big2", "big3"]
            .iter()
            .all(|n| keel.ok(&["vm", "logs", n]).contains("count 1\n"))
    });
    let mut assigned = 0;
    for name in ["big1", "big2", "big3"] {
        let fields = keel.ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.State}} {{.Memory}} {{.MemoryResident}}",
            name,
        ]);
        let fields: Vec<&str> = fields.split_whitespace().collect();
        assert_eq!(fields[0], "running");
        assert_eq!(fields[1].parse::<u64>().unwrap(), (each >> 20) << 20);
        assigned += fields[1].parse::<u64>().unwrap();
        let resident: u64 = fields[2].parse().unwrap();
        assert!(resident < 64 << 20, "{name} holds {resident} bytes");
    }
    assert!(assigned > total, "{assigned} assigned of {total}");
    // One VM larger than RAM and swap together could never be backed.
    let error = keel.fails(
        &[
            "vm",
            "run",
            "-d",
            "--memory",
            &format!("{}m", (total >> 20) * 8),
            "--kernel",
            GUEST,
        ],
        125,
    );
    assert!(
        error.contains("more than this host's RAM and swap together"),
        "{error}"
    );
    keel.ok(&["vm", "rm", "-f", "big1", "big2", "big3"]);
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_nothing() {
    let keel = Keel::new();
    // A bzImage's signature on what is not a kernel.
    let fake_bzimage = keel.temp.path().join("vmlinuz");
    let mut bytes = vec![0u8; 4096];
    bytes[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(&fake_bzimage, &bytes).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["vm", "run", "--kernel", "/etc/passwd"],
            "Error: /etc/passwd is not a guest keel can boot: not an ELF file\n",
        ),
        (
            &["vm", "run", "-d", "--kernel", "/etc/passwd"],
            "Error: /etc/passwd is not a guest keel can boot: not an ELF file\n",
        ),
        (
            &["vm", "run", "--kernel", "/nonexistent"],
            "Error: the kernel /nonexistent: No such file or directory (os error 2)\n",
        ),
        (
            &["vm", "run", "--cpus", "0", "--kernel", GUEST],
            "0 vCPUs: KVM here allows 1 to",
        ),
        (
            &["vm", "run", "--memory", "1m", "--kernel", GUEST],
            "Error: 1048576 bytes of memory: a VM needs at least 4 MiB\n",
        ),
        (
            &["vm", "run", "--memory", "lots", "--kernel", GUEST],
            "Error: --memory lots:",
        ),
        (
            &["vm", "run", "--console", "printer", "--kernel", GUEST],
            "Error: --console printer: use file, tty or none\n",
        ),
        (
            &["vm", "run", "--name", "no/slash", "--kernel", GUEST],
            "Error: Invalid VM name (no/slash)",
        ),
        (
            &["vm", "run", "--kernel", GUEST, "--initrd", "/etc/hostname"],
            "is in keel's own guest format",
        ),
        (
            &["vm", "run", "--kernel", fake_bzimage.to_str().unwrap()],
            "is not a kernel keel can boot",
        ),
        (
            &["vm", "run", "--kernel", GUEST, "--initrd", "/nonexistent"],
            "Error: the initrd /nonexistent: No such file or directory",
        ),
    ];
    for (args, expected) in cases {
        let error = keel.fails(args, 125);
        assert!(
            error.starts_with(expected) || error.contains(expected),
            "{args:?}: {error}"
        );
    }
    assert!(keel.statuses().is_empty(), "{:?}", keel.statuses());
    let error = keel.fails(&["vm", "kill", "nothing"], 1);
    assert_eq!(error, "Error: No such VM: nothing\n");
}

/// The last complete "count N" line of a log.
fn last_count(log: &str) -> u64 {
    let whole = log.rsplit_once('\n').map_or("", |(whole, _)| whole);
    whole
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("count ")?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn pause_snapshot_and_restore_twice_from_the_cli() {
    let keel = Keel::new();
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "counter",
        "--memory",
        "64m",
        "--kernel",
        GUEST,
        "--cmdline",
        "count",
    ]);
    keel.eventually("it counts", || {
        keel.ok(&["vm", "logs", "counter"]).contains("count 2\n")
    });
    // pause: nothing more on the console until resume.
    assert_eq!(keel.ok(&["vm", "pause", "counter"]), "counter\n");
    assert!(
        keel.status("counter").ends_with("(Paused)"),
        "{}",
        keel.status("counter")
    );
    let paused = keel.ok(&["vm", "logs", "counter"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(keel.ok(&["vm", "logs", "counter"]), paused);
    let error = keel.fails(&["vm", "pause", "counter"], 1);
    assert!(error.contains("is not running"), "{error}");
    assert_eq!(keel.ok(&["vm", "resume", "counter"]), "counter\n");
    let resumed_from = last_count(&paused);
    keel.eventually("it counts again", || {
        last_count(&keel.ok(&["vm", "logs", "counter"])) >= resumed_from + 2
    });

    // snapshot --stop: the VM ends there; its directory is whole.
    let snap = keel.temp.path().join("snap");
    let out = keel.ok(&[
        "vm",
        "snapshot",
        "--stop",
        "counter",
        snap.to_str().unwrap(),
    ]);
    assert_eq!(out.trim(), snap.to_str().unwrap());
    assert!(
        keel.status("counter")
            .starts_with("Exited (stopped after a snapshot) ")
    );
    let log = keel.ok(&["vm", "logs", "counter"]);
    let at = last_count(&log);
    let cut = log
        .rsplit_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_string();
    for file in ["memory", "vcpus.json", "snapshot.json"] {
        assert!(snap.join(file).is_file(), "{file}");
    }
    // Two clones from it, each going on from the snapshot's count.
    for name in ["clone1", "clone2"] {
        let id = keel.ok(&[
            "vm",
            "restore",
            "-d",
            "--name",
            name,
            snap.to_str().unwrap(),
        ]);
        assert_eq!(id.trim().len(), 64);
    }
    for name in ["clone1", "clone2"] {
        keel.eventually(&format!("{name} counts on"), || {
            keel.ok(&["vm", "logs", name])
                .contains(&format!("count {}\n", at + 2))
        });
        let text = format!("{cut}{}", keel.ok(&["vm", "logs", name]));
        assert!(
            text.starts_with(&format!("count {}\ncount {}\n", at + 1, at + 2)),
            "{name} of a guest that had counted to {at}: {text:?}"
        );
        assert_eq!(
            keel.ok(&["vm", "inspect", "-f", "{{.RestoredFrom}}", name])
                .trim(),
            snap.to_str().unwrap()
        );
    }
    // A snapshot to a directory that exists is refused; the VM runs on.
    let error = keel.fails(&["vm", "snapshot", "clone1", snap.to_str().unwrap()], 1);
    assert!(
        error.contains("exists: a snapshot goes to a new directory"),
        "{error}"
    );
    assert!(keel.status("clone1").starts_with("Up "));
    // A truncated one is refused, and nothing is recorded.
    let broken = keel.temp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for file in ["memory", "vcpus.json", "snapshot.json"] {
        std::fs::copy(snap.join(file), broken.join(file)).unwrap();
    }
    std::fs::File::options()
        .write(true)
        .open(broken.join("memory"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let error = keel.fails(
        &[
            "vm",
            "restore",
            "-d",
            "--name",
            "broken",
            broken.to_str().unwrap(),
        ],
        125,
    );
    assert!(
        error.contains("cannot be restored: its memory file is 1048576 bytes"),
        "{error}"
    );
    assert!(!keel.statuses().iter().any(|(n, _)| n == "broken"));
    keel.ok(&["vm", "rm", "-f", "clone1", "clone2", "counter"]);
}

/// keel in network namespace `netns` with a root of its own.
struct Host {
    keel: Keel,
    netns: keel_testutil::NetnsGuard,
}

impl Host {
    fn run(&self, args: &[&str]) -> Output {
        let mut command = self.keel.command(args);
        self.netns.enter(&mut command);
        command.output().expect("run keel")
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.run(args), args)
    }

    fn ip(&self, args: &[&str]) {
        let out = self.netns.run("ip", args);
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Two "hosts": network namespaces joined by a veth pair, `NET.1` and
/// `NET.2` (of `NET.0/24`), a keel root each.
fn two_hosts(net: &str) -> (Host, Host) {
    let a = Host {
        keel: Keel::new(),
        netns: keel_testutil::NetnsGuard::new(),
    };
    let b = Host {
        keel: Keel::new(),
        netns: keel_testutil::NetnsGuard::new(),
    };
    a.ip(&[
        "link", "add", "mig-a", "type", "veth", "peer", "name", "mig-b",
    ]);
    a.ip(&["link", "set", "mig-b", "netns", b.netns.name()]);
    a.ip(&["addr", "add", &format!("{net}.1/24"), "dev", "mig-a"]);
    b.ip(&["addr", "add", &format!("{net}.2/24"), "dev", "mig-b"]);
    for (host, link) in [(&a, "mig-a"), (&b, "mig-b")] {
        host.ip(&["link", "set", link, "up"]);
        host.ip(&["link", "set", "lo", "up"]);
    }
    (a, b)
}

#[test]
fn a_running_vm_migrates_between_two_hosts_and_keeps_counting() {
    let (a, b) = two_hosts("10.77.0");
    let id = b.ok(&[
        "vm",
        "receive",
        "-d",
        "--name",
        "moved",
        "--listen",
        "10.77.0.2:17777",
    ]);
    assert_eq!(id.trim().len(), 64);
    assert_eq!(
        b.ok(&["vm", "ls", "--format", "{{.Name}} {{.Status}}"]),
        "moved Incoming (10.77.0.2:17777)\n"
    );
    // A disk on storage both hosts see (one file system here).
    let disk = a.keel.temp.path().join("shared.img");
    let disk_arg = disk.to_str().unwrap();
    a.ok(&["vm", "disk", "create", disk_arg, "--size", "4m"]);
    a.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "counter",
        "--cpus",
        "2",
        "--memory",
        "96m",
        "--disk",
        disk_arg,
        "--kernel",
        GUEST,
        "--cmdline",
        "fill-count",
    ]);
    let counted = || last_count(&a.ok(&["vm", "logs", "counter"]));
    a.keel.eventually("it counts", || counted() >= 3);

    // A receiver that goes away halfway: the migration fails, the VM here
    // runs on.
    let listener = b
        .netns
        .within(|| std::net::TcpListener::bind("10.77.0.2:17778").unwrap());
    let vanishing = std::thread::spawn(move || {
        use std::io::Read;
        let (mut stream, _) = listener.accept().unwrap();
        let mut some = vec![0u8; 1 << 20];
        let _ = stream.read_exact(&mut some);
    });
    let out = a.run(&["vm", "migrate", "counter", "--to", "10.77.0.2:17778"]);
    vanishing.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(error.starts_with("Error: VM counter: "), "{error}");
    let before = counted();
    a.keel
        .eventually("it counts on after the failed migration", || {
            counted() >= before + 2
        });
    let out = a.run(&["vm", "migrate", "counter", "--to", "10.77.0.2:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect to 10.77.0.2:1"));

    // The real one.
    let before = counted();
    let out = a.ok(&["vm", "migrate", "counter", "--to", "10.77.0.2:17777"]);
    eprintln!("{out}");
    assert!(
        out.starts_with("counter migrated to 10.77.0.2:17777 ("),
        "{out}"
    );
    assert!(out.contains("downtime "), "{out}");
    // The source is gone, its VMM too.
    assert_eq!(a.ok(&["vm", "ls", "-aq"]), "");
    // The VM runs on B and goes on counting from where it was.
    assert!(
        b.ok(&[
            "vm",
            "ls",
            "--format",
            "{{.Name}} {{.Status}} {{.CPUs}} {{.Memory}}"
        ])
        .starts_with("moved Up ")
    );
    b.keel.eventually("it counts on B", || {
        let log = b.ok(&["vm", "logs", "moved"]);
        log.lines().filter(|l| l.starts_with("count ")).count() >= 3
    });
    let log = b.ok(&["vm", "logs", "moved"]);
    let counts: Vec<u64> = log
        .lines()
        .skip(1) // may be the rest of a line cut by the move
        .filter_map(|l| l.strip_prefix("count ")?.parse().ok())
        .collect();
    assert!(
        counts[0] > before,
        "B starts at {} after {before} on A: {log:?}",
        counts[0]
    );
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{log:?}");
    assert_eq!(
        b.ok(&["vm", "inspect", "-f", "{{.CPUs}} {{.Memory}}", "moved"]),
        format!("2 {}\n", 96u64 << 20)
    );
    // The disk moved with the VM: B's VM has it (and its lock).
    assert_eq!(
        b.ok(&["vm", "inspect", "-f", "{{json .Disks}}", "moved"])
            .trim(),
        format!(r#"[{{"path":"{disk_arg}","read_only":false}}]"#)
    );
    let out = a.run(&["vm", "run", "--rm", "--disk", disk_arg, "--kernel", GUEST]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is in use by another VM"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.ok(&["vm", "rm", "-f", "moved"]);
    a.ok(&["vm", "run", "--rm", "--disk", disk_arg, "--kernel", GUEST]);
}

#[test]
fn a_disk_made_by_keel_is_read_and_written_by_the_guest() {
    use std::os::unix::fs::FileExt;
    let keel = Keel::new();
    let disk = keel.temp.path().join("data.img");
    let disk_arg = disk.to_str().unwrap();
    keel.ok(&["vm", "disk", "create", disk_arg, "--size", "4m"]);
    std::fs::File::options()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all_at(b"hello from the host\n", 0)
        .unwrap();
    let out = keel.ok(&[
        "vm",
        "run",
        "--rm",
        "--disk",
        disk_arg,
        "--kernel",
        GUEST,
        "--cmdline",
        "blk",
    ]);
    assert_eq!(
        out,
        "capacity 8192 sectors\nid data.img\nsector 0: hello from the host\nsector 1 written\nflushed\nread past the end refused\n"
    );
    let mut sector = [0u8; 512];
    std::fs::File::open(&disk)
        .unwrap()
        .read_exact_at(&mut sector, 512)
        .unwrap();
    assert!(sector.starts_with(b"written by keel's test guest\n"));
    // Held read-write by a running VM: a second VM may not have it.
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "holder",
        "--disk",
        disk_arg,
        "--kernel",
        GUEST,
        "--cmdline",
        "idle",
    ]);
    assert_eq!(
        keel.ok(&["vm", "inspect", "-f", "{{json .Disks}}", "holder"])
            .trim(),
        format!(r#"[{{"path":"{disk_arg}","read_only":false}}]"#)
    );
    let error = keel.fails(
        &[
            "vm",
            "run",
            "--disk",
            &format!("{disk_arg},ro"),
            "--kernel",
            GUEST,
            "--cmdline",
            "blk",
        ],
        125,
    );
    assert_eq!(
        error,
        format!("Error: the disk {disk_arg} is in use by another VM (read-write)\n")
    );
    // A snapshot keeps the disk's place, not the disk: a restore opens it
    // again, so it is refused while the first VM has it read-write.
    let snapshot = keel.temp.path().join("s");
    keel.ok(&["vm", "snapshot", "holder", snapshot.to_str().unwrap()]);
    let error = keel.fails(&["vm", "restore", "-d", snapshot.to_str().unwrap()], 125);
    assert!(
        error.contains(&format!("the disk {disk_arg} is in use by another VM")),
        "{error}"
    );
    keel.ok(&["vm", "rm", "-f", "holder"]);
    let restored = keel.ok(&[
        "vm",
        "restore",
        "-d",
        "--name",
        "again",
        snapshot.to_str().unwrap(),
    ]);
    assert!(!restored.trim().is_empty());
    assert_eq!(
        keel.ok(&["vm", "inspect", "-f", "{{json .Disks}}", "again"])
            .trim(),
        format!(r#"[{{"path":"{disk_arg}","read_only":false}}]"#)
    );
    keel.ok(&["vm", "rm", "-f", "again"]);
    // Free again, read-only: the guest's write is refused.
    let out = keel.ok(&[
        "vm",
        "run",
        "--rm",
        "--disk",
        &format!("{disk_arg},ro"),
        "--kernel",
        GUEST,
        "--cmdline",
        "blk",
    ]);
    assert!(
        out.contains("write refused: the disk is read-only\n"),
        "{out}"
    );
    // An entropy device too.
    let out = keel.ok(&[
        "vm",
        "run",
        "--rm",
        "--rng",
        "--kernel",
        GUEST,
        "--cmdline",
        "rng",
    ]);
    assert_eq!(out, "rng: 32 bytes, not all zero, twice different\n");
    let error = keel.fails(
        &["vm", "run", "--disk", "/nonexistent.img", "--kernel", GUEST],
        125,
    );
    assert!(
        error.starts_with("Error: --disk /nonexistent.img"),
        "{error}"
    );
}

#[test]
fn a_shared_directory_is_read_and_written_by_the_guest() {
    let keel = Keel::new();
    let dir = keel.temp.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "from the host\n").unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
    let share = format!("keelshare={}", dir.display());
    // Through keel-vmm under its seccomp filter, as a user runs it.
    let out = keel.ok(&[
        "vm",
        "run",
        "--name",
        "sharer",
        "--share",
        &share,
        "--kernel",
        GUEST,
        "--cmdline",
        "p9",
    ]);
    assert_eq!(
        out,
        "tag keelshare\nversion 9P2000.L\nread: from the host\nwrote 23 bytes\n\
         walk through a link: 1 of 2 names\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("from-guest")).unwrap(),
        "written over virtio-9p\n"
    );
    let shares = keel.ok(&["vm", "inspect", "-f", "{{json .Shares}}", "sharer"]);
    assert_eq!(
        shares.trim(),
        format!(r#"[{{"path":"{}","tag":"keelshare"}}]"#, dir.display())
    );
    keel.ok(&["vm", "rm", "sharer"]);
    for (arg, why) in [
        ("nodir".to_string(), "expected TAG=DIR"),
        ("t=/nonexistent".to_string(), "--share t=/nonexistent"),
        ("t=/etc/hostname".to_string(), "is not a directory"),
    ] {
        let error = keel.fails(&["vm", "run", "--share", &arg, "--kernel", GUEST], 125);
        assert!(error.contains(why), "{error}");
    }
    let error = keel.fails(
        &[
            "vm", "run", "--share", &share, "--share", &share, "--kernel", GUEST,
        ],
        125,
    );
    assert!(
        error.contains("the tag keelshare is given twice"),
        "{error}"
    );
}

#[test]
fn update_memory_target_shrinks_what_the_host_holds() {
    let keel = Keel::new();
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "big",
        "--balloon",
        "--memory",
        "256m",
        "--kernel",
        GUEST,
        "--cmdline",
        "balloon",
    ]);
    keel.eventually("the guest wrote all its memory", || {
        keel.ok(&["vm", "logs", "big"]).contains("filled\n")
    });
    let resident = || -> u64 {
        keel.ok(&["vm", "inspect", "-f", "{{.MemoryResident}}", "big"])
            .trim()
            .parse()
            .unwrap()
    };
    assert!(resident() > 250 << 20, "{}", resident());
    assert_eq!(
        keel.ok(&["vm", "update", "--memory-target", "64m", "big"]),
        "big\n"
    );
    keel.eventually("the guest gave 192 MiB back", || {
        keel.ok(&["vm", "logs", "big"])
            .contains("balloon 49152 pages\n")
    });
    assert!(resident() < 100 << 20, "{}", resident());
    // The table says so too: assigned 256 MiB, resident far less.
    let row = keel.ok(&["vm", "ls", "--format", "{{.Name}} {{.Memory}}"]);
    assert_eq!(row, format!("big {}\n", 256u64 << 20));
    let error = keel.fails(&["vm", "update", "--memory-target", "1g", "big"], 1);
    assert!(
        error.contains("more than VM big's memory (256MiB)"),
        "{error}"
    );
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "plain",
        "--kernel",
        GUEST,
        "--cmdline",
        "idle",
    ]);
    let error = keel.fails(&["vm", "update", "--memory-target", "16m", "plain"], 1);
    assert!(error.contains("has no balloon"), "{error}");
    keel.ok(&["vm", "rm", "-f", "big", "plain"]);
}

#[test]
fn without_dev_kvm_the_error_says_so_and_nothing_is_left() {
    let keel = Keel::new();
    // /dev hidden behind an empty tmpfs, in a mount namespace of its own.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_keel"))
        .args(["vm", "run", "--kernel", GUEST, "--cmdline", "hello"])
        .env("KEEL_ROOT", keel.temp.root())
        .env("KEEL_RUNROOT", keel.temp.runroot())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: cannot run VMs here: there is no /dev/kvm (load the kvm module, or run where virtualization is offered)\n"
    );
    assert!(keel.statuses().is_empty());
}

#[test]
fn vsock_connects_host_and_guest_both_ways() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let keel = Keel::new();
    let socket = keel.temp.path().join("v.sock");
    // A host program on port 6000: reads the guest's line, answers.
    let port_6000 = UnixListener::bind(format!("{}_6000", socket.display())).unwrap();
    let host = std::thread::spawn(move || {
        let (mut stream, _) = port_6000.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        stream.write_all(b"hello from the host\n").unwrap();
        line
    });
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "vs",
        "--vsock",
        socket.to_str().unwrap(),
        "--kernel",
        GUEST,
        "--cmdline",
        "vsock connect=6000 listen=5000",
    ]);
    assert_eq!(
        keel.ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.Vsock.CID}} {{.Vsock.Path}}",
            "vs"
        ]),
        format!("3 {}\n", socket.display())
    );
    // Guest to host: the guest's line reached the program, the answer
    // reached the guest.
    assert_eq!(host.join().unwrap(), "hello from the guest\n");
    keel.eventually("the guest prints the host's answer", || {
        keel.ok(&["vm", "logs", "vs"])
            .contains("vsock: host port 6000 says: hello from the host\n")
    });
    keel.eventually("the guest listens", || {
        keel.ok(&["vm", "logs", "vs"])
            .contains("vsock: listening on port 5000\n")
    });
    // Host to guest: CONNECT, OK, then 300 KB echoed (more than either
    // side's credit: flow control has to work).
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"CONNECT 5000\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    assert!(
        answer.starts_with("OK ") && answer.ends_with('\n'),
        "{answer:?}"
    );
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let writer = {
        let (mut stream, data) = (stream.try_clone().unwrap(), data.clone());
        std::thread::spawn(move || {
            stream.write_all(&data).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    reader.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");
    keel.eventually("the guest saw the connection close", || {
        keel.ok(&["vm", "logs", "vs"])
            .contains("vsock: port 5000 echoed 300000 bytes\n")
    });
    // A port nobody listens on in the guest: closed without an answer.
    let mut refused = UnixStream::connect(&socket).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    refused.write_all(b"CONNECT 5001\n").unwrap();
    let mut nothing = Vec::new();
    refused.read_to_end(&mut nothing).unwrap();
    assert!(nothing.is_empty(), "{nothing:?}");
    // Not a CONNECT line: closed too.
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"HELLO\n").unwrap();
    let mut nothing = Vec::new();
    garbage.read_to_end(&mut nothing).unwrap();
    assert!(nothing.is_empty());
    // The VM still echoes after those.
    let mut again = UnixStream::connect(&socket).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    again.write_all(b"CONNECT 5000\nsecond\n").unwrap();
    let mut reader = BufReader::new(again.try_clone().unwrap());
    let (mut ok, mut line) = (String::new(), String::new());
    reader.read_line(&mut ok).unwrap();
    reader.read_line(&mut line).unwrap();
    assert!(ok.starts_with("OK "), "{ok:?}");
    assert_eq!(line, "second\n");
    drop((again, reader));
    // The socket goes with the VM.
    keel.ok(&["vm", "rm", "-f", "vs"]);
    assert!(!socket.exists());
}

#[test]
fn device_interrupts_wake_a_sleeping_guest() {
    let keel = Keel::new();
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "irq",
        "--rng",
        "--balloon",
        "--kernel",
        GUEST,
        "--cmdline",
        "irq",
    ]);
    // The rng's used buffer raised its line (virtio device 1: GSI 6) and
    // the guest's handler ran.
    keel.eventually("the guest waits for the balloon", || {
        keel.ok(&["vm", "logs", "irq"])
            .contains("irq: waiting for the balloon\n")
    });
    let logs = keel.ok(&["vm", "logs", "irq"]);
    assert!(
        logs.contains("irq: rng used-buffer interrupt on GSI 6, status 1\n"),
        "{logs}"
    );
    // Halted with interrupts on, the vCPU sleeps in KVM (no polling).
    let pid = keel.ok(&["vm", "inspect", "-f", "{{.Pid}}", "irq"]);
    let vcpu = std::fs::read_dir(format!("/proc/{}/task", pid.trim()))
        .unwrap()
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default() == "vcpu0\n")
        .expect("a vcpu0 thread")
        .path();
    let sleeping = (0..5)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let stat = std::fs::read_to_string(vcpu.join("stat")).unwrap();
            stat.rsplit(')').next().unwrap().split_whitespace().next() == Some("S")
        })
        .count();
    assert!(sleeping >= 4, "vcpu0 was asleep in {sleeping} of 5 looks");
    // A new balloon target is a config-change interrupt, raised by the
    // VMM's control thread, that wakes the guest.
    keel.ok(&["vm", "update", "--memory-target", "64m", "irq"]);
    keel.eventually("the guest powers off", || {
        keel.status("irq").starts_with("Exited (powered off)")
    });
    assert!(
        keel.ok(&["vm", "logs", "irq"])
            .contains("irq: balloon config interrupt, target 16384 pages\n")
    );
    keel.ok(&["vm", "rm", "irq"]);
}

#[test]
fn dash_i_types_into_the_guests_serial_console() {
    use std::io::Write;
    let keel = Keel::new();
    // The echo guest in the foreground, its stdin a pipe of ours.
    let echo = |stdout: Stdio| {
        keel.command(&[
            "vm",
            "run",
            "--rm",
            "-i",
            "--kernel",
            GUEST,
            "--cmdline",
            "echo",
        ])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .unwrap()
    };
    let mut child = echo(Stdio::piped());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello there\nsecond line\n").unwrap();
    stdin.write_all(b"poweroff\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: type a line\necho: hello there\necho: second line\necho: bye\n"
    );
    // Ctrl-] stops the VM (the guest would wait for ever).
    let mut child = echo(Stdio::null());
    child.stdin.take().unwrap().write_all(b"abc\x1d").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    // A detached VM has no standard input.
    let error = keel.fails(&["vm", "run", "-d", "-i", "--kernel", GUEST], 125);
    assert!(
        error.contains("a detached VM has no standard input"),
        "{error}"
    );
    assert!(keel.statuses().is_empty());
}

#[test]
fn a_snapshot_keeps_the_devices_and_their_interrupts() {
    let keel = Keel::new();
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "dev",
        "--rng",
        "--balloon",
        "--kernel",
        GUEST,
        "--cmdline",
        "irq",
    ]);
    keel.eventually("the guest waits for the balloon", || {
        keel.ok(&["vm", "logs", "dev"])
            .contains("irq: waiting for the balloon\n")
    });
    // Taken while the guest sleeps, its interrupt controllers programmed
    // and the balloon's driver set up.
    let snapshot = keel.temp.path().join("dev.snap");
    keel.ok(&[
        "vm",
        "snapshot",
        "--stop",
        "dev",
        snapshot.to_str().unwrap(),
    ]);
    keel.ok(&[
        "vm",
        "restore",
        "-d",
        "--name",
        "back",
        snapshot.to_str().unwrap(),
    ]);
    assert_eq!(
        keel.ok(&["vm", "inspect", "-f", "{{.Balloon}} {{.Rng}}", "back"]),
        "true true\n"
    );
    // The restored balloon takes a new target and the config interrupt
    // wakes the restored guest.
    keel.ok(&["vm", "update", "--memory-target", "64m", "back"]);
    keel.eventually("the restored guest powers off", || {
        keel.status("back").starts_with("Exited (powered off)")
    });
    assert!(
        keel.ok(&["vm", "logs", "back"])
            .contains("irq: balloon config interrupt, target 16384 pages\n")
    );
    keel.ok(&["vm", "rm", "back", "dev"]);
}

#[test]
fn a_vm_with_vsock_is_restored_with_a_socket_of_its_own() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let keel = Keel::new();
    let socket = keel.temp.path().join("v.sock");
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "vs",
        "--vsock",
        socket.to_str().unwrap(),
        "--kernel",
        GUEST,
        "--cmdline",
        "vsock listen=5000",
    ]);
    keel.eventually("the guest listens", || {
        keel.ok(&["vm", "logs", "vs"])
            .contains("vsock: listening on port 5000\n")
    });
    let snapshot = keel.temp.path().join("vs.snap");
    keel.ok(&["vm", "snapshot", "vs", snapshot.to_str().unwrap()]);
    keel.ok(&[
        "vm",
        "restore",
        "-d",
        "--name",
        "clone",
        snapshot.to_str().unwrap(),
    ]);
    // The clone has a socket of its own; both guests answer on theirs.
    let path = keel.ok(&["vm", "inspect", "-f", "{{.Vsock.Path}}", "clone"]);
    let path = std::path::PathBuf::from(path.trim());
    assert_ne!(path, socket);
    for (socket, line) in [(&socket, "to the first\n"), (&path, "to the clone\n")] {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(format!("CONNECT 5000\n{line}").as_bytes())
            .unwrap();
        let mut reader = BufReader::new(stream);
        let (mut ok, mut echoed) = (String::new(), String::new());
        reader.read_line(&mut ok).unwrap();
        reader.read_line(&mut echoed).unwrap();
        assert!(ok.starts_with("OK "), "{ok:?}");
        assert_eq!(echoed, line);
    }
    // A socket another VM listens on is not taken over.
    let error = keel.fails(
        &[
            "vm",
            "run",
            "-d",
            "--vsock",
            socket.to_str().unwrap(),
            "--kernel",
            GUEST,
            "--cmdline",
            "idle",
        ],
        125,
    );
    assert!(
        error.contains("is in use (another VM listens on it)"),
        "{error}"
    );
    keel.ok(&["vm", "rm", "-f", "vs", "clone"]);
    assert!(!path.exists());
}

#[test]
fn stop_presses_the_power_button_and_a_listening_guest_powers_off() {
    let keel = Keel::new();
    keel.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "button",
        "--kernel",
        GUEST,
        "--cmdline",
        "power",
    ]);
    keel.eventually("the guest waits for the button", || {
        keel.ok(&["vm", "logs", "button"])
            .contains("power: waiting for the button\n")
    });
    // Within the default 10 s: the guest powers off by itself.
    assert_eq!(keel.ok(&["vm", "stop", "button"]), "button\n");
    assert!(
        keel.status("button").starts_with("Exited (powered off)"),
        "{}",
        keel.status("button")
    );
    assert!(
        keel.ok(&["vm", "logs", "button"])
            .contains("power: the button was pressed\n")
    );
    keel.ok(&["vm", "rm", "button"]);
}

#[test]
fn a_vm_on_a_network_migrates_onto_the_same_network_on_the_other_host() {
    let (a, b) = two_hosts("10.76.0");
    for host in [&a, &b] {
        host.ok(&["network", "create", "--subnet", "10.79.0.0/24", "mignet"]);
    }
    b.ok(&[
        "vm",
        "receive",
        "-d",
        "--name",
        "moved",
        "--listen",
        "10.76.0.2:17779",
    ]);
    a.ok(&[
        "vm",
        "run",
        "-d",
        "--name",
        "guest",
        "--network",
        "mignet",
        "--kernel",
        GUEST,
        "--cmdline",
        "net",
    ]);
    let address = a
        .ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            "guest",
        ])
        .trim()
        .to_string();
    let ping = |host: &Host| {
        host.netns
            .run("busybox", &["ping", "-c", "1", "-W", "5", &address])
            .status
            .success()
    };
    a.keel
        .eventually("A's bridge reaches the guest", || ping(&a));
    let out = a.ok(&["vm", "migrate", "guest", "--to", "10.76.0.2:17779"]);
    assert!(
        out.starts_with("guest migrated to 10.76.0.2:17779 ("),
        "{out}"
    );
    // On B, on B's network of that name, at the same address.
    assert_eq!(
        b.ok(&[
            "vm",
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            "moved"
        ])
        .trim(),
        address
    );
    b.keel
        .eventually("B's bridge reaches the moved guest", || ping(&b));
    assert!(
        b.ok(&["vm", "logs", "moved"])
            .contains("echo request from 10.79.0.1\n")
    );
    // A let go: no VM, its network free to remove.
    assert_eq!(a.ok(&["vm", "ls", "-aq"]), "");
    a.ok(&["network", "rm", "mignet"]);
    b.ok(&["vm", "rm", "-f", "moved"]);
    b.ok(&["network", "rm", "mignet"]);
}
