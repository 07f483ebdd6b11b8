//! The OCI Distribution v1.1 HTTP API over the filesystem store.
//!
//! Every endpoint of the distribution spec 1.1: pull (manifests by tag or digest with
//! content negotiation, blobs with Range), push (monolithic, POST+PUT, chunked PATCH,
//! cross-repository mount), discovery (tags, `_catalog`, referrers with `artifactType`
//! filtering) and management (DELETE of manifests, tags and blobs). Errors use the spec's
//! JSON body and codes ([`errors`]). Who may do what is [`auth`]'s business; every manifest
//! push and delete is published as an [`events::Event`].
//!
//! Repository names contain slashes, so `/v2/…` is one route and [`route`] splits the
//! path from the right, the way distribution's router does.

pub mod auth;
pub mod errors;
pub mod events;
pub mod server;

use crate::content::{FsStore, Reference};
use crate::oci::{Digest, media, validate_repository};
use auth::{Action, Auth, Identity, Resource};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use errors::{Code, RegistryError, RegistryResult};
use events::{Event, EventActor, EventRequest, EventTarget, Events};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The registry's shared state.
pub struct Registry {
    pub store: Arc<FsStore>,
    pub auth: Auth,
    pub events: Events,
    /// What berth's own services in `serve` authenticate with over HTTP (see
    /// [`auth::InternalAccount`]).
    pub internal: crate::content::remote::Credentials,
}

/// The registry's routes: `/v2/…` and the token endpoint `/token`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", axum::routing::any(dispatch))
        .route("/v2/", axum::routing::any(dispatch))
        .route("/v2/{*path}", axum::routing::any(dispatch))
        .route("/token", axum::routing::get(token).post(token))
        .with_state(registry)
}

/// What a `/v2/` path addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: String },
}

/// Splits a path after `/v2/` into a [`Route`], taking the endpoint from the right so that
/// repository names may contain any number of components.
pub fn route(path: &str) -> Option<Route> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Some(Route::Base);
    }
    if path == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = path.strip_suffix("/tags/list") {
        return Some(Route::Tags { name: name.to_string() });
    }
    if let Some(name) = path.strip_suffix("/blobs/uploads/").or_else(|| path.strip_suffix("/blobs/uploads")) {
        return Some(Route::UploadStart { name: name.to_string() });
    }
    let (head, last) = path.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload { name: name.to_string(), id: last.to_string() });
    }
    let (name, kind) = head.rsplit_once('/')?;
    let (name, last) = (name.to_string(), last.to_string());
    match kind {
        "manifests" => Some(Route::Manifest { name, reference: last }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        "referrers" => Some(Route::Referrers { name, digest: last }),
        _ => None,
    }
}

/// One request's context, as the handlers need it.
struct Ctx {
    reg: Arc<Registry>,
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    peer: Option<SocketAddr>,
}

impl Ctx {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn authorize(&self, resource: Resource, action: Action) -> RegistryResult<Identity> {
        self.reg.auth.authorize(
            self.header(header::AUTHORIZATION),
            self.peer.map(|p| p.ip()),
            self.header(header::HOST),
            &resource,
            action,
        )
    }

    fn repo(&self, name: &str, action: Action) -> RegistryResult<Identity> {
        validate_repository(name).map_err(|e| RegistryError::new(Code::NameInvalid, e.to_string()))?;
        self.authorize(Resource::Repository(name.to_string()), action)
    }

    fn event(&self, action: &str, who: &Identity, target: EventTarget) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: Events::now(),
            action: action.to_string(),
            target,
            request: EventRequest {
                id: uuid::Uuid::new_v4().to_string(),
                addr: self.peer.map(|p| p.to_string()).unwrap_or_default(),
                host: self.header(header::HOST).unwrap_or_default().to_string(),
                method: self.method.to_string(),
                useragent: self.header(header::USER_AGENT).unwrap_or_default().to_string(),
            },
            actor: EventActor { name: who.name().map(str::to_string) },
            source: self.reg.events.source.clone(),
        }
    }
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k, false), percent_decode(v, false));
    }
    out
}

