//! `keel system service`: the Docker Engine API, driven by docker's own
//! clients — the docker CLI (Debian's docker.io client, and the 28.x client
//! at /usr/local/bin/docker where there is one), docker-py (Debian's
//! python3-docker, and a newer one on `python3`'s path where there is one)
//! and Debian's docker-compose 1.29 — and by raw HTTP for what a client
//! would not send: malformed JSON, an oversized body, a client that
//! leaves mid-stream, a hundred at once.
//!
//! The service runs in the test keel's network namespace, on a socket in
//! its temp dir, and is stopped by its pid.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Keel, stderr, stdout};
use keel_testutil::peers::Daemon;

/// A running `keel system service` for a test keel.
struct Service {
    daemon: Daemon,
    socket: PathBuf,
}

impl Service {
    fn start(keel: &Keel, extra: &[&str]) -> Service {
        let socket = keel.temp.path().join("docker.sock");
        let listen = format!("unix://{}", socket.display());
        let mut args = vec!["system", "service", "--listen", &listen, "--time", "0"];
        args.extend_from_slice(extra);
        let mut command = keel.command(&args);
        command.env("KEEL_LOG", "debug");
        let mut daemon = Daemon::spawn(
            "keel system service",
            command,
            keel.temp.path().join("service.log"),
            keel.temp.path().to_path_buf(),
        );
        let probe = socket.clone();
        daemon.wait_until("listening", Duration::from_secs(20), || {
            UnixStream::connect(&probe).is_ok()
        });
        Service { daemon, socket }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// One HTTP/1.1 request on a new connection: the status and the body.
    fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        let mut stream = UnixStream::connect(&self.socket).expect("connect to the service");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: keel\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.daemon.stop();
    }
}

/// The docker clients on this machine: Debian's always (scripts/setup
/// installs docker.io), the 28.x client where it is installed.
fn docker_clients() -> Vec<PathBuf> {
    let mut clients = vec![PathBuf::from("/usr/bin/docker")];
    let newer = PathBuf::from("/usr/local/bin/docker");
    if newer.is_file() {
        clients.push(newer);
    }
    for c in &clients {
        assert!(
            c.is_file(),
            "{} is missing: ./scripts/setup installs docker.io",
            c.display()
        );
    }
    clients
}

/// Runs a client with the service as its daemon; killed after 120 s.
fn client(program: &Path, service: &Service, args: &[&str], dir: Option<&Path>) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("DOCKER_HOST", service.host())
        .env(
            "DOCKER_CONFIG",
            service.socket.with_file_name("docker-config"),
        )
        .env("DOCKER_BUILDKIT", "0")
        .env("COMPOSE_DOCKER_CLI_BUILD", "0")
        .stdin(Stdio::null());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    keel_testutil::output_via_files(&mut command, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", program.display()))
}

