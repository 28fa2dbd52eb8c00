//! Remote configuration (`thingsboard.remoteConfiguration`): ThingsBoard's shared attributes
//! of the gateway device are the desired configuration, client attributes the reported one.
//!
//! After each connect the gateway reports `active_connectors`, one attribute per connector
//! (`{name, type, configuration, configurationJson, id, configVersion, grpc_key, ts, ...}`),
//! `general_configuration`, `storage_configuration`, `grpc_configuration` (each with `ts`) and
//! `logs_configuration` (`logs.json` as read, with `ts`), and requests the shared attributes
//! named `general_configuration`, `storage_configuration`, `active_connectors` and after the
//! connectors.
//!
//! * A connector attribute whose `configurationJson` differs from what runs is validated and
//!   built; the new connector replaces the running one on probation, and only when it survived
//!   is the file written to disk (after a backup in `backup/`, newest 10 kept). A configuration
//!   that does not validate, or a connector that fails on probation, is rolled back: the old
//!   connector keeps running, the file is untouched, and the reason is reported as the client
//!   attribute `remoteConfigurationError`. Buffered data is never touched.
//! * `active_connectors` stops connectors that are not listed and starts listed ones that were
//!   stopped; devices of a stopped connector are disconnected in ThingsBoard.
//! * An unchanged attribute is not applied again (upstream re-creates its storage on every
//!   reconnect, #2124).
//! * `general_configuration` (the `thingsboard` section): validated; when the connection
//!   settings changed, the client tries the new ones for 30 s and restores the old ones if no
//!   session becomes ready; only then is `tb_gateway.json` written (after a backup) and the
//!   other service settings (statistics, inactivity, ...) applied.
//! * `storage_configuration`: validated, written, and applied by a graceful restart of the
//!   gateway during which every buffered record is moved into the new storage (a memory
//!   storage cannot carry records across the restart, so switching *to* memory is refused
//!   while records are buffered).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use tokio::sync::oneshot;

use super::Services;
use crate::config::{parse, StorageConfig, ThingsBoardConfig};
use crate::tb::{topic, Control};
use crate::TbOptions;

/// Backups kept per file.
const BACKUPS: usize = 10;

#[derive(Debug, Default)]
pub(crate) struct RemoteConfig {
    next_request: u64,
    /// The last value rejected per key: ThingsBoard sends the desired state again after every
    /// reconnect, and a rejected one is not tried again until it changes.
    rejected: std::collections::HashMap<String, Json>,
}

fn main_file_section(file: Option<&Path>, key: &str) -> Json {
    file.and_then(|f| parse::read_file(f).ok())
        .and_then(|v| v.get(key).cloned())
        .unwrap_or(Json::Null)
}

