//! The remote store against real registries: berth (referrers API, token auth) and
//! CNCF distribution 2.8 (no referrers API: the tag schema), plus retries and TLS.

use crate::common::*;
use berth::content::remote::{Credentials, RemoteOptions, RemoteRegistry, RemoteRepository};
use berth::content::{ContentError, Pusher, ReadOnlyStorage, TagResolver, descriptor_for, fetch_all};
use berth::content::{Deleter, PredecessorFinder, Reader};
use berth::oci::media;
use oci_spec::image::Descriptor;
use serde_json::json;

fn reader(data: &[u8]) -> Reader {
    Box::pin(std::io::Cursor::new(data.to_vec()))
}

fn repo(host: &str, name: &str, opts: RemoteOptions) -> RemoteRepository {
    RemoteRegistry::new(host, opts).unwrap().repository(name).unwrap()
}

/// Pushes an image (empty config, one layer) and `n` referrers of distinct artifact types.
async fn push_graph(r: &RemoteRepository, layer: &[u8], n: usize) -> (Descriptor, Vec<Descriptor>) {
    let empty = descriptor_for(media::OCI_EMPTY, b"{}");
    r.push(&empty, reader(b"{}")).await.unwrap();
    let l = descriptor_for("application/vnd.oci.image.layer.v1.tar", layer);
    r.push(&l, reader(layer)).await.unwrap();
    let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": empty.digest(), "size": 2}, "layers": [l]}))
    .unwrap();
    let img = descriptor_for(media::OCI_MANIFEST, &m);
    r.push(&img, reader(&m)).await.unwrap();
    r.tag(&img, "v1").await.unwrap();
    let mut refs = Vec::new();
    for i in 0..n {
        let payload = format!("referrer {i}");
        let p = descriptor_for("application/octet-stream", payload.as_bytes());
        r.push(&p, reader(payload.as_bytes())).await.unwrap();
        let rm = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "artifactType": format!("application/vnd.test.kind{i}"), "config": empty, "layers": [p], "subject": img}))
        .unwrap();
        let rd = descriptor_for(media::OCI_MANIFEST, &rm);
        r.push(&rd, reader(&rm)).await.unwrap();
        refs.push(rd);
    }
    (img, refs)
}

fn digests(v: &[Descriptor]) -> Vec<String> {
    let mut d: Vec<String> = v.iter().map(|d| d.digest().to_string()).collect();
    d.sort();
    d
}

#[tokio::test]
async fn remote_store_round_trip_on_berth_uses_the_referrers_api() {
    let s = TestServer::start().await;
    let r = repo(&s.host(), "acme/remote", RemoteOptions::default());
    let (img, refs) = push_graph(&r, b"berth layer", 3).await;
    assert_eq!(r.resolve("v1").await.unwrap().digest(), img.digest());
    let got = r.predecessors(&img).await.unwrap();
    assert_eq!(digests(&got), digests(&refs));
    let one =
        r.referrers(&img.digest().to_string().parse().unwrap(), Some("application/vnd.test.kind1")).await.unwrap();
    assert_eq!(digests(&one), digests(&refs[1..2]));
    // berth indexed them itself: no fallback tag was written
    let c = client();
    let tag = format!("{}-{}", "sha256", img.digest().to_string().trim_start_matches("sha256:"));
    assert_eq!(c.get(format!("{}/v2/acme/remote/manifests/{tag}", s.url)).send().await.unwrap().status(), 404);
    // blobs come back verified
    let l = descriptor_for("application/vnd.oci.image.layer.v1.tar", b"berth layer");
    assert_eq!(fetch_all(&r, &l).await.unwrap(), b"berth layer");
    assert!(r.exists(&l).await.unwrap());
    r.delete(&refs[0]).await.unwrap();
    assert_eq!(r.predecessors(&img).await.unwrap().len(), 2);
    assert!(matches!(r.resolve("nope").await.unwrap_err(), ContentError::NotFound(_)));
}

#[tokio::test]
async fn chunked_uploads_and_refused_content() {
    let s = TestServer::start().await;
    let r = repo(&s.host(), "acme/chunks", RemoteOptions { chunk_size: Some(1000), ..Default::default() });
    let data = bytes(9, 4500);
    let d = descriptor_for("application/octet-stream", &data);
    r.push(&d, reader(&data)).await.unwrap();
    assert_eq!(fetch_all(&r, &d).await.unwrap(), data);
    // content that does not match the descriptor is refused and stays invisible
    let other = descriptor_for("application/octet-stream", b"expected");
    assert!(r.push(&other, reader(b"received")).await.is_err());
    assert!(!r.exists(&other).await.unwrap());
}

