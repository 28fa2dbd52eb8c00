//! Tests of the configuration loader: upstream's sample file, ignored keys, errors naming the
//! file, key path and reason, `TB_GW_*` overrides, connector files and path resolution.

use super::*;

use std::fs;

use serde_json::json;
use tempfile::TempDir;

/// Upstream's sample configuration directory, when it is beside this clone (see
/// [`crate::test_util::upstream_sample`]).
fn upstream_dir() -> Option<PathBuf> {
    crate::test_util::upstream_sample("tb_gateway.json")?;
    crate::test_util::upstream_config_dir()
}

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes `name` in `dir` with `content` (JSON values are pretty-printed, strings written as
/// is) and returns its path.
fn write(dir: &Path, name: &str, content: impl Into<Content>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create dir");
    }
    let text = match content.into() {
        Content::Json(v) => serde_json::to_string_pretty(&v).expect("serialize"),
        Content::Text(s) => s,
    };
    fs::write(&path, text).expect("write file");
    path
}

enum Content {
    Json(serde_json::Value),
    Text(String),
}

impl From<serde_json::Value> for Content {
    fn from(v: serde_json::Value) -> Self {
        Content::Json(v)
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_string())
    }
}

/// A minimal valid main file with the given `connectors` list.
fn main_with_connectors(connectors: serde_json::Value) -> serde_json::Value {
    json!({
        "thingsboard": {
            "host": "tb.example",
            "port": 1883,
            "security": {"type": "accessToken", "accessToken": "TOKEN"}
        },
        "storage": {"type": "memory"},
        "connectors": connectors
    })
}

fn mqtt_connector_file() -> serde_json::Value {
    json!({
        "broker": {"host": "127.0.0.1", "port": 1883},
        "mapping": []
    })
}

/// Loads `main` written as `tb_gateway.json` in a fresh temp dir and expects failure.
fn load_err(main: serde_json::Value) -> (TempDir, PathBuf, Vec<ConfigError>) {
    let dir = TempDir::new().expect("tempdir");
    let file = write(dir.path(), "tb_gateway.json", main);
    let errors = load_with_env(&file, &no_env())
        .expect_err("the configuration must be rejected")
        .0;
    (dir, file, errors)
}

/// Loads `main` written as `tb_gateway.json` in a fresh temp dir and expects success.
fn load_ok(main: serde_json::Value) -> (TempDir, LoadedConfig) {
    let dir = TempDir::new().expect("tempdir");
    let file = write(dir.path(), "tb_gateway.json", main);
    let loaded = load_with_env(&file, &no_env())
        .unwrap_or_else(|e| panic!("the configuration must load, got:\n{e}"));
    (dir, loaded)
}

/// The one error, checked to name `file` and `key`, with a reason containing `reason_part`.
fn assert_single_error(errors: &[ConfigError], file: &Path, key: &str, reason_part: &str) {
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error, got {errors:#?}"
    );
    assert_error(&errors[0], file, key, reason_part);
}

fn assert_error(e: &ConfigError, file: &Path, key: &str, reason_part: &str) {
    assert_eq!(e.file, file, "wrong file in {e}");
    assert_eq!(e.key, key, "wrong key path in {e}");
    assert!(
        e.reason.contains(reason_part),
        "reason of `{e}` should contain {reason_part:?}"
    );
    // The printed form is `file: key.path: reason`.
    let shown = e.to_string();
    let expected_prefix = if key.is_empty() {
        format!("{}: ", file.display())
    } else {
        format!("{}: {key}: ", file.display())
    };
    assert!(
        shown.starts_with(&expected_prefix),
        "`{shown}` should start with `{expected_prefix}`"
    );
}

fn ignored_keys(loaded: &LoadedConfig) -> Vec<(PathBuf, String)> {
    loaded
        .ignored
        .iter()
        .map(|i| (i.file.clone(), i.key.clone()))
        .collect()
}

fn assert_ignored(loaded: &LoadedConfig, file: &Path, key: &str) {
    assert!(
        loaded
            .ignored
            .iter()
            .any(|i| i.file == file && i.key == key),
        "`{key}` of {} should be reported ignored; ignored: {:#?}",
        file.display(),
        ignored_keys(loaded)
    );
}

fn assert_not_ignored(loaded: &LoadedConfig, key: &str) {
    assert!(
        !loaded.ignored.iter().any(|i| i.key == key),
        "`{key}` is used and must not be reported ignored"
    );
}

// ---------------------------------------------------------------------------------------------
// Upstream's sample file and its YAML form
// ---------------------------------------------------------------------------------------------

