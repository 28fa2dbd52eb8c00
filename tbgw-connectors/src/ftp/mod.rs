//! # FTP connector (`"type": "ftp"`)
//!
//! Reads json, txt and csv files from an FTP server (or explicit FTPS: `AUTH TLS`, `PROT P`)
//! every `pollPeriod` seconds and sends their rows or objects to ThingsBoard; writes files for
//! attribute updates and RPCs. Configured by upstream's `ftp.json`, in its new layout
//! (`parameters`, `paths`, `requestsMapping`) or the old flat one its sample uses.
//!
//! | file | role |
//! |---|---|
//! | [`config`] | the connector file, both layouts, and its checks |
//! | [`connector`] | the session: connect, list, read (FULL / PARTIAL), downlink, reconnect |
//! | [`uplink`] | rows, sliced lines and json objects to device data (pure) |
//! | [`downlink`] | RPCs and attribute updates to file operations (pure) |
//!
//! What it fixes of upstream 3.8.5 (see `docs/connectors/ftp.md`):
//!
//! * values are typed as each datapoint's `type` says (upstream sends strings);
//! * the server going away is retried with backoff (upstream stops the connector for good);
//! * PARTIAL keeps a byte offset per file in a cursor file, written atomically once the rows
//!   before it are in storage, and resumes with `REST`: nothing is downloaded twice and a
//!   restart neither re-sends nor loses lines (upstream downloads the whole file on every
//!   change and keeps its line cursor in memory only);
//! * an unchanged file is not sent again, `*` paths included (upstream re-sends `*` matches
//!   on every poll); `withSortingFiles` is read (upstream reads `with_sorting_files`);
//! * binary transfers, so CRLF files keep no `\r`; attribute updates work (they raise in
//!   upstream) and write every changed attribute.

pub mod config;
pub mod connector;
pub mod downlink;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::{FtpConfig, FtpFile};
pub use connector::FtpConnector;

/// Builds `ftp` connectors from their connector file. Building validates and does no I/O.
#[derive(Debug, Default, Clone, Copy)]
pub struct FtpFactory;

impl FtpFactory {
    /// The factory.
    pub fn new() -> Self {
        FtpFactory
    }
}

impl ConnectorFactory for FtpFactory {
    fn connector_type(&self) -> &'static str {
        "ftp"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let file: FtpFile = spec.config.deserialize(&spec.file, ignored)?;
        let cfg = file.into_config(&spec.file)?;
        Ok(Box::new(
            FtpConnector::new(cfg).map_err(|(k, e)| ConfigError::new(&spec.file, k, e))?,
        ))
    }
}
