//! The publisher write path and lifecycle decisions (issue 8: Governance, Modes A and B),
//! as the catalog's JSON API (`schemas/catalog-api.v1.openapi.json`).
//!
//! - **Registration** (Mode B only): name, display name, support and security contacts and
//!   public signing keys → `pending`. An **operator** approves → a publisher record signed by
//!   the catalog root key is pushed to `berth/publishers/<name>` (see [`super::records`]); from
//!   then on the verifier and the catalog trust its keys for `<name>/*`, and in Mode B its
//!   verified versions are listed. Rejecting an approved publisher withdraws its record.
//! - **Push tokens**: issued to an approved publisher (by an operator or by the publisher
//!   itself), shown once, kept as SHA-256 in SQLite ([`super::directory`]). A token is a
//!   registry credential (Basic `<publisher>:<token>`, also through the token endpoint) for
//!   `<publisher>/*` only, and a catalog API credential (`Authorization: Bearer <token>`).
//! - **Keys**: a publisher adds a key and revokes an old one (rotation); each change pushes a
//!   new record revision. Revoked keys stay listed with `revoked_at`.
//! - **Submissions**: every version pushed under the publisher's namespace with its signature,
//!   verification and lifecycle state and whether the catalog lists it.
//! - **Lifecycle**: a publisher deprecates its own version (naming a replacement); an operator
//!   marks any version insecure or removed (or active again). Each change is a lifecycle
//!   status attestation (in-toto statement, predicate `https://aisopsflow.dev/attestations/status/v1`)
//!   signed by the catalog root key and attached to the image digest; the newest wins.
//! - **Tenants** opt in per publisher (Mode B); `/api/v1/search?tenant=` lists the first-party
//!   publishers and those the tenant opted in to.
//!
//! Operators are the accounts named in `catalog.operators`; with no accounts configured
//! (protected mode) loopback clients are operators.

use super::directory::{Directory, DirectoryError, Publisher, State};
use super::harvest::{HarvestSettings, walk_matching};
use super::service::{ApiError, Catalog};
use super::{PluginVersion, records};
use crate::config::CatalogMode;
use crate::content::{ContentError, TagResolver};
use crate::plugin::documents::{Contacts, KeyAlgorithm, KeyStatus, PublisherKey, PublisherRecord};
use crate::plugin::{STATUS_API_VERSION, STATUS_PREDICATE_TYPE};
use crate::registry::Registry;
use crate::sign::{self, KeyPair};
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path as UrlPath, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A catalog operator (an account in `catalog.operators`, or loopback in protected mode).
    Operator(String),
    /// An approved publisher, by one of its push tokens.
    Publisher(String),
    /// A registry account that is neither.
    Account(String),
    Anonymous,
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::Operator(n) => format!("operator:{n}"),
            Caller::Publisher(n) => format!("publisher:{n}"),
            Caller::Account(n) => format!("account:{n}"),
            Caller::Anonymous => "anonymous".to_string(),
        }
    }
}

