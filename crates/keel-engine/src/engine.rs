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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cgroup_parent: "/keel".into(),
            init_binary: None,
            monitor_binary: None,
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

    /// Records a container event (docker's attributes: name, image).
    pub fn event(&self, container: &Container, action: &str, extra: &[(&str, &str)]) {
        let mut attributes = vec![
            ("name", container.name.as_str()),
            ("image", container.image.as_str()),
        ];
        attributes.extend_from_slice(extra);
        crate::events::record(
            &self.layout.root,
            "container",
            action,
            &container.id,
            &attributes,
        );
    }

    // ------------------------------------------------------------------
    // create

    /// Creates a container of an image already in `images`: checks the
    /// whole request first (nothing is made if any of it is wrong), then
    /// records it, makes its directory, files and volumes.
    pub fn create(&mut self, images: &ImageStore, spec: ContainerSpec) -> Result<Container> {
        let record = images.resolve(&spec.image)?;
        let image_config = images.config(&record)?;
        let layers = images.snapshots.lower_dirs(&record.chain_ids)?;
        self.create_on_layers(&record.id.to_string(), image_config, layers, spec)
    }

    /// `create` on layers that need not be an image of the store (a build
    /// step's state: `image_config` and the snapshot directories `layers`,
    /// topmost first); `image_id` is what the container records as its image.
    pub fn create_on_layers(
        &mut self,
        image_id: &str,
        image_config: keel_image::manifest::ImageConfig,
        layers: Vec<PathBuf>,
        mut spec: ContainerSpec,
    ) -> Result<Container> {
        crate::options::check(&spec)?;
        self.resolve_network(&mut spec)?;
        // docker: a container's labels are the image's, the request's over them.
        if let Some(labels) = image_config.config.as_ref().and_then(|c| c.labels.as_ref()) {
            for (key, value) in labels {
                spec.labels
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        if let Some(name) = &spec.name {
            crate::spec::validate_container_name(name)?;
        }
        let args = oci::command(&image_config, &spec)?;
        // The user must be there in the image (the files may change in the
        // container later; the monitor resolves again at each start).
        let user = resolve_user_in_layers(&layers, &spec, &image_config)?;
        let mounts = self.plan_mounts(&spec, &image_config)?;
        let id = random_id()?;
        // Build the config once now: a bad request fails here, before
        // anything exists.
        let run = RunConfig {
            image_config: image_config.clone(),
            layers: layers.clone(),
            cgroup_parent: self.options.cgroup_parent.clone(),
            init_binary: self.options.init_binary.clone(),
        };
        let resolved: Vec<ResolvedMount> = mounts.iter().map(resolved_mount).collect();
        let devices = host_devices(&spec)?;
        build_config(
            &self.layout,
            &id,
            &spec,
            &run,
            &user,
            &resolved,
            &devices,
            None,
        )?;

        let created = crate::logs::now_nanos();
        let mut container = Container {
            id: id.clone(),
            name: String::new(),
            image: spec.image.clone(),
            image_id: image_id.to_string(),
            created,
            spec,
            args,
            mounts,
            state: ContainerState::default(),
        };
        self.insert_with_name(&mut container)?;
        match self.make_files(&container, &run) {
            Ok(()) => {
                self.event(&container, "create", &[]);
                Ok(container)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.layout.container(&id));
                self.remove_anonymous_volumes(&container);
                let _ = self.db.delete(&id);
                Err(e)
            }
        }
    }

    /// The networks named in the request, found (the default network
    /// recorded on first use); `container:NAME` resolved to its id.
    fn resolve_network(&mut self, spec: &mut ContainerSpec) -> Result<()> {
        if let NetworkMode::Container(other) = &spec.network {
            let other = self
                .db
                .find(other)
                .map_err(|_| Error::invalid(format!("No such container: {other}")))?;
            if spec.hostname.is_some() {
                return Err(Error::invalid(
                    "conflicting options: hostname and the network mode",
                ));
            }
            spec.network = NetworkMode::Container(other.id);
        }
        if spec.network != NetworkMode::Bridge {
            // docker ignores published ports without a network of its own.
            spec.publish.clear();
            spec.publish_all = false;
        }
        crate::network::resolve_attachments(&mut self.db, spec)
    }

    fn insert_with_name(&mut self, container: &mut Container) -> Result<()> {
        if let Some(name) = &container.spec.name {
            container.name = crate::spec::validate_container_name(name)?;
            return self.db.insert(container);
        }
        for attempt in 0..20 {
            container.name = crate::names::generate(random_u64()?, attempt);
            match self.db.insert(container) {
                Err(Error::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(Error::msg("no free container name found"))
    }

    /// Binds must exist; named volumes are made on first use; anonymous
    /// ones for `-v /path` and the image's VOLUMEs.
    fn plan_mounts(
        &mut self,
        spec: &ContainerSpec,
        image: &ImageConfig,
    ) -> Result<Vec<ContainerMount>> {
        let mut mounts = Vec::new();
        let mut targets = std::collections::BTreeSet::new();
        for m in &spec.mounts {
            if !targets.insert(m.target.clone()) {
                return Err(Error::invalid(format!(
                    "Duplicate mount point: {}",
                    m.target
                )));
            }
            let mut mount = ContainerMount {
                kind: m.kind,
                name: None,
                source: None,
                target: m.target.clone(),
                read_only: m.read_only,
                tmpfs_size: m.tmpfs_size,
                tmpfs_mode: m.tmpfs_mode,
                propagation: m.propagation.clone(),
                copy_up: false,
            };
            match m.kind {
                MountKind::Bind => {
                    let source = std::fs::canonicalize(&m.source).map_err(|_| {
                        Error::invalid(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            m.source
                        ))
                    })?;
                    mount.source = Some(source);
                }
                MountKind::Volume => {
                    // Named now; made (with its copy-up decided) after the
                    // container is recorded.
                    mount.name = Some(if m.source.is_empty() {
                        random_id()?
                    } else {
                        m.source.clone()
                    });
                    mount.copy_up = !m.no_copy;
                }
                MountKind::Tmpfs => {}
            }
            mounts.push(mount);
        }
        let image_volumes = image
            .config
            .as_ref()
            .and_then(|c| c.volumes.clone())
            .unwrap_or_default();
        for target in image_volumes.keys() {
            let target = crate::spec::clean_path(target);
            if targets.insert(target.clone()) {
                mounts.push(ContainerMount {
                    kind: MountKind::Volume,
                    name: Some(random_id()?),
                    source: None,
                    target,
                    read_only: false,
                    tmpfs_size: None,
                    tmpfs_mode: None,
                    propagation: None,
                    copy_up: true,
                });
            }
        }
        Ok(mounts)
    }

    fn make_files(&mut self, container: &Container, run: &RunConfig) -> Result<()> {
        let id = &container.id;
        let dir = self.layout.container(id);
        for sub in [
            dir.clone(),
            self.layout.diff(id),
            self.layout.work(id),
            self.layout.rootfs(id),
        ] {
            std::fs::create_dir_all(&sub)
                .map_err(|e| Error::io(format!("create {}", sub.display()), e))?;
        }
        let hostname = oci::hostname(&container.spec, id);
        write_file(
            &self.layout.file(id, "hostname"),
            format!("{hostname}\n").as_bytes(),
        )?;
        write_file(
            &self.layout.file(id, "hosts"),
            hosts_file(&container.spec, &hostname, &[]).as_bytes(),
        )?;
        write_file(
            &self.layout.file(id, "resolv.conf"),
            resolv_conf(&container.spec, false).as_bytes(),
        )?;
        write_file(
            &self.layout.file(id, "run.json"),
            &serde_json::to_vec_pretty(run).expect("run config serializes"),
        )?;
        // Volumes: made now if they are not there. The copy-up (unless
        // `nocopy`) happens at the first start, into any volume that is empty
        // then, however it was made (docker copies into an empty volume too).
        let mut mounts = container.mounts.clone();
        for mount in mounts.iter_mut().filter(|m| m.kind == MountKind::Volume) {
            let name = mount.name.clone().expect("volume mounts are named");
            let anonymous = container
                .spec
                .mounts
                .iter()
                .all(|m| m.kind != MountKind::Volume || m.source != name);
            self.ensure_volume(&name, anonymous)?;
            mount.source = Some(self.layout.volume_data(&name));
        }
        self.db.update_state(id, |c| {
            c.mounts = mounts;
            Ok(())
        })
    }

    /// Makes the volume unless it exists; returns whether it is new.
    pub fn ensure_volume(&mut self, name: &str, anonymous: bool) -> Result<bool> {
        crate::spec::validate_volume_name(name)?;
        let data = self.layout.volume_data(name);
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("create {}", data.display()), e))?;
        self.db.insert_volume(&Volume {
            name: name.to_string(),
            created: jiff::Timestamp::now().to_string(),
            labels: BTreeMap::new(),
            anonymous,
        })
    }

    fn remove_anonymous_volumes(&mut self, container: &Container) {
        for mount in &container.mounts {
            if let Some(name) = &mount.name
                && let Ok(Some(volume)) = self.db.volume(name)
                && volume.anonymous
            {
                let _ = std::fs::remove_dir_all(self.layout.volume(name));
                let _ = self.db.delete_volume(name);
            }
        }
    }

    // ------------------------------------------------------------------
    // start

    /// Starts a container in the background: its monitor creates and
    /// starts it and reports; returns once it runs (or why it could not).
    pub fn start(&mut self, name: &str) -> Result<Container> {
        let container = self.find(name)?;
        if container.state.status.is_active() {
            return Ok(container);
        }
        let _lock = self.lock(&container.id)?;
        let report = self.spawn_monitor(&container, false)?;
        match report {
            Report::Started => self.db.find(&container.id),
            Report::Created => Err(Error::msg("the monitor did not start the container")),
            Report::Failed(message) => Err(start_error(&message)),
        }
    }

    /// Starts a container with a client attached before it runs (`run`
    /// without `-d`, `start -a`): returns the connection, over which its
    /// output, then its exit, will come.
    pub fn start_attached(&mut self, name: &str, hello: Hello) -> Result<(Container, UnixStream)> {
        let container = self.find(name)?;
        if container.state.status.is_active() {
            return Err(Error::Conflict(format!(
                "container {} is already running",
                container.name
            )));
        }
        let lock = self.lock(&container.id)?;
        match self.spawn_monitor(&container, true)? {
            Report::Created => {}
            Report::Started => return Err(Error::msg("the monitor started the container unasked")),
            Report::Failed(message) => return Err(start_error(&message)),
        }
        drop(lock);
        let mut stream = attach::connect(&self.layout.attach_socket(&container.id))?;
        attach::write_frame(
            &mut stream,
            &Frame::Hello(Hello {
                start: true,
                ..hello
            }),
        )?;
        loop {
            match attach::read_frame(&mut stream)? {
                Some(Frame::Started) => break,
                Some(Frame::Error(message)) => return Err(start_error(&message)),
                Some(Frame::Exit(_)) | None => {
                    return Err(Error::msg(
                        "the container's monitor ended before it started",
                    ));
                }
                Some(_) => {}
            }
        }
        crate::fault::point("run-started");
        // A `--rm` container may be done and removed by its monitor already:
        // its exit is in the stream, and the record read before will do.
        Ok((self.db.find(&container.id).unwrap_or(container), stream))
    }

    /// Attaches to a running container (`attach`, `wait`).
    pub fn attach(&mut self, name: &str, hello: Hello) -> Result<(Container, UnixStream)> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Err(Error::Conflict(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        let mut stream = attach::connect(&self.layout.attach_socket(&container.id))?;
        attach::write_frame(
            &mut stream,
            &Frame::Hello(Hello {
                start: false,
                ..hello
            }),
        )?;
        Ok((container, stream))
    }

    /// Forks and execs the monitor (from a read-only view of this binary,
    /// as it enters the container) and reads its first report.
    fn spawn_monitor(&mut self, container: &Container, wait_for_attach: bool) -> Result<Report> {
        let run_dir = self.layout.run_dir(&container.id);
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| Error::io(format!("create {}", run_dir.display()), e))?;
        // The monitor's binary, from a read-only view of it: the container's
        // init runs it until its exec.
        let (binary, mut args) = match &self.options.monitor_binary {
            Some(path) => {
                let c = CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|_| Error::invalid("a path holds a NUL byte"))?;
                let fd = keel_runtime::sealed::sealed_binary_at(&c).map_err(|e| {
                    Error::runtime(format!("prepare the monitor {}", path.display()), e)
                })?;
                (fd, vec!["keel-monitor".to_string()])
            }
            None => (
                keel_runtime::sealed::sealed_binary()
                    .map_err(|e| Error::runtime("prepare the monitor", e))?,
                vec!["keel".to_string()],
            ),
        };
        let (report_read, report_write) = pipe()?;
        args.extend([
            "--root".into(),
            self.layout.root.display().to_string(),
            "--runroot".into(),
            self.layout.runroot.display().to_string(),
        ]);
        if self.options.monitor_binary.is_none() {
            args.push("container-monitor".into());
        }
        args.extend(["--report-fd".into(), "3".into()]);
        if wait_for_attach {
            args.push("--wait-for-attach".into());
        }
        args.push(container.id.clone());
        let args: Vec<CString> = args
            .into_iter()
            .map(|a| CString::new(a).map_err(|_| Error::invalid("a path holds a NUL byte")))
            .collect::<Result<_>>()?;
        let env: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| {
                k == "PATH" || k.to_string_lossy().starts_with("KEEL_") || k == "RUST_LOG"
            })
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                CString::new(kv).ok()
            })
            .collect();
        let devnull = c"/dev/null";
        // SAFETY: fork; the child only makes async-signal-safe calls
        // (setsid, open, dup2, close, execveat) and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(Error::io(
                "fork the monitor",
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: in the child, on fds we own; _exit on failure.
            unsafe {
                libc::setsid();
                let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                }
                libc::dup2(report_write.as_raw_fd(), 3);
                let error = keel_runtime::sealed::exec_fd(&binary, &args, &env);
                let _ = error;
                libc::_exit(127);
            }
        }
        drop(report_write);
        drop(binary);
        let report = read_report(report_read, MONITOR_REPORT_TIMEOUT);
        // The monitor outlives us; if it has already exited, reap it.
        // SAFETY: waitpid with WNOHANG on our child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        report
    }

    fn lock(&self, id: &str) -> Result<File> {
        let run_dir = self.layout.run_dir(id);
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| Error::io(format!("create {}", run_dir.display()), e))?;
        let path = self.layout.lock(id);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        file.lock()
            .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
        Ok(file)
    }

    // ------------------------------------------------------------------
    // stop, kill, remove

    /// Sends the stop signal, waits up to `timeout` seconds (the
    /// container's, else 10), then SIGKILL. Stopping a stopped container
    /// is not an error (as docker).
    pub fn stop(&mut self, name: &str, timeout: Option<u32>) -> Result<Container> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Ok(container);
        }
        let run: RunConfig = self.run_config(&container.id)?;
        let signal = keel_runtime::container::parse_signal(&oci::stop_signal(
            &run.image_config,
            &container.spec,
        ))
        .map_err(|e| Error::runtime("the stop signal", e))?;
        let timeout = timeout
            .or(container.spec.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        self.db.update_state(&container.id, |c| {
            c.state.stopped_by_user = true;
            Ok(())
        })?;
        if container.state.status == Status::Paused {
            let _ = keel_runtime::container::resume(&self.runtime_root(), &container.id);
        }
        let _ = keel_runtime::container::kill(&self.runtime_root(), &container.id, signal, false);
        // What ended it, should no monitor be there to see the exit.
        let mut ended_by = signal;
        if !self.wait_until_stopped(&container, Duration::from_secs(u64::from(timeout))) {
            ended_by = libc::SIGKILL;
            let _ = keel_runtime::container::kill(
                &self.runtime_root(),
                &container.id,
                libc::SIGKILL,
                true,
            );
            if !self.wait_until_stopped(&container, Duration::from_secs(30)) {
                return Err(Error::msg(format!(
                    "container {} did not stop after SIGKILL",
                    container.name
                )));
            }
        }
        self.event(&container, "stop", &[]);
        self.reconcile_id(&container.id, Some(128 + ended_by))
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&mut self, name: &str, signal: i32) -> Result<Container> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Err(Error::Conflict(format!(
                "Cannot kill container: {}: container {} is not running",
                name, container.id
            )));
        }
        if matches!(signal, libc::SIGKILL | libc::SIGTERM | libc::SIGINT) {
            self.db.update_state(&container.id, |c| {
                c.state.stopped_by_user = true;
                Ok(())
            })?;
        }
        keel_runtime::container::kill(&self.runtime_root(), &container.id, signal, false)
            .map_err(|e| Error::runtime(format!("kill container {}", container.name), e))?;
        self.event(&container, "kill", &[("signal", &signal.to_string())]);
        Ok(container)
    }

    /// Waits until the container's monitor is gone and its init too.
    fn wait_until_stopped(&mut self, container: &Container, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(current) = self.db.find(&container.id) else {
            return true;
        };
        let monitor = (current.state.monitor_pid, current.state.monitor_start);
        let init = (current.state.pid, current.state.pid_start);
        loop {
            let monitor_alive =
                monitor.0 > 0 && keel_runtime::util::process_alive(monitor.0, monitor.1);
            let init_alive = init.0 > 0 && keel_runtime::util::process_alive(init.0, init.1);
            if !monitor_alive && !init_alive {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let watched = if monitor_alive { monitor } else { init };
            wait_exit(watched.0, left.min(Duration::from_millis(250)));
        }
    }

    /// Removes a container: refused while it runs unless `force` (then it
    /// is killed first); `volumes` removes its anonymous volumes too.
    pub fn remove(&mut self, name: &str, force: bool, volumes: bool) -> Result<Container> {
        let mut container = self.find(name)?;
        if container.state.status.is_active() {
            if !force {
                return Err(Error::Conflict(format!(
                    "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                    container.id
                )));
            }
            self.db.update_state(&container.id, |c| {
                c.state.stopped_by_user = true;
                Ok(())
            })?;
            let _ = keel_runtime::container::kill(
                &self.runtime_root(),
                &container.id,
                libc::SIGKILL,
                true,
            );
            if !self.wait_until_stopped(&container, Duration::from_secs(30)) {
                return Err(Error::msg(format!(
                    "container {} did not stop after SIGKILL",
                    container.name
                )));
            }
            container = self.reconcile_id(&container.id, Some(137))?;
        }
        let _lock = self.lock(&container.id)?;
        // Started again meanwhile by another process?
        let container = self.db.find(&container.id)?;
        if container.state.status.is_active() {
            return Err(Error::Conflict(format!(
                "container {} was started while being removed",
                container.name
            )));
        }
        remove_container(&self.layout, &mut self.db, &container, volumes)?;
        self.event(&container, "destroy", &[]);
        Ok(container)
    }

    // ------------------------------------------------------------------
    // reading state

    /// A container by name or id, its state checked against the machine.
    pub fn find(&mut self, name: &str) -> Result<Container> {
        let container = self.db.find(name)?;
        self.reconcile(container)
    }

    /// Removes every container that is not running: their ids and the
    /// bytes of their writable layers (`container prune`).
    pub fn prune_stopped(&mut self) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut freed = 0;
        for c in self.list()? {
            if c.state.status.is_active() {
                continue;
            }
            let size = crate::copy::tree_size(&self.layout.diff(&c.id));
            if self.remove(&c.id, false, false).is_ok() {
                removed.push(c.id);
                freed += size;
            }
        }
        Ok((removed, freed))
    }

    /// Every container, newest first, each checked against the machine.
    pub fn list(&mut self) -> Result<Vec<Container>> {
        let containers = self.db.list()?;
        containers.into_iter().map(|c| self.reconcile(c)).collect()
    }

    fn reconcile_id(&mut self, id: &str, exit_code: Option<i32>) -> Result<Container> {
        let container = self.db.find(id)?;
        self.reconcile_with(container, exit_code)
    }

    /// A state that claims a monitor holds the container while none runs
    /// is corrected: a container still running without its monitor stays
    /// running (it is); one that is gone is recorded as exited and what it
    /// left (runtime state, cgroup, rootfs mount) is removed.
    pub fn reconcile(&mut self, container: Container) -> Result<Container> {
        self.reconcile_with(container, None)
    }

    fn reconcile_with(
        &mut self,
        container: Container,
        exit_code: Option<i32>,
    ) -> Result<Container> {
        if container.state.status == Status::Running {
            self.undo_abandoned_commit_pause(&container.id);
        }
        let state = &container.state;
        let monitor_alive = state.monitor_pid > 0
            && keel_runtime::util::process_alive(state.monitor_pid, state.monitor_start);
        if monitor_alive || !(state.status.is_active() || state.monitor_pid > 0) {
            return Ok(container);
        }
        let init_alive =
            state.pid > 0 && keel_runtime::util::process_alive(state.pid, state.pid_start);
        if init_alive && state.status.is_active() {
            return Ok(container);
        }
        // The monitor is gone, and with it the container: clean up after both.
        let runtime_root = self.runtime_root();
        let cgroup_oom = oom_kill_count(&runtime_root, &container.id);
        let _ = keel_runtime::container::delete(&runtime_root, &container.id, true);
        let _ = crate::rootfs::unmount(&self.layout.rootfs(&container.id));
        if let Err(e) = crate::network::sandbox::cleanup(&self.layout, &mut self.db, &container) {
            tracing::warn!("clean up the network of {}: {e}", container.name);
        }
        let was_running = state.status.is_active();
        self.db.update_state(&container.id, |c| {
            if c.state.monitor_pid != state.monitor_pid {
                // Another start took over meanwhile.
                return Ok(());
            }
            if was_running {
                c.state.status = Status::Exited;
                c.state.exit_code = exit_code.unwrap_or(if cgroup_oom > 0 { 137 } else { 255 });
                c.state.oom_killed |= cgroup_oom > 0;
                c.state.finished_at = Some(crate::logs::now_nanos());
                if exit_code.is_none() {
                    c.state.error = "the container's monitor exited before the container".into();
                }
            } else {
                c.state.error =
                    "the container's monitor exited before the container started".into();
            }
            c.state.pid = 0;
            c.state.monitor_pid = 0;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    /// A commit pauses a running container and records who did; if that
    /// process died before resuming it (killed mid-commit), the container
    /// is resumed here so that the runtime agrees with `Paused: false`.
    fn undo_abandoned_commit_pause(&mut self, id: &str) {
        let record = self.layout.commit_pause(id);
        let Ok(text) = std::fs::read_to_string(&record) else {
            return;
        };
        let mut words = text.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pid)), Some(Ok(start))) = (words.next(), words.next())
            && keel_runtime::util::process_alive(pid as i32, start)
        {
            return;
        }
        tracing::info!("resuming {id}: the commit that paused it is gone");
        if let Err(e) = keel_runtime::container::resume(&self.runtime_root(), id) {
            tracing::debug!("resume {id}: {e}");
        }
        let _ = std::fs::remove_file(&record);
    }

    /// Blocks until the container is not running; its exit code.
    pub fn wait(&mut self, name: &str) -> Result<i32> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Ok(container.state.exit_code);
        }
        if let Ok((_, mut stream)) = self.attach(name, Hello::default()) {
            loop {
                match attach::read_frame(&mut stream) {
                    Ok(Some(Frame::Exit(info))) => return Ok(info.exit_code),
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
        // The monitor went away without saying: what does the state say?
        let container = self.reconcile_id(&container.id, None)?;
        Ok(container.state.exit_code)
    }

    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<()> {
        let container = self.find(name)?;
        let new_name = crate::spec::validate_container_name(new_name)?;
        if container.name == new_name {
            return Err(Error::invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        self.db.rename(&container.id, &new_name)?;
        crate::network::rename(&mut self.db, &container.id, &new_name)?;
        if !crate::network::endpoints_of(&mut self.db, &container)?.is_empty() {
            crate::network::sync(&self.layout, &mut self.db)?;
        }
        let renamed = Container {
            name: new_name,
            ..container.clone()
        };
        self.event(
            &renamed,
            "rename",
            &[("oldName", &format!("/{}", container.name))],
        );
        Ok(())
    }

    pub fn pause(&mut self, name: &str) -> Result<Container> {
        let container = self.find(name)?;
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                container.id
            )));
        }
        keel_runtime::container::pause(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime(format!("pause {}", container.name), e))?;
        self.event(&container, "pause", &[]);
        self.db.update_state(&container.id, |c| {
            c.state.status = Status::Paused;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    pub fn unpause(&mut self, name: &str) -> Result<Container> {
        let container = self.find(name)?;
        if container.state.status != Status::Paused {
            return Err(Error::Conflict(format!(
                "Container {} is not paused",
                container.id
            )));
        }
        keel_runtime::container::resume(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime(format!("unpause {}", container.name), e))?;
        self.event(&container, "unpause", &[]);
        self.db.update_state(&container.id, |c| {
            c.state.status = Status::Running;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    /// The host pids of the container's processes.
    pub fn pids(&mut self, name: &str) -> Result<Vec<i32>> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                container.id
            )));
        }
        keel_runtime::container::pids(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime(format!("list the processes of {}", container.name), e))
    }

    /// The container's cgroup statistics (memory, CPU, pids, block I/O).
    pub fn stats(
        &mut self,
        name: &str,
    ) -> Result<(Container, keel_runtime::cgroups::stats::Stats)> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Ok((container, Default::default()));
        }
        let dir = keel_runtime::state::ContainerDir::new(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime("read the runtime's state", e))?;
        let state = dir
            .load()
            .map_err(|e| Error::runtime(format!("read the state of {}", container.name), e))?;
        let stats = state
            .cgroup
            .stats()
            .map_err(|e| Error::runtime(format!("read the cgroup of {}", container.name), e))?;
        Ok((container, stats))
    }

    /// `update`: new limits for a container (applied now if it runs, and
    /// kept for its next start), and a new restart policy.
    pub fn update(&mut self, name: &str, update: &Update) -> Result<Container> {
        let container = self.find(name)?;
        let mut spec = container.spec.clone();
        let r = &mut spec.resources;
        if update.memory.is_some() {
            r.memory = update.memory;
        }
        if update.memory_swap.is_some() {
            r.memory_swap = update.memory_swap;
        }
        if update.memory_reservation.is_some() {
            r.memory_reservation = update.memory_reservation;
        }
        if update.nano_cpus.is_some() {
            r.nano_cpus = update.nano_cpus;
        }
        if update.cpu_shares.is_some() {
            r.cpu_shares = update.cpu_shares;
        }
        if update.cpuset_cpus.is_some() {
            r.cpuset_cpus = update.cpuset_cpus.clone();
        }
        if update.pids_limit.is_some() {
            r.pids_limit = update.pids_limit;
        }
        if let Some(restart) = &update.restart {
            if spec.auto_remove && *restart != crate::spec::RestartPolicy::No {
                return Err(Error::invalid(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            spec.restart = restart.clone();
        }
        // The whole config is built again: a limit the kernel would refuse
        // (or that contradicts another) fails here, before anything changes.
        let run = self.run_config(&container.id)?;
        let user = users::ExecUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/".into(),
        };
        let resolved: Vec<ResolvedMount> = container.mounts.iter().map(resolved_mount).collect();
        let config = build_config(
            &self.layout,
            &container.id,
            &spec,
            &run,
            &user,
            &resolved,
            &host_devices(&spec)?,
            None,
        )?;
        if container.state.status.is_active() {
            let mut resources = config.linux.and_then(|l| l.resources).unwrap_or_default();
            resources.devices.clear();
            keel_runtime::container::update(&self.runtime_root(), &container.id, &resources)
                .map_err(|e| Error::runtime(format!("update {}", container.name), e))?;
        }
        self.db.update_state(&container.id, |c| {
            c.spec = spec;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    pub fn run_config(&self, id: &str) -> Result<RunConfig> {
        let path = self.layout.file(id, "run.json");
        let data =
            std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        serde_json::from_slice(&data).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }

    /// The process `exec` runs: the container's environment, user and
    /// working directory, with the request's changes.
    pub fn exec_process(
        &mut self,
        name: &str,
        request: &ExecRequest,
    ) -> Result<(Container, keel_runtime::spec::Process)> {
        let container = self.find(name)?;
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                container.id
            )));
        }
        let config = keel_runtime::spec::Spec::load(&self.layout.bundle(&container.id))
            .map_err(|e| Error::runtime("read the container's config", e))?;
        let mut process = config.process.clone().unwrap_or_default();
        process.args = request.args.clone();
        process.terminal = request.tty;
        process.console_size = None;
        // docker's exec: a terminal gets TERM=xterm unless the container's
        // environment has a TERM; the request's own -e comes last.
        if request.tty && !process.env.iter().any(|e| e.starts_with("TERM=")) {
            process.env.push("TERM=xterm".into());
        }
        oci::merge_env(&mut process.env, request.env.iter().cloned());
        if let Some(workdir) = &request.workdir {
            process.cwd = workdir.clone();
        }
        if let Some(user) = &request.user {
            let rootfs = self.layout.rootfs(&container.id);
            let passwd =
                crate::rootfs::read_in_root(&rootfs, "/etc/passwd", 1 << 20)?.unwrap_or_default();
            let group =
                crate::rootfs::read_in_root(&rootfs, "/etc/group", 1 << 20)?.unwrap_or_default();
            let resolved = users::resolve(
                user,
                &[],
                &users::parse_passwd(&String::from_utf8_lossy(&passwd)),
                &users::parse_group(&String::from_utf8_lossy(&group)),
            )?;
            process.user.uid = resolved.uid;
            process.user.gid = resolved.gid;
            process.user.additional_gids = resolved.additional_gids;
        }
        if request.privileged {
            let all = oci::bounding_capabilities();
            process.capabilities = Some(keel_runtime::spec::Capabilities {
                bounding: Some(all.clone()),
                effective: Some(all.clone()),
                inheritable: Some(Vec::new()),
                permitted: Some(all),
                ambient: None,
            });
        }
        Ok((container, process))
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

/// The container's user resolved in the image's layers.
fn resolve_user_in_layers(
    layers: &[PathBuf],
    spec: &ContainerSpec,
    image: &ImageConfig,
) -> Result<users::ExecUser> {
    let user = spec
        .user
        .clone()
        .or_else(|| image.config.as_ref().and_then(|c| c.user.clone()))
        .unwrap_or_default();
    let passwd =
        crate::rootfs::read_image_file(layers, "/etc/passwd", 1 << 20)?.unwrap_or_default();
    let group = crate::rootfs::read_image_file(layers, "/etc/group", 1 << 20)?.unwrap_or_default();
    users::resolve(
        &user,
        &spec.group_add,
        &users::parse_passwd(&String::from_utf8_lossy(&passwd)),
        &users::parse_group(&String::from_utf8_lossy(&group)),
    )
}

/// The container's user resolved in its mounted root filesystem.
pub fn resolve_user_in_rootfs(
    rootfs: &Path,
    spec: &ContainerSpec,
    image: &ImageConfig,
) -> Result<users::ExecUser> {
    let user = spec
        .user
        .clone()
        .or_else(|| image.config.as_ref().and_then(|c| c.user.clone()))
        .unwrap_or_default();
    let passwd = crate::rootfs::read_in_root(rootfs, "/etc/passwd", 1 << 20)?.unwrap_or_default();
    let group = crate::rootfs::read_in_root(rootfs, "/etc/group", 1 << 20)?.unwrap_or_default();
    users::resolve(
        &user,
        &spec.group_add,
        &users::parse_passwd(&String::from_utf8_lossy(&passwd)),
        &users::parse_group(&String::from_utf8_lossy(&group)),
    )
}

pub fn resolved_mount(mount: &ContainerMount) -> ResolvedMount {
    ResolvedMount {
        kind: mount.kind,
        source: mount
            .source
            .clone()
            .or_else(|| (mount.kind != MountKind::Tmpfs).then(|| PathBuf::from("/nonexistent"))),
        target: mount.target.clone(),
        read_only: mount.read_only,
        tmpfs_size: mount.tmpfs_size,
        tmpfs_mode: mount.tmpfs_mode,
        propagation: mount.propagation.clone(),
    }
}

/// The container's OCI config.
#[allow(clippy::too_many_arguments)]
pub fn build_config(
    layout: &Layout,
    id: &str,
    spec: &ContainerSpec,
    run: &RunConfig,
    user: &users::ExecUser,
    mounts: &[ResolvedMount],
    devices: &[keel_runtime::spec::Device],
    network_namespace: Option<&str>,
) -> Result<keel_runtime::spec::Spec> {
    let rootfs = layout.rootfs(id);
    let hostname_file = layout.file(id, "hostname");
    let hosts_file = layout.file(id, "hosts");
    let resolv_conf = layout.file(id, "resolv.conf");
    let cgroups_path = format!("{}/{id}", run.cgroup_parent.trim_end_matches('/'));
    oci::build(&oci::Inputs {
        id,
        spec,
        image: &run.image_config,
        user,
        rootfs: &rootfs,
        hostname_file: &hostname_file,
        hosts_file: &hosts_file,
        resolv_conf: &resolv_conf,
        mounts,
        devices,
        cgroups_path: &cgroups_path,
        network_namespace,
        init_binary: run.init_binary.as_deref(),
        available_capabilities: Some(&oci::bounding_capabilities()),
    })
}

/// `--device` entries read from the host (type, major, minor).
pub fn host_devices(spec: &ContainerSpec) -> Result<Vec<keel_runtime::spec::Device>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devices = Vec::new();
    for device in &spec.devices {
        let meta = std::fs::metadata(&device.host_path).map_err(|e| {
            Error::invalid(format!(
                "error gathering device information while adding custom device \"{}\": {e}",
                device.host_path
            ))
        })?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(Error::invalid(format!(
                "error gathering device information while adding custom device \"{}\": not a device node",
                device.host_path
            )));
        };
        let rdev = meta.rdev();
        devices.push(keel_runtime::spec::Device {
            kind: kind.to_string(),
            path: device.container_path.clone(),
            major: libc::major(rdev) as i64,
            minor: libc::minor(rdev) as i64,
            file_mode: Some(meta.mode() & 0o777),
            uid: Some(0),
            gid: Some(0),
        });
    }
    Ok(devices)
}

