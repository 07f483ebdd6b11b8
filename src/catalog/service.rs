//! The catalog inside `berth serve`: the index kept current from registry events, rebuilt
//! from the registry when it is new or its schema changed, and the JSON API over it
//! (`/api/v1/search`, `/api/v1/plugins/{publisher}/{name}`).
//!
//! Every push of a referrer (plugin manifest, SBOM, signature, verification report, lifecycle
//! status) re-reads the image it refers to once the image has been quiet for a moment; a
//! deleted image leaves the index. The index is derived data: `berth index rebuild` (or a
//! schema change) walks the registry and writes it anew.

use super::PluginVersion;
use super::harvest::{HarvestSettings, Source, Visibility, harvest, walk};
use super::index::{CatalogIndex, SearchQuery};
use crate::content::remote::{self, RemoteOptions};
use crate::content::{TagResolver, fetch_all};
use crate::oci::ImageReference;
use crate::registry::Registry;
use crate::registry::events::{Event, Quiet};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
    #[error(transparent)]
    Harvest(#[from] super::harvest::HarvestError),
    #[error("{field}: {path}: {message}")]
    Key { field: String, path: String, message: String },
    #[error(transparent)]
    Reputation(#[from] super::reputation::ReputationError),
}

fn keys(field: &str, paths: &[std::path::PathBuf]) -> Result<Vec<crate::sign::PublicKey>, CatalogError> {
    paths
        .iter()
        .map(|p| {
            let bad = |message: String| CatalogError::Key {
                field: field.to_string(),
                path: p.display().to_string(),
                message,
            };
            let pem = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
            crate::sign::load_public_key(&pem).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// The catalog `config` describes for the registry serving on `local`: its index, and the
/// keys it trusts — the publishers' registered keys, this server's verifier key and any
/// others configured, the catalog root keys.
pub fn open(
    config: &crate::config::Config,
    registry: &Registry,
    local: std::net::SocketAddr,
    verifier: Option<crate::sign::PublicKey>,
    root: crate::sign::PublicKey,
) -> Result<Arc<Catalog>, CatalogError> {
    let c = &config.catalog;
    let dir = c.index_dir.clone().unwrap_or_else(|| config.server.data_dir.join("index"));
    let index = CatalogIndex::open(&dir)?;
    let mut publishers = Vec::new();
    for (name, paths) in &config.verification.publishers {
        publishers.extend(keys(&format!("verification.publishers.{name}"), paths)?);
    }
    let mut verifiers = keys("catalog.verifier_keys", &c.verifier_keys)?;
    verifiers.extend(verifier);
    let mut roots = keys("catalog.root_keys", &c.root_keys)?;
    roots.push(root);
    let trust = crate::runner::resolve::Trust { publishers, roots, verifiers };
    // Install snippets name the registry as its users reach it.
    let public =
        config.server.public_url.as_deref().and_then(|u| u.split_once("://")).map(|(_, h)| h.trim_end_matches('/'));
    let registry_host = public.map(str::to_string).unwrap_or_else(|| local.to_string());
    let settings = HarvestSettings {
        trust,
        first_party: c.first_party.clone(),
        registry: registry_host,
        listing: Some(Visibility { mode: c.mode, approved: Default::default() }),
        ..HarvestSettings::default()
    };
    // The catalog reads this registry over HTTP as berth's internal account.
    let remote =
        RemoteOptions { credentials: Some(registry.internal.clone()), basic_first: true, ..RemoteOptions::default() };
    let mut catalog = Catalog::new(index, settings, local.to_string(), remote);
    if let Some(me) = Arc::get_mut(&mut catalog) {
        me.store = Some(Arc::clone(&registry.store));
    }
    let db = c.database.clone().unwrap_or_else(|| config.server.data_dir.join("catalog.sqlite"));
    catalog.set_reputation(Arc::new(super::reputation::Reputation::open(&db)?));
    Ok(catalog)
}

/// The catalog service: the index and how to refresh it.
pub struct Catalog {
    pub index: Arc<CatalogIndex>,
    /// Replaced as a whole when a publisher record changes.
    settings: std::sync::RwLock<Arc<HarvestSettings>>,
    /// The embedded store, when the catalog runs inside `serve` (faster walks than HTTP).
    store: Option<Arc<crate::content::FsStore>>,
    /// Held while publisher records are read and the settings updated from them, so that an
    /// older read cannot overwrite a newer one.
    records: tokio::sync::Mutex<()>,
    /// Tenants' publisher opt-ins (Mode B), when the catalog keeps a database.
    directory: std::sync::OnceLock<Arc<super::directory::Directory>>,
    /// `host:port` of this server, as the catalog reads it.
    host: String,
    remote: RemoteOptions,
    /// Images named by events, waiting for a quiet moment: (repository, digest).
    pending: Quiet<(String, String)>,
    /// Install and failure counts, filled into every document harvested.
    reputation: std::sync::OnceLock<Arc<super::reputation::Reputation>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("host", &self.host).finish()
    }
}

impl Catalog {
    pub fn new(index: CatalogIndex, settings: HarvestSettings, host: String, remote: RemoteOptions) -> Arc<Catalog> {
        Arc::new(Catalog {
            index: Arc::new(index),
            settings: std::sync::RwLock::new(Arc::new(settings)),
            store: None,
            records: tokio::sync::Mutex::new(()),
            directory: std::sync::OnceLock::new(),
            host,
            remote,
            pending: Quiet::new(Duration::from_millis(300)),
            reputation: std::sync::OnceLock::new(),
        })
    }

    /// What the harvester trusts and lists, now.
    pub fn settings(&self) -> Arc<HarvestSettings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn update_settings(&self, change: impl FnOnce(&mut HarvestSettings)) {
        let mut guard = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let mut next = HarvestSettings::clone(&guard);
        change(&mut next);
        *guard = Arc::new(next);
    }

    /// Narrows `q` to the publishers `tenant` sees: the first-party ones and those it opted
    /// in to (without a database, the first-party ones).
    pub fn restrict_to_tenant(&self, q: &mut SearchQuery, tenant: &str) -> Result<(), String> {
        let mut seen = self.settings().first_party.clone();
        if let Some(d) = self.directory.get() {
            seen.extend(d.tenant_publishers(tenant).map_err(|e| e.to_string())?);
        }
        if q.publisher.is_empty() {
            q.publisher = seen;
        } else {
            q.publisher.retain(|p| seen.contains(p));
            if q.publisher.is_empty() {
                // Asked only for publishers the tenant does not see: nothing matches.
                q.publisher.push("\u{0}".to_string());
            }
        }
        Ok(())
    }

    /// Where tenants' opt-ins come from (once; later calls are ignored).
    pub fn set_directory(&self, directory: Arc<super::directory::Directory>) {
        let _ = self.directory.set(directory);
    }

    /// Where this catalog reads the registry: the embedded store in `serve`, else over HTTP.
    pub fn source(&self) -> Source {
        match &self.store {
            Some(store) => Source::Embedded(Arc::clone(store)),
            None => Source::Registry { host: self.host.clone(), options: self.remote.clone() },
        }
    }

    /// Reads every publisher record in `source` signed by a root key: their keys are trusted
    /// for their publisher's signatures, and (Mode B) their plugins may be listed.
    pub async fn load_publishers(&self, source: &Source) -> Result<(), CatalogError> {
        let _reading = self.records.lock().await;
        let roots = self.settings().trust.roots.clone();
        let (records, problems) = super::harvest::publisher_records(source, &roots).await?;
        for p in problems {
            tracing::warn!("catalog: {p}");
        }
        self.update_settings(|s| {
            s.publisher_keys = records.iter().map(|(n, r)| (n.clone(), super::records::active_keys(r))).collect();
            if let Some(l) = &mut s.listing {
                l.approved = records.keys().cloned().collect();
            }
        });
        Ok(())
    }

    /// A publisher record changed: read it again and harvest that publisher's repositories anew
    /// (its versions may become listed, or unlisted, and its signatures verify differently).
    pub async fn publisher_changed(&self, publisher: &str) -> Result<(), CatalogError> {
        let source = self.source();
        let reading = self.records.lock().await;
        let roots = self.settings().trust.roots.clone();
        let record = super::harvest::publisher_record(&source, publisher, &roots).await;
        let record = record.unwrap_or_else(|e| {
            tracing::warn!(%publisher, "catalog: {e}");
            None
        });
        self.update_settings(|s| {
            match &record {
                Some(r) => s.publisher_keys.insert(publisher.to_string(), super::records::active_keys(r)),
                None => s.publisher_keys.remove(publisher),
            };
            if let Some(l) = &mut s.listing {
                if record.is_some() {
                    l.approved.insert(publisher.to_string());
                } else {
                    l.approved.remove(publisher);
                }
            }
        });
        drop(reading);
        // Every version of the publisher, listed or not, and every one the index holds, is
        // refreshed through the one queue all refreshes go through: a report landing meanwhile
        // is never overwritten by this older view.
        let prefix = format!("{publisher}/");
        let mut images: Vec<(String, String)> = match &self.store {
            // The store says which images are plugins without harvesting them (the refreshes do).
            Some(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || super::harvest::embedded_plugin_images(&store, &prefix))
                    .await
                    .map_err(|e| CatalogError::Harvest(super::harvest::HarvestError::Task(e.to_string())))?
            }
            None => {
                let all = HarvestSettings { listing: None, ..HarvestSettings::clone(&self.settings()) };
                let mut found = Vec::new();
                super::harvest::walk_matching(&source, &all, &|r| r.starts_with(&prefix), &|_, _, _| {}, &mut |v| {
                    found.push((v.repository, v.digest))
                })
                .await?;
                found
            }
        };
        images.extend(self.index.publisher_versions(publisher)?);
        for image in images {
            self.pending.touch(image);
        }
        Ok(())
    }

    /// Where install and failure counts come from (once; later calls are ignored).
    pub fn set_reputation(&self, reputation: Arc<super::reputation::Reputation>) {
        let _ = self.reputation.set(reputation);
    }

    pub fn reputation(&self) -> Option<&Arc<super::reputation::Reputation>> {
        self.reputation.get()
    }

    /// Refreshes the document of `digest` once it has been quiet for a moment.
    pub fn touch(&self, repository: &str, digest: &str) {
        self.pending.touch((repository.to_string(), digest.to_string()));
    }

    /// Rebuilds the index from `source`: clear, walk, upsert every version, commit.
    pub async fn rebuild(&self, source: &Source) -> Result<super::harvest::WalkReport, CatalogError> {
        self.rebuild_with_progress(source, &|_, _, _| {}).await
    }

    /// [`Catalog::rebuild`], reporting (repositories done, repositories, versions) as it goes.
    pub async fn rebuild_with_progress(
        &self,
        source: &Source,
        progress: &(dyn Fn(usize, usize, usize) + Sync),
    ) -> Result<super::harvest::WalkReport, CatalogError> {
        // Publisher records first: their keys and (Mode B) approvals decide what is listed.
        self.load_publishers(source).await?;
        self.index.clear()?;
        let index = Arc::clone(&self.index);
        let mut failed: Option<super::index::IndexError> = None;
        let reputation = self.reputation.get().cloned();
        let mut each = |mut v: PluginVersion| {
            // Counts live in SQLite, not in the registry: a rebuild keeps them.
            if let Some(r) = &reputation {
                r.fill(&mut v);
            }
            if failed.is_none()
                && let Err(e) = index.upsert(&v)
            {
                failed = Some(e);
            }
        };
        let settings = self.settings();
        let report = walk(source, &settings, progress, &mut each).await?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        self.index.commit()?;
        Ok(report)
    }

    /// Listens to the registry's events and keeps the index current.
    pub fn spawn(self: &Arc<Self>, registry: &Registry) -> Vec<JoinHandle<()>> {
        let mut events = registry.events.subscribe();
        let me = Arc::clone(self);
        let listen = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => me.on_event(&e).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "catalog: missed registry events; run `berth index rebuild`")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let me = Arc::clone(self);
        let settle = tokio::spawn(async move { me.settle_loop().await });
        vec![listen, settle]
    }

    fn repo(&self, repository: &str) -> Option<remote::RemoteRepository> {
        let r = ImageReference::parse(&format!("{}/{repository}", self.host)).ok()?;
        remote::open(&r, self.remote.clone()).ok()
    }

    async fn on_event(self: &Arc<Self>, e: &Event) {
        let repository = e.target.repository.clone();
        if let Some(publisher) = super::records::publisher_of(&repository) {
            // A record and its signature arrive as two pushes: the tag moves last.
            if e.action == "push" && e.target.tag.as_deref() == Some(super::records::CURRENT) {
                // On a blocking thread driving the future itself, as the start-up rebuild does:
                // the walk's futures are not `Send` enough for `tokio::spawn`.
                let (me, publisher, handle) =
                    (Arc::clone(self), publisher.to_string(), tokio::runtime::Handle::current());
                tokio::task::spawn_blocking(move || {
                    if let Err(err) = handle.block_on(me.publisher_changed(&publisher)) {
                        tracing::warn!(%publisher, "catalog: publisher record: {err}");
                    }
                });
            }
            return;
        }
        match e.action.as_str() {
            "delete"
                if !self.held_elsewhere(&repository, &e.target.digest).unwrap_or(true)
                    && self.index.remove(&e.target.digest).and_then(|_| self.index.commit()).is_err() =>
            {
                tracing::warn!(digest = %e.target.digest, "catalog: could not remove a deleted image");
            }
            "push" => {
                // A referrer refreshes its subject; a referrer of a referrer (a signature of
                // the plugin manifest artifact) refreshes the image that one refers to.
                let mut digest = e.target.subject.clone().unwrap_or_else(|| e.target.digest.clone());
                if let Some(up) = self.subject_of(&repository, &digest).await {
                    digest = up;
                }
                self.pending.touch((repository, digest));
            }
            _ => {}
        }
    }

    /// The `subject` of manifest `digest`, when it has one.
    async fn subject_of(&self, repository: &str, digest: &str) -> Option<String> {
        let repo = self.repo(repository)?;
        let d = repo.resolve(digest).await.ok()?;
        let m: Value = serde_json::from_slice(&fetch_all(&repo, &d).await.ok()?).ok()?;
        m.pointer("/subject/digest").and_then(Value::as_str).map(str::to_string)
    }

    async fn settle_loop(&self) {
        loop {
            for (repository, digest) in self.pending.ready().await {
                if let Err(e) = self.refresh(&repository, &digest).await {
                    tracing::warn!(%repository, %digest, "catalog: {e}");
                }
            }
            if let Err(e) = self.index.commit() {
                tracing::error!("catalog: commit: {e}");
            }
        }
    }

    /// Whether the index's document for `digest` belongs to a repository other than `repository`.
    fn held_elsewhere(&self, repository: &str, digest: &str) -> Result<bool, CatalogError> {
        Ok(self.index.get(digest)?.is_some_and(|v| v.repository != repository))
    }

    /// Re-reads one image and updates its document (or drops it when it is no plugin).
    pub async fn refresh(&self, repository: &str, digest: &str) -> Result<(), CatalogError> {
        let Some(repo) = self.repo(repository) else { return Ok(()) };
        // The index holds one document per digest: another repository's copy of the same
        // image is not this repository's to replace or drop.
        if self.held_elsewhere(repository, digest)? {
            return Ok(());
        }
        let Ok(image) = repo.resolve(digest).await else {
            self.index.remove(digest)?;
            return Ok(());
        };
        match harvest(&repo, repository, &image, &self.settings()).await? {
            Some(mut v) => {
                if let Some(r) = self.reputation.get() {
                    r.fill(&mut v);
                }
                self.index.upsert(&v)?
            }
            None => self.index.remove(digest)?,
        }
        Ok(())
    }

    /// `/api/v1/search` and `/api/v1/plugins/{publisher}/{name}`.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/search", axum::routing::get(search))
            .route("/api/v1/plugins/{publisher}/{name}", axum::routing::get(plugin))
            .with_state(Arc::clone(self))
            .merge(super::reputation::routes(self))
            .merge(super::ui::routes(self))
            .merge(super::openapi::routes())
    }
}

