//! Publisher records in the registry (`DESIGN.md` § trust chain): a publisher's profile and
//! registered signing keys (`schemas/publisher-record.v1.schema.json`), signed by the
//! catalog root key, so that a mirror carries the trust chain with it.
//!
//! A record is an OCI 1.1 artifact in the repository `berth/publishers/<name>` (DESIGN.md's
//! `_berth/…` is not a valid repository name under the distribution spec's grammar, whose
//! path components must start with a letter or digit): an image manifest with `artifactType`
//! `application/vnd.aisopsflow.publisher.v1+json`, the empty config and one layer holding the
//! record, tagged `latest`. Each revision (approval, a key added or revoked) is a new manifest;
//! `latest` moves to it and older ones stay addressable by digest. The root key's signature is
//! a cosign v3 bundle referrer of that manifest, as for images.
//!
//! A record counts only when a trusted root key signed it: [`read`] returns `None` for a
//! missing record and an error naming the problem for an unsigned, wrongly signed or invalid
//! one. Revoked keys stay listed (with `revoked_at`) but are not trusted: there is no
//! transparency log here to date a signature before the revocation.

use crate::content::{ContentError, GraphTarget, Reader, descriptor_for, fetch_all};
use crate::oci::media;
use crate::plugin::documents::{KeyStatus, PublisherRecord};
use crate::plugin::{PUBLISHER_RECORD_MEDIA_TYPE, ValidationErrors};
use crate::sign::{self, KeyPair, PublicKey, SignError};
use oci_spec::image::Descriptor;
use serde_json::{Value, json};

/// Repositories holding publisher records: `berth/publishers/<name>`.
pub const NAMESPACE: &str = "berth/publishers";
/// The tag naming a publisher's current record.
pub const CURRENT: &str = "latest";

/// The repository of `publisher`'s record.
pub fn repository(publisher: &str) -> String {
    format!("{NAMESPACE}/{publisher}")
}

/// The publisher a record repository belongs to (`berth/publishers/acme` → `acme`).
pub fn publisher_of(repository: &str) -> Option<&str> {
    repository.strip_prefix(NAMESPACE)?.strip_prefix('/').filter(|n| !n.is_empty() && !n.contains('/'))
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("publisher record {repository}: {source}")]
    Content { repository: String, source: ContentError },
    #[error("publisher record {repository}: {source}")]
    Sign { repository: String, source: SignError },
    #[error("publisher record {repository} is invalid:\n{problems}")]
    Invalid { repository: String, problems: ValidationErrors },
    #[error("publisher record {repository}: {message}")]
    Malformed { repository: String, message: String },
}

/// The active keys of `record` that parse (the schema already checked they are P-256 PEM).
pub fn active_keys(record: &PublisherRecord) -> Vec<PublicKey> {
    record
        .keys
        .iter()
        .filter(|k| k.status == KeyStatus::Active)
        .filter_map(|k| sign::load_public_key(&k.public_key_pem).ok())
        .collect()
}

fn reader(b: Vec<u8>) -> Reader {
    Box::pin(std::io::Cursor::new(b))
}

/// Validates `record`, pushes it into `target` (the repository [`repository`]`(record.name)`),
/// signs it with `root`, and moves `latest` to it. Returns the record manifest's descriptor.
/// The signature is attached before the tag moves, so `latest` never names an unsigned record.
pub async fn push(
    target: &dyn GraphTarget,
    root: &KeyPair,
    record: &PublisherRecord,
) -> Result<Descriptor, RecordError> {
    let repo = repository(&record.name);
    let json = serde_json::to_value(record)
        .map_err(|e| RecordError::Malformed { repository: repo.clone(), message: e.to_string() })?;
    crate::plugin::validate_publisher_record(&json)
        .map_err(|problems| RecordError::Invalid { repository: repo.clone(), problems })?;
    let content = |source| RecordError::Content { repository: repo.clone(), source };
    let document = serde_json::to_vec(&json).map_err(|e| content(ContentError::Body(e.to_string())))?;
    let empty = descriptor_for(media::OCI_EMPTY, b"{}");
    if !target.exists(&empty).await.map_err(content)? {
        target.push(&empty, reader(b"{}".to_vec())).await.map_err(content)?;
    }
    let layer = descriptor_for(PUBLISHER_RECORD_MEDIA_TYPE, &document);
    if !target.exists(&layer).await.map_err(content)? {
        target.push(&layer, reader(document)).await.map_err(content)?;
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": PUBLISHER_RECORD_MEDIA_TYPE,
        "config": empty,
        "layers": [layer],
        "annotations": {"org.opencontainers.image.title": record.name},
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| content(ContentError::Body(e.to_string())))?;
    let desc = descriptor_for(media::OCI_MANIFEST, &bytes);
    if !target.exists(&desc).await.map_err(content)? {
        target.push(&desc, reader(bytes)).await.map_err(content)?;
    }
    sign::sign_and_attach(target, &desc, &repo, root)
        .await
        .map_err(|source| RecordError::Sign { repository: repo.clone(), source })?;
    target.tag(&desc, CURRENT).await.map_err(content)?;
    Ok(desc)
}

