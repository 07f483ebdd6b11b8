//! The content layer: one small family of traits through which every byte moves, and the
//! stores that implement them.
//!
//! Modelled on oras-go's `content` package: [`Fetcher`], [`Pusher`], [`ReadOnlyStorage`]
//! (adds `exists`), [`TagResolver`], [`Deleter`] and [`PredecessorFinder`] are each a method
//! or two; [`Target`] and [`GraphTarget`] are just their sums. `push` takes the descriptor the
//! caller expects and the store refuses content that does not match it. Referrers are
//! ordinary graph edges: a manifest's `subject` makes it a predecessor of that subject, and
//! stores record predecessors on every push.
//!
//! A target is one repository. [`fs::FsStore`] holds many repositories on disk (the embedded
//! registry's storage); [`memory::MemoryStore`] is one repository in memory. Remote
//! registries and OCI layout directories join the family in later modules.

pub mod check;
pub mod copy;
pub mod endpoint;
pub mod fs;
pub mod gc;
pub mod layout;
pub mod memory;
pub mod remote;

use crate::oci::{Digest, DigestError, ManifestError, NameError};
use async_trait::async_trait;
use oci_spec::image::Descriptor;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncReadExt};

pub use fs::FsStore;
pub use memory::MemoryStore;

/// A stream of content bytes.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// Largest manifest any store accepts (the distribution spec lets registries set a limit;
/// 4 MiB is what distribution and most registries use).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("content does not match its digest: expected {expected}, computed {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content size does not match: expected {expected} bytes, received {actual}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("content of {size} bytes exceeds the limit of {limit} bytes")]
    SizeExceedsLimit { size: u64, limit: u64 },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("manifest references {kind} {digest}, which repository {repository} does not have")]
    MissingReference { repository: String, digest: Digest, kind: &'static str },
    #[error("upload {0} is not known (it was committed, cancelled or never started)")]
    UploadUnknown(String),
    #[error("upload {id} is busy with another request")]
    UploadBusy { id: String },
    #[error("chunk starts at byte {start}, but upload holds {offset} bytes")]
    RangeInvalid { start: u64, offset: u64 },
    #[error("reading request body: {0}")]
    Body(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Unsupported(String),
    #[error("registry: {0}")]
    Remote(String),
    #[error("not authorized: {0}")]
    Unauthorized(String),
}

pub type Result<T, E = ContentError> = std::result::Result<T, E>;

impl ContentError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ContentError::Io { path: path.display().to_string(), source }
    }
}

/// Reads content.
#[async_trait]
pub trait Fetcher: Send + Sync {
    /// Opens the content `target` describes. Callers verify what they read
    /// (see [`fetch_all`]).
    async fn fetch(&self, target: &Descriptor) -> Result<Reader>;
}

/// Writes content.
#[async_trait]
pub trait Pusher: Send + Sync {
    /// Stores `content`, which must have `expected`'s digest and size; anything else is
    /// refused and leaves no trace. Manifests (by media type) are validated and indexed.
    async fn push(&self, expected: &Descriptor, content: Reader) -> Result<()>;

    /// Makes blob `expected` present without its bytes travelling (a registry's
    /// cross-repository mount). `Ok(false)` means "not here": push it instead.
    async fn mount(&self, _expected: &Descriptor) -> Result<bool> {
        Ok(false)
    }
}

#[async_trait]
pub trait ReadOnlyStorage: Fetcher {
    async fn exists(&self, target: &Descriptor) -> Result<bool>;
}

/// Content-addressed storage: fetch, push, exists.
pub trait Storage: ReadOnlyStorage + Pusher {}
impl<T: ReadOnlyStorage + Pusher> Storage for T {}

/// Maps references (tags or digests) to descriptors.
#[async_trait]
pub trait TagResolver: Send + Sync {
    async fn resolve(&self, reference: &str) -> Result<Descriptor>;
    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<()>;
}

#[async_trait]
pub trait Deleter: Send + Sync {
    async fn delete(&self, target: &Descriptor) -> Result<()>;
}

/// Finds the manifests that point at a node: for berth, its referrers.
#[async_trait]
pub trait PredecessorFinder: Send + Sync {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>>;
}

/// A repository: storage plus tags.
pub trait Target: Storage + TagResolver {}
impl<T: Storage + TagResolver> Target for T {}

/// A repository that also answers "who points at this?".
pub trait GraphTarget: Target + PredecessorFinder {}
impl<T: Target + PredecessorFinder> GraphTarget for T {}

/// Reads the whole of `target` and checks it against its descriptor.
pub async fn fetch_all(fetcher: &(impl Fetcher + ?Sized), target: &Descriptor) -> Result<Vec<u8>> {
    let mut r = fetcher.fetch(target).await?;
    let mut buf = Vec::with_capacity(target.size().min(MAX_MANIFEST_SIZE) as usize);
    let limit = target.size() + 1;
    (&mut r).take(limit).read_to_end(&mut buf).await.map_err(|e| ContentError::Body(e.to_string()))?;
    verify(target, &buf)?;
    Ok(buf)
}

