//! The catalog's search index (issue 8): one tantivy document per plugin version. It is
//! derived data — everything in it comes from [`PluginVersion`]s that [`super::harvest`]
//! reads from the registry — so it can be thrown away and rebuilt at any time
//! ([`CatalogIndex::clear`], upserts, [`CatalogIndex::commit`]). This module owns the schema,
//! the index directory and its version marker, query construction, ranking, collapsing to
//! the newest version of each plugin, facet counts and highlights; it does not know where
//! documents come from.
//!
//! **Matching.** The query text is split on white space into words; every word must match
//! (AND across words), each in any of these ways (OR, scores summed):
//! - its tokens (lower-cased, ASCII-folded, split at punctuation) in `name` ×5,
//!   `display_name` ×3, `description`, categories and capabilities, `publisher` ×1.5, and
//!   SBOM component names ×0.5 (BM25 per field);
//! - the whole word equal to the plugin name (×6) or to an SBOM component name (×0.5), so
//!   `json-transform` and `serde_json` also match as written;
//! - typos: a token of 4 or more characters also matches the indexed tokens within
//!   Damerau–Levenshtein distance 1 (from 8 characters: 2), at a constant, lower score
//!   (name 2, display name 1.2, other fields 0.5, SBOM 0.3). One automaton per token serves
//!   every field, and its expansions skip the token itself (already scored exactly);
//! - prefixes: the last token of the last word (2 or more characters) as a prefix of name
//!   and display-name tokens (2.5, 1.5), and the whole last word as a prefix of the plugin
//!   name (3): `json-tr` finds `json-transform`, `trnsform` finds it as a typo.
//!
//! Filters (OR within a field, AND across fields) are zero-scored clauses of the same
//! boolean query. `removed` versions are skipped unless a lifecycle filter is given.
//!
//! **Ranking.** With text, the score is `relevance × (1 + bonus)`: 0.04 for an official
//! publisher, 0.02 for a verified version, up to 0.01 for installs (log-scaled, all of it
//! from a million). Equal relevance orders official, then verified, then installs; a
//! near-tie (within a few per cent) can tip the same way; a clearly better match is never
//! overturned. Exact ties then go by official, verified, installs, plugin name, newest
//! version. Without text: official, verified, installs, plugin name, newest version.
//!
//! **Newest version per plugin** (`latest_only`) is decided at query time, over the
//! filtered result: of the versions that match, the highest SemVer of each repository is
//! kept. A `core_version` filter thus yields the newest *compatible* version instead of
//! hiding the plugin, a text matching only an old version shows that version, and no
//! per-document flag has to be kept right across versions on upserts and removals. Totals,
//! facets and the page are computed over the collapsed result. To make that cheap, each
//! commit marks the newest live, not removed version of every repository: a marked match
//! is kept at once; other matches are only compared for the plugins whose marked version
//! did not match.
//!
//! **Speed.** Facets and the collapse need every match, not just the best ones, so the
//! search is one pass of our own over the matches rather than tantivy collectors. A table
//! per segment ([`SegmentTable`]), decoded from the fast fields once when a commit makes
//! the segment visible and reused while it lives (segments are immutable), holds what that
//! pass reads per document in one record: repository and facet values as dense global ids,
//! a SemVer sort key, the ranking bits. Per-query buffers are pooled. Over 100,000
//! versions a query takes 1–3 ms on two cores (`berth bench-search`).

use crate::catalog::PluginVersion;
use serde::{Deserialize, Serialize};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;
use tantivy::collector::DocSetCollector;
use tantivy::index::{IndexSettings, SegmentId};
use tantivy::query::{
    AllQuery, BitSetDocSet, BooleanQuery, BoostQuery, ConstScoreQuery, ConstScorer, DfaWrapper, EmptyScorer,
    EnableScoring, Explanation, FuzzyTermQuery, Occur, Query, RangeQuery, Scorer, TermQuery, TermSetQuery, Weight,
};
use tantivy::schema::document::{DeserializeError, DocumentDeserialize, DocumentDeserializer};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, Schema, TextFieldIndexing, TextOptions};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{
    BitSet, DocAddress, DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher, SegmentOrdinal,
    SegmentReader, TantivyDocument, Term,
};

/// Version of the schema below. Bump it whenever a field, an analyzer or what goes into a
/// field changes: [`CatalogIndex::open`] then starts from an empty index and the caller
/// rebuilds it from the registry. 2: documents carry reputation `failures`.
pub const INDEX_SCHEMA_VERSION: u32 = 2;

/// The index definition as recorded in the source tree's `index/schema.json`: the schema
/// version and tantivy's description of every field (a test keeps the file true).
pub fn definition() -> serde_json::Value {
    let (schema, _) = Fields::schema();
    serde_json::json!({
        "description": "The catalog search index: one tantivy document per plugin version. Written by \
            berth (src/catalog/index.rs); a test fails when this file and the code disagree.",
        "schema_version": INDEX_SCHEMA_VERSION,
        "analyzers": [TEXT_ANALYZER, KEYWORD_ANALYZER],
        "facets": FACETS,
        "fields": schema,
    })
}

/// The marker file recording [`INDEX_SCHEMA_VERSION`] next to tantivy's files.
const MARKER: &str = "berth-index.json";
const TEXT_ANALYZER: &str = "berth_text";
const KEYWORD_ANALYZER: &str = "berth_keyword";
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Memory for the writer's in-memory segments, shared by its threads.
const WRITER_MEMORY: usize = 96 << 20;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} holds files that are not a berth search index; refusing to clear it", .0.display())]
    NotAnIndex(PathBuf),
    #[error("stored document {0}: {1}")]
    Document(String, serde_json::Error),
    #[error("cannot index a plugin version without a digest ({0})")]
    NoDigest(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io { path: path.to_path_buf(), source }
}

/// A search over the catalog. Zero values mean the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    /// Free text; empty (or without any word) matches every version.
    pub text: String,
    pub category: Vec<String>,
    pub capability: Vec<String>,
    pub publisher: Vec<String>,
    pub verified: Option<bool>,
    /// Empty: everything except `removed`; removed versions appear only when asked for.
    pub lifecycle: Vec<String>,
    pub runner_api: Vec<String>,
    /// Only versions compatible with this core version (`min_core <= core_version`; no
    /// `min_core` is compatible with every core).
    pub core_version: Option<String>,
    /// Only the newest matching version of each plugin.
    pub latest_only: bool,
    pub offset: usize,
    /// 0 means 20; at most 100.
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchResults {
    /// Matching versions (after collapsing, with `latest_only`).
    pub total: u64,
    pub hits: Vec<Hit>,
    /// Counts over the whole filtered (and collapsed) result: field → value → count for
    /// `category`, `capability`, `publisher`, `verified` (`true`/`false`), `lifecycle` and
    /// `runner_api`.
    pub facets: BTreeMap<String, BTreeMap<String, u64>>,
    pub took_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// Relevance with the ranking bonus applied (0 when the query has no text).
    pub score: f32,
    pub version: PluginVersion,
    /// `name`, `display_name`, `description` → HTML with the matched words in `<b>…</b>`,
    /// everything else escaped; only fields with a match.
    pub highlights: BTreeMap<String, String>,
}

/// Facets by name: string fields of the schema, then `verified`.
const FACETS: [&str; 6] = ["category", "capability", "publisher", "lifecycle", "runner_api", "verified"];
const FACET_LIFECYCLE: usize = 3;

#[derive(Clone, Copy)]
struct Fields {
    digest: Field,
    repository: Field,
    version: Field,
    name: Field,
    name_kw: Field,
    display_name: Field,
    description: Field,
    tags: Field,
    publisher_text: Field,
    sbom: Field,
    sbom_kw: Field,
    category: Field,
    capability: Field,
    publisher: Field,
    lifecycle: Field,
    runner_api: Field,
    verified: Field,
    official: Field,
    installs: Field,
    min_core: Field,
    doc: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(TEXT_ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
        );
        let keyword = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(KEYWORD_ANALYZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
        let raw = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        );
        let facet = raw.clone().set_fast("raw");
        let fields = Fields {
            digest: b.add_text_field("digest", raw.clone()),
            repository: b.add_text_field("repository", facet.clone()),
            version: b.add_text_field("version", TextOptions::default().set_fast("raw")),
            name: b.add_text_field("name", text.clone()),
            name_kw: b.add_text_field("name_kw", keyword.clone()),
            display_name: b.add_text_field("display_name", text.clone()),
            description: b.add_text_field("description", text.clone()),
            tags: b.add_text_field("tags", text.clone()),
            publisher_text: b.add_text_field("publisher_text", text.clone()),
            sbom: b.add_text_field("sbom", text),
            sbom_kw: b.add_text_field("sbom_kw", keyword),
            category: b.add_text_field(FACETS[0], facet.clone()),
            capability: b.add_text_field(FACETS[1], facet.clone()),
            publisher: b.add_text_field(FACETS[2], facet.clone()),
            lifecycle: b.add_text_field(FACETS[3], facet.clone()),
            runner_api: b.add_text_field(FACETS[4], facet),
            verified: b.add_bool_field("verified", INDEXED | FAST),
            official: b.add_bool_field("official", FAST),
            installs: b.add_u64_field("installs", FAST),
            min_core: b.add_u64_field("min_core", INDEXED | FAST),
            doc: b.add_text_field("doc", STORED),
        };
        (b.build(), fields)
    }

    /// Exact token matches: field and boost.
    fn exact(&self) -> [(Field, Score); 6] {
        [
            (self.name, 5.0),
            (self.display_name, 3.0),
            (self.description, 1.5),
            (self.tags, 1.5),
            (self.publisher_text, 1.5),
            (self.sbom, 0.5),
        ]
    }

    /// Typo matches (constant score).
    fn fuzzy(&self) -> [(Field, Score); 6] {
        [
            (self.name, 2.0),
            (self.display_name, 1.2),
            (self.description, 0.5),
            (self.tags, 0.5),
            (self.publisher_text, 0.5),
            (self.sbom, 0.3),
        ]
    }

    /// Prefix matches of the last token (constant score).
    fn prefix(&self) -> [(Field, Score); 2] {
        [(self.name, 2.5), (self.display_name, 1.5)]
    }
}

