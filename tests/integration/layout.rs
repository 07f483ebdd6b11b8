//! The OCI image layout store against real skopeo (containers/image's `oci:` transport):
//! skopeo reads and copies a layout berth wrote, and berth opens and verifies a layout
//! skopeo wrote. skopeo runs on blocking threads (`spawn_blocking`).

use crate::common::{self, ok, skopeo, tar_one};
use berth::content::layout::OciLayout;
use berth::content::{Fetcher, Pusher, Reader, TagResolver, descriptor_for, fetch_all};
use berth::oci::{ParsedManifest, media};
use serde_json::json;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn reader(data: &[u8]) -> Reader {
    Box::pin(std::io::Cursor::new(data.to_vec()))
}

/// Builds a linux/amd64 image (minimal config, one uncompressed tar layer) in `layout`,
/// tagged `tag`; returns the manifest bytes.
async fn build_image(layout: &OciLayout, tag: &str) -> Vec<u8> {
    let tar = tar_one("hello.txt", b"hello from a berth layout\n");
    let layer = descriptor_for(OCI_LAYER, &tar);
    layout.push(&layer, reader(&tar)).await.expect("push layer");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest().to_string()]},
    }))
    .expect("json");
    let config_desc = descriptor_for(OCI_CONFIG, &config);
    layout.push(&config_desc, reader(&config)).await.expect("push config");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer],
    }))
    .expect("json");
    let md = descriptor_for(media::OCI_MANIFEST, &manifest);
    layout.push(&md, reader(&manifest)).await.expect("push manifest");
    layout.tag(&md, tag).await.expect("tag");
    manifest
}

#[tokio::test]
async fn skopeo_reads_and_copies_a_berth_layout() {
    common::require_tool("skopeo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("berth");
    let layout = OciLayout::open(&dir).expect("open layout");
    let manifest = build_image(&layout, "v1").await;

    let src = format!("oci:{}:v1", dir.display());
    let raw = ok(&skopeo(vec!["inspect".into(), "--raw".into(), src.clone()]).await, "skopeo inspect --raw");
    assert_eq!(raw, manifest, "skopeo returns the manifest bytes unchanged");

    // skopeo's oci: destination gzips uncompressed layers unless told otherwise, so a plain
    // copy rewrites the manifest: same config, the layer as tar+gzip.
    let dst = format!("oci:{}:v1", tmp.path().join("copy").display());
    ok(&skopeo(vec!["copy".into(), src.clone(), dst.clone()]).await, "skopeo copy");
    let raw = ok(&skopeo(vec!["inspect".into(), "--raw".into(), dst]).await, "skopeo inspect --raw of the copy");
    let copied = ParsedManifest::parse(&raw, None).expect("copied manifest");
    let original = ParsedManifest::parse(&manifest, None).expect("manifest");
    assert_eq!(copied.children[0].digest, original.children[0].digest, "config is copied as is");
    assert_eq!(copied.children[1].descriptor.media_type().to_string(), format!("{OCI_LAYER}+gzip"));

    // told to keep uncompressed layers, skopeo copies the manifest byte for byte
    let dst = format!("oci:{}:v1", tmp.path().join("exact").display());
    let args = vec!["copy".into(), "--dest-oci-accept-uncompressed-layers".into(), src, dst.clone()];
    ok(&skopeo(args).await, "skopeo copy --dest-oci-accept-uncompressed-layers");
    let raw = ok(&skopeo(vec!["inspect".into(), "--raw".into(), dst]).await, "skopeo inspect --raw of the copy");
    assert_eq!(raw, manifest, "an uncompressed oci-to-oci copy keeps the manifest");
}

#[tokio::test]
async fn berth_opens_a_layout_skopeo_wrote() {
    common::require_tool("skopeo");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("berth");
    let layout = OciLayout::open(&dir).expect("open layout");
    build_image(&layout, "v1").await;

    let skopeo_dir = tmp.path().join("skopeo");
    let (src, dst) = (format!("oci:{}:v1", dir.display()), format!("oci:{}:copy", skopeo_dir.display()));
    ok(&skopeo(vec!["copy".into(), src, dst]).await, "skopeo copy");

    let copied = OciLayout::open(&skopeo_dir).expect("open skopeo's layout");
    assert_eq!(copied.tags(), vec!["copy"]);
    let md = copied.resolve("copy").await.expect("resolve copy");
    let bytes = fetch_all(&copied, &md).await.expect("fetch manifest");
    let parsed = ParsedManifest::parse(&bytes, Some(md.media_type().as_ref())).expect("parse manifest");
    assert_eq!(parsed.children.len(), 2, "config and one layer");
    for child in &parsed.children {
        let blob = fetch_all(&copied, &child.descriptor).await.expect("fetch blob");
        assert_eq!(blob.len() as u64, child.size);
    }
    // the reader streams what fetch_all verifies
    assert!(copied.fetch(&md).await.is_ok());

    // berth writes into skopeo's layout, and skopeo reads the new tag back
    copied.tag(&md, "again").await.expect("tag in skopeo's layout");
    let again = format!("oci:{}:again", skopeo_dir.display());
    let raw = ok(&skopeo(vec!["inspect".into(), "--raw".into(), again]).await, "skopeo inspect --raw again");
    assert_eq!(raw, bytes);

    // skopeo adds a tag to berth's layout; berth sees both on reopening
    let (src, dst) = (format!("oci:{}:copy", skopeo_dir.display()), format!("oci:{}:v2", dir.display()));
    ok(&skopeo(vec!["copy".into(), src, dst]).await, "skopeo copy into berth's layout");
    drop(layout);
    assert_eq!(OciLayout::open(&dir).expect("reopen").tags(), vec!["v1", "v2"]);
}