/// Copies `file` to `<dir>/backup/<name>.backup.<unix>.json`, keeping the newest [`BACKUPS`].
pub(crate) fn backup(dir: &Path, file: &Path) -> std::io::Result<Option<PathBuf>> {
    if !file.exists() {
        return Ok(None);
    }
    let bdir = dir.join("backup");
    std::fs::create_dir_all(&bdir)?;
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let target = bdir.join(format!("{stem}.backup.{now}.json"));
    std::fs::copy(file, &target)?;
    let prefix = format!("{stem}.backup.");
    let mut olds: Vec<PathBuf> = std::fs::read_dir(&bdir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    olds.sort();
    while olds.len() > BACKUPS {
        let _ = std::fs::remove_file(olds.remove(0));
    }
    Ok(Some(target))
}

/// Writes `value` to `file` atomically (temporary file renamed over it).
fn write_json(file: &Path, value: &Json) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = file.with_extension("json.tbgw-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

impl RemoteConfig {
    pub(crate) async fn on_ready(&mut self, s: &mut Services) {
        s.publish(topic::ME_ATTRIBUTES, self.reported(s));
        let mut keys = vec![
            "RemoteLoggingLevel".to_string(),
            "general_configuration".into(),
            "storage_configuration".into(),
            "active_connectors".into(),
        ];
        keys.extend(s.manager.handles.iter().map(|h| h.name.to_string()));
        self.next_request += 1;
        s.publish(
            &format!("{}{}", topic::ME_ATTRIBUTES_REQUEST, self.next_request),
            json!({"sharedKeys": keys.join(",")}),
        );
    }

    /// The configuration as it runs, as client attributes.
    fn reported(&self, s: &Services) -> Json {
        let mut m = Map::new();
        m.insert("active_connectors".into(), active_connectors(s));
        let now = crate::model::now_millis();
        for h in &s.manager.handles {
            m.insert(h.name.to_string(), connector_attr(h, now));
        }
        // As upstream: each section with the time it was reported (`ts`), a missing
        // `grpc` section as `{}`, and `logs.json` beside the main file as read.
        for (key, section) in [
            ("general_configuration", "thingsboard"),
            ("storage_configuration", "storage"),
            ("grpc_configuration", "grpc"),
        ] {
            let mut v = main_file_section(s.config_file.as_deref(), section);
            if v.is_null() && section == "grpc" {
                v = json!({});
            }
            m.insert(key.into(), with_ts(v, now));
        }
        m.insert(
            "logs_configuration".into(),
            with_ts(logs_configuration(s.config_dir.as_deref()), now),
        );
        Json::Object(m)
    }

    pub(crate) async fn on_shared(&mut self, s: &mut Services, attrs: &Json) {
        let Some(map) = attrs.as_object() else { return };
        // Connector configurations: the attribute named after a running connector.
        for idx in 0..s.manager.handles.len() {
            let name = s.manager.handles[idx].name.clone();
            let Some(desired) = map.get(&*name) else {
                continue;
            };
            let Some(cfg) = desired_config(desired, &name) else {
                s.stats.add_remote_config_rejected(1);
                report_error(s, &format!("{name}: configurationJson is missing"));
                continue;
            };
            // As the Python gateway: an attribute not newer than the file it configures is
            // what runs already.
            let file_ms = s.manager.handles[idx].file.as_deref().and_then(mtime_ms);
            let older = matches!(
                (desired.get("ts").and_then(Json::as_i64), file_ms),
                (Some(ts), Some(m)) if ts <= m
            );
            if (older && s.manager.handles[idx].running)
                || strip_common(&cfg) == strip_common(&s.manager.handles[idx].current_config())
                || self.rejected.get(&*name) == Some(&cfg)
            {
                continue;
            }
            match s.manager.replace(idx, cfg.clone()).await {
                Ok(()) => {
                    s.stats.add_remote_config_applied(1);
                    tracing::info!(connector = %name, "Remote configuration applied to the connector.");
                    if let (Some(dir), Some(file)) =
                        (s.config_dir.clone(), s.manager.handles[idx].file.clone())
                    {
                        if let Err(e) = backup(&dir, &file).and_then(|_| write_json(&file, &cfg)) {
                            tracing::error!(file = %file.display(), error = %e, "Cannot write the new connector configuration; it runs but is not saved.");
                        }
                        s.manager.handles[idx].modified =
                            std::fs::metadata(&file).and_then(|m| m.modified()).ok();
                    }
                    // The update is reported back with its own `ts`, so ThingsBoard's UI
                    // shows the connector in sync.
                    s.publish(
                        topic::ME_ATTRIBUTES,
                        json!({ name.to_string(): applied_echo(desired, &cfg) }),
                    );
                }
                Err(e) => {
                    self.rejected.insert(name.to_string(), cfg.clone());
                    s.stats.add_remote_config_rejected(1);
                    tracing::error!(connector = %name, error = %e, "Remote configuration rejected; the connector keeps its previous configuration.");
                    report_error(s, &format!("{name}: {e}"));
                    let h = &s.manager.handles[idx];
                    let ts = h.file.as_deref().and_then(mtime_ms).unwrap_or(0);
                    let echo = json!({ name.to_string(): connector_attr(h, ts) });
                    s.publish(topic::ME_ATTRIBUTES, echo);
                }
            }
        }
        let wanted: Option<Vec<String>> = map
            .get("active_connectors")
            .and_then(Json::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            });
        // Connectors added (or renamed) from ThingsBoard's UI: an attribute with a connector
        // type and configuration under a name that does not run, listed in
        // `active_connectors` when that comes along.
        let mut added = false;
        for (key, desired) in map {
            if RESERVED_KEYS.contains(&key.as_str())
                || s.manager.handles.iter().any(|h| &*h.name == key.as_str())
                || desired.get("type").and_then(Json::as_str).is_none()
                || wanted.as_ref().is_some_and(|w| !w.contains(key))
            {
                continue;
            }
            let Some(cfg) = desired_config(desired, key) else {
                continue;
            };
            if self.rejected.get(key) == Some(&cfg) {
                continue;
            }
            match add_connector(s, key, desired, &cfg).await {
                Ok(()) => {
                    added = true;
                    s.stats.add_remote_config_applied(1);
                    s.publish(
                        topic::ME_ATTRIBUTES,
                        json!({ key.clone(): applied_echo(desired, &cfg) }),
                    );
                }
                Err(e) => {
                    self.rejected.insert(key.clone(), cfg);
                    s.stats.add_remote_config_rejected(1);
                    tracing::error!(connector = %key, error = %e, "Connector from remote configuration not added.");
                    report_error(s, &format!("{key}: {e}"));
                }
            }
        }
        if added && wanted.is_none() {
            save_connector_list(s);
            s.publish(
                topic::ME_ATTRIBUTES,
                json!({"active_connectors": active_connectors(s)}),
            );
        }
        // Which connectors run.
        if let Some(names) = wanted {
            // A listed connector that is not known: ask for its attribute, which adds it.
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| !s.manager.handles.iter().any(|h| &*h.name == n.as_str()))
                .filter(|n| !map.contains_key(n.as_str()))
                .collect();
            if !unknown.is_empty() {
                self.next_request += 1;
                let keys: Vec<&str> = unknown.iter().map(|n| n.as_str()).collect();
                s.publish(
                    &format!("{}{}", topic::ME_ATTRIBUTES_REQUEST, self.next_request),
                    json!({"sharedKeys": keys.join(",")}),
                );
            }
            let stopped = s.manager.set_active(&names).await;
            if added || !stopped.is_empty() {
                save_connector_list(s);
            }
            for c in &stopped {
                let devices = {
                    let mut reg = s.shared.registry();
                    let ds = reg.devices_of(c);
                    let mut out = Vec::new();
                    for d in ds {
                        reg.set_disconnected(&d);
                        out.push(reg.tb_name(&d).to_string());
                    }
                    if reg.is_dirty() {
                        s.shared.registry_saver.changed();
                    }
                    out
                };
                for device in devices {
                    if s.control.try_send(Control::Disconnect { device }).is_err() {
                        s.stats.queue_full("control", "device disconnect");
                    }
                }
            }
            s.publish(
                topic::ME_ATTRIBUTES,
                json!({"active_connectors": active_connectors(s)}),
            );
        }
        for (key, section) in [
            ("general_configuration", "thingsboard"),
            ("storage_configuration", "storage"),
        ] {
            let Some(desired) = map.get(key).filter(|v| v.is_object()) else {
                continue;
            };
            // The `ts` ThingsBoard's UI adds is compared by the UI, not part of the section.
            let v = &without_ts(desired);
            if *v == main_file_section(s.config_file.as_deref(), section)
                || self.rejected.get(key) == Some(v)
            {
                continue;
            }
            let r = if section == "thingsboard" {
                apply_general(s, v).await
            } else {
                apply_storage(s, v).await
            };
            match r {
                Ok(()) => {
                    s.stats.add_remote_config_applied(1);
                    tracing::info!(key, "Remote configuration applied.");
                    // Reported back with the update's own `ts`, as for connectors.
                    s.publish(topic::ME_ATTRIBUTES, json!({ key: desired }));
                }
                Err(e) => {
                    self.rejected.insert(key.to_string(), v.clone());
                    s.stats.add_remote_config_rejected(1);
                    tracing::error!(key, error = %e, "Remote configuration rejected; the previous one stays.");
                    report_error(s, &format!("{key}: {e}"));
                    let current = main_file_section(s.config_file.as_deref(), section);
                    let ts = s.config_file.as_deref().and_then(mtime_ms).unwrap_or(0);
                    s.publish(topic::ME_ATTRIBUTES, json!({ key: with_ts(current, ts) }));
                }
            }
        }
    }
}

