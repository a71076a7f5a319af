//! Accepts clients, enforces `max_client_conn` and `max_unauthenticated_conn`, spawns a
//! session per client, has the pool reaper, and drives graceful shutdown: stop accepting,
//! let sessions finish their transactions up to `shutdown_timeout`, then tell the rest
//! (FATAL 57P01, their servers closed so their transactions roll back) and exit.
//!
//! A takeover (`switchyard --takeover`, see `takeover`) is a shutdown in which the
//! sessions hand their clients over instead of ending: the listener passes each
//! [`Handoff`] to the takeover's channel (in the old process), and serves the clients
//! handed to it as sessions of its own (in the new one).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchyard_protocol::backend::{error_response, ErrorFields};
use switchyard_protocol::sqlstate;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::either::Either;

use crate::net::listen::{Listeners, Offer};
use crate::net::{Peer, Stream};
use crate::session::{self, Destination, Handoff, LoggedIn, Outcome};
use crate::state::ProxyState;
use crate::stop::{Shutdown, Stop, StopWatch};

/// How long the sessions still running at `shutdown_timeout` get to tell their clients
/// before they are cut off (a client that does not read its socket).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the listeners of one proxy share to stop together (one listener, or one per
/// worker with `threading = "per-core"`): the signal that tells every session the proxy
/// is shutting down, and the point where every listener has drained its sessions, after
/// which the pools are closed. A worker's runtime stays up until then, since servers
/// registered with its reactor may be in use by another worker's sessions.
///
/// At a takeover, the clients handed over go to `handoffs` (read by `takeover`, which
/// sends them to the new process); the channel closes when every listener is done.
pub struct Stopping {
    shutdown_tx: watch::Sender<bool>,
    drained: tokio::sync::Barrier,
    /// Descriptors of the listening sockets kept for a takeover: withdrawn when the
    /// listeners stop accepting.
    offer: Arc<Offer>,
    handoffs: mpsc::UnboundedSender<Handoff>,
    /// At a takeover: clients handed over, and clients told to reconnect.
    handed_over: AtomicUsize,
    told: AtomicUsize,
}

impl Stopping {
    /// For `listeners` listeners; `shutdown_tx` is the sender of [`ProxyState::shutdown`],
    /// `offer` the descriptors kept for a takeover, `handoffs` where clients go at one.
    pub fn new(
        shutdown_tx: watch::Sender<bool>,
        listeners: usize,
        offer: Arc<Offer>,
        handoffs: mpsc::UnboundedSender<Handoff>,
    ) -> Arc<Stopping> {
        Arc::new(Stopping {
            shutdown_tx,
            drained: tokio::sync::Barrier::new(listeners),
            offer,
            handoffs,
            handed_over: AtomicUsize::new(0),
            told: AtomicUsize::new(0),
        })
    }

