//! # ODBC connector (`"type": "odbc"`)
//!
//! Follows a database table or view through ODBC (unixODBC and the database's driver): runs
//! `polling.query` with its `?` bound to the iterator, sends each new row to ThingsBoard as
//! the device `mapping` names, and calls stored procedures or queries for RPCs. Configured by
//! upstream's `odbc.json`.
//!
//! | file | role |
//! |---|---|
//! | [`config`] | the connector file and its checks (every expression parsed here) |
//! | [`connector`] | connect, iterator, poll, store receipts, reconnect, RPC dispatch |
//! | [`db`] | the worker threads that own the ODBC connections (blocking calls) |
//! | [`uplink`] | rows to device data (pure) |
//! | [`downlink`] | RPCs to SQL statements (pure) |
//!
//! What it fixes of upstream 3.8.5 (see `docs/connectors/odbc.md`):
//!
//! * `name`, `type`, `nameExpression` and `value` are read with [`tbgw::eval`], a safe
//!   Python-expression subset, not Python's `eval`; `tbgw check` names one it cannot read;
//! * the iterator is persistent by default and written atomically beside the config, only for
//!   rows storage acknowledged: a restart resumes without gap or duplicate;
//! * columns are typed by their SQL type; NULLs are skipped and counted;
//! * polls catch up at once when rows keep coming (upstream reads one `LIMIT` per period);
//! * reserved `get`/`set` split each pair at its first `=`; the sample's bare `"type":
//!   "postgres"` is a type, not a failing expression.

pub mod config;
pub mod connector;
pub mod db;
pub mod downlink;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::{OdbcConfig, OdbcFile};
pub use connector::{OdbcConnector, OdbcCounters};

/// Builds `odbc` connectors from their connector file. Building validates and does no I/O.
#[derive(Debug, Default, Clone, Copy)]
pub struct OdbcFactory;

impl OdbcFactory {
    /// The factory.
    pub fn new() -> Self {
        OdbcFactory
    }
}

impl ConnectorFactory for OdbcFactory {
    fn connector_type(&self) -> &'static str {
        "odbc"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let file: OdbcFile = spec.config.deserialize(&spec.file, ignored)?;
        let cfg = file.into_config(&spec.file, ignored)?;
        Ok(Box::new(OdbcConnector::new(cfg)))
    }
}
