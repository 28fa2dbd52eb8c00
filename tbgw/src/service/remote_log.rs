//! Remote logging: log records sent to ThingsBoard as telemetry of the gateway device, with the
//! level set from ThingsBoard (shared attribute `RemoteLoggingLevel`: `NONE`, `CRITICAL`,
//! `ERROR`, `WARNING`, `INFO`, `DEBUG`, `TRACE`; `NONE` by default, i.e. off).
//!
//! [`remote_logging`] returns a `tracing` layer to install in the application's subscriber and
//! a [`RemoteLogHandle`] to give to [`GatewayBuilder::remote_logging`](crate::GatewayBuilder::remote_logging).
//! Records are formatted on the logging thread into a bounded queue (1,000; overflow dropped
//! and counted) and sent in batches of at most 20 per message, as upstream, with the key
//! `SERVICE_LOGS`, `CONNECTION_LOGS` (ThingsBoard client), `STORAGE_LOGS` or
//! `<connector name>_LOGS`, plus `LOGS`. A record is sent only if the application's own
//! filter lets it through too (the remote level cannot be more verbose than the local one).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value as Json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Most records waiting to be sent.
const QUEUE: usize = 1000;
/// Most records in one telemetry message.
pub(crate) const BATCH: usize = 20;

/// One formatted record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogRecord {
    pub ts: i64,
    pub key: String,
    pub text: String,
}

#[derive(Debug, Default)]
struct Inner {
    /// 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    level: AtomicU8,
    queue: Mutex<VecDeque<LogRecord>>,
    dropped: AtomicU64,
    /// Connectors whose records are sent (`enableRemoteLogging: true` in their file); `None`:
    /// every connector's.
    connectors: std::sync::RwLock<Option<std::collections::HashSet<String>>>,
    /// ERROR records logged since the last [`RemoteLogHandle::take_errors`], by upstream's
    /// logger name: the connector's name, `tb_connection`, `storage` or `service`.
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// The gateway's end of remote logging: the level and the queue.
#[derive(Debug, Clone, Default)]
pub struct RemoteLogHandle {
    inner: Arc<Inner>,
}

/// The `tracing` layer that feeds a [`RemoteLogHandle`].
#[derive(Debug, Clone)]
pub struct RemoteLogLayer {
    inner: Arc<Inner>,
}

/// A layer for the application's subscriber and the handle for the gateway.
pub fn remote_logging() -> (RemoteLogLayer, RemoteLogHandle) {
    let inner = Arc::new(Inner::default());
    (
        RemoteLogLayer {
            inner: inner.clone(),
        },
        RemoteLogHandle { inner },
    )
}

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

impl RemoteLogHandle {
    /// Sets the level from upstream's names; returns false for an unknown name.
    pub fn set_level(&self, name: &str) -> bool {
        let v = match name.trim().to_ascii_uppercase().as_str() {
            "NONE" | "OFF" => 0,
            "CRITICAL" | "FATAL" | "ERROR" => 1,
            "WARNING" | "WARN" => 2,
            "INFO" => 3,
            "DEBUG" => 4,
            "TRACE" => 5,
            _ => return false,
        };
        self.inner.level.store(v, Relaxed);
        if v == 0 {
            if let Ok(mut q) = self.inner.queue.lock() {
                q.clear();
            }
        }
        true
    }

    /// The current level's name.
    pub fn level(&self) -> &'static str {
        ["NONE", "ERROR", "WARNING", "INFO", "DEBUG", "TRACE"]
            [usize::from(self.inner.level.load(Relaxed).min(5))]
    }

    /// Sends the records of these connectors only (upstream's per-connector
    /// `enableRemoteLogging`); the gateway's own records are always sent.
    pub fn set_connectors(&self, names: impl IntoIterator<Item = String>) {
        if let Ok(mut c) = self.inner.connectors.write() {
            *c = Some(names.into_iter().collect());
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Relaxed)
    }

    /// The ERROR records logged since the last call, by upstream's logger name (the
    /// connector's name, `tb_connection`, `storage` or `service`); counted whatever the
    /// remote logging level.
    pub(crate) fn take_errors(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner
            .errors
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }

