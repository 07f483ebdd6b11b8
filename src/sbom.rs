//! Software bills of materials: CycloneDX JSON made from a `Cargo.lock`, and validation of
//! CycloneDX JSON documents (spec 1.3–1.6) before berth attaches them to a plugin.
//!
//! [`from_cargo_lock`] writes CycloneDX 1.5: the root crate as `metadata.component`, every
//! other locked package as a `library` component with a `pkg:cargo` purl (and its crates.io
//! SHA-256 checksum), and the lock's dependency graph. Output is a pure function of its
//! inputs: the serial number is derived from the lock, and there is no timestamp unless one
//! is given ([`from_cargo_lock_at`]).
//!
//! [`validate`] checks 1.4–1.6 documents against the official CycloneDX JSON schemas
//! vendored in `schemas/cyclonedx/` (the `jsonschema` crate), then 1.3–1.5 documents with
//! `cyclonedx-bom`'s parser and validator (which check purls, bom-refs and the like; that
//! crate does not know 1.6, so purls in 1.6 documents are checked here with its purl
//! check). Every problem names the field it is about, e.g. `components[3].purl: …`.

use cyclonedx_bom::external_models::uri::{Purl, validate_purl};
use cyclonedx_bom::models::bom::{Bom, SpecVersion};
use cyclonedx_bom::validation::{Validate, ValidationErrorsKind, ValidationResult};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::OnceLock;

/// The spec version [`from_cargo_lock`] writes.
pub const SPEC_VERSION: &str = "1.5";
/// At most this many problems are reported for one document.
pub const MAX_PROBLEMS: usize = 20;

const CRATES_IO_SOURCES: [&str; 2] =
    ["registry+https://github.com/rust-lang/crates.io-index", "sparse+https://index.crates.io/"];

const SCHEMA_1_4: &str = include_str!("../schemas/cyclonedx/bom-1.4.SNAPSHOT.schema.json");
const SCHEMA_1_5: &str = include_str!("../schemas/cyclonedx/bom-1.5.SNAPSHOT.schema.json");
const SCHEMA_1_6: &str = include_str!("../schemas/cyclonedx/bom-1.6.SNAPSHOT.schema.json");
const SCHEMA_SPDX: &str = include_str!("../schemas/cyclonedx/spdx.SNAPSHOT.schema.json");
const SCHEMA_JSF: &str = include_str!("../schemas/cyclonedx/jsf-0.82.SNAPSHOT.schema.json");
/// Where the BOM schemas' relative `$ref`s point (they resolve against `$id`
/// `http://cyclonedx.org/schema/bom-1.x.schema.json`).
const SPDX_URI: &str = "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json";
const JSF_URI: &str = "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json";

/// One thing wrong with a document or lock file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `components[3].purl`, `bomFormat`, `package[7].checksum`; `(document)` for the whole.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("Cargo.lock: {0}")]
    Lock(Problem),
    #[error("invalid CycloneDX document: {}", join(.0))]
    Invalid(Vec<Problem>),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("CycloneDX {version} schema: {message}")]
    Schema { version: String, message: String },
}

