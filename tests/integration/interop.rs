//! Interoperability with real OCI clients: `skopeo` (containers/image) and the Python
//! `oras` SDK, talking to berth over HTTP. External commands run on blocking threads
//! (`spawn_blocking`) because the server shares the test's tokio runtime.

use crate::common::{self, OCI_INDEX, OCI_MANIFEST, TestServer, tar_one};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const PLUGIN_TYPE: &str = "application/vnd.aisopsflow.plugin.manifest.v1+json";
const SBOM_TYPE: &str = "application/vnd.aisopsflow.sbom.v1+json";

/// Runs `cmd` to completion on a blocking thread.
async fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("running {shown}: {e}"))
}

/// [`common::ok`], with stdout as text.
fn ok(out: &Output, what: &str) -> String {
    String::from_utf8_lossy(&common::ok(out, what)).into_owned()
}

/// `skopeo --insecure-policy <args>` (no policy.json is needed for the test's copies).
fn skopeo(args: &[&str]) -> Command {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy").args(args);
    c
}

/// gzip-compresses `data` with the `gzip` tool (`-n`: no name or timestamp).
async fn gzip(data: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("layer.tar");
    std::fs::write(&path, data).expect("write tar");
    let mut c = Command::new("gzip");
    c.args(["-n", "-c"]).arg(&path);
    let out = run(c).await;
    ok(&out, "gzip");
    out.stdout
}

/// Writes `data` into an OCI layout's `blobs/sha256/`; returns its digest.
fn put_blob(layout: &Path, data: &[u8]) -> String {
    let d = common::sha256(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs dir");
    std::fs::write(dir.join(d.trim_start_matches("sha256:")), data).expect("write blob");
    d
}

/// One platform image written into a layout.
struct Image {
    manifest: Vec<u8>,
    digest: String,
}

/// Writes a linux/`arch` image (real config, one gzip tar layer) into `layout`.
async fn write_image(layout: &Path, arch: &str) -> Image {
    let tar = tar_one("hello.txt", format!("hello from linux/{arch}\n").as_bytes());
    let gz = gzip(&tar).await;
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip output");
    let layer = put_blob(layout, &gz);
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [common::sha256(&tar)]},
        "history": [{"created_by": "berth interop test"}],
    }))
    .expect("json");
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer, "size": gz.len()}],
    }))
    .expect("json");
    let digest = put_blob(layout, &manifest);
    Image { manifest, digest }
}

/// Writes `oci-layout` and an `index.json` naming one top-level manifest as `tag`.
fn write_layout_index(layout: &Path, media_type: &str, digest: &str, size: usize, tag: &str) {
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": size, "annotations": {REF_NAME: tag}}],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index.json");
}

