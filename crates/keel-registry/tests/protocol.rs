//! The protocol corners a real registry here does not show: a token
//! server, redirects to blob storage on another host, foreign layers,
//! mirrors, uploads. Served by small fake servers on loopback.

mod common;

use std::sync::Arc;

use common::{FakeServer, Response};
use keel_image::content::ContentStore;
use keel_image::digest::Digest;
use keel_image::reference::Reference;
use keel_registry::auth::{Credentials, DockerConfig};
use keel_registry::{Client, ClientOptions, Platform, pull};
use keel_testutil::TempRoot;
use serde_json::json;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
    foreign: Vec<u8>,
}

impl Image {
    fn new(foreign_url: &str) -> Image {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let layer = b"layer bytes ".repeat(100_000);
        let foreign = b"foreign layer ".repeat(1000);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                 "digest": Digest::of(&layer).to_string(), "size": layer.len()},
                {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                 "digest": Digest::of(&foreign).to_string(), "size": foreign.len(),
                 "urls": [foreign_url]}
            ]
        })
        .to_string()
        .into_bytes();
        Image {
            manifest,
            config,
            layer,
            foreign,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_redirects_and_foreign_layers() {
    // Blob storage on "localhost" (another origin than 127.0.0.1): it must
    // never see the registry's Authorization header.
    let storage_image = Arc::new(Image::new("placeholder"));
    let storage = {
        let image = storage_image.clone();
        FakeServer::start(move |request| {
            let path = request.path.split('?').next().unwrap_or_default();
            let digest = path.rsplit('/').next().unwrap_or_default();
            if digest == Digest::of(&image.layer).hex() {
                Response::new("200 OK", image.layer.clone())
            } else if digest == Digest::of(&image.foreign).hex() {
                Response::new("200 OK", image.foreign.clone())
            } else {
                Response::new("404 Not Found", "")
            }
        })
        .await
    };
    let storage_port = storage.port;
    let foreign_url = format!(
        "http://localhost:{storage_port}/foreign/{}",
        Digest::of(&storage_image.foreign).hex()
    );
    let image = Arc::new(Image::new(&foreign_url));

    let registry_port = Arc::new(std::sync::OnceLock::<u16>::new());
    let registry = {
        let image = image.clone();
        let registry_port = registry_port.clone();
        FakeServer::start(move |request| {
            let port = *registry_port.get().expect("port set before requests");
            if request.path.starts_with("/token") {
                return if request.header("authorization") == Some("Basic dXNlcjpwYXNz")
                    && request.path.contains("scope=repository%3Afake%2Fimage%3Apull")
                    && request.path.contains("service=fake-registry")
                {
                    Response::new("200 OK", r#"{"access_token":"tok-123","expires_in":300}"#)
                } else {
                    Response::new("401 Unauthorized", r#"{"details":"bad credentials"}"#)
                };
            }
            if request.header("authorization") != Some("Bearer tok-123") {
                return Response::new(
                    "401 Unauthorized",
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                )
                .header(
                    "WWW-Authenticate",
                    format!(
                        r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake-registry",scope="repository:fake/image:pull""#
                    ),
                );
            }
            let manifest_digest = Digest::of(&image.manifest);
            match request.path.as_str() {
                "/v2/" => Response::new("200 OK", "{}"),
                path if path == "/v2/fake/image/manifests/v1"
                    || path == format!("/v2/fake/image/manifests/{manifest_digest}") =>
                {
                    Response::new("200 OK", image.manifest.clone())
                        .header("Content-Type", MANIFEST)
                        .header("Docker-Content-Digest", manifest_digest.to_string())
                }
                path if path == format!("/v2/fake/image/blobs/{}", Digest::of(&image.config)) => {
                    Response::new("200 OK", image.config.clone())
                }
                path if path == format!("/v2/fake/image/blobs/{}", Digest::of(&image.layer)) => {
                    Response::new("307 Temporary Redirect", "").header(
                        "Location",
                        format!(
                            "http://localhost:{storage_port}/storage/{}?X-Signature=secret",
                            Digest::of(&image.layer).hex()
                        ),
                    )
                }
                "/v2/fake/image/tags/list" => Response::new(
                    "200 OK",
                    r#"{"name":"fake/image","tags":["a","b"]}"#,
                )
                .header("Link", r#"</v2/fake/image/tags/list?last=b&n=2>; rel="next""#),
                "/v2/fake/image/tags/list?last=b&n=2" => {
                    Response::new("200 OK", r#"{"name":"fake/image","tags":["c"]}"#)
                }
                _ => Response::new(
                    "404 Not Found",
                    r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
                ),
            }
        })
        .await
    };
    registry_port.set(registry.port).unwrap();
    let host = format!("127.0.0.1:{}", registry.port);

    let mut config = DockerConfig::default();
    config.insert(
        &host,
        Credentials::Basic {
            username: "user".into(),
            password: "pass".into(),
        },
    );
    let client = Client::new(ClientOptions {
        docker_config: Some(config),
        ..ClientOptions::default()
    })
    .unwrap();
    let temp = TempRoot::new();
    let store = ContentStore::open(&temp.root()).unwrap();
    let reference = Reference::parse(&format!("{host}/fake/image:v1")).unwrap();
    let result = pull(
        &client,
        &store,
        &reference,
        &Platform::parse("linux/amd64").unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("pull from the fake registry: {e}"));
    assert_eq!(result.manifest_digest, Digest::of(&image.manifest));
    for blob in [&image.config, &image.layer, &image.foreign, &image.manifest] {
        assert!(store.contains(&Digest::of(blob)));
    }
    // One token for all requests of the pull (cached per scope).
    let token_requests = registry
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    assert_eq!(token_requests, 1);
    let storage_requests = storage.requests();
    assert_eq!(storage_requests.len(), 2, "{storage_requests:?}");
    for request in &storage_requests {
        assert_eq!(
            request.header("authorization"),
            None,
            "the registry's credentials leaked to {}",
            request.path
        );
    }
    assert!(
        storage_requests
            .iter()
            .any(|r| r.path.starts_with("/foreign/"))
    );
    assert!(
        storage_requests
            .iter()
            .any(|r| r.path.contains("X-Signature=secret"))
    );

    assert_eq!(
        client.list_tags(&host, "fake/image").await.unwrap(),
        vec!["a", "b", "c"]
    );
    let err = client
        .head_blob(&host, "fake/image", &Digest::of(b"nothing"))
        .await
        .unwrap();
    assert_eq!(err, None);
    let err = client
        .get_blob(&host, "fake/image", &Digest::of(b"nothing"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("BLOB_UNKNOWN: blob unknown to registry"),
        "{err}"
    );
    assert!(err.contains(&Digest::of(b"nothing").to_string()), "{err}");

    // Wrong credentials: the token server's refusal, named.
    let mut config = DockerConfig::default();
    config.insert(
        &host,
        Credentials::Basic {
            username: "user".into(),
            password: "wrong".into(),
        },
    );
    let refused = Client::new(ClientOptions {
        docker_config: Some(config),
        ..ClientOptions::default()
    })
    .unwrap();
    let err = refused
        .get_manifest(&reference)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("get a token from"), "{err}");
    assert!(err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_docker_io_and_a_dead_one_is_skipped() {
    let image = Arc::new(Image::new("http://127.0.0.1:1/unused"));
    let mirror = {
        let image = image.clone();
        FakeServer::start(move |request| match request.path.as_str() {
            "/v2/library/busybox/manifests/latest" => {
                Response::new("200 OK", image.manifest.clone()).header("Content-Type", MANIFEST)
            }
            path => {
                for blob in [&image.config, &image.layer, &image.foreign] {
                    if path == format!("/v2/library/busybox/blobs/{}", Digest::of(blob)) {
                        return Response::new("200 OK", blob.clone());
                    }
                }
                Response::new("404 Not Found", "")
            }
        })
        .await
    };
    let dead = common::free_port();
    let options = ClientOptions::parse(
        format!(
            r#"{{"mirrors":{{"docker.io":["http://127.0.0.1:{dead}","http://127.0.0.1:{}"]}}}}"#,
            mirror.port
        )
        .as_bytes(),
    )
    .unwrap();
    let client = Client::new(ClientOptions {
        docker_config: Some(DockerConfig::default()),
        ..options
    })
    .unwrap();
    let temp = TempRoot::new();
    let store = ContentStore::open(&temp.root()).unwrap();
    let reference = Reference::parse("busybox").unwrap();
    let result = pull(
        &client,
        &store,
        &reference,
        &Platform::parse("linux/amd64").unwrap(),
    )
    .await
    .unwrap_or_else(|e| panic!("pull through the mirror: {e}"));
    assert_eq!(result.manifest_digest, Digest::of(&image.manifest));
    // The foreign layer's URL is dead; the mirror had the blob.
    assert!(store.contains(&Digest::of(&image.foreign)));
}
