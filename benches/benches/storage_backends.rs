//! Storage backends side by side: `put`, and `read` + `ack`, of ~100-byte records in batches
//! of 100, for the memory, file, SQLite and (with `--features rocksdb`) RocksDB storages.
//!
//! Run: `cargo bench -p tbgw-benches --features rocksdb --bench storage_backends`.
//!
//! `put` is timed alone (it returns once the records survive a crash of the process; the
//! group commit that makes them survive a power cut runs in the background); the storage is
//! drained, untimed, every few thousand records so it never fills up. `read_ack` pre-fills
//! untimed and times one `read(100)` plus the `ack` of the batch.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tbgw::internal::codec;
use tbgw::model::{DeviceData, Value};
use tbgw::storage::{
    EventStorage, FileStorage, FileStorageOptions, FullPolicy, MemoryStorage, SqliteOptions,
    SqliteStorage,
};

const BATCH: usize = 100;

/// A device record of about 100 bytes once encoded.
fn record(i: usize) -> DeviceData {
    let mut d = DeviceData::new(format!("SN-{:06}", i % 1000), "thermometer");
    let ts = 1_700_000_000_000 + i as i64;
    d.push_telemetry(ts, "temp", Value::Float(21.75));
    d.push_telemetry(ts, "hum", Value::Int(48));
    d.push_telemetry(ts, "relay", Value::Bool(true));
    d.push_attribute("fw", Value::String("1.4.2".into()));
    d
}

fn batch(start: usize) -> Vec<DeviceData> {
    (start..start + BATCH).map(record).collect()
}

async fn drain(s: &dyn EventStorage) {
    while s.stats().len > 0 {
        let b = s.read(10_000).await.unwrap();
        s.ack(b.last_seq()).await.unwrap();
    }
}

fn bench_backend(c: &mut Criterion, name: &str, open: &dyn Fn(&Path) -> Arc<dyn EventStorage>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut g = c.benchmark_group(format!("storage_backends/{name}"));
    g.throughput(Throughput::Elements(BATCH as u64));

    g.bench_function("put", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters as usize {
                    let recs = batch(i * BATCH);
                    let t = Instant::now();
                    s.put(recs).await.unwrap();
                    total += t.elapsed();
                    if i % 100 == 99 {
                        drain(s.as_ref()).await;
                    }
                }
                drain(s.as_ref()).await;
                total
            })
        })
    });

    g.bench_function("read_ack", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(100);
                    for i in 0..n {
                        s.put(batch(i * BATCH)).await.unwrap();
                    }
                    for _ in 0..n {
                        let t = Instant::now();
                        let b = s.read(BATCH).await.unwrap();
                        s.ack(b.last_seq()).await.unwrap();
                        total += t.elapsed();
                    }
                    left -= n;
                }
                total
            })
        })
    });
    g.finish();
    drop(s);
}

fn backends(c: &mut Criterion) {
    let mut buf = Vec::new();
    codec::encode(&record(0), &mut buf);
    eprintln!("Encoded record size: {} bytes.", buf.len());

    bench_backend(c, "memory", &|_| {
        Arc::new(MemoryStorage::new(1_000_000, 1000, FullPolicy::Block))
    });
    bench_backend(c, "file", &|dir| {
        let o = FileStorageOptions::new(dir);
        Arc::new(FileStorage::open(o).unwrap())
    });
    bench_backend(c, "sqlite", &|dir| {
        let mut o = SqliteOptions::new(dir);
        o.messages_ttl_in_days = None;
        Arc::new(SqliteStorage::open(o).unwrap())
    });
    #[cfg(feature = "rocksdb")]
    bench_backend(c, "rocksdb", &|dir| {
        Arc::new(
            tbgw::storage::RocksDbStorage::open(tbgw::storage::RocksDbOptions::new(dir)).unwrap(),
        )
    });
}

criterion_group!(benches, backends);
criterion_main!(benches);
