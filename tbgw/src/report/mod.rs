//! The report strategy service: decides, value by value, what the gateway forwards to
//! ThingsBoard, and produces the periodic reports.
//!
//! Upstream's `reportStrategy` (see `docs/REPORT_STRATEGY.md`): every telemetry value and
//! attribute is filtered by the strategy of its key, found in this order (most specific
//! first):
//!
//! 1. datapoint: [`ReportOverrides::keys`], attached by the connector to [`DeviceData::report`];
//! 2. device: [`ReportOverrides::device`] (an MQTT mapping, a Modbus slave, an OPC-UA device);
//! 3. connector: the connector file's top-level `reportStrategy` (or the legacy
//!    `sendDataOnlyOnChange: true`), see [`connector_strategy`];
//! 4. general: `thingsboard.reportStrategy`;
//! 5. `ON_RECEIVED`.
//!
//! A general `DISABLED` switches the service off: everything passes, whatever the lower
//! levels say (as upstream, which then does not start the service).
//!
//! | type | on a value | every `reportPeriod` |
//! |---|---|---|
//! | `ON_RECEIVED` | forwarded | – |
//! | `ON_CHANGE` | forwarded when it differs from the last forwarded value | – |
//! | `ON_REPORT_PERIOD` | the first forwarded, later ones kept | the latest value, or the aggregate |
//! | `ON_CHANGE_OR_REPORT_PERIOD` | forwarded on change (the period restarts) | as above |
//!
//! Values are compared per (connector, device, telemetry/attribute, key): numbers with a
//! tolerance of 0.001 when one of them is a float, everything else exactly. A periodic
//! report carries the time of the report as its timestamp (as upstream).
//!
//! # Aggregation
//!
//! With `aggregationFunction` other than `NONE`, a periodic report sends the aggregate of
//! the values received since the key was last reported (values forwarded at once, the
//! first one and changes, are not counted again): `SUM`, `MIN`, `MAX` over the numeric
//! values (an integer when every number was an integer, else a float), `AVERAGE` (a float),
//! `COUNT` (values of any type). When a period received no value, nothing is sent: an
//! aggregate of nothing would be invented data (a `SUM` of 0, a `MIN` of what?), and
//! re-sending the previous aggregate would count the same values twice. Without a function
//! (`NONE`) the latest value is re-sent, as upstream does. When values arrived but none is
//! numeric (a string key under a device-level `AVERAGE`), the latest value is sent.
//!
//! # Memory
//!
//! Only keys whose strategy is not `ON_RECEIVED` are cached: one entry per (connector,
//! device, kind, key), about 300 bytes (slot and index) plus the key's name and the heap part
//! of two values (last forwarded, latest), whatever the number of values received (aggregates are
//! running sums). The cache holds at most [`DEFAULT_MAX_ENTRIES`] entries (about 30 MB with
//! short keys and numeric values) unless [`ReportFilter::with_max_entries`] says otherwise; when it is
//! full, expired entries are dropped, then the least recently updated eighth
//! ([`CacheStats::evicted`] counts them). An evicted key loses nothing but its memory: its
//! next value is a first value again and is forwarded. Entries expire after `ttl` seconds
//! without a value (`ttl: 0` = never): checked when a value arrives, when a periodic
//! report is due, and by a sweep every minute.

mod cache;
mod value;

use std::collections::HashMap;

use crate::config::report as config;
use crate::config::{ReportStrategyConfig, ReportType};
use crate::model::DeviceData;

pub use cache::CacheStats;
pub use config::{
    connector_strategy, legacy_on_change, parse_strategy, validate, ReportOverrides, CONNECTOR_KEYS,
};

use cache::{Cache, Kind, Verdict};

/// Default bound of the cache, in entries.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// The report strategy filter. The gateway's ingest task owns it: [`apply`](Self::apply)
/// each record before storage, and at [`next_due`](Self::next_due) store what
/// [`due`](Self::due) returns. Single-threaded, no locks, no timers of its own: time is
/// passed in (ms since the Unix epoch).
#[derive(Debug)]
pub struct ReportFilter {
    general: ReportStrategyConfig,
    /// General `DISABLED`: everything passes.
    disabled: bool,
    connectors: HashMap<String, ReportStrategyConfig>,
    /// A record with overrides was seen: the filter can no longer be skipped.
    seen_overrides: bool,
    cache: Cache,
}

