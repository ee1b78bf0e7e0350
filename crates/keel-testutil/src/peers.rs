//! Real container engines for tests that drive keel-runtime the way users do:
//! containerd (with `ctr`), dockerd (Debian's 20.10, with `/usr/bin/docker`) and
//! podman, each with all its state in a directory of the test's [`TempRoot`](crate::TempRoot),
//! and an offline busybox image archive all three can load.
//!
//! Every engine is started as a child of the test and stopped by pid when its guard
//! drops; the helpers it started (containerd shims, conmon) are found by the temp dir
//! in their command line and killed by pid too. Mounts the engines leave below the
//! temp dir go when the `TempRoot` drops; cgroups go with a [`CgroupGuard`](crate::CgroupGuard)
//! on the cgroup parent the test gives the engine.
//!
//! What these Debian versions still put outside the temp dir, hard-coded:
//! - containerd 1.6 shims listen on `/run/containerd/s/<sha256>` (the hash covers the
//!   daemon's address, so they never clash with a host containerd's); the sockets of
//!   shims killed here are removed here.
//! - dockerd 20.10 makes an empty `/run/docker/plugins` (plugin discovery).
//! - podman 4.3 makes an empty `/run/containers/networks` (netavark's run dir).
//!
//! Things found while setting these up: dockerd writes its trust key to
//! `/etc/docker/key.json` unless daemon.json has `deprecated-key-path`; dockerd's own
//! containerd creates `/opt/containerd` (its `opt` plugin), so dockerd here uses a
//! [`Containerd`] started with that path in the temp dir; podman passes `--runtime-flag`
//! to conmon but not to the `podman container cleanup` exit command, so a runtime
//! `--root` must come from a wrapper script (see [`Podman::new`]).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{GROUP, HOST_BUSYBOX, PASSWD, output_via_files};

/// The name the busybox image archive gives its image (docker shows it as
/// `keel-test/busybox:latest`).
pub const BUSYBOX_IMAGE: &str = "docker.io/keel-test/busybox:latest";

/// Debian's docker client; `/usr/local/bin/docker` on this machine is a newer client
/// that Debian's dockerd (API 1.41) does not serve.
pub const DOCKER_CLIENT: &str = "/usr/bin/docker";

/// How long one engine command may take before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a daemon may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The image

/// Builds `dir/busybox-image.tar` from Debian's busybox-static: one uncompressed layer
/// (`bin/busybox`, a symlink per applet, `/etc/passwd`, `/etc/group`, empty mount
/// points), an OCI config, manifest, `index.json` and `oci-layout`, and also docker's
/// `manifest.json`, so that `ctr images import`, `docker load` and `podman load` all
/// take it and name it [`BUSYBOX_IMAGE`]. Uses `tar` and `sha256sum`.
pub fn busybox_image_archive(dir: &Path) -> PathBuf {
    try_image_archive(dir).unwrap_or_else(|e| {
        panic!(
            "make a busybox image archive in {}: {e} (is busybox-static installed? ./scripts/setup)",
            dir.display()
        )
    })
}

fn try_image_archive(dir: &Path) -> io::Result<PathBuf> {
    let layer = dir.join("layer");
    for sub in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "home", "run", "var",
    ] {
        fs::create_dir_all(layer.join(sub))?;
    }
    fs::set_permissions(layer.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(layer.join("root"), fs::Permissions::from_mode(0o700))?;
    let busybox = layer.join("bin/busybox");
    fs::copy(HOST_BUSYBOX, &busybox)?;
    fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))?;
    let list = Command::new(HOST_BUSYBOX)
        .arg("--list")
        .stdin(Stdio::null())
        .output()?;
    if !list.status.success() {
        return Err(io::Error::other(format!("{HOST_BUSYBOX} --list failed")));
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", layer.join("bin").join(applet))?;
    }
    fs::write(layer.join("etc/passwd"), PASSWD)?;
    fs::write(layer.join("etc/group"), GROUP)?;
    image_archive(
        dir,
        "busybox",
        BUSYBOX_IMAGE,
        &layer,
        json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/"
        }),
    )
}

