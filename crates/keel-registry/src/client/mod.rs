//! A thin client for the distribution API v2 (what `docker pull` and
//! `docker push` speak): ping, manifests, blobs (with redirects to blob
//! storage), uploads with cross-repository mounts, tag listing.
//!
//! - Authentication follows the registry's `WWW-Authenticate` challenge:
//!   Bearer tokens (anonymous or with credentials, cached per scope) or
//!   Basic, with credentials from docker's `config.json`.
//! - HTTPS through rustls with the system's CA store. Plain HTTP (and
//!   HTTPS with an unverified certificate) only for `localhost`, loopback
//!   addresses and the registries the user marks insecure, as docker does:
//!   HTTPS is tried first, HTTP if it gets no answer.
//! - Mirrors of a registry (docker.io in practice) are tried in order for
//!   pulls before the registry itself.
//!
//! Registries are named as references name them (`docker.io`,
//! `localhost:5000`); docker.io's API is served by `registry-1.docker.io`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use keel_image::digest::Digest;
use keel_image::reference::Reference;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::auth::{self, Challenge, Credentials, DockerConfig};
use crate::error::{Error, RegistryError, Result, Status, parse_registry_errors};

mod blobs;
mod manifests;
mod transport;

/// Docker Hub's name in references, and the host that serves its API.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What `get_manifest` accepts, best first.
pub const MANIFEST_ACCEPT: &[&str] = &[
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// Manifests and indexes larger than this are refused (as containerd does).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

const MAX_REDIRECTS: usize = 10;
/// Error bodies are read up to this size for their JSON error list.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What the client is told by the user: insecure registries, mirrors,
/// credentials.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) that may be reached over plain
    /// HTTP or with an unverified certificate, besides localhost and
    /// loopback addresses, which always may.
    pub insecure: Vec<String>,
    /// Mirrors by registry name (`docker.io` → [`http://127.0.0.1:5001`]),
    /// tried in order for pulls. A mirror without a scheme is HTTPS.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Logins; `None` reads docker's default `config.json` at
    /// [`Client::new`].
    pub docker_config: Option<DockerConfig>,
    /// `User-Agent`; `keel/<version>` when empty.
    pub user_agent: String,
}

impl ClientOptions {
    /// Reads a registries file:
    /// `{"mirrors":{"docker.io":["http://127.0.0.1:5001"]},"insecure":["myreg:5000"]}`.
    /// docker's `daemon.json` keys (`registry-mirrors` for docker.io,
    /// `insecure-registries`) are read too. A missing file is no options.
    pub fn from_file(path: &Path) -> Result<ClientOptions> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ClientOptions::default());
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        ClientOptions::parse(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &[u8]) -> Result<ClientOptions> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            mirrors: HashMap<String, Vec<String>>,
            #[serde(default)]
            insecure: Vec<String>,
            #[serde(default, rename = "registry-mirrors")]
            registry_mirrors: Vec<String>,
            #[serde(default, rename = "insecure-registries")]
            insecure_registries: Vec<String>,
        }
        let file: File = serde_json::from_slice(text)
            .map_err(|e| Error::msg(format!("invalid registries config: {e}")))?;
        let mut options = ClientOptions {
            insecure: file.insecure,
            mirrors: file.mirrors,
            ..ClientOptions::default()
        };
        options.insecure.extend(file.insecure_registries);
        if !file.registry_mirrors.is_empty() {
            options
                .mirrors
                .entry(DOCKER_HUB.to_string())
                .or_default()
                .extend(file.registry_mirrors);
        }
        for mirrors in options.mirrors.values() {
            for mirror in mirrors {
                Url::parse(&mirror_url(mirror))
                    .map_err(|e| Error::msg(format!("invalid mirror URL {mirror:?}: {e}")))?;
            }
        }
        Ok(options)
    }
}