fn index_settings() -> IndexSettings {
    // A hit reads one stored document: small blocks mean less to decompress per hit.
    IndexSettings { docstore_blocksize: 4096, ..IndexSettings::default() }
}

fn register_analyzers(index: &Index) {
    index.tokenizers().register(
        TEXT_ANALYZER,
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build(),
    );
    index.tokenizers().register(
        KEYWORD_ANALYZER,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(RemoveLongFilter::limit(200))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .build(),
    );
}

/// The catalog's search index. `Send + Sync`: share it behind an `Arc`; writes serialize on
/// the writer's lock, searches never wait for them.
pub struct CatalogIndex {
    index: Index,
    fields: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    /// What searches use: the searcher of the last commit and its segment tables.
    snapshot: RwLock<Arc<Snapshot>>,
    ids: Mutex<Ids>,
    scratch: Mutex<Vec<Scratch>>,
    automata: Mutex<AutomatonCache>,
    needs_rebuild: bool,
}

// Shared by the HTTP handlers (`Arc<CatalogIndex>` in blocking tasks).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<CatalogIndex>();
};

impl fmt::Debug for CatalogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogIndex").field("needs_rebuild", &self.needs_rebuild).finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    schema_version: u32,
}

/// The one stored field, read without building a whole tantivy document.
struct StoredJson(String);

impl DocumentDeserialize for StoredJson {
    fn deserialize<'de, D: DocumentDeserializer<'de>>(mut d: D) -> Result<Self, DeserializeError> {
        Ok(StoredJson(d.next_field::<String>()?.map(|(_, bytes)| bytes).unwrap_or_default()))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CatalogIndex {
    /// Opens (or creates) the index in `dir`. The schema version is recorded in
    /// `dir/berth-index.json`; when it is missing or different, or the index cannot be
    /// opened, the directory is cleared and a new index created: [`Self::needs_rebuild`]
    /// then says so. A directory holding other files is never cleared
    /// ([`IndexError::NotAnIndex`]).
    pub fn open(dir: &Path) -> Result<CatalogIndex, IndexError> {
        let (schema, fields) = Fields::schema();
        let marker = dir.join(MARKER);
        let recorded = std::fs::read(&marker)
            .ok()
            .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
            .map(|m| m.schema_version);
        if recorded == Some(INDEX_SCHEMA_VERSION)
            && let Ok(index) = Index::open_in_dir(dir)
            && index.schema() == schema
        {
            return CatalogIndex::new(index, fields, false);
        }
        clear_dir(dir)?;
        let index = Index::builder().schema(schema).settings(index_settings()).create_in_dir(dir)?;
        let tmp = dir.join(format!("{MARKER}.tmp"));
        let body = serde_json::to_vec(&Marker { schema_version: INDEX_SCHEMA_VERSION }).expect("marker serializes");
        std::fs::write(&tmp, body).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &marker).map_err(io_err(&marker))?;
        CatalogIndex::new(index, fields, true)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_memory() -> Result<CatalogIndex, IndexError> {
        let (schema, fields) = Fields::schema();
        CatalogIndex::new(Index::builder().schema(schema).settings(index_settings()).create_in_ram()?, fields, true)
    }

    fn new(index: Index, fields: Fields, needs_rebuild: bool) -> Result<CatalogIndex, IndexError> {
        register_analyzers(&index);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let writer = index.writer_with_num_threads(threads, WRITER_MEMORY)?;
        let reader: IndexReader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let mut ids = Ids::default();
        let snapshot = Snapshot::build(reader.searcher(), None, &mut ids)?;
        Ok(CatalogIndex {
            index,
            fields,
            writer: Mutex::new(writer),
            reader,
            snapshot: RwLock::new(Arc::new(snapshot)),
            ids: Mutex::new(ids),
            scratch: Mutex::new(Vec::new()),
            automata: Mutex::new(AutomatonCache::default()),
            needs_rebuild,
        })
    }

    /// True when [`Self::open`] found no usable index (new, or the schema changed): the
    /// caller should rebuild it from the registry.
    pub fn needs_rebuild(&self) -> bool {
        self.needs_rebuild
    }

    /// Adds the document for `v.digest`, replacing any document with that digest. Not
    /// visible until [`Self::commit`].
    pub fn upsert(&self, v: &PluginVersion) -> Result<(), IndexError> {
        if v.digest.is_empty() {
            return Err(IndexError::NoDigest(format!("{}:{}", v.repository, v.version)));
        }
        let doc = self.document(v)?;
        let writer = lock(&self.writer);
        writer.delete_term(Term::from_field_text(self.fields.digest, &v.digest));
        writer.add_document(doc)?;
        Ok(())
    }

    /// Removes the document for `digest` (nothing if there is none). Not visible until
    /// [`Self::commit`].
    pub fn remove(&self, digest: &str) -> Result<(), IndexError> {
        lock(&self.writer).delete_term(Term::from_field_text(self.fields.digest, digest));
        Ok(())
    }

    /// Removes every document, including ones upserted but not yet committed (a rebuild
    /// starts here). Not visible until [`Self::commit`].
    pub fn clear(&self) -> Result<(), IndexError> {
        lock(&self.writer).delete_query(Box::new(AllQuery))?;
        Ok(())
    }

    /// Makes every change so far visible to searches.
    pub fn commit(&self) -> Result<(), IndexError> {
        let mut writer = lock(&self.writer);
        writer.commit()?;
        // Still under the writer's lock, so snapshots are built one at a time, in order.
        self.refresh()
    }

    /// Reloads the searcher and builds tables for its new segments.
    fn refresh(&self) -> Result<(), IndexError> {
        self.reader.reload()?;
        let old = self.snapshot();
        let snapshot = Snapshot::build(self.reader.searcher(), Some(&old), &mut lock(&self.ids))?;
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        Ok(())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn document(&self, v: &PluginVersion) -> Result<TantivyDocument, IndexError> {
        let f = &self.fields;
        let mut d = TantivyDocument::new();
        d.add_text(f.digest, &v.digest);
        d.add_text(f.repository, &v.repository);
        d.add_text(f.version, &v.version);
        d.add_text(f.name, &v.name);
        d.add_text(f.name_kw, &v.name);
        d.add_text(f.display_name, &v.display_name);
        d.add_text(f.description, &v.description);
        d.add_text(f.publisher_text, &v.publisher);
        d.add_text(f.publisher, &v.publisher);
        for c in &v.categories {
            d.add_text(f.tags, c);
            d.add_text(f.category, c);
        }
        for c in &v.capabilities {
            d.add_text(f.tags, c);
            d.add_text(f.capability, c);
        }
        for s in &v.sbom_components {
            d.add_text(f.sbom, s);
            d.add_text(f.sbom_kw, s);
        }
        // A version without a lifecycle status is active.
        d.add_text(f.lifecycle, if v.lifecycle.is_empty() { "active" } else { &v.lifecycle });
        if !v.runner_api.is_empty() {
            d.add_text(f.runner_api, &v.runner_api);
        }
        d.add_bool(f.verified, v.verified);
        d.add_bool(f.official, v.official);
        d.add_u64(f.installs, v.installs);
        d.add_u64(f.min_core, v.min_core.as_deref().map_or(0, |c| core_key(c).unwrap_or(u64::MAX)));
        let json = serde_json::to_string(v).map_err(|e| IndexError::Document(v.digest.clone(), e))?;
        d.add_text(f.doc, json);
        Ok(d)
    }

    fn load(&self, searcher: &Searcher, addr: DocAddress) -> Result<PluginVersion, IndexError> {
        let StoredJson(json) = searcher.doc(addr)?;
        serde_json::from_str(&json).map_err(|e| IndexError::Document(format!("{addr:?}"), e))
    }

    fn load_all(&self, searcher: &Searcher, query: &dyn Query) -> Result<Vec<PluginVersion>, IndexError> {
        let mut addrs: Vec<DocAddress> = searcher.search(query, &DocSetCollector)?.into_iter().collect();
        addrs.sort();
        addrs.into_iter().map(|a| self.load(searcher, a)).collect()
    }

    /// Every version of one plugin (`publisher/name`), removed ones included, newest SemVer
    /// first (versions that are not SemVer last).
    pub fn versions(&self, repository: &str) -> Result<Vec<PluginVersion>, IndexError> {
        let snapshot = self.snapshot();
        let q = TermQuery::new(Term::from_field_text(self.fields.repository, repository), IndexRecordOption::Basic);
        let mut all = self.load_all(&snapshot.searcher, &q)?;
        all.sort_by_cached_key(|v| Reverse((semver::Version::parse(&v.version).ok(), v.version.clone())));
        Ok(all)
    }

    /// (repository, digest) of every version `publisher` has in the index, removed ones included.
    pub fn publisher_versions(&self, publisher: &str) -> Result<Vec<(String, String)>, IndexError> {
        let snapshot = self.snapshot();
        let q = TermQuery::new(Term::from_field_text(self.fields.publisher, publisher), IndexRecordOption::Basic);
        Ok(self.load_all(&snapshot.searcher, &q)?.into_iter().map(|v| (v.repository, v.digest)).collect())
    }

    /// One version by digest.
    pub fn get(&self, digest: &str) -> Result<Option<PluginVersion>, IndexError> {
        let snapshot = self.snapshot();
        let q = TermQuery::new(Term::from_field_text(self.fields.digest, digest), IndexRecordOption::Basic);
        Ok(self.load_all(&snapshot.searcher, &q)?.into_iter().next())
    }

    /// Committed documents (every version, removed ones included).
    pub fn len(&self) -> Result<u64, IndexError> {
        Ok(self.snapshot().searcher.num_docs())
    }

    /// True when no document is committed.
    pub fn is_empty(&self) -> Result<bool, IndexError> {
        Ok(self.len()? == 0)
    }

    /// Bytes in the index's files: its committed segments (without their footers) and
    /// tantivy's two meta files. Segments a writer is still producing are not counted, nor a
    /// file that vanishes while being measured.
    pub fn size_on_disk(&self) -> u64 {
        use tantivy::HasLen;
        use tantivy::directory::Directory;
        const META: [&str; 2] = ["meta.json", ".managed.json"];
        let dir = self.index.directory();
        let meta: u64 = META.iter().filter_map(|p| dir.atomic_read(Path::new(p)).ok()).map(|b| b.len() as u64).sum();
        let segments: u64 = dir
            .list_managed_files()
            .iter()
            .filter(|p| !META.iter().any(|m| p.as_os_str() == *m))
            // Only a complete file has the footer `open_read` checks for.
            .filter_map(|p| dir.open_read(p).ok())
            .map(|f| f.len() as u64)
            .sum();
        meta + segments
    }

    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults, IndexError> {
        let start = Instant::now();
        let limit = match q.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let words = self.words(&q.text);
        let text = self.text_query(&words)?;
        let scored = text.is_some();
        let query = self.filtered(text, q)?;
        let snapshot = self.snapshot();
        let plan = Plan {
            scored,
            latest_only: q.latest_only,
            hide_removed: q.lifecycle.is_empty(),
            keep: q.offset.saturating_add(limit),
            removed_possible: q.lifecycle.iter().any(|l| l == "removed"),
        };
        let page = self.collect(&snapshot, query.as_ref(), plan)?;
        let highlighter = Highlighter::new(&words);
        let mut analyzer = self.analyzer(TEXT_ANALYZER);
        let mut hits = Vec::with_capacity(limit);
        for e in page.top.iter().skip(q.offset).take(limit) {
            let version = self.load(&snapshot.searcher, DocAddress::new(e.seg, e.doc))?;
            let highlights = highlighter.highlights(&mut analyzer, &version);
            hits.push(Hit { score: e.score, version, highlights });
        }
        Ok(SearchResults {
            total: page.total,
            hits,
            facets: page.facets,
            took_us: start.elapsed().as_micros().try_into().unwrap_or(u64::MAX),
        })
    }

    fn analyzer(&self, name: &str) -> TextAnalyzer {
        self.index.tokenizers().get(name).expect("analyzers are registered when the index is opened")
    }

    /// The query's words, each with its whole form (for the keyword fields) and its tokens.
    fn words(&self, text: &str) -> Vec<Word> {
        let mut keyword = self.analyzer(KEYWORD_ANALYZER);
        let mut tokenizer = self.analyzer(TEXT_ANALYZER);
        let mut words: Vec<Word> = text
            .split_whitespace()
            .filter_map(|w| {
                let whole = analyze(&mut keyword, w).into_iter().next()?;
                let tokens = analyze(&mut tokenizer, w);
                (!tokens.is_empty()).then_some(Word { whole, tokens, last: false })
            })
            .collect();
        if let Some(w) = words.last_mut() {
            w.last = true;
        }
        words
    }

    fn text_query(&self, words: &[Word]) -> Result<Option<Box<dyn Query>>, IndexError> {
        let f = &self.fields;
        let mut all: Vec<Box<dyn Query>> = Vec::with_capacity(words.len());
        for w in words {
            let mut any: Vec<Box<dyn Query>> =
                vec![boost(term(f.name_kw, &w.whole), 6.0), boost(term(f.sbom_kw, &w.whole), 0.5)];
            if w.last && prefix_worthy(&w.whole) {
                let prefix = AutomatonCache::get(&self.automata, &w.whole, 0, true)?;
                any.extend(expansions(&prefix, &w.whole, &[(f.name_kw, 3.0)]));
            }
            if let [token] = w.tokens.as_slice() {
                any.extend(self.token_clauses(token, w.last)?);
            } else {
                let n = w.tokens.len();
                let each = w
                    .tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Ok(union(self.token_clauses(t, w.last && i + 1 == n)?)))
                    .collect::<Result<Vec<_>, IndexError>>()?;
                any.push(Box::new(BooleanQuery::intersection(each)));
            }
            all.push(union(any));
        }
        Ok(match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Box::new(BooleanQuery::intersection(all))),
        })
    }

