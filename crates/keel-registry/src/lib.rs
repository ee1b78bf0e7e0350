//! keel-registry: the client half of the distribution API v2 (what
//! `docker pull` and `docker push` speak), and pulls into keel-image's
//! content store.
//!
//! - [`auth`]: `WWW-Authenticate` challenges, token responses, docker's
//!   `config.json` credentials (pure parsing).
//! - [`client`]: [`Client`], the HTTP side: auth flow, insecure registries,
//!   mirrors, manifests, blobs, uploads, tags.
//! - [`pull`]: [`pull::pull`], a manifest (or an index → the platform's
//!   manifest), its config and layers into the content store, in parallel,
//!   verified, with progress events.
//! - [`push`]: [`push::push`], an image from the content store to a
//!   registry: blobs it lacks (mounted or uploaded, in parallel), then the
//!   manifest.
//! - [`server`]: the server half, `keel registry serve` (distribution spec
//!   v1.1 on filesystem storage) and `keel registry gc`.

pub mod auth;
pub mod client;
pub mod error;
pub mod pull;
pub mod push;
pub mod server;

pub use client::{Client, ClientOptions};
pub use error::{Error, Result};
pub use pull::{Platform, PullOptions, PullResult, Pulled, pull, pull_image, pull_with};
pub use push::{PushEvent, PushOptions, PushState, push};
