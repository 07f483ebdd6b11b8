//! Installing and running one plugin: [`Runner::install`] resolves a digest-pinned
//! reference from the registry alone ([`super::resolve`]), evaluates the policy
//! ([`super::policy::decide`]) and pulls and unpacks the image into a content-addressed
//! cache; [`Runner::start`] launches it through an OCI runtime (runc by default; any
//! runtime with runc's `create`/`start`/`kill`/`delete` CLI, such as crun or youki) and
//! waits until its health endpoint answers.
//!
//! The sandbox: the image's non-root user, a read-only root filesystem, a small tmpfs
//! `/tmp`, no capabilities, no new privileges, the default seccomp profile, memory/CPU/pids
//! limits from the decision ([`super::spec`]), and a network namespace of its own with only
//! loopback. The runner opens sockets inside it ([`super::netns`]): the egress proxy on
//! `127.0.0.1:3128` (`HTTP_PROXY`), which lets through only the decision's hosts and audits
//! every refusal ([`super::egress`]); a callback endpoint on `127.0.0.1:3129`
//! (`RUNNER_CALLBACK_URL`), whose requests must be signed with the instance key; and the
//! plugin's own port, forwarded to a loopback port of the host for the runner's requests.
//! `/run/secrets` holds the per-instance RFC 9421 key and the secrets in scope, nothing else;
//! the environment is the image's plus what the runner sets.
//!
//! The runner makes itself a child subreaper, so a plugin's init process becomes its child
//! once `runc create` returns: its exit status is collected with waitpid, and an OOM kill is
//! read from the container's memory cgroup before `runc delete` removes it.

use super::audit::AuditLog;
use super::egress;
use super::netns::Netns;
use super::policy::{Decision, Policy, Subject, decide};
use super::resolve::{ResolveError, Resolved, Trust, resolve};
use super::spec::{Network, Sandbox, SpecError, build_spec, image_user, write_bundle};
use super::unpack::{self, Layer, unpack_layers};
use crate::content::remote::RemoteOptions;
use crate::content::{ContentError, GraphTarget, fetch_all};
use crate::oci::ImageReference;
use crate::plugin::PluginManifest;
use berth_httpsig::{Signer, Verifier};
use oci_spec::image::Descriptor;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where, inside the plugin's network namespace, the egress proxy listens.
pub const PROXY_ADDR: &str = "127.0.0.1:3128";
/// Where, inside the plugin's network namespace, the runner takes callbacks.
pub const CALLBACK_ADDR: &str = "127.0.0.1:3129";
/// The key id the runner signs requests with; the plugin signs callbacks as [`PLUGIN_KEY_ID`].
pub const RUNNER_KEY_ID: &str = "runner";
pub const PLUGIN_KEY_ID: &str = "plugin";
const CALLBACKS_KEPT: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{reference}: {source}")]
    Content { reference: String, source: ContentError },
    #[error("the policy refuses {reference}:\n{}", refusal_text(.decision, .problems))]
    Refused { reference: String, decision: Box<Decision>, problems: Vec<String> },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("secret {name:?} is in scope for {plugin} but this runner has no value for it (--secret {name}=FILE)")]
    MissingSecret { name: String, plugin: String },
    #[error("{runtime}: {message}")]
    Runtime { runtime: String, message: String },
    #[error("network namespace of {id}: {message}")]
    Network { id: String, message: String },
    #[error("{id} did not become healthy within {secs} s: {reason}\n--- plugin output ---\n{log}")]
    Unhealthy { id: String, secs: u64, reason: String, log: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("audit trail: {0}")]
    Audit(#[from] super::audit::AuditError),
}

fn refusal_text(decision: &Decision, problems: &[String]) -> String {
    let mut out: Vec<String> = decision.refusals().map(|p| format!("  REFUSE {}: {}", p.aspect, p.reason)).collect();
    out.extend(problems.iter().map(|p| format!("  signature check: {p}")));
    out.join("\n")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io { path: path.display().to_string(), source }
}