fn join(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SbomError {
    SbomError::Invalid(vec![Problem { path: path.into(), message: message.into() }])
}

fn lock_error(path: impl Into<String>, message: impl Into<String>) -> SbomError {
    SbomError::Lock(Problem { path: path.into(), message: message.into() })
}

/// What a valid document holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomSummary {
    /// `specVersion`, e.g. `1.5`.
    pub spec_version: String,
    /// Components in `components`, nested ones included (not `metadata.component`).
    pub components: usize,
    /// The purls of those components, in document order (components without one skipped).
    pub purls: Vec<String>,
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// A CycloneDX 1.5 SBOM of the packages in `lock` (a `Cargo.lock`'s text), for the crate
/// `root_name` `root_version`. No timestamp: the same lock gives the same JSON.
pub fn from_cargo_lock(lock: &str, root_name: &str, root_version: &str) -> Result<Value, SbomError> {
    from_cargo_lock_at(lock, root_name, root_version, None)
}

/// [`from_cargo_lock`] with `metadata.timestamp` set to `timestamp` (RFC 3339) if given.
pub fn from_cargo_lock_at(
    lock: &str,
    root_name: &str,
    root_version: &str,
    timestamp: Option<&str>,
) -> Result<Value, SbomError> {
    let parsed: Lock = toml::from_str(lock).map_err(|e| lock_error("(document)", e.to_string()))?;
    let packages = parsed.package;

    // bom-refs: the purl, made unique if the same name@version comes from two sources.
    let mut refs: Vec<String> = Vec::with_capacity(packages.len());
    let mut used: BTreeSet<String> = BTreeSet::new();
    let root_purl = cargo_purl(root_name, root_version).map_err(|m| lock_error("(root)", m))?;
    used.insert(root_purl.clone());
    let root_index = packages
        .iter()
        .position(|p| p.name == root_name && p.version == root_version && p.source.is_none())
        .or_else(|| packages.iter().position(|p| p.name == root_name && p.version == root_version));
    for (i, p) in packages.iter().enumerate() {
        if Some(i) == root_index {
            refs.push(root_purl.clone());
            continue;
        }
        let purl = cargo_purl(&p.name, &p.version).map_err(|m| lock_error(format!("package[{i}]"), m))?;
        let mut r = purl.clone();
        let mut n = 1;
        while !used.insert(r.clone()) {
            n += 1;
            r = format!("{purl}#{n}");
        }
        refs.push(r);
    }

    // In a workspace lock (several crates share one Cargo.lock) the root's SBOM holds only
    // what the root can reach through the lock's dependency lists.
    let keep: Vec<bool> = match root_index {
        None => vec![true; packages.len()],
        Some(root) => {
            let mut keep = vec![false; packages.len()];
            let mut stack = vec![root];
            keep[root] = true;
            while let Some(i) = stack.pop() {
                for dep in &packages[i].dependencies {
                    if let Some(t) = resolve_dependency(&packages, dep)
                        && !keep[t]
                    {
                        keep[t] = true;
                        stack.push(t);
                    }
                }
            }
            keep
        }
    };

    let mut components = Vec::with_capacity(packages.len());
    for (i, p) in packages.iter().enumerate() {
        if Some(i) == root_index || !keep[i] {
            continue;
        }
        let mut c = serde_json::Map::new();
        c.insert("type".into(), json!("library"));
        c.insert("bom-ref".into(), json!(refs[i]));
        c.insert("name".into(), json!(p.name));
        c.insert("version".into(), json!(p.version));
        let from_crates_io = p.source.as_deref().is_some_and(|s| CRATES_IO_SOURCES.contains(&s));
        if let (true, Some(sum)) = (from_crates_io, &p.checksum) {
            if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(lock_error(
                    format!("package[{i}] ({} {}).checksum", p.name, p.version),
                    "not a SHA-256 hex digest",
                ));
            }
            c.insert("hashes".into(), json!([{ "alg": "SHA-256", "content": sum.to_ascii_lowercase() }]));
        }
        c.insert(
            "purl".into(),
            json!(cargo_purl(&p.name, &p.version).map_err(|m| lock_error(format!("package[{i}]"), m))?),
        );
        components.push(Value::Object(c));
    }

    let mut dependencies = Vec::with_capacity(packages.len() + 1);
    if root_index.is_none() {
        dependencies.push(json!({ "ref": root_purl, "dependsOn": [] }));
    }
    for (i, p) in packages.iter().enumerate().filter(|(i, _)| keep[*i]) {
        let mut depends_on = BTreeSet::new();
        for (j, dep) in p.dependencies.iter().enumerate() {
            let target = resolve_dependency(&packages, dep).ok_or_else(|| {
                lock_error(
                    format!("package[{i}] ({} {}).dependencies[{j}]", p.name, p.version),
                    format!("{dep:?} matches no single package in the lock"),
                )
            })?;
            depends_on.insert(refs[target].clone());
        }
        dependencies.push(json!({ "ref": refs[i], "dependsOn": depends_on }));
    }

    let mut metadata = serde_json::Map::new();
    if let Some(ts) = timestamp {
        metadata.insert("timestamp".into(), json!(ts));
    }
    metadata.insert(
        "component".into(),
        json!({ "type": "application", "bom-ref": root_purl, "name": root_name, "version": root_version, "purl": root_purl }),
    );

    let bom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(lock, root_name, root_version),
        "version": 1,
        "metadata": metadata,
        "components": components,
        "dependencies": dependencies,
    });
    // What we write must pass what we accept.
    validate_value(&bom)?;
    Ok(bom)
}

