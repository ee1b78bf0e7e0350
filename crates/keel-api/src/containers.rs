//! `/containers/...`: each handler opens the engine on a blocking thread
//! (the engine's calls are synchronous: SQLite, the monitor's socket) and
//! answers in docker's shapes, from keel-engine's views.

use http::StatusCode;
use hyper::body::Incoming;
use keel_engine::db::Container;
use keel_engine::views;

use crate::http::{ApiError, ApiResult, Reply, json, json_status, status};
use crate::routes::Call;

/// Runs engine work on a blocking thread.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a request's worker failed: {e}")))?
}

thread_local! {
    /// Each blocking thread's engine, kept between requests (opening one
    /// checks the schema in a write transaction); it goes with the thread
    /// when the pool lets an idle thread go.
    static ENGINE: std::cell::RefCell<Option<(std::path::PathBuf, keel_engine::Engine)>> =
        const { std::cell::RefCell::new(None) };
}

/// Engine work on a blocking thread, with that thread's engine.
pub async fn with_engine<T: Send + 'static>(
    call: &Call,
    f: impl FnOnce(&mut keel_engine::Engine) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let state = call.state.clone();
    blocking(move || {
        ENGINE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.as_ref().is_none_or(|(root, _)| *root != state.root) {
                *slot = Some((state.root.clone(), state.engine()?));
            }
            let (_, engine) = slot.as_mut().expect("an engine was just opened");
            f(engine)
        })
    })
    .await
}

