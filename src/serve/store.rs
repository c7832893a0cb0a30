//! Stored responses (`store: true`), for `GET /v1/responses/{id}` and `previous_response_id`,
//! in one SQLite database (`responses.sqlite3` in the store folder).
//!
//! - Each response keeps its own response object and only the conversation messages it added
//!   (its input and its output), with a link to the response it continued: a conversation of
//!   `n` turns takes `O(n)` space, not `O(n²)`, and continuing it reads the chain back.
//! - Every write is one transaction, durable when it returns (WAL, `synchronous = FULL`).
//! - Bounded: past `max_bytes` of stored JSON, or past `ttl` without use, the least recently
//!   used responses go first. Continuing a response uses its whole chain, so a response is
//!   never used less recently than those it continues: a chain loses its newest branches first
//!   and never an earlier part a later response still needs.
//! - Private: the folder is created `0700`, the database and its journal are `0600`.
//! - The JSON files an older ossa wrote in the same folder are moved in once, on open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use ossa_agent::harmony::Message;
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// The database's file name in the store folder.
pub const DATABASE_FILE: &str = "responses.sqlite3";

/// How long a writer waits for another process holding the database (a second server on the
/// same folder).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store is and how much it may keep.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub dir: PathBuf,
    /// Most bytes of stored JSON (responses and their messages); the database file is somewhat
    /// larger (indexes, free pages).
    pub max_bytes: u64,
    /// Responses unused for this long are deleted; `None`: kept until space runs out.
    pub ttl: Option<Duration>,
}

impl StoreOptions {
    /// 512 MiB, 30 days (how long OpenAI keeps responses).
    pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            ttl: Some(Self::DEFAULT_TTL),
        }
    }
}

/// Why the store could not do what was asked. The messages name files: they are for the
/// server's log and console; clients get [`StoreError::api_error`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the response store folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open the response store {path}: {reason} (move the file away to start afresh, or \
         start with --no-store)"
    )]
    Open { path: PathBuf, reason: String },
    #[error("stored response `{id}` is damaged: {reason}")]
    Damaged { id: String, reason: String },
    #[error("the earlier part of the conversation of `{0}` is no longer stored")]
    Broken(String),
    #[error("the response is {size} bytes, more than the store may hold ({max} bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error("the response store failed: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("the response store's worker failed: {0}")]
    Worker(String),
}

impl StoreError {
    /// Logs the error, files and all, for the server's operator.
    pub fn log(&self) {
        match self {
            StoreError::Broken(_) => tracing::info!(error = %self, "a stored chain is cut"),
            StoreError::TooLarge { .. } => {
                tracing::warn!(error = %self, "a response is not stored")
            }
            _ => tracing::error!(error = %self, "the response store failed"),
        }
    }

    /// What a client is told: OpenAI's error shape, no file names (the details are logged).
    pub fn api_error(&self) -> ApiError {
        self.log();
        match self {
            StoreError::Damaged { id, .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "stored_response_damaged",
                format!(
                    "stored response `{id}` is damaged and cannot be read (the server's log says \
                     why)"
                ),
            ),
            StoreError::Broken(id) => ApiError::not_found(format!(
                "the earlier part of the conversation of `{id}` is no longer stored"
            )),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "store_error",
                "the response store failed (the server's log says why)",
            ),
        }
    }
}

/// What a continuation starts from.
pub struct Continuation {
    /// The conversation so far: every message of the chain, oldest first (no system or
    /// developer messages: each request brings its own).
    pub messages: Vec<Message>,
    /// The continued response's object.
    pub response: Value,
}

/// The JSON files of the store an older ossa kept, moved into the database on open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacyMigration {
    pub moved: usize,
    /// Files that did not hold a stored response; renamed `*.json.unreadable`.
    pub unreadable: usize,
}

/// How full the store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreUsage {
    pub responses: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub struct ResponseStore {
    db: Mutex<Connection>,
    max_bytes: u64,
    ttl: Option<Duration>,
    migration: Option<LegacyMigration>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY NOT NULL,
    previous_id TEXT,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL,
    -- Deleted by a client but still continued by a later response: kept, not shown.
    hidden INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    response TEXT NOT NULL,
    -- The conversation messages this response added, a JSON array.
    items TEXT NOT NULL,
    -- The request's input items as the API lists them, a JSON array.
    input TEXT NOT NULL DEFAULT '[]'
) STRICT;
CREATE INDEX IF NOT EXISTS responses_by_use ON responses (last_used_ms);
CREATE INDEX IF NOT EXISTS responses_by_previous ON responses (previous_id);
";

