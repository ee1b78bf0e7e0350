//! Health checks: probes run in the container on their interval, their
//! results recorded.

use super::*;

impl Monitor {
    /// Starts a probe when one is due; kills one past its timeout.
    pub(super) fn tick_health(&mut self, running: &mut Running) {
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
    pub(super) fn start_probe(&mut self, args: &[String]) -> Result<(i32, OwnedFd)> {
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
    pub(super) fn finish_probe(&mut self, running: &mut Running, exit_code: i32) {
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