fn ok(program: &Path, service: &Service, args: &[&str]) -> String {
    let out = client(program, service, args, None);
    assert!(
        out.status.success(),
        "{} {args:?} exited {:?}:\n{}{}",
        program.display(),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn the_docker_cli_runs_containers_through_keel() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    for docker in docker_clients() {
        let d = docker.as_path();
        let version = ok(
            d,
            &service,
            &[
                "version",
                "--format",
                "{{.Server.Version}} {{.Server.APIVersion}}",
            ],
        );
        assert_eq!(
            version.trim(),
            format!("{} 1.47", env!("CARGO_PKG_VERSION"))
        );
        assert!(ok(d, &service, &["images"]).contains("busybox"));

        // Foreground: the output, both streams, and the exit code.
        let out = client(
            d,
            &service,
            &[
                "run",
                "--rm",
                "busybox",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_eq!(stdout(&out), "out\n");
        assert!(stderr(&out).contains("err"));
        // Every run hears its exit, with and without stdin (a client side
        // that closes early once lost it).
        for _ in 0..5 {
            let out = client(
                d,
                &service,
                &["run", "--rm", "busybox", "sh", "-c", "exit 5"],
                None,
            );
            assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
            let mut piped = Command::new(d);
            piped
                .args(["run", "-i", "--rm", "busybox", "sh", "-c", "cat; exit 6"])
                .env("DOCKER_HOST", service.host())
                .env(
                    "DOCKER_CONFIG",
                    service.socket.with_file_name("docker-config"),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = piped.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"through stdin\n")
                .unwrap();
            let out = wait_output(child, Duration::from_secs(60));
            assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
            assert_eq!(stdout(&out), "through stdin\n");
        }
        // --rm: the engine removed it (the CLI sent no DELETE).
        assert_eq!(ok(d, &service, &["ps", "-aq"]).trim(), "");

        // Detached, with a volume, a label and a user network.
        ok(d, &service, &["network", "create", "apinet"]);
        ok(d, &service, &["volume", "create", "apivol"]);
        let id = ok(
            d,
            &service,
            &[
                "run",
                "-d",
                "--name",
                "web",
                "--network",
                "apinet",
                "--network-alias",
                "www",
                "-v",
                "apivol:/data",
                "-l",
                "tier=front",
                "busybox",
                "sh",
                "-c",
                "echo started; echo kept > /data/file; exec sleep 1000",
            ],
        );
        assert_eq!(id.trim().len(), 64);
        let ps = ok(
            d,
            &service,
            &[
                "ps",
                "--filter",
                "label=tier=front",
                "--format",
                "{{.Names}} {{.State}}",
            ],
        );
        assert_eq!(ps.trim(), "web running");
        keel.eventually("the container's first line", || {
            stdout(&client(d, &service, &["logs", "web"], None)) == "started\n"
        });
        // exec: output and exit code.
        let out = client(
            d,
            &service,
            &["exec", "web", "sh", "-c", "cat /data/file; exit 4"],
            None,
        );
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(stdout(&out), "kept\n");
        // A second container reaches the first by its alias.
        let out = client(
            d,
            &service,
            &[
                "run",
                "--rm",
                "--network",
                "apinet",
                "busybox",
                "ping",
                "-c1",
                "-W2",
                "www",
            ],
            None,
        );
        // -p: a port published on the service's host (the test's namespace).
        let page = keel.temp.path().join("www");
        std::fs::create_dir_all(&page).unwrap();
        std::fs::write(page.join("index.html"), "published\n").unwrap();
        let bind = format!("{}:/www:ro", page.display());
        ok(
            d,
            &service,
            &[
                "run", "-d", "--name", "httpd", "-p", "18080:80", "-v", &bind, "busybox", "httpd",
                "-f", "-p", "80", "-h", "/www",
            ],
        );
        assert!(
            ok(
                d,
                &service,
                &["ps", "--format", "{{.Ports}}", "--filter", "name=httpd"]
            )
            .contains("18080->80/tcp")
        );
        keel.eventually("the published page", || {
            let fetched = keel.netns.run(
                "/bin/busybox",
                &["wget", "-qO-", "http://127.0.0.1:18080/index.html"],
            );
            stdout(&fetched) == "published\n"
        });
        ok(d, &service, &["kill", "httpd"]);
        ok(d, &service, &["rm", "httpd"]);
        assert!(
            out.status.success(),
            "ping www: {}{}",
            stdout(&out),
            stderr(&out)
        );
        // What docker inspect says, and keel's own CLI agrees.
        let inspected = ok(
            d,
            &service,
            &[
                "inspect",
                "--format",
                "{{.Name}} {{.State.Running}} {{.Config.Labels.tier}}",
                "web",
            ],
        );
        assert_eq!(inspected.trim(), "/web true front");
        assert_eq!(keel.inspect("web", "{{.State.Status}}"), "running");
        // logs -f follows until the container ends.
        let out = client(
            d,
            &service,
            &[
                "run",
                "-d",
                "busybox",
                "sh",
                "-c",
                "for i in 1 2 3; do echo line$i; sleep 0.2; done",
            ],
            None,
        );
        let short = stdout(&out).trim().to_string();
        let followed = ok(d, &service, &["logs", "-f", &short]);
        assert_eq!(followed, "line1\nline2\nline3\n");
        ok(d, &service, &["rm", &short]);
        // exec -it under a terminal.
        let out = Command::new("script")
            .args([
                "-qec",
                &format!("{} exec -it web sh -c 'tty; exit 6'", d.display()),
                "/dev/null",
            ])
            .env("DOCKER_HOST", service.host())
            .env(
                "DOCKER_CONFIG",
                service.socket.with_file_name("docker-config"),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(stdout(&out).contains("/dev/pts/"), "{}", stdout(&out));
        assert_eq!(out.status.code(), Some(6));
        // docker cp, both ways.
        let host_file = keel.temp.path().join("to-copy.txt");
        std::fs::write(&host_file, "from the host\n").unwrap();
        ok(
            d,
            &service,
            &["cp", host_file.to_str().unwrap(), "web:/tmp/"],
        );
        let out = client(
            d,
            &service,
            &["exec", "web", "cat", "/tmp/to-copy.txt"],
            None,
        );
        assert_eq!(stdout(&out), "from the host\n");
        let back = keel.temp.path().join("copied-back");
        std::fs::create_dir_all(&back).unwrap();
        ok(
            d,
            &service,
            &["cp", "web:/data/file", back.to_str().unwrap()],
        );
        assert_eq!(
            std::fs::read_to_string(back.join("file")).unwrap(),
            "kept\n"
        );
        // stats, diff and system df.
        let stats = ok(
            d,
            &service,
            &[
                "stats",
                "--no-stream",
                "--format",
                "{{.Name}} {{.PIDs}}",
                "web",
            ],
        );
        assert_eq!(stats.trim(), "web 1");
        assert!(ok(d, &service, &["diff", "web"]).contains("A /tmp/to-copy.txt"));
        let df = ok(
            d,
            &service,
            &[
                "system",
                "df",
                "--format",
                "{{.Type}} {{.TotalCount}} {{.Active}}",
            ],
        );
        // The volume apivol, used by web; busybox, used by web.
        assert!(df.contains("Local Volumes 1 1"), "{df}");
        assert!(df.contains("Images 1 1"), "{df}");
        ok(d, &service, &["stop", "-t", "1", "web"]);
        assert_eq!(keel.inspect("web", "{{.State.Status}}"), "exited");
        ok(d, &service, &["rm", "web"]);
        ok(d, &service, &["volume", "rm", "apivol"]);
        ok(d, &service, &["network", "rm", "apinet"]);
        let out = client(d, &service, &["inspect", "web"], None);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("No such"), "{}", stderr(&out));
    }
}

/// A child's output, killing it (by its pid) if it runs past `timeout`.
fn wait_output(child: std::process::Child, timeout: Duration) -> Output {
    let pid = child.id() as i32;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(timeout) {
        Ok(out) => out.expect("collect the output"),
        Err(_) => {
            // SAFETY: killing the child this test started, by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("hung for {timeout:?}");
        }
    }
}

#[test]
fn docker_build_save_load_and_events() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let docker = docker_clients().pop().unwrap();
    let d = docker.as_path();
    let context = keel.temp.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nARG WHO=nobody\nRUN echo \"built for $WHO\" > /built\nCMD [\"cat\", \"/built\"]\n",
    )
    .unwrap();
    std::fs::write(context.join("Dockerfile.bad"), "FROM busybox\nRUN exit 9\n").unwrap();
    let since = jiff::Timestamp::now().as_second().to_string();
    let built = client(
        d,
        &service,
        &[
            "build",
            "-t",
            "apibuilt",
            "--build-arg",
            "WHO=docker",
            context.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        built.status.success(),
        "{}{}",
        stdout(&built),
        stderr(&built)
    );
    assert!(
        stdout(&built).contains("Successfully tagged apibuilt:latest"),
        "{}",
        stdout(&built)
    );
    assert_eq!(
        ok(d, &service, &["run", "--rm", "apibuilt"]),
        "built for docker\n"
    );
    // A failing step: the build fails, with the step's words; nothing tagged.
    let bad = client(
        d,
        &service,
        &[
            "build",
            "-t",
            "apibad",
            "-f",
            context.join("Dockerfile.bad").to_str().unwrap(),
            context.to_str().unwrap(),
        ],
        None,
    );
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("exit code: 9"), "{}", stderr(&bad));
    assert!(!ok(d, &service, &["images"]).contains("apibad"));
    // save and load through the API.
    let archive = keel.temp.path().join("apibuilt.tar");
    ok(
        d,
        &service,
        &["save", "-o", archive.to_str().unwrap(), "apibuilt"],
    );
    ok(d, &service, &["rmi", "apibuilt"]);
    assert!(!ok(d, &service, &["images"]).contains("apibuilt"));
    let loaded = ok(d, &service, &["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("apibuilt"), "{loaded}");
    assert_eq!(
        ok(d, &service, &["run", "--rm", "apibuilt"]),
        "built for docker\n"
    );
    // What happened, as events.
    let until = (jiff::Timestamp::now().as_second() + 1).to_string();
    let events = ok(
        d,
        &service,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=container",
            "--format",
            "{{.Action}}",
        ],
    );
    assert!(events.lines().any(|l| l == "start"), "{events}");
    assert!(events.lines().any(|l| l == "die"), "{events}");
}

#[test]
fn docker_cp_cannot_write_outside_the_container() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    keel.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "1000"]);
    let marker = format!("keel-escape-{}", std::process::id());
    // A tar whose entries climb out with `..`, and one through a symlink.
    let mut builder = tar::Builder::new(Vec::new());
    let mut climb = tar::Header::new_gnu();
    let name = format!("../../../../../../tmp/{marker}");
    climb.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    climb.set_size(4);
    climb.set_mode(0o644);
    climb.set_entry_type(tar::EntryType::Regular);
    climb.set_cksum();
    builder.append(&climb, &b"bad\n"[..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_path("up").unwrap();
    link.set_link_name("/").unwrap();
    link.set_size(0);
    link.set_mode(0o777);
    link.set_cksum();
    builder.append(&link, &[][..]).unwrap();
    let mut through = tar::Header::new_gnu();
    let name = format!("up/tmp/{marker}-link");
    through.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    through.set_size(4);
    through.set_mode(0o644);
    through.set_entry_type(tar::EntryType::Regular);
    through.set_cksum();
    builder.append(&through, &b"bad\n"[..]).unwrap();
    let data = builder.into_inner().unwrap();
    let (_code, _) = service.request("PUT", "/containers/box/archive?path=/tmp", Some(&data));
    // Whatever the answer, nothing reached the host.
    assert!(!Path::new(&format!("/tmp/{marker}")).exists());
    assert!(!Path::new(&format!("/tmp/{marker}-link")).exists());
    let (code, body) = service.request(
        "PUT",
        "/containers/box/archive?path=/no/such/dir",
        Some(&data),
    );
    assert_eq!(code, 404, "{body}");
    let (code, _) = service.request("GET", "/containers/box/archive?path=/no/such/file", None);
    assert_eq!(code, 404);
    keel.ok(&["rm", "-f", "box"]);
}

#[test]
fn docker_run_it_is_a_terminal() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    for docker in docker_clients() {
        // `script` gives the client a terminal; the shell reads our lines.
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{} run -it --rm busybox sh", docker.display()),
                "/dev/null",
            ])
            .env("DOCKER_HOST", service.host())
            .env(
                "DOCKER_CONFIG",
                service.socket.with_file_name("docker-config"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        let mut input = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        input
            .write_all(b"tty; echo from-the-terminal\nexit 7\n")
            .unwrap();
        let out = wait_output(child, Duration::from_secs(60));
        let text = stdout(&out);
        assert!(text.contains("/dev/pts/"), "no terminal: {text}");
        assert!(text.contains("from-the-terminal"), "{text}");
        assert_eq!(out.status.code(), Some(7), "{text}");
        drop(input);
    }
}

