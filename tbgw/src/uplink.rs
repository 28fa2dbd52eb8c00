//! The path from connectors into storage.
//!
//! Connectors hold an [`UplinkSender`]. Everything they send goes through one bounded channel
//! to the gateway's ingest task, which registers new devices, writes the data to storage and,
//! when the connector asked for it, reports back once the data is stored (so a connector can
//! acknowledge its source only after that point). A full channel makes `send` wait: that is the
//! back-pressure that reaches the field side when storage blocks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::DeviceData;
use crate::stats::ConnectorStats;

/// The channel between connectors and the ingest task is closed: the gateway is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway is shutting down")]
pub struct UplinkClosed;

/// What became of data sent with [`UplinkSender::send_acked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// All of it is in storage.
    Stored,
    /// Storage was full and its policy dropped some of it; the number of records dropped.
    Dropped(usize),
    /// Storage failed; nothing was stored.
    Failed,
}

/// A future-like handle that resolves when data sent with [`UplinkSender::send_acked`] has been
/// handled by storage.
#[derive(Debug)]
pub struct StoreReceipt(oneshot::Receiver<StoreOutcome>);

impl StoreReceipt {
    /// Waits for the outcome. [`StoreOutcome::Failed`] if the gateway went away first.
    pub async fn wait(self) -> StoreOutcome {
        self.0.await.unwrap_or(StoreOutcome::Failed)
    }
}

/// Why an attribute request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeRequestError {
    /// ThingsBoard did not answer in time (or the gateway is offline).
    #[error("no answer from ThingsBoard within {0:?}")]
    Timeout(Duration),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Closed,
}

/// A message on the uplink channel. Built by [`UplinkSender`]; public so tests can inspect what
/// a connector sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum UplinkMessage {
    /// Converted data, with an optional receipt to fire once stored.
    Data {
        /// Sending connector.
        connector: Arc<str>,
        /// The data.
        data: Vec<DeviceData>,
        /// Fired once the data is stored.
        ack: Option<oneshot::Sender<StoreOutcome>>,
    },
    /// A device came online (`v1/gateway/connect`).
    Connect {
        /// Sending connector.
        connector: Arc<str>,
        /// Device name.
        device: String,
        /// Device profile.
        device_type: String,
    },
    /// A device went offline (`v1/gateway/disconnect`).
    Disconnect {
        /// Sending connector.
        connector: Arc<str>,
        /// Device name.
        device: String,
    },
    /// A request for a device's attributes (`v1/gateway/attributes/request`).
    AttributeRequest {
        /// Device name.
        device: String,
        /// Client-side (`true`) or shared (`false`) attributes.
        client: bool,
        /// The keys.
        keys: Vec<String>,
        /// Where the answer goes: ThingsBoard's whole answer (`{"id", "device", "value"}` for
        /// one key, `{"id", "device", "values"}` for several; see [`attribute_values`]).
        reply: oneshot::Sender<serde_json::Value>,
    },
}

/// The attribute values of ThingsBoard's answer to an attribute request: its `values` (several
/// keys) or `value` (one key); `null` without either.
pub fn attribute_values(response: &serde_json::Value) -> serde_json::Value {
    response
        .get("values")
        .or_else(|| response.get("value"))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// A connector's handle for sending data and device events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UplinkSender {
    tx: mpsc::Sender<UplinkMessage>,
    connector: Arc<str>,
    connector_type: Arc<str>,
    stats: Arc<ConnectorStats>,
}

impl UplinkSender {
    pub(crate) fn new(
        tx: mpsc::Sender<UplinkMessage>,
        connector: Arc<str>,
        connector_type: Arc<str>,
        stats: Arc<ConnectorStats>,
    ) -> Self {
        UplinkSender {
            tx,
            connector,
            connector_type,
            stats,
        }
    }

