//! Crash safety: SIGKILL a berth process in the middle of 50 uploads, restart it on the same
//! data directory and check that exactly the committed blobs are visible, whole, that upload
//! sessions begun before the crash are resumable or cleanly unknown, and that `berth fsck`
//! finds the store clean.

use crate::common::{self, BerthProcess, sha256};
use bytes::Bytes;
use futures_util::stream;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

const REPO: &str = "crash/uploads";
const UPLOADS: usize = 50;
/// How many uploads must have had their 201 before the server is killed.
const COMMITTED_BEFORE_KILL: usize = 20;
const CHUNK: usize = 64 * 1024;
/// A bound on how long the test waits for the uploads to reach the kill point (not a sync
/// mechanism: it only turns a hang into a failure).
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// POST ?digest= with the whole body.
    Monolithic,
    /// POST, then PUT ?digest= with the whole body.
    PostPut,
    /// POST, several PATCHes with Content-Range, then PUT ?digest=.
    Chunked,
}

struct Job {
    i: usize,
    mode: Mode,
    /// Slow jobs stop sending their body part-way and wait for a gate that opens only after
    /// the kill: they are certainly in flight when the server dies and can never commit.
    slow: bool,
    data: Bytes,
    digest: String,
}

enum Note {
    Committed(usize),
    Gated(usize),
    Failed(usize, String),
}

enum JobError {
    /// The connection failed (expected once the server is killed).
    Transport(String),
    /// The server answered something unexpected (a bug whenever it happens).
    Status(String),
}

impl From<reqwest::Error> for JobError {
    fn from(e: reqwest::Error) -> Self {
        JobError::Transport(e.to_string())
    }
}

struct Ctx {
    client: reqwest::Client,
    url: String,
    notes: mpsc::UnboundedSender<Note>,
    gate: watch::Receiver<bool>,
    /// Upload sessions: job → (absolute upload URL, bytes the server acknowledged).
    sessions: Mutex<HashMap<usize, (String, u64)>>,
}

struct Gated {
    data: Bytes,
    pos: usize,
    pause_at: usize,
    i: usize,
    notes: mpsc::UnboundedSender<Note>,
    gate: watch::Receiver<bool>,
}

impl Ctx {
    /// A body streaming `data[from..pause_at]` in chunks, then announcing `Gated` and
    /// waiting for the gate; when it opens, the body fails (the rest is never sent).
    fn gated(&self, job: &Job, from: usize, pause_at: usize) -> reqwest::Body {
        let st = Gated {
            data: job.data.clone(),
            pos: from,
            pause_at,
            i: job.i,
            notes: self.notes.clone(),
            gate: self.gate.clone(),
        };
        let s = stream::unfold(Some(st), |st| async move {
            let mut st = st?;
            if st.pos < st.pause_at {
                let end = (st.pos + CHUNK).min(st.pause_at);
                let chunk = st.data.slice(st.pos..end);
                st.pos = end;
                return Some((Ok::<Bytes, std::io::Error>(chunk), Some(st)));
            }
            let _ = st.notes.send(Note::Gated(st.i));
            let _ = st.gate.wait_for(|open| *open).await;
            Some((Err(std::io::Error::other("upload abandoned by the test")), None))
        });
        reqwest::Body::wrap_stream(s)
    }

    async fn start_session(&self, job: &Job) -> Result<String, JobError> {
        let r = self.client.post(format!("{}/v2/{REPO}/blobs/uploads/", self.url)).send().await?;
        if r.status() != 202 {
            return Err(JobError::Status(format!("job {}: POST gave {}", job.i, r.status())));
        }
        let loc =
            header(&r, "location").ok_or_else(|| JobError::Status(format!("job {}: POST without Location", job.i)))?;
        let loc = absolute(&self.url, &loc);
        self.sessions.lock().unwrap().insert(job.i, (loc.clone(), 0));
        Ok(loc)
    }

