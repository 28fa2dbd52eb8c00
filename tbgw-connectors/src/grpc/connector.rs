//! The tbgw side of one `type: grpc` connector: links its slot in the hub to the gateway,
//! queues downlink for the out-of-process connector, and starts and supervises its process
//! when `command` is configured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tbgw::backoff::Backoff;
use tbgw::connector::{Connector, ConnectorContext, ConnectorError};
use tbgw::downlink::Downlink;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::downlink;
use super::hub::{Link, Slot};
use super::pb::ConnectorConfigurationMsg;

/// How long the Python custom connector host may take to close its class and exit when the
/// connector stops (within the 5 s the connector's tasks get to finish).
const HOST_STOP_GRACE: Duration = Duration::from_secs(4);

/// How a supervised connector process is started.
#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    pub argv: Vec<String>,
    /// The main file's directory: the working directory, and the base of a relative program.
    pub dir: PathBuf,
    /// The gRPC port the process connects to.
    pub port: u16,
    /// The process is the Python custom connector host: its package is written out and put on
    /// `PYTHONPATH` ([`super::custom::HostPackage`]).
    pub host_package: bool,
}

/// A running `type: grpc` connector.
#[derive(Debug)]
pub struct GrpcConnector {
    slot: Arc<Slot>,
    file: PathBuf,
    configuration: String,
    child: Option<ChildSpec>,
}

impl GrpcConnector {
    pub(crate) fn new(
        slot: Arc<Slot>,
        file: PathBuf,
        configuration: String,
        child: Option<ChildSpec>,
    ) -> Self {
        GrpcConnector {
            slot,
            file,
            configuration,
            child,
        }
    }

    /// The connector file as sent in `connectorConfigurationMsg` (upstream sends the file's
    /// JSON), and its `id` (the connector's name when the file has none).
    fn configuration(&self) -> (String, String) {
        let text =
            std::fs::read_to_string(&self.file).unwrap_or_else(|_| self.configuration.clone());
        let id = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .unwrap_or_else(|| self.slot.name().to_string());
        (text, id)
    }
}

#[async_trait]
impl Connector for GrpcConnector {
    async fn run(&mut self, cx: &mut ConnectorContext) -> Result<(), ConnectorError> {
        let (configuration, id) = self.configuration();
        let config_msg = ConnectorConfigurationMsg {
            connector_name: cx.name().to_string(),
            configuration: configuration.clone(),
            connector_id: id.clone(),
        };
        self.slot.set_configuration(config_msg);
        self.slot.attach(Link {
            uplink: cx.uplink().clone(),
            stats: cx.stats().clone(),
        });
        if let Some(child) = self.child.clone() {
            let arg = serde_json::json!({
                "name": cx.name(),
                "id": id,
                "grpc_key": self.slot.key(),
                "config": serde_json::from_str::<serde_json::Value>(&configuration).unwrap_or(serde_json::Value::String(configuration.clone())),
                "config_file_path": self.file.display().to_string(),
                "gateway": {"host": "127.0.0.1", "port": child.port},
            })
            .to_string();
            let name = cx.name().to_string();
            let cancel = cx.cancellation().clone();
            let stats = cx.stats().clone();
            cx.spawn("connector process", async move {
                supervise(&name, &child, &arg, &cancel, &stats).await;
                Ok(())
            });
        }
        let cancel = cx.cancellation().clone();
        let stopping = loop {
            tokio::select! {
                _ = cancel.cancelled() => break true,
                d = cx.recv_downlink() => match d {
                    None => break true,
                    Some(Downlink::AttributeUpdate(u)) => {
                        cx.stats().add_downlink(1);
                        let dropped = self.slot.push_downlink(downlink::attribute_update(&u.device, &u.values, tbgw::model::now_millis()));
                        cx.stats().add_queue_dropped(dropped);
                    }
                    Some(Downlink::Rpc(r)) => {
                        cx.stats().add_downlink(1);
                        let device = r.device.clone().unwrap_or_default();
                        let id = r.id as i32;
                        let msg = downlink::rpc_request(&device, id, &r.method, &r.params);
                        let dropped = self.slot.push_rpc(&device, id, msg, r.responder);
                        cx.stats().add_queue_dropped(dropped);
                    }
                    Some(_) => {}
                },
            }
        };
        self.slot.detach(stopping);
        cx.finish_tasks(Duration::from_secs(5)).await;
        Ok(())
    }
}

