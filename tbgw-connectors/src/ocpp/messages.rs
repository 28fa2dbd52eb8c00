//! The charge point's calls the central system answers: a check of each incoming payload
//! against the required fields and types of the official schema, and the answers, built as
//! camelCase JSON with only the schema's fields (the `ocpp` package and real chargers
//! validate them).
//!
//! Pure functions: the caller supplies the clock and the authorization decision.

use serde_json::{json, Map, Value as Json};

use super::frame::Version;

/// The JSON type a schema field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Arr,
    Obj,
}

impl Kind {
    fn matches(self, v: &Json) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::Int => v.is_i64() || v.is_u64(),
            Kind::Arr => v.is_array(),
            Kind::Obj => v.is_object(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Arr => "an array",
            Kind::Obj => "an object",
        }
    }
}

/// Required fields (dotted path for nested members) of the calls the central system handles.
fn required(version: Version, action: &str) -> Option<&'static [(&'static str, Kind)]> {
    use Kind::*;
    Some(match (version.is_2x(), action) {
        (false, "BootNotification") => &[("chargePointVendor", Str), ("chargePointModel", Str)],
        (false, "Authorize") => &[("idTag", Str)],
        (false, "StatusNotification") => {
            &[("connectorId", Int), ("errorCode", Str), ("status", Str)]
        }
        (false, "MeterValues") => &[("connectorId", Int), ("meterValue", Arr)],
        (false, "StartTransaction") => &[
            ("connectorId", Int),
            ("idTag", Str),
            ("meterStart", Int),
            ("timestamp", Str),
        ],
        (false, "StopTransaction") => &[
            ("meterStop", Int),
            ("timestamp", Str),
            ("transactionId", Int),
        ],
        (true, "BootNotification") => &[
            ("chargingStation", Obj),
            ("chargingStation.model", Str),
            ("chargingStation.vendorName", Str),
            ("reason", Str),
        ],
        (true, "Authorize") => &[
            ("idToken", Obj),
            ("idToken.idToken", Str),
            ("idToken.type", Str),
        ],
        (true, "StatusNotification") => &[
            ("timestamp", Str),
            ("connectorStatus", Str),
            ("evseId", Int),
            ("connectorId", Int),
        ],
        (true, "MeterValues") => &[("evseId", Int), ("meterValue", Arr)],
        (true, "TransactionEvent") => &[
            ("eventType", Str),
            ("timestamp", Str),
            ("triggerReason", Str),
            ("seqNo", Int),
            ("transactionInfo", Obj),
            ("transactionInfo.transactionId", Str),
        ],
        (_, "Heartbeat") => &[],
        (_, "DataTransfer") => &[("vendorId", Str)],
        _ => return None,
    })
}

/// Calls whose answer is an empty object, handled (answered and passed to the converter)
/// beyond the ones upstream handles.
fn empty_answer(version: Version, action: &str) -> bool {
    match version {
        Version::V16 => matches!(
            action,
            "StatusNotification"
                | "MeterValues"
                | "DiagnosticsStatusNotification"
                | "FirmwareStatusNotification"
        ),
        _ => matches!(
            action,
            "StatusNotification"
                | "MeterValues"
                | "FirmwareStatusNotification"
                | "LogStatusNotification"
                | "NotifyEvent"
                | "NotifyReport"
                | "NotifyMonitoringReport"
                | "SecurityEventNotification"
                | "NotifyChargingLimit"
                | "ClearedChargingLimit"
                | "ReportChargingProfiles"
                | "NotifyDisplayMessages"
                | "NotifyCustomerInformation"
                | "ReservationStatusUpdate"
                | "PublishFirmwareStatusNotification"
        ),
    }
}

/// True when the central system answers `action` of `version`.
pub fn is_handled(version: Version, action: &str) -> bool {
    required(version, action).is_some() || empty_answer(version, action)
}

/// Why an incoming call is refused: the CALLERROR code and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The OCPP error code.
    pub code: &'static str,
    /// A description for the charge point's log.
    pub description: String,
}

