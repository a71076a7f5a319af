//! Online restart and upgrade: `switchyard --config F --takeover`, started beside a running
//! proxy, takes over its listening sockets and its clients with no refused connection and
//! no failed transaction (docs/operations.md, "Upgrading with no refused connection").
//!
//! The running proxy always listens on a Unix-domain socket for this ([`Control`]:
//! `takeover_socket`, mode 0600, and a peer that is not this user or root is turned away,
//! as SO_PEERCRED tells). The two processes speak length-prefixed JSON messages over it,
//! descriptors passed beside them (SCM_RIGHTS):
//!
//! 1. new → old `Hello`: the protocol version and the sockets the new configuration
//!    listens on. A version the old process does not speak is refused (`Refused`): the
//!    new process exits with the reason and the old one goes on serving.
//! 2. old → new `Listener` + its descriptor, for each of its sockets the new
//!    configuration has, then `ListenersEnd`. The new process binds the others anew.
//! 3. new → old `Serving` once it accepts on them. The old process stops accepting (its
//!    sockets the new configuration dropped close with it), gives up the takeover socket,
//!    answers `Stopped`, and its sessions, each at its next point between transactions,
//!    hand their clients over (`session::handoff`) or tell them to reconnect.
//! 4. old → new `Client` + the client's socket, for each client handed over, then
//!    `Done` once every session has ended; the old process then exits 0.
//!
//! Listening sockets are handed over, not shared with SO_REUSEPORT: the connections
//! waiting in a socket's accept queue belong to that socket, and are reset when the last
//! descriptor of it closes; passed over, the very same socket keeps them. (A Unix-domain
//! socket's file cannot be bound twice either.)
//!
//! The new process has loaded its configuration and plugins before it connects, so a
//! configuration or plugin that does not load leaves the old process serving, untouched.
//! If the new process goes away before `Serving`, the old one goes on as before.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::net::listen::{Inherited, ListenError, ListenerKey, Offer, UnixSocketFile};
use crate::session::{ClientRecord, Handoff, RECORD_VERSION};
use crate::state::ProxyState;
use crate::stop::Shutdown;

/// The version of this exchange (messages, and the client records they carry).
pub const PROTOCOL_VERSION: u32 = 1;

/// How long one side waits for the other's next message during the hand-over of the
/// listening sockets.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest message accepted (a client's record with its prepared statements).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Why a takeover could not be done.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("no running switchyard answers on the takeover socket {path} (start without --takeover, or give the running proxy's configuration: its [proxy] takeover_socket, or the first listen port, names the socket)")]
    NotRunning { path: PathBuf, source: std::io::Error },
    #[error("the takeover socket {path} is served by uid {uid}, not by this user (uid {own}): refusing to take over from it")]
    Stranger { path: PathBuf, uid: u32, own: u32 },
    #[error("the running switchyard refused the takeover: {0}")]
    Refused(String),
    #[error("the takeover connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed takeover message: {0}")]
    Malformed(String),
    #[error("unexpected takeover message: {0}")]
    Unexpected(&'static str),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("another process is listening on the takeover socket {path} (a switchyard with this configuration is running?): take over from it with --takeover, or set another [proxy] takeover_socket")]
    InUse { path: PathBuf },
}

/// One message of the exchange.
#[derive(Serialize, Deserialize)]
enum Message {
    Hello {
        protocol: u32,
        records: u32,
        listeners: Vec<ListenerKey>,
    },
    Refused {
        reason: String,
    },
    /// With one descriptor: a listening socket.
    Listener {
        key: ListenerKey,
    },
    ListenersEnd,
    Serving,
    Stopped,
    /// With one descriptor: the client's socket.
    Client(Box<ClientRecord>),
    Done {
        handed_over: usize,
    },
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Refused { .. } => "Refused",
            Message::Listener { .. } => "Listener",
            Message::ListenersEnd => "ListenersEnd",
            Message::Serving => "Serving",
            Message::Stopped => "Stopped",
            Message::Client(_) => "Client",
            Message::Done { .. } => "Done",
        }
    }
}

