//! `berth bench`: a load generator for any OCI Distribution registry (in the
//! spirit of zot's `zb`).
//!
//! It measures four things against `<url>/v2/<repo>/...`, using one shared
//! HTTP/1.1 connection pool:
//!
//! 1. **Blob push** throughput (MiB/s) per blob size. Random data is generated
//!    once per size (untimed). For every round the first 8 bytes are
//!    overwritten with a round counter and the sha256 digest is recomputed
//!    (untimed), so each round pushes a *new* blob. Only the standard
//!    two-step upload is timed: `POST /blobs/uploads/` (202 + `Location`)
//!    followed by a monolithic `PUT <location>?digest=...` (201).
//! 2. **Blob pull** throughput (MiB/s) per blob size: `GET /blobs/<digest>` for
//!    every blob pushed in step 1, streaming and counting the body (never
//!    buffering it) and checking its length.
//! 3. **Manifest PUT** requests/s per concurrency level: after pushing the
//!    2-byte empty config blob (`{}`), N workers sharing a counter `PUT`
//!    pre-serialized, mutually distinct OCI image manifests (empty layer list,
//!    a unique annotation) to tags `t<N>` until `--requests` are done.
//! 4. **Manifest GET** requests/s per concurrency level: N workers `GET` one
//!    manifest by tag and read the body fully.
//!
//! Each row reports request count, MiB/s (blobs only), requests/s and the
//! p50/p99 latency (nearest-rank over the sorted per-request durations). Blob
//! rows are sequential (concurrency 1) and their throughput is computed from
//! the sum of the timed request durations; manifest rows use the wall-clock
//! time of the whole concurrency level.
//!
//! Authentication: optional `--username/--password` are sent as Basic
//! credentials. If the registry answers 401 with a `Bearer realm=...` challenge,
//! a token for `repository:<repo>:pull,push` is fetched from the realm (with
//! the Basic credentials, if any) and used from then on; a later 401 triggers
//! one token refresh and retry. Any non-2xx answer aborts the run with an error
//! naming the step, URL, status and the start of the response body.
//!
//! Memory: at most one buffer per blob size is alive at a time (plus digest
//! strings); data written by the benchmark is left in the registry.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rand::RngCore;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
const TARGET_BYTES_PER_SIZE: u64 = 256 * MIB;
const MAX_DEFAULT_ROUNDS: u64 = 16;
const GET_TAG: &str = "bench-get";

/// Arguments of `berth bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    pub url: String,
    /// Repository to push to / pull from.
    #[arg(long, default_value = "bench/load")]
    pub repo: String,
    /// Blob sizes to test (K/M/G suffixes are powers of 1024).
    #[arg(long, value_delimiter = ',', value_parser = parse_size, default_value = "1M,16M,64M,256M,1G")]
    pub sizes: Vec<u64>,
    /// Manifest concurrency levels.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096), default_value = "1,4,16,64")]
    pub concurrency: Vec<u32>,
    /// Manifest requests per concurrency level (for PUT and for GET).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub requests: u32,
    /// Pushes (and pulls) per blob size [default: enough for ~256 MiB per
    /// size, between 1 and 16].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub blob_rounds: Option<u32>,
    /// Username for Basic auth / token requests.
    #[arg(long)]
    pub username: Option<String>,
    /// Password for Basic auth / token requests.
    #[arg(long)]
    pub password: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Skip the blob push/pull benchmarks.
    #[arg(long)]
    pub skip_blobs: bool,
    /// Skip the manifest PUT/GET benchmarks.
    #[arg(long)]
    pub skip_manifests: bool,
    /// Name printed in the output [default: the URL].
    #[arg(long)]
    pub label: Option<String>,
}

/// Errors of `berth bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid argument: {0}")]
    InvalidArg(String),
    #[error("{step}: request to {url} failed: {source}")]
    Http {
        step: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{step}: {url} answered {status}: {body}")]
    Status { step: String, url: String, status: u16, body: String },
    #[error("{step}: {url}: {msg}")]
    Protocol { step: String, url: String, msg: String },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    /// `blob_push`, `blob_pull`, `manifest_put` or `manifest_get`.
    pub op: String,
    /// Blob size in bytes (blob rows only).
    pub size_bytes: Option<u64>,
    pub concurrency: u32,
    pub requests: u64,
    /// Payload bytes moved (blob rows) or manifest bytes (manifest rows).
    pub bytes: u64,
    /// Timed seconds (sum of request times for blobs, wall clock for manifests).
    pub elapsed_secs: f64,
    /// MiB/s (blob rows only).
    pub mib_per_sec: Option<f64>,
    pub req_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Result of a benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub repo: String,
    /// `anonymous`, `basic` or `bearer`.
    pub auth: String,
    pub started_unix: u64,
    pub total_secs: f64,
    pub rows: Vec<ReportRow>,
}

