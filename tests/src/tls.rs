//! A rustls client for tokio-postgres, so that Rust-driver tests can use TLS the way a
//! deployment does: the proxy verified against a CA, a client certificate presented when
//! given, and SCRAM channel binding with the `tls-server-end-point` data of the
//! certificate the proxy presented (SHA-256 of it: the test certificates are signed with
//! ECDSA-SHA256). [`EndPoint::Wrong`] reports other data instead, as a man in the middle
//! relaying a login between two TLS connections would.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

/// The channel binding data the client reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndPoint {
    /// SHA-256 of the certificate the server presented.
    Real,
    /// 32 bytes that are not that.
    Wrong,
}

/// tokio-postgres' `tls` argument: TLS with rustls.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    end_point: EndPoint,
}

fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))
}

impl RustlsConnect {
    /// Verifies the server against the CA in `ca` (PEM); presents `client` (certificate,
    /// key) when given.
    pub fn new(ca: &Path, client: Option<(&Path, &Path)>, end_point: EndPoint) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in pem_certs(ca)? {
            roots.add(cert)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => {
                let data = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut data.as_slice())?
                    .with_context(|| format!("no private key in {}", key.display()))?;
                builder.with_client_auth_cert(pem_certs(cert)?, key)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
            end_point,
        })
    }
}

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsHandshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsHandshake, Self::Error> {
        Ok(RustlsHandshake {
            config: self.config.clone(),
            name: ServerName::try_from(domain)?.to_owned(),
            end_point: self.end_point,
        })
    }
}

/// One connection's handshake.
pub struct RustlsHandshake {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    end_point: EndPoint,
}

impl TlsConnect<Socket> for RustlsHandshake {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, socket)
                .await?;
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
            let end_point = match self.end_point {
                EndPoint::Real => Sha256::digest(&certificate).to_vec(),
                EndPoint::Wrong => vec![0x5a; 32],
            };
            Ok(RustlsStream { stream, end_point })
        })
    }
}

/// A TLS connection and its channel binding data.
pub struct RustlsStream {
    stream: tokio_rustls::client::TlsStream<Socket>,
    end_point: Vec<u8>,
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::tls_server_end_point(self.end_point.clone())
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Connects with `tls`, driving the connection on a background task.
pub async fn connect_tls(
    cfg: &tokio_postgres::Config,
    tls: RustlsConnect,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = cfg.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("tokio-postgres (TLS) connection ended with error: {e}");
        }
    });
    Ok(client)
}
