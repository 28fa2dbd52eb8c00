//! Event storage: the buffer between conversion and publishing.
//!
//! The contract is read-then-ack, as in upstream's `get_event_pack` /
//! `event_pack_processing_done` and Vector's disk buffer:
//!
//! * [`EventStorage::put`] appends records; what happens when the storage is full is the
//!   configured [`FullPolicy`]. It returns once the records are written (they survive a crash
//!   of the process); [`EventStorage::wait_durable`] waits until they also survive a power cut
//!   (the group commit covering them has been fsynced). The gateway acknowledges a record to
//!   its source only after both.
//! * [`EventStorage::read`] hands out the next records after the read cursor and advances the
//!   cursor; several reads may be outstanding (the ThingsBoard client pipelines them).
//! * [`EventStorage::ack`] confirms every record up to a sequence number: only then may the
//!   storage forget them. Nothing is deleted before the ack.
//! * [`EventStorage::rewind`] moves the read cursor back to the oldest unacknowledged record,
//!   which is what the client does after a lost connection, so everything not confirmed by
//!   ThingsBoard is sent again (at-least-once; duplicates possible, loss not).

pub(crate) mod codec;
mod file;
mod group_commit;
mod memory;
#[cfg(feature = "rocksdb")]
mod rocksdb;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use file::{dump as dump_file_storage, FileStorage, FileStorageOptions};
pub use memory::MemoryStorage;
#[cfg(feature = "rocksdb")]
pub use rocksdb::{RocksDbOptions, RocksDbStorage};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStorage, SqliteSynchronous};

use crate::model::DeviceData;

/// A stored record. Shared, so reading it again after a rewind costs no copy.
pub type Record = Arc<DeviceData>;

pub use crate::config::FullPolicy;

/// A batch handed out by [`EventStorage::read`].
///
/// Acknowledge it with [`Batch::last_seq`]. Durable storages may skip records inside a batch
/// (corrupt, expired); their `first_seq` is then `last_seq + 1 - records.len()`, so that
/// `last_seq()` is exact, and sequence numbers inside are not meant to be derived from it.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Sequence number of the first record (see above when records were skipped).
    pub first_seq: u64,
    /// The records, in order.
    pub records: Vec<Record>,
}

impl Batch {
    /// Sequence number of the last record (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + self.records.len() as u64).saturating_sub(1)
    }
}

/// What a `put` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PutReport {
    /// Records stored.
    pub stored: usize,
    /// Sequence number of the last record stored (0 when none was).
    pub last_seq: u64,
    /// Records dropped because the storage was full (new ones under `DropNewest`, old ones
    /// under `DropOldest`).
    pub dropped: usize,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The storage was closed.
    #[error("storage is closed")]
    Closed,
    /// An I/O error.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A database error.
    #[error("storage database error: {0}")]
    Database(String),
}

/// Counters and levels of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageStats {
    /// Records currently held (acknowledged ones excluded).
    pub len: usize,
    /// Records stored since start.
    pub stored: u64,
    /// Records acknowledged since start.
    pub acked: u64,
    /// Records dropped by the full policy since start.
    pub dropped: u64,
    /// Records skipped because they were corrupt (torn writes, flipped bits, missing files).
    pub corrupt: u64,
    /// Records skipped because they were older than the configured TTL.
    pub expired: u64,
    /// Bytes the storage occupies (0 for memory storage).
    pub bytes: u64,
}

/// A buffer between conversion and publishing. See the [module docs](self).
#[async_trait]
pub trait EventStorage: Send + Sync + 'static {
    /// Appends records, applying the full policy.
    async fn put(&self, records: Vec<DeviceData>) -> Result<PutReport, StorageError>;

    /// Returns up to `max` records after the read cursor and advances it. Waits until at least
    /// one record is available. Cancel-safe: dropping the future reads nothing.
    async fn read(&self, max: usize) -> Result<Batch, StorageError>;

    /// Acknowledges every record with a sequence number up to and including `through_seq`.
    async fn ack(&self, through_seq: u64) -> Result<(), StorageError>;

    /// Moves the read cursor back to the oldest unacknowledged record.
    fn rewind(&self);

    /// Counters and levels.
    fn stats(&self) -> StorageStats;

    /// Makes everything stored so far durable (no-op for memory storage).
    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Waits until every record up to `seq` is durable (fsynced by the group commit).
    /// Memory storage has nothing to wait for.
    async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        let _ = seq;
        Ok(())
    }

    /// The read batch size the configuration asked for.
    fn read_batch_size(&self) -> usize;
}

