//! Sockets: the listeners clients connect to (TCP addresses, a Unix-domain socket), a
//! stream type that is plain TCP, Unix or TLS in either direction, the TLS
//! configurations built from the config (client certificates, channel binding data), the open-files limit sockets count against,
//! and which worker thread's reactor a socket opened now is registered with.
//! Nothing here knows the Postgres protocol beyond the one-byte answer to SSLRequest.

mod cert;
pub mod files;
pub mod listen;
mod stream;
mod tls;
pub mod worker;

pub use listen::Peer;
pub use stream::Stream;
pub use tls::{server_tls_connector, ClientCert, ClientTls, ServerTls, TlsError};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

/// Writes as much of `buf` as the socket takes without blocking, then flushes when empty.
///
/// A buffer written out whole is cleared, not advanced: it keeps its start and so its whole
/// capacity for the next message, where advancing to its end would leave it reporting none
/// and the next `reserve` (or the spares' reclaim when the session parks it) moving its
/// start back, about 60 instructions per buffer and transaction.
pub fn poll_write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<()>> {
    while !buf.is_empty() {
        match Pin::new(&mut *w).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) if n == buf.len() => buf.clear(),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(w).poll_flush(cx)
}
