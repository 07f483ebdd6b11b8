//! Safe unpacking of image layers into a root filesystem.
//!
//! Owns the step between "the image's layer blobs" and "a directory runc can use as a
//! root": each layer is a tar changeset (OCI image-spec `layer.md`), gzip-compressed or
//! plain, applied in order, with whiteouts — `.wh.<name>` deletes `<name>` from lower
//! layers and `.wh..wh..opq` hides everything lower layers put in its directory.
//!
//! Layer bytes are hostile input until proven otherwise, so the unpacker:
//! - hashes each compressed stream as it reads it and fails on a digest mismatch; because
//!   the digest is only known at the end of a layer, everything is built in a staging
//!   directory next to the rootfs and renamed into place only after every layer verified
//!   (a failure leaves nothing behind);
//! - counts decompressed bytes and entries as they stream, so a gzip bomb is stopped as
//!   soon as it crosses [`Limits`], whatever the headers claim;
//! - refuses absolute paths, `..` components, device nodes, FIFOs, hard links to anything
//!   not already extracted inside the root, and symlinks whose target (resolved lexically
//!   from the link's directory, absolute targets against the root) leaves the root;
//! - never follows a symlink while writing: every parent component is checked with
//!   `lstat`, and an existing entry at the destination is removed, not opened.
//!
//! Symlink targets are checked lexically: the tree is meant to be used as `/` of a
//! container (where `/..` is `/`); nothing on the host should follow its links.

use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};
use tar::EntryType;

/// One layer blob, streamed: `digest` is the expected `sha256:<hex>` of the bytes
/// `reader` yields (the compressed blob, as the manifest's descriptor names it).
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub reader: Box<dyn Read + Send>,
}

/// Bounds on what the layers of one image may expand to, summed over all layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes (tar headers and padding included).
    pub max_bytes: u64,
    /// Tar entries (whiteout markers included).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 1 << 30, max_entries: 100_000 }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub layers: usize,
    pub entries: u64,
    /// Decompressed bytes read.
    pub bytes: u64,
    /// Whiteout markers processed (`.wh.<name>` and opaque markers).
    pub whiteouts_applied: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: media type {media_type} is not supported (gzip or uncompressed tar only)")]
    Unsupported { layer: String, media_type: String },
    #[error("layer digest {0:?} is not of the form sha256:<64 lowercase hex>")]
    BadDigest(String),
    #[error("layer content does not match its digest: expected {expected}, computed {actual}")]
    LayerDigest { expected: String, actual: String },
    #[error("layer {layer}: unpacked content exceeds the limit of {limit} bytes")]
    TooLarge { layer: String, limit: u64 },
    #[error("layer {layer}: the image has more than {limit} entries")]
    TooManyEntries { layer: String, limit: u64 },
    #[error("layer {layer}: entry {path:?} refused: {reason}")]
    Refused { layer: String, path: String, reason: String },
    #[error("layer {layer}: malformed archive: {source}")]
    Archive { layer: String, source: io::Error },
    #[error("{path}: {reason}")]
    Rootfs { path: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.display().to_string(), source }
}

/// Unpacks `layers`, in order, into `rootfs`, which must not exist or be an empty
/// directory. On any error nothing is left at `rootfs` (nor beside it).
pub fn unpack_layers(
    layers: impl IntoIterator<Item = Layer>,
    rootfs: &Path,
    limits: &Limits,
) -> Result<UnpackReport, UnpackError> {
    let rootfs_err = |reason: &str| UnpackError::Rootfs { path: rootfs.display().to_string(), reason: reason.into() };
    match fs::symlink_metadata(rootfs) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Ok(m) if m.is_dir() => {
            if fs::read_dir(rootfs).map_err(io_err(rootfs))?.next().is_some() {
                return Err(rootfs_err("already exists and is not empty"));
            }
        }
        Ok(_) => return Err(rootfs_err("already exists and is not a directory")),
        Err(e) => return Err(io_err(rootfs)(e)),
    }
    let name = rootfs.file_name().ok_or_else(|| rootfs_err("has no final file name"))?;
    let parent = match rootfs.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).map_err(io_err(parent))?;
    // Staging beside the rootfs keeps the final rename on one filesystem (so it is atomic)
    // and the TempDir guard removes the half-built tree on every error path.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.unpack-", name.to_string_lossy()))
        .tempdir_in(parent)
        .map_err(io_err(parent))?;
    // TempDir is created 0700; the container's non-root user must be able to traverse `/`.
    fs::set_permissions(staging.path(), Permissions::from_mode(0o755)).map_err(io_err(staging.path()))?;

    let mut u = Unpacker {
        root: staging.path().to_path_buf(),
        limits: limits.clone(),
        report: UnpackReport::default(),
        dirs: BTreeMap::new(),
        as_root: is_root(),
    };
    for layer in layers {
        u.layer(layer)?;
    }
    u.finish_dirs()?;
    let report = u.report;
    let built = staging.keep();
    // rename(2) replaces an empty directory, which is the only kind we accepted above.
    if let Err(e) = fs::rename(&built, rootfs) {
        let _ = fs::remove_dir_all(&built);
        return Err(io_err(rootfs)(e));
    }
    Ok(report)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

