//! Launcher for a throw-away Debian `knxd` on a free loopback UDP port: a KNXnet/IP
//! tunnelling server in front of a dummy bus, so that tunnel clients (the connector under
//! test, an xknx script playing a bus member) see each other's group telegrams.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// Where the Debian package installs knxd; `$KNXD` overrides it.
const DEFAULT_KNXD_BIN: &str = "/usr/bin/knxd";
/// How long a freshly spawned knxd may take to open its port.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How many fresh ports [`Knxd::start`] tries.
const PORT_ATTEMPTS: usize = 5;

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
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    launches: u32,
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
        let dir = tempfile::Builder::new().prefix("tbgw-knxd-").tempdir()?;
        let mut k = Knxd {
            port: 0,
            dir,
            child: None,
            launches: 0,
            discover,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            k.port = super::free_udp_port();
            match k.launch().await {
                Ok(()) => return Ok(k),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not start knxd")))
    }

    /// The UDP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The temporary directory of the config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// knxd's output of the current (or last) launch.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills knxd (SIGKILL) and waits for it.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Stops knxd if it runs and starts it again on the same port.
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
        Err(last.unwrap_or_else(|| io::Error::other("could not restart knxd")))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("knxd-{}.log", self.launches))
    }

    async fn launch(&mut self) -> io::Result<()> {
        self.launches += 1;
        let ini = self.dir.path().join("knxd.ini");
        std::fs::write(
            &ini,
            format!(
                "[main]\naddr = 0.0.1\nclient-addrs = 0.0.2:8\nconnections = server,A.dummy\n\
                 [server]\nserver = ets_router\ntunnel = tunnel\nport = {}\ninterface = lo\n\
                 discover = {}\n[A.dummy]\ndriver = dummy\n",
                self.port, self.discover
            ),
        )?;
        let log = std::fs::File::create(self.log_path())?;
        let bin = std::env::var_os("KNXD").unwrap_or_else(|| DEFAULT_KNXD_BIN.into());
        let mut child = Command::new(&bin)
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); install it with `apt-get install -y knxd` or set $KNXD",
                        bin.to_string_lossy()
                    ),
                )
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "knxd exited with {status} on port {}; output:\n{}",
                    self.port,
                    self.log()
                )));
            }
            // knxd prints nothing when it is up: its port being taken is the sign.
            if UdpSocket::bind((Ipv4Addr::UNSPECIFIED, self.port)).is_err() {
                sleep(Duration::from_millis(50)).await;
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "knxd did not open port {} within {READY_TIMEOUT:?}; output:\n{}",
                        self.port,
                        self.log()
                    ),
                ));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Knxd {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