fn paths(s: &Services) -> Result<(PathBuf, PathBuf), String> {
    match (&s.config_file, &s.config_dir) {
        (Some(f), Some(d)) => Ok((f.clone(), d.clone())),
        _ => Err("the gateway was not started from a configuration file".into()),
    }
}

/// Writes `value` as `section` of the main file, after a backup.
fn save_section(file: &Path, dir: &Path, section: &str, value: &Json) -> Result<(), String> {
    let mut main = parse::read_file(file).map_err(|e| e.to_string())?;
    main[section] = value.clone();
    backup(dir, file)
        .and_then(|_| write_json(file, &main))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))
}

async fn apply_general(s: &mut Services, v: &Json) -> Result<(), String> {
    let (file, dir) = paths(s)?;
    let mut ignored = Vec::new();
    let cfg: ThingsBoardConfig =
        parse::from_value(&file, "thingsboard", v, &mut ignored).map_err(|e| e.to_string())?;
    cfg.validate(&file).map_err(|e| e.to_string())?;
    let creds = cfg
        .security
        .resolve(&file, &dir, cfg.port)
        .map_err(|e| e.to_string())?;
    let opts = TbOptions::new(&cfg, creds);
    if opts != s.tb_options {
        let (tx, rx) = oneshot::channel();
        s.control
            .send(Control::Switch {
                opts: Box::new(opts.clone()),
                reply: tx,
            })
            .await
            .map_err(|_| "the ThingsBoard client is gone".to_string())?;
        rx.await
            .map_err(|_| "the ThingsBoard client is gone".to_string())??;
        s.tb_options = opts;
    }
    save_section(&file, &dir, "thingsboard", v)?;
    s.cfg = cfg;
    s.reconfigure = true;
    Ok(())
}