/// Decodes `%XX` escapes. `plus_is_space` for form encoding (the token endpoint); in
/// `/v2/` queries a `+` stays a `+`, since media types such as `…+json` carry one and no
/// value there can hold a space.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_digest(s: &str) -> RegistryResult<Digest> {
    s.parse().map_err(|e: crate::oci::DigestError| RegistryError::new(Code::DigestInvalid, e.to_string()))
}

/// The client's address: from the connection, or from `MockConnectInfo` in tests that
/// drive the router without a socket.
fn peer_addr(req: &Request) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| ext.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>().map(|m| m.0))
}

async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let peer = peer_addr(&req);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/v2").unwrap_or("").to_string();
    let ctx = Ctx { reg, method: parts.method, headers: parts.headers, query: parse_query(parts.uri.query()), peer };
    let result = match route(&path) {
        Some(r) => handle(ctx, r, body).await,
        None => Err(RegistryError::new(Code::NameInvalid, format!("no registry endpoint at /v2{path}"))
            .with_status(StatusCode::NOT_FOUND)),
    };
    let mut resp = result.unwrap_or_else(IntoResponse::into_response);
    resp.headers_mut().insert("Docker-Distribution-API-Version", HeaderValue::from_static("registry/2.0"));
    resp
}

fn method_not_allowed(method: &Method) -> RegistryError {
    RegistryError::new(Code::Unsupported, format!("method {method} is not supported here"))
}

async fn handle(ctx: Ctx, route: Route, body: Body) -> RegistryResult<Response> {
    let m = ctx.method.clone();
    match (route, m) {
        (Route::Base, Method::GET | Method::HEAD) => base(&ctx),
        (Route::Catalog, Method::GET) => catalog(&ctx),
        (Route::Tags { name }, Method::GET) => tags(&ctx, &name),
        (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => get_manifest(&ctx, &name, &reference),
        (Route::Manifest { name, reference }, Method::PUT) => put_manifest(&ctx, &name, &reference, body).await,
        (Route::Manifest { name, reference }, Method::DELETE) => delete_manifest(&ctx, &name, &reference).await,
        (Route::Blob { name, digest }, Method::GET | Method::HEAD) => get_blob(&ctx, &name, &digest).await,
        (Route::Blob { name, digest }, Method::DELETE) => delete_blob(&ctx, &name, &digest),
        (Route::UploadStart { name }, Method::POST) => start_upload(&ctx, &name, body).await,
        (Route::Upload { name, id }, Method::GET) => upload_status(&ctx, &name, &id),
        (Route::Upload { name, id }, Method::PATCH) => patch_upload(&ctx, &name, &id, body).await,
        (Route::Upload { name, id }, Method::PUT) => put_upload(&ctx, &name, &id, body).await,
        (Route::Upload { name, id }, Method::DELETE) => cancel_upload(&ctx, &name, &id),
        (Route::Referrers { name, digest }, Method::GET) => referrers(&ctx, &name, &digest),
        (_, m) => Err(method_not_allowed(&m)),
    }
}

fn base(ctx: &Ctx) -> RegistryResult<Response> {
    let auth = &ctx.reg.auth;
    // Any valid credential opens /v2/ (that is how `docker login` and `skopeo login` check
    // a password); without one, the client is told where to get one.
    if auth.base_requires_auth() && !auth.authenticated(ctx.header(header::AUTHORIZATION)) {
        return Err(RegistryError::unauthorized(
            auth.base_challenge(ctx.header(header::HOST)),
            "authentication required",
        ));
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
}

/// Applies `n`/`last` pagination to a sorted list; returns the page and the next `Link`.
fn paginate(ctx: &Ctx, all: Vec<String>, path: &str) -> RegistryResult<(Vec<String>, Option<String>)> {
    let n = match ctx.query.get("n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            RegistryError::new(Code::Unsupported, format!("query parameter n={n:?} is not a number"))
                .with_status(StatusCode::BAD_REQUEST)
        })?),
        None => None,
    };
    let start = match ctx.query.get("last") {
        Some(last) => all.partition_point(|x| x.as_str() <= last.as_str()),
        None => 0,
    };
    let rest = &all[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    let page = rest[..take].to_vec();
    let link = match (n, page.last()) {
        (Some(n), Some(last)) if take < rest.len() => Some(format!("<{path}?n={n}&last={last}>; rel=\"next\"")),
        _ => None,
    };
    Ok((page, link))
}

