//! What every session shares: the configuration turned into runtime objects (users with their
//! verifiers, database routes), the pools created on first use, the cancel registry,
//! client-facing TLS, the `auth_hba_file` rules (replaced on reload) and the shutdown signal.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::auth::hba::{HbaError, HbaRules};
use crate::auth::{Decoys, SaltKey, UserAuth};
use crate::auth_query::{AuthQuery, LookupError};
use crate::cancel::CancelRegistry;
use crate::config::live::{self, SetError};
use crate::config::ConfigError;
use crate::config::{ClientTlsMode, Config, ProxySettings};
use crate::net::{server_tls_connector, ClientTls, TlsError};
use crate::plugins::{PluginError, PluginRegistry, ReloadReport};
use crate::policy::Policies;
use crate::pool::{
    DatabaseRoute, FunctionCatalog, LiveSettings, Pool, PoolSettings, RoutingSettings, ServerCap,
};
use crate::roster::{ClientInfo, Roster, ServerInfo};
use crate::stop::Shutdown;
use crate::topology::reads::{LagBudget, Skip};
use crate::topology::{Cluster, ProbeSettings, Topology};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("users.{user}: {source}")]
    User {
        user: String,
        source: crate::auth::AuthError,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// Its messages name the file (and line); the error chain would print it twice under
    /// a prefix.
    #[error(transparent)]
    Hba(#[from] HbaError),
}

/// The file the configuration came from, for reloads.
pub struct ConfigSource {
    pub path: PathBuf,
    /// The text the running configuration was parsed from.
    pub text: String,
}

/// A reload that could not start: the configuration file is unreadable or invalid. Nothing
/// changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the proxy was started without a configuration file to reload")]
    NoFile,
    #[error("reload failed unexpectedly: {0}")]
    Panicked(String),
}

/// What a reload applied.
pub struct Reloaded {
    pub plugins: ReloadReport,
    /// `auth_hba_file` re-read: how many rules now apply, or why the old ones stay.
    pub hba: Option<Result<usize, HbaError>>,
    /// Databases the reload removed (their pools closed) and brought back.
    pub removed: Vec<String>,
    pub restored: Vec<String>,
    /// Sections that changed but take effect only after a restart.
    pub needs_restart: Vec<String>,
}

/// Read routing's counts for one node (see [`ProxyState::node_traffic`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeTraffic {
    pub reads: u64,
    pub writes: u64,
    pub skipped: [u64; Skip::ALL.len()],
}