async fn apply_storage(s: &mut Services, v: &Json) -> Result<(), String> {
    let (file, dir) = paths(s)?;
    let mut ignored = Vec::new();
    let new: StorageConfig =
        parse::from_value(&file, "storage", v, &mut ignored).map_err(|e| e.to_string())?;
    new.validate(&file).map_err(|e| e.to_string())?;
    let old_json = main_file_section(Some(&file), "storage");
    let mut ig = Vec::new();
    let old: Option<StorageConfig> = parse::from_value(&file, "storage", &old_json, &mut ig).ok();
    let buffered = s.storage.stats().len;
    let same_place = old.as_ref().is_some_and(|o| {
        o.kind == new.kind
            && o.data_folder_path == new.data_folder_path
            && o.data_file_path == new.data_file_path
    });
    if new.kind == "memory" && buffered > 0 {
        return Err(format!(
            "{buffered} records are buffered; a memory storage cannot carry them across the restart that applies it. Deliver them first or choose file, sqlite or rocksdb"
        ));
    }
    let target = if same_place || buffered == 0 {
        None
    } else {
        // Opened now so that a storage that cannot open is rejected before anything changes.
        Some(
            crate::storage::from_config(&new, &dir)
                .map_err(|e| format!("cannot open the new storage: {e}"))?,
        )
    };
    save_section(&file, &dir, "storage", v)?;
    if let Ok(mut m) = s.migrate_to.lock() {
        *m = target;
    }
    tracing::warn!(buffered, "Storage configuration changed: restarting the gateway to apply it; buffered records move to the new storage.");
    s.restart_requested
        .store(true, std::sync::atomic::Ordering::SeqCst);
    s.restart.cancel();
    Ok(())
}

