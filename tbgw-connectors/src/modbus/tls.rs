//! Modbus/TCP over TLS (the "Modbus/TCP Security" transport: MBAP frames inside a TLS stream),
//! with rustls: the master's client configuration (`master.slaves[].tls`) and the slave mode's
//! server configuration (`slave.security`).
//!
//! Certificates and keys are read while the configuration is validated, so a missing or
//! unusable file is a configuration error with its key path, not a connection failure.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;

use super::config::TlsConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

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

/// Resolves a path of the configuration: `~/` is the home directory, relative paths are taken
/// from `dir` (the directory of the connector file).
fn resolve(dir: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return Path::new(&home).join(rest);
        }
    }
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        dir.join(path)
    }
}

fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| bad(key, format!("cannot read {}: {e}", path.display())))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|e| bad(key, format!("{}: not a PEM file: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(
            key,
            format!("{}: no certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let pem = std::fs::read(path)
        .map_err(|e| bad("keyfile", format!("cannot read {}: {e}", path.display())))?;
    if let Some(k) = rustls_pemfile::private_key(&mut pem.as_slice()).map_err(|e| {
        bad(
            "keyfile",
            format!("{}: not a PEM file: {e}", path.display()),
        )
    })? {
        return Ok(k);
    }
    let encrypted = pem.windows(9).any(|w| w == b"ENCRYPTED");
    Err(bad(
        "keyfile",
        if encrypted {
            format!(
                "{}: the key is encrypted; tbgw reads unencrypted keys only \
                 (`openssl pkey -in <key> -out <plain key>`)",
                path.display()
            )
        } else {
            format!("{}: no private key in the file", path.display())
        },
    ))
}

fn roots(dir: &Path, cafile: &str) -> Result<rustls::RootCertStore, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs("cafile", &resolve(dir, cafile))? {
        roots
            .add(c)
            .map_err(|e| bad("cafile", format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificate and key pair of a section, when both are set; one without the other is an
/// error.
fn cert_pair(
    dir: &Path,
    t: &TlsConfig,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsConfigError> {
    match (&t.certfile, &t.keyfile) {
        (Some(c), Some(k)) => Ok(Some((
            load_certs("certfile", &resolve(dir, c))?,
            load_key(&resolve(dir, k))?,
        ))),
        (Some(_), None) => Err(bad("keyfile", "`certfile` needs its `keyfile`")),
        (None, Some(_)) => Err(bad("certfile", "`keyfile` needs its `certfile`")),
        (None, None) => Ok(None),
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
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("cafile", e.to_string()))?;
    let builder = match &t.cafile {
        Some(ca) => builder.with_root_certificates(roots(dir, ca)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls_util::AnyServerCert(provider()))),
    };
    let config = match cert_pair(dir, t)? {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| bad("keyfile", format!("certificate and key do not match: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(ClientTls {
        settings: t.clone(),
        server_name,
        config: Arc::new(config),
    })
}

/// The slave mode's TLS server; `certfile` and `keyfile` are required.
pub fn server(dir: &Path, t: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let Some((certs, key)) = cert_pair(dir, t)? else {
        return Err(bad(
            "certfile",
            "a TLS server needs `certfile` and `keyfile`",
        ));
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("certfile", e.to_string()))?;
    let builder = match &t.cafile {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(dir, ca)?),
                provider(),
            )
            .build()
            .map_err(|e| bad("cafile", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad("keyfile", format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(config))
}
