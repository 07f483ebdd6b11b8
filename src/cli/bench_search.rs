//! `berth bench-search`: indexing throughput and search latency of the catalog index over
//! synthetic plugin versions.
//!
//! By default the versions are generated in memory, deterministically (a seeded PRNG: N/5
//! plugins × 5 versions, words from a small vocabulary, categories, capabilities and
//! publishers from small sets, 20–80 SBOM components each out of ~2,000 crate-like names,
//! the common ones far more frequent, as in real dependency graphs), and indexed directly in
//! a shuffled order (so versions of one plugin land in different segments).
//!
//! With `--registry-dir DIR` they go through the registry instead, as the catalog sees them
//! in production: [`generate_synthetic`] writes them, signed, into the embedded store at DIR
//! (once: a marker file lets a re-run skip to the measurements), then the catalog index at
//! `DIR/index` is rebuilt from the store alone ([`Catalog::rebuild`]: publisher records, a
//! walk harvesting every version, commit) and its throughput reported. The queries then draw
//! their words, names, dependencies and filter values from a sample of the indexed documents,
//! since the generator's vocabulary is not the in-memory one.
//!
//! Either way a mix of queries is timed one at a time: single words, two words, typos,
//! prefixes, dependency names and empty-text browsing, a third of them with filters, nearly
//! all with `latest_only`. Nothing is timed while generating.

use crate::catalog::PluginVersion;
use crate::catalog::harvest::{HarvestSettings, Source, generate_synthetic};
use crate::catalog::index::{CatalogIndex, SearchQuery};
use crate::catalog::service::Catalog;
use crate::content::FsStore;
use crate::content::remote::RemoteOptions;
use crate::runner::resolve::Trust;
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchSearchArgs {
    /// Plugin versions to index.
    #[arg(long, default_value_t = 100_000)]
    pub versions: usize,
    /// Queries to time (after as many untimed warm-up queries, at most 200).
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    /// Index directory (default: in memory). Its index is cleared first.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the queries this many times and also report, per query, the fastest run: an
    /// estimate of the latency on an idle machine when other work competes for the cores.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Generate the versions, signed, into the embedded registry store at DIR (skipped when
    /// DIR already holds exactly `--versions` of them), rebuild the catalog index DIR/index
    /// from that store alone, and search it.
    #[arg(long, value_name = "DIR", conflicts_with = "dir")]
    pub registry_dir: Option<PathBuf>,
}

pub async fn run(a: BenchSearchArgs) -> Result<i32> {
    if let Some(dir) = &a.registry_dir {
        bench_registry(dir, a.versions, a.queries, a.rounds).await?;
        return Ok(0);
    }
    let index = match &a.dir {
        Some(dir) => CatalogIndex::open(dir)?,
        None => CatalogIndex::in_memory()?,
    };
    let report = bench(&index, a.versions, a.queries, a.rounds)?;
    write!(std::io::stdout().lock(), "{report}")?;
    Ok(0)
}

/// Seed of the query mix.
const QUERY_SEED: u64 = 0x005E_A2C4;
/// In a `--registry-dir`: the number of versions a finished generation wrote.
const GENERATED_MARKER: &str = "bench-search.generated";
/// In a `--registry-dir`: the key the versions are signed with, trusted as publisher,
/// verifier and root key (its public half beside it as `bench-search.pub`).
const KEY_FILE: &str = "bench-search.key";
/// Host named in the documents' references; nothing connects to it.
const SYNTHETIC_HOST: &str = "synthetic.berth.invalid";
/// Indexed documents the registry benchmark's query vocabulary is drawn from.
const SAMPLE: usize = 1000;

/// Generates, indexes (after clearing `index`) and times the query mix, `rounds` times.
pub fn bench(index: &CatalogIndex, versions: usize, queries: usize, rounds: usize) -> Result<BenchReport> {
    let docs = synthetic_versions(versions, 0x0BE7_5EA2);
    let warm_up = queries.min(200);
    let mix = query_mix(&Vocabulary::builtin(&docs), queries + warm_up, QUERY_SEED);

    let start = Instant::now();
    index.clear()?;
    for v in &docs {
        index.upsert(v)?;
    }
    index.commit()?;
    let indexing = start.elapsed();
    // A server does not keep in memory the documents it indexed; neither does the benchmark.
    let versions = docs.len();
    drop(docs);

    let search = time_queries(index, &mix, warm_up, rounds)?;
    Ok(BenchReport { versions, indexed: index.len()?, indexing, search })
}