/// The names of the running connectors.
fn active_connectors(s: &Services) -> Json {
    Json::Array(
        s.manager
            .handles
            .iter()
            .filter(|h| h.running)
            .map(|h| Json::String(h.name.to_string()))
            .collect(),
    )
}

fn report_error(s: &Services, text: &str) {
    s.publish(
        topic::ME_ATTRIBUTES,
        json!({"remoteConfigurationError": text}),
    );
}

/// Attributes that are not connector configurations.
const RESERVED_KEYS: &[&str] = &[
    "active_connectors",
    "general_configuration",
    "storage_configuration",
    "grpc_configuration",
    "logs_configuration",
    "RemoteLoggingLevel",
    "remoteConfigurationError",
    "Version",
];

/// Keys of a connector file that the UI keeps beside `configurationJson`.
const BESIDE_KEYS: &[&str] = &[
    "logLevel",
    "enableRemoteLogging",
    "reportStrategy",
    "configVersion",
];

/// The file's modification time in ms since the epoch.
fn mtime_ms(file: &Path) -> Option<i64> {
    let t = std::fs::metadata(file).and_then(|m| m.modified()).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// The connector file a desired connector attribute describes: its `configurationJson` with
/// the keys the UI keeps beside it (`logLevel`, `enableRemoteLogging`, `reportStrategy`,
/// `configVersion`) and the name put back, as the Python gateway writes it.
fn desired_config(desired: &Json, name: &str) -> Option<Json> {
    let mut cfg = desired.get("configurationJson")?.as_object()?.clone();
    for k in BESIDE_KEYS {
        if let Some(v) = desired.get(*k) {
            cfg.entry(k.to_string()).or_insert_with(|| v.clone());
        }
    }
    cfg.insert("name".into(), Json::String(name.to_string()));
    Some(Json::Object(cfg))
}

/// A connector file without the keys the gateway (not the connector) reads.
fn strip_common(v: &Json) -> Json {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in [
            "name",
            "id",
            "logLevel",
            "enableRemoteLogging",
            "configVersion",
        ] {
            m.remove(k);
        }
    }
    v
}

/// The client attribute that reports an applied update: the desired one, with its `ts`.
fn applied_echo(desired: &Json, cfg: &Json) -> Json {
    let mut echo = desired.clone();
    echo["configurationJson"] = cfg.clone();
    echo
}

/// Adds a connector described by a connector attribute; a connector with the same
/// `configurationJson.id` is replaced (renamed).
async fn add_connector(
    s: &mut Services,
    name: &str,
    desired: &Json,
    cfg: &Json,
) -> Result<(), String> {
    let (_, dir) = paths(s)?;
    let ty = desired
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let file_name = desired
        .get("configuration")
        .and_then(Json::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}.json", name.replace(' ', "_").to_lowercase()));
    if Path::new(&file_name).is_absolute() || file_name.contains("..") {
        return Err(format!(
            "configuration `{file_name}` must be a file name in the configuration directory"
        ));
    }
    let file = dir.join(&file_name);
    // Renamed: the running connector with the same id goes.
    if cfg
        .get("id")
        .is_some_and(|v| v.is_string() || v.is_number())
    {
        let id = connector_id(name, cfg);
        let old: Vec<String> = s
            .manager
            .handles
            .iter()
            .filter(|h| &*h.name != name && connector_id(&h.name, &h.current_config()) == id)
            .map(|h| h.name.to_string())
            .collect();
        for o in old {
            tracing::info!(old = %o, new = %name, "Connector renamed (remote configuration).");
            s.manager.remove(&o).await;
            s.connector_stats.retain(|(n, _)| *n != o);
        }
    }
    let stats = s
        .manager
        .add_new(name, &ty, file.clone(), cfg.clone())
        .await?;
    if let Err(e) = backup(&dir, &file).and_then(|_| write_json(&file, cfg)) {
        tracing::error!(file = %file.display(), error = %e, "Cannot write the new connector's configuration; it runs but is not saved.");
    }
    if let Some(h) = s.manager.handles.iter_mut().find(|h| &*h.name == name) {
        h.modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
    }
    s.connector_stats.push((name.to_string(), stats));
    s.connector_stats.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(())
}

