//! `socket.json`: the Socket connector's configuration, in upstream's format (new and old flat
//! layout), plus tbgw's own keys (`mode`, `framing`, value `type`s, limits), and the checks
//! `tbgw check` reports with the file and key path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use tbgw::config::ConfigError;
use tbgw::convert::{ConvertError, ConverterRegistry, UplinkConverter, UplinkInput};
use tbgw::report::ReportOverrides;

use super::uplink::{
    unhex, AddressPattern, AttrRequest, Device, Encoding, Framing, Order, Point, Slice, ValueKind,
};

/// The whole connector file.
///
/// The new layout keeps the listener in `socket`; the old flat layout (no `socket` key) has
/// `type`, `address`, `port` and `bufferSize` at the top level, as upstream's adapter reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketFileConfig {
    /// The socket (new layout).
    pub socket: Option<SocketSection>,
    /// Old layout: `TCP` or `UDP`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Old layout: the bind address.
    pub address: Option<String>,
    /// Old layout: the port.
    pub port: Option<u16>,
    /// Old layout: the read buffer size.
    pub buffer_size: Option<usize>,
    /// The devices, matched by the peer's address.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `socket`: what the connector listens on (server mode) or connects to (client mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketSection {
    /// `TCP` (default) or `UDP`, any case.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Server mode: the address to bind (default `127.0.0.1`; `0.0.0.0`, `::` and IPv6
    /// addresses work). Client mode: the host to connect to.
    pub address: Option<String>,
    /// The port (default 50000).
    pub port: Option<u16>,
    /// The most bytes one read takes (default 1024), as documented upstream.
    pub buffer_size: Option<usize>,
    /// The same, as upstream's code reads it; wins over `bufferSize` when both are given.
    #[serde(rename = "buffer_size")]
    pub buffer_size_snake: Option<usize>,
    /// tbgw: `server` (default, as upstream) or `client` (the gateway connects to the device,
    /// TCP only, and reconnects).
    pub mode: Option<String>,
    /// tbgw: how a byte stream is cut into messages (default: every read is one message, as
    /// upstream).
    pub framing: Option<FramingConfig>,
    /// tbgw: client mode's first reconnect delay in milliseconds (default 1000, doubling with
    /// jitter up to `maxReconnectDelayMs`).
    pub reconnect_delay_ms: Option<u64>,
    /// tbgw: client mode's longest reconnect delay in milliseconds (default 30000).
    pub max_reconnect_delay_ms: Option<u64>,
    /// tbgw: TCP connections served at once in server mode (default 1024); more are refused.
    pub max_connections: Option<usize>,
    /// tbgw: how long an attribute request waits for ThingsBoard, in milliseconds (default
    /// 10000).
    pub attribute_request_timeout_ms: Option<u64>,
}

/// `socket.framing` (tbgw): how a TCP byte stream is cut into messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FramingConfig {
    /// `none` (every read is a message), `delimiter`, `fixed` or `lengthPrefix`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `delimiter`: the bytes that end a message, as text (JSON escapes: `"\n"`, `"\r\n"`).
    pub delimiter: Option<String>,
    /// `delimiter`: the same as hex digits (`"0d0a"`), for bytes that are not text.
    pub delimiter_hex: Option<String>,
    /// `delimiter`: keep the delimiter at the end of the message (default false).
    #[serde(default)]
    pub keep_delimiter: bool,
    /// `fixed`: the message length in bytes.
    pub length: Option<usize>,
    /// `lengthPrefix`: bytes of the length field (1, 2 or 4; default 2).
    pub prefix_bytes: Option<u8>,
    /// `lengthPrefix`: `big` (default) or `little`.
    pub byte_order: Option<String>,
    /// `lengthPrefix`: the length counts the prefix itself (default false).
    #[serde(default)]
    pub length_includes_prefix: bool,
    /// `lengthPrefix`: hand the prefix to the converter with the message (default false,
    /// so `byteFrom: 0` is the first byte after the prefix).
    #[serde(default)]
    pub keep_prefix: bool,
    /// The longest message in bytes (default 65536); a longer one is counted and skipped
    /// (`delimiter`) or ends the connection (`lengthPrefix`, where the stream cannot be
    /// resynchronised).
    pub max_frame_bytes: Option<usize>,
}

