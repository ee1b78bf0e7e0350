use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/kvm is missing or cannot be opened.
    #[error("{0}")]
    NoKvm(String),
    /// What was asked for cannot be given (vCPUs, memory, a kernel that is not one).
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {}: {source}", path.display())]
    Path {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A KVM ioctl failed.
    #[error("{what}: {source}")]
    Kvm {
        what: String,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Msg(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    pub(crate) fn kvm(what: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        let what = what.into();
        move |source| Error::Kvm { what, source }
    }

    pub(crate) fn path(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Path { what, path, source }
    }
}
