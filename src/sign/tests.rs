use super::*;
use crate::content::{FsStore, MemoryStore, Reader, descriptor_for};
use crate::oci::media;

fn reader(data: Vec<u8>) -> Reader {
    Box::pin(std::io::Cursor::new(data))
}
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keys::test_key;
use serde_json::{Value, json};

const REPO: &str = "acme/p";

async fn push(t: &dyn GraphTarget, media_type: &str, data: &[u8]) -> Descriptor {
    let d = descriptor_for(media_type, data);
    if !t.exists(&d).await.unwrap() {
        t.push(&d, reader(data.to_vec())).await.unwrap();
    }
    d
}

/// Pushes a small image whose single layer holds `layer`; returns its manifest descriptor.
async fn push_image(t: &dyn GraphTarget, layer: &[u8]) -> Descriptor {
    let config = push(t, "application/vnd.oci.image.config.v1+json", br#"{"os":"linux"}"#).await;
    let layer = push(t, "application/vnd.oci.image.layer.v1.tar", layer).await;
    let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "config": config, "layers": [layer]});
    push(t, media::OCI_MANIFEST, &serde_json::to_vec(&m).unwrap()).await
}

fn fs_repo() -> (tempfile::TempDir, crate::content::fs::FsRepository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = FsStore::open(dir.path()).unwrap().repository(REPO).unwrap();
    (dir, repo)
}

fn digest(d: &Descriptor) -> Digest {
    d.digest().to_string().parse().unwrap()
}

// ---- keys -------------------------------------------------------------------------------

#[test]
fn encrypted_key_round_trip_and_wrong_password() {
    let kp = generate_key(b"correct horse").unwrap();
    let private = kp.encrypted_private_pem();
    assert!(private.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), "{private}");
    assert!(!private.contains('\r'));
    let public = kp.public_key().to_pem().unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{public}");

    let loaded = load_private_key(private, b"correct horse").unwrap();
    assert_eq!(loaded.key_id(), kp.key_id());
    let pk = load_public_key(&public).unwrap();
    assert_eq!(&pk, kp.public_key());
    assert_eq!(pk.key_id().len(), 64);
    assert_eq!(pk.key_id(), Digest::sha256(pk.der()).hex());
    // the loaded key signs what the original public key verifies
    assert!(pk.verify(b"message", &loaded.sign(b"message")));
    assert!(!pk.verify(b"messagE", &loaded.sign(b"message")));

    let e = load_private_key(private, b"wrong").unwrap_err();
    assert!(matches!(e, SignError::KeyDecrypt(_)), "{e}");
    assert!(e.to_string().contains("wrong password"), "{e}");
    // a public key is no private key, and vice versa
    assert!(matches!(load_private_key(&public, b"x").unwrap_err(), SignError::Key(_)));
    assert!(matches!(load_public_key(private).unwrap_err(), SignError::Key(_)));
}

#[test]
fn hint_maps_back_to_key_id() {
    let kp = test_key();
    let pk = kp.public_key();
    assert_eq!(key_id_from_hint(&pk.hint()).as_deref(), Some(pk.key_id()));
    assert_eq!(key_id_from_hint(pk.key_id()).as_deref(), Some(pk.key_id()));
    assert_eq!(key_id_from_hint("nonsense"), None);
}

// ---- bundles ----------------------------------------------------------------------------

#[test]
fn pae_matches_the_dsse_spec_example() {
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
    );
}

