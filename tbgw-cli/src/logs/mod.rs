//! Logging set up from upstream's `logs.json` (Python `logging.config.dictConfig`), found
//! beside the main configuration file.
//!
//! Upstream's loggers map to the `tracing` targets of tbgw's modules ([`logger_of`]):
//!
//! | logger | targets |
//! |---|---|
//! | `tb_connection` | `tbgw::tb`, `tbgw::tls` (the ThingsBoard client) |
//! | `storage` | `tbgw::storage` |
//! | `converter` | `tbgw::convert`, `tbgw::expr` |
//! | `connector` | `tbgw_connectors`, `tbgw::connector`, `tbgw::uplink`, `tbgw::downlink` |
//! | `extension` | `tbgw_example_line` (connectors built outside tbgw-connectors) |
//! | `service` | the rest of `tbgw` (and the `tbgw` binary) |
//! | `database` | nothing (as upstream, whose storages log to `storage`) |
//! | root | every other target (rumqttc, rustls, ...) |
//!
//! Handlers: `logging.StreamHandler` (`stream` `ext://sys.stdout` or `ext://sys.stderr`, the
//! default), `logging.FileHandler`, `logging.handlers.RotatingFileHandler` (`maxBytes`,
//! `backupCount`), `logging.handlers.TimedRotatingFileHandler` and upstream's
//! `thingsboard_gateway.tb_utility.tb_rotating_file_handler.TimedRotatingFileHandler`
//! (`when`, `interval`, `backupCount`, `utc`, and upstream's `maxBytes`). A relative
//! `filename` is taken from the working directory as Python does; `TB_GW_LOGS_PATH`, as
//! upstream, puts every file of upstream's handler into that directory. Levels: Python's names
//! and numbers (`CRITICAL` logs as `ERROR`, `NOTSET`/0 inherits, upstream's `TRACE`/5).
//! `RUST_LOG` or `--log-level` replace the levels (files and handlers are still used). What
//! is not honoured is returned as warnings (`tbgw check` prints them).

pub mod rotate;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use tbgw::service::remote_log::{remote_logging, RemoteLogHandle};
use tracing::level_filters::LevelFilter;
use tracing::Metadata;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Registry;

use rotate::{Policy, RotatingFile, When};

/// The loggers tbgw routes records to, in [`logger_of`]'s terms; the last one is the root.
pub const LOGGERS: [&str; 8] = [
    "service",
    "connector",
    "converter",
    "tb_connection",
    "storage",
    "extension",
    "database",
    "root",
];
const ROOT: usize = 7;

fn under(target: &str, prefix: &str) -> bool {
    target == prefix
        || target
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with("::"))
}

/// Upstream's logger name for a `tracing` target (see the module docs).
#[cfg_attr(not(test), allow(dead_code))]
pub fn logger_of(target: &str) -> &'static str {
    LOGGERS[logger_index(target)]
}

fn logger_index(target: &str) -> usize {
    const MAP: [(&str, usize); 10] = [
        ("tbgw::tb", 3),
        ("tbgw::tls", 3),
        ("tbgw::storage", 4),
        ("tbgw::convert", 2),
        ("tbgw::expr", 2),
        ("tbgw_connectors", 1),
        ("tbgw::connector", 1),
        ("tbgw::uplink", 1),
        ("tbgw::downlink", 1),
        ("tbgw_example_line", 5),
    ];
    for (p, i) in MAP {
        if under(target, p) {
            return i;
        }
    }
    if under(target, "tbgw") {
        0
    } else {
        ROOT
    }
}

/// Where a handler writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A file and how it rotates.
    File(PathBuf, Policy),
}

#[derive(Debug, Clone, PartialEq)]
struct Handler {
    sink: Sink,
    level: LevelFilter,
}

#[derive(Debug, Clone, PartialEq)]
struct Logger {
    /// `None`: NOTSET, inherits the root's.
    level: Option<LevelFilter>,
    handlers: Vec<String>,
    propagate: bool,
}