impl ReportFilter {
    /// A filter with the general level (`thingsboard.reportStrategy`, `ON_RECEIVED` when
    /// `None`) and the connector levels (connector name → strategy, from
    /// [`connector_strategy`]).
    pub fn new(
        general: Option<ReportStrategyConfig>,
        connectors: HashMap<String, ReportStrategyConfig>,
    ) -> Self {
        let general = general.unwrap_or_default();
        ReportFilter {
            disabled: general.kind == ReportType::Disabled,
            general,
            connectors,
            seen_overrides: false,
            cache: Cache::new(DEFAULT_MAX_ENTRIES),
        }
    }

    /// Bounds the cache to `max` entries (at least 1).
    pub fn with_max_entries(mut self, max: usize) -> Self {
        self.cache.set_max_entries(max);
        self
    }

    /// True when nothing can be filtered: the general level is `DISABLED`, or it is
    /// `ON_RECEIVED` with no connector level and no record with overrides seen yet. The
    /// gateway may then skip [`apply`](Self::apply) for records without overrides
    /// ([`DeviceData::report`] is `None`), which it would return as they are. A record with
    /// overrides must go through `apply` (that is how the filter learns of them); with a
    /// general `DISABLED` even those may skip it.
    pub fn is_passthrough(&self) -> bool {
        self.disabled
            || (self.general.kind == ReportType::OnReceived
                && self.connectors.is_empty()
                && !self.seen_overrides)
    }

    /// Sets (or with `None` removes) the connector level of `connector`, for a connector
    /// added or reloaded while the gateway runs. Cached entries keep their values; their
    /// strategy changes with their next value.
    pub fn set_connector_strategy(&mut self, connector: &str, s: Option<ReportStrategyConfig>) {
        match s {
            Some(s) => {
                self.connectors.insert(connector.to_string(), s);
            }
            None => {
                self.connectors.remove(connector);
            }
        }
    }

    /// Filters one record of `connector`: returns what to forward now (`None` when nothing
    /// is left), and caches what the periodic types need. The record's
    /// [`report`](DeviceData::report) overrides are consumed (the result has none).
    pub fn apply(
        &mut self,
        connector: &str,
        mut data: DeviceData,
        now_ms: i64,
    ) -> Option<DeviceData> {
        if self.disabled {
            return Some(data);
        }
        let overrides = data.report.take();
        if overrides.is_some() {
            self.seen_overrides = true;
        }
        let base = self.connectors.get(connector).unwrap_or(&self.general);
        if overrides.is_none() && matches!(base.kind, ReportType::OnReceived | ReportType::Disabled)
        {
            return Some(data);
        }
        let resolve = |key: &str| -> &ReportStrategyConfig {
            overrides
                .as_deref()
                .and_then(|o| o.strategy_for(key))
                .unwrap_or(base)
        };
        let cache = &mut self.cache;
        let DeviceData {
            device_name,
            device_type,
            telemetry,
            attributes,
            ..
        } = &mut data;
        for entry in telemetry.iter_mut() {
            entry.values.retain(|(k, v)| {
                matches!(
                    cache.observe(
                        connector,
                        device_name,
                        device_type,
                        Kind::Telemetry,
                        k,
                        v,
                        resolve(k),
                        now_ms
                    ),
                    Verdict::Forward
                )
            });
        }
        telemetry.retain(|e| !e.values.is_empty());
        attributes.retain(|(k, v)| {
            matches!(
                cache.observe(
                    connector,
                    device_name,
                    device_type,
                    Kind::Attribute,
                    k,
                    v,
                    resolve(k),
                    now_ms
                ),
                Verdict::Forward
            )
        });
        if data.is_empty() {
            None
        } else {
            Some(data)
        }
    }

    /// When [`due`](Self::due) next has something to do (a periodic report or the TTL
    /// sweep), in ms; `None` when nothing is cached. It may be early, never late.
    pub fn next_due(&self) -> Option<i64> {
        if self.disabled {
            return None;
        }
        self.cache.next_due()
    }

    /// The periodic reports due at `now_ms`, one record per (connector, device), with
    /// telemetry stamped `now_ms`; drops the entries whose TTL expired. Store the records
    /// as they are: do not pass them to [`apply`](Self::apply) again.
    pub fn due(&mut self, now_ms: i64) -> Vec<(String, DeviceData)> {
        if self.disabled {
            return Vec::new();
        }
        self.cache.due(now_ms)
    }

    /// Forgets everything cached for `connector` (it was stopped or removed). Its connector
    /// level stays; see [`set_connector_strategy`](Self::set_connector_strategy).
    pub fn purge_connector(&mut self, connector: &str) {
        self.cache.purge_connector(connector);
    }

    /// Cache counters: entries, evictions, expiries.
    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

#[cfg(test)]
mod tests;
