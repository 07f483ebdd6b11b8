use super::*;

const RFC_KEY_B64: &str = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==";

fn rfc_key() -> Vec<u8> {
    sf::B64.decode(RFC_KEY_B64).unwrap()
}

/// The RFC 9421 test request (Appendix B.2).
fn rfc_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Host", "example.com"),
        ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
        ("Content-Type", "application/json"),
        (
            "Content-Digest",
            "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
        ),
        ("Content-Length", "18"),
    ]
}

#[test]
fn rfc9421_b25_hmac_sha256_vector() {
    // RFC 9421 Appendix B.2.5, label sig-b25.
    let headers = rfc_headers();
    let msg = Message {
        method: "POST",
        authority: "example.com",
        target: "/foo?param=Value&Pet=dog",
        headers: &headers,
        body: br#"{"hello": "world"}"#,
    };
    let params =
        SigParams { created: Some(1618884473), keyid: Some("test-shared-secret".into()), ..Default::default() };
    let comps = ["date", "@authority", "content-type"];
    let base = signature_base(&msg, &comps, &params).unwrap();
    assert_eq!(
        base,
        "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\
         \"@authority\": example.com\n\
         \"content-type\": application/json\n\
         \"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
    );
    let sig = hmac_sha256(&rfc_key(), base.as_bytes());
    assert_eq!(sf::B64.encode(sig), "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=");

    // The same vector through the verifier (keyed by id, generous clock).
    let mut h = headers.clone();
    h.push((
        "Signature-Input",
        r#"sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#,
    ));
    h.push(("Signature", "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"));
    let msg = Message { headers: &h, ..msg };
    // Build the base for verification directly: this vector has no nonce and does not
    // cover @method/@path, which the runner-API verifier requires; check the HMAC path.
    let d = sf::parse_dictionary(&msg.header("signature-input").unwrap()).unwrap();
    let Member::Inner(_, p) = &d[0].1 else { panic!() };
    let pv = signature_params_value(&comps, p).unwrap();
    assert_eq!(base_with(&msg, &comps, &pv).unwrap(), base);
}

