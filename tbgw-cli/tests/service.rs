//! `tbgw` as a system service: `logs.json` (levels, files, time rotation, JSON lines),
//! systemd readiness and watchdog notifications, and `tbgw status` against a running gateway.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use tbgw::test_util::Mosquitto;
use tokio::process::{Child, Command};

use common::{Device, WAIT};

/// Generous upper bound for things that take seconds (several rotation intervals).
const LONG_WAIT: Duration = Duration::from_secs(60);

/// A configuration directory: the gateway connects to ThingsBoard on `tb_port` and runs one
/// MQTT connector on `device_port` whose `sensor/connect` requests log at debug level.
fn write_config(dir: &Path, tb_port: u16, device_port: u16, logs: Option<Value>) -> PathBuf {
    let main = json!({
        "thingsboard": {
            "host": "127.0.0.1", "port": tb_port, "qos": 1,
            "security": {"type": "accessToken", "accessToken": "GW_TOKEN"},
            "sessionLimitsTimeoutMs": 1000
        },
        "storage": {"type": "memory", "max_records_count": 1000, "read_records_count": 100},
        "connectors": [{"type": "mqtt", "name": "Devices", "configuration": "mqtt.json"}]
    });
    let mqtt = json!({
        "broker": {"host": "127.0.0.1", "port": device_port, "clientId": "tbgw-svc", "version": 5,
                   "security": {"type": "anonymous"}},
        "mapping": [{
            "topicFilter": "sensor/+/data",
            "converter": {"type": "json",
                "deviceInfo": {"deviceNameExpressionSource": "topic",
                               "deviceNameExpression": "(?<=sensor/)(.*?)(?=/data)"},
                "timeseries": [{"type": "integer", "key": "seq", "value": "${seq}"}]}
        }],
        "connectRequests": [{"topicFilter": "sensor/connect", "deviceNameJsonExpression": "${name}"}]
    });
    std::fs::write(dir.join("tb_gateway.json"), main.to_string()).unwrap();
    std::fs::write(dir.join("mqtt.json"), mqtt.to_string()).unwrap();
    if let Some(l) = logs {
        std::fs::write(dir.join("logs.json"), l.to_string()).unwrap();
    }
    dir.join("tb_gateway.json")
}

/// Starts `tbgw run` in `dir` with these extra arguments and environment; stdout and stderr
/// go to `stdout.txt` and `stderr.txt` there.
fn spawn(dir: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tbgw"));
    cmd.arg("run")
        .arg("-c")
        .arg(config)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("TB_GW_LOGS_PATH")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("tbgw starts")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The rotated copies of `dir/name` (`name.<time>`).
fn rotated(dir: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.starts_with(&format!("{name}.")))
        .collect();
    v.sort();
    v
}

async fn terminate(mut child: Child) -> Option<i32> {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("gateway exits after SIGTERM")
        .ok()
        .and_then(|s| s.code())
}

fn upstream_style_logs(dir: &Path, when: &str, backup: u32) -> Value {
    // Only the connector file keeps few copies: the others must keep their first records.
    let h = |file: &str| {
        let backup = if file == "connector.log" { backup } else { 100 };
        json!({
            "class": "thingsboard_gateway.tb_utility.tb_rotating_file_handler.TimedRotatingFileHandler",
            "formatter": "LogFormatter",
            "filename": dir.join("logs").join(file).to_str().unwrap(),
            "backupCount": backup, "interval": 1, "when": when, "maxBytes": 0, "encoding": "utf-8"
        })
    };
    json!({
        "version": 1,
        "disable_existing_loggers": false,
        "formatters": {"LogFormatter": {"class": "logging.Formatter", "format": "%(message)s"}},
        "handlers": {
            "consoleHandler": {"class": "logging.StreamHandler", "formatter": "LogFormatter",
                               "level": 0, "stream": "ext://sys.stdout"},
            "serviceHandler": h("service.log"),
            "connectorHandler": h("connector.log"),
            "tb_connectionHandler": h("tb_connection.log"),
            "storageHandler": h("storage.log")
        },
        "loggers": {
            "service": {"handlers": ["serviceHandler", "consoleHandler"], "level": "INFO", "propagate": false},
            "connector": {"handlers": ["connectorHandler"], "level": "DEBUG", "propagate": false},
            "tb_connection": {"handlers": ["tb_connectionHandler"], "level": "INFO", "propagate": false},
            "storage": {"handlers": ["storageHandler"], "level": "ERROR", "propagate": false}
        },
        "root": {"level": "ERROR", "handlers": ["consoleHandler"]}
    })
}