fn json_with_link(body: serde_json::Value, link: Option<String>) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Some(l) = link.and_then(|l| HeaderValue::from_str(&l).ok()) {
        resp.headers_mut().insert(header::LINK, l);
    }
    resp
}

fn catalog(ctx: &Ctx) -> RegistryResult<Response> {
    ctx.authorize(Resource::Catalog, Action::Pull)?;
    let all = ctx.reg.store.repositories()?;
    let (page, link) = paginate(ctx, all, "/v2/_catalog")?;
    Ok(json_with_link(serde_json::json!({ "repositories": page }), link))
}

fn tags(ctx: &Ctx, name: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Pull)?;
    let all = ctx.reg.store.tags(name).map_err(|e| RegistryError::new(Code::NameUnknown, e.to_string()))?;
    let (page, link) = paginate(ctx, all, &format!("/v2/{name}/tags/list"))?;
    Ok(json_with_link(serde_json::json!({ "name": name, "tags": page }), link))
}

fn not_found(ctx: &Ctx, name: &str, code: Code, what: String) -> RegistryError {
    if ctx.reg.store.repository_exists(name) {
        RegistryError::new(code, format!("{what} not found in repository {name}"))
    } else {
        RegistryError::new(Code::NameUnknown, format!("repository {name} not found"))
    }
}

fn manifest_reference(reference: &str) -> RegistryResult<Reference> {
    Reference::parse(reference).map_err(RegistryError::from)
}

/// Whether the client's `Accept` allows `media_type`. A client that names no manifest type
/// at all (or none, or a wildcard) takes whatever is stored.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    let mut named_any = false;
    for v in headers.get_all(header::ACCEPT) {
        for item in v.to_str().unwrap_or_default().split(',') {
            let t = item.split(';').next().unwrap_or_default().trim();
            if t == media_type || t == "*/*" {
                return true;
            }
            named_any |= media::is_manifest(t);
        }
    }
    !named_any
}

fn get_manifest(ctx: &Ctx, name: &str, reference: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Pull)?;
    let r = manifest_reference(reference)?;
    let m = ctx.reg.store.get_manifest(name, &r).map_err(|e| match e {
        crate::content::ContentError::NotFound(_) => {
            not_found(ctx, name, Code::ManifestUnknown, format!("manifest {reference}"))
        }
        e => e.into(),
    })?;
    if !accepts(&ctx.headers, &m.media_type) {
        return Err(RegistryError::new(
            Code::ManifestUnknown,
            format!("manifest {reference} is {}, which the request's Accept header does not allow", m.media_type),
        ));
    }
    let digest = m.digest.to_string();
    let headers = [
        (header::CONTENT_TYPE, m.media_type.clone()),
        (header::CONTENT_LENGTH, m.bytes.len().to_string()),
        (header::ETAG, format!("\"{digest}\"")),
        (header::HeaderName::from_static("docker-content-digest"), digest),
    ];
    if ctx.method == Method::HEAD {
        return Ok((StatusCode::OK, headers).into_response());
    }
    Ok((StatusCode::OK, headers, m.bytes.clone()).into_response())
}

async fn put_manifest(ctx: &Ctx, name: &str, reference: &str, body: Body) -> RegistryResult<Response> {
    let who = ctx.repo(name, Action::Push)?;
    let r = manifest_reference(reference)?;
    let limit = crate::content::MAX_MANIFEST_SIZE as usize;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        RegistryError::new(Code::SizeInvalid, format!("manifest exceeds the limit of {limit} bytes"))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    })?;
    let content_type = ctx.header(header::CONTENT_TYPE).map(str::to_string);
    let store = ctx.reg.store.clone();
    let (n, r2) = (name.to_string(), r.clone());
    let put = tokio::task::spawn_blocking(move || store.put_manifest(&n, &r2, content_type.as_deref(), &bytes))
        .await
        .map_err(|e| RegistryError::internal(e.to_string()))??;
    let digest = put.digest.to_string();
    let location = format!("/v2/{name}/manifests/{digest}");
    let mut resp = (
        StatusCode::CREATED,
        [
            (header::LOCATION, location.clone()),
            (header::HeaderName::from_static("docker-content-digest"), digest.clone()),
        ],
    )
        .into_response();
    let subject = put.parsed.subject.as_ref().map(|(s, _)| s.to_string());
    if let Some(s) = subject.as_ref().and_then(|s| HeaderValue::from_str(s).ok()) {
        resp.headers_mut().insert("OCI-Subject", s);
    }
    let tag = match &r {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    let target = EventTarget {
        media_type: put.parsed.media_type.clone(),
        size: put.size,
        digest,
        length: put.size,
        repository: name.to_string(),
        url: location,
        tag,
        artifact_type: put
            .parsed
            .referrer_descriptor(&put.digest, put.size)
            .artifact_type()
            .as_ref()
            .map(|a| a.to_string()),
        subject,
    };
    ctx.reg.events.publish(ctx.event("push", &who, target));
    Ok(resp)
}

