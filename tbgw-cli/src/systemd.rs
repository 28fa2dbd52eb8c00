//! systemd's notification protocol (`sd_notify`), spoken directly: one datagram per state
//! change to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket). No library: the protocol is a `KEY=value` text in a datagram.
//!
//! * `READY=1` once the storage is open and the ThingsBoard session is ready (`Type=notify`);
//! * `WATCHDOG=1` every half `$WATCHDOG_USEC` (`WatchdogSec=`) from the gateway's runtime, so
//!   a runtime that stops making progress is restarted by systemd;
//! * `STOPPING=1` at shutdown, and `STATUS=` with what the gateway is doing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; `None` when not started by systemd with `NotifyAccess`.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?.to_string();
        let addr = if let Some(name) = path.strip_prefix('@') {
            abstract_addr(name)?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Sends one notification (`READY=1`, `WATCHDOG=1`, `STATUS=...`, several separated by
    /// newlines). Failures are logged at debug level: systemd may simply not listen.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::debug!(error = %e, state, "sd_notify failed.");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &str) -> Option<std::os::unix::net::SocketAddr> {
    None
}

/// How often to feed the watchdog: half of `$WATCHDOG_USEC`, if set for this process
/// (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
