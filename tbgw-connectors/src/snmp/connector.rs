//! The SNMP connector's build step and run loop: one poll task per device (each on its own
//! `pollPeriod`), the trap listener, and downlink requests each in a task of its own.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fancy_regex::Regex;
use serde_json::{json, Value as Json};
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{AttributeUpdate, Downlink, RpcError, RpcRequest};
use tbgw::log_once::LogOnce;
use tbgw::model::{now_millis, DeviceData, Value};
use tbgw::report::ReportOverrides;
use tbgw::stats::ConnectorCounters;
use tbgw::uplink::UplinkSender;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::client::{Client, ClientError, Target, Version};
use super::config::{DeviceConfig, MethodConfig, RequestConfig, SnmpConnectorConfig, TrapConfig};
use super::downlink::{self, Mapping, SetType};
use super::uplink::{self, parse_oid, MethodResult};

/// Downlink requests handled at the same time; more wait in the downlink channel.
const MAX_CONCURRENT_DOWNLINK: usize = 64;
/// Shortest `pollPeriod` accepted.
const MIN_POLL_PERIOD: Duration = Duration::from_millis(10);
/// Distinct errors logged per device before they are only counted.
const LOG_ONCE_CAP: usize = 64;
/// Largest trap datagram read.
const TRAP_BUFFER: usize = 65_535;

/// What to ask the agent, validated.
#[derive(Debug, Clone)]
pub enum Plan {
    /// get
    Get(Vec<u64>),
    /// multiget
    MultiGet(Vec<Vec<u64>>),
    /// getnext
    GetNext(Vec<u64>),
    /// walk, multiwalk, bulkwalk (with a bulk size)
    Walk(Vec<Vec<u64>>, Option<u32>),
    /// bulkget
    BulkGet {
        /// Non-repeaters.
        scalars: Vec<Vec<u64>>,
        /// Repeaters.
        repeating: Vec<Vec<u64>>,
        /// Repetitions.
        max: u32,
    },
    /// table, bulktable (with a bulk size)
    Table {
        /// The table's OID.
        oid: Vec<u64>,
        /// Components before the column number.
        base: usize,
        /// GETBULK repetitions, for bulktable.
        bulk: Option<u32>,
    },
    /// set: the value comes from the request.
    Set(Vec<u64>, SetType),
    /// multiset: with `mappings`, or (without) the request's params as OID → value.
    MultiSet(Option<Vec<Mapping>>, SetType),
}

impl Plan {
    /// True for set and multiset.
    pub fn writes(&self) -> bool {
        matches!(self, Plan::Set(..) | Plan::MultiSet(..))
    }
}

