//! What the launchers of real test peers (knxd, snmpd, prosody, PostgreSQL, mosquitto) share:
//! a temporary directory, a port picked free and kept across restarts, one log file per
//! launch, a readiness wait, retries (a fresh port at start, the same port at restart) and
//! stopping the process.
//!
//! A launcher keeps a [`Daemon`] and gives it, at every launch, the [`Command`] to run (a
//! closure that may first write a config for [`Daemon::port`] into [`Daemon::dir`]); the
//! [`Daemon`] points its output at the launch's log and waits until it is [`Ready`].

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

/// How many fresh ports [`Daemon::start`] tries.
const PORT_ATTEMPTS: usize = 5;
/// How many times [`Daemon::restart`] tries the same port.
const RESTART_ATTEMPTS: usize = 20;
/// How long a daemon stopped with SIGINT may take to exit before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(20);
/// The same when the daemon is dropped (blocking the dropping thread).
const DROP_GRACE: Duration = Duration::from_secs(5);

/// The transport of a daemon's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// A TCP port.
    Tcp,
    /// A UDP port.
    Udp,
}

/// When a freshly spawned daemon counts as up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ready {
    /// Its port is open: a TCP connect succeeds (and the daemon still runs, so the listener is
    /// its own), or the UDP port can no longer be bound.
    PortOpen,
    /// Its output of this launch contains the text.
    Log(&'static str),
}

/// How a daemon is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGKILL, like a crash.
    Kill,
    /// SIGINT (e.g. PostgreSQL's fast shutdown, which takes its children along), then
    /// SIGKILL when it does not exit in time.
    Interrupt,
}

/// What differs between the daemons [`Daemon`] launches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// The daemon's name in log file names and messages (`knxd` gives `knxd-1.log`, ...).
    pub name: &'static str,
    /// The temporary directory's name prefix (`tbgw-knxd-`).
    pub dir_prefix: &'static str,
    /// What to tell when the program cannot be run (`install it with ...`).
    pub install_hint: &'static str,
    /// The transport of [`Daemon::port`].
    pub proto: Proto,
    /// When a launch is up.
    pub ready: Ready,
    /// How long a launch may take to be [`Ready`].
    pub ready_timeout: Duration,
    /// How often readiness is checked.
    pub poll: Duration,
    /// The pause between two launches of [`Daemon::restart`].
    pub restart_pause: Duration,
    /// `None`: every failed launch is retried; `Some(text)`: only one whose process exited
    /// with `text` in its output (e.g. `Address already in use`), any other failure is final.
    pub retry_only_if_log: Option<&'static str>,
    /// How [`Daemon::stop`] and dropping stop the process.
    pub stop: Stop,
}

/// A failed launch, and whether another launch may do better.
#[derive(Debug)]
struct Failure {
    error: io::Error,
    retry: bool,
}

/// A daemon process of a launcher: its temporary directory, port, current process and
/// launch count. The process is stopped (as [`Spec::stop`] says) when this is dropped, then
/// the directory is removed.
#[derive(Debug)]
pub(crate) struct Daemon {
    spec: Spec,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    launches: u32,
}

/// A free port of `proto` on 127.0.0.1 (bound, read, released).
pub(crate) fn free_port(proto: Proto) -> io::Result<u16> {
    match proto {
        Proto::Tcp => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr(),
        Proto::Udp => UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr(),
    }
    .map(|a| a.port())
}

