//! `keel login`/`logout` against Debian's docker-registry with htpasswd
//! auth (credentials in docker's config.json, used by `keel pull`), and
//! `keel system df` / `keel image prune` on a loaded image.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use keel_testutil::peers::{Registry, busybox_image_archive};
use keel_testutil::{BusyboxBundle, TempRoot, require_root};

/// base64("keel:secret")
const KEEL_SECRET: &str = "a2VlbDpzZWNyZXQ=";

fn keel_with(root: &Path, docker_config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", root)
        .env("DOCKER_CONFIG", docker_config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keel");
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().expect("wait for keel")
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok_with(root: &Path, docker_config: &Path, args: &[&str], stdin: &str) -> String {
    let out = keel_with(root, docker_config, args, stdin);
    assert!(out.status.success(), "keel {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn login_pull_logout_with_docker_config() {
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "reg", Some(("keel", "secret")));
    let host = registry.host();
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let name = format!("{host}/keel/busybox:1");
    let pushed = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-creds",
            "keel:secret",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "skopeo: {}", text(&pushed));

    let docker = temp.subdir("docker");
    let config = docker.join("config.json");
    let before = br#"{"HttpHeaders":{"User-Agent":"keel-test"}}"#;
    std::fs::write(&config, before).unwrap();
    let root = temp.subdir("root");

    // A wrong password: exit 1, the registry's refusal, nothing written.
    let out = keel_with(
        &root,
        &docker,
        &["login", &host, "-u", "keel", "--password-stdin"],
        "wrong\n",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("Error: login to {host} failed")),
        "{stderr}"
    );
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert_eq!(std::fs::read(&config).unwrap(), before);

    // No password and no terminal: docker's refusal.
    let out = keel_with(&root, &docker, &["login", &host, "-u", "keel"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Cannot perform an interactive login from a non TTY device"),
        "{}",
        text(&out)
    );

    // The right one: stored as docker stores it, the other keys kept, 0600.
    let out = ok_with(
        &root,
        &docker,
        &["login", &host, "-u", "keel", "--password-stdin"],
        "secret\n",
    );
    assert_eq!(out, "Login Succeeded\n");
    let value = read_json(&config);
    assert_eq!(
        value["auths"][host.as_str()]["auth"],
        KEEL_SECRET,
        "{value}"
    );
    assert_eq!(value["HttpHeaders"]["User-Agent"], "keel-test", "{value}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Stored credentials are tried first when none are given.
    let out = ok_with(&root, &docker, &["login", &host], "");
    assert!(out.contains("Login Succeeded"), "{out}");

    // keel pull uses them (plain lines: stdout is not a terminal).
    let out = ok_with(&root, &docker, &["pull", &name], "");
    assert!(out.contains(": Pull complete"), "{out}");
    assert!(
        !out.contains('\x1b'),
        "escape codes off a terminal: {out:?}"
    );
    assert!(out.ends_with(&format!("{name}\n")), "{out}");

    // logout removes the entry, only it.
    let out = ok_with(&root, &docker, &["logout", &host], "");
    assert_eq!(out, format!("Removing login credentials for {host}\n"));
    let value = read_json(&config);
    assert!(value["auths"].get(host.as_str()).is_none(), "{value}");
    assert_eq!(value["HttpHeaders"]["User-Agent"], "keel-test", "{value}");
    let out = ok_with(&root, &docker, &["logout", &host], "");
    assert_eq!(out, format!("Not logged in to {host}\n"));

    // Without the login, the registry refuses the pull.
    let fresh = temp.subdir("fresh");
    let out = keel_with(&fresh, &docker, &["pull", &name], "");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication required"),
        "{}",
        text(&out)
    );

    // A config that names a credential helper: keel says it does not use
    // one, and stores the login in the file itself.
    let mut value = read_json(&config);
    value["credsStore"] = serde_json::json!("desktop");
    std::fs::write(&config, value.to_string()).unwrap();
    let out = keel_with(
        &root,
        &docker,
        &["login", &host, "-u", "keel", "--password-stdin"],
        "secret\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "WARNING! {} names a credential helper; keel does not use credential helpers and stored the login in the file itself.",
            config.display()
        )),
        "{stderr}"
    );
    let value = read_json(&config);
    assert_eq!(
        value["auths"][host.as_str()]["auth"],
        KEEL_SECRET,
        "{value}"
    );
    assert_eq!(value["credsStore"], "desktop", "{value}");
}

