//! The verification pipeline (issue 7, `DESIGN.md` § flows): every check of a plugin image,
//! one report per run (`schemas/verification-report.v1.schema.json`), signed with the
//! verifier key as an in-toto statement in a DSSE envelope and attached to the image digest
//! as a sigstore bundle referrer, so the catalog, the runner and every mirror read the same
//! verdict from the registry.
//!
//! [`checks`] holds the checks, each an independent unit whose failure is data in the
//! report; [`vulndb`] is the local OSV database; [`queue`] is the persistent job queue in
//! SQLite; [`pipeline`] runs the checks for one digest and writes the report; [`worker`]
//! takes jobs from the queue (registry events, `berth verify`, re-runs, rescans).

pub mod checks;
pub mod pipeline;
pub mod queue;
pub mod version;
pub mod vulndb;
pub mod worker;

use crate::plugin::documents::Severity;
use serde::Serialize;

/// One advisory affecting one package version, as the vulnerability check reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vulnerability {
    /// The OSV id (`GHSA-…`, `RUSTSEC-…`, `PYSEC-…`, `GO-…`).
    pub id: String,
    pub aliases: Vec<String>,
    /// The purl the SBOM named, with its version.
    pub purl: String,
    pub severity: Severity,
    pub summary: String,
    /// Versions that fix it, per the advisory's ranges (may be empty).
    pub fixed: Vec<String>,
}

/// Where the vulnerability check looks packages up (the OSV database on disk).
pub trait VulnSource: Send + Sync {
    /// Advisories affecting the package and version `purl` names (`pkg:cargo/serde@1.0.0`,
    /// `pkg:npm/%40scope/name@1.2.3`, `pkg:pypi/requests@2.31.0`,
    /// `pkg:golang/golang.org/x/net@v0.17.0`). Unknown ecosystems return an empty list.
    fn affecting(&self, purl: &str) -> Result<Vec<Vulnerability>, String>;
    /// Changes whenever the database content changes (a rescan trigger).
    fn revision(&self) -> Result<String, String>;
}
