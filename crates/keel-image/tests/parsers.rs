//! The manifest and archive parsers under hostile input, on stable: the
//! seed corpus of the cargo-fuzz targets `manifest` and `archive` (written
//! by `write_fuzz_corpus_for_parsers`), what the fuzzer has added to it,
//! and thousands of mutations of it, each through the checks the fuzz
//! targets run (`tests/fuzzing/mod.rs`).

mod fuzzing;

use std::fs;
use std::path::Path;

use keel_image::digest::Digest;
use keel_testutil::{TempRoot, require_root};
use serde_json::json;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn digest_of(text: &str) -> String {
    Digest::of(text.as_bytes()).to_string()
}

/// Documents as registries send them, each prefixed with the media type
/// selector byte [`fuzzing::check_document`] reads.
fn seed_documents() -> Vec<(&'static str, Vec<u8>)> {
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": digest_of("layer"), "size": 5});
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest_of("config"), "size": 6},
        "layers": [layer, {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                           "digest": digest_of("foreign"), "size": 7,
                           "urls": ["https://example.invalid/layer"]}],
        "annotations": {"org.opencontainers.image.title": "x"},
    });
    let docker_manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest_of("config"), "size": 6},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": digest_of("layer"), "size": 5}],
    });
    let entry = |arch: &str, variant: Option<&str>, n: &str| {
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        json!({"mediaType": OCI_MANIFEST, "digest": digest_of(n), "size": 1, "platform": platform})
    };
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [entry("amd64", None, "a"), entry("arm64", Some("v8"), "b"),
                      entry("arm", Some("v7"), "c"),
                      {"mediaType": OCI_MANIFEST, "digest": digest_of("d"), "size": 1,
                       "platform": {"os": "unknown", "architecture": "unknown"},
                       "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}],
    });
    let config = json!({
        "created": "2024-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "Labels": {"a": "b"},
                   "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}},
                   "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000}},
        "rootfs": {"type": "layers", "diff_ids": [digest_of("diff")]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "x", "empty_layer": true}],
        "unknown": [1, 2.5, null],
    });
    let schema1 = json!({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []});
    let references = "busybox\nlocalhost:5000/a/b:tag\nregistry.example.com/x@sha256:".to_string()
        + &"0".repeat(64)
        + "\nlinux/arm64/v8\nUPPER/case\n";
    let with = |selector: u8, value: &serde_json::Value| {
        let mut data = vec![selector];
        data.extend(serde_json::to_vec(value).unwrap());
        data
    };
    let none = fuzzing::MEDIA_TYPES.len() as u8;
    let mut references_doc = vec![none];
    references_doc.extend(references.as_bytes());
    vec![
        ("oci-manifest", with(0, &manifest)),
        ("docker-manifest", with(2, &docker_manifest)),
        ("docker-manifest-untyped", with(none, &docker_manifest)),
        ("oci-index", with(1, &index)),
        ("index-as-json", with(5, &index)),
        ("index-as-manifest", with(0, &index)),
        ("config", with(none, &config)),
        ("schema1", with(4, &schema1)),
        ("references", references_doc),
    ]
}

fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        // The name as given, `..` and all (tar's set_path refuses those).
        let name = path.as_bytes();
        header.as_old_mut().name[..name.len().min(100)]
            .copy_from_slice(&name[..name.len().min(100)]);
        header.set_cksum();
        builder.append(&header, &data[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The files of a small image archive: docker's `manifest.json` and an OCI
/// layout in one, as `keel save` and `docker save` write them.
fn archive_entries() -> Vec<(String, Vec<u8>)> {
    let layer = tar_of(&[("etc/hello".to_string(), b"hello\n".to_vec())]);
    let layer_digest = Digest::of(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    })
    .to_string()
    .into_bytes();
    let config_digest = Digest::of(&config);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest.to_string(), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = Digest::of(&manifest);
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": manifest_digest.to_string(), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": "docker.io/keel-test/tiny:1",
                        "org.opencontainers.image.ref.name": "1"}}]});
    let docker = json!([{"Config": blob(&config_digest), "RepoTags": ["keel-test/tiny:1"],
                         "Layers": [blob(&layer_digest)]}]);
    vec![
        (blob(&layer_digest), layer),
        (blob(&config_digest), config),
        (blob(&manifest_digest), manifest),
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index.to_string().into_bytes()),
        ("manifest.json".into(), docker.to_string().into_bytes()),
    ]
}

fn seed_archives() -> Vec<(&'static str, Vec<u8>)> {
    let all = archive_entries();
    let without = |name: &str| -> Vec<(String, Vec<u8>)> {
        all.iter().filter(|(p, _)| p != name).cloned().collect()
    };
    vec![
        ("both", tar_of(&all)),
        ("oci-only", tar_of(&without("manifest.json"))),
        ("docker-only", tar_of(&without("index.json"))),
    ]
}

