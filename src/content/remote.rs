//! A remote OCI registry as a content target: any registry that speaks the OCI
//! Distribution spec 1.1 (berth, distribution, zot, Harbor, ghcr, cloud registries).
//!
//! - Auth: anonymous, Basic, and the Docker Bearer token flow (challenge → token endpoint
//!   with Basic credentials and the scope → retry). Credentials come from flags, the
//!   environment (`BERTH_REGISTRY_USER`/`BERTH_REGISTRY_PASSWORD`), or the `config.json`
//!   that `docker login`, `oras login` and `skopeo login` write.
//! - Transport: plain HTTP for loopback registries (or when asked), TLS otherwise, with an
//!   extra CA certificate when given. 429 and 5xx answers are retried with exponential
//!   backoff that honours `Retry-After`.
//! - Uploads: monolithic (POST, then one streaming PUT) or chunked (PATCH with
//!   `Content-Range`), and cross-repository mount when a source repository on the same
//!   registry is named.
//! - Referrers (distribution-spec 1.1): the referrers API when the registry has it, else
//!   the referrers tag schema (`<alg>-<hex>` tag holding an image index). A manifest push
//!   with a `subject` answered without `OCI-Subject` means the registry does not index
//!   referrers, so the client maintains that index itself (read-modify-write, with
//!   `If-Match` when the registry gives an ETag). A fallback tag that resolves to anything
//!   but an index is refused, never mistaken for a referrers list.
//!
//! `oci-client` was considered and not used: it hides response headers (`OCI-Subject`,
//! `ETag`, `Retry-After`), has no retry hook, only reads the referrers tag schema (never
//! maintains it), and would bring a second reqwest major version into the binary.

use super::{ContentError, Reader, Result};
use crate::oci::{Digest, ImageReference, ParsedManifest, media};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::TryStreamExt;
use oci_spec::image::Descriptor;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Every manifest type, for `Accept`.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// How to reach a registry. The zero value means: anonymous unless `config.json` has
/// credentials, plain HTTP for loopback only, five retries, monolithic uploads.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    pub credentials: Option<Credentials>,
    /// A Docker `config.json` to read credentials from (default: `$DOCKER_CONFIG/config.json`,
    /// `~/.docker/config.json`, then `$REGISTRY_AUTH_FILE` or containers' `auth.json`).
    pub docker_config: Option<PathBuf>,
    /// `Some(true)`: plain HTTP; `Some(false)`: TLS; `None`: plain HTTP for loopback
    /// registries only.
    pub plain_http: Option<bool>,
    /// Extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Retries of a request answered 429 or 5xx, or failing to connect (default 5).
    pub max_retries: Option<u32>,
    /// Upload blobs in PATCH chunks of this many bytes instead of one PUT.
    pub chunk_size: Option<u64>,
    /// First backoff delay (default 200 ms); doubled each retry, at most 10 s.
    pub backoff: Option<Duration>,
    /// Send the credentials as Basic from the first request instead of answering the
    /// registry's challenge (which may name a token endpoint elsewhere, e.g. behind a
    /// proxy). berth's own services use it to reach their own registry.
    pub basic_first: bool,
}

/// One registry host.
pub struct RemoteRegistry {
    client: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    opts: RemoteOptions,
    /// scope → (token, expiry)
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Whether the server wants Basic credentials on every request.
    basic: Mutex<bool>,
    /// One lock per `repository@subject` referrers index, so this client's own concurrent
    /// pushes never race each other's read-modify-write.
    index_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for RemoteRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRegistry").field("base", &self.base).finish()
    }
}

/// One repository on a remote registry, seen through the content traits.
#[derive(Debug, Clone)]
pub struct RemoteRepository {
    registry: Arc<RemoteRegistry>,
    name: String,
    /// Another repository on the same registry to mount blobs from before uploading.
    mount_from: Option<String>,
    /// Cached answer to "does this registry have the referrers API?"
    referrers_api: Arc<Mutex<Option<bool>>>,
}

fn remote_err(what: impl std::fmt::Display) -> ContentError {
    ContentError::Remote(what.to_string())
}

