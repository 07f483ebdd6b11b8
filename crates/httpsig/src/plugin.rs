//! A small runner-API v1 plugin server (feature `plugin`): `tiny_http` with a fixed pool of
//! worker threads, every request authenticated with [`Verifier`], version negotiation,
//! deadlines and the contract's error bodies. Panics in a handler become `500 internal`.
//!
//! Environment: `PLUGIN_PORT` (default 8080, `0` picks a free port), `RUNNER_API_KEY_FILE`
//! (default `/run/secrets/runner_api_key`, raw bytes). The first line on stdout is
//! `listening on <ip>:<port>`.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::{DEADLINE, Message, RUNNER_API, Verifier};

/// Runner API versions this server speaks.
pub const SUPPORTED: &[&str] = &["1.0"];
/// Largest request body accepted.
pub const MAX_BODY: u64 = 1 << 20;
const WORKERS: usize = 4;

/// An error answer: status, contract code, human message (never a stack trace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub retryable: bool,
}

impl PluginError {
    fn new(status: u16, code: &'static str, message: impl Into<String>, retryable: bool) -> Self {
        PluginError { status, code, message: message.into(), retryable }
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", message, false)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message, false)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message, false)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "method_not_allowed", message, false)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message, false)
    }
    pub fn upstream_failed(message: impl Into<String>) -> Self {
        Self::new(502, "upstream_failed", message, true)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(504, "deadline_exceeded", message, true)
    }
    /// The plugin's health hook reported a problem: `503 internal`, retryable.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::new(503, "internal", message, true)
    }
    fn unsupported_version(got: &str) -> Self {
        Self::new(400, "unsupported_version", format!("runner API version {got:?} is not supported"), false)
    }

    fn body(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message, "retryable": self.retryable});
        if self.code == "unsupported_version" {
            e["supported"] = json!(SUPPORTED);
        }
        json!({ "error": e })
    }
}

/// One call of an entrypoint.
#[derive(Debug, Clone)]
pub struct Call {
    pub input: Value,
    pub config: Map<String, Value>,
    /// Time the handler may take: min(manifest `timeout_ms`, deadline - now).
    pub timeout: Duration,
    /// True when the runner's deadline (not the manifest timeout) set `timeout`.
    pub deadline_bound: bool,
}

pub type Handler = Box<dyn Fn(&Call) -> Result<Value, PluginError> + Send + Sync>;

pub struct Entrypoint {
    pub name: &'static str,
    pub timeout_ms: u64,
    pub handler: Handler,
}

/// A plugin: its identity, entrypoints and an optional health check.
pub struct Plugin {
    pub name: &'static str,
    pub version: &'static str,
    pub entrypoints: Vec<Entrypoint>,
    /// Called on every `GET /v1/health`; `Err(message)` answers `503 internal` (retryable).
    /// `None` means always healthy.
    pub health: Option<fn() -> Result<(), String>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A plugin is usually PID 1 in its container, where SIGTERM has no default action: without
/// a handler `runc kill TERM` would be ignored and every stop would wait for SIGKILL. The
/// server keeps no state worth flushing, so it exits at once.
fn exit_on_sigterm() {
    extern "C" fn on_term(_: libc::c_int) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: installing a handler that only calls an async-signal-safe function.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// Bind, print the address, and serve forever. Returns an error message only when
/// start-up fails (no key, port in use).
pub fn run(plugin: Plugin) -> Result<(), String> {
    exit_on_sigterm();
    let key_file = std::env::var("RUNNER_API_KEY_FILE").unwrap_or_else(|_| "/run/secrets/runner_api_key".to_string());
    let key = std::fs::read(&key_file).map_err(|e| format!("cannot read the runner API key from {key_file}: {e}"))?;
    if key.is_empty() {
        return Err(format!("the runner API key in {key_file} is empty"));
    }
    let port: u16 = match std::env::var("PLUGIN_PORT") {
        Ok(p) => p.trim().parse().map_err(|_| format!("PLUGIN_PORT {p:?} is not a port number"))?,
        Err(_) => 8080,
    };
    let server = Server::http(("0.0.0.0", port)).map_err(|e| format!("cannot listen: {e}"))?;
    let addr = server.server_addr().to_ip().map(|a| a.to_string()).unwrap_or_default();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }
    let server = Arc::new(server);
    let state = Arc::new((plugin, Verifier::new(key)));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    serve(&state.0, &state.1, req);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

fn serve(plugin: &Plugin, verifier: &Verifier, mut req: Request) {
    let outcome = guarded(|| handle(plugin, verifier, &mut req));
    let (status, body, allow) = match outcome {
        Ok(v) => (200, v, None),
        Err(e) => {
            let allow = (e.status == 405).then(|| allowed_methods(req.url()));
            (e.status, e.body(), allow)
        }
    };
    let mut resp = Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(Header::from_bytes("Content-Type", "application/json").expect("static header"));
    if let Some(a) = allow {
        resp.add_header(Header::from_bytes("Allow", a).expect("static header"));
    }
    let _ = req.respond(resp);
}

/// Run `f`, turning a panic into `500 internal` without any detail for the client.
fn guarded(f: impl FnOnce() -> Result<Value, PluginError>) -> Result<Value, PluginError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(PluginError::internal("internal error")))
}

