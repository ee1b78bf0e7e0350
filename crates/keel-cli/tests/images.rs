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
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("/no/such/file.tar"),
        "{}",
        stderr(&out)
    );
    let out = keel(&root, &["tag", "nothing", "x"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("No such image: nothing"),
        "{}",
        stderr(&out)
    );
    let archive = busybox_image_archive(&temp.subdir("archive"));
    ok(&root, &["load", "-i", archive.to_str().unwrap()]);
    let out = keel(&root, &["tag", "keel-test/busybox", "Bad/Name"]);
    assert_eq!(out.status.code(), Some(125));
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

    // -q prints only the name; a missing tag is the registry's error, exit 125.
    assert_eq!(ok(&root, &["pull", "-q", &name]), format!("{name}\n"));
    let out = keel(
        &root,
        &["pull", &format!("{}/keel/busybox:nope", registry.host())],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("MANIFEST_UNKNOWN"),
        "{}",
        stderr(&out)
    );
}
