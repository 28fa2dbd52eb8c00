//! EDE import (`edeFilePath`, `edeConfig`): the Engineering Data Exchange table of BACnet
//! projects (a CSV file, one row per object) turned into `devices[]` entries, as upstream
//! does:
//!
//! * the header row is the one whose first cell starts with `# keyname`; its cells, without
//!   the leading `#`, name the columns; other rows starting with `#`, rows of two cells
//!   (`PROJECT_NAME;…`) and empty rows are skipped;
//! * every row of `object-type` 8 (a device) with at least one object of its own (rows whose
//!   `device obj.-instance` is the device's `object-instance`) becomes a device: named by its
//!   `object-name` (a constant), `deviceId` its instance, any address, `pollPeriod` 10000;
//! * each object of type 0–5 (analog and binary inputs, outputs, values) becomes a
//!   `timeseries` point keyed by its `object-name`, reading `presentValue`; other types are
//!   left out.
//!
//! The devices replace the file's `devices[]`, as upstream's do. Differences: a relative
//! `edeFilePath` is taken from the connector file's directory (upstream: the working
//! directory), and `edeConfig` (the file in base64) is split at `;` when its header row holds
//! one (upstream always splits it at `,`, so a standard EDE file given that way yields no
//! device). Fields may be quoted (`"a;b"`), as Python's `csv` reads them.

use serde_json::{json, Value as Json};

use super::config::DeviceConfig;

/// Why an EDE table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EdeError {
    /// `edeConfig` is not base64.
    #[error("not base64: {0}")]
    Base64(&'static str),
    /// The decoded text is not UTF-8.
    #[error("not UTF-8 text")]
    Utf8,
    /// No `# keyname` header row.
    #[error("no header row (a row starting with `# keyname`)")]
    NoHeader,
}

/// Upstream's object types of EDE rows it imports (`SUPPORTED_OBJECTS_TYPES`).
fn object_type(code: &str) -> Option<&'static str> {
    Some(match code {
        "0" => "analogInput",
        "1" => "analogOutput",
        "2" => "analogValue",
        "3" => "binaryInput",
        "4" => "binaryOutput",
        "5" => "binaryValue",
        _ => return None,
    })
}

/// Splits one CSV line at `delim`, with `"`-quoted fields (`""` is a quote inside one).
fn split_row(line: &str, delim: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            c if c == delim && !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The devices of an EDE table in `text`, its cells split at `delim`.
pub fn devices(text: &str, delim: char) -> Result<Vec<DeviceConfig>, EdeError> {
    let mut headers: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    for line in text.lines() {
        let row = split_row(line.trim_end_matches('\r'), delim);
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let first = row[0].as_str();
        if !first.starts_with('#') && row.len() == 2 {
            continue;
        }
        if first.starts_with("# keyname") {
            headers = row
                .iter()
                .map(|c| c.trim().trim_start_matches('#').trim().to_string())
                .collect();
            continue;
        }
        if first.starts_with('#') || headers.is_empty() {
            continue;
        }
        rows.push(
            headers
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let v = row.get(i).map(|c| c.trim()).unwrap_or_default();
                    (h.clone(), v.to_string())
                })
                .collect(),
        );
    }
    if headers.is_empty() {
        return Err(EdeError::NoHeader);
    }
    let get = |r: &[(String, String)], k: &str| -> Option<String> {
        r.iter().find(|(h, _)| h == k).map(|(_, v)| v.clone())
    };
    let mut out = Vec::new();
    for r in &rows {
        if get(r, "object-type").as_deref() != Some("8") {
            continue;
        }
        let Some(instance) = get(r, "object-instance") else {
            continue;
        };
        let objects: Vec<&Vec<(String, String)>> = rows
            .iter()
            .filter(|o| {
                get(o, "device obj.-instance").as_deref() == Some(instance.as_str())
                    && get(o, "object-type").as_deref() != Some("8")
            })
            .collect();
        if objects.is_empty() {
            continue;
        }
        let points: Vec<Json> = objects
            .iter()
            .filter_map(|o| {
                let t = object_type(&get(o, "object-type")?)?;
                let id = get(o, "object-instance")?;
                let id: Json = id
                    .parse::<u32>()
                    .map(Json::from)
                    .unwrap_or(Json::String(id));
                Some(json!({
                    "key": get(o, "object-name").unwrap_or_else(|| "Unknown Object".into()),
                    "objectType": t, "objectId": id, "propertyId": "presentValue"
                }))
            })
            .collect();
        let name = get(r, "object-name").unwrap_or_else(|| "Unknown Device".into());
        let device_id: Json = instance
            .parse::<u32>()
            .map(Json::from)
            .unwrap_or(Json::String(instance.clone()));
        out.push(DeviceConfig {
            device_info: Some(super::config::DeviceInfoConfig {
                device_name_expression: Some(name),
                device_name_expression_source: Some("constant".into()),
                device_profile_expression: Some("default".into()),
                device_profile_expression_source: Some("constant".into()),
            }),
            device_id: Some(device_id),
            poll_period: Some(10_000.0),
            timeseries: Some(Json::Array(points)),
            ..DeviceConfig::default()
        });
    }
    Ok(out)
}

