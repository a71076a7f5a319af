//! Query cancellation. Each client gets a proxy-issued (process id, secret key); a
//! CancelRequest carrying them is forwarded to whichever server runs that client's work
//! right now, using that server's own key. Nothing is sent when the client holds no server.
//!
//! A cancel must never reach the next client of that server. So the target is read and the
//! cancel counted as in flight in one step, under the slot's lock, and a session that gives
//! its server up while a cancel for it is in flight learns so ([`CancelSlot::vacate`]); the
//! server then waits out of the pool until Postgres has closed the cancel connection, which
//! it does after signalling the backend ([`CancelsInFlight::delivered`]). A backend that gets
//! the signal while it waits for its next command ignores it. A cancel whose delivery cannot
//! be confirmed in `DELIVERY_TIMEOUT` (5 s) gets its server closed instead of returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::server::NodeAddr;

/// How long a forwarded cancel may take, from the connect to Postgres to its closing the
/// connection; past it, the server the cancel was meant for is closed, not reused.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The server a client's query runs on, as its CancelRequest must name it.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub addr: NodeAddr,
    pub process_id: i32,
    pub secret_key: i32,
}

/// The cancels forwarded while a session held one server: each forwarder holds a read guard
/// until it is done, and sets the flag if it could not confirm delivery. Made by the first
/// such cancel only, so a session that is never cancelled allocates nothing.
type Flight = Arc<RwLock<AtomicBool>>;

#[derive(Default)]
struct Held {
    target: Option<CancelTarget>,
    flight: Option<Flight>,
    /// The client's statement waits in or runs through a pipeline instead.
    pipelined: Option<PipelinedCancel>,
}

/// A statement handed to a pipeline (`pool::pipeline`): a cancel for it goes to the
/// pipeline's driver, which answers it itself while the statement is not written yet, and
/// otherwise forwards it only once the statement is the only one outstanding on its server.
#[derive(Debug, Clone)]
pub struct PipelinedCancel {
    pub ask: tokio::sync::mpsc::UnboundedSender<u64>,
    pub ticket: u64,
}

/// Where a session publishes the server it currently holds.
#[derive(Default)]
pub struct CancelSlot {
    held: Mutex<Held>,
}

impl CancelSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session now holds the server `target`: cancels go there.
    pub fn hold(&self, target: CancelTarget) {
        *self.lock() = Held {
            target: Some(target),
            flight: None,
            pipelined: None,
        };
    }

    /// The session's statement is in a pipeline: cancels go to its driver (see
    /// [`PipelinedCancel`]) until [`CancelSlot::vacate`].
    pub fn pipelined(&self, to: PipelinedCancel) {
        *self.lock() = Held {
            target: None,
            flight: None,
            pipelined: Some(to),
        };
    }

    /// The session gives its server up (returned, closed or lost): cancels arriving from now
    /// on are not forwarded. Returns the cancels already forwarded to that server, if any;
    /// a server that goes back to the pool must wait for them (a closed one need not).
    pub fn vacate(&self) -> Option<CancelsInFlight> {
        let mut held = self.lock();
        held.target = None;
        held.pipelined = None;
        held.flight.take().map(CancelsInFlight)
    }

    /// The target of a cancel arriving now, counted in flight until the guard is dropped.
    fn claim(&self) -> Option<(CancelTarget, Forwarding)> {
        let mut held = self.lock();
        let target = held.target.clone()?;
        let flight = held.flight.get_or_insert_with(Flight::default).clone();
        let guard = flight
            .try_read_owned()
            .expect("a flight is write-locked only after vacate took it out of the slot");
        Some((
            target,
            Forwarding {
                guard,
                delivered: false,
            },
        ))
    }
}

/// One forwarder's share of a [`Flight`]. Dropped without `delivered` (an error, a timeout,
/// the forwarding task cancelled), it marks the flight doubtful.
struct Forwarding {
    guard: OwnedRwLockReadGuard<AtomicBool>,
    delivered: bool,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if !self.delivered {
            self.guard.store(true, Ordering::Relaxed);
        }
    }
}

/// Cancels forwarded to a server its session has given up.
pub struct CancelsInFlight(Flight);

impl CancelsInFlight {
    /// Waits until every cancel forwarded to the server is done; true when Postgres
    /// confirmed each, so the server may serve another client; false when one may still
    /// arrive (the caller closes the server).
    pub async fn delivered(self) -> bool {
        let doubtful = self.0.write().await.load(Ordering::Relaxed);
        if doubtful {
            tracing::info!("closing a server that a cancel request may still reach");
        }
        !doubtful
    }
}

