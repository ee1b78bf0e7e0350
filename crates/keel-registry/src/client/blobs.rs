//! Blobs: head, get (resumable, by range), mount, upload; tags.

use super::*;

impl Client {
    /// The size of a blob, or `None` if the repository does not have it.
    pub async fn head_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let endpoint = self.upstream(registry);
        let base = self.base(&endpoint).await;
        let context = format!("check blob {digest} in {registry}/{repository}");
        let scopes = [auth::repository_scope(repository, false)];
        let url = format!("{base}/v2/{repository}/blobs/{digest}");
        let response = self
            .execute(
                Call {
                    endpoint: &endpoint,
                    scopes: &scopes,
                    context: &context,
                },
                Method::HEAD,
                &url,
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            status if status.is_success() => {
                Ok(Some(content_length(response.headers()).unwrap_or(0)))
            }
            _ => Err(error_from(response, &context).await),
        }
    }

    /// Streams a blob (following redirects to blob storage). The caller
    /// verifies the digest, e.g. through the content store.
    pub async fn get_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<BlobStream> {
        self.get_blob_from(registry, repository, digest, 0).await
    }

    /// Streams a blob from byte `offset` on (a `Range` request, to resume a
    /// download). A server may answer with the whole blob instead:
    /// [`BlobStream::offset`] says where the stream starts.
    pub async fn get_blob_from(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream> {
        let scopes = [auth::repository_scope(repository, false)];
        self.on_endpoints(registry, true, |endpoint, base| {
            let scopes = &scopes;
            async move {
                let context = format!(
                    "get blob {digest} of {registry}/{repository} from {}",
                    display_endpoint(&endpoint, &base)
                );
                let url = format!("{base}/v2/{repository}/blobs/{digest}");
                let response = self
                    .execute(
                        Call {
                            endpoint: &endpoint,
                            scopes,
                            context: &context,
                        },
                        Method::GET,
                        &url,
                        range_headers(offset),
                        RequestBody::Empty,
                    )
                    .await?;
                ranged_blob_stream(response, offset, context).await
            }
        })
        .await
    }

    /// Streams a URL with no registry auth (a non-distributable layer's
    /// `urls`), from byte `offset` on when the server honours a `Range`.
    /// Plain HTTP is allowed as docker allows it for these.
    pub async fn get_url(&self, url: &str, offset: u64) -> Result<BlobStream> {
        let context = format!("get {url}");
        let parsed = Url::parse(url).map_err(|e| Error::msg(format!("{context}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::msg(format!(
                "{context}: only http and https URLs are fetched"
            )));
        }
        let response = self
            .send_following(
                Method::GET,
                url,
                &range_headers(offset),
                None,
                RequestBody::Empty,
                &context,
            )
            .await?;
        ranged_blob_stream(response, offset, context).await
    }

    /// Uploads a manifest under a tag or its digest; returns its digest.
    pub async fn put_manifest(
        &self,
        registry: &str,
        repository: &str,
        tag_or_digest: &str,
        media_type: &str,
        data: Bytes,
    ) -> Result<Digest> {
        let endpoint = self.upstream(registry);
        let base = self.base(&endpoint).await;
        let digest = Digest::of(&data);
        let context = format!("put manifest {digest} as {registry}/{repository}:{tag_or_digest}");
        let scopes = [auth::repository_scope(repository, true)];
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| Error::msg(format!("{context}: bad media type {media_type:?}")))?,
        );
        let url = format!("{base}/v2/{repository}/manifests/{tag_or_digest}");
        let response = self
            .execute(
                Call {
                    endpoint: &endpoint,
                    scopes: &scopes,
                    context: &context,
                },
                Method::PUT,
                &url,
                headers,
                RequestBody::Bytes(data),
            )
            .await?;
        if !response.status().is_success() {
            return Err(error_from(response, &context).await);
        }
        Ok(digest)
    }

    /// Asks the registry to mount a blob from another repository of the
    /// same registry. `true` if mounted; `false` if the registry started an
    /// upload instead (the blob must then be uploaded).
    pub async fn mount_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<bool> {
        let endpoint = self.upstream(registry);
        let base = self.base(&endpoint).await;
        let context = format!("mount blob {digest} from {from} into {registry}/{repository}");
        let scopes = [
            auth::repository_scope(repository, true),
            auth::repository_scope(from, false),
        ];
        let url = format!(
            "{base}/v2/{repository}/blobs/uploads/?mount={}&from={}",
            auth::url_encode(&digest.to_string()),
            auth::url_encode(from)
        );
        let response = self
            .execute(
                Call {
                    endpoint: &endpoint,
                    scopes: &scopes,
                    context: &context,
                },
                Method::POST,
                &url,
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session we do not use: cancel it (best effort).
                if let Some(location) = location(&response, &base) {
                    let _ = self
                        .execute(
                            Call {
                                endpoint: &endpoint,
                                scopes: &scopes,
                                context: &context,
                            },
                            Method::DELETE,
                            &location,
                            HeaderMap::new(),
                            RequestBody::Empty,
                        )
                        .await;
                }
                Ok(false)
            }
            _ => Err(error_from(response, &context).await),
        }
    }

    /// Uploads a blob of `size` bytes from `data`; the registry verifies
    /// `digest`.
    pub async fn upload_blob<S>(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        size: u64,
        data: S,
        mode: UploadMode,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let endpoint = self.upstream(registry);
        let base = self.base(&endpoint).await;
        let context = format!("upload blob {digest} to {registry}/{repository}");
        let scopes = [auth::repository_scope(repository, true)];
        let start = self
            .execute(
                Call {
                    endpoint: &endpoint,
                    scopes: &scopes,
                    context: &context,
                },
                Method::POST,
                &format!("{base}/v2/{repository}/blobs/uploads/"),
                HeaderMap::new(),
                RequestBody::Empty,
            )
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(error_from(start, &context).await);
        }
        let mut upload = location(&start, &base).ok_or_else(|| {
            Error::msg(format!("{context}: the registry gave no upload location"))
        })?;
        let put_body = match mode {
            UploadMode::Monolithic => {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
                let body = reqwest::Body::wrap_stream(data);
                (headers, RequestBody::Stream(body))
            }
            UploadMode::Chunked(chunk_size) => {
                let chunk_size = chunk_size.max(1);
                let mut data = Box::pin(data);
                let mut offset = 0u64;
                let mut buffer = BytesMut::new();
                loop {
                    let next = data
                        .try_next()
                        .await
                        .map_err(|e| Error::io(format!("{context}: read"), e))?;
                    let done = next.is_none();
                    if let Some(bytes) = next {
                        buffer.extend_from_slice(&bytes);
                    }
                    while buffer.len() >= chunk_size || (done && !buffer.is_empty()) {
                        let take = buffer.len().min(chunk_size);
                        let chunk = buffer.split_to(take).freeze();
                        let end = offset + chunk.len() as u64 - 1;
                        let mut headers = HeaderMap::new();
                        headers.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/octet-stream"),
                        );
                        headers.insert(
                            header::CONTENT_RANGE,
                            HeaderValue::from_str(&format!("{offset}-{end}"))
                                .expect("digits are valid header text"),
                        );
                        let response = self
                            .execute(
                                Call {
                                    endpoint: &endpoint,
                                    scopes: &scopes,
                                    context: &context,
                                },
                                Method::PATCH,
                                &upload,
                                headers,
                                RequestBody::Bytes(chunk.clone()),
                            )
                            .await?;
                        if response.status() != StatusCode::ACCEPTED {
                            return Err(error_from(response, &context).await);
                        }
                        offset = end + 1;
                        upload = location(&response, &base).unwrap_or(upload);
                    }
                    if done {
                        break;
                    }
                }
                if offset != size {
                    return Err(Error::msg(format!(
                        "{context}: the source gave {offset} bytes, expected {size}"
                    )));
                }
                (HeaderMap::new(), RequestBody::Empty)
            }
        };
        let separator = if upload.contains('?') { '&' } else { '?' };
        let url = format!(
            "{upload}{separator}digest={}",
            auth::url_encode(&digest.to_string())
        );
        let (headers, body) = put_body;
        let response = self
            .execute(
                Call {
                    endpoint: &endpoint,
                    scopes: &scopes,
                    context: &context,
                },
                Method::PUT,
                &url,
                headers,
                body,
            )
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(error_from(response, &context).await);
        }
        Ok(())
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn list_tags(&self, registry: &str, repository: &str) -> Result<Vec<String>> {
        let scopes = [auth::repository_scope(repository, false)];
        self.on_endpoints(registry, true, |endpoint, base| {
            let scopes = &scopes;
            async move {
                let context = format!(
                    "list tags of {registry}/{repository} on {}",
                    display_endpoint(&endpoint, &base)
                );
                let mut tags = Vec::new();
                let mut url = format!("{base}/v2/{repository}/tags/list");
                // A bound on pages, against a registry that links in a loop.
                for _ in 0..10_000 {
                    let response = self
                        .execute(
                            Call {
                                endpoint: &endpoint,
                                scopes,
                                context: &context,
                            },
                            Method::GET,
                            &url,
                            HeaderMap::new(),
                            RequestBody::Empty,
                        )
                        .await?;
                    if !response.status().is_success() {
                        return Err(error_from(response, &context).await);
                    }
                    let next = response
                        .headers()
                        .get(header::LINK)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_link_next);
                    let body = read_limited(response, MAX_MANIFEST_SIZE, &context).await?;
                    #[derive(Deserialize)]
                    struct TagList {
                        #[serde(default)]
                        tags: Option<Vec<String>>,
                    }
                    let list: TagList = serde_json::from_slice(&body)
                        .map_err(|e| Error::msg(format!("{context}: invalid tag list: {e}")))?;
                    tags.extend(list.tags.unwrap_or_default());
                    match next {
                        Some(next) => {
                            url = Url::parse(&base)
                                .and_then(|b| b.join(&next))
                                .map(String::from)
                                .map_err(|e| {
                                    Error::msg(format!("{context}: bad Link {next:?}: {e}"))
                                })?;
                        }
                        None => return Ok(tags),
                    }
                }
                Err(Error::msg(format!("{context}: too many pages")))
            }
        })
        .await
    }
}
