//! `berth conformance`: runs the runner API v1 conformance suite (`berth::conformance`)
//! against a running plugin and prints the report; the exit code says whether it passed.

use crate::conformance::{self, Target};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ConformanceArgs {
    /// A running plugin's base URL (http://127.0.0.1:8080; needs --manifest and --key-file),
    /// or an image to start under runc: host/name@sha256:… or oci-layout:DIR:tag (its
    /// attached plugin manifest is used unless --manifest is given; a fresh key is made).
    pub url: String,
    /// The plugin's manifest (JSON); its entrypoints and their examples drive the cases.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The runner API key the plugin was given (raw bytes); for a URL target.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub remote: super::transfer::RemoteArgs,
    /// A directory of extra case files (*.json, conformance/case.schema.json format), run
    /// after the built-in suite (repeatable).
    #[arg(long = "cases", value_name = "DIR")]
    pub cases: Vec<PathBuf>,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Returns 0 when every case passed, 1 otherwise.
pub async fn run(a: ConformanceArgs) -> Result<i32> {
    let manifest = match &a.manifest {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            Some(
                crate::plugin::validate(&json, None)
                    .map_err(|e| anyhow::anyhow!("{} is not a valid plugin manifest:\n{e}", path.display()))?,
            )
        }
        None => None,
    };
    let is_url = a.url.starts_with("http://") || a.url.starts_with("https://");
    // An image is started under runc for the run and stopped afterwards.
    let mut launched = None;
    let (url, key, manifest) = if is_url {
        let manifest = manifest.context("--manifest is required with a URL")?;
        let key_file = a.key_file.as_ref().context("--key-file is required with a URL")?;
        let key = std::fs::read(key_file).with_context(|| format!("reading the key {}", key_file.display()))?;
        anyhow::ensure!(!key.is_empty(), "the key file {} is empty", key_file.display());
        (a.url.clone(), key, manifest)
    } else {
        let l = conformance::launch::launch(&a.url, &a.remote.options(), manifest).await?;
        eprintln!("started {} under runc at {}", a.url, l.url);
        let t = (l.url.clone(), l.key.clone(), l.manifest.clone());
        launched = Some(l);
        t
    };
    let cases = conformance::suite(&a.cases)?;
    let target = Target::new(&url, key, manifest)?;
    let report = conformance::run(&target, &cases).await?;

    if let Some(path) = &a.junit {
        std::fs::write(path, report.to_junit()).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    drop(launched);
    Ok(if report.is_success() { 0 } else { 1 })
}