/// The write path's state.
pub struct Governance {
    pub directory: Arc<Directory>,
    registry: Arc<Registry>,
    catalog: Arc<Catalog>,
    root: Arc<KeyPair>,
    mode: CatalogMode,
    operators: Vec<String>,
    first_party: Vec<String>,
    /// Held by every write that reads, changes and pushes a publisher's state (approve,
    /// reject, keys, lifecycle): concurrent writes cannot undo each other, and a rejection
    /// cannot be overtaken by a record push that started before it.
    writes: tokio::sync::Mutex<()>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code, message.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> ApiError {
        match e {
            DirectoryError::NotFound(m) => ApiError(StatusCode::NOT_FOUND, "not_found", m),
            DirectoryError::Conflict(m) => ApiError(StatusCode::CONFLICT, "conflict", m),
            e => internal(e),
        }
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(|e| bad("invalid_body", e.body_text()))
}

/// Names publishers, tenants: the publisher record's name grammar.
fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if crate::plugin::is_dns_label(name) {
        Ok(())
    } else {
        Err(bad(
            "invalid_name",
            format!(
                "{field} = {name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        ))
    }
}

fn now() -> String {
    super::directory::now()
}

fn key_from_pem(pointer: &str, pem: &str) -> Result<PublisherKey, ApiError> {
    let key = sign::load_public_key(pem).map_err(|e| {
        bad("invalid_key", format!("{pointer}: not an ECDSA P-256 public key in SubjectPublicKeyInfo PEM: {e}"))
    })?;
    Ok(PublisherKey {
        id: key.key_id().to_string(),
        algorithm: KeyAlgorithm::EcdsaP256Sha256,
        public_key_pem: key.to_pem().map_err(internal)?,
        status: KeyStatus::Active,
        added: now(),
        revoked_at: None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    name: String,
    display_name: String,
    contacts: Value,
    /// Public keys, SubjectPublicKeyInfo PEM.
    keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    public_key_pem: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleRequest {
    digest: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    replacement: Option<String>,
}

type Peer = ConnectInfo<SocketAddr>;
type G = AxState<Arc<Governance>>;

impl Governance {
    pub fn new(
        config: &crate::config::Config,
        directory: Arc<Directory>,
        registry: Arc<Registry>,
        catalog: Arc<Catalog>,
        root: Arc<KeyPair>,
    ) -> Arc<Governance> {
        let c = &config.catalog;
        Arc::new(Governance {
            directory,
            registry,
            catalog,
            root,
            mode: c.mode,
            operators: c.operators.clone(),
            first_party: c.first_party.clone(),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Who sent `headers` from `peer`. Wrong credentials are a 401, never anonymous.
    pub(super) fn caller(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Caller, ApiError> {
        let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, "unauthorized", m.to_string());
        let Some(h) = headers.get("authorization").and_then(|h| h.to_str().ok()) else {
            let protected = self.registry.auth.settings().accounts.is_empty();
            return Ok(if protected && peer.ip().is_loopback() {
                Caller::Operator("loopback".to_string())
            } else {
                Caller::Anonymous
            });
        };
        if let Some(token) = h.strip_prefix("Bearer ") {
            return self
                .directory
                .token_publisher(token.trim())
                .map(Caller::Publisher)
                .ok_or_else(|| unauthorized("the push token is unknown, revoked, or its publisher is not approved"));
        }
        let (user, password) = crate::registry::auth::parse_basic(h)
            .ok_or_else(|| unauthorized("Authorization must be Basic (an account) or Bearer (a push token)"))?;
        if let Some(p) = self.directory.token_publisher(&password) {
            return if p == user {
                Ok(Caller::Publisher(p))
            } else {
                Err(unauthorized("the token is not this user's"))
            };
        }
        let account = self
            .registry
            .auth
            .check_password(&user, &password)
            .ok_or_else(|| unauthorized("the user name or password is wrong"))?;
        Ok(if self.operators.contains(&account.name) {
            Caller::Operator(account.name)
        } else {
            Caller::Account(account.name)
        })
    }

    fn operator(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<String, ApiError> {
        match self.caller(headers, peer)? {
            Caller::Operator(n) => Ok(n),
            Caller::Anonymous => {
                Err(ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "an operator's credentials are required".into()))
            }
            c => Err(ApiError(StatusCode::FORBIDDEN, "forbidden", format!("{} is not a catalog operator", c.name()))),
        }
    }

    /// An operator, or the publisher `publisher` itself.
    fn operator_or(&self, headers: &HeaderMap, peer: SocketAddr, publisher: &str) -> Result<Caller, ApiError> {
        match self.caller(headers, peer)? {
            c @ Caller::Operator(_) => Ok(c),
            Caller::Publisher(p) if p == publisher => Ok(Caller::Publisher(p)),
            Caller::Anonymous => {
                Err(ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "credentials are required".into()))
            }
            c => Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} may not act for publisher {publisher}", c.name()),
            )),
        }
    }

    fn record_of(p: &Publisher) -> Result<PublisherRecord, ApiError> {
        let contacts: Contacts = serde_json::from_value(p.contacts.clone()).map_err(internal)?;
        Ok(PublisherRecord {
            api_version: crate::plugin::PUBLISHER_API_VERSION.to_string(),
            name: p.name.clone(),
            display_name: p.display_name.clone(),
            contacts,
            keys: p.keys.clone(),
        })
    }

    /// Signs and pushes `p`'s record, announces it (the catalog and others react), and
    /// remembers its digest.
    async fn push_record(&self, p: &Publisher, by: &str) -> Result<String, ApiError> {
        let record = Self::record_of(p)?;
        let repository = records::repository(&p.name);
        let target = self.registry.store.repository(&repository).map_err(internal)?;
        let desc = records::push(&target, &self.root, &record).await.map_err(internal)?;
        let digest = desc.digest().to_string();
        self.registry.events.announce_push(&repository, &desc, None, Some(records::CURRENT.to_string()), by);
        self.directory.set_record(&p.name, &digest)?;
        Ok(digest)
    }

    /// Withdraws `publisher`'s record (its `latest` tag): it is no longer approved anywhere
    /// the registry goes.
    fn withdraw_record(&self, publisher: &str) -> Result<(), ApiError> {
        match self.registry.store.delete_tag(&records::repository(publisher), records::CURRENT) {
            Ok(()) | Err(ContentError::NotFound(_)) => {}
            Err(e) => return Err(internal(e)),
        }
        let (catalog, publisher, handle) =
            (Arc::clone(&self.catalog), publisher.to_string(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = handle.block_on(catalog.publisher_changed(&publisher)) {
                tracing::warn!(%publisher, "catalog: {e}");
            }
        });
        Ok(())
    }

    fn public_view(p: &Publisher) -> Value {
        json!({
            "name": p.name, "display_name": p.display_name, "contacts": p.contacts,
            "keys": p.keys, "state": p.state, "record": p.record,
        })
    }

    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/publishers", post(register).get(list))
            .route("/api/v1/publishers/{name}", get(show))
            .route("/api/v1/publishers/{name}/approve", post(approve))
            .route("/api/v1/publishers/{name}/reject", post(reject))
            .route("/api/v1/publishers/{name}/tokens", post(issue_token).get(list_tokens))
            .route("/api/v1/publishers/{name}/tokens/{id}", delete(revoke_token))
            .route("/api/v1/publishers/{name}/keys", post(add_key))
            .route("/api/v1/publishers/{name}/keys/{id}", delete(revoke_key))
            .route("/api/v1/publishers/{name}/submissions", get(submissions))
            .route("/api/v1/plugins/{publisher}/{name}/lifecycle", post(set_lifecycle))
            .route("/api/v1/tenants/{tenant}/publishers", get(tenant_publishers))
            .route("/api/v1/tenants/{tenant}/publishers/{publisher}", put(opt_in).delete(opt_out))
            .with_state(Arc::clone(self))
    }
}

async fn register(
    AxState(g): G,
    b: Result<Json<Registration>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if g.mode == CatalogMode::FirstParty {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "registration_closed",
            "catalog.mode = \"first-party\" (Mode A): only the first-party publishers are listed; registration needs mode \"curated\"".into(),
        ));
    }
    let r = body(b)?;
    check_name("name", &r.name)?;
    // `berth/*` holds the publisher records: a publisher owning it could move their tags.
    if r.name == "berth" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "conflict",
            "name = \"berth\" is reserved: berth/* holds the publisher records".into(),
        ));
    }
    if g.first_party.contains(&r.name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "conflict",
            format!("name = {:?} is a first-party publisher", r.name),
        ));
    }
    if r.keys.is_empty() {
        return Err(bad("invalid_key", "keys: register at least one public signing key"));
    }
    let mut keys: Vec<PublisherKey> = Vec::new();
    for (i, pem) in r.keys.iter().enumerate() {
        let k = key_from_pem(&format!("keys[{i}]"), pem)?;
        if keys.iter().any(|x| x.id == k.id) {
            return Err(bad("invalid_key", format!("keys[{i}]: the same key is listed twice")));
        }
        keys.push(k);
    }
    // The record it would become must validate: every problem at once, with JSON pointers.
    let candidate = json!({
        "api_version": crate::plugin::PUBLISHER_API_VERSION, "name": r.name,
        "display_name": r.display_name, "contacts": r.contacts, "keys": keys,
    });
    if let Err(problems) = crate::plugin::validate_publisher_record(&candidate) {
        return Err(bad("invalid_registration", format!("the registration is invalid:\n{problems}")));
    }
    let p = g.directory.register(&r.name, &r.display_name, &r.contacts, &keys)?;
    tracing::info!(publisher = %p.name, "catalog: publisher registered, waiting for an operator");
    Ok((StatusCode::CREATED, Json(json!(p))))
}

