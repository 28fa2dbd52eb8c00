//! The KNX connector's build step and its one bus task: connect (with backoff), then listen
//! to every group telegram, poll each device on its `pollPeriod`, and carry out the
//! downlink's reads and writes on the same link.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fancy_regex::Regex;
use serde_json::{json, Value as Json};
use tbgw::backoff::Backoff;
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::report::ReportOverrides;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{ClientConfig, DeviceInfo, KnxConnectorConfig, PointConfig};
use super::dpt::Dpt;
use super::frame::{Apci, GroupAddress, GroupTelegram, IndividualAddress, Payload};
use super::link::{self, Link, LinkConfig, LinkError, Mode, SendResult};

/// Distinct errors logged before they are only counted.
const LOG_ONCE_CAP: usize = 128;
/// Downlink requests waiting for the bus task.
const CMD_QUEUE: usize = 256;
/// Shortest `pollPeriod` accepted.
const MIN_POLL_PERIOD: Duration = Duration::from_millis(10);
/// The KNXnet/IP port and routing group.
const KNX_PORT: u16 = 3671;
const KNX_MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 23, 12);

/// A piece of a name template.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Ga(GroupAddress),
}

/// A device name or profile: constant text, or text with `${group/address}` values.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    segs: Vec<Seg>,
    dpt: Dpt,
}

impl Template {
    fn constant(s: &str) -> Self {
        Template {
            segs: vec![Seg::Lit(s.to_string())],
            dpt: Dpt::RAW,
        }
    }

    fn parse(s: &str, dpt: Dpt) -> Result<Self, String> {
        let mut segs = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            if i > 0 {
                segs.push(Seg::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{s:?}: `${{` without `}}`"))?;
            segs.push(Seg::Ga(GroupAddress::parse(&after[..end])?));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            segs.push(Seg::Lit(rest.to_string()));
        }
        Ok(Template { segs, dpt })
    }

    fn addresses(&self) -> impl Iterator<Item = GroupAddress> + '_ {
        self.segs.iter().filter_map(|s| match s {
            Seg::Ga(g) => Some(*g),
            Seg::Lit(_) => None,
        })
    }

    /// The text, or `None` while a group address in it has no value yet.
    fn render(&self, values: &HashMap<GroupAddress, Json>) -> Option<String> {
        let mut out = String::new();
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Ga(g) => out.push_str(&shown(values.get(g)?)),
            }
        }
        Some(out)
    }
}

/// A value as upstream's `str()` shows it in a name.
fn shown(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

/// One attribute or time series of a device.
#[derive(Debug, Clone)]
struct Point {
    ga: GroupAddress,
    key: String,
    attribute: bool,
    dpt: Dpt,
}

/// One device, validated.
#[derive(Debug)]
struct Device {
    name: Template,
    profile: Template,
    period: Duration,
    points: Vec<Point>,
    /// Every group address read at a poll (points and templates), once each.
    reads: Vec<GroupAddress>,
    report: Option<Arc<ReportOverrides>>,
}

/// An `attributeUpdates` or `serverSideRpc` entry.
#[derive(Debug, Clone)]
struct Route {
    filter: Regex,
    name: String,
    write: bool,
    dpt: Dpt,
    ga: GroupAddress,
}

/// How to reach the bus.
#[derive(Debug, Clone)]
enum Kind {
    Automatic,
    Fixed(Mode),
}

/// The connector's validated setup.
#[derive(Debug)]
struct Setup {
    kind: Kind,
    gateway: Option<(String, u16)>,
    local: SocketAddr,
    individual: Option<IndividualAddress>,
    multicast: SocketAddrV4,
    min_gap: Duration,
    timeout: Duration,
    auto_reconnect: bool,
    reconnect_wait: Duration,
    scanner: Option<(Duration, bool)>,
    devices: Vec<Device>,
    /// Group address → (device, point) for uplink.
    by_ga: HashMap<GroupAddress, Vec<(usize, usize)>>,
    /// Group addresses in name or profile templates, with their type.
    template_gas: HashMap<GroupAddress, Dpt>,
    updates: Vec<Route>,
    methods: Vec<Route>,
}

/// The KNX connector. Build it with [`KnxFactory`](super::KnxFactory).
#[derive(Debug)]
pub struct KnxConnector {
    name: String,
    setup: Arc<Setup>,
}

fn secs(file: &Path, path: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or(default);
    if s.is_finite() && (0.0..=86_400.0).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(ConfigError::new(
            file,
            path,
            format!("{s} is not a number of seconds (0 ..= 86400)"),
        ))
    }
}

fn regex(file: &Path, path: String, f: Option<&str>) -> Result<Regex, ConfigError> {
    let f = f.unwrap_or(".*");
    Regex::new(&format!("^(?:{f})$")).map_err(|e| {
        ConfigError::new(
            file,
            path,
            format!("{f:?} is not a regular expression: {e}"),
        )
    })
}

fn dpt(file: &Path, path: String, v: Option<&str>) -> Result<Dpt, ConfigError> {
    Dpt::parse(v.unwrap_or("")).map_err(|e| ConfigError::new(file, path, e))
}

