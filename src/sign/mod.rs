//! Signing and signature verification: publisher keys, sigstore bundles stored as OCI 1.1
//! referrers, and cosign's legacy `.sig` tag format.
//!
//! Owns: ECDSA P-256 key pairs in cosign's encrypted key format ([`keys`]); in-toto
//! statements in DSSE envelopes inside sigstore bundles v0.3 ([`bundle`]); attaching a
//! bundle to its subject and verifying a subject's signatures in a repository (here);
//! cosign's legacy simple-signing format, read and written ([`legacy`]).
//!
//! Follows: sigstore protobuf-specs `Bundle` v0.3 (JSON), DSSE v1, in-toto Statement v1,
//! OCI image-spec 1.1 referrers (artifact manifest with `artifactType`
//! `application/vnd.dev.sigstore.bundle.v0.3+json`, empty config, `subject`), and what cosign
//! v3 writes for keyed signing (`https://sigstore.dev/cosign/sign/v1` statements, the
//! `dev.sigstore.bundle.*` annotations) and cosign's legacy `sha256-<hex>.sig` tags.
//! Verification is keyed and offline: transparency-log entries and timestamps are not
//! checked, only signatures by keys the caller trusts.

pub mod bundle;
pub mod keys;
pub mod legacy;

pub use bundle::{Bundle, Statement, pae, sign_statement, sign_subject};
pub use keys::{
    KeyPair, PublicKey, generate_key, key_id_from_hint, load_or_create_key, load_private_key, load_public_key,
};
pub use legacy::{legacy_payload, sign_legacy, signature_tag};

use crate::content::{ContentError, GraphTarget, fetch_all};
use crate::oci::{Digest, DigestError};
use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Media type and `artifactType` of a sigstore bundle v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const IN_TOTO_STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const IN_TOTO_STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";
/// Predicate type of a cosign v3 image signature.
pub const COSIGN_SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";
/// Referrer manifest annotation naming the bundle's predicate type (cosign writes it).
pub const ANNOTATION_PREDICATE_TYPE: &str = "dev.sigstore.bundle.predicateType";
/// Referrer manifest annotation naming the bundle's content kind (cosign writes it).
pub const ANNOTATION_CONTENT: &str = "dev.sigstore.bundle.content";
/// Legacy cosign signature layers.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("key: {0}")]
    Key(String),
    #[error("decrypting private key (wrong password?): {0}")]
    KeyDecrypt(String),
    #[error("sigstore bundle: {0}")]
    Bundle(String),
    #[error("{0}")]
    Json(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("bundle is a statement about {statement}, not the subject {subject}")]
    SubjectMismatch { subject: Digest, statement: String },
    #[error("{subject} is signed only by keys that are not trusted (key ids seen: {})", key_ids.join(", "))]
    Untrusted { subject: Digest, key_ids: Vec<String> },
    #[error("no valid signature by a trusted key for {subject}{}", problems_suffix(problems))]
    Unsigned { subject: Digest, problems: Vec<String> },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

fn problems_suffix(problems: &[String]) -> String {
    if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) }
}

/// Where a verified signature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// A sigstore bundle v0.3 referrer (cosign v3).
    SigstoreBundle,
    /// Cosign's legacy `sha256-<hex>.sig` tag.
    CosignLegacy,
}

impl std::fmt::Display for SignatureFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureFormat::SigstoreBundle => "sigstore bundle v0.3",
            SignatureFormat::CosignLegacy => "cosign legacy .sig",
        })
    }
}

/// A signature on a subject that verified with a trusted key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedSignature {
    pub format: SignatureFormat,
    /// Id (hex SHA-256 of the DER public key) of the trusted key that verified it.
    pub key_id: String,
    /// Digest of the manifest holding the signature (the referrer, or the `.sig` manifest).
    pub manifest: String,
}

/// A verified in-toto statement about a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedAttestation {
    pub key_id: String,
    /// Digest of the referrer manifest holding the bundle.
    pub manifest: String,
    pub statement: Statement,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerManifest {
    schema_version: u32,
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<HashMap<String, String>>,
}