/// An API error: status, code, message (`{"error": {"code", "message"}}`).
pub(super) struct ApiError(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": {"code": self.1, "message": self.2}}))).into_response()
    }
}

/// Query string of `/api/v1/search`; list filters are comma-separated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    #[serde(default)]
    pub q: String,
    pub category: Option<String>,
    pub capability: Option<String>,
    pub publisher: Option<String>,
    pub verified: Option<bool>,
    pub lifecycle: Option<String>,
    pub runner_api: Option<String>,
    /// Only versions compatible with this core version.
    pub core: Option<String>,
    /// Only the publishers this tenant sees: the first-party ones and those it opted in to.
    pub tenant: Option<String>,
    /// Every version, not only the newest of each plugin.
    #[serde(default)]
    pub all_versions: bool,
    #[serde(default)]
    pub offset: usize,
    #[serde(default)]
    pub limit: usize,
}

fn list(s: &Option<String>) -> Vec<String> {
    s.as_deref()
        .map(|s| s.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

impl SearchParams {
    pub fn to_query(&self) -> Result<SearchQuery, String> {
        if self.limit > 100 {
            return Err(format!("limit = {} must be at most 100", self.limit));
        }
        if let Some(core) = &self.core
            && semver::Version::parse(core).is_err()
        {
            return Err(format!("core = {core:?} is not a SemVer version"));
        }
        Ok(SearchQuery {
            text: self.q.clone(),
            category: list(&self.category),
            capability: list(&self.capability),
            publisher: list(&self.publisher),
            verified: self.verified,
            lifecycle: list(&self.lifecycle),
            runner_api: list(&self.runner_api),
            core_version: self.core.clone(),
            latest_only: !self.all_versions,
            offset: self.offset,
            limit: self.limit,
        })
    }
}

async fn search(
    State(c): State<Arc<Catalog>>,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let mut q = params.to_query().map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_query", e))?;
    if let Some(tenant) = &params.tenant {
        c.restrict_to_tenant(&mut q, tenant).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))?;
    }
    let index = Arc::clone(&c.index);
    let results = tokio::task::spawn_blocking(move || index.search(&q))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(json!(results)))
}