    /// Ways one token matches: exactly per field, with typos, and as a prefix.
    fn token_clauses(&self, token: &str, prefix: bool) -> Result<Vec<Box<dyn Query>>, IndexError> {
        let f = &self.fields;
        let mut clauses: Vec<Box<dyn Query>> =
            f.exact().iter().map(|&(field, b)| boost(term(field, token), b)).collect();
        if let Some(distance) = typo_distance(token) {
            let typos = AutomatonCache::get(&self.automata, token, distance, false)?;
            clauses.extend(expansions(&typos, token, &f.fuzzy()));
        }
        if prefix && prefix_worthy(token) {
            let prefixes = AutomatonCache::get(&self.automata, token, 0, true)?;
            clauses.extend(expansions(&prefixes, token, &f.prefix()));
        }
        Ok(clauses)
    }

    /// The text query (or every document) with the filters as zero-scored clauses.
    fn filtered(&self, text: Option<Box<dyn Query>>, q: &SearchQuery) -> Result<Box<dyn Query>, IndexError> {
        let f = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(text) = text {
            clauses.push((Occur::Must, text));
        }
        let mut filter = |q: Box<dyn Query>| clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(q, 0.0))));
        for (field, values) in [
            (f.category, &q.category),
            (f.capability, &q.capability),
            (f.publisher, &q.publisher),
            (f.lifecycle, &q.lifecycle),
            (f.runner_api, &q.runner_api),
        ] {
            if !values.is_empty() {
                filter(Box::new(TermSetQuery::new(values.iter().map(|v| Term::from_field_text(field, v)))));
            }
        }
        if let Some(v) = q.verified {
            filter(Box::new(TermQuery::new(Term::from_field_bool(f.verified, v), IndexRecordOption::Basic)));
        }
        if let Some(core) = &q.core_version {
            let key = core_key(core)
                .ok_or_else(|| IndexError::InvalidQuery(format!("core_version {core:?} is not a SemVer version")))?;
            filter(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_u64(f.min_core, 0)),
                Bound::Included(Term::from_field_u64(f.min_core, key)),
            )));
        }
        if !clauses.iter().any(|(o, _)| *o == Occur::Must) {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }
}

/// Removes the index in `dir` (or creates `dir`), refusing to touch a directory that holds
/// anything but an index.
fn clear_dir(dir: &Path) -> Result<(), IndexError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let names: Vec<String> = entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(io_err(dir))?;
            let ours = names.is_empty() || names.iter().any(|n| n == MARKER || n == "meta.json");
            if !ours {
                return Err(IndexError::NotAnIndex(dir.to_path_buf()));
            }
            std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

fn term(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::WithFreqs))
}

fn boost(q: Box<dyn Query>, b: Score) -> Box<dyn Query> {
    Box::new(BoostQuery::new(q, b))
}

fn union(qs: Vec<Box<dyn Query>>) -> Box<dyn Query> {
    Box::new(BooleanQuery::union(qs))
}

/// Levenshtein automata by (text, distance, prefix). Building one takes 10 µs (a prefix)
/// to 250 µs (distance 2) and 20–350 KB, and the same words come back again and again
/// (search as you type, popular searches): the last [`AUTOMATA_KEPT`] are kept.
#[derive(Default)]
struct AutomatonCache {
    built: HashMap<(String, u8, bool), Arc<DfaWrapper>>,
    order: VecDeque<(String, u8, bool)>,
}

const AUTOMATA_KEPT: usize = 64;

impl AutomatonCache {
    /// A Levenshtein automaton for `text` (a prefix automaton with `prefix`).
    fn get(
        cache: &Mutex<AutomatonCache>,
        text: &str,
        distance: u8,
        prefix: bool,
    ) -> Result<Arc<DfaWrapper>, IndexError> {
        let key = (text.to_string(), distance, prefix);
        if let Some(a) = lock(cache).built.get(&key) {
            return Ok(Arc::clone(a));
        }
        // The field does not matter: only the text goes into the automaton.
        let t = Term::from_field_text(Field::from_field_id(0), text);
        let q =
            if prefix { FuzzyTermQuery::new_prefix(t, distance, true) } else { FuzzyTermQuery::new(t, distance, true) };
        let a = Arc::new(q.automaton()?);
        let mut c = lock(cache);
        if c.built.insert(key.clone(), Arc::clone(&a)).is_none() {
            c.order.push_back(key);
            while c.order.len() > AUTOMATA_KEPT {
                let oldest = c.order.pop_front().expect("not empty");
                c.built.remove(&oldest);
            }
        }
        Ok(a)
    }
}

/// The expansions of `exact` by `automaton` in each of `fields`, boosted.
fn expansions(automaton: &Arc<DfaWrapper>, exact: &str, fields: &[(Field, Score)]) -> Vec<Box<dyn Query>> {
    fields
        .iter()
        .map(|&(field, b)| {
            boost(Box::new(ExpansionQuery { field, automaton: Arc::clone(automaton), exact: exact.to_string() }), b)
        })
        .collect()
}

/// Edits allowed in a token: none below 4 characters, 1 up to 7, 2 from 8.
fn typo_distance(token: &str) -> Option<u8> {
    match token.chars().count() {
        0..4 => None,
        4..8 => Some(1),
        _ => Some(2),
    }
}

/// A prefix of one character would match a large part of the dictionary for little use.
fn prefix_worthy(text: &str) -> bool {
    text.chars().count() >= 2
}

/// The terms of one field that an automaton (typos, or a prefix) accepts, except the
/// query's own token, which its exact clause already scores: a constant score per document.
/// Several of these share one automaton, so a token costs one automaton whatever the
/// number of fields searched; skipping the exact term keeps a frequent word from being
/// matched twice over, and a field without any expansion costs nothing.
#[derive(Clone)]
struct ExpansionQuery {
    field: Field,
    automaton: Arc<DfaWrapper>,
    exact: String,
}

