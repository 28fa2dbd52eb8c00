//! Bounded in-memory storage (`"type": "memory"`). Not persistent across restarts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Batch, EventStorage, FullPolicy, PutReport, Record, StorageError, StorageStats};
use crate::model::DeviceData;

/// Bounded in-memory storage with a configurable [`FullPolicy`].
///
/// ```
/// # tokio_test_block_on(async {
/// use tbgw::storage::{EventStorage, FullPolicy, MemoryStorage};
/// use tbgw::model::DeviceData;
/// let s = MemoryStorage::new(100, 10, FullPolicy::Block);
/// s.put(vec![DeviceData::new("dev", "default")]).await.unwrap();
/// let batch = s.read(10).await.unwrap();
/// s.ack(batch.last_seq()).await.unwrap();
/// assert_eq!(s.stats().len, 0);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
    capacity: usize,
    read_batch: usize,
    policy: FullPolicy,
    /// Woken when records are added.
    data: Notify,
    /// Woken when records are acknowledged or dropped (space freed).
    space: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Unacknowledged records; the front has sequence number `head_seq`.
    queue: VecDeque<Record>,
    head_seq: u64,
    /// Sequence number of the next record to read.
    cursor: u64,
    stored: u64,
    acked: u64,
    dropped: u64,
}

impl MemoryStorage {
    /// A storage holding at most `capacity` records (`max_records_count`), reading batches of
    /// `read_batch` (`read_records_count`).
    pub fn new(capacity: usize, read_batch: usize, policy: FullPolicy) -> Self {
        MemoryStorage {
            inner: Mutex::new(Inner {
                head_seq: 1,
                cursor: 1,
                ..Inner::default()
            }),
            capacity: capacity.max(1),
            read_batch: read_batch.max(1),
            policy,
            data: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // matters more than losing the process, so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl EventStorage for MemoryStorage {
    async fn put(&self, records: Vec<DeviceData>) -> Result<PutReport, StorageError> {
        let mut report = PutReport::default();
        let mut pending = records.into_iter().map(Arc::new).peekable();
        while pending.peek().is_some() {
            let space_freed = self.space.notified();
            tokio::pin!(space_freed);
            space_freed.as_mut().enable();
            {
                let mut g = self.lock();
                while let Some(rec) = pending.peek() {
                    let _ = rec;
                    if g.queue.len() < self.capacity {
                        let rec = pending.next().expect("peeked above");
                        g.queue.push_back(rec);
                        g.stored += 1;
                        report.stored += 1;
                        report.last_seq = g.head_seq + g.queue.len() as u64 - 1;
                        continue;
                    }
                    match self.policy {
                        FullPolicy::Block => break,
                        FullPolicy::DropNewest => {
                            let n = pending.by_ref().count();
                            g.dropped += n as u64;
                            report.dropped += n;
                        }
                        FullPolicy::DropOldest => {
                            g.queue.pop_front();
                            g.head_seq += 1;
                            if g.cursor < g.head_seq {
                                g.cursor = g.head_seq;
                            }
                            g.dropped += 1;
                            report.dropped += 1;
                        }
                    }
                }
            }
            self.data.notify_waiters();
            self.data.notify_one();
            if pending.peek().is_some() {
                // Block policy: wait for an ack to free space.
                space_freed.await;
            }
        }
        Ok(report)
    }

    async fn read(&self, max: usize) -> Result<Batch, StorageError> {
        let max = max.max(1);
        loop {
            let notified = self.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut g = self.lock();
                let start = (g.cursor - g.head_seq) as usize;
                if start < g.queue.len() {
                    let end = (start + max).min(g.queue.len());
                    let records: Vec<Record> = g.queue.range(start..end).cloned().collect();
                    let first_seq = g.cursor;
                    g.cursor += records.len() as u64;
                    return Ok(Batch { first_seq, records });
                }
            }
            notified.await;
        }
    }

    async fn ack(&self, through_seq: u64) -> Result<(), StorageError> {
        {
            let mut g = self.lock();
            while g.head_seq <= through_seq && !g.queue.is_empty() {
                g.queue.pop_front();
                g.head_seq += 1;
                g.acked += 1;
            }
            if g.cursor < g.head_seq {
                g.cursor = g.head_seq;
            }
        }
        self.space.notify_waiters();
        Ok(())
    }

    fn rewind(&self) {
        let mut g = self.lock();
        g.cursor = g.head_seq;
        drop(g);
        self.data.notify_waiters();
    }

    fn stats(&self) -> StorageStats {
        let g = self.lock();
        StorageStats {
            len: g.queue.len(),
            stored: g.stored,
            acked: g.acked,
            dropped: g.dropped,
            ..StorageStats::default()
        }
    }

    fn read_batch_size(&self) -> usize {
        self.read_batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec(n: usize) -> Vec<DeviceData> {
        (0..n)
            .map(|i| {
                let mut d = DeviceData::new(format!("d{i}"), "default");
                d.push_attribute("i", (i as i64).into());
                d
            })
            .collect()
    }

    #[tokio::test]
    async fn nothing_is_deleted_before_the_ack_and_rewind_rereads() {
        let s = MemoryStorage::new(10, 3, FullPolicy::Block);
        s.put(rec(5)).await.unwrap();
        let b1 = s.read(3).await.unwrap();
        assert_eq!((b1.first_seq, b1.records.len()), (1, 3));
        let b2 = s.read(3).await.unwrap();
        assert_eq!((b2.first_seq, b2.records.len()), (4, 2));
        s.ack(b1.last_seq()).await.unwrap();
        assert_eq!(s.stats().len, 2);
        s.rewind();
        let again = s.read(10).await.unwrap();
        assert_eq!(again.first_seq, 4);
        assert_eq!(again.records[0].device_name, "d3");
    }

    #[tokio::test]
    async fn drop_newest_rejects_and_counts() {
        let s = MemoryStorage::new(3, 10, FullPolicy::DropNewest);
        let r = s.put(rec(5)).await.unwrap();
        assert_eq!((r.stored, r.dropped), (3, 2));
        assert_eq!(s.stats().dropped, 2);
        assert_eq!(s.read(10).await.unwrap().records[2].device_name, "d2");
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_most_recent() {
        let s = MemoryStorage::new(3, 10, FullPolicy::DropOldest);
        let r = s.put(rec(5)).await.unwrap();
        assert_eq!((r.stored, r.dropped), (5, 2));
        let b = s.read(10).await.unwrap();
        assert_eq!(b.first_seq, 3);
        assert_eq!(b.records[0].device_name, "d2");
    }

    #[tokio::test]
    async fn block_waits_for_an_ack() {
        let s = Arc::new(MemoryStorage::new(2, 10, FullPolicy::Block));
        s.put(rec(2)).await.unwrap();
        let s2 = s.clone();
        let put = tokio::spawn(async move { s2.put(rec(1)).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!put.is_finished(), "put must block while full");
        let b = s.read(1).await.unwrap();
        s.ack(b.last_seq()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), put)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.stored, 1);
        assert_eq!(s.stats().len, 2);
    }

    #[tokio::test]
    async fn read_waits_for_data() {
        let s = Arc::new(MemoryStorage::new(2, 10, FullPolicy::Block));
        let s2 = s.clone();
        let reader = tokio::spawn(async move { s2.read(5).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.put(rec(1)).await.unwrap();
        let b = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.records.len(), 1);
    }
}