/// The response and those it continues, newest first (depth 0 = the response itself).
const CHAIN: &str = "
WITH RECURSIVE chain (id, depth) AS (
    SELECT ?1, 0
    UNION ALL
    SELECT r.previous_id, c.depth + 1 FROM responses r JOIN chain c ON r.id = c.id
    WHERE r.previous_id IS NOT NULL
)";

impl ResponseStore {
    /// Opens (or creates) the store in `options.dir`; a damaged database is an error naming
    /// the file.
    pub fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        create_private_folder(&options.dir)?;
        let path = options.dir.join(DATABASE_FILE);
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        create_private_file(&path).map_err(|e| open_error(e.to_string()))?;
        let db = Connection::open(&path).map_err(|e| open_error(e.to_string()))?;
        configure(&db).map_err(|e| open_error(e.to_string()))?;
        let mut store = Self {
            db: Mutex::new(db),
            max_bytes: options.max_bytes,
            ttl: options.ttl,
            migration: None,
        };
        store.migration = store.migrate_legacy(&options.dir)?;
        store.evict_now()?;
        Ok(store)
    }

    /// What moving an older ossa's JSON files in did, if there were any.
    pub fn migration(&self) -> Option<LegacyMigration> {
        self.migration
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored response object, `None` when there is none (or it was deleted).
    pub fn get(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let text = visible(&self.db(), "response", id)?;
        text.map(|text| parse(id, &text)).transpose()
    }

    /// The input items a stored response was made from, `None` when there is no such
    /// response (or it was deleted).
    pub fn input_items(&self, id: &str) -> Result<Option<Vec<Value>>, StoreError> {
        let text = visible(&self.db(), "input", id)?;
        text.map(|text| parse(id, &text)).transpose()
    }

    /// The conversation up to and including `id`, `None` when there is no such response.
    pub fn continuation(&self, id: &str) -> Result<Option<Continuation>, StoreError> {
        let db = self.db();
        let Some(response) = visible(&db, "response", id)? else {
            return Ok(None);
        };
        let response = parse(id, &response)?;
        let mut statement = db.prepare(&format!(
            "{CHAIN} SELECT r.id, r.previous_id, r.items FROM chain c JOIN responses r ON r.id = c.id
             ORDER BY c.depth DESC"
        ))?;
        let rows = statement
            .query_map([id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if rows
            .first()
            .is_none_or(|(_, previous, _)| previous.is_some())
        {
            // The oldest response found still continues another: a link is missing.
            return Err(StoreError::Broken(id.to_string()));
        }
        let mut messages = Vec::new();
        for (row_id, _, items) in rows {
            let items: Vec<Message> = parse(&row_id, &items)?;
            messages.extend(items);
        }
        Ok(Some(Continuation { messages, response }))
    }

    /// Stores a response: its object, the input items it was made from, the messages it
    /// added, the response it continued. Older responses are evicted to keep the store within
    /// its limits.
    pub fn put(
        &self,
        id: &str,
        previous: Option<&str>,
        response: &impl serde::Serialize,
        input: &[Value],
        items: &[Message],
    ) -> Result<(), StoreError> {
        let damaged = |e: serde_json::Error| StoreError::Damaged {
            id: id.to_string(),
            reason: e.to_string(),
        };
        let response = serde_json::to_string(response).map_err(damaged)?;
        let input = Value::from(input.to_vec()).to_string();
        let items = serde_json::to_string(items).map_err(damaged)?;
        let size = (response.len() + input.len() + items.len()) as u64;
        if size > self.max_bytes {
            return Err(StoreError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let now = now_ms();
        let mut db = self.db();
        let transaction = db.transaction()?;
        transaction.execute(
            "INSERT INTO responses
             (id, previous_id, created_ms, last_used_ms, size, response, items, input)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)",
            params![id, previous, now, size as i64, response, items, input],
        )?;
        if previous.is_some() {
            // The chain was used now: it outlives responses used longer ago.
            transaction.execute(
                &format!(
                    "{CHAIN} UPDATE responses SET last_used_ms = max(last_used_ms, ?2)
                     WHERE id IN (SELECT id FROM chain)"
                ),
                params![id, now],
            )?;
        }
        let evicted = evict(&transaction, self.max_bytes, self.ttl, now)?;
        transaction.commit()?;
        if evicted > 0 {
            shrink(&db);
        }
        Ok(())
    }

    /// Deletes a response; `false` when there was none. A response a later one continues
    /// stays (hidden) until that one goes.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut db = self.db();
        let transaction = db.transaction()?;
        let visible = transaction
            .query_row(
                "SELECT 1 FROM responses WHERE id = ?1 AND hidden = 0",
                [id],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !visible {
            return Ok(false);
        }
        transaction.execute("UPDATE responses SET hidden = 1 WHERE id = ?1", [id])?;
        // Hidden responses nothing continues any more are removed, up the chain.
        let mut next = Some(id.to_string());
        while let Some(current) = next.take() {
            let row: Option<(bool, Option<String>)> = transaction
                .query_row(
                    "SELECT hidden, previous_id FROM responses r WHERE id = ?1
                     AND NOT EXISTS (SELECT 1 FROM responses c WHERE c.previous_id = r.id)",
                    [&current],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            if let Some((true, previous)) = row {
                transaction.execute("DELETE FROM responses WHERE id = ?1", [&current])?;
                next = previous;
            }
        }
        transaction.commit()?;
        Ok(true)
    }

    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let db = self.db();
        let (responses, bytes): (i64, i64) = db.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM responses",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(StoreUsage {
            responses: responses.max(0) as u64,
            bytes: bytes.max(0) as u64,
        })
    }

    /// Applies the limits now (a lower limit than the store was filled with, expired ones).
    fn evict_now(&self) -> Result<(), StoreError> {
        let mut db = self.db();
        let transaction = db.transaction()?;
        let evicted = evict(&transaction, self.max_bytes, self.ttl, now_ms())?;
        transaction.commit()?;
        if evicted > 0 {
            shrink(&db);
        }
        Ok(())
    }

    /// Moves `resp_*.json` files (each a whole conversation) into the database and deletes
    /// them, and the `.partial` files a crash left; files that hold no stored response are
    /// renamed `*.json.unreadable`.
    fn migrate_legacy(&self, dir: &Path) -> Result<Option<LegacyMigration>, StoreError> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(None);
        };
        let mut migration = LegacyMigration::default();
        let now = now_ms();
        let mut moved = Vec::new();
        let mut leftovers = Vec::new();
        let mut db = self.db();
        let transaction = db.transaction()?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".resp_") && name.ends_with(".json.partial") {
                leftovers.push(entry.path());
                continue;
            }
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|id| id.starts_with("resp_"))
            else {
                continue;
            };
            let stored = std::fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .filter(|v| v["response"].is_object() && v["conversation"].is_array());
            let Some(stored) = stored else {
                // Set aside (not deleted, not read again at the next start).
                let aside = entry.path().with_extension("json.unreadable");
                if let Err(e) = std::fs::rename(entry.path(), &aside) {
                    tracing::warn!(file = %aside.display(), error = %e, "cannot set a response file aside");
                }
                migration.unreadable += 1;
                continue;
            };
            let response = stored["response"].to_string();
            let items = stored["conversation"].to_string();
            let created_ms = stored["response"]["created_at"]
                .as_i64()
                .map_or_else(now_ms, |s| s.saturating_mul(1000));
            // Moving them in counts as a use: the age limit starts now.
            transaction.execute(
                "INSERT OR IGNORE INTO responses
                 (id, previous_id, created_ms, last_used_ms, size, response, items)
                 VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    created_ms,
                    now,
                    (response.len() + items.len()) as i64,
                    response,
                    items
                ],
            )?;
            migration.moved += 1;
            moved.push(entry.path());
        }
        transaction.commit()?;
        drop(db);
        // Only once they are safely in the database.
        for path in moved.iter().chain(&leftovers) {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete a moved response file");
            }
        }
        Ok((migration != LegacyMigration::default()).then_some(migration))
    }
}