fn allowed_methods(url: &str) -> &'static str {
    if url.starts_with("/v1/entrypoints/") { "POST" } else { "GET" }
}

fn handle(plugin: &Plugin, verifier: &Verifier, req: &mut Request) -> Result<Value, PluginError> {
    // Body first: the signature covers its digest.
    let mut body = Vec::new();
    req.as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|_| PluginError::invalid_request("could not read the request body"))?;
    if body.len() as u64 > MAX_BODY {
        return Err(PluginError::invalid_request("request body too large"));
    }
    let headers: Vec<(String, String)> =
        req.headers().iter().map(|h| (h.field.as_str().as_str().to_string(), h.value.as_str().to_string())).collect();
    let hdrs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let method = req.method().as_str().to_string();
    let url = req.url().to_string();
    let msg = Message {
        method: &method,
        authority: headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("host")).map(|(_, v)| v.trim()).unwrap_or(""),
        target: &url,
        headers: &hdrs,
        body: &body,
    };

    // 1. Everything is authenticated.
    verifier.verify(&msg).map_err(|e| PluginError::unauthorized(e.to_string()))?;

    // 2. Version negotiation: any 1.x; absent means 1.0.
    if let Some(v) = msg.header(RUNNER_API) {
        let major = v.split('.').next().unwrap_or("");
        let minor_ok = v.split_once('.').is_none_or(|(_, m)| !m.is_empty() && m.bytes().all(|c| c.is_ascii_digit()));
        if major != "1" || !minor_ok {
            return Err(PluginError::unsupported_version(&v));
        }
    }

    // 3. Deadline (epoch milliseconds).
    let deadline = match msg.header(DEADLINE) {
        None => None,
        Some(d) => Some(
            d.parse::<u64>()
                .map_err(|_| PluginError::invalid_request("AisOpsFlow-Deadline is not epoch milliseconds"))?,
        ),
    };
    if let Some(d) = deadline
        && now_ms() >= d
    {
        return Err(PluginError::deadline_exceeded("the request deadline has passed"));
    }

    // 4. Routing.
    let path = url.split('?').next().unwrap_or("");
    let is_get = *req.method() == Method::Get;
    match path {
        "/v1/health" | "/v1/info" if !is_get => Err(PluginError::method_not_allowed(format!("{path} accepts GET"))),
        "/v1/health" => health(plugin),
        "/v1/info" => Ok(json!({
            "name": plugin.name,
            "version": plugin.version,
            "runner_api_versions": SUPPORTED,
            "entrypoints": plugin.entrypoints.iter().map(|e| e.name).collect::<Vec<_>>(),
        })),
        p => {
            let Some(name) = p.strip_prefix("/v1/entrypoints/") else {
                return Err(PluginError::not_found(format!("no route for {p}")));
            };
            let Some(ep) = plugin.entrypoints.iter().find(|e| e.name == name) else {
                return Err(PluginError::not_found(format!("no entrypoint named {name:?}")));
            };
            if *req.method() != Method::Post {
                return Err(PluginError::method_not_allowed(format!("{p} accepts POST")));
            }
            call_entrypoint(ep, &body, deadline)
        }
    }
}

