//! Reputation end to end: reports posted to a running `berth serve` (and sent by `berth run
//! --catalog`) show up as install and failure counts in the search API and on plugin pages,
//! and a rebuilt index keeps them, since they live in the catalog's SQLite file.

use crate::common::*;
use serde_json::{Value, json};

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{url}/api/v1/reports")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The search hit for the version `digest`, if the search finds it.
fn hit<'a>(results: &'a Value, digest: &str) -> Option<&'a Value> {
    results["hits"].as_array()?.iter().map(|h| &h["version"]).find(|v| v["digest"] == digest)
}

/// Waits until the search for `q` shows `digest` with these counts.
async fn wait_counts(url: &str, q: &str, digest: &str, installs: u64, failures: u64) -> Value {
    let what = format!("{digest}: {installs} installs, {failures} failures");
    let body = wait_for(&format!("{url}/api/v1/search?q={q}"), &what, |b| {
        hit(b, digest).is_some_and(|v| v["installs"] == installs && v["failures"] == failures)
    })
    .await;
    hit(&body, digest).unwrap().clone()
}

fn digest_of(reference: &str) -> String {
    reference.rsplit_once('@').unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_in_the_catalog_and_a_rebuild_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = first_party_config(dir.path());
    let mut server = BerthProcess::spawn(&data, &["--config", &config]);
    let host = server.url.trim_start_matches("http://").to_string();
    let reference = publish_first_party(dir.path(), &host, "json-transform");
    let digest = digest_of(&reference);
    let url = server.url.clone();
    let found = wait_for(&format!("{url}/api/v1/search?q=transform"), "json-transform, verified", |b| {
        hit(b, &digest).is_some_and(|v| v["verified"] == true)
    })
    .await;
    let v = hit(&found, &digest).unwrap();
    assert_eq!((v["installs"].as_u64(), v["failures"].as_u64()), (Some(0), Some(0)), "no reports yet: {v:#}");

    // Installs count once per runner; failures by their count.
    let install = |runner: &str| json!({"reference": reference, "event": "install", "runner_id": runner});
    for body in [install("runner-a"), install("runner-a"), install("runner-b")] {
        assert_eq!(post(&url, body).await, (202, json!({"accepted": true})));
    }
    let failure = |runner: &str, count: u64| json!({"reference": reference, "event": "failure", "runner_id": runner, "count": count});
    assert_eq!(post(&url, failure("runner-a", 2)).await.0, 202);
    assert_eq!(post(&url, json!({"reference": reference, "event": "failure", "runner_id": "runner-c"})).await.0, 202);

    // Bad reports are refused naming the field; unknown versions are not counted.
    let tagged = format!("{host}/aisopsflow/json-transform:0.1.0");
    let bad = [
        (json!({"reference": tagged, "event": "install", "runner_id": "r"}), "reference"),
        (json!({"reference": reference, "event": "crash", "runner_id": "r"}), "event"),
        (failure("r", 0), "count"),
        (failure("r", 1001), "count"),
        (json!({"reference": reference, "event": "install", "runner_id": "r", "tenant": "x"}), "tenant"),
    ];
    for (body, field) in bad {
        let (status, answer) = post(&url, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer:#}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}:")), "{body}: {message}");
    }
    let unknown = format!("{host}/aisopsflow/json-transform@sha256:{}", "0".repeat(64));
    let (status, _) = post(&url, json!({"reference": unknown, "event": "install", "runner_id": "r"})).await;
    assert_eq!(status, 404);

    // The search document and the plugin page show the counts once the burst settled.
    let v = wait_counts(&url, "transform", &digest, 2, 3).await;
    assert_eq!(v["verification"], "verified", "the refresh keeps what the registry says: {v:#}");
    let (status, page) = get_json(&format!("{url}/api/v1/plugins/aisopsflow/json-transform")).await;
    assert_eq!(status, 200);
    assert_eq!((page["latest"]["installs"].as_u64(), page["latest"]["failures"].as_u64()), (Some(2), Some(3)));
    let (status, rep) = get_json(&format!("{url}/api/v1/plugins/aisopsflow/json-transform/reputation")).await;
    assert_eq!(status, 200, "{rep:#}");
    assert_eq!(rep["issue_rate"], 1.5, "{rep:#}");
    assert_eq!(rep["versions"][0]["digest"], digest.as_str());
    assert!(rep["last_report_at"].as_str().is_some(), "{rep:#}");

    // Rebuild: restart on the same data with the index gone; the counts come back from SQLite.
    server.kill9();
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let server = BerthProcess::spawn(&data, &["--config", &config]);
    let v = wait_counts(&server.url, "transform", &digest, 2, 3).await;
    assert_eq!(v["digest"], digest.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_run_reports_its_install_once_and_its_failed_requests() {
    require_tool("runc");
    let dir = tempfile::tempdir().unwrap();
    let config = first_party_config(dir.path());
    let server = BerthProcess::spawn(&dir.path().join("data"), &["--config", &config]);
    let host = server.url.trim_start_matches("http://").to_string();
    let reference = publish_first_party(dir.path(), &host, "json-transform");
    let digest = digest_of(&reference);
    wait_counts(&server.url, "transform", &digest, 0, 0).await;
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "mode = \"first-party\"\nfirst_party_publishers = [\"aisopsflow\"]\nrequire_approval = true\napproved_digests = [\"{digest}\"]\n"
        ),
    )
    .unwrap();
    let run = |config: &'static str| {
        let (reference, catalog, dir) = (reference.clone(), server.url.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["run", &reference, "--policy", "policy.toml", "--key", "publisher.pub", "--data-dir", "rd"])
                .args(["--invoke", "transform", "--input", r#"{"first": "ada"}"#, "--config", config])
                .args(["--catalog", &catalog])
                .current_dir(dir)
                .env("BERTH_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    // Two good runs under one runner: one install.
    for _ in 0..2 {
        let out = run(r#"{"ops": [{"op": "rename", "from": "first", "to": "name"}]}"#).await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&ok(&out, "berth run")).unwrap(), json!({"name": "ada"}));
    }
    let runner_id = std::fs::read_to_string(dir.path().join("rd/runner-id")).unwrap();
    assert_eq!(runner_id.trim().len(), 32, "{runner_id:?}");
    // An operation the plugin refuses: the request fails and is reported.
    let out = run(r#"{"ops": [{"op": "explode"}]}"#).await.unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_counts(&server.url, "transform", &digest, 1, 1).await;
}