/// How a runner is set up.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Image cache, instance bundles and the audit trail (`audit.jsonl`) live here.
    pub data_dir: PathBuf,
    pub policy: Policy,
    pub trust: Trust,
    /// The OCI runtime binary: `runc` (default), `crun` or `youki`.
    pub runtime: String,
    /// Secret values the runner may hand out: name → file on the host.
    pub secrets: BTreeMap<String, PathBuf>,
    pub remote: RemoteOptions,
    /// How long a start may take to become healthy.
    pub start_timeout: Duration,
    /// Bounds on what one image may unpack to (a gzip bomb stops here).
    pub unpack_limits: unpack::Limits,
    /// Dial every allowed egress destination at this address instead (the verifier's stub
    /// upstream during conformance runs); `None` in production.
    pub egress_redirect: Option<SocketAddr>,
}

impl RunnerConfig {
    pub fn new(data_dir: impl Into<PathBuf>, policy: Policy, trust: Trust) -> RunnerConfig {
        RunnerConfig {
            data_dir: data_dir.into(),
            policy,
            trust,
            runtime: "runc".to_string(),
            secrets: BTreeMap::new(),
            remote: RemoteOptions::default(),
            start_timeout: Duration::from_secs(10),
            unpack_limits: unpack::Limits::default(),
            egress_redirect: None,
        }
    }
}

/// A resolved, allowed and unpacked plugin image, ready to start.
#[derive(Debug, Clone)]
pub struct Installed {
    pub resolved: Resolved,
    pub decision: Decision,
    pub rootfs: PathBuf,
    pub image_config: Value,
    /// True when the layers were already unpacked.
    pub cached: bool,
}

impl Installed {
    pub fn digest(&self) -> String {
        self.resolved.image.digest().to_string()
    }
}

/// Installs and starts plugins; owns the audit trail.
pub struct Runner {
    pub config: RunnerConfig,
    audit: Arc<AuditLog>,
    /// Tells a catalog about installs and failed requests, when set.
    reporter: Option<super::report::Reporter>,
}

