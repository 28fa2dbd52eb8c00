//! Downlink as outgoing HTTP requests, shared by the Request and REST connectors:
//! `attributeUpdates[]` and `serverSideRpc[]` rules (device and attribute/method filters, a URL
//! and body template, tries and timeouts), the reserved `get`/`set` RPCs, and the RPC reply
//! built from the response.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use fancy_regex::Regex;
use hyper::Method;
use serde_json::{json, Map, Value as Json};
use tbgw::config::ConfigError;
use tbgw::downlink::RpcError;
use tbgw::expr::{Encoding, Template};

/// The scopes downlink templates render against, shared with the other connectors.
pub use tbgw::convert::downlink::rpc_scope;

use super::client::{HttpClient, HttpError, Outbound, Reply};
use super::tls::ClientTls;

/// One outgoing request, compiled from a rule or a reserved RPC.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// The HTTP method.
    pub method: Method,
    /// The URL template; relative URLs are joined to the connector's host.
    pub url: Template,
    /// The body template (no body when absent).
    pub body: Option<Template>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Deadline of one try.
    pub timeout: Duration,
    /// Number of tries (at least 1).
    pub tries: u32,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// Template over the response body for the RPC reply.
    pub response_value: Option<Template>,
    /// Deadline of all tries together.
    pub response_timeout: Option<Duration>,
    /// TLS options.
    pub tls: ClientTls,
    /// Basic authentication.
    pub basic: Option<(String, String)>,
}

/// A filtered downlink rule: device name and attribute key (or RPC method) patterns.
#[derive(Debug)]
pub struct Rule {
    device: Regex,
    name: Regex,
    /// The request it sends.
    pub spec: CallSpec,
}

/// Compiles a filter as a whole-string regular expression.
pub fn filter(file: &Path, key: &str, pattern: &str) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ConfigError::new(file, key, format!("invalid regular expression: {e}")))
}

impl Rule {
    /// A rule from its compiled parts.
    pub fn new(device: Regex, name: Regex, spec: CallSpec) -> Self {
        Rule { device, name, spec }
    }

    /// True when the rule applies to `device` (`None` for a connector RPC: any) and `name`.
    pub fn matches(&self, device: Option<&str>, name: &str) -> bool {
        device.is_none_or(|d| self.device.is_match(d).unwrap_or(false))
            && self.name.is_match(name).unwrap_or(false)
    }
}

/// Seconds (upstream writes floats such as `0.5`) as a duration; non-positive or invalid
/// values fall back to `default`.
pub fn secs(v: Option<f64>, default: Duration) -> Duration {
    match v {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s.min(86_400.0)),
        _ => default,
    }
}

/// Parses an HTTP method name.
pub fn method(file: &Path, key: &str, m: &str) -> Result<Method, ConfigError> {
    Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| ConfigError::new(file, key, format!("invalid HTTP method {m:?}")))
}

/// Parses a template, naming the key on error.
pub fn template(file: &Path, key: &str, t: &str) -> Result<Template, ConfigError> {
    Template::parse(t).map_err(|e| ConfigError::new(file, key, e.to_string()))
}

/// Header pairs from an `httpHeaders` object.
pub fn headers(h: &BTreeMap<String, String>) -> Vec<(String, String)> {
    h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Joins `base` (the connector's `host`) and a relative URL with one `/`; absolute URLs are
/// kept.
pub fn join_url(base: Option<&str>, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        return url.to_string();
    }
    match base {
        Some(b) => format!(
            "{}/{}",
            b.trim_end_matches('/'),
            url.trim_start_matches('/')
        ),
        None => url.to_string(),
    }
}

/// Why a downlink call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// A template placeholder had no value in the request.
    #[error("{0}")]
    Render(String),
    /// The HTTP exchange failed on every try.
    #[error("{0}")]
    Http(HttpError),
}

