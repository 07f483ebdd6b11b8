//! Registry events: every manifest push and delete is published in-process (the catalog
//! and the verification pipeline subscribe) and, when configured, POSTed to webhooks in
//! CNCF distribution's notification format (an envelope `{"events": [...]}` sent as
//! `application/vnd.docker.distribution.events.v1+json`).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use tokio::sync::broadcast;

pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventTarget {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    pub length: u64,
    pub repository: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// berth extension (image-spec 1.1): the manifest's artifact type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// berth extension (image-spec 1.1): the digest this manifest refers to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventRequest {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventActor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventSource {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub timestamp: String,
    /// `push` or `delete`.
    pub action: String,
    pub target: EventTarget,
    pub request: EventRequest,
    pub actor: EventActor,
    pub source: EventSource,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    pub events: Vec<Event>,
}

/// A configured webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts per event before it is dropped (with a log line).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_attempts() -> u32 {
    5
}

/// The in-process event bus.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    pub source: EventSource,
}

impl Events {
    pub fn new(source_addr: String) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Events { tx, source: EventSource { addr: source_addr, instance_id: uuid::Uuid::new_v4().to_string() } }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    pub fn publish(&self, event: Event) {
        tracing::debug!(action = %event.action, repository = %event.target.repository, digest = %event.target.digest, "event");
        // No subscriber is not an error.
        let _ = self.tx.send(event);
    }

    /// Announces a manifest that berth itself wrote into the embedded store (not through the
    /// HTTP API: publisher records, lifecycle status), as the API would have: a `push` event
    /// for `repository` with the manifest's `subject` and `artifactType`.
    pub fn announce_push(
        &self,
        repository: &str,
        manifest: &oci_spec::image::Descriptor,
        subject: Option<String>,
        tag: Option<String>,
        actor: &str,
    ) {
        let digest = manifest.digest().to_string();
        self.publish(Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: Events::now(),
            action: "push".to_string(),
            target: EventTarget {
                media_type: manifest.media_type().to_string(),
                size: manifest.size(),
                digest: digest.clone(),
                length: manifest.size(),
                repository: repository.to_string(),
                url: format!("/v2/{repository}/manifests/{digest}"),
                tag,
                artifact_type: manifest.artifact_type().as_ref().map(|a| a.to_string()),
                subject,
            },
            request: EventRequest {
                id: uuid::Uuid::new_v4().to_string(),
                addr: String::new(),
                host: String::new(),
                method: "PUT".to_string(),
                useragent: concat!("berth/", env!("CARGO_PKG_VERSION"), " (in-process)").to_string(),
            },
            actor: EventActor { name: Some(actor.to_string()) },
            source: self.source.clone(),
        });
    }

    pub fn now() -> String {
        humantime::format_rfc3339_millis(SystemTime::now()).to_string()
    }

    /// Starts one delivery task per webhook endpoint. Events are delivered in order per
    /// endpoint, retried with exponential backoff, and dropped after `attempts`.
    pub fn spawn_webhooks(&self, endpoints: &[Endpoint]) {
        for ep in endpoints {
            let mut rx = self.subscribe();
            let ep = ep.clone();
            tokio::spawn(async move {
                let client = match reqwest::Client::builder().timeout(Duration::from_millis(ep.timeout_ms)).build() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(endpoint = %ep.name, "webhook client: {e}");
                        return;
                    }
                };
                loop {
                    let event = match rx.recv().await {
                        Ok(e) => e,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(endpoint = %ep.name, "webhook fell behind; {n} events dropped");
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    deliver(&client, &ep, Envelope { events: vec![event] }).await;
                }
            });
        }
    }
}

async fn deliver(client: &reqwest::Client, ep: &Endpoint, envelope: Envelope) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ep.attempts.max(1) {
        let mut req = client.post(&ep.url).header("content-type", EVENTS_MEDIA_TYPE).json(&envelope);
        for (k, v) in &ep.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                tracing::warn!(endpoint = %ep.name, attempt, status = r.status().as_u16(), "webhook refused event")
            }
            Err(e) => tracing::warn!(endpoint = %ep.name, attempt, "webhook delivery failed: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
    tracing::error!(endpoint = %ep.name, "event dropped after {} attempts", ep.attempts);
}

/// What an event consumer waits on: keys (an image, a repository) named by events, each
/// released once no event has named it for `settle` — a publish attaches several referrers
/// in a row, and one refresh after the last is enough.
pub struct Quiet<K> {
    settle: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<K, std::time::Instant>>,
}

impl<K: Eq + std::hash::Hash + Clone> Quiet<K> {
    pub fn new(settle: std::time::Duration) -> Quiet<K> {
        Quiet { settle, seen: std::sync::Mutex::new(std::collections::HashMap::new()) }
    }

    /// Records an event naming `key`: its quiet period starts again.
    pub fn touch(&self, key: K) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(key, std::time::Instant::now());
        }
    }

    /// Waits until at least one key has been quiet for `settle`, and hands those over.
    pub async fn ready(&self) -> Vec<K> {
        let tick = (self.settle / 4).clamp(std::time::Duration::from_millis(20), std::time::Duration::from_millis(500));
        loop {
            tokio::time::sleep(tick).await;
            let Ok(mut seen) = self.seen.lock() else { continue };
            let now = std::time::Instant::now();
            let ready: Vec<K> =
                seen.iter().filter(|(_, t)| now.duration_since(**t) >= self.settle).map(|(k, _)| k.clone()).collect();
            for k in &ready {
                seen.remove(k);
            }
            if !ready.is_empty() {
                return ready;
            }
        }
    }
}
