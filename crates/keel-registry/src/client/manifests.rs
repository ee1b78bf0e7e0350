//! `/v2/` itself (ping, login) and manifests, mirrors tried first for pulls.

use super::*;

impl Client {
    /// Checks that the registry speaks the v2 API (an answer of 401 counts:
    /// it is there and wants credentials).
    pub async fn ping(&self, registry: &str) -> Result<()> {
        let endpoint = self.upstream(registry);
        let base = self.base(&endpoint).await;
        let context = format!("ping registry {registry}");
        let response = self
            .send_following(
                Method::GET,
                &format!("{base}/v2/"),
                &HeaderMap::new(),
                None,
                RequestBody::Empty,
                &context,
            )
            .await?;
        match response.status() {
            status if status.is_success() || status == StatusCode::UNAUTHORIZED => Ok(()),
            _ => Err(error_from(response, &context).await),
        }
    }

    /// `keel login`: checks that the registry accepts this client's
    /// credentials for it, as `docker login` does: `GET /v2/` answering the
    /// challenge (a token without scope, or basic auth) must succeed.
    pub async fn login(&self, registry: &str) -> Result<()> {
        let endpoint = self.upstream(registry);
        let base = self.base(&endpoint).await;
        let context = format!("Get \"{base}/v2/\"");
        let response = self
            .execute(
                Call {
                    endpoint: &endpoint,
                    scopes: &[],
                    context: &context,
                },
                Method::GET,
                &format!("{base}/v2/"),
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(error_from(response, &context).await)
        }
    }

    /// Runs `attempt` on each endpoint of `registry` in turn (mirrors first
    /// for pulls) and returns the first success or the last error.
    pub(super) async fn on_endpoints<T, F, Fut>(
        &self,
        registry: &str,
        pull: bool,
        attempt: F,
    ) -> Result<T>
    where
        F: Fn(Endpoint, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let endpoints = self.endpoints(registry, pull);
        let count = endpoints.len();
        let mut last = None;
        for (index, endpoint) in endpoints.into_iter().enumerate() {
            let base = self.base(&endpoint).await;
            let mirror = endpoint.mirror;
            match attempt(endpoint, base.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if mirror && index + 1 < count => {
                    tracing::warn!(mirror = %base, error = %e, "mirror failed; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::msg(format!("no endpoint for registry {registry}"))))
    }

    /// The manifest (or index) `reference` names.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<ManifestResponse> {
        self.get_manifest_in(
            reference.registry(),
            reference.repository(),
            &reference.api_reference(),
        )
        .await
    }

    /// The manifest `tag_or_digest` of `repository` on `registry`. A digest
    /// is verified against what arrives.
    pub async fn get_manifest_in(
        &self,
        registry: &str,
        repository: &str,
        tag_or_digest: &str,
    ) -> Result<ManifestResponse> {
        let expected: Option<Digest> =
            if tag_or_digest.contains(':') {
                Some(tag_or_digest.parse().map_err(|e| {
                    Error::image(format!("manifest reference {tag_or_digest:?}"), e)
                })?)
            } else {
                None
            };
        let scopes = [auth::repository_scope(repository, false)];
        self.on_endpoints(registry, true, |endpoint, base| {
            let scopes = &scopes;
            let expected = &expected;
            async move {
                let context = format!(
                    "get manifest {registry}/{repository}{}{tag_or_digest} from {}",
                    if expected.is_some() { "@" } else { ":" },
                    display_endpoint(&endpoint, &base)
                );
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::ACCEPT,
                    HeaderValue::from_str(&MANIFEST_ACCEPT.join(", "))
                        .expect("media types are valid header text"),
                );
                let url = format!("{base}/v2/{repository}/manifests/{tag_or_digest}");
                let response = self
                    .execute(
                        Call {
                            endpoint: &endpoint,
                            scopes,
                            context: &context,
                        },
                        Method::GET,
                        &url,
                        headers,
                        RequestBody::Empty,
                    )
                    .await?;
                if !response.status().is_success() {
                    return Err(error_from(response, &context).await);
                }
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
                let served_digest = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<Digest>().ok());
                let data = read_limited(response, MAX_MANIFEST_SIZE, &context).await?;
                let digest = Digest::of(&data);
                if let Some(expected) = expected
                    && &digest != expected
                {
                    return Err(Error::msg(format!(
                        "{context}: digest mismatch: expected {expected}, got {digest}"
                    )));
                }
                if let Some(served) = served_digest
                    && served.algorithm() == digest.algorithm()
                    && served != digest
                {
                    return Err(Error::msg(format!(
                        "{context}: digest mismatch: the registry says {served}, \
                         the content is {digest}"
                    )));
                }
                let media_type =
                    detect_media_type(content_type.as_deref(), &data).ok_or_else(|| {
                        Error::msg(format!(
                            "{context}: unsupported manifest type {:?}",
                            content_type.unwrap_or_default()
                        ))
                    })?;
                Ok(ManifestResponse {
                    media_type,
                    data,
                    digest,
                })
            }
        })
        .await
    }
}
