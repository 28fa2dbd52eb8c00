//! Launcher for a mocked BlueZ: a private `dbus-daemon` (its socket in a temporary directory)
//! playing the system bus, python-dbusmock's `bluez5` template on it playing bluetoothd, and a
//! control script (`bluez_mock.py`) that adds the adapter and devices with correctly typed
//! advertisement properties and keeps the devices "heard".
//!
//! A program uses the mock when `DBUS_SYSTEM_BUS_ADDRESS` is [`BluezMock::bus_address`]
//! (for a BLE stack in the test process itself: set it before the stack first connects, in a
//! test binary of its own).

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{sleep, Instant};

/// The control script, written to the temporary directory at start.
const SCRIPT: &str = include_str!("bluez_mock.py");
/// The Python that has `dbus` and `dbusmock` (Debian's `python3-dbusmock`); `$BLUEZ_MOCK_PYTHON`
/// overrides it.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
/// How long a step may take.
const STEP: Duration = Duration::from_secs(20);

/// A mocked BlueZ on a private bus. Everything is killed when dropped.
#[derive(Debug)]
pub struct BluezMock {
    dir: tempfile::TempDir,
    /// Killed when dropped, like the others.
    _bus: Child,
    bluetoothd: Option<Child>,
    _control: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

fn python() -> PathBuf {
    std::env::var_os("BLUEZ_MOCK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| SYSTEM_PYTHON.into())
}

impl BluezMock {
    /// Why the mock cannot run here (no `dbus-daemon`, no python-dbusmock), or `None`.
    pub fn unavailable() -> Option<String> {
        let daemon = std::process::Command::new("dbus-daemon")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !daemon.is_ok_and(|s| s.success()) {
            return Some("dbus-daemon is not installed (Debian dbus-daemon)".into());
        }
        let mock = std::process::Command::new(python())
            .args(["-c", "import dbus, dbusmock"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !mock.is_ok_and(|s| s.success()) {
            return Some(format!(
                "{} cannot import dbus and dbusmock (Debian python3-dbusmock)",
                python().display()
            ));
        }
        None
    }

    /// Starts the bus, the mocked bluetoothd and the control script, and adds adapter `hci0`.
    pub async fn start() -> io::Result<BluezMock> {
        let dir = tempfile::Builder::new().prefix("tbgw-bluez-").tempdir()?;
        let socket = dir.path().join("system_bus");
        let log = std::fs::File::create(dir.path().join("dbus-daemon.log"))?;
        let bus = Command::new("dbus-daemon")
            .arg("--config-file=/usr/share/dbus-1/session.conf")
            .arg(format!("--address=unix:path={}", socket.display()))
            .arg("--nofork")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?;
        let deadline = Instant::now() + STEP;
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err(io::Error::other("dbus-daemon did not create its socket"));
            }
            sleep(Duration::from_millis(20)).await;
        }
        let address = format!("unix:path={}", socket.display());
        let script = dir.path().join("bluez_mock.py");
        std::fs::write(&script, SCRIPT)?;
        let mut control = Command::new(python())
            .arg(&script)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = control
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let stdout = control
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut mock = BluezMock {
            dir,
            _bus: bus,
            bluetoothd: None,
            _control: control,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        mock.expect_line("ready").await?;
        mock.start_bluetoothd().await?;
        Ok(mock)
    }

    /// `DBUS_SYSTEM_BUS_ADDRESS` for programs that should use the mock.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("system_bus").display())
    }

    async fn expect_line(&mut self, want: &str) -> io::Result<String> {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .map_err(|_| io::Error::other("the control script did not answer"))??
            .ok_or_else(|| io::Error::other("the control script ended"))?;
        if line.starts_with(want) {
            Ok(line)
        } else {
            Err(io::Error::other(format!("control script: {line}")))
        }
    }

    async fn command(&mut self, line: &str) -> io::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.expect_line("ok").await.map(|_| ())
    }

    /// Adds a device that advertises (its RSSI changes every 0.5 s).
    pub async fn add_device(&mut self, mac: &str, name: &str) -> io::Result<()> {
        self.command(&format!("device {mac} {name}")).await
    }

    /// Sets a device's manufacturer data.
    pub async fn set_manufacturer_data(
        &mut self,
        mac: &str,
        company: u16,
        data: &[u8],
    ) -> io::Result<()> {
        self.command(&format!("mfr {mac} {company} {}", hex(data)))
            .await
    }

    /// Sets a device's service data (and advertised services).
    pub async fn set_service_data(&mut self, mac: &str, uuid: &str, data: &[u8]) -> io::Result<()> {
        self.command(&format!("svc {mac} {uuid} {}", hex(data)))
            .await
    }

    /// Whether a device keeps advertising (`false`: it falls silent, as out of range).
    pub async fn set_heard(&mut self, mac: &str, heard: bool) -> io::Result<()> {
        self.command(&format!("heard {mac} {}", u8::from(heard)))
            .await
    }

    /// Kills the mocked bluetoothd: the adapter and devices disappear from the bus.
    pub async fn stop_bluetoothd(&mut self) -> io::Result<()> {
        if let Some(mut c) = self.bluetoothd.take() {
            c.kill().await?;
        }
        self.command("forget").await
    }

    /// Starts the mocked bluetoothd (again) with adapter `hci0` and no devices.
    pub async fn start_bluetoothd(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("bluetoothd.log"))?;
        let child = Command::new(python())
            .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?;
        self.bluetoothd = Some(child);
        self.command("wait").await?;
        self.command("adapter").await
    }

    /// The mocked bluetoothd's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bluetoothd.log")).unwrap_or_default()
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
