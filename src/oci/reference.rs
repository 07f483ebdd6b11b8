//! Image references: `host[:port]/name[:tag][@digest]`, the form OCI clients take on the
//! command line. berth never guesses a default registry: the host is always named.

use super::{Digest, validate_repository, validate_tag};
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("reference {0:?} has no registry host: write host[:port]/name[:tag|@digest]")]
    NoHost(String),
    #[error("reference {reference:?}: {message}")]
    Invalid { reference: String, message: String },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `host` or `host:port`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageReference {
    pub fn parse(s: &str) -> Result<ImageReference, ReferenceError> {
        let invalid = |message: String| ReferenceError::Invalid { reference: s.to_string(), message };
        let (host, rest) = s.split_once('/').ok_or_else(|| ReferenceError::NoHost(s.to_string()))?;
        let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost" || host.starts_with('[');
        if !looks_like_host || host.is_empty() {
            return Err(ReferenceError::NoHost(s.to_string()));
        }
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| invalid(e.to_string()))?)),
            None => (rest, None),
        };
        // A ':' after the last '/' starts the tag.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        validate_repository(name).map_err(|e| invalid(e.to_string()))?;
        if let Some(t) = &tag {
            validate_tag(t).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(ImageReference { registry: host.to_string(), repository: name.to_string(), tag, digest })
    }

    /// The digest if there is one, else the tag: what to ask the registry for.
    pub fn reference(&self) -> Option<String> {
        self.digest.as_ref().map(|d| d.to_string()).or_else(|| self.tag.clone())
    }

    /// Whether the registry host is a loopback address (spoken to over plain HTTP).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if registry.starts_with('[') {
        registry.split(']').next().unwrap_or(registry).trim_start_matches('[')
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_name_tag_digest() {
        let d = Digest::sha256(b"x");
        let r = ImageReference::parse(&format!("127.0.0.1:5000/acme/tool:v1@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "acme/tool");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, Some(d.clone()));
        assert_eq!(r.reference(), Some(d.to_string()));
        assert!(r.is_loopback());
        let r = ImageReference::parse("registry.example.com/a/b").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
        assert!(!ImageReference::parse("registry.example.com/a:1").unwrap().is_loopback());
        assert_eq!(ImageReference::parse("localhost:5000/x:y").unwrap().to_string(), "localhost:5000/x:y");
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(matches!(ImageReference::parse("acme/tool:v1"), Err(ReferenceError::NoHost(_))));
        assert!(matches!(ImageReference::parse("tool"), Err(ReferenceError::NoHost(_))));
        let e = ImageReference::parse("h.io/Acme:v1").unwrap_err();
        assert!(e.to_string().contains("grammar"), "{e}");
        let e = ImageReference::parse("h.io/acme@sha256:zz").unwrap_err();
        assert!(e.to_string().contains("hexadecimal"), "{e}");
        assert!(is_loopback_host("[::1]:5000"));
        assert!(is_loopback_host("localhost"));
    }
}
