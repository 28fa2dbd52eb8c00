//! Supervised connector sub-tasks, through the whole gateway: a sub-task that panics is
//! logged, counted in `task_failures`, and restarts its connector through the backoff, while
//! another connector goes on untouched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value as Json;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{Mosquitto, Received, TbStandIn};
use tbgw::{Gateway, TbOptions};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

/// Each run spawns a `reader` sub-task: in the first run it panics, later it reports the run
/// number as `run` of `flaky-1`.
struct Flaky {
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl Connector for Flaky {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let uplink = cx.uplink().clone();
        cx.spawn("reader", async move {
            if run == 1 {
                panic!("sensor frame truncated");
            }
            let mut d = DeviceData::new("flaky-1", "tester");
            d.push_telemetry(1_700_000_000_000, "run", Value::Int(run as i64));
            uplink.send(d).await.map_err(|_| ConnectorError::Closed)
        });
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

/// Reports an increasing `n` of `steady-1` every 100 ms; counts its runs.
struct Steady {
    runs: Arc<AtomicUsize>,
}

#[async_trait]
impl Connector for Steady {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut n = 0i64;
        loop {
            tokio::select! {
                _ = cx.cancellation().cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            n += 1;
            let mut d = DeviceData::new("steady-1", "tester");
            d.push_telemetry(1_700_000_000_000 + n, "n", Value::Int(n));
            cx.uplink()
                .send(d)
                .await
                .map_err(|_| ConnectorError::Closed)?;
        }
    }
}

/// The largest value of `key` of `device` in one telemetry message.
fn value_in(m: &Received, device: &str, key: &str) -> Option<i64> {
    if m.topic != "v1/gateway/telemetry" {
        return None;
    }
    match m.json.as_ref()?.get(device)? {
        Json::Array(a) => a
            .iter()
            .filter_map(|e| e.get("values")?.get(key)?.as_i64())
            .max(),
        _ => None,
    }
}

/// The largest value of `key` of `device` among the telemetry ThingsBoard received.
fn largest(tb: &TbStandIn, device: &str, key: &str) -> Option<i64> {
    tb.messages()
        .iter()
        .filter_map(|m| value_in(m, device, key))
        .max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sub_task_restarts_its_connector_and_the_other_goes_on() {
    let broker = Mosquitto::start().await.expect("mosquitto starts");
    let tb = TbStandIn::connect(broker.port())
        .await
        .expect("stand-in connects");
    let flaky_runs = Arc::new(AtomicUsize::new(0));
    let steady_runs = Arc::new(AtomicUsize::new(0));
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", broker.port(), "token"))
        .connector(
            "Flaky",
            "test",
            Box::new(Flaky {
                runs: flaky_runs.clone(),
            }),
        )
        .connector(
            "Steady",
            "test",
            Box::new(Steady {
                runs: steady_runs.clone(),
            }),
        )
        .build()
        .expect("gateway builds");
    let flaky = gateway.connector_stats("Flaky").expect("stats");
    let steady = gateway.connector_stats("Steady").expect("stats");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let gateway = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));

    // The second run's reader reports: the panic restarted the connector.
    let restarted = tb
        .wait_for(WAIT, |m| value_in(m, "flaky-1", "run").is_some())
        .await;
    assert!(
        restarted.is_some(),
        "the restarted connector delivered data"
    );
    assert_eq!(largest(&tb, "flaky-1", "run"), Some(2));
    assert_eq!(flaky.task_failures(), 1);
    assert_eq!(flaky.restarts(), 1);
    assert_eq!(flaky_runs.load(Ordering::SeqCst), 2);

    // The other connector was never restarted and keeps delivering.
    let seen = largest(&tb, "steady-1", "n").unwrap_or(0);
    let later = tb
        .wait_for(WAIT, |m| value_in(m, "steady-1", "n").unwrap_or(0) > seen)
        .await;
    assert!(later.is_some(), "the other connector keeps delivering");
    assert_eq!(steady_runs.load(Ordering::SeqCst), 1);
    assert_eq!(steady.restarts(), 0);
    assert_eq!(steady.task_failures(), 0);

    let _ = stop.send(());
    assert!(gateway.await.expect("gateway task").clean);
}
