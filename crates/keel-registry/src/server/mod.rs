//! `keel registry serve`: an OCI distribution-spec v1.1 registry on
//! filesystem storage.
//!
//! - [`routes`]: the `/v2/` API.
//! - [`storage`]: content-addressed blobs, uploads, repositories.
//! - [`errors`]: the spec's error codes and bodies.
//! - [`auth`]: htpasswd (bcrypt) basic auth, anonymous pulls.
//! - [`tls`]: rustls from PEM files.
//! - [`gc`]: `keel registry gc`, removing blobs no manifest references.
//!
//! The server holds a lock file in the storage (with its pid) so `gc` can
//! tell that it runs; it finishes in-flight requests on SIGTERM/SIGINT.

pub mod auth;
pub mod errors;
pub mod gc;
mod pieces;
pub mod routes;
pub mod storage;
pub mod tls;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The registry's settings as a config file (JSON) holds them; every field
/// is optional and a command-line flag overrides it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to listen on (default `127.0.0.1:5000`).
    pub addr: Option<String>,
    /// The storage directory.
    pub storage: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// An htpasswd file of bcrypt hashes: requests need basic auth.
    pub htpasswd: Option<PathBuf>,
    /// The realm of the basic-auth challenge.
    pub realm: Option<String>,
    /// With htpasswd: pulls need no credentials, pushes do.
    pub anonymous_pull: Option<bool>,
    /// With htpasswd: users who may pull but not push (DENIED).
    #[serde(default)]
    pub pull_only_users: Vec<String>,
    /// Refuse pushes and deletes.
    pub read_only: Option<bool>,
    /// Uploads untouched this long are removed (default 3600).
    pub upload_ttl_secs: Option<u64>,
    /// How often abandoned uploads are looked for (default 300).
    pub upload_purge_interval_secs: Option<u64>,
    /// Requests in flight beyond this get TOOMANYREQUESTS (default 1024,
    /// 0 for no limit).
    pub max_concurrent_requests: Option<usize>,
    /// How long a shutdown waits for requests in flight (default 30).
    pub shutdown_timeout_secs: Option<u64>,
}

impl Config {
    /// Reads a JSON config file; unknown keys are errors, naming the file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read registry config {}", path.display()), e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::msg(format!("registry config {}: {e}", path.display())))
    }
}

/// What the server runs with, every default filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    pub storage: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub htpasswd: Option<PathBuf>,
    pub realm: String,
    pub anonymous_pull: bool,
    pub pull_only_users: Vec<String>,
    pub read_only: bool,
    pub upload_ttl: Duration,
    pub upload_purge_interval: Duration,
    pub max_concurrent_requests: usize,
    pub shutdown_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Settings> {
        let addr_text = config.addr.as_deref().unwrap_or("127.0.0.1:5000");
        let addr = addr_text.parse::<SocketAddr>().map_err(|_| {
            Error::msg(format!(
                "invalid listen address {addr_text:?}: expected IP:PORT, e.g. 127.0.0.1:5000"
            ))
        })?;
        let Some(storage) = config.storage.clone() else {
            return Err(Error::msg(
                "no storage directory: pass --storage DIR (or \"storage\" in the config file)",
            ));
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(Error::msg("TLS needs both --tls-cert and --tls-key"));
            }
        };
        Ok(Settings {
            addr,
            storage,
            tls,
            htpasswd: config.htpasswd.clone(),
            realm: config
                .realm
                .clone()
                .unwrap_or_else(|| "keel-registry".to_string()),
            anonymous_pull: config.anonymous_pull.unwrap_or(false),
            pull_only_users: config.pull_only_users.clone(),
            read_only: config.read_only.unwrap_or(false),
            upload_ttl: Duration::from_secs(config.upload_ttl_secs.unwrap_or(3600)),
            upload_purge_interval: Duration::from_secs(
                config.upload_purge_interval_secs.unwrap_or(300).max(1),
            ),
            max_concurrent_requests: config.max_concurrent_requests.unwrap_or(1024),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs.unwrap_or(30)),
        })
    }
}

/// The storage's lock file: held (flock) by the running server, with its
/// pid inside, so `gc` and a second server can tell.
pub const LOCK_FILE: &str = "registry.lock";

#[derive(Debug)]
pub struct StorageLock {
    _file: File,
}

/// Who holds a storage's lock.
#[derive(Debug)]
pub struct LockHeld {
    pub pid: Option<i32>,
    pub alive: bool,
}

impl StorageLock {
    /// Takes the lock of `storage` (creating the dir) and writes our pid;
    /// `Ok(Err(held))` if another process holds it.
    pub fn acquire(storage: &Path) -> Result<std::result::Result<StorageLock, LockHeld>> {
        fs::create_dir_all(storage)
            .map_err(|e| Error::io(format!("create storage {}", storage.display()), e))?;
        let path = storage.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim().parse::<i32>().ok();
                let alive = pid.is_some_and(process_alive);
                return Ok(Err(LockHeld { pid, alive }));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", path.display()), e));
            }
        }
        let written = file
            .set_len(0)
            .and_then(|_| file.seek(io::SeekFrom::Start(0)))
            .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        written.map_err(|e| Error::io(format!("write {}", path.display()), e))?;
        Ok(Ok(StorageLock { _file: file }))
    }
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Serves until SIGTERM or SIGINT, then finishes the requests in flight.
pub async fn serve(settings: Settings) -> Result<()> {
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight"),
            _ = int.recv() => tracing::info!("SIGINT: finishing requests in flight"),
        }
    };
    serve_until(settings, shutdown).await
}

