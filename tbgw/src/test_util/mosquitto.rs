//! Launcher for a throw-away `mosquitto` broker on a free loopback port.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// Where the Debian package installs the broker; `$MOSQUITTO` overrides it.
const DEFAULT_MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// How long a freshly spawned broker may take to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(20);
/// How many fresh ports [`Mosquitto::start_with`] tries before giving up.
const PORT_ATTEMPTS: usize = 5;
/// How many times [`Mosquitto::restart`] retries binding the same port.
const RESTART_ATTEMPTS: usize = 20;

/// A `mosquitto` process listening on `127.0.0.1:<port>`, configured for
/// anonymous access and no persistence.
///
/// The process is killed when this value is dropped. The config file and the
/// broker's log (its stderr) live in a temporary directory that is removed on
/// drop; [`Mosquitto::log`] reads the log, which helps when a test fails.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tbgw::test_util::Mosquitto;
/// let mut broker = Mosquitto::start().await?;
/// let (host, port) = (broker.host(), broker.port());
/// // ... connect clients to host:port ...
/// broker.stop().await?;      // ThingsBoard "goes away"
/// broker.restart().await?;   // and comes back on the same port
/// # let _ = (host, port);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    extra_config: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Counts launches so that every launch gets its own log file.
    launches: u32,
}

impl Mosquitto {
    /// Starts a broker with the default configuration on a free port.
    pub async fn start() -> io::Result<Mosquitto> {
        Self::start_with("").await
    }

    /// Starts a broker whose config file gets `extra_config` appended after
    /// the `listener` line (so listener options such as `certfile` apply to
    /// that listener). Use it e.g. for TLS settings.
    ///
    /// If the chosen port is taken between probing and binding, another port
    /// is tried (up to a few times).
    pub async fn start_with(extra_config: &str) -> io::Result<Mosquitto> {
        let dir = tempfile::Builder::new()
            .prefix("tbgw-mosquitto-")
            .tempdir()?;
        let mut broker = Mosquitto {
            port: 0,
            extra_config: extra_config.to_owned(),
            dir,
            child: None,
            launches: 0,
        };
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port()?;
            match broker.launch().await {
                Ok(()) => return Ok(broker),
                Err(LaunchError::AddrInUse(e)) => last_err = Some(e),
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not start mosquitto")))
    }

    /// The TCP port the broker listens on (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host the broker listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The broker's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The temporary directory holding the config file and logs; callers may
    /// put other files (e.g. certificates) here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the broker process is (believed to be) running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The broker's stderr output of the current (or last) launch.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the broker (SIGKILL, like a crash: clients see the TCP
    /// connection drop) and waits for it to exit. Does nothing if it is not
    /// running.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Stops the broker if it runs and starts it again on the SAME port with
    /// the same configuration. Retries for a while if the port is still busy.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await?;
        let mut last_err = None;
        for _ in 0..RESTART_ATTEMPTS {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(LaunchError::AddrInUse(e)) => {
                    last_err = Some(e);
                    sleep(Duration::from_millis(100)).await;
                }
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("could not restart mosquitto")))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("mosquitto-{}.log", self.launches))
    }

    fn config_text(&self) -> String {
        let mut text = String::new();
        // `write!` into a String cannot fail.
        let _ = writeln!(text, "persistence false");
        let _ = writeln!(text, "allow_anonymous true");
        let _ = writeln!(text, "log_dest stderr");
        if running_as_root() {
            // Otherwise mosquitto drops privileges to user `mosquitto`, which
            // may not be able to read files in our 0700 temp directory.
            let _ = writeln!(text, "user root");
        }
        let _ = writeln!(text, "listener {} 127.0.0.1", self.port);
        if !self.extra_config.is_empty() {
            let _ = writeln!(text, "{}", self.extra_config);
        }
        text
    }

    /// Writes the config and spawns the broker on `self.port`, then waits
    /// until it accepts TCP connections.
    async fn launch(&mut self) -> Result<(), LaunchError> {
        self.launches += 1;
        std::fs::write(self.config_path(), self.config_text())?;
        let log = std::fs::File::create(self.log_path())?;
        let bin = std::env::var_os("MOSQUITTO").unwrap_or_else(|| DEFAULT_MOSQUITTO_BIN.into());
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); install it with `apt-get install -y mosquitto` \
                         or set $MOSQUITTO",
                        bin.to_string_lossy()
                    ),
                )
            })?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = self.log();
                let msg = format!(
                    "mosquitto exited with {status} before accepting connections on port {}; \
                     stderr:\n{log}",
                    self.port
                );
                return Err(if log.contains("Address already in use") {
                    LaunchError::AddrInUse(io::Error::new(io::ErrorKind::AddrInUse, msg))
                } else {
                    LaunchError::Other(io::Error::other(msg))
                });
            }
            if TcpStream::connect(self.addr()).await.is_ok() {
                // Guard against a foreign listener on the port: mosquitto must
                // still be alive after binding.
                if child.try_wait()?.is_none() {
                    self.child = Some(child);
                    return Ok(());
                }
                continue;
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(LaunchError::Other(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "mosquitto did not accept connections on port {} within {:?}; stderr:\n{}",
                        self.port,
                        READY_TIMEOUT,
                        self.log()
                    ),
                )));
            }
            sleep(READY_POLL).await;
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop would do this too; be explicit.
            let _ = child.start_kill();
        }
    }
}

enum LaunchError {
    /// The port was taken; another port (or a later retry) may work.
    AddrInUse(io::Error),
    Other(io::Error),
}

impl From<io::Error> for LaunchError {
    fn from(e: io::Error) -> Self {
        LaunchError::Other(e)
    }
}

/// Asks the OS for a currently free loopback port.
fn free_port() -> io::Result<u16> {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(unix)]
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn running_as_root() -> bool {
    false
}
