//! Configuration in the upstream gateway's own format.
//!
//! A `tb_gateway.json` (or `tb_gateway.yaml`) with `thingsboard`, `storage` and `connectors[]`;
//! each connector entry names its own JSON file relative to the main file. The
//! `TB_GW_*` environment variables override the `thingsboard` section as upstream does.
//!
//! Loading never stops at the first problem: [`load`] returns every error it found, each
//! naming the file, the key path and the reason, and the keys it accepted but does not use
//! ([`IgnoredKey`]), which the gateway logs once.

mod content;
mod env;
pub mod parse;
pub(crate) mod provision;
pub(crate) mod report;
mod services;
mod storage;
mod thingsboard;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::error::{ConfigError, ConfigErrors, IgnoredKey};
pub use content::ConnectorConfig;
pub use env::apply_env_overrides;
pub use report::ReportOverrides;
pub use services::{
    AggregationFunction, DeviceActivityConfig, DeviceFilteringConfig, ProvisioningConfig,
    ReportStrategyConfig, ReportType, StatisticsConfig,
};
pub use storage::{FullPolicy, StorageConfig, STORAGE_TYPES};
pub use thingsboard::{
    resolve_beside, resolve_path, Credentials, SecurityConfig, ThingsBoardConfig, TlsFiles,
};

/// What a connector's configuration looks like to a factory: the entry of `connectors[]` in the
/// main file plus the parsed content of the connector's own JSON file. Also
/// `tbgw::connector::ConnectorSpec`, where the [`ConnectorFactory`](crate::connector::ConnectorFactory) that takes it lives.
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    /// The connector's name (`name` in the main file).
    pub name: String,
    /// The connector's type (`type` in the main file, e.g. `mqtt`).
    pub connector_type: String,
    /// The connector file: for error messages, and the base of the relative paths it names
    /// ([`resolve_beside`]).
    pub file: std::path::PathBuf,
    /// The connector file's content, with the keys every connector file may carry
    /// (`name`, `id`, `logLevel`, ...) removed. Read it with
    /// [`ConnectorConfig::deserialize`]; a tree converts with `.into()`.
    pub config: ConnectorConfig,
}

/// One entry of `connectors[]` in the main file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorEntry {
    /// Connector type (`mqtt`, `modbus`, ...).
    #[serde(rename = "type")]
    pub connector_type: String,
    /// Connector name, unique in the gateway.
    pub name: String,
    /// The connector's JSON file, relative to the main file.
    pub configuration: String,
    /// Class of a custom (Python) connector: run out of process by `tbgw-connectors`'
    /// feature `grpc` (`grpc::custom`); reported as ignored here, and by builds without it.
    pub class: Option<String>,
}

/// The main file, typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GatewayConfig {
    /// The `thingsboard` section.
    #[serde(default)]
    pub thingsboard: ThingsBoardConfig,
    /// The `storage` section.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The `connectors` list.
    #[serde(default)]
    pub connectors: Vec<ConnectorEntry>,
}

/// A loaded configuration: the main file, each connector's file, and what was ignored.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The main file.
    pub file: PathBuf,
    /// The directory of the main file; relative paths and `connected_devices.json` live here.
    pub dir: PathBuf,
    /// The main file, typed.
    pub gateway: GatewayConfig,
    /// The gateway's credentials, resolved.
    pub credentials: Credentials,
    /// Each connector's parsed file.
    pub connectors: Vec<ConnectorSpec>,
    /// Keys present but not used.
    pub ignored: Vec<IgnoredKey>,
}

/// Common keys tbgw accepts and does not act on yet (removed from what connectors see).
const COMMON_CONNECTOR_KEYS_IGNORED: &[&str] = &["logLevel"];
/// Common keys the report strategy service reads: validated here, left in
/// `ConnectorSpec::config` for [`crate::report::connector_strategy`] (the connector level).
const COMMON_CONNECTOR_KEYS_REPORT: &[&str] = report::CONNECTOR_KEYS;

/// Loads the main file and every connector file named in it, using the process environment
/// for `TB_GW_*` overrides.
pub fn load(file: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TB_GW_"))
        .collect();
    load_with_env(file, &env)
}

