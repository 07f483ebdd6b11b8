//! `berth runner`: the runner as a service with a local HTTP/JSON API (loopback only; see
//! `schemas/runner-service.v1.openapi.json`). It keeps named plugin slots, each holding an
//! installed digest and at most one running instance, and:
//!
//! - installs (`PUT /v1/plugins/{name}` with a digest-pinned reference), starts, stops,
//!   reports status and logs, and invokes entrypoints (`POST …/invoke/{entrypoint}`);
//! - checks every running instance's health on an interval and restarts one that exited or
//!   failed its checks (bounded, audited);
//! - upgrades (`POST …/upgrade`): installs the new digest, starts a new instance beside the
//!   old one, and switches only when the new one is healthy; the old one is stopped after the
//!   switch. If the new one fails, it is stopped and the old one keeps serving throughout
//!   (a rollback, audited).

use super::instance::{Exit, Installed, Instance, InvokeError, RunError, Runner};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How often and how hard the service watches its instances.
#[derive(Debug, Clone, Copy)]
pub struct Supervision {
    pub health_interval: Duration,
    /// Consecutive failed checks that make an instance unhealthy.
    pub failures_before_restart: u32,
    /// Restarts of one slot before it is left failed.
    pub max_restarts: u32,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision { health_interval: Duration::from_secs(5), failures_before_restart: 3, max_restarts: 5 }
    }
}

#[derive(Default)]
struct Slot {
    installed: Option<Installed>,
    instance: Option<Arc<Instance>>,
    /// Set by `start`, cleared by `stop`: whether the supervisor keeps it running.
    wanted: bool,
    restarts: u32,
    failures: u32,
    last_exit: Option<Exit>,
    last_error: Option<String>,
    upgrading: bool,
}

/// The service state: named slots and the runner behind them.
pub struct Service {
    runner: Arc<Runner>,
    slots: std::sync::Mutex<BTreeMap<String, Arc<Mutex<Slot>>>>,
    supervision: Supervision,
}

type Api = Arc<Service>;

/// An API error: `{"error": {"code", "message"}}` with an HTTP status.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": {"code": self.1, "message": self.2}}))).into_response()
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match &e {
            RunError::Refused { .. } => ApiError(StatusCode::FORBIDDEN, "refused", e.to_string()),
            RunError::Resolve(
                super::resolve::ResolveError::MutableTag { .. } | super::resolve::ResolveError::NoDigest(_),
            ) => ApiError(StatusCode::BAD_REQUEST, "not_pinned", e.to_string()),
            RunError::Unhealthy { .. } => ApiError(StatusCode::BAD_GATEWAY, "unhealthy", e.to_string()),
            RunError::MissingSecret { .. } => ApiError(StatusCode::CONFLICT, "missing_secret", e.to_string()),
            _ => ApiError(StatusCode::BAD_GATEWAY, "failed", e.to_string()),
        }
    }
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    if crate::plugin::is_dns_label(name) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("slot name {name:?} must be a lowercase DNS label"),
        ))
    }
}

impl Service {
    pub fn new(runner: Runner, supervision: Supervision) -> Arc<Service> {
        Arc::new(Service { runner: Arc::new(runner), slots: Default::default(), supervision })
    }

    fn slot(&self, name: &str) -> Option<Arc<Mutex<Slot>>> {
        self.slots.lock().ok()?.get(name).cloned()
    }

