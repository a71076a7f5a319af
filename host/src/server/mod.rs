//! Connections to Postgres servers: connect, negotiate TLS, authenticate, and keep what the
//! server told us (parameters, cancel key) for the pool and the sessions that borrow it.

mod connect;
mod query;
mod statements;

pub use connect::{connect, ConnectParams};
pub use query::{query_row, simple_query, simple_query_within, Answer};
pub use statements::ServerStatements;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use switchyard_protocol::backend::ErrorFields;
use switchyard_protocol::sqlstate;

use crate::net::Stream;
use crate::roster::{Member, ServerInfo};

/// Session settings as name → SQL text of the value.
pub type Settings = BTreeMap<String, String>;

/// Where a server listens. Cheap to clone: a session publishes its server's address for
/// cancel requests on every checkout.
#[derive(Debug, Clone, Eq)]
pub struct NodeAddr {
    pub host: Arc<str>,
    pub port: u16,
}

impl PartialEq for NodeAddr {
    /// A server's address is a clone of its node's, so the host names are most often the
    /// same allocation: compared by pointer first, by text only when they are not.
    #[inline]
    fn eq(&self, other: &NodeAddr) -> bool {
        self.port == other.port && (Arc::ptr_eq(&self.host, &other.host) || self.host == other.host)
    }
}

impl std::hash::Hash for NodeAddr {
    /// As derived: the host name's text, then the port (equal addresses hash alike).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.host.hash(state);
        self.port.hash(state);
    }
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// What goes wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: NodeAddr, source: std::io::Error },
    #[error("connecting to {addr} timed out after {limit:?}")]
    ConnectTimeout {
        addr: NodeAddr,
        limit: std::time::Duration,
    },
    #[error("server {addr} did not answer the proxy's own query within {limit:?}")]
    Timeout {
        addr: NodeAddr,
        limit: std::time::Duration,
    },
    #[error("i/o error with server {addr}: {source}")]
    Io { addr: NodeAddr, source: std::io::Error },
    #[error("server {addr} closed the connection")]
    Closed { addr: NodeAddr },
    #[error("server {addr} does not support TLS, which the configuration requires")]
    TlsRefused { addr: NodeAddr },
    #[error("TLS with server {addr} failed: {source}")]
    Tls { addr: NodeAddr, source: std::io::Error },
    #[error("server {addr} asks for a password, and the proxy knows none for user {user:?} (configure a plaintext password or server_password, or let a client log in first with SCRAM)")]
    NoPassword { addr: NodeAddr, user: String },
    #[error("server {addr} asks for an unsupported authentication method ({method})")]
    UnsupportedAuth { addr: NodeAddr, method: String },
    #[error("server {addr} asks for authentication method \"{method}\", which `[pool] server_auth_methods` does not allow; the proxy sent it nothing (add \"{method}\" to server_auth_methods to allow it, or change the server's pg_hba.conf)")]
    AuthMethodNotAllowed { addr: NodeAddr, method: &'static str },
    #[error("server {addr} refused the connection: {} {}", .fields.code, .fields.message)]
    Refused {
        addr: NodeAddr,
        fields: Box<ErrorFields>,
    },
    #[error("server {addr} violated the protocol: {reason}")]
    Protocol { addr: NodeAddr, reason: String },
}

