//! The runner API v1 is language-neutral: `tests/fixtures/python_plugin.py` (Python 3,
//! standard library only) answers requests signed by `berth_httpsig::Signer` exactly like the
//! Rust plugins, and each of its `--break AREA` modes shows the one violation it is meant to.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_httpsig::{Signer, unix_now};
use serde_json::{Value, json};

use crate::common::{client, require_tool};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/python_plugin.py");
const KEY: &[u8] = b"py-runner-key-\x00\xffbinary";
const ECHO: &str = "/v1/entrypoints/echo";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// The Python plugin as a child process, killed on drop.
struct PyPlugin {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for PyPlugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(brk: Option<&str>) -> PyPlugin {
    require_tool("python3");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("runner_api_key");
    std::fs::write(&key_file, KEY).expect("key file");
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .env("PLUGIN_PORT", "0")
        .env("RUNNER_API_KEY_FILE", &key_file)
        .env_remove("PLUGIN_BREAK")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(area) = brk {
        cmd.args(["--break", area]);
    }
    let mut child = cmd.spawn().expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first stdout line");
    let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
    let plugin = PyPlugin { child, addr, _dir: dir };
    assert!(
        line.starts_with("listening on 127.0.0.1:")
            && plugin.addr.rsplit(':').next().is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p > 0)),
        "unexpected first line {line:?}"
    );
    plugin
}

/// How to sign a request.
#[derive(Clone)]
struct Opts {
    /// `None`: no signature at all.
    key: Option<Vec<u8>>,
    runner_api: Option<String>,
    deadline_ms: Option<u64>,
    /// Explicit `created` (else now, with a fresh nonce).
    created: Option<u64>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            key: Some(KEY.to_vec()),
            runner_api: Some("1.0".into()),
            deadline_ms: Some(now_ms() + 10_000),
            created: None,
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    allow: Option<String>,
    text: String,
    elapsed: Duration,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("non-JSON body {:?}: {e}", self.text))
    }

    fn assert_ok(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.content_type, "application/json", "{self:?}");
        self.json()
    }

    /// A contract error answer.
    fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.content_type, "application/json", "{self:?}");
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{self:?}");
        assert!(v["error"]["message"].is_string(), "{self:?}");
        assert!(v["error"]["retryable"].is_boolean(), "{self:?}");
        v
    }
}

