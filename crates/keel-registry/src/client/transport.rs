//! Sending a request: the endpoint's base, redirects, and the auth a
//! registry challenges for (basic, or a token it points to), cached.

use super::*;

impl Client {
    /// Sends a request to an endpoint: with cached auth, answering one
    /// auth challenge (when the body can be resent), following redirects
    /// for GET and HEAD (without `Authorization` once on another host).
    /// Returns the final response whatever its status.
    pub(super) async fn execute(
        &self,
        call: Call<'_>,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: RequestBody,
    ) -> Result<reqwest::Response> {
        let Call {
            endpoint,
            scopes,
            context,
        } = call;
        let cache_key = (endpoint.host.clone(), scopes.join(" "));
        let cached = self.cached_auth(&cache_key, &endpoint.host);
        let resendable = match &body {
            RequestBody::Empty => Some(None),
            RequestBody::Bytes(bytes) => Some(Some(bytes.clone())),
            RequestBody::Stream(_) => None,
        };
        let response = self
            .send_following(method.clone(), url, &headers, cached.clone(), body, context)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(resend) = resendable else {
            return Ok(response);
        };
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_www_authenticate)
            .collect();
        let Some(authorization) = self
            .authenticate(endpoint, &challenges, scopes, &cache_key)
            .await?
        else {
            return Ok(response);
        };
        if cached.as_deref() == Some(authorization.as_str()) {
            // The same credentials again would get the same answer.
            return Ok(response);
        }
        let body = match resend {
            Some(bytes) => RequestBody::Bytes(bytes),
            None => RequestBody::Empty,
        };
        self.send_following(method, url, &headers, Some(authorization), body, context)
            .await
    }

    pub(super) async fn send_following(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        authorization: Option<String>,
        body: RequestBody,
        context: &str,
    ) -> Result<reqwest::Response> {
        let mut url =
            Url::parse(url).map_err(|e| Error::msg(format!("{context}: bad URL {url:?}: {e}")))?;
        let origin = url.origin();
        let mut body = Some(body);
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self
                .http_for(&url)
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(authorization) = &authorization
                && url.origin() == origin
            {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            match body.take() {
                Some(RequestBody::Bytes(bytes)) => request = request.body(bytes),
                Some(RequestBody::Stream(stream)) => request = request.body(stream),
                Some(RequestBody::Empty) | None => {}
            }
            let response = request
                .send()
                .await
                .map_err(|e| Error::http(format!("{context}: {method} {}", redact(&url)), e))?;
            let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
            if !redirect || !(method == Method::GET || method == Method::HEAD) {
                return Ok(response);
            }
            let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
            else {
                return Ok(response);
            };
            let next = url.join(location).map_err(|e| {
                Error::msg(format!(
                    "{context}: bad redirect location {location:?}: {e}"
                ))
            })?;
            if url.scheme() == "https"
                && next.scheme() != "https"
                && !self.is_insecure(&host_port(&next))
            {
                return Err(Error::msg(format!(
                    "{context}: refusing a redirect from HTTPS to {}",
                    redact(&next)
                )));
            }
            tracing::debug!(from = %redact(&url), to = %redact(&next), "redirect");
            url = next;
        }
        Err(Error::msg(format!(
            "{context}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    pub(super) fn cached_auth(&self, key: &CacheKey, host: &str) -> Option<String> {
        let mut cache = lock(&self.inner.auth);
        match cache.get(key) {
            Some(CachedAuth::Bearer { header, expires }) if *expires > Instant::now() => {
                return Some(header.clone());
            }
            Some(CachedAuth::Bearer { .. }) => {
                cache.remove(key);
            }
            Some(CachedAuth::Basic(header)) => return Some(header.clone()),
            None => {}
        }
        match cache.get(&(host.to_string(), String::new())) {
            Some(CachedAuth::Basic(header)) => Some(header.clone()),
            _ => None,
        }
    }

    pub(super) fn credentials(&self, endpoint: &Endpoint) -> Option<&Credentials> {
        self.inner.credentials.credentials(&endpoint.registry)
    }

    /// Answers a challenge: returns the `Authorization` value to retry with
    /// (and caches it), or `None` when there is nothing to answer with.
    pub(super) async fn authenticate(
        &self,
        endpoint: &Endpoint,
        challenges: &[Challenge],
        scopes: &[String],
        cache_key: &CacheKey,
    ) -> Result<Option<String>> {
        let credentials = self.credentials(endpoint).cloned();
        for challenge in challenges {
            match challenge {
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                } => {
                    let mut scopes = scopes.to_vec();
                    if let Some(scope) = scope
                        && !scopes.contains(scope)
                    {
                        scopes.push(scope.clone());
                    }
                    let token = self
                        .fetch_token(
                            endpoint,
                            realm,
                            service.as_deref(),
                            &scopes,
                            credentials.as_ref(),
                        )
                        .await?;
                    let header = format!("Bearer {}", token.token);
                    // Renew a little before the server's deadline.
                    let lifetime = Duration::from_secs(token.expires_in.saturating_sub(10).max(1));
                    lock(&self.inner.auth).insert(
                        cache_key.clone(),
                        CachedAuth::Bearer {
                            header: header.clone(),
                            expires: Instant::now() + lifetime,
                        },
                    );
                    return Ok(Some(header));
                }
                Challenge::Basic { .. } => {
                    let Some(header) = credentials.as_ref().and_then(Credentials::basic_header)
                    else {
                        continue;
                    };
                    lock(&self.inner.auth).insert(
                        (endpoint.host.clone(), String::new()),
                        CachedAuth::Basic(header.clone()),
                    );
                    return Ok(Some(header));
                }
            }
        }
        Ok(None)
    }

    pub(super) async fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        credentials: Option<&Credentials>,
    ) -> Result<auth::Token> {
        let context = format!("get a token from {realm} for {}", endpoint.host);
        let realm_url =
            Url::parse(realm).map_err(|e| Error::msg(format!("{context}: bad realm: {e}")))?;
        if realm_url.scheme() != "https" && !self.is_insecure(&host_port(&realm_url)) {
            return Err(Error::msg(format!(
                "{context}: refusing to send credentials to a token server over plain HTTP"
            )));
        }
        let http = self.http_for(&realm_url);
        let request = match credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant, as docker does with identity tokens.
                let mut form = format!(
                    "grant_type=refresh_token&client_id=keel&refresh_token={}",
                    auth::url_encode(refresh)
                );
                if let Some(service) = service {
                    form.push_str(&format!("&service={}", auth::url_encode(service)));
                }
                if !scopes.is_empty() {
                    form.push_str(&format!("&scope={}", auth::url_encode(&scopes.join(" "))));
                }
                http.post(realm_url)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form)
            }
            Some(basic @ Credentials::Basic { .. }) => {
                let header = basic.basic_header().unwrap_or_default();
                http.get(auth::token_url(realm, service, scopes))
                    .header(header::AUTHORIZATION, header)
            }
            None => http.get(auth::token_url(realm, service, scopes)),
        };
        let response = request
            .send()
            .await
            .map_err(|e| Error::http(context.clone(), e))?;
        if !response.status().is_success() {
            return Err(error_from(response, &context).await);
        }
        let body = read_limited(response, 1 << 20, &context).await?;
        auth::parse_token_response(&body).map_err(|e| Error::msg(format!("{context}: {e}")))
    }
}
