//! A connector under test, run on [`ConnectorContext::for_test`]: [`TestRun`] holds the
//! gateway's ends of it (what the connector sent, forwarded into a channel the test reads; the
//! downlink; the cancel token; its task) and sends RPCs and attribute updates, waits for what
//! the test expects, and stops it. [`rpc`] and [`update`] serve tests that keep the raw
//! [`TestEnds`](crate::connector::TestEnds).

use std::future::Future;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connector::{Connector, ConnectorContext};
use crate::downlink::{AttributeUpdate, Downlink, RpcRequest, RpcResponder};
use crate::model::{DeviceData, Value};
use crate::stats::ConnectorCounters;
use crate::uplink::{StoreOutcome, UplinkMessage};

/// What a connector sent, as tests of data and device connections look at it.
#[derive(Debug)]
pub enum Up {
    /// One device's data.
    Data(DeviceData),
    /// A device connected (`UplinkMessage::Connect`).
    Connect(String),
    /// A device disconnected (`UplinkMessage::Disconnect`).
    Disconnect(String),
}

/// Forwards the data of `uplink` to `tx` record by record, answering every store receipt
/// `Stored` at once; drops everything else.
pub async fn forward_data(
    mut uplink: mpsc::Receiver<UplinkMessage>,
    tx: mpsc::UnboundedSender<DeviceData>,
) {
    while let Some(m) = uplink.recv().await {
        if let UplinkMessage::Data { data, ack, .. } = m {
            for d in data {
                let _ = tx.send(d);
            }
            if let Some(ack) = ack {
                let _ = ack.send(StoreOutcome::Stored);
            }
        }
    }
}

/// Forwards the data (record by record), connects and disconnects of `uplink` to `tx` in
/// order; drops everything else. Store receipts are answered `Stored` when `ack` is set,
/// dropped unanswered otherwise.
pub async fn forward_up(
    mut uplink: mpsc::Receiver<UplinkMessage>,
    tx: mpsc::UnboundedSender<Up>,
    ack: bool,
) {
    while let Some(m) = uplink.recv().await {
        match m {
            UplinkMessage::Data { data, ack: a, .. } => {
                for d in data {
                    let _ = tx.send(Up::Data(d));
                }
                if let (true, Some(a)) = (ack, a) {
                    let _ = a.send(StoreOutcome::Stored);
                }
            }
            UplinkMessage::Connect { device, .. } => {
                let _ = tx.send(Up::Connect(device));
            }
            UplinkMessage::Disconnect { device, .. } => {
                let _ = tx.send(Up::Disconnect(device));
            }
            _ => {}
        }
    }
}

/// Sends the RPC `method` with `params` and request id `id` to `device` (`None`: a connector
/// RPC) and returns the answer; panics when none comes within `wait` or the responder is
/// dropped.
pub async fn rpc(
    downlink: &mpsc::Sender<Downlink>,
    device: Option<&str>,
    id: i64,
    method: &str,
    params: Json,
    wait: Duration,
) -> Json {
    let (responder, answer) = RpcResponder::new();
    downlink
        .send(Downlink::Rpc(RpcRequest {
            device: device.map(str::to_string),
            id,
            method: method.into(),
            params,
            responder,
        }))
        .await
        .expect("the connector takes downlink");
    tokio::time::timeout(wait, answer.reply())
        .await
        .expect("an answer")
        .expect("answered")
}

/// Sends an attribute update of `device` setting `key` to `value`.
pub async fn update(downlink: &mpsc::Sender<Downlink>, device: &str, key: &str, value: Json) {
    let mut values = serde_json::Map::new();
    values.insert(key.into(), value);
    downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: device.into(),
            values,
        }))
        .await
        .expect("the connector takes downlink");
}

/// A connector running on a test context, with what it sent forwarded into [`up`](Self::up).
#[derive(Debug)]
pub struct TestRun<T> {
    /// The connector's task; it panics when `run` returns an error.
    pub task: JoinHandle<()>,
    /// What the forwarder given to [`start`](Self::start) made of the uplink.
    pub up: mpsc::UnboundedReceiver<T>,
    /// Send downlink requests to the connector.
    pub downlink: mpsc::Sender<Downlink>,
    /// Cancels the connector.
    pub cancel: CancellationToken,
    /// The connector's counters.
    pub stats: ConnectorCounters,
    /// How long each wait of these methods lasts at most.
    pub wait: Duration,
}

