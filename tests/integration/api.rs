//! The team's conformance tests: every distribution-spec 1.1 endpoint, positive and
//! negative, against the real server over HTTP.

use crate::common::*;
use serde_json::{Value, json};

const REPO: &str = "acme/plugin";

#[tokio::test]
async fn base_endpoint_answers_200_with_api_version() {
    let s = TestServer::start().await;
    let r = client().get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-distribution-api-version"], "registry/2.0");
}

#[tokio::test]
async fn monolithic_push_then_get_and_head() {
    let s = TestServer::start().await;
    let c = client();
    let data = bytes(1, 100_000);
    let d = push_blob(&c, &s.url, REPO, &data).await;
    let r = c.get(format!("{}/v2/{REPO}/blobs/{d}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), data.as_slice());
    let r = c.head(format!("{}/v2/{REPO}/blobs/{d}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100000");
}

#[tokio::test]
async fn monolithic_push_with_wrong_digest_is_digest_invalid_and_leaves_nothing() {
    let s = TestServer::start().await;
    let c = client();
    let wrong = sha256(b"something else");
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/?digest={wrong}", s.url)).body("hello").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c.head(format!("{}/v2/{REPO}/blobs/{wrong}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.head(format!("{}/v2/{REPO}/blobs/{}", s.url, sha256(b"hello"))).send().await.unwrap();
    assert_eq!(r.status(), 404, "mismatched content must not become visible under its real digest");
    assert_eq!(std::fs::read_dir(s.data_dir().join("uploads")).unwrap().count(), 0);
}

#[tokio::test]
async fn post_then_put_upload() {
    let s = TestServer::start().await;
    let c = client();
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(r.headers().contains_key("docker-upload-uuid"));
    assert_eq!(r.headers()["range"], "0-0");
    let data = bytes(2, 5000);
    let d = sha256(&data);
    let r = c.put(format!("{}{loc}?digest={d}", s.url)).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], format!("/v2/{REPO}/blobs/{d}").as_str());
    let got = c.get(format!("{}/v2/{REPO}/blobs/{d}", s.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let s = TestServer::start().await;
    let c = client();
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/", s.url)).send().await.unwrap();
    let loc = format!("{}{}", s.url, r.headers()["location"].to_str().unwrap());
    let data = bytes(3, 3000);
    let r = c
        .patch(&loc)
        .header("content-range", "0-999")
        .header("content-type", "application/octet-stream")
        .body(data[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-999");
    // status
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-999");
    // a chunk that skips ahead is refused with 416 and changes nothing
    let r = c.patch(&loc).header("content-range", "2000-2999").body(data[2000..].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_INVALID");
    // so is one that overlaps what was received
    let r = c.patch(&loc).header("content-range", "500-1499").body(data[500..1500].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 416);
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.headers()["range"], "0-999");
    // the right next chunk, then the last one with the PUT
    let r = c.patch(&loc).header("content-range", "1000-1999").body(data[1000..2000].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let d = sha256(&data);
    let r = c
        .put(format!("{loc}?digest={d}"))
        .header("content-range", "2000-2999")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c.get(format!("{}/v2/{REPO}/blobs/{d}", s.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
    // the session is gone once committed
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn chunked_upload_without_content_range_appends() {
    let s = TestServer::start().await;
    let c = client();
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/", s.url)).send().await.unwrap();
    let loc = format!("{}{}", s.url, r.headers()["location"].to_str().unwrap());
    let data = bytes(4, 2048);
    for part in data.chunks(512) {
        let r = c.patch(&loc).body(part.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    let r = c.put(format!("{loc}?digest={}", sha256(&data))).send().await.unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn sha512_blobs_are_accepted() {
    let s = TestServer::start().await;
    let c = client();
    let data = bytes(5, 4096);
    let d = berth::oci::Digest::of(berth::oci::Algorithm::Sha512, &data).to_string();
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/?digest={d}", s.url)).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let got = c.get(format!("{}/v2/{REPO}/blobs/{d}", s.url)).send().await.unwrap();
    assert_eq!(got.headers()["docker-content-digest"], d.as_str());
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn put_without_digest_and_cancel_and_unknown_upload() {
    let s = TestServer::start().await;
    let c = client();
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/", s.url)).send().await.unwrap();
    let loc = format!("{}{}", s.url, r.headers()["location"].to_str().unwrap());
    let r = c.put(&loc).body("x").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c.delete(&loc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    let r = c.delete(&loc).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // an id that is not ours never reaches the filesystem
    let r = c.get(format!("{}/v2/{REPO}/blobs/uploads/..%2F..%2Fetc", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // an upload belongs to its repository
    let r = c.post(format!("{}/v2/{REPO}/blobs/uploads/", s.url)).send().await.unwrap();
    let id = r.headers()["docker-upload-uuid"].to_str().unwrap().to_string();
    let r = c.get(format!("{}/v2/other/repo/blobs/uploads/{id}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn blob_range_requests() {
    let s = TestServer::start().await;
    let c = client();
    let data = bytes(6, 1000);
    let d = push_blob(&c, &s.url, REPO, &data).await;
    let url = format!("{}/v2/{REPO}/blobs/{d}", s.url);
    let r = c.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);
    let r = c.get(&url).header("range", "bytes=990-").send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[990..]);
    let r = c.get(&url).header("range", "bytes=-5").send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[995..]);
    let r = c.get(&url).header("range", "bytes=1000-1001").send().await.unwrap();
    assert_eq!(r.status(), 416);
}

#[tokio::test]
async fn unknown_blob_and_bad_digest() {
    let s = TestServer::start().await;
    let c = client();
    push_blob(&c, &s.url, REPO, b"x").await;
    let r = c.get(format!("{}/v2/{REPO}/blobs/{}", s.url, sha256(b"nope"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
    let r = c.get(format!("{}/v2/{REPO}/blobs/sha256:XYZ", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = c.get(format!("{}/v2/{REPO}/blobs/md5:{}", s.url, "0".repeat(32))).send().await.unwrap();
    assert_eq!(r.status(), 400);
    // unknown repository
    let r = c.get(format!("{}/v2/nobody/here/blobs/{}", s.url, sha256(b"x"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
    // a blob of one repository is not visible in another
    let r = c.get(format!("{}/v2/other/repo/blobs/{}", s.url, sha256(b"x"))).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn bad_repository_names_are_name_invalid() {
    let s = TestServer::start().await;
    let c = client();
    for name in ["Upper/case", "a__b___c", "-lead", "a/.hidden", "trailing-"] {
        let r = c.post(format!("{}/v2/{name}/blobs/uploads/", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
        assert_eq!(error_code(r).await, "NAME_INVALID", "{name}");
    }
    let long = "a".repeat(256);
    let r = c.get(format!("{}/v2/{long}/tags/list", s.url)).send().await.unwrap();
    assert_eq!(error_code(r).await, "NAME_INVALID");
    // `..` is never a path component
    let r = c.get(format!("{}/v2/a/%2E%2E/b/tags/list", s.url)).send().await.unwrap();
    assert_ne!(r.status(), 200);
}

#[tokio::test]
async fn cross_repository_mount() {
    let s = TestServer::start().await;
    let c = client();
    let d = push_blob(&c, &s.url, "src/repo", b"mount me").await;
    let r = c.post(format!("{}/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], format!("/v2/dst/repo/blobs/{d}").as_str());
    let got = c.get(format!("{}/v2/dst/repo/blobs/{d}", s.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.as_ref(), b"mount me");
    // not mountable: falls back to an upload session
    let missing = sha256(b"absent");
    let r = c.post(format!("{}/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers()["location"].to_str().unwrap().contains("/blobs/uploads/"));
}

#[tokio::test]
async fn manifest_push_pull_by_tag_and_digest() {
    let s = TestServer::start().await;
    let c = client();
    let (d, size) = push_image(&c, &s.url, REPO, "v1", b"layer").await;
    for reference in ["v1", d.as_str()] {
        let r = c
            .get(format!("{}/v2/{REPO}/manifests/{reference}", s.url))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], d.as_str());
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), size);
        assert_eq!(sha256(&body), d);
        let r = c.head(format!("{}/v2/{REPO}/manifests/{reference}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], size.to_string().as_str());
    }
    let r = c.get(format!("{}/v2/{REPO}/manifests/nope", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = c.get(format!("{}/v2/nobody/manifests/v1", s.url)).send().await.unwrap();
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn manifest_content_negotiation() {
    let s = TestServer::start().await;
    let c = client();
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    push_blob(&c, &s.url, REPO, b"{}").await;
    let l = push_blob(&c, &s.url, REPO, b"docker layer").await;
    let m = json!({
        "schemaVersion": 2, "mediaType": docker,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": EMPTY, "size": 2},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": l, "size": 12}]
    });
    let body = serde_json::to_vec(&m).unwrap();
    assert_eq!(put_manifest(&c, &s.url, REPO, "docker", docker, &body).await.status(), 201);
    let list = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": docker, "digest": sha256(&body), "size": body.len(), "platform": {"architecture": "amd64", "os": "linux"}}]
    });
    let list_body = serde_json::to_vec(&list).unwrap();
    assert_eq!(
        put_manifest(&c, &s.url, REPO, "list", "application/vnd.docker.distribution.manifest.list.v2+json", &list_body)
            .await
            .status(),
        201
    );
    let url = format!("{}/v2/{REPO}/manifests/docker", s.url);
    let r = c.get(&url).header("accept", docker).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], docker);
    // a client that only takes OCI manifests is not handed a Docker one
    let r = c.get(&url).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // several Accept values, and wildcards
    let r = c.get(&url).header("accept", format!("{OCI_MANIFEST}, {docker}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(&url).header("accept", "*/*").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/v2/{REPO}/manifests/list", s.url))
        .header("accept", "application/vnd.docker.distribution.manifest.list.v2+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/vnd.docker.distribution.manifest.list.v2+json");
}

#[tokio::test]
async fn oci_index_requires_its_manifests() {
    let s = TestServer::start().await;
    let c = client();
    let (d, size) = push_image(&c, &s.url, REPO, "amd64", b"l1").await;
    let index = |digest: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": {"architecture": "amd64", "os": "linux"}}]
        }))
        .unwrap()
    };
    let r = put_manifest(&c, &s.url, REPO, "idx", OCI_INDEX, &index(&d)).await;
    assert_eq!(r.status(), 201);
    let r = put_manifest(&c, &s.url, REPO, "bad", OCI_INDEX, &index(&sha256(b"missing"))).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn manifest_push_negative_cases() {
    let s = TestServer::start().await;
    let c = client();
    push_blob(&c, &s.url, REPO, b"{}").await;
    // unknown layer
    let m = manifest(("application/vnd.oci.image.config.v1+json", EMPTY, 2), &[(&sha256(b"missing"), 7)], None, None);
    let r = put_manifest(&c, &s.url, REPO, "t", OCI_MANIFEST, &serde_json::to_vec(&m).unwrap()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    // not JSON
    let r = put_manifest(&c, &s.url, REPO, "t", OCI_MANIFEST, b"not json").await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // missing config, with the field named
    let r = put_manifest(&c, &s.url, REPO, "t", OCI_MANIFEST, br#"{"schemaVersion":2,"layers":[]}"#).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("config"), "{v}");
    // digest reference that does not match the body
    let good = manifest(("application/vnd.oci.image.config.v1+json", EMPTY, 2), &[], None, None);
    let body = serde_json::to_vec(&good).unwrap();
    let r = put_manifest(&c, &s.url, REPO, &sha256(b"other"), OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    // invalid tag
    let r = put_manifest(&c, &s.url, REPO, "-bad", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // Content-Type contradicting mediaType
    let r = put_manifest(&c, &s.url, REPO, "t", OCI_INDEX, &body).await;
    assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    // oversized (4 MiB limit)
    let mut big = good.clone();
    big["annotations"] = json!({"pad": "x".repeat(4 * 1024 * 1024)});
    let r = put_manifest(&c, &s.url, REPO, "big", OCI_MANIFEST, &serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    // nothing of the above became visible
    let r = c.get(format!("{}/v2/{REPO}/tags/list", s.url)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!([]));
}

#[tokio::test]
async fn manifest_with_absent_subject_is_accepted_with_oci_subject_header() {
    let s = TestServer::start().await;
    let c = client();
    push_blob(&c, &s.url, REPO, b"{}").await;
    let subject = sha256(b"not pushed yet");
    let m = manifest(
        (berth::oci::media::OCI_EMPTY, EMPTY, 2),
        &[],
        Some("application/vnd.example.sig"),
        Some((&subject, 14)),
    );
    let body = serde_json::to_vec(&m).unwrap();
    let r = put_manifest(&c, &s.url, REPO, &sha256(&body), OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["oci-subject"], subject.as_str());
    let v: Value =
        c.get(format!("{}/v2/{REPO}/referrers/{subject}", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], sha256(&body));
}

#[tokio::test]
async fn referrers_api_lists_filters_and_carries_annotations() {
    let s = TestServer::start().await;
    let c = client();
    let (img, size) = push_image(&c, &s.url, REPO, "v1", b"img").await;
    let sbom = push_referrer(&c, &s.url, REPO, "application/vnd.cyclonedx+json", (&img, size), b"sbom").await;
    let sig =
        push_referrer(&c, &s.url, REPO, "application/vnd.dev.sigstore.bundle.v0.3+json", (&img, size), b"sig").await;
    // one with annotations
    push_blob(&c, &s.url, REPO, b"{}").await;
    let mut m = manifest(
        (berth::oci::media::OCI_EMPTY, EMPTY, 2),
        &[],
        Some("application/vnd.aisopsflow.plugin.manifest.v1+json"),
        Some((&img, size)),
    );
    m["annotations"] = json!({"org.opencontainers.image.created": "2026-11-25T00:00:00Z"});
    let body = serde_json::to_vec(&m).unwrap();
    let pm = sha256(&body);
    assert_eq!(put_manifest(&c, &s.url, REPO, &pm, OCI_MANIFEST, &body).await.status(), 201);

    let r = c.get(format!("{}/v2/{REPO}/referrers/{img}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert!(!r.headers().contains_key("oci-filters-applied"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let by_digest = |d: &str| list.iter().find(|x| x["digest"] == d).unwrap_or_else(|| panic!("{d} missing")).clone();
    assert_eq!(by_digest(&sbom)["artifactType"], "application/vnd.cyclonedx+json");
    assert_eq!(by_digest(&sig)["artifactType"], "application/vnd.dev.sigstore.bundle.v0.3+json");
    assert_eq!(by_digest(&pm)["annotations"]["org.opencontainers.image.created"], "2026-11-25T00:00:00Z");
    assert_eq!(by_digest(&pm)["size"], body.len());
    assert_eq!(by_digest(&pm)["mediaType"], OCI_MANIFEST);

    let r = c
        .get(format!("{}/v2/{REPO}/referrers/{img}?artifactType=application/vnd.cyclonedx%2Bjson", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], sbom);

    // unknown subject: an empty index, never 404
    let r = c.get(format!("{}/v2/{REPO}/referrers/{}", s.url, sha256(b"?"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));
    // bad digest: 400
    let r = c.get(format!("{}/v2/{REPO}/referrers/sha256:zz", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // deleting a referrer removes it from the list
    let r = c.delete(format!("{}/v2/{REPO}/manifests/{sig}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = c.get(format!("{}/v2/{REPO}/referrers/{img}", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn referrers_index_rebuilds_from_the_store() {
    let s = TestServer::start().await;
    let c = client();
    let (img, size) = push_image(&c, &s.url, REPO, "v1", b"img").await;
    let a = push_referrer(&c, &s.url, REPO, "application/vnd.a", (&img, size), b"a").await;
    let b = push_referrer(&c, &s.url, REPO, "application/vnd.b", (&img, size), b"b").await;
    std::fs::remove_dir_all(s.data_dir().join("repositories").join(REPO).join("_referrers")).unwrap();
    let v: Value = c.get(format!("{}/v2/{REPO}/referrers/{img}", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));
    let store = s.registry.store.clone();
    let n = tokio::task::spawn_blocking(move || store.rebuild_referrers()).await.unwrap().unwrap();
    assert_eq!(n, 2);
    let v: Value = c.get(format!("{}/v2/{REPO}/referrers/{img}", s.url)).send().await.unwrap().json().await.unwrap();
    let mut got: Vec<String> =
        v["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn tags_list_paginates_with_link() {
    let s = TestServer::start().await;
    let c = client();
    for t in ["c", "a", "e", "b", "d"] {
        push_image(&c, &s.url, REPO, t, b"same").await;
    }
    let r = c.get(format!("{}/v2/{REPO}/tags/list", s.url)).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"name": REPO, "tags": ["a", "b", "c", "d", "e"]}));
    let r = c.get(format!("{}/v2/{REPO}/tags/list?n=2", s.url)).send().await.unwrap();
    assert_eq!(r.headers()["link"], format!("</v2/{REPO}/tags/list?n=2&last=b>; rel=\"next\"").as_str());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["tags"], json!(["a", "b"]));
    let r = c.get(format!("{}/v2/{REPO}/tags/list?n=2&last=b", s.url)).send().await.unwrap();
    assert!(r.headers().contains_key("link"));
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["c", "d"]));
    let r = c.get(format!("{}/v2/{REPO}/tags/list?n=2&last=d", s.url)).send().await.unwrap();
    assert!(!r.headers().contains_key("link"));
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["e"]));
    let r = c.get(format!("{}/v2/{REPO}/tags/list?n=0", s.url)).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = c.get(format!("{}/v2/unknown/repo/tags/list", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_paginates() {
    let s = TestServer::start().await;
    let c = client();
    for r in ["b/x", "a", "c/y/z", "a/b"] {
        push_blob(&c, &s.url, r, b"x").await;
    }
    let v: Value = c.get(format!("{}/v2/_catalog", s.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["repositories"], json!(["a", "a/b", "b/x", "c/y/z"]));
    let r = c.get(format!("{}/v2/_catalog?n=3", s.url)).send().await.unwrap();
    assert_eq!(r.headers()["link"], "</v2/_catalog?n=3&last=b/x>; rel=\"next\"");
    let r = c.get(format!("{}/v2/_catalog?n=3&last=b/x", s.url)).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["c/y/z"]));
}

#[tokio::test]
async fn deletes_of_manifests_tags_and_blobs() {
    let s = TestServer::start().await;
    let c = client();
    let (d, _) = push_image(&c, &s.url, REPO, "v1", b"del").await;
    let r = c.put(format!("{}/v2/{REPO}/manifests/v2", s.url)).header("content-type", OCI_MANIFEST);
    let body = c.get(format!("{}/v2/{REPO}/manifests/v1", s.url)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(r.body(body).send().await.unwrap().status(), 201);
    // delete by tag removes only the tag
    let r = c.delete(format!("{}/v2/{REPO}/manifests/v1", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(c.get(format!("{}/v2/{REPO}/manifests/v1", s.url)).send().await.unwrap().status(), 404);
    assert_eq!(c.get(format!("{}/v2/{REPO}/manifests/{d}", s.url)).send().await.unwrap().status(), 200);
    // delete by digest removes the manifest and the tags pointing at it
    let r = c.delete(format!("{}/v2/{REPO}/manifests/{d}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(c.get(format!("{}/v2/{REPO}/manifests/{d}", s.url)).send().await.unwrap().status(), 404);
    assert_eq!(c.get(format!("{}/v2/{REPO}/manifests/v2", s.url)).send().await.unwrap().status(), 404);
    let r = c.delete(format!("{}/v2/{REPO}/manifests/{d}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    // blobs
    let b = sha256(b"del");
    let r = c.delete(format!("{}/v2/{REPO}/blobs/{b}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(c.head(format!("{}/v2/{REPO}/blobs/{b}", s.url)).send().await.unwrap().status(), 404);
    let r = c.delete(format!("{}/v2/{REPO}/blobs/{b}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn unsupported_methods_and_unknown_paths() {
    let s = TestServer::start().await;
    let c = client();
    let r = c.post(format!("{}/v2/{REPO}/tags/list", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(error_code(r).await, "UNSUPPORTED");
    let r = c.get(format!("{}/v2/{REPO}/nothing/here", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
