//! `berth publisher`, `berth lifecycle` and `berth tenant` against a real `berth serve` in
//! curated mode: the whole publisher flow through the command line, and its refusals.

use crate::common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

const ADMIN_PASSWORD: &str = "operator-password";

/// A curated-mode server with one operator account, `admin`.
fn start(dir: &Path) -> BerthProcess {
    let hash = berth::registry::auth::hash_password(ADMIN_PASSWORD).unwrap();
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nanonymous_pull = true\n[[auth.accounts]]\nname = \"admin\"\npassword_hash = \"{hash}\"\nnamespaces = [\"*\"]\n\n\
             [catalog]\nmode = \"curated\"\noperators = [\"admin\"]\n\n[verification]\nsettle_ms = 200\nconformance = false\n"
        ),
    )
    .unwrap();
    BerthProcess::spawn(&dir.join("data"), &["--config", config.to_str().unwrap()])
}

#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Admin,
    Publisher(&'a str),
}

/// `berth ARGS` against `server` with the credentials of `who`, in the environment as a
/// user would set them (and nothing inherited from the test's environment).
fn berth(dir: &Path, server: &str, who: As<'_>, args: &[&str]) -> Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    c.current_dir(dir).env("BERTH_LOG", "warn").env("BERTH_SERVER", server);
    for v in ["BERTH_CATALOG_USER", "BERTH_CATALOG_PASSWORD", "BERTH_PUBLISHER_TOKEN"] {
        c.env_remove(v);
    }
    match who {
        As::Nobody => {}
        As::Admin => {
            c.env("BERTH_CATALOG_USER", "admin").env("BERTH_CATALOG_PASSWORD", ADMIN_PASSWORD);
        }
        As::Publisher(token) => {
            c.env("BERTH_PUBLISHER_TOKEN", token);
        }
    }
    c.args(args).output().expect("run berth")
}

fn stdout(out: &Output, what: &str) -> String {
    String::from_utf8(ok(out, what)).unwrap()
}

/// Asserts that `out` failed with a `berth: …` line containing every one of `parts`.
fn refused(out: &Output, what: &str, parts: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.starts_with("berth: "), "{what}: {err}");
    for p in parts {
        assert!(err.contains(p), "{what}: {p:?} not in {err}");
    }
}

/// Publishes artifacts/plugins/json-transform as `acme/json-transform` signed with
/// `<dir>/acme.key`, pushing with the publisher's token; returns the reference by digest.
fn publish_as_acme(dir: &Path, host: &str, token: &str) -> String {
    publish_as(dir, host, &third_party_plugin(dir, "acme", "0.1.0"), "acme", "acme", token)
}

