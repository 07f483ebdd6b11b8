//! berth's configuration: one TOML file; command-line flags override environment
//! variables, which override the file. [`Config::validate`] reports every problem at once,
//! each naming its field.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5000"
//! data_dir = "berth-data"
//! protected_mode = true          # no accounts → anonymous pushes from loopback only
//! # public_url = "https://registry.example.com"   # used for the token realm
//!
//! [auth]
//! anonymous_pull = true
//! token_ttl_seconds = 300
//! [[auth.accounts]]
//! name = "alice"
//! password_hash = "$argon2id$…"  # berth hash-password
//! namespaces = ["acme/*"]
//!
//! [[notifications.endpoints]]
//! name = "catalog"
//! url = "http://127.0.0.1:8080/events"
//!
//! [verification]                 # the verification pipeline (crate::verify)
//! enabled = true
//! conformance = true             # needs root and runc
//! fail_at = "high"
//! [verification.publishers]
//! aisopsflow = ["keys/aisopsflow.pub"]
//!
//! [catalog]                      # the catalog (crate::catalog)
//! mode = "first-party"           # Mode A; "curated" is Mode B
//! operators = ["alice"]          # accounts that approve publishers and set lifecycle
//! ```

use crate::registry::auth::Account;
use crate::registry::events::Endpoint;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
pub const DEFAULT_DATA_DIR: &str = "berth-data";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub protected_mode: bool,
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.to_string(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            protected_mode: true,
            public_url: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub anonymous_pull: bool,
    pub token_ttl_seconds: u64,
    /// File holding the token signing key; default `<data_dir>/token.key`, created on start.
    pub token_key_file: Option<PathBuf>,
    pub accounts: Vec<Account>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { anonymous_pull: true, token_ttl_seconds: 300, token_key_file: None, accounts: Vec::new() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub notifications: NotificationsConfig,
    pub verification: VerificationConfig,
    pub catalog: CatalogConfig,
}

/// The catalog in `serve` (see `crate::catalog`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Keep a search index of the plugins in this registry and serve the catalog API.
    pub enabled: bool,
    /// The index directory (derived data). Default: `<data_dir>/index`.
    pub index_dir: Option<PathBuf>,
    /// `first-party` (Mode A: only the first-party publishers, seeded from `index/`) or
    /// `curated` (Mode B: publishers register and an operator approves them; a version is
    /// listed once verified; tenants opt in per publisher).
    pub mode: CatalogMode,
    /// Publishers whose plugins are official (first-party).
    pub first_party: Vec<String>,
    /// Registry accounts (`[[auth.accounts]]`) that operate the catalog: approve publishers,
    /// mark versions insecure or removed, opt tenants in. With no accounts configured
    /// (protected mode) loopback clients are operators.
    pub operators: Vec<String>,
    /// The catalog root key (cosign's encrypted format; password from
    /// `BERTH_CATALOG_ROOT_PASSWORD`), created on first start with its `.pub` beside it. It
    /// signs publisher records and lifecycle status. Default: `<data_dir>/catalog-root.key`.
    pub root_key_file: Option<PathBuf>,
    /// More catalog root public keys (PEM files): records and lifecycle status they signed count.
    pub root_keys: Vec<PathBuf>,
    /// Verifier public keys (PEM files) besides this server's own verifier key.
    pub verifier_keys: Vec<PathBuf>,
    /// The first-party seed (`index/seed.json`) published into an empty registry on start.
    /// Default: the seed of the source tree berth was built from, when it is there; `""`
    /// (or `serve --no-seed`) seeds nothing.
    pub seed: Option<PathBuf>,
    /// Where the seed's plugin binaries are (`artifacts/build-plugins.sh` writes them).
    /// Default: `target/plugins` of that source tree.
    pub seed_plugins: Option<PathBuf>,
    /// The catalog's operational database (publishers, tokens, tenants, reputation).
    /// Default: `<data_dir>/catalog.sqlite`.
    pub database: Option<PathBuf>,
}

/// The catalog's operating mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CatalogMode {
    /// Mode A: only first-party publishers.
    #[default]
    FirstParty,
    /// Mode B: curated third-party publishers besides the first-party ones.
    Curated,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            enabled: true,
            index_dir: None,
            mode: CatalogMode::FirstParty,
            first_party: vec!["aisopsflow".to_string()],
            operators: Vec::new(),
            root_key_file: None,
            root_keys: Vec::new(),
            verifier_keys: Vec::new(),
            seed: None,
            seed_plugins: None,
            database: None,
        }
    }
}

