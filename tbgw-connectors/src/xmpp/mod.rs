//! The XMPP connector (`"type": "xmpp"`): the gateway logs in to an XMPP server as one user,
//! devices send it chat messages with JSON bodies, and it writes shared attributes and RPCs
//! back to them as chat messages.
//!
//! Configured by upstream's `xmpp.json`: `server` (`jid`, `password`, `host`, `port`,
//! `use_ssl`, `disable_starttls`, `force_starttls`, `timeout`; `plugins` and
//! `unencrypted_plain_auth` are accepted and not used), `devices[]` matched by the sender's
//! JID with `deviceNameExpression`/`deviceTypeExpression`, `attributes[]` and `timeseries[]`
//! as `${…}` templates over the body, `attributeUpdates[]`, `serverSideRpc[]` and the reserved
//! RPC `set`. See `docs/connectors/xmpp.md`.
//!
//! What it does beyond upstream:
//!
//! * **reconnects**: a lost connection (the server restarted) is re-established and initial
//!   presence sent again (upstream stays offline until the gateway restarts);
//! * **two-way RPC**: an RPC with `withResponse` is sent with a `<thread/>`; the device's reply
//!   in that thread is the RPC's result, or the RPC fails with a timeout (`rpcTimeoutMs`,
//!   default 10 s). Upstream answers "success" at once without waiting;
//! * **no rate cap** (upstream sleeps 0.2 s per message: about 5 messages a second);
//! * values keep their JSON type (upstream sends every value as a Python string: `'True'`);
//!   every matching attribute update key is sent (upstream only the first);
//! * a device JID without a resource matches every resource of that account (upstream only
//!   compares full JIDs, so a bare JID never matches);
//! * malformed bodies are counted (`convert_errors`) and logged once per sender and error.
//!
//! # Crate choice: tokio-xmpp 6
//!
//! `tokio-xmpp` 6.0 (with `xmpp-parsers` 0.23) builds on Rust 1.88. It is used with
//! `default-features = false` and `starttls`, `direct-tls`, `insecure-tcp`, `aws_lc_rs` and
//! `rustls-native-certs`: STARTTLS is the default transport, direct TLS serves `use_ssl`, and
//! plain TCP (`disable_starttls`) is refused by `tbgw check` unless the host is a loopback
//! address (it exists for local servers and the tests). The crypto provider is aws-lc-rs, not
//! ring: tbgw's core already links rustls with aws-lc-rs (its `tls` feature), so ring would
//! add a second provider, and with two providers compiled in rustls cannot pick the process
//! default that tokio-xmpp's `ClientConfig::builder()` needs. The server certificate is
//! checked against the system's roots (tokio-xmpp 6 takes no custom CA; `SSL_CERT_FILE`
//! points rustls-native-certs elsewhere). Build cost: about 130 s of CPU on a cold build
//! (xmpp-parsers alone ~47 s, hickory-resolver for DNS); nothing is added to the CLI's
//! default features.
//!
//! tokio-xmpp's `StanzaStream` reconnects by itself (1 s doubling to 30 s, not configurable)
//! and reports each lost and re-established session; `tbgw::backoff` is not used because the
//! login and resource binding tokio-xmpp would need to be driven from outside are private.
//!
//! | file | role |
//! |---|---|
//! | [`config`] | the connector file's keys and their checks |
//! | `connector.rs` | the session, presence, messages in, downlink out, RPC answers |
//! | [`uplink`] | body → data, JID matching (pure) |
//! | [`downlink`] | attribute updates, RPCs, `set` → bodies; answers → results (pure) |

pub mod config;
mod connector;
pub mod downlink;
pub mod tls;
pub mod uplink;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use config::XmppFileConfig;
pub use connector::XmppConnector;
/// JIDs as the connector reads them (tokio-xmpp's `jid` crate).
pub use tokio_xmpp::jid::Jid;

/// Builds XMPP connectors (`"type": "xmpp"`).
#[derive(Debug, Default)]
pub struct XmppFactory {}

impl XmppFactory {
    /// A factory.
    pub fn new() -> Self {
        XmppFactory::default()
    }
}

impl ConnectorFactory for XmppFactory {
    fn connector_type(&self) -> &'static str {
        "xmpp"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        let cfg: XmppFileConfig = spec.config.deserialize(&spec.file, ignored)?;
        Ok(Box::new(XmppConnector::build(&spec.file, cfg, ignored)?))
    }
}
