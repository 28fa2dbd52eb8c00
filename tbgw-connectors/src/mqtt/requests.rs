//! `requestsMapping`: requests devices publish (connect, disconnect, attribute requests) and
//! what ThingsBoard sends down (attribute updates, server-side RPC), compiled once from the
//! configuration.
//!
//! Rendering follows upstream's call sites: in topics every placeholder is plain text; in
//! payloads the *names* (`${deviceName}`, `${methodName}`, `${requestId}`, `${attributeKey}`)
//! are plain text and the *values* (`${params}`, `${params.<path>}`, `${attributeValue}`) are
//! JSON (strings quoted). One exception, also upstream's: attribute-update payloads carry the
//! value as text (strings without quotes, `true`/`false`, objects as compact JSON), so
//! `{"${attributeKey}":"${attributeValue}"}` sends `{"fw":"2.0"}`.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use fancy_regex::Regex;
use serde_json::{Map, Value as Json};
use tbgw::config::ConfigError;
use tbgw::expr::{Encoding, Template};

use super::config::{
    AttributeRequestConfig, AttributeUpdateConfig, DeviceRequestConfig, MqttConnectorConfig,
    RpcConfig,
};
use tbgw::convert::downlink::attribute_scope;
use tbgw::convert::{topic_capture, DeviceNameKeys, NameSource};

/// Upstream's `RPC_DEFAULT_TIMEOUT`: the reply timeout of a reserved `get` without one.
pub(super) const RESERVED_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// A connect or disconnect request handler.
#[derive(Debug)]
pub(super) struct DeviceRequest {
    pub filter: String,
    pub qos: u8,
    name: NameSource,
    profile: NameSource,
}

impl DeviceRequest {
    /// The device name and profile announced by a message, or None when the name expression
    /// does not match.
    pub fn device(&self, topic: &str, content: &Json, payload: &[u8]) -> Option<(String, String)> {
        let name = self.name.resolve_request(topic, content, payload)?;
        let profile = self
            .profile
            .resolve_request(topic, content, payload)
            .unwrap_or_else(|| "default".into());
        Some((name, profile))
    }
}

#[derive(Debug)]
enum AttrNames {
    /// Each placeholder of the template names one attribute.
    Placeholders(Vec<Template>),
    /// One fixed name.
    Constant(String),
    /// A regex over the topic.
    Topic(Regex),
}

#[derive(Debug)]
enum Scope {
    Shared,
    Client,
    /// A template over the message that yields `client` or anything else (shared).
    Message(Template),
}

/// What a device asked for with an attribute request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct AskedAttributes {
    pub device: String,
    pub keys: Vec<String>,
    pub client: bool,
}

/// An attribute request handler.
#[derive(Debug)]
pub(super) struct AttributeRequest {
    pub filter: String,
    pub qos: u8,
    name: NameSource,
    names: AttrNames,
    scope: Scope,
    topic: Template,
    value: Template,
    pub retain: bool,
    pub out_qos: u8,
}

impl AttributeRequest {
    /// Device, keys and scope asked for by a message.
    pub fn asked(
        &self,
        topic: &str,
        content: &Json,
        payload: &[u8],
    ) -> Result<AskedAttributes, String> {
        let device = self
            .name
            .resolve_request(topic, content, payload)
            .ok_or_else(|| "the device name expression has no match".to_string())?;
        let mut keys = Vec::new();
        match &self.names {
            AttrNames::Constant(k) => keys.push(k.clone()),
            AttrNames::Topic(re) => keys.extend(topic_capture(re, topic)),
            AttrNames::Placeholders(ts) => {
                for t in ts {
                    match t.resolve(content).as_deref() {
                        Some(Json::String(s)) => keys.push(s.clone()),
                        Some(Json::Array(items)) => keys.extend(items.iter().map(text)),
                        Some(Json::Null) | None => {}
                        Some(other) => keys.push(text(other)),
                    }
                }
            }
        }
        keys.retain(|k| !k.is_empty());
        if keys.is_empty() {
            return Err("the attribute name expression has no match".into());
        }
        let client = match &self.scope {
            Scope::Shared => false,
            Scope::Client => true,
            Scope::Message(t) => t.render(content).as_deref() == Some("client"),
        };
        Ok(AskedAttributes {
            device,
            keys,
            client,
        })
    }