/// Builds a plan; errors are `(key path suffix, reason)`.
pub fn plan(
    m: &MethodConfig,
    kind: Option<&str>,
    mappings: Option<&Json>,
) -> Result<Plan, (String, String)> {
    let method = m
        .method
        .as_deref()
        .ok_or_else(|| ("method".to_string(), "missing".to_string()))?
        .trim()
        .to_ascii_lowercase();
    let one =
        |o: &Option<super::config::OneOrMany>, key: &str| -> Result<Vec<u64>, (String, String)> {
            let list = o.as_ref().map(|o| o.to_list()).unwrap_or_default();
            let first = list
                .first()
                .ok_or_else(|| (key.to_string(), format!("missing; `{method}` needs an OID")))?;
            parse_oid(first).ok_or_else(|| (key.to_string(), format!("{first:?} is not an OID")))
        };
    let many = |o: &Option<super::config::OneOrMany>,
                key: &str,
                needed: bool|
     -> Result<Vec<Vec<u64>>, (String, String)> {
        let list = o.as_ref().map(|o| o.to_list()).unwrap_or_default();
        if needed && list.is_empty() {
            return Err((key.to_string(), format!("missing; `{method}` needs OIDs")));
        }
        list.iter()
            .map(|s| parse_oid(s).ok_or_else(|| (key.to_string(), format!("{s:?} is not an OID"))))
            .collect()
    };
    let ty = match kind {
        None => SetType::OctetString,
        Some(k) => SetType::parse(k)
            .ok_or_else(|| ("type".to_string(), format!("unknown SNMP type {k:?}")))?,
    };
    Ok(match method.as_str() {
        "get" => Plan::Get(one(&m.oid, "oid")?),
        "multiget" => Plan::MultiGet(many(&m.oid, "oid", true)?),
        "getnext" => Plan::GetNext(one(&m.oid, "oid")?),
        "walk" => Plan::Walk(vec![one(&m.oid, "oid")?], None),
        "multiwalk" => Plan::Walk(many(&m.oid, "oid", true)?, None),
        "bulkwalk" => Plan::Walk(many(&m.oid, "oid", true)?, Some(m.bulk_size.unwrap_or(10))),
        "bulkget" => {
            let scalars = many(&m.scalar_oid, "scalarOid", false)?;
            let repeating = many(&m.repeating_oid, "repeatingOid", false)?;
            if scalars.is_empty() && repeating.is_empty() {
                return Err((
                    "scalarOid".into(),
                    "bulkget needs scalarOid or repeatingOid".into(),
                ));
            }
            Plan::BulkGet {
                scalars,
                repeating,
                max: m.max_list_size.unwrap_or(1),
            }
        }
        "table" | "bulktable" => {
            let oid = one(&m.oid, "oid")?;
            let base = match m.num_base_nodes {
                Some(n) if n > 0 => n,
                _ => oid.len() + 1,
            };
            Plan::Table {
                oid,
                base,
                bulk: (method == "bulktable").then(|| m.bulk_size.unwrap_or(10)),
            }
        }
        "set" => Plan::Set(one(&m.oid, "oid")?, ty),
        "multiset" => Plan::MultiSet(
            mappings
                .map(|j| downlink::parse_mappings(j, ty))
                .transpose()?,
            ty,
        ),
        other => {
            return Err((
                "method".into(),
                format!(
                    "unknown method {other:?}; expected get, multiget, getnext, walk, multiwalk, \
                     bulkget, bulkwalk, table, bulktable, set or multiset"
                ),
            ))
        }
    })
}

/// Runs a plan. `value` is what set/multiset write.
pub async fn execute(
    client: &mut Client,
    plan: &Plan,
    community: Option<&str>,
    timeout: Option<Duration>,
    value: Option<&Json>,
) -> Result<MethodResult, ClientError> {
    let (c, t) = (community, timeout);
    match plan {
        Plan::Get(o) => client.get(c, t, o).await,
        Plan::MultiGet(oids) => client.multiget(c, t, oids).await,
        Plan::GetNext(o) => client.getnext(c, t, o).await,
        Plan::Walk(bases, bulk) => {
            let mut out = Vec::new();
            for b in bases {
                client.walk(c, t, b, *bulk, &mut out).await?;
            }
            Ok(MethodResult::Map(out))
        }
        Plan::BulkGet {
            scalars,
            repeating,
            max,
        } => client.bulkget(c, t, scalars, repeating, *max).await,
        Plan::Table { oid, base, bulk } => {
            let mut binds = Vec::new();
            client.walk(c, t, oid, *bulk, &mut binds).await?;
            Ok(MethodResult::Table { binds, base: *base })
        }
        Plan::Set(o, ty) => {
            let v = value.unwrap_or(&Json::Null);
            // Upstream writes INTEGER 0 when there is no value.
            let sv = if v.is_null() {
                downlink::SetValue::Integer(0)
            } else {
                downlink::convert(v, *ty).map_err(ClientError::Request)?
            };
            let binds = client.set(c, t, &[(o.clone(), sv)]).await?;
            Ok(MethodResult::Scalar(
                binds
                    .into_iter()
                    .next()
                    .map(|b| b.value)
                    .unwrap_or(uplink::SnmpValue::Null),
            ))
        }
        Plan::MultiSet(mappings, ty) => {
            let v = value.unwrap_or(&Json::Null);
            let values = match mappings {
                Some(m) => downlink::render_mappings(m, v).map_err(ClientError::Request)?,
                None => {
                    let Json::Object(obj) = v else {
                        return Err(ClientError::Request(
                            "multiset without `mappings` takes an object OID → value".into(),
                        ));
                    };
                    let mut out = Vec::new();
                    for (k, val) in obj {
                        let o = parse_oid(k)
                            .ok_or_else(|| ClientError::Request(format!("{k:?} is not an OID")))?;
                        out.push((
                            o,
                            downlink::convert(val, *ty).map_err(ClientError::Request)?,
                        ));
                    }
                    out
                }
            };
            if values.is_empty() {
                return Err(ClientError::Request("nothing to set".into()));
            }
            Ok(MethodResult::Map(client.set(c, t, &values).await?))
        }
    }
}