fn ga(file: &Path, path: String, v: Option<&str>) -> Result<GroupAddress, ConfigError> {
    let v = v.ok_or_else(|| ConfigError::new(file, path.clone(), "missing"))?;
    GroupAddress::parse(v).map_err(|e| ConfigError::new(file, path, e))
}

/// The device name (`profile` false) or profile template of `deviceInfo`.
fn template(
    file: &Path,
    p: &str,
    info: &DeviceInfo,
    profile: bool,
) -> Result<Template, ConfigError> {
    let (source, expr, expr_key, data_type, type_key, default) = if profile {
        (
            &info.device_profile_expression_source,
            &info.device_profile_name_expression,
            "deviceProfileNameExpression",
            &info.device_profile_data_type,
            "deviceProfileDataType",
            "default",
        )
    } else {
        (
            &info.device_name_expression_source,
            &info.device_name_expression,
            "deviceNameExpression",
            &info.device_name_data_type,
            "deviceNameDataType",
            "KNX Device",
        )
    };
    let text = expr.as_deref().unwrap_or(default);
    let is_expr = source
        .as_deref()
        .is_some_and(|s| s.trim().eq_ignore_ascii_case("expression"));
    if !is_expr {
        return Ok(Template::constant(text));
    }
    let d = dpt(
        file,
        format!("{p}.{type_key}"),
        Some(
            data_type
                .as_deref()
                .filter(|t| !t.eq_ignore_ascii_case("none"))
                .unwrap_or("string"),
        ),
    )?;
    Template::parse(text, d).map_err(|e| ConfigError::new(file, format!("{p}.{expr_key}"), e))
}

