//! The XMPP connector over TLS against a real Prosody (started by
//! `tbgw::test_util::Prosody::start_tls` with a certificate of a CA made by the test): STARTTLS
//! on the client port and XMPP over TLS from the first byte (`use_ssl`) on the direct-TLS port.
//! The gateway trusts the test CA the way docs/connectors/xmpp.md tells users to trust a
//! private CA: `SSL_CERT_FILE`. That variable is process-wide, hence this test binary of its
//! own with a single test.
#![cfg_attr(not(feature = "xmpp"), allow(missing_docs))]
#![cfg(feature = "xmpp")]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{Pki, Prosody};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::xmpp::XmppFactory;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Client;

const WAIT: Duration = Duration::from_secs(30);

fn config(port: u16, use_ssl: bool) -> Json {
    json!({
        "server": {"jid": "gw@localhost", "password": "gwpass", "host": "127.0.0.1", "port": port,
                   "use_ssl": use_ssl, "disable_starttls": false, "force_starttls": true},
        "devices": [{"jid": "dev1@localhost", "deviceNameExpression": "${serialNumber}",
                     "timeseries": [{"key": "temp", "value": "${temp}"}]}]
    })
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds) {
    let spec = ConnectorSpec {
        name: "XMPP".into(),
        connector_type: "xmpp".into(),
        file: "xmpp.json".into(),
        config: config.into(),
    };
    let mut connector = XmppFactory::new()
        .build(&spec, &mut Vec::new())
        .expect("config is valid");
    let (mut cx, ends) = ConnectorContext::for_test("XMPP");
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends)
}

/// A device logged in over STARTTLS (the server requires encryption).
async fn device(server: &Prosody) -> Client {
    let port = server.port();
    let mut client = Client::new_starttls(
        Jid::new("dev1@localhost/sensor").unwrap(),
        "dev1pass",
        DnsConfig::addr(&format!("127.0.0.1:{port}")),
        Timeouts::tight(),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.next()).await {
            Ok(Some(ev)) if ev.is_online() => break,
            Ok(Some(_)) => continue,
            other => panic!(
                "the device did not come online over STARTTLS: {other:?}\n{}",
                server.log()
            ),
        }
    }
    client
        .send_stanza(Presence::available().into())
        .await
        .unwrap();
    client
}

/// Sends `body` until the gateway converts one (it may not be online yet: the server bounces
/// the message then) and returns that record.
async fn say_until_data(dev: &mut Client, ends: &mut TestEnds, body: &str) -> DeviceData {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = Message::chat(Some(Jid::new("gw@localhost").unwrap()))
            .with_body(Lang::default(), body.into());
        dev.send_stanza(m.into()).await.unwrap();
        let wait = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            match tokio::time::timeout_at(wait, ends.uplink.recv()).await {
                Ok(Some(UplinkMessage::Data { mut data, .. })) => return data.remove(0),
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never received {body} over TLS"
        );
    }
}

#[tokio::test]
async fn starttls_and_direct_tls_with_a_private_ca_from_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "");
    // The documented way to trust a private CA (rustls-native-certs reads it at each
    // connection). Set before anything else runs in this process.
    std::env::set_var("SSL_CERT_FILE", pki.ca_cert());
    let server = Prosody::start_tls(
        &[("gw", "gwpass"), ("dev1", "dev1pass")],
        &pki.server_cert(),
        &pki.server_key(),
    )
    .await
    .expect("prosody starts with TLS");
    let mut dev = device(&server).await;

    // STARTTLS on the client port (upstream's default: use_ssl false, force_starttls true).
    let (task, mut ends) = start(config(server.port(), false));
    let d = say_until_data(
        &mut dev,
        &mut ends,
        r#"{"serialNumber": "T-1", "temp": 20.5}"#,
    )
    .await;
    assert_eq!(d.device_name, "T-1");
    assert_eq!(
        d.telemetry[0].values,
        vec![("temp".into(), Value::Float(20.5))]
    );
    ends.cancel.cancel();
    task.await.unwrap();

    // XMPP over TLS from the first byte (use_ssl) on the direct-TLS port.
    let direct = server.direct_tls_port().expect("a direct TLS port");
    let (task, mut ends) = start(config(direct, true));
    let d = say_until_data(
        &mut dev,
        &mut ends,
        r#"{"serialNumber": "T-2", "temp": 21.5}"#,
    )
    .await;
    assert_eq!(d.device_name, "T-2");
    ends.cancel.cancel();
    task.await.unwrap();
}