/// Checks a call's payload: the action is one the central system answers, the payload is an
/// object, and every required field is present with the right type.
pub fn check(version: Version, action: &str, payload: &Json) -> Result<(), Refusal> {
    if !is_handled(version, action) {
        return Err(Refusal {
            code: "NotImplemented",
            description: format!("{action} is not handled by this central system"),
        });
    }
    let Some(obj) = payload.as_object() else {
        return Err(Refusal {
            code: version.format_violation(),
            description: "the payload is not a JSON object".into(),
        });
    };
    for (path, kind) in required(version, action).unwrap_or(&[]) {
        let mut cur: Option<&Json> = None;
        let mut map = Some(obj);
        for part in path.split('.') {
            cur = map.and_then(|m| m.get(part));
            map = cur.and_then(Json::as_object);
        }
        match cur {
            None | Some(Json::Null) => {
                return Err(Refusal {
                    code: version.occurrence_violation(),
                    description: format!("{path} is required"),
                })
            }
            Some(v) if !kind.matches(v) => {
                return Err(Refusal {
                    code: "TypeConstraintViolation",
                    description: format!("{path} must be {}", kind.name()),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The id token a call asks about, if any (1.6J `idTag`, 2.x `idToken.idToken`).
pub fn id_token(version: Version, payload: &Json) -> Option<&str> {
    if version.is_2x() {
        payload.get("idToken")?.get("idToken")?.as_str()
    } else {
        payload.get("idTag")?.as_str()
    }
}

/// What the central system decides about a call, for its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    /// Now, as an RFC 3339 UTC time (`2026-01-01T00:00:00.000Z`).
    pub now: &'a str,
    /// BootNotification's heartbeat interval in seconds.
    pub heartbeat_interval: u64,
    /// Whether the call's id token is allowed (Authorize, transactions).
    pub authorized: bool,
    /// The transaction id StartTransaction (1.6J) hands out.
    pub transaction_id: i64,
}

fn status(version: Version, authorized: bool) -> &'static str {
    match (authorized, version.is_2x()) {
        (true, _) => "Accepted",
        (false, false) => "Invalid",
        (false, true) => "Invalid",
    }
}

/// The CALLRESULT payload for a call that passed [`check`].
pub fn answer(version: Version, action: &str, payload: &Json, d: &Decision<'_>) -> Json {
    let auth_key = if version.is_2x() {
        "idTokenInfo"
    } else {
        "idTagInfo"
    };
    let info = json!({ "status": status(version, d.authorized) });
    match action {
        "BootNotification" => json!({
            "currentTime": d.now,
            "interval": d.heartbeat_interval,
            "status": "Accepted",
        }),
        "Heartbeat" => json!({ "currentTime": d.now }),
        "Authorize" => json!({ auth_key: info }),
        "StartTransaction" => json!({ "idTagInfo": info, "transactionId": d.transaction_id }),
        "StopTransaction" | "TransactionEvent" if id_token(version, payload).is_some() => {
            json!({ auth_key: info })
        }
        "DataTransfer" => json!({ "status": "Accepted" }),
        _ => Json::Object(Map::new()),
    }
}

/// `camelCase` keys of every object inside `v` turned into `snake_case` the way the Python
/// `ocpp` package does before upstream's converter sees them (`meterValue` →
/// `meter_value`, `evseId` → `evse_id`), so upstream's value expressions work unchanged.
pub fn snake_case_keys(v: &Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (snake_case(k), snake_case_keys(v)))
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.iter().map(snake_case_keys).collect()),
        other => other.clone(),
    }
}

/// One key in `snake_case`, as the Python package's two regular expressions make it.
pub fn snake_case(key: &str) -> String {
    let key = key
        .replace("ocppCSMSURL", "ocpp_csms_url")
        .replace("V2X", "_v2x")
        .replace("V2G", "_v2g");
    // (.)([A-Z][a-z]+) -> \1_\2, scanning left to right without overlap.
    let c: Vec<char> = key.chars().collect();
    let mut s1 = String::with_capacity(key.len() + 4);
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let up = c.get(i + 1).is_some_and(char::is_ascii_uppercase);
        let low = c.get(i + 2).is_some_and(char::is_ascii_lowercase);
        if ch != '\n' && up && low {
            s1.push(ch);
            s1.push('_');
            s1.push(c[i + 1]);
            i += 2;
            while let Some(l) = c.get(i).filter(|l| l.is_ascii_lowercase()) {
                s1.push(*l);
                i += 1;
            }
        } else {
            s1.push(ch);
            i += 1;
        }
    }
    // ([a-z0-9])([A-Z])(?=\S) -> \1_\2
    let c: Vec<char> = s1.chars().collect();
    let mut out = String::with_capacity(s1.len() + 4);
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let first = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        let up = c.get(i + 1).is_some_and(char::is_ascii_uppercase);
        let then = c.get(i + 2).is_some_and(|n| !n.is_whitespace());
        if first && up && then {
            out.push(ch);
            out.push('_');
            out.push(c[i + 1]);
            i += 2;
        } else {
            out.push(ch);
            i += 1;
        }
    }
    out.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(authorized: bool) -> Decision<'static> {
        Decision {
            now: "2026-01-01T00:00:00.000Z",
            heartbeat_interval: 10,
            authorized,
            transaction_id: 7,
        }
    }

    #[test]
    fn snake_case_like_the_python_package() {
        for (k, want) in [
            ("meterValue", "meter_value"),
            ("sampledValue", "sampled_value"),
            ("connectorId", "connector_id"),
            ("evseId", "evse_id"),
            ("chargePointVendor", "charge_point_vendor"),
            ("idTag", "id_tag"),
            ("SoC", "soc"),
            ("socV2X", "soc_v2x"),
            ("ocppCSMSURL", "ocpp_csms_url"),
            ("value", "value"),
            ("chargingStation", "charging_station"),
            ("firmwareVersion", "firmware_version"),
            ("iccid", "iccid"),
        ] {
            assert_eq!(snake_case(k), want, "{k}");
        }
        assert_eq!(
            snake_case_keys(&json!({"meterValue": [{"sampledValue": [{"value": "1"}]}]})),
            json!({"meter_value": [{"sampled_value": [{"value": "1"}]}]})
        );
    }

    #[test]
    fn checks_required_fields_and_types() {
        let v = Version::V16;
        assert_eq!(
            check(
                v,
                "BootNotification",
                &json!({"chargePointVendor": "a", "chargePointModel": "b"})
            ),
            Ok(())
        );
        assert_eq!(
            check(v, "BootNotification", &json!({"chargePointVendor": "a"}))
                .unwrap_err()
                .code,
            "OccurenceConstraintViolation"
        );
        assert_eq!(
            check(
                v,
                "MeterValues",
                &json!({"connectorId": "1", "meterValue": []})
            )
            .unwrap_err()
            .code,
            "TypeConstraintViolation"
        );
        assert_eq!(
            check(v, "Heartbeat", &json!([])).unwrap_err().code,
            "FormationViolation"
        );
        assert_eq!(
            check(v, "TransactionEvent", &json!({})).unwrap_err().code,
            "NotImplemented"
        );
        let v = Version::V21;
        assert_eq!(
            check(
                v,
                "BootNotification",
                &json!({"chargingStation": {"model": "m"}, "reason": "PowerUp"})
            )
            .unwrap_err()
            .description,
            "chargingStation.vendorName is required"
        );
        assert_eq!(
            check(v, "StartTransaction", &json!({})).unwrap_err().code,
            "NotImplemented"
        );
        assert_eq!(check(v, "NotifyEvent", &json!({"x": 1})), Ok(()));
        assert_eq!(
            check(v, "Heartbeat", &json!("x")).unwrap_err().code,
            "FormatViolation"
        );
    }

    #[test]
    fn answers_have_only_schema_fields() {
        let v = Version::V16;
        assert_eq!(
            answer(v, "BootNotification", &json!({}), &d(true)),
            json!({"currentTime": "2026-01-01T00:00:00.000Z", "interval": 10, "status": "Accepted"})
        );
        assert_eq!(
            answer(v, "Authorize", &json!({"idTag": "x"}), &d(false)),
            json!({"idTagInfo": {"status": "Invalid"}})
        );
        assert_eq!(
            answer(v, "StartTransaction", &json!({"idTag": "x"}), &d(true)),
            json!({"idTagInfo": {"status": "Accepted"}, "transactionId": 7})
        );
        assert_eq!(
            answer(v, "StopTransaction", &json!({}), &d(true)),
            json!({})
        );
        let v = Version::V201;
        assert_eq!(
            answer(v, "Authorize", &json!({}), &d(true)),
            json!({"idTokenInfo": {"status": "Accepted"}})
        );
        assert_eq!(
            answer(
                v,
                "TransactionEvent",
                &json!({"idToken": {"idToken": "a", "type": "ISO14443"}}),
                &d(false)
            ),
            json!({"idTokenInfo": {"status": "Invalid"}})
        );
        assert_eq!(
            answer(v, "TransactionEvent", &json!({}), &d(true)),
            json!({})
        );
        assert_eq!(
            answer(v, "DataTransfer", &json!({}), &d(true)),
            json!({"status": "Accepted"})
        );
        assert_eq!(answer(v, "MeterValues", &json!({}), &d(true)), json!({}));
    }
}