/// Serves until `shutdown` completes.
pub async fn serve_until(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let lock = match StorageLock::acquire(&settings.storage)? {
        Ok(lock) => lock,
        Err(held) => {
            return Err(Error::msg(format!(
                "storage {} is in use by another keel registry{}",
                settings.storage.display(),
                held.pid
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default()
            )));
        }
    };
    let storage = Arc::new(
        storage::Storage::open(&settings.storage)
            .map_err(|e| Error::io(format!("open storage {}", settings.storage.display()), e))?,
    );
    let auth = match &settings.htpasswd {
        Some(path) => Some(Arc::new(
            auth::Htpasswd::load(
                path,
                &settings.realm,
                settings.anonymous_pull,
                &settings.pull_only_users,
            )
            .map_err(Error::msg)?,
        )),
        None => None,
    };
    let acceptor = match &settings.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key).map_err(Error::msg)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .map_err(|e| Error::io(format!("listen on {}", settings.addr), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("the listening address", e))?;
    let app = Arc::new(routes::App {
        storage: storage.clone(),
        auth: auth.clone(),
        read_only: settings.read_only,
        limiter: (settings.max_concurrent_requests > 0).then(|| {
            Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_requests,
            ))
        }),
    });
    let mut notes = Vec::new();
    if auth.is_some() {
        notes.push(if settings.anonymous_pull {
            "htpasswd auth, anonymous pulls"
        } else {
            "htpasswd auth"
        });
    }
    if settings.read_only {
        notes.push("read-only");
    }
    tracing::info!(
        "keel registry listening on {}://{local} (storage {}{}{})",
        if acceptor.is_some() { "https" } else { "http" },
        settings.storage.display(),
        if notes.is_empty() { "" } else { "; " },
        notes.join(", ")
    );

    let purge = {
        let storage = storage.clone();
        let (ttl, every) = (settings.upload_ttl, settings.upload_purge_interval);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                let storage = storage.clone();
                let _ = tokio::task::spawn_blocking(move || storage.purge_uploads(ttl)).await;
            }
        })
    };

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open_connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let open = Connection::open(&open_connections);
        tokio::spawn(async move {
            let _open = open;
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let app = app.clone();
                logged(app, peer, request)
            });
            let stream: Box<dyn Io> = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => Box::new(stream),
                    Err(e) => {
                        tracing::debug!("TLS handshake with {peer}: {e}");
                        return;
                    }
                },
                None => {
                    if !plain_http(&stream, peer).await {
                        return;
                    }
                    Box::new(stream)
                }
            };
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all requests finished; stopped"),
        () = tokio::time::sleep(settings.shutdown_timeout) => tracing::warn!(
            "requests still in flight after {:?}; stopping anyway",
            settings.shutdown_timeout
        ),
    }
    purge.abort();
    drop(lock);
    Ok(())
}

/// A connection's byte stream, TLS or plain (one code path serves both).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Whether a connection to the plain-HTTP port speaks HTTP. A TLS
/// ClientHello (clients that try HTTPS first, as keel's and docker's do
/// for insecure registries) gets a lingering close: our side shut for
/// writing, its alert still read, so the client sees the end of the
/// stream rather than a reset it may die of (SIGPIPE).
async fn plain_http(stream: &tokio::net::TcpStream, peer: SocketAddr) -> bool {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(Duration::from_secs(60), stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(_)) => return true,
        _ => return false,
    }
    tracing::debug!("{peer}: TLS handshake on the plain-HTTP port; closing");
    // SAFETY: shutdown(2) on a socket we own; it stays open for reading.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR)
    };
    let drain = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.try_read(&mut buffer) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if stream.readable().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    false
}

/// Runs a request and writes its access-log line.
async fn logged(
    app: Arc<routes::App>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> std::result::Result<http::Response<routes::ResponseBody>, std::convert::Infallible> {
    let start = Instant::now();
    let method = request.method().clone();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut response = routes::handle(app, request).await?;
    let user = response
        .extensions_mut()
        .remove::<routes::LoggedUser>()
        .map(|u| u.0)
        .unwrap_or_else(|| "-".to_string());
    let length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        target: "keel_registry::access",
        "{peer} {user} \"{method} {target}\" {} {length} {:.1}ms",
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(response)
}

/// Counts the connections being served; when the last one closes, the heap
/// the transfers used goes back to the system (glibc keeps freed memory
/// otherwise, and a burst of clients would leave the server's RSS high).
struct Connection(Arc<std::sync::atomic::AtomicUsize>);

impl Connection {
    fn open(count: &Arc<std::sync::atomic::AtomicUsize>) -> Connection {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Connection(count.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            // SAFETY: malloc_trim only returns free heap pages to the kernel.
            unsafe { libc::malloc_trim(0) };
            pieces::release_idle();
            // Once more when the blocking threads the load started have
            // ended (they live a second idle: `netio::runtime`) and their
            // caches went back to the heap, if the server is still idle.
            let count = self.0.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        // SAFETY: as above.
                        unsafe { libc::malloc_trim(0) };
                        pieces::release_idle();
                    }
                });
            }
        }
    }
}
