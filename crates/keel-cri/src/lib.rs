//! keel's CRI client: what kubelet asks of a node's container runtime,
//! spoken to containerd's CRI plugin — Debian's containerd 1.6, started by
//! [`Node`] with all its state in a test's temp dir and inside a network
//! namespace of the test's — whose runtime handlers are keel-runtime
//! (`keel`) and runc (`runc`), both through containerd's runc shim
//! (`io.containerd.runc.v2`), so that one test runs the same pod on each and
//! a difference shows at once.
//!
//! Pods are networked by Debian's CNI plugins (bridge, host-local,
//! loopback, portmap) on a bridge in the test's namespace; the host-local
//! addresses are kept in the temp dir. The images (busybox, and a pause
//! image whose `/pause` is keel-init's pause mode) are made offline and
//! imported with `ctr`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use keel_testutil::peers::{self, Daemon};
use keel_testutil::{CgroupGuard, NetnsGuard, TempRoot};
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;
pub use tonic::{Code, Status};

/// How long one CRI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);
/// The pause image the node's sandboxes run.
pub const PAUSE_IMAGE: &str = "docker.io/keel-test/pause:1";
/// The app image.
pub const BUSYBOX_IMAGE: &str = peers::BUSYBOX_IMAGE;
/// The runtime handlers every test runs: keel-runtime, and runc beside it.
/// (The node also has `crun`, for bench/cri: crun refuses this machine's
/// hybrid cgroup layout unless a v1 hugetlb hierarchy is mounted.)
pub const HANDLERS: [&str; 2] = ["keel", "runc"];
/// The pods' network (the bridge `kcri0` in the node's namespace).
pub const POD_SUBNET: &str = "10.89.0.0/24";

/// A CRI connection (blocking calls on a runtime of its own).
pub struct Client {
    rt: tokio::runtime::Runtime,
    runtime: cri::runtime_service_client::RuntimeServiceClient<Channel>,
    images: cri::image_service_client::ImageServiceClient<Channel>,
}

macro_rules! rpc {
    ($self:ident, $service:ident, $method:ident, $request:expr) => {{
        let mut service = $self.$service.clone();
        let request = $request;
        $self.block(async move { service.$method(request).await })
    }};
}

