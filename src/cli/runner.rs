//! `berth run REF@DIGEST --policy FILE` (one plugin in the foreground) and `berth runner`
//! (the runner service with its local API); both install from registry data alone.

use super::transfer::RemoteArgs;
use crate::runner::instance::{Runner, RunnerConfig};
use crate::runner::policy::Policy;
use crate::runner::resolve::Trust;
use crate::runner::service::{Service, Supervision};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct RunnerCommon {
    /// The runner policy (TOML; schema in schemas/runner-policy.v1.schema.json).
    #[arg(long)]
    pub policy: PathBuf,
    /// Trusted publisher public key (PEM): signs images and plugin manifests. Repeatable.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Trusted catalog root public key (PEM): signs lifecycle status. Repeatable.
    #[arg(long = "root-key")]
    pub root_keys: Vec<PathBuf>,
    /// Trusted verifier public key (PEM): signs verification reports. Repeatable.
    #[arg(long = "verifier-key")]
    pub verifier_keys: Vec<PathBuf>,
    /// A secret the runner may mount, NAME=FILE; only secrets the decision puts in scope
    /// reach a plugin (under /run/secrets/NAME). Repeatable.
    #[arg(long = "secret", value_name = "NAME=FILE")]
    pub secrets: Vec<String>,
    /// Image cache, instance bundles and the audit trail (audit.jsonl).
    #[arg(long, env = "BERTH_RUNNER_DIR", default_value = "berth-runner")]
    pub data_dir: PathBuf,
    /// The OCI runtime: runc, crun or youki (a path works too).
    #[arg(long, default_value = "runc")]
    pub runtime: String,
    /// How long a plugin may take to become healthy.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

impl RunnerCommon {
    fn runner(&self) -> Result<Runner> {
        Ok(Runner::new(self.config()?)?)
    }

    /// [`Self::runner`], reporting installs and failed requests to `catalog` when given.
    fn reporting_runner(&self, catalog: Option<&str>) -> Result<Runner> {
        let runner = self.runner()?;
        Ok(match catalog {
            Some(url) => {
                let reporter = crate::runner::report::Reporter::start(url, &runner.config.data_dir)?;
                runner.with_reporter(reporter)
            }
            None => runner,
        })
    }

    fn config(&self) -> Result<RunnerConfig> {
        let policy = Policy::load(&self.policy)?;
        let trust = Trust {
            publishers: super::load_public_keys(&self.keys)?,
            roots: super::load_public_keys(&self.root_keys)?,
            verifiers: super::load_public_keys(&self.verifier_keys)?,
        };
        let mut config = RunnerConfig::new(&self.data_dir, policy, trust);
        config.runtime = self.runtime.clone();
        config.remote = self.remote.options();
        config.start_timeout = self.start_timeout;
        for s in &self.secrets {
            let Some((name, file)) = s.split_once('=') else {
                bail!("--secret {s:?}: write NAME=FILE");
            };
            if !Path::new(file).is_file() {
                bail!("--secret {name}: {file} is not a readable file");
            }
            config.secrets.insert(name.to_string(), PathBuf::from(file));
        }
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The plugin image, pinned by digest: host[:port]/publisher/name@sha256:…
    pub reference: String,
    #[command(flatten)]
    pub common: RunnerCommon,
    /// Call this entrypoint once, print its output and stop (instead of serving until Ctrl-C).
    #[arg(long)]
    pub invoke: Option<String>,
    /// The entrypoint's input (JSON).
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// The entrypoint's config (JSON object).
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Report the install and failed requests to this catalog (`http[s]://host[:port]` of a
    /// `berth serve`), anonymously, under a random runner id kept in the data directory.
    #[arg(long, value_name = "URL", env = "BERTH_CATALOG")]
    pub catalog: Option<String>,
}

pub async fn run(a: RunArgs) -> Result<i32> {
    let input: serde_json::Value = serde_json::from_str(&a.input).context("--input is not JSON")?;
    let config: serde_json::Value = serde_json::from_str(&a.config).context("--config is not JSON")?;
    let runner = a.common.reporting_runner(a.catalog.as_deref())?;
    let installed = runner.install(&a.reference).await?;
    for p in &installed.decision.parts {
        eprintln!("{} {}: {}", p.verdict, p.aspect, p.reason);
    }
    let name = installed.resolved.manifest.name.clone();
    let instance = runner.start(&installed, &name).await?;
    eprintln!("{} ({}) is healthy; runner API forwarded to {}", instance.plugin, instance.id, instance.url);
    let code = if let Some(ep) = &a.invoke {
        let r = instance.invoke(ep, input, config).await;
        match r {
            Ok(out) => {
                println!("{}", serde_json::to_string_pretty(&out)?);
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        }
    } else {
        let mut exit = 0;
        tokio::select! {
            _ = terminated() => eprintln!("stopping {}", instance.id),
            e = wait_exit(&instance) => {
                eprintln!("{} {}", instance.plugin, e.message);
                exit = 1;
            }
        }
        exit
    };
    instance.stop().await;
    if let Some(r) = runner.reporter() {
        r.flush(REPORT_FLUSH).await;
    }
    Ok(code)
}

/// How long a runner about to exit waits for its reports to the catalog to go out.
const REPORT_FLUSH: Duration = Duration::from_secs(3);

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (`kill`, systemd, Kubernetes).
async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn wait_exit(i: &crate::runner::instance::Instance) -> crate::runner::instance::Exit {
    loop {
        if let Some(e) = i.exited() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Args, Debug)]
pub struct RunnerArgs {
    /// Where the local API listens (loopback only).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    #[command(flatten)]
    pub common: RunnerCommon,
    /// Interval between health checks of each running plugin.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// Failed health checks in a row before a plugin is restarted.
    #[arg(long, default_value_t = 3)]
    pub failures_before_restart: u32,
    /// Restarts of a plugin before it is left failed.
    #[arg(long, default_value_t = 5)]
    pub max_restarts: u32,
    /// Report installs and failed requests to this catalog (`http[s]://host[:port]` of a
    /// `berth serve`), anonymously, under a random runner id kept in the data directory.
    #[arg(long, value_name = "URL", env = "BERTH_CATALOG")]
    pub catalog: Option<String>,
}

pub async fn service(a: RunnerArgs) -> Result<i32> {
    let addr: std::net::SocketAddr = a.listen.parse().with_context(|| format!("--listen {}", a.listen))?;
    if !addr.ip().is_loopback() {
        bail!("--listen {addr}: the runner API has no authentication and listens on loopback only");
    }
    let runner = a.common.reporting_runner(a.catalog.as_deref())?;
    let reporter = runner.reporter().cloned();
    let supervision = Supervision {
        health_interval: a.health_interval,
        failures_before_restart: a.failures_before_restart.max(1),
        max_restarts: a.max_restarts,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
    eprintln!("berth runner listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        terminated().await;
    };
    Service::new(runner, supervision).serve(listener, shutdown).await?;
    if let Some(r) = reporter {
        r.flush(REPORT_FLUSH).await;
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct BenchStartArgs {
    /// The plugin image, pinned by digest.
    pub reference: String,
    #[command(flatten)]
    pub common: RunnerCommon,
    /// Cold starts (each with an empty image cache) and warm starts to measure.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `berth bench-start`: cold start (resolve, verify, pull, unpack, start, healthy), warm start
/// (the image cached: resolve and verify again, start, healthy; and start alone), and `runc run`
/// of the very same bundle until the plugin's port accepts a connection, for comparison.
pub async fn bench_start(a: BenchStartArgs) -> Result<i32> {
    use std::time::Instant;
    let base = a.common.data_dir.clone();
    let runs = a.runs.max(1);
    let (mut cold, mut cold_install) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let dir = base.join(format!("cold-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = a.common.config()?;
        config.data_dir = dir.clone();
        let runner = Runner::new(config)?;
        let t = Instant::now();
        let installed = runner.install(&a.reference).await?;
        let installed_at = t.elapsed();
        let instance = runner.start(&installed, "bench").await?;
        cold.push(ms(t.elapsed()));
        cold_install.push(ms(installed_at));
        instance.stop().await;
        if i + 1 < runs {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let dir = base.join(format!("cold-{}", runs - 1));
    let mut config = a.common.config()?;
    config.data_dir = dir;
    let runner = Runner::new(config)?;
    let (mut warm, mut warm_resolve, mut start_only) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let installed = runner.install(&a.reference).await?;
        anyhow::ensure!(installed.cached, "the image should be cached for a warm start");
        let resolved_at = t.elapsed();
        let instance = runner.start(&installed, "bench").await?;
        warm.push(ms(t.elapsed()));
        warm_resolve.push(ms(resolved_at));
        instance.stop().await;
        let t = Instant::now();
        let instance = runner.start(&installed, "bench").await?;
        start_only.push(ms(t.elapsed()));
        instance.stop().await;
    }
    // `runc run` of the same bundle: copy a live instance's bundle and secrets.
    let installed = runner.install(&a.reference).await?;
    let instance = runner.start(&installed, "bench").await?;
    let scratch = tempfile::tempdir()?;
    let bundle = scratch.path().join("bundle");
    std::fs::create_dir_all(&bundle)?;
    let secrets = scratch.path().join("secrets");
    std::fs::create_dir_all(&secrets)?;
    for e in std::fs::read_dir(instance.dir().join("secrets"))? {
        let e = e?;
        use std::os::unix::fs::MetadataExt;
        let to = secrets.join(e.file_name());
        std::fs::copy(e.path(), &to)?;
        let meta = e.metadata()?;
        std::os::unix::fs::chown(&to, Some(meta.uid()), Some(meta.gid()))?;
    }
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(instance.dir().join("bundle/config.json"))?)?;
    for m in spec["mounts"].as_array_mut().into_iter().flatten() {
        if m["destination"] == "/run/secrets" {
            m["source"] = serde_json::json!(secrets);
        }
    }
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let port = installed.resolved.manifest.runtime.port.unwrap_or(8080);
    instance.stop().await;
    let mut runc = Vec::new();
    for i in 0..runs {
        let id = format!("berth-bench-runc-{}-{i}", std::process::id());
        let t = Instant::now();
        let out = std::process::Command::new(&a.common.runtime)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg("--pid-file")
            .arg(scratch.path().join("pid"))
            .arg(&id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        let measured = (|| -> Result<f64> {
            anyhow::ensure!(out.success(), "{} run failed: {out}", a.common.runtime);
            let pid: u32 = std::fs::read_to_string(scratch.path().join("pid"))?.trim().parse()?;
            let ns = crate::runner::netns::Netns::of_pid(pid)?;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let until = Instant::now() + Duration::from_secs(10);
            while ns.connect(addr).is_err() {
                anyhow::ensure!(Instant::now() < until, "the plugin did not listen within 10 s");
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(ms(t.elapsed()))
        })();
        let _ = std::process::Command::new(&a.common.runtime).args(["delete", "--force", &id]).output();
        runc.push(measured?);
    }
    let _ = std::fs::remove_dir_all(&base);
    println!("berth runner start-up, {} ({runs} runs each, median ms)", a.reference);
    println!("  cold start (resolve, verify, pull, unpack, start, healthy): {:8.1}", median(cold));
    println!("    of which resolve + verify + pull + unpack:                {:8.1}", median(cold_install));
    println!("  warm start (resolve, verify, start, healthy; image cached):  {:8.1}", median(warm));
    println!("    of which resolve + verify:                                {:8.1}", median(warm_resolve));
    println!("  warm start of an installed plugin (start, healthy):         {:8.1}", median(start_only));
    println!("  `{} run` of the same bundle until its port accepts:       {:8.1}", a.common.runtime, median(runc));
    Ok(0)
}