/// Runs `work` on the store off the async threads (a write waits for the disk).
pub async fn run<T: Send + 'static>(
    store: &Arc<ResponseStore>,
    work: impl FnOnce(&ResponseStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || work(&store))
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
}

/// `column` of the response `id`, `None` when there is none (or it was deleted).
fn visible(db: &Connection, column: &'static str, id: &str) -> Result<Option<String>, StoreError> {
    let text = db
        .query_row(
            &format!("SELECT {column} FROM responses WHERE id = ?1 AND hidden = 0"),
            [id],
            |row| row.get(0),
        )
        .optional()?;
    Ok(text)
}

fn parse<T: DeserializeOwned>(id: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Damaged {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

fn configure(db: &Connection) -> rusqlite::Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    // Before the first table: lets evictions give pages back to the file system.
    db.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "the response store cannot use a write-ahead log");
    }
    // Durable once a write returns.
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "journal_size_limit", 8 << 20)?;
    let check: String = db.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("the database is damaged: {check}")),
        ));
    }
    db.execute_batch(SCHEMA)?;
    // A database an older ossa made has no `input` column: its responses list no input items.
    let has_input: bool = db.query_row(
        "SELECT count(*) FROM pragma_table_info('responses') WHERE name = 'input'",
        [],
        |row| row.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_input {
        db.execute_batch("ALTER TABLE responses ADD COLUMN input TEXT NOT NULL DEFAULT '[]'")?;
    }
    Ok(())
}

