//! The CAN connector: the gateway listens to a CAN or CAN FD bus (Linux SocketCAN), turns
//! frames into attributes and time series, sends polling requests, and writes shared-attribute
//! updates and RPCs to the bus as frames.
//!
//! Configured by upstream's `can.json` (3.8.5): `interface`, `channel`, `backend.fd`,
//! `reconnect`/`reconnectPeriod`/`reconnectCount`, `devices[]` with `attributes` and
//! `timeseries` by `nodeId` (standard or extended ids), the `command` filter, `value` slices,
//! `expression`, `polling` (`once`/`always`, `period`, `dataInHex`), `attributeUpdates` and
//! `serverSideRpc` (`dataInHex`, `dataLength`, `dataByteorder`, `dataSigned`, `dataEncoding`,
//! `dataBefore`/`dataAfter`, `dataExpression`, `isFd`, `bitrateSwitch`), `enableUnknownRpc`,
//! `overrideRpcConfig`, and the reserved `set` RPC. See `docs/connectors/can.md`.
//!
//! Beyond upstream: DBC files (`dbcFile`, `signal`, `dbcMessages`; [`dbc`]) and J1939
//! addressing by PGN (`pgn`, `sourceAddress`, J1939 Request polls; [`j1939`]).
//!
//! What differs from upstream, on purpose:
//!
//! * `expression` and `dataExpression` are read with the core's safe expression subset
//!   ([`tbgw::eval`]) at configuration time, so `tbgw check` names what it cannot read; they
//!   are never run as Python;
//! * an entry without `command` no longer switches off the `command` filter of the other
//!   entries of its `nodeId` (upstream's sample never reports `rpm` because of that), and
//!   entries with different command positions on one id all work;
//! * frames are matched by id *and* id kind (upstream ignores `isExtendedId` when matching);
//! * a slice beyond the frame is a conversion error, not a silently short value;
//! * the bus session is independent of the ThingsBoard connection: a ThingsBoard reconnect
//!   never closes the bus (upstream #2102, where the bus never came back), and a lost bus is
//!   reopened after `reconnectPeriod` whatever the error;
//! * frames already waiting are decoded together and reach the gateway in one message; on a
//!   busy bus reading pauses 5 ms after each batch (frames keep their receive timestamps), so
//!   10,000 frames/s cost about 2 % of one core (`examples/can_load.rs`);
//! * every RPC is answered (`{"success": true}`, or an error with a code: 400 for a frame that
//!   cannot be built, such as a `dataInHex` that is not hex, 404 for an unknown method, 503
//!   while the bus is closed).
//!
//! The bus is behind the [`CanBus`] trait: [`socketcan_bus`] on Linux, and
//! the in-process [`fake`] network for tests (this machine's kernel has no CAN).
//!
//! * [`config`]: the file's keys.
//! * [`codec`]: value slices, commands, hex, the downlink converter.
//! * [`decode`]: the validated plan and the frame decoder.
//! * [`bus`], [`socketcan_bus`], [`fake`]: the bus seam and its two sides.

pub mod bus;
pub mod codec;
pub mod config;
mod connector;
pub mod dbc;
pub mod decode;
pub mod fake;
pub mod j1939;
#[cfg(target_os = "linux")]
pub mod socketcan_bus;

use std::sync::Arc;

use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorFactory, ConnectorSpec};

pub use bus::{BusError, BusSpec, CanBus, CanBusOpener, CanFilter, CanFrame};
pub use config::CanConnectorConfig;
pub use connector::CanConnector;
pub use decode::{Decoder, Plan};

/// The opener of real buses on this platform.
fn system_opener() -> Arc<dyn CanBusOpener> {
    #[cfg(target_os = "linux")]
    {
        Arc::new(socketcan_bus::SocketCanOpener)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Arc::new(NoCan)
    }
}

/// Opener on platforms without SocketCAN.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
struct NoCan;

#[cfg(not(target_os = "linux"))]
impl CanBusOpener for NoCan {
    fn open(&self, spec: &BusSpec) -> Result<Box<dyn CanBus>, BusError> {
        Err(BusError::Open {
            channel: spec.channel.clone(),
            reason: "SocketCAN exists on Linux only".into(),
        })
    }
}

/// Builds CAN connectors (`"type": "can"`).
#[derive(Debug, Default, Clone)]
pub struct CanFactory {}

impl CanFactory {
    /// A factory.
    pub fn new() -> Self {
        CanFactory::default()
    }

    /// The connector for `spec`, without the box (tests give it a fake bus with
    /// [`CanConnector::with_opener`]).
    pub fn build_can(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<CanConnector, ConfigError> {
        let cfg: CanConnectorConfig = spec.config.deserialize(&spec.file, ignored)?;
        let plan = decode::plan(&spec.file, &cfg, ignored)?;
        Ok(CanConnector::new(&spec.name, plan, system_opener()))
    }
}

impl ConnectorFactory for CanFactory {
    fn connector_type(&self) -> &'static str {
        "can"
    }

    fn build(
        &self,
        spec: &ConnectorSpec,
        ignored: &mut Vec<String>,
    ) -> Result<Box<dyn Connector>, ConfigError> {
        Ok(Box::new(self.build_can(spec, ignored)?))
    }
}
