//! `berth policy explain REF@DIGEST --policy FILE --key PUB…`: what the runner would decide
//! about installing a plugin, with a reason for every part, resolved from the registry alone.

use super::transfer::RemoteArgs;
use crate::content::TagResolver;
use crate::content::endpoint::Endpoint;
use crate::runner::policy::{Policy, SignatureState, Subject, decide};
use crate::sign::{self, PublicKey};
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
    /// Print the decision as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub async fn run(c: PolicyCommand) -> Result<i32> {
    let PolicyCommand::Explain(a) = c;
    let policy = Policy::load(&a.policy)?;
    let mut keys: Vec<PublicKey> = Vec::new();
    for k in &a.keys {
        let pem = std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?;
        keys.push(sign::load_public_key(&pem).with_context(|| format!("loading {}", k.display()))?);
    }
    let Endpoint::Registry(image_ref) = Endpoint::parse(&a.reference)? else {
        bail!("{}: the policy judges images in a registry (host/name@sha256:…)", a.reference);
    };
    let repo = crate::content::remote::open(&image_ref, a.remote.options())?;
    // A tag is resolved only to find the manifest; the policy still refuses it by name.
    let reference = image_ref.reference().with_context(|| format!("{} names no tag or digest", a.reference))?;
    let image = repo.resolve(&reference).await.with_context(|| format!("resolving {}", a.reference))?;
    let manifest = crate::conformance::launch::attached_manifest(&repo, &image, Some(&image_ref.repository)).await?;
    let signed = |r: Result<Vec<sign::VerifiedSignature>, sign::SignError>| r.is_ok_and(|v| !v.is_empty());
    let image_signed = signed(sign::verify_subject(&repo, &image, &keys).await);
    let artifact = repo
        .referrers(&image.digest().to_string().parse()?, Some(crate::plugin::PLUGIN_MANIFEST_MEDIA_TYPE))
        .await?
        .into_iter()
        .next();
    let manifest_signed = match &artifact {
        Some(d) => signed(sign::verify_subject(&repo, d, &keys).await),
        None => false,
    };
    let decision = decide(
        &policy,
        &Subject {
            reference: &image_ref,
            manifest: &manifest,
            signatures: SignatureState { image: image_signed, manifest: manifest_signed },
            lifecycle: None,
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
            }))?
        );
    } else {
        print!("{decision}");
        println!("{}", if decision.allowed { "=> allowed" } else { "=> refused" });
    }
    Ok(if decision.allowed { 0 } else { 1 })
}