/// Deletes what the limits no longer allow, least recently used first (and, among responses
/// used at the same moment, the later of a chain first); returns how many went.
fn evict(
    db: &rusqlite::Transaction<'_>,
    max_bytes: u64,
    ttl: Option<Duration>,
    now: i64,
) -> rusqlite::Result<usize> {
    let mut evicted = 0;
    if let Some(ttl) = ttl {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        evicted += db.execute(
            "DELETE FROM responses WHERE last_used_ms < ?1",
            [now.saturating_sub(ttl_ms)],
        )?;
    }
    let total: i64 = db.query_row("SELECT coalesce(sum(size), 0) FROM responses", [], |row| {
        row.get(0)
    })?;
    let mut excess = total.saturating_sub(i64::try_from(max_bytes).unwrap_or(i64::MAX));
    if excess > 0 {
        let mut victims = Vec::new();
        {
            let mut statement =
                db.prepare("SELECT id, size FROM responses ORDER BY last_used_ms ASC, rowid DESC")?;
            let mut rows = statement.query([])?;
            while excess > 0
                && let Some(row) = rows.next()?
            {
                victims.push(row.get::<_, String>(0)?);
                excess -= row.get::<_, i64>(1)?;
            }
        }
        for id in &victims {
            evicted += db.execute("DELETE FROM responses WHERE id = ?1", [id])?;
        }
    }
    Ok(evicted)
}