/// Runs the benchmark and returns its report.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t_total = Instant::now();
    if args.sizes.is_empty() && !args.skip_blobs {
        return Err(BenchError::InvalidArg("--sizes is empty".into()));
    }
    if args.concurrency.is_empty() && !args.skip_manifests {
        return Err(BenchError::InvalidArg("--concurrency is empty".into()));
    }
    if args.password.is_some() && args.username.is_none() {
        return Err(BenchError::InvalidArg("--password given without --username".into()));
    }
    let base_str = args.url.trim_end_matches('/').to_string();
    let base = Url::parse(&format!("{base_str}/"))
        .map_err(|e| BenchError::InvalidArg(format!("bad url {:?}: {e}", args.url)))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(BenchError::InvalidArg(format!("url must be http(s): {}", args.url)));
    }
    let repo = args.repo.trim_matches('/').to_string();
    if repo.is_empty() {
        return Err(BenchError::InvalidArg("--repo is empty".into()));
    }
    let max_conc = args.concurrency.iter().copied().max().unwrap_or(1) as usize;
    let client = Client::builder()
        .http1_only()
        .pool_max_idle_per_host(max_conc.max(64) * 2)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(15))
        .tcp_nodelay(true)
        .user_agent(concat!("berth-bench/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BenchError::InvalidArg(format!("cannot build HTTP client: {e}")))?;
    let ctx = Arc::new(Ctx {
        client,
        base,
        base_str,
        auth: Auth {
            basic: args.username.clone().map(|u| (u, args.password.clone())),
            bearer: RwLock::new(None),
            scope: format!("repository:{repo}:pull,push"),
        },
        repo,
    });

    // Probe /v2/ (also acquires a bearer token if the registry wants one).
    let probe_url = format!("{}/v2/", ctx.base_str);
    let resp = ctx.send("API version check", &probe_url, || ctx.client.get(&probe_url)).await?;
    drain(resp).await;

    let nonce: u64 = rand::rng().next_u64();
    let mut rows = Vec::new();

    if !args.skip_blobs {
        let mut pushed: Vec<(u64, Vec<String>)> = Vec::new();
        for &size in &args.sizes {
            if size == 0 {
                return Err(BenchError::InvalidArg("blob size 0".into()));
            }
            let rounds = args
                .blob_rounds
                .map(u64::from)
                .unwrap_or_else(|| TARGET_BYTES_PER_SIZE.div_ceil(size).clamp(1, MAX_DEFAULT_ROUNDS));
            let (row, digests) = bench_push(&ctx, size, rounds, nonce).await?;
            rows.push(row);
            pushed.push((size, digests));
        }
        for (size, digests) in &pushed {
            rows.push(bench_pull(&ctx, *size, digests).await?);
        }
    }

    if !args.skip_manifests {
        push_blob(&ctx, Bytes::from_static(b"{}"), EMPTY_DIGEST).await?;
        let requests = args.requests as usize;
        let mut tag_base = 0usize;
        for &conc in &args.concurrency {
            let bodies: Vec<Bytes> =
                (0..requests).map(|i| manifest_body(nonce, (tag_base + i) as u64)).collect::<Result<_, _>>()?;
            let bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
            let op = Arc::new(ManifestOp::Put { bodies, tag_base });
            eprintln!("manifest PUT: concurrency {conc}, {requests} requests");
            let (lat, wall) = run_concurrent(&ctx, &op, conc as usize, requests).await?;
            rows.push(make_row("manifest_put", None, conc, bytes, wall, &lat));
            tag_base += requests;
        }
        let body = manifest_body(nonce, u64::MAX)?;
        let len = body.len() as u64;
        put_manifest(&ctx, GET_TAG, body).await?;
        let op = Arc::new(ManifestOp::Get);
        for &conc in &args.concurrency {
            eprintln!("manifest GET: concurrency {conc}, {requests} requests");
            let (lat, wall) = run_concurrent(&ctx, &op, conc as usize, requests).await?;
            let bytes = len * lat.len() as u64;
            rows.push(make_row("manifest_get", None, conc, bytes, wall, &lat));
        }
    }

    Ok(Report {
        label: args.label.clone().unwrap_or_else(|| args.url.clone()),
        url: args.url.clone(),
        repo: ctx.repo.clone(),
        auth: ctx.auth.mode().to_string(),
        started_unix,
        total_secs: t_total.elapsed().as_secs_f64(),
        rows,
    })
}

/// Prints the report as a table (or as pretty JSON).
pub fn print_report(report: &Report, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot serialize report: {e}"),
        }
        return;
    }
    println!(
        "berth bench: {} ({}, repo {}, auth {}, {:.1}s)",
        report.label, report.url, report.repo, report.auth, report.total_secs
    );
    println!(
        "{:<13} {:>8} {:>5} {:>6} {:>10} {:>10} {:>9} {:>9}",
        "operation", "size", "conc", "reqs", "MiB/s", "req/s", "p50 ms", "p99 ms"
    );
    for r in &report.rows {
        let op = match r.op.as_str() {
            "blob_push" => "blob push",
            "blob_pull" => "blob pull",
            "manifest_put" => "manifest PUT",
            "manifest_get" => "manifest GET",
            other => other,
        };
        let size = r.size_bytes.map(fmt_size).unwrap_or_else(|| "-".into());
        let mibs = r.mib_per_sec.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<13} {:>8} {:>5} {:>6} {:>10} {:>10.1} {:>9.2} {:>9.2}",
            op, size, r.concurrency, r.requests, mibs, r.req_per_sec, r.p50_ms, r.p99_ms
        );
    }
}

