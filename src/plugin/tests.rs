//! Every example under `schemas/examples` is checked here, plus a focused test per semantic
//! rule of the plugin manifest.

use super::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.ends_with("expected.json"))
        .collect();
    files.sort();
    files
}

fn schema_for_dir(name: &str) -> Schema {
    Schema::ALL
        .into_iter()
        .find(|s| s.file_name().strip_suffix(".v1.schema.json") == Some(name))
        .unwrap_or_else(|| panic!("examples/{name} names no schema"))
}

#[test]
fn embedded_schemas_compile_and_match_the_files() {
    for schema in Schema::ALL {
        assert!(schema.validator().is_ok(), "{}: {:?}", schema.file_name(), schema.validator().as_ref().err());
        let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(schema.file_name());
        assert_eq!(read_json(&on_disk), serde_json::from_str::<Value>(schema.source()).expect("parses"));
        assert!(examples_dir().join(schema.file_name().trim_end_matches(".v1.schema.json")).is_dir());
    }
}

#[derive(serde::Deserialize)]
struct Expected {
    pointer: String,
    check: String,
}

#[test]
fn every_example_behaves_as_labelled() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples dir") {
        let dir = entry.expect("entry").path();
        let name = dir.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        if name == "runner-policy" {
            continue; // TOML, checked by runner::policy's tests
        }
        let schema = schema_for_dir(name);

        let valid = json_files(&dir.join("valid"));
        assert!(!valid.is_empty(), "{}: no valid examples", dir.display());
        for file in valid {
            let doc = read_json(&file);
            if let Err(errors) = validate_document(schema, &doc) {
                panic!("{} should be valid:\n{errors}", file.display());
            }
            seen += 1;
        }

        let expected: BTreeMap<String, Expected> =
            serde_json::from_value(read_json(&dir.join("invalid/expected.json"))).expect("expected.json shape");
        let invalid = json_files(&dir.join("invalid"));
        let names: Vec<String> =
            invalid.iter().map(|p| p.file_name().and_then(|n| n.to_str()).expect("name").to_string()).collect();
        assert_eq!(names, expected.keys().cloned().collect::<Vec<_>>(), "{}: expected.json out of step", dir.display());
        for file in invalid {
            let name = file.file_name().and_then(|n| n.to_str()).expect("name");
            let want = &expected[name];
            let doc = read_json(&file);
            let errors = validate_document(schema, &doc).expect_err(&format!("{} should be invalid", file.display()));
            assert!(errors.has(&want.pointer), "{}: no problem at {:?}; got:\n{errors}", file.display(), want.pointer);
            // Schema-labelled examples fail under any 2020-12 validator; semantic ones pass the
            // schema and are caught only by berth's own rules.
            let schema_only = schema.check(&doc);
            match want.check.as_str() {
                "schema" => assert!(
                    schema_only.iter().any(|p| p.pointer == want.pointer),
                    "{}: the schema alone should flag {:?}: {schema_only:?}",
                    file.display(),
                    want.pointer
                ),
                "semantic" => {
                    assert!(schema_only.is_empty(), "{}: should pass the schema: {schema_only:?}", file.display())
                }
                other => panic!("{name}: unknown check {other:?}"),
            }
            seen += 1;
        }
    }
    assert!(seen > 50, "only {seen} examples found");
}

fn full() -> Value {
    read_json(&examples_dir().join("plugin-manifest/valid/full.json"))
}

fn problems(doc: &Value, repository: Option<&str>) -> Vec<Problem> {
    validate(doc, repository).expect_err("should be invalid").problems
}

fn pointers(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.pointer.as_str()).collect()
}

#[test]
fn full_example_round_trips_through_the_types() {
    let doc = full();
    let manifest = validate(&doc, Some("aisopsflow/http-probe")).expect("valid");
    assert_eq!(manifest.version, semver::Version::new(1, 2, 0));
    assert_eq!(manifest.runtime.port(), 8080);
    assert!(manifest.has_capability(Capability::OutboundHttp));
    assert_eq!(manifest.outbound_hosts().len(), 2);
    assert_eq!(manifest.entrypoints["probe"].method, HttpMethod::Post);
    let reference = manifest.runtime.image_reference().expect("parses");
    assert_eq!(reference.repository, "aisopsflow/http-probe");
    assert_eq!(serde_json::to_value(&manifest).expect("serialises"), doc);
}

