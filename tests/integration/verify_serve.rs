//! Verification inside a running `berth serve` (the real binary): publishing a plugin is
//! enough to get a signed report attached; a server killed mid-verification finishes the job
//! after restart; a new advisory in the OSV database flips a plugin to unverified on rescan.

use crate::common::*;
use berth::content::remote::{self, RemoteOptions};
use berth::content::{GraphTarget, TagResolver};
use berth::oci::ImageReference;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A server with verification configured: the publisher key registered, quick settling and
/// database polling. Returns the process and the config path (to restart with).
fn start(dir: &Path, conformance: bool) -> (BerthProcess, PathBuf) {
    let config = dir.join("berth.toml");
    let text = format!(
        "[verification]\nsettle_ms = 500\nvulndb_poll_seconds = 1\nconformance = {conformance}\n\
         start_timeout_ms = 3000\n\
         [verification.publishers]\naisopsflow = [\"{}\"]\n",
        dir.join("publisher.pub").display()
    );
    std::fs::write(&config, text).unwrap();
    let p = BerthProcess::spawn(&dir.join("data"), &["--config", config.to_str().unwrap()]);
    (p, config)
}

fn host(p: &BerthProcess) -> String {
    p.url.trim_start_matches("http://").to_string()
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(&berth_in(dir.path(), &["key", "generate", "--output-prefix", "publisher"]), "key generate");
    dir
}

