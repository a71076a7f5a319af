//! Sockets: a stream type that is plain TCP or TLS in either direction, the TLS
//! configurations built from the config, and the open-files limit sockets count against.
//! Nothing here knows the Postgres protocol beyond the one-byte answer to SSLRequest.

pub mod files;
mod stream;
mod tls;

pub use stream::Stream;
pub use tls::{client_tls_acceptor, server_tls_connector, ServerTls, TlsError};
