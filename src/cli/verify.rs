//! `berth verify REF@DIGEST`: run the verification checks locally (a publisher before
//! submitting, or an operator by hand), optionally signing and attaching the report; or ask
//! a running `berth serve` for a digest's verification status, queue a re-run, or record a
//! manual review.

use super::transfer::RemoteArgs;
use crate::oci::ImageReference;
use crate::plugin::documents::{CheckStatus, VerificationReport, VerificationState};
use crate::sign;
use crate::verify::checks::{ConformanceSettings, Settings};
use crate::verify::pipeline;
use crate::verify::vulndb::VulnDb;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The plugin image: host[:port]/publisher/name@sha256:…
    pub reference: String,
    /// The publisher's public key (PEM), registered for the publisher the manifest names. Repeatable.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// The OSV database (`berth vulndb import`); without it the vulnerability check is skipped.
    #[arg(long, env = "BERTH_VULNDB")]
    pub vulndb: Option<PathBuf>,
    /// Skip the conformance run (it needs root and runc).
    #[arg(long)]
    pub no_conformance: bool,
    /// Sign the report with this verifier key (cosign format; password from COSIGN_PASSWORD)
    /// and attach it to the image.
    #[arg(long)]
    pub attach_with: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Ask the server for the digest's verification status instead of verifying here.
    #[arg(long, conflicts_with_all = ["rerun", "review"])]
    pub status: bool,
    /// Ask the server to verify the digest again.
    #[arg(long, conflicts_with = "review")]
    pub rerun: bool,
    /// Record a manual review on the server (approve or reject) and verify again.
    #[arg(long, value_parser = ["approve", "reject"], requires = "by")]
    pub review: Option<String>,
    /// Who reviewed.
    #[arg(long)]
    pub by: Option<String>,
    /// A note for the review.
    #[arg(long)]
    pub note: Option<String>,
    /// The server's base URL (default: http://<the reference's registry>).
    #[arg(long)]
    pub server: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub async fn run(a: VerifyArgs) -> Result<i32> {
    let image = ImageReference::parse(&a.reference)?;
    let Some(digest) = image.digest.as_ref().map(|d| d.to_string()) else {
        bail!("{}: name the image by digest (…@sha256:…)", a.reference);
    };
    if a.status || a.rerun || a.review.is_some() {
        return server(&a, &image, &digest).await;
    }
    let mut settings = Settings { remote: a.remote.options(), ..Settings::default() };
    if !a.no_conformance {
        let dir = tempfile::tempdir()?;
        settings.conformance = Some(ConformanceSettings::new(dir.keep()));
    }
    if !a.keys.is_empty() {
        // Keys are registered per publisher: read which one the manifest names.
        let repo = crate::content::remote::open(&image, a.remote.options())?;
        let resolved = crate::content::TagResolver::resolve(&repo, &digest).await?;
        let publisher = crate::conformance::launch::attached_manifest(&repo, &resolved, Some(&image.repository))
            .await
            .map(|m| m.publisher)
            .unwrap_or_default();
        settings.publisher_keys.entry(publisher).or_default().extend(super::load_public_keys(&a.keys)?);
    }
    let db = match &a.vulndb {
        Some(p) => Some(VulnDb::open(p)?),
        None => None,
    };
    let vulns = db.as_ref().map(|d| d as &dyn crate::verify::VulnSource);
    let report = pipeline::verify(&a.reference, &settings, vulns, None).await?;
    if let Some(conformance) = &settings.conformance {
        let _ = std::fs::remove_dir_all(&conformance.data_dir);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if let Some(key_path) = &a.attach_with {
        let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
        let pem = std::fs::read_to_string(key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = sign::load_private_key(&pem, password.as_bytes())?;
        let d = pipeline::sign_and_attach(&a.reference, &report, &key, &settings.remote).await?;
        eprintln!("attached the signed report as {}", d.digest());
    }
    Ok(if report.state == VerificationState::Verified { 0 } else { 1 })
}

fn print_report(r: &VerificationReport) {
    let state = match r.state {
        VerificationState::Verified => "VERIFIED",
        VerificationState::Unverified => "UNVERIFIED",
    };
    println!("{state} {} (by {} at {})", r.subject.digest, r.verifier.id, r.time);
    for c in &r.checks {
        let s = match c.status {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Warn => "warn",
            CheckStatus::Skipped => "skip",
        };
        println!("  {s:4}  {}", c.name);
        for f in &c.findings {
            let sev = f.severity.map(|s| format!("{s:?} ").to_lowercase()).unwrap_or_default();
            let id = f.id.as_deref().map(|i| format!("{i}: ")).unwrap_or_default();
            let at = f.location.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
            println!("          {sev}{id}{}{at}", f.message);
        }
    }
    let v = &r.vulnerabilities;
    println!(
        "  compatibility: {:?}; vulnerabilities: {} critical, {} high, {} medium, {} low, {} unknown",
        r.compatibility.result, v.critical, v.high, v.medium, v.low, v.unknown
    );
}

async fn server(a: &VerifyArgs, image: &ImageReference, digest: &str) -> Result<i32> {
    let base = a.server.clone().unwrap_or_else(|| format!("http://{}", image.registry));
    let url = format!("{}/api/v1/verifications/{digest}", base.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut req = if a.status {
        client.get(&url)
    } else if let Some(decision) = &a.review {
        client.post(format!("{url}/review")).json(&json!({
            "decision": decision, "by": a.by, "note": a.note, "repository": image.repository,
        }))
    } else {
        client.post(&url).json(&json!({"repository": image.repository}))
    };
    if let (Some(u), Some(p)) = (&a.remote.username, &a.remote.password) {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().await.with_context(|| format!("asking {base}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&body)?);
    if !status.is_success() {
        bail!("{url}: {status}");
    }
    Ok(0)
}
