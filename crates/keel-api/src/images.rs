//! `/images/...`: list, inspect, history, pull (`create`), tag, remove.

use std::path::PathBuf;

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use hyper::body::Incoming;
use keel_image::reference::Reference;
use keel_registry::auth::{Credentials, DockerConfig};
use keel_registry::{Client, ClientOptions, PullOptions};

use crate::containers::blocking;
use crate::http::{ApiError, ApiResult, Reply, json, status};
use crate::routes::{Call, Version};

/// `GET /images/json?all&filters&digests`.
pub async fn list(call: Call) -> ApiResult<Reply> {
    let flags = call.query.filter_flags()?;
    let state = call.state.clone();
    let old = call.version < Version(1, 44);
    let rows = blocking(move || {
        let store = state.images()?;
        let filters =
            keel_engine::filter::Filters::parse(&flags, keel_engine::filter::IMAGES_KEYS)?;
        let mut rows = Vec::new();
        for (record, tags) in keel_engine::filter::select(&store, &filters)? {
            let config = store.config(&record).ok();
            let labels = config
                .as_ref()
                .and_then(|c| c.config.as_ref())
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let repo_digests: Vec<String> = tags
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| format!("{}@{}", r.familiar_name(), record.manifest))
                .collect();
            let tags: Vec<String> = tags
                .iter()
                .filter_map(|t| Reference::parse(t).ok())
                .map(|r| match r.tag() {
                    Some(tag) => format!("{}:{tag}", r.familiar_name()),
                    None => r.familiar_name(),
                })
                .collect();
            let mut row = serde_json::json!({
                "Id": record.id.to_string(),
                "ParentId": "",
                "RepoTags": tags,
                "RepoDigests": repo_digests,
                "Created": keel_engine::views::unix_seconds(&record.created).unwrap_or(0),
                "Size": record.size,
                "SharedSize": -1,
                "Labels": labels,
                "Containers": -1,
            });
            if old {
                row["VirtualSize"] = record.size.into();
            }
            rows.push(row);
        }
        Ok(rows)
    })
    .await?;
    Ok(json(&rows))
}

/// `GET /images/{name}/json`: the store's docker-shaped inspect;
/// `ContainerConfig` kept for clients of API 1.44 and older.
pub async fn inspect(call: Call, name: &str) -> ApiResult<Reply> {
    let state = call.state.clone();
    let name = name.to_string();
    let old = call.version <= Version(1, 44);
    let mut image = blocking(move || {
        let store = state.images()?;
        store
            .inspect(&name)
            .map_err(|_| ApiError::not_found(format!("No such image: {name}")))
    })
    .await?;
    if old {
        image.container_config = Some(image.config.clone().unwrap_or_default());
    }
    Ok(json(&image))
}

