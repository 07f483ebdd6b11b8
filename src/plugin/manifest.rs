//! The plugin manifest v1 (`schemas/plugin-manifest.v1.schema.json`): its serde types and
//! [`validate`], which runs the schema and the rules the schema cannot express.
//!
//! The types deny unknown fields everywhere the schema sets `additionalProperties: false`
//! (every object but `config_schema`, which is itself a JSON Schema).

use super::{Problem, Schema, ValidationErrors, host, join, run};
use crate::oci::{ImageReference, ReferenceError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Port a plugin listens on when `runtime.port` is absent (runner API v1).
pub const DEFAULT_PORT: u16 = 8080;
/// Every entrypoint path starts with this (runner API v1: `POST /v1/entrypoints/{name}`).
pub const ENTRYPOINT_PREFIX: &str = "/v1/entrypoints/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    pub api_version: String,
    pub name: String,
    pub publisher: String,
    pub display_name: String,
    pub description: String,
    #[serde(with = "semver_string")]
    pub version: semver::Version,
    pub runtime: Runtime,
    pub entrypoints: BTreeMap<String, Entrypoint>,
    pub compatibility: Compatibility,
    pub capabilities: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    pub license: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support: Option<Contact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_contact: Option<Contact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Map<String, Value>>,
}

impl PluginManifest {
    pub fn has_capability(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// The declared outbound hosts (empty when `network` is absent).
    pub fn outbound_hosts(&self) -> &[String] {
        self.network.as_ref().map_or(&[], |n| n.outbound_hosts.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    #[serde(rename = "type")]
    pub kind: RuntimeType,
    /// `host[:port]/name@sha256:<hex>`; the schema refuses anything not pinned by digest.
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl Runtime {
    pub fn image_reference(&self) -> Result<ImageReference, ReferenceError> {
        ImageReference::parse(&self.image)
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeType {
    Oci,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entrypoint {
    pub path: String,
    pub method: HttpMethod,
    pub timeout_ms: u64,
    /// A request body the entrypoint accepts; conformance testing sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<EntrypointExample>,
    /// A request that makes the entrypoint fail on the plugin's side (e.g. an unreachable
    /// upstream); conformance testing checks the 5xx error it gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_example: Option<EntrypointExample>,
}

/// `entrypoints.<name>.example`: a valid `POST /v1/entrypoints/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrypointExample {
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Map<String, Value>>,
}

impl EntrypointExample {
    /// The example as the request body the runner would send.
    pub fn request_body(&self) -> Value {
        let mut body = serde_json::Map::new();
        body.insert("input".to_string(), self.input.clone());
        if let Some(config) = &self.config {
            body.insert("config".to_string(), Value::Object(config.clone()));
        }
        Value::Object(body)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compatibility {
    /// `1.0`, `^1.0`, `~1.2` or `>=1.1` (a bare version means `^`).
    pub runner_api: String,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "semver_opt")]
    pub min_core: Option<semver::Version>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "semver_opt")]
    pub min_runner: Option<semver::Version>,
}

impl Compatibility {
    /// `runner_api` as a version requirement (semver reads a bare `1.0` as `^1.0`).
    pub fn runner_api_req(&self) -> Result<semver::VersionReq, semver::Error> {
        self.runner_api.parse()
    }

    /// Whether a runner speaking runner API `major.minor` satisfies the requirement.
    pub fn accepts_runner_api(&self, major: u64, minor: u64) -> bool {
        self.runner_api_req().is_ok_and(|req| req.matches(&semver::Version::new(major, minor, 0)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    OutboundHttp,
    SecretsRead,
    FilesystemTmp,
    Callbacks,
    Metrics,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::OutboundHttp => "outbound_http",
            Capability::SecretsRead => "secrets_read",
            Capability::FilesystemTmp => "filesystem_tmp",
            Capability::Callbacks => "callbacks",
            Capability::Metrics => "metrics",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub outbound_hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_image: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_attached: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

/// Validates a plugin manifest: the schema, then the semantic rules; returns every problem.
///
/// `repository` is the repository name (without registry host, as in `/v2/<name>/…`) the
/// image and its manifest referrer live in; the publisher must own its first path
/// component. Without it the repository of `runtime.image` is used.
pub fn validate(json: &Value, repository: Option<&str>) -> Result<PluginManifest, ValidationErrors> {
    run(Schema::PluginManifest, json, |json| semantic_problems(json, repository))
}

/// The rules beyond the schema. They read the raw JSON and skip whatever has the wrong
/// shape, since the schema already reports that.
fn semantic_problems(json: &Value, repository: Option<&str>) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_publisher(json, repository, &mut problems);

    let hosts = json.pointer("/network/outbound_hosts").and_then(Value::as_array);
    for (i, entry) in hosts.into_iter().flatten().enumerate() {
        if let Some(entry) = entry.as_str()
            && let Err(why) = host::check_outbound_host(entry)
        {
            problems.push(Problem::new(format!("/network/outbound_hosts/{i}"), why));
        }
    }
    check_declared(
        json,
        Capability::OutboundHttp,
        "/network/outbound_hosts",
        "network.outbound_hosts",
        "the hosts the plugin calls",
        &mut problems,
    );
    check_declared(json, Capability::SecretsRead, "/secrets", "secrets", "the secrets the plugin reads", &mut problems);

    if let Some(entrypoints) = json.get("entrypoints").and_then(Value::as_object) {
        for (name, entrypoint) in entrypoints {
            let Some(path) = entrypoint.get("path").and_then(Value::as_str) else { continue };
            let rest = path.strip_prefix(ENTRYPOINT_PREFIX);
            if rest.is_none_or(|rest| rest.is_empty() || rest.contains('/')) {
                problems.push(Problem::new(
                    join(&join("/entrypoints", name), "path"),
                    format!("must be {ENTRYPOINT_PREFIX}<name> (runner API v1), found {path:?}"),
                ));
            }
        }
    }
    problems
}

fn check_publisher(json: &Value, repository: Option<&str>, problems: &mut Vec<Problem>) {
    let Some(publisher) = json.get("publisher").and_then(Value::as_str) else { return };
    let (repository, from_image) = match repository {
        Some(r) => (r.to_string(), false),
        None => {
            let image = json.pointer("/runtime/image").and_then(Value::as_str);
            // An unparsable image is reported by the schema; nothing to compare against.
            match image.map(ImageReference::parse) {
                Some(Ok(reference)) => (reference.repository, true),
                _ => return,
            }
        }
    };
    let source = if from_image { "the repository of runtime.image" } else { "the repository" };
    match repository.split_once('/') {
        Some((namespace, _)) if namespace == publisher => {}
        Some((namespace, _)) => problems.push(Problem::new(
            "/publisher",
            format!(
                "publisher {publisher:?} does not own {source} {repository:?}: its namespace is {namespace:?}; \
                 plugins are published under <publisher>/<name>"
            ),
        )),
        None => problems.push(Problem::new(
            if from_image { "/runtime/image" } else { "/publisher" },
            format!(
                "{source} {repository:?} has no publisher namespace; plugins are published under {publisher}/<name>"
            ),
        )),
    }
}

/// `capability` is declared iff the list at `pointer` is non-empty; either half missing is a
/// problem, reported where the fix goes.
fn check_declared(
    json: &Value,
    capability: Capability,
    pointer: &str,
    field: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) {
    let declared = json.pointer(pointer).and_then(Value::as_array).is_some_and(|list| !list.is_empty());
    let capabilities = json.get("capabilities").and_then(Value::as_array);
    let position = capabilities.and_then(|caps| caps.iter().position(|c| c.as_str() == Some(capability.as_str())));
    let name = capability.as_str();
    match (position, declared) {
        (Some(i), false) => problems.push(Problem::new(
            format!("/capabilities/{i}"),
            format!("capability {name} is requested but {field} is empty: declare {what}, or drop the capability"),
        )),
        // Only when capabilities is a list: otherwise the schema already said what is wrong.
        (None, true) if capabilities.is_some() => problems.push(Problem::new(
            pointer,
            format!("{field} is declared but the {name} capability is not requested: add it to capabilities"),
        )),
        _ => {}
    }
}

/// The message for an image reference the schema refused.
pub(crate) fn image_problem(image: &str) -> String {
    const PINNED: &str = "must be pinned by digest (…@sha256:…)";
    let Some((host, rest)) = image.split_once('/') else {
        return format!("must be host[:port]/name@sha256:<64 hex>, found {image:?}");
    };
    if let Some((_, digest)) = rest.split_once('@') {
        return format!("{PINNED} with a sha256 digest of 64 lowercase hex digits, found {digest:?}");
    }
    let last = rest.rsplit('/').next().unwrap_or(rest);
    match last.split_once(':') {
        Some((_, tag)) => format!("{PINNED}, found tag {tag:?}"),
        None if host.is_empty() => format!("must be host[:port]/name@sha256:<64 hex>, found {image:?}"),
        None => format!("{PINNED}, found no digest in {image:?}"),
    }
}

/// serde for a `semver::Version` carried as its string form (semver's own serde support is a
/// feature the crate is not built with).
mod semver_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(version: &semver::Version, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(version)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod semver_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(version: &Option<semver::Version>, s: S) -> Result<S::Ok, S::Error> {
        match version {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<semver::Version>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
    }
}
