//! `keel registry serve` driven by real clients on 127.0.0.1: skopeo and
//! podman (Debian's), keel's own push and pull, and raw HTTP for every
//! error code, chunked uploads, ranges, pagination, referrers, auth, TLS,
//! gc, read-only mode and a graceful SIGTERM. Every server is a child of
//! the test, stopped by pid when its guard drops; everything lives in a
//! TempRoot.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_testutil::peers::{Daemon, Podman, busybox_image_archive, free_port};
use keel_testutil::{TempRoot, require_root};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

// ---------------------------------------------------------------------------
// The server

struct Server {
    port: u16,
    storage: PathBuf,
    daemon: Daemon,
}

impl Server {
    /// `keel registry serve --addr 127.0.0.1:<free> --storage <dir>/storage args...`.
    fn start(temp: &TempRoot, name: &str, args: &[&str]) -> Server {
        Server::start_with(temp, name, args, None)
    }

    fn start_with(temp: &TempRoot, name: &str, args: &[&str], storage: Option<&Path>) -> Server {
        let dir = temp.subdir(name);
        let storage = storage
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("storage"));
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["registry", "serve", "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--storage")
            .arg(&storage)
            .args(args);
        let log = dir.join("registry.log");
        let mut daemon = Daemon::spawn("keel registry serve", command, log, dir);
        daemon.wait_until("listening", Duration::from_secs(20), || {
            TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
        });
        Server {
            port,
            storage,
            daemon,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        http(self.port, method, path, headers, body)
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling the server this test started, by its pid.
        unsafe { libc::kill(self.daemon.pid() as i32, signal) };
    }

    /// Waits for the server to exit on its own (after SIGTERM): a zombie
    /// (the guard reaps it) or gone.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let stat = format!("/proc/{}/stat", self.daemon.pid());
        while Instant::now() < deadline {
            let exited = match std::fs::read_to_string(&stat) {
                Ok(text) => text
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('Z')),
                Err(_) => true,
            };
            if exited {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.log()).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 (Connection: close, read to the end)

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first error code of the body.
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn request_head(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    length: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let declares = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    if let (Some(length), false) = (length, declares) {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    head.push_str("\r\n");
    head
}

fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the registry");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = request_head(method, path, headers, Some(body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (and close) before it reads the whole body.
    let _ = stream.write_all(body);
    read_response(&mut stream, method == "HEAD")
}

fn read_response(stream: &mut TcpStream, head_only: bool) -> Response {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head_only {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Pushes a blob monolithically; returns its digest.
fn push_blob(server: &Server, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let out = server.http(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(out.status, 201, "push blob: {}", out.text());
    assert_eq!(out.header("Docker-Content-Digest"), Some(digest.as_str()));
    digest
}

/// Pushes an OCI image manifest of a config and one layer; returns
/// (manifest digest, manifest bytes).
fn push_image(server: &Server, repo: &str, tag: &str, seed: &str) -> (String, Vec<u8>) {
    let config = json!({"architecture": "amd64", "os": "linux", "seed": seed}).to_string();
    let layer = format!("layer of {seed}").into_bytes();
    let config_digest = push_blob(server, repo, config.as_bytes());
    let layer_digest = push_blob(server, repo, &layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let out = server.http(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(out.status, 201, "put manifest: {}", out.text());
    let digest = sha256(&manifest);
    assert_eq!(out.header("Docker-Content-Digest"), Some(digest.as_str()));
    (digest, manifest)
}

fn run(command: &mut Command) -> Output {
    keel_testutil::output_via_files(command.stdin(Stdio::null()), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} exited {:?}:\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo(args: &[&str]) -> String {
    ok(Command::new("skopeo").args(args))
}

fn keel(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.env("KEEL_ROOT", root).args(args);
    command
}

fn blob_files(storage: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let sha = storage.join("blobs/sha256");
    for prefix in std::fs::read_dir(&sha).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(format!("sha256:{}", blob.file_name().to_string_lossy()));
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------
// Real clients

#[test]
fn skopeo_pushes_pulls_lists_deletes_and_copies_between_keel_registries() {
    require_root();
    let temp = TempRoot::new();
    let one = Server::start(&temp, "one", &[]);
    let two = Server::start(&temp, "two", &[]);
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let source = format!("oci-archive:{}", archive.display());

    let pushed = format!("docker://{}/keel/busybox:latest", one.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &source,
        &pushed,
    ]);
    // Docker schema2 too, compressed by skopeo on the way.
    let docker = format!("docker://{}/keel/busybox:v2s2", one.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--format",
        "v2s2",
        "--dest-compress",
        "--dest-tls-verify=false",
        &source,
        &docker,
    ]);
    let raw: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &docker,
    ]))
    .unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{raw}"
    );

    let inspected: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &pushed])).unwrap();
    let layers = inspected["Layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), 1, "{inspected}");

    // Pulled back into a directory: the same blobs, verified by skopeo.
    let pulled = temp.path().join("pulled");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &pushed,
        &format!("dir:{}", pulled.display()),
    ]);
    let layer_hex = layers[0].as_str().unwrap().trim_start_matches("sha256:");
    assert!(pulled.join(layer_hex).is_file());

    let tags: Value = serde_json::from_str(&skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/keel/busybox", one.host()),
    ]))
    .unwrap();
    assert_eq!(tags["Tags"], json!(["latest", "v2s2"]), "{tags}");

    // From one keel registry to another, then the copy read back.
    let copied = format!("docker://{}/mirror/busybox:1", two.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &pushed,
        &copied,
    ]);
    let again: Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &copied])).unwrap();
    assert_eq!(again["Digest"], inspected["Digest"], "{again}");

    skopeo(&["delete", "--tls-verify=false", &pushed]);
    let gone = run(Command::new("skopeo").args(["inspect", "--tls-verify=false", &pushed]));
    assert!(!gone.status.success(), "deleted, still there");
    // The catalog lists both repositories of `one`'s storage that have manifests.
    let catalog = one.http("GET", "/v2/_catalog", &[], b"");
    assert_eq!(catalog.json()["repositories"], json!(["keel/busybox"]));
    assert!(
        one.log()
            .contains("\"PUT /v2/keel/busybox/manifests/latest\" 201"),
        "{}",
        one.log()
    );
}

