//! Starts the `http-probe` binary and checks it against the runner API v1 contract, with
//! a local upstream HTTP server on the loopback interface.

#[path = "../../json-transform/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Opts, PluginProc, now_ms, start};
use serde_json::json;

const EP: &str = "/v1/entrypoints/probe";

fn plugin() -> PluginProc {
    start(env!("CARGO_BIN_EXE_http-probe"))
}

/// A loopback upstream answering `n` requests with `body` after `delay`.
fn upstream(n: usize, delay: Duration, body: &'static str) -> (String, JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { break };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let k = s.read(&mut buf).unwrap_or(0);
            seen.push(String::from_utf8_lossy(&buf[..k]).lines().next().unwrap_or("").to_string());
            std::thread::sleep(delay);
            let _ =
                write!(s, "HTTP/1.1 201 Created\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        seen
    });
    (base, h)
}

fn probe_body(base: &str, path: &str) -> Vec<u8> {
    json!({"input": {"path": path}, "config": {"base_url": base}}).to_string().into_bytes()
}

#[test]
fn health_and_info() {
    common::health_and_info(&plugin(), "http-probe", env!("CARGO_PKG_VERSION"), &["probe"]);
}

#[test]
fn authentication() {
    let (base, up) = upstream(1, Duration::ZERO, "ok");
    common::authentication(&plugin(), EP, &probe_body(&base, "/auth"));
    assert_eq!(up.join().unwrap(), vec!["GET /auth HTTP/1.1"]);
}

#[test]
fn versions() {
    let (base, up) = upstream(3, Duration::ZERO, "ok");
    common::versions(&plugin(), EP, &probe_body(&base, "/v"));
    assert_eq!(up.join().unwrap().len(), 3);
}

#[test]
fn deadlines() {
    common::deadlines(&plugin(), EP, &probe_body("http://127.0.0.1:9", "/"));
}

#[test]
fn bad_requests() {
    let p = plugin();
    common::bad_requests(&p, EP);
    for body in [
        json!({"input": {"path": "/x"}, "config": {}}),
        json!({"input": {"path": "/x"}, "config": {"base_url": "ftp://h"}}),
        json!({"input": {"path": "x"}, "config": {"base_url": "http://h"}}),
        json!({"input": {}, "config": {"base_url": "http://h"}}),
    ] {
        p.call("POST", EP, body.to_string().as_bytes(), &Opts::default()).assert_error(400, "invalid_request");
    }
}

#[test]
fn probes_a_local_upstream() {
    let (base, up) = upstream(1, Duration::ZERO, "hello");
    let p = plugin();
    let r = p.call("POST", EP, &probe_body(&base, "/status?x=1"), &Opts::default());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["output"]["status"], 201);
    assert_eq!(r.body["output"]["body_sha256"], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert!(r.body["output"]["elapsed_ms"].is_u64());
    assert_eq!(up.join().unwrap(), vec!["GET /status?x=1 HTTP/1.1"]);
}

#[test]
fn dead_upstream_is_502() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = plugin();
    let r = p.call("POST", EP, &probe_body(&format!("http://127.0.0.1:{port}"), "/"), &Opts::default());
    r.assert_error(502, "upstream_failed");
    assert_eq!(r.body["error"]["retryable"], true);
}

#[test]
fn slow_upstream_hits_the_deadline_without_blocking_health() {
    let (base, up) = upstream(1, Duration::from_secs(3), "late");
    let p = plugin();
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let t = Instant::now();
            let o = Opts { deadline_ms: Some(now_ms() + 600), ..Opts::default() };
            let r = p.call("POST", EP, &probe_body(&base, "/slow"), &o);
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        let h = p.get("/v1/health");
        assert_eq!(h.status, 200);
        assert!(t.elapsed() < Duration::from_millis(500), "health blocked: {:?}", t.elapsed());
        let (r, took) = slow.join().unwrap();
        r.assert_error(504, "deadline_exceeded");
        assert!(took < Duration::from_millis(1500), "not prompt: {took:?}");
    });
    up.join().unwrap();
}
