//! A handle on a running gateway for the process that hosts it: what a status view needs
//! beyond the counters (each connector's state and device count), and a reload trigger (the
//! `tbgw` binary pulls it on `SIGHUP`).
//!
//! Get it with [`Gateway::control`](crate::Gateway::control) before
//! [`run`](crate::Gateway::run); it stays valid (and empty) after the gateway stopped.

use std::sync::{Arc, RwLock, Weak};

use tokio::sync::Notify;

use crate::tb::Shared;

/// One connector as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorStatus {
    /// The connector's name.
    pub name: String,
    /// Its type (`mqtt`, `modbus`, ...).
    pub connector_type: String,
    /// False when stopped by remote configuration (`active_connectors`).
    pub running: bool,
    /// Devices it reported that the gateway knows (connected or not yet forgotten).
    pub devices: usize,
}

#[derive(Debug, Default)]
struct Inner {
    reload: Notify,
    shared: RwLock<Weak<Shared>>,
    /// (name, type, running), as the services task last saw them.
    connectors: RwLock<Vec<(String, String, bool)>>,
}

/// See the [module docs](self). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct GatewayControl {
    inner: Arc<Inner>,
}

impl GatewayControl {
    /// Asks the gateway to re-read every connector file that changed and apply it connector
    /// by connector, exactly as the periodic check (`checkConnectorsConfigurationInSeconds`)
    /// and remote configuration do (probation and roll back). A request made while one is
    /// being handled is kept for afterwards.
    pub fn reload(&self) {
        self.inner.reload.notify_one();
    }

    /// Each connector's state and device count (empty before the gateway runs).
    pub fn connectors(&self) -> Vec<ConnectorStatus> {
        let list = self
            .inner
            .connectors
            .read()
            .map(|c| c.clone())
            .unwrap_or_default();
        let shared = self.inner.shared.read().ok().and_then(|w| w.upgrade());
        list.into_iter()
            .map(|(name, connector_type, running)| {
                let devices = shared
                    .as_ref()
                    .map(|s| s.registry().devices_of(&name).len())
                    .unwrap_or(0);
                ConnectorStatus {
                    name,
                    connector_type,
                    running,
                    devices,
                }
            })
            .collect()
    }

    /// Devices the gateway knows, all connectors together.
    pub fn devices(&self) -> usize {
        self.inner
            .shared
            .read()
            .ok()
            .and_then(|w| w.upgrade())
            .map(|s| s.registry().len())
            .unwrap_or(0)
    }

    pub(crate) async fn reload_requested(&self) {
        self.inner.reload.notified().await;
    }

    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        if let Ok(mut w) = self.inner.shared.write() {
            *w = Arc::downgrade(shared);
        }
    }

    pub(crate) fn set_connectors(&self, list: Vec<(String, String, bool)>) {
        if let Ok(mut c) = self.inner.connectors.write() {
            if *c != list {
                *c = list;
            }
        }
    }
}
