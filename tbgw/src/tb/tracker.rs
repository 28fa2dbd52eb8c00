//! Matching every QoS 1 publish to its PUBACK before storage is acknowledged.
//!
//! rumqttc's `publish` does not return a packet id. The client owns the event loop, so it
//! sees requests leave in the order it queued them: each queued publish pushes a [`Token`];
//! `Outgoing::Publish(pkid)` pops the oldest token and files it under `pkid`; the PUBACK for
//! `pkid` completes it. Batches complete in storage order: a batch is acknowledged to storage
//! only when it and every batch before it have all their publishes confirmed.
//!
//! The tracker lives for one MQTT session. When the connection is lost, it is dropped whole and
//! storage is rewound, so everything unconfirmed is read and published again.

use std::collections::{HashMap, VecDeque};

/// What a publish belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// A payload of the storage batch with this id.
    Batch(u64),
    /// Anything else (device connect, RPC reply, ...).
    Other,
}

#[derive(Debug)]
struct BatchState {
    id: u64,
    /// Sequence number to acknowledge to storage once complete.
    last_seq: u64,
    records: usize,
    outstanding: usize,
}

/// A batch that is fully confirmed: acknowledge storage through `last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completed {
    pub last_seq: u64,
    pub records: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    awaiting_pkid: VecDeque<Token>,
    inflight: HashMap<u16, Token>,
    batches: VecDeque<BatchState>,
    next_batch: u64,
}

impl Tracker {
    /// Registers a batch that will be published as `publishes` payloads.
    pub(crate) fn begin_batch(&mut self, last_seq: u64, records: usize, publishes: usize) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.push_back(BatchState {
            id,
            last_seq,
            records,
            outstanding: publishes,
        });
        id
    }

    /// A publish was handed to the MQTT client.
    pub(crate) fn queued(&mut self, token: Token) {
        self.awaiting_pkid.push_back(token);
    }

    /// The event loop wrote a publish with this packet id (0 for QoS 0, which is complete as
    /// soon as it is written).
    pub(crate) fn on_outgoing(&mut self, pkid: u16) -> Vec<Completed> {
        let Some(token) = self.awaiting_pkid.pop_front() else {
            return Vec::new();
        };
        if pkid == 0 {
            self.complete(token)
        } else {
            self.inflight.insert(pkid, token);
            Vec::new()
        }
    }

    /// A PUBACK arrived.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Vec<Completed> {
        match self.inflight.remove(&pkid) {
            Some(token) => self.complete(token),
            None => Vec::new(),
        }
    }

    fn complete(&mut self, token: Token) -> Vec<Completed> {
        if let Token::Batch(id) = token {
            if let Some(b) = self.batches.iter_mut().find(|b| b.id == id) {
                b.outstanding = b.outstanding.saturating_sub(1);
            }
        }
        self.pop_done()
    }

    fn pop_done(&mut self) -> Vec<Completed> {
        let mut done = Vec::new();
        while self.batches.front().is_some_and(|b| b.outstanding == 0) {
            let b = self.batches.pop_front().expect("front checked above");
            done.push(Completed {
                last_seq: b.last_seq,
                records: b.records,
            });
        }
        done
    }

    /// Publishes not yet confirmed.
    pub(crate) fn pending(&self) -> usize {
        self.awaiting_pkid.len() + self.inflight.len()
    }

    /// Batches not yet confirmed.
    pub(crate) fn pending_batches(&self) -> usize {
        self.batches.len()
    }

    /// Completes batches that needed no publish at all (empty after packing).
    pub(crate) fn drain_empty(&mut self) -> Vec<Completed> {
        self.pop_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_complete_in_order_even_when_acks_do_not() {
        let mut t = Tracker::default();
        let b0 = t.begin_batch(10, 10, 2);
        let b1 = t.begin_batch(20, 10, 1);
        t.queued(Token::Batch(b0));
        t.queued(Token::Other);
        t.queued(Token::Batch(b0));
        t.queued(Token::Batch(b1));
        for pkid in 1..=4 {
            assert!(t.on_outgoing(pkid).is_empty());
        }
        assert!(t.on_puback(4).is_empty(), "b1 done but b0 is not");
        assert!(t.on_puback(2).is_empty());
        assert!(t.on_puback(1).is_empty());
        let done = t.on_puback(3);
        assert_eq!(
            done.iter().map(|c| c.last_seq).collect::<Vec<_>>(),
            vec![10, 20]
        );
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn qos0_completes_when_written_and_unknown_pubacks_are_ignored() {
        let mut t = Tracker::default();
        let b = t.begin_batch(5, 5, 1);
        t.queued(Token::Batch(b));
        assert!(t.on_puback(9).is_empty());
        assert_eq!(
            t.on_outgoing(0),
            vec![Completed {
                last_seq: 5,
                records: 5
            }]
        );
    }
}
