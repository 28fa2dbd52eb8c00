//! The running connector: connect, read lines, answer downlink, reconnect with backoff.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value as Json;
use tbgw::backoff::Backoff;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError, RpcResponder};
use tbgw::log_once::LogOnce;
use tbgw::model::now_millis;
use tbgw::uplink::StoreOutcome;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::LineConfig;
use crate::downlink::{ack_command, call_command, set_command};
use crate::uplink::{parse_line, to_device_data, Line};

type Receipt = Pin<Box<dyn Future<Output = StoreOutcome> + Send>>;

/// A connector for one line-based TCP device. See the [crate docs](crate).
#[derive(Debug)]
pub struct LineConnector {
    cfg: Arc<LineConfig>,
    /// Shared attributes changed while the device was offline: the latest value of each key,
    /// sent once it is back.
    pending_attributes: serde_json::Map<String, Json>,
    next_id: u64,
    /// Distinct conversion errors already logged (at most 100 remembered).
    logged: LogOnce,
}

/// How a session with the device ended.
enum SessionEnd {
    /// The gateway is stopping.
    Cancelled,
    /// The device went away (or broke the protocol); reconnect.
    Lost(String),
}

/// A command waiting for the device's answer.
enum Waiting {
    Rpc(RpcResponder, Instant),
    Attribute(String, Instant),
}

