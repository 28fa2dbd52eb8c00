//! 10,000 devices appearing at once: one connector sends the first reading of 10,000 new
//! devices, one message each, through the whole gateway (device registry, memory storage) with
//! `connected_devices.json` in a temporary folder; timed from the first send until the last
//! reading is stored. This is what a gateway restarted in front of a large fleet does, and
//! where writing the registry on the data path used to cost one full rewrite per batch.
//!
//! Run: `cargo bench -p tbgw-benches --bench new_devices`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::storage::{EventStorage, FullPolicy, MemoryStorage};
use tbgw::uplink::StoreOutcome;
use tbgw::{Gateway, TbOptions};
use tokio::sync::oneshot;

const DEVICES: usize = 10_000;

/// Sends the first reading of `DEVICES` new devices when told to, and reports the time until
/// the last one is stored.
struct NewDevices {
    go: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<Duration>>,
}

fn reading(i: usize) -> DeviceData {
    let mut d = DeviceData::new(format!("SN-{i:06}"), "meter");
    d.push_telemetry(1_700_000_000_000, "energy", Value::Float(i as f64));
    d
}

#[async_trait]
impl Connector for NewDevices {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        if let Some(go) = self.go.take() {
            let _ = go.await;
            let t0 = Instant::now();
            for i in 1..DEVICES {
                cx.uplink()
                    .send(reading(i))
                    .await
                    .map_err(|_| ConnectorError::Closed)?;
            }
            let receipt = cx
                .uplink()
                .send_acked(vec![reading(DEVICES)])
                .await
                .map_err(|_| ConnectorError::Closed)?;
            let outcome = receipt.wait().await;
            assert_eq!(outcome, StoreOutcome::Stored);
            if let Some(done) = self.done.take() {
                let _ = done.send(t0.elapsed());
            }
        }
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

/// One gateway run: the time for `DEVICES` new devices' first readings to be stored.
async fn once() -> Duration {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage: Arc<dyn EventStorage> =
        Arc::new(MemoryStorage::new(2 * DEVICES, 1000, FullPolicy::Block));
    let (go_tx, go) = oneshot::channel();
    let (done, done_rx) = oneshot::channel();
    // Nothing listens on ThingsBoard's port (a port of a listener just closed): the data
    // stays in storage, and the client's reconnect attempts are cheap.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", port, "bench"))
        .storage(storage.clone())
        .registry_dir(dir.path())
        .connector(
            "Fleet",
            "bench",
            Box::new(NewDevices {
                go: Some(go),
                done: Some(done),
            }),
        )
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let running = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));
    // Let the gateway settle (connector started, client trying to connect) before timing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = go_tx.send(());
    let elapsed = done_rx.await.expect("the connector reports");
    assert_eq!(storage.stats().len, DEVICES);
    let _ = stop.send(());
    let _ = running.await;
    elapsed
}

fn new_devices(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(DEVICES as u64));
    g.sample_size(10);
    g.bench_function("10000_new_devices_first_readings", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(once());
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, new_devices);
criterion_main!(benches);
