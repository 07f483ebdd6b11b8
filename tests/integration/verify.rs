//! The verification pipeline end to end against the embedded registry: plugins published
//! (or deliberately mis-published) to it are verified over HTTP like any client would, the
//! report is signed and attached, and one fixture per check shows that check failing with
//! the right finding. Conformance (runc, as root) runs only where a test needs it.

use crate::common::*;
use berth::content::TagResolver;
use berth::content::memory::MemoryStore;
use berth::content::remote::{self, RemoteOptions};
use berth::oci::{Digest, ImageReference};
use berth::pack::{PackSpec, pack};
use berth::plugin::documents::{
    Check, CheckStatus, CompatibilityOutcome, Severity, VerificationReport, VerificationState,
};
use berth::plugin::{PLUGIN_MANIFEST_MEDIA_TYPE, VERIFICATION_PREDICATE_TYPE};
use berth::sign::{self, Bundle, KeyPair, SignError};
use berth::verify::checks::{self, ConformanceSettings, Settings};
use berth::verify::{VulnSource, Vulnerability, pipeline};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn key() -> KeyPair {
    sign::generate_key(b"test").expect("key")
}

fn manifest_of(binary: &str) -> Value {
    let dir = if binary == "sandbox-probe" { "tests/fixtures/plugins" } else { "artifacts/plugins" };
    let text = std::fs::read_to_string(workspace().join(dir).join(binary).join("plugin.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The SBOM a publisher of `binary` attaches: the workspace's Cargo.lock as CycloneDX.
fn sbom_of(binary: &str) -> Vec<u8> {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    serde_json::to_vec(&berth::sbom::from_cargo_lock(&lock, binary, "0.1.0").unwrap()).unwrap()
}

/// One registry, the publisher key registered for `aisopsflow`, a scratch directory.
struct Fixture {
    server: TestServer,
    publisher: KeyPair,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    Fixture { server: TestServer::start().await, publisher: key(), dir: tempfile::tempdir().unwrap() }
}

/// What to publish and how; the defaults are a correct publication signed by the fixture's
/// publisher key.
struct Plugin<'a> {
    binary: &'a str,
    manifest: Value,
    /// `config.User` of the image (default: the packer's non-root 65532:65532).
    user: Option<&'a str>,
    /// Who signs image and manifest artifact; `None`: unsigned.
    signer: Option<&'a KeyPair>,
    sbom: bool,
    /// What `runtime.image` says instead of this image's digest reference.
    runtime_image: Option<String>,
}

impl<'a> Plugin<'a> {
    fn new(fx: &'a Fixture, binary: &'a str) -> Plugin<'a> {
        Plugin {
            binary,
            manifest: manifest_of(binary),
            user: None,
            signer: Some(&fx.publisher),
            sbom: true,
            runtime_image: None,
        }
    }
}

impl Fixture {
    fn repo(&self, repository: &str) -> remote::RemoteRepository {
        let r = ImageReference::parse(&format!("{}/{repository}", self.server.host())).unwrap();
        remote::open(&r, RemoteOptions::default()).unwrap()
    }

    /// Publishes with `berth::artifacts::publish`, as `berth publish` does: image, manifest
    /// artifact, SBOM, both signatures. Returns `host/publisher/name@sha256:…`.
    async fn publish(&self, binary: &str) -> String {
        let mem = MemoryStore::new();
        let image = pack(&PackSpec::new(plugin_binary(binary)), &mem, None).await.expect("pack");
        let manifest = manifest_of(binary);
        let repo = format!("{}/{}", manifest["publisher"].as_str().unwrap(), manifest["name"].as_str().unwrap());
        let published = berth::artifacts::publish(
            &self.repo(&repo),
            berth::artifacts::Publication {
                manifest,
                image_source: &mem,
                image,
                sbom: sbom_of(binary),
                registry: self.server.host(),
                key: &self.publisher,
            },
        )
        .await
        .expect("publish");
        published.reference
    }

    /// Publishes piece by piece, so any piece can be wrong or missing (no validation).
    async fn publish_with(&self, p: Plugin<'_>) -> String {
        let mem = MemoryStore::new();
        let mut spec = PackSpec::new(plugin_binary(p.binary));
        if let Some(user) = p.user {
            spec.user = user.to_string();
        }
        let image = pack(&spec, &mem, None).await.expect("pack");
        let repo = format!("{}/{}", p.manifest["publisher"].as_str().unwrap(), p.manifest["name"].as_str().unwrap());
        let dst = self.repo(&repo);
        berth::content::copy::copy_graph(&mem, &dst, &image, &Default::default()).await.expect("copy");
        let reference = format!("{}/{repo}@{}", self.server.host(), image.digest());
        let mut m = p.manifest.clone();
        m["runtime"]["image"] = json!(p.runtime_image.unwrap_or_else(|| reference.clone()));
        let doc = serde_json::to_vec_pretty(&m).unwrap();
        let artifact = berth::artifacts::attach(&dst, &image, PLUGIN_MANIFEST_MEDIA_TYPE, &doc, &BTreeMap::new())
            .await
            .expect("attach manifest");
        if p.sbom {
            let sbom = sbom_of(p.binary);
            berth::artifacts::attach(&dst, &image, berth::artifacts::SBOM_ARTIFACT_TYPE, &sbom, &BTreeMap::new())
                .await
                .expect("attach sbom");
        }
        if let Some(signer) = p.signer {
            sign::sign_and_attach(&dst, &image, &repo, signer).await.expect("sign image");
            sign::sign_and_attach(&dst, &artifact, &repo, signer).await.expect("sign manifest");
        }
        reference
    }

    /// The publisher key registered for `aisopsflow`; no conformance.
    fn settings(&self) -> Settings {
        Settings {
            publisher_keys: BTreeMap::from([("aisopsflow".to_string(), vec![self.publisher.public_key().clone()])]),
            ..Settings::default()
        }
    }

    fn with_conformance(&self) -> Settings {
        require_tool("runc");
        Settings {
            conformance: Some(ConformanceSettings::new(self.dir.path().join("verifier-runner"))),
            ..self.settings()
        }
    }
}

/// A database that knows no advisories.
struct NoAdvisories;

impl VulnSource for NoAdvisories {
    fn affecting(&self, _purl: &str) -> Result<Vec<Vulnerability>, String> {
        Ok(Vec::new())
    }
    fn revision(&self) -> Result<String, String> {
        Ok("empty".to_string())
    }
}

/// A database with one high-severity advisory against one purl.
struct OneAdvisory {
    purl: String,
}

const ADVISORY: &str = "GHSA-test-4444-high";

impl VulnSource for OneAdvisory {
    fn affecting(&self, purl: &str) -> Result<Vec<Vulnerability>, String> {
        if purl != self.purl {
            return Ok(Vec::new());
        }
        Ok(vec![Vulnerability {
            id: ADVISORY.to_string(),
            aliases: vec!["CVE-2099-0001".to_string()],
            purl: purl.to_string(),
            severity: Severity::High,
            summary: "Unbounded recursion on nested input".to_string(),
            fixed: vec!["9.9.9".to_string()],
        }])
    }
    fn revision(&self) -> Result<String, String> {
        Ok("one".to_string())
    }
}

fn check<'a>(report: &'a VerificationReport, name: &str) -> &'a Check {
    report.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}"))
}

