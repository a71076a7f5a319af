//! Server connection pools, one per (database, user): bounded size, a queue of waiting
//! clients with a timeout (FIFO; per worker thread with `threading = "per-core"`, see
//! [`slots`]), idle and lifetime limits, and detection of servers that died while
//! idle. A session borrows a server with [`Pool::checkout`] and gives it back with
//! [`Checkout::release`]; dropping a checkout closes the server instead, which is the safe
//! default for every path that did not finish cleanly.
//!
//! Servers are opened on the cluster's current primary ([`Cluster`]). While the cluster has
//! none (a switchover or failover), a checkout waits for one up to the cluster's
//! `hold_timeout`; a failed connect makes the cluster re-probe that node and the checkout
//! waits for the topology to change rather than fail at once. Servers on a node that is no
//! longer the primary are closed when they come back to the pool or are found idle.
//!
//! A pool's size and limits change without a restart ([`LiveSettings`], [`Pool::apply`]):
//! a larger size lets waiting clients in at once, a smaller one closes idle servers over
//! it at once and lent ones as they come back, never one in use.

mod caps;
mod functions;
mod pause;
mod pipeline;
mod reads;
mod servers;
mod slots;
mod statements;

pub use caps::ServerCap;
pub use pause::{Pause, PauseGate};
pub use pipeline::{Failure as PipelineFailure, Piece, Pipelines, Ticket, REPLY_PIECES, STALL_LIMIT};
use slots::NoSlot;
pub use slots::Slot;

pub use functions::FunctionCatalog;
pub use reads::{ReadStats, RoutingSettings};
pub use statements::{StatementDef, StatementRegistry};

use caps::Room;
use servers::{IdleServer, Servers};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use switchyard_protocol::sqlstate;

use crate::auth::UserAuth;
use crate::config::{Config, DatabaseConfig, PoolDefaults, PoolMode, ServerAuthMethod};
use crate::net::ServerTls;
use crate::roster::{Roster, ServerInfo};
use crate::server::{
    connect, nanos_since_origin, ConnectParams, NodeAddr, ServerConn, ServerError, Settings,
};
use crate::stop::StopWatch;
use crate::topology::Cluster;

/// How to reach one configured database.
pub struct DatabaseRoute {
    pub server_database: String,
    pub cluster: Arc<Cluster>,
    pub pause: Arc<PauseGate>,
    pub settings: PoolSettings,
    /// Its pools' settings in force: what a new pool starts with (a reload or `SET`
    /// replaces them here and in every pool of the database).
    pub live: ArcSwap<LiveSettings>,
}

/// Pause between connect attempts to a node that refused while the topology settles.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// A connect that failed because the node is not there or not accepting connections now
/// (shutting down, starting up), as opposed to a refusal that will not change (password).
fn unreachable(e: &ServerError) -> bool {
    match e {
        ServerError::Connect { .. }
        | ServerError::ConnectTimeout { .. }
        | ServerError::Io { .. }
        | ServerError::Closed { .. } => true,
        ServerError::Refused { fields, .. } => {
            matches!(
                fields.code.as_str(),
                sqlstate::ADMIN_SHUTDOWN
                    | sqlstate::CRASH_SHUTDOWN
                    | sqlstate::CANNOT_CONNECT_NOW
                    | sqlstate::CONNECTION_FAILURE
            )
        }
        _ => false,
    }
}

/// What a pool needs to open server connections that stays as the proxy started (the
/// limits that change without a restart are [`LiveSettings`]).
#[derive(Clone)]
pub struct PoolSettings {
    pub tls: ServerTls,
    /// `[pool] server_auth_methods`.
    pub auth_methods: Arc<[ServerAuthMethod]>,
    pub routing: RoutingSettings,
    /// Idle lists per node: one per worker thread with `threading = "per-core"`, else 1.
    pub shards: usize,
    /// Where the pool's server connections are listed (`SHOW SERVERS`), under the
    /// configured database's name, `database`.
    pub roster: Arc<Roster<ServerInfo>>,
    pub database: Arc<str>,
}

