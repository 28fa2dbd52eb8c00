//! What the durable storages (file, SQLite, RocksDB) share about group commit: when the next
//! fsync is due, and waiting for durability.
//!
//! Each storage fsyncs on a thread of its own at most `interval` after the first unsynced
//! write. While somebody waits in [`EventStorage::wait_durable`](super::EventStorage) (the
//! gateway does for every MQTT message it has to acknowledge), the fsync comes within
//! [`SYNC_GAP`] of the previous one instead, and everything written meanwhile joins it, so a
//! source with a small in-flight window is bound by the fsync latency rather than by the
//! interval (mosquitto's default window of 20 every 100 ms would be 200 msg/s).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::StorageError;

/// Shortest time between two fsyncs started because somebody waits: at most 200 a second,
/// for CPU and flash wear, while a 20-message window still reaches ~4,000 messages a second.
pub(crate) const SYNC_GAP: Duration = Duration::from_millis(5);

/// When the next fsync is due: `interval` after the first unsynced write (`unsynced_since`),
/// and no later than [`SYNC_GAP`] after the previous fsync while somebody waits. `None`: no
/// deadline.
pub(crate) fn sync_due(
    unsynced_since: Option<Instant>,
    interval: Duration,
    waited_for: bool,
    last_sync: Instant,
) -> Option<Instant> {
    let due = unsynced_since.map(|t| t + interval);
    if waited_for {
        let soon = last_sync + SYNC_GAP;
        Some(due.map_or(soon, |t| t.min(soon)))
    } else {
        due
    }
}

/// Waits until `durable` reaches `seq`. Before waiting it raises the storage's "somebody
/// waits for" mark (`wanted`, in the state behind `state`) to `seq` and wakes its group-commit
/// thread (`cv`); `closed` says whether the storage was closed.
pub(crate) async fn wait_durable<S>(
    durable: &watch::Sender<u64>,
    seq: u64,
    state: &Mutex<S>,
    cv: &Condvar,
    wanted: impl Fn(&mut S) -> &mut u64,
    closed: impl Fn(&S) -> bool,
) -> Result<(), StorageError> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let mut rx = durable.subscribe();
    if *rx.borrow() < seq {
        let mut g = lock();
        let w = wanted(&mut g);
        if *w < seq {
            *w = seq;
            drop(g);
            cv.notify_all();
        }
    }
    loop {
        if *rx.borrow_and_update() >= seq {
            return Ok(());
        }
        if closed(&lock()) {
            return Err(StorageError::Closed);
        }
        if rx.changed().await.is_err() {
            return Err(StorageError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_brings_the_fsync_forward_never_back() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(100);
        assert_eq!(sync_due(None, interval, false, t0), None);
        assert_eq!(sync_due(Some(t0), interval, false, t0), Some(t0 + interval));
        assert_eq!(sync_due(Some(t0), interval, true, t0), Some(t0 + SYNC_GAP));
        assert_eq!(sync_due(None, interval, true, t0), Some(t0 + SYNC_GAP));
        // An interval shorter than the gap still wins.
        let short = Duration::from_millis(1);
        assert_eq!(sync_due(Some(t0), short, true, t0), Some(t0 + short));
    }
}
