//! Pulls from Debian's docker-registry on loopback, filled by skopeo from
//! OCI layouts made offline.

mod common;

use std::sync::{Arc, Mutex};

use common::{Layout, Registry, busybox_layer, skopeo_push, stored_digest};
use keel_image::content::ContentStore;
use keel_image::reference::Reference;
use keel_registry::auth::DockerConfig;
use keel_registry::pull::{BlobKind, ProgressEvent, ProgressState};
use keel_registry::{Client, ClientOptions, Platform, PullOptions, pull, pull_with};
use keel_testutil::TempRoot;

fn client(config: DockerConfig) -> Client {
    Client::new(ClientOptions {
        docker_config: Some(config),
        ..ClientOptions::default()
    })
    .expect("create a registry client")
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

/// One busybox image (amd64) tagged `tag` in a new layout.
fn single_image(temp: &TempRoot, tag: &str) -> (Layout, common::Blob, common::Blob, common::Blob) {
    let mut layout = Layout::new(temp.subdir("layout"));
    let (layer, diff_id) = busybox_layer();
    let layer = layout.add_blob(&layer, common::OCI_LAYER_GZIP);
    let (manifest, config) = layout.add_image(&layer, &diff_id, "amd64");
    layout.tag(&manifest, tag);
    (layout, manifest, config, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_by_tag_and_by_digest() {
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let (layout, manifest, config, layer) = single_image(&temp, "v1");
    let name = format!("{}/test/busybox", registry.host());
    skopeo_push(&temp, &layout.dir, "v1", &format!("{name}:v1"), None);

    let client = client(DockerConfig::default());
    client.ping(&registry.host()).await.expect("ping");
    assert_eq!(
        client
            .list_tags(&registry.host(), "test/busybox")
            .await
            .unwrap(),
        vec!["v1".to_string()]
    );

    let store = ContentStore::open(&temp.root()).unwrap();
    let events = Arc::new(Mutex::new(Vec::<ProgressEvent>::new()));
    let options = PullOptions {
        platform: amd64(),
        progress: Some({
            let events = events.clone();
            Arc::new(move |event| events.lock().unwrap().push(event))
        }),
        ..PullOptions::default()
    };
    let reference = Reference::parse(&format!("{name}:v1")).unwrap();
    let result = pull_with(&client, &store, &reference, &options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "pull {reference}: {e}\nregistry log:\n{}",
                registry.log_tail()
            )
        });
    assert_eq!(result.manifest_digest, manifest.digest);
    assert_eq!(result.config_digest, config.digest);
    assert_eq!(result.index_digest, None);
    assert_eq!(result.repo_digest(), &manifest.digest);
    assert_eq!(result.layers.len(), 1);
    assert_eq!(result.layers[0].digest, layer.digest);
    assert_eq!(result.layers[0].size, layer.size);
    assert_eq!(result.layers[0].media_type, common::OCI_LAYER_GZIP);
    for blob in [&manifest, &config, &layer] {
        assert!(store.contains(&blob.digest), "{} not stored", blob.digest);
        assert_eq!(stored_digest(&temp.root(), &blob.digest), blob.digest);
    }
    assert_eq!(store.list().unwrap().len(), 3);
    {
        let events = events.lock().unwrap();
        let layer_states: Vec<ProgressState> = events
            .iter()
            .filter(|e| e.digest == layer.digest)
            .map(|e| e.state)
            .collect();
        assert_eq!(layer_states.first(), Some(&ProgressState::Waiting));
        assert!(layer_states.contains(&ProgressState::Downloading));
        assert!(layer_states.contains(&ProgressState::Verifying));
        assert_eq!(layer_states.last(), Some(&ProgressState::Done));
        let done = events.iter().rfind(|e| e.digest == layer.digest).unwrap();
        assert_eq!((done.current, done.total), (layer.size, layer.size));
        assert!(
            events
                .iter()
                .any(|e| e.kind == BlobKind::Config && e.state == ProgressState::Done)
        );
        assert!(
            events
                .windows(2)
                .filter(|w| w[0].digest == layer.digest && w[1].digest == layer.digest)
                .all(|w| w[0].current <= w[1].current),
            "progress went backwards"
        );
    }

    // Again: nothing is downloaded.
    events.lock().unwrap().clear();
    let again = pull_with(&client, &store, &reference, &options)
        .await
        .unwrap();
    assert_eq!(again, result);
    let states: Vec<ProgressState> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.state != ProgressState::Waiting)
        .map(|e| e.state)
        .collect();
    assert_eq!(states, vec![ProgressState::AlreadyExists; 2]);

    // By digest, into an empty store.
    let other = TempRoot::new();
    let store = ContentStore::open(&other.root()).unwrap();
    let by_digest = Reference::parse(&format!("{name}@{}", manifest.digest)).unwrap();
    let result = pull(&client, &store, &by_digest, &amd64()).await.unwrap();
    assert_eq!(result.manifest_digest, manifest.digest);
    assert_eq!(result.config_digest, config.digest);
    assert!(store.contains(&layer.digest));

    // What the client reads directly.
    let fetched = client.get_manifest(&by_digest).await.unwrap();
    assert_eq!(fetched.digest, manifest.digest);
    assert_eq!(fetched.media_type, common::OCI_MANIFEST);
    assert_eq!(
        client
            .head_blob(&registry.host(), "test/busybox", &layer.digest)
            .await
            .unwrap(),
        Some(layer.size)
    );
    let absent = keel_image::digest::Digest::of(b"absent");
    assert_eq!(
        client
            .head_blob(&registry.host(), "test/busybox", &absent)
            .await
            .unwrap(),
        None
    );

    // Unknown tag and unknown repository: the registry's codes.
    let missing = Reference::parse(&format!("{name}:nope")).unwrap();
    let err = pull(&client, &store, &missing, &amd64()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("MANIFEST_UNKNOWN"), "{text}");
    assert!(text.contains("test/busybox:nope"), "{text}");
    let err = client
        .list_tags(&registry.host(), "test/none")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("NAME_UNKNOWN"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selects_the_platform_of_a_multi_arch_index() {
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let mut layout = Layout::new(temp.subdir("layout"));
    let (layer, diff_id) = busybox_layer();
    let layer = layout.add_blob(&layer, common::OCI_LAYER_GZIP);
    let (amd64_manifest, amd64_config) = layout.add_image(&layer, &diff_id, "amd64");
    let (arm64_manifest, arm64_config) = layout.add_image(&layer, &diff_id, "arm64");
    let index = layout.add_index(&[(&amd64_manifest, "amd64"), (&arm64_manifest, "arm64")]);
    layout.tag(&index, "multi");
    let name = format!("{}/test/multi", registry.host());
    skopeo_push(&temp, &layout.dir, "multi", &format!("{name}:multi"), None);

    let client = client(DockerConfig::default());
    let reference = Reference::parse(&format!("{name}:multi")).unwrap();
    let top = client.get_manifest(&reference).await.unwrap();
    assert_eq!(top.digest, index.digest);
    assert_eq!(top.media_type, common::OCI_INDEX);

    for (platform, manifest, config) in [
        ("linux/arm64", &arm64_manifest, &arm64_config),
        ("linux/amd64", &amd64_manifest, &amd64_config),
    ] {
        let root = temp.subdir(&format!("store-{}", platform.replace('/', "-")));
        let store = ContentStore::open(&root).unwrap();
        let result = pull(
            &client,
            &store,
            &reference,
            &Platform::parse(platform).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("pull {platform}: {e}"));
        assert_eq!(
            result.index_digest.as_ref(),
            Some(&index.digest),
            "{platform}"
        );
        assert_eq!(result.repo_digest(), &index.digest);
        assert_eq!(&result.manifest_digest, &manifest.digest, "{platform}");
        assert_eq!(&result.config_digest, &config.digest, "{platform}");
        assert_eq!(stored_digest(&root, &config.digest), config.digest);
        assert_eq!(stored_digest(&root, &layer.digest), layer.digest);
        assert!(store.contains(&index.digest));
        // The other platform's config is not there.
        let other = if config.digest == arm64_config.digest {
            &amd64_config
        } else {
            &arm64_config
        };
        assert!(!store.contains(&other.digest), "{platform}");
    }

    let store = ContentStore::open(&temp.subdir("store-s390x")).unwrap();
    let err = pull(
        &client,
        &store,
        &reference,
        &Platform::parse("linux/s390x").unwrap(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no matching manifest for linux/s390x in the manifest list entries"),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_and_without_credentials() {
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", Some(("keel", "s3cret")));
    let (layout, manifest, config, layer) = single_image(&temp, "v1");
    let name = format!("{}/private/busybox", registry.host());
    skopeo_push(
        &temp,
        &layout.dir,
        "v1",
        &format!("{name}:v1"),
        Some("keel:s3cret"),
    );
    let reference = Reference::parse(&format!("{name}:v1")).unwrap();

    // Without credentials: the registry's own words.
    let anonymous = client(DockerConfig::default());
    let store = ContentStore::open(&temp.subdir("anonymous")).unwrap();
    let err = pull(&anonymous, &store, &reference, &amd64())
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("UNAUTHORIZED: authentication required"),
        "{text}"
    );
    assert!(text.contains(&registry.host()), "{text}");
    assert!(store.list().unwrap().is_empty());

    // A wrong password is refused the same way.
    let docker_config = temp.subdir("docker");
    let wrong = base64_login("keel:wrong");
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{wrong}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let bad = client(DockerConfig::load(&docker_config.join("config.json")).unwrap());
    let err = pull(&bad, &store, &reference, &amd64()).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");

    // With credentials from a docker config.json (keyed by URL, as docker
    // login writes some of them).
    let good = base64_login("keel:s3cret");
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths":{{"http://{}/v2/":{{"auth":"{good}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let client = client(DockerConfig::load(&docker_config.join("config.json")).unwrap());
    let store = ContentStore::open(&temp.subdir("authorized")).unwrap();
    let result = pull(&client, &store, &reference, &amd64())
        .await
        .unwrap_or_else(|e| panic!("authorized pull: {e}"));
    assert_eq!(result.manifest_digest, manifest.digest);
    assert_eq!(result.config_digest, config.digest);
    assert_eq!(
        stored_digest(&store_root(&temp, "authorized"), &layer.digest),
        layer.digest
    );
    assert_eq!(
        client
            .list_tags(&registry.host(), "private/busybox")
            .await
            .unwrap(),
        vec!["v1".to_string()]
    );
}

fn store_root(temp: &TempRoot, name: &str) -> std::path::PathBuf {
    temp.path().join(name)
}

fn base64_login(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_registry_is_caught_and_leaves_nothing() {
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let (layout, manifest, config, layer) = single_image(&temp, "v1");
    let name = format!("{}/test/busybox", registry.host());
    skopeo_push(&temp, &layout.dir, "v1", &format!("{name}:v1"), None);

    let proxy = common::lying_proxy(registry.port, layer.digest.to_string()).await;
    let client = client(DockerConfig::default());
    let store = ContentStore::open(&temp.root()).unwrap();
    let reference = Reference::parse(&format!("127.0.0.1:{proxy}/test/busybox:v1")).unwrap();
    let err = pull(&client, &store, &reference, &amd64())
        .await
        .unwrap_err()
        .to_string();
    // Both digests named: the one asked for, and what the bytes hash to.
    let expected = format!("expected {}, got sha256:", layer.digest);
    assert!(
        err.contains("digest mismatch") && err.contains(&expected),
        "{err}"
    );
    let actual = err
        .split("got ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_alphanumeric() && c != ':')
                .next()
        })
        .unwrap_or_default();
    assert_eq!(actual.len(), "sha256:".len() + 64, "{err}");
    assert_ne!(actual, layer.digest.to_string(), "{err}");
    assert!(!store.contains(&layer.digest));
    // No manifest either: an image is stored only whole.
    assert!(!store.contains(&manifest.digest));
    let partials = std::fs::read_dir(temp.root().join("content/ingest"))
        .unwrap()
        .count();
    assert_eq!(partials, 0, "partial ingests left behind");

    // The honest registry still serves it.
    let reference = Reference::parse(&format!("{name}:v1")).unwrap();
    let result = pull(&client, &store, &reference, &amd64()).await.unwrap();
    assert_eq!(result.config_digest, config.digest);
    assert_eq!(stored_digest(&temp.root(), &layer.digest), layer.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_mounts_and_puts_manifests() {
    use bytes::Bytes;
    use keel_image::digest::Digest;
    use keel_registry::client::UploadMode;

    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let host = registry.host();
    let client = client(DockerConfig::default());
    let chunks = |data: &'static [u8]| {
        futures_util::stream::iter(
            data.chunks(7000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        )
    };

    // A layer uploaded in PATCH chunks, a config in one PUT.
    let layer: &'static [u8] = b"chunked layer data ".repeat(3000).leak();
    let layer_digest = Digest::of(layer);
    client
        .upload_blob(
            &host,
            "push/one",
            &layer_digest,
            layer.len() as u64,
            chunks(layer),
            UploadMode::Chunked(16 * 1024),
        )
        .await
        .unwrap_or_else(|e| panic!("chunked upload: {e}\n{}", registry.log_tail()));
    let config: &'static [u8] =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = Digest::of(config);
    client
        .upload_blob(
            &host,
            "push/one",
            &config_digest,
            config.len() as u64,
            chunks(config),
            UploadMode::Monolithic,
        )
        .await
        .unwrap_or_else(|e| panic!("monolithic upload: {e}\n{}", registry.log_tail()));
    assert_eq!(
        client
            .head_blob(&host, "push/one", &layer_digest)
            .await
            .unwrap(),
        Some(layer.len() as u64)
    );

    // A wrong digest is refused by the registry, with its code.
    let err = client
        .upload_blob(
            &host,
            "push/one",
            &Digest::of(b"other"),
            5,
            chunks(b"bytes"),
            UploadMode::Monolithic,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("DIGEST_INVALID"), "{err}");

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": common::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}]
    })
    .to_string();
    let manifest_digest = client
        .put_manifest(
            &host,
            "push/one",
            "v1",
            common::OCI_MANIFEST,
            Bytes::from(manifest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(manifest_digest, Digest::of(manifest.as_bytes()));

    // Mounted into another repository, then pulled from there.
    for digest in [&layer_digest, &config_digest] {
        assert!(
            client
                .mount_blob(&host, "push/two", digest, "push/one")
                .await
                .unwrap()
        );
    }
    assert!(
        !client
            .mount_blob(&host, "push/two", &Digest::of(b"absent"), "push/one")
            .await
            .unwrap()
    );
    client
        .put_manifest(
            &host,
            "push/two",
            "latest",
            common::OCI_MANIFEST,
            Bytes::from(manifest),
        )
        .await
        .unwrap();
    let store = ContentStore::open(&temp.root()).unwrap();
    let reference = Reference::parse(&format!("{host}/push/two")).unwrap();
    let result = pull(&client, &store, &reference, &amd64()).await.unwrap();
    assert_eq!(result.manifest_digest, manifest_digest);
    assert_eq!(stored_digest(&temp.root(), &layer_digest), layer_digest);
}
