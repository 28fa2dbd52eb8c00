//! Launcher for a throw-away Debian `knxd` on a free loopback UDP port: a KNXnet/IP
//! tunnelling server in front of a dummy bus, so that tunnel clients (the connector under
//! test, an xknx script playing a bus member) see each other's group telegrams.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::daemon::{Daemon, Proto, Ready, Spec, Stop};

/// Where the Debian package installs knxd; `$KNXD` overrides it.
const DEFAULT_KNXD_BIN: &str = "/usr/bin/knxd";

/// How knxd is launched: ready when its UDP port is taken (it prints nothing when it is up).
const SPEC: Spec = Spec {
    name: "knxd",
    dir_prefix: "tbgw-knxd-",
    install_hint: "install it with `apt-get install -y knxd` or set $KNXD",
    proto: Proto::Udp,
    ready: Ready::PortOpen,
    ready_timeout: Duration::from_secs(15),
    poll: Duration::from_millis(20),
    restart_pause: Duration::from_millis(100),
    retry_only_if_log: None,
    stop: Stop::Kill,
};

/// A `knxd` process serving KNXnet/IP tunnels on `127.0.0.1:<port>` (UDP) with its config
/// and log in a temporary directory; the server is `0.0.1`, tunnel clients get `0.0.2` and
/// up (8 of them). Killed when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tbgw::test_util::Knxd;
/// let mut knxd = Knxd::start().await?;
/// let port = knxd.port();
/// knxd.restart().await?;        // killed and started again on the same port
/// # let _ = port;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Knxd {
    daemon: Daemon,
    discover: bool,
}

impl Knxd {
    /// Starts knxd on a free port.
    pub async fn start() -> io::Result<Knxd> {
        Self::start_with(false).await
    }

    /// Starts knxd on a free port answering KNXnet/IP search requests (`discover = true`;
    /// it answers one sent to its port directly).
    pub async fn start_discoverable() -> io::Result<Knxd> {
        Self::start_with(true).await
    }

    async fn start_with(discover: bool) -> io::Result<Knxd> {
        let mut daemon = Daemon::new(SPEC)?;
        daemon.start(command(discover)).await?;
        Ok(Knxd { daemon, discover })
    }

    /// The UDP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    /// The temporary directory of the config and logs.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// knxd's output of the current (or last) launch.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Kills knxd (SIGKILL) and waits for it.
    pub async fn stop(&mut self) -> io::Result<()> {
        self.daemon.stop().await
    }

    /// Stops knxd if it runs and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.daemon.restart(command(self.discover)).await
    }
}

/// Writes the config of a launch on the daemon's port and gives knxd's command.
fn command(discover: bool) -> impl FnMut(&Daemon) -> io::Result<Command> {
    move |d| {
        let ini = d.dir().join("knxd.ini");
        std::fs::write(
            &ini,
            format!(
                "[main]\naddr = 0.0.1\nclient-addrs = 0.0.2:8\nconnections = server,A.dummy\n\
                 [server]\nserver = ets_router\ntunnel = tunnel\nport = {}\ninterface = lo\n\
                 discover = {discover}\n[A.dummy]\ndriver = dummy\n",
                d.port()
            ),
        )?;
        let mut cmd =
            Command::new(std::env::var_os("KNXD").unwrap_or_else(|| DEFAULT_KNXD_BIN.into()));
        cmd.arg(ini);
        Ok(cmd)
    }
}
