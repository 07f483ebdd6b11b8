//! Who may do what: the Docker registry token flow, plus Basic credentials and the
//! protected mode of an account-less deployment.
//!
//! - A request without acceptable credentials gets `401` and
//!   `WWW-Authenticate: Bearer realm="…/token",service="…",scope="repository:<name>:<actions>"`.
//! - `GET /token?service=…&scope=…` (or `POST` with `grant_type=password`) takes Basic
//!   credentials, grants the intersection of what was asked and what the account may do,
//!   and returns a short-lived HMAC-SHA256-signed JWT (`token` and `access_token`).
//! - Accounts come from the configuration, with argon2 password hashes, each limited to
//!   namespaces (`acme/*`, an exact name, or `*`). Pull is anonymous when configured so.
//! - Protected mode (like Redis's): with no accounts configured, anonymous pushes are
//!   accepted from loopback clients only.

use super::errors::{Code, RegistryError};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// A configured account.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Account {
    pub name: String,
    /// An argon2 PHC string, as printed by `berth hash-password`.
    pub password_hash: String,
    /// Repositories the account may push to and delete from: `acme/*`, `acme/tool`, `*`.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Push, never delete (publisher push tokens: a publisher must not delete the lifecycle
    /// status or verification reports attached to its images). Not configurable.
    #[serde(skip)]
    pub push_only: bool,
}

impl Account {
    fn may(&self, repo: &str) -> bool {
        self.namespaces.iter().any(|ns| match ns.strip_suffix("/*") {
            _ if ns == "*" => true,
            Some(prefix) => repo.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')),
            None => ns == repo,
        })
    }
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub accounts: Vec<Account>,
    pub anonymous_pull: bool,
    /// With no accounts: anonymous pushes only from loopback (`true`) or from anywhere.
    pub protected_mode: bool,
    pub token_ttl: Duration,
    /// The token endpoint's URL; when unset it is derived from the request's `Host`.
    pub realm: Option<String>,
    pub service: String,
}

/// Credentials kept outside the configuration: the catalog's publisher push tokens.
pub trait CredentialSource: Send + Sync {
    /// What `user` may do when `secret` is one of its live credentials; `None` when it is not.
    fn check(&self, user: &str, secret: &str) -> Option<Grant>;
}

/// What a [`CredentialSource`] grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Namespaces (`acme/*`) the user may push to.
    pub namespaces: Vec<String>,
    /// Whether it may also delete there.
    pub delete: bool,
}

/// The account berth's own services inside `serve` (verifier, catalog, seed) use when they
/// reach the registry over HTTP: a random secret made at start, never written anywhere,
/// with every right. Its name is reserved: the configuration refuses an account of that name.
pub struct InternalAccount {
    secret: String,
}

/// The internal account's user name.
pub const INTERNAL_USER: &str = "_berth";

impl InternalAccount {
    pub fn new() -> InternalAccount {
        InternalAccount { secret: hex::encode(rand::random::<[u8; 32]>()) }
    }

    /// (user, password) for a client.
    pub fn credentials(&self) -> (String, String) {
        (INTERNAL_USER.to_string(), self.secret.clone())
    }
}

impl Default for InternalAccount {
    fn default() -> Self {
        InternalAccount::new()
    }
}

impl CredentialSource for InternalAccount {
    fn check(&self, user: &str, secret: &str) -> Option<Grant> {
        use subtle_eq::eq;
        (user == INTERNAL_USER && eq(secret.as_bytes(), self.secret.as_bytes()))
            .then(|| Grant { namespaces: vec!["*".to_string()], delete: true })
    }
}

/// Comparison whose time does not depend on where two secrets differ.
mod subtle_eq {
    pub fn eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// What a request asks to touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Repository(String),
    Catalog,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    access: Vec<AccessEntry>,
}

/// Who a request was made by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    Account(String),
}

