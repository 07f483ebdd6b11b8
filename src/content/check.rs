//! `berth fsck`: checks a filesystem store end to end: every blob's bytes against its
//! name, every link, tag and referrer entry against what it points at. Upload sessions
//! are reported, not counted as problems: they are invisible until committed.

use super::fs::{FsStore, hash_file, list_dir};
use super::{Reference, Result};
use crate::oci::{Digest, ParsedManifest};

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub repositories: usize,
    pub manifests: usize,
    pub tags: usize,
    pub referrers: usize,
    pub uploads_in_progress: usize,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn check(store: &FsStore) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let blobs = store.root().join("blobs");
    for alg in list_dir(&blobs)? {
        for fan in list_dir(&blobs.join(&alg))? {
            for hex in list_dir(&blobs.join(&alg).join(&fan))? {
                let path = blobs.join(&alg).join(&fan).join(&hex);
                let d = match format!("{alg}:{hex}").parse::<Digest>() {
                    Ok(d) if hex.starts_with(&fan) => d,
                    _ => {
                        r.problems.push(format!("stray file {}", path.display()));
                        continue;
                    }
                };
                let (n, h) = hash_file(&path, d.algorithm())?;
                let actual = h.finish();
                r.blobs_checked += 1;
                r.bytes_checked += n;
                if actual != d {
                    r.problems.push(format!("blob {d} is corrupt: its bytes hash to {actual}"));
                }
            }
        }
    }
    for repo in store.repositories()? {
        r.repositories += 1;
        let manifests = store.manifest_digests(&repo)?;
        for d in &manifests {
            r.manifests += 1;
            match store.get_manifest(&repo, &Reference::Digest(d.clone())) {
                Ok(m) => match ParsedManifest::parse(&m.bytes, Some(&m.media_type)) {
                    Ok(p) => {
                        for c in p.children.iter().filter(|c| !c.external) {
                            if store.content_size(&c.digest)?.is_none() {
                                r.problems.push(format!("{repo}@{d} references {}, which is missing", c.digest));
                            }
                        }
                    }
                    Err(e) => r.problems.push(format!("{repo}@{d} does not parse: {e}")),
                },
                Err(e) => r.problems.push(format!("{repo}@{d}: {e}")),
            }
        }
        for d in store.blob_digests(&repo)? {
            if store.content_size(&d)?.is_none() {
                r.problems.push(format!("{repo} links blob {d}, which is missing"));
            }
        }
        for t in store.tags(&repo)? {
            r.tags += 1;
            if let Err(e) = store.resolve(&repo, &Reference::Tag(t.clone())) {
                r.problems.push(format!("{repo}:{t} is dangling: {e}"));
            }
        }
        for d in &manifests {
            for desc in store.referrers(&repo, d)? {
                r.referrers += 1;
                let ok = desc.digest().to_string().parse::<Digest>().is_ok_and(|rd| manifests.contains(&rd));
                if !ok {
                    r.problems.push(format!("{repo}: referrer {} of {d} is not in the repository", desc.digest()));
                }
            }
        }
    }
    r.uploads_in_progress = list_dir(&store.root().join("uploads"))?.len();
    Ok(r)
}