/// `devices[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceConfig {
    /// The peer address pattern: `ip:port` with `*` wildcards (`*:*`, `10.0.0.*:*`), an IP
    /// alone (any port), or `[v6]:port`.
    pub address: Option<String>,
    /// The same (upstream's old name); wins over `address` as in upstream's connector.
    pub address_filter: Option<String>,
    /// The device's name in ThingsBoard.
    pub device_name: String,
    /// Its profile (default `default`).
    #[serde(default = "default_type")]
    pub device_type: String,
    /// How byte slices become text: `utf-8` (default), `ascii`, `latin-1`, `utf-16`,
    /// `utf-16-le`, `utf-16-be`, or `hex`.
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// The uplink converter class: `BytesSocketUplinkConverter` (default, the built-in byte
    /// slices) or a custom converter registered by that name.
    pub converter: Option<String>,
    /// A custom converter's own settings.
    pub extension_config: Option<Json>,
    /// Time series: byte slices.
    #[serde(default)]
    pub telemetry: Vec<SliceConfig>,
    /// Client attributes: byte slices.
    #[serde(default)]
    pub attributes: Vec<SliceConfig>,
    /// Messages that ask ThingsBoard for attributes instead of carrying data.
    #[serde(default)]
    pub attribute_requests: Vec<AttributeRequestConfig>,
    /// Shared attributes written to the device.
    #[serde(default)]
    pub attribute_updates: Vec<AttributeUpdateConfig>,
    /// RPC methods written to the device.
    #[serde(default)]
    pub server_side_rpc: Vec<RpcConfig>,
    /// The device's report strategy.
    pub report_strategy: Option<Json>,
}

fn default_type() -> String {
    "default".into()
}
fn default_encoding() -> String {
    "utf-8".into()
}

/// `telemetry[]` / `attributes[]`: one key from a slice of the message.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceConfig {
    /// The key in ThingsBoard.
    pub key: String,
    /// First byte (default 0; negative counts from the end, as a Python slice).
    pub byte_from: Option<i64>,
    /// End byte, exclusive (default and `-1`: the end of the message; other negatives count
    /// from the end).
    pub byte_to: Option<i64>,
    /// tbgw: the value's type: `string` (default, as upstream), `int`, `double`, `bool`,
    /// `json` (parsed from the text), or the binary `int8` … `uint64`, `float32`, `float64`
    /// (read from the raw bytes).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// tbgw: byte order of the binary types, `big` (default) or `little`.
    pub byte_order: Option<String>,
    /// This key's report strategy.
    pub report_strategy: Option<Json>,
}

/// `attributeRequests[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeRequestConfig {
    /// `shared` or `client`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Which messages are requests: `${[from:to]==text}` (the slice equals the text) or
    /// `${[i]==c}`.
    pub request_expression: String,
    /// The requested attribute names: one or more `[from:to]` slices of the message.
    pub attribute_name_expression: String,
    /// Written by upstream's adapter for old configs; only `expression` exists.
    pub request_expression_source: Option<String>,
    /// Written by upstream's adapter for old configs; only `expression` exists.
    pub attribute_name_expression_source: Option<String>,
}

/// `attributeUpdates[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributeUpdateConfig {
    /// The shared attribute's key.
    #[serde(rename = "attributeOnThingsBoard")]
    pub attribute_on_thingsboard: String,
    /// How the value is written (default: the device's `encoding`).
    pub encoding: Option<String>,
}

