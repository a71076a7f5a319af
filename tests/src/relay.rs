//! A fault-injecting TCP relay for the chaos tests: it sits between the proxy and a
//! PostgreSQL node (the node's address in the proxy's configuration is the relay's) and, on
//! command, does to every connection through it what a bad network does: adds latency,
//! stalls, resets, or goes silent (a half-open connection: the peer vanished without a FIN
//! or RST).
//!
//! Faults apply to the connections that exist and to new ones alike. A stall stops reading
//! (so TCP back-pressure reaches both ends) and forwards everything once lifted; a reset
//! ends every connection that exists at that moment with an RST to both ends
//! (`SO_LINGER` 0); silence reads and discards both directions, never forwarding a byte or
//! an end of stream, until [`Relay::heal`], which resets the connections that went silent
//! (as a peer that rebooted answers the next packet with an RST).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the relay does to the bytes passing through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward each chunk after this delay (zero: a plain relay).
    Latency(Duration),
    /// Read nothing, forward nothing, until the fault changes.
    Stall,
    /// Read and discard both directions; no byte and no end of stream gets through.
    Silence,
}

#[derive(Clone, Copy, Debug)]
struct State {
    fault: Fault,
    /// Connections accepted before the last change of this number are reset.
    resets: u64,
}

/// A relay listening on a loopback port, forwarding to one target. Dropping it stops
/// accepting and resets every connection through it.
pub struct Relay {
    addr: SocketAddr,
    state: watch::Sender<State>,
    live: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port and forwards every connection to `target`. Call it
    /// within a tokio runtime (the relay's tasks run there).
    pub fn start(target: SocketAddr) -> Result<Relay> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener).context("the relay needs a tokio runtime")?;
        let (state, _) = watch::channel(State {
            fault: Fault::Latency(Duration::ZERO),
            resets: 0,
        });
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(listener, target, state.clone(), live.clone()));
        Ok(Relay {
            addr,
            state,
            live,
            accept,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Applies `fault` to every connection, present and future.
    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    /// Resets (RST to both ends) every connection through the relay now; later ones pass.
    pub fn reset_all(&self) {
        self.state.send_modify(|s| s.resets += 1);
    }

    /// Ends a [`Fault::Silence`]: the connections that exist are reset and new ones pass
    /// unharmed. (A stall or latency ends with `set(Fault::Latency(Duration::ZERO))`, which
    /// keeps the connections.)
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            s.fault = Fault::Latency(Duration::ZERO);
            s.resets += 1;
        });
    }

    /// Connections through the relay now.
    pub fn connections(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Sender<State>,
    live: Arc<AtomicUsize>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let rx = state.subscribe();
        let live = live.clone();
        tokio::spawn(async move {
            // A target that refuses is passed on as the relay closing the connection.
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            live.fetch_add(1, Ordering::SeqCst);
            relay(client, server, rx).await;
            live.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Pumps both directions, each on its own task (as a network buffers each direction on its
/// own), until both ends have closed or the connection is reset.
async fn relay(client: TcpStream, server: TcpStream, state: watch::Receiver<State>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let born = state.borrow().resets;
    let (client, server) = (Arc::new(client), Arc::new(server));
    let up = tokio::spawn(pump(client.clone(), server.clone(), state.clone(), born));
    let down = tokio::spawn(pump(server.clone(), client.clone(), state, born));
    let (up, down) = tokio::join!(up, down);
    if matches!(up, Ok(End::Reset)) || matches!(down, Ok(End::Reset)) {
        // Closing a socket with SO_LINGER 0 sends an RST instead of a FIN.
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

/// How one direction's pump ended.
enum End {
    /// The reading side closed; the writing side was shut down (FIN), as a relay would.
    Closed,
    /// The connection is to be reset (both directions stop).
    Reset,
}

async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>, mut state: watch::Receiver<State>, born: u64) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = *state.borrow_and_update();
        if now.resets != born {
            return End::Reset;
        }
        // `None`: silence (read and discard).
        let delay = match now.fault {
            Fault::Stall => {
                if state.changed().await.is_err() {
                    return End::Reset;
                }
                continue;
            }
            Fault::Silence => None,
            Fault::Latency(delay) => Some(delay),
        };
        let read = tokio::select! {
            r = read_some(&from, &mut buf) => r,
            changed = state.changed() => {
                if changed.is_err() {
                    return End::Reset;
                }
                continue;
            }
        };
        match (read, delay) {
            // Silence swallows data and ends of stream alike; the pump waits to be healed.
            (Ok(0) | Err(_), None) => {
                if state.changed().await.is_err() {
                    return End::Reset;
                }
            }
            (Ok(_), None) => {}
            (Ok(0), Some(_)) => {
                shutdown_write(&to);
                return End::Closed;
            }
            (Err(_), Some(_)) => return End::Reset,
            (Ok(n), Some(delay)) => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if write_all(&to, &buf[..n]).await.is_err() {
                    return End::Reset;
                }
            }
        }
    }
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends a FIN on `stream` (the other direction stays open).
fn shutdown_write(stream: &TcpStream) {
    // SAFETY: the descriptor is open for as long as `stream` lives.
    unsafe {
        libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR);
    }
}
