//! Shared harness: start berth (in-process or as a child process) on 127.0.0.1:0 over a
//! temporary data directory, and small helpers that speak the distribution API.

#![allow(dead_code)]

use berth::config::Config;
use berth::oci::Digest;
use berth::registry::Registry;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// A berth server running inside the test process.
pub struct TestServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub registry: Arc<Registry>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(|_| {}).await
    }

    /// Starts a server whose configuration `f` may adjust (data_dir and listen are set).
    pub async fn with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.server.data_dir = dir.path().join("data");
        config.server.listen = "127.0.0.1:0".into();
        f(&mut config);
        let registry = berth::registry::server::open(&config).expect("open registry");
        registry.events.spawn_webhooks(&config.notifications.endpoints);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let reg = registry.clone();
        tokio::spawn(async move {
            let _ = berth::registry::server::serve(listener, reg, async {
                let _ = rx.await;
            })
            .await;
        });
        TestServer { url: format!("http://{addr}"), addr, dir, registry, shutdown: Some(tx) }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `host:port`, as OCI clients want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// berth as a child process (for tests that kill it).
pub struct BerthProcess {
    pub child: Child,
    pub url: String,
}

impl BerthProcess {
    /// `berth serve` without the first-party seed (tests publish what they need).
    pub fn spawn(data_dir: &Path, extra: &[&str]) -> BerthProcess {
        let mut args = vec!["--no-seed"];
        args.extend_from_slice(extra);
        Self::spawn_seeded(data_dir, &args)
    }

    /// `berth serve` as configured (seeding the first-party plugins by default).
    pub fn spawn_seeded(data_dir: &Path, extra: &[&str]) -> BerthProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            // BERTH_TEST_LOG=info (or debug) shows what a server under test did.
            .env("BERTH_LOG", std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("read listen line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        BerthProcess { child, url }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client")
}

pub fn sha256(data: &[u8]) -> String {
    Digest::sha256(data).to_string()
}

/// Pushes a blob monolithically (POST ?digest=); returns its digest.
pub async fn push_blob(c: &reqwest::Client, url: &str, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = c
        .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("push blob");
    assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap_or_default());
    d
}

/// An OCI image manifest over one layer (and optional subject / artifactType).
pub fn manifest(
    config: (&str, &str, usize),
    layers: &[(&str, usize)],
    artifact_type: Option<&str>,
    subject: Option<(&str, usize)>,
) -> Value {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config.0, "digest": config.1, "size": config.2},
        "layers": layers.iter().map(|(d, s)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    if let Some(a) = artifact_type {
        m["artifactType"] = json!(a);
    }
    if let Some((d, s)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d, "size": s});
    }
    m
}

