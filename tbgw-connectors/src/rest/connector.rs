//! The REST connector's build step and run loop: the listener, one task per connection, and
//! downlink (held `responseExpected` requests first, then outgoing HTTP requests).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::service::service_fn;
use hyper::Method;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tbgw::config::{resolve_beside, ConfigError};
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::convert::{Converter, ConverterRegistry};
use tbgw::downlink::{normalize_rpc_result, AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::stats::ConnectorCounters;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::config::{OutboundConfig, RestConnectorConfig, SecurityConfig};
use super::server::{parse_route, AttributeEndpoint, DataEndpoint, Kind, Route, Server};
use crate::http_common::auth::BasicCredentials;
use crate::http_common::call::{self, CallSpec, Rule};
use crate::http_common::client::HttpClient;
use crate::http_common::tls::{self, ClientTls};

/// Default body limit: 1 MiB, aiohttp's `client_max_size`.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// Default endpoint and attribute-request timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's headers, and then its body (slow-loris
/// guard; `server.readTimeout`).
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most connections served at once (`server.maxConnections`).
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections over the limit being answered 503 at once; more are closed without an answer.
const MAX_REFUSING: usize = 64;
/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Outgoing downlink requests in flight at once; more wait in the downlink channel.
const MAX_CONCURRENT_DOWNLINK: usize = 64;

#[derive(Debug)]
struct Outgoing {
    name: String,
    client: HttpClient,
    attribute_rules: Vec<Rule>,
    rpc_rules: Vec<Rule>,
}

/// The REST connector: an HTTP(S) server devices push data to.
#[derive(Debug)]
pub struct RestConnector {
    name: String,
    host: String,
    port: u16,
    tls: Option<(PathBuf, PathBuf)>,
    max_body: usize,
    max_connections: usize,
    read_timeout: Duration,
    routes: Option<Vec<Route>>,
    outgoing: Arc<Outgoing>,
}

fn endpoint_auth(
    file: &Path,
    prefix: &str,
    s: &SecurityConfig,
) -> Result<Option<BasicCredentials>, ConfigError> {
    match s.kind.as_str() {
        "anonymous" => Ok(None),
        "basic" => match (&s.username, &s.password) {
            (Some(u), p) => Ok(Some(BasicCredentials::new(u, p.as_deref().unwrap_or("")))),
            (None, _) => Err(ConfigError::new(
                file,
                format!("{prefix}.security.username"),
                "missing; required by basic security",
            )),
        },
        other => Err(ConfigError::new(
            file,
            format!("{prefix}.security.type"),
            format!("unknown security type `{other}`; expected anonymous or basic"),
        )),
    }
}

fn methods(file: &Path, prefix: &str, list: &[String]) -> Result<Vec<Method>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.HTTPMethods"),
            "must list at least one method",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| call::method(file, &format!("{prefix}.HTTPMethods[{i}]"), m))
        .collect()
}

fn outbound_rule(
    file: &Path,
    prefix: &str,
    o: &OutboundConfig,
    name_filter: Option<&str>,
    name_key: &str,
) -> Result<Rule, ConfigError> {
    let (basic, client_cert) = match o.security.kind.as_str() {
        "anonymous" => (None, None),
        "basic" => match &o.security.username {
            Some(u) => (
                Some((u.clone(), o.security.password.clone().unwrap_or_default())),
                None,
            ),
            None => {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}.security.username"),
                    "missing; required by basic security",
                ))
            }
        },
        "cert" => match (&o.security.cert, &o.security.key) {
            (Some(c), Some(k)) => (
                None,
                Some((resolve_beside(file, c), resolve_beside(file, k))),
            ),
            _ => {
                return Err(ConfigError::new(
                    file,
                    format!("{prefix}.security"),
                    "cert security needs `cert` and `key`",
                ))
            }
        },
        other => {
            return Err(ConfigError::new(
                file,
                format!("{prefix}.security.type"),
                format!("unknown security type `{other}`; expected anonymous, basic or cert"),
            ))
        }
    };
    Ok(Rule::new(
        call::filter(
            file,
            &format!("{prefix}.deviceNameFilter"),
            &o.device_name_filter,
        )?,
        call::filter(
            file,
            &format!("{prefix}.{name_key}"),
            name_filter.unwrap_or(".*"),
        )?,
        CallSpec {
            method: call::method(file, &format!("{prefix}.HTTPMethod"), &o.http_method)?,
            url: call::template(
                file,
                &format!("{prefix}.requestUrlExpression"),
                &o.request_url_expression,
            )?,
            body: o
                .value_expression
                .as_deref()
                .map(|t| call::template(file, &format!("{prefix}.valueExpression"), t))
                .transpose()?,
            headers: call::headers(&o.http_headers),
            timeout: call::secs(o.timeout, DEFAULT_TIMEOUT),
            tries: o.tries.unwrap_or(1).max(1),
            follow_redirects: o.allow_redirects,
            response_value: o
                .response_value_expression
                .as_deref()
                .map(|t| call::template(file, &format!("{prefix}.responseValueExpression"), t))
                .transpose()?,
            response_timeout: o
                .response_timeout
                .map(|t| call::secs(Some(t), DEFAULT_TIMEOUT)),
            tls: ClientTls {
                insecure: !o.ssl_verify,
                client_cert,
            },
            basic,
        },
    ))
}

