//! The image commands as a user types them: load an archive, import a
//! rootfs, list, tag, inspect, history, remove; output as docker prints it.

use std::path::Path;
use std::process::{Command, Output};

use keel_testutil::peers::busybox_image_archive;
use keel_testutil::{BusyboxBundle, TempRoot, require_root};

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

#[test]
fn load_import_list_tag_inspect_and_remove() {
    require_root();
    let temp = TempRoot::new();
    let root = temp.subdir("root");
    let archive = busybox_image_archive(&temp.subdir("archive"));

    let out = ok(&root, &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: keel-test/busybox:latest\n");

    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    let tarball = temp.path().join("rootfs.tar");
    let tarred = Command::new("tar")
        .args(["-cf", tarball.to_str().unwrap(), "-C"])
        .arg(bundle.rootfs())
        .arg(".")
        .status()
        .unwrap();
    assert!(tarred.success());
    let id = ok(
        &root,
        &["import", tarball.to_str().unwrap(), "localhost/imported:v1"],
    );
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let listing = ok(&root, &["images"]);
    let mut lines = listing.lines();
    let header = lines.next().unwrap();
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<Vec<&str>> = lines
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(
        rows.iter()
            .any(|r| r[0] == "keel-test/busybox" && r[1] == "latest"),
        "{listing}"
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == "localhost/imported" && r[1] == "v1" && r[2] == &id[7..19]),
        "{listing}"
    );

    // -q prints each id once; tag adds a name to the same id.
    ok(
        &root,
        &["tag", "keel-test/busybox", "localhost:5000/copy:2"],
    );
    assert_eq!(ok(&root, &["images", "-q"]).lines().count(), 2);
    let names: Vec<String> = ok(&root, &["images", "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            format!(
                "{}:{}",
                v["Repository"].as_str().unwrap(),
                v["Tag"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        names.contains(&"localhost:5000/copy:2".to_string()),
        "{names:?}"
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&root, &["image", "inspect", "localhost:5000/copy:2"])).unwrap();
    assert_eq!(
        inspect[0]["RepoTags"].as_array().unwrap().len(),
        2,
        "{inspect}"
    );
    assert_eq!(inspect[0]["Os"], "linux");

    let history = ok(&root, &["image", "history", "localhost/imported:v1"]);
    assert!(history.contains("keel import"), "{history}");

    // An id with two names needs -f; a name just untags.
    let busybox_id = inspect[0]["Id"].as_str().unwrap().to_string();
    let out = keel(&root, &["rmi", &busybox_id[7..19]]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("must be forced"), "{}", stderr(&out));
    assert_eq!(
        ok(&root, &["rmi", "localhost:5000/copy:2"]),
        "Untagged: localhost:5000/copy:2\n"
    );
    assert_eq!(
        ok(&root, &["rmi", "keel-test/busybox"]),
        format!("Untagged: keel-test/busybox:latest\nDeleted: {busybox_id}\n")
    );
    let out = keel(&root, &["rmi", "keel-test/busybox"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("No such image"), "{}", stderr(&out));

    // Once no image uses them, blobs and snapshots are gone.
    ok(&root, &["rmi", "localhost/imported:v1"]);
    assert_eq!(ok(&root, &["images", "-q"]), "");
    let blobs = std::fs::read_dir(root.join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "blobs left after removing every image");
    let snapshots: Vec<_> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(snapshots, vec![std::ffi::OsString::from("ingest")]);
}

#[test]
fn bad_names_and_missing_files_are_keel_errors() {
    require_root();
    let temp = TempRoot::new();
    let root = temp.subdir("root");
    let out = keel(&root, &["import", "/no/such/file.tar", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/no/such/file.tar"),
        "{}",
        stderr(&out)
    );
    let out = keel(&root, &["tag", "nothing", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No such image: nothing"),
        "{}",
        stderr(&out)
    );
    let archive = busybox_image_archive(&temp.subdir("archive"));
    ok(&root, &["load", "-i", archive.to_str().unwrap()]);
    let out = keel(&root, &["tag", "keel-test/busybox", "Bad/Name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid reference format"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pull_from_a_registry_then_pull_again() {
    use keel_testutil::peers::Registry;
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let name = format!("{}/keel/busybox:1", registry.host());
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "skopeo: {}", stderr(&pushed));
    let root = temp.subdir("root");

    let out = ok(&root, &["pull", &name]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1: Pulling from keel/busybox", "{out}");
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(out.contains("Status: Downloaded newer image for "), "{out}");
    assert_eq!(*lines.last().unwrap(), name, "{out}");
    let listing = ok(&root, &["images"]);
    assert!(
        listing.contains(&format!("{}/keel/busybox", registry.host())),
        "{listing}"
    );

    // Everything is there: the second pull downloads nothing.
    let again = ok(&root, &["pull", &name]);
    assert!(again.contains("Already exists"), "{again}");
    assert!(
        again.contains("Status: Image is up to date for "),
        "{again}"
    );
    assert!(!again.contains("Download complete"), "{again}");

    // -q prints only the name; a missing tag is the registry's error, exit 1 (as docker).
    assert_eq!(ok(&root, &["pull", "-q", &name]), format!("{name}\n"));
    let out = keel(
        &root,
        &["pull", &format!("{}/keel/busybox:nope", registry.host())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("MANIFEST_UNKNOWN"),
        "{}",
        stderr(&out)
    );
}

/// A small image for [`layout_of`]: its name (or none), creation time and labels.
type Small<'a> = (Option<&'a str>, &'a str, &'a [(&'a str, &'a str)]);

/// An OCI layout of small images.
fn layout_of(dir: &Path, images: &[Small<'_>]) {
    use keel_image::digest::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let digest = Digest::of(data);
        std::fs::write(blobs.join(digest.hex()), data).unwrap();
        (digest, data.len())
    };
    let mut manifests = Vec::new();
    for (i, (name, created, labels)) in images.iter().enumerate() {
        let mut builder = tar::Builder::new(Vec::new());
        let content = format!("image {i}\n");
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(content.len() as u64);
        builder
            .append_data(&mut header, "hello.txt", content.as_bytes())
            .unwrap();
        let layer = builder.into_inner().unwrap();
        let (layer_digest, layer_size) = put(&layer);
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let config = serde_json::json!({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels, "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
        });
        let (config_digest, config_size) = put(config.to_string().as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest.to_string(), "size": layer_size}],
        });
        let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
        let mut entry = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(), "size": manifest_size,
        });
        if let Some(name) = name {
            entry["annotations"] = serde_json::json!({
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap(),
            });
        }
        manifests.push(entry);
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": manifests}).to_string(),
    )
    .unwrap();
}

/// `keel images` rows as "repository:tag", in output order.
fn listed(root: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["images", "--format", "json"];
    all.extend_from_slice(args);
    ok(root, &all)
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            format!(
                "{}:{}",
                row["Repository"].as_str().unwrap(),
                row["Tag"].as_str().unwrap()
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn images_filters_and_prune_filters() {
    require_root();
    let temp = TempRoot::new();
    let root = temp.subdir("root");
    let layout = temp.subdir("layout");
    layout_of(
        &layout,
        &[
            (
                Some("docker.io/keel-test/app:1"),
                "2020-01-01T00:00:00Z",
                &[("app", "web")],
            ),
            (
                Some("docker.io/keel-test/db:1"),
                "2021-01-01T00:00:00Z",
                &[("app", "db"), ("tier", "back")],
            ),
            (
                Some("docker.io/keel-test/db:2"),
                "2021-01-01T00:00:00Z",
                &[("app", "db"), ("tier", "back")],
            ),
            (None, "2022-01-01T00:00:00Z", &[]),
        ],
    );
    ok(&root, &["load", "-i", layout.to_str().unwrap()]);
    let all = listed(&root, &[]);
    assert_eq!(
        all,
        [
            "<none>:<none>",
            "keel-test/app:1",
            "keel-test/db:1",
            "keel-test/db:2"
        ],
        "{all:?}"
    );

    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--filter", "label=app"],
            &["keel-test/app:1", "keel-test/db:1", "keel-test/db:2"],
        ),
        (
            &["--filter", "label=app=db"],
            &["keel-test/db:1", "keel-test/db:2"],
        ),
        (
            &["--filter", "label=app", "--filter", "label=tier=back"],
            &["keel-test/db:1", "keel-test/db:2"],
        ),
        (
            &["--filter", "reference=keel-test/db:2"],
            &["keel-test/db:2"],
        ),
        (
            &["--filter", "reference=keel-test/*"],
            &["keel-test/app:1", "keel-test/db:1", "keel-test/db:2"],
        ),
        (
            &["--filter", "reference=*/db", "--filter", "reference=*/app"],
            &["keel-test/app:1", "keel-test/db:1", "keel-test/db:2"],
        ),
        (&["keel-test/db"], &["keel-test/db:1", "keel-test/db:2"]),
        (&["keel-test/db:1"], &["keel-test/db:1"]),
        (&["-f", "before=keel-test/db:1"], &["keel-test/app:1"]),
        (
            &["-f", "since=keel-test/app:1"],
            &["<none>:<none>", "keel-test/db:1", "keel-test/db:2"],
        ),
        (&["-f", "dangling=true"], &["<none>:<none>"]),
        (
            &["-f", "dangling=false", "-f", "until=2020-06-01T00:00:00Z"],
            &["keel-test/app:1"],
        ),
        (&["-f", "reference=nothing*"], &[]),
    ];
    for (args, want) in cases {
        assert_eq!(listed(&root, args), *want, "keel images {args:?}");
    }

    let out = keel(&root, &["images", "--filter", "colour=red"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid filter 'colour'"),
        "{}",
        stderr(&out)
    );
    let out = keel(&root, &["images", "--filter", "before=keel-test/none:1"]);
    assert_eq!(out.status.code(), Some(1));

    // prune: the filters pick among the unused images; -a for tagged ones.
    let out = ok(
        &root,
        &["image", "prune", "-a", "-f", "--filter", "label=app=web"],
    );
    assert!(out.contains("untagged: keel-test/app:1"), "{out}");
    assert_eq!(
        listed(&root, &[]),
        ["<none>:<none>", "keel-test/db:1", "keel-test/db:2"]
    );
    let out = ok(
        &root,
        &[
            "image",
            "prune",
            "-a",
            "-f",
            "--filter",
            "until=2021-06-01T00:00:00Z",
        ],
    );
    assert!(out.contains("untagged: keel-test/db:1"), "{out}");
    assert_eq!(listed(&root, &[]), ["<none>:<none>"]);
    let out = keel(&root, &["image", "prune", "-f", "--filter", "reference=x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid filter 'reference'"),
        "{}",
        stderr(&out)
    );
    ok(&root, &["image", "prune", "-f"]);
    assert!(listed(&root, &[]).is_empty());
}
