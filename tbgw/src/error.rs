//! Configuration errors and warnings: each names the file, the key path and the reason.
//!
//! A leaf of the crate (it uses nothing else of it), so every module can return a
//! [`ConfigError`] without depending on [`config`](crate::config), which re-exports these
//! types under their old paths. The other error types live with what returns them and are
//! re-exported at the crate root: [`ConnectorError`](crate::ConnectorError),
//! [`ConvertError`](crate::ConvertError), [`StorageError`](crate::StorageError),
//! [`GatewayError`](crate::GatewayError), [`UplinkClosed`](crate::UplinkClosed) and, with the
//! `tls` feature, `TlsError`.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem: `file: key.path: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The key path inside the file (`thingsboard.security.type`, `mapping[0].topicFilter`),
    /// empty for a problem with the whole file.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// A problem at `key` of `file`.
    pub fn new(file: impl AsRef<Path>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            file: file.as_ref().to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A key that was present in a file and is not used (not implemented yet, or not meaningful
/// for the chosen option). Logged once at startup, printed by `tbgw check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredKey {
    /// The file.
    pub file: PathBuf,
    /// The key path.
    pub key: String,
}

impl fmt::Display for IgnoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: ignored (not used by tbgw)",
            self.file.display(),
            self.key
        )
    }
}