/// `--registry-dir`: generates `versions` signed synthetic versions into the store at `dir`
/// (unless a previous run did), rebuilds `dir/index` from the store and times the query mix
/// over it, printing each figure as it is known (generating 100,000 takes minutes).
pub async fn bench_registry(dir: &Path, versions: usize, queries: usize, rounds: usize) -> Result<()> {
    let marker = dir.join(GENERATED_MARKER);
    let generated: Option<usize> = match std::fs::read_to_string(&marker) {
        Ok(s) => Some(s.trim().parse().with_context(|| format!("{}: not a number", marker.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| marker.display().to_string()),
    };
    let key_path = dir.join(KEY_FILE);
    if generated.is_some() {
        ensure!(
            key_path.exists(),
            "{}: missing; the generated versions cannot be trusted without it",
            key_path.display()
        );
    }
    let key = crate::sign::load_or_create_key(&key_path, b"").map_err(anyhow::Error::msg)?;
    match generated {
        Some(n) if n == versions => {
            println!("{}: {n} synthetic plugin versions generated by an earlier run, not generating", dir.display())
        }
        Some(n) => bail!(
            "{} holds {n} generated plugin versions, not {versions}: pass --versions {n} or an empty directory",
            dir.display()
        ),
        None => {
            let store = FsStore::open(dir)?;
            ensure!(
                store.repositories()?.is_empty(),
                "{} holds a registry bench-search did not finish generating: pass an empty directory",
                dir.display()
            );
            println!("generating {versions} synthetic plugin versions into {} …", dir.display());
            let start = Instant::now();
            let written = generate_synthetic(&store, versions, &key).await?;
            let took = start.elapsed();
            std::fs::write(&marker, format!("{}\n", written.len())).with_context(|| marker.display().to_string())?;
            println!(
                "generated {} plugin versions (image, plugin manifest, SBOM, signatures, verification report) \
                 in {:.1} s: {:.0} versions/s",
                written.len(),
                took.as_secs_f64(),
                written.len() as f64 / took.as_secs_f64()
            );
        }
    }

    // The catalog as `serve` keeps it, reading a store opened afresh: nothing cached from
    // the generator's writes.
    let k = key.public_key().clone();
    let settings = HarvestSettings {
        trust: Trust { publishers: vec![k.clone()], roots: vec![k.clone()], verifiers: vec![k] },
        first_party: vec!["p0".to_string()],
        registry: SYNTHETIC_HOST.to_string(),
        ..HarvestSettings::default()
    };
    let index = CatalogIndex::open(&dir.join("index"))?;
    let catalog = Catalog::new(index, settings, SYNTHETIC_HOST.to_string(), RemoteOptions::default());
    let source = Source::Embedded(FsStore::open(dir)?);
    let start = Instant::now();
    let walk = catalog.rebuild(&source).await?;
    let took = start.elapsed();
    println!(
        "rebuilt the catalog index from the store: {} plugin versions ({} repositories, {} skipped) in {:.1} s \
         (walk {:.1} s): {:.0} versions/s",
        walk.versions,
        walk.repositories,
        walk.skipped.len(),
        took.as_secs_f64(),
        walk.seconds,
        walk.versions as f64 / took.as_secs_f64()
    );
    for s in walk.skipped.iter().take(5) {
        println!("  skipped {s}");
    }
    let index = &catalog.index;
    println!("index: {} documents, {:.0} MiB on disk", index.len()?, index.size_on_disk() as f64 / (1 << 20) as f64);

    let sample = sample_documents(index, SAMPLE)?;
    let vocabulary = Vocabulary::from_documents(&sample)?;
    println!("queries drawn from {} indexed documents: {vocabulary}", sample.len());
    let warm_up = queries.min(200);
    let mix = query_mix(&vocabulary, queries + warm_up, QUERY_SEED);
    print!("{}", time_queries(index, &mix, warm_up, rounds)?);
    Ok(())
}

/// About `n` documents spread over the whole index: pages of browsing (official, verified,
/// installs, then plugin name) at evenly spaced offsets.
fn sample_documents(index: &CatalogIndex, n: usize) -> Result<Vec<PluginVersion>> {
    const PAGE: usize = 10;
    let total = index.len()? as usize;
    let pages = n.div_ceil(PAGE).max(1);
    let mut out = Vec::with_capacity(n);
    for p in 0..pages {
        let q = SearchQuery { offset: total * p / pages, limit: PAGE, ..SearchQuery::default() };
        out.extend(index.search(&q)?.hits.into_iter().map(|h| h.version));
    }
    ensure!(!out.is_empty(), "the index holds no plugin versions to search");
    Ok(out)
}

/// Times the first `warm_up` queries of `mix` untimed, then the rest, `rounds` times.
fn time_queries(
    index: &CatalogIndex,
    mix: &[(QueryKind, SearchQuery)],
    warm_up: usize,
    rounds: usize,
) -> Result<SearchReport> {
    let (warm_up, timed) = mix.split_at(warm_up.min(mix.len()));
    for (_, q) in warm_up {
        index.search(q)?;
    }
    let mut by_kind: BTreeMap<&'static str, (Vec<Duration>, usize)> = BTreeMap::new();
    let mut all = Vec::with_capacity(timed.len());
    let mut cpu = Vec::with_capacity(timed.len());
    let mut best = vec![Duration::MAX; timed.len()];
    let (mut matched, mut empty) = (0u64, 0usize);
    for round in 0..rounds.max(1) {
        for (i, (kind, q)) in timed.iter().enumerate() {
            let (start, start_cpu) = (Instant::now(), thread_cpu_time());
            let r = index.search(q)?;
            let took = start.elapsed();
            best[i] = best[i].min(took);
            if round == 0 {
                cpu.push(thread_cpu_time().saturating_sub(start_cpu));
                matched += r.total;
                // Matched nothing (an empty second page of a small result is not a miss).
                let missed = usize::from(r.total == 0);
                empty += missed;
                all.push(took);
                let of_kind = by_kind.entry(kind.name()).or_default();
                of_kind.0.push(took);
                of_kind.1 += missed;
            }
        }
    }
    Ok(SearchReport {
        queries: timed.len(),
        mean_total: matched as f64 / timed.len().max(1) as f64,
        empty,
        all: Latency::of(all),
        cpu: Latency::of(cpu),
        rounds: rounds.max(1),
        best: Latency::of(best),
        by_kind: by_kind.into_iter().map(|(k, (v, empty))| (k, Latency::of(v), empty)).collect(),
    })
}

pub struct BenchReport {
    pub versions: usize,
    pub indexed: u64,
    pub indexing: Duration,
    pub search: SearchReport,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "indexed {} plugin versions ({} committed) in {:.2} s: {:.0} docs/s",
            self.versions,
            self.indexed,
            self.indexing.as_secs_f64(),
            self.versions as f64 / self.indexing.as_secs_f64()
        )?;
        write!(f, "{}", self.search)
    }
}

