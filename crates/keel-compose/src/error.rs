//! keel compose's errors: where in which file, and what is wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// The YAML itself is broken.
    #[error("{file}:{line}: {message}")]
    Yaml {
        file: String,
        line: u32,
        message: String,
    },
    /// A key or a value of the model is wrong: `path` is the key path
    /// (`services.web.ports[0]`), as docker compose names it.
    #[error("{file}:{line}: {path}: {message}")]
    Invalid {
        file: String,
        line: u32,
        path: String,
        message: String,
    },
    /// No compose file where one was looked for.
    #[error("{0}")]
    NoFile(String),
    /// Anything else about the project (no file found, a cycle, ...).
    #[error("{0}")]
    Project(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] keel_engine::Error),
}

impl Error {
    pub fn project(message: impl Into<String>) -> Error {
        Error::Project(message.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
