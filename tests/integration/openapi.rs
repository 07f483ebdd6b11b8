//! The catalog API of a real `berth serve` against its OpenAPI document
//! (`schemas/catalog-api.v1.openapi.json`, served at `/api/openapi.json`): every documented
//! path is routed with exactly its documented methods, and every answer along an operator's and
//! a publisher's flow (Mode B) — successes and errors — has a documented status and media type
//! and matches the documented schema. Every operation is seen succeeding at least once.

use crate::common::*;
use berth::catalog::openapi::{Contract, DOCUMENT};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const ADMIN_PASSWORD: &str = "operator-password";
const DEV_PASSWORD: &str = "developer-password";

/// A server in Mode B with an operator account (`admin`) and another account (`dev`); the
/// first-party publisher `aisopsflow` signs with `<dir>/publisher.key`; `acme` and `acme2`
/// key pairs are made for a third-party publisher.
fn start(dir: &Path) -> BerthProcess {
    for who in ["publisher", "acme", "acme2"] {
        ok(&berth_in(dir, &["key", "generate", "--output-prefix", who]), "key generate");
    }
    let admin = berth::registry::auth::hash_password(ADMIN_PASSWORD).unwrap();
    let dev = berth::registry::auth::hash_password(DEV_PASSWORD).unwrap();
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"[auth]
anonymous_pull = true
[[auth.accounts]]
name = "admin"
password_hash = "{admin}"
namespaces = ["*"]
[[auth.accounts]]
name = "dev"
password_hash = "{dev}"
namespaces = ["dev"]

[catalog]
mode = "curated"
operators = ["admin"]
seed = "{seed}"

[verification]
settle_ms = 200
conformance = false
[verification.publishers]
aisopsflow = ["{key}"]
"#,
            seed = dir.join("no-seed.json").display(),
            key = dir.join("publisher.pub").display(),
        ),
    )
    .unwrap();
    BerthProcess::spawn(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
}

const ADMIN: Auth = Auth::Basic("admin", ADMIN_PASSWORD);
const DEV: Auth = Auth::Basic("dev", DEV_PASSWORD);