async fn delete_manifest(ctx: &Ctx, name: &str, reference: &str) -> RegistryResult<Response> {
    let who = ctx.repo(name, Action::Delete)?;
    let r = manifest_reference(reference)?;
    let store = &ctx.reg.store;
    let m = store.get_manifest(name, &r).map_err(|e| match e {
        crate::content::ContentError::NotFound(_) => {
            not_found(ctx, name, Code::ManifestUnknown, format!("manifest {reference}"))
        }
        e => e.into(),
    })?;
    let tag = match &r {
        Reference::Tag(t) => {
            store.delete_tag(name, t)?;
            Some(t.clone())
        }
        Reference::Digest(d) => {
            let (s, n, d) = (store.clone(), name.to_string(), d.clone());
            tokio::task::spawn_blocking(move || s.delete_manifest(&n, &d))
                .await
                .map_err(|e| RegistryError::internal(e.to_string()))??;
            None
        }
    };
    let digest = m.digest.to_string();
    let target = EventTarget {
        media_type: m.media_type.clone(),
        size: m.bytes.len() as u64,
        digest: digest.clone(),
        length: m.bytes.len() as u64,
        repository: name.to_string(),
        url: format!("/v2/{name}/manifests/{digest}"),
        tag,
        artifact_type: None,
        subject: None,
    };
    ctx.reg.events.publish(ctx.event("delete", &who, target));
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Parses a `Range: bytes=…` header against a blob of `size` bytes into an inclusive range.
/// `Ok(None)` means "no usable range: send everything"; `Err` means unsatisfiable.
fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: answer with the whole blob, as RFC 9110 allows
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if size == 0 || start >= size || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn get_blob(ctx: &Ctx, name: &str, digest: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Pull)?;
    let d = parse_digest(digest)?;
    let blob_unknown = || not_found(ctx, name, Code::BlobUnknown, format!("blob {digest}"));
    let (mut file, size) = match ctx.reg.store.open_blob(name, &d).await {
        Ok(x) => x,
        Err(crate::content::ContentError::NotFound(_)) => return Err(blob_unknown()),
        Err(e) => return Err(e.into()),
    };
    let digest_header = (header::HeaderName::from_static("docker-content-digest"), d.to_string());
    let range = match ctx.header(header::RANGE) {
        Some(h) => parse_range(h, size).map_err(|()| {
            RegistryError::new(Code::BlobUnknown, format!("range {h:?} cannot be satisfied by a blob of {size} bytes"))
                .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        })?,
        None => None,
    };
    let (status, start, len) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut resp = (
        status,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
            (header::ETAG, format!("\"{d}\"")),
            digest_header,
        ],
    )
        .into_response();
    if range.is_some()
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    if ctx.method == Method::HEAD {
        return Ok(resp);
    }
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| RegistryError::internal(e.to_string()))?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    *resp.body_mut() = Body::from_stream(stream);
    Ok(resp)
}

fn delete_blob(ctx: &Ctx, name: &str, digest: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Delete)?;
    let d = parse_digest(digest)?;
    if ctx.reg.store.unlink_blob(name, &d)? {
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(not_found(ctx, name, Code::BlobUnknown, format!("blob {digest}")))
    }
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// The 202 (or 204) answer describing an upload in progress.
fn upload_response(status: StatusCode, name: &str, id: &str, offset: u64) -> Response {
    // Range is inclusive; an empty upload reports "0-0" as distribution does.
    let range = format!("0-{}", offset.saturating_sub(1));
    (
        status,
        [
            (header::LOCATION, upload_location(name, id)),
            (header::RANGE, range),
            (header::CONTENT_LENGTH, "0".to_string()),
            (header::HeaderName::from_static("docker-upload-uuid"), id.to_string()),
        ],
    )
        .into_response()
}

