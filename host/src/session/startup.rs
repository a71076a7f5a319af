//! A client's first seconds: SSLRequest/GSSENCRequest, CancelRequest, StartupMessage,
//! `client_tls` and the `auth_hba_file` rules, authentication (SCRAM-SHA-256, -PLUS with
//! channel binding on TLS, md5, a password in clear, or a client certificate), then the
//! login messages (ParameterStatus, BackendKeyData, ReadyForQuery).
//!
//! Unknown users go through the same exchange as configured ones, against made-up
//! credentials (`auth::Decoys`: the same method and iteration count, a salt of their own,
//! stable per name), and fail with the same 28P01 as a wrong password, so the proxy does not
//! reveal which users exist.

use std::sync::Arc;

use bytes::BytesMut;
use switchyard_protocol::backend::{self, ErrorFields, TransactionStatus};
use switchyard_protocol::frame::split_frame;
use switchyard_protocol::frontend::{self, decode_password, decode_sasl_initial_response, StartupPacket};
use switchyard_protocol::sqlstate;
use switchyard_protocol::PROTOCOL_VERSION_3_0;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SessionError;
use crate::auth::hba::{Connection, HbaMethod};
use crate::auth::{
    Binding, Md5Challenge, ScramError, ScramExchange, UserAuth, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use crate::cancel::CancelRegistration;
use crate::config::{ClientAuthMethod, ClientTlsMode};
use crate::net::{ClientCert, Peer, Stream};
use crate::pool::Pool;
use crate::state::ProxyState;

/// Authentication messages are small; this bounds what an unauthenticated peer can make us buffer.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// Parameters a server reports that the client's own startup values override.
const CLIENT_REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
];

/// Where an authenticated client's queries go.
pub enum Destination {
    Pool(Arc<Pool>),
    Admin(ConsoleRole),
}

/// What a user may do on the admin console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRole {
    /// `[admin] users`: every command.
    Admin,
    /// `[admin] stats_users`: `SHOW` commands only.
    Stats,
}

/// An authenticated client, ready for queries.
pub struct LoggedIn {
    pub stream: Stream,
    /// Bytes the client sent after its last login message.
    pub buf: BytesMut,
    pub user: Arc<UserAuth>,
    pub database: String,
    pub destination: Destination,
    pub params: Vec<(String, String)>,
    pub cancel: CancelRegistration,
    /// What a client handed over by the process this one took over from brings beyond a
    /// login (`handoff`); `None` for a client that logged in here.
    pub carried: Option<Box<super::handoff::Carried>>,
}

