//! `[auth_query]`: users not in `[users]` are looked up on the server, as PgBouncer does.
//!
//! A login with a made-up name is the cheapest thing a stranger can send, so every part of a
//! lookup is bounded: lookups share a small [`Pool`] of server connections (`pool_size` per
//! server database they run in), at most [`LOOKUPS_PER_CONNECTION`] × `pool_size` lookups
//! run or wait at once (the next login gets 53300 at once), and a lookup taking longer than
//! `timeout` fails. Answers are cached for `cache_ttl`: passwords per role, and names with no
//! usable password in a bounded cache (at most [`MAX_UNKNOWN_NAMES`], the oldest answer
//! dropped first), so a flood of random names neither grows memory nor reaches the server
//! more than once per name and `cache_ttl`, and a role created later becomes usable once
//! its name's answer expires. Names longer than a role name can be are not looked up at all.
//! Why a lookup failed is logged; the client is told only that authentication is
//! unavailable, before it has proved anything.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_protocol::sqlstate;

use crate::auth::UserAuth;
use crate::config::AuthQuerySettings;
use crate::pool::DatabaseRoute;
use crate::pool::{LiveSettings, Pool, PoolError};
use crate::server::{query_row, ServerError};

/// Lookups allowed to run or wait at once, per lookup connection (`pool_size`).
pub const LOOKUPS_PER_CONNECTION: usize = 64;

/// Names with no usable password remembered at once.
pub const MAX_UNKNOWN_NAMES: usize = 10_000;

/// The longest role name Postgres keeps (`NAMEDATALEN` - 1 bytes): a longer name is no
/// role's, so it is not looked up (nor cached, which bounds the cache's memory).
const MAX_ROLE_NAME_LEN: usize = 63;

/// Why a lookup gave no answer. Shown in the proxy's log; the client gets only
/// [`LookupError::sqlstate`] and [`LookupError::client_message`].
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{0} lookups are already running or waiting for a lookup connection")]
    Busy(usize),
    #[error("the lookup took longer than auth_query.timeout ({0:?})")]
    Timeout(Duration),
    #[error("auth_query failed: {0}")]
    Pool(#[from] PoolError),
    #[error("auth_query failed: {0}")]
    Server(#[from] ServerError),
}

impl LookupError {
    /// 53300 when too many logins wait (try again shortly), 08006 otherwise.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            LookupError::Busy(_) | LookupError::Pool(PoolError::Timeout { .. }) => {
                sqlstate::TOO_MANY_CONNECTIONS
            }
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }

    /// Says nothing of the server, the query or the user.
    pub fn client_message(&self) -> &'static str {
        match self.sqlstate() {
            sqlstate::TOO_MANY_CONNECTIONS => {
                "too many logins are waiting to be authenticated; try again later"
            }
            _ => "authentication is unavailable right now; try again later",
        }
    }
}

/// A role's answer: its stored password, and the user made from it (none when the proxy
/// cannot use that password).
struct Known {
    stored: String,
    user: Option<Arc<UserAuth>>,
    at: Instant,
}

/// Names the query gave no password for, with when it last said so. Dropped oldest first
/// when full: a name keeps the place of its first answer (approximate, and cheap: a name
/// asked again and again takes one place, and a dropped name costs one more lookup).
#[derive(Default)]
struct UnknownNames {
    at: HashMap<Arc<str>, Instant>,
    order: VecDeque<Arc<str>>,
}

impl UnknownNames {
    fn fresh(&self, name: &str, ttl: Duration) -> bool {
        self.at.get(name).is_some_and(|at| at.elapsed() < ttl)
    }

