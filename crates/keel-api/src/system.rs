//! `/_ping`, `/version`, `/info`.

use http::{HeaderValue, StatusCode};

use crate::http::{ApiResult, Reply, json, text};
use crate::routes::Call;
use crate::{API_VERSION, MIN_API_VERSION};

/// `GET`/`HEAD /_ping`: `OK` with the headers clients negotiate by.
pub fn ping(head: bool) -> Reply {
    let mut reply = text(StatusCode::OK, if head { "" } else { "OK" });
    let headers = reply.headers_mut();
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    headers.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert("Pragma", HeaderValue::from_static("no-cache"));
    headers.insert("Swarm", HeaderValue::from_static("inactive"));
    reply
}

fn uname() -> (String, String) {
    nix_uname().unwrap_or_default()
}

fn nix_uname() -> Option<(String, String)> {
    // SAFETY: uname fills the struct we give it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname's fields are NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Some((field(&u.release), field(&u.machine)))
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn version(_call: Call) -> ApiResult<Reply> {
    let (kernel, _) = uname();
    let version = env!("CARGO_PKG_VERSION");
    Ok(json(&serde_json::json!({
        "Platform": {"Name": "keel"},
        "Components": [{
            "Name": "Engine",
            "Version": version,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch(),
                "KernelVersion": kernel,
                "Runtime": "keel-runtime",
            },
        }],
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    })))
}

pub async fn info(call: Call) -> ApiResult<Reply> {
    let state = call.state.clone();
    let mut value = crate::containers::blocking(move || {
        let mut engine = state.engine()?;
        let store = state.images()?;
        Ok(keel_engine::views::system::info(&mut engine, &store)?)
    })
    .await?;
    let host = keel_runtime_id(&call);
    value["ID"] = host.into();
    value["Driver"] = "overlay2".into();
    value["DriverStatus"] = serde_json::json!([["Backing Filesystem", "extfs"]]);
    value["Plugins"] = serde_json::json!({
        "Volume": ["local"],
        "Network": ["bridge", "host", "none"],
        "Authorization": null,
        "Log": ["json-file"],
    });
    value["Swarm"] = serde_json::json!({
        "NodeID": "",
        "NodeAddr": "",
        "LocalNodeState": "inactive",
        "ControlAvailable": false,
        "Error": "",
        "RemoteManagers": null,
    });
    value["SecurityOptions"] = serde_json::json!(["name=seccomp,profile=builtin"]);
    value["Labels"] = serde_json::json!([]);
    value["ExperimentalBuild"] = false.into();
    value["IndexServerAddress"] = "https://index.docker.io/v1/".into();
    value["MemoryLimit"] = true.into();
    value["SwapLimit"] = true.into();
    value["PidsLimit"] = true.into();
    value["IPv4Forwarding"] = true.into();
    Ok(json(&value))
}

/// A stable id for this keel (docker's `ID`): from the root's path.
fn keel_runtime_id(call: &Call) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    call.state.root.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// `GET /events?since&until&filters`: docker's JSON messages, one per
/// event, streamed (with the older `status`, `id` and `from` fields that
/// docker-compose 1.x reads).
pub async fn events(call: Call) -> ApiResult<Reply> {
    let flags = call.query.filter_flags()?;
    let filter = keel_engine::events::Filter::parse(
        call.query.get("since"),
        call.query.get("until"),
        &flags,
    )
    .map_err(|e| crate::http::ApiError::bad_request(e.to_string()))?;
    let (tx, reply) = crate::http::channel("application/json");
    let root = call.state.root.clone();
    tokio::task::spawn_blocking(move || {
        let emit = |event: &keel_engine::events::Event| -> std::io::Result<()> {
            let mut value = serde_json::to_value(event).unwrap_or_default();
            value["scope"] = "local".into();
            if event.kind == "container" {
                value["status"] = event.action.clone().into();
                value["id"] = event.actor.id.clone().into();
                if let Some(image) = event.actor.attributes.get("image") {
                    value["from"] = image.clone().into();
                }
            }
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            bytes.push(b'\n');
            tx.blocking_send(bytes.into())
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        };
        let _ = keel_engine::events::stream(&root, &filter, emit);
    });
    Ok(reply)
}

/// `GET /system/df`: what images, containers, volumes and the build cache
/// hold on disk.
pub async fn df(call: Call) -> ApiResult<Reply> {
    let state = call.state.clone();
    let value = crate::containers::blocking(move || {
        let mut engine = state.engine()?;
        let store = state.images()?;
        let usage = keel_engine::views::df::disk_usage(&mut engine, &store)?;
        Ok(usage.api_value(&mut engine))
    })
    .await?;
    Ok(json(&value))
}

/// `POST /auth`: checks a login against its registry (docker's `login`
/// through the API), without storing it: the client keeps its credentials.
pub async fn auth(call: Call, body: hyper::body::Incoming) -> ApiResult<Reply> {
    #[derive(Default, serde::Deserialize)]
    #[serde(default)]
    struct Login {
        username: String,
        password: String,
        serveraddress: String,
    }
    let login: Login = crate::http::read_json(body).await?;
    if login.username.is_empty() {
        return Err(crate::http::ApiError::bad_request("a username is required"));
    }
    let server = if login.serveraddress.is_empty() {
        "docker.io".to_string()
    } else {
        login.serveraddress.clone()
    };
    let registry = keel_registry::auth::normalize_registry_key(&server);
    let options = crate::images::client_options(&call.state.root)?;
    keel_registry::client::verify_login(options, &registry, &login.username, &login.password)
        .await
        .map_err(|e| crate::http::ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    Ok(json(
        &serde_json::json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}
