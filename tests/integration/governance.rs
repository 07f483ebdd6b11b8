//! The publisher write path and lifecycle decisions against a real `berth serve`: register →
//! approve → signed publisher record in the registry → scoped push tokens → key rotation;
//! lifecycle as signed status attestations; Mode A and Mode B listing rules; tenant opt-in.

use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const ADMIN_PASSWORD: &str = "operator-password";

/// A server with one operator account (`admin`, every namespace) in `mode`.
fn start(dir: &Path, mode: &str) -> BerthProcess {
    for who in ["acme", "acme2"] {
        ok(&berth_in(dir, &["key", "generate", "--output-prefix", who]), "key generate");
    }
    let hash = berth::registry::auth::hash_password(ADMIN_PASSWORD).unwrap();
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"[auth]
anonymous_pull = true
[[auth.accounts]]
name = "admin"
password_hash = "{hash}"
namespaces = ["*"]

[catalog]
mode = "{mode}"
operators = ["admin"]

[verification]
settle_ms = 200
conformance = false
"#,
        ),
    )
    .unwrap();
    BerthProcess::spawn(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

/// `berth policy explain REF --json` for a third-party-allowed policy, trusting only the
/// server's catalog root key (no publisher key).
fn explain(dir: &Path, reference: &str) -> Value {
    std::fs::write(dir.join("policy.toml"), "mode = \"third-party\"\nrequire_approval = false\n").unwrap();
    let root = dir.join("data/catalog-root.pub");
    let out = berth_in(
        dir,
        &["policy", "explain", reference, "--policy", "policy.toml", "--root-key", root.to_str().unwrap(), "--json"],
    );
    // Exit status 1 is a refusal; the decision is on stdout either way.
    assert!(out.status.code().is_some_and(|c| c <= 1), "{}", String::from_utf8_lossy(&out.stderr));
    let decision: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["allowed"] == true, out.status.success(), "{decision:#}");
    decision
}

