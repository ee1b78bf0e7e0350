//! The `/v2/` API of the distribution spec v1.1: routing (repository names
//! have slashes, so paths are matched from the right), auth and read-only
//! checks, and one handler per endpoint. Blob bodies stream both ways.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use keel_image::digest::Digest;
use keel_image::manifest::MEDIA_TYPE_OCI_INDEX;
use serde_json::json;
use tokio::io::AsyncSeekExt;

use super::auth::{Htpasswd, Identity};
use super::errors::{ApiError, ApiResult, Code};
use super::storage::{
    MANIFEST_SIZE_LIMIT, Reference, Storage, UploadHandle, parse_digest, validate_name,
};

pub type ResponseBody = BoxBody<Bytes, io::Error>;

/// What every request handler shares.
pub struct App {
    pub storage: Arc<Storage>,
    pub auth: Option<Arc<Htpasswd>>,
    pub read_only: bool,
    /// Requests in flight beyond this get TOOMANYREQUESTS.
    pub limiter: Option<Arc<tokio::sync::Semaphore>>,
}

/// Who the access log names, put on the response by the handler.
#[derive(Clone, Debug)]
pub struct LoggedUser(pub String);

/// The endpoint a path names.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    let name = |end: usize| parts[..end].join("/");
    if n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" {
        let id = parts[n - 1];
        if id.is_empty() {
            return Some(Route::UploadStart(name(n - 3)));
        }
        return Some(Route::Upload(name(n - 3), id.to_string()));
    }
    if n >= 3 && parts[n - 2] == "blobs" && parts[n - 1] == "uploads" {
        return Some(Route::UploadStart(name(n - 2)));
    }
    if n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list" {
        return Some(Route::Tags(name(n - 2)));
    }
    if n >= 3 {
        let last = percent_decode(parts[n - 1]);
        match parts[n - 2] {
            "manifests" => return Some(Route::Manifest(name(n - 2), last)),
            "blobs" => return Some(Route::Blob(name(n - 2), last)),
            "referrers" => return Some(Route::Referrers(name(n - 2), last)),
            _ => {}
        }
    }
    None
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's parameters, decoded (`+` is a space, as in forms).
fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&key.replace('+', " ")),
                percent_decode(&value.replace('+', " ")),
            )
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn empty() -> ResponseBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(data: impl Into<Bytes>) -> ResponseBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: ResponseBody,
}

impl Answer {
    fn new(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: empty(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, body: ResponseBody) -> Answer {
        self.body = body;
        self
    }

    fn json(status: u16, value: &serde_json::Value) -> Answer {
        let text = value.to_string();
        Answer::new(status)
            .header("Content-Type", "application/json")
            .header("Content-Length", text.len().to_string())
            .body(full(text))
    }
}

fn build(answer: Answer, user: Option<&Identity>) -> Response<ResponseBody> {
    let mut response = Response::new(answer.body);
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
    if let Some(Identity::User(user)) = user {
        response.extensions_mut().insert(LoggedUser(user.clone()));
    }
    response
}

fn error_answer(error: ApiError) -> Answer {
    if error.status >= 500 {
        tracing::error!("{error}");
    }
    let text = error.body();
    let mut answer = Answer::new(error.status)
        .header("Content-Type", "application/json")
        .header("Content-Length", text.len().to_string())
        .body(full(text));
    answer.headers.extend(error.headers);
    answer
}

/// Handles one request; never fails (errors are spec answers).
pub async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let _permit = match &app.limiter {
        Some(limiter) => match limiter.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let error = ApiError::new(
                    Code::TooManyRequests,
                    "too many requests in flight; try again shortly",
                )
                .with_header("Retry-After", "1");
                return Ok(build(error_answer(error), None));
            }
        },
        None => None,
    };
    let mut identity = None;
    let answer = match dispatch(&app, request, &mut identity).await {
        Ok(answer) => answer,
        Err(error) => error_answer(error),
    };
    Ok(build(answer, identity.as_ref()))
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