/// One polled key.
#[derive(Debug)]
struct PolledKey {
    key: String,
    attribute: bool,
    plan: Plan,
    community: Option<String>,
    timeout: Option<Duration>,
}

/// One downlink rule.
#[derive(Debug)]
struct Rule {
    filter: Regex,
    plan: Plan,
    community: Option<String>,
    timeout: Option<Duration>,
}

/// One device, validated.
#[derive(Debug)]
struct Device {
    name: String,
    profile: String,
    target: Arc<Target>,
    period: Duration,
    keys: Vec<PolledKey>,
    attribute_rules: Vec<Rule>,
    rpc_rules: Vec<Rule>,
    trap_keys: Vec<(Vec<u64>, String)>,
    report: Option<Arc<ReportOverrides>>,
}

/// The SNMP connector. Build it with [`SnmpFactory`](super::SnmpFactory).
#[derive(Debug)]
pub struct SnmpConnector {
    name: String,
    devices: Vec<Arc<Device>>,
    traps: Option<TrapConfig>,
}

fn secs(file: &Path, path: String, v: Option<f64>) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(ConfigError::new(
            file,
            path,
            format!("{s} is not a timeout in seconds (0 < t < 86400)"),
        )),
    }
}

fn security(
    file: &Path,
    p: &str,
    d: &DeviceConfig,
) -> Result<Option<snmp2::v3::Security>, ConfigError> {
    use snmp2::v3::{Auth, AuthProtocol, Cipher, Security};
    let Some(user) = d.username.as_deref() else {
        return Err(ConfigError::new(
            file,
            format!("{p}.username"),
            "missing; SNMPv3 needs a user",
        ));
    };
    let auth_proto = match d
        .authentication_protocol
        .as_deref()
        .map(|s| s.trim().to_ascii_uppercase().replace(['_', '-'], ""))
        .as_deref()
    {
        None | Some("SHA") | Some("SHA1") => AuthProtocol::Sha1,
        Some("MD5") => AuthProtocol::Md5,
        Some("SHA224") => AuthProtocol::Sha224,
        Some("SHA256") => AuthProtocol::Sha256,
        Some("SHA384") => AuthProtocol::Sha384,
        Some("SHA512") => AuthProtocol::Sha512,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{p}.authenticationProtocol"),
                format!(
                "unknown protocol {other:?}; expected MD5, SHA, SHA224, SHA256, SHA384 or SHA512"
            ),
            ))
        }
    };
    let auth = match (&d.authentication_passphrase, &d.privacy_passphrase) {
        (None, None) => Auth::NoAuthNoPriv,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                file,
                format!("{p}.authenticationPassphrase"),
                "missing; privacy needs authentication",
            ))
        }
        (Some(_), None) => Auth::AuthNoPriv,
        (Some(_), Some(pp)) => {
            let cipher = match d
                .privacy_protocol
                .as_deref()
                .map(|s| s.trim().to_ascii_uppercase().replace(['_', '-'], ""))
                .as_deref()
            {
                None | Some("AES") | Some("AES128") => Cipher::Aes128,
                Some("DES") => Cipher::Des,
                Some("AES192") => Cipher::Aes192,
                Some("AES256") => Cipher::Aes256,
                Some(other) => {
                    return Err(ConfigError::new(
                        file,
                        format!("{p}.privacyProtocol"),
                        format!("unknown protocol {other:?}; expected DES, AES, AES192 or AES256"),
                    ))
                }
            };
            Auth::AuthPriv {
                cipher,
                privacy_password: pp.as_bytes().to_vec(),
            }
        }
    };
    for (k, v) in [
        ("authenticationPassphrase", &d.authentication_passphrase),
        ("privacyPassphrase", &d.privacy_passphrase),
    ] {
        if v.as_deref().is_some_and(|s| s.len() < 8) {
            return Err(ConfigError::new(
                file,
                format!("{p}.{k}"),
                "shorter than 8 characters (RFC 3414)",
            ));
        }
    }
    let mut s = Security::new(
        user.as_bytes(),
        d.authentication_passphrase
            .as_deref()
            .unwrap_or("")
            .as_bytes(),
    )
    .with_auth_protocol(auth_proto)
    .with_auth(auth);
    if let Some(c) = &d.context_name {
        s = s.with_context_name(c);
    }
    Ok(Some(s))
}

