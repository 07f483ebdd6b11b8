//! The verification checks (`DESIGN.md` § flows, "Verify"): eight independent units, each
//! returning one [`Check`] of the report (`schemas/verification-report.v1.schema.json`) with
//! its findings. A check never aborts the run: whatever goes wrong — a registry that does not
//! answer, a document that does not parse, a plugin that does not start — is a finding. A
//! check that needs something an earlier one could not get is `skipped`, with a finding
//! saying why.
//!
//! | check | looks at |
//! |---|---|
//! | [`SCHEMA`] | the plugin-manifest referrer: schema and rules (`plugin::validate`), `runtime.image` pinned to this digest |
//! | [`IMAGE`] | the image by digest: index → linux/amd64, every blob against its digest and size, the config's platform |
//! | [`SIGNATURES`] | image and manifest artifact signed by a key registered for the manifest's publisher |
//! | [`SBOM`] | a CycloneDX referrer, valid (`sbom::validate`), components with purls |
//! | [`VULNERABILITIES`] | each SBOM purl against the OSV database ([`VulnSource`]) |
//! | [`CONFORMANCE`] | the plugin launched in the runner's sandbox, the runner-API suite against it |
//! | [`POLICY_LINT`] | capabilities against declarations, hosts, the image user, resource requests |
//! | [`REVIEW`] | a reviewer's decision, when there is one |
//!
//! The registry-facing checks work on any [`GraphTarget`] (the pipeline hands them the
//! remote repository; the unit tests an in-memory store). [`compatibility`] and
//! [`VerdictRule`] turn the checks into the report's compatibility result and state.

use super::VulnSource;
use crate::artifacts::SBOM_ARTIFACT_TYPE;
use crate::content::remote::RemoteOptions;
use crate::content::{ContentError, Fetcher, GraphTarget, fetch_all};
use crate::oci::{Digest, media};
use crate::plugin::documents::{
    Check, CheckStatus, CompatibilityOutcome, CompatibilityResult, Finding, Severity, VerificationState,
    VulnerabilityCounts,
};
use crate::plugin::{PLUGIN_MANIFEST_MEDIA_TYPE, PluginManifest, check_outbound_host};
use crate::runner::instance::{Runner, RunnerConfig};
use crate::runner::policy::{LimitsPolicy, Mode, Policy};
use crate::runner::resolve::Trust;
use crate::sbom::{SbomError, SbomSummary};
use crate::sign::{PublicKey, SignError, verify_subject};
use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

pub const SCHEMA: &str = "schema";
pub const IMAGE: &str = "image";
pub const SIGNATURES: &str = "signatures";
pub const SBOM: &str = "sbom";
pub const VULNERABILITIES: &str = "vulnerabilities";
pub const CONFORMANCE: &str = "conformance";
pub const POLICY_LINT: &str = "policy-lint";
pub const REVIEW: &str = "review";
/// Every check, in the order the report lists them.
pub const ALL: [&str; 8] = [SCHEMA, IMAGE, SIGNATURES, SBOM, VULNERABILITIES, CONFORMANCE, POLICY_LINT, REVIEW];

/// The platform the runner runs (and an index must offer).
const OS: &str = "linux";
const ARCHITECTURE: &str = "amd64";
/// The conformance case whose answer carries the plugin's runner API versions.
const INFO_CASE: &str = "availability-info";

/// How a verifier is set up. [`Settings::default`] verifies without trusted keys, without a
/// vulnerability database's opinion beyond what the caller passes, and without conformance.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `report.verifier.id`, e.g. `berth-verifier`.
    pub verifier_id: String,
    /// Keys registered per publisher name; the signature check trusts only these.
    pub publisher_keys: BTreeMap<String, Vec<PublicKey>>,
    /// Operator bounds for the policy lint (resource requests outside them warn) and the
    /// limits the conformance sandbox runs the plugin under.
    pub limits: LimitsPolicy,
    /// Runner API versions the operator supports (`MAJOR.MINOR`), for the compatibility result.
    pub runner_api: Vec<String>,
    /// The core version the deployment runs (against the manifest's `min_core`).
    pub core_version: semver::Version,
    /// The runner version the deployment runs (against the manifest's `min_runner`).
    pub runner_version: semver::Version,
    /// `None`: the conformance check is skipped (status skipped, a finding says why).
    pub conformance: Option<ConformanceSettings>,
    pub verdict: VerdictRule,
    pub remote: RemoteOptions,
}

/// The AisOpsFlow core release line a deployment of this berth serves, when the operator
/// says nothing else (the first-party plugins declare `min_core` 1.0.0).
pub const DEFAULT_CORE_VERSION: semver::Version = semver::Version::new(1, 0, 0);

impl Default for Settings {
    /// No registered keys, runner API 1.0, core [`DEFAULT_CORE_VERSION`], runner this
    /// crate's version, no conformance, the default verdict rule.
    fn default() -> Self {
        let runner = semver::Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(semver::Version::new(0, 0, 0));
        Settings {
            verifier_id: "berth-verifier".to_string(),
            publisher_keys: BTreeMap::new(),
            limits: LimitsPolicy::default(),
            runner_api: vec!["1.0".to_string()],
            core_version: DEFAULT_CORE_VERSION,
            runner_version: runner,
            conformance: None,
            verdict: VerdictRule::default(),
            remote: RemoteOptions::default(),
        }
    }
}

/// Where the conformance check runs the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceSettings {
    /// The sandbox runner's data directory (image cache, instance bundles, audit trail).
    pub data_dir: PathBuf,
    /// The OCI runtime binary (`runc`).
    pub runtime: String,
    /// How long the plugin may take to become healthy before the run fails.
    pub start_timeout: std::time::Duration,
}

impl ConformanceSettings {
    /// A sandbox in `data_dir` under runc, with the runner's default start timeout (10 s).
    pub fn new(data_dir: impl Into<PathBuf>) -> ConformanceSettings {
        ConformanceSettings {
            data_dir: data_dir.into(),
            runtime: "runc".to_string(),
            start_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Which failures make a plugin unverified: any check named in `required` with status
/// `fail`, a vulnerability at or above `fail_at`, or an incompatible plugin.
///
/// The report schema allows `verified` only when no check failed, so a check outside
/// `required` that fails on an otherwise verified plugin is reported as `warn`, with a
/// finding saying the verdict rule does not require it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRule {
    pub required: Vec<String>,
    pub fail_at: Severity,
}

impl Default for VerdictRule {
    /// Every check is required. An absent review is `skipped`, never `fail`, so it does not
    /// hold a plugin back; a rejecting review does.
    fn default() -> Self {
        VerdictRule { required: ALL.iter().map(|s| s.to_string()).collect(), fail_at: Severity::High }
    }
}

impl VerdictRule {
    /// Whether a vulnerability of `severity` is at or above the threshold.
    pub fn blocks(&self, severity: Severity) -> bool {
        rank(severity) >= rank(self.fail_at)
    }

    pub fn requires(&self, check: &str) -> bool {
        self.required.iter().any(|r| r == check)
    }

    /// The report's state for these results.
    pub fn state(
        &self,
        checks: &[Check],
        counts: &VulnerabilityCounts,
        compatibility: &CompatibilityResult,
    ) -> VerificationState {
        let required_failed = checks.iter().any(|c| c.status == CheckStatus::Fail && self.requires(&c.name));
        let by_severity = [
            (Severity::Critical, counts.critical),
            (Severity::High, counts.high),
            (Severity::Medium, counts.medium),
            (Severity::Low, counts.low),
            (Severity::Unknown, counts.unknown),
        ];
        let vulnerable = by_severity.iter().any(|(s, n)| *n > 0 && self.blocks(*s));
        let incompatible = compatibility.result == CompatibilityOutcome::Incompatible;
        if required_failed || vulnerable || incompatible {
            VerificationState::Unverified
        } else {
            VerificationState::Verified
        }
    }
}

/// Severity as a number, highest first: critical > high > medium > low > unknown > info (the
/// order of [`Severity`]'s variants).
fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 5,
        Severity::High => 4,
        Severity::Medium => 3,
        Severity::Low => 2,
        Severity::Unknown => 1,
        Severity::Info => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    Approve,
    Reject,
}

/// A reviewer's decision about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub decision: ReviewDecision,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A check being built: findings, and whether any of them fails or warns.
struct Builder {
    name: &'static str,
    findings: Vec<Finding>,
    failed: bool,
    warned: bool,
}

impl Builder {
    fn new(name: &'static str) -> Builder {
        Builder { name, findings: Vec::new(), failed: false, warned: false }
    }