    /// Takes up to `max` queued records.
    pub(crate) fn drain(&self, max: usize) -> Vec<LogRecord> {
        match self.inner.queue.lock() {
            Ok(mut q) => {
                let n = q.len().min(max);
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Telemetry payload of one batch, as upstream sends it.
pub(crate) fn payload(batch: &[LogRecord]) -> Json {
    Json::Array(
        batch
            .iter()
            .map(|r| json!({"ts": r.ts, "values": {r.key.as_str(): r.text, "LOGS": r.text}}))
            .collect(),
    )
}

/// The connector name recorded on a `connector` span.
struct ConnectorName(String);

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
    name: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
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
            "name" => self.name = Some(format!("{value:?}")),
            f => {
                let _ = write!(self.rest, " {f}={value:?}");
            }
        }
    }
}

impl<S> Layer<S> for RemoteLogLayer
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
            span.extensions_mut().insert(ConnectorName(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = self.inner.level.load(Relaxed);
        let meta = event.metadata();
        let is_error = *meta.level() == Level::ERROR;
        if !is_error && (level == 0 || rank(meta.level()) > level) {
            return;
        }
        let target = meta.target();
        let connector = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|s| s.extensions().get::<ConnectorName>().map(|c| c.0.clone()))
        });
        if is_error {
            // Upstream's `<logger>_ERRORS_COUNT`: its connectors log under their name, the
            // ThingsBoard client under `tb_connection`, storage under `storage`.
            let logger = match &connector {
                Some(c) => c.as_str(),
                None if target.starts_with("tbgw::tb") => "tb_connection",
                None if target.starts_with("tbgw::storage") => "storage",
                None => "service",
            };
            if let Ok(mut e) = self.inner.errors.lock() {
                *e.entry(logger.to_string()).or_default() += 1;
            }
            if level == 0 {
                return;
            }
        }
        if let Some(c) = &connector {
            let allowed = self
                .inner
                .connectors
                .read()
                .map(|set| set.as_ref().is_none_or(|s| s.contains(c)))
                .unwrap_or(true);
            if !allowed {
                return;
            }
        }
        let key = match connector {
            Some(c) => format!("{c}_LOGS"),
            None if target.starts_with("tbgw::tb") => "CONNECTION_LOGS".into(),
            None if target.starts_with("tbgw::storage") => "STORAGE_LOGS".into(),
            None if target.starts_with("tbgw_connectors") => "EXTENSION_LOGS".into(),
            None => "SERVICE_LOGS".into(),
        };
        let mut f = Fields::default();
        event.record(&mut f);
        let text = format!("{} - [{}] - {}{}", meta.level(), target, f.message, f.rest);
        let rec = LogRecord {
            ts: crate::model::now_millis(),
            key,
            text,
        };
        match self.inner.queue.lock() {
            Ok(mut q) if q.len() < QUEUE => q.push_back(rec),
            _ => {
                self.inner.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn level_gates_records_and_connector_spans_name_the_key() {
        let (layer, handle) = remote_logging();
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::error!("before the level is set");
            assert!(handle.set_level("WARNING"));
            assert!(!handle.set_level("LOUD"));
            tracing::info!("too detailed");
            tracing::warn!(device = "d1", "service warning");
            let span = tracing::info_span!("connector", name = "MQTT A");
            let _g = span.enter();
            tracing::error!("connector error");
        });
        let got = handle.drain(100);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].key, "SERVICE_LOGS");
        assert!(got[0].text.contains("service warning") && got[0].text.contains("device=d1"));
        assert_eq!(got[1].key, "MQTT A_LOGS");
        let p = payload(&got);
        assert_eq!(p[1]["values"]["MQTT A_LOGS"], p[1]["values"]["LOGS"]);
        assert_eq!(handle.level(), "WARNING");

        // Only connectors with enableRemoteLogging send their records.
        handle.set_connectors(["Other".to_string()]);
        let sub = tracing_subscriber::registry().with(RemoteLogLayer {
            inner: handle.inner.clone(),
        });
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("connector", name = "MQTT A");
            let _g = span.enter();
            tracing::error!("not sent");
            drop(_g);
            tracing::error!("gateway record, sent");
        });
        let got = handle.drain(100);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].key, "SERVICE_LOGS");
    }

    #[test]
    fn errors_are_counted_by_logger_whatever_the_level() {
        let (layer, handle) = remote_logging();
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            tracing::error!("service error, level NONE");
            tracing::warn!("not an error");
            tracing::error!(target: "tbgw::storage::file", "storage error");
            let span = tracing::info_span!("connector", name = "MQTT A");
            let _g = span.enter();
            tracing::error!("connector error");
            tracing::error!("another");
        });
        let e = handle.take_errors();
        assert_eq!(e.get("service"), Some(&1), "{e:?}");
        assert_eq!(e.get("storage"), Some(&1), "{e:?}");
        assert_eq!(e.get("MQTT A"), Some(&2), "{e:?}");
        assert_eq!(e.len(), 3);
        assert!(handle.take_errors().is_empty());
        assert!(handle.drain(10).is_empty(), "level NONE sends nothing");
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        let (layer, handle) = remote_logging();
        handle.set_level("TRACE");
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            for i in 0..QUEUE + 5 {
                tracing::info!(i, "record");
            }
        });
        assert_eq!(handle.dropped(), 5);
        assert_eq!(handle.drain(BATCH).len(), BATCH);
    }
}
