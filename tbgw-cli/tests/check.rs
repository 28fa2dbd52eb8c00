//! `tbgw check --config FILE`: exit 0 for a valid configuration (warnings for ignored keys on
//! stderr), exit 1 with one `file: key.path: reason` line per problem otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use tempfile::TempDir;

/// Upstream's sample configuration directory, when it is beside this clone (the tests that
/// read it skip themselves otherwise; see `tbgw::test_util::upstream_sample`).
fn upstream_dir() -> Option<PathBuf> {
    tbgw::test_util::upstream_sample("tb_gateway.json")?;
    tbgw::test_util::upstream_config_dir()
}

/// Runs `tbgw check --config <file>` with no `TB_GW_*` or `RUST_LOG` from the caller's
/// environment.
fn check(file: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tbgw"));
    cmd.arg("check").arg("--config").arg(file);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TB_GW_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.output().expect("run tbgw")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(v).expect("serialize")).expect("write");
    path
}

fn main_file(connectors: Value) -> Value {
    json!({
        "thingsboard": {
            "host": "127.0.0.1",
            "port": 1883,
            "security": {"type": "accessToken", "accessToken": "TOKEN"}
        },
        "storage": {"type": "memory"},
        "connectors": connectors
    })
}

fn mqtt_file(timeseries: Value) -> Value {
    json!({
        "broker": {"host": "127.0.0.1", "port": 1883},
        "mapping": [{
            "topicFilter": "sensor/+/data",
            "converter": {
                "type": "json",
                "deviceInfo": {
                    "deviceNameExpressionSource": "topic",
                    "deviceNameExpression": "(?<=sensor/)(.*?)(?=/data)"
                },
                "timeseries": timeseries
            }
        }]
    })
}

/// The problem lines of stderr: every non-empty line. Each must have the form
/// `file: key.path: reason` (or `file: reason` for a problem with a whole file).
fn error_lines(out: &Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Asserts the run failed with exit 1 and stderr has exactly one line per expected
/// `(file, key path, reason fragment)`, in order.
fn assert_problems(out: &Output, expected: &[(&Path, &str, &str)]) {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    let lines = error_lines(out);
    assert_eq!(
        lines.len(),
        expected.len(),
        "one line per problem expected\n{}",
        describe(out)
    );
    for (line, (file, key, reason)) in lines.iter().zip(expected) {
        let prefix = if key.is_empty() {
            format!("{}: ", file.display())
        } else {
            format!("{}: {key}: ", file.display())
        };
        assert!(
            line.starts_with(&prefix),
            "`{line}` should start with `{prefix}`\n{}",
            describe(out)
        );
        assert!(
            line[prefix.len()..].contains(reason),
            "`{line}` should give the reason {reason:?}"
        );
    }
}

#[test]
fn upstreams_sample_tb_gateway_json_passes() {
    let Some(dir) = upstream_dir() else { return };
    let file = dir.join("tb_gateway.json");
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("{}: OK (0 connector(s))", file.display())),
        "{}",
        describe(&out)
    );
    let err = stderr(&out);
    // Service keys are used now; gRPC is not.
    assert!(
        !err.contains("thingsboard.remoteShell"),
        "{}",
        describe(&out)
    );
    assert!(
        err.contains(&format!(
            "warning: {}: thingsboard.latencyDebugMode: ignored",
            file.display()
        )),
        "{}",
        describe(&out)
    );
    // The gRPC section is read (feature `grpc`); only grpc-core's ping policy keys are not.
    let grpc_ignored = format!("warning: {}: grpc: ignored", file.display());
    let ping_policy = format!(
        "warning: {}: grpc.maxPingsWithoutData: ignored",
        file.display()
    );
    assert!(
        !err.contains(&grpc_ignored) && err.contains(&ping_policy),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_main_file_naming_upstreams_mqtt_json_by_absolute_path_passes_with_warnings() {
    let Some(upstream) = upstream_dir() else {
        return;
    };
    let dir = TempDir::new().expect("tempdir");
    let mqtt = upstream.join("mqtt.json");
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(json!([{
            "type": "mqtt",
            "name": "MQTT Broker Connector",
            "configuration": mqtt.to_str().expect("utf-8 path")
        }])),
    );
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("OK (1 connector(s))"),
        "{}",
        describe(&out)
    );
    let err = stderr(&out);
    // Keys of upstream's sample that tbgw does not use are named with their full path, in
    // the same `mapping[0]` syntax errors use.
    for key in ["broker.maxNumberOfWorkers", "mapping[1].converter.timeout"] {
        let warning = format!("warning: {}: {key}: ignored", mqtt.display());
        assert!(
            err.contains(&warning),
            "missing `{warning}`\n{}",
            describe(&out)
        );
    }
    // Every stderr line is such a warning.
    for line in error_lines(&out) {
        assert!(line.starts_with("warning: "), "{}", describe(&out));
    }
}

