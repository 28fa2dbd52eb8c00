//! The REST connector's HTTP handling: routing by path and method, basic authentication,
//! body limits, conversion, waiting for storage and for ThingsBoard, and the status codes.
//!
//! | situation | status |
//! |---|---|
//! | data stored (and, with `responseExpected`, the answer arrived) | 200 |
//! | body not valid for its content type, no device name | 400 |
//! | missing or wrong credentials | 401 |
//! | no endpoint for the path | 404 |
//! | endpoint exists, method not listed | 405 (with `Allow`) |
//! | body larger than the limit | 413 |
//! | body not received within the read timeout | 408, connection closed |
//! | more connections than `maxConnections` | 503, connection closed |
//! | storage did not take the data within the endpoint timeout, or dropped it | 503 |
//! | storage failed | 500 |
//! | `responseExpected` / attribute request: no answer from ThingsBoard in time | 504 |

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fancy_regex::Regex;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value as Json};
use tbgw::convert::{ConvertError, Converter, UplinkConverter, UplinkInput};
use tbgw::expr::Template;
use tbgw::model::now_millis;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::{AttributeRequestError, StoreOutcome, UplinkSender};
use tokio::sync::oneshot;

use super::uplink::{merge_body, parse_form, percent_decode};
use crate::http_common::auth::BasicCredentials;

/// A path segment of an endpoint.
#[derive(Debug)]
pub enum Segment {
    /// Must be equal.
    Literal(String),
    /// `{name}` or `{name:regex}`: captured.
    Param(String, Option<Regex>),
}

/// Parses an aiohttp-style route (`/devices/{id}/data`).
pub fn parse_route(path: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, re) = match inner.split_once(':') {
                Some((n, r)) => (
                    n,
                    Some(
                        Regex::new(&format!("^(?:{r})$"))
                            .map_err(|e| format!("invalid regular expression in {seg:?}: {e}"))?,
                    ),
                ),
                None => (inner, None),
            };
            if name.is_empty() {
                return Err(format!("empty parameter name in {seg:?}"));
            }
            out.push(Segment::Param(name.to_string(), re));
        } else if seg.contains('{') || seg.contains('}') {
            return Err(format!("a parameter must be a whole segment: {seg:?}"));
        } else {
            out.push(Segment::Literal(seg.to_string()));
        }
    }
    Ok(out)
}

/// `mapping[]`: an endpoint that takes device data.
#[derive(Debug)]
pub struct DataEndpoint {
    /// Converter: `json` over the merged request data; any other gets the raw body.
    pub converter: Converter,
    /// `response.responseExpected`.
    pub response_expected: bool,
    /// `response.timeout`.
    pub timeout: Duration,
    /// `response.successResponse`.
    pub success: Bytes,
    /// `response.unsuccessfulResponse`.
    pub failure: Bytes,
    /// `response.responseAttribute`.
    pub response_attribute: Option<String>,
}

/// `requestsMapping.attributeRequests[]`.
#[derive(Debug)]
pub struct AttributeEndpoint {
    /// Client-side (true) or shared attributes.
    pub client: bool,
    /// How long to wait for ThingsBoard.
    pub timeout: Duration,
    /// Device name template.
    pub device: Template,
    /// Attribute names template.
    pub names: Template,
}

/// What an endpoint does.
#[derive(Debug)]
pub enum Kind {
    /// Takes data.
    Data(DataEndpoint),
    /// Answers with attributes.
    Attributes(AttributeEndpoint),
}

/// One route.
#[derive(Debug)]
pub struct Route {
    /// The path pattern.
    pub segments: Vec<Segment>,
    /// Accepted methods.
    pub methods: Vec<Method>,
    /// Basic credentials, when the endpoint is not anonymous.
    pub auth: Option<BasicCredentials>,
    /// What it does.
    pub kind: Kind,
}

