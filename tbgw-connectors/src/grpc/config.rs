//! The gateway-level `grpc` section of `tb_gateway.json` and the `type: grpc` entries of its
//! `connectors[]` list (their `key`, and tbgw's `command` extension).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tbgw::config::ConfigError;

use super::custom::{default_python, is_custom_type, CustomClass};

/// Upstream's default `grpc.serverPort`.
pub const DEFAULT_PORT: u16 = 9595;
/// The file (beside `tb_gateway.json`) where upstream keeps the generated `key: auto` keys,
/// by connector name.
pub const PERSISTENT_KEYS_FILE: &str = "persistent_keys.json";

/// The `grpc` section of `tb_gateway.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcSettings {
    /// Serve the connector API (`enabled`, default false as upstream).
    #[serde(default)]
    pub enabled: bool,
    /// TCP port (`serverPort`, default 9595).
    #[serde(default = "default_port")]
    pub server_port: u16,
    /// Bind address (`serverHost`, a tbgw extension; default `::`, all addresses, as
    /// upstream's `[::]`, falling back to `0.0.0.0` where IPv6 is off).
    #[serde(default)]
    pub server_host: Option<String>,
    /// HTTP/2 keep-alive ping interval (`keepAliveTimeMs`, default 10000).
    #[serde(default = "default_keepalive")]
    pub keep_alive_time_ms: u64,
    /// How long to wait for a ping's answer (`keepAliveTimeoutMs`, also upstream's
    /// `keepaliveTimeoutMs`; default 5000).
    #[serde(default = "default_keepalive_timeout", alias = "keepaliveTimeoutMs")]
    pub keep_alive_timeout_ms: u64,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_keepalive() -> u64 {
    10_000
}
fn default_keepalive_timeout() -> u64 {
    5_000
}

/// grpc-core ping policy keys of upstream's `grpc` section that the HTTP/2 server of tbgw has
/// no equivalent for: accepted, reported as ignored.
pub const IGNORED_SETTINGS: &[&str] = &[
    "keepAlivePermitWithoutCalls",
    "keepalivePermitWithoutCalls",
    "maxPingsWithoutData",
    "minTimeBetweenPingsMs",
    "minPingIntervalWithoutDataMs",
];

impl Default for GrpcSettings {
    fn default() -> Self {
        GrpcSettings {
            enabled: false,
            server_port: DEFAULT_PORT,
            server_host: None,
            keep_alive_time_ms: default_keepalive(),
            keep_alive_timeout_ms: default_keepalive_timeout(),
        }
    }
}

impl GrpcSettings {
    /// The keep-alive ping interval.
    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_time_ms > 0).then(|| Duration::from_millis(self.keep_alive_time_ms))
    }

    /// The keep-alive ping timeout.
    pub fn keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(self.keep_alive_timeout_ms.max(1))
    }
}

/// One `type: grpc` entry of `connectors[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcEntry {
    /// The connector's name.
    pub name: String,
    /// The key the out-of-process connector registers with (`key`; `auto` resolved through
    /// `persistent_keys.json`).
    pub key: String,
    /// The program to start and supervise (`command`, a tbgw extension: an argv list, the
    /// program resolved beside `tb_gateway.json` when relative and containing a `/`); `None`:
    /// the connector is started by someone else.
    pub command: Option<Vec<String>>,
    /// A Python custom connector (an entry with a `class`, see [`super::custom`]): its key is
    /// generated for this run and its command is the host package's.
    pub custom: Option<CustomClass>,
}

/// The gRPC parts of a main file: the `grpc` section and the `type: grpc` entries.
#[derive(Debug, Clone, Default)]
pub struct GrpcMainConfig {
    /// The `grpc` section (defaults when absent).
    pub settings: GrpcSettings,
    /// The `type: grpc` connector entries.
    pub entries: Vec<GrpcEntry>,
    /// The directory of the main file.
    pub dir: PathBuf,
    /// The main file.
    pub file: PathBuf,
    /// Key paths of the main file this module reads (`grpc`, `connectors[i].key`,
    /// `connectors[i].command`), so `tbgw check` does not report them as ignored.
    pub used_keys: Vec<String>,
    /// Keys present and not acted on (see [`IGNORED_SETTINGS`]).
    pub ignored_keys: Vec<String>,
    /// The connector files of the `type: grpc` and custom entries: their text goes to the
    /// out-of-process connector as it is, so none of their keys is "ignored" by tbgw.
    pub connector_files: Vec<PathBuf>,
}