fn digest_of(d: &Descriptor) -> Result<Digest, SignError> {
    Ok(d.digest().to_string().parse()?)
}

/// The bundle referrers of `subject` whose annotation (if any) names `predicate_type`.
async fn bundle_referrers(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    predicate_type: &str,
) -> Result<Vec<Descriptor>, SignError> {
    Ok(target
        .predecessors(subject)
        .await?
        .into_iter()
        .filter(|d| d.artifact_type().as_ref().is_some_and(|a| a.to_string() == BUNDLE_MEDIA_TYPE))
        .filter(|d| {
            let annotated = d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_PREDICATE_TYPE));
            annotated.is_none_or(|p| p == predicate_type)
        })
        .collect())
}

/// Fetches the bundle a referrer manifest carries.
async fn fetch_bundle(target: &dyn GraphTarget, referrer: &Descriptor) -> Result<Bundle, SignError> {
    let bytes = fetch_all(target, referrer).await?;
    let m: ReferrerManifest = serde_json::from_slice(&bytes)
        .map_err(|e| SignError::Json(format!("referrer {}: not a manifest: {e}", referrer.digest())))?;
    let layer = m
        .layers
        .iter()
        .find(|l| l.media_type().to_string().starts_with("application/vnd.dev.sigstore.bundle"))
        .ok_or_else(|| SignError::Bundle(format!("referrer {} has no bundle layer", referrer.digest())))?;
    Bundle::from_json(&fetch_all(target, layer).await?)
}

/// Pushes `bundle` as an OCI 1.1 referrer of `subject`: `artifactType`
/// `application/vnd.dev.sigstore.bundle.v0.3+json`, the empty config, one layer holding the
/// bundle JSON, annotations `dev.sigstore.bundle.content` and
/// `dev.sigstore.bundle.predicateType`. The bundle's statement must name `subject`. If a
/// bundle by the same key with the same statement is already attached, its referrer is
/// returned and nothing is pushed. Returns the referrer manifest's descriptor.
pub async fn attach_signature(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    bundle: &Bundle,
) -> Result<Descriptor, SignError> {
    let subject_digest = digest_of(subject)?;
    let statement = bundle.statement()?;
    if !statement.names(&subject_digest) {
        return Err(SignError::SubjectMismatch {
            subject: subject_digest,
            statement: statement.subject_digests().join(", "),
        });
    }
    let key_id = bundle.key_id();
    let wanted = serde_json::to_value(&statement).map_err(|e| SignError::Json(e.to_string()))?;
    for existing in bundle_referrers(target, subject, &statement.predicate_type).await? {
        // A referrer that cannot be read is no duplicate; the new one is pushed beside it.
        let Ok(b) = fetch_bundle(target, &existing).await else { continue };
        let Ok(st) = b.statement() else { continue };
        if b.key_id().is_some() && b.key_id() == key_id && serde_json::to_value(&st).ok().as_ref() == Some(&wanted) {
            return Ok(existing);
        }
    }

    let annotations = std::collections::BTreeMap::from([
        (ANNOTATION_CONTENT.to_string(), "dsse-envelope".to_string()),
        (ANNOTATION_PREDICATE_TYPE.to_string(), statement.predicate_type.clone()),
    ]);
    Ok(crate::artifacts::attach(target, subject, BUNDLE_MEDIA_TYPE, &bundle.to_json()?, &annotations).await?)
}

/// Signs `subject` (pushed in `repository`) with `key` as cosign v3 does and attaches the
/// bundle (see [`attach_signature`]).
pub async fn sign_and_attach(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    repository: &str,
    key: &KeyPair,
) -> Result<Descriptor, SignError> {
    let bundle = sign_subject(&digest_of(subject)?, repository, key)?;
    attach_signature(target, subject, &bundle).await
}

/// Everything found while looking for statements of one predicate type about a subject.
#[derive(Default)]
struct Findings {
    verified: Vec<VerifiedAttestation>,
    untrusted: Vec<String>,
    problems: Vec<String>,
}

