//! The Request connector's build step and run loop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::Method;
use serde_json::Value as Json;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::convert::{ConvertError, Converter, ConverterRegistry};
use tbgw::downlink::{normalize_rpc_result, AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::expr::{Encoding, JsonPath, Template};
use tbgw::model::{now_millis, DeviceData};
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::config::{RequestConnectorConfig, SecurityConfig};
use super::uplink;
use crate::http_common::call::{self, CallSpec, Rule};
use crate::http_common::client::{HttpClient, Outbound};
use crate::http_common::tls::ClientTls;

/// Downlink requests handled at the same time; more wait in the downlink channel.
const MAX_CONCURRENT_DOWNLINK: usize = 64;
/// Default request timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `scanPeriod`.
const DEFAULT_SCAN_PERIOD: Duration = Duration::from_secs(60);
/// Shortest `scanPeriod` accepted.
const MIN_SCAN_PERIOD: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct SubRequest {
    key: String,
    url: Template,
    method: Method,
}

#[derive(Debug)]
struct Mapping {
    index: usize,
    url: String,
    method: Method,
    headers: Vec<(String, String)>,
    body: Bytes,
    follow_redirects: bool,
    timeout: Duration,
    period: Duration,
    unpack: Option<JsonPath>,
    sub_requests: Vec<SubRequest>,
    uplink: Converter,
}

/// What the poll tasks and downlink handlers share.
#[derive(Debug)]
struct Shared {
    name: String,
    host: String,
    client: HttpClient,
    tls: ClientTls,
    basic: Option<(String, String)>,
    attribute_rules: Vec<Rule>,
    rpc_rules: Vec<Rule>,
}

/// The Request connector: polls HTTP endpoints and sends downlink as HTTP requests.
#[derive(Debug)]
pub struct RequestConnector {
    shared: Arc<Shared>,
    mappings: Vec<Arc<Mapping>>,
}

fn security(file: &Path, s: &SecurityConfig) -> Result<Option<(String, String)>, ConfigError> {
    match s.kind.as_str() {
        "anonymous" => Ok(None),
        "basic" => match &s.username {
            Some(u) => Ok(Some((u.clone(), s.password.clone().unwrap_or_default()))),
            None => Err(ConfigError::new(
                file,
                "security.username",
                "missing; required by basic security",
            )),
        },
        other => Err(ConfigError::new(
            file,
            "security.type",
            format!("unknown security type `{other}`; expected anonymous or basic"),
        )),
    }
}

impl RequestConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: RequestConnectorConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let host = cfg.host.trim().trim_end_matches('/').to_string();
        if !(host.starts_with("http://") || host.starts_with("https://")) {
            return Err(ConfigError::new(
                file,
                "host",
                format!("{host:?} must start with http:// or https://"),
            ));
        }
        if host.parse::<hyper::Uri>().is_err() {
            return Err(ConfigError::new(file, "host", "not a valid URL"));
        }
        let basic = security(file, &cfg.security)?;
        let tls = ClientTls {
            insecure: !cfg.ssl_verify,
            client_cert: None,
        };
        let mut mappings = Vec::new();
        for (i, m) in cfg.mapping.iter().enumerate() {
            let p = format!("mapping[{i}]");
            let Some(uplink) = Converter::build(
                file,
                &format!("{p}.converter"),
                &m.converter,
                &super::DIALECT,
                converters,
                ignored,
            )?
            else {
                continue;
            };
            let body = match &m.content {
                None | Some(Json::Null) => Bytes::new(),
                Some(Json::String(s)) => Bytes::from(s.clone()),
                Some(v) => Bytes::from(v.to_string()),
            };
            let unpack = match m.data_unpack_expression.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(e) => Some(JsonPath::parse(e.trim_start_matches("$.")).map_err(|err| {
                    ConfigError::new(file, format!("{p}.dataUnpackExpression"), err.to_string())
                })?),
            };
            let mut sub_requests = Vec::new();
            for (key, s) in &m.sub_requests {
                let sp = format!("{p}.subRequests.{key}");
                if s.processing_function.is_some() {
                    ignored.push(format!("{sp}.processingFunction (Python code is not run; the sub-request's JSON answer is stored under `{key}`)"));
                }
                sub_requests.push(SubRequest {
                    key: key.clone(),
                    url: call::template(file, &format!("{sp}.url"), &s.url)?,
                    method: call::method(file, &format!("{sp}.httpMethod"), &s.http_method)?,
                });
            }
            let url = call::join_url(Some(&host), &m.url);
            if url.parse::<hyper::Uri>().is_err() {
                return Err(ConfigError::new(
                    file,
                    format!("{p}.url"),
                    "not a valid URL",
                ));
            }
            mappings.push(Arc::new(Mapping {
                index: i,
                url,
                method: call::method(file, &format!("{p}.httpMethod"), &m.http_method)?,
                headers: call::headers(&m.http_headers),
                body,
                follow_redirects: m.allow_redirects,
                timeout: call::secs(m.timeout, DEFAULT_TIMEOUT),
                period: call::secs(m.scan_period, DEFAULT_SCAN_PERIOD).max(MIN_SCAN_PERIOD),
                unpack,
                sub_requests,
                uplink,
            }));
        }
        let mut attribute_rules = Vec::new();
        for (i, a) in cfg.attribute_updates.iter().enumerate() {
            let p = format!("attributeUpdates[{i}]");
            attribute_rules.push(Rule::new(
                call::filter(
                    file,
                    &format!("{p}.deviceNameFilter"),
                    &a.device_name_filter,
                )?,
                call::filter(file, &format!("{p}.attributeFilter"), &a.attribute_filter)?,
                CallSpec {
                    method: call::method(file, &format!("{p}.httpMethod"), &a.http_method)?,
                    url: call::template(
                        file,
                        &format!("{p}.requestUrlExpression"),
                        &a.request_url_expression,
                    )?,
                    body: a
                        .request_value_expression
                        .as_deref()
                        .map(|t| call::template(file, &format!("{p}.requestValueExpression"), t))
                        .transpose()?,
                    headers: call::headers(&a.http_headers),
                    timeout: call::secs(a.timeout, DEFAULT_TIMEOUT),
                    tries: a.tries.unwrap_or(1).max(1),
                    follow_redirects: a.allow_redirects,
                    response_value: None,
                    response_timeout: None,
                    tls: tls.clone(),
                    basic: basic.clone(),
                },
            ));
        }
        let mut rpc_rules = Vec::new();
        for (i, r) in cfg.server_side_rpc.iter().enumerate() {
            let p = format!("serverSideRpc[{i}]");
            rpc_rules.push(Rule::new(
                call::filter(
                    file,
                    &format!("{p}.deviceNameFilter"),
                    &r.device_name_filter,
                )?,
                call::filter(file, &format!("{p}.methodFilter"), &r.method_filter)?,
                CallSpec {
                    method: call::method(file, &format!("{p}.httpMethod"), &r.http_method)?,
                    url: call::template(
                        file,
                        &format!("{p}.requestUrlExpression"),
                        &r.request_url_expression,
                    )?,
                    body: r
                        .request_value_expression
                        .as_deref()
                        .map(|t| call::template(file, &format!("{p}.requestValueExpression"), t))
                        .transpose()?,
                    headers: call::headers(&r.http_headers),
                    timeout: call::secs(r.timeout, DEFAULT_TIMEOUT),
                    tries: r.tries.unwrap_or(1).max(1),
                    follow_redirects: r.allow_redirects,
                    response_value: r
                        .response_value_expression
                        .as_deref()
                        .map(|t| call::template(file, &format!("{p}.responseValueExpression"), t))
                        .transpose()?,
                    response_timeout: r
                        .response_timeout
                        .map(|t| call::secs(Some(t), DEFAULT_TIMEOUT)),
                    tls: tls.clone(),
                    basic: basic.clone(),
                },
            ));
        }
        Ok(RequestConnector {
            shared: Arc::new(Shared {
                name: name.to_string(),
                host,
                client: HttpClient::new(),
                tls,
                basic,
                attribute_rules,
                rpc_rules,
            }),
            mappings,
        })
    }
}

