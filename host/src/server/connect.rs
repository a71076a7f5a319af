//! Opening a server connection: TCP, optional TLS (SSLRequest), StartupMessage, then the
//! authentication exchange the server asks for (trust, cleartext, md5, SCRAM-SHA-256, each
//! but trust only if `[pool] server_auth_methods` allows it), up to the first ReadyForQuery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use switchyard_protocol::backend::{
    parse_authentication, parse_backend_key_data, parse_error_fields, parse_parameter_status, tags,
    Authentication,
};
use switchyard_protocol::frame::{split_frame, Frame};
use switchyard_protocol::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{NodeAddr, ServerConn, ServerError, ServerStatements};
use crate::auth::{md5_hash, KeySource, Md5Challenge, ScramKeyClient, ServerSecret, SCRAM_SHA_256};
use crate::config::{ServerAuthMethod, ServerTlsMode};
use crate::net::{ServerTls, Stream};

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
    /// The authentication requests the proxy answers (`[pool] server_auth_methods`).
    pub auth_methods: &'a [ServerAuthMethod],
    pub timeout: Duration,
}

/// Connects and authenticates, within `params.timeout`.
pub async fn connect(params: &ConnectParams<'_>) -> Result<ServerConn, ServerError> {
    let addr = params.addr.clone();
    match tokio::time::timeout(params.timeout, connect_inner(params)).await {
        Ok(result) => result,
        Err(_) => Err(ServerError::ConnectTimeout {
            addr,
            limit: params.timeout,
        }),
    }
}

async fn connect_inner(p: &ConnectParams<'_>) -> Result<ServerConn, ServerError> {
    let addr = p.addr.clone();
    let tcp = TcpStream::connect((&*p.addr.host, p.addr.port))
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
    frontend::encode_startup(&startup, &mut out);
    write(&mut stream, &addr, &out).await?;

    let mut rbuf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramKeyClient> = None;
    let mut params = HashMap::new();
    let mut key = (0, 0);
    loop {
        let frame = read_message(&mut stream, &mut rbuf, &addr).await?;
        let body = frame.body();
        out.clear();
        match frame.tag() {
            tags::AUTHENTICATION => match parse_authentication(body).map_err(|e| protocol(&addr, e))? {
                Authentication::Ok => {}
                Authentication::CleartextPassword => {
                    allowed(p, ServerAuthMethod::Password)?;
                    let ServerSecret::Password(pw, _) = p.secret else {
                        return Err(no_password(p, &addr));
                    };
                    frontend::encode_password(pw.as_bytes(), &mut out);
                }
                Authentication::Md5Password { salt } => {
                    allowed(p, ServerAuthMethod::Md5)?;
                    let stored = match &p.secret {
                        ServerSecret::Password(pw, _) => md5_hash(pw, p.user),
                        ServerSecret::Md5Hash(hash) => hash.to_string(),
                        _ => return Err(no_password(p, &addr)),
                    };
                    frontend::encode_password(Md5Challenge { salt }.expected(&stored).as_bytes(), &mut out);
                }
                Authentication::Sasl { mechanisms } => {
                    allowed(p, ServerAuthMethod::ScramSha256)?;
                    if !mechanisms.contains(&SCRAM_SHA_256) {
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
                    frontend::encode_sasl_initial_response(SCRAM_SHA_256, first.as_bytes(), &mut out);
                    scram = Some(client);
                }
                Authentication::SaslContinue(data) => {
                    let client = scram
                        .as_mut()
                        .ok_or_else(|| protocol(&addr, "SASL continue without SASL start"))?;
                    let last = client.respond(data).await.map_err(|e| protocol(&addr, e))?;
                    frontend::encode_sasl_response(last.as_bytes(), &mut out);
                }
                Authentication::SaslFinal(data) => {
                    let client = scram
                        .as_ref()
                        .ok_or_else(|| protocol(&addr, "SASL final without SASL start"))?;
                    client
                        .verify(data)
                        .map_err(|e| protocol(&addr, format!("server signature invalid: {e}")))?;
                }
                Authentication::Unsupported(code) => {
                    return Err(ServerError::UnsupportedAuth {
                        addr,
                        method: format!("authentication request {code} (Kerberos/GSS/SSPI)"),
                    });
                }
            },
            tags::ERROR_RESPONSE => {
                let fields = parse_error_fields(body).map_err(|e| protocol(&addr, e))?;
                return Err(ServerError::Refused {
                    addr,
                    fields: Box::new(fields),
                });
            }
            tags::PARAMETER_STATUS => {
                let (name, value) = parse_parameter_status(body).map_err(|e| protocol(&addr, e))?;
                params.insert(name, value);
            }
            tags::BACKEND_KEY_DATA => key = parse_backend_key_data(body).map_err(|e| protocol(&addr, e))?,
            tags::NOTICE_RESPONSE => {}
            tags::READY_FOR_QUERY => break,
            _ => return Err(protocol(&addr, "unexpected message during startup")),
        }
        if !out.is_empty() {
            write(&mut stream, &addr, &out).await?;
        }
    }
    let created = Instant::now();
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
        created,
        created_ns: super::nanos_since_origin(created),
        kept_in_epoch: 0,
        home: crate::net::worker::current(),
        counted: Vec::new(),
        listed: None,
    })
}

async fn negotiate_tls(mut tcp: TcpStream, p: &ConnectParams<'_>) -> Result<Stream, ServerError> {
    let addr = p.addr.clone();
    let Some(connector) = p.tls.connector.clone() else {
        return Ok(Stream::Plain(tcp));
    };
    let mut out = BytesMut::new();
    frontend::encode_ssl_request(&mut out);
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
            let name = rustls::pki_types::ServerName::try_from(p.addr.host.to_string()).map_err(|e| {
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

/// Refuses an authentication request `[pool] server_auth_methods` does not list, before
/// anything of the secret is sent.
fn allowed(p: &ConnectParams<'_>, method: ServerAuthMethod) -> Result<(), ServerError> {
    if p.auth_methods.contains(&method) {
        return Ok(());
    }
    Err(ServerError::AuthMethodNotAllowed {
        addr: p.addr.clone(),
        method: method.name(),
    })
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

/// Reads one backend message during startup.
async fn read_message(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    addr: &NodeAddr,
) -> Result<Frame, ServerError> {
    loop {
        if let Some(frame) = split_frame(rbuf, MAX_STARTUP_MESSAGE).map_err(|e| protocol(addr, e))? {
            return Ok(frame);
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