impl fmt::Debug for ExpansionQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpansionQuery").field("field", &self.field).field("exact", &self.exact).finish_non_exhaustive()
    }
}

impl Query for ExpansionQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for ExpansionQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inverted = reader.inverted_index(self.field)?;
        let mut terms = inverted.terms().search(&*self.automaton).into_stream()?;
        let mut docs: Option<BitSet> = None;
        while terms.advance() {
            if terms.key() == self.exact.as_bytes() {
                continue;
            }
            let docs = docs.get_or_insert_with(|| BitSet::with_max_value(reader.max_doc()));
            let mut postings = inverted.read_block_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
            while !postings.docs().is_empty() {
                for &d in postings.docs() {
                    docs.insert(d);
                }
                postings.advance();
            }
        }
        Ok(match docs {
            Some(docs) => Box::new(ConstScorer::new(BitSetDocSet::from(docs), boost)),
            None => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) == doc {
            Ok(Explanation::new("ExpansionQuery", scorer.score()))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!("document {doc} does not match")))
        }
    }
}

struct Word {
    /// The whole word, lower-cased (`json-tr`, `serde_json`).
    whole: String,
    /// Its tokens (`json`, `tr`).
    tokens: Vec<String>,
    last: bool,
}

/// A SemVer-ish core version as an order-preserving key: `1.2` and `1.2.0` are the same;
/// a pre-release sorts below its release, but pre-releases of one version are not told
/// apart (`1.2.0-alpha` and `1.2.0-beta` compare equal).
fn core_key(text: &str) -> Option<u64> {
    let text = text.trim().trim_start_matches('v');
    let v = semver::Version::parse(text)
        .or_else(|_| semver::Version::parse(&format!("{text}.0")))
        .or_else(|_| semver::Version::parse(&format!("{text}.0.0")))
        .ok()?;
    Some(version_key(&v) >> 1)
}

/// Order-preserving coarse key of a version (major, minor, patch saturated at 2^20, a
/// release above its pre-releases; the lowest bit set so any version sorts above "not
/// SemVer", 0). Equal keys must be told apart by comparing the versions themselves.
fn version_key(v: &semver::Version) -> u64 {
    const MAX: u64 = (1 << 20) - 1;
    (v.major.min(MAX) << 43)
        | (v.minor.min(MAX) << 23)
        | (v.patch.min(MAX) << 3)
        | (u64::from(v.pre.is_empty()) << 1)
        | 1
}

/// Dense ids shared by every segment, never reused: repositories (for collapsing to the
/// newest version and for the name order) and facet values (so that counting them is one
/// array increment).
#[derive(Default)]
struct Ids {
    repos: Interner<String>,
    /// (index in [`FACETS`], value).
    facet_values: Interner<(usize, String)>,
}

struct Interner<K> {
    ids: HashMap<K, u32>,
    keys: Vec<K>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner { ids: HashMap::new(), keys: Vec::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    fn id(&mut self, key: K) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = u32::try_from(self.keys.len()).expect("fewer than 2^32 distinct values");
        self.ids.insert(key.clone(), id);
        self.keys.push(key);
        id
    }
}

impl Interner<String> {
    /// Repository id → its rank by plugin name, then repository.
    fn order(&self) -> Vec<u32> {
        let name = |r: &str| r.rsplit_once('/').map_or(r, |(_, n)| n).to_string();
        let mut ids: Vec<u32> = (0..self.keys.len() as u32).collect();
        ids.sort_by_cached_key(|&i| (name(&self.keys[i as usize]), self.keys[i as usize].clone()));
        let mut order = vec![0; ids.len()];
        for (rank, id) in ids.into_iter().enumerate() {
            order[id as usize] = rank as u32;
        }
        order
    }
}

const NONE: u32 = u32::MAX;
const OFFICIAL_BIT: u64 = 1 << 63;
const VERIFIED_BIT: u64 = 1 << 62;

/// One segment's fast fields decoded into arrays indexed by document.
struct SegmentTable {
    id: SegmentId,
    /// What a search reads about each matching document, in one place (one cache line
    /// rather than one per column when matches are sparse).
    docs: Vec<DocInfo>,
    /// Facet value ids ([`Ids`]) of the documents, each document's together.
    facet_ids: Vec<u32>,
    /// Local ordinal of the version string, into `versions` (read only on equal keys).
    ver_ord: Vec<u32>,
    versions: Vec<Option<semver::Version>>,
}

#[derive(Clone, Copy)]
struct DocInfo {
    /// [`version_key`] of the version (0: not SemVer).
    ver_key: u64,
    /// Official and verified bits, then installs: the tie-break order.
    rank: u64,
    /// Repository id ([`Ids`]; `NONE`: missing).
    repo: u32,
    /// Multiplier of relevance (1 + bonus).
    bonus: f32,
    /// This document's facet values are `facet_ids[facets..facets + facet_count]`.
    facets: u32,
    facet_count: u32,
    /// Lifecycle `removed`.
    removed: bool,
}

/// The strings of a dictionary-encoded column, by ordinal.
fn dictionary(col: &tantivy::columnar::StrColumn) -> Result<Vec<String>, IndexError> {
    let mut out = Vec::with_capacity(col.num_terms());
    let mut stream = col.dictionary().stream().map_err(tantivy::TantivyError::from)?;
    while stream.advance() {
        out.push(String::from_utf8_lossy(stream.key()).into_owned());
    }
    Ok(out)
}

impl SegmentTable {
    fn build(segment: &SegmentReader, ids: &mut Ids) -> Result<SegmentTable, IndexError> {
        let max_doc = segment.max_doc();
        let n = max_doc as usize;
        let ff = segment.fast_fields();
        let first = |col: &Option<tantivy::columnar::StrColumn>, doc: DocId| {
            col.as_ref().and_then(|c| c.term_ords(doc).next()).map_or(NONE, |o| o as u32)
        };

        let repo_col = ff.str("repository")?;
        let repo_id: Vec<u32> = match &repo_col {
            Some(c) => dictionary(c)?.into_iter().map(|r| ids.repos.id(r)).collect(),
            None => Vec::new(),
        };

        let version_col = ff.str("version")?;
        let versions: Vec<Option<semver::Version>> = match &version_col {
            Some(c) => dictionary(c)?.iter().map(|v| semver::Version::parse(v).ok()).collect(),
            None => Vec::new(),
        };
        let ver_ord: Vec<u32> = (0..max_doc).map(|d| first(&version_col, d)).collect();

        // Facets: each column's ordinals mapped to global ids.
        let mut columns = Vec::with_capacity(FACETS.len() - 1);
        for (f, name) in FACETS.iter().enumerate().take(FACETS.len() - 1) {
            let col = ff.str(name)?;
            let global: Vec<u32> = match &col {
                Some(c) => dictionary(c)?.into_iter().map(|v| ids.facet_values.id((f, v))).collect(),
                None => Vec::new(),
            };
            columns.push((col, global));
        }
        let removed_id = ids.facet_values.id((FACET_LIFECYCLE, "removed".to_string()));
        let verified_ids = [false, true].map(|v| ids.facet_values.id((FACETS.len() - 1, v.to_string())));

        let official = ff.bool("official")?;
        let verified = ff.bool("verified")?;
        let installs = ff.u64("installs")?;
        let mut docs = Vec::with_capacity(n);
        let mut facet_ids = Vec::with_capacity(n * 8);
        for d in 0..max_doc {
            let (o, v, i) = (
                official.first(d).unwrap_or(false),
                verified.first(d).unwrap_or(false),
                installs.first(d).unwrap_or(0),
            );
            let popularity = ((i as f64 + 1.0).log10() / 6.0).min(1.0) as f32;
            let start = facet_ids.len();
            for (col, global) in &columns {
                if let Some(c) = col {
                    facet_ids.extend(c.term_ords(d).map(|o| global[o as usize]));
                }
            }
            facet_ids.push(verified_ids[usize::from(v)]);
            facet_ids[start..].sort_unstable();
            let mut end = start;
            for i in start..facet_ids.len() {
                if i == start || facet_ids[i] != facet_ids[end - 1] {
                    facet_ids[end] = facet_ids[i];
                    end += 1;
                }
            }
            facet_ids.truncate(end);
            docs.push(DocInfo {
                ver_key: versions.get(ver_ord[d as usize] as usize).and_then(Option::as_ref).map_or(0, version_key),
                rank: if o { OFFICIAL_BIT } else { 0 } | if v { VERIFIED_BIT } else { 0 } | i.min(VERIFIED_BIT - 1),
                repo: repo_id.get(first(&repo_col, d) as usize).copied().unwrap_or(NONE),
                bonus: 1.0 + 0.04 * f32::from(u8::from(o)) + 0.02 * f32::from(u8::from(v)) + 0.01 * popularity,
                facets: start as u32,
                facet_count: (end - start) as u32,
                removed: facet_ids[start..].contains(&removed_id),
            });
        }

        Ok(SegmentTable { id: segment.segment_id(), docs, facet_ids, ver_ord, versions })
    }

    fn version(&self, doc: DocId) -> Option<&semver::Version> {
        self.versions.get(self.ver_ord[doc as usize] as usize).and_then(Option::as_ref)
    }

    fn facets_of(&self, info: &DocInfo) -> &[u32] {
        &self.facet_ids[info.facets as usize..(info.facets + info.facet_count) as usize]
    }

    /// Document `doc` as a candidate hit; `score` is `None` without text.
    fn entry(&self, order: &[u32], seg: SegmentOrdinal, doc: DocId, score: Option<Score>) -> Entry {
        let info = &self.docs[doc as usize];
        Entry {
            score: score.map_or(0.0, |s| s * info.bonus),
            rank: info.rank,
            order: order.get(info.repo as usize).copied().unwrap_or(NONE),
            repo: info.repo,
            ver: info.ver_key,
            seg,
            doc,
        }
    }
}

