//! The engine's errors: each says what failed and on what (container,
//! volume, image, path), with docker's words where docker has some.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request that cannot be honoured as given (a bad flag value,
    /// conflicting options).
    #[error("{0}")]
    Invalid(String),
    /// `No such container: web`, `No such volume: data`.
    #[error("No such {kind}: {name}")]
    NotFound { kind: &'static str, name: String },
    /// The container could not start: the runtime's words
    /// (`exec: "x": executable file not found in $PATH`).
    #[error("{0}")]
    Start(String),
    /// A name in use, a container in the wrong state for the operation.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Image(#[from] keel_image::Error),
    #[error(transparent)]
    Net(#[from] keel_net::Error),
    #[error("{context}: {source}")]
    Runtime {
        context: String,
        #[source]
        source: keel_runtime::Error,
    },
    #[error("{context}: {source}")]
    Db {
        context: String,
        #[source]
        source: rusqlite::Error,
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

pub use keel_runtime::error::start_exit_code;

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    pub fn msg(message: impl Into<String>) -> Error {
        Error::Msg(message.into())
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn db(context: impl Into<String>, source: rusqlite::Error) -> Error {
        let context = context.into();
        if keel_image::sqlite::is_out_of_space(&source) {
            return Error::msg(keel_image::sqlite::describe(&context, &source));
        }
        Error::Db { context, source }
    }

    pub fn runtime(context: impl Into<String>, source: keel_runtime::Error) -> Error {
        Error::Runtime {
            context: context.into(),
            source,
        }
    }

    pub fn no_such_container(name: &str) -> Error {
        Error::NotFound {
            kind: "container",
            name: name.to_string(),
        }
    }

    pub fn no_such_network(name: &str) -> Error {
        Error::NotFound {
            kind: "network",
            name: name.to_string(),
        }
    }

    pub fn no_such_volume(name: &str) -> Error {
        Error::NotFound {
            kind: "volume",
            name: name.to_string(),
        }
    }
}
