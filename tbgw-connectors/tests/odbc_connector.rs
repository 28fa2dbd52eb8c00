//! The ODBC connector against real databases through unixODBC: SQLite (Debian `libsqliteodbc`,
//! driver `SQLite3`) in a temporary file, and PostgreSQL (Debian `postgresql` +
//! `odbc-postgresql`) as its own cluster on a free loopback port ([`Postgres`]). The tests
//! write rows with odbc-api while the connector runs, restart the connector and the database,
//! and check that every row arrives exactly once.
#![cfg(feature = "odbc")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use odbc_api::{ConnectionOptions, Cursor};
use serde_json::{json, Value as Json};
use tbgw::config::ConnectorSpec;
use tbgw::connector::ConnectorFactory;
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::{Postgres, TestRun};
use tbgw::uplink::{StoreOutcome, UplinkMessage};
use tbgw_connectors::odbc::{OdbcConnector, OdbcFactory, OdbcFile};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

fn exec(conn_str: &str, sql: &str) {
    let env = odbc_api::environment().unwrap();
    let conn = env
        .connect_with_connection_string(conn_str, ConnectionOptions::default())
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    conn.execute(sql, (), None)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn spec(config: Json, file: &Path) -> ConnectorSpec {
    ConnectorSpec {
        name: "ODBC".into(),
        connector_type: "odbc".into(),
        file: file.to_path_buf(),
        config: config.into(),
    }
}

/// The running connector, its data and its other ends. Store receipts are answered
/// `Stored` at once unless `hold` is set (then they are kept unanswered, as a storage that
/// never confirms).
struct Running {
    ends: TestRun<DeviceData>,
    nulls: Arc<tbgw_connectors::odbc::OdbcCounters>,
    hold: Arc<AtomicBool>,
}

fn start(spec: &ConnectorSpec) -> Running {
    let mut ignored = Vec::new();
    // Built as `tbgw check` and the gateway build it (the factory) and directly, for counters.
    OdbcFactory::new()
        .build(spec, &mut ignored)
        .expect("config is valid");
    let file: OdbcFile = spec.config.deserialize(&spec.file, &mut ignored).unwrap();
    let connector = OdbcConnector::new(file.into_config(&spec.file, &mut ignored).unwrap());
    let nulls = connector.counters();
    let hold = Arc::new(AtomicBool::new(false));
    let held = hold.clone();
    let forward = |mut uplink: mpsc::Receiver<UplinkMessage>, tx: mpsc::UnboundedSender<_>| async move {
        let mut kept = Vec::new();
        while let Some(m) = uplink.recv().await {
            if let UplinkMessage::Data { data, ack, .. } = m {
                let holding = held.load(Ordering::SeqCst);
                for d in data {
                    let _ = tx.send(d);
                }
                if let Some(ack) = ack {
                    if holding {
                        kept.push(ack);
                    } else {
                        let _ = ack.send(StoreOutcome::Stored);
                    }
                }
            }
        }
    };
    Running {
        ends: TestRun::start("ODBC", Box::new(connector), WAIT, forward),
        nulls,
        hold,
    }
}

fn id_of(d: &DeviceData) -> i64 {
    d.telemetry
        .iter()
        .flat_map(|t| t.values.iter())
        .find(|(k, _)| k == "id")
        .and_then(|(_, v)| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no id in {d:?}"))
}

impl Running {
    /// Records until the row `last_id` arrived; the ids seen (with how often), and the records.
    async fn until_id(&mut self, last_id: i64, seen: &mut BTreeMap<i64, u32>) -> Vec<DeviceData> {
        let mut got = Vec::new();
        let arrived = self
            .ends
            .recv_until(|d| {
                let id = id_of(&d);
                *seen.entry(id).or_default() += 1;
                got.push(d);
                (id == last_id).then_some(())
            })
            .await;
        arrived.unwrap_or_else(|| panic!("row {last_id} never came; seen {seen:?}"));
        got
    }

    /// Stops the connector and waits for it.
    async fn stop(self) -> mpsc::UnboundedReceiver<DeviceData> {
        self.ends.stop().await
    }

    async fn rpc(&self, method: &str, params: Json) -> Json {
        self.ends.rpc("Dev a", method, params).await
    }
}

fn assert_once(seen: &BTreeMap<i64, u32>, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        assert_eq!(
            seen.get(&id),
            Some(&1),
            "row {id} must arrive exactly once; seen {seen:?}"
        );
    }
}

fn mapping() -> Json {
    json!({
        "device": {"name": "'Dev ' + dev", "type": "meters"},
        "attributes": [{"name": "note", "column": "note"}],
        "timeseries": [
            {"name": "id", "column": "id"},
            {"name": "temp", "column": "temp"},
            {"nameExpression": "'twice_' + dev", "value": "n * 2"},
            {"name": "label", "value": "str(n) + '/' + dev.upper()"}
        ]
    })
}

fn insert_sql(from: i64, to: i64) -> String {
    let rows: Vec<String> = (from..=to)
        .map(|i| {
            let temp = if i % 5 == 0 {
                "NULL".to_string()
            } else {
                format!("{}.5", i)
            };
            format!(
                "({i}, '{}', {temp}, {i}, 'row {i}')",
                if i % 2 == 0 { "a" } else { "b" }
            )
        })
        .collect();
    format!(
        "INSERT INTO t (id, dev, temp, n, note) VALUES {}",
        rows.join(", ")
    )
}

/// The first column of the first row of `sql`, as text.
fn query_text(conn_str: &str, sql: &str) -> String {
    let env = odbc_api::environment().unwrap();
    let conn = env
        .connect_with_connection_string(conn_str, ConnectionOptions::default())
        .unwrap();
    let mut cursor = conn.execute(sql, (), None).unwrap().expect("a result set");
    let mut row = cursor.next_row().unwrap().expect("a row");
    let mut out = Vec::new();
    row.get_text(1, &mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_text_is_decoded_and_written_as_configured_and_names_lowercased() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("latin1.db");
    let conn = format!("Driver=SQLite3;Database={}", db.display());
    exec(
        &conn,
        "CREATE TABLE t (id BIGINT PRIMARY KEY, dev VARCHAR(16), note VARCHAR(64))",
    );
    exec(&conn, "CREATE TABLE w (v VARCHAR(64))");
    // "Café" in latin-1: the byte 0xE9 is not UTF-8.
    exec(
        &conn,
        "INSERT INTO t (id, dev, note) VALUES (1, 'a', CAST(X'436166E9' AS TEXT))",
    );
    let config = json!({
        "connection": {"str": conn, "encoding": "latin-1",
                       "decoding": {"char": "latin-1", "wchar": "utf-8", "metadata": "utf-16le"}},
        // Column names lowercased as pyodbc's `lowercase` does: the mapping names `note`.
        "pyodbc": {"pooling": false, "lowercase": true},
        "polling": {"query": "SELECT id, dev, note AS NOTE FROM t WHERE id > ? ORDER BY id", "period": 0.1,
                    "iterator": {"column": "id", "value": 0}},
        "mapping": {"device": {"name": "'Dev ' + dev", "type": "'meters'"},
                    "attributes": [{"name": "note", "column": "note"}],
                    "timeseries": [{"name": "id", "column": "id"}]},
        "serverSideRpc": {"overrideRpcConfig": true, "methods": [
            {"name": "write", "query": "INSERT INTO w (v) VALUES (?)", "args": ["x"]},
            {"name": "read", "query": "SELECT v FROM w", "result": true}
        ]}
    });
    let spec = spec(config, &dir.path().join("odbc.json"));
    let mut run = start(&spec);
    let got = run.until_id(1, &mut BTreeMap::new()).await;
    assert_eq!(
        got[0].attributes,
        vec![("note".to_string(), Value::String("Caf\u{e9}".into()))]
    );
    // A text parameter is written in latin-1 and read back through the same decoding.
    let r = run.rpc("write", json!({"args": ["Caf\u{e9}"]})).await;
    assert_eq!(r, json!({"success": true}));
    assert_eq!(query_text(&conn, "SELECT hex(v) FROM w"), "436166E9");
    let r = run.rpc("read", json!({})).await;
    assert_eq!(r, json!({"v": "Caf\u{e9}"}));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_follows_the_table_across_connector_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("test.db");
    let conn = format!("Driver=SQLite3;Database={}", db.display());
    exec(&conn, "CREATE TABLE t (id BIGINT PRIMARY KEY, dev VARCHAR(16), temp DOUBLE, n BIGINT, note VARCHAR(64))");
    exec(&conn, &insert_sql(1, 10));
    let file = dir.path().join("odbc.json");
    let config = json!({
        "connection": {"str": conn, "attributes": {"autocommit": true, "timeout": 0}, "reconnectPeriod": 1},
        "polling": {
            "query": "SELECT id, dev, temp, n, note FROM t WHERE id > ? ORDER BY id",
            "period": 0.1,
            "batchSize": 3,
            "iterator": {"column": "id", "query": "SELECT MIN(id) - 1 FROM t"}
        },
        "mapping": mapping()
    });
    let spec = spec(config, &file);
    let mut seen = BTreeMap::new();

    let mut run = start(&spec);
    let got = run.until_id(10, &mut seen).await;
    // Typed values, expressions, the bare type name, NULLs skipped.
    let first = &got[0];
    assert_eq!(first.device_name, "Dev b");
    assert_eq!(first.device_type, "meters");
    assert_eq!(
        first.attributes,
        vec![("note".to_string(), Value::String("row 1".into()))]
    );
    let values = &first.telemetry[0].values;
    assert!(
        values.contains(&("temp".into(), Value::Float(1.5))),
        "{values:?}"
    );
    assert!(
        values.contains(&("twice_b".into(), Value::Int(2))),
        "{values:?}"
    );
    assert!(
        values.contains(&("label".into(), Value::String("1/B".into()))),
        "{values:?}"
    );
    let fifth = got.iter().find(|d| id_of(d) == 5).unwrap();
    assert!(!fifth.telemetry[0].values.iter().any(|(k, _)| k == "temp"));
    assert_eq!(run.nulls.nulls.load(Ordering::Relaxed), 2);

    // Rows written while the connector runs.
    exec(&conn, &insert_sql(11, 20));
    run.until_id(20, &mut seen).await;
    assert_once(&seen, 1..=20);

    // Storage stops confirming: rows 21..=25 are sent but not acknowledged; a restart must
    // send them again (at-least-once), and nothing before them.
    run.hold.store(true, Ordering::SeqCst);
    exec(&conn, &insert_sql(21, 25));
    run.until_id(25, &mut seen).await;
    let mut old = run.stop().await;
    while old.try_recv().is_ok() {}
    let saved: Json =
        serde_json::from_slice(&std::fs::read(dir.path().join("odbc.iterator.json")).unwrap())
            .unwrap();
    assert_eq!(saved["column"], "id");
    assert_eq!(
        saved["value"], 20,
        "the file holds the last acknowledged row: {saved}"
    );

    exec(&conn, &insert_sql(26, 30));
    let mut run = start(&spec);
    let mut seen2 = BTreeMap::new();
    run.until_id(30, &mut seen2).await;
    assert_once(&seen2, 21..=30);
    assert!(
        seen2.keys().all(|id| *id > 20),
        "nothing acknowledged is sent again: {seen2:?}"
    );
    assert_eq!(run.ends.stats.stats().convert_errors(), 0);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_database_and_connector_restarts_and_answers_rpc() {
    let mut pg = Postgres::start().await.expect("postgres starts");
    let conn = pg.odbc_connection_string();
    exec(&conn, "CREATE TABLE t (id BIGINT PRIMARY KEY, dev VARCHAR(16), temp DOUBLE PRECISION, n BIGINT, note TEXT, ok BOOLEAN DEFAULT true, amount NUMERIC(10,2) DEFAULT 12.50)");
    exec(&conn, "CREATE TABLE cmd (id SERIAL PRIMARY KEY, v TEXT)");
    exec(&conn, "CREATE FUNCTION add_cmd(a TEXT, b TEXT) RETURNS INTEGER AS $$ INSERT INTO cmd (v) VALUES (a || b) RETURNING id $$ LANGUAGE SQL");
    exec(&conn, &insert_sql(1, 10));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("odbc.json");
    let mut m = mapping();
    m["timeseries"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ok", "column": "ok"}));
    m["timeseries"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "amount", "column": "amount"}));
    let config = json!({
        "connection": {"str": conn, "reconnect": true, "reconnectPeriod": 1},
        "polling": {
            "query": "SELECT id, dev, temp, n, note, ok, amount FROM t WHERE id > ? ORDER BY id LIMIT 4",
            "period": 0.1,
            "iterator": {"column": "id", "value": 0}
        },
        "mapping": m,
        "serverSideRpc": {
            "enableUnknownRpc": false,
            "overrideRpcConfig": true,
            "methods": [
                {"name": "add_cmd", "args": ["x", "y"]},
                {"name": "count", "query": "SELECT COUNT(*) AS n, MAX(v) AS last FROM cmd", "result": true}
            ]
        }
    });
    let spec = spec(config, &file);
    let mut seen = BTreeMap::new();
    let mut run = start(&spec);
    let got = run.until_id(10, &mut seen).await;
    let values = &got[0].telemetry[0].values;
    assert!(
        values.contains(&("ok".into(), Value::Bool(true))),
        "{values:?}"
    );
    assert!(
        values.contains(&("amount".into(), Value::Float(12.5))),
        "{values:?}"
    );
    assert!(
        values.contains(&("temp".into(), Value::Float(1.5))),
        "{values:?}"
    );

    // RPC: a stored function (psqlODBC rewrites {CALL} to SELECT), with overridden args, a
    // query with a result, a reserved `get` whose query has `=` in it, an unknown method.
    assert_eq!(
        run.rpc("add_cmd", json!({})).await,
        json!({"success": true})
    );
    assert_eq!(
        run.rpc("add_cmd", json!({"args": ["p", "q"]})).await,
        json!({"success": true})
    );
    assert_eq!(
        run.rpc("count", json!({})).await,
        json!({"n": 2, "last": "xy"})
    );
    assert_eq!(
        run.rpc(
            "get",
            json!("query=SELECT v FROM cmd WHERE id = 2;with_result=true;")
        )
        .await,
        json!({"result": {"v": "pq"}})
    );
    let unknown = run.rpc("dropAll", json!({"query": "DROP TABLE t"})).await;
    assert_eq!(unknown["code"], 404, "{unknown}");
    let bad = run
        .rpc("count", json!({"query": "SELECT nope FROM nowhere"}))
        .await;
    assert_eq!(bad["code"], 500, "{bad}");

    // The database goes away and comes back; rows written meanwhile arrive once.
    pg.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.restart().await.unwrap();
    exec(&conn, &insert_sql(11, 20));
    run.until_id(20, &mut seen).await;
    assert_once(&seen, 1..=20);
    assert!(
        run.ends.stats.stats().errors() >= 1,
        "the lost connection is counted"
    );

    // The connector restarts: it resumes after row 20.
    run.stop().await;
    let saved = std::fs::read_to_string(dir.path().join("odbc.iterator.json")).unwrap();
    assert!(saved.contains("\"value\": 20"), "{saved}");
    exec(&conn, &insert_sql(21, 25));
    let mut run = start(&spec);
    run.until_id(25, &mut seen).await;
    assert_once(&seen, 1..=25);
    run.stop().await;
}

#[test]
fn upstream_sample_is_accepted() {
    let Some(path) = tbgw::test_util::upstream_sample("odbc.json") else {
        return;
    };
    let sample: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let spec = spec(sample, &path);
    let mut ignored = Vec::new();
    OdbcFactory::new()
        .build(&spec, &mut ignored)
        .expect("upstream's odbc.json is accepted");
    // `pyodbc.pooling: false`, UTF-8 encodings and UTF-16 metadata: nothing left unused.
    assert!(ignored.is_empty(), "{ignored:?}");
}

#[test]
fn unreadable_expression_is_a_config_error() {
    let config = json!({
        "connection": {"str": "Driver=SQLite3;Database=/nonexistent"},
        "polling": {"query": "SELECT * FROM t WHERE id > ?", "iterator": {"column": "id", "value": 0}},
        "mapping": {"device": {"name": "__import__('os').system('id')"}, "timeseries": "*"}
    });
    let spec = spec(config, Path::new("/etc/tbgw/odbc.json"));
    let e = OdbcFactory::new()
        .build(&spec, &mut Vec::new())
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        e.contains("odbc.json")
            && e.contains("mapping.device.name")
            && e.contains("unknown function `__import__`"),
        "{e}"
    );
}
