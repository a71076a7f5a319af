//! Opening a server connection: TCP, optional TLS (SSLRequest), StartupMessage, then the
//! authentication exchange the server asks for (trust, cleartext, md5, SCRAM-SHA-256), up to
//! the first ReadyForQuery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::SCRAM_SHA_256;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use switchyard_protocol::backend::{parse_error_fields, tags, ErrorFields};
use switchyard_protocol::frame::split_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{NodeAddr, ServerConn, ServerError};
use crate::auth::{KeySource, Md5Challenge, ScramKeyClient, ServerSecret};
use crate::config::ServerTlsMode;
use crate::net::{ServerTls, Stream};
use crate::pool::ServerStatements;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Startup-phase messages are small; a larger one means a confused peer.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// Who to log in as, and how.
pub struct ConnectParams<'a> {
    pub addr: &'a NodeAddr,
    pub user: &'a str,
    pub database: &'a str,
    pub secret: ServerSecret<'a>,
    /// Extra startup parameters (application_name, ...).
    pub options: &'a [(String, String)],
    pub tls: &'a ServerTls,
    pub timeout: Duration,
}

/// Connects and authenticates, within `params.timeout`.
pub async fn connect(params: &ConnectParams<'_>) -> Result<ServerConn, ServerError> {
    let addr = params.addr.clone();
    match tokio::time::timeout(params.timeout, connect_inner(params)).await {
        Ok(result) => result,
        Err(_) => Err(ServerError::ConnectTimeout { addr }),
    }
}

async fn connect_inner(p: &ConnectParams<'_>) -> Result<ServerConn, ServerError> {
    let addr = p.addr.clone();
    let tcp = TcpStream::connect((p.addr.host.as_str(), p.addr.port))
        .await
        .map_err(|source| ServerError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true).map_err(|source| ServerError::Io {
        addr: addr.clone(),
        source,
    })?;
    let mut stream = negotiate_tls(tcp, p).await?;

    let mut out = BytesMut::new();
    let mut startup: Vec<(&str, &str)> = vec![("user", p.user), ("database", p.database)];
    startup.extend(p.options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    frontend::startup_message(startup, &mut out).map_err(|e| ServerError::Protocol {
        addr: addr.clone(),
        reason: e.to_string(),
    })?;
    write(&mut stream, &addr, &out).await?;

    let mut rbuf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramKeyClient> = None;
    let mut params = HashMap::new();
    let mut key = (0, 0);
    loop {
        let msg = match read_message(&mut stream, &mut rbuf, &addr).await? {
            Ok(msg) => msg,
            Err(fields) => {
                return Err(ServerError::Refused {
                    addr,
                    fields: Box::new(fields),
                })
            }
        };
        out.clear();
        match msg {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let ServerSecret::Password(pw, _) = p.secret else {
                    return Err(no_password(p, &addr));
                };
                frontend::password_message(pw.as_bytes(), &mut out).map_err(|e| protocol(&addr, e))?;
            }
            Message::AuthenticationMd5Password(body) => {
                let answer = match &p.secret {
                    ServerSecret::Password(pw, _) => postgres_protocol::authentication::md5_hash(
                        p.user.as_bytes(),
                        pw.as_bytes(),
                        body.salt(),
                    ),
                    ServerSecret::Md5Hash(hash) => Md5Challenge { salt: body.salt() }.expected(hash),
                    _ => return Err(no_password(p, &addr)),
                };
                frontend::password_message(answer.as_bytes(), &mut out).map_err(|e| protocol(&addr, e))?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut has_scram = false;
                while let Some(m) = fallible_iterator::FallibleIterator::next(&mut mechanisms)
                    .map_err(|e| protocol(&addr, e))?
                {
                    has_scram |= m == SCRAM_SHA_256;
                }
                if !has_scram {
                    return Err(ServerError::UnsupportedAuth {
                        addr,
                        method: "SASL without SCRAM-SHA-256".into(),
                    });
                }
                let source = match &p.secret {
                    ServerSecret::Password(password, cache) => KeySource::Password { password, cache },
                    ServerSecret::Scram(keys) => KeySource::Keys(keys.clone()),
                    _ => return Err(no_password(p, &addr)),
                };
                let (client, first) = ScramKeyClient::new(source);
                frontend::sasl_initial_response(SCRAM_SHA_256, first.as_bytes(), &mut out)
                    .map_err(|e| protocol(&addr, e))?;
                scram = Some(client);
            }
            Message::AuthenticationSaslContinue(body) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| protocol(&addr, "SASL continue without SASL start"))?;
                let last = client.respond(body.data()).map_err(|e| protocol(&addr, e))?;
                frontend::sasl_response(last.as_bytes(), &mut out).map_err(|e| protocol(&addr, e))?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let client = scram
                    .as_ref()
                    .ok_or_else(|| protocol(&addr, "SASL final without SASL start"))?;
                client
                    .verify(body.data())
                    .map_err(|e| protocol(&addr, format!("server signature invalid: {e}")))?;
            }
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(|e| protocol(&addr, e))?.to_string();
                let value = body.value().map_err(|e| protocol(&addr, e))?.to_string();
                params.insert(name, value);
            }
            Message::BackendKeyData(body) => key = (body.process_id(), body.secret_key()),
            Message::NoticeResponse(_) => {}
            Message::ReadyForQuery(_) => break,
            Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGss
            | Message::AuthenticationSspi => {
                return Err(ServerError::UnsupportedAuth {
                    addr,
                    method: "Kerberos/GSS/SSPI".into(),
                });
            }
            _ => return Err(protocol(&addr, "unexpected message during startup")),
        }
        if !out.is_empty() {
            write(&mut stream, &addr, &out).await?;
        }
    }
    let now = Instant::now();
    Ok(ServerConn {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        stream,
        rbuf,
        addr,
        backend_pid: key.0,
        secret_key: key.1,
        params,
        statements: ServerStatements::default(),
        settings: Default::default(),
        settings_signature: 0,
        created: now,
        last_used: now,
    })
}

