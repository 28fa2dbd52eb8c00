//! Launcher for a throw-away PostgreSQL cluster (Debian `postgresql`) in a temporary
//! directory on a free loopback port.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::daemon::{Daemon, Proto, Ready, Spec, Stop};

/// Where Debian installs the server binaries; `$PG_BIN` overrides it.
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// How the server is launched and stopped: ready when it says so; stopped with a fast
/// shutdown (SIGINT), which takes the server's children along.
const SPEC: Spec = Spec {
    name: "postgres",
    dir_prefix: "tbgw-pg-",
    install_hint: "install it with `apt-get install -y postgresql` or set $PG_BIN",
    proto: Proto::Tcp,
    ready: Ready::Log("ready to accept connections"),
    ready_timeout: Duration::from_secs(30),
    poll: Duration::from_millis(50),
    restart_pause: Duration::from_millis(200),
    retry_only_if_log: None,
    stop: Stop::Interrupt,
};

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
    daemon: Daemon,
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
fn as_postgres(program: &Path) -> Command {
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
        let mut daemon = Daemon::new(SPEC)?;
        let dir = daemon.dir();
        {
            use std::os::unix::fs::PermissionsExt;
            // The server (another user when we are root) writes its data and socket here.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
            let pw = dir.join("pwfile");
            std::fs::write(&pw, POSTGRES_PASSWORD)?;
            std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644))?;
        }
        let out = as_postgres(&bin("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=scram-sha-256", "--no-sync"])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()))
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
        daemon.start(command).await?;
        Ok(Postgres { daemon })
    }

    /// The TCP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// An ODBC connection string for the `postgres` database through psqlODBC (`PostgreSQL
    /// Unicode`, Debian `odbc-postgresql`), booleans as booleans.
    pub fn odbc_connection_string(&self) -> String {
        format!(
            "Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={};Database=postgres;Uid=postgres;Pwd={POSTGRES_PASSWORD};BoolsAsChar=0;",
            self.port()
        )
    }

    /// The server's output of the current (or last) launch.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Stops the server (fast shutdown: SIGINT) and waits for it.
    pub async fn stop(&mut self) -> io::Result<()> {
        self.daemon.stop().await
    }

    /// Stops the server if it runs and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.daemon.restart(command).await
    }
}

/// The server's command on the daemon's port, its data and socket in the daemon's folder.
fn command(d: &Daemon) -> io::Result<Command> {
    let mut cmd = as_postgres(&bin("postgres"));
    cmd.arg("-D")
        .arg(d.dir().join("data"))
        .arg("-p")
        .arg(d.port().to_string())
        .arg("-k")
        .arg(d.dir())
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]);
    Ok(cmd)
}
