//! What the container tests share: a keel with its own root, runroot and
//! cgroup parent in a temp dir, running in a network namespace of its own
//! (its bridges, veths and nftables rules never touch the host's), a
//! busybox image made offline (`keel import` of a busybox-static rootfs),
//! and a guard that removes every container, kills every process it left,
//! and removes its cgroups and the namespace, even when the test fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_testutil::{BusyboxBundle, CgroupGuard, NetnsGuard, TempRoot, require_root, unique_name};

pub struct Keel {
    pub cgroup_parent: String,
    // Dropped in this order after Drop::drop: the cgroups, the network
    // namespace, then the dir.
    _cgroup: CgroupGuard,
    /// The network namespace keel runs in (the "host" of its containers).
    pub netns: NetnsGuard,
    pub temp: TempRoot,
}

impl Keel {
    /// A keel of its own with the image `busybox` (also `busybox:latest`).
    pub fn new() -> Keel {
        Keel::with_root_size(None)
    }

    /// [`Keel::new`] with its root on a tmpfs of `size` (e.g. `"100m"`), to
    /// fill it; the temp dir's guard unmounts it.
    pub fn with_root_size(size: Option<&str>) -> Keel {
        require_root();
        let temp = TempRoot::new();
        if let Some(size) = size {
            let mount = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(temp.root())
                .output()
                .expect("run mount");
            assert!(mount.status.success(), "mount a tmpfs: {}", stderr(&mount));
        }
        let cgroup_parent = format!("/{}", unique_name());
        let netns = NetnsGuard::new();
        // Loopback up, as on a host (127.0.0.1 for published ports).
        let lo = netns.run("ip", &["link", "set", "lo", "up"]);
        assert!(lo.status.success(), "ip link set lo up: {}", stderr(&lo));
        let keel = Keel {
            _cgroup: CgroupGuard(PathBuf::from(&cgroup_parent)),
            cgroup_parent,
            netns,
            temp,
        };
        let bundle = BusyboxBundle::create(keel.temp.subdir("busybox"));
        let tarball = keel.temp.path().join("busybox-rootfs.tar");
        let tar = Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(bundle.rootfs())
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .expect("run tar");
        assert!(
            tar.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&tar.stderr)
        );
        keel.ok(&["import", tarball.to_str().unwrap(), "busybox"]);
        std::fs::remove_dir_all(bundle.dir()).ok();
        keel
    }

    pub fn root(&self) -> PathBuf {
        self.temp.root()
    }

    pub fn runroot(&self) -> PathBuf {
        self.temp.runroot()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .env("KEEL_ROOT", self.root())
            .env("KEEL_RUNROOT", self.runroot())
            .env("KEEL_CGROUP_PARENT", &self.cgroup_parent)
            .args(args)
            .stdin(Stdio::null());
        self.netns.enter(&mut command);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run keel");
        let pid = child.id() as i32;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        // No test waits forever on a keel that hangs.
        match receiver.recv_timeout(Duration::from_secs(120)) {
            Ok(out) => out.expect("collect keel's output"),
            Err(_) => {
                // SAFETY: killing the keel this test started, by its pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("keel {args:?} hung for 120 s");
            }
        }
    }

    /// stdout of a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "keel {args:?} exited {:?}:\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("keel prints UTF-8")
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name])
            .trim_end()
            .to_string()
    }

    /// Waits until `check` holds (for state that changes on its own).
    pub fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Mounts below this keel's root.
    pub fn mounts(&self) -> Vec<String> {
        let marker = self.temp.path().display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&marker))
            .map(str::to_string)
            .collect()
    }

    /// The container's cgroup file of `controller`: `v1` in that
    /// controller's v1 hierarchy where there is one, else `v2` in cgroup2.
    /// Whether it is v1 comes second.
    pub fn cgroup_file(&self, id: &str, controller: &str, v1: &str, v2: &str) -> (PathBuf, bool) {
        keel_testutil::cgroup_file(&format!("{}/{id}", self.cgroup_parent), controller, v1, v2)
    }

    /// Whether this host has `controller` in a v1 hierarchy (containers
    /// then see `/sys/fs/cgroup/<controller>/...`).
    pub fn v1(&self, controller: &str) -> bool {
        keel_testutil::cgroup_file("/", controller, "", "").1
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Keel {
    fn drop(&mut self) {
        if let Ok(out) = self.command(&["ps", "-aq", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.command(&["rm", "-f", "-v", id]).output();
            }
        }
        let marker = self.temp.path().display().to_string();
        for killed in keel_testutil::peers::kill_processes_mentioning(&marker) {
            eprintln!("keel test guard: killed a leftover process: {killed}");
        }
        // With every container gone, so are their veths (the kernel removes
        // a namespace's in the background): one left over is a leak.
        if !std::thread::panicking() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let veths = self.veths();
                if veths.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    panic!("keel left veths behind in its namespace: {veths:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Keel {
    /// The veth links in keel's namespace (each container's host end).
    pub fn veths(&self) -> Vec<String> {
        let out = self
            .netns
            .run("ip", &["-o", "link", "show", "type", "veth"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }
}