/// A pool's settings that change without a restart (`RELOAD`, SIGHUP, the console's
/// `SET`): the database's `pool_size` and `pool_mode` and the live `[pool]` keys
/// (`config::live::POOL_RELOADABLE`). Replaced whole ([`Pool::apply`]), so nothing sees
/// half of a change. A session reads them once, at its start (mode, pipelining, client
/// timeouts, prepared statements); the pool reads the limits of a wait and a connect when
/// it waits or connects, the reaper the idle time and lifetime; the size is the slots'
/// (an atomic, see [`slots`]), the lifetime checked at every release an atomic too.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub mode: PoolMode,
    pub size: usize,
    pub connect_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub max_prepared_statements: usize,
    /// `[pool] pipeline`: the built-in pool-mode policy lets sessions pipeline.
    pub pipeline: bool,
    /// The client-side timeouts (`[pool]`); all zero (off) by default.
    pub timeouts: ClientTimeouts,
}

impl LiveSettings {
    /// The settings of `db`'s pools under `config`.
    pub fn of(config: &Config, db: &DatabaseConfig) -> LiveSettings {
        LiveSettings {
            mode: config.pool_mode(db),
            size: config.pool_size(db),
            ..LiveSettings::of_pool(&config.pool)
        }
    }

    /// `[pool]`'s settings (`pool`), for a database that overrides none.
    pub fn of_pool(pool: &PoolDefaults) -> LiveSettings {
        LiveSettings {
            mode: pool.mode,
            size: pool.size,
            connect_timeout: pool.connect_timeout,
            query_wait_timeout: pool.query_wait_timeout,
            idle_timeout: pool.idle_timeout,
            lifetime: pool.lifetime,
            max_prepared_statements: pool.max_prepared_statements,
            pipeline: pool.pipeline,
            timeouts: ClientTimeouts {
                client_idle: pool.client_idle_timeout,
                idle_transaction: pool.idle_transaction_timeout,
                query: pool.query_timeout,
                transaction: pool.transaction_timeout,
            },
        }
    }
}

/// How long a client may stay in each phase of a session; zero: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientTimeouts {
    pub client_idle: Duration,
    pub idle_transaction: Duration,
    pub query: Duration,
    pub transaction: Duration,
}

impl ClientTimeouts {
    /// Whether any is set (a session without any pays nothing for them).
    pub fn any(&self) -> bool {
        *self != ClientTimeouts::default()
    }
}

/// Why a client could not get a server.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no server connection became free within query_wait_timeout ({waited:?}); all {size} connections of pool {pool} are busy")]
    Timeout {
        waited: Duration,
        size: usize,
        pool: String,
    },
    #[error("no server connection became free within query_wait_timeout ({waited:?}); {cap} reached")]
    CapTimeout { waited: Duration, cap: String },
    #[error("pool {pool} is closed")]
    Closed { pool: String },
    /// The session waiting for a server must end now (`KILL`, `shutdown_timeout`).
    #[error("the session was ended while it waited for a server")]
    Ended,
    #[error("database \"{database}\" was removed from the configuration")]
    Removed { database: String },
    #[error("cluster {cluster} has had no primary for {waited:?} (hold_timeout); a switchover or failover is taking longer than that")]
    NoPrimary { cluster: String, waited: Duration },
    /// The database's router refused the work (`route-decision.reject`).
    #[error("{message}")]
    Rejected { sqlstate: String, message: String },
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl PoolError {
    pub fn sqlstate(&self) -> &str {
        match self {
            PoolError::Timeout { .. } | PoolError::CapTimeout { .. } => sqlstate::TOO_MANY_CONNECTIONS,
            PoolError::Closed { .. } | PoolError::Removed { .. } | PoolError::Ended => {
                sqlstate::ADMIN_SHUTDOWN
            }
            PoolError::NoPrimary { .. } => sqlstate::CANNOT_CONNECT_NOW,
            PoolError::Rejected { sqlstate, .. } => sqlstate,
            PoolError::Server(e) => e.sqlstate(),
        }
    }
}