#[test]
fn bundle_json_has_the_cosign_v3_structure() {
    let kp = test_key();
    let subject = Digest::sha256(b"image manifest");
    let bundle = sign_subject(&subject, "registry.example/acme/p", &kp).unwrap();
    let v: Value = serde_json::from_slice(&bundle.to_json().unwrap()).unwrap();

    assert_eq!(v["mediaType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(v["verificationMaterial"], json!({"publicKey": {"hint": kp.public_key().hint()}}));
    let env = &v["dsseEnvelope"];
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(env["signatures"].as_array().unwrap().len(), 1);
    assert!(env["signatures"][0].get("keyid").is_none());

    let payload = STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let st: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        st,
        json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example/acme/p", "digest": {"sha256": subject.hex()}}],
            "predicateType": "https://sigstore.dev/cosign/sign/v1",
            "predicate": {}
        })
    );
    // field order as in-toto writes it
    assert!(String::from_utf8(payload.clone()).unwrap().starts_with(r#"{"_type":"#));

    // the signature is over the PAE of the payload
    let sig = STANDARD.decode(env["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    assert!(kp.public_key().verify(&pae(IN_TOTO_PAYLOAD_TYPE, &payload), &sig));
    assert!(!kp.public_key().verify(&payload, &sig));

    // round trip through JSON, then verify offline
    let back = Bundle::from_json(&bundle.to_json().unwrap()).unwrap();
    assert_eq!(back, bundle);
    assert_eq!(back.key_id().as_deref(), Some(kp.key_id()));
    let (key_id, st) = back.verify(&subject, std::slice::from_ref(kp.public_key())).unwrap();
    assert_eq!(key_id, kp.key_id());
    assert_eq!(st.predicate_type, COSIGN_SIGN_PREDICATE_TYPE);
    let e = back.verify(&Digest::sha256(b"other"), std::slice::from_ref(kp.public_key())).unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");
}

#[test]
fn tampered_payload_fails() {
    let kp = test_key();
    let subject = Digest::sha256(b"a");
    let mut bundle = sign_subject(&subject, REPO, &kp).unwrap();
    let env = bundle.dsse_envelope.as_mut().unwrap();
    let mut payload = STANDARD.decode(&env.payload).unwrap();
    let n = payload.len();
    payload[n - 2] ^= 1; // one changed byte
    env.payload = STANDARD.encode(&payload);
    let trusted = [kp.public_key().clone()];
    assert!(bundle.verify_signature(&trusted).unwrap().is_none());
}

// ---- attach and verify: sigstore bundles ------------------------------------------------

async fn bundle_round_trip(t: &dyn GraphTarget) {
    let kp = test_key();
    let image = push_image(t, b"layer bytes").await;

    let r1 = sign_and_attach(t, &image, REPO, &kp).await.unwrap();
    assert_eq!(r1.artifact_type().as_ref().unwrap().to_string(), BUNDLE_MEDIA_TYPE);
    // signing again with the same key adds nothing
    let r2 = sign_and_attach(t, &image, REPO, &kp).await.unwrap();
    assert_eq!(r1.digest(), r2.digest());
    let referrers = t.predecessors(&image).await.unwrap();
    assert_eq!(referrers.len(), 1);
    assert_eq!(referrers[0].digest(), r1.digest());

    // the referrer manifest as written
    let m: Value = serde_json::from_slice(&fetch_all(t, &r1).await.unwrap()).unwrap();
    assert_eq!(m["mediaType"], media::OCI_MANIFEST);
    assert_eq!(m["artifactType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(m["config"], json!({"mediaType": media::OCI_EMPTY, "digest": media::EMPTY_DIGEST, "size": 2}));
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(m["layers"][0]["mediaType"], BUNDLE_MEDIA_TYPE);
    assert_eq!(m["subject"]["digest"], image.digest().to_string());
    assert_eq!(m["subject"]["size"], image.size());
    assert_eq!(m["annotations"][ANNOTATION_PREDICATE_TYPE], COSIGN_SIGN_PREDICATE_TYPE);
    assert_eq!(m["annotations"][ANNOTATION_CONTENT], "dsse-envelope");

    let ok = verify_subject(t, &image, &[kp.public_key().clone()]).await.unwrap();
    assert_eq!(
        ok,
        vec![VerifiedSignature {
            format: SignatureFormat::SigstoreBundle,
            key_id: kp.key_id().to_string(),
            manifest: r1.digest().to_string(),
        }]
    );

    // a second key adds a second signature; each verifies with its own key
    let kp2 = test_key();
    let r3 = sign_and_attach(t, &image, REPO, &kp2).await.unwrap();
    assert_ne!(r3.digest(), r1.digest());
    let both = verify_subject(t, &image, &[kp.public_key().clone(), kp2.public_key().clone()]).await.unwrap();
    assert_eq!(both.len(), 2);
    let only2 = verify_subject(t, &image, &[kp2.public_key().clone()]).await.unwrap();
    assert_eq!(only2.len(), 1);
    assert_eq!(only2[0].key_id, kp2.key_id());
}

#[tokio::test]
async fn bundle_round_trip_memory() {
    bundle_round_trip(&MemoryStore::new()).await;
}

#[tokio::test]
async fn bundle_round_trip_fs() {
    let (_dir, repo) = fs_repo();
    bundle_round_trip(&repo).await;
}

/// Attaches `bundle` to `subject` the way a forger would: without the statement check.
async fn repoint(t: &dyn GraphTarget, subject: &Descriptor, bundle: &Bundle) {
    let empty = push(t, media::OCI_EMPTY, b"{}").await;
    let layer = push(t, BUNDLE_MEDIA_TYPE, &bundle.to_json().unwrap()).await;
    let m = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST, "artifactType": BUNDLE_MEDIA_TYPE,
                   "config": empty, "layers": [layer], "subject": subject});
    push(t, media::OCI_MANIFEST, &serde_json::to_vec(&m).unwrap()).await;
}

async fn other_subject_fails(t: &dyn GraphTarget) {
    let kp = test_key();
    let trusted = [kp.public_key().clone()];
    let a = push_image(t, b"layer bytes").await;
    let b = push_image(t, b"layer bytez").await; // one byte changed
    assert_ne!(a.digest(), b.digest());

    // sigstore bundle for A, re-pointed at B
    let bundle = sign_subject(&digest(&a), REPO, &kp).unwrap();
    let e = attach_signature(t, &b, &bundle).await.unwrap_err();
    assert!(matches!(e, SignError::SubjectMismatch { .. }), "{e}");
    attach_signature(t, &a, &bundle).await.unwrap();
    repoint(t, &b, &bundle).await;
    assert_eq!(t.predecessors(&b).await.unwrap().len(), 1);
    let e = verify_subject(t, &b, &trusted).await.unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&b.digest().to_string()), "{msg}");
    assert!(msg.contains(&format!("statement about {}", a.digest())), "{msg}");
    verify_subject(t, &a, &trusted).await.unwrap();

    // legacy signature for A, its .sig manifest re-tagged for B
    let c = push_image(t, b"layer bytes 2").await;
    let d = push_image(t, b"layer bytes 3").await;
    let sig = sign_legacy(t, &c, "registry.example/acme/p", &kp).await.unwrap();
    t.tag(&sig, &signature_tag(&digest(&d)).unwrap()).await.unwrap();
    let e = verify_subject(t, &d, &trusted).await.unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains(&format!("is for {}", c.digest())), "{e}");
    verify_subject(t, &c, &trusted).await.unwrap();
}