    fn fail(&mut self, finding: Finding) {
        self.failed = true;
        self.findings.push(finding);
    }

    fn warn(&mut self, finding: Finding) {
        self.warned = true;
        self.findings.push(finding);
    }

    fn note(&mut self, message: impl Into<String>) {
        self.findings.push(finding(Severity::Info, message));
    }

    fn done(self) -> Check {
        let status = if self.failed {
            CheckStatus::Fail
        } else if self.warned {
            CheckStatus::Warn
        } else {
            CheckStatus::Pass
        };
        Check { name: self.name.to_string(), status, findings: self.findings }
    }
}

fn finding(severity: Severity, message: impl Into<String>) -> Finding {
    Finding { severity: Some(severity), message: message.into(), id: None, location: None }
}

fn finding_at(severity: Severity, message: impl Into<String>, location: impl Into<String>) -> Finding {
    let location = location.into();
    Finding {
        severity: Some(severity),
        message: message.into(),
        id: None,
        location: (!location.is_empty()).then_some(location),
    }
}

/// A `skipped` check with one finding saying why.
pub fn skipped(name: &str, why: impl Into<String>) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Skipped, findings: vec![finding(Severity::Info, why)] }
}

/// A `fail` check with one finding: for infrastructure trouble before the check could start.
pub fn failed(name: &str, why: impl Into<String>) -> Check {
    Check { name: name.to_string(), status: CheckStatus::Fail, findings: vec![finding(Severity::High, why)] }
}

fn artifact_type_is(d: &Descriptor, artifact_type: &str) -> bool {
    d.artifact_type().as_ref().is_some_and(|a| a.to_string() == artifact_type)
}

/// The document a referrer artifact carries (its first layer), verified against its digest.
async fn read_artifact(target: &dyn GraphTarget, artifact: &Descriptor) -> Result<Vec<u8>, String> {
    let bytes = fetch_all(target, artifact).await.map_err(|e| format!("fetching {}: {e}", artifact.digest()))?;
    let m: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a JSON manifest: {e}", artifact.digest()))?;
    let layer: Descriptor = m
        .pointer("/layers/0")
        .cloned()
        .ok_or_else(|| format!("artifact {} has no layer", artifact.digest()))
        .and_then(|l| serde_json::from_value(l).map_err(|e| format!("artifact {}: layer: {e}", artifact.digest())))?;
    fetch_all(target, &layer).await.map_err(|e| format!("fetching the layer of {}: {e}", artifact.digest()))
}

/// The plugin manifest attached to the image, as found.
#[derive(Debug, Clone)]
pub struct AttachedManifest {
    /// The plugin-manifest referrer (what the publisher signs).
    pub artifact: Descriptor,
    /// The document as JSON, valid or not.
    pub document: Value,
    /// The typed manifest when the document passed validation.
    pub manifest: Option<PluginManifest>,
}

impl AttachedManifest {
    /// `publisher`, read from the document even when it is otherwise invalid.
    pub fn publisher(&self) -> Option<&str> {
        self.document.get("publisher").and_then(Value::as_str)
    }
}

/// `schema`: the one plugin-manifest referrer of `image` (in `repository`, whose namespace the
/// publisher must own), validated against the schema and rules; `runtime.image` must be
/// pinned by digest, to this image's digest.
pub async fn schema(
    target: &dyn GraphTarget,
    image: &Descriptor,
    repository: &str,
    referrers: &[Descriptor],
) -> (Check, Option<AttachedManifest>) {
    let mut b = Builder::new(SCHEMA);
    let found: Vec<&Descriptor> =
        referrers.iter().filter(|d| artifact_type_is(d, PLUGIN_MANIFEST_MEDIA_TYPE)).collect();
    let artifact = match found.as_slice() {
        [] => {
            b.fail(finding(
                Severity::High,
                format!(
                    "no plugin manifest artifact (artifactType {PLUGIN_MANIFEST_MEDIA_TYPE}) refers to {}",
                    image.digest()
                ),
            ));
            return (b.done(), None);
        }
        [one] => (*one).clone(),
        many => {
            let digests: Vec<String> = many.iter().map(|d| d.digest().to_string()).collect();
            b.fail(finding(
                Severity::High,
                format!(
                    "{} plugin manifest artifacts refer to the image ({}); a plugin has exactly one \
                     (with several, which one a runner reads is arbitrary)",
                    many.len(),
                    digests.join(", ")
                ),
            ));
            return (b.done(), None);
        }
    };
    let bytes = match read_artifact(target, &artifact).await {
        Ok(bytes) => bytes,
        Err(e) => {
            b.fail(finding(Severity::High, format!("plugin manifest artifact: {e}")));
            return (b.done(), None);
        }
    };
    let document: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            b.fail(finding(Severity::High, format!("the plugin manifest is not JSON: {e}")));
            return (b.done(), None);
        }
    };
    let (manifest, image_reported) = match crate::plugin::validate(&document, Some(repository)) {
        Ok(m) => (Some(m), false),
        Err(errors) => {
            for p in &errors {
                b.fail(finding_at(Severity::High, p.message.clone(), p.pointer.clone()));
            }
            (None, errors.has("/runtime/image"))
        }
    };
    // The runner installs what runtime.image names: it must be this very image.
    if let Some(named) = document.pointer("/runtime/image").and_then(Value::as_str) {
        let this = image.digest().to_string();
        match crate::oci::ImageReference::parse(named) {
            Ok(r) => match (&r.digest, &r.tag) {
                (Some(d), _) if d.to_string() != this => {
                    b.fail(finding_at(
                        Severity::High,
                        format!("runtime.image {named:?} names {d}, not this image {this}"),
                        "/runtime/image",
                    ));
                }
                (Some(_), _) => {}
                (None, tag) if !image_reported => {
                    let what = tag.as_ref().map_or_else(|| "no digest".to_string(), |t| format!("the tag {t:?}"));
                    b.fail(finding_at(
                        Severity::High,
                        format!("runtime.image {named:?} names {what}; it must be pinned by digest (…@{this})"),
                        "/runtime/image",
                    ));
                }
                (None, _) => {}
            },
            Err(e) if !image_reported => {
                b.fail(finding_at(Severity::High, format!("runtime.image: {e}"), "/runtime/image"));
            }
            Err(_) => {}
        }
    }
    (b.done(), Some(AttachedManifest { artifact, document, manifest }))
}

