//! Referrer artifacts: what berth stores next to an image digest, and the publish flow
//! that puts them there.
//!
//! An artifact is an OCI 1.1 image manifest with `artifactType` set, the empty config
//! (`application/vnd.oci.empty.v1+json`), one layer holding the document and a `subject`
//! naming the image (image-spec 1.1 "artifacts" guidance). Attaching is idempotent: the
//! same document about the same subject is the same manifest digest, pushed once.
//!
//! | artifactType | layer |
//! |---|---|
//! | `application/vnd.aisopsflow.plugin.manifest.v1+json` | the plugin manifest (schemas/plugin-manifest.v1) |
//! | `application/vnd.cyclonedx+json` | a CycloneDX SBOM (1.4–1.6) |
//! | `application/vnd.dev.sigstore.bundle.v0.3+json` | a cosign v3 sigstore bundle (see `sign`) |

use crate::content::copy::{CopyError, CopyOptions, CopyReport, copy_graph};
use crate::content::{ContentError, GraphTarget, Reader, descriptor_for};
use crate::oci::{Digest, media};
use crate::plugin::{self, PLUGIN_MANIFEST_MEDIA_TYPE, ValidationErrors};
use crate::sign::{self, KeyPair, SignError};
use oci_spec::image::Descriptor;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const SBOM_ARTIFACT_TYPE: &str = "application/vnd.cyclonedx+json";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("plugin manifest is invalid:\n{0}")]
    Manifest(ValidationErrors),
    #[error("SBOM is invalid: {0}")]
    Sbom(#[from] crate::sbom::SbomError),
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no SBOM given and {lock} cannot be read to make one: {source}")]
    NoSbom { lock: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

fn reader(b: Vec<u8>) -> Reader {
    Box::pin(std::io::Cursor::new(b))
}

/// Attaches `document` to `subject` as an artifact of `artifact_type`; returns the
/// artifact manifest's descriptor (with `artifactType` and the annotations set). Pushing
/// what is already there changes nothing: the subject is written as its bare descriptor
/// (media type, digest, size) and the manifest's map is ordered, so the bytes — and the
/// digest — depend only on the inputs.
pub async fn attach(
    target: &dyn GraphTarget,
    subject: &Descriptor,
    artifact_type: &str,
    document: &[u8],
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, ContentError> {
    let empty = descriptor_for(media::OCI_EMPTY, b"{}");
    if !target.exists(&empty).await? {
        target.push(&empty, reader(b"{}".to_vec())).await?;
    }
    let layer = descriptor_for(artifact_type, document);
    if !target.exists(&layer).await? {
        target.push(&layer, reader(document.to_vec())).await?;
    }
    let bare_subject = Descriptor::new(subject.media_type().clone(), subject.size(), subject.digest().clone());
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty,
        "layers": [layer],
        "subject": bare_subject,
    });
    if !annotations.is_empty() {
        m["annotations"] = json!(annotations);
    }
    let bytes = serde_json::to_vec(&m).map_err(|e| ContentError::Body(e.to_string()))?;
    let mut desc = descriptor_for(media::OCI_MANIFEST, &bytes);
    if !target.exists(&desc).await? {
        target.push(&desc, reader(bytes)).await?;
    }
    desc.set_artifact_type(Some(artifact_type.into()));
    if !annotations.is_empty() {
        desc.set_annotations(Some(annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect()));
    }
    Ok(desc)
}

/// The SBOM published with the plugin in `dir`: the file `sbom` when given, else
/// `dir/sbom.cdx.json` when there is one, else CycloneDX generated from `cargo_lock`
/// (default `dir/Cargo.lock`) for the crate `name` `version`.
pub fn plugin_sbom(
    dir: &std::path::Path,
    sbom: Option<&std::path::Path>,
    cargo_lock: Option<&std::path::Path>,
    name: &str,
    version: &str,
) -> Result<Vec<u8>, ArtifactError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| ArtifactError::Read { path: p.display().to_string(), source })
    };
    let beside = dir.join("sbom.cdx.json");
    match sbom {
        Some(p) => return read(p),
        None if beside.exists() => return read(&beside),
        None => {}
    }
    let lock_path = cargo_lock.map(std::path::Path::to_path_buf).unwrap_or_else(|| dir.join("Cargo.lock"));
    let lock = std::fs::read_to_string(&lock_path)
        .map_err(|source| ArtifactError::NoSbom { lock: lock_path.display().to_string(), source })?;
    let bom = crate::sbom::from_cargo_lock(&lock, name, version)?;
    serde_json::to_vec_pretty(&bom).map_err(|e| ArtifactError::Invalid(e.to_string()))
}

