//! The local OSV vulnerability database: advisories imported from OSV JSON files into one
//! SQLite file, looked up by package URL.
//!
//! Owns: reading OSV records (schema 1.6, <https://ossf.github.io/osv-schema/>) from a
//! directory or a `.zip` (as osv.dev publishes them per ecosystem), storing them, indexing them
//! by (ecosystem, normalized package name), and answering "which advisories affect this purl"
//! by evaluating the records' `versions` and `SEMVER`/`ECOSYSTEM` ranges at query time with
//! [`super::version`]. Also the severity of an advisory: `database_specific.severity` (GHSA)
//! or the CVSS v3.x base score of its vector (<https://www.first.org/cvss/v3.1/specification-document>
//! § 7). Does not own: fetching the files (any download tool will do) or deciding what a
//! finding means for a plugin (the vulnerability check in [`super::checks`]).
//!
//! Package URLs follow the purl spec (<https://github.com/package-url/purl-spec>): npm scopes
//! are the namespace (`pkg:npm/%40babel/traverse@7.23.0`), a Go module path is namespace and
//! name joined (`pkg:golang/golang.org/x/net@v0.17.0`), PyPI names are compared in their
//! PEP 503 normal form, crates.io names as they are.

use super::version::{self, Ecosystem, Event};
use crate::plugin::documents::Severity;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The layout version kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    modified TEXT NOT NULL,
    modified_secs INTEGER NOT NULL,
    modified_nanos INTEGER NOT NULL,
    withdrawn INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS packages (
    ecosystem TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL REFERENCES records(id) ON DELETE CASCADE,
    PRIMARY KEY (ecosystem, name, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS packages_by_id ON packages(id);
";

/// What went wrong, naming the file (database, source file or `archive!entry`) or record.
/// The underlying error is part of the message rather than a `source()`, so `{:#}` chains
/// do not print it twice.
#[derive(Debug, thiserror::Error)]
pub enum VulnDbError {
    #[error("{}: {error}", path.display())]
    Sqlite { path: PathBuf, error: rusqlite::Error },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{}: {error}", path.display())]
    Zip { path: PathBuf, error: zip::result::ZipError },
    #[error("{}: not a directory, a .zip archive or a .json file", path.display())]
    Source { path: PathBuf },
    #[error("{}: database layout version {found}; this berth reads version {SCHEMA_VERSION}", path.display())]
    Schema { path: PathBuf, found: i64 },
    #[error("{}: stored record {id}: {reason}", path.display())]
    StoredRecord { path: PathBuf, id: String, reason: String },
    #[error("package URL {purl:?}: {reason}")]
    Purl { purl: String, reason: String },
}

/// What one [`VulnDb::import`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Records whose id was not stored before.
    pub added: usize,
    /// Stored records replaced by one with a newer `modified`.
    pub updated: usize,
    /// Records whose stored copy is as new or newer.
    pub unchanged: usize,
    /// Of the added and updated records, those carrying `withdrawn`.
    pub withdrawn: usize,
    /// Files that are not valid OSV records: `"path: reason"` (zip entries as `archive!entry`).
    pub skipped: Vec<String>,
    /// The database revision after the import.
    pub revision: String,
}

/// The OSV database in one SQLite file (WAL mode). Cheap to share: every call takes the
/// connection's lock for the duration of its statements.
pub struct VulnDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl fmt::Debug for VulnDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VulnDb").field("path", &self.path).finish_non_exhaustive()
    }
}

