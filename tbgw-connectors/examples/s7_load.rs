//! Load benchmark of the S7 connector: 1,000 REAL tags of one PLC polled every 100 ms.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features s7 --example s7_load -- [tags] [period_ms] [seconds]
//! ```
//!
//! The PLC is python-snap7 2.1.0's server (`tests/peers/s7_server.py`, the Snap7 C library,
//! another process) with DB2 holding 2,000 REALs. The connector polls `tags` tags
//! `DB2.DBD0:REAL`, `DB2.DBD4:REAL`, ... every `period_ms`. This process runs only the
//! connector (its uplink is drained and counted, as the gateway's storage would take it).
//! After a 3-second warm-up it reports, over the measured window, its own CPU time
//! (user+sys from `/proc/self/stat`) as a percentage of one core, its resident memory
//! (`VmRSS`, peak `VmHWM`), polls and values per second, and the ReadVar requests per poll.

use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::{cpu_ticks, status_kb};
use tbgw::test_util::{free_tcp_port, PythonPeer};
use tbgw::uplink::UplinkMessage;
use tbgw_connectors::s7::S7Factory;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let tags = arg(0, 1000).min(2000) as usize;
    let period = arg(1, 100);
    let secs = arg(2, 20);

    let port = free_tcp_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/s7_server.py");
    let mut server = PythonPeer::spawn([script.to_string(), "serve".into(), port.to_string()])?;
    server.wait_output("ready", Duration::from_secs(20)).await?;

    let points: Vec<serde_json::Value> = (0..tags)
        .map(|i| json!({"type": "tag", "key": format!("t{i}"), "tag": format!("DB2.DBD{}:REAL", 4 * i)}))
        .collect();
    let spec = ConnectorSpec {
        name: "S7".into(),
        connector_type: "s7".into(),
        file: "s7.json".into(),
        config: json!({"devices": [{
            "type": "PLC", "address": "127.0.0.1", "port": port, "rack": 0, "slot": 1,
            "deviceName": "plc", "deviceProfileName": "default", "pollPeriod": period,
            "timeseries": points
        }]})
        .into(),
    };
    let mut connector = S7Factory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("S7");
    let stats = cx.stats().clone();
    let run = tokio::spawn(async move { connector.run(&mut cx).await });

    let me = std::process::id();
    let mut polls = 0u64;
    let mut values = 0u64;
    let warmup = Instant::now() + Duration::from_secs(3);
    let mut window: Option<(Instant, u64, u64, u64, u64)> = None;
    let end = warmup + Duration::from_secs(secs);
    loop {
        let now = Instant::now();
        if window.is_none() && now >= warmup {
            window = Some((
                now,
                cpu_ticks(me),
                polls,
                values,
                stats.stats().messages_received(),
            ));
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
    let (t0, cpu0, polls0, values0, req0) = window.ok_or("no measured window")?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(me) - cpu0) as f64 / 100.0 / elapsed * 100.0;
    let n_polls = polls - polls0;
    println!("s7_load: {tags} REAL tags of one PLC every {period} ms, {elapsed:.1} s measured");
    println!(
        "  polls/s {:.1} (expected {:.1}), values/s {:.0}, ReadVar requests per poll {:.1} (upstream: {tags})",
        n_polls as f64 / elapsed,
        1000.0 / period as f64,
        (values - values0) as f64 / elapsed,
        (stats.stats().messages_received() - req0) as f64 / n_polls.max(1) as f64
    );
    println!(
        "  CPU {cpu:.1} % of one core, RSS {} kB (peak {} kB)",
        status_kb(me, "VmRSS"),
        status_kb(me, "VmHWM")
    );
    println!(
        "  errors {}, convert errors {}",
        stats.stats().errors(),
        stats.stats().convert_errors()
    );
    ends.cancel.cancel();
    let _ = run.await;
    server.stop().await;
    Ok(())
}
