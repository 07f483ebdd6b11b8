//! Where content lives, as a user names it on the command line: a registry reference
//! (`host[:port]/name[:tag|@digest]`) or an OCI image layout directory
//! (`oci-layout:DIR[:tag|@digest]`, the air-gapped transfer format), opened as a
//! [`GraphTarget`](super::GraphTarget).

use super::layout::OciLayout;
use super::remote::{self, RemoteOptions, RemoteRepository};
use super::{ContentError, GraphTarget, Result};
use crate::oci::{Digest, ImageReference};
use std::path::PathBuf;
use std::sync::Arc;

pub const LAYOUT_PREFIX: &str = "oci-layout:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Registry(ImageReference),
    Layout { dir: PathBuf, tag: Option<String>, digest: Option<Digest> },
}

/// An opened endpoint.
pub enum Opened {
    Registry(RemoteRepository),
    Layout(OciLayout),
}

impl Opened {
    pub fn target(&self) -> &dyn GraphTarget {
        match self {
            Opened::Registry(r) => r,
            Opened::Layout(l) => l,
        }
    }
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint> {
        if let Some(rest) = s.strip_prefix(LAYOUT_PREFIX) {
            let (rest, digest) = match rest.rsplit_once('@') {
                Some((r, d)) => (r, Some(d.parse::<Digest>()?)),
                None => (rest, None),
            };
            // A ':' after the last '/' starts a tag.
            let (dir, tag) = match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(ContentError::Unsupported(format!("{s:?}: write oci-layout:DIR[:tag|@digest]")));
            }
            if let Some(t) = &tag {
                crate::oci::validate_tag(t)?;
            }
            return Ok(Endpoint::Layout { dir: PathBuf::from(dir), tag, digest });
        }
        ImageReference::parse(s)
            .map(Endpoint::Registry)
            .map_err(|e| ContentError::Unsupported(format!("{e}; or name a layout as oci-layout:DIR[:tag]")))
    }

    /// The tag or digest named, digest first.
    pub fn reference(&self) -> Option<String> {
        match self {
            Endpoint::Registry(r) => r.reference(),
            Endpoint::Layout { tag, digest, .. } => digest.as_ref().map(|d| d.to_string()).or_else(|| tag.clone()),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        match self {
            Endpoint::Registry(r) => r.tag.as_deref(),
            Endpoint::Layout { tag, .. } => tag.as_deref(),
        }
    }

    pub fn open(&self, opts: &RemoteOptions) -> Result<Opened> {
        Ok(match self {
            Endpoint::Registry(r) => Opened::Registry(remote::open(r, opts.clone())?),
            Endpoint::Layout { dir, .. } => Opened::Layout(OciLayout::open(dir.clone())?),
        })
    }

    /// When both ends are repositories of one registry, the source repository to mount
    /// blobs from.
    pub fn mount_source(src: &Endpoint, dst: &Endpoint) -> Option<String> {
        match (src, dst) {
            (Endpoint::Registry(a), Endpoint::Registry(b))
                if a.registry == b.registry && a.repository != b.repository =>
            {
                Some(a.repository.clone())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Registry(r) => write!(f, "{r}"),
            Endpoint::Layout { dir, tag, digest } => {
                write!(f, "{LAYOUT_PREFIX}{}", dir.display())?;
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
        }
    }
}

/// Keeps an opened endpoint alive behind a shared pointer (for tasks).
pub type SharedOpened = Arc<Opened>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layouts_and_references() {
        assert_eq!(
            Endpoint::parse("oci-layout:/tmp/x:v1").unwrap(),
            Endpoint::Layout { dir: "/tmp/x".into(), tag: Some("v1".into()), digest: None }
        );
        let d = Digest::sha256(b"x");
        let e = Endpoint::parse(&format!("oci-layout:./a/b@{d}")).unwrap();
        assert_eq!(e.reference(), Some(d.to_string()));
        assert_eq!(Endpoint::parse("oci-layout:dir").unwrap().reference(), None);
        assert!(matches!(Endpoint::parse("127.0.0.1:5000/a/b:v1").unwrap(), Endpoint::Registry(_)));
        let e = Endpoint::parse("a/b:v1").unwrap_err().to_string();
        assert!(e.contains("oci-layout:DIR"), "{e}");
        let a = Endpoint::parse("h.io/a:1").unwrap();
        let b = Endpoint::parse("h.io/b:1").unwrap();
        assert_eq!(Endpoint::mount_source(&a, &b), Some("a".into()));
        assert_eq!(Endpoint::mount_source(&a, &a), None);
    }
}
