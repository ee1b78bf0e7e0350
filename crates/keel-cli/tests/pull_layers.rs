//! `keel pull` of what registries really serve: an image of three layers
//! (gzip, zstd, plain) whose upper layers delete a file with a whiteout and
//! replace a directory with an opaque one, and a second tag of the same
//! repository, made offline as an OCI layout and put in Debian's
//! docker-registry by skopeo. The image a user gets must be the stack
//! overlayfs shows, with what was deleted gone. Also: `--platform` picks
//! from a multi-platform index, and blobs come three at a time.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use keel_image::digest::Digest;
use keel_testutil::peers::{Registry, describe, run};
use keel_testutil::proxy::{Faults, FaultyProxy};
use keel_testutil::{TempRoot, require_root};
use serde_json::{Value, json};

fn ok(root: &Path, args: &[&str]) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", root)
        .args(args)
        .output()
        .expect("run keel");
    assert!(
        out.status.success(),
        "keel {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
            Entry::File(path, data) => {
                header.set_mode(0o755);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            Entry::Symlink(path, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Layers as (tar, media type of the stored form, stored bytes).
type Layers<'a> = [(&'a [u8], &'a str, Vec<u8>)];

struct Layout<'a> {
    dir: &'a Path,
    refs: Vec<Value>,
}

impl Layout<'_> {
    fn blob(&self, data: &[u8]) -> (Digest, usize) {
        let digest = Digest::of(data);
        fs::write(self.dir.join("blobs/sha256").join(digest.hex()), data).unwrap();
        (digest, data.len())
    }

    /// An image of `layers` (tar, media type of the stored form, stored
    /// bytes), tagged `tag`.
    fn image(&mut self, tag: &str, layers: &[(&[u8], &str, Vec<u8>)]) {
        let (digest, size) = self.manifest("amd64", layers);
        self.tag(
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            digest,
            size,
        );
    }

    /// A multi-platform index of `(architecture, layers)` images, tagged
    /// `tag`.
    fn index(&mut self, tag: &str, images: &[(&str, &Layers<'_>)]) {
        let manifests: Vec<Value> = images
            .iter()
            .map(|(architecture, layers)| {
                let (digest, size) = self.manifest(architecture, layers);
                json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest.to_string(), "size": size,
                    "platform": {"os": "linux", "architecture": architecture},
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        })
        .to_string();
        let (digest, size) = self.blob(index.as_bytes());
        self.tag(tag, "application/vnd.oci.image.index.v1+json", digest, size);
    }

    fn tag(&mut self, tag: &str, media_type: &str, digest: Digest, size: usize) {
        self.refs.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(), "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        fs::write(
            self.dir.join("index.json"),
            json!({"schemaVersion": 2, "manifests": self.refs}).to_string(),
        )
        .unwrap();
    }

    /// The manifest of an image for `architecture`.
    fn manifest(&self, architecture: &str, layers: &[(&[u8], &str, Vec<u8>)]) -> (Digest, usize) {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(tar, _, _)| Digest::of(tar).to_string())
            .collect();
        let descriptors: Vec<Value> = layers
            .iter()
            .map(|(_, media_type, stored)| {
                let (digest, size) = self.blob(stored);
                json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
            })
            .collect();
        let config = json!({
            "created": "2024-01-01T00:00:00Z", "architecture": architecture, "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string();
        let (config_digest, config_size) = self.blob(config.as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config_size},
            "layers": descriptors,
        })
        .to_string();
        self.blob(manifest.as_bytes())
    }

    fn new(dir: &Path) -> Layout<'_> {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir,
            refs: Vec::new(),
        }
    }

    /// Copies tag `tag` (all its platforms) to `repository` with skopeo.
    fn push(&self, tag: &str, repository: &str, home: &Path) {
        let output = run(Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--all",
                "--quiet",
                "--preserve-digests",
            ])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{repository}:{tag}"))
            .env("HOME", home));
        assert!(
            output.status.success(),
            "skopeo copy: {}",
            describe(&output)
        );
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn pulls_every_tag_and_every_kind_of_layer_as_overlayfs_shows_them() {
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let busybox = fs::read(keel_testutil::HOST_BUSYBOX).expect("read busybox-static");

    let base = layer_tar(&[
        Entry::Dir("bin/"),
        Entry::File("bin/busybox", &busybox),
        Entry::Symlink("bin/sh", "busybox"),
        Entry::Dir("etc/"),
        Entry::File("etc/removed", b"gone soon\n"),
        Entry::File("etc/kept", b"kept\n"),
        Entry::Dir("dir/"),
        Entry::File("dir/a", b"hidden by the opaque dir\n"),
    ]);
    let middle = layer_tar(&[
        Entry::File("etc/.wh.removed", b""),
        Entry::Dir("dir/"),
        Entry::File("dir/.wh..wh..opq", b""),
        Entry::File("dir/b", b"the new dir\n"),
    ]);
    let top = layer_tar(&[Entry::Dir("new/"), Entry::File("new/file", b"top\n")]);
    let layout_dir = temp.subdir("layout");
    let mut layout = Layout::new(&layout_dir);
    layout.image(
        "v1",
        &[
            (
                &base,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                gzip(&base),
            ),
            (
                &middle,
                "application/vnd.oci.image.layer.v1.tar+zstd",
                zstd::encode_all(&middle[..], 3).unwrap(),
            ),
            (&top, "application/vnd.oci.image.layer.v1.tar", top.clone()),
        ],
    );
    layout.image(
        "v2",
        &[(
            &base,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            gzip(&base),
        )],
    );
    let repository = format!("{}/keel-test/layers", registry.host());
    for tag in ["v1", "v2"] {
        layout.push(tag, &repository, temp.path());
    }

    let root = temp.subdir("root");
    let out = ok(&root, &["pull", "--all-tags", &repository]);
    assert!(out.contains("v1: Pulling from keel-test/layers"), "{out}");
    assert!(out.contains("v2: Pulling from keel-test/layers"), "{out}");
    // v2's only layer is v1's base: already there when v2 comes.
    assert!(out.contains("Already exists"), "{out}");
    let tags = ok(&root, &["images", "--format", "json", &repository]);
    assert_eq!(tags.lines().count(), 2, "{tags}");

    // The stack, as `keel run` will mount it.
    let inspect: Value = serde_json::from_str(&ok(
        &root,
        &["image", "inspect", &format!("{repository}:v1")],
    ))
    .unwrap();
    let data = &inspect[0]["GraphDriver"]["Data"];
    let lower = format!(
        "{}:{}",
        data["UpperDir"].as_str().unwrap(),
        data["LowerDir"].as_str().unwrap()
    );
    assert_eq!(lower.split(':').count(), 3, "{inspect}");
    let merged = temp.subdir("merged");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lower}").as_str()),
    )
    .expect("mount the image's layers with overlayfs");
    let seen = || {
        assert!(
            !merged.join("etc/removed").exists(),
            "the whiteout deletes it"
        );
        assert_eq!(fs::read(merged.join("etc/kept")).unwrap(), b"kept\n");
        assert!(!merged.join("dir/a").exists(), "the opaque dir hides it");
        assert_eq!(fs::read(merged.join("dir/b")).unwrap(), b"the new dir\n");
        assert_eq!(fs::read(merged.join("new/file")).unwrap(), b"top\n");
        assert_eq!(
            fs::read_link(merged.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(fs::read(merged.join("bin/busybox")).unwrap(), busybox);
    };
    let result = std::panic::catch_unwind(seen);
    nix::mount::umount(&merged).expect("unmount the overlay");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A layer of one file of `size` bytes that do not compress.
fn noise_layer(name: &str, size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let noise: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    layer_tar(&[Entry::File(name, &noise)])
}

#[test]
fn pull_platform_picks_from_a_multi_platform_index() {
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let amd64 = layer_tar(&[Entry::File("arch", b"amd64\n")]);
    let arm64 = layer_tar(&[Entry::File("arch", b"arm64\n")]);
    let layout_dir = temp.subdir("layout");
    let mut layout = Layout::new(&layout_dir);
    let plain = "application/vnd.oci.image.layer.v1.tar";
    layout.index(
        "multi",
        &[
            ("amd64", &[(&amd64, plain, amd64.clone())]),
            ("arm64", &[(&arm64, plain, arm64.clone())]),
        ],
    );
    let repository = format!("{}/keel-test/multi", registry.host());
    layout.push("multi", &repository, temp.path());
    let image = format!("{repository}:multi");

    let arch_file = |root: &Path| {
        let inspect: Value =
            serde_json::from_str(&ok(root, &["image", "inspect", &image])).unwrap();
        let upper = inspect[0]["GraphDriver"]["Data"]["UpperDir"]
            .as_str()
            .unwrap()
            .to_string();
        (
            inspect[0]["Architecture"].as_str().unwrap().to_string(),
            fs::read_to_string(Path::new(&upper).join("arch")).unwrap(),
        )
    };
    // This machine's platform by default.
    let native = temp.subdir("native");
    ok(&native, &["pull", &image]);
    assert_eq!(arch_file(&native), ("amd64".into(), "amd64\n".into()));
    // --platform: the other one.
    let other = temp.subdir("other");
    ok(&other, &["pull", "--platform", "linux/arm64", &image]);
    assert_eq!(arch_file(&other), ("arm64".into(), "arm64\n".into()));
    // A platform the index lacks: docker's words, and nothing tagged.
    let none = temp.subdir("none");
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", &none)
        .args(["pull", "--platform", "linux/s390x", &image])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("no matching manifest for linux/s390x in the manifest list entries"),
        "{error}"
    );
    assert_eq!(ok(&none, &["images", "-q"]), "");
    // A malformed platform is refused before any request.
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .env("KEEL_ROOT", &none)
        .args(["pull", "--platform", "linux/", &image])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("linux/"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn blobs_download_three_at_a_time() {
    require_root();
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let layers: Vec<Vec<u8>> = (0..6)
        .map(|i| noise_layer(&format!("layer{i}"), 384 << 10, i + 1))
        .collect();
    let layout_dir = temp.subdir("layout");
    let mut layout = Layout::new(&layout_dir);
    let plain = "application/vnd.oci.image.layer.v1.tar";
    let described: Vec<(&[u8], &str, Vec<u8>)> =
        layers.iter().map(|l| (&l[..], plain, l.clone())).collect();
    layout.image("six", &described);
    let repository = format!("{}/keel-test/six", registry.host());
    layout.push("six", &repository, temp.path());

    // Every blob served slowly (1 MiB/s each), so that downloads overlap.
    let proxy = FaultyProxy::start(
        registry.port,
        Faults {
            target: "/blobs/sha256:".into(),
            bytes_per_second: Some(1 << 20),
            ..Faults::default()
        },
    );
    let image = format!("{}/keel-test/six:six", proxy.host());
    let root = temp.subdir("root");
    ok(&root, &["pull", &image]);
    let blob_gets = proxy.gets_of("/blobs/sha256:");
    assert_eq!(
        blob_gets.len(),
        7,
        "the config and six layers: {blob_gets:?}"
    );
    assert_eq!(
        proxy.most_at_once("/blobs/sha256:"),
        3,
        "docker's default: three blobs at a time"
    );
    let inspect: Value = serde_json::from_str(&ok(&root, &["image", "inspect", &image])).unwrap();
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 6);
}
