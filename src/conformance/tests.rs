use super::case::{self, Area, BUILTIN, Case, Deadline, Placeholders, Signing, Statuses};
use super::report::{CaseResult, Received, Report, Sent, xml_escape};
use super::runner::{Schemas, leak};
use super::{ConformanceError, builtin_cases, parse_case, suite};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

fn case_json() -> Value {
    json!({
        "id": "x-health",
        "area": "availability",
        "description": "health",
        "request": {"method": "GET", "path": "/v1/health"},
        "expect": {"status": 200}
    })
}

fn parse(v: &Value) -> Result<Case, ConformanceError> {
    parse_case("test.json", &v.to_string())
}

#[test]
fn embedded_list_matches_the_case_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/cases");
    let mut on_disk = BTreeSet::new();
    for area in std::fs::read_dir(&root).unwrap() {
        let area = area.unwrap().path();
        for file in std::fs::read_dir(&area).unwrap() {
            let file = file.unwrap().path();
            let rel = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                BUILTIN.iter().find(|(n, _)| *n == rel).map(|(_, t)| *t).unwrap_or_default(),
                "{rel} is not embedded (add it to case::BUILTIN)"
            );
            on_disk.insert(rel);
        }
    }
    let embedded: BTreeSet<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(embedded, on_disk);
}

#[test]
fn builtin_suite_loads_and_covers_every_area() {
    let cases = builtin_cases().unwrap();
    assert!((25..=35).contains(&cases.len()), "{}", cases.len());
    let ids: BTreeSet<&str> = cases.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), cases.len());
    for area in Area::ALL {
        let n = cases.iter().filter(|c| c.area == area).count();
        assert!(n >= 3, "{area}: {n} cases");
    }
    // Each file sits in the directory of its area.
    for (name, text) in BUILTIN {
        let c = parse_case(name, text).unwrap();
        assert!(name.starts_with(&format!("{}/", c.area)), "{name} is in the wrong area directory");
    }
    // Availability runs first; areas stay grouped.
    assert_eq!(cases[0].area, Area::Availability);
    assert!(cases.windows(2).all(|w| w[0].area <= w[1].area));
}

#[test]
fn case_schema_refuses_bad_cases_with_pointers() {
    assert!(parse(&case_json()).is_ok());
    let bad = |edit: &dyn Fn(&mut Value), want: &str| {
        let mut v = case_json();
        edit(&mut v);
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.contains(want), "{want:?} not in {err}");
        assert!(err.starts_with("case test.json: "), "{err}");
    };
    bad(&|v| drop(v.as_object_mut().unwrap().remove("expect")), "\"expect\"");
    bad(&|v| v["surprise"] = json!(1), "surprise");
    bad(&|v| v["area"] = json!("speed"), "/area");
    bad(&|v| v["id"] = json!("Bad Id"), "/id");
    bad(&|v| v["request"]["signing"] = json!("sometimes"), "/request/signing");
    bad(&|v| v["request"]["path"] = json!("v1/health"), "/request/path");
    bad(&|v| v["request"]["deadline"] = json!("soon"), "/request/deadline");
    bad(&|v| v["expect"]["status"] = json!(99), "/expect/status");
    bad(&|v| v["expect"]["body_schema"] = json!("Health"), "/expect/body_schema");
    bad(
        &|v| {
            v["request"]["body"] = json!({});
            v["request"]["raw_body"] = json!("{");
        },
        "/request",
    );
    bad(&|v| v["request"]["merge"] = json!({"x": 1}), "/request/merge");
    assert!(parse_case("x.json", "{not json").unwrap_err().to_string().contains("not JSON"));
}

#[test]
fn absent_and_null_headers_differ() {
    let c = parse(&case_json()).unwrap();
    assert_eq!(c.request.runner_api.as_deref(), Some("1.0"));
    assert_eq!(c.request.deadline, Some(Deadline::Offset(case::DEFAULT_DEADLINE_MS)));
    assert_eq!(c.request.signing, Signing::Valid);
    let mut v = case_json();
    v["request"]["runner_api"] = Value::Null;
    v["request"]["deadline"] = Value::Null;
    let c = parse(&v).unwrap();
    assert_eq!((c.request.runner_api, c.request.deadline), (None, None));
    v["request"]["deadline"] = json!("past");
    assert_eq!(parse(&v).unwrap().request.deadline, Some(Deadline::Past));
    v["request"]["deadline"] = json!(-5);
    assert_eq!(parse(&v).unwrap().request.deadline, Some(Deadline::Offset(-5)));
    assert_eq!(Deadline::Past.at(10_000), 9_000);
    assert_eq!(Deadline::Offset(0).at(10_000), 10_000);
    assert_eq!(Deadline::Offset(250).at(10_000), 10_250);
    // A round trip keeps null and absent apart.
    let c = parse(&v).unwrap();
    assert_eq!(parse(&serde_json::to_value(&c).unwrap()).unwrap(), c);
}

