//! Agent answers -> JSON values, pure and synchronous: SNMP values made owned, the result
//! shapes of upstream's methods (a walk is one OID → value map), and datagram decoding for
//! traps (and the fuzz target).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{Map, Value as Json};
use snmp2::{MessageType, Pdu, Value};

/// An SNMP value, owned (snmp2's borrow the receive buffer).
#[derive(Debug, Clone, PartialEq)]
pub enum SnmpValue {
    /// INTEGER.
    Int(i64),
    /// OCTET STRING.
    Bytes(Vec<u8>),
    /// OBJECT IDENTIFIER, dotted.
    Oid(String),
    /// IpAddress.
    Ip([u8; 4]),
    /// Counter32.
    Counter32(u32),
    /// Gauge32 / Unsigned32.
    Unsigned32(u32),
    /// TimeTicks (hundredths of a second).
    Timeticks(u32),
    /// Counter64.
    Counter64(u64),
    /// Opaque.
    Opaque(Vec<u8>),
    /// BOOLEAN (not in SMIv2, but BER has it).
    Bool(bool),
    /// NULL.
    Null,
    /// noSuchObject (v2c/v3).
    NoSuchObject,
    /// noSuchInstance (v2c/v3).
    NoSuchInstance,
    /// endOfMibView (v2c/v3).
    EndOfMibView,
    /// Anything else, described.
    Other(String),
}

impl SnmpValue {
    /// Copies an snmp2 value.
    pub fn from_snmp(v: &Value<'_>) -> SnmpValue {
        match v {
            Value::Boolean(b) => SnmpValue::Bool(*b),
            Value::Null => SnmpValue::Null,
            Value::Integer(i) => SnmpValue::Int(*i),
            Value::OctetString(b) => SnmpValue::Bytes(b.to_vec()),
            Value::ObjectIdentifier(o) => SnmpValue::Oid(oid_text(o)),
            Value::IpAddress(a) => SnmpValue::Ip(*a),
            Value::Counter32(n) => SnmpValue::Counter32(*n),
            Value::Unsigned32(n) => SnmpValue::Unsigned32(*n),
            Value::Timeticks(n) => SnmpValue::Timeticks(*n),
            Value::Opaque(b) => SnmpValue::Opaque(b.to_vec()),
            Value::Counter64(n) => SnmpValue::Counter64(*n),
            Value::EndOfMibView => SnmpValue::EndOfMibView,
            Value::NoSuchObject => SnmpValue::NoSuchObject,
            Value::NoSuchInstance => SnmpValue::NoSuchInstance,
            other => SnmpValue::Other(format!("{other:?}")),
        }
    }

    /// True for the v2c exceptions that say "no value here".
    pub fn is_exception(&self) -> bool {
        matches!(
            self,
            SnmpValue::NoSuchObject | SnmpValue::NoSuchInstance | SnmpValue::EndOfMibView
        )
    }

    /// The value as JSON, typed: numbers stay numbers, an OCTET STRING is its UTF-8 text (or
    /// `aa:bb:..` hex when it is not UTF-8), TimeTicks are seconds (as upstream's
    /// `timedelta.total_seconds()`), an IpAddress is its dotted text.
    pub fn to_json(&self) -> Json {
        match self {
            SnmpValue::Int(i) => Json::from(*i),
            SnmpValue::Counter32(n) | SnmpValue::Unsigned32(n) => Json::from(*n),
            SnmpValue::Counter64(n) => Json::from(*n),
            SnmpValue::Timeticks(t) => {
                serde_json::Number::from_f64(f64::from(*t) / 100.0).map_or(Json::Null, Json::Number)
            }
            SnmpValue::Bool(b) => Json::Bool(*b),
            SnmpValue::Null => Json::Null,
            other => Json::String(other.text()),
        }
    }

    /// The value as text, the form of the values in walk and table maps.
    pub fn text(&self) -> String {
        match self {
            SnmpValue::Int(i) => i.to_string(),
            SnmpValue::Bytes(b) | SnmpValue::Opaque(b) => bytes_text(b),
            SnmpValue::Oid(o) => o.clone(),
            SnmpValue::Ip(a) => IpAddr::from(*a).to_string(),
            SnmpValue::Counter32(n) | SnmpValue::Unsigned32(n) => n.to_string(),
            SnmpValue::Timeticks(t) => (f64::from(*t) / 100.0).to_string(),
            SnmpValue::Counter64(n) => n.to_string(),
            SnmpValue::Bool(b) => b.to_string(),
            SnmpValue::Null => "null".into(),
            SnmpValue::NoSuchObject => "noSuchObject".into(),
            SnmpValue::NoSuchInstance => "noSuchInstance".into(),
            SnmpValue::EndOfMibView => "endOfMibView".into(),
            SnmpValue::Other(s) => s.clone(),
        }
    }
}

