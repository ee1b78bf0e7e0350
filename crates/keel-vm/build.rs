//! Builds keel's test guest (`guests/test_guest.rs`, a freestanding x86-64
//! program in keel's own guest format) with the rustc that builds the
//! crate: no other target or toolchain is needed. Its path is given to the
//! crate as `KEEL_TEST_GUEST`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let source = manifest.join("guests/test_guest.rs");
    let script = manifest.join("guests/link.ld");
    println!("cargo::rerun-if-changed={}", source.display());
    println!("cargo::rerun-if-changed={}", script.display());
    println!(
        "cargo::rerun-if-changed={}",
        manifest.join("guests").display()
    );
    // The host's triple: its core library is always installed (the crate
    // itself may be built for another libc, e.g. a static musl build).
    let target = std::env::var("HOST").expect("HOST");
    if !target.starts_with("x86_64-") {
        // The guest is x86-64 code; elsewhere there is none to run.
        println!("cargo::rustc-env=KEEL_TEST_GUEST=");
        return;
    }
    let guest = out.join("keel-test-guest");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "--crate-name",
            "keel_test_guest",
        ])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=2",
            "-C",
            "relocation-model=static",
        ])
        .args(["-C", "debuginfo=0", "-C", "strip=symbols"])
        // No SSE: under this machine's PVM a guest's SSE instruction is
        // an #UD that KVM tries to emulate and cannot (see the README).
        // rustc warns that turning SSE off is being phased out for this
        // target; the guest uses no floating point.
        .args(["-C", "target-feature=-sse,-sse2"])
        .args([
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
        ])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", script.display()))
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        .arg("--target")
        .arg(&target)
        .arg(&source)
        .arg("-o")
        .arg(&guest)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run rustc for the test guest");
    assert!(status.success(), "building the test guest failed");
    println!("cargo::rustc-env=KEEL_TEST_GUEST={}", guest.display());
}
