//! keel-engine: where images, the runtime and the state meet (DESIGN.md).
//!
//! - [`spec`]: the request to create a container, and the parsers of the
//!   values docker's flags take; [`options`]: what docker's create options
//!   mean, for the CLI and the API alike.
//! - [`oci`]: the OCI `config.json` from an image config and a request,
//!   a pure function; [`seccomp`]: the default profile; [`users`]: user and
//!   group names resolved in the image's files.
//! - [`engine`]: the operations (create, start, stop, kill, rm, ...).
//! - [`monitor`]: the process that holds a running container.
//! - [`db`]: containers and volumes in the state database; [`paths`]: the
//!   files on disk; [`rootfs`]: the overlay root filesystem; [`logs`]: the
//!   json-file logs; [`attach`]: the monitor's socket protocol.

pub mod attach;
pub mod copy;
pub mod db;
pub mod engine;
pub mod error;
pub mod events;
pub mod fault;
pub mod files;
pub mod filter;
pub mod health;
pub mod images;
pub mod logs;
pub mod monitor;
pub mod names;
pub mod network;
pub mod oci;
pub mod options;
pub mod paths;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod users;
pub mod views;
pub mod volumes;

pub use engine::{Engine, Options};
pub use error::{Error, Result};