#[test]
fn a_wrong_type_in_the_main_file_is_one_line_naming_thingsboard_port() {
    let dir = TempDir::new().expect("tempdir");
    let mut main = main_file(json!([]));
    main["thingsboard"]["port"] = json!("abc");
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_problems(&out, &[(&file, "thingsboard.port", "invalid type")]);
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn several_problems_in_the_main_file_are_one_line_each() {
    let dir = TempDir::new().expect("tempdir");
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &json!({
            "thingsboard": {
                "host": "127.0.0.1",
                "qos": 2,
                "security": {"type": "accessToken"}
            },
            "storage": {"type": "file", "max_file_count": 0},
            "connectors": [
                {"type": "mqtt", "name": "A", "configuration": "absent.json"}
            ]
        }),
    );
    let out = check(&file);
    assert_problems(
        &out,
        &[
            (&file, "thingsboard.qos", "0 or 1"),
            (&file, "storage.max_file_count", "at least 1"),
            (&file, "thingsboard.security.accessToken", "missing"),
            (&file, "connectors[0].configuration", "cannot read file"),
        ],
    );
}

#[test]
fn a_broken_connector_file_names_the_mapping_key_path() {
    let dir = TempDir::new().expect("tempdir");
    let mqtt = write_json(
        dir.path(),
        "mqtt.json",
        &mqtt_file(json!([
            {"type": "decimal", "key": "temperature", "value": "${temp}"}
        ])),
    );
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(json!([
            {"type": "mqtt", "name": "MQTT", "configuration": "mqtt.json"}
        ])),
    );
    let out = check(&file);
    assert_problems(
        &out,
        &[(
            &mqtt,
            "mapping[0].converter.timeseries[0].type",
            "unknown type `decimal`",
        )],
    );
}

#[test]
fn problems_in_several_connector_files_are_all_reported() {
    let dir = TempDir::new().expect("tempdir");
    let a = write_json(
        dir.path(),
        "a.json",
        &mqtt_file(json!([
            {"type": "double", "key": "t", "value": "${temp"}
        ])),
    );
    let mut b_content = mqtt_file(json!([]));
    b_content["broker"]["port"] = json!("abc");
    let b = write_json(dir.path(), "b.json", &b_content);
    // A type this binary lacks, when there is one (a build with every connector has none).
    let unbuilt = unbuilt_type();
    let mut connectors = vec![
        json!({"type": "mqtt", "name": "A", "configuration": "a.json"}),
        json!({"type": "mqtt", "name": "B", "configuration": "b.json"}),
    ];
    if let Some(t) = unbuilt {
        connectors.push(json!({"type": t, "name": "KNX", "configuration": "a.json"}));
    }
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(Value::Array(connectors)),
    );
    let out = check(&file);
    let unbuilt_text = unbuilt.map(|t| format!("`{t}`")).unwrap_or_default();
    let mut expected: Vec<(&Path, &str, &str)> = vec![
        (
            &a,
            "mapping[0].converter.timeseries[0].value",
            "unterminated",
        ),
        (&b, "broker.port", "invalid type"),
    ];
    if unbuilt.is_some() {
        expected.push((&file, "connectors[name=KNX].type", &unbuilt_text));
    }
    assert_problems(&out, &expected);
}

#[test]
fn a_broken_main_file_does_not_hide_a_broken_connector_file() {
    let dir = TempDir::new().expect("tempdir");
    let mut mqtt_content = mqtt_file(json!([]));
    mqtt_content["mapping"][0]
        .as_object_mut()
        .expect("mapping object")
        .remove("topicFilter");
    let mqtt = write_json(dir.path(), "mqtt.json", &mqtt_content);
    let mut main = main_file(json!([
        {"type": "mqtt", "name": "MQTT", "configuration": "mqtt.json"}
    ]));
    main["thingsboard"]["port"] = json!("abc");
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_problems(
        &out,
        &[
            (&file, "thingsboard.port", "invalid type"),
            (&mqtt, "mapping[0]", "topicFilter"),
        ],
    );
}