impl Route {
    fn matches(&self, path: &[&str], params: &mut Map<String, Json>) -> bool {
        if path.len() != self.segments.len() {
            return false;
        }
        let mut found = Vec::new();
        for (seg, part) in self.segments.iter().zip(path) {
            match seg {
                Segment::Literal(l) => {
                    if l != part {
                        return false;
                    }
                }
                Segment::Param(name, re) => {
                    let value = percent_decode(part, false);
                    if let Some(re) = re {
                        if !re.is_match(&value).unwrap_or(false) {
                            return false;
                        }
                    }
                    found.push((name.clone(), Json::String(value)));
                }
            }
        }
        params.extend(found);
        true
    }
}

/// Something ThingsBoard sent that answers a held `responseExpected` request.
#[derive(Debug)]
struct Waiter {
    id: u64,
    attribute: Option<String>,
    tx: oneshot::Sender<Json>,
}

/// The server's state, shared by all connections.
#[derive(Debug)]
pub struct Server {
    /// Connector name, for logs.
    pub name: String,
    /// Routes in configuration order.
    pub routes: Vec<Route>,
    /// Body limit in bytes.
    pub max_body: usize,
    /// Where data goes.
    pub uplink: UplinkSender,
    /// Counters.
    pub stats: ConnectorCounters,
    /// Time a client has to send a request's body once its headers are in (default 30 s).
    pub read_timeout: Duration,
    waiters: Mutex<HashMap<String, Vec<Waiter>>>,
    next_waiter: std::sync::atomic::AtomicU64,
    logged: Mutex<tbgw::log_once::LogOnce>,
}

/// Distinct problems logged at warn level; later ones are only counted (and logged at debug).
const MAX_LOGGED: usize = 100;

/// The answer to a connection over the limit.
const OVER_LIMIT_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 20\r\nretry-after: 1\r\n\r\nToo many connections";

