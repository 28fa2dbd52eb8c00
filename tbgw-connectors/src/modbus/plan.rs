//! Validation of `modbus.json` and its runtime form: resolved value types, expanded address
//! ranges, slaves grouped by connection and coalesced read plans.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;
use tbgw::config::ConfigError;

use super::codec::{self, Framing, Order, ValueSpec, ValueType};
use super::config::{ConnectionConfig, DatapointConfig, SlaveConfig, TlsConfig};
use super::tls;
use super::transport::{Endpoint, SerialSettings};

/// Where a datapoint's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Client-side attribute.
    Attribute,
    /// Telemetry.
    Telemetry,
}

/// A validated datapoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    /// Key, RPC method or attribute name (range templates already rendered).
    pub key: String,
    /// Function code.
    pub fc: u8,
    /// First address.
    pub address: u16,
    /// How the value is decoded and encoded.
    pub spec: ValueSpec,
    /// Raw value → label.
    pub variants: Option<serde_json::Map<String, Json>>,
    /// Cap on the request that reads this datapoint.
    pub max_per_request: Option<u16>,
}

impl Datapoint {
    /// How many addresses (registers, or bits for function codes 1 and 2) it spans.
    pub fn span(&self) -> u16 {
        let regs = self.spec.ty.registers(self.spec.count).max(self.spec.count);
        if self.fc <= 2 {
            if self.spec.ty == ValueType::Bits {
                self.spec.count.max(1)
            } else {
                regs.saturating_mul(16)
            }
        } else {
            regs
        }
    }
}

/// One read request of a poll cycle: a contiguous range and the datapoints it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    /// Function code 1 to 4.
    pub fc: u8,
    /// First address.
    pub address: u16,
    /// Registers or bits.
    pub count: u16,
    /// Indexes into the slave's `reads`.
    pub members: Vec<usize>,
}

/// Groups readable datapoints into as few requests as possible: neighbouring or overlapping
/// addresses of one function code share a request, up to `max_regs` registers (function codes
/// 3 and 4) or `max_bits` bits (1 and 2), or the smallest `maxRegistersPerRequest` of a member.
pub fn coalesce(points: &[Datapoint], max_regs: u16, max_bits: u16) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].fc, points[i].address));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    let mut block_limit = 0u32;
    for i in order {
        let p = &points[i];
        let base = if p.fc <= 2 { max_bits } else { max_regs };
        let own_limit = u32::from(p.max_per_request.unwrap_or(base).clamp(1, base));
        let start = u32::from(p.address);
        let end = start + u32::from(p.span());
        if let Some(b) = blocks.last_mut() {
            let b_start = u32::from(b.address);
            let b_end = b_start + u32::from(b.count);
            let limit = block_limit.min(own_limit);
            if b.fc == p.fc && start <= b_end && end.max(b_end) - b_start <= limit {
                b.count = (end.max(b_end) - b_start) as u16;
                b.members.push(i);
                block_limit = limit;
                continue;
            }
        }
        block_limit = own_limit;
        blocks.push(ReadBlock {
            fc: p.fc,
            address: p.address,
            count: p.span(),
            members: vec![i],
        });
    }
    blocks
}

/// A validated slave of the master section.
#[derive(Debug, Clone)]
pub struct SlavePlan {
    /// Device name.
    pub device: String,
    /// Device profile.
    pub device_type: String,
    /// Unit id.
    pub unit: u8,
    /// Poll period.
    pub poll: Duration,
    /// Answer timeout.
    pub timeout: Duration,
    /// Extra tries after a timeout or invalid answer.
    pub retries: u32,
    /// Retry when nothing was answered.
    pub retry_on_empty: bool,
    /// Retry when the answer was invalid.
    pub retry_on_invalid: bool,
    /// Pause between two requests.
    pub delay_between: Duration,
    /// Time allowed for one connection attempt.
    pub connect_attempt_time: Duration,
    /// Failures in a row before the long wait.
    pub connect_attempt_count: u32,
    /// The long wait.
    pub wait_after_failed: Duration,
    /// Polled datapoints with their section.
    pub reads: Vec<(Section, Datapoint)>,
    /// Device and datapoint report strategies, attached to every record of this slave.
    pub report: Option<std::sync::Arc<tbgw::report::ReportOverrides>>,
    /// The coalesced read plan over `reads`.
    pub blocks: Vec<ReadBlock>,
    /// `attributeUpdates`.
    pub attribute_updates: Vec<Datapoint>,
    /// `rpc`.
    pub rpc: Vec<Datapoint>,
    /// Default byte and word order (for ad-hoc RPCs).
    pub orders: (Order, Order),
}

