//! The runner API v1 conformance suite against the first-party plugins (the static binaries
//! artifacts/build-plugins.sh puts in target/plugins/), through the library and through
//! `berth conformance` with JUnit output; plus hand-written case files picked up by `--cases`.

use berth::conformance::{self, Area, Target};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const KEY: &[u8] = b"conformance-integration-key\x00\x01-binary-ok";

/// A first-party plugin running on 127.0.0.1 with its key and (possibly adjusted) manifest.
struct Plugin {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    manifest: PathBuf,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Plugin {
    fn key_file(&self) -> PathBuf {
        self.dir.path().join("runner_api_key")
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts target/plugins/<name> with PLUGIN_PORT=0; its first stdout line names the port.
/// `manifest_edit` may adjust the manifest copy the suite reads (e.g. the example's upstream).
fn start(name: &str, manifest_edit: impl FnOnce(&mut Value)) -> Plugin {
    let bin = workspace().join("target/plugins").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run artifacts/build-plugins.sh (the README's test command does)",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("runner_api_key");
    std::fs::write(&key_file, KEY).unwrap();
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("artifacts/plugins").join(name).join("plugin.json")).unwrap(),
    )
    .unwrap();
    manifest_edit(&mut manifest);
    let manifest_file = dir.path().join("plugin.json");
    std::fs::write(&manifest_file, manifest.to_string()).unwrap();
    let mut child = Command::new(&bin)
        .env("PLUGIN_PORT", "0")
        .env("RUNNER_API_KEY_FILE", &key_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 =
        line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no address: {line:?}"));
    Plugin { child, url: format!("http://127.0.0.1:{port}"), dir, manifest: manifest_file }
}

/// A loopback upstream for http-probe's example, answering every request 200 "ok" (the
/// thread ends with the test process).
fn upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    base
}

fn json_transform() -> Plugin {
    start("json-transform", |_| {})
}

/// http-probe's shipped example probes its declared outbound host; here it probes a
/// loopback upstream instead, so the example request can succeed.
fn http_probe() -> Plugin {
    let base = upstream();
    start("http-probe", |m| m["entrypoints"]["probe"]["example"]["config"]["base_url"] = Value::from(base))
}

async fn run_library(p: &Plugin) -> conformance::Report {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&p.manifest).unwrap()).unwrap();
    let manifest = berth::plugin::validate(&json, None).unwrap();
    let target = Target::new(&p.url, KEY.to_vec(), manifest).unwrap();
    conformance::run(&target, &conformance::builtin_cases().unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_plugins_pass_every_case_via_the_library() {
    let cases = conformance::builtin_cases().unwrap();
    for plugin in [json_transform(), http_probe()] {
        let report = run_library(&plugin).await;
        assert!(report.is_success(), "{}", report.summary());
        // One entrypoint each: one result per case.
        assert_eq!(report.results.len(), cases.len());
        for area in Area::ALL {
            assert!(report.results.iter().any(|r| r.area == area), "{area} did not run");
        }
        let replay = report.results.iter().find(|r| r.case_id == "auth-replayed").unwrap();
        assert_eq!(replay.received.as_ref().unwrap().status, 401);
        // A plugin-side failure (http-probe's unreachable upstream) is a 5xx with the error
        // body; json-transform declares no way to fail, so that case is skipped for it.
        let failure = report.results.iter().find(|r| r.case_id == "errors-plugin-side-failure").unwrap();
        if report.plugin == "http-probe" {
            assert!(failure.passed && !failure.skipped, "{failure:?}");
            assert_eq!(failure.received.as_ref().unwrap().status, 502);
        } else {
            assert!(failure.skipped, "{failure:?}");
        }
        // What was sent is recorded, with the signature redacted.
        assert!(replay.sent.headers.iter().any(|(k, v)| k == "Signature" && v == "<redacted>"), "{:?}", replay.sent);
        assert!(replay.sent.headers.iter().any(|(k, _)| k == "Signature-Input"));
        let past = report.results.iter().find(|r| r.case_id == "timeouts-past-deadline-entrypoint").unwrap();
        assert!(past.received.as_ref().unwrap().body.contains("deadline_exceeded"));
    }
}

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap()
}

/// The value of attribute `name` in an XML start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split('"').next()
}

