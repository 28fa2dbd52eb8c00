//! Modbus/TCP over TLS (the "Modbus/TCP Security" transport: MBAP frames inside a TLS stream),
//! built with [`tbgw::tls`]: the master's client configuration (`master.slaves[].tls`) and the
//! slave mode's server configuration (`slave.security`). Relative paths are relative to the
//! connector file, `~` is the home directory ([`tbgw::config::resolve_path`]).
//!
//! Certificates and keys are read while the configuration is validated, so a missing or
//! unusable file is a configuration error with its key path, not a connection failure.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use tbgw::config::resolve_path;
use tbgw::tls::rustls::pki_types::ServerName;
use tbgw::tls::{self, rustls, Identity, TlsError, Verify};

use super::config::TlsConfig;

/// A master's TLS settings, ready to connect. Compared and hashed by its configuration, so
/// slaves with the same host, port and TLS settings share one connection.
#[derive(Clone)]
pub struct ClientTls {
    settings: TlsConfig,
    /// The name sent in SNI and checked in the device's certificate.
    pub server_name: ServerName<'static>,
    /// The rustls configuration.
    pub config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("settings", &self.settings)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

impl Hash for ClientTls {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.settings.hash(state);
        format!("{:?}", self.server_name).hash(state);
    }
}

impl ClientTls {
    /// True when the device's certificate is checked (`cafile` is set).
    pub fn verifies_server(&self) -> bool {
        self.settings.cafile.is_some()
    }
}

/// Why a TLS section cannot be used: the key (inside the section) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfigError {
    /// Key inside the section (`certfile`, `keyfile`, `cafile`, ...).
    pub key: &'static str,
    /// Reason.
    pub reason: String,
}

fn bad(key: &'static str, reason: impl Into<String>) -> TlsConfigError {
    TlsConfigError {
        key,
        reason: reason.into(),
    }
}

/// The CA certificates of `cafile`; relative paths are taken from `dir`, the connector file's
/// directory ([`resolve_path`]).
fn roots(dir: &Path, cafile: &str) -> Result<rustls::RootCertStore, TlsConfigError> {
    tls::load_roots(&resolve_path(dir, cafile)).map_err(|e| bad("cafile", e.to_string()))
}

/// The certificate and key pair of a section, when both are set; one without the other is an
/// error.
fn cert_pair(dir: &Path, t: &TlsConfig) -> Result<Option<Identity>, TlsConfigError> {
    match (&t.certfile, &t.keyfile) {
        (Some(c), Some(k)) => {
            let (cert, key) = (resolve_path(dir, c), resolve_path(dir, k));
            Identity::load(&cert, &key).map(Some).map_err(|e| {
                let at_fault = if e.path() == Some(cert.as_path()) {
                    "certfile"
                } else {
                    "keyfile"
                };
                bad(at_fault, e.to_string())
            })
        }
        (Some(_), None) => Err(bad("keyfile", "`certfile` needs its `keyfile`")),
        (None, Some(_)) => Err(bad("certfile", "`keyfile` needs its `certfile`")),
        (None, None) => Ok(None),
    }
}

/// A configuration error of the whole section: a certificate and key that do not match are
/// the key's fault, anything else rustls refuses is the CA's.
fn section_error(e: TlsError) -> TlsConfigError {
    match e {
        TlsError::KeyPair { .. } => bad("keyfile", e.to_string()),
        e => bad("cafile", e.to_string()),
    }
}

/// The master's TLS client for a device at `host`; files are relative to `dir`.
pub fn client(dir: &Path, host: &str, t: &TlsConfig) -> Result<ClientTls, TlsConfigError> {
    let name = t.server_hostname.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
        bad(
            "serverHostname",
            format!("`{name}` is not a host name or an IP address"),
        )
    })?;
    let verify = match &t.cafile {
        Some(ca) => Verify::Roots(roots(dir, ca)?),
        None => Verify::Nothing,
    };
    let config = tls::client_config(verify, cert_pair(dir, t)?).map_err(section_error)?;
    Ok(ClientTls {
        settings: t.clone(),
        server_name,
        config: Arc::new(config),
    })
}

/// The slave mode's TLS server; `certfile` and `keyfile` are required.
pub fn server(dir: &Path, t: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let Some(identity) = cert_pair(dir, t)? else {
        return Err(bad(
            "certfile",
            "a TLS server needs `certfile` and `keyfile`",
        ));
    };
    let client_roots = match &t.cafile {
        Some(ca) => Some(roots(dir, ca)?),
        None => None,
    };
    let config = tls::server_config(identity, client_roots).map_err(section_error)?;
    Ok(Arc::new(config))
}