/// Checks that `data` is exactly what `target` describes.
pub fn verify(target: &Descriptor, data: &[u8]) -> Result<()> {
    let expected: Digest = target.digest().to_string().parse()?;
    if data.len() as u64 != target.size() {
        return Err(ContentError::SizeMismatch { expected: target.size(), actual: data.len() as u64 });
    }
    let actual = Digest::of(expected.algorithm(), data);
    if actual != expected {
        return Err(ContentError::DigestMismatch { expected, actual });
    }
    Ok(())
}

/// A descriptor for `data` with the given media type (sha256).
pub fn descriptor_for(media_type: &str, data: &[u8]) -> Descriptor {
    Descriptor::new(media_type.into(), data.len() as u64, Digest::sha256(data).to_oci())
}

/// A reference inside a repository: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// Parses a tag or a digest, naming which rule failed.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            crate::oci::validate_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// One behavioural suite run against every store, so they all mean the same thing.
#[cfg(test)]
pub(crate) mod target_suite {
    use super::*;
    use crate::oci::media;
    use serde_json::json;

    fn reader(data: &[u8]) -> Reader {
        Box::pin(std::io::Cursor::new(data.to_vec()))
    }

    pub async fn exercise(t: &dyn GraphTargetDyn) {
        // blobs: push with the expected descriptor, fetch back verified
        let empty = descriptor_for(media::OCI_EMPTY, b"{}");
        t.push(&empty, reader(b"{}")).await.unwrap();
        let layer = descriptor_for("application/vnd.oci.image.layer.v1.tar", b"layer bytes");
        assert!(!t.exists(&layer).await.unwrap());
        // wrong content for the descriptor is refused and leaves nothing
        let e = t.push(&layer, reader(b"other bytes")).await.unwrap_err();
        assert!(matches!(e, ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. }), "{e}");
        assert!(!t.exists(&layer).await.unwrap());
        t.push(&layer, reader(b"layer bytes")).await.unwrap();
        assert!(t.exists(&layer).await.unwrap());
        assert_eq!(fetch_all(t, &layer).await.unwrap(), b"layer bytes");

        // a manifest, tagged
        let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": empty, "layers": [layer]});
        let mb = serde_json::to_vec(&m).unwrap();
        let md = descriptor_for(media::OCI_MANIFEST, &mb);
        t.push(&md, reader(&mb)).await.unwrap();
        t.tag(&md, "v1").await.unwrap();
        let resolved = t.resolve("v1").await.unwrap();
        assert_eq!(resolved.digest(), md.digest());
        assert_eq!(resolved.size(), md.size());
        assert!(matches!(t.resolve("v2").await.unwrap_err(), ContentError::NotFound(_)));
        assert!(t.tag(&md, "bad tag").await.is_err());

        // a manifest whose blobs are missing is refused
        let ghost = descriptor_for("application/vnd.oci.image.layer.v1.tar", b"ghost");
        let bad = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": empty, "layers": [ghost]}),
        )
        .unwrap();
        let e = t.push(&descriptor_for(media::OCI_MANIFEST, &bad), reader(&bad)).await.unwrap_err();
        assert!(matches!(e, ContentError::MissingReference { .. }), "{e}");

        // a referrer is a predecessor of its subject
        let r = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": "application/vnd.example",
                       "config": empty, "layers": [], "subject": md});
        let rb = serde_json::to_vec(&r).unwrap();
        let rd = descriptor_for(media::OCI_MANIFEST, &rb);
        t.push(&rd, reader(&rb)).await.unwrap();
        let preds = t.predecessors(&md).await.unwrap();
        assert_eq!(preds.len(), 1);
        assert_eq!(preds[0].digest(), rd.digest());
        assert_eq!(preds[0].artifact_type().as_ref().unwrap().to_string(), "application/vnd.example");

        // deleting the referrer removes the edge
        t.delete(&rd).await.unwrap();
        assert!(t.predecessors(&md).await.unwrap().is_empty());
        assert!(matches!(t.delete(&rd).await.unwrap_err(), ContentError::NotFound(_)));
    }

    /// `GraphTarget` plus `Deleter`, as one object-safe trait for the suite.
    pub trait GraphTargetDyn: GraphTarget + Deleter {}
    impl<T: GraphTarget + Deleter> GraphTargetDyn for T {}

    #[tokio::test]
    async fn memory_store_meets_the_suite() {
        exercise(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn fs_repository_meets_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        exercise(&store.repository("acme/suite").unwrap()).await;
    }
}
