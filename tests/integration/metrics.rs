//! `GET /metrics` of a running `berth serve`: request counters and latency histograms move by
//! exactly the requests made, labelled by route template; the catalog index and the
//! verification queue are shown as gauges; both exposition formats are served.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// One exposition sample: metric name and labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses Prometheus text 0.0.4 / OpenMetrics text samples (comments skipped; label values
/// may hold `{`, `}`, `,` and escaped quotes).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}').expect("closing brace"))),
        };
        out.insert((name, labels), value);
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {s}"),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The samples of `name`, by the values of `keys` (in that order).
fn series(samples: &Samples, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|((_, labels), v)| (keys.iter().map(|k| labels.get(*k).cloned().unwrap_or_default()).collect(), *v))
        .collect()
}

fn gauge(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples.get(&(name.to_string(), labels)).copied()
}

/// Request counts by [method, route, status], without the scrapes themselves.
fn requests(samples: &Samples) -> BTreeMap<Vec<String>, f64> {
    let mut all = series(samples, "berth_http_requests_total", &["method", "route", "status"]);
    all.retain(|k, _| k[1] != "/metrics");
    all
}

/// Histogram counts by [method, route], without the scrapes themselves.
fn durations(samples: &Samples) -> BTreeMap<Vec<String>, f64> {
    let mut all = series(samples, "berth_http_request_duration_seconds_count", &["method", "route"]);
    all.retain(|k, _| k[1] != "/metrics");
    all
}

/// What moved from `before` to `after` (series that did not move left out).
fn delta(before: &BTreeMap<Vec<String>, f64>, after: &BTreeMap<Vec<String>, f64>) -> BTreeMap<Vec<String>, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

async fn scrape(c: &reqwest::Client, url: &str) -> Samples {
    let r = c.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    parse(&r.text().await.unwrap())
}