fn filter(file: &Path, path: String, re: Option<&str>) -> Result<Regex, ConfigError> {
    let re = re.unwrap_or(".*");
    Regex::new(re).map_err(|e| ConfigError::new(file, path, format!("not a valid regex: {e}")))
}

impl SnmpConnector {
    pub(super) fn build(
        file: &Path,
        name: &str,
        cfg: SnmpConnectorConfig,
        ignored: &mut Vec<String>,
    ) -> Result<Self, ConfigError> {
        let mut devices = Vec::new();
        for (i, d) in cfg.devices.iter().enumerate() {
            let p = format!("devices[{i}]");
            if d.converter.is_some() {
                ignored.push(format!("{p}.converter (custom Python converters are not run; the built-in conversion is used)"));
            }
            let version = Version::parse(&d.version).ok_or_else(|| {
                ConfigError::new(
                    file,
                    format!("{p}.version"),
                    format!("unknown version {:?}; expected v1, v2c or v3", d.version),
                )
            })?;
            if d.ip.trim().is_empty() {
                return Err(ConfigError::new(file, format!("{p}.ip"), "empty"));
            }
            let timeout =
                secs(file, format!("{p}.timeout"), d.timeout)?.unwrap_or(Duration::from_secs(6));
            let target = Arc::new(Target {
                host: d
                    .ip
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: d.port,
                version,
                community: d.community.clone(),
                security: if version == Version::V3 {
                    security(file, &p, d)?
                } else {
                    None
                },
                timeout,
                retries: d.retries.unwrap_or(1).min(10),
            });
            let mut overrides = ReportOverrides::default();
            let mut unused = Vec::new();
            if let Some(v) = &d.report_strategy {
                overrides.device = tbgw::report::parse_strategy(
                    v,
                    file,
                    &format!("{p}.reportStrategy"),
                    &mut unused,
                )?;
            }
            let mut keys = Vec::new();
            for (section, list, attribute) in [
                ("attributes", &d.attributes, true),
                ("telemetry", &d.telemetry, false),
            ] {
                for (j, k) in list.iter().enumerate() {
                    let kp = format!("{p}.{section}[{j}]");
                    let plan = plan(&k.method, None, None)
                        .map_err(|(key, why)| ConfigError::new(file, format!("{kp}.{key}"), why))?;
                    if plan.writes() {
                        return Err(ConfigError::new(file, format!("{kp}.method"), "set and multiset write; use them in attributeUpdateRequests or serverSideRpcRequests"));
                    }
                    if let Some(v) = &k.report_strategy {
                        if let Some(s) = tbgw::report::parse_strategy(
                            v,
                            file,
                            &format!("{kp}.reportStrategy"),
                            &mut unused,
                        )? {
                            overrides.keys.entry(k.key.clone()).or_insert(s);
                        }
                    }
                    keys.push(PolledKey {
                        key: k.key.clone(),
                        attribute,
                        plan,
                        community: k.method.community.clone(),
                        timeout: secs(file, format!("{kp}.timeout"), k.method.timeout)?,
                    });
                }
            }
            ignored.extend(unused);
            let rules = |list: &[RequestConfig],
                         section: &str,
                         attr: bool|
             -> Result<Vec<Rule>, ConfigError> {
                let mut out = Vec::new();
                for (j, r) in list.iter().enumerate() {
                    let rp = format!("{p}.{section}[{j}]");
                    let (fkey, fval) = if attr {
                        ("attributeFilter", r.attribute_filter.as_deref())
                    } else {
                        ("requestFilter", r.request_filter.as_deref())
                    };
                    let plan = plan(&r.method, r.kind.as_deref(), r.mappings.as_ref())
                        .map_err(|(key, why)| ConfigError::new(file, format!("{rp}.{key}"), why))?;
                    if attr && !plan.writes() {
                        return Err(ConfigError::new(
                            file,
                            format!("{rp}.method"),
                            "attribute updates write: use set or multiset",
                        ));
                    }
                    out.push(Rule {
                        filter: filter(file, format!("{rp}.{fkey}"), fval)?,
                        plan,
                        community: r.method.community.clone(),
                        timeout: secs(file, format!("{rp}.timeout"), r.method.timeout)?,
                    });
                }
                Ok(out)
            };
            let attribute_rules = rules(
                &d.attribute_update_requests,
                "attributeUpdateRequests",
                true,
            )?;
            let rpc_rules = rules(&d.server_side_rpc_requests, "serverSideRpcRequests", false)?;
            let mut trap_keys = Vec::new();
            for (j, t) in d.trap_keys.iter().enumerate() {
                let o = parse_oid(&t.oid).ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{p}.trapKeys[{j}].oid"),
                        format!("{:?} is not an OID", t.oid),
                    )
                })?;
                trap_keys.push((o, t.key.clone()));
            }
            // Longest prefix first.
            trap_keys.sort_by_key(|k| std::cmp::Reverse(k.0.len()));
            devices.push(Arc::new(Device {
                name: d.device_name.clone(),
                profile: d.device_type.clone(),
                target,
                period: Duration::from_millis(d.poll_period).max(MIN_POLL_PERIOD),
                keys,
                attribute_rules,
                rpc_rules,
                trap_keys,
                report: (!overrides.is_empty()).then(|| Arc::new(overrides)),
            }));
        }
        if let Some(t) = &cfg.traps {
            if t.host.parse::<IpAddr>().is_err() {
                return Err(ConfigError::new(
                    file,
                    "traps.host",
                    format!("{:?} is not an IP address", t.host),
                ));
            }
        }
        if devices.is_empty() && cfg.traps.is_none() {
            return Err(ConfigError::new(
                file,
                "devices",
                "no device and no trap listener configured",
            ));
        }
        Ok(SnmpConnector {
            name: name.to_string(),
            devices,
            traps: cfg.traps,
        })
    }
}