    fn insert(&mut self, name: &str, now: Instant) {
        if let Some(at) = self.at.get_mut(name) {
            *at = now;
            return;
        }
        let name: Arc<str> = name.into();
        self.at.insert(name.clone(), now);
        self.order.push_back(name);
        while self.order.len() > MAX_UNKNOWN_NAMES {
            if let Some(old) = self.order.pop_front() {
                self.at.remove(&old);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if self.at.remove(name).is_some() {
            self.order.retain(|n| &**n != name);
        }
    }
}

/// What a cache holds for a name, if it is fresh.
enum Cached {
    Miss,
    Hit(Option<Arc<UserAuth>>),
}

pub struct AuthQuery {
    settings: AuthQuerySettings,
    /// The `[users]` entry the lookups log in as.
    user: Arc<UserAuth>,
    /// Lookup pools by (cluster, server database).
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    known: Mutex<HashMap<String, Known>>,
    unknown: Mutex<UnknownNames>,
    /// Lookups running or waiting for a connection now.
    in_flight: AtomicUsize,
}

/// One lookup counted in [`AuthQuery::in_flight`] until it is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AuthQuery {
    pub fn new(settings: AuthQuerySettings, user: Arc<UserAuth>) -> AuthQuery {
        AuthQuery {
            settings,
            user,
            pools: Mutex::default(),
            known: Mutex::default(),
            unknown: Mutex::default(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// The user `name`, looked up in the database `route` leads to (or `auth_query.database`);
    /// `None` when the query gives no usable password.
    pub async fn lookup(
        &self,
        name: &str,
        route: &DatabaseRoute,
    ) -> Result<Option<Arc<UserAuth>>, LookupError> {
        if name.len() > MAX_ROLE_NAME_LEN {
            return Ok(None);
        }
        if let Cached::Hit(user) = self.cached(name) {
            return Ok(user);
        }
        let limit = LOOKUPS_PER_CONNECTION * self.settings.pool_size;
        let running = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(&self.in_flight);
        if running >= limit {
            return Err(LookupError::Busy(running));
        }
        let pool = self.pool_for(route);
        tokio::time::timeout(self.settings.timeout, self.ask(&pool, name))
            .await
            .unwrap_or(Err(LookupError::Timeout(self.settings.timeout)))
    }

    /// Runs the query on a lookup connection, unless another login answered it meanwhile.
    async fn ask(&self, pool: &Arc<Pool>, name: &str) -> Result<Option<Arc<UserAuth>>, LookupError> {
        let mut checkout = pool.checkout(None).await?;
        if let Cached::Hit(user) = self.cached(name) {
            checkout.release();
            return Ok(user);
        }
        let row = query_row(checkout.conn(), &self.settings.query, &[name]).await;
        // After the query's error the server said ReadyForQuery: the connection is clean.
        // Any other failure left it broken, and dropping the checkout closes it.
        if matches!(row, Ok(_) | Err(ServerError::Refused { .. })) {
            checkout.release();
        }
        let stored = row?.and_then(|r| r.into_iter().nth(1).flatten());
        Ok(self.remember(name, stored))
    }

    fn cached(&self, name: &str) -> Cached {
        let ttl = self.settings.cache_ttl;
        if let Some(k) = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .filter(|k| k.at.elapsed() < ttl)
        {
            return Cached::Hit(k.user.clone());
        }
        if self
            .unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fresh(name, ttl)
        {
            return Cached::Hit(None);
        }
        Cached::Miss
    }

    /// Caches the query's answer for `name` and returns the user it gives.
    fn remember(&self, name: &str, stored: Option<String>) -> Option<Arc<UserAuth>> {
        let now = Instant::now();
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stored) = stored else {
            known.remove(name);
            drop(known);
            self.unknown
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, now);
            return None;
        };
        // Keep the same user object while the password is unchanged: it holds the SCRAM
        // pass-through key learnt from earlier logins.
        let user = match known.get(name) {
            Some(k) if k.stored == stored => k.user.clone(),
            _ => match UserAuth::from_stored(name, &stored) {
                Ok(u) => Some(Arc::new(u)),
                Err(e) => {
                    tracing::warn!(user = name, error = %e, "auth_query returned an unusable password");
                    None
                }
            },
        };
        known.insert(
            name.to_string(),
            Known {
                stored,
                user: user.clone(),
                at: now,
            },
        );
        drop(known);
        self.unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        user
    }

    /// The lookup pool for the server database the query runs in.
    fn pool_for(&self, route: &DatabaseRoute) -> Arc<Pool> {
        let database = self
            .settings
            .database
            .clone()
            .unwrap_or_else(|| route.server_database.clone());
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry((route.cluster.name.clone(), database.clone()))
            .or_insert_with(|| {
                Arc::new(Pool::new(
                    format!("auth_query:{database}/{}", self.user.name),
                    self.user.clone(),
                    database,
                    route.cluster.clone(),
                    Arc::default(),
                    route.settings.clone(),
                    self.lookup_settings(&route.live.load()),
                ))
            })
            .clone()
    }

    /// The lookup pools' settings: `pool`'s (a database's in force), with
    /// `auth_query`'s own size and wait limit.
    fn lookup_settings(&self, pool: &LiveSettings) -> LiveSettings {
        LiveSettings {
            size: self.settings.pool_size,
            query_wait_timeout: self.settings.timeout,
            ..pool.clone()
        }
    }

    /// Puts `pool` (the `[pool]` settings in force after a reload or `SET`) in force in
    /// the lookup pools, with their own size and wait limit.
    pub fn apply(&self, pool: &LiveSettings) {
        for lookups in self.pools() {
            lookups.apply(self.lookup_settings(pool));
        }
    }

    /// Every lookup pool, for the reaper, `SHOW POOLS` and shutdown.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_bounded_and_expire() {
        let mut names = UnknownNames::default();
        let now = Instant::now();
        for i in 0..MAX_UNKNOWN_NAMES + 10 {
            names.insert(&format!("n{i}"), now);
        }
        assert_eq!(names.at.len(), MAX_UNKNOWN_NAMES);
        assert!(names.order.len() <= MAX_UNKNOWN_NAMES);
        assert!(
            !names.fresh("n0", Duration::from_secs(60)),
            "the oldest went first"
        );
        assert!(names.fresh(&format!("n{}", MAX_UNKNOWN_NAMES + 9), Duration::from_secs(60)));
        assert!(!names.fresh("n20", Duration::ZERO), "a zero TTL caches nothing");
        // The same name asked again and again takes one place, however often it is asked.
        for _ in 0..3 * MAX_UNKNOWN_NAMES {
            names.insert("again", Instant::now());
        }
        assert_eq!(
            (names.order.len(), names.at.len()),
            (MAX_UNKNOWN_NAMES, MAX_UNKNOWN_NAMES)
        );
        assert!(names.fresh("again", Duration::from_secs(60)));
        assert!(names.fresh(&format!("n{}", MAX_UNKNOWN_NAMES + 9), Duration::from_secs(60)));
        names.remove("again");
        assert!(!names.fresh("again", Duration::from_secs(60)));
        assert_eq!(
            (names.order.len(), names.at.len()),
            (MAX_UNKNOWN_NAMES - 1, MAX_UNKNOWN_NAMES - 1)
        );
    }
}
