//! Helpers shared by the `tbgw` binary's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use tbgw::test_util::TbStandIn;
use tokio::process::{Child, Command};

/// Generous wait for things that normally take milliseconds.
pub const WAIT: Duration = Duration::from_secs(15);

/// A running `tbgw run` process; killed on drop. Its stderr goes to a log file that survives
/// restarts of the process.
pub struct GatewayProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Starts `tbgw run -c config`, appending its stderr to `log`.
    pub fn start(config: &Path, log: &Path) -> GatewayProcess {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tbgw"))
            .args(["run", "--log-level", "info", "-c"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("tbgw starts");
        GatewayProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for it.
    pub async fn kill9(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM; returns the exit code and the log.
    pub async fn terminate(mut self) -> (Option<i32>, String) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("gateway exits after SIGTERM");
        (status.ok().and_then(|s| s.code()), self.log())
    }
}

/// A device-side MQTT 5 client whose broker acknowledgements are counted.
pub struct Device {
    pub client: AsyncClient,
    pub acked: Arc<AtomicU64>,
}

impl Device {
    /// Connects a device client to the broker on `port`.
    pub fn connect(port: u16) -> Device {
        let mut o = MqttOptions::new(
            format!("device-{}", std::process::id() ^ rand32()),
            "127.0.0.1",
            port,
        );
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut ev) = AsyncClient::new(o, 100_000);
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Device { client, acked }
    }

    /// Waits until the broker acknowledged `n` publishes.
    pub async fn wait_acked(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.acked.load(Ordering::Relaxed) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker acknowledged only {} of {n}",
                self.acked.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn rand32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Every `seq` value the stand-in received in telemetry for `device`, with duplicates.
pub fn received_seqs(tb: &TbStandIn, device: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for m in tb.messages_on("v1/gateway/telemetry") {
        let Some(entries) = m
            .json
            .as_ref()
            .and_then(|j| j.get(device))
            .and_then(Value::as_array)
        else {
            continue;
        };
        for e in entries {
            if let Some(s) = e["values"]["seq"].as_i64() {
                out.push(s);
            }
        }
    }
    out
}

/// Waits until every seq in `0..n` arrived for `device`; returns (distinct, duplicates).
pub async fn wait_all_seqs(
    tb: &TbStandIn,
    device: &str,
    n: i64,
    within: Duration,
    log: impl Fn() -> String,
) -> (usize, usize) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let all = received_seqs(tb, device);
        let mut got = all.clone();
        got.sort_unstable();
        got.dedup();
        if got.len() as i64 >= n {
            return (got.len(), all.len() - got.len());
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<i64> = (0..n)
                .filter(|s| got.binary_search(s).is_err())
                .take(20)
                .collect();
            panic!(
                "{} of {n} arrived; first missing {missing:?}\nlog:\n{}",
                got.len(),
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