/// The searcher of one commit with the tables of its segments (by segment ordinal).
struct Snapshot {
    searcher: Searcher,
    tables: Vec<Arc<SegmentTable>>,
    /// Repository id → rank by plugin name.
    order: Arc<Vec<u32>>,
    /// Facet value id → (index in [`FACETS`], value).
    facet_values: Arc<Vec<(usize, String)>>,
    /// Per segment, one bit per document: the newest live, not removed version of its
    /// repository. When such a version matches a query it is the one `latest_only` keeps,
    /// without comparing it to anything: only plugins whose newest version does not match
    /// need their matching versions compared.
    newest: Vec<Vec<u64>>,
}

fn bit(bits: &[u64], i: u32) -> bool {
    bits[i as usize / 64] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: u32) {
    bits[i as usize / 64] |= 1 << (i % 64);
}

impl Snapshot {
    /// Tables for `searcher`'s segments, reusing those of `old` for segments it already had.
    fn build(searcher: Searcher, old: Option<&Snapshot>, ids: &mut Ids) -> Result<Snapshot, IndexError> {
        let mut tables = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            let id = segment.segment_id();
            let table = match old.and_then(|o| o.tables.iter().find(|t| t.id == id)) {
                Some(t) => Arc::clone(t),
                None => Arc::new(SegmentTable::build(segment, ids)?),
            };
            tables.push(table);
        }
        let order = match old {
            Some(o) if o.order.len() == ids.repos.keys.len() => Arc::clone(&o.order),
            _ => Arc::new(ids.repos.order()),
        };
        let facet_values = match old {
            Some(o) if o.facet_values.len() == ids.facet_values.keys.len() => Arc::clone(&o.facet_values),
            _ => Arc::new(ids.facet_values.keys.clone()),
        };
        // Deletions change with every commit, so this is redone each time (a few ms per
        // 100,000 versions).
        let mut best: Vec<(u64, u32, DocId)> = vec![(0, NONE, 0); ids.repos.keys.len()];
        for (seg, (t, reader)) in tables.iter().zip(searcher.segment_readers()).enumerate() {
            let alive = reader.alive_bitset();
            for doc in 0..reader.max_doc() {
                let info = &t.docs[doc as usize];
                if info.repo == NONE || info.removed || alive.is_some_and(|a| !a.is_alive(doc)) {
                    continue;
                }
                let (ver, bseg, bdoc) = &mut best[info.repo as usize];
                let key = info.ver_key;
                let newer = *bseg == NONE
                    || key > *ver
                    || (key == *ver && t.version(doc) > tables[*bseg as usize].version(*bdoc));
                if newer {
                    (*ver, *bseg, *bdoc) = (key, seg as u32, doc);
                }
            }
        }
        let mut newest: Vec<Vec<u64>> = tables.iter().map(|t| vec![0; t.docs.len().div_ceil(64)]).collect();
        for (_, seg, doc) in best {
            if seg != NONE {
                set_bit(&mut newest[seg as usize], doc);
            }
        }
        Ok(Snapshot { searcher, tables, order, facet_values, newest })
    }
}

/// One candidate hit, comparable across segments.
#[derive(Clone, Copy, Debug)]
struct Entry {
    score: Score,
    rank: u64,
    /// Rank of the plugin name (lower first).
    order: u32,
    repo: u32,
    ver: u64,
    seg: SegmentOrdinal,
    doc: DocId,
}

/// `Greater`: `a` comes first.
fn precedes(a: &Entry, b: &Entry) -> Ordering {
    a.score
        .total_cmp(&b.score)
        .then(a.rank.cmp(&b.rank))
        .then(b.order.cmp(&a.order))
        .then(a.ver.cmp(&b.ver))
        .then(b.seg.cmp(&a.seg))
        .then(b.doc.cmp(&a.doc))
}

struct Ranked(Entry);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        precedes(&self.0, &other.0)
    }
}

/// The best `keep` entries seen.
struct TopK {
    keep: usize,
    /// Worst on top.
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl TopK {
    fn new(keep: usize) -> TopK {
        TopK { keep, heap: BinaryHeap::new() }
    }

    fn push(&mut self, e: Entry) {
        if self.heap.len() < self.keep {
            self.heap.push(Reverse(Ranked(e)));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && precedes(&e, &worst.0.0) == Ordering::Greater
        {
            *worst = Reverse(Ranked(e));
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Entry> {
        self.heap.into_sorted_vec().into_iter().map(|r| r.0.0).collect()
    }
}

/// What a search collects, besides the query.
#[derive(Clone, Copy)]
struct Plan {
    scored: bool,
    latest_only: bool,
    /// Skip `removed` versions (checked here rather than as a clause of the query: a
    /// table lookup is cheaper than excluding a posting list from every match).
    hide_removed: bool,
    /// `offset + limit`.
    keep: usize,
    /// The query may match removed versions (so [`Snapshot::newest`] does not apply).
    removed_possible: bool,
}

struct Page {
    total: u64,
    /// Best first.
    top: Vec<Entry>,
    facets: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Working memory of one search, kept for the next one: allocating and zeroing a
/// megabyte per query costs more than the counting it serves. Everything is left zeroed
/// (or `NONE`, or empty) after use.
#[derive(Default)]
struct Scratch {
    /// By facet value id.
    counts: Vec<u64>,
    /// `latest_only`: repositories whose newest version matched, one bit each.
    covered: Vec<u64>,
    /// `latest_only`: matches that are not the newest version of their repository
    /// (repository, segment, document, score), to compare once the scan is over.
    older: Vec<(u32, SegmentOrdinal, DocId, Score)>,
    /// Repository id → index in `best` (`NONE`: not seen yet).
    slot: Vec<u32>,
    best: Vec<Entry>,
}

impl Scratch {
    fn fit(&mut self, snapshot: &Snapshot) {
        self.counts.resize(snapshot.facet_values.len(), 0);
        let repos = snapshot.order.len();
        self.covered.resize(repos.div_ceil(64), 0);
        if self.slot.len() < repos {
            self.slot.resize(repos, NONE);
        }
    }

    fn tally(&mut self, t: &SegmentTable, doc: DocId) {
        for &v in t.facets_of(&t.docs[doc as usize]) {
            self.counts[v as usize] += 1;
        }
    }

    /// Keeps `e` if it is the newest version of its repository offered so far.
    fn offer(&mut self, tables: &[Arc<SegmentTable>], e: Entry) {
        if e.repo == NONE {
            self.best.push(e);
            return;
        }
        let slot = &mut self.slot[e.repo as usize];
        if *slot == NONE {
            *slot = self.best.len() as u32;
            self.best.push(e);
            return;
        }
        let current = &mut self.best[*slot as usize];
        let newer = match e.ver.cmp(&current.ver) {
            Ordering::Equal => {
                tables[e.seg as usize].version(e.doc) > tables[current.seg as usize].version(current.doc)
            }
            o => o == Ordering::Greater,
        };
        if newer {
            *current = e;
        }
    }

    /// Facet counts as strings; zeroes the counters.
    fn facets(&mut self, values: &[(usize, String)]) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut out: [BTreeMap<String, u64>; FACETS.len()] = Default::default();
        for ((f, value), c) in values.iter().zip(&mut self.counts) {
            if *c > 0 {
                out[*f].insert(value.clone(), std::mem::take(c));
            }
        }
        FACETS.iter().map(|f| f.to_string()).zip(out).collect()
    }
}

impl CatalogIndex {
    /// Runs `query` over every segment in one pass: counts facets, collapses to the newest
    /// version per repository when asked, and keeps the best `plan.keep` entries.
    fn collect(&self, snapshot: &Snapshot, query: &dyn Query, plan: Plan) -> Result<Page, IndexError> {
        let searcher = &snapshot.searcher;
        let scoring = if plan.scored {
            EnableScoring::enabled_from_searcher(searcher)
        } else {
            EnableScoring::disabled_from_searcher(searcher)
        };
        let weight = query.weight(scoring)?;
        let mut s = lock(&self.scratch).pop().unwrap_or_default();
        s.fit(snapshot);
        let tables = &snapshot.tables;
        let newest = (plan.latest_only && !plan.removed_possible).then_some(&snapshot.newest);
        let mut top = TopK::new(plan.keep);
        let mut total = 0;
        for (seg, reader) in searcher.segment_readers().iter().enumerate() {
            let t = &*tables[seg];
            let alive = reader.alive_bitset();
            let newest = newest.map(|n| n[seg].as_slice());
            let mut visit = |doc: DocId, score: Score| {
                let info = &t.docs[doc as usize];
                if alive.is_some_and(|a| !a.is_alive(doc)) || (plan.hide_removed && info.removed) {
                    return;
                }
                if plan.latest_only && !newest.is_some_and(|n| bit(n, doc)) {
                    // Not its plugin's newest version: it counts only if that one does not
                    // match, which may not be known before the end of the scan.
                    if info.repo == NONE || !bit(&s.covered, info.repo) {
                        s.older.push((info.repo, seg as SegmentOrdinal, doc, score));
                    }
                    return;
                }
                let e = t.entry(&snapshot.order, seg as SegmentOrdinal, doc, plan.scored.then_some(score));
                if plan.latest_only && e.repo != NONE {
                    set_bit(&mut s.covered, e.repo);
                }
                total += 1;
                s.tally(t, doc);
                top.push(e);
            };
            if plan.scored {
                weight.for_each(reader, &mut visit)?;
            } else {
                weight.for_each_no_score(reader, &mut |docs| docs.iter().for_each(|&d| visit(d, 0.0)))?;
            }
        }
        if plan.latest_only {
            // Plugins whose newest version did not match: their newest matching version.
            let older = std::mem::take(&mut s.older);
            for &(repo, seg, doc, score) in &older {
                if repo == NONE || !bit(&s.covered, repo) {
                    let e = tables[seg as usize].entry(&snapshot.order, seg, doc, plan.scored.then_some(score));
                    s.offer(tables, e);
                }
            }
            s.older = older;
            s.older.clear();
            let best = std::mem::take(&mut s.best);
            for &e in &best {
                if e.repo != NONE {
                    s.slot[e.repo as usize] = NONE;
                }
                total += 1;
                s.tally(&tables[e.seg as usize], e.doc);
                top.push(e);
            }
            s.best = best;
            s.best.clear();
            s.covered.iter_mut().for_each(|w| *w = 0);
        }
        let facets = s.facets(&snapshot.facet_values);
        lock(&self.scratch).push(s);
        Ok(Page { total, top: top.into_sorted(), facets })
    }
}

/// Marks the query's words in stored text.
struct Highlighter {
    exact: HashSet<String>,
    fuzzy: Vec<(String, usize)>,
    prefixes: Vec<String>,
}

/// Characters of description kept around the first match.
const SNIPPET_CHARS: usize = 200;

impl Highlighter {
    fn new(words: &[Word]) -> Highlighter {
        let mut h = Highlighter { exact: HashSet::new(), fuzzy: Vec::new(), prefixes: Vec::new() };
        for w in words {
            for (i, t) in w.tokens.iter().enumerate() {
                h.exact.insert(t.clone());
                if let Some(d) = typo_distance(t) {
                    h.fuzzy.push((t.clone(), usize::from(d)));
                }
                if w.last && i + 1 == w.tokens.len() && prefix_worthy(t) {
                    h.prefixes.push(t.clone());
                }
            }
        }
        h
    }

    /// Whether the query matched `token`; prefixes count in names only, as in the search.
    fn matches(&self, token: &str, prefixes: bool) -> bool {
        self.exact.contains(token)
            || (prefixes && self.prefixes.iter().any(|p| token.starts_with(p.as_str())))
            || self.fuzzy.iter().any(|(t, d)| within_distance(t, token, *d))
    }

    fn highlights(&self, analyzer: &mut TextAnalyzer, v: &PluginVersion) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if self.exact.is_empty() {
            return out;
        }
        for (field, text, name) in
            [("name", &v.name, true), ("display_name", &v.display_name, true), ("description", &v.description, false)]
        {
            if let Some(html) = self.mark(analyzer, text, name) {
                out.insert(field.to_string(), html);
            }
        }
        out
    }

    /// `text` as HTML with its matches marked; a description is cut around its first match.
    fn mark(&self, analyzer: &mut TextAnalyzer, text: &str, name: bool) -> Option<String> {
        let mut spans = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while stream.advance() {
            let t = stream.token();
            if self.matches(&t.text, name) {
                spans.push((t.offset_from, t.offset_to));
            }
        }
        let &(first, _) = spans.first()?;
        let (mut start, mut end) = (0, text.len());
        if !name && text.chars().count() > SNIPPET_CHARS {
            start = floor_boundary(text, first.saturating_sub(SNIPPET_CHARS / 3));
            if start > 0 {
                start = text[start..first].find(char::is_whitespace).map_or(start, |i| start + i + 1);
            }
            end = floor_boundary(text, start + SNIPPET_CHARS);
            if end < text.len() {
                end = text[first..end].rfind(char::is_whitespace).map_or(end, |i| first + i);
            }
        }
        let mut html = String::with_capacity(end - start + 16);
        if start > 0 {
            html.push('…');
        }
        let mut at = start;
        for (from, to) in spans {
            if from < start || to > end {
                continue;
            }
            escape_into(&mut html, &text[at..from]);
            html.push_str("<b>");
            escape_into(&mut html, &text[from..to]);
            html.push_str("</b>");
            at = to;
        }
        escape_into(&mut html, &text[at..end]);
        if end < text.len() {
            html.push('…');
        }
        Some(html)
    }
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn escape_into(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    let _ = write!(out, "{}", super::ui::Escaped(text));
}

/// Optimal-string-alignment distance of `a` and `b` is at most `max` (what the typo
/// automaton accepts: transpositions cost one).
fn within_distance(a: &str, b: &str, max: usize) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let mut prev2 = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        if cur.iter().min().is_some_and(|&m| m > max) {
            return false;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()] <= max
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `index/schema.json` records the index definition and its version. When this fails
    /// after a change to the schema: bump [`INDEX_SCHEMA_VERSION`] and write the file anew
    /// (`BERTH_WRITE_INDEX_SCHEMA=1 cargo nextest run -p berth --lib index_definition`).
    #[test]
    fn index_definition_is_recorded_in_the_source_tree() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("index/schema.json");
        let now = definition();
        if std::env::var_os("BERTH_WRITE_INDEX_SCHEMA").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
        }
        let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            recorded["schema_version"], now["schema_version"],
            "index/schema.json records another schema version than INDEX_SCHEMA_VERSION"
        );
        assert_eq!(
            recorded, now,
            "the index schema changed: bump INDEX_SCHEMA_VERSION (a changed index must be rebuilt) and \
             rewrite index/schema.json (BERTH_WRITE_INDEX_SCHEMA=1)"
        );
    }