#[test]
fn upstream_sample_tb_gateway_json_loads() {
    let Some(dir) = upstream_dir() else { return };
    let file = dir.join("tb_gateway.json");
    let loaded = load_with_env(&file, &no_env())
        .unwrap_or_else(|e| panic!("upstream's sample must load, got:\n{e}"));
    let tb = &loaded.gateway.thingsboard;
    assert_eq!(tb.host, "thingsboard.cloud");
    assert_eq!(tb.port, 1883);
    assert_eq!(tb.qos, 1);
    assert_eq!(tb.max_payload_size_bytes, 8196);
    assert_eq!(tb.min_pack_send_delay_ms, 50);
    assert_eq!(tb.security.kind.as_deref(), Some("accessToken"));
    assert_eq!(
        loaded.credentials,
        Credentials {
            client_id: String::new(),
            username: Some("YOUR_ACCESS_TOKEN".into()),
            password: None,
            tls: None,
        }
    );
    let storage = &loaded.gateway.storage;
    assert_eq!(storage.kind, "memory");
    assert_eq!(storage.max_records_count, 100_000);
    assert_eq!(storage.read_records_count, 100);
    assert!(loaded.connectors.is_empty());
    assert!(loaded.gateway.connectors.is_empty());
    assert_eq!(loaded.file, file);
    assert_eq!(loaded.dir, dir);
}

#[test]
fn upstream_sample_reports_unimplemented_keys_as_ignored_with_full_paths() {
    let Some(dir) = upstream_dir() else { return };
    let file = dir.join("tb_gateway.json");
    let loaded = load_with_env(&file, &no_env()).expect("upstream's sample must load");
    for key in [
        "thingsboard.latencyDebugMode",
        "thingsboard.minPackSizeToSend",
        // Accepted, not used: tbgw does not poll storage.
        "thingsboard.minPackSendDelayMS",
        "grpc",
        // Keys of the other storage types, meaningless for `memory`.
        "storage.data_folder_path",
        "storage.max_file_count",
        "storage.max_read_records_count",
        "storage.max_records_per_file",
        "storage.data_file_path",
        "storage.messages_ttl_check_in_hours",
        "storage.messages_ttl_in_days",
    ] {
        assert_ignored(&loaded, &file, key);
    }
    for used in [
        "thingsboard.host",
        "thingsboard.port",
        "thingsboard.qos",
        "thingsboard.security",
        "thingsboard.security.type",
        "thingsboard.security.accessToken",
        "thingsboard.maxPayloadSizeBytes",
        "storage.type",
        "storage.max_records_count",
        "storage.read_records_count",
        "connectors",
    ] {
        assert_not_ignored(&loaded, used);
    }
    // A whole ignored section is reported once, not key by key.
    assert!(
        !loaded.ignored.iter().any(|i| i.key.starts_with("grpc.")),
        "{:#?}",
        ignored_keys(&loaded)
    );
}

#[test]
fn yaml_form_of_an_equivalent_main_file_loads() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "mqtt.json", mqtt_connector_file());
    let file = write(
        dir.path(),
        "tb_gateway.yaml",
        r#"
thingsboard:
  host: thingsboard.cloud
  port: 1883
  remoteShell: false
  qos: 1
  maxPayloadSizeBytes: 8196
  security:
    type: accessToken
    accessToken: YOUR_ACCESS_TOKEN
  rateLimits: DEFAULT_TELEMETRY_RATE_LIMIT
storage:
  type: memory
  read_records_count: 100
  max_records_count: 100000
  data_folder_path: ./data/
grpc:
  enabled: false
  serverPort: 9595
connectors:
  - type: mqtt
    name: MQTT Broker Connector
    configuration: mqtt.json
"#,
    );
    let loaded = load_with_env(&file, &no_env())
        .unwrap_or_else(|e| panic!("the YAML file must load, got:\n{e}"));
    assert_eq!(loaded.gateway.thingsboard.host, "thingsboard.cloud");
    assert_eq!(loaded.gateway.thingsboard.port, 1883);
    assert_eq!(
        loaded.credentials.username.as_deref(),
        Some("YOUR_ACCESS_TOKEN")
    );
    assert_eq!(loaded.gateway.storage.max_records_count, 100_000);
    assert_eq!(loaded.gateway.storage.read_records_count, 100);
    assert_eq!(loaded.connectors.len(), 1);
    assert_eq!(loaded.connectors[0].name, "MQTT Broker Connector");
    assert_eq!(loaded.connectors[0].connector_type, "mqtt");
    assert_eq!(loaded.connectors[0].config, mqtt_connector_file());
    assert!(!loaded.gateway.thingsboard.remote_shell);
    assert_not_ignored(&loaded, "thingsboard.remoteShell");
    assert_ignored(&loaded, &file, "storage.data_folder_path");
    assert_ignored(&loaded, &file, "grpc");
}

