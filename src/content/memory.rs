//! An in-memory target: one repository held in maps. For tests, and as a staging area
//! for small graphs (artifacts built before they are pushed).

use super::{ContentError, Reader, Reference, Result};
use crate::oci::{Digest, ParsedManifest, media};
use async_trait::async_trait;
use bytes::Bytes;
use oci_spec::image::Descriptor;
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use tokio::io::AsyncReadExt;

#[derive(Default, Debug)]
struct Inner {
    content: HashMap<Digest, (Descriptor, Bytes)>,
    tags: BTreeMap<String, Descriptor>,
    /// subject digest → referrer descriptors
    predecessors: HashMap<Digest, BTreeMap<Digest, Descriptor>>,
}

#[derive(Default, Debug)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Tags held, sorted.
    pub fn tags(&self) -> Vec<String> {
        self.read().tags.keys().cloned().collect()
    }

    /// Number of distinct pieces of content held.
    pub fn len(&self) -> usize {
        self.read().content.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    Ok(d.digest().to_string().parse()?)
}

#[async_trait]
impl super::Fetcher for MemoryStore {
    async fn fetch(&self, target: &Descriptor) -> Result<Reader> {
        let d = digest_of(target)?;
        let inner = self.read();
        let (_, bytes) = inner.content.get(&d).ok_or_else(|| ContentError::NotFound(d.to_string()))?;
        Ok(Box::pin(std::io::Cursor::new(bytes.clone())))
    }
}

#[async_trait]
impl super::Pusher for MemoryStore {
    async fn push(&self, expected: &Descriptor, content: Reader) -> Result<()> {
        let d = digest_of(expected)?;
        let mut buf = Vec::new();
        content.take(expected.size() + 1).read_to_end(&mut buf).await.map_err(|e| ContentError::Body(e.to_string()))?;
        super::verify(expected, &buf)?;
        let media_type = expected.media_type().to_string();
        let mut referrer = None;
        if media::is_manifest(&media_type) {
            let parsed = ParsedManifest::parse(&buf, Some(&media_type))?;
            let inner = self.read();
            for c in parsed.children.iter().filter(|c| !c.external) {
                if !inner.content.contains_key(&c.digest) {
                    return Err(ContentError::MissingReference {
                        repository: "memory".into(),
                        digest: c.digest.clone(),
                        kind: if c.is_manifest { "manifest" } else { "blob" },
                    });
                }
            }
            if let Some((subject, _)) = &parsed.subject {
                referrer = Some((subject.clone(), parsed.referrer_descriptor(&d, buf.len() as u64)));
            }
        }
        let mut inner = self.write();
        if let Some((subject, desc)) = referrer {
            inner.predecessors.entry(subject).or_default().insert(d.clone(), desc);
        }
        inner.content.insert(d, (expected.clone(), Bytes::from(buf)));
        Ok(())
    }
}

#[async_trait]
impl super::ReadOnlyStorage for MemoryStore {
    async fn exists(&self, target: &Descriptor) -> Result<bool> {
        Ok(self.read().content.contains_key(&digest_of(target)?))
    }
}

#[async_trait]
impl super::TagResolver for MemoryStore {
    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        let inner = self.read();
        match Reference::parse(reference)? {
            Reference::Tag(t) => inner.tags.get(&t).cloned(),
            Reference::Digest(d) => inner.content.get(&d).map(|(desc, _)| desc.clone()),
        }
        .ok_or_else(|| ContentError::NotFound(reference.to_string()))
    }

    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<()> {
        crate::oci::validate_tag(reference)?;
        let d = digest_of(target)?;
        let mut inner = self.write();
        let desc =
            inner.content.get(&d).map(|(desc, _)| desc.clone()).ok_or_else(|| ContentError::NotFound(d.to_string()))?;
        inner.tags.insert(reference.to_string(), desc);
        Ok(())
    }
}

#[async_trait]
impl super::Deleter for MemoryStore {
    async fn delete(&self, target: &Descriptor) -> Result<()> {
        let d = digest_of(target)?;
        let mut inner = self.write();
        inner.content.remove(&d).ok_or_else(|| ContentError::NotFound(d.to_string()))?;
        inner.tags.retain(|_, desc| desc.digest().to_string() != d.to_string());
        for referrers in inner.predecessors.values_mut() {
            referrers.remove(&d);
        }
        Ok(())
    }
}

#[async_trait]
impl super::PredecessorFinder for MemoryStore {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>> {
        let d = digest_of(node)?;
        Ok(self.read().predecessors.get(&d).map(|m| m.values().cloned().collect()).unwrap_or_default())
    }
}
