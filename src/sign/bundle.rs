//! Sigstore bundles (protobuf-specs `Bundle`, JSON form, media type
//! `application/vnd.dev.sigstore.bundle.v0.3+json`) holding a DSSE envelope whose payload is
//! an in-toto Statement v1, signed with a key: the shape cosign v3 writes for `cosign sign
//! --key` of an image (predicate type `https://sigstore.dev/cosign/sign/v1`, empty
//! predicate) and for keyed attestations.
//!
//! The DSSE signature covers the pre-authentication encoding (DSSE v1 protocol):
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`. Bytes fields are standard base64 as
//! protobuf JSON writes them. Transparency-log entries and timestamps of bundles written
//! elsewhere are carried through unread: verification here is keyed and offline.

use super::keys::{KeyPair, PublicKey, key_id_from_hint};
use super::{
    BUNDLE_MEDIA_TYPE, COSIGN_SIGN_PREDICATE_TYPE, IN_TOTO_PAYLOAD_TYPE, IN_TOTO_STATEMENT_V01, IN_TOTO_STATEMENT_V1,
    SignError,
};
use crate::oci::Digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A sigstore bundle. Fields this crate does not produce are kept as JSON so a bundle read
/// from elsewhere survives a round trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bundle {
    pub media_type: String,
    pub verification_material: VerificationMaterial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsse_envelope: Option<DsseEnvelope>,
    /// A bare message signature (what `cosign sign-blob` writes); not accepted for OCI
    /// subjects, which need a statement naming the digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_signature: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tlog_entries: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_verification_data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicKeyIdentifier {
    #[serde(default)]
    pub hint: String,
}

/// A DSSE envelope; `payload` and `sig` are base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DsseEnvelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<DsseSignature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DsseSignature {
    pub sig: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
}

/// An in-toto Statement (v1; v0.1 is read too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}

/// A statement subject: a name and its digests by algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub digest: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Statement {
    /// Whether one of the subjects carries `digest` (by its algorithm).
    pub fn names(&self, digest: &Digest) -> bool {
        self.subject.iter().any(|s| s.digest.get(digest.algorithm().as_str()).is_some_and(|h| h == digest.hex()))
    }

    /// The subject digests, as `alg:hex`, for messages.
    pub fn subject_digests(&self) -> Vec<String> {
        self.subject.iter().flat_map(|s| s.digest.iter().map(|(a, h)| format!("{a}:{h}"))).collect()
    }
}

/// DSSE v1 pre-authentication encoding of `payload` with `payload_type`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

fn decode_b64(field: &str, s: &str) -> Result<Vec<u8>, SignError> {
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .map_err(|e| SignError::Bundle(format!("{field}: bad base64: {e}")))
}

impl Bundle {
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, SignError> {
        let b: Bundle =
            serde_json::from_slice(bytes).map_err(|e| SignError::Bundle(format!("not a sigstore bundle: {e}")))?;
        if !b.media_type.starts_with("application/vnd.dev.sigstore.bundle") {
            return Err(SignError::Bundle(format!("media type {:?} is not a sigstore bundle's", b.media_type)));
        }
        Ok(b)
    }

    /// The compact JSON written as the referrer's layer.
    pub fn to_json(&self) -> Result<Vec<u8>, SignError> {
        serde_json::to_vec(self).map_err(|e| SignError::Bundle(e.to_string()))
    }

    /// The key id named by `verificationMaterial.publicKey.hint` (base64 or hex form).
    pub fn key_id(&self) -> Option<String> {
        self.verification_material.public_key.as_ref().and_then(|p| key_id_from_hint(&p.hint))
    }

    fn envelope(&self) -> Result<&DsseEnvelope, SignError> {
        match (&self.dsse_envelope, &self.message_signature) {
            (Some(e), _) => Ok(e),
            (None, Some(_)) => Err(SignError::Bundle(
                "bundle holds a bare message signature, not a DSSE statement naming the subject".into(),
            )),
            (None, None) => Err(SignError::Bundle("bundle holds no DSSE envelope".into())),
        }
    }

    /// The envelope's payload bytes (unauthenticated until [`Bundle::verify`]).
    pub fn payload(&self) -> Result<Vec<u8>, SignError> {
        decode_b64("dsseEnvelope.payload", &self.envelope()?.payload)
    }

    /// The in-toto statement, parsed but not verified.
    pub fn statement(&self) -> Result<Statement, SignError> {
        let env = self.envelope()?;
        if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(SignError::Bundle(format!(
                "payload type {:?} is not an in-toto statement ({IN_TOTO_PAYLOAD_TYPE})",
                env.payload_type
            )));
        }
        let st: Statement = serde_json::from_slice(&self.payload()?)
            .map_err(|e| SignError::Bundle(format!("payload is not an in-toto statement: {e}")))?;
        if st.type_ != IN_TOTO_STATEMENT_V1 && st.type_ != IN_TOTO_STATEMENT_V01 {
            return Err(SignError::Bundle(format!("statement _type {:?} is not an in-toto statement", st.type_)));
        }
        Ok(st)
    }

    /// Checks the DSSE signature against `trusted` (the hinted key first) and returns the key
    /// that verified it, or `None` when no trusted key does.
    pub fn verify_signature<'k>(&self, trusted: &'k [PublicKey]) -> Result<Option<&'k PublicKey>, SignError> {
        let env = self.envelope()?;
        let message = pae(&env.payload_type, &self.payload()?);
        let hinted = self.key_id();
        let mut order: Vec<&PublicKey> = trusted.iter().filter(|k| Some(k.key_id()) == hinted.as_deref()).collect();
        order.extend(trusted.iter().filter(|k| Some(k.key_id()) != hinted.as_deref()));
        for s in &env.signatures {
            let Ok(sig) = decode_b64("dsseEnvelope.signatures[].sig", &s.sig) else { continue };
            if let Some(k) = order.iter().find(|k| k.verify(&message, &sig)) {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Verifies the bundle as a statement about `subject`: the signature by a trusted key,
    /// then that the statement names `subject`. Returns the key id and the statement.
    pub fn verify(&self, subject: &Digest, trusted: &[PublicKey]) -> Result<(String, Statement), SignError> {
        let statement = self.statement()?;
        let Some(key) = self.verify_signature(trusted)? else {
            return Err(match self.key_id() {
                Some(id) if trusted.iter().any(|k| k.key_id() == id) => SignError::Unsigned {
                    subject: subject.clone(),
                    problems: vec![format!("bundle signature does not verify with key {id}")],
                },
                id => SignError::Untrusted {
                    subject: subject.clone(),
                    key_ids: vec![id.unwrap_or_else(|| "<no key hint>".into())],
                },
            });
        };
        if !statement.names(subject) {
            return Err(SignError::Unsigned {
                subject: subject.clone(),
                problems: vec![format!(
                    "bundle by key {} is a statement about {}, not {subject}",
                    key.key_id(),
                    statement.subject_digests().join(", ")
                )],
            });
        }
        Ok((key.key_id().to_string(), statement))
    }
}

/// Signs an in-toto statement about `subject_digest` (named `subject_name`, usually the
/// repository) into a bundle: the generic form behind signatures and attestations.
pub fn sign_statement(
    subject_digest: &Digest,
    subject_name: &str,
    predicate_type: &str,
    predicate: serde_json::Value,
    signer: &KeyPair,
) -> Result<Bundle, SignError> {
    let statement = Statement {
        type_: IN_TOTO_STATEMENT_V1.to_string(),
        subject: vec![ResourceDescriptor {
            name: subject_name.to_string(),
            digest: BTreeMap::from([(
                subject_digest.algorithm().as_str().to_string(),
                subject_digest.hex().to_string(),
            )]),
            other: BTreeMap::new(),
        }],
        predicate_type: predicate_type.to_string(),
        predicate,
    };
    let payload = serde_json::to_vec(&statement).map_err(|e| SignError::Bundle(e.to_string()))?;
    let sig = signer.sign(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
    Ok(Bundle {
        media_type: BUNDLE_MEDIA_TYPE.to_string(),
        verification_material: VerificationMaterial {
            public_key: Some(PublicKeyIdentifier { hint: signer.public_key().hint() }),
            ..Default::default()
        },
        dsse_envelope: Some(DsseEnvelope {
            payload: STANDARD.encode(&payload),
            payload_type: IN_TOTO_PAYLOAD_TYPE.to_string(),
            signatures: vec![DsseSignature { sig: STANDARD.encode(sig), keyid: String::new() }],
        }),
        message_signature: None,
    })
}

/// Signs an OCI subject (image manifest or artifact manifest) as `cosign sign --key` does:
/// predicate type `https://sigstore.dev/cosign/sign/v1`, empty predicate.
pub fn sign_subject(subject_digest: &Digest, repository: &str, signer: &KeyPair) -> Result<Bundle, SignError> {
    sign_statement(subject_digest, repository, COSIGN_SIGN_PREDICATE_TYPE, serde_json::json!({}), signer)
}
