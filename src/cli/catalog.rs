//! `berth search`, `berth info` (ask a catalog) and `berth index rebuild` (write the search
//! index anew from registry data alone).

use crate::catalog::harvest::{HarvestSettings, Source, Visibility};
use crate::catalog::index::CatalogIndex;
use crate::catalog::service::Catalog;
use crate::config::CatalogMode;
use crate::content::FsStore;
use crate::runner::resolve::Trust;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Words to look for (name, description, publisher, categories, capabilities, SBOM components).
    #[arg(default_value = "")]
    pub text: String,
    /// Filters, comma-separated values.
    #[arg(long)]
    pub category: Option<String>,
    #[arg(long)]
    pub capability: Option<String>,
    #[arg(long)]
    pub publisher: Option<String>,
    #[arg(long)]
    pub verified: Option<bool>,
    #[arg(long)]
    pub lifecycle: Option<String>,
    /// Only versions compatible with this core version.
    #[arg(long)]
    pub core: Option<String>,
    /// Every version, not only the newest of each plugin.
    #[arg(long)]
    pub all_versions: bool,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// The catalog server.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:5000")]
    pub server: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The plugin: publisher/name.
    pub plugin: String,
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:5000")]
    pub server: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum IndexCommand {
    /// Write the catalog's search index anew from the registry alone.
    Rebuild(RebuildArgs),
}

#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// Read the embedded store in this data directory (the server may be stopped).
    #[arg(long, conflicts_with = "registry")]
    pub data_dir: Option<PathBuf>,
    /// Read any OCI 1.1 registry over HTTP (host[:port]).
    #[arg(long)]
    pub registry: Option<String>,
    /// The registry as users reach it, named in install references (default: --registry,
    /// or 127.0.0.1:5000 with --data-dir).
    #[arg(long)]
    pub host: Option<String>,
    /// The index directory to write (default: DATA_DIR/index).
    #[arg(long)]
    pub index: Option<PathBuf>,
    /// Publisher public keys trusted for signatures (PEM). Repeatable.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Verifier public keys (PEM); default: DATA_DIR/verifier.pub when present. Repeatable.
    #[arg(long = "verifier-key")]
    pub verifier_keys: Vec<PathBuf>,
    /// Catalog root public keys (PEM). Repeatable.
    #[arg(long = "root-key")]
    pub root_keys: Vec<PathBuf>,
    /// First-party publishers (official).
    #[arg(long = "first-party", default_value = "aisopsflow")]
    pub first_party: Vec<String>,
    /// What to list, as `catalog.mode` of the server: first-party publishers only, also
    /// approved publishers' verified versions (curated), or every plugin found (all).
    #[arg(long, value_enum, default_value_t = ListMode::FirstParty)]
    pub mode: ListMode,
    #[command(flatten)]
    pub remote: super::transfer::RemoteArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMode {
    FirstParty,
    Curated,
    All,
}

