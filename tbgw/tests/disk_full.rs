//! The file storage on a real, tiny filesystem (a tmpfs mounted for the test): a full disk
//! applies the full policy instead of failing or panicking, a read-only filesystem is a clear
//! error, and both recover when space or write access returns.
//!
//! Mounting needs root, which the project's test machines and CI have.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use tbgw::model::{DeviceData, Value};
use tbgw::storage::{EventStorage, FileStorage, FileStorageOptions, FullPolicy};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct TinyDisk {
    dir: PathBuf,
    _keep: tempfile::TempDir,
}

impl TinyDisk {
    fn new(size: &str) -> TinyDisk {
        let keep = tempfile::tempdir().unwrap();
        let dir = keep.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk { dir, _keep: keep }
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A record of about 1 KB.
fn rec(n: i64) -> DeviceData {
    let mut d = DeviceData::new("dev", "t");
    d.push_telemetry(n, "n", Value::Int(n));
    d.push_attribute("blob", Value::String("x".repeat(1000)));
    d
}

fn opts(dir: &Path, policy: FullPolicy) -> FileStorageOptions {
    let mut o = FileStorageOptions::new(dir.join("data"));
    o.max_records_per_file = 50;
    o.max_file_count = 1_000_000;
    o.policy = policy;
    o
}

async fn drain(s: &FileStorage) -> usize {
    let mut n = 0;
    while let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(100), s.read(1000)).await {
        n += b.records.len();
        s.ack(b.last_seq()).await.unwrap();
    }
    n
}

#[tokio::test]
async fn a_full_disk_drops_by_policy_and_recovers_when_space_returns() {
    let disk = TinyDisk::new("400k");
    let s = FileStorage::open(opts(disk.path(), FullPolicy::DropNewest)).unwrap();
    let mut stored = 0;
    let mut dropped = 0;
    for i in 0..100 {
        let r = s
            .put((i * 10..i * 10 + 10).map(rec).collect())
            .await
            .expect("a full disk is not an error under drop_newest");
        stored += r.stored;
        dropped += r.dropped;
    }
    assert!(dropped > 0, "the disk filled up");
    assert!(stored > 100, "something was stored first ({stored})");
    assert_eq!(s.stats().dropped as usize, dropped);
    // Everything stored is intact.
    assert_eq!(drain(&s).await, stored);
    // Acknowledged segments are deleted: space is back and writing works again.
    let r = s.put((0..10).map(rec).collect()).await.unwrap();
    assert_eq!(r.stored, 10, "{r:?}");
}

#[tokio::test]
async fn a_full_disk_under_block_waits_for_deliveries() {
    let disk = TinyDisk::new("400k");
    let s = Arc::new(FileStorage::open(opts(disk.path(), FullPolicy::Block)).unwrap());
    let s2 = s.clone();
    let writer = tokio::spawn(async move {
        let mut total = 0;
        for i in 0..60 {
            total += s2
                .put((i * 10..i * 10 + 10).map(rec).collect())
                .await
                .unwrap()
                .stored;
        }
        total
    });
    // The writer fills the disk and blocks; delivering (read + ack) frees segments.
    let mut delivered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !writer.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer never finished"
        );
        if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(200), s.read(100)).await {
            delivered += b.records.len();
            s.ack(b.last_seq()).await.unwrap();
        }
    }
    let written = writer.await.unwrap();
    assert_eq!(written, 600, "block loses nothing");
    delivered += drain(&s).await;
    assert_eq!(delivered, 600);
}

#[tokio::test]
async fn a_read_only_filesystem_is_an_error_and_the_data_is_there_after() {
    let disk = TinyDisk::new("4m");
    {
        let s = FileStorage::open(opts(disk.path(), FullPolicy::Block)).unwrap();
        s.put((0..5).map(rec).collect()).await.unwrap();
    }
    disk.remount("ro");
    let err = FileStorage::open(opts(disk.path(), FullPolicy::Block))
        .expect_err("a read-only folder cannot hold a storage");
    assert!(
        err.to_string().contains("Read-only") || err.to_string().contains("read-only"),
        "a clear error: {err}"
    );
    disk.remount("rw");
    let s = FileStorage::open(opts(disk.path(), FullPolicy::Block)).unwrap();
    let r = s.put((5..7).map(rec).collect()).await.unwrap();
    assert_eq!(r.stored, 2);
    assert_eq!(drain(&s).await, 7);
}