#[test]
fn runner_api_requirement() {
    let compat = |req: &str| Compatibility { runner_api: req.into(), min_core: None, min_runner: None };
    assert!(compat("1.0").accepts_runner_api(1, 7));
    assert!(!compat("1.0").accepts_runner_api(2, 0));
    assert!(compat("^1.2").accepts_runner_api(1, 3));
    assert!(!compat("^1.2").accepts_runner_api(1, 1));
    assert!(!compat("~1.2").accepts_runner_api(1, 3));
    assert!(compat(">=1.1").accepts_runner_api(2, 0));
}

#[test]
fn tag_only_image_reads_well() {
    let mut doc = full();
    doc["runtime"]["image"] = json!("registry.aisopsflow.dev/aisopsflow/http-probe:v1");
    let errors = validate(&doc, None).expect_err("tag only");
    assert_eq!(
        errors.to_string(),
        "/runtime/image: must be pinned by digest (…@sha256:…), found tag \"v1\"",
        "one problem only: the publisher check is skipped, not confused, by an unpinned image"
    );
}

#[test]
fn publisher_must_own_the_given_repository() {
    let doc = full();
    assert!(validate(&doc, Some("aisopsflow/http-probe")).is_ok());
    let found = problems(&doc, Some("mallory/http-probe"));
    assert_eq!(pointers(&found), ["/publisher"]);
    assert!(found[0].message.contains("\"mallory\""), "{}", found[0]);
    // The given repository wins over the one in runtime.image (mirrors move images).
    assert!(validate(&doc, Some("aisopsflow/mirrored/http-probe")).is_ok());
    let found = problems(&doc, Some("http-probe"));
    assert_eq!(pointers(&found), ["/publisher"]);
    assert!(found[0].message.contains("no publisher namespace"), "{}", found[0]);
}

#[test]
fn publisher_defaults_to_the_image_repository() {
    let mut doc = full();
    doc["runtime"]["image"] = json!(format!("registry.example.com/other/http-probe@sha256:{}", "0".repeat(64)));
    assert_eq!(pointers(&problems(&doc, None)), ["/publisher"]);
    doc["runtime"]["image"] = json!(format!("registry.example.com/http-probe@sha256:{}", "0".repeat(64)));
    assert_eq!(pointers(&problems(&doc, None)), ["/runtime/image"]);
}

#[test]
fn outbound_hosts_are_checked_one_by_one() {
    let mut doc = full();
    doc["network"]["outbound_hosts"] =
        json!(["ok.example.com", "*.example.com", "192.168.1.1", "ok.example.com:99999", "[2001:db8::1]:443"]);
    let found = problems(&doc, None);
    assert_eq!(
        pointers(&found),
        [
            "/network/outbound_hosts/1",
            "/network/outbound_hosts/2",
            "/network/outbound_hosts/3",
            "/network/outbound_hosts/4"
        ]
    );
    assert!(found[0].message.contains("wildcard"));
    assert!(found[1].message.contains("IP address"));
    assert!(found[2].message.contains("port"));
    assert!(found[3].message.contains("IP address"));
}

#[test]
fn outbound_http_needs_hosts_and_hosts_need_outbound_http() {
    let mut doc = full();
    doc.as_object_mut().expect("object").remove("network");
    let found = problems(&doc, None);
    assert_eq!(pointers(&found), ["/capabilities/0"]);
    assert!(found[0].message.contains("outbound_http"));

    let mut doc = full();
    doc["capabilities"] = json!(["secrets_read"]);
    let found = problems(&doc, None);
    assert_eq!(pointers(&found), ["/network/outbound_hosts"]);
    assert!(found[0].message.contains("outbound_http capability is not requested"));
}

#[test]
fn secrets_read_needs_secrets_and_secrets_need_secrets_read() {
    let mut doc = full();
    doc["secrets"] = json!([]);
    assert_eq!(pointers(&problems(&doc, None)), ["/capabilities/1"]);

    let mut doc = full();
    doc["capabilities"] = json!(["outbound_http", "metrics"]);
    let found = problems(&doc, None);
    assert_eq!(pointers(&found), ["/secrets"]);
    assert!(found[0].message.contains("secrets_read"));
}

