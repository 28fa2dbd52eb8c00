//! SQLite storage (`"type": "sqlite"`): one `data.db` in WAL mode, upstream's schema, reads by
//! `id > cursor` and acknowledgement by `DELETE WHERE id <= ?`.
//!
//! # Design
//!
//! * **Schema.** As upstream: `messages(id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp
//!   INTEGER, message BLOB)` with an index on `timestamp`. `id` is the sequence number;
//!   `AUTOINCREMENT` never reuses an id, even after every row was deleted. `timestamp` is the
//!   time the row was stored, in milliseconds; `message` is the [`codec`] encoding.
//! * **Threads.** A [`rusqlite::Connection`] is not `Sync`, and SQLite calls block, so every
//!   statement runs in [`tokio::task::spawn_blocking`] on one of two connections: the *writer*
//!   (inserts, deletes, sweeps) and the *reader* (selects; in WAL mode it never waits for the
//!   writer). A maintenance thread does the group commit, the TTL sweep and incremental vacuum.
//! * **No duplicates.** The read cursor is the last id handed out and reads select
//!   `id > cursor`; a read only moves the cursor if nobody moved it while the select ran, so
//!   concurrent reads never hand out the same rows twice (upstream's pre-fetch race, #2098),
//!   and a cancelled read moves nothing.
//! * **Durability.** `put` returns after the insert transaction committed: the rows survive a
//!   crash of the process. With `synchronous = FULL` the commit also fsyncs the WAL, so they
//!   survive a power cut and [`EventStorage::wait_durable`] returns at once. With `NORMAL`
//!   (default) the maintenance thread fsyncs the WAL file every `sync_interval` while there are
//!   unsynced commits, and within 5 ms while somebody waits in `wait_durable(seq)`, which
//!   returns once an fsync that started after `seq` was committed has finished.
//! * **Bounds.** Rows are limited by `max_records_count` (if set) and bytes by
//!   `size_limit` × `max_db_amount` MB of used database pages; when full the [`FullPolicy`]
//!   applies.
//! * **TTL.** Rows stored more than `messages_ttl_in_days` ago are skipped when read and counted
//!   as expired; every `messages_ttl_check_in_hours` they are deleted.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{watch, Notify};

use super::codec;
use super::group_commit;
use super::{
    sort_fetched, Batch, EventStorage, Fetched, FullPolicy, PutReport, StorageError, StorageStats,
};
use crate::model::{now_millis, DeviceData};

/// Name of the database file in the data folder (as upstream).
pub const DB_FILE: &str = "data.db";

/// Estimated bytes a row costs besides its blob (rowid, timestamp, index entry, cell header).
const ROW_OVERHEAD: u64 = 32;

/// Estimated bytes of database pages a row with a blob of `len` bytes takes: pages are not
/// filled completely, so a quarter is added.
fn row_cost(len: usize) -> u64 {
    let len = len as u64;
    len + len / 4 + ROW_OVERHEAD
}

/// Pages freed per incremental vacuum step.
const VACUUM_PAGES: u32 = 2048;

/// SQLite's `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSynchronous {
    /// `NORMAL`: commits survive a crash of the process; the WAL is fsynced by the group commit
    /// every `sync_interval`, after which the rows also survive a power cut.
    #[default]
    Normal,
    /// `FULL`: every commit fsyncs the WAL, so it survives a power cut at once (slower).
    Full,
}

/// Settings of a [`SqliteStorage`]. Field names follow upstream's configuration keys.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The data folder (`data_file_path`; upstream wants a trailing `/`, tbgw takes either). The
    /// database is `data.db` in it.
    pub data_file_path: PathBuf,
    /// Records per read batch (`max_read_records_count`).
    pub max_read_records_count: usize,
    /// Rows per insert transaction (`writing_batch_size`); a `put` of more rows commits several
    /// transactions.
    pub writing_batch_size: usize,
    /// Hours between TTL sweeps (`messages_ttl_check_in_hours`).
    pub messages_ttl_check_in_hours: f64,
    /// Rows older than this many days are not sent and are deleted by the sweep
    /// (`messages_ttl_in_days`); `None` keeps rows until acknowledged.
    pub messages_ttl_in_days: Option<f64>,
    /// Megabytes per database file (`size_limit`). tbgw keeps one file; its budget is
    /// `size_limit` × `max_db_amount` MB.
    pub size_limit: u64,
    /// Number of database files upstream rotates through (`max_db_amount`); see `size_limit`.
    pub max_db_amount: u64,
    /// Most rows held (tbgw extension), if any.
    pub max_records_count: Option<usize>,
    /// What to do when full (tbgw extension; upstream drops the newest records).
    pub full_policy: FullPolicy,
    /// SQLite `synchronous` (tbgw extension; upstream uses `NORMAL`).
    pub synchronous: SqliteSynchronous,
    /// Group commit under `NORMAL`: fsync the WAL this long after the first unsynced commit.
    pub sync_interval: Duration,
    /// How long a statement waits for a lock held by another connection (upstream: 15 s).
    pub busy_timeout: Duration,
}