/// One connection and the slaves polled over it, in configuration order.
///
/// Cloning is cheap: the slaves (with their datapoints, the bulk of a large configuration)
/// are shared, so the connector and its connection task hold one copy between them.
#[derive(Debug, Clone)]
pub struct ConnectionPlan {
    /// Where.
    pub endpoint: Endpoint,
    /// Framing.
    pub framing: Framing,
    /// The slaves.
    pub slaves: Arc<[SlavePlan]>,
}

/// Resolves the connection keys of one slave (or of the `slave` section).
pub fn endpoint(
    file: &Path,
    prefix: &str,
    c: &ConnectionConfig,
) -> Result<(Endpoint, Framing), ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(file, format!("{prefix}.{key}"), reason);
    let kind = c.kind.as_deref().unwrap_or("tcp").to_ascii_lowercase();
    let framing = match c.method.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => {
            if kind == "serial" {
                Framing::Rtu
            } else {
                Framing::Mbap
            }
        }
        Some("socket") | Some("tcp") => Framing::Mbap,
        Some("rtu") => Framing::Rtu,
        Some("ascii") => Framing::Ascii,
        // Modbus/TCP inside TLS: MBAP framing; the callers add the TLS settings.
        Some("tls") if kind == "tcp" => Framing::Mbap,
        Some("tls") => {
            return Err(err(
                "method",
                format!("`tls` (Modbus/TCP over TLS) needs `type: tcp`, not `{kind}`"),
            ))
        }
        Some(other) => {
            return Err(err(
                "method",
                format!("unknown method `{other}`; expected socket, rtu, ascii or tls"),
            ))
        }
    };
    let port_num = |required: bool| -> Result<u16, ConfigError> {
        match &c.port {
            Some(Json::Number(n)) => n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| err("port", format!("{n} is not a port number"))),
            Some(Json::String(s)) => s
                .parse()
                .map_err(|_| err("port", format!("`{s}` is not a port number"))),
            None if !required => Ok(502),
            _ => Err(err("port", "expected a port number".into())),
        }
    };
    let ep = match kind.as_str() {
        "tcp" | "udp" => {
            let host = c.host.clone().unwrap_or_else(|| "127.0.0.1".into());
            if host.trim().is_empty() {
                return Err(err("host", "must not be empty".into()));
            }
            let port = port_num(false)?;
            if kind == "tcp" {
                Endpoint::Tcp { host, port }
            } else {
                Endpoint::Udp { host, port }
            }
        }
        "serial" => {
            let path = match &c.port {
                Some(Json::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(err(
                        "port",
                        "a serial connection needs the device path".into(),
                    ))
                }
            };
            let parity = c
                .parity
                .as_deref()
                .unwrap_or("N")
                .chars()
                .next()
                .unwrap_or('N')
                .to_ascii_uppercase();
            if !matches!(parity, 'N' | 'E' | 'O') {
                return Err(err("parity", "expected N, E or O".into()));
            }
            let bytesize = c.bytesize.unwrap_or(8);
            if !(5..=8).contains(&bytesize) {
                return Err(err("bytesize", "expected 5 to 8".into()));
            }
            let stopbits = c.stopbits.unwrap_or(1);
            if !matches!(stopbits, 1 | 2) {
                return Err(err("stopbits", "expected 1 or 2".into()));
            }
            Endpoint::Serial(SerialSettings {
                path,
                baudrate: c.baudrate.unwrap_or(19200),
                bytesize,
                parity,
                stopbits,
            })
        }
        other => {
            return Err(err(
                "type",
                format!("unknown type `{other}`; expected tcp, udp or serial"),
            ))
        }
    };
    Ok((ep, framing))
}