impl Client {
    /// Connects to the CRI socket at `socket`.
    pub fn connect(socket: &Path) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a tokio runtime: {e}"))?;
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::from_static("http://cri.invalid")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            })
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        Ok(Client {
            rt,
            runtime: cri::runtime_service_client::RuntimeServiceClient::new(channel.clone()),
            images: cri::image_service_client::ImageServiceClient::new(channel),
        })
    }

    fn block<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(answer) => answer.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer in {CALL_TIMEOUT:?}"
                ))),
            }
        })
    }

    pub fn version(&self) -> Result<cri::VersionResponse, Status> {
        rpc!(self, runtime, version, cri::VersionRequest::default())
    }

    pub fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> Result<String, Status> {
        rpc!(
            self,
            runtime,
            run_pod_sandbox,
            cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.to_string(),
            }
        )
        .map(|r| r.pod_sandbox_id)
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), Status> {
        rpc!(
            self,
            runtime,
            stop_pod_sandbox,
            cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }
        )
        .map(drop)
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), Status> {
        rpc!(
            self,
            runtime,
            remove_pod_sandbox,
            cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }
        )
        .map(drop)
    }

    pub fn pod_status(&self, id: &str) -> Result<cri::PodSandboxStatus, Status> {
        rpc!(
            self,
            runtime,
            pod_sandbox_status,
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            }
        )
        .and_then(|r| r.status.ok_or_else(|| Status::internal("no status")))
    }

    /// The pid of a pod's sandbox (its pause process), from the verbose
    /// status containerd gives.
    pub fn pod_pid(&self, id: &str) -> Result<i32, Status> {
        let status = rpc!(
            self,
            runtime,
            pod_sandbox_status,
            cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            }
        )?;
        status
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info["pid"].as_i64())
            .map(|pid| pid as i32)
            .ok_or_else(|| Status::internal("no pid in the sandbox's verbose status"))
    }

    pub fn list_pods(&self) -> Result<Vec<cri::PodSandbox>, Status> {
        rpc!(
            self,
            runtime,
            list_pod_sandbox,
            cri::ListPodSandboxRequest::default()
        )
        .map(|r| r.items)
    }

    pub fn create_container(
        &self,
        pod: &str,
        config: &cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<String, Status> {
        rpc!(
            self,
            runtime,
            create_container,
            cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox.clone()),
            }
        )
        .map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), Status> {
        rpc!(
            self,
            runtime,
            start_container,
            cri::StartContainerRequest {
                container_id: id.to_string(),
            }
        )
        .map(drop)
    }

    /// Stops it: SIGTERM, SIGKILL after `grace` seconds.
    pub fn stop_container(&self, id: &str, grace: i64) -> Result<(), Status> {
        rpc!(
            self,
            runtime,
            stop_container,
            cri::StopContainerRequest {
                container_id: id.to_string(),
                timeout: grace,
            }
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), Status> {
        rpc!(
            self,
            runtime,
            remove_container,
            cri::RemoveContainerRequest {
                container_id: id.to_string(),
            }
        )
        .map(drop)
    }

    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, Status> {
        rpc!(
            self,
            runtime,
            container_status,
            cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            }
        )
        .and_then(|r| r.status.ok_or_else(|| Status::internal("no status")))
    }

    pub fn list_containers(&self) -> Result<Vec<cri::Container>, Status> {
        rpc!(
            self,
            runtime,
            list_containers,
            cri::ListContainersRequest::default()
        )
        .map(|r| r.containers)
    }

    /// Runs `cmd` in the container; its output and exit code.
    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<cri::ExecSyncResponse, Status> {
        rpc!(
            self,
            runtime,
            exec_sync,
            cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 60,
            }
        )
    }

    /// Asks for a streaming exec; the URL to speak to.
    pub fn exec(&self, request: cri::ExecRequest) -> Result<String, Status> {
        rpc!(self, runtime, exec, request).map(|r| r.url)
    }

    /// Asks for a streaming attach; the URL to speak to.
    pub fn attach(&self, request: cri::AttachRequest) -> Result<String, Status> {
        rpc!(self, runtime, attach, request).map(|r| r.url)
    }

    pub fn update_resources(
        &self,
        id: &str,
        linux: cri::LinuxContainerResources,
    ) -> Result<(), Status> {
        rpc!(
            self,
            runtime,
            update_container_resources,
            cri::UpdateContainerResourcesRequest {
                container_id: id.to_string(),
                linux: Some(linux),
                ..Default::default()
            }
        )
        .map(drop)
    }

    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats, Status> {
        rpc!(
            self,
            runtime,
            container_stats,
            cri::ContainerStatsRequest {
                container_id: id.to_string(),
            }
        )
        .and_then(|r| r.stats.ok_or_else(|| Status::internal("no stats")))
    }

    pub fn list_container_stats(&self) -> Result<Vec<cri::ContainerStats>, Status> {
        rpc!(
            self,
            runtime,
            list_container_stats,
            cri::ListContainerStatsRequest::default()
        )
        .map(|r| r.stats)
    }

    pub fn image_present(&self, image: &str) -> Result<bool, Status> {
        rpc!(
            self,
            images,
            image_status,
            cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            }
        )
        .map(|r| r.image.is_some())
    }
}

/// A Kubernetes node as kubelet sees it: containerd with its CRI plugin,
/// CNI, the images, and a [`Client`]. Everything is the test's: its temp
/// dir, its network namespace, its cgroup parent; dropped in that order
/// after containerd and what it started.
pub struct Node {
    dir: PathBuf,
    pub client: Client,
    daemon: Option<Daemon>,
    pub cgroup_parent: String,
    // Dropped after the daemon (fields drop in order): the cgroups, then
    // the namespace.
    _cgroup: CgroupGuard,
    pub netns: NetnsGuard,
}

