//! Test harness shared by the first-party plugins' integration tests (http-probe includes
//! this file by path): start the plugin binary on a free port with a key file, send
//! requests signed with `berth_httpsig`, and the runner-API contract checks every plugin
//! must pass.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_httpsig::{Signer, unix_now};
use serde_json::Value;

pub const KEY: &[u8] = b"test-runner-key-\x00\x01binary-ok";

pub struct PluginProc {
    child: Child,
    pub addr: String,
    key_file: PathBuf,
}

impl Drop for PluginProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.key_file);
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Start `bin` with PLUGIN_PORT=0 and read the bound address from its first stdout line.
pub fn start(bin: &str) -> PluginProc {
    static N: AtomicU64 = AtomicU64::new(0);
    let key_file = std::env::temp_dir().join(format!(
        "plugin-test-key-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&key_file, KEY).unwrap();
    let mut child = Command::new(bin)
        .env("PLUGIN_PORT", "0")
        .env("RUNNER_API_KEY_FILE", &key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start plugin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no address on stdout: {line:?}"));
    PluginProc { child, addr: format!("127.0.0.1:{port}"), key_file }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Assert a contract error answer.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert!(self.body["error"]["message"].is_string(), "{self:?}");
        assert!(self.body["error"]["retryable"].is_boolean(), "{self:?}");
    }
}

/// How to sign a request.
#[derive(Clone)]
pub struct Opts {
    /// None: send no signature at all.
    pub key: Option<Vec<u8>>,
    pub runner_api: Option<String>,
    pub deadline_ms: Option<u64>,
    pub created: Option<u64>,
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

impl PluginProc {
    pub fn headers(&self, method: &str, path: &str, body: &[u8], o: &Opts) -> Vec<(String, String)> {
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
        if let Some(key) = &o.key {
            let signer = Signer::new(key.clone(), "runner");
            let refs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let s = match o.created {
                None => signer.sign(method, &self.addr, path, &refs, body),
                Some(c) => signer.sign_at(method, &self.addr, path, &refs, body, c, &format!("n-{c}-{}", now_ms())),
            }
            .unwrap();
            for (k, v) in s.headers() {
                h.push((k.to_string(), v));
            }
        } else if !body.is_empty() {
            h.push(("Content-Digest".into(), berth_httpsig::content_digest(body)));
        }
        h
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("non-JSON body {body:?}: {e}"));
        Resp { status, headers, body }
    }

    pub fn call(&self, method: &str, path: &str, body: &[u8], o: &Opts) -> Resp {
        let h = self.headers(method, path, body, o);
        self.send(method, path, &h, body)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.call("GET", path, b"", &Opts::default())
    }
}

// ---- Contract checks every plugin passes. ----

pub fn health_and_info(p: &PluginProc, name: &str, version: &str, entrypoints: &[&str]) {
    let r = p.get("/v1/health");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, serde_json::json!({"status": "ok"}));
    let r = p.get("/v1/info");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["name"], name);
    assert_eq!(r.body["version"], version);
    assert_eq!(r.body["runner_api_versions"], serde_json::json!(["1.0"]));
    assert_eq!(r.body["entrypoints"], serde_json::json!(entrypoints));
    // Health without any runner headers (no deadline, no version) is still fine when signed.
    let r = p.call("GET", "/v1/health", b"", &Opts { runner_api: None, deadline_ms: None, ..Opts::default() });
    assert_eq!(r.status, 200, "{r:?}");
}