/// PUTs a manifest; returns the response.
pub async fn put_manifest(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> reqwest::Response {
    c.put(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .expect("put manifest")
}

/// Pushes an image (empty config + one layer of `layer` bytes) tagged `tag`;
/// returns (manifest digest, manifest size).
pub async fn push_image(c: &reqwest::Client, url: &str, repo: &str, tag: &str, layer: &[u8]) -> (String, usize) {
    push_blob(c, url, repo, b"{}").await;
    let l = push_blob(c, url, repo, layer).await;
    let m = manifest(("application/vnd.oci.image.config.v1+json", EMPTY, 2), &[(&l, layer.len())], None, None);
    let body = serde_json::to_vec(&m).expect("json");
    let r = put_manifest(c, url, repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    (sha256(&body), body.len())
}

/// Pushes an artifact of `artifact_type` referring to `subject`; returns its digest.
pub async fn push_referrer(
    c: &reqwest::Client,
    url: &str,
    repo: &str,
    artifact_type: &str,
    subject: (&str, usize),
    payload: &[u8],
) -> String {
    push_blob(c, url, repo, b"{}").await;
    let l = push_blob(c, url, repo, payload).await;
    let m =
        manifest((berth::oci::media::OCI_EMPTY, EMPTY, 2), &[(&l, payload.len())], Some(artifact_type), Some(subject));
    let body = serde_json::to_vec(&m).expect("json");
    let d = sha256(&body);
    let r = put_manifest(c, url, repo, &d, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    d
}

/// The distribution-spec error code of a response body.
pub async fn error_code(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("error body is JSON");
    v["errors"][0]["code"].as_str().expect("errors[0].code").to_string()
}

/// Random bytes (deterministic per seed) for test content.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Fails the test when a tool the suite needs is missing: the README's test command
/// installs it, so its absence is a setup bug, not a reason to skip.
pub fn require_tool(name: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{name} is not installed; run the README's test command, which installs it");
}

/// Debian's docker-registry (CNCF distribution 2.8, no referrers API) on 127.0.0.1.
pub struct Distribution {
    child: Child,
    /// `127.0.0.1:port`
    pub host: String,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub fn start() -> Distribution {
        Self::start_with("")
    }

    /// Starts distribution with `extra` YAML appended under `http:` (e.g. TLS settings).
    pub fn start_with(http_extra: &str) -> Distribution {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n{http_extra}",
                dir.path().join("store").display()
            ),
        )
        .expect("config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker-registry");
        let err = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(err).lines();
        let host = loop {
            let line = lines.next().expect("docker-registry exited before listening").expect("read");
            if let Some(i) = line.find("listening on ") {
                let rest = &line[i + "listening on ".len()..];
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',').collect();
                break addr.replace("[::]", "127.0.0.1");
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let scheme = if http_extra.contains("tls") { "https" } else { "http" };
        Distribution { url: format!("{scheme}://{host}"), host, child, _dir: dir }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A first-party plugin's static binary, as artifacts/build-plugins.sh leaves it in
/// target/plugins/ (the README's test command runs that script first).
pub fn plugin_binary(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/plugins").join(name);
    assert!(p.exists(), "{} is missing: run artifacts/build-plugins.sh (the README's test command does)", p.display());
    p
}

/// `skopeo --insecure-policy <args>`, run to completion on a blocking thread.
pub async fn skopeo(args: Vec<String>) -> std::process::Output {
    let shown = format!("skopeo {}", args.join(" "));
    tokio::task::spawn_blocking(move || Command::new("skopeo").arg("--insecure-policy").args(&args).output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

/// Asserts that `out` succeeded, showing its output otherwise; returns its stdout.
pub fn ok(out: &std::process::Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

/// A one-file ustar archive, written by hand (deterministic: mtime 0, uid/gid 0).
pub fn tar_one(name: &str, data: &[u8]) -> Vec<u8> {
    tar_entries(&[tar_header(name, b'0', "", data.len() as u64, 0o644)], data)
}

/// One ustar header (mtime 0, uid/gid 0) for a regular file, link or device.
pub fn tar_header(name: &str, kind: u8, link: &str, size: u64, mode: u32) -> Vec<u8> {
    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{v:0w$o}", w = field.len() - 1);
        field[..s.len()].copy_from_slice(s.as_bytes());
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 0);
    h[148..156].fill(b' ');
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'3' {
        octal(&mut h[329..337], 8);
        octal(&mut h[337..345], 0);
    }
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h.to_vec()
}

/// Headers followed by `data` (for the last header), padded, and the end-of-archive blocks.
pub fn tar_entries(headers: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in headers {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The berth binary run in `dir` (warnings only; the publisher key password set).
pub fn berth_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env("BERTH_LOG", "warn")
        .env("COSIGN_PASSWORD", "test-password")
        .output()
        .expect("run berth")
}

/// `berth publish` of the first-party plugin `plugin` (artifacts/plugins) to `host` with
/// `dir/publisher.key`; returns the reference by digest.
pub fn publish_first_party(dir: &Path, host: &str, plugin: &str) -> String {
    let out = berth_in(
        dir,
        &[
            "publish",
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("artifacts/plugins")
                .join(plugin)
                .to_str()
                .unwrap(),
            "--registry",
            host,
            "--binary",
            plugin_binary(plugin).to_str().unwrap(),
            "--cargo-lock",
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock").to_str().unwrap(),
            "--key",
            "publisher.key",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&ok(&out, "berth publish")).unwrap();
    v["reference"].as_str().unwrap().to_string()
}

/// GET `url`: the status and the JSON body (`Null` when the body is not JSON).
pub async fn get_json(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `url` until it answers 200 with a body `done` accepts (bounded at 30 s; a failure
/// shows the last answer).
pub async fn wait_for(url: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, body) = get_json(url).await;
        if status == 200 && done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: gave up; last answer {last:#}");
}

/// A publisher key in `dir` (`publisher.key`/`.pub`) and a server configuration trusting it
/// for aisopsflow, verifying quickly (200 ms settle, no conformance run); returns the
/// configuration's path.
pub fn first_party_config(dir: &Path) -> String {
    ok(&berth_in(dir, &["key", "generate", "--output-prefix", "publisher"]), "key generate");
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[verification]\nsettle_ms = 200\nconformance = false\n[verification.publishers]\naisopsflow = [\"{}\"]\n",
            dir.join("publisher.pub").display()
        ),
    )
    .unwrap();
    config.to_str().unwrap().to_string()
}

/// A copy of the json-transform plugin directory published as `publisher` at `version`.
pub fn third_party_plugin(dir: &Path, publisher: &str, version: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/plugins/json-transform");
    let dst = dir.join(format!("{publisher}-json-transform-{version}"));
    std::fs::create_dir_all(&dst).unwrap();
    let mut m: Value = serde_json::from_slice(&std::fs::read(src.join("plugin.json")).unwrap()).unwrap();
    m["publisher"] = json!(publisher);
    m["version"] = json!(version);
    std::fs::write(dst.join("plugin.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    dst
}

/// `berth publish` of `plugin_dir` with json-transform's binary to `host`, signed with
/// `<dir>/<key>.key`, pushing as registry user `user`; returns the reference by digest.
pub fn publish_as(dir: &Path, host: &str, plugin_dir: &Path, key: &str, user: &str, password: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(dir)
        .env("BERTH_LOG", "warn")
        .env("COSIGN_PASSWORD", "test-password")
        .env("BERTH_REGISTRY_USER", user)
        .env("BERTH_REGISTRY_PASSWORD", password)
        .args(["publish", plugin_dir.to_str().unwrap(), "--registry", host, "--json", "--key"])
        .arg(format!("{key}.key"))
        .arg("--binary")
        .arg(plugin_binary("json-transform"))
        .arg("--cargo-lock")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&ok(&out, "berth publish")).unwrap();
    v["reference"].as_str().unwrap().to_string()
}
