//! Layer unpacking, as root: real files, modes, owners, devices, xattrs,
//! overlay whiteouts, and layers that try to write outside the snapshot.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use keel_image::Error;
use keel_image::digest::Digest;
use keel_image::layer::{self, Compression, UnpackOptions, Unpacked};

/// Where the seed corpus points absolute symlinks and hard links: the
/// fuzz target and the mutation test check that it never changes.
const FIXED_OUTSIDE: &str = "/tmp/keel-layer-test-outside";

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests create devices, chown and set trusted xattrs: run them as root"
    );
}

fn root_options() -> UnpackOptions {
    UnpackOptions {
        keep_ownership: true,
        allow_devices: true,
        parents: Vec::new(),
        expansion: Default::default(),
    }
}

/// A tar stream built entry by entry with raw headers, so names may hold
/// anything (`..`, absolute paths) the tar crate's helpers refuse.
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

struct Entry<'a> {
    name: &'a [u8],
    kind: u8,
    data: &'a [u8],
    link: &'a [u8],
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    device: (u32, u32),
}

impl Default for Entry<'_> {
    fn default() -> Self {
        Entry {
            name: b"",
            kind: b'0',
            data: b"",
            link: b"",
            mode: 0o644,
            owner: (0, 0),
            mtime: 1_600_000_000,
            device: (0, 0),
        }
    }
}

impl Layer {
    fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn add(mut self, entry: Entry<'_>) -> Layer {
        let mut header = tar::Header::new_ustar();
        {
            let old = header.as_old_mut();
            assert!(entry.name.len() <= 100 && entry.link.len() <= 100);
            old.name[..entry.name.len()].copy_from_slice(entry.name);
            old.linkname[..entry.link.len()].copy_from_slice(entry.link);
        }
        header.as_mut_bytes()[156] = entry.kind;
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_uid(entry.owner.0);
        header.set_gid(entry.owner.1);
        header.set_mtime(entry.mtime);
        header.set_device_major(entry.device.0).unwrap();
        header.set_device_minor(entry.device.1).unwrap();
        header.set_cksum();
        self.builder.append(&header, entry.data).unwrap();
        self
    }

    fn dir(self, name: &str, mode: u32) -> Layer {
        self.add(Entry {
            name: name.as_bytes(),
            kind: b'5',
            mode,
            ..Entry::default()
        })
    }

    fn file(self, name: &str, data: &[u8]) -> Layer {
        self.add(Entry {
            name: name.as_bytes(),
            data,
            ..Entry::default()
        })
    }

    fn symlink(self, name: &str, target: &str) -> Layer {
        self.add(Entry {
            name: name.as_bytes(),
            kind: b'2',
            link: target.as_bytes(),
            mode: 0o777,
            ..Entry::default()
        })
    }

    fn hardlink(self, name: &str, target: &str) -> Layer {
        self.add(Entry {
            name: name.as_bytes(),
            kind: b'1',
            link: target.as_bytes(),
            ..Entry::default()
        })
    }