impl VulnDb {
    /// Opens the database at `path`, creating the file and its tables if new.
    pub fn open(path: &Path) -> Result<VulnDb, VulnDbError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| VulnDbError::Io { path: parent.into(), error: source })?;
        }
        let sql = |error| VulnDbError::Sqlite { path: path.into(), error };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(sql)?;
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;").map_err(sql)?;

        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql)?;
        match found {
            0 => {
                tx.execute_batch(SCHEMA).map_err(sql)?;
                tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).map_err(sql)?;
            }
            SCHEMA_VERSION => {}
            found => return Err(VulnDbError::Schema { path: path.into(), found }),
        }
        tx.commit().map_err(sql)?;
        Ok(VulnDb { path: path.into(), conn: Mutex::new(conn) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Imports OSV records from a directory (recursively, `*.json`, one record per file — as
    /// OSV publishes per ecosystem), a `.zip` of such files (osv.dev's per-ecosystem
    /// `all.zip`) or a single `.json` file.
    ///
    /// One transaction: all or nothing. A record replaces a stored one with the same id only
    /// when its `modified` is newer. Records of ecosystems berth does not scan are kept but
    /// never match. A file that is not a valid OSV record is skipped and listed, not fatal;
    /// a file or archive that cannot be read is. The connection's lock is held throughout, so
    /// queries from this process wait for the import; other processes keep reading the
    /// previous state (WAL) until it commits.
    pub fn import(&self, source: &Path) -> Result<ImportReport, VulnDbError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| VulnDbError::Io { path, error }
        };
        let meta = std::fs::metadata(source).map_err(io(source))?;

        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let mut importer = Importer { db: self, tx: &tx, report: ImportReport::default() };

        if meta.is_dir() {
            let mut files = Vec::new();
            collect_json_files(source, &mut files)?;
            files.sort();
            for file in files {
                let bytes = std::fs::read(&file).map_err(io(&file))?;
                importer.add(&file.display().to_string(), &bytes)?;
            }
        } else if is_zip(source).map_err(io(source))? {
            let file = std::fs::File::open(source).map_err(io(source))?;
            let zip_err = |e| VulnDbError::Zip { path: source.into(), error: e };
            let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(zip_err)?;
            for i in 0..archive.len() {
                let mut entry = archive.by_index(i).map_err(zip_err)?;
                if !entry.is_file() || !has_json_extension(entry.name()) {
                    continue;
                }
                let label = format!("{}!{}", source.display(), entry.name());
                let mut bytes = Vec::with_capacity(entry.size().min(1 << 24) as usize);
                entry.read_to_end(&mut bytes).map_err(|e| VulnDbError::Io { path: PathBuf::from(&label), error: e })?;
                importer.add(&label, &bytes)?;
            }
        } else if has_json_extension(&source.to_string_lossy()) {
            let bytes = std::fs::read(source).map_err(io(source))?;
            importer.add(&source.display().to_string(), &bytes)?;
        } else {
            return Err(VulnDbError::Source { path: source.into() });
        }

        let mut report = importer.report;
        report.revision = compute_revision(&tx).map_err(|e| self.sql(e))?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?1)", [&report.revision])
            .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        tracing::info!(
            source = %source.display(),
            added = report.added,
            updated = report.updated,
            unchanged = report.unchanged,
            skipped = report.skipped.len(),
            revision = %report.revision,
            "OSV import"
        );
        Ok(report)
    }

    /// A hex SHA-256 over (id, modified) of every stored record in id order, as of the last
    /// import; it changes exactly when the content does.
    pub fn revision(&self) -> Result<String, VulnDbError> {
        let conn = self.lock();
        let stored: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql(e))?;
        match stored {
            Some(r) => Ok(r),
            None => compute_revision(&conn).map_err(|e| self.sql(e)),
        }
    }

    /// The advisories affecting the package and version `purl` names, in id order. Package
    /// types of ecosystems berth does not scan give an empty list; a purl of a known type
    /// without a version is an error.
    pub fn affecting(&self, purl: &str) -> Result<Vec<crate::verify::Vulnerability>, VulnDbError> {
        let parsed = Purl::parse(purl).map_err(|reason| VulnDbError::Purl { purl: purl.into(), reason })?;
        let Some(eco) = Ecosystem::from_purl_type(&parsed.ty) else {
            return Ok(Vec::new());
        };
        let Some(version) = parsed.version.as_deref() else {
            return Err(VulnDbError::Purl { purl: purl.into(), reason: "no version to match".into() });
        };
        let name = parsed.package_name(eco);

        let rows: Vec<(String, String)> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached(
                    "SELECT r.id, r.json FROM packages p JOIN records r ON r.id = p.id \
                     WHERE p.ecosystem = ?1 AND p.name = ?2 AND r.withdrawn = 0 ORDER BY r.id",
                )
                .map_err(|e| self.sql(e))?;
            let rows =
                stmt.query_map(params![eco.as_osv(), name], |r| Ok((r.get(0)?, r.get(1)?))).map_err(|e| self.sql(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))?
        };

        let mut found = Vec::new();
        for (id, json) in rows {
            let stored = |reason: String| VulnDbError::StoredRecord { path: self.path.clone(), id: id.clone(), reason };
            let value: Value = serde_json::from_str(&json).map_err(|e| stored(e.to_string()))?;
            let record = Record::parse(&value).map_err(|e| stored(e.to_string()))?;
            if let Some(v) = record.affecting(eco, &name, version, purl) {
                found.push(v);
            }
        }
        Ok(found)
    }

    /// How many records name each ecosystem (OSV names, e.g. `crates.io`, `PyPI`,
    /// `Debian:12`); a record naming two counts for both. Withdrawn records are included.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>, VulnDbError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT ecosystem, COUNT(DISTINCT id) FROM packages GROUP BY ecosystem")
            .map_err(|e| self.sql(e))?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(|e| self.sql(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (eco, n) = row.map_err(|e| self.sql(e))?;
            out.insert(eco, n.max(0) as u64);
        }
        Ok(out)
    }

    /// Records stored, and how many of them are withdrawn.
    pub fn record_count(&self) -> Result<(u64, u64), VulnDbError> {
        let conn = self.lock();
        conn.query_row("SELECT COUNT(*), COALESCE(SUM(withdrawn), 0) FROM records", [], |r| {
            Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(|e| self.sql(e))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done write behind: an open
        // transaction is rolled back when dropped.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sql(&self, source: rusqlite::Error) -> VulnDbError {
        VulnDbError::Sqlite { path: self.path.clone(), error: source }
    }
}

impl crate::verify::VulnSource for VulnDb {
    fn affecting(&self, purl: &str) -> Result<Vec<crate::verify::Vulnerability>, String> {
        VulnDb::affecting(self, purl).map_err(|e| e.to_string())
    }

    fn revision(&self) -> Result<String, String> {
        VulnDb::revision(self).map_err(|e| e.to_string())
    }
}

/// One import's writes, inside its transaction.
struct Importer<'a> {
    db: &'a VulnDb,
    tx: &'a Transaction<'a>,
    report: ImportReport,
}

impl Importer<'_> {
    /// Stores one file's record, or lists the file as skipped.
    fn add(&mut self, label: &str, bytes: &[u8]) -> Result<(), VulnDbError> {
        let record = serde_json::from_slice::<Value>(bytes)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| Record::parse(&v).map(|r| (r, v)).map_err(|e| e.to_string()));
        let (record, value) = match record {
            Ok(r) => r,
            Err(reason) => {
                tracing::debug!(file = label, %reason, "skipping OSV file");
                self.report.skipped.push(format!("{label}: {reason}"));
                return Ok(());
            }
        };
        self.store(&record, &value).map_err(|e| self.db.sql(e))
    }

    fn store(&mut self, record: &Record, value: &Value) -> rusqlite::Result<()> {
        let tx = self.tx;
        let stored: Option<(i64, i64)> = tx
            .prepare_cached("SELECT modified_secs, modified_nanos FROM records WHERE id = ?1")?
            .query_row([&record.id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (secs, nanos) = record.modified_at;
        match stored {
            Some(old) if old >= (secs, i64::from(nanos)) => {
                self.report.unchanged += 1;
                return Ok(());
            }
            Some(_) => {
                tx.prepare_cached("DELETE FROM packages WHERE id = ?1")?.execute([&record.id])?;
                tx.prepare_cached(
                    "UPDATE records SET modified = ?2, modified_secs = ?3, modified_nanos = ?4, withdrawn = ?5, \
                     json = ?6 WHERE id = ?1",
                )?
                .execute(params![
                    record.id,
                    record.modified,
                    secs,
                    nanos,
                    record.withdrawn,
                    value.to_string()
                ])?;
                self.report.updated += 1;
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO records (id, modified, modified_secs, modified_nanos, withdrawn, json) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    record.id,
                    record.modified,
                    secs,
                    nanos,
                    record.withdrawn,
                    value.to_string()
                ])?;
                self.report.added += 1;
            }
        }
        if record.withdrawn {
            self.report.withdrawn += 1;
        }
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO packages (ecosystem, name, id) VALUES (?1, ?2, ?3)")?;
        for a in &record.affected {
            if let Some(pkg) = &a.package {
                insert.execute(params![pkg.ecosystem, normalize_name(&pkg.ecosystem, &pkg.name), record.id])?;
            }
        }
        Ok(())
    }
}