    /// The topic and payload of the answer. `value` is what ThingsBoard sent: the value of the
    /// one key, or an object of every key's value. Several keys are answered with that object
    /// as JSON (upstream ignores `valueExpression` then too).
    pub fn answer(
        &self,
        asked: &AskedAttributes,
        value: &Json,
    ) -> Result<(String, String), String> {
        let key = asked.keys.join(",");
        let scope = attribute_scope(&asked.device, &key, value);
        let topic = render_topic(&self.topic, &scope, "topicExpression")?;
        let payload = if asked.keys.len() > 1 {
            value.to_string()
        } else {
            render_payload(&self.value, &scope, "valueExpression")?
        };
        Ok((topic, payload))
    }
}

/// An attribute update handler.
#[derive(Debug)]
pub(super) struct AttributeUpdate {
    device: Regex,
    attribute: Regex,
    topic: Template,
    value: Template,
    pub retain: bool,
    pub qos: u8,
}

impl AttributeUpdate {
    /// True when the device name matches `deviceNameFilter`.
    pub fn for_device(&self, device: &str) -> bool {
        match_at_start(&self.device, device)
    }

    /// `(topic, payload)` for every attribute matching `attributeFilter`; a rendering failure
    /// is returned as an error for that attribute.
    pub fn publishes(
        &self,
        device: &str,
        values: &Map<String, Json>,
    ) -> Vec<Result<(String, String), String>> {
        let mut out = Vec::new();
        for (k, v) in values {
            if !match_at_start(&self.attribute, k) {
                continue;
            }
            let scope = attribute_scope(device, k, v);
            let rendered = render_topic(&self.topic, &scope, "topicExpression").and_then(|t| {
                // Upstream formats the value as text for every placeholder.
                let payload = render_text(&self.value, &scope, "valueExpression")?;
                Ok((t, payload))
            });
            out.push(rendered);
        }
        out
    }
}

/// How one RPC is published and awaited.
#[derive(Debug)]
pub(super) struct RpcSpec {
    request_topic: Template,
    response_topic: Option<Template>,
    response_qos: u8,
    timeout: Option<Duration>,
    value: Option<Template>,
    retain: bool,
    qos: u8,
}

/// An RPC ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RenderedRpc {
    pub request_topic: String,
    pub payload: String,
    /// Two-way: the reply topic, its subscription QoS and how long to wait.
    pub response: Option<(String, u8, Duration)>,
    pub retain: bool,
    pub qos: u8,
}

impl RpcSpec {
    /// Renders the request for `scope` (`deviceName`, `methodName`, `requestId`, `params`).
    pub fn render(&self, scope: &Json) -> Result<RenderedRpc, String> {
        let request_topic = render_topic(&self.request_topic, scope, "requestTopicExpression")?;
        let payload = match &self.value {
            Some(v) => render_payload(v, scope, "valueExpression")?,
            None => String::new(),
        };
        let response = match (&self.response_topic, self.timeout) {
            (Some(t), Some(timeout)) => Some((
                render_topic(t, scope, "responseTopicExpression")?,
                self.response_qos,
                timeout,
            )),
            _ => None,
        };
        Ok(RenderedRpc {
            request_topic,
            payload,
            response,
            retain: self.retain,
            qos: self.qos,
        })
    }

