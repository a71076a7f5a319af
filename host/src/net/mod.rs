//! Sockets: a stream type that is plain TCP or TLS in either direction, and the TLS
//! configurations built from the config. Nothing here knows the Postgres protocol beyond the
//! one-byte answer to SSLRequest.

mod stream;
mod tls;

pub use stream::Stream;
pub use tls::{client_tls_acceptor, server_tls_connector, ServerTls, TlsError};
