//! The OPC-UA connector: a client that browses a server for device nodes, collects their
//! variables by data-change subscription or polled reads, and writes nodes and calls methods
//! for ThingsBoard.
//!
//! Configured by upstream's `opcua.json` unchanged (`server`, `mapping[]`); see
//! `docs/connectors/opcua.md` for every key and where tbgw differs from upstream.
//!
//! ## Why `async-opcua`
//!
//! The client is [`async-opcua`](https://crates.io/crates/async-opcua) 0.19, the maintained fork
//! of `opcua` (locka99). `opcua` 0.12 was released in January 2024 and its repository has had
//! no commit since October 2024; `async-opcua` has had seven releases since (0.14 in
//! January 2025 to 0.19). It is tokio-native (no threads of its own, a session event loop we
//! drive), implements every service the connector needs (Browse/BrowseNext, Read, Write, Call,
//! subscriptions with monitored items), supports all standard security policies (`None`,
//! `Basic128Rsa15`, `Basic256`, `Basic256Sha256`, `Aes128-Sha256-RsaOaep`,
//! `Aes256-Sha256-RsaPss`) in modes Sign and SignAndEncrypt, anonymous / user name / X.509
//! identities, and uses pure-Rust crypto (no OpenSSL to install or link).
//!
//! ## Data path
//!
//! With subscriptions, one subscription per connection carries a monitored item per data point;
//! the callback only moves whole notification messages into a buffer, and the run loop
//! converts and hands them to storage every `subDataMinBatchCreationTimeMs` or as soon as
//! `subDataMaxBatchSize` values are waiting. Without subscriptions, every
//! `pollPeriodInMillis` all data points are read in batches bounded by the server's
//! `MaxNodesPerRead`.

mod browse;
pub mod config;
mod connector;
mod downlink;
pub mod nodes;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::OpcUaConnectorConfig;
pub use connector::OpcUaConnector;

/// Builds OPC-UA connectors (`"type": "opcua"`).
#[derive(Debug, Default, Clone)]
pub struct OpcUaFactory;

impl OpcUaFactory {
    /// A factory.
    pub fn new() -> Self {
        OpcUaFactory
    }
}

impl ConnectorFactory for OpcUaFactory {
    fn connector_type(&self) -> &'static str {
        "opcua"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: OpcUaConnectorConfig = spec.config.deserialize(&spec.file, ignored)?;
        Ok(Box::new(OpcUaConnector::build(
            &spec.file, &spec.name, cfg, ignored,
        )?))
    }
}
