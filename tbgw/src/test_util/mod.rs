//! Test helpers for this and other crates' tests (feature `test-util`):
//!
//! * [`Mosquitto`] starts a real `mosquitto` broker on a free loopback port
//!   and can stop/restart it on the same port;
//! * [`TbStandIn`] plays ThingsBoard's side of the gateway MQTT API on that
//!   broker: it records what the gateway publishes, answers
//!   `getSessionLimits`, and sends RPCs and attribute updates;
//! * [`BluezMock`] plays BlueZ (python-dbusmock) on a private D-Bus system bus.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tbgw::test_util::{Mosquitto, TbStandIn};
//!
//! let broker = Mosquitto::start().await?;
//! let tb = TbStandIn::connect(broker.port()).await?;
//! // ... run the gateway against broker.host():broker.port() ...
//! let hit = tb
//!     .wait_for(Duration::from_secs(5), |m| m.topic == "v1/gateway/connect")
//!     .await;
//! assert!(hit.is_some());
//! # Ok(()) }
//! ```

mod bluez;
mod daemon;
pub mod harness;
mod knxd;
mod mosquitto;
mod pki;
mod postgres;
pub mod process;
mod prosody;
mod python;
mod snmpd;
mod tb_standin;
mod upstream;

pub use bluez::BluezMock;
pub use harness::{TestRun, Up};
pub use knxd::Knxd;
pub use mosquitto::Mosquitto;
pub use pki::Pki;
pub use postgres::{Postgres, POSTGRES_PASSWORD};
pub use prosody::Prosody;
pub use python::{free_tcp_port, free_udp_port, peers_python, PythonPeer};
pub use snmpd::{Snmpd, SNMPD_COMMUNITIES};
pub use tb_standin::{
    default_session_limits, topic_matches, Received, Responder, TbStandIn,
    GATEWAY_ATTRIBUTES_TOPIC, GATEWAY_RPC_TOPIC, ME_ATTRIBUTES_TOPIC, ME_RPC_REQUEST_PREFIX,
    ME_RPC_RESPONSE_PREFIX,
};
pub use upstream::{upstream_config_dir, upstream_sample};
