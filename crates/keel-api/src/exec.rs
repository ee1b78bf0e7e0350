//! `exec`: create (a record in this service), start (hijacked, or
//! detached), resize, inspect.
//!
//! The process is run the way `keel exec` runs it — by `keel exec` itself,
//! a child of this service with pipes (or a terminal this service holds)
//! for its stdio: the runtime's exec joins the container from a process of
//! its own, sealed as the CLI seals it, and this service never enters a
//! container. Its exit code is the exec's.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containers::blocking;
use crate::http::{ApiError, ApiResult, Reply, json, json_status, status};
use crate::routes::Call;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub privileged: bool,
    pub detach_keys: Option<String>,
}

#[derive(Debug, Clone)]
struct Record {
    container: String,
    config: ExecConfig,
    running: bool,
    started: bool,
    exit_code: Option<i32>,
    pid: u32,
    /// The terminal's master side, for resize.
    terminal: Option<Arc<OwnedFd>>,
}

/// The execs this service made (docker keeps them until the container
/// goes; keel keeps them while the service runs).
#[derive(Default)]
pub struct Execs {
    records: Mutex<HashMap<String, Record>>,
}

impl std::fmt::Debug for Execs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Execs")
    }
}

impl Execs {
    fn update(&self, id: &str, f: impl FnOnce(&mut Record)) {
        if let Some(r) = self.records.lock().expect("execs lock").get_mut(id) {
            f(r);
        }
    }

    fn get(&self, id: &str) -> ApiResult<Record> {
        self.records
            .lock()
            .expect("execs lock")
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }
}

/// `POST /containers/{id}/exec`.
pub async fn create(call: Call, id: &str, body: Incoming) -> ApiResult<Reply> {
    let config: ExecConfig = crate::http::read_json(body).await?;
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let state = call.state.clone();
    let name = id.to_string();
    let container = blocking(move || Ok(state.engine()?.find(&name)?)).await?;
    if !container.state.status.is_active() {
        return Err(ApiError::conflict(format!(
            "container {} is not running",
            container.id
        )));
    }
    if container.state.status == keel_engine::db::Status::Paused {
        return Err(ApiError::conflict(format!(
            "container {} is paused, unpause the container before exec",
            container.id
        )));
    }
    let exec_id = keel_engine::engine::random_id()?;
    call.state.execs.records.lock().expect("execs lock").insert(
        exec_id.clone(),
        Record {
            container: container.id,
            config,
            running: false,
            started: false,
            exit_code: None,
            pid: 0,
            terminal: None,
        },
    );
    Ok(json_status(
        StatusCode::CREATED,
        &serde_json::json!({ "Id": exec_id }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: Option<bool>,
}

/// The `keel exec` command line for a record.
fn command(
    call: &Call,
    record: &Record,
    detach: bool,
    tty: bool,
) -> ApiResult<tokio::process::Command> {
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::internal(format!("find keel's binary: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--root")
        .arg(&call.state.root)
        .arg("--runroot")
        .arg(&call.state.runroot)
        .arg("--cgroup-parent")
        .arg(&call.state.options.cgroup_parent)
        .arg("exec");
    let c = &record.config;
    if detach {
        cmd.arg("-d");
    }
    if c.attach_stdin && !detach {
        cmd.arg("-i");
    }
    if tty {
        cmd.arg("-t");
    }
    if c.privileged {
        cmd.arg("--privileged");
    }
    for e in c.env.iter().flatten() {
        // KEY alone would be read from this service's environment.
        if e.contains('=') {
            cmd.arg("-e").arg(e);
        }
    }
    if let Some(u) = c.user.as_deref().filter(|u| !u.is_empty()) {
        cmd.arg("-u").arg(u);
    }
    if let Some(w) = c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        cmd.arg("-w").arg(w);
    }
    cmd.arg(&record.container);
    cmd.args(c.cmd.iter().flatten());
    cmd.kill_on_drop(false);
    Ok(cmd)
}

/// `POST /exec/{id}/start`: hijacked unless `Detach`.
pub async fn start(
    call: Call,
    id: &str,
    extensions: http::Extensions,
    body: Incoming,
) -> ApiResult<Reply> {
    let start: StartBody = crate::http::read_json(body).await?;
    let record = call.state.execs.get(id)?;
    if record.started {
        return Err(ApiError::conflict(format!(
            "Error: Exec command {id} has already run"
        )));
    }
    let tty = start.tty.unwrap_or(record.config.tty);
    let execs = call.state.clone();
    let exec_id = id.to_string();
    execs.execs.update(&exec_id, |r| r.started = true);
    if start.detach {
        let mut cmd = command(&call, &record, true, tty)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = cmd
            .output()
            .await
            .map_err(|e| ApiError::internal(format!("run keel exec: {e}")))?;
        if !output.status.success() {
            return Err(ApiError::internal(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        return Ok(status(StatusCode::OK));
    }
    let upgrade = call
        .headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let mut request = http::Request::new(());
    *request.extensions_mut() = extensions;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let mut cmd = command(&call, &record, false, tty)?;
    let state = call.state.clone();
    // The terminal (with -t) or the pipes, made before the answer so that a
    // failure is the answer's.
    let terminal = if tty { Some(open_terminal()?) } else { None };
    match &terminal {
        Some((_, slave)) => {
            let io = |fd: &OwnedFd| -> ApiResult<Stdio> {
                Ok(Stdio::from(
                    fd.try_clone()
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                ))
            };
            cmd.stdin(io(slave)?).stdout(io(slave)?).stderr(io(slave)?);
            // SAFETY: in the child before exec: a session of its own with
            // the terminal as its controlling one (resize reaches it).
            unsafe {
                cmd.pre_exec(move || {
                    libc::setsid();
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                    Ok(())
                });
            }
        }
        None => {
            cmd.stdin(if record.config.attach_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("run keel exec: {e}")))?;
    let master = terminal.map(|(master, slave)| {
        drop(slave);
        Arc::new(master)
    });
    let pid = child.id().unwrap_or(0);
    state.execs.update(&exec_id, |r| {
        r.running = true;
        r.pid = pid;
        r.terminal = master.clone();
    });
    let hold = state.activity.hold();
    tokio::spawn(async move {
        let _hold = hold;
        let io = match on_upgrade.await {
            Ok(upgraded) => Some(TokioIo::new(upgraded)),
            Err(_) => None,
        };
        // The exit code is recorded before the client's stream ends: docker's
        // CLI asks for it the moment the stream does.
        let record = |code: i32| {
            state.execs.update(&exec_id, |r| {
                r.running = false;
                r.exit_code = Some(code);
                r.terminal = None;
            })
        };
        match (io, master) {
            (Some(io), Some(master)) => pump_terminal(io, master, &mut child, record).await,
            (Some(io), None) => pump_pipes(io, &mut child, record).await,
            (None, _) => record(child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1)),
        }
    });
    let kind = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut reply = http::Response::new(crate::http::empty());
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(kind),
    );
    if upgrade {
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = reply.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("Upgrade"),
        );
        headers.insert(http::header::UPGRADE, http::HeaderValue::from_static("tcp"));
    }
    Ok(reply)
}

fn open_terminal() -> ApiResult<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty fills two new fds.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ApiError::internal(format!(
            "open a terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: new fds we own.
    unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok((OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)))
    }
}

/// Without a terminal: the child's stdout and stderr as docker's
/// multiplexed frames, the client's bytes to its stdin (closed at the
/// client's half-close). The connection ends after the child.
async fn pump_pipes(
    io: TokioIo<hyper::upgrade::Upgraded>,
    child: &mut tokio::process::Child,
    record: impl FnOnce(i32),
) {
    let (mut from_client, to_client) = tokio::io::split(io);
    let to_client = Arc::new(tokio::sync::Mutex::new(to_client));
    let stdin = child.stdin.take();
    let stdin_task = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            let _ = tokio::io::copy(&mut from_client, &mut stdin).await;
            let _ = stdin.shutdown().await;
        }
    });
    let forward = |reader: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, stream: u8| {
        let to_client = to_client.clone();
        tokio::spawn(async move {
            let Some(mut reader) = reader else { return };
            let mut buffer = vec![0u8; 32 * 1024];
            while let Ok(n) = reader.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                let frame = crate::streams::mux(stream, &buffer[..n]);
                let mut out = to_client.lock().await;
                if out.write_all(&frame).await.is_err() {
                    break;
                }
                let _ = out.flush().await;
            }
        })
    };
    let out = forward(child.stdout.take().map(|s| Box::new(s) as _), 1);
    let err = forward(child.stderr.take().map(|s| Box::new(s) as _), 2);
    let _ = out.await;
    let _ = err.await;
    let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
    stdin_task.abort();
    record(code);
    let _ = to_client.lock().await.shutdown().await;
}

