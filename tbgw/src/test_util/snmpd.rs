//! Launcher for a throw-away Debian `snmpd` agent on a free loopback UDP port.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// Where the Debian package installs the agent; `$SNMPD` overrides it.
const DEFAULT_SNMPD_BIN: &str = "/usr/sbin/snmpd";
/// How long a freshly spawned agent may take to say it runs.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How many fresh ports [`Snmpd::start_with`] tries.
const PORT_ATTEMPTS: usize = 5;

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
    port: u16,
    config: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    launches: u32,
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
        let dir = tempfile::Builder::new().prefix("tbgw-snmpd-").tempdir()?;
        let mut agent = Snmpd {
            port: 0,
            config: format!("dontLogTCPWrappersConnects yes\n{config}"),
            dir,
            child: None,
            launches: 0,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            agent.port = super::free_udp_port();
            match agent.launch().await {
                Ok(()) => return Ok(agent),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not start snmpd")))
    }

    /// The UDP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The agent's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The temporary directory of the config, state and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's output of the current (or last) launch.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the agent (SIGKILL) and waits for it.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Stops the agent if it runs and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await?;
        let mut last = None;
        for _ in 0..20 {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not restart snmpd")))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("snmpd-{}.log", self.launches))
    }

    async fn launch(&mut self) -> io::Result<()> {
        self.launches += 1;
        let conf = self.dir.path().join("snmpd.conf");
        std::fs::write(&conf, &self.config)?;
        let log = std::fs::File::create(self.log_path())?;
        let bin = std::env::var_os("SNMPD").unwrap_or_else(|| DEFAULT_SNMPD_BIN.into());
        let mut child = Command::new(&bin)
            // Not the config's folder: snmpd writes its persistent `snmpd.conf` there on exit.
            .env("SNMP_PERSISTENT_DIR", self.dir.path().join("state"))
            .env("MIBS", "")
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf)
            .arg("-p")
            .arg(self.dir.path().join("snmpd.pid"))
            .arg(format!("udp:127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); install it with `apt-get install -y snmpd` or set $SNMPD",
                        bin.to_string_lossy()
                    ),
                )
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "snmpd exited with {status} on port {}; output:\n{}",
                    self.port,
                    self.log()
                )));
            }
            // snmpd prints its version once its transports are open.
            if self.log().contains("NET-SNMP version") {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "snmpd did not start within {READY_TIMEOUT:?}; output:\n{}",
                        self.log()
                    ),
                ));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