impl Identity {
    pub fn name(&self) -> Option<&str> {
        match self {
            Identity::Anonymous => None,
            Identity::Account(n) => Some(n),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub token: String,
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
}

pub struct Auth {
    settings: AuthSettings,
    key: Vec<u8>,
    /// Recently verified (account, SHA-256 of password) pairs, so Basic auth on every
    /// request does not pay for argon2 every time.
    verified: Mutex<HashMap<(String, [u8; 32]), Instant>>,
    /// Credentials besides the accounts: berth's internal account, the catalog's publisher
    /// push tokens.
    extra: std::sync::RwLock<Vec<std::sync::Arc<dyn CredentialSource>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("settings", &self.settings).finish_non_exhaustive()
    }
}

const VERIFIED_TTL: Duration = Duration::from_secs(300);

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Parses a scope such as `repository:acme/tool:pull,push` or `registry:catalog:*`.
pub fn parse_scope(scope: &str) -> Option<AccessEntry> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(AccessEntry {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_string).collect(),
    })
}

impl Auth {
    pub fn new(settings: AuthSettings, key: Vec<u8>) -> Self {
        Auth { settings, key, verified: Mutex::new(HashMap::new()), extra: Default::default() }
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Accepts the credentials `source` vouches for besides the configured accounts. They
    /// count as accounts limited to the namespaces it names.
    pub fn add_credential_source(&self, source: std::sync::Arc<dyn CredentialSource>) {
        self.extra.write().unwrap_or_else(|p| p.into_inner()).push(source);
    }

    fn protected_mode(&self) -> bool {
        self.settings.accounts.is_empty()
    }

    /// Whether an anonymous client at `peer` may do `action` on `resource`.
    fn anonymous_may(&self, resource: &Resource, action: Action, peer: Option<IpAddr>) -> bool {
        match (resource, action) {
            (_, Action::Pull) => self.settings.anonymous_pull,
            _ => self.protected_mode() && (peer.is_some_and(is_loopback) || !self.settings.protected_mode),
        }
    }

    fn account_may(&self, account: &Account, resource: &Resource, action: Action) -> bool {
        match resource {
            Resource::Catalog => action == Action::Pull,
            Resource::Repository(_) if action == Action::Delete && account.push_only => false,
            Resource::Repository(r) => account.may(r) || (action == Action::Pull && self.settings.anonymous_pull),
        }
    }

    /// Checks the request's credentials for `action` on `resource`.
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
        host: Option<&str>,
        resource: &Resource,
        action: Action,
    ) -> Result<Identity, RegistryError> {
        if let Some(h) = authorization {
            if let Some(token) = h.strip_prefix("Bearer ") {
                let claims = self
                    .verify_token(token.trim())
                    .ok_or_else(|| self.challenge(host, resource, action, "the bearer token is invalid or expired"))?;
                let granted = claims.access.iter().any(|a| grants(a, resource, action));
                if granted || self.anonymous_may(resource, action, peer) {
                    return Ok(Identity::Account(claims.sub));
                }
                return Err(self.denied(resource, action, Some(&claims.sub)));
            }
            if let Some((user, pass)) = parse_basic(h) {
                let account = self
                    .check_password(&user, &pass)
                    .ok_or_else(|| self.challenge(host, resource, action, "the user name or password is wrong"))?;
                if self.account_may(&account, resource, action) {
                    return Ok(Identity::Account(account.name.clone()));
                }
                return Err(self.denied(resource, action, Some(&account.name)));
            }
        }
        if self.anonymous_may(resource, action, peer) {
            return Ok(Identity::Anonymous);
        }
        if self.protected_mode() && action != Action::Pull {
            return Err(RegistryError::new(
                Code::Denied,
                "protected mode: no accounts are configured, so only clients on the loopback \
                 address may push or delete; add accounts to the configuration",
            ));
        }
        Err(self.challenge(host, resource, action, "authentication required"))
    }

    fn denied(&self, resource: &Resource, action: Action, who: Option<&str>) -> RegistryError {
        let what = match resource {
            Resource::Repository(r) => format!("repository {r}"),
            Resource::Catalog => "the catalog".to_string(),
        };
        RegistryError::new(
            Code::Denied,
            format!("{} may not {} {what}", who.unwrap_or("an anonymous client"), action.as_str()),
        )
    }

    fn realm(&self, host: Option<&str>) -> String {
        match &self.settings.realm {
            Some(r) => r.clone(),
            None => format!("http://{}/token", host.unwrap_or("127.0.0.1")),
        }
    }

