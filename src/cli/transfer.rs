//! `berth copy` and `berth discover`: moving graphs between registries and layout
//! directories, and printing an artifact's referrer tree.

use crate::content::GraphTarget;
use crate::content::copy::{CopyOptions, CopyReport, Progress, copy_graph, extended_copy};
use crate::content::endpoint::{Endpoint, Opened};
use crate::content::remote::{Credentials, RemoteOptions};
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci_spec::image::Descriptor;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How to reach registries (flags override `BERTH_REGISTRY_*`, which override config.json).
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Registry user name.
    #[arg(long, env = "BERTH_REGISTRY_USER")]
    pub username: Option<String>,
    /// Registry password.
    #[arg(long, env = "BERTH_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Docker config.json to read credentials from.
    #[arg(long)]
    pub docker_config: Option<PathBuf>,
    /// Speak plain HTTP to registries that are not on loopback.
    #[arg(long)]
    pub plain_http: bool,
    /// Extra CA certificate (PEM) to trust for TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Upload blobs in chunks of this many bytes (default: one request per blob).
    #[arg(long)]
    pub chunk_size: Option<u64>,
}

impl RemoteArgs {
    pub fn options(&self) -> RemoteOptions {
        RemoteOptions {
            credentials: match (&self.username, &self.password) {
                (Some(u), Some(p)) => Some(Credentials { username: u.clone(), password: p.clone() }),
                _ => None,
            },
            docker_config: self.docker_config.clone(),
            plain_http: self.plain_http.then_some(true),
            ca_file: self.ca_file.clone(),
            chunk_size: self.chunk_size,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: host[:port]/name:tag|@digest, or oci-layout:DIR[:tag|@digest].
    pub src: String,
    /// Destination: host[:port]/name[:tag], or oci-layout:DIR[:tag].
    pub dst: String,
    /// Bring every referrer (signatures, SBOMs, attestations…) along, recursively.
    #[arg(long, short = 'r')]
    pub referrers: bool,
    /// Storage operations in flight at once.
    #[arg(long, default_value_t = 3)]
    pub concurrency: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// The artifact: host[:port]/name:tag|@digest, or oci-layout:DIR[:tag|@digest].
    pub reference: String,
    /// Only referrers of this artifact type (at the first level).
    #[arg(long)]
    pub artifact_type: Option<String>,
    /// Print the tree as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

fn open(e: &Endpoint, opts: &RemoteOptions) -> Result<Opened> {
    e.open(opts).with_context(|| format!("opening {e}"))
}

/// Progress bars: one line per blob in flight, one summary line.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    blobs: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Arc<Bars> {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new_spinner());
        total.set_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec}) {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        Arc::new(Bars { multi, total, blobs: Mutex::new(HashMap::new()) })
    }

    fn on(&self, p: &Progress) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::Started { descriptor } if descriptor.size() > 1 << 20 => {
                let bar = self.multi.add(ProgressBar::new(descriptor.size()));
                bar.set_style(
                    ProgressStyle::with_template("  {prefix} [{bar:30}] {bytes}/{total_bytes}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(short(descriptor));
                blobs.insert(descriptor.digest().to_string(), bar);
            }
            Progress::Bytes { descriptor, done, .. } => {
                if let Some(bar) = blobs.get(&descriptor.digest().to_string()) {
                    let delta = done.saturating_sub(bar.position());
                    bar.set_position(*done);
                    self.total.inc(delta);
                } else {
                    self.total.inc(0);
                }
            }
            Progress::Copied { descriptor } => {
                if let Some(bar) = blobs.remove(&descriptor.digest().to_string()) {
                    bar.finish_and_clear();
                } else {
                    self.total.inc(descriptor.size());
                }
                self.total.set_message(format!("copied {}", short(descriptor)));
            }
            Progress::Skipped { descriptor } => self.total.set_message(format!("exists {}", short(descriptor))),
            _ => {}
        }
    }
}

fn short(d: &Descriptor) -> String {
    let s = d.digest().to_string();
    s.chars().take(19).collect()
}

fn summary(r: &CopyReport) -> String {
    if r.copied == 0 {
        return format!(
            "nothing to copy: the destination already has all of it ({} objects, {} bytes skipped, 0 bytes transferred)",
            r.skipped, r.bytes_skipped
        );
    }
    let mounted = if r.blobs_mounted > 0 {
        format!(", {} blobs ({} bytes) mounted from the source repository", r.blobs_mounted, r.bytes_mounted)
    } else {
        String::new()
    };
    format!(
        "copied {} objects ({} blobs, {} manifests, {} bytes transferred{mounted}); skipped {} already present ({} bytes)",
        r.copied, r.blobs_copied, r.manifests_copied, r.bytes_copied, r.skipped, r.bytes_skipped
    )
}

