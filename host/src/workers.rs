//! `[proxy] threading = "per-core"`: one single-threaded tokio runtime per worker thread,
//! each accepting clients on its own listening socket (all bound to `listen` with
//! `SO_REUSEPORT`, so the kernel spreads new connections over them). A session then runs
//! on the thread that accepted it from login to end, and the server sockets it opens are
//! registered with that thread's reactor; the pools keep one idle list per thread
//! ([`crate::net::worker`]), so that a session normally gets a server its own thread
//! polls and no wake-up crosses threads.
//!
//! The background work (reloads, probes, the pool reaper, metrics, plugin file watching)
//! runs on a thread of its own (as with shared threading); the first worker waits for
//! SIGTERM, and every worker stops accepting and drains its own sessions, as
//! [`crate::listener::Stopping`] coordinates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::listener::Stopping;
use crate::state::ProxyState;

/// Why the per-core workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker thread {index}: {source}")]
    Start { index: usize, source: std::io::Error },
}

/// One worker: its runtime and the listener registered with it.
pub struct Worker {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
}

/// `count` workers, each with a socket listening on `addr` with `SO_REUSEPORT` (all on
/// the first one's port when `addr` asks for port 0).
pub fn bind(addr: SocketAddr, count: usize) -> Result<Vec<Worker>, WorkersError> {
    let mut workers: Vec<Worker> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let runtime = runtime();
        let listener = {
            let _inside = runtime.enter();
            listen(addr).map_err(|source| WorkersError::Listen { addr, source })?
        };
        addr = listener
            .local_addr()
            .map_err(|source| WorkersError::Listen { addr, source })?;
        workers.push(Worker { runtime, listener });
    }
    Ok(workers)
}

/// A socket listening on `addr` that other sockets of this process may listen on too.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves `state` with `workers`, one thread each (the first on the calling thread, which
/// stops every worker when `stop` resolves), until every worker has drained its sessions.
pub fn run(
    workers: Vec<Worker>,
    state: Arc<ProxyState>,
    stopping: Arc<Stopping>,
    stop: impl Future<Output = ()>,
) -> Result<(), WorkersError> {
    let mut workers = workers.into_iter();
    let first = workers.next().expect("at least one worker");
    let mut threads = Vec::new();
    for (offset, worker) in workers.enumerate() {
        let index = offset + 1;
        let (state, stopping) = (state.clone(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-worker-{index}"))
            .spawn(move || {
                crate::net::worker::set_current(index);
                let Worker { runtime, listener } = worker;
                runtime.block_on(crate::listener::serve(
                    listener,
                    state,
                    stopping,
                    std::future::pending(),
                ));
            })
            .map_err(|source| WorkersError::Start { index, source })?;
        threads.push(thread);
    }
    let Worker { runtime, listener } = first;
    runtime.block_on(crate::listener::serve(listener, state, stopping, stop));
    for thread in threads {
        // A worker that panicked has reported it; the others have drained.
        let _ = thread.join();
    }
    Ok(())
}

/// A worker's runtime: single-threaded, with I/O and timers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources that can run out")
}
