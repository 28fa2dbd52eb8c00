//! The Modbus connector's run loop: starts one task per connection (and the slave server),
//! then routes downlink requests to them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value as Json};
use tbgw::config::ConfigError;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::{Downlink, RpcError, RpcRequest, RpcResponder};
use tokio::sync::mpsc;

use super::codec::Framing;
use super::config::{DatapointConfig, SlaveConfig, SlaveServerConfig};
use super::master::{run_op, Command, CommandSender, ConnectionTask, Op, Reply};
use super::plan::{self, ConnectionPlan, SlavePlan, Use};
use super::slave::{self, SlaveServer, SlaveServerPlan};
use super::transport::{Endpoint, Transport};

/// Pending downlink requests per connection; a full queue answers "busy" instead of waiting.
const COMMAND_QUEUE: usize = 64;
/// Rate limit of the "slave server busy" warning.
static DROP_LOG: tbgw::stats::LogThrottle =
    tbgw::stats::LogThrottle::new(tbgw::stats::DROP_LOG_INTERVAL);
/// How long a connector RPC over all slaves waits for their answers.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Modbus connector. Build it with [`ModbusFactory`](super::ModbusFactory).
#[derive(Debug)]
pub struct ModbusConnector {
    connections: Vec<ConnectionPlan>,
    server: Option<SlaveServerPlan>,
    /// Device name → (connection, slave).
    devices: HashMap<String, (usize, usize)>,
}