impl CallError {
    /// The RPC error for this failure: unreachable device, timeout or bad request.
    pub fn to_rpc(&self) -> RpcError {
        match self {
            CallError::Render(t) => RpcError::BadRequest(t.clone()),
            CallError::Http(HttpError::Timeout(_)) => RpcError::Timeout(self.to_string()),
            CallError::Http(e) if e.is_unreachable() => RpcError::Unreachable(self.to_string()),
            CallError::Http(_) => RpcError::Device(self.to_string()),
        }
    }
}

/// Sends a shared-attribute update through every `attributeUpdates` rule that matches the
/// device and a key (the Request and REST connectors): one request per rule and key. Refusals
/// and failures are counted in `errors` and logged; they do not stop the other keys.
pub async fn send_attribute_update(
    client: &HttpClient,
    rules: &[Rule],
    base: Option<&str>,
    update: &tbgw::downlink::AttributeUpdate,
    stats: &tbgw::stats::ConnectorCounters,
    connector: &str,
) {
    let device = &update.device;
    for (key, value) in &update.values {
        for rule in rules.iter().filter(|r| r.matches(Some(device), key)) {
            let scope = tbgw::convert::downlink::attribute_scope(device, key, value);
            match execute(client, &rule.spec, base, &scope).await {
                Ok(r) if r.status.is_success() => {
                    tracing::debug!(connector, device = %device, key = %key, "Attribute update sent.");
                }
                Ok(r) => {
                    stats.add_errors(1);
                    tracing::warn!(connector, device = %device, key = %key, status = r.status.as_u16(), "The attribute update was refused by the server.");
                }
                Err(e) => {
                    stats.add_errors(1);
                    tracing::warn!(connector, device = %device, key = %key, error = %e, "Cannot send an attribute update.");
                }
            }
        }
    }
}

/// Renders `spec` over `scope` and sends it, trying up to `tries` times (on transport errors
/// and 5xx answers) within `responseTimeout` if set.
pub async fn execute(
    client: &HttpClient,
    spec: &CallSpec,
    base: Option<&str>,
    scope: &Json,
) -> Result<Reply, CallError> {
    let url = spec
        .url
        .render_scope(scope, Encoding::Text)
        .ok_or_else(|| {
            CallError::Render(format!(
                "the URL template {:?} has a placeholder without a value",
                spec.url.source()
            ))
        })?;
    let body = match &spec.body {
        Some(t) => Bytes::from(t.render_scope(scope, Encoding::Text).ok_or_else(|| {
            CallError::Render(format!(
                "the value template {:?} has a placeholder without a value",
                t.source()
            ))
        })?),
        None => Bytes::new(),
    };
    let out = Outbound {
        method: spec.method.clone(),
        url: join_url(base, &url),
        headers: spec.headers.clone(),
        body,
        timeout: spec.timeout,
        follow_redirects: spec.follow_redirects,
        tls: spec.tls.clone(),
        basic: spec.basic.clone(),
    };
    let attempts = async {
        let mut last = None;
        for attempt in 0..spec.tries.max(1) {
            match client.send(&out).await {
                Ok(r) if r.status.is_server_error() && attempt + 1 < spec.tries => {
                    tracing::debug!(url = %out.url, status = r.status.as_u16(), "Server error; trying again.");
                    last = Some(Ok(r));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    tracing::debug!(url = %out.url, error = %e, attempt, "HTTP request failed.");
                    last = Some(Err(CallError::Http(e)));
                }
            }
        }
        last.unwrap_or(Err(CallError::Http(HttpError::Timeout(spec.timeout))))
    };
    match spec.response_timeout {
        Some(t) => tokio::time::timeout(t, attempts)
            .await
            .unwrap_or(Err(CallError::Http(HttpError::Timeout(t)))),
        None => attempts.await,
    }
}

/// The response body as JSON, or as a JSON string when it is not JSON.
pub fn body_json(body: &[u8]) -> Json {
    if body.is_empty() {
        return Json::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(body).into_owned()))
}