/// What a poll task keeps between polls.
struct PollState {
    online: bool,
    failing: bool,
    once: LogOnce,
}

/// Polls one device on its own schedule until cancelled. Each key is its own request: a key
/// that times out or fails is logged (once per distinct error) and counted, and the others
/// are still read and sent.
async fn poll_loop(
    connector: Arc<str>,
    d: Arc<Device>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(d.period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut client = Client::new(d.target.clone());
    let mut st = PollState {
        online: false,
        failing: false,
        once: LogOnce::new(LOG_ONCE_CAP),
    };
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let data = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            data = poll_once(&connector, &d, &mut client, &stats, &mut st) => data,
        };
        if let Some(data) = data {
            if !st.online {
                st.online = true;
                if uplink
                    .connect_device(d.name.clone(), d.profile.clone())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if uplink.send(data).await.is_err() {
                return;
            }
        } else if st.online && st.failing {
            st.online = false;
            if uplink.disconnect_device(d.name.clone()).await.is_err() {
                return;
            }
        }
    }
}

/// One poll of every key; `None` when nothing was read.
async fn poll_once(
    connector: &str,
    d: &Device,
    client: &mut Client,
    stats: &ConnectorCounters,
    st: &mut PollState,
) -> Option<DeviceData> {
    let ts = now_millis();
    let mut data = DeviceData::new(d.name.clone(), d.profile.clone());
    data.report = d.report.clone();
    let mut answered = 0usize;
    let mut unreachable = 0usize;
    for k in &d.keys {
        match execute(client, &k.plan, k.community.as_deref(), k.timeout, None).await {
            Ok(r) => {
                answered += 1;
                stats.add_messages_received(1);
                let Some(v) = r.to_json() else {
                    let why = format!("{}: no such object", k.key);
                    if st.once.first(&why) {
                        tracing::warn!(connector, device = %d.name, key = %k.key, "The agent has no such object (logged once; counted as a conversion error).");
                    }
                    stats.add_convert_errors(1);
                    continue;
                };
                let v = Value::from_json(v);
                if k.attribute {
                    data.push_attribute(k.key.clone(), v);
                } else {
                    data.push_telemetry(ts, k.key.clone(), v);
                }
            }
            Err(e) => {
                if e.is_unreachable() {
                    unreachable += 1;
                }
                if matches!(e, ClientError::Malformed(_)) {
                    stats.add_convert_errors(1);
                } else {
                    stats.add_errors(1);
                }
                let why = format!("{}: {e}", k.key);
                if st.once.first(&why) {
                    tracing::warn!(connector, device = %d.name, key = %k.key, host = %d.target.host, port = d.target.port, error = %e, "SNMP request failed (each distinct error is logged once; all are counted); the other keys are still polled.");
                }
            }
        }
    }
    st.failing = answered == 0 && unreachable > 0;
    if answered > 0 && unreachable == 0 && !st.once.is_empty() {
        tracing::info!(connector, device = %d.name, "The agent answers every key again.");
        st.once.clear();
    }
    (!data.is_empty()).then_some(data)
}

