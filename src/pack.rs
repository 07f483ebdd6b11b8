//! Packing a plugin binary into a minimal, reproducible OCI image.
//!
//! Owns the plugin image format (OCI image-spec 1.1): one `tar+gzip` layer holding the
//! binary at the entrypoint path, any extra files, their parent directories and `/tmp`;
//! an image configuration that runs the binary as an unprivileged user on one exposed
//! port; and an image manifest carrying the `org.opencontainers.image.*` annotations.
//!
//! Reproducible by construction: the same [`PackSpec`] (and the same file contents) gives
//! the same manifest digest. Layer entries are sorted, owned by `0:0`, with mtime 0 and
//! fixed modes (so the image is read-only for the plugin user, except `/tmp`); the gzip
//! stream has no file name and mtime 0 at a fixed level; every `created` is the Unix epoch
//! unless the annotations give one; JSON object keys are written in sorted order (oci-spec
//! keeps annotations in a `HashMap`).

use crate::content::{ContentError, GraphTarget, Reader, descriptor_for};
use crate::oci::{Digest, media};
use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;

/// Media type of an OCI image configuration.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the one layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// `created` when the annotations give none: the Unix epoch, so builds are reproducible.
pub const EPOCH: &str = "1970-01-01T00:00:00Z";
/// `PATH` put in the environment when [`PackSpec::env`] sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// gzip level of the layer (fixed: a different level gives a different digest).
pub const GZIP_LEVEL: u32 = 6;

/// The `org.opencontainers.image.*` annotation keys the packer knows.
pub mod annotations {
    pub const TITLE: &str = "org.opencontainers.image.title";
    pub const VERSION: &str = "org.opencontainers.image.version";
    pub const SOURCE: &str = "org.opencontainers.image.source";
    pub const LICENSES: &str = "org.opencontainers.image.licenses";
    pub const DESCRIPTION: &str = "org.opencontainers.image.description";
    pub const VENDOR: &str = "org.opencontainers.image.vendor";
    pub const CREATED: &str = "org.opencontainers.image.created";
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{field}: image path {path:?} {reason}")]
    InvalidPath { field: String, path: String, reason: &'static str },
    #[error("{field}: image path {path:?} is already used by {other}")]
    PathConflict { field: String, path: String, other: String },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("building the {what}: {source}")]
    Oci { what: &'static str, source: oci_spec::OciSpecError },
    #[error("serializing the {what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },
    #[error("writing the layer: {0}")]
    Layer(std::io::Error),
    #[error("pushing {what}: {source}")]
    Push { what: &'static str, source: ContentError },
    #[error("tagging {tag:?}: {source}")]
    Tag { tag: String, source: ContentError },
    #[error("packing task failed: {0}")]
    Task(String),
}

/// What goes into a plugin image. [`PackSpec::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSpec {
    /// The plugin binary, stored at [`entrypoint_path`](Self::entrypoint_path) with mode 0755.
    pub binary: PathBuf,
    /// Extra files: (source on disk, absolute path in the image), stored with mode 0644.
    pub files: Vec<(PathBuf, String)>,
    /// Absolute path of the binary in the image; default `/plugin`.
    pub entrypoint_path: String,
    /// The one exposed TCP port; default 8080.
    pub port: u16,
    /// `config.User`; default `65532:65532` (distroless "nonroot").
    pub user: String,
    /// Manifest annotations (`org.opencontainers.image.*`, see [`annotations`]);
    /// `created` is added as [`EPOCH`] when missing and also becomes the config's `created`.
    pub annotations: BTreeMap<String, String>,
    /// `config.Env` entries (`NAME=value`); [`DEFAULT_PATH`] is added when none sets `PATH`.
    pub env: Vec<String>,
    /// Default `amd64`.
    pub architecture: String,
    /// Default `linux`.
    pub os: String,
}

impl PackSpec {
    pub fn new(binary: impl Into<PathBuf>) -> PackSpec {
        PackSpec {
            binary: binary.into(),
            files: Vec::new(),
            entrypoint_path: "/plugin".to_string(),
            port: 8080,
            user: "65532:65532".to_string(),
            annotations: BTreeMap::new(),
            env: Vec::new(),
            architecture: "amd64".to_string(),
            os: "linux".to_string(),
        }
    }