/// Sends `message` with `fds` beside it: a header (length, descriptor count) and the JSON
/// body in one `sendmsg`, the descriptors attached to its first byte.
fn send(sock: &mut UnixStream, message: &Message, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&(body.len() as u32).to_be_bytes());
    header[4..].copy_from_slice(&(fds.len() as u32).to_be_bytes());
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many descriptors for one message"));
    }
    let total = header.len() + body.len();
    let sent = rustix::net::sendmsg(
        &*sock,
        &[IoSlice::new(&header), IoSlice::new(&body)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // A signal may cut a blocking send short; the descriptors went with the first byte.
    if sent < header.len() {
        sock.write_all(&header[sent..])?;
        sock.write_all(&body)?;
    } else if sent < total {
        sock.write_all(&body[sent - header.len()..])?;
    }
    Ok(())
}

/// Receives one message and the descriptors sent with it.
fn recv(sock: &mut UnixStream) -> Result<(Message, Vec<OwnedFd>), TakeoverError> {
    let mut header = [0u8; 8];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match rustix::net::recvmsg(
            &*sock,
            &mut [IoSliceMut::new(&mut header)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    };
    let fds: Vec<OwnedFd> = control
        .drain()
        .filter_map(|m| match m {
            RecvAncillaryMessage::ScmRights(fds) => Some(fds.collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    if got == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    sock.read_exact(&mut header[got..])?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let count = u32::from_be_bytes(header[4..].try_into().expect("4 bytes")) as usize;
    if len > MAX_MESSAGE {
        return Err(TakeoverError::Malformed(format!("a message of {len} bytes")));
    }
    if fds.len() != count {
        return Err(TakeoverError::Malformed(format!(
            "{} descriptors received, {count} sent",
            fds.len()
        )));
    }
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body)?;
    let message = serde_json::from_slice(&body).map_err(|e| TakeoverError::Malformed(e.to_string()))?;
    Ok((message, fds))
}

/// Tells the new process on `conn` why it is refused (as far as it still listens) and
/// returns the error for this side.
fn refuse(conn: &mut UnixStream, reason: String) -> TakeoverError {
    let _ = send(
        conn,
        &Message::Refused {
            reason: reason.clone(),
        },
        &[],
    );
    TakeoverError::Refused(reason)
}

/// Why a new process speaking `protocol` (its client records in version `records`) is
/// refused, if it is: two processes hand sockets and clients to each other only when they
/// speak the same versions.
fn refusal(protocol: u32, records: u32) -> Option<String> {
    (protocol != PROTOCOL_VERSION || records != RECORD_VERSION).then(|| {
        format!(
            "the new process speaks takeover protocol version {protocol} (client records version {records}); this switchyard ({}) speaks {PROTOCOL_VERSION} ({RECORD_VERSION}): stop it and start the new one instead",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// Whether the process at the other end of `sock` runs as this user or as root.
fn peer_uid(sock: &UnixStream) -> std::io::Result<(u32, u32)> {
    let cred = rustix::net::sockopt::socket_peercred(sock)?;
    Ok((cred.uid.as_raw(), rustix::process::getuid().as_raw()))
}

fn trusted((peer, own): (u32, u32)) -> bool {
    peer == own || peer == 0
}

/// The running proxy's side: the takeover socket, and what it hands over.
pub struct Control {
    state: Arc<ProxyState>,
    path: PathBuf,
    /// The listening sockets, by what they listen for (descriptors of their own, shared
    /// with the listeners, which withdraw them when they stop).
    sockets: Arc<Offer>,
    /// The clients' Unix-domain socket file, left in place once handed over (weak: the
    /// listeners' owner removes it at a plain stop, while this thread waits on).
    unix_file: Option<std::sync::Weak<UnixSocketFile>>,
    handoffs: mpsc::UnboundedReceiver<Handoff>,
}

/// The takeover socket's file, removed when dropped: by the thread when a takeover
/// succeeded (the new process binds it in turn), else at a clean stop.
type SocketFile = Arc<std::sync::Mutex<Option<UnixSocketFile>>>;

/// The running side's thread.
struct ControlHandle {
    /// Set once a takeover began: the process must then send every client before it exits.
    started: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    file: SocketFile,
}

/// What `main` waits for once the listeners are done: the clients handed over sent to the
/// new process, if a takeover is under way.
pub struct Finisher(Arc<std::sync::Mutex<Option<ControlHandle>>>);

impl Finisher {
    /// Once the listeners have ended every session: waits (at most `limit`) until the
    /// clients handed over have gone to the new process, if a takeover is under way.
    pub fn finish(self, limit: Duration) {
        let Some(handle) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if !handle.started.load(std::sync::atomic::Ordering::SeqCst) {
            // A plain stop: the socket file goes (the thread stays blocked in accept).
            drop(handle.file.lock().unwrap_or_else(|e| e.into_inner()).take());
            return;
        }
        let deadline = std::time::Instant::now() + limit;
        while !handle.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.thread.is_finished() {
            let _ = handle.thread.join();
        } else {
            tracing::warn!("the new process did not take every client in time; exiting anyway");
        }
    }
}

/// Starts serving takeovers with `control`: at once, or, in a process that is itself
/// taking over (`incoming`), once the old process has let go of the takeover socket (the
/// listeners must be set up first: the old process stops accepting then). The clients
/// the old process hands over go to `adopters` in turn.
pub fn start(
    control: Control,
    incoming: Option<Incoming>,
    adopters: Vec<mpsc::UnboundedSender<Handoff>>,
) -> Result<Finisher, TakeoverError> {
    let Some(incoming) = incoming else {
        return Ok(Finisher(Arc::new(std::sync::Mutex::new(Some(control.start()?)))));
    };
    let slot = Arc::new(std::sync::Mutex::new(None));
    let filled = slot.clone();
    incoming.serving(adopters, move || match control.start() {
        Ok(handle) => *filled.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle),
        Err(e) => tracing::error!(error = %e, "cannot listen for takeovers after taking over; a later --takeover will not find this process"),
    })?;
    Ok(Finisher(slot))
}

impl Control {
    /// Serves takeovers on `state`'s `takeover_socket` for the process's life, handing over
    /// `sockets` and the clients that come through `handoffs`.
    pub fn new(
        state: Arc<ProxyState>,
        sockets: Arc<Offer>,
        unix_file: Option<&Arc<UnixSocketFile>>,
        handoffs: mpsc::UnboundedReceiver<Handoff>,
    ) -> Control {
        let unix_file = unix_file.map(Arc::downgrade);
        let path = state.config.proxy.takeover_socket_path();
        Control {
            state,
            path,
            sockets,
            unix_file,
            handoffs,
        }
    }

    /// Binds the takeover socket and serves it on a thread of its own.
    fn start(self) -> Result<ControlHandle, TakeoverError> {
        let (file, listener) = bind(&self.path)?;
        let file: SocketFile = Arc::new(std::sync::Mutex::new(Some(file)));
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, owned) = (started.clone(), file.clone());
        let thread = std::thread::Builder::new()
            .name("switchyard-takeover".into())
            .spawn(move || self.run(listener, &owned, &flag))?;
        Ok(ControlHandle {
            started,
            thread,
            file,
        })
    }

    /// Serves takeover attempts until one succeeds, then hands the clients over.
    fn run(mut self, listener: UnixListener, file: &SocketFile, started: &std::sync::atomic::AtomicBool) {
        loop {
            let mut conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "takeover socket: accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            match peer_uid(&conn) {
                Ok(ids) if trusted(ids) => {}
                Ok((peer, _)) => {
                    tracing::warn!(uid = peer, "takeover socket: refusing a process of another user");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "takeover socket: cannot tell who connected");
                    continue;
                }
            }
            match self.hand_listeners_over(&mut conn) {
                Ok(()) => {
                    // Set before the stop is asked for: the sessions may all end, and
                    // `Finisher::finish` run, before this thread goes on; it must then
                    // wait for the clients to be sent, not exit as at a plain stop.
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                    self.state.stop_request.send_replace(Some(Shutdown::Takeover));
                    // The new process takes the takeover socket's place.
                    drop(file.lock().unwrap_or_else(|e| e.into_inner()).take());
                    drop(listener);
                    if let Err(e) = send(&mut conn, &Message::Stopped, &[]) {
                        tracing::error!(error = %e, "takeover: the new process went away after taking the listeners");
                    }
                    self.hand_clients_over(conn);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "takeover attempt failed; this process goes on serving");
                }
            }
        }
    }

    /// Steps 1 to 3 (module docs): the new process's hello, the sockets it wants, its
    /// `Serving`; the caller then stops this process accepting.
    fn hand_listeners_over(&mut self, conn: &mut UnixStream) -> Result<(), TakeoverError> {
        conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        conn.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let wanted = match recv(conn)? {
            (
                Message::Hello {
                    protocol,
                    records,
                    listeners,
                },
                _,
            ) => {
                if let Some(reason) = refusal(protocol, records) {
                    return Err(refuse(conn, reason));
                }
                listeners
            }
            (other, _) => return Err(TakeoverError::Unexpected(other.name())),
        };
        tracing::info!("takeover: a new process asks for the listening sockets");
        let Some(sockets) = self.sockets.wanted(&wanted)? else {
            return Err(refuse(
                conn,
                "this switchyard is shutting down: start the new one without --takeover".to_owned(),
            ));
        };
        for (key, fd) in &sockets {
            tracing::info!(%key, "takeover: handing a listening socket over");
            send(conn, &Message::Listener { key: key.clone() }, &[fd.as_fd()])?;
        }
        send(conn, &Message::ListenersEnd, &[])?;
        match recv(conn)? {
            (Message::Serving, _) => {}
            (other, _) => return Err(TakeoverError::Unexpected(other.name())),
        }
        if let Some(file) = self.unix_file.as_ref().and_then(std::sync::Weak::upgrade) {
            if wanted.contains(&ListenerKey::Unix(file.path().to_owned())) {
                file.keep();
            }
        }
        // The sockets the new configuration dropped close once the listeners let go too.
        self.sockets.withdraw();
        tracing::info!(
            listeners = sockets.len(),
            "takeover: the new process serves; no longer accepting, handing clients over between transactions"
        );
        Ok(())
    }

    /// Step 4: every client the sessions hand over goes to the new process, until every
    /// session here has ended.
    fn hand_clients_over(mut self, mut conn: UnixStream) {
        let _ = conn.set_read_timeout(None);
        let mut handed_over = 0usize;
        let mut failed = false;
        while let Some(handoff) = self.handoffs.blocking_recv() {
            if failed {
                continue; // the socket closes with the handoff: the client is cut off
            }
            let Handoff { fd, record } = handoff;
            match send(&mut conn, &Message::Client(Box::new(record)), &[fd.as_fd()]) {
                Ok(()) => handed_over += 1,
                Err(e) => {
                    tracing::error!(error = %e, "takeover: cannot send a client to the new process; closing the clients left");
                    failed = true;
                }
            }
        }
        if !failed {
            let _ = send(&mut conn, &Message::Done { handed_over }, &[]);
        }
        tracing::info!(handed_over, "takeover: every client handed over or ended");
    }
}

/// Listens on the takeover socket at `path` (mode 0600). A socket file nothing answers on
/// is replaced; one a live process answers on is an error.
fn bind(path: &Path) -> Result<(UnixSocketFile, UnixListener), TakeoverError> {
    match UnixSocketFile::bind(path, 0o600) {
        Ok((file, listener)) => {
            listener.set_nonblocking(false).map_err(TakeoverError::Io)?;
            tracing::info!(path = %path.display(), "listening for takeovers");
            Ok((file, listener))
        }
        Err(ListenError::UnixInUse { path }) => Err(TakeoverError::InUse { path }),
        Err(e) => Err(e.into()),
    }
}

/// The new process's side, between asking and serving: the sockets handed over.
pub struct Incoming {
    conn: UnixStream,
    pub inherited: Inherited,
}

impl Incoming {
    /// Asks the proxy on `path` for its listening sockets among `wanted` (what this
    /// process's configuration listens on).
    pub fn connect(path: &Path, wanted: Vec<ListenerKey>) -> Result<Incoming, TakeoverError> {
        let mut conn = UnixStream::connect(path).map_err(|source| TakeoverError::NotRunning {
            path: path.to_owned(),
            source,
        })?;
        let (peer, own) = peer_uid(&conn)?;
        if !trusted((peer, own)) {
            return Err(TakeoverError::Stranger {
                path: path.to_owned(),
                uid: peer,
                own,
            });
        }
        conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        conn.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let hello = Message::Hello {
            protocol: PROTOCOL_VERSION,
            records: RECORD_VERSION,
            listeners: wanted,
        };
        send(&mut conn, &hello, &[])?;
        let mut inherited = Inherited::default();
        loop {
            match recv(&mut conn)? {
                (Message::Listener { key }, mut fds) if fds.len() == 1 => {
                    inherited.add(key, fds.remove(0));
                }
                (Message::ListenersEnd, _) => break,
                (Message::Refused { reason }, _) => return Err(TakeoverError::Refused(reason)),
                (other, _) => return Err(TakeoverError::Unexpected(other.name())),
            }
        }
        tracing::info!(
            listeners = inherited.len(),
            "takeover: listening sockets received"
        );
        Ok(Incoming { conn, inherited })
    }

    /// This process accepts on the sockets: tells the old one, which stops accepting, and
    /// once it has let go of the takeover socket runs `then` (this process binds it in
    /// turn). Then, on a thread of its own, passes each client handed over to one of
    /// `adopters` (the listeners, in turn).
    fn serving(
        mut self,
        adopters: Vec<mpsc::UnboundedSender<Handoff>>,
        then: impl FnOnce() + Send + 'static,
    ) -> Result<(), TakeoverError> {
        send(&mut self.conn, &Message::Serving, &[])?;
        match recv(&mut self.conn)? {
            (Message::Stopped, _) => {}
            (other, _) => return Err(TakeoverError::Unexpected(other.name())),
        }
        tracing::info!("takeover: the old process stopped accepting; adopting its clients");
        then();
        std::thread::Builder::new()
            .name("switchyard-adopt".into())
            .spawn(move || self.adopt(&adopters))?;
        Ok(())
    }

    fn adopt(mut self, adopters: &[mpsc::UnboundedSender<Handoff>]) {
        let _ = self.conn.set_read_timeout(None);
        let mut adopted = 0usize;
        loop {
            match recv(&mut self.conn) {
                Ok((Message::Client(record), mut fds)) if fds.len() == 1 => {
                    let handoff = Handoff {
                        fd: fds.remove(0),
                        record: *record,
                    };
                    if adopters[adopted % adopters.len()].send(handoff).is_err() {
                        tracing::warn!("takeover: a client arrived after this process began to stop");
                    }
                    adopted += 1;
                }
                Ok((Message::Done { handed_over }, _)) => {
                    tracing::info!(
                        adopted,
                        handed_over,
                        "takeover complete: the old process handed every client it could"
                    );
                    return;
                }
                Ok((other, _)) => {
                    tracing::error!(
                        message = other.name(),
                        "takeover: unexpected message; no more clients are taken"
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, adopted, "takeover: the old process's connection ended before it was done");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message and the descriptors beside it arrive whole and in order, over a socket
    /// pair as over the takeover socket: a listening socket passed over still has the
    /// connection waiting in its accept queue.
    #[test]
    fn messages_carry_their_descriptors() {
        let (mut old, mut new) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting = std::net::TcpStream::connect(addr).unwrap();
        let key = ListenerKey::Tcp(addr);
        send(
            &mut old,
            &Message::Listener { key: key.clone() },
            &[listener.as_fd()],
        )
        .unwrap();
        send(&mut old, &Message::ListenersEnd, &[]).unwrap();
        drop(listener);
        let (message, mut fds) = recv(&mut new).unwrap();
        assert!(matches!(message, Message::Listener { key: k } if k == key));
        assert_eq!(fds.len(), 1);
        let passed = std::net::TcpListener::from(fds.remove(0));
        let (accepted, _) = passed.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), waiting.local_addr().unwrap());
        let (message, fds) = recv(&mut new).unwrap();
        assert!(matches!(message, Message::ListenersEnd) && fds.is_empty());
    }

    /// A peer that closes mid-exchange is an error, not a hang; so is garbage.
    #[test]
    fn a_closed_or_garbled_peer_is_an_error() {
        let (old, mut new) = UnixStream::pair().unwrap();
        drop(old);
        assert!(matches!(recv(&mut new), Err(TakeoverError::Io(_))));
        let (mut old, mut new) = UnixStream::pair().unwrap();
        old.write_all(&[0, 0, 0, 3, 0, 0, 0, 0, b'{', b'{', b'{'])
            .unwrap();
        assert!(matches!(recv(&mut new), Err(TakeoverError::Malformed(_))));
    }

    /// Another protocol or record version is refused with a reason naming both.
    #[test]
    fn another_version_is_refused() {
        assert_eq!(refusal(PROTOCOL_VERSION, RECORD_VERSION), None);
        let why = refusal(PROTOCOL_VERSION + 1, RECORD_VERSION).unwrap();
        assert!(
            why.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
            "{why}"
        );
        assert!(refusal(PROTOCOL_VERSION, RECORD_VERSION + 1).is_some());
    }
}