#[test]
fn yaml_and_json_forms_of_the_same_file_load_the_same() {
    let dir = TempDir::new().expect("tempdir");
    let main = json!({
        "thingsboard": {
            "host": "tb.example",
            "port": 1884,
            "qos": 0,
            "keep_alive": 30,
            "security": {"type": "usernamePassword", "username": "u", "password": "p", "clientId": "c"}
        },
        "storage": {"type": "memory", "max_records_count": 5, "read_records_count": 2},
        "connectors": []
    });
    let json_file = write(dir.path(), "tb_gateway.json", main.clone());
    let yaml_text = serde_norway::to_string(&main).expect("to yaml");
    let yaml_file = write(dir.path(), "tb_gateway.yml", yaml_text.as_str());
    let from_json = load_with_env(&json_file, &no_env()).expect("json loads");
    let from_yaml = load_with_env(&yaml_file, &no_env()).expect("yaml loads");
    assert_eq!(from_json.credentials, from_yaml.credentials);
    assert_eq!(
        from_json.credentials,
        Credentials {
            client_id: "c".into(),
            username: Some("u".into()),
            password: Some("p".into()),
            tls: None,
        }
    );
    let (a, b) = (
        &from_json.gateway.thingsboard,
        &from_yaml.gateway.thingsboard,
    );
    assert_eq!((a.port, a.qos, a.keep_alive), (1884, 0, 30));
    assert_eq!((b.port, b.qos, b.keep_alive), (1884, 0, 30));
    assert_eq!(from_yaml.gateway.storage.max_records_count, 5);
    assert_eq!(from_yaml.gateway.storage.read_records_count, 2);
}

#[test]
fn missing_sections_take_upstream_defaults_except_the_access_token() {
    let (_dir, loaded) = load_ok(json!({
        "thingsboard": {"security": {"accessToken": "T"}}
    }));
    let tb = &loaded.gateway.thingsboard;
    assert_eq!(tb.host, "thingsboard.cloud");
    assert_eq!(tb.port, 1883);
    assert_eq!(tb.qos, 1);
    assert_eq!(tb.keep_alive, 120);
    assert_eq!(loaded.gateway.storage.kind, "memory");
    assert_eq!(loaded.credentials.username.as_deref(), Some("T"));
    assert!(loaded.ignored.is_empty(), "{:#?}", ignored_keys(&loaded));
}

// ---------------------------------------------------------------------------------------------
// Errors: file, key path, reason
// ---------------------------------------------------------------------------------------------

#[test]
fn a_port_of_the_wrong_type_names_thingsboard_port() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["port"] = json!("abc");
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "thingsboard.port", "invalid type");
}

#[test]
fn a_port_out_of_range_names_thingsboard_port() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["port"] = json!(70000);
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "thingsboard.port", "70000");
}

#[test]
fn a_wrong_type_deep_in_the_file_names_the_whole_path() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["security"]["accessToken"] = json!(42);
    let (_dir, file, errors) = load_err(main);
    assert_single_error(
        &errors,
        &file,
        "thingsboard.security.accessToken",
        "invalid type",
    );

    let main =
        main_with_connectors(json!([{"type": "mqtt", "name": 5, "configuration": "m.json"}]));
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "connectors[0].name", "invalid type");
}

#[test]
fn an_unknown_security_type_names_thingsboard_security_type() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["security"] = json!({"type": "kerberos", "accessToken": "T"});
    let (_dir, file, errors) = load_err(main);
    assert_single_error(
        &errors,
        &file,
        "thingsboard.security.type",
        "unknown security type `kerberos`",
    );
}

#[test]
fn a_missing_access_token_names_thingsboard_security_access_token() {
    for security in [
        json!({"type": "accessToken"}),
        json!({"type": "accessToken", "accessToken": ""}),
        json!({}),
    ] {
        let mut main = main_with_connectors(json!([]));
        main["thingsboard"]["security"] = security.clone();
        let (_dir, file, errors) = load_err(main);
        assert_single_error(
            &errors,
            &file,
            "thingsboard.security.accessToken",
            "missing",
        );
    }
}

#[test]
fn x509_without_its_files_names_the_missing_key() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["security"] = json!({"type": "x509Certificate", "caCert": "ca.pem"});
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "thingsboard.security.cert", "missing");
}

#[test]
fn qos_2_is_rejected_at_thingsboard_qos() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["qos"] = json!(2);
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "thingsboard.qos", "0 or 1");
}

#[test]
fn file_storage_keys_are_read_and_keys_of_other_types_are_reported() {
    let mut main = main_with_connectors(json!([]));
    main["storage"] = json!({
        "type": "file", "data_folder_path": "./buffer/", "max_file_count": 3,
        "max_records_per_file": 50, "max_read_records_count": 7, "max_records_between_fsync": 20,
        "messages_ttl_in_days": 2, "data_file_path": "./db/", "read_records_count": 9
    });
    let (_dir, loaded) = load_ok(main);
    let s = &loaded.gateway.storage;
    assert_eq!(
        (
            s.max_file_count,
            s.max_records_per_file,
            s.max_read_records_count
        ),
        (Some(3), Some(50), Some(7))
    );
    assert_eq!(s.ttl(), Some(std::time::Duration::from_secs(2 * 86_400)));
    let ignored: Vec<&str> = loaded.ignored.iter().map(|i| i.key.as_str()).collect();
    assert!(ignored.contains(&"storage.data_file_path"), "{ignored:?}");
    assert!(
        ignored.contains(&"storage.read_records_count"),
        "{ignored:?}"
    );
    assert!(!ignored.contains(&"storage.max_file_count"), "{ignored:?}");
    assert_eq!(
        crate::config::StorageConfig::folder(&loaded.dir, s.data_folder_path.as_deref()),
        loaded.dir.join("./buffer/")
    );
}

