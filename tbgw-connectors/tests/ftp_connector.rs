//! The FTP connector against a real FTP server: pyftpdlib (from the peers' virtualenv) on a
//! free loopback port, serving a temporary directory the tests write files into (aside, then
//! renamed, so the server never shows a half-written file).
#![cfg(feature = "ftp")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tbgw::config::ConnectorSpec;
use tbgw::connector::ConnectorFactory;
use tbgw::model::{DeviceData, Value};
use tbgw::test_util::harness::forward_data;
use tbgw::test_util::{free_tcp_port, PythonPeer, TestRun};
use tbgw_connectors::ftp::FtpFactory;

const WAIT: Duration = Duration::from_secs(20);

/// pyftpdlib serving `root` on `port`, user `tb` / `tbpass`, writable.
struct FtpServer {
    peer: PythonPeer,
    root: PathBuf,
}

impl FtpServer {
    async fn start(root: &Path, port: u16) -> FtpServer {
        std::fs::create_dir_all(root).unwrap();
        let mut peer = PythonPeer::spawn([
            "-m".to_string(),
            "pyftpdlib".into(),
            "-i".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-d".into(),
            root.display().to_string(),
            "-w".into(),
            "-u".into(),
            "tb".into(),
            "-P".into(),
            "tbpass".into(),
        ])
        .expect("pyftpdlib starts");
        peer.wait_tcp(port, WAIT).await.expect("pyftpdlib listens");
        FtpServer {
            peer,
            root: root.to_path_buf(),
        }
    }

