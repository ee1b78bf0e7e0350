//! `keel pull` killed in the middle of a layer, then run again: the second
//! pull asks the registry only for the rest (a `Range` from where the
//! partial blob ends) and the image comes out whole and verified. A proxy
//! in front of Debian's docker-registry slows the first pull down so it can
//! be killed mid-way, and logs what each pull asked for.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_testutil::peers::Registry;
use keel_testutil::proxy::{Faults, FaultyProxy};
use keel_testutil::{TempRoot, require_root};

fn keel(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.env("KEEL_ROOT", root);
    command
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out: Output = keel(root).args(args).output().expect("run keel");
    assert!(
        out.status.success(),
        "keel {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A rootfs tarball: busybox's files plus 16 MiB that do not compress.
fn big_rootfs(dir: &Path) -> PathBuf {
    let busybox = fs::read(keel_testutil::HOST_BUSYBOX).expect("read busybox-static");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..16 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in [
        ("bin/busybox", &busybox[..], 0o755),
        ("data/noise", &noise[..], 0o644),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        builder
            .append_data(&mut header, path, data)
            .expect("append to the rootfs tar");
    }
    let path = dir.join("rootfs.tar");
    fs::write(&path, builder.into_inner().expect("finish the tar")).expect("write rootfs.tar");
    path
}

fn partials(root: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(root.join("content/ingest")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect()
}

#[test]
fn a_killed_pull_resumes_where_it_stopped() {
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);

    // The image: made by `keel import`, put in the registry by `keel push`.
    let source = temp.subdir("source");
    let name = format!("{}/keel-test/big:1", registry.host());
    ok(
        &source,
        &[
            "import",
            big_rootfs(&temp.subdir("rootfs")).to_str().unwrap(),
            &name,
        ],
    );
    ok(&source, &["push", "-q", &name]);

    // Through a proxy that serves blobs at 2 MB/s.
    let proxy = FaultyProxy::start(
        registry.port,
        Faults {
            target: "/blobs/".into(),
            bytes_per_second: Some(2_000_000),
            ..Faults::default()
        },
    );
    let via_proxy = format!("{}/keel-test/big:1", proxy.host());
    let root = temp.subdir("root");
    let mut first = keel(&root)
        .args(["pull", &via_proxy])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keel pull");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if partials(&root).iter().any(|(_, len)| *len >= 3 << 20) {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the throttled pull ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no partial blob grew to 3 MiB");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no chance to clean up or to flush anything.
    first.kill().expect("kill keel pull");
    first.wait().unwrap();

    let left = partials(&root);
    assert_eq!(left.len(), 1, "one partial layer: {left:?}");
    let (partial, offset) = left[0].clone();
    let hex = partial
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".partial")
        .to_string();
    // Nothing of it is visible: no layer blob, no image.
    assert!(!root.join("content/blobs/sha256").join(&hex).exists());
    assert_eq!(ok(&root, &["images", "-q"]), "");

    // Again, at full speed: only the rest of the layer is asked for.
    proxy.set(Faults::default());
    let before = proxy.gets_of(&hex).len();
    let out = ok(&root, &["pull", &via_proxy]);
    assert!(out.contains("Status: Downloaded newer image for "), "{out}");
    let gets = proxy.gets_of(&hex)[before..].to_vec();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].range, Some(format!("bytes={offset}-")), "{gets:?}");
    let size = fs::metadata(root.join("content/blobs/sha256").join(&hex))
        .expect("the layer is stored")
        .len();
    assert_eq!(gets[0].body_bytes, size - offset);
    assert!(partials(&root).is_empty(), "{:?}", partials(&root));

    // The same image as the one pushed, unpacked whole.
    let id = |root: &Path| ok(root, &["images", "-q", "--no-trunc"]);
    assert_eq!(id(&root), id(&source));
    let noise = fs::read_dir(root.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("data/noise"))
        .find(|p| p.exists())
        .expect("data/noise in a snapshot");
    assert_eq!(fs::metadata(noise).unwrap().len(), 16 << 20);
}