/// Polls the status API until `done(status)` holds (bounded: a failure names the last status).
async fn wait_for(url: &str, digest: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let c = reqwest::Client::new();
    let mut last = Value::Null;
    for _ in 0..1200 {
        if let Ok(r) = c.get(format!("{url}/api/v1/verifications/{digest}")).send().await
            && r.status().is_success()
        {
            last = r.json().await.unwrap();
            if done(&last) {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: gave up waiting; last status: {last:#}");
}

/// The verification report predicates attached to `reference`, verified with the server's
/// verifier public key.
async fn reports(data: &Path, reference: &str) -> Vec<Value> {
    let pem = std::fs::read_to_string(data.join("verifier.pub")).unwrap();
    let key = berth::sign::load_public_key(&pem).unwrap();
    let r = ImageReference::parse(reference).unwrap();
    let repo = remote::open(&r, RemoteOptions::default()).unwrap();
    let image = repo.resolve(&r.digest.as_ref().unwrap().to_string()).await.unwrap();
    let found = berth::sign::verify_attestations(
        &repo as &dyn GraphTarget,
        &image,
        berth::plugin::VERIFICATION_PREDICATE_TYPE,
        &[key],
    )
    .await
    .unwrap();
    let mut out: Vec<Value> = found.into_iter().map(|a| a.statement.predicate).collect();
    out.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_running_server_yields_a_signed_verified_report() {
    require_tool("runc");
    let dir = setup();
    let (server, _) = start(dir.path(), true);
    let reference = publish_first_party(dir.path(), &host(&server), "json-transform");
    let digest = reference.rsplit_once('@').unwrap().1.to_string();
    let status = wait_for(&server.url, &digest, "verification", |s| s["latest"]["state"] == "done").await;
    assert_eq!(status["latest"]["reason"], "event");
    assert_eq!(status["last_result"]["state"], "verified", "{status:#}");
    let reports = reports(&dir.path().join("data"), &reference).await;
    assert_eq!(reports.len(), 1, "one publish, one verification, one report: {status:#}");
    let report = &reports[0];
    assert_eq!(report["state"], "verified");
    assert_eq!(report["subject"]["digest"], digest);
    let statuses: Vec<(&str, &str)> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    for (name, want) in [("schema", "pass"), ("image", "pass"), ("signatures", "pass"), ("sbom", "pass")] {
        assert!(statuses.contains(&(name, want)), "{name} should be {want}: {statuses:?}");
    }
    assert!(statuses.contains(&("conformance", "pass")), "{statuses:?}");

    // `berth verify --status` reads the same from the server.
    let out = berth_in(dir.path(), &["verify", "--status", &reference]);
    let printed: Value = serde_json::from_slice(&ok(&out, "verify --status")).unwrap();
    assert_eq!(printed["last_result"]["state"], "verified");
}

/// Publishes the sandbox-probe fixture with `env` in its image (library calls: `berth
/// publish` has no way to set image environment); returns the reference by digest.
async fn publish_probe(dir: &Path, host: &str, env: &[&str]) -> String {
    use berth::content::memory::MemoryStore;
    use berth::pack::{PackSpec, pack};
    let key =
        berth::sign::load_private_key(&std::fs::read_to_string(dir.join("publisher.key")).unwrap(), b"test-password")
            .unwrap();
    let mem = MemoryStore::new();
    let mut spec = PackSpec::new(plugin_binary("sandbox-probe"));
    spec.env = env.iter().map(|e| e.to_string()).collect();
    let image = pack(&spec, &mem, None).await.unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("tests/fixtures/plugins/sandbox-probe/plugin.json")).unwrap(),
    )
    .unwrap();
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    let sbom = berth::sbom::from_cargo_lock(&lock, "sandbox-probe", "0.1.0").unwrap();
    let r = ImageReference::parse(&format!("{host}/aisopsflow/sandbox-probe")).unwrap();
    let dst = remote::open(&r, RemoteOptions::default()).unwrap();
    berth::artifacts::publish(
        &dst,
        berth::artifacts::Publication {
            manifest,
            image_source: &mem,
            image,
            sbom: serde_json::to_vec(&sbom).unwrap(),
            registry: host.to_string(),
            key: &key,
        },
    )
    .await
    .unwrap()
    .reference
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_verification_finishes_the_job_once_after_restart() {
    require_tool("runc");
    let dir = setup();
    let data = dir.path().join("data");
    let (mut server, config) = start(dir.path(), true);
    // A plugin that never becomes healthy keeps its conformance run busy for the whole
    // start timeout (3 s here): time enough to kill the server in the middle of it.
    let reference = publish_probe(dir.path(), &host(&server), &["PROBE_UNHEALTHY=1"]).await;
    let digest = reference.rsplit_once('@').unwrap().1.to_string();
    wait_for(&server.url, &digest, "the job to start", |s| s["latest"]["state"] == "running").await;
    server.kill9();
    let server = BerthProcess::spawn(&data, &["--config", config.to_str().unwrap()]);
    let status = wait_for(&server.url, &digest, "the job after restart", |s| s["latest"]["state"] == "done").await;
    let history = status["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "one job, not a second one: {status:#}");
    assert_eq!(history[0]["attempts"], 2, "claimed before the kill and once after: {status:#}");
    let result = &status["last_result"];
    assert_eq!(result["state"], "unverified", "the probe never gets healthy: {status:#}");
    let conformance = result["checks"].as_array().unwrap().iter().find(|c| c["name"] == "conformance").unwrap();
    assert_eq!(conformance["status"], "fail");
    // Exactly one report: the run killed before attaching left none.
    let moved = format!("{}/aisopsflow/sandbox-probe@{digest}", host(&server));
    let reports = reports(&data, &moved).await;
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["state"], "unverified");
}

/// The version of `name` in the workspace's Cargo.lock.
fn locked_version(name: &str) -> String {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == format!("name = \"{name}\"") {
            return lines.next().unwrap().trim_start_matches("version = \"").trim_end_matches('"').to_string();
        }
    }
    panic!("{name} is not in Cargo.lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_advisory_flips_a_verified_plugin_to_unverified_on_rescan() {
    let dir = setup();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (server, _) = start(dir.path(), false);
    let reference = publish_first_party(dir.path(), &host(&server), "json-transform");
    let digest = reference.rsplit_once('@').unwrap().1.to_string();
    let first = wait_for(&server.url, &digest, "first verification", |s| s["latest"]["state"] == "done").await;
    assert_eq!(first["last_result"]["state"], "verified", "{first:#}");

    // An advisory against a dependency json-transform ships (serde_json, per Cargo.lock).
    let version = locked_version("serde_json");
    let osv = dir.path().join("osv");
    std::fs::create_dir_all(&osv).unwrap();
    let advisory = json!({
        "schema_version": "1.6.0",
        "id": "RUSTSEC-2099-0001",
        "modified": "2099-01-01T00:00:00Z",
        "published": "2099-01-01T00:00:00Z",
        "summary": "test advisory: serde_json mishandles everything",
        "affected": [{
            "package": {"ecosystem": "crates.io", "name": "serde_json", "purl": "pkg:cargo/serde_json"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "99.0.0"}]}]
        }],
        "database_specific": {"severity": "HIGH"}
    });
    std::fs::write(osv.join("RUSTSEC-2099-0001.json"), advisory.to_string()).unwrap();
    let out = berth_in(
        dir.path(),
        &["vulndb", "import", osv.to_str().unwrap(), "--db", data.join("vulndb.sqlite").to_str().unwrap()],
    );
    ok(&out, "vulndb import");

    let flipped = wait_for(&server.url, &digest, "the rescan", |s| {
        s["latest"]["reason"] == "rescan" && s["latest"]["state"] == "done"
    })
    .await;
    assert_eq!(flipped["last_result"]["state"], "unverified", "{flipped:#}");
    let reports = reports(&data, &reference).await;
    assert_eq!(reports.len(), 2);
    let newest = reports.last().unwrap();
    assert_eq!(newest["state"], "unverified");
    let vulns = newest["checks"].as_array().unwrap().iter().find(|c| c["name"] == "vulnerabilities").unwrap();
    assert_eq!(vulns["status"], "fail");
    let finding = &vulns["findings"][0];
    assert_eq!(finding["id"], "RUSTSEC-2099-0001");
    assert_eq!(finding["location"], format!("pkg:cargo/serde_json@{version}"));
}