fn rpc_error(e: ClientError) -> RpcError {
    match e {
        ClientError::Timeout(_) => RpcError::Timeout(e.to_string()),
        ClientError::Unreachable(_) => RpcError::Unreachable(e.to_string()),
        ClientError::Request(_) => RpcError::BadRequest(e.to_string()),
        _ => RpcError::Device(e.to_string()),
    }
}

/// Writes each updated attribute with every rule whose `attributeFilter` matches its key.
async fn handle_attribute_update(
    connector: &str,
    devices: &[Arc<Device>],
    u: AttributeUpdate,
    stats: &ConnectorCounters,
) {
    let Some(d) = devices.iter().find(|d| d.name == u.device) else {
        return;
    };
    for (key, value) in &u.values {
        for r in d
            .attribute_rules
            .iter()
            .filter(|r| r.filter.is_match(key).unwrap_or(false))
        {
            let mut client = Client::new(d.target.clone());
            match execute(
                &mut client,
                &r.plan,
                r.community.as_deref(),
                r.timeout,
                Some(value),
            )
            .await
            {
                Ok(_) => {
                    tracing::debug!(connector, device = %d.name, attribute = %key, "Attribute written.")
                }
                Err(e) => {
                    stats.add_errors(1);
                    tracing::warn!(connector, device = %d.name, attribute = %key, error = %e, "Attribute update failed.");
                }
            }
        }
    }
}