/// `serverSideRpc[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcConfig {
    /// The RPC method.
    #[serde(rename = "methodRPC")]
    pub method_rpc: String,
    /// Answer the RPC (default true); with false the answer is still `{"result": "ok"}`
    /// (ThingsBoard needs one), sent once the bytes are written.
    #[serde(default = "default_true")]
    pub with_response: bool,
    /// `write` (default; the only processing upstream has).
    pub method_processing: Option<String>,
    /// How the params are written (default: the device's `encoding`).
    pub encoding: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Server (listen) or client (connect) mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Listen for devices (upstream's only mode).
    Server,
    /// Connect to the device and reconnect.
    Client,
}

/// The validated, compiled configuration the connector runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// UDP (`true`) or TCP.
    pub udp: bool,
    /// Server or client.
    pub mode: Mode,
    /// Bind address (server) or device host (client).
    pub address: String,
    /// The port.
    pub port: u16,
    /// Bytes one read takes.
    pub buffer_size: usize,
    /// How TCP streams are cut into messages.
    pub framing: Framing,
    /// The longest framed message.
    pub max_frame_bytes: usize,
    /// Client mode's reconnect delays.
    pub reconnect: (Duration, Duration),
    /// Server mode's connection limit.
    pub max_connections: usize,
    /// How long an attribute request waits for ThingsBoard.
    pub attribute_request_timeout: Duration,
    /// The devices, in file order.
    pub devices: Vec<Device>,
}

/// The default (and upstream's) read size.
pub const DEFAULT_BUFFER_SIZE: usize = 1024;
/// The longest read accepted for `bufferSize`.
pub const MAX_BUFFER_SIZE: usize = 1 << 20;
/// The default longest framed message.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

fn err(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::new(file, key, reason)
}

fn encoding(file: &Path, key: &str, name: &str) -> Result<Encoding, ConfigError> {
    Encoding::parse(name).ok_or_else(|| {
        err(
            file,
            key,
            format!(
                "unknown encoding {name:?}; expected utf-8, ascii, latin-1, utf-16, utf-16-le, utf-16-be or hex"
            ),
        )
    })
}

fn order(file: &Path, key: &str, v: Option<&str>) -> Result<Order, ConfigError> {
    match v.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(Order::Big),
        Some(s) if s == "big" || s == "be" => Ok(Order::Big),
        Some(s) if s == "little" || s == "le" => Ok(Order::Little),
        Some(s) => Err(err(file, key, format!("{s:?}: expected big or little"))),
    }
}