    /// A version of `repository` with plausible defaults; `f` adjusts it.
    fn pv(repository: &str, version: &str, f: impl FnOnce(&mut PluginVersion)) -> PluginVersion {
        let (publisher, name) = repository.split_once('/').unwrap();
        let mut v = PluginVersion {
            repository: repository.to_string(),
            publisher: publisher.to_string(),
            name: name.to_string(),
            display_name: name.split('-').map(|w| w[..1].to_uppercase() + &w[1..]).collect::<Vec<_>>().join(" "),
            description: format!("The {name} plugin."),
            version: version.to_string(),
            digest: format!("sha256:{repository}:{version}"),
            reference: format!("registry.test/{repository}@sha256:{version}"),
            runner_api: "1.0".to_string(),
            lifecycle: "active".to_string(),
            verification: "none".to_string(),
            ..PluginVersion::default()
        };
        f(&mut v);
        v
    }

    fn index_of(versions: &[PluginVersion]) -> CatalogIndex {
        let index = CatalogIndex::in_memory().unwrap();
        for v in versions {
            index.upsert(v).unwrap();
        }
        index.commit().unwrap();
        index
    }

    fn search(index: &CatalogIndex, text: &str) -> SearchResults {
        index.search(&SearchQuery { text: text.to_string(), ..SearchQuery::default() }).unwrap()
    }

    fn repos(r: &SearchResults) -> Vec<String> {
        r.hits.iter().map(|h| format!("{}@{}", h.version.repository, h.version.version)).collect()
    }

    fn catalog() -> Vec<PluginVersion> {
        vec![
            pv("acme/json-transform", "1.0.0", |v| {
                v.description = "Reshapes JSON documents with jq filters.".into();
                v.categories = vec!["data".into()];
                v.sbom_components = vec!["serde".into(), "serde_json".into(), "jaq-core".into()];
            }),
            pv("acme/http-probe", "0.3.0", |v| {
                v.description = "Checks that endpoints answer in time.".into();
                v.categories = vec!["observability".into()];
                v.capabilities = vec!["outbound_http".into()];
                v.sbom_components = vec!["hyper".into(), "openssl".into()];
                v.verified = true;
            }),
            pv("berth/slack-notify", "1.0.0", |v| {
                v.description = "Posts alerts to a channel.".into();
                v.categories = vec!["messaging".into(), "observability".into()];
                v.capabilities = vec!["outbound_http".into(), "secrets_read".into()];
                v.sbom_components = vec!["reqwest".into(), "rustls".into()];
                v.official = true;
                v.verified = true;
            }),
            pv("vexa/csv-parser", "2.1.0", |v| {
                v.display_name = "Tabular Reader".into();
                v.description = "Reads comma separated files into records.".into();
                v.categories = vec!["data".into()];
                v.capabilities = vec!["filesystem_read".into()];
                v.sbom_components = vec!["csv".into(), "serde".into()];
                v.runner_api = "1.1".into();
                v.min_core = Some("1.4.0".into());
            }),
            pv("vexa/old-exporter", "1.0.0", |v| {
                v.description = "Exports metrics the old way.".into();
                v.categories = vec!["observability".into()];
                v.lifecycle = "removed".into();
            }),
        ]
    }

    #[test]
    fn text_matches_every_searchable_field() {
        let index = index_of(&catalog());
        let cases = [
            ("transform", "acme/json-transform@1.0.0"),      // name
            ("tabular", "vexa/csv-parser@2.1.0"),            // display name
            ("endpoints", "acme/http-probe@0.3.0"),          // description
            ("messaging", "berth/slack-notify@1.0.0"),       // category
            ("secrets_read", "berth/slack-notify@1.0.0"),    // capability
            ("berth", "berth/slack-notify@1.0.0"),           // publisher
            ("openssl", "acme/http-probe@0.3.0"),            // SBOM component
            ("serde_json", "acme/json-transform@1.0.0"),     // SBOM component, as written
            ("json-transform", "acme/json-transform@1.0.0"), // the whole name
        ];
        for (text, first) in cases {
            let r = search(&index, text);
            assert_eq!(repos(&r).first().map(String::as_str), Some(first), "{text}: {:?}", repos(&r));
        }
        assert_eq!(search(&index, "openssl").total, 1);
        let mut serde = repos(&search(&index, "serde"));
        serde.sort();
        assert_eq!(serde, ["acme/json-transform@1.0.0", "vexa/csv-parser@2.1.0"]);
        assert_eq!(search(&index, "nothing-like-this").total, 0);
    }

    #[test]
    fn every_word_must_match() {
        let index = index_of(&catalog());
        assert_eq!(repos(&search(&index, "json transform")), ["acme/json-transform@1.0.0"]);
        assert_eq!(search(&index, "json probe").total, 0);
    }

    #[test]
    fn name_outranks_display_name_description_and_sbom() {
        let index = index_of(&[
            pv("a/relay", "1.0.0", |v| v.sbom_components = vec!["kafka".into()]),
            pv("b/bridge", "1.0.0", |v| v.description = "Forwards to kafka topics.".into()),
            pv("c/pipe", "1.0.0", |v| v.display_name = "Kafka Pipe".into()),
            pv("d/kafka-sink", "1.0.0", |_| {}),
        ]);
        assert_eq!(
            repos(&search(&index, "kafka")),
            ["d/kafka-sink@1.0.0", "c/pipe@1.0.0", "b/bridge@1.0.0", "a/relay@1.0.0"]
        );
    }

