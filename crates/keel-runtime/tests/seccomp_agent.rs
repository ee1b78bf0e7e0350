//! A seccomp agent (`linux.seccomp.listenerPath`) gets the notify fd of the
//! container with the container-process-state JSON, as runc sends it.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use keel_testutil::{BusyboxBundle, Runtime, TempRoot, require_root, runtime_bin};
use serde_json::json;

#[test]
fn listener_receives_notify_fd_and_container_state() {
    require_root();
    let temp = TempRoot::new();
    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    let _cgroup = bundle.cgroup_guard();
    let runtime = Runtime::with_temp_root(runtime_bin(env!("CARGO_BIN_EXE_keel-runtime")), &temp);
    let id = bundle.unique().to_string();
    let _container = runtime.guard(id.clone());
    let socket_path = temp.path().join("agent.sock");
    let listener = UnixListener::bind(&socket_path).unwrap();

    let mut config = bundle.config_json();
    config["process"]["args"] = json!(["sh", "-c", "mkdir /tmp/x; echo status=$?"]);
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": socket_path,
        "listenerMetadata": "keel-test-metadata",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    bundle.write_config(&config);

    // The agent: accept, take the fd and the JSON, then close the fd
    // without answering, which makes the notified syscall fail (ENOSYS).
    let agent = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut cmsg = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(received) = c {
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds.len())
    });

    let bundle_dir = bundle.dir().to_str().unwrap().to_string();
    let out = runtime.run(["run", "--bundle", &bundle_dir, &id]);
    let (payload, fd_count) = agent.join().unwrap();
    let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or_else(|e| {
        panic!(
            "agent got {payload:?} ({e}); runtime said: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(fd_count, 1, "exactly one notify fd");
    assert_eq!(payload["fds"], json!(["seccompFd"]));
    assert_eq!(payload["metadata"], "keel-test-metadata");
    assert!(payload["pid"].as_i64().unwrap() > 1, "{payload}");
    assert_eq!(payload["state"]["id"], id.as_str());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("status=1"),
        "mkdir should fail once the agent is gone: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
