//! The cache behind [`ReportFilter`](super::ReportFilter): one entry per (connector, device,
//! telemetry or attribute, key) whose strategy is not `ON_RECEIVED`.
//!
//! Entries live in a slab (`slots`) addressed by index, found through nested maps
//! connector → device → key, so a lookup hashes borrowed `&str`s and allocates nothing.
//! Periodic entries have one item each in a min-heap of `(due time, slot, generation)`;
//! an item whose slot was freed (the generation moved on) or whose entry was rescheduled
//! later is dropped or pushed again when it comes out, so the heap never needs a search.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::config::{AggregationFunction, ReportStrategyConfig, ReportType};
use crate::model::{DeviceData, TelemetryEntry, Value};

use super::config::is_periodic;
use super::value::{changed, Accumulator};

/// How often entries that are never reported periodically are checked for TTL expiry.
pub(crate) const SWEEP_INTERVAL_MS: i64 = 60_000;

/// Telemetry or attribute: a telemetry key `x` and an attribute `x` are different entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Telemetry,
    Attribute,
}

#[derive(Debug, Default)]
struct DeviceIndex {
    device_type: Arc<str>,
    telemetry: HashMap<Arc<str>, u32>,
    attributes: HashMap<Arc<str>, u32>,
}

impl DeviceIndex {
    fn map(&mut self, kind: Kind) -> &mut HashMap<Arc<str>, u32> {
        match kind {
            Kind::Telemetry => &mut self.telemetry,
            Kind::Attribute => &mut self.attributes,
        }
    }
    fn is_empty(&self) -> bool {
        self.telemetry.is_empty() && self.attributes.is_empty()
    }
}

#[derive(Debug)]
struct Entry {
    connector: Arc<str>,
    device: Arc<str>,
    kind: Kind,
    key: Arc<str>,
    strategy: ReportStrategyConfig,
    /// The last value forwarded (what ON_CHANGE compares with).
    last_sent: Value,
    /// The last value received (what a period re-sends).
    latest: Value,
    /// Values received since the key was last reported, for the aggregation function.
    acc: Accumulator,
    /// When a value for the key last arrived (TTL runs from here), ms.
    last_received: i64,
    /// When the next periodic report is due (periodic types only), ms.
    next_report: Option<i64>,
    /// The heap holds an item for this entry.
    scheduled: bool,
}

impl Entry {
    fn expired(&self, now: i64) -> bool {
        self.strategy.ttl > 0
            && now.saturating_sub(self.last_received)
                >= (self.strategy.ttl as i64).saturating_mul(1000)
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Counters of the cache, for logs and statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries in the cache now.
    pub entries: usize,
    /// Entries dropped because the cache was full (least recently updated first).
    pub evicted: u64,
    /// Entries dropped because no value arrived for `ttl` seconds.
    pub expired: u64,
}

#[derive(Debug)]
pub(crate) struct Cache {
    index: HashMap<Arc<str>, HashMap<Arc<str>, DeviceIndex>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    len: usize,
    heap: BinaryHeap<Reverse<(i64, u32, u32)>>,
    next_sweep: Option<i64>,
    max_entries: usize,
    evicted: u64,
    expired: u64,
}

/// What [`Cache::observe`] decided for one value.
pub(crate) enum Verdict {
    /// Forward the value now.
    Forward,
    /// Keep it back.
    Hold,
}

impl Cache {
    pub(crate) fn new(max_entries: usize) -> Self {
        Cache {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            heap: BinaryHeap::new(),
            next_sweep: None,
            max_entries: max_entries.max(1),
            evicted: 0,
            expired: 0,
        }
    }

    pub(crate) fn set_max_entries(&mut self, max: usize) {
        self.max_entries = max.max(1);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.len,
            evicted: self.evicted,
            expired: self.expired,
        }
    }

    fn find(&self, connector: &str, device: &str, kind: Kind, key: &str) -> Option<u32> {
        let d = self.index.get(connector)?.get(device)?;
        match kind {
            Kind::Telemetry => d.telemetry.get(key).copied(),
            Kind::Attribute => d.attributes.get(key).copied(),
        }
    }

    fn entry_mut(&mut self, slot: u32) -> Option<&mut Entry> {
        self.slots.get_mut(slot as usize)?.entry.as_mut()
    }

