//! The public spec in code: the plugin manifest v1 and the three documents the catalog
//! writes about a plugin (verification report, lifecycle status, publisher record), their
//! serde types, and validation that reports every problem at once.
//!
//! The JSON Schemas (2020-12) in `schemas/` are the normative definition; they are embedded
//! with `include_str!` so the binary needs no files at run time. Validation runs the schema
//! (all errors, not the first) and then the rules a schema cannot express (see
//! `schemas/README.md`): the publisher owns the repository namespace, outbound hosts are
//! real host names, declared capabilities match what the manifest declares, entrypoints
//! live under `/v1/entrypoints/`. Every problem carries a JSON pointer (RFC 6901) into the
//! instance so a submitter — or the web UI — can point at the offending field.

pub mod documents;
pub mod host;
pub mod manifest;

pub use documents::{
    LifecycleStatus, PublisherRecord, VerificationReport, validate_lifecycle_status, validate_publisher_record,
    validate_verification_report,
};
pub use host::check_outbound_host;
pub use manifest::{
    Capability, Compatibility, Contact, Entrypoint, EntrypointExample, HttpMethod, Network, PluginManifest, Resources,
    Runtime, RuntimeType, Security, validate,
};

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;
use std::fmt;
use std::sync::LazyLock;

/// `artifactType` of the plugin-manifest referrer (and media type of its single layer).
pub const PLUGIN_MANIFEST_MEDIA_TYPE: &str = "application/vnd.aisopsflow.plugin.manifest.v1+json";
/// Media type of a verification report when stored bare (it normally travels as the
/// predicate of a signed in-toto statement, see [`VERIFICATION_PREDICATE_TYPE`]).
pub const VERIFICATION_REPORT_MEDIA_TYPE: &str = "application/vnd.aisopsflow.verification.report.v1+json";
/// Media type of a lifecycle status when stored bare.
pub const LIFECYCLE_STATUS_MEDIA_TYPE: &str = "application/vnd.aisopsflow.lifecycle.status.v1+json";
/// Media type of a publisher record (repository `_berth/publishers/<name>`).
pub const PUBLISHER_RECORD_MEDIA_TYPE: &str = "application/vnd.aisopsflow.publisher.v1+json";
/// in-toto `predicateType` of the verification-report attestation.
pub const VERIFICATION_PREDICATE_TYPE: &str = "https://aisopsflow.dev/attestations/verification/v1";
/// in-toto `predicateType` of the lifecycle-status attestation.
pub const STATUS_PREDICATE_TYPE: &str = "https://aisopsflow.dev/attestations/status/v1";

/// `api_version` of each document, as its schema pins it.
pub const PLUGIN_API_VERSION: &str = "aisopsflow.dev/plugin/v1";
pub const VERIFICATION_API_VERSION: &str = "aisopsflow.dev/verification/v1";
pub const STATUS_API_VERSION: &str = "aisopsflow.dev/status/v1";
pub const PUBLISHER_API_VERSION: &str = "aisopsflow.dev/publisher/v1";

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// JSON pointer (RFC 6901) into the instance; empty for the document itself.
    pub pointer: String,
    pub message: String,
}

impl Problem {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { pointer: pointer.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The empty pointer is valid but invisible; name it so the line still reads well.
        let pointer = if self.pointer.is_empty() { "(document)" } else { &self.pointer };
        write!(f, "{pointer}: {}", self.message)
    }
}

/// Every problem found in one document, in pointer order. Never empty when returned as an
/// error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    pub problems: Vec<Problem>,
}

impl ValidationErrors {
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.problems.iter()
    }

    /// Whether some problem points exactly at `pointer`.
    pub fn has(&self, pointer: &str) -> bool {
        self.problems.iter().any(|p| p.pointer == pointer)
    }

    /// Sorted and de-duplicated, so the same document always reports the same list.
    fn from_problems(mut problems: Vec<Problem>) -> ValidationErrors {
        problems.sort();
        problems.dedup();
        ValidationErrors { problems }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.problems.iter()
    }
}

/// The embedded schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    PluginManifest,
    VerificationReport,
    LifecycleStatus,
    PublisherRecord,
}