/// UTF-8 text, or lowercase hex bytes separated by `:` when the bytes are not UTF-8 (a MAC
/// address, a binary counter). Upstream's decode raises there and the whole poll is lost.
pub fn bytes_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => {
            let mut out = String::with_capacity(b.len() * 3);
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(':');
                }
                let _ = write!(out, "{byte:02x}");
            }
            out
        }
    }
}

/// Dotted text of an OID (`1.3.6.1.2.1.1.1.0`).
pub fn oid_text(o: &snmp2::Oid<'_>) -> String {
    match o.iter() {
        Some(it) => {
            let mut s = String::new();
            for (i, n) in it.enumerate() {
                if i > 0 {
                    s.push('.');
                }
                let _ = write!(s, "{n}");
            }
            s
        }
        None => o.to_id_string(),
    }
}

/// The components of a dotted OID; `None` when it is not one (empty, a non-number, fewer
/// than two components, or a first component above 2).
pub fn parse_oid(s: &str) -> Option<Vec<u64>> {
    let s = s.trim().trim_start_matches('.');
    let parts: Option<Vec<u64>> = s.split('.').map(|p| p.parse::<u64>().ok()).collect();
    let parts = parts?;
    if parts.len() < 2 || parts[0] > 2 || (parts[0] < 2 && parts[1] > 39) {
        return None;
    }
    Some(parts)
}

/// One varbind, owned: the OID's components and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct VarBind {
    /// The OID.
    pub oid: Vec<u64>,
    /// The value.
    pub value: SnmpValue,
}

impl VarBind {
    /// The OID as dotted text.
    pub fn oid_text(&self) -> String {
        join_oid(&self.oid)
    }
}

/// Dotted text of OID components.
pub fn join_oid(oid: &[u64]) -> String {
    let mut s = String::with_capacity(oid.len() * 3);
    for (i, n) in oid.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        let _ = write!(s, "{n}");
    }
    s
}

/// Copies a PDU's varbinds.
pub fn varbinds(pdu: &Pdu<'_>) -> Vec<VarBind> {
    pdu.varbinds
        .clone()
        .map(|(oid, v)| VarBind {
            oid: oid.iter().map(|i| i.collect()).unwrap_or_default(),
            value: SnmpValue::from_snmp(&v),
        })
        .collect()
}

/// What one method produced for one key.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodResult {
    /// get, set: one value.
    Scalar(SnmpValue),
    /// multiget: the values in request order.
    List(Vec<SnmpValue>),
    /// getnext, walk, multiwalk, bulkget, bulkwalk, multiset: OID → value.
    Map(Vec<VarBind>),
    /// table, bulktable: the varbinds under the table and where the column number is.
    Table {
        /// Varbinds of the walk.
        binds: Vec<VarBind>,
        /// Components before the column number.
        base: usize,
    },
}

impl MethodResult {
    /// The JSON value sent to ThingsBoard, in upstream's shapes and with its bugs fixed:
    /// a scalar is typed ([`SnmpValue::to_json`]); multiget is the values' text joined with
    /// `,` (upstream drops it when the values are OCTET STRINGs); a map is `{oid: text}`
    /// (upstream writes OCTET STRINGs as `"b'...'"`); a table is `{row: {column: text}}`
    /// (upstream merges the rows, so only the last row survives). `None` when there is
    /// nothing to send (a get that found no such object).
    pub fn to_json(&self) -> Option<Json> {
        match self {
            MethodResult::Scalar(v) if v.is_exception() => None,
            MethodResult::Scalar(SnmpValue::Null) => None,
            MethodResult::Scalar(v) => Some(v.to_json()),
            MethodResult::List(vs) => {
                let present: Vec<String> = vs
                    .iter()
                    .filter(|v| !v.is_exception())
                    .map(SnmpValue::text)
                    .collect();
                if present.is_empty() {
                    None
                } else {
                    Some(Json::String(present.join(",")))
                }
            }
            MethodResult::Map(binds) => {
                let mut m = Map::new();
                for b in binds.iter().filter(|b| !b.value.is_exception()) {
                    m.insert(b.oid_text(), Json::String(b.value.text()));
                }
                Some(Json::Object(m))
            }
            MethodResult::Table { binds, base } => Some(tablify(binds, *base)),
        }
    }

