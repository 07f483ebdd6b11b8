//! The first-party seed (Mode A; `index/seed.json`): what makes `berth serve` on a fresh data
//! directory list the first-party plugins with no other command.
//!
//! On start, in the background, the seed's publisher gets a publisher record signed by the
//! catalog root key whose keys include the deployment's first-party key
//! (`<data_dir>/keys/first-party.key`, created on first start; password from
//! `BERTH_FIRST_PARTY_PASSWORD`), and every seed plugin whose repository has no tag for its
//! version is packed from its static binary (`<seed_plugins>/<name>`, built by
//! `artifacts/build-plugins.sh`), given its `plugin.json` and a CycloneDX SBOM (from the source
//! tree's `Cargo.lock`), signed with the first-party key and published — the same library
//! calls as `berth publish`.
//!
//! Writes go into the embedded store through [`Announcing`], which publishes the registry
//! event the HTTP API publishes for each manifest push, so the verification worker verifies
//! the seeded plugins and the catalog indexes them as if they had been pushed over HTTP. (An
//! anonymous loopback push would not be allowed once accounts are configured.)
//!
//! Idempotent: a record is pushed only when there is none, it is not trusted, or it lacks the
//! current first-party key; a plugin only when its version tag is missing (a publish tags
//! last, so the tag names a complete publish). A missing binary is a warning naming the build
//! command, never an error: the server serves regardless. This module owns no state of its own.

use super::records::{self, RecordError};
use crate::artifacts::{self, Publication};
use crate::config::{CatalogConfig, Config};
use crate::content::fs::FsRepository;
use crate::content::{
    ContentError, Fetcher, FsStore, MemoryStore, PredecessorFinder, Pusher, ReadOnlyStorage, Reader, Reference,
    TagResolver,
};
use crate::oci::{Digest, ParsedManifest, media};
use crate::pack::{self, PackSpec};
use crate::plugin::Contact;
use crate::plugin::documents::{Contacts, KeyAlgorithm, KeyStatus, PublisherKey, PublisherRecord};
use crate::registry::Registry;
use crate::registry::events::{Event, EventActor, EventRequest, EventTarget, Events};
use crate::sign::{self, KeyPair, PublicKey};
use oci_spec::image::Descriptor;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The seed of the source tree berth was built from (used when it is there).
pub const DEFAULT_SEED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/index/seed.json");
/// Password of the catalog root key.
pub const ROOT_PASSWORD_ENV: &str = "BERTH_CATALOG_ROOT_PASSWORD";
/// Password of the first-party publisher key.
pub const FIRST_PARTY_PASSWORD_ENV: &str = "BERTH_FIRST_PARTY_PASSWORD";
/// The first-party publisher key, under the data directory.
pub const FIRST_PARTY_KEY: &str = "keys/first-party.key";
/// How the seed's pushes are named in registry events.
const ACTOR: &str = "berth-seed";

