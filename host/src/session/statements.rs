//! A client's named prepared statements, mapped to the proxy-wide statements that servers
//! actually prepare. Capped per client, to bound what one client makes the proxy hold: past
//! the cap the least recently used is forgotten (a later Bind of it fails with 26000). The
//! cap is [`CLIENT_NAMES_PER_SERVER_STATEMENT`] times `max_prepared_statements`, which
//! bounds what one server keeps prepared: a client may use more statements than a server
//! keeps, as they are prepared again on demand.
//!
//! Every Bind looks its name up here, so the map hashes with `foldhash` rather than std's
//! SipHash (about 300 fewer instructions a transaction with `-M prepared`). Its seed is
//! random per process, and the map is the client's own and capped, so names chosen to
//! collide could slow only a client that knew the seed, and only by the cap.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::pool::StatementDef;

/// A client's names kept per statement a server keeps prepared (`max_prepared_statements`).
pub const CLIENT_NAMES_PER_SERVER_STATEMENT: usize = 10;

pub struct ClientStatements {
    map: HashMap<Bytes, (Arc<StatementDef>, u64), foldhash::fast::RandomState>,
    clock: u64,
    cap: usize,
    /// `max_prepared_statements` as the session started.
    per_server: usize,
}

impl ClientStatements {
    /// The names of a session started with `max_prepared_statements = per_server`.
    pub fn new(per_server: usize) -> ClientStatements {
        ClientStatements {
            map: HashMap::default(),
            clock: 0,
            cap: per_server
                .saturating_mul(CLIENT_NAMES_PER_SERVER_STATEMENT)
                .max(1),
            per_server,
        }
    }

    /// `max_prepared_statements` as the session started: what it keeps prepared on a
    /// server it uses.
    pub fn per_server(&self) -> usize {
        self.per_server
    }

    pub fn get(&mut self, name: &[u8]) -> Option<Arc<StatementDef>> {
        self.clock += 1;
        let clock = self.clock;
        self.map.get_mut(name).map(|(def, used)| {
            *used = clock;
            def.clone()
        })
    }

    /// The statement named `name`, without counting it as used.
    pub fn peek(&self, name: &[u8]) -> Option<&Arc<StatementDef>> {
        self.map.get(name).map(|(def, _)| def)
    }

    #[cfg(test)]
    pub fn contains(&self, name: &[u8]) -> bool {
        self.map.contains_key(name)
    }

    /// Adds a statement; returns the name evicted to stay under the cap, if any.
    pub fn insert(&mut self, name: Bytes, def: Arc<StatementDef>) -> Option<Bytes> {
        self.clock += 1;
        self.map.insert(name, (def, self.clock));
        if self.map.len() <= self.cap {
            return None;
        }
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone())?;
        self.map.remove(&oldest);
        Some(oldest)
    }

    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.map.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Every name and its statement, least recently used first (a takeover carries them
    /// in this order, so the new process keeps the same ones last).
    pub fn by_use(&self) -> Vec<(&Bytes, &Arc<StatementDef>)> {
        let mut all: Vec<_> = self.map.iter().map(|(k, (def, used))| (k, def, *used)).collect();
        all.sort_unstable_by_key(|&(_, _, used)| used);
        all.into_iter().map(|(k, def, _)| (k, def)).collect()
    }

    /// How many names the client holds (`SHOW CLIENTS`).
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::StatementRegistry;

    #[test]
    fn evicts_least_recently_used() {
        let reg = StatementRegistry::default();
        let mut s = ClientStatements {
            cap: 2,
            ..ClientStatements::new(1)
        };
        let q = |t: &'static str| reg.intern(&Bytes::from_static(t.as_bytes()), &[]);
        assert!(s.insert(Bytes::from_static(b"a"), q("1")).is_none());
        assert!(s.insert(Bytes::from_static(b"b"), q("2")).is_none());
        assert!(s.get(b"a").is_some());
        assert_eq!(
            s.insert(Bytes::from_static(b"c"), q("3")).unwrap(),
            Bytes::from_static(b"b")
        );
        assert!(s.contains(b"a") && s.contains(b"c") && !s.contains(b"b"));
        assert_eq!(s.len(), 2);
    }
}