impl Runner {
    /// Opens (or creates) the data directory and its audit trail.
    pub fn new(mut config: RunnerConfig) -> Result<Runner, RunError> {
        // Bundles name the root filesystem by absolute path.
        config.data_dir = std::path::absolute(&config.data_dir).map_err(io(&config.data_dir))?;
        for d in ["images", "instances"] {
            let p = config.data_dir.join(d);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let audit = Arc::new(AuditLog::open(config.data_dir.join("audit.jsonl"))?);
        // Containers' init processes are re-parented to us when `runc create` exits, so
        // their exit status can be collected (see the module docs).
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        Ok(Runner { config, audit, reporter: None })
    }

    /// Reports installs (first healthy start of an image) and failed requests to a catalog.
    pub fn with_reporter(self, reporter: super::report::Reporter) -> Runner {
        Runner { reporter: Some(reporter), ..self }
    }

    pub fn reporter(&self) -> Option<&super::report::Reporter> {
        self.reporter.as_ref()
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Records `event` in the audit trail; a failure to audit is logged, not fatal to the caller.
    fn record(&self, event: &str, subject: &str, details: Value) {
        if let Err(e) = self.audit.append(event, subject, details) {
            tracing::error!("audit trail: {e}");
        }
    }

    /// Resolves `reference` (`host/name@sha256:…`), verifies it, evaluates the policy and
    /// unpacks the image into the cache. Every refusal is audited.
    pub async fn install(&self, reference: &str) -> Result<Installed, RunError> {
        let image_ref = match ImageReference::parse(reference) {
            Ok(r) => r,
            Err(e) => return Err(RunError::Image { image: reference.to_string(), message: e.to_string() }),
        };
        if let Err(e) = super::resolve::require_digest(&image_ref) {
            self.record(
                "policy.refused",
                reference,
                json!({"reasons": [{"aspect": "reference", "reason": e.to_string()}]}),
            );
            return Err(e.into());
        }
        let repo = crate::content::remote::open(&image_ref, self.config.remote.clone())
            .map_err(|source| RunError::Content { reference: reference.to_string(), source })?;
        let (trust, record_problem) =
            super::resolve::with_publisher_record(&repo, &image_ref, &self.config.trust).await;
        let mut resolved = resolve(&repo, &image_ref, &trust).await?;
        resolved.ignored.extend(record_problem);
        let decision = decide(
            &self.config.policy,
            &Subject {
                reference: &image_ref,
                manifest: &resolved.manifest,
                signatures: resolved.signatures,
                lifecycle: resolved.lifecycle.as_ref(),
            },
        );
        if !decision.allowed {
            let reasons: Vec<Value> =
                decision.refusals().map(|p| json!({"aspect": p.aspect, "reason": p.reason})).collect();
            self.record(
                "policy.refused",
                reference,
                json!({"reasons": reasons, "signature_problems": resolved.signature_problems}),
            );
            return Err(RunError::Refused {
                reference: reference.to_string(),
                problems: if decision.part("signatures").is_some_and(|p| p.verdict == super::policy::Verdict::Refuse) {
                    resolved.signature_problems.clone()
                } else {
                    Vec::new()
                },
                decision: Box::new(decision),
            });
        }
        let (rootfs, image_config, cached, pulled) = self.pull(&repo, &resolved.image).await?;
        if !cached {
            self.record("pull", reference, json!({"digest": resolved.image.digest().to_string(), "layers": pulled}));
        }
        Ok(Installed { resolved, decision, rootfs, image_config, cached })
    }

    /// Unpacks `image` into `images/<hex>/` unless it is there: layers fetched and checked
    /// against their digests, unpacked by the safe unpacker into a temporary directory that
    /// is renamed into place when complete.
    async fn pull(
        &self,
        t: &dyn GraphTarget,
        image: &Descriptor,
    ) -> Result<(PathBuf, Value, bool, Vec<String>), RunError> {
        let digest = image.digest().to_string();
        let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(&digest).to_string();
        let dir = self.config.data_dir.join("images").join(&hex);
        let config_path = dir.join("config.json");
        if let Ok(text) = std::fs::read(&config_path)
            && let Ok(config) = serde_json::from_slice::<Value>(&text)
        {
            return Ok((dir.join("rootfs"), config, true, Vec::new()));
        }
        let bad = |message: String| RunError::Image { image: digest.clone(), message };
        let content = |source| RunError::Content { reference: digest.clone(), source };
        let m: Value = serde_json::from_slice(&fetch_all(t, image).await.map_err(content)?)
            .map_err(|e| bad(format!("manifest: {e}")))?;
        let config_desc: Descriptor =
            serde_json::from_value(m["config"].clone()).map_err(|e| bad(format!("config: {e}")))?;
        let config_bytes = fetch_all(t, &config_desc).await.map_err(content)?;
        let _: Value = serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("config: {e}")))?;
        let descs: Vec<Descriptor> =
            serde_json::from_value(m["layers"].clone()).map_err(|e| bad(format!("layers: {e}")))?;
        let mut layers = Vec::with_capacity(descs.len());
        let mut names = Vec::with_capacity(descs.len());
        for d in descs {
            let bytes = fetch_all(t, &d).await.map_err(content)?;
            names.push(d.digest().to_string());
            layers.push(Layer {
                digest: d.digest().to_string(),
                media_type: d.media_type().to_string(),
                reader: Box::new(std::io::Cursor::new(bytes)),
            });
        }
        let images = self.config.data_dir.join("images");
        let tmp = tempfile::Builder::new().prefix(&format!(".{hex}-")).tempdir_in(&images).map_err(io(&images))?;
        let root = tmp.path().join("rootfs");
        let (r, limits) = (root.clone(), self.config.unpack_limits.clone());
        tokio::task::spawn_blocking(move || unpack_layers(layers, &r, &limits))
            .await
            .map_err(|e| bad(e.to_string()))?
            .map_err(|e| bad(e.to_string()))?;
        let staged_config = tmp.path().join("config.json");
        std::fs::write(&staged_config, &config_bytes).map_err(io(&staged_config))?;
        let staged = tmp.keep();
        if let Err(e) = std::fs::rename(&staged, &dir) {
            // Another install of the same digest won the race; use its copy.
            let _ = std::fs::remove_dir_all(&staged);
            if !config_path.exists() {
                return Err(RunError::Io { path: dir.display().to_string(), source: e });
            }
        }
        let config: Value = serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("config: {e}")))?;
        Ok((dir.join("rootfs"), config, false, names))
    }

    /// Starts `installed` as instance `name` and waits until it is healthy.
    pub async fn start(&self, installed: &Installed, name: &str) -> Result<Instance, RunError> {
        let started = Instant::now();
        let digest = installed.digest();
        let manifest = &installed.resolved.manifest;
        let plugin = format!("{}/{}", manifest.publisher, manifest.name);
        let (uid, gid) = image_user(&installed.image_config)
            .map_err(|message| RunError::Image { image: digest.clone(), message })?;
        let id = format!("berth-{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let dir = self.config.data_dir.join("instances").join(&id);
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).map_err(io(&secrets))?;
        let mut guard = DirGuard(Some(dir.clone()));

        let key: [u8; 32] = rand::random();
        write_secret(&secrets.join("runner_api_key"), &key, uid, gid)?;
        // `runner_api_key` is always the instance key, whatever the secret store holds.
        for s in installed.decision.secrets.iter().filter(|s| *s != "runner_api_key") {
            let source = self
                .config
                .secrets
                .get(s)
                .ok_or_else(|| RunError::MissingSecret { name: s.clone(), plugin: plugin.clone() })?;
            let value = std::fs::read(source).map_err(io(source))?;
            write_secret(&secrets.join(s), &value, uid, gid)?;
        }

        let port = manifest.runtime.port.unwrap_or(8080);
        let sandbox = Sandbox {
            uid,
            gid,
            port,
            rootfs: installed.rootfs.clone(),
            secrets: secrets.clone(),
            limits: installed.decision.limits,
            network: Network::Isolated,
            env: vec![
                ("HTTP_PROXY".into(), format!("http://{PROXY_ADDR}")),
                ("HTTPS_PROXY".into(), format!("http://{PROXY_ADDR}")),
                ("http_proxy".into(), format!("http://{PROXY_ADDR}")),
                ("https_proxy".into(), format!("http://{PROXY_ADDR}")),
                ("NO_PROXY".into(), "127.0.0.1".into()),
                ("RUNNER_CALLBACK_URL".into(), format!("http://{CALLBACK_ADDR}")),
            ],
            hostname: manifest.name.clone(),
        };
        let spec = build_spec(&installed.image_config, &sandbox)?;
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io(&bundle))?;
        write_bundle(&bundle, &spec).map_err(io(&bundle))?;

        let runtime = self.config.runtime.clone();
        let log_path = dir.join("plugin.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let log2 = log.try_clone().map_err(io(&log_path))?;
        let pid_file = dir.join("pid");
        let rt_err = |message: String| RunError::Runtime { runtime: runtime.clone(), message };
        let status = Command::new(&runtime)
            .args(["create", "--bundle"])
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|e| rt_err(format!("{e} (is {runtime} installed?)")))?;
        if !status.success() {
            return Err(rt_err(format!("create {id} failed ({status}):\n{}", read_log(&log_path))));
        }
        // From here on the container exists: the guard deletes it on failure.
        let mut container = ContainerGuard { runtime: runtime.clone(), id: Some(id.clone()) };
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .map_err(io(&pid_file))?
            .trim()
            .parse()
            .map_err(|e| rt_err(format!("pid file {}: {e}", pid_file.display())))?;
        let cgroup = memory_cgroup(pid);

        let net_err = |message: String| RunError::Network { id: id.clone(), message };
        let netns = Arc::new(Netns::of_pid(pid).map_err(|e| net_err(e.to_string()))?);
        let bind = |addr: &str| -> Result<tokio::net::TcpListener, RunError> {
            let addr: SocketAddr = addr.parse().map_err(|e| net_err(format!("{addr}: {e}")))?;
            let l = netns.bind(addr).map_err(|e| net_err(e.to_string()))?;
            tokio::net::TcpListener::from_std(l).map_err(|e| net_err(e.to_string()))
        };
        let proxy_listener = bind(PROXY_ADDR)?;
        let callback_listener = bind(CALLBACK_ADDR)?;
        let host_listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| net_err(format!("host-side listener: {e}")))?;
        let url = format!("http://{}", host_listener.local_addr().map_err(|e| net_err(e.to_string()))?);

        let mut tasks = Vec::new();
        let audit = Arc::clone(&self.audit);
        let (who, plugin_name) = (id.clone(), plugin.clone());
        let on_refusal: egress::OnRefusal = Arc::new(move |r: &egress::Refusal| {
            let details =
                json!({"instance": who, "host": r.host, "port": r.port, "method": r.method, "reason": r.reason});
            if let Err(e) = audit.append("egress.refused", &plugin_name, details) {
                tracing::error!("audit trail: {e}");
            }
        });
        let audit = Arc::clone(&self.audit);
        let (who, plugin_name) = (id.clone(), plugin.clone());
        let on_passed: egress::OnPassed = Arc::new(move |p: &egress::Passed| {
            let details = json!({"instance": who, "host": p.host, "port": p.port, "method": p.method});
            if let Err(e) = audit.append("egress.allowed", &plugin_name, details) {
                tracing::error!("audit trail: {e}");
            }
        });
        let allowed = installed.decision.egress.clone();
        let redirect = self.config.egress_redirect;
        tasks.push(tokio::spawn(egress::serve_redirected(proxy_listener, allowed, on_refusal, on_passed, redirect)));
        let callbacks = Arc::new(Mutex::new(Vec::new()));
        tasks.push(tokio::spawn(serve_callbacks(
            callback_listener,
            key.to_vec(),
            Arc::clone(&callbacks),
            Arc::clone(&self.audit),
            id.clone(),
        )));
        let plugin_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        tasks.push(super::netns::forward(Arc::clone(&netns), host_listener, plugin_addr));

        let status = Command::new(&runtime)
            .arg("start")
            .arg(&id)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| rt_err(e.to_string()))?;
        if !status.status.success() {
            for t in &tasks {
                t.abort();
            }
            return Err(rt_err(format!("start {id}: {}", String::from_utf8_lossy(&status.stderr))));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let limit = installed.decision.limits.memory_mib;
        tokio::task::spawn_blocking(move || {
            let exit = wait_exit(pid, cgroup.as_deref(), limit);
            let _ = exit_tx.send(Some(exit));
        });

        container.id = None;
        guard.0 = None;
        let instance = Instance {
            name: name.to_string(),
            id: id.clone(),
            reference: installed.resolved.reference.to_string(),
            digest: digest.clone(),
            plugin,
            url,
            manifest: manifest.clone(),
            key: key.to_vec(),
            runtime,
            dir,
            tasks,
            _netns: netns,
            exit: exit_rx,
            callbacks,
            client: reqwest::Client::builder().no_proxy().build().map_err(|e| net_err(e.to_string()))?,
            audit: Arc::clone(&self.audit),
            reporter: self.reporter.clone(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        };
        match instance.wait_healthy(self.config.start_timeout).await {
            Ok(()) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                self.record(
                    "start",
                    &instance.plugin,
                    json!({"instance": id, "name": name, "digest": digest, "reference": instance.reference,
                           "limits": {"cpu_millicores": sandbox.limits.cpu_millicores, "memory_mib": sandbox.limits.memory_mib, "pids": sandbox.limits.pids},
                           "egress": installed.decision.egress, "secrets": installed.decision.secrets, "start_ms": ms.round()}),
                );
                if let Some(r) = &self.reporter {
                    r.installed(&instance.reference);
                }
                Ok(instance)
            }
            Err(reason) => {
                let log = instance.logs();
                self.record(
                    "start.failed",
                    &instance.plugin,
                    json!({"instance": id, "digest": digest, "reason": reason}),
                );
                instance.stop().await;
                Err(RunError::Unhealthy { id, secs: self.config.start_timeout.as_secs(), reason, log })
            }
        }
    }
}