/// `index/seed.json` (`aisopsflow.dev/catalog-seed/v1`).
#[derive(Debug, Clone, Deserialize)]
pub struct Seed {
    pub publisher: SeedPublisher,
    pub plugins: Vec<SeedPlugin>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedPublisher {
    pub name: String,
    pub display_name: String,
    pub support: Contact,
    pub security_contact: Contact,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeedPlugin {
    /// The package name: the binary is `<seed_plugins>/<name>`.
    pub name: String,
    /// `publisher/name`, as the plugin manifest gives it.
    pub repository: String,
    /// The plugin's directory (holding `plugin.json`), relative to the source tree.
    pub source: PathBuf,
    #[serde(default)]
    pub categories: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("catalog.seed {path}: {message}")]
    Seed { path: String, message: String },
    #[error("{field}: {message}")]
    Key { field: &'static str, message: String },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("seed task: {0}")]
    Task(String),
}

/// Where the seed, the source tree it names plugins in, and their binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedPaths {
    pub seed: PathBuf,
    /// The directory above the seed's (`index/..`): `source` paths and `Cargo.lock` are there.
    pub root: PathBuf,
    pub plugins: PathBuf,
}

/// The seed `config` names: `catalog.seed` (an empty path turns seeding off), else
/// [`DEFAULT_SEED`] when that file exists; binaries in `catalog.seed_plugins`, else the
/// source tree's `target/plugins`.
pub fn paths(config: &CatalogConfig) -> Option<SeedPaths> {
    let seed = match &config.seed {
        Some(p) if p.as_os_str().is_empty() => return None,
        Some(p) => p.clone(),
        None => Some(PathBuf::from(DEFAULT_SEED)).filter(|p| p.is_file())?,
    };
    let root = match seed.parent().and_then(Path::parent) {
        Some(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let plugins = config.seed_plugins.clone().unwrap_or_else(|| root.join("target/plugins"));
    Some(SeedPaths { seed, root, plugins })
}

/// What a seeding did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// A publisher record was pushed (there was none, or it lacked the first-party key).
    pub record_pushed: bool,
    /// References (`host/publisher/name@sha256:…`) published now.
    pub published: Vec<String>,
    /// `publisher/name:version` already there.
    pub present: Vec<String>,
    /// Binaries not found: (plugin name, path).
    pub missing: Vec<(String, PathBuf)>,
    /// Plugins that could not be published, with why.
    pub failed: Vec<String>,
}

impl SeedReport {
    /// Nothing was written and nothing is wrong.
    pub fn nothing_to_do(&self) -> bool {
        !self.record_pushed && self.published.is_empty() && self.missing.is_empty() && self.failed.is_empty()
    }

    fn log(&self, paths: &SeedPaths) {
        if self.nothing_to_do() {
            tracing::info!(present = self.present.len(), "seed: nothing to do");
            return;
        }
        tracing::info!(
            record_pushed = self.record_pushed,
            published = self.published.len(),
            present = self.present.len(),
            missing = self.missing.len(),
            failed = self.failed.len(),
            "seed: done"
        );
        if !self.missing.is_empty() {
            let names: Vec<&str> = self.missing.iter().map(|(n, _)| n.as_str()).collect();
            let build = paths.root.join("artifacts/build-plugins.sh");
            for (name, path) in &self.missing {
                tracing::warn!(
                    "seed: {} is missing, so {name} is not published; build the first-party plugins with \
                     `{} {}` (or start berth with scripts/serve) and restart",
                    path.display(),
                    build.display(),
                    names.join(" ")
                );
            }
        }
        for f in &self.failed {
            tracing::error!("seed: {f}");
        }
    }
}

/// The `host[:port]` plugin references name: `server.public_url`'s host, else `local`.
fn registry_host(config: &Config, local: SocketAddr) -> String {
    let public =
        config.server.public_url.as_deref().and_then(|u| u.split_once("://")).map(|(_, h)| h.trim_end_matches('/'));
    public.map(str::to_string).unwrap_or_else(|| local.to_string())
}

/// Seeds in the background when the catalog is enabled and a seed is found (see [`paths`]);
/// logs what it did. `local` is the address the server is bound to.
pub fn spawn(config: &Config, registry: &Arc<Registry>, local: SocketAddr) -> Option<JoinHandle<()>> {
    if !config.catalog.enabled {
        return None;
    }
    let paths = paths(&config.catalog)?;
    let (config, registry) = (config.clone(), Arc::clone(registry));
    let host = registry_host(&config, local);
    Some(tokio::spawn(async move {
        match seed(&paths, &config, &registry, &host).await {
            Ok(report) => report.log(&paths),
            Err(e) => tracing::warn!("seed: {e}; the first-party plugins are not seeded"),
        }
    }))
}

/// Loads (or creates) the key at `path` on a blocking thread: scrypt takes a while.
async fn key(path: PathBuf, password_env: &'static str, field: &'static str) -> Result<KeyPair, SeedError> {
    tokio::task::spawn_blocking(move || {
        let password = std::env::var(password_env).unwrap_or_default();
        sign::load_or_create_key(&path, password.as_bytes())
            .map_err(|message| SeedError::Key { field, message: format!("{message} (password from {password_env})") })
    })
    .await
    .map_err(|e| SeedError::Task(e.to_string()))?
}

/// Seeds `registry` from `paths` (see the module documentation); `host` is what the plugin
/// manifests' `runtime.image` references name. A plugin that cannot be published is reported,
/// not an error; the seed file or the keys failing are.
pub async fn seed(
    paths: &SeedPaths,
    config: &Config,
    registry: &Registry,
    host: &str,
) -> Result<SeedReport, SeedError> {
    let bad = |message: String| SeedError::Seed { path: paths.seed.display().to_string(), message };
    let text = std::fs::read_to_string(&paths.seed).map_err(|e| bad(e.to_string()))?;
    let seed: Seed = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let data = &config.server.data_dir;
    let root_path = config.catalog.root_key_file.clone().unwrap_or_else(|| data.join("catalog-root.key"));
    let root = key(root_path, ROOT_PASSWORD_ENV, "catalog.root_key_file").await?;
    let first_party = key(data.join(FIRST_PARTY_KEY), FIRST_PARTY_PASSWORD_ENV, "first-party key").await?;
    if !config.catalog.first_party.contains(&seed.publisher.name) {
        tracing::warn!(
            publisher = %seed.publisher.name,
            "seed: the seed's publisher is not in catalog.first_party; its plugins will not be marked official"
        );
    }

    let mut report = SeedReport::default();
    let mut roots = vec![root.public_key().clone()];
    for p in &config.catalog.root_keys {
        match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|pem| sign::load_public_key(&pem).map_err(|e| e.to_string()))
        {
            Ok(k) => roots.push(k),
            Err(e) => tracing::warn!("seed: catalog.root_keys {}: {e}", p.display()),
        }
    }
    let record_repo = Announcing::open(registry, &records::repository(&seed.publisher.name), host)
        .map_err(|source| RecordError::Content { repository: records::repository(&seed.publisher.name), source })?;
    report.record_pushed =
        ensure_record(&record_repo, &root, &roots, first_party.public_key(), &seed.publisher).await?;

    for plugin in &seed.plugins {
        match seed_plugin(paths, registry, host, &seed.publisher.name, plugin, &first_party).await {
            Ok(Outcome::Published(reference)) => {
                tracing::info!(%reference, "seed: published");
                report.published.push(reference)
            }
            Ok(Outcome::Present(at)) => report.present.push(at),
            Ok(Outcome::Missing(path)) => report.missing.push((plugin.name.clone(), path)),
            Err(why) => report.failed.push(format!("{}: {why}", plugin.name)),
        }
    }
    Ok(report)
}

/// Makes sure `publisher`'s record is trusted and lists `key` as active; true if it pushed one.
async fn ensure_record(
    target: &Announcing,
    root: &KeyPair,
    roots: &[PublicKey],
    key: &PublicKey,
    publisher: &SeedPublisher,
) -> Result<bool, SeedError> {
    let existing = match records::read(target, &publisher.name, roots).await {
        Ok(r) => r,
        Err(e @ RecordError::Content { .. }) => return Err(e.into()),
        Err(e) => {
            tracing::warn!("seed: {e}; pushing a new record signed by this catalog's root key");
            None
        }
    };
    let mut keys = Vec::new();
    if let Some(r) = existing {
        match r.keys.iter().find(|k| k.id == key.key_id()) {
            Some(k) if k.status == KeyStatus::Active => return Ok(false),
            Some(_) => {
                // An operator revoked it: the seed does not undo that.
                tracing::warn!(
                    publisher = %publisher.name,
                    key = %key.key_id(),
                    "seed: the first-party key is revoked in the publisher record; not re-adding it"
                );
                return Ok(false);
            }
            None => keys = r.keys,
        }
    }
    let pem = key.to_pem().map_err(|e| SeedError::Key { field: "first-party key", message: e.to_string() })?;
    keys.push(PublisherKey {
        id: key.key_id().to_string(),
        algorithm: KeyAlgorithm::EcdsaP256Sha256,
        public_key_pem: pem,
        status: KeyStatus::Active,
        added: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        revoked_at: None,
    });
    let record = PublisherRecord {
        api_version: crate::plugin::PUBLISHER_API_VERSION.to_string(),
        name: publisher.name.clone(),
        display_name: publisher.display_name.clone(),
        contacts: Contacts { support: publisher.support.clone(), security: publisher.security_contact.clone() },
        keys,
    };
    let desc = records::push(target, root, &record).await?;
    tracing::info!(publisher = %publisher.name, record = %desc.digest(), key = %key.key_id(), "seed: publisher record pushed");
    Ok(true)
}

enum Outcome {
    Published(String),
    Present(String),
    Missing(PathBuf),
}

/// Publishes one seed plugin unless its version is there.
async fn seed_plugin(
    paths: &SeedPaths,
    registry: &Registry,
    host: &str,
    publisher: &str,
    plugin: &SeedPlugin,
    key: &KeyPair,
) -> Result<Outcome, String> {
    let dir = paths.root.join(&plugin.source);
    let manifest_path = dir.join("plugin.json");
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let field = |k: &str| manifest.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let (name, version) = (field("name"), field("version"));
    let repository = format!("{}/{name}", field("publisher"));
    if repository != plugin.repository || field("publisher") != publisher {
        return Err(format!(
            "{} names {repository}, but the seed lists it as {} of publisher {publisher}",
            manifest_path.display(),
            plugin.repository
        ));
    }
    let target = Announcing::open(registry, &repository, host).map_err(|e| e.to_string())?;
    if target.resolve(&version).await.is_ok() {
        return Ok(Outcome::Present(format!("{repository}:{version}")));
    }
    let binary = paths.plugins.join(&plugin.name);
    if !binary.is_file() {
        return Ok(Outcome::Missing(binary));
    }
    let memory = MemoryStore::new();
    let spec = PackSpec::for_plugin(&binary, &manifest).map_err(|e| e.to_string())?;
    let image = pack::pack(&spec, &memory, None).await.map_err(|e| format!("packing {}: {e}", binary.display()))?;
    let lock = paths.root.join("Cargo.lock");
    let sbom = artifacts::plugin_sbom(&dir, None, lock.is_file().then_some(lock.as_path()), &name, &version)
        .map_err(|e| e.to_string())?;
    let published = artifacts::publish(
        &target,
        Publication { manifest, image_source: &memory, image, sbom, registry: host.to_string(), key },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Outcome::Published(published.reference))
}

/// One repository of the embedded store that publishes, for every manifest it stores or
/// tags, the event the HTTP API publishes for that push (`crate::registry`'s `put_manifest`).
pub struct Announcing {
    store: Arc<FsStore>,
    repo: FsRepository,
    name: String,
    events: Events,
    host: String,
}

impl Announcing {
    /// The repository `name` of `registry`'s store; `host` goes into the events' requests.
    pub fn open(registry: &Registry, name: &str, host: &str) -> Result<Announcing, ContentError> {
        Ok(Announcing {
            store: Arc::clone(&registry.store),
            repo: registry.store.repository(name)?,
            name: name.to_string(),
            events: registry.events.clone(),
            host: host.to_string(),
        })
    }