impl Node {
    /// containerd in `<temp>/node`, inside a new network namespace, its
    /// `keel` handler running `keel_runtime`; waits until the CRI answers
    /// and both images are there.
    pub fn start(temp: &TempRoot, keel_runtime: &Path) -> Node {
        let dir = temp.path().join("node");
        std::fs::create_dir_all(dir.join("cni")).expect("make the node's dir");
        let netns = NetnsGuard::new();
        let lo = netns.run("ip", &["link", "set", "lo", "up"]);
        assert!(lo.status.success(), "{}", peers::describe(&lo));
        let cgroup_parent = format!("/{}", keel_testutil::unique_name());
        std::fs::write(dir.join("config.toml"), config(&dir, keel_runtime))
            .expect("write containerd's config");
        std::fs::write(dir.join("cni/10-keel-test.conflist"), cni_config(&dir))
            .expect("write the CNI config");
        let (daemon, client) = launch(&dir, &netns);
        let node = Node {
            client,
            daemon: Some(daemon),
            _cgroup: CgroupGuard(PathBuf::from(&cgroup_parent)),
            cgroup_parent,
            netns,
            dir,
        };
        for archive in [
            peers::busybox_image_archive(&node.dir),
            pause_image_archive(&node.dir),
        ] {
            let out = node.ctr(&["-n", "k8s.io", "images", "import"], &archive);
            assert!(out.status.success(), "{}", peers::describe(&out));
        }
        node
    }

    /// Stops containerd (its shims and containers go on) and starts it
    /// again, as a node's upgrade or a crash and restart does.
    pub fn restart(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
            // Dropping it would kill what it started: keep the shims.
            std::mem::forget(daemon);
        }
        let (daemon, client) = launch(&self.dir, &self.netns);
        self.client = client;
        self.daemon = Some(daemon);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's log, its last lines.
    pub fn log_tail(&self) -> String {
        peers::tail(&self.dir.join("containerd.log"), 60)
    }

    /// `ctr ARGS FILE` against this containerd.
    pub fn ctr(&self, args: &[&str], file: &Path) -> Output {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .arg(file);
        peers::run(&mut command)
    }

