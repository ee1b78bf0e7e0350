//! The poll loop while the container runs: output to the log and the
//! clients, signals, reaping, the exit.

use super::*;

impl Monitor {
    /// Sleeps `delay` before a restart; false if a user stopped the
    /// container meanwhile (or it was removed).
    pub(super) fn sleep_unless_stopped(&mut self, delay: Duration) -> bool {
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
    pub(super) fn watch(&mut self, running: &mut Running) -> i32 {
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

    pub(super) fn forward(&mut self, stream: Stream, data: Vec<u8>) {
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
    pub(super) fn reap(&mut self, running: &mut Running) {
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
