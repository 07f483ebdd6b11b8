//! Runs cases against a plugin at a base URL: builds each request (placeholders, the
//! entrypoint's example body, runner headers), signs it the runner-API way with
//! [`berth_httpsig::Signer`] (or deliberately wrongly, per the case's signing mode), sends it
//! and judges the answer against the case and the rules every answer obeys (runner API v1):
//! a non-2xx answer is `application/json` with the `ErrorBody` shape and leaks no stack trace,
//! panic text or key material.

use super::ConformanceError;
use super::case::{Area, Case, Placeholders, Signing};
use super::report::{CaseResult, Received, Report, Sent, truncate};
use crate::plugin::PluginManifest;
use base64::Engine as _;
use berth_httpsig::{Signer, unix_now};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The runner API contract whose component schemas bodies are judged against.
pub const OPENAPI: &str = include_str!("../../schemas/runner-api.v1.openapi.json");

/// `keyid` the harness signs with (the plugin verifies with its one shared key whatever the id).
const KEY_ID: &str = "runner";
/// Longest any single request may take before it counts as no answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How old an `expired` signature is: created 120 s ago with the signer's 60 s validity, so
/// its `expires` is a minute in the past — well beyond any clock skew.
const EXPIRED_AGE_SECS: u64 = 120;

/// Text in an error body that betrays a stack trace or a panic, in the languages plugins are
/// commonly written in.
const LEAK_MARKERS: &[&str] = &[
    "panicked at",
    "stack backtrace",
    "RUST_BACKTRACE",
    "Traceback (most recent call last)",
    "Exception in thread",
    "goroutine ",
    "\tat ",
    "    at ",
];

/// The plugin under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL, e.g. `http://127.0.0.1:8080` (a path prefix is kept).
    pub base_url: reqwest::Url,
    /// The shared runner API key (raw bytes).
    pub key: Vec<u8>,
    pub manifest: PluginManifest,
}

impl Target {
    pub fn new(base_url: &str, key: Vec<u8>, manifest: PluginManifest) -> Result<Target, ConformanceError> {
        let bad = |message: String| ConformanceError::BadUrl { url: base_url.to_string(), message };
        let url = reqwest::Url::parse(base_url).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("must be an http(s) URL with a host".to_string()));
        }
        Ok(Target { base_url: url, key, manifest })
    }

    /// `host[:port]` as the client sends it in `Host` (default ports left out), which is what
    /// the plugin reads as `@authority`.
    fn authority(&self) -> String {
        let host = self.base_url.host_str().unwrap_or_default();
        match self.base_url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// The request target for `path`, under the base URL's own path.
    fn target(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.path().trim_end_matches('/'))
    }
}

/// Runs every case against `target`, sequentially (replay and timing cases must not overlap
/// with others), and reports one result per case and entrypoint.
pub async fn run(target: &Target, cases: &[Case]) -> Result<Report, ConformanceError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ConformanceError::Client(e.to_string()))?;
    let mut schemas = Schemas::default();
    let mut results = Vec::new();
    for case in cases {
        let base = Placeholders {
            plugin_name: target.manifest.name.clone(),
            plugin_version: target.manifest.version.to_string(),
            entrypoint: None,
        };
        if case.per_entrypoint() {
            for (name, entrypoint) in &target.manifest.entrypoints {
                let method = serde_json::to_value(entrypoint.method)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "POST".to_string());
                let values =
                    Placeholders { entrypoint: Some((name.clone(), entrypoint.path.clone(), method)), ..base.clone() };
                let expanded = case.expand(&values)?;
                results.push(run_one(&client, target, &mut schemas, &expanded, Some(name)).await);
            }
        } else {
            let expanded = case.expand(&base)?;
            results.push(run_one(&client, target, &mut schemas, &expanded, None).await);
        }
    }
    Ok(Report {
        target: target.base_url.to_string(),
        plugin: target.manifest.name.clone(),
        version: target.manifest.version.to_string(),
        results,
    })
}

