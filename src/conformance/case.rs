//! Conformance cases: the serde types of `conformance/case.schema.json`, the built-in suite
//! (embedded, so the binary needs no files at run time), loading extra cases from a directory,
//! and placeholder expansion (`{entrypoint}`, `{entrypoint_path}`, `{entrypoint_method}`,
//! `{plugin_name}`, `{plugin_version}`).

use super::ConformanceError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::LazyLock;

/// The case file format, as shipped.
pub const CASE_SCHEMA: &str = include_str!("../../conformance/case.schema.json");

/// The body string that stands for the entrypoint's example request.
pub const EXAMPLE_BODY: &str = "$example";
/// The body that stands for the entrypoint's `failure_example` (a request that makes the
/// plugin fail on its side); cases using it are skipped for entrypoints that declare none.
pub const FAILURE_EXAMPLE_BODY: &str = "$failure_example";

/// Deadline offset (ms) when a case says nothing: what a runner would typically grant.
pub const DEFAULT_DEADLINE_MS: i64 = 10_000;

/// The six areas of the suite, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Area {
    Availability,
    Contract,
    Auth,
    Errors,
    Timeouts,
    Compatibility,
}

impl Area {
    pub const ALL: [Area; 6] =
        [Area::Availability, Area::Contract, Area::Auth, Area::Errors, Area::Timeouts, Area::Compatibility];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Availability => "availability",
            Area::Contract => "contract",
            Area::Auth => "auth",
            Area::Errors => "errors",
            Area::Timeouts => "timeouts",
            Area::Compatibility => "compatibility",
        }
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One case: a request and what the answer must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    pub area: Area,
    pub description: String,
    pub request: Request,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Map<String, Value>>,
    #[serde(default)]
    pub signing: Signing,
    /// `None` sends no header. An absent field means 1.0 (what a v1 runner sends), so `null`
    /// and absent differ; serde's `Option` with a default function keeps them apart.
    #[serde(default = "default_runner_api")]
    pub runner_api: Option<String>,
    /// `None` sends no header; absent means [`DEFAULT_DEADLINE_MS`] from now.
    #[serde(default = "default_deadline")]
    pub deadline: Option<Deadline>,
}

fn default_runner_api() -> Option<String> {
    Some("1.0".to_string())
}

fn default_deadline() -> Option<Deadline> {
    Some(Deadline::Offset(DEFAULT_DEADLINE_MS))
}

impl Request {
    /// Whether the request uses the entrypoint's example body.
    pub fn uses_example(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.as_str() == Some(EXAMPLE_BODY))
    }

    /// Whether the request uses the entrypoint's failure example body.
    pub fn uses_failure_example(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.as_str() == Some(FAILURE_EXAMPLE_BODY))
    }
}

/// How the request is signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signing {
    #[default]
    Valid,
    None,
    WrongKey,
    Replay,
    Expired,
    TamperedBody,
}

/// `AisOpsFlow-Deadline`, relative to the moment of sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Deadline {
    /// Milliseconds from now (0: due now; negative: passed).
    Offset(i64),
    /// One second ago.
    Past,
}

impl TryFrom<Value> for Deadline {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match &v {
            Value::String(s) if s == "past" => Ok(Deadline::Past),
            Value::Number(n) => {
                n.as_i64().map(Deadline::Offset).ok_or_else(|| format!("deadline {n} is not an integer"))
            }
            _ => Err(format!("deadline must be milliseconds, \"past\" or null, found {v}")),
        }
    }
}

impl From<Deadline> for Value {
    fn from(d: Deadline) -> Value {
        match d {
            Deadline::Offset(ms) => Value::from(ms),
            Deadline::Past => Value::from("past"),
        }
    }
}

impl Deadline {
    /// The header value for a request sent at `now_ms`.
    pub fn at(self, now_ms: u64) -> u64 {
        match self {
            Deadline::Offset(ms) => now_ms.saturating_add_signed(ms),
            Deadline::Past => now_ms.saturating_sub(1_000),
        }
    }
}

/// What the answer must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: Statuses,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub then_still_answers: bool,
}

/// One status, or several any of which passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Statuses {
    One(u16),
    Any(Vec<u16>),
}

impl Statuses {
    pub fn contains(&self, status: u16) -> bool {
        match self {
            Statuses::One(s) => *s == status,
            Statuses::Any(list) => list.contains(&status),
        }
    }
}

impl fmt::Display for Statuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statuses::One(s) => write!(f, "{s}"),
            Statuses::Any(list) => {
                let list: Vec<String> = list.iter().map(u16::to_string).collect();
                write!(f, "one of {}", list.join(", "))
            }
        }
    }
}

/// Values substituted for the placeholders.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    pub plugin_name: String,
    pub plugin_version: String,
    /// Name, path and method of the entrypoint the case runs for, if any.
    pub entrypoint: Option<(String, String, String)>,
}