#[test]
fn podman_pushes_and_pulls() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let podman = Podman::new(&temp.subdir("podman"), Path::new("/usr/sbin/runc"));
    podman.podman_ok(["load", "-i", archive.to_str().unwrap()]);
    let name = format!("{}/podman/busybox:1", server.host());
    podman.podman_ok(["tag", "keel-test/busybox:latest", &name]);
    podman.podman_ok(["push", "--tls-verify=false", &name]);
    let id = podman.podman_ok(["image", "inspect", "--format", "{{.Id}}", &name]);
    podman.podman_ok(["rmi", "-f", &name, "keel-test/busybox:latest"]);
    podman.podman_ok(["pull", "--tls-verify=false", &name]);
    let pulled = podman.podman_ok(["image", "inspect", "--format", "{{.Id}}", &name]);
    assert_eq!(pulled, id);
    let tags = server.http("GET", "/v2/podman/busybox/tags/list", &[], b"");
    assert_eq!(tags.json()["tags"], json!(["1"]));
}

#[test]
fn keel_pushes_and_pulls() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let root = temp.subdir("keel-root");
    ok(&mut keel(&root, &["load", "-i", archive.to_str().unwrap()]));
    let name = format!("{}/keel/busybox:1", server.host());
    ok(&mut keel(&root, &["tag", "keel-test/busybox", &name]));
    let out = ok(&mut keel(&root, &["push", &name]));
    assert!(out.contains(": Pushed"), "{out}");
    // Again: the registry says it has the layer.
    let out = ok(&mut keel(&root, &["push", &name]));
    assert!(out.contains("Layer already exists"), "{out}");
    // Another repository: the layer is mounted.
    let other = format!("{}/keel/other:2", server.host());
    ok(&mut keel(&root, &["tag", "keel-test/busybox", &other]));
    let out = ok(&mut keel(&root, &["push", &other]));
    assert!(out.contains("Mounted from keel/busybox"), "{out}");

    let fresh = temp.subdir("keel-fresh");
    ok(&mut keel(&fresh, &["pull", "-q", &name]));
    let id = |root: &Path| {
        let text = ok(&mut keel(root, &["image", "inspect", &name]));
        let value: Value = serde_json::from_str(&text).unwrap();
        value[0]["Id"].as_str().unwrap().to_string()
    };
    assert_eq!(id(&fresh), id(&root));
}

// ---------------------------------------------------------------------------
// Raw HTTP