impl KnxConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: KnxConnectorConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let c = &cfg.client;
        let kind = Self::kind(file, c, ignored)?;
        let gateway_text = c
            .gateway_ip
            .as_deref()
            .or(c.gateway_ip_upper.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let gateway = gateway_text.map(|g| {
            (
                g.trim_start_matches('[').trim_end_matches(']').to_string(),
                c.gateway_port.unwrap_or(KNX_PORT),
            )
        });
        if matches!(kind, Kind::Fixed(Mode::TunnelUdp | Mode::TunnelTcp)) && gateway.is_none() {
            return Err(ConfigError::new(
                file,
                "client.gatewayIp",
                "missing; tunnelling needs the gateway's address (gatewayIp or gatewayIP)",
            ));
        }
        let local_ip: IpAddr = match c.local_ip.as_deref().map(str::trim) {
            None | Some("") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Some(s) => s.parse().map_err(|_| {
                ConfigError::new(
                    file,
                    "client.localIp",
                    format!("{s:?} is not an IP address"),
                )
            })?,
        };
        let individual = match c.individual_address.as_deref() {
            None => None,
            Some(s) => Some(
                IndividualAddress::parse(s)
                    .map_err(|e| ConfigError::new(file, "client.individualAddress", e))?,
            ),
        };
        let group: Ipv4Addr = match c.multicast_group.as_deref() {
            None => KNX_MULTICAST,
            Some(s) => s
                .trim()
                .parse()
                .ok()
                .filter(|a: &Ipv4Addr| a.is_multicast())
                .ok_or_else(|| {
                    ConfigError::new(
                        file,
                        "client.multicastGroup",
                        format!("{s:?} is not an IPv4 multicast address"),
                    )
                })?,
        };
        let rate = c.rate_limit.unwrap_or(0.0);
        if !rate.is_finite() || rate < 0.0 {
            return Err(ConfigError::new(
                file,
                "client.rateLimit",
                format!("{rate} is not a number of telegrams per second (0 = no limit)"),
            ));
        }
        if let Some(f) = &c.address_format {
            if !matches!(
                f.trim().to_ascii_uppercase().as_str(),
                "LONG" | "SHORT" | "FREE"
            ) {
                return Err(ConfigError::new(
                    file,
                    "client.addressFormat",
                    format!("{f:?}: expected LONG, SHORT or FREE"),
                ));
            }
        }
        if c.state_updater.is_some() {
            ignored.push(
                "client.stateUpdater (devices are polled every pollPeriod and listened to)".into(),
            );
        }
        let scanner = match &c.gateways_scanner {
            Some(s) if s.enabled => Some((
                secs(
                    file,
                    "client.gatewaysScanner.scanPeriod",
                    s.scan_period,
                    3.0,
                )?
                .max(Duration::from_millis(100)),
                s.stop_on_found,
            )),
            _ => None,
        };
        let mut devices = Vec::new();
        let mut by_ga: HashMap<GroupAddress, Vec<(usize, usize)>> = HashMap::new();
        let mut template_gas = HashMap::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            let p = format!("devices[{i}]");
            let dev = Self::device(file, &p, d, ignored)?;
            for t in [&dev.name, &dev.profile] {
                for g in t.addresses() {
                    template_gas.insert(g, t.dpt);
                }
            }
            for (j, pt) in dev.points.iter().enumerate() {
                by_ga.entry(pt.ga).or_default().push((i, j));
            }
            devices.push(dev);
        }
        let mut updates = Vec::new();
        for (j, u) in cfg.attribute_updates.iter().enumerate() {
            let p = format!("attributeUpdates[{j}]");
            let key = u
                .key
                .clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ConfigError::new(file, format!("{p}.key"), "missing"))?;
            updates.push(Route {
                filter: regex(
                    file,
                    format!("{p}.deviceNameFilter"),
                    u.device_name_filter.as_deref(),
                )?,
                name: key,
                write: true,
                dpt: dpt(file, format!("{p}.dataType"), u.data_type.as_deref())?,
                ga: ga(
                    file,
                    format!("{p}.groupAddress"),
                    u.group_address.as_deref(),
                )?,
            });
        }
        let mut methods = Vec::new();
        for (j, r) in cfg.server_side_rpc.iter().enumerate() {
            let p = format!("serverSideRpc[{j}]");
            let method = r
                .method
                .clone()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ConfigError::new(file, format!("{p}.method"), "missing"))?;
            let write = match r.request_type.as_deref().map(str::trim) {
                Some("read") => false,
                Some("write") => true,
                other => {
                    return Err(ConfigError::new(
                        file,
                        format!("{p}.requestType"),
                        format!("{other:?}: expected read or write"),
                    ))
                }
            };
            methods.push(Route {
                filter: regex(
                    file,
                    format!("{p}.deviceNameFilter"),
                    r.device_name_filter.as_deref(),
                )?,
                name: method,
                write,
                dpt: dpt(file, format!("{p}.dataType"), r.data_type.as_deref())?,
                ga: ga(
                    file,
                    format!("{p}.groupAddress"),
                    r.group_address.as_deref(),
                )?,
            });
        }
        let timeout =
            secs(file, "client.readTimeout", c.read_timeout, 2.0)?.max(Duration::from_millis(50));
        Ok(KnxConnector {
            name: name.to_string(),
            setup: Arc::new(Setup {
                kind,
                gateway,
                local: SocketAddr::new(local_ip, c.local_port.unwrap_or(0)),
                individual,
                multicast: SocketAddrV4::new(group, c.multicast_port.unwrap_or(KNX_PORT)),
                min_gap: if rate > 0.0 {
                    Duration::from_secs_f64(1.0 / rate)
                } else {
                    Duration::ZERO
                },
                timeout,
                auto_reconnect: c.auto_reconnect.unwrap_or(true),
                reconnect_wait: secs(file, "client.autoReconnectWait", c.auto_reconnect_wait, 3.0)?
                    .max(Duration::from_millis(50)),
                scanner,
                devices,
                by_ga,
                template_gas,
                updates,
                methods,
            }),
        })
    }

    fn kind(file: &Path, c: &ClientConfig, ignored: &mut Vec<String>) -> Result<Kind, ConfigError> {
        let text = c
            .kind
            .as_deref()
            .unwrap_or("AUTOMATIC")
            .trim()
            .to_ascii_uppercase();
        let kind = match text.as_str() {
            "AUTOMATIC" => Kind::Automatic,
            "TUNNELING" | "TUNNELLING" => Kind::Fixed(Mode::TunnelUdp),
            "TUNNELING_TCP" | "TUNNELLING_TCP" => Kind::Fixed(Mode::TunnelTcp),
            "ROUTING" => Kind::Fixed(Mode::Routing),
            "TUNNELING_TCP_SECURE" | "ROUTING_SECURE" => {
                return Err(ConfigError::new(
                    file,
                    "client.type",
                    format!("{text}: KNX IP Secure is not supported by tbgw; use TUNNELING, TUNNELING_TCP or ROUTING"),
                ))
            }
            other => {
                return Err(ConfigError::new(
                    file,
                    "client.type",
                    format!("{other:?}: expected AUTOMATIC, TUNNELING, TUNNELING_TCP or ROUTING"),
                ))
            }
        };
        if c.security.is_some() {
            ignored.push("client.security (KNX IP Secure is not supported by tbgw)".into());
        }
        if c.connection_type.is_some() {
            ignored.push(
                "client.connectionType (the connection type is read from client.type)".into(),
            );
        }
        Ok(kind)
    }

    fn device(
        file: &Path,
        p: &str,
        d: &super::config::DeviceConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Device, ConfigError> {
        for (k, v) in [
            ("converter", &d.converter),
            ("uplinkConverter", &d.uplink_converter),
        ] {
            if v.is_some() {
                ignored.push(format!(
                    "{p}.{k} (custom Python converters are not run; the built-in conversion is used)"
                ));
            }
        }
        let info: &DeviceInfo = &d.device_info;
        let name = template(file, &format!("{p}.deviceInfo"), info, false)?;
        if name.segs.is_empty() {
            return Err(ConfigError::new(
                file,
                format!("{p}.deviceInfo.deviceNameExpression"),
                "empty",
            ));
        }
        let profile = template(file, &format!("{p}.deviceInfo"), info, true)?;
        let period_ms = d.poll_period.unwrap_or(10_000.0);
        let period = if period_ms.is_finite() && period_ms > 0.0 && period_ms < 86_400_000.0 {
            Duration::from_secs_f64(period_ms / 1000.0).max(MIN_POLL_PERIOD)
        } else {
            return Err(ConfigError::new(
                file,
                format!("{p}.pollPeriod"),
                format!("{period_ms} is not a positive number of milliseconds"),
            ));
        };
        let mut overrides = ReportOverrides::default();
        let mut unused = Vec::new();
        if let Some(v) = &d.report_strategy {
            overrides.device =
                tbgw::report::parse_strategy(v, file, &format!("{p}.reportStrategy"), &mut unused)?;
        }
        let mut points = Vec::new();
        for (section, list, attribute) in [
            ("attributes", &d.attributes, true),
            ("timeseries", &d.timeseries, false),
        ] {
            for (j, pc) in list.iter().enumerate() {
                let kp = format!("{p}.{section}[{j}]");
                points.push(Self::point(
                    file,
                    &kp,
                    pc,
                    attribute,
                    &mut overrides,
                    &mut unused,
                )?);
            }
        }
        ignored.extend(unused);
        let mut reads: Vec<GroupAddress> = Vec::new();
        for g in points
            .iter()
            .map(|p| p.ga)
            .chain(name.addresses())
            .chain(profile.addresses())
        {
            if !reads.contains(&g) {
                reads.push(g);
            }
        }
        Ok(Device {
            name,
            profile,
            period,
            points,
            reads,
            report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
        })
    }

    fn point(
        file: &Path,
        kp: &str,
        pc: &PointConfig,
        attribute: bool,
        overrides: &mut ReportOverrides,
        unused: &mut Vec<String>,
    ) -> Result<Point, ConfigError> {
        let key = pc
            .key
            .clone()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ConfigError::new(file, format!("{kp}.key"), "missing"))?;
        if let Some(v) = &pc.report_strategy {
            if let Some(s) =
                tbgw::report::parse_strategy(v, file, &format!("{kp}.reportStrategy"), unused)?
            {
                overrides.keys.entry(key.clone()).or_insert(s);
            }
        }
        Ok(Point {
            ga: ga(
                file,
                format!("{kp}.groupAddress"),
                pc.group_address.as_deref(),
            )?,
            dpt: dpt(file, format!("{kp}.type"), pc.kind.as_deref())?,
            key,
            attribute,
        })
    }
}

