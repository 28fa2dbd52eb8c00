//! A connector of your own, embedded in your own program.
//!
//! It reports a counter for one device every second and answers the RPC `reset`.
//! Run against a ThingsBoard (or `mosquitto -p 1883` to watch with `mosquitto_sub -t 'v1/#' -v`):
//!
//! ```sh
//! cargo run -p tbgw --example custom_connector -- 127.0.0.1 1883 GATEWAY_TOKEN
//! ```

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError};
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::{Gateway, TbOptions};

struct Counter {
    n: i64,
}

#[async_trait]
impl Connector for Counter {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        cx.uplink()
            .connect_device("counter-1", "counter")
            .await
            .map_err(|_| ConnectorError::Closed)?;
        let cancel = cx.cancellation().clone();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                Some(dl) = cx.recv_downlink() => match dl {
                    Downlink::Rpc(rpc) if rpc.method == "reset" => {
                        self.n = 0;
                        rpc.responder.ok(json!({"count": self.n}));
                    }
                    Downlink::Rpc(rpc) => rpc.responder.err(RpcError::NotFound(rpc.method)),
                    _ => {}
                },
                _ = tick.tick() => {
                    self.n += 1;
                    let mut data = DeviceData::new("counter-1", "counter");
                    data.push_telemetry(now_millis(), "count", Value::Int(self.n));
                    cx.uplink().send(data).await.map_err(|_| ConnectorError::Closed)?;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let host = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1".into());
    let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1883);
    let token = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "GATEWAY_TOKEN".into());
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token(host, port, token))
        .connector("Counter", "counter", Box::new(Counter { n: 0 }))
        .build()?;
    let report = gateway
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    println!("stopped: {report:?}");
    Ok(())
}