/// Polls one mapping on its own fixed schedule until cancelled. A poll that takes longer than
/// the period makes the missed ticks lapse (no burst of catch-up polls, no overlap) and the
/// schedule stays anchored to the start, so it does not drift.
async fn poll_loop(
    shared: Arc<Shared>,
    m: Arc<Mapping>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(m.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let polled = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = poll_once(&shared, &m, &stats) => r,
        };
        match polled {
            Ok(data) => {
                if last_error.take().is_some() {
                    tracing::info!(connector = %shared.name, url = %m.url, "Polling works again.");
                }
                for d in data {
                    if uplink.send(d).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                stats.add_errors(1);
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(connector = %shared.name, mapping = m.index, url = %m.url, error = %e, "Poll failed (logged again only when the error changes; all are counted).");
                }
                last_error = Some(e);
            }
        }
    }
}

fn outbound(shared: &Shared, m: &Mapping, url: String, method: Method, body: Bytes) -> Outbound {
    Outbound {
        method,
        url,
        headers: m.headers.clone(),
        body,
        timeout: m.timeout,
        follow_redirects: m.follow_redirects,
        tls: shared.tls.clone(),
        basic: shared.basic.clone(),
    }
}

/// One poll: request, sub-requests, conversion. Errors are for the log (one line per
/// distinct error); conversion problems are counted as convert errors.
async fn poll_once(
    shared: &Shared,
    m: &Mapping,
    stats: &ConnectorCounters,
) -> Result<Vec<DeviceData>, String> {
    let req = outbound(shared, m, m.url.clone(), m.method.clone(), m.body.clone());
    let reply = shared.client.send(&req).await.map_err(|e| e.to_string())?;
    stats.add_messages_received(1);
    stats.add_bytes_received(reply.body.len() as u64);
    if !reply.status.is_success() {
        return Err(format!("HTTP status {}", reply.status.as_u16()));
    }
    let received_ts = now_millis();
    let mut errors = Vec::new();
    let data = match &m.uplink {
        Converter::Json(conv) => {
            let body: Json = match serde_json::from_slice(&reply.body) {
                Ok(j) => j,
                Err(e) => {
                    stats.add_convert_errors(1);
                    return Err(format!("the response is not valid JSON: {e}"));
                }
            };
            let mut items = uplink::unpack(body, m.unpack.as_ref());
            if !m.sub_requests.is_empty() {
                for item in &mut items {
                    sub_requests(shared, m, item, &mut errors).await;
                }
            }
            conv.convert_items(&m.url, &items, received_ts, &mut errors)
        }
        custom => uplink::convert_custom(custom, &m.url, &reply.body, received_ts, &mut errors),
    };
    if !errors.is_empty() {
        stats.add_convert_errors(errors.len() as u64);
        for e in errors.iter().take(3) {
            tracing::debug!(connector = %shared.name, url = %m.url, error = %e, "Cannot convert part of a response.");
        }
        if data.is_empty() {
            return Err(format!("conversion failed: {}", errors[0]));
        }
    }
    Ok(data)
}

