//! A byte stream to a client or a server, plain or TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection, encrypted or not. Boxed TLS keeps the enum small for the common plain case.
pub enum Stream {
    Plain(TcpStream),
    /// We are the TLS server (a client connected to us).
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// We are the TLS client (our connection to a Postgres server).
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    #[inline]
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Accepted(s) => s.get_ref().0,
            Stream::Connected(s) => s.get_ref().0,
        }
    }

    #[inline]
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// A plain stream taken off the reactor it is registered with and registered with the
    /// calling runtime's (`threading = "per-core"`: a server moving to another worker), at
    /// the cost of two `epoll_ctl` calls. A TLS stream is returned as it is (rustls' streams
    /// cannot be taken apart and put together again): see [`Stream::is_tls`].
    pub fn reregister_here(self) -> io::Result<Stream> {
        match self {
            Stream::Plain(s) => TcpStream::from_std(s.into_std()?).map(Stream::Plain),
            tls => Ok(tls),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