#[test]
fn the_api_answers_with_the_spec_error_codes() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let base = server.http("GET", "/v2/", &[], b"");
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    let absent = format!("sha256:{}", "0".repeat(64));

    // NAME_INVALID, path tricks included; nothing is made outside the storage.
    for name in ["UPPER", "a/../../b", "..", "a//b", "-x", "a/_layers"] {
        let out = server.http("GET", &format!("/v2/{name}/tags/list"), &[], b"");
        assert_eq!(
            (out.status, out.code().as_str()),
            (400, "NAME_INVALID"),
            "{name}: {}",
            out.text()
        );
        let out = server.http("POST", &format!("/v2/{name}/blobs/uploads/"), &[], b"");
        assert_eq!(out.status, 400, "{name}");
    }
    assert!(!temp.path().join("registry/b").exists());
    // NAME_UNKNOWN
    let out = server.http("GET", "/v2/nobody/tags/list", &[], b"");
    assert_eq!((out.status, out.code().as_str()), (404, "NAME_UNKNOWN"));
    // BLOB_UNKNOWN, with HEAD too (no body)
    let out = server.http("GET", &format!("/v2/nobody/blobs/{absent}"), &[], b"");
    assert_eq!((out.status, out.code().as_str()), (404, "BLOB_UNKNOWN"));
    let out = server.http("HEAD", &format!("/v2/nobody/blobs/{absent}"), &[], b"");
    assert_eq!(out.status, 404);
    // DIGEST_INVALID: wrong algorithm, wrong length, upper case.
    for digest in [
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "sha256:abc",
        &absent.to_uppercase(),
    ] {
        let out = server.http("GET", &format!("/v2/x/blobs/{digest}"), &[], b"");
        assert_eq!(
            (out.status, out.code().as_str()),
            (400, "DIGEST_INVALID"),
            "{digest}"
        );
    }
    // A digest that lies: DIGEST_INVALID, nothing stored.
    let out = server.http(
        "POST",
        &format!("/v2/lies/blobs/uploads/?digest={absent}"),
        &[],
        b"not the zeros",
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (400, "DIGEST_INVALID"),
        "{}",
        out.text()
    );
    assert!(blob_files(&server.storage).is_empty());
    assert_eq!(
        std::fs::read_dir(server.storage.join("uploads"))
            .unwrap()
            .count(),
        0
    );
    // sha512 is parsed but not stored: DIGEST_INVALID.
    let sha512 = format!("sha512:{}", "a".repeat(128));
    let out = server.http(
        "POST",
        &format!("/v2/lies/blobs/uploads/?digest={sha512}"),
        &[],
        b"x",
    );
    assert_eq!(out.code(), "DIGEST_INVALID");

    // BLOB_UPLOAD_UNKNOWN
    let out = server.http(
        "GET",
        "/v2/x/blobs/uploads/00000000-0000-4000-8000-000000000000",
        &[],
        b"",
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    let out = server.http("PATCH", "/v2/x/blobs/uploads/..%2F..%2Fetc", &[], b"x");
    assert_eq!(out.code(), "BLOB_UPLOAD_UNKNOWN");
    // An upload of one repository is unknown to another.
    let start = server.http("POST", "/v2/mine/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    let location = start.header("Location").unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    let out = server.http("GET", &format!("/v2/yours/blobs/uploads/{id}"), &[], b"");
    assert_eq!(out.code(), "BLOB_UPLOAD_UNKNOWN");
    // PUT without a digest: DIGEST_INVALID.
    let out = server.http("PUT", &location, &[], b"");
    assert_eq!(out.code(), "DIGEST_INVALID");
    // A body larger than declared (Content-Range says 4 bytes, 8 come).
    let out = server.http(
        "PATCH",
        &location,
        &[("Content-Range", "0-3"), ("Transfer-Encoding", "chunked")],
        b"8\r\n12345678\r\n0\r\n\r\n",
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (400, "SIZE_INVALID"),
        "{}",
        out.text()
    );
    // ... and with Content-Length disagreeing with Content-Range.
    let out = server.http("PATCH", &location, &[("Content-Range", "0-3")], b"12345678");
    assert_eq!(out.code(), "SIZE_INVALID");
    let status = server.http("GET", &location, &[], b"");
    assert_eq!((status.status, status.header("Range")), (204, Some("0-0")));
    // DELETE cancels; the upload is gone.
    assert_eq!(server.http("DELETE", &location, &[], b"").status, 204);
    assert_eq!(
        server.http("GET", &location, &[], b"").code(),
        "BLOB_UPLOAD_UNKNOWN"
    );

    // Manifests: MANIFEST_UNKNOWN, MANIFEST_INVALID, MANIFEST_BLOB_UNKNOWN.
    let (digest, manifest) = push_image(&server, "img", "v1", "one");
    let out = server.http("GET", "/v2/img/manifests/nope", &[], b"");
    assert_eq!((out.status, out.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let out = server.http("GET", &format!("/v2/img/manifests/{absent}"), &[], b"");
    assert_eq!(out.code(), "MANIFEST_UNKNOWN");
    let out = server.http(
        "PUT",
        "/v2/img/manifests/bad",
        &[("Content-Type", OCI_MANIFEST)],
        b"{not json",
    );
    assert_eq!((out.status, out.code().as_str()), (400, "MANIFEST_INVALID"));
    let out = server.http(
        "PUT",
        "/v2/img/manifests/..bad",
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(out.status, 400);
    let missing = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": absent, "size": 2},
        "layers": [],
    })
    .to_string();
    let out = server.http(
        "PUT",
        "/v2/img/manifests/missing",
        &[("Content-Type", OCI_MANIFEST)],
        missing.as_bytes(),
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN"),
        "{}",
        out.text()
    );
    // The blobs of one repository are not another's (no mount without asking).
    let out = server.http(
        "PUT",
        "/v2/other/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(out.code(), "MANIFEST_BLOB_UNKNOWN");
    // A Content-Type that contradicts the mediaType.
    let out = server.http(
        "PUT",
        "/v2/img/manifests/v2",
        &[("Content-Type", OCI_INDEX)],
        &manifest,
    );
    assert_eq!(out.code(), "MANIFEST_INVALID");
    // PUT by a digest that is not the body's.
    let out = server.http(
        "PUT",
        &format!("/v2/img/manifests/{absent}"),
        &[("Content-Type", OCI_MANIFEST)],
        &manifest,
    );
    assert_eq!(out.code(), "DIGEST_INVALID");
    // An index whose manifest is absent.
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": absent, "size": 10}],
    })
    .to_string();
    let out = server.http(
        "PUT",
        "/v2/img/manifests/list",
        &[("Content-Type", OCI_INDEX)],
        index.as_bytes(),
    );
    assert_eq!(out.code(), "MANIFEST_BLOB_UNKNOWN");
    // ... and with it present.
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    })
    .to_string();
    let out = server.http(
        "PUT",
        "/v2/img/manifests/list",
        &[("Content-Type", OCI_INDEX)],
        index.as_bytes(),
    );
    assert_eq!(out.status, 201, "{}", out.text());
    // Over 4 MiB: SIZE_INVALID, 413.
    // Refused on its Content-Length, before the body is sent.
    let declared = (4 * 1024 * 1024 + 1).to_string();
    let headers = [
        ("Content-Type", OCI_MANIFEST),
        ("Content-Length", declared.as_str()),
        ("Expect", "100-continue"),
    ];
    let out = server.http("PUT", "/v2/img/manifests/huge", &headers, b"");
    assert_eq!((out.status, out.code().as_str()), (413, "SIZE_INVALID"));
    // ... and a chunked one as it goes over.
    let mut chunked = Vec::new();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunked.extend_from_slice(&vec![b' '; 1024 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let out = server.http(
        "PUT",
        "/v2/img/manifests/huge",
        &[
            ("Content-Type", OCI_MANIFEST),
            ("Transfer-Encoding", "chunked"),
        ],
        &chunked,
    );
    assert_eq!((out.status, out.code().as_str()), (413, "SIZE_INVALID"));
    // Docker schema1: refused.
    let schema1 = br#"{"schemaVersion":1,"name":"img","tag":"old","fsLayers":[]}"#;
    let out = server.http(
        "PUT",
        "/v2/img/manifests/old",
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )],
        schema1,
    );
    assert_eq!(out.code(), "MANIFEST_INVALID");

    // Content negotiation: GET with the type accepted, refused without it.
    let out = server.http(
        "GET",
        "/v2/img/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(out.header("Docker-Content-Digest"), Some(digest.as_str()));
    assert_eq!(out.body, manifest);
    let out = server.http(
        "GET",
        "/v2/img/manifests/v1",
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        b"",
    );
    assert_eq!(out.code(), "MANIFEST_UNKNOWN");
    let out = server.http("HEAD", &format!("/v2/img/manifests/{digest}"), &[], b"");
    assert_eq!(out.status, 200);
    assert_eq!(
        out.header("Content-Length"),
        Some(manifest.len().to_string().as_str())
    );
    assert!(out.body.is_empty());

    // UNSUPPORTED: a method an endpoint does not take.
    let out = server.http("POST", "/v2/img/manifests/v1", &[], b"");
    assert_eq!((out.status, out.code().as_str()), (405, "UNSUPPORTED"));
    // PAGINATION_NUMBER_INVALID
    let out = server.http("GET", "/v2/img/tags/list?n=many", &[], b"");
    assert_eq!(out.code(), "PAGINATION_NUMBER_INVALID");

    // DELETE: a tag, then the manifest by digest (its other tags go too).
    assert_eq!(
        server
            .http("DELETE", "/v2/img/manifests/list", &[], b"")
            .status,
        202
    );
    assert_eq!(
        server
            .http(
                "PUT",
                "/v2/img/manifests/v1-again",
                &[("Content-Type", OCI_MANIFEST)],
                &manifest
            )
            .status,
        201
    );
    assert_eq!(
        server
            .http("DELETE", &format!("/v2/img/manifests/{digest}"), &[], b"")
            .status,
        202
    );
    let tags = server.http("GET", "/v2/img/tags/list", &[], b"");
    assert_eq!(tags.json()["tags"], json!([]), "{}", tags.text());
    assert_eq!(
        server.http("GET", "/v2/img/manifests/v1", &[], b"").code(),
        "MANIFEST_UNKNOWN"
    );
    // Blob DELETE unlinks it from the repository.
    let layer = push_blob(&server, "img", b"to delete");
    assert_eq!(
        server
            .http("DELETE", &format!("/v2/img/blobs/{layer}"), &[], b"")
            .status,
        202
    );
    assert_eq!(
        server
            .http("HEAD", &format!("/v2/img/blobs/{layer}"), &[], b"")
            .status,
        404
    );
    assert_eq!(
        server
            .http("DELETE", &format!("/v2/img/blobs/{layer}"), &[], b"")
            .code(),
        "BLOB_UNKNOWN"
    );
}

