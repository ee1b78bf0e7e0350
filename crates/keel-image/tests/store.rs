//! The image store with real archives: one made offline like `docker save`
//! and an OCI layout, the same image saved by podman, a rootfs tarball, and
//! archives that lie or are not image archives at all.

use std::fs;
use std::path::Path;
use std::process::Command;

use keel_image::reference::Reference;
use keel_image::store::ImageStore;
use keel_testutil::peers::{BUSYBOX_IMAGE, Podman, busybox_image_archive};
use keel_testutil::{TempRoot, require_root};

fn snapshot_has_busybox(store: &ImageStore, name: &str) {
    let record = store.resolve(name).unwrap();
    let lowers = store.snapshots.lower_dirs(&record.chain_ids).unwrap();
    let bottom = lowers.last().unwrap();
    let busybox = bottom.join("bin/busybox");
    let meta = fs::metadata(&busybox).unwrap_or_else(|e| panic!("{}: {e}", busybox.display()));
    use std::os::unix::fs::PermissionsExt;
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "busybox is executable"
    );
    assert_eq!(
        fs::read_link(bottom.join("bin/sh"))
            .unwrap()
            .to_str()
            .unwrap()
            .rsplit('/')
            .next(),
        Some("busybox")
    );
}

#[test]
fn load_a_docker_archive_and_an_oci_layout() {
    require_root();
    let temp = TempRoot::new();
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let mut store = ImageStore::open(&temp.subdir("root")).unwrap();
    let loaded = store.load(&archive).unwrap();
    assert_eq!(loaded.len(), 1);
    let (record, tags) = &loaded[0];
    assert_eq!(tags, &vec![BUSYBOX_IMAGE.to_string()]);
    assert_eq!(record.platform, "linux/amd64");
    assert!(
        record.size > 1_000_000,
        "busybox alone is over 1 MB: {}",
        record.size
    );
    snapshot_has_busybox(&store, "keel-test/busybox");
    // The same image by id prefix.
    assert_eq!(store.resolve(&record.id.hex()[..12]).unwrap().id, record.id);

    // The OCI layout half of the same archive, as a directory.
    let layout = temp.subdir("layout");
    let status = Command::new("tar")
        .args([
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_file(layout.join("manifest.json")).unwrap();
    let mut fresh = ImageStore::open(&temp.subdir("root2")).unwrap();
    let loaded = fresh.load(&layout).unwrap();
    assert_eq!(loaded[0].0.id, record.id, "same config, same image id");
    snapshot_has_busybox(&fresh, &record.id.to_string());
}

#[test]
fn load_what_podman_saves() {
    require_root();
    let temp = TempRoot::new();
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let podman = Podman::new(&temp.subdir("podman"), Path::new("/usr/sbin/runc"));
    podman.podman_ok(["load", "-i", archive.to_str().unwrap()]);
    for (format, file) in [("docker-archive", "docker.tar"), ("oci-archive", "oci.tar")] {
        let out = temp.path().join(file);
        podman.podman_ok([
            "save",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            BUSYBOX_IMAGE,
        ]);
        let mut store = ImageStore::open(&temp.subdir(&format!("root-{format}"))).unwrap();
        let loaded = store
            .load(&out)
            .unwrap_or_else(|e| panic!("load {format}: {e}"));
        assert_eq!(loaded.len(), 1, "{format}");
        snapshot_has_busybox(&store, &loaded[0].0.id.to_string());
        if format == "docker-archive" {
            assert_eq!(loaded[0].1, vec![BUSYBOX_IMAGE.to_string()], "{format}");
        }
    }
}

#[test]
fn import_a_rootfs_tarball() {
    require_root();
    let temp = TempRoot::new();
    let bundle = keel_testutil::BusyboxBundle::create(temp.subdir("bundle"));
    let tarball = temp.path().join("rootfs.tar.gz");
    let status = Command::new("tar")
        .args([
            "-czf",
            tarball.to_str().unwrap(),
            "-C",
            bundle.rootfs().to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let mut store = ImageStore::open(&temp.subdir("root")).unwrap();
    let reference = Reference::parse("localhost/imported:1").unwrap();
    let record = store
        .import(fs::File::open(&tarball).unwrap(), &reference)
        .unwrap();
    assert_eq!(record.chain_ids.len(), 1);
    snapshot_has_busybox(&store, "localhost/imported:1");
    let config = store.content.read(&record.id).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        record.chain_ids[0].to_string()
    );
}

#[test]
fn archives_that_lie_or_are_not_images_leave_nothing_tagged() {
    require_root();
    let temp = TempRoot::new();
    let mut store = ImageStore::open(&temp.subdir("root")).unwrap();
    // Not an image archive.
    let junk = temp.subdir("junk");
    fs::write(junk.join("hello.txt"), "hi").unwrap();
    let err = store.load(&junk).unwrap_err().to_string();
    assert!(err.contains("not an image archive"), "{err}");

    // A layout whose layer blob is not what its name says.
    let archive = busybox_image_archive(&temp.subdir("archive"));
    let layout = temp.subdir("layout");
    assert!(
        Command::new("tar")
            .args([
                "-xf",
                archive.to_str().unwrap(),
                "-C",
                layout.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );
    fs::remove_file(layout.join("manifest.json")).unwrap();
    let blobs = layout.join("blobs/sha256");
    let biggest = fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let mut data = fs::read(&biggest).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    fs::write(&biggest, data).unwrap();
    let err = store.load(&layout).unwrap_err().to_string();
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(
        store.metadata.images().unwrap().is_empty(),
        "nothing recorded"
    );
    assert!(store.resolve("keel-test/busybox").is_err());
    let name = biggest.file_name().unwrap().to_str().unwrap();
    assert!(
        !store
            .content
            .contains(&format!("sha256:{name}").parse().unwrap()),
        "no corrupt blob visible"
    );
}

/// A tar built with the tar crate's helpers: (path, data) for a file,
/// (path ending in `/`, _) for a directory, (path, `-> target`) for a
/// symlink.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_600_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        if let Some(target) = data.strip_prefix(b"-> ") {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            let target = std::str::from_utf8(target).unwrap();
            builder.append_link(&mut header, path, target).unwrap();
        } else if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            builder.append_data(&mut header, path, &[][..]).unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            builder.append_data(&mut header, path, *data).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

/// Each layer is unpacked over the ones below it: an upper layer that
/// writes `lib/newfile` over a usrmerge base (`lib -> usr/lib`) puts it in
/// usr/lib and leaves the symlink alone.
#[test]
fn commit_unpacks_each_layer_over_the_ones_below() {
    use keel_image::digest::Digest;
    require_root();
    let temp = TempRoot::new();
    let base = tar_of(&[
        ("usr/", b""),
        ("usr/lib/", b""),
        ("usr/lib/libc.so", b"libc"),
        ("lib", b"-> usr/lib"),
    ]);
    let upper = tar_of(&[("lib/newfile", b"new")]);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": [Digest::of(&base).to_string(), Digest::of(&upper).to_string()],
        },
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["localhost/usrmerge:1"],
        "Layers": ["base/layer.tar", "upper/layer.tar"],
    }]);
    let archive = tar_of(&[
        ("config.json", &serde_json::to_vec(&config).unwrap()),
        ("base/layer.tar", &base),
        ("upper/layer.tar", &upper),
        ("manifest.json", &serde_json::to_vec(&manifest).unwrap()),
    ]);
    let mut store = ImageStore::open(&temp.subdir("root")).unwrap();
    let loaded = store.load_stream(&archive[..]).unwrap();
    let record = &loaded[0].0;
    assert_eq!(record.chain_ids.len(), 2);
    let lowers = store.snapshots.lower_dirs(&record.chain_ids).unwrap();
    let (top, bottom) = (&lowers[0], &lowers[1]);
    assert_eq!(fs::read(top.join("usr/lib/newfile")).unwrap(), b"new");
    assert!(
        fs::symlink_metadata(top.join("lib")).is_err(),
        "no lib in the upper"
    );
    assert!(
        fs::symlink_metadata(bottom.join("lib"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        !bottom.join("usr/lib/newfile").exists(),
        "the base is untouched"
    );
}
