use super::*;
use proptest::prelude::*;

use crate::storage::test_records::{n_of, rec};

fn opts(dir: &Path) -> RocksDbOptions {
    let mut o = RocksDbOptions::new(dir);
    o.sync_interval = Duration::from_millis(5);
    o
}

async fn put_range(s: &RocksDbStorage, r: std::ops::Range<i64>) -> PutReport {
    s.put(r.map(rec).collect()).await.unwrap()
}

async fn read_all(s: &RocksDbStorage) -> Vec<i64> {
    let mut out = Vec::new();
    while let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(50), s.read(1000)).await {
        out.extend(b.records.iter().map(|r| n_of(r)));
    }
    out
}

/// Opens the folder with plain RocksDB (the storage must be closed).
fn raw(dir: &Path) -> DB {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    DB::open_cf(&o, dir, [CF_RECORDS, CF_META]).unwrap()
}

#[tokio::test]
async fn records_round_trip_with_consecutive_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    let r = put_range(&s, 0..20).await;
    assert_eq!((r.stored, r.last_seq, r.dropped), (20, 20, 0));
    let b = s.read(8).await.unwrap();
    assert_eq!((b.first_seq, b.last_seq()), (1, 8));
    assert_eq!(b.records[3].as_ref(), &rec(3));
    s.ack(b.last_seq()).await.unwrap();
    let st = s.stats();
    assert_eq!((st.len, st.stored, st.acked), (12, 20, 8));
    assert!(st.bytes > 0);
    assert_eq!(read_all(&s).await, (8..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_resumes_where_delivery_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let bytes;
    {
        let s = RocksDbStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..35).await;
        let b = s.read(12).await.unwrap();
        s.ack(b.last_seq()).await.unwrap();
        let _ = s.read(5).await.unwrap();
        bytes = s.stats().bytes;
    }
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    assert_eq!(s.stats().len, 23);
    assert_eq!(
        s.stats().bytes,
        bytes,
        "the byte count is recovered exactly"
    );
    assert_eq!(read_all(&s).await, (12..35).collect::<Vec<_>>());
    let r = put_range(&s, 35..37).await;
    assert_eq!(r.last_seq, 37);
    assert_eq!(read_all(&s).await, vec![35, 36]);
}

#[tokio::test]
async fn sequence_numbers_continue_after_everything_was_acknowledged_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksDbStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..5).await;
        let b = s.read(10).await.unwrap();
        s.ack(b.last_seq()).await.unwrap();
        assert_eq!(s.stats().len, 0);
    }
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    assert_eq!(put_range(&s, 5..6).await.last_seq, 6);
    assert_eq!(read_all(&s).await, vec![5]);
}

