//! Third-party Python test peers (pymodbus, asyncua, ...) from the virtualenv that
//! `.ci/install` creates.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The peers' Python: `$TBGW_PEERS_VENV/bin/python`, default `~/.cache/tbgw-peers/bin/python`.
///
/// # Panics
/// When the virtualenv is missing, with a message saying how to create it (tests only).
pub fn peers_python() -> PathBuf {
    let venv = std::env::var_os("TBGW_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".cache/tbgw-peers")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "the Python test peers are not installed at {}; run `bash .ci/install` first",
        venv.display()
    );
    py
}

/// A Python peer process, killed on drop; its output goes to a log file.
#[derive(Debug)]
pub struct PythonPeer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PythonPeer {
    /// Runs `python <args>` from the peers' virtualenv.
    pub fn spawn<I, S>(args: I) -> std::io::Result<PythonPeer>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("peer.log");
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(peers_python())
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()?;
        Ok(PythonPeer {
            child,
            log,
            _dir: dir,
        })
    }

    /// What the peer printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until a TCP connect to `127.0.0.1:port` succeeds (or the peer exits, or `timeout`).
    pub async fn wait_tcp(&mut self, port: u16, timeout: Duration) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "peer exited with {status}:\n{}",
                    self.log()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "peer not listening on {port} after {timeout:?}:\n{}",
                        self.log()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the peer's output contains `text`.
    pub async fn wait_output(&mut self, text: &str, timeout: Duration) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.log().contains(text) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(std::io::Error::other(format!(
                    "peer exited with {status}:\n{}",
                    self.log()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "peer did not print {text:?} within {timeout:?}:\n{}",
                        self.log()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the peer and waits for it.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("loopback has a free port")
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("loopback has a free port")
}
