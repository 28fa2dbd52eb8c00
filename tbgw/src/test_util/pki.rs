//! Certificates for TLS tests, made with the `openssl` command-line tool.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA with a server certificate for `127.0.0.1`/`localhost` and a client certificate, all
/// EC P-256, written to a folder: `<prefix>ca.crt`, `<prefix>server.{crt,key}`,
/// `<prefix>client.{crt,key}`.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    prefix: String,
}

impl Pki {
    /// Generates the files in `dir`, names starting with `prefix` (so one folder can hold
    /// several unrelated CAs).
    ///
    /// # Panics
    /// When `openssl` is missing or fails (tests only).
    pub fn generate(dir: &Path, prefix: &str) -> Pki {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ca_key = format!("{prefix}ca.key");
        let ca_crt = format!("{prefix}ca.crt");
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
            "-days",
            "2",
            "-subj",
            "/CN=tbgw test CA",
        ]);
        run(&a);
        let ext = format!("{prefix}san.ext");
        std::fs::write(
            dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("write san.ext");
        for name in ["server", "client"] {
            let key = format!("{prefix}{name}.key");
            let csr = format!("{prefix}{name}.csr");
            let crt = format!("{prefix}{name}.crt");
            let subj = format!("/CN={name}");
            let mut r = vec!["req"];
            r.extend(ec);
            r.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&r);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Pki {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
        }
    }

    /// Refers to files a previous [`Pki::generate`] wrote.
    pub fn existing(dir: &Path, prefix: &str) -> Pki {
        Pki {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}{name}", self.prefix))
    }

    /// The CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.file("ca.crt")
    }
    /// The server certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.file("server.crt")
    }
    /// The server key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }
    /// The client certificate (PEM).
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.crt")
    }
    /// The client key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    /// mosquitto listener lines for a TLS listener with this PKI (append after `listener`).
    pub fn mosquitto_tls(&self, require_client_cert: bool) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_client_cert}\n",
            self.ca_cert().display(),
            self.server_cert().display(),
            self.server_key().display()
        )
    }
}
