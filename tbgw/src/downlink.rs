//! Requests from ThingsBoard to a connector: server-side RPC and shared-attribute updates.
//!
//! The gateway routes each request to the connector that owns the device (or, for a connector
//! RPC such as `modbus_get` sent to the gateway device, to every connector of that type). An RPC
//! carries an [`RpcResponder`]; the connector answers through it, and the gateway publishes the
//! answer on `v1/gateway/rpc` (or `v1/devices/me/rpc/response/<id>`). The timeout lives in the
//! gateway: a connector that never answers produces a `408` reply, one that drops the responder
//! produces a `500` reply.

use serde_json::{json, Value as Json};
use tokio::sync::oneshot;

/// A downlink request for a connector.
#[derive(Debug)]
#[non_exhaustive]
pub enum Downlink {
    /// Shared attributes of a device changed in ThingsBoard.
    AttributeUpdate(AttributeUpdate),
    /// A server-side RPC for a device, or a connector RPC (`device` is `None`).
    Rpc(RpcRequest),
}

/// Shared attributes of a device changed in ThingsBoard.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeUpdate {
    /// The device, by the name the connector reported.
    pub device: String,
    /// The changed attributes.
    pub values: serde_json::Map<String, Json>,
}

/// A server-side RPC.
#[derive(Debug)]
pub struct RpcRequest {
    /// The target device; `None` for a connector RPC sent to the gateway device.
    pub device: Option<String>,
    /// ThingsBoard's request id.
    pub id: i64,
    /// The method. For a connector RPC, the part after `<type>_`.
    pub method: String,
    /// The parameters.
    pub params: Json,
    /// Where the answer goes.
    pub responder: RpcResponder,
}

/// Why an RPC failed. The variant decides the `code` in the reply, so ThingsBoard can tell an
/// unreachable device from one that answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcError {
    /// The request was malformed (unknown method, bad params): code 400.
    BadRequest(String),
    /// No such device or method: code 404.
    NotFound(String),
    /// No answer in time: code 408.
    Timeout(String),
    /// The device answered with an error (e.g. a Modbus exception): code 500.
    Device(String),
    /// The device could not be reached: code 503.
    Unreachable(String),
}

impl RpcError {
    /// The `code` sent to ThingsBoard.
    pub fn code(&self) -> u16 {
        match self {
            RpcError::BadRequest(_) => 400,
            RpcError::NotFound(_) => 404,
            RpcError::Timeout(_) => 408,
            RpcError::Device(_) => 500,
            RpcError::Unreachable(_) => 503,
        }
    }

    /// The reply payload: `{"error": text, "code": n}`.
    pub fn to_json(&self) -> Json {
        let text = match self {
            RpcError::BadRequest(t)
            | RpcError::NotFound(t)
            | RpcError::Timeout(t)
            | RpcError::Device(t)
            | RpcError::Unreachable(t) => t,
        };
        json!({ "error": text, "code": self.code() })
    }
}

/// Normalises a successful RPC result the way ThingsBoard's gateway does: an object that already
/// carries `success`, `error`, `response` or `result` is sent as is; any other value is wrapped
/// as `{"result": value}`; `null` becomes `{"success": true}`.
pub fn normalize_rpc_result(v: Json) -> Json {
    match v {
        Json::Null => json!({ "success": true }),
        Json::Object(ref m)
            if ["success", "error", "response", "result"]
                .iter()
                .any(|k| m.contains_key(*k)) =>
        {
            v
        }
        other => json!({ "result": other }),
    }
}

/// Answers one RPC. Dropping it without answering sends an error reply.
#[derive(Debug)]
pub struct RpcResponder {
    tx: Option<oneshot::Sender<Answer>>,
}

/// What a connector answered: the result and whether it goes to ThingsBoard unchanged.
type Answer = (Result<Json, RpcError>, bool);

/// The receiving end of an [`RpcResponder`].
///
/// Awaiting it yields the connector's answer (`Err` when the responder was dropped without one).
/// [`RpcAnswer::reply`] yields the body the gateway publishes instead.
#[derive(Debug)]
pub struct RpcAnswer {
    rx: oneshot::Receiver<Answer>,
}

impl RpcAnswer {
    /// The reply body as ThingsBoard receives it: an error as `{"error": …, "code": n}`, a
    /// result normalised by [`normalize_rpc_result`] unless the connector answered with
    /// [`RpcResponder::verbatim`]. `Err` when the responder was dropped without an answer.
    pub async fn reply(self) -> Result<Json, oneshot::error::RecvError> {
        let (r, verbatim) = self.rx.await?;
        Ok(match r {
            Ok(v) if verbatim => v,
            Ok(v) => normalize_rpc_result(v),
            Err(e) => e.to_json(),
        })
    }
}

impl std::future::Future for RpcAnswer {
    type Output = Result<Result<Json, RpcError>, oneshot::error::RecvError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map(|(a, _)| a))
    }
}

impl RpcResponder {
    /// A responder and the receiver of its answer.
    pub fn new() -> (Self, RpcAnswer) {
        let (tx, rx) = oneshot::channel();
        (RpcResponder { tx: Some(tx) }, RpcAnswer { rx })
    }

    /// Answers with a result (normalised by [`normalize_rpc_result`]).
    pub fn ok(self, result: Json) {
        self.answer(Ok(result), false);
    }

    /// Answers with a body that ThingsBoard receives unchanged, not normalised: what the
    /// Python gateway does with a device's own answer (e.g. an MQTT device's reply payload).
    pub fn verbatim(self, body: Json) {
        self.answer(Ok(body), true);
    }

    /// Answers with an error.
    pub fn err(self, error: RpcError) {
        self.answer(Err(error), false);
    }

    fn answer(mut self, r: Result<Json, RpcError>, verbatim: bool) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((r, verbatim));
        }
    }

    /// Answers with a result or an error.
    pub fn send(self, r: Result<Json, RpcError>) {
        match r {
            Ok(v) => self.ok(v),
            Err(e) => self.err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_normalised_like_upstream() {
        assert_eq!(normalize_rpc_result(Json::Null), json!({"success": true}));
        assert_eq!(normalize_rpc_result(json!(5)), json!({"result": 5}));
        assert_eq!(
            normalize_rpc_result(json!({"success": false})),
            json!({"success": false})
        );
        assert_eq!(
            normalize_rpc_result(json!({"a": 1})),
            json!({"result": {"a": 1}})
        );
    }

    #[tokio::test]
    async fn verbatim_answers_are_not_normalised() {
        let (r, a) = RpcResponder::new();
        r.verbatim(json!({"relay": true}));
        assert_eq!(a.reply().await.unwrap(), json!({"relay": true}));
        let (r, a) = RpcResponder::new();
        r.ok(json!({"relay": true}));
        assert_eq!(a.reply().await.unwrap(), json!({"result": {"relay": true}}));
    }

    #[test]
    fn errors_carry_distinct_codes() {
        assert_eq!(RpcError::Unreachable("x".into()).to_json()["code"], 503);
        assert_eq!(RpcError::Device("x".into()).to_json()["code"], 500);
    }
}