    fn announce(&self, digest: &Digest, tag: Option<&str>) -> Result<(), ContentError> {
        let m = self.store.get_manifest(&self.name, &Reference::Digest(digest.clone()))?;
        let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))?;
        let size = m.bytes.len() as u64;
        let target = EventTarget {
            media_type: parsed.media_type.clone(),
            size,
            digest: digest.to_string(),
            length: size,
            repository: self.name.clone(),
            url: format!("/v2/{}/manifests/{digest}", self.name),
            tag: tag.map(str::to_string),
            artifact_type: parsed.referrer_descriptor(digest, size).artifact_type().as_ref().map(|a| a.to_string()),
            subject: parsed.subject.as_ref().map(|(s, _)| s.to_string()),
        };
        self.events.publish(Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: Events::now(),
            action: "push".to_string(),
            target,
            request: EventRequest {
                id: uuid::Uuid::new_v4().to_string(),
                addr: String::new(),
                host: self.host.clone(),
                method: "PUT".to_string(),
                useragent: ACTOR.to_string(),
            },
            actor: EventActor { name: Some(ACTOR.to_string()) },
            source: self.events.source.clone(),
        });
        Ok(())
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest, ContentError> {
    Ok(d.digest().to_string().parse()?)
}

#[async_trait::async_trait]
impl Fetcher for Announcing {
    async fn fetch(&self, target: &Descriptor) -> Result<Reader, ContentError> {
        self.repo.fetch(target).await
    }
}