    /// The RPC answer's value: upstream answers `{"result": text}` for a single value; a map
    /// or table is a JSON object (upstream sends Python's `repr` of a dict).
    pub fn rpc_json(&self) -> Json {
        match self {
            MethodResult::Scalar(v) => Json::String(v.text()),
            other => other.to_json().unwrap_or(Json::Null),
        }
    }
}

/// Rows of a table walk: `{row index: {column: text}}`. The column is the component right
/// after `base` components, the row index the dotted rest.
pub fn tablify(binds: &[VarBind], base: usize) -> Json {
    let mut rows: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    for b in binds.iter().filter(|b| !b.value.is_exception()) {
        let Some((col, rest)) = b.oid.get(base..).and_then(|t| t.split_first()) else {
            continue;
        };
        rows.entry(join_oid(rest))
            .or_default()
            .insert(col.to_string(), Json::String(b.value.text()));
    }
    Json::Object(
        rows.into_iter()
            .map(|(k, v)| (k, Json::Object(v)))
            .collect(),
    )
}

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a BER-encoded SNMP message snmp2 can read.
    #[error("malformed SNMP message: {0}")]
    Malformed(String),
    /// A message of a kind the trap listener does not take.
    #[error("not a trap or inform: {0:?}")]
    NotATrap(MessageType),
    /// SNMPv3 traps are not received.
    #[error("SNMPv3 traps are not received")]
    V3,
}

/// A received trap or inform, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Trap {
    /// 0 for v1, 1 for v2c.
    pub version: i64,
    /// The community it carried.
    pub community: Vec<u8>,
    /// The trap's OID: v2c's `snmpTrapOID.0`; for v1 the RFC 3584 translation of
    /// enterprise, generic and specific trap.
    pub trap_oid: String,
    /// The varbinds, without v2c's `sysUpTime.0` and `snmpTrapOID.0`.
    pub binds: Vec<VarBind>,
    /// v1: the agent address in the PDU.
    pub agent_addr: Option<IpAddr>,
    /// An inform: the sender waits for an answer with this request id.
    pub inform_id: Option<i32>,
}

/// sysUpTime.0
const SYS_UPTIME_0: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
/// snmpTrapOID.0
const SNMP_TRAP_OID_0: &[u64] = &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0];

/// Decodes a trap or inform datagram (v1 or v2c). Never panics, whatever the bytes.
pub fn decode_trap(bytes: &[u8]) -> Result<Trap, DecodeError> {
    // snmp2 cannot parse v3 without a security context: say so instead of "malformed".
    let pdu = Pdu::from_bytes(bytes).map_err(|e| match e {
        snmp2::Error::AuthFailure(_) => DecodeError::V3,
        other => DecodeError::Malformed(other.to_string()),
    })?;
    let version = pdu.version().map(|v| v as i64).unwrap_or(-1);
    let mut binds = varbinds(&pdu);
    match pdu.message_type {
        MessageType::TrapV1 => {
            let Some(info) = &pdu.v1_trap_info else {
                return Err(DecodeError::Malformed("v1 trap without its header".into()));
            };
            let enterprise = oid_text(&info.enterprise);
            let trap_oid = if (0..6).contains(&info.generic_trap) {
                format!("1.3.6.1.6.3.1.1.5.{}", info.generic_trap + 1)
            } else {
                format!("{enterprise}.0.{}", info.specific_trap)
            };
            Ok(Trap {
                version,
                community: pdu.community.to_vec(),
                trap_oid,
                binds,
                agent_addr: Some(info.agent_addr),
                inform_id: None,
            })
        }
        MessageType::Trap | MessageType::InformRequest => {
            let trap_oid = binds
                .iter()
                .find(|b| b.oid == SNMP_TRAP_OID_0)
                .map(|b| b.value.text())
                .unwrap_or_default();
            binds.retain(|b| b.oid != SYS_UPTIME_0 && b.oid != SNMP_TRAP_OID_0);
            let inform_id = (pdu.message_type == MessageType::InformRequest).then_some(pdu.req_id);
            Ok(Trap {
                version,
                community: pdu.community.to_vec(),
                trap_oid,
                binds,
                agent_addr: None,
                inform_id,
            })
        }
        other => Err(DecodeError::NotATrap(other)),
    }
}

/// Decodes an agent's answer datagram (v1/v2c) into its error status and varbinds: what the
/// poller does with every answer. For the fuzz target; never panics.
pub fn decode_response(bytes: &[u8]) -> Result<(u32, Vec<VarBind>), DecodeError> {
    let pdu = Pdu::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let binds = varbinds(&pdu);
    Ok((pdu.error_status, binds))
}

