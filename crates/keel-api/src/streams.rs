//! Streams over hijacked connections: `attach` (and `exec start`, later),
//! docker's multiplexed framing, and the order docker's `run` uses —
//! attach, then wait, then start — on a container that is not running
//! yet.
//!
//! A container's output comes from its monitor's socket (keel-engine's
//! attach protocol). An attach or a wait that comes before the start is
//! kept here, in [`Pending`], until this service starts the container:
//! the start then connects before the container runs (so no output and no
//! exit is missed), hands the connection to the attached client and tells
//! the waiters the exit code.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use keel_engine::attach::{Frame, Hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::containers::blocking;
use crate::http::{ApiError, ApiResult, Reply, empty};
use crate::routes::Call;

/// docker's stream ids in the multiplexed framing.
const STDOUT: u8 = 1;
const STDERR: u8 = 2;

/// One 8-byte-headed frame of docker's multiplexed stream.
pub fn mux(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend([stream, 0, 0, 0]);
    out.extend((data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A client that attached to a container that was not running yet. It is
/// recorded before the upgrade's answer goes out (a client that has the
/// answer may start the container at once), so the connection itself is
/// still to come: `upgrade` yields it once the answer is written.
pub struct Attached {
    pub upgrade: OnUpgrade,
    pub hello: Hello,
    pub detach_keys: Vec<u8>,
    /// Keeps the service from exiting while the client waits.
    pub hold: crate::Hold,
}

#[derive(Default)]
struct Entry {
    attached: Option<Attached>,
    waiters: Vec<oneshot::Sender<i32>>,
}

/// Attaches and waits on containers this service has not started yet.
#[derive(Default)]
pub struct Pending {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl Pending {
    fn attach(&self, id: &str, attached: Attached) {
        let mut entries = self.entries.lock().expect("pending lock");
        entries.entry(id.to_string()).or_default().attached = Some(attached);
    }

    fn wait(&self, id: &str) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        let mut entries = self.entries.lock().expect("pending lock");
        entries.entry(id.to_string()).or_default().waiters.push(tx);
        rx
    }

    fn holds(&self, id: &str) -> bool {
        let entries = self.entries.lock().expect("pending lock");
        entries.contains_key(id)
    }

    fn take(&self, id: &str) -> Option<(Option<Attached>, Vec<oneshot::Sender<i32>>)> {
        let mut entries = self.entries.lock().expect("pending lock");
        entries.remove(id).map(|e| (e.attached, e.waiters))
    }
}

/// The answer that hijacks the connection: 101 when the client asked for
/// an upgrade (docker's CLI, docker-py), else 200 with the stream type.
fn hijack_reply(upgrade: bool, tty: bool) -> Reply {
    let mut reply = Response::new(empty());
    let kind = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if upgrade {
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = reply.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    }
    reply
}

/// `POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1`.
pub async fn attach(
    call: Call,
    id: &str,
    extensions: http::Extensions,
    _body: Incoming,
) -> ApiResult<Reply> {
    let state = call.state.clone();
    let name = id.to_string();
    let container = blocking(move || Ok(state.engine()?.find(&name)?)).await?;
    let q = &call.query;
    let hello = Hello {
        stdin: q.bool("stdin"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        start: false,
    };
    let detach_keys = keel_engine::attach::parse_detach_keys(
        q.get("detachKeys")
            .filter(|k| !k.is_empty())
            .unwrap_or("ctrl-p,ctrl-q"),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !q.bool("stream") && !q.bool("logs") {
        return Err(ApiError::bad_request("either logs or stream must be set"));
    }
    let upgrade = call
        .headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let tty = container.spec.tty;
    let mut request = http::Request::new(());
    *request.extensions_mut() = extensions;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let state = call.state.clone();
    let id = container.id.clone();
    let active = container.state.status.is_active();
    let hold = call.state.activity.hold();
    if !active {
        // Recorded now, before the answer: docker's CLI starts the
        // container as soon as it has it.
        state.pending.attach(
            &id,
            Attached {
                upgrade: on_upgrade,
                hello,
                detach_keys,
                hold,
            },
        );
        return Ok(hijack_reply(upgrade, tty));
    }
    tokio::spawn(async move {
        let _hold = hold;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        {
            let name = id.clone();
            let engine_state = state.clone();
            let hello_for_monitor = hello.clone();
            let attached = blocking(move || {
                let mut engine = engine_state.engine()?;
                Ok(engine.attach(&name, hello_for_monitor)?.1)
            })
            .await;
            if let Ok(stream) = attached {
                pump(io, stream, hello, tty, detach_keys, Vec::new()).await;
            }
        }
    });
    Ok(hijack_reply(upgrade, tty))
}

/// Starts a container that attaches or waits are pending on: connects
/// before it runs and hands the stream over. None if nothing was pending
/// (the caller starts it plainly).
pub async fn start_pending(call: &Call, id: &str) -> ApiResult<Option<()>> {
    let Some((attached, waiters)) = call.state.pending.take(id) else {
        return Ok(None);
    };
    // The attached client's connection: its upgrade was answered before
    // the client could send this start. A client that went away is as if
    // it had not attached.
    let attached = match attached {
        Some(a) => match a.upgrade.await {
            Ok(upgraded) => Some((TokioIo::new(upgraded), a.hello, a.detach_keys, a.hold)),
            Err(e) => {
                tracing::debug!("start {id}: the attached client's upgrade failed: {e}");
                None
            }
        },
        None => None,
    };
    let hello = attached
        .as_ref()
        .map(|(_, hello, ..)| hello.clone())
        .unwrap_or_default();
    let state = call.state.clone();
    let name = id.to_string();
    let started = blocking(move || {
        let mut engine = state.engine()?;
        Ok(engine.start_attached(&name, hello)?)
    })
    .await;
    let (container, stream) = match started {
        Ok(started) => started,
        Err(e) => {
            // The attached client hears why, as docker's CLI expects the
            // start's error from the start request.
            if let Some((mut io, ..)) = attached {
                let _ = io.shutdown().await;
            }
            return Err(e);
        }
    };
    match attached {
        Some((io, hello, detach_keys, hold)) => {
            tokio::spawn(async move {
                let _hold = hold;
                pump(io, stream, hello, container.spec.tty, detach_keys, waiters).await
            });
        }
        None => {
            tokio::spawn(async move {
                let code = blocking(move || Ok(exit_of(stream))).await.unwrap_or(-1);
                for w in waiters {
                    let _ = w.send(code);
                }
            });
        }
    }
    Ok(Some(()))
}

/// Reads a monitor connection to its end: the exit code, or -1.
fn exit_of(mut stream: std::os::unix::net::UnixStream) -> i32 {
    loop {
        match keel_engine::attach::read_frame(&mut stream) {
            Ok(Some(Frame::Exit(info))) => return info.exit_code,
            Ok(Some(_)) => continue,
            other => {
                tracing::debug!("start: the monitor's connection ended before the exit: {other:?}");
                return -1;
            }
        }
    }
}

/// Carries a container's streams between its monitor and a hijacked
/// client until the container exits (or the client goes, or types the
/// detach keys: the container keeps running). Tells `waiters` the exit
/// code.
async fn pump(
    io: TokioIo<Upgraded>,
    stream: std::os::unix::net::UnixStream,
    hello: Hello,
    tty: bool,
    detach_keys: Vec<u8>,
    waiters: Vec<oneshot::Sender<i32>>,
) {
    let waited = !waiters.is_empty();
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(monitor) = tokio::net::UnixStream::from_std(stream) else {
        return;
    };
    let (mut from_monitor, mut to_monitor) = monitor.into_split();
    let (mut from_client, mut to_client) = tokio::io::split(io);
    let (detach_tx, mut detached) = oneshot::channel::<()>();
    // stdin: the client's bytes to the monitor, its end as StdinClose; on a
    // terminal, the detach keys end the session.
    // The task keeps its half of the monitor's connection until the pump
    // ends: the monitor hangs up on a client whose side closes, before the
    // exit it would send.
    let stdin = tokio::spawn(async move {
        if !hello.stdin {
            return std::future::pending::<()>().await;
        }
        let mut scanner =
            keel_engine::attach::DetachScanner::new(if tty { detach_keys } else { Vec::new() });
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_client.read(&mut buffer).await {
                Ok(0) | Err(_) => {
                    let _ = to_monitor.write_all(&Frame::StdinClose.encode()).await;
                    return std::future::pending::<()>().await;
                }
                Ok(n) => {
                    let (forward, detach) = scanner.feed(&buffer[..n]);
                    if !forward.is_empty() {
                        let frame = Frame::Stdin(forward).encode();
                        if to_monitor.write_all(&frame).await.is_err() {
                            return std::future::pending::<()>().await;
                        }
                    }
                    if detach {
                        let _ = detach_tx.send(());
                        return std::future::pending::<()>().await;
                    }
                }
            }
        }
    });
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut watching = true;
    let code = loop {
        match Frame::decode(&buffer) {
            Ok(Some((frame, used))) => {
                buffer.drain(..used);
                let bytes = match frame {
                    Frame::Stdout(data) if tty => data,
                    Frame::Stdout(data) => mux(STDOUT, &data),
                    Frame::Stderr(data) if tty => data,
                    Frame::Stderr(data) => mux(STDERR, &data),
                    Frame::Exit(info) => break info.exit_code,
                    _ => continue,
                };
                if to_client.write_all(&bytes).await.is_err() {
                    // The client left: the container runs on; waiters
                    // still get its exit, else the monitor's connection
                    // goes now.
                    if !waited {
                        break -1;
                    }
                    break drain_exit(&mut from_monitor, buffer).await;
                }
                let _ = to_client.flush().await;
            }
            Ok(None) => {
                tokio::select! {
                    read = from_monitor.read(&mut chunk) => match read {
                        Ok(0) | Err(_) => {
                            tracing::debug!("attach: the monitor's connection ended before the exit");
                            break -1;
                        }
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    },
                    detach = &mut detached, if watching => {
                        if detach.is_err() {
                            // No stdin, or it ended: nothing to watch.
                            watching = false;
                            continue;
                        }
                        let _ = to_client.shutdown().await;
                        if !waited {
                            break -1;
                        }
                        break drain_exit(&mut from_monitor, buffer).await;
                    }
                }
            }
            Err(_) => break -1,
        }
    };
    stdin.abort();
    let _ = to_client.shutdown().await;
    for w in waiters {
        let _ = w.send(code);
    }
}

/// Reads the rest of a monitor connection for the exit.
async fn drain_exit(
    from_monitor: &mut tokio::net::unix::OwnedReadHalf,
    mut buffer: Vec<u8>,
) -> i32 {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match Frame::decode(&buffer) {
            Ok(Some((Frame::Exit(info), _))) => return info.exit_code,
            Ok(Some((_, used))) => {
                buffer.drain(..used);
            }
            Ok(None) => match from_monitor.read(&mut chunk).await {
                Ok(0) | Err(_) => return -1,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            },
            Err(_) => return -1,
        }
    }
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`.
pub async fn wait(call: Call, id: &str) -> ApiResult<Reply> {
    let condition = call
        .query
        .get("condition")
        .unwrap_or("not-running")
        .to_string();
    if !["not-running", "next-exit", "removed"].contains(&condition.as_str()) {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {condition:?}"
        )));
    }
    let state = call.state.clone();
    let name = id.to_string();
    let container = blocking(move || Ok(state.engine()?.find(&name)?)).await?;
    // A container that is not running waits for a start: recorded before
    // the headers go, as the client may start it as soon as it has them.
    let told = (!container.state.status.is_active() && condition != "not-running")
        .then(|| call.state.pending.wait(&container.id));
    // docker's clients wait for the headers before they start the
    // container: they go now, the status when the container is done.
    let (tx, reply) = crate::http::channel("application/json");
    let state = call.state.clone();
    tokio::spawn(async move {
        let code = wait_for(&state, container, &condition, told).await;
        let body = match code {
            Ok(code) => serde_json::json!({"StatusCode": code, "Error": null}),
            Err(e) => serde_json::json!({"StatusCode": -1, "Error": {"Message": e.message}}),
        };
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.push(b'\n');
        let _ = tx.send(Bytes::from(bytes)).await;
    });
    Ok(reply)
}

async fn wait_for(
    state: &crate::State,
    container: keel_engine::db::Container,
    condition: &str,
    told: Option<oneshot::Receiver<i32>>,
) -> ApiResult<i32> {
    let id = container.id.clone();
    let code = if let Some(mut told) = told {
        // Created or exited: the next exit, after a start (this service's,
        // which tells us; or anyone's, which we see running).
        loop {
            tokio::select! {
                code = &mut told => break code.unwrap_or_else(|_| {
                    tracing::debug!("wait {id}: the start ended without an exit");
                    -1
                }),
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
            if !state.pending.holds(&id) {
                // This service started it: the exit comes from the start.
                break told.await.unwrap_or_else(|_| {
                    tracing::debug!("wait {id}: the start ended without an exit (taken)");
                    -1
                });
            }
            let probe = state.clone();
            let name = id.clone();
            let now = blocking(move || Ok(probe.engine()?.find(&name).ok())).await?;
            match now {
                Some(c) if c.state.status.is_active() => {
                    let probe = state.clone();
                    let name = id.clone();
                    break blocking(move || Ok(probe.engine()?.wait(&name)?)).await?;
                }
                Some(_) => continue,
                None => break 0,
            }
        }
    } else if container.state.status.is_active() {
        let state = state.clone();
        let name = id.clone();
        blocking(move || Ok(state.engine()?.wait(&name)?)).await?
    } else {
        // Not running, and "not-running" asked: its last exit.
        container.state.exit_code
    };
    if condition == "removed" {
        // The monitor removes an AutoRemove container after its exit.
        for _ in 0..600 {
            let probe = state.clone();
            let name = id.clone();
            let gone = blocking(move || Ok(probe.engine()?.find(&name).is_err())).await?;
            if gone {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }
    Ok(code)
}

/// Bytes as a chunk of a streamed body.
pub fn chunk(data: Vec<u8>) -> Bytes {
    Bytes::from(data)
}
