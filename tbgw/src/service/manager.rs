//! Running connectors can be replaced, stopped and started while the gateway runs: by hot
//! reload (a changed connector file), by remote configuration and by `active_connectors`.
//!
//! Each connector's supervisor task takes [`ConnectorCommand`]s. A replacement runs on
//! probation: if the new connector fails or panics within [`PROBATION`], the supervisor puts
//! the old one back and the command is answered with the error (roll back). Buffered data is
//! never touched: it is in storage, and the connector's downlink channel and counters stay the
//! same across replacements.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::config::{connector_spec, parse, IgnoredKey};
use crate::connector::{Connector, ConnectorFactory};

/// How long a replacement connector must run without failing before it is kept.
pub(crate) const PROBATION: Duration = Duration::from_secs(3);

/// A request to a connector's supervisor.
pub(crate) enum ConnectorCommand {
    /// Run this connector instead; answer once it survived probation (or was rolled back).
    Replace(Box<dyn Connector>, oneshot::Sender<Result<(), String>>),
    /// Stop the connector (it stays stopped until `Start` or `Replace`).
    Stop(oneshot::Sender<()>),
    /// Start a stopped connector again.
    Start,
}

impl std::fmt::Debug for ConnectorCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectorCommand::Replace(..) => "Replace",
            ConnectorCommand::Stop(_) => "Stop",
            ConnectorCommand::Start => "Start",
        })
    }
}

/// The manager's view of one connector.
#[derive(Debug)]
pub(crate) struct ConnectorHandle {
    pub name: Arc<str>,
    pub connector_type: Arc<str>,
    /// The connector file, for connectors from the configuration.
    pub file: Option<PathBuf>,
    /// The configuration of a connector without a file (for remote configuration echoes);
    /// connectors with a file are read from it when needed, so a large configuration is not
    /// held in memory twice.
    pub config: serde_json::Value,
    pub modified: Option<SystemTime>,
    pub commands: mpsc::Sender<ConnectorCommand>,
    pub running: bool,
}

/// Builds, replaces, stops and starts connectors.
pub(crate) struct Manager {
    pub factories: Arc<Vec<Box<dyn ConnectorFactory>>>,
    pub handles: Vec<ConnectorHandle>,
    /// Tells the ingest task about stopped connectors and new report strategies.
    pub ingest: mpsc::Sender<crate::messages::IngestCommand>,
    /// Starts connectors added while the gateway runs (None outside a running gateway).
    pub spawner: Option<Spawner>,
}

