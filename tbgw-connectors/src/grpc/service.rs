//! `TBGatewayProtoService`: upstream's unary `stream` and tbgw's bidirectional `session`, and
//! the server that serves them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::config::GrpcSettings;
use super::downlink;
use super::hub::{GrpcHub, Pop, SessionId, Slot};
use super::pb::tb_gateway_proto_service_server::{
    TbGatewayProtoService, TbGatewayProtoServiceServer,
};
use super::pb::{
    ConnectorDeviceInfo, ConnectorGetConnectedDevicesMsg, ConnectorGetConnectedDevicesResponseMsg,
    FromConnectorMessage, FromServiceMessage, ResponseStatus,
};
use super::uplink;

/// How long an attribute request waits for ThingsBoard before the connector gets an `error`.
pub const ATTRIBUTE_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages buffered towards one `session` stream.
const STREAM_BUFFER: usize = 256;

/// Failure to start the gRPC server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrpcServerError {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The service implementation over a [`GrpcHub`].
#[derive(Debug, Clone)]
pub struct GrpcService {
    hub: Arc<GrpcHub>,
    log_once: Arc<Mutex<tbgw::log_once::LogOnce>>,
}

impl GrpcService {
    /// A service routing to the connectors of `hub`.
    pub fn new(hub: Arc<GrpcHub>) -> Self {
        GrpcService {
            hub,
            log_once: Arc::new(Mutex::new(tbgw::log_once::LogOnce::new(256))),
        }
    }

    fn first(&self, key: &str) -> bool {
        self.log_once
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first(key)
    }

    /// Handles one connector message; returns the direct answer, if any. For the owner of a
    /// slot the caller queues it in the slot (answers keep their order with downlink).
    async fn handle(
        &self,
        session: &SessionId,
        msg: FromConnectorMessage,
    ) -> Option<FromServiceMessage> {
        if let Some(reg) = &msg.register_connector_msg {
            let Some(slot) = self.hub.find(&reg.connector_key) else {
                if self.first(&format!("unknown key {}", reg.connector_key)) {
                    tracing::warn!(
                        "A gRPC connector tried to register with an unknown key; refused."
                    );
                }
                return Some(downlink::registration(ResponseStatus::NotFound, None));
            };
            let previous = slot.take_over(session);
            if previous.is_some() {
                tracing::info!(connector = %slot.name(), "A new gRPC connector process registered; it replaces the previous one.");
            } else {
                tracing::info!(connector = %slot.name(), "gRPC connector registered.");
            }
            self.hub.set_owner(session, &slot, previous);
            return None;
        }
        if msg.unregister_connector_msg.is_some() {
            let status = if self.hub.session_ended(session) {
                ResponseStatus::Success
            } else {
                ResponseStatus::NotFound
            };
            return Some(downlink::unregistration(status));
        }
        let Some(slot) = self.hub.slot_of(session) else {
            return not_registered(msg);
        };
        let is_poll = msg.response.is_some()
            && msg
                == FromConnectorMessage {
                    response: msg.response.clone(),
                    ..Default::default()
                };
        if is_poll {
            return None;
        }
        let Some(link) = slot.wait_link(super::hub::LINK_WAIT).await else {
            return Some(downlink::response(ResponseStatus::Failure, None));
        };
        let mut reply = None;
        let stats = &link.stats;
        if msg.connector_get_connected_devices_msg.is_some() {
            let mut m = downlink::response(
                ResponseStatus::Success,
                Some(FromConnectorMessage {
                    connector_get_connected_devices_msg: Some(
                        ConnectorGetConnectedDevicesMsg::default(),
                    ),
                    ..Default::default()
                }),
            );
            let mut devices: Vec<ConnectorDeviceInfo> = slot
                .device_types()
                .into_iter()
                .map(|(device_name, device_type)| ConnectorDeviceInfo {
                    device_name,
                    device_type,
                })
                .collect();
            devices.sort_by(|a, b| a.device_name.cmp(&b.device_name));
            m.connector_get_connected_devices_response_msg =
                Some(ConnectorGetConnectedDevicesResponseMsg {
                    connector_devices: devices,
                });
            reply = Some(m);
        }
        if let Some(c) = &msg.connect_msg {
            stats.add_messages_received(1);
            let ty = if c.device_type.is_empty() {
                "default"
            } else {
                &c.device_type
            };
            slot.devices_add(&c.device_name, ty);
            let ok = !c.device_name.is_empty()
                && link.uplink.connect_device(&c.device_name, ty).await.is_ok();
            reply = Some(ack(ok, &msg));
        }
        if let Some(d) = &msg.disconnect_msg {
            stats.add_messages_received(1);
            let ok = !d.device_name.is_empty()
                && link.uplink.disconnect_device(&d.device_name).await.is_ok();
            reply = Some(ack(ok, &msg));
        }
        let mut errors = Vec::new();
        if let Some(t) = &msg.gateway_telemetry_msg {
            stats.add_messages_received(1);
            let types = slot.device_types();
            for d in uplink::telemetry(t, &types, &mut errors) {
                if link.uplink.send(d).await.is_err() {
                    return Some(downlink::response(ResponseStatus::Failure, None));
                }
            }
        }
        if let Some(a) = &msg.gateway_attributes_msg {
            stats.add_messages_received(1);
            let types = slot.device_types();
            for d in uplink::attributes(a, &types, &mut errors) {
                if link.uplink.send(d).await.is_err() {
                    return Some(downlink::response(ResponseStatus::Failure, None));
                }
            }
        }
        if !errors.is_empty() {
            stats.add_convert_errors(errors.len() as u64);
            for e in &errors {
                if self.first(&format!("{}:{e}", slot.name())) {
                    tracing::warn!(connector = %slot.name(), error = %e, "gRPC connector sent a value that cannot be converted; skipped.");
                }
            }
        }
        if msg.gateway_claim_msg.is_some() {
            stats.add_messages_received(1);
            if self.first(&format!("{}:claim", slot.name())) {
                tracing::warn!(connector = %slot.name(), "Device claiming is not supported by tbgw; the claim is refused.");
            }
            reply = Some(downlink::response(
                ResponseStatus::Failure,
                Some(msg.clone()),
            ));
        }
        if let Some(r) = &msg.gateway_rpc_response_msg {
            stats.add_messages_received(1);
            if !slot.answer_rpc(&r.device_name, r.id, downlink::rpc_answer(&r.data)) {
                tracing::debug!(connector = %slot.name(), device = %r.device_name, id = r.id, "RPC answer for no waiting RPC; dropped.");
            }
        }
        if let Some(r) = msg.gateway_attribute_request_msg.clone() {
            stats.add_messages_received(1);
            let uplink = link.uplink.clone();
            let slot = slot.clone();
            tokio::spawn(async move {
                let answer = uplink
                    .request_attributes_response(
                        r.device_name.clone(),
                        r.client,
                        r.keys.clone(),
                        ATTRIBUTE_REQUEST_TIMEOUT,
                    )
                    .await;
                let msg = match &answer {
                    Ok(v) => {
                        downlink::attribute_response(&r.device_name, r.id, r.client, &r.keys, Ok(v))
                    }
                    Err(e) => downlink::attribute_response(
                        &r.device_name,
                        r.id,
                        r.client,
                        &r.keys,
                        Err(e.to_string()),
                    ),
                };
                slot.push_downlink(msg);
            });
        }
        reply
    }