async fn dispatch(
    app: &Arc<App>,
    request: Request<Incoming>,
    identity: &mut Option<Identity>,
) -> ApiResult<Answer> {
    let method = request.method().clone();
    let Some(route) = route(request.uri().path()) else {
        return Err(ApiError::new(
            Code::Unsupported,
            format!(
                "{} is not an endpoint of this registry",
                request.uri().path()
            ),
        )
        .with_status(404));
    };
    if let Some(auth) = &app.auth {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth
            .check(authorization, is_write(&method), route == Route::Base)
            .await
        {
            Ok(who) => *identity = Some(who),
            Err(error) => {
                let challenge = auth.challenge();
                return Err(if error.code == Code::Unauthorized {
                    error.with_header("WWW-Authenticate", challenge)
                } else {
                    error
                });
            }
        }
    }
    if app.read_only && is_write(&method) {
        // distribution's registry in read-only mode has no write handlers:
        // 405 Method Not Allowed.
        return Err(ApiError::new(
            Code::Unsupported,
            "this registry is read-only: pushes and deletes are refused",
        )
        .with_header("Allow", "GET, HEAD"));
    }
    let not_allowed = |allow: &str| {
        Err(ApiError::new(
            Code::Unsupported,
            format!("{method} is not supported here (use {allow})"),
        )
        .with_header("Allow", allow.to_string()))
    };
    let params = query_params(request.uri().query());
    let name_of = |route: &Route| -> Option<String> {
        match route {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _) => Some(n.clone()),
            _ => None,
        }
    };
    if let Some(name) = name_of(&route) {
        validate_name(&name)?;
    }
    match (route, method.clone()) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(Answer::json(200, &json!({}))),
        (Route::Base, _) => not_allowed("GET, HEAD"),
        (Route::Catalog, Method::GET) => {
            let storage = app.storage.clone();
            let names = blocking(move || Ok(storage.catalog())).await?;
            paginate(
                names,
                &params,
                "/v2/_catalog",
                |page| json!({ "repositories": page }),
            )
        }
        (Route::Catalog, _) => not_allowed("GET"),
        (Route::Tags(name), Method::GET) => {
            let storage = app.storage.clone();
            let repo = name.clone();
            let tags = blocking(move || storage.tags(&repo)).await?;
            let link = format!("/v2/{name}/tags/list");
            paginate(
                tags,
                &params,
                &link,
                |page| json!({ "name": name, "tags": page }),
            )
        }
        (Route::Tags(_), _) => not_allowed("GET"),
        (Route::Blob(name, digest), Method::GET | Method::HEAD) => {
            get_blob(
                app,
                &name,
                &digest,
                request.headers(),
                method == Method::HEAD,
            )
            .await
        }
        (Route::Blob(name, digest), Method::DELETE) => {
            let digest = parse_digest(&digest)?;
            let storage = app.storage.clone();
            blocking(move || storage.delete_blob(&name, &digest)).await?;
            Ok(Answer::new(202).header("Content-Length", "0"))
        }
        (Route::Blob(..), _) => not_allowed("GET, HEAD, DELETE"),
        (Route::UploadStart(name), Method::POST) => {
            start_upload(app, &name, &params, request).await
        }
        (Route::UploadStart(_), _) => not_allowed("POST"),
        (Route::Upload(name, id), Method::GET) => {
            let upload = lookup_upload(app, &name, &id).await?;
            let upload = upload.lock().await;
            Storage::check_upload(&upload, &name)?;
            Ok(upload_answer(204, &name, &upload.id, &upload.range()))
        }
        (Route::Upload(name, id), Method::PATCH) => patch_upload(app, &name, &id, request).await,
        (Route::Upload(name, id), Method::PUT) => {
            finish_upload(app, &name, &id, &params, request).await
        }
        (Route::Upload(name, id), Method::DELETE) => {
            let upload = lookup_upload(app, &name, &id).await?;
            let mut upload = upload.lock_owned().await;
            Storage::check_upload(&upload, &name)?;
            let storage = app.storage.clone();
            blocking(move || {
                storage.remove_upload(&mut upload);
                Ok(())
            })
            .await?;
            Ok(Answer::new(204).header("Content-Length", "0"))
        }
        (Route::Upload(..), _) => not_allowed("GET, PATCH, PUT, DELETE"),
        (Route::Manifest(name, reference), Method::GET | Method::HEAD) => {
            get_manifest(
                app,
                &name,
                &reference,
                request.headers(),
                method == Method::HEAD,
            )
            .await
        }
        (Route::Manifest(name, reference), Method::PUT) => {
            put_manifest(app, &name, &reference, request).await
        }
        (Route::Manifest(name, reference), Method::DELETE) => {
            let reference = Reference::parse(&reference)?;
            let storage = app.storage.clone();
            blocking(move || storage.delete_manifest(&name, &reference)).await?;
            Ok(Answer::new(202).header("Content-Length", "0"))
        }
        (Route::Manifest(..), _) => not_allowed("GET, HEAD, PUT, DELETE"),
        (Route::Referrers(name, digest), Method::GET) => {
            let digest = parse_digest(&digest)?;
            let filter = param(&params, "artifactType").map(str::to_string);
            let storage = app.storage.clone();
            let wanted = filter.clone();
            let manifests =
                blocking(move || Ok(storage.referrers(&name, &digest, wanted.as_deref()))).await?;
            let index = json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_OCI_INDEX,
                "manifests": manifests,
            });
            let text = index.to_string();
            let mut answer = Answer::new(200)
                .header("Content-Type", MEDIA_TYPE_OCI_INDEX)
                .header("Content-Length", text.len().to_string())
                .body(full(text));
            if filter.is_some() {
                answer = answer.header("OCI-Filters-Applied", "artifactType");
            }
            Ok(answer)
        }
        (Route::Referrers(..), _) => not_allowed("GET"),
    }
}

