//! Reputation: what runners report about the plugins they run — installs and failed
//! requests — counted per plugin version in the catalog's operational SQLite file
//! (`<data_dir>/catalog.sqlite`, `DESIGN.md` § where state lives) and shown in the catalog.
//!
//! It owns the `reputation_*` tables of that file (other modules own other tables of the same
//! file and its `PRAGMA user_version`, so the tables are made with `CREATE TABLE IF NOT
//! EXISTS` and nothing here reads or sets the version) and `POST /api/v1/reports`, where a
//! runner reports `{"reference": "host/publisher/name@sha256:…", "event": "install" |
//! "failure", "runner_id": "…", "count": n}`. The runner's side is
//! [`crate::runner::report`].
//!
//! - An install counts once per (runner, image): a report carries the runner's stable random
//!   id, and a runner reporting the same install again (every start does) changes nothing.
//! - A failure report counts `count` (1..=1000, default 1) failed requests.
//! - The issue rate is failures per install (0 without installs); it can exceed 1.
//! - Reports are anonymous, like crates.io's download counts: anyone who can reach the
//!   catalog can report, so the numbers are indicative, not proof. Only versions the catalog
//!   knows (by digest, in the repository the reference names) are counted; the reference's
//!   host is not checked, since runners may reach the registry under another name or through
//!   a mirror.
//!
//! Counts live here, not in the registry, so the catalog fills them into every search
//! document it harvests ([`Reputation::fill`], on refresh and on rebuild): a rebuilt index
//! keeps them. Each version's document carries its *plugin's* totals (the sum over every
//! version of the repository), which is what ranking and plugin pages use; per-version
//! numbers are at `GET /api/v1/plugins/{publisher}/{name}/reputation`. After a report the
//! plugin's documents are refreshed at most once per [`RECOUNT_DELAY`]: a burst of reports
//! makes one refresh, and a steady stream cannot postpone it indefinitely.

use super::PluginVersion;
use super::service::Catalog;
use crate::oci::ImageReference;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a writer waits for another connection's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// After the first report for a plugin, how long until its documents are refreshed; reports
/// meanwhile join that refresh.
pub const RECOUNT_DELAY: Duration = Duration::from_secs(1);
/// The most failed requests one report may carry.
pub const MAX_COUNT: u64 = 1000;
/// The longest runner id accepted.
pub const MAX_RUNNER_ID: usize = 128;
/// Report bodies are small; anything larger is refused before parsing.
const MAX_BODY: usize = 16 * 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS reputation_installs (
    repository  TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    runner_id   TEXT    NOT NULL,
    reported_ms INTEGER NOT NULL,
    UNIQUE (repository, digest, runner_id)
);
CREATE TABLE IF NOT EXISTS reputation_counts (
    repository     TEXT    NOT NULL,
    digest         TEXT    NOT NULL,
    installs       INTEGER NOT NULL DEFAULT 0,
    failures       INTEGER NOT NULL DEFAULT 0,
    last_report_ms INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
);
";

#[derive(Debug, thiserror::Error)]
pub enum ReputationError {
    #[error("opening reputation database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("reputation database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// What a report says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The runner installed and started the image.
    Install,
    /// Requests to the image failed.
    Failure,
}

/// A checked report: the image it is about, what happened, who says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `publisher/name`.
    pub repository: String,
    /// `sha256:…`.
    pub digest: String,
    pub event: Event,
    pub runner_id: String,
    /// Failed requests (1 for an install).
    pub count: u64,
}

/// Installs and failures of one version, or of all versions of a plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub installs: u64,
    pub failures: u64,
    /// `failures / installs`, 0 without installs.
    pub issue_rate: f64,
    /// When the newest report arrived (RFC 3339), if any did.
    pub last_report_at: Option<String>,
}