    /// Counts how a session ended at a takeover, and passes a handed-over client on.
    fn settle(&self, outcome: Outcome) {
        match outcome {
            Outcome::Ended => {}
            Outcome::ToldToReconnect => {
                self.told.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::HandedOver(handoff) => {
                // A closed channel (the takeover's connection failed) drops the client's
                // socket: it is closed.
                if self.handoffs.send(*handoff).is_ok() {
                    self.handed_over.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Serves clients on `listeners`, and the clients another process hands over through
/// `adopted`, until `stop` resolves or another listener began the shutdown, then drains
/// their sessions.
pub async fn serve(
    mut listeners: Listeners,
    state: Arc<ProxyState>,
    stopping: Arc<Stopping>,
    stop: impl std::future::Future<Output = ()>,
    mut adopted: mpsc::UnboundedReceiver<Handoff>,
) {
    let mut adopting = true;
    let mut sessions = JoinSet::new();
    let stop_sessions = Arc::new(Stop::default());
    let mut shutdown = state.shutdown.clone();
    let mut requested = state.stop_request.subscribe();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = shutdown.wait_for(|down| *down) => break,
            _ = requested.wait_for(Option::is_some) => break,
            accepted = listeners.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (slot, refusal) = ClientSlot::take(&state);
                if let Some(why) = refusal {
                    tracing::warn!(%peer, "refusing client: {why}");
                    tokio::spawn(refuse(stream, why, slot));
                    continue;
                }
                let state = state.clone();
                sessions.spawn(connection(stream, peer, state, slot, stop_sessions.watch(), stopping.clone()));
            }
            handoff = adopted.recv(), if adopting => match handoff {
                Some(handoff) => {
                    let (slot, _) = ClientSlot::take(&state);
                    sessions.spawn(adoption(handoff, state.clone(), slot, stop_sessions.watch(), stopping.clone()));
                }
                None => adopting = false,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listeners);
    stopping.offer.withdraw();
    let timeout = state.proxy().shutdown_timeout;
    let takeover = *requested.borrow() == Some(Shutdown::Takeover);
    if takeover {
        tracing::info!(
            clients = sessions.len(),
            ?timeout,
            "taken over: no longer accepting; handing clients over between transactions"
        );
        for pool in state.all_pools() {
            pool.drain();
        }
        stop_sessions.hand_over();
    } else {
        tracing::info!(
            clients = sessions.len(),
            ?timeout,
            "shutting down: waiting for transactions to finish"
        );
        stop_sessions.shut_down();
    }
    // The first listener to stop tells systemd, unless this process was taken over: the
    // service goes on in the new process, which systemd follows already (its READY named
    // it MAINPID), and a STOPPING from here would stop the service.
    if !stopping.shutdown_tx.send_replace(true) && !takeover {
        crate::notify::stopping();
    }
    // `SHUTDOWN IMMEDIATE` (before or during the wait) ends the wait as the timeout does.
    let immediate = async {
        let _ = requested.wait_for(|r| *r == Some(Shutdown::Immediate)).await;
    };
    let drained = tokio::select! {
        drained = tokio::time::timeout(timeout, async { while sessions.join_next().await.is_some() {} }) => drained.is_ok(),
        _ = immediate => sessions.is_empty(),
    };
    if !drained {
        tracing::warn!(
            clients = sessions.len(),
            "shutdown_timeout reached or SHUTDOWN IMMEDIATE; closing remaining clients"
        );
        stop_sessions.close();
        let told = tokio::time::timeout(CLOSE_GRACE, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if told.is_err() {
            sessions.shutdown().await;
        }
    }
    if stopping.drained.wait().await.is_leader() {
        for pool in state.all_pools() {
            pool.close();
        }
        if takeover {
            tracing::info!(
                handed_over = stopping.handed_over.load(Ordering::Relaxed),
                told_to_reconnect = stopping.told.load(Ordering::Relaxed),
                "every client handed over or ended: the old process is exiting"
            );
        } else {
            tracing::info!("shutdown complete");
        }
    }
    // The pools are closed before any worker's runtime (and reactor) goes away.
    stopping.drained.wait().await;
}

/// A client's place among `max_client_conn`, and while it logs in among
/// `max_unauthenticated_conn`; given back when dropped.
struct ClientSlot {
    state: Arc<ProxyState>,
    logging_in: bool,
}

impl ClientSlot {
    /// Takes a place for a client just accepted, and says why it must be refused if it
    /// must (the place is still taken until the refusal is sent).
    fn take(state: &Arc<ProxyState>) -> (ClientSlot, Option<&'static str>) {
        let clients = state.clients.fetch_add(1, Ordering::Relaxed) + 1;
        let logging_in = state.logging_in.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ClientSlot {
            state: state.clone(),
            logging_in: true,
        };
        let proxy = state.proxy();
        let refusal = if clients > proxy.max_client_conn {
            Some("sorry, too many clients already")
        } else if logging_in > proxy.max_unauthenticated_conn {
            Some("sorry, too many clients are logging in at once (max_unauthenticated_conn)")
        } else {
            None
        };
        (slot, refusal)
    }

    /// The client is logged in (or gone): it no longer counts as logging in.
    fn logged_in(&mut self) {
        if std::mem::take(&mut self.logging_in) {
            self.state.logging_in.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.logged_in();
        self.state.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells a client refused at accept why, as its answer to the startup packet it is about
/// to send: an ErrorResponse is what libpq shows.
async fn refuse(mut stream: Stream, why: &'static str, _slot: ClientSlot) {
    let mut out = BytesMut::new();
    error_response(&ErrorFields::fatal(sqlstate::TOO_MANY_CONNECTIONS, why), &mut out);
    let _ = stream.write_all(&out).await;
}

/// Advances the pools' coarse clocks, closes idle servers past their limits and closes
/// `SHOW STATS`' periods, once a second; runs for the life of the proxy.
pub async fn reap_pools(state: Arc<ProxyState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = crate::stats::now_us();
        let period = state.config.proxy.stats_period.as_micros() as u64;
        for pool in state.all_pools() {
            pool.reap();
            let checkouts = pool.stats.checkouts.load(Ordering::Relaxed);
            pool.stats.traffic.roll(now, period, checkouts);
        }
    }
}

/// One accepted client: its login, then its pool session or the admin console.
///
/// This future is every connected client's task, so it is kept to what the client's
/// stage needs: not an `async fn` (one keeps its arguments beside the values made of
/// them), and the session's future is made by [`attend`], so that neither the login's
/// result nor the arguments are held a second time beside it.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold some arguments twice (see above)
fn connection(
    stream: Stream,
    peer: Peer,
    state: Arc<ProxyState>,
    mut slot: ClientSlot,
    stop: Arc<StopWatch>,
    stopping: Arc<Stopping>,
) -> impl Future<Output = ()> {
    async move {
        let login = session::login(stream, peer, &state).await;
        slot.logged_in();
        // Not `login.map(attend)`: a temporary held across the await would double it.
        if let Some(client) = login {
            attend(client, peer, state, stop, stopping).await;
        }
    }
}

/// A client another process handed over: made a session of this process
/// ([`session::adopt`]) and served as if it had just logged in.
async fn adoption(
    handoff: Handoff,
    state: Arc<ProxyState>,
    mut slot: ClientSlot,
    stop: Arc<StopWatch>,
    stopping: Arc<Stopping>,
) {
    let adopted = session::adopt(handoff, &state).await;
    slot.logged_in();
    if let Some((client, peer)) = adopted {
        attend(client, peer, state, stop, stopping).await;
    }
}

/// The future that serves a logged-in client: its pool session, or (boxed, it is rare
/// and large) the admin console.
fn attend(
    client: LoggedIn,
    peer: Peer,
    state: Arc<ProxyState>,
    stop: Arc<StopWatch>,
    stopping: Arc<Stopping>,
) -> Either<impl Future<Output = ()>, Pin<Box<dyn Future<Output = ()> + Send>>> {
    match client.destination {
        Destination::Pool(ref pool) => {
            let pool = pool.clone();
            let settle = move |outcome| stopping.settle(outcome);
            Either::Left(session::serve(client, pool, peer, state, stop, settle))
        }
        Destination::Admin(role) => Either::Right(Box::pin(async move {
            if let Err(e) = crate::admin::serve(client.stream, client.buf, &state, role).await {
                tracing::info!(%peer, error = %e, "admin session ended");
            }
        })),
    }
}
