//! The catalog's harvester against the real registry: plugins published to the embedded
//! registry come back as catalog documents with every field filled and only trusted keys
//! believed; a walk finds the same versions through the embedded store and over HTTP; and a
//! synthetic registry shows how fast a rebuild reads (figures printed, never asserted).

use crate::common::*;
use berth::catalog::PluginVersion;
use berth::catalog::harvest::{
    HarvestSettings, Source, WalkReport, component_names, generate_synthetic, harvest, walk,
};
use berth::content::memory::MemoryStore;
use berth::content::remote::{self, Credentials, RemoteOptions};
use berth::content::{FsStore, GraphTarget, Pusher, TagResolver};
use berth::oci::ImageReference;
use berth::pack::{PackSpec, pack};
use berth::plugin::documents::{
    Check, CheckStatus, CompatibilityOutcome, CompatibilityResult, Subject, VerificationReport, VerificationState,
    Verifier, VulnerabilityCounts,
};
use berth::runner::resolve::Trust;
use berth::sign::{self, KeyPair};
use berth::verify::pipeline;
use oci_spec::image::Descriptor;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn key() -> KeyPair {
    sign::generate_key(b"test").expect("key")
}

fn manifest_of(binary: &str) -> Value {
    let text = std::fs::read_to_string(workspace().join("artifacts/plugins").join(binary).join("plugin.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn sbom_of(binary: &str) -> Vec<u8> {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    serde_json::to_vec(&berth::sbom::from_cargo_lock(&lock, binary, "0.1.0").unwrap()).unwrap()
}

/// One registry, the publisher key its plugins are signed with, and how to reach it.
struct Fixture {
    server: TestServer,
    publisher: KeyPair,
    options: RemoteOptions,
}

/// A published plugin version.
struct Published {
    reference: String,
    repository: String,
    image: Descriptor,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture { server: TestServer::start().await, publisher: key(), options: RemoteOptions::default() }
    }

    /// A registry that lets only account `alice` (namespace `aisopsflow`) in, even to pull.
    async fn with_account() -> Fixture {
        let server = TestServer::with(|c| {
            c.auth.anonymous_pull = false;
            c.auth.accounts = vec![berth::registry::auth::Account {
                name: "alice".into(),
                password_hash: berth::registry::auth::hash_password("s3cret").unwrap(),
                namespaces: vec!["aisopsflow/*".into()],
                push_only: false,
            }];
        })
        .await;
        let options = RemoteOptions {
            credentials: Some(Credentials { username: "alice".into(), password: "s3cret".into() }),
            ..RemoteOptions::default()
        };
        Fixture { server, publisher: key(), options }
    }

    fn repo(&self, repository: &str) -> remote::RemoteRepository {
        let r = ImageReference::parse(&format!("{}/{repository}", self.server.host())).unwrap();
        remote::open(&r, self.options.clone()).unwrap()
    }

    /// Packs and publishes first-party plugin `binary` as `version` (its own image: the
    /// version and `created` are image annotations).
    async fn publish(&self, binary: &str, version: &str, created: &str) -> Published {
        let mem = MemoryStore::new();
        let mut spec = PackSpec::new(plugin_binary(binary));
        spec.annotations.insert("org.opencontainers.image.created".into(), created.into());
        spec.annotations.insert("org.opencontainers.image.version".into(), version.into());
        let image = pack(&spec, &mem, None).await.expect("pack");
        let mut manifest = manifest_of(binary);
        manifest["version"] = json!(version);
        let repository = format!("aisopsflow/{binary}");
        let dst = self.repo(&repository);
        // One push alone first: with accounts, it fetches the push token the copy's
        // concurrent uploads then share (the remote store races on a first challenge).
        let empty = berth::content::descriptor_for(berth::oci::media::OCI_EMPTY, b"{}");
        dst.push(&empty, Box::pin(std::io::Cursor::new(b"{}".to_vec()))).await.expect("push");
        let published = berth::artifacts::publish(
            &dst,
            berth::artifacts::Publication {
                manifest,
                image_source: &mem,
                image: image.clone(),
                sbom: sbom_of(binary),
                registry: self.server.host(),
                key: &self.publisher,
            },
        )
        .await
        .expect("publish");
        Published { reference: published.reference, repository, image }
    }

    fn settings(&self, trust: Trust) -> HarvestSettings {
        HarvestSettings {
            trust,
            first_party: vec!["aisopsflow".into()],
            registry: self.server.host(),
            ..HarvestSettings::default()
        }
    }
}

async fn harvest_one(fx: &Fixture, p: &Published, s: &HarvestSettings) -> PluginVersion {
    harvest(&fx.repo(&p.repository), &p.repository, &p.image, s).await.expect("harvest").expect("a plugin")
}

fn report(digest: &str, time: &str, failed: &[&str], vulnerabilities: [u64; 5]) -> VerificationReport {
    let [critical, high, medium, low, unknown] = vulnerabilities;
    let checks = ["schema", "signatures", "sbom", "vulnerabilities", "conformance"]
        .iter()
        .map(|name| {
            let fail = failed.contains(name);
            Check {
                name: name.to_string(),
                status: if fail { CheckStatus::Fail } else { CheckStatus::Pass },
                findings: Vec::new(),
            }
        })
        .collect();
    VerificationReport {
        api_version: berth::plugin::VERIFICATION_API_VERSION.into(),
        subject: Subject { digest: digest.into(), repository: Some("aisopsflow/json-transform".into()) },
        verifier: Verifier { id: "test-verifier".into(), version: None },
        time: time.into(),
        state: if failed.is_empty() { VerificationState::Verified } else { VerificationState::Unverified },
        compatibility: CompatibilityResult {
            result: CompatibilityOutcome::Compatible,
            runner_api: vec!["1.0".into()],
            message: None,
        },
        checks,
        vulnerabilities: VulnerabilityCounts { critical, high, medium, low, unknown },
    }
}

async fn attach_status(fx: &Fixture, p: &Published, status: Value, signer: &KeyPair) {
    let digest = p.image.digest().to_string();
    let bundle = sign::sign_statement(
        &digest.parse().unwrap(),
        &p.repository,
        berth::plugin::STATUS_PREDICATE_TYPE,
        status,
        signer,
    )
    .unwrap();
    let repo = fx.repo(&p.repository);
    sign::attach_signature(&repo as &dyn GraphTarget, &p.image, &bundle).await.expect("attach status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvest_fills_every_field_of_a_published_first_party_plugin() {
    let fx = Fixture::new().await;
    let p = fx.publish("json-transform", "0.1.0", "2026-03-04T05:06:07Z").await;
    let (verifier, root, stranger) = (key(), key(), key());
    let trust = Trust {
        publishers: vec![fx.publisher.public_key().clone()],
        roots: vec![root.public_key().clone()],
        verifiers: vec![verifier.public_key().clone()],
    };
    let s = fx.settings(trust.clone());
    let digest = p.image.digest().to_string();

    let v = harvest_one(&fx, &p, &s).await;
    let sbom = component_names(&sbom_of("json-transform")).unwrap();
    assert!(sbom.len() > 20 && sbom.iter().any(|c| c == "serde"), "{sbom:?}");
    let expected = PluginVersion {
        repository: "aisopsflow/json-transform".into(),
        publisher: "aisopsflow".into(),
        name: "json-transform".into(),
        display_name: "JSON Transform".into(),
        description: manifest_of("json-transform")["description"].as_str().unwrap().into(),
        version: "0.1.0".into(),
        digest: digest.clone(),
        reference: format!("{}/aisopsflow/json-transform@{digest}", fx.server.host()),
        categories: vec!["data".into()],
        capabilities: vec!["secrets_read".into()],
        outbound_hosts: vec![],
        runner_api: "1.0".into(),
        min_core: Some("1.0.0".into()),
        min_runner: Some("0.1.0".into()),
        sbom_components: sbom,
        signed: true,
        verified: false,
        verification: "none".into(),
        verified_at: None,
        failed_checks: vec![],
        vulnerabilities: [0; 5],
        lifecycle: "active".into(),
        replacement: None,
        official: true,
        installs: 0,
        failures: 0,
        created: Some("2026-03-04T05:06:07Z".into()),
    };
    assert_eq!(v, expected);
    assert_eq!(v.reference, p.reference);

    // Signed only with the right key; official only for the first-party publisher.
    let other = fx.settings(Trust { publishers: vec![stranger.public_key().clone()], ..trust.clone() });
    assert!(!harvest_one(&fx, &p, &other).await.signed);
    let third_party = HarvestSettings { first_party: vec!["someone-else".into()], ..s.clone() };
    assert!(!harvest_one(&fx, &p, &third_party).await.official);

    // A report signed by a key that is no verifier's changes nothing.
    let failing = report(&digest, "2026-03-05T00:00:00Z", &["vulnerabilities", "conformance"], [1, 2, 3, 4, 5]);
    let opts = RemoteOptions::default();
    pipeline::sign_and_attach(&p.reference, &failing, &stranger, &opts).await.expect("attach");
    let v = harvest_one(&fx, &p, &s).await;
    assert_eq!((v.verification.as_str(), v.verified, v.verified_at.as_deref()), ("none", false, None));
    assert_eq!(v.vulnerabilities, [0; 5]);

    // The verifier's report is believed: its state, time, failed checks and counts.
    pipeline::sign_and_attach(&p.reference, &failing, &verifier, &opts).await.expect("attach");
    let v = harvest_one(&fx, &p, &s).await;
    assert_eq!(v.verification, "unverified");
    assert!(!v.verified);
    assert_eq!(v.verified_at.as_deref(), Some("2026-03-05T00:00:00Z"));
    assert_eq!(v.failed_checks, ["vulnerabilities", "conformance"]);
    assert_eq!(v.vulnerabilities, [1, 2, 3, 4, 5]);

    // The newest trusted report wins; an older one attached later does not.
    let passing = report(&digest, "2026-03-06T00:00:00Z", &[], [0, 0, 0, 0, 0]);
    pipeline::sign_and_attach(&p.reference, &passing, &verifier, &opts).await.expect("attach");
    let older = report(&digest, "2026-03-01T00:00:00Z", &["sbom"], [0, 0, 0, 0, 9]);
    pipeline::sign_and_attach(&p.reference, &older, &verifier, &opts).await.expect("attach");
    let v = harvest_one(&fx, &p, &s).await;
    assert_eq!((v.verification.as_str(), v.verified), ("verified", true));
    assert_eq!(v.verified_at.as_deref(), Some("2026-03-06T00:00:00Z"));
    assert!(v.failed_checks.is_empty());
    assert_eq!(v.vulnerabilities, [0; 5]);

    // Lifecycle: a status not signed by a root key is ignored; a root-signed one is believed.
    let status = |status: &str, time: &str| {
        json!({
            "api_version": "aisopsflow.dev/status/v1",
            "subject": {"digest": digest, "repository": p.repository},
            "status": status,
            "reason": format!("marked {status} by the test"),
            "replacement": "json-transform@0.2.0",
            "time": time,
            "by": "catalog-admin"
        })
    };
    attach_status(&fx, &p, status("removed", "2026-04-01T00:00:00Z"), &fx.publisher).await;
    let v = harvest_one(&fx, &p, &s).await;
    assert_eq!((v.lifecycle.as_str(), v.replacement.as_deref()), ("active", None));
    attach_status(&fx, &p, status("deprecated", "2026-03-10T00:00:00Z"), &root).await;
    let v = harvest_one(&fx, &p, &s).await;
    assert_eq!((v.lifecycle.as_str(), v.replacement.as_deref()), ("deprecated", Some("json-transform@0.2.0")));
    // Everything else is as first harvested.
    let reset = PluginVersion {
        lifecycle: "active".into(),
        replacement: None,
        verified: false,
        verification: "none".into(),
        verified_at: None,
        ..v.clone()
    };
    assert_eq!(reset, expected);

    // An image without a plugin manifest artifact is not a plugin.
    let (plain, _) = push_image(&client(), &fx.server.url, "aisopsflow/plain", "latest", b"not a plugin").await;
    let repo = fx.repo("aisopsflow/plain");
    let image = repo.resolve(&plain).await.unwrap();
    assert_eq!(harvest(&repo, "aisopsflow/plain", &image, &s).await.unwrap(), None);
}

/// Walks `source`; returns the report, the versions sorted by digest and the progress calls.
async fn walk_all(
    source: &Source,
    s: &HarvestSettings,
) -> (WalkReport, Vec<PluginVersion>, Vec<(usize, usize, usize)>) {
    let calls = Mutex::new(Vec::new());
    let progress = |done, total, versions| calls.lock().unwrap().push((done, total, versions));
    let mut found = Vec::new();
    let mut each = |v: PluginVersion| found.push(v);
    let report = walk(source, s, &progress, &mut each).await.expect("walk");
    found.sort_by(|a, b| a.digest.cmp(&b.digest));
    (report, found, calls.into_inner().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_finds_the_same_versions_in_the_store_and_over_http() {
    let fx = Fixture::new().await;
    let mut published = BTreeSet::new();
    for binary in ["json-transform", "http-probe"] {
        for (version, created) in [("0.1.0", "2026-01-01T00:00:00Z"), ("0.2.0", "2026-02-01T00:00:00Z")] {
            published.insert(fx.publish(binary, version, created).await.image.digest().to_string());
        }
    }
    assert_eq!(published.len(), 4, "every version is its own image");
    push_image(&client(), &fx.server.url, "library/plain", "latest", b"not a plugin").await;
    let s = fx.settings(Trust { publishers: vec![fx.publisher.public_key().clone()], ..Trust::default() });

    let embedded = Source::Embedded(fx.server.registry.store.clone());
    let registry = Source::Registry { host: fx.server.host(), options: RemoteOptions::default() };
    let (from_store, store_versions, store_progress) = walk_all(&embedded, &s).await;
    let (over_http, http_versions, http_progress) = walk_all(&registry, &s).await;

    for (report, versions, progress) in
        [(&from_store, &store_versions, &store_progress), (&over_http, &http_versions, &http_progress)]
    {
        assert_eq!(report.repositories, 3, "{report:?}");
        assert_eq!(report.images, 5, "four plugin versions and one plain image: {report:?}");
        assert_eq!(report.versions, 4, "{report:?}");
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let digests: BTreeSet<String> = versions.iter().map(|v| v.digest.clone()).collect();
        assert_eq!(digests, published);
        assert!(versions.iter().all(|v| v.signed && v.official && !v.sbom_components.is_empty()), "{versions:#?}");
        assert_eq!(progress.first(), Some(&(0, 3, 0)));
        assert_eq!(progress.last(), Some(&(3, 3, 4)));
    }
    assert_eq!(store_versions, http_versions, "both sources give the same documents");
    let versions: BTreeSet<(String, String)> =
        store_versions.iter().map(|v| (v.name.clone(), v.version.clone())).collect();
    assert_eq!(versions.len(), 4);
    assert!(versions.contains(&("http-probe".into(), "0.2.0".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_over_http_signs_in_to_list_the_registry() {
    let fx = Fixture::with_account().await;
    let p = fx.publish("json-transform", "0.1.0", "2026-01-01T00:00:00Z").await;
    let s = fx.settings(Trust { publishers: vec![fx.publisher.public_key().clone()], ..Trust::default() });

    // `_catalog`, tags and referrers each answer a Bearer challenge; the walk follows them.
    let signed_in = Source::Registry { host: fx.server.host(), options: fx.options.clone() };
    let (report, versions, _) = walk_all(&signed_in, &s).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(versions.len(), 1, "{report:?}");
    assert_eq!(versions[0].digest, p.image.digest().to_string());
    assert!(versions[0].signed);

    // Without credentials the registry cannot even be listed: an error, not an empty catalog.
    let anonymous = Source::Registry { host: fx.server.host(), options: RemoteOptions::default() };
    let mut each = |_: PluginVersion| {};
    let e = walk(&anonymous, &s, &|_, _, _| {}, &mut each).await.expect_err("anonymous listing is refused");
    assert!(e.to_string().contains("_catalog"), "{e}");
}

/// CPU time (user and system) this process has used, in seconds: steadier than wall time on
/// a shared machine.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the rusage value we own; a zeroed rusage is a valid value.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Generates `n` synthetic versions into a fresh registry and walks it both ways, printing
/// versions/s; checks that every generated version comes back, the same from both sources.
async fn synthetic_throughput(n: usize) {
    let server = TestServer::start().await;
    let signer = key();
    let started = Instant::now();
    let generated = generate_synthetic(&server.registry.store, n, &signer).await.expect("generate");
    let generating = started.elapsed().as_secs_f64();
    assert_eq!(generated.len(), n);
    let expected: BTreeSet<String> = generated.iter().map(|r| r.rsplit_once('@').unwrap().1.to_string()).collect();
    assert_eq!(expected.len(), n, "every synthetic version is its own image");

    let k = signer.public_key().clone();
    let s = HarvestSettings {
        trust: Trust { publishers: vec![k.clone()], roots: vec![k.clone()], verifiers: vec![k] },
        first_party: vec!["p0".into()],
        registry: server.host(),
        ..HarvestSettings::default()
    };
    // A store opened afresh: nothing cached from the generator's writes.
    let store = FsStore::open(server.data_dir()).expect("open store");
    let embedded = Source::Embedded(store);
    let registry = Source::Registry { host: server.host(), options: RemoteOptions::default() };
    let cpu = cpu_seconds();
    let (from_store, store_versions, _) = walk_all(&embedded, &s).await;
    let store_cpu = cpu_seconds() - cpu;
    let cpu = cpu_seconds();
    let (over_http, http_versions, _) = walk_all(&registry, &s).await;
    let http_cpu = cpu_seconds() - cpu;

    let per_version = |cpu: f64| cpu * 1e6 / n as f64;
    println!(
        "catalog harvest, {n} synthetic plugin versions ({} repositories, {} cores):\n  \
         generate (embedded store, fsync'd writes): {generating:.2} s = {:.0} versions/s\n  \
         walk, embedded store:                      {:.2} s = {:.0} versions/s, {:.0} µs CPU per version\n  \
         walk, registry over HTTP:                  {:.2} s = {:.0} versions/s, {:.0} µs CPU per version \
         (client and in-process registry)",
        from_store.repositories,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        n as f64 / generating,
        from_store.seconds,
        n as f64 / from_store.seconds,
        per_version(store_cpu),
        over_http.seconds,
        n as f64 / over_http.seconds,
        per_version(http_cpu),
    );
    for (report, versions) in [(&from_store, &store_versions), (&over_http, &http_versions)] {
        assert_eq!(report.versions, n, "{:?}", report.skipped);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        let digests: BTreeSet<String> = versions.iter().map(|v| v.digest.clone()).collect();
        assert_eq!(digests, expected);
        for v in versions.iter() {
            assert!(v.signed, "{v:#?}");
            assert_ne!(v.verification, "none", "{v:#?}");
            assert!((20..=80).contains(&v.sbom_components.len()), "{v:#?}");
            assert_eq!(v.official, v.publisher == "p0");
            assert!(v.created.is_some());
        }
    }
    assert_eq!(store_versions, http_versions, "both sources give the same documents");
    let publishers: BTreeSet<&str> = store_versions.iter().map(|v| v.publisher.as_str()).collect();
    assert_eq!(publishers.len(), n.div_ceil(4).min(50));
    println!(
        "  ({} verified, {} unverified, {} deprecated)",
        store_versions.iter().filter(|v| v.verified).count(),
        store_versions.iter().filter(|v| v.verification == "unverified").count(),
        store_versions.iter().filter(|v| v.lifecycle == "deprecated").count(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_versions_come_back_from_both_sources() {
    synthetic_throughput(50).await;
}

/// `cargo nextest run --release --test integration catalog:: --run-ignored all --nocapture`;
/// `BERTH_HARVEST_N` sets the number of versions (default 5000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: thousands of versions"]
async fn synthetic_rebuild_throughput() {
    let n = std::env::var("BERTH_HARVEST_N").ok().and_then(|n| n.parse().ok()).unwrap_or(5000);
    synthetic_throughput(n).await;
}
