//! The container operations every face calls: create, start (detached or
//! attached), stop, kill, remove, list, wait, rename, pause, unpause.
//!
//! There is no daemon: each call is made by a short-lived process over the
//! shared state, and a running container is held by its monitor (a keel
//! process of its own, [`crate::monitor`]). What a process finds in the
//! state is checked against the machine ([`Engine::reconcile`]): a monitor
//! that was killed, a container that died without one, show as what they
//! are, and what they left is cleaned up.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_image::manifest::ImageConfig;
use keel_image::store::ImageStore;
use serde::{Deserialize, Serialize};

use crate::attach::{self, Frame, Hello};
use crate::db::{Container, ContainerMount, ContainerState, Db, Status, Volume};
use crate::error::{Error, Result};
use crate::oci::{self, ResolvedMount};
use crate::paths::Layout;
use crate::spec::{ContainerSpec, MountKind, NetworkMode};
use crate::users;

mod create;
mod lifecycle;
mod setup;
mod state;

pub use setup::*;

/// How the engine runs containers.
#[derive(Debug, Clone)]
pub struct Options {
    /// The cgroup every container's cgroup goes under (`/keel`).
    pub cgroup_parent: String,
    /// keel's init on the host, for `--init` (a static binary).
    pub init_binary: Option<PathBuf>,
    /// The `keel-monitor` binary; without one, this binary is re-executed
    /// as `keel container-monitor`.
    pub monitor_binary: Option<PathBuf>,
    /// keel-vm's `keel-vm-shim`, for `--isolation vm`.
    pub vm_shim: Option<PathBuf>,
    /// The agent of keel's micro-VMs, `keel-guest` (a static binary).
    pub guest_agent: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cgroup_parent: "/keel".into(),
            init_binary: None,
            monitor_binary: None,
            vm_shim: None,
            guest_agent: None,
        }
    }
}

/// What the monitor needs to run a container, recorded at create so that
/// it needs neither the image store nor the request again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// The image's config (for env, user, workdir, stop signal, health).
    pub image_config: ImageConfig,
    /// The image's snapshots, topmost first.
    pub layers: Vec<PathBuf>,
    pub cgroup_parent: String,
    pub init_binary: Option<PathBuf>,
    /// For `--isolation vm`: the shim and the agent.
    pub vm_shim: Option<PathBuf>,
    pub guest_agent: Option<PathBuf>,
}

pub struct Engine {
    pub layout: Layout,
    pub db: Db,
    pub options: Options,
}

/// How long `stop` waits by default before SIGKILL (docker's 10 s).
pub const DEFAULT_STOP_TIMEOUT: u32 = 10;

/// How long a started monitor may take to report.
const MONITOR_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

impl Engine {
    pub fn open(layout: Layout, options: Options) -> Result<Engine> {
        let db = Db::open(&layout.root)?;
        Ok(Engine {
            layout,
            db,
            options,
        })
    }

    /// The runtime's state directory.
    pub fn runtime_root(&self) -> PathBuf {
        self.layout.runtime_root()
    }

    /// Records a container event (docker's attributes: labels, name, image).
    pub fn event(&self, container: &Container, action: &str, extra: &[(&str, &str)]) {
        crate::events::record_container(&self.layout.root, container, action, extra);
    }
}

/// `keel update` flags: each `None` leaves that setting as it is.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub memory: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub pids_limit: Option<i64>,
    pub restart: Option<crate::spec::RestartPolicy>,
}

/// `keel exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub args: Vec<String>,
    pub tty: bool,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub privileged: bool,
}

/// What the monitor reports on its report fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "report", content = "message")]
pub enum Report {
    /// Created, waiting for the attach client to start it.
    Created,
    Started,
    Failed(String),
}

fn read_report(fd: OwnedFd, timeout: Duration) -> Result<Report> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if ready <= 0 {
        return Err(Error::msg("the container's monitor did not report in time"));
    }
    let mut file = File::from(fd);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // One line; the rest of the pipe stays for nobody.
    while file
        .read(&mut byte)
        .map_err(|e| Error::io("read the monitor's report", e))?
        == 1
    {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    if line.is_empty() {
        return Err(Error::msg(
            "the container's monitor exited without a report",
        ));
    }
    serde_json::from_slice(&line)
        .map_err(|e| Error::msg(format!("the monitor's report does not parse: {e}")))
}