#[tokio::test]
async fn signature_for_another_digest_fails_memory() {
    other_subject_fails(&MemoryStore::new()).await;
}

#[tokio::test]
async fn signature_for_another_digest_fails_fs() {
    let (_dir, repo) = fs_repo();
    other_subject_fails(&repo).await;
}

async fn unknown_key_fails(t: &dyn GraphTarget) {
    let trusted_key = test_key();
    let stranger = test_key();
    let trusted = [trusted_key.public_key().clone()];

    let a = push_image(t, b"a").await;
    sign_and_attach(t, &a, REPO, &stranger).await.unwrap();
    let e = verify_subject(t, &a, &trusted).await.unwrap_err();
    assert!(matches!(e, SignError::Untrusted { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("not trusted"), "{msg}");
    assert!(msg.contains(stranger.key_id()), "{msg}");
    assert!(msg.contains(&a.digest().to_string()), "{msg}");

    let b = push_image(t, b"b").await;
    sign_legacy(t, &b, REPO, &stranger).await.unwrap();
    let e = verify_subject(t, &b, &trusted).await.unwrap_err();
    assert!(matches!(e, SignError::Untrusted { .. }), "{e}");
    assert!(e.to_string().contains("not trusted"), "{e}");

    // no signature at all names the subject
    let c = push_image(t, b"c").await;
    let e = verify_subject(t, &c, &trusted).await.unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");
    assert!(e.to_string().contains(&c.digest().to_string()), "{e}");
}

#[tokio::test]
async fn unknown_key_fails_memory() {
    unknown_key_fails(&MemoryStore::new()).await;
}

#[tokio::test]
async fn unknown_key_fails_fs() {
    let (_dir, repo) = fs_repo();
    unknown_key_fails(&repo).await;
}

// ---- legacy -----------------------------------------------------------------------------

async fn legacy_round_trip(t: &dyn GraphTarget) {
    let kp = test_key();
    let kp2 = test_key();
    let image = push_image(t, b"layer bytes").await;
    let s1 = sign_legacy(t, &image, "registry.example/acme/p", &kp).await.unwrap();
    let tag = format!("sha256-{}.sig", digest(&image).hex());
    assert_eq!(t.resolve(&tag).await.unwrap().digest(), s1.digest());
    // the same key again changes nothing
    let again = sign_legacy(t, &image, "registry.example/acme/p", &kp).await.unwrap();
    assert_eq!(again.digest(), s1.digest());

    // the manifest and payload as cosign writes them
    let m: Value = serde_json::from_slice(&fetch_all(t, &s1).await.unwrap()).unwrap();
    let layer = &m["layers"][0];
    assert_eq!(layer["mediaType"], SIMPLE_SIGNING_MEDIA_TYPE);
    let payload_desc: Descriptor = serde_json::from_value(layer.clone()).unwrap();
    let payload = fetch_all(t, &payload_desc).await.unwrap();
    assert_eq!(
        String::from_utf8(payload.clone()).unwrap(),
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/acme/p"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
            image.digest()
        )
    );
    let sig = STANDARD.decode(layer["annotations"][COSIGN_SIGNATURE_ANNOTATION].as_str().unwrap()).unwrap();
    assert!(kp.public_key().verify(&payload, &sig));

    let ok = verify_subject(t, &image, &[kp.public_key().clone()]).await.unwrap();
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].format, SignatureFormat::CosignLegacy);
    assert_eq!(ok[0].key_id, kp.key_id());
    assert_eq!(ok[0].manifest, s1.digest().to_string());

    // a second key appends a layer
    let s2 = sign_legacy(t, &image, "registry.example/acme/p", &kp2).await.unwrap();
    let m: Value = serde_json::from_slice(&fetch_all(t, &s2).await.unwrap()).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 2);
    let ok = verify_subject(t, &image, &[kp.public_key().clone(), kp2.public_key().clone()]).await.unwrap();
    assert_eq!(ok.len(), 2);

    // both formats at once
    sign_and_attach(t, &image, REPO, &kp).await.unwrap();
    let ok = verify_subject(t, &image, &[kp.public_key().clone()]).await.unwrap();
    let formats: Vec<_> = ok.iter().map(|v| v.format).collect();
    assert_eq!(formats, vec![SignatureFormat::SigstoreBundle, SignatureFormat::CosignLegacy]);
}