#[test]
fn an_unknown_storage_type_is_rejected() {
    let mut main = main_with_connectors(json!([]));
    main["storage"] = json!({"type": "cloud"});
    let (_dir, file, errors) = load_err(main);
    assert_single_error(
        &errors,
        &file,
        "storage.type",
        "unknown storage type `cloud`",
    );
}

#[test]
fn zero_storage_sizes_are_rejected() {
    let mut main = main_with_connectors(json!([]));
    main["storage"] = json!({"type": "memory", "max_records_count": 0});
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "storage.max_records_count", "at least 1");
}

#[test]
fn a_missing_connector_file_names_the_connector_entry() {
    let main = main_with_connectors(json!([
        {"type": "mqtt", "name": "MQTT", "configuration": "absent.json"}
    ]));
    let (_dir, file, errors) = load_err(main);
    assert_single_error(
        &errors,
        &file,
        "connectors[0].configuration",
        "cannot read file",
    );
    assert!(errors[0].reason.contains("absent.json"), "{}", errors[0]);
}

#[test]
fn a_connector_file_that_is_not_json_names_the_connector_entry_and_the_position() {
    let dir = TempDir::new().expect("tempdir");
    write(
        dir.path(),
        "mqtt.json",
        "{\n  \"broker\": {\n    \"host\": ,\n  }\n}",
    );
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "mqtt", "name": "MQTT", "configuration": "mqtt.json"}
        ])),
    );
    let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
    assert_single_error(
        &errors,
        &file,
        "connectors[0].configuration",
        "not valid JSON at line 3",
    );
    assert!(errors[0].reason.contains("mqtt.json"), "{}", errors[0]);
}

#[test]
fn a_connector_file_that_is_not_an_object_is_rejected_in_that_file() {
    for content in ["[1, 2, 3]", "\"mqtt\"", "null"] {
        let dir = TempDir::new().expect("tempdir");
        let cfile = write(dir.path(), "mqtt.json", content);
        let file = write(
            dir.path(),
            "tb_gateway.json",
            main_with_connectors(json!([
                {"type": "mqtt", "name": "MQTT", "configuration": "mqtt.json"}
            ])),
        );
        let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
        assert_single_error(&errors, &cfile, "", "must be a JSON object");
    }
}

#[test]
fn duplicate_connector_names_are_rejected_at_the_second_entry() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "a.json", mqtt_connector_file());
    write(dir.path(), "b.json", mqtt_connector_file());
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "mqtt", "name": "Broker", "configuration": "a.json"},
            {"type": "mqtt", "name": "Other", "configuration": "a.json"},
            {"type": "mqtt", "name": "Broker", "configuration": "b.json"}
        ])),
    );
    let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
    assert_single_error(&errors, &file, "connectors[2].name", "duplicate");
    assert!(errors[0].reason.contains("Broker"), "{}", errors[0]);
}

#[test]
fn a_main_file_that_is_missing_or_not_an_object_is_one_error_for_the_file() {
    let dir = TempDir::new().expect("tempdir");
    let missing = dir.path().join("nope.json");
    let errors = load_with_env(&missing, &no_env()).expect_err("must fail").0;
    assert_single_error(&errors, &missing, "", "cannot read file");

    let file = write(dir.path(), "array.json", "[]");
    let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
    assert_single_error(&errors, &file, "", "must be a JSON object");

    let file = write(dir.path(), "broken.json", "{\"thingsboard\": ");
    let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
    assert_single_error(&errors, &file, "", "not valid JSON");

    let file = write(dir.path(), "broken.yaml", "thingsboard: [unclosed");
    let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
    assert_single_error(&errors, &file, "", "not valid YAML");
}

#[test]
fn several_errors_are_all_reported_at_once() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "ok.json", mqtt_connector_file());
    write(dir.path(), "list.json", "[]");
    let file = write(
        dir.path(),
        "tb_gateway.json",
        json!({
            "thingsboard": {
                "host": "tb.example",
                "qos": 2,
                "security": {"type": "accessToken"}
            },
            "storage": {"type": "cloud"},
            "connectors": [
                {"type": "mqtt", "name": "A", "configuration": "ok.json"},
                {"type": "mqtt", "name": "B", "configuration": "absent.json"},
                {"type": "mqtt", "name": "A", "configuration": "ok.json"},
                {"type": "mqtt", "name": "C", "configuration": "list.json"}
            ]
        }),
    );
    let errors = load_with_env(&file, &no_env()).expect_err("must fail").0;
    let got: Vec<(PathBuf, &str)> = errors
        .iter()
        .map(|e| (e.file.clone(), e.key.as_str()))
        .collect();
    let expected = vec![
        (file.clone(), "thingsboard.qos"),
        (file.clone(), "storage.type"),
        (file.clone(), "thingsboard.security.accessToken"),
        (file.clone(), "connectors[1].configuration"),
        (file.clone(), "connectors[2].name"),
        (dir.path().join("list.json"), ""),
    ];
    assert_eq!(got, expected, "{errors:#?}");

    // The printed form has one `file: key.path: reason` line per problem.
    let shown = ConfigErrors(errors).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 6, "{shown}");
    assert!(lines[0].starts_with(&format!("{}: thingsboard.qos: ", file.display())));
    assert!(lines[4].starts_with(&format!("{}: connectors[2].name: ", file.display())));
}

