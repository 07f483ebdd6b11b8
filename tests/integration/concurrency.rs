//! Concurrency: many clients pushing overlapping blobs, manifests, tags and referrers at
//! once into shared repositories; the store must end up consistent and verifiable.

use crate::common::{self, EMPTY, OCI_MANIFEST, TestServer, sha256};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;

/// Turns a hang (a task failed while the others wait at a barrier) into a failure.
const LIMIT: Duration = Duration::from_secs(180);

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") { loc.to_string() } else { format!("{base}{loc}") }
}

async fn expect_created(r: reqwest::Response, digest: &str, what: &str) {
    let status = r.status();
    let got = header(&r, "docker-content-digest");
    let body = r.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{what}: {body}");
    assert_eq!(got.as_deref(), Some(digest), "{what}: Docker-Content-Digest");
}

async fn start_session(c: &reqwest::Client, url: &str, repo: &str) -> String {
    let r = c.post(format!("{url}/v2/{repo}/blobs/uploads/")).send().await.expect("POST upload");
    assert_eq!(r.status(), 202, "POST upload: {}", r.text().await.unwrap_or_default());
    absolute(url, &header(&r, "location").expect("Location"))
}

/// Uploads `data` to `repo` by monolithic POST (`how` 0), POST+PUT (1) or chunked PATCHes (2).
async fn upload(c: &reqwest::Client, url: &str, repo: &str, data: &[u8], how: usize) -> String {
    let d = sha256(data);
    match how % 3 {
        0 => {
            let r = c
                .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={d}"))
                .header("content-type", "application/octet-stream")
                .body(data.to_vec())
                .send()
                .await
                .expect("monolithic upload");
            expect_created(r, &d, &format!("monolithic upload of {d} to {repo}")).await;
        }
        1 => {
            let loc = start_session(c, url, repo).await;
            let r = c
                .put(format!("{loc}?digest={d}"))
                .header("content-type", "application/octet-stream")
                .body(data.to_vec())
                .send()
                .await
                .expect("PUT upload");
            expect_created(r, &d, &format!("POST+PUT upload of {d} to {repo}")).await;
        }
        _ => {
            let mut loc = start_session(c, url, repo).await;
            let n = data.len();
            let pieces = 3;
            for k in 0..pieces {
                let (s, e) = (k * n / pieces, (k + 1) * n / pieces);
                if s == e {
                    continue;
                }
                let r = c
                    .patch(&loc)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{s}-{}", e - 1))
                    .header("content-length", (e - s).to_string())
                    .body(data[s..e].to_vec())
                    .send()
                    .await
                    .expect("PATCH");
                let status = r.status();
                let range = header(&r, "range");
                let next = header(&r, "location").map(|l| absolute(url, &l));
                assert_eq!(status, 202, "PATCH {s}-{}: {}", e - 1, r.text().await.unwrap_or_default());
                assert_eq!(range, Some(format!("0-{}", e - 1)), "PATCH Range");
                loc = next.unwrap_or(loc);
            }
            let r = c.put(format!("{loc}?digest={d}")).send().await.expect("PUT ?digest=");
            expect_created(r, &d, &format!("chunked upload of {d} to {repo}")).await;
        }
    }
    d
}

async fn put_manifest(c: &reqwest::Client, url: &str, repo: &str, reference: &str, body: &[u8]) {
    let r = common::put_manifest(c, url, repo, reference, OCI_MANIFEST, body).await;
    expect_created(r, &sha256(body), &format!("PUT manifest {repo}:{reference}")).await;
}

/// GETs `path` and checks the body hashes to `digest`; returns the body.
async fn fetch_verified(c: &reqwest::Client, url: &str, path: &str, digest: &str) -> Vec<u8> {
    let r = c.get(format!("{url}{path}")).header("accept", OCI_MANIFEST).send().await.expect("GET");
    assert_eq!(r.status(), 200, "GET {path}");
    let body = r.bytes().await.expect("body").to_vec();
    assert_eq!(sha256(&body), digest, "GET {path}: body does not hash to its digest");
    body
}

#[derive(Default)]
struct Pushed {
    /// repo → blob digests (layers, configs, referrer payloads).
    blobs: BTreeMap<String, BTreeSet<String>>,
    /// repo → manifest digests (images and referrers).
    manifests: BTreeMap<String, BTreeSet<String>>,
    /// (repo, tag) → digests pushed under that tag.
    tags: BTreeMap<(String, String), BTreeSet<String>>,
    /// (repo, subject) → digests of referrers pushed for it.
    referrers: BTreeMap<(String, String), BTreeSet<String>>,
}