/// `logs.json` in upstream's shape drives which records go to which file at which level, the
/// files rotate every second (`when: S`) keeping `backupCount` copies, and nothing carries
/// ANSI colour codes when the output is not a terminal.
#[tokio::test]
async fn logs_json_routes_levels_to_files_and_rotates_them() {
    let devices = Mosquitto::start().await.unwrap();
    let tbb = Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        tbb.port(),
        devices.port(),
        Some(upstream_style_logs(dir.path(), "S", 2)),
    );
    let child = spawn(dir.path(), &config, &[], &[]);
    let logs = dir.path().join("logs");
    let dev = Device::connect(devices.port());

    // Connect requests log at debug level on the `connector` logger; keep them coming until
    // the connector file has rotated at least three times.
    let deadline = tokio::time::Instant::now() + LONG_WAIT;
    let mut seen = std::collections::BTreeSet::new();
    let mut i = 0;
    while seen.len() < 3 {
        dev.client
            .publish(
                "sensor/connect",
                QoS::AtLeastOnce,
                false,
                json!({"name": format!("dev-{i}")}).to_string(),
            )
            .await
            .unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = rotated(&logs, "connector.log");
        assert!(r.len() <= 2, "backupCount 2 exceeded: {r:?}");
        seen.extend(r);
        assert!(
            tokio::time::Instant::now() < deadline,
            "connector.log never rotated three times; seen {seen:?}\nstderr:\n{}",
            read(&dir.path().join("stderr.txt"))
        );
    }
    for name in &seen {
        // Python's suffix for `when: S`.
        let stamp = name.trim_start_matches("connector.log.");
        assert!(
            chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d_%H-%M-%S").is_ok(),
            "{name}"
        );
    }
    let code = terminate(child).await;
    assert_eq!(code, Some(0));

    let mut connector = String::new();
    for n in rotated(&logs, "connector.log") {
        connector.push_str(&read(&logs.join(n)));
    }
    connector.push_str(&read(&logs.join("connector.log")));
    assert!(connector.contains("Device connect request."), "{connector}");
    let tb: String = rotated(&logs, "tb_connection.log")
        .into_iter()
        .map(|n| read(&logs.join(n)))
        .chain([read(&logs.join("tb_connection.log"))])
        .collect();
    assert!(tb.contains("Connected to ThingsBoard."), "{tb}");
    // The service logger is at INFO: its start-up line is in its file and on stdout (the
    // console handler), never a debug record; the storage logger (ERROR) wrote nothing.
    let service: String = rotated(&logs, "service.log")
        .into_iter()
        .map(|n| read(&logs.join(n)))
        .chain([read(&logs.join("service.log"))])
        .collect();
    assert!(service.contains("tbgw starting."), "{service}");
    assert!(!service.contains("DEBUG"), "{service}");
    assert!(!connector.contains("Connected to ThingsBoard."));
    let stdout = read(&dir.path().join("stdout.txt"));
    assert!(stdout.contains("tbgw starting."), "{stdout}");
    assert!(!stdout.contains("Device connect request."), "{stdout}");
    for text in [&connector, &tb, &service, &stdout] {
        assert!(!text.contains('\u{1b}'), "ANSI escape in {text}");
    }
    let storage: String = rotated(&logs, "storage.log")
        .into_iter()
        .map(|n| read(&logs.join(n)))
        .chain([read(&logs.join("storage.log"))])
        .collect();
    assert!(!storage.contains("INFO"), "{storage}");
}

/// `--log-format json`: one JSON object per record, in files as on the console.
#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let devices = Mosquitto::start().await.unwrap();
    let tbb = Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        tbb.port(),
        devices.port(),
        Some(upstream_style_logs(dir.path(), "D", 1)),
    );
    let child = spawn(dir.path(), &config, &["--log-format", "json"], &[]);
    let file = dir.path().join("logs").join("tb_connection.log");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !read(&file).contains("Connected to ThingsBoard.") {
        assert!(tokio::time::Instant::now() < deadline, "{}", read(&file));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(child).await;
    for text in [read(&file), read(&dir.path().join("stdout.txt"))] {
        assert!(!text.is_empty());
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{line}"
            );
        }
    }
}