async fn collect_bundles(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    predicate_type: &str,
    trusted: &[PublicKey],
) -> Result<Findings, SignError> {
    let digest = digest_of(subject)?;
    let mut f = Findings::default();
    for referrer in bundle_referrers(target, subject, predicate_type).await? {
        let at = referrer.digest().to_string();
        let bundle = match fetch_bundle(target, &referrer).await {
            Ok(b) => b,
            Err(e) => {
                f.problems.push(format!("referrer {at}: {e}"));
                continue;
            }
        };
        match bundle.statement() {
            Ok(st) if st.predicate_type != predicate_type => continue,
            Ok(_) => {}
            Err(e) => {
                f.problems.push(format!("referrer {at}: {e}"));
                continue;
            }
        }
        match bundle.verify(&digest, trusted) {
            Ok((key_id, statement)) => f.verified.push(VerifiedAttestation { key_id, manifest: at, statement }),
            Err(SignError::Untrusted { key_ids, .. }) => f.untrusted.extend(key_ids),
            Err(SignError::Unsigned { problems, .. }) => {
                f.problems.extend(problems.into_iter().map(|p| format!("referrer {at}: {p}")))
            }
            Err(e) => f.problems.push(format!("referrer {at}: {e}")),
        }
    }
    Ok(f)
}

fn conclude<T>(
    subject: Digest,
    verified: Vec<T>,
    mut untrusted: Vec<String>,
    problems: Vec<String>,
) -> Result<Vec<T>, SignError> {
    if !verified.is_empty() {
        return Ok(verified);
    }
    if !untrusted.is_empty() {
        untrusted.sort();
        untrusted.dedup();
        return Err(SignError::Untrusted { subject, key_ids: untrusted });
    }
    Err(SignError::Unsigned { subject, problems })
}

/// Verifies `subject`'s signatures in `target` against `trusted` keys: sigstore bundle
/// referrers with a `https://sigstore.dev/cosign/sign/v1` statement naming the subject's
/// digest, and cosign legacy signatures under its `sha256-<hex>.sig` tag. Returns every
/// signature that verified; with none, [`SignError::Untrusted`] when signatures by other
/// keys were seen, else [`SignError::Unsigned`] naming the subject and what was wrong.
pub async fn verify_subject(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    trusted: &[PublicKey],
) -> Result<Vec<VerifiedSignature>, SignError> {
    let digest = digest_of(subject)?;
    let f = collect_bundles(target, subject, COSIGN_SIGN_PREDICATE_TYPE, trusted).await?;
    let mut verified: Vec<VerifiedSignature> = f
        .verified
        .into_iter()
        .map(|v| VerifiedSignature { format: SignatureFormat::SigstoreBundle, key_id: v.key_id, manifest: v.manifest })
        .collect();
    let mut untrusted = f.untrusted;
    let mut problems = f.problems;
    for outcome in legacy::check_legacy(target, &digest, trusted).await? {
        match outcome {
            legacy::LegacyOutcome::Verified { key_id, manifest } => verified.push(VerifiedSignature {
                format: SignatureFormat::CosignLegacy,
                key_id,
                manifest: manifest.to_string(),
            }),
            legacy::LegacyOutcome::Untrusted => {
                untrusted.push("<cosign legacy signature: carries no key id>".to_string())
            }
            legacy::LegacyOutcome::Problem(p) => problems.push(p),
        }
    }
    conclude(digest, verified, untrusted, problems)
}

/// Verifies the bundle attestations of `predicate_type` about `subject` (verification
/// reports, lifecycle status): each must be signed by a trusted key and name the subject's
/// digest. Errors as [`verify_subject`] does when none verifies.
pub async fn verify_attestations(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    predicate_type: &str,
    trusted: &[PublicKey],
) -> Result<Vec<VerifiedAttestation>, SignError> {
    let f = collect_bundles(target, subject, predicate_type, trusted).await?;
    conclude(digest_of(subject)?, f.verified, f.untrusted, f.problems)
}

#[cfg(test)]
mod tests;
