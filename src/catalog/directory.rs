//! The catalog's operational records of publishers (`DESIGN.md` § where state lives: SQLite,
//! one file, local to a catalog deployment): registrations waiting for an operator, the
//! decision, the keys a publisher registered, its push tokens, and which publishers each
//! tenant opted in to.
//!
//! What a runner or a mirror needs is not here but in the registry: an approved publisher's
//! record, signed by the catalog root key (see [`super::records`]). This file is the write
//! path's bookkeeping.
//!
//! Push tokens are 32 random bytes (`berth_pt_` + 64 hex digits) shown once when issued;
//! only their SHA-256 is stored. A token authenticates its publisher (Basic `<publisher>:
//! <token>` for the registry, `Bearer <token>` for the catalog API) for as long as it is not
//! revoked and the publisher is approved; a slow hash buys nothing for 256-bit secrets.

use crate::plugin::documents::PublisherKey;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Prefix of every push token (so that a leaked one is recognisable, as GitHub does).
pub const TOKEN_PREFIX: &str = "berth_pt_";

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("catalog database {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("catalog database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog database: stored {what} is corrupt: {message}")]
    Corrupt { what: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Approved,
    Rejected,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "pending" => Some(State::Pending),
            "approved" => Some(State::Approved),
            "rejected" => Some(State::Rejected),
            _ => None,
        }
    }
}

/// One publisher as the catalog's operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publisher {
    pub name: String,
    pub display_name: String,
    /// `{"support": {...}, "security": {...}}` as in the publisher record.
    pub contacts: Value,
    pub keys: Vec<PublisherKey>,
    pub state: State,
    pub registered_at: String,
    pub decided_at: Option<String>,
    pub decided_by: Option<String>,
    /// The digest of the newest publisher record pushed for it.
    pub record: Option<String>,
}

/// A push token, without its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Token {
    pub id: String,
    pub publisher: String,
    pub description: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

struct RawPublisher {
    name: String,
    display_name: String,
    contacts: String,
    keys: String,
    state: String,
    registered_at: String,
    decided_at: Option<String>,
    decided_by: Option<String>,
    record: Option<String>,
}

/// The catalog database's publisher tables.
pub struct Directory {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS publishers (
    name TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    contacts TEXT NOT NULL,
    keys TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
    registered_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT,
    record TEXT
);
CREATE TABLE IF NOT EXISTS publisher_tokens (
    id TEXT PRIMARY KEY,
    publisher TEXT NOT NULL REFERENCES publishers(name),
    sha256 TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS publisher_tokens_by_publisher ON publisher_tokens(publisher);
CREATE TABLE IF NOT EXISTS tenant_publishers (
    tenant TEXT NOT NULL,
    publisher TEXT NOT NULL,
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL,
    PRIMARY KEY (tenant, publisher)
);
";

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> DirectoryError + '_ {
    move |e| DirectoryError::Corrupt { what: what.to_string(), message: e.to_string() }
}

impl Directory {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Directory, DirectoryError> {
        let err = |source| DirectoryError::Open { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Directory { conn: Mutex::new(conn) })
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Directory, DirectoryError> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(Directory { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A row as stored: the publisher without its JSON columns and state, then contacts,
    /// keys and state as text.
    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawPublisher> {
        Ok(RawPublisher {
            name: r.get(0)?,
            display_name: r.get(1)?,
            contacts: r.get(2)?,
            keys: r.get(3)?,
            state: r.get(4)?,
            registered_at: r.get(5)?,
            decided_at: r.get(6)?,
            decided_by: r.get(7)?,
            record: r.get(8)?,
        })
    }

    fn finish(raw: RawPublisher) -> Result<Publisher, DirectoryError> {
        let what = |field: &str| format!("{field} of publisher {}", raw.name);
        Ok(Publisher {
            state: State::parse(&raw.state)
                .ok_or_else(|| DirectoryError::Corrupt { what: what("state"), message: raw.state.clone() })?,
            contacts: serde_json::from_str(&raw.contacts).map_err(corrupt(&what("contacts")))?,
            keys: serde_json::from_str(&raw.keys).map_err(corrupt(&what("keys")))?,
            name: raw.name,
            display_name: raw.display_name,
            registered_at: raw.registered_at,
            decided_at: raw.decided_at,
            decided_by: raw.decided_by,
            record: raw.record,
        })
    }

    const COLUMNS: &str = "name, display_name, contacts, keys, state, registered_at, decided_at, decided_by, record";

    /// Records a registration (state `pending`); a taken name is a conflict.
    pub fn register(
        &self,
        name: &str,
        display_name: &str,
        contacts: &Value,
        keys: &[PublisherKey],
    ) -> Result<Publisher, DirectoryError> {
        let keys_json = serde_json::to_string(keys).map_err(corrupt("keys"))?;
        let changed = self.conn().execute(
            "INSERT INTO publishers (name, display_name, contacts, keys, state, registered_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5) ON CONFLICT(name) DO NOTHING",
            params![name, display_name, contacts.to_string(), keys_json, now()],
        )?;
        if changed == 0 {
            return Err(DirectoryError::Conflict(format!("name = {name:?} is already registered")));
        }
        self.get(name)?.ok_or_else(|| DirectoryError::NotFound(format!("publisher {name:?}")))
    }

    pub fn get(&self, name: &str) -> Result<Option<Publisher>, DirectoryError> {
        let found = self
            .conn()
            .query_row(&format!("SELECT {} FROM publishers WHERE name = ?1", Self::COLUMNS), [name], Self::row)
            .optional()?;
        found.map(Self::finish).transpose()
    }

    /// Every publisher, by name.
    pub fn list(&self) -> Result<Vec<Publisher>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {} FROM publishers ORDER BY name", Self::COLUMNS))?;
        let rows = stmt.query_map([], Self::row)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::finish).collect()
    }