/// A request for the bus task.
enum Cmd {
    Write(GroupAddress, Payload, oneshot::Sender<SendResult>),
    Read(GroupAddress, oneshot::Sender<Result<Payload, String>>),
}

/// An RPC read waiting for its GroupValueResponse, until its deadline.
type ReadWaiter = (
    GroupAddress,
    oneshot::Sender<Result<Payload, String>>,
    Instant,
);

/// A poll of one device waiting for its responses.
struct Poll {
    device: usize,
    waiting: HashSet<GroupAddress>,
    values: Vec<(GroupAddress, Payload)>,
    deadline: Instant,
}

/// The bus task's state.
struct Bus {
    s: Arc<Setup>,
    connector: Arc<str>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    once: LogOnce,
    /// Last value of each template group address.
    cache: HashMap<GroupAddress, Json>,
    announced: HashSet<String>,
    polls: Vec<Poll>,
    reads: Vec<ReadWaiter>,
    next_poll: Vec<Instant>,
}

/// Why a session ended.
enum End {
    Stop,
    Lost,
}

impl Bus {
    fn warn_once(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.once.first(&format!("{what}: {e}")) {
            tracing::warn!(connector = %self.connector, error = %e, "{what} (each distinct error is logged once; all are counted)");
        }
    }

    async fn link_config(&mut self) -> Result<LinkConfig, String> {
        let s = self.s.clone();
        let local_v4 = match s.local.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let resolve = |host: &str, port: u16| -> Result<SocketAddr, String> {
            (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .find(SocketAddr::is_ipv4)
                .ok_or_else(|| format!("{host} has no IPv4 address"))
        };
        let gateway = match &s.gateway {
            Some((h, p)) => Some(resolve(h, *p)?),
            None => None,
        };
        let mut mode = match s.kind {
            Kind::Fixed(m) => m,
            Kind::Automatic => Mode::TunnelUdp,
        };
        let mut target = gateway;
        if matches!(s.kind, Kind::Automatic) && gateway.is_none() {
            // Search; the first gateway that tunnels, else routing.
            let period = s.scanner.map_or(Duration::from_secs(3), |(p, _)| p);
            let found = link::scan(local_v4, s.multicast, None, period, false)
                .await
                .unwrap_or_default();
            match found.iter().find(|g| g.tunnelling) {
                Some(g) => {
                    tracing::info!(connector = %self.connector, gateway = %g.control.addr, name = %g.name, "AUTOMATIC: tunnelling to the gateway found.");
                    target = Some(SocketAddr::V4(g.control.addr));
                }
                None => {
                    tracing::info!(connector = %self.connector, "AUTOMATIC: no tunnelling gateway found; using routing.");
                    mode = Mode::Routing;
                }
            }
        }
        Ok(LinkConfig {
            mode,
            gateway: target.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, KNX_PORT))),
            local: if mode == Mode::TunnelUdp
                && s.local.ip().is_unspecified()
                && target.is_some_and(|t| t.ip().is_loopback())
            {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), s.local.port())
            } else {
                s.local
            },
            individual: s.individual,
            multicast: s.multicast,
            min_gap: s.min_gap,
            timeout: s.timeout.max(Duration::from_secs(3)),
        })
    }

    async fn scan_and_log(&mut self) {
        let Some((period, stop)) = self.s.scanner else {
            return;
        };
        let local = match self.s.local.ip() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let unicast = self.s.gateway.as_ref().and_then(|(h, p)| {
            (h.as_str(), *p)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.find(SocketAddr::is_ipv4))
        });
        tracing::info!(connector = %self.connector, "Starting KNX gateways scan...");
        match link::scan(local, self.s.multicast, unicast, period, stop).await {
            Ok(found) if found.is_empty() => {
                tracing::info!(connector = %self.connector, "No KNX gateways found")
            }
            Ok(found) => {
                for g in found {
                    tracing::info!(connector = %self.connector, name = %g.name, address = %g.address, endpoint = %g.control.addr, tunnelling = g.tunnelling, routing = g.routing, "Found KNX gateway.");
                }
            }
            Err(e) => {
                tracing::warn!(connector = %self.connector, error = %e, "KNX gateways scan failed.")
            }
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, cancel: CancellationToken) {
        self.scan_and_log().await;
        let mut backoff = Backoff::new(
            self.s.reconnect_wait,
            self.s.reconnect_wait.max(Duration::from_secs(60)),
        );
        let mut connected_once = false;
        loop {
            let connected = match self.link_config().await {
                Ok(cfg) => tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = Link::connect(&cfg) => r.map_err(|e| e.to_string()).map(|l| (l, cfg)),
                },
                Err(e) => Err(e),
            };
            match connected {
                Ok((link, cfg)) => {
                    connected_once = true;
                    backoff.succeeded();
                    self.once.clear();
                    tracing::info!(connector = %self.connector, mode = ?cfg.mode, gateway = %cfg.gateway, channel = link.channel(), address = %link.address(), "Connected to KNX bus");
                    match self.session(link, &mut cmds, &cancel).await {
                        End::Stop => return,
                        End::Lost => {}
                    }
                }
                Err(e) => {
                    self.stats.add_errors(1);
                    self.warn_once("Error connecting to KNX bus", &e);
                }
            }
            // Without autoReconnect the first connection is still tried until it succeeds
            // (as upstream's start loop does); a lost one is not renewed.
            let give_up = !self.s.auto_reconnect && connected_once;
            if give_up {
                tracing::error!(connector = %self.connector, "Lost the KNX bus and autoReconnect is false; RPCs are answered with 503 until the connector restarts.");
            }
            let wait = if !give_up {
                backoff.next_delay()
            } else {
                Duration::from_secs(86_400 * 365)
            };
            let until = Instant::now() + wait;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = cmds.recv() => match c {
                        Some(c) => refuse(c, "the KNX bus is not connected"),
                        None => return,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
    }

    async fn session(
        &mut self,
        mut link: Link,
        cmds: &mut mpsc::Receiver<Cmd>,
        cancel: &CancellationToken,
    ) -> End {
        let now = Instant::now();
        self.next_poll = vec![now; self.s.devices.len()];
        let end = loop {
            let mut deadline = link.next_deadline();
            for (i, t) in self.next_poll.iter().enumerate() {
                if !self.s.devices[i].reads.is_empty() {
                    deadline = deadline.min(*t);
                }
            }
            for p in &self.polls {
                deadline = deadline.min(p.deadline);
            }
            for (_, _, d) in &self.reads {
                deadline = deadline.min(*d);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break End::Stop,
                r = link.recv() => match r {
                    Ok(Some(t)) => self.telegram(t).await,
                    Ok(None) => {}
                    Err(e) if e.is_malformed() => {
                        self.stats.add_convert_errors(1);
                        self.warn_once("Malformed frame from the KNX gateway", &e);
                    }
                    Err(e) => {
                        self.lost(&e);
                        break End::Lost;
                    }
                },
                c = cmds.recv() => match c {
                    Some(Cmd::Write(ga, payload, reply)) => {
                        link.send(GroupTelegram::request(IndividualAddress(0), ga, Apci::Write, payload), Some(reply));
                    }
                    Some(Cmd::Read(ga, reply)) => {
                        self.reads.push((ga, reply, Instant::now() + self.s.timeout + self.s.min_gap * 2));
                        link.send(GroupTelegram::request(IndividualAddress(0), ga, Apci::Read, Payload::Small(0)), None);
                    }
                    None => break End::Stop,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if let Err(e) = link.tick().await {
                        self.lost(&e);
                        break End::Lost;
                    }
                    self.expire().await;
                    self.start_polls(&mut link);
                }
            }
        };
        link.close().await;
        for (_, r, _) in self.reads.drain(..) {
            let _ = r.send(Err("the connection to the KNX bus was lost".into()));
        }
        self.polls.clear();
        if matches!(end, End::Lost) {
            for n in self.announced.drain() {
                let _ = self.uplink.disconnect_device(n).await;
            }
        }
        end
    }

    fn lost(&mut self, e: &LinkError) {
        self.stats.add_errors(1);
        self.warn_once("Lost the KNX bus", e);
    }

    fn start_polls(&mut self, link: &mut Link) {
        let now = Instant::now();
        for i in 0..self.s.devices.len() {
            let d = &self.s.devices[i];
            if d.reads.is_empty() || self.next_poll[i] > now {
                continue;
            }
            self.next_poll[i] = now + d.period;
            if self.polls.iter().any(|p| p.device == i) {
                continue;
            }
            for g in &d.reads {
                link.send(
                    GroupTelegram::request(IndividualAddress(0), *g, Apci::Read, Payload::Small(0)),
                    None,
                );
            }
            let n = d.reads.len() as u32;
            self.polls.push(Poll {
                device: i,
                waiting: d.reads.iter().copied().collect(),
                values: Vec::new(),
                deadline: now + self.s.timeout + self.s.min_gap * n,
            });
        }
    }

    async fn expire(&mut self) {
        let now = Instant::now();
        let (done, keep): (Vec<Poll>, Vec<Poll>) =
            self.polls.drain(..).partition(|p| p.deadline <= now);
        self.polls = keep;
        for p in done {
            self.finish(p).await;
        }
        let mut k = 0;
        while k < self.reads.len() {
            if self.reads[k].2 <= now {
                let (g, r, _) = self.reads.swap_remove(k);
                let _ = r.send(Err(format!(
                    "no GroupValueResponse from {g} within {:?}",
                    self.s.timeout
                )));
            } else {
                k += 1;
            }
        }
    }

    fn cache_templates(&mut self, g: GroupAddress, payload: &Payload) {
        if let Some(d) = self.s.template_gas.get(&g).copied() {
            match d.decode(payload) {
                Ok(v) => {
                    self.cache.insert(g, v);
                }
                Err(e) => {
                    self.stats.add_convert_errors(1);
                    self.warn_once(&format!("Cannot decode the name value of {g}"), &e);
                }
            }
        }
    }

    async fn announce(&mut self, name: &str, profile: &str) {
        if !self.announced.contains(name) {
            self.announced.insert(name.to_string());
            let _ = self
                .uplink
                .connect_device(name.to_string(), profile.to_string())
                .await;
        }
    }

    fn names(&mut self, i: usize) -> Option<(String, String)> {
        let d = &self.s.devices[i];
        let name = d.name.render(&self.cache)?;
        let profile = d
            .profile
            .render(&self.cache)
            .unwrap_or_else(|| "default".into());
        Some((name, profile))
    }

    /// A poll is complete or timed out: one message with every value that arrived.
    async fn finish(&mut self, p: Poll) {
        for (g, v) in &p.values {
            self.cache_templates(*g, v);
        }
        let s = self.s.clone();
        let d = &s.devices[p.device];
        let mut missing: Vec<_> = p.waiting.iter().copied().collect();
        missing.sort();
        for g in missing {
            self.warn_once("No response from KNX bus", &g);
        }
        let Some((name, profile)) = self.names(p.device) else {
            return;
        };
        let ts = now_millis();
        let mut data = DeviceData::new(name.clone(), profile.clone());
        data.report = d.report.clone();
        for pt in &d.points {
            let Some((_, payload)) = p.values.iter().find(|(g, _)| *g == pt.ga) else {
                continue;
            };
            self.push(&mut data, pt, payload, ts);
        }
        if !data.is_empty() {
            self.announce(&name, &profile).await;
            let _ = self.uplink.send(data).await;
        }
    }

    fn push(&mut self, data: &mut DeviceData, pt: &Point, payload: &Payload, ts: i64) {
        match pt.dpt.decode(payload) {
            Ok(v) => {
                let v = Value::from_json(v);
                if pt.attribute {
                    data.push_attribute(pt.key.clone(), v);
                } else {
                    data.push_telemetry(ts, pt.key.clone(), v);
                }
            }
            Err(e) => {
                self.stats.add_convert_errors(1);
                self.warn_once(
                    &format!("Cannot decode {} ({}) of {}", pt.key, pt.dpt, pt.ga),
                    &e,
                );
            }
        }
    }

    /// A group telegram from the bus.
    async fn telegram(&mut self, t: GroupTelegram) {
        self.stats.add_messages_received(1);
        if t.apci == Apci::Read {
            return;
        }
        // Devices whose pending poll took this value: the poll sends it.
        let mut polled: Vec<usize> = Vec::new();
        if t.apci == Apci::Response {
            let mut k = 0;
            while k < self.reads.len() {
                if self.reads[k].0 == t.dest {
                    let (_, r, _) = self.reads.swap_remove(k);
                    let _ = r.send(Ok(t.payload.clone()));
                } else {
                    k += 1;
                }
            }
            let mut complete = None;
            for (i, p) in self.polls.iter_mut().enumerate() {
                if p.waiting.remove(&t.dest) {
                    p.values.push((t.dest, t.payload.clone()));
                    polled.push(p.device);
                    if p.waiting.is_empty() {
                        complete = Some(i);
                    }
                }
            }
            if let Some(i) = complete {
                let p = self.polls.swap_remove(i);
                self.finish(p).await;
            }
            // Several polls could wait for one address; finish any other now complete.
            while let Some(i) = self.polls.iter().position(|p| p.waiting.is_empty()) {
                let p = self.polls.swap_remove(i);
                self.finish(p).await;
            }
        }
        self.cache_templates(t.dest, &t.payload);
        let s = self.s.clone();
        let Some(targets) = s.by_ga.get(&t.dest) else {
            return;
        };
        let ts = now_millis();
        let mut per_device: Vec<(usize, DeviceData)> = Vec::new();
        for &(i, j) in targets {
            if polled.contains(&i) {
                continue;
            }
            let Some((name, profile)) = self.names(i) else {
                tracing::debug!(connector = %self.connector, ga = %t.dest, "A value for a device whose name is not known yet; it is sent with the next poll.");
                continue;
            };
            let pos = match per_device.iter().position(|(k, _)| *k == i) {
                Some(p) => p,
                None => {
                    let mut d = DeviceData::new(name, profile);
                    d.report = s.devices[i].report.clone();
                    per_device.push((i, d));
                    per_device.len() - 1
                }
            };
            let pt = &s.devices[i].points[j];
            let mut data = std::mem::replace(&mut per_device[pos].1, DeviceData::new("", ""));
            self.push(&mut data, pt, &t.payload, ts);
            per_device[pos].1 = data;
        }
        for (_, data) in per_device {
            if !data.is_empty() {
                let (n, p) = (data.device_name.clone(), data.device_type.clone());
                self.announce(&n, &p).await;
                let _ = self.uplink.send(data).await;
            }
        }
    }
}

