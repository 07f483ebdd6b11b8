//! Manifest pushes and deletes are published in-process and POSTed to webhooks in
//! distribution's notification format.

use crate::common::*;
use berth::registry::events::{EVENTS_MEDIA_TYPE, Endpoint, Envelope};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

#[tokio::test]
async fn pushes_and_deletes_are_published_in_process() {
    let s = TestServer::start().await;
    let mut rx = s.registry.events.subscribe();
    let c = client();
    let (img, size) = push_image(&c, &s.url, "acme/p", "v1", b"e").await;
    let e = rx.recv().await.unwrap();
    assert_eq!(e.action, "push");
    assert_eq!(e.target.repository, "acme/p");
    assert_eq!(e.target.digest, img);
    assert_eq!(e.target.size as usize, size);
    assert_eq!(e.target.tag.as_deref(), Some("v1"));
    assert_eq!(e.target.media_type, OCI_MANIFEST);
    assert!(e.request.addr.starts_with("127.0.0.1:"));
    let r =
        push_referrer(&c, &s.url, "acme/p", "application/vnd.aisopsflow.plugin.manifest.v1+json", (&img, size), b"pm")
            .await;
    let e = rx.recv().await.unwrap();
    assert_eq!(e.target.digest, r);
    assert_eq!(e.target.subject.as_deref(), Some(img.as_str()));
    assert_eq!(e.target.artifact_type.as_deref(), Some("application/vnd.aisopsflow.plugin.manifest.v1+json"));
    assert_eq!(c.delete(format!("{}/v2/acme/p/manifests/{r}", s.url)).send().await.unwrap().status(), 202);
    let e = rx.recv().await.unwrap();
    assert_eq!(e.action, "delete");
    assert_eq!(e.target.digest, r);
}

/// A webhook receiver on 127.0.0.1:0 that fails the first `fail_first` deliveries.
async fn receiver(fail_first: usize) -> (String, mpsc::UnboundedReceiver<(String, Option<String>, Envelope)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let ct = headers.get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
                let token = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                let env: Envelope = serde_json::from_slice(&body).expect("envelope");
                let _ = tx.send((ct, token, env));
                axum::http::StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, rx)
}

#[tokio::test]
async fn webhooks_receive_distribution_envelopes_and_are_retried() {
    let (url, mut rx) = receiver(1).await;
    let s = TestServer::with(|c| {
        c.notifications.endpoints = vec![Endpoint {
            name: "test".into(),
            url: url.clone(),
            headers: [("Authorization".to_string(), "Bearer hook".to_string())].into(),
            timeout_ms: 2000,
            attempts: 3,
        }]
    })
    .await;
    let c = client();
    let (img, _) = push_image(&c, &s.url, "acme/hook", "v1", b"h").await;
    let (ct, auth, env) = rx.recv().await.unwrap();
    assert_eq!(ct, EVENTS_MEDIA_TYPE);
    assert_eq!(auth.as_deref(), Some("Bearer hook"));
    assert_eq!(env.events.len(), 1);
    let e = &env.events[0];
    assert_eq!(e.action, "push");
    assert_eq!(e.target.digest, img);
    assert_eq!(e.target.repository, "acme/hook");
    assert_eq!(e.target.url, format!("/v2/acme/hook/manifests/{img}"));
    assert!(!e.source.instance_id.is_empty());
    // the raw JSON uses distribution's field names
    let raw = serde_json::to_value(e).unwrap();
    assert!(raw["target"]["mediaType"].is_string() && raw["source"]["instanceID"].is_string(), "{raw}");
}
