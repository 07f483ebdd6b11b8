//! The command line: clap structs, and one function per command mapping them onto the
//! library. `anyhow` lives here and in `main.rs` only.

use crate::config::Config;
use crate::content::{FsStore, check, gc};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

pub mod audit;
pub mod bench_copy;
pub mod bench_search;
pub mod catalog;
pub mod conformance;
pub mod governance;
pub mod policy;
pub mod publisher;
pub mod runner;
pub mod transfer;
pub mod verify;
pub mod vulndb;

#[derive(Parser, Debug)]
#[command(name = "berth", version, about = "A registry-native plugin marketplace for AisOpsFlow")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the embedded OCI Distribution 1.1 registry.
    Serve(ServeArgs),
    /// Delete unreferenced blobs and referrers whose subject is gone.
    Gc(GcArgs),
    /// Check every blob, link, tag and referrer entry of a store.
    Fsck(FsckArgs),
    /// Hash a password for `[[auth.accounts]]` (reads it from standard input).
    HashPassword,
    /// Measure a registry: blob push/pull MB/s, manifest GET/PUT requests/s.
    Bench(crate::bench::BenchArgs),
    /// Copy an artifact graph between registries and OCI layout directories.
    Copy(transfer::CopyArgs),
    /// Print an artifact's referrer tree.
    Discover(transfer::DiscoverArgs),
    /// Measure graph copies: N images with R referrers each, registry to registry.
    BenchCopy(bench_copy::BenchCopyArgs),
    /// Validate a plugin manifest, reporting every problem with its JSON pointer.
    Validate(publisher::ValidateArgs),
    /// Build a reproducible plugin image from a static binary.
    Pack(publisher::PackArgs),
    /// Make or check CycloneDX SBOMs.
    #[command(subcommand)]
    Sbom(publisher::SbomCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Key(publisher::KeyCommand),
    /// Sign an image or artifact (cosign v3 bundle referrer, or --legacy .sig tag).
    Sign(publisher::SignArgs),
    /// Verify signatures (bundle referrers and legacy .sig tags) against trusted keys.
    VerifySignature(publisher::VerifySignatureArgs),
    /// Publish a plugin: image by digest, manifest artifact, SBOM, signatures.
    Publish(publisher::PublishArgs),
    /// Runner policy: explain what would be decided about an install.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The runner's audit log: verify its hash chain, list its records.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run the runner API v1 conformance suite against a running plugin (by URL).
    Conformance(conformance::ConformanceArgs),
    /// Run one plugin pinned by digest under the runner policy, in the foreground.
    Run(runner::RunArgs),
    /// The runner service: install, start, stop, status, logs, invoke and upgrade plugins
    /// through a local API, with health checks and restarts.
    Runner(runner::RunnerArgs),
    /// Measure plugin start-up: cold, warm, and `runc run` of the same bundle.
    BenchStart(runner::BenchStartArgs),
    /// Verify a plugin image (every check, one report), or ask a server about a verification.
    Verify(verify::VerifyArgs),
    /// The local OSV vulnerability database the verification scans against.
    #[command(subcommand)]
    Vulndb(vulndb::VulndbCommand),
    /// Search the catalog.
    Search(catalog::SearchArgs),
    /// One plugin's catalog page: versions, verification, lifecycle, install snippet.
    Info(catalog::InfoArgs),
    /// The catalog's search index.
    #[command(subcommand)]
    Index(catalog::IndexCommand),
    /// Measure catalog search latency over synthetic plugin versions.
    BenchSearch(bench_search::BenchSearchArgs),
    /// The catalog's publishers: register, approve or reject, push tokens, keys, submissions.
    #[command(subcommand)]
    Publisher(governance::PublisherCommand),
    /// Mark a plugin version deprecated (publisher), or insecure, removed or active (operator).
    Lifecycle(governance::LifecycleArgs),
    /// Tenants' publisher opt-ins (operator).
    #[command(subcommand)]
    Tenant(governance::TenantCommand),
}

