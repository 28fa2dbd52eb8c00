//! Throughput benchmark of the ODBC connector: follow a table of N rows (default 1,000,000)
//! from its start and count the rows that reach the uplink (store receipts answered at once),
//! with the process's peak resident memory sampled along the way.
//!
//! ```text
//! cargo run --release -p tbgw-connectors --no-default-features --features odbc --example odbc_bench
//! cargo run --release -p tbgw-connectors --no-default-features --features odbc --example odbc_bench -- 1000000 postgres
//! cargo run --release -p tbgw-connectors --no-default-features --features odbc --example odbc_bench -- 1000000 postgres 1000 10000
//! ```
//!
//! Arguments: rows (default 1000000), database (`sqlite`, the default: unixODBC + Debian
//! `libsqliteodbc` on a temporary file; or `postgres`: a temporary cluster through psqlODBC),
//! batch size (default 1000), `LIMIT` per query (default 0: none; the drivers hold a whole
//! result set in memory, so a limit keeps the process flat). The table has five columns (`id BIGINT`, `dev`, `temp DOUBLE`,
//! `n BIGINT`, `note`); the mapping evaluates a device-name expression and four datapoints per
//! row.

use std::time::{Duration, Instant};

use odbc_api::ConnectionOptions;
use serde_json::json;
use tbgw::connector::{ConnectorContext, ConnectorFactory, ConnectorSpec};
use tbgw::test_util::process::status_kb;
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw_connectors::odbc::OdbcFactory;

fn exec(conn: &str, sql: &str) -> Result<(), Box<dyn std::error::Error>> {
    let env = odbc_api::environment()?;
    let c = env.connect_with_connection_string(conn, ConnectionOptions::default())?;
    c.execute(sql, (), None)?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: i64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let db = args.get(1).cloned().unwrap_or_else(|| "sqlite".into());
    let batch: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    // A LIMIT per query (0: none). The drivers buffer a whole result set (psqlODBC without
    // UseDeclareFetch, sqliteodbc): a LIMIT keeps memory flat, and costs nothing as a poll
    // that returned rows is followed at once by the next.
    let limit: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    let dir = tempfile::tempdir()?;
    let mut _pg = None;
    let conn = if db == "postgres" {
        let pg = tbgw::test_util::Postgres::start().await?;
        let c = pg.odbc_connection_string();
        _pg = Some(pg);
        c
    } else {
        format!(
            "Driver=SQLite3;Database={}",
            dir.path().join("bench.db").display()
        )
    };
    let t0 = Instant::now();
    exec(&conn, "CREATE TABLE t (id BIGINT PRIMARY KEY, dev VARCHAR(16), temp DOUBLE PRECISION, n BIGINT, note VARCHAR(32))")?;
    let fill = if db == "postgres" {
        format!("INSERT INTO t SELECT i, 'd' || (i % 100), i * 0.5, i, 'row' FROM generate_series(1, {rows}) AS i")
    } else {
        format!("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {rows}) INSERT INTO t SELECT i, 'd' || (i % 100), i * 0.5, i, 'row' FROM s")
    };
    exec(&conn, &fill)?;
    eprintln!(
        "{rows} rows written in {:.1} s ({db})",
        t0.elapsed().as_secs_f64()
    );

    let spec = ConnectorSpec {
        name: "ODBC".into(),
        connector_type: "odbc".into(),
        file: dir.path().join("odbc.json"),
        config: json!({
            "connection": {"str": conn},
            "polling": {
                "query": if limit > 0 {
                    format!("SELECT id, dev, temp, n, note FROM t WHERE id > ? ORDER BY id LIMIT {limit}")
                } else {
                    "SELECT id, dev, temp, n, note FROM t WHERE id > ? ORDER BY id".to_string()
                },
                "period": 1,
                "batchSize": batch,
                "iterator": {"column": "id", "value": 0}
            },
            "mapping": {
                "device": {"name": "'Bench ' + dev", "type": "bench"},
                "attributes": [{"name": "note", "column": "note"}],
                "timeseries": [
                    {"name": "id", "column": "id"},
                    {"name": "temp", "column": "temp"},
                    {"name": "n2", "value": "n * 2"}
                ]
            }
        })
        .into(),
    };
    let mut c = OdbcFactory::new().build(&spec, &mut Vec::new())?;
    let (mut cx, mut ends) = ConnectorContext::for_test("ODBC");
    let rss0 = status_kb(std::process::id(), "VmRSS");
    let start = Instant::now();
    let task = tokio::spawn(async move { c.run(&mut cx).await });
    let mut got = 0i64;
    let mut peak = rss0;
    let mut last_sample = Instant::now();
    let mut samples = Vec::new();
    while got < rows {
        let Some(m) = tokio::time::timeout(Duration::from_secs(60), ends.uplink.recv()).await?
        else {
            break;
        };
        if let UplinkMessage::Data { data, ack, .. } = m {
            got += data.len() as i64;
            if let Some(ack) = ack {
                let _ = ack.send(StoreOutcome::Stored);
            }
        }
        if last_sample.elapsed() >= Duration::from_millis(250) {
            let rss = status_kb(std::process::id(), "VmRSS");
            peak = peak.max(rss);
            samples.push(rss);
            last_sample = Instant::now();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ends.cancel.cancel();
    let _ = task.await;
    let quarter = samples.len() / 4;
    println!(
        "odbc_bench {db}: {got} rows in {secs:.2} s = {:.0} rows/s; RSS before {} KiB, peak {} KiB, at 25% {} KiB, at 100% {} KiB (batch {batch}, limit {limit})",
        got as f64 / secs,
        rss0,
        peak,
        samples.get(quarter).copied().unwrap_or(0),
        samples.last().copied().unwrap_or(0),
    );
    Ok(())
}
