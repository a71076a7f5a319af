//! Why a session ended. Each variant knows what, if anything, the client should be told.

use switchyard_protocol::backend::ErrorFields;
use switchyard_protocol::sqlstate;
use switchyard_protocol::ProtocolError;

use crate::pool::PoolError;
use crate::server::ServerError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client i/o: {0}")]
    ClientIo(#[source] std::io::Error),
    /// The client was answered 'S' to SSLRequest but what followed was no TLS handshake
    /// (plaintext, garbage, nothing) or the handshake failed; nothing can be sent back.
    #[error(
        "TLS handshake failed after SSLRequest (the client sent no valid TLS ClientHello, or closed): {0}"
    )]
    TlsHandshake(#[source] std::io::Error),
    #[error("client sent a malformed message: {0}")]
    Protocol(#[from] ProtocolError),
    /// Ends the session with this FATAL error sent to the client.
    #[error("{}: {}", .0.code, .0.message)]
    Fatal(Box<ErrorFields>),
    /// A client-side timeout ran out (`session::timeouts`): this FATAL error goes to the
    /// client; a server that owes nothing is rolled back and reused.
    #[error("{}: {}", .0.code, .0.message)]
    Timeout(Box<ErrorFields>),
    #[error("server i/o: {0}")]
    ServerIo(#[source] std::io::Error),
    #[error("server closed the connection")]
    ServerClosed,
    /// The server's connection ended after a FATAL error the client was given.
    #[error("server ended the session with a FATAL error")]
    ServerEnded,
    /// The reply the client was getting stopped in the middle of a message (a pipelined
    /// reply's server lost, or the client too slow to take it): nothing more can be said
    /// on the connection, which is closed.
    #[error("{0}; the connection is closed in the middle of a reply")]
    ReplyCut(String),
    #[error("server sent a malformed message: {0}")]
    ServerProtocol(ProtocolError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl SessionError {
    /// Ends the session with a FATAL error carrying `code` and `message`.
    pub fn fatal(code: &str, message: impl Into<String>) -> SessionError {
        SessionError::Fatal(Box::new(ErrorFields::fatal(code, message)))
    }

    /// The session ends because of its server (lost, broken or unobtainable), not
    /// because of the client or the proxy's own shutdown.
    pub fn server_caused(&self) -> bool {
        matches!(
            self,
            SessionError::ServerIo(_)
                | SessionError::ServerClosed
                | SessionError::ServerEnded
                | SessionError::ServerProtocol(_)
                | SessionError::Pool(_)
                | SessionError::Server(_)
        )
    }

    /// The FATAL error the client gets before the proxy closes its connection, if any can
    /// still be sent.
    pub fn to_client(&self) -> Option<ErrorFields> {
        match self {
            SessionError::ClientIo(_)
            | SessionError::TlsHandshake(_)
            | SessionError::ServerEnded
            | SessionError::ReplyCut(_) => None,
            SessionError::Protocol(e) => Some(ErrorFields::fatal(
                e.sqlstate(),
                format!("invalid frontend message: {e}"),
            )),
            SessionError::Fatal(f) | SessionError::Timeout(f) => Some((**f).clone()),
            SessionError::ServerIo(_) | SessionError::ServerClosed | SessionError::ServerProtocol(_) => Some(
                ErrorFields::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    "server connection lost; the transaction's outcome is unknown",
                )
                .with_hint("reconnect and check whether your last transaction was committed"),
            ),
            SessionError::Pool(e) => Some(ErrorFields::fatal(e.sqlstate(), e.to_string())),
            SessionError::Server(ServerError::Refused { fields, .. }) => {
                let mut f = (**fields).clone();
                f.severity = switchyard_protocol::backend::Severity::Fatal;
                Some(f)
            }
            SessionError::Server(e) => Some(ErrorFields::fatal(e.sqlstate(), e.to_string())),
        }
    }
}

/// Why a freshly borrowed server did not take the session's settings (`apply_settings`).
#[derive(Debug, thiserror::Error)]
pub(super) enum SettingsFailed {
    /// The server's connection ended (closed, reset) before it answered: nothing of the
    /// client's reached it, so the session may borrow another.
    #[error(transparent)]
    ServerLost(ServerError),
    /// The server refused the settings, did not answer in time or broke the protocol: the
    /// session ends with this.
    #[error(transparent)]
    Ends(SessionError),
}

impl SettingsFailed {
    pub(super) fn from_server(error: ServerError) -> SettingsFailed {
        match error {
            ServerError::Io { .. } | ServerError::Closed { .. } => SettingsFailed::ServerLost(error),
            error => SettingsFailed::Ends(SessionError::Pool(error.into())),
        }
    }
}

impl From<SettingsFailed> for SessionError {
    fn from(failed: SettingsFailed) -> SessionError {
        match failed {
            SettingsFailed::ServerLost(error) => SessionError::Pool(error.into()),
            SettingsFailed::Ends(error) => error,
        }
    }
}