/// A start failure with docker's exit codes in mind: the runtime's words
/// are kept (`exec: "x": executable file not found in $PATH`).
fn start_error(message: &str) -> Error {
    Error::Start(message.to_string())
}

/// Removes everything of a stopped container: its mounts, runtime state,
/// files, state record and (with `volumes`) its anonymous volumes.
pub fn remove_container(
    layout: &Layout,
    db: &mut Db,
    container: &Container,
    volumes: bool,
) -> Result<()> {
    let _ = keel_runtime::container::delete(&layout.runtime_root(), &container.id, true);
    crate::rootfs::unmount(&layout.rootfs(&container.id))?;
    crate::network::sandbox::cleanup(layout, db, container)?;
    for mount in &container.mounts {
        if let Some(name) = &mount.name
            && volumes
            && let Ok(Some(volume)) = db.volume(name)
            && volume.anonymous
        {
            let _ = std::fs::remove_dir_all(layout.volume(name));
            let _ = db.delete_volume(name);
        }
    }
    let dir = layout.container(&container.id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io(format!("remove {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_dir_all(layout.run_dir(&container.id));
    db.delete(&container.id)?;
    Ok(())
}

fn oom_kill_count(runtime_root: &Path, id: &str) -> u64 {
    let Ok(dir) = keel_runtime::state::ContainerDir::new(runtime_root, id) else {
        return 0;
    };
    dir.load()
        .map(|state| state.cgroup.oom_kill_count())
        .unwrap_or(0)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits up to `timeout` for `pid` to exit (through a pidfd).
pub fn wait_exit(pid: i32, timeout: Duration) {
    wait_any_exit(&[pid], timeout);
}

/// Waits up to `timeout` until one of `pids` exits (through pidfds); at
/// once if one is already gone.
pub fn wait_any_exit(pids: &[i32], timeout: Duration) {
    let mut fds = Vec::with_capacity(pids.len());
    for &pid in pids {
        // SAFETY: pidfd_open returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            // Gone already (or not ours to watch): nothing to wait for.
            return;
        }
        // SAFETY: a new fd we own.
        fds.push(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: poll on valid pollfds we own.
    unsafe {
        libc::poll(
            polled.as_mut_ptr(),
            polled.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
}

fn random_bytes(buffer: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buffer.len() {
        // SAFETY: getrandom into the rest of our buffer.
        let n = unsafe {
            libc::getrandom(
                buffer[filled..].as_mut_ptr().cast(),
                buffer.len() - filled,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::io("getrandom", e));
        }
        filled += n as usize;
    }
    Ok(())
}

/// 64 hex characters, as docker's ids.
/// The monitors this process started that had not exited when the start
/// returned: a long-lived process must reap them (see [`reap_monitors`]).
pub(crate) static SPAWNED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Reaps the monitors this process started that have exited since (they
/// are its children): a long-lived process (the API service) calls this
/// now and then, else every ended monitor stays a zombie. Only those
/// pids: other children (`tokio::process`'s) are left to their owners.
pub fn reap_monitors() {
    let mut spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
    spawned.retain(|&pid| {
        // SAFETY: waitpid with WNOHANG on a child we started.
        let rc = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        rc == 0
    });
}

pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    Ok(hex::encode(bytes))
}

pub(crate) fn random_u64() -> Result<u64> {
    let mut bytes = [0u8; 8];
    random_bytes(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_files() {
        let a = random_id().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_id().unwrap());
        let spec = ContainerSpec {
            extra_hosts: vec![("db".into(), "10.0.0.2".into())],
            dns: vec!["10.0.0.53".into()],
            dns_search: vec!["example.com".into()],
            ..ContainerSpec::default()
        };
        let hosts = hosts_file(&spec, "web", &[]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("127.0.1.1\tweb\n"));
        assert!(hosts.ends_with("10.0.0.2\tdb\n"));
        let resolv = resolv_conf(&spec, false);
        assert!(resolv.contains("nameserver 10.0.0.53\n"));
        assert!(resolv.ends_with("search example.com\n"));
        assert!(!resolv.contains("nameserver 127."));
    }
}