async fn list(AxState(g): G, ConnectInfo(peer): Peer, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let operator = matches!(g.caller(&headers, peer)?, Caller::Operator(_));
    let all = g.directory.list()?;
    let shown: Vec<Value> = all
        .iter()
        .filter(|p| operator || p.state == State::Approved)
        .map(|p| if operator { json!(p) } else { Governance::public_view(p) })
        .collect();
    Ok(Json(json!({"publishers": shown})))
}

async fn show(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = g.caller(&headers, peer)?;
    let p = g.directory.get(&name)?;
    match p {
        Some(p) if matches!(caller, Caller::Operator(_)) => Ok(Json(json!(p))),
        Some(p) if caller == Caller::Publisher(name.clone()) => Ok(Json(json!(p))),
        Some(p) if p.state == State::Approved => Ok(Json(Governance::public_view(&p))),
        _ => Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no approved publisher {name:?}"))),
    }
}

async fn approve(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let by = g.operator(&headers, peer)?;
    let _writing = g.writes.lock().await;
    let p = g.directory.decide(&name, State::Approved, &by)?;
    // A failed push leaves the publisher approved without a record; approving again pushes it.
    let record = g.push_record(&p, &format!("operator:{by}")).await?;
    tracing::info!(publisher = %name, %record, operator = %by, "catalog: publisher approved");
    Ok(Json(json!({"publisher": g.directory.get(&name)?, "record": record, "repository": records::repository(&name)})))
}

