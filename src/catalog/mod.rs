//! The catalog (issue 8, `DESIGN.md` § where state lives): what tenant admins and
//! publishers browse. Its search index is derived from registry data alone — images,
//! plugin manifest artifacts, SBOMs, signatures, verification reports, lifecycle status —
//! and can be rebuilt from it at any time, so a mirrored registry gets the same catalog.
//!
//! [`harvest`] reads one plugin version from the registry through the content layer
//! (embedded store or any OCI 1.1 registry) into a [`PluginVersion`]; [`index`] is the
//! tantivy index over those documents (full text, facets, typo tolerance, prefixes,
//! ranking, highlights).

pub mod directory;
pub mod governance;
pub mod harvest;
pub mod index;
pub mod openapi;
pub mod records;
pub mod reputation;
pub mod seed;
pub mod service;
pub mod ui;

use serde::{Deserialize, Serialize};

/// One plugin version as the catalog knows it: one search document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// `publisher/name` (the repository).
    pub repository: String,
    pub publisher: String,
    pub name: String,
    pub display_name: String,
    pub description: String,
    /// SemVer of the plugin manifest.
    pub version: String,
    /// The image digest (`sha256:…`): the document's identity.
    pub digest: String,
    /// `host/publisher/name@sha256:…`: what an install pins.
    pub reference: String,
    pub categories: Vec<String>,
    /// Capability names (`outbound_http`, `secrets_read`, …).
    pub capabilities: Vec<String>,
    pub outbound_hosts: Vec<String>,
    /// `compatibility.runner_api` of the manifest (e.g. `1.0`, `^1.0`).
    pub runner_api: String,
    /// `compatibility.min_core`, when set.
    pub min_core: Option<String>,
    pub min_runner: Option<String>,
    /// Names of the SBOM's components (searching a dependency finds the plugins shipping it).
    pub sbom_components: Vec<String>,
    /// The image and the manifest artifact carry signatures that verify with the
    /// publisher's registered keys.
    pub signed: bool,
    /// The newest verification report signed by a trusted verifier key says `verified`.
    pub verified: bool,
    /// `verified`, `unverified` or `none` (no trusted report).
    pub verification: String,
    /// When the newest trusted report was made (RFC 3339), if any.
    pub verified_at: Option<String>,
    /// Failed checks of the newest trusted report.
    pub failed_checks: Vec<String>,
    /// Vulnerability counts of the newest trusted report: critical, high, medium, low, unknown.
    pub vulnerabilities: [u64; 5],
    /// `active`, `deprecated`, `insecure` or `removed` (the newest status a root key signed).
    pub lifecycle: String,
    /// The replacement a deprecation names.
    pub replacement: Option<String>,
    /// The publisher is the deployment's first-party publisher.
    pub official: bool,
    /// Installs reported by runners (reputation): the plugin's total over all its versions,
    /// one per runner and version (see [`reputation`]).
    pub installs: u64,
    /// Failed requests reported by runners: the plugin's total over all its versions.
    #[serde(default)]
    pub failures: u64,
    /// The image's `org.opencontainers.image.created` (RFC 3339), if any.
    pub created: Option<String>,
}

impl PluginVersion {
    /// Reported failures per install (0 without installs); see [`reputation`].
    pub fn issue_rate(&self) -> f64 {
        reputation::issue_rate(self.installs, self.failures)
    }
}
