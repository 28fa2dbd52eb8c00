//! The running connector: connect (with backoff), start the iterator, poll, send rows with
//! store receipts, move and persist the iterator once storage has them, answer RPCs.
//!
//! * A poll that returned rows is followed at once by the next (catch-up); `polling.period`
//!   is the pause after a poll that found nothing new.
//! * The iterator moves in memory as batches are sent (so the next query continues after
//!   them) and is written to the iterator file only for batches storage acknowledged. When
//!   storage fails the in-memory value falls back to the acknowledged one and the rows are
//!   read again.
//! * RPCs run on a second connection (a second worker), so a long catch-up does not hold them.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError};
use tbgw::eval::Val;
use tbgw::log_once::LogOnce;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::{StoreOutcome, StoreReceipt};
use tokio::sync::{mpsc, oneshot};

use super::config::OdbcConfig;
use super::db::{Cmd, DbError, PollEvent, Worker};
use super::downlink::{plan, PlanError};

/// Batches in flight to storage before the connector waits for the oldest receipt.
const IN_FLIGHT: usize = 8;
/// The iterator file is rewritten at most this often during a catch-up (and at its end).
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// At shutdown, how long receipts of rows already sent may still take to count.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Counters beyond the gateway's connector counters.
#[derive(Debug, Default)]
pub struct OdbcCounters {
    /// Rows read.
    pub rows: AtomicU64,
    /// NULL values skipped.
    pub nulls: AtomicU64,
    /// Text values cut at the text limit.
    pub truncated: AtomicU64,
}

/// The `odbc` connector.
pub struct OdbcConnector {
    cfg: Arc<OdbcConfig>,
    counters: Arc<OdbcCounters>,
    logged: LogOnce,
    /// The last iterator value storage acknowledged (what the file holds).
    acked: Option<Val>,
    /// Rows sent since the iterator started (kept in the file as `total`).
    total: u64,
}

impl std::fmt::Debug for OdbcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdbcConnector")
            .field("query", &self.cfg.query)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IteratorFile {
    column: String,
    value: Json,
    #[serde(default)]
    total: u64,
}

fn load_iterator(file: &Path, column: &str) -> Option<(Val, u64)> {
    let bytes = std::fs::read(file).ok()?;
    match serde_json::from_slice::<IteratorFile>(&bytes) {
        Ok(f) if f.column == column && !f.value.is_null() => {
            Some((Val::from_json(&f.value), f.total))
        }
        Ok(_) => {
            tracing::info!(file = %file.display(), "The iterator file is for another column; starting from the configuration.");
            None
        }
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "Unreadable iterator file; starting from the configuration.");
            None
        }
    }
}

/// Replaces the file atomically (write aside, fsync, rename).
fn save_iterator(file: &Path, column: &str, value: &Val, total: u64) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(&IteratorFile {
        column: column.to_string(),
        value: value.to_json(),
        total,
    })
    .map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)
}

enum Settled {
    Stored,
    Failed,
    Cancelled,
}

enum PollEnd {
    /// Rows were read (poll again at once).
    Rows,
    /// Nothing new.
    Empty,
    /// The database failed.
    Db(DbError),
    /// Storage failed: read the rows again later.
    Storage,
    /// Cancelled.
    Cancelled,
}

impl OdbcConnector {
    /// A connector for a validated configuration.
    pub fn new(cfg: OdbcConfig) -> Self {
        OdbcConnector {
            cfg: Arc::new(cfg),
            counters: Arc::default(),
            logged: LogOnce::new(256),
            acked: None,
            total: 0,
        }
    }

    /// Cancelled mid-poll: receipts storage answers within [`STOP_GRACE`] still move the
    /// iterator, then the file gets the last acknowledged value.
    async fn cancelled(&mut self, in_flight: &mut VecDeque<(StoreReceipt, Val, u64)>) -> PollEnd {
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while let Some((receipt, v, n)) = in_flight.pop_front() {
            match tokio::time::timeout_at(deadline, receipt.wait()).await {
                Ok(StoreOutcome::Stored) | Ok(StoreOutcome::Dropped(_)) => {
                    self.total += n;
                    self.acked = Some(v);
                }
                _ => break,
            }
        }
        if let Some(v) = self.acked.clone() {
            self.persist(&v);
        }
        PollEnd::Cancelled
    }