impl GrpcMainConfig {
    /// Reads the gRPC parts of the main file `file`. With `write_keys`, a `key: auto` without a
    /// saved key gets a new one, saved to `persistent_keys.json` beside `file` (as upstream);
    /// without, such an entry gets a placeholder key (for `tbgw check`).
    pub fn from_main_file(file: &Path, write_keys: bool) -> Result<Self, ConfigError> {
        let raw = tbgw::config::parse::read_file(file)?;
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Self::from_value(file, &dir, &raw, write_keys)
    }

    /// [`from_main_file`](Self::from_main_file) on an already parsed main file.
    pub fn from_value(
        file: &Path,
        dir: &Path,
        raw: &serde_json::Value,
        write_keys: bool,
    ) -> Result<Self, ConfigError> {
        let mut used_keys = Vec::new();
        let mut ignored_keys = Vec::new();
        let settings = match raw.get("grpc") {
            Some(v) => {
                used_keys.push("grpc".to_string());
                let mut ign = Vec::new();
                let s: GrpcSettings = tbgw::config::parse::from_value(file, "grpc", v, &mut ign)?;
                for k in ign {
                    let bare = k.strip_prefix("grpc.").unwrap_or(&k);
                    if IGNORED_SETTINGS.contains(&bare) {
                        ignored_keys.push(format!("grpc.{bare}"));
                    } else {
                        ignored_keys.push(k);
                    }
                }
                s
            }
            None => GrpcSettings::default(),
        };
        let keys_path = dir.join(PERSISTENT_KEYS_FILE);
        let mut saved: HashMap<String, String> = std::fs::read_to_string(&keys_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let mut keys_changed = false;
        let mut entries = Vec::new();
        let mut seen_keys: HashMap<String, String> = HashMap::new();
        let mut connector_files = Vec::new();
        for (i, e) in raw
            .get("connectors")
            .and_then(|c| c.as_array())
            .map(|a| a.as_slice())
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let ty = e.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let Some(name) = e.get("name").and_then(|n| n.as_str()) else {
                continue;
            };
            let conf = e.get("configuration").and_then(|c| c.as_str());
            if let Some(class) = e.get("class").and_then(|c| c.as_str()) {
                if is_custom_type(ty) {
                    connector_files.extend(conf.map(|c| dir.join(c)));
                    let custom = custom_entry(file, i, ty, class, e)?;
                    used_keys.extend(
                        ["class", "python", "extensionsPath"]
                            .iter()
                            .filter(|k| e.get(**k).is_some())
                            .map(|k| format!("connectors[{i}].{k}")),
                    );
                    // The key only links tbgw and the process it starts: new for each run.
                    let key = format!(
                        "custom-{:016x}{:016x}",
                        fastrand::u64(..),
                        fastrand::u64(..)
                    );
                    seen_keys.insert(key.clone(), name.to_string());
                    entries.push(GrpcEntry {
                        name: name.to_string(),
                        key,
                        command: None,
                        custom: Some(custom),
                    });
                    continue;
                }
            }
            if !ty.eq_ignore_ascii_case("grpc") {
                continue;
            }
            connector_files.extend(conf.map(|c| dir.join(c)));
            let key = match e.get("key") {
                Some(serde_json::Value::String(k)) if k == "auto" => match saved.get(name) {
                    Some(k) => k.clone(),
                    None if write_keys => {
                        let k: String = (0..10)
                            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
                            .collect();
                        saved.insert(name.to_string(), k.clone());
                        keys_changed = true;
                        // As upstream: the operator needs the key for the connector process.
                        tracing::info!(connector = %name, key = %k, file = %keys_path.display(), "Generated the key of a `key: auto` gRPC connector.");
                        k
                    }
                    None => format!("auto:{name}"),
                },
                Some(serde_json::Value::String(k)) if !k.is_empty() => k.clone(),
                _ => {
                    return Err(ConfigError::new(
                        file,
                        format!("connectors[{i}].key"),
                        "a `type: grpc` connector needs a `key` (a string, or `auto`)",
                    ))
                }
            };
            used_keys.push(format!("connectors[{i}].key"));
            if let Some(other) = seen_keys.insert(key.clone(), name.to_string()) {
                return Err(ConfigError::new(
                    file,
                    format!("connectors[{i}].key"),
                    format!("connector `{other}` has the same key"),
                ));
            }
            let command = match e.get("command") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => {
                    used_keys.push(format!("connectors[{i}].command"));
                    let argv: Option<Vec<String>> = match v {
                        serde_json::Value::Array(a) => {
                            a.iter().map(|s| s.as_str().map(str::to_string)).collect()
                        }
                        _ => None,
                    };
                    match argv {
                        Some(a) if !a.is_empty() => Some(a),
                        _ => return Err(ConfigError::new(
                            file,
                            format!("connectors[{i}].command"),
                            "must be a non-empty list of strings (the program and its arguments)",
                        )),
                    }
                }
            };
            entries.push(GrpcEntry {
                name: name.to_string(),
                key,
                command,
                custom: None,
            });
        }
        if keys_changed {
            if let Ok(text) = serde_json::to_string_pretty(&saved) {
                if let Err(e) = std::fs::write(&keys_path, text) {
                    tracing::warn!(file = %keys_path.display(), error = %e, "Cannot save the generated gRPC connector keys.");
                }
            }
        }
        Ok(GrpcMainConfig {
            settings,
            entries,
            dir: dir.to_path_buf(),
            file: file.to_path_buf(),
            used_keys,
            ignored_keys,
            connector_files,
        })
    }
}

