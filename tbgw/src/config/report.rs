//! Reading `reportStrategy` objects at the connector, device and datapoint levels, and the
//! legacy `sendDataOnlyOnChange`; the [`ReportOverrides`] a connector attaches to its data.
//! Re-exported by [`crate::report`], the service that applies them.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::config::{parse, ConfigError, ReportStrategyConfig, ReportType};

/// Top-level keys of a connector file that the report service reads (with
/// [`connector_strategy`]). The gateway leaves them in `ConnectorSpec::config`; a connector
/// that does not declare them reports them as ignored keys, which the gateway may drop.
pub const CONNECTOR_KEYS: &[&str] = &["reportStrategy", "sendDataOnlyOnChange"];

/// Reads one `reportStrategy` object found at `path` of `file`.
///
/// `null` and `{}` mean "not set" (`Ok(None)`), as upstream treats a strategy with neither
/// `type` nor `reportPeriod`. Anything else must be an object with a `type`; a wrong type,
/// an unknown `type` or `aggregationFunction`, or a `reportPeriod` of 0 for a periodic type
/// is an error naming `file`, the key path and the reason (upstream logs and ignores such a
/// strategy). Keys of the object that are not used are appended to `ignored` as full paths.
pub fn parse_strategy(
    value: &Json,
    file: &Path,
    path: &str,
    ignored: &mut Vec<String>,
) -> Result<Option<ReportStrategyConfig>, ConfigError> {
    match value {
        Json::Null => return Ok(None),
        Json::Object(o) if o.is_empty() => return Ok(None),
        Json::Object(o) if !o.contains_key("type") => {
            return Err(ConfigError::new(
                file,
                parse::join(path, "type"),
                "missing; expected ON_RECEIVED, ON_CHANGE, ON_REPORT_PERIOD, \
                 ON_CHANGE_OR_REPORT_PERIOD or DISABLED",
            ))
        }
        Json::Object(_) => {}
        other => {
            return Err(ConfigError::new(
                file,
                path,
                format!("expected an object with `type`, found {other}"),
            ))
        }
    }
    let s: ReportStrategyConfig = parse::from_value(file, path, value, ignored)?;
    validate(&s, file, path)?;
    Ok(Some(s))
}

/// Checks what serde cannot: `reportPeriod` must be above 0 for `ON_REPORT_PERIOD` and
/// `ON_CHANGE_OR_REPORT_PERIOD`. `path` is where the strategy sits (for
/// `thingsboard.reportStrategy`, the general level, pass that path).
pub fn validate(s: &ReportStrategyConfig, file: &Path, path: &str) -> Result<(), ConfigError> {
    if is_periodic(s.kind) && s.report_period == 0 {
        return Err(ConfigError::new(
            file,
            parse::join(path, "reportPeriod"),
            format!(
                "must be greater than 0 for {}",
                match s.kind {
                    ReportType::OnReportPeriod => "ON_REPORT_PERIOD",
                    _ => "ON_CHANGE_OR_REPORT_PERIOD",
                }
            ),
        ));
    }
    Ok(())
}

/// The connector level of a connector file's content (`ConnectorSpec::config`): its
/// top-level `reportStrategy`, else `ON_CHANGE` when the legacy `sendDataOnlyOnChange` is
/// `true`, else `None` (the general level applies). Errors name `file`, the key and the reason.
pub fn connector_strategy(
    config: &Json,
    file: &Path,
) -> Result<Option<ReportStrategyConfig>, ConfigError> {
    connector_strategy_checked(config, file, &mut Vec::new())
}

/// [`connector_strategy`], also listing unused keys inside `reportStrategy` (config load).
pub(crate) fn connector_strategy_checked(
    config: &Json,
    file: &Path,
    ignored: &mut Vec<String>,
) -> Result<Option<ReportStrategyConfig>, ConfigError> {
    // Both are checked, so a bad legacy flag is reported even next to a strategy.
    let legacy = legacy_on_change(
        config.get("sendDataOnlyOnChange"),
        file,
        "sendDataOnlyOnChange",
    )?;
    if let Some(v) = config.get("reportStrategy") {
        if let Some(s) = parse_strategy(v, file, "reportStrategy", ignored)? {
            return Ok(Some(s));
        }
    }
    Ok(legacy)
}

/// The legacy `sendDataOnlyOnChange` flag found at `path`: `true` is `ON_CHANGE` (default
/// TTL), `false` or absent is `None`; anything else is an error.
pub fn legacy_on_change(
    value: Option<&Json>,
    file: &Path,
    path: &str,
) -> Result<Option<ReportStrategyConfig>, ConfigError> {
    match value {
        None | Some(Json::Null) | Some(Json::Bool(false)) => Ok(None),
        Some(Json::Bool(true)) => Ok(Some(ReportStrategyConfig {
            kind: ReportType::OnChange,
            ..ReportStrategyConfig::default()
        })),
        Some(other) => Err(ConfigError::new(
            file,
            path,
            format!("expected true or false, found {other}"),
        )),
    }
}

/// The types that report periodically.
pub(crate) fn is_periodic(kind: ReportType) -> bool {
    matches!(
        kind,
        ReportType::OnReportPeriod | ReportType::OnChangeOrReportPeriod
    )
}

/// The device and datapoint levels of the report strategy, built by a connector once from
/// its configuration and attached (as an `Arc`, cheap to clone) to every
/// [`DeviceData`](crate::model::DeviceData) the device or mapping produces.
///
/// For a key, [`keys`](Self::keys) wins over [`device`](Self::device), which wins over the
/// connector and general levels. A name in `keys` applies to the telemetry key and to the
/// attribute of that name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportOverrides {
    /// The device level (`reportStrategy` of a Modbus slave, an MQTT mapping, an OPC-UA
    /// device), `None` to fall back to the connector level.
    pub device: Option<ReportStrategyConfig>,
    /// The datapoint level: key name → its own `reportStrategy`.
    pub keys: HashMap<String, ReportStrategyConfig>,
}

impl ReportOverrides {
    /// True when neither level is set (such overrides need not be attached).
    pub fn is_empty(&self) -> bool {
        self.device.is_none() && self.keys.is_empty()
    }

    /// The strategy these overrides give `key`, if any.
    pub fn strategy_for(&self, key: &str) -> Option<&ReportStrategyConfig> {
        self.keys.get(key).or(self.device.as_ref())
    }
}