/// `dir/<stem>-image.tar`: an image named `name` of one uncompressed layer
/// (the files of `layer`) and `config` as its config's `config`, in the
/// layout [`busybox_image_archive`] writes (OCI and docker's indexes both).
pub fn image_archive(
    dir: &Path,
    stem: &str,
    name: &str,
    layer: &Path,
    config: serde_json::Value,
) -> io::Result<PathBuf> {
    let image = dir.join(format!("{stem}-image"));
    let blobs = image.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer_tar = dir.join(format!("{stem}-layer.tar"));
    tar(layer, &layer_tar)?;
    let (layer_digest, layer_size) = add_blob(&blobs, &layer_tar)?;

    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [ { "created": "1970-01-01T00:00:00Z", "created_by": format!("keel-testutil: {stem}") } ]
    });
    let (config_digest, config_size) = add_json_blob(&blobs, dir, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size
        },
        "layers": [ {
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size
        } ]
    });
    let (manifest_digest, manifest_size) = add_json_blob(&blobs, dir, &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [ {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": "amd64", "os": "linux" },
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit_once(':').map_or("latest", |(_, tag)| tag)
            }
        } ]
    });
    fs::write(image.join("index.json"), index.to_string())?;
    fs::write(
        image.join("oci-layout"),
        json!({ "imageLayoutVersion": "1.0.0" }).to_string(),
    )?;
    // docker-archive's index, pointing at the same blobs.
    let hex = |digest: &str| digest.trim_start_matches("sha256:").to_string();
    let docker_manifest = json!([ {
        "Config": format!("blobs/sha256/{}", hex(&config_digest)),
        "RepoTags": [name.trim_start_matches("docker.io/")],
        "Layers": [format!("blobs/sha256/{}", hex(&layer_digest))]
    } ]);
    fs::write(image.join("manifest.json"), docker_manifest.to_string())?;

    let archive = dir.join(format!("{stem}-image.tar"));
    tar(&image, &archive)?;
    Ok(archive)
}

