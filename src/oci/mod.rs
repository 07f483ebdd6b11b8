//! OCI vocabulary shared by every module: digests, repository names and tags, media types,
//! and the parts of a manifest the data plane needs to see (its children and its subject).
//!
//! Follows the OCI image-spec 1.1 (descriptors, digests, manifests, indexes) and the
//! distribution-spec 1.1 grammar for repository names and tags. Only `sha256` and `sha512`
//! digests are accepted, as the distribution spec requires of a registry.

pub mod digest;
pub mod manifest;
pub mod name;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{ManifestError, ParsedManifest};
pub use name::{NameError, validate_repository, validate_tag};
pub use reference::{ImageReference, ReferenceError};

/// Media types the registry knows by name.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Digest of the two bytes `{}`, the OCI empty descriptor's content.
    pub const EMPTY_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    /// Every manifest media type the registry stores and serves.
    pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

    pub fn is_manifest(media_type: &str) -> bool {
        MANIFEST_TYPES.contains(&media_type)
    }

    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}