static PLUGIN_MANIFEST_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile(Schema::PluginManifest));
static VERIFICATION_REPORT_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile(Schema::VerificationReport));
static LIFECYCLE_STATUS_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile(Schema::LifecycleStatus));
static PUBLISHER_RECORD_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile(Schema::PublisherRecord));

impl Schema {
    pub const ALL: [Schema; 4] =
        [Schema::PluginManifest, Schema::VerificationReport, Schema::LifecycleStatus, Schema::PublisherRecord];

    /// File name under `schemas/`.
    pub fn file_name(self) -> &'static str {
        match self {
            Schema::PluginManifest => "plugin-manifest.v1.schema.json",
            Schema::VerificationReport => "verification-report.v1.schema.json",
            Schema::LifecycleStatus => "lifecycle-status.v1.schema.json",
            Schema::PublisherRecord => "publisher-record.v1.schema.json",
        }
    }

    /// The schema document's text, as shipped.
    pub fn source(self) -> &'static str {
        match self {
            Schema::PluginManifest => include_str!("../../schemas/plugin-manifest.v1.schema.json"),
            Schema::VerificationReport => include_str!("../../schemas/verification-report.v1.schema.json"),
            Schema::LifecycleStatus => include_str!("../../schemas/lifecycle-status.v1.schema.json"),
            Schema::PublisherRecord => include_str!("../../schemas/publisher-record.v1.schema.json"),
        }
    }

    fn validator(self) -> &'static Result<jsonschema::Validator, String> {
        match self {
            Schema::PluginManifest => &PLUGIN_MANIFEST_VALIDATOR,
            Schema::VerificationReport => &VERIFICATION_REPORT_VALIDATOR,
            Schema::LifecycleStatus => &LIFECYCLE_STATUS_VALIDATOR,
            Schema::PublisherRecord => &PUBLISHER_RECORD_VALIDATOR,
        }
    }

    /// Every schema error in `json`, as problems. Only the schema: the semantic rules run in
    /// the per-document `validate*` functions.
    pub fn check(self, json: &Value) -> Vec<Problem> {
        let validator = match self.validator() {
            Ok(v) => v,
            // A broken embedded schema is a build defect (the tests compile every schema);
            // say so rather than accept the document unchecked.
            Err(e) => return vec![Problem::new("", format!("embedded schema {} is unusable: {e}", self.file_name()))],
        };
        let mut problems = Vec::new();
        for error in validator.iter_errors(json) {
            problems.extend(to_problems(self, &error));
        }
        problems
    }
}

fn compile(schema: Schema) -> Result<jsonschema::Validator, String> {
    let value: Value = serde_json::from_str(schema.source()).map_err(|e| e.to_string())?;
    // Formats (uri, email, date-time) are annotations only in 2020-12 unless asked for;
    // the spec means them as assertions.
    jsonschema::draft202012::options().should_validate_formats(true).build(&value).map_err(|e| e.to_string())
}

/// Escapes one reference token per RFC 6901.
pub(crate) fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

pub(crate) fn join(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", escape_token(token))
}

/// Turns one jsonschema error into problems, pointing at the field itself where the schema
/// error points at its parent (unknown fields, bad property names).
fn to_problems(schema: Schema, error: &jsonschema::ValidationError<'_>) -> Vec<Problem> {
    let pointer = error.instance_path().as_str().to_string();
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| Problem::new(join(&pointer, name), "unknown field (the schema does not allow it)"))
            .collect(),
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map_or_else(|| property.to_string(), |s| format!("{s:?}"));
            vec![Problem::new(pointer, format!("missing required field {name}"))]
        }
        ValidationErrorKind::PropertyNames { error: inner } => {
            let name = inner.instance().as_str().map(str::to_string).unwrap_or_else(|| inner.instance().to_string());
            let message = match schema {
                Schema::PluginManifest => format!("name {name:?} {LABEL_RULE}"),
                _ => format!("invalid name: {inner}"),
            };
            vec![Problem::new(join(&pointer, &name), message)]
        }
        kind => {
            let message = hint(schema, &pointer, kind, error.instance()).unwrap_or_else(|| error.to_string());
            vec![Problem::new(pointer, message)]
        }
    }
}