#[test]
fn chunked_uploads_in_order_out_of_order_and_ranges() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);

    let start = server.http("POST", "/v2/chunks/blobs/uploads/", &[], b"");
    assert_eq!(start.status, 202);
    assert!(start.header("Docker-Upload-UUID").is_some());
    let location = start.header("Location").unwrap().to_string();
    let first = server.http(
        "PATCH",
        &location,
        &[
            ("Content-Range", "0-99999"),
            ("Content-Type", "application/octet-stream"),
        ],
        &data[..100_000],
    );
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.header("Range"), Some("0-99999"));
    // Out of order: 416, and the upload is unchanged.
    let skip = server.http(
        "PATCH",
        &location,
        &[("Content-Range", "200000-299999")],
        &data[200_000..],
    );
    assert_eq!(
        (skip.status, skip.code().as_str()),
        (416, "BLOB_UPLOAD_INVALID"),
        "{}",
        skip.text()
    );
    assert_eq!(skip.header("Range"), Some("0-99999"));
    let again = server.http(
        "PATCH",
        &location,
        &[("Content-Range", "0-99999")],
        &data[..100_000],
    );
    assert_eq!(again.status, 416);
    let status = server.http("GET", &location, &[], b"");
    assert_eq!(
        (status.status, status.header("Range")),
        (204, Some("0-99999"))
    );
    // A chunk without Content-Range (streamed, chunked transfer) appends.
    let mut chunked = format!("{:x}\r\n", 100_000).into_bytes();
    chunked.extend_from_slice(&data[100_000..200_000]);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let second = server.http(
        "PATCH",
        &location,
        &[("Transfer-Encoding", "chunked")],
        &chunked,
    );
    assert_eq!(
        second.header("Range"),
        Some("0-199999"),
        "{}",
        second.text()
    );
    // The last chunk with the PUT.
    let done = server.http(
        "PUT",
        &format!("{location}?digest={digest}"),
        &[("Content-Range", "200000-299999")],
        &data[200_000..],
    );
    assert_eq!(done.status, 201, "{}", done.text());
    assert_eq!(
        done.header("Location"),
        Some(format!("/v2/chunks/blobs/{digest}").as_str())
    );
    assert_eq!(
        server.http("GET", &location, &[], b"").code(),
        "BLOB_UPLOAD_UNKNOWN"
    );

    // GET and HEAD, whole and in ranges.
    let blob = format!("/v2/chunks/blobs/{digest}");
    let whole = server.http("GET", &blob, &[], b"");
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    assert_eq!(whole.header("Docker-Content-Digest"), Some(digest.as_str()));
    let head = server.http("HEAD", &blob, &[], b"");
    assert_eq!(head.header("Content-Length"), Some("300000"));
    let part = server.http("GET", &blob, &[("Range", "bytes=1000-1999")], b"");
    assert_eq!(part.status, 206);
    assert_eq!(part.header("Content-Range"), Some("bytes 1000-1999/300000"));
    assert_eq!(part.body, &data[1000..2000]);
    let tail = server.http("GET", &blob, &[("Range", "bytes=-10")], b"");
    assert_eq!(tail.body, &data[299_990..]);
    let open = server.http("GET", &blob, &[("Range", "bytes=299999-")], b"");
    assert_eq!(open.body, &data[299_999..]);
    let beyond = server.http("GET", &blob, &[("Range", "bytes=300000-")], b"");
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("Content-Range"), Some("bytes */300000"));

    // Cross-repository mount: from a repository that has it, and not.
    let mount = server.http(
        "POST",
        &format!("/v2/mounted/blobs/uploads/?mount={digest}&from=chunks"),
        &[],
        b"",
    );
    assert_eq!(mount.status, 201);
    assert_eq!(
        server
            .http("HEAD", &format!("/v2/mounted/blobs/{digest}"), &[], b"")
            .status,
        200
    );
    let no = server.http(
        "POST",
        &format!("/v2/elsewhere/blobs/uploads/?mount={digest}&from=nobody"),
        &[],
        b"",
    );
    assert_eq!(no.status, 202, "falls back to an upload session");
    // The blob is stored once.
    assert_eq!(blob_files(&server.storage), vec![digest.clone()]);
}

