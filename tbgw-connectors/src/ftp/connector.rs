//! The running connector: one FTP control connection, sequential like upstream's. Connect and
//! log in (explicit FTPS when `TLSSupport`), binary transfers, then poll each path when it is
//! due and answer downlink between polls; reconnect with backoff when the server goes away.
//!
//! Reading a file:
//!
//! * `LIST`-free discovery: `NLST` of each directory, `*` directories checked with `CWD`, then
//!   `SIZE` and `MDTM` of each matching file. A file whose `(MDTM, SIZE)` did not change since
//!   it was last read is skipped; one of `maxFileSize` MB or more is skipped with a warning.
//! * json files are read whole (at most `maxFileSize`), csv and txt files are streamed line by
//!   line (memory stays flat whatever the file's size; a line longer than [`MAX_LINE`] is
//!   counted and skipped).
//! * PARTIAL: the byte offset after the last complete line read, and the header line of a
//!   TABLE file, are kept per file in the cursor file; the next read starts there with
//!   `REST`. A file that shrank is read from the start. A last line without its line end is
//!   left for the next poll (it may be half written).
//! * Rows go to the gateway in batches with store receipts; the cursor moves (and "unchanged"
//!   is recorded) only once the rows before it are in storage.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::types::FileType;
use suppaftp::FtpError;
use tbgw::backoff::Backoff;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::convert::ConvertError;
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData};
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::{StoreOutcome, StoreReceipt, UplinkSender};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::config::{FtpConfig, ReadMode, WritingMode};
use super::downlink::{
    connector_rpc, json_file_text, reserved, write_result, AttributeRule, FileOp, RpcRule,
};
use super::uplink::{FileKind, Layout, PathPattern, PathSpec};

/// The longest line read from a csv or txt file; a longer one is counted and skipped.
pub const MAX_LINE: usize = 1024 * 1024;
/// The most an RPC reads from a file.
pub const MAX_RPC_READ: u64 = 16 * 1024 * 1024;
/// Rows sent to the gateway in one batch.
const BATCH: usize = 512;
/// Batches in flight (sent, not yet confirmed stored) before reading waits for storage.
const IN_FLIGHT: usize = 16;
/// The cursor file is rewritten at least every this many bytes read in PARTIAL mode.
const CURSOR_EVERY: u64 = 4 * 1024 * 1024;
/// Connect plus login must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// A `NOOP` is sent when the control connection was idle this long.
const KEEPALIVE: Duration = Duration::from_secs(60);
/// Attribute updates kept while the server is away (the latest per device and key).
const MAX_PENDING: usize = 1000;

type Ftp = AsyncRustlsFtpStream;

/// An FTP connector. See the [module documentation](super).
pub struct FtpConnector {
    cfg: Arc<FtpConfig>,
    specs: Arc<Vec<PathSpec>>,
    attribute_rules: Arc<Vec<AttributeRule>>,
    rpc_rules: Arc<Vec<RpcRule>>,
    /// `(MDTM, SIZE)` of each file when it was last read whole and stored.
    seen: HashMap<String, (Option<String>, u64)>,
    cursors: Cursors,
    cursors_loaded: bool,
    /// When each path is due.
    due: Vec<Instant>,
    /// Attribute updates received while the server was away.
    pending: Vec<AttributeUpdate>,
    logged: LogOnce,
}

impl std::fmt::Debug for FtpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtpConnector")
            .field("host", &self.cfg.host)
            .field("port", &self.cfg.port)
            .field("paths", &self.specs.len())
            .finish()
    }
}

/// A PARTIAL file's position.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Bytes of the file already read and stored (always just after a line end).
    pub offset: u64,
    /// The header line of a TABLE file, once read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// The cursor file: `{"<path on the server>": {"offset": n, "header": "..."}}`.
#[derive(Debug)]
struct Cursors {
    file: PathBuf,
    map: HashMap<String, Cursor>,
}

impl Cursors {
    fn load(file: &Path) -> Cursors {
        let map = match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "Unreadable FTP cursor file; PARTIAL files are read from the start.");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        Cursors {
            file: file.to_path_buf(),
            map,
        }
    }

    /// Replaces the file atomically (write aside, fsync, rename).
    fn save(&self) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&self.map).map_err(std::io::Error::other)?;
        if let Some(dir) = self.file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.file.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.file)
    }
}