    fn must(&self, name: &str) -> Result<Publisher, DirectoryError> {
        self.get(name)?.ok_or_else(|| DirectoryError::NotFound(format!("no publisher {name:?} is registered")))
    }

    /// Approves or rejects `name`.
    pub fn decide(&self, name: &str, state: State, by: &str) -> Result<Publisher, DirectoryError> {
        self.must(name)?;
        self.conn().execute(
            "UPDATE publishers SET state = ?2, decided_at = ?3, decided_by = ?4 WHERE name = ?1",
            params![name, state.as_str(), now(), by],
        )?;
        self.must(name)
    }

    pub fn set_keys(&self, name: &str, keys: &[PublisherKey]) -> Result<Publisher, DirectoryError> {
        let keys_json = serde_json::to_string(keys).map_err(corrupt("keys"))?;
        self.must(name)?;
        self.conn().execute("UPDATE publishers SET keys = ?2 WHERE name = ?1", params![name, keys_json])?;
        self.must(name)
    }

    pub fn set_record(&self, name: &str, digest: &str) -> Result<(), DirectoryError> {
        self.conn().execute("UPDATE publishers SET record = ?2 WHERE name = ?1", params![name, digest])?;
        Ok(())
    }

    /// Issues a push token for `publisher`: returns it with its secret, which is not kept.
    pub fn issue_token(&self, publisher: &str, description: &str) -> Result<(Token, String), DirectoryError> {
        self.must(publisher)?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        self.conn().execute(
            "INSERT INTO publisher_tokens (id, publisher, sha256, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, publisher, token_hash(&secret), description, now()],
        )?;
        let token = self.tokens(publisher)?.into_iter().find(|t| t.id == id);
        Ok((token.ok_or_else(|| DirectoryError::NotFound(format!("token {id}")))?, secret))
    }

