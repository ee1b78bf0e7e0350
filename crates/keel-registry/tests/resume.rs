//! Downloads that break: a proxy in front of Debian's docker-registry cuts
//! the layer's body short, ignores `Range`, and logs what the client asked
//! for; the pull must resume from the byte it reached (in the same pull, or
//! in the next one after a failed or killed pull), and store exactly the
//! blob the manifest names.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Layout, Registry, busybox_layer, skopeo_push, stored_digest};
use keel_image::content::ContentStore;
use keel_image::reference::Reference;
use keel_registry::auth::DockerConfig;
use keel_registry::pull::{BlobKind, ProgressEvent, ProgressState};
use keel_registry::{Client, ClientOptions, Platform, PullOptions, pull_with};
use keel_testutil::TempRoot;
use keel_testutil::proxy::{Faults, FaultyProxy};

const CUT: u64 = 200_000;

struct Setup {
    temp: TempRoot,
    _registry: Registry,
    proxy: FaultyProxy,
    manifest: common::Blob,
    layer: common::Blob,
}

/// A registry holding one busybox image (a gzip layer of ~1 MB), behind a
/// proxy with no faults yet.
fn setup() -> Setup {
    let temp = TempRoot::new();
    let registry = Registry::start(&temp, "registry", None);
    let mut layout = Layout::new(temp.subdir("layout"));
    let (layer, diff_id) = busybox_layer();
    let layer = layout.add_blob(&layer, common::OCI_LAYER_GZIP);
    let (manifest, _config) = layout.add_image(&layer, &diff_id, "amd64");
    layout.tag(&manifest, "v1");
    skopeo_push(
        &temp,
        &layout.dir,
        "v1",
        &format!("{}/test/busybox:v1", registry.host()),
        None,
    );
    assert!(
        layer.size > 3 * CUT,
        "the layer ({} bytes) must be larger than the cuts",
        layer.size
    );
    let proxy = FaultyProxy::start(registry.port, Faults::default());
    Setup {
        temp,
        _registry: registry,
        proxy,
        manifest,
        layer,
    }
}

fn client() -> Client {
    Client::new(ClientOptions {
        docker_config: Some(DockerConfig::default()),
        ..ClientOptions::default()
    })
    .expect("create a registry client")
}

fn options(attempts: u32, events: &Arc<Mutex<Vec<ProgressEvent>>>) -> PullOptions {
    let events = events.clone();
    PullOptions {
        platform: Platform::parse("linux/amd64").unwrap(),
        attempts,
        retry_delay: Duration::from_millis(10),
        progress: Some(Arc::new(move |event| events.lock().unwrap().push(event))),
        ..PullOptions::default()
    }
}

fn reference(setup: &Setup) -> Reference {
    Reference::parse(&format!("{}/test/busybox:v1", setup.proxy.host())).unwrap()
}

fn partial(setup: &Setup) -> std::path::PathBuf {
    setup
        .temp
        .root()
        .join("content/ingest")
        .join(format!("{}.partial", setup.layer.digest.hex()))
}