impl RestConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: RestConnectorConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let port = match &cfg.server.port {
            None => 5000,
            Some(super::config::Port::Number(p)) => *p,
            Some(super::config::Port::Text(t)) => t.trim().parse().map_err(|_| {
                ConfigError::new(file, "server.port", format!("{t:?} is not a port number"))
            })?,
        };
        let host = cfg.server.host.trim().to_string();
        if host.is_empty() {
            return Err(ConfigError::new(file, "server.host", "must not be empty"));
        }
        let tls = if cfg.server.ssl {
            match cfg.server.security.as_ref().map(|s| (&s.cert, &s.key)) {
                Some((Some(c), Some(k))) => {
                    Some((resolve_beside(file, c), resolve_beside(file, k)))
                }
                _ => {
                    return Err(ConfigError::new(
                        file,
                        "server.security",
                        "SSL is on: `cert` and `key` (PEM files) are required",
                    ))
                }
            }
        } else {
            if cfg.server.security.is_some() {
                ignored.push("server.security (SSL is off)".into());
            }
            None
        };
        let max_connections = cfg
            .server
            .max_connections
            .unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError::new(
                file,
                "server.maxConnections",
                "must be at least 1",
            ));
        }
        let read_timeout = match cfg.server.read_timeout {
            None => DEFAULT_READ_TIMEOUT,
            Some(t) if t > 0.0 && t <= 3600.0 => Duration::from_secs_f64(t),
            Some(t) => {
                return Err(ConfigError::new(
                    file,
                    "server.readTimeout",
                    format!("{t} is not a number of seconds between 0 and 3600"),
                ))
            }
        };
        let mut routes = Vec::new();
        for (i, m) in cfg.mapping.iter().enumerate() {
            let p = format!("mapping[{i}]");
            let Some(converter) = Converter::build(
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
            let r = &m.response;
            routes.push(Route {
                segments: parse_route(&m.endpoint)
                    .map_err(|e| ConfigError::new(file, format!("{p}.endpoint"), e))?,
                methods: methods(file, &p, &m.http_methods)?,
                auth: endpoint_auth(file, &p, &m.security)?,
                kind: Kind::Data(DataEndpoint {
                    converter,
                    response_expected: r.response_expected,
                    timeout: call::secs(r.timeout, DEFAULT_TIMEOUT),
                    success: Bytes::from(r.success_response.clone().unwrap_or_else(|| "OK".into())),
                    failure: Bytes::from(
                        r.unsuccessful_response
                            .clone()
                            .unwrap_or_else(|| "Error".into()),
                    ),
                    response_attribute: r.response_attribute.clone(),
                }),
            });
        }
        let rm = &cfg.requests_mapping;
        for (i, a) in rm.attribute_requests.iter().enumerate() {
            let p = format!("requestsMapping.attributeRequests[{i}]");
            let client = match a.kind.as_str() {
                "shared" => false,
                "client" => true,
                other => {
                    return Err(ConfigError::new(
                        file,
                        format!("{p}.type"),
                        format!("unknown attribute type `{other}`; expected shared or client"),
                    ))
                }
            };
            routes.push(Route {
                segments: parse_route(&a.endpoint)
                    .map_err(|e| ConfigError::new(file, format!("{p}.endpoint"), e))?,
                methods: methods(file, &p, &a.http_methods)?,
                auth: endpoint_auth(file, &p, &a.security)?,
                kind: Kind::Attributes(AttributeEndpoint {
                    client,
                    timeout: call::secs(a.timeout, DEFAULT_TIMEOUT),
                    device: call::template(
                        file,
                        &format!("{p}.deviceNameExpression"),
                        &a.device_name_expression,
                    )?,
                    names: call::template(
                        file,
                        &format!("{p}.attributeNameExpression"),
                        &a.attribute_name_expression,
                    )?,
                }),
            });
        }
        let mut attribute_rules = Vec::new();
        for (i, o) in rm.attribute_updates.iter().enumerate() {
            let p = format!("requestsMapping.attributeUpdates[{i}]");
            if o.method_filter.is_some() {
                ignored.push(format!("{p}.methodFilter"));
            }
            attribute_rules.push(outbound_rule(
                file,
                &p,
                o,
                o.attribute_filter.as_deref(),
                "attributeFilter",
            )?);
        }
        let mut rpc_rules = Vec::new();
        for (i, o) in rm.server_side_rpc.iter().enumerate() {
            let p = format!("requestsMapping.serverSideRpc[{i}]");
            if o.attribute_filter.is_some() {
                ignored.push(format!("{p}.attributeFilter"));
            }
            if o.method_filter.is_none() {
                return Err(ConfigError::new(
                    file,
                    format!("{p}.methodFilter"),
                    "missing",
                ));
            }
            rpc_rules.push(outbound_rule(
                file,
                &p,
                o,
                o.method_filter.as_deref(),
                "methodFilter",
            )?);
        }
        Ok(RestConnector {
            name: name.to_string(),
            host,
            port,
            tls,
            max_body: cfg.server.max_request_body_size.unwrap_or(DEFAULT_MAX_BODY),
            max_connections,
            read_timeout,
            routes: Some(routes),
            outgoing: Arc::new(Outgoing {
                name: name.to_string(),
                client: HttpClient::new(),
                attribute_rules,
                rpc_rules,
            }),
        })
    }
}