#[test]
fn tags_and_catalog_paginate_with_link_headers() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let (_, manifest) = push_image(&server, "pages/app", "a", "pages");
    for tag in ["b", "c", "d", "e"] {
        let out = server.http(
            "PUT",
            &format!("/v2/pages/app/manifests/{tag}"),
            &[("Content-Type", OCI_MANIFEST)],
            &manifest,
        );
        assert_eq!(out.status, 201);
    }
    let mut seen = Vec::new();
    let mut next = Some("/v2/pages/app/tags/list?n=2".to_string());
    let mut pages = 0;
    while let Some(path) = next {
        let out = server.http("GET", &path, &[], b"");
        assert_eq!(out.status, 200, "{}", out.text());
        assert_eq!(out.json()["name"], "pages/app");
        for tag in out.json()["tags"].as_array().unwrap() {
            seen.push(tag.as_str().unwrap().to_string());
        }
        next = out.header("Link").map(|link| {
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            link.trim_start_matches('<')
                .split('>')
                .next()
                .unwrap()
                .to_string()
        });
        pages += 1;
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let after = server.http("GET", "/v2/pages/app/tags/list?last=c", &[], b"");
    assert_eq!(after.json()["tags"], json!(["d", "e"]));
    assert!(after.header("Link").is_none());

    for repo in ["z/last", "a/first", "m/middle"] {
        push_image(&server, repo, "1", repo);
    }
    let first = server.http("GET", "/v2/_catalog?n=2", &[], b"");
    assert_eq!(first.json()["repositories"], json!(["a/first", "m/middle"]));
    let link = first.header("Link").unwrap();
    assert_eq!(link, "</v2/_catalog?n=2&last=m/middle>; rel=\"next\"");
    let rest = server.http("GET", "/v2/_catalog?n=2&last=m/middle", &[], b"");
    assert_eq!(rest.json()["repositories"], json!(["pages/app", "z/last"]));
    assert!(rest.header("Link").is_none());
}