/// Logs a line of a connector process: stderr at warn, stdout at info; the Python host's lines
/// (`levels`) start with their level (`DEBUG [logger] ...`) and are logged at it.
fn log_line(name: &str, line: &str, is_err: bool, levels: bool) {
    let level = if levels {
        line.split_once(' ').map(|(l, _)| l).unwrap_or("")
    } else {
        ""
    };
    match level {
        "TRACE" => tracing::trace!(connector = %name, "{line}"),
        "DEBUG" => tracing::debug!(connector = %name, "{line}"),
        "INFO" => tracing::info!(connector = %name, "{line}"),
        "WARNING" => tracing::warn!(connector = %name, "{line}"),
        "ERROR" | "CRITICAL" | "EXCEPTION" => tracing::error!(connector = %name, "{line}"),
        _ if is_err => tracing::warn!(connector = %name, "{line}"),
        _ => tracing::info!(connector = %name, "{line}"),
    }
}

/// The program of `argv[0]`: relative paths with a `/` are taken beside the main file.
fn program(dir: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_relative() && p.contains('/') {
        dir.join(path)
    } else {
        path.to_path_buf()
    }
}

/// Runs the connector process until `cancel`, restarting it with backoff when it exits. As
/// upstream starts its out-of-process connectors, the process gets two more arguments: its
/// settings as JSON (`name`, `id`, `grpc_key`, `config`, `gateway.host`/`port`) and the
/// configuration directory.
async fn supervise(
    name: &str,
    child: &ChildSpec,
    arg: &str,
    cancel: &CancellationToken,
    stats: &tbgw::stats::ConnectorCounters,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let dir = format!("{}/", child.dir.display());
    let mut package = None;
    while !cancel.is_cancelled() {
        let mut cmd = tokio::process::Command::new(program(&child.dir, &child.argv[0]));
        if child.host_package {
            if package.is_none() {
                match super::custom::HostPackage::acquire() {
                    Ok(p) => package = Some(p),
                    Err(e) => {
                        stats.add_errors(1);
                        tracing::warn!(connector = %name, error = %e, "Cannot write the Python custom connector host package.");
                        if !backoff.wait(cancel).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            if let Some(p) = &package {
                let mut path = std::ffi::OsString::from(p.python_path());
                if let Some(old) = std::env::var_os("PYTHONPATH").filter(|o| !o.is_empty()) {
                    path.push(":");
                    path.push(old);
                }
                cmd.env("PYTHONPATH", path).env("PYTHONUNBUFFERED", "1");
            }
        }
        cmd.args(&child.argv[1..])
            .arg(arg)
            .arg(&dir)
            .current_dir(&child.dir)
            .env("TBGW_GRPC_PORT", child.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match cmd.spawn() {
            Ok(mut proc) => {
                tracing::info!(connector = %name, pid = ?proc.id(), "gRPC connector process started.");
                backoff.succeeded();
                for (out, is_err) in [
                    (
                        proc.stdout
                            .take()
                            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                        false,
                    ),
                    (
                        proc.stderr
                            .take()
                            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                        true,
                    ),
                ] {
                    if let Some(out) = out {
                        let name = name.to_string();
                        let levels = child.host_package;
                        tokio::spawn(async move {
                            // Bytes, not UTF-8 lines: a line that is not UTF-8 must not stop
                            // the reading (the process would block on a full pipe).
                            let mut reader = BufReader::new(out);
                            let mut buf = Vec::new();
                            while let Ok(n) = reader.read_until(b'\n', &mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                let line = String::from_utf8_lossy(&buf);
                                log_line(
                                    &name,
                                    line.trim_end_matches(['\n', '\r']),
                                    is_err,
                                    levels,
                                );
                                buf.clear();
                            }
                        });
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => {
                        // The Python host closes its class (upstream calls `close()` when the
                        // gateway stops) when the connector is unregistered, then exits: give
                        // it the time, then kill.
                        if child.host_package
                            && tokio::time::timeout(HOST_STOP_GRACE, proc.wait()).await.is_ok()
                        {
                            return;
                        }
                        let _ = proc.kill().await;
                        return;
                    }
                    status = proc.wait() => {
                        stats.add_errors(1);
                        tracing::warn!(connector = %name, status = ?status.ok(), "gRPC connector process exited; restarting it.");
                    }
                }
            }
            Err(e) => {
                stats.add_errors(1);
                tracing::warn!(connector = %name, program = %child.argv[0], error = %e, "Cannot start the gRPC connector process.");
            }
        }
        if !backoff.wait(cancel).await {
            return;
        }
    }
}