/// Reads `username:password` for `registry` from a Docker/containers auth file.
pub fn credentials_from_docker_config(path: &Path, registry: &str) -> Option<Credentials> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(k, e)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        (k == registry).then_some(e)
    })?;
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        let raw = String::from_utf8(STANDARD.decode(auth).ok()?).ok()?;
        let (u, p) = raw.split_once(':')?;
        return Some(Credentials { username: u.to_string(), password: p.to_string() });
    }
    let u = entry.get("username")?.as_str()?;
    let p = entry.get("password")?.as_str()?;
    Some(Credentials { username: u.to_string(), password: p.to_string() })
}

/// The auth files to look in, in order, when none was named.
fn default_auth_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(d) = std::env::var("DOCKER_CONFIG") {
        out.push(PathBuf::from(d).join("config.json"));
    }
    if let Ok(h) = std::env::var("HOME") {
        out.push(PathBuf::from(h).join(".docker/config.json"));
    }
    if let Ok(f) = std::env::var("REGISTRY_AUTH_FILE") {
        out.push(PathBuf::from(f));
    }
    if let Ok(r) = std::env::var("XDG_RUNTIME_DIR") {
        out.push(PathBuf::from(r).join("containers/auth.json"));
    }
    out
}

/// Parses a `WWW-Authenticate` challenge: scheme and its `key="value"` parameters.
pub(crate) fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, remain) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, v.to_string());
        rest = remain.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

/// How long a 429/503 asks us to wait.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs.min(60)));
    }
    let when = humantime::parse_rfc3339_weak(v.trim()).ok().or_else(|| httpdate(v))?;
    Some(when.duration_since(std::time::SystemTime::now()).unwrap_or_default().min(Duration::from_secs(60)))
}

fn httpdate(_v: &str) -> Option<std::time::SystemTime> {
    // HTTP-dates in Retry-After are rare from registries; a delay in seconds is the norm.
    None
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED
}