fn write_secret(path: &Path, value: &[u8], uid: u32, gid: u32) -> Result<(), RunError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, value).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400)).map_err(io(path))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(path))
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Removes an instance directory unless disarmed.
struct DirGuard(Option<PathBuf>);
impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Deletes a created container unless disarmed.
struct ContainerGuard {
    runtime: String,
    id: Option<String>,
}
impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = Command::new(&self.runtime).args(["delete", "--force", &id]).output();
        }
    }
}

/// The host path of the memory cgroup of `pid` (cgroup v1 `memory` controller, or the v2
/// unified hierarchy).
fn memory_cgroup(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(PathBuf::from(format!("/sys/fs/cgroup/memory{path}")));
        }
        if controllers.is_empty() {
            v2 = Some(path.to_string());
        }
    }
    let path = v2?;
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| PathBuf::from(format!("{root}{path}")))
        .find(|p| p.join("memory.events").exists())
}

/// OOM kills recorded in a memory cgroup (`oom_kill` in v2 `memory.events` or v1
/// `memory.oom_control`).
fn oom_kills(cgroup: &Path) -> u64 {
    for file in ["memory.events", "memory.oom_control"] {
        if let Ok(text) = std::fs::read_to_string(cgroup.join(file))
            && let Some(n) = text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
        {
            return n;
        }
    }
    0
}