    /// An ad-hoc RPC from its parameters: reserved `get`/`set` (`key=value;` pairs) and
    /// connector RPCs (`mqtt_<name>`, an object or the same pairs). `value` becomes the
    /// payload; a `get` with a response topic and no timeout waits 5 s.
    pub fn from_params(params: &Json) -> Result<RpcSpec, String> {
        let mut fields: Map<String, Json> =
            match params {
                Json::String(s) => s
                    .split(';')
                    .filter_map(|p| p.split_once('='))
                    .filter(|(k, v)| !k.trim().is_empty() && !v.is_empty())
                    .map(|(k, v)| (k.trim().to_string(), Json::String(v.to_string())))
                    .collect(),
                Json::Object(m) => m.clone(),
                _ => return Err(
                    "params must be `key=value;` pairs or an object with requestTopicExpression"
                        .into(),
                ),
            };
        let get = |f: &Map<String, Json>, k: &str| -> Option<String> {
            f.get(k).map(|v| match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let parse = |k: &str, s: &str| Template::parse(s).map_err(|e| format!("params `{k}`: {e}"));
        let request_topic = get(&fields, "requestTopicExpression")
            .ok_or_else(|| "params lack requestTopicExpression".to_string())?;
        let value = match fields.remove("value") {
            Some(Json::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
            None => get(&fields, "valueExpression"),
        };
        let response_topic = get(&fields, "responseTopicExpression");
        let number = |k: &str| -> Result<Option<f64>, String> {
            match fields.get(k) {
                None => Ok(None),
                Some(Json::Number(n)) => Ok(n.as_f64()),
                Some(Json::String(s)) => s
                    .trim()
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("params `{k}`: `{s}` is not a number")),
                Some(other) => Err(format!("params `{k}`: `{other}` is not a number")),
            }
        };
        let timeout = match number("responseTimeout")? {
            Some(ms) => Some(millis(ms).ok_or(
                "params `responseTimeout` must be a positive number of ms, at most 86400000",
            )?),
            None if response_topic.is_some() => Some(RESERVED_RPC_TIMEOUT),
            None => None,
        };
        let qos = |k: &str, default: u8| -> Result<u8, String> {
            match number(k)? {
                None => Ok(default),
                Some(q) if (0.0..=2.0).contains(&q) => Ok(q as u8),
                Some(q) => Err(format!("params `{k}`: {q} is not 0, 1 or 2")),
            }
        };
        let retain = matches!(
            get(&fields, "retain").as_deref(),
            Some("true" | "True" | "1")
        );
        Ok(RpcSpec {
            request_topic: parse("requestTopicExpression", &request_topic)?,
            response_topic: response_topic
                .map(|t| parse("responseTopicExpression", &t))
                .transpose()?,
            response_qos: qos("responseTopicQoS", 1)?,
            timeout,
            value: value.map(|v| parse("valueExpression", &v)).transpose()?,
            retain,
            qos: qos("qos", 0)?,
        })
    }
}

/// The longest `responseTimeout` accepted (one day, in ms): a deadline is `now + timeout`.
const MAX_TIMEOUT_MS: f64 = 86_400_000.0;

/// A positive timeout of at most [`MAX_TIMEOUT_MS`]; `None` for anything else.
fn millis(ms: f64) -> Option<Duration> {
    (ms > 0.0 && ms <= MAX_TIMEOUT_MS)
        .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .flatten()
}

/// One `serverSideRpc[]` entry.
#[derive(Debug)]
pub(super) struct RpcRoute {
    device: Regex,
    method: Regex,
    pub spec: RpcSpec,
}

/// Everything `requestsMapping` configures.
#[derive(Debug, Default)]
pub(super) struct Requests {
    pub connect: Vec<DeviceRequest>,
    pub disconnect: Vec<DeviceRequest>,
    pub attribute: Vec<AttributeRequest>,
    pub updates: Vec<AttributeUpdate>,
    pub rpc: Vec<RpcRoute>,
}

impl Requests {
    /// Compiles `requestsMapping` and the old top-level sections.
    pub fn build(
        file: &Path,
        cfg: &MqttConnectorConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let rm = &cfg.requests_mapping;
        let mut r = Requests::default();
        let sections = [
            ("requestsMapping.", rm),
            (
                "",
                &super::config::RequestsMappingConfig {
                    connect_requests: cfg.connect_requests.clone(),
                    disconnect_requests: cfg.disconnect_requests.clone(),
                    attribute_requests: cfg.attribute_requests.clone(),
                    attribute_updates: cfg.attribute_updates.clone(),
                    server_side_rpc: cfg.server_side_rpc.clone(),
                },
            ),
        ];
        for (base, s) in sections {
            for (i, c) in s.connect_requests.iter().enumerate() {
                r.connect.push(device_request(
                    file,
                    &format!("{base}connectRequests[{i}]"),
                    c,
                )?);
            }
            for (i, c) in s.disconnect_requests.iter().enumerate() {
                r.disconnect.push(device_request(
                    file,
                    &format!("{base}disconnectRequests[{i}]"),
                    c,
                )?);
            }
            for (i, c) in s.attribute_requests.iter().enumerate() {
                r.attribute.push(attribute_request(
                    file,
                    &format!("{base}attributeRequests[{i}]"),
                    c,
                )?);
            }
            for (i, c) in s.attribute_updates.iter().enumerate() {
                r.updates.push(attribute_update(
                    file,
                    &format!("{base}attributeUpdates[{i}]"),
                    c,
                )?);
            }
            for (i, c) in s.server_side_rpc.iter().enumerate() {
                r.rpc.push(rpc_route(
                    file,
                    &format!("{base}serverSideRpc[{i}]"),
                    c,
                    ignored,
                )?);
            }
        }
        Ok(r)
    }

    /// The topic filters the request handlers subscribe to.
    pub fn filters(&self) -> impl Iterator<Item = (&str, u8)> + '_ {
        self.connect
            .iter()
            .chain(&self.disconnect)
            .map(|d| (d.filter.as_str(), d.qos))
            .chain(self.attribute.iter().map(|a| (a.filter.as_str(), a.qos)))
    }

    /// The first `serverSideRpc` entry whose filters are found in the device and method names.
    pub fn route_rpc(&self, device: &str, method: &str) -> Option<&RpcSpec> {
        self.rpc
            .iter()
            .find(|r| {
                r.device.is_match(device).unwrap_or(false)
                    && r.method.is_match(method).unwrap_or(false)
            })
            .map(|r| &r.spec)
    }
}

fn check_filter(file: &Path, prefix: &str, filter: &str, qos: u8) -> Result<(), ConfigError> {
    if filter.is_empty() {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.topicFilter"),
            "must not be empty",
        ));
    }
    if qos > 2 {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.subscriptionQos"),
            "must be 0, 1 or 2",
        ));
    }
    Ok(())
}

