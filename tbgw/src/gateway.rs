//! The [`Gateway`]: wires connectors, storage and the ThingsBoard client into running tasks.
//!
//! ```text
//! connector tasks ──UplinkSender──▶ [uplink channel] ──▶ ingest task ──▶ EventStorage
//!        ▲                                                  │ (registry)      │ read / ack
//!        └──── downlink channel ◀── router ◀── ThingsBoard client ◀───────────┘
//! ```
//!
//! Every channel is bounded. Shutdown runs in order: connectors are cancelled and awaited, the
//! uplink channel is drained into storage, storage is flushed, and the ThingsBoard client stops
//! after waiting (briefly) for the PUBACKs of what is in flight, all within a deadline.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::config::{ConfigError, ConfigErrors, IgnoredKey, LoadedConfig};
use crate::connector::{Connector, ConnectorContext, ConnectorError, ConnectorFactory};
use crate::messages::IngestCommand;
use crate::model::DeviceData;
use crate::registry::{DeviceRegistry, Observed};
use crate::report::ReportFilter;
use crate::service::filter::DeviceFilter;
use crate::service::manager::{ConnectorCommand, Manager, PROBATION};
use crate::service::remote_log::RemoteLogHandle;
use crate::service::{ServiceEvent, Services};
use crate::stats::{ConnectorStats, GatewayStats};
use crate::storage::{EventStorage, MemoryStorage};
use crate::tb::{Control, Routes, Shared, TbClient, TbOptions};
use crate::uplink::{StoreOutcome, UplinkMessage, UplinkSender};

/// Capacity of the channel from connectors to the ingest task (messages, each one or more
/// device records). Large enough to absorb bursts, small enough that a blocked storage is felt
/// by connectors within milliseconds. Measured: 1024 keeps 39k msg/s end to end with ~3 MB
/// less peak RSS than 4096.
const UPLINK_CAPACITY: usize = 1024;
/// Capacity of each connector's downlink channel.
pub(crate) const DOWNLINK_CAPACITY: usize = 256;
/// Capacity of the control channel to the ThingsBoard client.
const CONTROL_CAPACITY: usize = 1024;
/// Capacity of the channel to the services task.
const SERVICE_CAPACITY: usize = 256;
/// Most uplink messages the ingest task writes to storage in one `put`.
const INGEST_BATCH: usize = 512;
/// Least time between two background writes of `connected_devices.json`.
const REGISTRY_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// An error that stops the gateway from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
}

pub(crate) struct ConnectorSlot {
    pub(crate) name: Arc<str>,
    pub(crate) connector_type: Arc<str>,
    pub(crate) connector: Box<dyn Connector>,
    /// The connector file and its content, for connectors from the configuration.
    pub(crate) file: Option<PathBuf>,
    pub(crate) config: serde_json::Value,
}

