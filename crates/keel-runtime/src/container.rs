//! The lifecycle: create, start, run, kill, delete, pause, resume, update.
//!
//! `create` forks an intermediate process that joins or creates the
//! namespaces and clones the container's init with CLONE_PARENT (so init is
//! our child, in its new pid namespace). Init sets up the rootfs and the
//! process, reports Ready over the sync channel and blocks reading
//! `exec.fifo` until `start` writes to it, then execs the program.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::cgroups::Cgroup;
use crate::error::{Context, Error, Result};
use crate::namespaces::{self, Plan};
use crate::process;
use crate::rootfs::{self, Rootfs};
use crate::spec::{DeviceCgroup, NamespaceType, Resources, Spec};
use crate::state::{ContainerDir, OciState, State, Status};
use crate::sync::{Channel, Message};
use crate::{hooks, util};

/// Flags of `create` and `run`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// `run` in the foreground: the caller keeps the terminal, so no
    /// console socket is needed.
    pub foreground: bool,
}

/// What `create` leaves behind if it fails half-way: nothing.
pub(crate) struct Cleanup {
    pub(crate) dir: ContainerDir,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) pid: Option<i32>,
    pub(crate) armed: bool,
}

impl Cleanup {
    pub(crate) fn new(dir: ContainerDir) -> Cleanup {
        Cleanup {
            dir,
            cgroup: None,
            pid: None,
            armed: true,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.pid {
            // SAFETY: kill and reap our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = process::wait_child(pid);
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.signal_all(libc::SIGKILL);
            let _ = cgroup.remove();
        }
        let _ = self.dir.remove();
    }
}

fn resolve_bundle(bundle: &Path) -> Result<PathBuf> {
    let bundle = if bundle.as_os_str().is_empty() {
        Path::new(".")
    } else {
        bundle
    };
    std::fs::canonicalize(bundle)
        .map_err(|e| Error::msg(format!("bundle {}: {e}", bundle.display())))
}

fn resolve_rootfs(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec.root.as_ref().map(|r| r.path.as_str()).unwrap_or("");
    let path = bundle.join(root);
    let resolved = std::fs::canonicalize(&path).map_err(|_| {
        Error::msg(format!(
            "rootfs ({:?}) does not exist",
            path.display().to_string()
        ))
    })?;
    if !resolved.is_dir() {
        return Err(Error::msg(format!(
            "rootfs ({:?}) is not a directory",
            resolved.display().to_string()
        )));
    }
    Ok(resolved)
}

/// runc's default device rules: what every container may use whatever its
/// config says, after the config's own rules.
fn default_device_rules(spec: &Spec) -> Vec<DeviceCgroup> {
    let rule = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| DeviceCgroup {
        allow: true,
        kind: Some(kind.to_string()),
        major,
        minor,
        access: Some(access.to_string()),
    };
    let mut rules = vec![
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"),
        rule("c", Some(1), Some(8), "rwm"),
        rule("c", Some(1), Some(7), "rwm"),
        rule("c", Some(5), Some(0), "rwm"),
        rule("c", Some(1), Some(5), "rwm"),
        rule("c", Some(1), Some(9), "rwm"),
        rule("c", Some(136), None, "rwm"),
        rule("c", Some(5), Some(2), "rwm"),
        rule("c", Some(5), Some(1), "rwm"),
        rule("c", Some(10), Some(200), "rwm"),
    ];
    for device in &spec.linux().devices {
        let kind = match device.kind.as_str() {
            "u" => "c",
            // A FIFO is no device to the device controller.
            "p" => continue,
            kind => kind,
        };
        rules.push(rule(kind, Some(device.major), Some(device.minor), "rwm"));
    }
    rules
}

fn resources_with_defaults(spec: &Spec) -> Resources {
    let mut resources = spec.linux().resources.clone().unwrap_or_default();
    if !resources.devices.is_empty() {
        resources.devices.extend(default_device_rules(spec));
    }
    resources
}

pub(crate) fn oci_state_json(state: &State, status: Status) -> String {
    serde_json::to_string(&OciState::new(state, status)).expect("state serializes")
}

/// `create`: everything up to the point where the container waits for
/// `start`. Returns the init pid.
pub fn create(root: &Path, opts: &CreateOptions) -> Result<i32> {
    create_with_console(root, opts, None).map(|(pid, _)| pid)
}

/// `create` for a caller that holds the container's terminal itself (an
/// engine's monitor): `console` is the runtime's end of a socket pair over
/// which init sends the pty master (receive it with
/// [`crate::console::Proxy::receive_master`] on the other end). Without a
/// terminal in the config, init inherits the caller's stdio as with
/// [`create`]. Returns the init pid.
pub fn create_with_console_end(root: &Path, opts: &CreateOptions, console: OwnedFd) -> Result<i32> {
    let mut opts = opts.clone();
    opts.foreground = true;
    create_with_console(root, &opts, Some(console)).map(|(pid, _)| pid)
}

/// `create`, where a foreground `run` may pass its own end of a console
/// socket pair for a terminal container. Returns the init pid and whether
/// that console end was used.
fn create_with_console(
    root: &Path,
    opts: &CreateOptions,
    proxy_end: Option<OwnedFd>,
) -> Result<(i32, bool)> {
    util::validate_id(&opts.id)?;
    let bundle = resolve_bundle(&opts.bundle)?;
    let spec = Spec::load(&bundle)?;
    let process_spec = spec.process();
    if process_spec.terminal && opts.console_socket.is_none() && !opts.foreground {
        return Err(Error::msg(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    if !process_spec.terminal && opts.console_socket.is_some() {
        return Err(Error::msg(
            "cannot use console socket if runc will not detach or allocate tty",
        ));
    }
    // As runc: a UTS namespace of the container's, made or joined by path
    // (a pod's containers join the sandbox's), takes the hostname.
    if spec.hostname.is_some() && spec.namespace(NamespaceType::Uts).is_none() {
        return Err(Error::msg(
            "unable to set hostname without a private UTS namespace",
        ));
    }
    let rootfs = resolve_rootfs(&spec, &bundle)?;
    let plan = Plan::for_spec(&spec)?;
    let console = match (&opts.console_socket, proxy_end) {
        (Some(path), _) if process_spec.terminal => Some(crate::console::connect(path)?),
        (None, Some(end)) if process_spec.terminal => Some(end),
        _ => None,
    };
    let proxied = console.is_some() && opts.console_socket.is_none();
    if crate::vm::wants_vm(&spec.annotations) {
        return crate::vm::create(root, opts, &spec, &bundle, &rootfs, console)
            .map(|pid| (pid, proxied));
    }
    let listener = connect_listener(&spec)?;

    let dir = ContainerDir::create(root, &opts.id)?;
    let mut cleanup = Cleanup::new(dir.clone());
    dir.save_config(&spec)?;
    let mut cgroup = Cgroup::resolve(&opts.id, spec.linux().cgroups_path.as_deref())?;
    // `create` records what it made even when it fails half-way.
    let created = cgroup.create();
    cleanup.cgroup = Some(cgroup.clone());
    created?;
    cgroup.apply(&resources_with_defaults(&spec))?;

    let fifo_path = dir.fifo();
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
        .context(|| format!("mkfifo {}", fifo_path.display()))?;
    // Init holds both ends: the read end to wait on, and a write end so
    // that the read blocks (a FIFO without writers reads as EOF at once)
    // until `start` opens the path and writes.
    let fifo: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .context(|| format!("open {}", fifo_path.display()))?
        .into();
    let fifo_writer: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo_path)
        .context(|| format!("open {}", fifo_path.display()))?
        .into();

    let (parent, child) = Channel::pair()?;
    let init = Init {
        spec: &spec,
        plan: &plan,
        rootfs: &rootfs,
        bundle: &bundle,
        cgroup: &cgroup,
        channel: &child,
        fifo: &fifo,
        console: console.as_ref(),
        listener: listener.as_ref(),
        opts,
    };
    let Some(intermediate) = process::fork()? else {
        init.intermediate();
    };
    drop(child);
    drop(console);
    drop(fifo_writer);

    let mut state = State {
        id: opts.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: util::now_rfc3339(),
        owner: String::new(),
        annotations: spec.annotations.clone(),
        cgroup: cgroup.clone(),
        own_pid_ns: plan.creates(NamespaceType::Pid),
    };
    let outcome = drive_init(
        &parent,
        &spec,
        &cgroup,
        &mut state,
        &mut cleanup,
        intermediate,
    );
    if cleanup.pid.is_none() {
        let _ = process::wait_child(intermediate);
    }
    outcome?;
    state.pid_start = util::proc_start_time(state.pid)
        .ok_or_else(|| Error::msg("container init exited before it was ready"))?;
    dir.save(&state)?;
    if let Some(pid_file) = &opts.pid_file {
        util::write_atomic(pid_file, state.pid.to_string().as_bytes())?;
    }
    cleanup.armed = false;
    tracing::debug!("created container {} with init pid {}", opts.id, state.pid);
    Ok((state.pid, proxied))
}

/// The runtime's side of the conversation with the forked processes.
fn drive_init(
    channel: &Channel,
    spec: &Spec,
    cgroup: &Cgroup,
    state: &mut State,
    cleanup: &mut Cleanup,
    intermediate: i32,
) -> Result<()> {
    let linux = spec.linux();
    loop {
        match channel.recv()? {
            Some(Message::WriteMaps(pid)) => {
                namespaces::write_id_maps(pid, &linux.uid_mappings, &linux.gid_mappings)?;
                channel.send(&Message::MapsWritten)?;
            }
            Some(Message::Pid(pid)) => {
                process::wait_child(intermediate)?;
                cleanup.pid = Some(pid);
                state.pid = pid;
                // Init starts on its rootfs while we move it into its cgroup
                // (a cgroup migration waits for an RCU grace period); it
                // waits for Joined before anything that depends on it.
                channel.send(&Message::Continue(oci_state_json(state, Status::Creating)))?;
                cgroup.add_pid(pid)?;
                if let Some(adj) = spec.process().oom_score_adj {
                    util::write_file(
                        format!("/proc/{pid}/oom_score_adj").as_ref(),
                        &adj.to_string(),
                    )?;
                }
                if let Err(e) = channel.send(&Message::Joined) {
                    // Init failed (and exited) while we joined it to its
                    // cgroup: its reason is waiting in the channel.
                    if let Ok(Some(Message::Failed(msg))) = channel.recv() {
                        return Err(Error::Msg(msg));
                    }
                    return Err(e);
                }
            }
            Some(Message::RunHooks) => {
                let json = oci_state_json(state, Status::Creating);
                hooks::run("createRuntime", &spec.hooks().create_runtime, &json)?;
                hooks::run("prestart", &spec.hooks().prestart, &json)?;
                channel.send(&Message::HooksDone)?;
            }
            Some(Message::Ready) => return Ok(()),
            Some(Message::Failed(msg)) => return Err(Error::Msg(msg)),
            Some(other) => {
                return Err(Error::msg(format!(
                    "unexpected message from init: {other:?}"
                )));
            }
            None => {
                let why = match cleanup.pid.take() {
                    Some(pid) => {
                        let status = process::wait_child(pid)?;
                        format!(" (exit status {})", process::exit_code(status))
                    }
                    None => String::new(),
                };
                return Err(Error::msg(format!(
                    "container init exited before it was ready{why}"
                )));
            }
        }
    }
}

/// What the forked processes need; they run on copies of the parent's memory.
struct Init<'a> {
    spec: &'a Spec,
    plan: &'a Plan,
    rootfs: &'a Path,
    bundle: &'a Path,
    cgroup: &'a Cgroup,
    channel: &'a Channel,
    fifo: &'a OwnedFd,
    console: Option<&'a OwnedFd>,
    listener: Option<&'a OwnedFd>,
    opts: &'a CreateOptions,
}

impl Init<'_> {
    /// The intermediate process: namespaces, then clone init into them.
    fn intermediate(&self) -> ! {
        process::set_parent_death_signal(libc::SIGKILL);
        let result = (|| -> Result<()> {
            self.plan.enter()?;
            if self.plan.creates(NamespaceType::User) {
                namespaces::unshare(libc::CLONE_NEWUSER)?;
                self.channel
                    .send(&Message::WriteMaps(nix::unistd::getpid().as_raw()))?;
                match self.channel.recv()? {
                    Some(Message::MapsWritten) => {}
                    _ => return Err(Error::msg("runtime did not write the id maps")),
                }
                // Become root of the new namespace where 0 is mapped.
                let _ = nix::unistd::setresgid(0.into(), 0.into(), 0.into());
                let _ = nix::unistd::setresuid(0.into(), 0.into(), 0.into());
            }
            namespaces::unshare(self.plan.new & !(libc::CLONE_NEWUSER | libc::CLONE_NEWCGROUP))?;
            if self.plan.creates(NamespaceType::Time) {
                namespaces::write_time_offsets(self.spec)?;
            }
            match process::clone_parent()? {
                None => self.init(),
                Some(pid) => self.channel.send(&Message::Pid(pid)),
            }
        })();
        self.channel.exit_with(result)
    }

    /// The container's init, up to exec.
    fn init(&self) -> ! {
        process::set_parent_death_signal(libc::SIGKILL);
        let error = match self.init_steps() {
            Ok(prepared) => {
                // Only reached after `start`: errors now go to the
                // container's stderr, as the runtime has exited.
                let e = prepared.exec();
                let _ = writeln!(std::io::stderr(), "keel-runtime: {e}");
                process::exit_child(127)
            }
            Err(e) => e,
        };
        let _ = self.channel.send(&Message::Failed(error.to_string()));
        process::exit_child(1)
    }

    fn init_steps(&self) -> Result<process::Prepared> {
        let state_json = self.channel.wait_continue()?;
        nix::unistd::setsid().context(|| "setsid".to_string())?;
        let wait_joined = || -> Result<()> {
            match self.channel.recv()? {
                Some(Message::Joined) => {}
                _ => return Err(Error::msg("runtime went away")),
            }
            // The cgroup namespace is rooted where we are when we unshare it.
            if self.plan.creates(NamespaceType::Cgroup) {
                namespaces::unshare(libc::CLONE_NEWCGROUP)?;
            }
            Ok(())
        };
        // On cgroup v2 a private cgroup namespace gets a fresh cgroup2 mount,
        // which must see the namespace: join first. Elsewhere the rootfs is
        // built while the runtime moves us into the cgroup.
        let joined_early = self.cgroup.is_unified();
        if joined_early {
            wait_joined()?;
        }
        let spec = self.spec;
        let linux = spec.linux();
        let user_ns =
            self.plan.creates(NamespaceType::User) || self.plan.joins(NamespaceType::User);
        let new_mount_ns = self.plan.creates(NamespaceType::Mount);
        if new_mount_ns {
            Rootfs {
                spec,
                rootfs: self.rootfs,
                bundle: self.bundle,
                cgroup: self.cgroup,
                user_ns,
                new_cgroup_ns: self.plan.creates(NamespaceType::Cgroup),
            }
            .prepare()?;
        }
        if !joined_early {
            wait_joined()?;
        }
        let hooks = spec.hooks();
        if !hooks.create_runtime.is_empty() || !hooks.prestart.is_empty() {
            self.channel.send(&Message::RunHooks)?;
            match self.channel.recv()? {
                Some(Message::HooksDone) => {}
                _ => return Err(Error::msg("runtime went away while running hooks")),
            }
        }
        hooks::run("createContainer", &hooks.create_container, &state_json)?;
        if new_mount_ns {
            if self.opts.no_pivot {
                rootfs::move_root(self.rootfs)?;
            } else {
                rootfs::pivot_root(self.rootfs)?;
            }
            rootfs::apply_root_propagation(spec)?;
        } else {
            nix::unistd::chroot(self.rootfs)
                .context(|| format!("chroot {}", self.rootfs.display()))?;
            nix::unistd::chdir("/").context(|| "chdir /".to_string())?;
        }
        if !self.opts.no_new_keyring {
            join_session_keyring(&self.opts.id);
        }
        let process_spec = spec.process();
        if process_spec.terminal {
            match self.console {
                Some(socket) => {
                    crate::console::setup(socket, process_spec.console_size, new_mount_ns)?
                }
                None => return Err(Error::msg("terminal requested but no console socket")),
            }
        }
        rootfs::apply_sysctl(&linux.sysctl)?;
        if new_mount_ns {
            rootfs::mask_and_protect(&linux.masked_paths, &linux.readonly_paths)?;
            if spec.root.as_ref().is_some_and(|r| r.readonly) {
                rootfs::make_root_readonly()?;
            }
        }
        if self.plan.creates(NamespaceType::Uts) || self.plan.joins(NamespaceType::Uts) {
            if let Some(hostname) = &spec.hostname {
                nix::unistd::sethostname(hostname)
                    .context(|| format!("sethostname {hostname:?}"))?;
            }
            if let Some(domain) = &spec.domainname {
                set_domainname(domain)?;
            }
        }
        let listener = match (self.listener, &linux.seccomp) {
            (Some(socket), Some(seccomp)) => Some(process::Listener {
                socket: socket.as_raw_fd(),
                payload: process::listener_payload(seccomp, &state_json),
            }),
            _ => None,
        };
        let prepared = process::prepare(&process::Settings {
            process: process_spec,
            seccomp: linux.seccomp.as_ref(),
            preserve_fds: self.opts.preserve_fds,
            in_user_ns: user_ns,
            listener,
        })?;
        process::set_parent_death_signal(0);
        self.channel.send(&Message::Ready)?;
        wait_for_start(self.fifo)?;
        hooks::run("startContainer", &hooks.start_container, &state_json)?;
        Ok(prepared)
    }
}

/// Connects to `linux.seccomp.listenerPath` on the host, if set.
pub(crate) fn connect_listener(spec: &Spec) -> Result<Option<OwnedFd>> {
    match spec
        .linux()
        .seccomp
        .as_ref()
        .and_then(|s| s.listener_path.as_deref())
    {
        Some(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path)
                .context(|| format!("connect to seccomp listenerPath {path}"))?;
            Ok(Some(stream.into()))
        }
        None => Ok(None),
    }
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: setdomainname reads len bytes from a valid buffer.
    if unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(Error::io(
            format!("setdomainname {name:?}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A fresh session keyring per container, so containers do not share the
/// host's keys (runc does the same unless --no-new-keyring).
fn join_session_keyring(id: &str) {
    let name = CString::new(format!("_ses.{id}")).unwrap_or_default();
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a NUL-terminated name. Failure (e.g. keyrings
    // disabled or denied by seccomp) is not fatal, as in runc.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
}

/// Blocks until `start` writes to exec.fifo (init also holds a write end,
/// so the read cannot see EOF while it waits).
fn wait_for_start(fifo: &OwnedFd) -> Result<()> {
    // SAFETY: clearing O_NONBLOCK on our own fd.
    unsafe {
        let flags = libc::fcntl(fifo.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fifo.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fifo.as_fd(), &mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Error::msg("exec.fifo closed before start")),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("wait for start", e)),
        }
    }
}

/// `start`: releases a created container.
pub fn start(root: &Path, id: &str) -> Result<()> {
    let dir = ContainerDir::new(root, id)?;
    let state = dir.load()?;
    match dir.status(&state) {
        Status::Created => {}
        Status::Stopped => return Err(Error::msg("cannot start a container that has stopped")),
        _ => return Err(Error::msg("cannot start an already running container")),
    }
    let fifo_path = dir.fifo();
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                Error::msg("cannot start a container that has stopped")
            } else {
                Error::io(format!("open {}", fifo_path.display()), e)
            }
        })?;
    fifo.write_all(b"0")
        .context(|| "signal the container to start".to_string())?;
    drop(fifo);
    let _ = std::fs::remove_file(&fifo_path);
    let spec = dir.load_config()?;
    let poststart = &spec.hooks().poststart;
    if !poststart.is_empty() {
        // A failing poststart hook is logged, not fatal (runtime-spec).
        if let Err(e) = hooks::run(
            "poststart",
            poststart,
            &oci_state_json(&state, Status::Running),
        ) {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}

/// `state`: runc's JSON for one container.
pub fn state(root: &Path, id: &str) -> Result<OciState> {
    let dir = ContainerDir::new(root, id)?;
    let state = dir.load()?;
    Ok(OciState::new(&state, dir.status(&state)))
}

/// `kill`: a signal to init, or with `all` to every process of the container.
pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<()> {
    let dir = ContainerDir::new(root, id)?;
    let state = match dir.load() {
        Err(Error::NotExist) if !dir.path.exists() => {
            // The state is gone but the container may not be: see
            // `lost_cgroup`. Without its init's pid, every process of its
            // cgroup gets the signal.
            let Some(cgroup) = lost_cgroup(id).filter(|c| c.pids().is_ok_and(|p| !p.is_empty()))
            else {
                return Err(Error::NotExist);
            };
            eprintln!(
                "keel-runtime: the state of container {id} is gone; signalling the processes \
                 of its cgroup {} (named by the bundle's config.json)",
                cgroup.path
            );
            return cgroup.signal_all(signal);
        }
        other => other?,
    };
    let status = dir.status(&state);
    if status == Status::Stopped {
        return Err(Error::NotRunning);
    }
    if all || (signal == libc::SIGKILL && !state.own_pid_ns) {
        state.cgroup.signal_all(signal)?;
        if status == Status::Paused && signal == libc::SIGKILL {
            let _ = state.cgroup.thaw();
        }
        return Ok(());
    }
    signal_init(&state, signal)
}

/// Signals init through a pidfd opened and then checked against the
/// recorded start time, so a recycled pid is never signalled.
fn signal_init(state: &State, signal: i32) -> Result<()> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, state.pid, 0) };
    if fd < 0 {
        return Err(Error::NotRunning);
    }
    // SAFETY: fd is a new pidfd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !util::process_alive(state.pid, state.pid_start) {
        return Err(Error::NotRunning);
    }
    // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(Error::NotRunning);
        }
        return Err(Error::io(
            format!("kill {} with signal {signal}", state.pid),
            err,
        ));
    }
    Ok(())
}

