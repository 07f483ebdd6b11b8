//! Reading plugin versions from the registry: the catalog's only source (`DESIGN.md` §
//! artifact graph, trust chain).
//!
//! [`harvest`] turns one image into a [`PluginVersion`] from registry data alone: the plugin
//! manifest artifact (validated against `schemas/plugin-manifest.v1`), the CycloneDX SBOM's
//! component names, the publisher signatures of the image and of the manifest artifact, the
//! newest verification report a verifier key signed and the newest lifecycle status a root
//! key signed. Statements signed by anyone else are not believed (as in
//! [`crate::runner::resolve`], whose trust roles [`HarvestSettings::trust`] reuses). Each
//! referrer list is fetched once and each bundle once, so a version costs one signature
//! check per signed statement and no more.
//!
//! [`walk`] visits every repository of the embedded store or of any OCI 1.1 registry
//! (`/v2/_catalog`, `/v2/<name>/tags/list`, the referrers API) and harvests each plugin
//! version once, with bounded concurrency; rebuilding the index is a walk.
//! [`generate_synthetic`] fills a store with deterministic plugin versions for benchmarks.
//!
//! Not here: the search index ([`super::index`]) and install counts (reputation lives in
//! SQLite, not in the registry).

use super::PluginVersion;
use super::records;
use crate::artifacts::SBOM_ARTIFACT_TYPE;
use crate::config::CatalogMode;
use crate::content::remote::{
    Credentials, RemoteOptions, RemoteRegistry, credentials_from_docker_config, parse_challenge,
};
use crate::content::{ContentError, FsStore, GraphTarget, Reader, Reference, descriptor_for, fetch_all};
use crate::oci::{Digest, media};
use crate::plugin::documents::{LifecycleStatus, PublisherRecord, Status, VerificationReport, VerificationState};
use crate::plugin::{PLUGIN_MANIFEST_MEDIA_TYPE, PluginManifest, STATUS_PREDICATE_TYPE, VERIFICATION_PREDICATE_TYPE};
use crate::runner::resolve::Trust;
use crate::sign::{
    ANNOTATION_CONTENT, ANNOTATION_PREDICATE_TYPE, BUNDLE_MEDIA_TYPE, Bundle, COSIGN_SIGN_PREDICATE_TYPE, KeyPair,
    PublicKey, SignError, Statement,
};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, stream};
use oci_spec::image::Descriptor;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The image annotation `created` is read from.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// Plugin versions harvested at once during a walk of the embedded store (the work is CPU:
/// signature checks and parsing).
const IN_FLIGHT: usize = 16;
/// … and over HTTP, where each version waits on a dozen round trips.
const IN_FLIGHT_HTTP: usize = 32;
/// Repositories listed at once during a walk (ahead of the harvests).
const LISTING_IN_FLIGHT: usize = 4;
/// Tags resolved at once while listing one repository over HTTP.
const RESOLVE_IN_FLIGHT: usize = 8;
/// Synthetic versions written at once (writes wait on fsync; the journal batches them).
const GENERATE_IN_FLIGHT: usize = 32;

/// What the harvester trusts (same roles as the runner) and which publisher is first-party.
#[derive(Debug, Clone, Default)]
pub struct HarvestSettings {
    /// `trust.publishers` are trusted for every publisher (configured keys).
    pub trust: Trust,
    /// Keys per publisher from their publisher records (signed by a root key).
    pub publisher_keys: BTreeMap<String, Vec<PublicKey>>,
    /// Publishers shown as official (first-party).
    pub first_party: Vec<String>,
    /// `host[:port]` used in [`PluginVersion::reference`].
    pub registry: String,
    /// Which versions the catalog lists; `None` lists every plugin version found.
    pub listing: Option<Visibility>,
}

/// The operating mode's rule for what the catalog lists (issue 8, Modes A and B).
#[derive(Debug, Clone, PartialEq)]
pub struct Visibility {
    pub mode: CatalogMode,
    /// Publishers an operator approved: those with a publisher record signed by a root key.
    pub approved: BTreeSet<String>,
}

impl HarvestSettings {
    /// Keys trusted for `publisher`'s signatures: the configured ones and its record's.
    fn keys_for(&self, publisher: &str) -> Vec<PublicKey> {
        let mut keys = self.trust.publishers.clone();
        keys.extend(self.publisher_keys.get(publisher).into_iter().flatten().cloned());
        keys
    }

