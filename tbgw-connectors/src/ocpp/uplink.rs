//! A charge point's call → the message upstream's converter sees → `DeviceData`. Pure: the
//! caller supplies the clock.
//!
//! The message is the call's payload with its keys in `snake_case` (as the Python `ocpp`
//! package hands them to upstream's converter), plus what upstream adds per action
//! (`Vendor`/`Model` and the charging station's fields on BootNotification, `current_time` on
//! Heartbeat, JSON-decoded DataTransfer strings, `timestamp`, `ts` and the measurands `soc`,
//! `energy_active_import_register`, `power_active_import` on MeterValues and transactions).
//! An expression that finds nothing in the snake_case message is tried on the original
//! camelCase payload as well, so `${meterValue[0].sampledValue[0].value}` works too.

use serde_json::{Map, Value as Json};
use tbgw::expr::{parse_timestamp_str, Template, TsOptions};
use tbgw::model::{DeviceData, Value};

use super::config::{ChargePoint, Datapoint};
use super::messages::snake_case_keys;

/// The charge point's profile from its BootNotification: `Vendor`, `Model`, and tbgw's
/// `ChargePointId`, `SerialNumber`, `FirmwareVersion`.
pub fn profile(cp_id: &str, boot: &Json) -> Json {
    let station = boot.get("chargingStation").unwrap_or(boot);
    let pick = |keys: &[&str]| -> Json {
        keys.iter()
            .find_map(|k| station.get(*k).cloned())
            .unwrap_or(Json::Null)
    };
    let mut m = Map::new();
    m.insert("Vendor".into(), pick(&["vendorName", "chargePointVendor"]));
    m.insert("Model".into(), pick(&["model", "chargePointModel"]));
    m.insert(
        "SerialNumber".into(),
        pick(&[
            "serialNumber",
            "chargePointSerialNumber",
            "chargeBoxSerialNumber",
        ]),
    );
    m.insert("FirmwareVersion".into(), pick(&["firmwareVersion"]));
    m.insert("ChargePointId".into(), Json::String(cp_id.to_owned()));
    Json::Object(m)
}

/// The device name and type for a profile: the templates rendered with a missing placeholder
/// kept as written (as upstream), the name falling back to the charge point id without an
/// expression, the type to `default`.
pub fn device_identity(cp: &ChargePoint, profile: &Json) -> (String, String) {
    let cp_id = profile
        .get("ChargePointId")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let name = match &cp.name {
        Some(t) => t.render_or_keep(profile),
        None => cp_id.to_owned(),
    };
    let device_type = cp
        .device_type
        .as_ref()
        .map(|t| t.render_or_keep(profile))
        .unwrap_or_else(|| "default".into());
    (name, device_type)
}

const MEASURAND_KEYS: [(&str, &str); 3] = [
    ("SoC", "soc"),
    (
        "Energy.Active.Import.Register",
        "energy_active_import_register",
    ),
    ("Power.Active.Import", "power_active_import"),
];

fn ts_of(v: Option<&Json>) -> Option<i64> {
    v.and_then(Json::as_str)
        .and_then(|s| parse_timestamp_str(s, TsOptions::default()))
}

fn add_measurands(data: &mut Map<String, Json>, meter_values: Option<&Json>) {
    for mv in meter_values.and_then(Json::as_array).into_iter().flatten() {
        for sv in mv
            .get("sampled_value")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(m) = sv.get("measurand").and_then(Json::as_str) else {
                continue;
            };
            if let Some((_, key)) = MEASURAND_KEYS.iter().find(|(name, _)| *name == m) {
                if let Some(v) = sv.get("value") {
                    data.insert((*key).to_owned(), v.clone());
                }
            }
        }
    }
}

