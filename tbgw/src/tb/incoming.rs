//! Messages from ThingsBoard: RPCs, attribute updates and responses, session limits.
//!
//! Every message is parsed defensively: a malformed one is logged, counted in
//! `downlink_errors` and dropped, and never ends the session.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::{topic, Control, Session, TbClient};
use crate::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};

impl TbClient {
    pub(super) fn on_publish(
        &mut self,
        s: &mut Session,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), String> {
        let json: Json = match serde_json::from_slice(payload) {
            Ok(j) => j,
            Err(e) => {
                self.shared.stats.add_downlink_errors(1);
                tracing::warn!(topic, error = %e, "Ignoring a message from ThingsBoard that is not valid JSON.");
                return Ok(());
            }
        };
        match topic {
            topic::RPC => self.on_device_rpc(json),
            topic::ATTRIBUTES => self.on_attribute_update(json),
            topic::ATTRIBUTES_RESPONSE => {
                let id = json.get("id").and_then(Json::as_i64);
                match id.and_then(|id| s.pending_attr.remove(&id)) {
                    Some(tx) => {
                        let _ = tx.send(json);
                    }
                    None => tracing::debug!(?id, "Attribute response with no pending request."),
                }
            }
            topic::DISCONNECT => {
                if json.get("reason").and_then(Json::as_i64) == Some(150) {
                    // A rate limit was hit: pause device data until the windows refill.
                    self.shared.stats.add_server_throttled(1);
                    self.limits.server_throttled(tokio::time::Instant::now());
                    tracing::warn!(message = %json, "ThingsBoard reports a rate limit (reason 150); device data paused.");
                } else if json.get("reason").is_some() {
                    tracing::warn!(message = %json, "ThingsBoard disconnected a device.");
                } else {
                    // Our own disconnect notice echoed by a plain broker.
                    self.shared.stats.add_echoes_ignored(1);
                }
            }
            topic::ME_ATTRIBUTES => {
                tracing::debug!(attributes = %json, "Shared attributes of the gateway device changed.");
                // The gateway's own client attributes echoed by a plain broker carry no shared
                // key the services act on; they ignore unknown keys and unchanged values.
                self.to_service(crate::messages::ServiceEvent::SharedAttributes(json));
            }
            t if t.starts_with(topic::ME_RPC_RESPONSE) => {
                let id: Option<u64> = t[topic::ME_RPC_RESPONSE.len()..].parse().ok();
                if id == Some(s.limits_id) && !s.ready {
                    self.apply_session_limits(s, &json);
                    self.become_ready(s)?;
                }
            }
            t if t.starts_with(topic::ME_RPC_REQUEST) => {
                let id: Option<i64> = t[topic::ME_RPC_REQUEST.len()..].parse().ok();
                self.on_gateway_rpc(id, json);
            }
            t if t.starts_with(topic::ME_ATTRIBUTES_RESPONSE) => {
                tracing::debug!(response = %json, "Attribute response for the gateway device.");
                self.to_service(crate::messages::ServiceEvent::AttributesResponse(json));
            }
            _ => tracing::debug!(topic, "Ignoring a message on an unexpected topic."),
        }
        Ok(())
    }

    fn apply_session_limits(&mut self, s: &mut Session, limits: &Json) {
        if let Some(max) = limits.get("maxPayloadSize").and_then(Json::as_u64) {
            if max >= 256 {
                s.payload_limit = s.payload_limit.min(max as usize);
            }
        }
        if let Some(n) = limits.get("maxInflightMessages").and_then(Json::as_u64) {
            if n > 0 {
                s.window = s.window.min(n as usize);
            }
        }
        if limits.get("rateLimits").is_some() || limits.get("gatewayRateLimits").is_some() {
            self.limits.apply_session(limits);
        }
        tracing::info!(
            payload_limit = s.payload_limit,
            inflight = s.window,
            "ThingsBoard session limits applied."
        );
    }

    fn on_attribute_update(&mut self, json: Json) {
        // ThingsBoard sends {"device": name, "data": {...}}. Anything else (for instance the
        // gateway's own client attributes echoed by a plain broker) is not an update.
        let (Some(device), Some(data)) = (
            json.get("device").and_then(Json::as_str),
            json.get("data").and_then(Json::as_object),
        ) else {
            self.shared.stats.add_echoes_ignored(1);
            return;
        };
        let device = self.shared.registry().original_name(device).to_string();
        let device = device.as_str();
        let Some(route) = self.route_for(device) else {
            self.shared.stats.add_downlink_errors(1);
            tracing::warn!(
                device,
                "Attribute update for a device no connector owns; dropped."
            );
            return;
        };
        let msg = Downlink::AttributeUpdate(AttributeUpdate {
            device: device.to_string(),
            values: data.clone(),
        });
        if route.try_send(msg).is_err() {
            self.shared.stats.add_downlink_errors(1);
            tracing::warn!(device, "The owning connector is not taking attribute updates (busy or stopped); update dropped.");
        }
    }