/// Scrapes until the server has been quiet for a second — no request counted but the scrapes,
/// no verification job queued or running — so the catalog's and the verifier's own reads
/// after a push do not land among the requests a phase of the test counts.
async fn settled(c: &reqwest::Client, url: &str) -> Samples {
    let mut last = None;
    let mut quiet = 0;
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = scrape(c, url).await;
        let idle = gauge(&s, "berth_verification_queue_depth", &[("state", "queued")]) == Some(0.0)
            && gauge(&s, "berth_verification_queue_depth", &[("state", "running")]) == Some(0.0);
        let now = requests(&s);
        quiet = if idle && last.as_ref() == Some(&now) { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return s;
        }
        last = Some(now);
    }
    panic!("the server never went quiet: {last:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_show_index_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[verification]\nsettle_ms = 200\nconformance = false\n").unwrap();
    let server = BerthProcess::spawn(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let url = server.url.clone();
    let c = client();

    // Both formats, each with its content type; no credentials needed from loopback.
    let r = c.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    assert!(!r.text().await.unwrap().contains("# EOF"));
    let r = c
        .get(format!("{url}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let text = r.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE berth_http_request_duration_seconds histogram"), "{text}");

    // Writes: exactly these, whatever the catalog and the verifier read back after the push.
    let before = settled(&c, &url).await;
    let layer = bytes(7, 3000);
    let (manifest_digest, _) = push_image(&c, &url, "metrics/plain", "v1", &layer).await;
    let after_push = settled(&c, &url).await;
    let writes: BTreeMap<_, _> = delta(&requests(&before), &requests(&after_push))
        .into_iter()
        .filter(|(k, _)| k[0] != "GET" && k[0] != "HEAD")
        .collect();
    let expected_writes = BTreeMap::from([
        (key(&["POST", "/v2/{name}/blobs/uploads/", "201"]), 2.0),
        (key(&["PUT", "/v2/{name}/manifests/{reference}", "201"]), 1.0),
    ]);
    assert_eq!(writes, expected_writes);

    // Reads: every counter moves by exactly the requests made.
    let get = |path: &str| c.get(format!("{url}{path}")).header("accept", OCI_MANIFEST).send();
    let mut expected: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    let mut expect = |method: &str, route: &str, status: u16| {
        *expected.entry(key(&[method, route, &status.to_string()])).or_default() += 1.0;
    };
    for _ in 0..2 {
        assert_eq!(get("/v2/metrics/plain/manifests/v1").await.unwrap().status(), 200);
        expect("GET", "/v2/{name}/manifests/{reference}", 200);
    }
    let r = c
        .head(format!("{url}/v2/metrics/plain/manifests/{manifest_digest}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expect("HEAD", "/v2/{name}/manifests/{reference}", 200);
    assert_eq!(get("/v2/metrics/plain/manifests/missing").await.unwrap().status(), 404);
    expect("GET", "/v2/{name}/manifests/{reference}", 404);
    let r = get(&format!("/v2/metrics/plain/blobs/{}", sha256(&layer))).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), layer.len());
    expect("GET", "/v2/{name}/blobs/{digest}", 200);
    assert_eq!(get("/v2/metrics/plain/tags/list").await.unwrap().status(), 200);
    expect("GET", "/v2/{name}/tags/list", 200);
    assert_eq!(get(&format!("/v2/metrics/plain/referrers/{manifest_digest}")).await.unwrap().status(), 200);
    expect("GET", "/v2/{name}/referrers/{digest}", 200);
    assert_eq!(get("/v2/").await.unwrap().status(), 200);
    expect("GET", "/v2/", 200);
    assert_eq!(get("/v2/metrics/plain/no/such/endpoint").await.unwrap().status(), 404);
    expect("GET", "unmatched", 404);
    assert_eq!(get("/no/such/page").await.unwrap().status(), 404);
    expect("GET", "unmatched", 404);
    for q in ["json", "transform"] {
        assert_eq!(get(&format!("/api/v1/search?q={q}")).await.unwrap().status(), 200);
        expect("GET", "/api/v1/search", 200);
    }
    assert_eq!(get("/api/v1/search?limit=1000").await.unwrap().status(), 400);
    expect("GET", "/api/v1/search", 400);
    assert_eq!(get("/api/v1/plugins/nobody/nothing").await.unwrap().status(), 404);
    expect("GET", "/api/v1/plugins/{publisher}/{name}", 404);
    assert_eq!(get(&format!("/api/v1/verifications/{manifest_digest}")).await.unwrap().status(), 404);
    expect("GET", "/api/v1/verifications/{digest}", 404);

    let after = settled(&c, &url).await;
    let moved = delta(&requests(&after_push), &requests(&after));
    assert_eq!(moved, expected);
    // One latency observation per request, under the same method and route.
    let mut per_route: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for (k, n) in &expected {
        *per_route.entry(k[..2].to_vec()).or_default() += n;
    }
    assert_eq!(delta(&durations(&after_push), &durations(&after)), per_route);
    let buckets = series(&after, "berth_http_request_duration_seconds_bucket", &["method", "route", "le"]);
    for (k, n) in &durations(&after) {
        let mut inf = k.clone();
        inf.push("+Inf".to_string());
        assert_eq!(buckets.get(&inf), Some(n), "the +Inf bucket of {k:?} holds every observation");
    }
    // Raw paths never become labels.
    let routes: Vec<_> = requests(&after).into_keys().map(|k| k[1].clone()).collect();
    assert!(routes.iter().all(|r| !r.contains("metrics/plain") && !r.contains("sha256:")), "{routes:?}");

    // Gauges, read at scrape time. The index holds at least every version search can find.
    let documents = gauge(&after, "berth_catalog_index_documents", &[]).expect("index document gauge");
    let search: serde_json::Value =
        c.get(format!("{url}/api/v1/search?q=")).send().await.unwrap().json().await.unwrap();
    assert!(documents >= search["total"].as_f64().unwrap(), "{documents} documents, search: {search:#}");
    assert!(gauge(&after, "berth_catalog_index_bytes", &[]).is_some_and(|b| b > 0.0));
    assert_eq!(gauge(&after, "berth_verification_queue_depth", &[("state", "queued")]), Some(0.0));
    assert_eq!(gauge(&after, "berth_verification_queue_depth", &[("state", "running")]), Some(0.0));
    assert!(gauge(&after, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 0.0));
    assert!(gauge(&after, "process_open_fds", &[]).is_some_and(|n| n > 0.0));
    drop(server);
}
