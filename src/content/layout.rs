//! The OCI Image Layout store: one repository in a directory, berth's air-gapped transfer
//! format, readable and writable by skopeo (`oci:`), oras (`--oci-layout`) and umoci.
//!
//! Follows image-spec 1.1 `image-layout.md`:
//!
//! ```text
//! <dir>/oci-layout              {"imageLayoutVersion":"1.0.0"}
//! <dir>/index.json              an image index: the layout's entry points
//! <dir>/blobs/<alg>/<hex>       content, manifests included
//! <dir>/.tmp-<uuid>             staging for atomic writes (only while a write is in flight)
//! ```
//!
//! Tags are `index.json` entries carrying the `org.opencontainers.image.ref.name`
//! annotation, as skopeo, oras and umoci write them. Like oras-go's `oci.Store`, every
//! manifest nothing else in the layout points at (a "root": an untagged image, or a
//! referrer, which points at its subject but is pointed at by nobody) is listed untagged
//! too, so a layout carries its referrers with it; untagged entries another tool wrote are
//! kept. Every blob and every `index.json` appears by `rename` of a complete, fsynced
//! staging file, so a crash leaves at most a stale `.tmp-*` file, never a partial blob or
//! index. `index.json` is rewritten from the in-memory state under one mutex, so
//! concurrent pushes cannot lose each other's entries. The referrers (predecessor) index
//! lives in memory: rebuilt on open by walking every manifest reachable from `index.json`,
//! kept current on push, tag and delete.

use super::{ContentError, MAX_MANIFEST_SIZE, Reader, Reference, Result};
use crate::oci::{Digest, ParsedManifest, media};
use oci_spec::image::Descriptor;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The annotation through which an `index.json` entry names its tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The only layout version image-spec 1.x defines.
pub const LAYOUT_VERSION: &str = "1.0.0";

const OCI_LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";
/// Read size while streaming a blob in.
const CHUNK: usize = 256 * 1024;

/// A manifest the layout knows: how it is listed and which manifests it points at.
#[derive(Debug, Clone)]
struct Node {
    /// The descriptor `index.json` lists it with (never carrying a ref name).
    desc: Descriptor,
    /// Manifests it points at: an index's entries and its subject. Pointed-at manifests
    /// are not roots.
    successors: Vec<Digest>,
    subject: Option<Digest>,
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<Digest, Node>,
    tags: BTreeMap<String, Descriptor>,
    /// Untagged `index.json` entries found on open: kept even when not roots, so a rewrite
    /// never drops what another tool listed.
    pinned: BTreeMap<Digest, Descriptor>,
    /// subject digest → referrer digest → referrer descriptor
    predecessors: HashMap<Digest, BTreeMap<Digest, Descriptor>>,
    /// The index's own annotations, written back unchanged.
    index_annotations: Option<HashMap<String, String>>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    state: Mutex<State>,
}

/// An OCI image layout directory as a [`super::GraphTarget`].
#[derive(Debug, Clone)]
pub struct OciLayout {
    inner: Arc<Inner>,
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    Ok(d.digest().to_string().parse()?)
}

/// An error about a layout file's contents, naming the file.
fn invalid(path: &Path, message: impl Into<String>) -> ContentError {
    ContentError::io(path, std::io::Error::new(ErrorKind::InvalidData, message.into()))
}

/// `d` without the ref-name annotation: a tag is a property of the index entry, not of
/// the manifest, and must not follow the descriptor into other tags or layouts.
fn without_ref_name(d: &Descriptor) -> Descriptor {
    let mut d = d.clone();
    let annotations = d.annotations().clone().map(|mut a| {
        a.remove(REF_NAME);
        a
    });
    d.set_annotations(annotations.filter(|a| !a.is_empty()));
    d
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| ContentError::io(dir, e))
}