/// Reads public keys (PEM files), naming the file that cannot be read or parsed.
pub fn load_public_keys(paths: &[PathBuf]) -> Result<Vec<crate::sign::PublicKey>> {
    paths
        .iter()
        .map(|k| {
            let pem = std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?;
            crate::sign::load_public_key(&pem).with_context(|| format!("loading {}", k.display()))
        })
        .collect()
}

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Configuration file (TOML).
    #[arg(long, short, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory of the embedded store.
    #[arg(long, env = "BERTH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// The configuration: file, then environment and flags over it.
    fn load(&self) -> Result<Config> {
        let mut c = Config::load(self.config.as_deref())?;
        if let Some(d) = &self.data_dir {
            c.server.data_dir = d.clone();
        }
        Ok(c)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:5000).
    #[arg(long, env = "BERTH_LISTEN")]
    pub listen: Option<String>,
    /// Allow anonymous pushes from any address when no accounts are configured, and
    /// listening on a non-loopback address without accounts.
    #[arg(long)]
    pub no_protected_mode: bool,
    /// Do not publish the first-party seed (`catalog.seed = ""`).
    #[arg(long)]
    pub no_seed: bool,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave anything younger than this alone (e.g. 30s, 15m, 1h).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Rebuild the referrers index from the manifests before checking.
    #[arg(long)]
    pub rebuild_referrers: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Serve(a) => {
            let mut c = a.store.load()?;
            if let Some(l) = a.listen {
                c.server.listen = l;
            }
            if a.no_protected_mode {
                c.server.protected_mode = false;
            }
            if a.no_seed {
                c.catalog.seed = Some(std::path::PathBuf::new());
            }
            crate::registry::server::run(&c).await?;
            Ok(0)
        }
        Command::Gc(a) => {
            let c = a.store.load()?;
            let store = FsStore::open(&c.server.data_dir)?;
            let opts = gc::GcOptions { grace: a.grace, dry_run: a.dry_run };
            let r = tokio::task::spawn_blocking(move || gc::gc(&store, &opts)).await??;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let verb = if r.dry_run { "would delete" } else { "deleted" };
                for o in &r.orphaned_referrers {
                    println!("{verb} orphaned referrer {o}");
                }
                for b in &r.blobs_deleted {
                    println!("{verb} blob {b}");
                }
                println!(
                    "{verb} {} blobs ({} bytes) and {} orphaned referrers; kept {} blobs; removed {} links, {} stale uploads",
                    r.blobs_deleted.len(),
                    r.bytes_freed,
                    r.orphaned_referrers.len(),
                    r.blobs_kept,
                    r.links_removed,
                    r.uploads_removed
                );
            }
            Ok(0)
        }
        Command::Fsck(a) => {
            let c = a.store.load()?;
            let store = FsStore::open(&c.server.data_dir)?;
            let rebuild = a.rebuild_referrers;
            let r = tokio::task::spawn_blocking(move || -> Result<check::CheckReport> {
                if rebuild {
                    let n = store.rebuild_referrers()?;
                    eprintln!("rebuilt referrers index: {n} entries");
                }
                Ok(check::check(&store)?)
            })
            .await??;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for p in &r.problems {
                    println!("problem: {p}");
                }
                println!(
                    "checked {} blobs ({} bytes), {} repositories, {} manifests, {} tags, {} referrers; {} uploads in progress; {}",
                    r.blobs_checked,
                    r.bytes_checked,
                    r.repositories,
                    r.manifests,
                    r.tags,
                    r.referrers,
                    r.uploads_in_progress,
                    if r.is_clean() { "clean".to_string() } else { format!("{} problems", r.problems.len()) }
                );
            }
            Ok(if r.is_clean() { 0 } else { 1 })
        }
        Command::HashPassword => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
            let pw = line.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!pw.is_empty(), "the password read from standard input is empty");
            println!("{}", crate::registry::auth::hash_password(pw).map_err(anyhow::Error::msg)?);
            Ok(0)
        }
        Command::Copy(a) => transfer::copy(a).await,
        Command::Discover(a) => transfer::discover(a).await,
        Command::BenchCopy(a) => bench_copy::run(a).await,
        Command::Validate(a) => publisher::validate(a).await,
        Command::Pack(a) => publisher::pack(a).await,
        Command::Sbom(c) => publisher::sbom(c),
        Command::Key(c) => publisher::key(c),
        Command::Sign(a) => publisher::sign_cmd(a).await,
        Command::VerifySignature(a) => publisher::verify_signature(a).await,
        Command::Publish(a) => publisher::publish(a).await,
        Command::Policy(c) => policy::run(c).await,
        Command::Audit(c) => audit::run(c).await,
        Command::Conformance(a) => conformance::run(a).await,
        Command::Run(a) => runner::run(a).await,
        Command::Runner(a) => runner::service(a).await,
        Command::BenchStart(a) => runner::bench_start(a).await,
        Command::Verify(a) => verify::run(a).await,
        Command::Vulndb(c) => vulndb::run(c),
        Command::Search(a) => catalog::search(a).await,
        Command::Info(a) => catalog::info(a).await,
        Command::Index(c) => catalog::index(c).await,
        Command::BenchSearch(a) => bench_search::run(a).await,
        Command::Publisher(c) => governance::publisher(c).await,
        Command::Lifecycle(a) => governance::lifecycle(a).await,
        Command::Tenant(c) => governance::tenant(c).await,
        Command::Bench(a) => {
            let json = a.json;
            let report = crate::bench::run(a).await?;
            crate::bench::print_report(&report, json);
            Ok(0)
        }
    }
}
