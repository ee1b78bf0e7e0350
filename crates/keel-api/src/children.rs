//! What the service asks of `keel` itself, as a child process: the
//! commands that fork into a container's namespaces or hold a mount
//! namespace of their own (`cp`, `export`, `save`, `load`) run where that
//! is safe — a fresh process, not a thread of this multi-threaded service
//! — and their tar streams pass through as they come.

use std::process::Stdio;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::http::{ApiError, ApiResult, Reply};
use crate::routes::Call;

/// `keel --root R --runroot RR --cgroup-parent P ARGS...`.
pub fn keel(call: &Call, args: &[&str]) -> ApiResult<Command> {
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::internal(format!("find keel's binary: {e}")))?;
    let mut command = Command::new(exe);
    command
        .arg("--root")
        .arg(&call.state.root)
        .arg("--runroot")
        .arg(&call.state.runroot)
        .arg("--cgroup-parent")
        .arg(&call.state.options.cgroup_parent)
        .args(args)
        .kill_on_drop(true);
    Ok(command)
}

/// Feeds a request body into a child's stdin as it arrives.
pub fn feed(child: &mut Child, body: Incoming) {
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                break;
            }
        }
        let _ = stdin.shutdown().await;
    });
}

/// Waits for a child and turns a failure into an error with its words:
/// 404 when it says something is missing, else `status`.
pub async fn finish(child: Child, status: StatusCode) -> ApiResult<Vec<u8>> {
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| ApiError::internal(format!("wait for keel: {e}")))?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let message = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("keel failed")
        .trim_start_matches("Error: ")
        .to_string();
    let code = if message.contains("No such") || message.contains("Could not find") {
        StatusCode::NOT_FOUND
    } else {
        status
    };
    Err(ApiError::new(code, message))
}

/// A child's stdout as the answer's body, streamed; `first` is what was
/// already read of it.
pub fn stream_stdout(mut child: Child, first: Vec<u8>, content_type: &'static str) -> Reply {
    let (tx, mut reply) = crate::http::channel(content_type);
    let mut stdout = child.stdout.take().expect("piped stdout");
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                        // The client left: the child goes with the answer.
                        return;
                    }
                }
            }
        }
        let _ = child.wait().await;
    });
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    reply
}

/// Spawns with stdout piped and stderr kept for the error.
pub fn spawn(mut command: Command, stdin: bool) -> ApiResult<Child> {
    command
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
        .spawn()
        .map_err(|e| ApiError::internal(format!("run keel: {e}")))
}

/// Reads up to `n` bytes of a child's stdout (less at its end).
pub async fn read_head(child: &mut Child, n: usize) -> Vec<u8> {
    let mut head = vec![0u8; n];
    let mut filled = 0;
    if let Some(stdout) = child.stdout.as_mut() {
        while filled < n {
            match stdout.read(&mut head[filled..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => filled += k,
            }
        }
    }
    head.truncate(filled);
    head
}

/// docker's stat of a path (`X-Docker-Container-Path-Stat`), from the
/// first entry of the tar `keel cp` makes of it: its name, size, mode (as
/// Go's `os.FileMode`: the type in the high bits), mtime and link target.
pub fn path_stat(header: &[u8], path: &str) -> Option<serde_json::Value> {
    if header.len() < 512 {
        return None;
    }
    let octal = |field: &[u8]| -> u64 {
        let text: String = field
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        u64::from_str_radix(text.trim(), 8).unwrap_or(0)
    };
    let text = |field: &[u8]| -> String {
        String::from_utf8_lossy(&field[..field.iter().position(|b| *b == 0).unwrap_or(field.len())])
            .into_owned()
    };
    let perm = octal(&header[100..108]) & 0o7777;
    let size = octal(&header[124..136]);
    let mtime = octal(&header[136..148]) as i64;
    let kind = header[156];
    const DIR: u64 = 1 << 31;
    const SYMLINK: u64 = 1 << 27;
    let mode = match kind {
        b'5' => DIR | perm,
        b'2' => SYMLINK | perm,
        _ => perm,
    };
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("/")
        .to_string();
    let when = jiff::Timestamp::from_second(mtime)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Some(serde_json::json!({
        "name": name,
        "size": if kind == b'5' { 4096 } else { size },
        "mode": mode,
        "mtime": when,
        "linkTarget": if kind == b'2' { text(&header[157..257]) } else { String::new() },
    }))
}

/// The header of the first real entry of a tar stream: pax and GNU long
/// name entries before it are skipped. How many bytes of `stream` it took.
pub fn first_entry(stream: &[u8]) -> Option<(&[u8], usize)> {
    let mut at = 0;
    while at + 512 <= stream.len() {
        let header = &stream[at..at + 512];
        match header[156] {
            b'x' | b'g' | b'L' | b'K' => {
                let size: String = header[124..136]
                    .iter()
                    .take_while(|b| **b != 0)
                    .map(|b| *b as char)
                    .collect();
                let size = usize::from_str_radix(size.trim(), 8).ok()?;
                at += 512 + size.div_ceil(512) * 512;
            }
            _ => return Some((header, at + 512)),
        }
    }
    None
}
