//! Launcher for a throw-away `mosquitto` broker on a free loopback port.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::daemon::{Daemon, Proto, Ready, Spec, Stop};

/// Where the Debian package installs the broker; `$MOSQUITTO` overrides it.
const DEFAULT_MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";

/// How the broker is launched: ready when it accepts TCP connections; only a launch that
/// found its port taken is tried again (on another port at start, later at restart).
const SPEC: Spec = Spec {
    name: "mosquitto",
    dir_prefix: "tbgw-mosquitto-",
    install_hint: "install it with `apt-get install -y mosquitto` or set $MOSQUITTO",
    proto: Proto::Tcp,
    ready: Ready::PortOpen,
    ready_timeout: Duration::from_secs(10),
    poll: Duration::from_millis(20),
    restart_pause: Duration::from_millis(100),
    retry_only_if_log: Some("Address already in use"),
    stop: Stop::Kill,
};

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
    daemon: Daemon,
    extra_config: String,
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
        let mut daemon = Daemon::new(SPEC)?;
        daemon.start(command(extra_config)).await?;
        Ok(Mosquitto {
            daemon,
            extra_config: extra_config.to_owned(),
        })
    }

    /// The TCP port the broker listens on (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// The host the broker listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The broker's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    /// The temporary directory holding the config file and logs; callers may
    /// put other files (e.g. certificates) here.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// Whether the broker process is (believed to be) running.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// The broker's stderr output of the current (or last) launch.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Kills the broker (SIGKILL, like a crash: clients see the TCP
    /// connection drop) and waits for it to exit. Does nothing if it is not
    /// running.
    pub async fn stop(&mut self) -> io::Result<()> {
        self.daemon.stop().await
    }

    /// Stops the broker if it runs and starts it again on the SAME port with
    /// the same configuration. Retries for a while if the port is still busy.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.daemon.restart(command(&self.extra_config)).await
    }
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("mosquitto.conf")
}

/// Writes the config of a launch (listener on the daemon's port, then `extra_config`) and
/// gives the broker's command.
fn command(extra_config: &str) -> impl FnMut(&Daemon) -> io::Result<Command> + '_ {
    move |d| {
        std::fs::write(config_path(d.dir()), config_text(d.port(), extra_config))?;
        let mut cmd = Command::new(
            std::env::var_os("MOSQUITTO").unwrap_or_else(|| DEFAULT_MOSQUITTO_BIN.into()),
        );
        cmd.arg("-c").arg(config_path(d.dir()));
        Ok(cmd)
    }
}

fn config_text(port: u16, extra_config: &str) -> String {
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
    let _ = writeln!(text, "listener {port} 127.0.0.1");
    if !extra_config.is_empty() {
        let _ = writeln!(text, "{extra_config}");
    }
    text
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
