//! The copy engine: the one function that moves bytes in berth. Publish, pull, install and
//! mirror are all [`copy_graph`] (or [`extended_copy`]) with other endpoints.
//!
//! Modelled on oras-go's `CopyGraph` / `ExtendedCopyGraph`:
//!
//! - Children before parents: a manifest is pushed only once everything it points at
//!   (config and layers, or an index's manifests) is at the destination, so a destination
//!   never holds a manifest with missing children, even when a copy fails half way.
//! - A node the destination already has is skipped together with its whole sub-graph: the
//!   stores refuse manifests with missing children, so an existing manifest proves its
//!   sub-graph is there.
//! - A node reached through several parents is copied once, even when the parents are
//!   copied concurrently.
//! - Concurrency is bounded by a semaphore held only around single storage operations
//!   (never while waiting for children), so a deep graph cannot deadlock the bound.
//! - Blobs stream fetch → push through a reader that counts (progress) and hashes, so a
//!   source that serves the wrong bytes is reported as a *source* failure, and never
//!   buffered whole. Manifests are small and fetched whole to be parsed.
//! - A manifest's `subject` is not followed by [`copy_graph`]; [`extended_copy`] brings the
//!   referrers of the root (and theirs, recursively) after their subjects.

use super::{ContentError, GraphTarget, MAX_MANIFEST_SIZE, Reader, fetch_all};
use crate::oci::{Digest, Hasher, ParsedManifest, media};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, try_join_all};
use oci_spec::image::Descriptor;
use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

/// Concurrency used when [`CopyOptions::concurrency`] is zero (oras-go's default too).
pub const DEFAULT_CONCURRENCY: usize = 3;

/// A progress callback; called from whichever task is copying, so it must be cheap.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How to copy. The zero value (`Default`) means the defaults.
#[derive(Clone, Default)]
pub struct CopyOptions {
    /// Storage operations in flight at once; 0 means [`DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Called for every [`Progress`] event.
    pub progress: Option<ProgressFn>,
}

impl CopyOptions {
    /// The concurrency actually used.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency == 0 { DEFAULT_CONCURRENCY } else { self.concurrency }
    }
}

impl std::fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOptions")
            .field("concurrency", &self.concurrency)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// What the copy is doing, node by node.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The node is missing at the destination and its bytes start to move.
    Started { descriptor: Descriptor },
    /// `done` of `total` bytes of the node have passed through.
    Bytes { descriptor: Descriptor, done: u64, total: u64 },
    /// The destination accepted the node.
    Copied { descriptor: Descriptor },
    /// The destination already had the node (and so, for a manifest, its sub-graph).
    Skipped { descriptor: Descriptor },
}

/// What a copy did. `copied`/`skipped` count nodes; a skipped manifest counts once and its
/// sub-graph is not visited, so `bytes_skipped` is the size of the skipped nodes themselves.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub copied: usize,
    pub skipped: usize,
    pub bytes_copied: u64,
    pub bytes_skipped: u64,
    pub blobs_copied: usize,
    pub manifests_copied: usize,
    /// Blobs the destination mounted from another repository (counted in `blobs_copied`,
    /// their bytes in `bytes_mounted`, not `bytes_copied`: they did not travel).
    pub blobs_mounted: usize,
    pub bytes_mounted: u64,
}

impl CopyReport {
    /// Adds `other` into `self` (for callers that run several copies as one operation).
    pub fn merge(&mut self, other: &CopyReport) {
        self.copied += other.copied;
        self.skipped += other.skipped;
        self.bytes_copied += other.bytes_copied;
        self.bytes_skipped += other.bytes_skipped;
        self.blobs_copied += other.blobs_copied;
        self.manifests_copied += other.manifests_copied;
        self.blobs_mounted += other.blobs_mounted;
        self.bytes_mounted += other.bytes_mounted;
    }
}

/// A failed copy: which side failed, and on which node.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading from the source failed, or it served content that does not match the
    /// descriptor.
    #[error("copying {} ({}): the source failed: {error}", .descriptor.digest(), .descriptor.media_type())]
    Source {
        descriptor: Box<Descriptor>,
        #[source]
        error: ContentError,
    },
    /// The destination refused or failed to store the node.
    #[error("copying {} ({}): the destination failed: {error}", .descriptor.digest(), .descriptor.media_type())]
    Destination {
        descriptor: Box<Descriptor>,
        #[source]
        error: ContentError,
    },
    /// The copy stopped without a recorded cause. Not expected: every failure path records
    /// its cause; this exists so the engine reports rather than panics if one ever does not.
    #[error("copying {}: stopped without a recorded cause", .descriptor.digest())]
    Incomplete { descriptor: Box<Descriptor> },
}

impl CopyError {
    /// The node whose copy failed.
    pub fn descriptor(&self) -> &Descriptor {
        match self {
            CopyError::Source { descriptor, .. }
            | CopyError::Destination { descriptor, .. }
            | CopyError::Incomplete { descriptor } => descriptor,
        }
    }