    pub fn tokens(&self, publisher: &str) -> Result<Vec<Token>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, publisher, description, created_at, revoked_at FROM publisher_tokens
             WHERE publisher = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([publisher], |r| {
            Ok(Token {
                id: r.get(0)?,
                publisher: r.get(1)?,
                description: r.get(2)?,
                created_at: r.get(3)?,
                revoked_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Revokes token `id` of `publisher`; revoking twice is fine.
    pub fn revoke_token(&self, publisher: &str, id: &str) -> Result<Token, DirectoryError> {
        self.conn().execute(
            "UPDATE publisher_tokens SET revoked_at = ?3 WHERE publisher = ?1 AND id = ?2 AND revoked_at IS NULL",
            params![publisher, id, now()],
        )?;
        self.tokens(publisher)?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| DirectoryError::NotFound(format!("publisher {publisher:?} has no token {id:?}")))
    }

    /// The approved publisher a live token belongs to.
    pub fn token_publisher(&self, secret: &str) -> Option<String> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return None;
        }
        self.conn()
            .query_row(
                "SELECT t.publisher FROM publisher_tokens t JOIN publishers p ON p.name = t.publisher
                 WHERE t.sha256 = ?1 AND t.revoked_at IS NULL AND p.state = 'approved'",
                [token_hash(secret)],
                |r| r.get(0),
            )
            .optional()
            .ok()
            .flatten()
    }

    /// Opts `tenant` in to `publisher`'s plugins.
    pub fn opt_in(&self, tenant: &str, publisher: &str, by: &str) -> Result<(), DirectoryError> {
        self.conn().execute(
            "INSERT INTO tenant_publishers (tenant, publisher, added_at, added_by) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(tenant, publisher) DO NOTHING",
            params![tenant, publisher, now(), by],
        )?;
        Ok(())
    }

    /// Opts `tenant` out; `false` when it was not opted in.
    pub fn opt_out(&self, tenant: &str, publisher: &str) -> Result<bool, DirectoryError> {
        let n = self.conn().execute(
            "DELETE FROM tenant_publishers WHERE tenant = ?1 AND publisher = ?2",
            params![tenant, publisher],
        )?;
        Ok(n > 0)
    }

    /// The publishers `tenant` opted in to, by name.
    pub fn tenant_publishers(&self, tenant: &str) -> Result<Vec<String>, DirectoryError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT publisher FROM tenant_publishers WHERE tenant = ?1 ORDER BY publisher")?;
        let rows = stmt.query_map([tenant], |r| r.get(0))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

impl crate::registry::auth::CredentialSource for Directory {
    /// A live push token of approved publisher `user` may push to `user/*` only, and delete
    /// nothing: the lifecycle status and verification reports attached to its images are not
    /// the publisher's to remove.
    fn check(&self, user: &str, secret: &str) -> Option<crate::registry::auth::Grant> {
        (self.token_publisher(secret)? == user)
            .then(|| crate::registry::auth::Grant { namespaces: vec![format!("{user}/*")], delete: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::auth::CredentialSource;
    use serde_json::json;

    #[test]
    fn registration_decision_and_tokens() {
        let d = Directory::in_memory().unwrap();
        let contacts = json!({"support": {"email": "s@acme.dev"}, "security": {"email": "sec@acme.dev"}});
        let p = d.register("acme", "Acme", &contacts, &[]).unwrap();
        assert_eq!(p.state, State::Pending);
        assert_eq!(p.contacts, contacts);
        let again = d.register("acme", "Other", &contacts, &[]).unwrap_err().to_string();
        assert!(again.contains("\"acme\" is already registered"), "{again}");

        // A token of a pending publisher does not authenticate yet.
        let (token, secret) = d.issue_token("acme", "ci").unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(d.check("acme", &secret), None);

        d.decide("acme", State::Approved, "alice").unwrap();
        let grant = d.check("acme", &secret).expect("a live token");
        assert_eq!((grant.namespaces, grant.delete), (vec!["acme/*".to_string()], false));
        assert_eq!(d.check("other", &secret), None, "a token names its publisher");
        assert_eq!(d.check("acme", "berth_pt_00"), None);

        // Only the hash is stored.
        let stored: String = d.conn().query_row("SELECT sha256 FROM publisher_tokens", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, token_hash(&secret));
        assert_ne!(stored, secret);

        let revoked = d.revoke_token("acme", &token.id).unwrap();
        assert!(revoked.revoked_at.is_some());
        assert_eq!(d.check("acme", &secret), None);
        assert!(d.revoke_token("acme", "nope").is_err());

        d.decide("acme", State::Rejected, "alice").unwrap();
        let (_, fresh) = d.issue_token("acme", "again").unwrap();
        assert_eq!(d.check("acme", &fresh), None, "a rejected publisher's tokens are dead");
    }

    #[test]
    fn tenants_opt_in_per_publisher() {
        let d = Directory::in_memory().unwrap();
        d.opt_in("t1", "acme", "alice").unwrap();
        d.opt_in("t1", "acme", "alice").unwrap();
        d.opt_in("t1", "beta", "alice").unwrap();
        assert_eq!(d.tenant_publishers("t1").unwrap(), ["acme", "beta"]);
        assert!(d.tenant_publishers("t2").unwrap().is_empty());
        assert!(d.opt_out("t1", "acme").unwrap());
        assert!(!d.opt_out("t1", "acme").unwrap());
        assert_eq!(d.tenant_publishers("t1").unwrap(), ["beta"]);
    }
}