/// A connector type tbgw knows (`ALL_CONNECTOR_TYPES`) that the binary under test was built
/// without, whatever its features (`grpc` is registered by the binary itself, `custom` is
/// left out as special); `None` when every connector is built (`--all-features`).
fn unbuilt_type() -> Option<&'static str> {
    let built: Vec<&str> = tbgw_connectors::factories()
        .iter()
        .map(|f| f.connector_type())
        .collect();
    tbgw_connectors::ALL_CONNECTOR_TYPES
        .iter()
        .copied()
        .find(|t| !built.contains(t) && !matches!(*t, "grpc" | "custom"))
}

#[test]
fn a_connector_type_that_is_not_built_is_rejected_by_name() {
    let Some(unbuilt) = unbuilt_type() else {
        eprintln!("skipped: this build has every connector type");
        return;
    };
    let dir = TempDir::new().expect("tempdir");
    // A connector type tbgw knows but this binary was built without.
    write_json(dir.path(), "knx.json", &json!({"devices": []}));
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(json!([
            {"type": unbuilt, "name": "KNX Connector", "configuration": "knx.json"}
        ])),
    );
    let out = check(&file);
    assert_problems(
        &out,
        &[(
            &file,
            "connectors[name=KNX Connector].type",
            "not available in this build",
        )],
    );
    // The message names what this build does know, so a typo is obvious.
    let text = stderr(&out);
    assert!(
        text.contains("registered types are:") && text.contains("mqtt, "),
        "{text}"
    );
}

#[test]
fn a_missing_main_file_fails() {
    let dir = TempDir::new().expect("tempdir");
    let file = dir.path().join("tb_gateway.json");
    let out = check(&file);
    assert_problems(&out, &[(&file, "", "cannot read file")]);
}

#[test]
fn a_connector_file_without_broker_security_is_anonymous_and_passes() {
    let dir = TempDir::new().expect("tempdir");
    write_json(
        dir.path(),
        "mqtt.json",
        &mqtt_file(json!([
            {"type": "double", "key": "temperature", "value": "${temp}"}
        ])),
    );
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(json!([
            {"type": "mqtt", "name": "MQTT", "configuration": "mqtt.json"}
        ])),
    );
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(error_lines(&out).is_empty(), "{}", describe(&out));
}

#[test]
fn every_upstream_sample_whose_connector_exists_passes() {
    let Some(upstream) = upstream_dir() else {
        return;
    };
    let dir = TempDir::new().expect("tempdir");
    let samples = [
        ("mqtt", "mqtt.json"),
        ("modbus", "modbus.json"),
        ("modbus", "modbus_serial.json"),
        ("opcua", "opcua.json"),
        ("request", "request.json"),
        ("rest", "rest.json"),
        ("snmp", "snmp.json"),
        ("ftp", "ftp.json"),
        ("socket", "socket.json"),
        ("ocpp", "ocpp.json"),
        ("s7", "s7.json"),
        ("can", "can.json"),
    ];
    let connectors: Vec<Value> = samples
        .iter()
        .enumerate()
        .map(|(i, (ty, f))| {
            json!({"type": ty, "name": format!("{ty} {i}"), "configuration": upstream.join(f)})
        })
        .collect();
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(Value::Array(connectors)),
    );
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("OK ({} connector(s))", samples.len())),
        "{}",
        describe(&out)
    );
}

#[test]
fn keys_that_are_accepted_but_not_used_are_reported_as_ignored() {
    let dir = TempDir::new().expect("tempdir");
    let mut main = main_file(json!([]));
    main["thingsboard"]["minPackSendDelayMS"] = json!(50);
    main["storage"] = json!({"type": "sqlite", "oversize_check_period": 1, "max_db_amount": 2});
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    for key in [
        "thingsboard.minPackSendDelayMS",
        "storage.oversize_check_period",
    ] {
        assert!(
            err.contains(&format!("warning: {}: {key}: ignored", file.display())),
            "{key}: {}",
            describe(&out)
        );
    }
    assert!(!err.contains("max_db_amount"), "{}", describe(&out));
    // Not in the file: nothing to report.
    let file = write_json(dir.path(), "plain.json", &main_file(json!([])));
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!stderr(&out).contains("ignored"), "{}", describe(&out));
}