/// Builds a [`Gateway`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tbgw::{Gateway, config};
/// let loaded = config::load(std::path::Path::new("/etc/tbgw/tb_gateway.json"))?;
/// let gateway = Gateway::builder().config(loaded).build()?;
/// gateway.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct GatewayBuilder {
    config: Option<LoadedConfig>,
    factories: Vec<Box<dyn ConnectorFactory>>,
    connectors: Vec<ConnectorSlot>,
    storage: Option<Arc<dyn EventStorage>>,
    registry_dir: Option<PathBuf>,
    shutdown_timeout: Option<Duration>,
    rpc_timeout: Option<Duration>,
    tb_options: Option<TbOptions>,
    remote_log: Option<RemoteLogHandle>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("connectors", &self.connectors.len())
            .field("factories", &self.factories.len())
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Uses a loaded configuration: its `thingsboard` and `storage` sections, and its
    /// `connectors[]`, built by the registered factories.
    pub fn config(mut self, config: LoadedConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Registers a factory for a connector type named in `connectors[].type`.
    pub fn factory(mut self, factory: Box<dyn ConnectorFactory>) -> Self {
        self.factories.push(factory);
        self
    }

    /// Registers several factories.
    pub fn factories(
        mut self,
        factories: impl IntoIterator<Item = Box<dyn ConnectorFactory>>,
    ) -> Self {
        self.factories.extend(factories);
        self
    }

    /// Adds a connector built by the embedding application.
    pub fn connector(
        mut self,
        name: &str,
        connector_type: &str,
        connector: Box<dyn Connector>,
    ) -> Self {
        self.connectors.push(ConnectorSlot {
            name: Arc::from(name),
            connector_type: Arc::from(connector_type),
            connector,
            file: None,
            config: serde_json::Value::Null,
        });
        self
    }

    /// Sends log records to ThingsBoard at the level it sets (`RemoteLoggingLevel`); install
    /// the matching layer from [`remote_logging`](crate::service::remote_log::remote_logging)
    /// in the application's `tracing` subscriber.
    pub fn remote_logging(mut self, handle: RemoteLogHandle) -> Self {
        self.remote_log = Some(handle);
        self
    }

    /// Uses this storage instead of the one in the configuration.
    pub fn storage(mut self, storage: Arc<dyn EventStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Where `connected_devices.json` lives (default: the config directory; without a config,
    /// the registry is not persisted).
    pub fn registry_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.registry_dir = Some(dir.into());
        self
    }

    /// ThingsBoard connection settings, when not taken from a configuration file.
    pub fn thingsboard(mut self, options: TbOptions) -> Self {
        self.tb_options = Some(options);
        self
    }

    /// How long shutdown may take in total (default 10 s).
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.shutdown_timeout = Some(t);
        self
    }

    /// How long a connector gets to answer an RPC that does not carry its own `timeout`
    /// (default 30 s).
    pub fn rpc_timeout(mut self, t: Duration) -> Self {
        self.rpc_timeout = Some(t);
        self
    }

    /// Validates the configuration and every connector in it without starting anything, and
    /// returns the keys that were accepted but are not used (what `tbgw check` prints).
    pub fn check(self) -> Result<Vec<IgnoredKey>, GatewayError> {
        self.build_inner(true).map(|(_, ignored)| ignored)
    }

    /// Validates everything and builds the gateway. No I/O besides reading the device registry.
    /// Keys that are accepted but not used are logged once.
    pub fn build(self) -> Result<Gateway, GatewayError> {
        let (gateway, ignored) = self.build_inner(false)?;
        for ig in &ignored {
            tracing::info!(file = %ig.file.display(), key = %ig.key, "Configuration key ignored (not used by tbgw).");
        }
        Ok(gateway)
    }

    fn build_inner(self, checking: bool) -> Result<(Gateway, Vec<IgnoredKey>), GatewayError> {
        let mut errors = Vec::new();
        let mut all_ignored = Vec::new();
        let mut connectors = self.connectors;
        let mut tb_options = self.tb_options;
        let mut storage = self.storage;
        let mut registry_dir = self.registry_dir;
        if let Some(cfg) = &self.config {
            all_ignored.extend(cfg.ignored.iter().cloned());
            if tb_options.is_none() {
                let mut o = TbOptions::new(&cfg.gateway.thingsboard, cfg.credentials.clone());
                if let Some(p) = &cfg.gateway.thingsboard.provisioning {
                    if cfg.credentials.username.is_none() && cfg.credentials.tls.is_none() {
                        o.provisioning = Some((p.clone(), cfg.dir.clone()));
                    }
                }
                tb_options = Some(o);
            }
            // `check` validates without touching the disk: durable storages are opened only
            // when the gateway is really built.
            if storage.is_none() && !checking {
                match crate::storage::from_config(&cfg.gateway.storage, &cfg.dir) {
                    Ok(s) => storage = Some(s),
                    Err(e) => errors.push(ConfigError::new(
                        &cfg.file,
                        "storage",
                        format!("cannot open the storage: {e}"),
                    )),
                }
            }
            if registry_dir.is_none() {
                registry_dir = Some(cfg.dir.clone());
            }
            for spec in &cfg.connectors {
                let Some(f) = self
                    .factories
                    .iter()
                    .find(|f| f.connector_type() == spec.connector_type)
                else {
                    errors.push(ConfigError::new(
                        &cfg.file,
                        format!("connectors[name={}].type", spec.name),
                        crate::connector::unknown_connector_type(
                            &spec.connector_type,
                            &self.factories,
                        ),
                    ));
                    continue;
                };
                let mut ignored = Vec::new();
                match f.build(spec, &mut ignored) {
                    Ok(c) => {
                        all_ignored.extend(ignored.into_iter().map(|key| IgnoredKey {
                            file: spec.file.clone(),
                            key,
                        }));
                        connectors.push(ConnectorSlot {
                            name: Arc::from(spec.name.as_str()),
                            connector_type: Arc::from(spec.connector_type.as_str()),
                            connector: c,
                            file: Some(spec.file.clone()),
                            // Only what the report service reads later: a copy of the
                            // whole tree doubled the peak memory of large files.
                            config: spec.config.top_level(crate::report::CONNECTOR_KEYS),
                        });
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).into());
        }
        let tb_options = tb_options.ok_or_else(|| {
            ConfigErrors(vec![ConfigError::new(
                "<builder>",
                "thingsboard",
                "no ThingsBoard connection configured",
            )])
        })?;
        let storage = storage
            .unwrap_or_else(|| Arc::new(MemoryStorage::new(10_000, 1000, Default::default())));
        let registry = match &registry_dir {
            Some(d) => DeviceRegistry::load(d),
            None => DeviceRegistry::in_memory(),
        };
        let connector_stats = connectors
            .iter()
            .map(|c| (c.name.to_string(), Arc::new(ConnectorStats::default())))
            .collect();
        let (tb_config, config_file, config_dir) = match &self.config {
            Some(c) => (
                c.gateway.thingsboard.clone(),
                Some(c.file.clone()),
                Some(c.dir.clone()),
            ),
            None => {
                // Without a configuration file: statistics telemetry and file-based services
                // are off; service RPCs still work.
                let mut t = crate::config::ThingsBoardConfig::default();
                t.statistics.enable = false;
                t.check_connectors_configuration_in_seconds = 0;
                (t, None, None)
            }
        };
        let device_filter = if tb_config.device_filtering.enable {
            let dir = config_dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let name = tb_config
                .device_filtering
                .filter_file
                .clone()
                .unwrap_or_else(|| "list.json".into());
            let path = crate::config::resolve_path(&dir, &name);
            match DeviceFilter::load(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    return Err(ConfigErrors(vec![ConfigError::new(
                        config_file.clone().unwrap_or_default(),
                        "thingsboard.deviceFiltering.filterFile",
                        e.to_string(),
                    )])
                    .into())
                }
            }
        } else {
            None
        };
        let gateway = Gateway {
            tb_options,
            storage,
            registry,
            connectors,
            stats: Arc::new(GatewayStats::default()),
            shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
            rpc_timeout: self.rpc_timeout.unwrap_or(Duration::from_secs(30)),
            connector_stats,
            factories: Arc::new(self.factories),
            tb_config,
            config_file,
            config_dir,
            device_filter,
            remote_log: self.remote_log,
            control: Default::default(),
        };
        Ok((gateway, all_ignored))
    }
}