/// Turns a TCP endpoint into Modbus/TCP over TLS when `method` is `tls` or a non-empty TLS
/// section (`master.slaves[].tls`, `slave.security`) asks for it. `section` is the key of that
/// section, for errors. Returns the TLS section to use, `None` for plain connections.
pub fn tls_section<'a>(
    file: &Path,
    prefix: &str,
    section: &str,
    c: &ConnectionConfig,
    ep: &Endpoint,
    t: Option<&'a TlsConfig>,
) -> Result<Option<std::borrow::Cow<'a, TlsConfig>>, ConfigError> {
    let by_method = c
        .method
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("tls"));
    let t = t.filter(|t| !t.is_empty());
    if !by_method && t.is_none() {
        return Ok(None);
    }
    if !matches!(ep, Endpoint::Tcp { .. })
        || c.method
            .as_deref()
            .is_some_and(|m| matches!(m.to_ascii_lowercase().as_str(), "rtu" | "ascii"))
    {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.{section}"),
            "TLS is only for `type: tcp` with `method` `socket` or `tls`",
        ));
    }
    Ok(Some(match t {
        Some(t) => std::borrow::Cow::Borrowed(t),
        None => std::borrow::Cow::Owned(TlsConfig::default()),
    }))
}

/// The directory relative paths of a connector file are taken from.
pub fn config_dir(file: &Path) -> &Path {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Parses an order key.
pub fn order(
    file: &Path,
    key: &str,
    v: Option<&str>,
    default: Order,
) -> Result<Order, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => Order::parse(s)
            .ok_or_else(|| ConfigError::new(file, key, format!("`{s}`: expected BIG or LITTLE"))),
    }
}

/// What a datapoint is for; decides the function codes it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Polled: 1 to 4.
    Read,
    /// Written: 5, 6, 15, 16.
    Write,
    /// RPC: any.
    Any,
    /// Slave-mode initial value: no function code needed.
    Slave,
}