// ---------------------------------------------------------------------------------------------
// TB_GW_* environment overrides
// ---------------------------------------------------------------------------------------------

#[test]
fn tb_gw_host_and_port_override_the_file_and_the_port_is_a_number() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([])),
    );
    let loaded = load_with_env(
        &file,
        &env(&[("TB_GW_HOST", "tb.from.env"), ("TB_GW_PORT", "1999")]),
    )
    .unwrap_or_else(|e| panic!("must load, got:\n{e}"));
    assert_eq!(loaded.gateway.thingsboard.host, "tb.from.env");
    assert_eq!(loaded.gateway.thingsboard.port, 1999);
    assert_eq!(loaded.credentials.username.as_deref(), Some("TOKEN"));
}

#[test]
fn tb_gw_port_that_is_not_a_number_names_thingsboard_port() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([])),
    );
    let errors = load_with_env(&file, &env(&[("TB_GW_PORT", "abc")]))
        .expect_err("must fail")
        .0;
    assert_single_error(&errors, &file, "thingsboard.port", "invalid type");
}

#[test]
fn tb_gw_overrides_apply_to_a_file_without_a_thingsboard_section() {
    let dir = TempDir::new().expect("tempdir");
    let file = write(dir.path(), "tb_gateway.json", json!({"connectors": []}));
    let loaded = load_with_env(
        &file,
        &env(&[
            ("TB_GW_HOST", "h"),
            ("TB_GW_PORT", "1884"),
            ("TB_GW_ACCESS_TOKEN", "ENV_TOKEN"),
        ]),
    )
    .unwrap_or_else(|e| panic!("must load, got:\n{e}"));
    assert_eq!(loaded.gateway.thingsboard.host, "h");
    assert_eq!(loaded.gateway.thingsboard.port, 1884);
    assert_eq!(loaded.credentials.username.as_deref(), Some("ENV_TOKEN"));
}

#[test]
fn tb_gw_access_token_replaces_the_security_section_of_the_file() {
    let dir = TempDir::new().expect("tempdir");
    let mut main = main_with_connectors(json!([]));
    // Certificate files that do not exist: with the section replaced they are never looked at.
    main["thingsboard"]["security"] = json!({
        "type": "x509Certificate",
        "caCert": "ca.pem",
        "cert": "cert.pem",
        "privateKey": "key.pem"
    });
    let file = write(dir.path(), "tb_gateway.json", main);
    let loaded = load_with_env(&file, &env(&[("TB_GW_ACCESS_TOKEN", "ENV_TOKEN")]))
        .unwrap_or_else(|e| panic!("must load, got:\n{e}"));
    assert_eq!(
        loaded.credentials,
        Credentials {
            client_id: String::new(),
            username: Some("ENV_TOKEN".into()),
            password: None,
            tls: None,
        }
    );
    let sec = &loaded.gateway.thingsboard.security;
    assert_eq!(sec.kind.as_deref(), Some("accessToken"));
    assert_eq!(sec.access_token.as_deref(), Some("ENV_TOKEN"));
    assert_eq!(sec.cert, None);
    assert_eq!(sec.private_key, None);
    assert_eq!(sec.ca_cert, None);
}

#[test]
fn tb_gw_security_type_merges_into_the_section_instead_of_replacing_it() {
    let dir = TempDir::new().expect("tempdir");
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["security"] = json!({"type": "accessToken", "clientId": "from-file"});
    let file = write(dir.path(), "tb_gateway.json", main);
    let loaded = load_with_env(
        &file,
        &env(&[
            ("TB_GW_SECURITY_TYPE", "usernamePassword"),
            ("TB_GW_USERNAME", "user"),
            ("TB_GW_PASSWORD", "pass"),
        ]),
    )
    .unwrap_or_else(|e| panic!("must load, got:\n{e}"));
    assert_eq!(
        loaded.credentials,
        Credentials {
            client_id: "from-file".into(),
            username: Some("user".into()),
            password: Some("pass".into()),
            tls: None,
        }
    );
}

