//! `POST /build`: docker's classic builder protocol. The body is the
//! context as a tar; the build is `keel build` from that tar, run as the
//! service's child (its own mount namespace, as the CLI's build makes), its
//! progress turned into docker's `{"stream": ...}` messages and its image
//! into `{"aux": {"ID": ...}}` and the `Successfully built`/`tagged` lines
//! docker-compose 1.x reads.

use std::collections::BTreeMap;
use std::process::Stdio;

use bytes::Bytes;
use hyper::body::Incoming;
use tokio::io::AsyncBufReadExt;

use crate::http::{ApiError, ApiResult, Reply};
use crate::routes::Call;

fn message(value: serde_json::Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    bytes.extend_from_slice(b"\r\n");
    Bytes::from(bytes)
}

/// A JSON map in a query value (`buildargs`, `labels`).
fn json_map(call: &Call, key: &str) -> ApiResult<BTreeMap<String, Option<String>>> {
    match call.query.get(key).filter(|v| !v.is_empty()) {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid {key}: {e}"))),
    }
}

/// A docker config dir holding the service's own config.json with the
/// logins of `X-Registry-Config` (base64url JSON: registry → `username`,
/// `password` or `auth`) over its `auths`.
fn write_registry_config(scratch: &std::path::Path, header: &str) -> ApiResult<std::path::PathBuf> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(header.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim()))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(header.trim()))
        .map_err(|_| ApiError::bad_request("X-Registry-Config is not base64"))?;
    let logins: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("X-Registry-Config: {e}")))?;
    let mut config: serde_json::Value = keel_registry::auth::default_docker_config_path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if !config.is_object() {
        config = serde_json::json!({});
    }
    if !config["auths"].is_object() {
        config["auths"] = serde_json::json!({});
    }
    for (registry, login) in logins {
        let auth = match login["auth"].as_str().filter(|a| !a.is_empty()) {
            Some(auth) => auth.to_string(),
            None => {
                let user = login["username"].as_str().unwrap_or_default();
                if user.is_empty() {
                    continue;
                }
                let password = login["password"].as_str().unwrap_or_default();
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            }
        };
        config["auths"][registry] = serde_json::json!({ "auth": auth });
    }
    let dir = scratch.join(format!(
        "api-registry-config-{}",
        keel_engine::engine::random_id().map_err(ApiError::from)?
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("create {}: {e}", dir.display())))?;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap_or_default())
        .map_err(|e| ApiError::internal(format!("write {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| ApiError::internal(format!("chmod {}: {e}", path.display())))?;
    Ok(dir)
}

pub async fn build(call: Call, body: Incoming) -> ApiResult<Reply> {
    let q = &call.query;
    if q.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(
            "building from a remote context is not supported by keel: send the context as a tar",
        ));
    }
    let scratch = call.state.root.join("build").join("tmp");
    std::fs::create_dir_all(&scratch)
        .map_err(|e| ApiError::internal(format!("create {}: {e}", scratch.display())))?;
    let iidfile = scratch.join(format!(
        "api-iid-{}",
        keel_engine::engine::random_id().map_err(ApiError::from)?
    ));
    let mut command = crate::children::keel(&call, &["build", "--progress", "plain", "--iidfile"])?;
    command.arg(&iidfile).current_dir(&scratch);
    let tags: Vec<String> = q
        .all("t")
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    for tag in &tags {
        command.arg("-t").arg(tag);
    }
    if let Some(file) = q.get("dockerfile").filter(|f| !f.is_empty()) {
        command.arg("-f").arg(file);
    }
    for (k, v) in json_map(&call, "buildargs")? {
        // A build arg without a value takes the builder's environment in
        // docker; the service's environment is not the client's.
        if let Some(v) = v {
            command.arg("--build-arg").arg(format!("{k}={v}"));
        }
    }
    for (k, v) in json_map(&call, "labels")? {
        command
            .arg("--label")
            .arg(format!("{k}={}", v.unwrap_or_default()));
    }
    if let Some(target) = q.get("target").filter(|t| !t.is_empty()) {
        command.arg("--target").arg(target);
    }
    if q.bool("nocache") {
        command.arg("--no-cache");
    }
    if q.bool("pull") {
        command.arg("--pull");
    }
    if let Some(network) = q
        .get("networkmode")
        .filter(|n| !n.is_empty() && *n != "default")
    {
        command.arg("--network").arg(network);
    }
    for host in q.all("extrahosts") {
        for h in host.split(',').filter(|h| !h.is_empty()) {
            command.arg("--add-host").arg(h);
        }
    }
    if let Some(platform) = q.get("platform").filter(|p| !p.is_empty()) {
        command.arg("--platform").arg(platform);
    }
    let quiet = q.bool("q");
    // X-Registry-Config: the client's logins for the build's pulls, in a
    // docker config of the build's own (the service's logins kept too).
    let registry_config = match call
        .headers
        .get("X-Registry-Config")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        Some(header) => Some(write_registry_config(&scratch, header)?),
        None => None,
    };
    if let Some(dir) = &registry_config {
        command.env("DOCKER_CONFIG", dir);
    }
    command
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut child = command
        .spawn()
        .map_err(|e| ApiError::internal(format!("run keel build: {e}")))?;
    let (tx, reply) = crate::http::channel("application/json");
    // The context, streamed into the build as it arrives.
    crate::children::feed(&mut child, body);
    let stderr = child.stderr.take().expect("piped stderr");
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut last_error = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("Error") || line.contains(" ERROR: ") {
                last_error = line.clone();
            }
            if !quiet {
                let _ = tx
                    .send(message(serde_json::json!({"stream": format!("{line}\n")})))
                    .await;
            }
        }
        let status = child.wait().await;
        if let Some(dir) = registry_config {
            let _ = std::fs::remove_dir_all(dir);
        }
        let id = std::fs::read_to_string(&iidfile).unwrap_or_default();
        let _ = std::fs::remove_file(&iidfile);
        if status.as_ref().is_ok_and(|s| s.success()) && !id.is_empty() {
            let short = id
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>();
            let _ = tx
                .send(message(serde_json::json!({"aux": {"ID": id}})))
                .await;
            let _ = tx
                .send(message(
                    serde_json::json!({"stream": format!("Successfully built {short}\n")}),
                ))
                .await;
            for tag in &tags {
                let last = tag.rsplit('/').next().unwrap_or(tag);
                let tag = if last.contains(':') || last.contains('@') {
                    tag.clone()
                } else {
                    format!("{tag}:latest")
                };
                let _ = tx
                    .send(message(
                        serde_json::json!({"stream": format!("Successfully tagged {tag}\n")}),
                    ))
                    .await;
            }
        } else {
            let error = last_error.trim_start_matches("Error: ").to_string();
            let error = if error.is_empty() {
                "the build failed".to_string()
            } else {
                error
            };
            let _ = tx
                .send(message(
                    serde_json::json!({"errorDetail": {"message": error}, "error": error}),
                ))
                .await;
        }
    });
    Ok(reply)
}