impl Settings {
    /// Checks and compiles a parsed connector file: every problem names the file and key.
    /// Custom converters come from `converters`; keys accepted but not acted on go to
    /// `ignored`.
    pub fn build(
        file: &Path,
        cfg: SocketFileConfig,
        converters: &ConverterRegistry,
        ignored: &mut Vec<String>,
    ) -> Result<Settings, ConfigError> {
        // Old flat layout: upstream's adapter moves the top-level keys into `socket`.
        let (s, p) = match cfg.socket {
            Some(s) => {
                for (k, present) in [
                    ("type", cfg.kind.is_some()),
                    ("address", cfg.address.is_some()),
                    ("port", cfg.port.is_some()),
                    ("bufferSize", cfg.buffer_size.is_some()),
                ] {
                    if present {
                        ignored.push(format!("{k} (the `socket` section is used)"));
                    }
                }
                (s, "socket.")
            }
            None => (
                SocketSection {
                    kind: cfg.kind,
                    address: cfg.address,
                    port: cfg.port,
                    buffer_size: cfg.buffer_size,
                    ..SocketSection::default()
                },
                "",
            ),
        };
        let udp = match s.kind.as_deref().map(|k| k.trim().to_ascii_uppercase()) {
            None => false,
            Some(k) if k == "TCP" => false,
            Some(k) if k == "UDP" => true,
            Some(k) => {
                return Err(err(
                    file,
                    format!("{p}type"),
                    format!("{k:?}: expected TCP or UDP"),
                ))
            }
        };
        let mode = match s.mode.as_deref().map(|m| m.trim().to_ascii_lowercase()) {
            None => Mode::Server,
            Some(m) if m == "server" => Mode::Server,
            Some(m) if m == "client" => Mode::Client,
            Some(m) => {
                return Err(err(
                    file,
                    format!("{p}mode"),
                    format!("{m:?}: expected server or client"),
                ))
            }
        };
        if mode == Mode::Client && udp {
            return Err(err(file, format!("{p}mode"), "client mode is TCP only"));
        }
        let address = s.address.unwrap_or_else(|| "127.0.0.1".into());
        if address.trim().is_empty() {
            return Err(err(file, format!("{p}address"), "must not be empty"));
        }
        let port = s.port.unwrap_or(50000);
        if port == 0 && mode == Mode::Client {
            return Err(err(file, format!("{p}port"), "must be 1..65535"));
        }
        let (bkey, buffer_size) = match (s.buffer_size_snake, s.buffer_size) {
            (Some(b), _) => ("buffer_size", b),
            (None, Some(b)) => ("bufferSize", b),
            (None, None) => ("bufferSize", DEFAULT_BUFFER_SIZE),
        };
        if buffer_size == 0 || buffer_size > MAX_BUFFER_SIZE {
            return Err(err(
                file,
                format!("{p}{bkey}"),
                format!("must be 1..={MAX_BUFFER_SIZE}"),
            ));
        }
        let (framing, max_frame_bytes) = match &s.framing {
            None => (Framing::None, DEFAULT_MAX_FRAME),
            Some(f) => framing(file, &format!("{p}framing"), f)?,
        };
        if udp && framing != Framing::None {
            ignored.push(format!("{p}framing (a UDP datagram is one message)"));
        }
        let reconnect = (
            Duration::from_millis(s.reconnect_delay_ms.unwrap_or(1000).max(1)),
            Duration::from_millis(s.max_reconnect_delay_ms.unwrap_or(30_000).max(1)),
        );
        if reconnect.1 < reconnect.0 {
            return Err(err(
                file,
                format!("{p}maxReconnectDelayMs"),
                "must be at least reconnectDelayMs",
            ));
        }
        let max_connections = s.max_connections.unwrap_or(1024);
        if max_connections == 0 {
            return Err(err(
                file,
                format!("{p}maxConnections"),
                "must be at least 1",
            ));
        }
        let attribute_request_timeout =
            Duration::from_millis(s.attribute_request_timeout_ms.unwrap_or(10_000).max(1));

        let mut devices = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, d) in cfg.devices.into_iter().enumerate() {
            let k = format!("devices[{i}]");
            devices.push(device(file, &k, d, converters, ignored, &mut names)?);
        }
        Ok(Settings {
            udp,
            mode,
            address,
            port,
            buffer_size,
            framing,
            max_frame_bytes,
            reconnect,
            max_connections,
            attribute_request_timeout,
            devices,
        })
    }
}

fn framing(file: &Path, k: &str, f: &FramingConfig) -> Result<(Framing, usize), ConfigError> {
    let max = f.max_frame_bytes.unwrap_or(DEFAULT_MAX_FRAME);
    if max == 0 || max > 16 << 20 {
        return Err(err(
            file,
            format!("{k}.maxFrameBytes"),
            "must be 1..=16777216",
        ));
    }
    let framing = match f.kind.trim().to_ascii_lowercase().as_str() {
        "none" => Framing::None,
        "delimiter" => {
            let d = match (&f.delimiter, &f.delimiter_hex) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        file,
                        format!("{k}.delimiterHex"),
                        "give delimiter or delimiterHex, not both",
                    ))
                }
                (Some(d), None) => d.as_bytes().to_vec(),
                (None, Some(h)) => {
                    unhex(h).map_err(|e| err(file, format!("{k}.delimiterHex"), e))?
                }
                (None, None) => {
                    return Err(err(
                        file,
                        format!("{k}.delimiter"),
                        "required for delimiter framing",
                    ))
                }
            };
            if d.is_empty() || d.len() > 16 {
                return Err(err(file, format!("{k}.delimiter"), "must be 1 to 16 bytes"));
            }
            Framing::Delimiter(d, f.keep_delimiter)
        }
        "fixed" => match f.length {
            Some(n) if n >= 1 && n <= max => Framing::Fixed(n),
            _ => {
                return Err(err(
                    file,
                    format!("{k}.length"),
                    "required for fixed framing, 1..=maxFrameBytes",
                ))
            }
        },
        "lengthprefix" | "length_prefix" | "length-prefix" => {
            let bytes = f.prefix_bytes.unwrap_or(2);
            if ![1, 2, 4].contains(&bytes) {
                return Err(err(file, format!("{k}.prefixBytes"), "must be 1, 2 or 4"));
            }
            Framing::LengthPrefix {
                bytes: usize::from(bytes),
                order: order(file, &format!("{k}.byteOrder"), f.byte_order.as_deref())?,
                includes_prefix: f.length_includes_prefix,
                keep_prefix: f.keep_prefix,
            }
        }
        other => {
            return Err(err(
                file,
                format!("{k}.type"),
                format!("{other:?}: expected none, delimiter, fixed or lengthPrefix"),
            ))
        }
    };
    Ok((framing, max))
}