/// Answers a plain-HTTP connection over the limit with a 503 and closes it: the answer is
/// written, the write side shut, and what the client sent is read and dropped for at most a
/// second so that closing does not reset the connection before the client reads the answer.
pub async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let linger = async {
        stream.write_all(OVER_LIMIT_RESPONSE).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

/// Why a request body could not be read.
enum BodyError {
    /// Above the limit.
    TooLarge,
    /// The connection failed or the body was malformed.
    Read(hyper::Error),
}

/// Reads a body of at most `max` bytes. A body that arrives in one piece (the usual case) is
/// kept as it is; one that trickles in is copied out of the connection's read buffer piece by
/// piece, so that it holds its own length in memory, not one read buffer per piece.
async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if have + data.len() > max {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            held => {
                if let Some(f) = held {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, v: &Json) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Responds with `body` as JSON when it is JSON text, else as plain text.
fn body_response(status: StatusCode, body: &Bytes) -> Resp {
    let mut r = text(status, body.clone());
    if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    r
}

impl Server {
    /// A server over `routes`.
    pub fn new(
        name: String,
        routes: Vec<Route>,
        max_body: usize,
        uplink: UplinkSender,
        stats: ConnectorCounters,
    ) -> Self {
        Server {
            name,
            routes,
            max_body,
            uplink,
            stats,
            read_timeout: Duration::from_secs(30),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: Default::default(),
            logged: Mutex::new(tbgw::log_once::LogOnce::new(MAX_LOGGED)),
        }
    }

    /// Logs a refused request: at warn level the first time each distinct reason is seen (up
    /// to [`MAX_LOGGED`] reasons), at debug level after that; every one is counted by the
    /// caller.
    fn refused(&self, status: StatusCode, path: &str, reason: &str) {
        let key = format!("{} {path}: {reason}", status.as_u16());
        let first = self
            .logged
            .lock()
            .map(|mut l| l.first(&key))
            .unwrap_or(false);
        if first {
            tracing::warn!(connector = %self.name, status = status.as_u16(), path, error = reason, "Request refused (logged once per distinct reason; all are counted).");
        } else {
            tracing::debug!(connector = %self.name, status = status.as_u16(), path, error = reason, "Request refused.");
        }
    }

    /// Counts and logs a connection over the `maxConnections` limit; see [`refuse`].
    pub fn over_limit(&self, limit: usize) {
        self.stats.add_errors(1);
        self.refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "*",
            &format!("more than maxConnections ({limit}) connections at once"),
        );
    }

    fn add_waiter(
        &self,
        device: &str,
        attribute: Option<String>,
    ) -> (u64, oneshot::Receiver<Json>) {
        let (tx, rx) = oneshot::channel();
        let id = self
            .next_waiter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut w) = self.waiters.lock() {
            let list = w.entry(device.to_string()).or_default();
            // Requests whose client went away leave closed senders behind.
            list.retain(|x| !x.tx.is_closed());
            list.push(Waiter { id, attribute, tx });
        }
        (id, rx)
    }

    fn remove_waiter(&self, device: &str, id: u64) {
        if let Ok(mut w) = self.waiters.lock() {
            if let Some(list) = w.get_mut(device) {
                list.retain(|x| x.id != id);
                if list.is_empty() {
                    w.remove(device);
                }
            }
        }
    }

    /// Hands an RPC to the oldest request of `device` held by `responseExpected` (one without
    /// `responseAttribute`). Returns the RPC back when no request waits.
    pub fn deliver_rpc(&self, device: &str, rpc: Json) -> Result<(), Json> {
        let Ok(mut w) = self.waiters.lock() else {
            return Err(rpc);
        };
        let Some(list) = w.get_mut(device) else {
            return Err(rpc);
        };
        let mut rpc = rpc;
        while let Some(i) = list.iter().position(|x| x.attribute.is_none()) {
            let waiter = list.remove(i);
            match waiter.tx.send(rpc) {
                Ok(()) => return Ok(()),
                Err(back) => rpc = back,
            }
        }
        Err(rpc)
    }

    /// Answers every held request of `device` whose `responseAttribute` is in `values`.
    pub fn deliver_attributes(&self, device: &str, values: &Map<String, Json>) -> usize {
        let Ok(mut w) = self.waiters.lock() else {
            return 0;
        };
        let Some(list) = w.get_mut(device) else {
            return 0;
        };
        let mut delivered = 0;
        let mut keep = Vec::new();
        for waiter in list.drain(..) {
            let answer = waiter.attribute.as_deref().and_then(|a| values.get(a));
            if let Some(v) = answer {
                delivered += usize::from(waiter.tx.send(v.clone()).is_ok());
            } else if !waiter.tx.is_closed() {
                keep.push(waiter);
            }
        }
        *list = keep;
        delivered
    }

    /// Handles one request. Never fails: every problem is a status code.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        Ok(self.route(req).await)
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        let (parts, incoming) = req.into_parts();
        let path: Vec<&str> = parts
            .uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut params = Map::new();
        let mut allowed: Vec<&Method> = Vec::new();
        let mut chosen = None;
        for r in &self.routes {
            let mut p = Map::new();
            if !r.matches(&path, &mut p) {
                continue;
            }
            if r.methods.contains(&parts.method) {
                chosen = Some(r);
                params = p;
                break;
            }
            allowed.extend(r.methods.iter());
        }
        let Some(route) = chosen else {
            if allowed.is_empty() {
                return text(StatusCode::NOT_FOUND, "Not Found");
            }
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
            let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
                r.headers_mut().insert(ALLOW, v);
            }
            return r;
        };
        if let Some(auth) = &route.auth {
            let header = parts
                .headers
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if !auth.check(header) {
                self.stats.add_errors(1);
                self.refused(
                    StatusCode::UNAUTHORIZED,
                    parts.uri.path(),
                    "missing or wrong credentials",
                );
                let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized");
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tbgw\""),
                );
                return r;
            }
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            self.stats.add_errors(1);
            self.refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                parts.uri.path(),
                "body above the limit",
            );
            return text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
        }
        if let Some(q) = parts.uri.query() {
            parse_form(q, &mut params);
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match tokio::time::timeout(self.read_timeout, read_body(incoming, self.max_body))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(BodyError::TooLarge)) => {
                self.stats.add_errors(1);
                self.refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    parts.uri.path(),
                    "body above the limit",
                );
                return text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
            }
            Ok(Err(BodyError::Read(e))) => {
                self.stats.add_errors(1);
                self.refused(
                    StatusCode::BAD_REQUEST,
                    parts.uri.path(),
                    &format!("cannot read the body: {e}"),
                );
                return text(StatusCode::BAD_REQUEST, "Cannot read the request body");
            }
            Err(_) => {
                // A client that trickles its body keeps neither a task nor memory for long.
                self.stats.add_errors(1);
                self.refused(
                    StatusCode::REQUEST_TIMEOUT,
                    parts.uri.path(),
                    "body not received within the read timeout",
                );
                let mut r = text(StatusCode::REQUEST_TIMEOUT, "Request Timeout");
                r.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        };
        self.stats.add_messages_received(1);
        self.stats.add_bytes_received(body.len() as u64);
        if let Err(e) = merge_body(content_type.as_deref(), &body, &mut params) {
            self.stats.add_convert_errors(1);
            self.refused(StatusCode::BAD_REQUEST, parts.uri.path(), &e.to_string());
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
        let data = Json::Object(params);
        match &route.kind {
            Kind::Data(ep) => self.data(ep, &data, &body, &path).await,
            Kind::Attributes(ep) => self.attributes(ep, &data).await,
        }
    }

    async fn data(&self, ep: &DataEndpoint, data: &Json, body: &Bytes, path: &[&str]) -> Resp {
        let mut errors: Vec<ConvertError> = Vec::new();
        let received_ts = now_millis();
        let converted = match &ep.converter {
            Converter::Json(c) => {
                let source = format!("/{}", path.join("/"));
                c.convert_value(&source, data, received_ts, &mut errors)
                    .map(|d| vec![d])
            }
            c => {
                let source = format!("/{}", path.join("/"));
                c.convert(
                    UplinkInput {
                        source: &source,
                        payload: body,
                        received_ts,
                    },
                    &mut errors,
                )
            }
        };
        if !errors.is_empty() {
            self.stats.add_convert_errors(errors.len() as u64);
            tracing::debug!(connector = %self.name, error = %errors[0], "Cannot convert part of a request.");
        }
        let converted = match converted {
            Ok(d) => d,
            Err(e) => {
                self.stats.add_convert_errors(1);
                self.refused(
                    StatusCode::BAD_REQUEST,
                    &format!("/{}", path.join("/")),
                    &e.to_string(),
                );
                return text(StatusCode::BAD_REQUEST, e.to_string());
            }
        };
        let deadline = tokio::time::Instant::now() + ep.timeout;
        let waiter = match (ep.response_expected, converted.first()) {
            (true, Some(d)) => {
                let device = d.device_name.clone();
                let (id, rx) = self.add_waiter(&device, ep.response_attribute.clone());
                Some((device, id, rx))
            }
            _ => None,
        };
        let stored = tokio::time::timeout_at(deadline, async {
            match self.uplink.send_acked(converted).await {
                Ok(receipt) => receipt.wait().await,
                Err(_) => StoreOutcome::Failed,
            }
        })
        .await;
        let failure = match stored {
            Ok(StoreOutcome::Stored) => None,
            Ok(StoreOutcome::Dropped(_)) | Err(_) => {
                self.stats.add_errors(1);
                let path = format!("/{}", path.join("/"));
                self.refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &path,
                    "storage did not take the data in time",
                );
                Some(StatusCode::SERVICE_UNAVAILABLE)
            }
            Ok(StoreOutcome::Failed) => {
                self.stats.add_errors(1);
                let path = format!("/{}", path.join("/"));
                self.refused(StatusCode::INTERNAL_SERVER_ERROR, &path, "storage failed");
                Some(StatusCode::INTERNAL_SERVER_ERROR)
            }
        };
        if let Some(status) = failure {
            if let Some((device, id, _)) = &waiter {
                self.remove_waiter(device, *id);
            }
            return body_response(status, &ep.failure);
        }
        let Some((device, id, rx)) = waiter else {
            return body_response(StatusCode::OK, &ep.success);
        };
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => json_response(StatusCode::OK, &answer),
            _ => {
                self.remove_waiter(&device, id);
                body_response(StatusCode::GATEWAY_TIMEOUT, &ep.failure)
            }
        }
    }

    async fn attributes(&self, ep: &AttributeEndpoint, data: &Json) -> Resp {
        let Some(device) = ep.device.render(data).filter(|d| !d.is_empty()) else {
            return text(
                StatusCode::BAD_REQUEST,
                "the device name expression has no match in the request",
            );
        };
        let keys = attribute_names(&ep.names, data);
        if keys.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "the attribute name expression has no match in the request",
            );
        }
        match self
            .uplink
            .request_attributes_response(device, ep.client, keys, ep.timeout)
            .await
        {
            // As upstream: ThingsBoard's answer as it came (`{"id", "device", "value"}` for
            // one key, `{"id", "device", "values"}` for several).
            Ok(answer) => json_response(StatusCode::OK, &answer),
            Err(AttributeRequestError::Timeout(_)) => text(
                StatusCode::GATEWAY_TIMEOUT,
                "No answer from ThingsBoard in time",
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "The gateway is shutting down",
            ),
        }
    }
}