    /// The spec a plugin's binary is published with (`berth publish --binary`, the
    /// first-party seed): the port and the `org.opencontainers.image.*` annotations come
    /// from its plugin manifest.
    pub fn for_plugin(binary: impl Into<PathBuf>, manifest: &serde_json::Value) -> Result<PackSpec, PackError> {
        let mut spec = PackSpec::new(binary);
        if let Some(port) = manifest.pointer("/runtime/port").and_then(serde_json::Value::as_u64) {
            spec.port = u16::try_from(port).map_err(|_| PackError::Invalid {
                field: "/runtime/port".to_string(),
                reason: format!("{port} does not fit a port number"),
            })?;
        }
        let text = |ptr: &str| manifest.pointer(ptr).and_then(serde_json::Value::as_str);
        // Title, version and vendor are always set (a manifest without them fails validation).
        for (key, ptr) in
            [(annotations::TITLE, "/name"), (annotations::VERSION, "/version"), (annotations::VENDOR, "/publisher")]
        {
            spec.annotations.insert(key.to_string(), text(ptr).unwrap_or_default().to_string());
        }
        for (key, ptr) in [
            (annotations::DESCRIPTION, "/description"),
            (annotations::LICENSES, "/license"),
            (annotations::SOURCE, "/source"),
        ] {
            if let Some(v) = text(ptr) {
                spec.annotations.insert(key.to_string(), v.to_string());
            }
        }
        Ok(spec)
    }
}

/// A packed image, not yet pushed: each blob with its descriptor.
#[derive(Debug, Clone)]
pub struct Packed {
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layer: Descriptor,
    pub layer_bytes: Vec<u8>,
    /// sha256 of the uncompressed layer tar (`rootfs.diff_ids[0]`).
    pub diff_id: Digest,
}

/// Builds the image for `spec` and pushes it to `dst`, children first (blobs `dst` already
/// has are not pushed again), then tags it if `tag` is given. Returns the manifest's
/// descriptor.
pub async fn pack(spec: &PackSpec, dst: &dyn GraphTarget, tag: Option<&str>) -> Result<Descriptor, PackError> {
    let owned = spec.clone();
    let packed =
        tokio::task::spawn_blocking(move || build(&owned)).await.map_err(|e| PackError::Task(e.to_string()))??;
    push_blob(dst, &packed.layer, &packed.layer_bytes, "the layer").await?;
    push_blob(dst, &packed.config, &packed.config_bytes, "the config").await?;
    push_blob(dst, &packed.manifest, &packed.manifest_bytes, "the manifest").await?;
    if let Some(tag) = tag {
        dst.tag(&packed.manifest, tag).await.map_err(|source| PackError::Tag { tag: tag.to_string(), source })?;
    }
    Ok(packed.manifest)
}

async fn push_blob(
    dst: &dyn GraphTarget,
    desc: &Descriptor,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), PackError> {
    let exists = dst.exists(desc).await.map_err(|source| PackError::Push { what, source })?;
    if !exists {
        let reader: Reader = Box::pin(std::io::Cursor::new(bytes.to_vec()));
        dst.push(desc, reader).await.map_err(|source| PackError::Push { what, source })?;
    }
    Ok(())
}

/// Builds the layer, config and manifest for `spec` without pushing anything. Blocking
/// (reads the files and compresses).
pub fn build(spec: &PackSpec) -> Result<Packed, PackError> {
    let tar = layer_tar(spec)?;
    let diff_id = Digest::sha256(&tar);
    let layer_bytes = gzip(&tar)?;
    let layer = descriptor_for(LAYER_MEDIA_TYPE, &layer_bytes);

    let config_bytes = config_json(spec, &diff_id)?;
    let config = descriptor_for(CONFIG_MEDIA_TYPE, &config_bytes);

    let manifest_bytes = manifest_json(spec, &config, &layer)?;
    let manifest = descriptor_for(media::OCI_MANIFEST, &manifest_bytes);
    Ok(Packed { manifest, manifest_bytes, config, config_bytes, layer, layer_bytes, diff_id })
}

/// One layer entry, keyed by its path in the tar (relative, no leading `/`).
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8>, field: String },
}