/// A parsed `logs.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsConfig {
    handlers: BTreeMap<String, Handler>,
    /// Indexed as [`LOGGERS`]; `None`: not configured (uses the root).
    loggers: [Option<Logger>; 8],
    /// `file: key: reason` for everything accepted but not honoured.
    pub warnings: Vec<String>,
}

/// Python's level (name or number) as a filter; `Ok(None)` for NOTSET.
fn level(v: &Json) -> Result<Option<LevelFilter>, String> {
    let n = match v {
        Json::Number(n) => n.as_i64().ok_or("not a level number")?,
        Json::String(s) => match s.trim().to_ascii_uppercase().as_str() {
            "NOTSET" => 0,
            "TRACE" => 5,
            "DEBUG" => 10,
            "INFO" => 20,
            "WARNING" | "WARN" => 30,
            "ERROR" => 40,
            "CRITICAL" | "FATAL" => 50,
            "NONE" | "OFF" => 100,
            other => match other.parse::<i64>() {
                Ok(n) => n,
                Err(_) => return Err(format!("unknown level {s:?}")),
            },
        },
        _ => return Err("a level name or number expected".into()),
    };
    Ok(match n {
        i64::MIN..=0 => None,
        1..=5 => Some(LevelFilter::TRACE),
        6..=10 => Some(LevelFilter::DEBUG),
        11..=20 => Some(LevelFilter::INFO),
        21..=30 => Some(LevelFilter::WARN),
        31..=50 => Some(LevelFilter::ERROR),
        _ => Some(LevelFilter::OFF),
    })
}

const STREAM_CLASSES: [&str; 2] = ["logging.StreamHandler", "StreamHandler"];
const FILE_CLASSES: [&str; 2] = ["logging.FileHandler", "FileHandler"];
const SIZE_CLASSES: [&str; 2] = [
    "logging.handlers.RotatingFileHandler",
    "RotatingFileHandler",
];
const TIMED_CLASSES: [&str; 3] = [
    "logging.handlers.TimedRotatingFileHandler",
    "thingsboard_gateway.tb_utility.tb_rotating_file_handler.TimedRotatingFileHandler",
    "TimedRotatingFileHandler",
];