/// A staging path in the layout directory (same filesystem, so `rename` is atomic).
fn staging_path(root: &Path) -> PathBuf {
    root.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes `data` to `path` atomically: staging file, fsync, rename, fsync of the directory.
fn write_atomic(root: &Path, path: &Path, data: &[u8]) -> Result<()> {
    let tmp = staging_path(root);
    let res = (|| {
        let mut f = File::create(&tmp).map_err(|e| ContentError::io(&tmp, e))?;
        f.write_all(data).map_err(|e| ContentError::io(&tmp, e))?;
        f.sync_all().map_err(|e| ContentError::io(&tmp, e))?;
        drop(f);
        let dir = path.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).map_err(|e| ContentError::io(dir, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ContentError::io(path, e))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ContentError::Body(format!("layout worker: {e}")))?
}

impl Inner {
    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algorithm().as_str()).join(d.hex())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Size of blob `d`, if the layout has it.
    fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(d);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ContentError::io(&path, e)),
        }
    }

    /// Reads manifest `d` (bounded by [`MAX_MANIFEST_SIZE`]) and checks it against its digest.
    fn read_manifest(&self, d: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(d);
        let size = std::fs::metadata(&path).map_err(|e| ContentError::io(&path, e))?.len();
        if size > MAX_MANIFEST_SIZE {
            return Err(ContentError::SizeExceedsLimit { size, limit: MAX_MANIFEST_SIZE });
        }
        let bytes = std::fs::read(&path).map_err(|e| ContentError::io(&path, e))?;
        let actual = Digest::of(d.algorithm(), &bytes);
        if &actual != d {
            return Err(ContentError::DigestMismatch { expected: d.clone(), actual });
        }
        Ok(bytes)
    }

    /// Writes `index.json` from `state`: tagged entries (sorted by tag), then every
    /// untagged root and pinned entry (sorted by digest).
    fn save_index(&self, state: &State) -> Result<()> {
        let mut manifests = Vec::new();
        let mut tagged = HashSet::new();
        for (tag, desc) in &state.tags {
            let mut d = desc.clone();
            let mut annotations = d.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME.to_string(), tag.clone());
            d.set_annotations(Some(annotations));
            tagged.insert(desc.digest().to_string());
            manifests.push(d);
        }
        let referenced: HashSet<&Digest> = state
            .nodes
            .iter()
            .flat_map(|(d, n)| n.successors.iter().filter(move |s| *s != d))
            .filter(|s| state.nodes.contains_key(*s))
            .collect();
        let mut untagged: BTreeMap<&Digest, &Descriptor> =
            state.nodes.iter().filter(|(d, _)| !referenced.contains(d)).map(|(d, n)| (d, &n.desc)).collect();
        untagged.extend(state.pinned.iter());
        manifests.extend(untagged.into_values().filter(|d| !tagged.contains(&d.digest().to_string())).cloned());
        let mut index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        });
        if let Some(a) = &state.index_annotations {
            index["annotations"] = serde_json::json!(a);
        }
        let bytes = serde_json::to_vec(&index).map_err(|e| ContentError::Body(e.to_string()))?;
        write_atomic(&self.root, &self.root.join(INDEX_FILE), &bytes)
    }
}

impl State {
    /// Records manifest `d` (parsed as `parsed`, listed as `desc`) and its referrer edge.
    fn add_node(&mut self, d: &Digest, desc: &Descriptor, parsed: &ParsedManifest) {
        let mut desc = without_ref_name(desc);
        if desc.artifact_type().is_none() {
            desc.set_artifact_type(parsed.artifact_type.as_deref().map(Into::into));
        }
        let subject = parsed.subject.as_ref().map(|(s, _)| s.clone());
        let mut successors: Vec<Digest> =
            parsed.children.iter().filter(|c| c.is_manifest).map(|c| c.digest.clone()).collect();
        if let Some(s) = &subject {
            self.predecessors
                .entry(s.clone())
                .or_default()
                .insert(d.clone(), parsed.referrer_descriptor(d, desc.size()));
            successors.push(s.clone());
        }
        self.nodes.insert(d.clone(), Node { desc, successors, subject });
    }

