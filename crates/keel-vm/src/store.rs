//! VM records under keel's root, one directory per VM:
//!
//! - `<root>/vms/<id>/config.json`: what was asked for ([`VmSpec`]),
//!   written once by the CLI;
//! - `<root>/vms/<id>/state.json`: what the VM is ([`VmState`]), written
//!   (atomically) by its VMM as it starts and ends, and by the CLI when it
//!   kills one;
//! - `<root>/vms/<id>/console.log`: the serial console of a detached VM.
//!
//! `keel vm ls` reads these files and checks each VMM's pid (with its
//! start time, so a reused pid is not mistaken for it): no VMM is asked
//! anything. Names are unique: a create holds `<root>/vms/.lock`.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a VM's serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleMode {
    /// `console.log` in the VM's directory (`keel vm logs`).
    File,
    /// The VMM's standard output (the terminal of `keel vm run`).
    Tty,
    /// Nowhere.
    None,
}

impl std::str::FromStr for ConsoleMode {
    type Err = Error;
    fn from_str(text: &str) -> Result<ConsoleMode> {
        match text {
            "file" => Ok(ConsoleMode::File),
            "tty" => Ok(ConsoleMode::Tty),
            "none" => Ok(ConsoleMode::None),
            other => Err(Error::invalid(format!(
                "--console {other}: use file, tty or none"
            ))),
        }
    }
}

/// A disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// What a VM was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created: String,
    pub vcpus: u32,
    /// Guest RAM, bytes.
    pub memory: u64,
    pub kernel: PathBuf,
    /// An initrd (a Linux kernel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: String,
    pub console: ConsoleMode,
    /// The snapshot it was restored from (its guest then comes from there,
    /// not from `kernel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<PathBuf>,
    /// Removed when the guest ends (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Disks (raw image files), in the order the guest finds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    /// A virtio-balloon device (`vm update --memory-target`).
    #[serde(default)]
    pub balloon: bool,
    /// A virtio-rng device.
    #[serde(default)]
    pub rng: bool,
    /// Comes by migration: the address its VMM listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming: Option<String>,
    /// Its interface on a keel network (`--network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Its vsock (`--vsock`): the guest's CID and the host's unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockSpec>,
    /// Host directories shared with the guest (`--share`, virtio-9p).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareSpec>,
}

/// A host directory the guest mounts by its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSpec {
    pub tag: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockSpec {
    pub cid: u64,
    pub path: PathBuf,
}

/// A VM's place on a keel bridge network (the engine records the same
/// endpoint; this is what `inspect` shows and the VMM needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The network's name and id.
    pub name: String,
    pub id: String,
    /// The host end: a tap device on the network's bridge.
    pub tap: String,
    /// `02:42:...`.
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<std::net::IpAddr>,
    #[serde(default)]
    pub prefix4: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway4: Option<std::net::IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<std::net::IpAddr>,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl VmSpec {
    /// Takes the devices a snapshot (or a migration) brings.
    pub fn take_devices(&mut self, devices: &[crate::snapshot::DeviceSpec]) {
        use crate::snapshot::DeviceSpec;
        self.disks = devices
            .iter()
            .filter_map(|d| match d {
                DeviceSpec::Disk { path, read_only } => Some(DiskSpec {
                    path: path.clone(),
                    read_only: *read_only,
                }),
                _ => None,
            })
            .collect();
        self.balloon = devices.contains(&DeviceSpec::Balloon);
        self.rng = devices.contains(&DeviceSpec::Rng);
        // A new socket for the new VM (the CLI picks its path).
        self.vsock = devices.iter().find_map(|d| match d {
            DeviceSpec::Vsock { cid } => Some(VsockSpec {
                cid: *cid,
                path: PathBuf::new(),
            }),
            _ => None,
        });
    }
}

impl NetworkSpec {
    /// The MAC as bytes.
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        keel_net::ipam::parse_mac(&self.mac)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded; its VMM has not started the guest (yet).
    #[default]
    Created,
    /// Its VMM waits for a migration to arrive.
    Incoming,
    Running,
    Paused,
    Exited,
}