/// Counters shown by the admin console and metrics.
#[derive(Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub wait_timeouts: AtomicU64,
    pub discarded: AtomicU64,
    /// Requests run again after their server failed them without effect.
    pub retried: AtomicU64,
    /// Clients (transaction or statement mode) that keep their server because they hold
    /// state that lives only there (temporary tables, LISTEN, advisory locks, ...).
    pub pinned: AtomicUsize,
    /// Statements answered through a pipeline (`pipeline`).
    pub pipelined: AtomicU64,
    /// Transactions, queries, bytes, latencies and errors (SHOW STATS, the histograms).
    pub traffic: crate::stats::Traffic,
}

/// Servers for one (database, user).
pub struct Pool {
    pub name: String,
    /// The user's current credentials: replaced when `auth_query` sees a new password.
    user: ArcSwap<UserAuth>,
    pub server_database: String,
    pub cluster: Arc<Cluster>,
    /// The database's PAUSE/RESUME state, shared by its pools.
    pub pause: Arc<PauseGate>,
    pub settings: PoolSettings,
    /// The settings in force that change without a restart ([`Pool::apply`]).
    live: ArcSwap<LiveSettings>,
    /// `live`'s lifetime in milliseconds, read at every release.
    lifetime_ms: AtomicU64,
    pub statements: StatementRegistry,
    pub stats: PoolStats,
    /// Pipelined transaction pooling's drivers (`pipeline`).
    pub pipelines: Pipelines,
    /// Servers on the primary.
    primary: Servers,
    /// Caps this pool's servers on the primary count against (`max_db_connections`,
    /// `max_user_connections`); none by default.
    caps: Vec<Arc<ServerCap>>,
    /// Servers for reads, per node of the cluster (read routing); a node's list fills only
    /// while it is a replica that takes reads.
    replicas: Box<[Servers]>,
    pub reads: ReadStats,
    /// Clients queued for a server right now.
    waiting: AtomicUsize,
    /// ParameterStatus values of the last server that connected, reported to new clients.
    server_params: Mutex<Option<Arc<HashMap<String, String>>>>,
    /// `RECONNECT`: servers connected before this moment (nanoseconds after the clock
    /// origin, `server::nanos_since_origin`; 0 for never) are closed instead of reused.
    /// Atomic: it is read at every release.
    reconnect_before: AtomicU64,
    /// The time (milliseconds after the clock origin) as of the last [`Pool::reap`], once a
    /// second: lifetimes and idle times are measured against it, so lending and returning
    /// a server read no clock.
    coarse_now_ms: AtomicU64,
    /// The startup settings of the last client, shared with the next one that sent the
    /// same: an idle client then holds no map of its own.
    last_startup: Mutex<Arc<Settings>>,
    /// The database's name, once a reload removed it ([`Pool::remove`]).
    removed: std::sync::OnceLock<String>,
}

impl Pool {
    pub fn new(
        name: String,
        user: Arc<UserAuth>,
        server_database: String,
        cluster: Arc<Cluster>,
        pause: Arc<PauseGate>,
        settings: PoolSettings,
        live: LiveSettings,
    ) -> Pool {
        Pool {
            caps: Vec::new(),
            name,
            user: ArcSwap::new(user),
            server_database,
            pause,
            primary: Servers::new(live.size, settings.shards),
            replicas: (0..cluster.nodes.len())
                .map(|_| Servers::new(live.size, settings.shards))
                .collect(),
            reads: ReadStats::new(cluster.nodes.len()),
            cluster,
            settings,
            lifetime_ms: AtomicU64::new(millis(live.lifetime)),
            live: ArcSwap::from_pointee(live),
            statements: StatementRegistry::default(),
            stats: PoolStats::default(),
            pipelines: Pipelines::default(),
            waiting: AtomicUsize::new(0),
            server_params: Mutex::new(None),
            reconnect_before: AtomicU64::new(0),
            coarse_now_ms: AtomicU64::new(since_origin_ms(Instant::now())),
            last_startup: Mutex::default(),
            removed: std::sync::OnceLock::new(),
        }
    }

    /// The pool, shared, under `caps` (each registers it, so that its idle servers can be
    /// closed to make room for another pool's client).
    pub fn under_caps(mut self, caps: Vec<Arc<ServerCap>>) -> Arc<Pool> {
        self.caps = caps;
        let pool = Arc::new(self);
        for cap in &pool.caps {
            cap.register(&pool);
        }
        pool
    }