#[test]
fn referrers_list_manifests_with_a_subject_filtered_by_artifact_type() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let (subject, manifest) = push_image(&server, "art", "v1", "subject");
    let empty = push_blob(&server, "art", b"{}");
    let referrer = |artifact_type: &str, note: &str| {
        let layer = push_blob(&server, "art", note.as_bytes());
        let body = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "text/plain", "digest": layer, "size": note.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": manifest.len()},
            "annotations": {"note": note},
        })
        .to_string();
        let digest = sha256(body.as_bytes());
        let out = server.http(
            "PUT",
            &format!("/v2/art/manifests/{digest}"),
            &[("Content-Type", OCI_MANIFEST)],
            body.as_bytes(),
        );
        assert_eq!(out.status, 201, "{}", out.text());
        assert_eq!(out.header("OCI-Subject"), Some(subject.as_str()));
        digest
    };
    let sbom = referrer("application/vnd.example.sbom", "sbom");
    let signature = referrer("application/vnd.example.signature", "sig");

    let all = server.http("GET", &format!("/v2/art/referrers/{subject}"), &[], b"");
    assert_eq!(all.status, 200);
    assert_eq!(all.header("Content-Type"), Some(OCI_INDEX));
    assert!(all.header("OCI-Filters-Applied").is_none());
    let index = all.json();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut digests: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    digests.sort();
    let mut expected = vec![sbom.as_str(), signature.as_str()];
    expected.sort();
    assert_eq!(digests, expected);
    let filtered = server.http(
        "GET",
        &format!("/v2/art/referrers/{subject}?artifactType=application%2Fvnd.example.sbom"),
        &[],
        b"",
    );
    assert_eq!(filtered.header("OCI-Filters-Applied"), Some("artifactType"));
    let manifests = filtered.json()["manifests"].clone();
    assert_eq!(manifests.as_array().unwrap().len(), 1, "{manifests}");
    assert_eq!(manifests[0]["digest"], sbom.as_str());
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sbom");
    assert_eq!(manifests[0]["annotations"]["note"], "sbom");
    // No referrers: an empty index, not an error; a bad digest is DIGEST_INVALID.
    let none = server.http(
        "GET",
        &format!("/v2/art/referrers/sha256:{}", "1".repeat(64)),
        &[],
        b"",
    );
    assert_eq!(
        (none.status, none.json()["manifests"].clone()),
        (200, json!([]))
    );
    assert_eq!(
        server
            .http("GET", "/v2/art/referrers/sha256:12", &[], b"")
            .code(),
        "DIGEST_INVALID"
    );
    // A deleted referrer leaves the list.
    assert_eq!(
        server
            .http("DELETE", &format!("/v2/art/manifests/{sbom}"), &[], b"")
            .status,
        202
    );
    let after = server.http("GET", &format!("/v2/art/referrers/{subject}"), &[], b"");
    assert_eq!(after.json()["manifests"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Auth, TLS, read-only, limits

fn basic(user: &str, password: &str) -> String {
    use std::fmt::Write as _;
    // base64 by hand: the test needs no more crates.
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let _ = out.write_char(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn htpasswd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let out = ok(Command::new("htpasswd").args(["-Bbn", user, password]));
    let path = dir.join("htpasswd");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn htpasswd_auth_with_and_without_anonymous_pulls() {
    require_root();
    let temp = TempRoot::new();
    let file = htpasswd(&temp.subdir("auth"), "alice", "s3cret");
    let file = file.to_str().unwrap();
    let server = Server::start(&temp, "private", &["--htpasswd", file]);
    let good = basic("alice", "s3cret");
    let bad = basic("alice", "wrong");

    let out = server.http("GET", "/v2/", &[], b"");
    assert_eq!((out.status, out.code().as_str()), (401, "UNAUTHORIZED"));
    assert_eq!(
        out.header("WWW-Authenticate"),
        Some("Basic realm=\"keel-registry\"")
    );
    assert_eq!(
        server
            .http("GET", "/v2/", &[("Authorization", &bad)], b"")
            .status,
        401
    );
    assert_eq!(
        server
            .http("GET", "/v2/", &[("Authorization", &good)], b"")
            .status,
        200
    );
    assert_eq!(server.http("GET", "/v2/x/tags/list", &[], b"").status, 401);

    // skopeo with credentials pushes; without, it is refused.
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let source = format!("oci-archive:{}", archive.display());
    let target = format!("docker://{}/auth/busybox:1", server.host());
    let refused = run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &source,
        &target,
    ]));
    assert!(!refused.status.success());
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        "--dest-creds",
        "alice:s3cret",
        &source,
        &target,
    ]);
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        &target,
    ]);
    assert!(
        server
            .log()
            .contains(" alice \"PUT /v2/auth/busybox/manifests/1\" 201"),
        "{}",
        server.log()
    );
    drop(server);

    // Anonymous pulls: reads without credentials, writes need them.
    let open = Server::start(&temp, "open", &["--htpasswd", file, "--anonymous-pull"]);
    let (digest, _) = {
        let out = open.http("POST", "/v2/anon/blobs/uploads/", &[], b"");
        assert_eq!((out.status, out.code().as_str()), (401, "UNAUTHORIZED"));
        let data = b"anonymous";
        let digest = sha256(data);
        let out = open.http(
            "POST",
            &format!("/v2/anon/blobs/uploads/?digest={digest}"),
            &[("Authorization", &good)],
            data,
        );
        assert_eq!(out.status, 201);
        (digest, ())
    };
    let read = open.http("GET", &format!("/v2/anon/blobs/{digest}"), &[], b"");
    assert_eq!(
        (read.status, read.body.as_slice()),
        (200, &b"anonymous"[..])
    );
    assert_eq!(
        open.http("DELETE", &format!("/v2/anon/blobs/{digest}"), &[], b"")
            .status,
        401
    );
    assert_eq!(
        open.http(
            "GET",
            &format!("/v2/anon/blobs/{digest}"),
            &[("Authorization", &bad)],
            b""
        )
        .status,
        401
    );
    drop(open);

    // DENIED: a user the config file lets pull only.
    let config = temp.path().join("pull-only.json");
    std::fs::write(
        &config,
        json!({"htpasswd": file, "pull_only_users": ["alice"]}).to_string(),
    )
    .unwrap();
    let limited = Server::start(&temp, "limited", &["--config", config.to_str().unwrap()]);
    let out = limited.http(
        "POST",
        "/v2/x/blobs/uploads/",
        &[("Authorization", &good)],
        b"",
    );
    assert_eq!((out.status, out.code().as_str()), (403, "DENIED"));
    assert_eq!(
        limited
            .http("GET", "/v2/", &[("Authorization", &good)], b"")
            .status,
        200
    );
}

#[test]
fn tls_with_a_self_signed_certificate() {
    require_root();
    let temp = TempRoot::new();
    let certs = temp.subdir("certs");
    let (cert, key) = (certs.join("server.crt"), certs.join("server.key"));
    ok(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let server = Server::start(
        &temp,
        "tls",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    // skopeo trusts the certificate from a cert dir (its *.crt are CAs).
    let trust = temp.subdir("trust");
    std::fs::copy(&cert, trust.join("ca.crt")).unwrap();
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let target = format!("docker://{}/tls/busybox:1", server.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-cert-dir",
        trust.to_str().unwrap(),
        &format!("oci-archive:{}", archive.display()),
        &target,
    ]);
    let pulled = temp.path().join("pulled");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-cert-dir",
        trust.to_str().unwrap(),
        &target,
        &format!("dir:{}", pulled.display()),
    ]);
    assert!(pulled.join("manifest.json").is_file());
    // Without trusting it, verification fails; without verifying, it works.
    let refused = run(Command::new("skopeo").args(["inspect", &target]));
    assert!(!refused.status.success());
    skopeo(&["inspect", "--tls-verify=false", &target]);
    // curl over HTTP/2 with the certificate as its CA.
    let out = ok(Command::new("curl")
        .args([
            "-s",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
            "--cacert",
            cert.to_str().unwrap(),
        ])
        .arg(format!("https://{}/v2/", server.host())));
    assert_eq!(out, "200 2");
}

