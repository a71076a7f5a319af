//! The sockets clients connect to: one TCP listener per `listen` address and, with
//! `unix_socket_dir`, a Unix-domain socket named as Postgres names its own
//! (`.s.PGSQL.<port>`), so that `psql -h <dir>` finds it. One accept loop serves all of a
//! runtime's listeners ([`Listeners`]).
//!
//! The socket file is Postgres' kind of lock: one left by a process that died (nothing
//! answers a connect) is replaced; one something still answers on is a start-up error.
//! [`UnixSocketFile`] removes it when the proxy stops, unless another process replaced it
//! or took the socket over.
//!
//! At a takeover (`switchyard --takeover`) the listening sockets themselves go to the new
//! process ([`Listeners::offer`], [`Inherited`]): the same descriptors, with the
//! connections waiting in their accept queues, keyed by the address they were bound for
//! ([`ListenerKey`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::net::{TcpListener, UnixListener};

use super::Stream;

/// A listening socket that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on the Unix-domain socket {path}: {source}")]
    Unix { path: PathBuf, source: std::io::Error },
    #[error(
        "another process is listening on the Unix-domain socket {path} (another proxy or a Postgres server with the same port?); stop it or choose another unix_socket_dir or port"
    )]
    UnixInUse { path: PathBuf },
    #[error("{path} exists and is not a socket; remove it, or choose another unix_socket_dir")]
    NotASocket { path: PathBuf },
}

/// Who is at the other end of an accepted connection, for the logs, `auth_hba_file` and
/// the plugins' session facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A client on the Unix-domain socket (shown as `unix`).
    Unix,
}

impl Peer {
    /// The client's IP address; `None` on the Unix-domain socket.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Tcp(addr) => Some(addr.ip()),
            Peer::Unix => None,
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

/// What a listening socket listens for: a `listen` address as configured, or the
/// Unix-domain socket's path. A takeover matches the old process's sockets to the new
/// configuration by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ListenerKey {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenerKey::Tcp(addr) => addr.fmt(f),
            ListenerKey::Unix(path) => path.display().fmt(f),
        }
    }
}

/// One listening socket.
enum Listener {
    /// With the `listen` address it was bound for.
    Tcp(TcpListener, SocketAddr),
    Unix(UnixListener, PathBuf),
}

/// Descriptors of a proxy's listening sockets kept for a takeover ([`Listeners::offer`]),
/// withdrawn (closed) as soon as its listeners stop: a descriptor kept beyond them would
/// keep the socket open, and the kernel would go on completing connections nobody accepts.
#[derive(Default)]
pub struct Offer(std::sync::Mutex<Option<Vec<(ListenerKey, OwnedFd)>>>);