/// What a VM is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmState {
    pub status: Status,
    /// The VMM's pid and start time (clock ticks since boot).
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub pid_start: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// How it ended: "powered off", "guest panicked", "triple fault", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The VMM's control socket (pause, resume, snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,
}

/// A VM as `ls` and `inspect` show it.
#[derive(Debug, Clone)]
pub struct Vm {
    pub spec: VmSpec,
    pub state: VmState,
}

impl Vm {
    /// Whether its VMM holds it (running or paused).
    pub fn is_running(&self) -> bool {
        matches!(
            self.state.status,
            Status::Running | Status::Paused | Status::Incoming
        )
    }
}

pub struct Store {
    dir: PathBuf,
}

pub fn now() -> String {
    jiff::Timestamp::now().to_string()
}

impl Store {
    /// The VMs of keel's root `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let dir = root.join("vms");
        fs::create_dir_all(&dir).map_err(Error::path("create", &dir))?;
        Ok(Store { dir })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Records a new VM. `name` must be free (`pick_name` chooses one
    /// when the user gave none: it is called with 0, 1, 2, ... until a
    /// free one comes).
    pub fn create(
        &self,
        name: Option<&str>,
        pick_name: &mut dyn FnMut(u32) -> String,
        mut spec: VmSpec,
    ) -> Result<VmSpec> {
        let _lock = self.lock()?;
        let taken: Vec<String> = self.list()?.into_iter().map(|vm| vm.spec.name).collect();
        spec.name = match name {
            Some(name) => {
                validate_name(name)?;
                if taken.iter().any(|t| t == name) {
                    return Err(Error::invalid(format!(
                        "the VM name \"{name}\" is already in use; remove that VM or choose another name"
                    )));
                }
                name.to_string()
            }
            None => (0..)
                .map(&mut *pick_name)
                .find(|n| !taken.contains(n))
                .expect("a free name"),
        };
        let dir = self.dir(&spec.id);
        fs::create_dir(&dir).map_err(Error::path("create", &dir))?;
        let result = (|| {
            write_json(&dir.join("state.json"), &VmState::default())?;
            // The config last: a directory without one is not a VM yet
            // (list skips it).
            write_json(&dir.join("config.json"), &spec)
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(spec)
    }

    /// Every VM, with its state as it really is (a VMM that died without
    /// a word is shown as exited).
    pub fn list(&self) -> Result<Vec<Vm>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(Error::path("read", &self.dir))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Ok(spec) = read_json::<VmSpec>(&path.join("config.json")) else {
                continue;
            };
            let state = read_json::<VmState>(&path.join("state.json")).unwrap_or_default();
            out.push(Vm {
                spec,
                state: checked(state),
            });
        }
        out.sort_by(|a, b| b.spec.created.cmp(&a.spec.created));
        Ok(out)
    }

    /// A VM by name, id or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Vm> {
        let all = self.list()?;
        if let Some(vm) = all
            .iter()
            .find(|vm| vm.spec.name == key || vm.spec.id == key)
        {
            return Ok(vm.clone());
        }
        let matches: Vec<&Vm> = all
            .iter()
            .filter(|vm| !key.is_empty() && vm.spec.id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!("No such VM: {key}"))),
            _ => Err(Error::invalid(format!(
                "VM id prefix {key} is ambiguous: give more of it"
            ))),
        }
    }

    /// What a VM was created with.
    pub fn spec(&self, id: &str) -> Result<VmSpec> {
        read_json(&self.dir(id).join("config.json"))
    }

    /// What a VM's record says it is (as written: no check of its VMM).
    pub fn state(&self, id: &str) -> Result<VmState> {
        read_json(&self.dir(id).join("state.json"))
    }

    /// What a VM is now known to be (a migrated VM's size, once it came).
    pub fn write_spec(&self, spec: &VmSpec) -> Result<()> {
        write_json(&self.dir(&spec.id).join("config.json"), spec)
    }

    pub fn write_state(&self, id: &str, state: &VmState) -> Result<()> {
        write_json(&self.dir(id).join("state.json"), state)
    }

    /// Forgets a VM (its VMM must be gone).
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        // Renamed first: a remove cut short leaves no half VM in `ls`.
        let gone = self.dir.join(format!(".removing-{id}"));
        fs::rename(&dir, &gone).map_err(Error::path("remove", &dir))?;
        fs::remove_dir_all(&gone).map_err(Error::path("remove", &gone))
    }

    fn lock(&self) -> Result<fs::File> {
        let path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::path("open", &path))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::path("lock", &path)(std::io::Error::last_os_error()));
        }
        Ok(file)
    }
}