    /// Whether the catalog lists `v`: Mode A lists the first-party publishers only; Mode B
    /// also approved publishers' versions once they are verified.
    pub fn lists(&self, v: &PluginVersion) -> bool {
        let Some(l) = &self.listing else { return true };
        if self.first_party.contains(&v.publisher) {
            return true;
        }
        l.mode == CatalogMode::Curated && l.approved.contains(&v.publisher) && v.verified
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HarvestError {
    #[error("{what}: {source}")]
    Content { what: String, source: ContentError },
    #[error("the plugin manifest artifact {artifact} is invalid:\n{problems}")]
    InvalidManifest { artifact: String, problems: crate::plugin::ValidationErrors },
    #[error("{what}: {message}")]
    Malformed { what: String, message: String },
    #[error("listing {url}: {message}")]
    Listing { url: String, message: String },
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("{0}")]
    Task(String),
}

fn content(what: impl Into<String>) -> impl FnOnce(ContentError) -> HarvestError {
    let what = what.into();
    move |source| HarvestError::Content { what, source }
}

fn malformed(what: impl Into<String>, message: impl std::fmt::Display) -> HarvestError {
    HarvestError::Malformed { what: what.into(), message: message.to_string() }
}

/// The parts of a manifest the harvester reads; everything else is ignored.
#[derive(Deserialize, Default)]
struct ManifestHead {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
}

fn is_artifact(d: &Descriptor, artifact_type: &str) -> bool {
    d.artifact_type().as_ref().is_some_and(|a| a.to_string() == artifact_type)
}

fn is_plugin_manifest(d: &Descriptor) -> bool {
    is_artifact(d, PLUGIN_MANIFEST_MEDIA_TYPE)
}

/// One plugin version from `target` (the repository `repository`): `None` when the image has
/// no plugin manifest artifact (not a plugin). Fills every [`PluginVersion`] field it can from
/// registry data; `installs` stays 0 (reputation is elsewhere).
pub async fn harvest(
    target: &dyn GraphTarget,
    repository: &str,
    image: &Descriptor,
    s: &HarvestSettings,
) -> Result<Option<PluginVersion>, HarvestError> {
    let referrers = target.predecessors(image).await.map_err(content(format!("referrers of {}", image.digest())))?;
    harvest_with(target, repository, image, &referrers, s).await
}

/// [`harvest`] with the image's referrers already listed.
async fn harvest_with(
    target: &dyn GraphTarget,
    repository: &str,
    image: &Descriptor,
    referrers: &[Descriptor],
    s: &HarvestSettings,
) -> Result<Option<PluginVersion>, HarvestError> {
    // The first plugin manifest artifact, as the runner's resolve takes it.
    let Some(artifact) = referrers.iter().find(|d| is_plugin_manifest(d)) else { return Ok(None) };
    let digest: Digest = image.digest().to_string().parse().map_err(|e| malformed("image digest", e))?;
    let trust = &s.trust;
    // The repository's namespace is the publisher (the manifest's `publisher` must match it).
    let publisher_keys = s.keys_for(repository.split('/').next().unwrap_or_default());

    let manifest_side = async {
        let manifest = plugin_manifest(target, artifact, repository).await?;
        let artifact_referrers = target
            .predecessors(artifact)
            .await
            .map_err(content(format!("referrers of the plugin manifest artifact {}", artifact.digest())))?;
        let signed = signed(target, artifact, &artifact_referrers, &publisher_keys).await;
        Ok::<_, HarvestError>((manifest, signed))
    };
    let (head, manifest_side, sbom, image_signed, report, status) = tokio::join!(
        fetch_head(target, image),
        manifest_side,
        sbom_components(target, referrers),
        signed(target, image, referrers, &publisher_keys),
        newest_report(target, &digest, referrers, &trust.verifiers),
        newest_status(target, &digest, referrers, &trust.roots),
    );
    let head = head?;
    let (m, manifest_signed) = manifest_side?;

    let mut v = PluginVersion {
        repository: repository.to_string(),
        publisher: m.publisher.clone(),
        name: m.name.clone(),
        display_name: m.display_name.clone(),
        description: m.description.clone(),
        version: m.version.to_string(),
        digest: digest.to_string(),
        reference: if s.registry.is_empty() {
            format!("{repository}@{digest}")
        } else {
            format!("{}/{repository}@{digest}", s.registry)
        },
        categories: m.categories.clone(),
        capabilities: m.capabilities.iter().map(|c| c.as_str().to_string()).collect(),
        outbound_hosts: m.outbound_hosts().to_vec(),
        runner_api: m.compatibility.runner_api.clone(),
        min_core: m.compatibility.min_core.as_ref().map(|v| v.to_string()),
        min_runner: m.compatibility.min_runner.as_ref().map(|v| v.to_string()),
        sbom_components: sbom,
        signed: image_signed && manifest_signed,
        verified: false,
        verification: "none".to_string(),
        verified_at: None,
        failed_checks: Vec::new(),
        vulnerabilities: [0; 5],
        lifecycle: "active".to_string(),
        replacement: None,
        official: s.first_party.contains(&m.publisher),
        installs: 0,
        failures: 0,
        created: head.annotations.as_ref().and_then(|a| a.get(ANNOTATION_CREATED)).cloned(),
    };
    if let Some(r) = report {
        v.verified = r.state == VerificationState::Verified;
        v.verification = if v.verified { "verified" } else { "unverified" }.to_string();
        v.verified_at = Some(r.time);
        v.failed_checks = r
            .checks
            .into_iter()
            .filter(|c| c.status == crate::plugin::documents::CheckStatus::Fail)
            .map(|c| c.name)
            .collect();
        let n = r.vulnerabilities;
        v.vulnerabilities = [n.critical, n.high, n.medium, n.low, n.unknown];
    }
    if let Some(st) = status {
        v.lifecycle = match st.status {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Insecure => "insecure",
            Status::Removed => "removed",
        }
        .to_string();
        v.replacement = st.replacement;
    }
    Ok(s.lists(&v).then_some(v))
}

async fn fetch_head(target: &dyn GraphTarget, d: &Descriptor) -> Result<ManifestHead, HarvestError> {
    let bytes = fetch_all(target, d).await.map_err(content(format!("manifest {}", d.digest())))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(format!("manifest {}", d.digest()), e))
}

/// The document a referrer artifact carries: its first layer whose media type starts with
/// `layer_prefix` (any layer when empty).
async fn artifact_document(
    target: &dyn GraphTarget,
    referrer: &Descriptor,
    layer_prefix: &str,
) -> Result<Vec<u8>, HarvestError> {
    let head = fetch_head(target, referrer).await?;
    let layer = head
        .layers
        .iter()
        .find(|l| l.media_type().to_string().starts_with(layer_prefix))
        .ok_or_else(|| malformed(format!("referrer {}", referrer.digest()), "has no document layer"))?;
    fetch_all(target, layer).await.map_err(content(format!(
        "layer {} of referrer {}",
        layer.digest(),
        referrer.digest()
    )))
}

async fn plugin_manifest(
    target: &dyn GraphTarget,
    artifact: &Descriptor,
    repository: &str,
) -> Result<PluginManifest, HarvestError> {
    let bytes = artifact_document(target, artifact, "").await?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| malformed(format!("plugin manifest artifact {}", artifact.digest()), e))?;
    crate::plugin::validate(&doc, Some(repository))
        .map_err(|problems| HarvestError::InvalidManifest { artifact: artifact.digest().to_string(), problems })
}

/// A CycloneDX component, as far as names go.
#[derive(Deserialize)]
struct Component {
    #[serde(default)]
    name: String,
    #[serde(default)]
    components: Vec<Component>,
}

#[derive(Deserialize)]
struct Bom {
    #[serde(default)]
    components: Vec<Component>,
}

/// Names of the components of a CycloneDX JSON document, nested ones included, each once,
/// in document order.
pub fn component_names(json: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    fn visit(cs: Vec<Component>, seen: &mut HashSet<String>, out: &mut Vec<String>) {
        for c in cs {
            if !c.name.is_empty() && seen.insert(c.name.clone()) {
                out.push(c.name);
            }
            visit(c.components, seen, out);
        }
    }
    let bom: Bom = serde_json::from_slice(json)?;
    let (mut seen, mut out) = (HashSet::new(), Vec::new());
    visit(bom.components, &mut seen, &mut out);
    Ok(out)
}

/// Component names of the first CycloneDX referrer. The SBOM was validated when it was
/// attached (and again by the verifier); an unreadable one costs the version its component
/// names, not its place in the catalog.
async fn sbom_components(target: &dyn GraphTarget, referrers: &[Descriptor]) -> Vec<String> {
    let Some(sbom) = referrers.iter().find(|d| is_artifact(d, SBOM_ARTIFACT_TYPE)) else { return Vec::new() };
    let names = match artifact_document(target, sbom, "").await {
        Ok(bytes) => component_names(&bytes).map_err(|e| malformed(format!("SBOM {}", sbom.digest()), e)),
        Err(e) => Err(e),
    };
    names.unwrap_or_else(|e| {
        tracing::warn!("catalog: {e}");
        Vec::new()
    })
}

/// Bundle referrers that may hold a statement of `predicate_type`: annotated with it, or not
/// annotated at all (the statement inside tells).
fn bundles_about<'a>(referrers: &'a [Descriptor], predicate_type: &'a str) -> impl Iterator<Item = &'a Descriptor> {
    referrers.iter().filter(move |d| {
        is_artifact(d, BUNDLE_MEDIA_TYPE)
            && d.annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_PREDICATE_TYPE))
                .is_none_or(|p| p == predicate_type)
    })
}