fn mirror_url(mirror: &str) -> String {
    let mirror = mirror.trim_end_matches('/');
    if mirror.contains("://") {
        mirror.to_string()
    } else {
        format!("https://{mirror}")
    }
}

/// Where one registry (or one of its mirrors) is reached.
#[derive(Debug, Clone)]
struct Endpoint {
    /// `https://registry-1.docker.io`, `http://127.0.0.1:5000`, without
    /// `/v2`; resolved lazily for insecure hosts (see `Client::base`).
    base: Option<String>,
    /// `host[:port]` of the API server.
    host: String,
    /// The registry name credentials are looked up by.
    registry: String,
    mirror: bool,
}

type CacheKey = (String, String);

/// Who a request is for: the endpoint, the token scopes it needs, and what
/// its errors say it was doing.
#[derive(Clone, Copy)]
struct Call<'a> {
    endpoint: &'a Endpoint,
    scopes: &'a [String],
    context: &'a str,
}

#[derive(Debug, Clone)]
enum CachedAuth {
    Bearer { header: String, expires: Instant },
    Basic(String),
}

/// Something a request sends: nothing, bytes (can be resent after an auth
/// challenge), or a stream (sent once).
pub enum RequestBody {
    Empty,
    Bytes(Bytes),
    Stream(reqwest::Body),
}

/// A manifest or index as the registry served it.
#[derive(Debug, Clone)]
pub struct ManifestResponse {
    pub media_type: String,
    pub data: Bytes,
    /// The sha256 of `data` (checked against the reference's digest and
    /// the registry's `Docker-Content-Digest`).
    pub digest: Digest,
}

/// A blob being downloaded.
pub struct BlobStream {
    /// Where the bytes of `stream` start in the blob: the offset asked for
    /// when the server honoured the `Range`, else 0 (the whole blob).
    pub offset: u64,
    /// From `Content-Length` (the bytes of `stream`), when the server sent it.
    pub size: Option<u64>,
    pub stream: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// How [`Client::upload_blob`] sends the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// POST, then one PUT with the whole blob.
    Monolithic,
    /// POST, PATCH chunks of this many bytes, then PUT with no body.
    Chunked(usize),
}

