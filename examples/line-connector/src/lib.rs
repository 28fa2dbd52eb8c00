//! # A tbgw connector for a line-based TCP device
//!
//! The example that `docs/WRITING_A_CONNECTOR.md` walks through: a complete connector for a
//! small text protocol, laid out as every tbgw connector is:
//!
//! | file | what it holds |
//! |---|---|
//! | `lib.rs` (a connector's `mod.rs`) | the factory and these docs |
//! | [`config`] | the connector file's keys, defaults and checks |
//! | [`connector`] | the running connector: connect, read, downlink, reconnect |
//! | [`uplink`] | device lines to gateway data (pure, unit-tested) |
//! | [`downlink`] | gateway requests to device commands (pure, unit-tested) |
//! | `tests/` | the connector against a real TCP peer (socat) |
//!
//! The device sends readings (`#17 temperature=21.5 humidity=40`) and answers commands
//! (`OK <id> [json]`, `ERR <id> text`); the gateway sends `SET` for shared attribute updates,
//! `CALL` for RPCs and `ACK <seq>` once a numbered reading is in storage. See [`uplink`] and
//! [`downlink`] for the grammar.
//!
//! ## Loading it from `tb_gateway.json`
//!
//! Register the factory, and any `connectors[]` entry of type `line` is built from its file:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = tbgw::config::load(std::path::Path::new("tb_gateway.json"))?;
//! let gateway = tbgw::Gateway::builder()
//!     .factory(Box::new(tbgw_example_line::LineFactory))
//!     .config(loaded)
//!     .build()?;
//! # let _ = gateway; Ok(()) }
//! ```
//!
//! ```json
//! { "type": "line", "name": "Boiler", "configuration": "line.json" }
//! ```
//!
//! The `tbgw` binary has it compiled in with its `example-line` feature.

pub mod config;
pub mod connector;
pub mod downlink;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::LineConfig;
pub use connector::LineConnector;

/// Builds `line` connectors from their connector file. Building validates and does no I/O.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineFactory;

impl ConnectorFactory for LineFactory {
    fn connector_type(&self) -> &'static str {
        "line"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: LineConfig = spec.config.deserialize(&spec.file, ignored)?;
        cfg.validate(&spec.file)?;
        Ok(Box::new(LineConnector::new(cfg)))
    }
}