fn refuse(c: Cmd, why: &str) {
    match c {
        Cmd::Write(_, _, r) => {
            let _ = r.send(Err(why.to_string()));
        }
        Cmd::Read(_, r) => {
            let _ = r.send(Err(why.to_string()));
        }
    }
}

/// The downlink side: sends requests to the bus task.
#[derive(Clone)]
struct Handle {
    s: Arc<Setup>,
    tx: mpsc::Sender<Cmd>,
    connector: Arc<str>,
}

impl Handle {
    async fn write(&self, g: GroupAddress, d: Dpt, v: &Json) -> Result<(), RpcError> {
        let payload = d
            .encode(v)
            .map_err(|e| RpcError::BadRequest(format!("{g} ({d}): {e}")))?;
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Cmd::Write(g, payload, tx))
            .map_err(|_| RpcError::Unreachable("the KNX connector is busy".into()))?;
        rx.await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
            .map_err(RpcError::Unreachable)
    }

    async fn read(&self, g: GroupAddress, d: Dpt) -> Result<Json, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Cmd::Read(g, tx))
            .map_err(|_| RpcError::Unreachable("the KNX connector is busy".into()))?;
        let payload = rx
            .await
            .map_err(|_| RpcError::Unreachable("the connector is stopping".into()))?
            .map_err(|e| {
                if e.starts_with("no GroupValueResponse") {
                    RpcError::Timeout(e)
                } else {
                    RpcError::Unreachable(e)
                }
            })?;
        d.decode(&payload)
            .map_err(|e| RpcError::Device(format!("{g} ({d}): {e}")))
    }

    async fn attribute_update(&self, u: AttributeUpdate, stats: &ConnectorCounters) {
        for (key, value) in &u.values {
            for r in self.s.updates.iter().filter(|r| &r.name == key) {
                if !r.filter.is_match(&u.device).unwrap_or(false) {
                    continue;
                }
                match self.write(r.ga, r.dpt, value).await {
                    Ok(()) => {
                        tracing::debug!(connector = %self.connector, device = %u.device, attribute = %key, ga = %r.ga, "Attribute written to the bus.")
                    }
                    Err(e) => {
                        stats.add_errors(1);
                        tracing::warn!(connector = %self.connector, device = %u.device, attribute = %key, ga = %r.ga, error = ?e, "Attribute update failed.");
                    }
                }
            }
        }
    }

    async fn rpc(&self, rpc: RpcRequest) {
        let RpcRequest {
            device,
            method,
            params,
            responder,
            ..
        } = rpc;
        let device = device.unwrap_or_default();
        let (write, ga, d, value) = if method == "get" || method == "set" {
            match reserved(&params) {
                Ok((g, d, v)) => (method == "set", g, d, v),
                Err(e) => return responder.err(RpcError::BadRequest(e)),
            }
        } else {
            let Some(r) = self
                .s
                .methods
                .iter()
                .find(|r| r.name == method && r.filter.is_match(&device).unwrap_or(false))
            else {
                return responder.err(RpcError::NotFound(format!(
                    "no serverSideRpc entry for method {method} and device {device}"
                )));
            };
            let v = match &params {
                Json::Object(m) if m.contains_key("value") => m.get("value").cloned(),
                Json::Null => None,
                Json::Object(m) if m.is_empty() => None,
                other => Some(other.clone()),
            };
            (r.write, r.ga, r.dpt, v)
        };
        if write {
            let Some(v) = value else {
                return responder.err(RpcError::BadRequest(format!(
                    "method {method}: no value to write in params"
                )));
            };
            match self.write(ga, d, &v).await {
                Ok(()) => responder.verbatim(json!({"result": {"value": v}})),
                Err(e) => responder.err(e),
            }
        } else {
            match self.read(ga, d).await {
                Ok(v) => responder.verbatim(json!({"result": {"value": v}})),
                Err(e) => responder.err(e),
            }
        }
    }
}