    /// The storage error behind the failure, if any.
    pub fn content_error(&self) -> Option<&ContentError> {
        match self {
            CopyError::Source { error, .. } | CopyError::Destination { error, .. } => Some(error),
            CopyError::Incomplete { .. } => None,
        }
    }

    pub fn is_source(&self) -> bool {
        matches!(self, CopyError::Source { .. })
    }

    pub fn is_destination(&self) -> bool {
        matches!(self, CopyError::Destination { .. })
    }
}

/// Copies the graph under `root` from `src` to `dst`: children before parents, skipping
/// whatever `dst` already has, each node once, at most `opts.concurrency` storage
/// operations at a time. `subject` links are not followed (see [`extended_copy`]).
pub async fn copy_graph(
    src: &dyn GraphTarget,
    dst: &dyn GraphTarget,
    root: &Descriptor,
    opts: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let copier = Copier::new(src, dst, opts);
    let outcome = copier.node(root.clone()).await;
    copier.finish(outcome, root)
}

/// [`copy_graph`] of `root`, then of every referrer of `root` that `src` knows
/// (`src.predecessors`), recursively: a signature on a referrer comes too. A referrer is
/// copied only after its subject; referrers already at the destination are skipped but
/// their own referrers are still looked for. One report covers the whole operation, and
/// nodes shared between the graphs (the empty config, say) are handled once.
pub async fn extended_copy(
    src: &dyn GraphTarget,
    dst: &dyn GraphTarget,
    root: &Descriptor,
    opts: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    let copier = Copier::new(src, dst, opts);
    let outcome = async {
        copier.node(root.clone()).await?;
        copier.referrers(root.clone()).await
    }
    .await;
    copier.finish(outcome, root)
}

/// Marks a failure whose cause was recorded in [`Copier::error`]. Only [`Copier::fail`]
/// makes one, so the cause is always there when a `Failed` reaches the top.
struct Failed;

type Outcome = Result<(), Failed>;

/// One node's copy, shared by everyone who reaches it; holds only whether it succeeded (the
/// cause of a failure is in [`Copier::error`]).
type NodeCell = Arc<OnceCell<Result<(), ()>>>;

/// The state of one copy operation, shared by all the tasks walking the graph.
struct Copier<'a> {
    src: &'a dyn GraphTarget,
    dst: &'a dyn GraphTarget,
    limit: Semaphore,
    progress: Option<ProgressFn>,
    /// digest → the node's one copy; later visitors wait on it instead of copying again.
    nodes: Mutex<HashMap<String, NodeCell>>,
    /// Referrers already expanded by [`extended_copy`].
    referrers_seen: Mutex<HashSet<String>>,
    report: Mutex<CopyReport>,
    /// The first failure. Later ones are usually consequences (waiters on a failed node)
    /// or noise from siblings being cancelled.
    error: Mutex<Option<CopyError>>,
}