/// What to publish: a plugin manifest and its image (in any target), with an SBOM.
pub struct Publication<'a> {
    /// The plugin manifest as written by the publisher; `runtime.image` is replaced by the
    /// published reference.
    pub manifest: Value,
    pub image_source: &'a dyn GraphTarget,
    pub image: Descriptor,
    pub sbom: Vec<u8>,
    /// `host[:port]` the destination registry is known by (for `runtime.image`).
    pub registry: String,
    pub key: &'a KeyPair,
}

/// What a publish did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    pub repository: String,
    pub image: String,
    pub reference: String,
    pub manifest_artifact: String,
    pub sbom: String,
    pub image_signature: String,
    pub manifest_signature: String,
    pub copy: CopyReport,
}

/// Publishes a plugin into `dst` (the repository `<publisher>/<name>`): the image by
/// digest, the plugin manifest artifact and the SBOM as referrers of the image, cosign
/// bundle signatures of the image and of the manifest artifact, and last the plugin
/// version's tag on the image, so that the tag names only a complete publish. Every step
/// skips what is already there, so publishing twice changes nothing.
pub async fn publish(dst: &dyn GraphTarget, p: Publication<'_>) -> Result<Published, ArtifactError> {
    let field = |k: &str| p.manifest.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(publisher), Some(name), Some(version)) = (field("publisher"), field("name"), field("version")) else {
        let mut problems = Vec::new();
        for k in ["publisher", "name", "version"] {
            if field(k).is_none() {
                problems.push(format!("/{k}: required to publish"));
            }
        }
        return Err(ArtifactError::Invalid(format!("plugin manifest: {}", problems.join("; "))));
    };
    let repository = format!("{publisher}/{name}");
    let digest: Digest = p.image.digest().to_string().parse().map_err(ContentError::from)?;
    let reference = format!("{}/{repository}@{digest}", p.registry);
    let mut manifest = p.manifest.clone();
    if let Some(rt) = manifest.get_mut("runtime").and_then(Value::as_object_mut) {
        rt.insert("image".into(), Value::String(reference.clone()));
    }
    // Validate before anything is pushed: a bad manifest publishes nothing.
    plugin::validate(&manifest, Some(&repository)).map_err(ArtifactError::Manifest)?;
    crate::sbom::validate(&p.sbom)?;

    let copy = copy_graph(p.image_source, dst, &p.image, &CopyOptions::default()).await?;

    let mut notes = BTreeMap::new();
    notes.insert("org.opencontainers.image.title".to_string(), name.clone());
    notes.insert("org.opencontainers.image.version".to_string(), version.clone());
    let doc = serde_json::to_vec_pretty(&manifest).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
    let manifest_artifact = attach(dst, &p.image, PLUGIN_MANIFEST_MEDIA_TYPE, &doc, &notes).await?;
    let sbom = attach(dst, &p.image, SBOM_ARTIFACT_TYPE, &p.sbom, &BTreeMap::new()).await?;
    let image_signature = sign::sign_and_attach(dst, &p.image, &repository, p.key).await?;
    let manifest_signature = sign::sign_and_attach(dst, &manifest_artifact, &repository, p.key).await?;
    // Last: the version tag names a complete publish (the first-party seed relies on it).
    dst.tag(&p.image, &version).await?;
    Ok(Published {
        repository,
        image: digest.to_string(),
        reference,
        manifest_artifact: manifest_artifact.digest().to_string(),
        sbom: sbom.digest().to_string(),
        image_signature: image_signature.digest().to_string(),
        manifest_signature: manifest_signature.digest().to_string(),
        copy,
    })
}