/// The bundle a referrer carries and its statement, parsed but not yet believed; `None`
/// when it cannot be read or holds no statement of `predicate_type`.
async fn candidate(
    target: &dyn GraphTarget,
    referrer: &Descriptor,
    predicate_type: &str,
) -> Option<(Bundle, Statement)> {
    let read = async {
        let bundle =
            Bundle::from_json(&artifact_document(target, referrer, "application/vnd.dev.sigstore.bundle").await?)?;
        let statement = bundle.statement()?;
        Ok::<_, HarvestError>((bundle, statement))
    };
    match read.await {
        Ok((b, st)) if st.predicate_type == predicate_type => Some((b, st)),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("catalog: referrer {}: {e}", referrer.digest());
            None
        }
    }
}

/// Whether a statement is about `subject` and its bundle's signature verifies with one of
/// `keys` (the subject is compared first: it costs nothing, a signature check ≈ 0.2 ms).
fn believed(bundle: &Bundle, statement: &Statement, subject: &Digest, keys: &[PublicKey]) -> bool {
    statement.names(subject) && matches!(bundle.verify_signature(keys), Ok(Some(_)))
}

/// Whether `subject` carries a signature by one of `keys`: a sigstore bundle referrer, or —
/// only looked for when no bundle verifies — cosign's legacy `.sig` tag.
async fn signed(target: &dyn GraphTarget, subject: &Descriptor, referrers: &[Descriptor], keys: &[PublicKey]) -> bool {
    let Ok(digest) = subject.digest().to_string().parse::<Digest>() else { return false };
    if keys.is_empty() {
        return false;
    }
    for r in bundles_about(referrers, COSIGN_SIGN_PREDICATE_TYPE) {
        if let Some((bundle, statement)) = candidate(target, r, COSIGN_SIGN_PREDICATE_TYPE).await
            && believed(&bundle, &statement, &digest, keys)
        {
            return true;
        }
    }
    let Some(tag) = crate::sign::signature_tag(&digest) else { return false };
    if target.resolve(&tag).await.is_err() {
        return false;
    }
    crate::sign::verify_subject(target, subject, keys).await.is_ok_and(|v| !v.is_empty())
}

/// A predicate that is about an image at a time.
trait Dated: serde::de::DeserializeOwned {
    fn subject(&self) -> &str;
    fn time(&self) -> &str;
}

impl Dated for VerificationReport {
    fn subject(&self) -> &str {
        &self.subject.digest
    }
    fn time(&self) -> &str {
        &self.time
    }
}

impl Dated for LifecycleStatus {
    fn subject(&self) -> &str {
        &self.subject.digest
    }
    fn time(&self) -> &str {
        &self.time
    }
}

/// The newest statement of `predicate_type` about `subject` that a key in `keys` signed.
/// Statements are tried newest first by the time they claim, so only the one that wins is
/// verified (re-verification attaches a report each time; older ones need no check). A
/// forged statement claiming a later time fails its check and the next one is tried.
async fn newest<T: Dated>(
    target: &dyn GraphTarget,
    subject: &Digest,
    referrers: &[Descriptor],
    predicate_type: &str,
    keys: &[PublicKey],
) -> Option<T> {
    if keys.is_empty() {
        return None; // nothing could be believed: fetch nothing
    }
    let wanted = subject.to_string();
    let mut found: Vec<(T, Bundle, Statement)> = Vec::new();
    for r in bundles_about(referrers, predicate_type) {
        let Some((bundle, statement)) = candidate(target, r, predicate_type).await else { continue };
        match serde_json::from_value::<T>(statement.predicate.clone()) {
            Ok(doc) if doc.subject() == wanted => found.push((doc, bundle, statement)),
            Ok(doc) => tracing::debug!("catalog: {predicate_type} about {} attached to {wanted}", doc.subject()),
            Err(e) => tracing::debug!("catalog: referrer {}: not a {predicate_type} predicate: {e}", r.digest()),
        }
    }
    found.sort_by(|a, b| crate::plugin::documents::time_order(b.0.time(), a.0.time()));
    found.into_iter().find(|(_, b, st)| believed(b, st, subject, keys)).map(|(doc, _, _)| doc)
}

async fn newest_report(
    target: &dyn GraphTarget,
    subject: &Digest,
    referrers: &[Descriptor],
    verifiers: &[PublicKey],
) -> Option<VerificationReport> {
    newest(target, subject, referrers, VERIFICATION_PREDICATE_TYPE, verifiers).await
}

async fn newest_status(
    target: &dyn GraphTarget,
    subject: &Digest,
    referrers: &[Descriptor],
    roots: &[PublicKey],
) -> Option<LifecycleStatus> {
    newest(target, subject, referrers, STATUS_PREDICATE_TYPE, roots).await
}

/// The lifecycle status of `image` now: `None` when no status a key of `roots` signed is
/// attached; an error when the referrers cannot be read (callers deciding on it fail closed).
pub async fn current_status(
    target: &dyn GraphTarget,
    image: &Descriptor,
    roots: &[PublicKey],
) -> Result<Option<String>, HarvestError> {
    let digest: Digest = image.digest().to_string().parse().map_err(|e| malformed("image digest", e))?;
    let referrers = target.predecessors(image).await.map_err(content(format!("referrers of {digest}")))?;
    let status = newest_status(target, &digest, &referrers, roots).await;
    Ok(status.and_then(|s| serde_json::to_value(s.status).ok()).and_then(|v| v.as_str().map(str::to_string)))
}

// ---- the walk ---------------------------------------------------------------------------

/// Where a rebuild reads from: the embedded store directly, or any registry over HTTP
/// (`_catalog`, tags list, referrers).
pub enum Source {
    Embedded(Arc<FsStore>),
    Registry { host: String, options: RemoteOptions },
}

/// What a walk did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalkReport {
    pub repositories: usize,
    /// Distinct image manifests looked at: tagged manifests (cosign and referrers-schema tags
    /// aside) and, in the embedded store, untagged manifests a plugin manifest refers to.
    pub images: usize,
    /// Plugin versions harvested (each image digest once).
    pub versions: usize,
    /// `repo@digest: reason` (or `repo: reason` when the repository could not be listed).
    pub skipped: Vec<String>,
    pub seconds: f64,
}

/// Tags that never name a plugin version: cosign's `sha256-<hex>.sig|.att|.sbom` and the
/// referrers tag schema's `sha256-<hex>`.
fn is_signature_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else { return false };
    let hex = rest.split('.').next().unwrap_or_default();
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An image to harvest; its referrers when the listing already read them.
struct Candidate {
    image: Descriptor,
    referrers: Option<Vec<Descriptor>>,
}