enum Body<'a> {
    None,
    Json(Value),
    /// Bytes without a Content-Type.
    Raw(&'a str),
    /// Bytes declared `application/json`.
    DeclaredJson(&'a str),
}

/// Calls the server and checks every answer against the document.
struct Api {
    c: reqwest::Client,
    url: String,
    contract: Contract,
    /// (method, template, status) of every answer seen.
    seen: BTreeSet<(String, String, u16)>,
}

impl Api {
    async fn send(&mut self, method: &str, path: &str, auth: Auth<'_>, body: Body<'_>) -> (u16, String, Vec<u8>) {
        let mut r = self.c.request(method.to_uppercase().parse().unwrap(), format!("{}{path}", self.url));
        r = match auth {
            Auth::None => r,
            Auth::Basic(user, password) => r.basic_auth(user, Some(password)),
            Auth::Bearer(token) => r.bearer_auth(token),
        };
        r = match body {
            Body::None => r,
            Body::Json(v) => r.json(&v),
            Body::Raw(s) => r.body(s.to_string()),
            Body::DeclaredJson(s) => r.header("content-type", "application/json").body(s.to_string()),
        };
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap().to_vec();
        (status, content_type.unwrap_or_default(), bytes)
    }

    /// Checks an answer against the document and records it.
    fn checked(&mut self, method: &str, path: &str, answer: &(u16, String, Vec<u8>)) {
        let (status, content_type, bytes) = answer;
        let ct = (!content_type.is_empty()).then_some(content_type.as_str());
        if let Err(e) = self.contract.check(method, path, *status, ct, bytes) {
            panic!("{e}");
        }
        let template = self.contract.template(path).unwrap();
        self.seen.insert((method.to_string(), template, *status));
    }

    /// One documented call: the answer must be documented; returns its status and JSON body.
    async fn call(&mut self, method: &str, path: &str, auth: Auth<'_>, body: Body<'_>) -> (u16, Value) {
        let answer = self.send(method, path, auth, body).await;
        self.checked(method, path, &answer);
        (answer.0, serde_json::from_slice(&answer.2).unwrap_or(Value::Null))
    }

    async fn get(&mut self, path: &str, auth: Auth<'_>) -> (u16, Value) {
        self.call("get", path, auth, Body::None).await
    }

    /// Expects `status` (and, for an error, `code`) from a documented call.
    async fn expect(
        &mut self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        body: Body<'_>,
        status: u16,
        code: Option<&str>,
    ) -> Value {
        let (s, b) = self.call(method, path, auth, body).await;
        assert_eq!(s, status, "{method} {path}: {b:#}");
        if let Some(code) = code {
            assert_eq!(b["error"]["code"], code, "{method} {path}: {b:#}");
        }
        b
    }

    /// Polls GET `path` until `done(body)` (bounded; a failure shows the last answer).
    async fn wait(&mut self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..600 {
            let (status, body) = self.get(path, Auth::None).await;
            if status == 200 && done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: gave up; last answer from {path}: {last:#}");
    }
}

fn api(server: &BerthProcess) -> Api {
    Api { c: client(), url: server.url.clone(), contract: Contract::new(), seen: BTreeSet::new() }
}

/// A concrete path for a template: placeholders that name nothing the server has.
fn concrete(template: &str) -> String {
    let zeros = format!("sha256:{}", "0".repeat(64));
    template
        .replace("{publisher}", "nobody")
        .replace("{name}", "nope")
        .replace("{digest}", &zeros)
        .replace("{tenant}", "t-probe")
        .replace("{id}", "nope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_with_its_methods_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let mut api = api(&server);
    let documented: BTreeSet<(String, String)> = api.contract.operations().into_iter().collect();
    let templates: BTreeSet<String> = documented.iter().map(|(_, t)| t.clone()).collect();
    for template in &templates {
        let path = concrete(template);
        for method in ["get", "put", "post", "delete", "patch"] {
            // Not JSON, no credentials: each handler answers as documented.
            let answer = api.send(method, &path, Auth::None, Body::Raw("{")).await;
            let (status, _, bytes) = &answer;
            if documented.contains(&(method.to_string(), template.clone())) {
                let missed = *status == 405 || (*status == 404 && bytes.is_empty());
                assert!(!missed, "{method} {path}: documented, but the server has no such route ({status})");
                api.checked(method, &path, &answer);
            } else {
                let body = String::from_utf8_lossy(bytes);
                assert_eq!(*status, 405, "{method} {path}: not documented, yet answered: {body}");
            }
        }
    }
    // A path that is not documented is not routed either.
    let (status, _, bytes) = api.send("get", "/api/v1/nothing", Auth::None, Body::None).await;
    assert_eq!((status, bytes.len()), (404, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_along_the_catalog_flows_match_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start(d);
    let mut api = api(&server);
    let host = server.url.trim_start_matches("http://").to_string();
    let acme_pem = std::fs::read_to_string(d.join("acme.pub")).unwrap();
    let acme2_pem = std::fs::read_to_string(d.join("acme2.pub")).unwrap();

    // The document itself.
    let (status, _, bytes) = api.send("get", "/api/openapi.json", Auth::None, Body::None).await;
    assert_eq!((status, bytes.as_slice()), (200, DOCUMENT.as_bytes()));
    api.expect("get", "/api/openapi.json", Auth::None, Body::None, 200, None).await;

    // A first-party plugin, published by the operator account in the background.
    let publish = {
        let (dir, host) = (d.to_path_buf(), host.clone());
        tokio::task::spawn_blocking(move || publish_as_admin(&dir, &host))
    };

    // Registration.
    let registration = |name: &str, key: &str| {
        json!({
            "name": name, "display_name": "Acme Tools",
            "contacts": {"support": {"email": "support@acme.example"}, "security": {"url": "https://acme.example/security"}},
            "keys": [key],
        })
    };
    let publishers = "/api/v1/publishers";
    for (body, code) in [
        (registration("Acme!", &acme_pem), "invalid_name"),
        (registration("acme", "not a key"), "invalid_key"),
        (json!({"name": "acme", "display_name": "Acme", "contacts": {}, "keys": []}), "invalid_key"),
        (json!({"name": "acme"}), "invalid_body"),
    ] {
        api.expect("post", publishers, Auth::None, Body::Json(body), 400, Some(code)).await;
    }
    api.expect("post", publishers, Auth::None, Body::Raw("not json"), 400, Some("invalid_body")).await;
    let mut bad_contact = registration("acme", &acme_pem);
    bad_contact["contacts"]["security"] = json!({"email": "not-an-email"});
    api.expect("post", publishers, Auth::None, Body::Json(bad_contact), 400, Some("invalid_registration")).await;
    let p = api.expect("post", publishers, Auth::None, Body::Json(registration("acme", &acme_pem)), 201, None).await;
    assert_eq!(p["state"], "pending");
    let again = Body::Json(registration("acme", &acme_pem));
    api.expect("post", publishers, Auth::None, again, 409, Some("conflict")).await;
    let first_party = Body::Json(registration("aisopsflow", &acme_pem));
    api.expect("post", publishers, Auth::None, first_party, 409, Some("conflict")).await;

    // Reading publishers: the public sees approved ones only; operators everything.
    let (_, list) = api.get(publishers, Auth::None).await;
    assert_eq!(list["publishers"], json!([]));
    let (_, list) = api.get(publishers, ADMIN).await;
    assert_eq!(list["publishers"][0]["name"], "acme");
    api.expect("get", publishers, Auth::Basic("admin", "wrong"), Body::None, 401, Some("unauthorized")).await;
    api.expect("get", "/api/v1/publishers/acme", Auth::None, Body::None, 404, Some("not_found")).await;
    api.expect("get", "/api/v1/publishers/acme", ADMIN, Body::None, 200, None).await;

    // Approval and push tokens.
    let approve = "/api/v1/publishers/acme/approve";
    api.expect("post", approve, Auth::None, Body::None, 401, Some("unauthorized")).await;
    api.expect("post", approve, DEV, Body::None, 403, Some("forbidden")).await;
    api.expect("post", "/api/v1/publishers/nobody/approve", ADMIN, Body::None, 404, Some("not_found")).await;
    let tokens = "/api/v1/publishers/acme/tokens";
    api.expect("post", tokens, ADMIN, Body::Json(json!({})), 409, Some("not_approved")).await;
    let approval = api.expect("post", approve, ADMIN, Body::None, 200, None).await;
    assert_eq!(approval["publisher"]["state"], "approved");
    api.expect("get", "/api/v1/publishers/acme", Auth::None, Body::None, 200, None).await;
    let (_, list) = api.get(publishers, Auth::None).await;
    assert_eq!(list["publishers"][0]["name"], "acme", "{list:#}");
    api.expect("post", "/api/v1/publishers/nobody/tokens", ADMIN, Body::None, 404, Some("not_found")).await;
    // A malformed optional body is an error naming what is wrong, in the error envelope.
    api.expect("post", tokens, ADMIN, Body::DeclaredJson("{"), 400, Some("invalid_body")).await;
    let refused =
        api.expect("post", tokens, ADMIN, Body::DeclaredJson(r#"{"unknown": 1}"#), 400, Some("invalid_body")).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("unknown"), "{refused:#}");
    let issued = api.expect("post", tokens, ADMIN, Body::Json(json!({"description": "ci"})), 201, None).await;
    let token = issued["token"].as_str().unwrap().to_string();
    let me = Auth::Bearer(&token);
    api.expect("post", tokens, me, Body::None, 201, None).await;
    let (_, listed) = api.get(tokens, me).await;
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 2);
    api.expect("get", "/api/v1/publishers/aisopsflow/tokens", me, Body::None, 403, Some("forbidden")).await;
    api.expect("get", tokens, Auth::Bearer("berth_pt_nope"), Body::None, 401, Some("unauthorized")).await;
    api.expect("get", "/api/v1/publishers/acme", me, Body::None, 200, None).await;

    // Keys: add, refuse twice, refuse garbage, revoke.
    let keys = "/api/v1/publishers/acme/keys";
    let added = api.expect("post", keys, me, Body::Json(json!({"public_key_pem": acme2_pem})), 201, None).await;
    assert!(added["record"].is_string(), "{added:#}");
    api.expect("post", keys, me, Body::Json(json!({"public_key_pem": acme2_pem})), 409, Some("conflict")).await;
    api.expect("post", keys, me, Body::Json(json!({"public_key_pem": "nope"})), 400, Some("invalid_key")).await;
    api.expect("post", keys, me, Body::Json(json!({"pem": "nope"})), 400, Some("invalid_body")).await;
    let key_id = added["key"]["id"].as_str().unwrap().to_string();
    let revoked = api.expect("delete", &format!("{keys}/{key_id}"), me, Body::None, 200, None).await;
    assert_eq!(revoked["key"]["status"], "revoked");
    api.expect("delete", &format!("{keys}/nope"), me, Body::None, 404, Some("not_found")).await;
    api.expect("get", "/api/v1/publishers/acme/submissions", me, Body::None, 200, None).await;

    // Tenants.
    api.expect("get", "/api/v1/tenants/T!/publishers", ADMIN, Body::None, 400, Some("invalid_name")).await;
    api.expect("get", "/api/v1/tenants/t1/publishers", DEV, Body::None, 403, Some("forbidden")).await;
    let opt = "/api/v1/tenants/t1/publishers/acme";
    let t = api.expect("put", opt, ADMIN, Body::None, 200, None).await;
    assert_eq!(t["publishers"], json!(["acme"]));
    api.expect("put", "/api/v1/tenants/t1/publishers/nobody", ADMIN, Body::None, 404, Some("not_found")).await;
    let t = api.expect("get", "/api/v1/tenants/t1/publishers", ADMIN, Body::None, 200, None).await;
    assert_eq!(t["first_party"], json!(["aisopsflow"]));
    api.expect("delete", opt, ADMIN, Body::None, 200, None).await;
    api.expect("delete", opt, ADMIN, Body::None, 404, Some("not_found")).await;

    // The published plugin: searchable once verified.
    let reference = publish.await.unwrap();
    let digest = reference.rsplit_once('@').unwrap().1.to_string();
    let found = api
        .wait("/api/v1/search?q=transform", "json-transform listed and verified", |b| {
            b["total"] == 1 && b["hits"][0]["version"]["verified"] == true
        })
        .await;
    assert_eq!(found["hits"][0]["version"]["digest"], digest);
    for query in ["", "?q=trnsform&all_versions=true", "?publisher=aisopsflow,acme&verified=true&limit=5", "?tenant=t1"]
    {
        api.expect("get", &format!("/api/v1/search{query}"), Auth::None, Body::None, 200, None).await;
    }
    for query in ["?limit=1000", "?bogus=1", "?verified=maybe", "?core=one"] {
        let path = format!("/api/v1/search{query}");
        api.expect("get", &path, Auth::None, Body::None, 400, Some("invalid_query")).await;
    }
    let plugin = "/api/v1/plugins/aisopsflow/json-transform";
    let page = api.expect("get", plugin, Auth::None, Body::None, 200, None).await;
    assert_eq!(page["latest"]["digest"], digest);
    api.expect("get", "/api/v1/plugins/aisopsflow/nope", Auth::None, Body::None, 404, Some("not_found")).await;
    let subs = api.expect("get", "/api/v1/publishers/aisopsflow/submissions", ADMIN, Body::None, 200, None).await;
    assert_eq!(subs["submissions"][0]["digest"], digest, "{subs:#}");

    // Reputation.
    let report = |event: &str| json!({"reference": reference, "event": event, "runner_id": "runner-1"});
    api.expect("post", "/api/v1/reports", Auth::None, Body::Json(report("install")), 202, None).await;
    api.expect("post", "/api/v1/reports", Auth::None, Body::Json(report("start")), 400, Some("invalid_report")).await;
    let unknown = json!({"reference": format!("{host}/aisopsflow/json-transform@sha256:{}", "1".repeat(64)),
                         "event": "install", "runner_id": "runner-1"});
    api.expect("post", "/api/v1/reports", Auth::None, Body::Json(unknown), 404, Some("not_found")).await;
    let big = "x".repeat(20 * 1024);
    api.expect("post", "/api/v1/reports", Auth::None, Body::Raw(&big), 413, Some("too_large")).await;
    let rep = api.expect("get", &format!("{plugin}/reputation"), Auth::None, Body::None, 200, None).await;
    assert_eq!(rep["versions"][0]["installs"], 1, "{rep:#}");
    let nope = "/api/v1/plugins/aisopsflow/nope/reputation";
    api.expect("get", nope, Auth::None, Body::None, 404, Some("not_found")).await;

    // Verification.
    let verification = format!("/api/v1/verifications/{digest}");
    let v = api.wait(&verification, "verification done", |b| b["latest"]["state"] == "done").await;
    assert!(v["last_result"].is_object(), "{v:#}");
    api.expect("get", &verification, Auth::None, Body::None, 200, None).await;
    api.expect("get", "/api/v1/verifications/sha256:xyz", Auth::None, Body::None, 400, Some("invalid_digest")).await;
    let never = format!("/api/v1/verifications/sha256:{}", "2".repeat(64));
    api.expect("get", &never, Auth::None, Body::None, 404, Some("not_found")).await;
    api.expect("post", &never, ADMIN, Body::None, 400, Some("repository_required")).await;
    let bad_repository = Body::Json(json!({"repository": "Not A Repository"}));
    api.expect("post", &never, ADMIN, bad_repository, 400, Some("invalid_repository")).await;
    api.expect("post", &verification, Auth::None, Body::None, 401, Some("unauthorized")).await;
    api.expect("post", &verification, ADMIN, Body::None, 202, None).await;
    let review = format!("{verification}/review");
    let maybe = Body::Json(json!({"decision": "maybe", "by": "admin"}));
    api.expect("post", &review, ADMIN, maybe, 400, Some("invalid_request")).await;
    let approve = Body::Json(json!({"decision": "approve", "by": "admin", "note": "looked at it"}));
    api.expect("post", &review, ADMIN, approve, 202, None).await;

    // Lifecycle.
    let lifecycle = "/api/v1/plugins/aisopsflow/json-transform/lifecycle";
    let change = |status: &str| json!({"digest": digest, "status": status, "reason": "superseded"});
    api.expect("post", lifecycle, Auth::None, Body::Json(change("deprecated")), 401, Some("unauthorized")).await;
    api.expect("post", lifecycle, me, Body::Json(change("deprecated")), 403, Some("forbidden")).await;
    api.expect("post", lifecycle, ADMIN, Body::Json(json!({"digest": digest})), 400, Some("invalid_body")).await;
    let bad_digest = Body::Json(json!({"digest": "sha256:xyz", "status": "deprecated", "reason": "x"}));
    api.expect("post", lifecycle, ADMIN, bad_digest, 400, Some("invalid_digest")).await;
    let no_reason = Body::Json(json!({"digest": digest, "status": "deprecated"}));
    api.expect("post", lifecycle, ADMIN, no_reason, 400, Some("invalid_status")).await;
    let missing = Body::Json(json!({"digest": format!("sha256:{}", "3".repeat(64)), "status": "active"}));
    api.expect("post", lifecycle, ADMIN, missing, 404, Some("not_found")).await;
    let changed = api.expect("post", lifecycle, ADMIN, Body::Json(change("deprecated")), 201, None).await;
    assert_eq!(changed["status"]["by"], "operator:admin");
    api.wait(plugin, "deprecated shows", |b| b["latest"]["lifecycle"] == "deprecated").await;

    // Revoking a token, rejecting the publisher.
    let id = issued["id"].as_str().unwrap();
    api.expect("delete", &format!("{tokens}/{id}"), ADMIN, Body::None, 200, None).await;
    api.expect("delete", &format!("{tokens}/nope"), ADMIN, Body::None, 404, Some("not_found")).await;
    api.expect("post", "/api/v1/publishers/nobody/reject", ADMIN, Body::None, 404, Some("not_found")).await;
    let rejected = api.expect("post", "/api/v1/publishers/acme/reject", ADMIN, Body::None, 200, None).await;
    assert_eq!(rejected["publisher"]["state"], "rejected");

    // The metrics and the web UI.
    api.expect("get", "/metrics", Auth::None, Body::None, 200, None).await;
    for page in ["/", "/?q=transform", "/plugins/aisopsflow/json-transform", "/ui/berth.css"] {
        api.expect("get", page, Auth::None, Body::None, 200, None).await;
    }
    api.expect("get", "/plugins/aisopsflow/nope", Auth::None, Body::None, 404, None).await;
    api.expect("get", "/?limit=1000", Auth::None, Body::None, 400, None).await;

    // Every operation was seen succeeding.
    let unseen: Vec<(String, String)> = api
        .contract
        .operations()
        .into_iter()
        .filter(|(m, t)| !api.seen.iter().any(|(sm, st, s)| sm == m && st == t && (200..300).contains(s)))
        .collect();
    assert!(unseen.is_empty(), "operations never seen succeeding: {unseen:?}");
}

/// `berth publish` of the first-party json-transform, signed with `<dir>/publisher.key`, as
/// the operator account; returns the reference by digest.
fn publish_as_admin(dir: &Path, host: &str) -> String {
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/plugins/json-transform");
    publish_as(dir, host, &plugin, "publisher", "admin", ADMIN_PASSWORD)
}
