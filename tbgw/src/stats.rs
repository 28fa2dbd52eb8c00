//! Counters. Every stage counts what it received, passed on and dropped, so an operator can see
//! where data goes; [`GatewayStats::snapshot`] reads them all at once.
//!
//! From outside the crate the counters are read-only: [`Gateway::stats`](crate::Gateway::stats)
//! and [`Gateway::connector_stats`](crate::Gateway::connector_stats) hand out [`GatewayStats`]
//! and [`ConnectorStats`], which have getters only. A connector adds to its own counters
//! through the [`ConnectorCounters`] of its context
//! ([`ConnectorContext::stats`](crate::connector::ConnectorContext::stats)); the gateway keeps
//! the rest (`sent_to_storage`, `restarts`).

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($(#[doc = $doc:literal])* $field:ident => $add:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[doc = $doc])* pub(crate) $field: AtomicU64,)*
        }
        impl $name {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($field), "`.")]
                #[allow(dead_code)] // not every counter is kept by the core itself
                pub(crate) fn $add(&self, n: u64) { self.$field.fetch_add(n, Relaxed); }

                $(#[doc = $doc])*
                pub fn $field(&self) -> u64 { self.$field.load(Relaxed) }
            )*

            /// Every counter with its field name, in declaration order (for statistics
            /// telemetry and the Prometheus endpoint).
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Relaxed)),)*]
            }

            /// What a counter means (its documentation, one line), by field name; for the
            /// Prometheus endpoint's `# HELP` lines.
            pub fn help(field: &str) -> Option<String> {
                let doc: &'static str = match field {
                    $(stringify!($field) => concat!($($doc, "\n",)* ""),)*
                    _ => return None,
                };
                Some(doc.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
            }
        }
    };
}

counters! {
    /// Counters of one connector.
    ConnectorStats {
        /// Messages received from the field side.
        messages_received => add_messages_received,
        /// Device data records handed to storage.
        sent_to_storage => add_sent_to_storage,
        /// Payloads that could not be converted (malformed, missing keys, wrong types).
        convert_errors => add_convert_errors,
        /// Connection failures and other runtime errors.
        errors => add_errors,
        /// Times the connector was restarted after a failure.
        restarts => add_restarts,
        /// Downlink requests handled.
        downlink => add_downlink,
        /// Sub-tasks (`ConnectorContext::spawn`) that panicked or failed; each restarts the
        /// connector.
        task_failures => add_task_failures,
        /// Messages dropped because one of the connector's internal queues was full.
        queue_dropped => add_queue_dropped,
        /// Bytes received from the field side (payloads; counted where a connector sees them).
        bytes_received => add_bytes_received,
        /// Time series values handed to storage.
        ts_produced => add_ts_produced,
        /// Attributes handed to storage.
        attr_produced => add_attr_produced,
    }
}

counters! {
    /// Counters of the gateway core.
    GatewayStats {
        /// Device data records written to storage.
        stored => add_stored,
        /// Records dropped by the storage full policy.
        storage_dropped => add_storage_dropped,
        /// Storage errors.
        storage_errors => add_storage_errors,
        /// Records delivered to ThingsBoard (PUBACK received).
        delivered => add_delivered,
        /// MQTT publishes sent to ThingsBoard.
        publishes => add_publishes,
        /// Connections to ThingsBoard established.
        connects => add_connects,
        /// Connection failures or losses.
        connection_errors => add_connection_errors,
        /// Downlink messages received from ThingsBoard.
        downlink_received => add_downlink_received,
        /// Downlink messages that could not be parsed or routed.
        downlink_errors => add_downlink_errors,
        /// RPCs answered with a timeout error.
        rpc_timeouts => add_rpc_timeouts,
        /// Messages from ThingsBoard that were our own publishes echoed back by the broker.
        echoes_ignored => add_echoes_ignored,
        /// Device data records dropped by device filtering (deny/allow lists).
        devices_filtered => add_devices_filtered,
        /// Devices disconnected by the inactivity checker.
        inactivity_disconnects => add_inactivity_disconnects,
        /// Values held back by a report strategy (not changed, or waiting for their period).
        report_suppressed => add_report_suppressed,
        /// Periodic reports emitted by a report strategy.
        report_periodic => add_report_periodic,
        /// Service RPCs to the gateway device handled (`gateway_*`).
        service_rpcs => add_service_rpcs,
        /// Remote configuration updates applied.
        remote_config_applied => add_remote_config_applied,
        /// Remote configuration updates rejected or rolled back.
        remote_config_rejected => add_remote_config_rejected,
        /// Log records sent to ThingsBoard by remote logging.
        remote_log_records => add_remote_log_records,
        /// Log records dropped by remote logging (queue full).
        remote_log_dropped => add_remote_log_dropped,
        /// Times device data waited for a client-side rate limit window.
        rate_limited => add_rate_limited,
        /// Times ThingsBoard said a rate limit was hit (reason 150, quota exceeded).
        server_throttled => add_server_throttled,
        /// 1 while a session with ThingsBoard is ready, else 0 (a gauge, set by the client).
        thingsboard_connected => add_thingsboard_connected,
        /// Messages dropped because an internal queue was full: device connects and
        /// disconnects, RPC replies, attribute requests and gateway-device messages for the
        /// ThingsBoard client, and events for the services task.
        queue_dropped => add_queue_dropped,
        /// Time series values sent to ThingsBoard.
        platform_ts_produced => add_platform_ts_produced,
        /// Attributes sent to ThingsBoard.
        platform_attr_produced => add_platform_attr_produced,
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Records written to storage.
    pub stored: u64,
    /// Records dropped by the storage full policy.
    pub storage_dropped: u64,
    /// Records delivered to ThingsBoard.
    pub delivered: u64,
    /// Publishes sent.
    pub publishes: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection failures.
    pub connection_errors: u64,
    /// Downlink messages received.
    pub downlink_received: u64,
    /// Downlink messages dropped as malformed or unroutable.
    pub downlink_errors: u64,
}

impl GatewayStats {
    /// Reads the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            stored: self.stored.load(Relaxed),
            storage_dropped: self.storage_dropped.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            publishes: self.publishes.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connection_errors: self.connection_errors.load(Relaxed),
            downlink_received: self.downlink_received.load(Relaxed),
            downlink_errors: self.downlink_errors.load(Relaxed),
        }
    }
}