/// Answers an RPC: reserved `get`/`set` (params `method=…;oid=…;value=…`), else the first
/// `serverSideRpcRequests` entry whose `requestFilter` matches the method.
async fn handle_rpc(devices: &[Arc<Device>], rpc: RpcRequest) {
    let RpcRequest {
        device,
        method,
        params,
        responder,
        ..
    } = rpc;
    let Some(name) = device else {
        return responder.err(RpcError::NotFound(format!(
            "the SNMP connector has no connector RPC `{method}`"
        )));
    };
    let Some(d) = devices.iter().find(|d| d.name == name) else {
        return responder.err(RpcError::NotFound(format!("no SNMP device `{name}`")));
    };
    let mut client = Client::new(d.target.clone());
    let outcome = if method == "get" || method == "set" {
        let p = match downlink::reserved_params(&params) {
            Ok(p) => p,
            Err(e) => return responder.err(RpcError::BadRequest(e)),
        };
        let text = |k: &str| {
            p.get(k).map(|v| match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let m = MethodConfig {
            method: Some(text("method").unwrap_or_else(|| method.clone())),
            oid: text("oid").map(super::config::OneOrMany::One),
            ..MethodConfig::default()
        };
        let plan = match plan(&m, text("type").as_deref(), None) {
            Ok(p) => p,
            Err((k, why)) => {
                return responder.err(RpcError::BadRequest(format!("params: {k}: {why}")))
            }
        };
        let value = p.get("value").cloned();
        if method == "set" && value.is_none() {
            return responder.err(RpcError::BadRequest("params: value: missing".into()));
        }
        let timeout = p
            .get("timeout")
            .and_then(|t| t.as_f64().or_else(|| t.as_str()?.parse().ok()))
            .filter(|t| *t > 0.0 && *t < 86_400.0)
            .map(Duration::from_secs_f64);
        execute(&mut client, &plan, None, timeout, value.as_ref()).await
    } else {
        let Some(r) = d
            .rpc_rules
            .iter()
            .find(|r| r.filter.is_match(&method).unwrap_or(false))
        else {
            return responder.err(RpcError::NotFound(format!(
                "method `{method}`: no serverSideRpcRequests entry matches"
            )));
        };
        execute(
            &mut client,
            &r.plan,
            r.community.as_deref(),
            r.timeout,
            Some(&params),
        )
        .await
    };
    match outcome {
        Ok(r) => responder.ok(json!({ "result": r.rpc_json() })),
        Err(e) => responder.err(rpc_error(e)),
    }
}

/// Receives traps and informs and sends them as telemetry of the device whose `ip` is the
/// sender's address.
async fn trap_loop(
    connector: Arc<str>,
    cfg: TrapConfig,
    devices: Vec<Arc<Device>>,
    uplink: UplinkSender,
    stats: ConnectorCounters,
    cancel: CancellationToken,
) -> Result<(), ConnectorError> {
    let addr = SocketAddr::new(
        cfg.host
            .parse()
            .map_err(|_| ConnectorError::Other("traps.host".into()))?,
        cfg.port,
    );
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|e| ConnectorError::Connection(format!("trap listener on {addr}: {e}")))?;
    tracing::info!(connector = %connector, %addr, "Listening for SNMP traps.");
    let mut by_ip: HashMap<IpAddr, Arc<Device>> = HashMap::new();
    for d in &devices {
        match tokio::net::lookup_host((d.target.host.as_str(), d.target.port)).await {
            Ok(addrs) => {
                for a in addrs {
                    by_ip.entry(canonical(a.ip())).or_insert_with(|| d.clone());
                }
            }
            Err(e) => {
                tracing::warn!(connector = %connector, device = %d.name, error = %e, "Cannot resolve the device's ip; its traps are not recognised.")
            }
        }
    }
    let mut once = LogOnce::new(LOG_ONCE_CAP);
    let mut buf = vec![0u8; TRAP_BUFFER];
    loop {
        let (n, from) = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    stats.add_errors(1);
                    if once.first(&format!("recv: {e}")) {
                        tracing::warn!(connector = %connector, error = %e, "Trap socket error.");
                    }
                    continue;
                }
            },
        };
        stats.add_messages_received(1);
        stats.add_bytes_received(n as u64);
        let bytes = &buf[..n];
        let trap = match uplink::decode_trap(bytes) {
            Ok(t) => t,
            Err(e) => {
                stats.add_convert_errors(1);
                if once.first(&format!("{}: {e}", from.ip())) {
                    tracing::warn!(connector = %connector, from = %from, error = %e, "Cannot decode a trap (logged once per sender and error; all are counted).");
                }
                continue;
            }
        };
        if !cfg.communities.is_empty()
            && !cfg
                .communities
                .iter()
                .any(|c| c.as_bytes() == trap.community.as_slice())
        {
            stats.add_convert_errors(1);
            if once.first(&format!("{}: community", from.ip())) {
                tracing::warn!(connector = %connector, from = %from, "Trap with a community not in traps.communities dropped (logged once per sender).");
            }
            continue;
        }
        if trap.inform_id.is_some() {
            if let Some(reply) = inform_reply(bytes) {
                let _ = socket.send_to(&reply, from).await;
            }
        }
        let Some(d) = by_ip.get(&canonical(from.ip())) else {
            stats.add_convert_errors(1);
            if once.first(&format!("{}: unknown", from.ip())) {
                tracing::warn!(connector = %connector, from = %from, "Trap from an address no device has as its ip dropped (logged once per sender).");
            }
            continue;
        };
        if uplink.send(trap_data(d, &trap)).await.is_err() {
            return Ok(());
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so a dual-stack socket matches `ip` of either kind.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The Response that acknowledges an inform: the same request id and varbinds.
fn inform_reply(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut pdu = snmp2::Pdu::from_bytes(bytes).ok()?;
    pdu.message_type = snmp2::MessageType::Response;
    pdu.error_status = 0;
    pdu.error_index = 0;
    pdu.to_bytes().ok()
}

/// A trap as telemetry of its device: `trapOid`, and each varbind under its `trapKeys` name
/// or its OID.
fn trap_data(d: &Device, t: &uplink::Trap) -> DeviceData {
    let ts = now_millis();
    let mut data = DeviceData::new(d.name.clone(), d.profile.clone());
    data.report = d.report.clone();
    data.push_telemetry(ts, "trapOid", Value::String(t.trap_oid.clone()));
    for b in &t.binds {
        let key = d
            .trap_keys
            .iter()
            .find(|(o, _)| b.oid.starts_with(o))
            .map_or_else(|| b.oid_text(), |(_, k)| k.clone());
        data.push_telemetry(ts, key, Value::from_json(b.value.to_json()));
    }
    data
}

#[async_trait]
impl Connector for SnmpConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let cancel = cx.cancellation().clone();
        let name: Arc<str> = Arc::from(self.name.as_str());
        for d in &self.devices {
            if d.keys.is_empty() {
                continue;
            }
            let poll = poll_loop(
                name.clone(),
                d.clone(),
                cx.uplink().clone(),
                cx.stats().clone(),
                cancel.clone(),
            );
            cx.spawn(
                format!("poll {} ({}:{})", d.name, d.target.host, d.target.port),
                async move {
                    poll.await;
                    Ok(())
                },
            );
        }
        if let Some(t) = &self.traps {
            cx.spawn(
                format!("trap listener {}:{}", t.host, t.port),
                trap_loop(
                    name.clone(),
                    t.clone(),
                    self.devices.clone(),
                    cx.uplink().clone(),
                    cx.stats().clone(),
                    cancel.clone(),
                ),
            );
        }
        let devices: Arc<[Arc<Device>]> = self.devices.clone().into();
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_DOWNLINK));
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
                    let Ok(permit) = limit.clone().acquire_owned().await else { break };
                    let devices = devices.clone();
                    let stats = cx.stats().clone();
                    let name = name.clone();
                    cx.spawn("downlink request", async move {
                        let _permit = permit;
                        match dl {
                            Downlink::Rpc(rpc) => handle_rpc(&devices, rpc).await,
                            Downlink::AttributeUpdate(u) => handle_attribute_update(&name, &devices, u, &stats).await,
                            _ => {}
                        }
                        Ok(())
                    });
                }
            }
        }
        cx.finish_tasks(Duration::ZERO).await;
        Ok(())
    }
}
