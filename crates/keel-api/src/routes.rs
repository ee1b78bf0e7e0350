//! The API's paths: with or without a `/v1.NN` prefix, the version checked
//! against what keel speaks, then the handler.

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::http::{ApiError, ApiResult, Query, Reply};
use crate::{API_VERSION, MIN_API_VERSION, State};

/// An API version, `1.47` as (1, 47).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32);

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let (major, minor) = text.split_once('.')?;
        Some(Version(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// What a handler gets besides the body.
pub struct Call {
    pub state: State,
    pub version: Version,
    pub query: Query,
    pub headers: http::HeaderMap,
}

pub async fn handle(state: State, request: Request<Incoming>) -> Reply {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let reply = match route(state, request).await {
        Ok(reply) => reply,
        Err(e) => e.reply(),
    };
    tracing::debug!("{method} {path} -> {}", reply.status());
    with_headers(reply)
}

/// docker's headers on every answer.
fn with_headers(mut reply: Reply) -> Reply {
    let headers = reply.headers_mut();
    headers.insert("Api-Version", http::HeaderValue::from_static(API_VERSION));
    headers.insert("Ostype", http::HeaderValue::from_static("linux"));
    headers.insert(
        "Docker-Experimental",
        http::HeaderValue::from_static("false"),
    );
    headers.insert(
        "Server",
        http::HeaderValue::from_static(concat!("keel/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    reply
}

async fn route(state: State, request: Request<Incoming>) -> ApiResult<Reply> {
    let (parts, body) = request.into_parts();
    let mut path = parts.uri.path();
    let newest = Version::parse(API_VERSION).expect("API_VERSION is a version");
    let oldest = Version::parse(MIN_API_VERSION).expect("MIN_API_VERSION is a version");
    let mut version = newest;
    if let Some(rest) = path.strip_prefix("/v")
        && let Some((v, tail)) = rest.split_once('/')
        && let Some(asked) = Version::parse(v)
    {
        if asked > newest {
            return Err(ApiError::bad_request(format!(
                "client version {asked} is too new. Maximum supported API version is {newest}"
            )));
        }
        if asked < oldest {
            return Err(ApiError::bad_request(format!(
                "client version {asked} is too old. Minimum supported API version is {oldest}, please upgrade your client to a newer version"
            )));
        }
        version = asked;
        path = &parts.uri.path()[2 + v.len()..];
        let _ = tail;
    }
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(crate::http::decode)
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let call = Call {
        state,
        version,
        query: Query::parse(parts.uri.query()),
        headers: parts.headers,
    };
    let m = &parts.method;
    use crate::{containers as c, images as i, objects as o, system};
    match (m, s.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(m == Method::HEAD)),
        (&Method::GET, ["version"]) => system::version(call).await,
        (&Method::GET, ["info"]) => system::info(call).await,
        (&Method::GET, ["events"]) => system::events(call).await,
        (&Method::GET, ["system", "df"]) => system::df(call).await,
        (&Method::POST, ["auth"]) => system::auth(call, body).await,
        // containers
        (&Method::GET, ["containers", "json"]) => c::list(call).await,
        (&Method::POST, ["containers", "create"]) => c::create(call, body).await,
        (&Method::POST, ["containers", "prune"]) => c::prune(call).await,
        (&Method::GET, ["containers", id, "json"]) => c::inspect(call, id).await,
        (&Method::POST, ["containers", id, "start"]) => c::start(call, id).await,
        (&Method::POST, ["containers", id, "stop"]) => c::stop(call, id, false).await,
        (&Method::POST, ["containers", id, "restart"]) => c::stop(call, id, true).await,
        (&Method::POST, ["containers", id, "kill"]) => c::kill(call, id).await,
        (&Method::POST, ["containers", id, "pause"]) => c::pause(call, id, true).await,
        (&Method::POST, ["containers", id, "unpause"]) => c::pause(call, id, false).await,
        (&Method::POST, ["containers", id, "rename"]) => c::rename(call, id).await,
        (&Method::POST, ["containers", id, "wait"]) => c::wait(call, id).await,
        (&Method::POST, ["containers", id, "resize"]) => c::resize(call, id).await,
        (&Method::POST, ["containers", id, "attach"]) => {
            crate::streams::attach(call, id, parts.extensions, body).await
        }
        (&Method::GET, ["containers", id, "logs"]) => c::logs(call, id).await,
        (&Method::GET, ["containers", id, "top"]) => c::top(call, id).await,
        (&Method::GET, ["containers", id, "stats"]) => c::stats(call, id).await,
        (&Method::POST, ["containers", id, "update"]) => c::update(call, id, body).await,
        (&Method::GET, ["containers", id, "changes"]) => c::changes(call, id).await,
        (&Method::GET, ["containers", id, "export"]) => c::export(call, id).await,
        (&Method::GET, ["containers", id, "archive"]) => c::archive_get(call, id, false).await,
        (&Method::HEAD, ["containers", id, "archive"]) => c::archive_get(call, id, true).await,
        (&Method::PUT, ["containers", id, "archive"]) => c::archive_put(call, id, body).await,
        (&Method::DELETE, ["containers", id]) => c::remove(call, id).await,
        (&Method::POST, ["containers", id, "exec"]) => crate::exec::create(call, id, body).await,
        (&Method::POST, ["exec", id, "start"]) => {
            crate::exec::start(call, id, parts.extensions, body).await
        }
        (&Method::POST, ["exec", id, "resize"]) => crate::exec::resize(call, id).await,
        (&Method::GET, ["exec", id, "json"]) => crate::exec::inspect(call, id).await,
        // images
        (&Method::GET, ["images", "json"]) => i::list(call).await,
        (&Method::POST, ["images", "create"]) => i::create(call, body).await,
        (&Method::POST, ["build"]) => crate::build::build(call, body).await,
        (&Method::POST, ["build", "prune"]) => i::build_prune(call).await,
        (&Method::POST, ["images", "prune"]) => i::prune(call).await,
        (&Method::POST, ["images", "load"]) => i::load(call, body).await,
        (&Method::GET, ["images", "get"]) => i::save(call, None).await,
        (_, ["session"]) | (_, ["grpc"]) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "BuildKit is not supported by keel's API: use the classic builder (DOCKER_BUILDKIT=0)",
        )),
        (&Method::GET, ["images", rest @ .., "json"]) if !rest.is_empty() => {
            i::inspect(call, &rest.join("/")).await
        }
        (&Method::GET, ["images", rest @ .., "history"]) if !rest.is_empty() => {
            i::history(call, &rest.join("/")).await
        }
        (&Method::GET, ["images", rest @ .., "get"]) if !rest.is_empty() => {
            i::save(call, Some(rest.join("/"))).await
        }
        (&Method::POST, ["images", rest @ .., "push"]) if !rest.is_empty() => {
            i::push(call, &rest.join("/")).await
        }
        (&Method::POST, ["images", rest @ .., "tag"]) if !rest.is_empty() => {
            i::tag(call, &rest.join("/")).await
        }
        (&Method::DELETE, ["images", rest @ ..]) if !rest.is_empty() => {
            i::remove(call, &rest.join("/")).await
        }
        // networks and volumes
        (&Method::GET, ["networks"]) => o::networks(call).await,
        (&Method::POST, ["networks", "create"]) => o::network_create(call, body).await,
        (&Method::POST, ["networks", "prune"]) => o::network_prune(call).await,
        (&Method::GET, ["networks", id]) => o::network_inspect(call, id).await,
        (&Method::DELETE, ["networks", id]) => o::network_remove(call, id).await,
        (&Method::POST, ["networks", id, "connect"]) => o::connect(call, id, body, true).await,
        (&Method::POST, ["networks", id, "disconnect"]) => o::connect(call, id, body, false).await,
        (&Method::GET, ["volumes"]) => o::volumes(call).await,
        (&Method::POST, ["volumes", "create"]) => o::volume_create(call, body).await,
        (&Method::POST, ["volumes", "prune"]) => o::volume_prune(call).await,
        (&Method::GET, ["volumes", name]) => o::volume_inspect(call, name).await,
        (&Method::DELETE, ["volumes", name]) => o::volume_remove(call, name).await,
        // what a node outside a swarm says
        (_, ["swarm", ..]) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not part of a swarm",
        )),
        (
            _,
            ["services", ..] | ["nodes", ..] | ["tasks", ..] | ["secrets", ..] | ["configs", ..],
        ) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
        )),
        (&Method::GET, ["plugins"]) => Ok(crate::http::json(&serde_json::json!([]))),
        _ => Err(ApiError::not_found(format!(
            "page not found: {} {}",
            parts.method,
            parts.uri.path()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(Version::parse("1.9").unwrap() < Version::parse("1.24").unwrap());
        assert!(Version::parse("1.47").unwrap() < Version::parse("2.0").unwrap());
        assert_eq!(Version::parse("x"), None);
    }
}