/// Writes the running connectors as the main file's `connectors` list (after a backup), as
/// the Python gateway does when connectors are added or removed from its UI.
fn save_connector_list(s: &Services) {
    let Ok((file, dir)) = paths(s) else { return };
    let Ok(mut main) = parse::read_file(&file) else {
        return;
    };
    let old: Vec<Json> = main
        .get("connectors")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut list = Vec::new();
    for h in s.manager.handles.iter().filter(|h| h.running) {
        let entry = old
            .iter()
            .find(|e| e.get("name").and_then(Json::as_str) == Some(&*h.name))
            .cloned()
            .unwrap_or_else(|| {
                json!({
                    "type": &*h.connector_type,
                    "name": &*h.name,
                    "configuration": h.file.as_ref().and_then(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()),
                })
            });
        list.push(entry);
    }
    main["connectors"] = Json::Array(list);
    if let Err(e) = backup(&dir, &file).and_then(|_| write_json(&file, &main)) {
        tracing::error!(file = %file.display(), error = %e, "Cannot write the connector list to the main file.");
    }
}

/// A connector as a client attribute, in the Python gateway's shape: the file's content as
/// `configurationJson`, with `logLevel`, `enableRemoteLogging`, `reportStrategy` and
/// `configVersion` beside it, and `ts` (ThingsBoard's UI compares it with the desired one's).
fn connector_attr(h: &super::manager::ConnectorHandle, ts: i64) -> Json {
    let mut cfg = h.current_config();
    let mut out = serde_json::Map::new();
    out.insert("name".into(), json!(&*h.name));
    out.insert("type".into(), json!(&*h.connector_type));
    out.insert(
        "configuration".into(),
        json!(h
            .file
            .as_ref()
            .and_then(|f| f.file_name())
            .map(|n| n.to_string_lossy().into_owned())),
    );
    let id = connector_id(&h.name, &cfg);
    out.insert("id".into(), json!(id));
    // Upstream writes the id it makes up into the file, so its `configurationJson` has it.
    if let Some(m) = cfg.as_object_mut() {
        if m.get("id").is_none_or(Json::is_null) {
            m.insert("id".into(), json!(id));
        }
    }
    // Upstream's key of a gRPC connector; null for every other connector.
    out.insert("grpc_key".into(), Json::Null);
    let taken: Vec<(String, Option<Json>)> = BESIDE_KEYS
        .iter()
        .map(|k| {
            (
                k.to_string(),
                cfg.as_object_mut().and_then(|m| m.remove(*k)),
            )
        })
        .collect();
    for (k, v) in taken {
        match (k.as_str(), v) {
            (_, Some(v)) => {
                out.insert(k, v);
            }
            ("logLevel", None) => {
                out.insert(k, json!("INFO"));
            }
            ("enableRemoteLogging", None) => {
                out.insert(k, json!(false));
            }
            ("configVersion", None) => {
                out.insert(k, Json::Null);
            }
            _ => {}
        }
    }
    out.insert("configurationJson".into(), cfg);
    out.insert("ts".into(), json!(ts));
    Json::Object(out)
}