// ---------------------------------------------------------------------------
// HTTP plumbing

struct Auth {
    basic: Option<(String, Option<String>)>,
    bearer: RwLock<Option<String>>,
    scope: String,
}

impl Auth {
    fn token(&self) -> Option<String> {
        match self.bearer.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_token(&self, t: String) {
        match self.bearer.write() {
            Ok(mut g) => *g = Some(t),
            Err(p) => *p.into_inner() = Some(t),
        }
    }

    fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        if let Some(t) = self.token() {
            rb.bearer_auth(t)
        } else if let Some((u, p)) = &self.basic {
            rb.basic_auth(u, p.as_ref())
        } else {
            rb
        }
    }

    fn mode(&self) -> &'static str {
        if self.token().is_some() {
            "bearer"
        } else if self.basic.is_some() {
            "basic"
        } else {
            "anonymous"
        }
    }
}

struct Ctx {
    client: Client,
    base: Url,
    base_str: String,
    repo: String,
    auth: Auth,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

impl Ctx {
    fn repo_url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{}", self.base_str, self.repo, rest)
    }

    /// Sends a request built by `build` (called again for a retry), handling a
    /// Bearer challenge once, and fails on any non-2xx status.
    async fn send(&self, step: &str, url: &str, build: impl Fn() -> RequestBuilder) -> Result<Response, BenchError> {
        let mut retried = false;
        loop {
            let resp = self.auth.apply(build()).send().await.map_err(|e| http_err(step, url, e))?;
            if resp.status() == StatusCode::UNAUTHORIZED
                && !retried
                && let Some(params) = bearer_challenge(resp.headers())
            {
                drain(resp).await;
                self.fetch_token(&params).await?;
                retried = true;
                continue;
            }
            return check(step, url, resp).await;
        }
    }

    async fn fetch_token(&self, params: &[(String, String)]) -> Result<(), BenchError> {
        let get = |k: &str| params.iter().find(|(pk, _)| pk.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or_else(|| BenchError::Auth("Bearer challenge without realm".into()))?;
        let mut rb = self.client.get(&realm);
        if let Some(service) = get("service") {
            rb = rb.query(&[("service", service)]);
        }
        rb = rb.query(&[("scope", self.auth.scope.as_str())]);
        if let Some((u, p)) = &self.auth.basic {
            rb = rb.basic_auth(u, p.as_ref());
        }
        let step = "token request";
        let resp = rb.send().await.map_err(|e| http_err(step, &realm, e))?;
        let resp = check(step, &realm, resp).await?;
        let tok: TokenResponse = resp.json().await.map_err(|e| http_err(step, &realm, e))?;
        let token = tok
            .token
            .filter(|t| !t.is_empty())
            .or(tok.access_token)
            .ok_or_else(|| BenchError::Auth(format!("{realm} returned no token")))?;
        self.auth.set_token(token);
        Ok(())
    }
}

fn http_err(step: &str, url: &str, source: reqwest::Error) -> BenchError {
    BenchError::Http { step: step.to_string(), url: url.to_string(), source }
}

async fn check(step: &str, url: &str, resp: Response) -> Result<Response, BenchError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    Err(BenchError::Status {
        step: step.to_string(),
        url: url.to_string(),
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    })
}