#[tokio::test]
async fn rewind_rereads_everything_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    put_range(&s, 0..20).await;
    let b1 = s.read(7).await.unwrap();
    let _b2 = s.read(7).await.unwrap();
    s.ack(b1.last_seq()).await.unwrap();
    s.rewind();
    assert_eq!(read_all(&s).await, (7..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn drop_newest_rejects_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_records = Some(20);
    o.policy = FullPolicy::DropNewest;
    let s = RocksDbStorage::open(o).unwrap();
    let r = put_range(&s, 0..25).await;
    assert_eq!((r.stored, r.dropped), (20, 5));
    assert_eq!(s.stats().dropped, 5);
    assert_eq!(read_all(&s).await, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn drop_oldest_deletes_the_oldest_unacknowledged_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_records = Some(20);
    o.policy = FullPolicy::DropOldest;
    let s = RocksDbStorage::open(o.clone()).unwrap();
    put_range(&s, 0..10).await;
    let b = s.read(3).await.unwrap();
    s.ack(b.last_seq()).await.unwrap();
    let r = put_range(&s, 10..30).await;
    assert_eq!((r.stored, r.dropped), (20, 7));
    assert_eq!(s.stats().len, 20);
    assert_eq!(read_all(&s).await, (10..30).collect::<Vec<_>>());
    drop(s);
    // The drop moved the checkpoint: a restart does not bring the dropped records back.
    let s = RocksDbStorage::open(o).unwrap();
    assert_eq!(read_all(&s).await, (10..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_byte_budget_counts_stored_values_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_bytes = Some(10_000);
    o.policy = FullPolicy::DropNewest;
    let s = RocksDbStorage::open(o).unwrap();
    let r = put_range(&s, 0..1000).await;
    assert!(r.dropped > 0 && r.stored > 10, "{r:?}");
    let st = s.stats();
    assert!(st.bytes <= 10_000, "{st:?}");
    let b = s.read(5).await.unwrap();
    s.ack(b.last_seq()).await.unwrap();
    assert!(s.stats().bytes < st.bytes);
}

#[tokio::test]
async fn block_waits_for_an_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_records = Some(20);
    let s = Arc::new(RocksDbStorage::open(o).unwrap());
    put_range(&s, 0..20).await;
    let s2 = s.clone();
    let blocked = tokio::spawn(async move { put_range(&s2, 20..21).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!blocked.is_finished(), "put blocks while full");
    let b = s.read(10).await.unwrap();
    s.ack(b.last_seq()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.stored, r.last_seq), (1, 21));
}

#[tokio::test]
async fn records_older_than_the_ttl_are_skipped_counted_and_swept() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.ttl = Some(Duration::from_millis(300));
    let s = RocksDbStorage::open(o.clone()).unwrap();
    put_range(&s, 0..3).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    put_range(&s, 3..5).await;
    assert_eq!(read_all(&s).await, vec![3, 4]);
    assert_eq!(s.stats().expired, 3);
    s.rewind();
    assert_eq!(read_all(&s).await, vec![3, 4]);
    assert_eq!(s.stats().expired, 3, "not counted twice");
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    o.path = dir.path().to_path_buf();
    o.ttl_check_interval = Duration::from_millis(100);
    let s = RocksDbStorage::open(o.clone()).unwrap();
    put_range(&s, 0..4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let st = s.stats();
    assert_eq!((st.len, st.expired), (0, 4));
    drop(s);
    let db = raw(dir.path());
    let recs = db.cf_handle(CF_RECORDS).unwrap();
    assert_eq!(db.iterator_cf(recs, IteratorMode::Start).count(), 0);
}

#[tokio::test]
async fn a_corrupt_value_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RocksDbStorage::open(opts(dir.path())).unwrap();
        put_range(&s, 0..2).await;
    }
    {
        let db = raw(dir.path());
        let recs = db.cf_handle(CF_RECORDS).unwrap();
        db.put_cf(recs, key(3), b"short").unwrap();
        let mut v = now_millis().to_le_bytes().to_vec();
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&[0xff; 9]);
        db.put_cf(recs, key(4), v).unwrap();
    }
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    put_range(&s, 2..4).await;
    let b = s.read(100).await.unwrap();
    assert_eq!(
        b.records.iter().map(|r| n_of(r)).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(b.last_seq(), 6);
    assert_eq!(s.stats().corrupt, 2);
    s.ack(b.last_seq()).await.unwrap();
    assert_eq!(s.stats().len, 0);
}

#[tokio::test]
async fn a_garbage_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("CURRENT"), b"MANIFEST-000001\n").unwrap();
    fs::write(dir.path().join("MANIFEST-000001"), vec![0x5au8; 4096]).unwrap();
    let err = RocksDbStorage::open(opts(dir.path())).unwrap_err();
    assert!(matches!(err, StorageError::Database(_)), "{err}");

    let file = dir.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = RocksDbStorage::open(opts(&file)).unwrap_err();
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[tokio::test]
async fn a_read_only_folder_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    if fs::write(ro.join("probe"), b"x").is_ok() {
        // Running as root: permissions are not enforced, nothing to test.
        return;
    }
    let err = RocksDbStorage::open(opts(&ro)).unwrap_err();
    assert!(err.to_string().contains("writable"), "{err}");
}

#[tokio::test]
async fn a_second_open_of_the_same_folder_is_an_error_and_close_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    assert!(RocksDbStorage::open(opts(dir.path())).is_err());
    s.close();
    assert!(matches!(
        s.put(vec![rec(1)]).await,
        Err(StorageError::Closed)
    ));
    RocksDbStorage::open(opts(dir.path())).unwrap();
}

