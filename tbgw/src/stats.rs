//! Counters. Every stage counts what it received, passed on and dropped, so an operator can see
//! where data goes; [`GatewayStats::snapshot`] reads them all at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident => $add:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: AtomicU64,)*
        }
        impl $name {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($field), "`.")]
                pub fn $add(&self, n: u64) { self.$field.fetch_add(n, Relaxed); }
            )*

            /// Every counter with its field name, in declaration order (for statistics
            /// telemetry and the Prometheus endpoint).
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Relaxed)),)*]
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

impl ConnectorStats {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}
