//! The statements one server connection has prepared, under the proxy-wide names the
//! pool's `StatementRegistry` gives them (`sy_<id>`): which ids a server has, least recently
//! used first, so the session knows when to send a Parse first and which one to close when a
//! server holds `max_prepared_statements`.

use std::collections::VecDeque;

/// The statements one server connection has prepared, least recently used first.
#[derive(Debug, Default)]
pub struct ServerStatements {
    lru: VecDeque<u64>,
}

impl ServerStatements {
    /// True if the server has the statement; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        match self.lru.iter().rposition(|&x| x == id) {
            Some(pos) => {
                if pos + 1 != self.lru.len() {
                    self.lru.remove(pos);
                    self.lru.push_back(id);
                }
                true
            }
            None => false,
        }
    }

    /// Records a statement just prepared; returns the id to close on the server if this
    /// pushed the count over `cap`.
    pub fn insert(&mut self, id: u64, cap: usize) -> Option<u64> {
        self.lru.push_back(id);
        if self.lru.len() > cap.max(1) {
            self.lru.pop_front()
        } else {
            None
        }
    }

    /// Forgets a statement (its Parse failed, or it was closed on the server).
    pub fn remove(&mut self, id: u64) {
        if let Some(pos) = self.lru.iter().position(|&x| x == id) {
            self.lru.remove(pos);
        }
    }

    /// The server dropped all its statements (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.lru.clear();
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lru_evicts_oldest() {
        let mut s = ServerStatements::default();
        assert_eq!(s.insert(1, 2), None);
        assert_eq!(s.insert(2, 2), None);
        assert!(s.touch(1));
        assert_eq!(s.insert(3, 2), Some(2));
        assert!(!s.touch(2));
        assert!(s.touch(1) && s.touch(3));
    }
}
