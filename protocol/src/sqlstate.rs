//! The SQLSTATE codes the proxy sends or acts on, named as in Postgres' `errcodes.txt`, so
//! that a code is written once and read by name.

/// 08000: the connection failed (class 08: drivers reconnect).
pub const CONNECTION_EXCEPTION: &str = "08000";
/// 08001: a connection could not be established.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
/// 08006: the connection was lost.
pub const CONNECTION_FAILURE: &str = "08006";
/// 08007: the connection was lost while a request of unknown outcome ran (it may have
/// committed).
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
/// 08P01: a message broke the protocol.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// 0A000: not supported (here, or in this pooling mode).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// 22023: a setting's value is not one it accepts.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// 25000: not allowed in the current transaction state.
pub const INVALID_TRANSACTION_STATE: &str = "25000";
/// 25006: a write in a read-only transaction (a demoted primary).
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// 25P03: a client idle in a transaction too long (`idle_transaction_timeout`).
pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
/// 25P04: a transaction open too long (`transaction_timeout`).
pub const TRANSACTION_TIMEOUT: &str = "25P04";
/// 26000: no prepared statement of that name.
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
/// 28000: the login is not allowed.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// 28P01: wrong password (or unknown user: the two are not told apart).
pub const INVALID_PASSWORD: &str = "28P01";
/// 3D000: no database of that name.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// 40001: a serialization failure; the transaction may be retried by the client.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// 42501: permission denied.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// 42601: a statement the admin console cannot read.
pub const SYNTAX_ERROR: &str = "42601";
/// 42704: an object that does not exist.
pub const UNDEFINED_OBJECT: &str = "42704";
/// 53300: no connection slot (pool or `max_client_conn`) became free.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// 54000: a limit was exceeded (`max_message_size`).
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
/// 55000: the object is not in the state the command needs.
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// 55P02: a setting that cannot change without a restart.
pub const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
/// 57014: the query was cancelled.
pub const QUERY_CANCELED: &str = "57014";
/// 57P05: a client idle too long (`client_idle_timeout`).
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// 57P01: a fast shutdown, or `pg_terminate_backend`: the message alone does not say which.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// 57P02: a crash shutdown.
pub const CRASH_SHUTDOWN: &str = "57P02";
/// 57P03: the server is starting up or shutting down (or, from the proxy, no primary came
/// within the hold).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