fn compute_revision(conn: &Connection) -> rusqlite::Result<String> {
    let mut hash = Sha256::new();
    let mut stmt = conn.prepare("SELECT id, modified FROM records ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let modified: String = row.get(1)?;
        hash.update(id.as_bytes());
        hash.update([0]);
        hash.update(modified.as_bytes());
        hash.update([b'\n']);
    }
    Ok(hex::encode(hash.finalize()))
}

fn collect_json_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), VulnDbError> {
    let io = |error| VulnDbError::Io { path: dir.into(), error };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|error| VulnDbError::Io { path: path.clone(), error })?;
        // Follow symlinks to files and directories alike, as a mirror tool may link them.
        let is_dir = kind.is_dir() || (kind.is_symlink() && path.is_dir());
        if is_dir {
            collect_json_files(&path, out)?;
        } else if has_json_extension(&path.to_string_lossy()) {
            out.push(path);
        }
    }
    Ok(())
}

fn has_json_extension(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() > 5 && b[b.len() - 5..].eq_ignore_ascii_case(b".json")
}

/// By content (`PK\x03\x04`, or the empty archive's `PK\x05\x06`), whatever the name.
fn is_zip(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)?;
    let mut n = 0;
    while n < 4 {
        match f.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == 4 && (magic == *b"PK\x03\x04" || magic == *b"PK\x05\x06"))
}

/// The name the `packages` index holds for `name` in `ecosystem`.
fn normalize_name(ecosystem: &str, name: &str) -> String {
    match Ecosystem::from_osv(ecosystem) {
        Some(Ecosystem::PyPI) => pep503(name),
        _ => name.to_string(),
    }
}

/// PEP 503: lowercase, runs of `-`, `_` and `.` become one `-`.
fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Package URLs

/// The parts of a package URL the lookup needs (qualifiers and subpath are dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Purl {
    ty: String,
    namespace: Option<String>,
    name: String,
    version: Option<String>,
}

impl Purl {
    /// Per the purl spec's "how to parse" steps.
    fn parse(s: &str) -> Result<Purl, String> {
        let s = s.trim();
        let s = s.rsplit_once('#').map_or(s, |(rest, _subpath)| rest);
        let s = s.rsplit_once('?').map_or(s, |(rest, _qualifiers)| rest);
        let (scheme, rest) = s.split_once(':').ok_or("no `pkg:` scheme")?;
        if !scheme.eq_ignore_ascii_case("pkg") {
            return Err(format!("scheme {scheme:?} is not `pkg`"));
        }
        let rest = rest.trim_matches('/');
        let (ty, rest) = rest.split_once('/').ok_or("no type and name")?;
        if ty.is_empty() {
            return Err("empty type".into());
        }
        // The version follows the last `@` after the last `/`: a literal `@` opening an npm
        // scope is not one.
        let last_slash = rest.rfind('/');
        let (rest, version) = match rest.rfind('@') {
            Some(at) if last_slash.is_none_or(|sl| at > sl) => (&rest[..at], Some(percent_decode(&rest[at + 1..])?)),
            _ => (rest, None),
        };
        if version.as_deref() == Some("") {
            return Err("empty version".into());
        }
        let rest = rest.trim_end_matches('/');
        let (namespace, name) = match rest.rsplit_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, rest),
        };
        let name = percent_decode(name)?;
        if name.is_empty() {
            return Err("empty name".into());
        }
        let namespace = match namespace {
            None => None,
            Some(ns) => {
                let segments =
                    ns.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect::<Result<Vec<_>, _>>()?;
                (!segments.is_empty()).then(|| segments.join("/"))
            }
        };
        Ok(Purl { ty: ty.to_ascii_lowercase(), namespace, name, version })
    }

    /// The package name as OSV spells it for `eco`, normalized as the index holds it.
    fn package_name(&self, eco: Ecosystem) -> String {
        let full = match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        };
        normalize_name(eco.as_osv(), &full)
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte =
                hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| format!("bad escape in {s:?}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

// ---------------------------------------------------------------------------------------
// OSV records

/// What is wrong with a record: the field (a JSON path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordError {
    id: Option<String>,
    field: String,
    reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = &self.id {
            write!(f, "record {id}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.reason)
    }
}

/// The parts of an OSV record matching and reporting use.
#[derive(Debug, Clone)]
struct Record {
    id: String,
    modified: String,
    modified_at: (i64, u32),
    withdrawn: bool,
    aliases: Vec<String>,
    summary: Option<String>,
    details: Option<String>,
    severity: Vec<ScoreEntry>,
    database_severity: Option<String>,
    affected: Vec<Affected>,
}

#[derive(Debug, Clone)]
struct ScoreEntry {
    kind: String,
    score: String,
}

#[derive(Debug, Clone)]
struct Affected {
    /// `None` for entries naming no package (`GIT`-only CVE records): never matched.
    package: Option<Package>,
    ranges: Vec<Range>,
    versions: Vec<String>,
    severity: Vec<ScoreEntry>,
}

#[derive(Debug, Clone)]
struct Package {
    ecosystem: String,
    name: String,
}

#[derive(Debug, Clone)]
struct Range {
    kind: String,
    events: Vec<Event>,
}

/// Reads fields of one JSON object, naming them by path in errors.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: String,
}

impl<'a> Fields<'a> {
    fn of(v: &'a Value, at: &str) -> Result<Fields<'a>, RecordError> {
        match v {
            Value::Object(obj) => Ok(Fields { obj, at: at.to_string() }),
            other => Err(err(at, format!("expected an object, found {}", kind(other)))),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.at.is_empty() { key.to_string() } else { format!("{}.{key}", self.at) }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>, RecordError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(err(&self.path(key), format!("expected a string, found {}", kind(other)))),
        }
    }

    fn req_str(&self, key: &str) -> Result<&'a str, RecordError> {
        match self.opt_str(key)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            Some(_) => Err(err(&self.path(key), "is empty".into())),
            None => Err(err(&self.path(key), "missing".into())),
        }
    }

    fn opt_array(&self, key: &str) -> Result<&'a [Value], RecordError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(err(&self.path(key), format!("expected an array, found {}", kind(other)))),
        }
    }

    fn str_list(&self, key: &str) -> Result<Vec<String>, RecordError> {
        self.opt_array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => {
                    Err(err(&format!("{}[{i}]", self.path(key)), format!("expected a string, found {}", kind(other))))
                }
            })
            .collect()
    }

    fn scores(&self, key: &str) -> Result<Vec<ScoreEntry>, RecordError> {
        let mut out = Vec::new();
        for (i, v) in self.opt_array(key)?.iter().enumerate() {
            let f = Fields::of(v, &format!("{}[{i}]", self.path(key)))?;
            out.push(ScoreEntry { kind: f.req_str("type")?.to_string(), score: f.req_str("score")?.to_string() });
        }
        Ok(out)
    }
}

