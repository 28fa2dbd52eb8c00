//! Launcher for a throw-away PostgreSQL cluster (Debian `postgresql`) in a temporary
//! directory on a free loopback port.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// Where Debian installs the server binaries; `$PG_BIN` overrides it.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long a fresh server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The superuser's password.
pub const POSTGRES_PASSWORD: &str = "tbgw-test";

/// A `postgres` server of its own cluster (`initdb` in a temporary directory), listening on
/// `127.0.0.1:<port>` with password authentication. Stopped (fast shutdown) when dropped.
///
/// As root, `initdb` and `postgres` run as the `postgres` user (`setpriv`), as PostgreSQL
/// refuses to run as root.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tbgw::test_util::Postgres;
/// let mut pg = Postgres::start().await?;
/// let odbc = pg.odbc_connection_string(); // Driver={PostgreSQL Unicode};Server=127.0.0.1;...
/// pg.stop().await?;
/// pg.restart().await?; // same port, same data
/// # let _ = odbc;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    launches: u32,
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("PG_BIN").unwrap_or_else(|| DEFAULT_PG_BIN.into());
    Path::new(&dir).join(name)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A command for `program`, run as `postgres` when we are root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Creates the cluster and starts the server on a free port.
    pub async fn start() -> io::Result<Postgres> {
        let dir = tempfile::Builder::new().prefix("tbgw-pg-").tempdir()?;
        {
            use std::os::unix::fs::PermissionsExt;
            // The server (another user when we are root) writes its data and socket here.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
            let pw = dir.path().join("pwfile");
            std::fs::write(&pw, POSTGRES_PASSWORD)?;
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644))?;
        }
        let out = command(&bin("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", dir.path().join("pwfile").display()))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run initdb ({e}); install it with `apt-get install -y postgresql` or set $PG_BIN"),
                )
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut pg = Postgres {
            port: 0,
            dir,
            child: None,
            launches: 0,
        };
        let mut last = None;
        for _ in 0..5 {
            pg.port = super::free_tcp_port();
            match pg.launch().await {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not start postgres")))
    }

    /// The TCP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An ODBC connection string for the `postgres` database through psqlODBC (`PostgreSQL
    /// Unicode`, Debian `odbc-postgresql`), booleans as booleans.
    pub fn odbc_connection_string(&self) -> String {
        format!(
            "Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={};Database=postgres;Uid=postgres;Pwd={POSTGRES_PASSWORD};BoolsAsChar=0;",
            self.port
        )
    }

    /// The server's output of the current (or last) launch.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("postgres-{}.log", self.launches))
    }

    /// Stops the server (fast shutdown: SIGINT) and waits for it.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status()
                    .await;
            }
            match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
                Ok(r) => {
                    r?;
                }
                Err(_) => child.kill().await?,
            }
        }
        Ok(())
    }

    /// Stops the server if it runs and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await?;
        let mut last = None;
        for _ in 0..20 {
            match self.launch().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not restart postgres")))
    }

    async fn launch(&mut self) -> io::Result<()> {
        self.launches += 1;
        let log = std::fs::File::create(self.log_path())?;
        let mut child = command(&bin("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "postgres exited with {status} on port {}; output:\n{}",
                    self.port,
                    self.log()
                )));
            }
            if self.log().contains("ready to accept connections") {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "postgres did not start within {READY_TIMEOUT:?}; output:\n{}",
                        self.log()
                    ),
                ));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                // Fast shutdown, so the server's children go too; then the hard kill.
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
                for _ in 0..100 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = child.start_kill();
        }
    }
}
