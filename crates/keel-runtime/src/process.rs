//! The container process: rlimits, user and groups, environment, the
//! executable lookup, and the final exec.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use crate::error::{Context, Error, Result};
use crate::spec::{Process, Rlimit};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn rlimit_resource(kind: &str) -> Result<i32> {
    Ok(match kind {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return Err(Error::msg(format!("unknown rlimit type {kind:?}"))),
    } as i32)
}

pub fn apply_rlimits(rlimits: &[Rlimit]) -> Result<()> {
    for r in rlimits {
        let resource = rlimit_resource(&r.kind)?;
        let limit = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(resource as _, &limit) } != 0 {
            return Err(Error::io(
                format!("setrlimit {} soft={} hard={}", r.kind, r.soft, r.hard),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Switches to the process user. Capabilities survive thanks to
/// PR_SET_KEEPCAPS; the caller sets the final sets afterwards.
pub fn switch_user(process: &Process, in_user_ns: bool) -> Result<()> {
    let user = &process.user;
    let gids: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids) {
        // In a user namespace setgroups may be denied; only an error if
        // groups were asked for.
        if !(in_user_ns && gids.is_empty()) {
            return Err(Error::sys(
                format!("setgroups {:?}", user.additional_gids),
                e,
            ));
        }
    }
    nix::unistd::setresgid(
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
    )
    .context(|| format!("setresgid {}", user.gid))?;
    nix::unistd::setresuid(
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
    )
    .context(|| format!("setresuid {}", user.uid))?;
    Ok(())
}

pub fn set_keep_caps(on: bool) -> Result<()> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, libc::c_ulong::from(on), 0, 0, 0) } != 0 {
        return Err(Error::io(
            "prctl PR_SET_KEEPCAPS",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::io(
            "prctl PR_SET_NO_NEW_PRIVS",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The environment with HOME filled in from /etc/passwd (as runc does) when
/// the config does not set it.
pub fn environment(process: &Process) -> Vec<String> {
    let mut env = process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(process.user.uid).unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_string())
    })
}

/// Finds args[0] the way runc does (exec.LookPath with the process PATH),
/// in the current root. The error text matches runc's, which podman maps
/// to exit codes 126/127.
pub fn find_executable(arg0: &str, env: &[String]) -> Result<PathBuf> {
    let check = |p: &Path| -> std::result::Result<(), std::io::Error> {
        let meta = std::fs::metadata(p)?;
        use std::os::unix::fs::PermissionsExt;
        if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    };
    if arg0.contains('/') {
        let path = PathBuf::from(arg0);
        return match check(&path) {
            Ok(()) => Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::msg(format!(
                "exec: \"{arg0}\": stat {arg0}: no such file or directory"
            ))),
            Err(_) => Err(Error::msg(format!("exec: \"{arg0}\": permission denied"))),
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        Err(Error::msg(format!("exec: \"{arg0}\": permission denied")))
    } else {
        Err(Error::msg(format!(
            "exec: \"{arg0}\": executable file not found in $PATH"
        )))
    }
}

/// execve; returns only on failure.
pub fn execute(path: &Path, args: &[String], env: &[String]) -> Error {
    let to_c = |s: &str| CString::new(s.as_bytes()).unwrap_or_default();
    let path_c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    let argv: Vec<CString> = args.iter().map(|a| to_c(a)).collect();
    let envp: Vec<CString> = env.iter().map(|e| to_c(e)).collect();
    let errno = nix::unistd::execve(&path_c, &argv, &envp).unwrap_err();
    Error::sys(format!("exec {}", path.display()), errno)
}

/// fork(2). The runtime is single-threaded when it forks (checked in debug
/// builds), so the child may allocate and use the standard library.
pub fn fork() -> Result<Option<i32>> {
    debug_assert_eq!(thread_count(), 1, "fork from a multi-threaded runtime");
    // SAFETY: single-threaded; the child only runs code that is safe after fork.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io("fork", std::io::Error::last_os_error())),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// clone(2) with CLONE_PARENT: the new process is a child of our parent
/// (the runtime), so the runtime can wait for it and the kernel delivers
/// SIGCHLD there. Used from the intermediate process after it has entered
/// or created the pid namespace.
pub fn clone_parent() -> Result<Option<i32>> {
    // SAFETY: a raw clone without a new stack behaves like fork (the child
    // continues on a copy of our stack); we are single-threaded.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(Error::io("clone", std::io::Error::last_os_error())),
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

pub fn set_parent_death_signal(signal: i32) {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
}

/// Exits a forked child without running the parent's destructors.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit is always safe; it skips atexit handlers and buffered
    // output that belong to the parent.
    unsafe { libc::_exit(code) }
}

/// Waits for a child of ours, retrying on EINTR; returns the raw status.
pub fn wait_child(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a valid int.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::io(format!("wait for process {pid}"), err));
        }
    }
}