/// Validates one datapoint; a range address expands into several.
pub fn datapoints(
    file: &Path,
    key: &str,
    d: &DatapointConfig,
    orders: (Order, Order),
    unit: u8,
    use_: Use,
) -> Result<Vec<Datapoint>, ConfigError> {
    let err = |k: &str, reason: String| ConfigError::new(file, format!("{key}.{k}"), reason);
    let tag = d.tag.clone().ok_or_else(|| err("tag", "missing".into()))?;
    let count = d
        .objects_count
        .or(d.registers_count)
        .or(d.register_count)
        .unwrap_or(1);
    if count == 0 {
        return Err(err("objectsCount", "must be at least 1".into()));
    }
    let type_name = d
        .kind
        .clone()
        .ok_or_else(|| err("type", "missing".into()))?;
    let ty = ValueType::parse(&type_name, count).ok_or_else(|| {
        err(
            "type",
            format!("unknown type `{type_name}` (or a generic type with {count} registers; generic types need 1, 2 or 4)"),
        )
    })?;
    let fc = match (use_, d.function_code) {
        (Use::Slave, f) => f.unwrap_or(3),
        (_, None) => return Err(err("functionCode", "missing".into())),
        (Use::Read, Some(f @ 1..=4)) => f,
        (Use::Write, Some(f @ (5 | 6 | 15 | 16))) => f,
        (Use::Any, Some(f @ (1..=6 | 15 | 16))) => f,
        (_, Some(f)) => {
            return Err(err(
                "functionCode",
                format!(
                    "{f} is not valid here; expected {}",
                    match use_ {
                        Use::Read => "1, 2, 3 or 4",
                        Use::Write => "5, 6, 15 or 16",
                        _ => "1 to 6, 15 or 16",
                    }
                ),
            ))
        }
    };
    let mut spec = ValueSpec::new(ty, count);
    spec.byte_order = order(
        file,
        &format!("{key}.byteOrder"),
        d.byte_order.as_deref(),
        orders.0,
    )?;
    spec.word_order = order(
        file,
        &format!("{key}.wordOrder"),
        d.word_order.as_deref(),
        orders.1,
    )?;
    spec.bit = d.bit;
    spec.bits_as_int = match d
        .bit_target_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("bool") | Some("boolean") => false,
        Some("int") | Some("integer") => true,
        Some(other) => {
            return Err(err(
                "bitTargetType",
                format!("`{other}`: expected bool or int"),
            ))
        }
    };
    if d.divider == Some(0.0) {
        return Err(err("divider", "must not be 0".into()));
    }
    spec.divider = d.divider;
    spec.multiplier = d.multiplier;
    let regs = ty.registers(count);
    let max_regs = if fc <= 2 || fc == 5 || fc == 15 {
        codec::MAX_READ_BITS
    } else {
        codec::MAX_READ_REGISTERS
    };
    if regs > max_regs {
        return Err(err(
            "objectsCount",
            format!("{regs} exceeds what one request can carry ({max_regs})"),
        ));
    }
    let (first, last) = match &d.address {
        Some(Json::Number(n)) => {
            let a = n
                .as_u64()
                .and_then(|a| u16::try_from(a).ok())
                .ok_or_else(|| err("address", format!("{n} is not an address 0..65535")))?;
            (a, None)
        }
        Some(Json::String(s)) => {
            let parse = |t: &str| {
                t.trim()
                    .parse::<u16>()
                    .map_err(|_| err("address", format!("`{s}`: expected N or N-M")))
            };
            match s.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse(a)?, parse(b)?);
                    if b < a {
                        return Err(err(
                            "address",
                            format!("`{s}`: range ends before it starts"),
                        ));
                    }
                    (a, Some(b))
                }
                None => (parse(s)?, None),
            }
        }
        None => return Err(err("address", "missing".into())),
        Some(other) => return Err(err("address", format!("{other}: expected N or \"N-M\""))),
    };
    let make = |address: u16, key: String| Datapoint {
        key,
        fc,
        address,
        spec: spec.clone(),
        variants: d.variants.clone(),
        max_per_request: d.max_registers_per_request,
    };
    let Some(last) = last else {
        return Ok(vec![make(first, tag)]);
    };
    // A range: one datapoint per `objectsCount` addresses, keys from the tag template.
    let template = tbgw::expr::Template::parse(&tag).map_err(|e| err("tag", e.to_string()))?;
    let step = if fc <= 2 && ty == ValueType::Bits {
        count
    } else {
        regs.max(count)
    };
    let mut out = Vec::new();
    let mut a = u32::from(first);
    while a + u32::from(step) - 1 <= u32::from(last) {
        let scope = serde_json::json!({"unitId": unit, "address": a, "tag": tag});
        let k = if template.is_constant() {
            format!("{tag}_{a}")
        } else {
            template
                .render(&scope)
                .ok_or_else(|| err("tag", format!("template `{tag}` has a placeholder other than ${{unitId}}, ${{address}} or ${{tag}}")))?
        };
        out.push(make(a as u16, k));
        a += u32::from(step);
    }
    if out.is_empty() {
        return Err(err("address", "the range is shorter than one value".into()));
    }
    Ok(out)
}