/// The blob file names of a layout (`blobs/sha256/*`), checking each one's content hash.
fn layout_blobs(layout: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(layout.join("blobs/sha256")).expect("read blobs dir") {
        let e = e.expect("dir entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).expect("read blob");
        assert_eq!(common::sha256(&data), format!("sha256:{name}"), "blob {name} in {} is corrupt", layout.display());
        names.insert(name);
    }
    names
}

/// The top-level manifest descriptor of a layout's `index.json` (asserting there is one).
fn layout_top(layout: &Path) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json")).expect("json");
    let m = index["manifests"].as_array().expect("manifests");
    assert_eq!(m.len(), 1, "index.json of {}: {index}", layout.display());
    m[0].clone()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_multi_arch_layout_in_and_back_with_identical_digests() {
    common::require_tool("skopeo");
    common::require_tool("gzip");
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");

    let amd64 = write_image(&src, "amd64").await;
    let arm64 = write_image(&src, "arm64").await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64.digest, "size": amd64.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64.digest, "size": arm64.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .expect("json");
    let index_digest = put_blob(&src, &index);
    write_layout_index(&src, OCI_INDEX, &index_digest, index.len(), "v1");
    let src_blobs = layout_blobs(&src);
    assert_eq!(src_blobs.len(), 7, "2 × (manifest, config, layer) + index");

    // Push: layout → berth.
    let dest = format!("docker://{}/acme/multi:v1", s.host());
    let src_ref = format!("oci:{}:v1", src.display());
    let out = run(skopeo(&["copy", "--all", "--dest-tls-verify=false", &src_ref, &dest])).await;
    ok(&out, "skopeo copy oci → berth");

    // berth serves the very same index under the tag.
    let c = common::client();
    let r = c
        .get(format!("{}/v2/acme/multi/manifests/v1", s.url))
        .header("accept", OCI_INDEX)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), index_digest);
    let body = r.bytes().await.expect("body");
    assert_eq!(&body[..], &index[..], "the index was stored byte for byte");
    for img in [&amd64, &arm64] {
        let r = c
            .get(format!("{}/v2/acme/multi/manifests/{}", s.url, img.digest))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET child");
        assert_eq!(r.status(), 200);
        assert_eq!(&r.bytes().await.expect("body")[..], &img.manifest[..]);
    }

    // `skopeo inspect --raw` sees the same bytes.
    let out = run(skopeo(&["inspect", "--raw", "--tls-verify=false", &dest])).await;
    ok(&out, "skopeo inspect --raw");
    assert_eq!(common::sha256(&out.stdout), index_digest, "inspect --raw: {}", String::from_utf8_lossy(&out.stdout));

    // Pull: berth → a second layout; every digest survives the round trip.
    let back = tmp.path().join("back");
    let back_ref = format!("oci:{}:v1", back.display());
    let out = run(skopeo(&["copy", "--all", "--src-tls-verify=false", &dest, &back_ref])).await;
    ok(&out, "skopeo copy berth → oci");
    let top = layout_top(&back);
    assert_eq!(top["digest"], index_digest, "index.json of the pulled layout: {top}");
    assert_eq!(top["mediaType"], OCI_INDEX);
    assert_eq!(top["annotations"][REF_NAME], "v1");
    assert_eq!(layout_blobs(&back), src_blobs, "the pulled layout holds exactly the pushed blobs");
    assert_eq!(std::fs::read(blob_path(&back, &index_digest)).expect("index blob"), index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_single_image_by_digest_and_reads_tags() {
    common::require_tool("skopeo");
    common::require_tool("gzip");
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    let img = write_image(&src, "amd64").await;
    write_layout_index(&src, OCI_MANIFEST, &img.digest, img.manifest.len(), "v1");
    let src_ref = format!("oci:{}:v1", src.display());
    let repo = format!("{}/acme/single", s.host());

    for tag in ["v1", "stable"] {
        let out = run(skopeo(&["copy", "--dest-tls-verify=false", &src_ref, &format!("docker://{repo}:{tag}")])).await;
        ok(&out, "skopeo copy oci → berth");
    }

    let out = run(skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{repo}")])).await;
    let tags: Value = serde_json::from_str(&ok(&out, "skopeo list-tags")).expect("list-tags JSON");
    let mut listed: Vec<&str> = tags["Tags"].as_array().expect("Tags").iter().filter_map(Value::as_str).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["stable", "v1"], "{tags}");

    // Pull by digest.
    let by_digest = format!("docker://{repo}@{}", img.digest);
    let out = run(skopeo(&["inspect", "--tls-verify=false", &by_digest])).await;
    let info: Value = serde_json::from_str(&ok(&out, "skopeo inspect by digest")).expect("inspect JSON");
    assert_eq!(info["Digest"], img.digest.as_str(), "{info}");
    assert_eq!(info["Architecture"], "amd64", "{info}");
    assert_eq!(info["Os"], "linux", "{info}");
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1), "{info}");

    let back = tmp.path().join("back");
    let back_ref = format!("oci:{}:pulled", back.display());
    let out = run(skopeo(&["copy", "--src-tls-verify=false", &by_digest, &back_ref])).await;
    ok(&out, "skopeo copy berth@digest → oci");
    assert_eq!(layout_top(&back)["digest"], img.digest.as_str());
    assert_eq!(layout_blobs(&back), layout_blobs(&src));

    // A digest berth does not have is an error, not an empty copy.
    let missing = format!("docker://{repo}@{}", common::sha256(b"no such manifest"));
    let out = run(skopeo(&["inspect", "--raw", "--tls-verify=false", &missing])).await;
    assert!(!out.status.success(), "inspecting a missing digest succeeded: {}", String::from_utf8_lossy(&out.stdout));
}

/// Pushes, with the `oras` SDK, two referrers of the subject given on the command line:
/// one through the low-level API (OCI 1.1 `artifactType`, empty config), one through the
/// high-level `push(subject=...)` (no `artifactType`: the config media type stands in).
/// Then pulls both back and checks their content. Prints one JSON line.
const ORAS_SCRIPT: &str = r#"
import json, os, sys, tempfile
import oras.client, oras.defaults, oras.oci

