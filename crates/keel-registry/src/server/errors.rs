//! The distribution spec's error answers: a code, the HTTP status that goes
//! with it (as distribution's registry sends them), and the JSON body
//! `{"errors":[{"code":..,"message":..,"detail":..}]}` clients parse.

use std::fmt;

use serde_json::{Value, json};

/// The spec's error codes (plus `RANGE`-style 416 answers, which are
/// `BLOB_UPLOAD_INVALID` with another status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// distribution's code for a bad `n` in tags/list and `_catalog`.
    PaginationNumberInvalid,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
        }
    }

    /// The status distribution's registry answers with for this code.
    pub fn status(self) -> u16 {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => 404,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid
            | Code::PaginationNumberInvalid => 400,
            Code::Unauthorized => 401,
            Code::Denied => 403,
            Code::Unsupported => 405,
            Code::TooManyRequests => 429,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error answer: what the client gets, and what the access log shows.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub status: u16,
    pub message: String,
    pub detail: Option<Value>,
    /// Headers the answer carries besides the error (`Range` of an
    /// upload, `WWW-Authenticate`, `Allow`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            status: code.status(),
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    /// The same code with another status (416 for an out-of-order chunk,
    /// 413 for a manifest over the size limit).
    pub fn with_status(mut self, status: u16) -> ApiError {
        self.status = status;
        self
    }

    pub fn with_detail(mut self, detail: Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    /// A failure of the server itself (disk, I/O): a 500 with the reason;
    /// the spec has no code for it, distribution sends `UNKNOWN`.
    pub fn internal(context: impl fmt::Display, error: impl fmt::Display) -> ApiError {
        ApiError {
            code: Code::Unsupported,
            status: 500,
            message: format!("{context}: {error}"),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn body(&self) -> String {
        let code = if self.status == 500 {
            "UNKNOWN"
        } else {
            self.code.as_str()
        };
        let mut error = json!({ "code": code, "message": self.message });
        if let Some(detail) = &self.detail {
            error["detail"] = detail.clone();
        }
        json!({ "errors": [error] }).to_string()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_distribution_statuses() {
        assert_eq!(Code::BlobUnknown.status(), 404);
        assert_eq!(Code::ManifestBlobUnknown.status(), 400);
        assert_eq!(Code::Unauthorized.status(), 401);
        assert_eq!(Code::Denied.status(), 403);
        assert_eq!(Code::Unsupported.status(), 405);
        assert_eq!(Code::TooManyRequests.status(), 429);
        let error = ApiError::new(Code::BlobUploadInvalid, "chunk out of order").with_status(416);
        let body: Value = serde_json::from_str(&error.body()).unwrap();
        assert_eq!(body["errors"][0]["code"], "BLOB_UPLOAD_INVALID");
        assert_eq!(body["errors"][0]["message"], "chunk out of order");
        assert_eq!(error.status, 416);
        let internal = ApiError::internal("write", "disk full");
        assert!(internal.body().contains("UNKNOWN"));
    }
}
