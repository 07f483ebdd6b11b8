//! `http-probe`: an AisOpsFlow plugin (runner API v1) with one entrypoint, `probe`, that
//! GETs `config.base_url` + `input.path` and reports the status, the SHA-256 of the body
//! and the elapsed time. Its timeout is min(manifest `timeout_ms`, deadline - now).
//! An upstream failure is `502 upstream_failed`; running into the deadline is
//! `504 deadline_exceeded`.

use std::io::Read;
use std::time::{Duration, Instant};

use berth_httpsig::plugin::{Call, Entrypoint, Plugin, PluginError, run};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The manifest's `entrypoints.probe.timeout_ms`.
const TIMEOUT_MS: u64 = 5000;

fn main() {
    let plugin = Plugin {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        entrypoints: vec![Entrypoint { name: "probe", timeout_ms: TIMEOUT_MS, handler: Box::new(probe) }],
        health: None,
    };
    if let Err(e) = run(plugin) {
        eprintln!("http-probe: {e}");
        std::process::exit(1);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn probe(call: &Call) -> Result<Value, PluginError> {
    let base = match call.config.get("base_url") {
        Some(Value::String(s)) => s.trim_end_matches('/'),
        Some(_) => return Err(PluginError::invalid_request("config.base_url must be a string")),
        None => return Err(PluginError::invalid_request("config.base_url is required")),
    };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(PluginError::invalid_request("config.base_url must start with http:// or https://"));
    }
    let path = match call.input.get("path") {
        Some(Value::String(p)) if p.starts_with('/') => p.as_str(),
        Some(_) => return Err(PluginError::invalid_request("input.path must be a string starting with /")),
        None => return Err(PluginError::invalid_request("input.path is required")),
    };
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PluginError::invalid_request("input.path holds whitespace"));
    }
    let url = format!("{base}{path}");

    let timed_out = || {
        if call.deadline_bound {
            PluginError::deadline_exceeded("the probe could not finish before the request deadline")
        } else {
            PluginError::upstream_failed(format!("the upstream did not answer within {} ms", call.timeout.as_millis()))
        }
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(call.timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("aisopsflow-http-probe/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let start = Instant::now();
    let classify = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => timed_out(),
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => timed_out(),
        ureq::Error::BadUri(_) => PluginError::invalid_request("config.base_url + input.path is not a valid URL"),
        e => PluginError::upstream_failed(format!("GET {url} failed: {e}")),
    };
    let resp = agent.get(&url).call().map_err(classify)?;
    let status = resp.status().as_u16();
    let mut reader = resp.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if start.elapsed() >= call.timeout || e.kind() == std::io::ErrorKind::TimedOut {
                    return Err(timed_out());
                }
                return Err(PluginError::upstream_failed(format!("reading the body of {url} failed: {e}")));
            }
        };
        hasher.update(&buf[..n]);
        if start.elapsed() >= call.timeout {
            return Err(timed_out());
        }
    }
    let elapsed: Duration = start.elapsed();
    Ok(json!({
        "status": status,
        "body_sha256": hex(&hasher.finalize()),
        "elapsed_ms": elapsed.as_millis() as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_matches_the_binary() {
        let m: Value = serde_json::from_str(include_str!("../plugin.json")).unwrap();
        assert_eq!(m["name"], env!("CARGO_PKG_NAME"));
        assert_eq!(m["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(m["entrypoints"]["probe"]["timeout_ms"], TIMEOUT_MS);
        assert_eq!(m["entrypoints"]["probe"]["path"], "/v1/entrypoints/probe");
        assert_eq!(m["entrypoints"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