/// The [`CustomClass`] of `connectors[i]`, an entry of type `ty` with `class`.
fn custom_entry(
    file: &Path,
    i: usize,
    ty: &str,
    class: &str,
    e: &serde_json::Value,
) -> Result<CustomClass, ConfigError> {
    let strings = |key: &str| -> Result<Option<Vec<String>>, ConfigError> {
        match e.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(vec![s.clone()])),
            Some(serde_json::Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|s| s.as_str().filter(|s| !s.is_empty()).map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("connectors[{i}].{key}"),
                        "must be a non-empty string or a list of non-empty strings",
                    )
                }),
            Some(_) => Err(ConfigError::new(
                file,
                format!("connectors[{i}].{key}"),
                "must be a non-empty string or a list of non-empty strings",
            )),
        }
    };
    if class.trim().is_empty() || ty.trim().is_empty() {
        return Err(ConfigError::new(
            file,
            format!("connectors[{i}].class"),
            "a custom connector needs a non-empty `type` (its extensions folder) and `class`",
        ));
    }
    Ok(CustomClass {
        connector_type: ty.to_string(),
        folder: ty.to_ascii_lowercase(),
        class: class.to_string(),
        python: strings("python")?.unwrap_or_else(default_python),
        extensions: strings("extensionsPath")?
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value, dir: &Path, write: bool) -> Result<GrpcMainConfig, ConfigError> {
        GrpcMainConfig::from_value(&dir.join("tb_gateway.json"), dir, &v, write)
    }

    #[test]
    fn upstream_section_and_keys_are_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = parse(
            json!({
                "grpc": {"enabled": true, "serverPort": 9596, "keepAliveTimeMs": 1000,
                         "keepaliveTimeoutMs": 200, "maxPingsWithoutData": 0},
                "connectors": [
                    {"type": "mqtt", "name": "M", "configuration": "m.json"},
                    {"type": "grpc", "name": "G", "configuration": "g.json", "key": "k1",
                     "command": ["python3", "g.py"]}
                ]
            }),
            d.path(),
            false,
        )
        .expect("valid");
        assert!(c.settings.enabled);
        assert_eq!(c.settings.server_port, 9596);
        assert_eq!(c.settings.keep_alive_timeout_ms, 200);
        assert_eq!(c.ignored_keys, vec!["grpc.maxPingsWithoutData".to_string()]);
        assert_eq!(
            c.entries,
            vec![GrpcEntry {
                name: "G".into(),
                key: "k1".into(),
                command: Some(vec!["python3".into(), "g.py".into()]),
                custom: None,
            }]
        );
        assert!(c.used_keys.contains(&"connectors[1].key".to_string()));
        assert!(c.used_keys.contains(&"connectors[1].command".to_string()));
    }

    #[test]
    fn auto_keys_are_generated_once_and_kept() {
        let d = tempfile::tempdir().expect("tempdir");
        let main = json!({"connectors": [{"type": "grpc", "name": "G", "configuration": "g.json", "key": "auto"}]});
        let checked = parse(main.clone(), d.path(), false).expect("valid");
        assert_eq!(checked.entries[0].key, "auto:G");
        assert!(!d.path().join(PERSISTENT_KEYS_FILE).exists());
        let first = parse(main.clone(), d.path(), true).expect("valid");
        assert_eq!(first.entries[0].key.len(), 10);
        let second = parse(main, d.path(), true).expect("valid");
        assert_eq!(first.entries[0].key, second.entries[0].key);
    }

    #[test]
    fn missing_or_duplicate_keys_and_bad_commands_are_errors() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = parse(
            json!({"connectors": [{"type": "grpc", "name": "G", "configuration": "g.json"}]}),
            d.path(),
            false,
        )
        .expect_err("no key");
        assert!(e.to_string().contains("connectors[0].key"), "{e}");
        let e = parse(
            json!({"connectors": [
                {"type": "grpc", "name": "A", "configuration": "a.json", "key": "k"},
                {"type": "grpc", "name": "B", "configuration": "b.json", "key": "k"}]}),
            d.path(),
            false,
        )
        .expect_err("duplicate");
        assert!(e.to_string().contains("connectors[1].key"), "{e}");
        let e = parse(
            json!({"connectors": [{"type": "grpc", "name": "G", "configuration": "g.json", "key": "k", "command": "python3 x.py"}]}),
            d.path(),
            false,
        )
        .expect_err("string command");
        assert!(e.to_string().contains("connectors[0].command"), "{e}");
    }

    #[test]
    fn entries_with_a_class_are_python_custom_connectors() {
        let d = tempfile::tempdir().expect("tempdir");
        let c = parse(
            json!({"connectors": [
                {"type": "Serial", "name": "S", "configuration": "s.json", "class": "SerialConnector",
                 "python": ["/usr/bin/env", "python3"], "extensionsPath": "ext"},
                {"type": "custom", "name": "C", "configuration": "c.json", "class": "Mine",
                 "python": "/opt/venv/bin/python"},
                {"type": "mqtt", "name": "M", "configuration": "m.json", "class": "Ignored"}
            ]}),
            d.path(),
            false,
        )
        .expect("valid");
        assert_eq!(
            c.entries.len(),
            2,
            "a built-in type's `class` is upstream's to ignore"
        );
        let s = c.entries[0].custom.as_ref().expect("custom");
        assert_eq!(
            (
                s.connector_type.as_str(),
                s.folder.as_str(),
                s.class.as_str()
            ),
            ("Serial", "serial", "SerialConnector")
        );
        assert_eq!(s.python, vec!["/usr/bin/env".to_string(), "python3".into()]);
        assert_eq!(s.extensions, vec![PathBuf::from("ext")]);
        assert!(c.entries[0].key.starts_with("custom-"));
        assert_ne!(c.entries[0].key, c.entries[1].key);
        assert_eq!(
            c.entries[1].custom.as_ref().expect("custom").python,
            vec!["/opt/venv/bin/python".to_string()]
        );
        for k in [
            "connectors[0].class",
            "connectors[0].python",
            "connectors[0].extensionsPath",
            "connectors[1].class",
        ] {
            assert!(c.used_keys.contains(&k.to_string()), "{k}");
        }
        assert!(!c.used_keys.contains(&"connectors[2].class".to_string()));
        assert_eq!(
            c.connector_files,
            vec![d.path().join("s.json"), d.path().join("c.json")]
        );
    }

    #[test]
    fn a_bad_python_key_is_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        for bad in [json!(3), json!([]), json!(["python3", 1]), json!("")] {
            let e = parse(
                json!({"connectors": [{"type": "serial", "name": "S", "configuration": "s.json",
                                       "class": "X", "python": bad}]}),
                d.path(),
                false,
            )
            .expect_err("bad python");
            assert!(e.to_string().contains("connectors[0].python"), "{e}");
        }
    }
}
