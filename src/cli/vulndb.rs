//! `berth vulndb import|stats|query`: fill and read the local OSV vulnerability database
//! (`crate::verify::vulndb`) by hand — load osv.dev's per-ecosystem `all.zip` or a directory of
//! OSV JSON files, see what it holds, and ask what affects one package version.

use crate::verify::vulndb::VulnDb;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum VulndbCommand {
    /// Import OSV JSON files (a directory or a .zip) into the database
    Import(ImportArgs),
    /// Show what the database holds
    Stats(StatsArgs),
    /// List advisories affecting a package version given as a purl
    Query(QueryArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A directory of OSV records (searched recursively for *.json), an osv.dev all.zip, or
    /// one .json record.
    pub source: PathBuf,
    /// The database file (created if missing).
    #[arg(long, env = "BERTH_VULNDB", default_value = "berth-vulndb.sqlite")]
    pub db: PathBuf,
    /// Print the import report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The database file.
    #[arg(long, env = "BERTH_VULNDB", default_value = "berth-vulndb.sqlite")]
    pub db: PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The package and version, e.g. pkg:cargo/smallvec@1.6.0, pkg:npm/%40babel/traverse@7.23.1,
    /// pkg:pypi/requests@2.30.0, pkg:golang/golang.org/x/net@v0.16.0.
    pub purl: String,
    /// The database file.
    #[arg(long, env = "BERTH_VULNDB", default_value = "berth-vulndb.sqlite")]
    pub db: PathBuf,
    /// Print the advisories as a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `vulndb` command (blocking: SQLite and file reads).
pub fn run(c: VulndbCommand) -> Result<i32> {
    match c {
        VulndbCommand::Import(a) => import(a),
        VulndbCommand::Stats(a) => stats(a),
        VulndbCommand::Query(a) => query(a),
    }
}

fn import(a: ImportArgs) -> Result<i32> {
    let db = VulnDb::open(&a.db)?;
    // The error names the file (or archive entry) that could not be read.
    let report = db.import(&a.source)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} added, {} updated, {} unchanged, {} withdrawn, {} skipped",
            a.source.display(),
            report.added,
            report.updated,
            report.unchanged,
            report.withdrawn,
            report.skipped.len()
        );
        for s in &report.skipped {
            println!("  skipped {s}");
        }
        println!("revision {}", report.revision);
    }
    Ok(0)
}

fn stats(a: StatsArgs) -> Result<i32> {
    let db = open_existing(&a.db)?;
    let (records, withdrawn) = db.record_count()?;
    let ecosystems = db.stats()?;
    let revision = db.revision()?;
    if a.json {
        let v = serde_json::json!({
            "database": a.db,
            "records": records,
            "withdrawn": withdrawn,
            "ecosystems": ecosystems,
            "revision": revision,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}: {records} records ({withdrawn} withdrawn)", a.db.display());
        let width = ecosystems.keys().map(String::len).max().unwrap_or(0);
        for (eco, n) in &ecosystems {
            println!("  {eco:<width$}  {n}");
        }
        println!("revision {revision}");
    }
    Ok(0)
}

fn query(a: QueryArgs) -> Result<i32> {
    let db = open_existing(&a.db)?;
    let found = db.affecting(&a.purl)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(0);
    }
    if found.is_empty() {
        println!("{}: no known advisories", a.purl);
        return Ok(0);
    }
    println!("{}: {} advisor{}", a.purl, found.len(), if found.len() == 1 { "y" } else { "ies" });
    for v in &found {
        let severity = serde_json::to_value(v.severity)?;
        println!("  {}  {}  {}", v.id, severity.as_str().unwrap_or("unknown"), v.summary);
        if !v.aliases.is_empty() {
            println!("      aliases: {}", v.aliases.join(", "));
        }
        if v.fixed.is_empty() {
            println!("      fixed in: no fixed version known");
        } else {
            println!("      fixed in: {}", v.fixed.join(", "));
        }
    }
    Ok(0)
}

/// Reading commands must not leave an empty database behind a mistyped path.
fn open_existing(path: &Path) -> Result<VulnDb> {
    if !path.exists() {
        bail!("{}: no vulnerability database here (run `berth vulndb import` first, or pass --db)", path.display());
    }
    Ok(VulnDb::open(path)?)
}