/// `image`: the image manifest by digest (an index resolved to its linux/amd64 entry), every
/// blob fetched and checked against its digest and size (layers streamed through a hasher),
/// the config parsed and built for linux/amd64. Returns the config when it could be read.
pub async fn image(target: &dyn GraphTarget, image: &Descriptor) -> (Check, Option<Value>) {
    let mut b = Builder::new(IMAGE);
    let at = image.digest().to_string();
    let mut manifest = match fetch_json(target, image).await {
        Ok(v) => v,
        Err(e) => {
            b.fail(finding_at(Severity::High, format!("the image manifest: {e}"), at));
            return (b.done(), None);
        }
    };
    let media_type = manifest
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| image.media_type().to_string());
    if media::is_index(&media_type) || manifest.get("manifests").is_some() {
        let entries = manifest.get("manifests").and_then(Value::as_array).cloned().unwrap_or_default();
        let platform =
            |e: &Value, k: &str| e.pointer(&format!("/platform/{k}")).and_then(Value::as_str).map(str::to_string);
        let picked = entries.iter().find(|e| {
            platform(e, "os").as_deref() == Some(OS) && platform(e, "architecture").as_deref() == Some(ARCHITECTURE)
        });
        let Some(picked) = picked else {
            let offered: Vec<String> = entries
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        platform(e, "os").unwrap_or_default(),
                        platform(e, "architecture").unwrap_or_default()
                    )
                })
                .collect();
            b.fail(finding_at(
                Severity::High,
                format!(
                    "the image index offers no {OS}/{ARCHITECTURE} manifest (it has: {}); the runner runs {OS}/{ARCHITECTURE}",
                    if offered.is_empty() { "nothing".to_string() } else { offered.join(", ") }
                ),
                at,
            ));
            return (b.done(), None);
        };
        let picked: Descriptor = match serde_json::from_value(picked.clone()) {
            Ok(d) => d,
            Err(e) => {
                b.fail(finding_at(Severity::High, format!("the image index entry for {OS}/{ARCHITECTURE}: {e}"), at));
                return (b.done(), None);
            }
        };
        b.note(format!("image index: using its {OS}/{ARCHITECTURE} manifest {}", picked.digest()));
        manifest = match fetch_json(target, &picked).await {
            Ok(v) => v,
            Err(e) => {
                b.fail(finding_at(
                    Severity::High,
                    format!("the {OS}/{ARCHITECTURE} manifest: {e}"),
                    picked.digest().to_string(),
                ));
                return (b.done(), None);
            }
        };
        if manifest.get("manifests").is_some() {
            b.fail(finding_at(Severity::High, "the index entry is itself an index", picked.digest().to_string()));
            return (b.done(), None);
        }
    }

    let config_desc: Descriptor = match manifest.get("config").cloned().map(serde_json::from_value) {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            b.fail(finding(Severity::High, format!("the image manifest's config descriptor: {e}")));
            return (b.done(), None);
        }
        None => {
            b.fail(finding(Severity::High, "the image manifest has no config"));
            return (b.done(), None);
        }
    };
    let layers: Vec<Descriptor> = match manifest.get("layers").cloned().map(serde_json::from_value) {
        Some(Ok(l)) => l,
        Some(Err(e)) => {
            b.fail(finding(Severity::High, format!("the image manifest's layers: {e}")));
            return (b.done(), None);
        }
        None => Vec::new(),
    };
    if layers.is_empty() {
        b.fail(finding(Severity::High, "the image has no layers: there is no plugin to run"));
    }

    // A config is a small JSON document; a descriptor claiming gigabytes is not one.
    if config_desc.size() > crate::content::MAX_MANIFEST_SIZE {
        b.fail(finding_at(
            Severity::High,
            format!(
                "the image config claims {} bytes, more than the {} a config may have",
                config_desc.size(),
                crate::content::MAX_MANIFEST_SIZE
            ),
            config_desc.digest().to_string(),
        ));
        return (b.done(), None);
    }
    let config = match fetch_json(target, &config_desc).await {
        Ok(config) => {
            let field = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (os, arch) = (field("os"), field("architecture"));
            if os != OS || arch != ARCHITECTURE {
                b.fail(finding_at(
                    Severity::High,
                    format!("the image is built for {os:?}/{arch:?}; the runner runs {OS}/{ARCHITECTURE}"),
                    config_desc.digest().to_string(),
                ));
            }
            Some(config)
        }
        Err(e) => {
            b.fail(finding_at(Severity::High, format!("the image config: {e}"), config_desc.digest().to_string()));
            None
        }
    };

    let mut total = 0u64;
    for layer in &layers {
        let mt = layer.media_type().to_string();
        if !unpackable(&mt) {
            b.fail(finding_at(
                Severity::High,
                format!("layer media type {mt} cannot be unpacked by the runner (gzip or uncompressed tar only)"),
                layer.digest().to_string(),
            ));
            continue;
        }
        match stream_verify(target, layer).await {
            Ok(n) => total += n,
            Err(e) => b.fail(finding_at(Severity::High, format!("layer: {e}"), layer.digest().to_string())),
        }
    }
    if !b.failed {
        b.note(format!("{} layer(s), {total} bytes, each matching its digest and size", layers.len()));
    }
    (b.done(), config)
}

/// Media types the runner's unpacker takes.
fn unpackable(media_type: &str) -> bool {
    media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip") || media_type.ends_with(".tar")
}

/// A small JSON document (manifest or config), verified, parsed.
async fn fetch_json(target: &dyn GraphTarget, d: &Descriptor) -> Result<Value, String> {
    let bytes = fetch_all(target, d).await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not JSON: {e}", d.digest()))
}

/// Reads a blob through a hasher without holding it, and checks size and digest. Returns the
/// number of bytes read.
pub async fn stream_verify(fetcher: &(impl Fetcher + ?Sized), d: &Descriptor) -> Result<u64, ContentError> {
    let expected: Digest = d.digest().to_string().parse()?;
    let mut reader = fetcher.fetch(d).await?;
    let mut hasher = expected.algorithm().hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| ContentError::Body(e.to_string()))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > d.size() {
            return Err(ContentError::SizeMismatch { expected: d.size(), actual: read });
        }
        hasher.update(&buf[..n]);
    }
    if read != d.size() {
        return Err(ContentError::SizeMismatch { expected: d.size(), actual: read });
    }
    let actual = hasher.finish();
    if actual != expected {
        return Err(ContentError::DigestMismatch { expected, actual });
    }
    Ok(read)
}

/// `signatures`: the image and the plugin-manifest artifact each signed (sigstore bundle or
/// cosign legacy `.sig`) by a key registered for the manifest's publisher — and only such a
/// key counts.
pub async fn signatures(
    target: &dyn GraphTarget,
    image: &Descriptor,
    manifest: Option<&AttachedManifest>,
    publisher_keys: &BTreeMap<String, Vec<PublicKey>>,
) -> Check {
    let Some(manifest) = manifest else {
        return skipped(
            SIGNATURES,
            "no plugin manifest could be read, so the publisher whose registered keys are trusted is unknown",
        );
    };
    let Some(publisher) = manifest.publisher() else {
        return skipped(SIGNATURES, "the plugin manifest names no publisher, so no registered keys apply");
    };
    let mut b = Builder::new(SIGNATURES);
    let keys = publisher_keys.get(publisher).map(Vec::as_slice).unwrap_or_default();
    if keys.is_empty() {
        b.fail(finding(
            Severity::High,
            format!("no keys are registered for publisher {publisher}: no signature can be trusted"),
        ));
        return b.done();
    }
    for (what, subject) in [("image", image), ("plugin manifest artifact", &manifest.artifact)] {
        let at = subject.digest().to_string();
        match verify_subject(target, subject, keys).await {
            Ok(verified) => {
                for v in verified {
                    b.note(format!("{what} is signed by key {} of publisher {publisher} ({})", v.key_id, v.format));
                }
            }
            Err(SignError::Untrusted { key_ids, .. }) => b.fail(finding_at(
                Severity::High,
                format!(
                    "the {what} is signed only by key{} {}, not registered for publisher {publisher}",
                    if key_ids.len() == 1 { "" } else { "s" },
                    key_ids.join(", ")
                ),
                at,
            )),
            Err(SignError::Unsigned { problems, .. }) => {
                let why = if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) };
                b.fail(finding_at(
                    Severity::High,
                    format!(
                        "the {what} is unsigned: no valid signature by a key registered for publisher {publisher}{why}"
                    ),
                    at,
                ))
            }
            Err(e) => b.fail(finding_at(Severity::High, format!("the {what}: checking signatures: {e}"), at)),
        }
    }
    b.done()
}

/// `sbom`: a CycloneDX referrer, valid, with purls. Fails without one or when one is
/// invalid; warns when components lack purls (they cannot be scanned). Returns what the
/// valid SBOMs hold.
pub async fn sbom(target: &dyn GraphTarget, referrers: &[Descriptor]) -> (Check, Option<SbomSummary>) {
    let mut b = Builder::new(SBOM);
    let found: Vec<&Descriptor> = referrers.iter().filter(|d| artifact_type_is(d, SBOM_ARTIFACT_TYPE)).collect();
    if found.is_empty() {
        b.fail(finding(
            Severity::High,
            format!("no SBOM is attached: no referrer has artifactType {SBOM_ARTIFACT_TYPE} (CycloneDX JSON)"),
        ));
        return (b.done(), None);
    }
    let mut summary: Option<SbomSummary> = None;
    for artifact in found {
        let at = artifact.digest().to_string();
        let bytes = match read_artifact(target, artifact).await {
            Ok(bytes) => bytes,
            Err(e) => {
                b.fail(finding_at(Severity::High, format!("SBOM artifact: {e}"), at));
                continue;
            }
        };
        match crate::sbom::validate(&bytes) {
            Ok(s) => {
                let lacking = s.components.saturating_sub(s.purls.len());
                if s.components == 0 {
                    b.warn(finding_at(Severity::Medium, "the SBOM lists no components", at.clone()));
                } else if lacking > 0 {
                    b.warn(finding_at(
                        Severity::Low,
                        format!(
                            "{lacking} of {} components have no purl and cannot be checked for vulnerabilities",
                            s.components
                        ),
                        at.clone(),
                    ));
                }
                b.note(format!(
                    "CycloneDX {} SBOM {at}: {} components, {} with a purl",
                    s.spec_version,
                    s.components,
                    s.purls.len()
                ));
                summary = Some(match summary.take() {
                    None => s,
                    Some(mut all) => {
                        all.components += s.components;
                        all.purls.extend(s.purls);
                        all
                    }
                });
            }
            Err(SbomError::Invalid(problems)) => {
                b.fail(finding_at(Severity::High, format!("the SBOM {at} is not valid CycloneDX JSON"), at.clone()));
                for p in problems {
                    b.fail(finding_at(Severity::High, p.message, p.path));
                }
            }
            Err(e) => b.fail(finding_at(Severity::High, format!("the SBOM: {e}"), at)),
        }
    }
    if let Some(s) = &mut summary {
        let mut seen = BTreeSet::new();
        s.purls.retain(|p| seen.insert(p.clone()));
    }
    (b.done(), summary)
}