#[derive(Clone, Copy)]
enum Compression {
    Gzip,
    None,
}

fn compression(media_type: &str) -> Option<Compression> {
    if media_type.ends_with("tar+gzip") || media_type.ends_with("tar.gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// Hashes every byte that passes through, so the digest covers exactly what was unpacked.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts decompressed bytes against the limit and fails the read that crosses it: the
/// count is of bytes actually produced, so lying tar or gzip headers do not matter.
struct Bounded<R> {
    inner: R,
    total: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.exceeded {
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(n)
    }
}

/// Mode and mtime of a directory, applied once all layers are in: a read-only directory
/// must stay writable while its children are created, and creating them would reset its
/// mtime anyway.
struct DirMeta {
    mode: u32,
    mtime: SystemTime,
}

struct Unpacker {
    root: PathBuf,
    limits: Limits,
    report: UnpackReport,
    dirs: BTreeMap<PathBuf, DirMeta>,
    as_root: bool,
}

/// Names the entry being unpacked, for errors.
struct Ctx<'a> {
    layer: &'a str,
    path: String,
}

impl Ctx<'_> {
    fn refuse(&self, reason: impl Into<String>) -> UnpackError {
        UnpackError::Refused { layer: self.layer.to_string(), path: self.path.clone(), reason: reason.into() }
    }

    fn archive(&self, source: io::Error) -> UnpackError {
        UnpackError::Archive { layer: self.layer.to_string(), source }
    }
}

/// `sha256:<hex>` check, so a typo'd or foreign algorithm fails before any byte is read.
fn check_digest(digest: &str) -> Result<(), UnpackError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(()),
        _ => Err(UnpackError::BadDigest(digest.to_string())),
    }
}

/// An archive path as a relative path of normal components; `.` and empty components are
/// dropped, `..` is refused even where it would stay inside (no legitimate writer emits it).
fn clean_path(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute paths are not allowed");
    }
    let mut out = PathBuf::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("`..` components are not allowed"),
            p => out.push(OsStr::from_bytes(p)),
        }
    }
    Ok(out)
}

/// Whether a symlink at `link_dir` (relative to the root) pointing at `target` stays inside
/// the root, resolving lexically; absolute targets start from the root.
fn symlink_stays_inside(link_dir: &Path, target: &[u8]) -> bool {
    let mut stack: Vec<&[u8]> = Vec::new();
    if !target.starts_with(b"/") {
        stack.extend(link_dir.components().map(|c| c.as_os_str().as_bytes()));
    }
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            p => stack.push(p),
        }
    }
    true
}