/// The start tags `<element ...>` in `xml`.
fn tags<'a>(xml: &'a str, element: &str) -> Vec<&'a str> {
    xml.match_indices(&format!("<{element} ")).map(|(i, _)| &xml[i..i + xml[i..].find('>').unwrap()]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_plugins_pass_every_case_via_the_cli_with_junit() {
    for plugin in [json_transform(), http_probe()] {
        let junit = plugin.dir.path().join("junit.xml");
        let out = berth(&[
            "conformance",
            &plugin.url,
            "--manifest",
            plugin.manifest.to_str().unwrap(),
            "--key-file",
            plugin.key_file().to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(" passed") && !stdout.contains("FAILED"), "{stdout}");

        let xml = std::fs::read_to_string(&junit).unwrap();
        let root = tags(&xml, "testsuites");
        assert_eq!(root.len(), 1);
        assert_eq!(attr(root[0], "failures"), Some("0"), "{xml}");
        let suites = tags(&xml, "testsuite");
        let names: Vec<&str> = suites.iter().filter_map(|t| attr(t, "name")).collect();
        assert_eq!(names, ["availability", "contract", "auth", "errors", "timeouts", "compatibility"]);
        for suite in &suites {
            assert_eq!(attr(suite, "failures"), Some("0"), "{suite}");
            assert!(attr(suite, "tests").unwrap().parse::<usize>().unwrap() >= 3, "{suite}");
        }
        let total: usize = suites.iter().map(|s| attr(s, "tests").unwrap().parse::<usize>().unwrap()).sum();
        assert_eq!(total, tags(&xml, "testcase").len());
        assert_eq!(attr(root[0], "tests"), Some(total.to_string().as_str()));
        assert!(!xml.contains("<failure"));
        // The key never reaches a report.
        assert!(!xml.contains("conformance-integration-key"));
    }
}

fn write_case(dir: &Path, file: &str, case: Value) {
    std::fs::write(dir.join(file), serde_json::to_string_pretty(&case).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_cases_are_picked_up() {
    let plugin = json_transform();
    let cases = tempfile::tempdir().unwrap();
    write_case(
        cases.path(),
        "passes.json",
        serde_json::json!({
            "id": "hand-info-names-the-plugin",
            "area": "availability",
            "description": "Written by hand: info names the plugin.",
            "request": {"method": "GET", "path": "/v1/info"},
            "expect": {"status": 200, "body_matches": {"properties": {"name": {"const": "{plugin_name}"}}}}
        }),
    );
    std::fs::create_dir(cases.path().join("nested")).unwrap();
    write_case(
        &cases.path().join("nested"),
        "fails.json",
        serde_json::json!({
            "id": "hand-deliberately-fails",
            "area": "errors",
            "description": "Written by hand: expects a teapot, which no plugin is.",
            "request": {"method": "GET", "path": "/v1/health"},
            "expect": {"status": 418}
        }),
    );
    let junit = plugin.dir.path().join("junit.xml");
    let key_file = plugin.key_file();
    let base = [
        "conformance",
        &plugin.url,
        "--manifest",
        plugin.manifest.to_str().unwrap(),
        "--key-file",
        key_file.to_str().unwrap(),
        "--cases",
        cases.path().to_str().unwrap(),
    ];

    let out = berth(&[&base[..], &["--junit", junit.to_str().unwrap()]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("FAILED hand-deliberately-fails (errors)"), "{stdout}");
    assert!(stdout.contains("status 200 (expected 418)"), "{stdout}");
    assert!(!stdout.contains("FAILED hand-info-names-the-plugin"), "{stdout}");

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(tags(&xml, "failure").len(), 1, "{xml}");
    let failing =
        tags(&xml, "testcase").into_iter().find(|t| attr(t, "name") == Some("hand-deliberately-fails")).unwrap();
    assert_eq!(attr(failing, "classname"), Some("conformance.errors"));
    assert!(xml.contains("name=\"hand-info-names-the-plugin\""), "{xml}");

    let out = berth(&[&base[..], &["--json"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    let find = |id: &str| results.iter().find(|r| r["case_id"] == id).unwrap_or_else(|| panic!("{id} did not run"));
    assert_eq!(find("hand-info-names-the-plugin")["passed"], true);
    let failed = find("hand-deliberately-fails");
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["received"]["status"], 200);
    assert_eq!(failed["expected"]["status"], 418);
    assert!(failed["reason"].as_str().unwrap().contains("expected 418"));
    assert_eq!(results.iter().filter(|r| r["passed"] == false && r["skipped"] != true).count(), 1);
    // json-transform declares no failure example: that case is skipped, and says why
    let skipped = find("errors-plugin-side-failure");
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert!(skipped["reason"].as_str().unwrap().contains("failure_example"));
    assert!(xml.contains("<skipped message="), "{xml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_starts_a_published_image_under_runc_and_runs_the_suite() {
    let s = crate::common::TestServer::start().await;
    let host = s.host();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(args)
                .current_dir(&d)
                .env("COSIGN_PASSWORD", "pw")
                .env("BERTH_LOG", "warn")
                .output()
                .unwrap();
            assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            out
        };
        run(&["key", "generate", "--output-prefix", "k"]);
        let plugin = workspace().join("artifacts/plugins/json-transform");
        let bin = workspace().join("target/plugins/json-transform");
        let lock = workspace().join("Cargo.lock");
        let published = run(&[
            "publish",
            plugin.to_str().unwrap(),
            "--registry",
            &host,
            "--binary",
            bin.to_str().unwrap(),
            "--cargo-lock",
            lock.to_str().unwrap(),
            "--key",
            "k.key",
            "--json",
        ]);
        let p: Value = serde_json::from_slice(&published.stdout).unwrap();
        let reference = p["reference"].as_str().unwrap().to_string();
        // by tag is refused: the harness runs what a digest names
        let by_tag = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["conformance", &format!("{host}/aisopsflow/json-transform:0.1.0")])
            .output()
            .unwrap();
        assert_ne!(by_tag.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&by_tag.stderr).contains("by digest"));
        let junit = d.join("report.xml");
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["conformance", &reference, "--junit", junit.to_str().unwrap()])
            .output()
            .unwrap();
        (out, std::fs::read_to_string(&junit).unwrap_or_default())
    })
    .await
    .unwrap();
    let (out, junit) = out;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("under runc"));
    let suites = tags(&junit, "testsuite");
    assert_eq!(suites.len(), 6, "{junit}");
    assert!(suites.iter().all(|t| attr(t, "failures") == Some("0")), "{junit}");
}

/// The Python plugin fixture (tests/fixtures/python_plugin.py), correct or broken in one
/// area (`--break AREA`).
fn python(brk: Option<&str>) -> Plugin {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("runner_api_key");
    std::fs::write(&key_file, KEY).unwrap();
    let manifest = dir.path().join("plugin.json");
    std::fs::copy(workspace().join("tests/fixtures/py-echo.plugin.json"), &manifest).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(workspace().join("tests/fixtures/python_plugin.py"))
        .env("PLUGIN_PORT", "0")
        .env("RUNNER_API_KEY_FILE", &key_file)
        .env_remove("PLUGIN_BREAK")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(area) = brk {
        cmd.args(["--break", area]);
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 =
        line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no address: {line:?}"));
    Plugin { child, url: format!("http://127.0.0.1:{port}"), dir, manifest }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_passes_the_same_suite() {
    let report = run_library(&python(None)).await;
    assert!(report.is_success(), "{}", report.summary());
    assert_eq!(report.skipped(), 0, "{}", report.summary());
    let failure = report.results.iter().find(|r| r.case_id == "errors-plugin-side-failure").unwrap();
    assert_eq!(failure.received.as_ref().unwrap().status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_plugin_fails_exactly_the_cases_of_its_area() {
    let mut wrong = Vec::new();
    for area in Area::ALL {
        let report = run_library(&python(Some(area.as_str()))).await;
        if report.failures().next().is_none() {
            wrong.push(format!("--break {area}: nothing failed"));
        }
        for r in report.failures().filter(|r| r.area != area) {
            wrong.push(format!("--break {area} also failed {} ({}): {}", r.case_id, r.area, r.reason));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