    /// Rows read, NULLs skipped, values truncated (shared, live).
    pub fn counters(&self) -> Arc<OdbcCounters> {
        self.counters.clone()
    }

    fn persist(&mut self, value: &Val) {
        if !self.cfg.persistent {
            return;
        }
        if let Err(e) = save_iterator(
            &self.cfg.iterator_file,
            &self.cfg.iterator_column,
            value,
            self.total,
        ) {
            if self.logged.first("iterator file") {
                tracing::warn!(file = %self.cfg.iterator_file.display(), error = %e, "Cannot write the ODBC iterator file: a restart resumes from the last value written.");
            }
        }
    }

    /// The worker request for a downlink message; `None` when it was answered here.
    fn rpc(&mut self, dl: Downlink) -> Option<Cmd> {
        let Downlink::Rpc(rpc) = dl else { return None };
        match plan(&self.cfg.rpc, &rpc.method, &rpc.params) {
            Ok(stmt) => Some(Cmd::Rpc(stmt, rpc.responder)),
            Err(PlanError::Unknown(m)) => {
                tracing::warn!(method = %m, "Unknown ODBC RPC method (enableUnknownRpc is off).");
                rpc.responder
                    .err(RpcError::NotFound(format!("unknown RPC method {m:?}")));
                None
            }
            Err(PlanError::BadParams(why)) => {
                if rpc.method == "get" || rpc.method == "set" {
                    rpc.responder.verbatim(json!({ rpc.method.clone(): why }));
                } else {
                    rpc.responder.err(RpcError::BadRequest(why));
                }
                None
            }
        }
    }

    async fn downlink(&mut self, rpc_worker: &Worker, stats: &ConnectorCounters, dl: Downlink) {
        stats.add_downlink(1);
        if let Some(cmd) = self.rpc(dl) {
            if !rpc_worker.send(cmd).await {
                tracing::warn!("The ODBC RPC worker is gone.");
            }
        }
    }