/// Lets one log line through per interval, for warnings that could otherwise flood the log
/// (a queue that stays full drops many messages).
#[derive(Debug)]
pub struct LogThrottle {
    every_ms: u64,
    /// When a line last went through (ms since the epoch; 0: never).
    last_ms: AtomicU64,
}

impl LogThrottle {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        LogThrottle {
            every_ms: every.as_millis() as u64,
            last_ms: AtomicU64::new(0),
        }
    }

    /// True if a line may be logged now (and then not again for the interval).
    pub fn allow(&self) -> bool {
        let now = u64::try_from(crate::model::now_millis()).unwrap_or(0);
        let last = self.last_ms.load(Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.every_ms)
            && self
                .last_ms
                .compare_exchange(last, now.max(1), Relaxed, Relaxed)
                .is_ok()
    }
}

/// How often a "queue full" drop is logged at most.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

static QUEUE_DROP_LOG: LogThrottle = LogThrottle::new(DROP_LOG_INTERVAL);

impl GatewayStats {
    /// Counts a message dropped because the internal queue `queue` was full, and logs a
    /// warning at most once per [`DROP_LOG_INTERVAL`] (with the total so far).
    pub(crate) fn queue_full(&self, queue: &'static str, message: &'static str) {
        self.add_queue_dropped(1);
        if QUEUE_DROP_LOG.allow() {
            tracing::warn!(
                queue,
                message,
                total_dropped = self.queue_dropped.load(Relaxed),
                "A message was dropped: an internal queue is full (counted in queue_dropped; \
                 logged at most every 10 s)."
            );
        }
    }
}

impl ConnectorStats {
    /// Reads a counter.
    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// The counters a connector keeps, as its [`ConnectorContext`](crate::connector::ConnectorContext)
/// hands them out: a cheap handle (clone it into sub-tasks) that adds to
/// `messages_received`, `convert_errors`, `errors` and `downlink`, and reads every counter of
/// its [`ConnectorStats`] (through `Deref`). `sent_to_storage` and `restarts` are kept by the
/// gateway.
#[derive(Debug, Clone)]
pub struct ConnectorCounters(Arc<ConnectorStats>);

impl ConnectorCounters {
    /// A handle on `stats`.
    pub(crate) fn new(stats: Arc<ConnectorStats>) -> ConnectorCounters {
        ConnectorCounters(stats)
    }

    /// Messages received from the field side (one per payload, poll or notification).
    pub fn add_messages_received(&self, n: u64) {
        self.0.add_messages_received(n);
    }

    /// Payloads that could not be converted (malformed, missing keys, wrong types).
    pub fn add_convert_errors(&self, n: u64) {
        self.0.add_convert_errors(n);
    }

    /// Connection failures and other runtime errors.
    pub fn add_errors(&self, n: u64) {
        self.0.add_errors(n);
    }

    /// Downlink requests (RPC, attribute updates) handled.
    pub fn add_downlink(&self, n: u64) {
        self.0.add_downlink(n);
    }

    /// Bytes received from the field side (payloads, where the connector sees them).
    pub fn add_bytes_received(&self, n: u64) {
        self.0.add_bytes_received(n);
    }

    /// Messages dropped because one of the connector's internal queues was full.
    pub fn add_queue_dropped(&self, n: u64) {
        self.0.add_queue_dropped(n);
    }

    /// The counters, shared with the gateway (read-only outside the crate).
    pub fn stats(&self) -> &Arc<ConnectorStats> {
        &self.0
    }
}

impl Deref for ConnectorCounters {
    type Target = ConnectorStats;

    fn deref(&self) -> &ConnectorStats {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_throttle_lets_one_line_through_per_interval() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert!(t.allow());
        assert!(!t.allow());
        let never = LogThrottle::new(Duration::ZERO);
        assert!(never.allow() && never.allow());
    }

    #[test]
    fn queue_drops_are_counted_and_exported_with_the_other_counters() {
        let s = GatewayStats::default();
        s.queue_full("control", "device connect");
        s.queue_full("control", "device connect");
        assert!(s.values().contains(&("queue_dropped", 2)));
        let c = ConnectorStats::default();
        c.add_queue_dropped(1);
        assert!(c.values().contains(&("queue_dropped", 1)));
    }
}