/// A configured gateway, ready to [`run`](Gateway::run).
pub struct Gateway {
    tb_options: TbOptions,
    storage: Arc<dyn EventStorage>,
    registry: DeviceRegistry,
    connectors: Vec<ConnectorSlot>,
    stats: Arc<GatewayStats>,
    connector_stats: HashMap<String, Arc<ConnectorStats>>,
    shutdown_timeout: Duration,
    rpc_timeout: Duration,
    factories: Arc<Vec<Box<dyn ConnectorFactory>>>,
    tb_config: crate::config::ThingsBoardConfig,
    config_file: Option<PathBuf>,
    config_dir: Option<PathBuf>,
    device_filter: Option<DeviceFilter>,
    remote_log: Option<RemoteLogHandle>,
    control: crate::service::control::GatewayControl,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("host", &self.tb_options.host)
            .field("port", &self.tb_options.port)
            .field(
                "connectors",
                &self.connectors.iter().map(|c| &*c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// How a shutdown went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every task stopped within the deadline.
    pub clean: bool,
    /// Records still in storage, not confirmed by ThingsBoard.
    pub undelivered: usize,
    /// ThingsBoard asked for a restart (`gateway_restart`): the application should start the
    /// gateway again (the `tbgw` binary re-executes itself).
    pub restart_requested: bool,
}

impl Gateway {
    /// Starts building a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// The gateway's counters; keep the handle to read them while it runs.
    pub fn stats(&self) -> Arc<GatewayStats> {
        self.stats.clone()
    }

    /// The storage, e.g. to read its counters while the gateway runs.
    pub fn storage(&self) -> Arc<dyn EventStorage> {
        self.storage.clone()
    }

    /// Counters of a connector, by name; `None` for an unknown name.
    pub fn connector_stats(&self, name: &str) -> Option<Arc<ConnectorStats>> {
        self.connector_stats.get(name).cloned()
    }

    /// The host process's handle on the running gateway: each connector's state and device
    /// count, and a reload trigger (see [`GatewayControl`](crate::service::control::GatewayControl)).
    pub fn control(&self) -> crate::service::control::GatewayControl {
        self.control.clone()
    }

    /// Runs until `shutdown` completes, then shuts down gracefully within the deadline.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let Gateway {
            tb_options,
            storage,
            registry,
            connectors,
            stats,
            mut connector_stats,
            shutdown_timeout,
            rpc_timeout,
            factories,
            tb_config,
            config_file,
            config_dir,
            device_filter,
            remote_log,
            control,
        } = self;
        let tasks = TaskTracker::new();
        let root = CancellationToken::new();
        let connectors_token = root.child_token();
        let client_token = CancellationToken::new();
        let services_token = CancellationToken::new();
        let restart = CancellationToken::new();
        let restart_requested = Arc::new(AtomicBool::new(false));
        let migrate_to: Arc<Mutex<Option<Arc<dyn EventStorage>>>> = Arc::new(Mutex::new(None));

        let (uplink_tx, uplink_rx) = mpsc::channel(UPLINK_CAPACITY);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_CAPACITY);
        let (service_tx, service_rx) = mpsc::channel(SERVICE_CAPACITY);

        let (ingest_cmd_tx, ingest_cmd_rx) = mpsc::channel(64);
        let routes = Routes::default();
        let mut contexts = Vec::new();
        let mut manager = Manager::new(factories, ingest_cmd_tx);
        let mut connector_reports = HashMap::new();
        let mut shared_keys = HashMap::new();
        for mut slot in connectors {
            let (dtx, drx) = mpsc::channel(DOWNLINK_CAPACITY);
            routes.insert(slot.name.clone(), (slot.connector_type.clone(), dtx));
            let cstats = connector_stats
                .entry(slot.name.to_string())
                .or_default()
                .clone();
            let sender = UplinkSender::new(
                uplink_tx.clone(),
                slot.name.clone(),
                slot.connector_type.clone(),
                cstats.clone(),
            );
            // `supervise` starts every run with its own sub-task failure channel.
            let (cx, _) = ConnectorContext::new(
                slot.name.clone(),
                sender,
                drx,
                connectors_token.child_token(),
                cstats,
            );
            let (ctx, crx) = mpsc::channel(4);
            // Connectors with a file are re-read from it when needed, not kept twice.
            let kept = if slot.file.is_some() {
                serde_json::Value::Null
            } else {
                slot.config.clone()
            };
            manager.add(
                slot.name.clone(),
                slot.connector_type.clone(),
                slot.file.clone(),
                kept,
                ctx,
            );
            if let Some(file) = &slot.file {
                if let Ok(Some(st)) = crate::report::connector_strategy(&slot.config, file) {
                    connector_reports.insert(slot.name.to_string(), st);
                }
            }
            let keys = slot.connector.shared_attribute_keys();
            if !keys.is_empty() {
                shared_keys.insert(slot.name.clone(), keys);
            }
            // The connector is built; its configuration tree is not needed any more.
            slot.config = serde_json::Value::Null;
            contexts.push((slot, cx, crx));
        }
        // Kept for connectors added by remote configuration.
        let spare_uplink = uplink_tx.clone();
        drop(uplink_tx);