fn ranges(gets: &[keel_testutil::proxy::Seen]) -> Vec<Option<String>> {
    gets.iter().map(|g| g.range.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_resumed_from_the_byte_reached() {
    let setup = setup();
    let hex = setup.layer.digest.hex().to_string();
    setup.proxy.set(Faults {
        target: hex.clone(),
        cut_after: Some(CUT),
        cut_times: 2,
        ..Faults::default()
    });
    let store = ContentStore::open(&setup.temp.root()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    pull_with(&client(), &store, &reference(&setup), &options(5, &events))
        .await
        .expect("the pull survives two cut connections");

    let gets = setup.proxy.gets_of(&hex);
    assert_eq!(
        ranges(&gets),
        [
            None,
            Some(format!("bytes={CUT}-")),
            Some(format!("bytes={}-", 2 * CUT))
        ],
        "{gets:?}"
    );
    // Every byte crossed the wire once.
    let sent: u64 = gets.iter().map(|g| g.body_bytes).sum();
    assert_eq!(sent, setup.layer.size);
    assert_eq!(
        stored_digest(&setup.temp.root(), &setup.layer.digest),
        setup.layer.digest
    );
    assert!(store.contains(&setup.manifest.digest));
    assert!(!partial(&setup).exists());
    let retries = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == BlobKind::Layer && matches!(e.state, ProgressState::Retrying(_)))
        .count();
    assert_eq!(retries, 2, "one Retrying event per cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_leaves_a_partial_the_next_one_finishes() {
    let setup = setup();
    let hex = setup.layer.digest.hex().to_string();
    setup.proxy.set(Faults {
        target: hex.clone(),
        cut_after: Some(CUT),
        cut_times: 3,
        ..Faults::default()
    });
    let store = ContentStore::open(&setup.temp.root()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let err = pull_with(&client(), &store, &reference(&setup), &options(2, &events))
        .await
        .expect_err("two tries, two cuts: the pull fails")
        .to_string();
    assert!(err.contains(&setup.layer.digest.to_string()), "{err}");
    // Nothing visible: no layer, no manifest; what arrived waits.
    assert!(!store.contains(&setup.layer.digest));
    assert!(!store.contains(&setup.manifest.digest));
    assert_eq!(
        std::fs::metadata(partial(&setup)).unwrap().len(),
        2 * CUT,
        "the partial holds what both tries received"
    );

    setup.proxy.set(Faults {
        target: hex.clone(),
        ..Faults::default()
    });
    let before = setup.proxy.gets_of(&hex).len();
    pull_with(&client(), &store, &reference(&setup), &options(1, &events))
        .await
        .expect("the next pull finishes the blob");
    let gets = setup.proxy.gets_of(&hex)[before..].to_vec();
    assert_eq!(
        ranges(&gets),
        [Some(format!("bytes={}-", 2 * CUT))],
        "{gets:?}"
    );
    assert_eq!(gets[0].body_bytes, setup.layer.size - 2 * CUT);
    assert_eq!(
        stored_digest(&setup.temp.root(), &setup.layer.digest),
        setup.layer.digest
    );
    assert!(!partial(&setup).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_range_sends_it_all_again() {
    let setup = setup();
    let hex = setup.layer.digest.hex().to_string();
    setup.proxy.set(Faults {
        target: hex.clone(),
        cut_after: Some(CUT),
        cut_times: 1,
        ignore_range: true,
        ..Faults::default()
    });
    let store = ContentStore::open(&setup.temp.root()).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    pull_with(&client(), &store, &reference(&setup), &options(5, &events))
        .await
        .expect("a whole blob instead of the rest is taken from the start");
    let gets = setup.proxy.gets_of(&hex);
    assert_eq!(
        ranges(&gets),
        [None, Some(format!("bytes={CUT}-"))],
        "{gets:?}"
    );
    assert_eq!(gets[1].body_bytes, setup.layer.size);
    assert_eq!(
        stored_digest(&setup.temp.root(), &setup.layer.digest),
        setup.layer.digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_that_is_not_the_blobs_start_is_replaced() {
    let setup = setup();
    let hex = setup.layer.digest.hex().to_string();
    let store = ContentStore::open(&setup.temp.root()).unwrap();
    // What a crash could leave: the right length, the wrong bytes.
    std::fs::write(partial(&setup), vec![0u8; 1000]).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    pull_with(&client(), &store, &reference(&setup), &options(1, &events))
        .await
        .expect("the digest check catches it and the blob comes again whole");
    let gets = setup.proxy.gets_of(&hex);
    assert_eq!(
        ranges(&gets),
        [Some("bytes=1000-".to_string()), None],
        "{gets:?}"
    );
    assert_eq!(
        stored_digest(&setup.temp.root(), &setup.layer.digest),
        setup.layer.digest
    );
    assert!(!partial(&setup).exists());
}
