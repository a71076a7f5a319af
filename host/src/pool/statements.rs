//! Prepared statements shared across servers in transaction pooling.
//!
//! A client's named statement is known to the proxy by its text and parameter types. Every
//! distinct (text, types) gets one proxy-wide name, `sy_<n>`, under which any server prepares
//! it on demand; two clients preparing the same query share one server statement, and a
//! client's own names never reach a server, so they cannot collide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::{Bytes, BytesMut};
use switchyard_protocol::frontend::encode_parse;

use crate::sql::route::Classification;

/// One statement as the proxy prepares it on servers.
#[derive(Debug)]
pub struct StatementDef {
    pub id: u64,
    /// `sy_<id>`, NUL-free.
    pub server_name: Bytes,
    pub query: Bytes,
    pub param_types: Vec<u32>,
    /// The Parse message to send to a server that lacks the statement.
    pub parse_message: Bytes,
    /// Some server accepted this Parse, so the text is valid SQL: a client's Parse of it can
    /// be answered without borrowing a server.
    validated: AtomicBool,
    /// Its routing classification, and the generation of the function catalog it was made
    /// with (read routing).
    route: Mutex<Option<(u64, Classification)>>,
}

impl StatementDef {
    pub fn is_validated(&self) -> bool {
        self.validated.load(Ordering::Relaxed)
    }

    pub fn mark_validated(&self) {
        self.validated.store(true, Ordering::Relaxed);
    }

    /// Its routing classification made with function catalog `generation`: the one kept,
    /// or `classify`'s, kept for the next Bind.
    pub fn route_class(&self, generation: u64, classify: impl FnOnce() -> Classification) -> Classification {
        let mut kept = self.route.lock().unwrap_or_else(|e| e.into_inner());
        match *kept {
            Some((g, class)) if g == generation => class,
            _ => {
                let class = classify();
                *kept = Some((generation, class));
                class
            }
        }
    }
}

type Key = (Bytes, Vec<u32>);

/// Interns statements by (text, parameter types). Holds them weakly: a statement nobody
/// references any more is forgotten, and a later Parse of the same text gets a fresh id.
#[derive(Default)]
pub struct StatementRegistry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    by_key: HashMap<Key, Weak<StatementDef>>,
    next_id: u64,
    sweep_at: usize,
}

impl StatementRegistry {
    pub fn intern(&self, query: &Bytes, param_types: &[u32]) -> Arc<StatementDef> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = (query.clone(), param_types.to_vec());
        if let Some(def) = inner.by_key.get(&key).and_then(Weak::upgrade) {
            return def;
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let server_name = Bytes::from(format!("sy_{id}"));
        let mut parse = BytesMut::new();
        encode_parse(&server_name, query, param_types, &mut parse);
        let def = Arc::new(StatementDef {
            id,
            server_name,
            query: query.clone(),
            param_types: param_types.to_vec(),
            parse_message: parse.freeze(),
            validated: AtomicBool::new(false),
            route: Mutex::new(None),
        });
        inner.by_key.insert(key, Arc::downgrade(&def));
        if inner.by_key.len() > inner.sweep_at {
            inner.by_key.retain(|_, w| w.strong_count() > 0);
            inner.sweep_at = (inner.by_key.len() * 2).max(1024);
        }
        def
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_name_until_forgotten() {
        let reg = StatementRegistry::default();
        let q = Bytes::from_static(b"SELECT $1");
        let a = reg.intern(&q, &[23]);
        let b = reg.intern(&q, &[23]);
        assert_eq!(a.server_name, b.server_name);
        let c = reg.intern(&q, &[25]);
        assert_ne!(
            a.server_name, c.server_name,
            "different types are different statements"
        );
        drop((a, b, c));
        let d = reg.intern(&q, &[23]);
        assert_eq!(d.server_name, Bytes::from_static(b"sy_3"));
        assert!(reg.len() <= 3);
    }
}