/// One prepared request: what is sent (headers already signed).
struct Prepared {
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn run_one(
    client: &reqwest::Client,
    target: &Target,
    schemas: &mut Schemas,
    case: &Case,
    entrypoint: Option<&String>,
) -> CaseResult {
    let mut result = CaseResult {
        case_id: case.id.clone(),
        area: case.area,
        description: case.description.clone(),
        entrypoint: entrypoint.cloned(),
        sent: Sent::default(),
        expected: case.expect.clone(),
        received: None,
        passed: false,
        skipped: false,
        reason: String::new(),
    };
    let prepared = match prepare(target, case, entrypoint) {
        Ok(p) => p,
        Err(Unprepared::Fail(reason)) => {
            result.reason = reason;
            return result;
        }
        Err(Unprepared::Skip(reason)) => {
            result.skipped = true;
            result.reason = reason;
            return result;
        }
    };
    result.sent =
        Sent::new(&prepared.method, &target.target(&case.request.path), &prepared.headers, &prepared.body, &target.key);

    let mut problems = Vec::new();
    if let Some(reference) = &case.expect.request_schema {
        match serde_json::from_slice::<Value>(&prepared.body) {
            Ok(body) => {
                problems.extend(schemas.check(reference, &body).err().map(|e| format!("the request sent: {e}")))
            }
            Err(e) => problems.push(format!("the request sent is not JSON ({e}), so it cannot match {reference}")),
        }
    }

    if case.request.signing == Signing::Replay {
        // The first send is the legitimate one; its answer does not matter, only that the
        // plugin has now seen the nonce.
        if let Err(e) = send(client, &prepared).await {
            result.reason = format!("the first (legitimate) send of the replayed request got no answer: {e}");
            return result;
        }
    }
    let (received, body) = match send(client, &prepared).await {
        Ok(r) => r,
        Err(e) => {
            result.reason = format!("no answer: {e}");
            return result;
        }
    };
    problems.extend(judge(target, schemas, case, &received, &body));
    result.received = Some(received.redacted(&target.key));

    if case.expect.then_still_answers {
        problems.extend(still_answers(client, target).await.err());
    }
    result.passed = problems.is_empty();
    result.reason = if result.passed { "as expected".to_string() } else { problems.join("; ") };
    result
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Builds and signs the request of `case`; an error is the reason the case fails without
/// being sent (e.g. the manifest has no example for the entrypoint).
/// Why a case's request could not be built.
enum Unprepared {
    /// The case fails without being sent.
    Fail(String),
    /// The case does not apply to this plugin.
    Skip(String),
}

impl From<String> for Unprepared {
    fn from(s: String) -> Self {
        Unprepared::Fail(s)
    }
}

impl From<&str> for Unprepared {
    fn from(s: &str) -> Self {
        Unprepared::Fail(s.to_string())
    }
}

fn prepare(target: &Target, case: &Case, entrypoint: Option<&String>) -> Result<Prepared, Unprepared> {
    let request = &case.request;
    let mut body: Vec<u8> = if let Some(raw) = &request.raw_body {
        raw.clone().into_bytes()
    } else if let Some(value) = &request.body {
        let mut value = if request.uses_failure_example() {
            let name = entrypoint.ok_or("\"$failure_example\" used by a case that runs for no entrypoint")?;
            match target.manifest.entrypoints.get(name).and_then(|e| e.failure_example.as_ref()) {
                Some(example) => example.request_body(),
                None => {
                    return Err(Unprepared::Skip(format!(
                        "the manifest declares no failure example for entrypoint {name:?} (entrypoints.{name}.failure_example)"
                    )));
                }
            }
        } else if request.uses_example() {
            let name = entrypoint.ok_or("\"$example\" used by a case that runs for no entrypoint")?;
            let example = target.manifest.entrypoints.get(name).and_then(|e| e.example.as_ref()).ok_or_else(|| {
                format!("the manifest declares no example for entrypoint {name:?} (entrypoints.{name}.example), so no valid request can be built")
            })?;
            example.request_body()
        } else {
            value.clone()
        };
        if let (Some(extra), Value::Object(map)) = (&request.merge, &mut value) {
            map.extend(extra.clone());
        }
        value.to_string().into_bytes()
    } else {
        Vec::new()
    };

    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| format!("bad method {:?}", request.method))?;
    let path = target.target(&request.path);
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(deadline) = request.deadline {
        headers.push(("AisOpsFlow-Deadline".to_string(), deadline.at(now_ms()).to_string()));
    }
    if let Some(version) = &request.runner_api {
        headers.push(("AisOpsFlow-Runner-API".to_string(), version.clone()));
    }
    if !body.is_empty() {
        headers.push(("Content-Type".to_string(), "application/json".to_string()));
    }
    for (name, value) in &request.headers {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }

    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let authority = target.authority();
    let signer = |key: &[u8]| Signer::new(key.to_vec(), KEY_ID);
    let signed = match request.signing {
        Signing::None => None,
        Signing::Valid | Signing::Replay | Signing::TamperedBody => {
            Some(signer(&target.key).sign(method.as_str(), &authority, &path, &refs, &body))
        }
        Signing::WrongKey => {
            // Derived from the real key so it can never equal it.
            let mut wrong = target.key.clone();
            wrong.extend_from_slice(b"\0conformance-wrong-key");
            Some(signer(&wrong).sign(method.as_str(), &authority, &path, &refs, &body))
        }
        Signing::Expired => {
            let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
            let created = unix_now().saturating_sub(EXPIRED_AGE_SECS);
            Some(signer(&target.key).sign_at(method.as_str(), &authority, &path, &refs, &body, created, &nonce))
        }
    };
    match signed {
        Some(Ok(s)) => headers.extend(s.headers().into_iter().map(|(k, v)| (k.to_string(), v))),
        Some(Err(e)) => return Err(format!("could not sign the request: {e}").into()),
        // Unsigned, but otherwise what a runner sends: the digest alone proves nothing.
        None if !body.is_empty() => headers.push(("Content-Digest".to_string(), berth_httpsig::content_digest(&body))),
        None => {}
    }
    if request.signing == Signing::TamperedBody {
        // Trailing whitespace keeps the JSON valid: only the digest can tell.
        body.push(b' ');
    }
    Ok(Prepared {
        method,
        url: format!("{}{}", target.base_url.as_str().trim_end_matches('/'), request.path),
        headers,
        body,
    })
}

async fn send(client: &reqwest::Client, p: &Prepared) -> Result<(Received, Vec<u8>), String> {
    let mut builder = client.request(p.method.clone(), &p.url);
    for (k, v) in &p.headers {
        builder = builder.header(k, v);
    }
    if !p.body.is_empty() {
        builder = builder.body(p.body.clone());
    }
    let started = Instant::now();
    let response = builder.send().await.map_err(|e| error_chain(&e))?;
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.bytes().await.map_err(|e| error_chain(&e))?.to_vec();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok((Received { status, headers, body: text, elapsed_ms }, body))
}

/// reqwest's top-level message hides the cause ("error sending request"); name all of it.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Every way the answer differs from what the case and the contract require.
fn judge(target: &Target, schemas: &mut Schemas, case: &Case, received: &Received, body: &[u8]) -> Vec<String> {
    let expect = &case.expect;
    let mut problems = Vec::new();
    if !expect.status.contains(received.status) {
        problems.push(format!("status {} (expected {})", received.status, expect.status));
    }
    if let Some(max) = expect.max_ms
        && received.elapsed_ms > max
    {
        problems.push(format!("answered after {} ms (at most {max} ms allowed)", received.elapsed_ms));
    }
    for (name, want) in &expect.headers {
        match received.header(name) {
            Some(v) if v.to_ascii_lowercase().contains(&want.to_ascii_lowercase()) => {}
            Some(v) => problems.push(format!("header {name}: {v:?} (expected it to contain {want:?})")),
            None => problems.push(format!("header {name} is missing (expected it to contain {want:?})")),
        }
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let is_error = !(200..300).contains(&received.status);
    if is_error {
        // The contract's rule for every error answer, whatever the case asks.
        let content_type = received.header("content-type").unwrap_or_default();
        if !content_type.to_ascii_lowercase().starts_with("application/json") {
            problems.push(format!("error answer has Content-Type {content_type:?} (must be application/json)"));
        }
        match &json {
            Some(value) => problems.extend(schemas.check("#/components/schemas/ErrorBody", value).err()),
            None => problems.push("error answer body is not JSON (must be the ErrorBody)".to_string()),
        }
        problems.extend(leak(&received.body, &target.key));
    }
    if let Some(code) = &expect.code {
        let got = json.as_ref().and_then(|v| v.pointer("/error/code"));
        if got.and_then(Value::as_str) != Some(code.as_str()) {
            let got = got.map_or_else(|| "none".to_string(), Value::to_string);
            problems.push(format!("error.code {got} (expected {code:?})"));
        }
    }
    if let Some(reference) = &expect.body_schema {
        match &json {
            Some(value) => problems.extend(schemas.check(reference, value).err()),
            None => problems.push(format!("body is not JSON, so it cannot match {reference}")),
        }
    }
    if let Some(schema) = &expect.body_matches {
        match (&json, jsonschema::draft202012::new(schema)) {
            (_, Err(e)) => problems.push(format!("the case's body_matches schema does not compile: {e}")),
            (None, Ok(_)) => problems.push("body is not JSON, so it cannot match body_matches".to_string()),
            (Some(value), Ok(validator)) => {
                let errors: Vec<String> = validator.iter_errors(value).map(|e| describe(&e)).collect();
                if !errors.is_empty() {
                    problems.push(format!("body does not match body_matches: {}", errors.join(", ")));
                }
            }
        }
    }
    problems
}

/// Stack traces, panic text or the key in an error body.
pub(crate) fn leak(body: &str, key: &[u8]) -> Option<String> {
    if let Some(marker) = LEAK_MARKERS.iter().find(|m| body.contains(*m)) {
        return Some(format!("error body leaks a stack trace or panic ({marker:?})"));
    }
    if rust_source_location(body) {
        return Some("error body leaks a source location (file.rs:line)".to_string());
    }
    key_forms(key)
        .iter()
        .any(|form| body.contains(form.as_str()))
        .then(|| "error body leaks the runner API key".to_string())
}

/// `something.rs:12` — how Rust panics and backtraces name where they happened.
fn rust_source_location(body: &str) -> bool {
    body.match_indices(".rs:").any(|(i, m)| body[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The key as it could appear in text: raw (when it is text), base64 and hex. Keys too short
/// to be told from ordinary text are not searched for (they are not worth a false alarm).
fn key_forms(key: &[u8]) -> Vec<String> {
    const MIN: usize = 8;
    if key.len() < MIN {
        return Vec::new();
    }
    let mut forms = vec![base64::engine::general_purpose::STANDARD.encode(key), hex::encode(key)];
    if let Ok(text) = std::str::from_utf8(key) {
        let text = text.trim();
        if text.len() >= MIN {
            forms.push(text.to_string());
        }
    }
    forms
}

/// Replaces every textual form of the key in `text`, so reports never carry it.
pub(crate) fn redact_key(text: &str, key: &[u8]) -> String {
    key_forms(key).iter().fold(text.to_string(), |acc, form| acc.replace(form.as_str(), "<redacted key>"))
}

/// A fresh, valid `GET /v1/health` must answer 200 `{"status":"ok"}`.
/// After a timeout case: the plugin still answers a plain signed request. It asks
/// `/v1/info` rather than `/v1/health`, so that only the timeouts area is judged here
/// (a plugin without a health endpoint fails availability, not timeouts).
async fn still_answers(client: &reqwest::Client, target: &Target) -> Result<(), String> {
    let probe: Case = serde_json::from_value(serde_json::json!({
        "id": "still-answers",
        "area": Area::Timeouts,
        "description": "the plugin still answers afterwards",
        "request": {"method": "GET", "path": "/v1/info"},
        "expect": {"status": 200}
    }))
    .map_err(|e| format!("afterwards: {e}"))?;
    let prepared = prepare(target, &probe, None).map_err(|e| match e {
        Unprepared::Fail(s) | Unprepared::Skip(s) => s,
    })?;
    let (received, _) = send(client, &prepared).await.map_err(|e| format!("afterwards: no answer: {e}"))?;
    if received.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "afterwards: GET /v1/info answered {} {}",
            received.status,
            truncate(&redact_key(&received.body, &target.key))
        ))
    }
}

/// Validators for references into the OpenAPI document, compiled once per run.
#[derive(Default)]
pub(crate) struct Schemas {
    compiled: HashMap<String, Result<jsonschema::Validator, String>>,
}

static OPENAPI_DOC: LazyLock<Result<Value, String>> =
    LazyLock::new(|| serde_json::from_str(OPENAPI).map_err(|e| e.to_string()));

impl Schemas {
    /// `Err` names what in `value` does not match the schema at `reference`
    /// (`#/components/schemas/<Name>`).
    pub(crate) fn check(&mut self, reference: &str, value: &Value) -> Result<(), String> {
        let validator = self.compiled.entry(reference.to_string()).or_insert_with(|| compile_ref(reference));
        let validator = validator.as_ref().map_err(|e| format!("schema {reference}: {e}"))?;
        let errors: Vec<String> = validator.iter_errors(value).map(|e| describe(&e)).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            let name = reference.rsplit('/').next().unwrap_or(reference);
            Err(format!("body does not match {name}: {}", errors.join(", ")))
        }
    }
}

/// A validator for one component of the OpenAPI document. The document itself is the root
/// schema (OpenAPI 3.1 schemas are JSON Schema 2020-12; its other members are unknown keywords,
/// which 2020-12 ignores), so every `$ref` inside the component resolves in place.
fn compile_ref(reference: &str) -> Result<jsonschema::Validator, String> {
    let doc = OPENAPI_DOC.as_ref().map_err(|e| format!("the OpenAPI document is not JSON: {e}"))?;
    let pointer = reference.strip_prefix('#').ok_or_else(|| format!("{reference:?} is not a local reference (#/…)"))?;
    if doc.pointer(pointer).is_none() {
        return Err(format!("{reference} is not in runner-api.v1.openapi.json"));
    }
    let mut root = doc.clone();
    if let Value::Object(map) = &mut root {
        map.insert("$ref".to_string(), Value::from(reference));
    }
    jsonschema::draft202012::new(&root).map_err(|e| e.to_string())
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let pointer = e.instance_path().as_str();
    let pointer = if pointer.is_empty() { "(body)" } else { pointer };
    let mut message = e.to_string();
    // The default text quotes the whole instance; keep a reason readable.
    if message.len() > 200 {
        message.truncate(message.char_indices().nth(200).map_or(message.len(), |(i, _)| i));
        message.push('…');
    }
    format!("{pointer}: {message}")
}