/// Waits (up to `timeout`) until `pid` has exited. Works for processes that
/// are not our children through a pidfd.
fn wait_exit(pid: i32, start: u64, timeout: std::time::Duration) -> bool {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return !util::process_alive(pid, start);
    }
    // SAFETY: fd is a new pidfd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if !util::process_alive(pid, start) {
        return true;
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    !util::process_alive(pid, start)
}

/// `delete`: removes a stopped container (or a created one, killing its
/// init); `force` also kills a running one. Missing + force is success.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let dir = ContainerDir::new(root, id)?;
    let state = match dir.load() {
        Ok(s) => s,
        Err(Error::NotExist) => {
            // A directory without state is what a killed `create` leaves:
            // its saved config names the cgroup that create may have made
            // (and put the init in).
            if dir.path.exists() {
                if let Ok(spec) = dir.load_config()
                    && let Ok(cgroup) = Cgroup::resolve(id, spec.linux().cgroups_path.as_deref())
                {
                    let _ = cgroup.signal_all(libc::SIGKILL);
                    cgroup.remove()?;
                }
                dir.remove()?;
                return Ok(());
            }
            // State wiped under a container (see `lost_cgroup`): its
            // cgroup goes (its processes first, with --force); the answer
            // stays runc's, which callers such as containerd's shim expect.
            if let Some(cgroup) = lost_cgroup(id) {
                if force {
                    let _ = cgroup.signal_all(libc::SIGKILL);
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while cgroup.pids().is_ok_and(|p| !p.is_empty())
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let _ = cgroup.remove();
            }
            return if force { Ok(()) } else { Err(Error::NotExist) };
        }
        Err(e) => return Err(e),
    };
    let status = dir.status(&state);
    match status {
        Status::Stopped => {}
        Status::Created => {
            kill_and_wait(&state, status);
        }
        Status::Running | Status::Paused | Status::Creating => {
            if !force {
                return Err(Error::msg(format!(
                    "cannot delete container {id} that is not stopped: {}",
                    status.as_str()
                )));
            }
            kill_and_wait(&state, status);
        }
    }
    destroy(&dir, &state)
}

