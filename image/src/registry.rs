//! A client for the registry v2 (OCI distribution) API: manifests and blobs, with the anonymous and
//! credentialed bearer-token flows and basic auth, over each configured endpoint in turn.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use tracing::{debug, warn};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::hosts::Endpoint;
use crate::manifest::ACCEPT as MANIFEST_TYPES;

/// Largest manifest or config document accepted (they are small JSON; a huge one is an attack).
pub const MAX_DOCUMENT: usize = 8 << 20;

/// Credentials for one pull, as the CRI `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// OAuth2 refresh token for the token endpoint.
    pub identity_token: String,
    /// A bearer token to send to the registry as is.
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &(!self.password.is_empty()).then_some("<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// From a CRI/Docker `auth` field: base64 of `user:password`.
    pub fn from_auth_field(auth: &str) -> Option<(String, String)> {
        let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }

    fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }
}

/// A TLS setting: skip verification, extra CA files.
type TlsKey = (bool, Vec<PathBuf>);

/// HTTP clients, one per TLS setting, shared by all pulls.
#[derive(Debug, Clone)]
pub struct Transport {
    clients: Arc<Mutex<HashMap<TlsKey, reqwest::Client>>>,
}

impl Default for Transport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport {
    pub fn new() -> Self {
        Transport {
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn client(&self, ep: &Endpoint) -> Result<reqwest::Client> {
        let key = (ep.skip_verify, ep.ca.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .danger_accept_invalid_certs(ep.skip_verify);
        for path in &ep.ca {
            let pem = std::fs::read(path).map_err(Error::io("read CA", path))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Config {
                path: path.clone(),
                detail: format!("bad CA certificate: {e}"),
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let c = b.build().map_err(|e| Error::Http {
            url: ep.api.clone(),
            source: e,
        })?;
        clients.insert(key, c.clone());
        Ok(c)
    }
}

/// One repository on one registry, with its endpoints and the authorization earned for each.
#[derive(Debug)]
pub struct Repository {
    transport: Transport,
    registry: String,
    path: String,
    endpoints: Vec<Endpoint>,
    creds: Credentials,
    /// Authorization header value per endpoint host.
    auth: Mutex<HashMap<String, HeaderValue>>,
}

/// A manifest-endpoint answer.
#[derive(Debug)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub content_type: String,
    pub digest: Digest,
}

impl Repository {
    pub fn new(transport: Transport, registry: &str, path: &str, endpoints: Vec<Endpoint>, creds: Credentials) -> Self {
        Repository {
            transport,
            registry: registry.to_string(),
            path: path.to_string(),
            endpoints,
            creds,
            auth: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches a manifest or index by tag or digest. With a digest, the body must hash to it.
    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let by_digest = reference.starts_with("sha256:");
        let accept = MANIFEST_TYPES.join(", ");
        let mut last_err = None;
        for ep in &self.endpoints {
            if !(ep.pull && (by_digest || ep.resolve)) {
                continue;
            }
            let url = self.url(ep, &format!("manifests/{reference}"));
            let resp = match self.get(ep, &url, Some(&accept)).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(%url, error = %e, "manifest fetch failed; trying next endpoint");
                    last_err = Some(e);
                    continue;
                }
            };
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = read_limited(resp, &url, MAX_DOCUMENT).await?;
            let digest = Digest::of(&body);
            if by_digest && digest.to_string() != reference {
                // A mirror serving other content than asked for: refuse it, try the next.
                let e = Error::DigestMismatch {
                    what: format!("manifest from {url}"),
                    expected: reference.to_string(),
                    actual: digest.to_string(),
                };
                warn!(%url, error = %e, "refusing manifest");
                last_err = Some(e);
                continue;
            }
            return Ok(FetchedManifest {
                body,
                content_type,
                digest,
            });
        }
        Err(last_err.unwrap_or_else(|| Error::NotFound {
            what: format!(
                "{}/{}:{reference} (no endpoint may resolve it)",
                self.registry, self.path
            ),
        }))
    }

    /// Opens a blob download. The caller verifies the digest while streaming.
    pub async fn blob(&self, digest: &Digest) -> Result<(String, reqwest::Response)> {
        let mut last_err = None;
        for ep in self.endpoints.iter().filter(|e| e.pull) {
            let url = self.url(ep, &format!("blobs/{digest}"));
            match self.get(ep, &url, None).await {
                Ok(r) => return Ok((url, r)),
                Err(e) => {
                    debug!(%url, error = %e, "blob fetch failed; trying next endpoint");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::NotFound {
            what: format!("blob {digest} in {}/{}", self.registry, self.path),
        }))
    }

    /// Fetches a small blob (a config) whole, verifying its digest.
    pub async fn small_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let (url, resp) = self.blob(digest).await?;
        let body = read_limited(resp, &url, MAX_DOCUMENT).await?;
        let actual = Digest::of(&body);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob from {url}"),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(body)
    }

    fn url(&self, ep: &Endpoint, rest: &str) -> String {
        let mut url = format!("{}/{}/{}", ep.api, self.path, rest);
        if ep.is_mirror {
            url.push_str("?ns=");
            url.push_str(&self.registry);
        }
        url
    }

    async fn get(&self, ep: &Endpoint, url: &str, accept: Option<&str>) -> Result<reqwest::Response> {
        let client = self.transport.client(ep)?;
        let mut tried_auth = false;
        loop {
            let mut req = client.get(url);
            for (k, v) in &ep.headers {
                req = req.header(k, v);
            }
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            let cached = self
                .auth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ep.host)
                .cloned();
            if let Some(h) = cached {
                req = req.header(AUTHORIZATION, h);
            } else if !self.creds.registry_token.is_empty() {
                req = req.bearer_auth(&self.creds.registry_token);
            }
            let resp = req.send().await.map_err(|e| Error::Http {
                url: url.to_string(),
                source: e,
            })?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            if status == StatusCode::UNAUTHORIZED && !tried_auth {
                tried_auth = true;
                let challenge = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                let header = self.authorize(ep, url, &challenge).await?;
                self.auth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ep.host.clone(), header);
                continue;
            }
            let body = read_limited(resp, url, 4096).await.unwrap_or_default();
            let detail = registry_error_text(&body);
            return Err(match status {
                StatusCode::NOT_FOUND => Error::NotFound {
                    what: format!("{url} ({detail})"),
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                    what: url.to_string(),
                    detail: format!("{status}: {detail}"),
                },
                _ => Error::Registry {
                    url: url.to_string(),
                    detail: format!("{status}: {detail}"),
                },
            });
        }
    }

    /// Answers a 401 challenge: a bearer token from the realm, or basic credentials.
    async fn authorize(&self, ep: &Endpoint, url: &str, challenges: &[String]) -> Result<HeaderValue> {
        let unauthorized = |detail: String| Error::Unauthorized {
            what: url.to_string(),
            detail,
        };
        let mut bearer = None;
        let mut basic = false;
        for c in challenges {
            let (scheme, params) = parse_challenge(c);
            match scheme.to_ascii_lowercase().as_str() {
                "bearer" => bearer = Some(params),
                "basic" => basic = true,
                _ => {}
            }
        }
        if let Some(params) = bearer {
            let token = self.fetch_token(ep, url, &params).await?;
            return HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| unauthorized(e.to_string()));
        }
        if basic {
            if self.creds.username.is_empty() && self.creds.password.is_empty() {
                return Err(unauthorized(
                    "registry wants basic auth and no credentials were given".into(),
                ));
            }
            let enc = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.creds.username, self.creds.password));
            return HeaderValue::from_str(&format!("Basic {enc}")).map_err(|e| unauthorized(e.to_string()));
        }
        Err(unauthorized(format!("unsupported challenge {challenges:?}")))
    }

    async fn fetch_token(&self, ep: &Endpoint, url: &str, params: &HashMap<String, String>) -> Result<String> {
        let realm = params.get("realm").ok_or_else(|| Error::Unauthorized {
            what: url.to_string(),
            detail: "bearer challenge without realm".into(),
        })?;
        let service = params.get("service").cloned().unwrap_or_default();
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.path));
        let client = self.transport.client(ep)?;
        let resp = if !self.creds.identity_token.is_empty() {
            // OAuth2 refresh-token grant, as Docker's credential helpers use.
            let form = format!(
                "grant_type=refresh_token&client_id=berth&service={}&scope={}&refresh_token={}",
                urlencode(&service),
                urlencode(&scope),
                urlencode(&self.creds.identity_token)
            );
            client
                .post(realm)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
        } else {
            let mut req = client.get(realm).query(&[("service", &service), ("scope", &scope)]);
            if !self.creds.is_empty() && !self.creds.username.is_empty() {
                req = req.basic_auth(&self.creds.username, Some(&self.creds.password));
            }
            req.send().await
        }
        .map_err(|e| Error::Http {
            url: realm.clone(),
            source: e,
        })?;
        let status = resp.status();
        let body = read_limited(resp, realm, 1 << 20).await?;
        if !status.is_success() {
            return Err(Error::Unauthorized {
                what: url.to_string(),
                detail: format!(
                    "token endpoint {realm} answered {status}: {}",
                    registry_error_text(&body)
                ),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| Error::Registry {
            url: realm.clone(),
            detail: format!("bad token response: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Registry {
                url: realm.clone(),
                detail: "token response without a token".into(),
            })
    }
}

/// Reads at most `limit` bytes of a body; more is an error.
async fn read_limited(mut resp: reqwest::Response, url: &str, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Http {
        url: url.to_string(),
        source: e,
    })? {
        if out.len() + chunk.len() > limit {
            return Err(Error::Registry {
                url: url.to_string(),
                detail: format!("response larger than {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The message of a registry error body (`{"errors":[{"code":..,"message":..}]}`), or the text itself.
fn registry_error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        return e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    String::from_utf8_lossy(body).trim().chars().take(300).collect()
}

/// Splits `Bearer realm="…",service="…",scope="…"` into its scheme and parameters.
fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else { break };
        let key = s[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        s = &s[eq + 1..];
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            s = &q[end.min(q.len())..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_string();
            s = &s[end..];
        }
        s = s.trim_start().trim_start_matches(',').trim_start();
        params.insert(key, value);
    }
    (scheme.to_string(), params)
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p["realm"], "basic-realm");
        let (_, p) = parse_challenge(r#"Bearer realm="a\"b", error="insufficient_scope""#);
        assert_eq!(p["realm"], "a\"b");
        assert_eq!(p["error"], "insufficient_scope");
    }

    #[test]
    fn auth_field() {
        assert_eq!(
            Credentials::from_auth_field("dXNlcjpwYXNzOndvcmQ="),
            Some(("user".into(), "pass:word".into()))
        );
        assert_eq!(Credentials::from_auth_field("!!"), None);
    }

    #[test]
    fn error_text() {
        assert_eq!(
            registry_error_text(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(urlencode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