        let shared = Arc::new(Shared {
            registry: Mutex::new(registry),
            registry_saver: Default::default(),
            routes,
            stats: stats.clone(),
            rpc_timeout,
            service: Some(service_tx.clone()),
        });
        control.attach(&shared);
        manager.spawner = Some(crate::service::manager::Spawner {
            uplink: spare_uplink,
            token: connectors_token.clone(),
            shared: shared.clone(),
            downlink_capacity: DOWNLINK_CAPACITY,
            start: start_connector,
        });

        let mut cstats_list: Vec<(String, Arc<ConnectorStats>)> = connector_stats
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        cstats_list.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(addr) = tb_config.statistics.prometheus_address.clone() {
            let sources = crate::service::prometheus::Sources {
                gateway: stats.clone(),
                connectors: cstats_list.clone(),
                storage: storage.clone(),
            };
            match crate::service::prometheus::serve(&addr, sources, services_token.clone()).await {
                Ok(a) => tracing::info!(address = %a, "Prometheus metrics served on /metrics."),
                Err(e) => {
                    tracing::error!(address = %addr, error = %e, "Cannot serve Prometheus metrics.")
                }
            }
        }

        let saver_token = CancellationToken::new();
        let saver_task = {
            let shared = shared.clone();
            let cancel = saver_token.clone();
            tokio::spawn(async move {
                shared
                    .registry_saver
                    .run(&shared.registry, REGISTRY_SAVE_INTERVAL, cancel)
                    .await
            })
        };
        let ingest = tokio::spawn(ingest(
            uplink_rx,
            storage.clone(),
            shared.clone(),
            control_tx.clone(),
            Ingest {
                filter: device_filter,
                service: service_tx,
                sync_shared: !shared_keys.is_empty()
                    && tb_config.sync_devices_shared_attributes_on_connect,
                report: ReportFilter::new(tb_config.report_strategy.clone(), connector_reports),
                commands: ingest_cmd_rx,
            },
        ));
        if let Some(h) = &remote_log {
            // Upstream's per-connector `enableRemoteLogging` (default false).
            h.set_connectors(manager.handles.iter().filter_map(|c| {
                let raw =
                    crate::config::read_top_level(c.file.as_deref()?, &["enableRemoteLogging"])?;
                (raw.get("enableRemoteLogging") == Some(&serde_json::Value::Bool(true)))
                    .then(|| c.name.to_string())
            }));
        }
        let services = Services {
            cfg: tb_config,
            config_file,
            config_dir,
            shared: shared.clone(),
            control: control_tx.clone(),
            events: service_rx,
            storage: storage.clone(),
            stats: stats.clone(),
            connector_stats: cstats_list,
            manager,
            shared_keys,
            remote_log,
            restart: restart.clone(),
            restart_requested: restart_requested.clone(),
            cancel: services_token.clone(),
            tb_options: tb_options.clone(),
            reconfigure: false,
            migrate_to: migrate_to.clone(),
            host: control,
        };
        let services_task = tokio::spawn(services.run());
        let client = TbClient {
            opts: tb_options,
            storage: storage.clone(),
            shared: shared.clone(),
            control_rx,
            control_tx,
            cancel: client_token.clone(),
            tasks: tasks.clone(),
            trial: None,
            reconnect_now: false,
            reverted: None,
            limits: Default::default(),
            dp_per_record: 0,
        };
        let client_task = tokio::spawn(client.run());

        let mut connector_tasks = Vec::new();
        for (slot, cx, crx) in contexts {
            connector_tasks.push(tokio::spawn(supervise(slot, cx, crx)));
        }

        tokio::select! {
            _ = shutdown => {}
            _ = restart.cancelled() => tracing::warn!("Restarting the gateway as ThingsBoard asked."),
        }
        tracing::info!("Shutting down.");
        let deadline = Instant::now() + shutdown_timeout;
        let mut clean = true;

