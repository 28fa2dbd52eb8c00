//! The OCPP connector (`"type": "ocpp"`): the gateway is the central system (CSMS) that EV
//! charge points connect to over WebSocket.
//!
//! Configured by upstream's `ocpp.json`: `centralSystem` (`host`, `port`, `connection`
//! insecure or TLS, `security` tokens and basic credentials) and `chargePoints[]`
//! (`idRegexpPattern` on the URL path, `deviceNameExpression`/`deviceTypeExpression` over the
//! BootNotification, `attributes`/`timeseries` with `messageTypeFilter` and `${…}` values,
//! `attributeUpdates`, `serverSideRpc` with any OCPP `action`), and the reserved `get`/`set`
//! RPCs.
//!
//! What it does beyond upstream (see `docs/connectors/ocpp.md`):
//!
//! * **one port, three versions**: the WebSocket subprotocol is negotiated per charge point
//!   (`ocpp1.6`, `ocpp2.0.1`, `ocpp2.1`; upstream 3.8.4 spoke only 1.6J, 3.8.5 only 2.1). A
//!   charge point offering none of them gets the handshake without a subprotocol and an
//!   immediate close (1002), as the OCPP specifications ask;
//! * StatusNotification, Start/StopTransaction (1.6J), TransactionEvent (2.x) and the
//!   notifications whose answer is empty are answered and passed to the converter;
//! * credentials are checked in the HTTP handshake (a wrong one gets `401`), client
//!   certificates (security profile 3) with `connection.caCert`;
//! * an Authorize list (`idTokens`, `idTokensAttribute`) instead of accepting every token;
//! * RPC answers are the charge point's JSON answer, errors and timeouts are RPC errors.
//!
//! # Message types: our own, not a crate
//!
//! The connector does not use `rust-ocpp` or `ocpp-types`. `rust-ocpp` 3.0.4 has no usable
//! 2.1 feature, and either crate (with its chrono/validator/strum dependencies) adds minutes
//! to a 2-core CI build for hundreds of types of which the central system needs about ten.
//! Upstream's own converter works on the payloads as generic JSON (value expressions are
//! JSON paths over them), downlink RPCs carry any action's payload as JSON written by the
//! user, and the charge point validates those against its own schemas. So:
//!
//! * incoming calls are checked by [`messages::check`] against the required fields and types
//!   of the official schemas of the actions answered (missing → `OccurrenceConstraintViolation`,
//!   wrong type → `TypeConstraintViolation`, not an object → `FormatViolation`, unknown action
//!   → `NotImplemented`); the rest of the payload is passed on as JSON;
//! * answers are built by [`messages::answer`] with only the schemas' camelCase fields, and
//!   are exercised against the Python `ocpp` package, which validates every message against
//!   the official schemas of 1.6J, 2.0.1 and 2.1 (`tests/ocpp_connector.rs`).
//!
//! | file | role |
//! |---|---|
//! | [`config`] | the connector file's keys and their checks |
//! | [`frame`] | OCPP-J frames and subprotocols |
//! | [`messages`] | incoming-call checks and answers |
//! | `connector.rs` | the WebSocket server, sessions, call correlation |
//! | [`uplink`] | call → message → data (pure) |
//! | [`downlink`] | RPC / attribute update → call (pure) |

pub mod config;
mod connector;
pub mod downlink;
pub mod frame;
pub mod messages;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::OcppFileConfig;
pub use connector::OcppConnector;

/// Builds OCPP connectors (`"type": "ocpp"`).
#[derive(Debug, Default, Clone)]
pub struct OcppFactory {}

impl OcppFactory {
    /// A factory.
    pub fn new() -> Self {
        OcppFactory::default()
    }
}

impl ConnectorFactory for OcppFactory {
    fn connector_type(&self) -> &'static str {
        "ocpp"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: OcppFileConfig = spec.config.deserialize(&spec.file, ignored)?;
        Ok(Box::new(OcppConnector::build(&spec.file, cfg, ignored)?))
    }
}