    #[test]
    fn typos_and_prefixes_match() {
        let index = index_of(&catalog());
        for text in ["trnsform", "tranfsorm", "json-tr", "json-transfo", "transf", "json trnsfrom", "jq filtrs"] {
            assert_eq!(repos(&search(&index, text)), ["acme/json-transform@1.0.0"], "{text}");
        }
        assert_eq!(repos(&search(&index, "endpoint")), ["acme/http-probe@0.3.0"]);
        // Three letters: no typo tolerance; a prefix only for the last word.
        assert_eq!(search(&index, "jsn").total, 0);
        assert_eq!(search(&index, "tra data").total, 0);
        // Two edits only from eight characters on.
        assert_eq!(search(&index, "opnsl").total, 0);
        assert_eq!(search(&index, "dcumnets").total, 1);
    }

    #[test]
    fn filters_or_within_a_field_and_across_fields() {
        let index = index_of(&catalog());
        let q = |f: &dyn Fn(&mut SearchQuery)| {
            let mut q = SearchQuery::default();
            f(&mut q);
            let mut r = repos(&index.search(&q).unwrap());
            r.sort();
            r
        };
        assert_eq!(q(&|q| q.category = vec!["data".into()]), ["acme/json-transform@1.0.0", "vexa/csv-parser@2.1.0"]);
        assert_eq!(
            q(&|q| q.category = vec!["data".into(), "messaging".into()]),
            ["acme/json-transform@1.0.0", "berth/slack-notify@1.0.0", "vexa/csv-parser@2.1.0"]
        );
        assert_eq!(
            q(&|q| {
                q.category = vec!["observability".into()];
                q.capability = vec!["secrets_read".into()];
            }),
            ["berth/slack-notify@1.0.0"]
        );
        assert_eq!(q(&|q| q.verified = Some(true)), ["acme/http-probe@0.3.0", "berth/slack-notify@1.0.0"]);
        assert_eq!(q(&|q| q.publisher = vec!["vexa".into()]), ["vexa/csv-parser@2.1.0"]);
        assert_eq!(q(&|q| q.runner_api = vec!["1.1".into()]), ["vexa/csv-parser@2.1.0"]);
        assert_eq!(q(&|q| q.core_version = Some("1.3.9".into())).len(), 3);
        assert_eq!(q(&|q| q.core_version = Some("1.4.0".into())).len(), 4);
        assert_eq!(q(&|q| q.core_version = Some("1.10".into())).len(), 4);
        let mut with_text = SearchQuery { text: "endpoints".into(), verified: Some(false), ..SearchQuery::default() };
        assert_eq!(index.search(&with_text).unwrap().total, 0);
        with_text.verified = Some(true);
        assert_eq!(index.search(&with_text).unwrap().total, 1);
        let bad = SearchQuery { core_version: Some("latest".into()), ..SearchQuery::default() };
        assert!(matches!(index.search(&bad), Err(IndexError::InvalidQuery(_))));
    }

    #[test]
    fn facets_count_the_whole_filtered_result() {
        let index = index_of(&catalog());
        let r = index
            .search(&SearchQuery {
                category: vec!["observability".into(), "data".into()],
                limit: 1,
                ..SearchQuery::default()
            })
            .unwrap();
        assert_eq!((r.total, r.hits.len()), (4, 1));
        let f = |field: &str| r.facets[field].iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>();
        assert_eq!(f("category"), [("data", 2), ("messaging", 1), ("observability", 2)]);
        assert_eq!(f("capability"), [("filesystem_read", 1), ("outbound_http", 2), ("secrets_read", 1)]);
        assert_eq!(f("publisher"), [("acme", 2), ("berth", 1), ("vexa", 1)]);
        assert_eq!(f("verified"), [("false", 2), ("true", 2)]);
        assert_eq!(f("lifecycle"), [("active", 4)]);
        assert_eq!(f("runner_api"), [("1.0", 3), ("1.1", 1)]);
        let r = search(&index, "zzzz");
        let mut every: Vec<&str> = FACETS.to_vec();
        every.sort();
        assert_eq!(r.facets.keys().map(String::as_str).collect::<Vec<_>>(), every);
    }

    #[test]
    fn removed_versions_appear_only_when_asked_for() {
        let index = index_of(&catalog());
        assert_eq!(search(&index, "exports").total, 0);
        assert_eq!(index.search(&SearchQuery::default()).unwrap().total, 4);
        let q = SearchQuery { text: "exports".into(), lifecycle: vec!["removed".into()], ..SearchQuery::default() };
        assert_eq!(repos(&index.search(&q).unwrap()), ["vexa/old-exporter@1.0.0"]);
        let q = SearchQuery { lifecycle: vec!["active".into(), "removed".into()], ..SearchQuery::default() };
        assert_eq!(index.search(&q).unwrap().total, 5);
    }

    #[test]
    fn latest_only_keeps_the_newest_matching_version_of_each_plugin() {
        let versions = [
            pv("acme/json-transform", "1.2.0", |_| {}),
            pv("acme/json-transform", "1.10.0", |v| v.min_core = Some("2.0.0".into())),
            pv("acme/json-transform", "1.9.0", |v| v.description = "Now with streaming.".into()),
            pv("acme/json-transform", "2.0.0-rc.1", |v| v.lifecycle = "removed".into()),
            pv("acme/json-transform", "1.11.0-beta.2", |_| {}),
            pv("acme/json-transform", "1.11.0-beta.10", |_| {}),
            pv("other/json-transform", "0.1.0", |_| {}),
        ];
        // One segment per version: the collapse works across segments.
        let index = CatalogIndex::in_memory().unwrap();
        for v in &versions {
            index.upsert(v).unwrap();
            index.commit().unwrap();
        }
        let latest = |f: &dyn Fn(&mut SearchQuery)| {
            let mut q = SearchQuery { latest_only: true, ..SearchQuery::default() };
            f(&mut q);
            let mut r = repos(&index.search(&q).unwrap());
            r.sort();
            r
        };
        // 2.0.0-rc.1 is removed; among the rest 1.11.0-beta.10 > 1.11.0-beta.2 > 1.10.0.
        assert_eq!(latest(&|_| {}), ["acme/json-transform@1.11.0-beta.10", "other/json-transform@0.1.0"]);
        assert_eq!(latest(&|q| q.text = "transform".into()).len(), 2);
        // Only an old version matches the text: that one is kept.
        assert_eq!(latest(&|q| q.text = "streaming".into()), ["acme/json-transform@1.9.0"]);
        // The newest compatible version.
        assert_eq!(
            latest(&|q| {
                q.core_version = Some("1.5.0".into());
                q.publisher = vec!["acme".into()];
            }),
            ["acme/json-transform@1.11.0-beta.10"]
        );
        index.remove("sha256:acme/json-transform:1.11.0-beta.10").unwrap();
        index.remove("sha256:acme/json-transform:1.11.0-beta.2").unwrap();
        index.commit().unwrap();
        assert_eq!(
            latest(&|q| q.core_version = Some("1.5.0".into())),
            ["acme/json-transform@1.9.0", "other/json-transform@0.1.0"]
        );
        assert_eq!(latest(&|_| {}), ["acme/json-transform@1.10.0", "other/json-transform@0.1.0"]);
        // Asking for removed versions: the removed release candidate is the newest.
        assert_eq!(
            latest(&|q| q.lifecycle = vec!["active".into(), "removed".into()]),
            ["acme/json-transform@2.0.0-rc.1", "other/json-transform@0.1.0"]
        );
        let r = index.search(&SearchQuery { latest_only: true, ..SearchQuery::default() }).unwrap();
        assert_eq!((r.total, r.facets["publisher"]["acme"]), (2, 1));
        assert_eq!(index.search(&SearchQuery::default()).unwrap().total, 4);
    }

    #[test]
    fn equal_relevance_prefers_official_then_verified_then_installs() {
        let same = |repository: &str, f: fn(&mut PluginVersion)| {
            pv(repository, "1.0.0", |v| {
                v.name = "slack-notify".into();
                v.display_name = "Slack Notify".into();
                v.description = "Posts to Slack.".into();
                f(v);
            })
        };
        let index = index_of(&[
            same("a/slack-notify", |v| v.installs = 10),
            same("b/slack-notify", |v| v.installs = 5000),
            same("c/slack-notify", |v| v.verified = true),
            same("d/slack-notify", |v| v.official = true),
            same("e/slack-notify", |v| {
                v.verified = true;
                v.installs = 3;
            }),
        ]);
        let expected = [
            "d/slack-notify@1.0.0",
            "e/slack-notify@1.0.0",
            "c/slack-notify@1.0.0",
            "b/slack-notify@1.0.0",
            "a/slack-notify@1.0.0",
        ];
        let r = search(&index, "slack");
        assert_eq!(repos(&r), expected);
        assert!(r.hits.windows(2).all(|w| w[0].score >= w[1].score));
        // Without text: the same order (the name is the same).
        assert_eq!(repos(&index.search(&SearchQuery::default()).unwrap()), expected);
        // A clearly better match still wins over official.
        let index = index_of(&[
            pv("x/slack-notify", "1.0.0", |v| v.official = true),
            pv("y/slack", "1.0.0", |v| v.installs = 0),
        ]);
        assert_eq!(repos(&search(&index, "slack")).first().map(String::as_str), Some("y/slack@1.0.0"));
    }

    #[test]
    fn browsing_orders_by_official_verified_installs_then_name() {
        let index = index_of(&[
            pv("p/zeta", "1.0.0", |_| {}),
            pv("p/alpha", "1.0.0", |_| {}),
            pv("q/beta", "1.0.0", |v| v.installs = 7),
            pv("q/gamma", "1.0.0", |v| v.verified = true),
            pv("r/omega", "1.0.0", |v| v.official = true),
        ]);
        assert_eq!(
            repos(&index.search(&SearchQuery::default()).unwrap()),
            ["r/omega@1.0.0", "q/gamma@1.0.0", "q/beta@1.0.0", "p/alpha@1.0.0", "p/zeta@1.0.0"]
        );
        assert!(index.search(&SearchQuery::default()).unwrap().hits.iter().all(|h| h.score == 0.0));
    }