async fn reject(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    let by = g.operator(&headers, peer)?;
    let _writing = g.writes.lock().await;
    let p = g.directory.decide(&name, State::Rejected, &by)?;
    // Always (it is idempotent): a rejection whose withdrawal failed is finished by a retry.
    g.withdraw_record(&name)?;
    Ok(Json(json!({"publisher": p})))
}

async fn issue_token(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    b: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    g.operator_or(&headers, peer, &name)?;
    let p = g
        .directory
        .get(&name)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no publisher {name:?}")))?;
    if p.state != State::Approved {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "not_approved",
            format!("publisher {name} is {}: push tokens are issued once an operator approves it", json!(p.state)),
        ));
    }
    // The body is optional; when there is one it must be a TokenRequest.
    let description = if b.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        serde_json::from_slice::<TokenRequest>(&b)
            .map_err(|e| bad("invalid_body", format!("the body is not a token request: {e}")))?
            .description
    };
    let (token, secret) = g.directory.issue_token(&name, &description)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": token.id, "token": secret, "publisher": name, "namespace": format!("{name}/*"),
            "created_at": token.created_at, "description": token.description,
            "usage": format!("registry: user {name}, password <token> (oras login / skopeo login); catalog API: Authorization: Bearer <token>. Shown once."),
        })),
    ))
}

async fn list_tokens(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    g.operator_or(&headers, peer, &name)?;
    Ok(Json(json!({"tokens": g.directory.tokens(&name)?})))
}

async fn revoke_token(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    g.operator_or(&headers, peer, &name)?;
    Ok(Json(json!(g.directory.revoke_token(&name, &id)?)))
}

async fn add_key(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
    b: Result<Json<KeyRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = g.operator_or(&headers, peer, &name)?;
    let k = key_from_pem("public_key_pem", &body(b)?.public_key_pem)?;
    let _writing = g.writes.lock().await;
    let p = g
        .directory
        .get(&name)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no publisher {name:?}")))?;
    if p.keys.iter().any(|x| x.id == k.id) {
        return Err(ApiError(StatusCode::CONFLICT, "conflict", format!("key {} is already registered", k.id)));
    }
    let mut next = p.clone();
    next.keys.push(k.clone());
    // The record first: a failed push changes nothing, and the request can be repeated.
    let record = if p.state == State::Approved { Some(g.push_record(&next, &caller.name()).await?) } else { None };
    g.directory.set_keys(&name, &next.keys)?;
    Ok((StatusCode::CREATED, Json(json!({"key": k, "record": record}))))
}

async fn revoke_key(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let caller = g.operator_or(&headers, peer, &name)?;
    let _writing = g.writes.lock().await;
    let p = g
        .directory
        .get(&name)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no publisher {name:?}")))?;
    let mut next = p.clone();
    let Some(k) = next.keys.iter_mut().find(|k| k.id == id) else {
        return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("publisher {name} has no key {id:?}")));
    };
    if k.status == KeyStatus::Active {
        k.status = KeyStatus::Revoked;
        k.revoked_at = Some(now());
    }
    let key = k.clone();
    let record = if p.state == State::Approved { Some(g.push_record(&next, &caller.name()).await?) } else { None };
    g.directory.set_keys(&name, &next.keys)?;
    Ok(Json(json!({"key": key, "record": record})))
}

/// Where one submitted version stands.
fn submission(v: &PluginVersion, listed: bool) -> Value {
    let state = if v.lifecycle == "removed" {
        "removed"
    } else if !v.signed {
        "unsigned"
    } else if v.verification == "none" {
        "verifying"
    } else if !v.verified {
        "failed_verification"
    } else if listed {
        "listed"
    } else {
        "verified"
    };
    json!({
        "repository": v.repository, "version": v.version, "digest": v.digest, "reference": v.reference,
        "state": state, "listed": listed, "signed": v.signed, "verification": v.verification,
        "failed_checks": v.failed_checks, "verified_at": v.verified_at, "lifecycle": v.lifecycle,
    })
}

async fn submissions(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    g.operator_or(&headers, peer, &name)?;
    if g.directory.get(&name)?.is_none() && !g.first_party.contains(&name) {
        return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no publisher {name:?}")));
    }
    let current = g.catalog.settings();
    // Everything under the namespace, listed or not.
    let all = HarvestSettings { listing: None, ..HarvestSettings::clone(&current) };
    let source = g.catalog.source();
    let prefix = format!("{name}/");
    let handle = tokio::runtime::Handle::current();
    // A walk's futures are not `Send`: drive it on a blocking thread.
    let found = tokio::task::spawn_blocking(move || {
        let mut found: Vec<PluginVersion> = Vec::new();
        let report =
            handle.block_on(walk_matching(&source, &all, &|r| r.starts_with(&prefix), &|_, _, _| {}, &mut |v| {
                found.push(v)
            }));
        report.map(|r| (found, r.skipped))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let (mut versions, skipped) = found;
    versions.sort_by(|a, b| {
        let key = |v: &PluginVersion| (v.repository.clone(), semver::Version::parse(&v.version).ok());
        key(a).cmp(&key(b))
    });
    let rows: Vec<Value> = versions.iter().map(|v| submission(v, current.lists(v))).collect();
    Ok(Json(json!({"publisher": name, "submissions": rows, "problems": skipped})))
}

async fn set_lifecycle(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath((publisher, name)): UrlPath<(String, String)>,
    b: Result<Json<LifecycleRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = g.caller(&headers, peer)?;
    let r = body(b)?;
    let repository = format!("{publisher}/{name}");
    match &caller {
        Caller::Operator(_) => {}
        Caller::Publisher(p) if *p == publisher => {
            if r.status != "deprecated" {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "status = {:?}: a publisher may only deprecate its versions; insecure, removed and active are an operator's decision",
                        r.status
                    ),
                ));
            }
        }
        Caller::Anonymous => {
            return Err(ApiError(StatusCode::UNAUTHORIZED, "unauthorized", "credentials are required".into()));
        }
        c => {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} may not change the lifecycle of {repository}", c.name()),
            ));
        }
    }
    let digest: crate::oci::Digest =
        r.digest.parse().map_err(|e| bad("invalid_digest", format!("digest = {:?}: {e}", r.digest)))?;
    let target = g.registry.store.repository(&repository).map_err(internal)?;
    let image = match target.resolve(&digest.to_string()).await {
        Ok(d) => d,
        Err(ContentError::NotFound(_)) => {
            return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("{repository} has no image {digest}")));
        }
        Err(e) => return Err(internal(e)),
    };
    let _writing = g.writes.lock().await;
    let roots = g.catalog.settings().trust.roots.clone();
    // Fails closed: a status that cannot be read is no licence to override it.
    if let Caller::Publisher(_) = caller
        && let Some(current) = super::harvest::current_status(&target, &image, &roots).await.map_err(internal)?
        && matches!(current.as_str(), "insecure" | "removed")
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{repository}@{digest} is {current}: an operator decided that; a publisher cannot change it"),
        ));
    }
    let mut predicate = json!({
        "api_version": STATUS_API_VERSION,
        "subject": {"digest": digest.to_string(), "repository": repository},
        "status": r.status,
        "time": now(),
        "by": caller.name(),
    });
    if let Some(reason) = &r.reason {
        predicate["reason"] = json!(reason);
    }
    if let Some(replacement) = &r.replacement {
        predicate["replacement"] = json!(replacement);
    }
    crate::plugin::validate_lifecycle_status(&predicate)
        .map_err(|problems| bad("invalid_status", format!("the lifecycle status is invalid:\n{problems}")))?;
    let bundle = sign::sign_statement(&digest, &repository, STATUS_PREDICATE_TYPE, predicate.clone(), &g.root)
        .map_err(internal)?;
    let referrer = sign::attach_signature(&target, &image, &bundle).await.map_err(internal)?;
    g.registry.events.announce_push(&repository, &referrer, Some(digest.to_string()), None, &caller.name());
    tracing::info!(%repository, %digest, status = %r.status, by = %caller.name(), "catalog: lifecycle changed");
    Ok((StatusCode::CREATED, Json(json!({"status": predicate, "attestation": referrer.digest().to_string()}))))
}

fn tenant_name(tenant: &str) -> Result<(), ApiError> {
    check_name("tenant", tenant)
}

async fn tenant_publishers(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath(tenant): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    g.operator(&headers, peer)?;
    tenant_name(&tenant)?;
    Ok(Json(
        json!({"tenant": tenant, "first_party": g.first_party, "publishers": g.directory.tenant_publishers(&tenant)?}),
    ))
}

async fn opt_in(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath((tenant, publisher)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let by = g.operator(&headers, peer)?;
    tenant_name(&tenant)?;
    match g.directory.get(&publisher)? {
        Some(p) if p.state == State::Approved => {}
        _ => {
            return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no approved publisher {publisher:?}")));
        }
    }
    g.directory.opt_in(&tenant, &publisher, &by)?;
    Ok(Json(json!({"tenant": tenant, "publishers": g.directory.tenant_publishers(&tenant)?})))
}

async fn opt_out(
    AxState(g): G,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    UrlPath((tenant, publisher)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    g.operator(&headers, peer)?;
    tenant_name(&tenant)?;
    if !g.directory.opt_out(&tenant, &publisher)? {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("tenant {tenant} has not opted in to {publisher}"),
        ));
    }
    Ok(Json(json!({"tenant": tenant, "publishers": g.directory.tenant_publishers(&tenant)?})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("name", "acme-tools").is_ok());
        for bad in ["", "-acme", "acme-", "Acme", "acme/x", &"a".repeat(64)] {
            let Err(e) = check_name("name", bad) else { panic!("{bad:?} accepted") };
            assert!(e.2.starts_with("name = "), "{}", e.2);
        }
    }

    #[test]
    fn submission_states() {
        let mut v = PluginVersion {
            signed: true,
            verification: "none".into(),
            lifecycle: "active".into(),
            ..Default::default()
        };
        assert_eq!(submission(&v, false)["state"], "verifying");
        v.verification = "unverified".into();
        assert_eq!(submission(&v, false)["state"], "failed_verification");
        v.verification = "verified".into();
        v.verified = true;
        assert_eq!(submission(&v, false)["state"], "verified");
        assert_eq!(submission(&v, true)["state"], "listed");
        v.lifecycle = "removed".into();
        assert_eq!(submission(&v, true)["state"], "removed");
        v.lifecycle = "active".into();
        v.signed = false;
        assert_eq!(submission(&v, false)["state"], "unsigned");
    }
}
