//! The wire: bodies (whole, or streamed a message at a time), docker's
//! errors (`{"message": ...}` with docker's status codes), query values as
//! docker reads them, and request bodies read up to a limit.

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Serialize;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Reply = Response<Body>;

/// The largest JSON body accepted (a create request is a few KiB).
pub const MAX_JSON_BODY: usize = 4 << 20;

/// An error as docker answers one: a status and a message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn reply(&self) -> Reply {
        json_status(self.status, &serde_json::json!({ "message": self.message }))
    }
}

/// The engine's errors with docker's codes: a missing object 404, a bad
/// request 400, a conflict (a name in use, a container in the wrong state)
/// 409, the rest 500.
impl From<keel_engine::Error> for ApiError {
    fn from(e: keel_engine::Error) -> ApiError {
        use keel_engine::Error as E;
        let message = e.to_string();
        let status = match &e {
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::Conflict(_) => StatusCode::CONFLICT,
            _ if message.starts_with("No such ") => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, message)
    }
}

impl From<keel_image::Error> for ApiError {
    fn from(e: keel_image::Error) -> ApiError {
        keel_engine::Error::from(e).into()
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn status(code: StatusCode) -> Reply {
    let mut reply = Response::new(empty());
    *reply.status_mut() = code;
    reply
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
    json_status(StatusCode::OK, value)
}

pub fn json_status<T: Serialize + ?Sized>(code: StatusCode, value: &T) -> Reply {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    body.push(b'\n');
    let mut reply = Response::new(full(body));
    *reply.status_mut() = code;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

pub fn text(code: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(full(body));
    *reply.status_mut() = code;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

/// A body that is sent as it is made: each message the sender gives is
/// one chunk, flushed (`Transfer-Encoding: chunked`). Dropping the sender
/// ends the body; the sender's `send` fails once the client is gone.
pub fn channel(content_type: &'static str) -> (tokio::sync::mpsc::Sender<Bytes>, Reply) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut reply = Response::new(StreamBody::new(stream).boxed());
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (tx, reply)
}

/// Reads a request body, refusing one larger than `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!("read the request body: {e}"))),
    }
}

/// A JSON body as `T`; an empty body is `T::default()` (docker's clients
/// send none for some requests). Malformed JSON is docker's 400.
pub async fn read_json<T: serde::de::DeserializeOwned + Default>(body: Incoming) -> ApiResult<T> {
    let bytes = read_body(body, MAX_JSON_BODY).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))
}

/// The query string's values, decoded; a key may repeat.
#[derive(Debug, Clone, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let Some(query) = query else {
            return Query::default();
        };
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// docker's boolean: absent, empty, `0`, `no`, `false` or `none`
    /// (any case) is false; anything else (`1`, `true`, `True`) true.
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        })
    }

    pub fn int<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `filters=`: docker's JSON map of a key to its values, in either of
    /// its spellings (`{"label":["a=b"]}` or `{"label":{"a=b":true}}`).
    pub fn filters(&self) -> ApiResult<BTreeMap<String, Vec<String>>> {
        let Some(text) = self.get("filters").filter(|t| !t.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
        let Some(map) = value.as_object() else {
            return Err(ApiError::bad_request("invalid filters: not a JSON object"));
        };
        let mut filters = BTreeMap::new();
        for (key, values) in map {
            let list: Vec<String> = match values {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                serde_json::Value::Object(items) => items
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => return Err(ApiError::bad_request(format!("invalid filter '{key}'"))),
            };
            filters.insert(key.clone(), list);
        }
        Ok(filters)
    }

    /// The filters as `key=value` strings, as the CLI's `--filter` takes them.
    pub fn filter_flags(&self) -> ApiResult<Vec<String>> {
        Ok(self
            .filters()?
            .into_iter()
            .flat_map(|(k, values)| values.into_iter().map(move |v| format!("{k}={v}")))
            .collect())
    }
}

/// Percent-decoding, `+` as a space (a form's query string).
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_in_every_spelling_docker_takes() {
        let q = Query::parse(Some("a=1&b=true&c=True&d=0&e=false&f=&g=no&h=yes"));
        assert!(q.bool("a") && q.bool("b") && q.bool("c") && q.bool("h"));
        assert!(!q.bool("d") && !q.bool("e") && !q.bool("f") && !q.bool("g"));
        assert!(!q.bool("missing"));
    }

    #[test]
    fn filters_in_both_shapes() {
        let q = Query::parse(Some(
            "filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%2C%22status%22%3A%7B%22running%22%3Atrue%7D%7D",
        ));
        let f = q.filters().unwrap();
        assert_eq!(f["label"], vec!["a=b"]);
        assert_eq!(f["status"], vec!["running"]);
        assert!(Query::parse(Some("filters=nope")).filters().is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%2Fb+c%"), "a/b c%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
