//! `[proxy] threading = "per-core"`: one single-threaded tokio runtime per worker thread,
//! each accepting clients on its own listening sockets (one per `listen` address, all
//! bound with `SO_REUSEPORT`, so the kernel spreads new connections over them). A session then runs
//! on the thread that accepted it from login to end, and the server sockets it opens are
//! registered with that thread's reactor; the pools keep one idle list per thread
//! ([`crate::net::worker`]), so that a session normally gets a server its own thread
//! polls and no wake-up crosses threads.
//!
//! The Unix-domain socket (`unix_socket_dir`) has no `SO_REUSEPORT` balancing: every
//! worker accepts on the one socket through a descriptor of its own, registered with its
//! own reactor. A new client wakes every worker; the first to accept takes it and the
//! others find nothing (`EAGAIN`), at most `workers` wake-ups per connection, once, not
//! per transaction. Whichever worker is least busy tends to get there first, which spreads
//! the clients; handing accepted sockets from one acceptor to the other workers would
//! cost a channel and a wake-up per connection and a thread that could fall behind.
//!
//! The background work (reloads, probes, the pool reaper, metrics, plugin file watching)
//! runs on a thread of its own (as with shared threading); the first worker waits for
//! SIGTERM, and every worker stops accepting and drains its own sessions, as
//! [`crate::listener::Stopping`] coordinates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::listener::Stopping;
use crate::net::listen::{Inherited, ListenError, ListenerKey, Listeners, UnixSocketFile};
use crate::session::Handoff;
use crate::state::ProxyState;

/// Why the per-core workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot start worker thread {index}: {source}")]
    Start { index: usize, source: std::io::Error },
}

/// One worker: its runtime and the listeners registered with it.
pub struct Worker {
    runtime: tokio::runtime::Runtime,
    listeners: Listeners,
}

/// `count` workers, each with a socket listening on every address of `addrs` with
/// `SO_REUSEPORT` (all on the first worker's ports where `addrs` asks for port 0), and
/// each accepting on `unix` too. At a takeover, each worker accepts on its share of the
/// sockets handed over (`inherited`) instead of binding its own.
pub fn bind(
    addrs: &[SocketAddr],
    unix: Option<(&UnixSocketFile, &std::os::unix::net::UnixListener)>,
    count: usize,
    inherited: &Inherited,
) -> Result<Vec<Worker>, WorkersError> {
    let mut workers: Vec<Worker> = Vec::with_capacity(count);
    let configured = addrs;
    let mut addrs = addrs.to_vec();
    for index in 0..count {
        let runtime = runtime();
        let listeners = {
            let _inside = runtime.enter();
            let mut listeners = Listeners::tcp(&addrs, true, inherited, (index, count))?;
            if let Some((file, listener)) = unix {
                listeners.add_unix(file, listener)?;
            }
            listeners
        };
        // Port 0: the next workers bind the ports the first one got (keyed as configured
        // for a later takeover, which finds the same configuration).
        if index == 0 && configured.iter().any(|a| a.port() == 0) {
            addrs = listeners.tcp_addrs();
        }
        workers.push(Worker { runtime, listeners });
    }
    Ok(workers)
}

/// A descriptor of every worker's sockets, to hand to a process taking over.
pub fn offer(workers: &[Worker]) -> std::io::Result<Vec<(ListenerKey, std::os::fd::OwnedFd)>> {
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.listeners.offer()?);
    }
    Ok(all)
}

/// Serves `state` with `workers`, one thread each (the first on the calling thread, which
/// stops every worker when `stop` resolves), until every worker has drained its sessions.
/// Worker `i` also serves the clients a takeover hands it through `adopted[i]`.
pub fn run(
    workers: Vec<Worker>,
    state: Arc<ProxyState>,
    stopping: Arc<Stopping>,
    stop: impl Future<Output = ()>,
    adopted: Vec<mpsc::UnboundedReceiver<Handoff>>,
) -> Result<(), WorkersError> {
    let mut workers = workers.into_iter();
    let mut adopted = adopted.into_iter();
    let first = workers.next().expect("at least one worker");
    let first_adopted = adopted.next().expect("a channel per worker");
    let mut threads = Vec::new();
    for ((offset, worker), adopted) in workers.enumerate().zip(adopted) {
        let index = offset + 1;
        let (state, stopping) = (state.clone(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name(format!("switchyard-worker-{index}"))
            .spawn(move || {
                crate::net::worker::set_current(index);
                let Worker { runtime, listeners } = worker;
                runtime.block_on(crate::listener::serve(
                    listeners,
                    state,
                    stopping,
                    std::future::pending(),
                    adopted,
                ));
            })
            .map_err(|source| WorkersError::Start { index, source })?;
        threads.push(thread);
    }
    let Worker { runtime, listeners } = first;
    runtime.block_on(crate::listener::serve(
        listeners,
        state,
        stopping,
        stop,
        first_adopted,
    ));
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