/// With a terminal: raw bytes both ways through its master side.
async fn pump_terminal(
    io: TokioIo<hyper::upgrade::Upgraded>,
    master: Arc<OwnedFd>,
    child: &mut tokio::process::Child,
    record: impl FnOnce(i32),
) {
    let (mut from_client, mut to_client) = tokio::io::split(io);
    let (Ok(read_fd), Ok(write_fd)) = (master.try_clone(), master.try_clone()) else {
        return record(child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1));
    };
    let mut reader = tokio::fs::File::from_std(std::fs::File::from(read_fd));
    let mut writer = tokio::fs::File::from_std(std::fs::File::from(write_fd));
    let input = tokio::spawn(async move {
        let mut buffer = vec![0u8; 4096];
        while let Ok(n) = from_client.read(&mut buffer).await {
            if n == 0 || writer.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            let _ = writer.flush().await;
        }
    });
    let (recorded, wait_recorded) = tokio::sync::oneshot::channel::<()>();
    let output = tokio::spawn(async move {
        let mut buffer = vec![0u8; 32 * 1024];
        // EIO once the last slave side closes: the command is done.
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 || to_client.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            let _ = to_client.flush().await;
        }
        let _ = wait_recorded.await;
        let _ = to_client.shutdown().await;
    });
    let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
    record(code);
    let _ = recorded.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), output).await;
    input.abort();
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(call: Call, id: &str) -> ApiResult<Reply> {
    let rows: u16 = call.query.int("h")?.unwrap_or(0);
    let cols: u16 = call.query.int("w")?.unwrap_or(0);
    let record = call.state.execs.get(id)?;
    if let Some(master) = record.terminal {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our terminal's master with a valid winsize.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
    Ok(status(StatusCode::CREATED))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(call: Call, id: &str) -> ApiResult<Reply> {
    let r = call.state.execs.get(id)?;
    let cmd = r.config.cmd.clone().unwrap_or_default();
    Ok(json(&serde_json::json!({
        "ID": id,
        "Running": r.running,
        "ExitCode": r.exit_code,
        "ProcessConfig": {
            "tty": r.config.tty,
            "entrypoint": cmd.first(),
            "arguments": cmd.get(1..).unwrap_or_default(),
            "privileged": r.config.privileged,
            "user": r.config.user.clone().unwrap_or_default(),
        },
        "OpenStdin": r.config.attach_stdin,
        "OpenStdout": r.config.attach_stdout,
        "OpenStderr": r.config.attach_stderr,
        "CanRemove": false,
        "ContainerID": r.container,
        "DetachKeys": r.config.detach_keys.clone().unwrap_or_default(),
        "Pid": r.pid,
    })))
}
