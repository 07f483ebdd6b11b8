//! Starts the `json-transform` binary and checks it against the runner API v1 contract.

mod common;

use common::{Opts, PluginProc, start};
use serde_json::json;

const EP: &str = "/v1/entrypoints/transform";
const BODY: &[u8] =
    br#"{"input": {"a": "x", "b": 2}, "config": {"ops": [{"op": "pick", "fields": ["a"]}]}, "extra": "ignored"}"#;

fn plugin() -> PluginProc {
    start(env!("CARGO_BIN_EXE_json-transform"))
}

#[test]
fn health_and_info() {
    common::health_and_info(&plugin(), "json-transform", env!("CARGO_PKG_VERSION"), &["transform"]);
}

#[test]
fn authentication() {
    common::authentication(&plugin(), EP, BODY);
}

#[test]
fn versions() {
    common::versions(&plugin(), EP, BODY);
}

#[test]
fn deadlines() {
    common::deadlines(&plugin(), EP, BODY);
}

#[test]
fn bad_requests() {
    common::bad_requests(&plugin(), EP);
}

#[test]
fn transforms() {
    let p = plugin();
    let body = json!({
        "input": [{"first": "ada", "id": 1}, {"first": "alan", "id": 2, "x": true}],
        "config": {"ops": [
            {"op": "rename", "from": "first", "to": "name"},
            {"op": "uppercase", "field": "name"},
            {"op": "pick", "fields": ["name", "id"]}
        ]}
    })
    .to_string();
    let r = p.call("POST", EP, body.as_bytes(), &Opts::default());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, json!({"output": [{"name": "ADA", "id": 1}, {"name": "ALAN", "id": 2}]}));

    let r = p.call("POST", EP, BODY, &Opts::default());
    assert_eq!(r.body, json!({"output": {"a": "x"}}));

    let bad = json!({"input": {"a": 1}, "config": {"ops": [{"op": "pick", "fields": ["a"]}, {"op": "uppercase", "field": "a"}]}})
        .to_string();
    let r = p.call("POST", EP, bad.as_bytes(), &Opts::default());
    r.assert_error(400, "invalid_request");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("ops[1]"), "{msg}");

    let unknown = json!({"input": {}, "config": {"ops": [{"op": "explode"}]}}).to_string();
    let r = p.call("POST", EP, unknown.as_bytes(), &Opts::default());
    r.assert_error(400, "invalid_request");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("ops[0]"));
}