    /// Decides what to do with one received value whose strategy is `s`, and records it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe(
        &mut self,
        connector: &str,
        device: &str,
        device_type: &str,
        kind: Kind,
        key: &str,
        value: &Value,
        s: &ReportStrategyConfig,
        now: i64,
    ) -> Verdict {
        let found = self.find(connector, device, kind, key);
        if matches!(s.kind, ReportType::OnReceived | ReportType::Disabled) {
            // Nothing to remember; an entry left from an earlier strategy is dropped.
            if let Some(slot) = found {
                self.remove(slot);
            }
            return Verdict::Forward;
        }
        let slot = match found {
            Some(slot) if self.entry_mut(slot).is_some_and(|e| !e.expired(now)) => slot,
            Some(slot) => {
                // Expired but not swept yet: the value is a first value again.
                self.expired += 1;
                self.remove(slot);
                self.insert(connector, device, device_type, kind, key, value, s, now);
                return Verdict::Forward;
            }
            None => {
                self.insert(connector, device, device_type, kind, key, value, s, now);
                return Verdict::Forward;
            }
        };
        let mut schedule = None;
        let Some(e) = self.entry_mut(slot) else {
            return Verdict::Forward;
        };
        e.last_received = now;
        if e.strategy != *s {
            // The strategy of the key changed (new overrides, reloaded connector).
            e.strategy = s.clone();
            if !is_periodic(s.kind) {
                e.next_report = None;
            } else if e.next_report.is_none() {
                e.next_report = Some(now.saturating_add(period(s)));
            }
        }
        let verdict = match s.kind {
            ReportType::OnChange => {
                if changed(&e.last_sent, value) {
                    e.last_sent = value.clone();
                    e.latest = value.clone();
                    Verdict::Forward
                } else {
                    Verdict::Hold
                }
            }
            ReportType::OnReportPeriod => {
                e.latest = value.clone();
                e.acc.add(value);
                Verdict::Hold
            }
            ReportType::OnChangeOrReportPeriod => {
                e.latest = value.clone();
                if changed(&e.last_sent, value) {
                    // Forwarded now: the period starts again from here.
                    e.last_sent = value.clone();
                    e.acc.reset();
                    e.next_report = Some(now.saturating_add(period(s)));
                    Verdict::Forward
                } else {
                    e.acc.add(value);
                    Verdict::Hold
                }
            }
            ReportType::OnReceived | ReportType::Disabled => Verdict::Forward,
        };
        if let (Some(due), false) = (e.next_report, e.scheduled) {
            e.scheduled = true;
            schedule = Some(due);
        }
        if let Some(due) = schedule {
            let generation = self.slots[slot as usize].generation;
            self.heap.push(Reverse((due, slot, generation)));
        }
        verdict
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        connector: &str,
        device: &str,
        device_type: &str,
        kind: Kind,
        key: &str,
        value: &Value,
        s: &ReportStrategyConfig,
        now: i64,
    ) {
        if self.len >= self.max_entries {
            self.make_room(now);
        }
        // Index: connector → device → key, creating what is missing.
        let conn_key = match self.index.get_key_value(connector) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(connector);
                self.index.insert(k.clone(), HashMap::new());
                k
            }
        };
        let devices = self
            .index
            .get_mut(connector)
            .expect("the connector map was just found or inserted");
        let dev = match devices.get_key_value(device) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(device);
                devices.insert(
                    k.clone(),
                    DeviceIndex {
                        device_type: Arc::from(device_type),
                        ..DeviceIndex::default()
                    },
                );
                k
            }
        };
        let di = devices
            .get_mut(device)
            .expect("the device map was just found or inserted");
        if &*di.device_type != device_type {
            di.device_type = Arc::from(device_type);
        }
        let key: Arc<str> = Arc::from(key);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        di.map(kind).insert(key.clone(), slot);
        let next_report = is_periodic(s.kind).then(|| now.saturating_add(period(s)));
        let generation = self.slots[slot as usize].generation;
        self.slots[slot as usize].entry = Some(Entry {
            connector: conn_key,
            device: dev,
            kind,
            key,
            strategy: s.clone(),
            last_sent: value.clone(),
            latest: value.clone(),
            acc: Accumulator::default(),
            last_received: now,
            next_report,
            scheduled: next_report.is_some(),
        });
        if let Some(due) = next_report {
            self.heap.push(Reverse((due, slot, generation)));
        }
        self.len += 1;
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now.saturating_add(SWEEP_INTERVAL_MS));
        }
    }

    /// Frees one slot and its index entries. Heap items of the slot become stale.
    fn remove(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(e) = s.entry.take() else { return };
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.len -= 1;
        if let Some(devices) = self.index.get_mut(&*e.connector) {
            if let Some(d) = devices.get_mut(&*e.device) {
                d.map(e.kind).remove(&*e.key);
                if d.is_empty() {
                    devices.remove(&*e.device);
                }
            }
            if devices.is_empty() {
                self.index.remove(&*e.connector);
            }
        }
        if self.len == 0 {
            self.next_sweep = None;
            self.heap.clear();
        }
    }

    /// The cache is full: drop expired entries, then the least recently updated eighth.
    fn make_room(&mut self, now: i64) {
        self.sweep(now);
        if self.len < self.max_entries {
            return;
        }
        let mut ages: Vec<(i64, u32)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_ref().map(|e| (e.last_received, i as u32)))
            .collect();
        let n = (self.max_entries / 8).max(1).min(ages.len());
        if n < ages.len() {
            ages.select_nth_unstable(n);
        }
        for &(_, slot) in &ages[..n] {
            self.remove(slot);
        }
        self.evicted += n as u64;
        tracing::warn!(
            evicted = n,
            max_entries = self.max_entries,
            "Report strategy cache is full; the least recently updated entries were dropped."
        );
    }

    /// Drops every expired entry.
    fn sweep(&mut self, now: i64) {
        let expired: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.as_ref().is_some_and(|e| e.expired(now)))
            .map(|(i, _)| i as u32)
            .collect();
        self.expired += expired.len() as u64;
        for slot in expired {
            self.remove(slot);
        }
    }

    /// Drops every entry of `connector`.
    pub(crate) fn purge_connector(&mut self, connector: &str) {
        let Some(devices) = self.index.get(connector) else {
            return;
        };
        let slots: Vec<u32> = devices
            .values()
            .flat_map(|d| d.telemetry.values().chain(d.attributes.values()).copied())
            .collect();
        for slot in slots {
            self.remove(slot);
        }
        self.index.remove(connector);
    }

    /// The earliest time [`Cache::due`] has something to do (a report, or a TTL sweep).
    pub(crate) fn next_due(&self) -> Option<i64> {
        let report = self.heap.peek().map(|Reverse((t, _, _))| *t);
        match (report, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The periodic reports due at `now`, grouped per (connector, device), and the TTL sweep.
    pub(crate) fn due(&mut self, now: i64) -> Vec<(String, DeviceData)> {
        let mut out: Vec<(String, DeviceData)> = Vec::new();
        let mut groups: HashMap<(Arc<str>, Arc<str>), usize> = HashMap::new();
        while let Some(&Reverse((t, slot, generation))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            let Some(s) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            let Some(e) = s.entry.as_mut() else { continue };
            e.scheduled = false;
            if e.expired(now) {
                self.expired += 1;
                self.remove(slot);
                continue;
            }
            let Some(due) = e.next_report else { continue };
            if due > now {
                // Rescheduled later (a change was forwarded): wait again.
                e.scheduled = true;
                self.heap.push(Reverse((due, slot, generation)));
                continue;
            }
            let value = match e.strategy.aggregation_function {
                AggregationFunction::None => Some(e.latest.clone()),
                f => e.acc.result(f).or_else(|| {
                    // Values arrived but none the function can use (strings under SUM):
                    // the latest value, as without a function.
                    (!e.acc.is_empty()).then(|| e.latest.clone())
                }),
            };
            e.acc.reset();
            let p = period(&e.strategy);
            let mut next = due.saturating_add(p);
            if next <= now {
                // Late by more than a period: skip the missed ones rather than burst.
                next = now.saturating_add(p);
            }
            e.next_report = Some(next);
            e.scheduled = true;
            self.heap.push(Reverse((next, slot, generation)));
            let Some(value) = value else { continue };
            if e.strategy.aggregation_function == AggregationFunction::None {
                e.last_sent = value.clone();
            }
            let (connector, device, kind, key) =
                (e.connector.clone(), e.device.clone(), e.kind, e.key.clone());
            let i = match groups.get(&(connector.clone(), device.clone())) {
                Some(&i) => i,
                None => {
                    let device_type = self
                        .index
                        .get(&*connector)
                        .and_then(|d| d.get(&*device))
                        .map(|d| d.device_type.to_string())
                        .unwrap_or_else(|| "default".into());
                    out.push((
                        connector.to_string(),
                        DeviceData::new(device.to_string(), device_type),
                    ));
                    groups.insert((connector, device), out.len() - 1);
                    out.len() - 1
                }
            };
            let data = &mut out[i].1;
            match kind {
                Kind::Telemetry => match data.telemetry.first_mut() {
                    Some(entry) => entry.values.push((key.to_string(), value)),
                    None => data
                        .telemetry
                        .push(TelemetryEntry::new(now, vec![(key.to_string(), value)])),
                },
                Kind::Attribute => data.attributes.push((key.to_string(), value)),
            }
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep(now);
            self.next_sweep = (self.len > 0).then(|| now.saturating_add(SWEEP_INTERVAL_MS));
        }
        out
    }
}

/// The report period in ms, at least 1 so a period can never spin.
fn period(s: &ReportStrategyConfig) -> i64 {
    (s.report_period.max(1)).min(i64::MAX as u64) as i64
}