/// Fetches each sub-request of an item and stores its JSON answer in the item under its key.
async fn sub_requests(
    shared: &Shared,
    m: &Mapping,
    item: &mut Json,
    errors: &mut Vec<ConvertError>,
) {
    for s in &m.sub_requests {
        let Some(url) = s.url.render_scope(item, Encoding::Text) else {
            errors.push(ConvertError::Value {
                key: s.key.clone(),
                reason: format!(
                    "the sub-request URL {:?} has no match in the item",
                    s.url.source()
                ),
            });
            continue;
        };
        let req = outbound(
            shared,
            m,
            call::join_url(Some(&shared.host), &url),
            s.method.clone(),
            Bytes::new(),
        );
        match shared.client.send(&req).await {
            Ok(r) if r.status.is_success() => {
                if let Json::Object(map) = item {
                    map.insert(s.key.clone(), call::body_json(&r.body));
                }
            }
            Ok(r) => errors.push(ConvertError::Value {
                key: s.key.clone(),
                reason: format!("sub-request answered HTTP status {}", r.status.as_u16()),
            }),
            Err(e) => errors.push(ConvertError::Value {
                key: s.key.clone(),
                reason: format!("sub-request failed: {e}"),
            }),
        }
    }
}

async fn handle_attribute_update(shared: &Shared, u: AttributeUpdate, stats: &ConnectorCounters) {
    call::send_attribute_update(
        &shared.client,
        &shared.attribute_rules,
        Some(&shared.host),
        &u,
        stats,
        &shared.name,
    )
    .await;
}