/// `vulnerabilities`: each purl through `source`. Fails when a finding is at or above
/// `rule.fail_at` (or the database cannot answer), warns for lower ones, passes with none;
/// skipped without a database or an SBOM. Returns the counts by severity (info counts as low).
pub fn vulnerabilities(
    purls: Option<&[String]>,
    source: Option<&dyn VulnSource>,
    rule: &VerdictRule,
) -> (Check, VulnerabilityCounts) {
    let mut counts = VulnerabilityCounts::default();
    let Some(source) = source else {
        return (skipped(VULNERABILITIES, "no vulnerability database is configured"), counts);
    };
    let Some(purls) = purls else {
        return (skipped(VULNERABILITIES, "no valid SBOM, so there are no components to look up"), counts);
    };
    let mut b = Builder::new(VULNERABILITIES);
    let mut seen = BTreeSet::new();
    for purl in purls {
        let found = match source.affecting(purl) {
            Ok(found) => found,
            Err(e) => {
                b.fail(finding_at(
                    Severity::High,
                    format!("the vulnerability database cannot answer: {e}"),
                    purl.clone(),
                ));
                continue;
            }
        };
        for v in found {
            if !seen.insert((v.id.clone(), purl.clone())) {
                continue;
            }
            match v.severity {
                Severity::Critical => counts.critical += 1,
                Severity::High => counts.high += 1,
                Severity::Medium => counts.medium += 1,
                Severity::Low | Severity::Info => counts.low += 1,
                Severity::Unknown => counts.unknown += 1,
            }
            let (name, version) = purl_name_version(purl);
            let fixed = if v.fixed.is_empty() { "no fixed version is known".to_string() } else { v.fixed.join(", ") };
            let summary = if v.summary.trim().is_empty() { v.id.clone() } else { v.summary.trim().to_string() };
            let f = Finding {
                severity: Some(v.severity),
                message: format!("{name} {version} is affected: {summary}; fixed in {fixed}"),
                id: Some(v.id.clone()),
                location: Some(purl.clone()),
            };
            if rule.blocks(v.severity) { b.fail(f) } else { b.warn(f) }
        }
    }
    let revision = source.revision().map_or_else(|e| format!("unknown revision ({e})"), |r| format!("revision {r}"));
    b.note(format!("{} packages looked up in the vulnerability database ({revision})", purls.len()));
    (b.done(), counts)
}

/// Name (namespace included, percent-decoded) and version of a purl:
/// `pkg:npm/%40scope/name@1.2.3` → (`@scope/name`, `1.2.3`).
fn purl_name_version(purl: &str) -> (String, String) {
    let rest = purl.strip_prefix("pkg:").unwrap_or(purl);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    let (path, version) = match rest.rsplit_once('@') {
        Some((p, v)) if !p.is_empty() && !v.contains('/') => (p, v),
        _ => (rest, ""),
    };
    let name = path.split_once('/').map_or(path, |(_, n)| n);
    (percent_decode(name), percent_decode(version))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `conformance`: launches the plugin with the runner's sandbox (a runner with a policy just
/// for this: third-party allowed, no signature or approval requirement, egress to the
/// manifest's hosts only, no secrets, the operator's limits) and runs the embedded runner-API
/// suite against it. `blocked` says why an earlier check keeps it from running. Returns the
/// check and the runner API versions the plugin answered with on `GET /v1/info`.
pub async fn conformance(
    reference: &str,
    settings: &Settings,
    manifest: Option<&PluginManifest>,
    blocked: Option<String>,
) -> (Check, Vec<String>) {
    let Some(sandbox) = &settings.conformance else {
        return (skipped(CONFORMANCE, "conformance testing is not configured for this verifier"), Vec::new());
    };
    if let Some(why) = blocked {
        return (skipped(CONFORMANCE, why), Vec::new());
    }
    let Some(manifest) = manifest else {
        return (skipped(CONFORMANCE, "no valid plugin manifest to drive the suite"), Vec::new());
    };
    if !runtime_available(&sandbox.runtime) {
        return (
            skipped(
                CONFORMANCE,
                format!("the OCI runtime {:?} is not installed, so the plugin cannot be launched", sandbox.runtime),
            ),
            Vec::new(),
        );
    }
    let mut b = Builder::new(CONFORMANCE);
    let policy = Policy {
        mode: Mode::ThirdParty,
        require_signatures: false,
        require_approval: false,
        allowed_egress: manifest.outbound_hosts().to_vec(),
        allowed_secrets: Vec::new(),
        limits: settings.limits.clone(),
        ..Policy::default()
    };
    let mut config = RunnerConfig::new(&sandbox.data_dir, policy, Trust::default());
    config.runtime = sandbox.runtime.clone();
    config.remote = settings.remote.clone();
    config.start_timeout = sandbox.start_timeout;
    // The plugin's declared hosts lead to a stub upstream: the suite tests the plugin, not
    // whatever answers on the internet (the egress allow list still applies).
    let stub = match stub_upstream().await {
        Ok(s) => s,
        Err(e) => {
            b.fail(finding(Severity::High, format!("the stub upstream cannot start: {e}")));
            return (b.done(), Vec::new());
        }
    };
    config.egress_redirect = Some(stub.0);
    let _stub = AbortOnDrop(stub.1);
    let runner = match Runner::new(config) {
        Ok(r) => r,
        Err(e) => {
            b.fail(finding(Severity::High, format!("the sandbox runner cannot start: {e}")));
            return (b.done(), Vec::new());
        }
    };
    let installed = match runner.install(reference).await {
        Ok(i) => i,
        Err(e) => {
            b.fail(finding(Severity::High, format!("the runner could not install the plugin: {e}")));
            return (b.done(), Vec::new());
        }
    };
    let instance = match runner.start(&installed, "conformance").await {
        Ok(i) => i,
        Err(e) => {
            b.fail(finding(Severity::High, format!("the plugin did not start in the sandbox: {e}")));
            return (b.done(), Vec::new());
        }
    };
    let outcome = async {
        let cases = crate::conformance::builtin_cases().map_err(|e| e.to_string())?;
        let target = crate::conformance::Target::new(&instance.url, instance.key().to_vec(), manifest.clone())
            .map_err(|e| e.to_string())?;
        crate::conformance::run(&target, &cases).await.map_err(|e| e.to_string())
    }
    .await;
    instance.stop().await;
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            b.fail(finding(Severity::High, format!("the conformance suite could not run: {e}")));
            return (b.done(), Vec::new());
        }
    };
    for r in report.failures() {
        b.fail(Finding {
            severity: Some(Severity::High),
            message: format!("{}: {}", r.name(), r.reason),
            id: Some(r.case_id.clone()),
            location: Some(format!("{} {}", r.sent.method, r.sent.path)).filter(|l| l.trim() != ""),
        });
    }
    b.note(format!(
        "runner API v1 suite: {} passed, {} failed, {} skipped",
        report.passed(),
        report.failed(),
        report.skipped()
    ));
    let answered = report
        .results
        .iter()
        .find(|r| r.case_id == INFO_CASE && r.received.as_ref().is_some_and(|x| x.status == 200))
        .and_then(|r| serde_json::from_str::<Value>(&r.received.as_ref()?.body).ok())
        .and_then(|v| v.get("runner_api_versions").cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default();
    (b.done(), answered)
}

/// Whether `runtime` is an executable file, by path or on `PATH`.
fn runtime_available(runtime: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if runtime.contains('/') {
        return executable(Path::new(runtime));
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(runtime))))
}

