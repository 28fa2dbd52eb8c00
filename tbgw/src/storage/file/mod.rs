//! Durable file storage (`"type": "file"`): append-only segment files with a length and a
//! checksum per record, group commit, rotation, and deletion of a segment only once every
//! record in it is acknowledged.
//!
//! # Design
//!
//! * **Segments.** Records go to the *active* segment `seg-<first seq>.log` in the data folder,
//!   framed as described in [`segment`]. After `max_records_per_file` records the segment is
//!   fsynced and a new one begins. Older segments are only read, and deleted as a whole once
//!   ThingsBoard has confirmed their last record.
//! * **Write, then durable.** `put` writes the framed records with one `write` call, so once it
//!   returns they survive a crash of the process (kill -9). A group-commit thread fsyncs the
//!   active segment every `fsync_interval` or every `fsync_records` records, whichever comes
//!   first, and within 5 ms while somebody waits in [`EventStorage::wait_durable`] (records
//!   written meanwhile join that fsync, so batches grow with the load). The gateway acknowledges
//!   a record to its source only once it is durable, so acknowledged records also survive a
//!   power cut, and a source with a small in-flight window (mosquitto allows 20 by default) is
//!   bound by the fsync latency rather than by the interval.
//! * **Read position and acknowledgement.** Reads advance a cursor `(segment, offset)`. Each
//!   read batch remembers where it ended; acknowledging a batch moves the *ack position* there
//!   and rewinding moves the read cursor back to it. The acknowledged sequence number is kept in
//!   a small `checkpoint` file (written atomically; a stale or corrupt checkpoint only means
//!   records are sent again, never lost).
//! * **Recovery.** Opening scans every segment: a torn tail of the last segment is truncated,
//!   corrupt records anywhere are skipped (the scanner resynchronises on the next valid record)
//!   and counted, a missing segment is a gap counted as corrupt. Nothing in a recovered storage
//!   panics on bad bytes.
//! * **Bounds.** At most `max_file_count` × `max_records_per_file` unacknowledged records and,
//!   optionally, `max_bytes`; when full the [`FullPolicy`] applies: `block` waits for
//!   acknowledgements, `drop_newest` rejects the new records, `drop_oldest` deletes the oldest
//!   segment. Memory use does not grow with the backlog: records are read from the files.
//! * **TTL.** Records older than the TTL are skipped when read and counted as expired.

pub(crate) mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::codec;
use super::group_commit;
use super::{Batch, EventStorage, FullPolicy, PutReport, Record, StorageError, StorageStats};
use crate::model::{now_millis, DeviceData};
use segment::{Scanner, Step};

const CHECKPOINT: &str = "checkpoint";
/// Least time between two checkpoint writes.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Settings of a [`FileStorage`].
#[derive(Debug, Clone)]
pub struct FileStorageOptions {
    /// The data folder.
    pub dir: PathBuf,
    /// Records per segment file before rotation (`max_records_per_file`).
    pub max_records_per_file: usize,
    /// Most segment files (`max_file_count`); with the above, the record budget.
    pub max_file_count: usize,
    /// Byte budget of all segments, if any.
    pub max_bytes: Option<u64>,
    /// Records per read batch (`max_read_records_count`).
    pub read_batch: usize,
    /// Group commit: fsync at least this often while there is unsynced data.
    pub fsync_interval: Duration,
    /// Group commit: fsync after this many unsynced records (`max_records_between_fsync`).
    pub fsync_records: usize,
    /// What to do when full.
    pub policy: FullPolicy,
    /// Records older than this are skipped (not sent) and counted as expired.
    pub ttl: Option<Duration>,
}

impl FileStorageOptions {
    /// Defaults for a data folder.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileStorageOptions {
            dir: dir.into(),
            max_records_per_file: 10_000,
            max_file_count: 100,
            max_bytes: None,
            read_batch: 1000,
            fsync_interval: Duration::from_millis(100),
            fsync_records: 10_000,
            policy: FullPolicy::Block,
            ttl: None,
        }
    }
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid data.
    len: u64,
    /// Records in the segment (valid ones).
    records: usize,
    /// Sequence number of the last record, 0 when empty.
    last_seq: u64,
}