    /// PATCHes `data[start..end]` whole, with Content-Range and Content-Length.
    async fn patch(&self, job: &Job, loc: &str, start: usize, end: usize) -> Result<(), JobError> {
        let r = self
            .client
            .patch(loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{}", end - 1))
            .header("content-length", (end - start).to_string())
            .body(job.data.slice(start..end))
            .send()
            .await?;
        let range = header(&r, "range");
        if r.status() != 202 || range.as_deref() != Some(format!("0-{}", end - 1).as_str()) {
            return Err(JobError::Status(format!(
                "job {}: PATCH {start}-{} gave {} Range {range:?}",
                job.i,
                end - 1,
                r.status()
            )));
        }
        self.sessions.lock().unwrap().insert(job.i, (loc.to_string(), end as u64));
        Ok(())
    }

    async fn run(&self, job: &Job) -> Result<(), JobError> {
        let n = job.data.len();
        let whole = || reqwest::Body::from(job.data.clone());
        let r = match job.mode {
            Mode::Monolithic => {
                let body = if job.slow { self.gated(job, 0, n / 2) } else { whole() };
                self.client
                    .post(format!("{}/v2/{REPO}/blobs/uploads/?digest={}", self.url, job.digest))
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await?
            }
            Mode::PostPut => {
                let loc = self.start_session(job).await?;
                let body = if job.slow { self.gated(job, 0, n / 2) } else { whole() };
                self.client
                    .put(format!("{loc}?digest={}", job.digest))
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await?
            }
            Mode::Chunked if job.slow => {
                // Two whole chunks, then a third that streams half-way and stalls.
                let loc = self.start_session(job).await?;
                self.patch(job, &loc, 0, n / 4).await?;
                self.patch(job, &loc, n / 4, n / 2).await?;
                self.client
                    .patch(&loc)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{}-{}", n / 2, n - 1))
                    .body(self.gated(job, n / 2, 3 * n / 4))
                    .send()
                    .await?
            }
            Mode::Chunked => {
                let loc = self.start_session(job).await?;
                let pieces = 3 + job.i % 5;
                for k in 0..pieces {
                    self.patch(job, &loc, k * n / pieces, (k + 1) * n / pieces).await?;
                }
                self.client.put(format!("{loc}?digest={}", job.digest)).send().await?
            }
        };
        let got = header(&r, "docker-content-digest");
        if r.status() != 201 || got.as_deref() != Some(job.digest.as_str()) {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            return Err(JobError::Status(format!(
                "job {} ({:?}): expected 201, got {status} digest {got:?}: {body}",
                job.i, job.mode
            )));
        }
        let _ = self.notes.send(Note::Committed(job.i));
        Ok(())
    }
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") { loc.to_string() } else { format!("{base}{loc}") }
}

async fn error_code(r: reqwest::Response) -> String {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body ({status}) is not JSON ({e}): {text:?}"));
    v["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no errors[0].code in {text}")).to_string()
}