impl PyPlugin {
    fn headers(&self, method: &str, path: &str, body: &[u8], o: &Opts) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = Vec::new();
        if let Some(d) = o.deadline_ms {
            h.push(("AisOpsFlow-Deadline".into(), d.to_string()));
        }
        if let Some(v) = &o.runner_api {
            h.push(("AisOpsFlow-Runner-API".into(), v.clone()));
        }
        if !body.is_empty() {
            h.push(("Content-Type".into(), "application/json".into()));
        }
        match &o.key {
            Some(key) => {
                let signer = Signer::new(key.clone(), "runner");
                let refs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let signed = match o.created {
                    None => signer.sign(method, &self.addr, path, &refs, body),
                    Some(c) => signer.sign_at(method, &self.addr, path, &refs, body, c, &format!("n-{c}-{}", now_ms())),
                }
                .expect("sign");
                h.extend(signed.headers().into_iter().map(|(k, v)| (k.to_string(), v)));
            }
            None if !body.is_empty() => h.push(("Content-Digest".into(), berth_httpsig::content_digest(body))),
            None => {}
        }
        h
    }

    async fn send(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = client().request(m, format!("http://{}{path}", self.addr)).timeout(Duration::from_secs(20));
        for (k, v) in headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if !body.is_empty() {
            rb = rb.body(body.to_vec());
        }
        let t = Instant::now();
        let r = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type = header("content-type").unwrap_or_default();
        let allow = header("allow");
        let text = r.text().await.expect("body");
        Resp { status, content_type, allow, text, elapsed: t.elapsed() }
    }

    async fn call(&self, method: &str, path: &str, body: &[u8], o: &Opts) -> Resp {
        let h = self.headers(method, path, body, o);
        self.send(method, path, &h, body).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, b"", &Opts::default()).await
    }

    async fn echo(&self, input: Value, o: &Opts) -> Resp {
        let body = json!({"input": input, "config": {"k": 1}}).to_string();
        self.call("POST", ECHO, body.as_bytes(), o).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_health_info_and_echo() {
    let p = start(None);
    assert_eq!(p.get("/v1/health").await.assert_ok(), json!({"status": "ok"}));
    assert_eq!(
        p.get("/v1/info").await.assert_ok(),
        json!({"name": "py-echo", "version": "0.1.0", "runner_api_versions": ["1.0"], "entrypoints": ["echo"]})
    );
    let input = json!({"a": [1, "two", null], "b": {"c": true}});
    assert_eq!(p.echo(input.clone(), &Opts::default()).await.assert_ok(), json!({"output": input}));
    // Unknown request fields are ignored; config may be absent.
    let body = br#"{"input": "x", "extra": {"runner": "adds fields"}}"#;
    assert_eq!(p.call("POST", ECHO, body, &Opts::default()).await.assert_ok(), json!({"output": "x"}));
    // Short simulated work inside the deadline.
    let r = p.echo(json!({"sleep_ms": 20}), &Opts::default()).await;
    assert_eq!(r.assert_ok(), json!({"output": {"sleep_ms": 20}}));
    // No runner headers at all (no version, no deadline) is still fine when signed.
    let bare = Opts { runner_api: None, deadline_ms: None, ..Opts::default() };
    assert_eq!(p.call("GET", "/v1/health", b"", &bare).await.assert_ok(), json!({"status": "ok"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_unauthorized() {
    let p = start(None);
    let body = br#"{"input": 1, "config": {}}"#;
    let unsigned = Opts { key: None, ..Opts::default() };
    for (m, path, b) in
        [("GET", "/v1/health", &b""[..]), ("GET", "/v1/info", b""), ("POST", ECHO, body), ("GET", "/nope", b"")]
    {
        p.call(m, path, b, &unsigned).await.assert_error(401, "unauthorized");
    }
    let wrong = Opts { key: Some(b"not-the-key".to_vec()), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &wrong).await.assert_error(401, "unauthorized");
    p.call("POST", ECHO, body, &wrong).await.assert_error(401, "unauthorized");

    // Replayed: the same signed request twice.
    let h = p.headers("POST", ECHO, body, &Opts::default());
    p.send("POST", ECHO, &h, body).await.assert_ok();
    p.send("POST", ECHO, &h, body).await.assert_error(401, "unauthorized");

    // Expired (created two minutes ago, 60 s validity) and created too far in the future.
    let old = Opts { created: Some(unix_now() - 120), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &old).await.assert_error(401, "unauthorized");
    let future = Opts { created: Some(unix_now() + 600), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &future).await.assert_error(401, "unauthorized");

    // Body altered after signing: Content-Digest no longer matches.
    let h = p.headers("POST", ECHO, body, &Opts::default());
    p.send("POST", ECHO, &h, br#"{"input": 2, "config": {}}"#).await.assert_error(401, "unauthorized");
    // Deadline stretched after signing.
    let mut h = p.headers("GET", "/v1/health", b"", &Opts::default());
    for (k, v) in h.iter_mut() {
        if k == "AisOpsFlow-Deadline" {
            *v = (now_ms() + 99_999).to_string();
        }
    }
    p.send("GET", "/v1/health", &h, b"").await.assert_error(401, "unauthorized");
    // A covered-if-present header the signature leaves out.
    let mut h = p.headers("GET", "/v1/health", b"", &Opts { runner_api: None, ..Opts::default() });
    h.push(("AisOpsFlow-Runner-API".into(), "1.0".into()));
    p.send("GET", "/v1/health", &h, b"").await.assert_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_negotiation() {
    let p = start(None);
    for v in ["2.0", "0.9", "x", "1.x"] {
        let r = p.echo(json!(1), &Opts { runner_api: Some(v.into()), ..Opts::default() }).await;
        let b = r.assert_error(400, "unsupported_version");
        assert_eq!(b["error"]["supported"], json!(["1.0"]), "{v}: {r:?}");
    }
    for v in [Some("1.9"), Some("1.0"), Some("1"), None] {
        let r = p.echo(json!({"v": v}), &Opts { runner_api: v.map(Into::into), ..Opts::default() }).await;
        assert_eq!(r.assert_ok(), json!({"output": {"v": v}}), "{v:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines() {
    let p = start(None);
    let past = Opts { deadline_ms: Some(now_ms() - 1), ..Opts::default() };
    p.echo(json!(1), &past).await.assert_error(504, "deadline_exceeded");
    p.call("GET", "/v1/health", b"", &past).await.assert_error(504, "deadline_exceeded");

    // Work that would outlast the deadline gives up at the deadline, not after the full sleep.
    let soon = Opts { deadline_ms: Some(now_ms() + 700), ..Opts::default() };
    let r = p.echo(json!({"sleep_ms": 15_000}), &soon).await;
    let b = r.assert_error(504, "deadline_exceeded");
    assert_eq!(b["error"]["retryable"], true);
    assert!(r.elapsed < Duration::from_secs(8), "the plugin hung past its deadline: {:?}", r.elapsed);

    // A deadline that is not epoch milliseconds (but is signed) is a bad request.
    let mut h = vec![("AisOpsFlow-Deadline".to_string(), "soon".to_string())];
    let refs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let s = Signer::new(KEY.to_vec(), "runner").sign("GET", &p.addr, "/v1/health", &refs, b"").expect("sign");
    h.extend(s.headers().into_iter().map(|(k, v)| (k.to_string(), v)));
    p.send("GET", "/v1/health", &h, b"").await.assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_semantics() {
    let p = start(None);
    let o = Opts::default();
    p.call("POST", ECHO, b"{not json", &o).await.assert_error(400, "invalid_request");
    p.call("POST", ECHO, b"[1,2]", &o).await.assert_error(400, "invalid_request");
    p.call("POST", ECHO, br#"{"input": {}, "config": 3}"#, &o).await.assert_error(400, "invalid_request");
    p.echo(json!({"sleep_ms": -1}), &o).await.assert_error(400, "invalid_request");
    p.get("/v1/nope").await.assert_error(404, "not_found");
    p.get("/").await.assert_error(404, "not_found");
    p.call("POST", "/v1/entrypoints/missing", b"{}", &o).await.assert_error(404, "not_found");
    let r = p.get(ECHO).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.allow.as_deref(), Some("POST"));
    let r = p.call("POST", "/v1/health", b"{}", &o).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.allow.as_deref(), Some("GET"));
    let r = p.call("DELETE", "/v1/info", b"", &o).await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.allow.as_deref(), Some("GET"));
}

// ---- Each --break mode shows its violation and only it. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_availability_has_no_health() {
    let p = start(Some("availability"));
    p.get("/v1/health").await.assert_error(404, "not_found");
    assert_eq!(p.get("/v1/info").await.assert_ok()["name"], "py-echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_contract_breaks_the_schema() {
    let p = start(Some("contract"));
    let info = p.get("/v1/info").await.assert_ok();
    assert!(info.get("runner_api_versions").is_none(), "{info}");
    assert_eq!(p.echo(json!(7), &Opts::default()).await.assert_ok(), json!({"result": 7}));
    p.echo(json!(7), &Opts { key: None, ..Opts::default() }).await.assert_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_auth_accepts_unsigned_and_wrong_signatures() {
    let p = start(Some("auth"));
    let unsigned = Opts { key: None, ..Opts::default() };
    assert_eq!(p.echo(json!(1), &unsigned).await.assert_ok(), json!({"output": 1}));
    let wrong = Opts { key: Some(b"not-the-key".to_vec()), ..Opts::default() };
    assert_eq!(p.call("GET", "/v1/health", b"", &wrong).await.assert_ok(), json!({"status": "ok"}));
    p.get("/v1/nope").await.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_errors_has_wrong_error_semantics() {
    let p = start(Some("errors"));
    let r = p.call("POST", ECHO, b"{not json", &Opts::default()).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text.contains("Traceback"), "{r:?}");
    assert_eq!(p.get("/v1/nope").await.status, 200);
    p.echo(json!(1), &Opts { key: None, ..Opts::default() }).await.assert_error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_timeouts_ignores_the_deadline() {
    let p = start(Some("timeouts"));
    let deadline = now_ms() + 200;
    let r = p.echo(json!({"sleep_ms": 1_000}), &Opts { deadline_ms: Some(deadline), ..Opts::default() }).await;
    assert_eq!(r.assert_ok(), json!({"output": {"sleep_ms": 1_000}}));
    assert!(now_ms() > deadline, "answered in time: {r:?}");
    let past = Opts { deadline_ms: Some(now_ms() - 1), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &past).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_compatibility_refuses_newer_minors() {
    let p = start(Some("compatibility"));
    let b = p.echo(json!(1), &Opts { runner_api: Some("1.9".into()), ..Opts::default() }).await;
    b.assert_error(400, "unsupported_version");
    p.echo(json!(1), &Opts::default()).await.assert_ok();
}