/// A container whose state directory was wiped while it ran (a cleaner
/// that went too far, a tmpfs remounted): the runtime's caller still knows
/// it. containerd's shim runs the runtime in a bundle — the container's,
/// or, for a pod's containers (one shim per pod), the sandbox's, beside
/// which containerd keeps the container's as `../<id>` — and that
/// `config.json` names the container's cgroup. It is taken only when the
/// path's last name is the container's id (as containerd's CRI names
/// them), so a stray config never points keel at another cgroup. runc
/// cannot stop such a container; keel can.
fn lost_cgroup(id: &str) -> Option<Cgroup> {
    [PathBuf::from("."), Path::new("..").join(id)]
        .iter()
        .find_map(|bundle| {
            let spec = Spec::load(bundle).ok()?;
            let path = spec.linux.as_ref()?.cgroups_path.clone()?;
            (path.rsplit('/').next() == Some(id)).then_some(path)
        })
        .and_then(|path| Cgroup::resolve(id, Some(&path)).ok())
        .filter(|cgroup| cgroup.pids().is_ok())
}

fn kill_and_wait(state: &State, status: Status) {
    let _ = state.cgroup.signal_all(libc::SIGKILL);
    let _ = signal_init(state, libc::SIGKILL);
    if status == Status::Paused {
        let _ = state.cgroup.thaw();
    }
    wait_exit(
        state.pid,
        state.pid_start,
        std::time::Duration::from_secs(10),
    );
}

