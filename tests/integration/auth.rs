//! The Docker token flow, namespace-limited accounts, anonymous pull, and protected mode.

use crate::common::*;
use berth::registry::auth::{Account, hash_password};
use serde_json::Value;

fn account(name: &str, pw: &str, ns: &[&str]) -> Account {
    Account {
        name: name.into(),
        password_hash: hash_password(pw).unwrap(),
        namespaces: ns.iter().map(|s| s.to_string()).collect(),
        push_only: false,
    }
}

async fn token(c: &reqwest::Client, url: &str, user: &str, pw: &str, scope: &str) -> reqwest::Response {
    c.get(format!("{url}/token?service=berth&scope={scope}")).basic_auth(user, Some(pw)).send().await.unwrap()
}

#[tokio::test]
async fn push_needs_a_token_scoped_to_the_accounts_namespace() {
    let s = TestServer::with(|c| c.auth.accounts = vec![account("alice", "s3cret", &["acme/*"])]).await;
    let c = client();
    // anonymous push: a Bearer challenge naming realm, service and scope
    let r = c.post(format!("{}/v2/acme/tool/blobs/uploads/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/token\",service=\"berth\",scope=\"repository:acme/tool:pull,push\"",
            s.host()
        )
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");

    // wrong password
    let r = token(&c, &s.url, "alice", "nope", "repository:acme/tool:pull,push").await;
    assert_eq!(r.status(), 401);
    // right password: a token with what was asked and allowed
    let r = token(&c, &s.url, "alice", "s3cret", "repository:acme/tool:pull,push").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let t = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["access_token"], v["token"]);
    assert_eq!(v["expires_in"], 300);
    let d = sha256(b"authed");
    let r = c
        .post(format!("{}/v2/acme/tool/blobs/uploads/?digest={d}", s.url))
        .bearer_auth(&t)
        .body("authed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // the same token does not open another namespace, even if asked for
    let r = token(&c, &s.url, "alice", "s3cret", "repository:other/tool:pull,push").await;
    let other = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = c.post(format!("{}/v2/other/tool/blobs/uploads/", s.url)).bearer_auth(&other).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(error_code(r).await, "DENIED");
    // a forged token is refused
    let r = c.post(format!("{}/v2/acme/tool/blobs/uploads/", s.url)).bearer_auth(format!("{t}x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Basic credentials work directly too
    let r = c
        .post(format!("{}/v2/acme/tool/blobs/uploads/", s.url))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // anonymous pull is on by default
    let r = c.get(format!("{}/v2/acme/tool/blobs/{d}", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn token_endpoint_takes_oauth2_password_grant() {
    let s = TestServer::with(|c| c.auth.accounts = vec![account("bob", "pw", &["bob/*"])]).await;
    let c = client();
    let r = c
        .post(format!("{}/token", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=bob&password=pw&service=berth&scope=repository%3Abob%2Fx%3Apush")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_string();
    let r = c.post(format!("{}/v2/bob/x/blobs/uploads/", s.url)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn private_registry_challenges_every_read() {
    let s = TestServer::with(|c| {
        c.auth.accounts = vec![account("alice", "s3cret", &["acme/*"])];
        c.auth.anonymous_pull = false;
    })
    .await;
    let c = client();
    let r = c.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        format!("Bearer realm=\"http://{}/token\",service=\"berth\"", s.host()).as_str()
    );
    let r = c.get(format!("{}/v2/", s.url)).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{}/v2/", s.url)).basic_auth("alice", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // `docker login`: a token with no scope at all opens /v2/
    let r = c.get(format!("{}/token?service=berth", s.url)).basic_auth("alice", Some("s3cret")).send().await.unwrap();
    let bare = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = c.get(format!("{}/v2/", s.url)).bearer_auth(&bare).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(format!("{}/v2/_catalog", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("scope=\"registry:catalog:*\""));
    let t = token(&c, &s.url, "alice", "s3cret", "registry:catalog:*").await.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.get(format!("{}/v2/_catalog", s.url)).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // an anonymous token grants nothing here
    let r = c.get(format!("{}/token?service=berth&scope=repository:acme/tool:pull", s.url)).send().await.unwrap();
    let anon = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let r = c.get(format!("{}/v2/acme/tool/tags/list", s.url)).bearer_auth(&anon).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

/// Protected mode needs a non-loopback peer, which a test cannot have on 127.0.0.1:
/// drive the router directly with the peer address it would see.
#[tokio::test]
async fn protected_mode_refuses_pushes_from_the_network_without_accounts() {
    use axum::extract::connect_info::MockConnectInfo;
    use tower::ServiceExt;
    let s = TestServer::start().await;
    let push = || axum::http::Request::post("/v2/acme/tool/blobs/uploads/").body(axum::body::Body::empty()).unwrap();
    let remote: std::net::SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let app = berth::registry::router(s.registry.clone()).layer(MockConnectInfo(remote));
    let r = app.clone().oneshot(push()).await.unwrap();
    assert_eq!(r.status(), 403);
    let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("protected mode"));
    // pulls from the network are fine
    let r = app.oneshot(axum::http::Request::get("/v2/").body(axum::body::Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), 200);
    // loopback pushes are fine
    let local: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let app = berth::registry::router(s.registry.clone()).layer(MockConnectInfo(local));
    assert_eq!(app.oneshot(push()).await.unwrap().status(), 202);
}

#[test]
fn serve_refuses_a_network_address_without_accounts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen") && err.contains("protected_mode"), "{err}");
}
