//! `berth publisher`, `berth lifecycle` and `berth tenant`: the command line over the
//! catalog's publisher write path and lifecycle API (`schemas/catalog-api.v1.openapi.json`,
//! served by [`crate::catalog::governance`]). Every command is one HTTP request; the server
//! decides who may do what, so these commands send the credentials they are given and
//! report its answer: short human lines by default, the server's JSON with `--json`.

use crate::oci::{Digest, ImageReference, ReferenceError};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Where the catalog is and who is asking: flattened into every command here.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The catalog server.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:5000")]
    pub server: String,
    /// An operator's registry account (HTTP Basic, with --password).
    #[arg(long, env = "BERTH_CATALOG_USER")]
    pub user: Option<String>,
    /// The operator account's password (prefer the environment variable).
    #[arg(long, env = "BERTH_CATALOG_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A publisher's push token (Authorization: Bearer).
    #[arg(long, env = "BERTH_PUBLISHER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum PublisherCommand {
    /// Register a publisher (curated catalogs): it waits for an operator's approval.
    Register(RegisterArgs),
    /// Approve a publisher (operator): its signed record is pushed, its keys trusted.
    Approve {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Reject a publisher (operator); an approved one's record is withdrawn.
    Reject {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One publisher: state, contacts, keys, record.
    Show {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every publisher (operators), or the approved ones.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Issue a push token: prints only the token (shown once), notes on standard error.
    Token {
        name: String,
        /// What the token is for (e.g. "ci").
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A publisher's push tokens, without their secrets.
    Tokens {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a push token by its id.
    RevokeToken {
        name: String,
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Add a public signing key (PEM); pushes a new record revision when approved.
    AddKey {
        name: String,
        /// The public key (PEM).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a signing key by its id; it stays listed as revoked.
    RevokeKey {
        name: String,
        key_id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every version pushed under the publisher's namespace and where it stands.
    Submissions {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The publisher's name: its namespace (`NAME/*`).
    pub name: String,
    /// The name people read (at most 80 characters).
    #[arg(long)]
    pub display_name: String,
    /// Support contact: an email address, or a URL (anything containing `://`).
    #[arg(long)]
    pub support: String,
    /// Security contact: an email address, or a URL.
    #[arg(long)]
    pub security: String,
    /// Public signing key (PEM, as `berth key generate` writes). Repeatable.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Active,
    Deprecated,
    Insecure,
    Removed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Insecure => "insecure",
            Status::Removed => "removed",
        }
    }
}

#[derive(Args, Debug)]
pub struct LifecycleArgs {
    /// The version: host/publisher/name@sha256:… (the host is not asked; --server is).
    pub reference: String,
    /// Publishers may only deprecate; insecure, removed and active are an operator's.
    #[arg(long, value_enum)]
    pub status: Status,
    /// Why (required for every status but active).
    #[arg(long, required_if_eq_any([("status", "deprecated"), ("status", "insecure"), ("status", "removed")]))]
    pub reason: Option<String>,
    /// What to use instead: host/name@sha256:… or plugin@version.
    #[arg(long)]
    pub replacement: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Let a tenant see an approved publisher's plugins (operator).
    OptIn {
        tenant: String,
        publisher: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop showing a publisher to a tenant (operator).
    OptOut {
        tenant: String,
        publisher: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// The publishers a tenant sees: first-party and opted in (operator).
    List {
        tenant: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// The catalog API as one caller sees it.
struct Api {
    http: reqwest::Client,
    server: String,
    auth: Credentials,
}

enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Api {
    fn new(a: &ApiArgs) -> Result<Api> {
        let auth = match (&a.user, &a.password, &a.token) {
            (Some(_), _, Some(_)) => bail!(
                "both an account (--user, BERTH_CATALOG_USER) and a push token (--token, BERTH_PUBLISHER_TOKEN) are set: the catalog takes one; drop one"
            ),
            (Some(u), Some(p), None) => Credentials::Basic(u.clone(), p.clone()),
            (Some(u), None, None) => bail!("--user {u}: give its password with --password or BERTH_CATALOG_PASSWORD"),
            (None, Some(_), _) => bail!("--password without --user (or BERTH_CATALOG_USER): whose password is it?"),
            (None, None, Some(t)) => Credentials::Bearer(t.clone()),
            (None, None, None) => Credentials::None,
        };
        Ok(Api { http: reqwest::Client::new(), server: a.server.clone(), auth })
    }

    /// `method` on the API path made of `segments` (each percent-encoded); the JSON answer,
    /// or the error body's message and the status as the error.
    async fn call(&self, method: Method, segments: &[&str], body: Option<Value>) -> Result<Value> {
        let mut url = reqwest::Url::parse(&self.server).with_context(|| format!("--server {}", self.server))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--server {}: not an http(s) URL", self.server))?
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        let mut r = self.http.request(method.clone(), url.clone());
        r = match &self.auth {
            Credentials::None => r,
            Credentials::Basic(u, p) => r.basic_auth(u, Some(p)),
            Credentials::Bearer(t) => r.bearer_auth(t),
        };
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.with_context(|| format!("asking {url}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("reading the answer of {method} {url}"))?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return parsed.with_context(|| format!("{method} {url}: the answer is not JSON"));
        }
        let message = parsed
            .as_ref()
            .and_then(|b| b.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| match text.trim() {
                "" => format!("{method} {url}: {}", status.canonical_reason().unwrap_or("error")),
                t => format!("{method} {url}: {t}"),
            });
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED && matches!(self.auth, Credentials::None) {
            "; no credentials were sent: an operator uses --user and --password (BERTH_CATALOG_USER, BERTH_CATALOG_PASSWORD), a publisher --token (BERTH_PUBLISHER_TOKEN)"
        } else {
            ""
        };
        bail!("{message} (HTTP {}){hint}", status.as_u16())
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// A contact as the publisher record wants it: a URL when it looks like one, else an email.
fn contact(value: &str) -> Value {
    if value.contains("://") { json!({"url": value}) } else { json!({"email": value}) }
}

fn contact_text(c: &Value) -> String {
    [str_of(c, "email"), str_of(c, "url")].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(", ")
}

/// `sha256:` and the first 12 hex digits: enough to tell versions apart in a table.
fn short_digest(d: &str) -> &str {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => &d[..alg.len() + 1 + 12],
        _ => d,
    }
}

/// `publisher`, `name` and the digest of `host/publisher/name[:tag]@sha256:…` (the host may
/// be left out: the catalog is `--server`).
fn plugin_version(reference: &str) -> Result<(String, String, Digest)> {
    let (repository, digest) = match ImageReference::parse(reference) {
        Ok(r) => (r.repository, r.digest),
        Err(ReferenceError::NoHost(_)) => match reference.split_once('@') {
            Some((repo, d)) => (repo.to_string(), Some(d.parse::<Digest>().with_context(|| reference.to_string())?)),
            None => (reference.to_string(), None),
        },
        Err(e) => return Err(e.into()),
    };
    let Some(digest) = digest else {
        bail!("{reference}: pin the version by digest: host/publisher/name@sha256:…");
    };
    match repository.split('/').collect::<Vec<_>>()[..] {
        [p, n] if !p.is_empty() && !n.is_empty() => Ok((p.to_string(), n.to_string(), digest)),
        _ => bail!("{reference}: the repository {repository:?} is not publisher/name"),
    }
}

/// The server's JSON with `--json`, else `human`'s lines.
fn answer(api: &ApiArgs, b: &Value, human: impl FnOnce(&Value)) -> Result<i32> {
    if api.json {
        println!("{}", serde_json::to_string_pretty(b)?);
    } else {
        human(b);
    }
    Ok(0)
}

/// One publisher, a fact a line.
fn print_publisher(p: &Value) {
    println!("name          {}", str_of(p, "name"));
    println!("display name  {}", str_of(p, "display_name"));
    let decided = match (p["decided_at"].as_str(), p["decided_by"].as_str()) {
        (Some(at), Some(by)) => format!(" ({at} by {by})"),
        _ => String::new(),
    };
    println!("state         {}{decided}", str_of(p, "state"));
    if let Some(at) = p["registered_at"].as_str() {
        println!("registered    {at}");
    }
    println!("support       {}", contact_text(&p["contacts"]["support"]));
    println!("security      {}", contact_text(&p["contacts"]["security"]));
    for k in p["keys"].as_array().into_iter().flatten() {
        let status = match k["revoked_at"].as_str() {
            Some(at) => format!("revoked {at}"),
            None => str_of(k, "status").to_string(),
        };
        println!("key           {} {status} (added {})", str_of(k, "id"), str_of(k, "added"));
    }
    if let Some(r) = p["record"].as_str() {
        println!("record        {r}");
    }
}

fn record_note(v: &Value) -> String {
    match v["record"].as_str() {
        Some(r) => format!("record {r}"),
        None => "no record pushed (the publisher is not approved)".to_string(),
    }
}

fn print_submissions(b: &Value) {
    let rows = b["submissions"].as_array().map(Vec::as_slice).unwrap_or_default();
    let width = rows.iter().map(|s| str_of(s, "repository").len()).max().unwrap_or(0).max(10);
    if rows.is_empty() {
        eprintln!("nothing pushed under {}/ yet", str_of(b, "publisher"));
    } else {
        println!("{:<width$}  {:<10}  {:<19}  {:<19}  LISTED", "REPOSITORY", "VERSION", "DIGEST", "STATE");
    }
    for s in rows {
        println!(
            "{:<width$}  {:<10}  {:<19}  {:<19}  {}",
            str_of(s, "repository"),
            str_of(s, "version"),
            short_digest(str_of(s, "digest")),
            str_of(s, "state"),
            if s["listed"] == true { "yes" } else { "no" }
        );
    }
    for p in b["problems"].as_array().into_iter().flatten() {
        eprintln!("problem: {}", p.as_str().map(str::to_string).unwrap_or_else(|| p.to_string()));
    }
}

pub async fn publisher(c: PublisherCommand) -> Result<i32> {
    use PublisherCommand as P;
    match c {
        P::Register(a) => {
            let keys = super::load_public_keys(&a.keys)?.iter().map(|k| k.to_pem()).collect::<Result<Vec<_>, _>>()?;
            let body = json!({
                "name": a.name, "display_name": a.display_name,
                "contacts": {"support": contact(&a.support), "security": contact(&a.security)},
                "keys": keys,
            });
            let p = Api::new(&a.api)?.call(Method::POST, &["publishers"], Some(body)).await?;
            answer(&a.api, &p, |p| println!("{}: {}", str_of(p, "name"), str_of(p, "state")))
        }
        P::Approve { name, api } => {
            let b = Api::new(&api)?.call(Method::POST, &["publishers", &name, "approve"], Some(json!({}))).await?;
            answer(&api, &b, |b| {
                println!("{name}: {}", str_of(&b["publisher"], "state"));
                println!("record {} in {}", str_of(b, "record"), str_of(b, "repository"));
            })
        }
        P::Reject { name, api } => {
            let b = Api::new(&api)?.call(Method::POST, &["publishers", &name, "reject"], Some(json!({}))).await?;
            answer(&api, &b, |b| println!("{name}: {}", str_of(&b["publisher"], "state")))
        }
        P::Show { name, api } => {
            let p = Api::new(&api)?.call(Method::GET, &["publishers", &name], None).await?;
            answer(&api, &p, print_publisher)
        }
        P::List { api } => {
            let b = Api::new(&api)?.call(Method::GET, &["publishers"], None).await?;
            answer(&api, &b, |b| {
                let all = b["publishers"].as_array().map(Vec::as_slice).unwrap_or_default();
                if all.is_empty() {
                    eprintln!("no publishers");
                }
                for p in all {
                    println!("{:<24} {:<9} {}", str_of(p, "name"), str_of(p, "state"), str_of(p, "display_name"));
                }
            })
        }
        P::Token { name, description, api } => {
            let t = Api::new(&api)?
                .call(Method::POST, &["publishers", &name, "tokens"], Some(json!({"description": description})))
                .await?;
            // Only the secret on standard output: `TOKEN=$(berth publisher token acme)`.
            answer(&api, &t, |t| {
                println!("{}", str_of(t, "token"));
                eprintln!("push token {} for {}: {}", str_of(t, "id"), str_of(t, "namespace"), str_of(t, "usage"));
            })
        }
        P::Tokens { name, api } => {
            let b = Api::new(&api)?.call(Method::GET, &["publishers", &name, "tokens"], None).await?;
            answer(&api, &b, |b| {
                let all = b["tokens"].as_array().map(Vec::as_slice).unwrap_or_default();
                if all.is_empty() {
                    eprintln!("{name} has no push tokens");
                }
                for t in all {
                    let state = match t["revoked_at"].as_str() {
                        Some(at) => format!("revoked {at}"),
                        None => "active".to_string(),
                    };
                    let (id, created, what) = (str_of(t, "id"), str_of(t, "created_at"), str_of(t, "description"));
                    println!("{id}  created {created}  {state}  {what}");
                }
            })
        }
        P::RevokeToken { name, id, api } => {
            let t = Api::new(&api)?.call(Method::DELETE, &["publishers", &name, "tokens", &id], None).await?;
            answer(&api, &t, |t| println!("push token {id} of {name}: revoked {}", str_of(t, "revoked_at")))
        }
        P::AddKey { name, key, api } => {
            let pem = super::load_public_keys(std::slice::from_ref(&key))?[0].to_pem()?;
            let b = Api::new(&api)?
                .call(Method::POST, &["publishers", &name, "keys"], Some(json!({"public_key_pem": pem})))
                .await?;
            answer(&api, &b, |b| println!("key {} added to {name}; {}", str_of(&b["key"], "id"), record_note(b)))
        }
        P::RevokeKey { name, key_id, api } => {
            let b = Api::new(&api)?.call(Method::DELETE, &["publishers", &name, "keys", &key_id], None).await?;
            answer(&api, &b, |b| {
                println!("key {key_id} of {name}: {}; {}", str_of(&b["key"], "status"), record_note(b))
            })
        }
        P::Submissions { name, api } => {
            let b = Api::new(&api)?.call(Method::GET, &["publishers", &name, "submissions"], None).await?;
            answer(&api, &b, print_submissions)
        }
    }
}

pub async fn lifecycle(a: LifecycleArgs) -> Result<i32> {
    let (publisher, name, digest) = plugin_version(&a.reference)?;
    let mut body = json!({"digest": digest.to_string(), "status": a.status.as_str()});
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    if let Some(r) = &a.replacement {
        body["replacement"] = json!(r);
    }
    let b = Api::new(&a.api)?.call(Method::POST, &["plugins", &publisher, &name, "lifecycle"], Some(body)).await?;
    answer(&a.api, &b, |b| {
        let s = &b["status"];
        println!("{publisher}/{name}@{digest}: {} by {}", str_of(s, "status"), str_of(s, "by"));
        println!("attestation {}", str_of(b, "attestation"));
    })
}

pub async fn tenant(c: TenantCommand) -> Result<i32> {
    match c {
        TenantCommand::OptIn { tenant, publisher, api } => {
            let b = Api::new(&api)?.call(Method::PUT, &["tenants", &tenant, "publishers", &publisher], None).await?;
            answer(&api, &b, |_| println!("tenant {tenant}: opted in to {publisher}"))
        }
        TenantCommand::OptOut { tenant, publisher, api } => {
            let b = Api::new(&api)?.call(Method::DELETE, &["tenants", &tenant, "publishers", &publisher], None).await?;
            answer(&api, &b, |_| println!("tenant {tenant}: opted out of {publisher}"))
        }
        TenantCommand::List { tenant, api } => {
            let b = Api::new(&api)?.call(Method::GET, &["tenants", &tenant, "publishers"], None).await?;
            answer(&api, &b, |b| {
                let names = |key: &str| b[key].as_array().into_iter().flatten().filter_map(Value::as_str);
                for p in names("first_party") {
                    println!("{p:<24} first-party");
                }
                for p in names("publishers") {
                    println!("{p:<24} opted in");
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_with_a_scheme_are_urls() {
        assert_eq!(contact("https://acme.example/security"), json!({"url": "https://acme.example/security"}));
        assert_eq!(contact("security@acme.example"), json!({"email": "security@acme.example"}));
    }

    #[test]
    fn short_digest_keeps_the_algorithm() {
        let d = Digest::sha256(b"x").to_string();
        assert_eq!(short_digest(&d), &d[..19]);
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
    }

    #[test]
    fn plugin_version_takes_publisher_and_name_from_the_repository() {
        let d = Digest::sha256(b"x");
        let (p, n, got) = plugin_version(&format!("127.0.0.1:5000/acme/tool:0.1.0@{d}")).unwrap();
        assert_eq!((p.as_str(), n.as_str(), got.clone()), ("acme", "tool", d.clone()));
        let (p, n, _) = plugin_version(&format!("acme/tool@{d}")).unwrap();
        assert_eq!((p.as_str(), n.as_str()), ("acme", "tool"));
        let e = plugin_version("127.0.0.1:5000/acme/tool:0.1.0").unwrap_err().to_string();
        assert!(e.contains("pin the version by digest"), "{e}");
        let e = plugin_version(&format!("registry.example/a/b/c@{d}")).unwrap_err().to_string();
        assert!(e.contains("not publisher/name"), "{e}");
    }
}