#[test]
fn statuses_one_or_any() {
    let mut v = case_json();
    v["expect"]["status"] = json!([200, 502]);
    let c = parse(&v).unwrap();
    assert_eq!(c.expect.status, Statuses::Any(vec![200, 502]));
    assert!(c.expect.status.contains(502) && !c.expect.status.contains(500));
    assert_eq!(c.expect.status.to_string(), "one of 200, 502");
}

#[test]
fn placeholders_expand_everywhere() {
    let mut v = case_json();
    v["request"] =
        json!({"method": "{entrypoint_method}", "path": "{entrypoint_path}", "body": {"input": "{entrypoint}"}});
    v["expect"]["body_matches"] = json!({"properties": {"{entrypoint}": {"const": "{plugin_name}@{plugin_version}"}}});
    let c = parse(&v).unwrap();
    assert!(c.per_entrypoint());
    assert!(!parse(&case_json()).unwrap().per_entrypoint());
    let values = Placeholders {
        plugin_name: "demo".into(),
        plugin_version: "1.2.3".into(),
        entrypoint: Some(("probe".into(), "/v1/entrypoints/probe".into(), "POST".into())),
    };
    let e = c.expand(&values).unwrap();
    assert_eq!(e.request.method, "POST");
    assert_eq!(e.request.path, "/v1/entrypoints/probe");
    assert_eq!(e.request.body, Some(json!({"input": "probe"})));
    assert_eq!(e.expect.body_matches, Some(json!({"properties": {"probe": {"const": "demo@1.2.3"}}})));
    // `$example` alone makes a case per-entrypoint.
    let mut v = case_json();
    v["request"]["body"] = json!("$example");
    assert!(parse(&v).unwrap().per_entrypoint());
    // Without an entrypoint, its placeholders stay (the case then runs once).
    let plain = Placeholders { plugin_name: "demo".into(), ..Placeholders::default() };
    assert_eq!(c.expand(&plain).unwrap().request.path, "{entrypoint_path}");
}

#[test]
fn extra_directories_add_cases_and_ids_stay_unique() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/one.json"), case_json().to_string()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a case").unwrap();
    let all = suite(&[dir.path()]).unwrap();
    assert_eq!(all.len(), builtin_cases().unwrap().len() + 1);
    assert_eq!(all.last().unwrap().id, "x-health");

    let mut dup = case_json();
    dup["id"] = json!("availability-health");
    std::fs::write(dir.path().join("mine/two.json"), dup.to_string()).unwrap();
    match suite(&[dir.path()]).unwrap_err() {
        ConformanceError::DuplicateId { id, .. } => assert_eq!(id, "availability-health"),
        e => panic!("{e}"),
    }
    std::fs::write(dir.path().join("mine/two.json"), "{}").unwrap();
    assert!(suite(&[dir.path()]).unwrap_err().to_string().contains("two.json"));
}

#[test]
fn openapi_references_validate_bodies() {
    let mut s = Schemas::default();
    let ok = json!({"error": {"code": "not_found", "message": "no", "retryable": false}});
    assert!(s.check("#/components/schemas/ErrorBody", &ok).is_ok());
    let bad = json!({"error": {"code": "oops", "message": "no"}});
    let err = s.check("#/components/schemas/ErrorBody", &bad).unwrap_err();
    assert!(err.contains("ErrorBody") && err.contains("/error"), "{err}");
    assert!(s.check("#/components/schemas/Health", &json!({"status": "ok"})).is_ok());
    assert!(s.check("#/components/schemas/Health", &json!({"status": "fine"})).is_err());
    assert!(s.check("#/components/schemas/Info", &json!({"name": "x"})).is_err());
    assert!(s.check("#/components/schemas/InvokeRequest", &json!({"input": 1, "extra": true})).is_ok());
    assert!(s.check("#/components/schemas/InvokeRequest", &json!({"input": 1, "config": 3})).is_err());
    assert!(s.check("#/components/schemas/Nope", &ok).unwrap_err().contains("not in runner-api"));
    // Every reference the built-in suite uses exists.
    for c in builtin_cases().unwrap() {
        for r in [&c.expect.body_schema, &c.expect.request_schema].into_iter().flatten() {
            assert!(s.check(r, &json!(null)).is_err_and(|e| !e.contains("not in runner-api")), "{}: {r}", c.id);
        }
    }
}