/// `GET /containers/json?all&limit&size&filters`.
pub async fn list(call: Call) -> ApiResult<Reply> {
    let all = call.query.bool("all");
    let size = call.query.bool("size");
    let limit: Option<i64> = call.query.int("limit")?;
    let filters = call.query.filter_flags()?;
    let state = call.state.clone();
    let rows = with_engine(&call, move |engine| {
        let mut containers = engine.list()?;
        if !all && limit.is_none_or(|l| l <= 0) {
            containers.retain(|c| c.state.status.is_active());
        }
        let mut kept = Vec::new();
        for c in containers {
            if views::container::matches_filters(&c, &filters)? {
                kept.push(c);
            }
        }
        if let Some(limit) = limit.filter(|l| *l > 0) {
            kept.truncate(limit as usize);
        }
        let image_sizes = if size {
            image_sizes(&state)?
        } else {
            Default::default()
        };
        Ok(kept
            .iter()
            .map(|c| {
                let sizes = size.then(|| {
                    (
                        keel_engine::copy::tree_size(&engine.layout.diff(&c.id)),
                        image_sizes.get(&c.image_id).copied().unwrap_or(0),
                    )
                });
                views::container::summary(engine, c, sizes)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json(&rows))
}

fn image_sizes(state: &crate::State) -> ApiResult<std::collections::BTreeMap<String, u64>> {
    Ok(state
        .images()?
        .metadata
        .images()
        .map_err(keel_engine::Error::from)?
        .into_iter()
        .map(|(record, _)| (record.id.to_string(), record.size))
        .collect())
}

/// `POST /containers/create?name=`.
pub async fn create(call: Call, body: Incoming) -> ApiResult<Reply> {
    let request: crate::create::CreateBody = crate::http::read_json(body).await?;
    let name = call.query.get("name").map(str::to_string);
    let (spec, warnings) = crate::create::to_spec(request, name)?;
    let state = call.state.clone();
    let container = blocking(move || {
        let images = state.images()?;
        let mut engine = state.engine()?;
        Ok(engine.create(&images, spec)?)
    })
    .await?;
    Ok(json_status(
        StatusCode::CREATED,
        &serde_json::json!({"Id": container.id, "Warnings": warnings}),
    ))
}

/// `GET /containers/{id}/json?size`.
pub async fn inspect(call: Call, id: &str) -> ApiResult<Reply> {
    let name = id.to_string();
    let size = call.query.bool("size");
    let value = with_engine(&call, move |engine| {
        let c = engine.find(&name)?;
        Ok(views::container::inspect_sized(engine, &c, size))
    })
    .await?;
    Ok(json(&value))
}

async fn find(call: &Call, id: &str) -> ApiResult<Container> {
    let name = id.to_string();
    with_engine(call, move |engine| Ok(engine.find(&name)?)).await
}

/// `POST /containers/{id}/start`: 304 if it runs already.
pub async fn start(call: Call, id: &str) -> ApiResult<Reply> {
    let container = find(&call, id).await?;
    if container.state.status.is_active() {
        return Ok(status(StatusCode::NOT_MODIFIED));
    }
    if crate::streams::start_pending(&call, &container.id)
        .await?
        .is_none()
    {
        let id = container.id.clone();
        with_engine(&call, move |engine| Ok(engine.start(&id)?)).await?;
    }
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/stop?t=` and `/restart?t=`; stop answers 304
/// when the container was not running.
pub async fn stop(call: Call, id: &str, restart: bool) -> ApiResult<Reply> {
    let timeout: Option<i64> = match call.query.int("t")? {
        Some(t) => Some(t),
        None => call.query.int("timeout")?,
    };
    let timeout = timeout.map(|t| t.max(0) as u32);
    let name = id.to_string();
    let was_running = with_engine(&call, move |engine| {
        let c = engine.find(&name)?;
        let running = c.state.status.is_active();
        engine.stop(&c.id, timeout)?;
        if restart {
            engine.start(&c.id)?;
        }
        Ok(running)
    })
    .await?;
    if !restart && !was_running {
        return Ok(status(StatusCode::NOT_MODIFIED));
    }
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(call: Call, id: &str) -> ApiResult<Reply> {
    let signal = call.query.get("signal").unwrap_or("SIGKILL").to_string();
    let name = id.to_string();
    with_engine(&call, move |engine| {
        let c = engine.find(&name)?;
        if !c.state.status.is_active() {
            return Err(ApiError::conflict(format!(
                "Cannot kill container: {name}: container {} is not running",
                c.id
            )));
        }
        let number = if signal.is_empty() {
            libc::SIGKILL
        } else {
            keel_runtime::container::parse_signal(&signal)
                .map_err(|e| ApiError::bad_request(e.to_string()))?
        };
        engine.kill(&c.id, number)?;
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/pause` and `/unpause`.
pub async fn pause(call: Call, id: &str, pause: bool) -> ApiResult<Reply> {
    let name = id.to_string();
    with_engine(&call, move |engine| {
        if pause {
            engine.pause(&name)?;
        } else {
            engine.unpause(&name)?;
        }
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(call: Call, id: &str) -> ApiResult<Reply> {
    let new_name = call
        .query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename needs a new name (name=)"))?
        .trim_start_matches('/')
        .to_string();
    let name = id.to_string();
    with_engine(&call, move |engine| Ok(engine.rename(&name, &new_name)?)).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/wait`.
pub async fn wait(call: Call, id: &str) -> ApiResult<Reply> {
    crate::streams::wait(call, id).await
}

/// `POST /containers/{id}/resize?h=&w=`: the terminal's size, through the
/// monitor.
pub async fn resize(call: Call, id: &str) -> ApiResult<Reply> {
    let rows: u16 = call.query.int("h")?.unwrap_or(0);
    let cols: u16 = call.query.int("w")?.unwrap_or(0);
    let name = id.to_string();
    with_engine(&call, move |engine| {
        let c = engine.find(&name)?;
        if !c.state.status.is_active() {
            return Err(ApiError::conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let (_, mut stream) = engine.attach(&c.id, Default::default())?;
        keel_engine::attach::write_frame(
            &mut stream,
            &keel_engine::attach::Frame::Resize { rows, cols },
        )?;
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::OK))
}

/// `DELETE /containers/{id}?force&v`.
pub async fn remove(call: Call, id: &str) -> ApiResult<Reply> {
    let force = call.query.bool("force");
    let volumes = call.query.bool("v");
    let name = id.to_string();
    with_engine(&call, move |engine| {
        let c = engine.find(&name)?;
        if c.state.status.is_active() && !force {
            return Err(ApiError::conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                c.name
            )));
        }
        engine.remove(&c.id, force, volumes)?;
        Ok(())
    })
    .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/prune`.
pub async fn prune(call: Call) -> ApiResult<Reply> {
    let (removed, freed) = with_engine(&call, |engine| Ok(engine.prune_stopped()?)).await?;
    Ok(json(&serde_json::json!({
        "ContainersDeleted": removed,
        "SpaceReclaimed": freed,
    })))
}

/// `GET /containers/{id}/top?ps_args=`.
pub async fn top(call: Call, id: &str) -> ApiResult<Reply> {
    let options: Vec<String> = call
        .query
        .get("ps_args")
        .filter(|a| !a.is_empty())
        .map(|a| vec![a.to_string()])
        .unwrap_or_default();
    let name = id.to_string();
    let (titles, rows) = with_engine(&call, move |engine| {
        let pids = engine.pids(&name)?;
        Ok(views::container::top_of(&pids, &options)?)
    })
    .await?;
    Ok(json(
        &serde_json::json!({"Titles": titles, "Processes": rows}),
    ))
}

/// `GET /containers/{id}/logs?follow&stdout&stderr&since&until&timestamps&tail`:
/// docker's multiplexed stream (raw for a TTY container).
pub async fn logs(call: Call, id: &str) -> ApiResult<Reply> {
    let q = &call.query;
    let (want_out, want_err) = (q.bool("stdout"), q.bool("stderr"));
    if !want_out && !want_err {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let follow = q.bool("follow");
    let timestamps = q.bool("timestamps");
    let tail = match q.get("tail") {
        None | Some("") | Some("all") | Some("-1") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid value for tail: {n}")))?,
        ),
    };
    let bound = |key: &str| -> ApiResult<Option<f64>> {
        match q.get(key) {
            None | Some("") | Some("0") => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .map(Some)
                .or_else(|_| {
                    keel_engine::filter::parse_until(v, jiff::Timestamp::now().as_second())
                        .map(|s| Some(s as f64))
                })
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v}"))),
        }
    };
    let options = keel_engine::logs::ReadOptions {
        tail,
        since: bound("since")?,
        until: bound("until")?,
    };
    let container = find(&call, id).await?;
    let tty = container.spec.tty;
    let (tx, reply) = crate::http::channel(if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    });
    let state = call.state.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(mut engine) = state.engine() else {
            return;
        };
        let path = engine.layout.log(&container.id);
        let emit = |entry: &keel_engine::logs::Entry| -> std::io::Result<()> {
            let out = matches!(entry.stream, keel_engine::logs::Stream::Stdout);
            if (out && !want_out) || (!out && !want_err) {
                return Ok(());
            }
            let mut line = Vec::new();
            if timestamps {
                line.extend_from_slice(entry.time.as_bytes());
                line.push(b' ');
            }
            line.extend_from_slice(entry.log.as_bytes());
            let data = if tty {
                line
            } else {
                crate::streams::mux(if out { 1 } else { 2 }, &line)
            };
            tx.blocking_send(data.into())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        };
        let Ok((entries, end)) = keel_engine::logs::read_to(&path, &options) else {
            return;
        };
        for entry in &entries {
            if emit(entry).is_err() {
                return;
            }
        }
        if follow && container.state.status.is_active() {
            let id = container.id.clone();
            let follow_options = keel_engine::logs::ReadOptions {
                tail: None,
                ..options
            };
            let _ = keel_engine::logs::follow(&path, end, &follow_options, emit, || {
                engine
                    .find(&id)
                    .map(|c| !c.state.status.is_active())
                    .unwrap_or(true)
            });
        }
    });
    Ok(reply)
}

/// `GET /containers/{id}/stats?stream&one-shot`: docker's stats objects,
/// one a second while streaming.
pub async fn stats(call: Call, id: &str) -> ApiResult<Reply> {
    let stream = call.query.get("stream").is_none() || call.query.bool("stream");
    let one_shot = call.query.bool("one-shot");
    let name = id.to_string();
    let first = with_engine(&call, move |engine| {
        Ok(views::stats::Sample::take(engine, &name)?)
    })
    .await?;
    let id = first.container.id.clone();
    if !stream {
        let value = if one_shot {
            first.api_value(None)
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let name = id.clone();
            let second = with_engine(&call, move |engine| {
                Ok(views::stats::Sample::take(engine, &name)?)
            })
            .await?;
            second.api_value(Some(&first))
        };
        return Ok(json(&value));
    }
    let (tx, reply) = crate::http::channel("application/json");
    let state = call.state.clone();
    tokio::spawn(async move {
        let mut previous: Option<views::stats::Sample> = None;
        let mut current = Some(first);
        while let Some(sample) = current.take() {
            let mut bytes =
                serde_json::to_vec(&sample.api_value(previous.as_ref())).unwrap_or_default();
            bytes.push(b'\n');
            if tx.send(bytes.into()).await.is_err() {
                break;
            }
            let running = sample.container.state.status.is_active();
            previous = Some(sample);
            if !running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let probe = state.clone();
            let name = id.clone();
            current = blocking(move || {
                let mut engine = probe.engine()?;
                Ok(views::stats::Sample::take(&mut engine, &name)?)
            })
            .await
            .ok();
        }
    });
    Ok(reply)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateBody {
    memory: Option<i64>,
    memory_swap: Option<i64>,
    memory_reservation: Option<i64>,
    nano_cpus: Option<i64>,
    cpu_shares: Option<u64>,
    cpuset_cpus: Option<String>,
    pids_limit: Option<i64>,
    restart_policy: Option<crate::create::RestartPolicy>,
}

/// `POST /containers/{id}/update`: resources and the restart policy, live.
pub async fn update(call: Call, id: &str, body: Incoming) -> ApiResult<Reply> {
    let request: UpdateBody = crate::http::read_json(body).await?;
    let restart = request
        .restart_policy
        .map(crate::create::RestartPolicy::parse)
        .transpose()?
        .flatten();
    let update = keel_engine::engine::Update {
        memory: request.memory.filter(|m| *m != 0),
        memory_swap: request.memory_swap.filter(|m| *m != 0),
        memory_reservation: request.memory_reservation.filter(|m| *m != 0),
        nano_cpus: request.nano_cpus.filter(|n| *n != 0),
        cpu_shares: request.cpu_shares.filter(|n| *n != 0),
        cpuset_cpus: request.cpuset_cpus.filter(|c| !c.is_empty()),
        pids_limit: request.pids_limit.filter(|p| *p != 0),
        restart,
    };
    let name = id.to_string();
    with_engine(&call, move |engine| Ok(engine.update(&name, &update)?)).await?;
    Ok(json(&serde_json::json!({"Warnings": []})))
}

/// `GET /containers/{id}/changes`: what the writable layer changed, docker's
/// kinds (0 changed, 1 added, 2 deleted).
pub async fn changes(call: Call, id: &str) -> ApiResult<Reply> {
    let name = id.to_string();
    let changes = with_engine(&call, move |engine| Ok(engine.diff(&name)?)).await?;
    let items: Vec<serde_json::Value> = changes
        .iter()
        .map(|(change, path)| {
            let kind = match change {
                keel_engine::files::Change::Changed => 0,
                keel_engine::files::Change::Added => 1,
                keel_engine::files::Change::Deleted => 2,
            };
            serde_json::json!({"Path": path, "Kind": kind})
        })
        .collect();
    Ok(json(&items))
}

/// `GET /containers/{id}/export`: the root filesystem as a tar stream.
pub async fn export(call: Call, id: &str) -> ApiResult<Reply> {
    let c = find(&call, id).await?;
    let child = crate::children::spawn(crate::children::keel(&call, &["export", &c.id])?, false)?;
    Ok(crate::children::stream_stdout(
        child,
        Vec::new(),
        "application/x-tar",
    ))
}

/// `archive`'s `path=`, which it needs.
fn archive_path(call: &Call) -> ApiResult<String> {
    call.query
        .get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("path is required"))
}

/// `GET`/`HEAD /containers/{id}/archive?path=`: a path of the container as a
/// tar stream, its stat in `X-Docker-Container-Path-Stat` (`docker cp`).
pub async fn archive_get(call: Call, id: &str, head: bool) -> ApiResult<Reply> {
    use base64::Engine as _;
    let path = archive_path(&call)?;
    let c = find(&call, id).await?;
    let source = format!("{}:{path}", c.id);
    let mut child =
        crate::children::spawn(crate::children::keel(&call, &["cp", &source, "-"])?, false)?;
    let mut first = crate::children::read_head(&mut child, 512).await;
    loop {
        match crate::children::first_entry(&first) {
            Some(_) => break,
            None if first.len() >= 1 << 20 => break,
            None => {
                let more = crate::children::read_head(&mut child, 512).await;
                if more.is_empty() {
                    break;
                }
                first.extend(more);
            }
        }
    }
    let Some((header, _)) = crate::children::first_entry(&first) else {
        crate::children::finish(child, StatusCode::NOT_FOUND).await?;
        return Err(ApiError::not_found(format!(
            "Could not find the file {path} in container {id}"
        )));
    };
    let stat = crate::children::path_stat(header, &path)
        .ok_or_else(|| ApiError::internal("read the path's stat"))?;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&stat).unwrap_or_default());
    let mut reply = if head {
        drop(child);
        status(StatusCode::OK)
    } else {
        crate::children::stream_stdout(child, first, "application/x-tar")
    };
    reply.headers_mut().insert(
        "X-Docker-Container-Path-Stat",
        http::HeaderValue::from_str(&encoded).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    Ok(reply)
}

/// `PUT /containers/{id}/archive?path=`: a tar stream unpacked into a
/// directory of the container (inside its own view: `..` and symlinks
/// cannot reach out).
pub async fn archive_put(call: Call, id: &str, body: Incoming) -> ApiResult<Reply> {
    let path = archive_path(&call)?;
    let c = find(&call, id).await?;
    let dest = format!("{}:{path}", c.id);
    let mut child =
        crate::children::spawn(crate::children::keel(&call, &["cp", "-", &dest])?, true)?;
    crate::children::feed(&mut child, body);
    crate::children::finish(child, StatusCode::BAD_REQUEST).await?;
    Ok(status(StatusCode::OK))
}