        // 1. Services (no more connector replacements), then connectors.
        services_token.cancel();
        let _ = tokio::time::timeout_at(deadline, services_task).await;
        connectors_token.cancel();
        for t in connector_tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                clean = false;
            }
        }
        // 2. Everything connectors sent is now in the channel; the ingest task ends once all
        // senders are gone (connector contexts are dropped with their tasks).
        match tokio::time::timeout_at(deadline, ingest).await {
            Ok(_) => {}
            Err(_) => {
                clean = false;
                tracing::warn!("Storage did not take the last uplink data before the deadline.");
            }
        }
        // 3. Storage.
        if let Err(e) = storage.flush().await {
            tracing::error!(error = %e, "Flushing storage failed.");
            clean = false;
        }
        // 4. ThingsBoard client (waits briefly for in-flight PUBACKs).
        client_token.cancel();
        if tokio::time::timeout_at(deadline, client_task)
            .await
            .is_err()
        {
            clean = false;
        }
        tasks.close();
        let _ = tokio::time::timeout_at(deadline, tasks.wait()).await;
        let target = migrate_to.lock().ok().and_then(|mut m| m.take());
        if let Some(target) = target {
            clean &= migrate(&storage, &target).await;
        }
        // The background writer finishes its write in progress; the last one is done here.
        saver_token.cancel();
        let _ = tokio::time::timeout_at(deadline, saver_task).await;
        if let Err(e) = shared.registry().persist_if_dirty() {
            tracing::warn!(error = %e, "Cannot write the device registry.");
        }
        let undelivered = storage.stats().len;
        tracing::info!(clean, undelivered, "Gateway stopped.");
        ShutdownReport {
            clean,
            undelivered,
            restart_requested: restart_requested.load(Ordering::SeqCst),
        }
    }
}

/// Moves every unacknowledged record from `from` into `to` (remote storage configuration),
/// acknowledging in `from` only what `to` has made durable.
async fn migrate(from: &Arc<dyn EventStorage>, to: &Arc<dyn EventStorage>) -> bool {
    from.rewind();
    let mut moved = 0usize;
    while from.stats().len > 0 {
        let batch = match tokio::time::timeout(Duration::from_secs(5), from.read(1000)).await {
            Ok(Ok(b)) if !b.records.is_empty() => b,
            Ok(Ok(_)) | Err(_) => break,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Reading the old storage failed; the rest stays there.");
                return false;
            }
        };
        let last = batch.last_seq();
        let records: Vec<_> = batch
            .records
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect();
        let n = records.len();
        if let Err(e) = to.put(records).await {
            tracing::error!(error = %e, "Writing to the new storage failed; the rest stays in the old one.");
            return false;
        }
        if let Err(e) = to.flush().await {
            tracing::error!(error = %e, "Flushing the new storage failed; the rest stays in the old one.");
            return false;
        }
        if from.ack(last).await.is_err() {
            return false;
        }
        moved += n;
    }
    let _ = to.flush().await;
    tracing::info!(moved, "Buffered records moved to the new storage.");
    true
}

/// A replacement connector on probation: the previous connector, who waits for the verdict,
/// and when probation ends.
type Probation = (
    Box<dyn Connector>,
    oneshot::Sender<Result<(), String>>,
    Instant,
);

/// What a connector's run ended with.
enum RunEnd {
    Finished(std::thread::Result<Result<(), crate::connector::ConnectorError>>),
    Command(ConnectorCommand),
}

/// Starts the supervisor of a connector added while the gateway runs (remote configuration).
fn start_connector(
    name: Arc<str>,
    connector_type: Arc<str>,
    connector: Box<dyn Connector>,
    file: Option<PathBuf>,
    cx: ConnectorContext,
    commands: mpsc::Receiver<ConnectorCommand>,
) {
    let slot = ConnectorSlot {
        name,
        connector_type,
        connector,
        file,
        config: serde_json::Value::Null,
    };
    tokio::spawn(supervise(slot, cx, commands));
}

#[cfg(any(test, feature = "test-util"))]
impl ConnectorContext {
    /// Runs `connector` with this context under the gateway's supervisor, as the gateway
    /// would: restarted with backoff after an error, a panic or a failed sub-task, until the
    /// context's cancellation token (the `cancel` of [`ConnectorContext::for_test`]'s
    /// `TestEnds`) fires. Sub-task failures then reach the supervisor, not the test's
    /// `task_failures` receiver.
    pub async fn supervise(self, connector: Box<dyn Connector>) {
        supervise_detached(connector, self).await;
    }
}

/// The supervisor without a gateway, for [`ConnectorContext::supervise`] in tests: no
/// commands, stops when the context's token fires.
#[cfg(any(test, feature = "test-util"))]
pub(crate) async fn supervise_detached(connector: Box<dyn Connector>, cx: ConnectorContext) {
    let name: Arc<str> = Arc::from(cx.name());
    let slot = ConnectorSlot {
        name: name.clone(),
        connector_type: name,
        connector,
        file: None,
        config: serde_json::Value::Null,
    };
    let (_commands, rx) = mpsc::channel(1);
    supervise(slot, cx, rx).await;
}

