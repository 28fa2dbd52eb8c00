//! Which of our publishes to the source broker has been acknowledged.
//!
//! rumqttc does not tell which `publish` call got which packet id; it reports
//! `Outgoing::Publish(pkid)` in the order it takes publishes from its request queue, and
//! `PubAck(pkid)` / `PubRec(pkid)` when the broker confirms. The connector is the only one that
//! publishes, so the n-th `Outgoing::Publish` is the n-th publish queued. After a lost
//! connection rumqttc replays unconfirmed publishes only when the broker resumed the session;
//! those replays are skipped so the order stays right.

use std::collections::{HashMap, VecDeque};

/// Tracks queued and in-flight publishes, each with an optional waiter `W`.
#[derive(Debug)]
pub(super) struct PublishTracker<W> {
    queued: VecDeque<(u8, Option<W>)>,
    inflight: HashMap<u16, Option<W>>,
    /// Publishes rumqttc may replay after the next reconnect.
    stale: usize,
    /// `Outgoing::Publish` events still to skip (replays).
    skip: usize,
}

impl<W> Default for PublishTracker<W> {
    fn default() -> Self {
        PublishTracker {
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            stale: 0,
            skip: 0,
        }
    }
}

impl<W> PublishTracker<W> {
    /// A publish of `qos` was handed to rumqttc.
    pub fn queued(&mut self, qos: u8, waiter: Option<W>) {
        self.queued.push_back((qos, waiter));
    }

    /// rumqttc wrote a publish with `pkid`; returns the waiter of a QoS 0 publish, which is
    /// done once written.
    pub fn sent(&mut self, pkid: u16) -> Option<W> {
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        let (qos, waiter) = self.queued.pop_front()?;
        if qos == 0 {
            return waiter;
        }
        self.inflight.insert(pkid, waiter);
        None
    }

    /// The broker confirmed `pkid` (PUBACK, or PUBREC for QoS 2).
    pub fn acked(&mut self, pkid: u16) -> Option<W> {
        self.inflight.remove(&pkid).flatten()
    }

    /// The connection was lost: returns every waiter (they failed).
    pub fn lost(&mut self) -> Vec<W> {
        self.stale += self.queued.len() + self.inflight.len();
        let mut out: Vec<W> = self.queued.drain(..).filter_map(|(_, w)| w).collect();
        out.extend(self.inflight.drain().filter_map(|(_, w)| w));
        out
    }

    /// Connected again; with a resumed session rumqttc replays what was unconfirmed.
    pub fn connected(&mut self, session_present: bool) {
        self.skip = if session_present { self.stale } else { 0 };
        self.stale = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_complete_on_write_for_qos0_and_on_ack_otherwise() {
        let mut t = PublishTracker::default();
        t.queued(0, Some("a"));
        t.queued(1, Some("b"));
        t.queued(1, None);
        assert_eq!(t.sent(0), Some("a"));
        assert_eq!(t.sent(5), None);
        assert_eq!(t.sent(6), None);
        assert_eq!(t.acked(6), None);
        assert_eq!(t.acked(5), Some("b"));
        assert_eq!(t.acked(5), None);
    }

    #[test]
    fn replays_after_a_resumed_session_are_skipped() {
        let mut t = PublishTracker::default();
        t.queued(1, Some("old"));
        assert_eq!(t.sent(1), None);
        t.queued(1, None);
        assert_eq!(t.lost(), vec!["old"]);
        t.connected(true);
        t.queued(1, Some("new"));
        // Two replays, then ours.
        assert_eq!(t.sent(1), None);
        assert_eq!(t.sent(2), None);
        assert_eq!(t.sent(3), None);
        assert_eq!(t.acked(3), Some("new"));

        let mut t = PublishTracker::default();
        t.queued(1, Some("old"));
        let _ = t.lost();
        t.connected(false);
        t.queued(1, Some("new"));
        assert_eq!(t.sent(1), None);
        assert_eq!(t.acked(1), Some("new"));
    }
}
