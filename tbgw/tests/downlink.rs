//! The gateway against a real broker (mosquitto) and a ThingsBoard stand-in: RPCs and
//! attribute updates reach the connector that owns the device, replies carry the request id,
//! and the gateway copes with a ThingsBoard that never answers `getSessionLimits`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(10);

/// A connector that owns `dev-1`: sends one reading, answers `echo` with its params, never
/// answers `slow`, reports `unreachable` as an unreachable device, and forwards attribute
/// updates to the test.
struct TestConnector {
    updates: mpsc::UnboundedSender<serde_json::Value>,
    held: Vec<tbgw::downlink::RpcResponder>,
    panics_left: Arc<AtomicUsize>,
}

#[async_trait]
impl Connector for TestConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        if self.panics_left.load(Ordering::SeqCst) > 0 {
            self.panics_left.fetch_sub(1, Ordering::SeqCst);
            panic!("a connector bug");
        }
        cx.uplink()
            .connect_device("dev-1", "tester")
            .await
            .map_err(|_| ConnectorError::Closed)?;
        let mut d = DeviceData::new("dev-1", "tester");
        d.push_telemetry(1_700_000_000_000, "v", Value::Int(1));
        cx.uplink()
            .send(d)
            .await
            .map_err(|_| ConnectorError::Closed)?;
        let cancel = cx.cancellation().clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                dl = cx.recv_downlink() => match dl {
                    Some(Downlink::Rpc(rpc)) => match rpc.method.as_str() {
                        "echo" => rpc.responder.ok(rpc.params),
                        "slow" => self.held.push(rpc.responder),
                        "unreachable" => rpc.responder.err(RpcError::Unreachable("no route to device".into())),
                        other => rpc.responder.err(RpcError::NotFound(format!("unknown method {other}"))),
                    },
                    Some(Downlink::AttributeUpdate(u)) => {
                        let _ = self.updates.send(json!({"device": u.device, "values": u.values}));
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }
}

struct Setup {
    _broker: Mosquitto,
    tb: TbStandIn,
    updates: mpsc::UnboundedReceiver<serde_json::Value>,
    stop: oneshot::Sender<()>,
    gateway: tokio::task::JoinHandle<tbgw::ShutdownReport>,
}

async fn setup(silent: bool, panics: usize) -> Setup {
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = if silent {
        TbStandIn::connect_silent(broker.port()).await
    } else {
        TbStandIn::connect(broker.port()).await
    }
    .expect("stand-in connects");
    let (utx, urx) = mpsc::unbounded_channel();
    let mut opts = TbOptions::access_token("127.0.0.1", broker.port(), "token");
    opts.session_limits_timeout = Duration::from_millis(500);
    let gateway = Gateway::builder()
        .thingsboard(opts)
        .connector(
            "Test",
            "test",
            Box::new(TestConnector {
                updates: utx,
                held: Vec::new(),
                panics_left: Arc::new(AtomicUsize::new(panics)),
            }),
        )
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let gateway = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    Setup {
        _broker: broker,
        tb,
        updates: urx,
        stop,
        gateway,
    }
}

#[tokio::test]
async fn rpc_and_attribute_updates_reach_the_owning_connector() {
    let mut s = setup(false, 0).await;
    let connect =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/gateway/connect")
            .await
            .expect("device announced");
    assert_eq!(
        connect.json,
        Some(json!({"device": "dev-1", "type": "tester"}))
    );
    let tele =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/gateway/telemetry")
            .await
            .expect("telemetry");
    assert_eq!(
        tele.json,
        Some(json!({"dev-1": [{"ts": 1_700_000_000_000i64, "values": {"v": 1}}]}))
    );

    // Two-way RPC: the reply carries the same id and the connector's result.
    s.tb.send_rpc("dev-1", 42, "echo", json!({"x": 1}))
        .await
        .unwrap();
    let reply =
        s.tb.wait_for(WAIT, |m| {
            m.topic == "v1/gateway/rpc" && m.get("id") == Some(&json!(42))
        })
        .await
        .expect("rpc reply");
    assert_eq!(
        reply.json,
        Some(json!({"device": "dev-1", "id": 42, "data": {"result": {"x": 1}}}))
    );

    // Attribute update.
    s.tb.send_attribute_update("dev-1", json!({"relay": true}))
        .await
        .unwrap();
    let u = tokio::time::timeout(WAIT, s.updates.recv())
        .await
        .expect("update in time")
        .expect("update");
    assert_eq!(u, json!({"device": "dev-1", "values": {"relay": true}}));

    // Unreachable device vs. unknown device vs. no answer in time: distinct codes.
    s.tb.send_rpc("dev-1", 43, "unreachable", json!({}))
        .await
        .unwrap();
    s.tb.send_rpc("nobody", 44, "echo", json!({}))
        .await
        .unwrap();
    s.tb.send_rpc("dev-1", 45, "slow", json!({"timeout": 300}))
        .await
        .unwrap();
    for (id, code) in [(43, 503), (44, 404), (45, 408)] {
        let r =
            s.tb.wait_for(WAIT, |m| {
                m.topic == "v1/gateway/rpc" && m.get("id") == Some(&json!(id))
            })
            .await
            .unwrap_or_else(|| panic!("reply to {id}"));
        assert_eq!(
            r.json.as_ref().unwrap()["data"]["code"],
            json!(code),
            "reply {id}: {:?}",
            r.json
        );
    }

    // The gateway device itself answers ping; unknown methods get 404.
    s.tb.send_gateway_rpc(7, "gateway_ping", json!({}))
        .await
        .unwrap();
    s.tb.send_gateway_rpc(8, "no_such_method", json!({}))
        .await
        .unwrap();
    let ping =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/devices/me/rpc/response/7")
            .await
            .expect("ping reply");
    assert_eq!(ping.json, Some(json!({"code": 200, "resp": "pong"})));
    let nf =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/devices/me/rpc/response/8")
            .await
            .expect("404 reply");
    assert_eq!(nf.json.unwrap()["code"], json!(404));

    // Connector RPC `<type>_<method>` goes to the connector of that type.
    s.tb.send_gateway_rpc(9, "test_echo", json!({"k": "v"}))
        .await
        .unwrap();
    let cr =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/devices/me/rpc/response/9")
            .await
            .expect("connector rpc reply");
    assert_eq!(cr.json, Some(json!({"result": {"k": "v"}})));

    let _ = s.stop.send(());
    let report = s.gateway.await.unwrap();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.undelivered, 0);
}

#[tokio::test]
async fn a_thingsboard_that_never_answers_session_limits_does_not_stall_the_gateway() {
    let s = setup(true, 0).await;
    let tele =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/gateway/telemetry")
            .await;
    assert!(
        tele.is_some(),
        "data flows after the session-limits timeout"
    );
    let _ = s.stop.send(());
    assert!(s.gateway.await.unwrap().clean);
}

#[tokio::test]
async fn a_panicking_connector_is_restarted_and_others_go_on() {
    let s = setup(false, 1).await;
    // First run panics; the supervisor restarts it after ~1 s and the second run works.
    let tele =
        s.tb.wait_for(WAIT, |m| m.topic == "v1/gateway/telemetry")
            .await;
    assert!(tele.is_some(), "the restarted connector delivered data");
    let _ = s.stop.send(());
    assert!(s.gateway.await.unwrap().clean);
}