#[test]
fn docker_py_drives_keel() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let script = keel.temp.path().join("client.py");
    std::fs::write(
        &script,
        r#"
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
assert c.ping()
out = c.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], remove=True, stderr=True)
assert out == b"out\nerr\n", out
ct = c.containers.run("busybox", ["sh", "-c", "echo hello; exec sleep 100"], detach=True, name="pyc", labels={"a": "b"})
assert [x.name for x in c.containers.list(filters={"label": "a=b"})] == ["pyc"]
code, output = ct.exec_run(["sh", "-c", "echo execd; exit 2"])
assert (code, output) == (2, b"execd\n"), (code, output)
for _ in range(100):
    if ct.logs() == b"hello\n":
        break
    import time; time.sleep(0.1)
assert ct.logs() == b"hello\n", ct.logs()
net = c.networks.create("pynet")
assert "pynet" in [n.name for n in c.networks.list()]
vol = c.volumes.create("pyvol")
assert "pyvol" in [v.name for v in c.volumes.list()]
ct.stop(timeout=1)
assert ct.wait()["StatusCode"] == 137
ct.remove()
net.remove()
vol.remove()
assert c.containers.list(all=True) == []
assert "busybox:latest" in c.images.get("busybox").tags
import io, time
since = int(time.time()) - 1
image, logs = c.images.build(fileobj=io.BytesIO(b"FROM busybox\nRUN echo py > /py\n"), tag="pybuilt")
assert "pybuilt:latest" in image.tags, image.tags
assert c.containers.run("pybuilt", ["cat", "/py"], remove=True) == b"py\n"
c.images.remove("pybuilt")
actions = [e["Action"] for e in c.events(since=since, until=int(time.time()) + 1, decode=True, filters={"type": "container"})]
assert "start" in actions and "destroy" in actions, actions
print("ok", docker.__version__)
"#,
    )
    .unwrap();
    let mut pythons = vec![PathBuf::from("/usr/bin/python3")];
    // A newer docker-py (PyPI's) where this machine has one on PATH.
    if let Ok(out) = Command::new("python3")
        .args(["-c", "import docker, sys; print(sys.executable)"])
        .output()
        && out.status.success()
    {
        let path = PathBuf::from(stdout(&out).trim());
        if path != Path::new("/usr/bin/python3") {
            pythons.push(path);
        }
    }
    for python in pythons {
        let out = client(
            &python,
            &service,
            &[script.to_str().unwrap(), &service.host()],
            None,
        );
        assert!(
            out.status.success() && stdout(&out).starts_with("ok"),
            "{} (docker-py): {}{}",
            python.display(),
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn docker_compose_up_ps_logs_exec_down() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let project = keel.temp.path().join("shop");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("docker-compose.yml"),
        r#"version: "3.8"
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo db up; touch /data/ready; exec sleep 1000"]
    volumes: ["data:/data"]
    networks:
      back:
        aliases: [database]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      retries: 20
  web:
    build: ./app
    depends_on:
      db:
        condition: service_healthy
    networks: [back]
  cache:
    image: busybox
    command: ["sleep", "1000"]
    networks: [back]
volumes:
  data: {}
networks:
  back: {}
"#,
    )
    .unwrap();
    std::fs::create_dir_all(project.join("app")).unwrap();
    std::fs::write(
        project.join("app/Dockerfile"),
        "FROM busybox\nRUN echo app-built > /app.txt\nCMD [\"sh\", \"-c\", \"cat /app.txt; ping -c1 -W2 database && echo web up && exec sleep 1000\"]\n",
    )
    .unwrap();
    let compose = Path::new("/usr/bin/docker-compose");
    assert!(
        compose.is_file(),
        "docker-compose is missing: ./scripts/setup installs it"
    );
    let run = |args: &[&str]| client(compose, &service, args, Some(&project));
    let up = run(&["up", "-d", "--build"]);
    assert!(up.status.success(), "up: {}{}", stdout(&up), stderr(&up));
    let ps = run(&["ps"]);
    let text = stdout(&ps);
    assert!(
        text.contains("shop_db_1") && text.contains("(healthy)"),
        "{text}"
    );
    assert!(text.contains("shop_web_1"), "{text}");
    assert_eq!(text.matches("shop_db_1").count(), 1, "{text}");
    keel.eventually("web's line", || {
        stdout(&run(&["logs", "web"])).contains("web up")
    });
    let exec = run(&["exec", "-T", "db", "sh", "-c", "ls /data; exit 5"]);
    assert_eq!(exec.status.code(), Some(5), "{}", stderr(&exec));
    assert_eq!(stdout(&exec), "ready\n");
    let down = run(&["down", "-v"]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    assert_eq!(keel.ok(&["ps", "-aq"]).trim(), "");
    assert!(!keel.ok(&["volume", "ls", "-q"]).contains("shop_data"));
    assert!(!keel.ok(&["network", "ls"]).contains("shop_back"));
}

#[test]
fn push_and_pull_through_the_api_with_a_local_registry() {
    let keel = Keel::new();
    let registry = keel_testutil::peers::Registry::start_in(
        &keel.temp,
        "registry",
        Some(("apiuser", "apipass")),
        Some(&keel.netns),
    );
    let image = format!("{}/keel/busybox:api", registry.host());
    let service = Service::start(&keel, &[]);
    let docker = docker_clients().remove(0);
    // A wrong password is refused by /auth, the right one kept by the client.
    let wrong = client(
        &docker,
        &service,
        &["login", "-u", "apiuser", "-p", "nope", &registry.host()],
        None,
    );
    assert!(!wrong.status.success());
    ok(
        &docker,
        &service,
        &["login", "-u", "apiuser", "-p", "apipass", &registry.host()],
    );
    ok(&docker, &service, &["tag", "busybox", &image]);
    let pushed = ok(&docker, &service, &["push", &image]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    // skopeo reads back what the API pushed.
    let target = format!("docker://{image}");
    let out = keel.netns.within(|| {
        Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--creds",
                "apiuser:apipass",
                &target,
            ])
            .output()
            .expect("run skopeo")
    });
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    ok(&docker, &service, &["rmi", &image]);
    let pulled = ok(&docker, &service, &["pull", &image]);
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    assert!(
        ok(
            &docker,
            &service,
            &["images", "--format", "{{.Repository}}:{{.Tag}}"]
        )
        .contains(&image)
    );
    let again = ok(&docker, &service, &["pull", &image]);
    assert!(again.contains("Image is up to date"), "{again}");
    // docker-py's images.push and images.pull, with its auth_config
    // (X-Registry-Auth).
    let script = keel.temp.path().join("push_pull.py");
    std::fs::write(
        &script,
        r#"
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
auth = {"username": "apiuser", "password": "apipass"}
repo = sys.argv[2]
c.images.get("busybox").tag(repo, "py")
out = c.images.push(repo, tag="py", auth_config=auth)
assert "digest: sha256:" in out, out
c.images.remove(repo + ":py")
image = c.images.pull(repo, tag="py", auth_config=auth)
assert repo + ":py" in image.tags, image.tags
print("ok")
"#,
    )
    .unwrap();
    let repo = format!("{}/keel/pybox", registry.host());
    let out = client(
        Path::new("/usr/bin/python3"),
        &service,
        &[script.to_str().unwrap(), &service.host(), &repo],
        None,
    );
    assert!(
        out.status.success() && stdout(&out).starts_with("ok"),
        "docker-py push/pull: {}{}",
        stdout(&out),
        stderr(&out)
    );
    // A build that pulls its base from the registry, with the client's
    // login (X-Registry-Config).
    ok(&docker, &service, &["rmi", &image]);
    let context = keel.temp.path().join("pulling-build");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {image}\nRUN echo pulled > /p\n"),
    )
    .unwrap();
    let built = client(
        &docker,
        &service,
        &[
            "build",
            "--pull",
            "-t",
            "frombase",
            context.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        built.status.success(),
        "{}{}",
        stdout(&built),
        stderr(&built)
    );
    assert_eq!(
        ok(&docker, &service, &["run", "--rm", "frombase", "cat", "/p"]),
        "pulled\n"
    );
    // A name no registry has: docker's error, the pull's words.
    let missing = client(
        &docker,
        &service,
        &["pull", &format!("{}/keel/nothing:1", registry.host())],
        None,
    );
    assert!(!missing.status.success());
}