/// A position: a byte offset in the segment that starts at `seg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    seg: u64,
    offset: u64,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Segment>,
    next_seq: u64,
    acked_seq: u64,
    read: Pos,
    ack_pos: Pos,
    /// Read batches not yet acknowledged: (last seq, position after it).
    outstanding: VecDeque<(u64, Pos)>,
    /// Records written but not yet fsynced, and since when.
    unsynced: usize,
    unsynced_since: Option<Instant>,
    /// The highest sequence number somebody waits to become durable
    /// ([`EventStorage::wait_durable`]); while it is above the durable one the group commit
    /// does not wait for its interval.
    wanted: u64,
    written_seq: u64,
    closed: bool,
    sync_error: Option<String>,
    stored: u64,
    acked: u64,
    dropped: u64,
    corrupt: u64,
    expired: u64,
    checkpoint_failed: bool,
    /// When the checkpoint was last written, and whether it is behind `acked_seq`.
    checkpoint_at: Instant,
    checkpoint_dirty: bool,
}

#[derive(Debug)]
struct Shared {
    opts: FileStorageOptions,
    state: Mutex<State>,
    /// Wakes the group-commit thread.
    sync_cv: Condvar,
    /// Highest durable sequence number.
    durable: watch::Sender<u64>,
    data: Notify,
    space: Notify,
}

/// Durable file storage; `docs/STORAGE.md` describes its design and its configuration.
#[derive(Debug)]
pub struct FileStorage {
    shared: Arc<Shared>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Out of space or over a quota: the full policy applies rather than an error.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122) | Some(27))
        || e.kind() == std::io::ErrorKind::StorageFull
}

fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("seg-{first_seq:020}.log"))
}

