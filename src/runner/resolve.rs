//! Resolving an install from registry data alone: given `name@sha256:…`, the image, its
//! plugin manifest artifact, the publisher signatures of both, and — when present — the
//! verification report and lifecycle status attestations (sigstore bundles of in-toto
//! statements, `DESIGN.md` § artifact graph). A statement is believed only when a key the
//! runner trusts signed it for this digest: the verifier key for reports, the catalog root
//! key for lifecycle status. Unsigned or otherwise unverifiable statements are ignored and
//! listed in [`Resolved::ignored`], so an attacker who can push referrers cannot mark a
//! plugin `removed` or `active`.
//!
//! A mutable tag is refused before anything is fetched: the tag's target can change between
//! approval and install.

use crate::content::{ContentError, GraphTarget};
use crate::oci::ImageReference;
use crate::plugin::documents::time_order;
use crate::plugin::documents::{LifecycleStatus, Status, VerificationReport, VerificationState};
use crate::plugin::{
    LIFECYCLE_STATUS_MEDIA_TYPE, PLUGIN_MANIFEST_MEDIA_TYPE, PluginManifest, STATUS_PREDICATE_TYPE,
    VERIFICATION_PREDICATE_TYPE,
};
use crate::runner::policy::{Lifecycle, SignatureState};
use crate::sign::{self, PublicKey, SignError};
use oci_spec::image::Descriptor;
use serde::Serialize;

/// The keys the runner trusts, by role (`DESIGN.md` § trust chain).
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Keys that may sign images and plugin-manifest artifacts.
    pub publishers: Vec<PublicKey>,
    /// Catalog root keys: they sign lifecycle status.
    pub roots: Vec<PublicKey>,
    /// Verifier keys: they sign verification reports.
    pub verifiers: Vec<PublicKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{reference}: installs name an image by digest (…@sha256:…); the tag {tag:?} is mutable and is refused")]
    MutableTag { reference: String, tag: String },
    #[error("{0}: no digest; installs name an image by digest (…@sha256:…)")]
    NoDigest(String),
    #[error("{reference}: {source}")]
    Content { reference: String, source: ContentError },
    #[error(transparent)]
    Manifest(#[from] crate::conformance::launch::LaunchError),
}

/// The verification report's gist, when a trusted verifier signed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportSummary {
    pub verifier: String,
    pub state: String,
    pub time: String,
    pub signed_by: String,
}

/// Everything the policy and the launcher need, from the registry.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub reference: ImageReference,
    pub image: Descriptor,
    pub manifest: PluginManifest,
    /// The plugin manifest artifact's referrer descriptor.
    pub manifest_artifact: Descriptor,
    pub signatures: SignatureState,
    /// Why a signature check failed (unsigned, unknown key, bad signature), per subject.
    pub signature_problems: Vec<String>,
    /// The newest lifecycle status a root key signed.
    pub lifecycle: Option<Lifecycle>,
    pub report: Option<ReportSummary>,
    /// Statements found but not believed, with the reason.
    pub ignored: Vec<String>,
}

/// `trust` plus the keys reachable from its root keys (`DESIGN.md` § trust chain): the active
/// keys of the publisher record of `reference`'s publisher (`berth/publishers/<publisher>` in
/// the same registry) when a root key signed it. A missing or untrusted record adds nothing
/// (its problem is returned, for the `ignored` list), so configured publisher keys keep working.
pub async fn with_publisher_record(
    repo: &crate::content::remote::RemoteRepository,
    reference: &ImageReference,
    trust: &Trust,
) -> (Trust, Option<String>) {
    let mut out = trust.clone();
    if trust.roots.is_empty() {
        return (out, None);
    }
    let publisher = reference.repository.split('/').next().unwrap_or_default();
    let records = match repo.registry().repository(&crate::catalog::records::repository(publisher)) {
        Ok(r) => r,
        Err(e) => return (out, Some(format!("publisher record of {publisher}: {e}"))),
    };
    match crate::catalog::records::read(&records, publisher, &trust.roots).await {
        Ok(Some(record)) => {
            out.publishers.extend(crate::catalog::records::active_keys(&record));
            (out, None)
        }
        Ok(None) => (out, None),
        Err(e) => (out, Some(e.to_string())),
    }
}

/// Refuses anything but `…@sha256:…`.
pub fn require_digest(reference: &ImageReference) -> Result<(), ResolveError> {
    match (&reference.digest, &reference.tag) {
        (Some(_), _) => Ok(()),
        (None, Some(tag)) => Err(ResolveError::MutableTag { reference: reference.to_string(), tag: tag.clone() }),
        (None, None) => Err(ResolveError::NoDigest(reference.to_string())),
    }
}

