//! The XMPP connector against a real Prosody server on loopback (started by
//! `tbgw::test_util::Prosody` with the test's accounts). Devices are tokio-xmpp clients logged
//! in as their own accounts; they send JSON chat messages to the gateway's account and receive
//! its attribute updates and RPCs.
#![cfg_attr(not(feature = "xmpp"), allow(missing_docs))]
#![cfg(feature = "xmpp")]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest, RpcResponder};
use tbgw::model::{DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::Prosody;
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::xmpp::XmppFactory;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType, Thread};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

const WAIT: Duration = Duration::from_secs(15);
const GW: &str = "gw@localhost";

fn spec(config: Json) -> ConnectorSpec {
    ConnectorSpec {
        name: "XMPP".into(),
        connector_type: "xmpp".into(),
        file: "xmpp.json".into(),
        config: config.into(),
    }
}

fn config(port: u16, rpc_timeout_ms: u64) -> Json {
    json!({
        "server": {"jid": GW, "password": "gwpass", "host": "127.0.0.1", "port": port,
                   "use_ssl": false, "disable_starttls": true, "force_starttls": false,
                   "timeout": 10000, "plugins": ["xep_0030", "xep_0323", "xep_0325"],
                   "rpcTimeoutMs": rpc_timeout_ms},
        "devices": [
            {"jid": "dev1@localhost/TMP_1101",
             "deviceNameExpression": "${serialNumber}",
             "deviceTypeExpression": "thermo",
             "attributes": [{"key": "temperature", "value": "${temp}"}],
             "timeseries": [{"key": "humidity", "value": "${hum}"},
                            {"key": "combination", "value": "${temp}:${hum}"}],
             "attributeUpdates": [
                {"attributeOnThingsBoard": "shared", "valueExpression": "{\"${attributeKey}\":\"${attributeValue}\"}"},
                {"attributeOnThingsBoard": "mode", "valueExpression": "mode=${attributeValue}"}],
             "serverSideRpc": [
                {"methodRPC": "rpc1", "withResponse": true, "valueExpression": "${params}"},
                {"methodRPC": "blink", "withResponse": false, "valueExpression": "{\"blink\": ${params.times}}"}]},
            {"jid": "dev2@localhost",
             "deviceNameExpression": "Pump ${id}",
             "timeseries": [{"key": "rpm", "value": "${rpm}"}]}
        ]
    })
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
    let mut ignored = Vec::new();
    let mut connector = XmppFactory::new()
        .build(&spec(config), &mut ignored)
        .expect("config is valid");
    assert!(
        ignored.contains(&"server.plugins".to_string()),
        "{ignored:?}"
    );
    let (mut cx, ends) = ConnectorContext::for_test("XMPP");
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

/// A device: a tokio-xmpp client logged in as `jid` (full JID) with available presence.
struct DeviceClient {
    client: Client,
}

impl DeviceClient {
    async fn login(port: u16, jid: &str, password: &str) -> DeviceClient {
        let mut client = Client::new_plaintext(
            Jid::new(jid).unwrap(),
            password,
            DnsConfig::addr(&format!("127.0.0.1:{port}")),
            Timeouts::tight(),
        );
        wait_online(&mut client).await;
        let mut d = DeviceClient { client };
        d.presence().await;
        d
    }

    async fn presence(&mut self) {
        self.client
            .send_stanza(Presence::available().into())
            .await
            .unwrap();
    }

    async fn say(&mut self, body: &str) {
        self.say_in(body, None).await
    }

    async fn say_in(&mut self, body: &str, thread: Option<String>) {
        let mut m =
            Message::chat(Some(Jid::new(GW).unwrap())).with_body(Lang::default(), body.into());
        m.thread = thread.map(|id| Thread { parent: None, id });
        self.client.send_stanza(m.into()).await.unwrap();
    }

    /// The next chat message with a body sent to this device (or None after `WAIT`).
    async fn next_message(&mut self, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.client.next())
                .await
                .ok()??;
            if let Event::Stanza(Stanza::Message(m)) = ev {
                if m.type_ != MessageType::Error && !m.bodies.is_empty() {
                    return Some(m);
                }
            }
        }
    }
}

async fn wait_online(client: &mut Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(Some(ev)) if ev.is_online() => return,
            Ok(Some(_)) => continue,
            other => panic!("device did not come online: {other:?}"),
        }
    }
}

fn body(m: &Message) -> String {
    m.bodies.values().next().cloned().unwrap_or_default()
}