/// One stored record as a database backend read it.
#[cfg(any(feature = "sqlite", feature = "rocksdb"))]
pub(crate) enum Fetched {
    /// A decoded record.
    Record(DeviceData),
    /// Older than the TTL: skipped.
    Expired,
    /// Does not decode: skipped.
    Corrupt,
}

/// Splits a fetched page into the records to hand out and the numbers of expired and corrupt
/// ones skipped. A skipped row at or below `counted_through` was counted by an earlier read
/// (before a rewind) and is not counted again.
#[cfg(any(feature = "sqlite", feature = "rocksdb"))]
pub(crate) fn sort_fetched(
    rows: Vec<(u64, Fetched)>,
    counted_through: u64,
) -> (Vec<Record>, u64, u64) {
    let (mut corrupt, mut expired) = (0u64, 0u64);
    let mut records = Vec::with_capacity(rows.len());
    for (seq, row) in rows {
        let fresh = u64::from(seq > counted_through);
        match row {
            Fetched::Record(d) => records.push(Arc::new(d)),
            Fetched::Expired => expired += fresh,
            Fetched::Corrupt => corrupt += fresh,
        }
    }
    (records, expired, corrupt)
}

/// Opens the storage the `storage` section describes; relative folders are taken relative to
/// `config_dir`. Durable storages recover what is on disk.
pub fn from_config(
    cfg: &crate::config::StorageConfig,
    config_dir: &std::path::Path,
) -> Result<Arc<dyn EventStorage>, StorageError> {
    use crate::config::StorageConfig;
    match cfg.kind.as_str() {
        "file" => {
            let mut o = FileStorageOptions::new(StorageConfig::folder(
                config_dir,
                cfg.data_folder_path.as_deref(),
            ));
            if let Some(n) = cfg.max_records_per_file {
                o.max_records_per_file = n;
            }
            if let Some(n) = cfg.max_file_count {
                o.max_file_count = n;
            }
            if let Some(n) = cfg.max_read_records_count {
                o.read_batch = n;
            }
            if let Some(n) = cfg.max_records_between_fsync {
                o.fsync_records = n;
            }
            if let Some(ms) = cfg.fsync_interval_ms {
                o.fsync_interval = std::time::Duration::from_millis(ms.max(1));
            }
            o.max_bytes = cfg.max_size_mb.map(|mb| mb * 1024 * 1024);
            o.policy = cfg.full_policy;
            o.ttl = cfg.ttl();
            Ok(Arc::new(FileStorage::open(o)?))
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(SqliteStorage::open(SqliteOptions::from_config(
            cfg, config_dir,
        ))?)),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Ok(Arc::new(RocksDbStorage::open(
            RocksDbOptions::from_config(cfg, config_dir),
        )?)),
        _ => Ok(Arc::new(MemoryStorage::new(
            cfg.max_records_count,
            cfg.read_records_count,
            cfg.full_policy,
        ))),
    }
}

/// Records shared by the storage backends' unit tests: `rec(n)` carries `n`, `n_of` reads it.
#[cfg(test)]
pub(crate) mod test_records {
    use crate::model::{DeviceData, Value};

    /// A record for one of three devices carrying the number `n`.
    pub(crate) fn rec(n: i64) -> DeviceData {
        let mut d = DeviceData::new(format!("dev-{}", n % 3), "t");
        d.push_telemetry(1_700_000_000_000 + n, "n", Value::Int(n));
        d
    }

    /// The number a [`rec`] carries.
    pub(crate) fn n_of(d: &DeviceData) -> i64 {
        match d.telemetry[0].values[0].1 {
            Value::Int(n) => n,
            _ => panic!("not a test record"),
        }
    }

    /// For a storage whose group-commit interval is an hour: a waiter still gets its fsync
    /// (`wait_durable` returns), and a record nobody waits for stays unsynced until `flush`.
    /// `durable()` reads the storage's highest durable sequence number.
    pub(crate) async fn check_a_waiter_gets_its_fsync(
        s: &dyn super::EventStorage,
        durable: impl Fn() -> u64,
    ) {
        use std::time::Duration;
        let r = s.put((0..3).map(rec).collect()).await.expect("put");
        tokio::time::timeout(Duration::from_secs(30), s.wait_durable(r.last_seq))
            .await
            .expect("the fsync came for the waiter")
            .expect("durable");
        let r2 = s.put(vec![rec(3)]).await.expect("put");
        assert!(durable() < r2.last_seq, "no fsync without a waiter");
        s.flush().await.expect("flush");
        assert!(durable() >= r2.last_seq);
    }
}
