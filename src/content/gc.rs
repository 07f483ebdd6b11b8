//! `berth gc`: mark-and-sweep over a filesystem store.
//!
//! 1. Referrers whose subject is gone from their repository are deleted, repeatedly, so a
//!    signature on an orphaned referrer goes too.
//! 2. Mark: every manifest linked in any repository, and every blob or manifest they
//!    reference.
//! 3. Sweep: unmarked blobs, stale upload sessions and staging files.
//!
//! Safe while pushes run: nothing younger than the grace period is touched (a blob pushed
//! before its manifest, a referrer pushed before its subject, an upload in progress), and
//! a manifest push refreshes the modification time of the blobs it references, which the
//! sweep checks again just before it deletes.

use super::fs::{FsStore, list_dir};
use super::{Reference, Result};
use crate::oci::{Digest, ParsedManifest};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Content younger than this is never collected.
    pub grace: Duration,
    /// Report what would be deleted without deleting.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace: Duration::from_secs(3600), dry_run: false }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    /// `repository@digest` of referrers removed because their subject is gone.
    pub orphaned_referrers: Vec<String>,
    pub blobs_deleted: Vec<Digest>,
    pub bytes_freed: u64,
    pub blobs_kept: usize,
    pub links_removed: usize,
    pub uploads_removed: usize,
    pub dry_run: bool,
}

fn older_than(path: &Path, grace: Duration, now: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| now.duration_since(t).unwrap_or_default() >= grace)
        .unwrap_or(false)
}

/// Runs garbage collection on `store`.
pub fn gc(store: &FsStore, opts: &GcOptions) -> Result<GcReport> {
    let now = SystemTime::now();
    let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };
    let repos = store.repositories()?;

    // 1. orphaned referrers
    for repo in &repos {
        let mut present: BTreeSet<Digest> = store.manifest_digests(repo)?.into_iter().collect();
        loop {
            let mut orphans = Vec::new();
            for d in &present {
                let Ok(m) = store.get_manifest(repo, &Reference::Digest(d.clone())) else { continue };
                let Ok(p) = ParsedManifest::parse(&m.bytes, Some(&m.media_type)) else { continue };
                if let Some((subject, _)) = p.subject
                    && !present.contains(&subject)
                    && older_than(&store.manifest_link_path(repo, d), opts.grace, now)
                {
                    orphans.push(d.clone());
                }
            }
            if orphans.is_empty() {
                break;
            }
            for d in orphans {
                if !opts.dry_run {
                    store.delete_manifest(repo, &d)?;
                }
                present.remove(&d);
                report.orphaned_referrers.push(format!("{repo}@{d}"));
            }
        }
    }

    // 2. mark
    let mut marked: HashSet<Digest> = HashSet::new();
    let deleted: HashSet<&str> = report.orphaned_referrers.iter().map(String::as_str).collect();
    for repo in &repos {
        for d in store.manifest_digests(repo)? {
            if deleted.contains(format!("{repo}@{d}").as_str()) {
                continue; // dry run: treat as gone
            }
            marked.insert(d.clone());
            let Ok(m) = store.get_manifest(repo, &Reference::Digest(d.clone())) else { continue };
            if let Ok(p) = ParsedManifest::parse(&m.bytes, Some(&m.media_type)) {
                marked.extend(p.children.into_iter().map(|c| c.digest));
            }
        }
    }

    // 3. sweep blobs
    let blobs = store.root().join("blobs");
    for alg in list_dir(&blobs)? {
        for fan in list_dir(&blobs.join(&alg))? {
            for hex in list_dir(&blobs.join(&alg).join(&fan))? {
                let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() else { continue };
                let path = store.blob_path(&d);
                if marked.contains(&d) || !older_than(&path, opts.grace, now) {
                    report.blobs_kept += 1;
                    continue;
                }
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                // Checked again right before deleting: a manifest push may have just
                // refreshed it.
                if !opts.dry_run && older_than(&path, opts.grace, SystemTime::now()) {
                    let _ = std::fs::remove_file(&path);
                }
                report.bytes_freed += size;
                report.blobs_deleted.push(d);
            }
        }
    }
    store.clear_cache();

    // Links to blobs that no longer exist.
    let gone: HashSet<&Digest> = report.blobs_deleted.iter().collect();
    for repo in &repos {
        for d in store.blob_digests(repo)? {
            if gone.contains(&d) || (!opts.dry_run && store.content_size(&d)?.is_none()) {
                if !opts.dry_run {
                    store.unlink_blob(repo, &d)?;
                }
                report.links_removed += 1;
            }
        }
    }

    // Upload sessions and staging files nobody has touched within the grace period.
    for (dir, is_upload) in [("uploads", true), ("tmp", false)] {
        let base = store.root().join(dir);
        for name in list_dir(&base)? {
            let p = base.join(&name);
            let stamp = if is_upload { p.join("data") } else { p.clone() };
            if older_than(&stamp, opts.grace, now) || (is_upload && !stamp.exists() && older_than(&p, opts.grace, now))
            {
                if !opts.dry_run {
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
                if is_upload {
                    report.uploads_removed += 1;
                }
            }
        }
    }
    Ok(report)
}