    /// Waits while the database is paused, then (queued, up to `query_wait_timeout`) for a
    /// slot, then reuses an idle server or opens a new one.
    ///
    /// The common case (not paused or held, a slot free, an idle server on the confirmed
    /// primary) is answered without waiting; everything else runs in a boxed future, so
    /// the state of connects and waits does not weigh on every session's task.
    ///
    /// A session passes its `stop`: a wait then ends with [`PoolError::Ended`] as soon as
    /// the session must end (`KILL`, `shutdown_timeout`).
    pub async fn checkout(self: &Arc<Self>, stop: Option<&StopWatch>) -> Result<Checkout, PoolError> {
        let permit = if self.pause.paused().is_none() && self.cluster.hold().is_none() {
            match self.primary.try_permit() {
                Some(permit) => match self.reusable_idle() {
                    Some(conn) => {
                        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
                        return Ok(Checkout {
                            conn: Some(conn),
                            permit,
                            pool: self.clone(),
                            read_node: None,
                        });
                    }
                    None => Some(permit),
                },
                None => None,
            }
        } else {
            None
        };
        until_ended(stop, Box::pin(self.checkout_waiting(permit))).await
    }

    /// A slot on the primary, if one is free now and the database is neither paused nor
    /// held: what a new pipeline driver starts on ([`Pool::checkout_with`]).
    pub fn pipeline_permit(&self) -> Option<Slot> {
        if self.pause.paused().is_some() || self.cluster.hold().is_some() || self.is_removed() {
            return None;
        }
        self.primary.try_permit()
    }

    /// A server on the primary for the slot `permit` (see [`Pool::pipeline_permit`]).
    pub async fn checkout_with(self: &Arc<Self>, permit: Slot) -> Result<Checkout, PoolError> {
        Box::pin(self.checkout_waiting(Some(permit))).await
    }

    /// Clients are queued for a server right now.
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// [`Pool::checkout`] when it may wait: for a pause, a hold, a slot (unless `permit`
    /// already holds one), a primary or a connect. Boxed by its callers, so what it holds
    /// across its awaits is kept small: the waits for a pause, a hold, a primary or a
    /// connect are boxed in turn, and only the wait for a slot (what a client queued at a
    /// busy pool does every transaction) is inline.
    async fn checkout_waiting(self: &Arc<Self>, permit: Option<Slot>) -> Result<Checkout, PoolError> {
        let wait_started = crate::stats::now_us();
        // When this checkout started waiting (a pause, a hold, no primary), if it did:
        // reported to the cluster's failover event. Read from the clock only then.
        let mut held_since: Option<Instant> = None;
        if self.pause.paused().is_some() {
            held_since = Some(Instant::now());
            let _waiting = Counted::new(&self.waiting);
            Box::pin(self.pause.wait(&self.cluster)).await;
        }
        // The switchover policy's hold (a planned stop, a lost primary): wait for its
        // resume or its budget; a hold that ran out leaves no further wait for a primary.
        let mut hold_ran_out = false;
        if self.cluster.hold().is_some() {
            held_since.get_or_insert_with(Instant::now);
            let _waiting = Counted::new(&self.waiting);
            hold_ran_out = !Box::pin(self.cluster.wait_while_held()).await;
        }
        let permit = match permit {
            Some(p) => p,
            None => self.wait_permit(&self.primary).await?,
        };
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let conn = self.server_on_primary(&mut held_since, hold_ran_out).await;
        if let Some(since) = held_since {
            self.cluster.incidents.held(since.elapsed());
        }
        let conn = conn?;
        self.observe_wait(wait_started);
        Ok(Checkout {
            conn: Some(conn),
            permit,
            pool: self.clone(),
            read_node: None,
        })
    }

    /// A checkout that could not be answered at once got its server: its wait since
    /// `started` ([`crate::stats::now_us`]) goes into the wait histogram. (One answered at
    /// once is counted by `checkouts` alone: see [`crate::stats::Traffic::waits`].)
    fn observe_wait(&self, started: u64) {
        let waited = crate::stats::now_us().saturating_sub(started);
        self.stats.traffic.wait.observe(waited);
    }