fn io_err(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only changed in short sections that do not panic on input; a poisoned
        // lock means a bug elsewhere, and carrying on is better than losing the buffer.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FileStorage {
    /// Opens (or creates) the storage in `opts.dir`, recovering what is there.
    pub fn open(opts: FileStorageOptions) -> Result<FileStorage, StorageError> {
        fs::create_dir_all(&opts.dir).map_err(|e| io_err(&opts.dir, e))?;
        let acked_seq = read_checkpoint(&opts.dir);
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&opts.dir)
            .map_err(|e| io_err(&opts.dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()?;
                Some((n, e.path()))
            })
            .collect();
        names.sort();

        let mut segments = VecDeque::new();
        let mut corrupt = 0u64;
        let mut expected_next: Option<u64> = None;
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            let len = file.metadata().map_err(|e| io_err(&path, e))?.len();
            let (records, last_seq, valid_end, bad, first_found) = scan(&file, len)?;
            corrupt += bad;
            if i + 1 == count && valid_end < len {
                // A torn tail: cut it off so new records follow the last valid one.
                file.set_len(valid_end).map_err(|e| io_err(&path, e))?;
            }
            // Records missing between segments (a deleted or lost file) count as corrupt.
            if let (Some(exp), Some(first)) = (expected_next, first_found) {
                if first > exp && exp > acked_seq {
                    corrupt += first - exp.max(acked_seq + 1);
                }
            }
            if last_seq > 0 {
                expected_next = Some(last_seq + 1);
            }
            let len = if i + 1 == count { valid_end } else { len };
            if last_seq != 0 && last_seq <= acked_seq {
                let _ = fs::remove_file(&path);
                continue;
            }
            if records == 0 && i + 1 != count {
                let _ = fs::remove_file(&path);
                continue;
            }
            segments.push_back(Segment {
                first_seq,
                path,
                file: Arc::new(file),
                len,
                records,
                last_seq,
            });
        }
        let max_seen = segments.iter().map(|s| s.last_seq).max().unwrap_or(0);
        let next_seq = max_seen.max(acked_seq) + 1;
        if segments.is_empty()
            || segments
                .back()
                .is_some_and(|s| s.records >= opts.max_records_per_file)
        {
            let path = seg_path(&opts.dir, next_seq);
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            segments.push_back(Segment {
                first_seq: next_seq,
                path,
                file: Arc::new(file),
                len: 0,
                records: 0,
                last_seq: 0,
            });
        }
        // The ack position: the first record after the acknowledged one.
        let ack_pos = first_unacked(&segments, acked_seq)?;
        let state = State {
            segments,
            next_seq,
            acked_seq,
            read: ack_pos,
            ack_pos,
            outstanding: VecDeque::new(),
            unsynced: 0,
            unsynced_since: None,
            wanted: 0,
            written_seq: next_seq - 1,
            closed: false,
            sync_error: None,
            stored: 0,
            acked: 0,
            dropped: 0,
            corrupt,
            expired: 0,
            checkpoint_failed: false,
            checkpoint_at: Instant::now(),
            checkpoint_dirty: false,
        };
        if corrupt > 0 {
            tracing::warn!(dir = %opts.dir.display(), records = corrupt, "Skipped corrupt or missing records while opening the file storage.");
        }
        let (durable, _) = watch::channel(next_seq - 1);
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(state),
            sync_cv: Condvar::new(),
            durable,
            data: Notify::new(),
            space: Notify::new(),
        });
        let s2 = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("tbgw-fsync".into())
            .spawn(move || sync_thread(s2))
            .map_err(StorageError::Io)?;
        Ok(FileStorage {
            shared,
            syncer: Mutex::new(Some(syncer)),
        })
    }

    /// The storage's folder.
    pub fn dir(&self) -> &Path {
        &self.shared.opts.dir
    }

    /// Stops the group-commit thread after a last fsync. Called by `Drop` too.
    pub fn close(&self) {
        {
            let mut g = self.shared.lock();
            g.closed = true;
            if g.checkpoint_dirty {
                self.shared.write_checkpoint_now(&mut g);
            }
        }
        self.shared.sync_cv.notify_all();
        // Wake readers and blocked writers: they return `Closed`.
        self.shared.data.notify_waiters();
        self.shared.space.notify_waiters();
        let handle = self.syncer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        self.close();
    }
}

/// Scans a segment: (valid records, last seq, end of the last valid record, corrupt stretches,
/// first seq found).
fn scan(file: &File, len: u64) -> Result<(usize, u64, u64, u64, Option<u64>), StorageError> {
    let mut sc = Scanner::new(file, len);
    let (mut off, mut records, mut last, mut end, mut bad, mut first) =
        (0u64, 0usize, 0u64, 0u64, 0u64, None);
    loop {
        match sc.step(off)? {
            Step::Record(r) => {
                records += 1;
                last = r.seq;
                first.get_or_insert(r.seq);
                end = r.end;
                off = r.end;
            }
            Step::Corrupt { resume } => {
                bad += 1;
                off = resume;
            }
            Step::End => break,
        }
    }
    Ok((records, last, end, bad, first))
}

fn first_unacked(segments: &VecDeque<Segment>, acked: u64) -> Result<Pos, StorageError> {
    for s in segments {
        if s.last_seq != 0 && s.last_seq <= acked {
            continue;
        }
        let mut sc = Scanner::new(&s.file, s.len);
        let mut off = 0;
        loop {
            match sc.step(off)? {
                Step::Record(r) if r.seq > acked => {
                    return Ok(Pos {
                        seg: s.first_seq,
                        offset: r.offset,
                    })
                }
                Step::Record(r) => off = r.end,
                Step::Corrupt { resume } => off = resume,
                Step::End => break,
            }
        }
        return Ok(Pos {
            seg: s.first_seq,
            offset: s.len,
        });
    }
    let last = segments
        .back()
        .map(|s| (s.first_seq, s.len))
        .unwrap_or((1, 0));
    Ok(Pos {
        seg: last.0,
        offset: last.1,
    })
}