#[test]
fn bad_requests_get_docker_errors() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let (code, body) = service.request("GET", "/_ping", None);
    assert_eq!((code, body.as_str()), (200, "OK"));
    // Versions: the prefix, too new, too old.
    assert_eq!(service.request("GET", "/v1.24/version", None).0, 200);
    let (code, body) = service.request("GET", "/v1.99/version", None);
    assert_eq!(code, 400);
    assert!(body.contains("client version 1.99 is too new"), "{body}");
    let (code, body) = service.request("GET", "/v1.12/version", None);
    assert_eq!(code, 400);
    assert!(body.contains("too old"), "{body}");
    // Malformed JSON, a missing image, a conflict, a body too large.
    let (code, body) = service.request("POST", "/containers/create", Some(b"{\"Image\": "));
    assert_eq!(code, 400);
    assert!(body.contains("\"message\""), "{body}");
    let (code, body) = service.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"nothing-here"}"#),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("No such image"), "{body}");
    let (code, body) = service.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"busybox","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("--restart and --rm"), "{body}");
    let big = vec![b' '; 5 << 20];
    let (code, _) = service.request("POST", "/containers/create", Some(&big));
    assert_eq!(code, 413);
    let (code, body) = service.request("GET", "/containers/nope/json", None);
    assert_eq!(code, 404);
    assert!(body.contains("No such container: nope"), "{body}");
    // Swarm is not keel's.
    let (code, body) = service.request("GET", "/swarm", None);
    assert_eq!(code, 503);
    assert!(body.contains("not part of a swarm"), "{body}");
    // Booleans in docker's spellings; nothing was left half-made.
    for all in ["1", "true", "True"] {
        let (code, body) = service.request("GET", &format!("/containers/json?all={all}"), None);
        assert_eq!((code, body.trim()), (200, "[]"));
    }
    // 304 for a start of a running container and a stop of a stopped one.
    let (_, body) = service.request(
        "POST",
        "/containers/create?name=cc",
        Some(br#"{"Image":"busybox","Cmd":["sleep","100"]}"#),
    );
    assert!(body.contains("\"Id\""), "{body}");
    assert_eq!(service.request("POST", "/containers/cc/start", None).0, 204);
    assert_eq!(service.request("POST", "/containers/cc/start", None).0, 304);
    assert_eq!(service.request("DELETE", "/containers/cc", None).0, 409);
    assert_eq!(service.request("POST", "/containers/cc/kill", None).0, 204);
    keel.eventually("cc exited", || {
        keel.inspect("cc", "{{.State.Status}}") == "exited"
    });
    assert_eq!(service.request("POST", "/containers/cc/stop", None).0, 304);
    assert_eq!(service.request("DELETE", "/containers/cc?v=1", None).0, 204);
    // The socket is docker's: 0660.
    let mode = std::fs::metadata(&service.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn clients_that_leave_and_clients_that_crowd() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.2; done",
    ]);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", service.daemon.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    // Followers of logs and attachers that disconnect mid-stream.
    let requests = [
        "GET /containers/talker/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: k\r\n\r\n",
        "POST /containers/talker/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n",
    ];
    for request in requests {
        for _ in 0..5 {
            let mut s = UnixStream::connect(&service.socket).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut buffer = [0u8; 512];
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let n = s.read(&mut buffer).unwrap();
            assert!(n > 0);
            drop(s);
        }
    }
    assert_eq!(keel.inspect("talker", "{{.State.Status}}"), "running");
    // The service lets go of what the clients held (ticks reveal a
    // closed connection within a second).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fds() > before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(fds() <= before + 2, "fds: {before} before, {} after", fds());
    // A hundred clients at once.
    let socket = service.socket.clone();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let path = if i % 2 == 0 {
                    "/containers/json"
                } else {
                    "/info"
                };
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                answer.starts_with("HTTP/1.1 200")
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
    // Monitors the service started and that ended are reaped, not left as
    // its zombies.
    let (code, _) = service.request(
        "POST",
        "/containers/create?name=brief",
        Some(br#"{"Image":"busybox","Cmd":["true"]}"#),
    );
    assert_eq!(code, 201);
    assert_eq!(
        service.request("POST", "/containers/brief/start", None).0,
        204
    );
    keel.eventually("brief exited", || {
        keel.inspect("brief", "{{.State.Status}}") == "exited"
    });
    keel.ok(&["rm", "-f", "talker", "brief"]);
    let zombies = || {
        let pid = service.daemon.pid().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest)
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.as_str())
            })
            .count()
    };
    keel.eventually("no zombie children of the service", || zombies() == 0);
    // A log followed through the service does not keep it from stopping.
    let mut follower = UnixStream::connect(&service.socket).unwrap();
    keel.ok(&["run", "-d", "--name", "quiet", "busybox", "sleep", "1000"]);
    write!(
        follower,
        "GET /containers/quiet/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: k\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = nix::unistd::Pid::from_raw(service.daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Path::new(&format!("/proc/{}", service.daemon.pid())).exists()
        && std::fs::read_to_string(format!("/proc/{}/stat", service.daemon.pid()))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the service did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(keel.inspect("quiet", "{{.State.Status}}"), "running");
    keel.ok(&["rm", "-f", "quiet"]);
}

