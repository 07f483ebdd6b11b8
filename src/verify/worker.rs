//! Verification inside `berth serve`: what triggers a run, the loop that takes jobs from the
//! persistent [`Queue`], and the HTTP API (`/api/v1/verifications/…`).
//!
//! Triggers:
//! - registry events: a plugin manifest artifact, an SBOM or a cosign signature attached to
//!   an image (or a signature attached to its plugin manifest artifact) queues the image,
//!   once the subject has been quiet for `settle` (a publish attaches several referrers in a
//!   row). The verifier's own reports and lifecycle statements do not trigger anything;
//! - `POST /api/v1/verifications/{digest}` (an operator's re-run; `berth verify --rerun`);
//! - `POST /api/v1/verifications/{digest}/review` (a manual approve or reject, recorded and
//!   re-run);
//! - a changed vulnerability database (`berth vulndb import`): every digest verified before
//!   is queued again.
//!
//! The worker talks to the registry over HTTP like any client (on the server's own loopback
//! address), runs [`pipeline::verify`], signs the report and attaches it. A job that was
//! running when the server died is re-queued at start-up and completes once: completion is
//! recorded against the claim's lease token.

use super::checks::{ConformanceSettings, Review, ReviewDecision, Settings, VerdictRule};
use super::pipeline;
use super::queue::{Claim, Job, Queue};
use super::vulndb::VulnDb;
use crate::config::Config;
use crate::content::remote::{self, Credentials, RemoteOptions};
use crate::content::{TagResolver, fetch_all};
use crate::oci::ImageReference;
use crate::plugin::documents::Severity;
use crate::plugin::{PLUGIN_MANIFEST_MEDIA_TYPE, STATUS_PREDICATE_TYPE, VERIFICATION_PREDICATE_TYPE};
use crate::registry::Registry;
use crate::registry::auth::{Action, Resource};
use crate::registry::events::{Event, Quiet};
use crate::sign::{self, KeyPair, PublicKey};
use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The referrer types whose arrival (re)queues their subject.
const CYCLONEDX: &str = "application/vnd.cyclonedx+json";

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// `message` names the key file.
    #[error("verification.key_file: {message}")]
    Key { path: String, message: String },
    #[error("verification.publishers.{publisher}: {path}: {message}")]
    PublisherKey { publisher: String, path: String, message: String },
    #[error("verification queue: {0}")]
    Queue(#[from] super::queue::QueueError),
    #[error("vulnerability database: {0}")]
    VulnDb(#[from] super::vulndb::VulnDbError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A manual review as stored beside the queue (`reviews/<hex>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReview {
    /// `approve` or `reject`.
    pub decision: String,
    pub by: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// The running verification service.
pub struct Verification {
    pub queue: Arc<Queue>,
    settings: Arc<Settings>,
    /// Catalog root keys: a publisher record they signed adds its keys to `publisher_keys`.
    roots: std::sync::OnceLock<Vec<PublicKey>>,
    vulndb: Option<Arc<VulnDb>>,
    key: Arc<KeyPair>,
    registry: Arc<Registry>,
    /// `host:port` of this server, as the worker reaches it.
    host: String,
    reviews: PathBuf,
    concurrency: usize,
    vulndb_poll: Duration,
    wake: Notify,
    /// Plugin images named by events, waiting for `settle` of quiet: (repository, image digest).
    pending: Quiet<(String, String)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io { path: path.display().to_string(), source }
}

/// Reads the verifier key, creating one (cosign's encrypted format, mode 0600, and the
/// public half beside it as `.pub`) on first start. The password comes from
/// `BERTH_VERIFIER_PASSWORD` (empty when unset).
pub fn verifier_key(path: &Path) -> Result<KeyPair, WorkerError> {
    let password = std::env::var("BERTH_VERIFIER_PASSWORD").unwrap_or_default();
    sign::load_or_create_key(path, password.as_bytes())
        .map_err(|message| WorkerError::Key { path: path.display().to_string(), message })
}

impl Verification {
    /// Opens the queue, the vulnerability database and the verifier key per `config`, for
    /// the registry serving on `local` (what the worker dials).
    pub fn open(config: &Config, registry: Arc<Registry>, local: SocketAddr) -> Result<Arc<Verification>, WorkerError> {
        let v = &config.verification;
        let data = &config.server.data_dir;
        let key = verifier_key(&v.key_file.clone().unwrap_or_else(|| data.join("verifier.key")))?;
        let queue = Queue::open(&v.queue.clone().unwrap_or_else(|| data.join("verify-queue.sqlite")))?;
        // A single server owns its queue: whatever was running when it stopped runs again.
        let recovered = queue.recover(true)?;
        if recovered > 0 {
            tracing::info!(recovered, "verification: re-queued jobs interrupted by the last shutdown");
        }
        let vulndb_path = v.vulndb.clone().unwrap_or_else(|| data.join("vulndb.sqlite"));
        let vulndb = Some(Arc::new(VulnDb::open(&vulndb_path)?));
        let mut publisher_keys: BTreeMap<String, Vec<PublicKey>> = BTreeMap::new();
        for (publisher, paths) in &v.publishers {
            for p in paths {
                let bad = |message: String| WorkerError::PublisherKey {
                    publisher: publisher.clone(),
                    path: p.display().to_string(),
                    message,
                };
                let pem = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
                publisher_keys
                    .entry(publisher.clone())
                    .or_default()
                    .push(sign::load_public_key(&pem).map_err(|e| bad(e.to_string()))?);
            }
        }
        // The worker reaches this registry over HTTP: as the configured account, else as
        // berth's internal account.
        let mut remote = RemoteOptions {
            credentials: Some(registry.internal.clone()),
            basic_first: true,
            ..RemoteOptions::default()
        };
        if let Some(user) = &v.registry_username {
            remote.credentials = Some(Credentials {
                username: user.clone(),
                password: std::env::var("BERTH_VERIFIER_REGISTRY_PASSWORD").unwrap_or_default(),
            });
        }
        let mut verdict = VerdictRule::default();
        if let Some(required) = &v.required_checks {
            verdict.required = required.clone();
        }
        verdict.fail_at = v.fail_at;
        let settings = Settings {
            verifier_id: v.verifier_id.clone(),
            publisher_keys,
            conformance: v.conformance.then(|| ConformanceSettings {
                data_dir: data.join("verifier-runner"),
                runtime: v.runtime.clone(),
                start_timeout: Duration::from_millis(v.start_timeout_ms),
            }),
            verdict,
            remote,
            ..Settings::default()
        };
        let reviews = data.join("reviews");
        std::fs::create_dir_all(&reviews).map_err(io(&reviews))?;
        Ok(Arc::new(Verification {
            queue: Arc::new(queue),
            settings: Arc::new(settings),
            roots: std::sync::OnceLock::new(),
            vulndb,
            key: Arc::new(key),
            registry,
            host: local.to_string(),
            reviews,
            concurrency: v.concurrency.max(1),
            vulndb_poll: Duration::from_secs(v.vulndb_poll_seconds.max(1)),
            wake: Notify::new(),
            pending: Quiet::new(Duration::from_millis(v.settle_ms)),
        }))
    }

    /// Starts the event listener, the job loop and the database watcher.
    pub fn spawn(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let events = self.registry.events.subscribe();
        vec![
            tokio::spawn(Arc::clone(self).listen(events)),
            tokio::spawn(Arc::clone(self).settle_loop()),
            tokio::spawn(Arc::clone(self).job_loop()),
            tokio::spawn(Arc::clone(self).watch_vulndb()),
        ]
    }

    /// The verifier's public key (what report readers trust).
    pub fn public_key(&self) -> PublicKey {
        self.key.public_key().clone()
    }

    /// Queues a run for `digest` (coalesced with one already queued) and wakes the loop.
    pub fn enqueue(&self, digest: &str, reference: &str, reason: &str) -> Result<Job, WorkerError> {
        let job = self.queue.enqueue(digest, reference, reason)?;
        self.wake.notify_one();
        Ok(job)
    }

    async fn listen(self: Arc<Self>, mut events: tokio::sync::broadcast::Receiver<Event>) {
        loop {
            match events.recv().await {
                Ok(e) => self.on_event(&e).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "verification: missed registry events")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn on_event(&self, e: &Event) {
        if e.action != "push" {
            return;
        }
        if let Some(publisher) = crate::catalog::records::publisher_of(&e.target.repository) {
            // A publisher record changed (approval, key rotation): its plugins' signatures
            // verify differently now.
            if e.target.tag.as_deref() == Some(crate::catalog::records::CURRENT) {
                // A scan of the store's files: off the event task.
                let (store, publisher) = (Arc::clone(&self.registry.store), publisher.to_string());
                let images = tokio::task::spawn_blocking(move || {
                    crate::catalog::harvest::embedded_plugin_images(&store, &format!("{publisher}/"))
                });
                for (repository, image) in images.await.unwrap_or_default() {
                    self.pending.touch((repository, image));
                }
            }
            return;
        }
        let (Some(subject), Some(kind)) = (&e.target.subject, &e.target.artifact_type) else { return };
        let relevant = match kind.as_str() {
            PLUGIN_MANIFEST_MEDIA_TYPE | CYCLONEDX => true,
            sign::BUNDLE_MEDIA_TYPE => {
                // Our own reports (and lifecycle statements) must not queue another run.
                !matches!(
                    self.predicate_of(&e.target.repository, &e.target.digest).await.as_deref(),
                    Some(VERIFICATION_PREDICATE_TYPE | STATUS_PREDICATE_TYPE)
                )
            }
            _ => false,
        };
        if !relevant {
            return;
        }
        // Keyed by the image, so every referrer of one publish extends the same quiet period.
        let Some(image) = self.plugin_image(&e.target.repository, subject).await else { return };
        self.pending.touch((e.target.repository.clone(), image));
    }

    fn repo(&self, repository: &str) -> Option<remote::RemoteRepository> {
        let r = ImageReference::parse(&format!("{}/{repository}", self.host)).ok()?;
        remote::open(&r, self.settings.remote.clone()).ok()
    }

    /// The `dev.sigstore.bundle.predicateType` annotation of referrer manifest `digest`.
    async fn predicate_of(&self, repository: &str, digest: &str) -> Option<String> {
        let repo = self.repo(repository)?;
        let d = repo.resolve(digest).await.ok()?;
        let m: Value = serde_json::from_slice(&fetch_all(&repo, &d).await.ok()?).ok()?;
        m.pointer(&format!("/annotations/{}", sign::ANNOTATION_PREDICATE_TYPE.replace('/', "~1")))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// The plugin image a referrer subject stands for: the subject itself when a plugin
    /// manifest artifact refers to it, or the subject's own subject when it is that artifact.
    async fn plugin_image(&self, repository: &str, digest: &str) -> Option<String> {
        let repo = self.repo(repository)?;
        let d = repo.resolve(digest).await.ok()?;
        let m: Value = serde_json::from_slice(&fetch_all(&repo, &d).await.ok()?).ok()?;
        if m["artifactType"] == PLUGIN_MANIFEST_MEDIA_TYPE {
            return m.pointer("/subject/digest").and_then(Value::as_str).map(str::to_string);
        }
        let parsed = digest.parse().ok()?;
        let referrers =
            crate::content::remote::RemoteRepository::referrers(&repo, &parsed, Some(PLUGIN_MANIFEST_MEDIA_TYPE))
                .await
                .ok()?;
        (!referrers.is_empty()).then(|| digest.to_string())
    }

    /// Queues subjects that have been quiet for `settle`.
    async fn settle_loop(self: Arc<Self>) {
        loop {
            for (repository, image) in self.pending.ready().await {
                let reference = format!("{}/{repository}@{image}", self.host);
                if let Err(e) = self.enqueue(&image, &reference, "event") {
                    tracing::error!("verification: queueing {reference}: {e}");
                }
            }
        }
    }

    async fn job_loop(self: Arc<Self>) {
        loop {
            match self.queue.claim(self.concurrency) {
                Ok(Some(claim)) => {
                    let me = Arc::clone(&self);
                    tokio::spawn(async move { me.run(claim).await });
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!("verification queue: {e}"),
            }
            // Woken by an enqueue or a finished job; otherwise look again for backoffs ending.
            let _ = tokio::time::timeout(Duration::from_millis(500), self.wake.notified()).await;
        }
    }

    fn review_path(&self, digest: &str) -> PathBuf {
        self.reviews.join(format!("{}.json", digest.replace(':', "-")))
    }

    fn review(&self, digest: &str) -> Option<Review> {
        let text = std::fs::read(self.review_path(digest)).ok()?;
        let r: StoredReview = serde_json::from_slice(&text).ok()?;
        Some(Review {
            decision: if r.decision == "approve" { ReviewDecision::Approve } else { ReviewDecision::Reject },
            by: r.by,
            note: r.note,
        })
    }

    /// Trusts the publisher records (`berth/publishers/<name>`) that one of `roots` signed:
    /// their active keys count as registered for their publisher (once; later calls are ignored).
    pub fn trust_publisher_records(&self, roots: Vec<PublicKey>) {
        let _ = self.roots.set(roots);
    }

    /// The settings for verifying an image of `repository`: the configured keys plus those of
    /// its publisher's record, read from the registry now (a rotation counts at once).
    async fn settings_for(&self, repository: &str) -> Arc<Settings> {
        let Some(roots) = self.roots.get().filter(|r| !r.is_empty()) else { return Arc::clone(&self.settings) };
        let publisher = repository.split('/').next().unwrap_or_default();
        let record_repo = crate::catalog::records::repository(publisher);
        let Ok(target) = self.registry.store.repository(&record_repo) else { return Arc::clone(&self.settings) };
        match crate::catalog::records::read(&target, publisher, roots).await {
            Ok(Some(record)) => {
                let mut s = Settings::clone(&self.settings);
                s.publisher_keys
                    .entry(publisher.to_string())
                    .or_default()
                    .extend(crate::catalog::records::active_keys(&record));
                Arc::new(s)
            }
            Ok(None) => Arc::clone(&self.settings),
            Err(e) => {
                tracing::warn!(%publisher, "verification: {e}");
                Arc::clone(&self.settings)
            }
        }
    }

    /// Runs one claimed job: verify, sign, attach, record.
    async fn run(self: Arc<Self>, claim: Claim) {
        let heartbeat = {
            let queue = Arc::clone(&self.queue);
            let claim = claim.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    if let Err(e) = queue.heartbeat(&claim) {
                        tracing::warn!("verification heartbeat: {e}");
                    }
                }
            })
        };
        let job = &claim.job;
        let started = Instant::now();
        let review = self.review(&job.digest);
        let vulns = self.vulndb.as_deref().map(|v| v as &dyn super::VulnSource);
        // The job names this server by the address it had when queued; it may have another now.
        let reference = format!("{}/{}@{}", self.host, repository_of(&job.reference), job.digest);
        let settings = self.settings_for(&repository_of(&job.reference)).await;
        let outcome = async {
            let report =
                pipeline::verify(&reference, &settings, vulns, review.as_ref()).await.map_err(|e| e.to_string())?;
            let referrer = pipeline::sign_and_attach(&reference, &report, &self.key, &self.settings.remote)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((report, referrer))
        }
        .await;
        heartbeat.abort();
        let recorded = match outcome {
            Ok((report, referrer)) => {
                let checks: Vec<Value> =
                    report.checks.iter().map(|c| json!({"name": c.name, "status": c.status})).collect();
                let result = json!({
                    "state": report.state,
                    "report": referrer.digest().to_string(),
                    "time": report.time,
                    "seconds": started.elapsed().as_secs_f64(),
                    "checks": checks,
                    "vulnerabilities": report.vulnerabilities,
                    "compatibility": report.compatibility,
                });
                tracing::info!(%reference, state = ?report.state, "verification done");
                self.queue.complete(&claim, result)
            }
            Err(e) => {
                tracing::warn!(%reference, "verification failed: {e}");
                self.queue.fail(&claim, &e)
            }
        };
        if let Err(e) = recorded {
            tracing::error!("verification queue: {e}");
        }
        self.wake.notify_one();
    }

    /// Re-queues every digest verified before whenever the database's revision changes.
    async fn watch_vulndb(self: Arc<Self>) {
        let Some(db) = self.vulndb.clone() else { return };
        let mut seen = db.revision().ok();
        loop {
            tokio::time::sleep(self.vulndb_poll).await;
            let now = db.revision().ok();
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            match self.queue.verified_digests() {
                Ok(all) => {
                    tracing::info!(plugins = all.len(), "vulnerability database changed: rescanning");
                    for (digest, reference) in all {
                        if let Err(e) = self.enqueue(&digest, &reference, "rescan") {
                            tracing::error!("verification: queueing a rescan of {reference}: {e}");
                        }
                    }
                }
                Err(e) => tracing::error!("verification queue: {e}"),
            }
        }
    }

    /// The routes of the verification API, to merge into the registry's router.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/verifications/{digest}", axum::routing::get(status).post(rerun))
            .route("/api/v1/verifications/{digest}/review", axum::routing::post(review))
            .with_state(Arc::clone(self))
    }
}

struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": {"code": self.1, "message": self.2}}))).into_response()
    }
}