    /// A slot among `servers`: at once if one is free, else in the queue's order up to
    /// `query_wait_timeout`.
    async fn wait_permit(&self, servers: &Servers) -> Result<Slot, PoolError> {
        if let Some(p) = servers.try_permit() {
            return Ok(p);
        }
        let wait = self.live.load().query_wait_timeout;
        let waiting = Counted::new(&self.waiting);
        let acquired = servers.permit(wait).await;
        drop(waiting);
        match acquired {
            Ok(p) => Ok(p),
            Err(NoSlot::Closed) => Err(match self.removed.get() {
                Some(database) => PoolError::Removed {
                    database: database.clone(),
                },
                None => PoolError::Closed {
                    pool: self.name.clone(),
                },
            }),
            Err(NoSlot::TimedOut) => {
                self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::Timeout {
                    waited: wait,
                    size: servers.size(),
                    pool: self.name.clone(),
                })
            }
        }
    }

    /// An idle server on the primary, or a new one; waits for a primary (and retries
    /// connects that failed because the node is down) until the cluster's `hold_timeout`.
    /// Sets `held_since` when it has to wait.
    async fn server_on_primary(
        &self,
        held_since: &mut Option<Instant>,
        hold_ran_out: bool,
    ) -> Result<Box<ServerConn>, PoolError> {
        // The common case, with no clock reading and one look at the topology: a primary
        // is confirmed and an idle server on it can be reused.
        if !hold_ran_out {
            if let Some(conn) = self.reusable_idle() {
                return Ok(conn);
            }
        }
        // Connects and waits for a primary are boxed: their state is large and rare, and
        // held inline it would be copied into the box of every checkout that queued.
        Box::pin(self.connect_on_primary(held_since, hold_ran_out)).await
    }

    /// [`Pool::server_on_primary`] when no idle server on a confirmed primary can be reused.
    async fn connect_on_primary(
        &self,
        held_since: &mut Option<Instant>,
        hold_ran_out: bool,
    ) -> Result<Box<ServerConn>, PoolError> {
        let started = Instant::now();
        let deadline = if hold_ran_out {
            started
        } else {
            self.cluster.hold_deadline(started)
        };
        loop {
            let generation = self.cluster.view().generation;
            if self.cluster.primary().is_none() {
                held_since.get_or_insert(started);
            }
            let Some((node, addr)) = self.cluster.wait_for_primary(deadline).await else {
                return Err(PoolError::NoPrimary {
                    cluster: self.cluster.name.clone(),
                    waited: started.elapsed(),
                });
            };
            let guards = match self.room_under_caps().await? {
                Room::Idle(conn) => return Ok(conn),
                Room::New(guards) => guards,
            };
            let Some(open) = self.primary.open_one() else {
                // Per-core: every server the pool may have is open, and one is idle on
                // another thread's list or about to be; the next look takes it.
                drop(guards);
                tokio::time::sleep(servers::IN_TRANSIT_PAUSE).await;
                continue;
            };
            match self.connect(addr).await.map(|mut conn| {
                conn.counted.push(Box::new(open));
                conn.counted
                    .extend(guards.into_iter().map(|g| Box::new(g) as Box<dyn Send + Sync>));
                conn
            }) {
                Ok(conn) if conn.params.get("in_hot_standby").is_some_and(|v| v == "on") => {
                    // The topology is behind: the node the probes last saw as primary is
                    // a standby now (a switchover). Writes sent here would get 25006, so
                    // the connection is dropped and the pool waits for the probes.
                    tracing::info!(pool = %self.name, node = %addr, "server is a hot standby, not the primary; waiting for the topology");
                    held_since.get_or_insert(started);
                    self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                    self.cluster.suspect(node);
                    if Instant::now() >= deadline {
                        return Err(PoolError::NoPrimary {
                            cluster: self.cluster.name.clone(),
                            waited: started.elapsed(),
                        });
                    }
                    let retry_at = (Instant::now() + RECONNECT_PAUSE).min(deadline);
                    self.cluster.wait_for_change(generation, retry_at).await;
                }
                Ok(conn) => return Ok(conn),
                Err(e) if unreachable(&e) && self.cluster.probed() && Instant::now() < deadline => {
                    // The node may be going away (a switchover): re-probe it now and wait
                    // for the topology to move, a little at most, then try again.
                    self.cluster.suspect(node);
                    held_since.get_or_insert(started);
                    let retry_at = (Instant::now() + RECONNECT_PAUSE).min(deadline);
                    self.cluster.wait_for_change(generation, retry_at).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// An idle server on the primary that may be reused; the idle servers tried on the way
    /// that may not (on another node, drained, broken, past their lifetime) are closed.
    fn reusable_idle(&self) -> Option<Box<ServerConn>> {
        // With no primary, idle servers wait (their node may come back as the primary).
        self.cluster.primary()?;
        while let Some(mut conn) = self.primary.pop_idle() {
            if !self.keeps(&mut conn) {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pool = %self.name, server = conn.id, addr = %conn.addr, "closing idle server: not on the primary");
                continue;
            }
            if conn.is_broken() || self.expired(&conn) {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pool = %self.name, server = conn.id, "closing stale idle server");
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Whether `conn` may go back to (or be taken from) the primary's idle servers
    /// ([`Cluster::keeps_server`]), asked once per change of the cluster's keep epoch
    /// rather than once per transaction.
    fn keeps(&self, conn: &mut ServerConn) -> bool {
        let epoch = self.cluster.keep_epoch();
        if conn.kept_in_epoch == epoch {
            return true;
        }
        let keep = self.cluster.keeps_server(&conn.addr, conn.created);
        if keep {
            conn.kept_in_epoch = epoch;
        }
        keep
    }

    /// How this pool logs in to `addr`, giving up after `timeout`.
    fn connect_params<'a>(
        &'a self,
        addr: &'a NodeAddr,
        user: &'a UserAuth,
        timeout: Duration,
    ) -> ConnectParams<'a> {
        ConnectParams {
            addr,
            user: &user.name,
            database: &self.server_database,
            secret: user.server_secret(),
            options: &[],
            tls: &self.settings.tls,
            auth_methods: &self.settings.auth_methods,
            timeout,
        }
    }

    /// Logs in to `addr` as this pool's user (within `limit`, and the pool's own
    /// `connect_timeout`) and closes the connection at once: how a session asks whether a
    /// node still takes connections after its server ended a request (a node shutting down
    /// answers 57P03, a stopped one refuses). Not one of the pool's connects.
    pub async fn try_login(&self, addr: &NodeAddr, limit: Duration) -> Result<(), ServerError> {
        let user = self.user.load_full();
        let timeout = limit.min(self.connect_timeout());
        connect(&self.connect_params(addr, &user, timeout))
            .await
            .map(drop)
    }

    async fn connect(&self, addr: &NodeAddr) -> Result<Box<ServerConn>, ServerError> {
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        let user = self.user.load_full();
        match connect(&self.connect_params(addr, &user, self.connect_timeout())).await {
            Ok(mut conn) => {
                tracing::debug!(pool = %self.name, server = conn.id, addr = %conn.addr, pid = conn.backend_pid, "server connected");
                conn.listed = Some(self.settings.roster.join(ServerInfo {
                    user: user.name.clone(),
                    database: self.settings.database.to_string(),
                    addr: addr.host.to_string(),
                    port: addr.port,
                    local_addr: conn.stream.local_addr(),
                    connected_at: std::time::SystemTime::now(),
                    backend_pid: conn.backend_pid,
                    tls: conn.stream.is_tls(),
                    client: AtomicU64::new(0),
                    request_ms: AtomicU64::new(0),
                    prepared: AtomicUsize::new(0),
                }));
                *self.server_params.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Arc::new(conn.params.clone()));
                Ok(Box::new(conn))
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.name, error = %e, "server connection failed");
                Err(e)
            }
        }
    }

    /// The ClientKey learnt from the pool's user's SCRAM login, if any (SCRAM
    /// pass-through to servers), for a takeover to carry.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        self.user.load().client_key.get().copied()
    }

    /// Uses `user` for future server logins if its credentials are newer than the pool's.
    pub fn update_user(&self, user: &Arc<UserAuth>) {
        if !Arc::ptr_eq(&self.user.load(), user) {
            self.user.store(user.clone());
        }
    }

    /// `settings`, or an equal map already shared by an earlier client of this pool.
    pub fn shared_settings(&self, settings: &Arc<Settings>) -> Arc<Settings> {
        let mut last = self.last_startup.lock().unwrap_or_else(|e| e.into_inner());
        if **last != **settings {
            *last = settings.clone();
        }
        last.clone()
    }

    /// Parameters to report to a client at login; `None` until a server has connected.
    pub fn server_params(&self) -> Option<Arc<HashMap<String, String>>> {
        self.server_params
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pool's coarse clock: milliseconds after the clock origin as of the last
    /// [`Pool::reap`] (a second's precision at most).
    #[inline]
    pub fn coarse_now_ms(&self) -> u64 {
        self.coarse_now_ms.load(Ordering::Relaxed)
    }

    /// Past its lifetime (by the coarse clock), or connected before a `RECONNECT`.
    fn expired(&self, conn: &ServerConn) -> bool {
        let created = conn.created_ns;
        let age_ms = self
            .coarse_now_ms
            .load(Ordering::Relaxed)
            .saturating_sub(created / 1_000_000);
        age_ms > self.lifetime_ms.load(Ordering::Relaxed)
            || created < self.reconnect_before.load(Ordering::Relaxed)
    }

    /// The settings in force that change without a restart: a session reads them once,
    /// at its start.
    pub fn live(&self) -> Arc<LiveSettings> {
        self.live.load_full()
    }

    /// `connect_timeout` in force (connects, and the round trips a session makes on a
    /// server before its client's messages).
    pub fn connect_timeout(&self) -> Duration {
        self.live.load().connect_timeout
    }

    /// Servers on each node this pool may lend at once (`pool_size` in force).
    pub fn size(&self) -> usize {
        self.primary.size()
    }

    /// Puts `live` in force (a reload or `SET`): the next wait, connect and reap use its
    /// limits, sessions that start from now on its mode and session settings; a new size
    /// applies at once to the primary's servers and each node's read servers (see
    /// [`Servers::resize`]).
    pub fn apply(&self, live: LiveSettings) {
        let size = live.size;
        self.lifetime_ms.store(millis(live.lifetime), Ordering::Relaxed);
        self.live.store(Arc::new(live));
        let closed: usize = self.all_servers().map(|s| s.resize(size)).sum();
        if closed > 0 {
            self.stats.discarded.fetch_add(closed as u64, Ordering::Relaxed);
            tracing::debug!(pool = %self.name, closed, size, "closed idle servers over the new size");
        }
    }

    /// `RECONNECT`: closes the idle servers now and the busy ones when they come back.
    pub fn reconnect(&self) {
        self.reconnect_before
            .store(nanos_since_origin(Instant::now()), Ordering::Relaxed);
        let closed: usize = self.all_servers().map(Servers::clear).sum();
        self.stats.discarded.fetch_add(closed as u64, Ordering::Relaxed);
    }

    /// Another process took over (`switchyard --takeover`): no server is kept for reuse
    /// from now on; the idle ones are closed now, the lent ones (and any opened for the
    /// transactions still finishing here) when they come back, so that the two processes
    /// together do not hold twice the servers for long.
    pub fn drain(&self) {
        self.reconnect_before.store(u64::MAX, Ordering::Relaxed);
        let closed: usize = self.all_servers().map(Servers::clear).sum();
        self.stats.discarded.fetch_add(closed as u64, Ordering::Relaxed);
    }

    /// The primary's servers and every node's read servers.
    fn all_servers(&self) -> impl Iterator<Item = &Servers> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// Advances the coarse clock and closes idle servers past their idle timeout or
    /// lifetime, and those over the size (servers given back while it shrank). Called
    /// once a second.
    pub fn reap(&self) {
        let now_ms = since_origin_ms(Instant::now());
        self.coarse_now_ms.store(now_ms, Ordering::Relaxed);
        let s = self.live.load();
        let closed: usize = self
            .all_servers()
            .map(|servers| {
                servers.retain(|i| {
                    u128::from(now_ms.saturating_sub(i.since_ms)) < s.idle_timeout.as_millis()
                        && i.conn.created.elapsed() < s.lifetime
                }) + servers.trim()
            })
            .sum();
        if closed > 0 {
            self.stats.discarded.fetch_add(closed as u64, Ordering::Relaxed);
            tracing::debug!(pool = %self.name, closed, "closed idle servers");
        }
    }

    /// (idle servers, servers in use, clients waiting) for the admin console.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (idle, in_use) = self
            .all_servers()
            .map(Servers::counts)
            .fold((0, 0), |(i, u), (si, su)| (i + si, u + su));
        (idle, in_use, self.waiting.load(Ordering::Relaxed))
    }

    /// A reload removed `database`: closes the idle servers, refuses new checkouts with
    /// [`PoolError::Removed`], and closes the lent servers as they come back.
    pub fn remove(&self, database: &str) {
        let _ = self.removed.set(database.to_string());
        self.close();
    }

    /// Whether a reload removed the pool's database.
    pub fn is_removed(&self) -> bool {
        self.removed.get().is_some()
    }

    /// Closes every idle server and refuses new checkouts; used at shutdown.
    pub fn close(&self) {
        for servers in self.all_servers() {
            servers.close();
        }
    }
}

