//! The monitor: one small keel process per running container, the job
//! conmon does for podman. It is a session leader and a child subreaper;
//! it mounts the container's root filesystem, writes its OCI config,
//! creates and starts it through keel-runtime (as a library), holds its
//! stdio (pipes, or the pty master for `-t`), writes its json log, serves
//! attach clients on its socket, waits for it, records how it ended, applies
//! the restart policy, and cleans up (`--rm`). One thread, one poll loop.
//!
//! It reports to the process that started it on an inherited fd, one JSON
//! line: created (waiting for an attach client to start it), started, or
//! failed with the reason.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_runtime::container::CreateOptions;

use crate::attach::{self, ExitInfo, Frame, Hello};
use crate::db::{Container, Db, Status};
use crate::engine::{self, Report, RunConfig};
use crate::error::{Error, Result};
use crate::logs::{self, Stream};
use crate::paths::Layout;
use crate::spec::{MountKind, RestartPolicy};

pub struct Options {
    pub layout: Layout,
    pub id: String,
    /// Where to write the report (inherited from the starting process).
    pub report_fd: Option<RawFd>,
    /// Create, report, and start only when an attach client asks.
    pub wait_for_attach: bool,
}

/// A client's unsent output is capped; a client that falls this far
/// behind is dropped rather than slowing the container down.
const CLIENT_BUFFER_LIMIT: usize = 8 << 20;
/// After the container's init exits, output is drained this long at most
/// (a process outside its pid namespace could hold the pipes forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// An attach client has this long to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    hello: Option<Hello>,
    closed: bool,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        let _ = stream.set_nonblocking(true);
        Client {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            hello: None,
            closed: false,
        }
    }

    fn send(&mut self, frame: &Frame) {
        if self.closed {
            return;
        }
        self.output.extend(frame.encode());
        if self.output.len() > CLIENT_BUFFER_LIMIT {
            tracing::warn!("an attach client fell behind; dropping it");
            self.closed = true;
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.output.is_empty() && !self.closed {
            match self.stream.write(&self.output) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    fn wants(&self, stream: Stream) -> bool {
        self.hello.as_ref().is_some_and(|h| match stream {
            Stream::Stdout => h.stdout,
            Stream::Stderr => h.stderr,
        })
    }
}

/// The container while it runs.
struct Running {
    pid: i32,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdin_buffer: Vec<u8>,
    stdin_closing: bool,
    log: logs::Writer,
    oom_before: u64,
    started: Instant,
    exit_status: Option<i32>,
    exited_at: Option<Instant>,
    health: Option<Checker>,
}

/// The health check of a running container.
struct Checker {
    check: crate::health::Check,
    next: Instant,
    probe: Option<Probe>,
    health: crate::db::Health,
}

/// A health probe being run (by a forked child that execs it in the
/// container).
struct Probe {
    pid: i32,
    output: Option<OwnedFd>,
    text: Vec<u8>,
    start: String,
    deadline: Instant,
    timed_out: bool,
}

struct Monitor {
    layout: Layout,
    /// Open while the monitor changes the state; closed while the
    /// container just runs.
    db: Option<Db>,
    id: String,
    listener: UnixListener,
    clients: Vec<Client>,
    signals: OwnedFd,
    report: Option<File>,
    /// The container's network while it runs (its namespace, endpoints,
    /// name server).
    sandbox: Option<crate::network::sandbox::Sandbox>,
    /// Endpoints went and the firewall is not made again yet.
    network_dirty: bool,
}

/// The monitor's main: returns its exit code.
pub fn main(options: Options) -> i32 {
    // One malloc arena: the short threads that make and enter the
    // container's network namespace would otherwise each leave an arena
    // of their own behind (~70 kB of every monitor's private memory).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    // SAFETY: the report fd was handed to us by the starting process.
    let mut report = options.report_fd.map(|fd| unsafe { File::from_raw_fd(fd) });
    let monitor = match Monitor::new(&options, report.take()) {
        Ok(monitor) => monitor,
        Err((e, mut report)) => {
            if let Some(report) = report.as_mut() {
                send_report(report, &Report::Failed(e.to_string()));
            }
            return 1;
        }
    };
    monitor.run(options.wait_for_attach)
}

fn send_report(file: &mut File, report: &Report) {
    let mut line = serde_json::to_vec(report).expect("reports serialize");
    line.push(b'\n');
    let _ = file.write_all(&line);
}

impl Monitor {
    fn new(
        options: &Options,
        report: Option<File>,
    ) -> std::result::Result<Monitor, (Error, Option<File>)> {
        // SAFETY: plain prctl and signal calls on our own process.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
        let setup = || -> Result<(Db, UnixListener, OwnedFd)> {
            let signals = signal_fd()?;
            let db = Db::open(&options.layout.root)?;
            let listener = attach::bind(&options.layout.attach_socket(&options.id))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| Error::io("listen for attach clients", e))?;
            Ok((db, listener, signals))
        };
        match setup() {
            Ok((db, listener, signals)) => Ok(Monitor {
                layout: options.layout.clone(),
                db: Some(db),
                id: options.id.clone(),
                listener,
                clients: Vec::new(),
                signals,
                report,
                sandbox: None,
                network_dirty: false,
            }),
            Err(e) => Err((e, report)),
        }
    }

    fn db(&mut self) -> Result<&mut Db> {
        if self.db.is_none() {
            self.db = Some(Db::open(&self.layout.root)?);
        }
        Ok(self.db.as_mut().expect("opened above"))
    }

    fn event(&self, container: &Container, action: &str, extra: &[(&str, &str)]) {
        let mut attributes = vec![
            ("name", container.name.as_str()),
            ("image", container.image.as_str()),
        ];
        attributes.extend_from_slice(extra);
        crate::events::record(
            &self.layout.root,
            "container",
            action,
            &self.id,
            &attributes,
        );
    }

    /// A state change of our container (see [`Db::update_state`]).
    fn update<T>(&mut self, change: impl FnOnce(&mut Container) -> Result<T>) -> Result<T> {
        let id = self.id.clone();
        self.db()?.update_state(&id, change)
    }

    fn release_db(&mut self) {
        self.db = None;
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
        release_unused_stack();
    }

    fn report(&mut self, report: Report) {
        if let Some(mut file) = self.report.take() {
            send_report(&mut file, &report);
        }
    }

    fn runtime_root(&self) -> PathBuf {
        self.layout.runtime_root()
    }

    fn run(mut self, wait_for_attach: bool) -> i32 {
        let me = std::process::id() as i32;
        let my_start = keel_runtime::util::proc_start_time(me).unwrap_or(0);
        let registered = self.update(|c| {
            c.state.monitor_pid = me;
            c.state.monitor_start = my_start;
            c.state.stopped_by_user = false;
            c.state.error.clear();
            Ok(c.clone())
        });
        let mut container = match registered {
            Ok(container) => container,
            Err(e) => {
                self.report(Report::Failed(e.to_string()));
                return 1;
            }
        };
        let mut first = true;
        let mut removed = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut running = match self.create(&container) {
                Ok(running) => running,
                Err(e) => {
                    self.start_failed(&e, first);
                    return 1;
                }
            };
            if first && wait_for_attach {
                self.report(Report::Created);
                if !self.wait_for_start_client() {
                    // Nobody came to start it (the starting process died).
                    self.teardown();
                    self.release();
                    return 1;
                }
            }
            if let Err(e) = keel_runtime::container::start(&self.runtime_root(), &self.id) {
                self.teardown();
                self.start_failed(&Error::runtime("start the container", e), first);
                return 1;
            }
            let pid_start = keel_runtime::util::proc_start_time(running.pid).unwrap_or(0);
            let pid = running.pid;
            running.health = read_run_config(&self.layout, &self.id)
                .ok()
                .and_then(|run| crate::health::check_of(&run.image_config, &container.spec))
                .map(|check| Checker {
                    next: Instant::now() + Duration::from_millis(check.interval_ms),
                    check,
                    probe: None,
                    health: crate::health::starting(),
                });
            let health = running.health.as_ref().map(|c| c.health.clone());
            let marked = self.update(|c| {
                c.state.health = health;
                c.state.status = Status::Running;
                c.state.pid = pid;
                c.state.pid_start = pid_start;
                c.state.started_at = Some(logs::now_nanos());
                c.state.finished_at = None;
                c.state.exit_code = 0;
                c.state.oom_killed = false;
                c.state.error.clear();
                if !first {
                    c.state.restart_count += 1;
                }
                Ok(())
            });
            // While it runs the monitor needs no database: close it, and
            // give back what it and the start-up took.
            self.release_db();
            if let Err(e) = marked {
                tracing::warn!("record the start: {e}");
            }
            if first {
                self.report(Report::Started);
            }
            self.broadcast(&Frame::Started);
            self.event(&container, "start", &[]);
            let exit = self.watch(&mut running);
            let oom = self.oom_count() > running.oom_before;
            let ran_for = running.started.elapsed();
            drop(running);
            self.release_container();
            let exit_code = exit;
            let recorded = self.update(|c| {
                c.state.status = Status::Exited;
                c.state.exit_code = exit_code;
                c.state.oom_killed = oom;
                c.state.pid = 0;
                c.state.finished_at = Some(logs::now_nanos());
                Ok(c.clone())
            });
            if oom {
                self.event(&container, "oom", &[]);
            }
            self.event(&container, "die", &[("exitCode", &exit_code.to_string())]);
            let restart = recorded
                .as_ref()
                .is_ok_and(|c| should_restart(c, exit_code));
            // --rm: gone before the exit is reported, so that `keel run
            // --rm` returns once it is (as docker's).
            if !restart && container.spec.auto_remove {
                self.release();
                self.auto_remove(&container);
                removed = true;
            }
            self.broadcast(&Frame::Exit(ExitInfo {
                exit_code,
                oom_killed: oom,
            }));
            self.close_clients();
            // The firewall last: removing ports waits for an RCU grace
            // period, and their endpoints are already free.
            self.sync_network();
            container = match recorded {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("record the exit: {e}");
                    return 1;
                }
            };
            if !restart {
                break;
            }
            // docker's backoff: doubling from 100 ms, reset after 10 s up.
            if ran_for >= Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            let _ = self.update(|c| {
                c.state.status = Status::Restarting;
                Ok(())
            });
            if !self.sleep_unless_stopped(backoff) {
                let _ = self.update(|c| {
                    c.state.status = Status::Exited;
                    Ok(())
                });
                break;
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
            first = false;
        }
        if !removed {
            self.release();
            if container.spec.auto_remove {
                self.auto_remove(&container);
            }
        }
        0
    }

    /// `--rm`: removes the container (its files, state, anonymous volumes).
    fn auto_remove(&mut self, container: &Container) {
        let lock = self.lock();
        let layout = self.layout.clone();
        let removed = self
            .db()
            .and_then(|db| engine::remove_container(&layout, db, container, true));
        match removed {
            Ok(()) => self.event(container, "destroy", &[]),
            Err(e) => tracing::warn!("remove the container: {e}"),
        }
        drop(lock);
    }

    /// Forgets being the container's monitor.
    fn release(&mut self) {
        let me = std::process::id() as i32;
        let _ = self.update(|c| {
            if c.state.monitor_pid == me {
                c.state.monitor_pid = 0;
                c.state.monitor_start = 0;
            }
            Ok(())
        });
        let _ = std::fs::remove_file(self.layout.attach_socket(&self.id));
    }

    fn lock(&self) -> Option<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.layout.lock(&self.id))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }

    fn start_failed(&mut self, error: &Error, first: bool) {
        let message = match error {
            Error::Runtime { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        let me = std::process::id() as i32;
        let _ = self.update(|c| {
            c.state.error = message.clone();
            if !first {
                c.state.status = Status::Exited;
            }
            if c.state.monitor_pid == me {
                c.state.monitor_pid = 0;
                c.state.monitor_start = 0;
            }
            // docker: 127 for a command not found, 126 if it cannot run.
            c.state.exit_code = crate::error::start_exit_code(&message);
            Ok(())
        });
        self.broadcast(&Frame::Error(message.clone()));
        self.report(Report::Failed(message));
        let _ = std::fs::remove_file(self.layout.attach_socket(&self.id));
    }

    /// Mounts the root filesystem, writes the config, creates the
    /// container with its stdio.
    fn create(&mut self, container: &Container) -> Result<Running> {
        let run: RunConfig = read_run_config(&self.layout, &self.id)?;
        let rootfs = self.layout.rootfs(&self.id);
        if !crate::paths::is_mount_point(&rootfs) {
            crate::rootfs::mount_overlay(
                &run.layers,
                &self.layout.diff(&self.id),
                &self.layout.work(&self.id),
                &rootfs,
            )?;
        }
        match self.create_on_rootfs(container, &run) {
            Ok(running) => Ok(running),
            Err(e) => {
                self.teardown();
                Err(e)
            }
        }
    }

    fn create_on_rootfs(&mut self, container: &Container, run: &RunConfig) -> Result<Running> {
        let rootfs = self.layout.rootfs(&self.id);
        self.copy_up_volumes(container)?;
        let user = engine::resolve_user_in_rootfs(&rootfs, &container.spec, &run.image_config)?;
        let mounts: Vec<_> = container
            .mounts
            .iter()
            .map(engine::resolved_mount)
            .collect();
        let devices = engine::host_devices(&container.spec)?;
        let publish = ports_to_publish(container, run);
        let layout = self.layout.clone();
        let sandbox = crate::network::sandbox::setup(&layout, self.db()?, container, &publish)?;
        let namespace = sandbox.path.clone();
        self.sandbox = Some(sandbox);
        engine::write_network_files(
            &self.layout,
            container,
            self.sandbox.as_ref().expect("set above"),
        )?;
        let config = engine::build_config(
            &self.layout,
            &self.id,
            &container.spec,
            run,
            &user,
            &mounts,
            &devices,
            namespace.as_deref(),
        )?;
        let bundle = self.layout.bundle(&self.id);
        let config_path = bundle.join("config.json");
        keel_runtime::util::write_atomic(
            &config_path,
            &serde_json::to_vec_pretty(&config).expect("configs serialize"),
        )
        .map_err(|e| Error::runtime("write the container's config", e))?;
        let options = CreateOptions {
            id: self.id.clone(),
            bundle,
            ..CreateOptions::default()
        };
        let (max_size, max_file) = logs::limits(&container.spec.log);
        let log = logs::Writer::open(&self.layout.log(&self.id), max_size, max_file)?;
        let runtime_root = self.runtime_root();
        // A previous run's state, if the monitor before us was killed.
        let _ = keel_runtime::container::delete(&runtime_root, &self.id, true);
        let mut running = Running {
            pid: 0,
            stdout: None,
            stderr: None,
            pty: None,
            stdin: None,
            stdin_buffer: Vec::new(),
            stdin_closing: false,
            log,
            oom_before: 0,
            started: Instant::now(),
            exit_status: None,
            exited_at: None,
            health: None,
        };
        if container.spec.tty {
            let (proxy, end) = keel_runtime::console::Proxy::pair()
                .map_err(|e| Error::runtime("make the console socket", e))?;
            running.pid =
                keel_runtime::container::create_with_console_end(&runtime_root, &options, end)
                    .map_err(|e| Error::runtime("create the container", e))?;
            let master = proxy
                .receive_master()
                .map_err(|e| Error::runtime("receive the container's terminal", e))?;
            set_nonblocking(master.as_raw_fd());
            running.pty = Some(master);
        } else {
            let (stdout_read, stdout_write) = pipe()?;
            let (stderr_read, stderr_write) = pipe()?;
            let (stdin_read, stdin_write) = if container.spec.interactive {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let stdin_fd = match &stdin_read {
                Some(fd) => fd.as_raw_fd(),
                None => open_dev_null()?.into_raw(),
            };
            let created = with_stdio(
                stdin_fd,
                stdout_write.as_raw_fd(),
                stderr_write.as_raw_fd(),
                || keel_runtime::container::create(&runtime_root, &options),
            );
            if stdin_read.is_none() {
                // SAFETY: the /dev/null fd opened above, ours to close.
                unsafe { libc::close(stdin_fd) };
            }
            running.pid = created.map_err(|e| Error::runtime("create the container", e))?;
            drop(stdout_write);
            drop(stderr_write);
            drop(stdin_read);
            set_nonblocking(stdout_read.as_raw_fd());
            set_nonblocking(stderr_read.as_raw_fd());
            running.stdout = Some(stdout_read);
            running.stderr = Some(stderr_read);
            if let Some(w) = &stdin_write {
                set_nonblocking(w.as_raw_fd());
            }
            running.stdin = stdin_write;
        }
        running.oom_before = self.oom_count();
        Ok(running)
    }

    /// A new volume gets what the image has at its target, once.
    fn copy_up_volumes(&mut self, container: &Container) -> Result<()> {
        let rootfs = self.layout.rootfs(&self.id);
        let pending: Vec<_> = container
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume && m.copy_up)
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for mount in &pending {
            let Some(data) = &mount.source else { continue };
            let empty = std::fs::read_dir(data)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                continue;
            }
            // The image's directory, found without leaving the rootfs.
            if let Some(dir) = crate::rootfs::open_dir_in_root(&rootfs, &mount.target)? {
                let from = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
                crate::copy::copy_tree(&from, data)?;
            }
        }
        let id = self.id.clone();
        self.db()?.update_state(&id, |c| {
            for m in c.mounts.iter_mut() {
                m.copy_up = false;
            }
            Ok(())
        })
    }

    fn oom_count(&self) -> u64 {
        keel_runtime::state::ContainerDir::new(&self.runtime_root(), &self.id)
            .and_then(|dir| dir.load())
            .map(|state| state.cgroup.oom_kill_count())
            .unwrap_or(0)
    }

    /// Removes the runtime's state and cgroup, the container's network,
    /// and unmounts the rootfs.
    fn teardown(&mut self) {
        self.release_container();
        self.sync_network();
    }

    /// [`Monitor::teardown`] but the firewall, which
    /// [`Monitor::sync_network`] makes once the exit is reported.
    fn release_container(&mut self) {
        let _ = keel_runtime::container::delete(&self.runtime_root(), &self.id, true);
        if let Some(sandbox) = self.sandbox.take() {
            let id = self.id.clone();
            match self.db() {
                Ok(db) => {
                    self.network_dirty |= crate::network::sandbox::release(db, &id, sandbox);
                }
                Err(e) => tracing::warn!("tear down the network: {e}"),
            }
        }
        let _ = crate::rootfs::unmount(&self.layout.rootfs(&self.id));
    }

    /// Makes the firewall again after the container's endpoints went.
    fn sync_network(&mut self) {
        if !std::mem::take(&mut self.network_dirty) {
            return;
        }
        let layout = self.layout.clone();
        if let Err(e) = self.db().and_then(|db| crate::network::sync(&layout, db)) {
            tracing::warn!("render the firewall: {e}");
        }
    }

    /// Waits for the attach client that will start the container; false if
    /// the starting process went away first.
    fn wait_for_start_client(&mut self) -> bool {
        let deadline = Instant::now() + HELLO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = vec![libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(report) = &self.report {
                fds.push(libc::pollfd {
                    fd: report.as_raw_fd(),
                    events: 0,
                    revents: 0,
                });
            }
            for client in &self.clients {
                fds.push(libc::pollfd {
                    fd: client.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            // SAFETY: poll on our pollfd array.
            unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    left.as_millis() as i32,
                )
            };
            if self.report.is_some() && fds[1].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                return false;
            }
            self.accept_clients();
            self.read_clients(None);
            if self
                .clients
                .iter()
                .any(|c| c.hello.as_ref().is_some_and(|h| h.start))
            {
                return true;
            }
        }
    }

    fn accept_clients(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            self.clients.push(Client::new(stream));
        }
    }

    /// Reads what clients sent: hellos, stdin, sizes.
    fn read_clients(&mut self, mut running: Option<&mut Running>) {
        let mut buffer = [0u8; 32 * 1024];
        for client in self.clients.iter_mut() {
            loop {
                match client.stream.read(&mut buffer) {
                    Ok(0) => {
                        client.closed = true;
                        break;
                    }
                    Ok(n) => client.input.extend_from_slice(&buffer[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        client.closed = true;
                        break;
                    }
                }
            }
            loop {
                match Frame::decode(&client.input) {
                    Ok(Some((frame, used))) => {
                        client.input.drain(..used);
                        match frame {
                            Frame::Hello(hello) => client.hello = Some(hello),
                            Frame::Stdin(data)
                                if client.hello.as_ref().is_some_and(|h| h.stdin) =>
                            {
                                if let Some(running) = running.as_deref_mut() {
                                    running.stdin_buffer.extend(data);
                                }
                            }
                            Frame::StdinClose => {
                                if let Some(running) = running.as_deref_mut() {
                                    running.stdin_closing = true;
                                }
                            }
                            Frame::Resize { rows, cols } => {
                                if let Some(pty) = running.as_deref().and_then(|r| r.pty.as_ref()) {
                                    resize(pty.as_raw_fd(), rows, cols);
                                }
                            }
                            _ => {}
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        client.closed = true;
                        break;
                    }
                }
            }
        }
        self.clients.retain(|c| !c.closed);
    }

    fn broadcast(&mut self, frame: &Frame) {
        for client in self.clients.iter_mut().filter(|c| c.hello.is_some()) {
            client.send(frame);
        }
    }

    /// Sends what is left to clients (briefly) and hangs up on them.
    fn close_clients(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for client in self.clients.iter_mut() {
            let _ = client.stream.set_nonblocking(false);
            let _ = client.stream.set_write_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ));
            if !client.closed && !client.output.is_empty() {
                let _ = client.stream.write_all(&client.output);
            }
            let _ = client.stream.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
    }

    /// Sleeps `delay` before a restart; false if a user stopped the
    /// container meanwhile (or it was removed).
    fn sleep_unless_stopped(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let id = self.id.clone();
            match self.db().and_then(|db| db.find(&id)) {
                Ok(c) if !c.state.stopped_by_user => {}
                _ => return false,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // Attach clients of a restarting container are turned away.
            self.accept_clients();
            self.close_clients();
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    /// The poll loop while the container runs: output to the log and the
    /// clients, stdin to the container, reaping. Returns the exit code.
    fn watch(&mut self, running: &mut Running) -> i32 {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            if let Some(status) = running.exit_status {
                let outputs_open =
                    running.stdout.is_some() || running.stderr.is_some() || running.pty.is_some();
                let drained_long = running
                    .exited_at
                    .is_some_and(|t| t.elapsed() >= DRAIN_AFTER_EXIT);
                if !outputs_open || drained_long {
                    let _ = running.log.flush();
                    return keel_runtime::process::exit_code(status);
                }
            }
            // While the disk is full the container's output waits in its
            // pipe (until it exits: then it is drained and dropped).
            let log_wait = if running.exit_status.is_some() {
                None
            } else {
                running.log.full_wait()
            };
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut tags: Vec<Tag> = Vec::new();
            let mut add = |fd: RawFd, events: i16, tag: Tag| {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tags.push(tag);
            };
            add(self.signals.as_raw_fd(), libc::POLLIN, Tag::Signal);
            add(self.listener.as_raw_fd(), libc::POLLIN, Tag::Listener);
            if let Some(fd) = &running.stdout
                && log_wait.is_none()
            {
                add(fd.as_raw_fd(), libc::POLLIN, Tag::Output(Stream::Stdout));
            }
            if let Some(fd) = &running.stderr
                && log_wait.is_none()
            {
                add(fd.as_raw_fd(), libc::POLLIN, Tag::Output(Stream::Stderr));
            }
            if let Some(fd) = &running.pty {
                let events = if running.stdin_buffer.is_empty() {
                    libc::POLLIN
                } else {
                    libc::POLLIN | libc::POLLOUT
                };
                add(fd.as_raw_fd(), events, Tag::Pty);
            }
            if let Some(fd) = &running.stdin
                && !running.stdin_buffer.is_empty()
            {
                add(fd.as_raw_fd(), libc::POLLOUT, Tag::Stdin);
            }
            for (i, client) in self.clients.iter().enumerate() {
                let events = if client.output.is_empty() {
                    libc::POLLIN
                } else {
                    libc::POLLIN | libc::POLLOUT
                };
                add(client.stream.as_raw_fd(), events, Tag::Client(i));
            }
            if let Some(fd) = running
                .health
                .as_ref()
                .and_then(|h| h.probe.as_ref())
                .and_then(|p| p.output.as_ref())
            {
                add(fd.as_raw_fd(), libc::POLLIN, Tag::Probe);
            }
            if let Some(dns) = self.sandbox.as_ref().and_then(|s| s.dns.as_ref()) {
                for fd in dns.fds() {
                    add(fd, libc::POLLIN, Tag::Dns);
                }
            }
            if let Some(sandbox) = &self.sandbox {
                for (fd, events) in sandbox.relay.interests() {
                    add(fd, events, Tag::Relay);
                }
            }
            let dns_due = self
                .sandbox
                .as_ref()
                .and_then(|s| {
                    let dns = s.dns.as_ref().and_then(|d| d.deadline());
                    dns.into_iter().chain(s.relay.deadline()).min()
                })
                .map(|due| due.saturating_duration_since(Instant::now()).as_millis() as i32 + 1);
            let timeout = if running.exit_status.is_some() {
                50
            } else if let Some(checker) = &running.health {
                let due = checker.probe.as_ref().map_or(checker.next, |p| p.deadline);
                due.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as i32
            } else {
                -1
            };
            let timeout = match dns_due {
                Some(due) if timeout < 0 || due < timeout => due,
                _ => timeout,
            };
            // A full disk: look at the free space again when it is due.
            let timeout = match log_wait.map(|w| w.as_millis() as i32 + 1) {
                Some(wait) if timeout < 0 || wait < timeout => wait,
                _ => timeout,
            };
            // SAFETY: poll on our pollfd array.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                continue;
            }
            let mut client_activity = false;
            let mut dns_ready = false;
            let mut relay_ready = Vec::new();
            for (pfd, tag) in fds.iter().zip(tags.iter()) {
                if pfd.revents == 0 {
                    continue;
                }
                match *tag {
                    Tag::Signal => self.reap(running),
                    Tag::Listener => self.accept_clients(),
                    Tag::Output(stream) => {
                        let fd = match stream {
                            Stream::Stdout => &mut running.stdout,
                            Stream::Stderr => &mut running.stderr,
                        };
                        if let Some(data) = read_some(fd, &mut buffer) {
                            let _ = running.log.write(stream, &data);
                            self.forward(stream, data);
                        }
                    }
                    Tag::Pty => {
                        if pfd.revents & libc::POLLOUT != 0 {
                            write_stdin(&mut running.pty, &mut running.stdin_buffer, false);
                        }
                        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                            && let Some(data) = read_some(&mut running.pty, &mut buffer)
                        {
                            let _ = running.log.write(Stream::Stdout, &data);
                            self.forward(Stream::Stdout, data);
                        }
                    }
                    Tag::Stdin => {
                        write_stdin(&mut running.stdin, &mut running.stdin_buffer, true);
                    }
                    Tag::Client(i) => {
                        if pfd.revents & libc::POLLOUT != 0
                            && let Some(client) = self.clients.get_mut(i)
                        {
                            client.flush();
                        }
                        client_activity = true;
                    }
                    Tag::Dns => dns_ready = true,
                    Tag::Relay => relay_ready.push((pfd.fd, pfd.revents)),
                    Tag::Probe => {
                        if let Some(probe) = running.health.as_mut().and_then(|h| h.probe.as_mut())
                            && let Some(data) = read_some(&mut probe.output, &mut buffer)
                        {
                            let room = crate::health::MAX_OUTPUT.saturating_sub(probe.text.len());
                            probe.text.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                }
            }
            if running.exit_status.is_none() {
                self.tick_health(running);
            }
            if let Some(dns) = self.sandbox.as_mut().and_then(|s| s.dns.as_mut()) {
                if dns_ready {
                    let layout = &self.layout;
                    let id = &self.id;
                    dns.serve(&mut |question| crate::network::dns::lookup(layout, id, question));
                }
                dns.tick();
            }
            if let Some(sandbox) = self.sandbox.as_mut()
                && !sandbox.relay.is_empty()
            {
                sandbox.relay.pump(&relay_ready);
            }
            if client_activity || !self.clients.is_empty() {
                self.read_clients(Some(running));
            }
            if running.stdin_closing && running.stdin_buffer.is_empty() {
                running.stdin = None;
            }
            if running.stdin.is_some() && !running.stdin_buffer.is_empty() {
                write_stdin(&mut running.stdin, &mut running.stdin_buffer, true);
            }
            self.clients.retain(|c| !c.closed);
        }
    }

    fn forward(&mut self, stream: Stream, data: Vec<u8>) {
        let frame = match stream {
            Stream::Stdout => Frame::Stdout(data),
            Stream::Stderr => Frame::Stderr(data),
        };
        for client in self.clients.iter_mut().filter(|c| c.wants(stream)) {
            client.send(&frame);
        }
    }

    /// Reads the signalfd and reaps every exited child (we are a
    /// subreaper: orphans of the container come to us).
    fn reap(&mut self, running: &mut Running) {
        let mut info = [0u8; 128];
        // SAFETY: read into our buffer from our signalfd.
        while unsafe {
            libc::read(
                self.signals.as_raw_fd(),
                info.as_mut_ptr().cast(),
                info.len(),
            )
        } > 0
        {}
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG into a valid int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == running.pid {
                running.exit_status = Some(status);
                running.exited_at = Some(Instant::now());
            }
            let probe_done = running
                .health
                .as_ref()
                .and_then(|h| h.probe.as_ref())
                .is_some_and(|p| p.pid == pid);
            if probe_done {
                self.finish_probe(running, keel_runtime::process::exit_code(status));
            }
        }
    }
}

/// Gives back the stack pages below the current frame: start-up (SQLite,
/// the runtime's create) went deep once; the poll loop stays shallow, and
/// a monitor runs as long as its container.
#[inline(never)]
fn release_unused_stack() {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(line) = maps.lines().find(|l| l.ends_with("[stack]")) else {
        return;
    };
    let Some(start) = line
        .split('-')
        .next()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
    else {
        return;
    };
    // Keep a margin below us for the calls still to come.
    let page = 4096;
    let end = (here.saturating_sub(8 * 1024)) & !(page - 1);
    if end > start {
        // SAFETY: the range lies below the stack pointer (minus a margin):
        // no frame lives there; a later touch gets a fresh zero page.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

impl Monitor {
    /// Starts a probe when one is due; kills one past its timeout.
    fn tick_health(&mut self, running: &mut Running) {
        let Some(checker) = running.health.as_mut() else {
            return;
        };
        let now = Instant::now();
        if let Some(probe) = checker.probe.as_mut() {
            if now >= probe.deadline && !probe.timed_out {
                probe.timed_out = true;
                // The process in the container, then the runtime's exec.
                let pid_file = self.layout.run_dir(&self.id).join("health.pid");
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    // SAFETY: killing the probe process we started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                // SAFETY: killing our own forked child.
                unsafe { libc::kill(probe.pid, libc::SIGKILL) };
            }
            return;
        }
        if now < checker.next {
            return;
        }
        checker.next = now + Duration::from_millis(checker.check.interval_ms);
        match self.start_probe(&checker.check.args) {
            Ok(pid_and_fd) => {
                let (pid, output) = pid_and_fd;
                checker.probe = Some(Probe {
                    pid,
                    output: Some(output),
                    text: Vec::new(),
                    start: logs::now_nanos(),
                    deadline: now + Duration::from_millis(checker.check.timeout_ms),
                    timed_out: false,
                });
            }
            Err(e) => tracing::warn!("start a health probe: {e}"),
        }
    }

    /// Forks a child that runs `args` in the container through the
    /// runtime's exec, its output on a pipe; returns the child and the pipe.
    fn start_probe(&mut self, args: &[String]) -> Result<(i32, OwnedFd)> {
        let config = keel_runtime::spec::Spec::load(&self.layout.bundle(&self.id))
            .map_err(|e| Error::runtime("read the container's config", e))?;
        let mut process = config.process.clone().unwrap_or_default();
        process.args = args.to_vec();
        process.terminal = false;
        process.console_size = None;
        let options = keel_runtime::exec::ExecOptions {
            id: self.id.clone(),
            process,
            console_socket: None,
            pid_file: Some(self.layout.run_dir(&self.id).join("health.pid")),
            detach: false,
            preserve_fds: 0,
            ignore_paused: false,
        };
        let runtime_root = self.runtime_root();
        let (read, write) = pipe()?;
        let null = open_dev_null()?.into_raw();
        // SAFETY: fork of our single-threaded process; the child sets up
        // its stdio, runs the exec and _exits with its code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            // SAFETY: closing the /dev/null fd we opened.
            unsafe { libc::close(null) };
            return Err(Error::io(
                "fork a health probe",
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: in the child, on fds we own.
            unsafe {
                libc::dup2(null, 0);
                libc::dup2(write.as_raw_fd(), 1);
                libc::dup2(write.as_raw_fd(), 2);
                let code = match keel_runtime::exec::exec(&runtime_root, &options) {
                    Ok(code) => code,
                    Err(e) => {
                        let message = e.to_string();
                        libc::write(2, message.as_ptr().cast(), message.len());
                        126
                    }
                };
                libc::_exit(code);
            }
        }
        // SAFETY: closing the /dev/null fd we opened.
        unsafe { libc::close(null) };
        drop(write);
        set_nonblocking(read.as_raw_fd());
        Ok((pid, read))
    }

    /// Records a finished probe in the state.
    fn finish_probe(&mut self, running: &mut Running, exit_code: i32) {
        let Some(checker) = running.health.as_mut() else {
            return;
        };
        let Some(mut probe) = checker.probe.take() else {
            return;
        };
        let mut buffer = [0u8; 4096];
        while let Some(data) = read_some(&mut probe.output, &mut buffer) {
            let room = crate::health::MAX_OUTPUT.saturating_sub(probe.text.len());
            probe.text.extend_from_slice(&data[..data.len().min(room)]);
        }
        let (exit_code, output) = if probe.timed_out {
            (
                -1,
                format!(
                    "Health check exceeded timeout ({}ms)",
                    checker.check.timeout_ms
                ),
            )
        } else {
            (exit_code, String::from_utf8_lossy(&probe.text).into_owned())
        };
        let in_start_period =
            running.started.elapsed() < Duration::from_millis(checker.check.start_period_ms);
        crate::health::record(
            &mut checker.health,
            &checker.check,
            crate::db::HealthProbe {
                start: probe.start,
                end: logs::now_nanos(),
                exit_code,
                output,
            },
            in_start_period,
        );
        let health = checker.health.clone();
        let _ = self.update(|c| {
            c.state.health = Some(health);
            Ok(())
        });
        self.release_db();
    }
}

#[derive(Clone, Copy)]
enum Tag {
    Signal,
    Listener,
    Output(Stream),
    Pty,
    Stdin,
    Client(usize),
    Probe,
    Dns,
    Relay,
}

/// `-p`, and with `-P` the image's EXPOSEd ports not published otherwise.
fn ports_to_publish(container: &Container, run: &RunConfig) -> Vec<crate::spec::PortSpec> {
    let mut ports = container.spec.publish.clone();
    if container.spec.publish_all {
        let exposed: Vec<String> = run
            .image_config
            .config
            .as_ref()
            .and_then(|c| c.exposed_ports.as_ref())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for port in crate::spec::exposed_ports(&exposed) {
            if !ports
                .iter()
                .any(|p| p.container_port == port.container_port && p.protocol == port.protocol)
            {
                ports.push(port);
            }
        }
    }
    ports
}

fn should_restart(container: &Container, exit_code: i32) -> bool {
    if container.state.stopped_by_user {
        return false;
    }
    match &container.spec.restart {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max_retries } => {
            exit_code != 0 && (*max_retries == 0 || container.state.restart_count < *max_retries)
        }
    }
}

fn read_run_config(layout: &Layout, id: &str) -> Result<RunConfig> {
    let path = layout.file(id, "run.json");
    let data =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&data).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

/// Reads what is there; None (and the fd closed) at the end.
fn read_some(fd: &mut Option<OwnedFd>, buffer: &mut [u8]) -> Option<Vec<u8>> {
    let raw = fd.as_ref()?.as_raw_fd();
    // SAFETY: read into our buffer from an fd we own.
    let n = unsafe { libc::read(raw, buffer.as_mut_ptr().cast(), buffer.len()) };
    if n > 0 {
        return Some(buffer[..n as usize].to_vec());
    }
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return None;
        }
    }
    // EOF, or EIO from a pty whose last slave closed.
    *fd = None;
    None
}

/// Writes what stdin holds; on a broken pipe the input is dropped (and
/// with `close_on_error` the fd too).
fn write_stdin(fd: &mut Option<OwnedFd>, buffer: &mut Vec<u8>, close_on_error: bool) {
    let Some(raw) = fd.as_ref().map(|f| f.as_raw_fd()) else {
        buffer.clear();
        return;
    };
    while !buffer.is_empty() {
        // SAFETY: write from our buffer to an fd we own.
        let n = unsafe { libc::write(raw, buffer.as_ptr().cast(), buffer.len()) };
        if n > 0 {
            buffer.drain(..n as usize);
            continue;
        }
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return;
        }
        buffer.clear();
        if close_on_error {
            *fd = None;
        }
        return;
    }
}

