//! `max_db_connections` and `max_user_connections`: caps on server connections that several
//! pools share (every user's pool of one database; one user's pools in every database),
//! as PgBouncer has them. A pool's own size bounds what one (database, user) holds; a cap
//! bounds what the server sees from many of them.
//!
//! A server connection on the primary counts against each cap of its pool for as long as it
//! lives, idle or lent (a [`CapGuard`] travels with it and is dropped when it closes). A
//! checkout that needs a new server while a cap is full first closes the oldest idle server
//! of another pool under that cap (PgBouncer does the same: an idle connection is worth less
//! than a waiting client), else waits, up to `query_wait_timeout`, for a server of the cap
//! to close or to fall idle somewhere it can be closed, or for one of its own pool's servers
//! to come back. Read servers on replicas are not counted: each replica's share is bounded
//! by `pool_size` per pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use super::{Counted, Pool, PoolError};
use crate::server::ServerConn;

/// One cap: at most `limit` server connections among the pools registered with it.
pub struct ServerCap {
    /// What is capped, for errors and logs: `max_db_connections of database "app"`.
    what: String,
    limit: usize,
    used: AtomicUsize,
    /// Checkouts waiting for room under this cap.
    waiting: AtomicUsize,
    /// Signalled when a counted server closes or falls idle, while checkouts wait.
    changed: Notify,
    /// The pools under this cap, whose idle servers may be closed to make room.
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl ServerCap {
    /// A cap named `key` (`max_db_connections`) on `scope` (`database "app"`).
    pub fn new(key: &str, scope: &str, limit: usize) -> Arc<ServerCap> {
        Arc::new(ServerCap {
            what: format!("{key} ({limit}) of {scope}"),
            limit,
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            changed: Notify::new(),
            pools: Mutex::new(Vec::new()),
        })
    }

    /// Puts `pool` under this cap (its idle servers may then be closed for another pool).
    pub fn register(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// Server connections counted now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts one more server, if there is room.
    fn try_take(self: &Arc<Self>) -> Option<CapGuard> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| CapGuard { cap: self.clone() })
    }

    /// Tells waiting checkouts that something changed (a server closed or fell idle).
    pub(super) fn wake(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// Takes out the oldest idle server of a pool under this cap other than `except`, to be
    /// closed; it still counts against the cap until it is dropped.
    fn evict_idle(&self, except: &Pool) -> Option<Box<ServerConn>> {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let oldest = pools
            .iter()
            .filter(|p| !std::ptr::eq(&***p, except))
            .filter_map(|p| p.primary.oldest_idle_since().map(|since| (since, p)))
            .min_by_key(|(since, _)| *since);
        let (_, pool) = oldest?;
        let conn = pool.primary.evict_oldest()?;
        pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pool = %pool.name, server = conn.id, for_pool = %except.name, cap = %self.what, "closing an idle server to make room under the cap");
        Some(conn)
    }
}

/// The longest a checkout waits for an idle server it closed to make room to be gone.
const EVICTION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One server connection counted against a cap; uncounted when dropped (with the
/// connection it travels with, [`ServerConn::counted`]).
pub struct CapGuard {
    cap: Arc<ServerCap>,
}

impl Drop for CapGuard {
    fn drop(&mut self) {
        self.cap.used.fetch_sub(1, Ordering::AcqRel);
        self.cap.wake();
    }
}

/// What a checkout under caps got: room for a new server, or one of its own pool's servers
/// that came back while it waited.
pub(super) enum Room {
    New(Vec<CapGuard>),
    Idle(Box<ServerConn>),
}

impl Pool {
    /// Room under each of the pool's caps for one more server on the primary: at once, by
    /// closing another pool's idle server, or after waiting up to `query_wait_timeout`;
    /// an idle server of this pool that comes back meanwhile is taken instead.
    pub(super) async fn room_under_caps(&self) -> Result<Room, PoolError> {
        if self.caps.is_empty() {
            return Ok(match self.reusable_idle() {
                Some(conn) => Room::Idle(conn),
                None => Room::New(Vec::new()),
            });
        }
        let wait = self.live.load().query_wait_timeout;
        let deadline = Instant::now() + wait;
        let _waiting: Vec<Counted> = self.caps.iter().map(|c| Counted::new(&c.waiting)).collect();
        let mut counted_waiting = None;
        let result = loop {
            // Registered before looking, so that a change between the look and the wait
            // is not missed.
            let first = self.caps[0].changed.notified();
            let second = self.caps.get(1).map(|c| c.changed.notified());
            tokio::pin!(first);
            first.as_mut().enable();
            let mut second = second.map(Box::pin);
            if let Some(s) = second.as_mut() {
                s.as_mut().enable();
            }
            if let Some(conn) = self.reusable_idle() {
                break Ok(Room::Idle(conn));
            }
            if let Some(guards) = self.take_caps() {
                break Ok(Room::New(guards));
            }
            let evicted = self
                .caps
                .iter()
                .filter(|c| c.used() >= c.limit)
                .find_map(|c| c.evict_idle(self));
            if let Some(conn) = evicted {
                // Counted until its backend is gone, so the server never sees one more
                // connection than the cap, even while the old one exits.
                conn.terminate(EVICTION_WAIT).await;
                continue;
            }
            counted_waiting.get_or_insert_with(|| Counted::new(&self.waiting));
            let woken = async {
                match second.as_mut() {
                    Some(s) => {
                        tokio::select! {
                            _ = first.as_mut() => {}
                            _ = s.as_mut() => {}
                        }
                    }
                    None => first.as_mut().await,
                }
            };
            if tokio::time::timeout_at(deadline.into(), woken).await.is_err() {
                self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                let full = self
                    .caps
                    .iter()
                    .find(|c| c.used() >= c.limit)
                    .unwrap_or(&self.caps[0]);
                break Err(PoolError::CapTimeout {
                    waited: wait,
                    cap: full.what.clone(),
                });
            }
        };
        result
    }

    /// One guard per cap, or none if any cap is full.
    fn take_caps(&self) -> Option<Vec<CapGuard>> {
        self.caps.iter().map(|c| c.try_take()).collect()
    }

    /// A server of this pool fell idle: checkouts waiting under its caps may take or close
    /// it.
    pub(super) fn wake_caps(&self) {
        for cap in &self.caps {
            cap.wake();
        }
    }
}