/// One repository's candidates and the target to read them through.
struct Listing {
    target: Arc<dyn GraphTarget>,
    candidates: Vec<Candidate>,
    problems: Vec<String>,
}

#[derive(Clone)]
enum Lister {
    Embedded(Arc<FsStore>),
    Registry { registry: Arc<RemoteRegistry>, http: Arc<CatalogClient> },
}

impl Lister {
    fn new(source: &Source) -> Result<Lister, HarvestError> {
        Ok(match source {
            Source::Embedded(store) => Lister::Embedded(store.clone()),
            Source::Registry { host, options } => Lister::Registry {
                registry: RemoteRegistry::new(host, options.clone()).map_err(content(format!("registry {host}")))?,
                http: Arc::new(CatalogClient::new(host, options)?),
            },
        })
    }

    async fn repositories(&self) -> Result<Vec<String>, HarvestError> {
        let mut repos = self.all_repositories().await?;
        // berth's own records (publishers, tenant approvals) are never plugins.
        repos.retain(|r| !r.starts_with("_berth/") && !r.starts_with("berth/"));
        Ok(repos)
    }

    /// Every repository, sorted.
    async fn all_repositories(&self) -> Result<Vec<String>, HarvestError> {
        let mut repos = match self {
            Lister::Embedded(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.repositories())
                    .await
                    .map_err(|e| HarvestError::Task(format!("listing repositories: {e}")))?
                    .map_err(content("listing repositories"))?
            }
            Lister::Registry { http, .. } => http.list("/v2/_catalog", "repositories", "registry:catalog:*").await?,
        };
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    /// A repository to read, without listing it.
    fn target(&self, repository: &str) -> Result<Arc<dyn GraphTarget>, HarvestError> {
        let what = || format!("repository {repository}");
        Ok(match self {
            Lister::Embedded(store) => Arc::new(store.repository(repository).map_err(content(what()))?),
            Lister::Registry { registry, .. } => Arc::new(registry.repository(repository).map_err(content(what()))?),
        })
    }

    async fn list(&self, repository: &str) -> Result<Listing, HarvestError> {
        match self {
            Lister::Embedded(store) => {
                let target: Arc<dyn GraphTarget> = Arc::new(EmbeddedRepository {
                    inner: store.repository(repository).map_err(content(format!("repository {repository}")))?,
                    store: store.clone(),
                    name: repository.to_string(),
                });
                let (store, repo) = (store.clone(), repository.to_string());
                let candidates = tokio::task::spawn_blocking(move || embedded_candidates(&store, &repo))
                    .await
                    .map_err(|e| HarvestError::Task(format!("listing {repository}: {e}")))?
                    .map_err(content(format!("listing {repository}")))?;
                Ok(Listing { target, candidates, problems: Vec::new() })
            }
            Lister::Registry { registry, http } => {
                let repo = registry.repository(repository).map_err(content(format!("repository {repository}")))?;
                let tags = http
                    .list(&format!("/v2/{repository}/tags/list"), "tags", &format!("repository:{repository}:pull"))
                    .await?;
                let mut tags = tags.into_iter().filter(|t| !is_signature_tag(t));
                let resolve = |t: String| {
                    let repo = &repo;
                    async move {
                        let r = crate::content::TagResolver::resolve(repo, &t).await;
                        (t, r)
                    }
                };
                // The first request goes alone: it answers the registry's auth challenge and
                // leaves a token for the concurrent ones (the remote store mistakes a token
                // another request just fetched for a refused one).
                let mut resolved: Vec<(String, Result<Descriptor, ContentError>)> = Vec::new();
                if let Some(first) = tags.next() {
                    resolved.push(resolve(first).await);
                }
                resolved.extend(stream::iter(tags).map(resolve).buffered(RESOLVE_IN_FLIGHT).collect::<Vec<_>>().await);
                let mut seen = HashSet::new();
                let (mut candidates, mut problems) = (Vec::new(), Vec::new());
                for (tag, r) in resolved {
                    match r {
                        Ok(image) if seen.insert(image.digest().to_string()) => {
                            candidates.push(Candidate { image, referrers: None })
                        }
                        Ok(_) => {}
                        // Deleted between listing and resolving: nothing to harvest.
                        Err(ContentError::NotFound(_)) => {}
                        Err(e) => problems.push(format!("{repository}:{tag}: {e}")),
                    }
                }
                Ok(Listing { target: Arc::new(repo), candidates, problems })
            }
        }
    }
}

/// The embedded store lists every manifest: candidates are those a plugin manifest artifact
/// refers to, plus tagged ones (counted as images, though not plugins). The referrers read
/// here travel with the candidate, so the harvest does not list them again.
fn embedded_candidates(store: &Arc<FsStore>, repo: &str) -> Result<Vec<Candidate>, ContentError> {
    let mut tagged = HashSet::new();
    for tag in store.tags(repo)? {
        if is_signature_tag(&tag) {
            continue;
        }
        if let Ok(d) = store.resolve(repo, &Reference::Tag(tag)) {
            tagged.insert(d);
        }
    }
    let mut out = Vec::new();
    for d in store.manifest_digests(repo)? {
        let referrers = store.referrers(repo, &d)?;
        if !tagged.contains(&d) && !referrers.iter().any(is_plugin_manifest) {
            continue;
        }
        let m = match store.get_manifest(repo, &Reference::Digest(d.clone())) {
            Ok(m) => m,
            Err(ContentError::NotFound(_)) => continue, // deleted while listing
            Err(e) => return Err(e),
        };
        let image = Descriptor::new(m.media_type.as_str().into(), m.bytes.len() as u64, d.to_oci());
        out.push(Candidate { image, referrers: Some(referrers) });
    }
    Ok(out)
}

/// Every plugin image (one a plugin manifest artifact refers to, tagged or not) in the
/// embedded store's repositories whose names start with `prefix`: (repository, digest). It
/// reads the store's files: call it off the async workers.
pub fn embedded_plugin_images(store: &Arc<FsStore>, prefix: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for repository in store.repositories().unwrap_or_default().into_iter().filter(|r| r.starts_with(prefix)) {
        for c in embedded_candidates(store, &repository).unwrap_or_default() {
            if c.referrers.as_ref().is_some_and(|rs| rs.iter().any(is_plugin_manifest)) {
                found.push((repository.clone(), c.image.digest().to_string()));
            }
        }
    }
    found
}

/// Blobs at most this large are read in place during an embedded walk.
const READ_IN_PLACE: u64 = 256 * 1024;

/// A repository of the embedded store as the walk reads it: small blobs (documents,
/// bundles) are read in place instead of through tokio's file API, whose three or four
/// thread hand-offs per blob cost more than reading a few kilobytes from the page cache.
/// Everything else is the store's own [`crate::content::fs::FsRepository`].
struct EmbeddedRepository {
    inner: crate::content::fs::FsRepository,
    store: Arc<FsStore>,
    name: String,
}

