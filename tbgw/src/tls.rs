//! TLS building blocks shared by the ThingsBoard client and every connector: PEM files loaded
//! into [`rustls`] types with errors that name the file, rustls client and server
//! configurations, and the two relaxed server-certificate verifiers upstream's options ask for.
//!
//! # Where a relative certificate path points
//!
//! One rule for every file that names a certificate or key, `tb_gateway.json` and each
//! connector file alike (see [`crate::config::resolve_path`]):
//!
//! * an absolute path is used as written;
//! * `~` or a leading `~/` is the user's home directory (`$HOME`);
//! * any other path is relative to the **directory of the file that names it**: `caCert` in
//!   `config/tb_gateway.json` means `config/<caCert>`; `pathToCACert` in
//!   `config/mqtt/broker.json` means `config/mqtt/<pathToCACert>`. The working directory of
//!   the process never matters.
//!
//! Upstream resolves relative paths differently per component (the ThingsBoard client tries the
//! config directory and then the working directory; most connectors hand the path to their
//! library, so it is relative to the working directory); `docs/COMPATIBILITY.md` says so.
//!
//! Use [`rustls`] re-exported from here, so a connector's configuration types are the ones this
//! module builds. Every configuration uses the aws-lc-rs crypto provider ([`provider`]) and
//! the safe default protocol versions (TLS 1.2 and 1.3).
//!
//! ```no_run
//! use std::path::Path;
//! use tbgw::config::resolve_beside;
//! use tbgw::tls::{client_config, load_roots, Identity, Verify};
//!
//! # fn main() -> Result<(), tbgw::tls::TlsError> {
//! let file = Path::new("config/my_connector.json");
//! let roots = load_roots(&resolve_beside(file, "ca.pem"))?;
//! let identity = Identity::load(
//!     &resolve_beside(file, "client.pem"),
//!     &resolve_beside(file, "client.key"),
//! )?;
//! let config = client_config(Verify::Roots(roots), Some(identity))?;
//! # let _ = config;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a TLS file or configuration cannot be used. The text names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds no item of the kind needed.
    #[error("`{}` {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate and a private key that do not belong together (or that rustls cannot use).
    #[error("certificate `{}` and key `{}` do not form a usable pair: {source}", cert.display(), key.display())]
    KeyPair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// The one file at fault, when there is one (for a certificate and key that do not
    /// match, none).
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::Read { path, .. } | TlsError::Pem { path, .. } => Some(path),
            TlsError::KeyPair { .. } | TlsError::Rustls(_) => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Every certificate of a PEM file, in order. A file without any certificate is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, format!("is not a valid PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file. An encrypted key is refused
/// with a hint on how to decrypt it.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    if let Some(key) = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| pem_error(path, format!("is not a valid PEM file: {e}")))?
    {
        return Ok(key);
    }
    if pem.windows(9).any(|w| w == b"ENCRYPTED") {
        Err(pem_error(
            path,
            "holds an encrypted key; tbgw reads unencrypted keys only \
             (`openssl pkey -in <key> -out <plain key>`)",
        ))
    } else {
        Err(pem_error(path, "holds no PEM private key"))
    }
}

/// The private key of a PEM file that may be protected by `password`, as Python's
/// `ssl.SSLContext.load_cert_chain(cert, key, password)` reads upstream's key files:
///
/// * an unencrypted key (PKCS#8, PKCS#1 or SEC1) is read as [`load_private_key`] does, and the
///   password is not needed (Python ignores it too);
/// * an `ENCRYPTED PRIVATE KEY` (PKCS#8 with PBES2: PBKDF2 or scrypt, AES-CBC; what
///   `openssl genpkey -aes256` and `openssl pkcs8 -topk8 -v2 aes-256-cbc` write) is decrypted
///   with `password` — in builds with the `encrypted-keys` feature; without it the file is
///   refused with that reason;
/// * the legacy OpenSSL form (`Proc-Type: 4,ENCRYPTED` headers, MD5 key derivation) is refused
///   with the `openssl pkcs8 -topk8` command that converts it.
///
/// A wrong password and a missing one are errors that name the file.
pub fn load_private_key_with_password(
    path: &Path,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    let text = String::from_utf8_lossy(&pem);
    // Checked first: the PEM reader would take the encrypted bytes for a key.
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(pem_error(
            path,
            "holds a key in OpenSSL's legacy encrypted form, which tbgw does not read; \
             convert it to PKCS#8 with the same password: \
             `openssl pkcs8 -topk8 -v2 aes-256-cbc -in <key> -out <new key>`",
        ));
    }
    if let Some(key) = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| pem_error(path, format!("is not a valid PEM file: {e}")))?
    {
        return Ok(key);
    }
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    let Some(start) = text.find(BEGIN) else {
        return Err(pem_error(path, "holds no PEM private key"));
    };
    let Some(len) = text[start..].find(END) else {
        return Err(pem_error(
            path,
            "holds an unterminated ENCRYPTED PRIVATE KEY",
        ));
    };
    let block = &text[start..start + len + END.len()];
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Err(pem_error(
            path,
            "holds an encrypted key and no password is configured for it",
        ));
    };
    decrypt_pkcs8(path, block, password)
}