/// The attribute names an `attributeNameExpression` gives: each placeholder's value (a
/// string, split on commas, or an array of strings); a constant is split on commas.
pub fn attribute_names(t: &Template, data: &Json) -> Vec<String> {
    let mut out = Vec::new();
    let push_text = |s: &str, out: &mut Vec<String>| {
        for k in s.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            out.push(k.to_string());
        }
    };
    if t.is_constant() {
        push_text(t.source(), &mut out);
        return out;
    }
    for expr in t.placeholders() {
        let Ok(single) = Template::parse(&format!("${{{expr}}}")) else {
            continue;
        };
        match single.resolve(data).map(|v| v.into_owned()) {
            Some(Json::String(s)) => push_text(&s, &mut out),
            Some(Json::Array(items)) => {
                for i in items {
                    match i {
                        Json::String(s) => push_text(&s, &mut out),
                        other => out.push(other.to_string()),
                    }
                }
            }
            Some(Json::Null) | None => {}
            Some(other) => out.push(other.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_capture_parameters() {
        let segs = parse_route("/dev/{name}/t/{n:[0-9]+}").unwrap();
        let r = Route {
            segments: segs,
            methods: vec![Method::POST],
            auth: None,
            kind: Kind::Attributes(AttributeEndpoint {
                client: false,
                timeout: Duration::from_secs(1),
                device: Template::parse("x").unwrap(),
                names: Template::parse("x").unwrap(),
            }),
        };
        let mut p = Map::new();
        assert!(r.matches(&["dev", "a%20b", "t", "12"], &mut p));
        assert_eq!(p["name"], "a b");
        assert_eq!(p["n"], "12");
        assert!(!r.matches(&["dev", "a", "t", "x"], &mut Map::new()));
        assert!(!r.matches(&["dev", "a", "t"], &mut Map::new()));
        assert!(parse_route("/a{b}").is_err());
        assert!(parse_route("/{:x}").is_err());
    }

    #[test]
    fn attribute_names_come_from_each_placeholder() {
        let t = Template::parse("${attribute}${attribute1}").unwrap();
        assert_eq!(
            attribute_names(&t, &json!({"attribute": "a", "attribute1": "b,c"})),
            vec!["a", "b", "c"]
        );
        assert_eq!(attribute_names(&t, &json!({"attribute": "a"})), vec!["a"]);
        assert_eq!(
            attribute_names(&Template::parse("x, y").unwrap(), &json!({})),
            vec!["x", "y"]
        );
    }
}