struct Api {
    c: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, auth: Auth<'_>, body: Option<Value>) -> (u16, Value) {
        let mut r = self.c.request(method, format!("{}{path}", self.url));
        r = match auth {
            Auth::None => r,
            Auth::Admin => r.basic_auth("admin", Some(ADMIN_PASSWORD)),
            Auth::Token(t) => r.bearer_auth(t),
        };
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, auth: Auth<'_>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, auth, None).await
    }

    async fn post(&self, path: &str, auth: Auth<'_>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, auth, Some(body)).await
    }

    /// Polls GET `path` until `done(body)` (bounded; a failure shows the last answer).
    async fn wait(&self, path: &str, auth: Auth<'_>, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..600 {
            let (status, body) = self.get(path, auth).await;
            if status == 200 && done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}: gave up; last answer from {path}: {last:#}");
    }

    /// Waits until the newest verification of `digest` finished.
    async fn verified_once(&self, digest: &str) {
        self.wait(&format!("/api/v1/verifications/{digest}"), Auth::None, "verification finished", |b| {
            b["latest"]["state"] == "done"
        })
        .await;
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Admin,
    Token(&'a str),
}

fn digest_of(reference: &str) -> String {
    reference.rsplit_once('@').unwrap().1.to_string()
}

fn registration(name: &str, key_pem: &str) -> Value {
    json!({
        "name": name,
        "display_name": "Acme Tools",
        "contacts": {"support": {"email": "support@acme.example"}, "security": {"url": "https://acme.example/security"}},
        "keys": [key_pem],
    })
}

/// Starts an upload in `repository` with Basic `user:password`: the registry's answer.
async fn try_push(api: &Api, repository: &str, user: &str, password: &str) -> u16 {
    api.c
        .post(format!("{}/v2/{repository}/blobs/uploads/", api.url))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curated_mode_registration_approval_tokens_keys_and_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start(d, "curated");
    let api = Api { c: client(), url: server.url.clone() };
    let host = server.url.trim_start_matches("http://").to_string();
    let acme_pem = std::fs::read_to_string(d.join("acme.pub")).unwrap();

    // Registration: every problem is named; then pending.
    let (s, b) = api.post("/api/v1/publishers", Auth::None, registration("Acme!", &acme_pem)).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().starts_with("name = \"Acme!\""), "{b}");
    let (s, b) = api.post("/api/v1/publishers", Auth::None, registration("acme", "not a key")).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("keys[0]"), "{b}");
    let mut bad_contact = registration("acme", &acme_pem);
    bad_contact["contacts"]["security"] = json!({"email": "not-an-email"});
    let (s, b) = api.post("/api/v1/publishers", Auth::None, bad_contact).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("/contacts/security/email"), "{b}");
    let (s, b) = api.post("/api/v1/publishers", Auth::None, registration("acme", &acme_pem)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["state"], "pending");
    let (s, _) = api.post("/api/v1/publishers", Auth::None, registration("acme", &acme_pem)).await;
    assert_eq!(s, 409);
    let (s, _) = api.post("/api/v1/publishers", Auth::None, registration("aisopsflow", &acme_pem)).await;
    assert_eq!(s, 409, "a first-party name cannot be registered");
    let (s, _) = api.post("/api/v1/publishers", Auth::None, registration("berth", &acme_pem)).await;
    assert_eq!(s, 409, "berth/* holds the records");
    // Pending publishers are not public; approving takes an operator; no tokens yet.
    assert_eq!(api.get("/api/v1/publishers/acme", Auth::None).await.0, 404);
    assert_eq!(api.post("/api/v1/publishers/acme/approve", Auth::None, json!({})).await.0, 401);
    assert_eq!(api.post("/api/v1/publishers/acme/tokens", Auth::Admin, json!({})).await.0, 409);

    // An unapproved publisher's plugin, pushed by the operator account, is never listed.
    let v1 = publish_as(d, &host, &third_party_plugin(d, "acme", "0.1.0"), "acme", "admin", ADMIN_PASSWORD);
    api.verified_once(&digest_of(&v1)).await;
    let (_, found) = api.get("/api/v1/search?publisher=acme", Auth::None).await;
    assert_eq!(found["total"], 0, "unapproved publisher listed: {found:#}");
    let (s, subs) = api.get("/api/v1/publishers/acme/submissions", Auth::Admin).await;
    assert_eq!(s, 200, "{subs}");
    assert_eq!(subs["submissions"][0]["digest"], digest_of(&v1));
    assert_eq!(subs["submissions"][0]["listed"], false);
    assert_eq!(subs["submissions"][0]["signed"], false, "no registered keys yet: {subs:#}");

    // Approval: a record signed by the catalog root key lands in the registry, the verifier
    // re-verifies the publisher's plugins with its keys, and Mode B lists the verified version.
    let (s, b) = api.post("/api/v1/publishers/acme/approve", Auth::Admin, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let record = b["record"].as_str().unwrap().to_string();
    let r = api
        .c
        .head(format!("{}/v2/berth/publishers/acme/manifests/latest", api.url))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), record);
    let listed = api
        .wait("/api/v1/search?publisher=acme", Auth::None, "acme listed once verified", |b| {
            b["total"] == 1 && b["hits"][0]["version"]["verified"] == true
        })
        .await;
    assert_eq!(listed["hits"][0]["version"]["digest"], digest_of(&v1));
    assert_eq!(listed["hits"][0]["version"]["official"], false);
    // The runner, trusting only the catalog root key, reaches acme's key through the record.
    let explained = explain(d, &v1);
    assert_eq!(explained["allowed"], true, "{explained:#}");
    assert_eq!(explained["signature_problems"], json!([]), "{explained:#}");

    // Tenants see first-party publishers plus those they opted in to.
    let (_, t) = api.get("/api/v1/search?publisher=acme&tenant=t1", Auth::None).await;
    assert_eq!(t["total"], 0, "t1 has not opted in: {t:#}");
    let (s, b) = api.call(reqwest::Method::PUT, "/api/v1/tenants/t1/publishers/acme", Auth::Admin, None).await;
    assert_eq!(s, 200, "{b}");
    let (_, t) = api.get("/api/v1/search?tenant=t1", Auth::None).await;
    assert_eq!(t["total"], 1, "{t:#}");
    let (_, t) = api.get("/api/v1/search?tenant=t2", Auth::None).await;
    assert_eq!(t["total"], 0, "{t:#}");

    // A push token: the registry takes it for acme/* only.
    let (s, tok) = api.post("/api/v1/publishers/acme/tokens", Auth::Admin, json!({"description": "ci"})).await;
    assert_eq!(s, 201, "{tok}");
    let token = tok["token"].as_str().unwrap().to_string();
    assert_eq!(try_push(&api, "acme/another-plugin", "acme", &token).await, 202);
    for outside in ["aisopsflow/json-transform", "beta/tool", "berth/publishers/acme"] {
        let s = try_push(&api, outside, "acme", &token).await;
        assert!(s == 401 || s == 403, "{outside}: {s}");
    }
    assert_eq!(try_push(&api, "acme/another-plugin", "beta", &token).await, 401, "the token names its publisher");
    // The token endpoint grants nothing outside the namespace either.
    let t: Value = api
        .c
        .get(format!("{}/token?service=berth&scope=repository:beta/tool:pull,push", api.url))
        .basic_auth("acme", Some(&token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = t["token"].as_str().unwrap();
    let r = api.c.post(format!("{}/v2/beta/tool/blobs/uploads/", api.url)).bearer_auth(jwt).send().await.unwrap();
    assert!(r.status() == 401 || r.status() == 403, "{}", r.status());

    // Lifecycle: a publisher cannot touch another publisher's plugins nor mark its own
    // insecure; it can deprecate its own.
    let body = |status: &str| json!({"digest": digest_of(&v1), "status": status, "reason": "superseded"});
    let (s, b) =
        api.post("/api/v1/plugins/aisopsflow/json-transform/lifecycle", Auth::Token(&token), body("deprecated")).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = api.post("/api/v1/plugins/acme/json-transform/lifecycle", Auth::Token(&token), body("insecure")).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = api.post("/api/v1/plugins/acme/json-transform/lifecycle", Auth::None, body("deprecated")).await;
    assert_eq!(s, 401, "{b}");
    let (s, b) = api
        .post(
            "/api/v1/plugins/acme/json-transform/lifecycle",
            Auth::Token(&token),
            json!({"digest": digest_of(&v1), "status": "deprecated", "reason": "use 0.2", "replacement": "json-transform@0.2.0"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["status"]["by"], "publisher:acme");
    let dep = api
        .wait("/api/v1/search?publisher=acme", Auth::None, "deprecated shows", |b| {
            b["hits"][0]["version"]["lifecycle"] == "deprecated"
        })
        .await;
    assert_eq!(dep["hits"][0]["version"]["replacement"], "json-transform@0.2.0");

    // A rebuild from the registry alone over HTTP (as a mirror would: records, reports and
    // status are all in it), trusting only the root and verifier keys, lists the same.
    let rebuilt = d.join("rebuilt-index");
    let data = d.join("data");
    let out = berth_in(
        d,
        &[
            "index",
            "rebuild",
            "--registry",
            &host,
            "--mode",
            "curated",
            "--root-key",
            data.join("catalog-root.pub").to_str().unwrap(),
            "--verifier-key",
            data.join("verifier.pub").to_str().unwrap(),
            "--index",
            rebuilt.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8(ok(&out, "index rebuild")).unwrap();
    assert!(text.contains("indexed 1 plugin versions"), "{text}");
    let fresh = berth::catalog::index::CatalogIndex::open(&rebuilt).unwrap();
    let q = berth::catalog::index::SearchQuery { latest_only: false, ..Default::default() };
    let rebuilt_hits: Vec<Value> =
        fresh.search(&q).unwrap().hits.iter().map(|h| serde_json::to_value(&h.version).unwrap()).collect();
    let (_, live) = api.get("/api/v1/search?all_versions=true", Auth::None).await;
    let live_hits: Vec<Value> = live["hits"].as_array().unwrap().iter().map(|h| h["version"].clone()).collect();
    assert_eq!(rebuilt_hits, live_hits, "rebuilt from the registry vs kept by the server");

    // Key rotation: add acme2's key, revoke the first; each pushes a new record revision.
    let acme2_pem = std::fs::read_to_string(d.join("acme2.pub")).unwrap();
    let (s, b) =
        api.post("/api/v1/publishers/acme/keys", Auth::Token(&token), json!({"public_key_pem": acme2_pem})).await;
    assert_eq!(s, 201, "{b}");
    let (_, me) = api.get("/api/v1/publishers/acme", Auth::Token(&token)).await;
    let first_key = me["keys"][0]["id"].as_str().unwrap().to_string();
    let (s, b) = api
        .call(reqwest::Method::DELETE, &format!("/api/v1/publishers/acme/keys/{first_key}"), Auth::Token(&token), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["key"]["status"], "revoked");
    assert_ne!(b["record"], json!(record), "a new record revision");
    // Signatures by the revoked key no longer count; a version signed with the new key does.
    api.wait("/api/v1/publishers/acme/submissions", Auth::Admin, "old signature untrusted", |b| {
        b["submissions"][0]["signed"] == false
    })
    .await;
    let v2 = publish_as(d, &host, &third_party_plugin(d, "acme", "0.2.0"), "acme2", "acme", &token);
    let latest = api
        .wait("/api/v1/search?publisher=acme", Auth::None, "0.2.0 listed", |b| {
            b["hits"][0]["version"]["version"] == "0.2.0" && b["hits"][0]["version"]["verified"] == true
        })
        .await;
    assert_eq!(latest["hits"][0]["version"]["digest"], digest_of(&v2));

    // An operator removes 0.2.0: it leaves search results, and the publisher cannot undo it.
    let (s, b) = api
        .post(
            "/api/v1/plugins/acme/json-transform/lifecycle",
            Auth::Admin,
            json!({"digest": digest_of(&v2), "status": "removed", "reason": "malware report"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    api.wait("/api/v1/search?publisher=acme&all_versions=true", Auth::None, "removed leaves search", |b| {
        b["hits"].as_array().unwrap().iter().all(|h| h["version"]["digest"] != json!(digest_of(&v2)))
    })
    .await;
    // The publisher cannot delete the operator's decision: tokens push, they never delete.
    let status_digest = b["attestation"].as_str().unwrap().to_string();
    let r = api
        .c
        .delete(format!("{}/v2/acme/json-transform/manifests/{status_digest}", api.url))
        .basic_auth("acme", Some(&token))
        .send()
        .await
        .unwrap();
    assert!(r.status() == 401 || r.status() == 403, "a token deleted a lifecycle status: {}", r.status());
    // The runner refuses it from registry data alone: the status is signed by the root key.
    let explained = explain(d, &v2);
    assert_eq!(explained["allowed"], false, "{explained:#}");
    assert!(explained.to_string().contains("removed"), "{explained:#}");
    let (s, b) = api
        .post(
            "/api/v1/plugins/acme/json-transform/lifecycle",
            Auth::Token(&token),
            json!({"digest": digest_of(&v2), "status": "deprecated", "reason": "oops"}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("is removed"), "{b}");

    // A revoked token is dead at once, for the registry and the API.
    let (s, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/publishers/acme/tokens/{}", tok["id"].as_str().unwrap()),
            Auth::Admin,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(try_push(&api, "acme/another-plugin", "acme", &token).await, 401);
    assert_eq!(api.get("/api/v1/publishers/acme/submissions", Auth::Token(&token)).await.0, 401);

    // Rejecting the publisher withdraws its record: nothing of it stays listed.
    let (s, _) = api.post("/api/v1/publishers/acme/reject", Auth::Admin, json!({})).await;
    assert_eq!(s, 200);
    api.wait("/api/v1/search?publisher=acme&all_versions=true", Auth::None, "rejected publisher unlisted", |b| {
        b["total"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_mode_lists_no_third_party_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = start(d, "first-party");
    let api = Api { c: client(), url: server.url.clone() };
    let host = server.url.trim_start_matches("http://").to_string();
    let acme_pem = std::fs::read_to_string(d.join("acme.pub")).unwrap();

    let (s, b) = api.post("/api/v1/publishers", Auth::None, registration("acme", &acme_pem)).await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["error"]["code"], "registration_closed");

    let v1 = publish_as(d, &host, &third_party_plugin(d, "acme", "0.1.0"), "acme", "admin", ADMIN_PASSWORD);
    api.verified_once(&digest_of(&v1)).await;
    let (_, found) = api.get("/api/v1/search?q=json", Auth::None).await;
    assert!(
        found["hits"].as_array().unwrap().iter().all(|h| h["version"]["publisher"] != "acme"),
        "third-party listed in Mode A: {found:#}"
    );
    assert_eq!(api.get("/api/v1/plugins/acme/json-transform", Auth::None).await.0, 404);
}