/// The next data record within `wait` (device events are skipped).
async fn next_data(ends: &mut TestEnds, wait: Duration) -> Option<DeviceData> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { mut data, .. })) => return Some(data.remove(0)),
            Ok(Some(_)) => continue,
            _ => return None,
        }
    }
}

/// Sends `msg` until the gateway converts one (it may not be online yet, or be reconnecting:
/// then the server bounces the message) and returns that record.
async fn say_until_data(dev: &mut DeviceClient, ends: &mut TestEnds, msg: &str) -> DeviceData {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        dev.say(msg).await;
        if let Some(d) = next_data(ends, Duration::from_millis(500)).await {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never received {msg}"
        );
    }
}

fn telemetry(d: &DeviceData, key: &str) -> Option<Value> {
    d.telemetry
        .iter()
        .flat_map(|e| e.values.iter())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn attribute(d: &DeviceData, key: &str) -> Option<Value> {
    d.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

const ACCOUNTS: &[(&str, &str)] = &[
    ("gw", "gwpass"),
    ("dev1", "dev1pass"),
    ("dev2", "dev2pass"),
    ("stranger", "strangerpass"),
];

#[tokio::test]
async fn device_messages_become_typed_data_by_full_and_bare_jid() {
    let server = Prosody::start(ACCOUNTS).await.expect("prosody starts");
    let (task, mut ends, stats) = start(config(server.port(), 10_000));
    let mut dev1 = DeviceClient::login(server.port(), "dev1@localhost/TMP_1101", "dev1pass").await;
    let d = say_until_data(
        &mut dev1,
        &mut ends,
        r#"{"serialNumber": "SN-1", "temp": 21.5, "hum": 40}"#,
    )
    .await;
    assert_eq!(d.device_name, "SN-1");
    assert_eq!(d.device_type, "thermo");
    assert_eq!(attribute(&d, "temperature"), Some(Value::Float(21.5)));
    assert_eq!(telemetry(&d, "humidity"), Some(Value::Int(40)));
    assert_eq!(
        telemetry(&d, "combination"),
        Some(Value::String("21.5:40".into()))
    );

    // A stranger's messages and dev1 from another resource (dev1 is configured by full JID)
    // are dropped; dev2 is configured by bare JID, so any resource of it matches.
    let mut stranger =
        DeviceClient::login(server.port(), "stranger@localhost/x", "strangerpass").await;
    stranger.say(r#"{"serialNumber": "EVIL", "temp": 1}"#).await;
    let mut dev1b = DeviceClient::login(server.port(), "dev1@localhost/other", "dev1pass").await;
    dev1b
        .say(r#"{"serialNumber": "WRONG-RESOURCE", "temp": 1}"#)
        .await;
    let mut dev2 = DeviceClient::login(server.port(), "dev2@localhost/anything", "dev2pass").await;
    dev2.say(r#"{"id": 7, "rpm": 1500, "ts": 1700000000000}"#)
        .await;
    let d = next_data(&mut ends, WAIT).await.expect("dev2's data");
    assert_eq!(d.device_name, "Pump 7");
    assert_eq!(d.device_type, "default");
    assert_eq!(telemetry(&d, "rpm"), Some(Value::Int(1500)));
    assert_eq!(d.telemetry[0].ts, 1_700_000_000_000);

    // Malformed bodies are counted, and the next good one still arrives.
    let before = stats.convert_errors();
    dev1.say("not json").await;
    dev1.say(r#"{"temp": 1}"#).await; // no serialNumber: no device name
    dev1.say(r#"{"serialNumber": "SN-1", "hum": 41}"#).await;
    let d = next_data(&mut ends, WAIT).await.expect("the good message");
    assert_eq!(telemetry(&d, "humidity"), Some(Value::Int(41)));
    assert_eq!(stats.convert_errors() - before, 2);

    ends.cancel.cancel();
    task.await.unwrap();
}

fn rpc(device: &str, method: &str, params: Json) -> (Downlink, tbgw::downlink::RpcAnswer) {
    let (responder, answer) = RpcResponder::new();
    (
        Downlink::Rpc(RpcRequest {
            device: Some(device.into()),
            id: 1,
            method: method.into(),
            params,
            responder,
        }),
        answer,
    )
}

#[tokio::test]
async fn attribute_updates_rpcs_and_set_are_chat_messages_and_two_way_rpc_waits_for_the_answer() {
    let server = Prosody::start(ACCOUNTS).await.expect("prosody starts");
    let (task, mut ends, _stats) = start(config(server.port(), 1_500));
    let mut dev1 = DeviceClient::login(server.port(), "dev1@localhost/TMP_1101", "dev1pass").await;
    say_until_data(
        &mut dev1,
        &mut ends,
        r#"{"serialNumber": "SN-1", "hum": 1}"#,
    )
    .await;

    // Both configured keys of one update are sent (upstream sends only the first).
    ends.downlink
        .send(Downlink::AttributeUpdate(AttributeUpdate {
            device: "SN-1".into(),
            values: json!({"shared": "on", "mode": 3, "other": 1})
                .as_object()
                .unwrap()
                .clone(),
        }))
        .await
        .unwrap();
    let mut got = vec![
        body(&dev1.next_message(WAIT).await.expect("first update")),
        body(&dev1.next_message(WAIT).await.expect("second update")),
    ];
    got.sort();
    assert_eq!(
        got,
        vec!["mode=3".to_string(), r#"{"shared":"on"}"#.to_string()]
    );

    // Two-way RPC: the device answers in the RPC's thread; its answer is the result.
    let (dl, answer) = rpc("SN-1", "rpc1", json!({"led": true}));
    ends.downlink.send(dl).await.unwrap();
    let m = dev1.next_message(WAIT).await.expect("the RPC");
    assert_eq!(body(&m), r#"{"led":true}"#);
    let thread = m.thread.clone().expect("RPC carries a thread").id;
    dev1.say_in(r#"{"led": "done"}"#, Some(thread)).await;
    let reply = tokio::time::timeout(WAIT, answer.reply())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, json!({"result": {"led": "done"}}));

    // Unanswered: a timeout error, not "success".
    let (dl, answer) = rpc("SN-1", "rpc1", json!(5));
    ends.downlink.send(dl).await.unwrap();
    assert_eq!(body(&dev1.next_message(WAIT).await.expect("the RPC")), "5");
    let r = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
    assert!(matches!(r, Err(RpcError::Timeout(_))), "{r:?}");

    // One-way RPC: answered once sent.
    let (dl, answer) = rpc("SN-1", "blink", json!({"times": 3}));
    ends.downlink.send(dl).await.unwrap();
    assert_eq!(
        body(&dev1.next_message(WAIT).await.expect("blink")),
        r#"{"blink": 3}"#
    );
    let r = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");

    // Reserved set: upstream's "k=v;k2=v2" as a JSON object.
    let (dl, answer) = rpc("SN-1", "set", json!("value=1;mode=auto"));
    ends.downlink.send(dl).await.unwrap();
    let sent: Json =
        serde_json::from_str(&body(&dev1.next_message(WAIT).await.expect("set"))).unwrap();
    assert_eq!(sent, json!({"value": "1", "mode": "auto"}));
    let reply = tokio::time::timeout(WAIT, answer.reply())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, json!({"result": {"success": true}}));

    // Unknown method and unknown device.
    let (dl, answer) = rpc("SN-1", "nope", json!(null));
    ends.downlink.send(dl).await.unwrap();
    let r = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
    assert!(matches!(r, Err(RpcError::NotFound(_))), "{r:?}");
    let (dl, answer) = rpc("Ghost", "rpc1", json!(null));
    ends.downlink.send(dl).await.unwrap();
    let r = tokio::time::timeout(WAIT, answer).await.unwrap().unwrap();
    assert!(matches!(r, Err(RpcError::NotFound(_))), "{r:?}");

    ends.cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn reconnects_and_announces_presence_again_after_the_server_restarts() {
    let mut server = Prosody::start(ACCOUNTS).await.expect("prosody starts");
    let (task, mut ends, stats) = start(config(server.port(), 10_000));
    let mut dev1 = DeviceClient::login(server.port(), "dev1@localhost/TMP_1101", "dev1pass").await;
    say_until_data(
        &mut dev1,
        &mut ends,
        r#"{"serialNumber": "SN-1", "hum": 1}"#,
    )
    .await;

    drop(dev1);
    server.restart().await.expect("prosody restarts");
    // The device logs in again (a fresh client); the gateway must be back online with its
    // presence announced, or the server bounces every message.
    let mut dev1 = DeviceClient::login(server.port(), "dev1@localhost/TMP_1101", "dev1pass").await;
    let d = say_until_data(
        &mut dev1,
        &mut ends,
        r#"{"serialNumber": "SN-1", "hum": 2}"#,
    )
    .await;
    assert_eq!(telemetry(&d, "humidity"), Some(Value::Int(2)));
    assert!(stats.errors() >= 1, "the lost connection is counted");

    ends.cancel.cancel();
    task.await.unwrap();
}