impl RemoteRegistry {
    /// A client for `registry` (`host[:port]`).
    pub fn new(registry: &str, opts: RemoteOptions) -> Result<Arc<RemoteRegistry>> {
        let plain = opts.plain_http.unwrap_or_else(|| crate::oci::reference::is_loopback_host(registry));
        let base = format!("{}://{registry}", if plain { "http" } else { "https" });
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(16)
            .connect_timeout(Duration::from_secs(15));
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca).map_err(|e| ContentError::io(ca, e))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| remote_err(format!("CA certificate {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| remote_err(format!("HTTP client: {e}")))?;
        let credentials = opts.credentials.clone().or_else(|| {
            let files = match &opts.docker_config {
                Some(p) => vec![p.clone()],
                None => default_auth_files(),
            };
            files.iter().find_map(|f| credentials_from_docker_config(f, registry))
        });
        let basic_first = opts.basic_first;
        Ok(Arc::new(RemoteRegistry {
            client,
            base,
            credentials,
            opts,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(basic_first),
            index_locks: Mutex::new(HashMap::new()),
        }))
    }

    /// Whether credentials were found for this registry.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Repository `name` on this registry.
    pub fn repository(self: &Arc<Self>, name: &str) -> Result<RemoteRepository> {
        crate::oci::validate_repository(name)?;
        Ok(RemoteRepository {
            registry: self.clone(),
            name: name.to_string(),
            mount_from: None,
            referrers_api: Arc::new(Mutex::new(None)),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    fn cached_token(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.get(scope).filter(|(_, exp)| *exp > Instant::now()).map(|(t, _)| t.clone())
    }

    fn authorize(&self, rb: RequestBuilder, scope: &str) -> RequestBuilder {
        self.authorize_with(rb, self.cached_token(scope))
    }

    /// Adds `token` (Bearer), else Basic credentials once a registry asked for them.
    fn authorize_with(&self, rb: RequestBuilder, token: Option<String>) -> RequestBuilder {
        if let Some(t) = token {
            return rb.bearer_auth(t);
        }
        if *self.basic.lock().unwrap_or_else(|p| p.into_inner())
            && let Some(c) = &self.credentials
        {
            return rb.basic_auth(&c.username, Some(&c.password));
        }
        rb
    }

    /// Answers a 401 challenge to a request sent with `sent` (the Bearer token, if any):
    /// fetches a token (Bearer) or switches to Basic. Returns false when there is nothing more
    /// to try.
    async fn handle_challenge(&self, resp: &Response, scope: &str, sent: Option<&str>) -> Result<bool> {
        let Some(h) = resp.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()) else {
            return Ok(false);
        };
        let (scheme, params) = parse_challenge(h);
        match scheme.as_str() {
            "basic" => {
                let mut basic = self.basic.lock().unwrap_or_else(|p| p.into_inner());
                if *basic || self.credentials.is_none() {
                    return Ok(false);
                }
                *basic = true;
                Ok(true)
            }
            "bearer" => {
                match (self.cached_token(scope), sent) {
                    // The token this request carried was refused: asking again will not help.
                    (Some(cached), Some(sent)) if cached == sent => {
                        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(scope);
                        return Ok(false);
                    }
                    // Another request fetched a token since this one was sent: use it.
                    (Some(_), _) => return Ok(true),
                    (None, _) => {}
                }
                let realm =
                    params.get("realm").ok_or_else(|| remote_err(format!("Bearer challenge without realm: {h}")))?;
                let mut q: Vec<(&str, String)> = Vec::new();
                if let Some(s) = params.get("service") {
                    q.push(("service", s.clone()));
                }
                let want = params.get("scope").cloned().unwrap_or_else(|| scope.to_string());
                for s in want.split(' ').chain(std::iter::once(scope)).filter(|s| !s.is_empty()) {
                    if !q.iter().any(|(k, v)| *k == "scope" && v == s) {
                        q.push(("scope", s.to_string()));
                    }
                }
                let mut rb = self.client.get(realm).query(&q);
                if let Some(c) = &self.credentials {
                    rb = rb.basic_auth(&c.username, Some(&c.password));
                }
                let r = rb.send().await.map_err(|e| remote_err(format!("token request to {realm}: {e}")))?;
                if !r.status().is_success() {
                    return Err(ContentError::Unauthorized(format!(
                        "token endpoint {realm} answered {}{}",
                        r.status(),
                        if self.credentials.is_none() { " (no credentials were found for this registry)" } else { "" }
                    )));
                }
                let v: serde_json::Value = r.json().await.map_err(|e| remote_err(format!("token response: {e}")))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| remote_err("token response has no token"))?
                    .to_string();
                let ttl = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(60).max(10);
                let exp = Instant::now() + Duration::from_secs(ttl.saturating_sub(5));
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(scope.to_string(), (token, exp));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Sends a request built by `build` (called again for each retry), answering auth
    /// challenges and retrying 429/5xx and connection failures with backoff.
    async fn send(&self, scope: &str, build: &(dyn Fn() -> RequestBuilder + Send + Sync)) -> Result<Response> {
        let max = self.opts.max_retries.unwrap_or(5);
        let mut delay = self.opts.backoff.unwrap_or(Duration::from_millis(200));
        let mut attempt = 0;
        let mut auth_rounds = 0;
        loop {
            let sent = self.cached_token(scope);
            let res = self.authorize_with(build(), sent.clone()).send().await;
            match res {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && auth_rounds < 2 => {
                    auth_rounds += 1;
                    if !self.handle_challenge(&r, scope, sent.as_deref()).await? {
                        return Ok(r);
                    }
                }
                Ok(r) if retryable(r.status()) && attempt < max => {
                    attempt += 1;
                    let wait = retry_after(r.headers()).unwrap_or(delay);
                    tracing::debug!(status = r.status().as_u16(), ?wait, attempt, "retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Ok(r) => return Ok(r),
                Err(e) if (e.is_connect() || e.is_timeout()) && attempt < max => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(remote_err(e)),
            }
        }
    }
}

/// The spec's error body, shortened, for messages.
async fn describe(resp: Response) -> String {
    let status = resp.status();
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("{status} from {url}: {body}")
}

async fn expect(resp: Response, ok: &[StatusCode], what: &str) -> Result<Response> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    let status = resp.status();
    let text = describe(resp).await;
    Err(match status {
        StatusCode::NOT_FOUND => ContentError::NotFound(format!("{what} ({text})")),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ContentError::Unauthorized(format!("{what}: {text}")),
        _ => remote_err(format!("{what}: {text}")),
    })
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Ok(d.digest().to_string().parse()?)
}

fn is_manifest(d: &Descriptor) -> bool {
    media::is_manifest(d.media_type().as_ref())
}

impl RemoteRepository {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn registry(&self) -> &Arc<RemoteRegistry> {
        &self.registry
    }

    /// Mount blobs from `repository` on the same registry before uploading them.
    pub fn with_mount_from(mut self, repository: Option<String>) -> Self {
        self.mount_from = repository;
        self
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.name)
    }

    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.name)
    }

    fn path(&self, rest: &str) -> String {
        format!("/v2/{}/{rest}", self.name)
    }

    async fn get_manifest_raw(&self, reference: &str) -> Result<(Bytes, String, Option<String>)> {
        let url = self.registry.url(&self.path(&format!("manifests/{reference}")));
        let client = self.registry.client.clone();
        let r = self
            .registry
            .send(&self.pull_scope(), &|| client.get(&url).header(header::ACCEPT, ACCEPT_MANIFESTS))
            .await?;
        let r = expect(r, &[StatusCode::OK], &format!("manifest {}:{reference}", self.name)).await?;
        let ct = r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let etag = r.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = r.bytes().await.map_err(remote_err)?;
        if body.len() as u64 > super::MAX_MANIFEST_SIZE {
            return Err(ContentError::SizeExceedsLimit { size: body.len() as u64, limit: super::MAX_MANIFEST_SIZE });
        }
        Ok((body, ct, etag))
    }

    /// PUTs a manifest; returns whether the registry answered with `OCI-Subject`.
    async fn put_manifest_raw(
        &self,
        reference: &str,
        media_type: &str,
        body: Bytes,
        if_match: Option<&str>,
    ) -> Result<Response> {
        let url = self.registry.url(&self.path(&format!("manifests/{reference}")));
        let client = self.registry.client.clone();
        let mt = media_type.to_string();
        let im = if_match.map(str::to_string);
        self.registry
            .send(&self.push_scope(), &|| {
                let mut rb = client.put(&url).header(header::CONTENT_TYPE, &mt).body(body.clone());
                if let Some(e) = &im {
                    rb = rb.header(header::IF_MATCH, e);
                }
                rb
            })
            .await
    }

    /// Adds `entry` to the referrers tag-schema index of `subject` (read-modify-write).
    /// Writers in this process take turns; against other writers, `If-Match` protects the
    /// update where the registry supports it, and reading the index back after writing
    /// catches a lost update where it does not (distribution ignores `If-Match`).
    async fn add_to_fallback_index(&self, subject: &Digest, entry: Descriptor) -> Result<()> {
        let tag = subject.tag_form();
        let lock = {
            let mut locks = self.registry.index_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(format!("{}@{subject}", self.name)).or_default().clone()
        };
        let _turn = lock.lock().await;
        for _ in 0..8 {
            let (mut list, etag) = match self.get_manifest_raw(&tag).await {
                Ok((body, ct, etag)) => (self.fallback_index(subject, &body, &ct)?, etag),
                Err(ContentError::NotFound(_)) => (Vec::new(), None),
                Err(e) => return Err(e),
            };
            if list.iter().any(|d| d.digest() == entry.digest()) {
                return Ok(());
            }
            list.push(entry.clone());
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": list});
            let body = Bytes::from(serde_json::to_vec(&index).map_err(remote_err)?);
            let r = self.put_manifest_raw(&tag, media::OCI_INDEX, body, etag.as_deref()).await?;
            if r.status() == StatusCode::PRECONDITION_FAILED {
                continue; // someone else updated it: read again
            }
            expect(r, &[StatusCode::CREATED, StatusCode::OK], &format!("referrers index {}:{tag}", self.name)).await?;
            // Loop: the next read confirms the entry (or redoes a lost update).
        }
        Err(remote_err(format!("referrers index {}:{tag} kept changing under concurrent updates", self.name)))
    }

    /// The descriptors in a fallback tag's index, refusing anything that is not an index
    /// (notably the subject itself, if someone tagged it so).
    fn fallback_index(&self, subject: &Digest, body: &[u8], content_type: &str) -> Result<Vec<Descriptor>> {
        let actual = Digest::of(subject.algorithm(), body);
        if &actual == subject {
            return Err(remote_err(format!(
                "referrers tag {} in {} resolves to the subject itself, not a referrers index",
                subject.tag_form(),
                self.name
            )));
        }
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
            manifests: Option<Vec<Descriptor>>,
        }
        let idx: Index = serde_json::from_slice(body).map_err(|e| remote_err(format!("referrers index: {e}")))?;
        let mt = idx.media_type.as_deref().unwrap_or(content_type);
        if mt != media::OCI_INDEX {
            return Err(remote_err(format!(
                "referrers tag {} in {} holds {mt:?}, not an OCI image index",
                subject.tag_form(),
                self.name
            )));
        }
        Ok(idx.manifests.unwrap_or_default())
    }

    /// Referrers of `subject`, optionally only those of `artifact_type`.
    pub async fn referrers(&self, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Descriptor>> {
        let known = *self.referrers_api.lock().unwrap_or_else(|p| p.into_inner());
        if known != Some(false) {
            let mut url = self.registry.url(&self.path(&format!("referrers/{subject}")));
            if let Some(a) = artifact_type {
                url = format!("{url}?artifactType={}", a.replace('+', "%2B"));
            }
            let client = self.registry.client.clone();
            let r = self.registry.send(&self.pull_scope(), &|| client.get(&url)).await?;
            let ct =
                r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            if r.status() == StatusCode::OK && ct.starts_with(media::OCI_INDEX) {
                *self.referrers_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(true);
                let filtered = r.headers().get("oci-filters-applied").is_some();
                let v: serde_json::Value = r.json().await.map_err(remote_err)?;
                let mut list: Vec<Descriptor> =
                    serde_json::from_value(v.get("manifests").cloned().unwrap_or_default()).map_err(remote_err)?;
                if !filtered && let Some(a) = artifact_type {
                    list.retain(|d| d.artifact_type().as_ref().is_some_and(|t| t.to_string() == a));
                }
                return Ok(list);
            }
            if r.status() != StatusCode::NOT_FOUND {
                let _ = expect(r, &[StatusCode::OK], "referrers").await?;
            }
            *self.referrers_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(false);
        }
        let mut list = match self.get_manifest_raw(&subject.tag_form()).await {
            Ok((body, ct, _)) => self.fallback_index(subject, &body, &ct)?,
            Err(ContentError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        if let Some(a) = artifact_type {
            list.retain(|d| d.artifact_type().as_ref().is_some_and(|t| t.to_string() == a));
        }
        Ok(list)
    }

    /// Cross-repository mount from `mount_from`; an upload session the registry opens
    /// instead (it could not mount) is cancelled, since the caller will push.
    async fn try_mount(&self, d: &Digest) -> Result<bool> {
        let Some(from) = &self.mount_from else { return Ok(false) };
        let url = self.registry.url(&self.path(&format!("blobs/uploads/?mount={d}&from={from}")));
        let client = self.registry.client.clone();
        let scope = format!("{} repository:{from}:pull", self.push_scope());
        let r = self.registry.send(&scope, &|| client.post(&url)).await?;
        match r.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Some(loc) = location(&r) {
                    let url = self.registry.url(&loc);
                    let _ = self.registry.send(&self.push_scope(), &|| client.delete(&url)).await;
                }
                Ok(false)
            }
            _ => Err(remote_err(format!("mount of {d}: {}", describe(r).await))),
        }
    }

    async fn start_upload(&self) -> Result<String> {
        let url = self.registry.url(&self.path("blobs/uploads/"));
        let client = self.registry.client.clone();
        let r = self.registry.send(&self.push_scope(), &|| client.post(&url)).await?;
        let r = expect(r, &[StatusCode::ACCEPTED], &format!("starting an upload to {}", self.name)).await?;
        location(&r).ok_or_else(|| remote_err("upload start answered without Location"))
    }

    async fn push_blob(&self, expected: &Descriptor, mut content: Reader) -> Result<()> {
        let d = descriptor_digest(expected)?;
        let size = expected.size();
        // Cross-repository mount: 201 means done; otherwise the answer is a session.
        let loc = self.start_upload().await?;
        let scope = self.push_scope();
        let client = self.registry.client.clone();
        let with_digest = |loc: &str| {
            let sep = if loc.contains('?') { '&' } else { '?' };
            self.registry.url(&format!("{loc}{sep}digest={d}"))
        };
        match self.registry.opts.chunk_size.filter(|c| *c > 0 && size > *c) {
            None => {
                // One streaming PUT. The body cannot be replayed, so no retry: the copy
                // engine's resume covers a failure.
                let url = with_digest(&loc);
                let stream = tokio_util::io::ReaderStream::with_capacity(content, 256 * 1024);
                let body = reqwest::Body::wrap_stream(stream);
                let r = self
                    .registry
                    .authorize(
                        client
                            .put(&url)
                            .header(header::CONTENT_TYPE, "application/octet-stream")
                            .header(header::CONTENT_LENGTH, size)
                            .body(body),
                        &scope,
                    )
                    .send()
                    .await
                    .map_err(remote_err)?;
                expect(r, &[StatusCode::CREATED], &format!("blob {d}")).await?;
            }
            Some(chunk) => {
                let mut loc = loc;
                let mut offset = 0u64;
                let mut buf = vec![0u8; chunk as usize];
                loop {
                    let mut filled = 0;
                    while filled < buf.len() {
                        let n =
                            content.read(&mut buf[filled..]).await.map_err(|e| ContentError::Body(e.to_string()))?;
                        if n == 0 {
                            break;
                        }
                        filled += n;
                    }
                    if filled == 0 {
                        break;
                    }
                    let part = Bytes::copy_from_slice(&buf[..filled]);
                    let url = self.registry.url(&loc);
                    let range = format!("{offset}-{}", offset + filled as u64 - 1);
                    let r = self
                        .registry
                        .send(&scope, &|| {
                            client
                                .patch(&url)
                                .header(header::CONTENT_TYPE, "application/octet-stream")
                                .header(header::CONTENT_RANGE, &range)
                                .body(part.clone())
                        })
                        .await?;
                    let r = expect(r, &[StatusCode::ACCEPTED], &format!("chunk {range} of {d}")).await?;
                    loc = location(&r).unwrap_or(loc);
                    offset += filled as u64;
                    if filled < buf.len() {
                        break;
                    }
                }
                if offset != size {
                    return Err(ContentError::SizeMismatch { expected: size, actual: offset });
                }
                let url = with_digest(&loc);
                let r = self.registry.send(&scope, &|| client.put(&url).header(header::CONTENT_LENGTH, 0)).await?;
                expect(r, &[StatusCode::CREATED], &format!("blob {d}")).await?;
            }
        }
        Ok(())
    }

    async fn head(&self, rest: &str, accept: Option<&str>) -> Result<Option<Response>> {
        let url = self.registry.url(&self.path(rest));
        let client = self.registry.client.clone();
        let accept = accept.map(str::to_string);
        let r = self
            .registry
            .send(&self.pull_scope(), &|| {
                let rb = client.head(&url);
                match &accept {
                    Some(a) => rb.header(header::ACCEPT, a),
                    None => rb,
                }
            })
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            _ => expect(r, &[StatusCode::OK], &format!("HEAD {}/{rest}", self.name)).await.map(Some),
        }
    }
}

fn location(r: &Response) -> Option<String> {
    r.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[async_trait::async_trait]
impl super::Fetcher for RemoteRepository {
    async fn fetch(&self, target: &Descriptor) -> Result<Reader> {
        let d = descriptor_digest(target)?;
        if is_manifest(target) {
            let (body, _, _) = self.get_manifest_raw(&d.to_string()).await?;
            return Ok(Box::pin(std::io::Cursor::new(body)));
        }
        let url = self.registry.url(&self.path(&format!("blobs/{d}")));
        let client = self.registry.client.clone();
        let r = self.registry.send(&self.pull_scope(), &|| client.get(&url)).await?;
        let r = expect(r, &[StatusCode::OK], &format!("blob {}@{d}", self.name)).await?;
        let stream = r.bytes_stream().map_err(std::io::Error::other);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }
}

#[async_trait::async_trait]
impl super::Pusher for RemoteRepository {
    async fn mount(&self, expected: &Descriptor) -> Result<bool> {
        if is_manifest(expected) {
            return Ok(false);
        }
        self.try_mount(&descriptor_digest(expected)?).await
    }

    async fn push(&self, expected: &Descriptor, content: Reader) -> Result<()> {
        if !is_manifest(expected) {
            return self.push_blob(expected, content).await;
        }
        let d = descriptor_digest(expected)?;
        if expected.size() > super::MAX_MANIFEST_SIZE {
            return Err(ContentError::SizeExceedsLimit { size: expected.size(), limit: super::MAX_MANIFEST_SIZE });
        }
        let mut buf = Vec::new();
        content.take(expected.size() + 1).read_to_end(&mut buf).await.map_err(|e| ContentError::Body(e.to_string()))?;
        super::verify(expected, &buf)?;
        let media_type = expected.media_type().to_string();
        let parsed = ParsedManifest::parse(&buf, Some(&media_type))?;
        let body = Bytes::from(buf);
        let r = self.put_manifest_raw(&d.to_string(), &media_type, body.clone(), None).await?;
        let has_subject_header = r.headers().contains_key("oci-subject");
        expect(r, &[StatusCode::CREATED, StatusCode::OK], &format!("manifest {}@{d}", self.name)).await?;
        if let Some((subject, _)) = &parsed.subject
            && !has_subject_header
        {
            // No OCI-Subject: the registry does not index referrers; keep the tag schema.
            *self.referrers_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(false);
            let entry = parsed.referrer_descriptor(&d, body.len() as u64);
            self.add_to_fallback_index(subject, entry).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::ReadOnlyStorage for RemoteRepository {
    async fn exists(&self, target: &Descriptor) -> Result<bool> {
        let d = descriptor_digest(target)?;
        let r = if is_manifest(target) {
            self.head(&format!("manifests/{d}"), Some(ACCEPT_MANIFESTS)).await?
        } else {
            self.head(&format!("blobs/{d}"), None).await?
        };
        Ok(r.is_some())
    }
}

#[async_trait::async_trait]
impl super::TagResolver for RemoteRepository {
    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        super::Reference::parse(reference)?;
        if let Some(r) = self.head(&format!("manifests/{reference}"), Some(ACCEPT_MANIFESTS)).await? {
            let h = r.headers();
            let digest =
                h.get("docker-content-digest").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Digest>().ok());
            let ct = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let len = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            if let (Some(d), Some(ct), Some(len)) = (digest, ct, len)
                && media::is_manifest(&ct)
            {
                return Ok(Descriptor::new(ct.as_str().into(), len, d.to_oci()));
            }
        } else {
            return Err(ContentError::NotFound(format!("manifest {}:{reference}", self.name)));
        }
        // HEAD did not say enough: read it.
        let (body, ct, _) = self.get_manifest_raw(reference).await?;
        let parsed = ParsedManifest::parse(&body, Some(&ct))?;
        Ok(Descriptor::new(parsed.media_type.as_str().into(), body.len() as u64, Digest::sha256(&body).to_oci()))
    }

    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<()> {
        crate::oci::validate_tag(reference)?;
        let d = descriptor_digest(target)?;
        let (body, ct, _) = self.get_manifest_raw(&d.to_string()).await?;
        let r = self.put_manifest_raw(reference, &ct, body, None).await?;
        expect(r, &[StatusCode::CREATED, StatusCode::OK], &format!("tag {}:{reference}", self.name)).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::Deleter for RemoteRepository {
    async fn delete(&self, target: &Descriptor) -> Result<()> {
        let d = descriptor_digest(target)?;
        let kind = if is_manifest(target) { "manifests" } else { "blobs" };
        let url = self.registry.url(&self.path(&format!("{kind}/{d}")));
        let client = self.registry.client.clone();
        let scope = format!("repository:{}:delete", self.name);
        let r = self.registry.send(&scope, &|| client.request(Method::DELETE, &url)).await?;
        expect(r, &[StatusCode::ACCEPTED, StatusCode::OK, StatusCode::NO_CONTENT], &format!("delete {d}")).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::PredecessorFinder for RemoteRepository {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>> {
        self.referrers(&descriptor_digest(node)?, None).await
    }
}

/// Opens `reference`'s repository on its registry.
pub fn open(reference: &ImageReference, opts: RemoteOptions) -> Result<RemoteRepository> {
    RemoteRegistry::new(&reference.registry, opts)?.repository(&reference.repository)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn challenges_parse() {
        let (s, p) =
            parse_challenge(r#"Bearer realm="http://h:1/token",service="berth",scope="repository:a/b:pull,push""#);
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "http://h:1/token");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="x""#);
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "x"));
    }

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = STANDARD.encode("alice:s3cret");
        std::fs::write(&p, format!(r#"{{"auths":{{"https://127.0.0.1:5000":{{"auth":"{auth}"}},"other.io":{{"username":"u","password":"p"}}}}}}"#)).unwrap();
        assert_eq!(
            credentials_from_docker_config(&p, "127.0.0.1:5000"),
            Some(Credentials { username: "alice".into(), password: "s3cret".into() })
        );
        assert_eq!(credentials_from_docker_config(&p, "other.io").unwrap().username, "u");
        assert_eq!(credentials_from_docker_config(&p, "nope.io"), None);
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("9999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }
}