fn corpus_dir(target: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// What the fuzzer found worth keeping, replayed here too.
fn saved_corpus(target: &str) -> Vec<Vec<u8>> {
    let Ok(entries) = fs::read_dir(corpus_dir(target)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read(e.path()).ok())
        .collect()
}

/// Rewrites the seed corpora: `cargo test -p keel-image --test parsers --
/// --ignored write_fuzz_corpus_for_parsers`.
#[test]
#[ignore]
fn write_fuzz_corpus_for_parsers() {
    for (target, seeds) in [("manifest", seed_documents()), ("archive", seed_archives())] {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

/// JSON-aware mutations: swaps a string or number for a hostile one, drops
/// or duplicates a span, flips a byte, truncates.
fn mutate_json(data: &[u8], state: &mut u64) -> Vec<u8> {
    const HOSTILE: &[&str] = &[
        "\"\"",
        "\"../../etc/passwd\"",
        "\"/abs\"",
        "null",
        "-1",
        "18446744073709551615",
        "1e309",
        "[]",
        "{}",
        "\"sha256:zz\"",
        "\"sha256:\"",
        "\"md5:00\"",
        "true",
        "\"application/vnd.oci.image.index.v1+json\"",
        "\"\\u0000\"",
        "\"a\\\"b\"",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];
    let mut data = data.to_vec();
    for _ in 0..1 + xorshift(state) % 3 {
        if data.is_empty() {
            break;
        }
        let at = xorshift(state) as usize % data.len();
        match xorshift(state) % 6 {
            0 => data[at] = xorshift(state) as u8,
            1 => data.truncate(at),
            2 => {
                // Replace the value starting at the next ':' or ','.
                if let Some(offset) = data[at..].iter().position(|&b| b == b':' || b == b',') {
                    let start = at + offset + 1;
                    let end = data[start..]
                        .iter()
                        .position(|&b| b == b',' || b == b'}' || b == b']')
                        .map_or(data.len(), |e| start + e);
                    let hostile = HOSTILE[xorshift(state) as usize % HOSTILE.len()];
                    data.splice(start..end, hostile.bytes());
                }
            }
            3 => {
                let len = 1 + xorshift(state) as usize % 16;
                let end = (at + len).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let len = 1 + xorshift(state) as usize % 32;
                let end = (at + len).min(data.len());
                let copy: Vec<u8> = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            _ => {
                let hostile = HOSTILE[xorshift(state) as usize % HOSTILE.len()];
                data.splice(at..at, hostile.bytes());
            }
        }
    }
    data
}

#[test]
fn mutated_documents_never_panic() {
    let mut corpus: Vec<Vec<u8>> = seed_documents().into_iter().map(|(_, d)| d).collect();
    corpus.extend(saved_corpus("manifest"));
    for data in &corpus {
        fuzzing::check_document(data);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..20_000 {
        let seed = &corpus[round % corpus.len()];
        let mut data = mutate_json(seed, &mut state);
        if let Some(first) = data.first_mut()
            && round % 7 == 0
        {
            *first = xorshift(&mut state) as u8;
        }
        fuzzing::check_document(&data);
    }
}

#[test]
fn mutated_archives_load_whole_or_not_at_all() {
    require_root();
    let temp = TempRoot::new();
    let dir = temp.subdir("work");
    let mut corpus: Vec<Vec<u8>> = seed_archives().into_iter().map(|(_, d)| d).collect();
    for data in &corpus {
        fuzzing::check_archive(data, &dir);
    }
    corpus.extend(saved_corpus("archive"));
    let entries = archive_entries();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..300 {
        let data = if round % 3 == 0 {
            // Raw bytes of a saved input, mutated.
            mutate_json(&corpus[round % corpus.len()], &mut state)
        } else {
            // One file of the archive mutated, the tar itself well formed.
            let mut files = entries.clone();
            if round % 5 == 0 {
                files.retain(|(p, _)| p != "manifest.json");
            }
            let pick = xorshift(&mut state) as usize % files.len();
            files[pick].1 = mutate_json(&files[pick].1, &mut state);
            if xorshift(&mut state).is_multiple_of(4) {
                // Or renamed: a path the documents may not expect.
                let names = [
                    "../escape",
                    "/abs/blob",
                    "blobs/sha256/..",
                    "blobs/sha256/x/y",
                ];
                files[pick].0 = names[xorshift(&mut state) as usize % names.len()].into();
            }
            tar_of(&files)
        };
        fuzzing::check_archive(&data, &dir);
    }
}