/// Runs the startup phase; `None` when the connection was a cancel request or closed early.
/// `deadline` is when `client_login_timeout` runs out (the caller stops the whole phase
/// then): a wait for the pool's first server that would outlast it ends in a FATAL the
/// client is sent first.
pub async fn handshake(
    mut stream: Stream,
    peer: Peer,
    state: &ProxyState,
    deadline: tokio::time::Instant,
) -> Result<Option<LoggedIn>, (Option<Stream>, SessionError)> {
    let mut buf = BytesMut::with_capacity(1024);
    // Each kind of encryption is negotiated once, as Postgres allows: GSSENCRequest
    // answered 'N' may be followed by SSLRequest (libpq's gssencmode=prefer), but a second
    // request of a kind, or any once TLS is on, is a protocol violation.
    let (mut ssl_asked, mut gss_asked) = (false, false);
    let (version, params) = loop {
        let packet = match read_startup(&mut stream, &mut buf).await {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(e) => return Err((Some(stream), e)),
        };
        let repeated = match packet {
            StartupPacket::SslRequest => std::mem::replace(&mut ssl_asked, true),
            StartupPacket::GssEncRequest => std::mem::replace(&mut gss_asked, true),
            _ => false,
        };
        if repeated {
            return Err((
                Some(stream),
                fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    "encryption was already negotiated on this connection: a second SSLRequest or GSSENCRequest is not allowed",
                ),
            ));
        }
        match packet {
            StartupPacket::SslRequest => {
                if !buf.is_empty() {
                    // Bytes after SSLRequest before our answer would be trusted as if encrypted.
                    return Err((
                        Some(stream),
                        fatal(
                            sqlstate::PROTOCOL_VIOLATION,
                            "received unencrypted data after SSL request",
                        ),
                    ));
                }
                // TLS over a Unix-domain socket would protect nothing the socket file's
                // permissions do not: answered 'N' there, as without a certificate.
                let tls = match &state.tls {
                    Some(tls) if peer != Peer::Unix => tls,
                    _ => {
                        if let Err(e) = stream.write_all(b"N").await {
                            return Err((None, SessionError::ClientIo(e)));
                        }
                        continue;
                    }
                };
                let Stream::Plain(mut tcp) = stream else {
                    unreachable!("a TCP client's first SSLRequest: a second one was refused above")
                };
                if let Err(e) = tcp.write_all(b"S").await {
                    return Err((None, SessionError::ClientIo(e)));
                }
                stream = match tls.acceptor.accept(tcp).await {
                    Ok(tls) => Stream::Accepted(Box::new(tls)),
                    Err(e) => return Err((None, SessionError::TlsHandshake(e))),
                };
                gss_asked = true;
            }
            StartupPacket::GssEncRequest => {
                if let Err(e) = stream.write_all(b"N").await {
                    return Err((None, SessionError::ClientIo(e)));
                }
            }
            StartupPacket::Cancel {
                process_id,
                secret_key,
            } => {
                // Allowed in plaintext whatever `client_tls` says: libpq sends cancels
                // unencrypted, and the key is the only secret in one.
                state.cancels.cancel(process_id, secret_key).await;
                return Ok(None);
            }
            StartupPacket::Startup { protocol, params } => break (protocol, params),
        }
    };
    // `require` is about the network: a Unix-domain socket never leaves the machine.
    if state.config.proxy.client_tls() == ClientTlsMode::Require && !stream.is_tls() && peer != Peer::Unix {
        return Err((
            Some(stream),
            SessionError::Fatal(Box::new(
                ErrorFields::fatal(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "this proxy accepts only TLS connections (client_tls = require)",
                )
                .with_hint("connect with sslmode=require (or verify-full)"),
            )),
        ));
    }
    match login(&mut stream, &mut buf, state, peer, version, params, deadline).await {
        Ok(logged_in) => Ok(Some(logged_in(stream, buf))),
        Err(e) => Err((Some(stream), e)),
    }
}

fn fatal(code: &str, message: impl Into<String>) -> SessionError {
    SessionError::fatal(code, message)
}

async fn read_startup(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<StartupPacket>, SessionError> {
    loop {
        if let Some(p) = frontend::decode_startup(buf)? {
            return Ok(Some(p));
        }
        if stream.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Ok(None);
        }
    }
}

