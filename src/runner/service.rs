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
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
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
            s.last_exit = old.exited();
            old.stop().await;
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