/// `pkg:cargo/<name>@<version>`, percent-encoded as the purl spec requires.
fn cargo_purl(name: &str, version: &str) -> Result<String, String> {
    Purl::new("cargo", name, version).map(|p| p.to_string()).map_err(|e| format!("no purl for {name} {version}: {e}"))
}

/// Finds the package a lock `dependencies` entry names: `name`, `name version` or
/// `name version (source)`.
fn resolve_dependency(packages: &[LockPackage], entry: &str) -> Option<usize> {
    let (head, source) = match entry.split_once(" (") {
        Some((h, s)) => (h, s.strip_suffix(')')),
        None => (entry, None),
    };
    let mut parts = head.split(' ');
    let name = parts.next()?;
    let version = parts.next();
    let mut found = packages.iter().enumerate().filter(|(_, p)| {
        p.name == name
            && version.is_none_or(|v| p.version == v)
            && source.is_none_or(|s| p.source.as_deref() == Some(s))
    });
    let first = found.next()?.0;
    if found.next().is_some() { None } else { Some(first) }
}

/// `urn:uuid:` from SHA-256 of the inputs: the first 16 bytes, with the version nibble set
/// to 5 (name-based) and the RFC 4122 variant, so the schemas' UUID pattern accepts it.
fn serial_number(lock: &str, root_name: &str, root_version: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"berth-sbom\0");
    h.update(root_name.as_bytes());
    h.update(b"\0");
    h.update(root_version.as_bytes());
    h.update(b"\0");
    h.update(lock.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!("urn:uuid:{}-{}-{}-{}-{}", &x[0..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// Validates a CycloneDX JSON document (spec 1.3–1.6) and summarizes it.
pub fn validate(json: &[u8]) -> Result<SbomSummary, SbomError> {
    let doc: Value = serde_json::from_slice(json).map_err(|e| invalid("(document)", format!("not JSON: {e}")))?;
    validate_value(&doc)
}

fn validate_value(doc: &Value) -> Result<SbomSummary, SbomError> {
    let Some(obj) = doc.as_object() else {
        return Err(invalid("(document)", "not a JSON object"));
    };
    let version = match obj.get("specVersion") {
        Some(Value::String(v)) => v.clone(),
        Some(other) => return Err(invalid("specVersion", format!("{other} is not a string"))),
        None => return Err(invalid("specVersion", "missing")),
    };
    match obj.get("bomFormat") {
        Some(Value::String(f)) if f == "CycloneDX" => {}
        Some(other) => return Err(invalid("bomFormat", format!("{other} is not \"CycloneDX\""))),
        None => return Err(invalid("bomFormat", "missing (must be \"CycloneDX\")")),
    }
    let crate_version = match version.as_str() {
        "1.3" => Some(SpecVersion::V1_3),
        "1.4" => Some(SpecVersion::V1_4),
        "1.5" => Some(SpecVersion::V1_5),
        "1.6" => None,
        other => {
            return Err(SbomError::Unsupported(format!(
                "CycloneDX specVersion {other:?}: berth validates 1.3, 1.4, 1.5 and 1.6"
            )));
        }
    };
    if version != "1.3" {
        check_schema(&version, doc)?;
    }
    match crate_version {
        Some(v) => {
            let bom = Bom::parse_json_value(doc.clone()).map_err(|e| invalid("(document)", e.to_string()))?;
            let mut problems = Vec::new();
            collect(&bom.validate_version(v), &mut Vec::new(), doc, &mut problems);
            if !problems.is_empty() {
                return Err(SbomError::Invalid(problems));
            }
        }
        None => check_purls(doc)?,
    }
    let mut purls = Vec::new();
    let mut components = 0;
    let mut stack: Vec<&Value> =
        obj.get("components").and_then(Value::as_array).map(|a| a.iter().rev().collect()).unwrap_or_default();
    while let Some(c) = stack.pop() {
        components += 1;
        if let Some(p) = c.get("purl").and_then(Value::as_str) {
            purls.push(p.to_string());
        }
        if let Some(children) = c.get("components").and_then(Value::as_array) {
            stack.extend(children.iter().rev());
        }
    }
    Ok(SbomSummary { spec_version: version, components, purls })
}

/// The compiled schema for `version` (compiled once per process).
fn schema(version: &str) -> Result<&'static jsonschema::Validator, SbomError> {
    static V14: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    static V15: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    static V16: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    let (cell, text) = match version {
        "1.4" => (&V14, SCHEMA_1_4),
        "1.5" => (&V15, SCHEMA_1_5),
        "1.6" => (&V16, SCHEMA_1_6),
        other => return Err(SbomError::Unsupported(format!("no schema for CycloneDX {other}"))),
    };
    cell.get_or_init(|| compile(text))
        .as_ref()
        .map_err(|message| SbomError::Schema { version: version.to_string(), message: message.clone() })
}

fn compile(text: &str) -> Result<jsonschema::Validator, String> {
    let parse = |t: &str| serde_json::from_str::<Value>(t).map_err(|e| format!("vendored schema is not JSON: {e}"));
    let schema = parse(text)?;
    let (spdx, jsf) = (parse(SCHEMA_SPDX)?, parse(SCHEMA_JSF)?);
    let registry = jsonschema::Registry::new()
        .add(SPDX_URI, spdx)
        .and_then(|r| r.add(JSF_URI, jsf))
        .and_then(|r| r.prepare())
        .map_err(|e| e.to_string())?;
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_registry(&registry)
        .offline()
        .build(&schema)
        .map_err(|e| e.to_string())
}

fn check_schema(version: &str, doc: &Value) -> Result<(), SbomError> {
    let validator = schema(version)?;
    let problems: Vec<Problem> = validator
        .iter_errors(doc)
        .take(MAX_PROBLEMS)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            Problem { path: pointer_to_path(&pointer), message: shorten(&e.to_string()) }
        })
        .collect();
    if problems.is_empty() { Ok(()) } else { Err(SbomError::Invalid(problems)) }
}