/// All clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// Removes a client's key when its session ends.
pub struct CancelRegistration {
    registry: Arc<CancelRegistry>,
    pub process_id: i32,
    pub secret_key: i32,
    pub slot: Arc<CancelSlot>,
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// Issues a fresh, unique key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelRegistration {
        let slot = Arc::new(CancelSlot::default());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let process_id = rand::random::<i32>() & i32::MAX;
            if process_id == 0 || clients.contains_key(&process_id) {
                continue;
            }
            let secret_key = rand::random::<i32>();
            clients.insert(process_id, (secret_key, slot.clone()));
            return CancelRegistration {
                registry: self.clone(),
                process_id,
                secret_key,
                slot,
            };
        }
    }

    /// Registers the key a client was given by the process this one took over from, so
    /// that the cancels it sends here reach its queries; `None` if a client of this
    /// process already has that process id (the caller issues a fresh key instead).
    pub fn register_as(self: &Arc<Self>, process_id: i32, secret_key: i32) -> Option<CancelRegistration> {
        let slot = Arc::new(CancelSlot::default());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if process_id == 0 || clients.contains_key(&process_id) {
            return None;
        }
        clients.insert(process_id, (secret_key, slot.clone()));
        Some(CancelRegistration {
            registry: self.clone(),
            process_id,
            secret_key,
            slot,
        })
    }

    /// Forwards a client's CancelRequest and returns once Postgres has acted on it (or it
    /// failed); a wrong key or an idle client is silently ignored, as Postgres does.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) {
        if let Some(p) = self.pipelined(process_id, secret_key) {
            // The driver may be gone (the statement just finished): nothing to cancel then.
            let _ = p.ask.send(p.ticket);
            return;
        }
        if let Some(claim) = self.claim(process_id, secret_key) {
            claim.forward().await;
        }
    }

    /// Where a cancel for this client goes when its statement is in a pipeline.
    fn pipelined(&self, process_id: i32, secret_key: i32) -> Option<PipelinedCancel> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&process_id) {
            Some((key, slot)) if *key == secret_key => slot.lock().pipelined.clone(),
            _ => None,
        }
    }

    /// The server a cancel for this client arriving now must reach, counted in flight from
    /// now on (so the server cannot serve another client before it is delivered), or `None`
    /// for a wrong key or an idle client. A session ending on a timeout claims before it
    /// gives its server up and forwards in the background.
    pub fn claim(&self, process_id: i32, secret_key: i32) -> Option<CancelClaim> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let claimed = match clients.get(&process_id) {
            Some((key, slot)) if *key == secret_key => slot.claim(),
            _ => None,
        };
        if claimed.is_none() {
            tracing::debug!(process_id, "cancel request for no running query");
        }
        claimed.map(|(target, forwarding)| CancelClaim { target, forwarding })
    }
}

/// A cancel counted in flight for its server ([`CancelRegistry::claim`]), to be forwarded.
pub struct CancelClaim {
    target: CancelTarget,
    forwarding: Forwarding,
}

impl CancelClaim {
    /// Sends the CancelRequest; returns once Postgres has acted on it, or it failed or took
    /// longer than `DELIVERY_TIMEOUT` (then its server is closed, not reused).
    pub async fn forward(mut self) {
        self.forwarding.delivered = forward_to(&self.target).await;
    }
}

/// Sends a CancelRequest to `t`; true once Postgres has acted on it, false when it failed
/// or took longer than `DELIVERY_TIMEOUT` (its server must then be closed, not reused).
pub async fn forward_to(t: &CancelTarget) -> bool {
    match tokio::time::timeout(DELIVERY_TIMEOUT, deliver(t)).await {
        Ok(Ok(())) => {
            tracing::info!(server = %t.addr, pid = t.process_id, "forwarded cancel request");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(server = %t.addr, pid = t.process_id, error = %e, "cannot forward cancel request; its server will be closed");
            false
        }
        Err(_) => {
            tracing::warn!(
                server = %t.addr,
                pid = t.process_id,
                timeout = ?DELIVERY_TIMEOUT,
                "cancel request not confirmed in time; its server will be closed"
            );
            false
        }
    }
}

/// Sends the CancelRequest and waits for Postgres to close the connection, which it does
/// once it has signalled the backend (or found the key unknown).
async fn deliver(t: &CancelTarget) -> std::io::Result<()> {
    let mut msg = BytesMut::new();
    switchyard_protocol::frontend::encode_cancel_request(t.process_id, t.secret_key, &mut msg);
    let mut s = TcpStream::connect((&*t.addr.host, t.addr.port)).await?;
    s.write_all(&msg).await?;
    let mut rest = [0u8; 64];
    while s.read(&mut rest).await? != 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            addr: NodeAddr {
                host: "127.0.0.1".into(),
                port: 1,
            },
            process_id: 7,
            secret_key: 8,
        }
    }

    #[test]
    fn no_cancel_in_flight_when_none_was_forwarded() {
        let slot = CancelSlot::default();
        slot.hold(target());
        assert!(slot.vacate().is_none());
        assert!(slot.claim().is_none(), "a vacated slot forwards nothing");
    }

    /// Whether `f` is still pending after a (paused-clock) second.
    async fn pending<F: std::future::Future + Unpin>(f: &mut F) -> bool {
        tokio::time::timeout(Duration::from_secs(1), f).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn server_waits_for_the_forwarder_and_is_closed_if_unconfirmed() {
        let slot = CancelSlot::default();
        slot.hold(target());
        let (_, mut confirmed) = slot.claim().expect("the slot holds a server");
        let (_, unconfirmed) = slot.claim().expect("the slot holds a server");
        let cancels = slot.vacate().expect("two cancels are in flight");
        assert!(slot.claim().is_none(), "no cancel is forwarded after vacate");
        let mut waiting = Box::pin(cancels.delivered());
        assert!(pending(&mut waiting).await);
        confirmed.delivered = true;
        drop(confirmed);
        assert!(pending(&mut waiting).await);
        drop(unconfirmed);
        assert!(!waiting.await, "an unconfirmed cancel must close the server");

        slot.hold(target());
        let (_, mut only) = slot.claim().expect("the slot holds a server");
        only.delivered = true;
        drop(only);
        assert!(slot.vacate().expect("one cancel was forwarded").delivered().await);
    }
}