#[test]
fn the_service_exits_when_idle_and_refuses_tcp_without_tls() {
    let keel = Keel::new();
    let socket = keel.temp.path().join("idle.sock");
    let mut child = keel
        .command(&[
            "system",
            "service",
            "--listen",
            &format!("unix://{}", socket.display()),
            "--time",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not exit when idle"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    assert!(!socket.exists(), "the socket was left behind");
    let out = keel.run(&["system", "service", "--listen", "tcp://127.0.0.1:2376"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("without TLS"), "{}", stderr(&out));
}

/// openssl, as docker's docs make a CA, a server and a client certificate.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (scripts/setup installs it)");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=keel test CA",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{who}-key.pem"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ]);
    }
}

#[test]
fn tcp_needs_a_client_certificate_the_ca_signed() {
    let keel = Keel::new();
    let certs = keel.temp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certificates(&certs);
    let port = 23760 + (std::process::id() % 200) as u16;
    let listen = format!("tcp://127.0.0.1:{port}");
    let file = |name: &str| certs.join(name).display().to_string();
    let mut command = keel.command(&[
        "system",
        "service",
        "--listen",
        &listen,
        "--time",
        "0",
        "--tlscert",
        &file("server.pem"),
        "--tlskey",
        &file("server-key.pem"),
        "--tlscacert",
        &file("ca.pem"),
    ]);
    command.env("KEEL_LOG", "debug");
    let mut daemon = Daemon::spawn(
        "keel system service (tls)",
        command,
        keel.temp.path().join("tls.log"),
        keel.temp.path().to_path_buf(),
    );
    let probe = |with_cert: bool| {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "10", "--cacert", &file("ca.pem")]);
        if with_cert {
            curl.args([
                "--cert",
                &file("client.pem"),
                "--key",
                &file("client-key.pem"),
            ]);
        }
        curl.arg(format!("https://127.0.0.1:{port}/_ping"));
        keel.netns.enter(&mut curl);
        curl.output().expect("run curl")
    };
    daemon.wait_until("serving TLS", Duration::from_secs(20), || {
        probe(true).status.success()
    });
    let ok = probe(true);
    assert_eq!(stdout(&ok), "OK");
    // Without a client certificate the handshake fails.
    let refused = probe(false);
    assert!(
        !refused.status.success(),
        "served without a client certificate: {}",
        stdout(&refused)
    );
    // docker's own --tlsverify.
    let mut docker = Command::new("/usr/bin/docker");
    docker
        .args([
            "--tlsverify",
            "--tlscacert",
            &file("ca.pem"),
            "--tlscert",
            &file("client.pem"),
            "--tlskey",
            &file("client-key.pem"),
        ])
        .args([
            "-H",
            &format!("tcp://127.0.0.1:{port}"),
            "version",
            "--format",
            "{{.Server.APIVersion}}",
        ])
        .env("DOCKER_CONFIG", keel.temp.path().join("docker-config"));
    keel.netns.enter(&mut docker);
    let out = keel_testutil::output_via_files(&mut docker, Duration::from_secs(60)).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1.47");
    daemon.stop();
}