/// `GET /images/{name}/history`.
pub async fn history(call: Call, name: &str) -> ApiResult<Reply> {
    let state = call.state.clone();
    let name = name.to_string();
    let rows = blocking(move || {
        let store = state.images()?;
        let record = store
            .resolve(&name)
            .map_err(|_| ApiError::not_found(format!("No such image: {name}")))?;
        let config = store.config(&record)?;
        let tags = store.metadata.tags_of(&record.id).unwrap_or_default();
        let sizes = store.layer_sizes(&record);
        let mut layer = sizes.len();
        let mut rows = Vec::new();
        for (i, entry) in config.history.iter().rev().enumerate() {
            let size = if entry.empty_layer {
                0
            } else {
                layer = layer.saturating_sub(1);
                sizes.get(layer).copied().unwrap_or(0)
            };
            rows.push(serde_json::json!({
                "Id": if i == 0 { record.id.to_string() } else { "<missing>".to_string() },
                "Created": entry.created.as_deref().and_then(keel_engine::views::unix_seconds).unwrap_or(0),
                "CreatedBy": entry.created_by.clone().unwrap_or_default(),
                "Tags": if i == 0 { serde_json::json!(tags) } else { serde_json::Value::Null },
                "Size": size,
                "Comment": entry.comment.clone().unwrap_or_default(),
            }));
        }
        Ok(rows)
    })
    .await?;
    Ok(json(&rows))
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub async fn tag(call: Call, name: &str) -> ApiResult<Reply> {
    let repo = call
        .query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("repository name must have at least one component"))?
        .to_string();
    let target = match call.query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo,
    };
    let state = call.state.clone();
    let name = name.to_string();
    blocking(move || {
        let mut store = state.images()?;
        Ok(keel_engine::images::tag(&mut store, &name, &target)?)
    })
    .await?;
    Ok(status(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force&noprune`.
pub async fn remove(call: Call, name: &str) -> ApiResult<Reply> {
    let force = call.query.bool("force");
    let state = call.state.clone();
    let name = name.to_string();
    let lines = blocking(move || {
        let mut store = state.images()?;
        if store.resolve(&name).is_err() {
            return Err(ApiError::not_found(format!("No such image: {name}")));
        }
        keel_engine::images::remove(&mut store, &name, force).map_err(|e| {
            let message = e.to_string();
            if message.contains("being used") || message.contains("in use") {
                ApiError::conflict(message)
            } else {
                e.into()
            }
        })
    })
    .await?;
    Ok(json(&deletion_items(&lines)))
}

/// The registry client as the CLI's: mirrors and insecure registries from
/// `$KEEL_REGISTRIES_CONFIG` or `<root>/registries.json`, logins from
/// docker's config.json, and the request's `X-Registry-Auth` over them —
/// for `registry`, the one the image names, as dockerd uses them (clients
/// such as docker-py send no `serveraddress`), and for the `serveraddress`
/// when there is one.
fn registry_client(
    root: &std::path::Path,
    auth: Option<&str>,
    registry: &str,
) -> ApiResult<Client> {
    let mut options = client_options(root)?;
    let mut config = DockerConfig::load_default()
        .map_err(|e| ApiError::internal(format!("read docker's config.json: {e}")))?;
    if let Some((server, credentials)) = auth.and_then(registry_auth) {
        if let Some(server) = server {
            config.insert(&server, credentials.clone());
        }
        config.insert(registry, credentials);
    }
    options.docker_config = Some(config);
    Client::new(options).map_err(|e| ApiError::internal(e.to_string()))
}

/// [`registry_client`] with the request's `X-Registry-Auth`.
fn call_client(call: &Call, registry: &str) -> ApiResult<Client> {
    let auth = call
        .headers
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok());
    registry_client(&call.state.root, auth, registry)
}

/// Mirrors and insecure registries: `$KEEL_REGISTRIES_CONFIG` or
/// `<root>/registries.json`, as the CLI reads them.
pub fn client_options(root: &std::path::Path) -> ApiResult<ClientOptions> {
    let path = std::env::var_os("KEEL_REGISTRIES_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("registries.json"));
    ClientOptions::from_file(&path)
        .map_err(|e| ApiError::internal(format!("read registry settings {}: {e}", path.display())))
}

/// `X-Registry-Auth`: base64url JSON of `username`, `password`,
/// `serveraddress` (or `identitytoken`).
fn registry_auth(header: &str) -> Option<(Option<String>, Credentials)> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(header.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim()))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(header.trim()))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let server = value["serveraddress"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(keel_registry::auth::normalize_registry_key);
    if let Some(token) = value["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Some((server, Credentials::IdentityToken(token.to_string())));
    }
    let username = value["username"].as_str().filter(|u| !u.is_empty())?;
    Some((
        server,
        Credentials::Basic {
            username: username.to_string(),
            password: value["password"].as_str().unwrap_or_default().to_string(),
        },
    ))
}

/// A streamed JSON answer fed from any thread (a pull's or push's
/// progress callbacks are synchronous): messages go out in order.
fn progress_stream() -> (tokio::sync::mpsc::UnboundedSender<Bytes>, Reply) {
    let (tx, reply) = crate::http::channel("application/json");
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        while let Some(m) = progress_rx.recv().await {
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    (progress_tx, reply)
}

/// docker's deletion items from the store's lines (`Untagged: NAME`,
/// `Deleted: ID`, either case).
fn deletion_items(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|line| {
            let (word, what) = line.split_once(": ")?;
            match word.to_ascii_lowercase().as_str() {
                "untagged" => Some(serde_json::json!({"Untagged": what})),
                "deleted" => Some(serde_json::json!({"Deleted": what})),
                _ => None,
            }
        })
        .collect()
}

/// A streamed JSON progress message.
fn message(value: serde_json::Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    bytes.extend_from_slice(b"\r\n");
    Bytes::from(bytes)
}

/// `POST /images/create?fromImage=&tag=&platform=`: a pull, its progress
/// streamed as docker's JSON messages; a failure is the last message
/// (`error`, `errorDetail`), as docker sends it once the stream began.
pub async fn create(call: Call, _body: Incoming) -> ApiResult<Reply> {
    if call.query.get("fromSrc").is_some() {
        return Err(ApiError::bad_request(
            "importing a tarball through the API is not supported by keel yet: use `keel import`",
        ));
    }
    let from = call
        .query
        .get("fromImage")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad_request("fromImage or fromSrc is required"))?
        .to_string();
    let tag = call.query.get("tag").unwrap_or_default().to_string();
    let name = match tag.as_str() {
        "" => from.clone(),
        t if t.contains(':') => format!("{from}@{t}"),
        t => format!("{from}:{t}"),
    };
    let reference = Reference::parse(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let platform = match call.query.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => keel_image::manifest::Platform::parse(p)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => keel_image::manifest::Platform::current(),
    };
    let client = call_client(&call, reference.registry())?;
    let state = call.state.clone();
    let (progress_tx, reply) = progress_stream();
    let shown_tag = reference
        .tag()
        .map(str::to_string)
        .unwrap_or_else(|| reference.api_reference());
    let _ = progress_tx.send(message(serde_json::json!({
        "status": format!("Pulling from {}", reference.repository()),
        "id": shown_tag,
    })));
    let familiar = match (reference.tag(), reference.digest()) {
        (_, Some(d)) => format!("{}@{d}", reference.familiar_name()),
        (Some(t), None) => format!("{}:{t}", reference.familiar_name()),
        (None, None) => reference.familiar_name(),
    };
    tokio::task::spawn_blocking(move || {
        let progress = progress_tx.clone();
        let callback: keel_registry::pull::ProgressFn =
            std::sync::Arc::new(move |event: keel_registry::pull::ProgressEvent| {
                use keel_registry::pull::ProgressState as S;
                let id = event.digest.short().to_string();
                let value = match event.state {
                    S::Waiting => serde_json::json!({"status": "Waiting", "id": id}),
                    S::Downloading => serde_json::json!({
                        "status": "Downloading", "id": id,
                        "progressDetail": {"current": event.current, "total": event.total},
                    }),
                    S::Verifying => serde_json::json!({"status": "Verifying Checksum", "id": id}),
                    S::Done => serde_json::json!({"status": "Download complete", "id": id}),
                    S::AlreadyExists => serde_json::json!({"status": "Already exists", "id": id}),
                    S::Retrying(s) => {
                        serde_json::json!({"status": format!("Retrying in {s} seconds"), "id": id})
                    }
                };
                let _ = progress.send(message(value));
            });
        let options = PullOptions {
            platform,
            progress: Some(callback),
            ..PullOptions::default()
        };
        let outcome = (|| -> Result<keel_registry::Pulled, String> {
            let mut store = state.images().map_err(|e| e.to_string())?;
            let pulled = tokio::runtime::Handle::current()
                .block_on(keel_registry::pull_image(
                    &client, &mut store, &reference, &options,
                ))
                .map_err(|e| e.to_string())?;
            Ok(pulled)
        })();
        let last = match outcome {
            Ok(pulled) => {
                let _ = progress_tx.send(message(serde_json::json!({
                    "status": format!("Digest: {}", pulled.result.repo_digest()),
                })));
                if pulled.updated {
                    keel_engine::events::record(
                        &state.root,
                        "image",
                        "pull",
                        &reference.full(),
                        &[("name", &reference.full())],
                    );
                }
                serde_json::json!({"status": if pulled.updated {
                    format!("Status: Downloaded newer image for {familiar}")
                } else {
                    format!("Status: Image is up to date for {familiar}")
                }})
            }
            Err(e) => serde_json::json!({"errorDetail": {"message": e}, "error": e}),
        };
        let _ = progress_tx.send(message(last));
    });
    Ok(reply)
}

/// `POST /images/{name}/push?tag=`: progress as docker's JSON messages, the
/// last one the digest (or the error).
pub async fn push(call: Call, name: &str) -> ApiResult<Reply> {
    let name = match call.query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{name}:{tag}"),
        None => name.to_string(),
    };
    let mut reference =
        Reference::parse(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if reference.tag().is_none() && reference.digest().is_none() {
        reference = reference
            .with_tag("latest")
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let client = call_client(&call, reference.registry())?;
    let state = call.state.clone();
    {
        let state = state.clone();
        let full = reference.full();
        blocking(move || {
            let store = state.images()?;
            store
                .metadata
                .resolve_tag(&full)
                .map_err(keel_engine::Error::from)?
                .ok_or_else(|| ApiError::not_found(format!("No such image: {full}")))
        })
        .await?;
    }
    let (progress_tx, reply) = progress_stream();
    let _ = progress_tx.send(message(serde_json::json!({
        "status": format!("The push refers to repository [{}]", reference.name()),
    })));
    tokio::task::spawn_blocking(move || {
        let progress = progress_tx.clone();
        let callback: keel_registry::push::PushProgressFn =
            std::sync::Arc::new(move |event: keel_registry::push::PushEvent| {
                use keel_registry::push::PushState as S;
                if event.kind != keel_registry::push::BlobKind::Layer {
                    return;
                }
                let status = match &event.state {
                    S::Preparing => "Preparing".to_string(),
                    S::Waiting => "Waiting".to_string(),
                    S::Pushing => "Pushing".to_string(),
                    S::Pushed => "Pushed".to_string(),
                    S::AlreadyExists => "Layer already exists".to_string(),
                    S::Mounted(from) => format!("Mounted from {from}"),
                };
                let _ = progress.send(message(
                    serde_json::json!({"status": status, "id": event.digest.short()}),
                ));
            });
        let outcome = state.images().map_err(|e| e.to_string()).and_then(|store| {
            tokio::runtime::Handle::current()
                .block_on(keel_registry::push::push_image(
                    &client,
                    &store,
                    &reference,
                    Some(callback),
                ))
                .map_err(|e| e.to_string())
        });
        let last = match outcome {
            Ok((digest, size)) => {
                let tag = reference
                    .tag()
                    .map(str::to_string)
                    .unwrap_or_else(|| digest.to_string());
                keel_engine::events::record(
                    &state.root,
                    "image",
                    "push",
                    &reference.full(),
                    &[("name", &reference.full())],
                );
                let _ = progress_tx.send(message(serde_json::json!({
                    "status": format!("{tag}: digest: {digest} size: {size}"),
                })));
                serde_json::json!({
                    "progressDetail": {},
                    "aux": {"Tag": tag, "Digest": digest.to_string(), "Size": size},
                })
            }
            Err(e) => serde_json::json!({"errorDetail": {"message": e}, "error": e}),
        };
        let _ = progress_tx.send(message(last));
    });
    Ok(reply)
}

/// `POST /images/prune?filters`: `dangling=false` for every unused image.
pub async fn prune(call: Call) -> ApiResult<Reply> {
    let filters = call.query.filters()?;
    let all = filters
        .get("dangling")
        .is_some_and(|v| v.iter().any(|d| d == "false" || d == "0"));
    let flags: Vec<String> = filters
        .iter()
        .filter(|(k, _)| k.as_str() != "dangling")
        .flat_map(|(k, values)| values.iter().map(move |v| format!("{k}={v}")))
        .collect();
    let state = call.state.clone();
    let (lines, freed) = blocking(move || {
        let mut store = state.images()?;
        Ok(keel_engine::images::prune(&mut store, all, &flags)?)
    })
    .await?;
    let deleted = deletion_items(&lines);
    Ok(json(&serde_json::json!({
        "ImagesDeleted": if deleted.is_empty() { serde_json::Value::Null } else { deleted.into() },
        "SpaceReclaimed": freed,
    })))
}

/// `GET /images/{name}/get` and `/images/get?names=`: `keel save`'s archive.
pub async fn save(call: Call, name: Option<String>) -> ApiResult<Reply> {
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => call
            .query
            .all("names")
            .into_iter()
            .map(str::to_string)
            .collect(),
    };
    if names.is_empty() {
        return Err(ApiError::bad_request("no image named (names=)"));
    }
    let state = call.state.clone();
    let check = names.clone();
    blocking(move || {
        let store = state.images()?;
        for n in &check {
            store
                .resolve(n)
                .map_err(|_| ApiError::not_found(format!("No such image: {n}")))?;
        }
        Ok(())
    })
    .await?;
    let mut args = vec!["save"];
    args.extend(names.iter().map(String::as_str));
    let child = crate::children::spawn(crate::children::keel(&call, &args)?, false)?;
    Ok(crate::children::stream_stdout(
        child,
        Vec::new(),
        "application/x-tar",
    ))
}

/// `POST /images/load?quiet`: `keel load` of the posted archive.
pub async fn load(call: Call, body: Incoming) -> ApiResult<Reply> {
    let mut child = crate::children::spawn(crate::children::keel(&call, &["load"])?, true)?;
    crate::children::feed(&mut child, body);
    let out = crate::children::finish(child, StatusCode::BAD_REQUEST).await?;
    let text = String::from_utf8_lossy(&out);
    let mut body = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        body.extend(message(serde_json::json!({"stream": format!("{line}\n")})));
    }
    let mut reply = http::Response::new(crate::http::full(body));
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(reply)
}

/// `POST /build/prune`: the build cache (`all` also the cache mounts).
pub async fn build_prune(call: Call) -> ApiResult<Reply> {
    let all = call.query.bool("all");
    let state = call.state.clone();
    let (ids, freed) = blocking(move || {
        let mut store = state.images()?;
        keel_build::cache::prune(&state.root, &mut store, all)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    Ok(json(
        &serde_json::json!({"CachesDeleted": ids, "SpaceReclaimed": freed}),
    ))
}
