//! `berth conformance`: runs the runner API v1 conformance suite (`berth::conformance`)
//! against a running plugin and prints the report; the exit code says whether it passed.

use crate::conformance::{self, Target};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ConformanceArgs {
    /// Base URL of a running plugin, e.g. http://127.0.0.1:8080. Only URLs for now: launching
    /// an image by REF@DIGEST under runc will come later.
    pub url: String,
    /// The plugin's manifest (JSON); its entrypoints and their examples drive the cases.
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// The runner API key the plugin was given (raw bytes).
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
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
    if !a.url.starts_with("http://") && !a.url.starts_with("https://") {
        bail!(
            "{:?} is not an http(s) URL: conformance runs against a plugin that is already listening \
             (launching an image by REF@DIGEST under runc will come later)",
            a.url
        );
    }
    let text = std::fs::read_to_string(&a.manifest).with_context(|| format!("reading {}", a.manifest.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", a.manifest.display()))?;
    let manifest = crate::plugin::validate(&json, None)
        .map_err(|e| anyhow::anyhow!("{} is not a valid plugin manifest:\n{e}", a.manifest.display()))?;
    let key = std::fs::read(&a.key_file).with_context(|| format!("reading the key {}", a.key_file.display()))?;
    anyhow::ensure!(!key.is_empty(), "the key file {} is empty", a.key_file.display());

    let cases = conformance::suite(&a.cases)?;
    let target = Target::new(&a.url, key, manifest)?;
    let report = conformance::run(&target, &cases).await?;

    if let Some(path) = &a.junit {
        std::fs::write(path, report.to_junit()).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(if report.is_success() { 0 } else { 1 })
}
