//! keel-image: images the way containerd and podman hold them.
//!
//! - [`reference`]: image references normalized exactly as docker does.
//! - [`content`]: the content store, blobs visible only once verified.
//! - [`digest`]: content digests (`sha256:<hex>`), verified while streaming.
//! - [`manifest`]: OCI and Docker manifests, indexes and configs, and
//!   platform selection.
//! - [`metadata`]: images and tags in the state database (SQLite).
//! - [`sqlite`]: how that database is opened (full disks, a lost file).
//! - [`layer`]: layers unpacked safely into snapshot directories, with
//!   whiteouts turned into what overlayfs expects.
//!
//! - [`snapshot`]: one unpacked snapshot per chain id, published whole.
//! - [`store`]: all of it together: commit, `load`, `import`, resolve.
//! - [`export`]: `save`, one archive both docker and OCI loaders take.
//! - [`pack`]: directory trees (a container's layer, its rootfs) as tar.
//!
//! This crate knows layers, not containers (DESIGN.md).

pub mod content;
pub mod digest;
pub mod error;
pub mod export;
pub mod inroot;
pub mod layer;
pub mod manifest;
pub mod metadata;
pub mod pack;
pub mod reference;
pub mod snapshot;
pub mod sqlite;
pub mod store;
pub mod users;

pub use error::{Error, Result};