/// Latencies of the timed queries.
pub struct SearchReport {
    pub queries: usize,
    /// Mean `total` of the results.
    pub mean_total: f64,
    /// Queries that matched nothing.
    pub empty: usize,
    pub all: Latency,
    /// CPU time of the searching thread: closer to the latency on an idle machine when
    /// other processes compete for the cores (they inflate `all` more than this).
    pub cpu: Latency,
    pub rounds: usize,
    /// Per query, the fastest of `rounds` runs.
    pub best: Latency,
    /// Per kind of query: latencies and how many matched nothing.
    pub by_kind: Vec<(&'static str, Latency, usize)>,
}

impl fmt::Display for SearchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} queries (mean total {:.0}, {} without hits), wall: {}",
            self.queries, self.mean_total, self.empty, self.all
        )?;
        writeln!(f, "  {:<11} {}", "(cpu time)", self.cpu)?;
        if self.rounds > 1 {
            writeln!(f, "  {:<11} {}", format!("(best of {})", self.rounds), self.best)?;
        }
        writeln!(f, "  by kind (wall):")?;
        for (kind, l, empty) in &self.by_kind {
            writeln!(f, "  {kind:<11} {l}  ({empty} without hits)")?;
        }
        Ok(())
    }
}

/// Latency percentiles of some queries.
pub struct Latency {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    fn of(mut d: Vec<Duration>) -> Latency {
        d.sort();
        let at = |p: f64| d.get(((d.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
        Latency { count: d.len(), p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "n={:<5} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            self.count,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Seeded draws over SplitMix64 (the same sequence on every platform and crate version).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        crate::catalog::harvest::splitmix64(&mut self.0)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `n` distinct items.
    fn some<T: Clone + PartialEq>(&mut self, items: &[T], n: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n * 3 {
            if out.len() == n {
                break;
            }
            let x = self.pick(items);
            if !out.contains(x) {
                out.push(x.clone());
            }
        }
        out
    }
}

const WORDS: &[&str] = &[
    "json",
    "transform",
    "http",
    "probe",
    "metrics",
    "exporter",
    "kafka",
    "slack",
    "notify",
    "webhook",
    "postgres",
    "redis",
    "cache",
    "oauth",
    "token",
    "csv",
    "parser",
    "filter",
    "router",
    "ratelimit",
    "logging",
    "tracing",
    "audit",
    "bucket",
    "sync",
    "backup",
    "image",
    "resize",
    "pdf",
    "render",
    "mail",
    "smtp",
    "queue",
    "retry",
    "scheduler",
    "dns",
    "certificate",
    "scanner",
    "secrets",
    "vault",
    "git",
    "deploy",
    "helm",
    "kubernetes",
    "inventory",
    "ticket",
    "jira",
    "github",
    "gitlab",
    "prometheus",
    "grafana",
    "alert",
    "incident",
    "pager",
    "translate",
    "search",
    "index",
    "graph",
    "schema",
    "validate",
    "convert",
    "compress",
    "archive",
    "encrypt",
    "signature",
    "ldap",
    "directory",
    "sftp",
    "storage",
    "object",
    "stream",
    "batch",
    "workflow",
    "approval",
    "billing",
    "invoice",
    "currency",
    "weather",
    "geocode",
    "map",
    "calendar",
    "reminder",
    "chat",
    "teams",
    "discord",
    "telegram",
    "sms",
    "voice",
    "ocr",
    "vision",
    "embedding",
    "vector",
    "summarize",
    "classify",
    "anomaly",
    "forecast",
    "report",
    "dashboard",
    "snapshot",
    "diff",
    "patch",
    "template",
    "markdown",
    "xml",
    "yaml",
    "toml",
    "protobuf",
    "grpc",
    "graphql",
    "websocket",
    "mqtt",
    "modbus",
    "opcua",
    "syslog",
];

const FILLER: &[&str] = &[
    "a",
    "the",
    "for",
    "and",
    "with",
    "fast",
    "simple",
    "reliable",
    "lightweight",
    "plugin",
    "that",
    "from",
    "into",
    "events",
    "data",
    "records",
    "service",
    "api",
    "requests",
    "support",
    "configurable",
    "secure",
    "local",
];

const CATEGORIES: &[&str] = &[
    "observability",
    "security",
    "data",
    "messaging",
    "integration",
    "devops",
    "storage",
    "ai",
    "finance",
    "productivity",
    "networking",
    "compliance",
    "iot",
    "media",
    "developer-tools",
    "identity",
];

const CAPABILITIES: &[&str] = &[
    "outbound_http",
    "secrets_read",
    "kv_store",
    "filesystem_read",
    "filesystem_write",
    "timers",
    "events_publish",
    "events_subscribe",
    "metrics_write",
    "logs_write",
];

const CRATE_BASES: &[&str] = &[
    "serde",
    "serde_json",
    "tokio",
    "hyper",
    "openssl",
    "rustls",
    "ring",
    "reqwest",
    "http",
    "bytes",
    "futures",
    "tracing",
    "log",
    "anyhow",
    "thiserror",
    "clap",
    "regex",
    "chrono",
    "time",
    "uuid",
    "rand",
    "base64",
    "hex",
    "sha2",
    "digest",
    "url",
    "percent-encoding",
    "idna",
    "libc",
    "once_cell",
    "lazy_static",
    "parking_lot",
    "smallvec",
    "itertools",
    "memchr",
    "aho-corasick",
    "indexmap",
    "hashbrown",
    "crossbeam",
    "rayon",
    "num-traits",
    "tower",
    "axum",
    "mio",
    "socket2",
    "h2",
    "prost",
    "tonic",
    "quick-xml",
    "toml",
    "serde_yaml",
    "csv",
    "flate2",
    "zstd",
    "brotli",
    "lz4",
    "image",
    "png",
    "jpeg-decoder",
    "encoding_rs",
    "unicode-normalization",
    "tempfile",
    "walkdir",
    "glob",
    "dirs",
    "nom",
    "pest",
    "syn",
    "quote",
    "proc-macro2",
    "cfg-if",
    "bitflags",
    "getrandom",
    "zeroize",
    "subtle",
    "aes",
    "chacha20poly1305",
    "rsa",
    "ed25519-dalek",
    "x509-parser",
    "webpki",
    "rusqlite",
    "postgres",
    "redis",
    "lapin",
    "rdkafka",
    "rumqttc",
    "tungstenite",
];

const CRATE_SUFFIXES: &[&str] = &[
    "core", "derive", "macros", "util", "sys", "impl", "codec", "types", "proto", "rt", "io", "fmt", "json", "compat",
    "shared", "internal", "build", "test", "cli", "lite", "ext", "traits", "async", "stream",
];

/// ~2,000 crate-like names, the real ones first (and drawn more often).
fn crate_names() -> Vec<String> {
    let mut names: Vec<String> = CRATE_BASES.iter().map(|s| s.to_string()).collect();
    for suffix in CRATE_SUFFIXES {
        for base in CRATE_BASES {
            let sep = if base.contains('_') { '_' } else { '-' };
            names.push(format!("{base}{sep}{suffix}"));
        }
    }
    names.truncate(2000);
    names
}

fn publishers(rng: &mut Rng) -> Vec<String> {
    const SYLLABLES: &[&str] =
        &["ac", "me", "lo", "ra", "ki", "to", "nu", "vex", "zen", "ori", "sol", "tek", "dyn", "io", "qua", "bit"];
    let mut out = vec!["berth".to_string()];
    let mut seen: HashSet<String> = out.iter().cloned().collect();
    while out.len() < 300 {
        let p: String = (0..rng.range(2, 3)).map(|_| *rng.pick(SYLLABLES)).collect();
        if seen.insert(p.clone()) {
            out.push(p);
        }
    }
    out
}

fn title(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// `count` plugin versions (5 per plugin), deterministic for a seed, in a shuffled order.
pub fn synthetic_versions(count: usize, seed: u64) -> Vec<PluginVersion> {
    let mut rng = Rng(seed);
    let publishers = publishers(&mut rng);
    let crates = crate_names();
    let mut repositories = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        // The first-party publisher owns ~3% of the plugins.
        let publisher = if rng.chance(0.03) { &publishers[0] } else { rng.pick(&publishers[1..]) };
        let words = rng.some(WORDS, 2);
        let name = words.join("-");
        let repository = format!("{publisher}/{name}");
        if !repositories.insert(repository.clone()) {
            continue;
        }
        let display_name = words.iter().map(|w| title(w)).collect::<Vec<_>>().join(" ");
        let n = rng.range(1, 3);
        let categories = rng.some(CATEGORIES, n).into_iter().map(str::to_string).collect::<Vec<_>>();
        let n = rng.range(0, 4);
        let capabilities = rng.some(CAPABILITIES, n).into_iter().map(str::to_string).collect::<Vec<_>>();
        let installs_base = rng.unit().powi(4) * 2e6;
        let (mut major, mut minor, mut patch) = (rng.below(2) as u64, rng.below(5) as u64, 0u64);
        for _ in 0..5 {
            if out.len() == count {
                break;
            }
            match rng.below(10) {
                0 => (major, minor, patch) = (major + 1, 0, 0),
                1..=4 => (minor, patch) = (minor + 1, 0),
                _ => patch += 1,
            }
            let version = if rng.chance(0.05) {
                format!("{major}.{minor}.{patch}-rc.{}", rng.range(1, 3))
            } else {
                format!("{major}.{minor}.{patch}")
            };
            let description: Vec<&str> = (0..rng.range(10, 25))
                .map(|i| {
                    if i < 2 {
                        words[i]
                    } else if rng.chance(0.5) {
                        rng.pick(WORDS)
                    } else {
                        rng.pick(FILLER)
                    }
                })
                .collect();
            let sbom_components: HashSet<String> = (0..rng.range(20, 80))
                .map(|_| crates[((rng.unit().powi(2)) * crates.len() as f64) as usize % crates.len()].clone())
                .collect();
            let mut sbom_components: Vec<String> = sbom_components.into_iter().collect();
            sbom_components.sort();
            let digest = format!("sha256:{:016x}{:016x}{:016x}{:016x}", rng.next(), rng.next(), rng.next(), rng.next());
            let verified = rng.chance(0.45);
            let lifecycle = match rng.below(100) {
                0..=84 => "active",
                85..=91 => "deprecated",
                92..=94 => "insecure",
                _ => "removed",
            };
            out.push(PluginVersion {
                repository: repository.clone(),
                publisher: publisher.clone(),
                name: name.clone(),
                display_name: display_name.clone(),
                description: format!("{}.", title(&description.join(" "))),
                version,
                reference: format!("registry.example/{repository}@{digest}"),
                digest,
                categories: categories.clone(),
                capabilities: capabilities.clone(),
                outbound_hosts: vec![format!("api.{}.example", words[0])],
                runner_api: rng.pick(&["1.0", "1.0", "1.0", "1.1", "^1.0"]).to_string(),
                min_core: rng.chance(0.5).then(|| format!("1.{}.0", rng.below(8))),
                min_runner: None,
                sbom_components,
                signed: rng.chance(0.9),
                verified,
                verification: if verified { "verified" } else { "none" }.to_string(),
                verified_at: verified.then(|| "2025-06-01T00:00:00Z".to_string()),
                failed_checks: Vec::new(),
                vulnerabilities: [0, 0, rng.below(3) as u64, rng.below(5) as u64, 0],
                lifecycle: lifecycle.to_string(),
                replacement: None,
                official: publisher == "berth",
                installs: (installs_base * (0.5 + rng.unit())) as u64,
                failures: 0,
                created: Some(format!("2025-{:02}-{:02}T12:00:00Z", rng.range(1, 12), rng.range(1, 28))),
            });
        }
    }
    // Fisher–Yates: versions of one plugin end up far apart, in different segments.
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

#[derive(Clone, Copy, Debug)]
pub enum QueryKind {
    Word,
    TwoWords,
    Typo,
    Prefix,
    Dependency,
    Browse,
}

impl QueryKind {
    pub fn name(self) -> &'static str {
        match self {
            QueryKind::Word => "word",
            QueryKind::TwoWords => "two-words",
            QueryKind::Typo => "typo",
            QueryKind::Prefix => "prefix",
            QueryKind::Dependency => "dependency",
            QueryKind::Browse => "browse",
        }
    }
}

/// One edit (deletion, substitution or transposition) inside `word`.
fn typo(rng: &mut Rng, word: &str) -> String {
    let mut c: Vec<char> = word.chars().collect();
    let i = rng.range(1, c.len() - 2);
    match rng.below(3) {
        0 => {
            c.remove(i);
        }
        1 => c[i] = if c[i] == 'x' { 'q' } else { 'x' },
        _ => c.swap(i, i + 1),
    }
    c.into_iter().collect()
}

/// What the query mix draws from.
pub struct Vocabulary {
    /// Words a user types: parts of names, words of display names and descriptions.
    words: Vec<String>,
    /// Of `words`, those of 5 or more characters (typos are made in these).
    long: Vec<String>,
    /// Two-word queries and names typed halfway take their words from one of these, as the
    /// words of unrelated plugins seldom meet in one. Empty: any two of `words` (the built-in
    /// vocabulary, where descriptions are made of those words).
    documents: Vec<DocumentWords>,
    /// SBOM component names many plugins share.
    common_deps: Vec<String>,
    /// SBOM component names, each as often as it occurs.
    deps: Vec<String>,
    categories: Vec<String>,
    capabilities: Vec<String>,
    /// Publishers, each as often as it occurs.
    publishers: Vec<String>,
}

/// The searchable words of one indexed document.
struct DocumentWords {
    words: Vec<String>,
    /// The plugin name: its first word, the rest after the first `-` (perhaps empty).
    head: String,
    rest: String,
}

/// Words too common to be searched for.
const STOP_WORDS: &[&str] = &["the", "and", "for", "from", "with", "that", "into"];

/// The lower-cased words of `text` a user would search for.
fn searchable_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_lowercase)
        .filter(|w| w.len() >= 3 && w.bytes().all(|b| b.is_ascii_alphabetic()) && !STOP_WORDS.contains(&w.as_str()))
}

impl Vocabulary {
    /// The vocabulary [`synthetic_versions`] writes with.
    fn builtin(versions: &[PluginVersion]) -> Vocabulary {
        let crates = crate_names();
        Vocabulary {
            words: WORDS.iter().map(|w| w.to_string()).collect(),
            long: WORDS.iter().filter(|w| w.len() >= 5).map(|w| w.to_string()).collect(),
            documents: Vec::new(),
            common_deps: crates[..CRATE_BASES.len()].to_vec(),
            deps: crates,
            categories: CATEGORIES.iter().map(|c| c.to_string()).collect(),
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            publishers: versions.iter().take(500).map(|v| v.publisher.clone()).collect(),
        }
    }

    /// The words, names, components and facet values of `sample`: queries that find what an
    /// index holding these documents holds.
    fn from_documents(sample: &[PluginVersion]) -> Result<Vocabulary> {
        let mut words = BTreeSet::new();
        let mut documents = Vec::with_capacity(sample.len());
        let (mut categories, mut capabilities) = (BTreeSet::new(), BTreeSet::new());
        let mut deps = Vec::new();
        let mut dep_counts: BTreeMap<&str, usize> = BTreeMap::new();
        for v in sample {
            let mine: BTreeSet<String> = searchable_words(&v.name)
                .chain(searchable_words(&v.display_name))
                .chain(searchable_words(&v.description))
                .collect();
            words.extend(mine.iter().cloned());
            let (head, rest) = v.name.split_once('-').unwrap_or((&v.name, ""));
            if !mine.is_empty() {
                let words = mine.into_iter().collect();
                documents.push(DocumentWords { words, head: head.to_string(), rest: rest.to_string() });
            }
            categories.extend(v.categories.iter().cloned());
            capabilities.extend(v.capabilities.iter().cloned());
            for c in &v.sbom_components {
                deps.push(c.clone());
                *dep_counts.entry(c).or_default() += 1;
            }
        }
        ensure!(!documents.is_empty(), "the sampled documents hold no words to search for");
        ensure!(!deps.is_empty(), "the sampled documents list no SBOM components");
        // Common: in a tenth of the documents or more.
        let common_deps: Vec<String> =
            dep_counts.iter().filter(|(_, n)| **n * 10 >= sample.len()).map(|(c, _)| c.to_string()).collect();
        let mut publishers: Vec<String> = sample.iter().map(|v| v.publisher.clone()).collect();
        publishers.sort();
        deps.sort();
        let words: Vec<String> = words.into_iter().collect();
        Ok(Vocabulary {
            long: words.iter().filter(|w| w.len() >= 5).cloned().collect(),
            words,
            documents,
            common_deps: if common_deps.is_empty() { deps.clone() } else { common_deps },
            deps,
            categories: categories.into_iter().collect(),
            capabilities: capabilities.into_iter().collect(),
            publishers,
        })
    }
}

impl fmt::Display for Vocabulary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let distinct = |v: &[String]| v.iter().collect::<HashSet<_>>().len();
        write!(
            f,
            "{} words ({} of 5+ letters), {} components ({} common), {} categories, {} capabilities, \
             {} publishers",
            self.words.len(),
            self.long.len(),
            distinct(&self.deps),
            self.common_deps.len(),
            self.categories.len(),
            self.capabilities.len(),
            distinct(&self.publishers)
        )
    }
}

/// `count` queries: the kinds in fixed proportions, a third with filters, 90% latest only.
pub fn query_mix(v: &Vocabulary, count: usize, seed: u64) -> Vec<(QueryKind, SearchQuery)> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let (kind, text) = match rng.below(20) {
                0..=4 => (QueryKind::Word, rng.pick(&v.words).clone()),
                5..=7 => {
                    let text = if v.documents.is_empty() {
                        format!("{} {}", rng.pick(&v.words), rng.pick(&v.words))
                    } else {
                        let d = rng.pick(&v.documents);
                        rng.some(&d.words, 2).join(" ")
                    };
                    (QueryKind::TwoWords, text)
                }
                8..=10 => {
                    let w = rng.pick(&v.long);
                    (QueryKind::Typo, typo(&mut rng, w))
                }
                11..=13 => {
                    // The first word of a plugin's name, and what follows it.
                    let (w, rest) = if v.documents.is_empty() {
                        (rng.pick(&v.words), None)
                    } else {
                        let d = rng.pick(&v.documents);
                        (&d.head, Some(&d.rest))
                    };
                    let text = if rng.chance(0.5) {
                        // `json-tr`: a name typed halfway.
                        let rest = rest.unwrap_or_else(|| rng.pick(&v.words));
                        let k = rng.range(2, 4);
                        if rest.is_empty() {
                            w.clone()
                        } else {
                            format!("{w}-{}", rest.chars().take(k).collect::<String>())
                        }
                    } else {
                        w.chars().take(rng.range(2, 5)).collect()
                    };
                    (QueryKind::Prefix, text)
                }
                14..=16 => {
                    // Half the time one of the common dependencies, else any.
                    let deps = if rng.chance(0.5) { &v.common_deps } else { &v.deps };
                    (QueryKind::Dependency, rng.pick(deps).clone())
                }
                _ => (QueryKind::Browse, String::new()),
            };
            let mut q = SearchQuery { text, latest_only: rng.chance(0.9), ..SearchQuery::default() };
            if rng.chance(1.0 / 3.0) {
                match rng.below(5) {
                    0 if !v.categories.is_empty() => {
                        let n = rng.range(1, 2);
                        q.category = rng.some(&v.categories, n);
                    }
                    1 if !v.capabilities.is_empty() => q.capability = vec![rng.pick(&v.capabilities).clone()],
                    2 => q.verified = Some(true),
                    3 if !v.publishers.is_empty() => q.publisher = vec![rng.pick(&v.publishers).clone()],
                    _ => q.core_version = Some(format!("1.{}.0", rng.below(8))),
                }
                if rng.chance(0.3) {
                    q.verified = Some(true);
                }
            }
            if rng.chance(0.1) {
                q.offset = 20;
            }
            (kind, q)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, description: &str, dependency: &str) -> PluginVersion {
        PluginVersion {
            repository: format!("p1/{name}"),
            publisher: "p1".to_string(),
            name: name.to_string(),
            display_name: name.replace('-', " "),
            description: description.to_string(),
            categories: vec!["data".to_string()],
            sbom_components: vec!["serde".to_string(), dependency.to_string()],
            ..PluginVersion::default()
        }
    }

    #[test]
    fn queries_drawn_from_documents_use_their_words_names_and_components() {
        let sample = [
            doc("fast-parser-1", "A fast parser for data: synthetic plugin 1.", "dep-1-40"),
            doc("calm-probe-2", "A calm probe from the storage team.", "dep-2-40"),
        ];
        let v = Vocabulary::from_documents(&sample).unwrap();
        assert!(v.words.iter().any(|w| w == "parser"));
        assert!(!v.words.iter().any(|w| w == "for" || w == "1" || w == "a"), "{:?}", v.words);
        assert_eq!(v.common_deps, ["dep-1-40", "dep-2-40", "serde"]);
        let words_of = |d: &PluginVersion| -> HashSet<String> {
            searchable_words(&d.name).chain(searchable_words(&d.description)).collect()
        };
        for (kind, q) in query_mix(&v, 400, 7) {
            let text = q.text.as_str();
            match kind {
                QueryKind::Word | QueryKind::Typo => assert!(!text.contains(' '), "{text}"),
                QueryKind::TwoWords => {
                    let one_doc = sample.iter().any(|d| text.split(' ').all(|w| words_of(d).contains(w)));
                    assert!(one_doc, "{text}: both words from one document");
                }
                QueryKind::Prefix => assert!(sample.iter().any(|d| d.name.starts_with(text)), "{text}"),
                QueryKind::Dependency => assert!(sample.iter().any(|d| d.sbom_components.iter().any(|c| c == text))),
                QueryKind::Browse => assert!(text.is_empty()),
            }
        }
    }
}