#[cfg(feature = "encrypted-keys")]
fn decrypt_pkcs8(
    path: &Path,
    block: &str,
    password: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    let (_, der) = pkcs8::der::pem::decode_vec(block.as_bytes()).map_err(|e| {
        pem_error(
            path,
            format!("holds an ENCRYPTED PRIVATE KEY that is not valid PEM: {e}"),
        )
    })?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| {
        pem_error(
            path,
            format!("holds an ENCRYPTED PRIVATE KEY that is not PKCS#8: {e}"),
        )
    })?;
    let plain = info.decrypt(password).map_err(|e| {
        pem_error(
            path,
            format!(
                "holds an encrypted key that cannot be decrypted (wrong password, or an \
                 encryption scheme other than PBES2 with AES-CBC): {e}"
            ),
        )
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        plain.as_bytes().to_vec(),
    )))
}

#[cfg(not(feature = "encrypted-keys"))]
fn decrypt_pkcs8(
    path: &Path,
    _block: &str,
    _password: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    Err(pem_error(
        path,
        "holds an encrypted key, and this build cannot decrypt keys (feature \
         `encrypted-keys` of tbgw); decrypt it: `openssl pkey -in <key> -out <plain key>`",
    ))
}

/// A root store with every certificate of a PEM file (a CA bundle).
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error(path, format!("holds an unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The operating system's trusted roots. A system certificate rustls cannot parse is skipped,
/// as browsers do; a system without any gives an empty store (every handshake then fails with
/// an unknown-issuer error).
pub fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// The crypto provider every configuration of this module uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and its private key: the client certificate of mutual TLS, or a
/// server's own certificate.
#[derive(Debug)]
pub struct Identity {
    /// The certificate chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: PrivateKeyDer<'static>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Identity {
    /// Reads a certificate chain and its key from two PEM files (they may be the same file).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            certs: load_certs(cert)?,
            key: load_private_key(key)?,
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        })
    }

    /// As [`Identity::load`], with the key read by [`load_private_key_with_password`]
    /// (upstream's `password` beside `cert` and `key`).
    pub fn load_with_password(
        cert: &Path,
        key: &Path,
        password: Option<&str>,
    ) -> Result<Identity, TlsError> {
        Ok(Identity {
            certs: load_certs(cert)?,
            key: load_private_key_with_password(key, password)?,
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        })
    }

    fn pair_error(&self, source: rustls::Error) -> TlsError {
        TlsError::KeyPair {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            source,
        }
    }
}

/// How a client checks the server's certificate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Verify {
    /// The chain against these roots and the host name: the safe default.
    Roots(RootCertStore),
    /// The chain against these roots, any host name (the MQTT connector's `insecure: true`,
    /// which upstream maps to paho's `tls_insecure_set`); see [`AnyHostName`].
    RootsAnyHostName(RootCertStore),
    /// No check of the server's certificate at all (HTTP `SSLVerify: false`, Modbus/TCP TLS
    /// without `cafile`); see [`AnyServerCert`].
    Nothing,
}

/// A rustls client configuration: the server checked as `verify` says, with `identity` as the
/// client certificate for mutual TLS.
pub fn client_config(
    verify: Verify,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match verify {
        Verify::Roots(roots) => builder.with_root_certificates(roots),
        Verify::RootsAnyHostName(roots) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName::new(roots)?)),
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert::new())),
    };
    match identity {
        Some(id) => {
            let Identity { certs, key, .. } = &id;
            builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| id.pair_error(e))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A rustls server configuration with `identity` as the server's certificate; clients must
/// present a certificate that chains to `client_roots` when given (mutual TLS), else none is
/// asked for.
pub fn server_config(
    identity: Identity,
    client_roots: Option<RootCertStore>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let Identity { certs, key, .. } = &identity;
    builder
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| identity.pair_error(e))
}

/// Accepts any server certificate: HTTP `SSLVerify: false` and Modbus/TCP TLS without
/// `cafile`, as upstream does. The handshake signatures are still verified, so the session is
/// bound to the certificate the server showed; only who that server is goes unchecked.
#[derive(Debug)]
pub struct AnyServerCert(Arc<CryptoProvider>);

impl AnyServerCert {
    /// With this module's [`provider`].
    pub fn new() -> AnyServerCert {
        AnyServerCert(provider())
    }
}

