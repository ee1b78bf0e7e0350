//! The image crate's errors: each says what failed and on what.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference that docker would refuse, with docker's text.
    #[error("{0}")]
    InvalidReference(String),
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A layer entry that would write outside the snapshot, or is malformed.
    #[error("layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("{0}")]
    Msg(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
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
}