impl Counts {
    fn new(installs: u64, failures: u64, last_report_ms: Option<i64>) -> Counts {
        Counts {
            installs,
            failures,
            issue_rate: issue_rate(installs, failures),
            last_report_at: last_report_ms.map(rfc3339),
        }
    }
}

/// Failures per install; 0 when nothing was installed.
pub fn issue_rate(installs: u64, failures: u64) -> f64 {
    if installs == 0 { 0.0 } else { failures as f64 / installs as f64 }
}

/// The reputation tables. `Send + Sync`; synchronous (rusqlite behind a mutex): async
/// callers use `spawn_blocking`.
pub struct Reputation {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Reputation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reputation").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Reputation {
    /// Opens (creating if needed) the database at `path` in WAL mode and makes the
    /// `reputation_*` tables if they are missing.
    pub fn open(path: &Path) -> Result<Reputation, ReputationError> {
        let open_err = |source| ReputationError::Open { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode = enable_wal(&conn).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "reputation database is not in WAL mode");
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Reputation { conn: Mutex::new(conn), path: path.to_owned() })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped any open transaction (a rollback).
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `report`. Returns whether a count changed: false for an install this runner
    /// already reported.
    pub fn record(&self, report: &Report) -> Result<bool, ReputationError> {
        self.record_at(report, now_ms())
    }

    fn record_at(&self, r: &Report, now: i64) -> Result<bool, ReputationError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (installs, failures) = match r.event {
            Event::Install => {
                let new = tx.execute(
                    "INSERT OR IGNORE INTO reputation_installs (repository, digest, runner_id, reported_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![r.repository, r.digest, r.runner_id, now],
                )?;
                (new as i64, 0)
            }
            Event::Failure => (0, i64::try_from(r.count.min(MAX_COUNT)).unwrap_or(0)),
        };
        tx.execute(
            "INSERT INTO reputation_counts (repository, digest, installs, failures, last_report_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (repository, digest) DO UPDATE SET
                 installs = installs + excluded.installs,
                 failures = failures + excluded.failures,
                 last_report_ms = MAX(last_report_ms, excluded.last_report_ms)",
            params![r.repository, r.digest, installs, failures, now],
        )?;
        tx.commit()?;
        Ok(installs + failures > 0)
    }

    /// Counts of one version.
    pub fn counts(&self, repository: &str, digest: &str) -> Result<Counts, ReputationError> {
        let row = self
            .lock()
            .query_row(
                "SELECT installs, failures, last_report_ms FROM reputation_counts WHERE repository = ?1 AND digest = ?2",
                params![repository, digest],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)),
            )
            .optional()?;
        Ok(match row {
            Some((i, f, at)) => Counts::new(unsigned(i), unsigned(f), Some(at)),
            None => Counts::default(),
        })
    }

    /// Totals over every version of one plugin (`publisher/name`).
    pub fn plugin_counts(&self, repository: &str) -> Result<Counts, ReputationError> {
        let (i, f, at) = self.lock().query_row(
            "SELECT COALESCE(SUM(installs), 0), COALESCE(SUM(failures), 0), MAX(last_report_ms)
             FROM reputation_counts WHERE repository = ?1",
            params![repository],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, Option<i64>>(2)?)),
        )?;
        Ok(Counts::new(unsigned(i), unsigned(f), at))
    }

    /// Sets `v.installs` and `v.failures` to its plugin's totals. A database error is logged
    /// and leaves both at 0: a search document is better without counts than missing.
    pub fn fill(&self, v: &mut PluginVersion) {
        match self.plugin_counts(&v.repository) {
            Ok(c) => {
                v.installs = c.installs;
                v.failures = c.failures;
            }
            Err(e) => {
                tracing::warn!(repository = %v.repository, "reputation: {e}");
                v.installs = 0;
                v.failures = 0;
            }
        }
    }
}

fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Switches the database to WAL and returns the journal mode in force. A mode change is
/// answered with "busy" at once (no busy handler) while another connection opens the same
/// fresh file, so that one statement is retried.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Parses and checks a report body; the error names the field at fault.
pub fn parse_report(body: &[u8]) -> Result<Report, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(map) = value else { return Err("the body must be a JSON object".into()) };
    if let Some(k) = map.keys().find(|k| !["reference", "event", "runner_id", "count"].contains(&k.as_str())) {
        return Err(format!("{k}: unknown field (expected reference, event, runner_id, count)"));
    }
    let text = |map: &Map<String, Value>, k: &str| -> Result<String, String> {
        match map.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{k}: must be a string")),
            None => Err(format!("{k}: missing")),
        }
    };
    let reference = text(&map, "reference")?;
    let parsed = ImageReference::parse(&reference).map_err(|e| format!("reference: {e}"))?;
    let Some(digest) = parsed.digest else {
        return Err(format!("reference: {reference:?} must be pinned by digest (host/publisher/name@sha256:…)"));
    };
    let event = match text(&map, "event")?.as_str() {
        "install" => Event::Install,
        "failure" => Event::Failure,
        other => return Err(format!("event: unknown event {other:?} (expected install or failure)")),
    };
    let runner_id = text(&map, "runner_id")?;
    if runner_id.is_empty()
        || runner_id.len() > MAX_RUNNER_ID
        || !runner_id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
    {
        return Err(format!("runner_id: must be 1 to {MAX_RUNNER_ID} characters of A-Z a-z 0-9 . _ : -"));
    }
    let count = match map.get("count") {
        None | Some(Value::Null) => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_COUNT).contains(&n) => n,
            _ => return Err(format!("count: {v} is out of range (1 to {MAX_COUNT})")),
        },
    };
    if event == Event::Install && count != 1 {
        return Err(format!("count: an install report counts one install, not {count}"));
    }
    Ok(Report { repository: parsed.repository, digest: digest.to_string(), event, runner_id, count })
}

struct ApiState {
    catalog: Arc<Catalog>,
    reputation: Arc<Reputation>,
    /// Plugins whose refresh is scheduled (see [`RECOUNT_DELAY`]).
    scheduled: Mutex<HashSet<String>>,
}

struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": {"code": self.1, "message": self.2}}))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// `POST /api/v1/reports` and `GET /api/v1/plugins/{publisher}/{name}/reputation`, when the
/// catalog has a reputation database; no routes otherwise.
pub fn routes(catalog: &Arc<Catalog>) -> Router {
    let Some(reputation) = catalog.reputation() else { return Router::new() };
    let state = Arc::new(ApiState {
        catalog: Arc::clone(catalog),
        reputation: Arc::clone(reputation),
        scheduled: Mutex::new(HashSet::new()),
    });
    Router::new()
        .route("/api/v1/reports", axum::routing::post(report))
        .route("/api/v1/plugins/{publisher}/{name}/reputation", axum::routing::get(plugin_reputation))
        .with_state(state)
}

async fn report(State(s): State<Arc<ApiState>>, body: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a report is at most {MAX_BODY} bytes"),
        ));
    }
    let r = parse_report(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_report", e))?;
    let index = Arc::clone(&s.catalog.index);
    let digest = r.digest.clone();
    let known = tokio::task::spawn_blocking(move || index.get(&digest)).await.map_err(internal)?.map_err(internal)?;
    if known.is_none_or(|v| v.repository != r.repository) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{}@{} is not a plugin version in this catalog", r.repository, r.digest),
        ));
    }
    let reputation = Arc::clone(&s.reputation);
    let repository = r.repository.clone();
    let changed =
        tokio::task::spawn_blocking(move || reputation.record(&r)).await.map_err(internal)?.map_err(internal)?;
    if changed {
        schedule(&s, repository);
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true}))))
}