#[test]
fn tb_gw_rate_limits_sets_every_message_and_telemetry_limit() {
    let mut raw = json!({"thingsboard": {"host": "h", "rateLimits": "1:1", "dpRateLimits": "9:9"}});
    apply_env_overrides(&mut raw, &env(&[("TB_GW_RATE_LIMITS", "10:1,300:60")]));
    let tb = &raw["thingsboard"];
    for key in [
        "rateLimits",
        "messagesRateLimits",
        "deviceRateLimits",
        "deviceMessagesRateLimits",
    ] {
        assert_eq!(tb[key], json!("10:1,300:60"), "{key}");
    }
    // Datapoint limits have their own variables.
    assert_eq!(tb["dpRateLimits"], json!("9:9"));
    assert_eq!(tb["host"], json!("h"));

    // A specific variable wins over TB_GW_RATE_LIMITS.
    let mut raw = json!({});
    apply_env_overrides(
        &mut raw,
        &env(&[
            ("TB_GW_RATE_LIMITS", "10:1"),
            ("TB_GW_DEVICE_RATE_LIMITS", "5:1"),
            ("TB_GW_DP_RATE_LIMITS", "100:1"),
        ]),
    );
    assert_eq!(raw["thingsboard"]["rateLimits"], json!("10:1"));
    assert_eq!(raw["thingsboard"]["deviceRateLimits"], json!("5:1"));
    assert_eq!(raw["thingsboard"]["dpRateLimits"], json!("100:1"));

    // Through the loader the limits land in the typed section.
    let dir = TempDir::new().expect("tempdir");
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([])),
    );
    let loaded = load_with_env(&file, &env(&[("TB_GW_RATE_LIMITS", "10:1,300:60")]))
        .unwrap_or_else(|e| panic!("must load, got:\n{e}"));
    let tb = &loaded.gateway.thingsboard;
    for v in [
        &tb.rate_limits,
        &tb.messages_rate_limits,
        &tb.device_rate_limits,
        &tb.device_messages_rate_limits,
    ] {
        assert_eq!(v.as_deref(), Some("10:1,300:60"));
    }
    assert!(loaded.ignored.iter().all(|k| !k.key.contains("RateLimits")));
}

#[test]
fn variables_without_the_tb_gw_prefix_or_unknown_ones_change_nothing() {
    let mut raw = main_with_connectors(json!([]));
    let before = raw.clone();
    apply_env_overrides(
        &mut raw,
        &env(&[("HOST", "x"), ("TB_GW_UNKNOWN", "y"), ("PORT", "1")]),
    );
    assert_eq!(raw, before);
}

// ---------------------------------------------------------------------------------------------
// Connector files
// ---------------------------------------------------------------------------------------------

#[test]
fn connector_files_are_found_relative_to_the_main_file() {
    let dir = TempDir::new().expect("tempdir");
    let config_dir = dir.path().join("etc").join("gw");
    let cfile = write(&config_dir, "connectors/mqtt.json", mqtt_connector_file());
    // A file of the same name beside the working directory must not be picked up instead.
    let file = write(
        &config_dir,
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "mqtt", "name": "MQTT Broker Connector", "configuration": "connectors/mqtt.json"}
        ])),
    );
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.dir, config_dir);
    assert_eq!(loaded.connectors.len(), 1);
    let spec = &loaded.connectors[0];
    assert_eq!(spec.file, cfile);
    assert_eq!(spec.name, "MQTT Broker Connector");
    assert_eq!(spec.connector_type, "mqtt");
    assert_eq!(spec.config, mqtt_connector_file());
}

#[test]
fn a_connector_file_named_by_absolute_path_is_read_from_there() {
    let elsewhere = TempDir::new().expect("tempdir");
    let cfile = write(elsewhere.path(), "mqtt.json", mqtt_connector_file());
    let (_dir, loaded) = load_ok(main_with_connectors(json!([
        {"type": "mqtt", "name": "M", "configuration": cfile.to_str().expect("utf-8 path")}
    ])));
    assert_eq!(loaded.connectors[0].file, cfile);
}

#[test]
fn connectors_keep_the_order_of_the_main_file() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "a.json", mqtt_connector_file());
    write(dir.path(), "b.json", json!({"other": true}));
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "modbus", "name": "Z", "configuration": "b.json"},
            {"type": "mqtt", "name": "A", "configuration": "a.json"}
        ])),
    );
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<(&str, &str)> = loaded
        .connectors
        .iter()
        .map(|c| (c.name.as_str(), c.connector_type.as_str()))
        .collect();
    assert_eq!(names, vec![("Z", "modbus"), ("A", "mqtt")]);
}

#[test]
fn common_connector_keys_are_stripped_and_log_level_is_reported_ignored() {
    let dir = TempDir::new().expect("tempdir");
    let mut content = mqtt_connector_file();
    content["name"] = json!("MQTT Broker Connector");
    content["id"] = json!("0b8e7f4c-1111-2222-3333-444455556666");
    content["logLevel"] = json!("INFO");
    content["configVersion"] = json!("3.7.0");
    content["enableRemoteLogging"] = json!(false);
    let cfile = write(dir.path(), "mqtt.json", content);
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "mqtt", "name": "MQTT Broker Connector", "configuration": "mqtt.json"}
        ])),
    );
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    let config = &loaded.connectors[0].config;
    assert_eq!(
        config,
        &mqtt_connector_file(),
        "only the connector's own keys remain"
    );
    assert_ignored(&loaded, &cfile, "logLevel");
    // Read by the gateway for remote logging, not reported.
    assert_not_ignored(&loaded, "enableRemoteLogging");
    // `name`, `id` and `configVersion` are handled by the gateway: stripped silently.
    for key in ["name", "id", "configVersion"] {
        assert!(
            !loaded
                .ignored
                .iter()
                .any(|i| i.file == cfile && i.key == key),
            "`{key}` must not be reported ignored: {:#?}",
            ignored_keys(&loaded)
        );
    }
}

