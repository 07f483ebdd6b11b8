//! The runner end to end, with real containers (runc, as root) and a real registry: plugins
//! published to the embedded registry are resolved, verified, decided on, unpacked and
//! launched in their own network namespace; the sandbox-probe fixture
//! (tests/fixtures/plugins/sandbox-probe) reports what it can see and do from inside.

use crate::common::*;
use berth::content::memory::MemoryStore;
use berth::content::remote::{self, RemoteOptions};
use berth::content::{GraphTarget, TagResolver};
use berth::oci::ImageReference;
use berth::pack::{PackSpec, pack};
use berth::runner::audit;
use berth::runner::instance::{InvokeError, RunError, Runner, RunnerConfig};
use berth::runner::policy::{Mode, Policy};
use berth::runner::resolve::Trust;
use berth::runner::service::{Service, Supervision};
use berth::sign::{self, KeyPair};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One registry, one trusted publisher key, and a scratch directory.
struct Fixture {
    server: TestServer,
    publisher: KeyPair,
    dir: tempfile::TempDir,
}

fn key() -> KeyPair {
    sign::generate_key(b"test").expect("key")
}

async fn fixture() -> Fixture {
    require_tool("runc");
    Fixture { server: TestServer::start().await, publisher: key(), dir: tempfile::tempdir().unwrap() }
}

/// What to publish: a plugin binary, its manifest (edited), image env, and who signs.
struct Plugin<'a> {
    binary: &'a str,
    manifest: Value,
    env: Vec<String>,
    signer: Option<&'a KeyPair>,
}