/// Runs one connector, restarting it with backoff after an error, a panic or a failed
/// sub-task ([`ConnectorContext::spawn`]), and applies replace / stop / start commands (hot
/// reload, remote configuration, `active_connectors`). Each run's sub-tasks are aborted when
/// the run ends.
pub(crate) async fn supervise(
    slot: ConnectorSlot,
    mut cx: ConnectorContext,
    mut commands: mpsc::Receiver<ConnectorCommand>,
) {
    let ConnectorSlot {
        name,
        mut connector,
        ..
    } = slot;
    let parent = cx.cancellation().clone();
    let span = tracing::info_span!("connector", name = %name);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut stopped = false;
    // A replacement on probation: the previous connector and who waits for the verdict.
    let mut probation: Option<Probation> = None;
    loop {
        if stopped {
            tokio::select! {
                _ = parent.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    None => break,
                    Some(ConnectorCommand::Start) => stopped = false,
                    Some(ConnectorCommand::Stop(tx)) => { let _ = tx.send(()); continue; }
                    Some(ConnectorCommand::Replace(c, tx)) => {
                        connector = c;
                        stopped = false;
                        let _ = tx.send(Ok(()));
                    }
                },
            }
        }
        let run_token = parent.child_token();
        let mut failures = cx.begin_run(run_token.clone());
        backoff.succeeded();
        let end = {
            let fut = {
                let _enter = span.enter();
                std::panic::AssertUnwindSafe(connector.run(&mut cx)).catch_unwind()
            };
            tokio::pin!(fut);
            let probation_end = probation.as_ref().map(|p| p.2).unwrap_or_else(Instant::now);
            loop {
                tokio::select! {
                    r = &mut fut => break RunEnd::Finished(r),
                    Some(failure) = failures.recv() => {
                        // Logged and counted where it failed; stop the rest of this run.
                        run_token.cancel();
                        if tokio::time::timeout(Duration::from_secs(10), &mut fut).await.is_err() {
                            tracing::warn!(connector = %name, "Connector did not stop within 10 s; dropping it.");
                        }
                        break RunEnd::Finished(Ok(Err(ConnectorError::Other(failure.to_string()))));
                    }
                    _ = tokio::time::sleep_until(probation_end), if probation.is_some() => {
                        if let Some((_, tx, _)) = probation.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    cmd = commands.recv(), if !parent.is_cancelled() => {
                        let Some(cmd) = cmd else { continue };
                        run_token.cancel();
                        if tokio::time::timeout(Duration::from_secs(10), &mut fut).await.is_err() {
                            tracing::warn!(connector = %name, "Connector did not stop within 10 s; dropping it.");
                        }
                        break RunEnd::Command(cmd);
                    }
                }
            }
        };
        cx.end_run();
        if parent.is_cancelled() {
            if let Some((_, tx, _)) = probation.take() {
                let _ = tx.send(Err("the gateway is shutting down".into()));
            }
            break;
        }
        let result = match end {
            RunEnd::Command(cmd) => {
                if let Some((_, tx, _)) = probation.take() {
                    let _ = tx.send(Ok(()));
                }
                match cmd {
                    ConnectorCommand::Replace(c, tx) => {
                        let old = std::mem::replace(&mut connector, c);
                        probation = Some((old, tx, Instant::now() + PROBATION));
                    }
                    ConnectorCommand::Stop(tx) => {
                        stopped = true;
                        let _ = tx.send(());
                    }
                    ConnectorCommand::Start => {}
                }
                backoff.reset();
                continue;
            }
            RunEnd::Finished(r) => r,
        };
        let reason = match &result {
            Ok(Ok(())) => "stopped by itself".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "panicked".to_string(),
        };
        if let Some((old, tx, _)) = probation.take() {
            // The replacement failed on probation: put the previous connector back at once.
            tracing::error!(connector = %name, reason = %reason, "New connector configuration failed; rolled back to the previous one.");
            connector = old;
            cx.stats().add_restarts(1);
            let _ = tx.send(Err(format!("the new configuration failed: {reason}")));
            continue;
        }
        match result {
            Ok(Ok(())) => {
                tracing::warn!(connector = %name, "Connector stopped by itself; restarting.");
            }
            Ok(Err(e)) => {
                tracing::error!(connector = %name, error = %e, "Connector failed; restarting.");
            }
            Err(_) => {
                tracing::error!(connector = %name, "Connector panicked; restarting.");
            }
        }
        cx.stats().add_restarts(1);
        if !backoff.wait(&parent).await {
            break;
        }
    }
}

/// Data-path services of the ingest task.
struct Ingest {
    filter: Option<DeviceFilter>,
    service: mpsc::Sender<ServiceEvent>,
    /// Some connector wants shared attributes synced when its devices connect.
    sync_shared: bool,
    /// Report strategies (skipped entirely while nothing can be filtered).
    report: ReportFilter,
    commands: mpsc::Receiver<IngestCommand>,
}

