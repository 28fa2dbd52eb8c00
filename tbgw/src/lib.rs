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
//!             cx.uplink().send(data).await?; // UplinkClosed: the gateway is stopping
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
//! For a connector author:
//! * [`connector`]: the [`Connector`](connector::Connector) and
//!   [`ConnectorFactory`](connector::ConnectorFactory) traits and the
//!   [`ConnectorContext`](connector::ConnectorContext) a running connector gets;
//!   [`uplink`] and [`downlink`]: the two directions of its traffic.
//! * [`model`]: device data, telemetry entries, typed values.
//! * [`convert`]: the converter layer: the uplink converter trait, the `json` and `bytes`
//!   converters, the custom-converter registry keyed by upstream's class names; [`topic`]:
//!   MQTT topic filter matching; [`expr`]: the `${...}` expressions, JSON paths, byte
//!   slices and timestamps converters are built from; [`report`]: report strategy overrides a
//!   connector attaches to its data; [`eval`]: the safe Python-expression subset that
//!   replaces upstream's `eval` of configuration strings (ODBC, CAN).
//! * [`config`]: upstream-format configuration, [`config::parse`] to read a connector file
//!   with precise errors, [`config::resolve_beside`] for the paths it names; `tls`: PEM
//!   loading and rustls configurations (feature `tls`).
//! * [`stats`]: counters, read-only outside the crate except those a connector keeps
//!   ([`ConnectorCounters`](stats::ConnectorCounters)).
//! * [`error`]: the configuration errors; every module's error type is also re-exported at the
//!   crate root.
//!
//! For an embedding application:
//! * [`Gateway`] and [`GatewayBuilder`]: build, run and stop the gateway; [`TbOptions`]: the
//!   ThingsBoard connection; [`config::load`]: a `tb_gateway.json` with its connector files.
//! * [`storage`]: the [`EventStorage`](storage::EventStorage) contract and the memory, file,
//!   SQLite and RocksDB storages (the last two behind features).
//! * [`service::remote_log`]: the tracing layer behind ThingsBoard remote logging.
//!
//! Everything else is internal. `tbgw::internal` (hidden from these docs) exposes a few internals
//! to tbgw's own benchmarks; it is not a stable API.
//!
//! ## Features
//! | feature | default | enables |
//! |---|---|---|
//! | `tls` | yes | TLS and mutual TLS to ThingsBoard, X.509 provisioning, and the `tls` module the connectors build their TLS with (rustls, aws-lc-rs) |
//! | `sqlite` | yes | `storage::SqliteStorage`, `"type": "sqlite"` (SQLite compiled in) |
//! | `rocksdb` | no | `storage::RocksDbStorage`, `"type": "rocksdb"`, linked against the system librocksdb (see `docs/STORAGE.md`) |
//! | `test-util` | no | `test_util`: mosquitto launcher, ThingsBoard stand-in, certificates and peers for tests |

pub mod backoff;
pub mod config;
pub mod connector;
pub mod convert;
pub mod downlink;
pub mod error;
pub mod eval;
pub mod expr;
mod gateway;
pub mod log_once;
mod messages;
pub mod model;
pub(crate) mod registry;
pub mod report;
pub mod service;
pub mod signal;
pub mod stats;
pub mod storage;
mod tb;
#[cfg(feature = "test-util")]
pub mod test_util;
mod throttle;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topic;
pub mod uplink;

#[doc(hidden)]
pub mod internal {
    //! Internals exposed for tbgw's own benchmarks and tools. Not a stable API: anything here
    //! may change or go away in any release.

    /// Packing stored records into gateway-API payloads (what the ThingsBoard client
    /// publishes).
    pub mod payload {
        pub use crate::tb::pack::{pack, Packed};
    }
    /// The binary record encoding of the file and SQLite storages.
    pub mod codec {
        pub use crate::storage::codec::{decode, encode, CodecError};
    }
    /// The device registry (`connected_devices.json`).
    pub mod registry {
        pub use crate::registry::{DeviceEntry, DeviceRegistry, Observed, REGISTRY_FILE};
    }
}

/// The attribute macro for implementing [`connector::Connector`] (re-exported from the
/// `async-trait` crate, so a connector author needs no extra dependency).
pub use async_trait::async_trait;
pub use connector::ConnectorError;
pub use convert::ConvertError;
pub use error::{ConfigError, ConfigErrors, IgnoredKey};
pub use gateway::{Gateway, GatewayBuilder, GatewayError, ShutdownReport};
pub use storage::StorageError;
pub use tb::TbOptions;
#[cfg(feature = "tls")]
pub use tls::TlsError;
pub use uplink::UplinkClosed;