/// A registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// Verifies certificates; follows no redirect by itself.
    http: reqwest::Client,
    /// Accepts any certificate: insecure registries only.
    http_insecure: reqwest::Client,
    insecure: Vec<String>,
    mirrors: HashMap<String, Vec<String>>,
    credentials: DockerConfig,
    auth: Mutex<HashMap<CacheKey, CachedAuth>>,
    /// The scheme chosen for each insecure host.
    bases: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("insecure", &self.inner.insecure)
            .field("mirrors", &self.inner.mirrors)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client> {
        let user_agent = if options.user_agent.is_empty() {
            format!("keel/{}", env!("CARGO_PKG_VERSION"))
        } else {
            options.user_agent.clone()
        };
        let builder = || {
            reqwest::Client::builder()
                .user_agent(user_agent.clone())
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120))
        };
        let http = builder()
            .build()
            .map_err(|e| Error::http("create the HTTP client", e))?;
        let http_insecure = builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| Error::http("create the HTTP client", e))?;
        let credentials = match options.docker_config {
            Some(config) => config,
            None => DockerConfig::load_default()?,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                http_insecure,
                insecure: options.insecure,
                mirrors: options.mirrors,
                credentials,
                auth: Mutex::new(HashMap::new()),
                bases: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Whether `host` (`host[:port]`) may be reached without verified TLS.
    pub fn is_insecure(&self, host: &str) -> bool {
        is_insecure_host(host, &self.inner.insecure)
    }

    fn upstream(&self, registry: &str) -> Endpoint {
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        Endpoint {
            base: (!self.is_insecure(host)).then(|| format!("https://{host}")),
            host: host.to_string(),
            registry: registry.to_string(),
            mirror: false,
        }
    }

    /// Mirrors (for pulls) then the registry itself.
    fn endpoints(&self, registry: &str, pull: bool) -> Vec<Endpoint> {
        let mut endpoints = Vec::new();
        if pull && let Some(mirrors) = self.inner.mirrors.get(registry) {
            for mirror in mirrors {
                let url = mirror_url(mirror);
                let Ok(parsed) = Url::parse(&url) else {
                    continue;
                };
                let host = host_port(&parsed);
                endpoints.push(Endpoint {
                    base: Some(url),
                    registry: host.clone(),
                    host,
                    mirror: true,
                });
            }
        }
        endpoints.push(self.upstream(registry));
        endpoints
    }

    /// The endpoint's base URL; for an insecure host, HTTPS if it answers
    /// TLS, else HTTP (decided once per host).
    async fn base(&self, endpoint: &Endpoint) -> String {
        if let Some(base) = &endpoint.base {
            return base.clone();
        }
        if let Some(base) = lock(&self.inner.bases).get(&endpoint.host) {
            return base.clone();
        }
        let https = format!("https://{}", endpoint.host);
        let probe = self
            .inner
            .http_insecure
            .get(format!("{https}/v2/"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        let base = match probe {
            Ok(_) => https,
            Err(e) => {
                tracing::debug!(host = %endpoint.host, error = %e, "no HTTPS; using plain HTTP");
                format!("http://{}", endpoint.host)
            }
        };
        lock(&self.inner.bases).insert(endpoint.host.clone(), base.clone());
        base
    }

    fn http_for(&self, url: &Url) -> &reqwest::Client {
        if self.is_insecure(&host_port(url)) {
            &self.inner.http_insecure
        } else {
            &self.inner.http
        }
    }
}
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn display_endpoint(endpoint: &Endpoint, base: &str) -> String {
    if endpoint.mirror {
        format!("mirror {base}")
    } else {
        endpoint.host.clone()
    }
}

/// `host:port` of a URL (the port only when explicit), brackets kept for IPv6.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A URL without its query (pre-signed blob storage URLs carry secrets).
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    if url.query().is_some() {
        url.set_query(Some("…"));
    }
    url.to_string()
}

/// localhost, 127.0.0.0/8 and ::1 always; otherwise the user's list, by
/// `host:port` or by host alone.
pub fn is_insecure_host(host: &str, insecure: &[String]) -> bool {
    let bare = strip_port(host);
    let bare_unbracketed = bare.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = bare_unbracketed.parse::<IpAddr>()
        && ip.is_loopback()
    {
        return true;
    }
    insecure.iter().any(|entry| {
        let entry = entry
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        entry.eq_ignore_ascii_case(host) || entry.eq_ignore_ascii_case(bare)
    })
}

/// `host` of `host:port`, `[::1]` of `[::1]:5000`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// The `rel="next"` target of a `Link` header.
pub fn parse_link_next(header: &str) -> Option<String> {
    for link in header.split(',') {
        let (target, params) = link.split_once(';').unwrap_or((link, ""));
        let target = target.trim();
        let target = target.strip_prefix('<')?.strip_suffix('>')?;
        let next = params.split(';').any(|param| {
            let param = param.trim().replace(' ', "");
            param.eq_ignore_ascii_case("rel=\"next\"") || param.eq_ignore_ascii_case("rel=next")
        });
        if next {
            return Some(target.to_string());
        }
    }
    None
}

/// The media type from `Content-Type`, or from the document when the
/// server says only `application/json` (or nothing).
pub fn detect_media_type(content_type: Option<&str>, data: &[u8]) -> Option<String> {
    if let Some(content_type) = content_type
        && MANIFEST_ACCEPT.contains(&content_type)
    {
        return Some(content_type.to_string());
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(data).ok()?;
    if let Some(media_type) = probe.media_type {
        return MANIFEST_ACCEPT
            .contains(&media_type.as_str())
            .then_some(media_type);
    }
    if probe.schema_version != Some(2) {
        return None;
    }
    if probe.manifests.is_some() {
        Some(MEDIA_TYPE_OCI_INDEX.to_string())
    } else if probe.config.is_some() {
        Some(MEDIA_TYPE_OCI_MANIFEST.to_string())
    } else {
        None
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The upload `Location`, absolute.
fn location(response: &reqwest::Response, base: &str) -> Option<String> {
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    Url::parse(base)
        .and_then(|b| b.join(location))
        .ok()
        .map(String::from)
}

/// `Range: bytes=<offset>-`, or nothing for the whole blob.
fn range_headers(offset: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if offset > 0
        && let Ok(value) = HeaderValue::from_str(&format!("bytes={offset}-"))
    {
        headers.insert(header::RANGE, value);
    }
    headers
}

/// The first byte a `Content-Range: bytes <first>-<last>/<size>` names.
pub fn content_range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    let (first, _) = range.split_once('-')?;
    first.trim().parse().ok()
}

/// The body of a blob GET asked from `offset`: a 206 must start there; a
/// 200 is the whole blob (the server ignored the range); a 416 (the range
/// is past the end: the partial we hold is not of this blob) is an error
/// the caller answers by starting over.
async fn ranged_blob_stream(
    response: reqwest::Response,
    offset: u64,
    context: String,
) -> Result<BlobStream> {
    let status = response.status();
    if !status.is_success() {
        return Err(error_from(response, &context).await);
    }
    let start = if status == StatusCode::PARTIAL_CONTENT {
        let start = response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range_start);
        if start != Some(offset) || offset == 0 {
            return Err(Error::msg(format!(
                "{context}: asked for bytes from {offset}, the server sent a part starting at {}",
                start.map_or_else(|| "an unknown offset".to_string(), |s| s.to_string())
            )));
        }
        offset
    } else {
        0
    };
    let size = content_length(response.headers());
    let stream = response
        .bytes_stream()
        .map(move |chunk| chunk.map_err(|e| Error::http(format!("{context}: read"), e)));
    Ok(BlobStream {
        offset: start,
        size,
        stream: Box::pin(stream),
    })
}

async fn read_limited(response: reqwest::Response, limit: usize, context: &str) -> Result<Bytes> {
    if content_length(response.headers()).is_some_and(|len| len > limit as u64) {
        return Err(Error::msg(format!(
            "{context}: the answer is larger than {limit} bytes"
        )));
    }
    let mut stream = response.bytes_stream();
    let mut data = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::http(format!("{context}: read"), e))?;
        if data.len() + chunk.len() > limit {
            return Err(Error::msg(format!(
                "{context}: the answer is larger than {limit} bytes"
            )));
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data.freeze())
}

/// An error from a failed answer, with the registry's error list.
async fn error_from(response: reqwest::Response, context: &str) -> Error {
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            break;
        }
    }
    let mut errors = parse_registry_errors(&body);
    if errors.is_empty() && status == StatusCode::UNAUTHORIZED {
        errors.push(RegistryError {
            code: "UNAUTHORIZED".into(),
            message: "authentication required".into(),
        });
    }
    Error::Registry {
        context: context.to_string(),
        status: Status(status.as_u16()),
        errors,
    }
}

