//! The runner's audit trail: an append-only, hash-chained JSON Lines file of what the runner
//! did (pulls, starts, stops, failed requests, refusals), and [`verify`], which walks it and
//! names the first line that is wrong (`berth audit verify` prints it).
//!
//! # Format
//!
//! One record per line, each line `serde_json::to_vec(&record)` followed by `\n`, the keys in
//! exactly this order (the field order of [`Record`]; `details` keys are as `serde_json::Map`
//! orders them):
//!
//! ```json
//! {"seq":1,"time":"2025-01-01T00:00:00.000Z","event":"pull","subject":"host/acme/x@sha256:…","details":{},"prev":"000…000","hash":"…"}
//! ```
//!
//! - `seq`: 1 for the first record, then +1 per line (so `seq` is the line number).
//! - `time`: RFC 3339, UTC, milliseconds.
//! - `event`: a free string; the runner writes `pull`, `start`, `stop`, `request_failed`,
//!   `policy_refused`, `egress_refused`.
//! - `subject`: an image reference or a plugin id.
//! - `details`: a JSON object.
//! - `prev`: lowercase hex SHA-256 of the previous line's bytes (without its `\n`); 64 zeros on
//!   the first line.
//! - `hash`: lowercase hex SHA-256 of `serde_json::to_vec` of the record *without* the `hash`
//!   field, i.e. of `{"seq":…,"time":…,"event":…,"subject":…,"details":…,"prev":…}` in that key
//!   order, with no whitespace (the private `Hashed` struct).
//!
//! A line must also be byte-for-byte the canonical serialization of the record it parses to;
//! otherwise a whitespace or escaping edit in the last line would go unnoticed (no later `prev`
//! covers it).
//!
//! # What verification can and cannot tell
//!
//! Editing any byte, deleting or reordering lines, or inserting a forged line in the middle is
//! detected: the edited line's `hash` no longer matches, or the next line's `seq`/`prev` does
//! not follow. Two things cannot be detected from the file alone, because the chain is not
//! keyed: removing whole lines from the end, and rewriting every line from some point on with
//! freshly computed hashes. The defence for both is an anchor kept elsewhere:
//! [`VerifyReport::head`] is the last record's `hash`; record it somewhere the runner host
//! cannot rewrite, and later check that it still occurs in the file ([`verify_anchored`],
//! `berth audit verify --anchor`).
//!
//! # Writing
//!
//! [`AuditLog`] appends with one `write_all` of the whole line on a file opened `O_APPEND`,
//! then `sync_data`, under both an in-process mutex and an exclusive `flock`, so threads and
//! processes sharing a file extend one chain. It refuses to append after a damaged last line
//! (say, a write cut short by a crash) rather than extend a broken chain.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The longest line (without `\n`) written or read; bounds memory on a hostile file.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    // Not `source`: anyhow's `{:#}` would print the io error twice.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: line {line}: {problem}")]
    Broken { path: String, line: u64, problem: Problem },
    #[error(
        "{path}: the last record is damaged ({problem}); refusing to extend a broken chain (run `berth audit verify {path}`, then repair the file or move it aside)"
    )]
    DamagedTail { path: String, problem: Problem },
    #[error("{path}: no record has hash {anchor} (the log was truncated or rewritten since it was anchored)")]
    AnchorMissing { path: String, anchor: String },
    #[error("audit details must be a JSON object, not {0}")]
    Details(&'static str),
    #[error("an audit record would be {0} bytes, over the {MAX_LINE}-byte limit")]
    TooLarge(usize),
    #[error("encoding an audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

impl AuditError {
    fn io(path: &Path, error: std::io::Error) -> Self {
        AuditError::Io { path: path.display().to_string(), error }
    }
}

/// What is wrong with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a record: bad JSON, a missing or unknown field, wrong types.
    Unparseable(String),
    /// Parses, but is not the canonical serialization of what it parses to.
    NotCanonical,
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// The final line has no `\n`: a write was cut short (or the file cut mid-line).
    Truncated,
    /// `hash` does not match the record's content: the record was edited.
    HashMismatch { recorded: String, computed: String },
    /// `seq` does not follow the previous line's (a line deleted, repeated or moved).
    Seq { expected: u64, found: u64 },
    /// `prev` is not the hash of the previous line (a line deleted, edited, inserted or moved).
    Prev { expected: String, found: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unparseable(m) => write!(f, "not an audit record: {m}"),
            Problem::NotCanonical => f.write_str("not in canonical form (the line was edited)"),
            Problem::TooLong => write!(f, "longer than {MAX_LINE} bytes"),
            Problem::Truncated => f.write_str("truncated: the final line has no newline (an interrupted write?)"),
            Problem::HashMismatch { recorded, computed } => {
                write!(f, "hash {recorded} does not match the record's content ({computed}): the record was edited")
            }
            Problem::Seq { expected, found } if found > expected => {
                write!(f, "seq gap: expected {expected}, found {found} (a line was deleted?)")
            }
            Problem::Seq { expected, found } => {
                write!(
                    f,
                    "seq repeated or out of order: expected {expected}, found {found} (lines reordered or inserted?)"
                )
            }
            Problem::Prev { expected, found } => write!(
                f,
                "prev {found} is not the hash of the previous line ({expected}): a line was deleted, inserted, reordered or edited"
            ),
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub event: String,
    pub subject: String,
    pub details: Map<String, Value>,
    pub prev: String,
    pub hash: String,
}

/// The hashed part of a record: [`Record`] without `hash`, same key order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time: &'a str,
    event: &'a str,
    subject: &'a str,
    details: &'a Map<String, Value>,
    prev: &'a str,
}

