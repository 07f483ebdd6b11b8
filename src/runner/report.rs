//! Reporting to the catalog (`berth run --catalog URL`, `berth runner --catalog URL`): a
//! runner tells the catalog it installed a plugin and that requests to it failed, so the
//! catalog can show install counts and issue rates ([`crate::catalog::reputation`], whose
//! `POST /api/v1/reports` this speaks).
//!
//! Reporting never gets in the way of running plugins: [`Reporter::installed`] and
//! [`Reporter::failed`] only put a report on a bounded queue (dropping it when the queue is
//! full) and return at once; one background task sends them, gathering the failures queued
//! meanwhile into one report per image. Delivery is best effort: a catalog that is down, slow
//! or does not know the plugin (a private registry) loses the report, and the runner logs it.
//!
//! A report names the runner by a random id kept in `<data_dir>/runner-id` (nothing about
//! the host), so the catalog counts one install per runner and image however often the
//! runner starts it; the runner reports an install on each first healthy start of an image
//! in a process, and the catalog keeps repeats from counting.

use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Reports waiting to be sent; more are dropped.
pub const QUEUE: usize = 256;
/// How long one report may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// The most failures one report carries (the catalog's limit).
const MAX_COUNT: u64 = 1000;
/// The file holding the runner's id, in its data directory.
pub const RUNNER_ID_FILE: &str = "runner-id";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("--catalog {url}: {message}")]
    Url { url: String, message: String },
    #[error("runner id {path}: {source}")]
    RunnerId { path: String, source: std::io::Error },
    #[error("reporting to the catalog needs a tokio runtime")]
    NoRuntime,
    #[error("reporting client: {0}")]
    Client(String),
}

enum Message {
    Report { reference: String, event: &'static str },
    Flush(oneshot::Sender<()>),
}

/// Sends reports to one catalog. Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct Reporter {
    tx: mpsc::Sender<Message>,
    runner_id: Arc<str>,
    /// Digests whose install this process already reported.
    installed: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").field("runner_id", &self.runner_id).finish_non_exhaustive()
    }
}

impl Reporter {
    /// Starts reporting to the catalog at `catalog` (`http[s]://host[:port]`, the server
    /// that serves `/api/v1/…`) as the runner whose data directory is `data_dir`. Must be
    /// called inside a tokio runtime.
    pub fn start(catalog: &str, data_dir: &Path) -> Result<Reporter, ReportError> {
        let bad = |message: String| ReportError::Url { url: catalog.to_string(), message };
        let base = reqwest::Url::parse(catalog).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(bad("write http[s]://host[:port]".into()));
        }
        let url = format!("{}/api/v1/reports", catalog.trim_end_matches('/'));
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ReportError::NoRuntime)?;
        let runner_id: Arc<str> = runner_id(data_dir)?.into();
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .map_err(|e| ReportError::Client(crate::conformance::runner::error_chain(&e)))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(deliver(rx, client, url, Arc::clone(&runner_id)));
        Ok(Reporter { tx, runner_id, installed: Arc::default() })
    }

    /// This runner's id, as reports carry it.
    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    /// Reports that `reference` (`host/publisher/name@sha256:…`) was installed and started;
    /// once per image and process.
    pub fn installed(&self, reference: &str) {
        let digest = reference.rsplit_once('@').map_or(reference, |(_, d)| d).to_string();
        if self.installed.lock().unwrap_or_else(PoisonError::into_inner).insert(digest) {
            self.send(reference, "install");
        }
    }

    /// Reports one failed request to `reference`.
    pub fn failed(&self, reference: &str) {
        self.send(reference, "failure");
    }

    fn send(&self, reference: &str, event: &'static str) {
        let message = Message::Report { reference: reference.to_string(), event };
        if let Err(e) = self.tx.try_send(message) {
            tracing::debug!(reference, event, "catalog report dropped: {e}");
        }
    }

    /// Waits (at most `timeout`) until every report queued before this call was sent or
    /// given up: a short-lived `berth run` calls it before exiting.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let _ = tokio::time::timeout(timeout, async {
            if self.tx.send(Message::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        })
        .await;
    }
}

