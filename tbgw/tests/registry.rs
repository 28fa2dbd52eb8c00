//! The device registry (`connected_devices.json`) is saved off the data path: a file system
//! that blocks on that file does not stop data from reaching storage, and the file is still
//! written (in upstream's format) once it can be.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::model::{DeviceData, Value};
use tbgw::storage::{EventStorage, FullPolicy, MemoryStorage};
use tbgw::test_util::free_tcp_port;
use tbgw::uplink::StoreOutcome;
use tbgw::{Gateway, TbOptions};
use tokio::sync::{mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(20);

/// Sends one reading for each of `devices` new devices, the last one acknowledged, and
/// reports the receipt's outcome.
struct NewDevices {
    devices: usize,
    done: mpsc::UnboundedSender<StoreOutcome>,
}

#[async_trait]
impl Connector for NewDevices {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let reading = |i: usize| {
            let mut d = DeviceData::new(format!("dev-{i}"), "meter");
            d.push_telemetry(1_700_000_000_000, "v", Value::Int(i as i64));
            d
        };
        for i in 1..self.devices {
            cx.uplink()
                .send(reading(i))
                .await
                .map_err(|_| ConnectorError::Closed)?;
        }
        let receipt = cx
            .uplink()
            .send_acked(vec![reading(self.devices)])
            .await
            .map_err(|_| ConnectorError::Closed)?;
        let _ = self.done.send(receipt.wait().await);
        cx.cancellation().cancelled().await;
        Ok(())
    }
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(ok.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_file_that_blocks_does_not_stall_the_data_path() {
    let dir = tempfile::tempdir().unwrap();
    // Writing the registry goes through `connected_devices.json.tmp`; as a named pipe with no
    // reader, opening it for writing blocks until somebody reads.
    let fifo = dir.path().join("connected_devices.json.tmp");
    mkfifo(&fifo);

    let storage: Arc<dyn EventStorage> =
        Arc::new(MemoryStorage::new(10_000, 1000, FullPolicy::Block));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    // Nothing listens on ThingsBoard's port: the data stays in storage.
    let gateway = Gateway::builder()
        .thingsboard(TbOptions::access_token("127.0.0.1", free_tcp_port(), "t"))
        .storage(storage.clone())
        .registry_dir(dir.path())
        .shutdown_timeout(Duration::from_secs(5))
        .connector(
            "New",
            "test",
            Box::new(NewDevices {
                devices: 100,
                done: done_tx,
            }),
        )
        .build()
        .expect("gateway builds");
    let (stop, stop_rx) = oneshot::channel::<()>();
    let gateway = tokio::spawn(gateway.run(async move {
        let _ = stop_rx.await;
    }));

    // Every reading is stored while the registry file cannot be written.
    let outcome = tokio::time::timeout(WAIT, done.recv()).await;

    // Now read the pipe (so that nothing stays blocked on it, whatever happened) and remove
    // it: the waiting write goes through the pipe (and fails, a pipe cannot be synced); the
    // next one writes a real file.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let read = std::fs::File::open(&fifo).and_then(|mut f| f.read_to_end(&mut text));
            std::fs::remove_file(&fifo).expect("pipe removed");
            read.map(|_| text)
        })
    };
    let outcome = outcome.expect("the data path is not blocked by the registry file");
    assert_eq!(outcome, Some(StoreOutcome::Stored));
    assert_eq!(storage.stats().len, 100);
    let first = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap()
        .expect("pipe read");
    assert!(
        first.starts_with(b"{"),
        "{}",
        String::from_utf8_lossy(&first)
    );

    let _ = stop.send(());
    let report = tokio::time::timeout(WAIT, gateway)
        .await
        .expect("the gateway stops")
        .unwrap();
    assert_eq!(report.undelivered, 100);
    // The last write at shutdown leaves every device in upstream's format.
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("connected_devices.json")).expect("registry written"),
    )
    .expect("valid JSON");
    let saved = saved.as_object().expect("an object");
    assert_eq!(saved.len(), 100, "{saved:?}");
    assert_eq!(saved["dev-7"]["connectorName"], "New");
    assert_eq!(saved["dev-7"]["deviceType"], "meter");
}