/// GETs and HEADs a blob that must be there, whole.
async fn assert_blob(c: &reqwest::Client, url: &str, job: &Job, why: &str) {
    let blob = format!("{url}/v2/{REPO}/blobs/{}", job.digest);
    let r = c.get(&blob).send().await.expect("GET blob");
    assert_eq!(r.status(), 200, "{why} blob of job {} ({:?}) must be served", job.i, job.mode);
    let body = r.bytes().await.expect("blob body");
    assert_eq!(body.len(), job.data.len(), "{why} blob of job {} has the wrong length", job.i);
    assert_eq!(sha256(&body), job.digest, "{why} blob of job {} has the wrong bytes", job.i);
    let r = c.head(&blob).send().await.expect("HEAD blob");
    assert_eq!(r.status(), 200, "HEAD of {why} blob of job {}", job.i);
    assert_eq!(header(&r, "content-length"), Some(job.data.len().to_string()), "HEAD Content-Length of job {}", job.i);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_50_uploads_leaves_only_whole_blobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let mut server = BerthProcess::spawn(&data_dir, &[]);

    let modes = [Mode::Monolithic, Mode::PostPut, Mode::Chunked];
    let jobs: Vec<Arc<Job>> = (0..UPLOADS)
        .map(|i| {
            let slow = i % 5 == 2; // 10 slow jobs, all three modes among them
            let mut len = ((64 * 1024) << (i % 8)) + i * 131; // 64 KiB … 8 MiB
            if slow {
                len = len.max(1 << 20);
            }
            let data = Bytes::from(common::bytes(7_000 + i as u64, len));
            let digest = sha256(&data);
            Arc::new(Job { i, mode: modes[i % 3], slow, data, digest })
        })
        .collect();
    let slow_count = jobs.iter().filter(|j| j.slow).count();

    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let (gate_tx, gate_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        client: common::client(),
        url: server.url.clone(),
        notes: notes_tx.clone(),
        gate: gate_rx,
        sessions: Mutex::new(HashMap::new()),
    });
    drop(notes_tx);
    let mut tasks = Vec::new();
    for job in &jobs {
        let (ctx, job) = (ctx.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            let res = ctx.run(&job).await;
            if let Err(e) = &res {
                let msg = match e {
                    JobError::Transport(m) | JobError::Status(m) => m.clone(),
                };
                let _ = ctx.notes.send(Note::Failed(job.i, msg));
            }
            res
        }));
    }

    // Wait (on the notes channel) until enough uploads committed and every slow one stalls.
    let mut committed = BTreeSet::new();
    let mut gated = BTreeSet::new();
    tokio::time::timeout(LIMIT, async {
        while committed.len() < COMMITTED_BEFORE_KILL || gated.len() < slow_count {
            match notes.recv().await.expect("notes channel open") {
                Note::Committed(i) => {
                    committed.insert(i);
                }
                Note::Gated(i) => {
                    gated.insert(i);
                }
                Note::Failed(i, msg) => panic!("upload {i} failed before the crash: {msg}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("uploads did not reach the kill point: {} committed, {} stalled", committed.len(), gated.len())
    });

    server.kill9();
    let _ = gate_tx.send(true);

    let mut status_errors = Vec::new();
    for t in tasks {
        match tokio::time::timeout(LIMIT, t).await.expect("upload task ends after the kill").expect("task") {
            Ok(()) | Err(JobError::Transport(_)) => {}
            Err(JobError::Status(m)) => status_errors.push(m),
        }
    }
    let sessions = ctx.sessions.lock().unwrap().clone();
    let ctx_url = ctx.url.clone();
    drop(ctx);
    // Every Committed note was sent before its task ended, so it is already queued.
    while let Ok(n) = notes.try_recv() {
        if let Note::Committed(i) = n {
            committed.insert(i);
        }
    }
    assert!(status_errors.is_empty(), "the server answered uploads wrongly: {status_errors:#?}");
    for j in jobs.iter().filter(|j| j.slow) {
        assert!(!committed.contains(&j.i), "slow job {} committed without its whole body", j.i);
    }

    // Restart on the same data directory.
    let mut server = BerthProcess::spawn(&data_dir, &[]);
    let url = server.url.clone();
    let c = common::client();
    let mut outcome: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &jobs {
        if committed.contains(&job.i) {
            assert_blob(&c, &url, job, "committed").await;
            *outcome.entry("committed, served").or_default() += 1;
            continue;
        }
        let r = c.get(format!("{url}/v2/{REPO}/blobs/{}", job.digest)).send().await.expect("GET blob");
        match r.status().as_u16() {
            404 => {
                assert_eq!(error_code(r).await, "BLOB_UNKNOWN", "uncommitted blob of job {}", job.i);
                *outcome.entry("uncommitted, unknown").or_default() += 1;
            }
            // A fast upload whose 201 was lost in the kill may have committed: then it must
            // be whole. A slow one never sent its whole body, so it can never be visible.
            200 if !job.slow => {
                drop(r);
                assert_blob(&c, &url, job, "in-flight (committed at the crash)").await;
                *outcome.entry("in flight, committed at the crash").or_default() += 1;
            }
            s => panic!("uncommitted blob of job {} ({:?}, slow: {}) answered {s}", job.i, job.mode, job.slow),
        }
    }

    // Sessions begun before the crash: resumable (204 + Range) or cleanly unknown (404).
    for (i, (loc, acked)) in &sessions {
        let job = &jobs[*i];
        if committed.contains(i) {
            continue;
        }
        // The restarted server listens on another port: keep the path, change the base.
        let path = loc.strip_prefix(ctx_url.as_str()).unwrap_or_else(|| panic!("{loc} is not under {ctx_url}"));
        let loc = format!("{url}{path}");
        let r = c.get(&loc).send().await.expect("GET upload status");
        match r.status().as_u16() {
            204 => {
                let range = header(&r, "range").unwrap_or_else(|| panic!("204 for job {i} without Range"));
                let end: u64 = range
                    .strip_prefix("0-")
                    .and_then(|e| e.parse().ok())
                    .unwrap_or_else(|| panic!("job {i}: bad Range {range:?}"));
                let offset = (if end == 0 { 0 } else { end + 1 }) as usize;
                assert!(offset as u64 >= *acked, "job {i}: server lost acknowledged bytes ({offset} < {acked})");
                assert!(offset <= job.data.len(), "job {i}: offset {offset} beyond the blob ({})", job.data.len());
                let loc = header(&r, "location").map(|l| absolute(&url, &l)).unwrap_or_else(|| loc.clone());
                let n = job.data.len();
                let mut loc = loc;
                if offset < n {
                    let r = c
                        .patch(&loc)
                        .header("content-type", "application/octet-stream")
                        .header("content-range", format!("{offset}-{}", n - 1))
                        .header("content-length", (n - offset).to_string())
                        .body(job.data.slice(offset..))
                        .send()
                        .await
                        .expect("resume PATCH");
                    let status = r.status();
                    let range = header(&r, "range");
                    let next = header(&r, "location").map(|l| absolute(&url, &l));
                    assert_eq!(status, 202, "job {i}: resuming at {offset}: {}", r.text().await.unwrap_or_default());
                    assert_eq!(range, Some(format!("0-{}", n - 1)), "job {i}: Range after resuming");
                    loc = next.unwrap_or(loc);
                }
                let r = c.put(format!("{loc}?digest={}", job.digest)).send().await.expect("resume PUT");
                let status = r.status();
                assert_eq!(
                    status,
                    201,
                    "job {i}: completing the resumed upload: {}",
                    r.text().await.unwrap_or_default()
                );
                assert_blob(&c, &url, job, "resumed").await;
                *outcome.entry("session resumed after restart").or_default() += 1;
            }
            404 => {
                assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN", "job {i}: upload status");
                *outcome.entry("session unknown after restart").or_default() += 1;
            }
            s => panic!(
                "job {i} ({:?}): upload status after restart answered {s}: {}",
                job.mode,
                r.text().await.unwrap_or_default()
            ),
        }
    }
    eprintln!("crash outcome: {outcome:?}");

    server.kill9();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("fsck")
        .arg("--data-dir")
        .arg(&data_dir)
        .env("BERTH_LOG", "warn")
        .output()
        .await
        .expect("run berth fsck");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "berth fsck failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("clean"), "berth fsck did not report clean:\n{stdout}\n{stderr}");
}

/// The state a SIGKILL leaves when it lands inside `commit_upload` after the data file was
/// renamed into the blob pool (and linked) but before the session directory was removed:
/// `uploads/<id>/repo` without `uploads/<id>/data`. Reproduced by hand, deterministically, to
/// pin down the window the timing-based test above hits only sometimes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cut_short_inside_its_commit_is_unknown_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let data = common::bytes(99, 300_000);
    let digest = sha256(&data);
    let c = common::client();

    let mut server = BerthProcess::spawn(&data_dir, &[]);
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/", server.url)).send().await.expect("POST");
    assert_eq!(r.status(), 202);
    let path = header(&r, "location").expect("Location");
    let r = c
        .patch(format!("{}{path}", server.url))
        .header("content-range", format!("0-{}", data.len() - 1))
        .header("content-length", data.len().to_string())
        .body(data.clone())
        .send()
        .await
        .expect("PATCH");
    assert_eq!(r.status(), 202);
    server.kill9();

    // What commit_upload does before forget_upload: rename the data into place, link it.
    let id = path.rsplit('/').next().expect("upload id");
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let blob = data_dir.join("blobs/sha256").join(&hex[..2]).join(hex);
    std::fs::create_dir_all(blob.parent().expect("parent")).expect("mkdir");
    std::fs::rename(data_dir.join("uploads").join(id).join("data"), &blob).expect("rename into the pool");
    let link = data_dir.join("repositories").join(REPO).join("_layers/sha256").join(hex);
    std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    std::fs::write(&link, b"").expect("link");

    let mut server = BerthProcess::spawn(&data_dir, &[]);
    let r = c.get(format!("{}/v2/{REPO}/blobs/{digest}", server.url)).send().await.expect("GET blob");
    assert_eq!(r.status(), 200, "the committed blob is served");
    assert_eq!(sha256(&r.bytes().await.expect("body")), digest);
    let r = c.get(format!("{}{path}", server.url)).send().await.expect("GET upload status");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, 404, "status of a session whose commit completed but was not cleaned up: {text}");
    assert!(text.contains("BLOB_UPLOAD_UNKNOWN"), "{text}");
    server.kill9();
}
