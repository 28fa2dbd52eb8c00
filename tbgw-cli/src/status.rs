//! `tbgw status`: the running gateway answers on a local Unix socket with one JSON document
//! (ThingsBoard connection, storage fill and oldest record age, each connector's state,
//! devices, rates and error counters, the last warnings and errors); `tbgw status` prints it
//! as text, or as it is with `--json`.
//!
//! The socket file is created with mode 0660 (owner and group: the service's user and group)
//! and the gateway also checks each caller's credentials (`SO_PEERCRED`): root, the
//! gateway's own user, or a member of its group.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use tbgw::service::control::GatewayControl;
use tbgw::stats::{ConnectorStats, GatewayStats};
use tbgw::storage::EventStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Where the socket is when no path is given: `/run/tbgw/status.sock` when `/run/tbgw` exists
/// (systemd's `RuntimeDirectory=tbgw`), else `tbgw-status.sock` beside the main configuration
/// file.
pub fn default_socket(config: &Path) -> PathBuf {
    let run = Path::new("/run/tbgw");
    if run.is_dir() {
        return run.join("status.sock");
    }
    config
        .parent()
        .unwrap_or(Path::new("."))
        .join("tbgw-status.sock")
}

/// Most warnings and errors kept for the status view.
const LAST_ERRORS: usize = 20;

/// The last warnings and errors logged, for the status view.
#[derive(Debug, Clone, Default)]
pub struct LastErrors(Arc<Mutex<VecDeque<Json>>>);

impl LastErrors {
    fn snapshot(&self) -> Vec<Json> {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    connector: Option<String>,
    name: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "connector" => self.connector = Some(value.to_string()),
            "name" => self.name = Some(value.to_string()),
            f => {
                let _ = write!(self.rest, " {f}={value}");
            }
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "connector" => self.connector = Some(format!("{value:?}")),
            "name" => self.name = Some(format!("{value:?}")),
            f => {
                let _ = write!(self.rest, " {f}={value:?}");
            }
        }
    }
}

/// The connector named by an enclosing `connector` span.
struct SpanConnector(String);

