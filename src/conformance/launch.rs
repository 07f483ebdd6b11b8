//! Starting a plugin image for a conformance run: resolve the image (registry reference or
//! OCI layout), read its plugin manifest artifact from the referrers, unpack its layers,
//! and run it under runc — as the image's non-root user, on a read-only root filesystem,
//! with no capabilities, no new privileges, and only a fresh runner API key mounted in
//! (`/run/secrets/runner_api_key`).
//!
//! The plugin shares the host's network namespace here, listening on a free loopback port,
//! so the harness can reach it; the runner's egress-controlled sandbox is the runner
//! module's business. Layers are unpacked by [`crate::runner::unpack`].

use crate::content::endpoint::Endpoint;
use crate::content::remote::RemoteOptions;
use crate::content::{ContentError, GraphTarget, fetch_all};
use crate::plugin::{PLUGIN_MANIFEST_MEDIA_TYPE, PluginManifest};
use crate::runner::policy::Limits;
use crate::runner::unpack::{self, Layer, unpack_layers};
use oci_spec::image::Descriptor;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
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

/// `uid:gid` from the image config's `User` (numeric only: there is no /etc/passwd to read).
fn user(config: &Value) -> Result<(u32, u32), String> {
    let u = config.pointer("/config/User").and_then(Value::as_str).unwrap_or("");
    let (uid, gid) = u.split_once(':').unwrap_or((u, u));
    match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(0), _) => Err("the image runs as root (config.User); plugins must not".to_string()),
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(format!("config.User {u:?} is not a numeric uid:gid")),
    }
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
    let config = unpack(t, &image, &bundle.join("rootfs")).await?;
    drop(opened);
    let (uid, gid) =
        user(&config).map_err(|message| LaunchError::Image { image: image.digest().to_string(), message })?;

    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).map_err(io(&secrets))?;
    let key: [u8; 32] = rand::random();
    let key_path = secrets.join("runner_api_key");
    std::fs::write(&key_path, key).map_err(io(&key_path))?;

    let port = free_port()?;
    let sandbox = Sandbox { uid, gid, port, secrets: secrets.clone(), limits: limits_for(&manifest) };
    write_runtime_config(&bundle, &config, &sandbox)?;
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

/// What the sandbox gives the plugin, beyond what its image config says.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub uid: u32,
    pub gid: u32,
    pub port: u16,
    /// Host directory bind-mounted read-only at `/run/secrets`.
    pub secrets: PathBuf,
    pub limits: Limits,
}

/// The manifest's resource requests, clamped and defaulted by the default runner policy.
pub fn limits_for(manifest: &PluginManifest) -> Limits {
    let p = crate::runner::policy::LimitsPolicy::default();
    let r = manifest.resources.as_ref();
    let pick = |asked: Option<u64>, default: u64, max: u64| asked.unwrap_or(default).clamp(1, max);
    Limits {
        cpu_millicores: pick(r.and_then(|r| r.cpu_millicores), p.default_cpu_millicores, p.max_cpu_millicores),
        memory_mib: pick(r.and_then(|r| r.memory_mib), p.default_memory_mib, p.max_memory_mib),
        pids: pick(r.and_then(|r| r.pids), p.default_pids, p.max_pids),
    }
}

