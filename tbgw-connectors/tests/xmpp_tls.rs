//! The XMPP connector over TLS against a real Prosody (started by
//! `tbgw::test_util::Prosody::start_tls` with a certificate of a CA made by the test): STARTTLS
//! on the client port and XMPP over TLS from the first byte (`use_ssl`) on the direct-TLS port.
//! The gateway trusts the test CA both ways docs/connectors/xmpp.md gives: `server.ca_cert`,
//! and `SSL_CERT_FILE` for the system store. That variable is process-wide, hence this test
//! binary of its own with a single test.
#![cfg_attr(not(feature = "xmpp"), allow(missing_docs))]
#![cfg(feature = "xmpp")]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value as Json};
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec, TestEnds};
use tbgw::model::{DeviceData, Value};
use tbgw::stats::ConnectorCounters;
use tbgw::test_util::{Pki, Prosody};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::xmpp::tls::CaTlsConnector;
use tbgw_connectors::xmpp::XmppFactory;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::Client;

const WAIT: Duration = Duration::from_secs(30);

fn config(port: u16, use_ssl: bool, ca_cert: Option<&std::path::Path>) -> Json {
    json!({
        "server": {"jid": "gw@localhost", "password": "gwpass", "host": "127.0.0.1", "port": port,
                   "use_ssl": use_ssl, "disable_starttls": false, "force_starttls": true,
                   "ca_cert": ca_cert, "timeout": 300},
        "devices": [{"jid": "dev1@localhost", "deviceNameExpression": "${serialNumber}",
                     "timeseries": [{"key": "temp", "value": "${temp}"}]}]
    })
}

fn start(config: Json) -> (tokio::task::JoinHandle<()>, TestEnds, ConnectorCounters) {
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
    let stats = cx.stats().clone();
    let task = tokio::spawn(async move {
        connector
            .run(&mut cx)
            .await
            .expect("connector ends cleanly");
    });
    (task, ends, stats)
}

/// A device logged in over STARTTLS (the server requires encryption), trusting `ca` (with
/// the connector's own TLS connector) or, without, the system store.
async fn device(server: &Prosody, ca: Option<&std::path::Path>) -> Client {
    let port = server.port();
    let jid = Jid::new("dev1@localhost/sensor").unwrap();
    let dns = DnsConfig::addr(&format!("127.0.0.1:{port}"));
    let mut client = match ca {
        Some(ca) => {
            let roots = tbgw::tls::load_roots(ca).unwrap();
            let tls = tbgw::tls::client_config(tbgw::tls::Verify::Roots(roots), None).unwrap();
            let connector = CaTlsConnector::new(dns, Arc::new(tls), false);
            Client::new_with_connector(jid, "dev1pass", connector, Timeouts::tight())
        }
        None => Client::new_starttls(jid, "dev1pass", dns, Timeouts::tight()),
    };
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
async fn starttls_and_direct_tls_with_a_private_ca_by_ca_cert_and_by_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(dir.path(), "");
    let ca = pki.ca_cert();
    std::env::remove_var("SSL_CERT_FILE");
    let server = Prosody::start_tls(
        &[("gw", "gwpass"), ("dev1", "dev1pass")],
        &pki.server_cert(),
        &pki.server_key(),
    )
    .await
    .expect("prosody starts with TLS");
    let direct = server.direct_tls_port().expect("a direct TLS port");

    // `ca_cert` (tbgw): STARTTLS (upstream's default: use_ssl false, force_starttls true) and
    // TLS from the first byte, the system store untouched.
    let mut dev = device(&server, Some(&ca)).await;
    for (port, use_ssl, serial) in [(server.port(), false, "C-1"), (direct, true, "C-2")] {
        let (task, mut ends, _) = start(config(port, use_ssl, Some(&ca)));
        let body = format!(r#"{{"serialNumber": "{serial}", "temp": 20.5}}"#);
        let d = say_until_data(&mut dev, &mut ends, &body).await;
        assert_eq!(d.device_name, serial);
        assert_eq!(
            d.telemetry[0].values,
            vec![("temp".into(), Value::Float(20.5))]
        );
        ends.cancel.cancel();
        task.await.unwrap();
    }

    // Without `ca_cert` the system store does not know the test CA: the session never comes
    // online, which is counted as an error once per `timeout`.
    let (task, mut ends, stats) = start(config(server.port(), false, None));
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.stats().errors() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no error counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Ok(m) = ends.uplink.try_recv() {
        assert!(
            !matches!(m, UplinkMessage::Data { .. }),
            "data over an untrusted server"
        );
    }
    ends.cancel.cancel();
    task.await.unwrap();
    drop(dev);

    // The system store pointed at the test CA (rustls-native-certs reads `SSL_CERT_FILE` at
    // each connection); the device uses tokio-xmpp's own STARTTLS connector then.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let mut dev = device(&server, None).await;
    for (port, use_ssl, serial) in [(server.port(), false, "T-1"), (direct, true, "T-2")] {
        let (task, mut ends, _) = start(config(port, use_ssl, None));
        let body = format!(r#"{{"serialNumber": "{serial}", "temp": 21.5}}"#);
        let d = say_until_data(&mut dev, &mut ends, &body).await;
        assert_eq!(d.device_name, serial);
        ends.cancel.cancel();
        task.await.unwrap();
    }
}