/// The delimiter of `edeConfig` text: `;` when its header row holds one, else `,`.
pub fn delimiter_of(text: &str) -> char {
    match text.lines().find(|l| l.starts_with("# keyname")) {
        Some(h) if h.contains(';') => ';',
        _ => ',',
    }
}

/// Decodes standard base64 (padding optional, whitespace ignored).
pub fn base64(s: &str) -> Result<Vec<u8>, EdeError> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut ended = false;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => {
                ended = true;
                continue;
            }
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return Err(EdeError::Base64("a character outside the alphabet")),
        };
        if ended {
            return Err(EdeError::Base64("data after the padding"));
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err(EdeError::Base64("truncated"));
    }
    Ok(out)
}

/// `edeConfig`: base64 of an EDE file.
pub fn devices_from_base64(b64: &str) -> Result<Vec<DeviceConfig>, EdeError> {
    let bytes = base64(b64)?;
    let text = String::from_utf8(bytes).map_err(|_| EdeError::Utf8)?;
    devices(&text, delimiter_of(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDE: &str = "\
#Engineering-Data-Exchange - B.A.C.n.e.t EDE 2.0;;;;;;;;
PROJECT_NAME;Plant
VERSION_OF_REFERENCEFILE;1
# keyname;device obj.-instance;object-name;object-type;object-instance;description
AHU-1;1001;ahu;8;1001;the unit
AHU-1.temp;1001;supply temp;2;1;
AHU-1.relay;1001;\"fan; relay\";5;1;
AHU-1.sched;1001;schedule;17;1;
Lonely;1002;lonely;8;1002;no objects
";

    #[test]
    fn devices_with_their_points() {
        let d = devices(EDE, ';').unwrap();
        assert_eq!(d.len(), 1, "a device without objects is left out");
        let info = d[0].device_info.as_ref().unwrap();
        assert_eq!(info.device_name_expression.as_deref(), Some("ahu"));
        assert_eq!(d[0].device_id, Some(json!(1001)));
        assert_eq!(
            d[0].timeseries,
            Some(json!([
                {"key": "supply temp", "objectType": "analogValue", "objectId": 1, "propertyId": "presentValue"},
                {"key": "fan; relay", "objectType": "binaryValue", "objectId": 1, "propertyId": "presentValue"}
            ]))
        );
    }

    #[test]
    fn base64_and_delimiters() {
        assert_eq!(base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64("aGVsbG8").unwrap(), b"hello");
        assert!(base64("a*").is_err());
        // "# keyname,device obj.-instance,object-name,object-type,object-instance\nd,5,dev,8,5\no,5,t,0,3\n"
        let comma = "IyBrZXluYW1lLGRldmljZSBvYmouLWluc3RhbmNlLG9iamVjdC1uYW1lLG9iamVjdC10eXBlLG9iamVjdC1pbnN0YW5jZQpkLDUsZGV2LDgsNQpvLDUsdCwwLDMK";
        let d = devices_from_base64(comma).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].device_id, Some(json!(5)));
        assert!(matches!(devices("a;b;c\n", ';'), Err(EdeError::NoHeader)));
    }
}
