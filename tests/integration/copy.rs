//! `berth copy` and `berth discover` as users run them: a plugin image with its referrers
//! travels berth → distribution (tag schema) → OCI layout → berth with every digest intact;
//! a repeated copy moves nothing; an interrupted copy resumes with only what is missing.

use crate::common::*;
use berth::content::PredecessorFinder;
use berth::content::layout::OciLayout;
use berth::content::remote::{RemoteOptions, RemoteRegistry};
use berth::content::{ReadOnlyStorage, TagResolver};
use serde_json::Value;
use std::process::Command;

/// Runs the berth binary off the runtime's threads; returns (success, stdout, stderr).
async fn berth(args: Vec<String>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let out =
            Command::new(env!("CARGO_BIN_EXE_berth")).args(&args).env("BERTH_LOG", "warn").output().expect("run berth");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

async fn copy_ok(src: String, dst: String) -> Value {
    let (ok, out, err) =
        berth(vec!["copy".into(), src.clone(), dst.clone(), "--referrers".into(), "--json".into()]).await;
    assert!(ok, "copy {src} → {dst} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The referrer tree `berth discover --json` prints, without sizes that depend on nothing.
async fn discover(reference: String) -> Value {
    let (ok, out, err) = berth(vec!["discover".into(), reference.clone(), "--json".into()]).await;
    assert!(ok, "discover {reference}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// A plugin image in `repo` with three referrers and a signature on one of them.
async fn push_plugin(url: &str, repo: &str) -> (String, Vec<String>) {
    let c = client();
    let (img, size) = push_image(&c, url, repo, "v1", &bytes(42, 300_000)).await;
    let pm = push_referrer(
        &c,
        url,
        repo,
        "application/vnd.aisopsflow.plugin.manifest.v1+json",
        (&img, size),
        b"{\"name\":\"p\"}",
    )
    .await;
    let sbom =
        push_referrer(&c, url, repo, "application/vnd.cyclonedx+json", (&img, size), b"{\"bomFormat\":\"CycloneDX\"}")
            .await;
    let sig = push_referrer(&c, url, repo, "application/vnd.dev.sigstore.bundle.v0.3+json", (&img, size), b"sig").await;
    let pm_size = c.get(format!("{url}/v2/{repo}/manifests/{pm}")).send().await.unwrap().bytes().await.unwrap().len();
    let pm_sig =
        push_referrer(&c, url, repo, "application/vnd.dev.sigstore.bundle.v0.3+json", (&pm, pm_size), b"pm-sig").await;
    (img, vec![pm, sbom, sig, pm_sig])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_graph_travels_berth_distribution_layout_berth_with_identical_digests() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let dist = Distribution::start();
    let layout = tempfile::tempdir().unwrap();
    let (img, refs) = push_plugin(&a.url, "acme/plugin").await;
    let tree_a = discover(format!("{}/acme/plugin:v1", a.host())).await;
    assert_eq!(tree_a["digest"], img.as_str());
    assert_eq!(tree_a["referrers"].as_array().unwrap().len(), 3);

    let hops = [
        (format!("{}/acme/plugin:v1", a.host()), format!("{}/acme/plugin:v1", dist.host)),
        (format!("{}/acme/plugin:v1", dist.host), format!("oci-layout:{}:v1", layout.path().display())),
        (format!("oci-layout:{}:v1", layout.path().display()), format!("{}/acme/plugin:v1", b.host())),
    ];
    for (src, dst) in hops {
        let r = copy_ok(src, dst.clone()).await;
        assert_eq!(r["digest"], img.as_str());
        assert_eq!(r["report"]["copied"], 11, "{r}"); // 2 blobs + manifest, 4 referrers × (manifest + layer), empty config
        // the whole tree is discoverable at the destination, identical
        assert_eq!(discover(dst.clone()).await, tree_a, "referrer tree differs at {dst}");
    }

    // on distribution the referrers live in the tag schema; on berth behind the API
    let d = RemoteRegistry::new(&dist.host, RemoteOptions::default()).unwrap().repository("acme/plugin").unwrap();
    let root = d.resolve("v1").await.unwrap();
    assert_eq!(root.digest().to_string(), img);
    let tag = format!("sha256-{}", img.trim_start_matches("sha256:"));
    let via_tag = d.resolve(&tag).await.unwrap();
    assert_eq!(via_tag.media_type().to_string(), berth::oci::media::OCI_INDEX);
    let l = OciLayout::open(layout.path()).unwrap();
    let mut in_layout: Vec<String> =
        l.predecessors(&root).await.unwrap().iter().map(|d| d.digest().to_string()).collect();
    in_layout.sort();
    let mut want = refs[..3].to_vec();
    want.sort();
    assert_eq!(in_layout, want);
    let r: Value =
        client().get(format!("{}/v2/acme/plugin/referrers/{img}", b.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["manifests"].as_array().unwrap().len(), 3);
    // every blob of the image and of each referrer made it, by digest
    for d in &refs {
        let m = client().get(format!("{}/v2/acme/plugin/manifests/{d}", b.url)).send().await.unwrap();
        assert_eq!(m.status(), 200);
        assert_eq!(sha256(&m.bytes().await.unwrap()), *d);
    }

    // once more: nothing moves, and the command says so
    let (ok, out, err) = berth(vec![
        "copy".into(),
        format!("{}/acme/plugin:v1", a.host()),
        format!("{}/acme/plugin:v1", b.host()),
        "-r".into(),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("nothing to copy") && out.contains("0 bytes transferred"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refuses_bad_references_with_clear_errors() {
    let (ok, _, err) = berth(vec!["copy".into(), "acme/plugin:v1".into(), "oci-layout:/tmp/x".into()]).await;
    assert!(!ok);
    assert!(err.contains("no registry host"), "{err}");
    let a = TestServer::start().await;
    let (ok, _, err) = berth(vec!["copy".into(), format!("{}/acme/none", a.host()), "oci-layout:/tmp/x".into()]).await;
    assert!(!ok);
    assert!(err.contains("names no tag or digest"), "{err}");
    let (ok, _, err) =
        berth(vec!["copy".into(), format!("{}/acme/none:v9", a.host()), "oci-layout:/tmp/x".into()]).await;
    assert!(!ok);
    assert!(err.contains("resolving"), "{err}");
}

/// A proxy in front of a registry that answers everything, except that it stalls the
/// `stall_at`-th blob download forever and reports when it got there.
async fn stalling_proxy(upstream: String, stall_at: usize) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let blobs = Arc::new(AtomicUsize::new(0));
    let client = client();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, upstream, tx, blobs) = (client.clone(), upstream.clone(), tx.clone(), blobs.clone());
        async move {
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            if req.method() == axum::http::Method::GET
                && path.contains("/blobs/sha256:")
                && blobs.fetch_add(1, Ordering::SeqCst) + 1 == stall_at
            {
                let _ = tx.send(());
                std::future::pending::<()>().await;
            }
            let mut rb = client.request(req.method().clone(), format!("{upstream}{path}"));
            for (k, v) in req.headers() {
                if k != "host" {
                    rb = rb.header(k, v);
                }
            }
            let body = axum::body::to_bytes(req.into_body(), 64 << 20).await.unwrap();
            let r = rb.body(body).send().await.unwrap();
            let mut resp = axum::response::Response::builder().status(r.status().as_u16());
            for (k, v) in r.headers() {
                resp = resp.header(k, v);
            }
            resp.body(axum::body::Body::from(r.bytes().await.unwrap())).unwrap()
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    (host, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_copy_resumes_and_moves_only_what_is_missing() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let c = client();
    // an image of eight 1 MiB layers
    push_blob(&c, &a.url, "acme/big", b"{}").await;
    let mut layers = Vec::new();
    for i in 0..8 {
        let data = bytes(100 + i, 1 << 20);
        layers.push((push_blob(&c, &a.url, "acme/big", &data).await, data.len()));
    }
    let refs: Vec<(&str, usize)> = layers.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let m = manifest(("application/vnd.oci.image.config.v1+json", EMPTY, 2), &refs, None, None);
    let body = serde_json::to_vec(&m).unwrap();
    assert_eq!(put_manifest(&c, &a.url, "acme/big", "v1", OCI_MANIFEST, &body).await.status(), 201);

    // first attempt: one storage operation at a time, stalled at the 5th blob, then killed
    let (proxy, mut reached) = stalling_proxy(a.url.clone(), 5).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["copy", &format!("{proxy}/acme/big:v1"), &format!("{}/acme/big:v1", b.host()), "--concurrency", "1"])
        .env("BERTH_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    reached.recv().await.expect("the copy reached the 5th blob");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // the destination has the first blobs, and no manifest without its children
    let dst = RemoteRegistry::new(&b.host(), RemoteOptions::default()).unwrap().repository("acme/big").unwrap();
    assert!(dst.resolve("v1").await.is_err());
    let mut present = 0u64;
    let mut present_count = 0;
    for (d, size) in &layers {
        let digest: berth::oci::Digest = d.parse().unwrap();
        let desc = oci_spec::image::Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar".into(),
            *size as u64,
            digest.to_oci(),
        );
        if dst.exists(&desc).await.unwrap() {
            present += *size as u64;
            present_count += 1;
        }
    }
    assert!(present_count >= 3, "blobs before the stall arrived ({present_count})");
    assert!(present_count < 8);

    // resume straight from the source: only the missing layers (and config) and the manifest move
    let config_present =
        c.head(format!("{}/v2/acme/big/blobs/{EMPTY}", b.url)).send().await.unwrap().status().is_success();
    let r = copy_ok(format!("{}/acme/big:v1", a.host()), format!("{}/acme/big:v1", b.host())).await;
    let total: u64 = layers.iter().map(|(_, s)| *s as u64).sum();
    let config_bytes = if config_present { 0 } else { 2 };
    assert_eq!(
        r["report"]["bytes_copied"].as_u64().unwrap(),
        total - present + config_bytes + body.len() as u64,
        "{r}"
    );
    let missing_blobs = (8 - present_count) + usize::from(!config_present);
    assert_eq!(r["report"]["blobs_copied"].as_u64().unwrap() as usize, missing_blobs, "{r}");
    assert_eq!(r["report"]["manifests_copied"], 1);
    let got = c.get(format!("{}/v2/acme/big/manifests/v1", b.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&got), sha256(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_within_one_registry_mount_blobs_instead_of_moving_them() {
    let a = TestServer::start().await;
    let (img, _) = push_plugin(&a.url, "acme/src").await;
    let r = copy_ok(format!("{}/acme/src:v1", a.host()), format!("{}/acme/dst:v1", a.host())).await;
    let report = &r["report"];
    // 6 blobs: the image's config (shared empty) and layer, 4 referrer payloads… all mounted
    assert_eq!(report["blobs_mounted"], report["blobs_copied"], "{r}");
    assert!(report["blobs_mounted"].as_u64().unwrap() >= 5, "{r}");
    // only manifests travelled
    let manifest_bytes = report["bytes_copied"].as_u64().unwrap();
    assert!(manifest_bytes < 5 * 1024, "{r}");
    assert_eq!(discover(format!("{}/acme/dst:v1", a.host())).await["digest"], img.as_str());
    let layer = sha256(&bytes(42, 300_000));
    let got = client().get(format!("{}/v2/acme/dst/blobs/{layer}", a.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&got), layer);
}