/// The verification pipeline in `serve` (see `crate::verify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    /// Verify plugins as they are published (registry events), on re-runs and on rescans.
    pub enabled: bool,
    /// `report.verifier.id`.
    pub verifier_id: String,
    /// The verifier signing key (cosign's encrypted format; password from
    /// `BERTH_VERIFIER_PASSWORD`), created on first start with its `.pub` beside it.
    /// Default: `<data_dir>/verifier.key`.
    pub key_file: Option<PathBuf>,
    /// The OSV database (`berth vulndb import`). Default: `<data_dir>/vulndb.sqlite`.
    pub vulndb: Option<PathBuf>,
    /// The job queue. Default: `<data_dir>/verify-queue.sqlite`.
    pub queue: Option<PathBuf>,
    /// Verifications running at once.
    pub concurrency: usize,
    /// Run the conformance suite against the plugin in the runner's sandbox (needs root and runc).
    pub conformance: bool,
    /// The OCI runtime for the conformance run.
    pub runtime: String,
    /// How long a plugin under conformance testing may take to become healthy.
    pub start_timeout_ms: u64,
    /// Quiet time after the last referrer pushed for an image before it is verified.
    pub settle_ms: u64,
    /// How often the vulnerability database is checked for changes (a change rescans).
    pub vulndb_poll_seconds: u64,
    /// Checks whose failure makes a plugin unverified (default: all but `review`).
    pub required_checks: Option<Vec<String>>,
    /// Vulnerabilities at or above this severity make a plugin unverified.
    pub fail_at: crate::plugin::documents::Severity,
    /// Registry account the verifier pushes reports as, when accounts are configured
    /// (password from `BERTH_VERIFIER_REGISTRY_PASSWORD`).
    pub registry_username: Option<String>,
    /// Public keys (PEM files) registered per publisher: signatures by other keys fail.
    pub publishers: std::collections::BTreeMap<String, Vec<PathBuf>>,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        VerificationConfig {
            enabled: true,
            verifier_id: "berth-verifier".to_string(),
            key_file: None,
            vulndb: None,
            queue: None,
            concurrency: 1,
            conformance: true,
            runtime: "runc".to_string(),
            start_timeout_ms: 10_000,
            settle_ms: 1000,
            vulndb_poll_seconds: 30,
            required_checks: None,
            fail_at: crate::plugin::documents::Severity::High,
            registry_username: None,
            publishers: Default::default(),
        }
    }
}

impl Config {
    /// Reads `path`, or the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else { return Ok(Config::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })
    }

    /// Checks everything and reports every problem found, each naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        match self.server.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() && self.auth.accounts.is_empty() && self.server.protected_mode {
                    problems.push(format!(
                        "server.listen = {:?} is not a loopback address and no accounts are configured; \
                         add [[auth.accounts]] or set server.protected_mode = false (--no-protected-mode) \
                         to open the registry to the network on purpose",
                        self.server.listen
                    ));
                }
            }
            Err(_) => problems
                .push(format!("server.listen = {:?} is not an address such as 127.0.0.1:5000", self.server.listen)),
        }
        if let Some(u) = &self.server.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            problems.push(format!("server.public_url = {u:?} must start with http:// or https://"));
        }
        if self.auth.token_ttl_seconds == 0 {
            problems.push("auth.token_ttl_seconds must be greater than 0".to_string());
        }
        for (i, op) in self.catalog.operators.iter().enumerate() {
            if !self.auth.accounts.iter().any(|a| &a.name == op) {
                problems.push(format!("catalog.operators[{i}] = {op:?} is not an account in [[auth.accounts]]"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.auth.accounts.iter().enumerate() {
            let at = format!("auth.accounts[{i}]");
            if a.name.is_empty() || a.name.contains(':') {
                problems.push(format!("{at}.name = {:?} must be non-empty and contain no ':'", a.name));
            }
            if a.name == crate::registry::auth::INTERNAL_USER {
                problems.push(format!("{at}.name = {:?} is reserved for berth's own services", a.name));
            }
            if !seen.insert(a.name.clone()) {
                problems.push(format!("{at}.name = {:?} appears more than once", a.name));
            }
            if argon2::PasswordHash::new(&a.password_hash).is_err() {
                problems
                    .push(format!("{at}.password_hash is not a PHC hash string (make one with `berth hash-password`)"));
            }
            for (j, ns) in a.namespaces.iter().enumerate() {
                let base = ns.strip_suffix("/*").unwrap_or(ns);
                if ns != "*" && crate::oci::validate_repository(base).is_err() {
                    problems.push(format!(
                        "{at}.namespaces[{j}] = {ns:?} must be \"*\", a repository name, or a name followed by \"/*\""
                    ));
                }
            }
        }
        for (i, e) in self.notifications.endpoints.iter().enumerate() {
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                problems.push(format!(
                    "notifications.endpoints[{i}].url = {:?} must start with http:// or https://",
                    e.url
                ));
            }
        }
        let v = &self.verification;
        if v.concurrency == 0 {
            problems.push("verification.concurrency must be greater than 0".to_string());
        }
        if v.verifier_id.is_empty() {
            problems.push("verification.verifier_id must not be empty".to_string());
        }
        for (publisher, keys) in &v.publishers {
            if keys.is_empty() {
                problems.push(format!("verification.publishers.{publisher} lists no key files"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::Invalid(vec![format!("server.listen = {:?} is not an address", self.server.listen)])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server.listen, DEFAULT_LISTEN);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let c: Config = toml::from_str(
            r#"
            [server]
            listen = "0.0.0.0:5000"
            [auth]
            token_ttl_seconds = 0
            [[notifications.endpoints]]
            name = "x"
            url = "ftp://x"
            "#,
        )
        .unwrap();
        let ConfigError::Invalid(p) = c.validate().unwrap_err() else { panic!() };
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("server.listen"));
        assert!(p[1].contains("auth.token_ttl_seconds"));
        assert!(p[2].contains("notifications.endpoints[0].url"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = toml::from_str::<Config>("[server]\nlisten_addr = \"x\"").unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
    }

    #[test]
    fn open_network_needs_explicit_consent() {
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:5000".into();
        assert!(c.validate().is_err());
        c.server.protected_mode = false;
        c.validate().unwrap();
    }
}