fn resize(fd: RawFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a winsize we own on the pty master.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
}

fn signal_fd() -> Result<OwnedFd> {
    // SAFETY: building and applying a signal mask of our own process;
    // signalfd returns a new fd or -1.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(Error::io("signalfd", std::io::Error::last_os_error()));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
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

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

struct DevNull(RawFd);

impl DevNull {
    fn into_raw(self) -> RawFd {
        self.0
    }
}

fn open_dev_null() -> Result<DevNull> {
    // SAFETY: open with a valid C string; a new fd or -1.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("open /dev/null", std::io::Error::last_os_error()));
    }
    Ok(DevNull(fd))
}

/// Runs `f` with fds 0, 1 and 2 replaced (the container's init inherits
/// them), then puts the monitor's own back.
fn with_stdio<T>(stdin: RawFd, stdout: RawFd, stderr: RawFd, f: impl FnOnce() -> T) -> T {
    // SAFETY: dup/dup2/close on fds of our single-threaded process; the
    // saved ones are restored before returning.
    unsafe {
        // Close-on-exec copies: init must not inherit them.
        let saved = [0, 1, 2].map(|fd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3));
        libc::dup2(stdin, 0);
        libc::dup2(stdout, 1);
        libc::dup2(stderr, 2);
        let out = f();
        for (target, fd) in saved.iter().enumerate() {
            if *fd >= 0 {
                libc::dup2(*fd, target as i32);
                libc::close(*fd);
            }
        }
        out
    }
}
