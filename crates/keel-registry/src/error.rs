//! The registry crate's errors: each says what failed, on which registry,
//! repository or digest, and what the registry said.

use std::fmt;
use std::io;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with an error status.
    #[error("{context}: {status}{}", describe_errors(.errors))]
    Registry {
        context: String,
        /// The HTTP status, e.g. `404 Not Found`.
        status: Status,
        /// The distribution-spec error list, when the body had one.
        errors: Vec<RegistryError>,
    },
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("{context}: {source}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// From the content store or a digest check.
    #[error("{context}: {source}")]
    Image {
        context: String,
        #[source]
        source: keel_image::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(message: impl Into<String>) -> Error {
        Error::Msg(message.into())
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn http(context: impl Into<String>, source: reqwest::Error) -> Error {
        Error::Http {
            context: context.into(),
            source,
        }
    }

    pub fn image(context: impl Into<String>, source: keel_image::Error) -> Error {
        Error::Image {
            context: context.into(),
            source,
        }
    }

    /// The HTTP status code, for a registry error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { status, .. } => Some(status.0),
            _ => None,
        }
    }

    /// The first distribution-spec error code (`MANIFEST_UNKNOWN`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Registry { errors, .. } => errors.first().map(|e| e.code.as_str()),
            _ => None,
        }
    }

    /// True for "not found" answers (404, or a `*_UNKNOWN` code).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) || self.code().is_some_and(|c| c.ends_with("_UNKNOWN"))
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }
}

/// An HTTP status shown as `404 Not Found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reqwest::StatusCode::from_u16(self.0)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            Some(reason) => write!(f, "{} {reason}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// One entry of a registry's `{"errors":[{"code":..,"message":..}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegistryError {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// The error list of a registry's answer body, if it has one.
pub fn parse_registry_errors(body: &[u8]) -> Vec<RegistryError> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        errors: Vec<RegistryError>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors)
        .unwrap_or_default()
}

fn describe_errors(errors: &[RegistryError]) -> String {
    let mut out = String::new();
    for error in errors {
        out.push_str(if out.is_empty() { ": " } else { "; " });
        out.push_str(&error.code);
        if !error.message.is_empty() {
            out.push_str(": ");
            out.push_str(&error.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_registry_error_list() {
        let errors = parse_registry_errors(
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"x","Action":"pull"}]}]}"#,
        );
        let error = Error::Registry {
            context: "get manifest 127.0.0.1:5000/x:latest".into(),
            status: Status(401),
            errors,
        };
        assert_eq!(
            error.to_string(),
            "get manifest 127.0.0.1:5000/x:latest: 401 Unauthorized: UNAUTHORIZED: authentication required"
        );
        assert!(error.is_unauthorized());
        assert_eq!(error.code(), Some("UNAUTHORIZED"));
        let error = Error::Registry {
            context: "c".into(),
            status: Status(404),
            errors: parse_registry_errors(b"not json"),
        };
        assert_eq!(error.to_string(), "c: 404 Not Found");
        assert!(error.is_not_found());
        let two = parse_registry_errors(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"},{"code":"X"}]}"#,
        );
        assert_eq!(
            describe_errors(&two),
            ": MANIFEST_UNKNOWN: manifest unknown; X"
        );
    }
}