fn err(field: &str, reason: String) -> RecordError {
    RecordError { id: None, field: field.to_string(), reason }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Record {
    /// Checks the fields matching relies on; free-form ones (`database_specific`,
    /// `ecosystem_specific`, `references`, …) are left alone.
    fn parse(v: &Value) -> Result<Record, RecordError> {
        let top = Fields::of(v, "")?;
        let id = top.req_str("id")?.to_string();
        Record::parse_fields(&top, &id).map_err(|mut e| {
            e.id = Some(id.clone());
            e
        })
    }

    fn parse_fields(top: &Fields<'_>, id: &str) -> Result<Record, RecordError> {
        let modified = top.req_str("modified")?.to_string();
        let modified_at =
            parse_rfc3339(&modified).ok_or_else(|| err("modified", format!("{modified:?} is not an RFC 3339 time")))?;
        let withdrawn = top.opt_str("withdrawn")?.is_some();
        let database_severity = match top.obj.get("database_specific") {
            Some(Value::Object(db)) => db.get("severity").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };

        let mut affected = Vec::new();
        for (i, a) in top.opt_array("affected")?.iter().enumerate() {
            let af = Fields::of(a, &format!("affected[{i}]"))?;
            let package = match af.obj.get("package") {
                None | Some(Value::Null) => None,
                Some(p) => {
                    let pf = Fields::of(p, &af.path("package"))?;
                    Some(Package {
                        ecosystem: pf.req_str("ecosystem")?.to_string(),
                        name: pf.req_str("name")?.to_string(),
                    })
                }
            };
            let mut ranges = Vec::new();
            for (j, r) in af.opt_array("ranges")?.iter().enumerate() {
                let rf = Fields::of(r, &format!("{}[{j}]", af.path("ranges")))?;
                let kind = rf.req_str("type")?.to_string();
                let mut events = Vec::new();
                for (k, e) in rf.opt_array("events")?.iter().enumerate() {
                    events.push(parse_event(e, &format!("{}[{k}]", rf.path("events")))?);
                }
                if events.is_empty() {
                    return Err(err(&rf.path("events"), "no events".into()));
                }
                ranges.push(Range { kind, events });
            }
            affected.push(Affected {
                package,
                ranges,
                versions: af.str_list("versions")?,
                severity: af.scores("severity")?,
            });
        }

        Ok(Record {
            id: id.to_string(),
            modified,
            modified_at,
            withdrawn,
            aliases: top.str_list("aliases")?,
            summary: top.opt_str("summary")?.map(str::to_string),
            details: top.opt_str("details")?.map(str::to_string),
            severity: top.scores("severity")?,
            database_severity,
            affected,
        })
    }

    /// This record as a finding for `purl`, when it affects `version` of package `name`.
    fn affecting(&self, eco: Ecosystem, name: &str, version: &str, purl: &str) -> Option<crate::verify::Vulnerability> {
        if self.withdrawn {
            return None;
        }
        let mut hit = false;
        let mut fixed: Vec<String> = Vec::new();
        let mut matched: Vec<&Affected> = Vec::new();
        for a in &self.affected {
            let Some(pkg) = &a.package else { continue };
            if pkg.ecosystem != eco.as_osv() || normalize_name(&pkg.ecosystem, &pkg.name) != name {
                continue;
            }
            let listed = a
                .versions
                .iter()
                .any(|l| l == version || version::compare(eco, l, version) == Some(std::cmp::Ordering::Equal));
            let mut in_range = false;
            // GIT ranges are commit graphs, not comparable with a version; other unknown
            // types are ignored likewise.
            for r in a.ranges.iter().filter(|r| r.kind == "SEMVER" || r.kind == "ECOSYSTEM") {
                if version::affected(eco, version, &r.events) {
                    in_range = true;
                    for e in &r.events {
                        if let Event::Fixed(f) = e
                            && !fixed.contains(f)
                        {
                            fixed.push(f.clone());
                        }
                    }
                }
            }
            if listed || in_range {
                hit = true;
                matched.push(a);
            }
        }
        if !hit {
            return None;
        }
        Some(crate::verify::Vulnerability {
            id: self.id.clone(),
            aliases: self.aliases.clone(),
            purl: purl.to_string(),
            severity: self.severity_for(&matched),
            summary: self.summary(),
            fixed,
        })
    }

    /// `database_specific.severity` if it names a level; else the CVSS v3.x base score of
    /// the record's (or the matched entries') `CVSS_V3` vector; else unknown.
    fn severity_for(&self, matched: &[&Affected]) -> Severity {
        if let Some(s) = self.database_severity.as_deref().and_then(severity_from_label) {
            return s;
        }
        let entries = self.severity.iter().chain(matched.iter().flat_map(|a| a.severity.iter()));
        entries
            .filter(|e| e.kind == "CVSS_V3")
            .find_map(|e| cvss3_base_score(&e.score))
            .map_or(Severity::Unknown, severity_from_score)
    }

    fn summary(&self) -> String {
        match (&self.summary, &self.details) {
            (Some(s), _) if !s.trim().is_empty() => s.trim().to_string(),
            (_, Some(d)) => d.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_string(),
            _ => String::new(),
        }
    }
}

fn parse_event(v: &Value, at: &str) -> Result<Event, RecordError> {
    let f = Fields::of(v, at)?;
    let mut found = Vec::new();
    for key in ["introduced", "fixed", "last_affected", "limit"] {
        if let Some(s) = f.opt_str(key)? {
            found.push(match key {
                "introduced" => Event::Introduced(s.to_string()),
                "fixed" => Event::Fixed(s.to_string()),
                "last_affected" => Event::LastAffected(s.to_string()),
                _ => Event::Limit(s.to_string()),
            });
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(err(at, "expected one of introduced, fixed, last_affected, limit".into())),
        _ => Err(err(at, "more than one of introduced, fixed, last_affected, limit".into())),
    }
}

fn severity_from_label(label: &str) -> Option<Severity> {
    match label.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" => Some(Severity::Critical),
        "HIGH" => Some(Severity::High),
        "MODERATE" | "MEDIUM" => Some(Severity::Medium),
        "LOW" => Some(Severity::Low),
        _ => None,
    }
}

/// CVSS v3.x qualitative rating. A score of 0.0 ("None") has no bucket in the report's
/// counts and maps to unknown.
fn severity_from_score(score: f64) -> Severity {
    if score >= 9.0 {
        Severity::Critical
    } else if score >= 7.0 {
        Severity::High
    } else if score >= 4.0 {
        Severity::Medium
    } else if score > 0.0 {
        Severity::Low
    } else {
        Severity::Unknown
    }
}

/// The CVSS v3.0/v3.1 base score of a vector such as
/// `CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H` (9.8), per the v3.1 specification § 7.1
/// (with its § Appendix A `Roundup`). Temporal and environmental metrics are ignored; `None`
/// when a base metric is missing, repeated or unknown.
pub fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut parts = vector.trim().split('/');
    if !matches!(parts.next()?, "CVSS:3.0" | "CVSS:3.1") {
        return None;
    }
    const BASE: [&str; 8] = ["AV", "AC", "PR", "UI", "S", "C", "I", "A"];
    let mut base: [Option<&str>; 8] = [None; 8];
    for part in parts {
        let (metric, value) = part.split_once(':')?;
        if let Some(i) = BASE.iter().position(|m| *m == metric)
            && base[i].replace(value).is_some()
        {
            return None;
        }
    }
    let [av, ac, pr, ui, s, c, i, a] = base;
    let changed = match s? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let av = match av? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match ac? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (pr?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match ui? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |v: Option<&str>| match v? {
        "H" => Some(0.56),
        "L" => Some(0.22),
        "N" => Some(0.0),
        _ => None,
    };
    let (c, i, a) = (cia(c)?, cia(i)?, cia(a)?);

    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02f64).powi(15) } else { 6.42 * iss };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Some(0.0);
    }
    let raw = if changed { 1.08 * (impact + exploitability) } else { impact + exploitability };
    Some(roundup(raw.min(10.0)))
}