fn device(
    file: &Path,
    k: &str,
    d: DeviceConfig,
    converters: &ConverterRegistry,
    ignored: &mut Vec<String>,
    names: &mut std::collections::HashSet<String>,
) -> Result<Device, ConfigError> {
    let pattern = match (&d.address_filter, &d.address) {
        (Some(a), _) => (a, "addressFilter"),
        (None, Some(a)) => (a, "address"),
        (None, None) => {
            return Err(err(
                file,
                format!("{k}.address"),
                "required (a peer address pattern such as `*:*` or `10.0.0.5:*`)",
            ))
        }
    };
    if pattern.0.trim().is_empty() {
        return Err(err(file, format!("{k}.{}", pattern.1), "must not be empty"));
    }
    if d.device_name.trim().is_empty() {
        return Err(err(file, format!("{k}.deviceName"), "must not be empty"));
    }
    if !names.insert(d.device_name.clone()) {
        return Err(err(
            file,
            format!("{k}.deviceName"),
            format!("{:?} is used by an earlier device", d.device_name),
        ));
    }
    let enc = encoding(file, &format!("{k}.encoding"), &d.encoding)?;
    let mut overrides = ReportOverrides::default();
    if let Some(v) = &d.report_strategy {
        overrides.device =
            tbgw::report::parse_strategy(v, file, &format!("{k}.reportStrategy"), ignored)?;
    }
    let mut points = Vec::new();
    for (section, list, attribute) in [
        ("telemetry", &d.telemetry, false),
        ("attributes", &d.attributes, true),
    ] {
        for (j, s) in list.iter().enumerate() {
            let pk = format!("{k}.{section}[{j}]");
            if s.key.trim().is_empty() {
                return Err(err(file, format!("{pk}.key"), "must not be empty"));
            }
            let ord = order(file, &format!("{pk}.byteOrder"), s.byte_order.as_deref())?;
            let kind = match &s.kind {
                None => ValueKind::String,
                Some(t) => ValueKind::parse(t, ord).ok_or_else(|| {
                    err(file, format!("{pk}.type"), format!("unknown type {t:?}; expected string, int, double, bool, json, int8..uint64, float32 or float64"))
                })?,
            };
            let to = match s.byte_to {
                None | Some(-1) => None,
                Some(t) => Some(t),
            };
            if let Some(v) = &s.report_strategy {
                if let Some(st) =
                    tbgw::report::parse_strategy(v, file, &format!("{pk}.reportStrategy"), ignored)?
                {
                    overrides.keys.entry(s.key.clone()).or_insert(st);
                }
            }
            points.push(Point {
                key: s.key.clone(),
                attribute,
                slice: Slice::Range(Some(s.byte_from.unwrap_or(0)), to),
                kind,
            });
        }
    }
    let mut attr_requests = Vec::new();
    for (j, r) in d.attribute_requests.iter().enumerate() {
        let rk = format!("{k}.attributeRequests[{j}]");
        let client = match r.kind.trim().to_ascii_lowercase().as_str() {
            "client" => true,
            "shared" => false,
            other => {
                return Err(err(
                    file,
                    format!("{rk}.type"),
                    format!("{other:?}: expected shared or client"),
                ))
            }
        };
        for (key, src) in [
            ("requestExpressionSource", &r.request_expression_source),
            (
                "attributeNameExpressionSource",
                &r.attribute_name_expression_source,
            ),
        ] {
            if let Some(s) = src {
                if s != "expression" {
                    return Err(err(
                        file,
                        format!("{rk}.{key}"),
                        format!("{s:?}: only `expression` exists"),
                    ));
                }
            }
        }
        let parsed =
            AttrRequest::parse(client, &r.request_expression, &r.attribute_name_expression)
                .map_err(|e| {
                    let which = if e.contains("slices") {
                        "attributeNameExpression"
                    } else {
                        "requestExpression"
                    };
                    err(file, format!("{rk}.{which}"), e)
                })?;
        attr_requests.push(parsed);
    }
    let mut attribute_updates = Vec::new();
    for (j, u) in d.attribute_updates.iter().enumerate() {
        let uk = format!("{k}.attributeUpdates[{j}]");
        if u.attribute_on_thingsboard.trim().is_empty() {
            return Err(err(
                file,
                format!("{uk}.attributeOnThingsBoard"),
                "must not be empty",
            ));
        }
        let e = match &u.encoding {
            Some(n) => encoding(file, &format!("{uk}.encoding"), n)?,
            None => enc,
        };
        attribute_updates.push((u.attribute_on_thingsboard.clone(), e));
    }
    let mut rpcs = Vec::new();
    for (j, r) in d.server_side_rpc.iter().enumerate() {
        let rk = format!("{k}.serverSideRpc[{j}]");
        if r.method_rpc.trim().is_empty() {
            return Err(err(file, format!("{rk}.methodRPC"), "must not be empty"));
        }
        if let Some(m) = &r.method_processing {
            if !m.eq_ignore_ascii_case("write") {
                return Err(err(
                    file,
                    format!("{rk}.methodProcessing"),
                    format!("{m:?}: only write exists"),
                ));
            }
        }
        let e = match &r.encoding {
            Some(n) => encoding(file, &format!("{rk}.encoding"), n)?,
            None => enc,
        };
        rpcs.push((r.method_rpc.clone(), e, r.with_response));
    }
    let converter = match d.converter.as_deref().map(str::trim) {
        None | Some("") | Some(DEFAULT_CONVERTER) => {
            if d.extension_config.is_some() {
                ignored.push(format!("{k}.extensionConfig (no custom converter)"));
            }
            None
        }
        Some(class) => {
            let built = converters.build(
                file,
                &format!("{k}.converter"),
                class,
                d.extension_config.as_ref(),
            )?;
            if built.is_none() {
                ignored.push(format!(
                    "{k}.converter (custom converter `{class}` is not registered; the device's messages are dropped)"
                ));
            }
            Some(built.unwrap_or_else(|| Arc::new(Unregistered(class.to_string()))))
        }
    };
    Ok(Device {
        name: d.device_name,
        device_type: d.device_type,
        pattern: AddressPattern::new(pattern.0),
        encoding: enc,
        points,
        attr_requests,
        attribute_updates,
        rpcs,
        converter,
        report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
    })
}

/// Upstream's default converter class: the built-in byte slices.
pub const DEFAULT_CONVERTER: &str = "BytesSocketUplinkConverter";

/// The converter of a device whose custom class is not registered: every message is an error.
struct Unregistered(String);

impl UplinkConverter for Unregistered {
    fn convert(
        &self,
        _: UplinkInput<'_>,
        _: &mut Vec<ConvertError>,
    ) -> Result<Vec<tbgw::model::DeviceData>, ConvertError> {
        Err(ConvertError::Malformed(format!(
            "custom converter `{}` is not registered",
            self.0
        )))
    }
}