/// `/components/3/purl` → `components[3].purl`; `` → `(document)`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() { "(document)".to_string() } else { out }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// 1.6: every component purl (nested ones too, and `metadata.component`'s) must parse.
fn check_purls(doc: &Value) -> Result<(), SbomError> {
    let mut problems = Vec::new();
    let mut stack: Vec<(String, &Value)> = Vec::new();
    if let Some(c) = doc.pointer("/metadata/component") {
        stack.push(("metadata.component".into(), c));
    }
    if let Some(list) = doc.get("components").and_then(Value::as_array) {
        stack.extend(list.iter().enumerate().rev().map(|(i, c)| (format!("components[{i}]"), c)));
    }
    while let Some((path, c)) = stack.pop() {
        if let Some(p) = c.get("purl").and_then(Value::as_str) {
            let purl = Purl::from_str(p).unwrap_or_else(|()| unreachable!("Purl::from_str is infallible"));
            if let Err(e) = validate_purl(&purl) {
                problems.push(Problem { path: format!("{path}.purl"), message: with_component(c, &e.message, p) });
            }
        }
        if let Some(children) = c.get("components").and_then(Value::as_array) {
            stack.extend(children.iter().enumerate().rev().map(|(i, k)| (format!("{path}.components[{i}]"), k)));
        }
    }
    problems.truncate(MAX_PROBLEMS);
    if problems.is_empty() { Ok(()) } else { Err(SbomError::Invalid(problems)) }
}

fn with_component(component: &Value, message: &str, value: &str) -> String {
    match component.get("name").and_then(Value::as_str) {
        Some(name) => format!("{message} (component {name:?}, value {value:?})"),
        None => format!("{message} (value {value:?})"),
    }
}