/// Reads one tagged message of the authentication phase, which must be a 'p'.
async fn read_auth_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<bytes::Bytes, SessionError> {
    loop {
        if let Some(frame) = split_frame(buf, MAX_AUTH_MESSAGE)? {
            if frame.tag() != frontend::tags::PASSWORD {
                return Err(fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!(
                        "expected a password message, got {}",
                        frontend::FrontendMessage::tag_name(frame.tag())
                    ),
                ));
            }
            return Ok(frame.body_bytes());
        }
        if stream.read_buf(buf).await.map_err(SessionError::ClientIo)? == 0 {
            return Err(SessionError::ClientIo(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

async fn send(stream: &mut Stream, out: &mut BytesMut) -> Result<(), SessionError> {
    stream.write_all(out).await.map_err(SessionError::ClientIo)?;
    stream.flush().await.map_err(SessionError::ClientIo)?;
    out.clear();
    Ok(())
}

/// Authenticates and logs in, by `deadline` (see [`handshake`]); returns a constructor for
/// the final state, which needs the stream back.
async fn login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    state: &ProxyState,
    peer: Peer,
    version: u32,
    params: Vec<(String, String)>,
    deadline: tokio::time::Instant,
) -> Result<impl FnOnce(Stream, BytesMut) -> LoggedIn, SessionError> {
    let mut out = BytesMut::with_capacity(512);
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let user_name = get("user").ok_or_else(|| {
        fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let database = get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user_name.clone());
    let proxy = state.proxy();
    if database != crate::config::ADMIN_DATABASE
        && state.clients.load(std::sync::atomic::Ordering::Relaxed)
            > proxy.max_client_conn - proxy.admin_reserved_conn
    {
        return Err(SessionError::Fatal(Box::new(
            ErrorFields::fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already")
                .with_detail(format!(
                    "The last {} of max_client_conn ({}) are reserved for the admin console.",
                    proxy.admin_reserved_conn, proxy.max_client_conn
                )),
        )));
    }
    if get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        return Err(fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported by switchyard",
        ));
    }
    if let Some(hint) = super::params::proxy_setting(&params, "switchyard.route") {
        super::route::parse_hint(&hint).map_err(|e| SessionError::Fatal(Box::new(e)))?;
    }
    let unrecognized: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.as_str())
        .collect();
    if version != PROTOCOL_VERSION_3_0 || !unrecognized.is_empty() {
        backend::negotiate_protocol_version(0, &unrecognized, &mut out);
    }
    let rule_method = hba_method(state, stream.is_tls(), &database, &user_name, peer)?;

    let user = match state.lookup_user(&user_name, &database).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(user = %user_name, error = %e, "cannot authenticate: the user lookup failed");
            return Err(fatal(e.sqlstate(), e.client_message()));
        }
    };
    // Made for every name, known or not, so the time to the challenge does not tell them apart.
    let decoy = std::hint::black_box(state.decoys.user(&user_name));
    let Some(user) = user else {
        let method = challenge(rule_method.unwrap_or(decoy.method), &decoy);
        authenticate(stream, buf, &mut out, state, &decoy, method, false).await?;
        return Err(password_failed(&user_name)); // not reached: a decoy never passes
    };
    let method = challenge(rule_method.unwrap_or(user.method), &user);
    authenticate(stream, buf, &mut out, state, &user, method, true).await?;

    let (destination, server_params) = if database == crate::config::ADMIN_DATABASE {
        let listed = |list: &[toml::Spanned<String>]| list.iter().any(|u| u.get_ref() == &user.name);
        let admin = &state.config.admin;
        let role = if listed(&admin.users) {
            ConsoleRole::Admin
        } else if listed(&admin.stats_users) {
            ConsoleRole::Stats
        } else {
            return Err(SessionError::Fatal(Box::new(
                ErrorFields::fatal(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    format!(
                        "user \"{}\" is not allowed on the admin console (database \"{database}\")",
                        user.name
                    ),
                )
                .with_hint("admin users are listed in [admin] users, read-only ones in [admin] stats_users"),
            )));
        };
        (Destination::Admin(role), Arc::new(admin_params()))
    } else {
        let pool = state.pool(&database, &user).ok_or_else(|| {
            fatal(
                sqlstate::INVALID_CATALOG_NAME,
                format!("database \"{database}\" does not exist"),
            )
        })?;
        let server_params = match pool.server_params() {
            Some(p) => p,
            None => {
                // First client of this pool: a server tells us what to report (and that the
                // database and credentials work). This timer fires before the caller's, set
                // to the same instant, so the client hears why (typically no primary yet,
                // with a `hold_timeout` longer than `client_login_timeout`).
                let checkout = tokio::time::timeout_at(deadline, pool.checkout(None))
                    .await
                    .map_err(|_| {
                        fatal(
                            sqlstate::CANNOT_CONNECT_NOW,
                            format!(
                                "no server of database \"{database}\" could be reached within client_login_timeout ({:?}); try again later",
                                proxy.client_login_timeout
                            ),
                        )
                    })??;
                checkout.release();
                pool.server_params().unwrap_or_default()
            }
        };
        (Destination::Pool(pool), server_params)
    };
    backend::auth_ok(&mut out);
    let asked = super::params::startup_settings(&params);
    for (name, value) in server_params.iter() {
        let value = if CLIENT_REPORTED.contains(&name.as_str()) {
            asked
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map_or_else(|| value.clone(), |(_, v)| v.clone())
        } else {
            value.clone()
        };
        backend::parameter_status(name, &value, &mut out);
    }
    let cancel = state.cancels.register();
    backend::backend_key_data(cancel.process_id, cancel.secret_key, &mut out);
    backend::ready_for_query(TransactionStatus::Idle, &mut out);
    send(stream, &mut out).await?;
    if state.proxy().log_connections {
        tracing::info!(%peer, user = %user.name, database = %database, pid = cancel.process_id, method = %method.name(), tls = stream.is_tls(), "client logged in");
    }
    Ok(move |stream, buf| LoggedIn {
        stream,
        buf,
        user,
        database,
        destination,
        params,
        cancel,
        carried: None,
    })
}

