//! One node's share of a pool: its idle servers and the slots that bound how many servers
//! it has. A pool has one for the primary and one per node for reads, so that the size
//! limit, waiting ([`super::slots`]) and idle reaping are written once.
//!
//! With `threading = "per-core"` the idle servers are kept in one list per worker thread:
//! a server's socket is registered with the reactor of the thread that opened it
//! ([`ServerConn::home`]), and a session on another thread would be woken through that
//! thread. A checkout takes its own thread's idle server first, opens a new one while the
//! servers open are fewer than the pool's size, and only then takes another thread's,
//! which moves to its thread. A slot freed with a server goes first to a checkout waiting
//! on that server's thread ([`super::slots`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::slots::{NoSlot, Slot, Slots};
use crate::server::ServerConn;

/// How long a checkout that may not open a server and found no idle one waits before it
/// looks again (per-core: the server it is owed is on its way back to another list).
pub(super) const IN_TRANSIT_PAUSE: Duration = Duration::from_millis(1);

/// A server in an idle list and when it was returned, by the pool's coarse clock.
pub(super) struct IdleServer {
    /// Boxed, so a server moves between the pool and a session as a pointer.
    pub conn: Box<ServerConn>,
    pub since_ms: u64,
}

pub(super) struct Servers {
    /// Idle servers, one list per worker thread (one list unless per-core).
    idle: Box<[Mutex<Vec<IdleServer>>]>,
    slots: Arc<Slots>,
    /// Servers open now, idle or lent (an [`OpenServer`] travels with each).
    open: Arc<AtomicUsize>,
}

/// One open server of a [`Servers`]; uncounted when its connection closes.
pub(super) struct OpenServer(Arc<AtomicUsize>);

impl Drop for OpenServer {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Servers {
    /// Room for `size` servers lent at once, idle ones and waiters kept in `shards` lists.
    pub fn new(size: usize, shards: usize) -> Servers {
        Servers {
            idle: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            slots: Slots::new(size, shards),
            open: Arc::default(),
        }
    }

    /// A free slot, without waiting.
    pub fn try_permit(&self) -> Option<Slot> {
        self.slots.try_take()
    }

    /// A slot, after the checkouts waiting before it ([`super::slots`]), waiting at most
    /// `wait`.
    pub async fn permit(&self, wait: Duration) -> Result<Slot, NoSlot> {
        self.slots.take(wait).await
    }

    /// An idle server to lend: the calling thread's, else (when no new server may be
    /// opened, see [`Servers::open_one`]) another thread's, moved to this thread
    /// ([`ServerConn::move_here`]); `None` means open one.
    ///
    /// Moving costs two `epoll_ctl` calls once; not moving, a wake-up across threads for
    /// every reply the server sends while a session here uses it, and the server would go
    /// back to the other thread's list, where this thread's waiters come second
    /// ([`super::slots`]). The servers so follow the clients that use them, and the lists
    /// settle where the clients are.
    pub fn pop_idle(&self) -> Option<Box<ServerConn>> {
        let own = self.own();
        if let Some(idle) = self.lock(own).pop() {
            return Some(idle.conn);
        }
        if self.idle.len() == 1 || self.open.load(Ordering::Acquire) < self.slots.size() {
            return None;
        }
        (1..self.idle.len())
            .map(|k| (own + k) % self.idle.len())
            .find_map(|shard| self.lock(shard).pop())
            .and_then(|i| i.conn.move_here(own))
    }

    /// Counts one more open server, to travel with its connection: always with one idle
    /// list (a checkout that found none opens one, as before per-core threading); with
    /// several only while fewer than the size are open, so that the lists together never
    /// hold more than one list would. `None`: take another thread's idle server instead.
    pub fn open_one(&self) -> Option<OpenServer> {
        let size = if self.idle.len() == 1 {
            usize::MAX
        } else {
            self.slots.size()
        };
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < size).then_some(n + 1)
            })
            .ok()
            .map(|_| OpenServer(self.open.clone()))
    }

    /// When the longest-idle server fell idle, by the pool's coarse clock.
    pub fn oldest_idle_since(&self) -> Option<u64> {
        (0..self.idle.len())
            .filter_map(|shard| self.lock(shard).first().map(|i| i.since_ms))
            .min()
    }

    /// Takes the longest-idle server out (to be closed: `max_db_connections`,
    /// `max_user_connections`).
    pub fn evict_oldest(&self) -> Option<Box<ServerConn>> {
        let shard = (0..self.idle.len())
            .filter_map(|shard| self.lock(shard).first().map(|i| (i.since_ms, shard)))
            .min()?
            .1;
        let mut idle = self.lock(shard);
        (!idle.is_empty()).then(|| idle.remove(0).conn)
    }

    /// Puts a server back in the idle list of the thread that opened it.
    pub fn push(&self, idle: IdleServer) {
        let shard = idle.conn.home % self.idle.len();
        self.lock(shard).push(idle);
    }

    /// Keeps the idle servers `keep` accepts; returns how many were closed.
    pub fn retain(&self, mut keep: impl FnMut(&IdleServer) -> bool) -> usize {
        (0..self.idle.len())
            .map(|shard| {
                let mut idle = self.lock(shard);
                let before = idle.len();
                idle.retain(&mut keep);
                before - idle.len()
            })
            .sum()
    }

    /// Closes every idle server; returns how many.
    pub fn clear(&self) -> usize {
        (0..self.idle.len())
            .map(|shard| std::mem::take(&mut *self.lock(shard)).len())
            .sum()
    }

    /// (idle servers, servers lent out).
    pub fn counts(&self) -> (usize, usize) {
        (
            (0..self.idle.len()).map(|shard| self.lock(shard).len()).sum(),
            self.slots.lent(),
        )
    }

    /// Servers lent out now.
    pub fn in_use(&self) -> usize {
        self.slots.lent()
    }

    /// The number of servers it may lend at once (`pool_size`).
    pub fn size(&self) -> usize {
        self.slots.size()
    }

    /// Whether more servers are lent than the size allows (it shrank): one given back
    /// is closed, not kept idle. One relaxed load.
    #[inline]
    pub fn shrinking(&self) -> bool {
        self.slots.shrinking()
    }

    /// Changes the number of servers it may lend at once to `size` ([`Slots::resize`]) and
    /// closes the idle servers over it at once; returns how many were closed.
    pub fn resize(&self, size: usize) -> usize {
        self.slots.resize(size);
        self.trim()
    }

    /// Closes the longest-idle servers while more servers are open (idle, lent or on
    /// their way back) than the size; returns how many. (A server given back while the
    /// size shrank is closed on its way back, see [`Servers::shrinking`]; this catches
    /// what is idle already.)
    pub fn trim(&self) -> usize {
        let mut closed = 0;
        // A closed server is uncounted as it is dropped (its `OpenServer`).
        while self.open.load(Ordering::Acquire) > self.slots.size() {
            let Some(conn) = self.evict_oldest() else {
                break;
            };
            drop(conn);
            closed += 1;
        }
        closed
    }

    /// Whether [`Servers::close`] ran: servers coming back are closed, not kept.
    pub fn is_closed(&self) -> bool {
        self.slots.is_closed()
    }

    /// Closes the idle servers and refuses new slots (shutdown).
    pub fn close(&self) {
        self.slots.close();
        self.clear();
    }

    /// The calling thread's idle list.
    fn own(&self) -> usize {
        crate::net::worker::current() % self.idle.len()
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Vec<IdleServer>> {
        self.idle[shard].lock().unwrap_or_else(|e| e.into_inner())
    }
}