impl LineConnector {
    /// A connector for a validated configuration.
    pub fn new(cfg: LineConfig) -> Self {
        LineConnector {
            cfg: Arc::new(cfg),
            pending_attributes: serde_json::Map::new(),
            next_id: 1,
            logged: LogOnce::new(100),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Handles downlink while the device is offline: RPCs are answered at once with 503 (the
    /// caller learns the device is unreachable instead of waiting for a timeout); attribute
    /// updates are kept, latest value per key, and sent on reconnect.
    fn downlink_offline(&mut self, dl: Downlink) {
        match dl {
            Downlink::Rpc(rpc) => rpc.responder.err(RpcError::Unreachable(format!(
                "device {} is not connected",
                self.cfg.device_name
            ))),
            Downlink::AttributeUpdate(u) => {
                for (k, v) in u.values {
                    if self.cfg.attribute_updates.contains(&k) {
                        self.pending_attributes.insert(k, v);
                    }
                }
            }
            _ => {}
        }
    }

    async fn session(
        &mut self,
        cx: &mut ConnectorContext,
        stream: TcpStream,
    ) -> Result<SessionEnd, ConnectorError> {
        let cfg = self.cfg.clone();
        let (read, mut write) = stream.into_split();
        let mut reader = LineReader::new(read, cfg.max_line_bytes);
        let mut waiting: HashMap<u64, Waiting> = HashMap::new();
        let mut receipts: VecDeque<(u64, Receipt)> = VecDeque::new();
        let mut sweep = tokio::time::interval(Duration::from_millis(100));
        let cancel = cx.cancellation().clone();
        let uplink = cx.uplink().clone();
        let stats = cx.stats().clone();

        uplink
            .connect_device(&cfg.device_name, &cfg.device_type)
            .await
            .map_err(closed)?;
        // Attribute updates that arrived while the device was offline.
        let offline = std::mem::take(&mut self.pending_attributes);
        let mut sent = Vec::new();
        for (k, v) in &offline {
            let id = self.id();
            if let Err(e) = write_all(&mut write, &set_command(id, k, v)).await {
                // Keep what was not sent for the next session.
                self.pending_attributes = offline;
                uplink
                    .disconnect_device(&cfg.device_name)
                    .await
                    .map_err(closed)?;
                return Ok(SessionEnd::Lost(e.to_string()));
            }
            sent.push((id, k.clone()));
        }
        for (id, k) in sent {
            waiting.insert(
                id,
                Waiting::Attribute(k, Instant::now() + cfg.response_timeout()),
            );
        }

        let end = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break SessionEnd::Cancelled,
                // Readings are acknowledged to the device in order, once stored.
                outcome = async {
                    match receipts.front_mut() {
                        Some((_, receipt)) => receipt.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if !receipts.is_empty() => {
                    let Some((seq, _)) = receipts.pop_front() else { continue };
                    if outcome == StoreOutcome::Stored {
                        if let Err(e) = write_all(&mut write, &ack_command(seq)).await {
                            break SessionEnd::Lost(e.to_string());
                        }
                    }
                    // Not stored: no ACK, so the device sends the reading again.
                }
                dl = cx.recv_downlink() => {
                    let Some(dl) = dl else { break SessionEnd::Cancelled };
                    stats.add_downlink(1);
                    let cmd = match dl {
                        Downlink::Rpc(rpc) if cfg.forwards_rpc(&rpc.method) => {
                            let id = self.id();
                            let cmd = call_command(id, &rpc.method, &rpc.params);
                            waiting.insert(id, Waiting::Rpc(rpc.responder, Instant::now() + cfg.response_timeout()));
                            cmd
                        }
                        Downlink::Rpc(rpc) => {
                            rpc.responder.err(RpcError::NotFound(format!("method {} is not in serverSideRpc", rpc.method)));
                            continue;
                        }
                        Downlink::AttributeUpdate(u) => {
                            let mut cmds = String::new();
                            for (k, v) in u.values.iter().filter(|(k, _)| cfg.attribute_updates.contains(k)) {
                                let id = self.id();
                                cmds.push_str(&set_command(id, k, v));
                                waiting.insert(id, Waiting::Attribute(k.clone(), Instant::now() + cfg.response_timeout()));
                            }
                            cmds
                        }
                        _ => continue,
                    };
                    if let Err(e) = write_all(&mut write, &cmd).await {
                        break SessionEnd::Lost(e.to_string());
                    }
                }
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let late: Vec<u64> = waiting.iter().filter(|(_, w)| match w {
                        Waiting::Rpc(_, d) | Waiting::Attribute(_, d) => *d <= now,
                    }).map(|(id, _)| *id).collect();
                    for id in late {
                        match waiting.remove(&id) {
                            Some(Waiting::Rpc(r, _)) => r.err(RpcError::Timeout(format!("no answer from {} within {:?}", cfg.device_name, cfg.response_timeout()))),
                            Some(Waiting::Attribute(k, _)) => tracing::warn!(device = %cfg.device_name, key = %k, "The device did not confirm an attribute update."),
                            None => {}
                        }
                    }
                }
                n = reader.next() => {
                    match n {
                        Err(e) => break SessionEnd::Lost(e.to_string()),
                        Ok(LineRead::Eof) => break SessionEnd::Lost("the device closed the connection".into()),
                        Ok(LineRead::TooLong) => {
                            stats.add_convert_errors(1);
                            tracing::warn!(device = %cfg.device_name, max = cfg.max_line_bytes, "Skipped a line longer than maxLineBytes.");
                        }
                        Ok(LineRead::Line) => {
                            stats.add_messages_received(1);
                            let text = String::from_utf8_lossy(reader.line()).into_owned();
                            match parse_line(&text) {
                                Err(e) => {
                                    stats.add_convert_errors(1);
                                    let e = e.to_string();
                                    if self.logged.first(&e) {
                                        tracing::warn!(device = %cfg.device_name, error = %e, "Unreadable line (each distinct error is logged once).");
                                    }
                                }
                                Ok(Line::Reply { id, result }) => match waiting.remove(&id) {
                                    Some(Waiting::Rpc(r, _)) => match result {
                                        Ok(body) => r.ok(body),
                                        Err(text) => r.err(RpcError::Device(text)),
                                    },
                                    Some(Waiting::Attribute(k, _)) => {
                                        if let Err(text) = result {
                                            tracing::warn!(device = %cfg.device_name, key = %k, error = %text, "The device refused an attribute update.");
                                        }
                                    }
                                    None => tracing::debug!(id, "A reply to no command (late or unknown)."),
                                },
                                Ok(Line::Reading { seq, values }) => {
                                    let data = to_device_data(&cfg.device_name, &cfg.device_type, &cfg.attributes, values, now_millis());
                                    match seq {
                                        Some(seq) => {
                                            let receipt = uplink.send_acked(vec![data]).await.map_err(closed)?;
                                            receipts.push_back((seq, Box::pin(receipt.wait())));
                                        }
                                        None => uplink.send(data).await.map_err(closed)?,
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        // Commands in flight get no answer from this session.
        for (_, w) in waiting {
            if let Waiting::Rpc(r, _) = w {
                r.err(RpcError::Unreachable("the device disconnected".into()));
            }
        }
        // Readings already handed to storage stay there; those not acknowledged to the device
        // come again after the reconnect (at-least-once: duplicates possible, loss not).
        uplink
            .disconnect_device(&cfg.device_name)
            .await
            .map_err(closed)?;
        Ok(end)
    }
}

#[async_trait]
impl Connector for LineConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let cfg = self.cfg.clone();
        let address = format!("{}:{}", cfg.host, cfg.port);
        // Exponential with jitter; a connection that lasted a minute starts the delays afresh.
        let mut backoff = Backoff::new(
            Duration::from_millis(cfg.reconnect_delay_ms),
            Duration::from_millis(cfg.max_reconnect_delay_ms),
        );
        let cancel = cx.cancellation().clone();
        loop {
            let connect =
                tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&address));
            let stream = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = connect => r,
            };
            match stream {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    tracing::info!(address = %address, device = %cfg.device_name, "Connected to the device.");
                    backoff.succeeded();
                    match self.session(cx, stream).await? {
                        SessionEnd::Cancelled => return Ok(()),
                        SessionEnd::Lost(why) => {
                            cx.stats().add_errors(1);
                            tracing::warn!(address = %address, reason = %why, "Lost the device; reconnecting.");
                        }
                    }
                }
                Ok(Err(e)) => {
                    cx.stats().add_errors(1);
                    tracing::warn!(address = %address, error = %e, "Cannot connect to the device.");
                }
                Err(_) => {
                    cx.stats().add_errors(1);
                    tracing::warn!(address = %address, "Connecting to the device timed out.");
                }
            }
            // Wait before reconnecting, still answering downlink (nobody waits for a timeout).
            let until = Instant::now() + backoff.next_delay();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(until) => break,
                    dl = cx.recv_downlink() => match dl {
                        Some(dl) => self.downlink_offline(dl),
                        None => return Ok(()),
                    },
                }
            }
        }
    }

    fn shared_attribute_keys(&self) -> Vec<String> {
        self.cfg.attribute_updates.clone()
    }
}

fn closed(_: tbgw::uplink::UplinkClosed) -> ConnectorError {
    ConnectorError::Closed
}

async fn write_all(w: &mut tokio::net::tcp::OwnedWriteHalf, s: &str) -> std::io::Result<()> {
    w.write_all(s.as_bytes()).await
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Reads lines without ever holding more than `max` bytes of one. Cancel-safe: a `next` that is
/// dropped while waiting loses nothing, so it can sit in a `select!` beside other branches.
struct LineReader {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    buf: Vec<u8>,
    max: usize,
    too_long: bool,
    complete: bool,
}

impl LineReader {
    fn new(r: tokio::net::tcp::OwnedReadHalf, max: usize) -> Self {
        LineReader {
            r: BufReader::new(r),
            buf: Vec::with_capacity(256),
            max,
            too_long: false,
            complete: false,
        }
    }

    /// The line [`LineReader::next`] returned [`LineRead::Line`] for, without its `\n`.
    fn line(&self) -> &[u8] {
        &self.buf
    }

    /// The next line; a line longer than `max` is consumed and reported as
    /// [`LineRead::TooLong`].
    async fn next(&mut self) -> std::io::Result<LineRead> {
        if self.complete {
            self.buf.clear();
            self.too_long = false;
            self.complete = false;
        }
        loop {
            let chunk = self.r.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(LineRead::Eof);
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if !self.too_long {
                let end = if done { take - 1 } else { take };
                if self.buf.len() + end > self.max {
                    self.too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..end]);
                }
            }
            self.r.consume(take);
            if done {
                self.complete = true;
                return Ok(if self.too_long {
                    LineRead::TooLong
                } else {
                    LineRead::Line
                });
            }
        }
    }
}