#[test]
fn rfc9530_content_digest_vector() {
    // RFC 9530 §2 example: {"hello": "world"}.
    assert_eq!(content_digest(br#"{"hello": "world"}"#), "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:");
    verify_content_digest(
        "sha-512=:AAAA:, sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
        br#"{"hello": "world"}"#,
    )
    .unwrap();
    assert_eq!(
        verify_content_digest("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", b"{}"),
        Err(Error::BadDigest)
    );
    assert_eq!(verify_content_digest("sha-512=:AAAA:", b""), Err(Error::BadDigest));
}

const NOW: u64 = 1_700_000_000;

/// Independently computed with Python's hmac module:
/// hmac.new(b"runner-secret", base, hashlib.sha256), base as asserted below.
#[test]
fn runner_api_vector() {
    let signer = Signer::new(b"runner-secret".to_vec(), "runner");
    let headers = [("AisOpsFlow-Deadline", "1700000005000"), ("AisOpsFlow-Runner-API", "1.0")];
    let body = br#"{"hello": "world"}"#;
    let s =
        signer.sign_at("POST", "127.0.0.1:8080", "/v1/entrypoints/transform", &headers, body, NOW, "abc123").unwrap();
    assert_eq!(
        s.signature_input,
        r#"sig1=("@method" "@path" "@authority" "content-digest" "aisopsflow-deadline" "aisopsflow-runner-api");created=1700000000;expires=1700000060;nonce="abc123";keyid="runner";alg="hmac-sha256""#
    );
    assert_eq!(s.signature, "sig1=:LC8MBoRfStZwwEyMTpBEquGjQiSeJz4m2r4HAC+oQYk=:");
    assert_eq!(s.content_digest.as_deref(), Some("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"));
}

struct Req {
    method: &'static str,
    authority: &'static str,
    target: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn signed(signer: &Signer, body: &[u8], created: u64, nonce: &str) -> Req {
        let base = vec![
            ("Host".to_string(), "plugin:8080".to_string()),
            ("AisOpsFlow-Deadline".into(), "1700000005000".into()),
            ("AisOpsFlow-Runner-API".into(), "1.0".into()),
        ];
        let hb: Vec<(&str, &str)> = base.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let s = signer.sign_at("POST", "plugin:8080", "/v1/entrypoints/x", &hb, body, created, nonce).unwrap();
        let mut headers = base;
        for (k, v) in s.headers() {
            headers.push((k.to_string(), v));
        }
        Req { method: "POST", authority: "plugin:8080", target: "/v1/entrypoints/x", headers, body: body.to_vec() }
    }

    fn verify(&self, v: &Verifier, now: u64) -> Result<Verified, Error> {
        let h: Vec<(&str, &str)> = self.headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        v.verify_at(
            &Message {
                method: self.method,
                authority: self.authority,
                target: self.target,
                headers: &h,
                body: &self.body,
            },
            now,
        )
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.into(), value.into()));
    }

    fn remove(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

fn signer() -> Signer {
    Signer::new(b"k1".to_vec(), "runner")
}

#[test]
fn round_trip_ok_then_replayed() {
    let v = Verifier::new(b"k1".to_vec());
    let r = Req::signed(&signer(), b"{\"a\":1}", NOW, "n1");
    let ok = r.verify(&v, NOW + 1).unwrap();
    assert_eq!(ok.keyid.as_deref(), Some("runner"));
    assert_eq!(ok.nonce, "n1");
    assert_eq!(ok.components.len(), 6);
    assert_eq!(r.verify(&v, NOW + 2), Err(Error::Replayed));
    // Another nonce is fine.
    Req::signed(&signer(), b"{\"a\":1}", NOW, "n2").verify(&v, NOW + 2).unwrap();
}

#[test]
fn get_without_body_has_no_digest() {
    let v = Verifier::new(b"k1".to_vec());
    let r = Req::signed(&signer(), b"", NOW, "n");
    assert!(!r.headers.iter().any(|(k, _)| k == "Content-Digest"));
    r.verify(&v, NOW).unwrap();
}

#[test]
fn missing_headers() {
    let v = Verifier::new(b"k1".to_vec());
    let mut r = Req::signed(&signer(), b"x", NOW, "n");
    r.remove("Signature");
    assert_eq!(r.verify(&v, NOW), Err(Error::Missing("signature".into())));
    let mut r = Req::signed(&signer(), b"x", NOW, "n");
    r.remove("Signature-Input");
    assert_eq!(r.verify(&v, NOW), Err(Error::Missing("signature-input".into())));
    // A covered header removed after signing.
    let mut r = Req::signed(&signer(), b"x", NOW, "n");
    r.remove("AisOpsFlow-Deadline");
    assert_eq!(r.verify(&v, NOW), Err(Error::Missing("aisopsflow-deadline".into())));
}

#[test]
fn malformed_inputs() {
    let v = Verifier::new(b"k1".to_vec());
    let cases = [
        ("Signature-Input", "sig1=(\"@method\""),
        ("Signature", "sig1=\"not-bytes\""),
        ("Signature", "other=:AAAA:"),
        (
            "Signature-Input",
            r#"sig1=("@method" "@path" "@authority" "content-digest" "aisopsflow-deadline" "aisopsflow-runner-api");created=1700000000;expires=1700000060;keyid="runner""#,
        ),
        (
            "Signature-Input",
            r#"sig1=("@method" "@path" "@authority" "content-digest" "aisopsflow-deadline" "aisopsflow-runner-api");created=1700000000;nonce="x";alg="rsa-pss-sha512""#,
        ),
        (
            "Signature-Input",
            r#"sig1=("@method" "@path" "@authority" "content-digest" "aisopsflow-deadline" "aisopsflow-runner-api");created=1700000000;expires=1700009999;nonce="x""#,
        ),
        (
            "Signature-Input",
            r#"sig1=("@path" "@authority" "content-digest" "aisopsflow-deadline" "aisopsflow-runner-api");created=1700000000;nonce="x""#,
        ),
        (
            "Signature-Input",
            r#"sig1=("@method" "@path" "@authority" "aisopsflow-deadline" "aisopsflow-runner-api");created=1700000000;nonce="x""#,
        ),
        (
            "Signature-Input",
            r#"sig1=("@method" "@path" "@authority" "content-digest" "aisopsflow-deadline" "aisopsflow-runner-api" "@target-uri");created=1700000000;nonce="x""#,
        ),
    ];
    for (h, val) in cases {
        let mut r = Req::signed(&signer(), b"x", NOW, "n");
        r.set(h, val);
        match r.verify(&v, NOW) {
            Err(Error::Malformed(_)) => {}
            other => panic!("{h}: {val}: {other:?}"),
        }
    }
}

#[test]
fn bad_digest() {
    let v = Verifier::new(b"k1".to_vec());
    let mut r = Req::signed(&signer(), b"{\"a\":1}", NOW, "n");
    r.body = b"{\"a\":2}".to_vec();
    assert_eq!(r.verify(&v, NOW), Err(Error::BadDigest));
    // A body sent without a digest at all (signed as a GET).
    let mut r = Req::signed(&signer(), b"", NOW, "n2");
    r.body = b"sneaky".to_vec();
    assert_eq!(r.verify(&v, NOW), Err(Error::BadDigest));
}

#[test]
fn bad_signature() {
    let v = Verifier::new(b"other-key".to_vec());
    let r = Req::signed(&signer(), b"x", NOW, "n");
    assert_eq!(r.verify(&v, NOW), Err(Error::BadSignature));
    // Altered covered header.
    let v = Verifier::new(b"k1".to_vec());
    let mut r = Req::signed(&signer(), b"x", NOW, "n");
    r.set("AisOpsFlow-Deadline", "1800000000000");
    assert_eq!(r.verify(&v, NOW), Err(Error::BadSignature));
    // Altered path.
    let mut r = Req::signed(&signer(), b"x", NOW, "n");
    r.target = "/v1/entrypoints/y";
    assert_eq!(r.verify(&v, NOW), Err(Error::BadSignature));
    // Failed verifications do not burn the nonce.
    Req::signed(&signer(), b"x", NOW, "n").verify(&v, NOW).unwrap();
}

#[test]
fn time_window() {
    let v = Verifier::new(b"k1".to_vec());
    let r = Req::signed(&signer(), b"x", NOW, "n");
    assert_eq!(r.verify(&v, NOW + 61), Err(Error::Expired));
    assert_eq!(r.verify(&v, NOW - 61), Err(Error::NotYetValid));
    // Within skew is fine.
    r.verify(&v, NOW - 59).unwrap();
}

#[test]
fn unknown_key() {
    let v = Verifier::with_keys([("someone-else", b"k1".to_vec())]);
    let r = Req::signed(&signer(), b"x", NOW, "n");
    assert_eq!(r.verify(&v, NOW), Err(Error::UnknownKey("runner".into())));
    let v = Verifier::with_keys([("runner", b"k1".to_vec())]);
    r.verify(&v, NOW).unwrap();
}

#[test]
fn replay_cache_is_bounded_and_safe() {
    let v = Verifier::new(b"k1".to_vec()).with_replay_capacity(4);
    for i in 0..4 {
        Req::signed(&signer(), b"x", NOW + i, &format!("n{i}")).verify(&v, NOW + 4).unwrap();
    }
    // Full: a new one evicts the earliest-expiring nonce (n0, expires NOW+60) ...
    Req::signed(&signer(), b"x", NOW + 4, "n4").verify(&v, NOW + 4).unwrap();
    assert_eq!(v.replay.lock().unwrap().seen.len(), 4);
    // ... and n0 cannot be replayed: it is refused by the watermark.
    assert_eq!(Req::signed(&signer(), b"x", NOW, "n0").verify(&v, NOW + 5), Err(Error::Expired));
    assert_eq!(Req::signed(&signer(), b"x", NOW + 3, "n3").verify(&v, NOW + 5), Err(Error::Replayed));
    // Once everything expired, the cache empties itself.
    Req::signed(&signer(), b"x", NOW + 200, "fresh").verify(&v, NOW + 200).unwrap();
    assert_eq!(v.replay.lock().unwrap().seen.len(), 1);
}

#[test]
fn header_combination_and_case() {
    let h = [("X-A", " one "), ("x-a", "two"), ("Host", "EXAMPLE.com")];
    let msg = Message { method: "GET", authority: "EXAMPLE.com", target: "", headers: &h, body: b"" };
    let base = signature_base(&msg, &["x-a", "@authority", "@path", "@query"], &SigParams::default()).unwrap();
    assert_eq!(
        base,
        "\"x-a\": one, two\n\"@authority\": example.com\n\"@path\": /\n\"@query\": ?\n\"@signature-params\": (\"x-a\" \"@authority\" \"@path\" \"@query\")"
    );
    assert!(matches!(signature_base(&msg, &["X-A"], &SigParams::default()), Err(Error::Malformed(_))));
    assert!(matches!(signature_base(&msg, &["x-a", "x-a"], &SigParams::default()), Err(Error::Malformed(_))));
}

#[test]
fn random_nonces_differ() {
    let s = signer();
    let a = s.sign("GET", "h", "/v1/health", &[], b"").unwrap();
    let b = s.sign("GET", "h", "/v1/health", &[], b"").unwrap();
    assert_ne!(a.signature_input, b.signature_input);
    assert!(a.content_digest.is_none());
}
