//! Sockets: a stream type that is plain TCP or TLS in either direction, the TLS
//! configurations built from the config (client certificates, channel binding data), the open-files limit sockets count against,
//! and which worker thread's reactor a socket opened now is registered with.
//! Nothing here knows the Postgres protocol beyond the one-byte answer to SSLRequest.

mod cert;
pub mod files;
mod stream;
mod tls;
pub mod worker;

pub use stream::Stream;
pub use tls::{server_tls_connector, ClientCert, ClientTls, ServerTls, TlsError};