fn check_digest(digest: &str) -> Result<(), ApiError> {
    digest
        .parse::<crate::oci::Digest>()
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_digest", format!("{digest}: {e}")))
}

async fn status(State(v): State<Arc<Verification>>, UrlPath(digest): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    check_digest(&digest)?;
    let internal = |e: super::queue::QueueError| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    let history = v.queue.history(&digest, 20).map_err(internal)?;
    let Some(latest) = history.first().cloned() else {
        return Err(ApiError(StatusCode::NOT_FOUND, "not_found", format!("no verification of {digest}")));
    };
    let verified = history.iter().find(|j| j.result.is_some()).and_then(|j| j.result.clone());
    Ok(Json(json!({"digest": digest, "latest": latest, "last_result": verified, "history": history})))
}

/// Push rights on the repository are needed to queue runs or record reviews.
fn authorize(v: &Verification, headers: &HeaderMap, peer: SocketAddr, repository: &str) -> Result<(), ApiError> {
    let authorization = headers.get("authorization").and_then(|h| h.to_str().ok());
    let host = headers.get("host").and_then(|h| h.to_str().ok());
    v.registry
        .auth
        .authorize(authorization, Some(peer.ip()), host, &Resource::Repository(repository.to_string()), Action::Push)
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RerunBody {
    /// `repository` (or `host/repository`) holding the digest; defaults to the last job's.
    #[serde(default)]
    repository: Option<String>,
}

fn repository_of(reference: &str) -> String {
    let name = reference.split_once('@').map(|(n, _)| n).unwrap_or(reference);
    name.split_once('/').map(|(_, r)| r.to_string()).unwrap_or_default()
}

fn target_reference(v: &Verification, digest: &str, repository: Option<String>) -> Result<String, ApiError> {
    let repository = match repository {
        Some(r) => r.rsplit_once(&format!("{}/", v.host)).map(|(_, r)| r.to_string()).unwrap_or(r),
        None => match v.queue.latest(digest) {
            Ok(Some(j)) => repository_of(&j.reference),
            _ => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "repository_required",
                    format!("{digest} was never verified here; name its repository"),
                ));
            }
        },
    };
    crate::oci::validate_repository(&repository)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_repository", e.to_string()))?;
    Ok(format!("{}/{repository}@{digest}", v.host))
}