    /// Forgets `d`: its node, referrer edge, tags and pinned entry. Returns whether the
    /// index must be rewritten.
    fn remove(&mut self, d: &Digest) -> bool {
        let mut changed = false;
        if let Some(node) = self.nodes.remove(d) {
            changed = true;
            if let Some(s) = node.subject
                && let Some(referrers) = self.predecessors.get_mut(&s)
            {
                referrers.remove(d);
                if referrers.is_empty() {
                    self.predecessors.remove(&s);
                }
            }
        }
        let key = d.to_string();
        let before = self.tags.len();
        self.tags.retain(|_, desc| desc.digest().to_string() != key);
        changed |= self.tags.len() != before;
        changed |= self.pinned.remove(d).is_some();
        changed
    }
}

impl OciLayout {
    /// Opens the layout in `dir`, creating it if `dir` is missing or empty. Refuses a
    /// directory that holds other files but no `oci-layout`, an `oci-layout` of another
    /// version, and an `index.json` that is not an image index, naming the file.
    pub fn open(dir: impl Into<PathBuf>) -> Result<OciLayout> {
        let root: PathBuf = dir.into();
        std::fs::create_dir_all(&root).map_err(|e| ContentError::io(&root, e))?;
        let layout_file = root.join(OCI_LAYOUT_FILE);
        let index_file = root.join(INDEX_FILE);
        match std::fs::read(&layout_file) {
            Ok(bytes) => check_layout_version(&layout_file, &bytes)?,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let mut entries = std::fs::read_dir(&root).map_err(|e| ContentError::io(&root, e))?;
                if entries.next().is_some() {
                    return Err(invalid(
                        &layout_file,
                        "missing, and the directory is not empty: not an OCI image layout",
                    ));
                }
                let version = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION }).to_string();
                write_atomic(&root, &layout_file, version.as_bytes())?;
            }
            Err(e) => return Err(ContentError::io(&layout_file, e)),
        }
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| ContentError::io(&blobs, e))?;

        let inner = Inner { root, state: Mutex::new(State::default()) };
        let (entries, annotations) = match std::fs::read(&index_file) {
            Ok(bytes) => {
                let parsed = ParsedManifest::parse(&bytes, Some(media::OCI_INDEX))
                    .map_err(|e| invalid(&index_file, format!("not a valid image index: {e}")))?;
                if !media::is_index(&parsed.media_type) {
                    return Err(invalid(
                        &index_file,
                        format!("mediaType {:?} is not an image index", parsed.media_type),
                    ));
                }
                (parsed.children.into_iter().map(|c| c.descriptor).collect(), parsed.annotations)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A layout another tool created without an index yet: start an empty one.
                inner.save_index(&State::default())?;
                (Vec::new(), None)
            }
            Err(e) => return Err(ContentError::io(&index_file, e)),
        };
        let state = load(&inner, entries, annotations)?;
        *inner.lock() = state;
        Ok(OciLayout { inner: Arc::new(inner) })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Tags listed in `index.json`, sorted.
    pub fn tags(&self) -> Vec<String> {
        self.inner.lock().tags.keys().cloned().collect()
    }

    /// Streams `content` into a staging file, hashing as it goes, and renames it into
    /// place only if it is exactly what `expected` describes.
    async fn write_blob(&self, d: &Digest, expected: u64, mut content: Reader) -> Result<()> {
        let tmp = staging_path(&self.inner.root);
        let res = async {
            let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| ContentError::io(&tmp, e))?;
            let mut hasher = d.algorithm().hasher();
            let mut buf = vec![0u8; CHUNK];
            let mut received = 0u64;
            loop {
                let n = content.read(&mut buf).await.map_err(|e| ContentError::Body(e.to_string()))?;
                if n == 0 {
                    break;
                }
                received += n as u64;
                // Stop at the first byte too many rather than store a stream of any length.
                if received > expected {
                    return Err(ContentError::SizeMismatch { expected, actual: received });
                }
                hasher.update(&buf[..n]);
                f.write_all(&buf[..n]).await.map_err(|e| ContentError::io(&tmp, e))?;
            }
            if received != expected {
                return Err(ContentError::SizeMismatch { expected, actual: received });
            }
            let actual = hasher.finish();
            if &actual != d {
                return Err(ContentError::DigestMismatch { expected: d.clone(), actual });
            }
            f.sync_all().await.map_err(|e| ContentError::io(&tmp, e))?;
            drop(f);
            let path = self.inner.blob_path(d);
            let dir = path.parent().unwrap_or(&self.inner.root).to_path_buf();
            tokio::fs::create_dir_all(&dir).await.map_err(|e| ContentError::io(&dir, e))?;
            tokio::fs::rename(&tmp, &path).await.map_err(|e| ContentError::io(&path, e))?;
            blocking(move || sync_dir(&dir)).await
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res
    }
}