/// Removes whatever is at `path` without following symlinks; a missing path is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        // remove_dir_all does not follow symlinks inside the tree.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn mtime_of(secs: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Sets a symlink's own times (std has no lutimes).
fn set_symlink_mtime(path: &Path, secs: u64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let secs = libc::time_t::try_from(secs).map_err(|_| io::Error::other("mtime out of range"))?;
    let t = libc::timespec { tv_sec: secs, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: `c` is a NUL-terminated path and `times` two timespecs, both alive for the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl Unpacker {
    fn layer(&mut self, layer: Layer) -> Result<(), UnpackError> {
        let Layer { digest, media_type, reader } = layer;
        let compression = compression(&media_type)
            .ok_or_else(|| UnpackError::Unsupported { layer: digest.clone(), media_type: media_type.clone() })?;
        check_digest(&digest)?;
        let mut hashing = Hashing { inner: reader, hasher: Sha256::new() };
        {
            let decoded: Box<dyn Read + '_> = match compression {
                // Multi-member: pigz and friends may emit concatenated gzip members.
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hashing)),
                Compression::None => Box::new(&mut hashing),
            };
            let mut bounded =
                Bounded { inner: decoded, total: self.report.bytes, limit: self.limits.max_bytes, exceeded: false };
            let mut result = self.entries(&digest, &mut bounded);
            if result.is_ok() {
                // tar stops at its end marker; the rest (record padding, gzip trailer) is still
                // part of the blob, so it is read, bounded and hashed too.
                result = io::copy(&mut bounded, &mut io::sink())
                    .map(drop)
                    .map_err(|source| UnpackError::Archive { layer: digest.clone(), source });
            }
            // Whatever error surfaced (tar, write, copy), crossing the bound is the cause.
            if bounded.exceeded {
                return Err(UnpackError::TooLarge { layer: digest, limit: self.limits.max_bytes });
            }
            result?;
            self.report.bytes = bounded.total;
        }
        io::copy(&mut hashing, &mut io::sink())
            .map_err(|source| UnpackError::Archive { layer: digest.clone(), source })?;
        let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
        if actual != digest {
            return Err(UnpackError::LayerDigest { expected: digest, actual });
        }
        self.report.layers += 1;
        Ok(())
    }

    fn entries(&mut self, layer: &str, reader: impl Read) -> Result<(), UnpackError> {
        let mut archive = tar::Archive::new(reader);
        // Paths this layer created (and their ancestors): whiteouts only hide lower layers.
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let entries = archive.entries().map_err(|source| UnpackError::Archive { layer: layer.to_string(), source })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| UnpackError::Archive { layer: layer.to_string(), source })?;
            self.report.entries += 1;
            if self.report.entries > self.limits.max_entries {
                return Err(UnpackError::TooManyEntries { layer: layer.to_string(), limit: self.limits.max_entries });
            }
            let ctx = Ctx { layer, path: String::from_utf8_lossy(&entry.path_bytes()).into_owned() };
            self.entry(&ctx, &mut entry, &mut this_layer)?;
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        entry: &mut tar::Entry<'_, R>,
        this_layer: &mut HashSet<PathBuf>,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // PAX global metadata: nothing to create.
            return Ok(());
        }
        let rel = clean_path(&entry.path_bytes()).map_err(|r| ctx.refuse(r))?;

        if let Some(name) = rel.file_name().and_then(|n| n.as_bytes().strip_prefix(b".wh.")) {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if name == b".wh..opq" {
                if self.existing_dir(ctx, dir)? {
                    self.clear_lower(dir, this_layer)?;
                }
            } else {
                if name.is_empty() || name == b"." || name == b".." || name.starts_with(b".wh.") {
                    return Err(ctx.refuse("malformed whiteout name"));
                }
                let target = dir.join(OsStr::from_bytes(name));
                // Same-layer entries are not hidden by the layer's own whiteouts (spec).
                if !this_layer.contains(&target) && self.existing_dir(ctx, dir)? {
                    let abs = self.root.join(&target);
                    remove_any(&abs).map_err(io_err(&abs))?;
                }
            }
            self.report.whiteouts_applied += 1;
            return Ok(());
        }

        let header = entry.header();
        let mode = header.mode().map_err(|e| ctx.archive(e))?;
        let mtime_secs = header.mtime().map_err(|e| ctx.archive(e))?;
        let mtime = mtime_of(mtime_secs).ok_or_else(|| ctx.refuse("mtime out of range"))?;
        let owner = if self.as_root {
            Some((header.uid().map_err(|e| ctx.archive(e))?, header.gid().map_err(|e| ctx.archive(e))?))
        } else {
            None
        };
        let chown = |p: &Path| -> Result<(), UnpackError> {
            match owner {
                Some((uid, gid)) => {
                    let (uid, gid) = (u32::try_from(uid), u32::try_from(gid));
                    let (Ok(uid), Ok(gid)) = (uid, gid) else { return Err(ctx.refuse("uid or gid out of range")) };
                    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(io_err(p))
                }
                None => Ok(()),
            }
        };

        if rel.as_os_str().is_empty() {
            // "./": the root itself; only its metadata can be set.
            if kind != EntryType::Directory {
                return Err(ctx.refuse("the root can only be a directory"));
            }
            chown(&self.root)?;
            self.dirs.insert(PathBuf::new(), DirMeta { mode: mode & 0o1777, mtime });
            return Ok(());
        }

        self.make_parents(ctx, &rel, this_layer)?;
        let abs = self.root.join(&rel);
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                remove_any(&abs).map_err(io_err(&abs))?;
                // create_new + O_NOFOLLOW: never reuse or follow whatever was there.
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&abs)
                    .map_err(io_err(&abs))?;
                io::copy(entry, &mut f).map_err(io_err(&abs))?;
                // chown before chmod: chown clears set-id bits, and we want the final say.
                chown(&abs)?;
                // No setuid/setgid/sticky on files: a plugin never needs privilege escalation.
                f.set_permissions(Permissions::from_mode(mode & 0o777)).map_err(io_err(&abs))?;
                f.set_modified(mtime).map_err(io_err(&abs))?;
            }
            EntryType::Directory => {
                match fs::symlink_metadata(&abs) {
                    Ok(m) if m.is_dir() => {}
                    _ => {
                        remove_any(&abs).map_err(io_err(&abs))?;
                        fs::create_dir(&abs).map_err(io_err(&abs))?;
                    }
                }
                chown(&abs)?;
                // Sticky stays (a /tmp must be 1777); set-id bits on directories do not.
                self.dirs.insert(rel.clone(), DirMeta { mode: mode & 0o1777, mtime });
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| ctx.refuse("symbolic link without a target"))?;
                if target.is_empty() {
                    return Err(ctx.refuse("symbolic link without a target"));
                }
                let dir = rel.parent().unwrap_or(Path::new(""));
                if !symlink_stays_inside(dir, &target) {
                    return Err(ctx.refuse(format!(
                        "symbolic link target {:?} escapes the root",
                        String::from_utf8_lossy(&target)
                    )));
                }
                remove_any(&abs).map_err(io_err(&abs))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &abs).map_err(io_err(&abs))?;
                chown(&abs)?;
                set_symlink_mtime(&abs, mtime_secs).map_err(io_err(&abs))?;
            }
            EntryType::Link => {
                let raw = entry.link_name_bytes().ok_or_else(|| ctx.refuse("hard link without a target"))?;
                let target = clean_path(&raw).map_err(|r| ctx.refuse(format!("hard link target: {r}")))?;
                if target.as_os_str().is_empty() || target == rel {
                    return Err(ctx.refuse("hard link to the root or to itself"));
                }
                // The target must already be in the tree, reached without following links.
                let parent = target.parent().unwrap_or(Path::new(""));
                let src = self.root.join(&target);
                let ok = self.existing_dir(ctx, parent)?
                    && fs::symlink_metadata(&src).is_ok_and(|m| m.is_file() || m.file_type().is_symlink());
                if !ok {
                    return Err(ctx.refuse(format!(
                        "hard link target {:?} is not a file extracted earlier",
                        String::from_utf8_lossy(&raw)
                    )));
                }
                remove_any(&abs).map_err(io_err(&abs))?;
                // On Linux, link(2) links the symlink itself rather than following it.
                fs::hard_link(&src, &abs).map_err(io_err(&abs))?;
            }
            EntryType::Char | EntryType::Block => return Err(ctx.refuse("device nodes are not allowed")),
            EntryType::Fifo => return Err(ctx.refuse("FIFOs are not allowed")),
            other => return Err(ctx.refuse(format!("unsupported entry type {other:?}"))),
        }
        let mut p = rel.as_path();
        this_layer.insert(p.to_path_buf());
        while let Some(parent) = p.parent() {
            this_layer.insert(parent.to_path_buf());
            p = parent;
        }
        Ok(())
    }

    /// Creates `rel`'s missing parents (0755, as OCI implies) and refuses a parent that is a
    /// symlink or not a directory: nothing is ever written through a link.
    fn make_parents(&self, ctx: &Ctx<'_>, rel: &Path, this_layer: &mut HashSet<PathBuf>) -> Result<(), UnpackError> {
        let Some(parent) = rel.parent() else { return Ok(()) };
        let mut cur = PathBuf::new();
        for c in parent.components() {
            cur.push(c);
            let abs = self.root.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ctx.refuse(format!(
                        "parent {} is a symbolic link; writing through links is not allowed",
                        cur.display()
                    )));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ctx.refuse(format!("parent {} is not a directory", cur.display()))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&abs).map_err(io_err(&abs))?;
                    fs::set_permissions(&abs, Permissions::from_mode(0o755)).map_err(io_err(&abs))?;
                    this_layer.insert(cur.clone());
                }
                Err(e) => return Err(io_err(&abs)(e)),
            }
        }
        Ok(())
    }

    /// Whether `rel` is an existing directory reached without following links; a symlink on
    /// the way is refused, anything else missing or not a directory is `false`.
    fn existing_dir(&self, ctx: &Ctx<'_>, rel: &Path) -> Result<bool, UnpackError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            match fs::symlink_metadata(self.root.join(&cur)) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(
                        ctx.refuse(format!("{} is a symbolic link; following links is not allowed", cur.display()))
                    );
                }
                Ok(m) if m.is_dir() => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Opaque whiteout: removes from `dir` everything this layer did not put there,
    /// descending into directories this layer (re)declared.
    fn clear_lower(&self, dir: &Path, this_layer: &HashSet<PathBuf>) -> Result<(), UnpackError> {
        let abs = self.root.join(dir);
        for child in fs::read_dir(&abs).map_err(io_err(&abs))? {
            let child = child.map_err(io_err(&abs))?;
            let rel = dir.join(child.file_name());
            let path = child.path();
            if !this_layer.contains(&rel) {
                remove_any(&path).map_err(io_err(&path))?;
            } else if child.file_type().map_err(io_err(&path))?.is_dir() {
                self.clear_lower(&rel, this_layer)?;
            }
        }
        Ok(())
    }

    /// Applies deferred directory modes and mtimes, deepest first, so a restrictive parent
    /// never blocks its children.
    fn finish_dirs(&self) -> Result<(), UnpackError> {
        for (rel, meta) in self.dirs.iter().rev() {
            // Skip directories a later layer removed or replaced, and never follow a link
            // that a later layer put in their path.
            let mut cur = self.root.clone();
            let mut intact = true;
            for c in rel.components().chain(std::iter::once(Component::CurDir)) {
                if c != Component::CurDir {
                    cur.push(c);
                }
                if !fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
                    intact = false;
                    break;
                }
            }
            if !intact {
                continue;
            }
            let f = fs::File::open(&cur).map_err(io_err(&cur))?;
            f.set_modified(meta.mtime).map_err(io_err(&cur))?;
            f.set_permissions(Permissions::from_mode(meta.mode)).map_err(io_err(&cur))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::{Cursor, Write};
    use std::os::unix::fs::MetadataExt;
    use tar::Header;

    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    const MTIME: u64 = 1_600_000_000;

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = header(EntryType::Regular, mode, data.len() as u64);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
        let mut h = header(EntryType::Directory, mode, 0);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0o777, 0);
        h.set_path(path).unwrap();
        h.set_link_name(target).unwrap();
        h.set_cksum();
        b.append(&h, io::empty()).unwrap();
    }

    /// An entry whose name the Builder would refuse, written into the header bytes directly.
    fn raw(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &[u8], data: &[u8]) {
        let mut h = header(kind, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
    }

    fn layer(blob: Vec<u8>, media_type: &str) -> Layer {
        Layer { digest: sha(&blob), media_type: media_type.into(), reader: Box::new(Cursor::new(blob)) }
    }

    fn gz_layer(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Layer {
        layer(gzip(&tar_of(f)), GZ)
    }

    fn unpack(layers: Vec<Layer>) -> (tempfile::TempDir, PathBuf, Result<UnpackReport, UnpackError>) {
        unpack_with(layers, &Limits::default())
    }

    fn unpack_with(
        layers: Vec<Layer>,
        limits: &Limits,
    ) -> (tempfile::TempDir, PathBuf, Result<UnpackReport, UnpackError>) {
        let parent = tempfile::tempdir().unwrap();
        let rootfs = parent.path().join("rootfs");
        let r = unpack_layers(layers, &rootfs, limits);
        (parent, rootfs, r)
    }

    /// Asserts a refusal naming `path`, and that nothing was left behind.
    fn assert_refused(layers: Vec<Layer>, path: &str, reason: &str) {
        let (parent, rootfs, r) = unpack(layers);
        match r {
            Err(UnpackError::Refused { path: p, reason: why, .. }) => {
                assert_eq!(p, path);
                assert!(why.contains(reason), "{why:?} does not mention {reason:?}");
            }
            other => panic!("expected refusal of {path}, got {other:?}"),
        }
        assert!(!rootfs.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0, "staging left behind");
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn round_trip() {
        let l = gz_layer(|b| {
            dir(b, "etc/", 0o755);
            file(b, "etc/conf", b"hello", 0o640);
            file(b, "bin/tool", b"#!/bin/sh\n", 0o4755);
            dir(b, "tmp/", 0o1777);
            dir(b, "ro/", 0o555);
            file(b, "ro/inner", b"x", 0o444);
            link(b, EntryType::Symlink, "etc/link", "conf");
            link(b, EntryType::Symlink, "abs", "/etc/conf");
            link(b, EntryType::Symlink, "a/b/up", "../../etc/conf");
            link(b, EntryType::Link, "etc/conf2", "etc/conf");
        });
        let (_parent, root, r) = unpack(vec![l]);
        let report = r.unwrap();
        assert_eq!(report.layers, 1);
        assert_eq!(report.entries, 10);
        assert_eq!(report.whiteouts_applied, 0);
        assert!(report.bytes >= 10 * 512);
        assert_eq!(fs::read(root.join("etc/conf")).unwrap(), b"hello");
        assert_eq!(mode(&root.join("etc/conf")), 0o640);
        assert_eq!(mode(&root.join("bin/tool")), 0o755, "setuid stripped");
        assert_eq!(mode(&root.join("tmp")), 0o1777, "sticky kept on dirs");
        assert_eq!(mode(&root.join("ro")), 0o555);
        assert_eq!(mode(&root), 0o755);
        assert_eq!(fs::read(root.join("ro/inner")).unwrap(), b"x");
        assert_eq!(fs::read_link(root.join("etc/link")).unwrap(), Path::new("conf"));
        assert_eq!(fs::read(root.join("etc/link")).unwrap(), b"hello");
        assert_eq!(fs::read_link(root.join("abs")).unwrap(), Path::new("/etc/conf"));
        assert_eq!(fs::read(root.join("a/b/up")).unwrap(), b"hello");
        let (a, b) = (fs::metadata(root.join("etc/conf")).unwrap(), fs::metadata(root.join("etc/conf2")).unwrap());
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(a.mtime() as u64, MTIME);
        assert_eq!(fs::metadata(root.join("ro")).unwrap().mtime() as u64, MTIME);
        assert_eq!(fs::symlink_metadata(root.join("etc/link")).unwrap().mtime() as u64, MTIME);
        // Plain tar works too, and the rootfs may be an existing empty directory.
        let parent = tempfile::tempdir().unwrap();
        let rootfs = parent.path().join("r");
        fs::create_dir(&rootfs).unwrap();
        let plain = layer(tar_of(|b| file(b, "f", b"plain", 0o644)), TAR);
        unpack_layers(vec![plain], &rootfs, &Limits::default()).unwrap();
        assert_eq!(fs::read(rootfs.join("f")).unwrap(), b"plain");
    }

    #[test]
    fn digest_mismatch_leaves_nothing() {
        let good = gz_layer(|b| file(b, "a", b"a", 0o644));
        let mut bad = gz_layer(|b| file(b, "b", b"b", 0o644));
        let expected = sha(b"something else");
        bad.digest = expected.clone();
        let (parent, rootfs, r) = unpack(vec![good, bad]);
        match r {
            Err(UnpackError::LayerDigest { expected: e, actual }) => {
                assert_eq!(e, expected);
                assert_ne!(actual, expected);
            }
            other => panic!("{other:?}"),
        }
        assert!(!rootfs.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_bad_digests_and_media_types() {
        let mut l = gz_layer(|b| file(b, "a", b"a", 0o644));
        l.digest = "sha512:abc".into();
        assert!(matches!(unpack(vec![l]).2, Err(UnpackError::BadDigest(_))));
        let l = layer(Vec::new(), "application/vnd.oci.image.layer.v1.tar+zstd");
        match unpack(vec![l]).2 {
            Err(e @ UnpackError::Unsupported { .. }) => assert!(e.to_string().contains("tar+zstd")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_absolute_path() {
        let l = gz_layer(|b| raw(b, EntryType::Regular, b"/etc/passwd", b"root"));
        assert_refused(vec![l], "/etc/passwd", "absolute");
    }

    #[test]
    fn refuses_dotdot() {
        let l = gz_layer(|b| raw(b, EntryType::Regular, b"a/../../evil", b"x"));
        assert_refused(vec![l], "a/../../evil", "..");
    }

    #[test]
    fn refuses_escaping_symlinks() {
        let l = gz_layer(|b| link(b, EntryType::Symlink, "etc", "../../etc"));
        assert_refused(vec![l], "etc", "escapes");
        let l = gz_layer(|b| link(b, EntryType::Symlink, "a/b/l", "../../../x"));
        assert_refused(vec![l], "a/b/l", "escapes");
        let l = gz_layer(|b| link(b, EntryType::Symlink, "l", "/../x"));
        assert_refused(vec![l], "l", "escapes");
    }

    #[test]
    fn refuses_writing_through_symlink() {
        // In one layer...
        let l = gz_layer(|b| {
            dir(b, "sub/", 0o755);
            link(b, EntryType::Symlink, "d", "sub");
            file(b, "d/x", b"x", 0o644);
        });
        assert_refused(vec![l], "d/x", "symbolic link");
        // ...and across layers, with an (allowed) absolute link.
        let l1 = gz_layer(|b| link(b, EntryType::Symlink, "d", "/etc"));
        let l2 = gz_layer(|b| file(b, "d/passwd", b"x", 0o644));
        assert_refused(vec![l1, l2], "d/passwd", "symbolic link");
        // A file over an existing symlink replaces the link, it does not write through it.
        let l1 = gz_layer(|b| {
            file(b, "target", b"orig", 0o644);
            link(b, EntryType::Symlink, "l", "target");
        });
        let l2 = gz_layer(|b| file(b, "l", b"new", 0o644));
        let (_p, root, r) = unpack(vec![l1, l2]);
        r.unwrap();
        assert_eq!(fs::read(root.join("target")).unwrap(), b"orig");
        assert!(fs::symlink_metadata(root.join("l")).unwrap().is_file());
    }

    #[test]
    fn refuses_bad_hard_links() {
        let l = gz_layer(|b| link(b, EntryType::Link, "x", "../../etc/passwd"));
        assert_refused(vec![l], "x", "..");
        let l = gz_layer(|b| link(b, EntryType::Link, "x", "/etc/passwd"));
        assert_refused(vec![l], "x", "absolute");
        let l = gz_layer(|b| link(b, EntryType::Link, "x", "later"));
        assert_refused(vec![l], "x", "not a file extracted earlier");
        let l = gz_layer(|b| {
            dir(b, "real/", 0o755);
            file(b, "real/f", b"f", 0o644);
            link(b, EntryType::Symlink, "s", "real");
            link(b, EntryType::Link, "x", "s/f");
        });
        assert_refused(vec![l], "x", "symbolic link");
    }

    #[test]
    fn refuses_devices_and_fifos() {
        let l = gz_layer(|b| raw(b, EntryType::Char, b"dev/null", b""));
        assert_refused(vec![l], "dev/null", "device");
        let l = gz_layer(|b| raw(b, EntryType::Block, b"dev/sda", b""));
        assert_refused(vec![l], "dev/sda", "device");
        let l = gz_layer(|b| raw(b, EntryType::Fifo, b"fifo", b""));
        assert_refused(vec![l], "fifo", "FIFO");
    }

    #[test]
    fn stops_gzip_bomb() {
        // 2 GiB of zeros behind a tar header, compressed lazily as the unpacker reads: only
        // what it consumes before giving up is ever generated.
        let mut h = header(EntryType::Regular, 0o644, 2 << 30);
        h.set_path("zeros").unwrap();
        h.set_cksum();
        let plain = Cursor::new(h.as_bytes().to_vec()).chain(io::repeat(0).take(2 << 30));
        let gz = flate2::read::GzEncoder::new(plain, flate2::Compression::fast());
        let l = Layer { digest: sha(b"unknowable until the end"), media_type: GZ.into(), reader: Box::new(gz) };
        let limits = Limits { max_bytes: 64 << 20, ..Limits::default() };
        let start = std::time::Instant::now();
        let (parent, rootfs, r) = unpack_with(vec![l], &limits);
        match r {
            Err(e @ UnpackError::TooLarge { .. }) => assert!(e.to_string().contains(&(64u64 << 20).to_string())),
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(60));
        assert!(!rootfs.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn stops_too_many_entries() {
        let l = gz_layer(|b| (0..11).for_each(|i| file(b, &format!("f{i}"), b"", 0o644)));
        let limits = Limits { max_entries: 10, ..Limits::default() };
        let (_p, rootfs, r) = unpack_with(vec![l], &limits);
        assert!(matches!(r, Err(UnpackError::TooManyEntries { limit: 10, .. })), "{r:?}");
        assert!(!rootfs.exists());
    }

    #[test]
    fn whiteout_deletes_lower_file() {
        let l1 = gz_layer(|b| {
            file(b, "a/x", b"x", 0o644);
            file(b, "a/y", b"y", 0o644);
            file(b, "gone/deep/f", b"f", 0o644);
        });
        let l2 = gz_layer(|b| {
            file(b, "a/.wh.x", b"", 0o644);
            file(b, ".wh.gone", b"", 0o644);
            // Same-layer entries are not hidden by that layer's whiteouts.
            file(b, "a/z", b"z", 0o644);
            file(b, "a/.wh.z", b"", 0o644);
        });
        let (_p, root, r) = unpack(vec![l1, l2]);
        let report = r.unwrap();
        assert_eq!(report.whiteouts_applied, 3);
        assert!(!root.join("a/x").exists());
        assert!(!root.join("a/.wh.x").exists());
        assert!(!root.join("gone").exists());
        assert!(root.join("a/y").exists());
        assert!(root.join("a/z").exists());
    }

    #[test]
    fn opaque_whiteout_keeps_same_layer_entries() {
        let l1 = gz_layer(|b| {
            file(b, "d/old", b"old", 0o644);
            file(b, "d/sub/old2", b"old", 0o644);
            file(b, "d/keep/old3", b"old", 0o644);
            file(b, "other/f", b"f", 0o644);
        });
        let l2 = gz_layer(|b| {
            dir(b, "d/", 0o755);
            file(b, "d/early", b"early", 0o644);
            dir(b, "d/keep/", 0o755);
            file(b, "d/.wh..wh..opq", b"", 0o644);
            file(b, "d/new", b"new", 0o644);
        });
        let (_p, root, r) = unpack(vec![l1, l2]);
        assert_eq!(r.unwrap().whiteouts_applied, 1);
        let mut names: Vec<_> =
            fs::read_dir(root.join("d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["early", "keep", "new"]);
        assert_eq!(fs::read_dir(root.join("d/keep")).unwrap().count(), 0, "lower content of a kept dir is hidden");
        assert!(root.join("other/f").exists());
    }

    #[test]
    fn upper_layer_overrides() {
        let l1 = gz_layer(|b| {
            file(b, "f", b"one", 0o600);
            file(b, "was_dir/inner", b"x", 0o644);
        });
        let l2 = gz_layer(|b| {
            file(b, "f", b"two", 0o644);
            file(b, "was_dir", b"now a file", 0o644);
        });
        let (_p, root, r) = unpack(vec![l1, l2]);
        assert_eq!(r.unwrap().layers, 2);
        assert_eq!(fs::read(root.join("f")).unwrap(), b"two");
        assert_eq!(mode(&root.join("f")), 0o644);
        assert_eq!(fs::read(root.join("was_dir")).unwrap(), b"now a file");
    }
}
