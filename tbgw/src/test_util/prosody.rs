//! Launcher for a throw-away Debian `prosody` XMPP server on a free loopback port, with its
//! config, accounts and log in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// Where the Debian package installs the server; `$PROSODY` overrides it (and
/// `$PROSODYCTL` the control tool).
const DEFAULT_PROSODY_BIN: &str = "/usr/bin/prosody";
const DEFAULT_PROSODYCTL_BIN: &str = "/usr/bin/prosodyctl";
/// How long a freshly spawned server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many fresh ports [`Prosody::start`] tries.
const PORT_ATTEMPTS: usize = 5;

/// A `prosody` process serving the virtual host `localhost` on `127.0.0.1:<port>` (client
/// connections only: no server-to-server, no HTTP, no TLS (see [`Prosody::start_tls`]), no offline storage, so a message to
/// an account that is not logged in bounces). Plain-text authentication is allowed. Killed
/// when dropped.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use tbgw::test_util::Prosody;
/// let mut server = Prosody::start(&[("gw", "gwpass"), ("dev1", "devpass")]).await?;
/// let port = server.port();                  // log in as gw@localhost on 127.0.0.1:port
/// server.register("dev2", "devpass").await?; // more accounts at any time
/// server.restart().await?;                   // same port, same accounts
/// # let _ = port;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Prosody {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    launches: u32,
    tls: Option<ProsodyTls>,
}

/// TLS of a [`Prosody::start_tls`] server.
#[derive(Debug, Clone)]
struct ProsodyTls {
    cert: PathBuf,
    key: PathBuf,
    direct_port: u16,
}

impl Prosody {
    /// Writes a config on a free port, registers `users` (`(name, password)` on `localhost`)
    /// and starts the server.
    pub async fn start(users: &[(&str, &str)]) -> io::Result<Prosody> {
        Prosody::start_with(users, None).await
    }

    /// As [`Prosody::start`], with TLS: STARTTLS required on [`Prosody::port`] and XMPP over
    /// TLS from the first byte on [`Prosody::direct_tls_port`], both with the PEM certificate
    /// `cert` (for the host `localhost`) and its unencrypted key `key`.
    pub async fn start_tls(users: &[(&str, &str)], cert: &Path, key: &Path) -> io::Result<Prosody> {
        Prosody::start_with(
            users,
            Some(ProsodyTls {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                direct_port: 0,
            }),
        )
        .await
    }

    async fn start_with(users: &[(&str, &str)], tls: Option<ProsodyTls>) -> io::Result<Prosody> {
        let dir = tempfile::Builder::new().prefix("tbgw-prosody-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("data"))?;
        std::fs::create_dir_all(dir.path().join("certs"))?;
        let mut server = Prosody {
            port: 0,
            dir,
            child: None,
            launches: 0,
            tls,
        };
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = super::free_tcp_port();
            if let Some(t) = server.tls.as_mut() {
                t.direct_port = super::free_tcp_port();
            }
            server.write_config()?;
            if last.is_none() {
                for (user, pw) in users {
                    server.register(user, pw).await?;
                }
            }
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not start prosody")))
    }

    /// The client port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of XMPP over TLS from the first byte (`c2s_direct_tls_ports`), for a server
    /// started by [`Prosody::start_tls`].
    pub fn direct_tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.direct_port)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The temporary directory of the config, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log of the current (or last) launch.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Registers (or re-registers) `user@localhost` with `password`.
    pub async fn register(&self, user: &str, password: &str) -> io::Result<()> {
        let bin = std::env::var_os("PROSODYCTL").unwrap_or_else(|| DEFAULT_PROSODYCTL_BIN.into());
        let out = Command::new(&bin)
            .arg("--config")
            .arg(self.config_path())
            .args(["register", user, "localhost", password])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); install it with `apt-get install -y prosody` or set $PROSODYCTL",
                        bin.to_string_lossy()
                    ),
                )
            })?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "prosodyctl register {user} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Kills the server (SIGKILL) and waits for it: every connection drops.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
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
        Err(last.unwrap_or_else(|| io::Error::other("could not restart prosody")))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("prosody-{}.log", self.launches))
    }

    fn write_config(&self) -> io::Result<()> {
        let d = self.dir.path().display();
        let (tls_modules, tls_settings) = match &self.tls {
            None => (r#""tls""#.to_string(), String::new()),
            Some(t) => (
                String::new(),
                format!(
                    "c2s_require_encryption = true\nc2s_direct_tls_ports = {{ {} }}\n\
                     ssl = {{ certificate = \"{}\"; key = \"{}\"; }}\n",
                    t.direct_port,
                    t.cert.display(),
                    t.key.display()
                ),
            ),
        };
        let cfg = format!(
            r#"pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
daemonize = false
run_as_root = true
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "message"; "iq"; {tls_enabled} }}
modules_disabled = {{ "s2s"; {tls_modules} "offline" }}
log = {{ info = "*console" }}
{tls}
VirtualHost "localhost"
"#,
            port = self.port,
            tls = if tls_settings.is_empty() {
                "c2s_require_encryption = false".to_string()
            } else {
                tls_settings
            },
            tls_enabled = if tls_modules.is_empty() {
                r#""tls";"#
            } else {
                ""
            },
            tls_modules = if tls_modules.is_empty() {
                String::new()
            } else {
                format!("{tls_modules};")
            }
        );
        std::fs::write(self.config_path(), cfg)
    }

    async fn launch(&mut self) -> io::Result<()> {
        self.launches += 1;
        let log = std::fs::File::create(self.log_path())?;
        let bin = std::env::var_os("PROSODY").unwrap_or_else(|| DEFAULT_PROSODY_BIN.into());
        let mut child = Command::new(&bin)
            .arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {} ({e}); install it with `apt-get install -y prosody` or set $PROSODY",
                        bin.to_string_lossy()
                    ),
                )
            })?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "prosody exited with {status} on port {}; output:\n{}",
                    self.port,
                    self.log()
                )));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "prosody did not listen within {READY_TIMEOUT:?}; output:\n{}",
                        self.log()
                    ),
                ));
            }
            sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