/// Segment of a path into the document: an object key or an array index.
enum Seg {
    Key(String),
    Index(usize),
}

/// Flattens cyclonedx-bom's nested validation result into problems with document paths.
/// Its names are Rust field names (`serial_number`, lists wrapped in `inner`); they are
/// mapped back to the JSON names.
fn collect(result: &ValidationResult, prefix: &mut Vec<Seg>, doc: &Value, out: &mut Vec<Problem>) {
    for (name, kind) in result.clone().errors() {
        if out.len() >= MAX_PROBLEMS {
            return;
        }
        let pushed = match json_name(&name) {
            Some(key) => {
                prefix.push(Seg::Key(key));
                true
            }
            None => false,
        };
        match &kind {
            ValidationErrorsKind::Struct(inner) => collect(inner, prefix, doc, out),
            ValidationErrorsKind::List(items) => {
                for (i, inner) in items {
                    prefix.push(Seg::Index(*i));
                    collect(inner, prefix, doc, out);
                    prefix.pop();
                }
            }
            ValidationErrorsKind::Field(errors) | ValidationErrorsKind::Custom(errors) => {
                for e in errors {
                    out.push(problem_at(prefix, doc, &e.message));
                }
            }
            ValidationErrorsKind::Enum(e) => out.push(problem_at(prefix, doc, &e.message)),
        }
        if pushed {
            prefix.pop();
        }
    }
}

fn json_name(rust: &str) -> Option<String> {
    Some(match rust {
        "inner" | "" => return None,
        "bom_ref" => "bom-ref".into(),
        "component_type" => "type".into(),
        "mime_type" => "mime-type".into(),
        "dependency_ref" | "sub dependency_ref" => "dependencies".into(),
        "composition ref" => "compositions".into(),
        other => {
            let mut s = String::with_capacity(other.len());
            let mut upper = false;
            for ch in other.chars() {
                if ch == '_' {
                    upper = true;
                } else if upper {
                    s.extend(ch.to_uppercase());
                    upper = false;
                } else {
                    s.push(ch);
                }
            }
            s
        }
    })
}