async fn get(url: &str) -> Result<Value> {
    let resp = reqwest::get(url).await.with_context(|| format!("asking {url}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.with_context(|| format!("{url}: the answer is not JSON"))?;
    if !status.is_success() {
        let message = body.pointer("/error/message").and_then(Value::as_str).unwrap_or("");
        bail!("{url}: {status}: {message}");
    }
    Ok(body)
}

pub async fn search(a: SearchArgs) -> Result<i32> {
    let mut url = reqwest::Url::parse(&format!("{}/api/v1/search", a.server.trim_end_matches('/')))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("q", &a.text).append_pair("limit", &a.limit.to_string());
        for (k, v) in [
            ("category", &a.category),
            ("capability", &a.capability),
            ("publisher", &a.publisher),
            ("lifecycle", &a.lifecycle),
            ("core", &a.core),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        if let Some(v) = a.verified {
            q.append_pair("verified", &v.to_string());
        }
        if a.all_versions {
            q.append_pair("all_versions", "true");
        }
    }
    let body = get(url.as_str()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(0);
    }
    println!("{} result(s)", body["total"]);
    for h in body["hits"].as_array().into_iter().flatten() {
        let v = &h["version"];
        let mut badges = Vec::new();
        if v["official"] == true {
            badges.push("official");
        }
        if v["verified"] == true {
            badges.push("verified");
        }
        if let Some(l) = v["lifecycle"].as_str().filter(|l| *l != "active") {
            badges.push(l);
        }
        println!(
            "{:<32} {:<10} {:<24} {}",
            v["repository"].as_str().unwrap_or(""),
            v["version"].as_str().unwrap_or(""),
            badges.join(","),
            v["description"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}

pub async fn info(a: InfoArgs) -> Result<i32> {
    let Some((publisher, name)) = a.plugin.split_once('/') else {
        bail!("{}: name the plugin as publisher/name", a.plugin);
    };
    let body = get(&format!("{}/api/v1/plugins/{publisher}/{name}", a.server.trim_end_matches('/'))).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(0);
    }
    let l = &body["latest"];
    println!("{} — {}", l["display_name"].as_str().unwrap_or(""), l["repository"].as_str().unwrap_or(""));
    println!("  {}", l["description"].as_str().unwrap_or(""));
    println!(
        "  publisher {} · verification {} · lifecycle {} · capabilities {}",
        l["publisher"].as_str().unwrap_or(""),
        l["verification"].as_str().unwrap_or(""),
        l["lifecycle"].as_str().unwrap_or(""),
        l["capabilities"]
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    println!("  versions:");
    for v in body["versions"].as_array().into_iter().flatten() {
        println!(
            "    {:<10} {} {}",
            v["version"].as_str().unwrap_or(""),
            v["digest"].as_str().unwrap_or(""),
            v["verification"].as_str().unwrap_or("")
        );
    }
    println!(
        "  install:\n{}",
        body["install"].as_str().unwrap_or("").lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    );
    Ok(0)
}

pub async fn index(c: IndexCommand) -> Result<i32> {
    let IndexCommand::Rebuild(a) = c;
    let (source, host, default_index, defaults) = match (&a.data_dir, &a.registry) {
        (Some(d), None) => {
            let store = FsStore::open(d)?;
            (
                Source::Embedded(store),
                crate::config::DEFAULT_LISTEN.to_string(),
                Some(d.join("index")),
                Some((d.join("verifier.pub"), d.join("catalog-root.pub"))),
            )
        }
        (None, Some(r)) => (Source::Registry { host: r.clone(), options: a.remote.options() }, r.clone(), None, None),
        _ => bail!("name the source: --data-dir DIR (embedded store) or --registry HOST"),
    };
    let host = a.host.clone().unwrap_or(host);
    let Some(index_dir) = a.index.clone().or(default_index) else {
        bail!("--index DIR: where to write the index");
    };
    // With --data-dir, the keys `serve` made there are trusted unless others are named.
    let (default_verifier, default_root) = defaults.unzip();
    let mut verifiers = super::load_public_keys(&a.verifier_keys)?;
    if a.verifier_keys.is_empty()
        && let Some(p) = default_verifier.filter(|p| p.exists())
    {
        verifiers.extend(super::load_public_keys(&[p])?);
    }
    let mut roots = super::load_public_keys(&a.root_keys)?;
    if a.root_keys.is_empty()
        && let Some(p) = default_root.filter(|p| p.exists())
    {
        roots.extend(super::load_public_keys(&[p])?);
    }
    let trust = Trust { publishers: super::load_public_keys(&a.keys)?, roots, verifiers };
    let listing = match a.mode {
        ListMode::FirstParty => Some(CatalogMode::FirstParty),
        ListMode::Curated => Some(CatalogMode::Curated),
        ListMode::All => None,
    }
    .map(|mode| Visibility { mode, approved: Default::default() });
    let settings = HarvestSettings {
        trust,
        first_party: a.first_party.clone(),
        registry: host.clone(),
        listing,
        ..HarvestSettings::default()
    };
    let catalog = Catalog::new(CatalogIndex::open(&index_dir)?, settings, host, a.remote.options());
    // Reputation lives in the deployment's database, not in the registry: a rebuild keeps it.
    if let Some(d) = &a.data_dir {
        catalog.set_reputation(std::sync::Arc::new(crate::catalog::reputation::Reputation::open(
            &d.join("catalog.sqlite"),
        )?));
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} repositories, {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = catalog
        .rebuild_with_progress(&source, &|done, total, versions| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{versions} plugin versions"));
        })
        .await?;
    bar.finish_and_clear();
    println!(
        "indexed {} plugin versions from {} repositories ({} images) in {:.2} s: {:.0} versions/s",
        report.versions,
        report.repositories,
        report.images,
        report.seconds,
        report.versions as f64 / report.seconds.max(1e-9)
    );
    for s in &report.skipped {
        eprintln!("skipped {s}");
    }
    Ok(0)
}
