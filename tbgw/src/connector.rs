//! The [`Connector`] trait and the [`ConnectorContext`] through which a connector talks to the
//! rest of the gateway.
//!
//! A connector is built from its configuration without any I/O ([`ConnectorFactory::build`]),
//! then the gateway calls [`Connector::run`] in a task of its own. `run` connects to the field
//! side, converts what it receives into [`DeviceData`](crate::model::DeviceData) and hands it to the
//! [`UplinkSender`]; it answers downlink requests (RPC, attribute updates) that arrive through
//! [`ConnectorContext::recv_downlink`]. It returns `Ok(())` when its cancellation token fires
//! and `Err` when it cannot go on; the gateway then calls `run` again after a backoff, keeping
//! the same context, so no downlink request is lost across a restart.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::downlink::Downlink;
use crate::error::ConfigError;
use crate::stats::{ConnectorCounters, ConnectorStats};
use crate::uplink::{UplinkClosed, UplinkSender};

pub use crate::config::ConnectorSpec;

/// Error returned by [`Connector::run`]: the gateway logs it and restarts the connector with
/// backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The gateway is shutting down and the uplink channel is closed.
    #[error("the gateway is shutting down")]
    Closed,
    /// The field-side connection failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// Any other failure.
    #[error("{0}")]
    Other(String),
}

impl From<UplinkClosed> for ConnectorError {
    /// The uplink channel closes only when the gateway shuts down, so `?` on
    /// [`UplinkSender::send`] ends `run` with [`ConnectorError::Closed`].
    fn from(_: UplinkClosed) -> Self {
        ConnectorError::Closed
    }
}

/// A running connector. See the [module documentation](self).
#[async_trait]
pub trait Connector: Send + 'static {
    /// Runs until the context's cancellation token fires (then returns `Ok(())`) or until an
    /// error the connector cannot recover from by itself (then returns `Err`, and the gateway
    /// calls `run` again after a backoff).
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError>;

    /// Shared attribute keys of its devices the connector acts on (its attribute-update
    /// keys). When a device connects, the gateway requests these from ThingsBoard and hands
    /// them to the connector as an attribute update (`syncDevicesSharedAttributesOnConnect`).
    /// Empty (the default): no sync.
    fn shared_attribute_keys(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Builds connectors of one type from their configuration. Building validates everything it
/// can and does no I/O; connecting happens in [`Connector::run`].
pub trait ConnectorFactory: Send + Sync {
    /// The connector type this factory builds, as written in `connectors[].type`.
    fn connector_type(&self) -> &'static str;

    /// Builds a connector. Errors name the file, the key path and the reason.
    /// Keys that were present but not used are pushed to `ignored` (as key paths), so the
    /// gateway can log them once.
    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError>;
}

/// Everything a running connector may use. Only the gateway creates it (or
/// [`ConnectorContext::for_test`] in tests).
#[derive(Debug)]
pub struct ConnectorContext {
    name: Arc<str>,
    uplink: UplinkSender,
    downlink: mpsc::Receiver<Downlink>,
    cancel: CancellationToken,
    stats: ConnectorCounters,
}

impl ConnectorContext {
    pub(crate) fn new(
        name: Arc<str>,
        uplink: UplinkSender,
        downlink: mpsc::Receiver<Downlink>,
        cancel: CancellationToken,
        stats: Arc<ConnectorStats>,
    ) -> Self {
        ConnectorContext {
            name,
            uplink,
            downlink,
            cancel,
            stats: ConnectorCounters::new(stats),
        }
    }

    /// The connector's name from the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sender for converted data and device connect/disconnect events. Cheap to clone.
    pub fn uplink(&self) -> &UplinkSender {
        &self.uplink
    }

    /// The next RPC or attribute update for a device this connector owns, or for the connector
    /// itself. `None` once the gateway has shut down.
    pub async fn recv_downlink(&mut self) -> Option<Downlink> {
        self.downlink.recv().await
    }

    /// Fires when the connector must stop.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// A new token for the next run (the supervisor stops one run to replace the connector).
    pub(crate) fn set_cancellation(&mut self, token: CancellationToken) {
        self.cancel = token;
    }

    /// The connector's counters: add to the ones a connector keeps (messages received,
    /// conversion errors, errors, downlink requests handled); clone the handle into sub-tasks.
    pub fn stats(&self) -> &ConnectorCounters {
        &self.stats
    }

    /// A context detached from any gateway, for tests: returns the context and the other ends
    /// of its channels.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test(name: &str) -> (ConnectorContext, TestEnds) {
        let (up_tx, up_rx) = mpsc::channel(1024);
        let (down_tx, down_rx) = mpsc::channel(64);
        let stats = Arc::new(ConnectorStats::default());
        let name: Arc<str> = Arc::from(name);
        let uplink = UplinkSender::new(up_tx, name.clone(), String::new().into(), stats.clone());
        let cancel = CancellationToken::new();
        (
            ConnectorContext::new(name, uplink, down_rx, cancel.clone(), stats),
            TestEnds {
                uplink: up_rx,
                downlink: down_tx,
                cancel,
            },
        )
    }
}

/// The gateway's ends of a test [`ConnectorContext`].
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct TestEnds {
    /// What the connector sent.
    pub uplink: mpsc::Receiver<crate::uplink::UplinkMessage>,
    /// Send downlink requests to the connector.
    pub downlink: mpsc::Sender<Downlink>,
    /// Cancel the connector.
    pub cancel: CancellationToken,
}
