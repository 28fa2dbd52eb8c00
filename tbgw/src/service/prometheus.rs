//! The counters in Prometheus text format, for people who monitor the edge box itself
//! (`thingsboard.statistics.prometheusAddress`, a tbgw extension).
//!
//! A deliberately small HTTP/1.1 responder on tokio instead of hyper: it serves one resource
//! (`GET /metrics`), answers each connection once and closes it, reads at most 8 KiB of request
//! within 5 s, and keeps the core library free of an HTTP stack (hyper is used where HTTP is
//! the product: the REST and Request connectors).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::stats::{ConnectorStats, GatewayStats};
use crate::storage::EventStorage;

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct Sources {
    pub gateway: Arc<GatewayStats>,
    pub connectors: Vec<(String, Arc<ConnectorStats>)>,
    pub storage: Arc<dyn EventStorage>,
}

/// Renders every counter.
pub(crate) fn render(s: &Sources) -> String {
    let mut out = String::with_capacity(4096);
    for (name, v) in s.gateway.values() {
        let help = help_text(GatewayStats::help(name));
        if name == "thingsboard_connected" {
            let _ = writeln!(
                out,
                "# HELP tbgw_{name} {help}\n# TYPE tbgw_{name} gauge\ntbgw_{name} {v}"
            );
        } else {
            let _ = writeln!(
                out,
                "# HELP tbgw_{name}_total {help}\n# TYPE tbgw_{name}_total counter\ntbgw_{name}_total {v}"
            );
        }
    }
    let st = s.storage.stats();
    let _ = writeln!(
        out,
        "# HELP tbgw_storage_records Records held in storage, not yet confirmed by ThingsBoard.\n# TYPE tbgw_storage_records gauge\ntbgw_storage_records {}",
        st.len
    );
    let mut per: std::collections::BTreeMap<&str, Vec<(&str, u64)>> = Default::default();
    for (cname, cs) in &s.connectors {
        for (field, v) in cs.values() {
            per.entry(field).or_default().push((cname, v));
        }
    }
    for (field, rows) in per {
        let help = help_text(ConnectorStats::help(field));
        let _ = writeln!(
            out,
            "# HELP tbgw_connector_{field}_total {help}\n# TYPE tbgw_connector_{field}_total counter"
        );
        for (cname, v) in rows {
            let _ = writeln!(
                out,
                "tbgw_connector_{field}_total{{connector=\"{}\"}} {v}",
                escape(cname)
            );
        }
    }
    if let Some(rss) = super::machine::process_memory("VmRSS") {
        let _ = writeln!(
            out,
            "# HELP tbgw_process_resident_memory_bytes Resident memory of the gateway process.\n# TYPE tbgw_process_resident_memory_bytes gauge\ntbgw_process_resident_memory_bytes {rss}"
        );
    }
    if let Some(cpu) = super::machine::process_cpu_seconds() {
        let _ = writeln!(
            out,
            "# HELP tbgw_process_cpu_seconds_total CPU time of the gateway process (user and system).\n# TYPE tbgw_process_cpu_seconds_total counter\ntbgw_process_cpu_seconds_total {cpu}"
        );
    }
    out
}

/// A `# HELP` text: backslashes and line breaks escaped as the text format wants.
fn help_text(doc: Option<String>) -> String {
    doc.unwrap_or_default()
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Binds `addr` and serves until `cancel` fires. Returns the bound address (port 0 picks one).
pub(crate) async fn serve(
    addr: &str,
    sources: Sources,
    cancel: CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "Prometheus endpoint: accept failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                let read = tokio::time::timeout(Duration::from_secs(5), async {
                    while n < buf.len() {
                        let k = sock.read(&mut buf[n..]).await?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
                if !matches!(read, Ok(Ok(()))) {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let mut parts = head.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, ctype, body) = if method != "GET" {
                    (
                        "405 Method Not Allowed",
                        "text/plain",
                        "GET only\n".to_string(),
                    )
                } else if path == "/metrics" || path.starts_with("/metrics?") {
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        render(&sources),
                    )
                } else {
                    ("404 Not Found", "text/plain", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FullPolicy;
    use crate::storage::MemoryStorage;

    #[test]
    fn every_metric_has_help_before_its_type() {
        let src = Sources {
            gateway: Arc::new(GatewayStats::default()),
            connectors: vec![("A \"quoted\"".into(), Arc::new(ConnectorStats::default()))],
            storage: Arc::new(MemoryStorage::new(10, 10, FullPolicy::default())),
        };
        let text = render(&src);
        let lines: Vec<&str> = text.lines().collect();
        let mut types = 0;
        for (i, l) in lines.iter().enumerate() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                types += 1;
                let name = rest.split(' ').next().unwrap();
                let help = i
                    .checked_sub(1)
                    .and_then(|j| lines[j].strip_prefix(&format!("# HELP {name} ")))
                    .unwrap_or_else(|| panic!("no HELP before {l}\n{text}"));
                assert!(help.len() > 10 && !help.contains('\n'), "{help}");
            }
        }
        assert!(types > 30, "{text}");
        assert!(
            text.contains(
                "# HELP tbgw_delivered_total Records delivered to ThingsBoard (PUBACK received)."
            ),
            "{text}"
        );
    }

    /// Every metric docs/grafana-dashboard.json queries exists.
    #[test]
    fn the_grafana_dashboard_queries_metrics_that_exist() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-dashboard.json");
        let Ok(dashboard) = std::fs::read_to_string(&path) else {
            return; // not in a packaged crate
        };
        let src = Sources {
            gateway: Arc::new(GatewayStats::default()),
            connectors: vec![("c".into(), Arc::new(ConnectorStats::default()))],
            storage: Arc::new(MemoryStorage::new(10, 10, FullPolicy::default())),
        };
        let text = render(&src);
        let mut names = 0;
        for (i, _) in dashboard.match_indices("tbgw_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with("tbgw_process_") && !text.contains("tbgw_process_") {
                continue; // no /proc here
            }
            names += 1;
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not served"
            );
        }
        assert!(names > 10);
    }
}