/// Checks `oci-layout`'s version.
fn check_layout_version(path: &Path, bytes: &[u8]) -> Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LayoutFile {
        image_layout_version: String,
    }
    let f: LayoutFile =
        serde_json::from_slice(bytes).map_err(|e| invalid(path, format!("not a valid oci-layout file: {e}")))?;
    if f.image_layout_version != LAYOUT_VERSION {
        return Err(ContentError::Unsupported(format!(
            "{}: image layout version {:?} is not supported (berth reads and writes {LAYOUT_VERSION})",
            path.display(),
            f.image_layout_version
        )));
    }
    Ok(())
}

/// Builds the state from `index.json`'s entries: tags, pinned untagged entries, and every
/// manifest reachable from them (index entries and subjects), which gives the referrers
/// index. Manifests the layout lacks (a subject not copied along) are skipped; one that is
/// present but corrupt fails the open, naming its file.
fn load(inner: &Inner, entries: Vec<Descriptor>, index_annotations: Option<HashMap<String, String>>) -> Result<State> {
    let mut state = State { index_annotations, ..State::default() };
    let mut queue = VecDeque::new();
    for entry in entries {
        let d = digest_of(&entry)?;
        let name = entry.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
        match name {
            Some(tag) => {
                state.tags.insert(tag, without_ref_name(&entry));
            }
            None => {
                state.pinned.insert(d.clone(), entry.clone());
            }
        }
        queue.push_back((d, entry));
    }
    let mut seen = BTreeSet::new();
    while let Some((d, desc)) = queue.pop_front() {
        if !media::is_manifest(desc.media_type().as_ref()) || !seen.insert(d.clone()) {
            continue;
        }
        if inner.blob_size(&d)?.is_none() {
            continue;
        }
        let path = inner.blob_path(&d);
        let bytes = inner.read_manifest(&d).map_err(|e| invalid(&path, e.to_string()))?;
        let parsed = ParsedManifest::parse(&bytes, Some(desc.media_type().as_ref()))
            .map_err(|e| invalid(&path, e.to_string()))?;
        for c in parsed.children.iter().filter(|c| c.is_manifest) {
            queue.push_back((c.digest.clone(), c.descriptor.clone()));
        }
        if let Some((s, sd)) = &parsed.subject {
            queue.push_back((s.clone(), sd.clone()));
        }
        state.add_node(&d, &desc, &parsed);
    }
    Ok(state)
}

#[async_trait::async_trait]
impl super::Fetcher for OciLayout {
    async fn fetch(&self, target: &Descriptor) -> Result<Reader> {
        let d = digest_of(target)?;
        let path = self.inner.blob_path(&d);
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::pin(f)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ContentError::NotFound(d.to_string())),
            Err(e) => Err(ContentError::io(&path, e)),
        }
    }
}

