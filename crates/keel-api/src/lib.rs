//! keel-api: the Docker Engine API on a socket (`keel system service`), so
//! that docker's CLI, docker-py, docker-compose and the other SDKs drive
//! keel's engine.
//!
//! The service holds no container: each request opens the engine as the
//! CLI does (the state database, the monitors' sockets), and a container
//! keeps running when the service exits. It can exit when idle (`--time`).
//!
//! - [`server`]: listening (unix socket, or TCP with TLS and client
//!   certificates), the idle timer, one task per connection.
//! - [`http`]: bodies, docker's error shape and status codes, query values.
//! - [`routes`]: the API's paths and versions, to the handlers in
//!   [`system`], [`containers`], [`images`] and [`objects`] (networks and
//!   volumes).
//! - [`build`]: `/build`, `keel build` of the posted context as the
//!   service's child.
//! - [`create`]: docker's create body (`Config`, `HostConfig`,
//!   `NetworkingConfig`) as keel's [`ContainerSpec`](keel_engine::spec::ContainerSpec).
//! - [`streams`]: attach and wait, docker's multiplexed framing; [`exec`]:
//!   `keel exec` as a child of the service, over a hijacked connection.

pub mod build;
pub mod children;
pub mod containers;
pub mod create;
pub mod exec;
pub mod http;
pub mod images;
pub mod objects;
pub mod routes;
pub mod server;
pub mod streams;
pub mod system;

use std::path::PathBuf;
use std::sync::Arc;

use keel_engine::paths::Layout;
use keel_engine::{Engine, Options};

/// The API version keel speaks, and the oldest it accepts.
pub const API_VERSION: &str = "1.47";
pub const MIN_API_VERSION: &str = "1.24";

/// Where keel keeps things and how it runs containers: what every request
/// opens the engine with.
#[derive(Debug, Clone)]
pub struct State {
    pub root: PathBuf,
    pub runroot: PathBuf,
    pub options: Options,
    /// Containers started by this service, waiting for an attach or a wait
    /// that came before the start (docker's `run`: attach, wait, start).
    pub pending: Arc<streams::Pending>,
    /// The execs made through this service.
    pub execs: Arc<exec::Execs>,
    /// Connections and hijacked streams open (the idle timer waits for
    /// none).
    pub activity: Arc<Activity>,
}

/// Counts what is open (connections, hijacked streams); notifies when the
/// count changes.
#[derive(Debug, Default)]
pub struct Activity {
    pub(crate) open: std::sync::atomic::AtomicUsize,
    pub(crate) changed: tokio::sync::Notify,
}

impl Activity {
    /// Counts one more thing open until the guard is dropped.
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
        Hold(self.clone())
    }
}

/// One open connection or stream.
#[derive(Debug)]
pub struct Hold(Arc<Activity>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl State {
    pub fn new(root: PathBuf, runroot: PathBuf, options: Options) -> State {
        State {
            root,
            runroot,
            options,
            pending: Arc::default(),
            execs: Arc::default(),
            activity: Arc::default(),
        }
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.root, &self.runroot)
    }

    pub fn engine(&self) -> keel_engine::Result<Engine> {
        Engine::open(self.layout(), self.options.clone())
    }

    pub fn images(&self) -> keel_engine::Result<keel_image::store::ImageStore> {
        Ok(keel_image::store::ImageStore::open(&self.root)?)
    }
}
