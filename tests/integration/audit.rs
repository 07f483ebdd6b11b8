//! `berth audit verify` / `show` on a log written through the library: a valid chain exits 0,
//! one edited byte in the middle line exits 1 naming that line.

use berth::runner::audit::AuditLog;
use serde_json::json;
use std::process::{Command, Output};

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn verify_passes_then_names_the_edited_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let p = path.to_str().unwrap();
    {
        let log = AuditLog::open(&path).unwrap();
        log.append("pull", "127.0.0.1:5000/acme/probe@sha256:ab", json!({"bytes": 1234})).unwrap();
        log.append("start", "acme/probe", json!({"pid": 42})).unwrap();
        log.append("stop", "acme/probe", json!({"exit": 0})).unwrap();
    }

    let o = berth(&["audit", "verify", p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("3 records"), "{}", text(&o));

    let o = berth(&["audit", "verify", p, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["records"], 3);
    let head = v["head"].as_str().unwrap().to_string();

    let o = berth(&["audit", "show", p, "--event", "start", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let shown: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(shown.len(), 1, "{}", text(&o));
    assert!(shown[0].contains("\"pid\":42"));

    // One byte of the middle line's subject changed.
    let mut bytes = std::fs::read(&path).unwrap();
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let at = second + std::str::from_utf8(&bytes[second..]).unwrap().find("acme/probe").unwrap();
    bytes[at] = b'A';
    std::fs::write(&path, &bytes).unwrap();

    let o = berth(&["audit", "verify", p]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("line 2"), "{}", text(&o));
    let o = berth(&["audit", "verify", p, "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["line"], 2);

    // Removing the last line is invisible without the anchor, and caught with it.
    let text_now = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text_now.lines().take(1).collect();
    std::fs::write(&path, format!("{}\n", kept.join("\n"))).unwrap();
    assert_eq!(berth(&["audit", "verify", p]).status.code(), Some(0));
    let o = berth(&["audit", "verify", p, "--anchor", &head]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