#[async_trait::async_trait]
impl super::Pusher for OciLayout {
    async fn push(&self, expected: &Descriptor, content: Reader) -> Result<()> {
        let d = digest_of(expected)?;
        let media_type = expected.media_type().to_string();
        if !media::is_manifest(&media_type) {
            return self.write_blob(&d, expected.size(), content).await;
        }
        if expected.size() > MAX_MANIFEST_SIZE {
            return Err(ContentError::SizeExceedsLimit { size: expected.size(), limit: MAX_MANIFEST_SIZE });
        }
        let mut buf = Vec::new();
        content.take(expected.size() + 1).read_to_end(&mut buf).await.map_err(|e| ContentError::Body(e.to_string()))?;
        super::verify(expected, &buf)?;
        let parsed = ParsedManifest::parse(&buf, Some(&media_type))?;
        let inner = self.inner.clone();
        let expected = expected.clone();
        blocking(move || {
            for c in parsed.children.iter().filter(|c| !c.external) {
                if inner.blob_size(&c.digest)?.is_none() {
                    return Err(ContentError::MissingReference {
                        repository: inner.root.display().to_string(),
                        digest: c.digest.clone(),
                        kind: if c.is_manifest { "manifest" } else { "blob" },
                    });
                }
            }
            write_atomic(&inner.root, &inner.blob_path(&d), &buf)?;
            let mut state = inner.lock();
            state.add_node(&d, &expected, &parsed);
            inner.save_index(&state)
        })
        .await
    }
}

#[async_trait::async_trait]
impl super::ReadOnlyStorage for OciLayout {
    async fn exists(&self, target: &Descriptor) -> Result<bool> {
        let d = digest_of(target)?;
        let inner = self.inner.clone();
        blocking(move || Ok(inner.blob_size(&d)?.is_some())).await
    }
}

#[async_trait::async_trait]
impl super::TagResolver for OciLayout {
    /// A tag resolves through `index.json`; a digest resolves if the layout holds it, to
    /// the manifest's descriptor when it is a known (or recognisable) manifest and to an
    /// `application/octet-stream` descriptor otherwise.
    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        let not_found = || ContentError::NotFound(reference.to_string());
        let d = match Reference::parse(reference)? {
            Reference::Tag(t) => return self.inner.lock().tags.get(&t).cloned().ok_or_else(not_found),
            Reference::Digest(d) => d,
        };
        if let Some(node) = self.inner.lock().nodes.get(&d) {
            return Ok(node.desc.clone());
        }
        let inner = self.inner.clone();
        let found = blocking(move || {
            let Some(size) = inner.blob_size(&d)? else { return Ok(None) };
            // A manifest nothing in index.json reaches: recognise it by parsing, since
            // the layout records no media type for bare blobs.
            let media_type = (size <= MAX_MANIFEST_SIZE)
                .then(|| inner.read_manifest(&d).ok())
                .flatten()
                .and_then(|b| ParsedManifest::parse(&b, None).ok())
                .map(|p| p.media_type)
                .unwrap_or_else(|| "application/octet-stream".to_string());
            Ok(Some(Descriptor::new(media_type.as_str().into(), size, d.to_oci())))
        })
        .await?;
        found.ok_or_else(not_found)
    }

    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<()> {
        crate::oci::validate_tag(reference)?;
        let d = digest_of(target)?;
        let media_type = target.media_type().to_string();
        if !media::is_manifest(&media_type) {
            return Err(ContentError::Unsupported(format!(
                "only manifests can be tagged in an OCI layout; {d} is {media_type}"
            )));
        }
        let inner = self.inner.clone();
        let target = target.clone();
        let tag = reference.to_string();
        blocking(move || {
            let size = inner.blob_size(&d)?.ok_or_else(|| ContentError::NotFound(d.to_string()))?;
            if size != target.size() {
                return Err(ContentError::SizeMismatch { expected: target.size(), actual: size });
            }
            let known = inner.lock().nodes.contains_key(&d);
            // A manifest present but unreachable so far joins the graph before it is tagged,
            // so its referrer edge is known.
            let parsed = if known {
                None
            } else {
                let bytes = inner.read_manifest(&d)?;
                Some(ParsedManifest::parse(&bytes, Some(&media_type))?)
            };
            let mut state = inner.lock();
            if let Some(parsed) = &parsed {
                state.add_node(&d, &target, parsed);
            }
            let desc = state.nodes.get(&d).map(|n| n.desc.clone()).unwrap_or_else(|| without_ref_name(&target));
            state.tags.insert(tag, desc);
            inner.save_index(&state)
        })
        .await
    }
}