#[test]
fn leaks_are_found() {
    let key = b"super-secret-runner-key";
    assert_eq!(leak(r#"{"error":{"code":"internal","message":"internal error","retryable":false}}"#, key), None);
    assert!(leak("thread 'main' panicked at src/main.rs:3:5", key).is_some());
    assert!(leak("failed at src/handler.rs:42", key).is_some());
    assert!(leak("Traceback (most recent call last):\n  File \"x.py\"", key).is_some());
    assert!(leak("bad key super-secret-runner-key", key).unwrap().contains("key"));
    assert!(leak(&format!("bad key {}", hex::encode(key)), key).is_some());
    // A short key cannot be told from text: not searched for.
    assert_eq!(leak("abc", b"abc"), None);
}

fn result(id: &str, area: Area, passed: bool, reason: &str) -> CaseResult {
    CaseResult {
        case_id: id.to_string(),
        area,
        description: "a <case> & \"more\"".to_string(),
        entrypoint: (area == Area::Contract).then(|| "probe".to_string()),
        sent: Sent { method: "GET".into(), path: "/v1/health".into(), headers: vec![], body: String::new() },
        expected: parse(&case_json()).unwrap().expect,
        received: Some(Received { status: 500, headers: vec![], body: "{\"a\":\"<\u{1}>\"}".into(), elapsed_ms: 1234 }),
        passed,
        skipped: false,
        reason: reason.to_string(),
    }
}

#[test]
fn junit_has_a_suite_per_area_and_escapes() {
    let report = Report {
        target: "http://127.0.0.1:1/".into(),
        plugin: "demo".into(),
        version: "1.0.0".into(),
        results: vec![
            result("availability-health", Area::Availability, true, "as expected"),
            result("contract-x", Area::Contract, false, "status 500 (expected 200) & <more>"),
        ],
    };
    let xml = report.to_junit();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "));
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    for area in Area::ALL {
        assert!(xml.contains(&format!("<testsuite name=\"{area}\" ")), "{area}: {xml}");
    }
    assert!(xml.contains("<testsuite name=\"contract\" tests=\"1\" failures=\"1\""));
    assert!(xml.contains("<testsuite name=\"timeouts\" tests=\"0\" failures=\"0\""));
    assert!(xml.contains("name=\"availability-health\" time=\"1.234\"/>"), "{xml}");
    assert!(xml.contains("name=\"contract-x[probe]\""));
    assert!(xml.contains("message=\"status 500 (expected 200) &amp; &lt;more&gt;\""), "{xml}");
    assert!(xml.contains("a &lt;case&gt; &amp; &quot;more&quot;"));
    assert!(!xml.contains('\u{1}'));
    assert_eq!(xml.matches("<testsuite ").count(), 6);
    assert_eq!(xml.matches("</testsuite>").count(), 6);
    assert_eq!(xml.matches("<failure ").count(), 1);
    assert_eq!(xml_escape("a'b\n"), "a&apos;b&#10;");

    let summary = report.summary();
    assert!(summary.contains("FAILED contract-x[probe] (contract)"), "{summary}");
    assert!(summary.contains("1 of 2 passed, 1 failed"), "{summary}");
    assert!(!report.is_success());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["results"][1]["case_id"], "contract-x");
    assert_eq!(json["results"][1]["area"], "contract");
}

#[test]
fn sent_requests_carry_no_key_material() {
    let key = b"0123456789-the-key";
    let headers = vec![
        ("Signature".to_string(), "sig1=:abc=:".to_string()),
        ("X-Debug".to_string(), "0123456789-the-key".to_string()),
    ];
    let sent = Sent::new(&reqwest::Method::POST, "/v1/x", &headers, b"{\"k\":\"0123456789-the-key\"}", key);
    let text = serde_json::to_string(&sent).unwrap();
    assert!(!text.contains("0123456789-the-key") && !text.contains("abc="), "{text}");
    assert!(text.contains("<redacted>"));
}

#[test]
fn truncates_long_bodies() {
    let long = "é".repeat(3000);
    let t = super::report::truncate(&long);
    assert!(t.len() < 2100 && t.ends_with("(6000 bytes in all)"), "{}", t.len());
}