/// A wait status as a shell would report it: the exit code, or 128+signal.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// The last steps before the container process runs its program, shared by
/// the container's init and `exec`: rlimits, cwd, user, capabilities,
/// no_new_privs, seccomp, and no leaked fds.
pub struct Prepared {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// With no_new_privs, seccomp is loaded as late as possible (right
    /// before exec) so that it need not allow the runtime's own syscalls.
    late_seccomp: Option<crate::seccomp::Filter>,
    listener: Option<Listener>,
}

/// Where a seccomp notify fd goes (`linux.seccomp.listenerPath`): a socket
/// the runtime connected on the host, and the container-process-state JSON
/// sent with the fd.
#[derive(Clone)]
pub struct Listener {
    pub socket: RawFd,
    pub payload: String,
}

impl Listener {
    fn send(&self, notify: Option<std::os::fd::OwnedFd>) -> Result<()> {
        let Some(notify) = notify else {
            return Ok(());
        };
        use std::os::fd::AsRawFd;
        let iov = [std::io::IoSlice::new(self.payload.as_bytes())];
        let fds = [notify.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(
            self.socket,
            &iov,
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .context(|| "send seccomp notify fd to listenerPath".to_string())?;
        Ok(())
    }
}

/// The JSON a seccomp agent gets with the notify fd (runtime-spec
/// ContainerProcessState), from the state JSON the runtime sent (whose
/// `pid` is the process as the host sees it).
pub fn listener_payload(seccomp: &crate::spec::Seccomp, state_json: &str) -> String {
    let state: serde_json::Value = serde_json::from_str(state_json).unwrap_or_default();
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": state["pid"],
        "metadata": seccomp.listener_metadata.clone().unwrap_or_default(),
        "state": state,
    })
    .to_string()
}

pub struct Settings<'a> {
    pub process: &'a Process,
    pub seccomp: Option<&'a crate::spec::Seccomp>,
    pub preserve_fds: u32,
    pub in_user_ns: bool,
    pub listener: Option<Listener>,
}