impl Offer {
    pub fn new(sockets: Vec<(ListenerKey, OwnedFd)>) -> Offer {
        Offer(std::sync::Mutex::new(Some(sockets)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<(ListenerKey, OwnedFd)>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Descriptors of the sockets among `wanted`; `None` once withdrawn.
    pub fn wanted(&self, wanted: &[ListenerKey]) -> std::io::Result<Option<Vec<(ListenerKey, OwnedFd)>>> {
        let Some(sockets) = self.lock().as_ref().map(|all| {
            all.iter()
                .filter(|(key, _)| wanted.contains(key))
                .map(|(key, fd)| Ok((key.clone(), fd.try_clone()?)))
                .collect::<std::io::Result<Vec<_>>>()
        }) else {
            return Ok(None);
        };
        sockets.map(Some)
    }

    /// The listeners stopped (or another process took the sockets): the descriptors close.
    pub fn withdraw(&self) {
        self.lock().take();
    }
}

/// Listening sockets handed over by the process this one took over from, by what they
/// listen for; the rest of the configuration's sockets are bound anew.
#[derive(Default)]
pub struct Inherited {
    tcp: HashMap<SocketAddr, Vec<OwnedFd>>,
    unix: Option<(PathBuf, OwnedFd)>,
}

impl Inherited {
    /// Adds a socket handed over.
    pub fn add(&mut self, key: ListenerKey, fd: OwnedFd) {
        match key {
            ListenerKey::Tcp(addr) => self.tcp.entry(addr).or_default().push(fd),
            ListenerKey::Unix(path) => self.unix = Some((path, fd)),
        }
    }

    /// How many sockets were handed over.
    pub fn len(&self) -> usize {
        self.tcp.values().map(Vec::len).sum::<usize>() + usize::from(self.unix.is_some())
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sockets for `addr` that worker `index` of `count` accepts on: with one worker
    /// all of them (an old process with per-core threading had one per worker), else its
    /// share, or a descriptor of one of them when fewer were handed over than there are
    /// workers. Empty when none was handed over for `addr`: it is bound anew.
    fn tcp_share(&self, addr: SocketAddr, index: usize, count: usize) -> std::io::Result<Vec<TcpListener>> {
        let Some(fds) = self.tcp.get(&addr) else {
            return Ok(Vec::new());
        };
        let mut mine: Vec<&OwnedFd> = fds.iter().skip(index).step_by(count.max(1)).collect();
        if mine.is_empty() && !fds.is_empty() {
            mine.push(&fds[index % fds.len()]);
        }
        mine.into_iter()
            .map(|fd| {
                let listener = std::net::TcpListener::from(fd.try_clone()?);
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)
            })
            .collect()
    }

    /// One socket handed over for `addr`, for a listener of its own (the metrics
    /// endpoint's).
    pub fn take_tcp(&mut self, addr: SocketAddr) -> Option<OwnedFd> {
        self.tcp.get_mut(&addr)?.pop()
    }

    /// The Unix-domain socket at `path`, if it was handed over: its file (removed when
    /// this process stops) and the listening socket (non-blocking).
    pub fn take_unix(
        &mut self,
        path: &Path,
    ) -> Result<Option<(UnixSocketFile, std::os::unix::net::UnixListener)>, ListenError> {
        match self.unix.take() {
            Some((at, fd)) if at == path => {
                let unix = |source| ListenError::Unix {
                    path: path.to_owned(),
                    source,
                };
                let made = std::fs::metadata(path).map_err(unix)?;
                let listener = std::os::unix::net::UnixListener::from(fd);
                listener.set_nonblocking(true).map_err(unix)?;
                Ok(Some((UnixSocketFile::made(path, &made), listener)))
            }
            other => {
                self.unix = other;
                Ok(None)
            }
        }
    }
}

/// The listening sockets one accept loop serves, registered with its runtime.
pub struct Listeners {
    all: Vec<Listener>,
    /// Where the next accept starts looking, so that a busy socket does not starve the others.
    next: usize,
}

impl Listeners {
    /// Listeners on `addrs`, registered with the current runtime. With `reuse_port` each
    /// socket is bound with `SO_REUSEPORT`, so that every per-core worker binds its own.
    ///
    /// An IPv6 socket takes IPv4 clients too (`[::]:6432` alone serves both), unless an
    /// IPv4 address on its port is listed as well: then it is IPv6-only, as Postgres makes
    /// its IPv6 sockets, so that `["0.0.0.0:6432", "[::]:6432"]` binds both.
    ///
    /// An address whose sockets another process handed over ([`Inherited`]) is not bound
    /// again: worker `worker.0` of `worker.1` accepts on its share of them.
    pub fn tcp(
        addrs: &[SocketAddr],
        reuse_port: bool,
        inherited: &Inherited,
        worker: (usize, usize),
    ) -> Result<Listeners, ListenError> {
        let mut all = Vec::new();
        for &addr in addrs {
            let tcp = |source| ListenError::Tcp { addr, source };
            let handed = inherited.tcp_share(addr, worker.0, worker.1).map_err(tcp)?;
            if !handed.is_empty() {
                all.extend(handed.into_iter().map(|l| Listener::Tcp(l, addr)));
                continue;
            }
            let v6_only = addr.is_ipv6() && addrs.iter().any(|a| a.is_ipv4() && a.port() == addr.port());
            all.push(Listener::Tcp(
                listen_tcp(addr, reuse_port, v6_only).map_err(tcp)?,
                addr,
            ));
        }
        Ok(Listeners { all, next: 0 })
    }

    /// A descriptor of each socket, with what it listens for, to hand to a process taking
    /// over.
    pub fn offer(&self) -> std::io::Result<Vec<(ListenerKey, OwnedFd)>> {
        self.all
            .iter()
            .map(|l| {
                Ok(match l {
                    Listener::Tcp(t, addr) => (
                        ListenerKey::Tcp(*addr),
                        std::os::fd::AsFd::as_fd(t).try_clone_to_owned()?,
                    ),
                    Listener::Unix(u, path) => (
                        ListenerKey::Unix(path.clone()),
                        std::os::fd::AsFd::as_fd(u).try_clone_to_owned()?,
                    ),
                })
            })
            .collect()
    }

    /// Also accepts on `listener`, the socket of `file`, through a descriptor of its own
    /// registered with the current runtime (per-core workers all accept on the one
    /// Unix-domain socket; the caller closes its own descriptor once they have theirs).
    pub fn add_unix(
        &mut self,
        file: &UnixSocketFile,
        listener: &std::os::unix::net::UnixListener,
    ) -> Result<(), ListenError> {
        let unix = |source| ListenError::Unix {
            path: file.path.clone(),
            source,
        };
        let listener = UnixListener::from_std(listener.try_clone().map_err(unix)?).map_err(unix)?;
        self.all.push(Listener::Unix(listener, file.path.clone()));
        Ok(())
    }

    /// The addresses the TCP listeners are bound to.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.all
            .iter()
            .filter_map(|l| match l {
                Listener::Tcp(t, _) => t.local_addr().ok(),
                Listener::Unix(..) => None,
            })
            .collect()
    }

    /// The next client on any of the sockets.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<(Stream, Peer)>> {
        let count = self.all.len();
        for i in 0..count {
            let at = (self.next + i) % count;
            let accepted = match &self.all[at] {
                Listener::Tcp(l, _) => l
                    .poll_accept(cx)
                    .map_ok(|(tcp, addr)| (Stream::Plain(tcp), Peer::Tcp(addr))),
                Listener::Unix(l, _) => l
                    .poll_accept(cx)
                    .map_ok(|(unix, _)| (Stream::Unix(unix), Peer::Unix)),
            };
            if accepted.is_ready() {
                self.next = (at + 1) % count;
                return accepted;
            }
        }
        Poll::Pending
    }

    /// [`Listeners::poll_accept`] as a future.
    pub async fn accept(&mut self) -> std::io::Result<(Stream, Peer)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }
}

