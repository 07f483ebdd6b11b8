//! The filesystem store: many repositories over one content-addressed blob pool.
//!
//! ```text
//! <root>/blobs/<alg>/<xx>/<hex>                         content, written once, never changed
//! <root>/repositories/<name>/_layers/<alg>/<hex>         blob belongs to the repository
//! <root>/repositories/<name>/_manifests/<alg>/<hex>      manifest belongs to it (holds its media type)
//! <root>/repositories/<name>/_tags/<tag>                 tag → digest
//! <root>/repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>
//!                                                        predecessor index: descriptor JSON of a
//!                                                        manifest whose subject is <alg>:<hex>
//! <root>/uploads/<id>/{data,repo}                        upload sessions, invisible to readers
//! <root>/tmp/                                            staging for atomic writes
//! ```
//!
//! Repository components match `[a-z0-9]…`, so the `_`-prefixed directories never collide
//! with a nested repository. Every visible file appears by `rename` of a complete, fsynced
//! file (containerd's rule: an upload is invisible until committed), so a crash leaves at
//! most a stale upload or staging file behind, never a partial blob. Two uploads of the
//! same blob both succeed: the second rename replaces identical bytes.
//!
//! Blob bytes are hashed (SHA-256) as they arrive, on a worker thread that also writes
//! them, so a commit needs no second read. A sha512 commit re-reads the file once.

use super::{ContentError, MAX_MANIFEST_SIZE, Reference, Result};
use crate::oci::{Algorithm, Digest, Hasher, ParsedManifest, validate_repository};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_spec::image::Descriptor;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// While a blob is received, ask the kernel to start writing back every this many bytes,
/// so the fsync at commit finds little left to do and the disk works alongside the network.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

/// Starts (does not wait for) writeback of a range of `f`; only a hint, so errors are
/// ignored: the fsync at commit is what guarantees durability.
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the
    // duration of the call.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// How many manifests the read cache keeps before it starts over.
const MANIFEST_CACHE_ENTRIES: usize = 16_384;

/// A manifest as stored: its bytes and the media type it was pushed with.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

/// What a successful manifest push did.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    pub size: u64,
    pub parsed: ParsedManifest,
}

struct UploadState {
    repo: String,
    offset: u64,
    hasher: Hasher,
    busy: bool,
}

pub struct FsStore {
    root: PathBuf,
    uploads: Mutex<HashMap<String, UploadState>>,
    manifests: RwLock<HashMap<Digest, Arc<StoredManifest>>>,
}

impl std::fmt::Debug for FsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsStore").field("root", &self.root).finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |e| ContentError::io(path, e)
}