    fn slot_or_404(&self, name: &str) -> Result<Arc<Mutex<Slot>>, ApiError> {
        self.slot(name).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "not_found", format!("no plugin slot {name:?}")))
    }

    /// The router of the local API.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/health", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/v1/plugins", get(list))
            .route("/v1/plugins/{name}", get(status).put(install).delete(remove))
            .route("/v1/plugins/{name}/start", post(start))
            .route("/v1/plugins/{name}/stop", post(stop))
            .route("/v1/plugins/{name}/logs", get(logs))
            .route("/v1/plugins/{name}/callbacks", get(callbacks))
            .route("/v1/plugins/{name}/upgrade", post(upgrade))
            .route("/v1/plugins/{name}/invoke/{entrypoint}", post(invoke))
            .with_state(Arc::clone(self))
    }

    /// Serves the API on `listener` and supervises instances until `shutdown` resolves;
    /// then stops every instance.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let supervisor = tokio::spawn(Arc::clone(&self).supervise());
        let result = axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await;
        supervisor.abort();
        self.stop_all().await;
        result
    }

    /// Stops every running instance.
    pub async fn stop_all(&self) {
        let slots: Vec<_> = self.slots.lock().map(|s| s.values().cloned().collect()).unwrap_or_default();
        for slot in slots {
            let mut s = slot.lock().await;
            s.wanted = false;
            if let Some(i) = s.instance.take() {
                i.stop().await;
            }
        }
    }

    /// The health loop: one pass per interval over every slot that should be running.
    async fn supervise(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.supervision.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let slots: Vec<(String, Arc<Mutex<Slot>>)> = self
                .slots
                .lock()
                .map(|s| s.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect())
                .unwrap_or_default();
            for (name, slot) in slots {
                self.check(&name, &slot).await;
            }
        }
    }

    async fn check(&self, name: &str, slot: &Mutex<Slot>) {
        let mut s = slot.lock().await;
        if !s.wanted || s.upgrading {
            return;
        }
        let current = s.instance.clone();
        let problem = match &current {
            None => Some("not running".to_string()),
            Some(i) => match i.health().await {
                Ok(()) => {
                    s.failures = 0;
                    None
                }
                Err(e) => {
                    s.failures += 1;
                    let dead = i.exited().is_some();
                    (dead || s.failures >= self.supervision.failures_before_restart).then_some(e)
                }
            },
        };
        let Some(problem) = problem else { return };
        let (plugin, exit) = match &s.instance {
            Some(i) => (i.plugin.clone(), i.exited()),
            None => (name.to_string(), None),
        };
        self.record("health.failed", &plugin, json!({"slot": name, "reason": problem, "exit": exit}));
        if let Some(old) = s.instance.take() {
            old.stop().await;
            s.last_exit = old.exited();
        }
        if s.restarts >= self.supervision.max_restarts {
            s.wanted = false;
            s.last_error = Some(format!("gave up after {} restarts: {problem}", s.restarts));
            self.record("restart.abandoned", &plugin, json!({"slot": name, "restarts": s.restarts}));
            return;
        }
        s.restarts += 1;
        s.failures = 0;
        let Some(installed) = s.installed.clone() else { return };
        match self.runner.start(&installed, name).await {
            Ok(i) => {
                self.record("restart", &plugin, json!({"slot": name, "instance": i.id, "restarts": s.restarts}));
                s.instance = Some(Arc::new(i));
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.to_string()),
        }
    }

    fn record(&self, event: &str, subject: &str, details: Value) {
        if let Err(e) = self.runner.audit().append(event, subject, details) {
            tracing::error!("audit trail: {e}");
        }
    }
}

fn describe(name: &str, s: &Slot) -> Value {
    let state = match (&s.instance, s.wanted) {
        (Some(i), _) if i.exited().is_some() => "exited",
        (Some(_), _) => "running",
        (None, true) => "restarting",
        (None, false) if s.last_error.is_some() => "failed",
        (None, false) => "stopped",
    };
    let installed = s.installed.as_ref().map(|i| {
        json!({
            "reference": i.resolved.reference.to_string(),
            "digest": i.digest(),
            "plugin": format!("{}/{}", i.resolved.manifest.publisher, i.resolved.manifest.name),
            "version": i.resolved.manifest.version.to_string(),
            "decision": i.decision.parts.iter().map(|p| json!({"aspect": p.aspect, "verdict": p.verdict.to_string(), "reason": p.reason})).collect::<Vec<_>>(),
            "egress": i.decision.egress,
            "secrets": i.decision.secrets,
            "limits": {"cpu_millicores": i.decision.limits.cpu_millicores, "memory_mib": i.decision.limits.memory_mib, "pids": i.decision.limits.pids},
            "verification_report": i.resolved.report,
            "ignored_statements": i.resolved.ignored,
        })
    });
    json!({
        "name": name,
        "state": state,
        "installed": installed,
        "instance": s.instance.as_ref().map(|i| json!({"id": i.id, "digest": i.digest, "url": i.url, "exit": i.exited()})),
        "restarts": s.restarts,
        "last_exit": s.last_exit,
        "last_error": s.last_error,
    })
}

async fn list(State(svc): State<Api>) -> Json<Value> {
    let slots: Vec<(String, Arc<Mutex<Slot>>)> =
        svc.slots.lock().map(|s| s.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()).unwrap_or_default();
    let mut out = Vec::new();
    for (name, slot) in slots {
        out.push(describe(&name, &*slot.lock().await));
    }
    Json(json!({"plugins": out}))
}

async fn status(State(svc): State<Api>, UrlPath(name): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let slot = svc.slot_or_404(&name)?;
    let s = slot.lock().await;
    Ok(Json(describe(&name, &s)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceBody {
    reference: String,
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, "invalid_request", format!("request body: {e}")))
}

async fn install(
    State(svc): State<Api>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    valid_name(&name)?;
    let ReferenceBody { reference } = parse_body(&body)?;
    let slot = {
        let mut slots =
            svc.slots.lock().map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", "poisoned".into()))?;
        Arc::clone(slots.entry(name.clone()).or_default())
    };
    let mut s = slot.lock().await;
    if let Some(i) = &s.installed
        && i.resolved.reference.to_string() != reference
    {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "installed",
            format!(
                "{name} has {} installed; upgrade it (POST /v1/plugins/{name}/upgrade) or delete it first",
                i.resolved.reference
            ),
        ));
    }
    let installed = match svc.runner.install(&reference).await {
        Ok(i) => i,
        Err(e) => {
            if s.installed.is_none() && s.instance.is_none() {
                drop(s);
                if let Ok(mut slots) = svc.slots.lock() {
                    slots.remove(&name);
                }
            }
            return Err(e.into());
        }
    };
    s.installed = Some(installed);
    Ok((StatusCode::CREATED, Json(describe(&name, &s))))
}