/// Runs filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal("storage task", e))?
}

/// `n`/`last` pagination with a `Link` to the next page, as distribution
/// does for tags and the catalog.
fn paginate(
    items: Vec<String>,
    params: &[(String, String)],
    path: &str,
    wrap: impl Fn(&[String]) -> serde_json::Value,
) -> ApiResult<Answer> {
    let n = match param(params, "n") {
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            ApiError::new(
                Code::PaginationNumberInvalid,
                format!("n={text:?} is not a number of entries"),
            )
        })?),
        None => None,
    };
    let last = param(params, "last");
    let rest: Vec<String> = items
        .into_iter()
        .filter(|item| last.is_none_or(|last| item.as_str() > last))
        .collect();
    let (page, more) = match n {
        Some(n) if n < rest.len() => (&rest[..n], true),
        _ => (&rest[..], false),
    };
    let mut answer = Answer::json(200, &wrap(page));
    if more && let (Some(n), Some(final_item)) = (n, page.last()) {
        answer = answer.header(
            "Link",
            format!("<{path}?n={n}&last={}>; rel=\"next\"", final_item),
        );
    }
    Ok(answer)
}

/// A single `bytes=` range of a blob of `size` bytes: `Ok(None)` for the
/// whole blob (no header, or one we do not serve, e.g. several ranges),
/// `Err(())` if it is unsatisfiable.
fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let Ok(first) = first.parse::<u64>() else {
            return Ok(None);
        };
        let last = if last.is_empty() {
            size.saturating_sub(1)
        } else {
            match last.parse::<u64>() {
                Ok(last) if last >= first => last.min(size.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if first >= size {
            return Err(());
        }
        (first, last)
    };
    Ok(Some(range))
}

/// A body that reads `length` bytes of `file` from where it stands: one
/// blocking reader per response sends 256 KiB pieces through a channel of
/// four (pooled mappings: see `pieces`), so a download costs one thread
/// hand-off per piece rather than a
/// blocking-pool task per read, and a client holds at most ~1.25 MiB.
fn file_body(file: tokio::fs::File, length: u64) -> ResponseBody {
    use super::pieces::{PIECE, Piece};
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::spawn(async move {
        let mut file = file.into_std().await;
        let _ = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut left = length;
            while left > 0 {
                let Some(mut piece) = Piece::take() else {
                    let _ =
                        sender.blocking_send(Err(io::Error::other("out of memory for a piece")));
                    break;
                };
                let want = (left as usize).min(PIECE);
                let read = match file.read(&mut piece.buffer()[..want]) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob is shorter than its size",
                    )),
                    Ok(n) => {
                        left -= n as u64;
                        Ok(piece.into_bytes(n))
                    }
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                // The client went away: stop reading.
                if sender.blocking_send(read).is_err() || failed {
                    break;
                }
            }
        })
        .await;
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let piece = receiver.recv().await?;
        Some((piece.map(Frame::data), receiver))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

