//! One node's share of a pool: its idle servers and the slots that bound how many servers
//! it has. A pool has one for the primary and one per node for reads, so that the size
//! limit, FIFO waiting and idle reaping are written once.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::ServerConn;

/// A server in an idle list and when it was returned, by the pool's coarse clock.
pub(super) struct IdleServer {
    /// Boxed, so a server moves between the pool and a session as a pointer.
    pub conn: Box<ServerConn>,
    pub since_ms: u64,
}

pub(super) struct Servers {
    idle: Mutex<Vec<IdleServer>>,
    permits: Arc<Semaphore>,
}

impl Servers {
    pub fn new(size: usize) -> Servers {
        Servers {
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
        }
    }

    /// A free slot, without waiting.
    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A slot, waiting in FIFO order; `None` once closed.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    pub fn pop_idle(&self) -> Option<Box<ServerConn>> {
        self.lock().pop().map(|i| i.conn)
    }

    /// When the longest-idle server fell idle, by the pool's coarse clock.
    pub fn oldest_idle_since(&self) -> Option<u64> {
        self.lock().first().map(|i| i.since_ms)
    }

    /// Takes the longest-idle server out (to be closed: `max_db_connections`,
    /// `max_user_connections`).
    pub fn evict_oldest(&self) -> Option<Box<ServerConn>> {
        let mut idle = self.lock();
        (!idle.is_empty()).then(|| idle.remove(0).conn)
    }

    pub fn push(&self, idle: IdleServer) {
        self.lock().push(idle);
    }

    /// Keeps the idle servers `keep` accepts; returns how many were closed.
    pub fn retain(&self, keep: impl FnMut(&IdleServer) -> bool) -> usize {
        let mut idle = self.lock();
        let before = idle.len();
        idle.retain(keep);
        before - idle.len()
    }

    /// Closes every idle server; returns how many.
    pub fn clear(&self) -> usize {
        std::mem::take(&mut *self.lock()).len()
    }

    /// (idle servers, servers lent out) of a list of `size` slots.
    pub fn counts(&self, size: usize) -> (usize, usize) {
        (
            self.lock().len(),
            size.saturating_sub(self.permits.available_permits()),
        )
    }

    /// Whether [`Servers::close`] ran: servers coming back are closed, not kept.
    pub fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }

    /// Closes the idle servers and refuses new slots (shutdown).
    pub fn close(&self) {
        self.permits.close();
        self.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleServer>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
