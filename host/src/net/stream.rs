//! A byte stream to a client or a server: plain TCP, a Unix-domain socket (clients only), or
//! TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connection, encrypted or not. Boxed TLS keeps the enum small for the common plain case.
pub enum Stream {
    Plain(TcpStream),
    /// A client on the Unix-domain socket (never encrypted: SSLRequest is answered 'N').
    Unix(UnixStream),
    /// We are the TLS server (a client connected to us).
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// We are the TLS client (our connection to a Postgres server).
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Waits until the socket underneath has something to read (a TLS stream's socket
    /// may hold bytes that are not yet a whole record: see [`Stream::is_tls`]).
    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Accepted(s) => s.get_ref().0.poll_read_ready(cx),
            Stream::Connected(s) => s.get_ref().0.poll_read_ready(cx),
        }
    }

    /// Reads what the socket underneath holds without waiting (bypassing TLS).
    #[inline]
    pub fn try_read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_read(buf),
            Stream::Unix(s) => s.try_read(buf),
            Stream::Accepted(s) => s.get_ref().0.try_read(buf),
            Stream::Connected(s) => s.get_ref().0.try_read(buf),
        }
    }

    /// The proxy's end of a TCP connection (plain or TLS); `None` on the Unix-domain socket.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.local_addr().ok(),
            Stream::Unix(_) => None,
            Stream::Accepted(s) => s.get_ref().0.local_addr().ok(),
            Stream::Connected(s) => s.get_ref().0.local_addr().ok(),
        }
    }

    #[inline]
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_) | Stream::Unix(_))
    }

    /// A plain client's socket taken off the reactor as a descriptor, to be handed to
    /// another process (a takeover). TLS cannot be: rustls has no way to export a
    /// session's traffic state, so a TLS stream is refused with `Unsupported`.
    pub fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        match self {
            Stream::Plain(s) => Ok(s.into_std()?.into()),
            Stream::Unix(s) => Ok(s.into_std()?.into()),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a TLS connection cannot be handed to another process",
            )),
        }
    }

    /// A client's socket handed over by another process ([`Stream::into_fd`]), registered
    /// with the calling runtime: TCP, or a Unix-domain socket when `unix`.
    pub fn from_fd(fd: std::os::fd::OwnedFd, unix: bool) -> io::Result<Stream> {
        if unix {
            let s = std::os::unix::net::UnixStream::from(fd);
            s.set_nonblocking(true)?;
            return UnixStream::from_std(s).map(Stream::Unix);
        }
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true)?;
        let s = TcpStream::from_std(s)?;
        s.set_nodelay(true)?;
        Ok(Stream::Plain(s))
    }

    /// A plain stream taken off the reactor it is registered with and registered with the
    /// calling runtime's (`threading = "per-core"`: a server moving to another worker), at
    /// the cost of two `epoll_ctl` calls. A TLS stream is returned as it is (rustls' streams
    /// cannot be taken apart and put together again): see [`Stream::is_tls`]; so is a
    /// Unix one, which is a client's (only servers move).
    pub fn reregister_here(self) -> io::Result<Stream> {
        match self {
            Stream::Plain(s) => TcpStream::from_std(s.into_std()?).map(Stream::Plain),
            other => Ok(other),
        }
    }
}

impl AsyncRead for Stream {
    #[inline]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
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
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Accepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Connected(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