    /// The iterator's start: the file, else `value`, else `query` (NULL: try again later).
    async fn start_value(&mut self, worker: &Worker) -> Result<Option<Val>, DbError> {
        if self.cfg.persistent {
            if let Some((v, total)) =
                load_iterator(&self.cfg.iterator_file, &self.cfg.iterator_column)
            {
                tracing::info!(column = %self.cfg.iterator_column, value = %v.to_py_string(), "ODBC iterator resumed from its file.");
                self.total = total;
                return Ok(Some(v));
            }
        }
        if let Some(v) = &self.cfg.iterator_value {
            return Ok(Some(v.clone()));
        }
        let Some(q) = self.cfg.iterator_query.clone() else {
            return Ok(Some(Val::None));
        };
        let (tx, rx) = oneshot::channel();
        if !worker.send(Cmd::Scalar(q, tx)).await {
            return Err(DbError {
                msg: "worker gone".into(),
                lost: true,
            });
        }
        match rx.await {
            Ok(Ok(Val::None)) => Ok(None),
            // An expression column some drivers type as text: bind it as the number it is.
            Ok(Ok(Val::Str(s))) => Ok(Some(
                match (s.trim().parse::<i64>(), s.trim().parse::<f64>()) {
                    (Ok(i), _) => Val::Int(i),
                    (_, Ok(f)) => Val::Float(f),
                    _ => Val::Str(s),
                },
            )),
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DbError {
                msg: "worker gone".into(),
                lost: true,
            }),
        }
    }

    async fn poll(
        &mut self,
        cx: &mut ConnectorContext,
        worker: &Worker,
        rpc_worker: &Worker,
        sent: &mut Val,
    ) -> Result<PollEnd, ConnectorError> {
        let (tx, mut rx) = mpsc::channel(2);
        if !worker.send(Cmd::Poll(sent.clone(), tx)).await {
            return Ok(PollEnd::Db(DbError {
                msg: "worker gone".into(),
                lost: true,
            }));
        }
        let cancel = cx.cancellation().clone();
        let uplink = cx.uplink().clone();
        let stats = cx.stats().clone();
        let mut in_flight: VecDeque<(StoreReceipt, Val, u64)> = VecDeque::new();
        let mut rows = 0u64;
        let mut saved_at = Instant::now();
        let mut failed = false;
        let mut end: Option<Result<(), DbError>> = None;
        while end.is_none() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(self.cancelled(&mut in_flight).await),
                dl = cx.recv_downlink() => match dl {
                    Some(dl) => self.downlink(rpc_worker, &stats, dl).await,
                    None => return Ok(PollEnd::Cancelled),
                },
                ev = rx.recv() => match ev {
                    None => end = Some(Err(DbError { msg: "worker gone".into(), lost: true })),
                    Some(PollEvent::End(r)) => end = Some(r),
                    Some(PollEvent::Batch(b)) => {
                        rows += b.rows;
                        stats.add_messages_received(b.rows);
                        self.counters.rows.fetch_add(b.rows, Ordering::Relaxed);
                        self.counters.nulls.fetch_add(b.nulls, Ordering::Relaxed);
                        self.counters.truncated.fetch_add(b.truncated, Ordering::Relaxed);
                        if !b.errors.is_empty() {
                            stats.add_convert_errors(b.errors.len() as u64);
                            for e in &b.errors {
                                if self.logged.first(e) {
                                    tracing::warn!(error = %e, "An ODBC row did not convert fully.");
                                }
                            }
                        }
                        if b.truncated > 0 && self.logged.first("truncated") {
                            tracing::warn!(limit = super::db::MAX_TEXT, "ODBC text values longer than the limit were cut.");
                        }
                        *sent = b.last.clone();
                        let receipt = uplink.send_acked(b.data).await?;
                        in_flight.push_back((receipt, b.last, b.rows));
                        while in_flight.len() > IN_FLIGHT {
                            match self.settle(&cancel, &mut in_flight, &mut saved_at).await {
                                Settled::Stored => {}
                                Settled::Failed => {
                                    failed = true;
                                    break;
                                }
                                Settled::Cancelled => return Ok(self.cancelled(&mut in_flight).await),
                            }
                        }
                        if failed {
                            // Stop reading; the worker sees the closed channel.
                            drop(rx);
                            break;
                        }
                    }
                },
            }
        }
        while !failed && !in_flight.is_empty() {
            match self.settle(&cancel, &mut in_flight, &mut saved_at).await {
                Settled::Stored => {}
                Settled::Failed => failed = true,
                Settled::Cancelled => return Ok(self.cancelled(&mut in_flight).await),
            }
        }
        if let Some(v) = self.acked.clone() {
            if rows > 0 || failed {
                self.persist(&v);
            }
        }
        if failed {
            if let Some(v) = &self.acked {
                *sent = v.clone();
            }
            return Ok(PollEnd::Storage);
        }
        Ok(match end {
            Some(Err(e)) => PollEnd::Db(e),
            _ if rows > 0 => PollEnd::Rows,
            _ => PollEnd::Empty,
        })
    }

    /// Waits for the oldest receipt; moves the acknowledged iterator.
    async fn settle(
        &mut self,
        cancel: &tokio_util::sync::CancellationToken,
        in_flight: &mut VecDeque<(StoreReceipt, Val, u64)>,
        saved_at: &mut Instant,
    ) -> Settled {
        let Some((receipt, v, n)) = in_flight.pop_front() else {
            return Settled::Stored;
        };
        let mut wait = Box::pin(receipt.wait());
        let outcome = tokio::select! {
            biased;
            o = &mut wait => o,
            _ = cancel.cancelled() => {
                // Stopping: the receipt may still count within the grace period.
                if let Ok(StoreOutcome::Stored | StoreOutcome::Dropped(_)) =
                    tokio::time::timeout(STOP_GRACE, wait).await
                {
                    self.total += n;
                    self.acked = Some(v);
                }
                return Settled::Cancelled;
            }
        };
        match outcome {
            StoreOutcome::Failed => Settled::Failed,
            _ => {
                self.total += n;
                self.acked = Some(v.clone());
                if saved_at.elapsed() >= SAVE_EVERY {
                    self.persist(&v);
                    *saved_at = Instant::now();
                }
                Settled::Stored
            }
        }
    }

    async fn wait(&mut self, cx: &mut ConnectorContext, rpc_worker: &Worker, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        let cancel = cx.cancellation().clone();
        let stats = cx.stats().clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return false,
                dl = cx.recv_downlink() => match dl {
                    Some(dl) => self.downlink(rpc_worker, &stats, dl).await,
                    None => return false,
                },
                _ = tokio::time::sleep_until(until) => return true,
            }
        }
    }
}