async fn serve<IO>(io: IO, server: Arc<Server>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = server.read_timeout;
    let svc = service_fn(move |req| server.clone().handle(req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "HTTP connection ended with an error.");
    }
}

async fn handle_attribute_update(out: &Outgoing, u: AttributeUpdate, stats: &ConnectorCounters) {
    call::send_attribute_update(
        &out.client,
        &out.attribute_rules,
        None,
        &u,
        stats,
        &out.name,
    )
    .await;
}

async fn handle_rpc(out: &Outgoing, rpc: RpcRequest) {
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
        match call::reserved(&params, method == "set", &ClientTls::default()) {
            Ok(s) => {
                reserved = s;
                &reserved
            }
            Err(e) => return responder.err(e),
        }
    } else {
        match out
            .rpc_rules
            .iter()
            .find(|r| r.matches(device.as_deref(), &method))
        {
            Some(r) => &r.spec,
            None => {
                return responder.err(RpcError::NotFound(format!(
                    "method `{method}`: no request is waiting for this device and no serverSideRpc entry matches"
                )))
            }
        }
    };
    let scope = call::rpc_scope(device.as_deref(), &method, id, &params);
    match call::execute(&out.client, spec, None, &scope).await {
        Ok(reply) => responder.ok(normalize_rpc_result(call::rest_rpc_reply(
            &reply,
            spec.response_value.as_ref(),
        ))),
        Err(e) => {
            tracing::warn!(connector = %out.name, device = device.as_deref().unwrap_or(""), method = %method, error = %e, "RPC request failed.");
            responder.err(e.to_rpc())
        }
    }
}