impl Record {
    /// The hex SHA-256 this record's `hash` must hold.
    pub fn compute_hash(&self) -> Result<String, serde_json::Error> {
        let h = Hashed {
            seq: self.seq,
            time: &self.time,
            event: &self.event,
            subject: &self.subject,
            details: &self.details,
            prev: &self.prev,
        };
        Ok(sha256_hex(&serde_json::to_vec(&h)?))
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Parses one line (without `\n`) and checks everything that needs no neighbour: shape,
/// canonical form, `hash`.
fn check_line(line: &[u8]) -> Result<Record, Problem> {
    if line.len() > MAX_LINE {
        return Err(Problem::TooLong);
    }
    let r: Record = serde_json::from_slice(line).map_err(|e| Problem::Unparseable(e.to_string()))?;
    let canonical = serde_json::to_vec(&r).map_err(|e| Problem::Unparseable(e.to_string()))?;
    if canonical != line {
        return Err(Problem::NotCanonical);
    }
    let computed = r.compute_hash().map_err(|e| Problem::Unparseable(e.to_string()))?;
    if computed != r.hash {
        return Err(Problem::HashMismatch { recorded: r.hash, computed });
    }
    Ok(r)
}

/// Where the chain stands: what the next record continues from.
#[derive(Debug)]
struct Tail {
    next_seq: u64,
    prev: String,
    /// File length this was read at; a different length means another writer appended.
    len: u64,
}

/// An open audit log; share it (`Arc`) between threads.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    tail: Mutex<Tail>,
}

/// An exclusive `flock` held for one append; other processes appending to the same file wait.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn acquire(f: &'a File) -> std::io::Result<Self> {
        loop {
            // SAFETY: flock on a file descriptor we own for the lock's lifetime.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `acquire`; closing the file would release it anyway.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl AuditLog {
    /// Opens `path`, creating it (mode 0600) if absent, and reads its last line to continue
    /// the chain. Fails if that line is damaged. Does not verify the whole file ([`verify`]).
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref();
        let opts = || {
            let mut o = OpenOptions::new();
            o.read(true).append(true).mode(0o600);
            o
        };
        let file = match opts().create_new(true).open(path) {
            Ok(f) => {
                // A new file: make its directory entry durable too, or a crash could lose
                // the log along with records already reported as written.
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| AuditError::io(dir, e))?;
                }
                f
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                opts().open(path).map_err(|e| AuditError::io(path, e))?
            }
            Err(e) => return Err(AuditError::io(path, e)),
        };
        let tail = read_tail(path, &file)?;
        Ok(AuditLog { path: path.to_path_buf(), file, tail: Mutex::new(tail) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and syncs it to disk. `details` must be a JSON object (or null,
    /// written as `{}`).
    pub fn append(&self, event: &str, subject: &str, details: Value) -> Result<Record, AuditError> {
        let details = match details {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            Value::Bool(_) => return Err(AuditError::Details("a boolean")),
            Value::Number(_) => return Err(AuditError::Details("a number")),
            Value::String(_) => return Err(AuditError::Details("a string")),
            Value::Array(_) => return Err(AuditError::Details("an array")),
        };
        // A panic elsewhere while holding the lock leaves nothing half-done in `Tail` that the
        // length check below does not catch, so a poisoned mutex is still usable.
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let _flock = FileLock::acquire(&self.file).map_err(|e| AuditError::io(&self.path, e))?;
        let len = self.file.metadata().map_err(|e| AuditError::io(&self.path, e))?.len();
        if len != tail.len {
            // Another process appended (or one of our writes failed part-way): continue from
            // what is actually in the file, refusing if that is damaged.
            *tail = read_tail(&self.path, &self.file)?;
        }
        let mut r = Record {
            seq: tail.next_seq,
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            event: event.to_string(),
            subject: subject.to_string(),
            details,
            prev: tail.prev.clone(),
            hash: String::new(),
        };
        r.hash = r.compute_hash()?;
        let mut line = serde_json::to_vec(&r)?;
        if line.len() > MAX_LINE {
            return Err(AuditError::TooLarge(line.len()));
        }
        let prev = sha256_hex(&line);
        line.push(b'\n');
        // One write_all of the whole line on an O_APPEND file: under the locks no other
        // writer interleaves, and a crash leaves at worst a partial final line, which the
        // next open (and `verify`) reports instead of building on it.
        (&self.file).write_all(&line).map_err(|e| AuditError::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| AuditError::io(&self.path, e))?;
        *tail = Tail { next_seq: r.seq + 1, prev, len: len + line.len() as u64 };
        Ok(r)
    }
}

/// Reads the last line of `file` (by reading backwards, not the whole file) and checks it.
fn read_tail(path: &Path, file: &File) -> Result<Tail, AuditError> {
    let damaged = |problem| AuditError::DamagedTail { path: path.display().to_string(), problem };
    let len = file.metadata().map_err(|e| AuditError::io(path, e))?.len();
    if len == 0 {
        return Ok(Tail { next_seq: 1, prev: GENESIS.to_string(), len });
    }
    // Read back at most MAX_LINE + 2 bytes: the line, its `\n`, and the previous `\n`.
    let want = len.min(MAX_LINE as u64 + 2);
    let mut buf = vec![0u8; want as usize];
    file.read_exact_at(&mut buf, len - want).map_err(|e| AuditError::io(path, e))?;
    let Some((&b'\n', body)) = buf.split_last() else {
        return Err(damaged(Problem::Truncated));
    };
    let start = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if want == len => 0,
        None => return Err(damaged(Problem::TooLong)),
    };
    let line = &body[start..];
    let r = check_line(line).map_err(damaged)?;
    Ok(Tail { next_seq: r.seq + 1, prev: sha256_hex(line), len })
}

/// What a valid log holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub records: u64,
    /// Records per `event`.
    pub events: BTreeMap<String, u64>,
    /// The last record's `hash` (none for an empty log): anchor it elsewhere to detect later
    /// truncation or rewriting.
    pub head: Option<String>,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
}

