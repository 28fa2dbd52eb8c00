//! Custom statistics (`statistics.enableCustom` with `statistics.configuration`): commands
//! whose output is sent as telemetry of the gateway device every
//! `customStatsSendPeriodInSeconds`.
//!
//! The file is upstream's list: `[{"attributeOnGateway": "CPU", "command": ["/bin/sh", "-c",
//! "…"] | "…", "timeout": 100, "installCmd": "…"}]`. `command` as a list runs that program
//! with those arguments; as a string it runs through `/bin/sh -c`. `timeout` is in seconds (a
//! command still running then is killed and its value skipped). The output is trimmed and
//! sent as a number when it parses as one. `installCmd` is never run: tbgw does not install
//! software at run time (upstream runs it, as root if it is root).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Command {
    Argv(Vec<String>),
    Shell(String),
}

/// One custom statistic.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CustomStat {
    attribute_on_gateway: String,
    command: Command,
    #[serde(default = "default_timeout")]
    timeout: f64,
    #[serde(default)]
    #[allow(dead_code)]
    install_cmd: Option<Json>,
}

fn default_timeout() -> f64 {
    10.0
}

/// Reads the command list. Errors name the file, the entry and the reason.
pub(crate) fn load(file: &Path) -> Result<Vec<CustomStat>, ConfigError> {
    let v = crate::config::parse::read_file(file)?;
    let mut ignored = Vec::new();
    let list: Vec<CustomStat> = crate::config::parse::from_value(file, "", &v, &mut ignored)?;
    for (i, s) in list.iter().enumerate() {
        if let Command::Argv(a) = &s.command {
            if a.is_empty() {
                return Err(ConfigError::new(
                    file,
                    format!("[{i}].command"),
                    "must not be empty",
                ));
            }
        }
    }
    Ok(list)
}

/// Runs every command (concurrently) and returns the telemetry values.
pub(crate) async fn collect(stats: &[CustomStat]) -> Json {
    let runs = stats.iter().map(|s| async move {
        let mut cmd = match &s.command {
            Command::Argv(a) => {
                let mut c = tokio::process::Command::new(&a[0]);
                c.args(&a[1..]);
                c
            }
            Command::Shell(text) => {
                let mut c = tokio::process::Command::new("/bin/sh");
                c.arg("-c").arg(text);
                c
            }
        };
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let limit = Duration::try_from_secs_f64(s.timeout.clamp(0.1, 3600.0))
            .unwrap_or_else(|_| Duration::from_secs_f64(default_timeout()));
        let out = tokio::time::timeout(limit, cmd.output()).await;
        let value = match out {
            Ok(Ok(o)) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
                Some(match text.parse::<f64>() {
                    Ok(f) if f.fract() == 0.0 && f.abs() < 9e15 => Json::from(f as i64),
                    Ok(f) => serde_json::Number::from_f64(f).map_or(Json::String(text), Json::Number),
                    Err(_) => Json::String(text),
                })
            }
            Ok(Ok(o)) => {
                tracing::warn!(statistic = %s.attribute_on_gateway, status = %o.status, "Custom statistic command failed.");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(statistic = %s.attribute_on_gateway, error = %e, "Custom statistic command cannot run.");
                None
            }
            Err(_) => {
                tracing::warn!(statistic = %s.attribute_on_gateway, timeout_s = s.timeout, "Custom statistic command timed out.");
                None
            }
        };
        (s.attribute_on_gateway.clone(), value)
    });
    let mut m = Map::new();
    for (k, v) in futures_util::future::join_all(runs).await {
        if let Some(v) = v {
            m.insert(k, v);
        }
    }
    Json::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_become_typed_values_and_failures_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("stats.json");
        std::fs::write(
            &f,
            r#"[
              {"attributeOnGateway": "n", "command": ["/bin/sh", "-c", "echo 42"], "timeout": 5},
              {"attributeOnGateway": "x", "command": "echo 1.5", "timeout": 5},
              {"attributeOnGateway": "s", "command": "echo hello", "installCmd": "apt install x"},
              {"attributeOnGateway": "bad", "command": "exit 3"},
              {"attributeOnGateway": "slow", "command": "sleep 5", "timeout": 0.2}
            ]"#,
        )
        .expect("write");
        let list = load(&f).expect("loads");
        let v = collect(&list).await;
        assert_eq!(v, serde_json::json!({"n": 42, "x": 1.5, "s": "hello"}));
    }

    #[test]
    fn a_bad_entry_names_its_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("stats.json");
        std::fs::write(&f, r#"[{"attributeOnGateway": "a", "command": []}]"#).expect("write");
        let e = load(&f).expect_err("empty command");
        assert!(e.to_string().contains("[0].command"), "{e}");
    }

    #[test]
    fn upstream_linux_sample_loads() {
        let Some(p) = crate::test_util::upstream_sample("statistics/statistics_linux.json") else {
            return;
        };
        assert!(load(&p).expect("upstream sample").len() >= 5);
    }
}
