//! What the data plane needs to know about a manifest: its media type, the descriptors it
//! points at (blobs for an image manifest, manifests for an index), its `subject` and
//! `artifactType` (image-spec 1.1). Parsing is strict about structure and lenient about
//! fields it does not need, so Docker schema2 manifests and lists parse too.

use super::{Digest, media};
use oci_spec::image::Descriptor;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest field {field}: {message}")]
    Field { field: String, message: String },
    #[error("manifest media type {0:?} is not supported (expected an OCI or Docker schema2 manifest or index)")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {field:?}")]
    MediaTypeMismatch { header: String, field: String },
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError::Field { field: field.into(), message: message.into() }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<HashMap<String, String>>,
}

/// A reference from a manifest to content it needs.
#[derive(Debug, Clone)]
pub struct Child {
    pub digest: Digest,
    pub size: u64,
    /// `true` for an index's entries (manifests), `false` for config and layers (blobs).
    pub is_manifest: bool,
    /// Layers that carry `urls` may live elsewhere (non-distributable) and are not required.
    pub external: bool,
    /// The descriptor as written in the manifest.
    pub descriptor: Descriptor,
}

#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub config_media_type: Option<String>,
    pub children: Vec<Child>,
    pub subject: Option<(Digest, Descriptor)>,
    pub annotations: Option<HashMap<String, String>>,
}

impl ParsedManifest {
    /// Parses `bytes`, taking the media type from `content_type` (the PUT's header) when the
    /// manifest does not carry one, and refusing a mismatch between the two.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| !c.is_empty() && media::is_manifest(c));
        let media_type = match (&raw.media_type, &header) {
            (Some(f), Some(h)) if f != h => {
                return Err(ManifestError::MediaTypeMismatch { header: h.clone(), field: f.clone() });
            }
            (Some(f), _) => f.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
            (None, None) => media::OCI_MANIFEST.to_string(),
        };
        if !media::is_manifest(&media_type) {
            return Err(ManifestError::UnsupportedMediaType(media_type));
        }
        match raw.schema_version.as_ref().and_then(|v| v.as_i64()) {
            Some(2) => {}
            _ => return Err(field("schemaVersion", "must be 2")),
        }
        let mut children = Vec::new();
        let mut config_media_type = None;
        if media::is_index(&media_type) {
            let manifests = raw.manifests.as_ref().ok_or_else(|| field("manifests", "is required in an index"))?;
            for (i, d) in manifests.iter().enumerate() {
                children.push(child(d, &format!("manifests[{i}]"), true)?);
            }
        } else {
            let config = raw.config.as_ref().ok_or_else(|| field("config", "is required in an image manifest"))?;
            children.push(child(config, "config", false)?);
            config_media_type = Some(config.media_type().to_string());
            let layers = raw.layers.as_ref().ok_or_else(|| field("layers", "is required in an image manifest"))?;
            for (i, d) in layers.iter().enumerate() {
                children.push(child(d, &format!("layers[{i}]"), false)?);
            }
        }
        let subject = match raw.subject {
            Some(s) => Some((parse_digest(&s, "subject")?, s)),
            None => None,
        };
        Ok(ParsedManifest {
            media_type,
            artifact_type: raw.artifact_type,
            config_media_type,
            children,
            subject,
            annotations: raw.annotations,
        })
    }

    /// The descriptor a referrers response lists for this manifest (image-spec 1.1:
    /// `artifactType` falls back to the config's media type for an image manifest).
    pub fn referrer_descriptor(&self, digest: &Digest, size: u64) -> Descriptor {
        let mut d = Descriptor::new(self.media_type.as_str().into(), size, digest.to_oci());
        let artifact_type =
            self.artifact_type.clone().or_else(|| self.config_media_type.clone().filter(|c| c != media::OCI_EMPTY));
        d.set_artifact_type(artifact_type.map(|a| a.as_str().into()));
        d.set_annotations(self.annotations.clone());
        d
    }
}

fn parse_digest(d: &Descriptor, at: &str) -> Result<Digest, ManifestError> {
    d.digest().to_string().parse::<Digest>().map_err(|e| field(format!("{at}.digest"), e.to_string()))
}

fn child(d: &Descriptor, at: &str, is_manifest: bool) -> Result<Child, ManifestError> {
    Ok(Child {
        digest: parse_digest(d, at)?,
        size: d.size(),
        is_manifest,
        external: d.urls().as_ref().is_some_and(|u| !u.is_empty()),
        descriptor: d.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> String {
        media::EMPTY_DIGEST.to_string()
    }

    #[test]
    fn parses_artifact_with_subject() {
        let subject = Digest::sha256(b"x");
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": "application/vnd.example+json",
            "config": {"mediaType": media::OCI_EMPTY, "digest": empty(), "size": 2},
            "layers": [],
            "subject": {"mediaType": media::OCI_MANIFEST, "digest": subject.to_string(), "size": 1},
            "annotations": {"a": "b"}
        });
        let p = ParsedManifest::parse(m.to_string().as_bytes(), None).unwrap();
        assert_eq!(p.subject.as_ref().unwrap().0, subject);
        assert_eq!(p.children.len(), 1);
        let d = p.referrer_descriptor(&Digest::sha256(b"m"), 10);
        assert_eq!(d.artifact_type().as_ref().unwrap().to_string(), "application/vnd.example+json");
    }

    #[test]
    fn artifact_type_falls_back_to_config_media_type() {
        let m = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.acme.config", "digest": empty(), "size": 2},
            "layers": []
        });
        let p = ParsedManifest::parse(m.to_string().as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        let d = p.referrer_descriptor(&Digest::sha256(b"m"), 10);
        assert_eq!(d.artifact_type().as_ref().unwrap().to_string(), "application/vnd.acme.config");
    }

    #[test]
    fn names_the_bad_field() {
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_EMPTY, "digest": "md5:00", "size": 2},
            "layers": []
        });
        let e = ParsedManifest::parse(m.to_string().as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("config.digest"), "{e}");
        let e = ParsedManifest::parse(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("manifests"), "{e}");
        let e = ParsedManifest::parse(br#"{"schemaVersion":1,"manifests":[]}"#, None).unwrap_err();
        assert!(e.to_string().contains("schemaVersion"), "{e}");
        let e = ParsedManifest::parse(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            Some(media::OCI_MANIFEST),
        )
        .unwrap_err();
        assert!(matches!(e, ManifestError::MediaTypeMismatch { .. }));
    }
}
