//! Starting (with its monitor), attaching, stopping, killing and
//! removing a container.

use super::*;

/// How a stop began: nothing to stop, or the stop signal sent (with the
/// signal and the seconds to wait before SIGKILL).
enum Begun {
    NotRunning(Container),
    Signalled(Container, i32, u32),
}

impl Engine {
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
    pub(super) fn spawn_monitor(
        &mut self,
        container: &Container,
        wait_for_attach: bool,
    ) -> Result<Report> {
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
        if unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0 {
            // Still running: a long-lived caller (the API service) reaps it
            // later with reap_monitors; a CLI's exit leaves it to init.
            SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        }
        report
    }

    pub(super) fn lock(&self, id: &str) -> Result<File> {
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
        self.stop_many(&[name], timeout)
            .pop()
            .expect("one outcome per container")
    }

    /// [`Engine::stop`] of several containers at once: every stop signal
    /// is sent first, then each container gets its own timeout, all running
    /// together (so stopping N containers that ignore SIGTERM takes one
    /// timeout, not N). One outcome per name, in order.
    pub fn stop_many(&mut self, names: &[&str], timeout: Option<u32>) -> Vec<Result<Container>> {
        struct Stopping {
            at: usize,
            container: Container,
            signal: i32,
            deadline: Instant,
            killed: bool,
            /// (pid, start time) of the monitor and of the init.
            monitor: (i32, u64),
            init: (i32, u64),
        }
        let mut outcomes: Vec<Option<Result<Container>>> =
            std::iter::repeat_with(|| None).take(names.len()).collect();
        let mut stopping = Vec::new();
        for (at, name) in names.iter().enumerate() {
            match self.begin_stop(name, timeout) {
                Ok(Begun::NotRunning(stopped)) => outcomes[at] = Some(Ok(stopped)),
                Ok(Begun::Signalled(container, signal, timeout)) => {
                    let current = self.db.find(&container.id).ok();
                    let state = current.as_ref().map(|c| &c.state);
                    stopping.push(Stopping {
                        at,
                        signal,
                        deadline: Instant::now() + Duration::from_secs(u64::from(timeout)),
                        killed: false,
                        monitor: state.map_or((0, 0), |s| (s.monitor_pid, s.monitor_start)),
                        init: state.map_or((0, 0), |s| (s.pid, s.pid_start)),
                        container,
                    })
                }
                Err(e) => outcomes[at] = Some(Err(e)),
            }
        }
        let alive = |p: (i32, u64)| p.0 > 0 && keel_runtime::util::process_alive(p.0, p.1);
        while !stopping.is_empty() {
            let now = Instant::now();
            let mut still = Vec::new();
            for mut s in stopping {
                if !alive(s.monitor) && !alive(s.init) {
                    self.event(&s.container, "stop", &[]);
                    let ended_by = if s.killed { libc::SIGKILL } else { s.signal };
                    outcomes[s.at] = Some(self.reconcile_id(&s.container.id, Some(128 + ended_by)));
                    continue;
                }
                if now >= s.deadline {
                    if s.killed {
                        outcomes[s.at] = Some(Err(Error::msg(format!(
                            "container {} did not stop after SIGKILL",
                            s.container.name
                        ))));
                        continue;
                    }
                    let _ = keel_runtime::container::kill(
                        &self.runtime_root(),
                        &s.container.id,
                        libc::SIGKILL,
                        true,
                    );
                    s.killed = true;
                    s.deadline = now + Duration::from_secs(30);
                }
                still.push(s);
            }
            stopping = still;
            if stopping.is_empty() {
                break;
            }
            // Until one of them ends, or the next deadline.
            let next = stopping
                .iter()
                .map(|s| s.deadline)
                .min()
                .expect("not empty");
            let pids: Vec<i32> = stopping
                .iter()
                .map(|s| {
                    if alive(s.monitor) {
                        s.monitor.0
                    } else {
                        s.init.0
                    }
                })
                .collect();
            let left = next.saturating_duration_since(Instant::now());
            wait_any_exit(&pids, left.min(Duration::from_millis(250)));
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every container has an outcome"))
            .collect()
    }

    /// The first half of a stop: the stop signal sent.
    fn begin_stop(&mut self, name: &str, timeout: Option<u32>) -> Result<Begun> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Ok(Begun::NotRunning(container));
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
        Ok(Begun::Signalled(container, signal, timeout))
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
    pub(super) fn wait_until_stopped(&mut self, container: &Container, timeout: Duration) -> bool {
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
}
