//! Listening and serving: a unix socket (docker's `0660`, root and the
//! `keel` group), a socket handed over by systemd's socket activation, or
//! TCP with TLS where clients must show a certificate the given CA signed
//! (docker's `--tlsverify`). HTTP/1.1 with upgrades, for attach and exec.
//!
//! With an idle time the service exits once no connection has been open
//! for that long (podman's `--time`); 0 never exits.

use std::os::fd::FromRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{Activity, State};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    /// `tcp://ADDR:PORT`: only with [`Tls`].
    Tcp(String),
    /// The sockets systemd passed (`LISTEN_FDS`), the first one.
    Activated,
}

/// The default socket (`unix:///run/keel/docker.sock`).
pub const DEFAULT_SOCKET: &str = "/run/keel/docker.sock";

impl Listen {
    /// `unix:///path`, `tcp://host:port`, or a bare absolute path.
    pub fn parse(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("{text}: a unix socket needs an absolute path"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            if !addr.contains(':') {
                return Err(format!("{text}: give the port (tcp://ADDR:PORT)"));
            }
            return Ok(Listen::Tcp(addr.to_string()));
        }
        if text.starts_with('/') {
            return Ok(Listen::Unix(PathBuf::from(text)));
        }
        Err(format!("{text}: listen on unix:///PATH or tcp://ADDR:PORT"))
    }
}

/// TLS for TCP: the server's certificate and key, and the CA whose
/// certificates clients must show.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub tls: Option<Tls>,
    /// Exit after this long with no connection (None: never).
    pub idle: Option<Duration>,
}

/// Whether systemd passed this process a socket.
pub fn activated() -> bool {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    pid_ok && fds >= 1
}

