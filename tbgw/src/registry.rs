//! Which connector owns which device, persisted in the config directory as
//! `connected_devices.json` (upstream's file and format), so devices are announced to
//! ThingsBoard again after a restart and downlink requests reach their connector.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The file name upstream uses.
pub const REGISTRY_FILE: &str = "connected_devices.json";

/// One known device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The owning connector's name.
    pub connector: Arc<str>,
    /// The device profile.
    pub device_type: String,
    /// The connector reported the device offline.
    pub disconnected: bool,
    /// The name ThingsBoard knows the device by, after a `gateway_device_renamed`
    /// notification (`None`: not renamed).
    pub renamed_to: Option<String>,
    /// When data or a connect for the device was last seen (ms since the epoch; 0: not since
    /// the gateway started). Not persisted.
    pub last_seen_ms: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredEntry {
    connector_name: String,
    #[serde(default)]
    connector_id: Option<String>,
    #[serde(default = "default_type")]
    device_type: String,
    #[serde(default)]
    disconnected: bool,
    #[serde(default)]
    renaming: Option<String>,
}

fn default_type() -> String {
    "default".into()
}

/// [`StoredEntry`] borrowed from a [`DeviceEntry`], for writing.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoredRef<'a> {
    connector_name: &'a str,
    connector_id: Option<&'a str>,
    device_type: &'a str,
    disconnected: bool,
    renaming: Option<&'a str>,
}

/// What [`DeviceRegistry::observe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The device was not known.
    New,
    /// Known and connected, nothing changed.
    Known,
    /// Known, but its owner, type or connection state changed.
    Changed,
}

/// The device registry. Not thread-safe by itself; the gateway keeps it behind a mutex.
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    path: Option<PathBuf>,
    devices: HashMap<String, DeviceEntry>,
    /// ThingsBoard name → original name, for every renamed device.
    reverse: HashMap<String, String>,
    /// Renames for devices not seen yet.
    pending_renames: HashMap<String, String>,
    dirty: bool,
}

impl DeviceRegistry {
    /// An empty registry that is never written to disk.
    pub fn in_memory() -> Self {
        DeviceRegistry::default()
    }