/// Reserved `get`/`set` params: `groupAddress=1/0/5;dataType=string;value=hello` (split at
/// the first `=` of each part) or the same keys in an object.
fn reserved(params: &Json) -> Result<(GroupAddress, Dpt, Option<Json>), String> {
    let mut map: HashMap<String, Json> = HashMap::new();
    match params {
        Json::String(s) => {
            for part in s.split(';') {
                if let Some((k, v)) = part.split_once('=') {
                    if !k.trim().is_empty() && !v.is_empty() {
                        map.insert(k.trim().to_string(), Json::String(v.to_string()));
                    }
                }
            }
        }
        Json::Object(m) => {
            for (k, v) in m {
                map.insert(k.clone(), v.clone());
            }
        }
        other => {
            return Err(format!(
                "params {other} are neither `key=value;...` nor an object"
            ))
        }
    }
    let g = map
        .get("groupAddress")
        .and_then(Json::as_str)
        .ok_or("params: groupAddress is missing")?;
    let g = GroupAddress::parse(g)?;
    let d = Dpt::parse(map.get("dataType").and_then(Json::as_str).unwrap_or(""))?;
    Ok((g, d, map.remove("value")))
}

#[async_trait]
impl Connector for KnxConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let cancel = cx.cancellation().clone();
        let name: Arc<str> = Arc::from(self.name.as_str());
        let (tx, rx) = mpsc::channel(CMD_QUEUE);
        let bus = Bus {
            s: self.setup.clone(),
            connector: name.clone(),
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
            once: LogOnce::new(LOG_ONCE_CAP),
            cache: HashMap::new(),
            announced: HashSet::new(),
            polls: Vec::new(),
            reads: Vec::new(),
            next_poll: Vec::new(),
        };
        let c = cancel.clone();
        cx.spawn("KNX bus", async move {
            bus.run(rx, c).await;
            Ok(())
        });
        let handle = Handle {
            s: self.setup.clone(),
            tx,
            connector: name.clone(),
        };
        let mut downlink_open = true;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                dl = cx.recv_downlink(), if downlink_open => {
                    let Some(dl) = dl else {
                        downlink_open = false;
                        continue;
                    };
                    cx.stats().add_downlink(1);
                    let h = handle.clone();
                    let stats = cx.stats().clone();
                    cx.spawn("downlink request", async move {
                        match dl {
                            Downlink::Rpc(rpc) => h.rpc(rpc).await,
                            Downlink::AttributeUpdate(u) => h.attribute_update(u, &stats).await,
                            _ => {}
                        }
                        Ok(())
                    });
                }
            }
        }
        cx.finish_tasks(Duration::from_millis(500)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = Template::parse("Device ${1/0/5} in ${1/0/6}", Dpt::RAW).unwrap();
        assert_eq!(t.addresses().count(), 2);
        let mut m = HashMap::new();
        assert_eq!(t.render(&m), None);
        m.insert(GroupAddress::parse("1/0/5").unwrap(), json!("Boiler"));
        m.insert(GroupAddress::parse("1/0/6").unwrap(), json!(true));
        assert_eq!(t.render(&m).unwrap(), "Device Boiler in True");
        assert!(Template::parse("x ${1/0/5", Dpt::RAW).is_err());
        assert!(Template::parse("x ${nope}", Dpt::RAW).is_err());
    }

    #[test]
    fn reserved_params() {
        let (g, d, v) = reserved(&json!("groupAddress=1/0/5;dataType=string;value=a=b")).unwrap();
        assert_eq!(g.to_string(), "1/0/5");
        assert_eq!(d, Dpt::parse("string").unwrap());
        assert_eq!(v, Some(json!("a=b")));
        let (_, d, v) =
            reserved(&json!({"groupAddress": "1/0/6", "dataType": "temperature"})).unwrap();
        assert_eq!(d.main, 9);
        assert_eq!(v, None);
        assert!(reserved(&json!("dataType=string")).is_err());
        assert!(reserved(&json!(5)).is_err());
    }
}