async fn start(State(svc): State<Api>, UrlPath(name): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let slot = svc.slot_or_404(&name)?;
    let mut s = slot.lock().await;
    if s.instance.as_ref().is_some_and(|i| i.exited().is_none()) {
        return Ok(Json(describe(&name, &s)));
    }
    let installed = s
        .installed
        .clone()
        .ok_or_else(|| ApiError(StatusCode::CONFLICT, "not_installed", format!("{name} is not installed")))?;
    match svc.runner.start(&installed, &name).await {
        Ok(i) => {
            s.instance = Some(Arc::new(i));
            s.wanted = true;
            s.failures = 0;
            s.last_error = None;
            Ok(Json(describe(&name, &s)))
        }
        Err(e) => {
            s.last_error = Some(e.to_string());
            Err(e.into())
        }
    }
}

async fn stop(State(svc): State<Api>, UrlPath(name): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let slot = svc.slot_or_404(&name)?;
    let mut s = slot.lock().await;
    s.wanted = false;
    if let Some(i) = s.instance.take() {
        i.stop().await;
        s.last_exit = i.exited();
    }
    Ok(Json(describe(&name, &s)))
}

async fn remove(State(svc): State<Api>, UrlPath(name): UrlPath<String>) -> Result<StatusCode, ApiError> {
    let slot = svc.slot_or_404(&name)?;
    let mut s = slot.lock().await;
    s.wanted = false;
    if let Some(i) = s.instance.take() {
        i.stop().await;
    }
    drop(s);
    if let Ok(mut slots) = svc.slots.lock() {
        slots.remove(&name);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn logs(State(svc): State<Api>, UrlPath(name): UrlPath<String>) -> Result<String, ApiError> {
    let slot = svc.slot_or_404(&name)?;
    let s = slot.lock().await;
    Ok(s.instance.as_ref().map(|i| i.logs()).unwrap_or_default())
}

async fn callbacks(State(svc): State<Api>, UrlPath(name): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let slot = svc.slot_or_404(&name)?;
    let s = slot.lock().await;
    Ok(Json(json!({"callbacks": s.instance.as_ref().map(|i| i.callbacks()).unwrap_or_default()})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    config: Option<Value>,
}

async fn invoke(
    State(svc): State<Api>,
    UrlPath((name, entrypoint)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let InvokeBody { input, config } = if body.is_empty() { InvokeBody::default() } else { parse_body(&body)? };
    let slot = svc.slot_or_404(&name)?;
    // The slot is not held during the call: an upgrade may switch instances meanwhile.
    let instance = slot
        .lock()
        .await
        .instance
        .clone()
        .ok_or_else(|| ApiError(StatusCode::CONFLICT, "not_running", format!("{name} is not running")))?;
    match instance.invoke(&entrypoint, input, config.unwrap_or_else(|| json!({}))).await {
        Ok(output) => Ok(Json(json!({"output": output, "instance": instance.id, "digest": instance.digest}))),
        Err(e @ InvokeError::UnknownEntrypoint { .. }) => {
            Err(ApiError(StatusCode::NOT_FOUND, "unknown_entrypoint", e.to_string()))
        }
        Err(InvokeError::Plugin { status, body, .. }) => {
            Err(ApiError(StatusCode::BAD_GATEWAY, "plugin_error", json!({"status": status, "body": body}).to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::BAD_GATEWAY, "plugin_failed", e.to_string())),
    }
}

async fn upgrade(
    State(svc): State<Api>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let ReferenceBody { reference } = parse_body(&body)?;
    let slot = svc.slot_or_404(&name)?;
    let (old_digest, plugin) = {
        let mut s = slot.lock().await;
        if s.upgrading {
            return Err(ApiError(StatusCode::CONFLICT, "upgrading", format!("{name} is already being upgraded")));
        }
        let old = s.installed.as_ref().map(|i| i.digest());
        let plugin = s.instance.as_ref().map(|i| i.plugin.clone()).unwrap_or_else(|| name.clone());
        s.upgrading = true;
        (old, plugin)
    };
    // The old instance keeps serving while the new one is installed and started.
    let new = async {
        let installed = svc.runner.install(&reference).await?;
        let instance = svc.runner.start(&installed, &name).await?;
        Ok::<_, RunError>((installed, instance))
    }
    .await;
    let mut s = slot.lock().await;
    s.upgrading = false;
    match new {
        Ok((installed, instance)) => {
            let new_digest = installed.digest();
            let old = s.instance.replace(Arc::new(instance));
            s.installed = Some(installed);
            s.wanted = true;
            s.restarts = 0;
            s.failures = 0;
            s.last_error = None;
            if let Some(old) = old {
                old.stop().await;
            }
            svc.record("upgrade", &plugin, json!({"slot": name, "from": old_digest, "to": new_digest}));
            Ok(Json(describe(&name, &s)))
        }
        Err(e) => {
            svc.record(
                "upgrade.rolled_back",
                &plugin,
                json!({"slot": name, "kept": old_digest, "refused": reference, "reason": e.to_string()}),
            );
            let serving = s.instance.as_ref().map(|i| i.digest.clone());
            let mut err = ApiError::from(e);
            err.2 = format!(
                "upgrade to {reference} failed; {} keeps serving: {}",
                serving.as_deref().unwrap_or("nothing"),
                err.2
            );
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    //! Keeps `schemas/runner-service.v1.openapi.json` true to this file. axum cannot list a
    //! router's routes, so [`ROUTES`] lists them; it is checked three ways: against the text of
    //! [`Service::router`], against the live router (every path probed with every method), and
    //! against the document. The status and error codes each operation documents are compared
    //! with those its handler (and the helpers it calls) can answer, the request bodies with the
    //! Rust types they are parsed into, and the status JSON with the `Status` schema.

    use super::*;
    use crate::oci::{Digest, ImageReference};
    use crate::runner::instance::RunnerConfig;
    use crate::runner::policy::{Decision, Limits, Part, Policy, SignatureState, Verdict};
    use crate::runner::resolve::{ReportSummary, Resolved, Trust};
    use axum::body::Body;
    use axum::http::Request;
    use oci_spec::image::Descriptor;
    use std::collections::BTreeSet;
    use tower::ServiceExt;

    const DOC: &str = include_str!("../../schemas/runner-service.v1.openapi.json");
    const SOURCE: &str = include_str!("service.rs");

    /// The routes of [`Service::router`] as (method, path), copied from it.
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/v1/health"),
        ("get", "/v1/plugins"),
        ("get", "/v1/plugins/{name}"),
        ("put", "/v1/plugins/{name}"),
        ("delete", "/v1/plugins/{name}"),
        ("post", "/v1/plugins/{name}/start"),
        ("post", "/v1/plugins/{name}/stop"),
        ("get", "/v1/plugins/{name}/logs"),
        ("get", "/v1/plugins/{name}/callbacks"),
        ("post", "/v1/plugins/{name}/upgrade"),
        ("post", "/v1/plugins/{name}/invoke/{entrypoint}"),
    ];

    /// The HTTP methods an OpenAPI path item may hold, as axum's method routers are named.
    const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

    /// Helpers that answer errors of their own, called by handlers.
    const HELPERS: &[&str] = &["slot_or_404", "valid_name", "parse_body"];

    /// The runner calls whose [`RunError`] a handler turns into an answer (`From<RunError>`),
    /// with the codes of the errors each can fail with: `Runner::install` resolves, judges and
    /// pulls (no secret is read, nothing is started); `Runner::start` only starts.
    const RUNNER_CALLS: &[(&str, &[&str])] = &[
        ("svc.runner.install(", &["not_pinned", "refused", "failed"]),
        ("svc.runner.start(", &["missing_secret", "unhealthy", "failed"]),
    ];

    /// The request body types and the schemas that document them.
    const BODIES: &[(&str, &str)] = &[("ReferenceBody", "ReferenceRequest"), ("InvokeBody", "InvokeRequest")];

    /// The statuses `ApiError`s are built with here.
    const STATUSES: &[(&str, StatusCode)] = &[
        ("BAD_REQUEST", StatusCode::BAD_REQUEST),
        ("FORBIDDEN", StatusCode::FORBIDDEN),
        ("NOT_FOUND", StatusCode::NOT_FOUND),
        ("CONFLICT", StatusCode::CONFLICT),
        ("INTERNAL_SERVER_ERROR", StatusCode::INTERNAL_SERVER_ERROR),
        ("BAD_GATEWAY", StatusCode::BAD_GATEWAY),
    ];

    type Codes = BTreeSet<(u16, String)>;

    fn doc() -> Value {
        serde_json::from_str(DOC).expect("runner-service.v1.openapi.json is JSON")
    }

    /// This file without its tests.
    fn code() -> &'static str {
        let end = SOURCE.find("\n#[cfg(test)]\nmod tests").expect("the tests module");
        &SOURCE[..end]
    }

    /// The text of `fn <name>` through its closing brace (rustfmt's layout: the brace is at
    /// the indentation of the `fn` line).
    fn body(name: &str) -> &'static str {
        let code = code();
        let start = [format!("fn {name}("), format!("fn {name}<")]
            .iter()
            .find_map(|p| code.find(p.as_str()))
            .unwrap_or_else(|| panic!("no fn {name} in service.rs"));
        let line = code[..start].rfind('\n').map_or(0, |i| i + 1);
        let indent: String = code[line..].chars().take_while(|c| *c == ' ').collect();
        let end = code[start..].find(&format!("\n{indent}}}\n")).unwrap_or_else(|| panic!("the end of fn {name}"));
        &code[start..start + end]
    }

    /// `(status, code)` of every `StatusCode::<X>, "<code>"` in `text`: the `ApiError`s built there.
    fn codes_in(text: &str) -> Codes {
        let mut out = Codes::new();
        for (i, _) in text.match_indices("StatusCode::") {
            let rest = &text[i + "StatusCode::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
            let Some(after) = rest[name.len()..].trim_start().strip_prefix(',') else { continue };
            let Some(after) = after.trim_start().strip_prefix('"') else { continue };
            let code = &after[..after.find('"').expect("a closing quote")];
            let status = STATUSES
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("StatusCode::{name}: add it to STATUSES"))
                .1;
            out.insert((status.as_u16(), code.to_string()));
        }
        out
    }

    /// (method, path, handler) of each route in [`Service::router`]'s text; the handler is
    /// `None` for a closure.
    fn source_routes() -> Vec<(String, String, Option<String>)> {
        let router = body("router");
        for unknown in [".nest(", ".merge(", ".fallback(", ".route_service(", ".nest_service("] {
            assert!(!router.contains(unknown), "Service::router uses {unknown}: document it and teach this test");
        }
        let lines: Vec<&str> = router.lines().map(str::trim_start).filter(|l| l.starts_with(".route(")).collect();
        assert_eq!(lines.len(), router.matches(".route(").count(), "one `.route(` per line, please");
        let mut out = Vec::new();
        for line in lines {
            let rest = line.strip_prefix(".route(\"").expect("a literal path");
            let (path, rest) = rest.split_once('"').expect("a closing quote");
            for m in METHODS {
                for (i, _) in rest.match_indices(&format!("{m}(")) {
                    if !matches!(rest[..i].chars().last(), Some(' ' | '.')) {
                        continue;
                    }
                    let args = &rest[i + m.len() + 1..];
                    let name: String = args.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    let handler = (!name.is_empty() && args[name.len()..].starts_with(')')).then_some(name);
                    out.push((m.to_string(), path.to_string(), handler));
                }
            }
        }
        out
    }

    fn routes() -> BTreeSet<(String, String)> {
        let set: BTreeSet<_> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(set.len(), ROUTES.len(), "ROUTES has duplicates");
        set
    }

    /// Follows `$ref`s (local ones) to what they name.
    fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local references"));
                deref(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("{r} does not resolve")))
            }
            None => v,
        }
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                if METHODS.contains(&method.as_str()) {
                    out.push((method.clone(), path.clone(), op));
                }
            }
        }
        out
    }

    fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{} {path} is not documented", method.to_uppercase());
        op
    }

    /// The `(status, code)`s an operation documents: the keys of its error responses' examples.
    fn documented_errors(doc: &Value, op: &Value) -> Codes {
        let mut out = Codes::new();
        for (status, response) in op["responses"].as_object().expect("responses") {
            let status: u16 = status.parse().unwrap_or_else(|_| panic!("status {status}"));
            if status >= 400 {
                let media = &deref(doc, response)["content"]["application/json"];
                for code in media["examples"].as_object().expect("an example per error code").keys() {
                    out.insert((status, code.clone()));
                }
            }
        }
        out
    }

    /// The problems of `value` against `schema`, a schema of the document (its `$ref`s
    /// resolve in the document, which OpenAPI 3.1 lets serve as a 2020-12 schema root).
    fn problems(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
        let mut root = doc.clone();
        root["$defs"] = json!({ "under_test": schema });
        root["$ref"] = json!("#/$defs/under_test");
        let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{schema}: {e}"));
        validator.iter_errors(value).map(|e| format!("{}: {e}", e.instance_path().as_str())).collect()
    }

    fn assert_valid(doc: &Value, schema: &Value, value: &Value, what: &str) {
        let problems = problems(doc, schema, value);
        assert!(problems.is_empty(), "{what} does not match its schema: {problems:?}\n{value:#}");
    }

    #[test]
    fn routes_are_those_of_the_router_source() {
        let code = code();
        for (_, path) in ROUTES {
            assert!(code.contains(&format!(".route(\"{path}\"")), "{path} is not routed in Service::router");
        }
        let parsed: BTreeSet<_> = source_routes().into_iter().map(|(m, p, _)| (m, p)).collect();
        assert_eq!(routes(), parsed, "ROUTES is not what Service::router routes");
    }

    /// A service with an empty data directory. Nothing asked of it here reaches a registry.
    fn router(dir: &std::path::Path) -> Router {
        let config = RunnerConfig::new(dir, Policy::default(), Trust::default());
        Service::new(Runner::new(config).expect("runner"), Supervision::default()).router()
    }

    /// Sends one request; answers the status, the Content-Type and the body.
    async fn call(router: &Router, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path)
            .body(Body::from(body.to_string()))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        (status, content_type, String::from_utf8(bytes.to_vec()).expect("UTF-8"))
    }

    /// Checks an answer against what the document says `method path` answers with `status`.
    fn assert_documented(doc: &Value, method: &str, path: &str, answer: &(u16, String, String)) {
        let (status, content_type, body) = answer;
        let what = format!("{} {path} answering {status}", method.to_uppercase());
        let response = deref(doc, &operation(doc, method, path)["responses"][status.to_string()]);
        assert!(response.is_object(), "{what} is not documented: {body}");
        if content_type.is_empty() {
            assert!(response.get("content").is_none(), "{what}: documented with a body, answered none");
            return;
        }
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let media = &response["content"][media_type];
        assert!(media.is_object(), "{what}: {media_type} is not documented");
        let value = if media_type == "application/json" {
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"))
        } else {
            Value::String(body.clone())
        };
        assert_valid(doc, &media["schema"], &value, &what);
        if *status >= 400 {
            let code = value["error"]["code"].as_str().expect("an error code");
            assert!(media["examples"].get(code).is_some(), "{what}: code {code} is not documented");
        }
    }

    #[tokio::test]
    async fn the_router_answers_the_routes_and_only_them_as_documented() {
        let dir = tempfile::tempdir().expect("tempdir");
        let router = router(dir.path());
        let doc = doc();
        let routes = routes();
        let paths: BTreeSet<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
        for path in paths {
            let uri = path.replace("{name}", "nope").replace("{entrypoint}", "ep");
            for method in ["get", "put", "post", "delete", "patch"] {
                // Not JSON: the handlers that read a body refuse it, the others answer as usual.
                let answer = call(&router, method, &uri, "{").await;
                if routes.contains(&(method.to_string(), path.to_string())) {
                    assert_ne!(answer.0, 405, "{method} {uri}: routed in ROUTES, but the router refuses the method");
                    assert!(!answer.2.is_empty(), "{method} {uri}: no answer of a handler: {answer:?}");
                    assert_documented(&doc, method, path, &answer);
                } else {
                    assert_eq!(answer.0, 405, "{method} {uri}: the router has a route that ROUTES lacks: {answer:?}");
                }
            }
        }
        assert_eq!(call(&router, "get", "/v1/nothing", "").await.0, 404);

        let named = "/v1/plugins/{name}";
        for (method, path, uri, body, status, code) in [
            ("get", "/v1/health", "/v1/health", "", 200, None),
            ("get", "/v1/plugins", "/v1/plugins", "", 200, None),
            ("put", named, "/v1/plugins/Probe", r#"{"reference": "x"}"#, 400, Some("invalid_name")),
            ("put", named, "/v1/plugins/probe", r#"{"reference": "x", "tag": "1"}"#, 400, Some("invalid_request")),
            ("put", named, "/v1/plugins/probe", r#"{"reference": "127.0.0.1:1/a/b:1.0"}"#, 400, Some("not_pinned")),
            ("get", named, "/v1/plugins/probe", "", 404, Some("not_found")),
            ("delete", named, "/v1/plugins/probe", "", 404, Some("not_found")),
            (
                "post",
                "/v1/plugins/{name}/upgrade",
                "/v1/plugins/probe/upgrade",
                r#"{"reference": "127.0.0.1:1/a/b@sha256:00"}"#,
                404,
                Some("not_found"),
            ),
            (
                "post",
                "/v1/plugins/{name}/invoke/{entrypoint}",
                "/v1/plugins/probe/invoke/ep",
                "",
                404,
                Some("not_found"),
            ),
        ] {
            let answer = call(&router, method, uri, body).await;
            assert_eq!(answer.0, status, "{method} {uri}: {answer:?}");
            if let Some(code) = code {
                let value: Value = serde_json::from_str(&answer.2).expect("JSON");
                assert_eq!(value["error"]["code"], code, "{method} {uri}");
            }
            assert_documented(&doc, method, path, &answer);
        }
        // A failed first install leaves no slot behind.
        assert_eq!(call(&router, "get", "/v1/plugins", "").await.2, r#"{"plugins":[]}"#);
    }

    #[test]
    fn the_document_has_every_route_and_no_other() {
        let doc = doc();
        let version = doc["openapi"].as_str().expect("openapi");
        assert!(version.starts_with("3.1."), "openapi {version}: 3.1.x expected");
        let documented: BTreeSet<_> = operations(&doc).into_iter().map(|(m, p, _)| (m, p)).collect();
        assert_eq!(documented, routes(), "the document's operations are not the router's routes");
        // Every path parameter is declared, on the path item or the operation.
        for (method, path, op) in operations(&doc) {
            let declared: BTreeSet<String> = [&doc["paths"][&path]["parameters"], &op["parameters"]]
                .into_iter()
                .filter_map(Value::as_array)
                .flatten()
                .map(|p| deref(&doc, p))
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().expect("a parameter name").to_string())
                .collect();
            let in_path: BTreeSet<String> =
                path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).map(String::from).collect();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
        }
    }

    #[test]
    fn every_operation_is_complete_and_errors_share_one_schema() {
        let doc = doc();
        let error_body = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(error_body["properties"]["error"]["$ref"], "#/components/schemas/Error");
        let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut ids = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let what = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().filter(|s| !s.is_empty());
            assert!(ids.insert(id.unwrap_or_else(|| panic!("{what}: no operationId"))), "{what}: operationId reused");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{what}: no 2xx response");
            for (status, response) in responses {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let response = deref(&doc, response);
                let content = response["content"].as_object().expect("content");
                assert_eq!(content.keys().collect::<Vec<_>>(), ["application/json"], "{what} {status}");
                let media = &content["application/json"];
                crate::catalog::openapi::assert_error_media(&format!("{what} {status}"), media, &codes);
            }
        }
    }

    #[test]
    fn each_operation_documents_what_its_handler_answers() {
        let doc = doc();
        let from_run_error = codes_in(body("from"));
        let helper_codes: Vec<(&str, Codes)> = HELPERS.iter().map(|h| (*h, codes_in(body(h)))).collect();
        let mut reachable = Codes::new();
        for (method, path, handler) in source_routes() {
            let what = format!("{} {path}", method.to_uppercase());
            let op = operation(&doc, &method, &path);
            let responses = op["responses"].as_object().expect("responses");
            let success: Vec<&String> = responses.keys().filter(|s| s.starts_with('2')).collect();
            let Some(handler) = handler else {
                // The health closure.
                assert_eq!(success, ["200"], "{what}");
                assert!(documented_errors(&doc, op).is_empty(), "{what}: answers no errors");
                continue;
            };
            let f = body(&handler);
            let mut expected = codes_in(f);
            for (helper, codes) in &helper_codes {
                if f.contains(&format!("{helper}(")) {
                    expected.extend(codes.iter().cloned());
                }
            }
            for (call, codes) in RUNNER_CALLS {
                if f.contains(call) {
                    for code in *codes {
                        let entry = from_run_error.iter().find(|(_, c)| c == code);
                        expected.insert(entry.unwrap_or_else(|| panic!("From<RunError> has no {code}")).clone());
                    }
                }
            }
            assert_eq!(documented_errors(&doc, op), expected, "{what} ({handler}): documented error codes");
            reachable.extend(expected);

            let status = if f.contains("StatusCode::CREATED") {
                "201"
            } else if f.contains("StatusCode::NO_CONTENT") {
                "204"
            } else {
                "200"
            };
            assert_eq!(success, [status], "{what} ({handler}): success status");
            let signature = &f[..f.find(" {\n").expect("a body")];
            let returns = signature.rsplit_once("-> ").map_or("", |(_, r)| r);
            let media: Vec<&String> =
                responses[status]["content"].as_object().map(|c| c.keys().collect()).unwrap_or_default();
            let expected_media: &[&str] = if returns.contains("Json<") {
                &["application/json"]
            } else if returns.contains("String") {
                &["text/plain"]
            } else {
                &[]
            };
            assert_eq!(media, expected_media, "{what} ({handler}): success media type");

            let request = &op["requestBody"];
            if f.contains("body: axum::body::Bytes") {
                assert_eq!(request["required"], !f.contains("body.is_empty()"), "{what}: requestBody.required");
                let (_, schema) = BODIES.iter().find(|(t, _)| f.contains(t)).expect("a body type in BODIES");
                let documented = &request["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(documented, &format!("#/components/schemas/{schema}"), "{what}: request schema");
            } else {
                assert!(request.is_null(), "{what}: documents a request body its handler does not read");
            }
        }
        // Every error written in this file can be answered, and ErrorCode lists exactly those.
        let written = codes_in(code());
        assert_eq!(reachable, written, "codes built in service.rs that no route answers (a new helper?)");
        let enumerated: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(enumerated, written.iter().map(|(_, c)| c.as_str()).collect(), "ErrorCode");
    }

    fn parses<T: for<'de> Deserialize<'de>>(value: &Value) -> bool {
        parse_body::<T>(value.to_string().as_bytes()).is_ok()
    }

    fn request_schema_is<T: for<'de> Deserialize<'de>>(doc: &Value, name: &str) {
        let schema = &doc["components"]["schemas"][name];
        let properties = schema["properties"].as_object().expect("properties");
        let required: Vec<&str> =
            schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let object =
            |keys: &mut dyn Iterator<Item = &str>| Value::Object(keys.map(|k| (k.into(), json!("x"))).collect());
        assert!(parses::<T>(&object(&mut properties.keys().map(String::as_str))), "{name}: a property is no field");
        assert!(parses::<T>(&object(&mut required.iter().copied())), "{name}: a field is required but not listed");
        for missing in &required {
            let rest = object(&mut required.iter().copied().filter(|k| k != missing));
            assert!(!parses::<T>(&rest), "{name}: {missing} is listed as required but is not");
        }
        assert_eq!(schema["additionalProperties"], false, "{name}: unknown fields are refused");
        let mut extra = object(&mut properties.keys().map(String::as_str));
        extra["unknown_field"] = json!(1);
        assert!(!parses::<T>(&extra), "{name}: unknown fields are refused");
    }

    #[test]
    fn request_schemas_are_the_body_types() {
        let doc = doc();
        request_schema_is::<ReferenceBody>(&doc, "ReferenceRequest");
        request_schema_is::<InvokeBody>(&doc, "InvokeRequest");
        assert_eq!(BODIES.len(), 2, "check each of BODIES above");
    }

    fn installed() -> Installed {
        let manifest: crate::plugin::PluginManifest =
            serde_json::from_str(include_str!("../../schemas/examples/plugin-manifest/valid/minimal.json"))
                .expect("manifest");
        let image = Digest::sha256(b"image");
        let descriptor =
            |d: &Digest| Descriptor::new("application/vnd.oci.image.manifest.v1+json".into(), 2, d.to_oci());
        let part = |aspect, verdict, reason: &str| Part { aspect, verdict, reason: reason.to_string() };
        Installed {
            resolved: Resolved {
                reference: ImageReference::parse(&format!("127.0.0.1:5000/aisopsflow/json-transform@{image}"))
                    .expect("reference"),
                image: descriptor(&image),
                manifest,
                manifest_artifact: descriptor(&Digest::sha256(b"manifest")),
                signatures: SignatureState { image: true, manifest: false },
                signature_problems: vec!["plugin manifest artifact: unsigned".into()],
                lifecycle: None,
                report: Some(ReportSummary {
                    verifier: "berth-verifier".into(),
                    state: "verified".into(),
                    time: "2025-06-01T12:00:00Z".into(),
                    signed_by: "verifier-2025".into(),
                }),
                ignored: vec!["lifecycle status: ignored, not signed by a trusted key".into()],
            },
            decision: Decision {
                allowed: true,
                parts: vec![
                    part("reference", Verdict::Allow, "pinned"),
                    part("signatures", Verdict::Warn, "manifest unsigned"),
                    part("lifecycle", Verdict::Refuse, "(never in an install; here for the verdict's spelling)"),
                ],
                limits: Limits { cpu_millicores: 250, memory_mib: 64, pids: 32 },
                egress: vec!["api.example.com".into()],
                secrets: vec!["runner_api_key".into()],
            },
            rootfs: "/nonexistent".into(),
            image_config: json!({}),
            cached: false,
        }
    }

    #[test]
    fn the_status_json_matches_the_schema() {
        let doc = doc();
        let schema = json!({"$ref": "#/components/schemas/Status"});
        let exit = Exit { code: None, signal: Some(9), oom_killed: true, message: "killed: out of memory".into() };
        let slots = [
            ("stopped", Slot::default()),
            ("stopped", Slot { installed: Some(installed()), ..Slot::default() }),
            (
                "restarting",
                Slot {
                    installed: Some(installed()),
                    wanted: true,
                    restarts: 2,
                    last_exit: Some(exit.clone()),
                    last_error: Some("runc: create failed".into()),
                    ..Slot::default()
                },
            ),
            (
                "failed",
                Slot {
                    installed: Some(installed()),
                    restarts: 5,
                    last_exit: Some(Exit { code: Some(1), signal: None, oom_killed: false, message: "exited".into() }),
                    last_error: Some("gave up after 5 restarts".into()),
                    ..Slot::default()
                },
            ),
        ];
        for (state, slot) in &slots {
            let status = describe("probe", slot);
            assert_eq!(status["state"], *state);
            assert_valid(&doc, &schema, &status, &format!("describe() of a {state} slot"));
        }
        // The states describe() can say are the schema's.
        let said: BTreeSet<&str> =
            body("describe").split("=> \"").skip(1).map(|s| &s[..s.find('"').expect("a quote")]).collect();
        let listed: BTreeSet<&str> = doc["components"]["schemas"]["State"]["enum"]
            .as_array()
            .expect("State")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(said, listed, "State");
    }

    #[tokio::test]
    async fn the_error_envelope_matches_the_schema() {
        let doc = doc();
        let response =
            ApiError(StatusCode::CONFLICT, "upgrading", "probe is already being upgraded".into()).into_response();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let value: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_valid(&doc, &json!({"$ref": "#/components/schemas/ErrorBody"}), &value, "an ApiError");
    }

    #[test]
    fn the_slot_name_pattern_is_valid_name() {
        let doc = doc();
        let schema = &doc["components"]["parameters"]["SlotName"]["schema"];
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        for name in ["probe", "a", "0-x", "a-", long.as_str(), "", "-a", "Probe", "a_b", "a/b", "é", too_long.as_str()]
        {
            let by_schema = problems(&doc, schema, &json!(name)).is_empty();
            assert_eq!(by_schema, valid_name(name).is_ok(), "slot name {name:?}");
        }
    }

    #[test]
    fn every_example_matches_its_schema() {
        let doc = doc();
        let media = crate::catalog::openapi::media_with_examples(&doc);
        let mut checked = 0;
        for m in media {
            let examples = m["examples"].as_object().into_iter().flatten().map(|(k, e)| (k.as_str(), &e["value"]));
            for (name, value) in m.get("example").map(|e| ("example", e)).into_iter().chain(examples) {
                assert_valid(&doc, &m["schema"], value, &format!("example {name} of {}", m["schema"]));
                checked += 1;
            }
        }
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            for value in schema["examples"].as_array().into_iter().flatten() {
                assert_valid(&doc, &json!({"$ref": format!("#/components/schemas/{name}")}), value, name);
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} examples");
    }
}
