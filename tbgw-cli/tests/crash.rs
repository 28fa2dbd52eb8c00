//! Crash safety through the `tbgw` binary: messages with sequence numbers flow in while the
//! gateway is killed with SIGKILL at random moments and restarted; at the end every message the
//! device broker handed to the gateway has reached the ThingsBoard stand-in. Duplicates are
//! allowed and counted, loss is not.
//!
//! ThingsBoard is down during the first kills, so acknowledged data lives only in the gateway's
//! storage then. The gateway runs with the file storage and an MQTT connector on a persistent session
//! (`cleanStart: false`), so a message the gateway had not acknowledged when it died is
//! redelivered by the broker; one it had acknowledged must come from the gateway's storage.

mod common;

use std::time::Duration;

use common::{wait_all_seqs, Device, GatewayProcess};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use tbgw::test_util::{Mosquitto, TbStandIn};

fn write_config(dir: &std::path::Path, tb_port: u16, device_port: u16) -> std::path::PathBuf {
    let main = json!({
        "thingsboard": {
            "host": "127.0.0.1", "port": tb_port,
            "security": {"type": "accessToken", "accessToken": "GW"},
            "sessionLimitsTimeoutMs": 500
        },
        "storage": {
            "type": "file", "data_folder_path": "./data/",
            "max_records_per_file": 500, "max_file_count": 1000,
            "max_read_records_count": 200, "fsync_interval_ms": 20
        },
        "connectors": [{"type": "mqtt", "name": "Devices", "configuration": "mqtt.json"}]
    });
    let mqtt = json!({
        "broker": {"host": "127.0.0.1", "port": device_port, "clientId": "tbgw-crash-test", "version": 5,
                   "cleanStart": false, "sessionExpiryInterval": 3600},
        "mapping": [{
            "topicFilter": "crash/+",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic", "deviceNameExpression": "crash/(.+)"},
                "timeseries": [{"type": "integer", "key": "seq", "value": "${seq}"}]
            }
        }]
    });
    std::fs::write(
        dir.join("tb_gateway.json"),
        serde_json::to_vec(&main).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("mqtt.json"), serde_json::to_vec(&mqtt).unwrap()).unwrap();
    dir.join("tb_gateway.json")
}

/// xorshift, seeded per run and printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_kill_9() {
    let seed = std::env::var("TBGW_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("TBGW_CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    // The device broker keeps every message for the gateway's persistent session while it is down.
    let devices = Mosquitto::start_with("max_queued_messages 0\nmax_inflight_messages 100\n")
        .await
        .unwrap();
    let mut tbb = Mosquitto::start().await.unwrap();
    let tb = TbStandIn::connect(tbb.port()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), tbb.port(), devices.port());
    let log = dir.path().join("gateway.log");

    // First start: let the connector create its persistent session before anything is published.
    let gw = GatewayProcess::start(&config, &log);
    let probe = Device::connect(devices.port());
    let mut ready = false;
    for _ in 0..100 {
        probe
            .client
            .publish(
                "crash/probe",
                QoS::AtLeastOnce,
                false,
                json!({"seq": 0}).to_string(),
            )
            .await
            .unwrap();
        if tb
            .wait_for(Duration::from_millis(200), |m| m.text().contains("probe"))
            .await
            .is_some()
        {
            ready = true;
            break;
        }
    }
    assert!(
        ready,
        "the gateway never forwarded; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let dev = Device::connect(devices.port());
    const N: i64 = 6000;
    const KILLS: usize = 8;
    let mut gw = Some(gw);
    let mut seq = 0i64;
    // ThingsBoard is away for the first rounds, so acknowledged messages live only in the
    // gateway's storage while it is killed; it comes back for the last rounds, so kills also
    // hit a draining backlog.
    tbb.stop().await.unwrap();
    for round in 0..KILLS {
        if round == KILLS - 3 {
            tbb.restart().await.unwrap();
        }
        // Publish a random share of the messages at ~3,000 per second, then kill -9 mid-stream.
        let burst = (N / KILLS as i64) + rng.next(200) as i64 - 100;
        let end = (seq + burst).min(N);
        let kill_after = rng.next(end.saturating_sub(seq).max(1) as u64) as i64 + seq;
        while seq < end {
            dev.client
                .publish(
                    "crash/dev",
                    QoS::AtLeastOnce,
                    false,
                    json!({"seq": seq}).to_string(),
                )
                .await
                .unwrap();
            if seq == kill_after {
                if let Some(g) = gw.take() {
                    g.kill9().await;
                }
            }
            seq += 1;
            if seq % 30 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Down for a random moment, then back.
        tokio::time::sleep(Duration::from_millis(rng.next(400))).await;
        if gw.is_none() {
            gw = Some(GatewayProcess::start(&config, &log));
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.next(500))).await;
        println!("round {round}: published up to {seq}");
    }
    while seq < N {
        dev.client
            .publish(
                "crash/dev",
                QoS::AtLeastOnce,
                false,
                json!({"seq": seq}).to_string(),
            )
            .await
            .unwrap();
        seq += 1;
    }
    dev.wait_acked(N as u64).await;

    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let (distinct, duplicates) =
        wait_all_seqs(&tb, "dev", N, Duration::from_secs(90), log_text).await;
    println!(
        "all {distinct} sequence numbers arrived after {KILLS} kill -9; {duplicates} duplicates"
    );
    if let Some(g) = gw.take() {
        let (code, log) = g.terminate().await;
        assert_eq!(code, Some(0), "graceful exit at the end; log:\n{log}");
    }
}