async fn rerun(
    State(v): State<Arc<Verification>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(digest): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_digest(&digest)?;
    let b: RerunBody = if body.is_empty() {
        RerunBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_request", format!("request body: {e}")))?
    };
    let reference = target_reference(&v, &digest, b.repository)?;
    authorize(&v, &headers, peer, &repository_of(&reference))?;
    let job = v
        .enqueue(&digest, &reference, "rerun")
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(json!(job))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    decision: String,
    by: String,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    repository: Option<String>,
}

async fn review(
    State(v): State<Arc<Verification>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(digest): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_digest(&digest)?;
    let b: ReviewBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_request", format!("request body: {e}")))?;
    if b.decision != "approve" && b.decision != "reject" {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("decision = {:?} must be \"approve\" or \"reject\"", b.decision),
        ));
    }
    if b.by.trim().is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "invalid_request", "by: name the reviewer".into()));
    }
    let reference = target_reference(&v, &digest, b.repository.clone())?;
    authorize(&v, &headers, peer, &repository_of(&reference))?;
    let stored = StoredReview { decision: b.decision, by: b.by, note: b.note };
    let path = v.review_path(&digest);
    let bytes = serde_json::to_vec(&stored).unwrap_or_default();
    crate::content::fs::write_atomic(&path, &bytes, 0o644)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{}: {e}", path.display())))?;
    let job = v
        .enqueue(&digest, &reference, "review")
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(json!({"review": stored, "job": job}))))
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verification").field("host", &self.host).finish()
    }
}

/// Severity names as the configuration writes them.
pub fn parse_severity(s: &str) -> Option<Severity> {
    serde_json::from_value(Value::String(s.to_string())).ok()
}