fn check_qos(file: &Path, key: String, qos: u8) -> Result<(), ConfigError> {
    if qos > 2 {
        return Err(ConfigError::new(file, key, "must be 0, 1 or 2"));
    }
    Ok(())
}

/// Device name and profile sources from `deviceInfo` or the legacy keys.
fn device_info(
    file: &Path,
    prefix: &str,
    keys: DeviceNameKeys<'_>,
) -> Result<(NameSource, NameSource), ConfigError> {
    keys.build(
        file,
        prefix,
        "request",
        false,
        &super::DIALECT,
        &mut Vec::new(),
    )
}

fn device_request(
    file: &Path,
    prefix: &str,
    c: &DeviceRequestConfig,
) -> Result<DeviceRequest, ConfigError> {
    check_filter(file, prefix, &c.topic_filter, c.subscription_qos)?;
    let (name, profile) = device_info(
        file,
        prefix,
        DeviceNameKeys {
            device_info: c.device_info.as_ref(),
            name_json: c.device_name_json_expression.as_deref(),
            name_topic: c.device_name_topic_expression.as_deref(),
            profile_json: c.device_type_json_expression.as_deref(),
            profile_topic: c.device_type_topic_expression.as_deref(),
            ..DeviceNameKeys::default()
        },
    )?;
    Ok(DeviceRequest {
        filter: c.topic_filter.clone(),
        qos: c.subscription_qos,
        name,
        profile,
    })
}

fn template(file: &Path, key: String, src: &str) -> Result<Template, ConfigError> {
    Template::parse(src).map_err(|e| ConfigError::new(file, key, e.to_string()))
}

fn regex(file: &Path, key: String, src: &str) -> Result<Regex, ConfigError> {
    Regex::new(src)
        .map_err(|e| ConfigError::new(file, key, format!("invalid regular expression: {e}")))
}

