//! One verification run for one image digest: [`verify`] resolves `host/repo@sha256:…` over
//! HTTP like any OCI client (`content::remote`), runs every check of [`super::checks`] and
//! assembles the report (`schemas/verification-report.v1.schema.json`); [`sign_and_attach`]
//! signs it with the verifier key as an in-toto statement (predicate type
//! [`VERIFICATION_PREDICATE_TYPE`]) in a sigstore bundle and attaches that to the image as an
//! OCI 1.1 referrer, where the catalog, the runner and every mirror read it.
//!
//! A failed check is data in the report: a registry that does not answer fails the checks
//! that needed it, and the rest are skipped or run on what could be read. The only errors
//! are a reference that names no digest (there is nothing to verify) and, for
//! [`sign_and_attach`], a report that cannot be signed or pushed.

use super::VulnSource;
use super::checks::{self, Review, Settings};
use crate::content::remote::{self, RemoteOptions};
use crate::content::{ContentError, TagResolver};
use crate::oci::ImageReference;
use crate::plugin::documents::{
    Check, CheckStatus, CompatibilityResult, Finding, Severity, Subject, VerificationReport, VerificationState,
    Verifier, VulnerabilityCounts,
};
use crate::plugin::{VERIFICATION_API_VERSION, VERIFICATION_PREDICATE_TYPE};
use crate::sign::{KeyPair, SignError, attach_signature, sign_statement};
use oci_spec::image::Descriptor;

/// Longest finding message, location and id the report schema allows.
const MAX_MESSAGE: usize = 4000;
const MAX_LOCATION: usize = 2000;
const MAX_ID: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}: not an image reference: write host[:port]/name@sha256:…")]
    Reference(String),
    #[error("{0}: names no digest; verification is of one image digest (host[:port]/name@sha256:…)")]
    NoDigest(String),
    #[error("the report is about {report}, not {image}")]
    SubjectMismatch { report: String, image: String },
    #[error("the report is not a valid verification report:\n{0}")]
    InvalidReport(String),
    #[error("{reference}: {source}")]
    Content { reference: String, source: ContentError },
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// Parses `reference` and insists on a digest.
fn pinned(reference: &str) -> Result<(ImageReference, crate::oci::Digest), PipelineError> {
    let image = ImageReference::parse(reference).map_err(|_| PipelineError::Reference(reference.to_string()))?;
    let digest = image.digest.clone().ok_or_else(|| PipelineError::NoDigest(reference.to_string()))?;
    Ok((image, digest))
}

/// Runs every check against `reference` (`host/repo@sha256:…`) and returns the report.
/// Infrastructure trouble (an unreachable registry, a database that cannot answer) is a
/// failed check, not an error; the error is for a reference that names no digest.
pub async fn verify(
    reference: &str,
    settings: &Settings,
    vulns: Option<&dyn VulnSource>,
    review: Option<&Review>,
) -> Result<VerificationReport, PipelineError> {
    let (image_ref, digest) = pinned(reference)?;
    let repository = image_ref.repository.clone();

    // What the registry-facing checks share: the repository, the image, its referrers.
    let opened = match remote::open(&image_ref, settings.remote.clone()) {
        Ok(repo) => match repo.resolve(&digest.to_string()).await {
            Ok(image) => Ok((repo, image)),
            Err(e) => Err(format!("registry: resolving {digest}: {e}")),
        },
        Err(e) => Err(format!("registry: {e}")),
    };

    let mut list = Vec::with_capacity(checks::ALL.len());
    let (attached, config, summary) = match &opened {
        Ok((repo, image)) => {
            let referrers = repo
                .referrers(&digest, None)
                .await
                .map_err(|e| format!("registry: listing the referrers of {digest}: {e}"));
            let schema = async {
                match &referrers {
                    Ok(r) => checks::schema(repo, image, &repository, r).await,
                    Err(e) => (checks::failed(checks::SCHEMA, e.clone()), None),
                }
            };
            let sbom = async {
                match &referrers {
                    Ok(r) => checks::sbom(repo, r).await,
                    Err(e) => (checks::failed(checks::SBOM, e.clone()), None),
                }
            };
            let ((schema, attached), (image_check, config), (sbom, summary)) =
                tokio::join!(schema, checks::image(repo, image), sbom);
            let signatures = checks::signatures(repo, image, attached.as_ref(), &settings.publisher_keys).await;
            list.extend([schema, image_check, signatures, sbom]);
            (attached, config, summary)
        }
        Err(why) => {
            for name in [checks::SCHEMA, checks::IMAGE, checks::SIGNATURES, checks::SBOM] {
                list.push(checks::failed(name, why.clone()));
            }
            (None, None, None)
        }
    };

    let (vulnerabilities, counts) =
        checks::vulnerabilities(summary.as_ref().map(|s| s.purls.as_slice()), vulns, &settings.verdict);
    list.push(vulnerabilities);

    let blocked = [checks::IMAGE, checks::SCHEMA].into_iter().find_map(|name| {
        let check = list.iter().find(|c| c.name == name)?;
        matches!(check.status, CheckStatus::Fail | CheckStatus::Skipped)
            .then(|| format!("the {name} check did not pass, so the plugin is not launched"))
    });
    let manifest = attached.as_ref().and_then(|a| a.manifest.as_ref());
    let (conformance, answered) = checks::conformance(reference, settings, manifest, blocked).await;
    list.push(conformance);

    let document = attached.as_ref().map(|a| &a.document);
    list.push(checks::policy_lint(document, config.as_ref(), &settings.limits));
    list.push(checks::review(review));

    let compatibility = checks::compatibility(document, settings, &answered);
    let state = judge(&mut list, &settings.verdict, &counts, &compatibility);
    for check in &mut list {
        clip_findings(check);
    }
    Ok(VerificationReport {
        api_version: VERIFICATION_API_VERSION.to_string(),
        subject: Subject { digest: digest.to_string(), repository: Some(repository) },
        verifier: Verifier { id: settings.verifier_id.clone(), version: Some(env!("CARGO_PKG_VERSION").to_string()) },
        // Milliseconds: a re-verification within the same second must still be the newest.
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        state,
        compatibility,
        checks: list,
        vulnerabilities: counts,
    })
}

