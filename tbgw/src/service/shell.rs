//! Remote shell RPCs (`thingsboard.remoteShell`, off by default).
//!
//! **Dangerous:** whoever can send RPCs to the gateway device in ThingsBoard (any tenant
//! administrator, or anyone holding a leaked API token) can run any command as the gateway's
//! user. tbgw answers these methods with "Method not found" unless `remoteShell` is `true`.
//!
//! Methods as upstream: `getTermInfo`, `sendCommand {command, cwd}` (one command at a time; a
//! new one terminates the running one; `cd` and `exit` are handled here), `getCommandStatus`
//! (output since the last call, `done`), `terminateCommand`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value as Json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;

type Output = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Debug, Default)]
pub(crate) struct Shell {
    cwd: Option<PathBuf>,
    child: Option<Child>,
    output: Output,
    done: Arc<AtomicBool>,
}

fn pump(mut r: impl AsyncRead + Unpin + Send + 'static, out: Output, stderr: bool) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if let Ok(mut o) = out.lock() {
                        o.push(if stderr {
                            (String::new(), text)
                        } else {
                            (text, String::new())
                        });
                    }
                }
            }
        }
    });
}

impl Shell {
    fn cwd(&self) -> PathBuf {
        self.cwd
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    fn is_done(&mut self) -> bool {
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub(crate) async fn rpc(&mut self, method: &str, params: &Json) -> Json {
        match method {
            "getTermInfo" => json!({
                "platform": std::env::consts::OS,
                "release": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
                "cwd": self.cwd().display().to_string(),
            }),
            "sendCommand" => {
                let Some(command) = params.get("command").and_then(Json::as_str) else {
                    return json!({"error": "params.command is missing", "code": 400});
                };
                if let Some(cwd) = params.get("cwd").and_then(Json::as_str) {
                    self.cwd = Some(PathBuf::from(cwd));
                }
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill().await;
                }
                self.output = Output::default();
                let cmd = command.trim();
                if let Some(dir) = cmd.strip_prefix("cd ").map(str::trim) {
                    let target = self.cwd().join(dir);
                    return match std::fs::canonicalize(&target) {
                        Ok(p) if p.is_dir() => {
                            self.cwd = Some(p);
                            json!({"ok": true})
                        }
                        _ => json!({"ok": false, "error": format!("no such directory: {dir}")}),
                    };
                }
                if cmd == "exit" || cmd == "quit" {
                    return json!({"ok": true});
                }
                tracing::warn!(command = cmd, "Remote shell command from ThingsBoard.");
                let spawned = tokio::process::Command::new("/bin/sh")
                    .arg("-c")
                    .arg(cmd)
                    .current_dir(self.cwd())
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn();
                match spawned {
                    Ok(mut child) => {
                        if let Some(o) = child.stdout.take() {
                            pump(o, self.output.clone(), false);
                        }
                        if let Some(e) = child.stderr.take() {
                            pump(e, self.output.clone(), true);
                        }
                        self.child = Some(child);
                        self.done.store(false, Ordering::SeqCst);
                        json!({"ok": true})
                    }
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                }
            }
            "getCommandStatus" => {
                let done = self.is_done();
                // Give the pipes a moment to deliver the tail once the command ended.
                if done {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                let data: Vec<Json> = self
                    .output
                    .lock()
                    .map(|mut o| {
                        o.drain(..)
                            .map(|(out, err)| json!({"stdout": out, "stderr": err}))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"data": data, "cwd": self.cwd().display().to_string(), "done": done})
            }
            "terminateCommand" => match self.child.take() {
                Some(mut c) => match c.kill().await {
                    Ok(()) => json!({"ok": true}),
                    Err(e) => json!({"error": e.to_string()}),
                },
                None => json!({"error": "no command is running"}),
            },
            _ => json!({"error": "Method not found", "code": 404}),
        }
    }
}