/// Reads and discards a (small) body so the connection can be reused.
async fn drain(mut resp: Response) {
    while let Ok(Some(_)) = resp.chunk().await {}
}

/// Returns the parameters of a `WWW-Authenticate: Bearer ...` challenge.
fn bearer_challenge(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    headers.get_all(WWW_AUTHENTICATE).iter().find_map(|v| {
        let s = v.to_str().ok()?.trim();
        let (scheme, rest) = s.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| parse_auth_params(rest))
    })
}

fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => break,
                        c => val.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_string(), val.trim().to_string()));
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Blobs

/// Two-step upload (POST + monolithic PUT). Returns the time taken.
async fn push_blob(ctx: &Ctx, data: Bytes, digest: &str) -> Result<Duration, BenchError> {
    let post_url = ctx.repo_url("blobs/uploads/");
    let start = Instant::now();
    let resp = ctx.send("blob upload start (POST)", &post_url, || ctx.client.post(&post_url)).await?;
    let loc = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string).ok_or_else(|| {
        BenchError::Protocol {
            step: "blob upload start (POST)".into(),
            url: post_url.clone(),
            msg: "202 without a usable Location header".into(),
        }
    })?;
    drain(resp).await;
    let loc_url = ctx.base.join(&loc).map_err(|e| BenchError::Protocol {
        step: "blob upload start (POST)".into(),
        url: post_url.clone(),
        msg: format!("bad Location {loc:?}: {e}"),
    })?;
    let sep = if loc_url.query().is_some() { '&' } else { '?' };
    let put_url = format!("{loc_url}{sep}digest={digest}");
    let resp = ctx
        .send("blob upload (PUT)", &put_url, || {
            ctx.client.put(&put_url).header(CONTENT_TYPE, "application/octet-stream").body(data.clone())
        })
        .await?;
    drain(resp).await;
    Ok(start.elapsed())
}

async fn bench_push(ctx: &Ctx, size: u64, rounds: u64, nonce: u64) -> Result<(ReportRow, Vec<String>), BenchError> {
    let len = usize::try_from(size).map_err(|_| BenchError::InvalidArg(format!("blob size {size} too large")))?;
    eprintln!("blob push: {} x {rounds}", fmt_size(size));
    let mut buf = tokio::task::spawn_blocking(move || {
        let mut b = BytesMut::zeroed(len);
        rand::rng().fill_bytes(&mut b);
        b
    })
    .await?;
    let mut lat = Vec::with_capacity(rounds as usize);
    let mut digests = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        // Make this round's blob unique and hash it, off the clock.
        let stamp = (nonce ^ round).to_be_bytes();
        let n = buf.len().min(stamp.len());
        buf[..n].copy_from_slice(&stamp[..n]);
        let (b, digest) = tokio::task::spawn_blocking(move || {
            let d = format!("sha256:{}", hex::encode(Sha256::digest(&buf[..])));
            (buf, d)
        })
        .await?;
        let data = b.freeze();
        lat.push(push_blob(ctx, data.clone(), &digest).await?);
        digests.push(digest);
        // Get the buffer back without copying (reqwest has dropped its clone).
        buf = data.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    }
    drop(buf);
    let total: Duration = lat.iter().sum();
    let row = make_row("blob_push", Some(size), 1, size * rounds, total, &lat);
    Ok((row, digests))
}

async fn bench_pull(ctx: &Ctx, size: u64, digests: &[String]) -> Result<ReportRow, BenchError> {
    eprintln!("blob pull: {} x {}", fmt_size(size), digests.len());
    let step = "blob pull (GET)";
    let mut lat = Vec::with_capacity(digests.len());
    for digest in digests {
        let url = ctx.repo_url(&format!("blobs/{digest}"));
        let start = Instant::now();
        let mut resp = ctx.send(step, &url, || ctx.client.get(&url)).await?;
        let mut got = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| http_err(step, &url, e))? {
            got += chunk.len() as u64;
        }
        lat.push(start.elapsed());
        if got != size {
            return Err(BenchError::Protocol {
                step: step.into(),
                url,
                msg: format!("expected {size} bytes, got {got}"),
            });
        }
    }
    let total: Duration = lat.iter().sum();
    Ok(make_row("blob_pull", Some(size), 1, size * digests.len() as u64, total, &lat))
}

// ---------------------------------------------------------------------------
// Manifests