#[test]
fn a_custom_connector_class_is_reported_ignored() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "custom.json", json!({}));
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "custom", "name": "C", "configuration": "custom.json", "class": "MyConnector"}
        ])),
    );
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_ignored(&loaded, &file, "connectors[0].class");
    assert_eq!(loaded.connectors[0].config, json!({}));
}

#[test]
fn unknown_keys_of_a_connector_entry_are_reported_with_their_index() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "g.json", json!({}));
    let file = write(
        dir.path(),
        "tb_gateway.json",
        main_with_connectors(json!([
            {"type": "grpc", "name": "G", "configuration": "g.json", "key": "auto"}
        ])),
    );
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_ignored(&loaded, &file, "connectors[0].key");
}

// ---------------------------------------------------------------------------------------------
// Certificate paths
// ---------------------------------------------------------------------------------------------

#[test]
fn certificate_paths_resolve_relative_to_the_config_dir() {
    let dir = TempDir::new().expect("tempdir");
    let ca = write(dir.path(), "certs/ca.pem", "CA");
    let cert = write(dir.path(), "certs/cert.pem", "CERT");
    let key = write(dir.path(), "certs/key.pem", "KEY");
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["port"] = json!(8883);
    main["thingsboard"]["security"] = json!({
        "type": "x509Certificate",
        "caCert": "certs/ca.pem",
        "cert": "certs/cert.pem",
        "privateKey": "certs/key.pem"
    });
    let file = write(dir.path(), "tb_gateway.json", main);
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.credentials.tls,
        Some(TlsFiles {
            ca_cert: ca,
            client: Some((cert, key)),
        })
    );
}

#[test]
fn tls_access_token_resolves_the_ca_relative_to_the_config_dir_and_keeps_absolute_paths() {
    let dir = TempDir::new().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", "CA");
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["security"] =
        json!({"type": "tlsAccessToken", "accessToken": "T", "caCert": "ca.pem"});
    let file = write(dir.path(), "tb_gateway.json", main);
    let loaded = load_with_env(&file, &no_env()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.credentials.username.as_deref(), Some("T"));
    assert_eq!(
        loaded.credentials.tls,
        Some(TlsFiles {
            ca_cert: ca.clone(),
            client: None,
        })
    );

    let other = TempDir::new().expect("tempdir");
    let abs_ca = write(other.path(), "root.pem", "CA");
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["port"] = json!(8883);
    main["thingsboard"]["security"] = json!({
        "type": "accessToken",
        "accessToken": "T",
        "caCert": abs_ca.to_str().expect("utf-8 path")
    });
    let (_dir, loaded) = load_ok(main);
    assert_eq!(
        loaded.credentials.tls.map(|t| t.ca_cert),
        Some(abs_ca),
        "an absolute path is kept as is"
    );
}

#[test]
fn port_8883_with_an_access_token_needs_a_ca_certificate() {
    let mut main = main_with_connectors(json!([]));
    main["thingsboard"]["port"] = json!(8883);
    let (_dir, file, errors) = load_err(main);
    assert_single_error(&errors, &file, "thingsboard.security.caCert", "missing");
}

#[test]
fn relative_paths_are_relative_to_the_naming_file_never_to_the_working_directory() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "present.pem", "x");
    assert_eq!(
        resolve_path(dir.path(), "present.pem"),
        dir.path().join("present.pem")
    );
    assert_eq!(
        resolve_path(dir.path(), "certs/absent-9f1c.pem"),
        dir.path().join("certs/absent-9f1c.pem")
    );
    // Present relative to the working directory (tests run in the crate directory) but not in
    // the config dir: still the config dir (upstream would take the working directory's).
    assert_eq!(
        resolve_path(dir.path(), "Cargo.toml"),
        dir.path().join("Cargo.toml")
    );
    let abs = dir.path().join("present.pem");
    assert_eq!(
        resolve_path(Path::new("/elsewhere"), abs.to_str().unwrap()),
        abs
    );
    // The same rule from the naming file.
    let file = dir.path().join("mqtt").join("broker.json");
    assert_eq!(
        resolve_beside(&file, "ca.pem"),
        dir.path().join("mqtt").join("ca.pem")
    );
    assert_eq!(
        resolve_beside(Path::new("broker.json"), "ca.pem"),
        PathBuf::from("ca.pem")
    );
    assert_eq!(resolve_beside(&file, abs.to_str().unwrap()), abs);
}