fn destroy(dir: &ContainerDir, state: &State) -> Result<()> {
    // Without a private pid namespace, children of init may outlive it.
    if !state.own_pid_ns {
        let _ = state.cgroup.signal_all(libc::SIGKILL);
    }
    state.cgroup.remove()?;
    if let Ok(spec) = dir.load_config() {
        let poststop = &spec.hooks().poststop;
        if !poststop.is_empty()
            && let Err(e) = hooks::run(
                "poststop",
                poststop,
                &oci_state_json(state, Status::Stopped),
            )
        {
            tracing::warn!("{e}");
        }
    }
    dir.remove()
}

pub fn pause(root: &Path, id: &str) -> Result<()> {
    let dir = ContainerDir::new(root, id)?;
    let state = dir.load()?;
    match dir.status(&state) {
        Status::Running | Status::Created => state.cgroup.freeze(),
        Status::Paused => Err(Error::Paused),
        _ => Err(Error::NotRunning),
    }
}

pub fn resume(root: &Path, id: &str) -> Result<()> {
    let dir = ContainerDir::new(root, id)?;
    let state = dir.load()?;
    match dir.status(&state) {
        Status::Paused => state.cgroup.thaw(),
        _ => Err(Error::msg("container not paused")),
    }
}

/// `update`: new resource limits, applied and remembered.
pub fn update(root: &Path, id: &str, resources: &Resources) -> Result<()> {
    let dir = ContainerDir::new(root, id)?;
    let state = dir.load()?;
    if dir.status(&state) == Status::Stopped {
        return Err(Error::NotRunning);
    }
    let mut spec = dir.load_config()?;
    let linux = spec.linux.get_or_insert_with(Default::default);
    let current = linux.resources.get_or_insert_with(Default::default);
    merge_resources(current, resources);
    let merged = current.clone();
    state.cgroup.apply(&Resources {
        devices: Vec::new(),
        ..merged
    })?;
    dir.save_config(&spec)
}