    /// A pod's config as kubelet writes one: metadata, hostname, its log
    /// directory, DNS, a cgroup parent under the node's.
    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        let logs = self.dir.join("pods").join(name);
        std::fs::create_dir_all(&logs).expect("make the pod's log dir");
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: logs.display().to_string(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.89.0.53".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod-{name}", self.cgroup_parent),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// An app container's config: busybox running `command`, its log in
    /// the pod's log directory.
    pub fn container_config(&self, name: &str, command: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: BUSYBOX_IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources::default()),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// Polls `check` until it holds (panics with the log after 60 s).
    pub fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !check() {
            assert!(
                Instant::now() < deadline,
                "{what}: not after 60 s; containerd:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Pods first, as kubelet would: their networks and shims go.
        if let Ok(pods) = self.client.list_pods() {
            for pod in pods {
                let _ = self.client.stop_pod(&pod.id);
                let _ = self.client.remove_pod(&pod.id);
            }
        }
        self.daemon.take();
        let killed = peers::kill_processes_mentioning(&self.dir.to_string_lossy());
        if !killed.is_empty() {
            eprintln!("keel-cri: killed what the node left running: {killed:#?}");
        }
    }
}

/// The namespaces kubelet asks for by default: the pod's network and IPC,
/// a PID namespace per container (`shareProcessNamespace: false`).
pub fn kubelet_namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Starts containerd in `dir` inside `netns`; waits until its CRI answers.
fn launch(dir: &Path, netns: &NetnsGuard) -> (Daemon, Client) {
    let mut command = Command::new("containerd");
    command.arg("--config").arg(dir.join("config.toml"));
    netns.enter(&mut command);
    let mut daemon = Daemon::spawn(
        "containerd",
        command,
        dir.join("containerd.log"),
        dir.to_path_buf(),
    );
    let socket = dir.join("containerd.sock");
    let start = Instant::now();
    loop {
        daemon.wait_until("listening", peers::START_TIMEOUT, || socket.exists());
        if let Ok(client) = Client::connect(&socket)
            && client.version().is_ok()
        {
            return (daemon, client);
        }
        if start.elapsed() > peers::START_TIMEOUT {
            panic!(
                "containerd's CRI did not answer in {:?}:\n{}",
                peers::START_TIMEOUT,
                daemon.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(dir: &Path, keel_runtime: &Path) -> String {
    let runtime = |name: &str, binary: &str| {
        format!(
            r#"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]
        BinaryName = "{binary}"
        Root = "{dir}/{name}-state"
        SystemdCgroup = false
"#,
            dir = dir.display()
        )
    };
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{pause}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    disable_apparmor = true
    enable_selinux = false
    # No CAP_SYS_RESOURCE in this machine's bounding set: a sandbox's -998
    # (or any score below containerd's own) cannot be written, by runc or
    # keel-runtime; containerd clamps it instead.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "keel"
{keel}{runc}
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{dir}/cni"
      max_conf_num = 1
"#,
        dir = dir.display(),
        pause = PAUSE_IMAGE,
        keel = runtime("keel", &keel_runtime.display().to_string()),
        runc = runtime("runc", "/usr/sbin/runc") + &runtime("crun", "/usr/bin/crun"),
    )
}

fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "keel-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "kcri0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("ipam").display().to_string(),
                    "ranges": [[{ "subnet": POD_SUBNET }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
    .to_string()
}

/// An image archive of the pause image: keel-init (static), as `/pause`,
/// which in that name sleeps, reaps and exits on SIGTERM or SIGINT.
pub fn pause_image_archive(dir: &Path) -> PathBuf {
    let init = keel_testutil::static_helper("keel-init")
        .expect("the static keel-init (./scripts/setup builds it)");
    let layer = dir.join("pause-layer");
    std::fs::create_dir_all(&layer).expect("make the pause layer");
    std::fs::copy(&init, layer.join("pause")).expect("copy keel-init");
    peers::image_archive(
        dir,
        "pause",
        PAUSE_IMAGE,
        &layer,
        serde_json::json!({ "Entrypoint": ["/pause"], "WorkingDir": "/" }),
    )
    .expect("make the pause image archive")
}

/// The streaming URL containerd gives (`http://…`) as a websocket's.
pub fn websocket_url(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        None => url.to_string(),
    }
}

/// What a streaming exec or attach gave back.
#[derive(Debug, Default)]
pub struct Streamed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The error channel's status (kubelet's `metav1.Status` as JSON), if
    /// one came: `Success`, or `Failure` with the exit code in its details.
    pub status: Option<serde_json::Value>,
}

impl Streamed {
    /// The exit code the status carries (0 for `Success`).
    pub fn exit_code(&self) -> Option<i32> {
        let status = self.status.as_ref()?;
        if status["status"] == "Success" {
            return Some(0);
        }
        status["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Speaks kubectl's streaming protocol to a CRI streaming URL (containerd's
/// streaming server, kubelet's `remotecommand` over a websocket with the
/// `v4.channel.k8s.io` subprotocol: each message is a channel byte — 0
/// stdin, 1 stdout, 2 stderr, 3 error — then data). Sends `stdin` first,
/// then reads until the server closes. Call it inside the node's network
/// namespace (the server listens on its loopback).
pub fn stream(url: &str, stdin: Option<&[u8]>) -> Result<Streamed, String> {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest;
    let mut request = websocket_url(url)
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let address = {
        let uri = request.uri();
        format!(
            "{}:{}",
            uri.host().unwrap_or("127.0.0.1"),
            uri.port_u16().unwrap_or(80)
        )
    };
    let tcp = std::net::TcpStream::connect(&address).map_err(|e| format!("{address}: {e}"))?;
    tcp.set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let (mut socket, response) =
        tungstenite::client::client(request, tcp).map_err(|e| format!("{url}: {e}"))?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if protocol != "v4.channel.k8s.io" {
        return Err(format!("{url}: the server chose protocol {protocol:?}"));
    }
    if let Some(input) = stdin {
        let mut message = vec![0u8];
        message.extend_from_slice(input);
        socket
            .send(Message::binary(message))
            .map_err(|e| format!("send stdin: {e}"))?;
    }
    let mut streamed = Streamed::default();
    loop {
        match socket.read() {
            Ok(Message::Binary(data)) => match data.split_first() {
                Some((1, rest)) => streamed.stdout.extend_from_slice(rest),
                Some((2, rest)) => streamed.stderr.extend_from_slice(rest),
                Some((3, rest)) if !rest.is_empty() => {
                    streamed.status = serde_json::from_slice(rest).ok();
                }
                _ => {}
            },
            Ok(Message::Close(_))
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(streamed);
            }
            Ok(_) => {}
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return Ok(streamed),
            Err(e) => return Err(format!("read the stream: {e}")),
        }
    }
}