/// The report's state by `rule`. The schema allows "verified" only without a failed check,
/// so on a verified plugin a failure the rule does not require becomes a warning.
fn judge(
    list: &mut [Check],
    rule: &checks::VerdictRule,
    counts: &VulnerabilityCounts,
    compatibility: &CompatibilityResult,
) -> VerificationState {
    let state = rule.state(list, counts, compatibility);
    if state == VerificationState::Verified {
        for check in list.iter_mut().filter(|c| c.status == CheckStatus::Fail) {
            check.status = CheckStatus::Warn;
            check.findings.push(Finding {
                severity: Some(Severity::Info),
                message: "this check failed, but the verdict rule does not require it: reported as a warning"
                    .to_string(),
                id: None,
                location: None,
            });
        }
    }
    state
}

/// Keeps findings within the lengths the report schema allows (a plugin's log in a start-up
/// failure can be long).
fn clip_findings(check: &mut Check) {
    for f in &mut check.findings {
        clip(&mut f.message, MAX_MESSAGE);
        if let Some(l) = &mut f.location {
            clip(l, MAX_LOCATION);
        }
        if let Some(id) = &mut f.id {
            clip(id, MAX_ID);
        }
    }
}

fn clip(text: &mut String, max: usize) {
    if text.chars().count() <= max {
        return;
    }
    let keep: String = text.chars().take(max - 1).collect();
    *text = format!("{keep}…");
}

