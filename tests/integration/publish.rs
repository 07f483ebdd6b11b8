//! The publisher's flow as users run it: key generate → publish (pack, push by digest,
//! plugin manifest artifact, SBOM, signatures) → discover → verify-signature → validate,
//! with the first-party plugins from artifacts/, and an artifact attached by the Python
//! `oras` SDK found and validated by berth.

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const PLUGIN_TYPE: &str = "application/vnd.aisopsflow.plugin.manifest.v1+json";
const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const SBOM_TYPE: &str = "application/vnd.cyclonedx+json";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the berth binary in `dir` off the runtime's threads; returns (exit code, stdout, stderr).
async fn berth(dir: PathBuf, args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&args)
            .current_dir(dir)
            .env("BERTH_LOG", "warn")
            .env("COSIGN_PASSWORD", "test-password")
            .output()
            .expect("run berth");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn publish(dir: &std::path::Path, host: &str, name: &str) -> Value {
    let plugin_dir = workspace().join("artifacts/plugins").join(name);
    let bin = plugin_binary(name);
    let lock = workspace().join("Cargo.lock");
    let (code, out, err) = berth(
        dir.to_path_buf(),
        vec![
            "publish".into(),
            plugin_dir.display().to_string(),
            "--registry".into(),
            host.to_string(),
            "--binary".into(),
            bin.display().to_string(),
            "--cargo-lock".into(),
            lock.display().to_string(),
            "--key".into(),
            "publisher.key".into(),
            "--json".into(),
        ],
    )
    .await;
    assert_eq!(code, 0, "publish {name}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn kinds(tree: &Value) -> Vec<String> {
    let mut k: Vec<String> = tree["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["artifactType"].as_str().unwrap_or("").to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_plugins_publish_discover_and_verify() {
    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let (code, out, err) = berth(dir.clone(), args(&["key", "generate", "--output-prefix", "publisher"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("key id"), "{out}");
    let key = std::fs::read_to_string(dir.join("publisher.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"), "{key}");

    for name in ["json-transform", "http-probe"] {
        let p = publish(&dir, &s.host(), name).await;
        let image = p["image"].as_str().unwrap().to_string();
        let reference = format!("{}/aisopsflow/{name}@{image}", s.host());
        assert_eq!(p["reference"], reference.as_str());

        // discover: image, manifest artifact (signed), SBOM, image signature
        let (code, out, err) =
            berth(dir.clone(), args(&["discover", "--json", &format!("{}/aisopsflow/{name}:0.1.0", s.host())])).await;
        assert_eq!(code, 0, "{err}");
        let tree: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(tree["digest"], image.as_str());
        assert_eq!(kinds(&tree), vec![PLUGIN_TYPE.to_string(), SBOM_TYPE.to_string(), BUNDLE_TYPE.to_string()]);
        let manifest_node =
            tree["referrers"].as_array().unwrap().iter().find(|r| r["artifactType"] == PLUGIN_TYPE).unwrap();
        assert_eq!(manifest_node["digest"], p["manifest_artifact"]);
        assert_eq!(kinds(manifest_node), vec![BUNDLE_TYPE.to_string()]);

        // both signatures verify with the publisher's key
        for subject in
            [reference.clone(), format!("{}/aisopsflow/{name}@{}", s.host(), p["manifest_artifact"].as_str().unwrap())]
        {
            let (code, out, err) =
                berth(dir.clone(), args(&["verify-signature", &subject, "--key", "publisher.pub"])).await;
            assert_eq!(code, 0, "{subject}: {err}");
            assert!(out.contains("SigstoreBundle"), "{out}");
        }
        // the attached manifest validates and names this image
        let (code, out, err) = berth(dir.clone(), args(&["validate", &reference])).await;
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("valid plugin manifest for aisopsflow/{name} 0.1.0")), "{out}");

        // publishing again changes nothing
        let again = publish(&dir, &s.host(), name).await;
        for k in ["image", "manifest_artifact", "sbom", "image_signature", "manifest_signature"] {
            assert_eq!(again[k], p[k], "{k} changed on republish");
        }
        assert_eq!(again["copy"]["copied"], 0);
    }

    // a key nobody trusts
    let (code, _, err) = berth(dir.clone(), args(&["key", "generate", "--output-prefix", "stranger"])).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = berth(
        dir.clone(),
        args(&["verify-signature", &format!("{}/aisopsflow/json-transform:0.1.0", s.host()), "--key", "stranger.pub"]),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("not trusted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_changed_byte_is_unsigned_and_legacy_signatures_verify() {
    use berth::content::TagResolver;
    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    assert_eq!(berth(dir.clone(), args(&["key", "generate", "--output-prefix", "publisher"])).await.0, 0);
    let p = publish(&dir, &s.host(), "json-transform").await;
    let repo = berth::content::remote::RemoteRegistry::new(&s.host(), Default::default())
        .unwrap()
        .repository("aisopsflow/json-transform")
        .unwrap();
    let image = repo.resolve("0.1.0").await.unwrap();

    // The plugin manifest document with one byte changed, attached to the same image.
    let artifact = repo.resolve(p["manifest_artifact"].as_str().unwrap()).await.unwrap();
    let m: Value = serde_json::from_slice(&berth::content::fetch_all(&repo, &artifact).await.unwrap()).unwrap();
    let layer: oci_spec::image::Descriptor = serde_json::from_value(m["layers"][0].clone()).unwrap();
    let mut doc = berth::content::fetch_all(&repo, &layer).await.unwrap();
    let at = doc.iter().position(|b| *b == b'0').unwrap();
    doc[at] = b'1';
    let forged = berth::artifacts::attach(&repo, &image, PLUGIN_TYPE, &doc, &Default::default()).await.unwrap();
    let (code, _, err) = berth(
        dir.clone(),
        args(&[
            "verify-signature",
            &format!("{}/aisopsflow/json-transform@{}", s.host(), forged.digest()),
            "--key",
            "publisher.pub",
        ]),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no valid signature") && err.contains(&forged.digest().to_string()), "{err}");

    // The image manifest with one byte changed (in its title annotation), pushed beside
    // it, is unsigned too.
    let bytes = berth::content::fetch_all(&repo, &image).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"json-transform\""), "{text}");
    let forged_image = text.replacen("\"json-transform\"", "\"json-transforn\"", 1);
    let r =
        put_manifest(&client(), &s.url, "aisopsflow/json-transform", "forged", OCI_MANIFEST, forged_image.as_bytes())
            .await;
    assert_eq!(r.status(), 201);
    let (code, _, err) = berth(
        dir.clone(),
        args(&[
            "verify-signature",
            &format!("{}/aisopsflow/json-transform:forged", s.host()),
            "--key",
            "publisher.pub",
        ]),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no valid signature"), "{err}");

    // cosign's legacy .sig tag format: written by `sign --legacy`, read by verify-signature
    let reference = format!("{}/aisopsflow/json-transform:0.1.0", s.host());
    let (code, _, err) = berth(dir.clone(), args(&["sign", &reference, "--key", "publisher.key", "--legacy"])).await;
    assert_eq!(code, 0, "{err}");
    let tag = format!("sha256-{}.sig", image.digest().to_string().trim_start_matches("sha256:"));
    assert!(repo.resolve(&tag).await.is_ok(), "legacy signature tag {tag} missing");
    let (code, out, err) = berth(dir.clone(), args(&["verify-signature", &reference, "--key", "publisher.pub"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CosignLegacy") && out.contains("SigstoreBundle"), "{out}");
}

/// Attaches `plugin.json` (its path in argv) to the image with the `oras` SDK's low-level
/// API as an OCI 1.1 artifact of the plugin manifest type.
const ORAS_ATTACH: &str = r#"
import json, os, shutil, sys, tempfile
import oras.client, oras.defaults, oras.oci
host, repo, digest, size, path, media_type = sys.argv[1:7]
subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": int(size)}
client = oras.client.OrasClient(hostname=host, insecure=True)
work = tempfile.mkdtemp()
os.chdir(work)
shutil.copy(path, "plugin.json")
container = client.get_container(f"{host}/{repo}:oras-attached")
layer = oras.oci.NewLayer("plugin.json", media_type=media_type)
assert client.upload_blob("plugin.json", container, layer).status_code in (200, 201)
with open("empty.json", "w") as f:
    f.write("{}")
config = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": oras.defaults.blank_config_hash, "size": 2}
assert client.upload_blob("empty.json", container, config).status_code in (200, 201)
manifest = {"schemaVersion": 2, "mediaType": oras.defaults.default_manifest_media_type,
            "artifactType": media_type, "config": config, "layers": [layer], "subject": subject}
r = client.upload_manifest(manifest, container)
assert r.status_code == 201, (r.status_code, r.text)
print(r.headers["Docker-Content-Digest"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_attached_with_the_oras_sdk_is_found_and_validated() {
    require_tool("python3");
    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    // the image, packed by berth
    let (code, out, err) = berth(
        dir.clone(),
        vec![
            "pack".into(),
            "--binary".into(),
            plugin_binary("json-transform").display().to_string(),
            "--output".into(),
            format!("{}/aisopsflow/json-transform:0.1.0", s.host()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let image = out.split_whitespace().last().unwrap().to_string();
    let size = client()
        .get(format!("{}/v2/aisopsflow/json-transform/manifests/{image}", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();

    let attach = |doc: Value| {
        let (dir, host, image) = (dir.clone(), s.host(), image.clone());
        async move {
            let path = dir.join("plugin.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
            let script = dir.join("attach.py");
            std::fs::write(&script, ORAS_ATTACH).unwrap();
            let out = tokio::task::spawn_blocking(move || {
                Command::new("python3")
                    .arg(&script)
                    .args([
                        host,
                        "aisopsflow/json-transform".into(),
                        image,
                        size.to_string(),
                        path.display().to_string(),
                        PLUGIN_TYPE.into(),
                    ])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert!(out.status.success(), "oras SDK: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    let mut manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("artifacts/plugins/json-transform/plugin.json")).unwrap(),
    )
    .unwrap();
    manifest["runtime"]["image"] = Value::String(format!("{}/aisopsflow/json-transform@{image}", s.host()));
    attach(manifest.clone()).await;
    let reference = format!("{}/aisopsflow/json-transform@{image}", s.host());
    let (code, out, err) = berth(dir.clone(), args(&["validate", &reference])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("valid plugin manifest for aisopsflow/json-transform 0.1.0"), "{out}");

    // a broken one attached the same way is found and its problems named
    let mut broken = manifest.clone();
    broken["capabilities"] = serde_json::json!(["outbound_http", "secrets_read"]);
    broken["runtime"]["image"] = Value::String(format!("{}/aisopsflow/json-transform:latest", s.host()));
    attach(broken).await;
    let (code, out, _) = berth(dir.clone(), args(&["validate", &reference])).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/runtime/image") && out.contains("outbound"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_explain_judges_a_published_plugin_part_by_part() {
    let s = TestServer::start().await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    assert_eq!(berth(dir.clone(), args(&["key", "generate", "--output-prefix", "publisher"])).await.0, 0);
    assert_eq!(berth(dir.clone(), args(&["key", "generate", "--output-prefix", "stranger"])).await.0, 0);
    let p = publish(&dir, &s.host(), "json-transform").await;
    let image = p["image"].as_str().unwrap().to_string();
    let policy = |approved: &str| {
        format!(
            "api_version = \"aisopsflow.dev/runner-policy/v1\"\nmode = \"first-party\"\nfirst_party_publishers = [\"aisopsflow\"]\n\
             allowed_registries = [\"{}\"]\nrequire_signatures = true\nrequire_approval = true\napproved_digests = [\"{approved}\"]\n\
             allowed_secrets = [\"runner_api_key\"]\n",
            s.host()
        )
    };
    std::fs::write(dir.join("ok.toml"), policy(&image)).unwrap();
    std::fs::write(dir.join("unapproved.toml"), policy(&format!("sha256:{}", "1".repeat(64)))).unwrap();
    let by_digest = format!("{}/aisopsflow/json-transform@{image}", s.host());

    let (code, out, err) =
        berth(dir.clone(), args(&["policy", "explain", &by_digest, "--policy", "ok.toml", "--key", "publisher.pub"]))
            .await;
    assert_eq!(code, 0, "{out}{err}");
    for aspect in ["registry", "publisher", "approval", "signatures", "mode", "egress", "resources", "secrets"] {
        assert!(out.contains(&format!("ALLOW {aspect}")) || out.contains(&format!("WARN {aspect}")), "{aspect}: {out}");
    }
    assert!(out.contains("=> allowed"), "{out}");

    let refused = |policy: &str, key: &str, reference: String| {
        let dir = dir.clone();
        let args = args(&["policy", "explain", &reference, "--policy", policy, "--key", key]);
        async move { berth(dir, args).await }
    };
    let (code, out, _) = refused("unapproved.toml", "publisher.pub", by_digest.clone()).await;
    assert_eq!(code, 1);
    assert!(out.contains("REFUSE approval"), "{out}");
    let (code, out, _) = refused("ok.toml", "stranger.pub", by_digest.clone()).await;
    assert_eq!(code, 1);
    assert!(out.contains("REFUSE signatures"), "{out}");
    let (code, out, _) =
        refused("ok.toml", "publisher.pub", format!("{}/aisopsflow/json-transform:0.1.0", s.host())).await;
    assert_eq!(code, 1);
    assert!(out.contains("REFUSE reference"), "{out}");
}
