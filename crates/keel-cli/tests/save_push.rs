//! `keel save` and `keel push` checked by the real peers: the archive goes
//! to `podman load`, `skopeo inspect` (as a docker archive and as an OCI
//! archive) and back to `keel load`; a pushed image is read back by skopeo
//! from Debian's docker-registry.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use keel_testutil::peers::{Podman, Registry, busybox_image_archive};
use keel_testutil::{TempRoot, require_root};
use serde_json::Value;

fn keel(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", root)
        .args(args)
        .output()
        .expect("run keel")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = keel(root, args);
    assert!(
        out.status.success(),
        "keel {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// One file of a tar archive, read by GNU tar.
fn tar_member(archive: &Path, member: &str) -> Value {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar {member}: {}", stderr(&out));
    json(&String::from_utf8_lossy(&out.stdout))
}

/// `keel image inspect`'s Id and the config's diff ids.
fn image_id(root: &Path, name: &str) -> String {
    let inspect = json(&ok(root, &["image", "inspect", name]));
    inspect[0]["Id"].as_str().unwrap().to_string()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Checks `archive` (one image, `id`) with skopeo both ways, podman and keel.
fn check_archive(temp: &TempRoot, archive: &Path, id: &str, name: &str, label: &str) {
    let path = archive.to_str().unwrap();
    let index = tar_member(archive, "index.json");
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let docker = tar_member(archive, "manifest.json");
    assert_eq!(docker.as_array().unwrap().len(), 1, "{docker}");
    assert_eq!(
        docker[0]["Config"],
        format!("blobs/sha256/{}", &id[7..]),
        "{docker}"
    );

    // skopeo reads it as an OCI archive: the manifest as stored, by digest.
    let oci = json(&skopeo(&["inspect", &format!("oci-archive:{path}")]));
    assert_eq!(oci["Digest"], manifest_digest.as_str(), "{oci}");
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{path}"),
    ]));
    assert_eq!(raw["config"]["digest"], id, "{raw}");
    let layers: Vec<String> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(strings(&oci["Layers"]), layers, "{oci}");
    let docker_layers: Vec<String> = strings(&docker[0]["Layers"])
        .iter()
        .map(|p| format!("sha256:{}", p.strip_prefix("blobs/sha256/").unwrap()))
        .collect();
    assert_eq!(docker_layers, layers, "{docker}");

    // ... and as a docker archive: same config, layers by diff id.
    let config = json(&skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{path}"),
    ]));
    let diff_ids = strings(&config["rootfs"]["diff_ids"]);
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{path}"),
    ]));
    assert_eq!(raw["config"]["digest"], id, "{raw}");
    let inspected = json(&skopeo(&["inspect", &format!("docker-archive:{path}")]));
    assert_eq!(strings(&inspected["Layers"]), diff_ids, "{inspected}");

    // Copying reads every layer (a gzipped one decompressed) against the
    // config's diff ids.
    let copied = temp.path().join(format!("copied-{label}"));
    skopeo(&[
        "copy",
        "--quiet",
        &format!("docker-archive:{path}"),
        &format!("oci:{}:x", copied.display()),
    ]);

    // podman loads it under its name with the same id.
    let podman = Podman::new(
        &temp.subdir(&format!("podman-{label}")),
        Path::new("/usr/sbin/runc"),
    );
    podman.podman_ok(["load", "-i", path]);
    let listed = podman.podman_ok([
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    let want = format!("{} {name}", &id[7..]);
    let want_prefixed = format!("sha256:{want}");
    assert!(
        listed.lines().any(|l| l == want || l == want_prefixed),
        "podman images: {listed} (want {want})"
    );

    // keel loads it back into an empty store: the same image.
    let again = temp.subdir(&format!("root-again-{label}"));
    let loaded = ok(&again, &["load", "-i", path]);
    assert!(loaded.contains("Loaded image"), "{loaded}");
    assert_eq!(image_id(&again, name), id);
}

#[test]
fn save_is_a_docker_archive_and_an_oci_layout() {
    require_root();
    let temp = TempRoot::new();
    let root = temp.subdir("root");
    let busybox = busybox_image_archive(&temp.subdir("archive"));
    ok(&root, &["load", "-i", busybox.to_str().unwrap()]);
    let id = image_id(&root, "keel-test/busybox");

    let out = temp.path().join("out.tar");
    assert_eq!(
        ok(
            &root,
            &["save", "-o", out.to_str().unwrap(), "keel-test/busybox"]
        ),
        ""
    );
    let docker = tar_member(&out, "manifest.json");
    assert_eq!(
        strings(&docker[0]["RepoTags"]),
        ["docker.io/keel-test/busybox:latest"]
    );
    let index = tar_member(&out, "index.json");
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(
        annotations["io.containerd.image.name"],
        "docker.io/keel-test/busybox:latest"
    );
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "latest");
    assert_eq!(
        tar_member(&out, "repositories"),
        serde_json::json!({"keel-test/busybox": {"latest": &id[7..]}})
    );
    assert_eq!(
        tar_member(&out, "oci-layout")["imageLayoutVersion"],
        "1.0.0"
    );
    check_archive(
        &temp,
        &out,
        &id,
        "docker.io/keel-test/busybox:latest",
        "one",
    );

    // To stdout when redirected: the same bytes.
    let piped = temp.path().join("piped.tar");
    let status = Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", &root)
        .args(["image", "save", "keel-test/busybox"])
        .stdout(fs::File::create(&piped).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(fs::read(&piped).unwrap() == fs::read(&out).unwrap());

    // Two names of one image: one docker entry with both tags, an index
    // entry per name; podman (through the docker archive, as the OCI
    // layout names two images) and keel both give the image both names.
    ok(&root, &["tag", "keel-test/busybox", "localhost/second:v2"]);
    let two = temp.path().join("two.tar");
    ok(
        &root,
        &[
            "save",
            "--output",
            two.to_str().unwrap(),
            "keel-test/busybox",
            "localhost/second:v2",
            &id[7..19],
        ],
    );
    let docker = tar_member(&two, "manifest.json");
    assert_eq!(docker.as_array().unwrap().len(), 1, "{docker}");
    assert_eq!(
        strings(&docker[0]["RepoTags"]),
        ["docker.io/keel-test/busybox:latest", "localhost/second:v2"]
    );
    assert_eq!(
        tar_member(&two, "index.json")["manifests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let podman = Podman::new(&temp.subdir("podman-two"), Path::new("/usr/sbin/runc"));
    podman.podman_ok(["load", "-i", two.to_str().unwrap()]);
    let listed = podman.podman_ok(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for name in ["docker.io/keel-test/busybox:latest", "localhost/second:v2"] {
        assert!(listed.lines().any(|l| l == name), "{listed}");
    }
    let again = temp.subdir("root-two");
    ok(&again, &["load", "-i", two.to_str().unwrap()]);
    assert_eq!(image_id(&again, "localhost/second:v2"), id);
    assert_eq!(image_id(&again, "keel-test/busybox"), id);

    // Not to a terminal (script(1) gives keel one).
    let script = Command::new("script")
        .args([
            "-qec",
            &format!("{} save keel-test/busybox", env!("CARGO_BIN_EXE_keel")),
            "/dev/null",
        ])
        .env("KEEL_ROOT", &root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(script.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&script.stdout)
            .contains("Cowardly refusing to save to a terminal. Use the -o flag or redirect"),
        "{}",
        String::from_utf8_lossy(&script.stdout)
    );

    // An unknown name fails before any file appears.
    let bad = temp.path().join("bad.tar");
    let out = keel(
        &root,
        &[
            "save",
            "-o",
            bad.to_str().unwrap(),
            "keel-test/busybox",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No such image: nope"),
        "{}",
        stderr(&out)
    );
    assert!(!bad.exists());
    let leftovers: Vec<_> = fs::read_dir(temp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("keel-save"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn push_then_skopeo_reads_it_back_and_save_keeps_gzip_layers() {
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let host = registry.host();
    let root = temp.subdir("root");
    let busybox = busybox_image_archive(&temp.subdir("archive"));
    ok(&root, &["load", "-i", busybox.to_str().unwrap()]);
    let id = image_id(&root, "keel-test/busybox");

    let name = format!("{host}/keel/pushed:1");
    ok(&root, &["tag", "keel-test/busybox", &name]);
    let out = ok(&root, &["push", &name]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("The push refers to repository [{host}/keel/pushed]"),
        "{out}"
    );
    assert!(out.contains(": Pushed"), "{out}");
    assert!(!out.contains("Layer already exists"), "{out}");
    let last = lines.last().unwrap();
    assert!(last.starts_with("1: digest: sha256:"), "{out}");
    let digest = last.split(' ').nth(2).unwrap().to_string();

    // A real client sees what keel pushed.
    let docker_ref = format!("docker://{name}");
    let inspected = json(&skopeo(&["inspect", "--tls-verify=false", &docker_ref]));
    assert_eq!(inspected["Digest"], digest.as_str(), "{inspected}");
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &docker_ref,
    ]));
    assert_eq!(raw["config"]["digest"], id.as_str(), "{raw}");
    let config = json(&ok(&root, &["image", "inspect", &name]));
    assert_eq!(config[0]["Id"], id.as_str());
    let layout = temp.path().join("copied");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &docker_ref,
        &format!("oci:{}:copied", layout.display()),
    ]);
    assert!(layout.join("index.json").is_file());

    // Again: everything is there.
    let again = ok(&root, &["push", &name]);
    assert!(again.contains(": Layer already exists"), "{again}");
    assert!(!again.contains(": Pushed"), "{again}");
    assert_eq!(again.lines().last(), Some(*last), "{again}");

    // Another repository of the same registry mounts the blobs.
    let other = format!("{host}/keel/other:2");
    ok(&root, &["tag", "keel-test/busybox", &other]);
    let mounted = ok(&root, &["push", &other]);
    assert!(mounted.contains(": Mounted from keel/pushed"), "{mounted}");
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{other}"),
    ]);

    // An image built on it (a common base, a layer of its own): the base
    // layer is mounted from where it went before, only the new one is sent.
    let context = temp.subdir("child");
    std::fs::write(context.join("note"), b"a layer of its own\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM keel-test/busybox\nCOPY note /note\n",
    )
    .unwrap();
    let child = format!("{host}/keel/child:1");
    ok(
        &root,
        &["build", "-q", "-t", &child, context.to_str().unwrap()],
    );
    let pushed = ok(&root, &["push", &child]);
    assert!(pushed.contains(": Mounted from keel/"), "{pushed}");
    assert!(pushed.contains(": Pushed"), "{pushed}");
    skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{child}"),
    ]);

    // -q prints the name only; an image keel does not have is an error.
    assert_eq!(ok(&root, &["push", "-q", &name]), format!("{name}\n"));
    let out = keel(&root, &["push", &format!("{host}/keel/absent:1")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("An image does not exist locally with the tag"),
        "{}",
        stderr(&out)
    );

    // skopeo pushes gzipped layers; keel pulls them and saves them as stored:
    // podman, skopeo and keel still load the archive.
    // (Another registry: skopeo would reuse the uncompressed blob keel
    // pushed to this one.)
    let second = Registry::start(&temp, "registry-gzip", None);
    let gzipped = format!("{}/keel/gzipped:1", second.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-compress",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", busybox.display()),
        &format!("docker://{gzipped}"),
    ]);
    let pulled = temp.subdir("root-pulled");
    ok(&pulled, &["pull", "-q", &gzipped]);
    let pulled_id = image_id(&pulled, &gzipped);
    let archive = temp.path().join("gzipped.tar");
    ok(
        &pulled,
        &["save", "-o", archive.to_str().unwrap(), &gzipped],
    );
    let raw = json(&skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]));
    assert!(
        raw["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .contains("gzip"),
        "{raw}"
    );
    check_archive(&temp, &archive, &pulled_id, &gzipped, "gzip");
    // The pushed copy is the same image, keel's or skopeo's: one id.
    assert_eq!(pulled_id, id);
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", &pulled)
        .args(["push", &gzipped])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Layer already exists"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(second);
    drop(registry);
}