/// Why an operation on the server failed.
#[derive(Debug)]
enum OpError {
    /// The connection is gone (or unusable): reconnect.
    Lost(String),
    /// The server refused this file or command (a 4xx/5xx reply); the session goes on.
    Refused(String),
    /// Storage failed or the gateway is stopping.
    Storage(String),
    /// The gateway is stopping.
    Closed,
}

impl From<FtpError> for OpError {
    fn from(e: FtpError) -> Self {
        match &e {
            FtpError::UnexpectedResponse(r) if r.status.code() != 421 && r.status.code() >= 400 => {
                OpError::Refused(e.to_string())
            }
            _ => OpError::Lost(e.to_string()),
        }
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        OpError::Lost(e.to_string())
    }
}

impl From<tbgw::uplink::UplinkClosed> for OpError {
    fn from(_: tbgw::uplink::UplinkClosed) -> Self {
        OpError::Closed
    }
}

/// A logged-in control connection.
struct Session {
    ftp: Ftp,
    /// The login directory, where relative paths start.
    home: String,
    last_used: Instant,
}

enum SessionEnd {
    Cancelled,
    Lost(String),
}

/// One file found for a path.
#[derive(Debug, Clone)]
struct Found {
    path: String,
    size: u64,
    mdtm: Option<String>,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn base_name(entry: &str) -> &str {
    entry.rsplit('/').next().unwrap_or(entry)
}

impl FtpConnector {
    /// A connector for a checked configuration; the error names a key and why.
    pub fn new(cfg: FtpConfig) -> Result<Self, (String, String)> {
        let specs = cfg
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| PathSpec::build(p).map_err(|(k, e)| (format!("paths[{i}].{k}"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let attribute_rules = cfg
            .attribute_updates
            .iter()
            .enumerate()
            .map(|(i, a)| {
                AttributeRule::build(a).map_err(|e| (format!("attributeUpdates[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rpc_rules = cfg
            .server_side_rpc
            .iter()
            .enumerate()
            .map(|(i, r)| RpcRule::build(r).map_err(|e| (format!("serverSideRpc[{i}]"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let now = Instant::now();
        Ok(FtpConnector {
            due: vec![now; specs.len()],
            cursors: Cursors {
                file: cfg.cursor_file.clone(),
                map: HashMap::new(),
            },
            cfg: Arc::new(cfg),
            specs: Arc::new(specs),
            attribute_rules: Arc::new(attribute_rules),
            rpc_rules: Arc::new(rpc_rules),
            seen: HashMap::new(),
            cursors_loaded: false,
            pending: Vec::new(),
            logged: LogOnce::new(100),
        })
    }

    /// The PARTIAL cursor of `path` on the server, as stored (for tests and tools).
    pub fn cursor(&self, path: &str) -> Option<Cursor> {
        self.cursors.map.get(path).cloned()
    }

    fn tls_config(&self) -> Result<Option<Arc<tbgw::tls::rustls::ClientConfig>>, ConnectorError> {
        if !self.cfg.tls {
            return Ok(None);
        }
        let verify = match &self.cfg.ca_cert {
            Some(ca) => tbgw::tls::Verify::Roots(
                tbgw::tls::load_roots(ca).map_err(|e| ConnectorError::Other(e.to_string()))?,
            ),
            None => {
                tracing::warn!(host = %self.cfg.host, "FTPS without caCert: the server's certificate is not checked (as upstream).");
                tbgw::tls::Verify::Nothing
            }
        };
        let cfg = tbgw::tls::client_config(verify, None)
            .map_err(|e| ConnectorError::Other(e.to_string()))?;
        Ok(Some(Arc::new(cfg)))
    }

    async fn connect(
        &self,
        tls: Option<&Arc<tbgw::tls::rustls::ClientConfig>>,
    ) -> Result<Session, String> {
        let cfg = &self.cfg;
        let work = async {
            let mut ftp = Ftp::connect((cfg.host.as_str(), cfg.port))
                .await
                .map_err(|e| e.to_string())?;
            if let Some(tls) = tls {
                let connector = AsyncRustlsConnector::from(
                    suppaftp::tokio_rustls::TlsConnector::from(tls.clone()),
                );
                ftp = ftp
                    .into_secure(connector, &cfg.host)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
            }
            ftp.login(cfg.username.as_str(), cfg.password.as_str())
                .await
                .map_err(|e| format!("login as {}: {e}", cfg.username))?;
            // Binary: ASCII mode rewrites line ends and breaks SIZE and REST offsets.
            ftp.transfer_type(FileType::Binary)
                .await
                .map_err(|e| e.to_string())?;
            let home = ftp.pwd().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(Session {
                ftp,
                home,
                last_used: Instant::now(),
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| format!("no login within {CONNECT_TIMEOUT:?}"))?
    }

    /// While the server is away: RPCs are answered at once (503), attribute updates kept.
    fn downlink_offline(&mut self, dl: Downlink) {
        match dl {
            Downlink::Rpc(rpc) => rpc.responder.err(RpcError::Unreachable(format!(
                "the FTP server {}:{} is not connected",
                self.cfg.host, self.cfg.port
            ))),
            Downlink::AttributeUpdate(u) => self.keep_pending(u),
            _ => {}
        }
    }

    fn keep_pending(&mut self, u: AttributeUpdate) {
        if let Some(p) = self.pending.iter_mut().find(|p| p.device == u.device) {
            p.values.extend(u.values);
        } else if self.pending.len() < MAX_PENDING {
            self.pending.push(u);
        } else {
            tracing::warn!(device = %u.device, "Too many attribute updates while the FTP server is away; dropped one.");
        }
    }

    async fn session(
        &mut self,
        cx: &mut ConnectorContext,
        s: &mut Session,
    ) -> Result<SessionEnd, ConnectorError> {
        let cancel = cx.cancellation().clone();
        let uplink = cx.uplink().clone();
        let stats = cx.stats().clone();
        // Attribute updates that arrived while the server was away.
        for u in std::mem::take(&mut self.pending) {
            if let Err(OpError::Lost(why)) = self.attribute_update(s, &u).await {
                self.keep_pending(u);
                return Ok(SessionEnd::Lost(why));
            }
        }
        loop {
            let next = self.due.iter().min().copied();
            let idle_until = s.last_used + KEEPALIVE;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
                dl = cx.recv_downlink() => {
                    let Some(dl) = dl else { return Ok(SessionEnd::Cancelled) };
                    stats.add_downlink(1);
                    let r = tokio::select! {
                        _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
                        r = self.downlink(s, dl) => r,
                    };
                    s.last_used = Instant::now();
                    match r {
                        Err(OpError::Lost(why)) => return Ok(SessionEnd::Lost(why)),
                        Err(OpError::Closed) => return Err(ConnectorError::Closed),
                        _ => {}
                    }
                }
                _ = sleep_until_opt(next) => {
                    let now = Instant::now();
                    for i in 0..self.specs.len() {
                        if self.due[i] > now {
                            continue;
                        }
                        let r = tokio::select! {
                            _ = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
                            r = self.poll_path(&uplink, &stats, s, i) => r,
                        };
                        s.last_used = Instant::now();
                        match r {
                            Ok(()) => {}
                            Err(OpError::Lost(why)) => return Ok(SessionEnd::Lost(why)),
                            Err(OpError::Closed) => return Err(ConnectorError::Closed),
                            Err(OpError::Refused(why)) | Err(OpError::Storage(why)) => {
                                stats.add_errors(1);
                                if self.logged.first(&why) {
                                    tracing::warn!(path = %self.specs[i].pattern.literal_path(), error = %why, "Reading an FTP path failed; trying again at the next poll.");
                                }
                            }
                        }
                        self.due[i] = Instant::now() + self.specs[i].poll;
                    }
                }
                _ = tokio::time::sleep_until(idle_until) => {
                    if let Err(e) = s.ftp.noop().await {
                        return Ok(SessionEnd::Lost(e.to_string()));
                    }
                    s.last_used = Instant::now();
                }
            }
        }
    }

    /// `CWD` into `dir` and back: whether it is a directory.
    async fn is_dir(s: &mut Session, dir: &str) -> Result<bool, OpError> {
        match s.ftp.cwd(dir).await {
            Ok(()) => {
                s.ftp.cwd(&s.home).await?;
                Ok(true)
            }
            Err(e) => match OpError::from(e) {
                OpError::Refused(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn list(s: &mut Session, dir: &str) -> Result<Vec<String>, OpError> {
        let arg = if dir.is_empty() { None } else { Some(dir) };
        match s.ftp.nlst(arg).await {
            Ok(v) => Ok(v),
            // An empty or missing directory.
            Err(e) => match OpError::from(e) {
                OpError::Refused(_) => Ok(Vec::new()),
                other => Err(other),
            },
        }
    }

    /// `SIZE` and `MDTM` of a file; `None` when it is not a readable file.
    async fn stat(s: &mut Session, path: &str) -> Result<Option<Found>, OpError> {
        let size = match s.ftp.size(path).await {
            Ok(n) => n as u64,
            Err(e) => {
                return match OpError::from(e) {
                    OpError::Refused(_) => Ok(None),
                    other => Err(other),
                }
            }
        };
        let mdtm = match s.ftp.mdtm(path).await {
            Ok(t) => Some(t.to_string()),
            Err(e) => match OpError::from(e) {
                OpError::Refused(_) => None,
                other => return Err(other),
            },
        };
        Ok(Some(Found {
            path: path.to_string(),
            size,
            mdtm,
        }))
    }

    async fn find_files(
        s: &mut Session,
        pattern: &PathPattern,
        sort: bool,
    ) -> Result<Vec<Found>, OpError> {
        if pattern.is_literal() {
            let path = pattern.literal_path();
            return Ok(Self::stat(s, &path).await?.into_iter().collect());
        }
        let mut dirs = vec![if pattern.absolute {
            "/".to_string()
        } else {
            String::new()
        }];
        for g in &pattern.dirs {
            let mut next = Vec::new();
            for d in &dirs {
                if g.is_literal() {
                    next.push(join(d, &g.text()));
                    continue;
                }
                for entry in Self::list(s, d).await? {
                    let name = base_name(&entry);
                    if name == "." || name == ".." || !g.matches(name) {
                        continue;
                    }
                    let sub = join(d, name);
                    if Self::is_dir(s, &sub).await? {
                        next.push(sub);
                    }
                }
            }
            dirs = next;
        }
        let mut found = Vec::new();
        for d in &dirs {
            for entry in Self::list(s, d).await? {
                let name = base_name(&entry);
                if !pattern.matches_file(name) {
                    continue;
                }
                if let Some(f) = Self::stat(s, &join(d, name)).await? {
                    found.push(f);
                }
            }
        }
        if sort {
            // Upstream's order: newest first (then by path).
            found.sort_by(|a, b| (&b.mdtm, &b.path).cmp(&(&a.mdtm, &a.path)));
        }
        Ok(found)
    }

    async fn poll_path(
        &mut self,
        uplink: &UplinkSender,
        stats: &ConnectorCounters,
        s: &mut Session,
        i: usize,
    ) -> Result<(), OpError> {
        let specs = self.specs.clone();
        let spec = &specs[i];
        let files = Self::find_files(s, &spec.pattern, spec.sort).await?;
        tracing::trace!(count = files.len(), "FTP files found");
        for f in files {
            let Some(kind) = FileKind::of(&f.path) else {
                continue;
            };
            let state = (f.mdtm.clone(), f.size);
            if self.seen.get(&f.path) == Some(&state) {
                continue;
            }
            if f.size >= spec.max_bytes {
                let key = format!("{} {}", f.path, f.size);
                if self.logged.first(&key) {
                    tracing::warn!(file = %f.path, size = f.size, max = spec.max_bytes, "The file is as large as maxFileSize or larger; skipped.");
                }
                continue;
            }
            let r = match (kind, spec.read_mode) {
                (FileKind::Json, _) => self.read_json(uplink, stats, s, spec, &f).await,
                (_, ReadMode::Full) => self
                    .read_lines(uplink, stats, s, spec, kind, &f, false)
                    .await
                    .map(|_| ()),
                (_, ReadMode::Partial) => self
                    .read_lines(uplink, stats, s, spec, kind, &f, true)
                    .await
                    .map(|_| ()),
            };
            match r {
                Ok(()) => {
                    self.seen.insert(f.path.clone(), state);
                }
                Err(OpError::Refused(why)) => {
                    // The file went away or cannot be read: the others are still read.
                    stats.add_errors(1);
                    if self.logged.first(&why) {
                        tracing::warn!(file = %f.path, error = %why, "The FTP server refused a file.");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn count_errors(
        &mut self,
        stats: &ConnectorCounters,
        file: &str,
        errors: &mut Vec<ConvertError>,
    ) {
        if errors.is_empty() {
            return;
        }
        stats.add_convert_errors(errors.len() as u64);
        for e in errors.drain(..) {
            let e = e.to_string();
            if self.logged.first(&e) {
                tracing::warn!(file = %file, error = %e, "Could not convert part of an FTP file (each distinct error is logged once).");
            }
        }
    }

    async fn read_json(
        &mut self,
        uplink: &UplinkSender,
        stats: &ConnectorCounters,
        s: &mut Session,
        spec: &PathSpec,
        f: &Found,
    ) -> Result<(), OpError> {
        let content = Self::read_all(s, &f.path, spec.max_bytes).await?;
        stats.add_messages_received(1);
        stats.add_bytes_received(content.len() as u64);
        let mut errors = Vec::new();
        let data = match spec.convert_json(&content, now_millis(), &mut errors) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                Vec::new()
            }
        };
        self.count_errors(stats, &f.path, &mut errors);
        let receipt = uplink.send_acked(data).await?;
        match receipt.wait().await {
            StoreOutcome::Failed => Err(OpError::Storage("storage failed".into())),
            _ => Ok(()),
        }
    }

    /// Reads at most `max` bytes of a file.
    async fn read_all(s: &mut Session, path: &str, max: u64) -> Result<Vec<u8>, OpError> {
        let mut stream = s.ftp.retr_as_stream(path).await?;
        let mut content = Vec::new();
        let r = (&mut stream).take(max).read_to_end(&mut content).await;
        let finished = stream.finish().await;
        r?;
        finished?;
        Ok(content)
    }

    /// Streams a csv or txt file from its cursor (PARTIAL) or from the start (FULL).
    #[allow(clippy::too_many_arguments)]
    async fn read_lines(
        &mut self,
        uplink: &UplinkSender,
        stats: &ConnectorCounters,
        s: &mut Session,
        spec: &PathSpec,
        kind: FileKind,
        f: &Found,
        partial: bool,
    ) -> Result<u64, OpError> {
        let table = spec.is_table(kind);
        let mut cursor = if partial {
            if !self.cursors_loaded {
                self.cursors = Cursors::load(&self.cfg.cursor_file);
                self.cursors_loaded = true;
            }
            self.cursors.map.get(&f.path).cloned().unwrap_or_default()
        } else {
            Cursor::default()
        };
        if cursor.offset > f.size || (table && cursor.offset > 0 && cursor.header.is_none()) {
            tracing::info!(file = %f.path, "The file is shorter than its cursor: reading it from the start.");
            cursor = Cursor::default();
        }
        if partial && cursor.offset == f.size {
            return Ok(cursor.offset);
        }
        let mut layout: Option<Layout> = None;
        if let Some(h) = &cursor.header {
            layout = Some(self.layout(stats, spec, &f.path, h));
        }
        if cursor.offset > 0 {
            s.ftp
                .resume_transfer(usize::try_from(cursor.offset).unwrap_or(usize::MAX))
                .await?;
        }
        let mut stream = s.ftp.retr_as_stream(&f.path).await?;
        let mut reader = BufReader::with_capacity(256 * 1024, &mut stream);
        let mut pos = cursor.offset;
        let mut saved_at = pos;
        let mut line = Vec::with_capacity(256);
        let mut batch: Vec<DeviceData> = Vec::with_capacity(BATCH);
        let mut in_flight: VecDeque<(StoreReceipt, u64)> = VecDeque::new();
        let mut errors = Vec::new();
        let now = now_millis();
        let mut failed = None;
        loop {
            let (n, complete, too_long) = read_line(&mut reader, &mut line, MAX_LINE).await?;
            if n == 0 {
                break;
            }
            if partial && !complete {
                // Half-written last line: next time.
                break;
            }
            pos += n as u64;
            stats.add_bytes_received(n as u64);
            if too_long {
                stats.add_messages_received(1);
                errors.push(ConvertError::Malformed(format!(
                    "a line longer than {MAX_LINE} bytes"
                )));
                self.count_errors(stats, &f.path, &mut errors);
                continue;
            }
            let text = match std::str::from_utf8(&line) {
                Ok(t) => t,
                Err(_) => {
                    stats.add_messages_received(1);
                    errors.push(ConvertError::Malformed("a line that is not UTF-8".into()));
                    self.count_errors(stats, &f.path, &mut errors);
                    continue;
                }
            };
            if table && layout.is_none() {
                let header = super::uplink::clean_line(text).to_string();
                layout = Some(self.layout(stats, spec, &f.path, &header));
                cursor.header = Some(header);
                continue;
            }
            if text.trim().is_empty() {
                continue;
            }
            stats.add_messages_received(1);
            let converted = match &layout {
                Some(l) => spec.convert_row(l, text, now, &mut errors),
                None => spec.convert_sliced(text, now, &mut errors),
            };
            if !errors.is_empty() {
                self.count_errors(stats, &f.path, &mut errors);
            }
            if let Some(d) = converted {
                batch.push(d);
            }
            if batch.len() >= BATCH {
                let receipt = uplink
                    .send_acked(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .await?;
                in_flight.push_back((receipt, pos));
                while in_flight.len() > IN_FLIGHT {
                    let Some((receipt, at)) = in_flight.pop_front() else {
                        break;
                    };
                    if receipt.wait().await == StoreOutcome::Failed {
                        failed = Some("storage failed".to_string());
                        break;
                    }
                    if partial {
                        cursor.offset = at;
                        if at - saved_at >= CURSOR_EVERY {
                            self.save_cursor(&f.path, &cursor);
                            saved_at = at;
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
            }
        }
        drop(reader);
        if failed.is_none() {
            // A transfer cut short is left to the next command to drain.
            stream.finish().await?;
        } else {
            drop(stream);
        }
        if failed.is_none() && !batch.is_empty() {
            let receipt = uplink.send_acked(std::mem::take(&mut batch)).await?;
            in_flight.push_back((receipt, pos));
        }
        while let Some((receipt, at)) = in_flight.pop_front() {
            if failed.is_some() {
                break;
            }
            if receipt.wait().await == StoreOutcome::Failed {
                failed = Some("storage failed".into());
                break;
            }
            cursor.offset = at;
        }
        if failed.is_none() {
            cursor.offset = pos;
        }
        if partial {
            self.save_cursor(&f.path, &cursor);
        }
        match failed {
            Some(why) => Err(OpError::Storage(why)),
            None => Ok(pos),
        }
    }

    fn layout(
        &mut self,
        stats: &ConnectorCounters,
        spec: &PathSpec,
        file: &str,
        header: &str,
    ) -> Layout {
        let (layout, missing) = spec.layout(header);
        if !missing.is_empty() {
            stats.add_convert_errors(1);
            let key = format!("{file}: {missing:?}");
            if self.logged.first(&key) {
                tracing::warn!(file = %file, columns = ?missing, "The header lacks columns the configuration names; their datapoints are not sent.");
            }
        }
        layout
    }

    fn save_cursor(&mut self, path: &str, cursor: &Cursor) {
        if self.cursors.map.get(path) == Some(cursor) {
            return;
        }
        self.cursors.map.insert(path.to_string(), cursor.clone());
        if let Err(e) = self.cursors.save() {
            if self.logged.first("cursor file") {
                tracing::warn!(file = %self.cursors.file.display(), error = %e, "Cannot write the FTP cursor file: after a restart PARTIAL files are read again from the last saved position.");
            }
        }
    }

    async fn downlink(&mut self, s: &mut Session, dl: Downlink) -> Result<(), OpError> {
        match dl {
            Downlink::Rpc(rpc) => self.rpc(s, rpc).await,
            Downlink::AttributeUpdate(u) => match self.attribute_update(s, &u).await {
                Err(OpError::Lost(why)) => {
                    self.keep_pending(u);
                    Err(OpError::Lost(why))
                }
                other => other,
            },
            _ => Ok(()),
        }
    }

    async fn rpc(&mut self, s: &mut Session, rpc: RpcRequest) -> Result<(), OpError> {
        let RpcRequest {
            device,
            id,
            method,
            params,
            responder,
            ..
        } = rpc;
        let (op, connector_call) = match &device {
            None => (connector_rpc(&method, &params), true),
            Some(_) if method == "get" || method == "set" => (reserved(&method, &params), false),
            Some(d) => match self
                .rpc_rules
                .iter()
                .find_map(|r| r.op(d, &method, id, &params))
            {
                Some(op) => (op, false),
                None => {
                    responder.err(RpcError::NotFound(format!(
                        "no serverSideRpc mapping for method {method} of {d}"
                    )));
                    return Ok(());
                }
            },
        };
        let op = match op {
            Ok(op) => op,
            Err(why) => {
                responder.err(RpcError::BadRequest(why));
                return Ok(());
            }
        };
        match Self::file_op(s, &op).await {
            Ok(answer) => {
                match (&op, connector_call) {
                    (FileOp::Read { .. }, true) => {
                        responder.ok(json!({"success": true, "result": answer}))
                    }
                    (FileOp::Write { value, .. }, true) => {
                        let mut r = write_result(value);
                        r["success"] = Json::Bool(true);
                        responder.ok(r)
                    }
                    // Upstream answers a device's read with the content alone.
                    (FileOp::Read { .. }, false) => responder.verbatim(answer),
                    (FileOp::Write { value, .. }, false) => responder.ok(write_result(value)),
                }
                Ok(())
            }
            Err(OpError::Refused(why)) => {
                responder.err(RpcError::Device(why));
                Ok(())
            }
            Err(OpError::Lost(why)) => {
                responder.err(RpcError::Unreachable(why.clone()));
                Err(OpError::Lost(why))
            }
            Err(e) => {
                responder.err(RpcError::Device(format!("{e:?}")));
                Err(e)
            }
        }
    }

    /// Reads (the content as a JSON string) or writes a file.
    async fn file_op(s: &mut Session, op: &FileOp) -> Result<Json, OpError> {
        match op {
            FileOp::Read { path } => {
                let content = Self::read_all(s, path, MAX_RPC_READ).await?;
                Ok(Json::String(String::from_utf8_lossy(&content).into_owned()))
            }
            FileOp::Write { path, value } => {
                Self::store(s, path, value.as_bytes(), false).await?;
                Ok(Json::Null)
            }
        }
    }

    async fn store(s: &mut Session, path: &str, bytes: &[u8], append: bool) -> Result<(), OpError> {
        let mut stream = if append {
            s.ftp.append_with_stream(path).await?
        } else {
            s.ftp.put_with_stream(path).await?
        };
        let w = stream.write_all(bytes).await;
        let finished = stream.finish().await;
        w?;
        finished?;
        Ok(())
    }

    async fn attribute_update(
        &mut self,
        s: &mut Session,
        u: &AttributeUpdate,
    ) -> Result<(), OpError> {
        let rules = self.attribute_rules.clone();
        for (key, value) in &u.values {
            for rule in rules.iter() {
                let Some(w) = rule.write(&u.device, key, value) else {
                    continue;
                };
                let r = self.write_attribute(s, &w.path, &w.text, w.mode).await;
                match r {
                    Ok(()) => {
                        tracing::debug!(device = %u.device, key = %key, path = %w.path, "Attribute update written.")
                    }
                    Err(OpError::Refused(why)) => {
                        tracing::warn!(device = %u.device, key = %key, path = %w.path, error = %why, "The FTP server refused an attribute update.")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn write_attribute(
        &mut self,
        s: &mut Session,
        path: &str,
        text: &str,
        mode: WritingMode,
    ) -> Result<(), OpError> {
        let pattern = match PathPattern::parse(path) {
            Ok(p) => p,
            Err(e) => return Err(OpError::Refused(format!("path {path:?}: {e}"))),
        };
        let targets: Vec<String> = if pattern.is_literal() {
            vec![pattern.literal_path()]
        } else {
            Self::find_files(s, &pattern, false)
                .await?
                .into_iter()
                .map(|f| f.path)
                .collect()
        };
        for target in targets {
            if FileKind::of(&target) == Some(FileKind::Json) {
                match json_file_text(text) {
                    Ok(t) => Self::store(s, &target, t.as_bytes(), false).await?,
                    Err(e) => {
                        tracing::warn!(file = %target, error = %e, "Attribute update not written.");
                    }
                }
                continue;
            }
            match mode {
                WritingMode::Override => Self::store(s, &target, text.as_bytes(), false).await?,
                WritingMode::Write => {
                    let existing = Self::stat(s, &target).await?;
                    match existing {
                        Some(f) if f.size > 0 => {
                            let line = format!("\n{text}");
                            Self::store(s, &target, line.as_bytes(), true).await?
                        }
                        _ => Self::store(s, &target, text.as_bytes(), false).await?,
                    }
                }
            }
        }
        Ok(())
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reads one line into `buf` (without its `\n`), never holding more than `max` bytes of it.
/// Returns the bytes consumed (0 at the end), whether it ended with `\n`, and whether it was
/// longer than `max` (then `buf` is empty).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool, bool)> {
    buf.clear();
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok((consumed, false, too_long));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let end = if done { take - 1 } else { take };
            if buf.len() + end > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..end]);
            }
        }
        r.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, true, too_long));
        }
    }
}

#[async_trait]
impl Connector for FtpConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let tls = self.tls_config()?;
        let address = format!("{}:{}", self.cfg.host, self.cfg.port);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let cancel = cx.cancellation().clone();
        loop {
            let connected = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = self.connect(tls.as_ref()) => r,
            };
            match connected {
                Ok(mut s) => {
                    tracing::info!(address = %address, tls = self.cfg.tls, "Connected to the FTP server.");
                    backoff.succeeded();
                    let end = self.session(cx, &mut s).await?;
                    match end {
                        SessionEnd::Cancelled => {
                            let _ =
                                tokio::time::timeout(Duration::from_secs(2), s.ftp.quit()).await;
                            return Ok(());
                        }
                        SessionEnd::Lost(why) => {
                            cx.stats().add_errors(1);
                            tracing::warn!(address = %address, reason = %why, "Lost the FTP server; reconnecting.");
                        }
                    }
                }
                Err(e) => {
                    cx.stats().add_errors(1);
                    tracing::warn!(address = %address, error = %e, "Cannot connect to the FTP server.");
                }
            }
            let until = Instant::now() + backoff.next_delay();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep_until(until) => break,
                    dl = cx.recv_downlink() => match dl {
                        Some(dl) => {
                            cx.stats().add_downlink(1);
                            self.downlink_offline(dl)
                        }
                        None => return Ok(()),
                    },
                }
            }
        }
    }

    fn shared_attribute_keys(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_report_their_end() {
        let data: &[u8] = b"ab\r\nlonglonglong\nlast";
        let mut r = BufReader::with_capacity(4, data);
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut r, &mut buf, 8).await.unwrap(),
            (4, true, false)
        );
        assert_eq!(buf, b"ab\r");
        assert_eq!(
            read_line(&mut r, &mut buf, 8).await.unwrap(),
            (13, true, true)
        );
        assert!(buf.is_empty());
        assert_eq!(
            read_line(&mut r, &mut buf, 8).await.unwrap(),
            (4, false, false)
        );
        assert_eq!(buf, b"last");
        assert_eq!(
            read_line(&mut r, &mut buf, 8).await.unwrap(),
            (0, false, false)
        );
    }

    #[test]
    fn cursor_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/ftp.cursors.json");
        let mut c = Cursors::load(&file);
        assert!(c.map.is_empty());
        c.map.insert(
            "d/a.csv".into(),
            Cursor {
                offset: 42,
                header: Some("a,b".into()),
            },
        );
        c.save().unwrap();
        let back = Cursors::load(&file);
        assert_eq!(back.map, c.map);
        assert!(!file.with_extension("json.tmp").exists());
    }
}