/// Decodes any datagram both ways and renders every shape, as the connector would: the
/// fuzz target's body.
pub fn decode_any(bytes: &[u8]) -> usize {
    let mut n = 0;
    if let Ok((_, binds)) = decode_response(bytes) {
        for base in [0, 3, 9] {
            if let Some(j) = (MethodResult::Table {
                binds: binds.clone(),
                base,
            })
            .to_json()
            {
                n += j.to_string().len();
            }
        }
        n += MethodResult::Map(binds.clone())
            .to_json()
            .map_or(0, |j| j.to_string().len());
        n += MethodResult::List(binds.iter().map(|b| b.value.clone()).collect())
            .to_json()
            .map_or(0, |j| j.to_string().len());
        for b in &binds {
            n += b.value.to_json().to_string().len();
        }
    }
    if let Ok(t) = decode_trap(bytes) {
        n += t.binds.len() + t.trap_oid.len();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vb(oid: &str, value: SnmpValue) -> VarBind {
        VarBind {
            oid: parse_oid(oid).expect("oid"),
            value,
        }
    }

    #[test]
    fn scalars_are_typed_and_octet_strings_are_text() {
        assert_eq!(SnmpValue::Int(-5).to_json(), json!(-5));
        assert_eq!(
            SnmpValue::Bytes(b"router".to_vec()).to_json(),
            json!("router")
        );
        assert_eq!(
            SnmpValue::Bytes(vec![0, 0x1a, 0xff]).to_json(),
            json!("00:1a:ff")
        );
        assert_eq!(SnmpValue::Timeticks(12345).to_json(), json!(123.45));
        assert_eq!(SnmpValue::Ip([10, 0, 0, 1]).to_json(), json!("10.0.0.1"));
        assert_eq!(SnmpValue::Counter64(u64::MAX).to_json(), json!(u64::MAX));
        assert_eq!(
            MethodResult::Scalar(SnmpValue::NoSuchObject).to_json(),
            None
        );
    }

    #[test]
    fn multiget_of_octet_strings_is_joined_not_dropped() {
        let r = MethodResult::List(vec![
            SnmpValue::Bytes(b"Linux".to_vec()),
            SnmpValue::Oid("1.3.6.1.4.1.8072.3.2.10".into()),
            SnmpValue::NoSuchInstance,
            SnmpValue::Int(7),
        ]);
        assert_eq!(r.to_json(), Some(json!("Linux,1.3.6.1.4.1.8072.3.2.10,7")));
    }

    #[test]
    fn walk_values_are_text_not_python_bytes_repr() {
        let r = MethodResult::Map(vec![
            vb("1.3.6.1.2.1.1.1.0", SnmpValue::Bytes(b"Linux box".to_vec())),
            vb("1.3.6.1.2.1.1.7.0", SnmpValue::Int(72)),
        ]);
        assert_eq!(
            r.to_json(),
            Some(json!({"1.3.6.1.2.1.1.1.0": "Linux box", "1.3.6.1.2.1.1.7.0": "72"}))
        );
    }

    #[test]
    fn table_keeps_every_row() {
        // ifTable: 1.3.6.1.2.1.2.2, entry .1, columns 1 (index) and 2 (descr), rows 1 and 2.
        let binds = vec![
            vb("1.3.6.1.2.1.2.2.1.1.1", SnmpValue::Int(1)),
            vb("1.3.6.1.2.1.2.2.1.1.2", SnmpValue::Int(2)),
            vb("1.3.6.1.2.1.2.2.1.2.1", SnmpValue::Bytes(b"lo".to_vec())),
            vb("1.3.6.1.2.1.2.2.1.2.2", SnmpValue::Bytes(b"eth0".to_vec())),
        ];
        let r = MethodResult::Table { binds, base: 9 };
        assert_eq!(
            r.to_json(),
            Some(json!({"1": {"1": "1", "2": "lo"}, "2": {"1": "2", "2": "eth0"}}))
        );
    }

    #[test]
    fn oids_parse_strictly() {
        assert_eq!(parse_oid("1.3.6.1"), Some(vec![1, 3, 6, 1]));
        assert_eq!(parse_oid(".1.3.6"), Some(vec![1, 3, 6]));
        assert_eq!(parse_oid("1"), None);
        assert_eq!(parse_oid("1.3.x"), None);
        assert_eq!(parse_oid("3.1"), None);
        assert_eq!(parse_oid(""), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b""[..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x03, 0x02, 0x01, 0x09],
            &b"hello world"[..],
        ] {
            assert!(decode_trap(bytes).is_err());
            assert!(decode_response(bytes).is_err());
            let _ = decode_any(bytes);
        }
    }
}