fn merge_resources(current: &mut Resources, new: &Resources) {
    fn merge<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
        if value.is_some() {
            *slot = value.clone();
        }
    }
    if let Some(memory) = &new.memory {
        let m = current.memory.get_or_insert_with(Default::default);
        merge(&mut m.limit, &memory.limit);
        merge(&mut m.reservation, &memory.reservation);
        merge(&mut m.swap, &memory.swap);
        merge(&mut m.kernel, &memory.kernel);
        merge(&mut m.kernel_tcp, &memory.kernel_tcp);
        merge(&mut m.swappiness, &memory.swappiness);
        merge(&mut m.disable_oom_killer, &memory.disable_oom_killer);
    }
    if let Some(cpu) = &new.cpu {
        let c = current.cpu.get_or_insert_with(Default::default);
        merge(&mut c.shares, &cpu.shares);
        merge(&mut c.quota, &cpu.quota);
        merge(&mut c.period, &cpu.period);
        merge(&mut c.realtime_runtime, &cpu.realtime_runtime);
        merge(&mut c.realtime_period, &cpu.realtime_period);
        merge(&mut c.cpus, &cpu.cpus);
        merge(&mut c.mems, &cpu.mems);
        merge(&mut c.burst, &cpu.burst);
        merge(&mut c.idle, &cpu.idle);
    }
    if new.pids.is_some() {
        current.pids = new.pids.clone();
    }
    if let Some(blkio) = &new.block_io {
        let b = current.block_io.get_or_insert_with(Default::default);
        merge(&mut b.weight, &blkio.weight);
        merge(&mut b.leaf_weight, &blkio.leaf_weight);
        if !blkio.throttle_read_bps_device.is_empty() {
            b.throttle_read_bps_device = blkio.throttle_read_bps_device.clone();
        }
        if !blkio.throttle_write_bps_device.is_empty() {
            b.throttle_write_bps_device = blkio.throttle_write_bps_device.clone();
        }
        if !blkio.throttle_read_iops_device.is_empty() {
            b.throttle_read_iops_device = blkio.throttle_read_iops_device.clone();
        }
        if !blkio.throttle_write_iops_device.is_empty() {
            b.throttle_write_iops_device = blkio.throttle_write_iops_device.clone();
        }
    }
    if !new.hugepage_limits.is_empty() {
        current.hugepage_limits = new.hugepage_limits.clone();
    }
    for (k, v) in &new.unified {
        current.unified.insert(k.clone(), v.clone());
    }
}

