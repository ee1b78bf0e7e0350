//! Unpacks arbitrary bytes as a layer into a fresh temp dir and checks
//! that nothing was written outside it: not beside it, and not in the
//! fixed directory the seed corpus aims its absolute links at.

#![no_main]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use keel_image::layer::{self, UnpackOptions};
use libfuzzer_sys::fuzz_target;

/// The seed corpus (written by tests/layer.rs) points absolute symlinks and
/// hard links here.
const OUTSIDE: &str = "/tmp/keel-layer-test-outside";

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("listing a directory of the check")
        .map(|entry| {
            entry
                .expect("reading a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn ensure_outside() {
    let outside = Path::new(OUTSIDE);
    let sentinel = outside.join("sentinel");
    if !sentinel.exists() {
        fs::create_dir_all(outside).expect("creating the outside directory");
        fs::write(&sentinel, b"original").expect("writing the sentinel");
    }
}

fn assert_outside_untouched() {
    let outside = Path::new(OUTSIDE);
    assert_eq!(names(outside), ["sentinel"], "a layer wrote into {OUTSIDE}");
    let sentinel = outside.join("sentinel");
    let metadata = fs::symlink_metadata(&sentinel).expect("the sentinel is there");
    assert!(metadata.file_type().is_file(), "the sentinel was replaced");
    assert_eq!(metadata.nlink(), 1, "the sentinel was hard-linked");
    assert_eq!(
        fs::read(&sentinel).expect("reading the sentinel"),
        b"original"
    );
}

fuzz_target!(|data: &[u8]| {
    ensure_outside();
    let base = tempfile::tempdir().expect("creating a temp dir");
    let root = base.path().join("root");
    fs::create_dir(&root).expect("creating the snapshot dir");
    let options = UnpackOptions {
        keep_ownership: true,
        allow_devices: false,
        parents: Vec::new(),
    };
    // Errors are fine; panics, and writes outside `root`, are not.
    let _ = layer::unpack(data, &root, &options);
    assert_eq!(
        names(base.path()),
        ["root"],
        "a layer wrote beside the snapshot"
    );
    assert_outside_untouched();
});