/// Gives freed pages back to the file system (best effort).
fn shrink(db: &Connection) {
    // The pragma frees a page per step: it is stepped to the end.
    let vacuum = || -> rusqlite::Result<()> {
        let mut statement = db.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = statement.query([])?;
        while rows.next()?.is_some() {}
        Ok(())
    };
    if let Err(e) = vacuum() {
        tracing::warn!(error = %e, "cannot shrink the response store");
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The folder, created readable by its owner only when it does not exist (an existing folder
/// is the user's to set).
fn create_private_folder(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| StoreError::Folder {
        path: dir.to_path_buf(),
        source,
    })
}

/// The database file, readable by its owner only (SQLite gives its journal the same mode).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossa_agent::harmony::Role;
    use serde_json::json;

    fn message(text: &str) -> Message {
        Message::from_role_and_content(Role::User, text)
    }

    fn store(dir: &Path, max_bytes: u64) -> ResponseStore {
        ResponseStore::open(&StoreOptions {
            dir: dir.to_path_buf(),
            max_bytes,
            ttl: None,
        })
        .expect("opens")
    }

    fn texts(continuation: &Continuation) -> Vec<String> {
        continuation.messages.iter().map(Message::text).collect()
    }

    #[test]
    fn a_chain_is_read_back_whole_from_its_links() {
        let dir = tempfile::tempdir().expect("temp");
        let store = store(dir.path(), 1 << 20);
        store
            .put(
                "resp_a",
                None,
                &json!({"id": "resp_a"}),
                &[],
                &[message("one")],
            )
            .expect("stored");
        store
            .put(
                "resp_b",
                Some("resp_a"),
                &json!({"id": "resp_b"}),
                &[],
                &[message("two")],
            )
            .expect("stored");
        let chain = store
            .continuation("resp_b")
            .expect("reads")
            .expect("exists");
        assert_eq!(texts(&chain), ["one", "two"]);
        assert_eq!(chain.response, json!({"id": "resp_b"}));
        assert!(store.continuation("resp_c").expect("reads").is_none());
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_never_an_ancestor_first() {
        let dir = tempfile::tempdir().expect("temp");
        let filler = "x".repeat(1000);
        // Room for about three responses.
        let store = store(dir.path(), 3000);
        store
            .put("resp_root", None, &json!({}), &[], &[message(&filler)])
            .expect("stored");
        store
            .put("resp_old", None, &json!({}), &[], &[message(&filler)])
            .expect("stored");
        std::thread::sleep(Duration::from_millis(5));
        store
            .put(
                "resp_next",
                Some("resp_root"),
                &json!({}),
                &[],
                &[message(&filler)],
            )
            .expect("stored");
        // resp_old was used least recently; the root is used with its continuation.
        assert!(store.get("resp_old").expect("reads").is_none());
        std::thread::sleep(Duration::from_millis(5));
        store
            .put("resp_new", None, &json!({}), &[], &[message(&filler)])
            .expect("stored");
        // Now the chain (root, next) is oldest: its newer end goes before the root, so
        // nothing left over points at a missing response.
        assert!(store.get("resp_next").expect("reads").is_none());
        let usage = store.usage().expect("usage");
        assert!(usage.bytes <= 3000, "{usage:?}");
        for id in ["resp_root", "resp_new"] {
            assert!(store.continuation(id).expect("reads").is_some(), "{id}");
        }
    }

    #[test]
    fn a_deleted_response_stays_for_what_continues_it() {
        let dir = tempfile::tempdir().expect("temp");
        let store = store(dir.path(), 1 << 20);
        store
            .put("resp_a", None, &json!({}), &[], &[message("one")])
            .expect("stored");
        store
            .put("resp_b", Some("resp_a"), &json!({}), &[], &[message("two")])
            .expect("stored");
        assert!(store.delete("resp_a").expect("deletes"));
        assert!(!store.delete("resp_a").expect("deletes"));
        assert!(store.get("resp_a").expect("reads").is_none());
        let chain = store
            .continuation("resp_b")
            .expect("reads")
            .expect("exists");
        assert_eq!(texts(&chain), ["one", "two"]);
        // Deleting the last one takes the hidden one with it.
        assert!(store.delete("resp_b").expect("deletes"));
        assert_eq!(store.usage().expect("usage").responses, 0);
    }

    #[test]
    fn a_response_larger_than_the_store_is_refused() {
        let dir = tempfile::tempdir().expect("temp");
        let store = store(dir.path(), 100);
        let error = store
            .put(
                "resp_a",
                None,
                &json!({}),
                &[],
                &[message(&"x".repeat(200))],
            )
            .expect_err("too large");
        assert!(matches!(error, StoreError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn input_items_are_kept_and_an_older_database_gains_their_column() {
        let dir = tempfile::tempdir().expect("temp");
        // The table as the ossa before input items made it, with one response in it.
        {
            let db = Connection::open(dir.path().join(DATABASE_FILE)).expect("opens");
            db.execute_batch(
                "CREATE TABLE responses (
                    id TEXT PRIMARY KEY NOT NULL, previous_id TEXT,
                    created_ms INTEGER NOT NULL, last_used_ms INTEGER NOT NULL,
                    hidden INTEGER NOT NULL DEFAULT 0, size INTEGER NOT NULL,
                    response TEXT NOT NULL, items TEXT NOT NULL
                ) STRICT;
                INSERT INTO responses (id, created_ms, last_used_ms, size, response, items)
                VALUES ('resp_old', 1, 1, 2, '{}', '[]');",
            )
            .expect("old schema");
        }
        let store = store(dir.path(), 1 << 20);
        assert_eq!(
            store.input_items("resp_old").expect("reads"),
            Some(Vec::new())
        );
        let input = vec![json!({"id": "msg_1", "type": "message", "role": "user"})];
        store
            .put("resp_new", None, &json!({}), &input, &[message("one")])
            .expect("stored");
        assert_eq!(store.input_items("resp_new").expect("reads"), Some(input));
        assert_eq!(store.input_items("resp_none").expect("reads"), None);
        // Opening it again finds the column there.
        drop(store);
        let store = self::store(dir.path(), 1 << 20);
        assert!(store.input_items("resp_new").expect("reads").is_some());
    }
}
