//! Load benchmark of the XMPP connector: device accounts send JSON chat messages through a
//! real Prosody server (started on a free loopback port, as the tests do) to the gateway's
//! account; the connector runs in this process and every record that reaches its uplink is
//! counted.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features xmpp --example xmpp_load
//! cargo run --release -p tbgw-connectors --no-default-features --features xmpp --example xmpp_load -- 10000 10
//! ```
//!
//! Arguments: messages in all (default 10000) and devices (default 10), each a tokio-xmpp
//! client sending its share as fast as the server takes it. Prints messages per second from
//! the first message sent to the last record received, the CPU time of this process (the
//! connector and the device clients) and of Prosody, and this process's peak resident memory.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::test_util::Prosody;
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::xmpp::{Jid, XmppFactory};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Client;

async fn online(c: &mut Client) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), c.next()).await? {
            Some(ev) if ev.is_online() => return Ok(()),
            Some(_) => continue,
            None => return Err("device client ended".into()),
        }
    }
}

fn chat(body: String) -> Result<Message, Box<dyn std::error::Error>> {
    Ok(Message::chat(Some(Jid::new("gw@localhost")?)).with_body(Lang::default(), body))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let devices: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .max(1);
    let mut users = vec![("gw".to_string(), "gwpass".to_string())];
    users.extend((0..devices).map(|i| (format!("dev{i}"), "devpass".to_string())));
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let server = Prosody::start(&refs).await?;
    let port = server.port();
    let prosody_pid = server.pid();

    // One device entry per account: a bare JID matches every resource of it.
    let device_entries: Vec<_> = (0..devices)
        .map(|i| {
            json!({"jid": format!("dev{i}@localhost"), "deviceNameExpression": "${serialNumber}",
                   "timeseries": [{"key": "temperature", "value": "${temp}"},
                                  {"key": "humidity", "value": "${hum}"}]})
        })
        .collect();
    let spec = ConnectorSpec {
        name: "XMPP".into(),
        connector_type: "xmpp".into(),
        file: "xmpp.json".into(),
        config: json!({
            "server": {"jid": "gw@localhost", "password": "gwpass", "host": "127.0.0.1",
                       "port": port, "disable_starttls": true},
            "devices": device_entries
        })
        .into(),
    };
    let mut c = XmppFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("XMPP");
    let stats = cx.stats().clone();
    tokio::spawn(async move { c.run(&mut cx).await });

    let mut clients = Vec::new();
    for i in 0..devices {
        let mut c = Client::new_plaintext(
            Jid::new(&format!("dev{i}@localhost/load"))?,
            "devpass",
            DnsConfig::addr(&format!("127.0.0.1:{port}")),
            Timeouts::tight(),
        );
        online(&mut c).await?;
        clients.push(c);
    }
    // Warm up: until the gateway is online the server bounces messages.
    loop {
        clients[0]
            .send_stanza(chat(json!({"serialNumber": "warmup", "temp": 0}).to_string())?.into())
            .await?;
        if let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(500), ends.uplink.recv()).await
        {
            break;
        }
    }
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(300), ends.uplink.recv()).await
    {}

    let me = std::process::id();
    let (cpu0, pcpu0) = (cpu_ticks(me), prosody_pid.map(cpu_ticks).unwrap_or(0));
    let start = Instant::now();
    let per = total / devices;
    let mut senders = Vec::new();
    let gw = Jid::new("gw@localhost")?;
    for (i, mut c) in clients.into_iter().enumerate() {
        let gw = gw.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..per {
                let body = json!({"serialNumber": format!("SN-{i}"), "temp": 20.0 + (n % 100) as f64 / 10.0, "hum": n % 100}).to_string();
                let m = Message::chat(Some(gw.clone())).with_body(Lang::default(), body);
                if c.send_stanza(m.into()).await.is_err() {
                    break;
                }
            }
            c
        }));
    }
    let expected = per * devices;
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < expected && Instant::now() < deadline {
        if let Ok(Some(UplinkMessage::Data { data, .. })) =
            tokio::time::timeout(Duration::from_secs(5), ends.uplink.recv()).await
        {
            got += data.len();
        }
    }
    let elapsed = start.elapsed();
    let (cpu1, pcpu1) = (cpu_ticks(me), prosody_pid.map(cpu_ticks).unwrap_or(0));
    println!(
        "xmpp_load: {got}/{expected} messages from {devices} devices in {:.2} s: {:.0} messages/s",
        elapsed.as_secs_f64(),
        got as f64 / elapsed.as_secs_f64()
    );
    println!(
        "CPU: this process (connector + device clients) {:.2} s, prosody {:.2} s; peak RSS of this process {} MiB; convert errors {}",
        (cpu1 - cpu0) as f64 / 100.0,
        (pcpu1.saturating_sub(pcpu0)) as f64 / 100.0,
        status_kb(me, "VmHWM") / 1024,
        stats.convert_errors()
    );
    for s in senders {
        let _ = s.await;
    }
    ends.cancel.cancel();
    if got < expected {
        return Err(format!("only {got} of {expected} messages arrived").into());
    }
    Ok(())
}