/// The RPC reply for a response: `{"result": <body or the rendered responseValueExpression>,
/// "code": <status>}`, plus `"error"` when the status is not 2xx.
pub fn rpc_reply(reply: &Reply, response_value: Option<&Template>) -> Json {
    let body = body_json(&reply.body);
    let value = match response_value {
        Some(t) => match t.resolve(&body) {
            Some(v) => v.into_owned(),
            None => body,
        },
        None => body,
    };
    let code = reply.status.as_u16();
    if reply.status.is_success() {
        json!({ "result": value, "code": code })
    } else {
        json!({
            "error": format!("HTTP status {code}"),
            "result": value,
            "code": code,
        })
    }
}

/// A device RPC reply of the Request connector as the Python gateway sends it: a 2xx answer
/// is `{"result": {"value": <body or the rendered responseValueExpression>}}`; any other status
/// the error of [`rpc_reply`] (upstream reports it as a success).
pub fn request_rpc_reply(reply: &Reply, response_value: Option<&Template>) -> Json {
    let r = rpc_reply(reply, response_value);
    if reply.status.is_success() {
        json!({ "result": { "value": r["result"].clone() } })
    } else {
        r
    }
}

/// A device RPC reply of the REST connector as the Python gateway sends it: a 2xx answer is
/// `{"result": <body or the rendered responseValueExpression>}`; any other status the error of
/// [`rpc_reply`].
pub fn rest_rpc_reply(reply: &Reply, response_value: Option<&Template>) -> Json {
    let r = rpc_reply(reply, response_value);
    if reply.status.is_success() {
        json!({ "result": r["result"].clone() })
    } else {
        r
    }
}

