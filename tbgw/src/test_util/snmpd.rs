//! Launcher for a throw-away Debian `snmpd` agent on a free loopback UDP port.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use super::daemon::{Daemon, Proto, Ready, Spec, Stop};

/// Where the Debian package installs the agent; `$SNMPD` overrides it.
const DEFAULT_SNMPD_BIN: &str = "/usr/sbin/snmpd";

/// How the agent is launched: ready when it prints its version, which it does once its
/// transports are open.
const SPEC: Spec = Spec {
    name: "snmpd",
    dir_prefix: "tbgw-snmpd-",
    install_hint: "install it with `apt-get install -y snmpd` or set $SNMPD",
    proto: Proto::Udp,
    ready: Ready::Log("NET-SNMP version"),
    ready_timeout: Duration::from_secs(15),
    poll: Duration::from_millis(20),
    restart_pause: Duration::from_millis(100),
    retry_only_if_log: None,
    stop: Stop::Kill,
};

/// The agent configuration [`Snmpd::start`] uses: `public` reads, `private` reads and
/// writes (from 127.0.0.1). `sysContact` and `sysName` are not set in the file, so they are
/// writable over SNMP.
pub const SNMPD_COMMUNITIES: &str = "rocommunity public 127.0.0.1\nrwcommunity private 127.0.0.1\n";

/// An `snmpd` process on `udp:127.0.0.1:<port>` with its config, persistent state and log
/// in a temporary directory. Killed when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tbgw::test_util::Snmpd;
/// let mut agent = Snmpd::start().await?;     // rocommunity public, rwcommunity private
/// let port = agent.port();
/// agent.stop().await?;                        // the agent goes away
/// agent.restart().await?;                     // and comes back on the same port
/// # let _ = port;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Snmpd {
    daemon: Daemon,
    config: String,
}

impl Snmpd {
    /// Starts an agent with [`SNMPD_COMMUNITIES`] on a free port.
    pub async fn start() -> io::Result<Snmpd> {
        Self::start_with(SNMPD_COMMUNITIES).await
    }

    /// Starts an agent with `config` as its whole `snmpd.conf` (for example only a
    /// `createUser` and `rouser` line for SNMPv3). Do not put `agentAddress` in it: the
    /// endpoint is given on the command line.
    pub async fn start_with(config: &str) -> io::Result<Snmpd> {
        let config = format!("dontLogTCPWrappersConnects yes\n{config}");
        let mut daemon = Daemon::new(SPEC)?;
        daemon.start(command(&config)).await?;
        Ok(Snmpd { daemon, config })
    }

    /// The UDP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    /// The temporary directory of the config, state and logs.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// The agent's output of the current (or last) launch.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Kills the agent (SIGKILL) and waits for it.
    pub async fn stop(&mut self) -> io::Result<()> {
        self.daemon.stop().await
    }

    /// Stops the agent if it runs and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.daemon.restart(command(&self.config)).await
    }
}

/// Writes `config` for a launch and gives the agent's command on the daemon's port.
fn command(config: &str) -> impl FnMut(&Daemon) -> io::Result<Command> + '_ {
    move |d| {
        let conf = d.dir().join("snmpd.conf");
        std::fs::write(&conf, config)?;
        let mut cmd =
            Command::new(std::env::var_os("SNMPD").unwrap_or_else(|| DEFAULT_SNMPD_BIN.into()));
        // Not the config's folder: snmpd writes its persistent `snmpd.conf` there on exit.
        cmd.env("SNMP_PERSISTENT_DIR", d.dir().join("state"))
            .env("MIBS", "")
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(d.dir().join("snmpd.pid"))
            .arg(format!("udp:127.0.0.1:{}", d.port()));
        Ok(cmd)
    }
}
