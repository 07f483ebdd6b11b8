//! Starting a plugin image for a conformance run: resolve the image (registry reference or
//! OCI layout), read its plugin manifest artifact from the referrers, unpack its layers,
//! and run it under runc — as the image's non-root user, on a read-only root filesystem,
//! with no capabilities, no new privileges, and only a fresh runner API key mounted in
//! (`/run/secrets/runner_api_key`).
//!
//! The plugin shares the host's network namespace here, listening on a free loopback port,
//! so the harness can reach it; the runner's egress-controlled sandbox is the runner
//! module's business. Layers are unpacked by [`crate::runner::unpack`]; the runtime spec,
//! with the default seccomp profile, is built by [`crate::runner::spec`].

use crate::content::endpoint::Endpoint;
use crate::content::remote::RemoteOptions;
use crate::content::{ContentError, GraphTarget, fetch_all};
use crate::plugin::{PLUGIN_MANIFEST_MEDIA_TYPE, PluginManifest};
use crate::runner::spec::{Network, Sandbox, SpecError, build_spec, image_user, limits_for, write_bundle};
use crate::runner::unpack::{self, Layer, unpack_layers};
use oci_spec::image::Descriptor;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("{0}")]
    Reference(String),
    #[error("{image}: no plugin manifest artifact ({PLUGIN_MANIFEST_MEDIA_TYPE}) refers to it; pass --manifest")]
    NoManifest { image: String },
    #[error("the plugin manifest attached to {image} is invalid:\n{problems}")]
    InvalidManifest { image: String, problems: String },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("runc: {0}")]
    Runc(String),
    #[error("runtime spec: {0}")]
    Spec(#[from] SpecError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the plugin did not listen on {addr} within {secs} s; its output:\n{log}")]
    NotListening { addr: String, secs: u64, log: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError + '_ {
    move |source| LaunchError::Io { path: path.display().to_string(), source }
}

/// A plugin running under runc; stopped and removed on drop.
pub struct Launched {
    pub url: String,
    pub key: Vec<u8>,
    pub manifest: PluginManifest,
    id: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Launched {
    /// The container id (for `runc state` and friends).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the plugin printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plugin.log")).unwrap_or_default()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["kill", &self.id, "KILL"]).output();
        let _ = Command::new("runc").args(["delete", "--force", &self.id]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The plugin manifest artifact attached to `image`, validated.
pub async fn attached_manifest(
    t: &dyn GraphTarget,
    image: &Descriptor,
    repository: Option<&str>,
) -> Result<PluginManifest, LaunchError> {
    let name = image.digest().to_string();
    let found = t
        .predecessors(image)
        .await?
        .into_iter()
        .find(|d| d.artifact_type().as_ref().is_some_and(|a| a.to_string() == PLUGIN_MANIFEST_MEDIA_TYPE))
        .ok_or_else(|| LaunchError::NoManifest { image: name.clone() })?;
    let m: Value = serde_json::from_slice(&fetch_all(t, &found).await?)
        .map_err(|e| LaunchError::Image { image: name.clone(), message: e.to_string() })?;
    let layer: Descriptor = serde_json::from_value(m["layers"][0].clone()).map_err(|e| LaunchError::Image {
        image: name.clone(),
        message: format!("manifest artifact has no layer: {e}"),
    })?;
    let doc: Value = serde_json::from_slice(&fetch_all(t, &layer).await?).map_err(|e| LaunchError::Image {
        image: name.clone(),
        message: format!("manifest artifact is not JSON: {e}"),
    })?;
    crate::plugin::validate(&doc, repository)
        .map_err(|e| LaunchError::InvalidManifest { image: name, problems: e.to_string() })
}

/// Unpacks every layer of `image` into `rootfs` with the runner's safe unpacker (digests
/// verified, paths and links confined to the root, whiteouts honoured, size bounded).
async fn unpack(t: &dyn GraphTarget, image: &Descriptor, rootfs: &Path) -> Result<Value, LaunchError> {
    let name = image.digest().to_string();
    let bad = |message: String| LaunchError::Image { image: name.clone(), message };
    let m: Value = serde_json::from_slice(&fetch_all(t, image).await?).map_err(|e| bad(e.to_string()))?;
    let config_desc: Descriptor =
        serde_json::from_value(m["config"].clone()).map_err(|e| bad(format!("config: {e}")))?;
    let config: Value =
        serde_json::from_slice(&fetch_all(t, &config_desc).await?).map_err(|e| bad(format!("config: {e}")))?;
    let descs: Vec<Descriptor> =
        serde_json::from_value(m["layers"].clone()).map_err(|e| bad(format!("layers: {e}")))?;
    let mut layers = Vec::with_capacity(descs.len());
    for d in descs {
        // fetch_all checks size and digest; the unpacker checks the digest again as it reads.
        let bytes = fetch_all(t, &d).await?;
        layers.push(Layer {
            digest: d.digest().to_string(),
            media_type: d.media_type().to_string(),
            reader: Box::new(std::io::Cursor::new(bytes)),
        });
    }
    let root = rootfs.to_path_buf();
    tokio::task::spawn_blocking(move || unpack_layers(layers, &root, &unpack::Limits::default()))
        .await
        .map_err(|e| bad(e.to_string()))?
        .map_err(|e| bad(e.to_string()))?;
    Ok(config)
}

fn free_port() -> Result<u16, LaunchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr().map_err(io(Path::new("127.0.0.1:0")))?.port())
}

/// Resolves `reference`, unpacks it and starts it under runc; waits until it listens.
/// `manifest` overrides the attached plugin manifest.
pub async fn launch(
    reference: &str,
    opts: &RemoteOptions,
    manifest: Option<PluginManifest>,
) -> Result<Launched, LaunchError> {
    let e = Endpoint::parse(reference).map_err(|e| LaunchError::Reference(e.to_string()))?;
    if let Endpoint::Registry(r) = &e
        && r.digest.is_none()
    {
        return Err(LaunchError::Reference(format!("{reference}: name the image by digest (REF@sha256:…)")));
    }
    let r = e.reference().ok_or_else(|| LaunchError::Reference(format!("{reference} names no tag or digest")))?;
    let opened = e.open(opts)?;
    let t = opened.target();
    let image = t.resolve(&r).await?;
    let repository = match &e {
        Endpoint::Registry(r) => Some(r.repository.clone()),
        Endpoint::Layout { .. } => None,
    };
    let manifest = match manifest {
        Some(m) => m,
        None => attached_manifest(t, &image, repository.as_deref()).await?,
    };
    let dir = tempfile::tempdir().map_err(io(Path::new("temporary directory")))?;
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).map_err(io(&bundle))?;
    let rootfs = std::path::absolute(bundle.join("rootfs")).map_err(io(&bundle))?;
    let config = unpack(t, &image, &rootfs).await?;
    drop(opened);
    let (uid, gid) =
        image_user(&config).map_err(|message| LaunchError::Image { image: image.digest().to_string(), message })?;

    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).map_err(io(&secrets))?;
    let key: [u8; 32] = rand::random();
    let key_path = secrets.join("runner_api_key");
    std::fs::write(&key_path, key).map_err(io(&key_path))?;

    let port = free_port()?;
    // The harness reaches the plugin on a loopback port of the host's network; the runner's
    // own sandbox gives it a namespace with only loopback and an egress proxy.
    let sandbox = Sandbox {
        uid,
        gid,
        port,
        rootfs,
        secrets: std::path::absolute(&secrets).map_err(io(&secrets))?,
        limits: limits_for(&manifest),
        network: Network::Host,
        env: vec![],
        hostname: "plugin".to_string(),
    };
    let spec = build_spec(&config, &sandbox)?;
    write_bundle(&bundle, &spec).map_err(io(&bundle.join("config.json")))?;
    let id = format!("berth-conformance-{}-{port}", std::process::id());
    let log_path = dir.path().join("plugin.log");
    let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
    let log2 = log.try_clone().map_err(io(&log_path))?;
    let child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| LaunchError::Runc(format!("starting runc: {e} (is runc installed?)")))?;
    let mut launched =
        Launched { url: format!("http://127.0.0.1:{port}"), key: key.to_vec(), manifest, id, child, dir };
    // Wait (bounded) for the port to accept connections.
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return Ok(launched);
        }
        if let Ok(Some(status)) = launched.child.try_wait() {
            return Err(LaunchError::Runc(format!(
                "the container exited ({status}) before listening:\n{}",
                launched.log()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(LaunchError::NotListening { addr, secs: 10, log: launched.log() })
}
