//! Upstream's Python custom connectors (a `connectors[]` entry with a `class`): each runs as a
//! supervised child process, `python -m tbgw_custom`, the host package of this repository
//! (`python/tbgw_custom/`, embedded in the binary). The host imports the class from upstream's
//! `extensions/<type>/` layout, gives it the gateway object it expects and speaks the gRPC
//! connector API to tbgw with a key generated for the connector; tbgw treats the entry as a
//! `type: grpc` connector with that key and command.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Connector types upstream 3.8.5 implements itself: for these, upstream ignores a `class`
/// (its built-in connector wins), and so does tbgw.
pub const UPSTREAM_BUILT_IN_TYPES: &[&str] = &[
    "mqtt", "modbus", "opcua", "ble", "request", "can", "bacnet", "odbc", "rest", "snmp", "ftp",
    "socket", "xmpp", "ocpp", "knx", "grpc", "s7",
];

/// The environment variable naming the Python interpreter of custom connectors that have no
/// `python` key (default `python3`).
pub const PYTHON_ENV: &str = "TBGW_PYTHON";

/// Whether a `connectors[]` entry of type `ty` with a `class` is a Python custom connector.
pub fn is_custom_type(ty: &str) -> bool {
    !UPSTREAM_BUILT_IN_TYPES.contains(&ty.to_ascii_lowercase().as_str())
}

/// The Python side of a custom connector entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomClass {
    /// The entry's `type` as written (the connector type tbgw routes `<type>_<method>` RPCs by).
    pub connector_type: String,
    /// The folder searched under each extensions directory: the type lower-cased, as upstream.
    pub folder: String,
    /// The class name (`class`).
    pub class: String,
    /// The interpreter and its leading arguments (`python`, a tbgw extension; else
    /// `$TBGW_PYTHON`, else `python3`).
    pub python: Vec<String>,
    /// Extensions directories searched first (`extensionsPath`, a tbgw extension, string or list;
    /// relative to the main file's directory), before `extensions` beside the main file,
    /// upstream's `/var/lib/thingsboard_gateway/extensions` and an installed upstream package's
    /// own folders.
    pub extensions: Vec<PathBuf>,
}

impl CustomClass {
    /// The command that runs the host for this class (the host package directory comes with
    /// the process's `PYTHONPATH`).
    pub fn command(&self, dir: &Path) -> Vec<String> {
        let mut argv = self.python.clone();
        argv.extend(
            [
                "-m",
                "tbgw_custom",
                "--type",
                &self.folder,
                "--class",
                &self.class,
            ]
            .into_iter()
            .map(str::to_string),
        );
        for d in self
            .extensions
            .iter()
            .cloned()
            .chain([PathBuf::from("extensions")])
        {
            argv.push("--extensions".into());
            argv.push(dir.join(d).display().to_string());
        }
        argv
    }
}

/// The default interpreter: `$TBGW_PYTHON` or `python3`.
pub fn default_python() -> Vec<String> {
    match std::env::var(PYTHON_ENV) {
        Ok(p) if !p.trim().is_empty() => vec![p],
        _ => vec!["python3".to_string()],
    }
}

/// A `'static` copy of a connector type name, made once per distinct name: a
/// [`ConnectorFactory`](tbgw::connector::ConnectorFactory) names its type with a `&'static str`,
/// and custom types come from the configuration (a handful per process).
pub(crate) fn intern(s: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == s) {
        return n;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// The host package's files, embedded at build time.
const HOST_FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../python/tbgw_custom/__init__.py"),
    ),
    (
        "__main__.py",
        include_str!("../../../python/tbgw_custom/__main__.py"),
    ),
    (
        "_descriptor.py",
        include_str!("../../../python/tbgw_custom/_descriptor.py"),
    ),
    (
        "convert.py",
        include_str!("../../../python/tbgw_custom/convert.py"),
    ),
    (
        "gateway.py",
        include_str!("../../../python/tbgw_custom/gateway.py"),
    ),
    (
        "host.py",
        include_str!("../../../python/tbgw_custom/host.py"),
    ),
    (
        "loader.py",
        include_str!("../../../python/tbgw_custom/loader.py"),
    ),
    (
        "proto.py",
        include_str!("../../../python/tbgw_custom/proto.py"),
    ),
];