/// `v` (an object) with `ts` set; anything else becomes `{"ts": ts}`.
fn with_ts(v: Json, ts: i64) -> Json {
    let mut m = match v {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("ts".into(), json!(ts));
    Json::Object(m)
}

/// `v` without its `ts`.
fn without_ts(v: &Json) -> Json {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("ts");
    }
    v
}

/// The `logs_configuration` client attribute's content: `logs.json` in the configuration
/// directory as JSON, or `{}` when it is absent or not a JSON object (as upstream, which
/// sends the file it configured its logging from).
pub(crate) fn logs_configuration(dir: Option<&Path>) -> Json {
    let Some(file) = dir.map(|d| d.join("logs.json")) else {
        return json!({});
    };
    match std::fs::read(&file).map(|b| serde_json::from_slice::<Json>(&b)) {
        Ok(Ok(v @ Json::Object(_))) => v,
        Ok(_) => {
            tracing::warn!(file = %file.display(), "logs.json is not a JSON object; reported as {{}}.");
            json!({})
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "Cannot read logs.json; reported as {{}}.");
            json!({})
        }
    }
}

/// A connector's id: the file's `id` when it has one (a string or a number), else one derived from the
/// connector's name, the same at every start. Upstream makes up a random UUID and writes it
/// into the connector file; tbgw does not rewrite files it was given.
pub(crate) fn connector_id(name: &str, cfg: &Json) -> String {
    match cfg.get("id") {
        Some(Json::String(id)) => return id.clone(),
        Some(n @ Json::Number(_)) => return n.to_string(),
        _ => {}
    }
    // Two 64-bit FNV-1a hashes of the name (different offsets), as a version 8 UUID.
    let fnv = |basis: u64| {
        name.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x6c62_272e_07bb_0142);
    let hi = (hi & !0xf000) | 0x8000;
    let lo = (lo & !(0xc000 << 48)) | (0x8000 << 48);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_ids_are_the_files_or_stable_uuids() {
        assert_eq!(connector_id("A", &json!({"id": "given"})), "given");
        assert_eq!(connector_id("A", &json!({"id": 7})), "7");
        let a = connector_id("MQTT Levels", &json!({}));
        assert_eq!(a, connector_id("MQTT Levels", &json!({"id": null})));
        assert_ne!(a, connector_id("MQTT Level", &json!({})));
        assert_eq!(a.len(), 36);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('8'), "{a}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn logs_configuration_is_logs_json_or_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(logs_configuration(None), json!({}));
        assert_eq!(logs_configuration(Some(dir.path())), json!({}));
        std::fs::write(dir.path().join("logs.json"), "not json").expect("write");
        assert_eq!(logs_configuration(Some(dir.path())), json!({}));
        let logs = json!({"version": 1, "disable_existing_loggers": false,
                          "formatters": {}, "handlers": {}, "root": {"level": "ERROR"}});
        std::fs::write(dir.path().join("logs.json"), logs.to_string()).expect("write");
        assert_eq!(logs_configuration(Some(dir.path())), logs);
        assert_eq!(with_ts(logs.clone(), 7)["ts"], 7);
        assert_eq!(without_ts(&with_ts(logs.clone(), 7)), logs);
        assert_eq!(with_ts(Json::Null, 3), json!({"ts": 3}));
    }

    #[test]
    fn backups_keep_the_newest_ten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mqtt.json");
        std::fs::write(&file, "{}").expect("write");
        for _ in 0..13 {
            backup(dir.path(), &file).expect("backup");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let n = std::fs::read_dir(dir.path().join("backup"))
            .expect("dir")
            .count();
        assert_eq!(n, BACKUPS);
        assert!(backup(dir.path(), &dir.path().join("absent.json"))
            .expect("no error")
            .is_none());
    }
}
