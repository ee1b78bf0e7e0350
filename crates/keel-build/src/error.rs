//! keel-build's errors: each names what failed and where (file and line of
//! the Dockerfile, the step, the path in the context).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] crate::parser::ParseError),
    /// A step that cannot be done as written (a bad flag value, a COPY
    /// source that is not there, an unknown stage).
    #[error("{file}:{line}: {message}")]
    Step {
        file: String,
        line: usize,
        message: String,
    },
    /// A RUN whose command failed.
    #[error(
        "{file}:{line}: process \"{command}\" did not complete successfully: exit code: {code}"
    )]
    RunFailed {
        file: String,
        line: usize,
        command: String,
        code: i32,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] keel_image::Error),
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// The Dockerfile line a step error is about.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Step { line, .. } | Error::RunFailed { line, .. } => Some(*line),
            _ => None,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn msg(message: impl Into<String>) -> Error {
        Error::Msg(message.into())
    }

    pub fn path(what: &str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::io(format!("{what} {}", path.display()), source)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
