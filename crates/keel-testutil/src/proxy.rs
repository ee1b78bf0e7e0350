//! An HTTP proxy on 127.0.0.1 in front of a test's registry that misbehaves
//! on purpose, the way networks and servers do: it cuts a download short,
//! serves slowly, ignores `Range`, and logs every request, so a test can
//! check what the client asked for (a resumed download's `Range`, say).
//!
//! Requests are forwarded one per connection (`Connection: close` both
//! ways), bodies in both directions as they come. Faults apply to `GET`s
//! whose path contains [`Faults::target`] and may be changed while the
//! proxy runs ([`FaultyProxy::set`]). It stops when dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the proxy does to the responses of matching `GET`s.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A substring of the path (a blob's digest): only these are touched.
    pub target: String,
    /// Closes the connection after this many body bytes, for the next
    /// `cut_times` matching responses.
    pub cut_after: Option<u64>,
    pub cut_times: u32,
    /// At most this many body bytes a second.
    pub bytes_per_second: Option<u64>,
    /// Drops the `Range` header, as a server that cannot resume would.
    pub ignore_range: bool,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The `Range` header the client sent.
    pub range: Option<String>,
    /// Body bytes passed to the client (after any cut).
    pub body_bytes: u64,
    /// When the request came and when its answer ended (None: not yet).
    pub started: Instant,
    pub ended: Option<Instant>,
}

pub struct FaultyProxy {
    pub port: u16,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `upstream` there.
    pub fn start(upstream: u16, faults: Faults) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let port = listener.local_addr().expect("the proxy's address").port();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let faults = Arc::new(Mutex::new(faults));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (faults, seen, stop) = (faults.clone(), seen.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (faults, seen) = (faults.clone(), seen.clone());
                            thread::spawn(move || {
                                let _ = serve(client, upstream, &faults, &seen);
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FaultyProxy {
            port,
            faults,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`, the registry name to use in references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes the faults for requests from now on.
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
    }

    /// Every request so far, in the order they came.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The `GET`s whose path contains `target`.
    pub fn gets_of(&self, target: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path.contains(target))
            .collect()
    }
}

impl FaultyProxy {
    /// The most `GET`s whose path contains `target` that were being
    /// answered at the same moment.
    pub fn most_at_once(&self, target: &str) -> usize {
        let gets = self.gets_of(target);
        gets.iter()
            .map(|a| {
                gets.iter()
                    .filter(|b| b.started <= a.started && b.ended.is_none_or(|end| end > a.started))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Reads up to the end of an HTTP head; returns it and what came after.
fn read_head(stream: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = data.split_off(end + 4);
            return Ok((data, rest));
        }
        if data.len() > 1 << 20 {
            return Err(io::Error::other("HTTP head too large"));
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buffer[..n]);
        // A TLS handshake (a client trying HTTPS first): refused at once,
        // as a plain HTTP server's answer would make the client fall back.
        if data[0] == 0x16 {
            return Err(io::Error::other("TLS on the plain HTTP proxy"));
        }
    }
}

/// The head's lines with `Connection` replaced by `close` (and `Range`
/// dropped when `drop_range`).
fn rewrite_head(head: &[u8], drop_range: bool) -> (String, Option<String>, Vec<u8>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_string();
    let mut range = None;
    let mut out = format!("{first}\r\n");
    for line in lines {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if name == "range" {
            range = line.split_once(':').map(|(_, v)| v.trim().to_string());
            if drop_range {
                continue;
            }
        }
        if name == "connection" || name == "keep-alive" {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    (first, range, out.into_bytes())
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    faults: &Mutex<Faults>,
    seen: &Mutex<Vec<Seen>>,
) -> io::Result<()> {
    let (head, rest) = read_head(&mut client)?;
    let request_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let faults = {
        let mut current = faults.lock().expect("faults lock");
        let applies =
            method == "GET" && !current.target.is_empty() && path.contains(&current.target);
        if applies {
            let snapshot = current.clone();
            let cut = snapshot.cut_after.filter(|_| current.cut_times > 0);
            if cut.is_some() {
                current.cut_times -= 1;
            }
            Some(Faults {
                cut_after: cut,
                ..snapshot
            })
        } else {
            None
        }
    };
    let drop_range = faults.as_ref().is_some_and(|f| f.ignore_range);
    let (_, range, head) = rewrite_head(&head, drop_range);
    let index = {
        let mut seen = seen.lock().expect("seen lock");
        seen.push(Seen {
            method,
            path,
            range,
            body_bytes: 0,
            started: Instant::now(),
            ended: None,
        });
        seen.len() - 1
    };

    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    server.write_all(&head)?;
    server.write_all(&rest)?;
    // The request body, if any, as it comes.
    {
        let mut from = client.try_clone()?;
        let mut to = server.try_clone()?;
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
        });
    }
    let (answer_head, mut body) = read_head(&mut server)?;
    let (_, _, answer_head) = rewrite_head(&answer_head, false);
    client.write_all(&answer_head)?;

    let cut = faults.as_ref().and_then(|f| f.cut_after);
    let rate = faults.as_ref().and_then(|f| f.bytes_per_second);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if body.is_empty() {
            let n = server.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buffer[..n]);
        }
        let mut piece = body.len();
        if let Some(cut) = cut {
            piece = piece.min(cut.saturating_sub(sent) as usize);
        }
        if let Some(rate) = rate {
            piece = piece.min((rate / 20).max(1) as usize);
            // Not ahead of the rate: wait until `sent` bytes are due.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
        if piece == 0 {
            break;
        }
        client.write_all(&body[..piece])?;
        body.drain(..piece);
        sent += piece as u64;
        seen.lock().expect("seen lock")[index].body_bytes = sent;
    }
    seen.lock().expect("seen lock")[index].ended = Some(Instant::now());
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    Ok(())
}