fn attribute_request(
    file: &Path,
    prefix: &str,
    c: &AttributeRequestConfig,
) -> Result<AttributeRequest, ConfigError> {
    check_filter(file, prefix, &c.topic_filter, c.subscription_qos)?;
    check_qos(file, format!("{prefix}.qos"), c.qos)?;
    let (name, _) = device_info(
        file,
        prefix,
        DeviceNameKeys {
            device_info: c.device_info.as_ref(),
            name_json: c.device_name_json_expression.as_deref(),
            name_topic: c.device_name_topic_expression.as_deref(),
            ..DeviceNameKeys::default()
        },
    )?;
    let (source, expr, key) = match (
        &c.attribute_name_expression,
        &c.attribute_name_json_expression,
        &c.attribute_name_topic_expression,
    ) {
        (Some(e), _, _) => (
            c.attribute_name_expression_source.as_str(),
            e,
            "attributeNameExpression",
        ),
        (None, Some(e), _) => ("message", e, "attributeNameJsonExpression"),
        (None, None, Some(e)) => ("topic", e, "attributeNameTopicExpression"),
        (None, None, None) => {
            return Err(ConfigError::new(
                file,
                format!("{prefix}.attributeNameExpression"),
                "missing; the request needs attribute names",
            ))
        }
    };
    let key = format!("{prefix}.{key}");
    let names = match source {
        "topic" => AttrNames::Topic(regex(file, key, expr)?),
        "message" | "constant" if expr.contains("${") => {
            let t = template(file, key.clone(), expr)?;
            let single = t
                .placeholders()
                .map(|p| template(file, key.clone(), &format!("${{{p}}}")))
                .collect::<Result<Vec<_>, _>>()?;
            AttrNames::Placeholders(single)
        }
        "message" | "constant" => AttrNames::Constant(expr.clone()),
        other => {
            return Err(ConfigError::new(
                file,
                format!("{prefix}.attributeNameExpressionSource"),
                format!("unknown source `{other}`; expected message, constant or topic"),
            ))
        }
    };
    let scope = match c.scope.as_deref() {
        None | Some("shared") => Scope::Shared,
        Some("client") => Scope::Client,
        Some(s) if s.contains("${") => {
            Scope::Message(template(file, format!("{prefix}.scope"), s)?)
        }
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{prefix}.scope"),
                format!("unknown scope `{other}`; expected shared, client or a ${{...}} template"),
            ))
        }
    };
    Ok(AttributeRequest {
        filter: c.topic_filter.clone(),
        qos: c.subscription_qos,
        name,
        names,
        scope,
        topic: template(
            file,
            format!("{prefix}.topicExpression"),
            &c.topic_expression,
        )?,
        value: template(
            file,
            format!("{prefix}.valueExpression"),
            &c.value_expression,
        )?,
        retain: c.retain,
        out_qos: c.qos,
    })
}

fn attribute_update(
    file: &Path,
    prefix: &str,
    c: &AttributeUpdateConfig,
) -> Result<AttributeUpdate, ConfigError> {
    check_qos(file, format!("{prefix}.qos"), c.qos)?;
    Ok(AttributeUpdate {
        device: regex(
            file,
            format!("{prefix}.deviceNameFilter"),
            &c.device_name_filter,
        )?,
        attribute: regex(
            file,
            format!("{prefix}.attributeFilter"),
            &c.attribute_filter,
        )?,
        topic: template(
            file,
            format!("{prefix}.topicExpression"),
            &c.topic_expression,
        )?,
        value: template(
            file,
            format!("{prefix}.valueExpression"),
            &c.value_expression,
        )?,
        retain: c.retain,
        qos: c.qos,
    })
}

fn rpc_route(
    file: &Path,
    prefix: &str,
    c: &RpcConfig,
    ignored: &mut Vec<String>,
) -> Result<RpcRoute, ConfigError> {
    check_qos(file, format!("{prefix}.qos"), c.qos)?;
    check_qos(
        file,
        format!("{prefix}.responseTopicQoS"),
        c.response_topic_qos,
    )?;
    match c.kind.as_deref() {
        None | Some("twoWay" | "oneWay") => {}
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{prefix}.type"),
                format!("unknown RPC type `{other}`; expected twoWay or oneWay"),
            ))
        }
    }
    let timeout = match c.response_timeout {
        Some(ms) => Some(millis(ms).ok_or_else(|| {
            ConfigError::new(
                file,
                format!("{prefix}.responseTimeout"),
                "must be a positive number of milliseconds, at most 86400000",
            )
        })?),
        None => None,
    };
    if c.response_topic_expression.is_some() && timeout.is_none() {
        ignored.push(format!(
            "{prefix}.responseTopicExpression (no responseTimeout: served as a one-way RPC, like upstream)"
        ));
    }
    if c.kind.as_deref() == Some("twoWay") && c.response_topic_expression.is_none() {
        ignored.push(format!(
            "{prefix}.type (twoWay without responseTopicExpression: served as a one-way RPC)"
        ));
    }
    Ok(RpcRoute {
        device: regex(
            file,
            format!("{prefix}.deviceNameFilter"),
            &c.device_name_filter,
        )?,
        method: regex(file, format!("{prefix}.methodFilter"), &c.method_filter)?,
        spec: RpcSpec {
            request_topic: template(
                file,
                format!("{prefix}.requestTopicExpression"),
                &c.request_topic_expression,
            )?,
            response_topic: c
                .response_topic_expression
                .as_ref()
                .map(|t| template(file, format!("{prefix}.responseTopicExpression"), t))
                .transpose()?,
            response_qos: c.response_topic_qos,
            timeout,
            value: Some(template(
                file,
                format!("{prefix}.valueExpression"),
                &c.value_expression,
            )?),
            retain: c.retain,
            qos: c.qos,
        },
    })
}