fn problem_at(prefix: &[Seg], doc: &Value, message: &str) -> Problem {
    let mut path = String::new();
    let mut pointer = String::new();
    let mut component: Option<&Value> = None;
    let mut node = Some(doc);
    for seg in prefix {
        match seg {
            Seg::Key(k) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                pointer.push('/');
                pointer.push_str(k);
                node = node.and_then(|n| n.get(k.as_str()));
            }
            Seg::Index(i) => {
                path.push_str(&format!("[{i}]"));
                pointer.push_str(&format!("/{i}"));
                node = node.and_then(|n| n.get(*i));
                if path.ends_with(&format!("components[{i}]")) {
                    component = node;
                }
            }
        }
    }
    let value = doc.pointer(&pointer).and_then(Value::as_str);
    let message = match (component, value) {
        (Some(c), Some(v)) => with_component(c, message, v),
        (None, Some(v)) => format!("{message} (value {v:?})"),
        _ => message.to_string(),
    };
    Problem { path: if path.is_empty() { "(document)".into() } else { path }, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_lock() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap()
    }

    #[test]
    fn own_lock_gives_a_valid_reproducible_sbom() {
        let lock = own_lock();
        let a = from_cargo_lock(&lock, "berth", "0.1.0").unwrap();
        let b = from_cargo_lock(&lock, "berth", "0.1.0").unwrap();
        let bytes = serde_json::to_vec_pretty(&a).unwrap();
        assert_eq!(bytes, serde_json::to_vec_pretty(&b).unwrap());
        assert!(a.pointer("/metadata/timestamp").is_none());
        assert_eq!(a["metadata"]["component"]["purl"], "pkg:cargo/berth@0.1.0");
        assert!(a["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));

        let summary = validate(&bytes).unwrap();
        assert_eq!(summary.spec_version, "1.5");
        assert!(summary.components > 100, "{} components", summary.components);
        assert_eq!(summary.purls.len(), summary.components);
        assert!(summary.purls.iter().all(|p| p.starts_with("pkg:cargo/")), "{:?}", summary.purls);
        assert!(!summary.purls.contains(&"pkg:cargo/berth@0.1.0".to_string()));

        // crates.io packages carry their checksum; the graph names real refs
        let serde = a["components"].as_array().unwrap().iter().find(|c| c["name"] == "serde").unwrap();
        assert_eq!(serde["hashes"][0]["alg"], "SHA-256");
        assert_eq!(serde["hashes"][0]["content"].as_str().unwrap().len(), 64);
        let root_deps =
            a["dependencies"].as_array().unwrap().iter().find(|d| d["ref"] == "pkg:cargo/berth@0.1.0").unwrap();
        assert!(
            root_deps["dependsOn"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d.as_str().unwrap().starts_with("pkg:cargo/tokio@"))
        );

        // another lock, another serial number; a timestamp only when asked
        let other = from_cargo_lock(&lock.replace("version = 4", "version = 4\n"), "berth", "0.1.0").unwrap();
        assert_ne!(other["serialNumber"], a["serialNumber"]);
        let stamped = from_cargo_lock_at(&lock, "berth", "0.1.0", Some("2024-01-01T00:00:00Z")).unwrap();
        assert_eq!(stamped["metadata"]["timestamp"], "2024-01-01T00:00:00Z");
    }

    #[test]
    fn a_workspace_member_gets_only_what_it_reaches() {
        let lock = own_lock();
        let bom = from_cargo_lock(&lock, "json-transform", "0.1.0").unwrap();
        let names: Vec<&str> =
            bom["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"tiny_http") && names.contains(&"berth-httpsig"), "{names:?}");
        assert!(!names.contains(&"tokio") && !names.contains(&"axum"), "berth's own dependencies leaked in: {names:?}");
        assert!(!names.contains(&"berth"));
        validate(&serde_json::to_vec(&bom).unwrap()).unwrap();
    }

    #[test]
    fn lock_dependency_forms_resolve() {
        let lock = r#"
version = 4

[[package]]
name = "app"
version = "1.0.0"
dependencies = ["dup 1.0.0", "dup 2.0.0+build.1", "solo"]

[[package]]
name = "dup"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0000000000000000000000000000000000000000000000000000000000000001"

[[package]]
name = "dup"
version = "2.0.0+build.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0000000000000000000000000000000000000000000000000000000000000002"

[[package]]
name = "solo"
version = "0.1.0"
source = "git+https://example.com/solo#abc"
"#;
        let bom = from_cargo_lock(lock, "app", "1.0.0").unwrap();
        let comps = bom["components"].as_array().unwrap();
        assert_eq!(comps.len(), 3);
        assert_eq!(comps[1]["purl"], "pkg:cargo/dup@2.0.0+build.1");
        assert!(comps[2].get("hashes").is_none(), "git sources have no crates.io checksum");
        let app = &bom["dependencies"][0];
        assert_eq!(app["ref"], "pkg:cargo/app@1.0.0");
        assert_eq!(
            app["dependsOn"],
            json!(["pkg:cargo/dup@1.0.0", "pkg:cargo/dup@2.0.0+build.1", "pkg:cargo/solo@0.1.0"])
        );
        let e = from_cargo_lock(&lock.replace("\"solo\"]", "\"ghost\"]"), "app", "1.0.0").unwrap_err();
        assert!(e.to_string().contains("package[0] (app 1.0.0).dependencies[2]"), "{e}");
    }

    #[test]
    fn a_1_4_example_validates() {
        let doc = json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.4",
            "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
            "version": 1,
            "metadata": {"component": {"type": "application", "name": "demo", "version": "1.0.0"}},
            "components": [
                {"type": "library", "name": "serde", "version": "1.0.200", "purl": "pkg:cargo/serde@1.0.200"},
                {"type": "library", "name": "left-pad", "version": "1.3.0", "purl": "pkg:npm/left-pad@1.3.0"}
            ]
        });
        let s = validate(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(s.spec_version, "1.4");
        assert_eq!(s.components, 2);
        assert_eq!(s.purls, vec!["pkg:cargo/serde@1.0.200", "pkg:npm/left-pad@1.3.0"]);
    }

    fn example_1_6() -> Value {
        json!({
            "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
            "version": 1,
            "metadata": {
                "timestamp": "2024-05-01T12:00:00Z",
                "lifecycles": [{"phase": "build"}],
                "component": {"type": "application", "bom-ref": "app", "name": "demo", "version": "1.0.0",
                              "purl": "pkg:cargo/demo@1.0.0"}
            },
            "components": [
                {"type": "library", "bom-ref": "pkg:cargo/serde@1.0.200", "name": "serde", "version": "1.0.200",
                 "purl": "pkg:cargo/serde@1.0.200",
                 "hashes": [{"alg": "SHA-256", "content": "a".repeat(64)}],
                 "components": [
                     {"type": "library", "name": "serde_derive", "version": "1.0.200", "purl": "pkg:cargo/serde_derive@1.0.200"}
                 ]},
                {"type": "cryptographic-asset", "name": "AES-128-GCM",
                 "cryptoProperties": {"assetType": "algorithm",
                                      "algorithmProperties": {"primitive": "ae", "mode": "gcm"}}}
            ],
            "dependencies": [{"ref": "app", "dependsOn": ["pkg:cargo/serde@1.0.200"]}]
        })
    }

    #[test]
    fn a_1_6_example_validates_against_the_vendored_schema() {
        let s = validate(&serde_json::to_vec(&example_1_6()).unwrap()).unwrap();
        assert_eq!(s.spec_version, "1.6");
        assert_eq!(s.components, 3);
        assert_eq!(s.purls, vec!["pkg:cargo/serde@1.0.200", "pkg:cargo/serde_derive@1.0.200"]);

        // schema problems name their place
        let mut bad = example_1_6();
        bad["components"][1]["type"] = json!("gadget");
        let e = validate(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(e.to_string().contains("components[1].type:"), "{e}");
        // and 1.6 purls are checked too
        let mut bad = example_1_6();
        bad["components"][0]["components"][0]["purl"] = json!("cargo/serde_derive");
        let e = validate(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(e.to_string().contains("components[0].components[0].purl:"), "{e}");
        assert!(e.to_string().contains("serde_derive"), "{e}");
    }

    #[test]
    fn a_bad_purl_fails_naming_the_component() {
        let lock = own_lock();
        let mut bom = from_cargo_lock(&lock, "berth", "0.1.0").unwrap();
        bom["components"][3]["purl"] = json!("not a purl");
        let name = bom["components"][3]["name"].as_str().unwrap().to_string();
        let e = validate(&serde_json::to_vec(&bom).unwrap()).unwrap_err();
        let SbomError::Invalid(problems) = &e else { panic!("{e}") };
        assert!(problems.iter().any(|p| p.path == "components[3].purl"), "{e}");
        assert!(e.to_string().contains(&format!("component {name:?}")), "{e}");
    }

    #[test]
    fn a_1_5_sbom_without_bom_format_fails() {
        let lock = own_lock();
        let mut bom = from_cargo_lock(&lock, "berth", "0.1.0").unwrap();
        bom.as_object_mut().unwrap().remove("bomFormat");
        let e = validate(&serde_json::to_vec(&bom).unwrap()).unwrap_err();
        assert!(e.to_string().contains("bomFormat: missing"), "{e}");
    }

    #[test]
    fn other_versions_and_non_json_are_refused() {
        let e = validate(br#"{"bomFormat":"CycloneDX","specVersion":"2.0"}"#).unwrap_err();
        assert!(matches!(e, SbomError::Unsupported(_)), "{e}");
        let e = validate(b"not json").unwrap_err();
        assert!(e.to_string().contains("(document): not JSON"), "{e}");
        let e = validate(br#"{"bomFormat":"CycloneDX"}"#).unwrap_err();
        assert!(e.to_string().contains("specVersion: missing"), "{e}");
    }
}