    /// Loads `dir/connected_devices.json` if it exists (both upstream formats: the object form
    /// and the older `[connectorName, type, newName]` list form). A malformed file is logged
    /// and replaced, never fatal: the registry only saves announcing devices again.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join(REGISTRY_FILE);
        let mut reg = DeviceRegistry {
            path: Some(path.clone()),
            ..DeviceRegistry::default()
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return reg,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "Cannot read the device registry; starting empty.");
                return reg;
            }
        };
        let parsed: Result<HashMap<String, Json>, _> = serde_json::from_str(&text);
        match parsed {
            Ok(map) => {
                for (name, v) in map {
                    let entry = match v {
                        Json::Array(a) => a.first().and_then(Json::as_str).map(|c| DeviceEntry {
                            connector: Arc::from(c),
                            device_type: a
                                .get(1)
                                .and_then(Json::as_str)
                                .unwrap_or("default")
                                .to_string(),
                            disconnected: false,
                            renamed_to: a.get(2).and_then(Json::as_str).map(str::to_string),
                            last_seen_ms: 0,
                        }),
                        other => {
                            serde_json::from_value::<StoredEntry>(other)
                                .ok()
                                .map(|s| DeviceEntry {
                                    connector: Arc::from(s.connector_name.as_str()),
                                    device_type: s.device_type,
                                    disconnected: s.disconnected,
                                    renamed_to: s.renaming,
                                    last_seen_ms: 0,
                                })
                        }
                    };
                    match entry {
                        Some(e) => {
                            reg.devices.insert(name, e);
                        }
                        None => {
                            tracing::warn!(file = %path.display(), device = %name, "Skipping a malformed device registry entry.")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "The device registry is not valid JSON; starting empty.")
            }
        }
        reg.reverse = reg
            .devices
            .iter()
            .filter_map(|(n, e)| e.renamed_to.as_ref().map(|r| (r.clone(), n.clone())))
            .collect();
        reg
    }

    /// Records that `connector` sent data for (or connected) `device`.
    pub fn observe(&mut self, device: &str, device_type: &str, connector: &Arc<str>) -> Observed {
        self.observe_at(device, device_type, connector, 0)
    }

    /// Like [`observe`](Self::observe), and records `now_ms` as the device's last activity.
    pub fn observe_at(
        &mut self,
        device: &str,
        device_type: &str,
        connector: &Arc<str>,
        now_ms: i64,
    ) -> Observed {
        match self.devices.get_mut(device) {
            Some(e) => {
                e.last_seen_ms = e.last_seen_ms.max(now_ms);
                let type_changed = !device_type.is_empty() && e.device_type != device_type;
                if e.connector != *connector || type_changed || e.disconnected {
                    e.connector = connector.clone();
                    if type_changed {
                        e.device_type = device_type.to_string();
                    }
                    e.disconnected = false;
                    self.dirty = true;
                    Observed::Changed
                } else {
                    Observed::Known
                }
            }
            None => {
                self.devices.insert(
                    device.to_string(),
                    DeviceEntry {
                        connector: connector.clone(),
                        device_type: if device_type.is_empty() {
                            "default".into()
                        } else {
                            device_type.to_string()
                        },
                        disconnected: false,
                        renamed_to: self.pending_renames.remove(device),
                        last_seen_ms: now_ms,
                    },
                );
                self.dirty = true;
                Observed::New
            }
        }
    }

    /// Marks a device offline; returns false if it is unknown.
    pub fn set_disconnected(&mut self, device: &str) -> bool {
        match self.devices.get_mut(device) {
            Some(e) => {
                if !e.disconnected {
                    e.disconnected = true;
                    self.dirty = true;
                }
                true
            }
            None => false,
        }
    }

    /// The connector that owns `device`.
    pub fn owner(&self, device: &str) -> Option<&Arc<str>> {
        self.devices.get(device).map(|e| &e.connector)
    }

    /// A device's entry.
    pub fn get(&self, device: &str) -> Option<&DeviceEntry> {
        self.devices.get(device)
    }

    /// Devices that are not marked offline, by ThingsBoard name, with their profiles.
    pub fn connected(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .devices
            .iter()
            .filter(|(_, e)| !e.disconnected)
            .map(|(n, e)| {
                (
                    e.renamed_to.clone().unwrap_or_else(|| n.clone()),
                    e.device_type.clone(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Number of known devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when no device is known.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The name ThingsBoard knows `device` by: its new name if it was renamed.
    pub fn tb_name<'a>(&'a self, device: &'a str) -> &'a str {
        match self
            .devices
            .get(device)
            .and_then(|e| e.renamed_to.as_deref())
        {
            Some(n) => n,
            None => device,
        }
    }

    /// True when some device is renamed (the publish path only maps names then).
    pub fn has_renames(&self) -> bool {
        !self.reverse.is_empty()
    }

    /// The connector's name for a device ThingsBoard calls `tb_name` (the original name of a
    /// renamed device, otherwise the name itself).
    pub fn original_name<'a>(&'a self, tb_name: &'a str) -> &'a str {
        self.reverse.get(tb_name).map_or(tb_name, String::as_str)
    }

    /// Applies ThingsBoard's `gateway_device_renamed`: `old` (the name ThingsBoard knew, which
    /// may itself be a rename) is now `new`. A device not seen yet keeps the rename for when it
    /// appears. Returns the original (connector-side) name.
    pub fn rename(&mut self, old: &str, new: &str) -> String {
        let original = self.original_name(old).to_string();
        self.reverse.remove(old);
        match self.devices.get_mut(&original) {
            Some(e) => {
                e.renamed_to = (new != original).then(|| new.to_string());
            }
            None => {
                self.pending_renames
                    .insert(original.clone(), new.to_string());
            }
        }
        if new != original {
            self.reverse.insert(new.to_string(), original.clone());
        }
        self.dirty = true;
        original
    }

    /// Applies ThingsBoard's `gateway_device_deleted`: forgets the device (by its ThingsBoard
    /// name) and any rename. Its next data announces it again. Returns false if unknown.
    pub fn remove(&mut self, tb_name: &str) -> bool {
        let original = self.original_name(tb_name).to_string();
        self.reverse.remove(tb_name);
        self.pending_renames.remove(&original);
        let found = self.devices.remove(&original).is_some();
        self.dirty |= found;
        found
    }

    /// Every known device with its owner, by ThingsBoard name (for `gateway_devices`).
    pub fn owners(&self) -> Vec<(String, Arc<str>)> {
        let mut v: Vec<_> = self
            .devices
            .iter()
            .map(|(n, e)| {
                (
                    e.renamed_to.clone().unwrap_or_else(|| n.clone()),
                    e.connector.clone(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Connected devices whose last activity is older than `cutoff_ms` and that were seen
    /// since the gateway started (original names).
    pub fn idle_since(&self, cutoff_ms: i64) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, e)| !e.disconnected && e.last_seen_ms > 0 && e.last_seen_ms < cutoff_ms)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Devices owned by `connector` (original names).
    pub fn devices_of(&self, connector: &str) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, e)| &*e.connector == connector)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// True when something changed since the last write (or snapshot) of the file.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The current content to write, if something changed (clears the change flag; a
    /// registry without a file only clears it). Cheap enough to take under the lock: it
    /// clones the entries, and [`Snapshot::write`] does the encoding and the I/O.
    pub(crate) fn snapshot_if_dirty(&mut self) -> Option<Snapshot> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        let path = self.path.clone()?;
        Some(Snapshot {
            path,
            devices: self
                .devices
                .iter()
                .map(|(n, e)| (n.clone(), e.clone()))
                .collect(),
        })
    }

    /// Marks the registry changed again (after a failed write).
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Writes the file now if something changed since the last write (atomically: a
    /// temporary file, synced, renamed over the old one). Blocking I/O: the gateway calls it
    /// only at shutdown and saves in the background otherwise.
    pub fn persist_if_dirty(&mut self) -> std::io::Result<()> {
        match self.snapshot_if_dirty() {
            Some(s) => s.write().inspect_err(|_| self.dirty = true),
            None => Ok(()),
        }
    }
}

/// The registry's content at one moment, written outside the lock.
#[derive(Debug)]
pub(crate) struct Snapshot {
    path: PathBuf,
    devices: Vec<(String, DeviceEntry)>,
}

impl Snapshot {
    /// Encodes upstream's format (pretty JSON, sorted by name) and replaces the file
    /// atomically. Blocking.
    pub(crate) fn write(mut self) -> std::io::Result<()> {
        self.devices.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let text =
            serde_json::to_vec_pretty(&Entries(&self.devices)).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself survives a power cut once the directory is synced too.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Entries encoded as upstream's object: name → entry.
struct Entries<'a>(&'a [(String, DeviceEntry)]);

impl Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, e)| {
            (
                n,
                StoredRef {
                    connector_name: &e.connector,
                    connector_id: None,
                    device_type: &e.device_type,
                    disconnected: e.disconnected,
                    renaming: e.renamed_to.as_deref(),
                },
            )
        }))
    }
}

fn lock(m: &Mutex<DeviceRegistry>) -> MutexGuard<'_, DeviceRegistry> {
    // The registry holds no invariant that a panic elsewhere could break.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Saves the registry file off the ingest path: the ingest task only marks the registry
/// changed ([`Saver::changed`]); a background task ([`Saver::run`]) writes it on a blocking
/// thread, at most once per interval however many devices appear meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Saver {
    changed: Notify,
    /// Serialises writes so that an older snapshot never replaces a newer file.
    writing: tokio::sync::Mutex<()>,
}

impl Saver {
    /// Asks for a write soon. No I/O, no allocation.
    pub(crate) fn changed(&self) {
        self.changed.notify_one();
    }

    /// Writes the file now if it changed (encoding and I/O on a blocking thread). On failure
    /// the registry stays marked changed, for the next write.
    pub(crate) async fn save(&self, registry: &Mutex<DeviceRegistry>) {
        let _writing = self.writing.lock().await;
        let snapshot = lock(registry).snapshot_if_dirty();
        let Some(snapshot) = snapshot else {
            return;
        };
        let error = match tokio::task::spawn_blocking(move || snapshot.write()).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        lock(registry).mark_dirty();
        tracing::warn!(error = %error, "Cannot write the device registry; retrying on the next change.");
    }

    /// The background writer: after each change, writes and then waits `every` before the
    /// next write, so a burst of new devices costs one write per interval. Returns when
    /// `cancel` fires (the caller writes a last time after that).
    pub(crate) async fn run(
        &self,
        registry: &Mutex<DeviceRegistry>,
        every: Duration,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.changed.notified() => {}
            }
            self.save(registry).await;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_survives_a_restart_and_reads_upstream_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mqtt: Arc<str> = Arc::from("MQTT");
        let mut r = DeviceRegistry::load(dir.path());
        assert_eq!(r.observe("a", "thermo", &mqtt), Observed::New);
        assert_eq!(r.observe("a", "thermo", &mqtt), Observed::Known);
        r.observe("b", "", &mqtt);
        r.set_disconnected("b");
        r.persist_if_dirty().unwrap();
        let r2 = DeviceRegistry::load(dir.path());
        assert_eq!(
            r2.connected(),
            vec![("a".to_string(), "thermo".to_string())]
        );
        assert_eq!(r2.owner("b").map(|c| &**c), Some("MQTT"));

        std::fs::write(
            dir.path().join(REGISTRY_FILE),
            r#"{"old": ["Modbus", "meter", null], "new": {"connectorName": "X", "deviceType": "t", "disconnected": false, "renaming": null}, "bad": 5}"#,
        )
        .unwrap();
        let r3 = DeviceRegistry::load(dir.path());
        assert_eq!(r3.len(), 2);
        assert_eq!(r3.get("old").unwrap().device_type, "meter");
    }

    #[test]
    fn a_corrupt_registry_file_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(REGISTRY_FILE), b"{not json").unwrap();
        assert!(DeviceRegistry::load(dir.path()).is_empty());
    }
}
