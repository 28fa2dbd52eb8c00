//! # tbgw — a ThingsBoard IoT gateway as a library
//!
//! `tbgw` collects data from field devices through *connectors*, converts it, buffers it in an
//! [`EventStorage`](storage::EventStorage) and delivers it to [ThingsBoard](https://thingsboard.io)
//! over ThingsBoard's gateway MQTT API; RPC calls and shared-attribute updates travel back
//! down to the connector that owns the device. It reads the upstream (Python) gateway's
//! configuration files unchanged (see [`config`]).
//!
//! The standard connectors live in the `tbgw-connectors` crate; the `tbgw` binary in
//! `tbgw-cli` wires them from a config file. This crate holds what every connector shares.
//!
//! ## Embedding, with a connector of your own
//!
//! ```no_run
//! use async_trait::async_trait;
//! use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
//! use tbgw::model::{now_millis, DeviceData, Value};
//! use tbgw::{Gateway, TbOptions};
//!
//! /// Reports a counter every second.
//! struct Counter;
//!
//! #[async_trait]
//! impl Connector for Counter {
//!     async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
//!         let mut n = 0i64;
//!         loop {
//!             tokio::select! {
//!                 _ = cx.cancellation().cancelled() => return Ok(()),
//!                 _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
//!             }
//!             n += 1;
//!             let mut data = DeviceData::new("counter-1", "counter");
//!             data.push_telemetry(now_millis(), "count", Value::Int(n));
//!             cx.uplink().send(data).await.map_err(|_| ConnectorError::Closed)?;
//!         }
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = Gateway::builder()
//!     .thingsboard(TbOptions::access_token("thingsboard.example.com", 1883, "GATEWAY_TOKEN"))
//!     .connector("Counter", "custom", Box::new(Counter))
//!     .build()?;
//! gateway.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! ## Modules
//! * [`model`]: device data, telemetry entries, typed values.
//! * [`connector`], [`uplink`], [`downlink`]: the connector contract and its channels.
//! * [`convert`]: the converter layer: the uplink converter trait, the `json` and `bytes`
//!   converters, the custom-converter registry.
//! * [`topic`]: MQTT topic filter matching.
//! * [`expr`]: the `${...}` expression engine shared by converters.
//! * [`storage`]: the event storage contract and the memory storage.
//! * [`config`]: upstream-format configuration with precise errors.
//! * [`registry`]: device ownership, persisted as `connected_devices.json`.
//! * [`Gateway`]: the builder and supervisor; [`TbOptions`]: the ThingsBoard connection.
//!
//! ## Features
//! | feature | default | enables |
//! |---|---|---|
//! | `tls` | yes | TLS and mutual TLS to ThingsBoard (rustls) |
//! | `test-util` | no | [`test_util`]: mosquitto launcher and ThingsBoard stand-in for tests |

pub mod config;
pub mod connector;
pub mod convert;
pub mod downlink;
pub mod expr;
mod gateway;
pub mod model;
pub mod payload {
    //! Packing stored records into gateway-API payloads (what the ThingsBoard client publishes).
    pub use crate::tb::pack::{pack, Packed};
}
pub mod registry;
pub mod report;
pub mod service;
pub mod stats;
pub mod storage;
mod tb;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod topic;
pub mod uplink;

pub use gateway::{Gateway, GatewayBuilder, GatewayError, ShutdownReport};
pub use tb::TbOptions;