/// Validates one slave of `master.slaves[]`.
pub fn slave(
    file: &Path,
    i: usize,
    s: &SlaveConfig,
) -> Result<(Endpoint, Framing, SlavePlan), ConfigError> {
    let prefix = format!("master.slaves[{i}]");
    let c = &s.connection;
    let (mut ep, framing) = endpoint(file, &prefix, c)?;
    if let Some(t) = tls_section(file, &prefix, "tls", c, &ep, s.tls.as_ref())? {
        if let Endpoint::Tcp { host, port } = ep {
            let tls = tls::client(config_dir(file), &host, &t)
                .map_err(|e| ConfigError::new(file, format!("{prefix}.tls.{}", e.key), e.reason))?;
            if !tls.verifies_server() {
                tracing::warn!(file = %file.display(), key = %format!("{prefix}.tls"), "Modbus/TCP over TLS without `cafile`: the device's certificate is not checked (as upstream does).");
            }
            ep = Endpoint::Tls { host, port, tls };
        }
    }
    let unit = c.unit_id.unwrap_or(1);
    let orders = (
        order(
            file,
            &format!("{prefix}.byteOrder"),
            c.byte_order.as_deref(),
            Order::Big,
        )?,
        order(
            file,
            &format!("{prefix}.wordOrder"),
            c.word_order.as_deref(),
            Order::Little,
        )?,
    );
    let mut reads = Vec::new();
    let mut overrides = tbgw::report::ReportOverrides::default();
    let mut unused = Vec::new();
    overrides.device = match &s.report_strategy {
        Some(v) => {
            tbgw::report::parse_strategy(v, file, &format!("{prefix}.reportStrategy"), &mut unused)?
        }
        None => None,
    };
    if overrides.device.is_none() {
        overrides.device = tbgw::report::legacy_on_change(
            s.send_data_only_on_change.as_ref(),
            file,
            &format!("{prefix}.sendDataOnlyOnChange"),
        )?;
    }
    for (section, list, name) in [
        (Section::Attribute, &s.attributes, "attributes"),
        (Section::Telemetry, &s.timeseries, "timeseries"),
    ] {
        for (j, d) in list.iter().enumerate() {
            let strategy = match &d.report_strategy {
                Some(v) => tbgw::report::parse_strategy(
                    v,
                    file,
                    &format!("{prefix}.{name}[{j}].reportStrategy"),
                    &mut unused,
                )?,
                None => None,
            };
            for p in datapoints(
                file,
                &format!("{prefix}.{name}[{j}]"),
                d,
                orders,
                unit,
                Use::Read,
            )? {
                // Range templates expand to several keys: each gets the entry's strategy.
                if let Some(st) = &strategy {
                    overrides
                        .keys
                        .entry(p.key.clone())
                        .or_insert_with(|| st.clone());
                }
                reads.push((section, p));
            }
        }
    }
    let mut attribute_updates = Vec::new();
    for (j, d) in s.attribute_updates.iter().enumerate() {
        attribute_updates.extend(datapoints(
            file,
            &format!("{prefix}.attributeUpdates[{j}]"),
            d,
            orders,
            unit,
            Use::Write,
        )?);
    }
    let mut rpc = Vec::new();
    for (j, d) in s.rpc.iter().enumerate() {
        rpc.extend(datapoints(
            file,
            &format!("{prefix}.rpc[{j}]"),
            d,
            orders,
            unit,
            Use::Any,
        )?);
    }
    let max = s
        .max_registers_per_request
        .unwrap_or(codec::MAX_READ_REGISTERS);
    if max == 0 {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.maxRegistersPerRequest"),
            "must be at least 1",
        ));
    }
    reads.shrink_to_fit();
    let points: Vec<Datapoint> = reads.iter().map(|(_, p)| p.clone()).collect();
    let blocks = coalesce(
        &points,
        max.min(codec::MAX_READ_REGISTERS),
        s.max_registers_per_request
            .map_or(codec::MAX_READ_BITS, |m| m.min(codec::MAX_READ_BITS)),
    );
    let timeout = c.timeout.unwrap_or(3.0);
    if !(timeout > 0.0 && timeout < 86_400.0) {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.timeout"),
            "expected seconds > 0",
        ));
    }
    let poll = c.poll_period.unwrap_or(5000);
    if poll == 0 {
        return Err(ConfigError::new(
            file,
            format!("{prefix}.pollPeriod"),
            "must be at least 1 ms",
        ));
    }
    let retries = s.retries.map_or(3.0, |r| r.as_f64());
    let plan = SlavePlan {
        device: c
            .device_name
            .clone()
            .unwrap_or_else(|| format!("Modbus Device {unit}")),
        device_type: c.device_type.clone().unwrap_or_else(|| "default".into()),
        unit,
        poll: Duration::from_millis(poll),
        timeout: Duration::from_secs_f64(timeout),
        retries: retries.clamp(0.0, 100.0) as u32,
        retry_on_empty: s.retry_on_empty.unwrap_or(true),
        retry_on_invalid: s.retry_on_invalid.unwrap_or(true),
        delay_between: Duration::from_millis(s.delay_between_requests_ms.unwrap_or(0)),
        connect_attempt_time: Duration::from_millis(
            s.connect_attempt_time_ms.unwrap_or(5000).max(500),
        ),
        connect_attempt_count: s.connect_attempt_count.unwrap_or(5).max(2),
        wait_after_failed: Duration::from_millis(s.wait_after_failed_attempts_ms.unwrap_or(30_000)),
        reads,
        blocks,
        attribute_updates,
        rpc,
        orders,
        report: (!overrides.is_empty()).then(|| std::sync::Arc::new(overrides)),
    };
    Ok((ep, framing, plan))
}