async fn get_blob(
    app: &Arc<App>,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Answer> {
    let digest = parse_digest(digest)?;
    let storage = app.storage.clone();
    let (repo, wanted) = (name.to_string(), digest.clone());
    let found = blocking(move || Ok(storage.blob_in_repo(&repo, &wanted))).await?;
    let Some((path, size)) = found else {
        return Err(ApiError::new(
            Code::BlobUnknown,
            format!("blob {digest} is unknown to repository {name}"),
        )
        .with_detail(json!({ "digest": digest.to_string() })));
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match parse_range(range, size) {
        Ok(range) => range,
        Err(()) => {
            return Ok(Answer::new(416)
                .header("Content-Range", format!("bytes */{size}"))
                .header("Content-Length", "0"));
        }
    };
    let mut answer = Answer::new(if range.is_some() { 206 } else { 200 })
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest.to_string())
        .header("Accept-Ranges", "bytes")
        .header("ETag", format!("\"{digest}\""))
        .header("Cache-Control", "max-age=31536000");
    let (start, length) = match range {
        Some((first, last)) => {
            answer = answer.header("Content-Range", format!("bytes {first}-{last}/{size}"));
            (first, last - first + 1)
        }
        None => (0, size),
    };
    answer = answer.header("Content-Length", length.to_string());
    if head {
        return Ok(answer);
    }
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::internal(format!("open blob {digest}"), e))?;
    if start > 0 {
        file.seek(io::SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal(format!("seek in blob {digest}"), e))?;
    }
    Ok(answer.body(file_body(file, length)))
}

fn upload_answer(status: u16, name: &str, id: &str, range: &str) -> Answer {
    Answer::new(status)
        .header("Location", format!("/v2/{name}/blobs/uploads/{id}"))
        .header("Range", range.to_string())
        .header("Docker-Upload-UUID", id.to_string())
        .header("Content-Length", "0")
}

fn blob_created(name: &str, digest: &Digest) -> Answer {
    Answer::new(201)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.to_string())
        .header("Content-Length", "0")
}

fn content_length(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::SizeInvalid, "Content-Length is not a number")),
    }
}

/// `Content-Range: <first>-<last>` (distribution's form; `bytes ` or
/// `bytes=` before it and a `/total` after it are taken too).
fn content_range(headers: &HeaderMap) -> ApiResult<Option<(u64, u64)>> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::new(
            Code::BlobUploadInvalid,
            "malformed Content-Range: expected <first>-<last>",
        )
        .with_status(416)
    };
    let text = value.to_str().map_err(|_| malformed())?.trim();
    let text = text
        .strip_prefix("bytes")
        .map(|t| t.trim_start_matches(['=', ' ']))
        .unwrap_or(text);
    let text = text.split('/').next().unwrap_or("");
    let (first, last) = text.split_once('-').ok_or_else(malformed)?;
    let first = first.trim().parse::<u64>().map_err(|_| malformed())?;
    let last = last.trim().parse::<u64>().map_err(|_| malformed())?;
    Ok(Some((first, last)))
}

async fn lookup_upload(app: &Arc<App>, name: &str, id: &str) -> ApiResult<UploadHandle> {
    let storage = app.storage.clone();
    let (repo, id) = (name.to_string(), id.to_string());
    blocking(move || storage.upload(&repo, &id)).await
}