/// Like [`load`], with the environment given explicitly.
pub fn load_with_env(
    file: &Path,
    env: &HashMap<String, String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let mut errors = Vec::new();
    let mut ignored_paths = Vec::new();
    let dir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();

    let mut raw = parse::read_file(file)?;
    if !raw.is_object() {
        return Err(ConfigError::new(file, "", "the main file must be a JSON object").into());
    }
    apply_env_overrides(&mut raw, env);
    let gateway: GatewayConfig = parse::from_value(file, "", &raw, &mut ignored_paths)?;
    if let Err(e) = gateway.thingsboard.validate(file) {
        errors.push(e);
    }
    if let Err(e) = gateway.storage.validate(file) {
        errors.push(e);
    }
    let sec = &gateway.thingsboard.security;
    let no_security = sec.kind.is_none()
        && sec.access_token.is_none()
        && sec.username.is_none()
        && sec.cert.is_none();
    let credentials = match (&gateway.thingsboard.provisioning, no_security) {
        // No credentials but a provisioning section: the saved credentials of an earlier
        // provisioning, or none yet (the client provisions before it connects).
        (Some(p), true) => match provision::validate(p, file) {
            Ok(()) => Some(provision::saved_credentials(&dir).unwrap_or(Credentials {
                client_id: String::new(),
                username: None,
                password: None,
                tls: None,
            })),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        _ => match sec.resolve(file, &dir, gateway.thingsboard.port) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    ignored_paths.extend(gateway.storage.unused_keys(raw.get("storage")));
    ignored_paths.extend(ThingsBoardConfig::unused_keys(raw.get("thingsboard")));
    let mut ignored: Vec<IgnoredKey> = ignored_paths
        .into_iter()
        .map(|key| IgnoredKey {
            file: file.to_path_buf(),
            key,
        })
        .collect();

    let mut connectors = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, entry) in gateway.connectors.iter().enumerate() {
        if !names.insert(entry.name.clone()) {
            errors.push(ConfigError::new(
                file,
                format!("connectors[{i}].name"),
                format!("duplicate connector name `{}`", entry.name),
            ));
            continue;
        }
        if entry.class.is_some() {
            ignored.push(IgnoredKey {
                file: file.to_path_buf(),
                key: format!("connectors[{i}].class"),
            });
        }
        let cfile = dir.join(&entry.configuration);
        let value = match read_connector_file(file, i, &cfile) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match connector_spec(&entry.name, &entry.connector_type, &cfile, value) {
            Ok((spec, ign)) => {
                ignored.extend(ign);
                connectors.push(spec);
            }
            Err(e) => errors.push(e),
        }
    }

    match (errors.is_empty(), credentials) {
        (true, Some(credentials)) => Ok(LoadedConfig {
            file: file.to_path_buf(),
            dir,
            gateway,
            credentials,
            connectors,
            ignored,
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// Reads the connector file `cfile` named by `connectors[i]` of the main file `file`; a
/// failure is reported at that key of the main file.
pub fn read_connector_file(
    file: &Path,
    i: usize,
    cfile: &Path,
) -> Result<ConnectorConfig, ConfigError> {
    let at_entry = |e: ConfigError| {
        ConfigError::new(
            file,
            format!("connectors[{i}].configuration"),
            e.to_string(),
        )
    };
    if parse::is_yaml(cfile) {
        return parse::read_file(cfile).map(Into::into).map_err(at_entry);
    }
    // JSON is kept as text and deserialized by the factory without a tree of it.
    let text = std::fs::read_to_string(cfile).map_err(|e| {
        at_entry(ConfigError::new(
            cfile,
            "",
            format!("cannot read file: {e}"),
        ))
    })?;
    ConnectorConfig::from_json_text(text).map_err(|e| {
        if e.is_data() {
            ConfigError::new(cfile, "", "a connector file must be a JSON object")
        } else {
            at_entry(ConfigError::new(cfile, "", parse::json_syntax_reason(&e)))
        }
    })
}

/// The top-level `keys` of a connector file as written (an object with those it has), read
/// without building the rest of the file's tree; `None` when the file cannot be read or parsed.
pub(crate) fn read_top_level(file: &Path, keys: &[&str]) -> Option<serde_json::Value> {
    if parse::is_yaml(file) {
        return Some(ConnectorConfig::from(parse::read_file(file).ok()?).top_level(keys));
    }
    let text = std::fs::read_to_string(file).ok()?;
    content::pick_top_level(&text, keys)
        .ok()
        .map(serde_json::Value::Object)
}

/// Turns the content of a connector file into a [`ConnectorSpec`]: removes the keys every
/// connector file may carry (`name`, `id`, ...), reports the common keys tbgw does not use, and
/// validates the connector-level `reportStrategy` / `sendDataOnlyOnChange` (left in the config).
/// Used at load, by hot reload and by remote configuration.
pub fn connector_spec(
    name: &str,
    connector_type: &str,
    file: &Path,
    content: impl Into<ConnectorConfig>,
) -> Result<(ConnectorSpec, Vec<IgnoredKey>), ConfigError> {
    let mut content = content.into();
    let mut ignored = Vec::new();
    let mut note = |k: &str| {
        ignored.push(IgnoredKey {
            file: file.to_path_buf(),
            key: k.to_string(),
        })
    };
    match content.tree_mut() {
        Some(tree) => {
            let Some(obj) = tree.as_object_mut() else {
                return Err(ConfigError::new(
                    file,
                    "",
                    "a connector file must be a JSON object",
                ));
            };
            for k in COMMON_CONNECTOR_KEYS_IGNORED {
                if obj.contains_key(*k) {
                    note(k);
                }
            }
            content::strip_common_keys(obj);
        }
        None => {
            let top = content.top_level(COMMON_CONNECTOR_KEYS_IGNORED);
            for k in COMMON_CONNECTOR_KEYS_IGNORED {
                if top.get(*k).is_some() {
                    note(k);
                }
            }
        }
    }
    let report = content.top_level(COMMON_CONNECTOR_KEYS_REPORT);
    if report.as_object().is_some_and(|o| !o.is_empty()) {
        let mut keys = Vec::new();
        report::connector_strategy_checked(&report, file, &mut keys)?;
        ignored.extend(keys.into_iter().map(|key| IgnoredKey {
            file: file.to_path_buf(),
            key,
        }));
    }
    Ok((
        ConnectorSpec {
            name: name.to_string(),
            connector_type: connector_type.to_string(),
            file: file.to_path_buf(),
            config: content,
        },
        ignored,
    ))
}

#[cfg(test)]
mod tests;
