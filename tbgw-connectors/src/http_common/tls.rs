//! TLS for the HTTP connectors, built with [`tbgw::tls`]: client configurations with or without
//! server verification and with an optional client certificate, and the server configuration
//! of the REST connector. Paths arrive resolved by the connector
//! ([`tbgw::config::resolve_beside`]: relative to the connector file, `~` expanded).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tbgw::tls::{self, rustls, Identity, Verify};

/// The server side of the REST connector's HTTPS.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let identity = Identity::load(cert, key).map_err(|e| e.to_string())?;
    let mut cfg = tls::server_config(identity, None).map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// How an outgoing HTTPS connection is secured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClientTls {
    /// Do not verify the server certificate (`SSLVerify: false`).
    pub insecure: bool,
    /// A client certificate and key (PEM files) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Builds the rustls client configuration for `opts`. Reads the system's trust store (and the
/// client certificate files) so it is called once per distinct `opts` and cached.
pub fn client_config(opts: &ClientTls) -> Result<Arc<rustls::ClientConfig>, String> {
    let verify = if opts.insecure {
        Verify::Nothing
    } else {
        Verify::Roots(tls::native_roots())
    };
    let identity = match &opts.client_cert {
        Some((cert, key)) => Some(Identity::load(cert, key).map_err(|e| e.to_string())?),
        None => None,
    };
    tls::client_config(verify, identity)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}