/// `policy-lint`: what the manifest asks for against what it declares, read from the raw
/// document so it reports even when the schema check failed: `outbound_http` iff outbound
/// hosts, `secrets_read` iff secrets, hosts that are wildcards, IP literals or not host names,
/// the image user (root, missing or non-numeric), and resource requests above the operator's
/// maxima (warnings: the runner clamps them). The manifest has no field for writable paths
/// (only the `/tmp` tmpfs exists in the sandbox), so there is no rule for them.
pub fn policy_lint(document: Option<&Value>, image_config: Option<&Value>, limits: &LimitsPolicy) -> Check {
    let Some(doc) = document else {
        return skipped(POLICY_LINT, "no plugin manifest could be read, so there is nothing to lint");
    };
    let mut b = Builder::new(POLICY_LINT);
    let strings = |pointer: &str| -> Vec<String> {
        doc.pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let capabilities = strings("/capabilities");
    let position = |name: &str| capabilities.iter().position(|c| c == name);
    let hosts = strings("/network/outbound_hosts");
    let secrets = strings("/secrets");

    match (position("outbound_http"), hosts.is_empty()) {
        (Some(i), true) => b.fail(finding_at(
            Severity::Medium,
            "capability outbound_http is requested but network.outbound_hosts is empty: the egress proxy would refuse every call",
            format!("/capabilities/{i}"),
        )),
        (None, false) => b.fail(finding_at(
            Severity::Medium,
            format!(
                "network.outbound_hosts declares {} but capability outbound_http is not requested",
                hosts.join(", ")
            ),
            "/network/outbound_hosts",
        )),
        _ => {}
    }
    match (position("secrets_read"), secrets.is_empty()) {
        (Some(i), true) => b.fail(finding_at(
            Severity::Medium,
            "capability secrets_read is requested but secrets is empty: declare the secrets the plugin reads",
            format!("/capabilities/{i}"),
        )),
        (None, false) => b.fail(finding_at(
            Severity::Medium,
            format!("secrets declares {} but capability secrets_read is not requested", secrets.join(", ")),
            "/secrets",
        )),
        _ => {}
    }
    for (i, host) in hosts.iter().enumerate() {
        if let Err(why) = check_outbound_host(host) {
            b.fail(finding_at(
                Severity::Medium,
                format!("outbound host {why}"),
                format!("/network/outbound_hosts/{i}"),
            ));
        }
    }

    match image_config {
        None => b.note("the image config could not be read, so its user was not checked"),
        Some(config) => {
            let user = config.pointer("/config/User").and_then(Value::as_str).unwrap_or("");
            if user.is_empty() {
                b.fail(finding_at(
                    Severity::High,
                    "the image config sets no user (config.User), so the plugin would run as root",
                    "config.User",
                ));
            } else if let Err(why) = crate::runner::spec::image_user(config) {
                b.fail(finding_at(Severity::High, why, "config.User"));
            }
        }
    }

    for (field, max) in [
        ("cpu_millicores", limits.max_cpu_millicores),
        ("memory_mib", limits.max_memory_mib),
        ("pids", limits.max_pids),
    ] {
        let pointer = format!("/resources/{field}");
        if let Some(asked) = doc.pointer(&pointer).and_then(Value::as_u64)
            && asked > max
        {
            b.warn(finding_at(
                Severity::Low,
                format!("resources.{field} requests {asked}, above this operator's maximum {max}: the runner clamps it to {max}"),
                pointer,
            ));
        }
    }
    b.done()
}

/// `review`: skipped without a review; an approval passes, a rejection fails.
pub fn review(review: Option<&Review>) -> Check {
    let Some(r) = review else {
        return skipped(REVIEW, "no manual review");
    };
    let note = r.note.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let (status, verb, severity) = match r.decision {
        ReviewDecision::Approve => (CheckStatus::Pass, "approved", Severity::Info),
        ReviewDecision::Reject => (CheckStatus::Fail, "rejected", Severity::High),
    };
    let message = match note {
        Some(n) => format!("{verb} by {}: {n}", r.by),
        None => format!("{verb} by {}", r.by),
    };
    Check { name: REVIEW.to_string(), status, findings: vec![finding(severity, message)] }
}

/// `MAJOR.MINOR` as a semver version `MAJOR.MINOR.0`.
fn api_version(v: &str) -> Option<semver::Version> {
    let (major, minor) = v.trim().split_once('.')?;
    Some(semver::Version::new(major.parse().ok()?, minor.parse().ok()?, 0))
}

/// The report's compatibility result: the manifest's `compatibility.runner_api` requirement
/// against the runner API versions this deployment supports, `min_core`/`min_runner` against
/// its versions, and — when the plugin ran — the versions it answered with on `GET /v1/info`
/// (reported as `runner_api`). Read from the raw document, so an otherwise invalid manifest
/// still gets an answer.
pub fn compatibility(document: Option<&Value>, settings: &Settings, answered: &[String]) -> CompatibilityResult {
    let runner_api: Vec<String> = answered.iter().filter(|v| api_version(v).is_some()).cloned().collect();
    let unknown = |message: String| CompatibilityResult {
        result: CompatibilityOutcome::Unknown,
        runner_api: runner_api.clone(),
        message: Some(message),
    };
    let Some(doc) = document else {
        return unknown("no plugin manifest could be read".to_string());
    };
    let field = |k: &str| doc.pointer(&format!("/compatibility/{k}")).and_then(Value::as_str);
    let Some(requirement) = field("runner_api") else {
        return unknown("the plugin manifest declares no compatibility.runner_api".to_string());
    };
    let req = match semver::VersionReq::parse(requirement) {
        Ok(r) => r,
        Err(e) => {
            return unknown(format!("compatibility.runner_api {requirement:?} is not a version requirement: {e}"));
        }
    };
    let supported: Vec<(&String, semver::Version)> =
        settings.runner_api.iter().filter_map(|s| Some((s, api_version(s)?))).collect();
    let matching: Vec<&String> = supported.iter().filter(|(_, v)| req.matches(v)).map(|(s, _)| *s).collect();
    let mut problems = Vec::new();
    let mut unsure = Vec::new();
    let mut fine = Vec::new();
    if matching.is_empty() {
        let list: Vec<&str> = settings.runner_api.iter().map(String::as_str).collect();
        problems.push(format!(
            "the plugin requires runner API {requirement}; this deployment speaks {}",
            if list.is_empty() { "none".to_string() } else { list.join(", ") }
        ));
    } else {
        fine.push(format!(
            "runner API {} satisfies {requirement}",
            matching.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    for (key, what, have) in
        [("min_core", "core", &settings.core_version), ("min_runner", "runner", &settings.runner_version)]
    {
        let Some(min) = field(key) else { continue };
        match semver::Version::parse(min) {
            Ok(min) if *have < min => {
                problems.push(format!("the plugin requires {what} {min} or newer; this deployment runs {have}"))
            }
            Ok(min) => fine.push(format!("{what} {have} ≥ {min}")),
            Err(e) => unsure.push(format!("compatibility.{key} {min:?} is not a version: {e}")),
        }
    }
    if !runner_api.is_empty() {
        let majors: BTreeSet<u64> = supported.iter().map(|(_, v)| v.major).collect();
        if !runner_api.iter().filter_map(|v| api_version(v)).any(|v| majors.contains(&v.major)) {
            problems.push(format!(
                "the plugin answers runner API {} on GET /v1/info, no major version this deployment speaks",
                runner_api.join(", ")
            ));
        } else {
            fine.push(format!("the plugin answers runner API {}", runner_api.join(", ")));
        }
    }
    if !problems.is_empty() {
        return CompatibilityResult {
            result: CompatibilityOutcome::Incompatible,
            runner_api,
            message: Some(problems.join("; ")),
        };
    }
    if !unsure.is_empty() {
        return unknown(unsure.join("; "));
    }
    CompatibilityResult { result: CompatibilityOutcome::Compatible, runner_api, message: Some(fine.join("; ")) }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A loopback HTTP server answering every request `200 OK`, for conformance runs.
async fn stub_upstream() -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "berth conformance stub upstream\n";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::memory::MemoryStore;
    use crate::content::{PredecessorFinder, Pusher, Reader, descriptor_for};
    use crate::pack::{PackSpec, pack};
    use crate::sign::keys::test_key;
    use crate::verify::Vulnerability;
    use serde_json::json;

    const REPO: &str = "aisopsflow/json-transform";
    const PURL: &str = "pkg:cargo/serde@1.0.0";

    fn manifest_doc(image: &Descriptor) -> Value {
        let text = include_str!("../../artifacts/plugins/json-transform/plugin.json");
        let mut doc: Value = serde_json::from_str(text).unwrap();
        doc["runtime"]["image"] = json!(format!("127.0.0.1:5000/{REPO}@{}", image.digest()));
        doc
    }

    async fn packed(store: &MemoryStore, edit: impl FnOnce(&mut PackSpec)) -> Descriptor {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("plugin");
        std::fs::write(&bin, b"not really a plugin").unwrap();
        let mut spec = PackSpec::new(&bin);
        edit(&mut spec);
        pack(&spec, store, None).await.unwrap()
    }

    async fn attach(store: &MemoryStore, subject: &Descriptor, artifact_type: &str, doc: &[u8]) -> Descriptor {
        crate::artifacts::attach(store, subject, artifact_type, doc, &BTreeMap::new()).await.unwrap()
    }

    async fn attach_manifest(store: &MemoryStore, image: &Descriptor, doc: &Value) -> Descriptor {
        attach(store, image, PLUGIN_MANIFEST_MEDIA_TYPE, &serde_json::to_vec(doc).unwrap()).await
    }

    async fn referrers(store: &MemoryStore, image: &Descriptor) -> Vec<Descriptor> {
        store.predecessors(image).await.unwrap()
    }

    fn bom(components: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1, "components": components}),
        )
        .unwrap()
    }

    fn messages(c: &Check) -> String {
        c.findings.iter().map(|f| format!("{} @ {:?}", f.message, f.location)).collect::<Vec<_>>().join("\n")
    }

    fn located<'a>(c: &'a Check, location: &str) -> Option<&'a Finding> {
        c.findings.iter().find(|f| f.location.as_deref() == Some(location))
    }

    #[tokio::test]
    async fn schema_passes_for_a_valid_manifest_pinned_to_this_image() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let doc = manifest_doc(&image);
        let artifact = attach_manifest(&store, &image, &doc).await;
        let (check, attached) = schema(&store, &image, REPO, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Pass, "{}", messages(&check));
        let attached = attached.unwrap();
        assert_eq!(attached.artifact.digest(), artifact.digest());
        assert_eq!(attached.publisher(), Some("aisopsflow"));
        assert_eq!(attached.manifest.unwrap().name, "json-transform");
    }

    #[tokio::test]
    async fn schema_fails_on_a_runtime_image_tag_naming_the_tag() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let mut doc = manifest_doc(&image);
        doc["runtime"]["image"] = json!(format!("127.0.0.1:5000/{REPO}:v1"));
        attach_manifest(&store, &image, &doc).await;
        let (check, attached) = schema(&store, &image, REPO, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail);
        let f = located(&check, "/runtime/image").unwrap_or_else(|| panic!("{}", messages(&check)));
        assert!(f.message.contains("\"v1\""), "{}", f.message);
        // The raw document is still there for the lint and the compatibility result.
        assert!(attached.unwrap().manifest.is_none());
    }

    #[tokio::test]
    async fn schema_fails_when_runtime_image_names_another_digest() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let other = packed(&store, |s| s.env = vec!["X=1".into()]).await;
        attach_manifest(&store, &image, &manifest_doc(&other)).await;
        let (check, _) = schema(&store, &image, REPO, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail);
        let f = located(&check, "/runtime/image").unwrap();
        assert!(
            f.message.contains(&other.digest().to_string()) && f.message.contains("not this image"),
            "{}",
            f.message
        );
    }

    #[tokio::test]
    async fn schema_reports_every_problem_with_its_pointer_and_the_publisher_namespace() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let mut doc = manifest_doc(&image);
        doc["version"] = json!("one");
        doc["capabilities"] = json!(["outbound_http", "secrets_read"]);
        attach_manifest(&store, &image, &doc).await;
        let (check, _) = schema(&store, &image, "someone-else/json-transform", &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail);
        for pointer in ["/version", "/capabilities/0", "/publisher"] {
            assert!(located(&check, pointer).is_some(), "{pointer}: {}", messages(&check));
        }
    }

    #[tokio::test]
    async fn schema_fails_without_a_manifest_and_with_two() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let (check, attached) = schema(&store, &image, REPO, &[]).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings[0].message.contains("no plugin manifest artifact"));
        assert!(attached.is_none());

        let doc = manifest_doc(&image);
        attach_manifest(&store, &image, &doc).await;
        let mut other = doc.clone();
        other["description"] = json!("Another description.");
        attach_manifest(&store, &image, &other).await;
        let (check, attached) = schema(&store, &image, REPO, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings[0].message.contains("2 plugin manifest artifacts"), "{}", messages(&check));
        assert!(attached.is_none());
    }

    #[tokio::test]
    async fn schema_fails_on_a_manifest_that_is_not_json() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        attach(&store, &image, PLUGIN_MANIFEST_MEDIA_TYPE, b"name: yaml?").await;
        let (check, attached) = schema(&store, &image, REPO, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings[0].message.contains("not JSON"));
        assert!(attached.is_none());
    }

    #[tokio::test]
    async fn image_passes_for_a_packed_image_and_returns_its_config() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let (check, config) = image_check(&store, &image).await;
        assert_eq!(check.status, CheckStatus::Pass, "{}", messages(&check));
        assert!(check.findings[0].message.contains("1 layer(s)"));
        assert_eq!(config.unwrap()["config"]["User"], "65532:65532");
    }

    async fn image_check(store: &MemoryStore, d: &Descriptor) -> (Check, Option<Value>) {
        image(store, d).await
    }

    #[tokio::test]
    async fn image_fails_for_another_platform() {
        let store = MemoryStore::new();
        let arm = packed(&store, |s| s.architecture = "arm64".into()).await;
        let (check, config) = image_check(&store, &arm).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(messages(&check).contains("\"linux\"/\"arm64\""), "{}", messages(&check));
        assert!(config.is_some());
    }

    async fn push_index(store: &MemoryStore, entries: &[(&Descriptor, &str)]) -> Descriptor {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(d, arch)| {
                json!({"mediaType": media::OCI_MANIFEST, "digest": d.digest().to_string(), "size": d.size(),
                       "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        let bytes =
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests}))
                .unwrap();
        let d = descriptor_for(media::OCI_INDEX, &bytes);
        let reader: Reader = Box::pin(std::io::Cursor::new(bytes));
        store.push(&d, reader).await.unwrap();
        d
    }

    #[tokio::test]
    async fn image_index_is_resolved_to_linux_amd64_or_fails() {
        let store = MemoryStore::new();
        let amd = packed(&store, |_| {}).await;
        let arm = packed(&store, |s| s.architecture = "arm64".into()).await;
        let index = push_index(&store, &[(&arm, "arm64"), (&amd, "amd64")]).await;
        let (check, config) = image_check(&store, &index).await;
        assert_eq!(check.status, CheckStatus::Pass, "{}", messages(&check));
        assert!(check.findings[0].message.contains(&amd.digest().to_string()));
        assert_eq!(config.unwrap()["architecture"], "amd64");

        let only_arm = push_index(&store, &[(&arm, "arm64")]).await;
        let (check, config) = image_check(&store, &only_arm).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(messages(&check).contains("no linux/amd64 manifest (it has: linux/arm64)"), "{}", messages(&check));
        assert!(config.is_none());
    }

    /// Serves fixed bytes whatever is asked for.
    struct Fixed(Vec<u8>);

    #[async_trait::async_trait]
    impl Fetcher for Fixed {
        async fn fetch(&self, _: &Descriptor) -> crate::content::Result<Reader> {
            Ok(Box::pin(std::io::Cursor::new(self.0.clone())))
        }
    }

    #[tokio::test]
    async fn streamed_blobs_are_checked_against_digest_and_size() {
        let d = descriptor_for("application/vnd.oci.image.layer.v1.tar+gzip", b"layer bytes");
        assert_eq!(stream_verify(&Fixed(b"layer bytes".to_vec()), &d).await.unwrap(), 11);
        let e = stream_verify(&Fixed(b"layer bytez".to_vec()), &d).await.unwrap_err();
        assert!(matches!(e, ContentError::DigestMismatch { .. }), "{e}");
        let e = stream_verify(&Fixed(b"layer".to_vec()), &d).await.unwrap_err();
        assert!(matches!(e, ContentError::SizeMismatch { expected: 11, actual: 5 }), "{e}");
        let e = stream_verify(&Fixed(b"layer bytes and more".to_vec()), &d).await.unwrap_err();
        assert!(matches!(e, ContentError::SizeMismatch { .. }), "{e}");
    }

    async fn signed_setup(signer: Option<&crate::sign::KeyPair>) -> (MemoryStore, Descriptor, AttachedManifest) {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let doc = manifest_doc(&image);
        let artifact = attach_manifest(&store, &image, &doc).await;
        if let Some(key) = signer {
            crate::sign::sign_and_attach(&store, &image, REPO, key).await.unwrap();
            crate::sign::sign_and_attach(&store, &artifact, REPO, key).await.unwrap();
        }
        (store, image, AttachedManifest { artifact, document: doc, manifest: None })
    }

    fn registered(key: &crate::sign::KeyPair) -> BTreeMap<String, Vec<PublicKey>> {
        BTreeMap::from([("aisopsflow".to_string(), vec![key.public_key().clone()])])
    }

    #[tokio::test]
    async fn signatures_pass_with_a_key_registered_for_the_publisher() {
        let key = test_key();
        let (store, image, attached) = signed_setup(Some(&key)).await;
        let check = signatures(&store, &image, Some(&attached), &registered(&key)).await;
        assert_eq!(check.status, CheckStatus::Pass, "{}", messages(&check));
        assert_eq!(check.findings.len(), 2);
        assert!(check.findings.iter().all(|f| f.message.contains(key.key_id())));
    }

    #[tokio::test]
    async fn signatures_by_another_key_are_not_registered_for_the_publisher() {
        let (key, other) = (test_key(), test_key());
        let (store, image, attached) = signed_setup(Some(&other)).await;
        let check = signatures(&store, &image, Some(&attached), &registered(&key)).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(check.findings.len(), 2, "{}", messages(&check));
        for f in &check.findings {
            assert!(f.message.contains("not registered for publisher aisopsflow"), "{}", f.message);
            assert!(f.message.contains(other.key_id()), "{}", f.message);
        }
    }

    #[tokio::test]
    async fn unsigned_subjects_and_publishers_without_keys_fail() {
        let key = test_key();
        let (store, image, attached) = signed_setup(None).await;
        let check = signatures(&store, &image, Some(&attached), &registered(&key)).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings.iter().all(|f| f.message.contains("unsigned")), "{}", messages(&check));
        assert_eq!(located(&check, image.digest().as_ref()).map(|f| f.severity), Some(Some(Severity::High)));

        let check = signatures(&store, &image, Some(&attached), &BTreeMap::new()).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings[0].message.contains("no keys are registered for publisher aisopsflow"));

        let check = signatures(&store, &image, None, &registered(&key)).await;
        assert_eq!(check.status, CheckStatus::Skipped);
    }

    #[tokio::test]
    async fn sbom_must_be_attached_and_valid() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let (check, summary) = sbom(&store, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings[0].message.contains("no SBOM is attached"));
        assert!(summary.is_none());

        let bad = bom(json!([{"type": "library", "name": "serde", "version": "1.0.0", "purl": "not a purl"}]));
        attach(&store, &image, SBOM_ARTIFACT_TYPE, &bad).await;
        let (check, summary) = sbom(&store, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Fail, "{}", messages(&check));
        assert!(
            check.findings.iter().any(|f| f.location.as_deref().is_some_and(|l| l.contains("purl"))),
            "{}",
            messages(&check)
        );
        assert!(summary.is_none());
    }

    #[tokio::test]
    async fn sbom_components_without_purls_warn() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        let doc = bom(json!([
            {"type": "library", "name": "serde", "version": "1.0.0", "purl": PURL},
            {"type": "library", "name": "vendored", "version": "0.1.0"}
        ]));
        attach(&store, &image, SBOM_ARTIFACT_TYPE, &doc).await;
        let (check, summary) = sbom(&store, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Warn, "{}", messages(&check));
        assert!(check.findings[0].message.contains("1 of 2 components have no purl"));
        assert_eq!(summary.unwrap().purls, vec![PURL.to_string()]);
    }

    #[tokio::test]
    async fn sbom_with_purls_passes() {
        let store = MemoryStore::new();
        let image = packed(&store, |_| {}).await;
        attach(
            &store,
            &image,
            SBOM_ARTIFACT_TYPE,
            &bom(json!([{"type": "library", "name": "serde", "version": "1.0.0", "purl": PURL}])),
        )
        .await;
        let (check, summary) = sbom(&store, &referrers(&store, &image).await).await;
        assert_eq!(check.status, CheckStatus::Pass, "{}", messages(&check));
        assert_eq!(summary.unwrap().components, 1);
    }

    /// Answers from a fixed table; `None` for a purl means "the database cannot answer".
    struct Table(BTreeMap<String, Option<Vec<Vulnerability>>>);

    impl VulnSource for Table {
        fn affecting(&self, purl: &str) -> Result<Vec<Vulnerability>, String> {
            match self.0.get(purl) {
                Some(Some(v)) => Ok(v.clone()),
                Some(None) => Err("database file is corrupt".to_string()),
                None => Ok(Vec::new()),
            }
        }
        fn revision(&self) -> Result<String, String> {
            Ok("r1".to_string())
        }
    }

    fn vuln(id: &str, purl: &str, severity: Severity, fixed: &[&str]) -> Vulnerability {
        Vulnerability {
            id: id.to_string(),
            aliases: Vec::new(),
            purl: purl.to_string(),
            severity,
            summary: "Stack overflow in the deserializer".to_string(),
            fixed: fixed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn vulnerabilities_fail_at_the_threshold_and_warn_below_it() {
        let purls = vec![PURL.to_string(), "pkg:npm/%40scope/left-pad@1.2.3".to_string()];
        let table = Table(BTreeMap::from([
            (PURL.to_string(), Some(vec![vuln("GHSA-aaaa-bbbb-cccc", PURL, Severity::High, &["1.0.1", "2.0.0"])])),
            (purls[1].clone(), Some(vec![vuln("GHSA-dddd-eeee-ffff", &purls[1], Severity::Medium, &[])])),
        ]));
        let rule = VerdictRule::default();
        let (check, counts) = vulnerabilities(Some(&purls), Some(&table), &rule);
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(counts, VulnerabilityCounts { high: 1, medium: 1, ..Default::default() });
        let f = &check.findings[0];
        assert_eq!(f.id.as_deref(), Some("GHSA-aaaa-bbbb-cccc"));
        assert_eq!(f.severity, Some(Severity::High));
        assert_eq!(f.location.as_deref(), Some(PURL));
        assert_eq!(f.message, "serde 1.0.0 is affected: Stack overflow in the deserializer; fixed in 1.0.1, 2.0.0");
        assert_eq!(
            check.findings[1].message,
            "@scope/left-pad 1.2.3 is affected: Stack overflow in the deserializer; fixed in no fixed version is known"
        );
        assert!(check.findings[2].message.contains("revision r1"));

        // Only the medium one: a warning.
        let (check, _) = vulnerabilities(Some(&purls[1..]), Some(&table), &rule);
        assert_eq!(check.status, CheckStatus::Warn);
        // With the threshold at medium it fails.
        let strict = VerdictRule { fail_at: Severity::Medium, ..VerdictRule::default() };
        assert_eq!(vulnerabilities(Some(&purls[1..]), Some(&table), &strict).0.status, CheckStatus::Fail);
    }

    #[test]
    fn vulnerabilities_pass_clean_fail_on_database_errors_and_skip_without_inputs() {
        let purls = vec![PURL.to_string()];
        let rule = VerdictRule::default();
        let clean = Table(BTreeMap::new());
        let (check, counts) = vulnerabilities(Some(&purls), Some(&clean), &rule);
        assert_eq!((check.status, counts), (CheckStatus::Pass, VulnerabilityCounts::default()));
        let broken = Table(BTreeMap::from([(PURL.to_string(), None)]));
        let (check, _) = vulnerabilities(Some(&purls), Some(&broken), &rule);
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(check.findings[0].message.contains("cannot answer"));
        assert_eq!(vulnerabilities(Some(&purls), None, &rule).0.status, CheckStatus::Skipped);
        assert_eq!(vulnerabilities(None, Some(&clean), &rule).0.status, CheckStatus::Skipped);
    }

    #[test]
    fn purls_give_name_and_version() {
        assert_eq!(purl_name_version("pkg:cargo/serde@1.0.0"), ("serde".into(), "1.0.0".into()));
        assert_eq!(purl_name_version("pkg:npm/%40scope/name@1.2.3?x=y#sub"), ("@scope/name".into(), "1.2.3".into()));
        assert_eq!(
            purl_name_version("pkg:golang/golang.org/x/net@v0.17.0"),
            ("golang.org/x/net".into(), "v0.17.0".into())
        );
        assert_eq!(purl_name_version("pkg:pypi/requests"), ("requests".into(), "".into()));
    }

    fn config(user: Option<&str>) -> Value {
        match user {
            Some(u) => json!({"os": "linux", "architecture": "amd64", "config": {"User": u}}),
            None => json!({"os": "linux", "architecture": "amd64", "config": {}}),
        }
    }

    fn json_transform() -> Value {
        serde_json::from_str(include_str!("../../artifacts/plugins/json-transform/plugin.json")).unwrap()
    }

    #[test]
    fn policy_lint_passes_a_well_declared_plugin_and_skips_without_a_manifest() {
        let limits = LimitsPolicy::default();
        let check = policy_lint(Some(&json_transform()), Some(&config(Some("65532:65532"))), &limits);
        assert_eq!(check.status, CheckStatus::Pass, "{}", messages(&check));
        assert_eq!(policy_lint(None, None, &limits).status, CheckStatus::Skipped);
    }

    #[test]
    fn policy_lint_refuses_root_missing_and_named_users() {
        let limits = LimitsPolicy::default();
        let doc = json_transform();
        for (user, expect) in [(Some("0:0"), "root"), (None, "sets no user"), (Some("nobody"), "not a numeric")] {
            let check = policy_lint(Some(&doc), Some(&config(user)), &limits);
            assert_eq!(check.status, CheckStatus::Fail, "{user:?}");
            let f = located(&check, "config.User").unwrap();
            assert!(f.message.contains(expect), "{user:?}: {}", f.message);
        }
    }

    #[test]
    fn policy_lint_checks_capabilities_against_declarations_and_hosts() {
        let limits = LimitsPolicy::default();
        let user = config(Some("1000:1000"));
        let mut doc = json_transform();
        doc["capabilities"] = json!(["outbound_http"]);
        doc["network"]["outbound_hosts"] = json!([]);
        let check = policy_lint(Some(&doc), Some(&user), &limits);
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(located(&check, "/capabilities/0").unwrap().message.contains("outbound_http"));
        assert!(located(&check, "/secrets").unwrap().message.contains("secrets_read is not requested"));

        let mut doc = json_transform();
        doc["network"]["outbound_hosts"] = json!(["*.example.com", "10.0.0.7", "api.example.com"]);
        let check = policy_lint(Some(&doc), Some(&user), &limits);
        assert_eq!(check.status, CheckStatus::Fail);
        assert!(located(&check, "/network/outbound_hosts").unwrap().message.contains("outbound_http is not requested"));
        assert!(located(&check, "/network/outbound_hosts/0").unwrap().message.contains("wildcard"));
        assert!(located(&check, "/network/outbound_hosts/1").unwrap().message.contains("IP address"));
        assert!(located(&check, "/network/outbound_hosts/2").is_none());

        let mut doc = json_transform();
        doc["secrets"] = json!([]);
        let check = policy_lint(Some(&doc), Some(&user), &limits);
        assert!(located(&check, "/capabilities/0").unwrap().message.contains("secrets_read"));
    }

    #[test]
    fn policy_lint_warns_about_resource_requests_above_the_maxima() {
        let limits = LimitsPolicy { max_memory_mib: 64, ..LimitsPolicy::default() };
        let mut doc = json_transform();
        doc["resources"]["memory_mib"] = json!(1024);
        let check = policy_lint(Some(&doc), Some(&config(Some("1:1"))), &limits);
        assert_eq!(check.status, CheckStatus::Warn, "{}", messages(&check));
        let f = located(&check, "/resources/memory_mib").unwrap();
        assert!(f.message.contains("1024") && f.message.contains("maximum 64"), "{}", f.message);
    }

    #[test]
    fn review_is_skipped_approved_or_rejected() {
        assert_eq!(review(None).status, CheckStatus::Skipped);
        assert_eq!(review(None).findings[0].message, "no manual review");
        let approve = Review { decision: ReviewDecision::Approve, by: "ana".into(), note: Some("looks fine".into()) };
        let check = review(Some(&approve));
        assert_eq!(check.status, CheckStatus::Pass);
        assert_eq!(check.findings[0].message, "approved by ana: looks fine");
        let reject = Review { decision: ReviewDecision::Reject, by: "bo".into(), note: None };
        let check = review(Some(&reject));
        assert_eq!(check.status, CheckStatus::Fail);
        assert_eq!(check.findings[0].message, "rejected by bo");
    }

    fn settings(core: &str) -> Settings {
        Settings {
            core_version: core.parse().unwrap(),
            runner_version: "0.1.0".parse().unwrap(),
            ..Settings::default()
        }
    }

    #[test]
    fn compatibility_compares_requirements_with_the_deployment() {
        let doc = json_transform();
        let ok = compatibility(Some(&doc), &settings("1.0.0"), &["1.0".to_string()]);
        assert_eq!(ok.result, CompatibilityOutcome::Compatible, "{:?}", ok.message);
        assert_eq!(ok.runner_api, vec!["1.0".to_string()]);

        let old_core = compatibility(Some(&doc), &settings("0.9.0"), &[]);
        assert_eq!(old_core.result, CompatibilityOutcome::Incompatible);
        assert!(old_core.message.unwrap().contains("core 1.0.0 or newer"));

        let mut newer = doc.clone();
        newer["compatibility"]["runner_api"] = json!("^1.2");
        let r = compatibility(Some(&newer), &settings("1.0.0"), &[]);
        assert_eq!(r.result, CompatibilityOutcome::Incompatible);
        assert!(r.message.unwrap().contains("runner API ^1.2"));
        let mut s = settings("1.0.0");
        s.runner_api = vec!["1.0".into(), "1.3".into()];
        assert_eq!(compatibility(Some(&newer), &s, &[]).result, CompatibilityOutcome::Compatible);

        let two = compatibility(Some(&doc), &settings("1.0.0"), &["2.0".to_string()]);
        assert_eq!(two.result, CompatibilityOutcome::Incompatible);

        assert_eq!(compatibility(None, &settings("1.0.0"), &[]).result, CompatibilityOutcome::Unknown);
        let mut odd = doc.clone();
        odd["compatibility"]["runner_api"] = json!("one point oh");
        assert_eq!(compatibility(Some(&odd), &settings("1.0.0"), &[]).result, CompatibilityOutcome::Unknown);
    }

    fn check(name: &str, status: CheckStatus) -> Check {
        Check { name: name.to_string(), status, findings: Vec::new() }
    }

    #[test]
    fn the_verdict_rule_weighs_required_checks_vulnerabilities_and_compatibility() {
        let rule = VerdictRule::default();
        assert!(ALL.iter().all(|c| rule.requires(c)));
        assert!(rule.blocks(Severity::Critical) && rule.blocks(Severity::High) && !rule.blocks(Severity::Medium));
        let compatible =
            CompatibilityResult { result: CompatibilityOutcome::Compatible, runner_api: Vec::new(), message: None };
        let none = VulnerabilityCounts::default();
        let all_pass: Vec<Check> = ALL.iter().map(|n| check(n, CheckStatus::Pass)).collect();
        assert_eq!(rule.state(&all_pass, &none, &compatible), VerificationState::Verified);

        let mut reviewed = all_pass.clone();
        reviewed[7] = check(REVIEW, CheckStatus::Fail);
        assert_eq!(rule.state(&reviewed, &none, &compatible), VerificationState::Unverified);
        let lenient = VerdictRule { required: vec![SCHEMA.to_string()], ..VerdictRule::default() };
        assert_eq!(lenient.state(&reviewed, &none, &compatible), VerificationState::Verified);

        let high = VulnerabilityCounts { high: 1, ..Default::default() };
        assert_eq!(lenient.state(&all_pass, &high, &compatible), VerificationState::Unverified);
        let medium = VulnerabilityCounts { medium: 3, ..Default::default() };
        assert_eq!(rule.state(&all_pass, &medium, &compatible), VerificationState::Verified);

        let incompatible = CompatibilityResult { result: CompatibilityOutcome::Incompatible, ..compatible.clone() };
        assert_eq!(rule.state(&all_pass, &none, &incompatible), VerificationState::Unverified);
    }

    #[tokio::test]
    async fn conformance_is_skipped_when_unconfigured_blocked_or_without_a_runtime() {
        let s = Settings::default();
        let (check, _) = conformance("127.0.0.1:1/a/b@sha256:00", &s, None, None).await;
        assert_eq!(check.status, CheckStatus::Skipped);
        assert!(check.findings[0].message.contains("not configured"));

        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            conformance: Some(ConformanceSettings {
                data_dir: dir.path().to_path_buf(),
                runtime: "no-such-runtime-here".into(),
                start_timeout: std::time::Duration::from_secs(1),
            }),
            ..Settings::default()
        };
        let (check, _) = conformance("x", &s, None, Some("the image check did not pass".into())).await;
        assert_eq!(check.findings[0].message, "the image check did not pass");
        let manifest = crate::plugin::validate(&json_transform(), None).unwrap();
        let (check, _) = conformance("x", &s, Some(&manifest), None).await;
        assert_eq!(check.status, CheckStatus::Skipped);
        assert!(check.findings[0].message.contains("no-such-runtime-here"), "{}", messages(&check));
    }
}