/// `wait`, unless `stop` says first that its session must end now ([`PoolError::Ended`]).
/// `wait` is boxed by the caller: held here by value, a large future would be moved into
/// this one's state and then, with it, into its box (two copies per queued checkout).
async fn until_ended<T>(
    stop: Option<&StopWatch>,
    mut wait: std::pin::Pin<Box<impl std::future::Future<Output = Result<T, PoolError>>>>,
) -> Result<T, PoolError> {
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = wait.as_mut().poll(cx) {
            return std::task::Poll::Ready(r);
        }
        match stop {
            Some(stop) => stop.poll(cx, false).map(|_| Err(PoolError::Ended)),
            None => std::task::Poll::Pending,
        }
    })
    .await
}

/// Counts one in `counter` while it lives: a checkout waiting (for a pause, a hold, a slot,
/// room under a cap) is uncounted however its wait ends, the future dropped included (a
/// login's `client_login_timeout`, a `KILL` of a waiting client).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `d` in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds from the clock origin (`server::nanos_since_origin`) to `t`.
fn since_origin_ms(t: Instant) -> u64 {
    nanos_since_origin(t) / 1_000_000
}

/// A server lent to one session.
pub struct Checkout {
    conn: Option<Box<ServerConn>>,
    /// Its slot in the pool: freed for the next waiter when the checkout ends.
    permit: Slot,
    pool: Arc<Pool>,
    /// The node, when the server was lent for reads on it (read routing).
    read_node: Option<usize>,
}