host, repo, subject_digest, subject_size, plugin_type, sbom_type = sys.argv[1:7]
subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": subject_digest, "size": int(subject_size)}
client = oras.client.OrasClient(hostname=host, insecure=True)
work = tempfile.mkdtemp()
os.chdir(work)

# 1. Low level: blobs, then an OCI 1.1 artifact manifest with artifactType and subject.
payload = b'{"name":"demo-plugin","version":"1.0.0"}'
with open("plugin.json", "wb") as f:
    f.write(payload)
container = client.get_container(f"{host}/{repo}:plugin-manifest")
layer = oras.oci.NewLayer("plugin.json", media_type="application/vnd.aisopsflow.plugin.payload.v1+json")
layer["annotations"] = {oras.defaults.annotation_title: "plugin.json"}
r = client.upload_blob("plugin.json", container, layer)
assert r.status_code in (200, 201), ("layer", r.status_code, r.text)
with open("empty.json", "w") as f:
    f.write("{}")
config = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": oras.defaults.blank_config_hash, "size": 2}
r = client.upload_blob("empty.json", container, config)
assert r.status_code in (200, 201), ("config", r.status_code, r.text)
manifest = {"schemaVersion": 2, "mediaType": oras.defaults.default_manifest_media_type,
            "artifactType": plugin_type, "config": config, "layers": [layer], "subject": subject}
r = client.upload_manifest(manifest, container)
assert r.status_code == 201, ("manifest", r.status_code, r.text)
plugin = r.headers["Docker-Content-Digest"]
assert r.headers.get("OCI-Subject") == subject_digest, dict(r.headers)

# 2. High level: push(subject=...).
with open("sbom.txt", "w") as f:
    f.write("sbom: demo-plugin 1.0.0")
r = client.push(target=f"{host}/{repo}:sbom", files=["sbom.txt:text/plain"],
                manifest_config=f"absent.json:{sbom_type}",
                subject=oras.oci.Subject(**subject), quiet=True)
assert r.status_code == 201, ("push", r.status_code, r.text)
sbom = r.headers["Docker-Content-Digest"]

# 3. Pull both back by digest.
out = tempfile.mkdtemp()
files = client.pull(target=f"{host}/{repo}@{plugin}", outdir=os.path.join(out, "plugin"))
assert [os.path.basename(p) for p in files] == ["plugin.json"], files
assert open(files[0], "rb").read() == payload
got = client.get_manifest(f"{host}/{repo}@{plugin}")
assert got["artifactType"] == plugin_type and got["subject"] == subject, got
files = client.pull(target=f"{host}/{repo}@{sbom}", outdir=os.path.join(out, "sbom"))
assert [open(p).read() for p in files] == ["sbom: demo-plugin 1.0.0"], files
got = client.get_manifest(f"{host}/{repo}@{sbom}")
assert got["subject"]["digest"] == subject_digest and got["config"]["mediaType"] == sbom_type, got

