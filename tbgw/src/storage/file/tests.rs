use super::*;
use proptest::prelude::*;

use crate::storage::test_records::{n_of, rec};

fn opts(dir: &Path) -> FileStorageOptions {
    let mut o = FileStorageOptions::new(dir);
    o.max_records_per_file = 10;
    o.max_file_count = 1000;
    o.fsync_interval = Duration::from_millis(5);
    o
}

async fn put_range(s: &FileStorage, r: std::ops::Range<i64>) -> PutReport {
    s.put(r.map(rec).collect()).await.unwrap()
}

async fn read_all(s: &FileStorage) -> Vec<i64> {
    let mut out = Vec::new();
    while let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(50), s.read(1000)).await {
        out.extend(b.records.iter().map(|r| n_of(r)));
    }
    out
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_restart_resumes_where_delivery_stopped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStorage::open(opts(dir.path())).unwrap();
        let r = put_range(&s, 0..35).await;
        assert_eq!((r.stored, r.last_seq), (35, 35));
        s.wait_durable(35).await.unwrap();
        let b = s.read(12).await.unwrap();
        assert_eq!(b.records.len(), 12);
        s.ack(b.last_seq()).await.unwrap();
        // Read more but do not acknowledge: these must come back after the restart.
        let _ = s.read(5).await.unwrap();
    }
    let s = FileStorage::open(opts(dir.path())).unwrap();
    assert_eq!(read_all(&s).await, (12..35).collect::<Vec<_>>());
    assert_eq!(s.stats().len, 23);
    // New records follow the old ones.
    let r = put_range(&s, 35..37).await;
    assert_eq!(r.last_seq, 37);
    assert_eq!(read_all(&s).await, vec![35, 36]);
}

#[tokio::test]
async fn segments_rotate_and_are_deleted_only_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    put_range(&s, 0..45).await;
    assert_eq!(segments(dir.path()).len(), 5);
    let b = s.read(25).await.unwrap();
    assert_eq!(segments(dir.path()).len(), 5, "reading deletes nothing");
    s.ack(b.last_seq()).await.unwrap();
    assert_eq!(
        segments(dir.path()).len(),
        3,
        "two full segments acknowledged"
    );
    s.rewind();
    assert_eq!(read_all(&s).await, (25..45).collect::<Vec<_>>());
}

#[tokio::test]
async fn rewind_rereads_everything_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    put_range(&s, 0..20).await;
    let b1 = s.read(7).await.unwrap();
    let _b2 = s.read(7).await.unwrap();
    s.ack(b1.last_seq()).await.unwrap();
    s.rewind();
    assert_eq!(read_all(&s).await, (7..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_counted_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..5).await;
    }
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    assert_eq!(s.stats().corrupt, 1);
    put_range(&s, 100..102).await;
    assert_eq!(read_all(&s).await, vec![0, 1, 2, 3, 100, 101]);
}

#[tokio::test]
async fn flipped_bits_skip_only_the_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..10).await;
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    let got = read_all(&s).await;
    assert_eq!(got.len(), 9, "{got:?}");
    assert!(s.stats().corrupt >= 1);
}

#[tokio::test]
async fn a_stale_or_corrupt_checkpoint_means_duplicates_not_loss() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..8).await;
        let b = s.read(3).await.unwrap();
        s.ack(b.last_seq()).await.unwrap();
    }
    fs::write(dir.path().join(CHECKPOINT), b"garbage").unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    assert_eq!(
        read_all(&s).await,
        (0..8).collect::<Vec<_>>(),
        "everything is sent again"
    );
}

#[tokio::test]
async fn a_missing_segment_is_a_counted_gap() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = FileStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..30).await;
    }
    let segs = segments(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    let got = read_all(&s).await;
    assert_eq!(got, (0..10).chain(20..30).collect::<Vec<_>>());
    assert_eq!(s.stats().corrupt, 10);
}

#[tokio::test]
async fn full_policies_block_drop_newest_and_drop_oldest() {
    // Budget: 2 files x 10 records.
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_file_count = 2;
    o.policy = FullPolicy::DropNewest;
    let s = FileStorage::open(o.clone()).unwrap();
    let r = put_range(&s, 0..25).await;
    assert_eq!((r.stored, r.dropped), (20, 5));
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    o.dir = dir.path().to_path_buf();
    o.policy = FullPolicy::DropOldest;
    let s = FileStorage::open(o.clone()).unwrap();
    let r = put_range(&s, 0..25).await;
    assert_eq!(r.stored, 25);
    assert!(r.dropped >= 5, "{r:?}");
    let got = read_all(&s).await;
    assert_eq!(*got.last().unwrap(), 24, "the newest data is kept");
    assert!(!got.contains(&0), "the oldest data went");
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    o.dir = dir.path().to_path_buf();
    o.policy = FullPolicy::Block;
    let s = Arc::new(FileStorage::open(o).unwrap());
    put_range(&s, 0..20).await;
    let s2 = s.clone();
    let blocked = tokio::spawn(async move { put_range(&s2, 20..21).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!blocked.is_finished(), "put blocks while full");
    let b = s.read(10).await.unwrap();
    s.ack(b.last_seq()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.stored, 1);
}

#[tokio::test]
async fn records_older_than_the_ttl_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.ttl = Some(Duration::from_millis(100));
    let s = FileStorage::open(o).unwrap();
    put_range(&s, 0..3).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    put_range(&s, 3..5).await;
    assert_eq!(read_all(&s).await, vec![3, 4]);
    assert_eq!(s.stats().expired, 3);
}