impl Checkout {
    pub fn conn(&mut self) -> &mut ServerConn {
        self.conn
            .as_mut()
            .expect("a checkout holds its server until released")
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The node serving reads through this server, when read routing sent it to one.
    pub fn read_node(&self) -> Option<usize> {
        self.read_node
    }

    /// Returns a server that is idle (ReadyForQuery 'I', nothing in flight) to the pool;
    /// one on a node that no longer serves what it was lent for (writes: the primary;
    /// reads: a replica on the newest timeline) is closed instead.
    pub fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let pool = &self.pool;
            let (keep, servers) = match self.read_node {
                None => (pool.keeps(&mut conn), &pool.primary),
                Some(node) => (pool.keeps_read_server(node, &conn), &pool.replicas[node]),
            };
            if !keep
                || pool.expired(&conn)
                || !conn.rbuf.is_empty()
                || servers.is_closed()
                || servers.shrinking()
            {
                pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let since_ms = pool.coarse_now_ms.load(Ordering::Relaxed);
            self.permit.free_near(conn.home);
            servers.push(IdleServer { conn, since_ms });
            if self.read_node.is_none() {
                pool.wake_caps();
            }
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(node) = self.read_node {
            self.pool.reads.finished(node);
        }
        if let Some(conn) = self.conn.take() {
            self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pool = %self.pool.name, server = conn.id, "closing server not returned cleanly");
        }
    }
}
