//! Who is connected: the clients and the server connections the admin console lists
//! (`SHOW CLIENTS`, `SHOW SERVERS`, `SHOW LISTS`) and acts on (`KILL`).
//!
//! Keeping the lists must cost the data path nothing: each member is one `Arc`'d record,
//! made once (a client logged in, a server connected) and taken off its roster when its
//! last reference goes; what changes during its life is a few atomics, written only where
//! the state changes anyway (a server lent to a client or given back). No lock, no
//! allocation and no map lookup per transaction; the console pays for the snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use crate::net::Peer;
use crate::stop::StopWatch;

/// The members of one kind, by id (in the order they joined).
pub struct Roster<T> {
    members: Mutex<BTreeMap<u64, Weak<Member<T>>>>,
    next_id: AtomicU64,
}

impl<T> Default for Roster<T> {
    fn default() -> Self {
        Roster {
            members: Mutex::default(),
            // 0 means "none" in the records that point at a member.
            next_id: AtomicU64::new(1),
        }
    }
}

/// One listed client or server; leaves its roster when dropped.
pub struct Member<T> {
    /// Unique in its roster, never 0: what `SHOW CLIENTS`/`SHOW SERVERS` print as `ptr` and
    /// what the other kind's record points at (`link`).
    pub id: u64,
    pub info: T,
    roster: Arc<Roster<T>>,
}

impl<T> std::ops::Deref for Member<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.info
    }
}

impl<T> Roster<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Weak<Member<T>>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `info` until the returned member is dropped.
    pub fn join(self: &Arc<Self>, info: T) -> Arc<Member<T>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let member = Arc::new(Member {
            id,
            info,
            roster: self.clone(),
        });
        self.lock().insert(id, Arc::downgrade(&member));
        member
    }

    /// The members now, in the order they joined.
    pub fn members(&self) -> Vec<Arc<Member<T>>> {
        // Collected under the lock, dropped after it: the last reference to a member may
        // be one taken here, and its drop takes the lock to leave.
        let members: Vec<_> = self.lock().values().filter_map(Weak::upgrade).collect();
        members
    }
}

impl<T> Drop for Member<T> {
    fn drop(&mut self) {
        self.roster.lock().remove(&self.id);
    }
}

/// A logged-in client of a pool, as `SHOW CLIENTS` shows it. Whether it is `active` is
/// read from the server roster (a server whose `client` is this client's id).
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: Peer,
    pub local_addr: Option<SocketAddr>,
    pub connected_at: SystemTime,
    pub tls: bool,
    /// As sent at startup.
    pub application_name: String,
    /// The process id the proxy gave the client in BackendKeyData.
    pub process_id: i32,
    /// When its last request asked for a server, in milliseconds after the clock origin
    /// (the pool's coarse clock, `server::nanos_since_origin`); 0: none yet.
    pub request_ms: AtomicU64,
    /// It is waiting for a server now (a full pool, a pause, a hold).
    pub waiting: AtomicBool,
    /// Prepared statements it holds (client names), as of its last request.
    pub prepared: AtomicUsize,
    /// The session's shutdown signals, through which `KILL` ends it.
    pub stop: Arc<StopWatch>,
}

/// A server connection of a pool, as `SHOW SERVERS` shows it.
pub struct ServerInfo {
    pub user: String,
    pub database: String,
    pub addr: String,
    pub port: u16,
    pub local_addr: Option<SocketAddr>,
    pub connected_at: SystemTime,
    pub backend_pid: i32,
    pub tls: bool,
    /// The id of the client holding it (its `ClientInfo` member); 0: none.
    pub client: AtomicU64,
    /// When it was last lent, in milliseconds after the clock origin; 0: never.
    pub request_ms: AtomicU64,
    /// Statements prepared on it, as of when it was last given back.
    pub prepared: AtomicUsize,
}

/// Relaxed: the console's snapshot needs no order with the data path.
pub const RELAXED: Ordering = Ordering::Relaxed;

#[cfg(test)]
mod tests {
    use super::*;

    /// Members are listed in the order they joined, with ids other than 0, and a member
    /// leaves the roster when its last reference (one a snapshot took included) is dropped.
    #[test]
    fn a_dropped_member_leaves_its_roster() {
        let roster: Arc<Roster<&str>> = Arc::default();
        let a = roster.join("a");
        let b = roster.join("b");
        assert_ne!(a.id, 0);
        assert_eq!(
            roster.members().iter().map(|m| m.info).collect::<Vec<_>>(),
            ["a", "b"]
        );
        drop(a);
        let left = roster.members();
        assert_eq!(left.len(), 1);
        assert_eq!(*left[0].info, *"b");
        drop(left);
        drop(b);
        assert!(roster.members().is_empty());
    }
}