/// The pids of the container's processes (host pid namespace).
pub fn pids(root: &Path, id: &str) -> Result<Vec<i32>> {
    let dir = ContainerDir::new(root, id)?;
    let state = dir.load()?;
    state.cgroup.pids()
}

/// `run`: create, start, and in the foreground wait for the container and
/// delete it. Returns the exit code to exit with.
pub fn run(
    root: &Path,
    opts: &CreateOptions,
    detach: bool,
    keep: bool,
    subreaper: bool,
) -> Result<i32> {
    let forwarder = if detach {
        None
    } else {
        Some(SignalForwarder::block()?)
    };
    if !detach && subreaper {
        // SAFETY: plain prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let mut opts = opts.clone();
    opts.foreground = !detach;
    let proxy = match (&opts.console_socket, detach) {
        (None, false) => Some(crate::console::Proxy::pair()?),
        _ => None,
    };
    let (proxy, proxy_end) = match proxy {
        Some((proxy, end)) => (Some(proxy), Some(end)),
        None => (None, None),
    };
    let (pid, proxied) = create_with_console(root, &opts, proxy_end)?;
    let attached = match proxy {
        Some(proxy) if proxied => match proxy.receive_master().and_then(crate::console::attach) {
            Ok(attached) => Some(attached),
            Err(e) => {
                let _ = delete(root, &opts.id, true);
                return Err(e);
            }
        },
        _ => None,
    };
    if let Err(e) = start(root, &opts.id) {
        let _ = delete(root, &opts.id, true);
        return Err(e);
    }
    let Some(forwarder) = forwarder else {
        return Ok(0);
    };
    let status = forwarder.wait(pid, attached.as_ref());
    if let Some(attached) = attached {
        attached.finish();
    }
    if !keep {
        delete(root, &opts.id, true)?;
    }
    status
}

/// The signals a foreground runtime (or a VM's shim) passes on to the
/// process: all but those that mean a bug in this process, and the two
/// nobody can catch.
pub fn forwardable_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGABRT,
    ] {
        set.remove(s);
    }
    set
}

