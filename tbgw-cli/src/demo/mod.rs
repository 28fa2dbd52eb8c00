//! `tbgw demo`: the gateway's main job, end to end, with nothing installed.
//!
//! An in-process MQTT broker plays both the devices' broker and ThingsBoard. Three simulated
//! sensors publish JSON to `demo/sensors/<name>/data`; the gateway's MQTT connector subscribes
//! with an upstream-format `mqtt.json`, converts, buffers, and publishes to the gateway API on
//! the same broker, where a "ThingsBoard" subscriber prints what arrives.

mod broker;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::json;

use broker::DemoBroker;

pub(crate) async fn run(duration: Option<u64>) -> anyhow::Result<()> {
    let broker = DemoBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("starting the demo broker")?;
    let port = broker.local_addr().port();
    let dir = tempfile::tempdir().context("creating a config directory")?;
    write_config(dir.path(), port)?;
    let config_file = dir.path().join("tb_gateway.json");
    println!(
        "tbgw demo: broker on 127.0.0.1:{port}, config in {}",
        dir.path().display()
    );
    println!("tbgw demo: 3 sensors publish to demo/sensors/<name>/data; lines below are what ThingsBoard receives. Ctrl-C stops.\n");

    let loaded = tbgw::config::load(&config_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = tbgw::Gateway::builder()
        .factories(tbgw_connectors::factories())
        .config(loaded)
        .build()?;

    let tb = tokio::spawn(thingsboard_view(port));
    let devices = tokio::spawn(simulated_devices(port));
    let stop = async move {
        match duration {
            Some(s) => tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                _ = crate::shutdown_signal() => {}
            },
            None => crate::shutdown_signal().await,
        }
    };
    let stats = gateway.stats();
    let report = gateway.run(stop).await;
    devices.abort();
    tb.abort();
    broker.shutdown();
    let s = stats.snapshot();
    println!(
        "\ntbgw demo: stored {} records, delivered {}, {} publishes to ThingsBoard; {} left undelivered.",
        s.stored, s.delivered, s.publishes, report.undelivered
    );
    Ok(())
}

fn write_config(dir: &std::path::Path, port: u16) -> anyhow::Result<()> {
    let main = json!({
        "thingsboard": {
            "host": "127.0.0.1",
            "port": port,
            "security": {"type": "accessToken", "accessToken": "DEMO_GATEWAY_TOKEN"},
            "qos": 1,
            "sessionLimitsTimeoutMs": 2000
        },
        "storage": {"type": "memory", "max_records_count": 100000, "read_records_count": 1000},
        "connectors": [{"type": "mqtt", "name": "Demo MQTT", "configuration": "mqtt.json"}]
    });
    let mqtt = json!({
        "broker": {"host": "127.0.0.1", "port": port, "clientId": "tbgw-demo-connector", "version": 5, "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": "demo/sensors/+/data",
            "subscriptionQos": 1,
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": "demo/sensors/([^/]+)/data",
                    "deviceProfileExpressionSource": "constant",
                    "deviceProfileExpression": "thermometer"
                },
                "attributes": [{"type": "string", "key": "firmware", "value": "${fw}"}],
                "timeseries": [
                    {"type": "double", "key": "temperature", "value": "${temp}"},
                    {"type": "double", "key": "humidity", "value": "${hum}"}
                ]
            }
        }]
    });
    std::fs::write(
        dir.join("tb_gateway.json"),
        serde_json::to_vec_pretty(&main)?,
    )?;
    std::fs::write(dir.join("mqtt.json"), serde_json::to_vec_pretty(&mqtt)?)?;
    Ok(())
}

/// Plays ThingsBoard: prints what the gateway publishes and answers `getSessionLimits`.
async fn thingsboard_view(port: u16) {
    let mut o = MqttOptions::new("demo-thingsboard", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 100);
    let filters = ["v1/gateway/#", "v1/devices/me/#"].map(|t| {
        let mut f = Filter::new(t, QoS::AtLeastOnce);
        f.nolocal = true;
        f
    });
    let _ = client.subscribe_many(filters).await;
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let body = String::from_utf8_lossy(&p.payload);
                if let Some(id) = topic.strip_prefix("v1/devices/me/rpc/request/") {
                    if body.contains("getSessionLimits") {
                        let limits = json!({"maxPayloadSize": 65536, "maxInflightMessages": 100});
                        let _ = client
                            .publish(
                                format!("v1/devices/me/rpc/response/{id}"),
                                QoS::AtLeastOnce,
                                false,
                                limits.to_string(),
                            )
                            .await;
                        println!("[ThingsBoard] answered getSessionLimits");
                        continue;
                    }
                }
                println!("[ThingsBoard] {topic} {body}");
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Three sensors publishing a reading every second.
async fn simulated_devices(port: u16) {
    let mut o = MqttOptions::new("demo-devices", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 100);
    tokio::spawn(async move {
        loop {
            if ev.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let names = ["sensor-1", "sensor-2", "sensor-3"];
    let mut temps = [21.0f64, 19.5, 23.2];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for (i, name) in names.iter().enumerate() {
            temps[i] += (fastrand::f64() - 0.5) * 0.4;
            let msg = json!({"temp": (temps[i] * 10.0).round() / 10.0, "hum": 40 + fastrand::u8(0..20), "fw": "1.4.2"});
            let _ = client
                .publish(
                    format!("demo/sensors/{name}/data"),
                    QoS::AtLeastOnce,
                    false,
                    msg.to_string(),
                )
                .await;
        }
    }
}