#[async_trait]
impl Connector for OdbcConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let name = cx.name().to_string();
        let worker = Worker::spawn(&format!("odbc-{name}"), self.cfg.clone())
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        let rpc_worker = Worker::spawn(&format!("odbc-rpc-{name}"), self.cfg.clone())
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        let mut backoff = Backoff::new(
            Duration::from_secs(1).min(self.cfg.reconnect_period),
            self.cfg.reconnect_period,
        );
        let mut sent: Option<Val> = self.acked.clone();
        loop {
            // Connect (the worker connects on its first request).
            let (tx, rx) = oneshot::channel();
            let connected = if worker.send(Cmd::Connect(tx)).await {
                match rx.await {
                    Ok(r) => r,
                    Err(_) => Err(DbError {
                        msg: "worker gone".into(),
                        lost: true,
                    }),
                }
            } else {
                Err(DbError {
                    msg: "worker gone".into(),
                    lost: true,
                })
            };
            let mut failure = match connected {
                Ok(()) => {
                    tracing::info!(connector = %name, "Connected to the database.");
                    backoff.succeeded();
                    None
                }
                Err(e) => Some(e),
            };
            while failure.is_none() {
                if sent.is_none() {
                    match self.start_value(&worker).await {
                        Ok(Some(v)) => {
                            tracing::info!(column = %self.cfg.iterator_column, value = %v.to_py_string(), "ODBC iterator starts.");
                            self.acked = Some(v.clone());
                            sent = Some(v);
                        }
                        Ok(None) => {
                            if self.logged.first("iterator null") {
                                tracing::info!("The iterator query returned no value yet (empty table?); trying again after the polling period.");
                            }
                            if !self
                                .wait(
                                    cx,
                                    &rpc_worker,
                                    self.cfg.period.max(Duration::from_millis(100)),
                                )
                                .await
                            {
                                return Ok(());
                            }
                            continue;
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                let Some(s) = sent.as_mut() else { continue };
                match self.poll(cx, &worker, &rpc_worker, s).await? {
                    PollEnd::Cancelled => return Ok(()),
                    PollEnd::Rows => {}
                    PollEnd::Empty => {
                        if !self.wait(cx, &rpc_worker, self.cfg.period).await {
                            return Ok(());
                        }
                    }
                    PollEnd::Storage => {
                        cx.stats().add_errors(1);
                        if self.logged.first("storage") {
                            tracing::warn!(
                                "Storage failed; the rows are read again after the polling period."
                            );
                        }
                        if !self
                            .wait(cx, &rpc_worker, self.cfg.period.max(Duration::from_secs(1)))
                            .await
                        {
                            return Ok(());
                        }
                    }
                    PollEnd::Db(e) => failure = Some(e),
                }
            }
            let Some(e) = failure else { continue };
            cx.stats().add_errors(1);
            if e.lost {
                tracing::warn!(connector = %name, error = %e, "ODBC database error; reconnecting.");
                if !self.cfg.reconnect {
                    tracing::error!(connector = %name, "reconnect is false: the ODBC connector stops.");
                    return Ok(());
                }
            } else if self.logged.first(&e.msg) {
                tracing::warn!(connector = %name, error = %e, "ODBC query failed; trying again.");
            }
            // Wait (answering RPCs) before the next attempt.
            let d = backoff.next_delay();
            if !self.wait(cx, &rpc_worker, d).await {
                return Ok(());
            }
        }
    }
}