fn table_row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(first))
        .unwrap_or_else(|| panic!("no {first} row in:\n{table}"))
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn system_df_and_image_prune() {
    require_root();
    let temp = TempRoot::new();
    let root = temp.subdir("root");
    let docker = temp.subdir("docker");
    let archive = busybox_image_archive(&temp.subdir("archive"));
    ok_with(
        &root,
        &docker,
        &["load", "-i", archive.to_str().unwrap()],
        "",
    );

    let df = ok_with(&root, &docker, &["system", "df"], "");
    assert!(
        df.starts_with("TYPE ") && df.lines().next().unwrap().ends_with("RECLAIMABLE"),
        "{df}"
    );
    let images = table_row(&df, "Images");
    assert_eq!(images[1..3], ["1", "0"], "{df}");
    assert_ne!(images[3], "0B", "{df}");
    assert!(images[4].ends_with("(100%)"), "{df}");
    assert_eq!(
        table_row(&df, "Containers")[1..],
        ["0", "0", "0B", "0B"],
        "{df}"
    );
    table_row(&df, "Local Volumes");
    table_row(&df, "Build Cache");
    let verbose = ok_with(&root, &docker, &["system", "df", "-v"], "");
    assert!(verbose.contains("SHARED SIZE"), "{verbose}");
    let row = table_row(&verbose, "keel-test/busybox");
    assert_eq!(row[5], "0B", "nothing shared with one image: {verbose}");
    assert_eq!(row[4], row[6], "{verbose}");

    // A dangling image: the tag moves to a newer import.
    let bundle = BusyboxBundle::create(temp.subdir("bundle"));
    let tarball = temp.path().join("rootfs.tar");
    let tarred = Command::new("tar")
        .args(["-cf", tarball.to_str().unwrap(), "-C"])
        .arg(bundle.rootfs())
        .arg(".")
        .status()
        .unwrap();
    assert!(tarred.success());
    let tarball = tarball.to_str().unwrap();
    let old = ok_with(&root, &docker, &["import", tarball, "localhost/x:1"], "");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok_with(&root, &docker, &["import", tarball, "localhost/x:1"], "");
    assert_eq!(
        ok_with(&root, &docker, &["images", "-q"], "")
            .lines()
            .count(),
        3
    );

    // Without -a: only the dangling one; "n" at the prompt keeps everything.
    let out = ok_with(&root, &docker, &["image", "prune"], "n\n");
    assert_eq!(
        out,
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    );
    assert_eq!(
        ok_with(&root, &docker, &["images", "-q"], "")
            .lines()
            .count(),
        3
    );
    let out = ok_with(&root, &docker, &["image", "prune"], "y\n");
    assert!(
        out.contains(&format!("Deleted Images:\ndeleted: {}", old.trim())),
        "{out}"
    );
    assert_eq!(
        ok_with(&root, &docker, &["images", "-q"], "")
            .lines()
            .count(),
        2
    );
    let out = ok_with(&root, &docker, &["image", "prune", "-f"], "");
    assert_eq!(out, "Total reclaimed space: 0B\n");

    // -a: every image (no container uses any), then no blob is left.
    let out = ok_with(&root, &docker, &["image", "prune", "-a", "-f"], "");
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    assert!(
        out.contains("untagged: keel-test/busybox:latest\n"),
        "{out}"
    );
    assert!(out.contains("untagged: localhost/x:1\n"), "{out}");
    assert_eq!(out.matches("deleted: sha256:").count(), 2, "{out}");
    let reclaimed = out
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_ne!(reclaimed, "0B", "{out}");
    assert_eq!(ok_with(&root, &docker, &["images", "-q"], ""), "");
    let blobs = std::fs::read_dir(root.join("content/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0, "blobs left after prune -a");
    let df = ok_with(&root, &docker, &["system", "df"], "");
    assert_eq!(
        table_row(&df, "Images")[1..],
        ["0", "0", "0B", "0B"],
        "{df}"
    );
}