fn blob_created(name: &str, d: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v2/{name}/blobs/{d}")),
            (header::CONTENT_LENGTH, "0".to_string()),
            (header::HeaderName::from_static("docker-content-digest"), d.to_string()),
        ],
    )
        .into_response()
}

async fn start_upload(ctx: &Ctx, name: &str, body: Body) -> RegistryResult<Response> {
    ctx.repo(name, Action::Push)?;
    let store = &ctx.reg.store;
    if let Some(mount) = ctx.query.get("mount") {
        let d = parse_digest(mount)?;
        if let Some(from) = ctx.query.get("from")
            && validate_repository(from).is_ok()
            && ctx.authorize(Resource::Repository(from.clone()), Action::Pull).is_ok()
            && store.mount_blob(from, name, &d)?.is_some()
        {
            return Ok(blob_created(name, &d));
        }
        // Not mountable: the spec says to fall back to an ordinary upload session.
        let id = store.start_upload(name)?;
        return Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0));
    }
    if let Some(digest) = ctx.query.get("digest") {
        let d = parse_digest(digest)?;
        let expected = content_length(&ctx.headers);
        store.put_blob(name, &d, expected, body.into_data_stream()).await?;
        return Ok(blob_created(name, &d));
    }
    let id = store.start_upload(name)?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

fn upload_error(ctx: &Ctx, name: &str, id: &str, e: crate::content::ContentError) -> RegistryError {
    match e {
        crate::content::ContentError::UploadUnknown(_) => {
            RegistryError::new(Code::BlobUploadUnknown, format!("upload {id} is not known in repository {name}"))
        }
        e => {
            let _ = ctx;
            e.into()
        }
    }
}

fn upload_status(ctx: &Ctx, name: &str, id: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Push)?;
    let offset = ctx.reg.store.upload_status(name, id).map_err(|e| upload_error(ctx, name, id, e))?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, id, offset))
}