#[tokio::test]
async fn legacy_round_trip_memory() {
    legacy_round_trip(&MemoryStore::new()).await;
}

#[tokio::test]
async fn legacy_round_trip_fs() {
    let (_dir, repo) = fs_repo();
    legacy_round_trip(&repo).await;
}

// ---- attestations -----------------------------------------------------------------------

#[tokio::test]
async fn attestations_are_kept_apart_from_signatures() {
    let t = MemoryStore::new();
    let verifier = test_key();
    let trusted = [verifier.public_key().clone()];
    let image = push_image(&t, b"x").await;
    let report_type = "https://aisopsflow.dev/attestations/verification/v1";
    let report = sign_statement(&digest(&image), REPO, report_type, json!({"passed": true}), &verifier).unwrap();
    let r = attach_signature(&t, &image, &report).await.unwrap();
    assert_eq!(attach_signature(&t, &image, &report).await.unwrap().digest(), r.digest());
    // a different predicate by the same key is a new attestation, not a duplicate
    let later = sign_statement(&digest(&image), REPO, report_type, json!({"passed": false}), &verifier).unwrap();
    let r2 = attach_signature(&t, &image, &later).await.unwrap();
    assert_ne!(r2.digest(), r.digest());

    let found = verify_attestations(&t, &image, report_type, &trusted).await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|a| a.key_id == verifier.key_id() && a.statement.predicate_type == report_type));
    // a report is not a signature of the image
    let e = verify_subject(&t, &image, &trusted).await.unwrap_err();
    assert!(matches!(e, SignError::Unsigned { .. }), "{e}");
}