/// Checks that `registry` accepts these credentials (`keel login`, the
/// API's `/auth`): a client with only them asks `GET /v2/` through the
/// registry's challenge.
pub async fn verify_login(
    mut options: ClientOptions,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<()> {
    let mut config = crate::auth::DockerConfig::default();
    config.insert(
        registry,
        crate::auth::Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        },
    );
    options.docker_config = Some(config);
    Client::new(options)?.login(registry).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_are_insecure() {
        let listed = vec!["myreg:5000".to_string(), "other.example.com".to_string()];
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:5000",
            "[::1]:5000",
            "::1",
            "myreg:5000",
            "other.example.com",
            "other.example.com:443",
        ] {
            assert!(is_insecure_host(host, &listed), "{host}");
        }
        for host in [
            "myreg",
            "myreg:5001",
            "docker.io",
            "10.0.0.1:5000",
            "128.0.0.1",
            "[::2]:5000",
        ] {
            assert!(!is_insecure_host(host, &listed), "{host}");
        }
    }

    #[test]
    fn parses_link_headers() {
        assert_eq!(
            parse_link_next(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            parse_link_next(r#"<https://x/prev>; rel="prev", <https://x/next>; rel=next"#)
                .as_deref(),
            Some("https://x/next")
        );
        assert_eq!(parse_link_next(r#"<https://x/prev>; rel="prev""#), None);
        assert_eq!(parse_link_next("garbage"), None);
    }

    #[test]
    fn detects_media_types() {
        assert_eq!(
            detect_media_type(Some(MEDIA_TYPE_DOCKER_MANIFEST), b"").as_deref(),
            Some(MEDIA_TYPE_DOCKER_MANIFEST)
        );
        assert_eq!(
            detect_media_type(
                Some("application/json"),
                br#"{"schemaVersion":2,"manifests":[]}"#
            )
            .as_deref(),
            Some(MEDIA_TYPE_OCI_INDEX)
        );
        assert_eq!(
            detect_media_type(None, br#"{"schemaVersion":2,"config":{},"layers":[]}"#).as_deref(),
            Some(MEDIA_TYPE_OCI_MANIFEST)
        );
        assert_eq!(
            detect_media_type(
                None,
                br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#
            )
            .as_deref(),
            Some(MEDIA_TYPE_DOCKER_LIST)
        );
        // schema1 and garbage are refused.
        assert_eq!(
            detect_media_type(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                br#"{"schemaVersion":1,"fsLayers":[]}"#
            ),
            None
        );
        assert_eq!(detect_media_type(None, b"nope"), None);
    }

    #[test]
    fn reads_options_files() {
        let options = ClientOptions::parse(
            br#"{"mirrors":{"docker.io":["http://127.0.0.1:5001"]},"insecure":["myreg:5000"],
                "registry-mirrors":["mirror.example.com"],"insecure-registries":["r2"]}"#,
        )
        .unwrap();
        assert_eq!(options.insecure, vec!["myreg:5000", "r2"]);
        assert_eq!(
            options.mirrors["docker.io"],
            vec!["http://127.0.0.1:5001", "mirror.example.com"]
        );
        assert!(ClientOptions::parse(br#"{"mirrors":{"docker.io":["http://[bad"]}}"#).is_err());
        assert!(ClientOptions::parse(br#"{"mirror":{}}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(
            ClientOptions::from_file(&dir.path().join("none.json"))
                .unwrap()
                .mirrors
                .is_empty()
        );
    }

    #[test]
    fn endpoints_put_mirrors_first_for_pulls() {
        let mut options = ClientOptions {
            docker_config: Some(DockerConfig::default()),
            ..ClientOptions::default()
        };
        options.mirrors.insert(
            "docker.io".into(),
            vec!["http://127.0.0.1:5001".into(), "mirror.example.com/".into()],
        );
        let client = Client::new(options).unwrap();
        let pull = client.endpoints("docker.io", true);
        let bases: Vec<_> = pull.iter().map(|e| e.base.clone().unwrap()).collect();
        assert_eq!(
            bases,
            vec![
                "http://127.0.0.1:5001",
                "https://mirror.example.com",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(pull[0].host, "127.0.0.1:5001");
        let push = client.endpoints("docker.io", false);
        assert_eq!(push.len(), 1);
        assert_eq!(push[0].registry, "docker.io");
        // An insecure registry's scheme is probed later.
        assert!(client.endpoints("localhost:5000", true)[0].base.is_none());
        assert_eq!(
            client.endpoints("quay.io", true)[0].base.as_deref(),
            Some("https://quay.io")
        );
    }
}