print(json.dumps({"plugin": plugin, "sbom": sbom}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_python_pushes_artifact_with_subject_listed_by_referrers_api() {
    common::require_tool("python3");
    let out = run({
        let mut c = Command::new("python3");
        c.args(["-c", "import oras.client, oras.oci; print(oras.__version__)"]);
        c
    })
    .await;
    ok(&out, "python3 -c 'import oras' (pip install oras)");

    let s = TestServer::start().await;
    let c = common::client();
    let repo = "acme/plugin";
    let (image, image_size) = common::push_image(&c, &s.url, repo, "1.0", &common::bytes(7, 4096)).await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let script = tmp.path().join("push_referrers.py");
    std::fs::write(&script, ORAS_SCRIPT).expect("write script");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args([s.host(), repo.to_string(), image.clone(), image_size.to_string()])
        .args([PLUGIN_TYPE, SBOM_TYPE]);
    let stdout = ok(&run(cmd).await, "oras SDK script");
    let pushed: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("script's JSON line");
    let plugin = pushed["plugin"].as_str().expect("plugin digest").to_string();
    let sbom = pushed["sbom"].as_str().expect("sbom digest").to_string();

    // The manifests as berth stores them (their sizes are what referrers must report).
    let mut sizes = std::collections::HashMap::new();
    for d in [&plugin, &sbom] {
        let r = c
            .get(format!("{}/v2/{repo}/manifests/{d}", s.url))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .expect("GET referrer");
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.expect("body");
        assert_eq!(&common::sha256(&body), d);
        sizes.insert(d.clone(), body.len() as u64);
    }

    let referrers = |query: Option<&'static str>| {
        let mut rq = c.get(format!("{}/v2/{repo}/referrers/{image}", s.url));
        if let Some(t) = query {
            rq = rq.query(&[("artifactType", t)]);
        }
        rq.send()
    };

    // Unfiltered: both, each with the right artifactType, digest and size.
    let r = referrers(None).await.expect("GET referrers");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let index: Value = r.json().await.expect("referrers JSON");
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let list = index["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 2, "{index}");
    for (digest, artifact_type) in [(&plugin, PLUGIN_TYPE), (&sbom, SBOM_TYPE)] {
        let d = list
            .iter()
            .find(|d| d["digest"] == digest.as_str())
            .unwrap_or_else(|| panic!("{digest} not listed: {index}"));
        assert_eq!(d["mediaType"], OCI_MANIFEST, "{d}");
        assert_eq!(d["artifactType"], artifact_type, "{d}");
        assert_eq!(d["size"].as_u64(), Some(sizes[digest]), "{d}");
    }

    // Filtered by artifactType (`+` travels as %2B).
    for (t, digest) in [(PLUGIN_TYPE, &plugin), (SBOM_TYPE, &sbom)] {
        let r = referrers(Some(t)).await.expect("GET referrers?artifactType");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("oci-filters-applied").map(|v| v.to_str().unwrap()), Some("artifactType"));
        let index: Value = r.json().await.expect("JSON");
        let list = index["manifests"].as_array().expect("manifests");
        assert_eq!(list.len(), 1, "filter {t}: {index}");
        assert_eq!(list[0]["digest"], digest.as_str());
        assert_eq!(list[0]["artifactType"], t);
    }
    let r = referrers(Some("application/vnd.example.none")).await.expect("GET referrers");
    assert_eq!(r.headers().get("oci-filters-applied").map(|v| v.to_str().unwrap()), Some("artifactType"));
    let index: Value = r.json().await.expect("JSON");
    assert_eq!(index["manifests"], json!([]), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_login_and_push_with_token_auth() {
    use berth::registry::auth::{Account, hash_password};
    common::require_tool("skopeo");
    common::require_tool("gzip");
    let s = TestServer::with(|config| {
        config.auth.accounts = vec![Account {
            name: "alice".into(),
            password_hash: hash_password("pw").expect("hash"),
            namespaces: vec!["acme/*".into()],
            push_only: false,
        }];
        config.auth.anonymous_pull = false;
    })
    .await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let auth_file = tmp.path().join("auth.json");
    let src = tmp.path().join("src");
    let img = write_image(&src, "arm64").await;
    write_layout_index(&src, OCI_MANIFEST, &img.digest, img.manifest.len(), "v1");
    let src_ref = format!("oci:{}:v1", src.display());
    let with_auth = |args: &[&str]| {
        let mut c = skopeo(args);
        c.env("REGISTRY_AUTH_FILE", &auth_file);
        c
    };

    // A wrong password is refused and stores nothing.
    let out = run(with_auth(&["login", "--tls-verify=false", "-u", "alice", "-p", "wrong", &s.host()])).await;
    assert!(!out.status.success(), "login with a wrong password succeeded");
    assert!(!auth_file.exists() || !std::fs::read_to_string(&auth_file).unwrap_or_default().contains(&s.host()));

    let out = run(with_auth(&["login", "--tls-verify=false", "-u", "alice", "-p", "pw", &s.host()])).await;
    ok(&out, "skopeo login (GET /v2/ with the token from /token)");
    assert!(std::fs::read_to_string(&auth_file).expect("auth file").contains(&s.host()));

    // alice may push into acme/*.
    let dest = format!("docker://{}/acme/x:v1", s.host());
    let out = run(with_auth(&["copy", "--dest-tls-verify=false", &src_ref, &dest])).await;
    ok(&out, "skopeo copy into acme/x");
    let out = run(with_auth(&["inspect", "--raw", "--tls-verify=false", &dest])).await;
    assert_eq!(ok(&out, "skopeo inspect --raw").as_bytes(), &img.manifest[..]);

    // ... and nowhere else.
    let out =
        run(with_auth(&["copy", "--dest-tls-verify=false", &src_ref, &format!("docker://{}/other/x:v1", s.host())]))
            .await;
    assert!(!out.status.success(), "push into other/x succeeded");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("403") || err.contains("denied") || err.contains("unauthorized"), "{err}");
    assert!(!s.registry.store.repository_exists("other/x"));
    assert!(s.registry.store.tags("other/x").map(|t| t.is_empty()).unwrap_or(true));
}
