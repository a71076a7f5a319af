//! What the session hooks (`pool-mode`, `retry`, `router`) learn about a session: the
//! records that cross the policy boundary for a session, built once per session and kept
//! current by it (a later `SET application_name` shows in the details).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_protocol::TransactionStatus;

use super::pool_mode::{ReadyAction, ReadyFacts};

/// Who the session is, as `host.current-session` tells a plugin (the twin of the WIT
/// `session-details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetails {
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// `ip:port`, or `unix` for a client on the Unix-domain socket.
    pub client_addr: String,
    /// The name the client logged in with, which a RESET goes back to (not told to
    /// plugins, nor recorded; kept here, on the heap, so that a session stays the size it
    /// was).
    #[serde(skip)]
    login_application_name: String,
}

/// Distinct (tx-status, holds-server-state, read-only) inputs of a reusable pool-mode
/// decision.
pub const REUSE_KEYS: usize = 12;

/// The index of a reusable pool-mode decision's input, below [`REUSE_KEYS`].
pub fn reuse_key(facts: &ReadyFacts, read_only: bool) -> usize {
    let tx = match facts.status {
        TransactionStatus::Idle => 0,
        TransactionStatus::InTransaction => 1,
        TransactionStatus::Failed => 2,
    };
    tx * 4 + usize::from(facts.holds_server_state) * 2 + usize::from(read_only)
}

/// Pool-mode decisions a hook declared reusable for this session, by input. They belong
/// to one version of the hook (its `owner` number, opaque here) and are forgotten when
/// another version answers. Behind pointers, so that every session (idle ones included)
/// carries 8 bytes per key.
#[derive(Default)]
pub struct ReuseCache {
    owner: u64,
    decisions: [Option<Arc<ReadyAction>>; REUSE_KEYS],
}

impl ReuseCache {
    /// The decision kept for input `key` by the hook version `owner`; a cache kept by
    /// another version is emptied first.
    pub fn get(&mut self, owner: u64, key: usize) -> Option<&ReadyAction> {
        if self.owner != owner {
            self.decisions = Default::default();
            self.owner = owner;
        }
        self.decisions[key].as_deref()
    }

    /// Keeps `action` for input `key` (of the version last passed to [`ReuseCache::get`]).
    pub fn set(&mut self, key: usize, action: ReadyAction) {
        self.decisions[key] = Some(Arc::new(action));
    }
}

/// What session hooks learn about a session (a trace records it, less the reuse cache).
#[derive(Serialize, Deserialize)]
pub struct SessionFacts {
    id: u32,
    read_only: bool,
    #[serde(with = "shared")]
    details: Arc<SessionDetails>,
    /// For the pool-mode hook's reusable decisions.
    #[serde(skip)]
    pub reuse: ReuseCache,
}

/// The shared details as a plain record (serde's `rc` feature would rebuild every crate
/// that uses serde for this one field).
mod shared {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::SessionDetails;

    pub fn serialize<S: Serializer>(details: &Arc<SessionDetails>, s: S) -> Result<S::Ok, S::Error> {
        details.as_ref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<SessionDetails>, D::Error> {
        SessionDetails::deserialize(d).map(Arc::new)
    }
}

impl SessionFacts {
    pub fn new(
        id: u32,
        user: &str,
        database: &str,
        application_name: &str,
        client_addr: String,
        read_only: bool,
    ) -> SessionFacts {
        SessionFacts {
            id,
            read_only,
            details: Arc::new(SessionDetails {
                user: user.to_string(),
                database: database.to_string(),
                application_name: application_name.to_string(),
                client_addr,
                login_application_name: application_name.to_string(),
            }),
            reuse: ReuseCache::default(),
        }
    }

    /// What a trace records of the session: the same facts (the details shared, not
    /// copied), without the reuse cache.
    pub fn snapshot(&self) -> SessionFacts {
        SessionFacts {
            id: self.id,
            read_only: self.read_only,
            details: self.details.clone(),
            reuse: ReuseCache::default(),
        }
    }

    /// The session's id (its BackendKeyData process id).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The client asked for read-only transactions (`default_transaction_read_only`).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn details(&self) -> &Arc<SessionDetails> {
        &self.details
    }

    pub fn user(&self) -> &str {
        &self.details.user
    }

    pub fn database(&self) -> &str {
        &self.details.database
    }

    /// The client changed its `application_name` (a SET, `set_config`, a rollback of
    /// either: the server's report of it); later hook calls see the new name.
    pub fn set_application_name(&mut self, name: &str) {
        if self.details.application_name != name {
            Arc::make_mut(&mut self.details).application_name = name.to_string();
        }
    }

    /// The client's `application_name` went back to the one it logged in with (RESET,
    /// RESET ALL, DISCARD ALL committed).
    pub fn reset_application_name(&mut self) {
        if self.details.application_name != self.details.login_application_name {
            let details = Arc::make_mut(&mut self.details);
            details.application_name = details.login_application_name.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_keys_are_distinct_and_in_range() {
        use TransactionStatus::*;
        let mut seen = std::collections::HashSet::new();
        for status in [Idle, InTransaction, Failed] {
            for holds_server_state in [false, true] {
                for read_only in [false, true] {
                    let facts = ReadyFacts {
                        status,
                        statements: 1,
                        holds_server_state,
                    };
                    let key = reuse_key(&facts, read_only);
                    assert!(key < REUSE_KEYS);
                    assert!(seen.insert(key));
                }
            }
        }
    }

    #[test]
    fn a_cache_kept_by_another_version_is_forgotten() {
        let mut cache = ReuseCache::default();
        assert!(cache.get(1, 0).is_none());
        cache.set(0, ReadyAction::Release);
        assert_eq!(cache.get(1, 0), Some(&ReadyAction::Release));
        assert!(cache.get(2, 0).is_none());
    }

    #[test]
    fn a_new_application_name_shows_in_the_details() {
        let mut facts = SessionFacts::new(7, "u", "db", "at-startup", "127.0.0.1:1".into(), false);
        let before = facts.details().clone();
        facts.set_application_name("set-later");
        assert_eq!(facts.details().application_name, "set-later");
        assert_eq!(
            before.application_name, "at-startup",
            "a call in flight keeps its copy"
        );
    }
}