/// Locks, ignoring poisoning: the guarded data are counters, maps and an error slot, each
/// updated in one step, so a panic elsewhere cannot leave them half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Copier<'a> {
    fn new(src: &'a dyn GraphTarget, dst: &'a dyn GraphTarget, opts: &CopyOptions) -> Self {
        Copier {
            src,
            dst,
            limit: Semaphore::new(opts.effective_concurrency()),
            progress: opts.progress.clone(),
            nodes: Mutex::default(),
            referrers_seen: Mutex::default(),
            report: Mutex::default(),
            error: Mutex::default(),
        }
    }

    fn finish(&self, outcome: Outcome, root: &Descriptor) -> Result<CopyReport, CopyError> {
        match outcome {
            Ok(()) => Ok(lock(&self.report).clone()),
            Err(Failed) => Err(lock(&self.error)
                .take()
                .unwrap_or_else(|| CopyError::Incomplete { descriptor: Box::new(root.clone()) })),
        }
    }

    fn fail(&self, e: CopyError) -> Failed {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
        Failed
    }

    fn source(&self, descriptor: &Descriptor, error: ContentError) -> Failed {
        self.fail(CopyError::Source { descriptor: Box::new(descriptor.clone()), error })
    }

    fn destination(&self, descriptor: &Descriptor, error: ContentError) -> Failed {
        self.fail(CopyError::Destination { descriptor: Box::new(descriptor.clone()), error })
    }

    fn emit(&self, event: impl FnOnce() -> Progress) {
        if let Some(p) = &self.progress {
            p(&event());
        }
    }

    async fn permit(&self) -> Option<SemaphorePermit<'_>> {
        // `acquire` fails only on a closed semaphore, and this one is never closed; if it
        // somehow were, running unbounded beats failing the copy.
        self.limit.acquire().await.ok()
    }

    /// Copies `desc` and its sub-graph once, however many parents reach it.
    fn node(&self, desc: Descriptor) -> BoxFuture<'_, Outcome> {
        async move {
            let cell = lock(&self.nodes).entry(desc.digest().to_string()).or_default().clone();
            // If the task running the copy is cancelled (a sibling failed and its parent
            // gave up), a waiter takes over; the cell holds only finished outcomes.
            let done = cell.get_or_init(|| async { self.visit(&desc).await.map_err(|Failed| ()) }).await;
            done.map_err(|()| Failed)
        }
        .boxed()
    }

    async fn visit(&self, desc: &Descriptor) -> Outcome {
        let permit = self.permit().await;
        match self.dst.exists(desc).await {
            Ok(true) => {
                drop(permit);
                let mut r = lock(&self.report);
                r.skipped += 1;
                r.bytes_skipped += desc.size();
                drop(r);
                self.emit(|| Progress::Skipped { descriptor: desc.clone() });
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => return Err(self.destination(desc, e)),
        }
        let is_manifest = media::is_manifest(desc.media_type().as_ref());
        let mut mounted = false;
        if is_manifest {
            drop(permit);
            self.copy_manifest(desc).await?;
        } else {
            // A registry that can mount the blob from another repository needs no bytes.
            mounted = self.dst.mount(desc).await.map_err(|e| self.destination(desc, e))?;
            if !mounted {
                // The permit stays held: the blob's transfer is the operation it bounds.
                self.transfer(desc, None).await?;
            }
            drop(permit);
        }
        let mut r = lock(&self.report);
        r.copied += 1;
        if mounted {
            r.blobs_mounted += 1;
            r.bytes_mounted += desc.size();
        } else {
            r.bytes_copied += desc.size();
        }
        if is_manifest {
            r.manifests_copied += 1;
        } else {
            r.blobs_copied += 1;
        }
        drop(r);
        self.emit(|| Progress::Copied { descriptor: desc.clone() });
        Ok(())
    }

    async fn copy_manifest(&self, desc: &Descriptor) -> Outcome {
        // Refuse before reading: fetch_all would otherwise buffer whatever size the
        // descriptor claims.
        if desc.size() > MAX_MANIFEST_SIZE {
            return Err(
                self.source(desc, ContentError::SizeExceedsLimit { size: desc.size(), limit: MAX_MANIFEST_SIZE })
            );
        }
        let bytes = {
            let _permit = self.permit().await;
            fetch_all(self.src, desc).await.map_err(|e| self.source(desc, e))?
        };
        let parsed = ParsedManifest::parse(&bytes, Some(desc.media_type().as_ref()))
            .map_err(|e| self.source(desc, ContentError::Manifest(e)))?;
        // Layers with `urls` are non-distributable: the stores do not require them and
        // sources usually do not have them, so they are left where they live.
        let children = parsed.children.iter().filter(|c| !c.external).map(|c| self.node(c.descriptor.clone()));
        try_join_all(children).await?;
        let _permit = self.permit().await;
        self.transfer(desc, Some(bytes)).await
    }

    /// Pushes one node to the destination: `bytes` when given (a manifest already read),
    /// otherwise a stream straight from the source.
    async fn transfer(&self, desc: &Descriptor, bytes: Option<Vec<u8>>) -> Outcome {
        let expected: Digest =
            desc.digest().to_string().parse().map_err(|e| self.source(desc, ContentError::Digest(e)))?;
        self.emit(|| Progress::Started { descriptor: desc.clone() });
        let inner: Reader = match bytes {
            Some(b) => Box::pin(io::Cursor::new(b)),
            None => self.src.fetch(desc).await.map_err(|e| self.source(desc, e))?,
        };
        let fault = Arc::new(Mutex::new(None));
        let reader = Tracked {
            inner,
            descriptor: desc.clone(),
            hasher: Some(expected.algorithm().hasher()),
            expected,
            done: 0,
            failed: false,
            progress: self.progress.clone(),
            fault: fault.clone(),
        };
        let pushed = self.dst.push(desc, Box::pin(reader)).await;
        // The reader's verdict comes first: when the source served bad bytes the push
        // fails too, but the destination is not the one at fault.
        if let Some(e) = lock(&fault).take() {
            return Err(self.source(desc, e));
        }
        pushed.map_err(|e| self.destination(desc, e))
    }

    /// Copies the referrers of `subject` found at the source, each after its subject
    /// (which the caller has copied), and theirs in turn.
    fn referrers(&self, subject: Descriptor) -> BoxFuture<'_, Outcome> {
        async move {
            let found = {
                let _permit = self.permit().await;
                self.src.predecessors(&subject).await.map_err(|e| self.source(&subject, e))?
            };
            let fresh: Vec<Descriptor> = {
                let mut seen = lock(&self.referrers_seen);
                found.into_iter().filter(|r| seen.insert(r.digest().to_string())).collect()
            };
            try_join_all(fresh.into_iter().map(|r| async move {
                self.node(r.clone()).await?;
                self.referrers(r).await
            }))
            .await?;
            Ok(())
        }
        .boxed()
    }
}