/// Refreshes every version of `repository` once [`RECOUNT_DELAY`] has passed, unless that
/// is already scheduled.
fn schedule(s: &Arc<ApiState>, repository: String) {
    if !s.scheduled.lock().unwrap_or_else(PoisonError::into_inner).insert(repository.clone()) {
        return;
    }
    let s = Arc::clone(s);
    tokio::spawn(async move {
        tokio::time::sleep(RECOUNT_DELAY).await;
        // Reports from here on schedule the next refresh.
        s.scheduled.lock().unwrap_or_else(PoisonError::into_inner).remove(&repository);
        let index = Arc::clone(&s.catalog.index);
        let r = repository.clone();
        match tokio::task::spawn_blocking(move || index.versions(&r)).await {
            Ok(Ok(versions)) => {
                for v in versions {
                    s.catalog.touch(&repository, &v.digest);
                }
            }
            Ok(Err(e)) => tracing::warn!(%repository, "reputation: {e}"),
            Err(e) => tracing::warn!(%repository, "reputation: {e}"),
        }
    });
}

async fn plugin_reputation(
    State(s): State<Arc<ApiState>>,
    UrlPath((publisher, name)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let repository = format!("{publisher}/{name}");
    let (index, reputation, r) = (Arc::clone(&s.catalog.index), Arc::clone(&s.reputation), repository.clone());
    let answer = tokio::task::spawn_blocking(move || -> Result<Option<Value>, String> {
        let versions = index.versions(&r).map_err(|e| e.to_string())?;
        if versions.is_empty() {
            return Ok(None);
        }
        let mut rows = Vec::with_capacity(versions.len());
        for v in &versions {
            let c = reputation.counts(&r, &v.digest).map_err(|e| e.to_string())?;
            rows.push(json!({"version": v.version, "digest": v.digest, "installs": c.installs,
                             "failures": c.failures, "issue_rate": c.issue_rate,
                             "last_report_at": c.last_report_at}));
        }
        let total = reputation.plugin_counts(&r).map_err(|e| e.to_string())?;
        Ok(Some(json!({"repository": r, "installs": total.installs, "failures": total.failures,
                       "issue_rate": total.issue_rate, "last_report_at": total.last_report_at,
                       "versions": rows})))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    answer
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no plugin {repository} in the catalog")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn db() -> (tempfile::TempDir, Reputation) {
        let dir = tempfile::tempdir().unwrap();
        let r = Reputation::open(&dir.path().join("catalog.sqlite")).unwrap();
        (dir, r)
    }

    fn report(digest: &str, event: Event, runner: &str, count: u64) -> Report {
        Report {
            repository: "acme/json-transform".into(),
            digest: digest.into(),
            event,
            runner_id: runner.into(),
            count,
        }
    }

    #[test]
    fn an_install_counts_once_per_runner_and_image() {
        let (_d, r) = db();
        assert!(r.record(&report(D1, Event::Install, "runner-a", 1)).unwrap());
        assert!(!r.record(&report(D1, Event::Install, "runner-a", 1)).unwrap(), "the same install again");
        assert!(r.record(&report(D1, Event::Install, "runner-b", 1)).unwrap());
        assert!(r.record(&report(D2, Event::Install, "runner-a", 1)).unwrap(), "another version");
        assert_eq!(r.counts("acme/json-transform", D1).unwrap().installs, 2);
        assert_eq!(r.counts("acme/json-transform", D2).unwrap().installs, 1);
        assert_eq!(r.counts("other/json-transform", D1).unwrap(), Counts::default());
        assert_eq!(r.plugin_counts("acme/json-transform").unwrap().installs, 3);
    }

    #[test]
    fn failures_add_up_and_give_the_issue_rate() {
        let (_d, r) = db();
        // Failures before any install: counted, but no rate without installs.
        r.record(&report(D1, Event::Failure, "runner-a", 3)).unwrap();
        let c = r.counts("acme/json-transform", D1).unwrap();
        assert_eq!((c.installs, c.failures, c.issue_rate), (0, 3, 0.0));
        assert!(c.last_report_at.is_some());
        r.record(&report(D1, Event::Install, "runner-a", 1)).unwrap();
        r.record(&report(D2, Event::Install, "runner-a", 1)).unwrap();
        r.record(&report(D2, Event::Install, "runner-b", 1)).unwrap();
        r.record(&report(D2, Event::Failure, "runner-b", 1)).unwrap();
        r.record(&report(D2, Event::Failure, "runner-b", 1)).unwrap();
        assert_eq!(r.counts("acme/json-transform", D1).unwrap().issue_rate, 3.0);
        assert_eq!(r.counts("acme/json-transform", D2).unwrap().issue_rate, 1.0);
        let total = r.plugin_counts("acme/json-transform").unwrap();
        assert_eq!((total.installs, total.failures, total.issue_rate), (3, 5, 5.0 / 3.0));
        assert_eq!(r.plugin_counts("nobody/nothing").unwrap(), Counts::default());
    }

    #[test]
    fn fill_sets_the_plugins_totals_on_a_version() {
        let (_d, r) = db();
        r.record(&report(D1, Event::Install, "runner-a", 1)).unwrap();
        r.record(&report(D2, Event::Install, "runner-b", 1)).unwrap();
        r.record(&report(D2, Event::Failure, "runner-b", 7)).unwrap();
        let mut v = PluginVersion {
            repository: "acme/json-transform".into(),
            digest: D1.into(),
            installs: 99,
            ..PluginVersion::default()
        };
        r.fill(&mut v);
        assert_eq!((v.installs, v.failures), (2, 7));
    }

    #[test]
    fn counts_survive_reopening_and_a_second_connection_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let a = Reputation::open(&path).unwrap();
        let b = Reputation::open(&path).unwrap();
        a.record(&report(D1, Event::Install, "runner-a", 1)).unwrap();
        assert!(!b.record(&report(D1, Event::Install, "runner-a", 1)).unwrap());
        drop((a, b));
        let c = Reputation::open(&path).unwrap();
        assert_eq!(c.counts("acme/json-transform", D1).unwrap().installs, 1);
        // Another module's schema version is left alone.
        let conn = Connection::open(&path).unwrap();
        assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), 0);
    }

    #[test]
    fn a_report_parses_with_its_defaults() {
        let body = json!({"reference": format!("reg.test:5000/acme/json-transform@{D1}"), "event": "failure",
                          "runner_id": "0f3a-b", "count": 5});
        let r = parse_report(body.to_string().as_bytes()).unwrap();
        assert_eq!(r, report(D1, Event::Failure, "0f3a-b", 5));
        let body = json!({"reference": format!("reg.test/acme/json-transform@{D1}"), "event": "install",
                          "runner_id": "r"});
        assert_eq!(parse_report(body.to_string().as_bytes()).unwrap().count, 1);
    }

    #[test]
    fn a_bad_report_is_refused_naming_the_field() {
        let good = json!({"reference": format!("reg.test/acme/json-transform@{D1}"), "event": "failure",
                          "runner_id": "r", "count": 2});
        let with = |k: &str, v: Value| {
            let mut b = good.clone();
            b[k] = v;
            parse_report(b.to_string().as_bytes()).unwrap_err()
        };
        let without = |k: &str| {
            let mut b = good.clone();
            b.as_object_mut().unwrap().remove(k);
            parse_report(b.to_string().as_bytes()).unwrap_err()
        };
        let cases = [
            (with("reference", json!("reg.test/acme/json-transform:0.1.0")), "reference:"),
            (with("reference", json!("acme/json-transform")), "reference:"),
            (with("reference", json!(7)), "reference:"),
            (without("reference"), "reference:"),
            (with("event", json!("download")), "event:"),
            (without("event"), "event:"),
            (with("runner_id", json!("")), "runner_id:"),
            (with("runner_id", json!("a b")), "runner_id:"),
            (with("runner_id", json!("x".repeat(MAX_RUNNER_ID + 1))), "runner_id:"),
            (with("count", json!(0)), "count:"),
            (with("count", json!(1001)), "count:"),
            (with("count", json!(-1)), "count:"),
            (with("count", json!("3")), "count:"),
            (with("extra", json!(1)), "extra:"),
            (parse_report(b"[]").unwrap_err(), "object"),
            (parse_report(b"{").unwrap_err(), "not JSON"),
        ];
        for (message, expected) in cases {
            assert!(message.contains(expected), "{message:?} should contain {expected:?}");
        }
        let mut install = good.clone();
        install["event"] = json!("install");
        assert!(parse_report(install.to_string().as_bytes()).unwrap_err().starts_with("count:"));
    }

    /// A catalog knowing `acme/json-transform` at [`D1`], with a reputation database.
    fn catalog(dir: &Path) -> Arc<Catalog> {
        let index = super::super::index::CatalogIndex::in_memory().unwrap();
        index
            .upsert(&PluginVersion {
                repository: "acme/json-transform".into(),
                publisher: "acme".into(),
                name: "json-transform".into(),
                version: "1.0.0".into(),
                digest: D1.into(),
                ..PluginVersion::default()
            })
            .unwrap();
        index.commit().unwrap();
        let c = Catalog::new(index, Default::default(), "127.0.0.1:9".into(), Default::default());
        c.set_reputation(Arc::new(Reputation::open(&dir.join("catalog.sqlite")).unwrap()));
        c
    }

    async fn call(app: &Router, method: &str, path: &str, body: Value) -> (u16, Value) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(if body.is_null() { String::new() } else { body.to_string() }))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn the_api_takes_reports_of_known_versions_and_shows_their_counts() {
        let dir = tempfile::tempdir().unwrap();
        let c = catalog(dir.path());
        let app = routes(&c);
        let reference = format!("reg.test/acme/json-transform@{D1}");
        let install = json!({"reference": reference, "event": "install", "runner_id": "r1"});
        for _ in 0..2 {
            assert_eq!(call(&app, "POST", "/api/v1/reports", install.clone()).await, (202, json!({"accepted": true})));
        }
        let failure = json!({"reference": reference, "event": "failure", "runner_id": "r1", "count": 3});
        assert_eq!(call(&app, "POST", "/api/v1/reports", failure).await.0, 202);

        // Bad input names the field; unknown versions are not counted.
        let (status, body) = call(&app, "POST", "/api/v1/reports", json!({"reference": reference})).await;
        assert_eq!(status, 400);
        assert!(body["error"]["message"].as_str().unwrap().starts_with("event:"), "{body}");
        let unknown = json!({"reference": format!("reg.test/acme/json-transform@{D2}"), "event": "install",
                             "runner_id": "r1"});
        assert_eq!(call(&app, "POST", "/api/v1/reports", unknown).await.0, 404);
        let elsewhere = json!({"reference": format!("reg.test/other/json-transform@{D1}"), "event": "install",
                               "runner_id": "r1"});
        assert_eq!(call(&app, "POST", "/api/v1/reports", elsewhere).await.0, 404);

        let (status, body) = call(&app, "GET", "/api/v1/plugins/acme/json-transform/reputation", Value::Null).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["installs"].as_u64(), body["failures"].as_u64()), (Some(1), Some(3)), "{body}");
        assert_eq!(body["issue_rate"], 3.0);
        assert_eq!(body["versions"][0]["digest"], D1);
        assert_eq!(body["versions"][0]["installs"], 1);
        let (status, _) = call(&app, "GET", "/api/v1/plugins/acme/nope/reputation", Value::Null).await;
        assert_eq!(status, 404);
    }

    #[test]
    fn the_issue_rate_is_zero_without_installs() {
        assert_eq!(issue_rate(0, 10), 0.0);
        assert_eq!(issue_rate(4, 1), 0.25);
        assert_eq!(issue_rate(2, 6), 3.0);
    }
}
