//! The catalog inside `berth serve`: the index kept current from registry events, rebuilt
//! from the registry when it is new or its schema changed, and the JSON API over it
//! (`/api/v1/search`, `/api/v1/plugins/{publisher}/{name}`).
//!
//! Every push of a referrer (plugin manifest, SBOM, signature, verification report, lifecycle
//! status) re-reads the image it refers to once the image has been quiet for a moment; a
//! deleted image leaves the index. The index is derived data: `berth index rebuild` (or a
//! schema change) walks the registry and writes it anew.

use super::PluginVersion;
use super::harvest::{HarvestSettings, Source, harvest, walk};
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
) -> Result<Arc<Catalog>, CatalogError> {
    let _ = registry;
    let c = &config.catalog;
    let dir = c.index_dir.clone().unwrap_or_else(|| config.server.data_dir.join("index"));
    let index = CatalogIndex::open(&dir)?;
    let mut publishers = Vec::new();
    for (name, paths) in &config.verification.publishers {
        publishers.extend(keys(&format!("verification.publishers.{name}"), paths)?);
    }
    let mut verifiers = keys("catalog.verifier_keys", &c.verifier_keys)?;
    verifiers.extend(verifier);
    let trust =
        crate::runner::resolve::Trust { publishers, roots: keys("catalog.root_keys", &c.root_keys)?, verifiers };
    // Install snippets name the registry as its users reach it.
    let public =
        config.server.public_url.as_deref().and_then(|u| u.split_once("://")).map(|(_, h)| h.trim_end_matches('/'));
    let registry_host = public.map(str::to_string).unwrap_or_else(|| local.to_string());
    let settings = HarvestSettings { trust, first_party: c.first_party.clone(), registry: registry_host };
    Ok(Catalog::new(index, settings, local.to_string(), RemoteOptions::default()))
}

/// The catalog service: the index and how to refresh it.
pub struct Catalog {
    pub index: Arc<CatalogIndex>,
    settings: HarvestSettings,
    /// `host:port` of this server, as the catalog reads it.
    host: String,
    remote: RemoteOptions,
    /// Images named by events, waiting for a quiet moment: (repository, digest).
    pending: Quiet<(String, String)>,
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
            settings,
            host,
            remote,
            pending: Quiet::new(Duration::from_millis(300)),
        })
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
        self.index.clear()?;
        let index = Arc::clone(&self.index);
        let mut failed: Option<super::index::IndexError> = None;
        let mut each = |v: PluginVersion| {
            if failed.is_none()
                && let Err(e) = index.upsert(&v)
            {
                failed = Some(e);
            }
        };
        let report = walk(source, &self.settings, progress, &mut each).await?;
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

    async fn on_event(&self, e: &Event) {
        let repository = e.target.repository.clone();
        match e.action.as_str() {
            "delete" if self.index.remove(&e.target.digest).and_then(|_| self.index.commit()).is_err() => {
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

    /// Re-reads one image and updates its document (or drops it when it is no plugin).
    pub async fn refresh(&self, repository: &str, digest: &str) -> Result<(), CatalogError> {
        let Some(repo) = self.repo(repository) else { return Ok(()) };
        let Ok(image) = repo.resolve(digest).await else {
            self.index.remove(digest)?;
            return Ok(());
        };
        match harvest(&repo, repository, &image, &self.settings).await? {
            Some(v) => self.index.upsert(&v)?,
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
    }
}

struct ApiError(StatusCode, &'static str, String);

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
    let q = params.to_query().map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_query", e))?;
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
        "# approve it (runner policy): approved_digests = [\"{digest}\"]\nberth run {reference} --policy policy.toml --key publisher.pub",
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