pub fn authentication(p: &PluginProc, entry_path: &str, body: &[u8]) {
    // Unsigned, on every endpoint.
    let unsigned = Opts { key: None, ..Opts::default() };
    for (m, path, b) in
        [("GET", "/v1/health", &b""[..]), ("GET", "/v1/info", b""), ("POST", entry_path, body), ("GET", "/nope", b"")]
    {
        p.call(m, path, b, &unsigned).assert_error(401, "unauthorized");
    }
    // Wrong key.
    let wrong = Opts { key: Some(b"not-the-key".to_vec()), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &wrong).assert_error(401, "unauthorized");
    p.call("POST", entry_path, body, &wrong).assert_error(401, "unauthorized");
    // Replayed: the same signed request twice.
    let h = p.headers("POST", entry_path, body, &Opts::default());
    let first = p.send("POST", entry_path, &h, body);
    assert_ne!(first.status, 401, "{first:?}");
    p.send("POST", entry_path, &h, body).assert_error(401, "unauthorized");
    // Expired (created two minutes ago, 60 s validity).
    let old = Opts { created: Some(unix_now() - 120), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &old).assert_error(401, "unauthorized");
    // Created too far in the future.
    let future = Opts { created: Some(unix_now() + 600), ..Opts::default() };
    p.call("GET", "/v1/health", b"", &future).assert_error(401, "unauthorized");
    // Body altered after signing: the digest no longer matches.
    let h = p.headers("POST", entry_path, body, &Opts::default());
    let mut altered = body.to_vec();
    altered.push(b' ');
    p.send("POST", entry_path, &h, &altered).assert_error(401, "unauthorized");
    // Deadline altered after signing.
    let mut h = p.headers("GET", "/v1/health", b"", &Opts::default());
    for (k, v) in h.iter_mut() {
        if k == "AisOpsFlow-Deadline" {
            *v = (now_ms() + 99_999).to_string();
        }
    }
    p.send("GET", "/v1/health", &h, b"").assert_error(401, "unauthorized");
}

pub fn versions(p: &PluginProc, entry_path: &str, body: &[u8]) {
    for v in ["2.0", "0.9", "x"] {
        let r = p.call("POST", entry_path, body, &Opts { runner_api: Some(v.into()), ..Opts::default() });
        r.assert_error(400, "unsupported_version");
        assert_eq!(r.body["error"]["supported"], serde_json::json!(["1.0"]), "{r:?}");
    }
    p.call("GET", "/v1/health", b"", &Opts { runner_api: Some("2.0".into()), ..Opts::default() })
        .assert_error(400, "unsupported_version");
    for v in [Some("1.7"), Some("1.0"), None] {
        let r = p.call("POST", entry_path, body, &Opts { runner_api: v.map(Into::into), ..Opts::default() });
        assert_eq!(r.status, 200, "{v:?}: {r:?}");
        assert!(r.body.get("output").is_some(), "{r:?}");
    }
}

pub fn deadlines(p: &PluginProc, entry_path: &str, body: &[u8]) {
    let t = Instant::now();
    let past = Opts { deadline_ms: Some(now_ms() - 1), ..Opts::default() };
    p.call("POST", entry_path, body, &past).assert_error(504, "deadline_exceeded");
    p.call("GET", "/v1/health", b"", &past).assert_error(504, "deadline_exceeded");
    assert!(t.elapsed() < Duration::from_secs(2), "not prompt: {:?}", t.elapsed());
    let junk = Opts { deadline_ms: None, ..Opts::default() };
    let mut h = vec![("AisOpsFlow-Deadline".to_string(), "soon".to_string())];
    h.extend(p.headers("GET", "/v1/health", b"", &junk));
    // A deadline header the signature does not cover is refused as unauthenticated.
    p.send("GET", "/v1/health", &h, b"").assert_error(401, "unauthorized");
}

pub fn bad_requests(p: &PluginProc, entry_path: &str) {
    p.call("POST", entry_path, b"{not json", &Opts::default()).assert_error(400, "invalid_request");
    p.call("POST", entry_path, b"[1,2]", &Opts::default()).assert_error(400, "invalid_request");
    p.call("POST", entry_path, br#"{"input": {}, "config": 3}"#, &Opts::default()).assert_error(400, "invalid_request");
    p.get("/v1/nope").assert_error(404, "not_found");
    p.get("/").assert_error(404, "not_found");
    p.call("POST", "/v1/entrypoints/missing", b"{}", &Opts::default()).assert_error(404, "not_found");
    let r = p.get(entry_path);
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    p.call("POST", "/v1/health", b"{}", &Opts::default()).assert_error(405, "method_not_allowed");
}