#[async_trait::async_trait]
impl Pusher for Announcing {
    async fn push(&self, expected: &Descriptor, content: Reader) -> Result<(), ContentError> {
        self.repo.push(expected, content).await?;
        if media::is_manifest(expected.media_type().as_ref()) {
            self.announce(&digest_of(expected)?, None)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ReadOnlyStorage for Announcing {
    async fn exists(&self, target: &Descriptor) -> Result<bool, ContentError> {
        self.repo.exists(target).await
    }
}

#[async_trait::async_trait]
impl TagResolver for Announcing {
    async fn resolve(&self, reference: &str) -> Result<Descriptor, ContentError> {
        self.repo.resolve(reference).await
    }

    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<(), ContentError> {
        self.repo.tag(target, reference).await?;
        self.announce(&digest_of(target)?, Some(reference))
    }
}

#[async_trait::async_trait]
impl PredecessorFinder for Announcing {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>, ContentError> {
        self.repo.predecessors(node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PLUGIN_MANIFEST_MEDIA_TYPE;

    fn workspace() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn setup() -> (tempfile::TempDir, Config, Arc<Registry>, SeedPaths) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().join("data");
        let registry = crate::registry::server::open(&config).unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let paths = SeedPaths { seed: workspace().join("index/seed.json"), root: workspace(), plugins };
        (dir, config, registry, paths)
    }

    #[test]
    fn the_seed_is_found_and_an_empty_path_turns_it_off() {
        let mut c = CatalogConfig::default();
        let found = paths(&c).expect("the source tree's seed");
        assert_eq!(found.root, workspace());
        assert_eq!(found.plugins, workspace().join("target/plugins"));
        c.seed = Some(PathBuf::new());
        assert_eq!(paths(&c), None);
        c.seed = Some("index/seed.json".into());
        c.seed_plugins = Some("bins".into());
        let p = paths(&c).unwrap();
        assert_eq!((p.root, p.plugins), (PathBuf::from("."), PathBuf::from("bins")));
    }

    #[tokio::test]
    async fn seeding_publishes_what_is_missing_once_and_announces_it() {
        let (_dir, config, registry, paths) = setup();
        let mut events = registry.events.subscribe();
        // Only one binary so far: the other is reported missing, not an error.
        std::fs::write(paths.plugins.join("json-transform"), b"\x7fELF pretend").unwrap();
        let host = "127.0.0.1:5000";
        let first = seed(&paths, &config, &registry, host).await.unwrap();
        assert!(first.record_pushed, "{first:?}");
        assert_eq!(first.published.len(), 1, "{first:?}");
        assert!(first.published[0].starts_with("127.0.0.1:5000/aisopsflow/json-transform@sha256:"));
        assert_eq!(first.missing, vec![("http-probe".to_string(), paths.plugins.join("http-probe"))]);
        assert!(first.failed.is_empty(), "{first:?}");

        // The record names the first-party key and is signed by the root key.
        let data = &config.server.data_dir;
        let root = sign::load_public_key(&std::fs::read_to_string(data.join("catalog-root.pub")).unwrap()).unwrap();
        let fp = sign::load_public_key(&std::fs::read_to_string(data.join("keys/first-party.pub")).unwrap()).unwrap();
        let record_repo = registry.store.repository("berth/publishers/aisopsflow").unwrap();
        let record = records::read(&record_repo, "aisopsflow", &[root]).await.unwrap().unwrap();
        assert!(record.active_key(fp.key_id()).is_some());
        assert_eq!(record.contacts.security.email.as_deref(), Some("security@aisopsflow.dev"));

        // The image and its manifest artifact verify with the first-party key.
        let repo = registry.store.repository("aisopsflow/json-transform").unwrap();
        let image = repo.resolve("0.1.0").await.unwrap();
        sign::verify_subject(&repo, &image, std::slice::from_ref(&fp)).await.unwrap();

        // What the HTTP API would have announced: the manifest artifact with its subject.
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        let artifact = seen
            .iter()
            .find(|e| e.target.artifact_type.as_deref() == Some(PLUGIN_MANIFEST_MEDIA_TYPE))
            .expect("a plugin manifest event");
        assert_eq!(artifact.target.subject.as_deref(), Some(image.digest().to_string().as_str()));
        assert_eq!(artifact.target.repository, "aisopsflow/json-transform");
        assert!(seen.iter().any(|e| e.target.tag.as_deref() == Some("0.1.0")), "the version tag is announced");
        assert!(seen.iter().any(|e| e.target.repository == "berth/publishers/aisopsflow"));

        // The binary arrives: only the missing plugin is published.
        std::fs::write(paths.plugins.join("http-probe"), b"\x7fELF pretend too").unwrap();
        let second = seed(&paths, &config, &registry, host).await.unwrap();
        assert!(!second.record_pushed);
        assert_eq!(second.present, vec!["aisopsflow/json-transform:0.1.0".to_string()]);
        assert_eq!(second.published.len(), 1, "{second:?}");

        let third = seed(&paths, &config, &registry, host).await.unwrap();
        assert!(third.nothing_to_do(), "{third:?}");
        assert_eq!(third.present.len(), 2);
        assert_eq!(repo.resolve("0.1.0").await.unwrap().digest(), image.digest());
    }

    #[tokio::test]
    async fn a_record_without_the_first_party_key_gets_it_added() {
        let (_dir, config, registry, paths) = setup();
        seed(&paths, &config, &registry, "h:1").await.unwrap();
        // The first-party key is replaced (a lost keys/ directory): the record keeps the old
        // key and lists the new one.
        let data = &config.server.data_dir;
        std::fs::remove_file(data.join(FIRST_PARTY_KEY)).unwrap();
        let again = seed(&paths, &config, &registry, "h:1").await.unwrap();
        assert!(again.record_pushed);
        let root = sign::load_public_key(&std::fs::read_to_string(data.join("catalog-root.pub")).unwrap()).unwrap();
        let repo = registry.store.repository("berth/publishers/aisopsflow").unwrap();
        let record = records::read(&repo, "aisopsflow", &[root]).await.unwrap().unwrap();
        assert_eq!(record.keys.len(), 2);
    }

    #[tokio::test]
    async fn a_plugin_the_seed_misnames_is_reported() {
        let (dir, config, registry, mut paths) = setup();
        let seed_path = dir.path().join("index/seed.json");
        std::fs::create_dir_all(seed_path.parent().unwrap()).unwrap();
        let mut s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&paths.seed).unwrap()).unwrap();
        s["plugins"][0]["repository"] = "aisopsflow/other".into();
        s["plugins"][0]["source"] = workspace().join("artifacts/plugins/json-transform").display().to_string().into();
        s["plugins"].as_array_mut().unwrap().truncate(1);
        std::fs::write(&seed_path, s.to_string()).unwrap();
        paths.seed = seed_path;
        let r = seed(&paths, &config, &registry, "h:1").await.unwrap();
        assert_eq!(r.failed.len(), 1, "{r:?}");
        assert!(r.failed[0].contains("aisopsflow/other"), "{r:?}");
    }
}