/// Resolves `reference` (which must carry a digest) in `target`, the repository it names.
pub async fn resolve(
    target: &dyn GraphTarget,
    reference: &ImageReference,
    trust: &Trust,
) -> Result<Resolved, ResolveError> {
    require_digest(reference)?;
    let content = |source| ResolveError::Content { reference: reference.to_string(), source };
    let digest = reference.reference().unwrap_or_default();
    let image = target.resolve(&digest).await.map_err(content)?;
    let manifest = crate::conformance::launch::attached_manifest(target, &image, Some(&reference.repository)).await?;
    let referrers = target.predecessors(&image).await.map_err(content)?;
    let manifest_artifact = referrers
        .iter()
        .find(|d| d.artifact_type().as_ref().is_some_and(|a| a.to_string() == PLUGIN_MANIFEST_MEDIA_TYPE))
        .cloned()
        .ok_or_else(|| {
            ResolveError::Manifest(crate::conformance::launch::LaunchError::NoManifest {
                image: image.digest().to_string(),
            })
        })?;

    let mut signature_problems = Vec::new();
    let mut check = async |what: &str, d: &Descriptor| match sign::verify_subject(target, d, &trust.publishers).await {
        Ok(v) => !v.is_empty(),
        Err(e) => {
            signature_problems.push(format!("{what}: {e}"));
            false
        }
    };
    let image_signed = check("image", &image).await;
    let manifest_signed = check("plugin manifest artifact", &manifest_artifact).await;

    let mut ignored = Vec::new();
    let lifecycle = lifecycle(target, &image, trust, &mut ignored).await;
    let report = report(target, &image, trust, &mut ignored).await;
    Ok(Resolved {
        reference: reference.clone(),
        image,
        manifest,
        manifest_artifact,
        signatures: SignatureState { image: image_signed, manifest: manifest_signed },
        signature_problems,
        lifecycle,
        report,
        ignored,
    })
}

/// Whether any statement of `predicate_type` is attached at all (to tell "none" from "none
/// believed").
async fn attached(target: &dyn GraphTarget, image: &Descriptor, predicate_type: &str) -> bool {
    target.predecessors(image).await.is_ok_and(|rs| {
        rs.iter().any(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(sign::ANNOTATION_PREDICATE_TYPE))
                .is_some_and(|p| p == predicate_type)
                || d.artifact_type().as_ref().is_some_and(|a| {
                    let a = a.to_string();
                    a == LIFECYCLE_STATUS_MEDIA_TYPE && predicate_type == STATUS_PREDICATE_TYPE
                })
        })
    })
}

async fn lifecycle(
    target: &dyn GraphTarget,
    image: &Descriptor,
    trust: &Trust,
    ignored: &mut Vec<String>,
) -> Option<Lifecycle> {
    let verified = match sign::verify_attestations(target, image, STATUS_PREDICATE_TYPE, &trust.roots).await {
        Ok(v) => v,
        Err(e) => {
            if attached(target, image, STATUS_PREDICATE_TYPE).await {
                ignored.push(format!("lifecycle status: {}", why(&e)));
            }
            return None;
        }
    };
    let digest = image.digest().to_string();
    let mut newest: Option<LifecycleStatus> = None;
    for a in verified {
        match serde_json::from_value::<LifecycleStatus>(a.statement.predicate.clone()) {
            Ok(s) if s.subject.digest != digest => ignored.push(format!(
                "lifecycle status in {}: its subject {} is not this image",
                a.manifest, s.subject.digest
            )),
            Ok(s) if newest.as_ref().is_none_or(|n| time_order(&s.time, &n.time).is_gt()) => newest = Some(s),
            Ok(_) => {}
            Err(e) => ignored.push(format!("lifecycle status in {}: not a status/v1 predicate: {e}", a.manifest)),
        }
    }
    newest.map(|s| {
        let reason = s.reason.clone().unwrap_or_else(|| "no reason given".to_string());
        match s.status {
            Status::Active => Lifecycle::Active,
            Status::Deprecated => Lifecycle::Deprecated { replacement: s.replacement },
            Status::Insecure => Lifecycle::Insecure { reason },
            Status::Removed => Lifecycle::Removed { reason },
        }
    })
}

async fn report(
    target: &dyn GraphTarget,
    image: &Descriptor,
    trust: &Trust,
    ignored: &mut Vec<String>,
) -> Option<ReportSummary> {
    let verified = match sign::verify_attestations(target, image, VERIFICATION_PREDICATE_TYPE, &trust.verifiers).await {
        Ok(v) => v,
        Err(e) => {
            if attached(target, image, VERIFICATION_PREDICATE_TYPE).await {
                ignored.push(format!("verification report: {}", why(&e)));
            }
            return None;
        }
    };
    let mut newest: Option<ReportSummary> = None;
    for a in verified {
        match serde_json::from_value::<VerificationReport>(a.statement.predicate.clone()) {
            Ok(r) if newest.as_ref().is_none_or(|n| time_order(&r.time, &n.time).is_gt()) => {
                newest = Some(ReportSummary {
                    verifier: r.verifier.id,
                    state: match r.state {
                        VerificationState::Verified => "verified",
                        VerificationState::Unverified => "unverified",
                    }
                    .to_string(),
                    time: r.time,
                    signed_by: a.key_id,
                })
            }
            Ok(_) => {}
            Err(e) => {
                ignored.push(format!("verification report in {}: not a verification/v1 predicate: {e}", a.manifest))
            }
        }
    }
    newest
}

fn why(e: &SignError) -> String {
    match e {
        SignError::Unsigned { .. } => format!("ignored, not signed by a trusted key ({e})"),
        SignError::Untrusted { .. } => format!("ignored, signed by a key this runner does not trust ({e})"),
        e => format!("ignored ({e})"),
    }
}