/// Takes uplink messages, registers devices and writes data to storage, in batches.
///
/// A connector that asked for a receipt gets it once its records are durable
/// ([`EventStorage::wait_durable`]), not merely written: the MQTT connector acknowledges its
/// broker only then. Receipts wait in `pending` while the next batches are already being
/// written, so group commit is not a per-batch stall.
async fn ingest(
    mut rx: mpsc::Receiver<UplinkMessage>,
    storage: Arc<dyn EventStorage>,
    shared: Arc<Shared>,
    control: mpsc::Sender<Control>,
    mut ing: Ingest,
) {
    let mut msgs = Vec::with_capacity(INGEST_BATCH);
    let mut pending: VecDeque<(u64, oneshot::Sender<StoreOutcome>, StoreOutcome)> = VecDeque::new();
    loop {
        let front = pending.front().map(|p| p.0);
        let next_report = ing.report.next_due().map(|due| {
            let wait = (due - crate::model::now_millis()).max(0) as u64;
            Instant::now() + Duration::from_millis(wait)
        });
        tokio::select! {
            _ = tokio::time::sleep_until(next_report.unwrap_or_else(Instant::now)), if next_report.is_some() => {
                let due = ing.report.due(crate::model::now_millis());
                if !due.is_empty() {
                    shared.stats.add_report_periodic(due.len() as u64);
                    let records: Vec<_> = due.into_iter().map(|(_, d)| d).collect();
                    let n = records.len();
                    match storage.put(records).await {
                        Ok(r) => shared.stats.add_stored(r.stored as u64),
                        Err(e) => {
                            shared.stats.add_storage_errors(1);
                            tracing::error!(error = %e, records = n, "Writing periodic reports to storage failed.");
                        }
                    }
                }
            }
            Some(cmd) = ing.commands.recv() => match cmd {
                IngestCommand::Purge(c) => ing.report.purge_connector(&c),
                IngestCommand::SetStrategy(c, st) => ing.report.set_connector_strategy(&c, st),
            },
            n = rx.recv_many(&mut msgs, INGEST_BATCH) => {
                if n == 0 {
                    break;
                }
                absorb(&mut msgs, &storage, &shared, &control, &mut pending, &mut ing).await;
            }
            r = storage.wait_durable(front.unwrap_or(0)), if front.is_some() => {
                let seq = front.unwrap_or(0);
                fire(&mut pending, seq, r.is_ok());
            }
        }
    }
    // Shutdown: everything is written; make it durable and answer every receipt.
    if let Some(&(last, ..)) = pending.back() {
        let ok = storage.flush().await.is_ok() && storage.wait_durable(last).await.is_ok();
        fire(&mut pending, last, ok);
    }
    tracing::debug!("Ingest finished: all uplink senders are gone.");
}

/// Answers every receipt waiting for a sequence number up to `seq`.
fn fire(
    pending: &mut VecDeque<(u64, oneshot::Sender<StoreOutcome>, StoreOutcome)>,
    seq: u64,
    durable: bool,
) {
    while pending.front().is_some_and(|p| p.0 <= seq) {
        if let Some((_, tx, outcome)) = pending.pop_front() {
            let _ = tx.send(if durable {
                outcome
            } else {
                StoreOutcome::Failed
            });
        }
    }
}

/// Registers devices, writes one batch of uplink messages and queues their receipts.
async fn absorb(
    msgs: &mut Vec<UplinkMessage>,
    storage: &Arc<dyn EventStorage>,
    shared: &Shared,
    control: &mpsc::Sender<Control>,
    pending: &mut VecDeque<(u64, oneshot::Sender<StoreOutcome>, StoreOutcome)>,
    ing: &mut Ingest,
) {
    let mut records = Vec::new();
    let mut acks = Vec::new();
    let now = crate::model::now_millis();
    let mut connected = Vec::new();
    {
        let mut reg = shared.registry();
        for m in msgs.drain(..) {
            match m {
                UplinkMessage::Data {
                    connector,
                    data,
                    ack,
                } => {
                    let mut n = 0;
                    for d in data {
                        if let Some(f) = &mut ing.filter {
                            if !f.allows(&connector, &d.device_name) {
                                shared.stats.add_devices_filtered(1);
                                continue;
                            }
                        }
                        let o = reg.observe_at(&d.device_name, &d.device_type, &connector, now);
                        if ing.sync_shared && o != Observed::Known {
                            connected.push((d.device_name.clone(), connector.clone()));
                        }
                        let d = if ing.report.is_passthrough() && d.report.is_none() {
                            Some(d)
                        } else {
                            let before = d.datapoints();
                            let out = ing.report.apply(&connector, d, now);
                            let after = out.as_ref().map_or(0, DeviceData::datapoints);
                            if before > after {
                                shared.stats.add_report_suppressed((before - after) as u64);
                            }
                            out
                        };
                        if let Some(d) = d {
                            records.push(d);
                            n += 1;
                        }
                    }
                    if let Some(a) = ack {
                        acks.push((a, n));
                    }
                }
                UplinkMessage::Connect {
                    connector,
                    device,
                    device_type,
                } => {
                    if let Some(f) = &mut ing.filter {
                        if !f.allows(&connector, &device) {
                            shared.stats.add_devices_filtered(1);
                            continue;
                        }
                    }
                    let o = reg.observe_at(&device, &device_type, &connector, now);
                    if ing.sync_shared && o != Observed::Known {
                        connected.push((device.clone(), connector.clone()));
                    }
                    if control
                        .try_send(Control::Connect {
                            device,
                            device_type,
                        })
                        .is_err()
                    {
                        shared.stats.queue_full("control", "device connect");
                    }
                }
                UplinkMessage::Disconnect { device, .. } => {
                    if reg.set_disconnected(&device)
                        && control.try_send(Control::Disconnect { device }).is_err()
                    {
                        shared.stats.queue_full("control", "device disconnect");
                    }
                }
                UplinkMessage::AttributeRequest {
                    device,
                    client,
                    keys,
                    reply,
                } => {
                    // Dropped if the client's queue is full: the requester times out.
                    if control
                        .try_send(Control::AttributeRequest {
                            device,
                            client,
                            keys,
                            reply,
                        })
                        .is_err()
                    {
                        shared.stats.queue_full("control", "attribute request");
                    }
                }
            }
        }
        // Written by the background saver: no file I/O on the ingest path.
        if reg.is_dirty() {
            shared.registry_saver.changed();
        }
    }
    for (device, connector) in connected {
        if ing
            .service
            .try_send(ServiceEvent::DeviceConnected { device, connector })
            .is_err()
        {
            shared
                .stats
                .queue_full("service", "device connected (shared attribute sync)");
        }
    }
    // Receipts of messages with no records are due as soon as everything before them is.
    let durable_floor = pending.back().map(|p| p.0).unwrap_or(0);
    if records.is_empty() {
        for (a, _) in acks {
            pending.push_back((durable_floor, a, StoreOutcome::Stored));
        }
        return;
    }
    let total = records.len();
    let report = match storage.put(records).await {
        Ok(r) => {
            shared.stats.add_stored(r.stored as u64);
            if r.dropped > 0 {
                shared.stats.add_storage_dropped(r.dropped as u64);
                tracing::warn!(
                    dropped = r.dropped,
                    "Storage is full; records dropped by the full policy."
                );
            }
            r
        }
        Err(e) => {
            shared.stats.add_storage_errors(1);
            tracing::error!(error = %e, records = total, "Writing to storage failed; the sources are not acknowledged.");
            for (a, _) in acks {
                pending.push_back((durable_floor, a, StoreOutcome::Failed));
            }
            return;
        }
    };
    // Under DropNewest the dropped records are the last ones of this put; report drops to the
    // senders whose records were among them, newest first.
    let mut dropped_left = if storage_policy_drops_newest(&report, total) {
        report.dropped
    } else {
        0
    };
    let seq = report.last_seq.max(durable_floor);
    let mut outcomes = Vec::with_capacity(acks.len());
    for (a, n) in acks.into_iter().rev() {
        let d = dropped_left.min(n);
        dropped_left -= d;
        outcomes.push((
            a,
            if d == 0 {
                StoreOutcome::Stored
            } else {
                StoreOutcome::Dropped(d)
            },
        ));
    }
    for (a, o) in outcomes.into_iter().rev() {
        pending.push_back((seq, a, o));
    }
}