/// Python's `re.match`: a match that starts at the beginning.
fn match_at_start(re: &Regex, s: &str) -> bool {
    matches!(re.find(s), Ok(Some(m)) if m.start() == 0)
}

/// A JSON value as text: strings without quotes, the rest as compact JSON.
fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lookup<'a>(scope: &'a Json, expr: &str) -> Option<Cow<'a, Json>> {
    let t = Template::parse(&format!("${{{expr}}}")).ok()?;
    t.resolve(scope).map(|v| Cow::Owned(v.into_owned()))
}

fn is_value(expr: &str) -> bool {
    expr == "attributeValue"
        || expr == "params"
        || expr.starts_with("params.")
        || expr.starts_with("params[")
}

fn missing(t: &Template, key: &str) -> String {
    format!(
        "{key} `{}`: a placeholder has no value in this request",
        t.source()
    )
}

fn render_topic(t: &Template, scope: &Json, key: &str) -> Result<String, String> {
    t.render_scope(scope, Encoding::Text)
        .ok_or_else(|| missing(t, key))
}

fn render_text(t: &Template, scope: &Json, key: &str) -> Result<String, String> {
    t.render_scope(scope, Encoding::Text)
        .ok_or_else(|| missing(t, key))
}

fn render_payload(t: &Template, scope: &Json, key: &str) -> Result<String, String> {
    t.render_with(|expr| {
        let v = lookup(scope, expr)?;
        Some(if is_value(expr) {
            v.to_string()
        } else {
            text(&v)
        })
    })
    .ok_or_else(|| missing(t, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rpc_payloads_encode_values_as_json_and_names_as_text() {
        let spec = RpcSpec::from_params(&json!({
            "requestTopicExpression": "dev/${deviceName}/${methodName}/${requestId}/${params.mode}",
            "responseTopicExpression": "dev/${deviceName}/reply/${requestId}",
            "responseTimeout": 2000,
            "valueExpression": "{\"to\": \"${deviceName}\", \"v\": ${params.mode}, \"all\": ${params}}"
        }))
        .unwrap();
        let scope = json!({"deviceName": "d1", "methodName": "set", "requestId": 7, "params": {"mode": "eco"}});
        let r = spec.render(&scope).unwrap();
        assert_eq!(r.request_topic, "dev/d1/set/7/eco");
        assert_eq!(
            r.payload,
            r#"{"to": "d1", "v": "eco", "all": {"mode":"eco"}}"#
        );
        assert_eq!(
            r.response,
            Some(("dev/d1/reply/7".into(), 1, Duration::from_secs(2)))
        );
    }

    #[test]
    fn reserved_get_and_set_read_key_value_pairs() {
        let get = RpcSpec::from_params(&json!(
            "requestTopicExpression=q/${deviceName};responseTopicExpression=a/${deviceName};valueExpression=${params};"
        ))
        .unwrap();
        let r = get
            .render(&json!({"deviceName": "d", "methodName": "get", "requestId": 1, "params": "x"}))
            .unwrap();
        assert_eq!(r.request_topic, "q/d");
        assert_eq!(r.response, Some(("a/d".into(), 1, RESERVED_RPC_TIMEOUT)));
        let set = RpcSpec::from_params(&json!("requestTopicExpression=s/${deviceName};value=42;"))
            .unwrap();
        let r = set
            .render(&json!({"deviceName": "d", "methodName": "set", "requestId": 1, "params": ""}))
            .unwrap();
        assert_eq!(
            (r.request_topic.as_str(), r.payload.as_str(), r.response),
            ("s/d", "42", None)
        );
        assert!(RpcSpec::from_params(&json!("value=1;")).is_err());
        assert!(RpcSpec::from_params(&json!(3)).is_err());
    }

    #[test]
    fn a_huge_response_timeout_is_refused_instead_of_panicking() {
        for t in ["1e30", "1e300", "inf", "NaN", "-1", "0"] {
            let e = RpcSpec::from_params(&json!(format!(
                "requestTopicExpression=q/x;responseTopicExpression=a/x;responseTimeout={t};"
            )))
            .expect_err(t);
            assert!(e.contains("responseTimeout"), "{t}: {e}");
        }
        let e = RpcSpec::from_params(&json!({
            "requestTopicExpression": "q/x", "responseTopicExpression": "a/x",
            "responseTimeout": 1e300
        }))
        .expect_err("1e300 ms");
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn attribute_updates_filter_and_render_like_upstream() {
        let u = attribute_update(
            Path::new("mqtt.json"),
            "attributeUpdates[0]",
            &serde_json::from_value(json!({
                "deviceNameFilter": "SN-.*", "attributeFilter": "fw|mode",
                "topicExpression": "sensor/${deviceName}/${attributeKey}",
                "valueExpression": "${attributeValue}"
            }))
            .unwrap(),
        )
        .unwrap();
        assert!(u.for_device("SN-1"));
        assert!(!u.for_device("X-SN-1"));
        let values = json!({"mode": "eco", "other": 1, "fw": {"v": 2}});
        let mut out: Vec<_> = u
            .publishes("SN-1", values.as_object().unwrap())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        out.sort();
        assert_eq!(
            out,
            vec![
                ("sensor/SN-1/fw".to_string(), r#"{"v":2}"#.to_string()),
                ("sensor/SN-1/mode".to_string(), "eco".to_string())
            ]
        );
        // As upstream: the value is text in every payload template, so a quoted placeholder
        // is not quoted twice.
        let quoted = attribute_update(
            Path::new("mqtt.json"),
            "attributeUpdates[0]",
            &serde_json::from_value(json!({
                "deviceNameFilter": ".*", "attributeFilter": ".*",
                "topicExpression": "sensor/${deviceName}/${attributeKey}",
                "valueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"
            }))
            .unwrap(),
        )
        .unwrap();
        let out: Vec<_> = quoted
            .publishes(
                "SN-1",
                json!({"fw": "2.0", "on": true}).as_object().unwrap(),
            )
            .into_iter()
            .map(Result::unwrap)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(out, vec![r#"{"fw":"2.0"}"#, r#"{"on":"true"}"#]);
    }

    #[test]
    fn attribute_requests_take_names_from_every_placeholder() {
        let a = attribute_request(
            Path::new("mqtt.json"),
            "attributeRequests[0]",
            &serde_json::from_value(json!({
                "topicFilter": "req",
                "deviceInfo": {"deviceNameExpressionSource": "message", "deviceNameExpression": "${sn}"},
                "attributeNameExpressionSource": "message",
                "attributeNameExpression": "${a}${b}",
                "scope": "${scope}",
                "topicExpression": "resp/${deviceName}/${attributeKey}",
                "valueExpression": "{\"${attributeKey}\": ${attributeValue}}"
            }))
            .unwrap(),
        )
        .unwrap();
        let asked = a
            .asked(
                "req",
                &json!({"sn": "d", "a": "fw", "scope": "client"}),
                b"",
            )
            .unwrap();
        assert_eq!(
            asked,
            AskedAttributes {
                device: "d".into(),
                keys: vec!["fw".into()],
                client: true
            }
        );
        assert_eq!(
            a.answer(&asked, &json!("1.2")).unwrap(),
            ("resp/d/fw".to_string(), r#"{"fw": "1.2"}"#.to_string())
        );
        assert!(a.asked("req", &json!({"sn": "d"}), b"").is_err());
    }
}