/// Signs `report` as an in-toto statement (predicate type [`VERIFICATION_PREDICATE_TYPE`],
/// subject the image digest) with `key` and attaches it to the image as a sigstore bundle
/// referrer; returns the referrer's descriptor. The report must be valid and about this
/// image. Attaching the same report signed by the same key again pushes nothing.
pub async fn sign_and_attach(
    reference: &str,
    report: &VerificationReport,
    key: &KeyPair,
    remote: &RemoteOptions,
) -> Result<Descriptor, PipelineError> {
    let (image_ref, digest) = pinned(reference)?;
    if report.subject.digest != digest.to_string() {
        return Err(PipelineError::SubjectMismatch {
            report: report.subject.digest.clone(),
            image: digest.to_string(),
        });
    }
    let predicate = serde_json::to_value(report).map_err(|e| PipelineError::InvalidReport(e.to_string()))?;
    crate::plugin::validate_verification_report(&predicate).map_err(|e| PipelineError::InvalidReport(e.to_string()))?;
    let content = |source| PipelineError::Content { reference: reference.to_string(), source };
    let repo = remote::open(&image_ref, remote.clone()).map_err(content)?;
    let image = repo.resolve(&digest.to_string()).await.map_err(content)?;
    let bundle = sign_statement(&digest, &image_ref.repository, VERIFICATION_PREDICATE_TYPE, predicate, key)?;
    Ok(attach_signature(&repo, &image, &bundle).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::documents::CompatibilityOutcome;

    #[tokio::test]
    async fn a_reference_without_a_digest_is_an_error() {
        let s = Settings::default();
        let e = verify("127.0.0.1:5000/aisopsflow/json-transform:0.1.0", &s, None, None).await.unwrap_err();
        assert!(matches!(e, PipelineError::NoDigest(_)), "{e}");
        let e = verify("json-transform", &s, None, None).await.unwrap_err();
        assert!(matches!(e, PipelineError::Reference(_)), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_a_failed_report_not_an_error() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let reference = format!("127.0.0.1:{port}/aisopsflow/json-transform@sha256:{}", "ab".repeat(32));
        let mut s = Settings::default();
        s.remote.max_retries = Some(0);
        let review = Review { decision: checks::ReviewDecision::Approve, by: "ana".into(), note: None };
        let report = verify(&reference, &s, None, Some(&review)).await.unwrap();
        assert_eq!(report.state, VerificationState::Unverified);
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, checks::ALL);
        for c in &report.checks[..4] {
            assert_eq!(c.status, CheckStatus::Fail, "{}", c.name);
            assert!(c.findings[0].message.starts_with("registry: "), "{}", c.findings[0].message);
        }
        for c in &report.checks[4..7] {
            assert_eq!(c.status, CheckStatus::Skipped, "{}", c.name);
        }
        assert_eq!(report.checks[7].status, CheckStatus::Pass);
        assert_eq!(report.compatibility.result, CompatibilityOutcome::Unknown);
        assert_eq!(report.subject.repository.as_deref(), Some("aisopsflow/json-transform"));
        let json = serde_json::to_value(&report).unwrap();
        crate::plugin::validate_verification_report(&json).expect("the report is schema-valid");
    }

    #[test]
    fn a_failure_the_verdict_rule_does_not_require_is_a_warning_on_a_verified_plugin() {
        let mut list: Vec<Check> = checks::ALL
            .iter()
            .map(|n| Check { name: n.to_string(), status: CheckStatus::Pass, findings: Vec::new() })
            .collect();
        list[5] = checks::failed(checks::CONFORMANCE, "the plugin did not start");
        let compatible =
            CompatibilityResult { result: CompatibilityOutcome::Compatible, runner_api: Vec::new(), message: None };
        let counts = VulnerabilityCounts::default();
        let strict = checks::VerdictRule::default();
        let mut strict_list = list.clone();
        assert_eq!(judge(&mut strict_list, &strict, &counts, &compatible), VerificationState::Unverified);
        assert_eq!(strict_list[5].status, CheckStatus::Fail);

        let lenient = checks::VerdictRule {
            required: checks::ALL.iter().filter(|n| **n != checks::CONFORMANCE).map(|n| n.to_string()).collect(),
            ..checks::VerdictRule::default()
        };
        assert_eq!(judge(&mut list, &lenient, &counts, &compatible), VerificationState::Verified);
        assert_eq!(list[5].status, CheckStatus::Warn);
        assert!(list[5].findings[1].message.contains("does not require it"));
    }

    #[test]
    fn long_findings_are_clipped_to_the_schema_limits() {
        let mut check = checks::failed("conformance", "x".repeat(10_000));
        check.findings[0].location = Some("é".repeat(3000));
        clip_findings(&mut check);
        assert_eq!(check.findings[0].message.chars().count(), MAX_MESSAGE);
        assert_eq!(check.findings[0].location.as_ref().unwrap().chars().count(), MAX_LOCATION);
    }

    #[tokio::test]
    async fn sign_and_attach_refuses_a_report_about_another_image() {
        let report = VerificationReport {
            api_version: VERIFICATION_API_VERSION.to_string(),
            subject: Subject { digest: format!("sha256:{}", "cd".repeat(32)), repository: None },
            verifier: Verifier { id: "v".into(), version: None },
            time: "2025-03-01T12:00:00Z".into(),
            state: VerificationState::Unverified,
            compatibility: crate::plugin::documents::CompatibilityResult {
                result: CompatibilityOutcome::Unknown,
                runner_api: Vec::new(),
                message: None,
            },
            checks: Vec::new(),
            vulnerabilities: Default::default(),
        };
        let key = crate::sign::keys::test_key();
        let reference = format!("127.0.0.1:1/a/b@sha256:{}", "ab".repeat(32));
        let e = sign_and_attach(&reference, &report, &key, &RemoteOptions::default()).await.unwrap_err();
        assert!(matches!(e, PipelineError::SubjectMismatch { .. }), "{e}");
    }
}
