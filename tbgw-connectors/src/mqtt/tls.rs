//! TLS to the source broker (`broker.security.type: certificates`), built with [`tbgw::tls`]:
//! the CA (the system roots when `pathToCACert` is absent), an optional client certificate,
//! and `insecure` mode.
//!
//! `insecure: true` behaves like paho's `tls_insecure_set(True)`, which upstream calls: the
//! broker's certificate chain is still verified against the CA, only the check that the
//! certificate names the host is skipped ([`tbgw::tls::AnyHostName`]).
//!
//! Relative paths are relative to the connector file, `~` is the home directory
//! ([`tbgw::config::resolve_path`]).

use std::path::Path;

use tbgw::config::resolve_beside;
use tbgw::tls::{self, rustls, Identity, Verify};

use super::config::{BrokerConfig, BrokerSecurity};

pub use tbgw::tls::TlsError;

/// `broker` with its certificate and key paths resolved beside `file`, the connector file.
pub fn with_resolved_paths(file: &Path, mut broker: BrokerConfig) -> BrokerConfig {
    let s = &mut broker.security;
    for p in [
        &mut s.path_to_ca_cert,
        &mut s.path_to_client_cert,
        &mut s.path_to_private_key,
    ]
    .into_iter()
    .flatten()
    {
        *p = resolve_beside(file, p).to_string_lossy().into_owned();
    }
    broker
}

/// Builds the rustls client configuration for `security` (reads the files).
pub fn client_config(security: &BrokerSecurity) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match &security.path_to_ca_cert {
        Some(path) => tls::load_roots(Path::new(path))?,
        None => tls::native_roots(),
    };
    let verify = if security.insecure {
        Verify::RootsAnyHostName(roots)
    } else {
        Verify::Roots(roots)
    };
    let identity = match (&security.path_to_client_cert, &security.path_to_private_key) {
        (Some(cert), Some(key)) => Some(Identity::load(Path::new(cert), Path::new(key))?),
        _ => None,
    };
    tls::client_config(verify, identity)
}