#[test]
fn read_only_refuses_writes_with_405_unsupported() {
    require_root();
    let temp = TempRoot::new();
    let storage = temp.subdir("shared-storage");
    let writable = Server::start_with(&temp, "writable", &[], Some(&storage));
    let (digest, _) = push_image(&writable, "ro", "v1", "read-only");
    drop(writable);
    let server = Server::start_with(&temp, "read-only", &["--read-only"], Some(&storage));
    assert_eq!(
        server
            .http("GET", &format!("/v2/ro/manifests/{digest}"), &[], b"")
            .status,
        200
    );
    for (method, path) in [
        ("POST", "/v2/ro/blobs/uploads/".to_string()),
        ("PUT", "/v2/ro/manifests/v2".to_string()),
        ("DELETE", format!("/v2/ro/manifests/{digest}")),
    ] {
        let out = server.http(method, &path, &[("Content-Type", OCI_MANIFEST)], b"{}");
        assert_eq!(
            (out.status, out.code().as_str()),
            (405, "UNSUPPORTED"),
            "{method} {path}"
        );
    }
    assert!(server.log().contains("read-only"), "{}", server.log());
}

/// Waits until the server is streaming an upload in `storage` (its file in
/// `uploads/` exists): the request is then in the server's hands.
fn wait_for_upload(storage: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(storage.join("uploads")).map_or(true, |mut e| e.next().is_none()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no upload began in {}",
            storage.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn too_many_requests_when_the_limit_is_reached() {
    require_root();
    let temp = TempRoot::new();
    let config = temp.path().join("config.json");
    std::fs::write(&config, json!({"max_concurrent_requests": 1}).to_string()).unwrap();
    let server = Server::start(&temp, "limited", &["--config", config.to_str().unwrap()]);
    // One slow upload holds the only slot.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let digest = sha256(b"0123456789");
    slow.write_all(
        request_head(
            "POST",
            &format!("/v2/slow/blobs/uploads/?digest={digest}"),
            &[],
            Some(10),
        )
        .as_bytes(),
    )
    .unwrap();
    slow.write_all(b"01234").unwrap();
    // Once the upload holds the slot, the next request is refused.
    wait_for_upload(&server.storage);
    let out = server.http("GET", "/v2/", &[], b"");
    assert_eq!((out.status, out.code().as_str()), (429, "TOOMANYREQUESTS"));
    assert_eq!(out.header("Retry-After"), Some("1"));
    slow.write_all(b"56789").unwrap();
    assert_eq!(read_response(&mut slow, false).status, 201);
    assert_eq!(server.http("GET", "/v2/", &[], b"").status, 200);
}

// ---------------------------------------------------------------------------
// Lifecycle: gc, SIGTERM, crashes, abandoned uploads

#[test]
fn sigterm_waits_at_most_the_shutdown_timeout_for_requests_in_flight() {
    require_root();
    let temp = TempRoot::new();
    let config = temp.path().join("config.json");
    std::fs::write(&config, json!({"shutdown_timeout_secs": 1}).to_string()).unwrap();
    let mut server = Server::start(&temp, "impatient", &["--config", config.to_str().unwrap()]);
    // An upload whose client stops sending and never finishes.
    let mut stuck = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let digest = sha256(b"0123456789");
    stuck
        .write_all(
            request_head(
                "POST",
                &format!("/v2/stuck/blobs/uploads/?digest={digest}"),
                &[],
                Some(10),
            )
            .as_bytes(),
        )
        .unwrap();
    stuck.write_all(b"01234").unwrap();
    wait_for_upload(&server.storage);
    server.signal(libc::SIGTERM);
    // The server goes once the timeout is over, the upload unfinished
    // (without the timeout it would wait for the client forever).
    assert!(
        server.wait_exit(Duration::from_secs(60)),
        "the server still runs after SIGTERM with shutdown_timeout_secs 1:\n{}",
        server.log()
    );
    assert!(blob_files(&server.storage).is_empty(), "no partial blob");
    // It says why: the configured timeout, not the default 30 s.
    assert!(
        server
            .log()
            .contains("requests still in flight after 1s; stopping anyway"),
        "{}",
        server.log()
    );
}

#[test]
fn gc_removes_unreferenced_blobs_and_refuses_a_running_server() {
    require_root();
    let temp = TempRoot::new();
    let server = Server::start(&temp, "registry", &[]);
    let storage = server.storage.clone();
    let (kept, kept_manifest) = push_image(&server, "gc/kept", "v1", "kept");
    let (gone, _) = push_image(&server, "gc/gone", "v1", "gone");
    let stray = push_blob(&server, "gc/kept", b"never referenced");
    assert_eq!(
        server
            .http("DELETE", &format!("/v2/gc/gone/manifests/{gone}"), &[], b"")
            .status,
        202
    );
    let gc = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
        command
            .args(["registry", "gc", "--storage"])
            .arg(&storage)
            .args(args);
        run(&mut command)
    };
    // Refused while the server runs.
    let refused = gc(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(&format!("pid {}", server.daemon.pid())),
        "{message}"
    );
    assert!(message.contains("--force"), "{message}");
    let before = blob_files(&storage);
    assert_eq!(before.len(), 7, "{before:?}");
    // --dry-run --force: says, deletes nothing.
    let dry = gc(&["--force", "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(text.contains("Would delete 4 blobs"), "{text}");
    assert_eq!(blob_files(&storage), before);
    // An upload a client started and never finished.
    let started = server.http("POST", "/v2/gc/abandoned/blobs/uploads/", &[], b"");
    assert_eq!(started.status, 202);
    let uploads = || std::fs::read_dir(storage.join("uploads")).unwrap().count();
    assert_eq!(uploads(), 1);
    drop(server);

    let done = gc(&[]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        text.contains("Deleted 4 blobs and 1 abandoned uploads"),
        "{text}"
    );
    assert_eq!(uploads(), 0, "the abandoned upload is gone");
    assert!(text.contains(&format!("deleted blob {gone}")), "{text}");
    assert!(text.contains(&format!("deleted blob {stray}")), "{text}");
    let after = blob_files(&storage);
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.contains(&kept));
    // The kept image still serves, all of it.
    let server = Server::start_with(&temp, "again", &[], Some(&storage));
    let manifest: Value = serde_json::from_slice(&kept_manifest).unwrap();
    for blob in [
        &manifest["config"]["digest"],
        &manifest["layers"][0]["digest"],
    ] {
        let path = format!("/v2/gc/kept/blobs/{}", blob.as_str().unwrap());
        assert_eq!(server.http("GET", &path, &[], b"").status, 200);
    }
    assert_eq!(
        server
            .http("HEAD", &format!("/v2/gc/kept/blobs/{stray}"), &[], b"")
            .status,
        404
    );
}

#[test]
fn sigterm_lets_an_in_flight_upload_finish() {
    require_root();
    let temp = TempRoot::new();
    let mut server = Server::start(&temp, "registry", &[]);
    let data = vec![7u8; 64 * 1024];
    let digest = sha256(&data);
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(
        request_head(
            "POST",
            &format!("/v2/slow/blobs/uploads/?digest={digest}"),
            &[],
            Some(data.len()),
        )
        .as_bytes(),
    )
    .unwrap();
    slow.write_all(&data[..1000]).unwrap();
    wait_for_upload(&server.storage);
    server.signal(libc::SIGTERM);
    // No new connections (the listener closes), the old one goes on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for piece in data[1000..].chunks(16 * 1024) {
        slow.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = read_response(&mut slow, false);
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert!(
        server.wait_exit(Duration::from_secs(10)),
        "the server did not exit after SIGTERM:\n{}",
        server.log()
    );
    assert!(server.log().contains("SIGTERM"), "{}", server.log());
    assert_eq!(blob_files(&server.storage), vec![digest]);
}

#[test]
fn a_crash_mid_upload_leaves_no_blob_and_a_second_server_is_refused() {
    require_root();
    let temp = TempRoot::new();
    let storage = temp.subdir("storage");
    let server = Server::start_with(&temp, "first", &[], Some(&storage));
    // The same storage cannot be served twice.
    let mut second = Command::new(env!("CARGO_BIN_EXE_keel"));
    second
        .args(["registry", "serve", "--addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--storage")
        .arg(&storage);
    let refused = run(&mut second);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use by another keel registry"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let data = vec![9u8; 100_000];
    let digest = sha256(&data);
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(
        request_head(
            "POST",
            &format!("/v2/crash/blobs/uploads/?digest={digest}"),
            &[],
            Some(data.len()),
        )
        .as_bytes(),
    )
    .unwrap();
    slow.write_all(&data[..50_000]).unwrap();
    wait_for_upload(&storage);
    server.signal(libc::SIGKILL);
    drop(slow);
    drop(server);
    assert!(blob_files(&storage).is_empty());
    let restarted = Server::start_with(&temp, "restarted", &[], Some(&storage));
    assert_eq!(
        restarted
            .http("HEAD", &format!("/v2/crash/blobs/{digest}"), &[], b"")
            .status,
        404
    );
    // A fresh upload of the same content works.
    push_blob(&restarted, "crash", &data);
}

#[test]
fn abandoned_uploads_are_removed_and_sessions_survive_a_restart() {
    require_root();
    let temp = TempRoot::new();
    let storage = temp.subdir("storage");
    // A session survives a restart (resumed with its bytes).
    let server = Server::start_with(&temp, "first", &[], Some(&storage));
    let start = server.http("POST", "/v2/resume/blobs/uploads/", &[], b"");
    let location = start.header("Location").unwrap().to_string();
    assert_eq!(
        server
            .http("PATCH", &location, &[("Content-Range", "0-4")], b"hello")
            .status,
        202
    );
    drop(server);
    let server = Server::start_with(&temp, "second", &[], Some(&storage));
    assert_eq!(
        server.http("GET", &location, &[], b"").header("Range"),
        Some("0-4")
    );
    let digest = sha256(b"hello world");
    let done = server.http(
        "PUT",
        &format!("{location}?digest={digest}"),
        &[],
        b" world",
    );
    assert_eq!(done.status, 201, "{}", done.text());
    drop(server);

    // With a 1 s time-to-live, an idle session goes.
    let config = temp.path().join("config.json");
    std::fs::write(
        &config,
        json!({"storage": storage, "upload_ttl_secs": 1, "upload_purge_interval_secs": 1})
            .to_string(),
    )
    .unwrap();
    let server = Server::start(&temp, "purging", &["--config", config.to_str().unwrap()]);
    assert_eq!(server.storage, temp.path().join("purging/storage"));
    let start = server.http("POST", "/v2/idle/blobs/uploads/", &[], b"");
    let location = start.header("Location").unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = server.http("GET", &location, &[], b"");
        if out.status == 404 {
            assert_eq!(out.code(), "BLOB_UPLOAD_UNKNOWN");
            break;
        }
        assert!(Instant::now() < deadline, "the idle upload was not removed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let uploads = std::fs::read_dir(temp.path().join("purging/storage/uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0);
}