/// Runs the service until it is idle for `config.idle`, or SIGTERM/SIGINT.
pub fn serve(state: State, config: Config) -> Result<(), String> {
    if matches!(config.listen, Listen::Tcp(_)) && config.tls.is_none() {
        return Err(
            "refusing to listen on TCP without TLS: give --tlscert, --tlskey and \
             --tlscacert (clients must show a certificate that CA signed), or use a unix socket"
                .into(),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(256)
        .enable_all()
        .build()
        .map_err(|e| format!("start the service's runtime: {e}"))?;
    let result = runtime.block_on(run(state, config));
    // A request's blocking work (a log followed, a wait) may never end by
    // itself: the service does not wait for it to exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

enum Listener {
    Unix(tokio::net::UnixListener, Option<PathBuf>),
    Tcp(tokio::net::TcpListener, tokio_rustls::TlsAcceptor),
}

async fn run(state: State, config: Config) -> Result<(), String> {
    let listener = bind(&config).await?;
    let activity = state.activity.clone();
    tokio::spawn(release_when_idle(activity.clone()));
    // The monitors this service starts are its children: reap those that
    // ended (their containers keep no tie to the service).
    tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            keel_engine::engine::reap_monitors();
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("watch SIGTERM: {e}"))?;
    let idle = idle_watch(activity.clone(), config.idle);
    tokio::pin!(idle);
    let result = loop {
        tokio::select! {
            _ = &mut idle => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            accepted = accept(&listener) => match accepted {
                Ok(io) => {
                    let open = activity.hold();
                    let state = state.clone();
                    tokio::spawn(async move {
                        let _open = open;
                        if let Some(io) = io.await {
                            serve_connection(state, io).await;
                        }
                    });
                }
                Err(e) => tracing::warn!("accept: {e}"),
            },
        }
    };
    if let Listener::Unix(_, Some(path)) = &listener {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Once nothing has been open for a second, gives back the pages of
/// keel's code this process read (they stay in the page cache, and come
/// back on the next request): an idle service holds little more than its
/// heap.
async fn release_when_idle(activity: Arc<Activity>) {
    loop {
        let changed = activity.changed.notified();
        if activity.open.load(Ordering::SeqCst) == 0
            && tokio::time::timeout(Duration::from_secs(1), changed)
                .await
                .is_err()
        {
            if activity.open.load(Ordering::SeqCst) == 0 {
                release_code_pages();
            }
            activity.changed.notified().await;
        } else if activity.open.load(Ordering::SeqCst) != 0 {
            activity.changed.notified().await;
        }
    }
}

/// `MADV_DONTNEED` on this executable's code (its `r-xp` mappings only:
/// never written, so dropping them loses nothing; data is left alone).
fn release_code_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if perms != "r-xp" || !line.ends_with(exe.as_ref()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: a read-only, executable, private file mapping of our own
        // binary: its pages are refetched from the file when next touched.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Resolves when nothing has been open for `idle`.
async fn idle_watch(activity: Arc<Activity>, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let changed = activity.changed.notified();
        if activity.open.load(Ordering::SeqCst) == 0 {
            if tokio::time::timeout(idle, changed).await.is_err()
                && activity.open.load(Ordering::SeqCst) == 0
            {
                return;
            }
        } else {
            changed.await;
        }
    }
}

type Io = Box<dyn AsyncIo>;
trait AsyncIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncIo for T {}

/// Accepts a connection; the TLS handshake (if any) is the returned
/// future's, so one slow client does not hold the others.
async fn accept(
    listener: &Listener,
) -> std::io::Result<std::pin::Pin<Box<dyn std::future::Future<Output = Option<Io>> + Send>>> {
    match listener {
        Listener::Unix(l, _) => {
            let (stream, _) = l.accept().await?;
            Ok(Box::pin(async move { Some(Box::new(stream) as Io) }))
        }
        Listener::Tcp(l, acceptor) => {
            let (stream, peer) = l.accept().await?;
            let acceptor = acceptor.clone();
            Ok(Box::pin(async move {
                match acceptor.accept(stream).await {
                    Ok(tls) => Some(Box::new(tls) as Io),
                    Err(e) => {
                        tracing::info!("TLS handshake with {peer}: {e}");
                        None
                    }
                }
            }))
        }
    }
}

async fn serve_connection(state: State, io: Io) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::routes::handle(state, request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        tracing::debug!("connection: {e}");
    }
}

async fn bind(config: &Config) -> Result<Listener, String> {
    match &config.listen {
        Listen::Activated => {
            // SAFETY: systemd passed fd 3 to us (LISTEN_PID is ours).
            let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
            std.set_nonblocking(true)
                .map_err(|e| format!("the activated socket: {e}"))?;
            let l = tokio::net::UnixListener::from_std(std)
                .map_err(|e| format!("the activated socket: {e}"))?;
            Ok(Listener::Unix(l, None))
        }
        Listen::Unix(path) => bind_unix(path).map(|l| Listener::Unix(l, Some(path.clone()))),
        Listen::Tcp(addr) => {
            let tls = config.tls.as_ref().expect("checked in serve");
            let acceptor = acceptor(tls)?;
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen on tcp://{addr}: {e}"))?;
            Ok(Listener::Tcp(l, acceptor))
        }
    }
}

/// Binds the socket: a stale one (no service answering) is replaced; one
/// a live service holds is an error. `0660`, group `keel` where it exists.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{}: another service is listening there",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("remove stale {}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    if let Some(gid) = group_id("keel") {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| "a socket path holds a NUL byte".to_string())?;
        // SAFETY: chown of a path we just made; -1 keeps the owner.
        unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) };
    }
    Ok(listener)
}

/// The id of a group in `/etc/group`.
fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// rustls with the server's chain and key, requiring a client certificate
/// the CA signed.
fn acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, String> {
    let read_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("read {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("parse {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM CERTIFICATE in it", path.display()));
        }
        Ok(certs)
    };
    let certs = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("read {}: {e}", tls.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&tls.ca)? {
        roots
            .add(ca)
            .map_err(|e| format!("{}: {e}", tls.ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client verification with {}: {e}", tls.ca.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            Listen::parse("unix:///run/keel/docker.sock").unwrap(),
            Listen::Unix("/run/keel/docker.sock".into())
        );
        assert_eq!(
            Listen::parse("tcp://127.0.0.1:2376").unwrap(),
            Listen::Tcp("127.0.0.1:2376".into())
        );
        assert!(Listen::parse("unix://relative").is_err());
        assert!(Listen::parse("tcp://nohost").is_err());
        assert!(Listen::parse("http://x:1").is_err());
    }
}