/// Upload ids are uuids we minted; anything else never reaches the filesystem.
fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Arc<FsStore>> {
        let root = root.into();
        for d in ["blobs", "repositories", "uploads", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Arc::new(FsStore { root, uploads: Mutex::new(HashMap::new()), manifests: RwLock::new(HashMap::new()) }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("blobs").join(d.algorithm().as_str()).join(&hex[..2]).join(hex)
    }

    pub(crate) fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    fn layer_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_layers").join(d.algorithm().as_str()).join(d.hex())
    }

    fn manifest_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_manifests").join(d.algorithm().as_str()).join(d.hex())
    }

    pub(crate) fn manifest_link_path(&self, repo: &str, d: &Digest) -> PathBuf {
        self.manifest_link(repo, d)
    }

    fn tag_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_tags").join(tag)
    }

    fn referrers_dir(&self, repo: &str, subject: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_referrers").join(subject.algorithm().as_str()).join(subject.hex())
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Writes `data` to `path` atomically: staging file, fsync, rename, fsync of the directory.
    pub(crate) fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        let res = (|| {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(data).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            drop(f);
            self.rename_into(&tmp, path)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Renames `from` to `to`, creating `to`'s directory, and makes the rename durable.
    fn rename_into(&self, from: &Path, to: &Path) -> Result<()> {
        let dir = to.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(from, to).map_err(io_err(to))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
    }

    fn touch(path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
        Ok(())
    }

    // ---- blobs -------------------------------------------------------------------------

    /// Size of blob `d` if repository `repo` has it.
    pub fn blob_size(&self, repo: &str, d: &Digest) -> Result<Option<u64>> {
        if !self.layer_link(repo, d).exists() && !self.manifest_link(repo, d).exists() {
            return Ok(None);
        }
        self.content_size(d)
    }

    /// Size of the content `d` in the pool, whoever links it.
    pub fn content_size(&self, d: &Digest) -> Result<Option<u64>> {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ContentError::io(&p, e)),
        }
    }

    /// Opens blob `d` of `repo` for reading; returns the file and its size.
    pub async fn open_blob(&self, repo: &str, d: &Digest) -> Result<(tokio::fs::File, u64)> {
        let size = self.blob_size(repo, d)?.ok_or_else(|| ContentError::NotFound(format!("blob {d} in {repo}")))?;
        let p = self.blob_path(d);
        let f = tokio::fs::File::open(&p).await.map_err(io_err(&p))?;
        Ok((f, size))
    }

    /// Removes blob `d` from `repo` (the bytes stay until `gc`). Returns whether it was there.
    pub fn unlink_blob(&self, repo: &str, d: &Digest) -> Result<bool> {
        let p = self.layer_link(repo, d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ContentError::io(&p, e)),
        }
    }

    /// Makes blob `d`, which `from` has, part of `to` without moving bytes.
    pub fn mount_blob(&self, from: &str, to: &str, d: &Digest) -> Result<Option<u64>> {
        validate_repository(from)?;
        match self.blob_size(from, d)? {
            Some(size) => {
                Self::touch(&self.layer_link(to, d))?;
                Ok(Some(size))
            }
            None => Ok(None),
        }
    }

    // ---- uploads -----------------------------------------------------------------------

    /// Starts an upload session for `repo` and returns its id.
    pub fn start_upload(&self, repo: &str) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.upload_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let data = dir.join("data");
        File::create(&data).map_err(io_err(&data))?;
        let rp = dir.join("repo");
        fs::write(&rp, repo).map_err(io_err(&rp))?;
        let state = UploadState { repo: repo.to_string(), offset: 0, hasher: Algorithm::Sha256.hasher(), busy: false };
        self.lock_uploads().insert(id.clone(), state);
        Ok(id)
    }

    fn lock_uploads(&self) -> std::sync::MutexGuard<'_, HashMap<String, UploadState>> {
        // A poisoned lock only means another request panicked; the map itself is consistent.
        self.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes exclusive hold of an upload, reloading it from disk after a restart.
    fn take_upload(&self, repo: &str, id: &str) -> Result<(u64, Hasher)> {
        if !valid_upload_id(id) {
            return Err(ContentError::UploadUnknown(id.to_string()));
        }
        {
            let mut map = self.lock_uploads();
            if let Some(st) = map.get_mut(id) {
                if st.repo != repo {
                    return Err(ContentError::UploadUnknown(id.to_string()));
                }
                if st.busy {
                    return Err(ContentError::UploadBusy { id: id.to_string() });
                }
                st.busy = true;
                return Ok((st.offset, st.hasher.clone()));
            }
        }
        // Not in memory: an upload started before a restart. Rebuild its state from disk.
        let dir = self.upload_dir(id);
        let owner = fs::read_to_string(dir.join("repo")).map_err(|_| ContentError::UploadUnknown(id.to_string()))?;
        if owner != repo {
            return Err(ContentError::UploadUnknown(id.to_string()));
        }
        let data = dir.join("data");
        if !data.exists() {
            // Killed inside a commit, after the data became a blob: the session is over.
            let _ = fs::remove_dir_all(&dir);
            return Err(ContentError::UploadUnknown(id.to_string()));
        }
        let (offset, hasher) = hash_file(&data, Algorithm::Sha256)?;
        let mut map = self.lock_uploads();
        if map.contains_key(id) {
            return Err(ContentError::UploadBusy { id: id.to_string() });
        }
        map.insert(id.to_string(), UploadState { repo: repo.to_string(), offset, hasher: hasher.clone(), busy: true });
        Ok((offset, hasher))
    }

    fn release_upload(&self, id: &str, offset: u64, hasher: Hasher) {
        if let Some(st) = self.lock_uploads().get_mut(id) {
            st.offset = offset;
            st.hasher = hasher;
            st.busy = false;
        }
    }

    /// Bytes received so far by upload `id`.
    pub fn upload_status(&self, repo: &str, id: &str) -> Result<u64> {
        let (offset, hasher) = self.take_upload(repo, id)?;
        self.release_upload(id, offset, hasher);
        Ok(offset)
    }

    /// Appends a chunk to upload `id`. `start`, when given (from `Content-Range`), must equal
    /// the bytes received so far. Returns the new size.
    pub async fn append_upload<S, E>(&self, repo: &str, id: &str, start: Option<u64>, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let (offset, hasher) = self.take_upload(repo, id)?;
        if let Some(start) = start.filter(|s| *s != offset) {
            self.release_upload(id, offset, hasher);
            return Err(ContentError::RangeInvalid { start, offset });
        }
        match self.write_chunk(id, offset, hasher.clone(), body, false).await {
            Ok((n, h)) => {
                self.release_upload(id, offset + n, h);
                Ok(offset + n)
            }
            Err(e) => {
                self.truncate_upload(id, offset);
                self.release_upload(id, offset, hasher);
                Err(e)
            }
        }
    }

    fn truncate_upload(&self, id: &str, len: u64) {
        let data = self.upload_dir(id).join("data");
        if let Ok(f) = OpenOptions::new().write(true).open(&data) {
            let _ = f.set_len(len);
        }
    }

    /// Streams `body` onto the end of the upload's data file on a worker thread that hashes
    /// as it writes. Returns the bytes written and the updated hasher.
    async fn write_chunk<S, E>(
        &self,
        id: &str,
        offset: u64,
        hasher: Hasher,
        mut body: S,
        sync: bool,
    ) -> Result<(u64, Hasher)>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let data = self.upload_dir(id).join("data");
        // Two workers, so hashing and writing use both cores: chunks are `Bytes`, and
        // handing one to both costs a reference count, not a copy.
        let (htx, mut hrx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let (wtx, mut wrx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let hash_worker = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(chunk) = hrx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        let write_worker = tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut f = OpenOptions::new().write(true).open(&data).map_err(io_err(&data))?;
            f.set_len(offset).map_err(io_err(&data))?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).map_err(io_err(&data))?;
            let mut n = 0u64;
            let mut flushed = 0u64;
            while let Some(chunk) = wrx.blocking_recv() {
                f.write_all(&chunk).map_err(io_err(&data))?;
                n += chunk.len() as u64;
                if sync && n - flushed >= WRITEBACK_STEP {
                    start_writeback(&f, offset + flushed, n - flushed);
                    flushed = n;
                }
            }
            if sync {
                f.sync_all().map_err(io_err(&data))?;
            }
            Ok(n)
        });
        let mut body_err = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if htx.send(chunk.clone()).await.is_err() || wtx.send(chunk).await.is_err() {
                        break; // a worker failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_err = Some(ContentError::Body(e.to_string()));
                    break;
                }
            }
        }
        drop((htx, wtx));
        let joined = |e: tokio::task::JoinError| ContentError::Body(format!("upload worker: {e}"));
        let written = write_worker.await.map_err(joined)?;
        let hasher = hash_worker.await.map_err(joined)?;
        match body_err {
            Some(e) => Err(e),
            None => Ok((written?, hasher)),
        }
    }

    /// Completes upload `id` with a last chunk (possibly empty), checks the content against
    /// `digest` and, when it matches, makes the blob visible in `repo`. The upload is gone
    /// afterwards whatever the outcome, except when the last chunk could not be read.
    pub async fn commit_upload<S, E>(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        expected_size: Option<u64>,
        body: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let (offset, hasher) = self.take_upload(repo, id)?;
        let (n, hasher) = match self.write_chunk(id, offset, hasher.clone(), body, true).await {
            Ok(r) => r,
            Err(e) => {
                self.truncate_upload(id, offset);
                self.release_upload(id, offset, hasher);
                return Err(e);
            }
        };
        let size = offset + n;
        let data = self.upload_dir(id).join("data");
        let actual = match digest.algorithm() {
            Algorithm::Sha256 => hasher.finish(),
            alg => {
                let p = data.clone();
                tokio::task::spawn_blocking(move || hash_file(&p, alg))
                    .await
                    .map_err(|e| ContentError::Body(e.to_string()))??
                    .1
                    .finish()
            }
        };
        let result = if &actual != digest {
            Err(ContentError::DigestMismatch { expected: digest.clone(), actual })
        } else if let Some(expected) = expected_size.filter(|e| *e != size) {
            Err(ContentError::SizeMismatch { expected, actual: size })
        } else {
            let target = self.blob_path(digest);
            self.rename_into(&data, &target).and_then(|()| Self::touch(&self.layer_link(repo, digest))).map(|()| size)
        };
        self.forget_upload(id);
        result
    }

    fn forget_upload(&self, id: &str) {
        self.lock_uploads().remove(id);
        let _ = fs::remove_dir_all(self.upload_dir(id));
    }

    /// Cancels upload `id`.
    pub fn cancel_upload(&self, repo: &str, id: &str) -> Result<()> {
        let (_, _) = self.take_upload(repo, id)?;
        self.forget_upload(id);
        Ok(())
    }

    /// Pushes a whole blob in one go (monolithic upload).
    pub async fn put_blob<S, E>(&self, repo: &str, digest: &Digest, expected_size: Option<u64>, body: S) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let id = self.start_upload(repo)?;
        self.commit_upload(repo, &id, digest, expected_size, body).await
    }

    // ---- manifests ---------------------------------------------------------------------

    /// Validates and stores a manifest under `reference` in `repo`: well-formed, within the
    /// size limit, its digest matching a digest reference, and every blob and manifest it
    /// references present in `repo` (its `subject` may be missing). Records it as a referrer
    /// of its subject.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<PutManifest> {
        validate_repository(repo)?;
        let size = bytes.len() as u64;
        if size > MAX_MANIFEST_SIZE {
            return Err(ContentError::SizeExceedsLimit { size, limit: MAX_MANIFEST_SIZE });
        }
        let parsed = ParsedManifest::parse(bytes, content_type)?;
        let digest = match reference {
            Reference::Digest(d) => {
                let actual = Digest::of(d.algorithm(), bytes);
                if &actual != d {
                    return Err(ContentError::DigestMismatch { expected: d.clone(), actual });
                }
                actual
            }
            Reference::Tag(_) => Digest::sha256(bytes),
        };
        for c in parsed.children.iter().filter(|c| !c.external) {
            let present = if c.is_manifest {
                self.manifest_link(repo, &c.digest).exists()
            } else {
                self.blob_size(repo, &c.digest)?.is_some()
            };
            // Refresh the blob's modification time so a concurrent `gc` keeps it.
            let present = present && (c.is_manifest || self.freshen(&c.digest));
            if !present {
                return Err(ContentError::MissingReference {
                    repository: repo.to_string(),
                    digest: c.digest.clone(),
                    kind: if c.is_manifest { "manifest" } else { "blob" },
                });
            }
        }
        let blob = self.blob_path(&digest);
        if !blob.exists() {
            self.write_atomic(&blob, bytes)?;
        }
        if let Some((subject, _)) = &parsed.subject {
            let entry = parsed.referrer_descriptor(&digest, size);
            let json = serde_json::to_vec(&entry).map_err(|e| ContentError::Body(e.to_string()))?;
            self.write_atomic(&self.referrers_dir(repo, subject).join(digest.tag_form()), &json)?;
        }
        self.write_atomic(&self.manifest_link(repo, &digest), parsed.media_type.as_bytes())?;
        if let Reference::Tag(t) = reference {
            self.write_atomic(&self.tag_path(repo, t), digest.to_string().as_bytes())?;
        }
        self.cache_manifest(StoredManifest {
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            bytes: Bytes::copy_from_slice(bytes),
        });
        Ok(PutManifest { digest, size, parsed })
    }

    /// Sets a blob's modification time to now; false if the blob is gone.
    fn freshen(&self, d: &Digest) -> bool {
        File::options()
            .append(true)
            .open(self.blob_path(d))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .is_ok()
    }

    fn cache_manifest(&self, m: StoredManifest) -> Arc<StoredManifest> {
        let m = Arc::new(m);
        let mut cache = self.manifests.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MANIFEST_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(m.digest.clone(), m.clone());
        m
    }

    /// The digest `reference` names in `repo`, if the repository has that manifest.
    pub fn resolve(&self, repo: &str, reference: &Reference) -> Result<Digest> {
        let not_found = || ContentError::NotFound(format!("manifest {reference} in {repo}"));
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                let s = match fs::read_to_string(self.tag_path(repo, t)) {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(not_found()),
                    Err(e) => return Err(ContentError::io(&self.tag_path(repo, t), e)),
                };
                s.trim().parse()?
            }
        };
        if self.manifest_link(repo, &digest).exists() { Ok(digest) } else { Err(not_found()) }
    }

    /// Reads the manifest `reference` names in `repo`.
    pub fn get_manifest(&self, repo: &str, reference: &Reference) -> Result<Arc<StoredManifest>> {
        let digest = self.resolve(repo, reference)?;
        if let Some(m) = self.manifests.read().unwrap_or_else(|p| p.into_inner()).get(&digest) {
            return Ok(m.clone());
        }
        let link = self.manifest_link(repo, &digest);
        let media_type = fs::read_to_string(&link).map_err(io_err(&link))?;
        let p = self.blob_path(&digest);
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        Ok(self.cache_manifest(StoredManifest { digest, media_type, bytes: Bytes::from(bytes) }))
    }

    /// Removes manifest `d` from `repo`, with every tag that points at it and its entry in
    /// its subject's referrers. The bytes stay until `gc`.
    pub fn delete_manifest(&self, repo: &str, d: &Digest) -> Result<()> {
        let m = self.get_manifest(repo, &Reference::Digest(d.clone()))?;
        if let Ok(parsed) = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
            && let Some((subject, _)) = parsed.subject
        {
            let entry = self.referrers_dir(repo, &subject).join(d.tag_form());
            let _ = fs::remove_file(entry);
        }
        for tag in self.tags(repo)? {
            if self.resolve(repo, &Reference::Tag(tag.clone())).ok().as_ref() == Some(d) {
                let _ = fs::remove_file(self.tag_path(repo, &tag));
            }
        }
        let link = self.manifest_link(repo, d);
        fs::remove_file(&link).map_err(io_err(&link))
    }

    /// Points `tag` in `repo` at manifest `d`, which the repository must have.
    pub fn tag(&self, repo: &str, d: &Digest, tag: &str) -> Result<()> {
        crate::oci::validate_tag(tag)?;
        self.resolve(repo, &Reference::Digest(d.clone()))?;
        self.write_atomic(&self.tag_path(repo, tag), d.to_string().as_bytes())
    }

    /// Removes tag `tag` from `repo`, leaving the manifest.
    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<()> {
        let p = self.tag_path(repo, tag);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ContentError::NotFound(format!("tag {tag} in {repo}"))),
            Err(e) => Err(ContentError::io(&p, e)),
        }
    }

    pub fn repository_exists(&self, repo: &str) -> bool {
        let dir = self.repo_dir(repo);
        dir.join("_manifests").is_dir() || dir.join("_layers").is_dir()
    }

    /// Tags of `repo`, sorted.
    pub fn tags(&self, repo: &str) -> Result<Vec<String>> {
        if !self.repository_exists(repo) {
            return Err(ContentError::NotFound(format!("repository {repo}")));
        }
        let mut tags = list_dir(&self.repo_dir(repo).join("_tags"))?;
        tags.sort();
        Ok(tags)
    }

    /// Every repository in the store, sorted.
    pub fn repositories(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let base = self.root.join("repositories");
        let mut stack = vec![String::new()];
        while let Some(prefix) = stack.pop() {
            for name in list_dir(&base.join(&prefix))? {
                if name.starts_with('_') {
                    continue;
                }
                let full = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                if self.repository_exists(&full) {
                    out.push(full.clone());
                }
                stack.push(full);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Digests of every manifest `repo` holds.
    pub fn manifest_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let dir = self.repo_dir(repo).join("_manifests");
        for alg in list_dir(&dir)? {
            for hex in list_dir(&dir.join(&alg))? {
                if let Ok(d) = format!("{alg}:{hex}").parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Digests of every blob linked into `repo` (not counting manifests).
    pub fn blob_digests(&self, repo: &str) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let dir = self.repo_dir(repo).join("_layers");
        for alg in list_dir(&dir)? {
            for hex in list_dir(&dir.join(&alg))? {
                if let Ok(d) = format!("{alg}:{hex}").parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Referrers of `subject` in `repo`: descriptors of manifests whose `subject` it is.
    pub fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<Descriptor>> {
        let dir = self.referrers_dir(repo, subject);
        let mut names = list_dir(&dir)?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let p = dir.join(&n);
            let Ok(data) = fs::read(&p) else { continue }; // deleted while listing
            let d: Descriptor = serde_json::from_slice(&data)
                .map_err(|e| ContentError::io(&p, std::io::Error::new(ErrorKind::InvalidData, e)))?;
            out.push(d);
        }
        Ok(out)
    }

    /// Rebuilds every repository's referrers index from the manifests themselves.
    /// Returns how many referrer entries were written.
    pub fn rebuild_referrers(&self) -> Result<usize> {
        let mut count = 0;
        for repo in self.repositories()? {
            let dir = self.repo_dir(&repo).join("_referrers");
            let old = self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
            if dir.exists() {
                fs::rename(&dir, &old).map_err(io_err(&dir))?;
            }
            for d in self.manifest_digests(&repo)? {
                let m = self.get_manifest(&repo, &Reference::Digest(d.clone()))?;
                let Ok(parsed) = ParsedManifest::parse(&m.bytes, Some(&m.media_type)) else { continue };
                if let Some((subject, _)) = &parsed.subject {
                    let entry = parsed.referrer_descriptor(&d, m.bytes.len() as u64);
                    let json = serde_json::to_vec(&entry).map_err(|e| ContentError::Body(e.to_string()))?;
                    self.write_atomic(&self.referrers_dir(&repo, subject).join(d.tag_form()), &json)?;
                    count += 1;
                }
            }
            let _ = fs::remove_dir_all(&old);
        }
        Ok(count)
    }

    /// Drops cached manifests (after another process, such as `gc`, changed the store).
    pub fn clear_cache(&self) {
        self.manifests.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Names in `dir`, or nothing when it does not exist.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ContentError::io(dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        if let Ok(name) = e.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Hashes a whole file; returns its length and the hasher.
pub(crate) fn hash_file(path: &Path, alg: Algorithm) -> Result<(u64, Hasher)> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = alg.hasher();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io_err(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h))
}

/// One repository of an [`FsStore`], seen through the content traits.
#[derive(Debug, Clone)]
pub struct FsRepository {
    store: Arc<FsStore>,
    name: String,
}

impl FsStore {
    /// The repository `name` as a content target.
    pub fn repository(self: &Arc<Self>, name: &str) -> Result<FsRepository> {
        validate_repository(name)?;
        Ok(FsRepository { store: self.clone(), name: name.to_string() })
    }
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest> {
    Ok(d.digest().to_string().parse()?)
}

#[async_trait::async_trait]
impl super::Fetcher for FsRepository {
    async fn fetch(&self, target: &Descriptor) -> Result<super::Reader> {
        let d = descriptor_digest(target)?;
        if crate::oci::media::is_manifest(target.media_type().as_ref()) {
            let m = self.store.get_manifest(&self.name, &Reference::Digest(d))?;
            return Ok(Box::pin(std::io::Cursor::new(m.bytes.clone())));
        }
        let (f, _) = self.store.open_blob(&self.name, &d).await?;
        Ok(Box::pin(f))
    }
}

#[async_trait::async_trait]
impl super::Pusher for FsRepository {
    async fn push(&self, expected: &Descriptor, content: super::Reader) -> Result<()> {
        let d = descriptor_digest(expected)?;
        let media_type = expected.media_type().to_string();
        if crate::oci::media::is_manifest(&media_type) {
            if expected.size() > MAX_MANIFEST_SIZE {
                return Err(ContentError::SizeExceedsLimit { size: expected.size(), limit: MAX_MANIFEST_SIZE });
            }
            let mut buf = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(
                &mut tokio::io::AsyncReadExt::take(content, expected.size() + 1),
                &mut buf,
            )
            .await
            .map_err(|e| ContentError::Body(e.to_string()))?;
            super::verify(expected, &buf)?;
            let store = self.store.clone();
            let name = self.name.clone();
            tokio::task::spawn_blocking(move || {
                store.put_manifest(&name, &Reference::Digest(d), Some(&media_type), &buf)
            })
            .await
            .map_err(|e| ContentError::Body(e.to_string()))??;
            return Ok(());
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(content, 1 << 20);
        self.store.put_blob(&self.name, &d, Some(expected.size()), stream).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::ReadOnlyStorage for FsRepository {
    async fn exists(&self, target: &Descriptor) -> Result<bool> {
        let d = descriptor_digest(target)?;
        if crate::oci::media::is_manifest(target.media_type().as_ref()) {
            Ok(self.store.manifest_link(&self.name, &d).exists())
        } else {
            Ok(self.store.blob_size(&self.name, &d)?.is_some())
        }
    }
}

#[async_trait::async_trait]
impl super::TagResolver for FsRepository {
    async fn resolve(&self, reference: &str) -> Result<Descriptor> {
        let m = self.store.get_manifest(&self.name, &Reference::parse(reference)?)?;
        Ok(Descriptor::new(m.media_type.as_str().into(), m.bytes.len() as u64, m.digest.to_oci()))
    }

    async fn tag(&self, target: &Descriptor, reference: &str) -> Result<()> {
        self.store.tag(&self.name, &descriptor_digest(target)?, reference)
    }
}

#[async_trait::async_trait]
impl super::Deleter for FsRepository {
    async fn delete(&self, target: &Descriptor) -> Result<()> {
        let d = descriptor_digest(target)?;
        if crate::oci::media::is_manifest(target.media_type().as_ref()) {
            self.store.delete_manifest(&self.name, &d)
        } else if self.store.unlink_blob(&self.name, &d)? {
            Ok(())
        } else {
            Err(ContentError::NotFound(format!("blob {d} in {}", self.name)))
        }
    }
}

#[async_trait::async_trait]
impl super::PredecessorFinder for FsRepository {
    async fn predecessors(&self, node: &Descriptor) -> Result<Vec<Descriptor>> {
        self.store.referrers(&self.name, &descriptor_digest(node)?)
    }
}

/// Writes `data` to `path` with permissions `mode` atomically, for files outside a store
/// (keys, records): a staging file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}