const LABEL_RULE: &str = "must be a lowercase DNS label: 1-63 of [a-z0-9-], starting and ending with a letter or digit";
const SEMVER_RULE: &str = "must be a semantic version, MAJOR.MINOR.PATCH[-prerelease][+build]";

/// Readable messages for the errors whose default text would be a raw regular expression or
/// a dump of the whole instance.
fn hint(schema: Schema, pointer: &str, kind: &ValidationErrorKind, instance: &Value) -> Option<String> {
    let found = instance.as_str().map(|s| format!(", found {s:?}")).unwrap_or_default();
    match (schema, kind) {
        (Schema::PluginManifest, ValidationErrorKind::Pattern { .. }) => {
            let message = match pointer {
                "/name" | "/publisher" => format!("{LABEL_RULE}{found}"),
                "/version" | "/compatibility/min_core" | "/compatibility/min_runner" => format!("{SEMVER_RULE}{found}"),
                "/runtime/image" => manifest::image_problem(instance.as_str().unwrap_or_default()),
                "/compatibility/runner_api" => {
                    format!("must be a runner API version such as \"1.0\", \"^1.0\", \"~1.2\" or \">=1.1\"{found}")
                }
                "/license" => format!("must be an SPDX license identifier or expression{found}"),
                "/homepage" | "/source" => format!("must be an http(s) URL{found}"),
                p if p.starts_with("/categories/") => format!("must be lowercase words joined by '-'{found}"),
                p if p.starts_with("/secrets/") => format!("must be a secret name of [A-Za-z0-9_]{found}"),
                _ => return None,
            };
            Some(message)
        }
        (Schema::VerificationReport, ValidationErrorKind::Not { .. }) if pointer == "/checks" => {
            Some("state is \"verified\" but a check failed".to_string())
        }
        (Schema::PublisherRecord, ValidationErrorKind::Not { .. }) => {
            Some("revoked_at is only allowed when status is \"revoked\"".to_string())
        }
        (Schema::LifecycleStatus, ValidationErrorKind::AnyOf { .. }) if pointer == "/replacement" => Some(format!(
            "must be an image reference pinned by digest (host/name@sha256:…) or <plugin>@<version>{found}"
        )),
        // The default text names two options and counts the rest; list them all.
        (_, ValidationErrorKind::Enum { options }) => {
            let options: Vec<String> = options.as_array()?.iter().map(Value::to_string).collect();
            Some(format!("must be one of {}, found {instance}", options.join(", ")))
        }
        (_, ValidationErrorKind::Pattern { .. }) if pointer.ends_with("/digest") => {
            Some(format!("must be a sha256 digest, sha256:<64 lowercase hex>{found}"))
        }
        _ => None,
    }
}

/// Runs the schema, then the document's semantic checks (which read the raw JSON so that they
/// still report when the schema failed), then deserialises.
pub(crate) fn run<T: serde::de::DeserializeOwned>(
    schema: Schema,
    json: &Value,
    semantic: impl FnOnce(&Value) -> Vec<Problem>,
) -> Result<T, ValidationErrors> {
    let mut problems = schema.check(json);
    problems.extend(semantic(json));
    if !problems.is_empty() {
        return Err(ValidationErrors::from_problems(problems));
    }
    // The types mirror the schema, so this only fails if the two drift apart.
    serde_json::from_value(json.clone())
        .map_err(|e| ValidationErrors::from_problems(vec![Problem::new("", format!("does not deserialise: {e}"))]))
}

/// Validates any of the four documents against its schema and semantic rules, discarding the
/// typed value.
/// A lowercase DNS label (RFC 1123): 1–63 of `a-z`, `0-9`, `-`, not starting or ending with
/// `-`. The grammar of publisher names (the publisher record's `name`), tenant names and the
/// runner service's slot names.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn validate_document(schema: Schema, json: &Value) -> Result<(), ValidationErrors> {
    match schema {
        Schema::PluginManifest => validate(json, None).map(drop),
        Schema::VerificationReport => validate_verification_report(json).map(drop),
        Schema::LifecycleStatus => validate_lifecycle_status(json).map(drop),
        Schema::PublisherRecord => validate_publisher_record(json).map(drop),
    }
}

#[cfg(test)]
mod tests;
