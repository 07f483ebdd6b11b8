//! Cosign's legacy signature format, read for the signatures real cosign users already have
//! and written for tests: the tag `sha256-<hex>.sig` in the subject's repository holds an
//! image manifest whose layers are simple-signing payloads
//! (`application/vnd.dev.cosign.simplesigning.v1+json`, the "cosign container image
//! signature" JSON naming `docker-manifest-digest`), each annotated with
//! `dev.cosignproject.cosign/signature`: the base64 ECDSA-P256-SHA256 signature over the
//! payload bytes. More signatures are more layers of the same manifest.

use super::keys::{KeyPair, PublicKey};
use super::{COSIGN_SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_TYPE, SignError};
use crate::content::{ContentError, GraphTarget, Reader, descriptor_for, fetch_all};
use crate::oci::{Algorithm, Digest, media};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The simple-signing payload, fields in the order cosign writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleSigning {
    pub critical: Critical,
    #[serde(default)]
    pub optional: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Critical {
    pub identity: Identity,
    pub image: Image,
    #[serde(rename = "type")]
    pub type_: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

/// The payload cosign signs for `subject` pushed as `docker_reference` (the repository,
/// e.g. `registry.example/acme/p`).
pub fn legacy_payload(docker_reference: &str, subject: &Digest) -> Result<Vec<u8>, SignError> {
    let p = SimpleSigning {
        critical: Critical {
            identity: Identity { docker_reference: docker_reference.to_string() },
            image: Image { docker_manifest_digest: subject.to_string() },
            type_: SIMPLE_SIGNING_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).map_err(|e| SignError::Json(e.to_string()))
}

/// The legacy signature tag for `subject`: `sha256-<hex>.sig`. Only sha256 subjects have
/// one (a sha512 form would exceed the 128-character tag limit; cosign never writes it).
pub fn signature_tag(subject: &Digest) -> Option<String> {
    (subject.algorithm() == Algorithm::Sha256).then(|| format!("{}.sig", subject.tag_form()))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigManifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn reader(data: Vec<u8>) -> Reader {
    Box::pin(std::io::Cursor::new(data))
}

async fn push_if_missing(target: &dyn GraphTarget, desc: &Descriptor, data: Vec<u8>) -> Result<(), SignError> {
    if !target.exists(desc).await? {
        target.push(desc, reader(data)).await?;
    }
    Ok(())
}

/// The `.sig` manifest for `subject` and its descriptor, if the tag exists.
async fn existing(target: &dyn GraphTarget, tag: &str) -> Result<Option<(Descriptor, SigManifest)>, SignError> {
    let desc = match target.resolve(tag).await {
        Ok(d) => d,
        Err(ContentError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = fetch_all(target, &desc).await?;
    let m: SigManifest = serde_json::from_slice(&bytes)
        .map_err(|e| SignError::Json(format!("{tag} is not a cosign signature manifest: {e}")))?;
    Ok(Some((desc, m)))
}

fn signature_of(layer: &Descriptor) -> Option<&String> {
    layer.annotations().as_ref().and_then(|a| a.get(COSIGN_SIGNATURE_ANNOTATION))
}

/// Signs `subject` in cosign's legacy format and stores it under its `.sig` tag, adding a
/// layer to the signature manifest already there. Signing again with the same key adds
/// nothing (signatures are deterministic). Returns the `.sig` manifest's descriptor.
pub async fn sign_legacy(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    docker_reference: &str,
    key: &KeyPair,
) -> Result<Descriptor, SignError> {
    let digest: Digest = subject.digest().to_string().parse()?;
    let tag = signature_tag(&digest).ok_or_else(|| {
        SignError::Unsupported(format!("cosign legacy signatures need a sha256 subject, not {digest}"))
    })?;
    let payload = legacy_payload(docker_reference, &digest)?;
    let signature = STANDARD.encode(key.sign(&payload));
    let mut layer = descriptor_for(SIMPLE_SIGNING_MEDIA_TYPE, &payload);
    layer.set_annotations(Some(HashMap::from([(COSIGN_SIGNATURE_ANNOTATION.to_string(), signature.clone())])));

    let mut layers = Vec::new();
    if let Some((desc, m)) = existing(target, &tag).await? {
        let same = m.layers.iter().any(|l| l.digest() == layer.digest() && signature_of(l) == Some(&signature));
        if same {
            return Ok(desc);
        }
        layers = m.layers;
    }
    layers.push(layer);
    push_if_missing(target, &layers[layers.len() - 1], payload).await?;

    // The config go-containerregistry writes for cosign's signature image.
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest().to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
    }))
    .map_err(|e| SignError::Json(e.to_string()))?;
    let config_desc = descriptor_for(OCI_CONFIG, &config);
    push_if_missing(target, &config_desc, config).await?;

    let manifest = SigManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        config: config_desc,
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| SignError::Json(e.to_string()))?;
    let desc = descriptor_for(media::OCI_MANIFEST, &bytes);
    push_if_missing(target, &desc, bytes).await?;
    target.tag(&desc, &tag).await?;
    Ok(desc)
}

/// What one legacy signature layer turned out to be.
pub(super) enum LegacyOutcome {
    Verified {
        key_id: String,
        manifest: Digest,
    },
    /// Names the subject but no trusted key verifies it (legacy signatures carry no key id).
    Untrusted,
    Problem(String),
}

/// Reads every signature under `subject`'s `.sig` tag and checks each against `trusted`.
pub(super) async fn check_legacy(
    target: &dyn GraphTarget,
    subject: &Digest,
    trusted: &[PublicKey],
) -> Result<Vec<LegacyOutcome>, SignError> {
    let Some(tag) = signature_tag(subject) else { return Ok(Vec::new()) };
    let Some((desc, m)) = existing(target, &tag).await? else { return Ok(Vec::new()) };
    let manifest: Digest = desc.digest().to_string().parse()?;
    let mut out = Vec::new();
    for (i, layer) in m.layers.iter().enumerate() {
        if layer.media_type().to_string() != SIMPLE_SIGNING_MEDIA_TYPE {
            continue;
        }
        let at = format!("{tag} layer {i}");
        let Some(sig_b64) = signature_of(layer) else {
            out.push(LegacyOutcome::Problem(format!("{at}: no {COSIGN_SIGNATURE_ANNOTATION} annotation")));
            continue;
        };
        let Ok(sig) = STANDARD.decode(sig_b64.trim()) else {
            out.push(LegacyOutcome::Problem(format!("{at}: signature is not base64")));
            continue;
        };
        let payload = match fetch_all(target, layer).await {
            Ok(p) => p,
            Err(e) => {
                out.push(LegacyOutcome::Problem(format!("{at}: {e}")));
                continue;
            }
        };
        let parsed: SimpleSigning = match serde_json::from_slice(&payload) {
            Ok(p) => p,
            Err(e) => {
                out.push(LegacyOutcome::Problem(format!("{at}: not a simple-signing payload: {e}")));
                continue;
            }
        };
        let key = trusted.iter().find(|k| k.verify(&payload, &sig));
        let named = parsed.critical.image.docker_manifest_digest == subject.to_string();
        out.push(match key {
            None if named => LegacyOutcome::Untrusted,
            None => LegacyOutcome::Problem(format!(
                "{at}: signature by no trusted key, for {}",
                parsed.critical.image.docker_manifest_digest
            )),
            Some(k) if !named => LegacyOutcome::Problem(format!(
                "{at}: signature by key {} is for {}, not {subject}",
                k.key_id(),
                parsed.critical.image.docker_manifest_digest
            )),
            Some(_) if parsed.critical.type_ != SIMPLE_SIGNING_TYPE => LegacyOutcome::Problem(format!(
                "{at}: payload type {:?} is not {SIMPLE_SIGNING_TYPE:?}",
                parsed.critical.type_
            )),
            Some(k) => LegacyOutcome::Verified { key_id: k.key_id().to_string(), manifest: manifest.clone() },
        });
    }
    Ok(out)
}