impl Default for AnyServerCert {
    fn default() -> Self {
        AnyServerCert::new()
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain like the WebPKI verifier but accepts a certificate that does not name
/// the host (the MQTT connector's `insecure: true`).
#[derive(Debug)]
pub struct AnyHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl AnyHostName {
    /// Checks chains against `roots`.
    pub fn new(roots: RootCertStore) -> Result<AnyHostName, TlsError> {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(AnyHostName { inner })
    }
}

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let e = load_certs(Path::new("/nonexistent-tbgw/ca.pem")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, TlsError::Read { .. }), "{e:?}");
        assert!(text.contains("/nonexistent-tbgw/ca.pem"), "{text}");
    }

    #[test]
    fn garbage_is_not_a_certificate_nor_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.pem");
        std::fs::write(&path, "this is not PEM at all\n").unwrap();
        for e in [
            load_certs(&path).unwrap_err(),
            load_private_key(&path).unwrap_err(),
            load_roots(&path).unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(matches!(e, TlsError::Pem { .. }), "{e:?}");
            assert!(text.contains("garbage.pem"), "{text}");
        }
        assert!(load_certs(&path)
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate"));
        assert!(load_private_key(&path)
            .unwrap_err()
            .to_string()
            .contains("no PEM private key"));
    }

    #[test]
    fn a_broken_pem_block_is_not_valid_pem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n%%%% not base64 %%%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = load_certs(&path).unwrap_err().to_string();
        assert!(
            text.contains("broken.pem") && text.contains("not a valid PEM"),
            "{text}"
        );
    }

    #[test]
    fn an_encrypted_key_gets_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enc.key");
        std::fs::write(
            &path,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let text = load_private_key(&path).unwrap_err().to_string();
        assert!(
            text.contains("enc.key") && text.contains("encrypted"),
            "{text}"
        );
    }

    #[test]
    fn configurations_build_from_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::test_util::Pki::generate(dir.path(), "");
        let roots = load_roots(&pki.ca_cert()).unwrap();
        let client = Identity::load(&pki.client_cert(), &pki.client_key()).unwrap();
        client_config(Verify::Roots(roots.clone()), Some(client)).unwrap();
        client_config(Verify::RootsAnyHostName(roots.clone()), None).unwrap();
        client_config(Verify::Nothing, None).unwrap();
        let server = Identity::load(&pki.server_cert(), &pki.server_key()).unwrap();
        server_config(server, Some(roots)).unwrap();
        // The client's certificate with the server's key.
        let mismatched = Identity::load(&pki.client_cert(), &pki.server_key()).unwrap();
        let e = server_config(mismatched, None).unwrap_err();
        assert!(matches!(e, TlsError::KeyPair { .. }), "{e:?}");
    }

    /// `openssl <args>` in `dir`.
    fn openssl(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn encrypted_keys_need_their_password_and_legacy_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::test_util::Pki::generate(dir.path(), "");
        let plain = pki.server_key();
        let plain = plain.to_str().unwrap();
        for (name, scheme) in [("aes.key", "-v2"), ("scrypt.key", "-scrypt")] {
            let mut args = vec!["pkcs8", "-topk8", "-in", plain, "-out", name];
            args.extend(match scheme {
                "-v2" => vec!["-v2", "aes-256-cbc"],
                _ => vec!["-scrypt"],
            });
            args.extend(["-passout", "pass:s3cret"]);
            openssl(dir.path(), &args);
        }
        openssl(
            dir.path(),
            &[
                "ec",
                "-in",
                plain,
                "-aes256",
                "-passout",
                "pass:s3cret",
                "-out",
                "legacy.key",
            ],
        );
        let cert = pki.server_cert();
        let aes = dir.path().join("aes.key");
        // A plain key needs no password and ignores one, as Python's ssl module does.
        Identity::load_with_password(&cert, &pki.server_key(), Some("unused")).unwrap();
        let missing = load_private_key_with_password(&aes, None)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("aes.key") && missing.contains("no password"),
            "{missing}"
        );
        let legacy = load_private_key_with_password(&dir.path().join("legacy.key"), Some("s3cret"))
            .unwrap_err()
            .to_string();
        assert!(
            legacy.contains("legacy") && legacy.contains("openssl pkcs8 -topk8"),
            "{legacy}"
        );
        #[cfg(feature = "encrypted-keys")]
        {
            for name in ["aes.key", "scrypt.key"] {
                let id =
                    Identity::load_with_password(&cert, &dir.path().join(name), Some("s3cret"))
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                // The decrypted key is the certificate's.
                server_config(id, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            let wrong = load_private_key_with_password(&aes, Some("wrong"))
                .unwrap_err()
                .to_string();
            assert!(
                wrong.contains("aes.key") && wrong.contains("cannot be decrypted"),
                "{wrong}"
            );
        }
        #[cfg(not(feature = "encrypted-keys"))]
        {
            let e = load_private_key_with_password(&aes, Some("s3cret"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("encrypted-keys"), "{e}");
        }
    }
}
