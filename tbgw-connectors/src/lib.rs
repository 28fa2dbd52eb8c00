//! # tbgw-connectors — the standard connectors of the tbgw gateway
//!
//! Each connector is a module behind a Cargo feature of the same name, configured by the
//! upstream gateway's own connector file. [`factories`] returns a factory for every connector
//! compiled in, for [`tbgw::GatewayBuilder::factories`].
//!
//! | feature | connector type | module |
//! |---|---|---|
//! | `mqtt` (default) | `mqtt` | `mqtt` |
//! | `modbus` | `modbus` | `modbus` |
//! | `opcua` | `opcua` | `opcua` |
//! | `request` | `request` | `request` |
//! | `rest` | `rest` | `rest` |
//! | `snmp` | `snmp` | `snmp` |
//! | `ftp` | `ftp` | `ftp` |
//! | `socket` | `socket` | `socket` |
//! | `grpc` | `grpc` | `grpc` (needs the gateway-level server: `grpc::GrpcFactory`) |
//! | `grpc` | any other, with a `class` (Python custom connectors) | `grpc::custom` (`grpc::GrpcFactory::custom_factories`) |
//! | `ocpp` | `ocpp` | `ocpp` |
//! | `odbc` | `odbc` | `odbc` |
//! | `bacnet` | `bacnet` | `bacnet` |
//! | `s7` | `s7` | `s7` |
//! | `xmpp` | `xmpp` | `xmpp` |
//! | `ble` | `ble` | `ble` (BlueZ through btleplug; links libdbus) |
//! | `knx` | `knx` | `knx` |
//! | `can` | `can` | `can` (SocketCAN on Linux) |
//!
//! ```
//! let gateway_builder = tbgw::Gateway::builder().factories(tbgw_connectors::factories());
//! # let _ = gateway_builder;
//! ```

#[cfg(feature = "bacnet")]
pub mod bacnet;
#[cfg(feature = "ble")]
pub mod ble;
#[cfg(feature = "can")]
pub mod can;
#[cfg(any(
    feature = "mqtt",
    feature = "request",
    feature = "rest",
    feature = "socket"
))]
pub mod factory;
#[cfg(feature = "ftp")]
pub mod ftp;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(any(feature = "request", feature = "rest"))]
mod http_common;
#[cfg(feature = "knx")]
pub mod knx;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "ocpp")]
pub mod ocpp;
#[cfg(feature = "odbc")]
pub mod odbc;
#[cfg(feature = "opcua")]
pub mod opcua;
#[cfg(feature = "request")]
pub mod request;
#[cfg(feature = "rest")]
pub mod rest;
#[cfg(feature = "s7")]
pub mod s7;
#[cfg(feature = "snmp")]
pub mod snmp;
#[cfg(feature = "socket")]
pub mod socket;
#[cfg(feature = "xmpp")]
pub mod xmpp;

use tbgw::connector::ConnectorFactory;
use tbgw::convert::ConverterRegistry;

/// The README's Rust snippets, compiled as doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Every connector type tbgw knows, compiled in or not, so a config naming one whose feature
/// is off gets a precise error.
pub const ALL_CONNECTOR_TYPES: &[&str] = &[
    "mqtt", "modbus", "opcua", "ble", "request", "can", "bacnet", "odbc", "rest", "snmp", "ftp",
    "socket", "xmpp", "ocpp", "knx", "grpc", "s7", "custom",
];

/// A factory for every connector compiled into this build.
pub fn factories() -> Vec<Box<dyn ConnectorFactory>> {
    factories_with_converters(&ConverterRegistry::new())
}

/// A factory for every connector compiled into this build; those that support
/// `"type": "custom"` converters (MQTT, Request, REST) take them from `converters`.
///
/// ```
/// use std::sync::Arc;
/// use tbgw::convert::{ConverterRegistry, UplinkConverter};
/// # #[derive(Debug)] struct Mine;
/// # impl UplinkConverter for Mine {
/// #     fn convert(&self, _: tbgw::convert::UplinkInput<'_>, _: &mut Vec<tbgw::convert::ConvertError>)
/// #         -> Result<Vec<tbgw::model::DeviceData>, tbgw::convert::ConvertError> { Ok(vec![]) }
/// # }
/// let converters = ConverterRegistry::new().with("CustomMqttUplinkConverter", Arc::new(Mine));
/// let builder = tbgw::Gateway::builder()
///     .factories(tbgw_connectors::factories_with_converters(&converters));
/// # let _ = builder;
/// ```
#[allow(clippy::vec_init_then_push)] // one push per compiled-in connector feature
#[allow(unused_variables)] // no connector with custom converters compiled in
pub fn factories_with_converters(converters: &ConverterRegistry) -> Vec<Box<dyn ConnectorFactory>> {
    #[allow(unused_mut)]
    let mut v: Vec<Box<dyn ConnectorFactory>> = Vec::new();
    #[cfg(feature = "mqtt")]
    v.push(Box::new(
        mqtt::MqttFactory::new().with_converters(converters.clone()),
    ));
    #[cfg(feature = "modbus")]
    v.push(Box::new(modbus::ModbusFactory::new()));
    #[cfg(feature = "opcua")]
    v.push(Box::new(opcua::OpcUaFactory::new()));
    #[cfg(feature = "request")]
    v.push(Box::new(
        request::RequestFactory::new().with_converters(converters.clone()),
    ));
    #[cfg(feature = "rest")]
    v.push(Box::new(
        rest::RestFactory::new().with_converters(converters.clone()),
    ));
    #[cfg(feature = "snmp")]
    v.push(Box::new(snmp::SnmpFactory::new()));
    #[cfg(feature = "ftp")]
    v.push(Box::new(ftp::FtpFactory::new()));
    #[cfg(feature = "socket")]
    v.push(Box::new(
        socket::SocketFactory::new().with_converters(converters.clone()),
    ));
    #[cfg(feature = "ocpp")]
    v.push(Box::new(ocpp::OcppFactory::new()));
    #[cfg(feature = "odbc")]
    v.push(Box::new(odbc::OdbcFactory::new()));
    #[cfg(feature = "bacnet")]
    v.push(Box::new(bacnet::BacnetFactory::new()));
    #[cfg(feature = "s7")]
    v.push(Box::new(s7::S7Factory::new()));
    #[cfg(feature = "xmpp")]
    v.push(Box::new(xmpp::XmppFactory::new()));
    #[cfg(feature = "ble")]
    v.push(Box::new(ble::BleFactory::new()));
    #[cfg(feature = "knx")]
    v.push(Box::new(knx::KnxFactory::new()));
    #[cfg(feature = "can")]
    v.push(Box::new(can::CanFactory::new()));
    v
}
