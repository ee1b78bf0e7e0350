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

/// Engine work with the engine open.
async fn with_engine<T: Send + 'static>(
    call: &Call,
    f: impl FnOnce(&mut keel_engine::Engine) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let state = call.state.clone();
    blocking(move || {
        let mut engine = state.engine()?;
        f(&mut engine)
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