    /// Replaces a file atomically.
    fn write(&self, rel: &str, content: &str) {
        let path = self.root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("tmp-write");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    fn append(&self, rel: &str, content: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root.join(rel))
            .unwrap();
        f.write_all(content.as_bytes()).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    async fn stop(&mut self) {
        self.peer.stop().await;
    }

    /// The bytes of each completed download of `rel`, from the server's log, in order.
    fn downloads(&self, rel: &str) -> Vec<u64> {
        let needle = format!("{rel} completed=1 bytes=");
        self.peer
            .log()
            .lines()
            .filter_map(|l| l.split_once(needle.as_str()))
            .filter_map(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

fn spec(config: Json, file: &Path) -> ConnectorSpec {
    ConnectorSpec {
        name: "FTP".into(),
        connector_type: "ftp".into(),
        file: file.to_path_buf(),
        config: config.into(),
    }
}

/// The running connector, its data (stores acknowledged at once) and its other ends.
type Running = TestRun<DeviceData>;

fn start(spec: &ConnectorSpec) -> Running {
    let mut ignored = Vec::new();
    let connector = FtpFactory::new()
        .build(spec, &mut ignored)
        .expect("config is valid");
    TestRun::start("FTP", connector, WAIT, forward_data)
}

/// The next `n` records (panics after [`WAIT`]).
async fn records(r: &mut Running, n: usize) -> Vec<DeviceData> {
    let mut got = Vec::new();
    let all = r
        .recv_until(|d| {
            got.push(d);
            (got.len() >= n).then_some(())
        })
        .await;
    all.unwrap_or_else(|| panic!("expected {n} records, got {got:?}"));
    got
}

/// Records until one of `device` arrives; returns all of them, that one last.
async fn until_device(r: &mut Running, device: &str) -> Vec<DeviceData> {
    let mut got = Vec::new();
    let done = r
        .recv_until(|d| {
            let done = d.device_name == device;
            got.push(d);
            done.then_some(())
        })
        .await;
    done.unwrap_or_else(|| panic!("no record of {device}; got {got:?}"));
    got
}

fn config(port: u16, paths: Json) -> Json {
    json!({
        "parameters": {
            "host": "127.0.0.1", "port": port, "TLSSupport": false,
            "security": {"type": "basic", "username": "tb", "password": "tbpass"}
        },
        "paths": paths,
        "requestsMapping": {
            "attributeUpdates": [
                {"path": "out/${attributeKey}.txt", "deviceNameFilter": "meter.*", "writingMode": "WRITE",
                 "valueExpression": "${attributeKey}=${attributeValue}"},
                {"path": "out/state.json", "deviceNameFilter": "meter.*", "writingMode": "OVERRIDE",
                 "valueExpression": "{'${attributeKey}': ${attributeValue}}"}
            ],
            "serverSideRpc": [
                {"deviceNameFilter": ".*", "methodFilter": "read", "valueExpression": "${params}"},
                {"deviceNameFilter": ".*", "methodFilter": "write", "valueExpression": "${params}"}
            ]
        }
    })
}

fn csv_path(mode: &str) -> Json {
    json!({
        "path": "data/*.csv", "devicePatternName": "${name}", "devicePatternType": "meter",
        "readMode": mode, "pollPeriod": 0.2, "delimiter": ",",
        "attributes": [{"key": "model", "value": "${model}"}],
        "timeseries": [
            {"key": "temp", "value": "${temp}", "type": "double"},
            {"key": "count", "value": "${count}", "type": "integer"}
        ]
    })
}

#[tokio::test]
async fn full_csv_rows_are_typed_and_an_unchanged_file_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_tcp_port();
    let server = FtpServer::start(&root, port).await;
    server.write(
        "data/a.csv",
        "name,model,temp,count\r\nmeter1,M1,21.5,7\r\nmeter2,M2,19,3\r\n",
    );
    server.write("data/ignored.xml", "<x/>");
    let mut c = start(&spec(
        config(port, json!([csv_path("FULL")])),
        &dir.path().join("ftp.json"),
    ));
    let rows = records(&mut c, 2).await;
    assert_eq!(rows[0].device_name, "meter1");
    assert_eq!(rows[0].device_type, "meter");
    assert_eq!(rows[0].value("temp"), Some(Value::Float(21.5)));
    assert_eq!(rows[0].value("count"), Some(Value::Int(7)));
    assert_eq!(rows[0].value("model"), Some(Value::String("M1".into())));
    assert_eq!(rows[1].value("temp"), Some(Value::Float(19.0)));

    // Another file of the same path is read in a later poll; a.csv, checked in that poll too,
    // is not sent again.
    server.write("data/b.csv", "name,model,temp,count\nsentinel,S,1,1\n");
    let got = until_device(&mut c, "sentinel").await;
    assert_eq!(got.len(), 1, "a.csv was sent again: {got:?}");

    // A changed file is read again, whole (FULL).
    server.write(
        "data/a.csv",
        "name,model,temp,count\nmeter1,M1,22.5,8\nmeter2,M2,20,4\nmeter3,M3,1,1\n",
    );
    let rows = records(&mut c, 3).await;
    assert_eq!(rows[0].value("temp"), Some(Value::Float(22.5)));
    assert_eq!(rows[2].device_name, "meter3");
    c.stop().await;
}

#[tokio::test]
async fn partial_reads_only_appended_lines_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_tcp_port();
    let server = FtpServer::start(&root, port).await;
    let head = "name,model,temp,count\n";
    server.write(
        "data/log.csv",
        &format!("{head}meter1,M,1,1\nmeter1,M,2,2\n"),
    );
    let file = dir.path().join("ftp.json");
    let cfg = spec(config(port, json!([csv_path("PARTIAL")])), &file);
    let mut c = start(&cfg);
    let rows = records(&mut c, 2).await;
    assert_eq!(rows[1].value("count"), Some(Value::Int(2)));

    // Appended lines only; a last line without its line end waits.
    server.append("data/log.csv", "meter1,M,3,3\nmeter1,M,4,4\nmeter1,M,5");
    let rows = records(&mut c, 2).await;
    assert_eq!(rows[0].value("count"), Some(Value::Int(3)));
    assert_eq!(rows[1].value("count"), Some(Value::Int(4)));
    server.write("data/zz.csv", &format!("{head}sentinel,S,1,1\n"));
    let got = until_device(&mut c, "sentinel").await;
    assert_eq!(got.len(), 1, "a half line or old lines were sent: {got:?}");
    c.stop().await;

    // The cursor survived in the cursor file beside the connector file.
    let cursors: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("ftp.cursors.json")).unwrap(),
    )
    .unwrap();
    let offset = cursors["data/log.csv"]["offset"].as_u64().unwrap();
    let text = server.read("data/log.csv");
    assert_eq!(offset as usize, text.rfind('\n').unwrap() + 1);
    assert_eq!(
        cursors["data/log.csv"]["header"],
        json!("name,model,temp,count")
    );