fn health(plugin: &Plugin) -> Result<Value, PluginError> {
    match plugin.health.map(|check| check()) {
        Some(Err(message)) => Err(PluginError::unhealthy(message)),
        _ => Ok(json!({"status": "ok"})),
    }
}

fn call_entrypoint(ep: &Entrypoint, body: &[u8], deadline: Option<u64>) -> Result<Value, PluginError> {
    let req: Value =
        serde_json::from_slice(body).map_err(|e| PluginError::invalid_request(format!("malformed JSON: {e}")))?;
    let Value::Object(mut req) = req else {
        return Err(PluginError::invalid_request("the request body must be a JSON object"));
    };
    let input = req.remove("input").unwrap_or(Value::Null);
    let config = match req.remove("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(PluginError::invalid_request("config must be an object")),
    };
    let manifest = Duration::from_millis(ep.timeout_ms);
    let (timeout, deadline_bound) = match deadline {
        Some(d) => {
            let left = Duration::from_millis(d.saturating_sub(now_ms()));
            if left < manifest { (left, true) } else { (manifest, false) }
        }
        None => (manifest, false),
    };
    if timeout.is_zero() {
        return Err(PluginError::deadline_exceeded("the request deadline has passed"));
    }
    let call = Call { input, config, timeout, deadline_bound };
    let output = (ep.handler)(&call)?;
    if let Some(d) = deadline
        && now_ms() >= d
    {
        return Err(PluginError::deadline_exceeded("the work did not finish before the deadline"));
    }
    Ok(json!({ "output": output }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_internal_errors() {
        let e = guarded(|| panic!("secret detail at src/foo.rs:12")).unwrap_err();
        assert_eq!((e.status, e.code), (500, "internal"));
        assert!(!e.body().to_string().contains("secret"));
        assert_eq!(guarded(|| Ok(json!(1))).unwrap(), json!(1));
    }

    #[test]
    fn timeout_is_min_of_manifest_and_deadline() {
        let ep = Entrypoint {
            name: "e",
            timeout_ms: 10_000,
            handler: Box::new(|c: &Call| Ok(json!([c.timeout.as_millis() as u64, c.deadline_bound]))),
        };
        let out = call_entrypoint(&ep, b"{}", Some(now_ms() + 1_000)).unwrap();
        let ms = out["output"][0].as_u64().unwrap();
        assert!(ms <= 1_000 && ms > 500, "{ms}");
        assert_eq!(out["output"][1], true);
        let out = call_entrypoint(&ep, b"{}", Some(now_ms() + 60_000)).unwrap();
        assert_eq!(out["output"], json!([10_000, false]));
        let out = call_entrypoint(&ep, b"{\"input\": 1, \"x\": 2}", None).unwrap();
        assert_eq!(out["output"], json!([10_000, false]));
    }

    #[test]
    fn failing_health_hook_answers_503_internal() {
        let mut plugin = Plugin { name: "p", version: "0", entrypoints: vec![], health: None };
        assert_eq!(health(&plugin).unwrap(), json!({"status": "ok"}));
        plugin.health = Some(|| Ok(()));
        assert_eq!(health(&plugin).unwrap(), json!({"status": "ok"}));
        plugin.health = Some(|| Err("disk full".into()));
        let e = health(&plugin).unwrap_err();
        assert_eq!(e.status, 503);
        assert_eq!(e.body(), json!({"error": {"code": "internal", "message": "disk full", "retryable": true}}));
    }

    #[test]
    fn unsupported_version_lists_supported() {
        let b = PluginError::unsupported_version("2.0").body();
        assert_eq!(b["error"]["supported"], json!(["1.0"]));
        assert_eq!(b["error"]["code"], "unsupported_version");
    }
}