async fn start_upload(
    app: &Arc<App>,
    name: &str,
    params: &[(String, String)],
    request: Request<Incoming>,
) -> ApiResult<Answer> {
    if let Some(mount) = param(params, "mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = param(params, "from") {
            let storage = app.storage.clone();
            let (repo, from, wanted) = (name.to_string(), from.to_string(), digest.clone());
            if blocking(move || storage.mount(&repo, &from, &wanted)).await? {
                return Ok(blob_created(name, &digest));
            }
        }
        // Not mountable: the spec says start an upload instead.
    }
    let storage = app.storage.clone();
    let repo = name.to_string();
    let upload = blocking(move || storage.start_upload(&repo)).await?;
    let Some(digest) = param(params, "digest") else {
        let upload = upload.lock().await;
        return Ok(upload_answer(202, name, &upload.id, "0-0"));
    };
    // A monolithic upload: the body is the blob.
    let mut upload = upload.lock_owned().await;
    let result: ApiResult<Digest> = async {
        let digest = parse_digest(digest)?;
        let length = content_length(request.headers())?;
        app.storage
            .append(&mut upload, request.into_body(), None, length)
            .await?;
        Ok(digest)
    }
    .await;
    let storage = app.storage.clone();
    let digest = match result {
        Ok(digest) => digest,
        Err(error) => {
            blocking(move || {
                storage.remove_upload(&mut upload);
                Ok(())
            })
            .await?;
            return Err(error);
        }
    };
    let wanted = digest.clone();
    blocking(move || storage.finish(&mut upload, &wanted)).await?;
    Ok(blob_created(name, &digest))
}

async fn patch_upload(
    app: &Arc<App>,
    name: &str,
    id: &str,
    request: Request<Incoming>,
) -> ApiResult<Answer> {
    let upload = lookup_upload(app, name, id).await?;
    let mut upload = upload.lock().await;
    Storage::check_upload(&upload, name)?;
    let range = content_range(request.headers())?;
    let length = content_length(request.headers())?;
    let here = upload_answer(202, name, &upload.id, &upload.range());
    if let Err(error) = app
        .storage
        .append(&mut upload, request.into_body(), range, length)
        .await
    {
        let mut error = error;
        for (key, value) in here.headers {
            if key == "Location" || key == "Range" || key == "Docker-Upload-UUID" {
                error = error.with_header(key, value);
            }
        }
        return Err(error);
    }
    Ok(upload_answer(202, name, &upload.id, &upload.range()))
}

async fn finish_upload(
    app: &Arc<App>,
    name: &str,
    id: &str,
    params: &[(String, String)],
    request: Request<Incoming>,
) -> ApiResult<Answer> {
    let upload = lookup_upload(app, name, id).await?;
    let mut upload = upload.lock_owned().await;
    Storage::check_upload(&upload, name)?;
    let Some(digest) = param(params, "digest") else {
        return Err(ApiError::new(
            Code::DigestInvalid,
            "finishing an upload needs ?digest=sha256:<hex>",
        ));
    };
    let digest = parse_digest(digest)?;
    let range = content_range(request.headers())?;
    let length = content_length(request.headers())?;
    let body = request.into_body();
    if !body.is_end_stream() || range.is_some() {
        app.storage.append(&mut upload, body, range, length).await?;
    }
    let storage = app.storage.clone();
    let wanted = digest.clone();
    blocking(move || storage.finish(&mut upload, &wanted)).await?;
    Ok(blob_created(name, &digest))
}

/// The media types an `Accept` header lists; empty if it takes anything.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    let mut types = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let kind = item.split(';').next().unwrap_or("").trim().to_string();
            if matches!(kind.as_str(), "*/*" | "application/*" | "application/json") {
                return Vec::new();
            }
            if !kind.is_empty() {
                types.push(kind);
            }
        }
    }
    types
}