/// The host package written out for the child processes: a private directory (mode 0700,
/// random name) under the temporary directory, shared by the running custom connectors and
/// removed when the last one stops.
#[derive(Debug)]
pub(crate) struct HostPackage {
    dir: PathBuf,
}

struct Shared {
    users: usize,
    dir: Option<PathBuf>,
}

fn shared() -> &'static Mutex<Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        Mutex::new(Shared {
            users: 0,
            dir: None,
        })
    })
}

impl HostPackage {
    /// Writes the package (once) and takes a reference to it.
    pub(crate) fn acquire() -> std::io::Result<HostPackage> {
        let mut s = shared().lock().unwrap_or_else(|p| p.into_inner());
        let dir = match &s.dir {
            Some(d) if d.join("tbgw_custom/host.py").exists() => d.clone(),
            _ => {
                let d = write_package()?;
                s.dir = Some(d.clone());
                d
            }
        };
        s.users += 1;
        Ok(HostPackage { dir })
    }

    /// The directory to put on `PYTHONPATH`.
    pub(crate) fn python_path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for HostPackage {
    fn drop(&mut self) {
        let mut s = shared().lock().unwrap_or_else(|p| p.into_inner());
        s.users = s.users.saturating_sub(1);
        if s.users == 0 {
            if let Some(d) = s.dir.take() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

fn write_package() -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..8 {
        let root = base.join(format!(
            "tbgw-custom-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        match b.create(&root) {
            Ok(()) => {
                let pkg = root.join("tbgw_custom");
                std::fs::create_dir(&pkg)?;
                for (name, text) in HOST_FILES {
                    std::fs::write(pkg.join(name), text)?;
                }
                remove_stale(&base, &root);
                return Ok(root);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free directory name")))
}

/// Removes the package directories of tbgw processes that are gone (killed before they could
/// clean up): `tbgw-custom-<pid>-*` of a pid without `/proc/<pid>`, owned by the owner of
/// `ours`.
fn remove_stale(base: &Path, ours: &Path) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(me) = std::fs::metadata(ours).map(|m| m.uid()) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("tbgw-custom-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let mine = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
            if mine && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (base, ours);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_are_not_custom() {
        assert!(is_custom_type("serial"));
        assert!(is_custom_type("custom"));
        assert!(!is_custom_type("MQTT"));
        assert!(!is_custom_type("grpc"));
    }

    #[test]
    fn interned_names_are_shared() {
        let a = intern("serial-test");
        let b = intern(&String::from("serial-test"));
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn the_command_searches_the_configured_folders_then_extensions() {
        let c = CustomClass {
            connector_type: "Serial".into(),
            folder: "serial".into(),
            class: "SerialConnector".into(),
            python: vec!["/opt/venv/bin/python".into()],
            extensions: vec!["my-ext".into()],
        };
        assert_eq!(
            c.command(Path::new("/etc/gw")),
            [
                "/opt/venv/bin/python",
                "-m",
                "tbgw_custom",
                "--type",
                "serial",
                "--class",
                "SerialConnector",
                "--extensions",
                "/etc/gw/my-ext",
                "--extensions",
                "/etc/gw/extensions"
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn directories_of_processes_that_are_gone_are_removed() {
        let base = tempfile::tempdir().expect("tempdir");
        // pid 0 is never a process's; our own pid is alive.
        let stale = base.path().join("tbgw-custom-0-00000000");
        let alive = base
            .path()
            .join(format!("tbgw-custom-{}-00000000", std::process::id()));
        let other = base.path().join("something-else");
        for d in [&stale, &alive, &other] {
            std::fs::create_dir(d).expect("dir");
        }
        let ours = base.path().join("tbgw-custom-ours");
        std::fs::create_dir(&ours).expect("dir");
        remove_stale(base.path(), &ours);
        assert!(!stale.exists() && alive.exists() && other.exists() && ours.exists());
    }

    #[test]
    fn the_package_is_written_once_and_removed_after_the_last_user() {
        let a = HostPackage::acquire().expect("written");
        let b = HostPackage::acquire().expect("shared");
        assert_eq!(a.python_path(), b.python_path());
        let dir = a.python_path().to_path_buf();
        assert!(dir.join("tbgw_custom/__main__.py").exists());
        drop(a);
        assert!(dir.exists());
        drop(b);
        assert!(!dir.exists());
    }
}
