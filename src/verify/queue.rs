//! The persistent verification job queue: one SQLite file that outlives the server, so a
//! verification requested by a registry event, `berth verify`, a re-run or a rescan is
//! neither lost nor done twice when the process stops half-way.
//!
//! It owns job records and their life cycle — queued → running → done, or back to queued
//! with exponential backoff after an error, or failed after `max_attempts` — and the status
//! per digest that the catalog and the CLI show. It does not run checks ([`super::pipeline`])
//! nor decide what to enqueue or how many workers run ([`super::worker`]).
//!
//! The guarantees, and how they are kept:
//! - At most one queued job per digest: [`Queue::enqueue`] coalesces, and a partial unique
//!   index makes any other outcome a constraint error. A running job does not block a new
//!   queued one, which is the re-run after the current run.
//! - At most one running job per digest and at most `max_running` in all: [`Queue::claim`]
//!   checks both inside a `BEGIN IMMEDIATE` transaction, so two threads or two processes
//!   sharing the file never claim the same job.
//! - Completion at most once per job: a claim carries a random lease token; [`Queue::complete`]
//!   and [`Queue::fail`] only act while the job still holds that token. A job whose lease
//!   expired (the worker died or stalled), or every running job when a single-process server
//!   restarts ([`Queue::recover`]), goes back to queued and loses its token, so the first
//!   worker's late completion is a no-op and the new claim completes it.
//! - When a job returns to queued while a newer queued job waits for the same digest, the
//!   older job absorbs the newer one (which is deleted): both ask for the same verification.
//!
//! Times are stored as unix milliseconds (INTEGER) and compared in SQL; [`Job`] shows them as
//! RFC 3339 UTC. The schema version lives in `PRAGMA user_version`. The API is synchronous
//! (rusqlite behind a `std` mutex); async callers use `tokio::task::spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OptionalExtension, Params, Row, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// The schema this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;
/// How long a writer waits for another connection's write transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// No backoff is longer than this, whatever the attempt count or base.
const BACKOFF_CAP: Duration = Duration::from_secs(10 * 60);

/// Attempts before a job is given up as [`JobState::Failed`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// How long a claim is valid without a [`Queue::heartbeat`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10 * 60);
/// The first retry's delay; each further retry doubles it.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(2);

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    digest           TEXT    NOT NULL,
    reference        TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    result           TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL,
    not_before_ms    INTEGER NOT NULL,
    lease_token      TEXT,
    lease_expires_ms INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_queued_per_digest ON jobs (digest) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_by_digest ON jobs (digest, state);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, id);
";

const JOB_COLUMNS: &str =
    "id, digest, reference, reason, state, attempts, last_error, result, created_ms, updated_ms, not_before_ms";

/// What can go wrong with the queue database.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("opening job queue database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("job queue database {path} has schema version {found}; this berth knows up to {supported}")]
    SchemaTooNew { path: PathBuf, found: i64, supported: i64 },
    #[error("job {id}: the lease was lost (the job was recovered or claimed again)")]
    LeaseLost { id: i64 },
    #[error("job queue database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Where a job is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    /// Given up after `max_attempts`.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [JobState::Queued, JobState::Running, JobState::Done, JobState::Failed];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown job state {text:?}").into()))
    }
}

/// One verification request and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: i64,
    /// The image digest (`sha256:…`); the unit of coalescing and of status.
    pub digest: String,
    /// Where to fetch it (`host/repo@sha256:…`).
    pub reference: String,
    /// Why it was enqueued: `event`, `cli`, `rerun`, `rescan`, ….
    pub reason: String,
    pub state: JobState,
    /// Claims so far, including the current one.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// What the worker recorded on completion (report referrer digest, verdict, …).
    pub result: Option<serde_json::Value>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; the last state change.
    pub updated_at: String,
    /// RFC 3339 UTC; the job is not claimed before this (backoff).
    pub not_before: String,
}

/// How many jobs wait and how many run ([`Queue::depth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub queued: u64,
    pub running: u64,
}

/// A claimed job; the token proves the claim is still the current one.
#[derive(Debug, Clone)]
pub struct Claim {
    pub job: Job,
    pub lease_token: String,
}