#[async_trait::async_trait]
impl crate::content::Fetcher for EmbeddedRepository {
    async fn fetch(&self, target: &Descriptor) -> Result<Reader, ContentError> {
        if media::is_manifest(target.media_type().as_ref()) || target.size() > READ_IN_PLACE {
            return self.inner.fetch(target).await;
        }
        let d: Digest = target.digest().to_string().parse()?;
        if self.store.blob_size(&self.name, &d)?.is_none() {
            return Err(ContentError::NotFound(format!("blob {d} in {}", self.name)));
        }
        let path = self.store.blob_path(&d);
        let bytes = std::fs::read(&path).map_err(|e| ContentError::io(&path, e))?;
        Ok(reader(bytes))
    }
}

#[async_trait::async_trait]
impl crate::content::Pusher for EmbeddedRepository {
    async fn push(&self, expected: &Descriptor, content: Reader) -> Result<(), ContentError> {
        self.inner.push(expected, content).await
    }
}

#[async_trait::async_trait]
impl crate::content::ReadOnlyStorage for EmbeddedRepository {
    async fn exists(&self, target: &Descriptor) -> Result<bool, ContentError> {
        self.inner.exists(target).await
    }
}

#[async_trait::async_trait]
impl crate::content::TagResolver for EmbeddedRepository {
    async fn resolve(&self, reference: &str) -> Result<Descriptor, ContentError> {
        self.inner.resolve(reference).await
    }

    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<(), ContentError> {
        self.inner.tag(target, reference).await
    }
}

#[async_trait::async_trait]
impl crate::content::PredecessorFinder for EmbeddedRepository {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>, ContentError> {
        self.inner.predecessors(node).await
    }
}

enum Event {
    Listed { repo: usize, images: usize, problems: Vec<String> },
    Harvested { repo: usize, at: String, result: Box<Result<Option<PluginVersion>, HarvestError>> },
}

/// Walks every repository, every tag and (in the embedded store) every manifest a plugin
/// manifest refers to, harvesting each plugin version once (by image digest, first
/// repository in name order wins); calls `each` per version found; `progress` gets
/// (repositories done, repositories total, versions so far). Harvests run as tasks, at most
/// 16 (embedded store) or 32 (over HTTP) at once. An image that cannot be harvested is listed in
/// [`WalkReport::skipped`]; only failing to list the repositories is an error.
pub async fn walk(
    source: &Source,
    s: &HarvestSettings,
    progress: &(dyn Fn(usize, usize, usize) + Sync),
    each: &mut (dyn FnMut(PluginVersion) + Send),
) -> Result<WalkReport, HarvestError> {
    walk_matching(source, s, &|_| true, progress, each).await
}