    /// Queues the answer for the owner, or returns it for a session that owns nothing.
    fn route(&self, session: &SessionId, reply: Option<FromServiceMessage>) -> Route {
        match self.hub.slot_of(session) {
            Some(slot) => {
                if let Some(r) = reply {
                    slot.push_reply(session, r);
                }
                Route::Owner(slot)
            }
            None => match reply {
                Some(r) => Route::Direct(Box::new(r)),
                None => Route::Nothing,
            },
        }
    }
}

/// Where the answer to a session's message goes.
enum Route {
    /// Queued in the slot the session owns.
    Owner(Arc<Slot>),
    /// Straight back: the session owns no slot.
    Direct(Box<FromServiceMessage>),
    /// No answer.
    Nothing,
}

/// The answer to anything but a registration from a session that is not registered
/// (upstream's `FAILURE`, with the message it answers, data left out).
fn not_registered(mut msg: FromConnectorMessage) -> Option<FromServiceMessage> {
    if msg.response.is_some()
        && msg.gateway_telemetry_msg.is_none()
        && msg.gateway_attributes_msg.is_none()
    {
        // A poll from a session that is not registered: nothing to hand out.
        return None;
    }
    msg.gateway_telemetry_msg = None;
    msg.gateway_attributes_msg = None;
    Some(downlink::response(ResponseStatus::Failure, Some(msg)))
}

fn ack(ok: bool, msg: &FromConnectorMessage) -> FromServiceMessage {
    let status = if ok {
        ResponseStatus::Success
    } else {
        ResponseStatus::Failure
    };
    let mut answered = msg.clone();
    answered.gateway_telemetry_msg = None;
    answered.gateway_attributes_msg = None;
    downlink::response(status, Some(answered))
}