pub async fn copy(a: CopyArgs) -> Result<i32> {
    let src = Endpoint::parse(&a.src)?;
    let dst = Endpoint::parse(&a.dst)?;
    let reference = src.reference().with_context(|| format!("{src} names no tag or digest to copy"))?;
    let opts = a.remote.options();
    let s = open(&src, &opts)?;
    let d = match (open(&dst, &opts)?, Endpoint::mount_source(&src, &dst)) {
        (Opened::Registry(r), Some(from)) => Opened::Registry(r.with_mount_from(Some(from))),
        (o, _) => o,
    };
    let root = s.target().resolve(&reference).await.with_context(|| format!("resolving {src}"))?;
    if let Endpoint::Registry(r) = &dst
        && let Some(want) = &r.digest
        && want.to_string() != root.digest().to_string()
    {
        bail!("{dst} names digest {want}, but {src} is {}", root.digest());
    }
    let bars = Bars::new();
    let b = bars.clone();
    let copy_opts = CopyOptions { concurrency: a.concurrency, progress: Some(Arc::new(move |p: &Progress| b.on(p))) };
    let report = if a.referrers {
        extended_copy(s.target(), d.target(), &root, &copy_opts).await?
    } else {
        copy_graph(s.target(), d.target(), &root, &copy_opts).await?
    };
    if let Some(tag) = dst.tag().or(src.tag()) {
        d.target().tag(&root, tag).await.with_context(|| format!("tagging {tag} at {dst}"))?;
    }
    bars.total.finish_and_clear();
    if a.json {
        println!("{}", serde_json::json!({"digest": root.digest().to_string(), "report": report}));
    } else {
        println!("{}", summary(&report));
        println!("{dst} is {}", root.digest());
    }
    Ok(0)
}

#[derive(serde::Serialize)]
struct Node {
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<HashMap<String, String>>,
    referrers: Vec<Node>,
}

/// Builds the referrer tree under `d` (cycles cannot happen: a referrer's digest covers
/// its subject's, but a depth bound guards against a misbehaving registry anyway).
async fn tree(t: &dyn GraphTarget, d: &Descriptor, filter: Option<&str>, depth: usize) -> Result<Node> {
    let mut referrers = Vec::new();
    if depth < 16 {
        let mut list = t.predecessors(d).await.with_context(|| format!("listing referrers of {}", d.digest()))?;
        if let Some(f) = filter {
            list.retain(|r| r.artifact_type().as_ref().is_some_and(|a| a.to_string() == f));
        }
        list.sort_by_key(|r| (r.artifact_type().as_ref().map(|a| a.to_string()), r.digest().to_string()));
        for r in &list {
            referrers.push(Box::pin(tree(t, r, None, depth + 1)).await?);
        }
    }
    Ok(Node {
        digest: d.digest().to_string(),
        media_type: d.media_type().to_string(),
        artifact_type: d.artifact_type().as_ref().map(|a| a.to_string()),
        size: d.size(),
        annotations: d.annotations().clone(),
        referrers,
    })
}

fn print_tree(n: &Node, prefix: &str, out: &mut String) {
    for (i, r) in n.referrers.iter().enumerate() {
        let last = i + 1 == n.referrers.len();
        let kind = r.artifact_type.as_deref().unwrap_or(&r.media_type);
        out.push_str(&format!("{prefix}{} {kind}  {}\n", if last { "└──" } else { "├──" }, r.digest));
        print_tree(r, &format!("{prefix}{}", if last { "    " } else { "│   " }), out);
    }
}

pub async fn discover(a: DiscoverArgs) -> Result<i32> {
    let e = Endpoint::parse(&a.reference)?;
    let reference = e.reference().with_context(|| format!("{e} names no tag or digest"))?;
    let o = open(&e, &a.remote.options())?;
    let root = o.target().resolve(&reference).await.with_context(|| format!("resolving {e}"))?;
    let t = tree(o.target(), &root, a.artifact_type.as_deref(), 0).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        let mut out = format!("{e}@{}\n", t.digest);
        if let Endpoint::Registry(r) = &e
            && r.digest.is_some()
        {
            out = format!("{e}\n");
        }
        print_tree(&t, "", &mut out);
        print!("{out}");
    }
    Ok(0)
}
