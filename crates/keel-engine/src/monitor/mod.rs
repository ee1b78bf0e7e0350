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

mod clients;
mod container;
mod health;
mod watch;

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
        crate::events::record_container(&self.layout.root, container, action, extra);
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