    // Restart: the half line is completed meanwhile; only it and what follows are sent.
    server.append("data/log.csv", ",5\nmeter1,M,6,6\n");
    let mut c = start(&cfg);
    let rows = records(&mut c, 2).await;
    assert_eq!(rows[0].value("count"), Some(Value::Int(5)));
    assert_eq!(rows[1].value("count"), Some(Value::Int(6)));
    // Resumed with REST: only the bytes after the stored offset were downloaded.
    let len = server.read("data/log.csv").len() as u64;
    assert_eq!(
        server.downloads("data/log.csv").last(),
        Some(&(len - offset))
    );
    server.write("data/zz2.csv", &format!("{head}sentinel2,S,1,1\n"));
    let got = until_device(&mut c, "sentinel2").await;
    assert!(
        got.iter().all(|d| d.device_name != "meter1"),
        "old lines re-sent after the restart: {got:?}"
    );
    c.stop().await;
}

#[tokio::test]
async fn sliced_txt_table_txt_and_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_tcp_port();
    let server = FtpServer::start(&root, port).await;
    server.write("fol/a_hello1.txt", "123,rest\r\n456\n");
    server.write("tab/t.txt", "dev;v\nTab1;5\n");
    server.write(
        "js/s.json",
        r#"[{"serial": "J1", "temp": "21.5", "fw": "1.0"}, {"serial": "J2", "temp": 3, "fw": "2.0"}]"#,
    );
    let paths = json!([
        {
            "path": "fol/*_hello*.txt", "devicePatternName": "Sliced", "readMode": "FULL",
            "pollPeriod": 0.2, "txtFileDataView": "SLICED",
            "attributes": [{"key": "tmp", "value": "[0:1]"}],
            "timeseries": [{"key": "temp", "value": "[1:]", "type": "int"}]
        },
        {
            "path": "tab/*.txt", "devicePatternName": "${dev}", "readMode": "FULL",
            "delimiter": ";", "pollPeriod": 0.2, "txtFileDataView": "TABLE",
            "timeseries": [{"key": "v", "value": "${v}", "type": "int"}]
        },
        {
            "path": "js/*.json", "devicePatternName": "${serial}", "readMode": "FULL",
            "pollPeriod": 0.2,
            "attributes": [{"key": "fw", "value": "${fw}"}],
            "timeseries": [{"key": "temp", "value": "${temp}", "type": "double"}]
        }
    ]);
    let mut c = start(&spec(config(port, paths), &dir.path().join("ftp.json")));
    let got = records(&mut c, 5).await;
    let find = |n: &str| {
        got.iter()
            .filter(|d| d.device_name == n)
            .cloned()
            .collect::<Vec<_>>()
    };
    let sliced = find("Sliced");
    assert_eq!(sliced.len(), 2);
    assert_eq!(sliced[0].value("temp"), Some(Value::Int(23)));
    assert_eq!(sliced[0].value("tmp"), Some(Value::String("1".into())));
    assert_eq!(sliced[1].value("temp"), Some(Value::Int(56)));
    assert_eq!(find("Tab1")[0].value("v"), Some(Value::Int(5)));
    assert_eq!(find("J1")[0].value("temp"), Some(Value::Float(21.5)));
    assert_eq!(find("J2")[0].value("temp"), Some(Value::Float(3.0)));
    assert_eq!(find("J2")[0].value("fw"), Some(Value::String("2.0".into())));
    c.stop().await;
}

#[tokio::test]
async fn malformed_lines_are_counted_and_the_rest_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_tcp_port();
    let server = FtpServer::start(&root, port).await;
    server.write(
        "data/a.csv",
        "name,model,temp,count\nmeter1,M,hot,1\nmeter2,M,1,2\nmeter3,M,cold,3\n",
    );
    let mut c = start(&spec(
        config(port, json!([csv_path("FULL")])),
        &dir.path().join("ftp.json"),
    ));
    let rows = records(&mut c, 3).await;
    assert_eq!(
        rows[0].value("temp"),
        None,
        "a non-number is not sent as a double"
    );
    assert_eq!(rows[0].value("count"), Some(Value::Int(1)));
    assert_eq!(rows[1].value("temp"), Some(Value::Float(1.0)));
    assert_eq!(c.stats.stats().convert_errors(), 2);
    c.stop().await;
}