/// A TCP socket listening on `addr`, with `SO_REUSEPORT` and `IPV6_V6ONLY` if asked.
fn listen_tcp(addr: SocketAddr, reuse_port: bool, v6_only: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    if v6_only {
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The Unix-domain socket's file, removed on drop if it is still the one this process
/// made (not one a later process put there).
pub struct UnixSocketFile {
    path: PathBuf,
    /// Device and inode of the file this process made.
    made: (u64, u64),
    /// Another process took the socket over: the file is its now, and stays.
    kept: AtomicBool,
}

impl UnixSocketFile {
    /// Listens on `path` with permissions `mode`, replacing a socket file nothing answers
    /// on (left by a process that died); the file, and the listening socket (non-blocking).
    pub fn bind(
        path: &Path,
        mode: u32,
    ) -> Result<(UnixSocketFile, std::os::unix::net::UnixListener), ListenError> {
        let unix = |source| ListenError::Unix {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unix(e)),
            Ok(m) if !m.file_type().is_socket() => {
                return Err(ListenError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ListenError::UnixInUse {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale Unix-domain socket file (nothing listens on it)");
                    std::fs::remove_file(path).map_err(unix)?;
                }
                Err(e) => return Err(unix(e)),
            },
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(unix)?;
        let made = std::fs::metadata(path).map_err(unix)?;
        let file = UnixSocketFile::made(path, &made);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(unix)?;
        listener.set_nonblocking(true).map_err(unix)?;
        Ok((file, listener))
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file at `path`, as `made` describes it.
    fn made(path: &Path, made: &std::fs::Metadata) -> UnixSocketFile {
        UnixSocketFile {
            path: path.to_owned(),
            made: (made.dev(), made.ino()),
            kept: AtomicBool::new(false),
        }
    }

    /// Another process took the socket over: the file is left in place when this one
    /// stops.
    pub fn keep(&self) {
        self.kept.store(true, Ordering::Relaxed);
    }
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let ours = !self.kept.load(Ordering::Relaxed)
            && std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.made);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the Unix-domain socket file");
            }
        }
    }
}