#[tokio::test]
async fn a_read_only_folder_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(opts(dir.path())).unwrap();
    put_range(&s, 0..2).await;
    // Make the active segment unwritable underneath the storage.
    let seg = segments(dir.path()).pop().unwrap();
    let ro = File::open(&seg).unwrap();
    {
        let mut g = s.shared.lock();
        if let Some(a) = g.segments.back_mut() {
            a.file = Arc::new(ro);
        }
    }
    assert!(s.put(vec![rec(9)]).await.is_err());
    // Data already there is still readable.
    assert_eq!(read_all(&s).await, vec![0, 1]);
}

/// Operations of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Read(u8),
    AckAll,
    Rewind,
    /// Reopen after a power cut: bytes written after the last group commit may be lost, cut
    /// at any byte (fraction of the unsynced tail that survives, in 1/8ths).
    Crash(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..20).prop_map(Op::Put),
        (1u8..30).prop_map(Op::Read),
        Just(Op::AckAll),
        Just(Op::Rewind),
        (0u8..=8).prop_map(Op::Crash),
    ]
}

/// Byte offset just after the record with sequence number `seq` in the last segment, if there.
fn end_of(seg: &Path, seq: u64) -> Option<u64> {
    let f = File::open(seg).ok()?;
    let len = f.metadata().ok()?.len();
    let mut sc = Scanner::new(&f, len);
    let mut off = 0;
    loop {
        match sc.step(off).ok()? {
            Step::Record(r) if r.seq == seq => return Some(r.end),
            Step::Record(r) => off = r.end,
            Step::Corrupt { resume } => off = resume,
            Step::End => return None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Against a model: every record that was durable and not acknowledged before a crash is
    /// delivered after it, in order, with its content; nothing acknowledged and checkpointed
    /// comes back; nothing panics.
    #[test]
    fn durable_unacknowledged_records_survive_any_crash(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut s = FileStorage::open(opts(dir.path())).unwrap();
            let mut next = 0i64;
            // Model: records not yet acknowledged, and which of them are durable.
            let mut unacked: Vec<(u64, i64)> = Vec::new();
            let mut read_upto = 0usize; // index into `unacked` of the next record to read
            for op in ops {
                match op {
                    Op::Put(n) => {
                        let r = put_range(&s, next..next + i64::from(n)).await;
                        let first = r.last_seq + 1 - u64::from(n);
                        for (i, v) in (next..next + i64::from(n)).enumerate() {
                            unacked.push((first + i as u64, v));
                        }
                        next += i64::from(n);
                    }
                    Op::Read(n) => {
                        if read_upto < unacked.len() {
                            let b = tokio::time::timeout(Duration::from_secs(2), s.read(usize::from(n))).await.unwrap().unwrap();
                            for r in &b.records {
                                prop_assert_eq!(n_of(r), unacked[read_upto].1);
                                read_upto += 1;
                            }
                        }
                    }
                    Op::AckAll => {
                        if read_upto > 0 {
                            let seq = unacked[read_upto - 1].0;
                            s.ack(seq).await.unwrap();
                            unacked.drain(..read_upto);
                            read_upto = 0;
                        }
                    }
                    Op::Rewind => {
                        s.rewind();
                        read_upto = 0;
                    }
                    Op::Crash(keep) => {
                        let durable = *s.shared.durable.borrow();
                        let written = s.shared.lock().written_seq;
                        let seg = s.shared.lock().segments.back().map(|x| x.path.clone()).unwrap();
                        // Close without the last fsync being relevant: we cut the file ourselves.
                        drop(s);
                        if written > durable {
                            let len = fs::metadata(&seg).unwrap().len();
                            let floor = end_of(&seg, durable).unwrap_or(0);
                            let cut = floor + (len - floor) * u64::from(keep) / 8;
                            OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut.max(floor)).unwrap();
                        }
                        s = FileStorage::open(opts(dir.path())).unwrap();
                        // Records after the durable point may be gone; the durable ones must not be.
                        let got = read_all(&s).await;
                        let must: Vec<i64> = unacked.iter().filter(|(q, _)| *q <= durable).map(|(_, v)| *v).collect();
                        prop_assert!(got.len() >= must.len(), "lost durable records: got {:?}, must {:?}", got, must);
                        prop_assert_eq!(&got[..must.len()], &must[..]);
                        // Continue from what the storage has now.
                        let kept = got.len();
                        unacked.truncate(kept);
                        s.rewind();
                        read_upto = 0;
                        // New writes continue after whatever survived; resync the model's seqs.
                        next = unacked.last().map(|(_, v)| v + 1).unwrap_or(next).max(next);
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// A waiter does not sit out the group-commit interval: with an interval of an hour and a
/// record threshold never reached, `wait_durable` still returns, and the record is durable.
#[tokio::test]
async fn a_waiter_gets_its_fsync_without_waiting_for_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.fsync_interval = Duration::from_secs(3600);
    o.fsync_records = usize::MAX;
    let s = FileStorage::open(o).unwrap();
    crate::storage::test_records::check_a_waiter_gets_its_fsync(&s, || *s.shared.durable.borrow())
        .await;
}