/// The install snippet for a version: the policy line approving it and the runner call.
pub fn install_snippet(v: &PluginVersion) -> String {
    format!(
        "# approve it (runner policy): approved_digests = [\"{digest}\"]\n\
         # trust the catalog root key (its publisher record names the signing keys)\n\
         berth run {reference} --policy policy.toml --root-key catalog-root.pub",
        digest = v.digest,
        reference = v.reference
    )
}

async fn plugin(
    State(c): State<Arc<Catalog>>,
    UrlPath((publisher, name)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let repository = format!("{publisher}/{name}");
    let index = Arc::clone(&c.index);
    let r = repository.clone();
    let versions = tokio::task::spawn_blocking(move || index.versions(&r))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let visible: Vec<&PluginVersion> = versions.iter().filter(|v| v.lifecycle != "removed").collect();
    let Some(latest) = visible.first() else {
        return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no plugin {repository} in the catalog")));
    };
    let rows: Vec<Value> = visible
        .iter()
        .map(|v| {
            json!({
                "version": v.version, "digest": v.digest, "reference": v.reference,
                "verification": v.verification, "lifecycle": v.lifecycle, "replacement": v.replacement,
                "runner_api": v.runner_api, "min_core": v.min_core, "min_runner": v.min_runner,
                "verified_at": v.verified_at, "created": v.created,
            })
        })
        .collect();
    Ok(Json(json!({
        "repository": repository,
        "latest": latest,
        "versions": rows,
        "install": install_snippet(latest),
    })))
}
