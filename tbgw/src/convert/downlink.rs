//! Downlink conversion: what an attribute update or an RPC from ThingsBoard becomes on the
//! device side.
//!
//! There is deliberately no `DownlinkConverter` trait. An earlier one turned a request into a
//! single byte payload, but no connector could use it: what a downlink becomes is
//! protocol-shaped — an MQTT topic, payload, QoS and retain flag; an HTTP method, URL, headers
//! and body with retries; Modbus function codes and registers; OPC-UA node writes and method
//! calls — and the connectors with templates (MQTT `requestsMapping.attributeUpdates` /
//! `serverSideRpc`, Request and REST `attributeUpdates` / `serverSideRpc`) render several
//! templates per request, not one payload. A trait over all of that would be a second,
//! looser copy of each connector's own downlink types, called from nowhere generic.
//!
//! What those connectors do share lives here and in [`crate::expr`]: the scope their templates
//! render against, with upstream's reserved placeholders, and the
//! [`Template`](crate::expr::Template) engine with its text/JSON
//! [`Encoding`](crate::expr::Encoding). A connector author writes the downlink as templates
//! compiled at build time and rendered against [`rpc_scope`] or [`attribute_scope`].

use serde_json::{json, Value as Json};

/// The scope an RPC's templates render against: `${deviceName}` (empty for a connector
/// RPC), `${methodName}`, `${requestId}`, `${params}` and `${params.<path>}`.
///
/// ```
/// use serde_json::json;
/// use tbgw::expr::{Encoding, Template};
/// let scope = tbgw::convert::downlink::rpc_scope(Some("pump-1"), "setSpeed", 7, &json!({"rpm": 900}));
/// let url = Template::parse("/pumps/${deviceName}/speed?rpm=${params.rpm}").unwrap();
/// assert_eq!(url.render_scope(&scope, Encoding::Text).unwrap(), "/pumps/pump-1/speed?rpm=900");
/// ```
pub fn rpc_scope(device: Option<&str>, method: &str, id: i64, params: &Json) -> Json {
    json!({
        "deviceName": device.unwrap_or(""),
        "methodName": method,
        "requestId": id,
        "params": params,
    })
}

/// The scope an attribute update's templates render against: `${deviceName}`,
/// `${attributeKey}` and `${attributeValue}`.
pub fn attribute_scope(device: &str, key: &str, value: &Json) -> Json {
    json!({ "deviceName": device, "attributeKey": key, "attributeValue": value })
}