/// Walks the whole log, checking every line; the first problem is returned as
/// [`AuditError::Broken`] with its (1-based) line number.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport, AuditError> {
    walk(path.as_ref(), |_| {})
}

/// [`verify`], and also that some record's `hash` is `anchor` (a head recorded earlier).
pub fn verify_anchored(path: impl AsRef<Path>, anchor: &str) -> Result<VerifyReport, AuditError> {
    let path = path.as_ref();
    let mut found = false;
    let report = walk(path, |r| found |= r.hash == anchor)?;
    if !found {
        return Err(AuditError::AnchorMissing { path: path.display().to_string(), anchor: anchor.to_string() });
    }
    Ok(report)
}

/// Walks the log, calling `each` for every record that checks out, in order, and stopping at
/// the first problem (records before it have been passed to `each`).
pub fn walk(path: &Path, mut each: impl FnMut(&Record)) -> Result<VerifyReport, AuditError> {
    let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let mut report = VerifyReport::default();
    let mut prev = GENESIS.to_string();
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // +2: room for the newline and one byte more, so an over-long line is seen as such.
        let n =
            (&mut reader).take(MAX_LINE as u64 + 2).read_until(b'\n', &mut buf).map_err(|e| AuditError::io(path, e))?;
        if n == 0 {
            return Ok(report);
        }
        line_no += 1;
        let broken = |problem| AuditError::Broken { path: path.display().to_string(), line: line_no, problem };
        let line = match buf.split_last() {
            Some((&b'\n', line)) => line,
            _ if buf.len() > MAX_LINE => return Err(broken(Problem::TooLong)),
            _ => return Err(broken(Problem::Truncated)),
        };
        let r = check_line(line).map_err(broken)?;
        if r.seq != line_no {
            return Err(broken(Problem::Seq { expected: line_no, found: r.seq }));
        }
        if r.prev != prev {
            return Err(broken(Problem::Prev { expected: prev, found: r.prev }));
        }
        prev = sha256_hex(line);
        report.records += 1;
        *report.events.entry(r.event.clone()).or_default() += 1;
        report.first_time.get_or_insert_with(|| r.time.clone());
        report.last_time = Some(r.time.clone());
        report.head = Some(r.hash.clone());
        each(&r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for i in 1..=n {
            log.append("start", &format!("plugin-{i}"), json!({"i": i, "why": "test"})).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut s = lines.join("\n");
        s.push('\n');
        std::fs::write(path, s).unwrap();
    }

    fn broken_at(path: &Path) -> (u64, Problem) {
        match verify(path) {
            Err(AuditError::Broken { line, problem, .. }) => (line, problem),
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_across_reopen() {
        let (_d, path) = log_with(3);
        let log = AuditLog::open(&path).unwrap();
        let r = log.append("stop", "plugin-1", Value::Null).unwrap();
        assert_eq!(r.seq, 4);
        let r2 = log.append("policy_refused", "host/acme/x@sha256:00", json!({"reason": "unsigned"})).unwrap();
        assert_eq!(r2.prev, sha256_hex(lines(&path)[3].as_bytes()));
        let rep = verify(&path).unwrap();
        assert_eq!(rep.records, 5);
        assert_eq!(rep.events["start"], 3);
        assert_eq!(rep.events["stop"], 1);
        assert_eq!(rep.head.as_deref(), Some(r2.hash.as_str()));
        let first: Record = serde_json::from_str(&lines(&path)[0]).unwrap();
        assert_eq!(first.prev, GENESIS);
        assert_eq!(first.seq, 1);
        assert!(first.time.ends_with('Z') && first.time.len() == "2025-01-01T00:00:00.000Z".len());
        verify_anchored(&path, &first.hash).unwrap();
        assert!(matches!(verify_anchored(&path, GENESIS), Err(AuditError::AnchorMissing { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn empty_log_verifies_with_no_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        AuditLog::open(&path).unwrap();
        let rep = verify(&path).unwrap();
        assert_eq!(rep.records, 0);
        assert_eq!(rep.head, None);
    }

    #[test]
    fn details_must_be_an_object() {
        let (_d, path) = log_with(0);
        let log = AuditLog::open(&path).unwrap();
        assert!(matches!(log.append("x", "y", json!([1])), Err(AuditError::Details(_))));
        assert_eq!(verify(&path).unwrap().records, 0);
    }

    #[test]
    fn deleted_middle_line_is_a_seq_gap_at_that_line() {
        let (_d, path) = log_with(5);
        let mut l = lines(&path);
        l.remove(2);
        write_lines(&path, &l);
        assert_eq!(broken_at(&path), (3, Problem::Seq { expected: 3, found: 4 }));
    }

    #[test]
    fn every_edited_field_is_detected_on_its_line() {
        for (field, from, to) in [
            ("seq", "\"seq\":3", "\"seq\":9"),
            ("time", "\"time\":\"2", "\"time\":\"1"),
            ("event", "\"event\":\"start\"", "\"event\":\"stopp\""),
            ("subject", "plugin-3", "plugin-X"),
            ("details", "\"why\":\"test\"", "\"why\":\"tost\""),
            ("prev", "\"prev\":\"", "\"prev\":\"f"),
            ("hash", "\"hash\":\"", "\"hash\":\"0"),
        ] {
            let (_d, path) = log_with(5);
            let mut l = lines(&path);
            assert!(l[2].contains(from), "{field}: {}", l[2]);
            l[2] = l[2].replacen(from, to, 1);
            write_lines(&path, &l);
            let (line, problem) = broken_at(&path);
            assert_eq!(line, 3, "{field}: {problem}");
            assert!(matches!(problem, Problem::HashMismatch { .. } | Problem::Unparseable(_)), "{field}: {problem}");
        }
    }

    #[test]
    fn edited_record_with_recomputed_hash_breaks_the_next_prev() {
        let (_d, path) = log_with(5);
        let mut l = lines(&path);
        let mut r: Record = serde_json::from_str(&l[1]).unwrap();
        r.subject = "forged".into();
        r.hash = r.compute_hash().unwrap();
        l[1] = serde_json::to_string(&r).unwrap();
        write_lines(&path, &l);
        assert!(matches!(broken_at(&path), (3, Problem::Prev { .. })));
    }

    #[test]
    fn whitespace_edit_of_the_last_line_is_detected() {
        let (_d, path) = log_with(3);
        let mut l = lines(&path);
        l[2] = l[2].replacen(",", ", ", 1);
        write_lines(&path, &l);
        assert_eq!(broken_at(&path), (3, Problem::NotCanonical));
    }

    #[test]
    fn reordered_lines_are_detected() {
        let (_d, path) = log_with(5);
        let mut l = lines(&path);
        l.swap(1, 3);
        write_lines(&path, &l);
        assert_eq!(broken_at(&path), (2, Problem::Seq { expected: 2, found: 4 }));
    }

    #[test]
    fn inserted_forged_line_is_detected() {
        let (_d, path) = log_with(5);
        let mut l = lines(&path);
        // A forger who follows the chain correctly at the insertion point still breaks the
        // next line's seq and prev.
        let prev_rec: Record = serde_json::from_str(&l[1]).unwrap();
        let mut f = Record {
            seq: prev_rec.seq + 1,
            time: prev_rec.time.clone(),
            event: "stop".into(),
            subject: "plugin-2".into(),
            details: Map::new(),
            prev: sha256_hex(l[1].as_bytes()),
            hash: String::new(),
        };
        f.hash = f.compute_hash().unwrap();
        l.insert(2, serde_json::to_string(&f).unwrap());
        write_lines(&path, &l);
        assert_eq!(broken_at(&path), (4, Problem::Seq { expected: 4, found: 3 }));
        // A line copied from elsewhere in the chain is a repeat.
        let mut l = lines(&path);
        l.remove(2);
        l.insert(2, l[0].clone());
        write_lines(&path, &l);
        assert_eq!(broken_at(&path), (3, Problem::Seq { expected: 3, found: 1 }));
    }

    #[test]
    fn unparseable_line_is_reported() {
        let (_d, path) = log_with(3);
        let mut l = lines(&path);
        l[1] = "{not json".into();
        write_lines(&path, &l);
        assert!(matches!(broken_at(&path), (2, Problem::Unparseable(_))));
    }

    #[test]
    fn truncated_final_line_is_reported_and_blocks_appending() {
        let (_d, path) = log_with(3);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        assert_eq!(broken_at(&path), (3, Problem::Truncated));
        let e = AuditLog::open(&path).unwrap_err();
        assert!(matches!(e, AuditError::DamagedTail { problem: Problem::Truncated, .. }), "{e}");
        assert!(e.to_string().contains("refusing to extend"), "{e}");
    }

    #[test]
    fn damaged_last_record_blocks_appending_even_for_an_open_log() {
        let (_d, path) = log_with(2);
        let log = AuditLog::open(&path).unwrap();
        // Edited behind the open log's back: the length changed, so the next append re-reads
        // the tail and finds it damaged.
        let mut l = lines(&path);
        l[1] = l[1].replacen("plugin-2", "plugin-22", 1);
        write_lines(&path, &l);
        let e = log.append("stop", "x", json!({})).unwrap_err();
        assert!(matches!(e, AuditError::DamagedTail { .. }), "{e}");
    }

    #[test]
    fn whole_trailing_lines_removed_are_invisible_without_an_anchor() {
        let (_d, path) = log_with(4);
        let head = verify(&path).unwrap().head.unwrap();
        let l = lines(&path);
        write_lines(&path, &l[..2]);
        assert_eq!(verify(&path).unwrap().records, 2);
        assert!(matches!(verify_anchored(&path, &head), Err(AuditError::AnchorMissing { .. })));
    }

    #[test]
    fn concurrent_appends_make_one_valid_chain() {
        let (_d, path) = log_with(0);
        let log = Arc::new(AuditLog::open(&path).unwrap());
        const THREADS: u64 = 8;
        const EACH: u64 = 50;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        log.append("request_failed", &format!("t{t}"), json!({"i": i})).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let rep = verify(&path).unwrap();
        assert_eq!(rep.records, THREADS * EACH);
        assert_eq!(rep.events["request_failed"], THREADS * EACH);
    }

    #[test]
    fn two_handles_on_one_file_extend_one_chain() {
        let (_d, path) = log_with(0);
        let a = AuditLog::open(&path).unwrap();
        let b = AuditLog::open(&path).unwrap();
        for i in 0..5 {
            a.append("pull", "a", json!({"i": i})).unwrap();
            b.append("pull", "b", json!({"i": i})).unwrap();
        }
        assert_eq!(verify(&path).unwrap().records, 10);
    }
}