/// What the admin console reports at login, so that psql and drivers are content.
fn admin_params() -> std::collections::HashMap<String, String> {
    [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What `auth_hba_file` says of this connection: the method its first matching rule
/// names, `None` without a file; a `reject` rule, or no rule, refuses it with 28000 (the
/// log names the rule).
fn hba_method(
    state: &ProxyState,
    tls: bool,
    database: &str,
    user: &str,
    peer: Peer,
) -> Result<Option<ClientAuthMethod>, SessionError> {
    let Some(rules) = state.hba.load_full() else {
        return Ok(None);
    };
    let decision = rules.decide(Connection {
        tls,
        database,
        user,
        addr: peer.ip(),
    });
    if let HbaMethod::Auth(method) = decision.method {
        return Ok(Some(method));
    }
    let encryption = if tls { "SSL encryption" } else { "no encryption" };
    // Postgres' words: `host "a.b.c.d"`, or `host "[local]"` for a Unix-domain socket.
    let host = match peer {
        Peer::Tcp(addr) => addr.ip().to_string(),
        Peer::Unix => "[local]".to_owned(),
    };
    let message = match &decision.rule {
        Some(rule) => {
            tracing::warn!(%peer, user, database, rule = %rule, "auth_hba_file: a reject rule refused the connection");
            format!("auth_hba_file rejects connection for host \"{host}\", user \"{user}\", database \"{database}\", {encryption}")
        }
        None => {
            tracing::warn!(%peer, user, database, tls, file = %rules.path(), "auth_hba_file: no rule matches the connection");
            format!("no auth_hba_file entry for host \"{host}\", user \"{user}\", database \"{database}\", {encryption}")
        }
    };
    Err(fatal(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION, message))
}

/// The method `user` is challenged with when `method` is asked for: md5 for a user whose
/// password is stored only as a SCRAM verifier means SCRAM, as in Postgres.
fn challenge(method: ClientAuthMethod, user: &UserAuth) -> ClientAuthMethod {
    match method {
        ClientAuthMethod::Md5 if user.md5.is_none() => ClientAuthMethod::ScramSha256,
        m => m,
    }
}

/// Challenges the client with `method` as `user`; `known` is false for an unknown user's
/// decoy, which goes through the same steps and always fails.
async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    state: &ProxyState,
    user: &UserAuth,
    method: ClientAuthMethod,
    known: bool,
) -> Result<(), SessionError> {
    let failed = || password_failed(&user.name);
    match method {
        ClientAuthMethod::ScramSha256 => {
            let verifier = user.scram.as_ref().ok_or_else(failed)?;
            // -PLUS is offered on TLS connections whose certificate defines the binding.
            let end_point = match (stream.is_tls(), &state.tls) {
                (true, Some(tls)) => tls.end_point.as_deref(),
                _ => None,
            };
            let mechanisms: &[&str] = match end_point {
                Some(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
                None => &[SCRAM_SHA_256],
            };
            backend::auth_sasl(mechanisms, out);
            send(stream, out).await?;
            let body = read_auth_message(stream, buf).await?;
            let (mechanism, data) = decode_sasl_initial_response(&body)?;
            if !mechanisms.contains(&mechanism.as_str()) {
                return Err(fatal(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    format!("unsupported SASL mechanism {mechanism:?}"),
                ));
            }
            let binding = Binding {
                plus: mechanism == SCRAM_SHA_256_PLUS,
                end_point,
            };
            let (exchange, server_first) =
                ScramExchange::start(verifier, binding, &data).map_err(scram_error)?;
            backend::auth_sasl_continue(server_first.as_bytes(), out);
            send(stream, out).await?;
            let body = read_auth_message(stream, buf).await?;
            let server_final = match exchange.finish(verifier, &body) {
                Ok((f, client_key)) if known => {
                    let _ = user.client_key.set(client_key);
                    f
                }
                Ok(_) | Err(ScramError::BadProof) => return Err(failed()),
                Err(e) => return Err(scram_error(e)),
            };
            backend::auth_sasl_final(server_final.as_bytes(), out);
        }
        ClientAuthMethod::Md5 => {
            let challenge = Md5Challenge::new();
            backend::auth_md5_password(challenge.salt, out);
            send(stream, out).await?;
            let body = read_auth_message(stream, buf).await?;
            let response = decode_password(&body)?;
            let stored = user.md5.as_deref().ok_or_else(failed)?;
            if !challenge.verify(stored, &response) || !known {
                return Err(failed());
            }
        }
        ClientAuthMethod::Password => {
            backend::auth_cleartext_password(out);
            send(stream, out).await?;
            let body = read_auth_message(stream, buf).await?;
            let response = decode_password(&body)?;
            let password = std::str::from_utf8(&response).map_err(|_| failed())?;
            if !user.password_matches(password).await || !known {
                return Err(failed());
            }
        }
        ClientAuthMethod::Cert => check_certificate(stream, state, &user.name, known)?,
    }
    Ok(())
}

/// The `cert` method: a certificate that leads to `tls_client_ca` and names the user as
/// its common name, as Postgres' `cert`. Each refusal is 28000 with the reason, also logged.
fn check_certificate(
    stream: &Stream,
    state: &ProxyState,
    user: &str,
    known: bool,
) -> Result<(), SessionError> {
    let cert = match &state.tls {
        Some(tls) => tls.client_cert(stream),
        None => ClientCert::None,
    };
    let why = match cert {
        ClientCert::Trusted { common_name } if common_name.as_deref() == Some(user) => match known {
            true => return Ok(()),
            // Told to holders of a trusted certificate only, as Postgres' "role does not exist".
            false => "the certificate names this user, but the proxy knows no such user".to_owned(),
        },
        ClientCert::None => {
            return Err(fatal(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "connection requires a valid client certificate",
            ))
        }
        ClientCert::Untrusted(why) => format!("the client certificate is not trusted: {why}"),
        ClientCert::Trusted { common_name: None } => "the client certificate has no common name".to_owned(),
        ClientCert::Trusted {
            common_name: Some(cn),
        } => format!("the client certificate's common name is \"{cn}\""),
    };
    tracing::warn!(user, reason = %why, "certificate authentication failed");
    Err(SessionError::Fatal(Box::new(
        ErrorFields::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            format!("certificate authentication failed for user \"{user}\""),
        )
        .with_detail(why),
    )))
}

fn password_failed(user: &str) -> SessionError {
    fatal(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

fn scram_error(e: ScramError) -> SessionError {
    match e {
        ScramError::BadProof => fatal(sqlstate::INVALID_PASSWORD, "password authentication failed"),
        ScramError::ChannelBinding(m) => fatal(sqlstate::INVALID_AUTHORIZATION_SPECIFICATION, m),
        ScramError::Protocol(m) => fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("malformed SCRAM message: {m}"),
        ),
        ScramError::DerivationAborted => fatal(sqlstate::ADMIN_SHUTDOWN, e.to_string()),
    }
}