impl SqliteOptions {
    /// Upstream's defaults for a data folder.
    pub fn new(data_file_path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            data_file_path: data_file_path.into(),
            max_read_records_count: 1000,
            writing_batch_size: 1000,
            messages_ttl_check_in_hours: 1.0,
            messages_ttl_in_days: Some(7.0),
            size_limit: 1024,
            max_db_amount: 10,
            max_records_count: None,
            full_policy: FullPolicy::Block,
            synchronous: SqliteSynchronous::Normal,
            sync_interval: Duration::from_millis(100),
            busy_timeout: Duration::from_secs(15),
        }
    }

    /// The options the `storage` section describes; a relative `data_file_path` is taken
    /// relative to `config_dir`. Keys that are not set keep upstream's defaults.
    pub fn from_config(cfg: &crate::config::StorageConfig, config_dir: &Path) -> Self {
        let dir = crate::config::StorageConfig::folder(
            config_dir,
            cfg.data_file_path.as_deref().or(Some("./")),
        );
        let mut o = SqliteOptions::new(dir);
        if let Some(n) = cfg.max_read_records_count {
            o.max_read_records_count = n;
        }
        if let Some(n) = cfg.writing_batch_size {
            o.writing_batch_size = n;
        }
        if let Some(h) = cfg.messages_ttl_check_in_hours {
            o.messages_ttl_check_in_hours = h;
        }
        if cfg.messages_ttl_in_days.is_some() {
            o.messages_ttl_in_days = cfg.messages_ttl_in_days;
        }
        if let Some(n) = cfg.size_limit {
            o.size_limit = n;
        }
        if let Some(n) = cfg.max_db_amount {
            o.max_db_amount = n;
        }
        o.full_policy = cfg.full_policy;
        o
    }

    fn ttl(&self) -> Option<Duration> {
        self.messages_ttl_in_days
            .filter(|d| d.is_finite() && *d > 0.0)
            .map(|d| Duration::from_secs_f64((d * 86_400.0).min(1e12)))
    }

    fn ttl_check_interval(&self) -> Duration {
        let h = self.messages_ttl_check_in_hours;
        let secs = if h.is_finite() && h > 0.0 {
            (h * 3600.0).min(1e9)
        } else {
            3600.0
        };
        Duration::from_secs_f64(secs).max(Duration::from_millis(1))
    }

    fn byte_budget(&self) -> u64 {
        self.size_limit
            .max(1)
            .saturating_mul(self.max_db_amount.max(1))
            .saturating_mul(1024 * 1024)
    }

    fn record_budget(&self) -> u64 {
        self.max_records_count.map_or(u64::MAX, |n| n.max(1) as u64)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Last id handed out by `read`; reads select `id > cursor`.
    cursor: u64,
    /// Changes whenever the cursor is moved, so a read that raced another one retries.
    epoch: u64,
    /// Highest id acknowledged.
    acked_seq: u64,
    /// Highest id committed.
    last_seq: u64,
    /// Rows in the table.
    rows: u64,
    /// Bytes of used database pages.
    used_bytes: u64,
    /// Skipped (expired or corrupt) rows up to this id have been counted already.
    counted_through: u64,
    /// Group commit: highest id fsynced by the maintenance thread, since when commits wait,
    /// and whether a flush asked for an fsync now.
    synced_seq: u64,
    unsynced_since: Option<Instant>,
    flush_requested: bool,
    /// The highest id somebody waits to become durable ([`EventStorage::wait_durable`]);
    /// while it is above `synced_seq` the group commit does not wait for its interval.
    wanted: u64,
    vacuum_pending: bool,
    closed: bool,
    stored: u64,
    acked: u64,
    dropped: u64,
    corrupt: u64,
    expired: u64,
}

