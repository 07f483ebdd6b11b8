//! `berth::pack` against real skopeo: an image packed into an OCI layout is one that
//! containers/image reads, with the user, entrypoint and port berth wrote, under the
//! digest berth returned.

use crate::common::{ok, skopeo};
use berth::content::layout::OciLayout;
use berth::pack::{PackSpec, annotations, pack};
use std::process::Output;

/// Runs skopeo (see common) and parses its JSON output.
fn json_ok(out: &Output, what: &str) -> serde_json::Value {
    serde_json::from_slice(&ok(out, what)).unwrap_or_else(|e| panic!("{what}: output is not JSON: {e}"))
}

#[tokio::test]
async fn skopeo_reads_a_packed_plugin_image() {
    let src = tempfile::tempdir().expect("tempdir");
    let bin = src.path().join("plugin");
    std::fs::write(&bin, b"\x7fELF not really").expect("write");
    let readme = src.path().join("README");
    std::fs::write(&readme, b"a plugin\n").expect("write");
    let mut spec = PackSpec::new(&bin);
    spec.files.push((readme, "/usr/share/doc/plugin/README".into()));
    spec.annotations.insert(annotations::TITLE.into(), "skopeo-demo".into());
    spec.annotations.insert(annotations::VERSION.into(), "0.1.0".into());

    let dir = tempfile::tempdir().expect("tempdir");
    let layout = OciLayout::open(dir.path()).expect("open layout");
    let desc = pack(&spec, &layout, Some("v1")).await.expect("pack");
    let image = format!("oci:{}:v1", dir.path().display());

    let config =
        json_ok(&skopeo(vec!["inspect".into(), "--config".into(), image.clone()]).await, "skopeo inspect --config");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/plugin"]));
    assert_eq!(config["config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");

    let info = json_ok(&skopeo(vec!["inspect".into(), image.clone()]).await, "skopeo inspect");
    assert_eq!(info["Digest"], desc.digest().to_string());
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1));

    // skopeo copies it (verifying every blob against its digest) into a second layout,
    // and packing again into that layout changes nothing.
    let copy_dir = tempfile::tempdir().expect("tempdir");
    let copy = format!("oci:{}:v1", copy_dir.path().display());
    let out = skopeo(vec!["copy".into(), image, copy.clone()]).await;
    assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
    let again =
        pack(&spec, &OciLayout::open(copy_dir.path()).expect("open copy"), Some("v2")).await.expect("pack again");
    assert_eq!(again.digest(), desc.digest());
}