/// docker's rule for names.
fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Invalid VM name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// A running state whose VMM is gone is an exit nobody recorded.
fn checked(mut state: VmState) -> VmState {
    if matches!(
        state.status,
        Status::Running | Status::Paused | Status::Incoming
    ) && !keel_runtime::util::process_alive(state.pid, state.pid_start)
    {
        state.status = Status::Exited;
        state.reason.get_or_insert_with(|| "the VMM died".into());
    }
    state
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(Error::path("read", path))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Msg(format!("{} is corrupt: {e}", path.display())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).expect("VM records serialize");
    keel_runtime::util::write_atomic(path, &data)
        .map_err(|e| Error::Msg(format!("write {}: {e}", path.display())))
}

/// Sends one request to a VMM's control socket; what follows its "ok"
/// (often nothing), or the error it gives.
pub fn control(socket: &Path, request: &str) -> Result<String> {
    use std::io::{BufRead, BufReader};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(Error::path("connect to the VMM at", socket))?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(Error::path("write to the VMM at", socket))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(Error::path("read the VMM's answer at", socket))?;
    let answer = answer.trim_end();
    if let Some(why) = answer.strip_prefix("error: ") {
        return Err(Error::Msg(why.to_string()));
    }
    match answer.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim_start().to_string()),
        None => Err(Error::Msg(format!("the VMM answered {answer:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> VmSpec {
        VmSpec {
            id: id.into(),
            name: String::new(),
            created: now(),
            vcpus: 1,
            memory: 64 << 20,
            kernel: "/k".into(),
            cmdline: String::new(),
            console: ConsoleMode::File,
            restored_from: None,
            auto_remove: false,
            incoming: None,
            network: None,
            vsock: None,
            shares: Vec::new(),
            initrd: None,
            disks: Vec::new(),
            balloon: false,
            rng: false,
        }
    }

    #[test]
    fn names_are_unique_and_a_dead_vmm_shows_as_exited() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let mut pick = |n: u32| format!("vm{n}");
        let a = store.create(None, &mut pick, spec("aaaa1111")).unwrap();
        let b = store.create(None, &mut pick, spec("bbbb2222")).unwrap();
        assert_eq!((a.name.as_str(), b.name.as_str()), ("vm0", "vm1"));
        let error = store
            .create(Some("vm0"), &mut pick, spec("cccc3333"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("already in use"), "{error}");
        assert!(store.create(Some("-x"), &mut pick, spec("dddd")).is_err());
        assert_eq!(store.find("bbbb").unwrap().spec.name, "vm1");
        assert_eq!(store.find("vm0").unwrap().spec.id, "aaaa1111");
        assert_eq!(store.find("zz").unwrap_err().to_string(), "No such VM: zz");
        // "Running" under a pid that is not its VMM: exited.
        let state = VmState {
            status: Status::Running,
            pid: std::process::id() as i32,
            pid_start: 1,
            ..VmState::default()
        };
        store.write_state("aaaa1111", &state).unwrap();
        let vm = store.find("vm0").unwrap();
        assert_eq!(vm.state.status, Status::Exited);
        assert_eq!(vm.state.reason.as_deref(), Some("the VMM died"));
        store.remove("aaaa1111").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