#[tokio::test]
async fn attribute_updates_and_rpcs_write_and_read_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_tcp_port();
    let server = FtpServer::start(&root, port).await;
    server.write("out/setpoint.txt", "setpoint=1");
    server.write("out/state.json", "{}");
    let c = start(&spec(config(port, json!([])), &dir.path().join("ftp.json")));

    // Connector RPCs ftp_write / ftp_read.
    let r = c
        .rpc(
            None,
            "write",
            json!({"valueExpression": "out/rpc.txt;hello;world"}),
        )
        .await;
    assert_eq!(r, json!({"success": true, "result": "hello;world"}));
    assert_eq!(server.read("out/rpc.txt"), "hello;world");
    let r = c
        .rpc(None, "read", json!({"valueExpression": "out/rpc.txt"}))
        .await;
    assert_eq!(r, json!({"success": true, "result": "hello;world"}));

    // Reserved set / get on a device: upstream's shapes (a read answers the content alone).
    let r = c
        .rpc(Some("meter1"), "set", json!("filePath=out/r.txt;value=42"))
        .await;
    assert_eq!(r, json!({"result": "42"}));
    let r = c
        .rpc(Some("meter1"), "get", json!("filePath=out/r.txt"))
        .await;
    assert_eq!(r, json!("42"));

    // Mapped serverSideRpc read/write.
    let r = c.rpc(Some("meter1"), "write", json!("out/m.txt;7")).await;
    assert_eq!(r, json!({"result": "7"}));
    let r = c.rpc(Some("meter1"), "read", json!("out/m.txt")).await;
    assert_eq!(r, json!("7"));
    let r = c
        .rpc(Some("meter1"), "read", json!("out/missing.txt"))
        .await;
    assert_eq!(r["code"], json!(500), "{r}");
    let r = c.rpc(Some("meter1"), "reboot", json!({})).await;
    assert_eq!(r["code"], json!(404), "{r}");

    // Attribute update: appended as a line (WRITE) and the json file replaced (OVERRIDE).
    c.update("meter1", "setpoint", json!(21.5)).await;
    // An RPC after it is answered once the update is written (one connection, in order).
    c.rpc(None, "read", json!({"valueExpression": "out/state.json"}))
        .await;
    assert_eq!(server.read("out/setpoint.txt"), "setpoint=1\nsetpoint=21.5");
    assert_eq!(server.read("out/state.json"), "{\"setpoint\": 21.5}");
    c.stop().await;
}

#[tokio::test]
async fn the_server_going_away_and_coming_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let port = free_tcp_port();
    let mut server = FtpServer::start(&root, port).await;
    let head = "name,model,temp,count\n";
    server.write("data/log.csv", &format!("{head}meter1,M,1,1\n"));
    let mut c = start(&spec(
        config(port, json!([csv_path("PARTIAL")])),
        &dir.path().join("ftp.json"),
    ));
    records(&mut c, 1).await;
    server.stop().await;

    // While it is away RPCs are answered at once with 503 (after the loss is noticed).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = c
            .rpc(None, "read", json!({"valueExpression": "data/log.csv"}))
            .await;
        if r["code"] == json!(503) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no 503: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.stats.stats().errors() >= 1);

    // Lines appended meanwhile arrive once it is back; nothing before them again.
    server.append("data/log.csv", "meter1,M,2,2\n");
    let _server = FtpServer::start(&root, port).await;
    let rows = records(&mut c, 1).await;
    assert_eq!(rows[0].value("count"), Some(Value::Int(2)));
    c.stop().await;
}

#[test]
fn upstream_sample_builds_and_both_layouts_agree() {
    if let Some(path) = tbgw::test_util::upstream_sample("ftp.json") {
        let config: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut ignored = Vec::new();
        FtpFactory::new()
            .build(&spec(config, &path), &mut ignored)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ignored.is_empty(), "{ignored:?}");
    }
    // The old flat layout.
    let old = json!({
        "host": "127.0.0.1", "port": 2121, "security": {"type": "anonymous"},
        "paths": [csv_path("FULL")],
        "attributeUpdates": [], "serverSideRpc": []
    });
    let mut ignored = Vec::new();
    FtpFactory::new()
        .build(&spec(old, Path::new("ftp.json")), &mut ignored)
        .unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
}