impl<T: Send + 'static> TestRun<T> {
    /// Runs `connector` on a fresh test context named `name`, with `forward` (spawned) turning
    /// the uplink into what [`up`](Self::up) receives, e.g. [`forward_data`]. `wait` bounds
    /// every wait of the other methods.
    pub fn start<F, Fut>(
        name: &str,
        mut connector: Box<dyn Connector>,
        wait: Duration,
        forward: F,
    ) -> Self
    where
        F: FnOnce(mpsc::Receiver<UplinkMessage>, mpsc::UnboundedSender<T>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (mut cx, ends) = ConnectorContext::for_test(name);
        let stats = cx.stats().clone();
        let (tx, up) = mpsc::unbounded_channel();
        tokio::spawn(forward(ends.uplink, tx));
        let task = tokio::spawn(async move {
            connector.run(&mut cx).await.expect("ends cleanly");
        });
        TestRun {
            task,
            up,
            downlink: ends.downlink,
            cancel: ends.cancel,
            stats,
            wait,
        }
    }

    /// The next item; panics when none comes within the wait.
    pub async fn next(&mut self) -> T {
        tokio::time::timeout(self.wait, self.up.recv())
            .await
            .expect("something from the connector")
            .expect("open")
    }

    /// The first `Some` that `f` makes of the items received within the wait, skipping the
    /// others; `None` when the wait ends (or the forwarder does) first.
    pub async fn recv_until<R>(&mut self, mut f: impl FnMut(T) -> Option<R>) -> Option<R> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            match tokio::time::timeout_at(deadline, self.up.recv()).await {
                Ok(Some(t)) => {
                    if let Some(r) = f(t) {
                        return Some(r);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Waits for an item `want` accepts, skipping the others; panics when none comes within
    /// the wait.
    pub async fn wait_for(&mut self, want: impl Fn(&T) -> bool) {
        self.recv_until(|t| want(&t).then_some(()))
            .await
            .expect("what the test waits for never came")
    }

    /// Everything received in the next `d`.
    pub async fn drain_for(&mut self, d: Duration) -> Vec<T> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(t)) = tokio::time::timeout_at(deadline, self.up.recv()).await {
            out.push(t);
        }
        out
    }

    /// Sends the RPC `method` with `params` (request id 1) to `device` (`None`: a connector
    /// RPC) and returns the answer (see [`rpc`]).
    pub async fn rpc<'a>(
        &self,
        device: impl Into<Option<&'a str>>,
        method: &str,
        params: Json,
    ) -> Json {
        rpc(&self.downlink, device.into(), 1, method, params, self.wait).await
    }

    /// Sends an attribute update of `device` setting `key` to `value`.
    pub async fn update(&self, device: &str, key: &str, value: Json) {
        update(&self.downlink, device, key, value).await
    }

    /// Cancels the connector and waits for its task; panics when it does not end within the
    /// wait or panicked. Returns the receiver of what was forwarded, for what is still in it.
    pub async fn stop(self) -> mpsc::UnboundedReceiver<T> {
        self.cancel.cancel();
        tokio::time::timeout(self.wait, self.task)
            .await
            .expect("stops")
            .expect("no panic");
        self.up
    }
}

impl TestRun<Up> {
    /// The next value of `key` in the data of `device`, skipping everything else; panics when
    /// none comes within the wait.
    pub async fn value_of(&mut self, device: &str, key: &str) -> Value {
        self.recv_until(|u| match u {
            Up::Data(d) if d.device_name == device => d.value(key),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("no {key} of {device}"))
    }

    /// The next data of `device`, skipping everything else; panics when none comes within
    /// the wait.
    pub async fn record(&mut self, device: &str) -> DeviceData {
        self.recv_until(|u| match u {
            Up::Data(d) if d.device_name == device => Some(d),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("no record of {device}"))
    }

    /// Waits until a value of `key` in the data of `device` equals `want`; panics when none
    /// does within the wait.
    pub async fn wait_value(&mut self, device: &str, key: &str, want: Value) {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let v = tokio::time::timeout_at(deadline, self.value_of(device, key))
                .await
                .unwrap_or_else(|_| panic!("{device}/{key} never became {want:?}"));
            if v == want {
                return;
            }
        }
    }
}