/// How a plugin's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// One line for people.
    pub message: String,
}

/// Blocks until `pid` (our child, thanks to the subreaper flag) exits.
fn wait_exit(pid: u32, cgroup: Option<&Path>, memory_mib: u64) -> Exit {
    let mut status: libc::c_int = 0;
    let (code, signal) = loop {
        // SAFETY: waitpid on a pid with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r == pid as libc::pid_t {
            if libc::WIFEXITED(status) {
                break (Some(libc::WEXITSTATUS(status)), None);
            }
            if libc::WIFSIGNALED(status) {
                break (None, Some(libc::WTERMSIG(status)));
            }
            continue;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // Not our child (the runtime re-parented it elsewhere): watch /proc instead.
        while Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        break (None, None);
    };
    let oom_killed = cgroup.is_some_and(|c| oom_kills(c) > 0);
    let message = match (code, signal, oom_killed) {
        (_, _, true) => format!("killed: out of memory (memory limit {memory_mib} MiB)"),
        (Some(c), _, _) => format!("exited with status {c}"),
        (_, Some(s), _) => format!("killed by signal {s}"),
        _ => "exited".to_string(),
    };
    Exit { code, signal, oom_killed, message }
}

/// Why a call to a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{plugin} has no entrypoint {entrypoint:?} (it has: {known})")]
    UnknownEntrypoint { plugin: String, entrypoint: String, known: String },
    #[error("{plugin} answered {status}: {body}")]
    Plugin { plugin: String, status: u16, body: Value },
    #[error("{plugin} {message}")]
    Died { plugin: String, message: String },
    #[error("{plugin}: {message}")]
    Transport { plugin: String, message: String },
}

