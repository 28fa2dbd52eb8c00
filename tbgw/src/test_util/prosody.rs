//! Launcher for a throw-away Debian `prosody` XMPP server on a free loopback port, with its
//! config, accounts and log in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::daemon::{free_port, Daemon, Proto, Ready, Spec, Stop};

/// Where the Debian package installs the server; `$PROSODY` overrides it (and
/// `$PROSODYCTL` the control tool).
const DEFAULT_PROSODY_BIN: &str = "/usr/bin/prosody";
const DEFAULT_PROSODYCTL_BIN: &str = "/usr/bin/prosodyctl";

/// How the server is launched: ready when it accepts client connections.
const SPEC: Spec = Spec {
    name: "prosody",
    dir_prefix: "tbgw-prosody-",
    install_hint: "install it with `apt-get install -y prosody` or set $PROSODY",
    proto: Proto::Tcp,
    ready: Ready::PortOpen,
    ready_timeout: Duration::from_secs(20),
    poll: Duration::from_millis(25),
    restart_pause: Duration::from_millis(200),
    retry_only_if_log: None,
    stop: Stop::Kill,
};

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
    daemon: Daemon,
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
        let mut server = Prosody {
            daemon: Daemon::new(SPEC)?,
            tls,
        };
        let dir = server.daemon.dir();
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::create_dir_all(dir.join("certs"))?;
        // The accounts live in the data folder, whatever port a launch gets.
        write_config(dir, 0, server.tls.as_ref())?;
        for (user, pw) in users {
            server.register(user, pw).await?;
        }
        let Prosody { daemon, tls } = &mut server;
        daemon
            .start(|d| {
                if let Some(t) = tls.as_mut() {
                    t.direct_port = free_port(Proto::Tcp)?;
                }
                command(d, tls.as_ref())
            })
            .await?;
        Ok(server)
    }

    /// The client port on 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.daemon.port()
    }

    /// The port of XMPP over TLS from the first byte (`c2s_direct_tls_ports`), for a server
    /// started by [`Prosody::start_tls`].
    pub fn direct_tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.direct_port)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// The temporary directory of the config, data and logs.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// The server's log of the current (or last) launch.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Registers (or re-registers) `user@localhost` with `password`.
    pub async fn register(&self, user: &str, password: &str) -> io::Result<()> {
        let bin = std::env::var_os("PROSODYCTL").unwrap_or_else(|| DEFAULT_PROSODYCTL_BIN.into());
        let out = Command::new(&bin)
            .arg("--config")
            .arg(config_path(self.daemon.dir()))
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
        self.daemon.stop().await
    }

    /// Stops the server if it runs and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        let tls = self.tls.as_ref();
        self.daemon.restart(|d| command(d, tls)).await
    }
}

fn config_path(dir: &Path) -> PathBuf {
    dir.join("prosody.cfg.lua")
}

/// Writes the config of a launch on the daemon's port and gives the server's command.
fn command(d: &Daemon, tls: Option<&ProsodyTls>) -> io::Result<Command> {
    write_config(d.dir(), d.port(), tls)?;
    let mut cmd =
        Command::new(std::env::var_os("PROSODY").unwrap_or_else(|| DEFAULT_PROSODY_BIN.into()));
    cmd.arg("--config").arg(config_path(d.dir()));
    Ok(cmd)
}

/// Writes the config of a server in `dir` serving clients on `port`.
fn write_config(dir: &Path, port: u16, tls: Option<&ProsodyTls>) -> io::Result<()> {
    let d = dir.display();
    let (tls_modules, tls_settings) = match tls {
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
    std::fs::write(config_path(dir), cfg)
}
