//! Load benchmark of the FTP connector: a large CSV file ingested in PARTIAL mode from
//! pyftpdlib (the peers' virtualenv, `bash .ci/install`).
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features ftp --example ftp_load -- 100
//! ```
//!
//! The argument is the file's size in MB (default 100). The harness writes
//! `name,temp,count` rows (100 devices, a double and an integer each) into a temporary
//! directory served by pyftpdlib on a free loopback port, runs the connector in this process
//! with a detached context whose store receipts are answered at once, and prints:
//!
//! * rows per second from the first poll to the last row (download, line split, conversion to
//!   typed values, batching to the gateway's channel);
//! * this process's peak resident memory (`VmHWM`) before and after the ingest: the file is
//!   streamed, so it should not grow with the file's size;
//! * then 1 MB is appended and the rows of the second poll counted: only the new lines are read
//!   (`REST` from the stored byte offset).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::status_kb;
use tbgw::test_util::{free_tcp_port, PythonPeer};
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw_connectors::ftp::FtpFactory;

fn write_rows(f: &mut impl Write, from: u64, bytes: u64) -> std::io::Result<u64> {
    let mut written = 0;
    let mut i = from;
    while written < bytes {
        let line = format!("meter{},{}.5,{}\n", i % 100, i % 1000, i);
        f.write_all(line.as_bytes())?;
        written += line.len() as u64;
        i += 1;
    }
    Ok(i - from)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mb: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("data"))?;
    let file = root.join("data/big.csv");
    let rows = {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        f.write_all(b"name,temp,count\n")?;
        let n = write_rows(&mut f, 0, mb * 1024 * 1024)?;
        f.flush()?;
        n
    };
    let size = std::fs::metadata(&file)?.len();
    println!("file: {size} bytes, {rows} rows");

    let port = free_tcp_port();
    let mut server = PythonPeer::spawn([
        "-m".to_string(),
        "pyftpdlib".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-d".into(),
        root.display().to_string(),
        "-u".into(),
        "tb".into(),
        "-P".into(),
        "tbpass".into(),
    ])?;
    server.wait_tcp(port, Duration::from_secs(20)).await?;

    let config = json!({
        "parameters": {"host": "127.0.0.1", "port": port,
                       "security": {"type": "basic", "username": "tb", "password": "tbpass"}},
        "paths": [{
            "path": "data/*.csv", "devicePatternName": "${name}", "devicePatternType": "meter",
            "readMode": "PARTIAL", "pollPeriod": 0.5, "maxFileSize": 100000,
            "timeseries": [
                {"key": "temp", "value": "${temp}", "type": "double"},
                {"key": "count", "value": "${count}", "type": "integer"}
            ]
        }]
    });
    let spec = ConnectorSpec {
        name: "FTP".into(),
        connector_type: "ftp".into(),
        file: dir.path().join("ftp.json"),
        config: config.into(),
    };
    let mut connector = FtpFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("FTP");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Some(m) = ends.uplink.recv().await {
            if let UplinkMessage::Data { data, ack, .. } = m {
                counter.fetch_add(data.len() as u64, Relaxed);
                if let Some(ack) = ack {
                    let _ = ack.send(StoreOutcome::Stored);
                }
            }
        }
    });
    let me = std::process::id();
    let hwm_before = status_kb(me, "VmHWM");
    let start = Instant::now();
    let cancel = ends.cancel.clone();
    let task = tokio::spawn(async move { connector.run(&mut cx).await });
    while received.load(Relaxed) < rows {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if start.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {} of {rows} rows after 600 s", received.load(Relaxed));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm_after = status_kb(me, "VmHWM");
    println!(
        "ingest: {rows} rows in {secs:.2} s = {:.0} rows/s ({:.1} MB/s)",
        rows as f64 / secs,
        size as f64 / 1048576.0 / secs
    );
    println!(
        "peak RSS (VmHWM): {hwm_before} kB before, {hwm_after} kB after ({} kB for a {} MB file)",
        hwm_after.saturating_sub(hwm_before),
        size / 1048576
    );

    // Append 1 MB: only it is read.
    let more = {
        let mut f = std::fs::OpenOptions::new().append(true).open(&file)?;
        write_rows(&mut f, rows, 1024 * 1024)?
    };
    let start = Instant::now();
    while received.load(Relaxed) < rows + more {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if start.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the appended rows did not arrive");
        }
    }
    // One more poll period: nothing old is sent again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "append: {more} new rows, {} rows received in all (expected {})",
        received.load(Relaxed),
        rows + more
    );
    cancel.cancel();
    let _ = task.await;
    server.stop().await;
    Ok(())
}