#[test]
fn config_errors_name_the_key_path() {
    let cases = [
        (json!({"paths": []}), "parameters.host"),
        (
            json!({"parameters": {"host": "h", "security": {"type": "token"}}, "paths": []}),
            "parameters.security.type",
        ),
        (
            json!({"parameters": {"host": "h"}, "paths": [{"path": "d/a.xml", "devicePatternName": "x"}]}),
            "paths[0].path",
        ),
        (
            json!({"parameters": {"host": "h"}, "paths": [{"path": "d/*.csv", "devicePatternName": "x", "readMode": "SOME"}]}),
            "paths[0].readMode",
        ),
        (
            json!({"parameters": {"host": "h"}, "paths": [{"path": "d/*.csv", "devicePatternName": "x", "pollPeriod": 0}]}),
            "paths[0].pollPeriod",
        ),
        (
            json!({"parameters": {"host": "h"}, "paths": [{"path": "d/*.txt", "devicePatternName": "x", "txtFileDataView": "SLICED",
                    "timeseries": [{"key": "a", "value": "[1-2]"}]}]}),
            "paths[0].timeseries[0]",
        ),
        (
            json!({"parameters": {"host": "h"}, "paths": [], "requestsMapping": {"serverSideRpc": [{"methodFilter": "("}]}}),
            "serverSideRpc[0].methodFilter",
        ),
    ];
    for (config, key) in cases {
        let mut ignored = Vec::new();
        let err = FtpFactory::new()
            .build(&spec(config.clone(), Path::new("ftp.json")), &mut ignored)
            .err()
            .unwrap_or_else(|| panic!("{config} should fail"));
        let text = err.to_string();
        assert!(text.contains(key), "{text} should name {key}");
    }
}

/// Debian's vsftpd on `port`, anonymous and FTPS only (`AUTH TLS` required), serving `root`.
struct Vsftpd {
    _child: tokio::process::Child,
}

impl Vsftpd {
    async fn start(dir: &Path, root: &Path, port: u16, cert: &Path, key: &Path) -> Option<Vsftpd> {
        let bin = ["/usr/sbin/vsftpd", "/usr/bin/vsftpd"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            eprintln!("skipped: vsftpd is not installed (bash .ci/install)");
            return None;
        };
        std::fs::create_dir_all("/var/run/vsftpd/empty").ok();
        let conf = dir.join("vsftpd.conf");
        std::fs::write(
            &conf,
            format!(
                "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
                 seccomp_sandbox=NO\nanonymous_enable=YES\nno_anon_password=YES\nanon_root={}\n\
                 local_enable=NO\nwrite_enable=NO\nssl_enable=YES\nallow_anon_ssl=YES\n\
                 force_anon_data_ssl=YES\nforce_anon_logins_ssl=YES\nrequire_ssl_reuse=NO\n\
                 rsa_cert_file={}\nrsa_private_key_file={}\npasv_enable=YES\n\
                 secure_chroot_dir=/var/run/vsftpd/empty\nxferlog_enable=NO\n",
                root.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new(bin)
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("vsftpd starts");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "vsftpd does not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(Vsftpd { _child: child })
    }
}

#[tokio::test]
async fn ftps_against_vsftpd_checks_the_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // vsftpd's anonymous session runs as user `ftp`: the served tree must be world-readable.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = tbgw::test_util::Pki::generate(dir.path(), "ftps");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::write(
        root.join("data/a.csv"),
        "name,model,temp,count\r\nsecure1,M,4.5,1\r\n",
    )
    .unwrap();
    for p in [&root, &root.join("data")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        root.join("data/a.csv"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let port = free_tcp_port();
    let Some(_server) = Vsftpd::start(
        dir.path(),
        &root,
        port,
        &pki.server_cert(),
        &pki.server_key(),
    )
    .await
    else {
        return;
    };
    let cfg = json!({
        "parameters": {
            "host": "127.0.0.1", "port": port, "TLSSupport": true,
            "security": {"type": "anonymous"},
            "caCert": pki.ca_cert().display().to_string()
        },
        "paths": [csv_path("FULL")]
    });
    let mut c = start(&spec(cfg, &dir.path().join("ftp.json")));
    let rows = records(&mut c, 1).await;
    assert_eq!(rows[0].device_name, "secure1");
    assert_eq!(rows[0].value("temp"), Some(Value::Float(4.5)));
    let r = c
        .rpc(None, "read", json!({"valueExpression": "data/a.csv"}))
        .await;
    assert_eq!(
        r["result"],
        json!("name,model,temp,count\r\nsecure1,M,4.5,1\r\n")
    );
    c.stop().await;
}
