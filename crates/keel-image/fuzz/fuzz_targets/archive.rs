//! Image archives (`docker save`, `podman save`, OCI layouts as tar) from
//! arbitrary bytes, loaded into a fresh store: no panic, every stored blob
//! matches its digest, no ingest leftovers, a failed load tags nothing.
//! Needs root (layers are unpacked with their owners). The checks live in
//! tests/fuzzing/mod.rs, which `cargo test --test parsers` also runs.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temp dir for the stores"));
    fuzzing::check_archive(data, dir.path());
});
