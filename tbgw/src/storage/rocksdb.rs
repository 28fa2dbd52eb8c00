//! RocksDB storage (`"type": "rocksdb"`, a tbgw extension), linked against the system
//! librocksdb (see docs/STORAGE.md).
//!
//! # Design
//!
//! * **Keys.** Column family `records`: key = big-endian `u64` sequence number (so keys sort in
//!   sequence order), value = stored-at time (`i64` ms, little endian), the record's byte
//!   offset in the stream of values written (`u64`, for the byte budget) and the [`codec`]
//!   encoding. Column family `meta`: key `acked` = the sequence number through which records
//!   are deleted (little-endian `u64`).
//! * **Acknowledgement.** `ack(seq)` writes one batch: `delete_range` over the acknowledged
//!   keys and the new `acked` checkpoint, atomically. Records are only ever deleted from the
//!   front (ack, `drop_oldest`, TTL sweep), so the live records are the contiguous range
//!   after `acked`, and a restart resumes right after it.
//! * **Reads.** The cursor is the last sequence number handed out; a read iterates from the
//!   key after it and moves the cursor only if no other read or rewind moved it meanwhile, so
//!   concurrent reads hand out no duplicates and a cancelled read moves nothing. RocksDB calls
//!   run in [`tokio::task::spawn_blocking`].
//! * **Durability.** Writes go through RocksDB's WAL. With `sync` every put fsyncs the WAL
//!   before it returns (survives a power cut; [`EventStorage::wait_durable`] is immediate).
//!   Without it (default) a put survives a crash of the process once it returns, and a
//!   maintenance thread fsyncs the WAL (`FlushWAL(sync)`) every `sync_interval`, and within
//!   5 ms while somebody waits in `wait_durable`, which waits for that.
//! * **Bounds.** `max_records` records and `max_bytes` bytes of values (exact: computed from
//!   the offsets); when full the [`FullPolicy`] applies.
//! * **TTL.** Records stored more than `ttl` ago are skipped when read and counted as expired;
//!   every `ttl_check_interval` the expired records at the front are deleted.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use tokio::sync::{watch, Notify};

use super::codec;
use super::group_commit;
use super::{
    sort_fetched, Batch, EventStorage, Fetched, FullPolicy, PutReport, StorageError, StorageStats,
};
use crate::model::{now_millis, DeviceData};

const CF_RECORDS: &str = "records";
const CF_META: &str = "meta";
const KEY_ACKED: &[u8] = b"acked";
/// Stored-at time and offset before the encoded record.
const HEADER: usize = 16;
/// Records per write batch.
const WRITE_CHUNK: usize = 1000;
/// Most records a TTL sweep deletes at once.
const SWEEP_LIMIT: usize = 100_000;

/// Settings of a [`RocksDbStorage`].
#[derive(Debug, Clone)]
pub struct RocksDbOptions {
    /// The database folder (`data_folder_path`).
    pub path: PathBuf,
    /// Records per read batch (`max_read_records_count`).
    pub read_batch: usize,
    /// Most records held (`max_records_count`), if any.
    pub max_records: Option<usize>,
    /// Most bytes of stored values (`max_size_mb`), if any.
    pub max_bytes: Option<u64>,
    /// What to do when full.
    pub policy: FullPolicy,
    /// Records older than this are skipped (not sent), counted as expired and deleted by the
    /// sweep (`messages_ttl_in_days`).
    pub ttl: Option<Duration>,
    /// Time between TTL sweeps.
    pub ttl_check_interval: Duration,
    /// Fsync the WAL on every put (survives a power cut when `put` returns; slow). Without it,
    /// puts survive a crash of the process and the WAL is fsynced every `sync_interval`.
    pub sync: bool,
    /// Group commit: fsync the WAL this long after the first unsynced put.
    pub sync_interval: Duration,
}