    fn on_device_rpc(&mut self, json: Json) {
        // ThingsBoard sends {"device": d, "data": {"id", "method", "params"}}; the gateway's own
        // replies have {"device", "id", "data"} with no method and are ignored.
        let device = json.get("device").and_then(Json::as_str);
        let data = json.get("data");
        let method = data.and_then(|d| d.get("method")).and_then(Json::as_str);
        let id = data.and_then(|d| d.get("id")).and_then(Json::as_i64);
        let (Some(device), Some(method), Some(id), Some(data)) = (device, method, id, data) else {
            if json.get("id").is_some() && json.get("data").is_some() {
                self.shared.stats.add_echoes_ignored(1);
            } else {
                self.shared.stats.add_downlink_errors(1);
                tracing::warn!(message = %json, "Ignoring a malformed RPC from ThingsBoard.");
            }
            return;
        };
        let params = data.get("params").cloned().unwrap_or(Json::Null);
        let timeout = rpc_timeout(&params, data, self.shared.rpc_timeout);
        let device = self.shared.registry().original_name(device).to_string();
        let Some(route) = self.route_for(&device) else {
            self.reply(
                Some(device.clone()),
                id,
                RpcError::NotFound(format!("device `{device}` is not known to the gateway"))
                    .to_json(),
            );
            return;
        };
        let (responder, rx) = RpcResponder::new();
        let req = Downlink::Rpc(RpcRequest {
            device: Some(device.clone()),
            id,
            method: method.to_string(),
            params,
            responder,
        });
        if route.try_send(req).is_err() {
            self.reply(
                Some(device),
                id,
                RpcError::Unreachable("the connector is busy or stopped".into()).to_json(),
            );
            return;
        }
        self.await_reply(Some(device), id, timeout, rx);
    }

    fn on_gateway_rpc(&mut self, id: Option<i64>, json: Json) {
        let Some(method) = json.get("method").and_then(Json::as_str) else {
            self.shared.stats.add_downlink_errors(1);
            return;
        };
        if method == "getSessionLimits" {
            // Our own client RPC, echoed by a plain broker.
            self.shared.stats.add_echoes_ignored(1);
            return;
        }
        let Some(id) = id else {
            self.shared.stats.add_downlink_errors(1);
            return;
        };
        let params = json.get("params").cloned().unwrap_or(Json::Null);
        let method = method.strip_prefix("gateway_").map_or(method, |m| m);
        if method == "ping" {
            self.reply(None, id, json!({"code": 200, "resp": "pong"}));
            return;
        }
        if crate::messages::SERVICE_METHODS.contains(&method) && self.shared.service.is_some() {
            self.to_service(crate::messages::ServiceEvent::Rpc {
                id,
                method: method.to_string(),
                params,
            });
            return;
        }
        // Connector RPC: `<connectorType>_<method>` goes to the first connector of that type.
        let target = method.split_once('_').and_then(|(ty, m)| {
            self.shared
                .routes
                .of_type(ty)
                .map(|(_, tx)| (tx, m.to_string()))
        });
        let Some((tx, m)) = target else {
            self.reply(None, id, json!({"error": "Method not found", "code": 404}));
            return;
        };
        let timeout = rpc_timeout(&params, &json, self.shared.rpc_timeout);
        let (responder, rx) = RpcResponder::new();
        let req = Downlink::Rpc(RpcRequest {
            device: None,
            id,
            method: m,
            params,
            responder,
        });
        if tx.try_send(req).is_err() {
            self.reply(
                None,
                id,
                RpcError::Unreachable("the connector is busy or stopped".into()).to_json(),
            );
            return;
        }
        self.await_reply(None, id, timeout, rx);
    }

    fn route_for(&self, device: &str) -> Option<tokio::sync::mpsc::Sender<Downlink>> {
        let owner: Option<Arc<str>> = self.shared.registry().owner(device).cloned();
        owner.and_then(|o| self.shared.routes.get(&o).map(|(_, tx)| tx))
    }

    fn reply(&self, device: Option<String>, id: i64, data: Json) {
        if self
            .control_tx
            .try_send(Control::RpcReply { device, id, data })
            .is_err()
        {
            self.shared.stats.queue_full("control", "device RPC reply");
        }
    }

    /// Waits for the connector's answer in a task of its own, so the session loop never blocks.
    fn await_reply(
        &self,
        device: Option<String>,
        id: i64,
        timeout: Duration,
        rx: crate::downlink::RpcAnswer,
    ) {
        let control = self.control_tx.clone();
        let stats = self.shared.stats.clone();
        self.tasks.spawn(async move {
            let data = match tokio::time::timeout(timeout, rx.reply()).await {
                Ok(Ok(v)) => v,
                Ok(Err(_)) => {
                    RpcError::Device("the connector dropped the request".into()).to_json()
                }
                Err(_) => {
                    stats.add_rpc_timeouts(1);
                    RpcError::Timeout(format!("no answer within {} ms", timeout.as_millis()))
                        .to_json()
                }
            };
            let _ = control.send(Control::RpcReply { device, id, data }).await;
        });
    }
}

/// The RPC's own timeout (`params.timeout` or `timeout`, in ms) or the default.
fn rpc_timeout(params: &Json, data: &Json, default: Duration) -> Duration {
    params
        .get("timeout")
        .or_else(|| data.get("timeout"))
        .and_then(Json::as_u64)
        .filter(|t| *t > 0)
        .map(Duration::from_millis)
        .unwrap_or(default)
}