#[test]
fn a_tilde_is_the_home_directory() {
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return;
    };
    let home = PathBuf::from(home);
    assert_eq!(
        resolve_path(Path::new("/etc/tbgw"), "~/ssl/ca.pem"),
        home.join("ssl/ca.pem")
    );
    assert_eq!(resolve_path(Path::new("/etc/tbgw"), "~"), home);
    assert_eq!(
        resolve_beside(Path::new("/etc/tbgw/rest.json"), "~/ssl/cert.pem"),
        home.join("ssl/cert.pem")
    );
    // `~user` is not expanded: a relative path like any other.
    assert_eq!(
        resolve_path(Path::new("/etc/tbgw"), "~other/ca.pem"),
        PathBuf::from("/etc/tbgw/~other/ca.pem")
    );
}

// ---------------------------------------------------------------------------------------------
// parse::from_value key paths
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Outer {
    list: Vec<Inner>,
    opt: Option<Inner>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Inner {
    n: u8,
}

#[test]
fn ignored_keys_use_the_same_path_syntax_as_errors() {
    let mut ignored = Vec::new();
    let v = json!({
        "list": [{"n": 1}, {"n": 2, "extra": true}],
        "opt": {"n": 3, "more": 1},
        "top": 0
    });
    let _: Outer = parse::from_value(Path::new("f.json"), "pre", &v, &mut ignored)
        .unwrap_or_else(|e| panic!("{e}"));
    ignored.sort();
    assert_eq!(
        ignored,
        vec![
            "pre.list[1].extra".to_string(),
            "pre.opt.more".to_string(),
            "pre.top".to_string()
        ]
    );

    let bad = json!({"list": [{"n": 1}, {"n": "x"}], "opt": null});
    let err = parse::from_value::<Outer>(Path::new("f.json"), "pre", &bad, &mut Vec::new())
        .expect_err("wrong type");
    assert_eq!(err.key, "pre.list[1].n");
    assert_eq!(err.file, Path::new("f.json"));

    let mut ignored = Vec::new();
    let _: Vec<Inner> = parse::from_value(
        Path::new("f.json"),
        "",
        &json!([{"n": 1, "x": 2}]),
        &mut ignored,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ignored, vec!["[0].x".to_string()]);
}

#[test]
fn join_puts_no_dot_before_an_index() {
    assert_eq!(parse::join("", "a"), "a");
    assert_eq!(parse::join("a", ""), "a");
    assert_eq!(parse::join("a", "b.c"), "a.b.c");
    assert_eq!(
        parse::join("mapping", "[0].converter"),
        "mapping[0].converter"
    );
}

#[test]
fn tb_gw_provisioning_variables_build_the_provisioning_section() {
    let base = [
        ("TB_GW_PROVISIONING_DEVICE_KEY", "k"),
        ("TB_GW_PROVISIONING_DEVICE_SECRET", "s"),
        ("TB_GW_PROVISIONING_DEVICE_NAME", "gw-1"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut raw =
            json!({"thingsboard": {"host": "h", "provisioning": {"provisionDeviceKey": "file"}}});
        let vars: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        apply_env_overrides(&mut raw, &env(&vars));
        raw["thingsboard"]["provisioning"].clone()
    };
    let p = with(&[]);
    assert_eq!(p["provisionDeviceKey"], json!("k"));
    assert_eq!(p["deviceName"], json!("gw-1"));
    assert_eq!(p.get("type"), None, "the default type");
    let p = with(&[("TB_GW_PROVISIONING_DEVICE_ACCESS_TOKEN", "t")]);
    assert_eq!(
        (&p["type"], &p["accessToken"]),
        (&json!("ACCESS_TOKEN"), &json!("t"))
    );
    let p = with(&[("TB_GW_PROVISIONING_DEVICE_CLIENT_ID", "c")]);
    assert_eq!(
        (&p["type"], &p["clientId"]),
        (&json!("MQTT_BASIC"), &json!("c"))
    );
    let p = with(&[("TB_GW_PROVISIONING_DEVICE_CA_CERT_FILENAME", "ca.pem")]);
    assert_eq!(
        (&p["type"], &p["caCert"]),
        (&json!("X509_CERTIFICATE"), &json!("ca.pem"))
    );

    // Without the secret the file's section stays.
    let mut raw = json!({"thingsboard": {"provisioning": {"provisionDeviceKey": "file"}}});
    apply_env_overrides(&mut raw, &env(&[("TB_GW_PROVISIONING_DEVICE_KEY", "k")]));
    assert_eq!(
        raw["thingsboard"]["provisioning"]["provisionDeviceKey"],
        json!("file")
    );
}

#[test]
fn upstream_snake_case_provisioning_keys_are_read() {
    let p: crate::config::ProvisioningConfig = serde_json::from_value(
        json!({"provisionDeviceKey": "k", "provisionDeviceSecret": "s", "type": "MQTT_BASIC",
               "client_id": "c", "username": "u", "password": "p"}),
    )
    .expect("parses");
    assert_eq!(p.client_id.as_deref(), Some("c"));
    let p: crate::config::ProvisioningConfig =
        serde_json::from_value(json!({"access_token": "t"})).expect("parses");
    assert_eq!(p.access_token.as_deref(), Some("t"));
}