impl ServerError {
    /// SQLSTATE to report to a client that needed this server.
    pub fn sqlstate(&self) -> &str {
        match self {
            ServerError::Refused { fields, .. } => &fields.code,
            ServerError::NoPassword { .. }
            | ServerError::UnsupportedAuth { .. }
            | ServerError::AuthMethodNotAllowed { .. } => sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }
}

/// The statements that turn a server's `applied` settings into `desired`, or None if equal.
/// Each statement is complete in itself, so none can change how the next is read.
pub fn settings_diff(desired: &Settings, applied: &Settings) -> Option<String> {
    let mut sql = String::new();
    for (k, v) in desired.iter() {
        if applied.get(k) != Some(v) {
            sql.push_str(v);
            sql.push(';');
        }
    }
    for k in applied.keys() {
        if !desired.contains_key(k) {
            sql.push_str("RESET ");
            sql.push_str(&crate::sql::quote_setting_name(k));
            sql.push(';');
        }
    }
    (!sql.is_empty()).then_some(sql)
}

/// Nanoseconds from the clock origin (`crate::clock`) to `t` (0 for earlier), saturating.
pub fn nanos_since_origin(t: Instant) -> u64 {
    u64::try_from(crate::clock::since_origin(t).as_nanos()).unwrap_or(u64::MAX)
}

/// An authenticated server connection, idle between uses.
pub struct ServerConn {
    pub id: u64,
    pub stream: Stream,
    /// Bytes read from the server and not yet consumed.
    pub rbuf: BytesMut,
    pub addr: NodeAddr,
    pub backend_pid: i32,
    pub secret_key: i32,
    /// Server parameters as last reported by ParameterStatus or set by the proxy.
    pub params: HashMap<String, String>,
    /// Statements this server has prepared under proxy-chosen names.
    pub statements: ServerStatements,
    /// Session settings the proxy has applied and the server confirmed (name → the statement
    /// that established it), to diff against a client's.
    pub settings: Settings,
    /// Signature of `settings` as the session that applied them computed it; 0 = unknown.
    pub settings_signature: u64,
    pub created: Instant,
    /// `created` in nanoseconds after the clock origin ([`nanos_since_origin`]): what the
    /// pool compares with its coarse clock and `RECONNECT` time, without a clock
    /// subtraction per transaction.
    pub created_ns: u64,
    /// The cluster's [`keep_epoch`](crate::topology::Cluster::keep_epoch) under which the
    /// pool last found it still worth keeping (0: never).
    pub kept_in_epoch: u64,
    /// The worker thread that opened it, whose reactor its socket is registered with
    /// (`threading = "per-core"`; 0 otherwise): the pools keep it in that thread's list.
    pub home: usize,
    /// What counts this connection while it lives (the pool's caps on server
    /// connections): dropped, and so uncounted, when the connection closes.
    pub counted: Vec<Box<dyn Send + Sync>>,
    /// Its row in `SHOW SERVERS` (a pool's connection; none for probes and login checks).
    pub listed: Option<Arc<Member<ServerInfo>>>,
}

impl ServerConn {
    /// Moves an idle server to the calling worker thread (`threading = "per-core"`, worker
    /// `worker`): its socket is registered with this thread's reactor from now on, so the
    /// sessions here that use it are not woken through another thread, and the pools keep
    /// it in this thread's idle list. A TLS server stays where it is. `None`: the socket
    /// could not be registered here, and the connection is closed.
    pub fn move_here(mut self: Box<Self>, worker: usize) -> Option<Box<Self>> {
        if self.stream.is_tls() {
            return Some(self);
        }
        match self.stream.reregister_here() {
            Ok(stream) => {
                self.stream = stream;
                self.home = worker;
                Some(self)
            }
            Err(e) => {
                tracing::warn!(server = self.id, error = %e, "cannot move an idle server to this worker; closing it");
                None
            }
        }
    }

    /// Ends the connection as a client does (Terminate) and waits, up to `limit`, until the
    /// server has closed its end: its backend has then exited, so a connection opened in
    /// its place never makes one more on the server, even for a moment (the caps of
    /// `pool::caps` count on that).
    pub async fn terminate(mut self: Box<Self>, limit: std::time::Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = BytesMut::new();
        switchyard_protocol::frontend::encode_terminate(&mut out);
        let closed = async {
            self.stream.write_all(&out).await?;
            let mut sink = [0u8; 512];
            while self.stream.read(&mut sink).await? != 0 {}
            Ok::<(), std::io::Error>(())
        };
        if tokio::time::timeout(limit, closed).await.is_err() {
            tracing::debug!(
                server = self.id,
                "server did not close within {limit:?} of Terminate"
            );
        }
    }

    /// True if the server sent something or closed while idle: an idle server has nothing to
    /// say, so any byte (typically a FATAL before a shutdown) means it is unusable.
    #[inline]
    pub fn is_broken(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.try_read_raw(&mut probe) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}
