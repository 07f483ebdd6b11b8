//! `berth audit verify FILE` and `berth audit show FILE`: check and read the runner's
//! hash-chained audit log (format in `crate::runner::audit`).

use crate::runner::audit::{self, AuditError, Record};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check every line's hash, seq and chain link; exit 1 naming the first bad line.
    Verify(VerifyArgs),
    /// List the records (as far as the chain is intact).
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The audit log (JSON Lines).
    pub file: PathBuf,
    /// A head hash recorded earlier (`verify` prints it); fail unless some record has it,
    /// which catches trailing lines removed or the chain rewritten since.
    #[arg(long)]
    pub anchor: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The audit log (JSON Lines).
    pub file: PathBuf,
    /// Only records with this event (e.g. pull, start, stop, policy.refused, egress.refused).
    #[arg(long)]
    pub event: Option<String>,
    /// Print each record as one JSON line, as stored.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(c: AuditCommand) -> Result<i32> {
    // The log is read synchronously, line by line; keep it off the async workers.
    tokio::task::spawn_blocking(move || match c {
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Show(a) => show(a),
    })
    .await?
}

fn verify(a: VerifyArgs) -> Result<i32> {
    let result = match &a.anchor {
        Some(anchor) => audit::verify_anchored(&a.file, anchor),
        None => audit::verify(&a.file),
    };
    match result {
        Ok(r) => {
            if a.json {
                let mut v = serde_json::to_value(&r)?;
                v["valid"] = true.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let events: Vec<String> = r.events.iter().map(|(e, n)| format!("{e}={n}")).collect();
                let events = if events.is_empty() { String::new() } else { format!(" ({})", events.join(", ")) };
                println!("{}: valid, {} records{events}", a.file.display(), r.records);
                if let (Some(first), Some(last)) = (&r.first_time, &r.last_time) {
                    println!("from {first} to {last}");
                }
                match &r.head {
                    Some(h) => println!("head {h} (keep it elsewhere; pass it as --anchor later)"),
                    None => println!("empty log"),
                }
            }
            Ok(0)
        }
        // A broken chain or a missing anchor is the answer, not a failure to find one out.
        Err(e @ (AuditError::Broken { .. } | AuditError::AnchorMissing { .. })) => {
            if a.json {
                let line = match &e {
                    AuditError::Broken { line, .. } => Some(*line),
                    _ => None,
                };
                let problem = match &e {
                    AuditError::Broken { problem, .. } => problem.to_string(),
                    other => other.to_string(),
                };
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"valid": false, "line": line, "problem": problem})
                    )?
                );
            }
            eprintln!("berth: audit log invalid: {e}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

fn show(a: ShowArgs) -> Result<i32> {
    let wanted = |r: &Record| a.event.as_deref().is_none_or(|e| e == r.event);
    let mut failed = None;
    let result = audit::walk(&a.file, |r| {
        if !wanted(r) || failed.is_some() {
            return;
        }
        let out = if a.json {
            serde_json::to_string(r)
        } else {
            serde_json::to_string(&r.details)
                .map(|d| format!("{:>6}  {}  {:<16} {}  {d}", r.seq, r.time, r.event, r.subject))
        };
        match out {
            Ok(s) => println!("{s}"),
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    match result {
        Ok(_) => Ok(0),
        Err(e @ AuditError::Broken { .. }) => {
            eprintln!("berth: stopped at a broken record: {e}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}