/// Narrows runc's default runtime spec (`runc spec`) for a plugin: the image's entrypoint,
/// environment and working directory; the sandbox's user; no capabilities, no new
/// privileges; read-only root with a small `nosuid,nodev,noexec` tmpfs at `/tmp`; the
/// secrets directory read-only at `/run/secrets`; memory (no swap), CPU and pids limits.
/// Pure, so it can be checked without a runtime.
pub fn narrow_spec(mut rt: Value, image_config: &Value, sandbox: &Sandbox) -> Value {
    let mut args = image_config.pointer("/config/Entrypoint").cloned().unwrap_or(json!([]));
    if let (Some(a), Some(cmd)) = (args.as_array_mut(), image_config.pointer("/config/Cmd").and_then(Value::as_array)) {
        a.extend(cmd.iter().cloned());
    }
    let mut env: Vec<Value> = image_config
        .pointer("/config/Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| vec![json!("PATH=/usr/bin:/bin")]);
    env.push(json!(format!("PLUGIN_PORT={}", sandbox.port)));
    env.push(json!("RUNNER_API_KEY_FILE=/run/secrets/runner_api_key"));
    rt["process"]["terminal"] = json!(false);
    rt["process"]["user"] = json!({"uid": sandbox.uid, "gid": sandbox.gid});
    rt["process"]["args"] = args;
    rt["process"]["env"] = json!(env);
    rt["process"]["cwd"] = json!(
        image_config.pointer("/config/WorkingDir").and_then(Value::as_str).filter(|w| !w.is_empty()).unwrap_or("/")
    );
    rt["process"]["noNewPrivileges"] = json!(true);
    rt["process"]["capabilities"] = json!({"bounding": [], "effective": [], "permitted": [], "ambient": []});
    rt["root"]["readonly"] = json!(true);
    if let Some(mounts) = rt["mounts"].as_array_mut() {
        mounts.retain(|m| m["destination"] != "/tmp" && m["destination"] != "/run/secrets");
        mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                           "options": ["nosuid", "nodev", "noexec", "mode=1777", "size=16m"]}));
        mounts.push(json!({"destination": "/run/secrets", "type": "bind", "source": sandbox.secrets,
                           "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
    }
    let memory = sandbox.limits.memory_mib * 1024 * 1024;
    rt["linux"]["resources"]["memory"] = json!({"limit": memory, "swap": memory});
    // CFS: `quota` microseconds of CPU per 100 ms `period`; 1000 millicores = one core.
    rt["linux"]["resources"]["cpu"] = json!({"period": 100_000, "quota": sandbox.limits.cpu_millicores * 100});
    rt["linux"]["resources"]["pids"] = json!({"limit": sandbox.limits.pids});
    if let Some(ns) = rt["linux"]["namespaces"].as_array_mut() {
        // The harness reaches the plugin on a loopback port of the host's network; the
        // runner's own sandbox gives it a namespace with only loopback and an egress proxy.
        ns.retain(|n| n["type"] != "network");
    }
    rt
}

/// Writes `config.json` for the bundle: `runc spec`'s defaults, narrowed by [`narrow_spec`].
fn write_runtime_config(bundle: &Path, image_config: &Value, sandbox: &Sandbox) -> Result<(), LaunchError> {
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .map_err(|e| LaunchError::Runc(format!("runc spec: {e} (is runc installed?)")))?;
    if !out.status.success() {
        return Err(LaunchError::Runc(format!("runc spec: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let path: PathBuf = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let rt: Value = serde_json::from_str(&text).map_err(|e| LaunchError::Runc(format!("runc spec output: {e}")))?;
    let bytes = serde_json::to_vec_pretty(&narrow_spec(rt, image_config, sandbox))
        .map_err(|e| LaunchError::Runc(e.to_string()))?;
    std::fs::write(&path, bytes).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_narrowed_to_the_sandbox() {
        let default = json!({
            "process": {"terminal": true, "user": {"uid": 0, "gid": 0}, "args": ["sh"], "capabilities": {"bounding": ["CAP_KILL"]}},
            "root": {"path": "rootfs", "readonly": false},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]}
        });
        let image =
            json!({"config": {"User": "65532:65532", "Entrypoint": ["/plugin"], "Env": ["PATH=/"], "WorkingDir": "/"}});
        let sandbox = Sandbox {
            uid: 65532,
            gid: 65532,
            port: 9000,
            secrets: PathBuf::from("/s"),
            limits: Limits { cpu_millicores: 250, memory_mib: 64, pids: 32 },
        };
        let rt = narrow_spec(default, &image, &sandbox);
        assert_eq!(rt["process"]["user"], json!({"uid": 65532, "gid": 65532}));
        assert_eq!(rt["process"]["args"], json!(["/plugin"]));
        assert_eq!(
            rt["process"]["env"],
            json!(["PATH=/", "PLUGIN_PORT=9000", "RUNNER_API_KEY_FILE=/run/secrets/runner_api_key"])
        );
        assert_eq!(rt["process"]["capabilities"]["bounding"], json!([]));
        assert_eq!(rt["process"]["noNewPrivileges"], true);
        assert_eq!(rt["root"]["readonly"], true);
        assert_eq!(rt["linux"]["resources"]["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
        assert_eq!(rt["linux"]["resources"]["cpu"], json!({"period": 100_000, "quota": 25_000}));
        assert_eq!(rt["linux"]["resources"]["pids"], json!({"limit": 32}));
        let mounts = rt["mounts"].as_array().unwrap();
        let tmp = mounts.iter().find(|m| m["destination"] == "/tmp").unwrap();
        assert_eq!(tmp["type"], "tmpfs");
        let secrets = mounts.iter().find(|m| m["destination"] == "/run/secrets").unwrap();
        assert!(secrets["options"].as_array().unwrap().contains(&json!("ro")));
        assert!(rt["linux"]["namespaces"].as_array().unwrap().iter().all(|n| n["type"] != "network"));
    }

    #[test]
    fn image_user_must_be_numeric_and_not_root() {
        assert_eq!(user(&json!({"config": {"User": "65532:65532"}})), Ok((65532, 65532)));
        assert_eq!(user(&json!({"config": {"User": "1000"}})), Ok((1000, 1000)));
        assert!(user(&json!({"config": {"User": "0:0"}})).unwrap_err().contains("root"));
        assert!(user(&json!({"config": {}})).is_err());
        assert!(user(&json!({"config": {"User": "app"}})).unwrap_err().contains("numeric"));
    }
}
