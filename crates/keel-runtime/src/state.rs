//! A container's state on disk: `<root>/<id>/state.json` (atomic writes),
//! `<root>/<id>/config.json` (the bundle's config as it was at create, plus
//! later `update`s), and `<root>/<id>/exec.fifo` while the container waits
//! for `start`. The status is computed live, never stored: a container whose
//! init is gone (or whose pid was reused) is stopped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::spec::Spec;
use crate::util;

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const FIFO_FILE: &str = "exec.fifo";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What keel keeps about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    /// Start time of `pid` (clock ticks), to detect pid reuse.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub cgroup: Cgroup,
    /// Whether the container has a private pid namespace (affects kill/delete).
    pub own_pid_ns: bool,
}

/// The directory of one container under the runtime root.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn new(root: &Path, id: &str) -> Result<ContainerDir> {
        util::validate_id(id)?;
        Ok(ContainerDir {
            path: root.join(id),
        })
    }

    /// Makes the directory; an existing one means the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<ContainerDir> {
        let dir = ContainerDir::new(root, id)?;
        fs::create_dir_all(root).context(|| format!("create runtime root {}", root.display()))?;
        match fs::create_dir(&dir.path) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists),
            Err(e) => Err(Error::io(format!("create {}", dir.path.display()), e)),
        }
    }

    pub fn fifo(&self) -> PathBuf {
        self.path.join(FIFO_FILE)
    }

    pub fn load(&self) -> Result<State> {
        let data = match fs::read(self.path.join(STATE_FILE)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotExist),
            Err(e) => {
                return Err(Error::io(
                    format!("read state of {}", self.path.display()),
                    e,
                ));
            }
        };
        serde_json::from_slice(&data).map_err(|e| {
            Error::msg(format!(
                "corrupt state file in {}: {e}",
                self.path.display()
            ))
        })
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let data = serde_json::to_vec(state).expect("state serializes");
        util::write_atomic(&self.path.join(STATE_FILE), &data)
    }

    pub fn load_config(&self) -> Result<Spec> {
        let path = self.path.join(CONFIG_FILE);
        let data = fs::read(&path).context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::msg(format!("corrupt {}: {e}", path.display())))
    }

    pub fn save_config(&self, spec: &Spec) -> Result<()> {
        let data = serde_json::to_vec(spec).expect("spec serializes");
        util::write_atomic(&self.path.join(CONFIG_FILE), &data)
    }

    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", self.path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// The live status of the container this state describes.
    pub fn status(&self, state: &State) -> Status {
        if !util::process_alive(state.pid, state.pid_start) {
            return Status::Stopped;
        }
        if self.fifo().exists() {
            return Status::Created;
        }
        if state.cgroup.is_frozen().unwrap_or(false) {
            return Status::Paused;
        }
        Status::Running
    }
}

/// runc's `state` JSON (`list.go` containerState).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
}

impl OciState {
    pub fn new(state: &State, status: Status) -> OciState {
        OciState {
            oci_version: crate::OCI_VERSION.to_string(),
            id: state.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                state.pid
            },
            status: status.as_str().to_string(),
            bundle: state.bundle.display().to_string(),
            rootfs: state.rootfs.display().to_string(),
            created: state.created.clone(),
            annotations: state.annotations.clone(),
            owner: state.owner.clone(),
        }
    }
}

/// Every container under `root`, sorted by id; unreadable entries are skipped.
pub fn list(root: &Path) -> Result<Vec<(ContainerDir, State)>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", root.display()), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(dir) = ContainerDir::new(root, &id) else {
            continue;
        };
        if let Ok(state) = dir.load() {
            out.push((dir, state));
        }
    }
    out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    Ok(out)
}