const ENTRYPOINT_PLACEHOLDERS: [&str; 3] = ["{entrypoint}", "{entrypoint_path}", "{entrypoint_method}"];

impl Case {
    /// Whether the case runs once per declared entrypoint: it names one, or sends its example.
    pub fn per_entrypoint(&self) -> bool {
        if self.request.uses_example() || self.request.uses_failure_example() {
            return true;
        }
        // Serialising the case is the simplest way to look at every string in it.
        let text = serde_json::to_string(self).unwrap_or_default();
        ENTRYPOINT_PLACEHOLDERS.iter().any(|p| text.contains(p))
    }

    /// The case with every placeholder in its strings (request and expect, including inline
    /// schemas) replaced. Placeholders without a value (no entrypoint) are left as they are.
    pub fn expand(&self, values: &Placeholders) -> Result<Case, ConformanceError> {
        let invalid = |message: String| ConformanceError::InvalidCase { source_name: self.id.clone(), message };
        let mut json = serde_json::to_value(self).map_err(|e| invalid(e.to_string()))?;
        let mut pairs =
            vec![("{plugin_name}", values.plugin_name.as_str()), ("{plugin_version}", values.plugin_version.as_str())];
        if let Some((name, path, method)) = &values.entrypoint {
            pairs.extend([
                ("{entrypoint_path}", path.as_str()),
                ("{entrypoint_method}", method.as_str()),
                ("{entrypoint}", name.as_str()),
            ]);
        }
        replace_strings(&mut json, &pairs);
        serde_json::from_value(json).map_err(|e| invalid(format!("after placeholder expansion: {e}")))
    }
}

/// Replaces in every string of `value` (object keys too, since inline schemas may name
/// properties after an entrypoint).
fn replace_strings(value: &mut Value, pairs: &[(&str, &str)]) {
    let expand = |s: &str| pairs.iter().fold(s.to_string(), |acc, (from, to)| acc.replace(from, to));
    match value {
        Value::String(s) => *s = expand(s),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_strings(v, pairs)),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut v) in old {
                replace_strings(&mut v, pairs);
                map.insert(expand(&k), v);
            }
        }
        _ => {}
    }
}

static CASE_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(CASE_SCHEMA).map_err(|e| e.to_string())?;
    jsonschema::draft202012::new(&schema).map_err(|e| e.to_string())
});

/// Parses one case file: JSON, then the case schema (every problem reported), then the rules
/// the schema leaves out. `source_name` names the file in errors.
pub fn parse_case(source_name: &str, text: &str) -> Result<Case, ConformanceError> {
    let invalid = |message: String| ConformanceError::InvalidCase { source_name: source_name.to_string(), message };
    let json: Value = serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let validator = CASE_VALIDATOR
        .as_ref()
        .map_err(|e| ConformanceError::Schema { name: "conformance/case.schema.json", message: e.clone() })?;
    let problems: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| {
            let pointer = e.instance_path().as_str().to_string();
            format!("{}: {e}", if pointer.is_empty() { "(case)" } else { &pointer })
        })
        .collect();
    if !problems.is_empty() {
        return Err(invalid(problems.join("; ")));
    }
    let case: Case = serde_json::from_value(json).map_err(|e| invalid(e.to_string()))?;
    let body_is_object = case.request.uses_example()
        || case.request.uses_failure_example()
        || case.request.body.as_ref().is_some_and(Value::is_object);
    if case.request.merge.is_some() && !body_is_object {
        return Err(invalid("/request/merge: needs an object body or \"$example\"".to_string()));
    }
    Ok(case)
}