/// Parses `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>` and
/// `bytes=<start>-<end>`) into its inclusive bounds.
fn parse_content_range(h: &str) -> Option<(u64, u64)> {
    let s = h.trim();
    let s = s.strip_prefix("bytes=").or_else(|| s.strip_prefix("bytes ")).unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// Checks a chunk's `Content-Range` against its `Content-Length`; returns where it starts.
fn chunk_start(ctx: &Ctx) -> RegistryResult<Option<u64>> {
    let Some(h) = ctx.header(header::CONTENT_RANGE) else { return Ok(None) };
    let (start, end) = parse_content_range(h).ok_or_else(|| {
        RegistryError::new(Code::BlobUploadInvalid, format!("Content-Range {h:?} is not <start>-<end>"))
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    })?;
    if end < start {
        return Err(RegistryError::new(Code::BlobUploadInvalid, format!("Content-Range {h:?} ends before it starts"))
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
    }
    if let Some(len) = content_length(&ctx.headers)
        && len != end - start + 1
    {
        return Err(RegistryError::new(
            Code::BlobUploadInvalid,
            format!("Content-Range {h:?} covers {} bytes but Content-Length is {len}", end - start + 1),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
    }
    Ok(Some(start))
}

async fn patch_upload(ctx: &Ctx, name: &str, id: &str, body: Body) -> RegistryResult<Response> {
    ctx.repo(name, Action::Push)?;
    let start = chunk_start(ctx)?;
    let offset = ctx
        .reg
        .store
        .append_upload(name, id, start, body.into_data_stream())
        .await
        .map_err(|e| upload_error(ctx, name, id, e))?;
    Ok(upload_response(StatusCode::ACCEPTED, name, id, offset))
}

async fn put_upload(ctx: &Ctx, name: &str, id: &str, body: Body) -> RegistryResult<Response> {
    ctx.repo(name, Action::Push)?;
    let digest = ctx.query.get("digest").ok_or_else(|| {
        RegistryError::new(Code::DigestInvalid, "the digest query parameter is required to complete an upload")
    })?;
    let d = parse_digest(digest)?;
    let store = &ctx.reg.store;
    if let Some(start) = chunk_start(ctx)? {
        let offset = store.upload_status(name, id).map_err(|e| upload_error(ctx, name, id, e))?;
        if start != offset {
            return Err(crate::content::ContentError::RangeInvalid { start, offset }.into());
        }
    }
    store
        .commit_upload(name, id, &d, None, body.into_data_stream())
        .await
        .map_err(|e| upload_error(ctx, name, id, e))?;
    Ok(blob_created(name, &d))
}

fn cancel_upload(ctx: &Ctx, name: &str, id: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Push)?;
    ctx.reg.store.cancel_upload(name, id).map_err(|e| upload_error(ctx, name, id, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn referrers(ctx: &Ctx, name: &str, digest: &str) -> RegistryResult<Response> {
    ctx.repo(name, Action::Pull)?;
    let d = parse_digest(digest)?;
    let mut list = ctx.reg.store.referrers(name, &d)?;
    let filter = ctx.query.get("artifactType").filter(|f| !f.is_empty());
    if let Some(f) = filter {
        list.retain(|desc| desc.artifact_type().as_ref().is_some_and(|a| &a.to_string() == f));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": list,
    });
    let mut resp = axum::Json(index).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(media::OCI_INDEX));
    if filter.is_some() {
        resp.headers_mut().insert("OCI-Filters-Applied", HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}

/// `GET|POST /token`: the Docker registry token endpoint.
async fn token(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let peer: Option<IpAddr> = peer_addr(&req).map(|p| p.ip());
    let (parts, body) = req.into_parts();
    let mut params: Vec<(String, String)> = Vec::new();
    let mut collect = |q: &str| {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((percent_decode(k, true), percent_decode(v, true)));
        }
    };
    collect(parts.uri.query().unwrap_or_default());
    if parts.method == Method::POST {
        match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(b) => collect(&String::from_utf8_lossy(&b)),
            Err(_) => {
                return RegistryError::new(Code::Unsupported, "token request body too large")
                    .with_status(StatusCode::BAD_REQUEST)
                    .into_response();
            }
        }
    }
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let creds =
        parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(auth::parse_basic).or_else(
            || match (get("grant_type").as_deref(), get("username"), get("password")) {
                (Some("password"), Some(u), Some(p)) => Some((u, p)),
                _ => None,
            },
        );
    let account = match creds {
        Some((u, p)) => match reg.auth.check_password(&u, &p) {
            Some(a) => Some(a),
            None => {
                return RegistryError::unauthorized(
                    "Basic realm=\"berth\"".to_string(),
                    format!("wrong user name or password for {u:?}"),
                )
                .into_response();
            }
        },
        None => None,
    };
    let t = reg.auth.issue_token(account.as_ref(), &scopes, peer);
    axum::Json(t).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_from_the_right() {
        assert_eq!(route("/"), Some(Route::Base));
        assert_eq!(route("/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/a/b/tags/list"), Some(Route::Tags { name: "a/b".into() }));
        assert_eq!(
            route("/a/manifests/b/manifests/latest"),
            Some(Route::Manifest { name: "a/manifests/b".into(), reference: "latest".into() })
        );
        assert_eq!(route("/x/blobs/uploads/"), Some(Route::UploadStart { name: "x".into() }));
        assert_eq!(route("/x/blobs/uploads/abc"), Some(Route::Upload { name: "x".into(), id: "abc".into() }));
        assert_eq!(route("/x/blobs/sha256:00"), Some(Route::Blob { name: "x".into(), digest: "sha256:00".into() }));
        assert_eq!(
            route("/x/referrers/sha256:00"),
            Some(Route::Referrers { name: "x".into(), digest: "sha256:00".into() })
        );
        assert_eq!(route("/x/other/y"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-1", 100), Err(()));
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19)));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("repository%3Aacme%2Fp%3Apull", true), "repository:acme/p:pull");
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(percent_decode("application/vnd.cyclonedx+json", false), "application/vnd.cyclonedx+json");
    }
}