impl<S> Layer<S> for LastErrors
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if attrs.metadata().name() != "connector" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(name), Some(span)) = (f.name, ctx.span(id)) {
            span.extensions_mut().insert(SpanConnector(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::WARN {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(n) = &f.name {
            let _ = write!(f.rest, " name={n}");
        }
        let connector = f.connector.or_else(|| {
            ctx.event_scope(event)?
                .from_root()
                .find_map(|s| s.extensions().get::<SpanConnector>().map(|c| c.0.clone()))
        });
        let rec = json!({
            "ts": tbgw::model::now_millis(),
            "level": meta.level().as_str(),
            "target": meta.target(),
            "connector": connector,
            "message": format!("{}{}", f.message, f.rest),
        });
        if let Ok(mut q) = self.0.lock() {
            if q.len() >= LAST_ERRORS {
                q.pop_front();
            }
            q.push_back(rec);
        }
    }
}

/// Everything the status view reads.
pub struct Sources {
    /// The gateway's counters.
    pub stats: Arc<GatewayStats>,
    /// Counters of the configured connectors.
    pub connector_stats: HashMap<String, Arc<ConnectorStats>>,
    /// The storage.
    pub storage: Arc<dyn EventStorage>,
    /// Storage type and configured capacity in records (when the type has one).
    pub storage_kind: String,
    /// Records the storage holds at most, when its configuration says.
    pub storage_capacity: Option<u64>,
    /// Connector states and device counts.
    pub control: GatewayControl,
    /// ThingsBoard host and port.
    pub thingsboard: (String, u16),
    /// Recent warnings and errors.
    pub last_errors: LastErrors,
}

/// Counter samples, one a second, for rates and the oldest record's age.
#[derive(Default)]
struct Samples {
    /// (when, records stored, delivered, per connector messages received)
    recent: VecDeque<(Instant, u64, u64, HashMap<String, u64>)>,
    /// (when, records that had entered the storage by then), while some may still be in it.
    entered: VecDeque<(Instant, u64)>,
}

/// Seconds the rates are averaged over.
const RATE_WINDOW: usize = 10;

struct State {
    src: Sources,
    started: Instant,
    samples: Mutex<Samples>,
    /// Records in storage at start (they count as entered at start).
    initial_len: u64,
}

impl State {
    fn entered(&self) -> u64 {
        self.initial_len + self.src.storage.stats().stored
    }

    fn gone(&self) -> u64 {
        let s = self.src.storage.stats();
        s.acked + s.dropped + s.corrupt + s.expired
    }

    fn sample(&self) {
        let now = Instant::now();
        let per: HashMap<String, u64> = self
            .src
            .connector_stats
            .iter()
            .map(|(n, s)| (n.clone(), s.messages_received()))
            .collect();
        let entered = self.entered();
        let gone = self.gone();
        let Ok(mut s) = self.samples.lock() else {
            return;
        };
        s.recent.push_back((
            now,
            self.src.stats.stored(),
            self.src.stats.delivered(),
            per,
        ));
        while s.recent.len() > RATE_WINDOW + 1 {
            s.recent.pop_front();
        }
        if s.entered.back().is_none_or(|(_, e)| *e != entered) {
            s.entered.push_back((now, entered));
        }
        // The front sample stays while the oldest record still held entered at or after it.
        while s.entered.len() > 1 && s.entered[1].1 <= gone {
            s.entered.pop_front();
        }
    }

    /// Seconds since the oldest record still held entered the storage (1 s resolution;
    /// records from before the start count from the start).
    fn oldest_age(&self, len: usize) -> Option<f64> {
        if len == 0 {
            return None;
        }
        let gone = self.gone();
        let s = self.samples.lock().ok()?;
        let t = s
            .entered
            .iter()
            .find(|(_, e)| *e > gone)
            .or(s.entered.back())
            .map(|(t, _)| *t)?;
        Some(t.elapsed().as_secs_f64())
    }

    fn rates(&self) -> (Option<f64>, Option<f64>, HashMap<String, f64>) {
        let Ok(s) = self.samples.lock() else {
            return (None, None, HashMap::new());
        };
        let (Some(a), Some(b)) = (s.recent.front(), s.recent.back()) else {
            return (None, None, HashMap::new());
        };
        let dt = b.0.duration_since(a.0).as_secs_f64();
        if dt <= 0.0 {
            return (None, None, HashMap::new());
        }
        let per =
            b.3.iter()
                .map(|(n, v)| {
                    let before = a.3.get(n).copied().unwrap_or(0);
                    (n.clone(), v.saturating_sub(before) as f64 / dt)
                })
                .collect();
        (
            Some(b.1.saturating_sub(a.1) as f64 / dt),
            Some(b.2.saturating_sub(a.2) as f64 / dt),
            per,
        )
    }

    fn document(&self) -> Json {
        let g = &self.src.stats;
        let st = self.src.storage.stats();
        let (stored_rate, delivered_rate, per) = self.rates();
        let round = |x: Option<f64>| x.map(|v| (v * 100.0).round() / 100.0);
        let connectors: Vec<Json> = self
            .src
            .control
            .connectors()
            .into_iter()
            .map(|c| {
                let s = self.src.connector_stats.get(&c.name);
                let v = |f: fn(&ConnectorStats) -> u64| s.map(|s| f(s)).unwrap_or(0);
                json!({
                    "name": c.name,
                    "type": c.connector_type,
                    "state": if c.running { "running" } else { "stopped" },
                    "devices": c.devices,
                    "messages_received": v(ConnectorStats::messages_received),
                    "messages_per_second": round(per.get(&c.name).copied()),
                    "sent_to_storage": v(ConnectorStats::sent_to_storage),
                    "errors": v(ConnectorStats::errors),
                    "convert_errors": v(ConnectorStats::convert_errors),
                    "restarts": v(ConnectorStats::restarts),
                    "task_failures": v(ConnectorStats::task_failures),
                    "queue_dropped": v(ConnectorStats::queue_dropped),
                })
            })
            .collect();
        let fill = self
            .src
            .storage_capacity
            .filter(|c| *c > 0)
            .map(|c| (st.len as f64 * 10_000.0 / c as f64).round() / 100.0);
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "thingsboard": {
                "host": self.src.thingsboard.0,
                "port": self.src.thingsboard.1,
                "connected": g.thingsboard_connected() > 0,
                "connects": g.connects(),
                "connection_errors": g.connection_errors(),
                "publishes": g.publishes(),
                "delivered": g.delivered(),
                "delivered_per_second": round(delivered_rate),
                "server_throttled": g.server_throttled(),
            },
            "storage": {
                "type": self.src.storage_kind,
                "records": st.len,
                "capacity_records": self.src.storage_capacity,
                "fill_percent": fill,
                "bytes": st.bytes,
                "oldest_record_age_seconds": round(self.oldest_age(st.len)),
                "stored_per_second": round(stored_rate),
                "dropped": st.dropped,
                "corrupt": st.corrupt,
                "expired": st.expired,
            },
            "devices": self.src.control.devices(),
            "connectors": connectors,
            "errors": {
                "storage_errors": g.storage_errors(),
                "downlink_errors": g.downlink_errors(),
                "rpc_timeouts": g.rpc_timeouts(),
                "queue_dropped": g.queue_dropped(),
                "remote_config_rejected": g.remote_config_rejected(),
                "remote_log_dropped": g.remote_log_dropped(),
            },
            "last_errors": self.src.last_errors.snapshot(),
        })
    }
}

