//! `exec`: a new process in a running container. The runtime forks an
//! intermediate that enters the container's namespaces and clones the
//! process with CLONE_PARENT (so it is in the container's pid namespace and
//! our child); the runtime puts it in the container's cgroup, and learns
//! that the exec succeeded when the close-on-exec sync channel hits EOF.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::container::SignalForwarder;
use crate::error::{Error, Result};
use crate::namespaces::Plan;
use crate::process;
use crate::spec::{NamespaceType, Process};
use crate::state::{ContainerDir, Status};
use crate::sync::{Channel, Message};
use crate::util;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
    pub ignore_paused: bool,
}

/// Runs the process; returns its exit code (foreground) or 0 (detached).
pub fn exec(root: &Path, opts: &ExecOptions) -> Result<i32> {
    let dir = ContainerDir::new(root, &opts.id)?;
    let state = dir.load()?;
    match dir.status(&state) {
        Status::Stopped => return Err(Error::msg("cannot exec in a stopped container")),
        Status::Paused if !opts.ignore_paused => {
            return Err(Error::msg("cannot exec in a paused container"));
        }
        _ => {}
    }
    if opts.process.args.is_empty() {
        return Err(Error::msg("exec: process args must not be empty"));
    }
    if crate::vm::is_vm(&state) {
        return crate::vm::exec(&dir, opts);
    }
    if opts.process.terminal && opts.console_socket.is_none() && opts.detach {
        return Err(Error::msg(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    let spec = dir.load_config()?;
    let plan = Plan::for_process(&spec, state.pid)?;
    // Foreground with a terminal and no console socket: we hold the pty.
    let mut proxy = None;
    let console = match &opts.console_socket {
        Some(path) if opts.process.terminal => Some(crate::console::connect(path)?),
        None if opts.process.terminal => {
            let (ours, theirs) = crate::console::Proxy::pair()?;
            proxy = Some(ours);
            Some(theirs)
        }
        _ => None,
    };
    let forwarder = if opts.detach {
        None
    } else {
        Some(SignalForwarder::block()?)
    };
    let listener = crate::container::connect_listener(&spec)?;
    let (parent, child) = Channel::pair()?;
    let in_user_ns = spec.namespace(NamespaceType::User).is_some();
    let ctx = Child {
        plan: &plan,
        process: &opts.process,
        seccomp: spec.linux().seccomp.as_ref(),
        channel: &child,
        console: console.as_ref(),
        listener: listener.as_ref(),
        preserve_fds: opts.preserve_fds,
        in_user_ns,
    };
    let Some(intermediate) = process::fork()? else {
        ctx.intermediate();
    };
    drop(child);
    drop(console);

    let mut pid = None;
    let outcome = (|| -> Result<()> {
        loop {
            match parent.recv()? {
                Some(Message::Pid(p)) => {
                    process::wait_child(intermediate)?;
                    pid = Some(p);
                    state.cgroup.add_pid(p)?;
                    // As runc: the container's score, not the caller's
                    // (a shim runs at its daemon's score + 1).
                    if let Some(adj) = spec.process().oom_score_adj {
                        util::write_file(
                            format!("/proc/{p}/oom_score_adj").as_ref(),
                            &adj.to_string(),
                        )?;
                    }
                    let mut process_state = state.clone();
                    process_state.pid = p;
                    parent.send(&Message::Continue(crate::container::oci_state_json(
                        &process_state,
                        Status::Running,
                    )))?;
                }
                Some(Message::Failed(msg)) => return Err(Error::Msg(msg)),
                Some(other) => return Err(Error::msg(format!("unexpected message: {other:?}"))),
                // EOF: the process exec'd (the channel is close-on-exec).
                None if pid.is_some() => return Ok(()),
                None => return Err(Error::msg("exec: the process exited before it started")),
            }
        }
    })();
    if let Err(e) = outcome {
        match pid {
            Some(p) => {
                let _ = process::wait_child(p);
            }
            None => {
                let _ = process::wait_child(intermediate);
            }
        }
        return Err(e);
    }
    let pid = pid.expect("set before Ok");
    if let Some(pid_file) = &opts.pid_file {
        util::write_atomic(pid_file, pid.to_string().as_bytes())?;
    }
    let attached = match proxy {
        Some(proxy) => Some(proxy.receive_master().and_then(crate::console::attach)?),
        None => None,
    };
    let status = match forwarder {
        None => Ok(0),
        Some(forwarder) => forwarder.wait(pid, attached.as_ref()),
    };
    if let Some(attached) = attached {
        attached.finish();
    }
    status
}

struct Child<'a> {
    plan: &'a Plan,
    process: &'a Process,
    seccomp: Option<&'a crate::spec::Seccomp>,
    channel: &'a Channel,
    console: Option<&'a OwnedFd>,
    listener: Option<&'a OwnedFd>,
    preserve_fds: u32,
    in_user_ns: bool,
}

impl Child<'_> {
    fn intermediate(&self) -> ! {
        process::set_parent_death_signal(libc::SIGKILL);
        let result = (|| -> Result<()> {
            self.plan.enter()?;
            match process::clone_parent()? {
                None => self.run(),
                Some(pid) => self.channel.send(&Message::Pid(pid)),
            }
        })();
        self.channel.exit_with(result)
    }

    fn run(&self) -> ! {
        process::set_parent_death_signal(libc::SIGKILL);
        let error = match self.steps() {
            Ok(prepared) => prepared.exec(),
            Err(e) => e,
        };
        let _ = self.channel.send(&Message::Failed(error.to_string()));
        let _ = std::io::stderr().flush();
        process::exit_child(127)
    }

    fn steps(&self) -> Result<process::Prepared> {
        let state_json = self.channel.wait_continue()?;
        if let Some(socket) = self.console {
            nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
            crate::console::setup(socket, self.process.console_size, false)?;
        }
        let prepared = process::prepare(&process::Settings {
            process: self.process,
            seccomp: self.seccomp,
            preserve_fds: self.preserve_fds,
            in_user_ns: self.in_user_ns,
            listener: match (self.listener, self.seccomp) {
                (Some(socket), Some(seccomp)) => Some(process::Listener {
                    socket: socket.as_raw_fd(),
                    payload: process::listener_payload(seccomp, &state_json),
                }),
                _ => None,
            },
        })?;
        process::set_parent_death_signal(0);
        Ok(prepared)
    }
}