#[tokio::test]
async fn distribution_without_referrers_api_gets_the_tag_schema() {
    let dist = Distribution::start();
    let r = repo(&dist.host, "acme/fallback", RemoteOptions::default());
    let (img, refs) = push_graph(&r, b"dist layer", 3).await;
    let got = r.predecessors(&img).await.unwrap();
    assert_eq!(digests(&got), digests(&refs));
    assert!(got.iter().all(|d| d.artifact_type().is_some()));
    // the fallback tag holds an image index listing all three
    let tag = format!("sha256-{}", img.digest().to_string().trim_start_matches("sha256:"));
    let c = client();
    let resp = c
        .get(format!("{}/v2/acme/fallback/manifests/{tag}", dist.url))
        .header("accept", media::OCI_INDEX)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["mediaType"], media::OCI_INDEX);
    assert_eq!(v["manifests"].as_array().unwrap().len(), 3);
    // pushing the same referrer again does not duplicate it
    let again = fetch_all(&r, &refs[0]).await.unwrap();
    let fresh = repo(&dist.host, "acme/fallback", RemoteOptions::default());
    fresh.push(&refs[0], reader(&again)).await.unwrap();
    assert_eq!(fresh.predecessors(&img).await.unwrap().len(), 3);
    // filtering happens client-side
    let only =
        fresh.referrers(&img.digest().to_string().parse().unwrap(), Some("application/vnd.test.kind2")).await.unwrap();
    assert_eq!(digests(&only), digests(&refs[2..3]));
}

#[tokio::test]
async fn a_fallback_tag_pointing_at_the_subject_is_refused() {
    let dist = Distribution::start();
    let r = repo(&dist.host, "acme/evil", RemoteOptions::default());
    let (img, _) = push_graph(&r, b"evil", 0).await;
    let tag = format!("sha256-{}", img.digest().to_string().trim_start_matches("sha256:"));
    r.tag(&img, &tag).await.unwrap();
    let e = r.predecessors(&img).await.unwrap_err();
    assert!(e.to_string().contains("subject itself"), "{e}");
}

#[tokio::test]
async fn token_auth_with_credentials_from_a_docker_config_json() {
    use base64::Engine;
    let s = TestServer::with(|c| {
        c.auth.accounts = vec![berth::registry::auth::Account {
            name: "alice".into(),
            password_hash: berth::registry::auth::hash_password("s3cret").unwrap(),
            namespaces: vec!["acme/*".into()],
            push_only: false,
        }];
        c.auth.anonymous_pull = false;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(&cfg, json!({"auths": {s.host(): {"auth": auth}}}).to_string()).unwrap();
    let opts = RemoteOptions { docker_config: Some(cfg.clone()), ..Default::default() };
    assert!(RemoteRegistry::new(&s.host(), opts.clone()).unwrap().has_credentials());
    let r = repo(&s.host(), "acme/private", opts.clone());
    let (img, refs) = push_graph(&r, b"private", 1).await;
    assert_eq!(r.predecessors(&img).await.unwrap().len(), refs.len());
    // outside the account's namespace: refused, and the error says so
    let other = repo(&s.host(), "other/private", opts);
    let e = other.push(&descriptor_for("application/octet-stream", b"x"), reader(b"x")).await.unwrap_err();
    assert!(matches!(e, ContentError::Unauthorized(_)), "{e}");
    // without credentials nothing is readable
    let nobody = dir.path().join("empty.json");
    std::fs::write(&nobody, "{}").unwrap();
    let anon = repo(&s.host(), "acme/private", RemoteOptions { docker_config: Some(nobody), ..Default::default() });
    let e = anon.resolve("v1").await.unwrap_err();
    assert!(matches!(e, ContentError::Unauthorized(_)), "{e}");
    // explicit credentials win
    let explicit = RemoteOptions {
        credentials: Some(Credentials { username: "alice".into(), password: "s3cret".into() }),
        ..Default::default()
    };
    assert_eq!(repo(&s.host(), "acme/private", explicit).resolve("v1").await.unwrap().digest(), img.digest());
}

#[tokio::test]
async fn throttled_and_failing_answers_are_retried_honouring_retry_after() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            use axum::response::IntoResponse;
            match h.fetch_add(1, Ordering::SeqCst) {
                0 => (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")]).into_response(),
                1 => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
                _ => ([("content-type", media::OCI_MANIFEST)], body.to_vec()).into_response(),
            }
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = l.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(l, app).await });
    let r =
        repo(&host, "x", RemoteOptions { backoff: Some(std::time::Duration::from_millis(1)), ..Default::default() });
    let d = r.resolve("v1").await.unwrap();
    assert_eq!(d.digest().to_string(), sha256(body));
    assert_eq!(hits.load(Ordering::SeqCst), 4, "429, 503, then HEAD and GET answered");
    // with retries exhausted the error names the status
    hits.store(0, Ordering::SeqCst);
    let r = repo(&host, "x", RemoteOptions { max_retries: Some(0), ..Default::default() });
    let e = r.resolve("v1").await.unwrap_err();
    assert!(e.to_string().contains("429"), "{e}");
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    require_tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(d).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=berth test CA",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    let dist = Distribution::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        d.join("srv.pem").display(),
        d.join("srv.key").display()
    ));
    let tls =
        |ca: Option<std::path::PathBuf>| RemoteOptions { plain_http: Some(false), ca_file: ca, ..Default::default() };
    // without the CA the certificate is not trusted
    let untrusted = repo(&dist.host, "acme/tls", RemoteOptions { max_retries: Some(0), ..tls(None) });
    assert!(untrusted.resolve("v1").await.is_err());
    let r = repo(&dist.host, "acme/tls", tls(Some(d.join("ca.pem"))));
    let (img, _) = push_graph(&r, b"over tls", 1).await;
    assert_eq!(r.resolve("v1").await.unwrap().digest(), img.digest());
}