    /// A 401 carrying the Bearer challenge for `resource`.
    pub fn challenge(&self, host: Option<&str>, resource: &Resource, action: Action, message: &str) -> RegistryError {
        let scope = match resource {
            Resource::Repository(r) => {
                let actions = match action {
                    Action::Pull => "pull",
                    Action::Push => "pull,push",
                    Action::Delete => "delete",
                };
                format!(",scope=\"repository:{r}:{actions}\"")
            }
            Resource::Catalog => ",scope=\"registry:catalog:*\"".to_string(),
        };
        let c = format!("Bearer realm=\"{}\",service=\"{}\"{scope}", self.realm(host), self.settings.service);
        RegistryError::unauthorized(c, message)
    }

    /// The challenge `GET /v2/` answers with when anonymous access is not enough.
    pub fn base_challenge(&self, host: Option<&str>) -> String {
        format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(host), self.settings.service)
    }

    /// Whether `authorization` carries any valid credential: a token this registry
    /// signed and that has not expired, or a right user name and password.
    pub fn authenticated(&self, authorization: Option<&str>) -> bool {
        match authorization {
            Some(h) if h.starts_with("Bearer ") => self.verify_token(h["Bearer ".len()..].trim()).is_some(),
            Some(h) => parse_basic(h).is_some_and(|(u, p)| self.check_password(&u, &p).is_some()),
            None => false,
        }
    }

    /// Whether `GET /v2/` needs credentials (no anonymous access at all).
    pub fn base_requires_auth(&self) -> bool {
        !self.settings.anonymous_pull && !self.protected_mode()
    }

    /// Looks up `user` and checks `password` against its argon2 hash, or else asks the
    /// credential source (publisher push tokens).
    pub fn check_password(&self, user: &str, password: &str) -> Option<Account> {
        let Some(account) = self.settings.accounts.iter().find(|a| a.name == user) else {
            let extra = self.extra.read().unwrap_or_else(|p| p.into_inner());
            let grant = extra.iter().find_map(|s| s.check(user, password))?;
            return Some(Account {
                name: user.to_string(),
                password_hash: String::new(),
                namespaces: grant.namespaces,
                push_only: !grant.delete,
            });
        };
        let key = (user.to_string(), <Sha256 as sha2::Digest>::digest(password.as_bytes()).into());
        {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if cache.get(&key).is_some_and(|t| t.elapsed() < VERIFIED_TTL) {
                return Some(account.clone());
            }
        }
        let hash = PasswordHash::new(&account.password_hash).ok()?;
        Argon2::default().verify_password(password.as_bytes(), &hash).ok()?;
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, Instant::now());
        Some(account.clone())
    }

    /// The token endpoint: grants what `account` (or an anonymous client) may of `scopes`.
    pub fn issue_token(&self, account: Option<&Account>, scopes: &[String], peer: Option<IpAddr>) -> TokenResponse {
        let mut access = Vec::new();
        for s in scopes {
            let Some(want) = parse_scope(s) else { continue };
            let resource = match want.kind.as_str() {
                "repository" => Resource::Repository(want.name.clone()),
                "registry" if want.name == "catalog" => Resource::Catalog,
                _ => continue,
            };
            let mut actions: Vec<String> = Vec::new();
            for a in &want.actions {
                let candidates: &[Action] = match a.as_str() {
                    "pull" => &[Action::Pull],
                    "push" => &[Action::Push],
                    "delete" => &[Action::Delete],
                    "*" => &[Action::Pull, Action::Push, Action::Delete],
                    _ => &[],
                };
                for &act in candidates {
                    let ok = match account {
                        Some(acc) => self.account_may(acc, &resource, act),
                        None => self.anonymous_may(&resource, act, peer),
                    };
                    if ok && !actions.iter().any(|x| x == act.as_str()) {
                        actions.push(act.as_str().to_string());
                    }
                }
            }
            if resource == Resource::Catalog && !actions.is_empty() {
                actions = vec!["*".to_string()];
            }
            access.push(AccessEntry { kind: want.kind, name: want.name, actions });
        }
        let iat = now_secs();
        let ttl = self.settings.token_ttl.as_secs();
        let claims = Claims {
            iss: "berth".into(),
            sub: account.map(|a| a.name.clone()).unwrap_or_default(),
            aud: self.settings.service.clone(),
            exp: iat + ttl,
            iat,
            access,
        };
        let token = self.sign(&claims);
        TokenResponse {
            token: token.clone(),
            access_token: token,
            expires_in: ttl,
            issued_at: humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(iat)).to_string(),
        }
    }

    fn mac(&self) -> hmac::Hmac<Sha256> {
        // HMAC takes keys of any length.
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(format!("{header}.{body}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{body}.{sig}")
    }

    fn verify_token(&self, token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut mac = self.mac();
        mac.update(format!("{h}.{b}").as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b).ok()?).ok()?;
        (claims.exp > now_secs() && claims.aud == self.settings.service).then_some(claims)
    }
}