/// The container's `/etc/hosts` (docker's): loopback names, its
/// addresses (or 127.0.1.1) with its hostname, then `--add-host`.
fn hosts_file(spec: &ContainerSpec, hostname: &str, addresses: &[IpAddr]) -> String {
    let mut text = if spec.network == NetworkMode::Host {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        let mut text = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
             ff02::2\tip6-allrouters\n",
        );
        if addresses.is_empty() {
            text.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
        for ip in addresses {
            text.push_str(&format!("{ip}\t{hostname}\n"));
        }
        text
    };
    for (name, ip) in &spec.extra_hosts {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    text
}

/// The container's `/etc/resolv.conf`: the host's (without loopback
/// resolvers a container cannot reach) or `--dns`; on a user-defined
/// network, keel's name server in the container (which forwards to
/// those).
fn resolv_conf(spec: &ContainerSpec, embedded_dns: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut text = String::new();
    if embedded_dns {
        text.push_str(&format!("nameserver {}\n", keel_net::dns::ADDRESS));
        let search: Vec<String> = if spec.dns_search.is_empty() {
            host.lines()
                .filter_map(|l| l.strip_prefix("search"))
                .flat_map(|l| l.split_whitespace().map(str::to_string))
                .collect()
        } else {
            spec.dns_search.clone()
        };
        if !search.is_empty() {
            text.push_str(&format!("search {}\n", search.join(" ")));
        }
        text.push_str("options ndots:0\n");
        return text;
    }
    if spec.dns.is_empty() {
        for line in host.lines() {
            let loopback = line
                .strip_prefix("nameserver")
                .map(str::trim)
                .is_some_and(|ns| ns.starts_with("127.") || ns == "::1");
            // A loopback resolver of the host is not reachable from a
            // container's own network namespace.
            if loopback && spec.network != NetworkMode::Host {
                continue;
            }
            if !spec.dns_search.is_empty() && line.starts_with("search") {
                continue;
            }
            text.push_str(line);
            text.push('\n');
        }
    } else {
        for line in host.lines() {
            let replaced_search = line.starts_with("search") && !spec.dns_search.is_empty();
            if !line.starts_with("nameserver") && !replaced_search {
                text.push_str(line);
                text.push('\n');
            }
        }
        for server in &spec.dns {
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    if !spec.dns_search.is_empty() {
        text.push_str(&format!("search {}\n", spec.dns_search.join(" ")));
    }
    text
}

/// Writes a container's `/etc/hosts` and `/etc/resolv.conf` for a start:
/// its addresses on its networks, keel's name server on user-defined
/// ones; with `container:ID`, the other container's files.
pub fn write_network_files(
    layout: &Layout,
    container: &Container,
    sandbox: &crate::network::sandbox::Sandbox,
) -> Result<()> {
    let id = &container.id;
    if let NetworkMode::Container(other) = &container.spec.network {
        for name in ["hosts", "resolv.conf", "hostname"] {
            let from = layout.file(other, name);
            if let Ok(data) = std::fs::read(&from) {
                write_file(&layout.file(id, name), &data)?;
            }
        }
        return Ok(());
    }
    let hostname = oci::hostname(&container.spec, id);
    let addresses: Vec<IpAddr> = sandbox
        .endpoints
        .iter()
        .flat_map(|e| [e.ipv4, e.ipv6])
        .flatten()
        .collect();
    write_file(
        &layout.file(id, "hosts"),
        hosts_file(&container.spec, &hostname, &addresses).as_bytes(),
    )?;
    write_file(
        &layout.file(id, "resolv.conf"),
        resolv_conf(&container.spec, sandbox.dns.is_some()).as_bytes(),
    )
}

pub(crate) fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::io(format!("write {}", path.display()), e))
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
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: a new fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
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