async fn get_manifest(
    app: &Arc<App>,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> ApiResult<Answer> {
    let reference = Reference::parse(reference)?;
    let storage = app.storage.clone();
    let repo = name.to_string();
    let manifest = blocking(move || storage.get_manifest(&repo, &reference)).await?;
    let accepted = accepted(headers);
    if !accepted.is_empty() && !accepted.contains(&manifest.media_type) {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!(
                "manifest {} is a {}, which the Accept header does not list",
                manifest.digest, manifest.media_type
            ),
        ));
    }
    let answer = Answer::new(200)
        .header("Content-Type", manifest.media_type.clone())
        .header("Docker-Content-Digest", manifest.digest.to_string())
        .header("ETag", format!("\"{}\"", manifest.digest))
        .header("Content-Length", manifest.size.to_string());
    if head {
        return Ok(answer);
    }
    let file = tokio::fs::File::open(&manifest.path)
        .await
        .map_err(|e| ApiError::internal(format!("open manifest {}", manifest.digest), e))?;
    Ok(answer.body(file_body(file, manifest.size)))
}

async fn put_manifest(
    app: &Arc<App>,
    name: &str,
    reference: &str,
    request: Request<Incoming>,
) -> ApiResult<Answer> {
    let reference = Reference::parse(reference)?;
    let too_large = || {
        ApiError::new(
            Code::SizeInvalid,
            format!("the manifest is larger than {MANIFEST_SIZE_LIMIT} bytes"),
        )
        .with_status(413)
    };
    if content_length(request.headers())?.is_some_and(|n| n > MANIFEST_SIZE_LIMIT as u64) {
        return Err(too_large());
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = request.into_body();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                Code::ManifestInvalid,
                format!("reading the manifest failed: {e}"),
            )
        })?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > MANIFEST_SIZE_LIMIT {
                return Err(too_large());
            }
            data.extend_from_slice(&chunk);
        }
    }
    let storage = app.storage.clone();
    let repo = name.to_string();
    let put =
        blocking(move || storage.put_manifest(&repo, &reference, content_type.as_deref(), &data))
            .await?;
    let mut answer = Answer::new(201)
        .header("Location", format!("/v2/{name}/manifests/{}", put.digest))
        .header("Docker-Content-Digest", put.digest.to_string())
        .header("Content-Length", "0");
    if let Some(subject) = put.subject {
        answer = answer.header("OCI-Subject", subject.to_string());
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_from_the_right() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("/v2/a/manifests/b/manifests/latest"),
            Some(Route::Manifest("a/manifests/b".into(), "latest".into()))
        );
        assert_eq!(
            route("/v2/x/y/blobs/uploads/"),
            Some(Route::UploadStart("x/y".into()))
        );
        assert_eq!(
            route("/v2/x/blobs/uploads"),
            Some(Route::UploadStart("x".into()))
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/abc"),
            Some(Route::Upload("x".into(), "abc".into()))
        );
        assert_eq!(
            route("/v2/x/blobs/sha256%3Aab"),
            Some(Route::Blob("x".into(), "sha256:ab".into()))
        );
        assert_eq!(route("/v2/x/tags/list"), Some(Route::Tags("x".into())));
        assert_eq!(
            route("/v2/x/referrers/sha256:ab"),
            Some(Route::Referrers("x".into(), "sha256:ab".into()))
        );
        assert_eq!(route("/v1/x"), None);
        assert_eq!(route("/v2/x"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=x-"), 10), Ok(None));
    }

    #[test]
    fn queries_decode() {
        let params = query_params(Some("n=2&last=a%2Fb&artifactType=application%2Fx+y"));
        assert_eq!(param(&params, "n"), Some("2"));
        assert_eq!(param(&params, "last"), Some("a/b"));
        assert_eq!(param(&params, "artifactType"), Some("application/x y"));
    }

    #[test]
    fn pagination_links_the_next_page() {
        let items: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let params = vec![("n".to_string(), "2".to_string())];
        let answer = paginate(items.clone(), &params, "/v2/x/tags/list", |p| json!(p)).unwrap();
        let link = answer.headers.iter().find(|(k, _)| *k == "Link").unwrap();
        assert_eq!(link.1, "</v2/x/tags/list?n=2&last=b>; rel=\"next\"");
        let params = vec![
            ("n".to_string(), "2".to_string()),
            ("last".to_string(), "b".to_string()),
        ];
        let answer = paginate(items, &params, "/v2/x/tags/list", |p| json!(p)).unwrap();
        assert!(answer.headers.iter().all(|(k, _)| *k != "Link"));
    }
}