/// The runner's id from `data_dir/runner-id`, made (random) on first use.
pub fn runner_id(data_dir: &Path) -> Result<String, ReportError> {
    let path = data_dir.join(RUNNER_ID_FILE);
    let err = |source| ReportError::RunnerId { path: path.display().to_string(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) if valid_id(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => return Err(err(std::io::Error::other("not a runner id; delete the file to make a new one"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut tmp = tempfile::NamedTempFile::new_in(data_dir).map_err(err)?;
    std::io::Write::write_all(&mut tmp, format!("{id}\n").as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // Another runner process sharing the directory may win the race: use its id.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(id),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(err)?;
            Ok(text.trim().to_string())
        }
        Err(e) => Err(err(e.error)),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

/// The background task: sends queued reports in order, failures gathered per image.
async fn deliver(mut rx: mpsc::Receiver<Message>, client: reqwest::Client, url: String, runner_id: Arc<str>) {
    let mut warned = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        // Installs in order; failures summed per image and sent after them; then flushes.
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut flushes = Vec::new();
        for m in batch {
            match m {
                Message::Report { reference, event: "failure" } => *failures.entry(reference).or_default() += 1,
                Message::Report { reference, event } => {
                    post(
                        &client,
                        &url,
                        json!({"reference": reference, "event": event, "runner_id": &*runner_id}),
                        &mut warned,
                    )
                    .await
                }
                Message::Flush(done) => flushes.push(done),
            }
        }
        for (reference, mut n) in failures {
            while n > 0 {
                let count = n.min(MAX_COUNT);
                n -= count;
                let body =
                    json!({"reference": reference, "event": "failure", "runner_id": &*runner_id, "count": count});
                post(&client, &url, body, &mut warned).await;
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, body: serde_json::Value, warned: &mut bool) {
    let problem = match client.post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => return,
        Ok(r) => {
            let status = r.status();
            format!("{status}: {}", r.text().await.unwrap_or_default())
        }
        Err(e) => crate::conformance::runner::error_chain(&e),
    };
    // Once loudly, then quietly: an unreachable catalog must not flood the runner's log.
    if *warned {
        tracing::debug!(%url, report = %body, "catalog report not taken: {problem}");
    } else {
        tracing::warn!(%url, report = %body, "catalog report not taken: {problem}");
        *warned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::extract::State;
    use serde_json::Value;

    /// A catalog stand-in recording the report bodies it is sent.
    async fn recorder() -> (String, Arc<Mutex<Vec<Value>>>) {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let app = axum::Router::new()
            .route(
                "/api/v1/reports",
                axum::routing::post(|State(seen): State<Arc<Mutex<Vec<Value>>>>, Json(v): Json<Value>| async move {
                    seen.lock().unwrap().push(v);
                    (axum::http::StatusCode::ACCEPTED, Json(json!({"accepted": true})))
                }),
            )
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    const REF: &str =
        "reg.test/acme/json-transform@sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[tokio::test]
    async fn installs_are_sent_once_and_failures_gathered() {
        let (url, seen) = recorder().await;
        let dir = tempfile::tempdir().unwrap();
        let r = Reporter::start(&url, dir.path()).unwrap();
        r.installed(REF);
        r.installed(REF);
        for _ in 0..5 {
            r.failed(REF);
        }
        r.flush(Duration::from_secs(10)).await;
        let seen = seen.lock().unwrap().clone();
        let installs: Vec<&Value> = seen.iter().filter(|v| v["event"] == "install").collect();
        assert_eq!(installs.len(), 1, "{seen:?}");
        assert_eq!(installs[0]["runner_id"], r.runner_id());
        assert_eq!(installs[0]["reference"], REF);
        let failed: u64 = seen.iter().filter(|v| v["event"] == "failure").map(|v| v["count"].as_u64().unwrap()).sum();
        assert_eq!(failed, 5, "{seen:?}");
    }

    #[tokio::test]
    async fn the_runner_id_is_stable_and_reporting_never_blocks_on_a_dead_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let id = runner_id(dir.path()).unwrap();
        assert_eq!(runner_id(dir.path()).unwrap(), id);
        assert!(valid_id(&id));
        // Nothing listens on port 9 (discard) here: reports fail, calls still return at once.
        let r = Reporter::start("http://127.0.0.1:9", dir.path()).unwrap();
        assert_eq!(r.runner_id(), id);
        let t = std::time::Instant::now();
        for _ in 0..(QUEUE * 2) {
            r.failed(REF);
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        r.flush(Duration::from_secs(10)).await;
    }

    #[test]
    fn a_bad_catalog_url_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        for url in ["catalog.example", "ftp://catalog.example", "http://"] {
            assert!(matches!(Reporter::start(url, dir.path()), Err(ReportError::Url { .. })), "{url}");
        }
    }
}
