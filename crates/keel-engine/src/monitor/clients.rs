//! Attach clients on the monitor's socket: the first one that starts the
//! container, stdin and sizes in, output and the exit out.

use super::*;

impl Monitor {
    /// Waits for the attach client that will start the container; false if
    /// the starting process went away first.
    pub(super) fn wait_for_start_client(&mut self) -> bool {
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

    pub(super) fn accept_clients(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            self.clients.push(Client::new(stream));
        }
    }

    /// Reads what clients sent: hellos, stdin, sizes.
    pub(super) fn read_clients(&mut self, mut running: Option<&mut Running>) {
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

    pub(super) fn broadcast(&mut self, frame: &Frame) {
        for client in self.clients.iter_mut().filter(|c| c.hello.is_some()) {
            client.send(frame);
        }
    }

    /// Sends what is left to clients (briefly) and hangs up on them.
    pub(super) fn close_clients(&mut self) {
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
}