#[async_trait::async_trait]
impl super::Deleter for OciLayout {
    /// Removes the blob and every `index.json` entry for it. The index is rewritten
    /// first, so a failure in between leaves an unlisted blob, never a dangling tag.
    async fn delete(&self, target: &Descriptor) -> Result<()> {
        let d = digest_of(target)?;
        let inner = self.inner.clone();
        blocking(move || {
            let mut state = inner.lock();
            if inner.blob_size(&d)?.is_none() {
                return Err(ContentError::NotFound(d.to_string()));
            }
            if state.remove(&d) {
                inner.save_index(&state)?;
            }
            let path = inner.blob_path(&d);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Err(ContentError::NotFound(d.to_string())),
                Err(e) => Err(ContentError::io(&path, e)),
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl super::PredecessorFinder for OciLayout {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>> {
        let d = digest_of(node)?;
        Ok(self.inner.lock().predecessors.get(&d).map(|m| m.values().cloned().collect()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{GraphTarget, Pusher, TagResolver, descriptor_for, fetch_all};
    use serde_json::{Value, json};

    fn reader(data: &[u8]) -> Reader {
        Box::pin(std::io::Cursor::new(data.to_vec()))
    }

    fn index_json(dir: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(INDEX_FILE)).unwrap()).unwrap()
    }

    /// Pushes an empty-config image with one layer and a referrer to it; returns
    /// (image descriptor, referrer descriptor).
    async fn image_with_referrer(t: &impl GraphTarget, layer: &[u8]) -> (Descriptor, Descriptor) {
        let empty = descriptor_for(media::OCI_EMPTY, b"{}");
        t.push(&empty, reader(b"{}")).await.unwrap();
        let l = descriptor_for("application/vnd.oci.image.layer.v1.tar", layer);
        t.push(&l, reader(layer)).await.unwrap();
        let m = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": empty, "layers": [l]}),
        )
        .unwrap();
        let md = descriptor_for(media::OCI_MANIFEST, &m);
        t.push(&md, reader(&m)).await.unwrap();
        let r = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom", "config": empty, "layers": [], "subject": md}))
        .unwrap();
        let mut rd = descriptor_for(media::OCI_MANIFEST, &r);
        rd.set_artifact_type(Some("application/vnd.example.sbom".into()));
        t.push(&rd, reader(&r)).await.unwrap();
        (md, rd)
    }

    #[tokio::test]
    async fn layout_meets_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open(dir.path().join("layout")).unwrap();
        crate::content::target_suite::exercise(&layout).await;
        assert_eq!(layout.tags(), vec!["v1"]);
        // nothing staged is left behind
        let stray: Vec<_> = std::fs::read_dir(layout.root())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    #[tokio::test]
    async fn creates_a_spec_layout() {
        let dir = tempfile::tempdir().unwrap();
        OciLayout::open(dir.path()).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join(OCI_LAYOUT_FILE)).unwrap()).unwrap();
        assert_eq!(v, json!({"imageLayoutVersion": "1.0.0"}));
        let index = index_json(dir.path());
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"], json!([]));
        assert!(dir.path().join("blobs/sha256").is_dir());
    }

    #[tokio::test]
    async fn tags_and_referrers_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (md, rd) = {
            let layout = OciLayout::open(dir.path()).unwrap();
            let (md, rd) = image_with_referrer(&layout, b"layer").await;
            layout.tag(&md, "v1").await.unwrap();
            layout.tag(&md, "latest").await.unwrap();
            (md, rd)
        };
        // index.json: both tags, plus the referrer as an untagged root with its artifactType
        let index = index_json(dir.path());
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 3, "{index}");
        let untagged: Vec<_> = entries.iter().filter(|e| e["annotations"][REF_NAME].is_null()).collect();
        assert_eq!(untagged.len(), 1);
        assert_eq!(untagged[0]["digest"], rd.digest().to_string());
        assert_eq!(untagged[0]["artifactType"], "application/vnd.example.sbom");

        let layout = OciLayout::open(dir.path()).unwrap();
        assert_eq!(layout.tags(), vec!["latest", "v1"]);
        assert_eq!(layout.resolve("v1").await.unwrap().digest(), md.digest());
        assert!(layout.resolve("v1").await.unwrap().annotations().is_none());
        let preds = crate::content::PredecessorFinder::predecessors(&layout, &md).await.unwrap();
        assert_eq!(preds.len(), 1);
        assert_eq!(preds[0].digest(), rd.digest());
        assert_eq!(preds[0].artifact_type().as_ref().unwrap().to_string(), "application/vnd.example.sbom");
        assert_eq!(layout.resolve(rd.digest().as_ref()).await.unwrap().size(), rd.size());
        fetch_all(&layout, &rd).await.unwrap();

        // deleting the image drops both tags; the referrer stays listed and indexed
        crate::content::Deleter::delete(&layout, &md).await.unwrap();
        assert!(layout.tags().is_empty());
        let index = index_json(dir.path());
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
        let layout = OciLayout::open(dir.path()).unwrap();
        assert_eq!(crate::content::PredecessorFinder::predecessors(&layout, &md).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_untagged_subject_is_reached_through_its_referrer() {
        let dir = tempfile::tempdir().unwrap();
        let md = {
            let layout = OciLayout::open(dir.path()).unwrap();
            let (md, _) = image_with_referrer(&layout, b"untagged").await;
            // only the referrer is a root: the image is pointed at as its subject
            assert_eq!(index_json(dir.path())["manifests"].as_array().unwrap().len(), 1);
            md
        };
        let layout = OciLayout::open(dir.path()).unwrap();
        assert_eq!(crate::content::PredecessorFinder::predecessors(&layout, &md).await.unwrap().len(), 1);
        assert_eq!(layout.resolve(md.digest().as_ref()).await.unwrap().media_type().to_string(), media::OCI_MANIFEST);
    }

    #[tokio::test]
    async fn concurrent_pushes_keep_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open(dir.path()).unwrap();
        let empty = descriptor_for(media::OCI_EMPTY, b"{}");
        layout.push(&empty, reader(b"{}")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let layout = layout.clone();
            let empty = empty.clone();
            tasks.push(tokio::spawn(async move {
                let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                    "config": empty, "layers": [], "annotations": {"n": i.to_string()}}))
                .unwrap();
                let md = descriptor_for(media::OCI_MANIFEST, &m);
                layout.push(&md, reader(&m)).await.unwrap();
                layout.tag(&md, &format!("t{i}")).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(index_json(dir.path())["manifests"].as_array().unwrap().len(), 16);
        assert_eq!(OciLayout::open(dir.path()).unwrap().tags().len(), 16);
    }

    #[test]
    fn refuses_an_unknown_layout_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OCI_LAYOUT_FILE), br#"{"imageLayoutVersion":"2.0.0"}"#).unwrap();
        let e = OciLayout::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("oci-layout") && e.contains("2.0.0"), "{e}");
    }

    #[test]
    fn refuses_an_invalid_index() {
        let dir = tempfile::tempdir().unwrap();
        OciLayout::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(INDEX_FILE), b"{not json").unwrap();
        let e = OciLayout::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("index.json"), "{e}");
        std::fs::write(dir.path().join(INDEX_FILE), br#"{"schemaVersion":2}"#).unwrap();
        let e = OciLayout::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("index.json") && e.contains("manifests"), "{e}");
    }

    #[test]
    fn refuses_a_non_empty_directory_that_is_not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
        let e = OciLayout::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("oci-layout"), "{e}");
        assert!(!dir.path().join(OCI_LAYOUT_FILE).exists());
    }

    #[tokio::test]
    async fn tagging_needs_a_present_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open(dir.path()).unwrap();
        let ghost = descriptor_for(media::OCI_MANIFEST, b"{}");
        assert!(matches!(layout.tag(&ghost, "v1").await.unwrap_err(), ContentError::NotFound(_)));
        let blob = descriptor_for("application/octet-stream", b"x");
        layout.push(&blob, reader(b"x")).await.unwrap();
        assert!(layout.tag(&blob, "v1").await.is_err());
        assert!(layout.tags().is_empty());
    }
}