/// One running plugin. Stop it with [`Instance::stop`]; dropping it unstopped kills it.
pub struct Instance {
    pub name: String,
    pub id: String,
    pub reference: String,
    pub digest: String,
    /// `publisher/name`.
    pub plugin: String,
    /// The plugin's port, forwarded to the host's loopback.
    pub url: String,
    pub manifest: PluginManifest,
    key: Vec<u8>,
    runtime: String,
    dir: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    _netns: Arc<Netns>,
    exit: watch::Receiver<Option<Exit>>,
    callbacks: Arc<Mutex<Vec<Value>>>,
    client: reqwest::Client,
    audit: Arc<AuditLog>,
    reporter: Option<super::report::Reporter>,
    stopped: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("id", &self.id).field("digest", &self.digest).field("url", &self.url).finish()
    }
}

impl Instance {
    /// How the process ended, once it has.
    pub fn exited(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    /// What the plugin printed.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("plugin.log")).unwrap_or_default()
    }

    /// Callbacks the plugin made that verified, newest last.
    pub fn callbacks(&self) -> Vec<Value> {
        self.callbacks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The instance directory (bundle, secrets, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The instance key (tests use it to call the plugin directly).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn authority(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    async fn send(&self, method: &str, path: &str, body: Vec<u8>, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
        let deadline = (std::time::SystemTime::now() + timeout)
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
            .to_string();
        let mut headers = vec![("AisOpsFlow-Runner-API", "1.0".to_string()), ("AisOpsFlow-Deadline", deadline)];
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json".to_string()));
        }
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let signed = Signer::new(self.key.clone(), RUNNER_KEY_ID)
            .sign(method, &self.authority(), path, &refs, &body)
            .map_err(|e| format!("signing: {e}"))?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.client.request(m, format!("{}{path}", self.url)).timeout(timeout);
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain(signed.headers().into_iter().map(|(k, v)| (k.to_string(), v)))
        {
            req = req.header(k, v);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| crate::conformance::runner::error_chain(&e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| crate::conformance::runner::error_chain(&e))?;
        Ok((status, bytes.to_vec()))
    }

    /// One signed `GET /v1/health`.
    pub async fn health(&self) -> Result<(), String> {
        if let Some(exit) = self.exited() {
            return Err(exit.message);
        }
        match self.send("GET", "/v1/health", Vec::new(), Duration::from_secs(2)).await {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("health answered {status}: {}", String::from_utf8_lossy(&body))),
            Err(e) => Err(e),
        }
    }

    /// Polls health until it answers 200, the process exits, or `timeout` passes.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let until = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        let mut last = String::from("no answer yet");
        while Instant::now() < until {
            if let Some(exit) = self.exited() {
                return Err(format!("the plugin {}", exit.message));
            }
            match self.health().await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        Err(last)
    }

    /// Calls entrypoint `entrypoint` with `input` and `config`; a failure is audited.
    pub async fn invoke(&self, entrypoint: &str, input: Value, config: Value) -> Result<Value, InvokeError> {
        let Some(ep) = self.manifest.entrypoints.get(entrypoint) else {
            let known = self.manifest.entrypoints.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(InvokeError::UnknownEntrypoint {
                plugin: self.plugin.clone(),
                entrypoint: entrypoint.to_string(),
                known,
            });
        };
        let method = match ep.method {
            crate::plugin::manifest::HttpMethod::Get => "GET",
            crate::plugin::manifest::HttpMethod::Post => "POST",
            crate::plugin::manifest::HttpMethod::Put => "PUT",
        };
        let body = if method == "GET" {
            Vec::new()
        } else {
            serde_json::to_vec(&json!({"input": input, "config": config})).unwrap_or_default()
        };
        let timeout = Duration::from_millis(ep.timeout_ms.max(1)) + Duration::from_millis(500);
        let result = self.send(method, &ep.path, body, timeout).await;
        let err = match result {
            Ok((200, bytes)) => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                return Ok(v.get("output").cloned().unwrap_or(Value::Null));
            }
            Ok((status, bytes)) => InvokeError::Plugin {
                plugin: self.plugin.clone(),
                status,
                body: serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
            },
            Err(message) => {
                // A dropped connection is often the process dying: wait briefly to say why.
                let mut exit = self.exit.clone();
                let died = tokio::time::timeout(Duration::from_secs(3), exit.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(|r| r.ok().and_then(|e| e.clone()));
                match died {
                    Some(e) => InvokeError::Died { plugin: self.plugin.clone(), message: e.message },
                    None => InvokeError::Transport { plugin: self.plugin.clone(), message },
                }
            }
        };
        let details = json!({"instance": self.id, "entrypoint": entrypoint, "error": err.to_string(),
                             "exit": self.exited()});
        if let Err(e) = self.audit.append("request.failed", &self.plugin, details) {
            tracing::error!("audit trail: {e}");
        }
        if let Some(r) = &self.reporter {
            r.failed(&self.reference);
        }
        Err(err)
    }

    /// Stops the plugin (SIGTERM, then SIGKILL after 5 s), deletes the container and its
    /// directory, and audits it.
    pub async fn stop(&self) {
        self.shutdown(Duration::from_secs(5)).await;
    }

    async fn shutdown(&self, grace: Duration) {
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let running = self.exited().is_none();
        if running {
            let _ = tokio::process::Command::new(&self.runtime).args(["kill", &self.id, "TERM"]).output().await;
            let mut exit = self.exit.clone();
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await.is_err() {
                let _ = tokio::process::Command::new(&self.runtime).args(["kill", &self.id, "KILL"]).output().await;
                let _ = tokio::time::timeout(Duration::from_secs(5), exit.wait_for(Option::is_some)).await;
            }
        }
        let _ = tokio::process::Command::new(&self.runtime).args(["delete", "--force", &self.id]).output().await;
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let details =
            json!({"instance": self.id, "digest": self.digest, "was_running": running, "exit": self.exited()});
        if let Err(e) = self.audit.append("stop", &self.plugin, details) {
            tracing::error!("audit trail: {e}");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new(&self.runtime).args(["kill", &self.id, "KILL"]).output();
            let _ = Command::new(&self.runtime).args(["delete", "--force", &self.id]).output();
            for t in &self.tasks {
                t.abort();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The runner's callback endpoint inside the plugin's namespace: `POST /v1/callbacks/<name>`
/// signed by the plugin with the instance key (RFC 9421, key id `plugin`). Verified
/// callbacks are kept (the newest [`CALLBACKS_KEPT`]); the rest get 401 and are audited.
async fn serve_callbacks(
    listener: tokio::net::TcpListener,
    key: Vec<u8>,
    kept: Arc<Mutex<Vec<Value>>>,
    audit: Arc<AuditLog>,
    instance: String,
) {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;

    struct Shared {
        verifier: Verifier,
        kept: Arc<Mutex<Vec<Value>>>,
        audit: Arc<AuditLog>,
        instance: String,
    }
    async fn handle(
        State(s): State<Arc<Shared>>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let error = |status: StatusCode, code: &str, message: String| {
            (status, axum::Json(json!({"error": {"code": code, "message": message, "retryable": false}})))
                .into_response()
        };
        let path = uri.path().to_string();
        let Some(name) = path.strip_prefix("/v1/callbacks/").filter(|n| !n.is_empty() && !n.contains('/')) else {
            return error(StatusCode::NOT_FOUND, "not_found", format!("no callback endpoint {path}"));
        };
        if method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "callbacks are POST".into());
        }
        let hs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let refs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let authority = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or(CALLBACK_ADDR).to_string();
        let target = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or(path.clone());
        let msg = berth_httpsig::Message {
            method: method.as_str(),
            authority: &authority,
            target: &target,
            headers: &refs,
            body: &body,
        };
        match s.verifier.verify(&msg) {
            Ok(_) => {
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if let Ok(mut k) = s.kept.lock() {
                    k.push(json!({"name": name, "body": value}));
                    let excess = k.len().saturating_sub(CALLBACKS_KEPT);
                    k.drain(..excess);
                }
                (StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response()
            }
            Err(e) => {
                let details = json!({"instance": s.instance, "callback": name, "reason": e.to_string()});
                if let Err(e) = s.audit.append("callback.refused", &s.instance, details) {
                    tracing::error!("audit trail: {e}");
                }
                error(StatusCode::UNAUTHORIZED, "unauthorized", format!("callback signature: {e}"))
            }
        }
    }
    let shared =
        Arc::new(Shared { verifier: Verifier::with_keys([(PLUGIN_KEY_ID.to_string(), key)]), kept, audit, instance });
    let app = axum::Router::new().fallback(handle).with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("callback endpoint: {e}");
    }
}