struct TaskResult {
    repo: String,
    tag: String,
    blobs: Vec<String>,
    image: String,
    referrers: Vec<String>,
}

const REPOS: [&str; 3] = ["conc/alpha", "conc/beta", "team/conc/gamma"];
const TASKS: usize = 32;
const VARIANTS: usize = 8;
const SIG: &str = "application/vnd.berth.test.signature";
const SBOM: &str = "application/vnd.berth.test.sbom";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_pushes_of_blobs_and_manifests_all_verify() {
    let server = TestServer::start().await;
    let url = server.url.clone();
    // A small shared pool: each blob is pushed by 12 tasks, often at the same moment.
    let pool: Arc<Vec<Vec<u8>>> =
        Arc::new((0..VARIANTS).map(|k| common::bytes(100 + k as u64, (16 << 10) << (k % 6))).collect());
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (url, pool, barrier) = (url.clone(), pool.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let c = common::client();
            let repo = REPOS[t % REPOS.len()].to_string();
            let variant = t % VARIANTS;
            // (repo, tag) is shared by 5–6 tasks pushing different manifests: last writer wins.
            let tag = format!("v{}", t % 2);
            let picks = [variant, (variant + 1) % VARIANTS, (variant + 3) % VARIANTS];

            barrier.wait().await;
            let mut blobs = vec![upload(&c, &url, &repo, b"{}", t).await];
            let mut layers = Vec::new();
            for (k, p) in picks.iter().enumerate() {
                let d = upload(&c, &url, &repo, &pool[*p], t + k).await;
                layers.push(
                    json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": pool[*p].len()}),
                );
                blobs.push(d);
            }
            // Tasks t and t+24 push the identical manifest to the same repository and tag.
            let m = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": EMPTY, "size": 2},
                "layers": layers,
                "annotations": {"variant": variant.to_string()},
            });
            let body = serde_json::to_vec(&m).expect("json");
            let image = sha256(&body);

            barrier.wait().await;
            put_manifest(&c, &url, &repo, &tag, &body).await;
            put_manifest(&c, &url, &repo, &image, &body).await;

            barrier.wait().await;
            // A signature unique to the task and an SBOM shared with task t±24.
            let mut referrers = Vec::new();
            for (artifact_type, seed) in [(SIG, 1_000 + t as u64), (SBOM, 2_000 + variant as u64)] {
                let payload = common::bytes(seed, 512 + seed as usize);
                let p = upload(&c, &url, &repo, &payload, t + seed as usize).await;
                blobs.push(p.clone());
                let r = common::manifest(
                    (berth::oci::media::OCI_EMPTY, EMPTY, 2),
                    &[(&p, payload.len())],
                    Some(artifact_type),
                    Some((&image, body.len())),
                );
                let rb = serde_json::to_vec(&r).expect("json");
                let rd = sha256(&rb);
                put_manifest(&c, &url, &repo, &rd, &rb).await;
                referrers.push(rd);
            }
            TaskResult { repo, tag, blobs, image, referrers }
        }));
    }

    let mut pushed = Pushed::default();
    for h in handles {
        let r = tokio::time::timeout(LIMIT, h)
            .await
            .expect("push task hung (another task probably failed)")
            .expect("push task");
        pushed.blobs.entry(r.repo.clone()).or_default().extend(r.blobs);
        let ms = pushed.manifests.entry(r.repo.clone()).or_default();
        ms.insert(r.image.clone());
        ms.extend(r.referrers.iter().cloned());
        pushed.tags.entry((r.repo.clone(), r.tag)).or_default().insert(r.image.clone());
        pushed.referrers.entry((r.repo, r.image)).or_default().extend(r.referrers);
    }

    let c = common::client();
    for (repo, blobs) in &pushed.blobs {
        for d in blobs {
            fetch_verified(&c, &url, &format!("/v2/{repo}/blobs/{d}"), d).await;
        }
    }
    for (repo, ms) in &pushed.manifests {
        for d in ms {
            fetch_verified(&c, &url, &format!("/v2/{repo}/manifests/{d}"), d).await;
        }
    }
    for ((repo, tag), candidates) in &pushed.tags {
        let r = c
            .get(format!("{url}/v2/{repo}/manifests/{tag}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET tag");
        assert_eq!(r.status(), 200, "{repo}:{tag}");
        let hdr = header(&r, "docker-content-digest");
        let body = r.bytes().await.expect("body");
        let d = sha256(&body);
        assert_eq!(hdr.as_deref(), Some(d.as_str()), "{repo}:{tag}: Docker-Content-Digest");
        assert!(candidates.contains(&d), "{repo}:{tag} resolves to {d}, which was never pushed under it");
        // The winner is complete: config and every layer are in the repository.
        let m: Value = serde_json::from_slice(&body).expect("manifest JSON");
        let mut children = vec![m["config"].clone()];
        children.extend(m["layers"].as_array().expect("layers").iter().cloned());
        for desc in children {
            let cd = desc["digest"].as_str().expect("digest");
            let r = c.head(format!("{url}/v2/{repo}/blobs/{cd}")).send().await.expect("HEAD");
            assert_eq!(r.status(), 200, "{repo}:{tag} references {cd}, which is missing");
            assert_eq!(header(&r, "content-length"), Some(desc["size"].to_string()), "{repo}: size of {cd}");
        }
    }
    for repo in REPOS {
        let v: Value =
            c.get(format!("{url}/v2/{repo}/tags/list")).send().await.expect("tags").json().await.expect("json");
        let got: BTreeSet<String> =
            v["tags"].as_array().expect("tags").iter().map(|t| t.as_str().expect("tag").to_string()).collect();
        let want: BTreeSet<String> = pushed.tags.keys().filter(|(r, _)| r == repo).map(|(_, t)| t.clone()).collect();
        assert_eq!(got, want, "tags of {repo}");
    }
    for ((repo, subject), want) in &pushed.referrers {
        let r = c.get(format!("{url}/v2/{repo}/referrers/{subject}")).send().await.expect("referrers");
        assert_eq!(r.status(), 200, "referrers of {repo}@{subject}");
        let v: Value = r.json().await.expect("referrers JSON");
        let list = v["manifests"].as_array().expect("manifests");
        let got: Vec<String> = list.iter().map(|d| d["digest"].as_str().expect("digest").to_string()).collect();
        assert_eq!(got.len(), want.len(), "referrers of {repo}@{subject} has duplicates or extras: {got:?}");
        assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), *want, "referrers of {repo}@{subject}");
        for d in list {
            let at = d["artifactType"].as_str().unwrap_or_default();
            assert!(at == SIG || at == SBOM, "referrer {} has artifactType {at:?}", d["digest"]);
        }
    }

    let store = server.registry.store.clone();
    let report = tokio::task::spawn_blocking(move || berth::content::check::check(&store))
        .await
        .expect("check task")
        .expect("check");
    assert!(report.is_clean(), "check found problems: {:#?}", report.problems);
    assert_eq!(report.uploads_in_progress, 0, "upload sessions left behind after every upload completed");
    let all_content: BTreeSet<&String> = pushed.blobs.values().chain(pushed.manifests.values()).flatten().collect();
    assert_eq!(report.blobs_checked, all_content.len(), "blobs in the pool vs distinct content pushed");
    let manifests: usize = pushed.manifests.values().map(BTreeSet::len).sum();
    assert_eq!(report.manifests, manifests, "manifests");
    assert_eq!(report.tags, pushed.tags.len(), "tags");
    let referrers: usize = pushed.referrers.values().map(BTreeSet::len).sum();
    assert_eq!(report.referrers, referrers, "referrer entries");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_the_same_blob_leave_one_copy() {
    const N: usize = 16;
    let server = TestServer::start().await;
    let data = Arc::new(common::bytes(4242, 4 << 20));
    let digest = sha256(&data);
    let barrier = Arc::new(Barrier::new(N));
    let mut handles = Vec::new();
    for t in 0..N {
        let (url, data, barrier) = (server.url.clone(), data.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let c = common::client();
            barrier.wait().await;
            upload(&c, &url, "same/blob", &data, t).await
        }));
    }
    for h in handles {
        let d = tokio::time::timeout(LIMIT, h).await.expect("upload task hung").expect("upload task");
        assert_eq!(d, digest);
    }

    let c = common::client();
    fetch_verified(&c, &server.url, &format!("/v2/same/blob/blobs/{digest}"), &digest).await;
    let root = server.data_dir();
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let expected = root.join("blobs").join("sha256").join(&hex[..2]).join(hex);
    assert_eq!(files_under(&root.join("blobs")), vec![expected.clone()], "the blob pool holds exactly one copy");
    assert_eq!(sha256(&std::fs::read(&expected).expect("read blob")), digest, "the stored copy is intact");
    assert_eq!(entries(&root.join("uploads")), Vec::<String>::new(), "leftover upload sessions");
    assert_eq!(entries(&root.join("tmp")), Vec::<String>::new(), "leftover staging files");
}