fn grants(a: &AccessEntry, resource: &Resource, action: Action) -> bool {
    match resource {
        Resource::Repository(r) => {
            a.kind == "repository" && &a.name == r && a.actions.iter().any(|x| x == action.as_str() || x == "*")
        }
        Resource::Catalog => a.kind == "registry" && a.name == "catalog" && !a.actions.is_empty(),
    }
}

/// Decodes an `Authorization: Basic …` header.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let enc = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic "))?;
    let raw = String::from_utf8(STANDARD.decode(enc.trim()).ok()?).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Hashes a password for the configuration file (argon2id, PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let raw: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&raw).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(accounts: Vec<Account>, anonymous_pull: bool) -> Auth {
        Auth::new(
            AuthSettings {
                accounts,
                anonymous_pull,
                protected_mode: true,
                token_ttl: Duration::from_secs(60),
                realm: None,
                service: "berth".into(),
            },
            b"k".to_vec(),
        )
    }

    fn alice() -> Account {
        Account {
            name: "alice".into(),
            password_hash: hash_password("s3cret").unwrap(),
            namespaces: vec!["acme/*".into()],
            push_only: false,
        }
    }

    const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

    #[test]
    fn namespace_patterns() {
        let a = alice();
        assert!(a.may("acme/x"));
        assert!(a.may("acme/x/y"));
        assert!(!a.may("acme"));
        assert!(!a.may("acmex/y"));
    }

    #[test]
    fn protected_mode_allows_loopback_push_only() {
        let a = auth(vec![], true);
        let repo = Resource::Repository("x".into());
        assert_eq!(a.authorize(None, LOOPBACK, None, &repo, Action::Push).unwrap(), Identity::Anonymous);
        let e = a.authorize(None, REMOTE, None, &repo, Action::Push).unwrap_err();
        assert_eq!(e.code, Code::Denied);
        assert!(a.authorize(None, REMOTE, None, &repo, Action::Pull).is_ok());
    }

    #[test]
    fn token_grants_only_the_accounts_namespace() {
        let a = auth(vec![alice()], false);
        let acc = a.check_password("alice", "s3cret").unwrap().clone();
        assert!(a.check_password("alice", "wrong").is_none());
        let t =
            a.issue_token(Some(&acc), &["repository:acme/p:pull,push".into(), "repository:other/p:push".into()], None);
        let bearer = format!("Bearer {}", t.token);
        let mine = Resource::Repository("acme/p".into());
        let theirs = Resource::Repository("other/p".into());
        assert!(a.authorize(Some(&bearer), REMOTE, None, &mine, Action::Push).is_ok());
        let e = a.authorize(Some(&bearer), REMOTE, None, &theirs, Action::Push).unwrap_err();
        assert_eq!(e.code, Code::Denied);
        let e = a.authorize(None, REMOTE, Some("h:1"), &mine, Action::Pull).unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        assert!(e.challenge.unwrap().contains("realm=\"http://h:1/token\""));
        // tampered token
        let bad = format!("Bearer {}x", t.token);
        assert_eq!(a.authorize(Some(&bad), REMOTE, None, &mine, Action::Pull).unwrap_err().code, Code::Unauthorized);
    }
}