fn storage_policy_drops_newest(r: &crate::storage::PutReport, total: usize) -> bool {
    // Stored + dropped == total only when the new records themselves were dropped.
    r.dropped > 0 && r.stored + r.dropped == total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeviceData, Value};
    use crate::storage::{FileStorage, FileStorageOptions};

    #[tokio::test]
    async fn migration_moves_every_unacknowledged_record_and_acks_the_old_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from: Arc<dyn EventStorage> =
            Arc::new(MemoryStorage::new(10_000, 100, Default::default()));
        let records: Vec<DeviceData> = (0..2500)
            .map(|i| {
                let mut d = DeviceData::new(format!("d{}", i % 7), "t");
                d.push_telemetry(i, "n", Value::Int(i));
                d
            })
            .collect();
        from.put(records).await.expect("put");
        // Some were read (in flight) but not acknowledged: they move too.
        let _ = from.read(300).await.expect("read");
        let to: Arc<dyn EventStorage> = Arc::new(
            FileStorage::open(FileStorageOptions::new(dir.path().join("data"))).expect("open"),
        );
        assert!(migrate(&from, &to).await);
        assert_eq!(from.stats().len, 0);
        assert_eq!(to.stats().len, 2500);
        let mut seen = Vec::new();
        while seen.len() < 2500 {
            let b = to.read(1000).await.expect("read");
            seen.extend(b.records.iter().map(|r| r.telemetry[0].ts));
        }
        assert_eq!(seen, (0..2500).collect::<Vec<i64>>(), "all, in order");
    }

    #[tokio::test]
    async fn messages_dropped_on_a_full_control_queue_are_counted() {
        let (control, mut control_rx) = mpsc::channel(1);
        let (service, _service_rx) = mpsc::channel(1);
        let (_commands_tx, commands) = mpsc::channel(1);
        let shared = Shared {
            registry: Mutex::new(DeviceRegistry::in_memory()),
            registry_saver: Default::default(),
            routes: Routes::default(),
            stats: Arc::new(GatewayStats::default()),
            rpc_timeout: Duration::from_secs(1),
            service: None,
        };
        let mut ing = Ingest {
            filter: None,
            service,
            sync_shared: false,
            report: ReportFilter::new(None, HashMap::new()),
            commands,
        };
        let storage: Arc<dyn EventStorage> =
            Arc::new(MemoryStorage::new(100, 100, Default::default()));
        let connector: Arc<str> = Arc::from("C");
        let connect = |device: &str| UplinkMessage::Connect {
            connector: connector.clone(),
            device: device.into(),
            device_type: "t".into(),
        };
        // The first connect fills the queue; the next two are dropped and counted.
        let mut msgs = vec![connect("a"), connect("b"), connect("c")];
        let mut pending = VecDeque::new();
        absorb(
            &mut msgs,
            &storage,
            &shared,
            &control,
            &mut pending,
            &mut ing,
        )
        .await;
        assert_eq!(shared.stats.queue_dropped.load(Ordering::Relaxed), 2);
        assert!(shared.stats.values().contains(&("queue_dropped", 2)));
        assert!(matches!(
            control_rx.try_recv(),
            Ok(Control::Connect { device, .. }) if device == "a"
        ));
    }
}