    /// A PAX header for the next entry.
    fn pax(self, records: &[(&str, &[u8])]) -> Layer {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = 1 + key.len() + 1 + value.len() + 1;
            let mut len = body + body.to_string().len();
            if len.to_string().len() + body != len {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.add(Entry {
            name: b"PaxHeaders/entry",
            kind: b'x',
            data: &data,
            ..Entry::default()
        })
    }

    fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// A temp dir with the snapshot (`root`, empty) and a sibling `outside`
/// holding a sentinel file that no layer may touch.
struct Sandbox {
    base: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let base = tempfile::tempdir().unwrap();
        fs::create_dir(base.path().join("root")).unwrap();
        fs::create_dir(base.path().join("outside")).unwrap();
        fs::write(base.path().join("outside/sentinel"), b"original").unwrap();
        Sandbox { base }
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    fn unpack(&self, data: &[u8]) -> keel_image::Result<Unpacked> {
        layer::unpack(data, &self.root(), &root_options())
    }

    /// The sentinel dir holds exactly the untouched sentinel, and the base
    /// holds only `root` and `outside`.
    fn assert_untouched(&self) {
        assert_dir_untouched(&self.outside());
        assert_eq!(names(self.base.path()), ["outside", "root"]);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_dir_untouched(dir: &Path) {
    assert_eq!(names(dir), ["sentinel"], "something was written in {dir:?}");
    let sentinel = dir.join("sentinel");
    let metadata = fs::symlink_metadata(&sentinel).unwrap();
    assert!(metadata.file_type().is_file());
    assert_eq!(metadata.nlink(), 1, "the sentinel was hard-linked");
    assert_eq!(metadata.mode() & 0o7777, 0o644);
    assert_eq!(fs::read(&sentinel).unwrap(), b"original");
}

fn fixed_outside() -> PathBuf {
    let dir = PathBuf::from(FIXED_OUTSIDE);
    fs::create_dir_all(&dir).unwrap();
    let sentinel = dir.join("sentinel");
    if !sentinel.exists() {
        fs::write(&sentinel, b"original").unwrap();
        fs::set_permissions(
            &sentinel,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    dir
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buffer = vec![0u8; 256];
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buffer.truncate(n as usize);
    Some(buffer)
}

fn sample_layer() -> Vec<u8> {
    Layer::new()
        .add(Entry {
            name: b"etc/",
            kind: b'5',
            mode: 0o755,
            mtime: 1_500_000_000,
            ..Entry::default()
        })
        .add(Entry {
            name: b"etc/hosts",
            data: b"127.0.0.1 localhost\n",
            mode: 0o640,
            owner: (1000, 1001),
            mtime: 1_400_000_000,
            ..Entry::default()
        })
        .add(Entry {
            name: b"usr/bin/sudo",
            data: b"#!/bin/sh\n",
            mode: 0o4755,
            owner: (0, 0),
            ..Entry::default()
        })
        .add(Entry {
            name: b"tmp/",
            kind: b'5',
            mode: 0o1777,
            mtime: 1_300_000_000,
            ..Entry::default()
        })
        .add(Entry {
            name: b"etc/localtime",
            kind: b'2',
            link: b"/usr/share/zoneinfo/UTC",
            owner: (7, 8),
            ..Entry::default()
        })
        .hardlink("etc/hosts.allow", "etc/hosts")
        .add(Entry {
            name: b"run/initctl",
            kind: b'6',
            mode: 0o600,
            ..Entry::default()
        })
        .add(Entry {
            name: b"dev/null",
            kind: b'3',
            mode: 0o666,
            device: (1, 3),
            ..Entry::default()
        })
        .pax(&[
            ("SCHILY.xattr.user.foo", b"bar"),
            ("mtime", b"1234567890.5"),
        ])
        .add(Entry {
            name: b"data/with-xattr",
            data: b"x",
            ..Entry::default()
        })
        .finish()
}

#[test]
fn unpacks_a_layer_with_every_kind_of_entry() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = sample_layer();
    let unpacked = sandbox.unpack(&tar).unwrap();
    assert_eq!(unpacked.diff_id, Digest::of(&tar));
    assert_eq!(unpacked.size, 20 + 10 + 1);
    let root = sandbox.root();

    let etc = fs::symlink_metadata(root.join("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!(etc.mode() & 0o7777, 0o755);
    assert_eq!(etc.mtime(), 1_500_000_000, "set after its contents");

    let hosts = fs::symlink_metadata(root.join("etc/hosts")).unwrap();
    assert_eq!(
        fs::read(root.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(hosts.mode() & 0o7777, 0o640);
    assert_eq!((hosts.uid(), hosts.gid()), (1000, 1001));
    assert_eq!(hosts.mtime(), 1_400_000_000);
    assert_eq!(hosts.nlink(), 2);
    let allow = fs::symlink_metadata(root.join("etc/hosts.allow")).unwrap();
    assert_eq!(allow.ino(), hosts.ino());

    let sudo = fs::symlink_metadata(root.join("usr/bin/sudo")).unwrap();
    assert_eq!(sudo.mode() & 0o7777, 0o4755, "setuid kept after chown");
    let implied = fs::symlink_metadata(root.join("usr/bin")).unwrap();
    assert!(implied.is_dir());
    assert_eq!(implied.mode() & 0o7777, 0o755);

    let tmp = fs::symlink_metadata(root.join("tmp")).unwrap();
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime(), 1_300_000_000);

    let localtime = fs::symlink_metadata(root.join("etc/localtime")).unwrap();
    assert!(localtime.file_type().is_symlink());
    assert_eq!((localtime.uid(), localtime.gid()), (7, 8));
    assert_eq!(
        fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert_eq!(localtime.mtime(), 1_600_000_000);

    let fifo = fs::symlink_metadata(root.join("run/initctl")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o600);

    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);

    let with_xattr = root.join("data/with-xattr");
    assert_eq!(
        lgetxattr(&with_xattr, "user.foo").as_deref(),
        Some(&b"bar"[..])
    );
    let metadata = fs::symlink_metadata(&with_xattr).unwrap();
    assert_eq!(
        (metadata.mtime(), metadata.mtime_nsec()),
        (1_234_567_890, 500_000_000)
    );
    sandbox.assert_untouched();
}

#[test]
fn without_root_options_devices_are_skipped_and_owners_not_kept() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = sample_layer();
    let unpacked = layer::unpack(&tar[..], &sandbox.root(), &UnpackOptions::default()).unwrap();
    assert_eq!(unpacked.diff_id, Digest::of(&tar));
    let root = sandbox.root();
    assert!(!root.join("dev/null").exists());
    let hosts = fs::symlink_metadata(root.join("etc/hosts")).unwrap();
    assert_eq!((hosts.uid(), hosts.gid()), (0, 0));
    assert!(
        fs::symlink_metadata(root.join("run/initctl"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn compressed_layers_have_the_diff_id_of_the_plain_tar() {
    require_root();
    let mut tar = sample_layer();
    // Writers pad to a record size: the diff id covers the padding too.
    tar.extend_from_slice(&[0u8; 9216]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&tar).unwrap();
    let gzip = gzip.finish().unwrap();
    let zstd = zstd::encode_all(&tar[..], 3).unwrap();
    assert_eq!(layer::detect(&tar), Compression::None);
    assert_eq!(layer::detect(&gzip), Compression::Gzip);
    assert_eq!(layer::detect(&zstd), Compression::Zstd);

    let expected = Digest::of(&tar);
    for (what, blob) in [("plain", &tar), ("gzip", &gzip), ("zstd", &zstd)] {
        let sandbox = Sandbox::new();
        let unpacked = sandbox
            .unpack(blob)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(unpacked.diff_id, expected, "{what}");
        assert_eq!(
            fs::read(sandbox.root().join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n",
            "{what}"
        );
    }
}

#[test]
fn reads_a_large_file_in_pieces() {
    require_root();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let tar = Layer::new().file("big", &data).finish();
    let zstd = zstd::encode_all(&tar[..], 1).unwrap();
    let sandbox = Sandbox::new();
    let unpacked = sandbox.unpack(&zstd).unwrap();
    assert_eq!(unpacked.size, data.len() as u64);
    assert_eq!(unpacked.diff_id, Digest::of(&tar));
    assert_eq!(fs::read(sandbox.root().join("big")).unwrap(), data);
}

/// A layer of one file of `size` zero bytes, gzipped: a few kB that expand
/// to `size`.
fn zeros_bomb(size: usize) -> Vec<u8> {
    let tar = Layer::new().file("zeros", &vec![0u8; size]).finish();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gzip.write_all(&tar).unwrap();
    gzip.finish().unwrap()
}

#[test]
fn a_decompression_bomb_is_refused_at_its_bound() {
    require_root();
    let bomb = zeros_bomb(32 << 20);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let ratio = layer::ExpansionLimit {
        max_bytes: 0,
        max_ratio: 100,
        ratio_floor: 1 << 20,
    };
    let sandbox = Sandbox::new();
    let options = UnpackOptions {
        expansion: ratio,
        ..root_options()
    };
    let error = layer::unpack(&bomb[..], &sandbox.root(), &options)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("more than 100 times its compressed size")
            && error.contains("decompression bomb"),
        "{error}"
    );
    // The absolute bound, whatever the ratio.
    let options = UnpackOptions {
        expansion: layer::ExpansionLimit {
            max_bytes: 4 << 20,
            max_ratio: 0,
            ratio_floor: 0,
        },
        ..root_options()
    };
    let sandbox = Sandbox::new();
    let error = layer::unpack(&bomb[..], &sandbox.root(), &options)
        .unwrap_err()
        .to_string();
    assert!(error.contains("more than 4194304 bytes"), "{error}");
    // Under the defaults (1 GiB floor) this one unpacks; a plain tar has a
    // ratio of 1 and meets only the absolute bound.
    let sandbox = Sandbox::new();
    let unpacked = sandbox.unpack(&bomb).unwrap();
    assert_eq!(unpacked.size, 32 << 20);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .file(".wh.gone", b"")
        .dir("a/", 0o755)
        .file("a/keep", b"k")
        .file("a/replaced", b"r")
        .file("a/.wh.replaced", b"")
        .file("a/.wh.old", b"")
        .dir("b/", 0o700)
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"n")
        .file("c/deep/.wh..wh..opq", b"")
        .finish();
    sandbox.unpack(&tar).unwrap();
    let root = sandbox.root();
    for whiteout in ["gone", "a/old", "a/replaced"] {
        let metadata = fs::symlink_metadata(root.join(whiteout)).unwrap();
        assert!(metadata.file_type().is_char_device(), "{whiteout}");
        assert_eq!(metadata.rdev(), 0, "{whiteout}");
    }
    assert!(!root.join(".wh.gone").exists());
    assert_eq!(fs::read(root.join("a/keep")).unwrap(), b"k");
    assert_eq!(
        lgetxattr(&root.join("b"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        fs::read(root.join("b/new")).unwrap(),
        b"n",
        "same layer stays"
    );
    assert!(!root.join("b/.wh..wh..opq").exists());
    assert_eq!(
        fs::symlink_metadata(root.join("b")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        lgetxattr(&root.join("c/deep"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(lgetxattr(&root.join("a"), "trusted.overlay.opaque"), None);
    sandbox.assert_untouched();
}

/// The whiteouts do what overlayfs expects: mounted over a lower layer
/// (in a private mount namespace), they hide what the layer deleted.
#[test]
fn overlayfs_honours_the_whiteouts() {
    require_root();
    let sandbox = Sandbox::new();
    let lower = sandbox.base.path().join("lower");
    fs::create_dir_all(lower.join("dir")).unwrap();
    fs::create_dir_all(lower.join("opq")).unwrap();
    fs::write(lower.join("gone"), b"g").unwrap();
    fs::write(lower.join("kept"), b"k").unwrap();
    fs::write(lower.join("dir/old"), b"o").unwrap();
    fs::write(lower.join("dir/other"), b"o").unwrap();
    fs::write(lower.join("opq/lowerfile"), b"l").unwrap();
    let tar = Layer::new()
        .file(".wh.gone", b"")
        .dir("dir/", 0o755)
        .file("dir/.wh.old", b"")
        .dir("opq/", 0o755)
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"n")
        .finish();
    sandbox.unpack(&tar).unwrap();
    let merged = sandbox.base.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={}:{} {} && cd {} && find . | sort",
        sandbox.root().display(),
        lower.display(),
        merged.display(),
        merged.display()
    );
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8(output.stdout).unwrap();
    let listing: Vec<&str> = listing.lines().collect();
    assert_eq!(
        listing,
        [".", "./dir", "./dir/other", "./kept", "./opq", "./opq/new"]
    );
}

#[test]
fn a_v7_regular_entry_ending_in_a_slash_is_a_directory() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .add(Entry {
            name: b"v7dir/",
            kind: 0,
            mode: 0o750,
            ..Entry::default()
        })
        .finish();
    sandbox.unpack(&tar).unwrap();
    let metadata = fs::symlink_metadata(sandbox.root().join("v7dir")).unwrap();
    assert!(metadata.is_dir());
    assert_eq!(metadata.mode() & 0o7777, 0o750);
}

#[test]
fn overlay_xattrs_in_the_layer_are_ignored() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
        .dir("d/", 0o755)
        .finish();
    sandbox.unpack(&tar).unwrap();
    assert_eq!(
        lgetxattr(&sandbox.root().join("d"), "trusted.overlay.redirect"),
        None
    );
}

#[test]
fn invalid_whiteouts_are_refused() {
    require_root();
    for name in [".wh..", ".wh...", "etc/.wh..", ".wh."] {
        let sandbox = Sandbox::new();
        let tar = Layer::new().dir("etc/", 0o755).file(name, b"").finish();
        match sandbox.unpack(&tar) {
            Err(Error::UnsafeEntry { entry, .. }) => assert_eq!(entry, name),
            other => panic!("{name}: {other:?}"),
        }
        assert!(sandbox.root().join("etc").is_dir());
        sandbox.assert_untouched();
    }
}

#[test]
fn an_entry_replaces_what_is_there_except_a_directory_by_a_directory() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .file("x", b"first")
        .file("x", b"second")
        .dir("d/", 0o755)
        .file("d/inner/file", b"f")
        .dir("d/", 0o700)
        .symlink("s", "d")
        .dir("s/", 0o755)
        .dir("f/", 0o755)
        .file("f/y", b"y")
        .file("f", b"now a file")
        .finish();
    sandbox.unpack(&tar).unwrap();
    let root = sandbox.root();
    assert_eq!(fs::read(root.join("x")).unwrap(), b"second");
    assert_eq!(fs::read(root.join("d/inner/file")).unwrap(), b"f");
    assert_eq!(
        fs::symlink_metadata(root.join("d")).unwrap().mode() & 0o7777,
        0o700
    );
    assert!(fs::symlink_metadata(root.join("s")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("f")).unwrap(), b"now a file");
}

#[test]
fn absolute_paths_land_inside() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new().file("/etc/abs", b"inside").finish();
    sandbox.unpack(&tar).unwrap();
    assert_eq!(fs::read(sandbox.root().join("etc/abs")).unwrap(), b"inside");
    sandbox.assert_untouched();
}

fn assert_refused(result: keel_image::Result<Unpacked>, name: &str) {
    match result {
        Err(Error::UnsafeEntry { entry, reason }) => {
            assert_eq!(entry, name, "{reason}");
        }
        other => panic!("{name} was not refused: {other:?}"),
    }
}

#[test]
fn dot_dot_above_the_root_is_refused() {
    require_root();
    for name in [
        "../evil",
        "a/../../evil",
        "../outside/sentinel",
        "./../../x",
    ] {
        let sandbox = Sandbox::new();
        let tar = Layer::new().file(name, b"evil").finish();
        assert_refused(sandbox.unpack(&tar), name);
        sandbox.assert_untouched();
    }
    // ".." that stays inside is fine.
    let sandbox = Sandbox::new();
    let tar = Layer::new().file("a/b/../c", b"ok").finish();
    sandbox.unpack(&tar).unwrap();
    assert_eq!(fs::read(sandbox.root().join("a/c")).unwrap(), b"ok");
}

#[test]
fn writes_through_an_absolute_symlink_stay_inside() {
    require_root();
    let sandbox = Sandbox::new();
    let outside = sandbox.outside();
    let target = outside.to_str().unwrap();
    // The symlink's target does not exist inside the snapshot: refused.
    let tar = Layer::new()
        .symlink("evil", target)
        .file("evil/x", b"evil")
        .finish();
    let error = sandbox.unpack(&tar).unwrap_err().to_string();
    assert!(
        error.contains("evil/x") && error.contains("missing directory"),
        "{error}"
    );
    sandbox.assert_untouched();

    // It does: the symlink resolves as if the snapshot were "/"
    // (containerd's semantics), so the writes land at <root><outside>/...
    let sandbox = Sandbox::new();
    let outside = sandbox.outside();
    let inside = outside
        .strip_prefix("/")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let tar = Layer::new()
        .dir(&format!("{inside}/"), 0o755)
        .symlink("evil", outside.to_str().unwrap())
        .file("evil/x", b"evil")
        .file("evil/sentinel", b"overwritten")
        .finish();
    sandbox.unpack(&tar).unwrap();
    sandbox.assert_untouched();
    let inside = sandbox.root().join(inside);
    assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
    assert_eq!(fs::read(inside.join("sentinel")).unwrap(), b"overwritten");
    assert!(
        fs::symlink_metadata(sandbox.root().join("evil"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn writes_through_a_climbing_symlink_stay_inside() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .dir("a/", 0o755)
        .symlink("a/up", "../../..")
        .file("a/up/x", b"x")
        .symlink("out", "../outside")
        .dir("outside/", 0o755)
        .file("out/sentinel", b"overwritten")
        .finish();
    sandbox.unpack(&tar).unwrap();
    sandbox.assert_untouched();
    // "../../.." from a/ is the root; "../outside" from the root is /outside.
    assert_eq!(fs::read(sandbox.root().join("x")).unwrap(), b"x");
    assert_eq!(
        fs::read(sandbox.root().join("outside/sentinel")).unwrap(),
        b"overwritten"
    );
    // Without /outside inside, the write through "out" is refused.
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .symlink("out", "../outside")
        .file("out/sentinel", b"overwritten")
        .finish();
    assert!(sandbox.unpack(&tar).is_err());
    sandbox.assert_untouched();
}

#[test]
fn a_symlink_chain_to_etc_passwd_stays_inside() {
    require_root();
    let passwd_before = fs::read("/etc/passwd").unwrap();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .symlink("evil", "/etc")
        .symlink("chain", "evil")
        .file("chain/passwd", b"root::0:0::/:/bin/sh\n")
        .finish();
    // evil -> /etc resolves to <root>/etc, which does not exist: refused
    // or contained, never the host's.
    let result = sandbox.unpack(&tar);
    if result.is_ok() {
        assert!(sandbox.root().join("etc/passwd").exists());
    }
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before);
    sandbox.assert_untouched();
}

#[test]
fn hard_links_outside_are_refused_or_contained() {
    require_root();
    let passwd_links = fs::metadata("/etc/passwd").unwrap().nlink();
    let sandbox = Sandbox::new();
    let outside_sentinel = sandbox.outside().join("sentinel");
    let absolute = outside_sentinel.to_str().unwrap().to_string();
    for (name, target) in [
        ("link1", "/etc/passwd"),
        ("link2", absolute.as_str()),
        ("link3", "../../outside"),
        ("link4", "../outside/sentinel"),
        ("link5", "a/../../outside/sentinel"),
    ] {
        let sandbox = Sandbox::new();
        let tar = Layer::new().hardlink(name, target).finish();
        let result = sandbox.unpack(&tar);
        if target.starts_with('/') {
            // Resolved inside the root, where it does not exist.
            assert!(result.is_err(), "{target}");
        } else {
            assert_refused(result, name);
        }
        sandbox.assert_untouched();
        assert!(!sandbox.root().join(name).exists());
    }
    // Through a symlink that points out, the link target stays inside too.
    let tar = Layer::new()
        .symlink("out", sandbox.outside().to_str().unwrap())
        .hardlink("stolen", "out/sentinel")
        .finish();
    assert!(sandbox.unpack(&tar).is_err());
    sandbox.assert_untouched();
    assert_eq!(fs::metadata("/etc/passwd").unwrap().nlink(), passwd_links);

    // A hard link to a symlink links the symlink, not what it points to.
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .symlink("s", absolute.as_str())
        .hardlink("h", "s")
        .finish();
    sandbox.unpack(&tar).unwrap();
    let h = fs::symlink_metadata(sandbox.root().join("h")).unwrap();
    assert!(h.file_type().is_symlink());
    sandbox.assert_untouched();
}

#[test]
fn hard_links_inside_work_through_absolute_names() {
    require_root();
    let sandbox = Sandbox::new();
    let tar = Layer::new()
        .file("etc/passwd", b"inside")
        .hardlink("copy", "/etc/passwd")
        .finish();
    sandbox.unpack(&tar).unwrap();
    let a = fs::metadata(sandbox.root().join("etc/passwd")).unwrap();
    let b = fs::metadata(sandbox.root().join("copy")).unwrap();
    assert_eq!(a.ino(), b.ino());
    sandbox.assert_untouched();
}

#[test]
fn truncated_and_garbage_input_fail_cleanly() {
    require_root();
    let data = vec![b'z'; 10_000];
    let tar = Layer::new().dir("d/", 0o755).file("d/file", &data).finish();
    // (A stream that ends exactly between two entries, without the
    // end-of-archive blocks, is accepted, as Go's archive/tar does.)
    for cut in [1, 100, 700, 1024 + 600, 1024 + 5000, tar.len() - 1100] {
        let sandbox = Sandbox::new();
        assert!(sandbox.unpack(&tar[..cut]).is_err(), "cut at {cut}");
        sandbox.assert_untouched();
    }
    let mut garbage = vec![0u8; 4096];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut garbage {
        *byte = xorshift(&mut state) as u8;
    }
    for input in [
        &garbage[..],
        &[0x1f, 0x8b, 1, 2, 3][..],
        &[0x28, 0xb5, 0x2f, 0xfd, 0][..],
    ] {
        let sandbox = Sandbox::new();
        assert!(sandbox.unpack(input).is_err());
        sandbox.assert_untouched();
    }
    // An empty stream is an empty layer.
    let sandbox = Sandbox::new();
    assert_eq!(sandbox.unpack(b"").unwrap().diff_id, Digest::of(b""));
}

#[test]
fn huge_headers_are_refused_without_holding_them() {
    require_root();
    // A PAX header claiming 64 MiB, followed by that many bytes.
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..5].copy_from_slice(b"pax/x");
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(64 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.resize(512 + (64 << 20), b'a');
    let sandbox = Sandbox::new();
    let error = sandbox.unpack(&tar).unwrap_err().to_string();
    assert!(error.contains("longer than"), "{error}");
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Small layers, benign and malicious, that seed the fuzzer and the
/// mutation test below.
fn seed_corpus() -> Vec<(&'static str, Vec<u8>)> {
    let outside = FIXED_OUTSIDE;
    let sentinel = format!("{FIXED_OUTSIDE}/sentinel");
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&sample_layer()).unwrap();
    vec![
        ("sample", sample_layer()),
        ("sample-gzip", gzip.finish().unwrap()),
        (
            "whiteouts",
            Layer::new()
                .dir("a/", 0o755)
                .file("a/.wh.x", b"")
                .file("a/.wh..wh..opq", b"")
                .file(".wh.a", b"")
                .file("a/y", b"y")
                .finish(),
        ),
        (
            "whiteouts-zstd",
            zstd::encode_all(
                &Layer::new().file(".wh.z", b"").dir("b/", 0o755).finish()[..],
                1,
            )
            .unwrap(),
        ),
        (
            "dotdot",
            Layer::new()
                .file("../../../../tmp/keel-layer-test-outside/x", b"e")
                .finish(),
        ),
        (
            "symlink-abs",
            Layer::new()
                .symlink("evil", outside)
                .file("evil/sentinel", b"overwritten")
                .file("evil/new", b"e")
                .finish(),
        ),
        (
            "symlink-up",
            Layer::new()
                .dir("a/", 0o755)
                .symlink("a/up", "../../../../../../..")
                .file("a/up/tmp/keel-layer-test-outside/sentinel", b"overwritten")
                .finish(),
        ),
        (
            "hardlink-abs",
            Layer::new()
                .hardlink("stolen", &sentinel)
                .symlink("out", outside)
                .hardlink("stolen2", "out/sentinel")
                .file("stolen2", b"overwritten")
                .finish(),
        ),
        (
            "replace",
            Layer::new()
                .dir("d/", 0o755)
                .file("d/f", b"f")
                .symlink("d", outside)
                .file("d/sentinel", b"overwritten")
                .dir("d/", 0o700)
                .finish(),
        ),
        (
            "pax",
            Layer::new()
                .pax(&[
                    ("path", b"pax/long/name/through/pax"),
                    ("SCHILY.xattr.user.k", b"v"),
                    ("uid", b"1234"),
                ])
                .file("ignored", b"data")
                .pax(&[("linkpath", sentinel.as_bytes())])
                .symlink("paxlink", "x")
                .file("paxlink/sentinel", b"overwritten")
                .finish(),
        ),
    ]
}

/// Rewrites the fuzz seed corpus: `cargo test -p keel-image --test layer
/// -- --ignored write_fuzz_corpus`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/unpack");
    fs::create_dir_all(&dir).unwrap();
    for (name, tar) in seed_corpus() {
        fs::write(dir.join(format!("{name}.tar")), tar).unwrap();
    }
}

#[test]
fn seed_corpus_never_escapes() {
    require_root();
    let fixed = fixed_outside();
    for (name, tar) in seed_corpus() {
        let sandbox = Sandbox::new();
        let _ = sandbox.unpack(&tar);
        sandbox.assert_untouched();
        assert_dir_untouched(&fixed);
        let _ = name;
    }
}

/// Mutates a tar: flips bytes, overwrites header fields (fixing the header
/// checksum so the parser goes further), truncates or splices.
fn mutate(tar: &[u8], other: &[u8], state: &mut u64) -> Vec<u8> {
    let mut data = tar.to_vec();
    let rounds = 1 + xorshift(state) % 4;
    for _ in 0..rounds {
        if data.is_empty() {
            break;
        }
        match xorshift(state) % 8 {
            0 => {
                let at = (xorshift(state) as usize) % data.len();
                data[at] = xorshift(state) as u8;
            }
            1..=4 => {
                // A header field, checksum fixed.
                let blocks = data.len() / 512;
                if blocks == 0 {
                    continue;
                }
                let block = (xorshift(state) as usize % blocks) * 512;
                let field = xorshift(state) as usize % 500;
                let len = 1 + xorshift(state) as usize % 12;
                let end = (block + field + len).min(block + 512);
                for byte in &mut data[block + field..end] {
                    *byte = match xorshift(state) % 5 {
                        0 => b'/',
                        1 => b'.',
                        2 => b'0' + (xorshift(state) % 8) as u8,
                        3 => 0,
                        _ => xorshift(state) as u8,
                    };
                }
                fix_checksum(&mut data[block..block + 512]);
            }
            5 => {
                let len = (xorshift(state) as usize) % (data.len() + 1);
                data.truncate(len);
            }
            6 => {
                // Splice a block run of another tar in.
                let blocks = other.len() / 512;
                if blocks == 0 {
                    continue;
                }
                let from = (xorshift(state) as usize % blocks) * 512;
                let count = 1 + xorshift(state) as usize % 3;
                let chunk = &other[from..(from + count * 512).min(other.len())];
                let at = (xorshift(state) as usize % (data.len() / 512 + 1)) * 512;
                let at = at.min(data.len());
                data.splice(at..at, chunk.iter().copied());
            }
            _ => {
                // Change an entry's type.
                let blocks = data.len() / 512;
                if blocks == 0 {
                    continue;
                }
                let block = (xorshift(state) as usize % blocks) * 512;
                data[block + 156] = b"0123456xLKgS5"[xorshift(state) as usize % 13];
                fix_checksum(&mut data[block..block + 512]);
            }
        }
    }
    data
}

fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

#[test]
fn mutated_layers_never_escape_or_panic() {
    require_root();
    let fixed = fixed_outside();
    let mut corpus: Vec<Vec<u8>> = seed_corpus().into_iter().map(|(_, tar)| tar).collect();
    // Replay whatever the fuzzer added to its corpus as well.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/unpack");
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries {
            corpus.push(fs::read(entry.unwrap().path()).unwrap());
        }
    }
    let iterations: u64 = std::env::var("KEEL_LAYER_MUTATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000);
    let sandbox = Sandbox::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut unpacked = 0;
    for iteration in 0..iterations {
        let tar = &corpus[(xorshift(&mut state) as usize) % corpus.len()];
        let other = &corpus[(xorshift(&mut state) as usize) % corpus.len()];
        let input = mutate(tar, other, &mut state);
        let result = std::panic::catch_unwind(|| sandbox.unpack(&input));
        let Ok(result) = result else {
            let path = std::env::temp_dir().join(format!("keel-layer-panic-{iteration}.tar"));
            fs::write(&path, &input).unwrap();
            panic!("unpack panicked on input saved at {path:?}");
        };
        if result.is_ok() {
            unpacked += 1;
        }
        sandbox.assert_untouched();
        assert_dir_untouched(&fixed);
        fs::remove_dir_all(sandbox.root()).unwrap();
        fs::create_dir(sandbox.root()).unwrap();
    }
    // The mutations must leave enough layers valid to exercise the writer.
    assert!(
        unpacked > iterations / 10,
        "only {unpacked} of {iterations} unpacked"
    );
}

/// Layers unpacked one over another, each into its own snapshot dir with
/// the ones below as parents (as `ImageStore::commit` does).
struct Stack {
    base: tempfile::TempDir,
    snapshots: Vec<PathBuf>,
}

impl Stack {
    fn new() -> Stack {
        Stack {
            base: tempfile::tempdir().unwrap(),
            snapshots: Vec::new(),
        }
    }

    /// Unpacks the next layer up; returns its snapshot dir.
    fn unpack(&mut self, tar: &[u8]) -> keel_image::Result<PathBuf> {
        let dest = self
            .base
            .path()
            .join(format!("layer{}", self.snapshots.len()));
        fs::create_dir(&dest).unwrap();
        let options = UnpackOptions {
            parents: self.snapshots.iter().rev().cloned().collect(),
            ..root_options()
        };
        let result = layer::unpack(tar, &dest, &options);
        self.snapshots.push(dest.clone());
        result.map(|_| dest)
    }

    /// Every path in a snapshot, with its kind, to see that a layer is
    /// left as it was.
    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            for entry in fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap();
                let meta = fs::symlink_metadata(entry.path()).unwrap();
                let relative = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .display()
                    .to_string();
                out.push(format!("{relative} {:o}", meta.mode()));
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        out.sort();
        out
    }

    /// `find | sort` and `cat` of `files` in the overlay of every snapshot,
    /// mounted in a private mount namespace.
    fn merged(&self, files: &[&str]) -> (Vec<String>, String) {
        let merged = self.base.path().join("merged");
        fs::create_dir_all(&merged).unwrap();
        let lower: Vec<String> = self
            .snapshots
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let script = format!(
            "mount -t overlay overlay -o lowerdir={} {m} && cd {m} && find . | sort && echo --- && cat {}",
            lower.join(":"),
            files.join(" "),
            m = merged.display(),
        );
        let output = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let (listing, contents) = stdout.split_once("---\n").unwrap();
        (
            listing.lines().map(str::to_string).collect(),
            contents.to_string(),
        )
    }
}

/// Debian's usrmerge base: `lib -> usr/lib`, `bin -> usr/bin`, and a
/// relative symlink inside usr/lib that climbs.
fn usrmerge_base() -> Vec<u8> {
    Layer::new()
        .dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .file("usr/lib/libc.so", b"libc")
        .add(Entry {
            name: b"usr/lib/x86_64-linux-gnu/",
            kind: b'5',
            mode: 0o750,
            owner: (0, 42),
            mtime: 1_500_000_000,
            ..Entry::default()
        })
        .file("usr/lib/x86_64-linux-gnu/libold.so", b"old")
        .dir("usr/share/", 0o755)
        .dir("usr/share/data/", 0o711)
        .symlink("usr/lib/data", "../share/data")
        .symlink("lib", "usr/lib")
        .symlink("bin", "/usr/bin")
        .finish()
}

#[test]
fn paths_resolve_through_a_lower_layers_symlinks() {
    require_root();
    let mut stack = Stack::new();
    let base = stack.unpack(&usrmerge_base()).unwrap();
    let base_before = Stack::listing(&base);
    let upper = stack
        .unpack(
            &Layer::new()
                .file("lib/newfile", b"new")
                .file("lib/x86_64-linux-gnu/libfoo.so", b"foo")
                .file("lib/data/d", b"d")
                .file("bin/tool", b"tool")
                .hardlink("lib/hardlink", "lib/newfile")
                .finish(),
        )
        .unwrap();
    assert_eq!(Stack::listing(&base), base_before, "the base is untouched");
    assert!(
        fs::symlink_metadata(upper.join("lib")).is_err(),
        "no lib/ in the upper"
    );
    assert!(
        fs::symlink_metadata(upper.join("bin")).is_err(),
        "no bin/ in the upper"
    );
    assert_eq!(fs::read(upper.join("usr/lib/newfile")).unwrap(), b"new");
    assert_eq!(
        fs::read(upper.join("usr/lib/x86_64-linux-gnu/libfoo.so")).unwrap(),
        b"foo"
    );
    assert_eq!(fs::read(upper.join("usr/share/data/d")).unwrap(), b"d");
    // usr/bin exists in no layer: created, as a missing directory is.
    assert_eq!(fs::read(upper.join("usr/bin/tool")).unwrap(), b"tool");
    assert_eq!(
        fs::metadata(upper.join("usr/lib/hardlink")).unwrap().ino(),
        fs::metadata(upper.join("usr/lib/newfile")).unwrap().ino()
    );
    // The directories met only below were copied up with their metadata,
    // not their content.
    let copied = fs::metadata(upper.join("usr/lib/x86_64-linux-gnu")).unwrap();
    assert_eq!(copied.mode() & 0o7777, 0o750);
    assert_eq!((copied.uid(), copied.gid()), (0, 42));
    assert_eq!(copied.mtime(), 1_500_000_000);
    assert_eq!(
        fs::metadata(upper.join("usr/share/data")).unwrap().mode() & 0o7777,
        0o711
    );
    assert!(!upper.join("usr/lib/libc.so").exists());
    assert!(!upper.join("usr/lib/x86_64-linux-gnu/libold.so").exists());

    // Stacked, /lib still shows all of usr/lib, the new files with it.
    let (listing, contents) = stack.merged(&["lib/newfile", "lib/libc.so", "lib/data/d"]);
    assert_eq!(contents, "newlibcd");
    for path in [
        "./lib",
        "./usr/lib/libc.so",
        "./usr/lib/newfile",
        "./usr/lib/x86_64-linux-gnu/libfoo.so",
        "./usr/lib/x86_64-linux-gnu/libold.so",
        "./usr/bin/tool",
    ] {
        assert!(listing.iter().any(|l| l == path), "{path}: {listing:?}");
    }
    assert!(
        !listing.iter().any(|l| l.starts_with("./lib/")),
        "{listing:?}"
    );
}

#[test]
fn the_layers_own_entries_come_before_the_parents() {
    require_root();
    let mut stack = Stack::new();
    stack.unpack(&usrmerge_base()).unwrap();
    // The layer's own symlink wins over the base's; a lib/ directory
    // entry replaces the symlink, as tar does.
    let upper = stack
        .unpack(
            &Layer::new()
                .dir("opt/", 0o755)
                .symlink("lib", "opt")
                .file("lib/a", b"a")
                .dir("bin/", 0o700)
                .file("bin/b", b"b")
                .finish(),
        )
        .unwrap();
    assert_eq!(fs::read(upper.join("opt/a")).unwrap(), b"a");
    assert_eq!(fs::read(upper.join("bin/b")).unwrap(), b"b");
    assert!(!upper.join("usr").exists());
}

#[test]
fn a_parents_symlink_out_of_the_root_stays_inside() {
    require_root();
    let passwd_before = fs::read("/etc/passwd").unwrap();
    for with_etc in [false, true] {
        let mut stack = Stack::new();
        let mut base = Layer::new()
            .symlink("evil", "/etc")
            .dir("a/", 0o755)
            .symlink("a/climb", "../../../../etc")
            .symlink("host", "/proc/self/root/etc");
        if with_etc {
            base = base.dir("etc/", 0o755).file("etc/hosts", b"hosts");
        }
        let base = stack.unpack(&base.finish()).unwrap();
        let base_before = Stack::listing(&base);
        let upper = stack
            .unpack(
                &Layer::new()
                    .file("evil/passwd", b"root::0:0::/:/bin/sh\n")
                    .file("a/climb/shadow", b"root::1::::::\n")
                    .file("host/group", b"g")
                    .finish(),
            )
            .unwrap();
        assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before);
        assert_eq!(Stack::listing(&base), base_before);
        assert_eq!(
            fs::read(upper.join("etc/passwd")).unwrap(),
            b"root::0:0::/:/bin/sh\n"
        );
        assert_eq!(
            fs::read(upper.join("etc/shadow")).unwrap(),
            b"root::1::::::\n"
        );
        assert_eq!(
            fs::read(upper.join("proc/self/root/etc/group")).unwrap(),
            b"g"
        );
        assert!(
            !upper.join("etc/hosts").exists(),
            "copied up, not its content"
        );
        assert_eq!(
            names(stack.base.path()),
            ["layer0", "layer1"],
            "nothing beside the snapshots"
        );
    }
}

#[test]
fn whiteouts_and_opaque_dirs_below_end_the_lookup() {
    require_root();
    let mut stack = Stack::new();
    stack.unpack(&usrmerge_base()).unwrap();
    // The middle layer deletes lib (the symlink) and makes usr/share opaque.
    let middle = stack
        .unpack(
            &Layer::new()
                .file(".wh.lib", b"")
                .dir("usr/share/", 0o700)
                .file("usr/share/.wh..wh..opq", b"")
                .finish(),
        )
        .unwrap();
    assert!(
        fs::symlink_metadata(middle.join("lib"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let upper = stack
        .unpack(
            &Layer::new()
                .file("lib/x", b"x")
                .file("usr/share/data/y", b"y")
                .finish(),
        )
        .unwrap();
    // lib is gone below: lib/ is a real directory, usr/lib untouched.
    assert!(fs::symlink_metadata(upper.join("lib")).unwrap().is_dir());
    assert_eq!(fs::read(upper.join("lib/x")).unwrap(), b"x");
    assert!(!upper.join("usr/lib").exists());
    // usr/share is opaque in the middle: the base's usr/share/data (0711)
    // is hidden, so data is created afresh (0755) under a copy of the
    // middle's usr/share (0700).
    assert_eq!(
        fs::metadata(upper.join("usr/share")).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(
        fs::metadata(upper.join("usr/share/data")).unwrap().mode() & 0o7777,
        0o755
    );
    let (listing, contents) = stack.merged(&["lib/x", "usr/share/data/y"]);
    assert_eq!(contents, "xy");
    assert!(
        listing.iter().any(|l| l == "./usr/lib/libc.so"),
        "{listing:?}"
    );
    assert!(!listing.iter().any(|l| l == "./lib/libc.so"), "{listing:?}");
}

#[test]
fn symlink_loops_in_the_parents_are_refused() {
    require_root();
    let mut stack = Stack::new();
    stack
        .unpack(&Layer::new().symlink("a", "b").symlink("b", "/a").finish())
        .unwrap();
    let error = stack
        .unpack(&Layer::new().file("a/x", b"x").finish())
        .unwrap_err()
        .to_string();
    assert!(error.contains("a/x"), "{error}");
}