/// Foreground `run`/`exec`: signals sent to the runtime go to the container
/// process; SIGCHLD reaps (we are a subreaper) until the main process exits.
pub struct SignalForwarder {
    set: nix::sys::signal::SigSet,
}

impl SignalForwarder {
    /// Blocks the forwardable signals in the runtime (before fork, so no
    /// signal is lost); the container process unblocks them before exec.
    pub fn block() -> Result<SignalForwarder> {
        let set = forwardable_signals();
        set.thread_block().context(|| "block signals".to_string())?;
        Ok(SignalForwarder { set })
    }

    /// Waits for `pid`, forwarding signals; SIGWINCH resizes the attached
    /// terminal instead.
    pub fn wait(self, pid: i32, terminal: Option<&crate::console::Attached>) -> Result<i32> {
        use nix::sys::signal::Signal;
        loop {
            // Reap whatever has exited (our child and re-parented orphans).
            loop {
                let mut status = 0;
                // SAFETY: waitpid with WNOHANG into a valid int.
                let reaped = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                if reaped <= 0 {
                    break;
                }
                if reaped == pid {
                    return Ok(process::exit_code(status));
                }
            }
            let signal = self.set.wait().context(|| "wait for signals".to_string())?;
            if signal == Signal::SIGWINCH
                && let Some(terminal) = terminal
            {
                terminal.resize();
            } else if signal != Signal::SIGCHLD {
                // SAFETY: forwarding a signal to our own child.
                unsafe { libc::kill(pid, signal as i32) };
            }
        }
    }
}