#[test]
fn entrypoint_paths_live_under_v1_entrypoints() {
    let mut doc = full();
    doc["entrypoints"]["a/b"] = json!({"path": "/v1/entrypoints/", "method": "POST", "timeout_ms": 5});
    doc["entrypoints"]["probe"]["path"] = json!("/v1/entrypoints/probe/extra");
    let found = problems(&doc, None);
    // "a/b" is also not a label (schema); its pointer escapes the '/'.
    assert_eq!(pointers(&found), ["/entrypoints/a~1b", "/entrypoints/a~1b/path", "/entrypoints/probe/path"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut doc = full();
    doc["name"] = json!("Bad Name");
    doc["version"] = json!("one");
    doc["runtime"]["image"] = json!("registry.aisopsflow.dev/aisopsflow/http-probe:latest");
    doc["capabilities"] = json!(["secrets_read", "bogus"]);
    doc["network"]["outbound_hosts"] = json!(["*.example.com"]);
    doc["entrypoints"]["probe"]["path"] = json!("/run");
    doc["extra"] = json!(1);
    doc.as_object_mut().expect("object").remove("license");
    let errors = validate(&doc, Some("someone/http-probe")).expect_err("many problems");
    assert_eq!(
        pointers(&errors.problems),
        [
            "",
            "/capabilities/1",
            "/entrypoints/probe/path",
            "/extra",
            "/name",
            "/network/outbound_hosts",
            "/network/outbound_hosts/0",
            "/publisher",
            "/runtime/image",
            "/version",
        ],
        "\n{errors}"
    );
    assert_eq!(errors.to_string().lines().count(), errors.len());
    assert!(errors.to_string().starts_with("(document): missing required field \"license\""), "{errors}");
}

#[test]
fn other_documents_deserialise() {
    let report =
        validate_verification_report(&read_json(&examples_dir().join("verification-report/valid/verified.json")))
            .expect("valid report");
    assert_eq!(report.vulnerabilities.medium, 1);
    let status = validate_lifecycle_status(&read_json(
        &examples_dir().join("lifecycle-status/valid/deprecated-by-version.json"),
    ))
    .expect("valid status");
    assert_eq!(status.replacement.as_deref(), Some("http-probe@1.3.0"));
    let record =
        validate_publisher_record(&read_json(&examples_dir().join("publisher-record/valid/two-keys-one-revoked.json")))
            .expect("valid record");
    assert!(record.active_key("aisopsflow-2025").is_some());
    assert!(record.active_key("aisopsflow-2024").is_none());
}

#[test]
fn not_an_object_is_one_problem() {
    let errors = validate(&json!([1, 2]), None).expect_err("array");
    assert_eq!(pointers(&errors.problems), [""]);
}

#[test]
fn runner_api_openapi_parses_and_its_refs_resolve() {
    let doc = read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/runner-api.v1.openapi.json"));
    assert_eq!(doc["openapi"], "3.1.0");
    fn walk<'a>(value: &'a Value, refs: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    refs.push(r);
                }
                map.values().for_each(|v| walk(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(&doc, &mut refs);
    assert!(refs.len() > 20);
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local refs are used"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    // The error codes are the contract's, one for one.
    let codes = doc.pointer("/components/schemas/ErrorCode/enum").and_then(Value::as_array).expect("codes");
    assert_eq!(codes.len(), 8);
}

#[test]
fn times_order_by_instant_not_by_text() {
    use crate::plugin::documents::time_order;
    use std::cmp::Ordering;
    // As text "…21Z" sorts after "…21.500Z"; as instants it is earlier.
    assert_eq!(time_order("2026-11-26T02:13:21Z", "2026-11-26T02:13:21.500Z"), Ordering::Less);
    assert_eq!(time_order("2026-11-26T02:13:22Z", "2026-11-26T02:13:21.999Z"), Ordering::Greater);
    assert_eq!(time_order("not a time", "2026-11-26T02:13:21Z"), Ordering::Less);
}