/// The uncompressed layer tar: sorted entries, root-owned, mtime 0.
fn layer_tar(spec: &PackSpec) -> Result<Vec<u8>, PackError> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut files: Vec<(String, PathBuf, u32, String)> = Vec::new();
    files.push((spec.entrypoint_path.clone(), spec.binary.clone(), 0o755, "entrypoint_path".to_string()));
    for (i, (src, dst)) in spec.files.iter().enumerate() {
        files.push((dst.clone(), src.clone(), 0o644, format!("files[{i}]")));
    }

    // Directories first, so a file can be checked against every directory.
    let mut dirs: BTreeSet<String> = BTreeSet::from(["tmp".to_string()]);
    let mut checked = Vec::with_capacity(files.len());
    for (image_path, src, mode, field) in files {
        let rel = image_path_rel(&field, &image_path)?;
        let mut parent = rel.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            dirs.insert(p.to_string());
            parent = p;
        }
        checked.push((rel, src, mode, field));
    }
    for d in &dirs {
        let mode = if d == "tmp" { 0o1777 } else { 0o755 };
        entries.insert(d.clone(), Entry::Dir { mode });
    }
    for (rel, src, mode, field) in checked {
        if let Some(other) = entries.get(&rel) {
            let other = match other {
                Entry::Dir { .. } => "a directory".to_string(),
                Entry::File { field, .. } => field.clone(),
            };
            return Err(PackError::PathConflict { field, path: format!("/{rel}"), other });
        }
        let data = read_file(&src)?;
        entries.insert(rel, Entry::File { mode, data, field });
    }

    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty()).map_err(PackError::Layer)?;
            }
            Entry::File { mode, data, .. } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice()).map_err(PackError::Layer)?;
            }
        }
    }
    builder.into_inner().map_err(PackError::Layer)
}

