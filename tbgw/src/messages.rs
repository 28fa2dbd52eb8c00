//! The messages the gateway's tasks pass each other, in a module of their own so that the
//! ThingsBoard client, the ingest task and the services need not import each other:
//!
//! * [`ServiceEvent`]: from the ThingsBoard client and the ingest task to the services task;
//! * [`IngestCommand`]: from the services task to the ingest task.
//!
//! What goes to the ThingsBoard client (`tb::Control`) stays with the client: it carries the
//! client's own options, and everyone who sends it already depends on the client.

use std::sync::Arc;

use serde_json::Value as Json;

/// Service RPC methods (after the `gateway_` prefix) the service task answers.
pub(crate) const SERVICE_METHODS: &[&str] = &[
    "devices",
    "stats",
    "version",
    "restart",
    "reboot",
    "device_renamed",
    "device_deleted",
    "remove_provisioned_credentials",
    "getTermInfo",
    "sendCommand",
    "getCommandStatus",
    "terminateCommand",
];

/// Events from the ThingsBoard client and the ingest task.
#[derive(Debug)]
pub(crate) enum ServiceEvent {
    /// A session is ready (after every connect).
    Ready,
    /// A service RPC to the gateway device.
    Rpc {
        id: i64,
        method: String,
        params: Json,
    },
    /// Shared attributes of the gateway device changed (`v1/devices/me/attributes`).
    SharedAttributes(Json),
    /// Answer to the gateway device's own attribute request.
    AttributesResponse(Json),
    /// A device became connected (new, or back from disconnected).
    DeviceConnected { device: String, connector: Arc<str> },
}

/// Requests from the services task to the ingest task.
#[derive(Debug)]
pub(crate) enum IngestCommand {
    /// A connector stopped: forget its cached report-strategy values.
    Purge(String),
    /// A connector's configuration changed: its connector-level report strategy.
    SetStrategy(String, Option<crate::config::ReportStrategyConfig>),
}