/// Parses the params of a reserved `get`/`set` RPC: a `key=value;` string (or an object with
/// the same keys) naming the fields of one `serverSideRpc` entry: `requestUrlExpression`
/// (required), `httpMethod`, `responseTimeout`, `timeout`, `tries`, `httpHeaders` (a JSON
/// object), `valueExpression` and `value` (the body).
///
/// For `get`, `valueExpression` is applied to the response and `value`, when given, is the
/// request body; for `set`, `value` (or `valueExpression`) is the request body.
pub fn reserved(params: &Json, set: bool, tls: &ClientTls) -> Result<CallSpec, RpcError> {
    let mut fields: Map<String, Json> = Map::new();
    match params {
        Json::String(s) => {
            for part in s.split(';') {
                let part = part.trim();
                if part.is_empty() {
                    continue;
                }
                let (k, v) = part.split_once('=').ok_or_else(|| {
                    RpcError::BadRequest(format!("`{part}` is not a key=value pair"))
                })?;
                fields.insert(k.trim().to_string(), Json::String(v.trim().to_string()));
            }
        }
        Json::Object(m) => fields = m.clone(),
        _ => {
            return Err(RpcError::BadRequest(
                "params must be a `key=value;` string or an object".into(),
            ))
        }
    }
    let text = |k: &str| -> Option<String> {
        fields.get(k).map(|v| match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let num = |k: &str| -> Result<Option<f64>, RpcError> {
        text(k)
            .map(|s| {
                s.parse::<f64>()
                    .map_err(|_| RpcError::BadRequest(format!("`{k}` must be a number")))
            })
            .transpose()
    };
    let bad = |e: String| RpcError::BadRequest(e);
    let url = text("requestUrlExpression")
        .ok_or_else(|| RpcError::BadRequest("`requestUrlExpression` is required".into()))?;
    let url = Template::parse(&url).map_err(|e| bad(e.to_string()))?;
    let method_name = text("httpMethod")
        .or_else(|| text("HTTPMethod"))
        .unwrap_or_else(|| if set { "POST" } else { "GET" }.into());
    let method = Method::from_bytes(method_name.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad(format!("invalid HTTP method {method_name:?}")))?;
    let headers = match fields.get("httpHeaders") {
        None => Vec::new(),
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), str::to_string),
                )
            })
            .collect(),
        Some(Json::String(s)) => {
            let m: BTreeMap<String, String> = serde_json::from_str(s).map_err(|e| {
                bad(format!(
                    "`httpHeaders` must be a JSON object of strings: {e}"
                ))
            })?;
            headers(&m)
        }
        Some(_) => return Err(bad("`httpHeaders` must be a JSON object".into())),
    };
    let value_expr = text("valueExpression")
        .map(|t| Template::parse(&t).map_err(|e| bad(e.to_string())))
        .transpose()?;
    let (body, response_value) = if set {
        let value = match text("value") {
            Some(v) => Some(Template::parse(&v).map_err(|e| bad(e.to_string()))?),
            None => value_expr,
        };
        if value.is_none() {
            return Err(bad("`set` needs `value`".into()));
        }
        (value, None)
    } else {
        // As upstream's REST connector: a `get` with `value` sends it as the body.
        let value = text("value")
            .map(|v| Template::parse(&v).map_err(|e| bad(e.to_string())))
            .transpose()?;
        (value, value_expr)
    };
    let tries = num("tries")?.map_or(1, |t| t.clamp(1.0, 100.0) as u32);
    Ok(CallSpec {
        method,
        url,
        body,
        headers,
        timeout: secs(num("timeout")?, Duration::from_secs(10)),
        tries,
        follow_redirects: true,
        response_value,
        response_timeout: num("responseTimeout")?.map(|t| secs(Some(t), Duration::from_secs(10))),
        tls: tls.clone(),
        basic: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_params_become_a_call() {
        let spec = reserved(
            &json!("requestUrlExpression=sensor/${deviceName}/t;httpMethod=put;timeout=0.5;tries=2;httpHeaders={\"X-A\":\"1\"};value=${params.v};"),
            true,
            &ClientTls::default(),
        )
        .unwrap();
        assert_eq!(spec.method, Method::PUT);
        assert_eq!(spec.tries, 2);
        assert_eq!(spec.timeout, Duration::from_millis(500));
        assert_eq!(spec.headers, vec![("X-A".into(), "1".into())]);
        assert_eq!(spec.body.unwrap().source(), "${params.v}");
        let get = reserved(
            &json!({"requestUrlExpression": "x", "valueExpression": "${temp}"}),
            false,
            &ClientTls::default(),
        )
        .unwrap();
        assert_eq!(get.method, Method::GET);
        assert!(get.body.is_none());
        let get = reserved(
            &json!("requestUrlExpression=x;value=1;"),
            false,
            &ClientTls::default(),
        )
        .unwrap();
        assert_eq!(get.body.map(|b| b.source().to_string()), Some("1".into()));
        assert!(reserved(&json!("httpMethod=GET"), false, &ClientTls::default()).is_err());
        assert!(reserved(
            &json!("requestUrlExpression=x"),
            true,
            &ClientTls::default()
        )
        .is_err());
        assert!(reserved(&json!("garbage"), false, &ClientTls::default()).is_err());
    }

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join_url(Some("http://h:1/"), "/a"), "http://h:1/a");
        assert_eq!(join_url(Some("http://h:1"), "a"), "http://h:1/a");
        assert_eq!(join_url(Some("http://h:1"), "https://o/x"), "https://o/x");
    }

    #[test]
    fn replies_carry_body_and_status() {
        let r = Reply {
            status: hyper::StatusCode::OK,
            content_type: None,
            body: Bytes::from_static(br#"{"temp": 21.5}"#),
        };
        let t = Template::parse("${temp}").unwrap();
        assert_eq!(
            rpc_reply(&r, Some(&t)),
            json!({"result": 21.5, "code": 200})
        );
        assert_eq!(
            rpc_reply(&r, None),
            json!({"result": {"temp": 21.5}, "code": 200})
        );
        let e = Reply {
            status: hyper::StatusCode::NOT_FOUND,
            content_type: None,
            body: Bytes::from_static(b"nope"),
        };
        assert_eq!(rpc_reply(&e, None)["code"], 404);
        assert_eq!(rpc_reply(&e, None)["result"], "nope");
    }
}