#[cfg(feature = "grpc")]
#[test]
fn grpc_connectors_need_a_key_and_the_grpc_section_is_read() {
    let dir = TempDir::new().expect("tempdir");
    write_json(dir.path(), "ext.json", &json!({"anything": 1}));
    let mut main = main_file(json!([
        {"type": "grpc", "name": "Ext", "configuration": "ext.json", "key": "k1"}
    ]));
    main["grpc"] = json!({"enabled": true, "serverPort": 9595});
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        !err.contains("grpc: ignored") && !err.contains("key: ignored"),
        "{}",
        describe(&out)
    );

    main["connectors"][0]
        .as_object_mut()
        .expect("entry")
        .remove("key");
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("connectors[0].key"),
        "{}",
        describe(&out)
    );
}

#[cfg(feature = "ble")]
#[test]
fn upstreams_ble_sample_passes_and_ble_errors_name_the_key() {
    let dir = TempDir::new().expect("tempdir");
    if let Some(upstream) = upstream_dir() {
        let file = write_json(
            dir.path(),
            "tb_gateway.json",
            &main_file(json!([
                {"type": "ble", "name": "BLE", "configuration": upstream.join("ble.json")}
            ])),
        );
        let out = check(&file);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    write_json(
        dir.path(),
        "ble.json",
        &json!({"devices": [{"name": "x", "MACAddress": "4C:65:A8:DF:85:C0",
            "telemetry": [{"key": "t", "dataSourceType": "advertisement", "valueExpression": "[a]"}]}]}),
    );
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(json!([{"type": "ble", "name": "BLE", "configuration": "ble.json"}])),
    );
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("devices[0].telemetry[0].valueExpression"),
        "{}",
        describe(&out)
    );
}

#[cfg(feature = "can")]
#[test]
fn can_files_are_checked_and_a_broken_rpc_hex_is_a_warning() {
    let dir = TempDir::new().expect("tempdir");
    let can = |expression: &str| {
        json!({
            "interface": "socketcan", "channel": "vcan0", "backend": {"fd": true},
            "devices": [{
                "name": "Car", "strictEval": false,
                "timeseries": [{"key": "rpm", "nodeId": 1918, "isExtendedId": true,
                    "value": "4:2:big:int", "expression": expression}],
                "serverSideRpc": [{"method": "sendSameData", "nodeId": 4, "isExtendedId": true,
                    "isFd": true, "dataInHex": "aa bb cc d ee ff"}]
            }]
        })
    };
    write_json(dir.path(), "can.json", &can("value / 4"));
    let file = write_json(
        dir.path(),
        "tb_gateway.json",
        &main_file(json!([{"type": "can", "name": "CAN", "configuration": "can.json"}])),
    );
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("devices[0].serverSideRpc[0].dataInHex") && err.contains("not hex"),
        "{}",
        describe(&out)
    );
    // An expression outside the safe subset: named with its position.
    write_json(dir.path(), "can.json", &can("__import__('os').system('x')"));
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("devices[0].timeseries[0].expression")
            && err.contains("cannot read expression"),
        "{}",
        describe(&out)
    );
}

/// A Python custom connector (an entry with a `class`, upstream's `custom_serial` style) is
/// accepted with the gRPC server enabled, and its keys are not reported as ignored; without
/// the server, `check` says what is missing.
#[cfg(feature = "grpc")]
#[test]
fn python_custom_connectors_need_the_grpc_server() {
    let dir = TempDir::new().expect("tempdir");
    // Its file goes to the class as it is: `logLevel` is the class's, not ignored.
    write_json(
        dir.path(),
        "custom_serial.json",
        &json!({"logLevel": "DEBUG", "devices": []}),
    );
    let mut main = main_file(json!([
        {"type": "serial", "name": "Custom serial connector", "configuration": "custom_serial.json",
         "class": "SerialConnector", "python": "/opt/venv/bin/python", "extensionsPath": "ext"}
    ]));
    main["grpc"] = json!({"enabled": true, "serverPort": 9595});
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = stderr(&out);
    assert!(!err.contains("ignored"), "{}", describe(&out));

    main["grpc"] = json!({"enabled": false});
    let file = write_json(dir.path(), "tb_gateway.json", &main);
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("grpc.enabled")
            && err.contains("Custom serial connector")
            && err.contains("SerialConnector"),
        "{}",
        describe(&out)
    );
}