    /// The connector's name.
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// Sends converted data; returns once the ingest task has accepted it (waits while the
    /// channel is full). Empty data is skipped.
    pub async fn send(&self, data: DeviceData) -> Result<(), UplinkClosed> {
        if data.is_empty() {
            return Ok(());
        }
        self.send_inner(vec![data], None).await
    }

    /// Sends converted data and returns a receipt that resolves once it is stored.
    pub async fn send_acked(&self, data: Vec<DeviceData>) -> Result<StoreReceipt, UplinkClosed> {
        let (tx, rx) = oneshot::channel();
        let data: Vec<DeviceData> = data.into_iter().filter(|d| !d.is_empty()).collect();
        if data.is_empty() {
            let _ = tx.send(StoreOutcome::Stored);
            return Ok(StoreReceipt(rx));
        }
        self.send_inner(data, Some(tx)).await?;
        Ok(StoreReceipt(rx))
    }

    async fn send_inner(
        &self,
        data: Vec<DeviceData>,
        ack: Option<oneshot::Sender<StoreOutcome>>,
    ) -> Result<(), UplinkClosed> {
        let n = data.len() as u64;
        let attrs: usize = data.iter().map(|d| d.attributes.len()).sum();
        let ts: usize = data.iter().map(|d| d.datapoints()).sum::<usize>() - attrs;
        self.tx
            .send(UplinkMessage::Data {
                connector: self.connector.clone(),
                data,
                ack,
            })
            .await
            .map_err(|_| UplinkClosed)?;
        self.stats.add_sent_to_storage(n);
        self.stats.add_ts_produced(ts as u64);
        self.stats.add_attr_produced(attrs as u64);
        Ok(())
    }

    /// Announces a device to ThingsBoard (`v1/gateway/connect`) and records that this connector
    /// owns it. Data for an unknown device announces it implicitly.
    pub async fn connect_device(
        &self,
        device: impl Into<String>,
        device_type: impl Into<String>,
    ) -> Result<(), UplinkClosed> {
        self.tx
            .send(UplinkMessage::Connect {
                connector: self.connector.clone(),
                device: device.into(),
                device_type: device_type.into(),
            })
            .await
            .map_err(|_| UplinkClosed)
    }

    /// Tells ThingsBoard the device went offline (`v1/gateway/disconnect`).
    pub async fn disconnect_device(&self, device: impl Into<String>) -> Result<(), UplinkClosed> {
        self.tx
            .send(UplinkMessage::Disconnect {
                connector: self.connector.clone(),
                device: device.into(),
            })
            .await
            .map_err(|_| UplinkClosed)
    }

    /// Asks ThingsBoard for a device's client (`client = true`) or shared attributes and waits
    /// for the answer: the `value` (one key) or `values` (several keys) ThingsBoard sent.
    pub async fn request_attributes(
        &self,
        device: impl Into<String>,
        client: bool,
        keys: Vec<String>,
        timeout: Duration,
    ) -> Result<serde_json::Value, AttributeRequestError> {
        self.request_attributes_response(device, client, keys, timeout)
            .await
            .map(|r| attribute_values(&r))
    }

    /// [`request_attributes`](Self::request_attributes) returning ThingsBoard's whole answer
    /// (`{"id", "device", "value"}` or `{"id", "device", "values"}`), as upstream's REST
    /// connector forwards it to the device.
    pub async fn request_attributes_response(
        &self,
        device: impl Into<String>,
        client: bool,
        keys: Vec<String>,
        timeout: Duration,
    ) -> Result<serde_json::Value, AttributeRequestError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(UplinkMessage::AttributeRequest {
                device: device.into(),
                client,
                keys,
                reply: tx,
            })
            .await
            .map_err(|_| AttributeRequestError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(AttributeRequestError::Timeout(timeout)),
            Err(_) => Err(AttributeRequestError::Timeout(timeout)),
        }
    }

    /// The connector's type as configured (e.g. `mqtt`); empty in tests.
    pub fn connector_type(&self) -> &str {
        &self.connector_type
    }
}