/// Parses a signal as runc does: a number, `KILL`, or `SIGKILL`.
pub fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(Error::msg(format!("unknown signal {text:?}")));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    if let Some(rt) = name.strip_prefix("SIGRTMIN") {
        let base = libc::SIGRTMIN();
        let offset = if rt.is_empty() {
            0
        } else {
            rt.trim_start_matches('+').parse::<i32>().unwrap_or(-1)
        };
        if (0..=libc::SIGRTMAX() - base).contains(&offset) {
            return Ok(base + offset);
        }
    }
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| Error::msg(format!("unknown signal {text:?}")))
}

/// Opens `path` for the `--log` file or fails with its name.
pub fn open_log(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .context(|| format!("open log {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("SIGRTMIN+1").unwrap(), libc::SIGRTMIN() + 1);
        assert!(
            parse_signal("SIGNOPE")
                .unwrap_err()
                .to_string()
                .contains("SIGNOPE")
        );
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn update_merges_only_what_is_given() {
        let mut current: Resources = serde_json::from_str(
            r#"{"memory":{"limit":100,"reservation":50},"cpu":{"shares":512},"pids":{"limit":10}}"#,
        )
        .unwrap();
        let new: Resources =
            serde_json::from_str(r#"{"memory":{"limit":200},"pids":{"limit":20}}"#).unwrap();
        merge_resources(&mut current, &new);
        let m = current.memory.unwrap();
        assert_eq!((m.limit, m.reservation), (Some(200), Some(50)));
        assert_eq!(current.cpu.unwrap().shares, Some(512));
        assert_eq!(current.pids.unwrap().limit, 20);
    }
}