/// Sends what the slot has for `session` into its stream until the client goes away or
/// another session takes the slot over (then the client is told it is unregistered).
async fn pump(
    slot: Arc<Slot>,
    session: SessionId,
    tx: mpsc::Sender<Result<FromServiceMessage, Status>>,
) {
    loop {
        let notified = slot.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Ok(permit) = tx.reserve().await else {
            return;
        };
        match slot.pop_for(&session) {
            Pop::Msg(m) => {
                let last = m.unregister_connector_msg.is_some();
                permit.send(Ok(*m));
                if last {
                    return;
                }
            }
            Pop::NotOwner => {
                permit.send(Ok(downlink::unregistered()));
                return;
            }
            Pop::Empty => {
                drop(permit);
                tokio::select! {
                    _ = notified => {}
                    _ = tx.closed() => return,
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TbGatewayProtoService for GrpcService {
    async fn stream(
        &self,
        request: Request<FromConnectorMessage>,
    ) -> Result<Response<FromServiceMessage>, Status> {
        let id = request
            .metadata()
            .get("identifier")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let session = SessionId::Unary(id);
        let reply = self.handle(&session, request.into_inner()).await;
        let out = match self.route(&session, reply) {
            Route::Owner(slot) => match slot.pop_for(&session) {
                Pop::Msg(m) => *m,
                Pop::Empty | Pop::NotOwner => downlink::idle(),
            },
            Route::Nothing => downlink::idle(),
            Route::Direct(direct) => *direct,
        };
        Ok(Response::new(out))
    }

    type sessionStream = ReceiverStream<Result<FromServiceMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<FromConnectorMessage>>,
    ) -> Result<Response<Self::sessionStream>, Status> {
        let mut input = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let session = self.hub.new_stream_id();
        let this = self.clone();
        tokio::spawn(async move {
            let mut pumping: Option<(Arc<Slot>, tokio::task::JoinHandle<()>)> = None;
            while let Ok(Some(msg)) = input.message().await {
                let reply = this.handle(&session, msg).await;
                match this.route(&session, reply) {
                    Route::Owner(slot) => {
                        let running = pumping
                            .as_ref()
                            .is_some_and(|(s, h)| Arc::ptr_eq(s, &slot) && !h.is_finished());
                        if !running {
                            if let Some((_, h)) = pumping.take() {
                                h.abort();
                            }
                            let h = tokio::spawn(pump(slot.clone(), session.clone(), tx.clone()));
                            pumping = Some((slot, h));
                        }
                    }
                    Route::Nothing => {}
                    Route::Direct(direct) => {
                        if tx.send(Ok(*direct)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // The client closed its side or went away: it no longer owns its slot (downlink
            // waits there for the next registration). A pump still sending is left to finish.
            this.hub.session_ended(&session);
            if let Some((slot, h)) = pumping {
                drop(slot);
                if tx.is_closed() {
                    h.abort();
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The bound gRPC server, ready to run.
#[derive(Debug)]
pub struct GrpcServer {
    listener: tokio::net::TcpListener,
    settings: GrpcSettings,
    hub: Arc<GrpcHub>,
}

impl GrpcServer {
    /// Binds `serverHost:serverPort` of `settings` (port 0: any free port).
    pub async fn bind(settings: &GrpcSettings, hub: Arc<GrpcHub>) -> Result<Self, GrpcServerError> {
        let port = settings.server_port;
        let listener = match &settings.server_host {
            Some(h) => {
                let addr = format!("{h}:{port}");
                let addr = if h.contains(':') && !h.starts_with('[') {
                    format!("[{h}]:{port}")
                } else {
                    addr
                };
                tokio::net::TcpListener::bind(&addr)
                    .await
                    .map_err(|source| GrpcServerError::Bind { addr, source })?
            }
            None => match tokio::net::TcpListener::bind(("::", port)).await {
                Ok(l) => l,
                Err(_) => tokio::net::TcpListener::bind(("0.0.0.0", port))
                    .await
                    .map_err(|source| GrpcServerError::Bind {
                        addr: format!("0.0.0.0:{port}"),
                        source,
                    })?,
            },
        };
        Ok(GrpcServer {
            listener,
            settings: settings.clone(),
            hub,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), tonic::transport::Error> {
        let addr = self.listener.local_addr().ok();
        tracing::info!(addr = ?addr, "gRPC connector API listening.");
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .http2_keepalive_interval(self.settings.keep_alive())
            .http2_keepalive_timeout(Some(self.settings.keep_alive_timeout()))
            .serve_with_incoming_shutdown(
                TbGatewayProtoServiceServer::new(GrpcService::new(self.hub)),
                incoming,
                async move { shutdown.cancelled().await },
            )
            .await
    }
}