/// The job queue. `Send + Sync`: share it behind an `Arc`; several `Queue`s (threads or
/// processes) may open the same file.
pub struct Queue {
    conn: Mutex<Connection>,
    path: PathBuf,
    max_attempts: u32,
    lease: Duration,
    backoff_base: Duration,
    /// Tests move time by hand instead of sleeping.
    #[cfg(test)]
    clock: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.path)
            .field("max_attempts", &self.max_attempts)
            .field("lease", &self.lease)
            .field("backoff_base", &self.backoff_base)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens (creating if needed) the queue database at `path`, in WAL mode, and brings its
    /// schema up to date. Settings start at the defaults.
    pub fn open(path: &Path) -> Result<Queue, QueueError> {
        let open_err = |source| QueueError::Open { path: path.to_owned(), source };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode = enable_wal(&conn).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "job queue database is not in WAL mode");
        }
        // The queue is small and written rarely; FULL makes a recorded completion survive
        // power loss too, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;

        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(open_err)?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(QueueError::SchemaTooNew { path: path.to_owned(), found, supported: SCHEMA_VERSION });
        }
        if found < 1 {
            tx.execute_batch(SCHEMA_V1).map_err(open_err)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(open_err)?;
        tx.commit().map_err(open_err)?;

        Ok(Queue {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            lease: DEFAULT_LEASE,
            backoff_base: DEFAULT_BACKOFF_BASE,
            #[cfg(test)]
            clock: None,
        })
    }

    /// Replaces the defaults (5 attempts, 10 min lease, 2 s backoff base). A retry waits
    /// `backoff_base * 2^(attempts-1)`, at most 10 min. `max_attempts` below 1 counts as 1.
    pub fn with_settings(self, max_attempts: u32, lease: Duration, backoff_base: Duration) -> Queue {
        Queue { max_attempts: max_attempts.max(1), lease, backoff_base, ..self }
    }

    /// Adds a job for `digest` unless one is already queued for it (then returns that one).
    /// A running job does not block a new queued one: that is the re-run after the current
    /// run. At most one job per digest is queued at any time.
    pub fn enqueue(&self, digest: &str, reference: &str, reason: &str) -> Result<Job, QueueError> {
        let now = self.now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(job) = query_jobs(&tx, "WHERE digest = ?1 AND state = 'queued'", [digest])?.pop() {
            return Ok(job);
        }
        tx.execute(
            "INSERT INTO jobs (digest, reference, reason, state, attempts, created_ms, updated_ms, not_before_ms)
             VALUES (?1, ?2, ?3, 'queued', 0, ?4, ?4, ?4)",
            params![digest, reference, reason, now],
        )?;
        let job = get_job(&tx, tx.last_insert_rowid())?;
        tx.commit()?;
        tracing::debug!(id = job.id, digest, reason, "verification job queued");
        Ok(job)
    }

    /// Claims the oldest runnable queued job (`not_before` has passed) whose digest has no
    /// running job with a live lease, if fewer than `max_running` jobs are running: the job
    /// becomes running with a fresh lease and one more attempt. Running jobs whose lease has
    /// expired are first put back to queued (or failed, at `max_attempts`), so they are
    /// claimed again in turn. `None` when nothing can run now.
    pub fn claim(&self, max_running: usize) -> Result<Option<Claim>, QueueError> {
        if max_running == 0 {
            return Ok(None);
        }
        let now = self.now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        self.release_running(&tx, now, false)?;

        // After the release every running job holds a live lease.
        let running: i64 = tx.query_row("SELECT COUNT(*) FROM jobs WHERE state = 'running'", [], |row| row.get(0))?;
        if usize::try_from(running).unwrap_or(usize::MAX) >= max_running {
            tx.commit()?;
            return Ok(None);
        }
        let id: Option<i64> = tx
            .query_row(
                "SELECT q.id FROM jobs q
                 WHERE q.state = 'queued' AND q.not_before_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.digest = q.digest AND r.state = 'running')
                 ORDER BY q.id LIMIT 1",
                [now],
                |row| row.get(0),
            )
            .optional()?;
        let Some(id) = id else {
            tx.commit()?;
            return Ok(None);
        };
        let lease_token = uuid::Uuid::new_v4().to_string();
        tx.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = ?2,
                 lease_expires_ms = ?3, updated_ms = ?4
             WHERE id = ?1",
            params![id, lease_token, now.saturating_add(millis(self.lease)), now],
        )?;
        let job = get_job(&tx, id)?;
        tx.commit()?;
        tracing::debug!(id, digest = %job.digest, attempt = job.attempts, "verification job claimed");
        Ok(Some(Claim { job, lease_token }))
    }

    /// Extends the claim's lease to a full lease from now; the worker calls it periodically
    /// during long runs. [`QueueError::LeaseLost`] when the claim is no longer current: the
    /// worker should stop, someone else owns the job.
    pub fn heartbeat(&self, claim: &Claim) -> Result<(), QueueError> {
        let now = self.now_ms();
        let conn = self.lock();
        let changed = conn.execute(
            "UPDATE jobs SET lease_expires_ms = ?3 WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            params![claim.job.id, claim.lease_token, now.saturating_add(millis(self.lease))],
        )?;
        if changed == 0 {
            return Err(QueueError::LeaseLost { id: claim.job.id });
        }
        Ok(())
    }

    /// Marks the job done with `result`. Returns false, changing nothing, when the claim is no
    /// longer current (the job was recovered or claimed again): a job completes once.
    pub fn complete(&self, claim: &Claim, result: serde_json::Value) -> Result<bool, QueueError> {
        let now = self.now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE jobs SET state = 'done', result = ?3, lease_token = NULL, lease_expires_ms = NULL, updated_ms = ?4
             WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
            params![claim.job.id, claim.lease_token, result.to_string(), now],
        )?;
        tx.commit()?;
        if changed == 0 {
            tracing::info!(id = claim.job.id, digest = %claim.job.digest, "stale claim: completion ignored");
        }
        Ok(changed == 1)
    }

    /// Records `error`: the job goes back to queued with `not_before = now + backoff`, or to
    /// failed once it has had `max_attempts` attempts. Returns false, changing nothing, when
    /// the claim is no longer current.
    pub fn fail(&self, claim: &Claim, error: &str) -> Result<bool, QueueError> {
        let now = self.now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<(String, u32)> = tx
            .query_row(
                "SELECT digest, attempts FROM jobs WHERE id = ?1 AND state = 'running' AND lease_token = ?2",
                params![claim.job.id, claim.lease_token],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((digest, attempts)) = current else {
            tracing::info!(id = claim.job.id, digest = %claim.job.digest, "stale claim: failure ignored");
            return Ok(false);
        };
        if attempts >= self.max_attempts {
            self.give_up(&tx, claim.job.id, error, now)?;
        } else {
            let not_before = now.saturating_add(millis(backoff(self.backoff_base, attempts)));
            requeue(&tx, claim.job.id, &digest, error, now, not_before)?;
            tracing::debug!(id = claim.job.id, digest, attempts, error, "verification job will be retried");
        }
        tx.commit()?;
        Ok(true)
    }

    /// At start-up: running jobs whose lease expired — and, when `all_running` is true (a
    /// single-process server restarting, so nothing can still be running), every running job
    /// — go back to queued with their attempts kept, or to failed if they have used all
    /// attempts (a job that keeps killing its worker must not loop forever). Returns how many
    /// jobs were taken off running.
    pub fn recover(&self, all_running: bool) -> Result<usize, QueueError> {
        let now = self.now_ms();
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let released = self.release_running(&tx, now, all_running)?;
        tx.commit()?;
        if released > 0 {
            tracing::info!(released, all_running, "verification jobs recovered");
        }
        Ok(released)
    }

    /// The newest job for the digest.
    pub fn latest(&self, digest: &str) -> Result<Option<Job>, QueueError> {
        Ok(self.history(digest, 1)?.pop())
    }

    /// The digest's jobs, newest first, at most `limit`.
    pub fn history(&self, digest: &str, limit: usize) -> Result<Vec<Job>, QueueError> {
        let conn = self.lock();
        query_jobs(&conn, "WHERE digest = ?1 ORDER BY id DESC LIMIT ?2", params![digest, sql_limit(limit)])
    }

    /// The number of jobs in each state, every state present (`queued`, `running`, `done`,
    /// `failed`).
    pub fn counts(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        let conn = self.lock();
        let mut counts: BTreeMap<String, u64> = JobState::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, JobState>(0)?, row.get::<_, i64>(1)?)))?;
        for row in rows {
            let (state, n) = row?;
            counts.insert(state.as_str().to_owned(), u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }

    /// Jobs waiting and jobs running now: what `/metrics` shows as the queue depth. Cheaper
    /// than [`Self::counts`] on a long history, since it reads only the `jobs_by_state`
    /// index entries of the two live states.
    pub fn depth(&self) -> Result<QueueDepth, QueueError> {
        let conn = self.lock();
        let count = |state: &str| -> Result<u64, QueueError> {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM jobs WHERE state = ?1", [state], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(QueueDepth { queued: count("queued")?, running: count("running")? })
    }

    /// Every digest that has completed at least once, with the reference of its latest done
    /// job, ordered by digest (what a rescan re-enqueues).
    pub fn verified_digests(&self) -> Result<Vec<(String, String)>, QueueError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT digest, reference FROM jobs
             WHERE id IN (SELECT MAX(id) FROM jobs WHERE state = 'done' GROUP BY digest)
             ORDER BY digest",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Takes running jobs off running: those whose lease expired by `now`, or all of them.
    fn release_running(&self, tx: &Transaction<'_>, now: i64, all_running: bool) -> Result<usize, QueueError> {
        let stale: Vec<(i64, String, u32, i64)> = {
            let mut stmt = tx.prepare(
                "SELECT id, digest, attempts, COALESCE(lease_expires_ms, 0) FROM jobs
                 WHERE state = 'running' AND (?2 OR COALESCE(lease_expires_ms, 0) <= ?1)
                 ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![now, all_running], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, digest, attempts, lease_expires) in &stale {
            let why = if *lease_expires <= now {
                format!("lease expired during attempt {attempts} (worker stopped or stalled)")
            } else {
                format!("interrupted during attempt {attempts} (server restarted)")
            };
            if *attempts >= self.max_attempts {
                self.give_up(tx, *id, &why, now)?;
            } else {
                requeue(tx, *id, digest, &why, now, now)?;
            }
            tracing::warn!(id, digest, attempts, "{why}");
        }
        Ok(stale.len())
    }

    fn give_up(&self, tx: &Transaction<'_>, id: i64, error: &str, now: i64) -> Result<(), QueueError> {
        tx.execute(
            "UPDATE jobs SET state = 'failed', last_error = ?2, lease_token = NULL, lease_expires_ms = NULL,
                 updated_ms = ?3
             WHERE id = ?1",
            params![id, error, now],
        )?;
        tracing::warn!(id, attempts = self.max_attempts, error, "verification job failed for good");
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped any open transaction (a rollback), so the
        // connection is still consistent.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> i64 {
        #[cfg(test)]
        if let Some(clock) = &self.clock {
            return clock.load(std::sync::atomic::Ordering::SeqCst);
        }
        millis(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    #[cfg(test)]
    fn with_clock(self, clock: std::sync::Arc<std::sync::atomic::AtomicI64>) -> Queue {
        Queue { clock: Some(clock), ..self }
    }
}

/// Switches the database to WAL (persistent in the file) and returns the journal mode now in
/// force. SQLite answers a mode change with "busy" at once, without the busy handler, while
/// another connection opens the same fresh file, so that one statement is retried here.
fn enable_wal(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(mode);
        }
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Puts a job back to queued, absorbing (deleting) a newer queued job for the same digest so
/// at most one stays queued.
fn requeue(
    tx: &Transaction<'_>,
    id: i64,
    digest: &str,
    error: &str,
    now: i64,
    not_before: i64,
) -> Result<(), QueueError> {
    let absorbed =
        tx.execute("DELETE FROM jobs WHERE digest = ?1 AND state = 'queued' AND id <> ?2", params![digest, id])?;
    if absorbed > 0 {
        tracing::debug!(id, digest, absorbed, "queued re-run coalesced into the returning job");
    }
    tx.execute(
        "UPDATE jobs SET state = 'queued', last_error = ?2, lease_token = NULL, lease_expires_ms = NULL,
             not_before_ms = ?3, updated_ms = ?4
         WHERE id = ?1",
        params![id, error, not_before, now],
    )?;
    Ok(())
}

/// `base * 2^(attempts-1)`, capped at [`BACKOFF_CAP`].
fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(BACKOFF_CAP).min(BACKOFF_CAP)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn get_job(conn: &Connection, id: i64) -> Result<Job, QueueError> {
    query_jobs(conn, "WHERE id = ?1", [id])?.pop().ok_or(QueueError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
}

fn query_jobs(conn: &Connection, tail: &str, params: impl Params) -> Result<Vec<Job>, QueueError> {
    let mut stmt = conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs {tail}"))?;
    let rows = stmt.query_map(params, job_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let result = match row.get::<_, Option<String>>(7)? {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(7, rusqlite::types::Type::Text, Box::new(e)))?,
        ),
        None => None,
    };
    Ok(Job {
        id: row.get(0)?,
        digest: row.get(1)?,
        reference: row.get(2)?,
        reason: row.get(3)?,
        state: row.get(4)?,
        attempts: row.get(5)?,
        last_error: row.get(6)?,
        result,
        created_at: rfc3339(row.get(8)?),
        updated_at: rfc3339(row.get(9)?),
        not_before: rfc3339(row.get(10)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    const T0: i64 = 1_700_000_000_000;

    fn digest(n: u32) -> String {
        format!("sha256:{n:064x}")
    }

    fn reference(n: u32) -> String {
        format!("registry.example/plugins/p{n}@{}", digest(n))
    }

    /// A queue on a fresh file with a hand-moved clock.
    fn queue_with_clock() -> (tempfile::TempDir, Queue, Arc<AtomicI64>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(AtomicI64::new(T0));
        let queue = Queue::open(&dir.path().join("queue.db")).unwrap().with_clock(clock.clone());
        (dir, queue, clock)
    }

    fn advance(clock: &AtomicI64, ms: i64) {
        clock.fetch_add(ms, Ordering::SeqCst);
    }

    #[test]
    fn enqueue_coalesces_queued_jobs_per_digest() {
        let (_dir, queue, _clock) = queue_with_clock();
        let first = queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        assert_eq!(first.state, JobState::Queued);
        assert_eq!(first.attempts, 0);
        assert_eq!(first.created_at, "2023-11-14T22:13:20.000Z");
        let again = queue.enqueue(&digest(1), &reference(1), "cli").unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.reason, "event");
        let other = queue.enqueue(&digest(2), &reference(2), "event").unwrap();
        assert_ne!(other.id, first.id);

        // A running job does not block one re-run queued behind it, but only one.
        let claim = queue.claim(10).unwrap().unwrap();
        assert_eq!(claim.job.id, first.id);
        let rerun = queue.enqueue(&digest(1), &reference(1), "rerun").unwrap();
        assert_ne!(rerun.id, first.id);
        assert_eq!(rerun.state, JobState::Queued);
        assert_eq!(queue.enqueue(&digest(1), &reference(1), "rescan").unwrap().id, rerun.id);
        assert_eq!(queue.history(&digest(1), 10).unwrap().len(), 2);
    }

    #[test]
    fn claim_respects_max_running() {
        let (_dir, queue, _clock) = queue_with_clock();
        for n in 1..=3 {
            queue.enqueue(&digest(n), &reference(n), "event").unwrap();
        }
        assert!(queue.claim(0).unwrap().is_none());
        let a = queue.claim(2).unwrap().unwrap();
        let b = queue.claim(2).unwrap().unwrap();
        assert_eq!((a.job.digest.as_str(), b.job.digest.as_str()), (digest(1).as_str(), digest(2).as_str()));
        assert!(queue.claim(2).unwrap().is_none());
        assert!(queue.complete(&a, json!({})).unwrap());
        let c = queue.claim(2).unwrap().unwrap();
        assert_eq!(c.job.digest, digest(3));
        assert_eq!(c.job.state, JobState::Running);
        assert_eq!(c.job.attempts, 1);
    }

    #[test]
    fn claim_runs_one_job_per_digest_at_a_time() {
        let (_dir, queue, _clock) = queue_with_clock();
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let first = queue.claim(10).unwrap().unwrap();
        let rerun = queue.enqueue(&digest(1), &reference(1), "rerun").unwrap();
        assert!(queue.claim(10).unwrap().is_none(), "the re-run waits for the running job");

        queue.enqueue(&digest(2), &reference(2), "event").unwrap();
        assert_eq!(queue.claim(10).unwrap().unwrap().job.digest, digest(2));

        assert!(queue.complete(&first, json!({"state": "passed"})).unwrap());
        let second = queue.claim(10).unwrap().unwrap();
        assert_eq!(second.job.id, rerun.id);
    }

    #[test]
    fn stale_claim_cannot_complete_after_recovery() {
        let (_dir, queue, _clock) = queue_with_clock();
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let stale = queue.claim(1).unwrap().unwrap();
        assert_eq!(queue.recover(true).unwrap(), 1);
        let current = queue.claim(1).unwrap().unwrap();
        assert_eq!(current.job.id, stale.job.id);
        assert_eq!(current.job.attempts, 2);
        assert_ne!(current.lease_token, stale.lease_token);

        assert!(!queue.complete(&stale, json!({"from": "stale"})).unwrap());
        assert!(!queue.fail(&stale, "late").unwrap());
        assert!(matches!(queue.heartbeat(&stale), Err(QueueError::LeaseLost { id }) if id == stale.job.id));

        assert!(queue.complete(&current, json!({"report": "sha256:abc"})).unwrap());
        assert!(!queue.complete(&current, json!({"again": true})).unwrap(), "completes once");
        let job = queue.latest(&digest(1)).unwrap().unwrap();
        assert_eq!(job.state, JobState::Done);
        assert_eq!(job.attempts, 2);
        assert_eq!(job.result, Some(json!({"report": "sha256:abc"})));
        assert_eq!(queue.history(&digest(1), 10).unwrap().len(), 1);
    }

    #[test]
    fn expired_lease_is_claimed_again_and_heartbeat_keeps_it() {
        let (_dir, queue, clock) = queue_with_clock();
        let queue = queue.with_settings(5, Duration::from_secs(10), Duration::from_secs(2));
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let first = queue.claim(1).unwrap().unwrap();

        advance(&clock, 9_000);
        queue.heartbeat(&first).unwrap();
        advance(&clock, 9_000);
        assert!(queue.claim(1).unwrap().is_none(), "the heartbeat extended the lease");
        assert_eq!(queue.recover(false).unwrap(), 0);

        advance(&clock, 1_000);
        let second = queue.claim(1).unwrap().unwrap();
        assert_eq!(second.job.id, first.job.id);
        assert_eq!(second.job.attempts, 2);
        assert!(second.job.last_error.as_deref().unwrap().contains("lease expired"));
        assert!(!queue.complete(&first, json!({})).unwrap());
        assert!(queue.complete(&second, json!({})).unwrap());
    }

    #[test]
    fn failed_job_backs_off_until_not_before() {
        let (_dir, queue, clock) = queue_with_clock();
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        assert!(queue.fail(&claim, "registry unavailable").unwrap());
        let job = queue.latest(&digest(1)).unwrap().unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.last_error.as_deref(), Some("registry unavailable"));
        assert_eq!(job.not_before, rfc3339(T0 + 2_000));

        assert!(queue.claim(1).unwrap().is_none());
        advance(&clock, 1_999);
        assert!(queue.claim(1).unwrap().is_none());
        advance(&clock, 1);
        let claim = queue.claim(1).unwrap().unwrap();
        assert_eq!(claim.job.attempts, 2);

        assert!(queue.fail(&claim, "again").unwrap());
        let job = queue.latest(&digest(1)).unwrap().unwrap();
        assert_eq!(job.not_before, rfc3339(T0 + 2_000 + 4_000), "the second retry waits twice as long");
    }

    #[test]
    fn failing_absorbs_a_queued_rerun() {
        let (_dir, queue, _clock) = queue_with_clock();
        let job = queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        queue.enqueue(&digest(1), &reference(1), "rerun").unwrap();
        assert!(queue.fail(&claim, "boom").unwrap());
        let history = queue.history(&digest(1), 10).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].id, job.id);
        assert_eq!(history[0].state, JobState::Queued);
        assert_eq!(queue.counts().unwrap()["queued"], 1);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let (_dir, queue, clock) = queue_with_clock();
        let queue = queue.with_settings(2, DEFAULT_LEASE, Duration::ZERO);
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        assert!(queue.fail(&claim, "first").unwrap());
        let claim = queue.claim(1).unwrap().unwrap();
        assert!(queue.fail(&claim, "second").unwrap());

        let job = queue.latest(&digest(1)).unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.attempts, 2);
        assert_eq!(job.last_error.as_deref(), Some("second"));
        advance(&clock, 3_600_000);
        assert!(queue.claim(1).unwrap().is_none());
        assert_eq!(queue.counts().unwrap()["failed"], 1);

        // A later request starts afresh.
        let again = queue.enqueue(&digest(1), &reference(1), "rerun").unwrap();
        assert_ne!(again.id, job.id);
        assert_eq!(again.attempts, 0);
    }

    #[test]
    fn expired_lease_at_max_attempts_fails_the_job() {
        let (_dir, queue, _clock) = queue_with_clock();
        let queue = queue.with_settings(1, Duration::ZERO, Duration::ZERO);
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        assert!(queue.claim(1).unwrap().is_none());
        let job = queue.latest(&digest(1)).unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert!(!queue.complete(&claim, json!({})).unwrap());
    }

    #[test]
    fn restart_keeps_jobs_and_completes_the_interrupted_one_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let queue = Queue::open(&path).unwrap();
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        queue.enqueue(&digest(2), &reference(2), "cli").unwrap();
        let interrupted = queue.claim(4).unwrap().unwrap();
        assert_eq!(interrupted.job.digest, digest(1));
        drop(queue); // the server is killed mid-verification

        let queue = Queue::open(&path).unwrap();
        assert_eq!(queue.latest(&digest(1)).unwrap().unwrap().state, JobState::Running);
        assert_eq!(queue.latest(&digest(2)).unwrap().unwrap().state, JobState::Queued);
        assert_eq!(queue.recover(true).unwrap(), 1);
        let job = queue.latest(&digest(1)).unwrap().unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Queued, 1));

        let claim = queue.claim(4).unwrap().unwrap();
        assert_eq!(claim.job.id, interrupted.job.id);
        assert_eq!(claim.job.attempts, 2);
        assert!(!queue.complete(&interrupted, json!({})).unwrap());
        assert!(queue.complete(&claim, json!({"state": "passed"})).unwrap());
        let done: Vec<_> =
            queue.history(&digest(1), 10).unwrap().into_iter().filter(|j| j.state == JobState::Done).collect();
        assert_eq!(done.len(), 1);
    }

    #[test]
    fn recover_requeues_expired_or_all_running_jobs() {
        let (_dir, queue, clock) = queue_with_clock();
        let queue = queue.with_settings(5, Duration::from_secs(10), Duration::ZERO);
        queue.enqueue(&digest(1), &reference(1), "event").unwrap();
        let old = queue.claim(10).unwrap().unwrap();
        advance(&clock, 5_000);
        queue.enqueue(&digest(2), &reference(2), "event").unwrap();
        queue.claim(10).unwrap().unwrap();
        queue.enqueue(&digest(2), &reference(2), "rerun").unwrap();
        advance(&clock, 5_000);

        assert_eq!(queue.recover(false).unwrap(), 1, "only the expired lease");
        assert_eq!(queue.latest(&digest(1)).unwrap().unwrap().id, old.job.id);
        assert_eq!(queue.latest(&digest(1)).unwrap().unwrap().state, JobState::Queued);
        assert_eq!(queue.counts().unwrap()["running"], 1);

        assert_eq!(queue.recover(true).unwrap(), 1);
        let counts = queue.counts().unwrap();
        assert_eq!((counts["running"], counts["queued"]), (0, 2));
        // The queued re-run of digest 2 was absorbed by the returning job.
        let history = queue.history(&digest(2), 10).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].attempts, 1);
        assert!(history[0].last_error.as_deref().unwrap().contains("restarted"));
    }

    #[test]
    fn concurrent_claims_from_two_handles_never_share_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        let a = Queue::open(&path).unwrap();
        let b = Queue::open(&path).unwrap();
        const JOBS: u32 = 300;
        for n in 0..JOBS {
            a.enqueue(&digest(n), &reference(n), "rescan").unwrap();
        }
        let worker = |queue: Queue| {
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                while let Some(claim) = queue.claim(usize::MAX).unwrap() {
                    assert!(queue.complete(&claim, json!({"id": claim.job.id})).unwrap());
                    ids.push(claim.job.id);
                }
                ids
            })
        };
        let (ta, tb) = (worker(a), worker(b));
        let (ids_a, ids_b) = (ta.join().unwrap(), tb.join().unwrap());
        let all: HashSet<i64> = ids_a.iter().chain(&ids_b).copied().collect();
        assert_eq!(ids_a.len() + ids_b.len(), JOBS as usize, "no job claimed twice");
        assert_eq!(all.len(), JOBS as usize);
        let queue = Queue::open(&path).unwrap();
        assert_eq!(queue.counts().unwrap()["done"], u64::from(JOBS));
    }

    #[test]
    fn concurrent_opens_of_a_fresh_file_agree() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("queue.db");
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let queue = Queue::open(&path).unwrap();
                        queue.enqueue(&digest(1), &reference(1), "event").unwrap().id
                    })
                })
                .collect();
            let ids: HashSet<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(ids.len(), 1, "every handle coalesced into one job");
        }
    }

    #[test]
    fn history_latest_counts_and_verified_digests() {
        let (_dir, queue, clock) = queue_with_clock();
        assert!(queue.latest(&digest(1)).unwrap().is_none());
        assert_eq!(queue.counts().unwrap().values().sum::<u64>(), 0);
        assert_eq!(queue.counts().unwrap().len(), 4);

        queue.enqueue(&digest(1), "old.example/p1@x", "event").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        queue.complete(&claim, json!({"state": "passed"})).unwrap();
        advance(&clock, 1_000);
        queue.enqueue(&digest(1), &reference(1), "rerun").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        queue.complete(&claim, json!({"state": "failed"})).unwrap();
        queue.enqueue(&digest(1), &reference(1), "rescan").unwrap();
        queue.enqueue(&digest(2), &reference(2), "event").unwrap();
        queue.enqueue(&digest(3), &reference(3), "event").unwrap();
        let claim = queue.claim(1).unwrap().unwrap();
        assert_eq!((claim.job.digest.as_str(), claim.job.reason.as_str()), (digest(1).as_str(), "rescan"));

        let history = queue.history(&digest(1), 10).unwrap();
        let reasons: Vec<_> = history.iter().map(|j| j.reason.as_str()).collect();
        assert_eq!(reasons, ["rescan", "rerun", "event"]);
        assert_eq!(history[1].result, Some(json!({"state": "failed"})));
        assert_eq!(history[1].updated_at, rfc3339(T0 + 1_000));
        assert_eq!(queue.history(&digest(1), 2).unwrap().len(), 2);
        assert_eq!(queue.latest(&digest(1)).unwrap().unwrap().reason, "rescan");

        let counts = queue.counts().unwrap();
        assert_eq!(counts["queued"], 2);
        assert_eq!(counts["running"], 1);
        assert_eq!(counts["done"], 2);
        assert_eq!(counts["failed"], 0);

        assert_eq!(queue.verified_digests().unwrap(), vec![(digest(1), reference(1))]);
    }

    #[test]
    fn depth_counts_queued_and_running_jobs_only() {
        let (_dir, queue, _clock) = queue_with_clock();
        assert_eq!(queue.depth().unwrap(), QueueDepth::default());
        for n in 1..=3 {
            queue.enqueue(&digest(n), &reference(n), "event").unwrap();
        }
        let done = queue.claim(4).unwrap().unwrap();
        queue.complete(&done, json!({})).unwrap();
        queue.claim(4).unwrap().unwrap();
        assert_eq!(queue.depth().unwrap(), QueueDepth { queued: 1, running: 1 });
        assert_eq!(queue.counts().unwrap()["done"], 1);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        assert_eq!(backoff(base, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, 2), Duration::from_secs(4));
        assert_eq!(backoff(base, 5), Duration::from_secs(32));
        assert_eq!(backoff(base, 10), BACKOFF_CAP);
        assert_eq!(backoff(base, u32::MAX), BACKOFF_CAP);
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn open_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.db");
        drop(Queue::open(&path).unwrap());
        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(Queue::open(&path), Err(QueueError::SchemaTooNew { found: 99, .. })));
    }

    #[test]
    fn job_state_serializes_lowercase() {
        assert_eq!(serde_json::to_value(JobState::Running).unwrap(), json!("running"));
        let state: JobState = serde_json::from_value(json!("failed")).unwrap();
        assert_eq!(state, JobState::Failed);
    }

    #[test]
    fn queue_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Queue>();
    }
}
