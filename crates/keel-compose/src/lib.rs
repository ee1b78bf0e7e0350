//! keel compose: multi-container applications from compose files, as
//! docker compose v2 runs them, on keel's engine directly (no daemon).
//!
//! - [`load`] reads the files: discovery, `.env`, interpolation
//!   ([`interpolate`]), `include`, `extends`, `-f` merging, profiles, the
//!   project name; [`yaml`] keeps every node's file and line so that
//!   [`read`] can name them in errors; [`model`] is the typed result (what
//!   `keel compose config` prints).
//! - [`spec`] turns a service into keel's container request, with docker
//!   compose's names and labels (so either tool can take a project over).
//! - [`apply`] converges keel's state on the model (`up`, `down`, `start`,
//!   `stop`, ...), in the order [`order`] gives.

pub mod apply;
pub mod error;
pub mod interpolate;
pub mod load;
pub mod model;
pub mod order;
pub mod read;
pub mod spec;
pub mod yaml;

pub use error::{Error, Result};
