//! keel-engine: where images, the runtime and the state meet (DESIGN.md).
//!
//! - [`spec`]: the request to create a container, and the parsers of the
//!   values docker's flags take.
//! - [`oci`]: the OCI `config.json` from an image config and a request,
//!   a pure function.
//! - [`users`]: user and group names resolved in the image's files.

pub mod attach;
pub mod db;
pub mod error;
pub mod logs;
pub mod oci;
pub mod paths;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod users;

pub use error::{Error, Result};