async fn negotiate_tls(mut tcp: TcpStream, p: &ConnectParams<'_>) -> Result<Stream, ServerError> {
    let addr = p.addr.clone();
    let Some(connector) = p.tls.connector.clone() else {
        return Ok(Stream::Plain(tcp));
    };
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    tcp.write_all(&out).await.map_err(|source| ServerError::Io {
        addr: addr.clone(),
        source,
    })?;
    let answer = tcp.read_u8().await.map_err(|source| ServerError::Io {
        addr: addr.clone(),
        source,
    })?;
    match answer {
        b'S' => {
            let name = rustls::pki_types::ServerName::try_from(p.addr.host.clone()).map_err(|e| {
                ServerError::Tls {
                    addr: addr.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|source| ServerError::Tls { addr, source })?;
            Ok(Stream::Connected(Box::new(tls)))
        }
        b'N' if p.tls.mode == ServerTlsMode::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(ServerError::TlsRefused { addr }),
        _ => Err(protocol(&addr, "unexpected answer to SSLRequest")),
    }
}

fn no_password(p: &ConnectParams<'_>, addr: &NodeAddr) -> ServerError {
    ServerError::NoPassword {
        addr: addr.clone(),
        user: p.user.to_string(),
    }
}

fn protocol(addr: &NodeAddr, reason: impl ToString) -> ServerError {
    ServerError::Protocol {
        addr: addr.clone(),
        reason: reason.to_string(),
    }
}

async fn write(stream: &mut Stream, addr: &NodeAddr, data: &[u8]) -> Result<(), ServerError> {
    stream.write_all(data).await.map_err(|source| ServerError::Io {
        addr: addr.clone(),
        source,
    })?;
    stream.flush().await.map_err(|source| ServerError::Io {
        addr: addr.clone(),
        source,
    })
}

/// Reads one backend message during startup; an ErrorResponse comes back as its fields.
async fn read_message(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    addr: &NodeAddr,
) -> Result<Result<Message, ErrorFields>, ServerError> {
    loop {
        if let Some(frame) = split_frame(rbuf, MAX_STARTUP_MESSAGE).map_err(|e| protocol(addr, e))? {
            if frame.tag() == tags::ERROR_RESPONSE {
                return parse_error_fields(frame.body())
                    .map(Err)
                    .map_err(|e| protocol(addr, e));
            }
            let mut raw = BytesMut::from(&frame.raw()[..]);
            return match Message::parse(&mut raw).map_err(|e| protocol(addr, e))? {
                Some(msg) => Ok(Ok(msg)),
                None => Err(protocol(addr, "truncated message")),
            };
        }
        let n = stream.read_buf(rbuf).await.map_err(|source| ServerError::Io {
            addr: addr.clone(),
            source,
        })?;
        if n == 0 {
            return Err(ServerError::Closed { addr: addr.clone() });
        }
    }
}