struct Shared {
    opts: SqliteOptions,
    db_path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    state: Mutex<State>,
    /// Wakes the maintenance thread.
    cv: Condvar,
    /// Highest durable id.
    durable: watch::Sender<u64>,
    /// Woken when rows are committed.
    data: Notify,
    /// Woken when rows are deleted (space freed).
    space: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

/// Durable SQLite storage; `docs/STORAGE.md` describes its design and its configuration.
#[derive(Debug)]
pub struct SqliteStorage {
    shared: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn db_err(what: &str, e: rusqlite::Error) -> StorageError {
    StorageError::Database(format!("{what}: {e}"))
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    StorageError::Database(format!("storage worker failed: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Sections under these locks leave the data consistent or return an error; a poisoned lock
    // means a bug elsewhere, and carrying on is better than losing the buffer.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn used_bytes(c: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok((pages - free).max(0) as u64 * size.max(0) as u64)
}

fn open_connection(path: &Path, opts: &SqliteOptions) -> Result<Connection, StorageError> {
    let shown = path.display();
    let c = Connection::open(path)
        .map_err(|e| db_err(&format!("cannot open {shown} (is the folder writable?)"), e))?;
    c.busy_timeout(opts.busy_timeout)
        .map_err(|e| db_err("cannot set the busy timeout", e))?;
    // Only takes effect on a new database, before the table exists.
    c.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(|e| db_err(&format!("{shown} is not a usable SQLite database"), e))?;
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| db_err(&format!("{shown} is not a usable SQLite database"), e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Database(format!(
            "{shown}: cannot switch to WAL mode (journal mode is {mode})"
        )));
    }
    let sync = match opts.synchronous {
        SqliteSynchronous::Normal => "NORMAL",
        SqliteSynchronous::Full => "FULL",
    };
    c.pragma_update(None, "synchronous", sync)
        .map_err(|e| db_err("cannot set synchronous", e))?;
    c.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024_i64)
        .map_err(|e| db_err("cannot set journal_size_limit", e))?;
    Ok(c)
}

impl SqliteStorage {
    /// Opens (or creates) `data.db` in `opts.data_file_path`, resuming after the last
    /// acknowledged row.
    pub fn open(opts: SqliteOptions) -> Result<SqliteStorage, StorageError> {
        let dir = opts.data_file_path.clone();
        fs::create_dir_all(&dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create the storage folder {}: {e}", dir.display()),
            )
        })?;
        let db_path = dir.join(DB_FILE);
        let writer = open_connection(&db_path, &opts)?;
        writer
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS messages (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     timestamp INTEGER NOT NULL,
                     message BLOB NOT NULL);
                 CREATE INDEX IF NOT EXISTS messages_timestamp ON messages(timestamp);",
            )
            .map_err(|e| {
                db_err(
                    &format!(
                        "cannot create the table in {} (is the folder writable?)",
                        db_path.display()
                    ),
                    e,
                )
            })?;
        let (min_id, max_id, rows): (i64, i64, i64) = writer
            .query_row(
                "SELECT COALESCE(MIN(id), 0), COALESCE(MAX(id), 0), COUNT(*) FROM messages",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| db_err(&format!("cannot read {}", db_path.display()), e))?;
        let seq: i64 = writer
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'messages'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| db_err(&format!("cannot read {}", db_path.display()), e))?;
        let last_seq = seq.max(max_id).max(0) as u64;
        let acked_seq = if rows > 0 {
            (min_id.max(1) - 1) as u64
        } else {
            last_seq
        };
        let used = used_bytes(&writer).map_err(|e| db_err("cannot measure the database", e))?;
        let reader = open_connection(&db_path, &opts)?;
        if rows > 0 {
            tracing::info!(path = %db_path.display(), rows, first = min_id, last = max_id, "Resuming the SQLite storage.");
        }
        let state = State {
            cursor: acked_seq,
            acked_seq,
            last_seq,
            rows: rows.max(0) as u64,
            used_bytes: used,
            counted_through: acked_seq,
            synced_seq: last_seq,
            ..State::default()
        };
        let (durable, _) = watch::channel(last_seq);
        let shared = Arc::new(Shared {
            opts,
            db_path,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            state: Mutex::new(state),
            cv: Condvar::new(),
            durable,
            data: Notify::new(),
            space: Notify::new(),
        });
        let s2 = shared.clone();
        let worker = std::thread::Builder::new()
            .name("tbgw-sqlite".into())
            .spawn(move || maintenance(&s2))
            .map_err(StorageError::Io)?;
        Ok(SqliteStorage {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.shared.db_path
    }

    /// Stops the maintenance thread after a last group commit. Called by `Drop` too; later
    /// calls return [`StorageError::Closed`].
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.cv.notify_all();
        self.shared.data.notify_waiters();
        self.shared.space.notify_waiters();
        let handle = lock(&self.worker).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        // Wake `wait_durable` callers so they see the storage is closed.
        self.shared.durable.send_modify(|_| {});
    }
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Inserts what fits of `pending`, applying the full policy; returns true when the `block`
    /// policy has to wait for space.
    fn put_some(
        &self,
        pending: &mut VecDeque<Vec<u8>>,
        now: i64,
        report: &mut PutReport,
    ) -> Result<bool, StorageError> {
        let mut w = lock(&self.writer);
        let rec_budget = self.opts.record_budget();
        let byte_budget = self.opts.byte_budget();
        let chunk = self.opts.writing_batch_size.max(1);
        while !pending.is_empty() {
            let (rows, used) = {
                let g = self.lock();
                if g.closed {
                    return Err(StorageError::Closed);
                }
                (g.rows, g.used_bytes)
            };
            let mut n = 0usize;
            let mut extra = 0u64;
            for b in pending.iter().take(chunk) {
                let cost = row_cost(b.len());
                if rows + n as u64 >= rec_budget || used + extra + cost > byte_budget {
                    break;
                }
                n += 1;
                extra += cost;
            }
            if n > 0 {
                let tx = w
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(|e| db_err("cannot begin the insert transaction", e))?;
                {
                    let mut st = tx
                        .prepare_cached("INSERT INTO messages (timestamp, message) VALUES (?1, ?2)")
                        .map_err(|e| db_err("cannot prepare the insert", e))?;
                    for b in pending.iter().take(n) {
                        st.execute(params![now, b])
                            .map_err(|e| db_err("cannot insert a record", e))?;
                    }
                }
                let last = tx.last_insert_rowid().max(0) as u64;
                tx.commit()
                    .map_err(|e| db_err("cannot commit the inserted records", e))?;
                pending.drain(..n);
                let used = used_bytes(&w).unwrap_or(used + extra);
                {
                    let mut g = self.lock();
                    g.last_seq = last;
                    g.rows += n as u64;
                    g.stored += n as u64;
                    g.used_bytes = used;
                    if self.opts.synchronous == SqliteSynchronous::Normal {
                        g.unsynced_since.get_or_insert_with(Instant::now);
                    }
                }
                if self.opts.synchronous == SqliteSynchronous::Full {
                    self.durable.send_replace(last);
                } else {
                    self.cv.notify_one();
                }
                report.stored += n;
                report.last_seq = last;
                self.data.notify_waiters();
                continue;
            }
            // Full.
            match self.opts.full_policy {
                FullPolicy::Block => return Ok(true),
                FullPolicy::DropNewest => {
                    let k = pending.len();
                    pending.clear();
                    self.lock().dropped += k as u64;
                    report.dropped += k;
                    tracing::warn!(
                        records = k,
                        "The SQLite storage is full; dropped the newest records."
                    );
                }
                FullPolicy::DropOldest => {
                    let next_cost = pending.front().map_or(0, |b| row_cost(b.len()));
                    let mut k = 1u64;
                    if rows + 1 > rec_budget {
                        k = k.max(rows + 1 - rec_budget);
                    }
                    if used + next_cost > byte_budget && rows > 0 {
                        let per_row = (used / rows).max(1);
                        k = k.max((used + next_cost - byte_budget).div_ceil(per_row) + 1);
                    }
                    let gone = w
                        .execute("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?1)", [k as i64])
                        .map_err(|e| db_err("cannot drop the oldest records", e))? as u64;
                    let used = used_bytes(&w).unwrap_or(used);
                    let mut g = self.lock();
                    g.rows = g.rows.saturating_sub(gone);
                    g.used_bytes = used;
                    if gone == 0 {
                        // Nothing left to drop: the record alone is larger than the budget.
                        pending.pop_front();
                        g.dropped += 1;
                        report.dropped += 1;
                    } else {
                        g.dropped += gone;
                        report.dropped += gone as usize;
                    }
                }
            }
        }
        Ok(false)
    }

    /// Selects up to `max` rows after `cursor`: (id, row).
    fn fetch(
        &self,
        cursor: u64,
        max: usize,
        ttl_cutoff: Option<i64>,
    ) -> Result<Vec<(u64, Fetched)>, StorageError> {
        let r = lock(&self.reader);
        let mut st = r
            .prepare_cached(
                "SELECT id, timestamp, message FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| db_err("cannot prepare the select", e))?;
        let mut rows = st
            .query(params![cursor as i64, max.min(i64::MAX as usize) as i64])
            .map_err(|e| db_err("cannot read records", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| db_err("cannot read records", e))? {
            let id: i64 = row
                .get(0)
                .map_err(|e| db_err("cannot read a record id", e))?;
            let ts: Option<i64> = row.get(1).unwrap_or(None);
            let item = if ttl_cutoff.is_some_and(|c| ts.is_some_and(|t| t < c)) {
                Fetched::Expired
            } else {
                match row.get_ref(2) {
                    Ok(rusqlite::types::ValueRef::Blob(b)) => {
                        codec::decode(b).map_or(Fetched::Corrupt, Fetched::Record)
                    }
                    _ => Fetched::Corrupt,
                }
            };
            out.push((id.max(0) as u64, item));
        }
        Ok(out)
    }

    fn ttl_cutoff(&self) -> Option<i64> {
        self.opts
            .ttl()
            .map(|t| now_millis().saturating_sub(t.as_millis().min(i64::MAX as u128) as i64))
    }

    /// Deletes rows older than the TTL; returns the number deleted.
    fn sweep(&self) -> Result<u64, StorageError> {
        let Some(cut) = self.ttl_cutoff() else {
            return Ok(0);
        };
        let mut w = lock(&self.writer);
        let counted = self.lock().counted_through;
        let tx = w
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_err("cannot begin the TTL sweep", e))?;
        let fresh = tx
            .execute(
                "DELETE FROM messages WHERE timestamp < ?1 AND id > ?2",
                params![cut, counted as i64],
            )
            .map_err(|e| db_err("cannot delete expired records", e))? as u64;
        let seen = tx
            .execute("DELETE FROM messages WHERE timestamp < ?1", params![cut])
            .map_err(|e| db_err("cannot delete expired records", e))? as u64;
        tx.commit()
            .map_err(|e| db_err("cannot commit the TTL sweep", e))?;
        let total = fresh + seen;
        if total > 0 {
            let used = used_bytes(&w).ok();
            let mut g = self.lock();
            g.rows = g.rows.saturating_sub(total);
            g.expired += fresh;
            g.vacuum_pending = true;
            if let Some(u) = used {
                g.used_bytes = u;
            }
            drop(g);
            tracing::info!(
                records = total,
                "Deleted expired records from the SQLite storage."
            );
            self.space.notify_waiters();
        }
        Ok(total)
    }

    fn vacuum(&self) -> Result<(), StorageError> {
        let w = lock(&self.writer);
        w.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
            .map_err(|e| db_err("incremental vacuum failed", e))?;
        let free: i64 = w
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap_or(0);
        let used = used_bytes(&w).ok();
        let mut g = self.lock();
        g.vacuum_pending = free > 0;
        if let Some(u) = used {
            g.used_bytes = u;
        }
        Ok(())
    }

    /// Fsyncs the WAL (and, the first time, the folder), which makes every commit so far durable.
    fn sync_wal(&self, wal: &mut Option<File>) -> std::io::Result<()> {
        if wal.is_none() {
            let mut p = self.db_path.clone().into_os_string();
            p.push("-wal");
            let f = match File::open(PathBuf::from(p)) {
                Ok(f) => f,
                // No WAL (yet, or any more): everything committed is in the database file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return File::open(&self.db_path)?.sync_data()
                }
                Err(e) => return Err(e),
            };
            if let Some(dir) = self.db_path.parent() {
                File::open(dir)?.sync_all()?;
            }
            *wal = Some(f);
        }
        match wal {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }
}