#[async_trait]
impl Connector for RestConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let acceptor = match &self.tls {
            Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(cert, key).map_err(ConnectorError::Other)?,
            )),
            None => None,
        };
        let listener = TcpListener::bind((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                ConnectorError::Connection(format!(
                    "cannot listen on {}:{}: {e}",
                    self.host, self.port
                ))
            })?;
        tracing::info!(connector = %self.name, host = %self.host, port = self.port, https = acceptor.is_some(), "REST server listening.");
        // Outgoing HTTP connections (downlink requests) are sub-tasks of this run.
        self.outgoing.client.attach(cx.spawner());
        // The routes move into the server on the first run; a restarted run reuses them.
        let routes = self.routes.take().unwrap_or_default();
        let mut server = Server::new(
            self.name.clone(),
            routes,
            self.max_body,
            cx.uplink().clone(),
            cx.stats().clone(),
        );
        server.read_timeout = self.read_timeout;
        let server = Arc::new(server);
        let result = self
            .serve_loop(cx, &listener, acceptor, server.clone())
            .await;
        // Keep the routes for a restart after an error.
        if let Ok(s) = Arc::try_unwrap(server) {
            self.routes = Some(s.routes);
        }
        result
    }
}

impl RestConnector {
    async fn serve_loop(
        &mut self,
        cx: &mut ConnectorContext,
        listener: &TcpListener,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        server: Arc<Server>,
    ) -> Result<(), ConnectorError> {
        let cancel = cx.cancellation().clone();
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_DOWNLINK));
        let connections = Arc::new(Semaphore::new(self.max_connections));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let mut downlink_open = true;
        loop {
            // Cancellation first. On cancel, open connections and outgoing downlink requests
            // (sub-tasks of this run) are aborted; held requests get no answer.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        // At the limit: answered 503 at once (plain HTTP, while few such
                        // answers are in progress) or just closed.
                        let Ok(slot) = connections.clone().try_acquire_owned() else {
                            server.over_limit(self.max_connections);
                            if let (None, Ok(p)) = (&acceptor, refusing.clone().try_acquire_owned()) {
                                cx.spawn("refusing a connection", async move {
                                    super::server::refuse(stream).await;
                                    drop(p);
                                    Ok(())
                                });
                            }
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let server = server.clone();
                        match &acceptor {
                            None => {
                                cx.spawn("client connection", async move {
                                    serve(stream, server).await;
                                    drop(slot);
                                    Ok(())
                                });
                            }
                            Some(a) => {
                                let a = a.clone();
                                cx.spawn("client connection", async move {
                                    let _slot = slot;
                                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, a.accept(stream)).await {
                                        Ok(Ok(tls)) => serve(tls, server).await,
                                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed."),
                                        Err(_) => tracing::debug!("TLS handshake timed out."),
                                    }
                                    Ok(())
                                });
                            }
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and similar: wait a little, keep serving.
                        cx.stats().add_errors(1);
                        tracing::warn!(connector = %self.name, error = %e, "Cannot accept a connection.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                dl = cx.recv_downlink(), if downlink_open => {
                    let Some(dl) = dl else {
                        downlink_open = false;
                        continue;
                    };
                    cx.stats().add_downlink(1);
                    let dl = match dl {
                        Downlink::Rpc(rpc) => {
                            let held = rpc.device.as_deref().map(|d| {
                                server.deliver_rpc(d, json!({"id": rpc.id, "method": rpc.method.clone(), "params": rpc.params.clone()}))
                            });
                            match held {
                                Some(Ok(())) => {
                                    rpc.responder.ok(json!({"success": true}));
                                    continue;
                                }
                                _ => Downlink::Rpc(rpc),
                            }
                        }
                        Downlink::AttributeUpdate(u) => {
                            server.deliver_attributes(&u.device, &u.values);
                            Downlink::AttributeUpdate(u)
                        }
                        other => other,
                    };
                    let Ok(permit) = limit.clone().acquire_owned().await else { break };
                    let out = self.outgoing.clone();
                    let stats = cx.stats().clone();
                    cx.spawn("downlink request", async move {
                        let _permit = permit;
                        match dl {
                            Downlink::Rpc(rpc) => handle_rpc(&out, rpc).await,
                            Downlink::AttributeUpdate(u) => handle_attribute_update(&out, u, &stats).await,
                            _ => {}
                        }
                        Ok(())
                    });
                }
            }
        }
        cx.finish_tasks(Duration::ZERO).await;
        Ok(())
    }
}
