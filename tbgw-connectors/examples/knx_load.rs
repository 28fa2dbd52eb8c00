//! Load benchmark of the KNX connector: group telegrams from the bus into the connector's
//! uplink.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features knx --example knx_load -- [telegrams/s] [seconds]
//! ```
//!
//! The bus is Debian's knxd (a KNXnet/IP tunnelling server with a dummy bus, another
//! process); the sender is the xknx bus member (`tests/peers/knx_member.py`, a second tunnel
//! client, a third process), which sends GroupValueWrite 0/1 to 1/0/1 at the given rate. The
//! connector listens (its poll period is an hour) and sends every telegram as a record; this
//! process runs only the connector and drains its uplink as the gateway's storage would. It
//! reports telegrams sent and received, telegrams per second, its own CPU time (user+sys
//! from `/proc/self/stat`) as a percentage of one core, its resident memory (`VmRSS`, peak
//! `VmHWM`), and the CPU of knxd and of the sender.

use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::test_util::{free_tcp_port, Knxd, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::knx::KnxFactory;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn pid_of(hint: &str) -> Option<u32> {
    // The newest process whose command line contains `hint`.
    let mut best = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd: Vec<u8> = cmd.iter().map(|&c| if c == 0 { b' ' } else { c }).collect();
        if String::from_utf8_lossy(&cmd).contains(hint) {
            best = Some(best.map_or(pid, |b: u32| b.max(pid)));
        }
    }
    best
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let rate = arg(0, 1000).max(1);
    let secs = arg(1, 10).max(1);
    let count = rate * secs;

    let knxd = Knxd::start().await?;
    let control = free_tcp_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/knx_member.py");
    let values = json!({"1/0/1": ["switch", false]}).to_string();
    let mut member = PythonPeer::spawn([
        script.to_string(),
        knxd.port().to_string(),
        control.to_string(),
        values,
    ])?;
    member.wait_output("ready", Duration::from_secs(20)).await?;

    let spec = ConnectorSpec {
        name: "KNX".into(),
        connector_type: "knx".into(),
        file: "knx.json".into(),
        config: json!({
            "client": {"type": "TUNNELING", "gatewayIp": "127.0.0.1", "gatewayPort": knxd.port(),
                       "localIp": "127.0.0.1"},
            "devices": [{
                "deviceInfo": {"deviceNameExpression": "switch board"},
                "pollPeriod": 3_600_000,
                "timeseries": [{"type": "switch", "key": "switch", "groupAddress": "1/0/1"}]
            }]
        })
        .into(),
    };
    let mut connector = KnxFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("KNX");
    let stats = cx.stats().clone();
    let run = tokio::spawn(async move { connector.run(&mut cx).await });

    // The first poll's answer says the connector is on the bus.
    let mut received = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ends.uplink.recv()).await? {
            Some(UplinkMessage::Data { .. }) => break,
            Some(_) => {}
            None => return Err("the connector stopped".into()),
        }
    }
    let me = std::process::id();
    let knxd_pid = pid_of(&knxd.dir().display().to_string());
    let member_pid = pid_of(&format!("{script} {}", knxd.port()));
    let others0 = (
        knxd_pid.map_or(0, cpu_ticks),
        member_pid.map_or(0, cpu_ticks),
    );
    let msg0 = stats.stats().messages_received();
    let cpu0 = cpu_ticks(me);
    let t0 = Instant::now();

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", control)).await?;
    s.write_all(
        format!(
            "{}\n",
            json!({"burst": "1/0/1", "count": count, "rate": rate})
        )
        .as_bytes(),
    )
    .await?;
    let mut reader = BufReader::new(s);
    let burst = async {
        let mut line = String::new();
        let _ = reader.read_line(&mut line).await;
        Instant::now()
    };
    tokio::pin!(burst);
    let mut sent_at = None;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            t = &mut burst, if sent_at.is_none() => sent_at = Some(t),
            m = tokio::time::timeout(Duration::from_millis(200), ends.uplink.recv()) => match m {
                Ok(Some(UplinkMessage::Data { data, .. })) => {
                    for d in data {
                        received += d.datapoints() as u64;
                    }
                    last = Instant::now();
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {}
            },
        }
        let done = received >= count && sent_at.is_some();
        if done || sent_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    let elapsed = last.duration_since(t0).as_secs_f64();
    let cpu = (cpu_ticks(me) - cpu0) as f64 / 100.0 / elapsed * 100.0;
    let sent_secs = sent_at.map_or(f64::NAN, |t| t.duration_since(t0).as_secs_f64());
    println!(
        "knx_load: {count} GroupValueWrite at {rate}/s asked; the sender took {sent_secs:.2} s ({:.0}/s sent)",
        count as f64 / sent_secs
    );
    println!(
        "  received {received} ({} telegrams counted), lost {}, {:.0} telegrams/s into the uplink over {elapsed:.2} s",
        stats.stats().messages_received() - msg0,
        count.saturating_sub(received),
        received as f64 / elapsed
    );
    println!(
        "  connector: CPU {cpu:.1} % of one core, RSS {} kB (peak {} kB); errors {}, convert errors {}",
        status_kb(me, "VmRSS"),
        status_kb(me, "VmHWM"),
        stats.stats().errors(),
        stats.stats().convert_errors()
    );
    let pct =
        |pid: Option<u32>, t0: u64| pid.map_or(f64::NAN, |p| (cpu_ticks(p) - t0) as f64 / elapsed);
    println!(
        "  knxd CPU {:.1} %, xknx sender CPU {:.1} % of one core",
        pct(knxd_pid, others0.0),
        pct(member_pid, others0.1)
    );
    ends.cancel.cancel();
    let _ = run.await;
    member.stop().await;
    Ok(())
}
