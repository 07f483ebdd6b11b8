//! Prometheus metrics for `berth serve`, at `GET /metrics`.
//!
//! This module owns what is measured and how it is exposed; it does not decide what the
//! server runs ([`crate::registry::server`] wraps its finished router with [`Metrics::instrument`]).
//!
//! - `berth_http_requests_total{method,route,status}` and
//!   `berth_http_request_duration_seconds{method,route}` (a histogram) for every request the
//!   server answers. The duration ends when the handler returns the response head: a blob
//!   streamed to the client is not timed to its last byte, an upload's body is (the handler
//!   reads it). A request whose client goes away before the response is not counted.
//! - `berth_catalog_index_documents` (plugin versions in the search index) and
//!   `berth_catalog_index_bytes` (its files), when the catalog runs.
//! - `berth_verification_queue_depth{state="queued"|"running"}`, when verification runs.
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_start_time_seconds` (Linux, from `/proc` and `getrusage`).
//!
//! The gauges are read when scraped (a [`Collector`]), so they never lag.
//!
//! **Bounded labels.** `route` is a template, never the raw path: axum's matched route
//! (`/api/v1/plugins/{publisher}/{name}`), except for `/v2/…`, which is one catch-all route
//! the registry dispatches itself — there the distribution-spec endpoint that
//! [`crate::registry::route`] (the dispatcher's own parser) finds in the path, such as
//! `/v2/{name}/manifests/{reference}`. A request no route takes is `unmatched`, a method
//! outside the standard ones `other`.
//!
//! **Format.** Prometheus text 0.0.4, or OpenMetrics 1.0 text when the scraper's `Accept`
//! asks for `application/openmetrics-text` (Prometheus does), each with its `Content-Type`.
//!
//! **Access.** Scrapes from loopback need no credentials; from elsewhere, any valid registry
//! credential (Basic, or a bearer token from `/token`), otherwise `401` with the registry's
//! challenge. Behind a reverse proxy on the same host every client looks local, as for the
//! registry's protected mode.

use crate::catalog::index::CatalogIndex;
use crate::registry::{Registry, Route};
use crate::verify::queue::Queue;
use axum::Router;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry as MetricRegistry, Unit};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `Content-Type` of Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The `route` of a request no route takes.
pub const UNMATCHED: &str = "unmatched";

/// Latency buckets in seconds: Prometheus's defaults, one finer step at the bottom (most
/// registry reads take well under 5 ms) and two coarser ones at the top (large uploads).
const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Cow<'static, str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Cow<'static, str>,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// What the scrape-time gauges read: each is shown only when its part of the server runs.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub queue: Option<Arc<Queue>>,
    pub index: Option<Arc<CatalogIndex>>,
}

/// The server's metrics. Share it behind an `Arc`; [`Metrics::instrument`] does.
pub struct Metrics {
    metrics: MetricRegistry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    /// Whose credentials let a non-local client scrape.
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("metrics", &self.metrics).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric; `sources` feed the gauges read at scrape time.
    pub fn new(registry: Arc<Registry>, sources: Sources) -> Arc<Metrics> {
        let mut metrics = MetricRegistry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        metrics.register(
            "berth_http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let durations: HistogramFamily = Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        metrics.register_with_unit(
            "berth_http_request_duration",
            "Time from a request's arrival to its response head, by method and route",
            Unit::Seconds,
            durations.clone(),
        );
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        metrics.register_collector(Box::new(ScrapeTime { sources, started }));
        Arc::new(Metrics { metrics, requests, durations, registry })
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &'static str, route: Cow<'static, str>, status: u16, elapsed: Duration) {
        self.durations.get_or_create(&RouteLabels { method, route: route.clone() }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }

    /// Every metric in OpenMetrics text (`openmetrics`) or Prometheus text 0.0.4. Reads the
    /// queue database and the index directory: call it off the async threads.
    pub fn encode(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.metrics)?;
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.metrics)?;
        }
        Ok(out)
    }

    /// `app` with `GET /metrics` added and every request, that one included, measured.
    pub fn instrument(self: &Arc<Self>, app: Router) -> Router {
        app.route("/metrics", axum::routing::get(scrape).with_state(Arc::clone(self)))
            .layer(axum::middleware::from_fn_with_state(Arc::clone(self), track))
    }
}

async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = route_label(req.extensions().get::<MatchedPath>().map(MatchedPath::as_str), req.uri().path());
    let response = next.run(req).await;
    metrics.observe(method, route, response.status().as_u16(), start.elapsed());
    response
}

async fn scrape(State(metrics): State<Arc<Metrics>>, req: Request) -> Response {
    let ext = req.extensions();
    // The connection's address, or `MockConnectInfo`'s in tests without a socket.
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| ext.get::<MockConnectInfo<SocketAddr>>().map(|m| m.0));
    let local = peer.is_some_and(|p| is_loopback(p.ip()));
    let headers = req.headers();
    if !local && !metrics.registry.auth.authenticated(header_str(headers, header::AUTHORIZATION)) {
        let challenge = metrics.registry.auth.base_challenge(header_str(headers, header::HOST));
        let mut r = (StatusCode::UNAUTHORIZED, "metrics: credentials required\n").into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return r;
    }
    let openmetrics = wants_openmetrics(headers);
    let m = Arc::clone(&metrics);
    match tokio::task::spawn_blocking(move || m.encode(openmetrics)).await {
        Ok(Ok(body)) => {
            let content_type = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { TEXT_CONTENT_TYPE };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "metrics: encoding failed\n").into_response(),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Loopback, including `::ffff:127.0.0.1` (an IPv4 client of a dual-stack socket).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Whether `Accept` names OpenMetrics text (Prometheus sends it first, 0.0.4 as fallback).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            params.next().is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"))
                && !params.any(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f64>().ok()) == Some(0.0))
        })
    })
}

/// The standard method's name, or `other`: clients may send any token as a method.
pub fn method_label(method: &Method) -> &'static str {
    METHODS.into_iter().find(|m| *m == method.as_str()).unwrap_or("other")
}

/// The `route` label of a request: its matched route template, the registry endpoint for
/// `/v2/…` (see [`registry_route`]), or [`UNMATCHED`].
pub fn route_label(matched: Option<&str>, path: &str) -> Cow<'static, str> {
    match matched {
        None => Cow::Borrowed(UNMATCHED),
        Some(m) if m == "/v2" || m.starts_with("/v2/") => Cow::Borrowed(registry_route(path)),
        Some(m) => Cow::Owned(m.to_string()),
    }
}

/// The distribution-spec endpoint a `/v2/…` path addresses, as a template, found by the
/// registry's own dispatcher ([`crate::registry::route`]); [`UNMATCHED`] when it finds none.
pub fn registry_route(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else { return UNMATCHED };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return UNMATCHED;
    }
    match crate::registry::route(rest) {
        Some(Route::Base) => "/v2/",
        Some(Route::Catalog) => "/v2/_catalog",
        Some(Route::Tags { .. }) => "/v2/{name}/tags/list",
        Some(Route::Manifest { .. }) => "/v2/{name}/manifests/{reference}",
        Some(Route::Blob { .. }) => "/v2/{name}/blobs/{digest}",
        Some(Route::UploadStart { .. }) => "/v2/{name}/blobs/uploads/",
        Some(Route::Upload { .. }) => "/v2/{name}/blobs/uploads/{reference}",
        Some(Route::Referrers { .. }) => "/v2/{name}/referrers/{digest}",
        None => UNMATCHED,
    }
}

/// The gauges read when scraped.
#[derive(Debug)]
struct ScrapeTime {
    sources: Sources,
    /// Unix seconds when the metrics were set up, i.e. the server's start.
    started: f64,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(index) = &self.sources.index {
            match index.len() {
                Ok(n) => gauge(
                    &mut encoder,
                    "berth_catalog_index_documents",
                    "Plugin versions in the catalog's search index",
                    None,
                    n,
                )?,
                Err(e) => tracing::warn!("metrics: reading the catalog index: {e}"),
            }
            let bytes = index.size_on_disk();
            gauge(&mut encoder, "berth_catalog_index", "Size of the catalog index's files", Some(&Unit::Bytes), bytes)?;
        }
        if let Some(queue) = &self.sources.queue {
            match queue.depth() {
                Ok(depth) => {
                    let mut family = encoder.encode_descriptor(
                        "berth_verification_queue_depth",
                        "Verification jobs waiting (queued) and being run (running)",
                        None,
                        MetricType::Gauge,
                    )?;
                    for (state, n) in [("queued", depth.queued), ("running", depth.running)] {
                        let labels = [("state", state)];
                        ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
                Err(e) => tracing::warn!("metrics: reading the verification queue: {e}"),
            }
        }
        process(&mut encoder, self.started)
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// The usual `process_*` metrics, those that are cheap to read; any that cannot be read is
/// left out.
fn process(encoder: &mut DescriptorEncoder, started: f64) -> Result<(), std::fmt::Error> {
    if let Some(cpu) = cpu_seconds() {
        let counter = ConstCounter::new(cpu);
        counter.encode(encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;
    }
    if let Some(rss) = resident_bytes() {
        gauge(encoder, "process_resident_memory", "Resident memory size", Some(&Unit::Bytes), rss)?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(encoder, "process_open_fds", "Open file descriptors", None, fds.count() as u64)?;
    }
    if let Some(max) = max_fds() {
        gauge(encoder, "process_max_fds", "Limit on open file descriptors", None, max)?;
    }
    gauge(
        encoder,
        "process_start_time",
        "Start time of the process since the Unix epoch",
        Some(&Unit::Seconds),
        started,
    )
}

fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which is valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it initialized the struct (zeroed is valid anyway).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(secs(usage.ru_utime) + secs(usage.ru_stime))
}

fn resident_bytes() -> Option<u64> {
    // `/proc/self/statm`: total and resident size in pages, then more.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes an `rlimit` into the pointer it is given, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    // RLIM_INFINITY has no useful number to show.
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_paths_are_classified_by_endpoint() {
        let cases = [
            ("/v2", "/v2/"),
            ("/v2/", "/v2/"),
            ("/v2/_catalog", "/v2/_catalog"),
            ("/v2/acme/tools/json-transform/tags/list", "/v2/{name}/tags/list"),
            ("/v2/acme/p/manifests/1.0.0", "/v2/{name}/manifests/{reference}"),
            ("/v2/a/b/c/manifests/sha256:0123", "/v2/{name}/manifests/{reference}"),
            ("/v2/acme/p/blobs/sha256:0123", "/v2/{name}/blobs/{digest}"),
            ("/v2/acme/p/blobs/uploads/", "/v2/{name}/blobs/uploads/"),
            ("/v2/acme/p/blobs/uploads", "/v2/{name}/blobs/uploads/"),
            ("/v2/acme/p/blobs/uploads/6f1c-4a", "/v2/{name}/blobs/uploads/{reference}"),
            ("/v2/acme/p/referrers/sha256:0123", "/v2/{name}/referrers/{digest}"),
            // A repository named like an endpoint is still split from the right.
            ("/v2/manifests/blobs/manifests/latest", "/v2/{name}/manifests/{reference}"),
            ("/v2/acme/p/nothing/here", UNMATCHED),
            ("/v2/acme", UNMATCHED),
            ("/v2x/acme/p/manifests/1", UNMATCHED),
            ("/api/v1/search", UNMATCHED),
        ];
        for (path, want) in cases {
            assert_eq!(registry_route(path), want, "{path}");
        }
    }

    #[test]
    fn route_label_uses_the_template_never_the_path() {
        assert_eq!(
            route_label(Some("/api/v1/plugins/{publisher}/{name}"), "/api/v1/plugins/acme/x"),
            "/api/v1/plugins/{publisher}/{name}"
        );
        assert_eq!(route_label(Some("/v2/{*path}"), "/v2/acme/x/blobs/sha256:00"), "/v2/{name}/blobs/{digest}");
        assert_eq!(route_label(Some("/v2"), "/v2"), "/v2/");
        assert_eq!(route_label(None, "/favicon.ico"), UNMATCHED);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }

    #[test]
    fn accept_header_selects_openmetrics() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            wants_openmetrics(&h)
        };
        // What Prometheus 2.x/3.x sends.
        assert!(accept(
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        ));
        assert!(!accept("text/plain;version=0.0.4"));
        assert!(!accept("application/openmetrics-text; q=0"));
        assert!(!accept("application/openmetrics-text;version=1.0.0;q=0.0, text/plain"));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }

    #[test]
    fn counters_and_histograms_are_exposed_in_both_formats() {
        let (_dir, registry) = test_registry();
        let m = Metrics::new(registry, Sources::default());
        m.observe("GET", Cow::Borrowed("/v2/{name}/manifests/{reference}"), 200, Duration::from_millis(3));
        m.observe("GET", Cow::Borrowed("/v2/{name}/manifests/{reference}"), 404, Duration::from_millis(1));
        for openmetrics in [false, true] {
            let text = m.encode(openmetrics).unwrap();
            assert!(
                text.contains(
                    r#"berth_http_requests_total{method="GET",route="/v2/{name}/manifests/{reference}",status="200"} 1"#
                ),
                "{text}"
            );
            assert!(
                text.contains(r#"berth_http_request_duration_seconds_count{method="GET",route="/v2/{name}/manifests/{reference}"} 2"#),
                "{text}"
            );
            assert!(text.contains("process_start_time_seconds "), "{text}");
            assert_eq!(text.ends_with("# EOF\n"), openmetrics, "{text}");
        }
    }

    #[test]
    fn gauges_are_read_at_scrape_time() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(Queue::open(&dir.path().join("q.db")).unwrap());
        let index = Arc::new(CatalogIndex::in_memory().unwrap());
        let (_reg_dir, registry) = test_registry();
        let m = Metrics::new(registry, Sources { queue: Some(Arc::clone(&queue)), index: Some(index) });
        let text = m.encode(false).unwrap();
        assert!(text.contains("berth_verification_queue_depth{state=\"queued\"} 0\n"), "{text}");
        assert!(text.contains("berth_catalog_index_documents 0\n"), "{text}");
        assert!(text.contains("berth_catalog_index_bytes "), "{text}");
        queue.enqueue("sha256:00", "h/r@sha256:00", "test").unwrap();
        let text = m.encode(false).unwrap();
        assert!(text.contains("berth_verification_queue_depth{state=\"queued\"} 1\n"), "{text}");
        assert!(text.contains("berth_verification_queue_depth{state=\"running\"} 0\n"), "{text}");
    }

    #[tokio::test]
    async fn remote_scrapes_need_a_credential() {
        use crate::registry::auth::{Account, hash_password};
        use base64::Engine;
        use tower::ServiceExt;
        let (_dir, registry) = test_registry_with(|c| {
            c.auth.accounts = vec![Account {
                name: "ops".into(),
                password_hash: hash_password("pw").unwrap(),
                namespaces: vec![],
                push_only: false,
            }];
        });
        let metrics = Metrics::new(registry, Sources::default());
        let scrape = |from: [u8; 4], authorization: Option<&str>| {
            let app = metrics.instrument(Router::new()).layer(MockConnectInfo(SocketAddr::from((from, 40000))));
            let mut req = axum::http::Request::get("/metrics");
            if let Some(a) = authorization {
                req = req.header(header::AUTHORIZATION, a);
            }
            app.oneshot(req.body(axum::body::Body::empty()).unwrap())
        };
        assert_eq!(scrape([127, 0, 0, 1], None).await.unwrap().status(), StatusCode::OK);
        let denied = scrape([192, 0, 2, 7], None).await.unwrap();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert!(denied.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer realm="));
        let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops:nope"));
        assert_eq!(scrape([192, 0, 2, 7], Some(&wrong)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let right = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("ops:pw"));
        let r = scrape([192, 0, 2, 7], Some(&right)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);
        // The refused scrape was counted too, under its own route.
        let text = metrics.encode(false).unwrap();
        assert!(text.contains(r#"berth_http_requests_total{method="GET",route="/metrics",status="401"} 2"#), "{text}");
    }

    fn test_registry() -> (tempfile::TempDir, Arc<Registry>) {
        test_registry_with(|_| {})
    }

    fn test_registry_with(f: impl FnOnce(&mut crate::config::Config)) -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        f(&mut config);
        let registry = crate::registry::server::open(&config).unwrap();
        (dir, registry)
    }
}