#[test]
fn docker_loads_what_keel_saves_gzipped_layers_too() {
    use keel_testutil::peers::Dockerd;
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let busybox = busybox_image_archive(&temp.subdir("archive"));

    // An image whose layer keel holds uncompressed (loaded) and one whose
    // layer it holds gzipped (pulled after skopeo compressed it).
    let plain_root = temp.subdir("root-plain");
    ok(&plain_root, &["load", "-i", busybox.to_str().unwrap()]);
    let id = image_id(&plain_root, "keel-test/busybox");
    let plain = temp.path().join("plain.tar");
    ok(
        &plain_root,
        &["save", "-o", plain.to_str().unwrap(), "keel-test/busybox"],
    );
    let gzipped = format!("{}/keel/gzipped:1", registry.host());
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-compress",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", busybox.display()),
        &format!("docker://{gzipped}"),
    ]);
    let gzip_root = temp.subdir("root-gzip");
    ok(&gzip_root, &["pull", "-q", &gzipped]);
    let compressed = temp.path().join("gzipped.tar");
    ok(
        &gzip_root,
        &["save", "-o", compressed.to_str().unwrap(), &gzipped],
    );

    let cgroup_parent = format!("/keel-test-save-{}", std::process::id());
    let dockerd = Dockerd::start(&temp.subdir("docker"), &cgroup_parent, &[]);
    let loaded = dockerd.docker_ok(["load", "--input", plain.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: keel-test/busybox:latest"),
        "docker load: {loaded}"
    );
    let loaded = dockerd.docker_ok(["load", "--input", compressed.to_str().unwrap()]);
    assert!(
        loaded.contains(&format!("Loaded image: {gzipped}")),
        "docker load: {loaded}"
    );
    for name in ["keel-test/busybox:latest", gzipped.as_str()] {
        let inspected = json(&dockerd.docker_ok(["image", "inspect", name]));
        assert_eq!(inspected[0]["Id"], id.as_str(), "{inspected}");
    }
    // docker's own save of it goes back into keel as the same image.
    let resaved = temp.path().join("resaved.tar");
    dockerd.docker_ok(["save", "-o", resaved.to_str().unwrap(), gzipped.as_str()]);
    let again = temp.subdir("root-again");
    ok(&again, &["load", "-i", resaved.to_str().unwrap()]);
    assert_eq!(image_id(&again, &gzipped), id);
    let _ = fs::remove_dir(format!("/sys/fs/cgroup{cgroup_parent}"));
}