/// Without `logs.json` the gateway logs to stderr as before, without colour codes when stderr
/// is not a terminal.
#[tokio::test]
async fn without_logs_json_stderr_has_no_colour_codes() {
    let tbb = Mosquitto::start().await.unwrap();
    let devices = Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), tbb.port(), devices.port(), None);
    let child = spawn(dir.path(), &config, &[], &[]);
    let err = dir.path().join("stderr.txt");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !read(&err).contains("Connected to ThingsBoard.") {
        assert!(tokio::time::Instant::now() < deadline, "{}", read(&err));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    terminate(child).await;
    assert!(!read(&err).contains('\u{1b}'), "{}", read(&err));
}

/// `tbgw check` names what `logs.json` asks for that tbgw does not honour, and fails on what
/// it cannot use at all.
#[test]
fn check_reports_logs_json_warnings_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1883, 1884, None);
    let logs = json!({
        "version": 1,
        "formatters": {"F": {"format": "%(message)s"}},
        "handlers": {"h": {"class": "logging.handlers.TimedRotatingFileHandler",
                           "filename": "x.log", "when": "H", "atTime": "01:00"},
                     "sys": {"class": "logging.handlers.SysLogHandler"}},
        "loggers": {"service": {"handlers": ["h"], "level": "INFO"}}
    });
    std::fs::write(dir.path().join("logs.json"), logs.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tbgw"))
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let file = dir.path().join("logs.json");
    for key in ["formatters.F", "handlers.h.atTime", "handlers.sys.class"] {
        assert!(
            err.contains(&format!("warning: {}: {key}: ", file.display())),
            "{key} not reported:\n{err}"
        );
    }

    std::fs::write(
        dir.path().join("logs.json"),
        json!({"handlers": {"h": {"class": "logging.handlers.TimedRotatingFileHandler",
                                   "filename": "x.log", "when": "fortnightly"}}})
        .to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tbgw"))
        .arg("check")
        .arg("-c")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}: handlers.h.when: ", file.display())),
        "{err}"
    );
}

/// Collects what the gateway tells systemd on a fake `$NOTIFY_SOCKET`.
struct FakeSystemd {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl FakeSystemd {
    fn bind(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        FakeSystemd { socket, path }
    }

    /// The next notification.
    async fn next(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.socket.recv(&mut buf))
            .await
            .expect("a notification within the wait")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// `Type=notify`: `READY=1` only once ThingsBoard is connected, and the watchdog is fed
/// (`WATCHDOG=1`) whether connected or not.
#[tokio::test]
async fn systemd_gets_ready_after_connecting_and_watchdog_keepalives() {
    let devices = Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sd = FakeSystemd::bind(dir.path());

    // ThingsBoard is not there: watchdog keepalives, and no readiness among them.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let config = write_config(dir.path(), closed_port, devices.port(), None);
    let env = [
        ("NOTIFY_SOCKET", sd.path.to_str().unwrap()),
        ("WATCHDOG_USEC", "100000"),
    ];
    let child = spawn(dir.path(), &config, &[], &env);
    let mut watchdogs = 0;
    while watchdogs < 5 {
        let m = sd.next().await;
        assert!(!m.contains("READY=1"), "ready without ThingsBoard: {m}");
        watchdogs += usize::from(m.lines().any(|l| l == "WATCHDOG=1"));
    }
    terminate(child).await;

    // ThingsBoard is there: readiness, then more keepalives; STOPPING=1 at the end.
    let tbb = Mosquitto::start().await.unwrap();
    let config = write_config(dir.path(), tbb.port(), devices.port(), None);
    let child = spawn(dir.path(), &config, &[], &env);
    let mut ready = false;
    while !ready {
        ready = sd.next().await.lines().any(|l| l == "READY=1");
    }
    while !sd.next().await.lines().any(|l| l == "WATCHDOG=1") {}
    assert_eq!(terminate(child).await, Some(0));
    let mut stopping = false;
    while !stopping {
        stopping = sd.next().await.lines().any(|l| l == "STOPPING=1");
    }
}

/// `SIGHUP` applies a changed connector file (with the periodic check off), connector by
/// connector, as remote configuration does.
#[tokio::test]
async fn sighup_reloads_changed_connector_files() {
    let devices = Mosquitto::start().await.unwrap();
    let tbb = Mosquitto::start().await.unwrap();
    let tb = tbgw::test_util::TbStandIn::connect(tbb.port())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), tbb.port(), devices.port(), None);
    let mut main: Value = serde_json::from_str(&read(&config)).unwrap();
    main["thingsboard"]["checkConnectorsConfigurationInSeconds"] = json!(0);
    std::fs::write(&config, main.to_string()).unwrap();
    let child = spawn(dir.path(), &config, &[], &[]);
    let dev = Device::connect(devices.port());

