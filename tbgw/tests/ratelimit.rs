//! Rate limits against mosquitto and the ThingsBoard stand-in: the limits ThingsBoard
//! announces in `getSessionLimits` pace device data without losing any, each publish fits the
//! datapoint window, and a reason-150 disconnect from ThingsBoard pauses data without loss.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value as Json};
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{default_session_limits, Mosquitto, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tokio::sync::oneshot;

/// Sends `n` records of two datapoints each (`seq`, `x`) as fast as the gateway takes them.
struct Burst(i64);

#[async_trait]
impl Connector for Burst {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        for i in 0..self.0 {
            let mut d = DeviceData::new(format!("dev-{}", i % 3), "burst");
            d.push_telemetry(1_700_000_000_000 + i, "seq", Value::Int(i));
            d.push_telemetry(1_700_000_000_000 + i, "x", Value::Int(1));
            cx.uplink()
                .send(d)
                .await
                .map_err(|_| ConnectorError::Closed)?;
        }
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

fn seqs(tb: &TbStandIn) -> (HashSet<i64>, usize) {
    let mut seen = HashSet::new();
    let mut max_dp = 0;
    for m in tb.messages_on("v1/gateway/telemetry") {
        let Some(Json::Object(devs)) = m.json else {
            continue;
        };
        let mut dp = 0;
        for entries in devs.values() {
            for e in entries.as_array().into_iter().flatten() {
                if let Some(v) = e["values"].as_object() {
                    dp += v.len();
                    if let Some(s) = v.get("seq").and_then(Json::as_i64) {
                        seen.insert(s);
                    }
                }
            }
        }
        max_dp = max_dp.max(dp);
    }
    (seen, max_dp)
}

#[tokio::test]
async fn session_rate_limits_pace_device_data_and_reason_150_pauses_it_without_loss() {
    let broker = Mosquitto::start().await.expect("mosquitto");
    let tb = TbStandIn::connect(broker.port()).await.expect("stand-in");
    let mut limits = default_session_limits();
    limits["gatewayRateLimits"] = json!({
        "messages": "0:0,",
        "telemetryMessages": "20:1",
        "telemetryDataPoints": "100:1"
    });
    tb.set_session_limits(Some(limits));
    let mut opts = TbOptions::access_token("127.0.0.1", broker.port(), "gw");
    opts.session_limits_timeout = Duration::from_secs(5);
    let n = 300;
    let gw = Gateway::builder()
        .thingsboard(opts)
        .connector("Burst", "burst", Box::new(Burst(n)))
        .build()
        .expect("builds");
    let stats = gw.stats();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(gw.run(async move {
        let _ = stop_rx.await;
    }));

    // Part way through, ThingsBoard says a device hit its limit.
    tb.wait_for(Duration::from_secs(20), |m| {
        m.topic == "v1/gateway/telemetry"
    })
    .await
    .expect("first data");
    tb.publish_raw(
        "v1/gateway/disconnect",
        json!({"device": "dev-0", "reason": 150}).to_string(),
    )
    .await
    .expect("publish");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (seen, _) = seqs(&tb);
        if seen.len() as i64 == n || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (seen, max_dp) = seqs(&tb);
    assert_eq!(seen.len() as i64, n, "every record arrives");
    // 80 % of the 100-datapoint window: no publish carries more.
    assert!(max_dp <= 80, "largest publish carried {max_dp} datapoints");
    assert!(stats.rate_limited() > 0, "data waited for the limit");
    assert!(stats.server_throttled() >= 1, "reason 150 seen");
    let _ = stop.send(());
    let report = task.await.expect("joins");
    assert_eq!(report.undelivered, 0);
}
