//! Mode A: `berth serve` on a fresh data directory publishes the first-party seed
//! (`index/seed.json`) by itself — publisher record, images, manifests, SBOMs, signatures — so
//! the search API lists json-transform and http-probe, official and signed, verified once the
//! verifier's reports land. A restart on the same data directory publishes nothing again.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `berth serve` as [`BerthProcess::spawn`] starts it, but logging at `info` with its log
/// lines sent to the returned channel (the seed says what it did there).
fn spawn_logged(data: &Path, config: &Path) -> (BerthProcess, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .env("BERTH_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listen line");
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("URL").to_string();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{l}");
            let _ = tx.send(l);
        }
    });
    (BerthProcess { child, url }, rx)
}

/// Waits (bounded) for a log line containing `needle`; returns the lines seen until then.
fn wait_log(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let found = l.contains(needle);
                seen.push(l);
                if found {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no log line with {needle:?}; saw:\n{}", seen.join("\n"));
}

async fn get(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// What the registry holds for the seed: tags of every seeded repository, the record's
/// `latest`, and each image's referrers other than verification reports (which a verifier
/// may add at any time).
async fn registry_state(url: &str) -> Vec<(String, Value)> {
    let mut state = Vec::new();
    let latest = reqwest::Client::new()
        .head(format!("{url}/v2/berth/publishers/aisopsflow/manifests/latest"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(latest.status(), 200, "the publisher record");
    let digest = latest.headers()["docker-content-digest"].to_str().unwrap().to_string();
    state.push(("record".to_string(), Value::String(digest)));
    for repo in ["aisopsflow/json-transform", "aisopsflow/http-probe"] {
        let tags = get(&format!("{url}/v2/{repo}/tags/list")).await;
        state.push((format!("{repo} tags"), tags["tags"].clone()));
        let image = reqwest::Client::new()
            .head(format!("{url}/v2/{repo}/manifests/0.1.0"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        let digest = image.headers()["docker-content-digest"].to_str().unwrap().to_string();
        let referrers = get(&format!("{url}/v2/{repo}/referrers/{digest}")).await;
        let mut kept: Vec<Value> = referrers["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["annotations"]["dev.sigstore.bundle.predicateType"] != berth::plugin::VERIFICATION_PREDICATE_TYPE
            })
            .map(|d| d["digest"].clone())
            .collect();
        kept.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        state.push((format!("{repo}@{digest}"), Value::Array(kept)));
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_lists_the_first_party_plugins_and_a_restart_publishes_nothing() {
    let plugins = workspace().join("target/plugins");
    for p in ["json-transform", "http-probe"] {
        plugin_binary(p);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[verification]\nsettle_ms = 200\nconformance = false\n[catalog]\nseed = \"{}\"\nseed_plugins = \"{}\"\n",
            workspace().join("index/seed.json").display(),
            plugins.display()
        ),
    )
    .unwrap();

    // No other command: the seed publishes both plugins.
    let (mut server, log) = spawn_logged(&data, &config);
    wait_log(&log, "seed: published");
    wait_log(&log, "seed: published");
    let url = server.url.clone();
    let mut last = Value::Null;
    let mut listed = false;
    for _ in 0..600 {
        last = get(&format!("{url}/api/v1/search?q=")).await;
        let hits = last["hits"].as_array().cloned().unwrap_or_default();
        if last["total"] == 2 && hits.iter().all(|h| h["version"]["verified"] == true) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "both seeded plugins, verified: {last:#}");
    let mut names: Vec<&str> =
        last["hits"].as_array().unwrap().iter().map(|h| h["version"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["http-probe", "json-transform"]);
    for h in last["hits"].as_array().unwrap() {
        let v = &h["version"];
        assert_eq!((v["official"].as_bool(), v["signed"].as_bool()), (Some(true), Some(true)), "{v:#}");
        assert_eq!(v["publisher"], "aisopsflow");
    }
    let page = get(&format!("{url}/api/v1/plugins/aisopsflow/http-probe")).await;
    assert_eq!(page["latest"]["categories"], serde_json::json!(["network"]), "{page:#}");
    // The web UI lists them too.
    let html = reqwest::get(format!("{url}/")).await.unwrap().text().await.unwrap();
    for repo in ["aisopsflow/json-transform", "aisopsflow/http-probe"] {
        assert!(html.contains(&format!("data-repository=\"{repo}\"")), "{repo} on the search page:\n{html}");
    }
    let before = registry_state(&url).await;
    server.kill9();

    // A restart on the same data directory: nothing is published again.
    let (server, log) = spawn_logged(&data, &config);
    let lines = wait_log(&log, "seed: nothing to do");
    assert!(!lines.iter().any(|l| l.contains("seed: published") || l.contains("record pushed")), "{lines:#?}");
    assert_eq!(registry_state(&server.url).await, before);
    let again = get(&format!("{}/api/v1/search?q=", server.url)).await;
    let digests = |v: &Value| {
        let mut d: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["version"]["digest"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    };
    assert_eq!(digests(&again), digests(&last));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_binary_is_a_warning_and_the_server_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[verification]\nenabled = false\n[catalog]\nseed = \"{}\"\nseed_plugins = \"{}\"\n",
            workspace().join("index/seed.json").display(),
            dir.path().join("no-plugins").display()
        ),
    )
    .unwrap();
    let (server, log) = spawn_logged(&dir.path().join("data"), &config);
    let lines = wait_log(&log, "http-probe is missing");
    let warning = lines.iter().find(|l| l.contains("http-probe is missing")).unwrap();
    assert!(warning.contains("artifacts/build-plugins.sh json-transform http-probe"), "{warning}");
    assert!(warning.contains(&dir.path().join("no-plugins/http-probe").display().to_string()), "{warning}");
    // Still serving; the record is there, the plugins are not.
    let r = reqwest::get(format!("{}/v2/", server.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/v2/berth/publishers/aisopsflow/tags/list", server.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let search = get(&format!("{}/api/v1/search?q=", server.url)).await;
    assert_eq!(search["total"], 0, "{search:#}");
}