    let send_until = |key: &'static str| {
        let dev = &dev;
        let tb = &tb;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                dev.client
                    .publish(
                        "sensor/d1/data",
                        QoS::AtLeastOnce,
                        false,
                        json!({"seq": 1}).to_string(),
                    )
                    .await
                    .unwrap();
                if tb
                    .wait_for(Duration::from_millis(300), |m| {
                        m.topic == "v1/gateway/telemetry" && m.text().contains(key)
                    })
                    .await
                    .is_some()
                {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {key} at ThingsBoard"
                );
            }
        }
    };
    send_until("\"seq\"").await;
    let mut mqtt: Value = serde_json::from_str(&read(&dir.path().join("mqtt.json"))).unwrap();
    mqtt["mapping"][0]["converter"]["timeseries"][0]["key"] = json!("sequence");
    std::fs::write(dir.path().join("mqtt.json"), mqtt.to_string()).unwrap();
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    send_until("\"sequence\"").await;
    assert_eq!(terminate(child).await, Some(0));
    let err = read(&dir.path().join("stderr.txt"));
    assert!(err.contains("SIGHUP"), "{err}");
}

/// The unit file passes `systemd-analyze verify` (with this build's binary in `ExecStart`).
#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/tbgw.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify") && text.contains("WatchdogSec="));
    let probe = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: systemd-analyze cannot run here (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tbgw.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/tbgw", env!("CARGO_BIN_EXE_tbgw")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

/// `tbgw status` (text and `--json`) against a running gateway: ThingsBoard connection,
/// storage, the connector with its device and counters; the socket is not world-accessible.
#[tokio::test]
async fn status_shows_connection_storage_and_connectors() {
    use std::os::unix::fs::PermissionsExt;
    let devices = Mosquitto::start().await.unwrap();
    let tbb = Mosquitto::start().await.unwrap();
    let tb = tbgw::test_util::TbStandIn::connect(tbb.port())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), tbb.port(), devices.port(), None);
    let sock = dir.path().join("run").join("status.sock");
    let child = spawn(
        dir.path(),
        &config,
        &["--status-socket", sock.to_str().unwrap()],
        &[],
    );
    let dev = Device::connect(devices.port());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        dev.client
            .publish(
                "sensor/d7/data",
                QoS::AtLeastOnce,
                false,
                json!({"seq": 7}).to_string(),
            )
            .await
            .unwrap();
        if tb
            .wait_for(Duration::from_millis(300), |m| {
                m.topic == "v1/gateway/telemetry" && m.text().contains("d7")
            })
            .await
            .is_some()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing forwarded");
    }
    // Something for the last errors: a payload the converter cannot use.
    dev.client
        .publish("sensor/d8/data", QoS::AtLeastOnce, false, "not json")
        .await
        .unwrap();

    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let status = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tbgw"));
        c.args(["status", "--status-socket"]).arg(&sock);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = status(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["thingsboard"]["connected"], json!(true), "{doc}");
    assert_eq!(doc["thingsboard"]["port"], json!(tbb.port()));
    assert_eq!(doc["storage"]["type"], json!("memory"));
    assert_eq!(doc["storage"]["capacity_records"], json!(1000));
    assert!(doc["storage"]["records"].is_u64(), "{doc}");
    let c = &doc["connectors"][0];
    assert_eq!(c["name"], json!("Devices"), "{doc}");
    assert_eq!(c["state"], json!("running"));
    assert!(c["devices"].as_u64().unwrap() >= 1, "{doc}");
    assert!(c["messages_received"].as_u64().unwrap() >= 1, "{doc}");
    assert!(doc["devices"].as_u64().unwrap() >= 1, "{doc}");
    assert!(
        doc["last_errors"].is_array() && doc["errors"].is_object(),
        "{doc}"
    );

    let out = status(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("CONNECTED") && text.contains("Devices"),
        "{text}"
    );

    assert_eq!(terminate(child).await, Some(0));
    assert!(!sock.exists(), "the socket is removed at shutdown");
    let out = status(true);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the gateway running?"));
}