/// The maintenance thread: group commit of the WAL under `synchronous = NORMAL`, the TTL sweep
/// and incremental vacuum.
fn maintenance(sh: &Shared) {
    let interval = sh.opts.sync_interval;
    let ttl_every = sh.opts.ttl_check_interval();
    let has_ttl = sh.opts.ttl().is_some();
    let mut next_sweep = Instant::now();
    let mut next_vacuum = Instant::now();
    let mut wal: Option<File> = None;
    let mut last_sync = Instant::now();
    let mut g = sh.lock();
    loop {
        let now = Instant::now();
        let unsynced =
            g.last_seq > g.synced_seq && sh.opts.synchronous == SqliteSynchronous::Normal;
        let sync_at = group_commit::sync_due(
            g.unsynced_since,
            interval,
            g.wanted > g.synced_seq,
            last_sync,
        );
        if unsynced
            && (g.flush_requested
                || g.closed
                || sync_at.is_some_and(|t| now >= t)
                || sync_at.is_none())
        {
            let target = g.last_seq;
            g.flush_requested = false;
            g.unsynced_since = None;
            drop(g);
            last_sync = Instant::now();
            let result = sh.sync_wal(&mut wal);
            g = sh.lock();
            match result {
                Ok(()) => {
                    g.synced_seq = g.synced_seq.max(target);
                    sh.durable.send_replace(g.synced_seq);
                }
                Err(e) => {
                    tracing::error!(error = %e, "Fsync of the SQLite WAL failed; records are not durable until it succeeds.");
                    wal = None;
                    g.unsynced_since = Some(Instant::now());
                    if g.closed {
                        return;
                    }
                    g = sh
                        .cv
                        .wait_timeout(g, Duration::from_millis(500))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
            continue;
        }
        if g.closed {
            return;
        }
        if has_ttl && now >= next_sweep {
            drop(g);
            if let Err(e) = sh.sweep() {
                tracing::warn!(error = %e, "The SQLite TTL sweep failed.");
            }
            next_sweep = Instant::now() + ttl_every;
            g = sh.lock();
            continue;
        }
        if g.vacuum_pending && now >= next_vacuum {
            drop(g);
            if let Err(e) = sh.vacuum() {
                tracing::warn!(error = %e, "The SQLite incremental vacuum failed.");
            }
            next_vacuum = Instant::now() + Duration::from_secs(1);
            g = sh.lock();
            continue;
        }
        let mut wake = now + Duration::from_secs(3600);
        if has_ttl {
            wake = wake.min(next_sweep);
        }
        if g.vacuum_pending {
            wake = wake.min(next_vacuum);
        }
        if let Some(t) = sync_at.filter(|_| unsynced) {
            wake = wake.min(t);
        }
        let timeout = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        g = sh
            .cv
            .wait_timeout(g, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

#[async_trait]
impl EventStorage for SqliteStorage {
    async fn put(&self, records: Vec<DeviceData>) -> Result<PutReport, StorageError> {
        let now = now_millis();
        let mut report = PutReport::default();
        if records.is_empty() {
            return Ok(report);
        }
        let sh = self.shared.clone();
        let mut pending = tokio::task::spawn_blocking(move || {
            records
                .iter()
                .map(|r| {
                    let mut b = Vec::with_capacity(128);
                    codec::encode(r, &mut b);
                    b
                })
                .collect::<VecDeque<Vec<u8>>>()
        })
        .await
        .map_err(join_err)?;
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let sh = sh.clone();
            let (p, r, blocked) = tokio::task::spawn_blocking(move || {
                let mut r = PutReport::default();
                let blocked = sh.put_some(&mut pending, now, &mut r);
                (pending, r, blocked)
            })
            .await
            .map_err(join_err)?;
            pending = p;
            report.stored += r.stored;
            report.dropped += r.dropped;
            if r.stored > 0 {
                report.last_seq = r.last_seq;
            }
            if !blocked? {
                return Ok(report);
            }
            space.await;
            if self.shared.lock().closed {
                return Err(StorageError::Closed);
            }
        }
    }

    async fn read(&self, max: usize) -> Result<Batch, StorageError> {
        let max = max.max(1);
        let sh = &self.shared;
        loop {
            let notified = sh.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (cursor, epoch, last_seq) = {
                let g = sh.lock();
                if g.closed {
                    return Err(StorageError::Closed);
                }
                (g.cursor, g.epoch, g.last_seq)
            };
            if cursor >= last_seq {
                notified.await;
                continue;
            }
            let cutoff = sh.ttl_cutoff();
            let sh2 = sh.clone();
            let rows = tokio::task::spawn_blocking(move || sh2.fetch(cursor, max, cutoff))
                .await
                .map_err(join_err)??;
            // From here on nothing awaits: the cursor moves only if this read returns.
            let mut g = sh.lock();
            if g.epoch != epoch {
                continue; // another read or a rewind moved the cursor meanwhile
            }
            g.epoch += 1;
            let Some(&(last_id, _)) = rows.last() else {
                // Everything up to `last_seq` was deleted (acknowledged, dropped or expired).
                g.cursor = g.cursor.max(last_seq);
                continue;
            };
            let (records, expired, corrupt) = sort_fetched(rows, g.counted_through);
            g.counted_through = g.counted_through.max(last_id);
            g.cursor = last_id;
            g.corrupt += corrupt;
            g.expired += expired;
            drop(g);
            if corrupt > 0 {
                tracing::warn!(
                    records = corrupt,
                    "Skipped corrupt records in the SQLite storage."
                );
            }
            if !records.is_empty() {
                // Ids in a batch may have gaps (deleted or skipped rows); the batch ends at the
                // last row it consumed, so acknowledging `last_seq()` also deletes skipped rows.
                let n = records.len() as u64;
                return Ok(Batch {
                    first_seq: last_id + 1 - n,
                    records,
                });
            }
        }
    }

    async fn ack(&self, through_seq: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        let through = {
            let mut g = sh.lock();
            let through = through_seq.min(g.last_seq);
            if through <= g.acked_seq {
                return Ok(());
            }
            g.acked_seq = through;
            if g.cursor < through {
                g.cursor = through;
                g.epoch += 1;
            }
            through
        };
        let sh2 = sh.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let w = lock(&sh2.writer);
            let n = w
                .execute("DELETE FROM messages WHERE id <= ?1", [through as i64])
                .map_err(|e| db_err("cannot delete acknowledged records", e))?
                as u64;
            let used = used_bytes(&w).ok();
            let mut g = sh2.lock();
            g.rows = g.rows.saturating_sub(n);
            g.acked += n;
            g.vacuum_pending = true;
            if let Some(u) = used {
                g.used_bytes = u;
            }
            Ok(())
        })
        .await
        .map_err(join_err)??;
        sh.space.notify_waiters();
        Ok(())
    }

    fn rewind(&self) {
        {
            let mut g = self.shared.lock();
            g.cursor = g.acked_seq;
            g.epoch += 1;
        }
        self.shared.data.notify_waiters();
    }

    fn stats(&self) -> StorageStats {
        let mut wal = self.shared.db_path.clone().into_os_string();
        wal.push("-wal");
        let bytes = [self.shared.db_path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let g = self.shared.lock();
        StorageStats {
            len: g.rows as usize,
            stored: g.stored,
            acked: g.acked,
            dropped: g.dropped,
            corrupt: g.corrupt,
            expired: g.expired,
            bytes,
        }
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let target = {
            let mut g = self.shared.lock();
            g.flush_requested = true;
            g.last_seq
        };
        self.shared.cv.notify_all();
        self.wait_durable(target).await
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        group_commit::wait_durable(
            &sh.durable,
            seq,
            &sh.state,
            &sh.cv,
            |g| &mut g.wanted,
            |g| g.closed,
        )
        .await
    }

    fn read_batch_size(&self) -> usize {
        self.shared.opts.max_read_records_count.max(1)
    }
}

#[cfg(test)]
mod tests;