pub fn prepare(settings: &Settings) -> Result<Prepared> {
    let process = settings.process;
    apply_rlimits(&process.rlimits)?;
    // chdir may fail before the uid switch on root-squashed mounts, and
    // after it on directories only root can enter: try both, as runc does.
    let early_cwd = nix::unistd::chdir(process.cwd.as_str());
    let mut env = environment(process);
    let path = find_executable(&process.args[0], &env)?;
    if let Some(mask) = process.user.umask {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    if process.no_new_privileges {
        set_no_new_privs()?;
    }
    let mut filter = match settings.seccomp {
        Some(profile) => Some(crate::seccomp::compile(profile)?),
        None => None,
    };
    if !process.no_new_privileges {
        // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which
        // the uid switch may drop: load it now.
        if let Some(f) = filter.take() {
            let notify = f.load()?;
            if let Some(listener) = &settings.listener {
                listener.send(notify)?;
            }
        }
    }
    if let Some(caps) = &process.capabilities {
        crate::capabilities::apply_bounding(caps)?;
        set_keep_caps(true)?;
        switch_user(process, settings.in_user_ns)?;
        set_keep_caps(false)?;
        crate::capabilities::apply_sets(caps)?;
    } else {
        switch_user(process, settings.in_user_ns)?;
    }
    if early_cwd.is_err() {
        nix::unistd::chdir(process.cwd.as_str())
            .context(|| format!("chdir to cwd {:?} set in config.json", process.cwd))?;
    }
    // CVE-2024-21626: a cwd reached through a leaked host fd is outside our
    // root; getcwd then reports "(unreachable)".
    let cwd = nix::unistd::getcwd().context(|| "getcwd".to_string())?;
    if !cwd.starts_with("/") {
        return Err(Error::msg(
            "current working directory is outside of container mount namespace root",
        ));
    }
    // LISTEN_FDS from socket activation are preserved like --preserve-fds.
    let mut keep = settings.preserve_fds;
    if let Some(n) = env
        .iter()
        .find_map(|e| e.strip_prefix("LISTEN_FDS="))
        .and_then(|n| n.parse::<u32>().ok())
    {
        keep = keep.max(n);
        for e in env.iter_mut() {
            if e.starts_with("LISTEN_PID=") {
                *e = "LISTEN_PID=1".to_string();
            }
        }
    }
    close_fds_on_exec(3 + keep);
    Ok(Prepared {
        path,
        args: process.args.clone(),
        env,
        late_seccomp: filter,
        listener: settings.listener.clone(),
    })
}

/// Marks every fd from `first` up close-on-exec, so nothing of the host
/// leaks into the container (CVE-2024-21626), while our own channel stays
/// usable until the exec itself.
pub fn close_fds_on_exec(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0
        && let Ok(entries) = std::fs::read_dir("/proc/self/fd")
    {
        {
            let fds: Vec<i32> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd >= first as i32)
                .collect();
            for fd in fds {
                // SAFETY: setting FD_CLOEXEC on an fd number is harmless.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
}

impl Prepared {
    /// Loads the late seccomp filter, restores the signal state the
    /// program expects, and execs. Returns only on failure.
    pub fn exec(self) -> Error {
        if let Some(filter) = self.late_seccomp {
            match filter.load() {
                Ok(notify) => {
                    if let Some(listener) = &self.listener
                        && let Err(e) = listener.send(notify)
                    {
                        return e;
                    }
                }
                Err(e) => return e,
            }
        }
        reset_signals();
        execute(&self.path, &self.args, &self.env)
    }
}

/// An empty signal mask and default SIGPIPE (the Rust runtime ignores it,
/// and an ignored disposition would survive exec).
pub fn reset_signals() {
    // Every disposition back to the default: a signal the caller ignores
    // (an engine's monitor, a shell's `nohup`) must not stay ignored in
    // the container, where a shell could not even trap it then.
    // SAFETY: resetting dispositions and the mask of our own thread.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uses_process_path_and_reports_like_runc() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        assert!(find_executable("sh", &env).unwrap().ends_with("sh"));
        let err = find_executable("no-such-binary-here", &env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "exec: \"no-such-binary-here\": executable file not found in $PATH"
        );
        let err = find_executable("/no/such", &env).unwrap_err().to_string();
        assert!(err.contains("no such file or directory"), "{err}");
    }

    #[test]
    fn rlimit_names() {
        assert_eq!(
            rlimit_resource("RLIMIT_NOFILE").unwrap(),
            libc::RLIMIT_NOFILE as i32
        );
        assert!(
            rlimit_resource("RLIMIT_FOO")
                .unwrap_err()
                .to_string()
                .contains("RLIMIT_FOO")
        );
    }
}
