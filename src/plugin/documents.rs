//! The documents the catalog writes about a plugin image: the verification report
//! (`schemas/verification-report.v1.schema.json`), the lifecycle status
//! (`schemas/lifecycle-status.v1.schema.json`) and the publisher record
//! (`schemas/publisher-record.v1.schema.json`). The first two travel as predicates of signed
//! in-toto statements; the publisher record is signed by the catalog root key. Signing is
//! not this module's business: here they are validated like the plugin manifest, schema
//! first and then the rules a schema cannot express.

use super::{Problem, Schema, ValidationErrors, run};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;

/// The image a report or status is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// `sha256:<hex>` of the image manifest.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationReport {
    pub api_version: String,
    pub subject: Subject,
    pub verifier: Verifier,
    /// RFC 3339.
    pub time: String,
    pub state: VerificationState,
    pub compatibility: CompatibilityResult,
    pub checks: Vec<Check>,
    pub vulnerabilities: VulnerabilityCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verifier {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerificationState {
    Verified,
    Unverified,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompatibilityResult {
    pub result: CompatibilityOutcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_api: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompatibilityOutcome {
    Compatible,
    Incompatible,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Fail,
    Warn,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Unknown,
    Info,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VulnerabilityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleStatus {
    pub api_version: String,
    pub subject: Subject,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An image reference pinned by digest, or `<plugin>@<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    pub time: String,
    pub by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Deprecated,
    Insecure,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherRecord {
    pub api_version: String,
    pub name: String,
    pub display_name: String,
    pub contacts: Contacts,
    pub keys: Vec<PublisherKey>,
}

impl PublisherRecord {
    /// The key with this id, if it is listed and active.
    pub fn active_key(&self, id: &str) -> Option<&PublisherKey> {
        self.keys.iter().find(|k| k.id == id && k.status == KeyStatus::Active)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contacts {
    pub support: super::Contact,
    pub security: super::Contact,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherKey {
    pub id: String,
    pub algorithm: KeyAlgorithm,
    pub public_key_pem: String,
    pub status: KeyStatus,
    pub added: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
}

/// Orders two RFC 3339 times (`time` of reports and status) by the instant they name, so that
/// `…:21Z` and `…:21.500Z` compare right; a time that does not parse sorts before any that does.
pub fn time_order(a: &str, b: &str) -> std::cmp::Ordering {
    let at = |s: &str| humantime::parse_rfc3339_weak(s).ok();
    at(a).cmp(&at(b)).then_with(|| a.cmp(b))
}

/// Validates a verification report predicate; check names must be unique.
pub fn validate_verification_report(json: &Value) -> Result<VerificationReport, ValidationErrors> {
    run(Schema::VerificationReport, json, |json| {
        let names = strings_at(json, "checks", "name");
        duplicates(&names, "/checks", "name", "check")
    })
}

/// Validates a lifecycle status predicate; an image cannot replace itself.
pub fn validate_lifecycle_status(json: &Value) -> Result<LifecycleStatus, ValidationErrors> {
    run(Schema::LifecycleStatus, json, |json| {
        let subject = json.pointer("/subject/digest").and_then(Value::as_str);
        let replacement = json.get("replacement").and_then(Value::as_str);
        match (subject, replacement) {
            (Some(digest), Some(replacement)) if replacement.ends_with(&format!("@{digest}")) => {
                vec![Problem::new("/replacement", "names the subject itself; a replacement must be another image")]
            }
            _ => Vec::new(),
        }
    })
}

/// Validates a publisher record; key ids must be unique and every key must be a P-256
/// public key in SubjectPublicKeyInfo PEM.
pub fn validate_publisher_record(json: &Value) -> Result<PublisherRecord, ValidationErrors> {
    run(Schema::PublisherRecord, json, |json| {
        let ids = strings_at(json, "keys", "id");
        let mut problems = duplicates(&ids, "/keys", "id", "key id");
        let keys = json.get("keys").and_then(Value::as_array);
        for (i, key) in keys.into_iter().flatten().enumerate() {
            let Some(pem) = key.get("public_key_pem").and_then(Value::as_str) else { continue };
            use p256::pkcs8::DecodePublicKey;
            if let Err(e) = p256::PublicKey::from_public_key_pem(pem) {
                problems.push(Problem::new(
                    format!("/keys/{i}/public_key_pem"),
                    format!("is not an ECDSA P-256 public key in SubjectPublicKeyInfo PEM: {e}"),
                ));
            }
        }
        problems
    })
}

/// `(index, value)` of the string field `field` of each object in the array `array`.
fn strings_at<'a>(json: &'a Value, array: &str, field: &str) -> Vec<(usize, &'a str)> {
    let items = json.get(array).and_then(Value::as_array);
    items.into_iter().flatten().enumerate().filter_map(|(i, item)| Some((i, item.get(field)?.as_str()?))).collect()
}

/// A problem at every repeat of a value (the first occurrence is the one that counts).
fn duplicates(values: &[(usize, &str)], array: &str, field: &str, what: &str) -> Vec<Problem> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut problems = Vec::new();
    for &(i, value) in values {
        match first.get(value) {
            Some(&at) => problems.push(Problem::new(
                format!("{array}/{i}/{field}"),
                format!("duplicate {what} {value:?} (first at {array}/{at})"),
            )),
            None => {
                first.insert(value, i);
            }
        }
    }
    problems
}
