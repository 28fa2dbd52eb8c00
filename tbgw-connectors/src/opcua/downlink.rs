//! Downlink: attribute updates write nodes, RPCs call methods, the reserved `get` / `set` RPCs
//! read and write any node, and connector RPCs (`opcua_<method>`, no device) run on every
//! device that has the method.
//!
//! Values are cast to the node's (or the method argument's) OPC-UA type before they are sent:
//! the type comes from the node's current value (writes) or from the method's
//! `InputArguments` property (calls), so `{"params": 5}` reaches an `Int16` node as an `Int16`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use opcua::client::Session;
use opcua::types::{
    Argument, AttributeId, CallMethodRequest, DataValue, NodeId, ReadValueId, StatusCode,
    TimestampsToReturn, Variant, VariantScalarTypeId, WriteValue,
};
use serde_json::{json, Value as Json};
use tbgw::downlink::{Downlink, RpcError};
use tbgw::stats::ConnectorCounters;

use super::browse::Browser;
use super::connector::{resolve_one, Device, Mapping};
use super::nodes::{self, NodeRef, Segment};
use super::uplink::render;

/// Handles one downlink request; the returned future answers its responder.
pub(crate) fn handle(
    dl: Downlink,
    session: Arc<Session>,
    devices: Vec<Device>,
    mappings: Arc<Vec<Mapping>>,
    browse_chunk: usize,
    stats: ConnectorCounters,
) -> BoxFuture<'static, ()> {
    async move {
        let ctx = Ctx {
            session,
            mappings,
            browse_chunk,
        };
        match dl {
            Downlink::AttributeUpdate(u) => {
                for dev in devices.iter().filter(|d| &*d.name == u.device.as_str()) {
                    let m = &ctx.mappings[dev.mapping];
                    for (key, value) in &u.values {
                        for (_, node) in m.updates.iter().filter(|(k, _)| k == key) {
                            if let Err(e) = ctx.write(&dev.node, node, value).await {
                                stats.add_errors(1);
                                tracing::warn!(device = %dev.name, key = %key, error = %rpc_text(&e), "Attribute update could not be written.");
                            }
                        }
                    }
                }
            }
            Downlink::Rpc(rpc) => {
                // A device RPC's body is the Python gateway's: `{"result": {"result": v}}`
                // for a method, `{"result": {"value": v}}` for reserved get/set.
                let (result, verbatim) = match &rpc.device {
                    Some(name) => {
                        let r = match devices.iter().find(|d| &*d.name == name.as_str()) {
                            Some(dev) => ctx.device_rpc(dev, &rpc.method, &rpc.params).await,
                            None => Err(RpcError::Unreachable(format!(
                                "device {name} is not present on the OPC-UA server"
                            ))),
                        };
                        (r, true)
                    }
                    None => (
                        ctx.connector_rpc(&devices, &rpc.method, &rpc.params).await,
                        false,
                    ),
                };
                match result {
                    Ok(v) if verbatim => rpc.responder.verbatim(v),
                    Ok(v) => rpc.responder.ok(v),
                    Err(e) => {
                        stats.add_errors(1);
                        rpc.responder.err(e);
                    }
                }
            }
            _ => {}
        }
    }
    .boxed()
}