/// Groups slaves by endpoint, keeping configuration order. Slaves that share an endpoint must
/// agree on the framing.
pub fn connections(
    file: &Path,
    slaves: Vec<(Endpoint, Framing, SlavePlan)>,
) -> Result<Vec<ConnectionPlan>, ConfigError> {
    // `Endpoint::Tls` holds a rustls configuration behind an `Arc`, but hashes and compares by
    // its settings only, which never change.
    #[allow(clippy::mutable_key_type)]
    let mut index: HashMap<Endpoint, usize> = HashMap::new();
    let mut out: Vec<(Endpoint, Framing, Vec<SlavePlan>)> = Vec::new();
    for (i, (ep, framing, plan)) in slaves.into_iter().enumerate() {
        match index.get(&ep) {
            Some(&k) => {
                if out[k].1 != framing {
                    return Err(ConfigError::new(
                        file,
                        format!("master.slaves[{i}].method"),
                        format!("{ep} is shared with an earlier slave that uses another framing"),
                    ));
                }
                out[k].2.push(plan);
            }
            None => {
                index.insert(ep.clone(), out.len());
                out.push((ep, framing, vec![plan]));
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(endpoint, framing, slaves)| ConnectionPlan {
            endpoint,
            framing,
            slaves: slaves.into(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dp(fc: u8, address: u16, ty: &str, count: u16) -> Datapoint {
        Datapoint {
            key: format!("k{address}"),
            fc,
            address,
            spec: ValueSpec::new(ValueType::parse(ty, count).expect("type"), count),
            variants: None,
            max_per_request: None,
        }
    }

    #[test]
    fn slave_and_datapoint_report_strategies_cover_every_generated_key() {
        let cfg: SlaveConfig = serde_json::from_value(serde_json::json!({
            "type": "tcp", "host": "127.0.0.1", "port": 5020, "unitId": 1,
            "deviceName": "m1", "pollPeriod": 1000,
            "sendDataOnlyOnChange": true,
            "timeseries": [
                {"tag": "r_${address}", "type": "16uint", "functionCode": 3,
                 "objectsCount": 1, "address": "0-2",
                 "reportStrategy": {"type": "ON_REPORT_PERIOD", "reportPeriod": 1000}},
                {"tag": "plain", "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": 10}
            ]
        }))
        .expect("slave config");
        let (_, _, plan) = slave(Path::new("modbus.json"), 0, &cfg).expect("plan");
        let r = plan.report.expect("overrides");
        assert_eq!(
            r.device.as_ref().map(|s| s.kind),
            Some(tbgw::config::ReportType::OnChange),
            "legacy sendDataOnlyOnChange is the device level"
        );
        let mut keys: Vec<_> = r.keys.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["r_0", "r_1", "r_2"]);
    }

    #[test]
    fn a_cloned_connection_plan_shares_its_slaves() {
        let cfg: SlaveConfig = serde_json::from_value(serde_json::json!({
            "type": "tcp", "host": "127.0.0.1", "port": 5020, "deviceName": "m1",
            "timeseries": [{"tag": "a", "type": "16uint", "functionCode": 3, "address": 0}]
        }))
        .expect("slave config");
        let file = Path::new("modbus.json");
        let plans = connections(file, vec![slave(file, 0, &cfg).expect("plan")]).expect("valid");
        // The connector keeps one for downlink routing, the connection task the other.
        let task_copy = plans[0].clone();
        assert!(Arc::ptr_eq(&plans[0].slaves, &task_copy.slaves));
        assert_eq!(plans[0].slaves[0].reads.capacity(), 1);
    }

    #[test]
    fn neighbouring_registers_share_a_request_up_to_the_limit() {
        let points: Vec<Datapoint> = (0..1000).map(|a| dp(3, a, "16uint", 1)).collect();
        let blocks = coalesce(&points, 125, 2000);
        assert_eq!(blocks.len(), 8);
        assert_eq!((blocks[0].address, blocks[0].count), (0, 125));
        assert_eq!((blocks[7].address, blocks[7].count), (875, 125));
        assert_eq!(blocks.iter().map(|b| b.members.len()).sum::<usize>(), 1000);
    }

    #[test]
    fn gaps_function_codes_and_per_datapoint_limits_split_requests() {
        let mut points = vec![
            dp(3, 0, "32float", 2),
            dp(3, 2, "16int", 1),
            dp(3, 10, "16int", 1), // gap: new request
            dp(4, 3, "16int", 1),  // other function code
            dp(1, 0, "bits", 1),
            dp(1, 1, "bits", 3),
            dp(3, 1, "16int", 1), // overlaps the first block
        ];
        points[2].max_per_request = Some(1);
        let blocks = coalesce(&points, 125, 2000);
        let summary: Vec<(u8, u16, u16, usize)> = blocks
            .iter()
            .map(|b| (b.fc, b.address, b.count, b.members.len()))
            .collect();
        assert_eq!(
            summary,
            vec![(1, 0, 4, 2), (3, 0, 3, 3), (3, 10, 1, 1), (4, 3, 1, 1)]
        );
        let limited: Vec<Datapoint> = (0..10).map(|a| dp(3, a, "16int", 1)).collect();
        assert_eq!(coalesce(&limited, 4, 2000).len(), 3);
    }

    #[test]
    fn address_ranges_expand_with_their_tag_template() {
        let d = DatapointConfig {
            tag: Some("${unitId}_${address}".into()),
            kind: Some("32int".into()),
            function_code: Some(3),
            objects_count: Some(2),
            address: Some(serde_json::json!("10-15")),
            ..Default::default()
        };
        let v = datapoints(
            Path::new("m.json"),
            "x",
            &d,
            (Order::Big, Order::Big),
            7,
            Use::Read,
        )
        .expect("valid");
        let keys: Vec<(&str, u16)> = v.iter().map(|p| (p.key.as_str(), p.address)).collect();
        assert_eq!(keys, vec![("7_10", 10), ("7_12", 12), ("7_14", 14)]);
        let bad = DatapointConfig {
            function_code: Some(6),
            ..d
        };
        let e = datapoints(
            Path::new("m.json"),
            "x",
            &bad,
            (Order::Big, Order::Big),
            7,
            Use::Read,
        )
        .expect_err("write fc in a read section");
        assert_eq!(e.key, "x.functionCode");
    }
}
