//! `berth policy explain REF@DIGEST --policy FILE --key PUB…`: what the runner would decide
//! about installing a plugin, with a reason for every part, resolved from the registry alone.

use super::transfer::RemoteArgs;
use crate::content::TagResolver;
use crate::content::endpoint::Endpoint;
use crate::runner::policy::{Policy, Subject, decide};
use crate::runner::resolve::{Trust, resolve};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Explain the install decision for an image, part by part.
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The plugin image: host[:port]/name@sha256:… (a tag is refused by the policy).
    pub reference: String,
    /// The runner policy (TOML; schema in schemas/runner-policy.v1.schema.json).
    #[arg(long)]
    pub policy: PathBuf,
    /// Trusted publisher public key (PEM); repeatable.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Trusted catalog root public key (PEM): lifecycle status signed by it counts. Repeatable.
    #[arg(long = "root-key")]
    pub root_keys: Vec<PathBuf>,
    /// Trusted verifier public key (PEM): verification reports signed by it count. Repeatable.
    #[arg(long = "verifier-key")]
    pub verifier_keys: Vec<PathBuf>,
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub async fn run(c: PolicyCommand) -> Result<i32> {
    let PolicyCommand::Explain(a) = c;
    let policy = Policy::load(&a.policy)?;
    let keys = super::load_public_keys;
    let trust = Trust { publishers: keys(&a.keys)?, roots: keys(&a.root_keys)?, verifiers: keys(&a.verifier_keys)? };
    let Endpoint::Registry(image_ref) = Endpoint::parse(&a.reference)? else {
        bail!("{}: the policy judges images in a registry (host/name@sha256:…)", a.reference);
    };
    let repo = crate::content::remote::open(&image_ref, a.remote.options())?;
    // A tag is resolved only to find the manifest; the policy still refuses it by name.
    let mut pinned = image_ref.clone();
    if pinned.digest.is_none() {
        let tag = image_ref.reference().with_context(|| format!("{} names no tag or digest", a.reference))?;
        let image = repo.resolve(&tag).await.with_context(|| format!("resolving {}", a.reference))?;
        pinned.digest = Some(image.digest().to_string().parse()?);
    }
    let (trust, record_problem) = crate::runner::resolve::with_publisher_record(&repo, &pinned, &trust).await;
    let mut resolved = resolve(&repo, &pinned, &trust).await?;
    resolved.ignored.extend(record_problem);
    let decision = decide(
        &policy,
        &Subject {
            reference: &image_ref,
            manifest: &resolved.manifest,
            signatures: resolved.signatures,
            lifecycle: resolved.lifecycle.as_ref(),
        },
    );
    if a.json {
        let parts: Vec<serde_json::Value> = decision
            .parts
            .iter()
            .map(|p| serde_json::json!({"aspect": p.aspect, "verdict": format!("{:?}", p.verdict), "reason": p.reason}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "allowed": decision.allowed,
                "parts": parts,
                "limits": {"cpu_millicores": decision.limits.cpu_millicores, "memory_mib": decision.limits.memory_mib, "pids": decision.limits.pids},
                "egress": decision.egress,
                "secrets": decision.secrets,
                "signature_problems": resolved.signature_problems,
                "verification_report": resolved.report,
                "ignored": resolved.ignored,
            }))?
        );
    } else {
        print!("{decision}");
        for p in &resolved.signature_problems {
            println!("  signature check: {p}");
        }
        if let Some(r) = &resolved.report {
            println!("  verification report: {} by {} at {}", r.state, r.verifier, r.time);
        }
        for i in &resolved.ignored {
            println!("  {i}");
        }
        println!("{}", if decision.allowed { "=> allowed" } else { "=> refused" });
    }
    Ok(if decision.allowed { 0 } else { 1 })
}