#[test]
fn publisher_flow_through_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for who in ["acme", "acme2"] {
        ok(&berth_in(d, &["key", "generate", "--output-prefix", who]), "key generate");
    }
    let server = start(d);
    let url = server.url.as_str();
    let host = url.trim_start_matches("http://");

    // Registration is anonymous and waits for an operator.
    let out = berth(
        d,
        url,
        As::Nobody,
        &[
            "publisher",
            "register",
            "acme",
            "--display-name",
            "Acme Tools",
            "--support",
            "support@acme.example",
            "--security",
            "https://acme.example/security",
            "--key",
            "acme.pub",
        ],
    );
    assert_eq!(stdout(&out, "register"), "acme: pending\n");

    // Approving takes an operator: without credentials the refusal names the problem.
    refused(
        &berth(d, url, As::Nobody, &["publisher", "approve", "acme"]),
        "approve without credentials",
        &["credentials are required", "(HTTP 401)", "--user"],
    );
    let out = berth(d, url, As::Admin, &["publisher", "approve", "acme"]);
    let approved = stdout(&out, "approve");
    assert!(approved.starts_with("acme: approved\nrecord sha256:"), "{approved}");
    assert!(approved.contains("berth/publishers/acme"), "{approved}");
    let listed = stdout(&berth(d, url, As::Nobody, &["publisher", "list"]), "list");
    assert!(listed.starts_with("acme ") && listed.contains("approved") && listed.contains("Acme Tools"), "{listed}");

    // A push token: only the secret on standard output.
    let out = berth(d, url, As::Admin, &["publisher", "token", "acme", "--description", "ci"]);
    let token = stdout(&out, "token").trim_end().to_string();
    assert!(token.starts_with("berth_pt_") && !token.contains(char::is_whitespace), "{token:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("acme/*"), "the note names the namespace");
    let tokens = stdout(&berth(d, url, As::Publisher(&token), &["publisher", "tokens", "acme"]), "tokens");
    assert_eq!(tokens.lines().count(), 1, "{tokens}");
    assert!(tokens.contains("active") && tokens.contains("ci"), "{tokens}");
    let token_id = tokens.split_whitespace().next().unwrap().to_string();

    // The token pushes a signed version; submissions show it.
    let reference = publish_as_acme(d, host, &token);
    let digest = reference.rsplit_once('@').unwrap().1.to_string();
    let subs = stdout(&berth(d, url, As::Publisher(&token), &["publisher", "submissions", "acme"]), "submissions");
    let mut lines = subs.lines();
    assert!(lines.next().unwrap().starts_with("REPOSITORY"), "{subs}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..3], ["acme/json-transform", "0.1.0", &digest[..19]], "{subs}");

    // Lifecycle: the publisher deprecates its version; insecure is an operator's decision.
    let out = berth(
        d,
        url,
        As::Publisher(&token),
        &[
            "lifecycle",
            &reference,
            "--status",
            "deprecated",
            "--reason",
            "use 0.2",
            "--replacement",
            "json-transform@0.2.0",
        ],
    );
    let changed = stdout(&out, "lifecycle deprecated");
    assert!(changed.starts_with(&format!("acme/json-transform@{digest}: deprecated by publisher:acme")), "{changed}");
    refused(
        &berth(d, url, As::Publisher(&token), &["lifecycle", &reference, "--status", "insecure", "--reason", "cve"]),
        "a publisher marking its version insecure",
        &["may only deprecate", "(HTTP 403)"],
    );
    let subs = stdout(
        &berth(d, url, As::Publisher(&token), &["publisher", "submissions", "acme", "--json"]),
        "submissions --json",
    );
    let subs: Value = serde_json::from_str(&subs).unwrap();
    assert_eq!(subs["submissions"][0]["lifecycle"], "deprecated", "{subs:#}");

    // Key rotation by the publisher: add acme2's key, revoke the first.
    let out = berth(d, url, As::Publisher(&token), &["publisher", "add-key", "acme", "--key", "acme2.pub"]);
    assert!(stdout(&out, "add-key").contains("; record sha256:"));
    let me: Value = serde_json::from_str(&stdout(
        &berth(d, url, As::Publisher(&token), &["publisher", "show", "acme", "--json"]),
        "show",
    ))
    .unwrap();
    let first = me["keys"][0]["id"].as_str().unwrap().to_string();
    let out = berth(d, url, As::Publisher(&token), &["publisher", "revoke-key", "acme", &first]);
    assert!(stdout(&out, "revoke-key").starts_with(&format!("key {first} of acme: revoked; record sha256:")));
    let shown = stdout(&berth(d, url, As::Admin, &["publisher", "show", "acme"]), "show");
    assert!(shown.contains(&format!("key           {first} revoked ")), "{shown}");
    assert!(shown.contains("state         approved (") && shown.contains(" by admin)"), "{shown}");

    // Tenants: opt in, list, opt out; only operators.
    refused(
        &berth(d, url, As::Publisher(&token), &["tenant", "opt-in", "t1", "acme"]),
        "a publisher opting a tenant in",
        &["is not a catalog operator", "(HTTP 403)"],
    );
    let out = berth(d, url, As::Admin, &["tenant", "opt-in", "t1", "acme"]);
    assert_eq!(stdout(&out, "opt-in"), "tenant t1: opted in to acme\n");
    let list = stdout(&berth(d, url, As::Admin, &["tenant", "list", "t1"]), "tenant list");
    assert!(list.lines().any(|l| l.split_whitespace().eq(["acme", "opted", "in"])), "{list}");
    ok(&berth(d, url, As::Admin, &["tenant", "opt-out", "t1", "acme"]), "opt-out");
    refused(&berth(d, url, As::Admin, &["tenant", "opt-out", "t1", "acme"]), "opt-out twice", &["(HTTP 404)"]);

    // A revoked token is dead at once; rejecting withdraws the publisher.
    let out = berth(d, url, As::Admin, &["publisher", "revoke-token", "acme", &token_id]);
    assert!(stdout(&out, "revoke-token").starts_with(&format!("push token {token_id} of acme: revoked ")));
    refused(
        &berth(d, url, As::Publisher(&token), &["publisher", "tokens", "acme"]),
        "a revoked token",
        &["the push token is unknown", "(HTTP 401)"],
    );
    assert_eq!(stdout(&berth(d, url, As::Admin, &["publisher", "reject", "acme"]), "reject"), "acme: rejected\n");
    refused(&berth(d, url, As::Nobody, &["publisher", "show", "acme"]), "show a rejected publisher", &["(HTTP 404)"]);
}