    #[test]
    fn pages_through_results() {
        let versions: Vec<_> = (0..45).map(|i| pv(&format!("p/plugin-{i:02}"), "1.0.0", |_| {})).collect();
        let index = index_of(&versions);
        let page = |offset, limit| index.search(&SearchQuery { offset, limit, ..SearchQuery::default() }).unwrap();
        let first = page(0, 0);
        assert_eq!((first.total, first.hits.len()), (45, 20));
        assert_eq!(first.hits[0].version.name, "plugin-00");
        let second = page(20, 20);
        assert_eq!(second.hits[0].version.name, "plugin-20");
        assert_eq!(page(40, 20).hits.len(), 5);
        assert_eq!(page(45, 20).hits.len(), 0);
        assert_eq!(page(0, 1000).hits.len(), 45);
        let all: Vec<_> = (0..3).flat_map(|p| repos(&page(p * 20, 20))).collect();
        let mut unique = all.clone();
        unique.dedup();
        assert_eq!((all.len(), unique.len()), (45, 45));
    }

    #[test]
    fn limit_is_capped_at_100() {
        let versions: Vec<_> = (0..120).map(|i| pv(&format!("p/plugin-{i:03}"), "1.0.0", |_| {})).collect();
        let index = index_of(&versions);
        let r = index.search(&SearchQuery { limit: 500, ..SearchQuery::default() }).unwrap();
        assert_eq!((r.total, r.hits.len()), (120, 100));
    }

    #[test]
    fn highlights_mark_matches_and_escape_html() {
        let index = index_of(&[pv("acme/json-transform", "1.0.0", |v| {
            v.description = "Converts <json> & \"yaml\" to 'json'.".into();
        })]);
        let r = search(&index, "json");
        let h = &r.hits[0].highlights;
        assert_eq!(h["name"], "<b>json</b>-transform");
        assert_eq!(h["display_name"], "<b>Json</b> Transform");
        assert_eq!(h["description"], "Converts &lt;<b>json</b>&gt; &amp; &quot;yaml&quot; to &#39;<b>json</b>&#39;.");
        let h = &search(&index, "trnsform").hits[0].highlights;
        assert_eq!(h["name"], "json-<b>transform</b>");
        assert!(!h.contains_key("description"));
        let h = &search(&index, "json-tra").hits[0].highlights;
        assert_eq!(h["name"], "<b>json</b>-<b>transform</b>");
        assert!(index.search(&SearchQuery::default()).unwrap().hits[0].highlights.is_empty());
    }

    #[test]
    fn long_descriptions_are_cut_around_the_first_match() {
        let description = format!("{} the needle is here {}", "hay ".repeat(100), "straw ".repeat(100));
        let index = index_of(&[pv("p/finder", "1.0.0", |v| v.description = description)]);
        let h = &search(&index, "needle").hits[0].highlights["description"];
        assert!(h.starts_with('…') && h.ends_with('…'), "{h}");
        assert!(h.contains("the <b>needle</b> is here"), "{h}");
        assert!(h.chars().count() < SNIPPET_CHARS + 20, "{h}");
    }

    #[test]
    fn upsert_replaces_the_document_with_the_same_digest() {
        let index = index_of(&catalog());
        let mut v = index.get("sha256:acme/http-probe:0.3.0").unwrap().unwrap();
        assert!(v.verified);
        v.verified = false;
        v.description = "Pings things.".into();
        index.upsert(&v).unwrap();
        // Not visible before the commit.
        assert_eq!(search(&index, "pings").total, 0);
        index.commit().unwrap();
        assert_eq!(index.len().unwrap(), 5);
        assert_eq!(search(&index, "pings").total, 1);
        assert_eq!(search(&index, "endpoints").total, 0);
        assert_eq!(index.get(&v.digest).unwrap(), Some(v));
        assert!(index.upsert(&PluginVersion::default()).is_err());
    }

    #[test]
    fn remove_and_clear() {
        let index = index_of(&catalog());
        index.remove("sha256:acme/http-probe:0.3.0").unwrap();
        index.remove("sha256:no/such:1.0.0").unwrap();
        index.commit().unwrap();
        assert_eq!(index.len().unwrap(), 4);
        assert_eq!(index.get("sha256:acme/http-probe:0.3.0").unwrap(), None);
        assert_eq!(search(&index, "endpoints").total, 0);
        // A rebuild: clear, upsert again, commit; uncommitted upserts are cleared too.
        index.upsert(&pv("late/addition", "1.0.0", |_| {})).unwrap();
        index.clear().unwrap();
        index.upsert(&catalog()[0]).unwrap();
        assert_eq!(index.len().unwrap(), 4);
        index.commit().unwrap();
        assert_eq!(index.len().unwrap(), 1);
        assert!(!index.is_empty().unwrap());
        assert_eq!(repos(&index.search(&SearchQuery::default()).unwrap()), ["acme/json-transform@1.0.0"]);
    }

    #[test]
    fn versions_newest_semver_first() {
        let index = index_of(&[
            pv("acme/tool", "1.2.0", |_| {}),
            pv("acme/tool", "1.10.0", |_| {}),
            pv("acme/tool", "1.10.0-rc.1", |v| v.lifecycle = "removed".into()),
            pv("acme/tool", "nightly", |_| {}),
            pv("acme/tools", "9.0.0", |_| {}),
        ]);
        let v: Vec<_> = index.versions("acme/tool").unwrap().into_iter().map(|v| v.version).collect();
        assert_eq!(v, ["1.10.0", "1.10.0-rc.1", "1.2.0", "nightly"]);
        assert!(index.versions("acme/none").unwrap().is_empty());
    }

    #[test]
    fn reopening_keeps_documents_and_a_schema_change_asks_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        {
            let index = CatalogIndex::open(&path).unwrap();
            assert!(index.needs_rebuild());
            for v in catalog() {
                index.upsert(&v).unwrap();
            }
            index.commit().unwrap();
        }
        {
            let index = CatalogIndex::open(&path).unwrap();
            assert!(!index.needs_rebuild());
            assert_eq!(index.len().unwrap(), 5);
            assert_eq!(repos(&search(&index, "trnsform")), ["acme/json-transform@1.0.0"]);
            let r = index.search(&SearchQuery { latest_only: true, ..SearchQuery::default() }).unwrap();
            assert_eq!(r.total, 4);
        }
        let marker = path.join(MARKER);
        std::fs::write(&marker, r#"{"schema_version": 0}"#).unwrap();
        let index = CatalogIndex::open(&path).unwrap();
        assert!(index.needs_rebuild());
        assert_eq!(index.len().unwrap(), 0);
        let recorded: Marker = serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
        assert_eq!(recorded.schema_version, INDEX_SCHEMA_VERSION);
    }

    #[test]
    fn refuses_to_clear_a_directory_that_is_not_an_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
        assert!(matches!(CatalogIndex::open(dir.path()), Err(IndexError::NotAnIndex(_))));
        assert!(dir.path().join("precious.txt").exists());
    }

    #[test]
    fn searches_run_while_versions_are_committed() {
        let index = Arc::new(index_of(&catalog()));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let index = Arc::clone(&index);
                std::thread::spawn(move || {
                    let mut last = 0;
                    for _ in 0..200 {
                        let q = SearchQuery { text: "plugin".into(), latest_only: true, ..SearchQuery::default() };
                        let r = index.search(&q).unwrap();
                        assert!(r.total >= last, "{} < {last}", r.total);
                        assert_eq!(r.facets["publisher"].values().sum::<u64>(), r.total);
                        last = r.total;
                    }
                })
            })
            .collect();
        for i in 0..30 {
            index.upsert(&pv(&format!("p/plugin-{i}"), "1.0.0", |_| {})).unwrap();
            index.upsert(&pv(&format!("p/plugin-{i}"), "1.1.0", |_| {})).unwrap();
            index.commit().unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(
            index
                .search(&SearchQuery { text: "plugin".into(), latest_only: true, ..SearchQuery::default() })
                .unwrap()
                .total,
            30
        );
    }

    #[test]
    fn edit_distance_allows_one_transposition() {
        assert!(within_distance("transform", "trnasform", 1));
        assert!(within_distance("transform", "trnsform", 1));
        assert!(!within_distance("transform", "trnsfrm", 1));
        assert!(within_distance("transform", "trnsfrm", 2));
        assert!(!within_distance("json", "yaml", 2));
    }

    #[test]
    fn version_keys_order_like_semver() {
        let key = |s: &str| version_key(&semver::Version::parse(s).unwrap());
        assert!(key("1.10.0") > key("1.9.9"));
        assert!(key("2.0.0") > key("2.0.0-rc.1"));
        assert!(key("2.0.0-rc.1") > key("1.99.0"));
        assert_eq!(key("1.0.0-beta.10"), key("1.0.0-beta.2"));
        assert!(core_key("1.4").unwrap() == core_key("1.4.0").unwrap());
        assert!(core_key("v1.4.1").unwrap() > core_key("1.4.0").unwrap());
        assert!(core_key("next").is_none());
    }

    /// `cargo test --release --lib catalog::index -- --ignored --nocapture`
    /// (`BERTH_BENCH_VERSIONS`, `BERTH_BENCH_ROUNDS` to change the defaults 100,000 and 3).
    #[test]
    #[ignore = "benchmark: run in release with --ignored --nocapture"]
    fn bench_search_100k() {
        let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
        let index = CatalogIndex::in_memory().unwrap();
        let report = crate::cli::bench_search::bench(
            &index,
            env("BERTH_BENCH_VERSIONS", 100_000),
            2000,
            env("BERTH_BENCH_ROUNDS", 3),
        )
        .unwrap();
        println!("{report}");
    }
}