/// What a connector added while the gateway runs needs: the uplink, the connectors'
/// cancellation token and the downlink routes.
pub(crate) struct Spawner {
    pub uplink: mpsc::Sender<crate::uplink::UplinkMessage>,
    pub token: tokio_util::sync::CancellationToken,
    pub shared: Arc<crate::tb::Shared>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl ConnectorHandle {
    /// The configuration as it is now: the connector file's content, or the one kept in
    /// memory for connectors without a file.
    pub(crate) fn current_config(&self) -> serde_json::Value {
        match &self.file {
            Some(f) => parse::read_file(f).unwrap_or(serde_json::Value::Null),
            None => self.config.clone(),
        }
    }
}

fn modified(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Manager {
    pub(crate) fn new(
        factories: Arc<Vec<Box<dyn ConnectorFactory>>>,
        ingest: mpsc::Sender<crate::messages::IngestCommand>,
    ) -> Self {
        Manager {
            factories,
            handles: Vec::new(),
            ingest,
            spawner: None,
        }
    }

    pub(crate) fn add(
        &mut self,
        name: Arc<str>,
        connector_type: Arc<str>,
        file: Option<PathBuf>,
        config: serde_json::Value,
        commands: mpsc::Sender<ConnectorCommand>,
    ) {
        let m = file.as_deref().and_then(modified);
        let config = if file.is_some() {
            serde_json::Value::Null
        } else {
            config
        };
        self.handles.push(ConnectorHandle {
            name,
            connector_type,
            file,
            config,
            modified: m,
            commands,
            running: true,
        });
    }

    /// Validates a connector file's content and builds the connector. Errors are
    /// `file: key: reason` lines.
    pub(crate) fn build(
        &self,
        handle: &ConnectorHandle,
        file: &std::path::Path,
        value: serde_json::Value,
    ) -> Result<(Box<dyn Connector>, Vec<IgnoredKey>), String> {
        self.build_named(&handle.name, &handle.connector_type, file, value)
    }

    fn build_named(
        &self,
        name: &str,
        connector_type: &str,
        file: &std::path::Path,
        value: serde_json::Value,
    ) -> Result<(Box<dyn Connector>, Vec<IgnoredKey>), String> {
        let (spec, mut ignored) =
            connector_spec(name, connector_type, file, value).map_err(|e| e.to_string())?;
        let factory = self
            .factories
            .iter()
            .find(|f| f.connector_type() == connector_type)
            .ok_or_else(|| {
                crate::connector::unknown_connector_type(connector_type, &self.factories)
            })?;
        let mut keys = Vec::new();
        let c = factory.build(&spec, &mut keys).map_err(|e| e.to_string())?;
        ignored.extend(keys.into_iter().map(|key| IgnoredKey {
            file: file.to_path_buf(),
            key,
        }));
        Ok((c, ignored))
    }

    /// Replaces connector `idx` with one built from `value`; waits for probation.
    pub(crate) async fn replace(
        &mut self,
        idx: usize,
        value: serde_json::Value,
    ) -> Result<(), String> {
        let handle = &self.handles[idx];
        let file = handle
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.json", handle.name)));
        let (connector, ignored) = self.build(handle, &file, value.clone())?;
        for ig in ignored {
            tracing::info!(file = %ig.file.display(), key = %ig.key, "Configuration key ignored (not used by tbgw).");
        }
        let (tx, rx) = oneshot::channel();
        handle
            .commands
            .send(ConnectorCommand::Replace(connector, tx))
            .await
            .map_err(|_| "the connector's supervisor is gone".to_string())?;
        let r = rx
            .await
            .unwrap_or_else(|_| Err("the connector's supervisor is gone".into()));
        if r.is_ok() {
            let strategy = crate::report::connector_strategy(&value, &file)
                .ok()
                .flatten();
            let h = &mut self.handles[idx];
            let _ = self
                .ingest
                .send(crate::messages::IngestCommand::SetStrategy(
                    h.name.to_string(),
                    strategy,
                ))
                .await;
            if h.file.is_none() {
                h.config = value;
            }
            h.running = true;
        }
        r
    }

    /// Adds a connector while the gateway runs (remote configuration): validates `value`,
    /// builds the connector and starts its supervisor with a route of its own. `file` is where
    /// its configuration lives (written by the caller). Returns the new connector's counters.
    pub(crate) async fn add_new(
        &mut self,
        name: &str,
        connector_type: &str,
        file: PathBuf,
        value: serde_json::Value,
    ) -> Result<Arc<crate::stats::ConnectorStats>, String> {
        let spawner = self
            .spawner
            .as_ref()
            .ok_or_else(|| "connectors cannot be added to this gateway".to_string())?;
        if self.handles.iter().any(|h| &*h.name == name) {
            return Err(format!("a connector named `{name}` exists already"));
        }
        let (connector, ignored) = self.build_named(name, connector_type, &file, value.clone())?;
        for ig in ignored {
            tracing::info!(file = %ig.file.display(), key = %ig.key, "Configuration key ignored (not used by tbgw).");
        }
        let name: Arc<str> = Arc::from(name);
        let connector_type: Arc<str> = Arc::from(connector_type);
        let (dtx, drx) = mpsc::channel(crate::gateway::DOWNLINK_CAPACITY);
        spawner
            .shared
            .routes
            .insert(name.clone(), (connector_type.clone(), dtx));
        let stats = Arc::new(crate::stats::ConnectorStats::default());
        let sender = crate::uplink::UplinkSender::new(
            spawner.uplink.clone(),
            name.clone(),
            connector_type.clone(),
            stats.clone(),
        );
        let (cx, _) = crate::connector::ConnectorContext::new(
            name.clone(),
            sender,
            drx,
            spawner.token.child_token(),
            stats.clone(),
        );
        let (ctx, crx) = mpsc::channel(4);
        let strategy = crate::report::connector_strategy(&value, &file)
            .ok()
            .flatten();
        let _ = self
            .ingest
            .send(crate::messages::IngestCommand::SetStrategy(
                name.to_string(),
                strategy,
            ))
            .await;
        let slot = crate::gateway::ConnectorSlot {
            name: name.clone(),
            connector_type: connector_type.clone(),
            connector,
            file: Some(file.clone()),
            config: serde_json::Value::Null,
        };
        tokio::spawn(crate::gateway::supervise(slot, cx, crx));
        self.add(name.clone(), connector_type, Some(file), value, ctx);
        tracing::info!(connector = %name, "Connector added (remote configuration).");
        Ok(stats)
    }

    /// Removes a connector while the gateway runs: stops it, ends its supervisor and drops its
    /// route. Returns whether it was running.
    pub(crate) async fn remove(&mut self, name: &str) -> bool {
        let Some(idx) = self.handles.iter().position(|h| &*h.name == name) else {
            return false;
        };
        let h = self.handles.remove(idx);
        let was_running = h.running;
        if h.running {
            let (tx, rx) = oneshot::channel();
            if h.commands.send(ConnectorCommand::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
            let _ = self
                .ingest
                .send(crate::messages::IngestCommand::Purge(h.name.to_string()))
                .await;
        }
        // A stopped supervisor ends when its command channel closes.
        drop(h);
        if let Some(sp) = &self.spawner {
            sp.shared.routes.remove(name);
        }
        tracing::info!(connector = %name, "Connector removed (remote configuration).");
        was_running
    }

    /// Stops or starts connectors so that exactly those named in `active` run. Returns the
    /// names stopped.
    pub(crate) async fn set_active(&mut self, active: &[String]) -> Vec<Arc<str>> {
        let mut stopped = Vec::new();
        for h in &mut self.handles {
            let want = active.iter().any(|a| a.as_str() == &*h.name);
            if want && !h.running {
                if h.commands.send(ConnectorCommand::Start).await.is_ok() {
                    h.running = true;
                    tracing::info!(connector = %h.name, "Connector started (active_connectors).");
                }
            } else if !want && h.running {
                let (tx, rx) = oneshot::channel();
                if h.commands.send(ConnectorCommand::Stop(tx)).await.is_ok() {
                    let _ = rx.await;
                    h.running = false;
                    let _ = self
                        .ingest
                        .send(crate::messages::IngestCommand::Purge(h.name.to_string()))
                        .await;
                    stopped.push(h.name.clone());
                    tracing::info!(connector = %h.name, "Connector stopped (active_connectors).");
                }
            }
        }
        stopped
    }

    /// Hot reload: every connector whose file changed since it was last applied is rebuilt
    /// and replaced. A file that does not parse or validate, or a connector that fails on
    /// probation, leaves the running one in place (logged with file, key and reason).
    /// Returns (applied, rejected).
    pub(crate) async fn reload_changed(&mut self) -> (usize, usize) {
        let (mut applied, mut rejected) = (0, 0);
        for idx in 0..self.handles.len() {
            let Some(file) = self.handles[idx].file.clone() else {
                continue;
            };
            let now = modified(&file);
            if now.is_none() || now == self.handles[idx].modified {
                continue;
            }
            self.handles[idx].modified = now;
            let name = self.handles[idx].name.clone();
            let value = match parse::read_file(&file) {
                Ok(v) => v,
                Err(e) => {
                    rejected += 1;
                    tracing::error!(connector = %name, error = %e, "Changed connector file rejected; the connector keeps its previous configuration.");
                    continue;
                }
            };
            match self.replace(idx, value).await {
                Ok(()) => {
                    applied += 1;
                    tracing::info!(connector = %name, file = %file.display(), "Connector file changed; connector restarted with the new configuration.");
                }
                Err(e) => {
                    rejected += 1;
                    tracing::error!(connector = %name, error = %e, "Changed connector file rejected; the connector keeps its previous configuration.");
                }
            }
        }
        (applied, rejected)
    }
}