/// Answers an RPC: reserved `get`/`set`, else the first `serverSideRpc` rule that matches the
/// device and method.
async fn handle_rpc(shared: &Shared, rpc: RpcRequest) {
    let RpcRequest {
        device,
        id,
        method,
        params,
        responder,
        ..
    } = rpc;
    let reserved;
    let spec: &CallSpec = if method == "get" || method == "set" {
        match call::reserved(&params, method == "set", &shared.tls) {
            Ok(mut s) => {
                s.basic = shared.basic.clone();
                reserved = s;
                &reserved
            }
            Err(e) => return responder.err(e),
        }
    } else {
        match shared
            .rpc_rules
            .iter()
            .find(|r| r.matches(device.as_deref(), &method))
        {
            Some(r) => &r.spec,
            None => {
                return responder.err(RpcError::NotFound(format!(
                    "method `{method}`: no serverSideRpc entry matches"
                )))
            }
        }
    };
    let scope = call::rpc_scope(device.as_deref(), &method, id, &params);
    match call::execute(&shared.client, spec, Some(&shared.host), &scope).await {
        Ok(reply) => responder.ok(normalize_rpc_result(call::request_rpc_reply(
            &reply,
            spec.response_value.as_ref(),
        ))),
        Err(e) => {
            tracing::warn!(connector = %shared.name, device = device.as_deref().unwrap_or(""), method = %method, error = %e, "RPC request failed.");
            responder.err(e.to_rpc())
        }
    }
}

#[async_trait]
impl Connector for RequestConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        // HTTP connections are sub-tasks of this run.
        self.shared.client.attach(cx.spawner());
        let cancel = cx.cancellation().clone();
        for m in &self.mappings {
            let poll = poll_loop(
                self.shared.clone(),
                m.clone(),
                cx.uplink().clone(),
                cx.stats().clone(),
                cancel.clone(),
            );
            cx.spawn(format!("poll mapping[{}] {}", m.index, m.url), async move {
                poll.await;
                Ok(())
            });
        }
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_DOWNLINK));
        let mut downlink_open = true;
        loop {
            // Cancellation first: poll tasks watch the same token and stop between requests;
            // downlink handlers still in flight are aborted (their responders then answer
            // with an error).
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                dl = cx.recv_downlink(), if downlink_open => {
                    let Some(dl) = dl else {
                        downlink_open = false;
                        continue;
                    };
                    cx.stats().add_downlink(1);
                    let Ok(permit) = limit.clone().acquire_owned().await else { break };
                    let shared = self.shared.clone();
                    let stats = cx.stats().clone();
                    cx.spawn("downlink request", async move {
                        let _permit = permit;
                        match dl {
                            Downlink::Rpc(rpc) => handle_rpc(&shared, rpc).await,
                            Downlink::AttributeUpdate(u) => handle_attribute_update(&shared, u, &stats).await,
                            _ => {}
                        }
                        Ok(())
                    });
                }
            }
        }
        // Poll tasks watch the same token; downlink handlers still in flight are aborted.
        cx.finish_tasks(Duration::ZERO).await;
        Ok(())
    }
}