/// `tar -cf archive -C dir .` with root ownership and fixed times.
fn tar(dir: &Path, archive: &Path) -> io::Result<()> {
    let output = Command::new("tar")
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--sort=name",
            "--mtime=@0",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(archive)
        .arg(".")
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "tar -C {} -cf {}: {}",
            dir.display(),
            archive.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// Moves `file` into `blobs/<sha256>`; returns (`sha256:<hex>`, size).
fn add_blob(blobs: &Path, file: &Path) -> io::Result<(String, u64)> {
    let output = Command::new("sha256sum")
        .arg(file)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if !output.status.success() || hex.len() != 64 {
        return Err(io::Error::other(format!(
            "sha256sum {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let size = fs::metadata(file)?.len();
    fs::rename(file, blobs.join(&hex))?;
    Ok((format!("sha256:{hex}"), size))
}

fn add_json_blob(
    blobs: &Path,
    scratch: &Path,
    value: &serde_json::Value,
) -> io::Result<(String, u64)> {
    let file = scratch.join("blob.json");
    fs::write(&file, value.to_string())?;
    add_blob(blobs, &file)
}

// ---------------------------------------------------------------------------
// Commands and processes

/// Runs `command` with stdin from /dev/null and output through temp files (a
/// detached container holding a pipe cannot hang it), killed after [`COMMAND_TIMEOUT`].
/// Panics only if the command cannot be started.
pub fn run(command: &mut Command) -> Output {
    output_via_files(command, COMMAND_TIMEOUT).unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

/// Exit status, stdout and stderr of `output`, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// The last `lines` lines of a text file (for engine logs in failure messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| format!("(read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Live processes (not zombies, not this process or its ancestors) whose command line
/// contains `marker`.
pub fn pids_mentioning(marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let ancestors = ancestors_of_self();
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me || ancestors.contains(&pid) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            == Some('Z');
        if !zombie {
            out.push(pid);
        }
    }
    out
}

fn ancestors_of_self() -> Vec<i32> {
    let mut out = Vec::new();
    let mut pid = std::process::id() as i32;
    for _ in 0..64 {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        match parent {
            Some(parent) if parent > 1 => {
                out.push(parent);
                pid = parent;
            }
            _ => break,
        }
    }
    out
}

/// SIGKILLs, by pid, every process [`pids_mentioning`] `marker` and waits (up to 5 s)
/// until none is left. Returns what it killed, for messages.
pub fn kill_processes_mentioning(marker: &str) -> Vec<String> {
    let mut killed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = pids_mentioning(marker);
        if pids.is_empty() || Instant::now() >= deadline {
            return killed;
        }
        for pid in pids {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                let entry = format!("{pid} {}", cmdline.trim_end());
                if !killed.contains(&entry) {
                    killed.push(entry);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the `/run/containerd/s/<hash>` sockets named by shim `address` files below
/// `dir` (the shims that served them are gone).
fn remove_shim_sockets(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file() && entry.file_name() == "address" {
                let address = fs::read_to_string(entry.path()).unwrap_or_default();
                if let Some(socket) = address.trim().strip_prefix("unix://")
                    && socket.starts_with("/run/containerd/s/")
                {
                    let _ = fs::remove_file(socket);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Daemon

/// A daemon started by the test, its output in a log file. On drop: SIGTERM, then
/// SIGKILL if it has not exited within 20 s; then SIGKILL to every process whose
/// command line mentions its directory (the shims or monitors it started).
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    dir: PathBuf,
    stopped: bool,
}

impl Daemon {
    /// Starts `command` in its own process group with stdout and stderr to `log`.
    /// Panics with the reason if it cannot be started.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf, dir: PathBuf) -> Daemon {
        let file =
            fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = file.try_clone().expect("duplicate a log file descriptor");
        command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("start {name}: {command:?}: {e} (is it installed? ./scripts/setup)")
        });
        Daemon {
            name: name.to_string(),
            child,
            log,
            dir,
            stopped: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 40)
    }

    /// Polls `ready` every 100 ms; panics with the log if the daemon exits first or
    /// `timeout` passes.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stopped = true;
                panic!(
                    "{} exited ({status}) before {what}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} not {what} after {timeout:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, wait up to 20 s, then SIGKILL; reaps it.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "keel-testutil: {} ignored SIGTERM for 20 s: SIGKILL",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        let killed = kill_processes_mentioning(&self.dir.to_string_lossy());
        if !killed.is_empty() {
            eprintln!(
                "keel-testutil: killed what {} left running: {killed:#?}",
                self.name
            );
        }
        remove_shim_sockets(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// containerd

/// A containerd with root, state, sockets, `opt` dir and log in one directory; the CRI
/// plugin is off.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    address: PathBuf,
    daemon: Daemon,
}

impl Containerd {
    /// Starts `containerd --config <dir>/config.toml` and waits until `ctr version`
    /// answers on `<dir>/containerd.sock`. Panics with containerd's log if it cannot.
    pub fn start(dir: &Path) -> Containerd {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let address = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  level = "debug"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
"#,
            dir = dir.display(),
            address = address.display()
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let mut command = Command::new("containerd");
        command.arg("--config").arg(&config_path);
        let mut daemon = Daemon::spawn(
            "containerd",
            command,
            dir.join("containerd.log"),
            dir.to_path_buf(),
        );
        let probe = address.clone();
        daemon.wait_until("serving", START_TIMEOUT, || {
            probe.exists()
                && Command::new("ctr")
                    .arg("--address")
                    .arg(&probe)
                    .arg("version")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        Containerd {
            dir: dir.to_path_buf(),
            address,
            daemon,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gRPC socket.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// containerd's `state` dir (task bundles are in `io.containerd.runtime.v2.task/<ns>/<id>`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// `ctr --address <sock> args...`
    pub fn ctr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(args))
    }

    /// Like [`Self::ctr`]; panics with the output and containerd's log unless it exits 0.
    /// Returns stdout.
    pub fn ctr_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.ctr(&args);
        if !output.status.success() {
            panic!(
                "ctr {args:?} failed: {}\n--- containerd log ({}):\n{}",
                describe(&output),
                self.daemon.log().display(),
                self.daemon.log_tail()
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops containerd (SIGTERM, then SIGKILL) now rather than on drop.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

// ---------------------------------------------------------------------------
// dockerd

/// A dockerd with its data root, exec root, pid file, socket, daemon.json, trust key
/// and its own [`Containerd`] in one directory, without bridge or iptables: containers
/// can use only `--network none` (or host, which tests must not use).
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    socket: PathBuf,
    // Dropped in this order: dockerd, then its containerd.
    daemon: Daemon,
    containerd: Containerd,
}

impl Dockerd {
    /// Starts containerd in `<dir>/containerd` and dockerd with state in `<dir>/dockerd`,
    /// containers' cgroups under `cgroup_parent`, and each `(name, path)` of `runtimes`
    /// added with `--add-runtime name=path`. Waits until `docker version` answers.
    pub fn start(dir: &Path, cgroup_parent: &str, runtimes: &[(&str, &Path)]) -> Dockerd {
        assert!(
            Path::new(DOCKER_CLIENT).exists(),
            "{DOCKER_CLIENT} (Debian's docker.io client) is missing: ./scripts/setup"
        );
        let containerd = Containerd::start(&dir.join("containerd"));
        let state = dir.join("dockerd");
        fs::create_dir_all(state.join("client"))
            .unwrap_or_else(|e| panic!("create {}: {e}", state.display()));
        let socket = state.join("docker.sock");
        let config = state.join("daemon.json");
        // Without deprecated-key-path, dockerd 20.10 writes /etc/docker/key.json.
        fs::write(
            &config,
            json!({ "deprecated-key-path": state.join("key.json") }).to_string(),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut command = Command::new("dockerd");
        command
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(state.join("data"))
            .arg("--exec-root")
            .arg(state.join("exec"))
            .arg("--pidfile")
            .arg(state.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("--containerd")
            .arg(containerd.address())
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--shutdown-timeout=2",
                "--debug",
            ])
            .arg("--cgroup-parent")
            .arg(cgroup_parent);
        for (name, path) in runtimes {
            command
                .arg("--add-runtime")
                .arg(format!("{name}={}", path.display()));
        }
        let mut daemon =
            Daemon::spawn("dockerd", command, state.join("dockerd.log"), state.clone());
        let host = format!("unix://{}", socket.display());
        let client_config = state.join("client");
        daemon.wait_until("serving", START_TIMEOUT, || {
            socket.exists()
                && Command::new(DOCKER_CLIENT)
                    .env("DOCKER_CONFIG", &client_config)
                    .args(["-H", &host, "version"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        Dockerd {
            dir: state,
            socket,
            daemon,
            containerd,
        }
    }

    /// `<dir>/dockerd`: data root `data`, exec root `exec`, log `dockerd.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("exec")
    }

    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// `/usr/bin/docker -H unix://<sock> args...` with a private client config dir.
    pub fn docker<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new(DOCKER_CLIENT)
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args))
    }

    /// Like [`Self::docker`]; panics with the output and dockerd's log unless it exits 0.
    /// Returns stdout.
    pub fn docker_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.docker(&args);
        if !output.status.success() {
            panic!(
                "docker {args:?} failed: {}\n--- dockerd log ({}):\n{}\n--- containerd log:\n{}",
                describe(&output),
                self.daemon.log().display(),
                self.daemon.log_tail(),
                self.containerd.daemon().log_tail()
            );
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops dockerd, then its containerd, now rather than on drop.
    pub fn stop(&mut self) {
        self.daemon.stop();
        self.containerd.stop();
    }
}

// ---------------------------------------------------------------------------
// podman

/// Podman with root, runroot, tmpdir, network config, events log, file locks, a private
/// `containers.conf` (`CONTAINERS_CONF`: cgroupfs, `default_ulimits` below this machine's
/// hard limits) and `storage.conf` (`CONTAINERS_STORAGE_CONF`), all in one directory.
/// Podman is not a daemon: each call is a process; conmon monitors the containers.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
    runtime: PathBuf,
    runtime_root: PathBuf,
    base: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Podman {
    /// Sets up podman in `dir` to use `runtime` for its containers.
    ///
    /// `--runtime` is `<dir>/bin/<runtime's file name>`, a script that runs
    /// `runtime --root <dir>/runtime-root "$@"`: podman never passes a runtime `--root`
    /// of its own (runc and crun use `/run/runc`, `/run/crun`), and podman 4.3 passes
    /// `--runtime-flag` to conmon but not to the `podman container cleanup` that conmon
    /// runs when the container exits, which would then look in the host's default root.
    /// The script keeps the file name so podman's per-basename settings
    /// (`runtime_supports_json`, ...) see the real runtime's name.
    pub fn new(dir: &Path, runtime: &Path) -> Podman {
        let runtime = fs::canonicalize(runtime)
            .unwrap_or_else(|e| panic!("runtime {}: {e}", runtime.display()));
        for sub in ["bin", "root", "runroot", "tmp", "net", "runtime-root"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        }
        let runtime_root = dir.join("runtime-root");
        let name = runtime
            .file_name()
            .expect("a runtime binary has a file name")
            .to_owned();
        let wrapper = dir.join("bin").join(&name);
        fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec '{}' --root '{}' \"$@\"\n",
                runtime.display(),
                runtime_root.display()
            ),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", wrapper.display()));
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", wrapper.display()));

        let d = dir.display();
        let storage_conf = dir.join("storage.conf");
        fs::write(
            &storage_conf,
            format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n"),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", storage_conf.display()));

        let mut base: Vec<OsString> = Vec::new();
        for (flag, value) in [
            ("--root", dir.join("root")),
            ("--runroot", dir.join("runroot")),
            ("--tmpdir", dir.join("tmp")),
            ("--network-config-dir", dir.join("net")),
            ("--runtime", wrapper),
        ] {
            base.push(flag.into());
            base.push(value.into());
        }
        for flag in [
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            "--storage-driver=overlay",
        ] {
            base.push(flag.into());
        }
        let podman = Podman {
            dir: dir.to_path_buf(),
            runtime,
            runtime_root,
            base,
            env: vec![
                ("CONTAINERS_CONF".into(), dir.join("containers.conf").into()),
                ("CONTAINERS_STORAGE_CONF".into(), storage_conf.into()),
            ],
        };
        podman.write_containers_conf("");
        podman
    }

    /// (Re)writes the private containers.conf, `extra_engine_conf` appended to its
    /// `[engine]` table (e.g. `runtime_supports_json = [...]`). Every podman call
    /// reads it afresh.
    pub fn write_containers_conf(&self, extra_engine_conf: &str) {
        let d = self.dir.display();
        let path = self.dir.join("containers.conf");
        // Podman's defaults (nofile 1048576, nproc = the host's) exceed the hard limits it
        // runs under here (no CAP_SYS_RESOURCE; podman lowers its own hard RLIMIT_NPROC to
        // pid_max), and the runtime's setrlimit would fail with EPERM.
        let text = format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
lock_type = "file"
tmp_dir = "{d}/tmp"
static_dir = "{d}/root/libpod"
volume_path = "{d}/root/volumes"
{extra_engine_conf}

[network]
network_config_dir = "{d}/net"
"#
        );
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The runtime's state dir (`--root`) the wrapper passes.
    pub fn runtime_root(&self) -> &Path {
        &self.runtime_root
    }

    /// The real runtime binary behind the wrapper.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// A `Command` for `podman <base flags> args...` with the private config.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new("podman");
        command.args(&self.base).args(args);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs `podman <base flags> args...`.
    pub fn podman<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(&mut self.command(args))
    }

    /// Like [`Self::podman`]; panics with the output unless it exits 0. Returns stdout.
    pub fn podman_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.podman(&args);
        if !output.status.success() {
            panic!("podman {args:?} failed: {}", describe(&output));
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever a failed test left: containers (stopped by podman, which runs the
        // runtime's kill and delete), then conmon and anything else podman started.
        let output = self.podman(["rm", "--all", "--force", "--time", "0"]);
        if !output.status.success() {
            eprintln!(
                "keel-testutil: podman rm --all --force: {}",
                describe(&output)
            );
        }
        let killed = kill_processes_mentioning(&self.dir.to_string_lossy());
        if !killed.is_empty() {
            eprintln!("keel-testutil: killed what podman left running: {killed:#?}");
        }
    }
}

// ---------------------------------------------------------------------------
// A registry

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port on 127.0.0.1");
    listener.local_addr().expect("local address").port()
}

/// Debian's docker-registry, stopped (by pid) when dropped.
pub struct Registry {
    pub port: u16,
    daemon: Daemon,
}

impl Registry {
    /// Starts a registry on 127.0.0.1 with storage under `temp`; with
    /// `login`, it wants htpasswd basic auth.
    pub fn start(temp: &crate::TempRoot, name: &str, login: Option<(&str, &str)>) -> Registry {
        Registry::start_in(temp, name, login, None)
    }

    /// [`Registry::start`] in a test's network namespace (at its 127.0.0.1).
    pub fn start_in(
        temp: &crate::TempRoot,
        name: &str,
        login: Option<(&str, &str)>,
        netns: Option<&crate::NetnsGuard>,
    ) -> Registry {
        let dir = temp.subdir(name);
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).expect("create the registry's storage dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: keel-test-secret\n",
            storage.display()
        );
        if let Some((user, password)) = login {
            let htpasswd = dir.join("htpasswd");
            let output = run(Command::new("htpasswd").args(["-Bbn", user, password]));
            assert!(
                output.status.success(),
                "htpasswd -Bbn failed (apache2-utils installed? ./scripts/setup): {}",
                describe(&output)
            );
            fs::write(&htpasswd, &output.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: keel-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.join("config.yml");
        fs::write(&config_path, config).expect("write the registry's config.yml");
        let mut command = Command::new("docker-registry");
        command.arg("serve").arg(&config_path);
        if let Some(netns) = netns {
            netns.enter(&mut command);
        }
        let mut daemon = Daemon::spawn("docker-registry", command, dir.join("registry.log"), dir);
        let reachable = || {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
        };
        daemon.wait_until("listening", START_TIMEOUT, || match netns {
            Some(netns) => netns.within(reachable),
            None => reachable(),
        });
        Registry { port, daemon }
    }

    /// `127.0.0.1:PORT`, the registry name in references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_tail(&self) -> String {
        self.daemon.log_tail()
    }
}