/// Reads the current record in `target` (the repository of `publisher`): `None` when there
/// is none; an error when it is not signed by one of `roots`, is not a publisher record,
/// or does not validate.
pub async fn read(
    target: &dyn GraphTarget,
    publisher: &str,
    roots: &[PublicKey],
) -> Result<Option<PublisherRecord>, RecordError> {
    let repo = repository(publisher);
    let content = |source| RecordError::Content { repository: repo.clone(), source };
    let desc = match target.resolve(CURRENT).await {
        Ok(d) => d,
        Err(ContentError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(content(e)),
    };
    let malformed = |message: String| RecordError::Malformed { repository: repo.clone(), message };
    let manifest: Value = serde_json::from_slice(&fetch_all(target, &desc).await.map_err(content)?)
        .map_err(|e| malformed(format!("manifest: {e}")))?;
    if manifest.get("artifactType").and_then(Value::as_str) != Some(PUBLISHER_RECORD_MEDIA_TYPE) {
        return Err(malformed(format!("{CURRENT} is not a {PUBLISHER_RECORD_MEDIA_TYPE} artifact")));
    }
    sign::verify_subject(target, &desc, roots)
        .await
        .map_err(|source| RecordError::Sign { repository: repo.clone(), source })?;
    let layer: Descriptor = manifest
        .pointer("/layers/0")
        .cloned()
        .and_then(|l| serde_json::from_value(l).ok())
        .ok_or_else(|| malformed("the manifest has no record layer".to_string()))?;
    let json: Value = serde_json::from_slice(&fetch_all(target, &layer).await.map_err(content)?)
        .map_err(|e| malformed(format!("record: {e}")))?;
    let record = crate::plugin::validate_publisher_record(&json)
        .map_err(|problems| RecordError::Invalid { repository: repo.clone(), problems })?;
    if record.name != publisher {
        return Err(malformed(format!("names publisher {:?}, not {publisher:?}", record.name)));
    }
    Ok(Some(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::TagResolver;
    use crate::content::memory::MemoryStore;
    use crate::plugin::documents::{Contacts, KeyAlgorithm, PublisherKey};

    fn record(name: &str, key: &PublicKey) -> PublisherRecord {
        let contact: crate::plugin::Contact =
            serde_json::from_value(json!({"email": "security@example.com"})).expect("contact");
        PublisherRecord {
            api_version: crate::plugin::PUBLISHER_API_VERSION.to_string(),
            name: name.to_string(),
            display_name: "Acme".to_string(),
            contacts: Contacts { support: contact.clone(), security: contact },
            keys: vec![PublisherKey {
                id: key.key_id().to_string(),
                algorithm: KeyAlgorithm::EcdsaP256Sha256,
                public_key_pem: key.to_pem().expect("pem"),
                status: KeyStatus::Active,
                added: "2026-11-26T00:00:00Z".to_string(),
                revoked_at: None,
            }],
        }
    }

    #[tokio::test]
    async fn a_record_signed_by_the_root_reads_back_and_other_roots_are_refused() {
        let store = MemoryStore::new();
        let k = crate::sign::keys::test_key;
        let (root, other, publisher) = (k(), k(), k());
        assert!(read(&store, "acme", &[root.public_key().clone()]).await.unwrap().is_none());

        let r = record("acme", publisher.public_key());
        push(&store, &root, &r).await.unwrap();
        let back = read(&store, "acme", &[root.public_key().clone()]).await.unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(active_keys(&back).len(), 1);

        let refused = read(&store, "acme", &[other.public_key().clone()]).await.unwrap_err().to_string();
        assert!(refused.contains("berth/publishers/acme"), "{refused}");

        // A revision that revokes the key: latest moves, the key is no longer active.
        let mut revoked = r.clone();
        revoked.keys[0].status = KeyStatus::Revoked;
        revoked.keys[0].revoked_at = Some("2026-11-26T01:00:00Z".to_string());
        push(&store, &root, &revoked).await.unwrap();
        let back = read(&store, "acme", &[root.public_key().clone()]).await.unwrap().unwrap();
        assert!(active_keys(&back).is_empty());
    }

    #[tokio::test]
    async fn an_invalid_record_is_not_pushed() {
        let store = MemoryStore::new();
        let root = crate::sign::keys::test_key();
        let mut r = record("Not A Name", root.public_key());
        r.display_name = String::new();
        let e = push(&store, &root, &r).await.unwrap_err().to_string();
        assert!(e.contains("/name") && e.contains("/display_name"), "{e}");
        assert!(store.resolve(CURRENT).await.is_err());
    }

    #[test]
    fn record_repositories() {
        assert_eq!(repository("acme"), "berth/publishers/acme");
        assert_eq!(publisher_of("berth/publishers/acme"), Some("acme"));
        assert_eq!(publisher_of("berth/publishers/"), None);
        assert_eq!(publisher_of("acme/tool"), None);
    }
}