/// CVSS v3.1 Appendix A: the smallest one-decimal number ≥ `x`, robust to float error.
fn roundup(x: f64) -> f64 {
    let int = (x * 100_000.0).round() as i64;
    if int % 10_000 == 0 { int as f64 / 100_000.0 } else { ((int / 10_000) + 1) as f64 / 10.0 }
}

/// RFC 3339 (`2024-02-20T17:41:06.123Z`, `…+02:00`) to (Unix seconds, nanoseconds).
fn parse_rfc3339(s: &str) -> Option<(i64, u32)> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        if d.iter().all(u8::is_ascii_digit) { std::str::from_utf8(d).ok()?.parse().ok() } else { None }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut pos = 19;
    let mut nanos: u32 = 0;
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 9 {
                nanos = nanos * 10 + u32::from(b[pos] - b'0');
            }
            pos += 1;
        }
        if pos == start {
            return None;
        }
        for _ in (pos - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(pos)? {
        b'Z' | b'z' if pos + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let (h, m) = (num(pos + 1..pos + 3)?, num(pos + 4..pos + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some((days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::VulnSource;
    use std::io::Write;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/osv")
    }

    /// The base fixture records (every ecosystem folder, not `update/`) copied into one
    /// directory, as an OSV mirror would lay them out.
    fn base_dir(tmp: &Path) -> PathBuf {
        let dir = tmp.join("osv");
        for eco in ["crates.io", "npm", "PyPI", "Go"] {
            let to = dir.join(eco);
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(fixtures().join(eco)).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
        dir
    }

    fn open(tmp: &Path) -> VulnDb {
        VulnDb::open(&tmp.join("db/vulndb.sqlite")).unwrap()
    }

    fn ids(db: &VulnDb, purl: &str) -> Vec<String> {
        db.affecting(purl).unwrap().into_iter().map(|v| v.id).collect()
    }

    fn loaded() -> (tempfile::TempDir, VulnDb) {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        let report = db.import(&base_dir(tmp.path())).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        (tmp, db)
    }

    #[test]
    fn vulndb_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<VulnDb>();
        let (_tmp, db) = loaded();
        let source: &dyn VulnSource = &db;
        assert_eq!(source.revision().unwrap(), db.revision().unwrap());
        assert_eq!(
            source.affecting("pkg:cargo/smallvec@1.0.0").unwrap(),
            db.affecting("pkg:cargo/smallvec@1.0.0").unwrap()
        );
        assert!(has_json_extension("a/é.JSON") && !has_json_extension("é.js") && !has_json_extension(".json"));
    }

    #[test]
    fn open_refuses_other_layout_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("v.sqlite");
        drop(VulnDb::open(&path).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
        let e = VulnDb::open(&path).unwrap_err();
        assert!(matches!(e, VulnDbError::Schema { found: 99, .. }), "{e}");
    }

    #[test]
    fn queries_from_many_threads_share_one_db() {
        let (_tmp, db) = loaded();
        let db = std::sync::Arc::new(db);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        assert_eq!(ids(&db, "pkg:cargo/smallvec@1.0.0"), ["RUSTSEC-2021-0003"]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn import_directory_counts_records() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        let empty_revision = db.revision().unwrap();
        let report = db.import(&base_dir(tmp.path())).unwrap();
        assert_eq!(report.added, 9);
        assert_eq!((report.updated, report.unchanged, report.withdrawn), (0, 0, 1));
        assert!(report.skipped.is_empty());
        assert_eq!(report.revision.len(), 64);
        assert_ne!(report.revision, empty_revision);
        assert_eq!(db.revision().unwrap(), report.revision);
        assert_eq!(db.record_count().unwrap(), (9, 1));
        let stats = db.stats().unwrap();
        let want: BTreeMap<String, u64> = [("Go", 1), ("PyPI", 3), ("crates.io", 2), ("npm", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(stats, want);
    }

    #[test]
    fn reimport_unchanged_keeps_revision() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        let dir = base_dir(tmp.path());
        let first = db.import(&dir).unwrap();
        let second = db.import(&dir).unwrap();
        assert_eq!((second.added, second.updated, second.unchanged, second.withdrawn), (0, 0, 9, 0));
        assert_eq!(second.revision, first.revision);
        // Reopening reads the same state from disk.
        drop(db);
        assert_eq!(open(tmp.path()).revision().unwrap(), first.revision);
    }

    #[test]
    fn import_update_replaces_newer_and_changes_revision() {
        let (_tmp, db) = loaded();
        let before = db.revision().unwrap();
        assert!(ids(&db, "pkg:npm/lodash-es@4.17.20").is_empty());
        assert!(ids(&db, "pkg:golang/golang.org/x/crypto@v0.16.0").is_empty());

        let report = db.import(&fixtures().join("update")).unwrap();
        assert_eq!((report.added, report.updated, report.unchanged), (1, 1, 0));
        assert_ne!(report.revision, before);
        assert_eq!(db.revision().unwrap(), report.revision);
        assert_eq!(ids(&db, "pkg:npm/lodash-es@4.17.20"), ["GHSA-35jh-r3h4-6jhm"]);
        assert_eq!(ids(&db, "pkg:golang/golang.org/x/crypto@v0.16.0"), ["GO-2023-2402"]);
        let lodash = db.affecting("pkg:npm/lodash@4.17.20").unwrap();
        assert_eq!(lodash[0].summary, "Command Injection in lodash (lodash-es too)");
    }

    #[test]
    fn import_keeps_stored_record_when_incoming_is_older() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        db.import(&fixtures().join("update")).unwrap();
        let before = db.revision().unwrap();
        // The base lodash record is older than the update's.
        let report = db.import(&fixtures().join("npm/GHSA-35jh-r3h4-6jhm.json")).unwrap();
        assert_eq!((report.added, report.updated, report.unchanged), (0, 0, 1));
        assert_eq!(report.revision, before);
        assert_eq!(ids(&db, "pkg:npm/lodash-es@4.0.0"), ["GHSA-35jh-r3h4-6jhm"]);
    }

    #[test]
    fn modified_compares_as_time_not_text() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir_all(&dir).unwrap();
        let rec = |modified: &str, fixed: &str| {
            format!(
                r#"{{"id":"TEST-1","modified":"{modified}","affected":[{{"package":{{"ecosystem":"crates.io","name":"t"}},
                "ranges":[{{"type":"SEMVER","events":[{{"introduced":"0"}},{{"fixed":"{fixed}"}}]}}]}}]}}"#
            )
        };
        let db = open(tmp.path());
        std::fs::write(dir.join("a.json"), rec("2024-01-01T10:00:00Z", "1.0.0")).unwrap();
        db.import(&dir).unwrap();
        // Textually smaller ('.' < 'Z'), but half a second later.
        std::fs::write(dir.join("a.json"), rec("2024-01-01T10:00:00.5Z", "2.0.0")).unwrap();
        assert_eq!(db.import(&dir).unwrap().updated, 1);
        // Earlier, in another offset.
        std::fs::write(dir.join("a.json"), rec("2024-01-01T11:00:00+02:00", "3.0.0")).unwrap();
        assert_eq!(db.import(&dir).unwrap().unchanged, 1);
        assert_eq!(db.affecting("pkg:cargo/t@1.5.0").unwrap()[0].fixed, ["2.0.0"]);
    }

    #[test]
    fn import_zip_matches_directory_import() {
        let tmp = tempfile::tempdir().unwrap();
        let zip_path = tmp.path().join("all.zip");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        let mut names = Vec::new();
        for eco in ["crates.io", "npm", "PyPI", "Go"] {
            for entry in std::fs::read_dir(fixtures().join(eco)).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                w.start_file(&name, opts).unwrap();
                w.write_all(&std::fs::read(entry.path()).unwrap()).unwrap();
                names.push(name);
            }
        }
        w.start_file("README.txt", opts).unwrap();
        w.write_all(b"not a record").unwrap();
        w.start_file("broken.json", opts).unwrap();
        w.write_all(b"{\"id\": \"X-1\"").unwrap();
        w.finish().unwrap();

        let db = VulnDb::open(&tmp.path().join("zip.sqlite")).unwrap();
        let report = db.import(&zip_path).unwrap();
        assert_eq!(report.added, names.len());
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].contains("all.zip!broken.json: not JSON"), "{:?}", report.skipped);

        let dir_db = VulnDb::open(&tmp.path().join("dir.sqlite")).unwrap();
        assert_eq!(dir_db.import(&base_dir(tmp.path())).unwrap().revision, report.revision);
        assert_eq!(ids(&db, "pkg:cargo/smallvec@1.6.0"), ["RUSTSEC-2021-0003"]);
    }

    #[test]
    fn invalid_files_are_skipped_and_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = base_dir(tmp.path());
        let bad = dir.join("bad");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("garbage.json"), "this is not json").unwrap();
        std::fs::write(bad.join("array.json"), "[1, 2]").unwrap();
        std::fs::write(bad.join("no-id.json"), r#"{"modified": "2024-01-01T00:00:00Z"}"#).unwrap();
        std::fs::write(bad.join("bad-time.json"), r#"{"id": "X-1", "modified": "yesterday"}"#).unwrap();
        std::fs::write(
            bad.join("bad-event.json"),
            r#"{"id": "X-2", "modified": "2024-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "npm",
               "name": "x"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0", "fixed": "1.0.0"}]}]}]}"#,
        )
        .unwrap();
        std::fs::write(bad.join("notes.txt"), "ignored: not .json").unwrap();

        let db = open(tmp.path());
        let report = db.import(&dir).unwrap();
        assert_eq!(report.added, 9);
        let skipped = report.skipped.join("\n");
        assert_eq!(report.skipped.len(), 5, "{skipped}");
        for want in [
            "array.json: expected an object, found an array",
            "bad-event.json: record X-2: affected[0].ranges[0].events[0]: more than one of",
            "bad-time.json: record X-1: modified: \"yesterday\" is not an RFC 3339 time",
            "garbage.json: not JSON",
            "no-id.json: id: missing",
        ] {
            assert!(skipped.contains(want), "{want} not in\n{skipped}");
        }
    }

    #[test]
    fn import_is_all_or_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let db = open(tmp.path());
        let before = db.revision().unwrap();
        // A zip that is not one: the import fails and leaves nothing behind.
        let fake = tmp.path().join("all.zip");
        std::fs::write(&fake, b"PK\x03\x04 truncated").unwrap();
        assert!(matches!(db.import(&fake), Err(VulnDbError::Zip { .. })));
        assert!(matches!(db.import(&tmp.path().join("missing")), Err(VulnDbError::Io { .. })));
        std::fs::write(tmp.path().join("x.txt"), "hello").unwrap();
        assert!(matches!(db.import(&tmp.path().join("x.txt")), Err(VulnDbError::Source { .. })));
        assert_eq!(db.record_count().unwrap(), (0, 0));
        assert_eq!(db.revision().unwrap(), before);
    }

    #[test]
    fn query_crates_io_boundaries() {
        let (_tmp, db) = loaded();
        assert_eq!(ids(&db, "pkg:cargo/hyper@0.14.9"), ["RUSTSEC-2021-0078"]);
        assert_eq!(ids(&db, "pkg:cargo/hyper@0.1.0"), ["RUSTSEC-2021-0078"]);
        assert!(ids(&db, "pkg:cargo/hyper@0.14.10").is_empty());
        assert!(ids(&db, "pkg:cargo/hyper@1.0.0").is_empty());
        // Two intervals: [0.6.3, 0.6.14) and [1.0.0, 1.6.1).
        for (v, hit) in
            [("0.6.2", false), ("0.6.3", true), ("0.6.14", false), ("1.0.0", true), ("1.6.0", true), ("1.6.1", false)]
        {
            assert_eq!(ids(&db, &format!("pkg:cargo/smallvec@{v}")).len(), usize::from(hit), "smallvec {v}");
        }
        // crates.io names compare as they are.
        assert!(ids(&db, "pkg:cargo/Hyper@0.14.9").is_empty());
    }

    #[test]
    fn query_reports_fields() {
        let (_tmp, db) = loaded();
        let v = db.affecting("pkg:cargo/smallvec@1.5.0?arch=x86_64#src").unwrap();
        assert_eq!(v.len(), 1);
        let v = &v[0];
        assert_eq!(v.purl, "pkg:cargo/smallvec@1.5.0?arch=x86_64#src");
        assert_eq!(v.aliases, ["CVE-2021-25900", "GHSA-43w2-9j62-hq99"]);
        // No summary: the first line of `details`.
        assert_eq!(v.summary, "Buffer overflow in SmallVec::insert_many");
        // Only a CVSS_V3 vector: 9.8.
        assert_eq!(v.severity, Severity::Critical);
        // Only the fixed events of the range that matched... both intervals are one range.
        assert_eq!(v.fixed, ["0.6.14", "1.6.1"]);

        let hyper = &db.affecting("pkg:cargo/hyper@0.14.0").unwrap()[0];
        assert_eq!(hyper.severity, Severity::Unknown);
        assert_eq!(hyper.fixed, ["0.14.10"]);
    }

    #[test]
    fn query_npm_scoped_and_prerelease() {
        let (_tmp, db) = loaded();
        assert_eq!(ids(&db, "pkg:npm/lodash@4.17.20"), ["GHSA-35jh-r3h4-6jhm"]);
        assert!(ids(&db, "pkg:npm/lodash@4.17.21").is_empty());
        let lodash = &db.affecting("pkg:npm/lodash@4.17.20").unwrap()[0];
        assert_eq!(lodash.severity, Severity::High);

        let babel = "GHSA-67hx-6x53-jw92";
        assert_eq!(ids(&db, "pkg:npm/%40babel/traverse@7.23.1"), [babel]);
        assert_eq!(ids(&db, "pkg:npm/@babel/traverse@7.23.1"), [babel]);
        assert!(ids(&db, "pkg:npm/%40babel/traverse@7.23.2").is_empty());
        assert_eq!(ids(&db, "pkg:npm/%40babel/traverse@8.0.0-alpha.3"), [babel]);
        assert!(ids(&db, "pkg:npm/%40babel/traverse@8.0.0-alpha.4").is_empty());
        assert!(ids(&db, "pkg:npm/%40babel/traverse@8.0.0").is_empty());
        let v = &db.affecting("pkg:npm/%40babel/traverse@8.0.0-alpha.1").unwrap()[0];
        assert_eq!(v.fixed, ["8.0.0-alpha.4"]);
        assert_eq!(v.severity, Severity::Critical);
        // The second package of the record, unfixed.
        assert_eq!(ids(&db, "pkg:npm/babel-traverse@6.26.0"), [babel]);
        assert!(db.affecting("pkg:npm/babel-traverse@6.26.0").unwrap()[0].fixed.is_empty());
        // An unscoped package of the same name is another package.
        assert!(ids(&db, "pkg:npm/traverse@7.0.0").is_empty());
    }

    #[test]
    fn query_pypi_normalizes_names_and_versions() {
        let (_tmp, db) = loaded();
        let requests = "GHSA-j8r2-6x86-q33q";
        assert!(ids(&db, "pkg:pypi/requests@2.2.1").is_empty());
        assert_eq!(ids(&db, "pkg:pypi/requests@2.3"), [requests]);
        assert_eq!(ids(&db, "pkg:pypi/Requests@2.31.0rc1"), [requests]);
        assert!(ids(&db, "pkg:pypi/requests@2.31.0").is_empty());
        assert!(ids(&db, "pkg:pypi/requests@2.31").is_empty());
        assert_eq!(db.affecting("pkg:pypi/requests@2.30.0").unwrap()[0].severity, Severity::Medium);

        // last_affected is inclusive; the record spells the name `Flask-Cors`.
        let cors = "GHSA-84pr-m4jr-85g5";
        assert_eq!(ids(&db, "pkg:pypi/flask-cors@4.0.0"), [cors]);
        assert_eq!(ids(&db, "pkg:pypi/Flask_CORS@4.0"), [cors]);
        assert_eq!(ids(&db, "pkg:pypi/flask.cors@3.0.10"), [cors]);
        assert!(ids(&db, "pkg:pypi/flask-cors@4.0.1").is_empty());
        assert!(ids(&db, "pkg:pypi/flask-cors@4.0.0.post1").is_empty());
        let v = &db.affecting("pkg:pypi/flask-cors@4.0.0").unwrap()[0];
        assert!(v.fixed.is_empty());
        assert_eq!(v.summary, "flask-cors vulnerable to log injection when the log level is set to debug");
    }

    #[test]
    fn query_versions_list_only() {
        let (_tmp, db) = loaded();
        for v in ["0.1.2", "0.2.2", "0.2.6", "0.2.6.0"] {
            assert_eq!(ids(&db, &format!("pkg:pypi/ctx@{v}")), ["MAL-2022-1"], "ctx {v}");
        }
        for v in ["0.1.1", "0.2.0", "0.2.3", "0.2.7"] {
            assert!(ids(&db, &format!("pkg:pypi/ctx@{v}")).is_empty(), "ctx {v}");
        }
        let v = &db.affecting("pkg:pypi/ctx@0.2.6").unwrap()[0];
        assert_eq!(v.severity, Severity::Critical);
        assert!(v.fixed.is_empty());
    }

    #[test]
    fn query_go_module_paths() {
        let (_tmp, db) = loaded();
        let id = "GO-2023-2102";
        assert_eq!(ids(&db, "pkg:golang/golang.org/x/net@v0.16.0"), [id]);
        assert_eq!(ids(&db, "pkg:golang/golang.org/x/net@v0.0.0-20230101000000-abcdefabcdef"), [id]);
        assert!(ids(&db, "pkg:golang/golang.org/x/net@v0.17.0").is_empty());
        assert!(ids(&db, "pkg:golang/golang.org/x/net@v0.18.0").is_empty());
        assert!(ids(&db, "pkg:golang/golang.org/x/crypto@v0.16.0").is_empty());
        // The standard library, two intervals.
        assert_eq!(ids(&db, "pkg:golang/stdlib@1.20.9"), [id]);
        assert!(ids(&db, "pkg:golang/stdlib@1.20.10").is_empty());
        assert_eq!(ids(&db, "pkg:golang/stdlib@v1.21.2"), [id]);
        assert!(ids(&db, "pkg:golang/stdlib@1.21.3").is_empty());
        let v = &db.affecting("pkg:golang/golang.org/x/net@v0.16.0").unwrap()[0];
        assert_eq!(v.severity, Severity::Unknown);
        assert_eq!(v.fixed, ["0.17.0"]);
    }

    #[test]
    fn withdrawn_never_matches() {
        let (_tmp, db) = loaded();
        assert!(ids(&db, "pkg:npm/minimist@0.0.1").is_empty());
        assert!(ids(&db, "pkg:npm/minimist@1.2.5").is_empty());
    }

    #[test]
    fn unknown_ecosystems_are_kept_but_never_match() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("DSA-1.json"),
            r#"{"id": "DEBIAN-CVE-2024-0001", "modified": "2024-01-01T00:00:00Z", "affected": [{"package":
               {"ecosystem": "Debian:12", "name": "openssl"}, "ranges": [{"type": "ECOSYSTEM", "events":
               [{"introduced": "0"}]}]}, {"ranges": [{"type": "GIT", "repo": "https://example.com/x",
               "events": [{"introduced": "0"}]}]}]}"#,
        )
        .unwrap();
        let db = open(tmp.path());
        assert_eq!(db.import(&dir).unwrap().added, 1);
        assert_eq!(db.stats().unwrap().get("Debian:12"), Some(&1));
        assert!(ids(&db, "pkg:deb/debian/openssl@3.0.11-1").is_empty());
        assert!(ids(&db, "pkg:maven/org.example/openssl@1.0.0").is_empty());
    }

    #[test]
    fn purl_errors_name_the_problem() {
        let (_tmp, db) = loaded();
        for (purl, want) in [
            ("cargo/serde@1.0.0", "scheme"),
            ("pkg:cargo", "no type and name"),
            ("pkg:cargo/serde", "no version"),
            ("pkg:cargo/serde@", "empty version"),
            ("pkg:npm/%4@1.0.0", "bad escape"),
        ] {
            let e = db.affecting(purl).unwrap_err().to_string();
            assert!(e.contains(want), "{purl}: {e}");
        }
        // Through the trait, as a string.
        let e = VulnSource::affecting(&db, "pkg:cargo/serde").unwrap_err();
        assert!(e.contains("pkg:cargo/serde"), "{e}");
    }

    #[test]
    fn purl_parsing() {
        let p = Purl::parse("pkg:npm/%40babel/traverse@7.23.0").unwrap();
        assert_eq!((p.namespace.as_deref(), p.name.as_str()), (Some("@babel"), "traverse"));
        assert_eq!(p.package_name(Ecosystem::Npm), "@babel/traverse");
        let p = Purl::parse("PKG:golang/golang.org/x/net@v0.17.0?type=module").unwrap();
        assert_eq!(p.ty, "golang");
        assert_eq!(p.package_name(Ecosystem::Go), "golang.org/x/net");
        assert_eq!(p.version.as_deref(), Some("v0.17.0"));
        let p = Purl::parse("pkg:pypi/Django_REST.framework@3.14.0").unwrap();
        assert_eq!(p.package_name(Ecosystem::PyPI), "django-rest-framework");
        let p = Purl::parse("pkg://cargo/serde@1.0.0%2Bbuild").unwrap();
        assert_eq!(p.version.as_deref(), Some("1.0.0+build"));
        assert_eq!(Purl::parse("pkg:npm/@scope/name").unwrap().version, None);
        assert_eq!(pep503("Foo__Bar-.-baz"), "foo-bar-baz");
    }

    #[test]
    fn severity_labels_and_cvss_v4() {
        let rec = |extra: &str| {
            let v: Value = serde_json::from_str(&format!(
                r#"{{"id": "T-1", "modified": "2024-01-01T00:00:00Z", "affected": [{{"package": {{"ecosystem": "npm",
                    "name": "t"}}, "ranges": [{{"type": "SEMVER", "events": [{{"introduced": "0"}}]}}]}}] {extra}}}"#
            ))
            .unwrap();
            let r = Record::parse(&v).unwrap();
            r.affecting(Ecosystem::Npm, "t", "1.0.0", "pkg:npm/t@1.0.0").unwrap().severity
        };
        assert_eq!(rec(""), Severity::Unknown);
        assert_eq!(rec(r#", "database_specific": {"severity": "LOW"}"#), Severity::Low);
        assert_eq!(rec(r#", "database_specific": {"severity": "moderate"}"#), Severity::Medium);
        // A label that is no level falls through to the vector.
        assert_eq!(
            rec(r#", "database_specific": {"severity": "informational"},
                   "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N"}]"#),
            Severity::Medium
        );
        // The label wins over the vector.
        assert_eq!(
            rec(r#", "database_specific": {"severity": "LOW"},
                   "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]"#),
            Severity::Low
        );
        assert_eq!(
            rec(
                r#", "severity": [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]"#
            ),
            Severity::Unknown
        );
    }

    #[test]
    fn cvss3_base_scores() {
        for (vector, score) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 8.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
            ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
            ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", 5.3),
            ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            // Temporal metrics are ignored.
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:U/RL:O/RC:C", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ] {
            assert_eq!(cvss3_base_score(vector), Some(score), "{vector}");
        }
        for bad in [
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert_eq!(cvss3_base_score(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(parse_rfc3339("2024-02-20T17:41:06.123Z"), Some((1_708_450_866, 123_000_000)));
        assert_eq!(parse_rfc3339("2024-02-20T19:41:06+02:00"), Some((1_708_450_866, 0)));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.000000001Z"), Some((951_868_800, 1)));
        for bad in ["2024-02-20", "2024-02-20T17:41:06", "2024-13-01T00:00:00Z", "2024-02-20T17:41:06.Z", "yesterday"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
