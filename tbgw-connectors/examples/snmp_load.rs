//! Load benchmark of the SNMP connector: 200 agents × 20 OIDs polled every second.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features snmp --example snmp_load -- [agents] [oids] [seconds] [get|multiget]
//! ```
//!
//! The agents are one Debian `snmpd` listening on `agents` loopback UDP ports (one transport
//! per port; each port is a separate device of the connector, with its own poll task and
//! socket). Each device polls `oids` scalar OIDs (system group, ifNumber, the ifTable row of
//! `lo`) every second: as `oids` `get` keys (default, one request each: 4,000 requests a second
//! for 200 × 20), or as one `multiget` key (one request per device and poll).
//!
//! This process runs only the connector (its uplink is drained and counted, as the gateway's
//! storage would take it); `snmpd` is another process. After a 5-second warm-up it reports, over
//! the measured window, its own CPU time (user+sys from `/proc/self/stat`) as a percentage of
//! one core, its resident memory (`VmRSS`, and the peak `VmHWM`), the polls and values
//! received per second, and the connector's error counters.

use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::free_udp_port;
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::snmp::SnmpFactory;

/// Scalars snmpd always has: the system group (without sysServices, which needs a config
/// line), ifNumber, and row 1 (`lo`) of ifTable.
fn oids() -> Vec<String> {
    let mut v: Vec<String> = [1, 2, 3, 4, 5, 6, 8]
        .iter()
        .map(|i| format!("1.3.6.1.2.1.1.{i}.0"))
        .collect();
    v.push("1.3.6.1.2.1.2.1.0".into());
    v.extend((1..=22).map(|c| format!("1.3.6.1.2.1.2.2.1.{c}.1")));
    v
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let agents = arg(0, 200) as usize;
    let n_oids = (arg(1, 20) as usize).min(oids().len());
    let secs = arg(2, 20);
    let multiget = args.get(3).is_some_and(|m| m == "multiget");

    // One snmpd on `agents` ports.
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("snmpd.conf");
    std::fs::write(
        &conf,
        "dontLogTCPWrappersConnects yes\nrocommunity public 127.0.0.1\n",
    )?;
    let ports: Vec<u16> = (0..agents).map(|_| free_udp_port()).collect();
    let endpoints: Vec<String> = ports.iter().map(|p| format!("udp:127.0.0.1:{p}")).collect();
    let log = std::fs::File::create(dir.path().join("snmpd.log"))?;
    let mut snmpd = tokio::process::Command::new("/usr/sbin/snmpd")
        // Not the config's folder: snmpd writes its persistent `snmpd.conf` there on exit.
        .env("SNMP_PERSISTENT_DIR", dir.path().join("state"))
        .env("MIBS", "")
        .args(["-f", "-Lo", "-C", "-c"])
        .arg(&conf)
        .arg(endpoints.join(","))
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    while !std::fs::read_to_string(dir.path().join("snmpd.log"))?.contains("NET-SNMP version") {
        if started.elapsed() > Duration::from_secs(15) || snmpd.try_wait()?.is_some() {
            return Err(format!(
                "snmpd did not start: {}",
                std::fs::read_to_string(dir.path().join("snmpd.log"))?
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let list = oids();
    let keys: Vec<serde_json::Value> = if multiget {
        vec![json!({"key": "all", "method": "multiget", "oid": &list[..n_oids]})]
    } else {
        list[..n_oids]
            .iter()
            .enumerate()
            .map(|(i, o)| json!({"key": format!("k{i}"), "method": "get", "oid": o}))
            .collect()
    };
    let devices: Vec<serde_json::Value> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"deviceName": format!("agent{i}"), "ip": "127.0.0.1", "port": p,
                "pollPeriod": 1000, "community": "public", "timeout": 3, "telemetry": keys})
        })
        .collect();
    let spec = ConnectorSpec {
        name: "SNMP".into(),
        connector_type: "snmp".into(),
        file: "snmp.json".into(),
        config: json!({ "devices": devices }).into(),
    };
    let mut connector = SnmpFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("SNMP");
    let stats = cx.stats().clone();
    let run = tokio::spawn(async move { connector.run(&mut cx).await });

    let me = std::process::id();
    let mut polls = 0u64;
    let mut values = 0u64;
    let warmup = Instant::now() + Duration::from_secs(5);
    let mut window: Option<(Instant, u64, u64, u64)> = None;
    let end = warmup + Duration::from_secs(secs);
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warmup {
            window = Some((now, cpu_ticks(me), polls, values));
        }
        if now >= end {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), ends.uplink.recv()).await {
            Ok(Some(UplinkMessage::Data { data, .. })) => {
                for d in data {
                    polls += 1;
                    values += d.datapoints() as u64;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let (t0, cpu0, polls0, values0) = window.ok_or("no measured window")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(me) - cpu0) as f64 / 100.0 / elapsed * 100.0;
    println!(
        "snmp_load: {agents} agents x {n_oids} OIDs ({}) every 1 s, {elapsed:.1} s measured",
        if multiget {
            "one multiget"
        } else {
            "one get each"
        }
    );
    println!(
        "  polls/s {:.1} (expected {agents}), values/s {:.0}",
        (polls - polls0) as f64 / elapsed,
        (values - values0) as f64 / elapsed
    );
    println!(
        "  CPU {cpu:.1} % of one core, RSS {} kB (peak {} kB)",
        status_kb(me, "VmRSS"),
        status_kb(me, "VmHWM")
    );
    println!(
        "  requests answered {}, errors {}, convert errors {}",
        stats.messages_received(),
        stats.errors(),
        stats.convert_errors()
    );
    ends.cancel.cancel();
    let _ = run.await;
    let _ = snmpd.kill().await;
    Ok(())
}
