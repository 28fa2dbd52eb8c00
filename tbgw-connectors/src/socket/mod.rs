//! The Socket connector (`"type": "socket"`): devices that send raw bytes over TCP or UDP.
//!
//! Configured by upstream's `socket.json` (the new layout with a `socket` section, and the old
//! flat layout upstream converts): `socket.type` `TCP`/`UDP`, `address`, `port`, `bufferSize`
//! (and `buffer_size`, the key upstream's code actually reads), `devices[]` matched by the
//! peer's address (`*` patterns on `ip:port`), byte-slice `telemetry[]`/`attributes[]` decoded
//! with the device's `encoding` (text or `hex`), `attributeRequests[]`, `attributeUpdates[]`
//! and `serverSideRpc[]` written back to the device, the reserved RPC `set` and the connector
//! RPC `socket_set`.
//!
//! What it does beyond upstream, asked for by its users (see `docs/connectors/socket.md`):
//!
//! * **no rate cap**: upstream converts one message, then sleeps 0.2 s (about 5 messages a
//!   second for the whole connector); here every connection is read by its own task;
//! * **framing** (`socket.framing`): delimiter, fixed length or length prefix; the default is
//!   upstream's (every read is one message);
//! * **client mode** (`socket.mode: client`): the gateway connects to the device or a
//!   serial-to-Ethernet server and reconnects with backoff;
//! * **typed values** (`type` on a key: `int`, `double`, `bool`, `json`, binary `int16`...);
//! * **IPv6** and per-connection write-back: downlink goes to the device's own connection
//!   (upstream's TCP write-back raises a `TypeError`; its UDP attribute updates go over TCP).
//!
//! | file | role |
//! |---|---|
//! | [`config`] | the connector file's keys and their checks |
//! | `connector.rs` | listening, connecting, reading, writing back |
//! | [`uplink`] | framing, address patterns, message → data (pure) |
//! | [`downlink`] | values, answers and `set` params → bytes (pure) |

pub mod config;
mod connector;
pub mod downlink;
pub mod uplink;

use std::path::Path;

use tbgw::config::ConfigError;
use tbgw::convert::ConverterRegistry;

use crate::factory::{ConverterFactory, WithConverters};

pub use config::SocketFileConfig;
pub use connector::SocketConnector;

/// Builds Socket connectors (`"type": "socket"`); a device's `converter` other than the
/// built-in `BytesSocketUplinkConverter` is taken from the registry given to
/// `SocketFactory::new().with_converters(registry)`.
pub type SocketFactory = ConverterFactory<SocketConnector>;

impl WithConverters for SocketConnector {
    const TYPE: &'static str = "socket";
    type Config = SocketFileConfig;

    fn build(
        file: &Path,
        _name: &str,
        cfg: SocketFileConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        SocketConnector::build(file, cfg, converters, ignored)
    }
}