fn read_checkpoint(dir: &Path) -> u64 {
    let Ok(b) = fs::read(dir.join(CHECKPOINT)) else {
        return 0;
    };
    if b.len() != 12 {
        tracing::warn!(dir = %dir.display(), "The storage checkpoint is malformed; records since the start of the oldest segment are sent again.");
        return 0;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[..8]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[8..]);
    if crc32fast::hash(&seq) != u32::from_le_bytes(crc) {
        tracing::warn!(dir = %dir.display(), "The storage checkpoint is corrupt; records since the start of the oldest segment are sent again.");
        return 0;
    }
    u64::from_le_bytes(seq)
}

fn write_checkpoint(dir: &Path, seq: u64) -> std::io::Result<()> {
    let mut b = seq.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let tmp = dir.join("checkpoint.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
    }
    fs::rename(tmp, dir.join(CHECKPOINT))
}

/// The group-commit thread: fsyncs the active segment when enough records or time piled up.
fn sync_thread(shared: Arc<Shared>) {
    let opts = &shared.opts;
    let mut last_sync = Instant::now();
    let mut g = shared.lock();
    loop {
        if g.unsynced == 0 {
            if g.closed {
                return;
            }
            g = shared.sync_cv.wait(g).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        let waited_for = g.wanted > *shared.durable.borrow();
        let due =
            group_commit::sync_due(g.unsynced_since, opts.fsync_interval, waited_for, last_sync)
                .unwrap_or_else(Instant::now);
        let now = Instant::now();
        if g.unsynced < opts.fsync_records && now < due && !g.closed {
            g = shared
                .sync_cv
                .wait_timeout(g, due - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            continue;
        }
        let target = g.written_seq;
        let file = g.segments.back().map(|s| s.file.clone());
        g.unsynced = 0;
        g.unsynced_since = None;
        drop(g);
        last_sync = Instant::now();
        let result = match &file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        };
        g = shared.lock();
        match result {
            Ok(()) => {
                g.sync_error = None;
                shared.durable.send_replace(target);
            }
            Err(e) => {
                tracing::error!(error = %e, "fsync of the file storage failed; records are not acknowledged until it succeeds.");
                g.sync_error = Some(e.to_string());
                g.unsynced = g.unsynced.max(1);
                g.unsynced_since = Some(Instant::now());
                drop(g);
                std::thread::sleep(Duration::from_millis(500));
                g = shared.lock();
            }
        }
    }
}

impl Shared {
    fn write_checkpoint_now(&self, g: &mut State) {
        match write_checkpoint(&self.opts.dir, g.acked_seq) {
            Ok(()) => {
                g.checkpoint_failed = false;
                g.checkpoint_dirty = false;
            }
            Err(e) => {
                if !g.checkpoint_failed {
                    tracing::warn!(error = %e, "Cannot write the storage checkpoint; delivered records may be sent again after a restart.");
                }
                g.checkpoint_failed = true;
            }
        }
        g.checkpoint_at = Instant::now();
    }

    fn unacked(&self, g: &State) -> u64 {
        g.next_seq - 1 - g.acked_seq
    }

    fn bytes(g: &State) -> u64 {
        g.segments.iter().map(|s| s.len).sum()
    }

    /// Deletes the oldest segment to make room (`drop_oldest`); returns the records dropped.
    fn drop_oldest_segment(&self, g: &mut State) -> std::io::Result<u64> {
        if g.segments.len() == 1 {
            self.rotate(g)?;
        }
        if g.segments.len() < 2 {
            // Only the (empty) active segment: nothing to drop.
            return Ok(0);
        }
        let Some(old) = g.segments.pop_front() else {
            return Ok(0);
        };
        let _ = fs::remove_file(&old.path);
        let lost = old
            .last_seq
            .saturating_sub(g.acked_seq.max(old.first_seq.saturating_sub(1)));
        if old.last_seq > g.acked_seq {
            g.acked_seq = old.last_seq;
        }
        let next = g.segments.front().map(|s| Pos {
            seg: s.first_seq,
            offset: 0,
        });
        if let Some(next) = next {
            if g.ack_pos.seg == old.first_seq {
                g.ack_pos = next;
            }
            if g.read.seg == old.first_seq {
                g.read = next;
            }
        }
        g.outstanding.retain(|(s, _)| *s > old.last_seq);
        if let Err(e) = write_checkpoint(&self.opts.dir, g.acked_seq) {
            tracing::warn!(error = %e, "Cannot write the storage checkpoint; dropped records may be sent after a restart.");
        }
        Ok(lost)
    }

    /// Starts a new active segment (fsyncing the old one first).
    fn rotate(&self, g: &mut State) -> std::io::Result<()> {
        if let Some(cur) = g.segments.back() {
            if cur.records == 0 {
                return Ok(());
            }
            cur.file.sync_data()?;
        }
        let first = g.next_seq;
        let path = seg_path(&self.opts.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        g.segments.push_back(Segment {
            first_seq: first,
            path,
            file: Arc::new(file),
            len: 0,
            records: 0,
            last_seq: 0,
        });
        Ok(())
    }

    fn delete_acked_segments(&self, g: &mut State) {
        while g.segments.len() > 1 {
            let done = g
                .segments
                .front()
                .is_some_and(|s| s.last_seq != 0 && s.last_seq <= g.acked_seq);
            if !done {
                break;
            }
            if let Some(s) = g.segments.pop_front() {
                if let Err(e) = fs::remove_file(&s.path) {
                    tracing::warn!(file = %s.path.display(), error = %e, "Cannot delete a delivered storage segment.");
                }
            }
            let next = g.segments.front().map(|s| Pos {
                seg: s.first_seq,
                offset: 0,
            });
            if let Some(next) = next {
                if g.ack_pos.seg < next.seg {
                    g.ack_pos = next;
                }
                if g.read.seg < next.seg {
                    g.read = next;
                }
            }
        }
    }
}

#[async_trait]
impl EventStorage for FileStorage {
    async fn put(&self, records: Vec<DeviceData>) -> Result<PutReport, StorageError> {
        let sh = &self.shared;
        let now = now_millis();
        let mut report = PutReport::default();
        let mut encoded = Vec::with_capacity(128);
        let mut frame = Vec::with_capacity(records.len() * 128);
        // Index of the next record to store; records before it are stored or dropped.
        let mut next = 0usize;
        let mut disk_full_logged = false;
        while next < records.len() {
            let space_freed = sh.space.notified();
            tokio::pin!(space_freed);
            space_freed.as_mut().enable();
            let mut blocked = false;
            {
                let mut g = sh.lock();
                if g.closed {
                    return Err(StorageError::Closed);
                }
                frame.clear();
                let mut count = 0usize;
                let mut full = false;
                while next + count < records.len() {
                    encoded.clear();
                    codec::encode(&records[next + count], &mut encoded);
                    let extra = (segment::HEADER + encoded.len() + frame.len()) as u64;
                    let unacked = sh.unacked(&g) + count as u64;
                    let budget = (sh.opts.max_file_count.max(1)
                        * sh.opts.max_records_per_file.max(1))
                        as u64;
                    if unacked >= budget
                        || sh
                            .opts
                            .max_bytes
                            .is_some_and(|m| Shared::bytes(&g) + extra > m)
                    {
                        full = true;
                        break;
                    }
                    // Rotate before the record that would exceed the segment size.
                    let active_records = g.segments.back().map(|s| s.records).unwrap_or(0) + count;
                    if active_records >= sh.opts.max_records_per_file {
                        if count > 0 {
                            break;
                        }
                        if let Err(e) = sh.rotate(&mut g) {
                            if is_disk_full(&e) {
                                full = true;
                                break;
                            }
                            return Err(e.into());
                        }
                    }
                    let seq = g.next_seq + count as u64;
                    segment::frame(&mut frame, seq, now, &encoded);
                    count += 1;
                }
                if count > 0 {
                    let last = g.next_seq + count as u64 - 1;
                    let Some(active) = g.segments.back_mut() else {
                        return Err(StorageError::Closed);
                    };
                    // One write: the records survive a crash of the process from here on.
                    match (&*active.file).write_all(&frame) {
                        Ok(()) => {
                            active.len += frame.len() as u64;
                            active.records += count;
                            active.last_seq = last;
                            g.next_seq = last + 1;
                            g.written_seq = last;
                            g.stored += count as u64;
                            g.unsynced += count;
                            g.unsynced_since.get_or_insert_with(Instant::now);
                            report.stored += count;
                            report.last_seq = last;
                            next += count;
                        }
                        Err(e) => {
                            // Roll back a partial write so the segment stays well formed.
                            let _ = active.file.set_len(active.len);
                            if !is_disk_full(&e) {
                                return Err(io_err(&active.path, e).into());
                            }
                            if !disk_full_logged {
                                tracing::warn!(dir = %sh.opts.dir.display(), error = %e, "The disk is full; the storage's full policy applies.");
                                disk_full_logged = true;
                            }
                            full = true;
                        }
                    }
                }
                if full {
                    match sh.opts.policy {
                        FullPolicy::Block => blocked = true,
                        FullPolicy::DropNewest => {
                            let n = records.len() - next;
                            g.dropped += n as u64;
                            report.dropped += n;
                            next = records.len();
                        }
                        FullPolicy::DropOldest => {
                            let lost = sh.drop_oldest_segment(&mut g)?;
                            g.dropped += lost;
                            report.dropped += lost as usize;
                            if lost == 0 {
                                // Nothing older to give up: the new record cannot be kept.
                                next += 1;
                                g.dropped += 1;
                                report.dropped += 1;
                            }
                        }
                    }
                }
            }
            if report.stored > 0 {
                sh.sync_cv.notify_one();
                sh.data.notify_waiters();
            }
            if blocked {
                // Space comes back when ThingsBoard confirms records (their segments are
                // deleted) or, for a full disk, when something else frees space: retry then.
                let _ = tokio::time::timeout(Duration::from_secs(1), space_freed).await;
            }
        }
        Ok(report)
    }

    async fn read(&self, max: usize) -> Result<Batch, StorageError> {
        let sh = &self.shared;
        let max = max.max(1);
        loop {
            let notified = sh.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut g = sh.lock();
                if g.closed {
                    return Err(StorageError::Closed);
                }
                let ttl_cutoff = sh.opts.ttl.map(|t| now_millis() - t.as_millis() as i64);
                let mut records: Vec<Record> = Vec::new();
                let mut last_seq = 0;
                let mut pos = g.read;
                let mut corrupt = 0;
                let mut expired = 0;
                'segments: while records.len() < max {
                    let Some(idx) = g.segments.iter().position(|s| s.first_seq == pos.seg) else {
                        break;
                    };
                    let seg = &g.segments[idx];
                    let mut sc = Scanner::new(&seg.file, seg.len);
                    loop {
                        if records.len() >= max {
                            break 'segments;
                        }
                        match sc.step(pos.offset)? {
                            Step::Record(r) => {
                                pos.offset = r.end;
                                if r.seq <= g.acked_seq {
                                    continue;
                                }
                                if ttl_cutoff.is_some_and(|c| r.ts < c) {
                                    expired += 1;
                                    continue;
                                }
                                match codec::decode(&r.payload) {
                                    Ok(d) => {
                                        last_seq = r.seq;
                                        records.push(Arc::new(d));
                                    }
                                    Err(_) => corrupt += 1,
                                }
                            }
                            Step::Corrupt { resume } => {
                                corrupt += 1;
                                pos.offset = resume;
                            }
                            Step::End => break,
                        }
                    }
                    // End of this segment: go on with the next one, if any.
                    match g.segments.get(idx + 1) {
                        Some(next) => {
                            pos = Pos {
                                seg: next.first_seq,
                                offset: 0,
                            }
                        }
                        None => break,
                    }
                }
                if corrupt > 0 {
                    tracing::warn!(
                        records = corrupt,
                        "Skipped corrupt records in the file storage."
                    );
                }
                g.corrupt += corrupt;
                g.expired += expired;
                g.read = pos;
                if !records.is_empty() {
                    g.outstanding.push_back((last_seq, pos));
                    // Sequence numbers in a batch may have gaps where records were skipped; the
                    // batch is acknowledged through its last one, which `Batch::last_seq` gives.
                    let n = records.len() as u64;
                    return Ok(Batch {
                        first_seq: last_seq + 1 - n,
                        records,
                    });
                }
            }
            notified.await;
        }
    }

    async fn ack(&self, through_seq: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        {
            let mut g = sh.lock();
            if through_seq <= g.acked_seq {
                return Ok(());
            }
            let before = g.acked_seq;
            g.acked_seq = through_seq.min(g.next_seq - 1);
            g.acked += g.acked_seq - before;
            while let Some(&(seq, pos)) = g.outstanding.front() {
                if seq > through_seq {
                    break;
                }
                g.ack_pos = pos;
                g.outstanding.pop_front();
            }
            sh.delete_acked_segments(&mut g);
            // The checkpoint is written at most every CHECKPOINT_INTERVAL: a stale one only
            // means records are sent again after a crash, and writing it on every ack costs a
            // file create + rename per batch on the delivery path.
            g.checkpoint_dirty = true;
            if g.checkpoint_at.elapsed() >= CHECKPOINT_INTERVAL {
                sh.write_checkpoint_now(&mut g);
            }
        }
        sh.space.notify_waiters();
        Ok(())
    }

    fn rewind(&self) {
        let sh = &self.shared;
        {
            let mut g = sh.lock();
            g.read = g.ack_pos;
            g.outstanding.clear();
        }
        sh.data.notify_waiters();
    }

    fn stats(&self) -> StorageStats {
        let g = self.shared.lock();
        StorageStats {
            len: self.shared.unacked(&g) as usize,
            stored: g.stored,
            acked: g.acked,
            dropped: g.dropped,
            corrupt: g.corrupt,
            expired: g.expired,
            bytes: Shared::bytes(&g),
        }
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let target = {
            let mut g = self.shared.lock();
            // Make the pending group commit due now.
            if g.unsynced > 0 {
                g.unsynced = g.unsynced.max(self.shared.opts.fsync_records);
            }
            g.written_seq
        };
        self.shared.sync_cv.notify_one();
        self.wait_durable(target).await
    }

    async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        let sh = &self.shared;
        group_commit::wait_durable(
            &sh.durable,
            seq,
            &sh.state,
            &sh.sync_cv,
            |g| &mut g.wanted,
            |g| g.closed,
        )
        .await
    }

    fn read_batch_size(&self) -> usize {
        self.shared.opts.read_batch
    }
}

/// Reads every record of a data folder, for tools and tests: `(seq, record)` in order, and the
/// number of corrupt stretches skipped.
pub fn dump(dir: &Path) -> Result<(Vec<(u64, DeviceData)>, u64), StorageError> {
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".log"))
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    let mut bad = 0;
    for p in names {
        let file = File::open(&p)?;
        let len = file.metadata()?.len();
        let mut sc = Scanner::new(&file, len);
        let mut off = 0;
        loop {
            match sc.step(off)? {
                Step::Record(r) => {
                    off = r.end;
                    match codec::decode(&r.payload) {
                        Ok(d) => out.push((r.seq, d)),
                        Err(_) => bad += 1,
                    }
                }
                Step::Corrupt { resume } => {
                    bad += 1;
                    off = resume;
                }
                Step::End => break,
            }
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests;