fn manifest_of(binary: &str) -> Value {
    let dir = if binary == "sandbox-probe" { "tests/fixtures/plugins" } else { "artifacts/plugins" };
    let text = std::fs::read_to_string(workspace().join(dir).join(binary).join("plugin.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

impl<'a> Plugin<'a> {
    fn new(binary: &'a str) -> Plugin<'a> {
        Plugin { binary, manifest: manifest_of(binary), env: Vec::new(), signer: None }
    }
}

impl Fixture {
    /// Packs and publishes `p` (signed by the fixture's publisher key unless `p.signer` says
    /// otherwise; unsigned when `sign` is false); returns `host/publisher/name@sha256:…`.
    async fn publish(&self, p: Plugin<'_>) -> String {
        self.publish_as(p, true).await
    }

    async fn publish_as(&self, p: Plugin<'_>, signed: bool) -> String {
        let mem = MemoryStore::new();
        let mut spec = PackSpec::new(plugin_binary(p.binary));
        spec.env = p.env.clone();
        let image = pack(&spec, &mem, None).await.expect("pack");
        let repo = format!("{}/{}", p.manifest["publisher"].as_str().unwrap(), p.manifest["name"].as_str().unwrap());
        let dst = self.repo(&repo);
        if signed {
            let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
            let sbom = berth::sbom::from_cargo_lock(&lock, p.binary, "0.1.0").unwrap();
            let published = berth::artifacts::publish(
                &dst,
                berth::artifacts::Publication {
                    manifest: p.manifest.clone(),
                    image_source: &mem,
                    image,
                    sbom: serde_json::to_vec(&sbom).unwrap(),
                    registry: self.server.host(),
                    key: p.signer.unwrap_or(&self.publisher),
                },
            )
            .await
            .expect("publish");
            published.reference
        } else {
            // Image and plugin manifest artifact, no signatures.
            berth::content::copy::copy_graph(&mem, &dst, &image, &Default::default()).await.expect("copy");
            let mut m = p.manifest.clone();
            let reference = format!("{}/{repo}@{}", self.server.host(), image.digest());
            m["runtime"]["image"] = json!(reference);
            berth::artifacts::attach(
                &dst,
                &image,
                berth::plugin::PLUGIN_MANIFEST_MEDIA_TYPE,
                &serde_json::to_vec(&m).unwrap(),
                &Default::default(),
            )
            .await
            .expect("attach");
            reference
        }
    }

    fn repo(&self, repository: &str) -> remote::RemoteRepository {
        let r = ImageReference::parse(&format!("{}/{repository}", self.server.host())).unwrap();
        remote::open(&r, RemoteOptions::default()).unwrap()
    }

    /// A policy trusting this registry and first-party publisher `aisopsflow`, no approval needed.
    fn policy(&self) -> Policy {
        Policy {
            mode: Mode::FirstParty,
            first_party_publishers: vec!["aisopsflow".into()],
            allowed_registries: Some(vec![self.server.host()]),
            require_signatures: true,
            require_approval: false,
            allowed_egress: vec!["probe-target.aisopsflow.test".into()],
            allowed_secrets: vec!["runner_api_key".into(), "db_password".into()],
            ..Policy::default()
        }
    }

    fn runner(&self, policy: Policy) -> Runner {
        self.runner_with(policy, Trust { publishers: vec![self.publisher.public_key().clone()], ..Trust::default() })
    }

    fn runner_with(&self, policy: Policy, trust: Trust) -> Runner {
        let mut c = RunnerConfig::new(self.dir.path().join("runner"), policy, trust);
        let secret = self.dir.path().join("db_password");
        std::fs::write(&secret, "s3cret-value").unwrap();
        let other = self.dir.path().join("other_secret");
        std::fs::write(&other, "must-not-leak").unwrap();
        c.secrets.insert("db_password".into(), secret);
        c.secrets.insert("other_secret".into(), other);
        c.start_timeout = Duration::from_secs(15);
        Runner::new(c).expect("runner")
    }

    fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("runner/audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

fn events<'a>(all: &'a [Value], event: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_plugins_start_in_containers_and_answer_through_the_runner() {
    let fx = fixture().await;
    let runner = fx.runner(fx.policy());
    // json-transform: its manifest's example, through the runner's signed client.
    let reference = fx.publish(Plugin::new("json-transform")).await;
    let installed = runner.install(&reference).await.expect("install json-transform");
    assert!(!installed.cached);
    let instance = runner.start(&installed, "transform").await.expect("start json-transform");
    let manifest = manifest_of("json-transform");
    let (name, ep) = manifest["entrypoints"].as_object().unwrap().iter().next().unwrap();
    let example = &ep["example"];
    let out = instance.invoke(name, example["input"].clone(), example["config"].clone()).await.expect("invoke");
    if let Some(expected) = example.get("output") {
        assert_eq!(&out, expected);
    } else {
        assert!(!out.is_null());
    }
    instance.stop().await;

    // http-probe: an entrypoint that fails validation comes back as the plugin's error.
    let reference = fx.publish(Plugin::new("http-probe")).await;
    let installed = runner.install(&reference).await.expect("install http-probe");
    let instance = runner.start(&installed, "probe").await.expect("start http-probe");
    match instance.invoke("probe", json!({}), json!({})).await {
        Err(InvokeError::Plugin { status: 400, body, .. }) => assert_eq!(body["error"]["code"], "invalid_request"),
        other => panic!("expected a 400 from http-probe, got {other:?}"),
    }
    instance.stop().await;

    let all = fx.audit_events();
    assert_eq!(events(&all, "pull").len(), 2);
    assert_eq!(events(&all, "start").len(), 2);
    assert_eq!(events(&all, "stop").len(), 2);
    assert_eq!(events(&all, "request.failed").len(), 1);
    let report = audit::verify(fx.dir.path().join("runner/audit.jsonl")).expect("audit verifies");
    assert_eq!(report.records, all.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_is_non_root_read_only_filtered_isolated_and_sees_only_its_secrets() {
    let fx = fixture().await;
    let mut p = Plugin::new("sandbox-probe");
    p.manifest["secrets"] = json!(["db_password", "other_secret"]);
    let reference = fx.publish(p).await;
    let runner = fx.runner(fx.policy());
    let installed = runner.install(&reference).await.expect("install");
    assert_eq!(installed.decision.secrets, vec!["db_password".to_string()]);
    let instance = runner.start(&installed, "probe").await.expect("start");
    let who = instance.invoke("whoami", json!({}), json!({})).await.expect("whoami");
    assert_eq!(who["uid"], 65532, "{who}");
    assert_eq!(who["euid"], 65532);
    assert_eq!(who["gid"], 65532);
    assert_eq!(who["root_writable"], false, "the root filesystem must be read-only");
    assert_eq!(who["tmp_writable"], true, "/tmp is a tmpfs");
    assert_eq!(who["no_new_privs"], 1);
    assert_eq!(who["seccomp"], 2, "a seccomp filter is installed");
    assert_eq!(who["cap_eff"], "0000000000000000");
    assert_eq!(who["interfaces"], json!(["lo"]), "only loopback in the plugin's network namespace");
    // Secrets: the key and the one in scope; not the one the policy withholds.
    assert_eq!(who["secrets"], json!({"runner_api_key": "<present>", "db_password": "s3cret-value"}));
    // Environment: the image's plus what the runner sets (and HOME, which runc adds when
    // the image sets none); nothing from the host.
    let mut env: Vec<&str> = who["env"].as_object().unwrap().keys().map(String::as_str).collect();
    env.sort();
    assert_eq!(who["env"]["HOME"], "/");
    assert_eq!(
        env,
        [
            "HOME",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "NO_PROXY",
            "PATH",
            "PLUGIN_PORT",
            "RUNNER_API_KEY_FILE",
            "RUNNER_CALLBACK_URL",
            "http_proxy",
            "https_proxy"
        ]
    );
    instance.stop().await;
}

/// A loopback HTTP server answering every request with `body`; counts connections.
async fn upstream(body: &'static str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let resp =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_reaches_only_allowed_hosts_through_the_proxy_and_both_are_audited() {
    let fx = fixture().await;
    let (allowed_port, allowed_hits) = upstream("hello from the allowed host").await;
    let (other_port, other_hits) = upstream("you should not see this").await;
    let allowed = format!("localhost:{allowed_port}");
    let mut p = Plugin::new("sandbox-probe");
    p.manifest["network"]["outbound_hosts"] = json!([allowed]);
    let reference = fx.publish(p).await;
    let mut policy = fx.policy();
    policy.allowed_egress = vec![allowed.clone()];
    let runner = fx.runner(policy);
    let installed = runner.install(&reference).await.expect("install");
    assert_eq!(installed.decision.egress, vec![allowed.clone()]);
    let instance = runner.start(&installed, "probe").await.expect("start");

    let ok = instance
        .invoke("fetch", json!({"url": format!("http://{allowed}/x")}), json!({}))
        .await
        .expect("fetch allowed");
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["body"], "hello from the allowed host");

    let refused = instance
        .invoke("fetch", json!({"url": format!("http://localhost:{other_port}/x")}), json!({}))
        .await
        .expect("fetch refused answers");
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(other_hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the refused host was never contacted");
    assert_eq!(allowed_hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // No way around the proxy: the host's loopback is not the plugin's.
    let direct =
        instance.invoke("connect", json!({"addr": format!("127.0.0.1:{allowed_port}")}), json!({})).await.unwrap();
    assert_eq!(direct["connected"], false, "{direct}");
    instance.stop().await;

    let all = fx.audit_events();
    let refusals = events(&all, "egress.refused");
    assert_eq!(refusals.len(), 1, "{all:?}");
    assert_eq!(refusals[0]["details"]["host"], "localhost");
    assert_eq!(refusals[0]["details"]["port"], other_port);
    let allowed_events = events(&all, "egress.allowed");
    assert_eq!(allowed_events.len(), 1, "{all:?}");
    assert_eq!(allowed_events[0]["details"]["port"], allowed_port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_past_its_memory_limit_is_killed_and_reported() {
    let fx = fixture().await;
    let mut p = Plugin::new("sandbox-probe");
    p.manifest["resources"]["memory_mib"] = json!(32);
    let reference = fx.publish(p).await;
    let runner = fx.runner(fx.policy());
    let installed = runner.install(&reference).await.expect("install");
    assert_eq!(installed.decision.limits.memory_mib, 32);
    let instance = runner.start(&installed, "probe").await.expect("start");
    // Well within the limit: fine.
    let small = instance.invoke("alloc", json!({"mib": 4}), json!({})).await.expect("alloc 4 MiB");
    assert_eq!(small["allocated_mib"], 4);
    match instance.invoke("alloc", json!({"mib": 256}), json!({})).await {
        Err(InvokeError::Died { message, .. }) => {
            assert!(message.contains("out of memory") && message.contains("32 MiB"), "{message}")
        }
        other => panic!("expected the plugin to be OOM-killed, got {other:?}"),
    }
    let exit = instance.exited().expect("the plugin exited");
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.signal, Some(9));
    instance.stop().await;
    let all = fx.audit_events();
    let failed = events(&all, "request.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["details"]["exit"]["oom_killed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_signed_with_the_instance_key_are_taken_and_others_refused() {
    let fx = fixture().await;
    let reference = fx.publish(Plugin::new("sandbox-probe")).await;
    let runner = fx.runner(fx.policy());
    let installed = runner.install(&reference).await.expect("install");
    let instance = runner.start(&installed, "probe").await.expect("start");
    let call = |signature: &str| json!({"path": "/v1/callbacks/progress", "body": {"done": 3, "of": 7}, "signature": signature});
    let ok = instance.invoke("callback", call("valid"), json!({})).await.unwrap();
    assert_eq!(ok["status"], 202, "{ok}");
    for bad in ["none", "wrong-key"] {
        let r = instance.invoke("callback", call(bad), json!({})).await.unwrap();
        assert_eq!(r["status"], 401, "{bad}: {r}");
    }
    assert_eq!(instance.callbacks(), vec![json!({"name": "progress", "body": {"done": 3, "of": 7}})]);
    instance.stop().await;
    assert_eq!(events(&fx.audit_events(), "callback.refused").len(), 2);
}

/// The error text of a refused install (or panics).
async fn refused(runner: &Runner, reference: &str) -> String {
    match runner.install(reference).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{reference} was installed but should have been refused"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_names_its_reason_and_is_audited() {
    let fx = fixture().await;
    let signed = fx.publish(Plugin::new("sandbox-probe")).await;
    let digest = signed.rsplit_once('@').unwrap().1.to_string();
    let trust = || Trust { publishers: vec![fx.publisher.public_key().clone()], ..Trust::default() };

    // A mutable tag.
    let runner = fx.runner(fx.policy());
    let tagged = format!("{}/aisopsflow/sandbox-probe:0.1.0", fx.server.host());
    let e = refused(&runner, &tagged).await;
    assert!(e.contains("mutable") && e.contains("0.1.0"), "{e}");

    // Unsigned where signatures are required.
    let mut p = Plugin::new("sandbox-probe");
    p.env = vec!["VARIANT=unsigned".into()];
    let unsigned = fx.publish_as(p, false).await;
    let e = refused(&runner, &unsigned).await;
    assert!(e.contains("REFUSE signatures") && e.contains("not signed by a trusted key"), "{e}");

    // Signed, but by a key the runner does not know.
    let stranger = key();
    let mut p = Plugin::new("sandbox-probe");
    p.env = vec!["VARIANT=stranger".into()];
    p.signer = Some(&stranger);
    let by_stranger = fx.publish(p).await;
    let e = refused(&runner, &by_stranger).await;
    assert!(e.contains("REFUSE signatures"), "{e}");
    assert!(e.contains(stranger.public_key().key_id()), "the unknown key is named: {e}");

    // Registry not allowed.
    let mut policy = fx.policy();
    policy.allowed_registries = Some(vec!["registry.example.com".into()]);
    let e = refused(&fx.runner(policy), &signed).await;
    assert!(e.contains("REFUSE registry") && e.contains("not in allowed_registries"), "{e}");

    // Publisher denied.
    let mut policy = fx.policy();
    policy.denied_publishers = vec!["aisopsflow".into()];
    let e = refused(&fx.runner(policy), &signed).await;
    assert!(e.contains("REFUSE publisher") && e.contains("denied_publishers"), "{e}");

    // Plugin not allowed.
    let mut policy = fx.policy();
    policy.allowed_plugins = Some(vec!["aisopsflow/json-transform".into()]);
    let e = refused(&fx.runner(policy), &signed).await;
    assert!(e.contains("REFUSE plugin") && e.contains("aisopsflow/sandbox-probe"), "{e}");

    // Capability not allowed.
    let mut policy = fx.policy();
    policy.allowed_capabilities = Some(vec![berth::plugin::Capability::SecretsRead]);
    let e = refused(&fx.runner(policy), &signed).await;
    assert!(e.contains("REFUSE capabilities") && e.contains("outbound_http"), "{e}");

    // Outbound host not allowed (the probe's manifest declares probe-target.aisopsflow.test).
    let mut policy = fx.policy();
    policy.allowed_egress = vec![];
    let e = refused(&fx.runner(policy), &signed).await;
    assert!(e.contains("REFUSE egress") && e.contains("probe-target.aisopsflow.test"), "{e}");

    // Not approved by the tenant admin.
    let mut policy = fx.policy();
    policy.require_approval = true;
    policy.approved_digests = vec![format!("sha256:{}", "0".repeat(64))];
    let e = refused(&fx.runner(policy), &signed).await;
    assert!(e.contains("REFUSE approval") && e.contains(&digest), "{e}");

    // Third-party under first-party only.
    let mut p = Plugin::new("sandbox-probe");
    p.manifest["publisher"] = json!("acme");
    let third = fx.publish(p).await;
    let e = refused(&fx.runner(fx.policy()), &third).await;
    assert!(e.contains("REFUSE mode") && e.contains("third-party"), "{e}");

    // Lifecycle: insecure and removed, signed by the catalog root key.
    let root = key();
    let with_root = Trust { roots: vec![root.public_key().clone()], ..trust() };
    let ok_policy = fx.policy();
    for (status, variant) in [("insecure", "L1"), ("removed", "L2")] {
        let mut p = Plugin::new("sandbox-probe");
        p.env = vec![format!("VARIANT={variant}")];
        let reference = fx.publish(p).await;
        attach_status(&fx, &reference, status, &root).await;
        let e = refused(&fx.runner_with(ok_policy.clone(), with_root.clone()), &reference).await;
        assert!(e.contains("REFUSE lifecycle") && e.contains(&format!("status is {status}")), "{e}");
    }
    // An unsigned (or foreign-signed) status is ignored: a referrer push cannot remove a plugin.
    let mut p = Plugin::new("sandbox-probe");
    p.env = vec!["VARIANT=L3".into()];
    let reference = fx.publish(p).await;
    attach_status(&fx, &reference, "removed", &key()).await;
    let installed = fx.runner_with(ok_policy.clone(), with_root.clone()).install(&reference).await.expect("installs");
    assert!(installed.resolved.lifecycle.is_none());
    assert!(
        installed.resolved.ignored.iter().any(|i| i.contains("lifecycle status")),
        "{:?}",
        installed.resolved.ignored
    );

    let all = fx.audit_events();
    assert_eq!(events(&all, "policy.refused").len(), 12, "{all:#?}");
    audit::verify(fx.dir.path().join("runner/audit.jsonl")).expect("audit verifies");
}

async fn attach_status(fx: &Fixture, reference: &str, status: &str, signer: &KeyPair) {
    let (repo_ref, digest) = reference.rsplit_once('@').unwrap();
    let repository = repo_ref.split_once('/').unwrap().1;
    let repo = fx.repo(repository);
    let image = repo.resolve(digest).await.unwrap();
    let predicate = json!({
        "api_version": "aisopsflow.dev/status/v1",
        "subject": {"digest": digest, "repository": repository},
        "status": status,
        "reason": format!("marked {status} by the test"),
        "time": "2026-11-25T12:00:00Z",
        "by": "catalog-admin"
    });
    let bundle = sign::sign_statement(
        &digest.parse().unwrap(),
        repository,
        berth::plugin::STATUS_PREDICATE_TYPE,
        predicate,
        signer,
    )
    .unwrap();
    sign::attach_signature(&repo as &dyn GraphTarget, &image, &bundle).await.unwrap();
}

/// Publishes the probe with one malicious layer (plus a harmless first layer).
async fn publish_layer(fx: &Fixture, name: &str, layer: Vec<u8>, media_type: &str) -> String {
    use berth::content::Pusher;
    let mem = MemoryStore::new();
    let spec = PackSpec::new(plugin_binary("sandbox-probe"));
    let image = pack(&spec, &mem, None).await.unwrap();
    let m: Value = serde_json::from_slice(&berth::content::fetch_all(&mem, &image).await.unwrap()).unwrap();
    let bad = berth::content::descriptor_for(media_type, &layer);
    mem.push(&bad, Box::pin(std::io::Cursor::new(layer))).await.unwrap();
    let mut m2 = m.clone();
    m2["layers"].as_array_mut().unwrap().push(serde_json::to_value(&bad).unwrap());
    m2["annotations"]["org.opencontainers.image.title"] = json!(name);
    let bytes = serde_json::to_vec(&m2).unwrap();
    let image2 = berth::content::descriptor_for(m["mediaType"].as_str().unwrap(), &bytes);
    mem.push(&image2, Box::pin(std::io::Cursor::new(bytes))).await.unwrap();
    let dst = fx.repo("aisopsflow/sandbox-probe");
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    let sbom = berth::sbom::from_cargo_lock(&lock, "sandbox-probe", "0.1.0").unwrap();
    let mut manifest = manifest_of("sandbox-probe");
    manifest["network"]["outbound_hosts"] = json!([]);
    manifest["capabilities"] = json!(["secrets_read"]);
    berth::artifacts::publish(
        &dst,
        berth::artifacts::Publication {
            manifest,
            image_source: &mem,
            image: image2,
            sbom: serde_json::to_vec(&sbom).unwrap(),
            registry: fx.server.host(),
            key: &fx.publisher,
        },
    )
    .await
    .expect("publish")
    .reference
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_layers_are_refused_by_the_runner_and_nothing_is_left_behind() {
    let fx = fixture().await;
    let mut c = RunnerConfig::new(
        fx.dir.path().join("runner"),
        fx.policy(),
        Trust { publishers: vec![fx.publisher.public_key().clone()], ..Trust::default() },
    );
    c.unpack_limits.max_bytes = 64 << 20;
    let runner = Runner::new(c).unwrap();
    let tar = "application/vnd.oci.image.layer.v1.tar";
    let tgz = "application/vnd.oci.image.layer.v1.tar+gzip";
    let zeros = vec![0u8; 100 << 20];
    let bomb = {
        // 100 MiB of zeros in a tar, gzipped to about 100 KiB: over this runner's 64 MiB bound.
        let mut t = tar_header("bomb", b'0', "", zeros.len() as u64, 0o644);
        t.extend_from_slice(&zeros);
        t.extend_from_slice(&[0u8; 1024]);
        gzip(&t)
    };
    drop(zeros);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("absolute", tar_entries(&[tar_header("/etc/evil", b'0', "", 1, 0o644)], b"x"), tar, "absolute"),
        ("dotdot", tar_entries(&[tar_header("a/../../evil", b'0', "", 1, 0o644)], b"x"), tar, ".."),
        ("symlink", tar_entries(&[tar_header("esc", b'2', "../../../../etc", 0, 0o777)], b""), tar, "escapes"),
        ("hardlink", tar_entries(&[tar_header("h", b'1', "../../etc/passwd", 0, 0o644)], b""), tar, ".."),
        ("device", tar_entries(&[tar_header("dev/sda", b'3', "", 0, 0o600)], b""), tar, "device"),
        ("bomb", bomb, tgz, "exceeds the limit of 67108864 bytes"),
    ];
    for (name, layer, media_type, why) in cases {
        let reference = publish_layer(&fx, name, layer, media_type).await;
        let e = match runner.install(&reference).await {
            Err(e @ RunError::Image { .. }) => e.to_string(),
            other => panic!("{name}: expected an image error, got {other:?}"),
        };
        assert!(e.to_lowercase().contains(why), "{name}: {e}");
    }
    // Nothing half-unpacked stays in the cache.
    let left: Vec<_> = std::fs::read_dir(fx.dir.path().join("runner/images")).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The service's local API on 127.0.0.1:0.
struct ServiceUnderTest {
    url: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServiceUnderTest {
    async fn start(runner: Runner, supervision: Supervision) -> ServiceUnderTest {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = Service::new(runner, supervision);
        let task = tokio::spawn(async move {
            svc.serve(listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        ServiceUnderTest { url, client: reqwest::Client::new(), stop: Some(tx), task: Some(task) }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Stops the service (which stops every instance) and waits for it.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_upgrades_when_healthy_rolls_back_when_not_and_restarts_a_dead_plugin() {
    let fx = fixture().await;
    let publish = |variant: &'static str| {
        let mut p = Plugin::new("sandbox-probe");
        p.manifest["network"]["outbound_hosts"] = json!([]);
        p.manifest["capabilities"] = json!(["secrets_read"]);
        p.env = vec![format!("VARIANT={variant}")];
        if variant == "broken" {
            p.env.push("PROBE_UNHEALTHY=1".into());
        }
        p
    };
    let v1 = fx.publish(publish("v1")).await;
    let v2 = fx.publish(publish("v2")).await;
    let broken = fx.publish(publish("broken")).await;
    let digest = |r: &str| r.rsplit_once('@').unwrap().1.to_string();
    let supervision =
        Supervision { health_interval: Duration::from_millis(100), failures_before_restart: 2, max_restarts: 3 };
    let svc = ServiceUnderTest::start(fx.runner(fx.policy()), supervision).await;

    // Refusals come back as API errors naming the reason.
    let (status, body) = svc
        .call(
            Method::PUT,
            "/v1/plugins/probe",
            Some(json!({"reference": format!("{}/aisopsflow/sandbox-probe:0.1.0", fx.server.host())})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("mutable"), "{body}");

    let (status, body) = svc.call(Method::PUT, "/v1/plugins/probe", Some(json!({"reference": v1}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = svc.call(Method::POST, "/v1/plugins/probe/start", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "running");
    let variant = |b: &Value| b["output"]["env"]["VARIANT"].as_str().unwrap_or("").to_string();
    let (status, out) = svc.call(Method::POST, "/v1/plugins/probe/invoke/whoami", Some(json!({"input": {}}))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(variant(&out), "v1");

    // Healthy new digest: switched, old one stopped.
    let (status, body) = svc.call(Method::POST, "/v1/plugins/probe/upgrade", Some(json!({"reference": v2}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["installed"]["digest"], digest(&v2));
    let (_, out) = svc.call(Method::POST, "/v1/plugins/probe/invoke/whoami", Some(json!({"input": {}}))).await;
    assert_eq!(variant(&out), "v2");

    // Failing new digest: rolled back, the running one keeps serving.
    let (status, body) = svc.call(Method::POST, "/v1/plugins/probe/upgrade", Some(json!({"reference": broken}))).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("keeps serving") && message.contains(&digest(&v2)), "{message}");
    let (_, st) = svc.call(Method::GET, "/v1/plugins/probe", None).await;
    assert_eq!(st["installed"]["digest"], digest(&v2));
    assert_eq!(st["state"], "running");
    let (status, out) = svc.call(Method::POST, "/v1/plugins/probe/invoke/whoami", Some(json!({"input": {}}))).await;
    assert_eq!(status, 200);
    assert_eq!(variant(&out), "v2");

    // A plugin that dies is restarted by the health checks.
    let id = st["instance"]["id"].as_str().unwrap().to_string();
    let out = std::process::Command::new("runc").args(["kill", &id, "KILL"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut restarted = Value::Null;
    for _ in 0..200 {
        let (_, st) = svc.call(Method::GET, "/v1/plugins/probe", None).await;
        if st["restarts"] == 1 && st["state"] == "running" {
            restarted = st;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(restarted["restarts"], 1, "the plugin was not restarted");
    assert_ne!(restarted["instance"]["id"], id);
    assert_eq!(restarted["last_exit"]["signal"], 9);
    let (status, out) = svc.call(Method::POST, "/v1/plugins/probe/invoke/whoami", Some(json!({"input": {}}))).await;
    assert_eq!(status, 200, "{out}");

    // Logs, stop, status.
    let (status, _) = svc.call(Method::GET, "/v1/plugins/probe/logs", None).await;
    assert_eq!(status, 200);
    let (status, body) = svc.call(Method::POST, "/v1/plugins/probe/stop", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "stopped");
    svc.shutdown().await;

    let all = fx.audit_events();
    assert_eq!(events(&all, "upgrade").len(), 1);
    assert_eq!(events(&all, "upgrade.rolled_back").len(), 1);
    assert_eq!(events(&all, "restart").len(), 1);
    assert!(!events(&all, "health.failed").is_empty());
    audit::verify(fx.dir.path().join("runner/audit.jsonl")).expect("audit verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_run_invokes_an_entrypoint_from_the_command_line() {
    let fx = fixture().await;
    let reference = fx.publish(Plugin::new("json-transform")).await;
    let dir = fx.dir.path();
    let policy = format!(
        "mode = \"first-party\"\nfirst_party_publishers = [\"aisopsflow\"]\nrequire_approval = true\napproved_digests = [\"{}\"]\n",
        reference.rsplit_once('@').unwrap().1
    );
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    std::fs::write(dir.join("publisher.pub"), fx.publisher.public_key().to_pem().unwrap()).unwrap();
    let manifest = manifest_of("json-transform");
    let (name, ep) = manifest["entrypoints"].as_object().unwrap().iter().next().unwrap();
    let config = ep["example"]["config"].to_string();
    let run = |reference: String, name: String, input: String| {
        let config = config.clone();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                .args(["run", &reference, "--policy", "policy.toml", "--key", "publisher.pub"])
                .args(["--data-dir", "rd", "--invoke", &name, "--input", &input, "--config", &config])
                .current_dir(dir)
                .output()
                .unwrap()
        })
    };
    let out = run(reference.clone(), name.clone(), ep["example"]["input"].to_string()).await.unwrap();
    let stdout = ok(&out, "berth run");
    let printed: Value = serde_json::from_slice(&stdout).unwrap();
    if let Some(expected) = ep["example"].get("output") {
        assert_eq!(&printed, expected);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ALLOW approval"), "{stderr}");

    // A tag is refused before anything runs, with the reason.
    let tagged = format!("{}/aisopsflow/json-transform:0.1.0", fx.server.host());
    let out = run(tagged, name.clone(), "{}".into()).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mutable"), "{}", String::from_utf8_lossy(&out.stderr));
}