impl NodeTraffic {
    /// `reason=count` for each reason the node was skipped, e.g. `lag-time=3 behind-commit=10`.
    pub fn skipped_text(&self) -> String {
        Skip::ALL
            .iter()
            .zip(self.skipped)
            .filter(|(_, n)| *n > 0)
            .map(|(why, n)| format!("{}={n}", why.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub struct ProxyState {
    pub config: Arc<Config>,
    source: Option<ConfigSource>,
    pub users: HashMap<String, Arc<UserAuth>>,
    pub databases: HashMap<String, DatabaseRoute>,
    pub topology: Topology,
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    /// `max_db_connections` per database that has one.
    db_caps: HashMap<String, Arc<ServerCap>>,
    /// `max_user_connections` per user that has one, made with the user's first pool.
    user_caps: Mutex<HashMap<String, Arc<ServerCap>>>,
    /// Databases of `databases` that a reload removed: new logins get 3D000, their pools
    /// were closed. A later reload that lists one again brings it back.
    removed: Mutex<BTreeSet<String>>,
    pub cancels: Arc<CancelRegistry>,
    /// The loaded plugins (reloads, `SHOW PLUGINS`); decisions go through `policies`.
    pub plugins: Arc<PluginRegistry>,
    /// The facade sessions ask (pool mode, retries), shared with the clusters (health,
    /// switchover); the plugin registry installs each new plugin set there.
    pub policies: Arc<Policies>,
    /// Serialises reloads (SIGHUP, admin RELOAD, the plugin file watcher).
    reloading: tokio::sync::Mutex<()>,
    /// Client-facing TLS, unless `client_tls` is `disable`.
    pub tls: Option<ClientTls>,
    /// `auth_hba_file`'s rules, replaced on reload.
    pub hba: ArcSwapOption<HbaRules>,
    /// Clients connected now (for `max_client_conn`).
    pub clients: AtomicUsize,
    /// Of those, the ones still logging in (for `max_unauthenticated_conn`).
    pub logging_in: AtomicUsize,
    /// Becomes true when the proxy is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// `[proxy]` in force: the file's, with the reloadable keys as `SET` or the last reload
    /// left them (`config::live::RELOADABLE`).
    live_proxy: ArcSwap<ProxySettings>,
    /// The configuration in force: the file's at start, with the keys that apply without a
    /// restart (`config::live`) as `SET` or the last reload left them. Locked while a
    /// change is applied, so that changes apply one at a time and whole.
    in_force: Mutex<Arc<Config>>,
    /// An admin asked the proxy to stop (`SHUTDOWN [IMMEDIATE]`); the listeners watch it.
    pub stop_request: watch::Sender<Option<Shutdown>>,
    /// What unknown users are challenged with, so that they fail as a wrong password does.
    pub decoys: Decoys,
    /// `[auth_query]`: users not in `[users]` looked up on the server.
    auth_query: Option<AuthQuery>,
    /// The clients of pools and the pools' server connections now (`SHOW CLIENTS`,
    /// `SHOW SERVERS`, `KILL`).
    pub client_roster: Arc<Roster<ClientInfo>>,
    pub server_roster: Arc<Roster<ServerInfo>>,
}

impl ProxyState {
    /// Builds the runtime objects, loading plugins (blocking: compiling a plugin can take
    /// seconds, so call it before the runtime serves clients or off its workers).
    pub fn new(
        config: Config,
        source: Option<ConfigSource>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ProxyState, StateError> {
        let salt_key = SaltKey::from_config(&config);
        let mut users = HashMap::new();
        for (name, user) in &config.users {
            let auth = UserAuth::from_config(name, user, &salt_key).map_err(|source| StateError::User {
                user: name.clone(),
                source,
            })?;
            users.insert(name.clone(), Arc::new(auth));
        }
        let decoys = Decoys::new(salt_key, users.values().map(|u| &**u));
        let auth_query = config
            .auth_query
            .as_ref()
            .map(|aq| AuthQuery::new(aq.clone(), users[aq.user.get_ref()].clone()));
        let server_tls = server_tls_connector(config.pool.server_tls, config.pool.server_tls_ca.as_deref())?;
        let server_auth_methods: Arc<[_]> = config.pool.server_auth_methods.as_slice().into();
        let plugins = Arc::new(PluginRegistry::start(&config)?);
        let policies = plugins.policies();
        let mut topology = Topology::default();
        for (name, cluster) in &config.clusters {
            let probe = cluster.probe_user.as_ref().map(|u| ProbeSettings {
                user: users[u.get_ref()].clone(),
                database: cluster.probe_database.clone(),
                interval: cluster.probe_interval,
                timeout: cluster.probe_timeout,
                tls: server_tls.clone(),
                auth_methods: server_auth_methods.clone(),
            });
            if probe.is_none() && cluster.nodes.len() > 1 {
                tracing::warn!(cluster = %name, "no probe_user: the nodes are not probed, the configured primary gets all traffic");
            }
            let cluster = Cluster::new(name, cluster, probe).with_policies(policies.clone());
            topology.clusters.insert(name.clone(), Arc::new(cluster));
        }
        let mut databases = HashMap::new();
        let mut db_caps = HashMap::new();
        let server_roster: Arc<Roster<ServerInfo>> = Arc::default();
        for (name, db) in &config.databases {
            let cap = config.max_db_connections(db);
            if cap > 0 {
                let scope = format!("database {name:?}");
                db_caps.insert(name.clone(), ServerCap::new("max_db_connections", &scope, cap));
            }
            let settings = PoolSettings {
                tls: server_tls.clone(),
                auth_methods: server_auth_methods.clone(),
                shards: config.proxy.pool_shards(),
                roster: server_roster.clone(),
                database: name.as_str().into(),
                routing: RoutingSettings {
                    read_routing: db.read_routing,
                    budget: LagBudget {
                        bytes: db.max_replica_lag_bytes.0 as u64,
                        time: db.max_replica_lag,
                    },
                    read_your_writes: db.read_your_writes,
                    database_commits: Arc::default(),
                    functions: Arc::new(FunctionCatalog::new(&db.read_only_functions, &db.write_functions)),
                },
            };
            databases.insert(
                name.clone(),
                DatabaseRoute {
                    server_database: db.dbname.clone().unwrap_or_else(|| name.clone()),
                    cluster: topology.clusters[db.cluster.get_ref()].clone(),
                    pause: Arc::default(),
                    settings,
                    live: ArcSwap::from_pointee(LiveSettings::of(&config, db)),
                },
            );
        }
        let tls = match (&config.proxy.tls_cert, &config.proxy.tls_key) {
            (Some(cert), Some(key)) if config.proxy.client_tls() != ClientTlsMode::Disable => {
                Some(ClientTls::new(cert, key, config.proxy.tls_client_ca.as_deref())?)
            }
            _ => None,
        };
        let hba = match &config.proxy.auth_hba_file {
            Some(path) => Some(Arc::new(load_hba(path, &config)?)),
            None => None,
        };
        let config = Arc::new(config);
        Ok(ProxyState {
            live_proxy: ArcSwap::from_pointee(config.proxy.clone()),
            in_force: Mutex::new(config.clone()),
            config,
            source,
            reloading: tokio::sync::Mutex::new(()),
            users,
            databases,
            topology,
            pools: Mutex::new(HashMap::new()),
            db_caps,
            user_caps: Mutex::default(),
            removed: Mutex::default(),
            cancels: Arc::new(CancelRegistry::default()),
            plugins,
            policies,
            tls,
            hba: ArcSwapOption::new(hba),
            clients: AtomicUsize::new(0),
            logging_in: AtomicUsize::new(0),
            shutdown,
            stop_request: watch::channel(None).0,
            decoys,
            auth_query,
            client_roster: Arc::default(),
            server_roster,
        })
    }

    /// The pool for (database, user), created on first use.
    pub fn pool(&self, database: &str, user: &Arc<UserAuth>) -> Option<Arc<Pool>> {
        let route = self.databases.get(database)?;
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the pools' lock, which a removal holds while it closes the pools.
        if self.is_removed(database) {
            return None;
        }
        let pool = pools
            .entry((database.to_string(), user.name.clone()))
            .or_insert_with(|| {
                Pool::new(
                    format!("{database}/{}", user.name),
                    user.clone(),
                    route.server_database.clone(),
                    route.cluster.clone(),
                    route.pause.clone(),
                    route.settings.clone(),
                    (**route.live.load()).clone(),
                )
                .under_caps(self.caps_of(database, &user.name))
            });
        pool.update_user(user);
        Some(pool.clone())
    }

    /// The caps a new pool of (database, user) counts against.
    fn caps_of(&self, database: &str, user: &str) -> Vec<Arc<ServerCap>> {
        let mut caps: Vec<Arc<ServerCap>> = self.db_caps.get(database).cloned().into_iter().collect();
        let limit = self.config.max_user_connections(user);
        if limit > 0 {
            let mut users = self.user_caps.lock().unwrap_or_else(|e| e.into_inner());
            let cap = users
                .entry(user.to_string())
                .or_insert_with(|| ServerCap::new("max_user_connections", &format!("user {user:?}"), limit));
            caps.push(cap.clone());
        }
        caps
    }

    /// A user from `[users]`, or else from `auth_query` (looked up in the client's
    /// database, or any configured one).
    pub async fn lookup_user(
        &self,
        name: &str,
        database: &str,
    ) -> Result<Option<Arc<UserAuth>>, LookupError> {
        if let Some(u) = self.users.get(name) {
            return Ok(Some(u.clone()));
        }
        let Some(aq) = &self.auth_query else {
            return Ok(None);
        };
        let Some(route) = self
            .databases
            .get(database)
            .or_else(|| self.databases.values().next())
        else {
            return Ok(None);
        };
        aq.lookup(name, route).await
    }

    /// Re-reads the configuration file and applies its `[plugins]` section (SIGHUP and
    /// admin `RELOAD`). Other sections that changed are reported: they apply at restart.
    pub async fn reload(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let source = self.source.as_ref().ok_or(ReloadError::NoFile)?;
        let state = self.clone();
        let path = source.path.clone();
        let started_text = source.text.clone();
        let reloaded = tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Read {
                path: path.display().to_string(),
                source: e,
            })?;
            let config = Config::parse(&text, &path.display().to_string())?;
            for warning in crate::config::exposure_warnings(&path, &config) {
                tracing::warn!("{warning}");
            }
            let mut needs_restart = Config::changed_sections(&started_text, &text);
            needs_restart.retain(|s| s != "plugins" && s != "trace");
            // Databases removed (or brought back as they were) apply now; others at restart.
            if Config::databases_only_removed(&started_text, &text) {
                needs_restart.retain(|s| s != "databases");
            }
            let (removed, restored) = state.apply_removed_databases(&config);
            state.apply_live(&mut state.lock_in_force(), &config);
            if !needs_restart.is_empty() {
                tracing::warn!(sections = ?needs_restart, "configuration changes other than [plugins], removed databases and the reloadable settings take effect at restart");
            }
            let plugins = state.plugins.reload(&config);
            let hba = state.reload_hba();
            // Functions may have changed volatility: read the catalogs again when next needed.
            for route in state.databases.values() {
                route.settings.routing.functions.invalidate();
            }
            let reloaded = Reloaded {
                plugins,
                hba,
                removed,
                restored,
                needs_restart,
            };
            Ok((reloaded, config.trace))
        })
        .await
        .unwrap_or_else(|e| Err(ReloadError::Panicked(e.to_string())))?;
        let (reloaded, trace) = reloaded;
        // A changed `[trace]` starts, moves or stops recording; an unchanged one leaves
        // what `TRACE ON` / `TRACE OFF` did.
        if let Err(e) = self.policies.trace().configure(&trace).await {
            tracing::warn!(error = %e, "[trace] not applied");
        }
        Ok(reloaded)
    }

    /// `[proxy]` in force (see `live_proxy`).
    pub fn proxy(&self) -> Arc<ProxySettings> {
        self.live_proxy.load_full()
    }

    /// The configuration in force (see `in_force`): `SHOW CONFIG`'s values.
    pub fn in_force(&self) -> Arc<Config> {
        self.lock_in_force().clone()
    }

    fn lock_in_force(&self) -> std::sync::MutexGuard<'_, Arc<Config>> {
        self.in_force.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `new`'s live keys in force (`in_force`, locked by the caller), logging each
    /// that changed with when it applies: `[proxy]`'s for the next client, each
    /// database's pool settings in its route (for pools made later) and in its pools
    /// (`Pool::apply`), `[pool]`'s in `auth_query`'s lookup pools.
    fn apply_live(&self, in_force: &mut Arc<Config>, new: &Config) {
        let applied = live::with_live(in_force, new);
        let changes = live::changes(in_force, &applied);
        for change in &changes {
            tracing::info!(key = %change.key, from = %change.from, to = %change.to, applies = change.applies, "setting changed");
        }
        if !changes.is_empty() {
            // More clients or larger pools may need more descriptors than at start.
            crate::net::files::ensure_open_files(&applied);
        }
        self.live_proxy.store(Arc::new(applied.proxy.clone()));
        {
            // Under the pools' lock: a pool made meanwhile starts with the new settings.
            let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            for (name, route) in &self.databases {
                if let Some(db) = applied.databases.get(name) {
                    route.live.store(Arc::new(LiveSettings::of(&applied, db)));
                }
            }
            for ((database, _), pool) in pools.iter() {
                let live = (**self.databases[database].live.load()).clone();
                if *pool.live() != live {
                    pool.apply(live);
                }
            }
        }
        if let Some(aq) = &self.auth_query {
            aq.apply(&LiveSettings::of_pool(&applied.pool));
        }
        *in_force = Arc::new(applied);
    }

    /// `SET key = value` on the admin console: `key` must apply without a restart
    /// (`config::live`); the value is checked as the file's values are (with the other
    /// live keys as in force) and applied at once. A later reload applies the file's
    /// value again.
    pub fn set(&self, key: &str, value: &str) -> Result<(), SetError> {
        let text = self.source.as_ref().map(|s| s.text.as_str());
        let mut in_force = self.lock_in_force();
        let config = live::with_setting(text, &in_force, key, value)?;
        self.apply_live(&mut in_force, &config);
        Ok(())
    }

    /// Re-reads `auth_hba_file` (the running configuration's); a file that cannot be used
    /// leaves the rules in force, and the log says why.
    fn reload_hba(&self) -> Option<Result<usize, HbaError>> {
        let path = self.config.proxy.auth_hba_file.as_ref()?;
        let result = load_hba(path, &self.config).map(|rules| {
            let count = rules.rule_count();
            self.hba.store(Some(Arc::new(rules)));
            count
        });
        match &result {
            Ok(count) => tracing::info!(file = %path.display(), rules = count, "auth_hba_file reloaded"),
            Err(e) => tracing::error!(error = %e, "auth_hba_file not reloaded; the rules in force stay"),
        }
        Some(result)
    }

    /// Whether a reload removed `database`.
    pub fn is_removed(&self, database: &str) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(database)
    }

    /// Applies which of the databases the proxy started with `config` no longer lists:
    /// newly removed ones have their pools closed (sessions holding a server finish their
    /// transaction; their next checkout gets 57P01) and refuse new logins; ones listed
    /// again take logins again, with new pools. Returns (removed now, brought back).
    fn apply_removed_databases(&self, config: &Config) -> (Vec<String>, Vec<String>) {
        let gone: BTreeSet<String> = self
            .databases
            .keys()
            .filter(|d| !config.databases.contains_key(*d))
            .cloned()
            .collect();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        let newly: Vec<String> = gone.difference(&removed).cloned().collect();
        let restored: Vec<String> = removed.difference(&gone).cloned().collect();
        pools.retain(|(db, _), pool| {
            if gone.contains(db) {
                pool.remove(db);
            }
            !gone.contains(db)
        });
        for db in &newly {
            tracing::warn!(database = %db, "database removed by reload: new logins get 3D000; its sessions end with 57P01 when they next need a server");
        }
        for db in &restored {
            tracing::info!(database = %db, "database listed again by reload: it takes logins again");
        }
        *removed = gone;
        (newly, restored)
    }

    /// Reloads plugins whose component file changed (the file watcher).
    pub async fn reload_plugin_files(self: &Arc<Self>) -> ReloadReport {
        let _one_at_a_time = self.reloading.lock().await;
        let state = self.clone();
        tokio::task::spawn_blocking(move || state.plugins.reload_files())
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "plugin reload failed unexpectedly");
                ReloadReport::default()
            })
    }

    /// Pools of `database`.
    pub fn pools_of(&self, database: &str) -> Vec<Arc<Pool>> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((db, _), _)| db == database)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Read routing's counts for each node of `cluster`, summed over the clients' pools on
    /// it: (reads, writes, skips per reason in `Skip::ALL` order).
    pub fn node_traffic(&self, cluster: &Arc<Cluster>) -> Vec<NodeTraffic> {
        let mut totals = vec![NodeTraffic::default(); cluster.nodes.len()];
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for pool in pools.values().filter(|p| Arc::ptr_eq(&p.cluster, cluster)) {
            for (total, node) in totals.iter_mut().zip(pool.reads.nodes.iter()) {
                total.reads += node.reads.load(Ordering::Relaxed);
                total.writes += node.writes.load(Ordering::Relaxed);
                for (t, n) in total.skipped.iter_mut().zip(&node.skipped) {
                    *t += n.load(Ordering::Relaxed);
                }
            }
        }
        totals
    }

    /// The clients' pools and `auth_query`'s lookup pools.
    pub fn all_pools(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        pools.extend(self.auth_query.iter().flat_map(AuthQuery::pools));
        pools
    }
}

/// Reads `auth_hba_file`; a `cert` rule needs `tls_client_ca`.
fn load_hba(path: &std::path::Path, config: &Config) -> Result<HbaRules, HbaError> {
    let rules = HbaRules::load(path)?;
    if let (Some(line), None) = (rules.first_cert_rule(), &config.proxy.tls_client_ca) {
        return Err(HbaError::Invalid {
            path: rules.path().to_owned(),
            line,
            message: "cert needs [proxy] tls_client_ca (the CA client certificates must lead to)".into(),
        });
    }
    Ok(rules)
}
