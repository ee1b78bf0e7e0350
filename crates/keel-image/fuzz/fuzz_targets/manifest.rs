//! Manifests, indexes, configs, references and platforms from arbitrary
//! bytes (the first byte picks the Content-Type): no panic, and what
//! parses survives a round trip. The checks live in tests/fuzzing/mod.rs,
//! which `cargo test --test parsers` also runs over this corpus.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzzing/mod.rs"]
mod fuzzing;

fuzz_target!(|data: &[u8]| {
    fuzzing::check_document(data);
});
