//! A database's functions and their volatility, for read routing: a call of a volatile
//! function counts as a write (`sql::route`). Read once from `pg_proc` on the primary, in
//! the background, when the database first routes a read, and again after a `RELOAD`;
//! until it is known, every call of a function the configuration does not list sends its
//! statement to the primary, which is always safe.
//!
//! The configuration's lists override the catalog: `read_only_functions` count as reads,
//! `write_functions` as writes (the second wins).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::Pool;
use crate::sql::route::{Functions, Volatility};

/// Overloads are folded: a name is as volatile as its most volatile overload.
const CATALOG_SQL: &str = "SELECT proname, max(provolatile) FROM pg_catalog.pg_proc GROUP BY proname";

/// How long reading the catalog may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

const UNLOADED: u8 = 0;
const LOADING: u8 = 1;
const LOADED: u8 = 2;

pub struct FunctionCatalog {
    /// From `pg_proc`; empty until loaded.
    catalog: ArcSwap<HashMap<String, Volatility>>,
    read_only: HashSet<String>,
    writes: HashSet<String>,
    state: AtomicU8,
    /// Changes with every catalog read: classifications kept with prepared statements are
    /// made again after it.
    generation: AtomicU64,
}

impl Default for FunctionCatalog {
    fn default() -> Self {
        FunctionCatalog::new(&[], &[])
    }
}

impl FunctionCatalog {
    /// A catalog with the configuration's lists, not loaded yet.
    pub fn new(read_only: &[String], writes: &[String]) -> FunctionCatalog {
        FunctionCatalog {
            catalog: ArcSwap::default(),
            read_only: read_only.iter().cloned().collect(),
            writes: writes.iter().cloned().collect(),
            state: AtomicU8::new(UNLOADED),
            generation: AtomicU64::new(0),
        }
    }

    /// The catalog's generation (see [`crate::pool::StatementDef::route_class`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts reading `pg_proc` through `pool` unless it is read or being read.
    pub fn ensure_loaded(&self, pool: &Arc<Pool>) {
        if self.state.load(Ordering::Relaxed) != UNLOADED
            || self
                .state
                .compare_exchange(UNLOADED, LOADING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let catalog = &pool.settings.routing.functions;
            match load(&pool).await {
                Ok(map) => {
                    tracing::info!(pool = %pool.name, functions = map.len(), "read function volatility from pg_proc for read routing");
                    catalog.catalog.store(Arc::new(map));
                    catalog.generation.fetch_add(1, Ordering::AcqRel);
                    catalog.state.store(LOADED, Ordering::Release);
                }
                Err(error) => {
                    tracing::warn!(pool = %pool.name, %error, "cannot read pg_proc; statements calling functions go to the primary until it can");
                    catalog.state.store(UNLOADED, Ordering::Release);
                }
            }
        });
    }

    /// Reads the catalog again at the next routed read (`RELOAD`).
    pub fn invalidate(&self) {
        let _ = self
            .state
            .compare_exchange(LOADED, UNLOADED, Ordering::AcqRel, Ordering::Relaxed);
    }
}

impl Functions for FunctionCatalog {
    fn volatility(&self, name: &str) -> Option<Volatility> {
        if self.writes.contains(name) {
            return Some(Volatility::Volatile);
        }
        if self.read_only.contains(name) {
            return Some(Volatility::Stable);
        }
        self.catalog.load().get(name).copied()
    }
}

async fn load(pool: &Arc<Pool>) -> Result<HashMap<String, Volatility>, String> {
    let mut checkout = pool.checkout(None).await.map_err(|e| e.to_string())?;
    let answer = crate::server::simple_query_within(checkout.conn(), CATALOG_SQL, LOAD_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(error) = answer.error {
        return Err(format!("{} {}", error.code, error.message));
    }
    checkout.release();
    Ok(answer
        .rows
        .into_iter()
        .filter_map(|row| match <[_; 2]>::try_from(row) {
            Ok([Some(name), Some(v)]) => Some((
                name,
                match v.as_str() {
                    "i" => Volatility::Immutable,
                    "s" => Volatility::Stable,
                    _ => Volatility::Volatile,
                },
            )),
            _ => None,
        })
        .collect())
}