/// The built-in suite, `conformance/cases/<area>/<name>.json`. The unit tests check that this
/// list and the directory agree, so a new case file cannot be forgotten here.
pub const BUILTIN: &[(&str, &str)] = &[
    ("auth/expired.json", include_str!("../../conformance/cases/auth/expired.json")),
    ("auth/replayed.json", include_str!("../../conformance/cases/auth/replayed.json")),
    ("auth/tampered-body.json", include_str!("../../conformance/cases/auth/tampered-body.json")),
    ("auth/unsigned-entrypoint.json", include_str!("../../conformance/cases/auth/unsigned-entrypoint.json")),
    ("auth/unsigned-health.json", include_str!("../../conformance/cases/auth/unsigned-health.json")),
    ("auth/valid-signature-accepted.json", include_str!("../../conformance/cases/auth/valid-signature-accepted.json")),
    ("auth/wrong-key-entrypoint.json", include_str!("../../conformance/cases/auth/wrong-key-entrypoint.json")),
    ("auth/wrong-key-health.json", include_str!("../../conformance/cases/auth/wrong-key-health.json")),
    (
        "availability/entrypoint-answers.json",
        include_str!("../../conformance/cases/availability/entrypoint-answers.json"),
    ),
    (
        "availability/health-without-runner-headers.json",
        include_str!("../../conformance/cases/availability/health-without-runner-headers.json"),
    ),
    ("availability/health.json", include_str!("../../conformance/cases/availability/health.json")),
    (
        "availability/info-lists-entrypoint.json",
        include_str!("../../conformance/cases/availability/info-lists-entrypoint.json"),
    ),
    ("availability/info.json", include_str!("../../conformance/cases/availability/info.json")),
    (
        "compatibility/runner-api-0-9-refused.json",
        include_str!("../../conformance/cases/compatibility/runner-api-0-9-refused.json"),
    ),
    ("compatibility/runner-api-1-0.json", include_str!("../../conformance/cases/compatibility/runner-api-1-0.json")),
    ("compatibility/runner-api-1-9.json", include_str!("../../conformance/cases/compatibility/runner-api-1-9.json")),
    (
        "compatibility/runner-api-2-0-health.json",
        include_str!("../../conformance/cases/compatibility/runner-api-2-0-health.json"),
    ),
    (
        "compatibility/runner-api-2-0-refused.json",
        include_str!("../../conformance/cases/compatibility/runner-api-2-0-refused.json"),
    ),
    (
        "compatibility/runner-api-absent.json",
        include_str!("../../conformance/cases/compatibility/runner-api-absent.json"),
    ),
    ("contract/error-body-is-json.json", include_str!("../../conformance/cases/contract/error-body-is-json.json")),
    ("contract/info-schema.json", include_str!("../../conformance/cases/contract/info-schema.json")),
    (
        "contract/invoke-request-and-response.json",
        include_str!("../../conformance/cases/contract/invoke-request-and-response.json"),
    ),
    ("contract/method-not-allowed.json", include_str!("../../conformance/cases/contract/method-not-allowed.json")),
    (
        "contract/unknown-request-fields-ignored.json",
        include_str!("../../conformance/cases/contract/unknown-request-fields-ignored.json"),
    ),
    ("errors/body-not-object.json", include_str!("../../conformance/cases/errors/body-not-object.json")),
    ("errors/config-not-object.json", include_str!("../../conformance/cases/errors/config-not-object.json")),
    ("errors/malformed-json.json", include_str!("../../conformance/cases/errors/malformed-json.json")),
    ("errors/plugin-side-failure.json", include_str!("../../conformance/cases/errors/plugin-side-failure.json")),
    ("errors/root-path.json", include_str!("../../conformance/cases/errors/root-path.json")),
    ("errors/unknown-entrypoint.json", include_str!("../../conformance/cases/errors/unknown-entrypoint.json")),
    ("errors/unknown-path.json", include_str!("../../conformance/cases/errors/unknown-path.json")),
    ("timeouts/ample-deadline.json", include_str!("../../conformance/cases/timeouts/ample-deadline.json")),
    ("timeouts/deadline-due-now.json", include_str!("../../conformance/cases/timeouts/deadline-due-now.json")),
    (
        "timeouts/past-deadline-entrypoint.json",
        include_str!("../../conformance/cases/timeouts/past-deadline-entrypoint.json"),
    ),
    ("timeouts/past-deadline-info.json", include_str!("../../conformance/cases/timeouts/past-deadline-info.json")),
];

/// The built-in cases, parsed and checked (ids unique), in area order (availability first:
/// when a plugin does not even answer, that is the first thing to read).
pub fn builtin_cases() -> Result<Vec<Case>, ConformanceError> {
    let mut cases = Vec::new();
    for (name, text) in BUILTIN {
        cases.push((format!("conformance/cases/{name}"), parse_case(name, text)?));
    }
    cases.sort_by_key(|(_, case)| case.area);
    unique(cases)
}

/// Every `*.json` file under `dir` (recursively, in path order) as a case.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, Case)>, ConformanceError> {
    let mut files = Vec::new();
    collect_json(dir, &mut files)?;
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|source| ConformanceError::Io { path: file.clone(), source })?;
        let name = file.display().to_string();
        cases.push((name.clone(), parse_case(&name, &text)?));
    }
    Ok(cases)
}

fn collect_json(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), ConformanceError> {
    let io = |source| ConformanceError::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_json(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "json")
            && path.file_name().is_some_and(|n| n != "case.schema.json")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The built-in cases followed by the cases of each directory, ids unique across all.
pub fn suite(extra_dirs: &[impl AsRef<Path>]) -> Result<Vec<Case>, ConformanceError> {
    let mut cases: Vec<(String, Case)> = builtin_cases()?.into_iter().map(|c| (String::new(), c)).collect();
    for dir in extra_dirs {
        cases.extend(load_dir(dir.as_ref())?);
    }
    unique(cases)
}

fn unique(cases: Vec<(String, Case)>) -> Result<Vec<Case>, ConformanceError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(cases.len());
    for (source, case) in cases {
        let source = if source.is_empty() { "the built-in suite".to_string() } else { source };
        if let Some(first) = seen.insert(case.id.clone(), source.clone()) {
            return Err(ConformanceError::DuplicateId { id: case.id, first, second: source });
        }
        out.push(case);
    }
    Ok(out)
}