#[test]
fn the_detach_keys_leave_the_container_running() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let (code, body) = service.request(
        "POST",
        "/containers/create?name=tty1",
        Some(br#"{"Image":"busybox","Cmd":["sh"],"Tty":true,"OpenStdin":true}"#),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        service.request("POST", "/containers/tty1/start", None).0,
        204
    );
    let mut s = UnixStream::connect(&service.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "POST /containers/tty1/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut head = [0u8; 512];
    let n = s.read(&mut head).unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 101"));
    s.write_all(b"echo marker-$((6*7))\n").unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("marker-42") && Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("marker-42"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    // ctrl-x: the service ends the session; the shell runs on.
    s.write_all(&[0x18]).unwrap();
    let mut rest = Vec::new();
    let ended = s.read_to_end(&mut rest);
    assert!(
        ended.is_ok(),
        "the session did not end at the detach keys: {ended:?}"
    );
    assert_eq!(keel.inspect("tty1", "{{.State.Status}}"), "running");
    keel.ok(&["rm", "-f", "tty1"]);
}

/// A project `keel compose` brought up is the docker tooling's project too:
/// docker's CLI and Debian's docker-compose, on keel's API socket, list it
/// by docker compose's labels, and docker-compose takes it down.
#[test]
fn a_keel_compose_project_is_the_docker_tools_project() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let project = compose_project(
        &keel,
        "mixed",
        "docker-compose.yml",
        "version: \"3.8\"\nservices:\n  web:\n    image: busybox\n    command: [\"sleep\", \"1000\"]\n  db:\n    image: busybox\n    command: [\"sleep\", \"1000\"]\n",
    );
    keel_compose(&keel, &project, &["up", "-d"]);

    let docker = docker_clients().remove(0);
    let names = ok(
        &docker,
        &service,
        &[
            "ps",
            "--filter",
            "label=com.docker.compose.project=mixed",
            "--format",
            "{{.Names}} {{.Label \"com.docker.compose.service\"}}",
        ],
    );
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, vec!["mixed-db-1 db", "mixed-web-1 web"]);

    let compose = Path::new("/usr/bin/docker-compose");
    let run = |args: &[&str]| client(compose, &service, args, Some(&project));
    let ps = run(&["ps"]);
    let text = stdout(&ps);
    assert!(ps.status.success(), "{}", stderr(&ps));
    assert!(
        text.contains("mixed-web-1") && text.contains("mixed-db-1"),
        "{text}"
    );
    assert_eq!(text.matches(" Up ").count(), 2, "{text}");
    let down = run(&["down"]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    assert_eq!(keel.ok(&["ps", "-aq"]).trim(), "");
    assert!(!keel.ok(&["network", "ls"]).contains("mixed_default"));
}

#[test]
fn docker_runs_a_micro_vm_through_keel() {
    let keel = Keel::new();
    let service = Service::start(&keel, &[]);
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    for docker in docker_clients() {
        let out = client(
            &docker,
            &service,
            &[
                "run",
                "--rm",
                "--isolation",
                "vm",
                "busybox",
                "sh",
                "-c",
                "uname -r; exit 4",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        let guest = stdout(&out);
        assert!(
            guest.trim().starts_with("6."),
            "{}: {guest}",
            docker.display()
        );
        assert_ne!(guest.trim(), host_kernel.trim());
    }
    // A compose service with `isolation: vm`, through keel compose.
    let project = compose_project(
        &keel,
        "vmproject",
        "compose.yaml",
        "services:\n  guest:\n    image: busybox\n    isolation: vm\n    command: [\"sleep\", \"1000\"]\n",
    );
    keel_compose(&keel, &project, &["up", "-d"]);
    let docker = docker_clients().remove(0);
    let isolation = ok(
        &docker,
        &service,
        &[
            "inspect",
            "-f",
            "{{.HostConfig.Isolation}}",
            "vmproject-guest-1",
        ],
    );
    assert_eq!(isolation.trim(), "vm");
    keel_compose(&keel, &project, &["down", "-t", "1"]);
}

/// A directory `name` under the test's temp dir holding `file`.
fn compose_project(keel: &Keel, name: &str, file: &str, text: &str) -> PathBuf {
    let project = keel.temp.path().join(name);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join(file), text).unwrap();
    project
}

/// `keel compose ARGS` in `project`, which must succeed.
fn keel_compose(keel: &Keel, project: &Path, args: &[&str]) {
    let mut command = keel.command(&[&["compose"], args].concat());
    command.current_dir(project);
    let out = keel_testutil::output_via_files(&mut command, Duration::from_secs(120)).unwrap();
    assert!(
        out.status.success(),
        "keel compose {args:?}: {}",
        stderr(&out)
    );
}