/// [`walk`] over the repositories `wanted` accepts (e.g. one publisher's namespace).
pub async fn walk_matching(
    source: &Source,
    s: &HarvestSettings,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    progress: &(dyn Fn(usize, usize, usize) + Sync),
    each: &mut (dyn FnMut(PluginVersion) + Send),
) -> Result<WalkReport, HarvestError> {
    let started = Instant::now();
    let lister = Lister::new(source)?;
    let mut repositories = lister.repositories().await?;
    repositories.retain(|r| wanted(r));
    let total = repositories.len();
    let settings = Arc::new(s.clone());
    let in_flight = match source {
        Source::Embedded(_) => IN_FLIGHT,
        Source::Registry { .. } => IN_FLIGHT_HTTP,
    };
    progress(0, total, 0);

    let listings = stream::iter(repositories.into_iter().enumerate())
        .map(|(i, name)| {
            let lister = lister.clone();
            async move {
                let listed = lister.list(&name).await;
                (i, name, listed)
            }
        })
        .buffered(LISTING_IN_FLIGHT);
    let mut claimed: HashSet<String> = HashSet::new();
    let mut events = listings
        .flat_map(|(repo, name, listed)| {
            let mut work: Vec<BoxFuture<'static, Event>> = Vec::new();
            match listed {
                Err(e) => work.push(
                    futures_util::future::ready(Event::Listed {
                        repo,
                        images: 0,
                        problems: vec![format!("{name}: {e}")],
                    })
                    .boxed(),
                ),
                Ok(Listing { target, candidates, problems }) => {
                    let fresh: Vec<Candidate> =
                        candidates.into_iter().filter(|c| claimed.insert(c.image.digest().to_string())).collect();
                    work.push(
                        futures_util::future::ready(Event::Listed { repo, images: fresh.len(), problems }).boxed(),
                    );
                    let name: Arc<str> = Arc::from(name);
                    for c in fresh {
                        let (target, name, settings) = (target.clone(), name.clone(), settings.clone());
                        work.push(
                            async move {
                                let at = format!("{name}@{}", c.image.digest());
                                let task = tokio::spawn(async move {
                                    match &c.referrers {
                                        Some(r) => harvest_with(&*target, &name, &c.image, r, &settings).await,
                                        None => harvest(&*target, &name, &c.image, &settings).await,
                                    }
                                });
                                let result = task.await.unwrap_or_else(|e| Err(HarvestError::Task(e.to_string())));
                                Event::Harvested { repo, at, result: Box::new(result) }
                            }
                            .boxed(),
                        );
                    }
                }
            }
            stream::iter(work)
        })
        .buffer_unordered(in_flight);

    let mut report = WalkReport { repositories: total, ..WalkReport::default() };
    // Per repository: images to harvest (once listed) and harvests finished.
    let mut expected: Vec<Option<usize>> = vec![None; total];
    let mut finished = vec![0usize; total];
    let mut done = 0;
    while let Some(event) = events.next().await {
        let repo = match event {
            Event::Listed { repo, images, problems } => {
                report.images += images;
                report.skipped.extend(problems);
                expected[repo] = Some(images);
                repo
            }
            Event::Harvested { repo, at, result } => {
                finished[repo] += 1;
                match *result {
                    Ok(Some(v)) => {
                        report.versions += 1;
                        each(v);
                    }
                    Ok(None) => {}
                    Err(e) => report.skipped.push(format!("{at}: {e}")),
                }
                repo
            }
        };
        if expected[repo] == Some(finished[repo]) {
            expected[repo] = None; // counted once
            done += 1;
            progress(done, total, report.versions);
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The publisher records in `source` that a key of `roots` signed, by publisher, and what
/// was wrong with the others (unsigned, signed by another key, invalid).
pub async fn publisher_records(
    source: &Source,
    roots: &[PublicKey],
) -> Result<(BTreeMap<String, PublisherRecord>, Vec<String>), HarvestError> {
    let lister = Lister::new(source)?;
    let (mut found, mut problems) = (BTreeMap::new(), Vec::new());
    for repository in lister.all_repositories().await? {
        let Some(name) = records::publisher_of(&repository) else { continue };
        let target = lister.target(&repository)?;
        match records::read(&*target, name, roots).await {
            Ok(Some(r)) => {
                found.insert(name.to_string(), r);
            }
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    Ok((found, problems))
}

/// One publisher's record in `source`, when a key of `roots` signed it.
pub async fn publisher_record(
    source: &Source,
    publisher: &str,
    roots: &[PublicKey],
) -> Result<Option<PublisherRecord>, HarvestError> {
    let target = Lister::new(source)?.target(&records::repository(publisher))?;
    records::read(&*target, publisher, roots).await.map_err(|e| malformed("publisher record", e))
}

// ---- listing over HTTP ------------------------------------------------------------------

/// `GET /v2/_catalog` and `GET /v2/<name>/tags/list` with `Link` pagination, anonymous,
/// Basic or Bearer-token auth. The remote content store has no listing calls; this is the
/// smallest client that serves a walk.
struct CatalogClient {
    client: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    /// scope → Bearer token.
    tokens: Mutex<HashMap<String, String>>,
    basic: std::sync::atomic::AtomicBool,
}

impl CatalogClient {
    fn new(host: &str, opts: &RemoteOptions) -> Result<CatalogClient, HarvestError> {
        let plain = opts.plain_http.unwrap_or_else(|| crate::oci::reference::is_loopback_host(host));
        let base = format!("{}://{host}", if plain { "http" } else { "https" });
        let fail = |message: String| HarvestError::Listing { url: base.clone(), message };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15));
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca).map_err(|e| fail(format!("CA certificate {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| fail(format!("CA certificate {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| fail(format!("HTTP client: {e}")))?;
        let credentials = opts
            .credentials
            .clone()
            .or_else(|| opts.docker_config.as_ref().and_then(|p| credentials_from_docker_config(p, host)));
        Ok(CatalogClient {
            client,
            base,
            credentials,
            tokens: Mutex::new(HashMap::new()),
            basic: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn request(&self, url: &str, scope: &str) -> reqwest::RequestBuilder {
        let rb = self.client.get(url);
        if let Some(t) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(scope) {
            return rb.bearer_auth(t);
        }
        match &self.credentials {
            Some(c) if self.basic.load(std::sync::atomic::Ordering::Relaxed) => {
                rb.basic_auth(&c.username, Some(&c.password))
            }
            _ => rb,
        }
    }

    /// GETs `url`, answering one auth challenge.
    async fn get(&self, url: &str, scope: &str) -> Result<reqwest::Response, HarvestError> {
        let fail = |message: String| HarvestError::Listing { url: url.to_string(), message };
        let r = self.request(url, scope).send().await.map_err(|e| fail(e.to_string()))?;
        if r.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(r);
        }
        let challenge = r
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (scheme, params) = parse_challenge(&challenge);
        match scheme.as_str() {
            "basic" if self.credentials.is_some() => self.basic.store(true, std::sync::atomic::Ordering::Relaxed),
            "bearer" => {
                let realm =
                    params.get("realm").ok_or_else(|| fail(format!("Bearer challenge without realm: {challenge}")))?;
                let mut query: Vec<(&str, String)> = Vec::new();
                if let Some(s) = params.get("service") {
                    query.push(("service", s.clone()));
                }
                query.push(("scope", params.get("scope").cloned().unwrap_or_else(|| scope.to_string())));
                let mut rb = self.client.get(realm).query(&query);
                if let Some(c) = &self.credentials {
                    rb = rb.basic_auth(&c.username, Some(&c.password));
                }
                let t = rb.send().await.map_err(|e| fail(format!("token request to {realm}: {e}")))?;
                if !t.status().is_success() {
                    return Err(fail(format!("token endpoint {realm} answered {}", t.status())));
                }
                let v: Value = t.json().await.map_err(|e| fail(format!("token response: {e}")))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| fail("token response has no token".to_string()))?;
                self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(scope.to_string(), token.to_string());
            }
            _ => return Ok(r),
        }
        self.request(url, scope).send().await.map_err(|e| fail(e.to_string()))
    }

    /// Every string of the array `key` over all pages from `path` (`Link: <…>; rel="next"`).
    async fn list(&self, path: &str, key: &str, scope: &str) -> Result<Vec<String>, HarvestError> {
        let mut out = Vec::new();
        let mut next = Some(format!("{}{path}", self.base));
        while let Some(url) = next.take() {
            let r = self.get(&url, scope).await?;
            let fail = |message: String| HarvestError::Listing { url: url.clone(), message };
            if !r.status().is_success() {
                let status = r.status();
                let body: String = r.text().await.unwrap_or_default().chars().take(300).collect();
                return Err(fail(format!("{status}: {body}")));
            }
            next = r.headers().get(reqwest::header::LINK).and_then(|v| v.to_str().ok()).and_then(next_link).map(|l| {
                if l.starts_with("http://") || l.starts_with("https://") { l } else { format!("{}{l}", self.base) }
            });
            let v: Value = r.json().await.map_err(|e| fail(e.to_string()))?;
            // `tags` is null for a repository whose tags were all deleted.
            let items = v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            out.extend(items.iter().filter_map(Value::as_str).map(str::to_string));
            if next.as_deref() == Some(url.as_str()) {
                break; // a registry that links a page to itself would loop forever
            }
        }
        Ok(out)
    }
}

/// The target of a `Link` header's `rel="next"` entry.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        is_next.then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

// ---- synthetic plugin versions -----------------------------------------------------------

/// One step of SplitMix64: small, seeded, the same sequence on every platform and crate
/// version (the synthetic data here and the benchmark's query mix both draw from it).
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seeded choices over [`splitmix64`].
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// `k` distinct items of `from`, in `from`'s order.
    fn some<'a>(&mut self, from: &[&'a str], k: usize) -> Vec<&'a str> {
        let mut chosen: Vec<usize> = (0..from.len()).collect();
        for i in 0..k.min(from.len()) {
            let j = i + self.below(from.len() - i);
            chosen.swap(i, j);
        }
        chosen.truncate(k.min(from.len()));
        chosen.sort_unstable();
        chosen.into_iter().map(|i| from[i]).collect()
    }
}

const SEED: u64 = 0x6265_7274_6863_6174; // "berthcat"
/// Versions per synthetic plugin.
const VERSIONS_PER_PLUGIN: usize = 4;
const ADJECTIVES: [&str; 24] = [
    "fast", "quiet", "bright", "lazy", "brave", "clever", "gentle", "proud", "swift", "calm", "eager", "fancy",
    "jolly", "kind", "lively", "nimble", "plain", "rapid", "sharp", "smart", "solid", "steady", "tidy", "witty",
];
const NOUNS: [&str; 24] = [
    "parser",
    "probe",
    "bridge",
    "router",
    "mailer",
    "scanner",
    "tracker",
    "indexer",
    "notifier",
    "exporter",
    "importer",
    "checker",
    "mapper",
    "reducer",
    "watcher",
    "syncer",
    "fetcher",
    "renderer",
    "signer",
    "auditor",
    "planner",
    "scheduler",
    "collector",
    "transformer",
];
const CATEGORIES: [&str; 10] = [
    "data",
    "monitoring",
    "security",
    "notifications",
    "storage",
    "ai",
    "devops",
    "networking",
    "finance",
    "analytics",
];
const CAPABILITIES: [&str; 5] = ["outbound_http", "secrets_read", "filesystem_tmp", "callbacks", "metrics"];
/// Component names SBOMs draw from, so a dependency search finds many plugins.
const CRATES: [&str; 48] = [
    "serde",
    "serde_json",
    "tokio",
    "hyper",
    "reqwest",
    "axum",
    "tower",
    "bytes",
    "futures",
    "tracing",
    "log",
    "regex",
    "rand",
    "chrono",
    "time",
    "uuid",
    "base64",
    "hex",
    "sha2",
    "ring",
    "rustls",
    "openssl",
    "libc",
    "anyhow",
    "thiserror",
    "clap",
    "url",
    "http",
    "mime",
    "flate2",
    "zstd",
    "tar",
    "toml",
    "yaml-rust",
    "csv",
    "itertools",
    "once_cell",
    "parking_lot",
    "crossbeam",
    "rayon",
    "smallvec",
    "indexmap",
    "hashbrown",
    "memchr",
    "aho-corasick",
    "semver",
    "prost",
    "tonic",
];
/// A base time for `created` (2025-01-01T00:00:00Z), one hour apart per version.
const BASE_TIME: u64 = 1_735_689_600;

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

fn reader(data: Vec<u8>) -> Reader {
    Box::pin(std::io::Cursor::new(data))
}

async fn push(target: &dyn GraphTarget, d: &Descriptor, data: Vec<u8>) -> Result<(), HarvestError> {
    crate::content::Pusher::push(target, d, reader(data)).await.map_err(content(format!("pushing {}", d.digest())))
}

/// A one-file tar archive (mtime 0), the synthetic image's only layer.
fn tar_layer(name: &str, data: &[u8]) -> Result<Vec<u8>, HarvestError> {
    let fail = |e: std::io::Error| malformed("synthetic layer", e);
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(fail)?;
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).map_err(fail)?;
    b.into_inner().map_err(fail)
}

/// Attaches a signed in-toto statement as a bundle referrer, as [`crate::sign::attach_signature`]
/// writes it, without its search for an identical bundle (a fresh subject has none).
async fn attach_bundle(target: &dyn GraphTarget, subject: &Descriptor, bundle: &Bundle) -> Result<(), HarvestError> {
    let predicate_type = bundle.statement()?.predicate_type;
    let annotations = BTreeMap::from([
        (ANNOTATION_CONTENT.to_string(), "dsse-envelope".to_string()),
        (ANNOTATION_PREDICATE_TYPE.to_string(), predicate_type),
    ]);
    crate::artifacts::attach(target, subject, BUNDLE_MEDIA_TYPE, &bundle.to_json()?, &annotations)
        .await
        .map_err(content(format!("attaching a bundle to {}", subject.digest())))?;
    Ok(())
}

/// Fills `store` with `n` deterministic plugin versions (same `n`, same digests): publishers
/// `p0`…`p49`, four versions per plugin, categories, capabilities, a CycloneDX 1.5 SBOM of
/// 20–80 components, the image and its plugin manifest artifact signed by `key` (cosign v3
/// bundles), a verification report signed by `key` (one in ten `unverified`, with failed
/// checks and vulnerabilities) and, for one in twenty, a `deprecated` status signed by `key`.
/// Trust `key` as publisher, verifier and root to see all of it. Returns
/// `publisher/name@sha256:…` per version, in order.
pub async fn generate_synthetic(store: &Arc<FsStore>, n: usize, key: &KeyPair) -> Result<Vec<String>, HarvestError> {
    stream::iter(0..n)
        .map(|i| synthetic_version(store, i, key))
        .buffered(GENERATE_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn synthetic_version(store: &Arc<FsStore>, i: usize, key: &KeyPair) -> Result<String, HarvestError> {
    let plugin = i / VERSIONS_PER_PLUGIN;
    let mut p = Rng::new(SEED ^ (plugin as u64).wrapping_mul(0x100_0000_01B3));
    let publisher = format!("p{}", plugin % 50);
    let (adjective, noun) = (p.pick(&ADJECTIVES), p.pick(&NOUNS));
    let name = format!("{adjective}-{noun}-{plugin}");
    let repository = format!("{publisher}/{name}");
    let categories = {
        let k = 1 + p.below(3);
        p.some(&CATEGORIES, k)
    };
    let mut r = Rng::new(SEED ^ (i as u64).wrapping_mul(0x9E37_79B9) ^ 0x5bd1_e995);
    let minor = i % VERSIONS_PER_PLUGIN;
    let version = format!("1.{minor}.{}", r.below(3));
    let capabilities = {
        let k = r.below(4);
        r.some(&CAPABILITIES, k)
    };
    let created = rfc3339(BASE_TIME + i as u64 * 3600);
    let target = store.repository(&repository).map_err(content(format!("repository {repository}")))?;
    let t: &dyn GraphTarget = &target;

    // The image: one small layer, a config naming it, a manifest with the usual annotations.
    let layer = tar_layer("plugin.txt", format!("{repository} {version}\n").as_bytes())?;
    let layer_desc = descriptor_for("application/vnd.oci.image.layer.v1.tar", &layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"User": "65532", "ExposedPorts": {"8080/tcp": {}}, "Entrypoint": ["/plugin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc.digest().to_string()]},
    }))
    .map_err(|e| malformed("synthetic config", e))?;
    let config_desc = descriptor_for("application/vnd.oci.image.config.v1+json", &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": config_desc, "layers": [layer_desc],
        "annotations": {
            ANNOTATION_CREATED: created,
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
        },
    }))
    .map_err(|e| malformed("synthetic manifest", e))?;
    let image = descriptor_for(media::OCI_MANIFEST, &manifest);
    let digest: Digest = image.digest().to_string().parse().map_err(|e| malformed("synthetic digest", e))?;
    push(t, &config_desc, config).await?;
    push(t, &layer_desc, layer).await?;
    push(t, &image, manifest).await?;
    crate::content::TagResolver::tag(t, &image, &version).await.map_err(content(format!("tagging {repository}")))?;

    // The plugin manifest.
    let mut doc = json!({
        "api_version": crate::plugin::PLUGIN_API_VERSION,
        "name": name,
        "publisher": publisher,
        "display_name": format!("{} {}", capitalise(adjective), capitalise(noun)),
        "description": format!(
            "A {adjective} {noun} for {}: synthetic plugin {plugin} from the catalog benchmark.",
            categories.join(" and ")
        ),
        "version": version,
        "runtime": {"type": "oci", "image": format!("synthetic.berth.invalid/{repository}@{digest}"), "port": 8080},
        "entrypoints": {
            "run": {"path": "/v1/entrypoints/run", "method": "POST", "timeout_ms": 1000 + 500 * r.below(8) as u64}
        },
        "compatibility": {"runner_api": if r.below(2) == 0 { "1.0" } else { "^1.0" }, "min_core": "1.0.0"},
        "capabilities": capabilities,
        "categories": categories,
        "license": if r.below(3) == 0 { "MIT" } else { "Apache-2.0" },
    });
    if capabilities.contains(&"outbound_http") {
        doc["network"] = json!({"outbound_hosts": [format!("api.{noun}.example.com")]});
    }
    if capabilities.contains(&"secrets_read") {
        doc["secrets"] = json!(["api_token"]);
    }
    let doc = serde_json::to_vec(&doc).map_err(|e| malformed("synthetic plugin manifest", e))?;
    let notes = BTreeMap::from([
        ("org.opencontainers.image.title".to_string(), name.clone()),
        ("org.opencontainers.image.version".to_string(), version.clone()),
    ]);
    let artifact = crate::artifacts::attach(t, &image, PLUGIN_MANIFEST_MEDIA_TYPE, &doc, &notes)
        .await
        .map_err(content(format!("attaching the plugin manifest to {repository}")))?;

    // The SBOM: 20–80 components, a few of them nested.
    let count = 20 + r.below(61);
    let mut components: Vec<Value> = (0..count)
        .map(|k| {
            let c = if k < CRATES.len() {
                CRATES[(k + plugin) % CRATES.len()].to_string()
            } else {
                format!("dep-{plugin}-{k}")
            };
            let v = format!("{}.{}.{}", r.below(3), r.below(20), r.below(10));
            json!({"type": "library", "bom-ref": format!("pkg:cargo/{c}@{v}"), "name": c, "version": v,
                   "purl": format!("pkg:cargo/{c}@{v}")})
        })
        .collect();
    let nested: Vec<Value> = components.drain(count - 3..).collect();
    components[0]["components"] = Value::Array(nested);
    let sbom = serde_json::to_vec(&json!({
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "serialNumber": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
        "metadata": {"component": {"type": "application", "bom-ref": name, "name": name, "version": version}},
        "components": components,
    }))
    .map_err(|e| malformed("synthetic SBOM", e))?;
    crate::artifacts::attach(t, &image, SBOM_ARTIFACT_TYPE, &sbom, &BTreeMap::new())
        .await
        .map_err(content(format!("attaching the SBOM to {repository}")))?;

    // Publisher signatures of the image and of the manifest artifact.
    let artifact_digest: Digest =
        artifact.digest().to_string().parse().map_err(|e| malformed("synthetic digest", e))?;
    attach_bundle(t, &image, &crate::sign::sign_subject(&digest, &repository, key)?).await?;
    attach_bundle(t, &artifact, &crate::sign::sign_subject(&artifact_digest, &repository, key)?).await?;

    // A verification report and, now and then, a deprecation.
    let unverified = r.below(10) == 0;
    let report = json!({
        "api_version": crate::plugin::VERIFICATION_API_VERSION,
        "subject": {"digest": digest.to_string(), "repository": repository},
        "verifier": {"id": "synthetic-verifier", "version": "1"},
        "time": rfc3339(BASE_TIME + i as u64 * 3600 + 600),
        "state": if unverified { "unverified" } else { "verified" },
        "compatibility": {"result": "compatible", "runner_api": ["1.0"]},
        "checks": [
            {"name": "schema", "status": "pass", "findings": []},
            {"name": "signatures", "status": "pass", "findings": []},
            {"name": "vulnerabilities", "status": if unverified { "fail" } else { "pass" },
             "findings": if unverified {
                 json!([{"severity": "high", "message": "a known vulnerability", "id": format!("OSV-2025-{i}")}])
             } else { json!([]) }},
        ],
        "vulnerabilities": {"critical": 0, "high": u64::from(unverified), "medium": r.below(3), "low": r.below(5), "unknown": 0},
    });
    let bundle = crate::sign::sign_statement(&digest, &repository, VERIFICATION_PREDICATE_TYPE, report, key)?;
    attach_bundle(t, &image, &bundle).await?;
    if r.below(20) == 0 {
        let status = json!({
            "api_version": crate::plugin::STATUS_API_VERSION,
            "subject": {"digest": digest.to_string(), "repository": repository},
            "status": "deprecated",
            "reason": "superseded by a newer version",
            "replacement": format!("{name}@1.{}.0", minor + 1),
            "time": rfc3339(BASE_TIME + i as u64 * 3600 + 1200),
            "by": "synthetic-catalog-admin",
        });
        let bundle = crate::sign::sign_statement(&digest, &repository, STATUS_PREDICATE_TYPE, status, key)?;
        attach_bundle(t, &image, &bundle).await?;
    }
    Ok(format!("{repository}@{digest}"))
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_include_nested_ones_once() {
        let bom = br#"{"bomFormat":"CycloneDX","components":[
            {"name":"serde","components":[{"name":"serde_derive"},{"name":"serde"}]},
            {"name":"tokio"},{"type":"library"}]}"#;
        assert_eq!(component_names(bom).unwrap(), ["serde", "serde_derive", "tokio"]);
        assert!(component_names(br#"{"bomFormat":"CycloneDX"}"#).unwrap().is_empty());
    }

    #[test]
    fn signature_and_referrers_schema_tags_are_not_versions() {
        let hex = "a".repeat(64);
        assert!(is_signature_tag(&format!("sha256-{hex}")));
        assert!(is_signature_tag(&format!("sha256-{hex}.sig")));
        assert!(!is_signature_tag("sha256-abc"));
        assert!(!is_signature_tag("1.0.0"));
    }

    #[test]
    fn link_headers_give_the_next_page() {
        assert_eq!(
            next_link(r#"</v2/_catalog?n=3&last=b/x>; rel="next""#).as_deref(),
            Some("/v2/_catalog?n=3&last=b/x")
        );
        assert_eq!(
            next_link(r#"<https://r.io/v2/a/tags/list?last=x>; rel=next"#).as_deref(),
            Some("https://r.io/v2/a/tags/list?last=x")
        );
        assert_eq!(next_link(r#"</v2/x>; rel="prev""#), None);
    }

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(r#"Bearer realm="http://h:1/token",service="berth",scope="registry:catalog:*""#);
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "http://h:1/token");
        assert_eq!(p["service"], "berth");
        assert_eq!(p["scope"], "registry:catalog:*");
    }

    #[test]
    fn the_generator_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!((0..5).map(|_| a.next()).collect::<Vec<_>>(), (0..5).map(|_| b.next()).collect::<Vec<_>>());
        let picked = Rng::new(1).some(&CAPABILITIES, 3);
        assert_eq!(picked.len(), 3);
        assert!(
            picked
                .windows(2)
                .all(|w| CAPABILITIES.iter().position(|c| c == &w[0]) < CAPABILITIES.iter().position(|c| c == &w[1]))
        );
    }
}