impl Daemon {
    /// Creates the temporary directory; nothing runs yet and the port is 0 until
    /// [`Daemon::start`].
    pub(crate) fn new(spec: Spec) -> io::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix(spec.dir_prefix).tempdir()?;
        Ok(Daemon {
            spec,
            port: 0,
            dir,
            child: None,
            launches: 0,
        })
    }

    /// The port (the same across restarts).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The temporary directory (configs, data, logs).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id while the daemon runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether the process is (believed to be) running.
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The daemon's output (stdout and stderr) of the current (or last) launch; empty before
    /// the first.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}-{}.log", self.spec.name, self.launches))
    }

    /// Launches the daemon on fresh free ports until a launch is ready (a few tries: a port
    /// may be taken between picking and binding). `command` gives the command of a launch;
    /// it may write the launch's config first.
    pub(crate) async fn start(
        &mut self,
        mut command: impl FnMut(&Daemon) -> io::Result<Command>,
    ) -> io::Result<()> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port(self.spec.proto)?;
            match self.launch(&mut command).await {
                Ok(()) => return Ok(()),
                Err(Failure { error, retry: true }) => last = Some(error),
                Err(Failure { error, .. }) => return Err(error),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other(format!("could not start {}", self.spec.name))))
    }

    /// Stops the daemon if it runs and launches it again on the same port, retrying for a
    /// while (the port may still be busy).
    pub(crate) async fn restart(
        &mut self,
        mut command: impl FnMut(&Daemon) -> io::Result<Command>,
    ) -> io::Result<()> {
        self.stop().await?;
        let mut last = None;
        for _ in 0..RESTART_ATTEMPTS {
            match self.launch(&mut command).await {
                Ok(()) => return Ok(()),
                Err(Failure { error, retry: true }) => {
                    last = Some(error);
                    sleep(self.spec.restart_pause).await;
                }
                Err(Failure { error, .. }) => return Err(error),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::other(format!("could not restart {}", self.spec.name))))
    }

    /// Stops the daemon (as [`Spec::stop`] says) and waits for it. Does nothing if it does not
    /// run.
    pub(crate) async fn stop(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if self.spec.stop == Stop::Interrupt {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status()
                    .await;
                if let Ok(exited) = tokio::time::timeout(INTERRUPT_GRACE, child.wait()).await {
                    return exited.map(drop);
                }
            }
        }
        child.kill().await
    }

    /// One launch on [`Daemon::port`]: a new log file, the process, the wait until it is
    /// ready. The process is kept only when it is.
    async fn launch(
        &mut self,
        command: &mut impl FnMut(&Daemon) -> io::Result<Command>,
    ) -> Result<(), Failure> {
        self.launches += 1;
        let retry_any = self.spec.retry_only_if_log.is_none();
        let fail = move |error| Failure {
            error,
            retry: retry_any,
        };
        let mut cmd = command(self).map_err(fail)?;
        let log = std::fs::File::create(self.log_path()).map_err(fail)?;
        let out = log.try_clone().map_err(fail)?;
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure {
                error: io::Error::new(
                    e.kind(),
                    format!("cannot run {program} ({e}); {}", self.spec.install_hint),
                ),
                // Trying again does not install it.
                retry: false,
            })?;
        let name = self.spec.name;
        let deadline = Instant::now() + self.spec.ready_timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(fail)? {
                let log = self.log();
                let retry = self
                    .spec
                    .retry_only_if_log
                    .is_none_or(|text| log.contains(text));
                let msg = format!(
                    "{name} exited with {status} on port {}; output:\n{log}",
                    self.port
                );
                return Err(Failure {
                    error: if retry && self.spec.retry_only_if_log.is_some() {
                        io::Error::new(io::ErrorKind::AddrInUse, msg)
                    } else {
                        io::Error::other(msg)
                    },
                    retry,
                });
            }
            if self.is_ready(&mut child).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                let what = match self.spec.ready {
                    Ready::PortOpen => format!("open port {}", self.port),
                    Ready::Log(text) => format!("print {text:?} (port {})", self.port),
                };
                return Err(fail(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{name} did not {what} within {:?}; output:\n{}",
                        self.spec.ready_timeout,
                        self.log()
                    ),
                )));
            }
            sleep(self.spec.poll).await;
        }
    }

    async fn is_ready(&self, child: &mut Child) -> bool {
        match (self.spec.ready, self.spec.proto) {
            (Ready::Log(text), _) => self.log().contains(text),
            (Ready::PortOpen, Proto::Tcp) => {
                // Still running after the connect: the listener is the daemon's, not another's.
                tokio::net::TcpStream::connect(self.addr()).await.is_ok()
                    && matches!(child.try_wait(), Ok(None))
            }
            (Ready::PortOpen, Proto::Udp) => {
                // A UDP daemon says nothing when it is up: its port being taken is the sign.
                // (Bound on all addresses, as some daemons bind there rather than loopback.)
                if UdpSocket::bind((Ipv4Addr::UNSPECIFIED, self.port)).is_ok() {
                    return false;
                }
                sleep(Duration::from_millis(50)).await;
                true
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if self.spec.stop == Stop::Interrupt {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
                let deadline = std::time::Instant::now() + DROP_GRACE;
                while std::time::Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let _ = child.start_kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ready: Ready, proto: Proto) -> Spec {
        Spec {
            name: "sh",
            dir_prefix: "tbgw-daemon-test-",
            install_hint: "install a shell",
            proto,
            ready,
            ready_timeout: Duration::from_secs(5),
            poll: Duration::from_millis(10),
            restart_pause: Duration::from_millis(10),
            retry_only_if_log: None,
            stop: Stop::Kill,
        }
    }

    fn sh(script: &'static str) -> impl FnMut(&Daemon) -> io::Result<Command> {
        move |d| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(script).env("PORT", d.port().to_string());
            Ok(c)
        }
    }

    #[tokio::test]
    async fn starts_restarts_on_the_same_port_and_logs_per_launch() {
        let mut d = Daemon::new(spec(Ready::Log("up"), Proto::Tcp)).unwrap();
        assert_eq!(d.log(), "");
        d.start(sh("echo up on $PORT; exec sleep 60"))
            .await
            .unwrap();
        let port = d.port();
        assert_ne!(port, 0);
        assert_eq!(d.log(), format!("up on {port}\n"));
        assert!(d.is_running());
        assert!(d.pid().is_some());
        d.restart(sh("echo up again on $PORT; exec sleep 60"))
            .await
            .unwrap();
        assert_eq!(d.port(), port);
        assert_eq!(d.log(), format!("up again on {port}\n"));
        assert!(d.dir().join("sh-1.log").exists() && d.dir().join("sh-2.log").exists());
        d.stop().await.unwrap();
        assert!(!d.is_running());
        assert_eq!(d.pid(), None);
        d.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_daemon_that_exits_fails_with_its_output_after_the_retries() {
        let mut d = Daemon::new(spec(Ready::Log("up"), Proto::Udp)).unwrap();
        let e = d.start(sh("echo broken; exit 3")).await.unwrap_err();
        assert!(e.to_string().contains("sh exited with"), "{e}");
        assert!(e.to_string().contains("broken"), "{e}");
        assert!(
            d.dir().join("sh-5.log").exists(),
            "one launch per port attempt"
        );
    }

    #[tokio::test]
    async fn only_the_named_failure_is_retried_when_one_is_named() {
        let mut s = spec(Ready::Log("up"), Proto::Tcp);
        s.retry_only_if_log = Some("busy");
        let mut d = Daemon::new(s).unwrap();
        let e = d.start(sh("echo other; exit 1")).await.unwrap_err();
        assert!(e.to_string().contains("other"), "{e}");
        assert_eq!(d.launches, 1);
        let e = d.start(sh("echo busy; exit 1")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(d.launches, 1 + PORT_ATTEMPTS as u32);
    }

    #[tokio::test]
    async fn a_missing_program_is_not_retried_and_says_how_to_install_it() {
        let mut d = Daemon::new(spec(Ready::PortOpen, Proto::Tcp)).unwrap();
        let e = d
            .start(|_| Ok(Command::new("/nonexistent/tbgw-daemon")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("install a shell"), "{e}");
        assert_eq!(d.launches, 1);
    }

    #[tokio::test]
    async fn a_daemon_that_never_gets_ready_times_out() {
        let mut s = spec(Ready::PortOpen, Proto::Tcp);
        s.ready_timeout = Duration::from_millis(100);
        s.retry_only_if_log = Some("busy");
        let mut d = Daemon::new(s).unwrap();
        let e = d.start(sh("exec sleep 60")).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(!d.is_running());
    }

    #[tokio::test]
    async fn interrupt_stops_a_daemon_that_handles_sigint() {
        let mut s = spec(Ready::Log("up"), Proto::Tcp);
        s.stop = Stop::Interrupt;
        let mut d = Daemon::new(s).unwrap();
        d.start(sh(
            "trap 'echo bye; exit 0' INT; echo up; while :; do sleep 0.05; done",
        ))
        .await
        .unwrap();
        d.stop().await.unwrap();
        assert!(d.log().contains("bye"), "{}", d.log());
    }
}