enum ManifestOp {
    Put { bodies: Vec<Bytes>, tag_base: usize },
    Get,
}

fn manifest_body(nonce: u64, n: u64) -> Result<Bytes, BenchError> {
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2 },
        "layers": [],
        "annotations": {
            "dev.berth.bench.run": format!("{nonce:016x}"),
            "dev.berth.bench.n": n.to_string(),
        },
    });
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| BenchError::InvalidArg(format!("cannot serialize manifest: {e}")))
}

async fn put_manifest(ctx: &Ctx, tag: &str, body: Bytes) -> Result<(), BenchError> {
    let url = ctx.repo_url(&format!("manifests/{tag}"));
    let resp = ctx
        .send("manifest PUT", &url, || ctx.client.put(&url).header(CONTENT_TYPE, OCI_MANIFEST).body(body.clone()))
        .await?;
    drain(resp).await;
    Ok(())
}

async fn manifest_op(ctx: &Ctx, op: &ManifestOp, i: usize) -> Result<(), BenchError> {
    match op {
        ManifestOp::Put { bodies, tag_base } => {
            let body = bodies.get(i).cloned().unwrap_or_default();
            put_manifest(ctx, &format!("t{}", tag_base + i), body).await
        }
        ManifestOp::Get => {
            let step = "manifest GET";
            let url = ctx.repo_url(&format!("manifests/{GET_TAG}"));
            let resp = ctx.send(step, &url, || ctx.client.get(&url).header(ACCEPT, OCI_MANIFEST)).await?;
            resp.bytes().await.map_err(|e| http_err(step, &url, e))?;
            Ok(())
        }
    }
}

/// Runs `total` operations with `conc` workers sharing a counter. Returns the
/// per-request latencies and the wall-clock time.
async fn run_concurrent(
    ctx: &Arc<Ctx>,
    op: &Arc<ManifestOp>,
    conc: usize,
    total: usize,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    let counter = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(conc);
    for _ in 0..conc {
        let (ctx, op, counter, stop) = (ctx.clone(), op.clone(), counter.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= total || stop.load(Ordering::Relaxed) {
                    return Ok(lat);
                }
                let t = Instant::now();
                if let Err(e) = manifest_op(&ctx, &op, i).await {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut first_err = None;
    for h in handles {
        match h.await? {
            Ok(l) => all.extend(l),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok((all, start.elapsed()))
}

// ---------------------------------------------------------------------------
// Statistics and formatting

fn make_row(op: &str, size: Option<u64>, conc: u32, bytes: u64, elapsed: Duration, lat: &[Duration]) -> ReportRow {
    let mut sorted = lat.to_vec();
    sorted.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
    ReportRow {
        op: op.to_string(),
        size_bytes: size,
        concurrency: conc,
        requests: sorted.len() as u64,
        bytes,
        elapsed_secs: secs,
        mib_per_sec: size.map(|_| per_sec(bytes as f64 / MIB as f64)),
        req_per_sec: per_sec(sorted.len() as f64),
        p50_ms: ms(percentile(&sorted, 50.0)),
        p99_ms: ms(percentile(&sorted, 99.0)),
        max_ms: ms(sorted.last().copied().unwrap_or_default()),
    }
}

/// Nearest-rank percentile of an ascending slice.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt_size(b: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{} {name}", b / unit);
        }
    }
    if b >= MIB { format!("{:.1} MiB", b as f64 / MIB as f64) } else { format!("{b} B") }
}

/// Parses `512`, `64K`, `16M`, `1G`, `1GiB`, `16mb` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let t = t.strip_suffix('I').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], KIB),
        Some('M') => (&t[..t.len() - 1], MIB),
        Some('G') => (&t[..t.len() - 1], GIB),
        Some('T') => (&t[..t.len() - 1], GIB << 10),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("invalid size {s:?} (use e.g. 1M, 16M, 1G)"))?;
    if n == 0 {
        return Err(format!("size must be positive: {s:?}"));
    }
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M").unwrap(), MIB);
        assert_eq!(parse_size("1GiB").unwrap(), GIB);
        assert_eq!(parse_size("16mb").unwrap(), 16 * MIB);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("0").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(fmt_size(GIB), "1 GiB");
        assert_eq!(fmt_size(16 * MIB), "16 MiB");
    }

    #[test]
    fn challenge() {
        let p = parse_auth_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }

    #[test]
    fn empty_digest() {
        let d = format!("sha256:{}", hex::encode(Sha256::digest(b"{}")));
        assert_eq!(d, EMPTY_DIGEST);
    }
}