/// Serves the status on `path` until `cancel`; the socket file is removed at the end.
pub async fn serve(
    path: PathBuf,
    src: Sources,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a gateway that did not stop cleanly: remove it if nobody answers.
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another gateway answers on this status socket",
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    let meta = std::fs::metadata(&path)?;
    let (my_uid, my_gid) = (meta.uid(), meta.gid());
    let state = Arc::new(State {
        initial_len: src.storage.stats().len as u64,
        src,
        started: Instant::now(),
        samples: Mutex::new(Samples::default()),
    });
    state.sample();
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => state.sample(),
                conn = listener.accept() => {
                    let Ok((mut stream, _)) = conn else { continue };
                    let allowed = stream.peer_cred().is_ok_and(|c| {
                        c.uid() == 0 || c.uid() == my_uid || c.gid() == my_gid
                    });
                    let body = if allowed {
                        state.document().to_string()
                    } else {
                        json!({"error": "permission denied"}).to_string()
                    };
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(5), async {
                            let _ = stream.write_all(body.as_bytes()).await;
                            let _ = stream.write_all(b"\n").await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    });
                }
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

/// `tbgw status`: reads the document from `path`; prints it as JSON or as text.
pub async fn query(path: &Path, as_json: bool) -> Result<(), String> {
    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
        format!(
            "{}: cannot connect ({e}); is the gateway running?",
            path.display()
        )
    })?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .map_err(|_| format!("{}: no answer within 10 s", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Json = serde_json::from_str(text.trim())
        .map_err(|e| format!("{}: not a status document: {e}", path.display()))?;
    if let Some(e) = doc.get("error").and_then(Json::as_str) {
        return Err(format!("{}: {e}", path.display()));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", render(&doc));
    }
    Ok(())
}

/// The status document as text for a terminal.
pub fn render(d: &Json) -> String {
    let mut o = String::new();
    let s = |v: &Json| match v {
        Json::Null => "-".to_string(),
        Json::String(s) => s.clone(),
        v => v.to_string(),
    };
    let tb = &d["thingsboard"];
    let _ = writeln!(
        o,
        "tbgw {} (pid {}), up {} s",
        s(&d["version"]),
        s(&d["pid"]),
        s(&d["uptime_seconds"])
    );
    let _ = writeln!(
        o,
        "ThingsBoard {}:{}  {}  connects {}  connection errors {}  delivered {} ({}/s)",
        s(&tb["host"]),
        s(&tb["port"]),
        if tb["connected"] == Json::Bool(true) {
            "CONNECTED"
        } else {
            "DISCONNECTED"
        },
        s(&tb["connects"]),
        s(&tb["connection_errors"]),
        s(&tb["delivered"]),
        s(&tb["delivered_per_second"])
    );
    let st = &d["storage"];
    let _ = writeln!(
        o,
        "Storage {}  records {} / {} ({} %)  oldest {} s  stored {}/s  dropped {}",
        s(&st["type"]),
        s(&st["records"]),
        s(&st["capacity_records"]),
        s(&st["fill_percent"]),
        s(&st["oldest_record_age_seconds"]),
        s(&st["stored_per_second"]),
        s(&st["dropped"])
    );
    let _ = writeln!(o, "Devices {}", s(&d["devices"]));
    let _ = writeln!(
        o,
        "{:<24} {:<8} {:<8} {:>7} {:>10} {:>8} {:>7} {:>9} {:>8}",
        "CONNECTOR",
        "TYPE",
        "STATE",
        "DEVICES",
        "MESSAGES",
        "MSG/S",
        "ERRORS",
        "CONV.ERR",
        "RESTARTS"
    );
    for c in d["connectors"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "{:<24} {:<8} {:<8} {:>7} {:>10} {:>8} {:>7} {:>9} {:>8}",
            s(&c["name"]),
            s(&c["type"]),
            s(&c["state"]),
            s(&c["devices"]),
            s(&c["messages_received"]),
            s(&c["messages_per_second"]),
            s(&c["errors"]),
            s(&c["convert_errors"]),
            s(&c["restarts"])
        );
    }
    if let Some(e) = d["errors"].as_object() {
        let list: Vec<String> = e.iter().map(|(k, v)| format!("{k} {}", s(v))).collect();
        let _ = writeln!(o, "Errors: {}", list.join(", "));
    }
    let last = d["last_errors"].as_array().cloned().unwrap_or_default();
    if !last.is_empty() {
        let _ = writeln!(o, "Last warnings and errors:");
        for e in last {
            let ts = e["ts"]
                .as_i64()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {ts} {:<5} {}{}",
                s(&e["level"]),
                e["connector"]
                    .as_str()
                    .map(|c| format!("[{c}] "))
                    .unwrap_or_default(),
                s(&e["message"])
            );
        }
    }
    o
}