fn show(report: &VerificationReport) -> String {
    serde_json::to_string_pretty(report).unwrap()
}

/// The report is schema-valid, unverified, `failing` failed, and no other check did.
fn assert_fails_only<'a>(report: &'a VerificationReport, failing: &str) -> &'a Check {
    berth::plugin::validate_verification_report(&serde_json::to_value(report).unwrap()).expect("schema-valid report");
    assert_eq!(report.state, VerificationState::Unverified, "{}", show(report));
    for c in &report.checks {
        let expected = c.name == failing;
        assert_eq!(c.status == CheckStatus::Fail, expected, "{}: {}", c.name, show(report));
    }
    check(report, failing)
}

async fn verify(reference: &str, settings: &Settings, vulns: Option<&dyn VulnSource>) -> VerificationReport {
    pipeline::verify(reference, settings, vulns, None).await.expect("verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_transform_verifies_and_its_signed_report_verifies_with_the_verifier_key() {
    let fx = fixture().await;
    let reference = fx.publish("json-transform").await;

    let started = Instant::now();
    let quick = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let without = started.elapsed();
    assert_eq!(quick.state, VerificationState::Verified, "{}", show(&quick));
    assert_eq!(check(&quick, checks::CONFORMANCE).status, CheckStatus::Skipped);

    let settings = fx.with_conformance();
    let started = Instant::now();
    let report = verify(&reference, &settings, Some(&NoAdvisories)).await;
    let with = started.elapsed();
    let started = Instant::now();
    let again = verify(&reference, &settings, Some(&NoAdvisories)).await;
    let warm = started.elapsed();
    println!(
        "verify() of json-transform: without conformance {:.0} ms; with conformance {:.0} ms (cold runner cache), \
         {:.0} ms (image already unpacked)",
        without.as_secs_f64() * 1000.0,
        with.as_secs_f64() * 1000.0,
        warm.as_secs_f64() * 1000.0
    );
    assert_eq!(again.state, VerificationState::Verified, "{}", show(&again));

    berth::plugin::validate_verification_report(&serde_json::to_value(&report).unwrap()).expect("schema-valid");
    assert_eq!(report.state, VerificationState::Verified, "{}", show(&report));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, checks::ALL);
    for c in &report.checks {
        let expected = if c.name == checks::REVIEW { CheckStatus::Skipped } else { CheckStatus::Pass };
        assert_eq!(c.status, expected, "{}: {}", c.name, show(&report));
    }
    assert_eq!(check(&report, checks::REVIEW).findings[0].message, "no manual review");
    assert!(check(&report, checks::CONFORMANCE).findings[0].message.contains("0 failed"), "{}", show(&report));
    assert_eq!(report.compatibility.result, CompatibilityOutcome::Compatible, "{}", show(&report));
    assert_eq!(report.compatibility.runner_api, vec!["1.0".to_string()], "from GET /v1/info");
    assert_eq!(report.vulnerabilities, Default::default());
    let image_ref = ImageReference::parse(&reference).unwrap();
    let digest = image_ref.digest.clone().unwrap();
    assert_eq!(report.subject.digest, digest.to_string());
    assert_eq!(report.subject.repository.as_deref(), Some("aisopsflow/json-transform"));

    // Signed and attached: the referrer verifies with the verifier's key and carries the report.
    let verifier = key();
    let referrer =
        pipeline::sign_and_attach(&reference, &report, &verifier, &RemoteOptions::default()).await.expect("attach");
    let repo = fx.repo("aisopsflow/json-transform");
    let image = repo.resolve(&digest.to_string()).await.unwrap();
    let found = sign::verify_attestations(&repo, &image, VERIFICATION_PREDICATE_TYPE, &[verifier.public_key().clone()])
        .await
        .expect("the report verifies with the verifier key");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].manifest, referrer.digest().to_string());
    assert_eq!(found[0].statement.predicate_type, VERIFICATION_PREDICATE_TYPE);
    let attached: VerificationReport = serde_json::from_value(found[0].statement.predicate.clone()).unwrap();
    assert_eq!(attached, report);
    // Only the verifier's key counts: the publisher's does not vouch for reports.
    let e = sign::verify_attestations(&repo, &image, VERIFICATION_PREDICATE_TYPE, &[fx.publisher.public_key().clone()])
        .await
        .unwrap_err();
    assert!(matches!(e, SignError::Untrusted { .. }), "{e}");
    // Attaching the same report again pushes nothing new.
    let twice = pipeline::sign_and_attach(&reference, &report, &verifier, &RemoteOptions::default()).await.unwrap();
    assert_eq!(twice.digest(), referrer.digest());

    // One flipped byte of the DSSE payload and the bundle no longer verifies.
    let predicate = serde_json::to_value(&report).unwrap();
    let bundle =
        sign::sign_statement(&digest, "aisopsflow/json-transform", VERIFICATION_PREDICATE_TYPE, predicate, &verifier)
            .unwrap();
    let trusted = [verifier.public_key().clone()];
    bundle.verify(&digest, &trusted).expect("the untouched bundle verifies");
    let mut tampered: Bundle = bundle.clone();
    let envelope = tampered.dsse_envelope.as_mut().unwrap();
    use base64::Engine as _;
    let mut payload = base64::engine::general_purpose::STANDARD.decode(&envelope.payload).unwrap();
    let at = String::from_utf8_lossy(&payload).find("\"verified\"").expect("the state in the payload") + 1;
    payload[at] ^= 0x01; // "verified" → "werified": still JSON, no longer what was signed
    envelope.payload = base64::engine::general_purpose::STANDARD.encode(&payload);
    let e = tampered.verify(&digest, &trusted).unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_image_fails_the_signature_check() {
    let fx = fixture().await;
    let reference = fx.publish_with(Plugin { signer: None, ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::SIGNATURES);
    let digest = ImageReference::parse(&reference).unwrap().digest.unwrap().to_string();
    let image =
        c.findings.iter().find(|f| f.location.as_deref() == Some(digest.as_str())).expect("a finding on the image");
    assert!(image.message.contains("the image is unsigned"), "{}", image.message);
    assert!(
        c.findings.iter().any(|f| f.message.contains("the plugin manifest artifact is unsigned")),
        "{}",
        show(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_not_registered_for_the_publisher_is_not_trusted() {
    let fx = fixture().await;
    let stranger = key();
    let reference = fx.publish_with(Plugin { signer: Some(&stranger), ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::SIGNATURES);
    assert_eq!(c.findings.len(), 2, "image and manifest artifact: {}", show(&report));
    for f in &c.findings {
        assert!(f.message.contains("not registered for publisher aisopsflow"), "{}", f.message);
        assert!(f.message.contains(stranger.key_id()), "{}", f.message);
    }

    // And with no key registered for the publisher at all, nothing can be trusted.
    let report = verify(&reference, &Settings::default(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::SIGNATURES);
    assert!(c.findings[0].message.contains("no keys are registered for publisher aisopsflow"), "{}", show(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_sbom_fails_the_sbom_check_and_skips_the_scan() {
    let fx = fixture().await;
    let reference = fx.publish_with(Plugin { sbom: false, ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::SBOM);
    assert!(c.findings[0].message.contains("no SBOM is attached"), "{}", show(&report));
    let scan = check(&report, checks::VULNERABILITIES);
    assert_eq!(scan.status, CheckStatus::Skipped);
    assert!(scan.findings[0].message.contains("no valid SBOM"), "{}", show(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_with_a_known_vulnerability_makes_the_plugin_unverified() {
    let fx = fixture().await;
    let reference = fx.publish("json-transform").await;
    let purls = berth::sbom::validate(&sbom_of("json-transform")).unwrap().purls;
    let purl = purls.iter().find(|p| p.starts_with("pkg:cargo/serde@")).expect("serde in the SBOM").clone();
    let db = OneAdvisory { purl: purl.clone() };
    let report = verify(&reference, &fx.settings(), Some(&db)).await;
    let c = assert_fails_only(&report, checks::VULNERABILITIES);
    let f = c.findings.iter().find(|f| f.id.as_deref() == Some(ADVISORY)).expect("the advisory");
    assert_eq!(f.severity, Some(Severity::High));
    assert_eq!(f.location.as_deref(), Some(purl.as_str()));
    let version = purl.rsplit_once('@').unwrap().1;
    assert_eq!(f.message, format!("serde {version} is affected: Unbounded recursion on nested input; fixed in 9.9.9"));
    assert_eq!(report.vulnerabilities.high, 1);
    assert_eq!(report.vulnerabilities.critical + report.vulnerabilities.medium + report.vulnerabilities.low, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_does_not_do_what_its_manifest_says_fails_conformance() {
    let fx = fixture().await;
    let mut manifest = manifest_of("json-transform");
    // An entrypoint json-transform does not have, with an example the suite will send.
    manifest["entrypoints"]["summarize"] = json!({
        "path": "/v1/entrypoints/summarize",
        "method": "POST",
        "timeout_ms": 2000,
        "example": {"input": {"text": "hello"}, "config": {}}
    });
    let reference = fx.publish_with(Plugin { manifest, ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.with_conformance(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::CONFORMANCE);
    let summarize: Vec<_> = c.findings.iter().filter(|f| f.message.contains("[summarize]")).collect();
    assert!(!summarize.is_empty(), "{}", show(&report));
    assert!(summarize.iter().all(|f| f.id.is_some() && f.severity == Some(Severity::High)));
    assert!(
        summarize.iter().any(|f| f.location.as_deref() == Some("POST /v1/entrypoints/summarize")),
        "{}",
        show(&report)
    );
    // The declared entrypoint it does have still conforms.
    assert!(!c.findings.iter().any(|f| f.message.contains("[transform]")), "{}", show(&report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_running_as_root_fails_the_policy_lint() {
    let fx = fixture().await;
    let reference = fx.publish_with(Plugin { user: Some("0:0"), ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::POLICY_LINT);
    let f = c.findings.iter().find(|f| f.location.as_deref() == Some("config.User")).expect("a finding on the user");
    assert!(f.message.contains("runs as root"), "{}", f.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_image_naming_a_tag_fails_the_schema_check() {
    let fx = fixture().await;
    let tagged = format!("{}/aisopsflow/json-transform:0.1.0", fx.server.host());
    let reference =
        fx.publish_with(Plugin { runtime_image: Some(tagged.clone()), ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::SCHEMA);
    let f = c.findings.iter().find(|f| f.location.as_deref() == Some("/runtime/image")).expect("/runtime/image");
    assert!(f.message.contains("tag \"0.1.0\""), "{}", f.message);
    // The rest still ran on the raw document.
    assert_eq!(report.compatibility.result, CompatibilityOutcome::Compatible, "{}", show(&report));
    assert_eq!(check(&report, checks::POLICY_LINT).status, CheckStatus::Pass);

    // And a manifest pinned to another image's digest fails the same check (another
    // registry: packing is deterministic, so the same image would carry two manifests).
    let fx = fixture().await;
    let other = format!("{}/aisopsflow/json-transform@{}", fx.server.host(), Digest::sha256(b"another image"));
    let reference = fx.publish_with(Plugin { runtime_image: Some(other), ..Plugin::new(&fx, "json-transform") }).await;
    let report = verify(&reference, &fx.settings(), Some(&NoAdvisories)).await;
    let c = assert_fails_only(&report, checks::SCHEMA);
    assert!(c.findings.iter().any(|f| f.message.contains("not this image")), "{}", show(&report));
}