/// The message upstream's converter sees for `action` with `payload` (see the module docs),
/// and the time series timestamp of its data (None = now).
pub fn message(action: &str, payload: &Json, now_iso: &str) -> (Json, Option<i64>) {
    let snake = snake_case_keys(payload);
    let mut data = match snake {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    let mut ts = None;
    match action {
        "BootNotification" => {
            if let Some(Json::Object(station)) = data.remove("charging_station") {
                for (k, v) in station {
                    data.entry(k).or_insert(v);
                }
            }
            let vendor = data
                .get("vendor_name")
                .or_else(|| data.get("charge_point_vendor"))
                .cloned();
            let model = data
                .get("model")
                .or_else(|| data.get("charge_point_model"))
                .cloned();
            data.insert("Vendor".into(), vendor.unwrap_or(Json::Null));
            data.insert("Model".into(), model.unwrap_or(Json::Null));
        }
        "Heartbeat" => {
            data.insert("current_time".into(), Json::String(now_iso.to_owned()));
        }
        "DataTransfer" => {
            for v in data.values_mut() {
                if let Json::String(s) = v {
                    if let Ok(parsed) = serde_json::from_str::<Json>(s) {
                        *v = parsed;
                    }
                }
            }
        }
        "MeterValues" => {
            let first_ts = data
                .get("meter_value")
                .and_then(|m| m.get(0))
                .and_then(|m| m.get("timestamp"))
                .cloned();
            if let Some(t) = first_ts {
                ts = ts_of(Some(&t));
                data.insert("timestamp".into(), t);
            }
            let mv = data.get("meter_value").cloned();
            add_measurands(&mut data, mv.as_ref());
        }
        "TransactionEvent" | "StartTransaction" | "StopTransaction" | "StatusNotification" => {
            ts = ts_of(data.get("timestamp"));
            let mv = data
                .get("meter_value")
                .or_else(|| data.get("transaction_data"))
                .cloned();
            add_measurands(&mut data, mv.as_ref());
        }
        _ => {}
    }
    if let Some(t) = ts {
        data.insert("ts".into(), Json::from(t));
    }
    (Json::Object(data), ts)
}

fn resolve(t: &Template, msg: &Json, raw: &Json) -> Option<Json> {
    t.resolve(msg)
        .or_else(|| t.resolve(raw))
        .map(|v| v.into_owned())
}

fn render(t: &Template, msg: &Json, raw: &Json) -> Option<String> {
    t.render(msg).or_else(|| t.render(raw))
}

fn applies(d: &Datapoint, action: &str) -> bool {
    d.filter.iter().any(|f| f == action)
}

/// The data of one message for a device: every `attributes[]`/`timeseries[]` entry whose
/// `messageTypeFilter` names `action` and whose value expression finds something.
pub fn convert(
    cp: &ChargePoint,
    device: (&str, &str),
    action: &str,
    msg: &Json,
    raw: &Json,
    ts: i64,
) -> DeviceData {
    let mut out = DeviceData::new(device.0, device.1);
    for d in cp.attributes.iter().filter(|d| applies(d, action)) {
        let (Some(k), Some(v)) = (render(&d.key, msg, raw), resolve(&d.value, msg, raw)) else {
            continue;
        };
        out.push_attribute(k, Value::from_json(v));
    }
    for d in cp.timeseries.iter().filter(|d| applies(d, action)) {
        let (Some(k), Some(v)) = (render(&d.key, msg, raw), resolve(&d.value, msg, raw)) else {
            continue;
        };
        out.push_telemetry(ts, k, Value::from_json(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::config::{OcppFileConfig, Settings};
    use serde_json::json;
    use std::path::Path;

    fn cp(v: Json) -> ChargePoint {
        let cfg: OcppFileConfig =
            serde_json::from_value(json!({"centralSystem": {}, "chargePoints": [v]}))
                .expect("parses");
        Settings::build(Path::new("ocpp.json"), cfg, &mut Vec::new())
            .expect("valid")
            .charge_points
            .remove(0)
    }

    #[test]
    fn profile_and_names_for_both_generations() {
        let c = cp(
            json!({"idRegexpPattern": "x", "deviceNameExpression": "${Vendor} ${Model}",
                          "deviceTypeExpression": "${Vendor}"}),
        );
        let p16 = profile(
            "CP1",
            &json!({"chargePointVendor": "Eco", "chargePointModel": "Sim"}),
        );
        assert_eq!(device_identity(&c, &p16), ("Eco Sim".into(), "Eco".into()));
        let p21 = profile(
            "CP2",
            &json!({"chargingStation": {"vendorName": "V", "model": "M"}, "reason": "PowerUp"}),
        );
        assert_eq!(device_identity(&c, &p21).0, "V M");
        let c = cp(json!({"idRegexpPattern": "x", "deviceNameExpression": "EV ${ChargePointId}"}));
        assert_eq!(
            device_identity(&c, &p21),
            ("EV CP2".into(), "default".into())
        );
        let c = cp(json!({"idRegexpPattern": "x", "deviceNameExpression": "${Nope}"}));
        assert_eq!(device_identity(&c, &p21).0, "${Nope}");
    }

    #[test]
    fn meter_values_like_upstream() {
        let raw = json!({"evseId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z",
            "sampledValue": [{"value": 12.5, "measurand": "Energy.Active.Import.Register"},
                             {"value": 48, "measurand": "SoC"}]}]});
        let (msg, ts) = message("MeterValues", &raw, "now");
        assert_eq!(ts, Some(1_767_225_600_000));
        assert_eq!(msg["evse_id"], json!(1));
        assert_eq!(msg["soc"], json!(48));
        assert_eq!(msg["energy_active_import_register"], json!(12.5));
        let c = cp(json!({"idRegexpPattern": "x",
            "attributes": [{"messageTypeFilter": "MeterValues,", "key": "evse", "value": "${evse_id}"}],
            "timeseries": [{"messageTypeFilter": "MeterValues,TransactionEvent", "key": "energy",
                            "value": "${meter_value[:].sampled_value[:].value}"},
                           {"messageTypeFilter": "MeterValues", "key": "soc", "value": "${soc}"},
                           {"messageTypeFilter": "MeterValues", "key": "camel",
                            "value": "${meterValue[0].sampledValue[1].value}"},
                           {"messageTypeFilter": "MeterValues", "key": "missing", "value": "${nope}"},
                           {"messageTypeFilter": "Heartbeat", "key": "hb", "value": "${current_time}"}]}));
        let d = convert(&c, ("D", "T"), "MeterValues", &msg, &raw, ts.unwrap_or(0));
        assert_eq!(d.attributes.len(), 1);
        let keys: Vec<_> = d
            .telemetry
            .iter()
            .flat_map(|e| e.values.iter().map(|(k, _)| k.clone()))
            .collect();
        assert_eq!(keys, vec!["energy", "soc", "camel"]);
        assert_eq!(d.telemetry[0].ts, 1_767_225_600_000);
    }

    #[test]
    fn boot_heartbeat_and_data_transfer_messages() {
        let (m, _) = message(
            "BootNotification",
            &json!({"chargingStation": {"vendorName": "V", "model": "M", "serialNumber": "S"}, "reason": "PowerUp"}),
            "now",
        );
        assert_eq!(
            (
                m["Vendor"].clone(),
                m["serial_number"].clone(),
                m["reason"].clone()
            ),
            (json!("V"), json!("S"), json!("PowerUp"))
        );
        let (m, _) = message("Heartbeat", &json!({}), "2026-01-01T00:00:00Z");
        assert_eq!(m["current_time"], json!("2026-01-01T00:00:00Z"));
        let (m, _) = message(
            "DataTransfer",
            &json!({"vendorId": "v", "data": "{\"temp\": 21}"}),
            "now",
        );
        assert_eq!(m["data"]["temp"], json!(21));
        let (m, ts) = message(
            "TransactionEvent",
            &json!({"timestamp": "2026-01-01T00:00:01Z",
            "meterValue": [{"sampledValue": [{"value": 5, "measurand": "Power.Active.Import"}]}]}),
            "now",
        );
        assert_eq!(
            (m["power_active_import"].clone(), ts),
            (json!(5), Some(1_767_225_601_000))
        );
    }
}