impl ModbusConnector {
    /// Builds the connector from its validated slaves (see [`plan::slave`], built one at a
    /// time by the factory) and its `slave` section.
    pub(super) fn build(
        file: &Path,
        slaves: Vec<(Endpoint, Framing, SlavePlan)>,
        server: Option<&SlaveServerConfig>,
    ) -> Result<Self, ConfigError> {
        let connections = plan::connections(file, slaves)?;
        let mut devices = HashMap::new();
        for (c, conn) in connections.iter().enumerate() {
            for (s, slave) in conn.slaves.iter().enumerate() {
                if devices.insert(slave.device.clone(), (c, s)).is_some() {
                    return Err(ConfigError::new(
                        file,
                        "master.slaves",
                        format!("device name `{}` is used by two slaves", slave.device),
                    ));
                }
            }
        }
        let server = match server {
            Some(s) => {
                let p = slave::build_plan(file, s)?;
                if devices.contains_key(&p.device) {
                    return Err(ConfigError::new(
                        file,
                        "slave.deviceName",
                        format!("`{}` is also the name of a polled slave", p.device),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        if connections.is_empty() && server.is_none() {
            return Err(ConfigError::new(
                file,
                "",
                "neither `master.slaves` nor `slave` is configured",
            ));
        }
        Ok(ModbusConnector {
            connections,
            server,
            devices,
        })
    }
}

pub(super) fn note_ignored(i: usize, s: &SlaveConfig, ignored: &mut Vec<String>) {
    let p = format!("master.slaves[{i}]");
    if s.handle_local_echo.is_some() {
        ignored.push(format!("{p}.handleLocalEcho"));
    }
    if s.repack.is_some() {
        ignored.push(format!("{p}.repack"));
    }
}

/// Parses RPC params: a `key=value;` string (reserved get/set) or a JSON object.
fn params_map(params: &Json) -> Result<Map<String, Json>, RpcError> {
    match params {
        Json::Object(m) => Ok(m.clone()),
        Json::String(s) => {
            let mut m = Map::new();
            for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| RpcError::BadRequest(format!("`{part}` is not key=value")))?;
                let v = v.trim();
                // Numbers and booleans keep their type; anything else is text.
                let parsed = serde_json::from_str::<Json>(v)
                    .ok()
                    .filter(|j| !j.is_object() && !j.is_array() || k.trim() == "value")
                    .unwrap_or_else(|| Json::String(v.to_string()));
                m.insert(k.trim().to_string(), parsed);
            }
            Ok(m)
        }
        other => Err(RpcError::BadRequest(format!(
            "params {other} are neither `key=value;` text nor an object"
        ))),
    }
}

/// Builds an ad-hoc operation from RPC params (reserved get/set, connector RPCs).
fn op_from_params(
    m: &Map<String, Json>,
    orders: (super::codec::Order, super::codec::Order),
    unit: u8,
) -> Result<Op, RpcError> {
    let mut m = m.clone();
    m.entry("tag").or_insert_with(|| Json::String("rpc".into()));
    let value = m.remove("value");
    let d: DatapointConfig = serde_json::from_value(Json::Object(m))
        .map_err(|e| RpcError::BadRequest(format!("params: {e}")))?;
    let points = plan::datapoints(Path::new("rpc"), "params", &d, orders, unit, Use::Any)
        .map_err(|e| RpcError::BadRequest(format!("{}: {}", e.key, e.reason)))?;
    let p = points
        .into_iter()
        .next()
        .ok_or_else(|| RpcError::BadRequest("params describe no value".into()))?;
    if p.fc >= 5 && value.is_none() {
        return Err(RpcError::BadRequest(format!(
            "function code {} writes; params need `value`",
            p.fc
        )));
    }
    Ok(Op {
        fc: p.fc,
        address: p.address,
        spec: p.spec,
        value,
    })
}

/// The value an RPC writes: `params.value` when params are an object with it, else params.
fn rpc_value(params: &Json) -> Option<Json> {
    match params {
        Json::Null => None,
        Json::Object(m) if m.contains_key("value") => m.get("value").cloned(),
        other => Some(other.clone()),
    }
}

impl ModbusConnector {
    fn send(&self, senders: &[CommandSender], conn: usize, cmd: Command) {
        if let Err(e) = senders[conn].try_send(Box::new(cmd)) {
            let cmd = match e {
                mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
            };
            let err = RpcError::Unreachable("the Modbus connection is busy; try again".into());
            match cmd.reply {
                Reply::Rpc(r) | Reply::DeviceRpc { responder: r, .. } => r.err(err),
                Reply::Log(k) => {
                    tracing::warn!(attribute = %k, "Attribute update dropped: the Modbus connection is busy.")
                }
            }
        }
    }

    fn device_rpc(&self, senders: &[CommandSender], rpc: RpcRequest, c: usize, s: usize) {
        let slave = &self.connections[c].slaves[s];
        // A write echoes what it wrote: the params of an `rpc` entry, the value of a `set`.
        let mut echo = None;
        let op = if rpc.method == "get" || rpc.method == "set" {
            match params_map(&rpc.params).and_then(|m| op_from_params(&m, slave.orders, slave.unit))
            {
                Ok(op) => {
                    echo = op.value.clone();
                    op
                }
                Err(e) => return rpc.responder.err(e),
            }
        } else if let Some(p) = slave.rpc.iter().find(|p| p.key == rpc.method) {
            let value = if p.fc >= 5 {
                match rpc_value(&rpc.params) {
                    Some(v) => Some(v),
                    None => {
                        return rpc.responder.err(RpcError::BadRequest(format!(
                            "method `{}` writes; params carry the value",
                            rpc.method
                        )))
                    }
                }
            } else {
                None
            };
            if value.is_some() {
                echo = Some(rpc.params.clone());
            }
            Op {
                fc: p.fc,
                address: p.address,
                spec: p.spec.clone(),
                value,
            }
        } else {
            return rpc.responder.err(RpcError::NotFound(format!(
                "method `{}` is not in the rpc list of `{}`",
                rpc.method, slave.device
            )));
        };
        self.send(
            senders,
            c,
            Command {
                slave: s,
                op,
                reply: Reply::DeviceRpc {
                    responder: rpc.responder,
                    echo,
                },
            },
        );
    }

    /// `modbus_get` / `modbus_set` on the gateway device: on an ad-hoc slave when params name
    /// a connection (`host`/`port`/`type`...), else on every configured slave.
    fn connector_rpc(&self, senders: &[CommandSender], rpc: RpcRequest, cx: &ConnectorContext) {
        if rpc.method != "get" && rpc.method != "set" {
            return rpc.responder.err(RpcError::NotFound(format!(
                "connector method `{}`; expected get or set",
                rpc.method
            )));
        }
        let m = match params_map(&rpc.params) {
            Ok(m) => m,
            Err(e) => return rpc.responder.err(e),
        };
        // `type` is the value type here, so the connection kind comes from `connectionType`
        // (default tcp, or serial when `port` is a device path).
        let adhoc = m.contains_key("host") || m.contains_key("port");
        if adhoc {
            let conn_keys = [
                "host",
                "port",
                "method",
                "unitId",
                "baudrate",
                "bytesize",
                "parity",
                "stopbits",
                "timeout",
                "byteOrder",
                "wordOrder",
                "retries",
            ];
            let mut sc = Map::new();
            let mut dp = Map::new();
            for (k, v) in m {
                if k == "connectionType" {
                    sc.insert("type".into(), v);
                } else if conn_keys.contains(&k.as_str()) {
                    sc.insert(k, v);
                } else {
                    dp.insert(k, v);
                }
            }
            if !sc.contains_key("type") {
                let serial = sc
                    .get("port")
                    .and_then(|p| p.as_str())
                    .is_some_and(|p| p.parse::<u16>().is_err());
                sc.insert(
                    "type".into(),
                    Json::String(if serial { "serial" } else { "tcp" }.into()),
                );
            }
            let cfg: SlaveConfig = match serde_json::from_value(Json::Object(sc)) {
                Ok(c) => c,
                Err(e) => {
                    return rpc
                        .responder
                        .err(RpcError::BadRequest(format!("params: {e}")))
                }
            };
            let (ep, framing, slave) = match plan::slave(Path::new("rpc"), 0, &cfg) {
                Ok(x) => x,
                Err(e) => {
                    return rpc
                        .responder
                        .err(RpcError::BadRequest(format!("{}: {}", e.key, e.reason)))
                }
            };
            let op = match op_from_params(&dp, slave.orders, slave.unit) {
                Ok(op) => op,
                Err(e) => return rpc.responder.err(e),
            };
            cx.spawn("ad-hoc RPC", async move {
                let r = match tokio::time::timeout(
                    slave.connect_attempt_time,
                    Transport::connect(&ep, framing),
                )
                .await
                {
                    Ok(Ok(mut t)) => run_op(&mut t, &slave, &op).await.map_err(|e| match e {
                        super::master::OpError::Transport(t) => {
                            RpcError::Unreachable(format!("{ep}: {t}"))
                        }
                        super::master::OpError::Exception(_) => {
                            RpcError::Device(format!("{ep}: {e}"))
                        }
                        super::master::OpError::Bad(s) => RpcError::BadRequest(s),
                    }),
                    Ok(Err(e)) => Err(RpcError::Unreachable(format!("{ep}: {e}"))),
                    Err(_) => Err(RpcError::Unreachable(format!(
                        "{ep}: no connection in time"
                    ))),
                };
                rpc.responder.send(r);
                Ok(())
            });
            return;
        }
        // Every configured slave; the answer maps device names to results.
        let mut waits = Vec::new();
        for (c, conn) in self.connections.iter().enumerate() {
            for (s, slave) in conn.slaves.iter().enumerate() {
                let op = match op_from_params(&m, slave.orders, slave.unit) {
                    Ok(op) => op,
                    Err(e) => return rpc.responder.err(e),
                };
                let (responder, rx) = RpcResponder::new();
                self.send(
                    senders,
                    c,
                    Command {
                        slave: s,
                        op,
                        reply: Reply::Rpc(responder),
                    },
                );
                waits.push((slave.device.clone(), rx));
            }
        }
        let responder = rpc.responder;
        cx.spawn("RPC to every slave", async move {
            let mut out = Map::new();
            for (device, rx) in waits {
                let v = match tokio::time::timeout(FAN_OUT_TIMEOUT, rx).await {
                    Ok(Ok(Ok(v))) => json!({"result": v}),
                    Ok(Ok(Err(e))) => e.to_json(),
                    _ => RpcError::Timeout("no answer".into()).to_json(),
                };
                out.insert(device, v);
            }
            responder.ok(Json::Object(out));
            Ok(())
        });
    }
}

#[async_trait]
impl Connector for ModbusConnector {
    /// As upstream: a device's `attributeUpdates` keys are synced when it connects (the keys of
    /// every slave; ThingsBoard answers those a device has).
    fn shared_attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .connections
            .iter()
            .flat_map(|c| c.slaves.iter())
            .flat_map(|s| s.attribute_updates.iter().map(|p| p.key.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        // One supervised sub-task per connection (and the slave server): a panic in one
        // restarts the connector instead of silently stopping that connection.
        let cancel = cx.cancellation().child_token();
        let name: Arc<str> = Arc::from(cx.name());
        let mut senders = Vec::new();
        for plan in &self.connections {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            senders.push(tx);
            let task = ConnectionTask {
                plan: plan.clone(),
                uplink: cx.uplink().clone(),
                stats: cx.stats().clone(),
                cancel: cancel.clone(),
                commands: rx,
                connector: name.clone(),
            };
            cx.spawn(format!("connection {}", plan.endpoint), async move {
                task.run().await;
                Ok(())
            });
        }
        let mut server_tx = None;
        if let Some(p) = &self.server {
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let server = SlaveServer::new(p.clone(), cx.uplink().clone(), name.clone())
                .with_stats(cx.stats().clone());
            server_tx = Some((server.device().to_string(), tx));
            let (tasks, cancel) = (cx.spawner(), cancel.clone());
            cx.spawn("slave server", async move {
                server.run(cancel, rx, tasks).await;
                Ok(())
            });
        }
        let outer = cx.cancellation().clone();
        loop {
            // Cancellation first (children stop with it and report their devices offline);
            // downlink requests are handed to the owning connection without waiting.
            tokio::select! {
                biased;
                _ = outer.cancelled() => {
                    cancel.cancel();
                    cx.finish_tasks(Duration::from_secs(2)).await;
                    return Ok(());
                }
                dl = cx.recv_downlink() => {
                    let Some(dl) = dl else { return Ok(()) };
                    match dl {
                        Downlink::AttributeUpdate(u) => {
                            if let Some((dev, tx)) = &server_tx {
                                if *dev == u.device {
                                    if tx.try_send(Downlink::AttributeUpdate(u)).is_err() {
                                        cx.stats().add_queue_dropped(1);
                                        if DROP_LOG.allow() {
                                            tracing::warn!(connector = %cx.name(), "Attribute update for the slave server dropped: it is busy (counted in queue_dropped; logged at most every 10 s).");
                                        }
                                    }
                                    continue;
                                }
                            }
                            let Some(&(c, s)) = self.devices.get(&u.device) else {
                                tracing::debug!(device = %u.device, "Attribute update for a device this connector does not poll.");
                                continue;
                            };
                            let slave = &self.connections[c].slaves[s];
                            for (k, v) in &u.values {
                                for p in slave.attribute_updates.iter().filter(|p| &p.key == k) {
                                    let op = Op { fc: p.fc, address: p.address, spec: p.spec.clone(), value: Some(v.clone()) };
                                    self.send(&senders, c, Command { slave: s, op, reply: Reply::Log(k.clone()) });
                                }
                            }
                        }
                        Downlink::Rpc(rpc) => match rpc.device.clone() {
                            None => self.connector_rpc(&senders, rpc, cx),
                            Some(d) => {
                                if let Some((dev, tx)) = &server_tx {
                                    if *dev == d {
                                        if let Err(mpsc::error::TrySendError::Full(Downlink::Rpc(r)) | mpsc::error::TrySendError::Closed(Downlink::Rpc(r))) = tx.try_send(Downlink::Rpc(rpc)) {
                                            r.responder.err(RpcError::Unreachable("the slave server is busy".into()));
                                        }
                                        continue;
                                    }
                                }
                                match self.devices.get(&d) {
                                    Some(&(c, s)) => self.device_rpc(&senders, rpc, c, s),
                                    None => rpc.responder.err(RpcError::NotFound(format!("device `{d}` is not polled by this connector"))),
                                }
                            }
                        },
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_rpc_params_parse_from_text_with_typed_values() {
        let m = params_map(&json!(
            "type=16int;functionCode=6;objectsCount=1;address=5;value=-3;"
        ))
        .expect("valid");
        assert_eq!(m["functionCode"], json!(6));
        assert_eq!(m["value"], json!(-3));
        let op = op_from_params(
            &m,
            (
                super::super::codec::Order::Big,
                super::super::codec::Order::Little,
            ),
            1,
        )
        .expect("op");
        assert_eq!((op.fc, op.address, op.value), (6, 5, Some(json!(-3))));
        let missing = params_map(&json!("type=16int;functionCode=16;address=1;")).expect("valid");
        assert!(matches!(
            op_from_params(
                &missing,
                (
                    super::super::codec::Order::Big,
                    super::super::codec::Order::Big
                ),
                1
            ),
            Err(RpcError::BadRequest(_))
        ));
        assert!(matches!(
            params_map(&json!("nonsense")),
            Err(RpcError::BadRequest(_))
        ));
        assert_eq!(
            params_map(&json!("type=string;value=hello;")).expect("valid")["value"],
            json!("hello")
        );
    }
}
