//! What the registry tests share: Debian's docker-registry on loopback with
//! its storage in the test's temp dir, OCI layouts made offline from
//! busybox-static, skopeo to push them, and a proxy that lies.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_image::digest::Digest;
use keel_testutil::TempRoot;
use keel_testutil::peers::{describe, run};
use serde_json::{Value, json};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[allow(unused_imports)]
pub use keel_testutil::peers::{Registry, free_port};

/// A blob of an OCI layout.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl Blob {
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.size})
    }
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: PathBuf) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).expect("create the layout's blobs dir");
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    pub fn add_blob(&self, data: &[u8], media_type: &str) -> Blob {
        let digest = Digest::of(data);
        fs::write(self.dir.join("blobs/sha256").join(digest.hex()), data)
            .expect("write a layout blob");
        Blob {
            digest,
            size: data.len() as u64,
            media_type: media_type.to_string(),
        }
    }

    /// A config for `architecture` over `layer` (with `diff_id`), and the
    /// manifest; returns (manifest, config).
    pub fn add_image(&self, layer: &Blob, diff_id: &Digest, architecture: &str) -> (Blob, Blob) {
        let config = json!({
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created_by": format!("keel test {architecture}")}]
        });
        let config = self.add_blob(config.to_string().as_bytes(), OCI_CONFIG);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()]
        });
        let manifest = self.add_blob(manifest.to_string().as_bytes(), OCI_MANIFEST);
        (manifest, config)
    }

    /// An index over `(manifest, architecture)` pairs.
    pub fn add_index(&self, manifests: &[(&Blob, &str)]) -> Blob {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(blob, architecture)| {
                let mut entry = blob.descriptor();
                entry["platform"] = json!({"os": "linux", "architecture": architecture});
                entry
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.add_blob(index.to_string().as_bytes(), OCI_INDEX)
    }

    /// Names `blob` (a manifest or index) `tag` in index.json.
    pub fn tag(&mut self, blob: &Blob, tag: &str) {
        let mut entry = blob.descriptor();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(entry);
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        fs::write(self.dir.join("index.json"), index.to_string()).expect("write index.json");
    }
}

/// A gzip layer of busybox-static: bin/busybox, a few applet symlinks and
/// etc/passwd. Returns (compressed bytes, diff id).
pub fn busybox_layer() -> (Vec<u8>, Digest) {
    let busybox = fs::read(keel_testutil::HOST_BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} (is busybox-static installed? ./scripts/setup)",
            keel_testutil::HOST_BUSYBOX
        )
    });
    let mut builder = tar::Builder::new(Vec::new());
    let add_dir = |builder: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, path, std::io::empty())
            .expect("append a dir");
    };
    add_dir(&mut builder, "bin/");
    add_dir(&mut builder, "etc/");
    let mut header = tar::Header::new_ustar();
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, "bin/busybox", &busybox[..])
        .expect("append busybox");
    for applet in ["sh", "ls", "cat", "echo", "true"] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(1_700_000_000);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("append a symlink");
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut header = tar::Header::new_ustar();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    header.set_mtime(1_700_000_000);
    builder
        .append_data(&mut header, "etc/passwd", &passwd[..])
        .expect("append passwd");
    let tar = builder.into_inner().expect("finish the layer tar");
    let diff_id = Digest::of(&tar);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&tar).expect("gzip the layer");
    (gzip.finish().expect("finish gzip"), diff_id)
}

/// `skopeo copy` from a layout tag to the registry; `--all` for indexes.
pub fn skopeo_push(
    temp: &TempRoot,
    layout: &Path,
    tag: &str,
    destination: &str,
    creds: Option<&str>,
) {
    let authfile = temp.path().join("skopeo-auth.json");
    if !authfile.exists() {
        fs::write(&authfile, "{}").expect("write an empty skopeo auth file");
    }
    let mut command = Command::new("skopeo");
    command
        .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
        .args(["--dest-tls-verify=false", "--dest-authfile"])
        .arg(&authfile);
    if let Some(creds) = creds {
        command.args(["--dest-creds", creds]);
    }
    command
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{destination}"))
        .env("HOME", temp.path())
        .env("XDG_RUNTIME_DIR", temp.path());
    let output = run(&mut command);
    assert!(
        output.status.success(),
        "skopeo copy to {destination} failed: {}",
        describe(&output)
    );
}

/// The sha256 of a stored blob, computed again from the file.
pub fn stored_digest(root: &Path, digest: &Digest) -> Digest {
    let path = root.join("content/blobs/sha256").join(digest.hex());
    Digest::of(&fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// A request as the fake servers see it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An answer: status line, extra headers, body.
pub struct Response {
    pub status: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// Reads one request head (no request body: the fakes only serve GET/HEAD).
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<(Request, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..n]);
        // A TLS ClientHello (an HTTPS probe): close, as a plain HTTP server would.
        if head.first() == Some(&0x16) {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers = lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((
        Request {
            method,
            path,
            headers,
        },
        head,
    ))
}

/// A one-request-per-connection HTTP server on 127.0.0.1 answering with
/// `handler`; every request is recorded. Runs on the test's runtime and
/// stops with it.
pub struct FakeServer {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

impl FakeServer {
    pub async fn start<F>(handler: F) -> FakeServer
    where
        F: Fn(&Request) -> Response + Send + Sync + 'static,
    {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a fake server on 127.0.0.1");
        let port = listener.local_addr().expect("local address").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler = std::sync::Arc::new(handler);
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Some((request, _)) = read_head(&mut stream).await else {
                        return;
                    };
                    recorded.lock().unwrap().push(request.clone());
                    let response = handler(&request);
                    let mut out = format!(
                        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        response.status,
                        response.body.len()
                    );
                    for (name, value) in &response.headers {
                        out.push_str(&format!("{name}: {value}\r\n"));
                    }
                    out.push_str("\r\n");
                    let mut bytes = out.into_bytes();
                    if request.method != "HEAD" {
                        bytes.extend_from_slice(&response.body);
                    }
                    let _ = stream.write_all(&bytes).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FakeServer { port, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// A proxy in front of `upstream` that flips one byte in the body of any
/// answer to a request whose path contains `corrupt` (one request per
/// connection: it asks the upstream to close after each answer).
pub async fn lying_proxy(upstream: u16, corrupt: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy on 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let corrupt = corrupt.clone();
            tokio::spawn(async move {
                let Some((request, _)) = read_head(&mut client).await else {
                    return;
                };
                let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
                for (name, value) in &request.headers {
                    if name != "connection" {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                }
                head.push_str("connection: close\r\n\r\n");
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                if server.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut answer = Vec::new();
                let _ = server.read_to_end(&mut answer).await;
                if request.method == "GET"
                    && request.path.contains(&corrupt)
                    && let Some(start) = answer.windows(4).position(|w| w == b"\r\n\r\n")
                {
                    let index = start + 4 + 100;
                    if index < answer.len() {
                        answer[index] ^= 0x55;
                    }
                }
                let _ = client.write_all(&answer).await;
                let _ = client.shutdown().await;
            });
        }
    });
    port
}