impl RocksDbOptions {
    /// Defaults for a database folder: no budget, `block`, no TTL, group commit every 100 ms.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RocksDbOptions {
            path: path.into(),
            read_batch: 1000,
            max_records: None,
            max_bytes: None,
            policy: FullPolicy::Block,
            ttl: None,
            ttl_check_interval: Duration::from_secs(3600),
            sync: false,
            sync_interval: Duration::from_millis(100),
        }
    }

    /// The options the `storage` section describes (`data_folder_path`,
    /// `max_read_records_count`, `max_size_mb`, `messages_ttl_in_days`, `full_policy`); a
    /// relative folder is taken relative to `config_dir`. `max_records_count` is left to the
    /// caller, because the section gives it a default meant for the memory storage.
    pub fn from_config(cfg: &crate::config::StorageConfig, config_dir: &Path) -> Self {
        let mut o = RocksDbOptions::new(crate::config::StorageConfig::folder(
            config_dir,
            cfg.data_folder_path.as_deref(),
        ));
        if let Some(n) = cfg.max_read_records_count {
            o.read_batch = n;
        }
        o.max_bytes = cfg.max_size_mb.map(|mb| mb.saturating_mul(1024 * 1024));
        o.policy = cfg.full_policy;
        o.ttl = cfg.ttl();
        o
    }
}

#[derive(Debug, Default)]
struct State {
    /// Last sequence number handed out by `read`.
    cursor: u64,
    /// Changes whenever the cursor moves, so a read that raced another one retries.
    epoch: u64,
    /// Highest sequence number acknowledged by the client (where `rewind` goes).
    acked_seq: u64,
    /// Records through this sequence number are deleted (the persisted checkpoint).
    front: u64,
    /// Next sequence number to write.
    next_seq: u64,
    /// Offset of the first live record and end offset of the last one.
    front_offset: u64,
    write_end: u64,
    /// Skipped (expired or corrupt) records up to here have been counted already.
    counted_through: u64,
    synced_seq: u64,
    unsynced_since: Option<Instant>,
    flush_requested: bool,
    /// The highest sequence number somebody waits to become durable; while it is above
    /// `synced_seq` the group commit does not wait for its interval.
    wanted: u64,
    compact_pending: bool,
    closed: bool,
    stored: u64,
    acked: u64,
    dropped: u64,
    corrupt: u64,
    expired: u64,
}

impl State {
    fn len(&self) -> u64 {
        (self.next_seq - 1).saturating_sub(self.front)
    }
    fn bytes(&self) -> u64 {
        self.write_end.saturating_sub(self.front_offset)
    }
}

struct Shared {
    opts: RocksDbOptions,
    /// `None` once closed, which releases RocksDB's lock on the folder.
    db: RwLock<Option<DB>>,
    /// Serialises writers (puts, acks, drops, sweeps).
    write_lock: Mutex<()>,
    state: Mutex<State>,
    cv: Condvar,
    durable: watch::Sender<u64>,
    data: Notify,
    space: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.opts.path)
            .finish_non_exhaustive()
    }
}

