//! rustls configurations (ring provider): the acceptor for clients (with client
//! certificates checked against `tls_client_ca`) and the connector for servers, following
//! libpq's sslmode semantics for the latter.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Stream;

use crate::config::ServerTlsMode;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: no {what} found in PEM file")]
    Empty { path: String, what: &'static str },
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Client-facing TLS: the acceptor, our certificate's channel binding data, and what
/// client certificates are checked against.
pub struct ClientTls {
    pub acceptor: TlsAcceptor,
    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS; `None` when our certificate's
    /// signature algorithm defines no hash for it (then -PLUS is not offered).
    pub end_point: Option<Vec<u8>>,
    /// `tls_client_ca`: the roots a client certificate must lead to.
    client_roots: Option<Arc<dyn ClientCertVerifier>>,
}

/// What a client's TLS connection proves about who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// A plaintext connection, no certificate sent, or none asked for (no `tls_client_ca`).
    None,
    /// A certificate that does not lead to `tls_client_ca`; why.
    Untrusted(String),
    /// A certificate verified against `tls_client_ca`, and its subject's common name.
    Trusted { common_name: Option<String> },
}

impl ClientTls {
    /// Acceptor from a PEM certificate chain and key; with `client_ca`, clients are asked
    /// for a certificate (not required: password users need none).
    pub fn new(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ClientTls, TlsError> {
        let certs = read_certs(cert)?;
        let end_point = super::cert::tls_server_end_point(&certs[0]);
        let key_data = std::fs::read(key).map_err(|source| TlsError::Read {
            path: key.display().to_string(),
            source,
        })?;
        let key_der = rustls_pemfile::private_key(&mut key_data.as_slice())
            .map_err(|source| TlsError::Read {
                path: key.display().to_string(),
                source,
            })?
            .ok_or_else(|| TlsError::Empty {
                path: key.display().to_string(),
                what: "private key",
            })?;
        let client_roots = match client_ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert)?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
                Some(verifier)
            }
            None => None,
        };
        let builder =
            rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
        let config = match &client_roots {
            Some(roots) => builder.with_client_cert_verifier(Arc::new(DeferredClientVerifier(roots.clone()))),
            None => builder.with_no_client_auth(),
        }
        .with_single_cert(certs, key_der)?;
        Ok(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            end_point,
            client_roots,
        })
    }

    /// What `stream`'s client certificate proves: its chain is verified here, against
    /// `tls_client_ca`, so that an untrusted certificate is refused with a Postgres error
    /// at authentication instead of a TLS alert at the handshake.
    pub fn client_cert(&self, stream: &Stream) -> ClientCert {
        // Without `tls_client_ca` no certificate is asked for, so none is sent.
        let (Stream::Accepted(tls), Some(roots)) = (stream, &self.client_roots) else {
            return ClientCert::None;
        };
        let Some((end_entity, intermediates)) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.split_first())
        else {
            return ClientCert::None;
        };
        match roots.verify_client_cert(end_entity, intermediates, UnixTime::now()) {
            Ok(_) => ClientCert::Trusted {
                common_name: super::cert::common_name(end_entity),
            },
            Err(e) => ClientCert::Untrusted(e.to_string()),
        }
    }
}

/// Asks for a client certificate and checks the client's proof that it holds the key (the
/// handshake signature), but accepts any chain: [`ClientTls::client_cert`] verifies it
/// after the handshake, before anything relies on it.
#[derive(Debug)]
struct DeferredClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// How the proxy secures its connections to servers.
#[derive(Clone)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    pub connector: Option<TlsConnector>,
}

/// Builds the connector for `mode`: verify-full checks the chain and host name against the
/// given CA (or the bundled web roots); prefer/require encrypt without verifying, as libpq does.
pub fn server_tls_connector(mode: ServerTlsMode, ca: Option<&Path>) -> Result<ServerTls, TlsError> {
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match mode {
        ServerTlsMode::Disable => {
            return Ok(ServerTls {
                mode,
                connector: None,
            })
        }
        ServerTlsMode::Prefer | ServerTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        ServerTlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let mut pinned = Vec::new();
            match ca {
                Some(path) => {
                    for cert in read_certs(path)? {
                        roots.add(cert.clone())?;
                        pinned.push(cert);
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CaFileVerifier { webpki, pinned }))
                .with_no_client_auth()
        }
    };
    Ok(ServerTls {
        mode,
        connector: Some(TlsConnector::from(Arc::new(config))),
    })
}

/// `verify-full`: the chain must lead to a configured root and name the host. As with libpq,
/// a self-signed server certificate listed in `server_tls_ca` itself is accepted (webpki
/// alone refuses a CA certificate as an end entity), still checked against the host name.
#[derive(Debug)]
struct CaFileVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(e) if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) => {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity).map_err(|_| e)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// libpq's `sslmode=require`: encryption without authentication of the server.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