fn rpc_text(e: &RpcError) -> String {
    e.to_json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

struct Ctx {
    session: Arc<Session>,
    mappings: Arc<Vec<Mapping>>,
    browse_chunk: usize,
}

fn unreachable(e: impl std::fmt::Display) -> RpcError {
    RpcError::Unreachable(format!("OPC-UA request failed: {e}"))
}

impl Ctx {
    async fn resolve(&self, device: &NodeId, r: &NodeRef) -> Result<NodeId, RpcError> {
        let mut browser = Browser::new(&self.session, self.browse_chunk);
        resolve_one(&mut browser, device, r)
            .await
            .ok_or_else(|| RpcError::NotFound(format!("node {r} not found")))
    }

    async fn read(&self, node: &NodeId) -> Result<DataValue, RpcError> {
        self.session
            .read(
                &[ReadValueId {
                    node_id: node.clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                }],
                TimestampsToReturn::Both,
                0.0,
            )
            .await
            .map_err(unreachable)?
            .into_iter()
            .next()
            .ok_or_else(|| RpcError::Device("empty read response".into()))
    }

    /// Writes `value` to the node, cast to the type of the node's current value; returns the
    /// value written.
    async fn write(&self, device: &NodeId, r: &NodeRef, value: &Json) -> Result<Json, RpcError> {
        let node = self.resolve(device, r).await?;
        let current = self.read(&node).await?;
        let target = current.value.as_ref().and_then(|v| v.scalar_type_id());
        let variant = json_to_variant(value, target)?;
        let status = self
            .session
            .write(&[WriteValue {
                node_id: node.clone(),
                attribute_id: AttributeId::Value as u32,
                index_range: Default::default(),
                value: DataValue {
                    value: Some(variant.clone()),
                    ..Default::default()
                },
            }])
            .await
            .map_err(unreachable)?
            .into_iter()
            .next()
            .unwrap_or(StatusCode::BadUnexpectedError);
        if status.is_bad() {
            return Err(RpcError::Device(format!(
                "write to {node} failed: {status}"
            )));
        }
        Ok(render(&variant).to_json())
    }

    async fn get(&self, device: &NodeId, params: &Json) -> Result<Json, RpcError> {
        let text = param_text(params)?;
        let r = nodes::parse_node_ref(text.trim()).map_err(RpcError::BadRequest)?;
        let node = self.resolve(device, &r).await?;
        let dv = self.read(&node).await?;
        if let Some(s) = dv.status.filter(|s| s.is_bad()) {
            return Err(RpcError::Device(format!("read of {node} failed: {s}")));
        }
        Ok(dv
            .value
            .as_ref()
            .map(|v| render(v).to_json())
            .unwrap_or(Json::Null))
    }

    async fn set(&self, device: &NodeId, params: &Json) -> Result<Json, RpcError> {
        let (node, value) = match params {
            Json::Object(m) => (
                m.get("node")
                    .or_else(|| m.get("path"))
                    .and_then(Json::as_str)
                    .ok_or_else(|| RpcError::BadRequest("params need `node` and `value`".into()))?
                    .to_string(),
                m.get("value").cloned().unwrap_or(Json::Null),
            ),
            _ => {
                let (n, v) = split_set(param_text(params)?)?;
                (n.to_string(), parse_scalar(v))
            }
        };
        let r = nodes::parse_node_ref(&node).map_err(RpcError::BadRequest)?;
        self.write(device, &r, &value).await
    }

    async fn device_rpc(
        &self,
        dev: &Device,
        method: &str,
        params: &Json,
    ) -> Result<Json, RpcError> {
        match method {
            "get" => return Ok(json!({"result": {"value": self.get(&dev.node, params).await?}})),
            "set" => return Ok(json!({"result": {"value": self.set(&dev.node, params).await?}})),
            _ => {}
        }
        let out = self.call_device_method(dev, method, params).await?;
        Ok(json!({"result": {"result": out}}))
    }

    /// Calls a device's method: its output (`null`, the value, or an array of several).
    async fn call_device_method(
        &self,
        dev: &Device,
        method: &str,
        params: &Json,
    ) -> Result<Json, RpcError> {
        let m = &self.mappings[dev.mapping];
        let configured = m.rpc.iter().find(|r| r.method == method);
        let args: Vec<Json> = match params {
            Json::Array(a) => a.clone(),
            Json::Object(o) if o.contains_key("arguments") => match &o["arguments"] {
                Json::Array(a) => a.clone(),
                other => vec![other.clone()],
            },
            Json::Null => configured
                .map(|c| c.arguments.iter().map(|a| a.value.clone()).collect())
                .unwrap_or_default(),
            Json::Object(o) if o.is_empty() => configured
                .map(|c| c.arguments.iter().map(|a| a.value.clone()).collect())
                .unwrap_or_default(),
            Json::String(s) if s.is_empty() => configured
                .map(|c| c.arguments.iter().map(|a| a.value.clone()).collect())
                .unwrap_or_default(),
            other => vec![other.clone()],
        };
        let hints: Vec<String> = configured
            .map(|c| c.arguments.iter().map(|a| a.kind.clone()).collect())
            .unwrap_or_default();
        self.call(&dev.node, method, &args, &hints).await
    }

    async fn call(
        &self,
        object: &NodeId,
        method: &str,
        args: &[Json],
        hints: &[String],
    ) -> Result<Json, RpcError> {
        let method_ref =
            nodes::parse_node_ref(method).unwrap_or(NodeRef::Relative(vec![Segment {
                ns: None,
                name: method.to_string(),
            }]));
        let method_node = self
            .resolve(object, &method_ref)
            .await
            .map_err(|_| RpcError::NotFound(format!("method {method} not found on {object}")))?;
        // The method's declared argument types, when it publishes them.
        let mut browser = Browser::new(&self.session, self.browse_chunk);
        let declared: Vec<Option<VariantScalarTypeId>> = match browser
            .resolve(&[(
                method_node.clone(),
                vec![Segment {
                    ns: Some(0),
                    name: "InputArguments".into(),
                }],
            )])
            .await
            .ok()
            .and_then(|mut v| v.pop().flatten())
        {
            Some(n) => match self.read(&n).await?.value {
                Some(Variant::Array(a)) => a
                    .values
                    .iter()
                    .map(|v| match v {
                        Variant::ExtensionObject(o) => o
                            .inner_as::<Argument>()
                            .and_then(|a| VariantScalarTypeId::try_from(&a.data_type).ok()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        let mut input = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let t = declared
                .get(i)
                .copied()
                .flatten()
                .or_else(|| hints.get(i).and_then(|h| hint_type(h)));
            input.push(json_to_variant(a, t)?);
        }
        let result = self
            .session
            .call_one(CallMethodRequest {
                object_id: object.clone(),
                method_id: method_node,
                input_arguments: Some(input),
            })
            .await
            .map_err(unreachable)?;
        if result.status_code.is_bad() {
            return Err(RpcError::Device(format!(
                "method {method} failed: {}",
                result.status_code
            )));
        }
        let out: Vec<Json> = result
            .output_arguments
            .unwrap_or_default()
            .iter()
            .map(|v| render(v).to_json())
            .collect();
        let mut out = out;
        Ok(match out.len() {
            0 => Json::Null,
            1 => out.remove(0),
            _ => Json::Array(out),
        })
    }

    async fn connector_rpc(
        &self,
        devices: &[Device],
        method: &str,
        params: &Json,
    ) -> Result<Json, RpcError> {
        let root: NodeId = opcua::types::ObjectId::RootFolder.into();
        match method {
            "get" => return Ok(json!({"result": self.get(&root, params).await?})),
            "set" => return Ok(json!({"success": true, "value": self.set(&root, params).await?})),
            _ => {}
        }
        let mut out = serde_json::Map::new();
        for dev in devices {
            let m = &self.mappings[dev.mapping];
            if !m.rpc.iter().any(|r| r.method == method) {
                continue;
            }
            let r = self.call_device_method(dev, method, params).await;
            out.insert(
                dev.name.to_string(),
                match r {
                    Ok(v) => json!({ "result": v }),
                    Err(e) => e.to_json(),
                },
            );
        }
        if out.is_empty() {
            return Err(RpcError::NotFound(format!(
                "no device of this connector has the method {method}"
            )));
        }
        Ok(json!({"result": out}))
    }
}

fn param_text(params: &Json) -> Result<&str, RpcError> {
    params
        .as_str()
        .ok_or_else(|| RpcError::BadRequest("params must be a string".into()))
}

/// Splits reserved `set` params into node and value: `<node>; <value>`, `<node>;=<value>`,
/// `<node>;value=<value>`, `<node> <value>` or `<node>=<value>` (the last `=` after the node).
pub(crate) fn split_set(text: &str) -> Result<(&str, &str), RpcError> {
    let t = text.trim().trim_end_matches(';');
    for sep in [";value=", "; ", ";="] {
        if let Some(i) = t.rfind(sep) {
            return Ok((t[..i].trim(), t[i + sep.len()..].trim()));
        }
    }
    if let Some(i) = t.rfind(' ') {
        return Ok((t[..i].trim(), t[i + 1..].trim()));
    }
    if let Some(i) = t.rfind('=') {
        let (node, value) = (&t[..i], &t[i + 1..]);
        if nodes::parse_node_ref(node).is_ok() && !node.is_empty() {
            return Ok((node, value));
        }
    }
    Err(RpcError::BadRequest(format!(
        "set params {text:?} have no value; expected `<node>; <value>`"
    )))
}

/// A value from RPC text: JSON when it parses, the text otherwise.
fn parse_scalar(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

fn hint_type(h: &str) -> Option<VariantScalarTypeId> {
    Some(match h.to_ascii_lowercase().as_str() {
        "integer" | "int" | "long" => VariantScalarTypeId::Int64,
        "float" | "double" => VariantScalarTypeId::Double,
        "string" => VariantScalarTypeId::String,
        "boolean" | "bool" => VariantScalarTypeId::Boolean,
        _ => return None,
    })
}

/// Converts JSON to a variant of `target` type (or the natural type when unknown).
pub(crate) fn json_to_variant(
    j: &Json,
    target: Option<VariantScalarTypeId>,
) -> Result<Variant, RpcError> {
    let base = match j {
        Json::Bool(b) => Variant::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Variant::Int64(i),
            None => match n.as_u64() {
                Some(u) => Variant::UInt64(u),
                None => Variant::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        Json::String(s) => Variant::from(s.as_str()),
        Json::Null => Variant::Empty,
        other => Variant::from(other.to_string()),
    };
    let Some(t) = target else { return Ok(base) };
    // Booleans from text: Variant's own cast only knows "true"/"false" and 0/1.
    if t == VariantScalarTypeId::Boolean {
        if let Json::String(s) = j {
            match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => return Ok(Variant::Boolean(true)),
                "false" | "no" | "off" | "0" => return Ok(Variant::Boolean(false)),
                _ => {}
            }
        }
    }
    let v = base.cast(t);
    if matches!(v, Variant::Empty) && !matches!(base, Variant::Empty) {
        return Err(RpcError::BadRequest(format!(
            "value {j} cannot be converted to {t}"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_params_split_on_upstream_delimiters() {
        assert_eq!(split_set("ns=2;i=13; 42").unwrap(), ("ns=2;i=13", "42"));
        assert_eq!(split_set("ns=2;s=a.b;=x").unwrap(), ("ns=2;s=a.b", "x"));
        assert_eq!(
            split_set(r"Root\.Objects\.D\.Relay true").unwrap(),
            (r"Root\.Objects\.D\.Relay", "true")
        );
        assert_eq!(split_set("Relay=1").unwrap(), ("Relay", "1"));
        assert!(split_set("ns=2;i=13").is_err());
    }

    #[test]
    fn json_is_cast_to_the_node_type() {
        assert_eq!(
            json_to_variant(&json!(5), Some(VariantScalarTypeId::Int16)).unwrap(),
            Variant::Int16(5)
        );
        assert_eq!(
            json_to_variant(&json!("on"), Some(VariantScalarTypeId::Boolean)).unwrap(),
            Variant::Boolean(true)
        );
        assert_eq!(
            json_to_variant(&json!("2.5"), Some(VariantScalarTypeId::Double)).unwrap(),
            Variant::Double(2.5)
        );
        assert!(json_to_variant(&json!("abc"), Some(VariantScalarTypeId::Int32)).is_err());
    }
}