/// Durable RocksDB storage; `docs/STORAGE.md` describes its design and its configuration.
#[derive(Debug)]
pub struct RocksDbStorage {
    shared: Arc<Shared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn db_err(what: &str, e: rocksdb::Error) -> StorageError {
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

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> Option<u64> {
    let a: [u8; 8] = k.try_into().ok()?;
    Some(u64::from_be_bytes(a))
}

/// (stored-at ms, offset, encoded record) of a value.
fn parse_value(v: &[u8]) -> Option<(i64, u64, &[u8])> {
    if v.len() < HEADER {
        return None;
    }
    let ts = i64::from_le_bytes(v[..8].try_into().ok()?);
    let off = u64::from_le_bytes(v[8..16].try_into().ok()?);
    Some((ts, off, &v[HEADER..]))
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, StorageError> {
    db.cf_handle(name)
        .ok_or_else(|| StorageError::Database(format!("column family `{name}` is missing")))
}

impl RocksDbStorage {
    /// Opens (or creates) the database in `opts.path`, resuming after the last acknowledged
    /// record.
    pub fn open(opts: RocksDbOptions) -> Result<RocksDbStorage, StorageError> {
        let path = opts.path.clone();
        fs::create_dir_all(&path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create the storage folder {}: {e}", path.display()),
            )
        })?;
        let mut dbo = rocksdb::Options::default();
        dbo.create_if_missing(true);
        dbo.create_missing_column_families(true);
        dbo.set_keep_log_file_num(2);
        dbo.set_max_log_file_size(1024 * 1024);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_RECORDS, rocksdb::Options::default()),
            ColumnFamilyDescriptor::new(CF_META, rocksdb::Options::default()),
        ];
        let db = DB::open_cf_descriptors(&dbo, &path, cfs).map_err(|e| {
            db_err(
                &format!(
                    "cannot open the RocksDB storage in {} (is it writable and a RocksDB folder?)",
                    path.display()
                ),
                e,
            )
        })?;
        let recs = cf(&db, CF_RECORDS)?;
        let meta = cf(&db, CF_META)?;
        let front = match db
            .get_cf(meta, KEY_ACKED)
            .map_err(|e| db_err("cannot read the checkpoint", e))?
        {
            None => 0,
            Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
                Ok(a) => u64::from_le_bytes(a),
                Err(_) => {
                    tracing::warn!(path = %path.display(), "The RocksDB checkpoint is malformed; records are sent again from the oldest one.");
                    0
                }
            },
        };
        let first = first_live(&db, front)?;
        let last = match db.iterator_cf(recs, IteratorMode::End).next() {
            Some(Ok((k, v))) => seq_of(&k).map(|s| (s, v.len())),
            Some(Err(e)) => return Err(db_err("cannot read the last record", e)),
            None => None,
        };
        let next_seq = last.map_or(0, |(s, _)| s).max(front) + 1;
        let (front_offset, write_end) = match (first, last) {
            (Some(f), Some((s, len))) => {
                let last_off = db
                    .get_cf(recs, key(s))
                    .map_err(|e| db_err("cannot read the last record", e))?
                    .and_then(|v| parse_value(&v).map(|(_, o, _)| o))
                    .unwrap_or(f);
                (f, last_off + len as u64)
            }
            _ => (0, 0),
        };
        let state = State {
            cursor: front,
            acked_seq: front,
            front,
            next_seq,
            front_offset,
            write_end: write_end.max(front_offset),
            counted_through: front,
            synced_seq: next_seq - 1,
            ..State::default()
        };
        if state.len() > 0 {
            tracing::info!(path = %path.display(), records = state.len(), first = front + 1, "Resuming the RocksDB storage.");
        }
        let (durable, _) = watch::channel(next_seq - 1);
        let shared = Arc::new(Shared {
            opts,
            db: RwLock::new(Some(db)),
            write_lock: Mutex::new(()),
            state: Mutex::new(state),
            cv: Condvar::new(),
            durable,
            data: Notify::new(),
            space: Notify::new(),
        });
        let s2 = shared.clone();
        let worker = std::thread::Builder::new()
            .name("tbgw-rocksdb".into())
            .spawn(move || maintenance(&s2))
            .map_err(StorageError::Io)?;
        Ok(RocksDbStorage {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Stops the maintenance thread after a last WAL fsync and closes the database (releasing
    /// its folder). Called by `Drop` too; later calls return [`StorageError::Closed`].
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.cv.notify_all();
        let handle = lock(&self.worker).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        let _w = lock(&self.shared.write_lock);
        let db = self
            .shared
            .db
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(db);
        self.shared.data.notify_waiters();
        self.shared.space.notify_waiters();
        self.shared.durable.send_modify(|_| {});
    }
}

impl Drop for RocksDbStorage {
    fn drop(&mut self) {
        self.close();
    }
}

/// Offset of the first record after `front`, if any.
fn first_live(db: &DB, front: u64) -> Result<Option<u64>, StorageError> {
    let recs = cf(db, CF_RECORDS)?;
    let from = key(front + 1);
    match db
        .iterator_cf(recs, IteratorMode::From(&from, Direction::Forward))
        .next()
    {
        Some(Ok((_, v))) => Ok(parse_value(&v).map(|(_, o, _)| o)),
        Some(Err(e)) => Err(db_err("cannot read the first record", e)),
        None => Ok(None),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn with_db<T>(
        &self,
        f: impl FnOnce(&DB) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let g = self.db.read().unwrap_or_else(|e| e.into_inner());
        match g.as_ref() {
            Some(db) => f(db),
            None => Err(StorageError::Closed),
        }
    }

    fn write(&self, db: &DB, batch: WriteBatch, sync: bool) -> Result<(), StorageError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        db.write_opt(batch, &wo)
            .map_err(|e| db_err("cannot write to the RocksDB storage", e))
    }

    /// Deletes records through `through` (all > front) and moves the checkpoint; returns the
    /// number deleted. Caller holds `write_lock`.
    fn delete_front(&self, db: &DB, through: u64) -> Result<u64, StorageError> {
        let (front, end) = {
            let g = self.lock();
            (g.front, g.write_end)
        };
        if through <= front {
            return Ok(0);
        }
        let mut b = WriteBatch::default();
        b.delete_range_cf(cf(db, CF_RECORDS)?, key(front + 1), key(through + 1));
        b.put_cf(cf(db, CF_META)?, KEY_ACKED, through.to_le_bytes());
        self.write(db, b, false)?;
        let off = first_live(db, through)?.unwrap_or(end);
        let mut g = self.lock();
        g.front = through;
        g.front_offset = off.min(g.write_end);
        g.compact_pending = true;
        if g.cursor < through {
            g.cursor = through;
            g.epoch += 1;
        }
        Ok(through - front)
    }

    /// Writes what fits of `pending`, applying the full policy; true when `block` must wait.
    fn put_some(
        &self,
        pending: &mut VecDeque<Vec<u8>>,
        now: i64,
        report: &mut PutReport,
    ) -> Result<bool, StorageError> {
        let _w = lock(&self.write_lock);
        self.with_db(|db| {
            let rec_budget = self.opts.max_records.map_or(u64::MAX, |n| n.max(1) as u64);
            let byte_budget = self.opts.max_bytes.unwrap_or(u64::MAX);
            while !pending.is_empty() {
                let (len, bytes, next_seq, mut off) = {
                    let g = self.lock();
                    if g.closed {
                        return Err(StorageError::Closed);
                    }
                    (g.len(), g.bytes(), g.next_seq, g.write_end)
                };
                let mut n = 0usize;
                let mut extra = 0u64;
                for b in pending.iter().take(WRITE_CHUNK) {
                    let cost = (b.len() + HEADER) as u64;
                    if len + n as u64 >= rec_budget || bytes + extra + cost > byte_budget {
                        break;
                    }
                    n += 1;
                    extra += cost;
                }
                if n > 0 {
                    let recs = cf(db, CF_RECORDS)?;
                    let mut batch = WriteBatch::default();
                    let mut value = Vec::with_capacity(256);
                    for (i, b) in pending.iter().take(n).enumerate() {
                        value.clear();
                        value.extend_from_slice(&now.to_le_bytes());
                        value.extend_from_slice(&off.to_le_bytes());
                        value.extend_from_slice(b);
                        off += value.len() as u64;
                        batch.put_cf(recs, key(next_seq + i as u64), &value);
                    }
                    self.write(db, batch, self.opts.sync)?;
                    pending.drain(..n);
                    let last = next_seq + n as u64 - 1;
                    {
                        let mut g = self.lock();
                        g.next_seq = last + 1;
                        g.write_end = off;
                        g.stored += n as u64;
                        if !self.opts.sync {
                            g.unsynced_since.get_or_insert_with(Instant::now);
                        }
                    }
                    if self.opts.sync {
                        self.durable.send_replace(last);
                    } else {
                        self.cv.notify_one();
                    }
                    report.stored += n;
                    report.last_seq = last;
                    self.data.notify_waiters();
                    continue;
                }
                match self.opts.policy {
                    FullPolicy::Block => return Ok(true),
                    FullPolicy::DropNewest => {
                        let k = pending.len();
                        pending.clear();
                        self.lock().dropped += k as u64;
                        report.dropped += k;
                        tracing::warn!(
                            records = k,
                            "The RocksDB storage is full; dropped the newest records."
                        );
                    }
                    FullPolicy::DropOldest => {
                        let next_cost = pending.front().map_or(0, |b| (b.len() + HEADER) as u64);
                        let mut k = 1u64;
                        if len + 1 > rec_budget {
                            k = k.max(len + 1 - rec_budget);
                        }
                        if bytes + next_cost > byte_budget && len > 0 {
                            let per = (bytes / len).max(1);
                            k = k.max((bytes + next_cost - byte_budget).div_ceil(per));
                        }
                        let front = self.lock().front;
                        let gone = self.delete_front(db, (front + k.min(len)).min(next_seq - 1))?;
                        let mut g = self.lock();
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
        })
    }

    fn fetch(
        &self,
        cursor: u64,
        max: usize,
        cutoff: Option<i64>,
    ) -> Result<Vec<(u64, Fetched)>, StorageError> {
        self.with_db(|db| {
            let recs = cf(db, CF_RECORDS)?;
            let from = key(cursor + 1);
            let mut out = Vec::new();
            for kv in db.iterator_cf(recs, IteratorMode::From(&from, Direction::Forward)) {
                let (k, v) = kv.map_err(|e| db_err("cannot read records", e))?;
                let Some(seq) = seq_of(&k) else { continue };
                let item = match parse_value(&v) {
                    None => Fetched::Corrupt,
                    Some((ts, _, _)) if cutoff.is_some_and(|c| ts < c) => Fetched::Expired,
                    Some((_, _, body)) => {
                        codec::decode(body).map_or(Fetched::Corrupt, Fetched::Record)
                    }
                };
                out.push((seq, item));
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn ttl_cutoff(&self) -> Option<i64> {
        self.opts
            .ttl
            .map(|t| now_millis().saturating_sub(t.as_millis().min(i64::MAX as u128) as i64))
    }

    /// Deletes the expired records at the front; returns how many.
    fn sweep(&self) -> Result<u64, StorageError> {
        let Some(cut) = self.ttl_cutoff() else {
            return Ok(0);
        };
        let _w = lock(&self.write_lock);
        let (n, fresh) = self.with_db(|db| {
            let (front, counted) = {
                let g = self.lock();
                (g.front, g.counted_through)
            };
            let recs = cf(db, CF_RECORDS)?;
            let from = key(front + 1);
            let mut through = front;
            let mut fresh = 0u64;
            for kv in db
                .iterator_cf(recs, IteratorMode::From(&from, Direction::Forward))
                .take(SWEEP_LIMIT)
            {
                let (k, v) = kv.map_err(|e| db_err("cannot read records", e))?;
                let (Some(seq), Some((ts, _, _))) = (seq_of(&k), parse_value(&v)) else {
                    break;
                };
                if ts >= cut {
                    break;
                }
                through = seq;
                fresh += u64::from(seq > counted);
            }
            Ok((self.delete_front(db, through)?, fresh))
        })?;
        if n > 0 {
            self.lock().expired += fresh;
            tracing::info!(
                records = n,
                "Deleted expired records from the RocksDB storage."
            );
            self.space.notify_waiters();
        }
        Ok(n)
    }

    fn compact(&self) -> Result<(), StorageError> {
        self.with_db(|db| {
            let front = self.lock().front;
            db.compact_range_cf(
                cf(db, CF_RECORDS)?,
                None::<&[u8]>,
                Some(&key(front + 1)[..]),
            );
            Ok(())
        })
    }
}

/// The maintenance thread: group commit (WAL fsync), TTL sweep and compaction of the deleted
/// range.
fn maintenance(sh: &Shared) {
    let interval = sh.opts.sync_interval;
    let ttl_every = sh.opts.ttl_check_interval.max(Duration::from_millis(1));
    let has_ttl = sh.opts.ttl.is_some();
    let mut next_sweep = Instant::now();
    let mut next_compact = Instant::now() + Duration::from_secs(60);
    let mut last_sync = Instant::now();
    let mut g = sh.lock();
    loop {
        let now = Instant::now();
        let unsynced = !sh.opts.sync && g.next_seq - 1 > g.synced_seq;
        let sync_at = group_commit::sync_due(
            g.unsynced_since,
            interval,
            g.wanted > g.synced_seq,
            last_sync,
        );
        if unsynced && (g.flush_requested || g.closed || sync_at.is_none_or(|t| now >= t)) {
            let target = g.next_seq - 1;
            g.flush_requested = false;
            g.unsynced_since = None;
            drop(g);
            last_sync = Instant::now();
            let result = sh.with_db(|db| {
                db.flush_wal(true)
                    .map_err(|e| db_err("cannot fsync the WAL", e))
            });
            g = sh.lock();
            match result {
                Ok(()) => {
                    g.synced_seq = g.synced_seq.max(target);
                    sh.durable.send_replace(g.synced_seq);
                }
                Err(e) => {
                    tracing::error!(error = %e, "Fsync of the RocksDB WAL failed; records are not durable until it succeeds.");
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
                tracing::warn!(error = %e, "The RocksDB TTL sweep failed.");
            }
            next_sweep = Instant::now() + ttl_every;
            g = sh.lock();
            continue;
        }
        if g.compact_pending && now >= next_compact {
            g.compact_pending = false;
            drop(g);
            if let Err(e) = sh.compact() {
                tracing::warn!(error = %e, "Compacting the delivered RocksDB records failed.");
            }
            next_compact = Instant::now() + Duration::from_secs(60);
            g = sh.lock();
            continue;
        }
        let mut wake = now + Duration::from_secs(3600);
        if has_ttl {
            wake = wake.min(next_sweep);
        }
        if g.compact_pending {
            wake = wake.min(next_compact);
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
impl EventStorage for RocksDbStorage {
    async fn put(&self, records: Vec<DeviceData>) -> Result<PutReport, StorageError> {
        let now = now_millis();
        let mut report = PutReport::default();
        if records.is_empty() {
            return Ok(report);
        }
        let mut pending: VecDeque<Vec<u8>> = tokio::task::spawn_blocking(move || {
            records
                .iter()
                .map(|r| {
                    let mut b = Vec::with_capacity(128);
                    codec::encode(r, &mut b);
                    b
                })
                .collect()
        })
        .await
        .map_err(join_err)?;
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let sh = self.shared.clone();
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
                (g.cursor, g.epoch, g.next_seq - 1)
            };
            if cursor >= last_seq {
                notified.await;
                continue;
            }
            let cutoff = sh.ttl_cutoff();
            let sh2 = sh.clone();
            let items = tokio::task::spawn_blocking(move || sh2.fetch(cursor, max, cutoff))
                .await
                .map_err(join_err)??;
            // From here on nothing awaits: the cursor moves only if this read returns.
            let mut g = sh.lock();
            if g.epoch != epoch {
                continue;
            }
            g.epoch += 1;
            let Some(&(last, _)) = items.last() else {
                g.cursor = g.cursor.max(last_seq);
                continue;
            };
            let (records, expired, corrupt) = sort_fetched(items, g.counted_through);
            g.counted_through = g.counted_through.max(last);
            g.cursor = last;
            g.corrupt += corrupt;
            g.expired += expired;
            drop(g);
            if corrupt > 0 {
                tracing::warn!(
                    records = corrupt,
                    "Skipped corrupt records in the RocksDB storage."
                );
            }
            if !records.is_empty() {
                // The batch ends at the last record it consumed (skipped ones included).
                let n = records.len() as u64;
                return Ok(Batch {
                    first_seq: last + 1 - n,
                    records,
                });
            }
        }
    }

    async fn ack(&self, through_seq: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        let through = {
            let mut g = sh.lock();
            let through = through_seq.min(g.next_seq - 1);
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
        tokio::task::spawn_blocking(move || {
            let _w = lock(&sh2.write_lock);
            let n = sh2.with_db(|db| sh2.delete_front(db, through))?;
            sh2.lock().acked += n;
            Ok::<_, StorageError>(())
        })
        .await
        .map_err(join_err)??;
        sh.space.notify_waiters();
        Ok(())
    }

    fn rewind(&self) {
        {
            let mut g = self.shared.lock();
            g.cursor = g.acked_seq.max(g.front);
            g.epoch += 1;
        }
        self.shared.data.notify_waiters();
    }

    fn stats(&self) -> StorageStats {
        let g = self.shared.lock();
        StorageStats {
            len: g.len() as usize,
            stored: g.stored,
            acked: g.acked,
            dropped: g.dropped,
            corrupt: g.corrupt,
            expired: g.expired,
            bytes: g.bytes(),
        }
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let target = {
            let mut g = self.shared.lock();
            g.flush_requested = true;
            g.next_seq - 1
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
        self.shared.opts.read_batch.max(1)
    }
}

#[cfg(test)]
mod tests;