/// The reader a push consumes: reports progress, and checks the source's bytes against
/// the descriptor as they pass, recording the source's fault (in `fault`) and failing the
/// read so the destination commits nothing.
struct Tracked {
    inner: Reader,
    descriptor: Descriptor,
    expected: Digest,
    /// Taken at the end of the stream to finish the digest.
    hasher: Option<Hasher>,
    done: u64,
    failed: bool,
    progress: Option<ProgressFn>,
    fault: Arc<Mutex<Option<ContentError>>>,
}

impl Tracked {
    fn fault(&mut self, e: ContentError) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, format!("source content: {e}"));
        self.failed = true;
        *lock(&self.fault) = Some(e);
        err
    }

    fn end_of_stream(&mut self) -> io::Result<()> {
        // A reader may be polled again after its end; the check has been made then.
        let Some(hasher) = self.hasher.take() else { return Ok(()) };
        if self.done != self.descriptor.size() {
            return Err(self.fault(ContentError::SizeMismatch { expected: self.descriptor.size(), actual: self.done }));
        }
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(self.fault(ContentError::DigestMismatch { expected: self.expected.clone(), actual }));
        }
        Ok(())
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "source content failed verification")));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        if let Err(e) = ready!(this.inner.as_mut().poll_read(cx, buf)) {
            // A read error is the source's failure; the destination sees an error of the
            // same kind and gives up.
            let kind = e.kind();
            let message = e.to_string();
            this.failed = true;
            *lock(&this.fault) = Some(ContentError::Io { path: format!("source {}", this.expected), source: e });
            return Poll::Ready(Err(io::Error::new(kind, message)));
        }
        let new = &buf.filled()[before..];
        if new.is_empty() {
            return Poll::Ready(this.end_of_stream());
        }
        this.done += new.len() as u64;
        if this.done > this.descriptor.size() {
            let e = ContentError::SizeMismatch { expected: this.descriptor.size(), actual: this.done };
            return Poll::Ready(Err(this.fault(e)));
        }
        if let Some(h) = &mut this.hasher {
            h.update(new);
        }
        if let Some(p) = &this.progress {
            p(&Progress::Bytes { descriptor: this.descriptor.clone(), done: this.done, total: this.descriptor.size() });
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{
        Fetcher, FsStore, MemoryStore, PredecessorFinder, Pusher, ReadOnlyStorage, Result as CResult, TagResolver,
        descriptor_for,
    };
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

    fn reader(data: &[u8]) -> Reader {
        Box::pin(io::Cursor::new(data.to_vec()))
    }

    async fn put(t: &dyn GraphTarget, media_type: &str, data: &[u8]) -> Descriptor {
        let d = descriptor_for(media_type, data);
        t.push(&d, reader(data)).await.unwrap();
        d
    }

    async fn image(t: &dyn GraphTarget, config: &Descriptor, layers: &[&Descriptor]) -> Descriptor {
        let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": config, "layers": layers});
        put(t, media::OCI_MANIFEST, &serde_json::to_vec(&m).unwrap()).await
    }

    async fn referrer(
        t: &dyn GraphTarget,
        artifact_type: &str,
        subject: &Descriptor,
        payload: &[u8],
    ) -> Vec<Descriptor> {
        let empty = put(t, media::OCI_EMPTY, b"{}").await;
        let layer = put(t, "application/vnd.example.payload", payload).await;
        let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": artifact_type,
                       "config": empty, "layers": [layer], "subject": subject});
        let md = put(t, media::OCI_MANIFEST, &serde_json::to_vec(&m).unwrap()).await;
        vec![empty, layer, md]
    }

    /// An index over two images sharing a layer; two referrers of the index, and a
    /// signature on one of them.
    struct Graph {
        src: MemoryStore,
        index: Descriptor,
        image1: Descriptor,
        image2: Descriptor,
        config2: Descriptor,
        shared: Descriptor,
        layer1: Descriptor,
        layer2: Descriptor,
        /// The first referrer of the index (carrying the signature).
        sig: Descriptor,
        /// The signature on `sig`.
        sig_on_sig: Descriptor,
        /// Every node under `index`, and every node brought by the referrers (deduplicated).
        image_nodes: Vec<Descriptor>,
        referrer_nodes: Vec<Descriptor>,
    }

    async fn graph() -> Graph {
        let src = MemoryStore::new();
        let config1 = put(&src, CONFIG, br#"{"architecture":"amd64"}"#).await;
        let config2 = put(&src, CONFIG, br#"{"architecture":"arm64"}"#).await;
        // Large enough to pass through the stores' chunked writers in several pieces.
        let shared_bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let shared = put(&src, LAYER, &shared_bytes).await;
        let layer1 = put(&src, LAYER, b"amd64 layer").await;
        let layer2 = put(&src, LAYER, b"arm64 layer").await;
        let image1 = image(&src, &config1, &[&shared, &layer1]).await;
        let image2 = image(&src, &config2, &[&shared, &layer2]).await;
        let ix = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [image1, image2]});
        let index = put(&src, media::OCI_INDEX, &serde_json::to_vec(&ix).unwrap()).await;
        let sig_nodes = referrer(&src, "application/vnd.example.signature", &index, b"signature").await;
        let sbom_nodes = referrer(&src, "application/vnd.example.sbom", &index, b"sbom").await;
        let sig = sig_nodes[2].clone();
        let sos_nodes = referrer(&src, "application/vnd.example.signature", &sig, b"signature of a signature").await;
        let sig_on_sig = sos_nodes[2].clone();
        let image_nodes = vec![
            config1.clone(),
            config2.clone(),
            shared.clone(),
            layer1.clone(),
            layer2.clone(),
            image1.clone(),
            image2.clone(),
            index.clone(),
        ];
        let mut referrer_nodes: Vec<Descriptor> = Vec::new();
        for d in sig_nodes.into_iter().chain(sbom_nodes).chain(sos_nodes) {
            if !referrer_nodes.iter().any(|r| r.digest() == d.digest()) {
                referrer_nodes.push(d);
            }
        }
        Graph {
            src,
            index,
            image1,
            image2,
            config2,
            shared,
            layer1,
            layer2,
            sig,
            sig_on_sig,
            image_nodes,
            referrer_nodes,
        }
    }

    fn total(nodes: &[&Descriptor]) -> u64 {
        nodes.iter().map(|d| d.size()).sum()
    }

    async fn assert_arrived(src: &dyn GraphTarget, dst: &dyn GraphTarget, nodes: &[Descriptor]) {
        for d in nodes {
            let want = fetch_all(src, d).await.unwrap();
            let got = fetch_all(dst, d).await.unwrap_or_else(|e| panic!("{} at destination: {e}", d.digest()));
            assert_eq!(got, want, "{}", d.digest());
        }
    }

    async fn assert_absent(dst: &dyn GraphTarget, nodes: &[&Descriptor]) {
        for d in nodes {
            assert!(!dst.exists(d).await.unwrap(), "{} should not be at the destination", d.digest());
        }
    }

    /// No manifest at `dst` among `nodes` has a child missing there.
    async fn assert_closed(dst: &dyn GraphTarget, nodes: &[Descriptor]) {
        for d in nodes.iter().filter(|d| media::is_manifest(d.media_type().as_ref())) {
            if !dst.exists(d).await.unwrap() {
                continue;
            }
            let parsed = ParsedManifest::parse(&fetch_all(dst, d).await.unwrap(), None).unwrap();
            for c in &parsed.children {
                assert!(dst.exists(&c.descriptor).await.unwrap(), "{} is missing child {}", d.digest(), c.digest);
            }
        }
    }

    fn fs_repo() -> (tempfile::TempDir, crate::content::fs::FsRepository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = FsStore::open(dir.path()).unwrap().repository("a/b").unwrap();
        (dir, repo)
    }

    /// Wraps a target to watch and disturb it: records successful pushes in order, counts
    /// pushes in flight, serves corrupt bytes for one digest, refuses pushes of another.
    struct Probe<T> {
        inner: T,
        corrupt: Option<String>,
        refuse: Option<String>,
        delay: Option<Duration>,
        pushes: Mutex<Vec<String>>,
        active: AtomicUsize,
        peak: AtomicUsize,
    }

    impl<T> Probe<T> {
        fn new(inner: T) -> Self {
            Probe {
                inner,
                corrupt: None,
                refuse: None,
                delay: None,
                pushes: Mutex::default(),
                active: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }
        }

        fn pushes(&self) -> Vec<String> {
            self.pushes.lock().unwrap().clone()
        }
    }

    #[async_trait::async_trait]
    impl<T: GraphTarget> Fetcher for Probe<T> {
        async fn fetch(&self, target: &Descriptor) -> CResult<Reader> {
            let mut r = self.inner.fetch(target).await?;
            if self.corrupt.as_deref() == Some(target.digest().as_ref()) {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf).await.unwrap();
                buf[0] ^= 0xff;
                return Ok(reader(&buf));
            }
            Ok(r)
        }
    }

    #[async_trait::async_trait]
    impl<T: GraphTarget> Pusher for Probe<T> {
        async fn push(&self, expected: &Descriptor, content: Reader) -> CResult<()> {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            if let Some(d) = self.delay {
                tokio::time::sleep(d).await;
            }
            let result = if self.refuse.as_deref() == Some(expected.digest().as_ref()) {
                Err(ContentError::Unsupported("refused by the test".into()))
            } else {
                self.inner.push(expected, content).await
            };
            self.active.fetch_sub(1, Ordering::SeqCst);
            if result.is_ok() {
                self.pushes.lock().unwrap().push(expected.digest().to_string());
            }
            result
        }
    }

    #[async_trait::async_trait]
    impl<T: GraphTarget> ReadOnlyStorage for Probe<T> {
        async fn exists(&self, target: &Descriptor) -> CResult<bool> {
            self.inner.exists(target).await
        }
    }

    #[async_trait::async_trait]
    impl<T: GraphTarget> TagResolver for Probe<T> {
        async fn resolve(&self, reference: &str) -> CResult<Descriptor> {
            self.inner.resolve(reference).await
        }
        async fn tag(&self, target: &Descriptor, reference: &str) -> CResult<()> {
            self.inner.tag(target, reference).await
        }
    }

    #[async_trait::async_trait]
    impl<T: GraphTarget> PredecessorFinder for Probe<T> {
        async fn predecessors(&self, node: &Descriptor) -> CResult<Vec<Descriptor>> {
            self.inner.predecessors(node).await
        }
    }

    #[tokio::test]
    async fn copies_an_index_memory_to_memory() {
        let g = graph().await;
        let dst = MemoryStore::new();
        let report = copy_graph(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert_arrived(&g.src, &dst, &g.image_nodes).await;
        // the shared layer counts once
        assert_eq!(report.copied, 8);
        assert_eq!(report.blobs_copied, 5);
        assert_eq!(report.manifests_copied, 3);
        assert_eq!(report.bytes_copied, total(&g.image_nodes.iter().collect::<Vec<_>>()));
        assert_eq!((report.skipped, report.bytes_skipped), (0, 0));
        assert_eq!(dst.len(), 8);
    }

    #[tokio::test]
    async fn copies_an_index_memory_to_fs_then_skips_it_all() {
        let g = graph().await;
        let (_dir, dst) = fs_repo();
        let report = copy_graph(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert_eq!(report.copied, 8);
        assert_arrived(&g.src, &dst, &g.image_nodes).await;

        let again = copy_graph(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert_eq!(again.copied, 0);
        assert_eq!(again.bytes_copied, 0);
        // the root is there, so its sub-graph is not even visited
        assert_eq!(again.skipped, 1);
        assert_eq!(again.bytes_skipped, g.index.size());
    }

    #[tokio::test]
    async fn copies_only_what_the_destination_lacks() {
        let g = graph().await;
        let (_dir, dst) = fs_repo();
        // image1 whole (with the shared layer), and image2's own layer
        copy_graph(&g.src, &dst, &g.image1, &CopyOptions::default()).await.unwrap();
        copy_graph(&g.src, &dst, &g.layer2, &CopyOptions::default()).await.unwrap();

        let report = copy_graph(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        let missing = [&g.config2, &g.image2, &g.index];
        assert_eq!(report.copied, missing.len());
        assert_eq!(report.bytes_copied, total(&missing));
        assert_eq!((report.blobs_copied, report.manifests_copied), (1, 2));
        // image1 (not descended into), the shared layer (reached from image2), layer2
        assert_eq!(report.skipped, 3);
        assert_eq!(report.bytes_skipped, total(&[&g.image1, &g.shared, &g.layer2]));
        assert_arrived(&g.src, &dst, &g.image_nodes).await;
    }

    /// Every successful push of a manifest comes after the pushes of all its children.
    async fn assert_children_first(dst: &Probe<MemoryStore>) {
        let pushes = dst.pushes();
        for (i, digest) in pushes.iter().enumerate() {
            let d = dst.inner.resolve(digest).await;
            let d = d.unwrap();
            if !media::is_manifest(d.media_type().as_ref()) {
                continue;
            }
            let parsed = ParsedManifest::parse(&fetch_all(&dst.inner, &d).await.unwrap(), None).unwrap();
            for c in &parsed.children {
                let at = pushes.iter().position(|p| *p == c.digest.to_string()).unwrap();
                assert!(at < i, "{digest} pushed before its child {}", c.digest);
            }
        }
    }

    #[tokio::test]
    async fn pushes_children_before_parents_and_each_node_once() {
        for concurrency in [1, 2, 8] {
            let g = graph().await;
            let dst = Probe::new(MemoryStore::new());
            let opts = CopyOptions { concurrency, ..Default::default() };
            extended_copy(&g.src, &dst, &g.index, &opts).await.unwrap();
            let pushes = dst.pushes();
            assert_eq!(pushes.len(), g.image_nodes.len() + g.referrer_nodes.len(), "{pushes:?}");
            let unique: HashSet<_> = pushes.iter().collect();
            assert_eq!(unique.len(), pushes.len(), "a node was pushed twice: {pushes:?}");
            assert_children_first(&dst).await;
            // subjects before referrers
            let at = |d: &Descriptor| pushes.iter().position(|p| *p == d.digest().to_string()).unwrap();
            assert!(at(&g.index) < at(&g.sig));
            assert!(at(&g.sig) < at(&g.sig_on_sig));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_node_shared_by_many_parents_is_copied_once() {
        let src = MemoryStore::new();
        let shared = put(&src, LAYER, b"shared by everyone").await;
        let mut images = Vec::new();
        for i in 0..12 {
            let config = put(&src, CONFIG, format!("{{\"n\":{i}}}").as_bytes()).await;
            images.push(image(&src, &config, &[&shared]).await);
        }
        let ix = json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": images});
        let index = put(&src, media::OCI_INDEX, &serde_json::to_vec(&ix).unwrap()).await;
        let mut dst = Probe::new(MemoryStore::new());
        dst.delay = Some(Duration::from_millis(5));
        let report =
            copy_graph(&src, &dst, &index, &CopyOptions { concurrency: 8, ..Default::default() }).await.unwrap();
        let pushes = dst.pushes();
        assert_eq!(pushes.iter().filter(|p| **p == shared.digest().to_string()).count(), 1);
        assert_eq!(report.copied, 1 + 12 + 12 + 1);
        assert_eq!(report.skipped, 0);
    }

    #[tokio::test]
    async fn concurrency_is_bounded_and_defaults_to_three() {
        let src = MemoryStore::new();
        let config = put(&src, CONFIG, b"{}").await;
        let mut layers = Vec::new();
        for i in 0..10 {
            layers.push(put(&src, LAYER, format!("layer {i}").as_bytes()).await);
        }
        let root = image(&src, &config, &layers.iter().collect::<Vec<_>>()).await;
        for (asked, expected) in [(0, DEFAULT_CONCURRENCY), (2, 2), (1, 1)] {
            let mut dst = Probe::new(MemoryStore::new());
            dst.delay = Some(Duration::from_millis(10));
            copy_graph(&src, &dst, &root, &CopyOptions { concurrency: asked, ..Default::default() }).await.unwrap();
            assert_eq!(dst.peak.load(Ordering::SeqCst), expected, "concurrency {asked}");
        }
    }

    #[tokio::test]
    async fn a_corrupt_source_blob_is_the_sources_fault_and_leaves_no_broken_manifest() {
        let g = graph().await;
        let mut src = Probe::new(g.src);
        src.corrupt = Some(g.layer1.digest().to_string());
        let (_dir, dst) = fs_repo();
        let e = copy_graph(&src, &dst, &g.index, &CopyOptions::default()).await.unwrap_err();
        assert!(e.is_source(), "{e}");
        assert_eq!(e.descriptor().digest(), g.layer1.digest());
        assert!(e.to_string().contains(&g.layer1.digest().to_string()), "{e}");
        assert!(matches!(e.content_error(), Some(ContentError::DigestMismatch { .. })), "{e}");
        assert_absent(&dst, &[&g.layer1, &g.image1, &g.index]).await;
        assert_closed(&dst, &g.image_nodes).await;

        // once the source is healthy, the copy completes with only what is missing
        src.corrupt = None;
        let report = copy_graph(&src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert!(report.copied >= 3, "{report:?}");
        assert_arrived(&src, &dst, &g.image_nodes).await;
    }

    #[tokio::test]
    async fn a_corrupt_source_manifest_is_the_sources_fault() {
        let g = graph().await;
        let mut src = Probe::new(g.src);
        src.corrupt = Some(g.image2.digest().to_string());
        let dst = MemoryStore::new();
        let e = copy_graph(&src, &dst, &g.index, &CopyOptions::default()).await.unwrap_err();
        assert!(e.is_source(), "{e}");
        assert_eq!(e.descriptor().digest(), g.image2.digest());
        assert_absent(&dst, &[&g.image2, &g.index]).await;
        assert_closed(&dst, &g.image_nodes).await;
    }

    #[tokio::test]
    async fn a_missing_source_blob_is_the_sources_fault() {
        let g = graph().await;
        let src = Probe::new(g.src);
        crate::content::Deleter::delete(&src.inner, &g.config2).await.unwrap();
        let (_dir, dst) = fs_repo();
        let e = copy_graph(&src, &dst, &g.index, &CopyOptions::default()).await.unwrap_err();
        assert!(e.is_source(), "{e}");
        assert!(matches!(e.content_error(), Some(ContentError::NotFound(_))), "{e}");
        assert_eq!(e.descriptor().digest(), g.config2.digest());
        assert_closed(&dst, &g.image_nodes).await;
    }

    #[tokio::test]
    async fn a_refusing_destination_is_the_destinations_fault() {
        let g = graph().await;
        let mut dst = Probe::new(MemoryStore::new());
        dst.refuse = Some(g.shared.digest().to_string());
        let e = copy_graph(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap_err();
        assert!(e.is_destination(), "{e}");
        assert_eq!(e.descriptor().digest(), g.shared.digest());
        assert!(e.to_string().contains("destination"), "{e}");
        assert_absent(&dst, &[&g.shared, &g.image1, &g.image2, &g.index]).await;
        assert_closed(&dst.inner, &g.image_nodes).await;
    }

    #[tokio::test]
    async fn progress_events_match_the_report() {
        #[derive(Default)]
        struct Seen {
            started: usize,
            copied: usize,
            skipped: usize,
            last_bytes: HashMap<String, (u64, u64)>,
        }
        let g = graph().await;
        let (_dir, dst) = fs_repo();
        copy_graph(&g.src, &dst, &g.image1, &CopyOptions::default()).await.unwrap();

        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        let opts = CopyOptions {
            concurrency: 0,
            progress: Some(Arc::new(move |p: &Progress| {
                let mut s = sink.lock().unwrap();
                match p {
                    Progress::Started { .. } => s.started += 1,
                    Progress::Copied { .. } => s.copied += 1,
                    Progress::Skipped { .. } => s.skipped += 1,
                    Progress::Bytes { descriptor, done, total } => {
                        let prev = s.last_bytes.insert(descriptor.digest().to_string(), (*done, *total));
                        assert!(prev.is_none_or(|(d, _)| d < *done), "bytes go forward");
                    }
                }
            })),
        };
        let report = extended_copy(&g.src, &dst, &g.index, &opts).await.unwrap();
        let s = seen.lock().unwrap();
        assert!(report.copied > 0 && report.skipped > 0, "{report:?}");
        assert_eq!(s.copied, report.copied);
        assert_eq!(s.started, report.copied);
        assert_eq!(s.skipped, report.skipped);
        assert_eq!(s.last_bytes.len(), report.copied);
        assert!(s.last_bytes.values().all(|(done, total)| done == total));
        assert_eq!(s.last_bytes.values().map(|(done, _)| done).sum::<u64>(), report.bytes_copied);
    }

    #[tokio::test]
    async fn extended_copy_brings_the_referrer_chain_and_copy_graph_does_not() {
        let g = graph().await;
        let (_dir, dst) = fs_repo();
        copy_graph(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert!(dst.predecessors(&g.index).await.unwrap().is_empty());
        assert_absent(&dst, &[&g.sig, &g.sig_on_sig]).await;

        let report = extended_copy(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert_eq!(report.copied, g.referrer_nodes.len());
        assert_eq!(report.bytes_copied, total(&g.referrer_nodes.iter().collect::<Vec<_>>()));
        assert_arrived(&g.src, &dst, &g.referrer_nodes).await;
        assert_eq!(dst.predecessors(&g.index).await.unwrap().len(), 2);
        let on_sig = dst.predecessors(&g.sig).await.unwrap();
        assert_eq!(on_sig.len(), 1);
        assert_eq!(on_sig[0].digest(), g.sig_on_sig.digest());

        let again = extended_copy(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert_eq!((again.copied, again.bytes_copied), (0, 0));
        // the index and the three referrers, each skipped whole
        assert_eq!(again.skipped, 4);
    }

    #[tokio::test]
    async fn extended_copy_from_scratch_into_memory() {
        let g = graph().await;
        let dst = MemoryStore::new();
        let report = extended_copy(&g.src, &dst, &g.index, &CopyOptions::default()).await.unwrap();
        assert_eq!(report.copied, g.image_nodes.len() + g.referrer_nodes.len());
        assert_eq!(dst.len(), g.src.len());
        assert_arrived(&g.src, &dst, &g.image_nodes).await;
        assert_arrived(&g.src, &dst, &g.referrer_nodes).await;
    }

    #[test]
    fn copies_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (src, dst) = (MemoryStore::new(), MemoryStore::new());
        let root = descriptor_for(LAYER, b"x");
        let opts = CopyOptions::default();
        assert_send(&copy_graph(&src, &dst, &root, &opts));
        assert_send(&extended_copy(&src, &dst, &root, &opts));
    }

    #[test]
    fn reports_merge() {
        let mut a = CopyReport {
            copied: 1,
            skipped: 2,
            bytes_copied: 3,
            bytes_skipped: 4,
            blobs_copied: 1,
            manifests_copied: 0,
            blobs_mounted: 1,
            bytes_mounted: 7,
        };
        let b = CopyReport {
            copied: 10,
            skipped: 20,
            bytes_copied: 30,
            bytes_skipped: 40,
            blobs_copied: 4,
            manifests_copied: 6,
            blobs_mounted: 2,
            bytes_mounted: 70,
        };
        a.merge(&b);
        assert_eq!(
            a,
            CopyReport {
                copied: 11,
                skipped: 22,
                bytes_copied: 33,
                bytes_skipped: 44,
                blobs_copied: 5,
                manifests_copied: 6,
                blobs_mounted: 3,
                bytes_mounted: 77,
            }
        );
        assert_eq!(serde_json::to_value(&a).unwrap()["bytes_copied"], 33);
    }
}