#[tokio::test]
async fn wait_durable_returns_after_the_group_commit_and_at_once_with_sync() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    let r = put_range(&s, 0..10).await;
    tokio::time::timeout(Duration::from_secs(5), s.wait_durable(r.last_seq))
        .await
        .unwrap()
        .unwrap();
    put_range(&s, 10..12).await;
    tokio::time::timeout(Duration::from_secs(5), s.flush())
        .await
        .unwrap()
        .unwrap();
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.sync = true;
    o.sync_interval = Duration::from_secs(3600);
    let s = RocksDbStorage::open(o).unwrap();
    let r = put_range(&s, 0..10).await;
    tokio::time::timeout(Duration::from_millis(100), s.wait_durable(r.last_seq))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_cancelled_read_hands_out_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = RocksDbStorage::open(opts(dir.path())).unwrap();
    put_range(&s, 0..50).await;
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::from_micros(1), s.read(10)).await;
        s.rewind();
    }
    s.rewind();
    assert_eq!(read_all(&s).await, (0..50).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_and_a_writer_at_once_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_records = Some(300);
    let s = Arc::new(RocksDbStorage::open(o).unwrap());
    const N: i64 = 3000;
    let w = s.clone();
    let writer = tokio::spawn(async move {
        let mut i = 0;
        while i < N {
            let n = (i % 17 + 1).min(N - i);
            w.put((i..i + n).map(rec).collect()).await.unwrap();
            i += n;
        }
    });
    let r = s.clone();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < N as usize {
            let b = r.read(64).await.unwrap();
            got.extend(b.records.iter().map(|x| n_of(x)));
            r.ack(b.last_seq()).await.unwrap();
        }
        got
    });
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(s.stats().len, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_never_hand_out_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(RocksDbStorage::open(opts(dir.path())).unwrap());
    put_range(&s, 0..2000).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(200), s.read(37)).await
            {
                got.extend(b.records.iter().map(|x| n_of(x)));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..2000).collect::<Vec<_>>());
}

/// Operations of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Read(u8),
    AckAll,
    Rewind,
    /// Close and reopen: a put that returned survives a crash of the process.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..20).prop_map(Op::Put),
        (1u8..30).prop_map(Op::Read),
        Just(Op::AckAll),
        Just(Op::Rewind),
        Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Against a model: reads return the unacknowledged records in order, a rewind or a
    /// restart starts again at the oldest unacknowledged one, and nothing is lost or repeated.
    #[test]
    fn the_storage_behaves_like_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut s = RocksDbStorage::open(opts(dir.path())).unwrap();
            let mut next = 0i64;
            let mut unacked: Vec<(u64, i64)> = Vec::new();
            let mut read_upto = 0usize;
            for op in ops {
                match op {
                    Op::Put(n) => {
                        let r = put_range(&s, next..next + i64::from(n)).await;
                        prop_assert_eq!(r.stored, usize::from(n));
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
                            prop_assert_eq!(b.last_seq(), unacked[read_upto - 1].0);
                        } else {
                            let r = tokio::time::timeout(Duration::from_millis(5), s.read(usize::from(n))).await;
                            prop_assert!(r.is_err(), "nothing left to read");
                        }
                    }
                    Op::AckAll => {
                        if read_upto > 0 {
                            s.ack(unacked[read_upto - 1].0).await.unwrap();
                            unacked.drain(..read_upto);
                            read_upto = 0;
                        }
                    }
                    Op::Rewind => {
                        s.rewind();
                        read_upto = 0;
                    }
                    Op::Crash => {
                        drop(s);
                        s = RocksDbStorage::open(opts(dir.path())).unwrap();
                        read_upto = 0;
                        prop_assert_eq!(s.stats().len, unacked.len());
                    }
                }
            }
            s.rewind();
            let got = read_all(&s).await;
            prop_assert_eq!(got, unacked.iter().map(|(_, v)| *v).collect::<Vec<_>>());
            Ok(())
        })?;
    }
}

/// A waiter does not sit out `sync_interval` (an hour here): `wait_durable` returns, while a
/// record nobody waits for stays unsynced until `flush`.
#[tokio::test]
async fn a_waiter_gets_its_fsync_without_waiting_for_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.sync = false;
    o.sync_interval = Duration::from_secs(3600);
    let s = RocksDbStorage::open(o).unwrap();
    crate::storage::test_records::check_a_waiter_gets_its_fsync(&s, || *s.shared.durable.borrow())
        .await;
}
