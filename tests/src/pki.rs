//! Certificates for TLS tests, made with the `openssl` CLI in a scratch directory: a
//! self-signed server certificate, a CA and the server and client certificates it
//! issues, for `IP:127.0.0.1` and `DNS:localhost`; client certificates carry the user
//! name as their common name.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::tools::run_command;
use crate::{env, scratch};

/// A certificate and its private key (PEM files).
#[derive(Clone, Debug)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A scratch directory of certificates made with the `openssl` CLI.
pub struct Pki {
    pub dir: PathBuf,
}

/// Names every server certificate here is valid for.
pub const SAN: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost";

impl Pki {
    pub fn new() -> Result<Self> {
        Ok(Self {
            dir: scratch::fresh_dir("tls")?,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn openssl(&self, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new("openssl");
        cmd.args(args).current_dir(&self.dir);
        let out = run_command(&mut cmd, None, Duration::from_secs(60)).with_context(|| {
            "running the openssl CLI (install it with `scripts/lib.sh install` or `apt-get install openssl`)"
        })?;
        out.ensure_success()?;
        Ok(())
    }

    /// A self-signed server certificate, the way the PostgreSQL docs make
    /// one (`openssl req -x509`; OpenSSL marks it `CA:TRUE`), so it can also
    /// serve as its own root for `verify-full`.
    pub fn self_signed(&self, name: &str) -> Result<CertKey> {
        let ck = CertKey {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN=localhost/O=switchyard tests {name}"),
            "-addext",
            SAN,
            "-keyout",
            &ck.key.to_string_lossy(),
            "-out",
            &ck.cert.to_string_lossy(),
        ])?;
        Ok(ck)
    }

    /// A certificate authority (self-signed, `CA:TRUE`).
    pub fn ca(&self, name: &str) -> Result<CertKey> {
        let ck = CertKey {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            &format!("/CN=switchyard tests {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &ck.key.to_string_lossy(),
            "-out",
            &ck.cert.to_string_lossy(),
        ])?;
        Ok(ck)
    }

    /// A server certificate (`CA:FALSE`, serverAuth, for [`SAN`]) issued by `ca`.
    pub fn issue(&self, ca: &CertKey, name: &str) -> Result<CertKey> {
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n{SAN}\n"
        );
        self.sign(
            ca,
            name,
            &format!("/CN=localhost/O=switchyard tests {name}"),
            &ext,
        )
    }

    /// A client certificate (`CA:FALSE`, clientAuth) for `user` (its common name) issued by
    /// `ca`, its key readable by us alone, as libpq insists.
    pub fn client(&self, ca: &CertKey, name: &str, user: &str) -> Result<CertKey> {
        let ext = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                   extendedKeyUsage=clientAuth\n";
        let ck = self.sign(ca, name, &format!("/O=switchyard tests {name}/CN={user}"), ext)?;
        env::set_mode(&ck.key, 0o600)?;
        Ok(ck)
    }

    /// A certificate for `subject` with the extensions `ext`, issued by `ca`.
    pub fn sign(&self, ca: &CertKey, name: &str, subject: &str, ext: &str) -> Result<CertKey> {
        let ck = CertKey {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        let csr = self.path(&format!("{name}.csr"));
        let ext_file = self.path(&format!("{name}.ext"));
        std::fs::write(&ext_file, ext)?;
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &ck.key.to_string_lossy(),
            "-out",
            &csr.to_string_lossy(),
        ])?;
        let serial = format!(
            "0x{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
        );
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr.to_string_lossy(),
            "-CA",
            &ca.cert.to_string_lossy(),
            "-CAkey",
            &ca.key.to_string_lossy(),
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            &ext_file.to_string_lossy(),
            "-out",
            &ck.cert.to_string_lossy(),
        ])?;
        Ok(ck)
    }

    /// Make everything readable by the PostgreSQL OS user, with private
    /// keys owned by it and mode 0600 (the server refuses laxer keys).
    pub fn hand_to_postgres(&self) -> Result<()> {
        env::chown_to_pg(&self.dir)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let mode = if path.extension().is_some_and(|e| e == "key") {
                0o600
            } else {
                0o644
            };
            env::set_mode(&path, mode)?;
        }
        Ok(())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            scratch::remove_dir(&self.dir);
        }
    }
}