impl LogsConfig {
    /// Reads `logs.json`; errors (and warnings) as `file: key: reason`.
    pub fn load(path: &Path) -> Result<LogsConfig, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
        Self::parse(
            path,
            &text,
            std::env::var_os("TB_GW_LOGS_PATH").map(PathBuf::from),
        )
    }

    /// Parses the text of `path`; `logs_dir` is `TB_GW_LOGS_PATH`.
    pub fn parse(
        path: &Path,
        text: &str,
        logs_dir: Option<PathBuf>,
    ) -> Result<LogsConfig, Vec<String>> {
        let file = path.display().to_string();
        let doc: Json = serde_json::from_str(text).map_err(|e| vec![format!("{file}: {e}")])?;
        let Json::Object(top) = &doc else {
            return Err(vec![format!("{file}: a JSON object expected")]);
        };
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let err = |errors: &mut Vec<String>, key: &str, reason: &str| {
            errors.push(format!("{file}: {key}: {reason}"));
        };
        let warn = |warnings: &mut Vec<String>, key: &str, reason: &str| {
            warnings.push(format!("{file}: {key}: {reason}"));
        };
        for (k, v) in top {
            match k.as_str() {
                "version" | "disable_existing_loggers" | "handlers" | "loggers" | "root" => {}
                "formatters" => {
                    if let Some(f) = v.as_object() {
                        for name in f.keys() {
                            warn(
                                &mut warnings,
                                &format!("formatters.{name}"),
                                "not honoured: tbgw writes its own line format (or JSON with --log-format json)",
                            );
                        }
                    }
                }
                _ => warn(&mut warnings, k, "not honoured (ignored)"),
            }
        }

        let mut handlers = BTreeMap::new();
        if let Some(hs) = top.get("handlers").and_then(Json::as_object) {
            for (name, h) in hs {
                let key = format!("handlers.{name}");
                let Some(h) = h.as_object() else {
                    err(&mut errors, &key, "an object expected");
                    continue;
                };
                let class = h.get("class").and_then(Json::as_str).unwrap_or("");
                let hlevel = match h.get("level").map(level) {
                    None => LevelFilter::TRACE,
                    Some(Ok(l)) => l.unwrap_or(LevelFilter::TRACE),
                    Some(Err(e)) => {
                        err(&mut errors, &format!("{key}.level"), &e);
                        continue;
                    }
                };
                let num = |k: &str, default: u64, errors: &mut Vec<String>| -> u64 {
                    match h.get(k) {
                        None | Some(Json::Null) => default,
                        Some(v) => match v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()) {
                            Some(n) => n,
                            None => {
                                err(
                                    errors,
                                    &format!("{key}.{k}"),
                                    "a non-negative number expected",
                                );
                                default
                            }
                        },
                    }
                };
                let mut known = vec![
                    "class",
                    "level",
                    "formatter",
                    "encoding",
                    "delay",
                    "filters",
                ];
                let sink = if STREAM_CLASSES.contains(&class) {
                    known.push("stream");
                    match h.get("stream").and_then(Json::as_str) {
                        None | Some("ext://sys.stderr") => Sink::Stderr,
                        Some("ext://sys.stdout") => Sink::Stdout,
                        Some(s) => {
                            err(
                                &mut errors,
                                &format!("{key}.stream"),
                                &format!("{s:?}: only ext://sys.stdout and ext://sys.stderr"),
                            );
                            continue;
                        }
                    }
                } else if FILE_CLASSES.contains(&class)
                    || SIZE_CLASSES.contains(&class)
                    || TIMED_CLASSES.contains(&class)
                {
                    known.extend(["filename", "mode", "maxBytes", "backupCount"]);
                    let Some(name) = h.get("filename").and_then(Json::as_str) else {
                        err(
                            &mut errors,
                            &format!("{key}.filename"),
                            "a file name is required",
                        );
                        continue;
                    };
                    let mut p = PathBuf::from(name);
                    let upstreams = class.starts_with("thingsboard_gateway.");
                    if let (true, Some(dir)) = (upstreams, &logs_dir) {
                        if let Some(f) = p.file_name() {
                            p = dir.join(f);
                        }
                    }
                    let max_bytes = if FILE_CLASSES.contains(&class) {
                        0
                    } else {
                        num("maxBytes", 0, &mut errors)
                    };
                    let backup_count = if FILE_CLASSES.contains(&class) {
                        0
                    } else {
                        num("backupCount", 0, &mut errors) as usize
                    };
                    let timed = if TIMED_CLASSES.contains(&class) {
                        known.extend(["when", "interval", "utc", "atTime"]);
                        let when_s = h.get("when").and_then(Json::as_str).unwrap_or("h");
                        let Some(when) = When::parse(when_s) else {
                            err(
                                &mut errors,
                                &format!("{key}.when"),
                                &format!("{when_s:?}: S, M, H, D, MIDNIGHT or W0-W6 expected"),
                            );
                            continue;
                        };
                        let interval =
                            num("interval", 1, &mut errors).clamp(1, u64::from(u32::MAX)) as u32;
                        if h.get("atTime").is_some_and(|v| !v.is_null()) {
                            warn(
                                &mut warnings,
                                &format!("{key}.atTime"),
                                "not honoured: rotation is at midnight",
                            );
                        }
                        Some((when, interval))
                    } else {
                        None
                    };
                    if let Some(m) = h.get("mode").and_then(Json::as_str) {
                        if m != "a" {
                            warn(
                                &mut warnings,
                                &format!("{key}.mode"),
                                "not honoured: log files are always appended to",
                            );
                        }
                    }
                    Sink::File(
                        p,
                        Policy {
                            timed,
                            max_bytes,
                            backup_count,
                            utc: h.get("utc").and_then(Json::as_bool).unwrap_or(false),
                        },
                    )
                } else {
                    warn(
                        &mut warnings,
                        &format!("{key}.class"),
                        &format!("{class:?} is not a handler tbgw knows; the handler is ignored"),
                    );
                    continue;
                };
                if let Some(e) = h.get("encoding").and_then(Json::as_str) {
                    if !e.eq_ignore_ascii_case("utf-8") && !e.eq_ignore_ascii_case("utf8") {
                        warn(
                            &mut warnings,
                            &format!("{key}.encoding"),
                            "not honoured: files are written in UTF-8",
                        );
                    }
                }
                if h.get("filters").is_some() {
                    warn(
                        &mut warnings,
                        &format!("{key}.filters"),
                        "not honoured (ignored)",
                    );
                }
                for k in h.keys() {
                    if !known.contains(&k.as_str()) {
                        warn(
                            &mut warnings,
                            &format!("{key}.{k}"),
                            "not honoured (ignored)",
                        );
                    }
                }
                handlers.insert(
                    name.clone(),
                    Handler {
                        sink,
                        level: hlevel,
                    },
                );
            }
        }

        let mut loggers: [Option<Logger>; 8] = Default::default();
        let read_logger = |key: &str,
                           v: &Json,
                           errors: &mut Vec<String>,
                           warnings: &mut Vec<String>|
         -> Option<Logger> {
            let Some(o) = v.as_object() else {
                err(errors, key, "an object expected");
                return None;
            };
            let lvl = match o.get("level").map(level) {
                None => None,
                Some(Ok(l)) => l,
                Some(Err(e)) => {
                    err(errors, &format!("{key}.level"), &e);
                    None
                }
            };
            let mut hs = Vec::new();
            for (i, h) in o
                .get("handlers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                match h.as_str() {
                    Some(n) if handlers.contains_key(n) => hs.push(n.to_string()),
                    Some(n) if top.get("handlers").and_then(|x| x.get(n)).is_some() => {}
                    Some(n) => err(
                        errors,
                        &format!("{key}.handlers[{i}]"),
                        &format!("no handler named {n:?}"),
                    ),
                    None => err(
                        errors,
                        &format!("{key}.handlers[{i}]"),
                        "a handler name expected",
                    ),
                }
            }
            for k in o.keys() {
                if !["level", "handlers", "propagate", "qualname"].contains(&k.as_str()) {
                    warn(warnings, &format!("{key}.{k}"), "not honoured (ignored)");
                }
            }
            Some(Logger {
                level: lvl,
                handlers: hs,
                propagate: o.get("propagate").and_then(Json::as_bool).unwrap_or(true),
            })
        };
        if let Some(ls) = top.get("loggers").and_then(Json::as_object) {
            for (name, v) in ls {
                let key = format!("loggers.{name}");
                match LOGGERS[..ROOT].iter().position(|l| l == name) {
                    Some(i) => loggers[i] = read_logger(&key, v, &mut errors, &mut warnings),
                    None => warn(
                        &mut warnings,
                        &key,
                        "no tbgw records go to this logger; ignored",
                    ),
                }
            }
        }
        if let Some(r) = top.get("root") {
            loggers[ROOT] = read_logger("root", r, &mut errors, &mut warnings);
        }
        if errors.is_empty() {
            Ok(LogsConfig {
                handlers,
                loggers,
                warnings,
            })
        } else {
            Err(errors)
        }
    }

    /// The effective level and handlers of each of [`LOGGERS`].
    fn routes(&self) -> Vec<(LevelFilter, Vec<String>)> {
        // Python's root logger defaults to WARNING with no handlers.
        let root = self.loggers[ROOT].clone().unwrap_or(Logger {
            level: None,
            handlers: Vec::new(),
            propagate: true,
        });
        let root_level = root.level.unwrap_or(LevelFilter::WARN);
        (0..LOGGERS.len())
            .map(|i| match &self.loggers[i] {
                Some(l) if i != ROOT => {
                    let mut hs = l.handlers.clone();
                    if l.propagate {
                        for h in &root.handlers {
                            if !hs.contains(h) {
                                hs.push(h.clone());
                            }
                        }
                    }
                    (l.level.unwrap_or(root_level), hs)
                }
                _ => (root_level, root.handlers.clone()),
            })
            .collect()
    }

    /// The files this configuration writes.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn files(&self) -> Vec<PathBuf> {
        self.handlers
            .values()
            .filter_map(|h| match &h.sink {
                Sink::File(p, _) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Text lines or JSON objects (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One text line per record; ANSI colours only on a terminal.
    Text,
    /// One JSON object per record, for log shippers.
    Json,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn fmt_layer<W>(writer: W, ansi: bool, format: LogFormat) -> BoxedLayer
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let l = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => l.boxed(),
        LogFormat::Json => l.json().boxed(),
    }
}

/// Installs the global subscriber. `override_filter`: `RUST_LOG` or `--log-level` (replaces
/// the levels of `logs.json`); `default_level` when neither that nor `logs.json` says.
/// Warnings and errors also go to `last_errors` (for `tbgw status`), whatever the levels.
/// Returns the remote-logging handle, and errors opening the files of `logs.json` (the
/// handlers that failed are left out).
pub fn init(
    logs: Option<&LogsConfig>,
    override_filter: Option<&str>,
    default_level: &str,
    format: LogFormat,
    last_errors: crate::status::LastErrors,
) -> (RemoteLogHandle, Vec<String>) {
    let (remote, handle) = remote_logging();
    let mut layers: Vec<BoxedLayer> = vec![last_errors.with_filter(LevelFilter::WARN).boxed()];
    let mut errors = Vec::new();
    let global = override_filter.map(tracing_subscriber::EnvFilter::new);
    match logs {
        None => {
            layers.push(fmt_layer(
                std::io::stderr,
                std::io::stderr().is_terminal(),
                format,
            ));
            let global =
                global.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default_level));
            layers.push(remote.boxed());
            let _ = tracing_subscriber::registry()
                .with(layers)
                .with(global)
                .try_init();
            return (handle, errors);
        }
        Some(cfg) => {
            let routes = cfg.routes();
            let levels: Vec<LevelFilter> = routes
                .iter()
                .map(|(l, _)| {
                    if global.is_some() {
                        LevelFilter::TRACE
                    } else {
                        *l
                    }
                })
                .collect();
            let mut files: BTreeMap<PathBuf, RotatingFile> = BTreeMap::new();
            for (name, h) in &cfg.handlers {
                let to_me: Vec<bool> = routes.iter().map(|(_, hs)| hs.contains(name)).collect();
                if !to_me.contains(&true) {
                    continue;
                }
                let levels = levels.clone();
                let hlevel = h.level;
                let filter = FilterFn::new(move |m: &Metadata<'_>| {
                    if m.is_span() {
                        return true;
                    }
                    let i = logger_index(m.target());
                    to_me[i] && *m.level() <= levels[i] && *m.level() <= hlevel
                });
                let layer = match &h.sink {
                    Sink::Stdout => {
                        fmt_layer(std::io::stdout, std::io::stdout().is_terminal(), format)
                    }
                    Sink::Stderr => {
                        fmt_layer(std::io::stderr, std::io::stderr().is_terminal(), format)
                    }
                    Sink::File(p, policy) => {
                        let f = match files.get(p) {
                            Some(f) => f.clone(),
                            None => match RotatingFile::open(p, policy.clone()) {
                                Ok(f) => {
                                    files.insert(p.clone(), f.clone());
                                    f
                                }
                                Err(e) => {
                                    errors.push(format!(
                                        "handlers.{name}.filename: {}: {e}",
                                        p.display()
                                    ));
                                    continue;
                                }
                            },
                        };
                        fmt_layer(f, false, format)
                    }
                };
                layers.push(layer.with_filter(filter).boxed());
            }
            let remote_levels = levels;
            layers.push(
                remote
                    .with_filter(FilterFn::new(move |m: &Metadata<'_>| {
                        m.is_span() || *m.level() <= remote_levels[logger_index(m.target())]
                    }))
                    .boxed(),
            );
            let r = tracing_subscriber::registry().with(layers);
            let _ = match global {
                Some(g) => r.with(g).try_init(),
                None => r.try_init(),
            };
        }
    }
    (handle, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_upstream_loggers() {
        assert_eq!(logger_of("tbgw::tb::incoming"), "tb_connection");
        assert_eq!(logger_of("tbgw::tb"), "tb_connection");
        assert_eq!(logger_of("tbgw::throttle"), "service");
        assert_eq!(logger_of("tbgw::storage::sqlite"), "storage");
        assert_eq!(logger_of("tbgw_connectors::mqtt::connector"), "connector");
        assert_eq!(logger_of("tbgw::convert::json"), "converter");
        assert_eq!(logger_of("tbgw"), "service");
        assert_eq!(logger_of("tbgw_example_line"), "extension");
        assert_eq!(logger_of("rumqttc::state"), "root");
        assert_eq!(logger_of("tbgwx"), "root");
    }

    #[test]
    fn upstream_shape_parses_with_levels_handlers_and_warnings() {
        let text = r#"{
          "version": 1,
          "formatters": {"F": {"format": "%(message)s"}},
          "handlers": {
            "console": {"class": "logging.StreamHandler", "level": 0, "stream": "ext://sys.stdout"},
            "svc": {"class": "thingsboard_gateway.tb_utility.tb_rotating_file_handler.TimedRotatingFileHandler",
                    "filename": "./logs/service.log", "when": "D", "interval": 3, "backupCount": 7,
                    "maxBytes": 0, "encoding": "utf-8", "formatter": "F"}
          },
          "loggers": {
            "service": {"handlers": ["svc", "console"], "level": "DEBUG", "propagate": false},
            "storage": {"handlers": ["console"], "level": "NOTSET"},
            "grpc": {"handlers": ["console"], "level": "INFO"}
          },
          "root": {"level": "ERROR", "handlers": ["console"]}
        }"#;
        let c = LogsConfig::parse(Path::new("logs.json"), text, Some("/var/log/x".into())).unwrap();
        assert_eq!(c.files(), [PathBuf::from("/var/log/x/service.log")]);
        let r = c.routes();
        assert_eq!(
            r[0],
            (LevelFilter::DEBUG, vec!["svc".into(), "console".into()])
        );
        // NOTSET inherits the root's level; propagation adds the root's handler once.
        assert_eq!(r[4], (LevelFilter::ERROR, vec!["console".into()]));
        assert_eq!(r[ROOT].0, LevelFilter::ERROR);
        assert!(c.warnings.iter().any(|w| w == "logs.json: loggers.grpc: no tbgw records go to this logger; ignored"), "{:?}", c.warnings);
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("logs.json: formatters.F: not honoured")));
    }

    #[test]
    fn bad_values_name_file_and_key() {
        let text = r#"{"handlers": {"h": {"class": "logging.handlers.TimedRotatingFileHandler",
                       "filename": "a.log", "when": "Q"}},
                       "loggers": {"service": {"level": "LOUD", "handlers": ["nope"]}}}"#;
        let e = LogsConfig::parse(Path::new("conf/logs.json"), text, None).unwrap_err();
        assert!(
            e.contains(
                &"conf/logs.json: handlers.h.when: \"Q\": S, M, H, D, MIDNIGHT or W0-W6 expected"
                    .to_string()
            ),
            "{e:?}"
        );
        assert!(
            e.contains(
                &"conf/logs.json: loggers.service.level: unknown level \"LOUD\"".to_string()
            ),
            "{e:?}"
        );
        assert!(
            e.contains(
                &"conf/logs.json: loggers.service.handlers[0]: no handler named \"nope\""
                    .to_string()
            ),
            "{e:?}"
        );
    }
}