/// Checks an absolute image path and returns it without the leading `/`.
fn image_path_rel(field: &str, path: &str) -> Result<String, PackError> {
    let invalid = |reason| PackError::InvalidPath { field: field.to_string(), path: path.to_string(), reason };
    let Some(rel) = path.strip_prefix('/') else {
        return Err(invalid("is not absolute"));
    };
    if rel.is_empty() {
        return Err(invalid("names the root directory"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    for part in rel.split('/') {
        match part {
            "" => return Err(invalid("has an empty component (`//` or a trailing `/`)")),
            "." | ".." => return Err(invalid("has a `.` or `..` component")),
            _ => {}
        }
    }
    Ok(rel.to_string())
}

fn read_file(src: &std::path::Path) -> Result<Vec<u8>, PackError> {
    let path = src.display().to_string();
    let meta = std::fs::metadata(src).map_err(|source| PackError::Read { path: path.clone(), source })?;
    if !meta.is_file() {
        return Err(PackError::NotAFile { path });
    }
    std::fs::read(src).map_err(|source| PackError::Read { path, source })
}

/// gzip with no file name, mtime 0, OS "unknown" and a fixed level.
fn gzip(data: &[u8]) -> Result<Vec<u8>, PackError> {
    let mut enc = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::new(GZIP_LEVEL));
    enc.write_all(data).map_err(PackError::Layer)?;
    enc.finish().map_err(PackError::Layer)
}

fn created(spec: &PackSpec) -> String {
    spec.annotations.get(annotations::CREATED).cloned().unwrap_or_else(|| EPOCH.to_string())
}

fn config_json(spec: &PackSpec, diff_id: &Digest) -> Result<Vec<u8>, PackError> {
    let oci = |source| PackError::Oci { what: "image configuration", source };
    if spec.user.trim().is_empty() {
        return Err(PackError::Invalid { field: "user".into(), reason: "must not be empty".into() });
    }
    if spec.port == 0 {
        return Err(PackError::Invalid { field: "port".into(), reason: "must not be 0".into() });
    }
    for (i, e) in spec.env.iter().enumerate() {
        match e.split_once('=') {
            Some((name, _)) if !name.is_empty() => {}
            _ => {
                return Err(PackError::Invalid {
                    field: format!("env[{i}]"),
                    reason: format!("{e:?} is not NAME=value"),
                });
            }
        }
    }
    for (field, value) in [("architecture", &spec.architecture), ("os", &spec.os)] {
        if value.is_empty() {
            return Err(PackError::Invalid { field: field.into(), reason: "must not be empty".into() });
        }
    }
    let mut env = Vec::with_capacity(spec.env.len() + 1);
    if !spec.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    env.extend(spec.env.iter().cloned());

    let config = ConfigBuilder::default()
        .user(spec.user.clone())
        .entrypoint(vec![spec.entrypoint_path.clone()])
        .exposed_ports(vec![format!("{}/tcp", spec.port)])
        .env(env)
        .working_dir("/".to_string())
        .build()
        .map_err(oci)?;
    let rootfs =
        RootFsBuilder::default().typ("layers".to_string()).diff_ids(vec![diff_id.to_string()]).build().map_err(oci)?;
    let image = ImageConfigurationBuilder::default()
        .created(created(spec))
        .architecture(Arch::from(spec.architecture.as_str()))
        .os(Os::from(spec.os.as_str()))
        .config(config)
        .rootfs(rootfs)
        .build()
        .map_err(oci)?;
    to_sorted_json(&image, "image configuration")
}

fn manifest_json(spec: &PackSpec, config: &Descriptor, layer: &Descriptor) -> Result<Vec<u8>, PackError> {
    let mut annotations: HashMap<String, String> = HashMap::new();
    for (k, v) in &spec.annotations {
        if k.is_empty() {
            return Err(PackError::Invalid { field: "annotations".into(), reason: "a key is empty".into() });
        }
        annotations.insert(k.clone(), v.clone());
    }
    annotations.insert(annotations::CREATED.to_string(), created(spec));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.clone())
        .layers(vec![layer.clone()])
        .annotations(annotations)
        .build()
        .map_err(|source| PackError::Oci { what: "image manifest", source })?;
    to_sorted_json(&manifest, "image manifest")
}

/// Serializes `value` with every object's keys in sorted order, whatever map type (or
/// `serde_json` feature) it went through.
fn to_sorted_json(value: &impl serde::Serialize, what: &'static str) -> Result<Vec<u8>, PackError> {
    let v = serde_json::to_value(value).map_err(|source| PackError::Json { what, source })?;
    serde_json::to_vec(&sorted(v)).map_err(|source| PackError::Json { what, source })
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let ordered: BTreeMap<String, serde_json::Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(ordered.into_iter().collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::layout::OciLayout;
    use crate::content::{MemoryStore, TagResolver, fetch_all};
    use std::io::Read;

    /// A spec over files in a fresh temp dir (kept alive by the returned guard).
    fn fixture() -> (tempfile::TempDir, PackSpec) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("plugin-bin");
        std::fs::write(&bin, b"\x7fELF pretend binary").unwrap();
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, b"greeting = \"hi\"\n").unwrap();
        let schema = dir.path().join("schema.json");
        std::fs::write(&schema, b"{}").unwrap();
        let mut spec = PackSpec::new(&bin);
        spec.files.push((cfg, "/etc/plugin/config.toml".into()));
        spec.files.push((schema, "/usr/share/plugin/schema.json".into()));
        spec.annotations.insert(annotations::TITLE.into(), "demo".into());
        spec.annotations.insert(annotations::VERSION.into(), "1.2.3".into());
        spec.annotations.insert(annotations::LICENSES.into(), "Apache-2.0".into());
        spec.env.push("RUST_LOG=info".into());
        (dir, spec)
    }

    /// path, type, mode, uid, gid, mtime, data
    type TarEntry = (String, tar::EntryType, u32, u64, u64, u64, Vec<u8>);

    fn untar(gz: &[u8]) -> Vec<TarEntry> {
        let mut out = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((
                path,
                h.entry_type(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                data,
            ));
        }
        out
    }

    #[test]
    fn same_inputs_same_digest() {
        let (_dir, spec) = fixture();
        let a = build(&spec).unwrap();
        let b = build(&spec).unwrap();
        assert_eq!(a.manifest.digest(), b.manifest.digest());
        assert_eq!(a.layer_bytes, b.layer_bytes);
        assert_eq!(a.config_bytes, b.config_bytes);
        // and any change shows
        let mut other = spec.clone();
        other.port = 9090;
        assert_ne!(build(&other).unwrap().manifest.digest(), a.manifest.digest());
    }

    #[test]
    fn layer_lists_exactly_the_expected_entries() {
        let (_dir, spec) = fixture();
        let p = build(&spec).unwrap();
        // deterministic gzip header: no name, mtime 0
        assert_eq!(&p.layer_bytes[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(p.layer_bytes[3] & 0x08, 0, "no FNAME");
        assert_eq!(&p.layer_bytes[4..8], &[0, 0, 0, 0], "mtime 0");
        let entries = untar(&p.layer_bytes);
        let got: Vec<(&str, tar::EntryType, u32)> = entries.iter().map(|e| (e.0.as_str(), e.1, e.2)).collect();
        use tar::EntryType::{Directory as D, Regular as F};
        assert_eq!(
            got,
            vec![
                ("etc/", D, 0o755),
                ("etc/plugin/", D, 0o755),
                ("etc/plugin/config.toml", F, 0o644),
                ("plugin", F, 0o755),
                ("tmp/", D, 0o1777),
                ("usr/", D, 0o755),
                ("usr/share/", D, 0o755),
                ("usr/share/plugin/", D, 0o755),
                ("usr/share/plugin/schema.json", F, 0o644),
            ]
        );
        for e in &entries {
            assert_eq!((e.3, e.4, e.5), (0, 0, 0), "{}: uid, gid, mtime", e.0);
        }
        let plugin = entries.iter().find(|e| e.0 == "plugin").unwrap();
        assert_eq!(plugin.6, b"\x7fELF pretend binary");
        // diff_id is the digest of the uncompressed tar
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(p.layer_bytes.as_slice()).read_to_end(&mut raw).unwrap();
        assert_eq!(p.diff_id, Digest::sha256(&raw));
    }

    #[test]
    fn config_and_manifest_say_what_the_spec_says() {
        let (_dir, spec) = fixture();
        let p = build(&spec).unwrap();
        let c: serde_json::Value = serde_json::from_slice(&p.config_bytes).unwrap();
        assert_eq!(c["config"]["User"], "65532:65532");
        assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/plugin"]));
        assert_eq!(c["config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
        assert_eq!(c["config"]["WorkingDir"], "/");
        assert_eq!(c["config"]["Env"], serde_json::json!([DEFAULT_PATH, "RUST_LOG=info"]));
        assert_eq!(c["created"], EPOCH);
        assert_eq!(c["architecture"], "amd64");
        assert_eq!(c["os"], "linux");
        assert_eq!(c["rootfs"], serde_json::json!({"type": "layers", "diff_ids": [p.diff_id.to_string()]}));

        let m: serde_json::Value = serde_json::from_slice(&p.manifest_bytes).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], media::OCI_MANIFEST);
        assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(m["config"]["digest"], p.config.digest().to_string());
        assert_eq!(m["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(m["annotations"][annotations::CREATED], EPOCH);
        assert_eq!(m["annotations"][annotations::TITLE], "demo");
        // keys come out sorted
        let keys: Vec<&String> = m["annotations"].as_object().unwrap().keys().collect();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn bad_specs_are_refused_naming_the_field() {
        let (_dir, spec) = fixture();
        let mut s = spec.clone();
        s.entrypoint_path = "plugin".into();
        assert!(build(&s).unwrap_err().to_string().starts_with("entrypoint_path:"));
        let mut s = spec.clone();
        s.files[0].1 = "/etc/../x".into();
        assert!(build(&s).unwrap_err().to_string().starts_with("files[0]:"));
        let mut s = spec.clone();
        s.files[1].1 = "/etc/plugin".into();
        let e = build(&s).unwrap_err();
        assert!(matches!(e, PackError::PathConflict { .. }), "{e}");
        let mut s = spec.clone();
        s.files[1].1 = "/plugin".into();
        assert_eq!(
            build(&s).unwrap_err().to_string(),
            "files[1]: image path \"/plugin\" is already used by entrypoint_path"
        );
        let mut s = spec.clone();
        s.env.push("oops".into());
        assert!(build(&s).unwrap_err().to_string().starts_with("env[1]:"));
        let mut s = spec;
        s.binary = "/nonexistent/berth-plugin".into();
        assert!(matches!(build(&s).unwrap_err(), PackError::Read { .. }));
    }

    #[tokio::test]
    async fn pack_to_memory_and_layout_gives_one_digest() {
        let (_dir, spec) = fixture();
        let mem = MemoryStore::new();
        let d1 = pack(&spec, &mem, Some("v1")).await.unwrap();
        let d2 = pack(&spec, &mem, Some("v1")).await.unwrap();
        assert_eq!(d1, d2);
        assert_eq!(mem.resolve("v1").await.unwrap().digest(), d1.digest());
        let manifest = fetch_all(&mem, &d1).await.unwrap();
        let parsed: oci_spec::image::ImageManifest = serde_json::from_slice(&manifest).unwrap();
        let config = fetch_all(&mem, parsed.config()).await.unwrap();
        let c: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(c["config"]["User"], "65532:65532");
        fetch_all(&mem, &parsed.layers()[0]).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open(dir.path()).unwrap();
        let d3 = pack(&spec, &layout, Some("v1")).await.unwrap();
        assert_eq!(d3.digest(), d1.digest());
        assert_eq!(layout.resolve("v1").await.unwrap().digest(), d1.digest());
    }

    #[test]
    fn a_plugin_spec_takes_port_and_annotations_from_the_manifest() {
        let m = serde_json::json!({
            "name": "demo", "version": "1.2.3", "publisher": "acme", "license": "MIT",
            "runtime": {"port": 9000},
        });
        let spec = PackSpec::for_plugin("bin", &m).unwrap();
        assert_eq!(spec.port, 9000);
        let a = |k: &str| spec.annotations.get(k).map(String::as_str);
        assert_eq!((a(annotations::TITLE), a(annotations::VERSION)), (Some("demo"), Some("1.2.3")));
        assert_eq!((a(annotations::VENDOR), a(annotations::LICENSES)), (Some("acme"), Some("MIT")));
        assert_eq!(a(annotations::DESCRIPTION), None);
        let e = PackSpec::for_plugin("bin", &serde_json::json!({"runtime": {"port": 70000}})).unwrap_err();
        assert!(e.to_string().starts_with("/runtime/port:"), "{e}");
    }
}
